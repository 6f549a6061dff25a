// Shared test plumbing: real ws peers on 127.0.0.1, backend processes, polling with deadlines.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocket, type ClientOptions } from 'ws';
import { parseConfig } from '../sidecar/config/load.js';
import { createLogger } from '../common/logger.js';
import { Sidecar } from '../sidecar/sidecar.js';
import type { ConnectionInfo } from '../tools/echo-backend.js';
import { freePort } from '../tools/free-port.js';

const echoScript = fileURLToPath(new URL('../tools/echo-backend.js', import.meta.url));

/** Polls `condition` until it holds or the deadline passes (then throws naming what was awaited). */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export { freePort } from '../tools/free-port.js';

/** A JSON line a fixture printed on stdout. */
export interface FixtureEvent {
  event: string;
  [key: string]: unknown;
}

const liveFixtures = new Set<FixtureProcess>();

/**
 * A fixture server in its own process (test/fixtures/*-server.ts), so a test can SIGKILL it:
 * `node <script> ...args`, printing JSON lines on stdout, one of them `"event": "listening"` (with
 * its `port`) when it is ready. Every line is kept in `events`.
 */
export class FixtureProcess {
  child: ChildProcessWithoutNullStreams | null = null;
  readonly events: FixtureEvent[] = [];
  /** From its listening line. */
  port = 0;

  constructor(
    readonly id: string,
    private readonly script: string,
    private readonly args: readonly string[],
    readonly host = '127.0.0.1',
  ) {}

  get url(): string {
    return `ws://${this.host}:${this.port}`;
  }
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [this.script, ...this.args]);
    this.child = child;
    liveFixtures.add(this);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let pending = '';
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`fixture ${this.id} exited early (${code ?? signal}): ${stderr}`)));
      child.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString();
        let nl: number;
        while ((nl = pending.indexOf('\n')) !== -1) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          let event: FixtureEvent;
          try {
            event = JSON.parse(line) as FixtureEvent;
          } catch {
            continue; // not one of its report lines
          }
          this.events.push(event);
          if (event.event === 'listening') {
            this.port = Number(event.port);
            resolve();
          }
        }
      });
    });
    child.removeAllListeners('exit');
  }

  /** The lines with this `event` (and, when given, these other fields). */
  of(event: string, fields: Record<string, unknown> = {}): FixtureEvent[] {
    return this.events.filter((e) => e.event === event && Object.entries(fields).every(([k, v]) => e[k] === v));
  }

  /** Sends a signal; for killing signals, waits until the process is gone and all its output read. */
  async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    if (sig === 'SIGSTOP' || sig === 'SIGCONT') {
      child.kill(sig);
      return;
    }
    const closed = new Promise((r) => child.once('close', r));
    child.kill(sig);
    await closed;
    this.child = null;
    liveFixtures.delete(this);
  }

  kill(): Promise<void> {
    return this.signal('SIGKILL');
  }
}

/** Kills every fixture process still running (for after()/afterEach()). */
export async function killAllFixtures(): Promise<void> {
  await Promise.all([...liveFixtures].map((f) => f.kill()));
}

/** An echo backend in its own process, so it can be SIGKILLed, SIGSTOPped and restarted (on its port). */
export class BackendProcess extends FixtureProcess {
  constructor(id: string, port: number, extraArgs: string[] = [], host = '127.0.0.1') {
    super(id, echoScript, ['--host', host, '--port', String(port), '--id', id, '--tag', '--report', ...extraArgs], host);
    this.port = port;
  }

  /** What the sidecar sent with each connection (path, headers, protocol), from its reports. */
  get connections(): ConnectionInfo[] {
    return this.of('connection') as unknown as ConnectionInfo[];
  }

  static async start(id: string, extraArgs: string[] = []): Promise<BackendProcess> {
    const b = new BackendProcess(id, await freePort(), extraArgs);
    await b.start();
    return b;
  }
}

/** Kills every backend process a test file started (call from after()). */
export const killAllBackends = killAllFixtures;

/** A sidecar in this process, from YAML text (listen address and log level filled in). */
export async function startSidecar(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<{ sidecar: Sidecar; url: string }> {
  const full = `listen:\n  address: "127.0.0.1:0"\nlogLevel: ${process.env.BATON_TEST_LOG ?? 'silent'}\n${yaml}`;
  const { config } = parseConfig(full, { BATON_ADMIN_ADDRESS: '127.0.0.1:0', ...env }, 'test');
  const sidecar = new Sidecar(config, createLogger(config.logLevel, 'sidecar'));
  const address = await sidecar.start();
  return { sidecar, url: `ws://127.0.0.1:${address.port}` };
}

export function backendsYaml(backends: { id: string; url: string }[]): string {
  return `backends:\n${backends.map((b) => `  - { id: ${b.id}, url: "${b.url}" }`).join('\n')}\n`;
}

/** A real ws client that records what it receives. */
export class TestClient {
  readonly received: { data: Buffer; isBinary: boolean }[] = [];
  closed: { code: number; reason: string } | null = null;
  readonly ws: WebSocket;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => this.received.push({ data, isBinary }));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
    ws.on('error', () => {});
  }

  static connect(url: string, protocols: string[] = [], opts: ClientOptions = {}): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols, { perMessageDeflate: false, ...opts });
      const client = new TestClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`status ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
  }

  texts(): string[] {
    return this.received.map((m) => m.data.toString());
  }

  async waitForCount(n: number, timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.received.length >= n || this.closed !== null, `${n} messages`, timeoutMs);
    if (this.received.length < n) throw new Error(`client closed (${this.closed?.code} ${this.closed?.reason}) after ${this.received.length}/${n} messages`);
  }

  async waitForClose(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    await waitFor(() => this.closed !== null, 'client close', timeoutMs);
    return this.closed!;
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }
}

/** Sends `count` numbered text messages "<prefix><i>" every `everyMs` while `running()`; returns the count sent. */
export function pump(client: TestClient, prefix: string, everyMs: number): { stop: () => number; sent: () => number } {
  let i = 0;
  const timer = setInterval(() => {
    if (client.ws.readyState === WebSocket.OPEN) client.ws.send(`${prefix}${i++}`);
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      return i;
    },
    sent: () => i,
  };
}

