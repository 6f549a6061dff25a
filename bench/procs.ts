// Child processes of the benchmark: echo and protocol backends, the sidecar, nginx and haproxy, each in its own process
// so the load generator (this process) measures them from outside. Every process started here is
// registered and killed on exit, on error and on SIGINT/SIGTERM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BuiltinCodec } from '../common/vocabulary.js';
import { freePort } from '../tools/free-port.js';

const echoBackendScript = fileURLToPath(new URL('../tools/echo-backend.js', import.meta.url));
const nodePipeScript = fileURLToPath(new URL('../tools/node-pipe.js', import.meta.url));
const batonLauncher = fileURLToPath(new URL('../../bin/baton.js', import.meta.url));

/** How long a child may take to become ready before the bench gives up on it. */
const READY_TIMEOUT_MS = 10_000;
/** Lines of a child's output kept to explain a failure. */
const OUTPUT_TAIL_LINES = 20;

/** A child process with the tail of its output (its pipes are always drained: pino writes synchronously). */
export class ManagedProcess {
  private readonly tail: string[] = [];
  private readonly lineWaiters = new Set<(line: string) => void>();
  private partial = '';
  private exited = false;
  readonly exitPromise: Promise<void>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    live.add(this);
    this.exitPromise = new Promise((resolve) => {
      const gone = () => {
        this.exited = true;
        live.delete(this);
        resolve();
      };
      child.once('exit', gone);
      child.once('error', gone);
    });
    child.stdout?.on('data', (chunk: Buffer) => this.take(chunk));
    child.stderr?.on('data', (chunk: Buffer) => this.take(chunk));
  }

  private take(chunk: Buffer): void {
    const lines = (this.partial + chunk.toString()).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      this.tail.push(line);
      if (this.tail.length > OUTPUT_TAIL_LINES) this.tail.shift();
      for (const waiter of this.lineWaiters) waiter(line);
    }
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return !this.exited;
  }

  outputTail(): string {
    return this.tail.join('\n');
  }

  /** Resolves with the next output line (stdout or stderr) that matches, or rejects after the timeout. */
  nextLine(matches: (line: string) => boolean, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const waiter = (line: string) => {
        if (!matches(line)) return;
        clearTimeout(timer);
        this.lineWaiters.delete(waiter);
        resolve(line);
      };
      const timer = setTimeout(() => {
        this.lineWaiters.delete(waiter);
        reject(new Error(`${this.name}: no matching output line within ${timeoutMs} ms:\n${this.outputTail()}`));
      }, timeoutMs);
      this.lineWaiters.add(waiter);
    });
  }

  /** Sends a signal and waits for the exit (SIGKILL after `graceMs` if it is still there). */
  async stop(signal: NodeJS.Signals = 'SIGKILL', graceMs = 3000): Promise<void> {
    if (this.exited) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(timer);
  }
}

const live = new Set<ManagedProcess>();
const tempDirs = new Set<string>();

/** Synchronous last-resort cleanup: safe to call from 'exit' and signal handlers. */
export function killEverything(): void {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export { freePort } from '../tools/free-port.js';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls a TCP connect until the port accepts (used for children that print nothing when ready). */
async function waitForPort(port: number, proc: ManagedProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!proc.running) throw new Error(`${proc.name} exited before listening:\n${proc.outputTail()}`);
    const accepted = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (accepted) return;
    await sleep(20);
  }
  throw new Error(`${proc.name} did not listen on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms:\n${proc.outputTail()}`);
}

/** The environment for children: this one without BATON_* variables, which would override the bench's config. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BATON_')) env[k] = v;
  return env;
}

// ---- backends ------------------------------------------------------------------------------

export interface BackendProcess {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  proc: ManagedProcess;
}

/** Starts tools/echo-backend.js and waits for its {"event":"listening"} line. */
export async function startEchoBackend(id: string, port: number, tag: boolean, extraArgs: string[] = []): Promise<BackendProcess> {
  const args = ['--port', String(port), '--id', id, ...(tag ? ['--tag'] : []), ...extraArgs];
  return { id, port, url: `ws://127.0.0.1:${port}`, proc: await startListening(`echo backend ${id}`, echoBackendScript, args) };
}

/** The resume section's backends: the test suite's protocol servers (real graphql-ws, socket.io, aedes, stomp-broker-js). */
export type FixtureProtocol = 'graphql-ws' | 'socket.io' | 'mqtt' | 'stomp';

/** The auth token the fixture backends accept (connection_init payload, namespace auth, MQTT password, STOMP passcode). */
export const FIXTURE_TOKEN = 'secret';

const fixtureScripts: Record<FixtureProtocol, string> = {
  'graphql-ws': fileURLToPath(new URL('../test/fixtures/graphql-ws-server.js', import.meta.url)),
  'socket.io': fileURLToPath(new URL('../test/fixtures/socketio-server.js', import.meta.url)),
  mqtt: fileURLToPath(new URL('../test/fixtures/mqtt-server.js', import.meta.url)),
  stomp: fileURLToPath(new URL('../test/fixtures/stomp-server.js', import.meta.url)),
};

/**
 * Starts a protocol fixture server (test/fixtures/*-server.js, built into dist/) that sends each
 * subscription (graphql-ws), joined namespace (socket.io) or topic (mqtt, stomp) a tick every
 * `tickMs`, tagged with `servedBy: <id>` (mqtt, stomp: `from: <id>`); it accepts FIXTURE_TOKEN.
 */
export async function startFixtureBackend(protocol: FixtureProtocol, id: string, port: number, tickMs: number): Promise<BackendProcess> {
  const args = ['--port', String(port), '--id', id, '--token', FIXTURE_TOKEN, '--tick-ms', String(tickMs)];
  return { id, port, url: `ws://127.0.0.1:${port}`, proc: await startListening(`${protocol} backend ${id}`, fixtureScripts[protocol], args) };
}

/** Runs a node script and waits for the {"event":"listening"} line it prints when ready. */
async function startListening(name: string, script: string, args: string[], env: NodeJS.ProcessEnv = childEnv()): Promise<ManagedProcess> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const proc = new ManagedProcess(name, child);
  await new Promise<void>((resolve, reject) => {
    let pending = '';
    const timer = setTimeout(() => reject(new Error(`${proc.name} not ready within ${READY_TIMEOUT_MS} ms:\n${proc.outputTail()}`)), READY_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      pending += chunk.toString();
      if (pending.includes('"event":"listening"')) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    void proc.exitPromise.then(() => {
      clearTimeout(timer);
      reject(new Error(`${proc.name} exited before listening:\n${proc.outputTail()}`));
    });
  });
  return proc;
}

// ---- sidecar --------------------------------------------------------------------------------

export interface SidecarOptions {
  backends: { id: string; url: string }[];
  /** The sidecar's NODE_OPTIONS; default: the image's (imageNodeOptions()), so the bench measures what ships. */
  nodeOptions?: string;
  /** Extra node flags for the sidecar process, after NODE_OPTIONS (e.g. --cpu-prof, --max-semi-space-size=2). */
  nodeFlags?: string[];
  /**
   * Preload a hook (with --expose-gc) that runs a full GC on SIGUSR2 and prints the heap figures
   * as one JSON line on stderr. The sidecar itself is unchanged; see forceGc().
   */
  gcHook?: boolean;
  /** Default: the sidecar's own (info, a line per session opened and closed), as shipped. */
  logLevel?: 'warn' | 'info';
  /** codec.default for every session: none (the default), auto (the sidecar's own default) or a codec's name. */
  codec?: 'none' | 'auto' | BuiltinCodec;
  /** Put the admin API on a known free port (default: port 0, unused by the bench) and return its URL. */
  admin?: boolean;
}

/** What the GC hook prints after a forced full GC (bytes, from process.memoryUsage()). */
export interface GcReport {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

const GC_HOOK_SOURCE = `// Written by the Baton bench: a full GC on SIGUSR2, then the heap figures on stderr.
process.on('SIGUSR2', () => {
  globalThis.gc();
  const m = process.memoryUsage();
  process.stderr.write(JSON.stringify({ event: 'bench-gc', rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external }) + '\\n');
});
`;

export interface SidecarProcess {
  readonly port: number;
  readonly url: string;
  /** http://127.0.0.1:<port> of the admin API (no token), when started with `admin`. */
  readonly adminUrl?: string;
  proc: ManagedProcess;
}

/**
 * The image's NODE_OPTIONS (its Dockerfile's ENV; '' when it sets none, as now: V8's defaults):
 * every sidecar the bench starts, and the kube parts' operator, run with what ships, whatever the
 * bench's own environment holds.
 */
export function imageNodeOptions(): string {
  const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
  const m = /^\s*(?:ENV\s+.*?)?NODE_OPTIONS=(\S+)/m.exec(dockerfile.replace(/\\\n/g, ' '));
  return m === null ? '' : m[1]!;
}

/**
 * The Node release the image ships (its Dockerfile's ARG NODE_VERSION, as "v26.12.1"). `npm run
 * bench` runs the bench on it (scripts/ensure-node.sh), and with it every sidecar the bench starts.
 */
export function imageNodeVersion(): string {
  const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
  return `v${/^ARG NODE_VERSION=(\S+)$/m.exec(dockerfile)?.[1] ?? '?'}`;
}

/** Starts `node bin/baton.js sidecar --config <tmp yaml>` on a free loopback port, with the image's NODE_OPTIONS unless told otherwise. */
export async function startSidecar(opts: SidecarOptions): Promise<SidecarProcess> {
  const port = await freePort();
  const adminPort = opts.admin ? await freePort() : 0;
  const dir = makeTempDir('baton-bench-sidecar-');
  const configFile = join(dir, 'sidecar.yaml');
  // permessage-deflate off: the backends and nginx don't compress either, so like is compared with like.
  // shutdown.grace 0: SIGTERM ends it at once (and still lets --cpu-prof write its profile).
  const yaml = [
    'listen:',
    `  address: "127.0.0.1:${port}"`,
    '  perMessageDeflate:',
    '    enabled: false',
    'admin:',
    `  address: "127.0.0.1:${adminPort}"`,
    ...(opts.logLevel ? [`logLevel: ${opts.logLevel}`] : []),
    'codec:',
    `  default: ${opts.codec ?? 'none'}`,
    'shutdown:',
    '  grace: 0',
    'backends:',
    ...opts.backends.map((b) => `  - { id: ${b.id}, url: "${b.url}" }`),
    '',
  ].join('\n');
  writeFileSync(configFile, yaml);
  const flags = [...(opts.nodeFlags ?? [])];
  if (opts.gcHook) {
    const hook = join(dir, 'gc-hook.cjs');
    writeFileSync(hook, GC_HOOK_SOURCE);
    flags.push('--expose-gc', '--require', hook);
  }
  const args = [...flags, batonLauncher, 'sidecar', '--config', configFile];
  const env = { ...childEnv(), NODE_OPTIONS: opts.nodeOptions ?? imageNodeOptions() };
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const proc = new ManagedProcess('sidecar', child);
  await waitForPort(port, proc);
  if (opts.admin) await waitForPort(adminPort, proc);
  return { port, url: `ws://127.0.0.1:${port}`, ...(opts.admin ? { adminUrl: `http://127.0.0.1:${adminPort}` } : {}), proc };
}

/**
 * tools/node-pipe.js in front of `backendPort`, with the sidecar's NODE_OPTIONS: the floor of a Node
 * proxy (accept, dial, copy bytes, close), to tell Node's own cost from the sidecar's.
 */
export async function startNodePipe(backendPort: number, nodeOptions = imageNodeOptions()): Promise<ProxyProcess> {
  const port = await freePort();
  const proc = await startListening('node-pipe', nodePipeScript, ['--port', String(port), '--backend-port', String(backendPort)], { ...childEnv(), NODE_OPTIONS: nodeOptions });
  return { port, url: `ws://127.0.0.1:${port}`, version: process.version, proc };
}

/** Makes a sidecar started with `gcHook` run a full GC, and returns its heap figures after it. */
export async function forceGc(sidecar: SidecarProcess): Promise<GcReport> {
  const line = sidecar.proc.nextLine((l) => l.includes('"event":"bench-gc"'), READY_TIMEOUT_MS);
  sidecar.proc.child.kill('SIGUSR2');
  return JSON.parse(await line) as GcReport;
}

// ---- nginx and haproxy ----------------------------------------------------------------------

/** A reference proxy (nginx, haproxy) in front of one backend. */
export interface ProxyProcess {
  readonly port: number;
  readonly url: string;
  readonly version: string;
  proc: ManagedProcess;
}

/** A proxy binary on PATH (as `command -v NAME` finds it), or null. */
export function findOnPath(name: 'nginx' | 'haproxy'): string | null {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const path = found.status === 0 ? found.stdout.trim() : '';
  return path === '' ? null : path;
}

/** The version a binary prints for `flag` (nginx -v, haproxy -v): the first match of `pattern`'s group. */
async function binaryVersion(binary: string, flag: string, pattern: RegExp): Promise<string> {
  const child = spawn(binary, [flag], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr.on('data', (c: Buffer) => (text += c.toString()));
  await new Promise((resolve) => child.once('close', resolve));
  return pattern.exec(text)?.[1] ?? 'unknown';
}

/**
 * One nginx process (master_process off, one worker) proxying WebSockets to `backendPort`, with
 * its own prefix, config, pid file and temp paths under a temp dir so nothing under /var is touched.
 */
export async function startNginx(binary: string, backendPort: number): Promise<ProxyProcess> {
  const port = await freePort();
  const dir = makeTempDir('baton-bench-nginx-');
  for (const sub of ['logs', 'client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub));
  const conf = `
# Benchmark-only config written by bench/procs.ts.
worker_processes 1;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${backendPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_buffering off;
      tcp_nodelay on;
    }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const args = ['-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; master_process off; pid ${dir}/nginx.pid; error_log stderr warn;`];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = new ManagedProcess('nginx', child);
  await waitForPort(port, proc);
  return { port, url: `ws://127.0.0.1:${port}`, version: await binaryVersion(binary, '-v', /nginx\/(\S+)/), proc };
}

/**
 * One haproxy process (`-db`: foreground, no master; `nbthread 1`) proxying WebSockets to
 * `backendPort` in `mode http` (it switches an upgraded connection to a tunnel), with its own
 * config under a temp dir: no pid file, no log, no stats socket, nothing under /var.
 */
export async function startHaproxy(binary: string, backendPort: number): Promise<ProxyProcess> {
  const port = await freePort();
  const dir = makeTempDir('baton-bench-haproxy-');
  const conf = `
# Benchmark-only config written by bench/procs.ts.
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend bench
  bind 127.0.0.1:${port}
  default_backend echo
backend echo
  server echo 127.0.0.1:${backendPort}
`;
  writeFileSync(join(dir, 'haproxy.cfg'), conf);
  const child = spawn(binary, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = new ManagedProcess('haproxy', child);
  await waitForPort(port, proc);
  return { port, url: `ws://127.0.0.1:${port}`, version: await binaryVersion(binary, '-v', /HAProxy version (\S+)/), proc };
}

// ---- /proc readings ---------------------------------------------------------------------------

/**
 * The number of files a process may open (its soft RLIMIT_NOFILE, from /proc/<pid>/limits); throws
 * when it is below `needed`. Node raises its soft limit to the hard one at startup, so for the
 * bench and its node children the hard limit is what counts.
 */
export function checkOpenFiles(pid: number, needed: number, name: string): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) throw new Error(`no "Max open files" in /proc/${pid}/limits`);
  const allowed = m[1] === 'unlimited' ? Infinity : Number(m[1]);
  if (allowed < needed) throw new Error(`${name} may open ${allowed} files, the bench needs ${needed}: raise the hard limit (ulimit -Hn) for the bench`);
  return allowed;
}

/** Resident set size of a process in KiB (VmRSS from /proc/<pid>/status). */
export function readRssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** CPU time (user + system) a process has used, in ms (clock ticks are 100 Hz on Linux). */
export function readCpuMs(pid: number): number {
  const { user, system } = readCpuSplitMs(pid);
  return user + system;
}

/** CPU time a process has used in user mode and in the kernel, in ms. */
export function readCpuSplitMs(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) * 10, system: Number(fields[12]) * 10 };
}

/** CPU time the whole machine has spent busy (all cores, everything but idle and iowait), in ms. */
export function readMachineBusyMs(): number {
  const stat = readFileSync('/proc/stat', 'utf8');
  const fields = stat.slice(0, stat.indexOf('\n')).trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  return (total - idle) * 10;
}
