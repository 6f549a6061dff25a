// `npm run bench`: measures an echo backend directly, through the Baton sidecar and (when an
// nginx binary is on PATH) through nginx, and prints the figures, the ratios and the product's
// bars. Every server runs in its own process; the load generator runs in this one. All on
// 127.0.0.1. See docs/performance.md for what each figure means.
//
//   node dist/bench/bench.js [--quick] [--only throughput,latency,handshakes,rss,failover]
//                            [--sidecar-cpu-prof DIR]
//
// It reports; a missed bar is not an error. It exits non-zero only when the harness itself fails.
import { availableParallelism, cpus, release } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  closeAll,
  openIdleSessions,
  runFailoverTrial,
  runHandshakes,
  runLatency,
  runThroughput,
  type CpuShare,
  type HandshakePlan,
  type HandshakeResult,
  type LatencyPlan,
  type LatencyResult,
  type ThroughputResult,
  type WatchedProcess,
} from './loadgen.js';
import {
  findNginx,
  freePort,
  killEverything,
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

const SECTIONS = ['throughput', 'latency', 'handshakes', 'rss', 'failover'] as const;
type Section = (typeof SECTIONS)[number];

interface Plan {
  throughput: { connections: number; window: number; sizes: number[]; warmupMs: number; measureMs: number };
  latency: LatencyPlan;
  handshakes: HandshakePlan;
  idleSessions: number;
  /** Wait after opening/closing idle sessions before reading RSS (the sidecar can't be told to GC). */
  rssSettleMs: number;
  failoverTrials: number;
}

const FULL_PLAN: Plan = {
  throughput: { connections: 50, window: 32, sizes: [64, 4096], warmupMs: 1000, measureMs: 5000 },
  latency: { connections: 50, ratePerSec: 2000, payloadBytes: 64, warmupMs: 1000, measureMs: 5000 },
  handshakes: { concurrency: 50, warmupMs: 500, measureMs: 3000 },
  idleSessions: 2000,
  rssSettleMs: 1000,
  failoverTrials: 40,
};

const QUICK_PLAN: Plan = {
  throughput: { ...FULL_PLAN.throughput, warmupMs: 300, measureMs: 1500 },
  latency: { ...FULL_PLAN.latency, warmupMs: 300, measureMs: 1500 },
  handshakes: { ...FULL_PLAN.handshakes, warmupMs: 200, measureMs: 1000 },
  idleSessions: 500,
  rssSettleMs: 500,
  failoverTrials: 8,
};

/** The bench stops itself (killing everything it started) if it ever runs this long. */
const WATCHDOG_MS = 15 * 60 * 1000;
/** Pause between runs so one run's closing sockets and GC don't overlap the next. */
const SETTLE_BETWEEN_RUNS_MS = 300;

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
  perSessionKiB: number;
}

interface Results {
  throughput: Map<number, PerTarget<ThroughputResult>>;
  latency: PerTarget<LatencyResult>;
  handshakes: PerTarget<HandshakeResult>;
  rss: PerTarget<RssResult>;
  failover?: { gaps: Distribution; trials: number; timeouts: number };
}

interface Environment {
  cores: number;
  cpuModel: string;
  node: string;
  kernel: string;
  nginxBinary: string | null;
  nginxVersion?: string;
}

// ---- main --------------------------------------------------------------------------------------

function parseOptions(): { plan: Plan; quick: boolean; sections: Set<Section>; cpuProfDir?: string } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'sidecar-cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`usage: node dist/bench/bench.js [--quick] [--only ${SECTIONS.join(',')}] [--sidecar-cpu-prof DIR]\n`);
    process.exit(0);
  }
  const sections = new Set<Section>();
  for (const name of (values.only ?? SECTIONS.join(',')).split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(SECTIONS as readonly string[]).includes(name)) throw new Error(`--only: unknown section "${name}" (use ${SECTIONS.join(', ')})`);
    sections.add(name as Section);
  }
  return { plan: values.quick ? QUICK_PLAN : FULL_PLAN, quick: values.quick ?? false, sections, cpuProfDir: values['sidecar-cpu-prof'] };
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const { plan, quick, sections, cpuProfDir } = parseOptions();
  const env = describeEnvironment();
  const results: Results = { throughput: new Map(), latency: {}, handshakes: {}, rss: {} };

  log(`Baton bench${quick ? ' (--quick)' : ''}: ${env.cores} cores (${env.cpuModel}), node ${env.node}, Linux ${env.kernel}`);
  log('The load generator, the proxy and the backend share these cores; every server is its own process on 127.0.0.1.');
  if (!env.nginxBinary) log('nginx not found: skipped (apt-get install nginx to compare)');

  if (sections.has('throughput') || sections.has('latency') || sections.has('handshakes')) {
    await runProxySections(plan, sections, env, results, cpuProfDir);
  }
  if (sections.has('rss')) await runRssSection(plan, env, results);
  if (sections.has('failover')) await runFailoverSection(plan, results);

  log('');
  log(report(plan, env, results));
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
  };
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- sections 1-3: one backend, reached directly, through the sidecar, through nginx -----------

async function runProxySections(plan: Plan, sections: Set<Section>, env: Environment, results: Results, cpuProfDir?: string): Promise<void> {
  const backend = await startEchoBackend('echo', await freePort(), false);
  const nodeFlags = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  const sidecar = await startSidecar({ backends: [{ id: 'echo', url: backend.url }], nodeFlags });
  const nginx = env.nginxBinary ? await startNginx(env.nginxBinary, backend.port) : undefined;
  if (nginx) env.nginxVersion = nginx.version;
  const targets = proxyTargets(backend, sidecar, nginx);

  if (sections.has('throughput')) {
    for (const size of plan.throughput.sizes) {
      const perTarget: PerTarget<ThroughputResult> = {};
      results.throughput.set(size, perTarget);
      for (const target of targets) {
        const r = await runThroughput(target.url, { ...plan.throughput, payloadBytes: size }, target.watched);
        perTarget[target.name] = r;
        log(`throughput ${sizeLabel(size)} ${target.name}: ${formatNumber(r.messagesPerSec)} msg/s, ${formatNumber(r.mibPerSec)} MiB/s (CPU ${cpuLabel(r.cpu)})`);
        await sleep(SETTLE_BETWEEN_RUNS_MS);
      }
    }
  }
  if (sections.has('latency')) {
    for (const target of targets) {
      const r = await runLatency(target.url, plan.latency);
      results.latency[target.name] = r;
      log(`latency ${target.name}: p50 ${formatNumber(r.p50Ms)} ms, p99 ${formatNumber(r.p99Ms)} ms, max ${formatNumber(r.maxMs)} ms (${r.samples} samples, ${r.lost} lost)`);
      await sleep(SETTLE_BETWEEN_RUNS_MS);
    }
  }
  if (sections.has('handshakes')) {
    for (const target of targets) {
      const r = await runHandshakes(target.url, plan.handshakes, target.watched);
      results.handshakes[target.name] = r;
      log(`handshakes ${target.name}: ${formatNumber(r.perSec)}/s (${r.completed} completed, ${r.failed} failed; CPU ${cpuLabel(r.cpu)})`);
      await sleep(SETTLE_BETWEEN_RUNS_MS);
    }
  }

  // SIGTERM (shutdown.grace 0) rather than SIGKILL so a --cpu-prof sidecar writes its profile.
  await sidecar.proc.stop('SIGTERM');
  if (cpuProfDir) log(`sidecar CPU profile written to ${cpuProfDir}`);
  await nginx?.proc.stop('SIGKILL');
  await backend.proc.stop('SIGKILL');
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
async function runRssSection(plan: Plan, env: Environment, results: Results): Promise<void> {
  const backend = await startEchoBackend('rss', await freePort(), false);
  try {
    results.rss.direct = await measureIdleRss(backend.url, backend.proc.pid, plan);
    log(`idle sessions, reference (echo backend, direct): ${rssLabel(results.rss.direct)}`);

    const sidecar = await startSidecar({ backends: [{ id: 'rss', url: backend.url }] });
    try {
      results.rss.sidecar = await measureIdleRss(sidecar.url, sidecar.proc.pid, plan);
      log(`idle sessions, sidecar: ${rssLabel(results.rss.sidecar)}`);
    } finally {
      await sidecar.proc.stop('SIGKILL');
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

/** Warm the server up, read VmRSS, open N idle sessions, settle, read VmRSS again. */
async function measureIdleRss(url: string, pid: number, plan: Plan): Promise<RssResult> {
  // A few sessions first so lazily loaded code and one-time buffers aren't counted per session.
  await closeAll(await openIdleSessions(url, 50));
  await sleep(plan.rssSettleMs);
  const beforeKiB = readRssKiB(pid);
  const sockets = await openIdleSessions(url, plan.idleSessions);
  await sleep(plan.rssSettleMs);
  const afterKiB = readRssKiB(pid);
  await closeAll(sockets);
  return { sessions: plan.idleSessions, beforeKiB, afterKiB, perSessionKiB: (afterKiB - beforeKiB) / plan.idleSessions };
}

// ---- section 5: failover gap -------------------------------------------------------------------

/**
 * Two tagged backends behind one sidecar. Each trial opens a new session, kills (SIGKILL) the
 * backend serving it and times the kill to the first reply from the other one; the killed backend
 * is restarted on its port before the next trial.
 */
async function runFailoverSection(plan: Plan, results: Results): Promise<void> {
  const backends = new Map<string, EchoBackendProcess>();
  for (const id of ['a', 'b']) backends.set(id, await startEchoBackend(id, await freePort(), true));
  const sidecar = await startSidecar({ backends: [...backends.values()].map((b) => ({ id: b.id, url: b.url })) });
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
    await sidecar.proc.stop('SIGKILL');
    for (const b of backends.values()) await b.proc.stop('SIGKILL');
  }
  results.failover = { gaps: distributionOf(gaps, measured), trials: plan.failoverTrials, timeouts };
  const d = results.failover.gaps;
  log(`failover gap over ${plan.failoverTrials} trials: p50 ${formatNumber(d.p50)} ms, p99 ${formatNumber(d.p99)} ms, max ${formatNumber(d.max)} ms (${timeouts} without failover)`);
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

function rssLabel(r: RssResult): string {
  return `${r.sessions} sessions, VmRSS ${formatNumber(r.beforeKiB / 1024)} → ${formatNumber(r.afterKiB / 1024)} MiB, ${formatNumber(r.perSessionKiB)} KiB per session`;
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

function report(plan: Plan, env: Environment, results: Results): string {
  const rows: string[][] = [];
  const cpuRows: string[][] = [];
  const tp = plan.throughput;
  for (const [size, perTarget] of results.throughput) {
    rows.push(figureRow(`echo ${sizeLabel(size)}: msg/s`, pick(perTarget, (r) => r.messagesPerSec)));
    rows.push(figureRow(`echo ${sizeLabel(size)}: MiB/s`, pick(perTarget, (r) => r.mibPerSec)));
    for (const t of TARGET_NAMES) {
      const r = perTarget[t];
      if (r) cpuRows.push(cpuRow(`echo ${sizeLabel(size)} ${t}`, r.cpu));
    }
  }
  const lat = results.latency;
  if (Object.keys(lat).length > 0) {
    const label = `latency @${plan.latency.ratePerSec}/s`;
    rows.push(figureRow(`${label}: p50 ms`, pick(lat, (r) => r.p50Ms)));
    rows.push(figureRow(`${label}: p99 ms`, pick(lat, (r) => r.p99Ms)));
    rows.push(figureRow(`${label}: max ms`, pick(lat, (r) => r.maxMs)));
    rows.push(figureRow('added p99 vs direct, ms', addedP99(lat), false));
  }
  const hs = results.handshakes;
  if (Object.keys(hs).length > 0) {
    rows.push(figureRow('handshakes/s (open+close)', pick(hs, (r) => r.perSec)));
    for (const t of TARGET_NAMES) {
      const r = hs[t];
      if (r) cpuRows.push(cpuRow(`handshakes ${t}`, r.cpu));
    }
  }
  if (Object.keys(results.rss).length > 0) {
    rows.push(figureRow('RSS per idle session, KiB', pick(results.rss, (r) => r.perSessionKiB), false));
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
    `machine: ${env.cores} cores (${env.cpuModel}), node ${env.node}, ${env.nginxBinary ? `nginx ${env.nginxVersion ?? '?'} (1 worker, master_process off)` : 'nginx not found: skipped (apt-get install nginx to compare)'}`,
  );
  out.push(
    `throughput: ${tp.connections} connections × ${tp.window} in flight, binary, ${tp.warmupMs} ms warm-up + ${tp.measureMs} ms; ` +
      `latency: ${plan.latency.connections} connections, ${plan.latency.payloadBytes} B; handshakes: concurrency ${plan.handshakes.concurrency}, ${plan.handshakes.measureMs} ms; ` +
      `RSS: ${plan.idleSessions} idle sessions; failover: ${plan.failoverTrials} trials`,
  );
  out.push('');
  out.push(renderTable(['figure', 'direct', 'sidecar', 'nginx', 'sidecar/direct', 'sidecar/nginx'], rows));
  if (results.rss.direct) out.push('(RSS "direct" = the echo backend\'s own growth per connection: one plain ws socket in Node, for reference only.)');
  if (fo && fo.timeouts > 0) out.push(`(failover: ${fo.timeouts} of ${fo.trials} trials saw no reply from the other backend within 5 s; not in the percentiles.)`);
  if (cpuRows.length > 0) {
    out.push('');
    out.push('CPU during the measurement window, % of one core (2 cores = 200%):');
    out.push(renderTable(['run', 'loadgen', 'proxy', 'backend', 'total'], cpuRows));
  }
  out.push('');
  out.push('== Bars ==');
  out.push(...bars(results));
  return out.join('\n');
}

function cpuRow(label: string, cpu: CpuShare): string[] {
  const total = Object.values(cpu).reduce((a, b) => a + b, 0);
  const pct = (v: number | undefined) => (v === undefined ? '—' : `${v.toFixed(0)}%`);
  return [label, pct(cpu.loadgen), pct(cpu.proxy), pct(cpu.backend), pct(total)];
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
    process.stderr.write(`bench: harness error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killEverything();
    process.exit(1);
  },
);
