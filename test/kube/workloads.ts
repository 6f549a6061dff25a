// The real processes behind the fake kubelet's pods: a backend for a pod labelled role=backend (the
// echo backend, or what the test chooses), a Baton sidecar for role=sidecar, each bound to the pod's
// loopback IP.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V1Pod } from '@kubernetes/client-node';
import type { BackendsResponse } from '../../common/admin/contract.js';
import { BackendProcess, waitFor } from '../helpers.js';

export const ROLE_LABEL = 'baton.test/role';
export const BACKEND_PORT = 8080;
export const SIDECAR_PORT = 8000;
export const ADMIN_PORT = 9901;

const batonBin = fileURLToPath(new URL('../../../bin/baton.js', import.meta.url));

/** A `baton sidecar` process on one IP: clients on SIDECAR_PORT, admin API on ADMIN_PORT. */
export class SidecarProcess {
  child: ChildProcess | null = null;

  constructor(
    readonly name: string,
    readonly ip: string,
    private readonly configFile: string,
    private readonly token: string,
  ) {}

  get url(): string {
    return `ws://${this.ip}:${SIDECAR_PORT}`;
  }
  get adminUrl(): string {
    return `http://${this.ip}:${ADMIN_PORT}`;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [batonBin, 'sidecar', '--config', this.configFile], {
      env: { ...process.env, BATON_ADMIN_TOKEN: this.token, BATON_LOG_LEVEL: process.env.BATON_TEST_LOG ?? 'warn' },
      stdio: ['ignore', process.env.BATON_TEST_LOG ? 'inherit' : 'ignore', 'inherit'],
    });
    this.child = child;
    let up = false;
    const deadline = Date.now() + 10_000;
    while (!up) {
      if (child.exitCode !== null) throw new Error(`sidecar ${this.name} exited (${child.exitCode})`);
      if (Date.now() > deadline) {
        // Nobody holds a sidecar that failed to start: it must not outlive the failure.
        await this.stop('SIGKILL');
        throw new Error(`sidecar ${this.name} did not start`);
      }
      up = await fetch(`${this.adminUrl}/healthz`).then((r) => r.ok, () => false);
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends a signal and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
    this.child = null;
  }

  /** GET on the admin API with the token. */
  async admin<T>(path: string): Promise<T> {
    const res = await fetch(`${this.adminUrl}/v1${path}`, { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return (await res.json()) as T;
  }
}

/** The process serving a backend pod: started before the pod is Ready, SIGTERMed when it is deleted. */
export interface PodBackend {
  start(): Promise<void>;
  /** Sends a signal and, for killing signals, waits until the process is gone. */
  signal(sig: NodeJS.Signals): Promise<void>;
}

export interface PodProcessesOptions<B extends PodBackend> {
  /**
   * Extra echo-backend arguments for every backend pod, e.g. `['--answer-delay', '1-200']` for
   * backends that answer late (see tools/echo-backend.ts). Default: none (answers at once).
   * Only for the default backend (not with `backend`).
   */
  backendArgs?: readonly string[];
  /**
   * The process of each backend pod (not started yet): it must listen on the pod's `ip` and `port`
   * (BACKEND_PORT). Default: the echo backend (tools/echo-backend.ts, tagging answers with the pod name).
   */
  backend?: (name: string, ip: string, port: number) => B;
  /**
   * Each sidecar's config lines after its addresses. Default: the tests' fast failure detection
   * (pings every second); `[]` runs the sidecar's defaults, as the bench does.
   */
  sidecarConfig?: readonly string[];
}

/**
 * Starts and stops the process of each pod the fake kubelet runs (use as its hooks). `B` is the
 * backend pods' process: the echo backend unless `opts.backend` makes another.
 */
export class PodProcesses<B extends PodBackend = BackendProcess> {
  readonly backends = new Map<string, B>();
  readonly sidecars = new Map<string, SidecarProcess>();
  private readonly dir = mkdtempSync(join(tmpdir(), 'baton-pods-'));
  private readonly makeBackend: (name: string, ip: string, port: number) => B;
  private readonly sidecarConfig: readonly string[];

  constructor(
    private readonly adminToken: string,
    opts: PodProcessesOptions<B> = {},
  ) {
    if (opts.backend && opts.backendArgs) throw new Error('PodProcesses: backendArgs is for the default echo backend, not with backend');
    const echoArgs = [...(opts.backendArgs ?? [])];
    // Without opts.backend, B is its default (BackendProcess).
    this.makeBackend = opts.backend ?? ((name, ip, port) => new BackendProcess(name, port, [...echoArgs], ip) as unknown as B);
    // Fast failure detection and a generous deadline: the tests kill backends on purpose.
    this.sidecarConfig = opts.sidecarConfig ?? ['failover: { deadline: 60s }', 'session: { pingInterval: 1s, pongTimeout: 3s }'];
  }

  readonly start = async (pod: V1Pod, ip: string): Promise<void> => {
    const name = pod.metadata!.name!;
    const role = pod.metadata?.labels?.[ROLE_LABEL];
    if (role === 'backend') {
      const b = this.makeBackend(name, ip, BACKEND_PORT);
      await b.start();
      this.backends.set(name, b);
    } else if (role === 'sidecar') {
      const file = join(this.dir, `${name}.yaml`);
      writeFileSync(
        file,
        [
          `listen: { address: "${ip}:${SIDECAR_PORT}" }`,
          `admin: { address: "${ip}:${ADMIN_PORT}" }`,
          ...this.sidecarConfig,
          '',
        ].join('\n'),
      );
      const s = new SidecarProcess(name, ip, file, this.adminToken);
      await s.start();
      this.sidecars.set(name, s);
    }
  };

  readonly stop = async (pod: V1Pod): Promise<void> => {
    const name = pod.metadata!.name!;
    const backend = this.backends.get(name);
    if (backend) {
      // The preStop the docs recommend: keep serving while the sidecars move this backend's sessions off.
      await this.drained(name, 20_000);
      await backend.signal('SIGTERM');
    }
    this.backends.delete(name);
    await this.sidecars.get(name)?.stop('SIGTERM');
    this.sidecars.delete(name);
  };

  /** Until no sidecar has a session on the backend (or the time is up, like a preStop sleep). */
  private async drained(backendId: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const views = await Promise.all(
        [...this.sidecars.values()].map((s) => s.admin<BackendsResponse>('/backends').catch(() => undefined)),
      );
      if (views.every((v) => !v || v.backends.every((b) => b.id !== backendId || b.sessions === 0))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stopAll(): Promise<void> {
    for (const b of this.backends.values()) await b.signal('SIGKILL');
    for (const s of this.sidecars.values()) await s.stop('SIGKILL');
    this.backends.clear();
    this.sidecars.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Waits until `n` sidecars run. */
  async waitForSidecars(n: number): Promise<SidecarProcess[]> {
    await waitFor(() => this.sidecars.size >= n, `${n} sidecar processes`, 20_000);
    return [...this.sidecars.values()];
  }
}

