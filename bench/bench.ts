// `npm run bench`: measures an echo backend directly, through the Baton sidecar and (when their
// binaries are on PATH) through nginx and haproxy, each one process with one worker thread, and
// prints the figures, the ratios and the product's bars. Every server runs in its own process;
// the load generator runs in this one. All on 127.0.0.1. The sidecar runs on the image's Node
// (`npm run bench` starts the bench on it) with the image's NODE_OPTIONS (the Dockerfile's ENV),
// so the bench measures what ships. See docs/performance.md
// for what each figure means.
//
//   node dist/bench/bench.js [--quick] [--only throughput,latency,handshakes,rss,failover,resume,codec,migration,kube] [--rounds N]
//   (failover = failover-gap,mass-failover; each can be named alone)
//                            [--sidecar-node-flags="--cpu-prof --cpu-prof-dir=/tmp/prof"] [--sidecar-node-options="..."]
//
// It reports; a missed bar is not an error. It exits non-zero only when the harness itself fails.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { AdminClient } from '../common/admin/client.js';
import { keyDef } from '../common/config/schema.js';
import { CODEC_TRAFFIC, isBuiltinCodec, STEADY_FRAMES, type CodecTraffic } from './codec-traffic.js';
import { KUBE_FULL_PLAN, KUBE_PARTS, KUBE_QUICK_PLAN, kubeBars, kubeReport, runKubeParts, type KubePart, type KubePlan, type KubeResults } from './kube.js';
import {
  closeAll,
  cpuShare,
  cpuSnapshot,
  graphqlWsTraffic,
  runMassFailover,
  mqttTraffic,
  openIdleSessions,
  runFailoverTrial,
  runHandshakes,
  runLatency,
  runQuietSessions,
  runThroughput,
  socketIoTraffic,
  stompTraffic,
  startMigrationTraffic,
  taggedEchoTraffic,
  waitUntilServing,
  warmUp,
  type CpuShare,
  type DrainWindow,
  type FailoverTraffic,
  type HandshakePlan,
  type HandshakeResult,
  type LatencyPlan,
  type LatencyResult,
  type MassFailoverPlan,
  type MassFailoverResult,
  type MigrationTally,
  type QuietSessionsPlan,
  type ThroughputResult,
  type WatchedProcess,
} from './loadgen.js';
import {
  checkOpenFiles,
  FIXTURE_TOKEN,
  findOnPath,
  forceGc,
  freePort,
  imageNodeOptions,
  imageNodeVersion,
  killEverything,
  makeTempDir,
  readCpuMs,
  readMachineBusyMs,
  readRssKiB,
  startEchoBackend,
  startFixtureBackend,
  startHaproxy,
  startNodePipe,
  startNginx,
  startSidecar,
  type BackendProcess,
  type FixtureProtocol,
  type ProxyProcess,
  type SidecarProcess,
} from './procs.js';
import { distributionOf, formatNumber, formatRatio, renderTable, type Distribution } from './stats.js';

// ---- what to run ---------------------------------------------------------------------------

const SECTIONS = ['throughput', 'quiet-sessions', 'latency', 'handshakes', 'rss', 'failover-gap', 'mass-failover', 'resume', 'codec', 'migration', ...KUBE_PARTS] as const;
type Section = (typeof SECTIONS)[number];
/** The sections run on the same targets (direct, the sidecar, nginx, haproxy, node-pipe) in front of one echo backend. */
const PROXY_SECTIONS: readonly Section[] = ['throughput', 'quiet-sessions', 'latency', 'handshakes'];
/** Names --only accepts for several sections at once. */
const SECTION_GROUPS: Record<string, readonly Section[]> = { failover: ['failover-gap', 'mass-failover'], kube: KUBE_PARTS };

interface Plan {
  /** Every size at every window (messages in flight per connection). */
  throughput: { connections: number; windows: number[]; sizes: number[]; warmupMs: number; measureMs: number };
  quietSessions: QuietSessionsPlan;
  latency: LatencyPlan;
  handshakes: HandshakePlan;
  idleSessions: number;
  /** Wait after opening idle sessions before reading the RSS they arrived with. */
  rssSettleMs: number;
  /**
   * How long sessions (and the processes before them) stay idle before the bar's reading: V8 keeps
   * the young generation a burst of handshakes grew until its memory reducer, some 10–30 s of
   * quiet later, gives it back, and Node 26's V8 pools the pages it frees for some 10 s more before
   * it returns them (docs/performance.md, "Memory per idle session").
   */
  rssIdleMs: number;
  failoverTrials: number;
  massFailover: MassFailoverPlan & {
    /** The echo backends' --answer-delay (MIN-MAX ms): answers are late, so some are in flight at the kill. */
    answerDelay: string;
  };
  resume: ResumePlan;
  migration: MigrationPlan;
  kube: KubePlan;
}

interface ResumePlan {
  trials: number;
  /** The fixture backends send each subscription / namespace a tick this often. */
  tickMs: number;
  /** Subscriptions (graphql-ws) or namespaces (socket.io) per session. */
  streams: number;
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
  throughput: { connections: 50, windows: [1, 8, 32], sizes: [64, 4096], warmupMs: 1000, measureMs: 3000 },
  // 8,000 messages a second in all, each alone: a fleet's traffic rather than a few busy sockets.
  quietSessions: { sessions: 3000, sendEveryMs: 375, payloadBytes: 64, warmupMs: 1000, measureMs: 3000 },
  latency: { connections: 50, ratePerSec: 2000, payloadBytes: 64, warmupMs: 1000, measureMs: 5000 },
  handshakes: { concurrency: 32, warmupMs: 500, measureMs: 3000 },
  idleSessions: 2000,
  rssSettleMs: 1000,
  rssIdleMs: 60_000,
  failoverTrials: 40,
  massFailover: { sessions: 4000, sendEveryMs: 500, warmupMs: 2000, deadlineMs: 10_000, answerDelay: '2-5' },
  resume: { trials: 40, tickMs: 2, streams: 2 },
  migration: { sessions: 200, sendEveryMs: 20, answerDelay: '1-200', warmupMs: 1000, steadyMs: 3000, drains: 2, drainTimeoutMs: 15_000 },
  kube: KUBE_FULL_PLAN,
};

const QUICK_PLAN: Plan = {
  throughput: { ...FULL_PLAN.throughput, warmupMs: 200, measureMs: 500 },
  quietSessions: { ...FULL_PLAN.quietSessions, sessions: 500, sendEveryMs: 250, warmupMs: 200, measureMs: 700 },
  latency: { ...FULL_PLAN.latency, warmupMs: 200, measureMs: 1000 },
  handshakes: { ...FULL_PLAN.handshakes, warmupMs: 200, measureMs: 700 },
  idleSessions: 500,
  rssSettleMs: 500,
  rssIdleMs: 60_000,
  failoverTrials: 8,
  massFailover: { ...FULL_PLAN.massFailover, sessions: 1000, warmupMs: 1500 },
  resume: { ...FULL_PLAN.resume, trials: 8 },
  migration: { ...FULL_PLAN.migration, sessions: 100, warmupMs: 500, steadyMs: 1500, drains: 1 },
  kube: KUBE_QUICK_PLAN,
};

/** The bench stops itself (killing everything it started) if it ever runs this long. */
const WATCHDOG_MS = 25 * 60 * 1000;
/** Pause between runs so one run's closing sockets and GC don't overlap the next. */
const SETTLE_BETWEEN_RUNS_MS = 300;

/** CPU (% of one core) used by processes outside the bench above which a run counts as disturbed. */
const NOISY_OTHER_CPU_PCT = 10;

/** The bars the product must reach (issue 13); "× nginx" compares with nginx in the same run. */
const BARS = {
  /** Per echo size: the sidecar's CPU per echo at most this × nginx's at every window, and its msg/s at least this × nginx's at BAR_WINDOW. */
  echo: new Map([
    [64, { cpuVsNginx: 1.5, rateVsNginx: 0.9 }],
    [4096, { cpuVsNginx: 1.0, rateVsNginx: 1.0 }],
  ]),
  handshakeCpuVsNginx: 2,
  handshakeRateVsNginx: 0.9,
  p99VsNginx: 1.2,
  addedP99Ms: 1,
  rssPerSessionKiB: 10,
  failoverP99Ms: 50,
  resumeP99Ms: 50,
  massFailoverMaxMs: 1000,
  massFailoverCpuMsPerSession: 0.3,
};
/** The window at which echo msg/s is held to its bar. */
const BAR_WINDOW = 8;

// ---- targets ---------------------------------------------------------------------------------

type TargetName = 'direct' | 'sidecar' | 'nginx' | 'haproxy' | 'node-pipe';
/** node-pipe (tools/node-pipe.ts) is Node's floor: a byte relay with nothing of the sidecar's work. */
const TARGET_NAMES: readonly TargetName[] = ['direct', 'sidecar', 'nginx', 'haproxy', 'node-pipe'];
/** The reference proxies, compared with the sidecar. */
type ReferenceName = 'nginx' | 'haproxy';
const REFERENCES: readonly ReferenceName[] = ['nginx', 'haproxy'];

interface Target<N extends string = TargetName> {
  name: N;
  url: string;
  /** Processes whose CPU use is reported for this target's runs. */
  watched: WatchedProcess[];
}

type PerTarget<T> = Partial<Record<TargetName, T>>;

interface RssResult {
  sessions: number;
  beforeKiB: number;
  afterKiB: number;
  /** (after − before) / sessions, both read after rssIdleMs of quiet: the figure the bar is about. */
  perSessionKiB: number;
  /** The same with `after` read rssSettleMs after the sessions opened: what a burst of arrivals holds for a while. */
  arrivedPerSessionKiB: number;
  /** Sidecar only: the same after a forced full GC, and the live JS heap per session. */
  afterGc?: { perSessionKiB: number; heapPerSessionKiB: number };
}

interface ThroughputCase {
  size: number;
  window: number;
  perTarget: PerTarget<ThroughputResult>;
}

interface Results {
  throughput: ThroughputCase[];
  quietSessions: PerTarget<ThroughputResult>;
  latency: PerTarget<LatencyResult>;
  handshakes: PerTarget<HandshakeResult>;
  rss: PerTarget<RssResult>;
  failover?: FailoverResult;
  massFailover?: MassFailoverResult;
  /** The same again in the same sidecar: its failover path has run (and been compiled) once. */
  massFailoverAgain?: MassFailoverResult;
  /** Per protocol: a resumed session's failover gap. */
  resume: { protocol: FixtureProtocol; result: FailoverResult }[];
  /** Per protocol: the same traffic through a sidecar without and with its codec. */
  codec: CodecResult[];
  migration?: MigrationResult;
  kube: KubeResults;
}

interface FailoverResult {
  gaps: Distribution;
  trials: number;
  /** Trials with no event from the other backend within the timeout (the session stayed open). */
  timeouts: number;
  /** Trials whose session the sidecar closed instead. */
  closed: number;
  /** Frames after the kill that were not events, over all trials (e.g. a resume answer not swallowed). */
  otherAfterKill: number;
  /**
   * CPU over the trials, % of one core: this process, the sidecar, the backends (every process,
   * restarts included, its whole life) and everything else.
   */
  cpu: CpuShare;
  /** The sidecar's baton_codec_* resume counters over the section (with a codec). */
  resumes?: { resumes: number; resumed: number; swallowed: number; refused: number; unresumable: number };
}

interface CodecResult {
  traffic: CodecTraffic;
  none: ThroughputResult;
  coded: ThroughputResult;
  /** baton_codec_malformed_frames_total after the runs: frames the codec could not read. */
  malformed: number | undefined;
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
  /** Reference proxies found on PATH, and their versions once started. */
  binaries: Record<ReferenceName, string | null>;
  versions: Partial<Record<ReferenceName, string>>;
  /** The sidecar's NODE_OPTIONS (the image's unless --sidecar-node-options) and extra flags. */
  sidecarNodeOptions: string;
  sidecarNodeFlags: string[];
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
  /** NODE_OPTIONS of every sidecar process: the image's unless overridden. */
  sidecarNodeOptions: string;
  /** Rounds of throughput, latency, handshakes and codec, interleaved; the least disturbed round is kept. */
  rounds: number;
}

const USAGE = `usage: node dist/bench/bench.js [--quick] [--only ${SECTIONS.join(',')}] [--rounds N] [--sidecar-node-flags="FLAGS"] [--sidecar-node-options="OPTIONS"]
  --quick                 shorter runs and fewer trials (a smoke test; the figures are rougher)
  --only LIST             run only these sections (comma-separated; failover = failover-gap,mass-failover;
                          kube = ${KUBE_PARTS.join(',')})
  --rounds N              run throughput, latency, handshakes and codec N times per target, interleaved, and keep
                          the least disturbed round, all targets of it (for a machine shared with other work; default 1)
  --sidecar-node-flags    extra node flags for every sidecar process, after its NODE_OPTIONS,
                          e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  --sidecar-node-options  the sidecar's NODE_OPTIONS instead of the image's (the Dockerfile's ENV, none now), e.g. "--max-semi-space-size=4"
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
        'sidecar-node-options': { type: 'string' },
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
    const group = SECTION_GROUPS[name];
    if (group) for (const section of group) sections.add(section);
    else if ((SECTIONS as readonly string[]).includes(name)) sections.add(name as Section);
    else throw new UsageError(`--only: unknown section "${name}" (use ${[...SECTIONS, ...Object.keys(SECTION_GROUPS)].join(', ')})`);
  }
  const sidecarNodeFlags = (values['sidecar-node-flags'] ?? '').split(/\s+/).filter(Boolean);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) throw new UsageError(`--rounds: "${values.rounds}" is not a whole number from 1 to 10`);
  const sidecarNodeOptions = values['sidecar-node-options'] ?? imageNodeOptions();
  return { plan: values.quick ? QUICK_PLAN : FULL_PLAN, quick: values.quick ?? false, sections, sidecarNodeFlags, sidecarNodeOptions, rounds };
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const options = parseOptions();
  const { quick, sections } = options;
  const env = describeEnvironment(options);
  const results: Results = { throughput: [], quietSessions: {}, latency: {}, handshakes: {}, rss: {}, resume: [], codec: [], kube: {} };

  log(`Baton bench${quick ? ' (--quick)' : ''} at ${env.commit}: ${env.cores} cores (${env.cpuModel}), node ${env.node}, Linux ${env.kernel}`);
  log('The load generator, the proxy and the backend share these cores; every server is its own process on 127.0.0.1.');
  for (const name of REFERENCES) if (!env.binaries[name]) log(`${name} not found: skipped (apt-get install ${name} to compare)`);
  log(`sidecar: ${sidecarFlagsLabel(env)}`);
  const background = await backgroundCpuPct();
  if (background >= NOISY_OTHER_CPU_PCT) {
    log(`WARNING: the machine is already busy (${background.toFixed(0)}% of a core used by other processes): figures will be noisy.`);
  }

  if (PROXY_SECTIONS.some((section) => sections.has(section))) {
    await timed(PROXY_SECTIONS.filter((section) => sections.has(section)).join(', '), () => runProxySections(options, env, results));
  }
  if (sections.has('rss')) await timed('rss', () => runRssSection(options, env, results));
  if (sections.has('failover-gap')) await timed('failover-gap', () => runFailoverSection(options, results));
  if (sections.has('mass-failover')) await timed('mass-failover', () => runMassFailoverSection(options, results));
  if (sections.has('resume')) await timed('resume', () => runResumeSection(options, results));
  if (sections.has('codec')) await timed('codec', () => runCodecSection(options, results));
  if (sections.has('migration')) await timed('migration', () => runMigrationSection(options, results));
  const kubeParts = new Set(KUBE_PARTS.filter((part: KubePart) => sections.has(part)));
  if (kubeParts.size > 0) results.kube = await timed('kube', () => runKubeParts(kubeParts, options.plan.kube, log));

  log('');
  log(report(options, env, results));
  log('');
  log(`bench finished in ${((performance.now() - startedAt) / 1000).toFixed(0)} s`);
}

/** Runs a section and logs how long it took (the full bench should stay within a few minutes). */
async function timed<T>(section: string, body: () => Promise<T>): Promise<T> {
  const at = performance.now();
  const result = await body();
  log(`(${section}: ${((performance.now() - at) / 1000).toFixed(0)} s)`);
  return result;
}

function describeEnvironment(options: Options): Environment {
  return {
    cores: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown CPU',
    node: nodeLabel(),
    kernel: release(),
    binaries: { nginx: findOnPath('nginx'), haproxy: findOnPath('haproxy') },
    versions: {},
    sidecarNodeOptions: options.sidecarNodeOptions,
    sidecarNodeFlags: options.sidecarNodeFlags,
    commit: sidecarCommit(),
  };
}

/** This process's Node (every sidecar the bench starts runs on it), and whether it is the image's. */
function nodeLabel(): string {
  const image = imageNodeVersion();
  return process.version === image ? `${process.version} (the image's)` : `${process.version} (not the image's ${image}: run npm run bench)`;
}

function sidecarFlagsLabel(env: Environment): string {
  const image = imageNodeOptions();
  const options = env.sidecarNodeOptions === '' ? 'NODE_OPTIONS empty (V8 defaults)' : `NODE_OPTIONS=${env.sidecarNodeOptions}`;
  const source = env.sidecarNodeOptions === image ? " (as the image ships it: the Dockerfile's)" : ` (not the image's ${image === '' ? 'V8 defaults' : image})`;
  const extra = env.sidecarNodeFlags.length > 0 ? ` + node flags ${env.sidecarNodeFlags.join(' ')}` : '';
  return options + source + extra;
}

function sidecarCommit(): string {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, encoding: 'utf8' });
  if (head.status !== 0) return '?';
  const changes = spawnSync('git', ['status', '--porcelain', '--', 'sidecar', 'operator', 'cli', 'bin'], { cwd: repo, encoding: 'utf8' });
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

// ---- sections 1-3: one backend, reached directly, through the sidecar, nginx and haproxy -------

/** The reference proxies found on PATH, started in front of `backendPort`. */
async function startReferences(env: Environment, backendPort: number): Promise<Partial<Record<ReferenceName, ProxyProcess>>> {
  const started: Partial<Record<ReferenceName, ProxyProcess>> = {};
  const starters = { nginx: startNginx, haproxy: startHaproxy };
  for (const name of REFERENCES) {
    const binary = env.binaries[name];
    if (!binary) continue;
    started[name] = await starters[name](binary, backendPort);
    env.versions[name] = started[name].version;
  }
  return started;
}

async function runProxySections(options: Options, env: Environment, results: Results): Promise<void> {
  const { plan, sections } = options;
  const backend = await startEchoBackend('echo', await freePort(), false);
  const sidecar = await startSidecar({ backends: [{ id: 'echo', url: backend.url }], nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags });
  const references = await startReferences(env, backend.port);
  const nodePipe = await startNodePipe(backend.port, options.sidecarNodeOptions);
  const targets = proxyTargets(backend, sidecar, references, nodePipe);

  const rounds = options.rounds;
  if (sections.has('throughput')) {
    for (const size of plan.throughput.sizes) {
      for (const window of plan.throughput.windows) {
        const perTarget = await runInterleaved(targets, rounds, async (target) => {
          const r = await runThroughput(target.url, { ...plan.throughput, window, payloadBytes: size }, target.watched);
          const cpu = target.name === 'direct' ? '' : `, ${formatNumber(cpuPerEchoUs(r))} µs proxy CPU per echo`;
          return [r, `throughput ${sizeLabel(size)} ×${window} ${target.name}: ${formatNumber(r.messagesPerSec)} msg/s${cpu} (CPU ${cpuLabel(r.cpu)})`];
        });
        results.throughput.push({ size, window, perTarget });
      }
    }
  }
  if (sections.has('quiet-sessions')) {
    const qp = plan.quietSessions;
    log(`quiet sessions: open files allowed (soft RLIMIT_NOFILE): bench ${checkOpenFiles(process.pid, qp.sessions + SPARE_FILES, 'the bench')}`);
    results.quietSessions = await runInterleaved(targets, rounds, async (target) => {
      const r = await runQuietSessions(target.url, qp, target.watched);
      const cpu = target.name === 'direct' ? '' : `, ${formatNumber(cpuPerEchoUs(r))} µs proxy CPU per echo`;
      return [r, `quiet sessions ${target.name}: ${formatNumber(r.messagesPerSec)} msg/s${cpu} (CPU ${cpuLabel(r.cpu)})`];
    });
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
      const cpu = target.name === 'direct' ? '' : `, ${formatNumber(cpuPerHandshakeUs(r))} µs proxy CPU per handshake`;
      return [r, `handshakes ${target.name}: ${formatNumber(r.perSec)}/s${cpu} (${r.completed} completed, ${r.failed} failed; CPU ${cpuLabel(r.cpu)})`];
    });
  }

  await stopSidecar(sidecar);
  for (const reference of [...Object.values(references), nodePipe]) await reference.proc.stop('SIGKILL');
  await backend.proc.stop('SIGKILL');
}

/**
 * Each codec's cost: a protocol's small frames (bench/codec-traffic.ts) through one sidecar
 * without a codec and one with `codec.default: <codec>`, in front of an echo backend that answers
 * each frame with the protocol's frame for the other direction; interleaved like the other runs.
 */
async function runCodecSection(options: Options, results: Results): Promise<void> {
  for (const traffic of CODEC_TRAFFIC) {
    if (!isBuiltinCodec(traffic.codec)) {
      log(`codec ${traffic.codec}: not a built-in codec of this sidecar: skipped`);
      continue;
    }
    const exchanges = Array.from({ length: STEADY_FRAMES }, (_, i) => traffic.steady(i));
    const file = join(makeTempDir('baton-bench-codec-'), 'answers.json');
    const b64 = (frames: readonly Buffer[]) => frames.map((f) => f.toString('base64'));
    writeFileSync(file, JSON.stringify({ binary: traffic.binary, open: b64(traffic.open.map((e) => e[1])), steady: b64(exchanges.map((e) => e[1])) }));
    const backend = await startEchoBackend('codec', await freePort(), false, ['--answer-frames', file]);
    const backends = [{ id: 'codec', url: backend.url }];
    const plain = await startSidecar({ backends, nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags });
    const coded = await startSidecar({ backends, nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags, codec: traffic.codec, admin: true });
    const plan = {
      ...options.plan.throughput,
      window: BAR_WINDOW, // the echo bars' window: deep enough to batch, not so deep that batching hides the per-message cost
      payloadBytes: exchanges[0]![0].length,
      frames: { binary: traffic.binary, open: traffic.open.map((e) => e[0]), steady: exchanges.map((e) => e[0]) },
    };
    const watched = (s: SidecarProcess) => [
      { role: 'proxy', pid: s.proc.pid },
      { role: 'backend', pid: backend.proc.pid },
    ];
    const targets = [
      { name: 'none', url: plain.url, watched: watched(plain) },
      { name: 'codec', url: coded.url, watched: watched(coded) },
    ] as const;
    try {
      const kept = await runInterleaved(targets, options.rounds, async (target) => {
        const r = await runThroughput(target.url, plan, target.watched);
        const label = target.name === 'none' ? 'none' : traffic.codec;
        return [r, `codec ${traffic.codec}, sidecar with ${label}: ${formatNumber(r.messagesPerSec)} msg/s, ${formatNumber(cpuPerEchoUs(r))} µs sidecar CPU per echo (CPU ${cpuLabel(r.cpu)})`];
      });
      const malformed = seriesDelta(new Map(), await readMetrics(coded.adminUrl!), 'baton_codec_malformed_frames_total')?.total;
      if (malformed) log(`WARNING: the ${traffic.codec} codec could not read ${count(malformed)} frames (baton_codec_malformed_frames_total): fix bench/codec-traffic.ts`);
      results.codec.push({ traffic, none: kept.none!, coded: kept.codec!, malformed });
    } finally {
      await stopSidecar(plain);
      await stopSidecar(coded);
      await backend.proc.stop('SIGKILL');
    }
  }
}

/** The proxy's CPU per echo (one frame each way through it), µs: its % of a core over the window / echoes per second. */
function cpuPerEchoUs(r: ThroughputResult): number {
  return ((r.cpu.proxy ?? 0) * 1e4) / r.messagesPerSec;
}

/** The proxy's CPU per handshake (one client session opened and closed through it), µs. */
function cpuPerHandshakeUs(r: HandshakeResult): number {
  return ((r.cpu.proxy ?? 0) * 1e4) / r.perSec;
}

/** A round in which no run saw more CPU than this used by other processes counts as undisturbed. */
const QUIET_OTHER_PCT = 5;

/**
 * Runs every target `rounds` times, interleaved (direct, sidecar, nginx, direct, ...), and keeps
 * one round, all its targets together: the last undisturbed one (every run's `other` CPU at most
 * QUIET_OTHER_PCT: later rounds are warmer), else the least disturbed (by its most disturbed run).
 * Other work on the machine only ever slows a run down; picking by disturbance rather than by
 * result doesn't favour lucky runs, and keeping one round compares targets measured a minute apart
 * at most.
 */
async function runInterleaved<N extends string, T extends { cpu: CpuShare }>(
  targets: readonly Target<N>[],
  rounds: number,
  run: (target: Target<N>) => Promise<[T, string]>,
): Promise<Partial<Record<N, T>>> {
  let kept: Partial<Record<N, T>> = {};
  let keptDisturbance = Infinity;
  for (let round = 1; round <= rounds; round++) {
    const results: Partial<Record<N, T>> = {};
    let disturbance = 0;
    for (const target of targets) {
      const [result, line] = await run(target);
      log(rounds > 1 ? `${line} [round ${round}/${rounds}]` : line);
      results[target.name] = result;
      disturbance = Math.max(disturbance, Math.round(result.cpu.other ?? 0));
      await sleep(SETTLE_BETWEEN_RUNS_MS);
    }
    if (disturbance <= Math.max(keptDisturbance, QUIET_OTHER_PCT)) {
      kept = results;
      keptDisturbance = disturbance;
    }
  }
  return kept;
}

/** SIGTERM (shutdown.grace is 0) rather than SIGKILL, so a sidecar run with --cpu-prof writes its profile. */
function stopSidecar(sidecar: SidecarProcess): Promise<void> {
  return sidecar.proc.stop('SIGTERM');
}

function proxyTargets(backend: BackendProcess, sidecar: SidecarProcess, references: Partial<Record<ReferenceName, ProxyProcess>>, nodePipe: ProxyProcess): Target[] {
  const backendWatch: WatchedProcess = { role: 'backend', pid: backend.proc.pid };
  const targets: Target[] = [
    { name: 'direct', url: backend.url, watched: [backendWatch] },
    { name: 'sidecar', url: sidecar.url, watched: [{ role: 'proxy', pid: sidecar.proc.pid }, backendWatch] },
  ];
  for (const name of REFERENCES) {
    const proxy = references[name];
    if (proxy) targets.push({ name, url: proxy.url, watched: [{ role: 'proxy', pid: proxy.proc.pid }, backendWatch] });
  }
  targets.push({ name: 'node-pipe', url: nodePipe.url, watched: [{ role: 'proxy', pid: nodePipe.proc.pid }, backendWatch] });
  return targets;
}

// ---- section 4: RSS per idle session ------------------------------------------------------------

/** A process whose RSS per idle session is measured, and the URL its sessions open on. */
interface IdleTarget {
  name: TargetName;
  url: string;
  pid: number;
  /** The sidecar, started with the GC hook: also measured after forced full GCs. */
  gcHooked?: SidecarProcess;
}

/**
 * A fresh sidecar, nginx and haproxy in front of one echo backend, so earlier runs' heap slack
 * doesn't absorb the sessions, and another echo backend measured directly, as a reference for what
 * one plain `ws` server socket costs in Node (a sidecar session holds two sockets). All are
 * measured together, so that the quiet periods are waited once.
 */
async function runRssSection(options: Options, env: Environment, results: Results): Promise<void> {
  const direct = await startEchoBackend('rss-direct', await freePort(), false);
  const backend = await startEchoBackend('rss', await freePort(), false);
  const sidecar = await startSidecar({ backends: [{ id: 'rss', url: backend.url }], nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags, gcHook: true });
  const references = await startReferences(env, backend.port);
  try {
    const targets: IdleTarget[] = [
      { name: 'direct', url: direct.url, pid: direct.proc.pid },
      { name: 'sidecar', url: sidecar.url, pid: sidecar.proc.pid, gcHooked: sidecar },
      ...(Object.entries(references) as [ReferenceName, ProxyProcess][]).map(([name, proxy]) => ({ name, url: proxy.url, pid: proxy.proc.pid })),
    ];
    results.rss = await measureIdleRss(targets, options.plan);
    log(`idle sessions, reference (echo backend, direct): ${rssLabel(results.rss.direct!)}`);
    for (const t of targets.slice(1)) log(`idle sessions, ${t.name}: ${rssLabel(results.rss[t.name]!)}`);
  } finally {
    await stopSidecar(sidecar);
    for (const proxy of Object.values(references)) await proxy.proc.stop('SIGKILL');
    await backend.proc.stop('SIGKILL');
    await direct.proc.stop('SIGKILL');
  }
}

/**
 * Warm each process up, leave it quiet for rssIdleMs, read VmRSS; open N idle sessions on each,
 * read VmRSS rssSettleMs later (as they arrived), then again after rssIdleMs of quiet (the bar's
 * reading). The sidecar is also measured after a forced full GC on both sides of the sessions (each
 * GC comes after the reading without it, so the bar's figure is taken as without the hook).
 */
async function measureIdleRss(targets: readonly IdleTarget[], plan: Plan): Promise<PerTarget<RssResult>> {
  const n = plan.idleSessions;
  // A few sessions first so lazily loaded code and one-time buffers aren't counted per session.
  for (const t of targets) await closeAll(await openIdleSessions(t.url, 50));
  await sleep(plan.rssIdleMs);
  const before = new Map<IdleTarget, { rssKiB: number; heapBytes: number; rssBeforeGcKiB: number }>();
  for (const t of targets) {
    const rssKiB = readRssKiB(t.pid);
    const heapBytes = t.gcHooked ? (await forceGc(t.gcHooked)).heapUsed : 0;
    before.set(t, { rssKiB, heapBytes, rssBeforeGcKiB: t.gcHooked ? readRssKiB(t.pid) : 0 });
  }
  const sockets: Awaited<ReturnType<typeof openIdleSessions>>[] = [];
  const arrivedKiB = new Map<IdleTarget, number>();
  for (const t of targets) {
    sockets.push(await openIdleSessions(t.url, n));
    await sleep(plan.rssSettleMs);
    arrivedKiB.set(t, readRssKiB(t.pid));
  }
  await sleep(plan.rssIdleMs);
  const results: PerTarget<RssResult> = {};
  for (const t of targets) {
    const b = before.get(t)!;
    const afterKiB = readRssKiB(t.pid);
    const result: RssResult = {
      sessions: n,
      beforeKiB: b.rssKiB,
      afterKiB,
      perSessionKiB: (afterKiB - b.rssKiB) / n,
      arrivedPerSessionKiB: (arrivedKiB.get(t)! - b.rssKiB) / n,
    };
    if (t.gcHooked) {
      const heapAfter = (await forceGc(t.gcHooked)).heapUsed;
      result.afterGc = { perSessionKiB: (readRssKiB(t.pid) - b.rssBeforeGcKiB) / n, heapPerSessionKiB: (heapAfter - b.heapBytes) / 1024 / n };
    }
    results[t.name] = result;
  }
  for (const s of sockets) await closeAll(s);
  return results;
}

// ---- section 5: failover gap -------------------------------------------------------------------

/** Two tagged echo backends behind a sidecar without a codec; each trial kills the one serving. */
async function runFailoverSection(options: Options, results: Results): Promise<void> {
  const { plan } = options;
  results.failover = await runFailoverTrials(options, plan.failoverTrials, (id, port) => startEchoBackend(id, port, true), 'none', taggedEchoTraffic);
  log(`failover gap: ${failoverLabel(results.failover)}`);
}

/** How long a restarted backend may take to be given sessions again (the breaker's open period, doubled per re-open). */
const BACK_IN_SERVICE_MS = 30_000;

/** Sockets a process needs besides its sessions' (listeners, admin, pipes, node's own). */
const SPARE_FILES = 200;

/**
 * Mass failover: two tagged echo backends answering a few ms late, one sidecar (no codec, its
 * default least-sessions balancer), many sessions each sending every 500 ms; SIGKILL of the
 * backend serving the most sessions (about half). Every process is checked for enough open files first.
 */
async function runMassFailoverSection(options: Options, results: Results): Promise<void> {
  const mp = options.plan.massFailover;
  const backends: BackendProcess[] = [];
  const sidecarFiles = 2 * mp.sessions + SPARE_FILES;
  const limits: string[] = [`bench ${checkOpenFiles(process.pid, mp.sessions + SPARE_FILES, 'the bench')}`];
  let sidecar: SidecarProcess | undefined;
  try {
    for (const id of ['a', 'b']) {
      const b = await startEchoBackend(id, await freePort(), true, ['--answer-delay', mp.answerDelay]);
      backends.push(b);
      limits.push(`backend ${id} ${checkOpenFiles(b.proc.pid, mp.sessions + SPARE_FILES, `backend ${id}`)}`);
    }
    sidecar = await startSidecar({ backends: backends.map((b) => ({ id: b.id, url: b.url })), nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags });
    limits.push(`sidecar ${checkOpenFiles(sidecar.proc.pid, sidecarFiles, 'the sidecar')}`);
    log(`mass failover: open files allowed (soft RLIMIT_NOFILE): ${limits.join(', ')}`);
    const kill = (id: string) => backends.find((b) => b.id === id)?.proc.child.kill('SIGKILL');
    results.massFailover = await runMassFailover(sidecar.url, mp, sidecar.proc.pid, kill);
    log(`mass failover: ${massFailoverLabel(results.massFailover)}`);
    // Once more, the killed backend back on its port: V8 has compiled the failover path now, as
    // in a sidecar that has failed over before. The bars hold the first one.
    const killed = backends.findIndex((b) => b.id === results.massFailover!.killed);
    backends[killed] = await startEchoBackend(backends[killed]!.id, backends[killed]!.port, true, ['--answer-delay', mp.answerDelay]);
    await waitUntilServing(sidecar.url, backends[killed]!.id, BACK_IN_SERVICE_MS);
    results.massFailoverAgain = await runMassFailover(sidecar.url, mp, sidecar.proc.pid, kill);
    log(`mass failover again: ${massFailoverLabel(results.massFailoverAgain)}`);
  } finally {
    if (sidecar) await stopSidecar(sidecar);
    for (const b of backends) await b.proc.stop('SIGKILL');
  }
}

/** The sidecar's CPU per session failed over, ms (from the kill to the last one, steady traffic included). */
function cpuPerResumedMs(r: MassFailoverResult): number {
  return r.sidecarCpuMs / r.gaps.count;
}

function massFailoverLabel(r: MassFailoverResult): string {
  const d = r.gaps;
  return (
    `${count(r.onKilled)} of ${count(r.sessions)} sessions on backend ${r.killed}: failed over p50 ${formatNumber(d.p50)} ms, p99 ${formatNumber(d.p99)} ms, ` +
    `max ${formatNumber(d.max)} ms (${count(d.count)} failed over, ${count(r.notFailedOver)} not within the deadline, ${count(r.closed)} closed, ` +
    `${count(r.closedElsewhere)} closed on the other backend); sidecar CPU ${formatNumber(r.sidecarCpuMs)} ms over ${formatNumber(r.spanMs)} ms = ` +
    `${formatNumber(cpuPerResumedMs(r))} ms per session failed over (steady traffic before the kill: ${r.steadySidecarCpuPct.toFixed(0)}% of a core)`
  );
}

/**
 * A resumed session's gap: two protocol fixture backends (real graphql-ws, socket.io, MQTT (aedes)
 * and STOMP (stomp-broker-js) servers sending ticks every few ms) behind a sidecar with its default `codec.default: auto`; each trial
 * kills the backend serving a session with an init and subscriptions (or joined namespaces), and
 * times the kill to the first tick from the other backend on every subscription.
 */
async function runResumeSection(options: Options, results: Results): Promise<void> {
  const rp = options.plan.resume;
  const clients: Record<FixtureProtocol, (streams: number, token: string) => FailoverTraffic> = {
    'graphql-ws': graphqlWsTraffic,
    'socket.io': socketIoTraffic,
    mqtt: mqttTraffic,
    stomp: stompTraffic,
  };
  for (const protocol of Object.keys(clients) as FixtureProtocol[]) {
    const traffic = () => clients[protocol](rp.streams, FIXTURE_TOKEN);
    const result = await runFailoverTrials(options, rp.trials, (id, port) => startFixtureBackend(protocol, id, port, rp.tickMs), 'auto', traffic);
    results.resume.push({ protocol, result });
    log(`resume gap, ${protocol}: ${failoverLabel(result)}`);
  }
}

/**
 * Two backends behind one sidecar. Each trial opens a new session, kills (SIGKILL) the backend
 * serving it and times the kill to the first event from the other one on every stream; the killed
 * backend is restarted on its port before the next trial. Each backend, once (re)started, serves
 * one session of the same traffic directly (warmUp), so the one taking over is never cold. With a codec, the sidecar's resume
 * counters over the trials are read from /metrics.
 */
async function runFailoverTrials(
  options: Options,
  trials: number,
  startBackend: (id: string, port: number) => Promise<BackendProcess>,
  codec: 'none' | 'auto',
  traffic: () => FailoverTraffic,
): Promise<FailoverResult> {
  const cpuFrom = { at: performance.now(), machine: readMachineBusyMs(), own: process.cpuUsage() };
  let backendCpuMs = 0;
  /** Its CPU so far: read before it is killed (the few ms it runs after that are not counted). */
  const retire = (b: BackendProcess) => (backendCpuMs += readCpuMs(b.proc.pid));
  const backends = new Map<string, BackendProcess>();
  const start = async (id: string, port: number) => {
    const b = await startBackend(id, port);
    await warmUp(b.url, traffic());
    backends.set(id, b);
  };
  for (const id of ['a', 'b']) await start(id, await freePort());
  const withCodec = codec !== 'none';
  const sidecar = await startSidecar({ backends: [...backends.values()].map((b) => ({ id: b.id, url: b.url })), nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags, codec, admin: withCodec });
  const gaps = new Float64Array(trials);
  let measured = 0;
  let timeouts = 0;
  let closed = 0;
  let otherAfterKill = 0;
  let resumes: FailoverResult['resumes'];
  let cpu: CpuShare = {};
  try {
    const before = withCodec ? await readMetrics(sidecar.adminUrl!) : undefined;
    const kill = (id: string) => {
      const b = backends.get(id);
      if (!b) return;
      retire(b);
      b.proc.child.kill('SIGKILL');
    };
    for (let trial = 0; trial < trials; trial++) {
      const result = await runFailoverTrial(sidecar.url, kill, traffic());
      if (result.gapMs !== null) gaps[measured++] = result.gapMs;
      else if (result.closed) closed++;
      else timeouts++;
      otherAfterKill += result.otherAfterKill;
      const killed = backends.get(result.killed);
      if (!killed) throw new Error(`failover trial: an event came from unknown backend "${result.killed}"`);
      await killed.proc.exitPromise;
      await start(killed.id, killed.port);
    }
    if (before) {
      const after = await readMetrics(sidecar.adminUrl!);
      const delta = (name: string) => seriesDelta(before, after, `baton_codec_${name}`)?.total ?? NaN;
      resumes = {
        resumes: delta('resumes_total'),
        resumed: delta('resumed_total'),
        swallowed: delta('resume_answers_swallowed_total'),
        refused: delta('resume_refusals_total'),
        unresumable: delta('unresumable_sessions_total'),
      };
    }
    for (const b of backends.values()) retire(b);
    const wall = performance.now() - cpuFrom.at;
    const own = process.cpuUsage(cpuFrom.own);
    const pct = (ms: number) => (100 * ms) / wall;
    cpu = { loadgen: pct((own.user + own.system) / 1000), proxy: pct(readCpuMs(sidecar.proc.pid)), backend: pct(backendCpuMs) };
    cpu.other = Math.max(0, pct(readMachineBusyMs() - cpuFrom.machine) - cpu.loadgen! - cpu.proxy! - cpu.backend!);
  } finally {
    await stopSidecar(sidecar);
    for (const b of backends.values()) await b.proc.stop('SIGKILL');
  }
  return { gaps: distributionOf(gaps, measured), trials, timeouts, closed, otherAfterKill, cpu, ...(resumes ? { resumes } : {}) };
}

function failoverLabel(r: FailoverResult): string {
  const d = r.gaps;
  const resumes = r.resumes
    ? `; sidecar: ${r.resumes.resumes} resumes, ${r.resumes.resumed} resumed, ${r.resumes.swallowed} answers swallowed, ${r.resumes.refused} refused, ${r.resumes.unresumable} unresumable`
    : '';
  return (
    `p50 ${formatNumber(d.p50)} ms, p99 ${formatNumber(d.p99)} ms, max ${formatNumber(d.max)} ms over ${r.trials} trials ` +
    `(${r.timeouts} without failover, ${r.closed} closed, ${r.otherAfterKill} non-event frames after the kill${resumes}; CPU ${cpuLabel(r.cpu)})`
  );
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
  const backends: BackendProcess[] = [];
  for (const id of ['a', 'b']) backends.push(await startEchoBackend(id, await freePort(), true, backendArgs));
  const sidecar = await startSidecar({ backends: backends.map((b) => ({ id: b.id, url: b.url })), nodeOptions: options.sidecarNodeOptions, nodeFlags: options.sidecarNodeFlags, admin: true });
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
  return (
    `${r.sessions} sessions, VmRSS ${formatNumber(r.beforeKiB / 1024)} → ${formatNumber(r.afterKiB / 1024)} MiB once idle, ${formatNumber(r.perSessionKiB)} KiB per ` +
    `session (${formatNumber(r.arrivedPerSessionKiB)} as they arrived)${gc}`
  );
}

/** A table row: a label and one value per target, with the sidecar's ratios (to direct, nginx, haproxy). */
function figureRow(label: string, values: PerTarget<number>, withRatios = true): string[] {
  return [
    label,
    ...TARGET_NAMES.map((t) => formatNumber(values[t])),
    ...(['direct', ...REFERENCES] as const).map((t) => (withRatios ? formatRatio(values.sidecar, values[t]) : '—')),
  ];
}

/** A row of the per-proxy tables: a label, the proxies' values (direct too when given), and the sidecar's ratios to nginx and haproxy. */
function proxyRow(label: string, values: PerTarget<number>, withDirect: boolean): string[] {
  const shown = withDirect ? TARGET_NAMES : TARGET_NAMES.filter((t) => t !== 'direct');
  return [label, ...shown.map((t) => formatNumber(values[t])), ...REFERENCES.map((t) => formatRatio(values.sidecar, values[t]))];
}

function proxyHeader(first: string, withDirect: boolean): string[] {
  const shown = withDirect ? TARGET_NAMES : TARGET_NAMES.filter((t) => t !== 'direct');
  return [first, ...shown, ...REFERENCES.map((t) => `sidecar × ${t}`)];
}

function referencesLabel(env: Environment): string {
  const what = { nginx: '1 worker, master_process off', haproxy: 'nbthread 1, -db' };
  return REFERENCES.map((name) =>
    env.binaries[name] ? `${name} ${env.versions[name] ?? '?'} (${what[name]})` : `${name} not found: skipped (apt-get install ${name} to compare)`,
  ).join(', ');
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
  const rateRows: string[][] = [];
  const echoCpuRows: string[][] = [];
  const echoRows = (label: string, run: string, perTarget: PerTarget<ThroughputResult>) => {
    rateRows.push(proxyRow(label, pick(perTarget, (r) => r.messagesPerSec), true));
    const proxies = { ...perTarget };
    delete proxies.direct;
    echoCpuRows.push(proxyRow(label, pick(proxies, cpuPerEchoUs), false));
    for (const t of TARGET_NAMES) {
      const r = perTarget[t];
      if (r) cpuRows.push(cpuRow(`${run} ${t}`, r.cpu));
      if (r) noteOther(r.cpu);
    }
  };
  for (const { size, window, perTarget } of results.throughput) {
    const label = `${sizeLabel(size)}, ${window} in flight`;
    echoRows(label, `echo ${label}`, perTarget);
  }
  if (Object.keys(results.quietSessions).length > 0) {
    const qp = plan.quietSessions;
    echoRows(`${sizeLabel(qp.payloadBytes)}, ${formatNumber(qp.sessions)} sessions × 1 per ${qp.sendEveryMs} ms`, 'quiet sessions', results.quietSessions);
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
    const proxies = { ...hs };
    delete proxies.direct;
    rows.push(figureRow('proxy CPU per handshake, µs', pick(proxies, cpuPerHandshakeUs)));
    rows.push(figureRow('  of it in user mode, µs', pick(proxies, (r) => ((r.cpuUser.proxy ?? 0) * 1e4) / r.perSec)));
    for (const t of TARGET_NAMES) {
      const r = hs[t];
      if (r) cpuRows.push(cpuRow(`handshakes ${t}`, r.cpu));
      if (r) noteOther(r.cpu);
    }
  }
  if (Object.keys(results.rss).length > 0) {
    rows.push(figureRow('RSS per idle session, KiB', pick(results.rss, (r) => r.perSessionKiB), false));
    rows.push(figureRow('  as the sessions arrived, KiB', pick(results.rss, (r) => r.arrivedPerSessionKiB), false));
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
    noteOther(fo.cpu);
  }

  const out: string[] = [];
  out.push('== Summary ==');
  out.push(`commit ${env.commit}; machine: ${env.cores} cores (${env.cpuModel}), node ${env.node}; ${referencesLabel(env)}`);
  out.push(`sidecar: ${sidecarFlagsLabel(env)}`);
  out.push("node-pipe: Node's floor, a byte relay (accept, dial, copy, close; tools/node-pipe.ts) with the sidecar's NODE_OPTIONS");
  const mf = plan.massFailover;
  out.push(
    `throughput: ${tp.connections} connections × ${tp.windows.join(', ')} messages in flight each, binary, ${tp.warmupMs} ms warm-up + ${tp.measureMs} ms; ` +
      `quiet sessions: ${plan.quietSessions.sessions} sessions, one binary message every ${plan.quietSessions.sendEveryMs} ms each; ` +
      `latency: ${plan.latency.connections} connections, ${plan.latency.payloadBytes} B; handshakes: concurrency ${plan.handshakes.concurrency}, ${plan.handshakes.measureMs} ms; ` +
      `RSS: ${plan.idleSessions} idle sessions; failover: ${plan.failoverTrials} trials; mass failover: ${mf.sessions} sessions, one message every ${mf.sendEveryMs} ms each; ` +
      `resume: ${plan.resume.trials} trials per protocol; codec: ${BAR_WINDOW} in flight; migration: ${plan.migration.sessions} sessions` +
      (options.rounds > 1 ? `; ${options.rounds} interleaved rounds, the least disturbed kept` : ''),
  );
  if (rateRows.length > 0) {
    out.push('');
    out.push(`Echo throughput, msg/s (${tp.connections} connections, each keeping N messages in flight; quiet sessions: each message alone):`);
    out.push(renderTable(proxyHeader('echo', true), rateRows));
    out.push('');
    out.push('Proxy CPU per echo, µs (its CPU over the measured interval / echoes; less is better):');
    out.push(renderTable(proxyHeader('echo', false), echoCpuRows));
  }
  if (rows.length > 0) {
    out.push('');
    out.push(renderTable(['figure', ...TARGET_NAMES, ...(['direct', ...REFERENCES] as const).map((t) => `sidecar/${t}`)], rows));
  }
  if (results.rss.direct) out.push('(RSS "direct" = the echo backend\'s own growth per connection: one plain ws socket in Node, for reference only.)');
  if (fo && fo.timeouts + fo.closed > 0) {
    out.push(`(failover: ${fo.timeouts + fo.closed} of ${fo.trials} trials saw no reply from the other backend within 5 s; not in the percentiles.)`);
  }
  const mass = results.massFailover;
  if (mass) {
    out.push('');
    out.push(
      `Mass failover (${count(mass.sessions)} sessions over two tagged echo backends answering ${mf.answerDelay} ms late, each session sending every ${mf.sendEveryMs} ms; ` +
        `SIGKILL of the backend serving the most; the first in a new sidecar, then again in the same sidecar with the killed backend back and ${count(mass.sessions)} new sessions):`,
    );
    const runs = [mass, ...(results.massFailoverAgain ? [results.massFailoverAgain] : [])];
    const row = (label: string, value: (m: MassFailoverResult) => string) => [label, ...runs.map(value)];
    out.push(
      renderTable(
        ['figure', 'first', ...(runs.length > 1 ? ['again'] : [])],
        [
          row('sessions of the killed backend', (m) => `${count(m.onKilled)} (${m.killed})`),
          row('kill → first answer from the other backend, p50 / p99 / max, ms', (m) => `${formatNumber(m.gaps.p50)} / ${formatNumber(m.gaps.p99)} / ${formatNumber(m.gaps.max)}`),
          row('sessions failed over', (m) => count(m.gaps.count)),
          row(`not failed over within ${mf.deadlineMs / 1000} s (still open)`, (m) => count(m.notFailedOver)),
          row('closed: of the killed backend / of the other', (m) => `${count(m.closed)} / ${count(m.closedElsewhere)}`),
          row('sidecar CPU from the kill to the last failover (or close), ms', (m) => `${formatNumber(m.sidecarCpuMs)} over ${formatNumber(m.spanMs)} ms`),
          row('  per session failed over, ms', (m) => formatNumber(cpuPerResumedMs(m))),
          row('  of which steady traffic (its rate before the kill), ms per session', (m) => formatNumber((m.steadySidecarCpuPct * m.spanMs) / 100 / m.gaps.count)),
        ],
      ),
    );
  }
  if (results.resume.length > 0) {
    const rp = plan.resume;
    out.push('');
    out.push(
      `Resumed sessions (sidecar with codec.default auto in front of two fixture backends ticking every ${rp.tickMs} ms; ` +
        `${rp.streams} subscriptions / namespaces per session; SIGKILL of the serving backend → a tick from the other on every one):`,
    );
    const gapRow = (label: string, r: FailoverResult) => {
      const sc = r.resumes;
      return [
        label,
        formatNumber(r.gaps.p50),
        formatNumber(r.gaps.p99),
        formatNumber(r.gaps.max),
        `${r.gaps.count}/${r.trials}`,
        String(r.otherAfterKill),
        sc ? `${sc.resumes}/${sc.resumed}/${sc.swallowed}/${sc.refused}/${sc.unresumable}` : '—',
        `${(r.cpu.other ?? 0).toFixed(0)}%`,
      ];
    };
    const rows = results.resume.map(({ protocol, result }) => gapRow(protocol, result));
    if (fo) rows.push(gapRow('plain failover (echo, no codec)', fo));
    out.push(renderTable(['gap, ms', 'p50', 'p99', 'max', 'failed over', 'other frames after kill', 'resumes/resumed/swallowed/refused/unresumable', 'other CPU'], rows));
    for (const { result } of results.resume) noteOther(result.cpu);
    out.push('("other CPU": used by processes the bench did not start, over the trials; the gaps are very sensitive to it.)');
  }
  if (results.codec.length > 0) {
    out.push('');
    out.push('Codec cost (small frames of each protocol, answered by the backend with the other direction\'s frame; echoes per second through the sidecar):');
    out.push(
      renderTable(
        ['codec', 'frames →/← B', 'msg/s none', 'msg/s codec', 'codec/none', 'sidecar CPU µs/echo none', 'µs/echo codec', 'malformed'],
        results.codec.map(({ traffic, none, coded, malformed }) => {
          const first = traffic.steady(0);
          return [
            traffic.codec,
            `${first[0].length}/${first[1].length}`,
            formatNumber(none.messagesPerSec),
            formatNumber(coded.messagesPerSec),
            formatRatio(coded.messagesPerSec, none.messagesPerSec),
            formatNumber(cpuPerEchoUs(none)),
            formatNumber(cpuPerEchoUs(coded)),
            malformed === undefined ? '—' : count(malformed),
          ];
        }),
      ),
    );
    for (const { traffic } of results.codec) out.push(`  ${traffic.codec}: ${traffic.what}`);
    out.push('("malformed": frames the codec could not read, baton_codec_malformed_frames_total; it should be 0.)');
    for (const { traffic, none, coded } of results.codec) {
      cpuRows.push(cpuRow(`codec ${traffic.codec}: none`, none.cpu), cpuRow(`codec ${traffic.codec}: ${traffic.codec}`, coded.cpu));
      noteOther(none.cpu);
      noteOther(coded.cpu);
    }
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
  out.push(...kubeReport(results.kube, plan.kube));
  if (cpuRows.length > 0) {
    out.push('');
    out.push('CPU during the measurement window, % of one core (2 cores = 200%):');
    out.push(renderTable(['run', 'loadgen', 'proxy', 'backend', 'other', 'machine'], cpuRows));
    out.push('("other" = CPU used by processes the bench did not start; more than a few % means the figures are disturbed.)');
  }
  if (maxOtherCpu >= NOISY_OTHER_CPU_PCT) {
    out.push(`WARNING: other processes used up to ${maxOtherCpu.toFixed(0)}% of a core during a measurement: rerun on a quiet machine.`);
  }
  out.push('');
  out.push('== Bars ==');
  out.push(...bars(results, plan));
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

/** A bar comparing the sidecar with nginx: `sidecar / nginx` must be ≤ (or ≥) `limit`. */
function vsNginxBar(what: string, sidecar: number | undefined, nginx: number | undefined, limit: number, atMost: boolean, unit: string): string {
  const text = `${what} ${atMost ? '≤' : '≥'} ${limit}× nginx`;
  if (sidecar === undefined || nginx === undefined) return barLine('SKIP', `${text}: ${sidecar === undefined ? 'not measured' : 'nginx not measured'}`);
  const ratio = sidecar / nginx;
  const ok = atMost ? ratio <= limit : ratio >= limit;
  return barLine(ok ? 'PASS' : 'FAIL', `${text}: ${ratio.toFixed(2)}× (${formatNumber(sidecar)} vs ${formatNumber(nginx)} ${unit})`);
}

function bars(results: Results, plan: Plan): string[] {
  const lines: string[] = [];
  for (const [size, bar] of BARS.echo) {
    const cases = results.throughput.filter((c) => c.size === size);
    if (cases.length === 0) lines.push(barLine('SKIP', `echo ${sizeLabel(size)}: not measured`));
    for (const { window, perTarget } of cases) {
      const cpu = (t: TargetName) => (perTarget[t] ? cpuPerEchoUs(perTarget[t]) : undefined);
      lines.push(vsNginxBar(`proxy CPU per ${sizeLabel(size)} echo, ${window} in flight,`, cpu('sidecar'), cpu('nginx'), bar.cpuVsNginx, true, 'µs'));
    }
    const atWindow = cases.find((c) => c.window === BAR_WINDOW)?.perTarget;
    if (atWindow) {
      const what = `echo ${sizeLabel(size)} msg/s, ${BAR_WINDOW} in flight,`;
      lines.push(vsNginxBar(what, atWindow.sidecar?.messagesPerSec, atWindow.nginx?.messagesPerSec, bar.rateVsNginx, false, 'msg/s'));
    }
  }
  const hs = results.handshakes;
  const hsCpu = (t: TargetName) => (hs[t] ? cpuPerHandshakeUs(hs[t]) : undefined);
  lines.push(vsNginxBar('proxy CPU per handshake', hsCpu('sidecar'), hsCpu('nginx'), BARS.handshakeCpuVsNginx, true, 'µs'));
  lines.push(vsNginxBar('handshakes/s', hs.sidecar?.perSec, hs.nginx?.perSec, BARS.handshakeRateVsNginx, false, '/s'));
  lines.push(vsNginxBar(`p99 round trip at ${plan.latency.ratePerSec} msg/s`, results.latency.sidecar?.p99Ms, results.latency.nginx?.p99Ms, BARS.p99VsNginx, true, 'ms'));
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
    const ok = fo.timeouts + fo.closed === 0 && fo.gaps.p99 < BARS.failoverP99Ms;
    const extra = fo.timeouts + fo.closed > 0 ? `, ${fo.timeouts + fo.closed} trial(s) without failover` : '';
    lines.push(barLine(ok ? 'PASS' : 'FAIL', `failover gap p99 < ${BARS.failoverP99Ms} ms: ${formatNumber(fo.gaps.p99)} ms over ${fo.gaps.count} trials${extra}`));
  }
  const mass = results.massFailover;
  const massBar = (text: string, verdict: (m: MassFailoverResult) => [boolean, string]) => {
    if (mass === undefined) return barLine('SKIP', `${text}: not measured`);
    const [passed, figure] = verdict(mass);
    return barLine(passed ? 'PASS' : 'FAIL', `${text}: ${figure}`);
  };
  lines.push(
    massBar(`mass failover: every session of the killed backend answered by the other within ${BARS.massFailoverMaxMs} ms`, (m) => {
      const missing = m.onKilled - m.gaps.count;
      return [missing === 0 && m.gaps.max <= BARS.massFailoverMaxMs, `max ${formatNumber(m.gaps.max)} ms over ${count(m.gaps.count)}${missing > 0 ? `, ${count(missing)} never` : ''}`];
    }),
    massBar(`mass failover: sidecar CPU per session failed over ≤ ${BARS.massFailoverCpuMsPerSession} ms`, (m) => {
      const perSession = cpuPerResumedMs(m);
      return [perSession <= BARS.massFailoverCpuMsPerSession, `${formatNumber(perSession)} ms`];
    }),
    massBar('mass failover: 0 sessions closed', (m) => [m.closed + m.closedElsewhere === 0, `${count(m.closed + m.closedElsewhere)} closed`]),
  );
  if (results.resume.length === 0) lines.push(barLine('SKIP', `resumed session's gap p99 < ${BARS.resumeP99Ms} ms: not measured`));
  for (const { protocol, result: r } of results.resume) {
    // A session that did not resume (closed, no tick from the other backend) fails the bar.
    const failed = r.timeouts + r.closed;
    const ok = failed === 0 && r.gaps.p99 < BARS.resumeP99Ms;
    const extra = failed > 0 ? `, ${failed} trial(s) not resumed` : '';
    lines.push(barLine(ok ? 'PASS' : 'FAIL', `resumed ${protocol} session's gap p99 < ${BARS.resumeP99Ms} ms: ${formatNumber(r.gaps.p99)} ms over ${r.gaps.count} trials${extra}`));
  }
  for (const [passed, text] of kubeBars(results.kube)) lines.push(barLine(passed === undefined ? 'SKIP' : passed ? 'PASS' : 'FAIL', text));
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
