// A real Kubernetes 1.20 control plane (etcd, kube-apiserver, kube-controller-manager) on loopback, for
// the operator's end-to-end tests. No kubelet or scheduler: test/kube/kubelet.ts plays both through the API.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { request } from 'node:https';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiextensionsV1Api, CoreV1Api, KubeConfig, loadYaml, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { freePort } from '../../tools/free-port.js';

export interface ControlPlane {
  /** https://127.0.0.1:PORT */
  server: string;
  /** A static-token user in group system:masters. */
  adminToken: string;
  /** A client config trusting the apiserver's CA, for the admin (default) or the given bearer token. */
  kubeConfig(token?: string): KubeConfig;
  /** Writes that config as a kubeconfig file (for KUBECONFIG of spawned processes); returns its path. */
  writeKubeconfig(token?: string): string;
  /** Waits for the ServiceAccount's token Secret (made by the serviceaccount-token controller) and returns the token. */
  serviceAccountToken(namespace: string, name: string): Promise<string>;
  /** Creates a namespace (if missing) and waits until pods can be created in it: its default ServiceAccount exists with a token. */
  ensureNamespace(name: string): Promise<void>;
  /** SIGTERMs the apiserver and starts it again on the same port with the same flags; resolves once /readyz is ok. */
  restartApiServer(): Promise<void>;
  /** PIDs of the processes currently running (to check nothing is left behind). */
  pids(): number[];
  /** Kills everything it started (SIGTERM, then SIGKILL) and removes its temp dir. */
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Run kube-controller-manager (default true). */
  controllerManager?: boolean;
  /** Copy the processes' output to stderr (it always goes to files in the temp dir). */
  log?: boolean;
}

const ensureScript = fileURLToPath(new URL('../../../scripts/ensure-kube.sh', import.meta.url));
let binDir: string | undefined;

/** The directory holding etcd, kube-apiserver and kube-controller-manager (builds them on first use). */
export function kubeBinDir(): string {
  binDir ??= execFileSync('bash', [ensureScript], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000 }).trim();
  return binDir;
}

/**
 * Installs the WsBalancer CRD from crds/, exactly as a user does, and waits until it is Established.
 * loadYaml maps the x-kubernetes-* keys onto client-node's model (a plain YAML parse would lose them).
 */
export async function installCrd(kc: KubeConfig): Promise<void> {
  const file = fileURLToPath(new URL('../../../crds/baton.dev_wsbalancers.yaml', import.meta.url));
  const crd = loadYaml<V1CustomResourceDefinition>(readFileSync(file, 'utf8'));
  const apiext = kc.makeApiClient(ApiextensionsV1Api);
  await apiext.createCustomResourceDefinition({ body: crd });
  await eventually(async () => {
    const got = await apiext.readCustomResourceDefinition({ name: crd.metadata!.name! });
    return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ? true : undefined;
  }, 'CRD established');
}

/** Polls `probe` until it returns something other than undefined (errors count as "not yet"). */
export async function eventually<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A child process whose output goes to a log file (and to stderr with `log`). */
class Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  private readonly logFd: number;

  constructor(
    readonly name: string,
    bin: string,
    args: string[],
    readonly logFile: string,
    log: boolean,
  ) {
    this.logFd = openSync(logFile, 'a');
    this.child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const sink = (chunk: Buffer) => {
      writeSync(this.logFd, chunk);
      if (log) process.stderr.write(chunk.toString().replace(/^(?=.)/gm, `[${name}] `));
    };
    this.child.stdout!.on('data', sink);
    this.child.stderr!.on('data', sink);
    this.exited = new Promise((resolve) => this.child.once('close', () => resolve()));
    void this.exited.then(() => closeSync(this.logFd));
    this.child.once('error', () => {}); // a spawn failure shows up as an early exit
    live.add(this);
    void this.exited.then(() => live.delete(this));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(lines = 40): string {
    return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

// Every process any control plane in this test process started, killed on exit whatever happens, and the
// temp dirs of control planes still running (an etcd data dir is over 100 MB).
const live = new Set<Proc>();
const liveDirs = new Set<string>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const p of live) p.child.kill('SIGKILL');
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  });
  // Without handlers these signals end Node without running 'exit' handlers.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => process.exit(128 + constants.signals[sig]));
  }
}

/** An HTTPS GET to the apiserver without verifying its certificate (used before its CA is known). */
function httpsStatus(url: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}` }, rejectUnauthorized: false, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function httpStatus(url: string): Promise<number> {
  return fetch(url, { signal: AbortSignal.timeout(2000) }).then((r) => r.status);
}

/** Waits until `probe` says ready; fails fast, with the end of its log, if the process dies. */
async function awaitReady(proc: Proc, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (proc.running && Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  const why = proc.running ? `not ready after ${timeoutMs} ms` : `exited (${proc.child.exitCode ?? proc.child.signalCode})`;
  throw new Error(`${proc.name} ${why}; last lines of ${proc.logFile}:\n${proc.tail()}`);
}

/** The HTTP status of a failed client-node call (its ApiException's code). */
export function apiCode(err: unknown): number | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const bin = kubeBinDir();
  hookExit();
  const dir = mkdtempSync(join(tmpdir(), 'baton-kube-'));
  liveDirs.add(dir);
  const started: Proc[] = [];
  const start = (name: string, args: string[]) => {
    const p = new Proc(name, join(bin, name), args, join(dir, `${name}.log`), opts.log ?? false);
    started.push(p);
    return p;
  };
  try {
    const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const etcd = start('etcd', [
      '--name=default',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeer}`,
    ]);
    await awaitReady(etcd, async () => (await httpStatus(`${etcdUrl}/health`)) === 200, 20_000);

    // Credentials: a static admin token and the service-account signing key pair.
    const adminToken = `admin-${Math.random().toString(36).slice(2)}`;
    const tokenFile = join(dir, 'tokens.csv');
    writeFileSync(tokenFile, `${adminToken},admin,admin-uid,"system:masters"\n`);
    const saKey = join(dir, 'sa.key');
    const saPub = join(dir, 'sa.pub');
    execFileSync('openssl', ['genrsa', '-out', saKey, '2048'], { stdio: 'ignore' });
    execFileSync('openssl', ['rsa', '-in', saKey, '-pubout', '-out', saPub], { stdio: 'ignore' });

    // kube-apiserver writes a self-signed serving cert (its CA appended) into --cert-dir, and reuses it on restart.
    const certDir = join(dir, 'certs');
    const server = `https://127.0.0.1:${apiPort}`;
    const featureGates = '--feature-gates=EndpointSliceTerminatingCondition=true';
    const apiArgs = [
      `--etcd-servers=${etcdUrl}`,
      `--secure-port=${apiPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      '--insecure-port=0',
      `--cert-dir=${certDir}`,
      `--token-auth-file=${tokenFile}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      '--api-audiences=https://kubernetes.default.svc',
      '--service-cluster-ip-range=10.0.0.0/24',
      // Its bootstrap FlowSchemas only add startup work and log noise here.
      '--enable-priority-and-fairness=false',
      featureGates,
    ];
    let apiserver = start('kube-apiserver', apiArgs);
    const apiReady = async () => (await httpsStatus(`${server}/readyz`, adminToken)) === 200;
    await awaitReady(apiserver, apiReady, 60_000);
    const caFile = join(certDir, 'apiserver.crt');
    const caData = readFileSync(caFile).toString('base64');

    const kubeconfigYaml = (token: string) =>
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'baton-test', cluster: { server, 'certificate-authority-data': caData } }],
        users: [{ name: 'user', user: { token } }],
        contexts: [{ name: 'baton-test', context: { cluster: 'baton-test', user: 'user' } }],
        'current-context': 'baton-test',
      });
    let kubeconfigs = 0;
    const writeKubeconfig = (token = adminToken) => {
      const path = join(dir, `kubeconfig-${++kubeconfigs}.yaml`);
      writeFileSync(path, kubeconfigYaml(token));
      return path;
    };
    const kubeConfig = (token = adminToken) => {
      const kc = new KubeConfig();
      kc.loadFromString(kubeconfigYaml(token));
      return kc;
    };

    let kcm: Proc | undefined;
    if (opts.controllerManager ?? true) {
      kcm = start('kube-controller-manager', [
        `--kubeconfig=${writeKubeconfig()}`,
        '--controllers=endpointslice,replicaset,deployment,garbagecollector,serviceaccount,serviceaccount-token',
        '--leader-elect=false',
        `--service-account-private-key-file=${saKey}`,
        `--root-ca-file=${caFile}`,
        '--use-service-account-credentials=false',
        '--bind-address=127.0.0.1',
        '--secure-port=0',
        '--port=0', // the insecure port (default 10252) would clash between control planes
        featureGates,
      ]);
    }

    const core = kubeConfig().makeApiClient(CoreV1Api);

    const serviceAccountToken = async (namespace: string, name: string): Promise<string> => {
      const secret = await eventually(async () => {
        const { items } = await core.listNamespacedSecret({ namespace, fieldSelector: 'type=kubernetes.io/service-account-token' });
        return items.find((s) => s.metadata?.annotations?.['kubernetes.io/service-account.name'] === name && s.data?.token);
      }, `a token Secret for ServiceAccount ${namespace}/${name}`, 30_000, 100);
      return Buffer.from(secret.data!.token!, 'base64').toString('utf8');
    };

    // 1.20's ServiceAccount admission refuses pods until their ServiceAccount exists and, when the token is
    // automounted, has a token Secret. Without the controller manager nothing makes either, so the default
    // ServiceAccount is created here with automounting off.
    const ensureNamespace = async (name: string): Promise<void> => {
      try {
        await core.createNamespace({ body: { metadata: { name } } });
      } catch (err) {
        if (apiCode(err) !== 409) throw err;
      }
      if (!kcm) {
        try {
          await core.createNamespacedServiceAccount({ namespace: name, body: { metadata: { name: 'default' }, automountServiceAccountToken: false } });
        } catch (err) {
          if (apiCode(err) !== 409) throw err;
        }
        return;
      }
      await eventually(async () => {
        const sa = await core.readNamespacedServiceAccount({ namespace: name, name: 'default' });
        return sa.secrets?.length ? true : undefined;
      }, `ServiceAccount ${name}/default and its token`, 30_000, 100);
    };

    // The controllers start a few seconds after the apiserver; wait for them so pods can be created at once.
    await ensureNamespace('default');

    return {
      server,
      adminToken,
      kubeConfig,
      writeKubeconfig,
      serviceAccountToken,
      ensureNamespace,
      async restartApiServer() {
        // 1.20 closes its listener at once on SIGTERM but then lingers for its 60 s HTTP shutdown timeout while
        // clients hold watches open; nothing useful happens meanwhile, so it gets a second before SIGKILL.
        await apiserver.stop(1000);
        apiserver = start('kube-apiserver', apiArgs);
        await awaitReady(apiserver, apiReady, 60_000);
      },
      pids: () => started.filter((p) => p.running).map((p) => p.child.pid!),
      async stop() {
        // Clients first, then the apiserver, then its storage.
        await kcm?.stop();
        await apiserver.stop(1000);
        await etcd.stop();
        rmSync(dir, { recursive: true, force: true });
        liveDirs.delete(dir);
      },
    };
  } catch (err) {
    await Promise.all(started.map((p) => p.stop(1000)));
    liveDirs.delete(dir); // kept, for the processes' logs
    throw err;
  }
}
