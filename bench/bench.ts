// `npm run bench`: measures an echo backend directly, through the Baton sidecar and (when an
// nginx binary is on PATH) through nginx, and prints the figures, the ratios and the product's
// bars. Every server runs in its own process; the load generator runs in this one. All on
// 127.0.0.1. See docs/performance.md for what each figure means.
//
//   node dist/bench/bench.js [--quick] [--only throughput,latency,handshakes,rss,failover,codec,migration] [--rounds N]
//                            [--sidecar-node-flags="--cpu-prof --cpu-prof-dir=/tmp/prof"]
//
// It reports; a missed bar is not an error. It exits non-zero only when the harness itself fails.
import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { AdminClient } from '../sidecar/admin/client.js';
import { keyDef } from '../sidecar/config/schema.js';
import {
  closeAll,
  cpuShare,
  cpuSnapshot,
  openIdleSessions,
  runFailoverTrial,
  runHandshakes,
  runLatency,
  runThroughput,
  startMigrationTraffic,
  type CpuShare,
  type DrainWindow,
  type HandshakePlan,
  type HandshakeResult,
  type LatencyPlan,
  type LatencyResult,
  type MigrationTally,
  type ThroughputResult,
  type WatchedProcess,
} from './loadgen.js';
import {
  findNginx,
  forceGc,
  freePort,
  killEverything,
  readMachineBusyMs,
  readRssKiB,
  startEchoBackend,
  startNginx,
  startSidecar,
  type EchoBackendProcess,
  type NginxProcess,
  type SidecarProcess,
} from './procs.js';
import { distributionOf, formatNumber, formatRatio, renderTable, type Distribution } from './stats.js';

// ---- what to run ---------------------------------------------------------------------------

const SECTIONS = ['throughput', 'latency', 'handshakes', 'rss', 'failover', 'codec', 'migration'] as const;
type Section = (typeof SECTIONS)[number];

interface Plan {
  throughput: { connections: number; window: number; sizes: number[]; warmupMs: number; measureMs: number };
  latency: LatencyPlan;
  handshakes: HandshakePlan;
  idleSessions: number;
  /** Wait after opening/closing idle sessions before reading RSS (the sidecar can't be told to GC). */
  rssSettleMs: number;
  failoverTrials: number;
  migration: MigrationPlan;
}

interface MigrationPlan {
  sessions: number;
  /** Each session sends a message this often. */
  sendEveryMs: number;
  /** The echo backends' --answer-delay (MIN-MAX ms). */
  answerDelay: string;
  warmupMs: number;
  /** Steady traffic before each drain (the comparison window is taken from its end). */
  steadyMs: number;
  /** 1: drain a (its sessions go to b); 2: then enable a and drain b too. */
  drains: number;
  /** A drain not finished after this is reported as timed out. */
  drainTimeoutMs: number;
}

const FULL_PLAN: Plan = {
  throughput: { connections: 50, window: 32, sizes: [64, 4096], warmupMs: 1000, measureMs: 5000 },
  latency: { connections: 50, ratePerSec: 2000, payloadBytes: 64, warmupMs: 1000, measureMs: 5000 },
  handshakes: { concurrency: 50, warmupMs: 500, measureMs: 3000 },
  idleSessions: 2000,
  rssSettleMs: 1000,
  failoverTrials: 40,
  migration: { sessions: 200, sendEveryMs: 20, answerDelay: '1-200', warmupMs: 1000, steadyMs: 3000, drains: 2, drainTimeoutMs: 15_000 },
};

const QUICK_PLAN: Plan = {
  throughput: { ...FULL_PLAN.throughput, warmupMs: 300, measureMs: 1500 },
  latency: { ...FULL_PLAN.latency, warmupMs: 300, measureMs: 1500 },
  handshakes: { ...FULL_PLAN.handshakes, warmupMs: 200, measureMs: 1000 },
  idleSessions: 500,
  rssSettleMs: 500,
  failoverTrials: 8,
  migration: { ...FULL_PLAN.migration, sessions: 100, warmupMs: 500, steadyMs: 1500, drains: 1 },
};

/** The bench stops itself (killing everything it started) if it ever runs this long. */
const WATCHDOG_MS = 15 * 60 * 1000;
/** Pause between runs so one run's closing sockets and GC don't overlap the next. */
const SETTLE_BETWEEN_RUNS_MS = 300;

/** CPU (% of one core) used by processes outside the bench above which a run counts as disturbed. */
const NOISY_OTHER_CPU_PCT = 10;

/** The bars the product must reach. */
const BARS = {
  throughputVsNginx: 0.8,
  addedP99Ms: 1,
  rssPerSessionKiB: 16,
  failoverP99Ms: 50,
};

// ---- targets ---------------------------------------------------------------------------------

type TargetName = 'direct' | 'sidecar' | 'nginx';
const TARGET_NAMES: readonly TargetName[] = ['direct', 'sidecar', 'nginx'];

interface Target {
  name: TargetName;
  url: string;
  /** Processes whose CPU use is reported for this target's runs. */
  watched: WatchedProcess[];
}

type PerTarget<T> = Partial<Record<TargetName, T>>;

interface RssResult {
  sessions: number;
  beforeKiB: number;
  afterKiB: number;
  /** (after − before) / sessions, both read after a settle: the figure the bar is about. */
  perSessionKiB: number;
  /** Sidecar only: the same after a forced full GC, and the live JS heap per session. */
  afterGc?: { perSessionKiB: number; heapPerSessionKiB: number };
}

interface Results {
  throughput: Map<number, PerTarget<ThroughputResult>>;
  latency: PerTarget<LatencyResult>;
  handshakes: PerTarget<HandshakeResult>;
  rss: PerTarget<RssResult>;
  failover?: { gaps: Distribution; trials: number; timeouts: number };
  /** The same OCPP traffic through a sidecar without and with the ocpp codec. */
  codec?: { none: ThroughputResult; ocpp: ThroughputResult };
  migration?: MigrationResult;
}

interface DrainResult {
  from: string;
  to: string;
  /** Sessions on the backend when the drain started (the drain's answer). */
  sessions: number;
  /** Drain request → the backend seen with 0 sessions (null: not within drainTimeoutMs). */
  ms: number | null;
  /** baton_migrations_total by result over this drain. */
  migrations: Record<string, number>;
}

interface MigrationResult {
  drains: DrainResult[];
  /** Extra latency (round trip − the backend's answer delay), ms, of the drained backends' sessions. */
  steady: Distribution;
  drainWindow: Distribution;
  held: Distribution;
  /** Mean of baton_migration_drain_seconds over the drains, ms (undefined: the sidecar has no such metric). */
  meanDrainHoldMs: number | undefined;
  /** migration.quietPeriod, ms (the default: the bench does not set it). */
  quietPeriod: number;
  tally: MigrationTally;
  /** From the end of the warm-up to the end of the last drain. */
  cpu: CpuShare;
}

interface Environment {
  cores: number;
  cpuModel: string;
  node: string;
  kernel: string;
  nginxBinary: string | null;
  nginxVersion?: string;
  /** The commit measured, "+dirty" when the sidecar's sources differ from it; "?" outside git. */
  commit: string;
}

// ---- main --------------------------------------------------------------------------------------

interface Options {
  plan: Plan;
  quick: boolean;
  sections: Set<Section>;
  /** Extra node flags for every sidecar process (profiling, GC tuning experiments). */
  sidecarNodeFlags: string[];
  /** Runs per target of throughput, latency and handshakes; the least disturbed one is kept. */
  rounds: number;
}

const USAGE = `usage: node dist/bench/bench.js [--quick] [--only ${SECTIONS.join(',')}] [--rounds N] [--sidecar-node-flags="FLAGS"]
  --quick               shorter runs and fewer trials (a smoke test; the figures are rougher)
  --only LIST           run only these sections (comma-separated)
  --rounds N            run throughput, latency and handshakes N times per target, interleaved, and keep
                        the least disturbed run of each (for a machine shared with other work; default 1)
  --sidecar-node-flags  extra node flags for every sidecar process, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
`;

/** A command-line mistake: reported with the usage, without a stack. */
class UsageError extends Error {}

function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        'sidecar-node-flags': { type: 'string', default: '' },
        rounds: { type: 'string', default: '1' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const sections = new Set<Section>();
  for (const name of (values.only ?? SECTIONS.join(',')).split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(SECTIONS as readonly string[]).includes(name)) throw new UsageError(`--only: unknown section "${name}" (use ${SECTIONS.join(', ')})`);
    sections.add(name as Section);
  }
  const sidecarNodeFlags = (values['sidecar-node-flags'] ?? '').split(/\s+/).filter(Boolean);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) throw new UsageError(`--rounds: "${values.rounds}" is not a whole number from 1 to 10`);
  return { plan: values.quick ? QUICK_PLAN : FULL_PLAN, quick: values.quick ?? false, sections, sidecarNodeFlags, rounds };
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const options = parseOptions();
  const { quick, sections } = options;
  const env = describeEnvironment();
  const results: Results = { throughput: new Map(), latency: {}, handshakes: {}, rss: {} };

  log(`Baton bench${quick ? ' (--quick)' : ''} at ${env.commit}: ${env.cores} cores (${env.cpuModel}), node ${env.node}, Linux ${env.kernel}`);
  log('The load generator, the proxy and the backend share these cores; every server is its own process on 127.0.0.1.');
  if (!env.nginxBinary) log('nginx not found: skipped (apt-get install nginx to compare)');
  if (options.sidecarNodeFlags.length > 0) log(`sidecar node flags: ${options.sidecarNodeFlags.join(' ')}`);
  const background = await backgroundCpuPct();
  if (background >= NOISY_OTHER_CPU_PCT) {
    log(`WARNING: the machine is already busy (${background.toFixed(0)}% of a core used by other processes): figures will be noisy.`);
  }

  if (sections.has('throughput') || sections.has('latency') || sections.has('handshakes')) {
    await runProxySections(options, env, results);
  }
  if (sections.has('rss')) await runRssSection(options, env, results);
  if (sections.has('failover')) await runFailoverSection(options, results);
  if (sections.has('codec')) await runCodecSection(options, results);
  if (sections.has('migration')) await runMigrationSection(options, results);

  log('');
  log(report(options, env, results));
  log('');
  log(`bench finished in ${((performance.now() - startedAt) / 1000).toFixed(0)} s`);
}

function describeEnvironment(): Environment {
  return {
    cores: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown CPU',
    node: process.version,
    kernel: release(),
    nginxBinary: findNginx(),
    commit: sidecarCommit(),
  };
}

function sidecarCommit(): string {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, encoding: 'utf8' });
  if (head.status !== 0) return '?';
  const changes = spawnSync('git', ['status', '--porcelain', '--', 'sidecar', 'cli', 'bin'], { cwd: repo, encoding: 'utf8' });
  return `${head.stdout.trim()}${changes.stdout.trim() ? '+dirty' : ''}`;
}

/** CPU used by everything else on the machine over half a second, as % of one core. */
async function backgroundCpuPct(): Promise<number> {
  const from = readMachineBusyMs();
  const at = performance.now();
  await sleep(500);
  return (100 * (readMachineBusyMs() - from)) / (performance.now() - at);
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- sections 1-3: one backend, reached directly, through the sidecar, through nginx -----------

async function runProxySections(options: Options, env: Environment, results: Results): Promise<void> {
  const { plan, sections } = options;
  const backend = await startEchoBackend('echo', await freePort(), false);
  const sidecar = await startSidecar({ backends: [{ id: 'echo', url: backend.url }], nodeFlags: options.sidecarNodeFlags });
  const nginx = env.nginxBinary ? await startNginx(env.nginxBinary, backend.port) : undefined;
  if (nginx) env.nginxVersion = nginx.version;
  const targets = proxyTargets(backend, sidecar, nginx);

  const rounds = options.rounds;
  if (sections.has('throughput')) {
    for (const size of plan.throughput.sizes) {
      const perTarget = await runInterleaved(targets, rounds, async (target) => {
        const r = await runThroughput(target.url, { ...plan.throughput, payloadBytes: size }, target.watched);
        return [r, `throughput ${sizeLabel(size)} ${target.name}: ${formatNumber(r.messagesPerSec)} msg/s, ${formatNumber(r.mibPerSec)} MiB/s (CPU ${cpuLabel(r.cpu)})`];
      });
      results.throughput.set(size, perTarget);
    }
  }
  if (sections.has('latency')) {
    results.latency = await runInterleaved(targets, rounds, async (target) => {
      const r = await runLatency(target.url, plan.latency, target.watched);
      const line =
        `latency ${target.name}: p50 ${formatNumber(r.p50Ms)} ms, p99 ${formatNumber(r.p99Ms)} ms, max ${formatNumber(r.maxMs)} ms ` +
        `(${r.samples} samples, ${r.lost} lost; CPU ${cpuLabel(r.cpu)})`;
      return [r, line];
    });
  }
  if (sections.has('handshakes')) {
    results.handshakes = await runInterleaved(targets, rounds, async (target) => {
      const r = await runHandshakes(target.url, plan.handshakes, target.watched);
      return [r, `handshakes ${target.name}: ${formatNumber(r.perSec)}/s (${r.completed} completed, ${r.failed} failed; CPU ${cpuLabel(r.cpu)})`];
    });
  }

  await stopSidecar(sidecar);
  await nginx?.proc.stop('SIGKILL');
  await backend.proc.stop('SIGKILL');
}

/**
 * The codec's cost: 64-byte OCPP CALL frames (distinct ids) answered by CALLRESULTs, through one
 * sidecar without a codec and one with `codec.default: ocpp`, interleaved like the other runs.
 */
async function runCodecSection(options: Options, results: Results): Promise<void> {
  const backend = await startEchoBackend('ocpp', await freePort(), false, ['--ocpp-answer']);
  const plain = await startSidecar({ backends: [{ id: 'ocpp', url: backend.url }], nodeFlags: options.sidecarNodeFlags });
  const codec = await startSidecar({ backends: [{ id: 'ocpp', url: backend.url }], nodeFlags: options.sidecarNodeFlags, codec: 'ocpp' });
  const frames = Array.from({ length: 1024 }, (_, i) => {
    const head = `[2,"${i.toString(36).padStart(8, '0')}","Heartbeat",{"p":"`;
    return Buffer.from(`${head}${'x'.repeat(64 - head.length - 3)}"}]`);
  });
  const plan = { ...options.plan.throughput, payloadBytes: 64, textFrames: frames };
  const watched = (s: SidecarProcess) => [
    { role: 'proxy', pid: s.proc.pid },
    { role: 'backend', pid: backend.proc.pid },
  ];
  let none: ThroughputResult | undefined;
  let ocpp: ThroughputResult | undefined;
  for (let round = 0; round < options.rounds; round++) {
    const a = await runThroughput(plain.url, plan, watched(plain));
    const b = await runThroughput(codec.url, plan, watched(codec));
    log(`codec round ${round + 1}: none ${formatNumber(a.messagesPerSec)} msg/s, ocpp ${formatNumber(b.messagesPerSec)} msg/s`);
    if (!none || (a.cpu.other ?? 0) <= (none.cpu.other ?? 0)) none = a;
    if (!ocpp || (b.cpu.other ?? 0) <= (ocpp.cpu.other ?? 0)) ocpp = b;
  }
  results.codec = { none: none!, ocpp: ocpp! };
  await stopSidecar(plain);
  await stopSidecar(codec);
  await backend.proc.stop('SIGKILL');
}

/**
 * Runs every target `rounds` times, interleaved (direct, sidecar, nginx, direct, ...), and keeps
 * per target the least disturbed run: the one during which other processes used the least CPU
 * (on a tie, the later, warmer one). Other work on the machine only ever slows a run down, and
 * picking by disturbance rather than by result doesn't favour lucky runs.
 */
async function runInterleaved<T extends { cpu: CpuShare }>(
  targets: readonly Target[],
  rounds: number,
  run: (target: Target) => Promise<[T, string]>,
): Promise<PerTarget<T>> {
  const kept: PerTarget<T> = {};
  for (let round = 1; round <= rounds; round++) {
    for (const target of targets) {
      const [result, line] = await run(target);
      log(rounds > 1 ? `${line} [round ${round}/${rounds}]` : line);
      const previous = kept[target.name];
      if (previous === undefined || Math.round(result.cpu.other ?? 0) <= Math.round(previous.cpu.other ?? 0)) kept[target.name] = result;
      await sleep(SETTLE_BETWEEN_RUNS_MS);
    }
  }
  return kept;
}

/** SIGTERM (shutdown.grace is 0) rather than SIGKILL, so a sidecar run with --cpu-prof writes its profile. */
function stopSidecar(sidecar: SidecarProcess): Promise<void> {
  return sidecar.proc.stop('SIGTERM');
}

function proxyTargets(backend: EchoBackendProcess, sidecar: SidecarProcess, nginx: NginxProcess | undefined): Target[] {
  const backendWatch: WatchedProcess = { role: 'backend', pid: backend.proc.pid };
  const targets: Target[] = [
    { name: 'direct', url: backend.url, watched: [backendWatch] },
    { name: 'sidecar', url: sidecar.url, watched: [{ role: 'proxy', pid: sidecar.proc.pid }, backendWatch] },
  ];
  if (nginx) targets.push({ name: 'nginx', url: nginx.url, watched: [{ role: 'proxy', pid: nginx.proc.pid }, backendWatch] });
  return targets;
}

// ---- section 4: RSS per idle session ------------------------------------------------------------

/**
 * A fresh backend, sidecar and nginx, so earlier runs' heap slack doesn't absorb the sessions.
 * The backend's own growth per direct connection is measured too, as a reference for what one
 * plain `ws` server socket costs in Node (a sidecar session holds two sockets).
 */
async function runRssSection(options: Options, env: Environment, results: Results): Promise<void> {
  const { plan } = options;
  const backend = await startEchoBackend('rss', await freePort(), false);
  try {
    results.rss.direct = await measureIdleRss(backend.url, backend.proc.pid, plan);
    log(`idle sessions, reference (echo backend, direct): ${rssLabel(results.rss.direct)}`);

    const sidecar = await startSidecar({ backends: [{ id: 'rss', url: backend.url }], nodeFlags: options.sidecarNodeFlags, gcHook: true });
    try {
      results.rss.sidecar = await measureIdleRss(sidecar.url, sidecar.proc.pid, plan, sidecar);
      log(`idle sessions, sidecar: ${rssLabel(results.rss.sidecar)}`);
    } finally {
      await stopSidecar(sidecar);
    }

    if (env.nginxBinary) {
      const nginx = await startNginx(env.nginxBinary, backend.port);
      env.nginxVersion = nginx.version;
      try {
        results.rss.nginx = await measureIdleRss(nginx.url, nginx.proc.pid, plan);
        log(`idle sessions, nginx: ${rssLabel(results.rss.nginx)}`);
      } finally {
        await nginx.proc.stop('SIGKILL');
      }
    }
  } finally {
    await backend.proc.stop('SIGKILL');
  }
}

/**
 * Warm the server up, read VmRSS, open N idle sessions, settle, read VmRSS again. A sidecar started
 * with the GC hook is also measured after a forced full GC on both sides of the sessions (each GC
 * comes after the settled reading, so the bar's figure is taken as without the hook).
 */
async function measureIdleRss(url: string, pid: number, plan: Plan, gcHooked?: SidecarProcess): Promise<RssResult> {
  const n = plan.idleSessions;
  // A few sessions first so lazily loaded code and one-time buffers aren't counted per session.
  await closeAll(await openIdleSessions(url, 50));
  await sleep(plan.rssSettleMs);
  const beforeKiB = readRssKiB(pid);
  const heapBefore = gcHooked ? (await forceGc(gcHooked)).heapUsed : 0;
  const rssBeforeGc = gcHooked ? readRssKiB(pid) : 0;
  const sockets = await openIdleSessions(url, n);
  await sleep(plan.rssSettleMs);
  const afterKiB = readRssKiB(pid);
  const result: RssResult = { sessions: n, beforeKiB, afterKiB, perSessionKiB: (afterKiB - beforeKiB) / n };
  if (gcHooked) {
    const heapAfter = (await forceGc(gcHooked)).heapUsed;
    result.afterGc = { perSessionKiB: (readRssKiB(pid) - rssBeforeGc) / n, heapPerSessionKiB: (heapAfter - heapBefore) / 1024 / n };
  }
  await closeAll(sockets);
  return result;
}

// ---- section 5: failover gap -------------------------------------------------------------------

/**
 * Two tagged backends behind one sidecar. Each trial opens a new session, kills (SIGKILL) the
 * backend serving it and times the kill to the first reply from the other one; the killed backend
 * is restarted on its port before the next trial.
 */
async function runFailoverSection(options: Options, results: Results): Promise<void> {
  const { plan } = options;
  const backends = new Map<string, EchoBackendProcess>();
  for (const id of ['a', 'b']) backends.set(id, await startEchoBackend(id, await freePort(), true));
  const sidecar = await startSidecar({ backends: [...backends.values()].map((b) => ({ id: b.id, url: b.url })), nodeFlags: options.sidecarNodeFlags });
  const gaps = new Float64Array(plan.failoverTrials);
  let measured = 0;
  let timeouts = 0;
  try {
    for (let trial = 0; trial < plan.failoverTrials; trial++) {
      const result = await runFailoverTrial(sidecar.url, (id) => backends.get(id)?.proc.child.kill('SIGKILL'));
      if (result.gapMs === null) timeouts++;
      else gaps[measured++] = result.gapMs;
      const killed = backends.get(result.killed);
      if (!killed) throw new Error(`failover trial: a reply came from unknown backend "${result.killed}"`);
      await killed.proc.exitPromise;
      backends.set(killed.id, await startEchoBackend(killed.id, killed.port, true));
    }
  } finally {
    await stopSidecar(sidecar);
    for (const b of backends.values()) await b.proc.stop('SIGKILL');
  }
  results.failover = { gaps: distributionOf(gaps, measured), trials: plan.failoverTrials, timeouts };
  const d = results.failover.gaps;
  log(`failover gap over ${plan.failoverTrials} trials: p50 ${formatNumber(d.p50)} ms, p99 ${formatNumber(d.p99)} ms, max ${formatNumber(d.max)} ms (${timeouts} without failover)`);
}

// ---- section 7: planned migration ---------------------------------------------------------------

/** How often the drained backend's session count is polled (the drain time's resolution). */
const DRAIN_POLL_MS = 10;
/** After a drain, before reading /metrics and going on: the last held and late answers come back. */
const AFTER_DRAIN_MS = 1000;
/** At the end: how long the clients wait for answers still due before counting the rest as lost. */
const FINAL_WAIT_MS = 1000;

/**
 * Two tagged echo backends that answer late (--answer-delay), behind one sidecar, and sessions
 * sending steadily through it. Drains one backend through the admin API (no rate: as fast as the
 * sidecar goes) and times the request to the backend's last session gone; optionally enables it
 * again and drains the other. The clients time each message's round trip minus the backend's own
 * delay (stamped in the answer), and count lost, duplicated and reordered answers.
 */
async function runMigrationSection(options: Options, results: Results): Promise<void> {
  const mp = options.plan.migration;
  const backendArgs = ['--answer-delay', mp.answerDelay, '--stamp-delay'];
  const backends: EchoBackendProcess[] = [];
  for (const id of ['a', 'b']) backends.push(await startEchoBackend(id, await freePort(), true, backendArgs));
  const sidecar = await startSidecar({ backends: backends.map((b) => ({ id: b.id, url: b.url })), nodeFlags: options.sidecarNodeFlags, admin: true });
  const admin = new AdminClient({ baseUrl: sidecar.adminUrl! });
  const maxDurationMs = mp.warmupMs + mp.drains * (mp.steadyMs + mp.drainTimeoutMs + AFTER_DRAIN_MS) + 5000;
  const traffic = await startMigrationTraffic(sidecar.url, { sessions: mp.sessions, sendEveryMs: mp.sendEveryMs, maxDurationMs });
  const drains: DrainResult[] = [];
  const windows: { drain: DrainWindow; steadyFrom: number }[] = [];
  let holdSum = 0;
  let holdCount = 0;
  let holdMetric = true;
  const watched = [
    { role: 'proxy', pid: sidecar.proc.pid },
    ...backends.map((b) => ({ role: `backend ${b.id}`, pid: b.proc.pid })),
  ];
  let tally: MigrationTally | undefined;
  let cpu: CpuShare | undefined;
  try {
    await sleep(mp.warmupMs);
    const cpuFrom = cpuSnapshot(watched);
    let [from, to] = ['a', 'b'];
    for (let i = 0; i < mp.drains; i++) {
      await sleep(mp.steadyMs);
      const before = await readMetrics(sidecar.adminUrl!);
      const servedBy = traffic.servedBy();
      const at = performance.now();
      const answer = await admin.drainBackend(from);
      let until: number | null = null;
      while (performance.now() - at < mp.drainTimeoutMs) {
        const view = (await admin.backends()).backends.find((b) => b.id === from);
        if (view?.sessions === 0) {
          until = performance.now();
          break;
        }
        await sleep(DRAIN_POLL_MS);
      }
      await sleep(AFTER_DRAIN_MS);
      const after = await readMetrics(sidecar.adminUrl!);
      const sessions = servedBy.flatMap((id, s) => (id === from ? [s] : []));
      windows.push({ drain: { backend: from, from: at, until: until ?? performance.now(), sessions }, steadyFrom: at - mp.steadyMs });
      const migrations = seriesDelta(before, after, 'baton_migrations_total', 'result');
      const hold = seriesDelta(before, after, 'baton_migration_drain_seconds_sum');
      const holds = seriesDelta(before, after, 'baton_migration_drain_seconds_count');
      if (hold === undefined || holds === undefined) holdMetric = false;
      else {
        holdSum += hold.total;
        holdCount += holds.total;
      }
      const ms = until === null ? null : until - at;
      drains.push({ from, to, sessions: answer.sessions, ms, migrations: migrations?.byLabel ?? {} });
      log(
        `migration drain ${from} → ${to}: ${answer.sessions} sessions ` +
          (ms === null ? `not drained within ${mp.drainTimeoutMs} ms` : `in ${formatNumber(ms)} ms, ${formatNumber((1000 * answer.sessions) / ms)} sessions/s`) +
          ` (migrations: ${migrationsLabel(migrations?.byLabel ?? {})}; mean baton_migration_drain_seconds: ` +
          (hold && holds && holds.total > 0 ? `${formatNumber((1000 * hold.total) / holds.total)} ms over ${holds.total})` : 'n/a)'),
      );
      await admin.enableBackend(from);
      [from, to] = [to, from];
    }
    cpu = cpuShare(watched, cpuFrom, cpuSnapshot(watched));
  } finally {
    tally = await traffic.stop(FINAL_WAIT_MS);
    await stopSidecar(sidecar);
    for (const b of backends) await b.proc.stop('SIGKILL');
  }

  // The comparison window: the same sessions, the same length as the drain, just before it.
  const steady = windows.flatMap(({ drain, steadyFrom }) => [...traffic.extraLatency(drain.sessions, Math.max(steadyFrom, 2 * drain.from - drain.until), drain.from)]);
  const steadyDist = distributionOf(Float64Array.from(steady), steady.length);
  const during = windows.flatMap(({ drain }) => [...traffic.extraLatency(drain.sessions, drain.from, drain.until)]);
  // A round trip's own share of the extra latency: the steady p99 (capped by heldExtraLatency()).
  const held = windows.flatMap(({ drain }) => [...traffic.heldExtraLatency(drain, steadyDist.p99)]);
  results.migration = {
    drains,
    steady: steadyDist,
    drainWindow: distributionOf(Float64Array.from(during), during.length),
    held: distributionOf(Float64Array.from(held), held.length),
    meanDrainHoldMs: holdMetric && holdCount > 0 ? (1000 * holdSum) / holdCount : undefined,
    quietPeriod: keyDef('migration.quietPeriod').default,
    tally,
    cpu: cpu!,
  };
  const m = results.migration;
  const d = (x: Distribution) => `p50 ${formatNumber(x.p50)} ms, p99 ${formatNumber(x.p99)} ms (${x.count})`;
  log(`migration extra latency: steady ${d(m.steady)}; during the drain ${d(m.drainWindow)}; held ${d(m.held)}`);
  log(`migration clients: ${tallyLabel(tally)}; CPU ${cpuLabel(m.cpu)}`);
}

/** Every sample of the sidecar's /metrics, by series ("name{labels}" as printed) → value. */
async function readMetrics(adminUrl: string): Promise<Map<string, number>> {
  const res = await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const series = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    series.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return series;
}

/**
 * The change of a metric between two readings: in total, and by the value of one label. Undefined
 * when the sidecar doesn't have the metric.
 */
function seriesDelta(
  before: Map<string, number>,
  after: Map<string, number>,
  name: string,
  label?: string,
): { total: number; byLabel: Record<string, number> } | undefined {
  let found = false;
  let total = 0;
  const byLabel: Record<string, number> = {};
  for (const [series, value] of after) {
    if (series !== name && !series.startsWith(`${name}{`)) continue;
    found = true;
    const delta = value - (before.get(series) ?? 0);
    total += delta;
    const key = label ? new RegExp(`[{,]${label}="([^"]*)"`).exec(series)?.[1] : undefined;
    if (key !== undefined) byLabel[key] = (byLabel[key] ?? 0) + delta;
  }
  return found ? { total, byLabel } : undefined;
}

// ---- report --------------------------------------------------------------------------------------

function sizeLabel(bytes: number): string {
  return bytes >= 1024 && bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

function cpuLabel(cpu: CpuShare): string {
  return Object.entries(cpu)
    .map(([role, pct]) => `${role} ${pct.toFixed(0)}%`)
    .join(', ');
}

function migrationsLabel(byResult: Record<string, number>): string {
  const parts = Object.entries(byResult)
    .filter(([, n]) => n > 0)
    .map(([result, n]) => `${n} ${result}`);
  return parts.length > 0 ? parts.join(', ') : 'none counted';
}

function tallyLabel(t: MigrationTally): string {
  return (
    `${count(t.lost)} lost answers, ${count(t.duplicates)} duplicates, ${count(t.outOfOrder)} out of order, ` +
    `${count(t.closed)} sessions closed (of ${count(t.sent)} messages)`
  );
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

function rssLabel(r: RssResult): string {
  const gc = r.afterGc
    ? `; after a forced full GC ${formatNumber(r.afterGc.perSessionKiB)} KiB RSS, of which ${formatNumber(r.afterGc.heapPerSessionKiB)} KiB live JS heap`
    : '';
  return `${r.sessions} sessions, VmRSS ${formatNumber(r.beforeKiB / 1024)} → ${formatNumber(r.afterKiB / 1024)} MiB, ${formatNumber(r.perSessionKiB)} KiB per session${gc}`;
}

/** A table row: a label and one value per target, with the sidecar's ratios. */
function figureRow(label: string, values: PerTarget<number>, withRatios = true): string[] {
  return [
    label,
    ...TARGET_NAMES.map((t) => formatNumber(values[t])),
    withRatios ? formatRatio(values.sidecar, values.direct) : '—',
    withRatios ? formatRatio(values.sidecar, values.nginx) : '—',
  ];
}

function pick<T>(perTarget: PerTarget<T>, value: (r: T) => number): PerTarget<number> {
  const out: PerTarget<number> = {};
  for (const t of TARGET_NAMES) {
    const r = perTarget[t];
    if (r !== undefined) out[t] = value(r);
  }
  return out;
}

function report(options: Options, env: Environment, results: Results): string {
  const plan = options.plan;
  const rows: string[][] = [];
  const cpuRows: string[][] = [];
  let maxOtherCpu = 0;
  const noteOther = (cpu: CpuShare) => (maxOtherCpu = Math.max(maxOtherCpu, cpu.other ?? 0));
  const tp = plan.throughput;
  for (const [size, perTarget] of results.throughput) {
    rows.push(figureRow(`echo ${sizeLabel(size)}: msg/s`, pick(perTarget, (r) => r.messagesPerSec)));
    rows.push(figureRow(`echo ${sizeLabel(size)}: MiB/s`, pick(perTarget, (r) => r.mibPerSec)));
    for (const t of TARGET_NAMES) {
      const r = perTarget[t];
      if (r) cpuRows.push(cpuRow(`echo ${sizeLabel(size)} ${t}`, r.cpu));
      if (r) noteOther(r.cpu);
    }
  }
  const lat = results.latency;
  if (Object.keys(lat).length > 0) {
    const label = `latency @${plan.latency.ratePerSec}/s`;
    rows.push(figureRow(`${label}: p50 ms`, pick(lat, (r) => r.p50Ms)));
    rows.push(figureRow(`${label}: p99 ms`, pick(lat, (r) => r.p99Ms)));
    rows.push(figureRow(`${label}: max ms`, pick(lat, (r) => r.maxMs)));
    rows.push(figureRow('added p99 vs direct, ms', addedP99(lat), false));
    for (const t of TARGET_NAMES) {
      const r = lat[t];
      if (r) cpuRows.push(cpuRow(`latency ${t}`, r.cpu));
      if (r) noteOther(r.cpu);
    }
  }
  const hs = results.handshakes;
  if (Object.keys(hs).length > 0) {
    rows.push(figureRow('handshakes/s (open+close)', pick(hs, (r) => r.perSec)));
    for (const t of TARGET_NAMES) {
      const r = hs[t];
      if (r) cpuRows.push(cpuRow(`handshakes ${t}`, r.cpu));
      if (r) noteOther(r.cpu);
    }
  }
  if (Object.keys(results.rss).length > 0) {
    rows.push(figureRow('RSS per idle session, KiB', pick(results.rss, (r) => r.perSessionKiB), false));
    const gc = results.rss.sidecar?.afterGc;
    if (gc) {
      rows.push(figureRow('  same after a full GC, KiB', { sidecar: gc.perSessionKiB }, false));
      rows.push(figureRow('  live JS heap per session, KiB', { sidecar: gc.heapPerSessionKiB }, false));
    }
  }
  const fo = results.failover;
  if (fo) {
    rows.push(figureRow('failover gap p50, ms', { sidecar: fo.gaps.p50 }, false));
    rows.push(figureRow('failover gap p99, ms', { sidecar: fo.gaps.p99 }, false));
    rows.push(figureRow('failover gap max, ms', { sidecar: fo.gaps.max }, false));
  }

  const out: string[] = [];
  out.push('== Summary ==');
  out.push(
    `commit ${env.commit}; machine: ${env.cores} cores (${env.cpuModel}), node ${env.node}, ${env.nginxBinary ? `nginx ${env.nginxVersion ?? '?'} (1 worker, master_process off)` : 'nginx not found: skipped (apt-get install nginx to compare)'}`,
  );
  out.push(
    `throughput: ${tp.connections} connections × ${tp.window} in flight, binary, ${tp.warmupMs} ms warm-up + ${tp.measureMs} ms; ` +
      `latency: ${plan.latency.connections} connections, ${plan.latency.payloadBytes} B; handshakes: concurrency ${plan.handshakes.concurrency}, ${plan.handshakes.measureMs} ms; ` +
      `RSS: ${plan.idleSessions} idle sessions; failover: ${plan.failoverTrials} trials; migration: ${plan.migration.sessions} sessions` +
      (options.rounds > 1 ? `; ${options.rounds} interleaved rounds per target, the least disturbed kept` : ''),
  );
  out.push('');
  out.push(renderTable(['figure', 'direct', 'sidecar', 'nginx', 'sidecar/direct', 'sidecar/nginx'], rows));
  if (results.rss.direct) out.push('(RSS "direct" = the echo backend\'s own growth per connection: one plain ws socket in Node, for reference only.)');
  if (fo && fo.timeouts > 0) out.push(`(failover: ${fo.timeouts} of ${fo.trials} trials saw no reply from the other backend within 5 s; not in the percentiles.)`);
  const cd = results.codec;
  if (cd) {
    out.push('');
    out.push('OCPP codec cost (64 B OCPP CALLs answered by CALLRESULTs, through the sidecar):');
    out.push(
      renderTable(
        ['codec', 'msg/s', 'vs none', 'proxy CPU'],
        [
          ['none', formatNumber(cd.none.messagesPerSec), '1.00×', `${(cd.none.cpu.proxy ?? 0).toFixed(0)}%`],
          ['ocpp', formatNumber(cd.ocpp.messagesPerSec), formatRatio(cd.ocpp.messagesPerSec, cd.none.messagesPerSec), `${(cd.ocpp.cpu.proxy ?? 0).toFixed(0)}%`],
        ],
      ),
    );
  }
  const mg = results.migration;
  if (mg) {
    const mp = plan.migration;
    out.push('');
    out.push(
      `Planned migration (${mp.sessions} sessions through the sidecar, each sending a text message every ${mp.sendEveryMs} ms; ` +
        `backends answer each after ${mp.answerDelay} ms, in order; drain without a rate; migration.quietPeriod: ${mg.quietPeriod} ms, the default):`,
    );
    out.push(
      renderTable(
        ['drain', 'sessions', 'time, ms', 'sessions/s', 'migrations'],
        mg.drains.map((d) => [
          `${d.from} → ${d.to}`,
          String(d.sessions),
          d.ms === null ? `> ${mp.drainTimeoutMs}` : formatNumber(d.ms),
          d.ms === null ? '—' : formatNumber((1000 * d.sessions) / d.ms),
          migrationsLabel(d.migrations),
        ]),
      ),
    );
    out.push('');
    const row = (label: string, x: Distribution) => [label, formatNumber(x.p50), formatNumber(x.p99), formatNumber(x.max), formatNumber(x.mean), String(x.count)];
    const diff = (label: string, x: Distribution, base: Distribution) => [
      label,
      formatNumber(x.p50 - base.p50),
      formatNumber(x.p99 - base.p99),
      '',
      formatNumber(x.mean - base.mean),
      '',
    ];
    out.push(
      renderTable(
        ['extra latency (round trip − backend delay), ms', 'p50', 'p99', 'max', 'mean', 'messages'],
        [
          row('steady (same sessions, same length before the drain)', mg.steady),
          row('during the drain (all of their messages)', mg.drainWindow),
          row('held (sent while their session was migrating)', mg.held),
          diff('  held − steady', mg.held, mg.steady),
          diff('  during the drain − steady', mg.drainWindow, mg.steady),
        ],
      ),
    );
    // A held message waits for the rest of its session's hold; of a hold, the quiet period is the
    // part the sidecar adds (the rest is the old backend still answering, and its close).
    const share =
      mg.meanDrainHoldMs === undefined || mg.meanDrainHoldMs === 0
        ? 'n/a (no baton_migration_drain_seconds)'
        : `${((100 * Math.min(mg.quietPeriod, mg.meanDrainHoldMs)) / mg.meanDrainHoldMs).toFixed(0)}% (quiet period ${mg.quietPeriod} ms of a mean hold of ${formatNumber(mg.meanDrainHoldMs)} ms, baton_migration_drain_seconds)`;
    out.push(`quiet period's share of a migration's hold: ${share}`);
    out.push(`clients: ${tallyLabel(mg.tally)}`);
    out.push(`CPU from the warm-up's end to the last drain's, % of one core: ${cpuLabel(mg.cpu)}`);
    if ((mg.cpu.other ?? 0) >= NOISY_OTHER_CPU_PCT) {
      out.push(`WARNING: other processes used ${mg.cpu.other!.toFixed(0)}% of a core during the migration section: rerun on a quiet machine.`);
    }
  }
  if (cpuRows.length > 0) {
    out.push('');
    out.push('CPU during the measurement window, % of one core (2 cores = 200%):');
    out.push(renderTable(['run', 'loadgen', 'proxy', 'backend', 'other', 'machine'], cpuRows));
    out.push('("other" = CPU used by processes the bench did not start; more than a few % means the figures are disturbed.)');
    if (maxOtherCpu >= NOISY_OTHER_CPU_PCT) {
      out.push(`WARNING: other processes used up to ${maxOtherCpu.toFixed(0)}% of a core during a measurement: rerun on a quiet machine.`);
    }
  }
  out.push('');
  out.push('== Bars ==');
  out.push(...bars(results));
  return out.join('\n');
}

function cpuRow(label: string, cpu: CpuShare): string[] {
  const total = Object.values(cpu).reduce((a, b) => a + b, 0);
  const pct = (v: number | undefined) => (v === undefined ? '—' : `${v.toFixed(0)}%`);
  return [label, pct(cpu.loadgen), pct(cpu.proxy), pct(cpu.backend), pct(cpu.other), pct(total)];
}

function addedP99(lat: PerTarget<LatencyResult>): PerTarget<number> {
  const direct = lat.direct?.p99Ms;
  if (direct === undefined) return {};
  const out: PerTarget<number> = {};
  if (lat.sidecar) out.sidecar = lat.sidecar.p99Ms - direct;
  if (lat.nginx) out.nginx = lat.nginx.p99Ms - direct;
  return out;
}

type Verdict = 'PASS' | 'FAIL' | 'SKIP';

function barLine(verdict: Verdict, text: string): string {
  return `[${verdict}] ${text}`;
}

function bars(results: Results): string[] {
  const lines: string[] = [];
  if (results.throughput.size === 0) lines.push(barLine('SKIP', `throughput through the sidecar ≥ ${BARS.throughputVsNginx}× nginx: not measured`));
  for (const [size, perTarget] of results.throughput) {
    const what = `echo ${sizeLabel(size)} throughput through the sidecar ≥ ${BARS.throughputVsNginx}× nginx`;
    const s = perTarget.sidecar?.messagesPerSec;
    const n = perTarget.nginx?.messagesPerSec;
    if (s === undefined || n === undefined) {
      lines.push(barLine('SKIP', `${what}: nginx not measured`));
      continue;
    }
    const ratio = s / n;
    lines.push(barLine(ratio >= BARS.throughputVsNginx ? 'PASS' : 'FAIL', `${what}: ${ratio.toFixed(2)}× (${formatNumber(s)} vs ${formatNumber(n)} msg/s)`));
  }
  const added = addedP99(results.latency).sidecar;
  lines.push(
    added === undefined
      ? barLine('SKIP', `added p99 latency < ${BARS.addedP99Ms} ms: not measured`)
      : barLine(added < BARS.addedP99Ms ? 'PASS' : 'FAIL', `added p99 latency < ${BARS.addedP99Ms} ms: ${added.toFixed(3)} ms`),
  );
  const rss = results.rss.sidecar?.perSessionKiB;
  lines.push(
    rss === undefined
      ? barLine('SKIP', `RSS per idle session ≤ ${BARS.rssPerSessionKiB} KiB: not measured`)
      : barLine(rss <= BARS.rssPerSessionKiB ? 'PASS' : 'FAIL', `RSS per idle session ≤ ${BARS.rssPerSessionKiB} KiB: ${rss.toFixed(1)} KiB`),
  );
  const fo = results.failover;
  if (fo === undefined) {
    lines.push(barLine('SKIP', `failover gap p99 < ${BARS.failoverP99Ms} ms: not measured`));
  } else {
    // A trial with no failover at all is an infinite gap: it fails the bar whatever the percentiles say.
    const ok = fo.timeouts === 0 && fo.gaps.p99 < BARS.failoverP99Ms;
    const extra = fo.timeouts > 0 ? `, ${fo.timeouts} trial(s) without failover` : '';
    lines.push(barLine(ok ? 'PASS' : 'FAIL', `failover gap p99 < ${BARS.failoverP99Ms} ms: ${formatNumber(fo.gaps.p99)} ms over ${fo.gaps.count} trials${extra}`));
  }
  return lines;
}

// ---- process lifetime -------------------------------------------------------------------------------

process.on('exit', killEverything);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\nbench: ${signal}: stopping every process it started\n`);
    killEverything();
    process.exit(130);
  });
}
setTimeout(() => {
  process.stderr.write(`bench: still running after ${WATCHDOG_MS / 60000} min: giving up\n`);
  killEverything();
  process.exit(1);
}, WATCHDOG_MS).unref();

main().then(
  () => {
    killEverything();
    process.exit(0);
  },
  (err: unknown) => {
    killEverything();
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`bench: harness error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
