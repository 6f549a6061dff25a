// Renders the Grafana dashboards to docs/dashboards/*.png, so they can be seen without Grafana.
// Each dashboard's panels are queried from a local Prometheus that scraped a real scenario, drawn
// with Chart.js at their grid positions (tools/render-dashboards.html) and screenshotted by
// headless Chromium (Debian's `chromium`, installed on first use). About two minutes:
//
//   npm run build && node dist/tools/render-dashboards.js [sidecar] [rollout]
//
// sidecar: one sidecar, three echo backend processes and 60 clients sending; a backend is
//   SIGKILLed and restarted, one is SIGSTOPped (φ, pong timeouts), all die for 3 s (buffering,
//   dial errors, breakers), the busiest is drained through the admin API, 20 clients leave.
// rollout: no Kubernetes. The operator's own pieces (operator/plan.ts, operator/sidecars.ts and the
//   OperatorMetrics registry) run the reconcile loop a WsBalancer would get, against two real
//   sidecars with 50 sessions, while endpoints of revision v2 appear and v1's go away.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Dashboard } from '@grafana/schema';
import { DASHBOARDS } from '../dashboards/src/index.js';
import { panelViews } from '../dashboards/src/panels.js';
import { concreteExpr } from '../dashboards/src/promql.js';
import { validateSpec, type WsBalancerStatus } from '../operator/api/wsbalancer.js';
import { OperatorMetrics } from '../operator/metrics.js';
import { buildStatus, desiredBackends, sessionsByRevision, sidecarHolds, stepRollout, type BackendEndpoint, type RolloutState, type SidecarTarget } from '../operator/plan.js';
import { observeSidecars, pushSidecars } from '../operator/sidecars.js';
import { AdminClient } from '../common/admin/client.js';
import { BackendProcess, freePort, killAllBackends, pump, startSidecar, TestClient, waitFor } from '../test/helpers.js';
import { ensurePrometheus, PrometheusServer } from '../test/prometheus.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const OUT_DIR = join(root, 'docs/dashboards');
/** $__rate_interval for a 200 ms scrape; one point a second. */
const RATE_WINDOW = '5s';
const STEP = 1;
const TOKEN = 'render-dashboards-token';

interface Scenario {
  prometheus: PrometheusServer;
  start: number;
  end: number;
  note: string;
  stop: () => Promise<void>;
}

function ensureChromium(): void {
  try {
    execFileSync('sh', ['-c', 'command -v chromium'], { stdio: 'ignore' });
  } catch {
    if (process.getuid?.() !== 0) throw new Error('chromium is missing and this is not root: run `apt-get install chromium` first');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '-qq', 'chromium'], { stdio: 'inherit', env });
  }
}

/** Prometheus scrapes a few seconds after it is ready (its discovery updates every 5 s): wait for that. */
async function firstScrape(prometheus: PrometheusServer): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await prometheus.query('up == 1')).length === 0) {
    if (Date.now() > deadline) throw new Error('prometheus did not scrape its target within 30 s');
    await sleep(200);
  }
}

const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const seconds = () => Date.now() / 1000;

/** Clients that each send a 1 KiB message every `everyMs`. */
async function connectClients(url: string, n: number, everyMs: number, spacingMs = 50): Promise<() => void> {
  const stops: Array<() => number> = [];
  const clients: TestClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = await TestClient.connect(`${url}/user/${i}`);
    clients.push(c);
    stops.push(pump(c, `${'x'.repeat(1024)}-`, everyMs).stop);
    await sleep(spacingMs);
  }
  return () => {
    stops.forEach((s) => s());
    clients.forEach((c) => c.close());
  };
}

async function sidecarScenario(): Promise<Scenario> {
  const backends = await Promise.all(['a', 'b', 'c'].map((id) => BackendProcess.start(id)));
  const [a, , c] = backends as [BackendProcess, BackendProcess, BackendProcess];
  const { sidecar, url } = await startSidecar(
    `backends:\n${backends.map((x) => `  - { id: ${x.id}, url: "${x.url}" }`).join('\n')}\n` +
      'session: { pingInterval: 250ms, pongTimeout: 1s }\n' +
      'failover: { backoff: { initial: 50ms, max: 400ms } }\n' +
      'health: { phi: { minStdDev: 100ms } }\n',
    { BATON_ADMIN_TOKEN: TOKEN },
  );
  const adminUrl = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
  const admin = new AdminClient({ baseUrl: adminUrl, token: TOKEN });
  const prometheus = await PrometheusServer.start(`127.0.0.1:${sidecar.adminAddress!.port}`);
  await firstScrape(prometheus);
  const sessionsOn = (id: string) => sidecar.pool.backends.get(id)?.sessions ?? 0;
  const allServed = () => [...sidecar.sessions.values()].every((s) => s.backend !== null);

  const start = seconds();
  log('sidecar: 60 clients connect');
  const stayers = await connectClients(url, 40, 200);
  const leavers = await connectClients(url, 20, 200);
  await sleep(5000);
  log('sidecar: SIGKILL backend a');
  await a.signal('SIGKILL');
  await waitFor(() => sessionsOn('a') === 0 && allServed(), 'sessions off a', 20_000, 50);
  await sleep(5000);
  log('sidecar: backend a restarts');
  await a.start();
  await sleep(5000);
  log('sidecar: SIGSTOP backend c for 4 s');
  await c.signal('SIGSTOP');
  await sleep(4000);
  await c.signal('SIGCONT');
  await waitFor(allServed, 'every session served', 20_000, 50);
  await sleep(5000);
  log('sidecar: every backend dies for 3 s');
  await Promise.all(backends.map((x) => x.signal('SIGKILL')));
  await sleep(3000);
  await Promise.all(backends.map((x) => x.start()));
  await waitFor(allServed, 'every session served again', 30_000, 50);
  await sleep(5000);
  const busiest = backends.map((x) => x.id).sort((x, y) => sessionsOn(y) - sessionsOn(x))[0]!;
  log(`sidecar: drain backend ${busiest} (${sessionsOn(busiest)} sessions) at 10 sessions/s`);
  await admin.drainBackend(busiest, { rate: 10 });
  await waitFor(() => sessionsOn(busiest) === 0, `${busiest} drained`, 30_000, 50);
  await sleep(4000);
  log('sidecar: 20 clients leave');
  leavers();
  await sleep(5000);
  const end = seconds();
  stayers();
  return {
    prometheus,
    start,
    end,
    note: `a real sidecar: backend a SIGKILLed and restarted, c SIGSTOPped for 4 s, all backends down for 3 s, ${busiest} drained, 20 clients leave`,
    stop: async () => {
      await prometheus.stop();
      await sidecar.stop(0);
      await killAllBackends();
    },
  };
}

async function rolloutScenario(): Promise<Scenario> {
  const [namespace, name] = ['app', 'chat'];
  const checked = validateSpec({
    sidecarSelector: { matchLabels: { app: 'chat' } },
    backend: { service: 'chat', port: 8080 },
    rollout: { blueGreen: { autoPromotionDelaySeconds: 8, migrationRate: 3 } },
  });
  if (!checked.ok) throw new Error(checked.message);
  const spec = checked.spec;
  const metrics = new OperatorMetrics();
  metrics.leader.set(1);

  const endpoints: BackendEndpoint[] = [];
  const addRevision = async (revision: string) => {
    for (const i of [0, 1]) {
      const b = await BackendProcess.start(`chat-${revision}-${i}`);
      endpoints.push({ id: b.id, pod: b.id, url: b.url, revision, ready: true, serving: true, terminating: false });
    }
  };
  await addRevision('v1');

  // Two sidecar pods; the second one's process starts late, so it is first unreachable.
  const s1 = await startSidecar('', { BATON_ADMIN_TOKEN: TOKEN });
  const s2AdminPort = await freePort();
  const targets: SidecarTarget[] = [
    { name: 'chat-sidecar-0', adminUrl: `http://127.0.0.1:${s1.sidecar.adminAddress!.port}` },
    { name: 'chat-sidecar-1', adminUrl: `http://127.0.0.1:${s2AdminPort}` },
  ];

  // The operator's reconcile of one WsBalancer (operator/controller.ts), without the API server:
  // observe the sidecars, step the rollout, push the backend set, compute the status, record metrics.
  const io = { token: TOKEN, timeoutMs: 1000, concurrency: 4, attempts: 1 };
  let state: RolloutState = {};
  let status: WsBalancerStatus = {};
  let pushed = { hash: '', generation: 0 };
  const reconcile = async () => {
    const started = process.hrtime.bigint();
    const observed = await observeSidecars(targets, io);
    const views = observed.flatMap((o) => (o.view ? [o.view] : []));
    const sessions = sessionsByRevision(views);
    const synced = observed.every((o) => o.view && sidecarHolds(o.view, desiredBackends(spec, endpoints, state)));
    const step = stepRollout({ spec, annotations: {}, state, endpoints, sessionsByRevision: sessions, sidecarsSynced: synced, now: Date.now() });
    const backends = desiredBackends(spec, endpoints, step.state);
    const drain = { rate: spec.rollout.blueGreen.migrationRate, deadlineSeconds: spec.rollout.blueGreen.drainDeadlineSeconds };
    const hash = createHash('sha256').update(JSON.stringify(backends)).digest('hex');
    if (hash !== pushed.hash) pushed = { hash, generation: Math.max(pushed.generation, ...views.map((v) => v.generation)) + 1 };
    const stale = observed.filter((o) => o.view && !(o.view.generation === pushed.generation && sidecarHolds(o.view, backends)));
    const pushes = await pushSidecars(stale.map((o) => o.target), { generation: pushed.generation, backends, drain }, io);
    for (const p of pushes) metrics.pushes.inc({ result: p.ok ? 'success' : 'failure' });
    const unreachable = observed.filter((o) => !o.view).length + pushes.filter((p) => !p.ok).length;
    status = buildStatus({
      generation: 1,
      annotations: {},
      spec,
      previous: status,
      state: step.state,
      endpoints,
      sessionsByRevision: sessions,
      sidecars: { desired: targets.length, synced: targets.length - unreachable, unreachable },
      backendsGeneration: pushed.generation,
      now: Date.now(),
    });
    state = step.state;
    metrics.observeStatus(namespace, name, status);
    for (const e of step.events) {
      log(`rollout: ${e.reason}: ${e.note}`);
      metrics.rolloutEvents.inc({ namespace, wsbalancer: name, reason: e.reason });
    }
    metrics.reconciles.inc({ result: unreachable > 0 ? 'error' : 'success' });
    metrics.reconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
  };
  let running = true;
  const loop = (async () => {
    while (running) {
      await reconcile();
      await sleep(1000);
    }
  })();

  // Prometheus scrapes one target: the first sidecar's metrics and the operator's, side by side.
  const server = createServer((_req, res) => {
    void (async () => {
      const operatorFamilies = metrics.registry.getMetricsAsArray().filter((m) => m.name.startsWith('baton_operator_'));
      const parts = [await s1.sidecar.metrics.registry.metrics(), ...(await Promise.all(operatorFamilies.map((m) => metrics.registry.getSingleMetricAsString(m.name))))];
      res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(`${parts.join('\n')}\n`);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const prometheus = await PrometheusServer.start(`127.0.0.1:${(server.address() as { port: number }).port}`);
  await firstScrape(prometheus);

  const start = seconds();
  log('rollout: clients connect to the first sidecar');
  await waitFor(() => s1.sidecar.pool.backends.size === 2, 'first sidecar synced', 10_000, 50);
  const stops = [await connectClients(s1.url, 30, 500)];
  await sleep(3000);
  log('rollout: the second sidecar starts');
  const s2 = await startSidecar('', { BATON_ADMIN_TOKEN: TOKEN, BATON_ADMIN_ADDRESS: `127.0.0.1:${s2AdminPort}` });
  await waitFor(() => s2.sidecar.pool.backends.size === 2, 'second sidecar synced', 10_000, 50);
  stops.push(await connectClients(s2.url, 20, 500));
  await sleep(5000);
  log('rollout: revision v2 becomes ready');
  await addRevision('v2');
  await waitFor(() => status.activeRevision === 'v2', 'v2 promoted', 60_000, 100);
  await sleep(5000);
  log('rollout: the v1 pods go away');
  endpoints.splice(0, endpoints.length, ...endpoints.filter((e) => e.revision !== 'v1'));
  await waitFor(() => (status.revisions ?? []).every((r) => r.name !== 'v1'), 'v1 gone from the status', 10_000, 100);
  await sleep(6000);
  const end = seconds();
  stops.forEach((s) => s());
  return {
    prometheus,
    start,
    end,
    note: 'operator/plan.ts and OperatorMetrics reconciling two real sidecars (no Kubernetes): v2 rolled out over v1',
    stop: async () => {
      running = false;
      await loop;
      await prometheus.stop();
      server.close();
      await s1.sidecar.stop(0);
      await s2.sidecar.stop(0);
      await killAllBackends();
    },
  };
}

type RangeResult = Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;

async function queryRange(prometheus: PrometheusServer, expr: string, start: number, end: number): Promise<RangeResult> {
  const params = new URLSearchParams({ query: expr, start: String(start), end: String(end), step: String(STEP) });
  const body = (await fetch(`${prometheus.url}/api/v1/query_range?${params}`).then((r) => r.json())) as { status: string; error?: string; data: { result: RangeResult } };
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
  return body.data.result;
}

/** Grafana's legend template: {{label}} is the series' label value. */
const legend = (template: string, metric: Record<string, string>) => template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, l: string) => metric[l] ?? '');

async function renderDashboard(name: string, dashboard: Dashboard, scenario: Scenario): Promise<string> {
  // Let the last scrapes land before asking for the range.
  await sleep(1000);
  const empty: string[] = [];
  const panels = await Promise.all(
    panelViews(dashboard).map(async (p) => {
      const series = [];
      for (const q of p.queries) {
        for (const r of await queryRange(scenario.prometheus, concreteExpr(q.expr, RATE_WINDOW), scenario.start, scenario.end)) {
          series.push({ label: legend(q.legend, r.metric), points: r.values.map(([t, v]) => [t, Number(v)]) });
        }
      }
      if (p.type !== 'row' && series.length === 0) empty.push(p.title);
      return { ...p, series };
    }),
  );
  if (empty.length > 0) log(`${name}: no data in: ${empty.join('; ')}`);

  const data = { title: dashboard.title, note: scenario.note, start: scenario.start, end: scenario.end, step: STEP, panels };
  const chartJs = readFileSync(join(root, 'node_modules/chart.js/dist/chart.umd.min.js'), 'utf8');
  const html = readFileSync(join(root, 'tools/render-dashboards.html'), 'utf8')
    .replace('/*CHART_JS*/', () => chartJs)
    .replace('/*DATA*/', () => JSON.stringify(data).replace(/</g, '\\u003c'));
  const dir = mkdtempSync(join(tmpdir(), 'baton-render-'));
  const out = join(OUT_DIR, `${name}.png`);
  try {
    writeFileSync(join(dir, 'page.html'), html);
    const height = 44 + Math.max(...panels.map((p) => p.gridPos.y + p.gridPos.h)) * 36 + 8;
    execFileSync(
      'chromium',
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--hide-scrollbars',
        `--user-data-dir=${join(dir, 'profile')}`,
        `--screenshot=${out}`,
        `--window-size=1600,${height}`,
        `file://${join(dir, 'page.html')}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

const SCENARIOS: Record<string, () => Promise<Scenario>> = { sidecar: sidecarScenario, rollout: rolloutScenario };

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !(w in SCENARIOS));
  if (unknown.length > 0) throw new Error(`unknown dashboard ${unknown.join(', ')}: choose from ${Object.keys(SCENARIOS).join(', ')}`);
  ensurePrometheus();
  ensureChromium();
  mkdirSync(OUT_DIR, { recursive: true });
  for (const { name, dashboard } of DASHBOARDS) {
    if (wanted.length > 0 && !wanted.includes(name)) continue;
    const scenario = await SCENARIOS[name]!();
    try {
      log(`${name}: wrote ${await renderDashboard(name, dashboard, scenario)}`);
    } finally {
      await scenario.stop();
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
