// The bench's `kube` sections: the operator at scale on a real Kubernetes 1.20 control plane
// (test/kube/control-plane.ts), the operator a real `baton operator` process with the chart's RBAC
// (test/kube/operator-process.ts), and real sidecar and echo-backend processes as the pods the fake
// kubelet runs (test/kube/kubelet.ts, test/kube/workloads.ts) with the sidecar's default settings.
// Each part starts its own control plane, so it can run alone and one part's objects don't weigh
// on the next:
//   kube-cache    the operator's RSS and time to /readyz with thousands of pods in the cluster
//   kube-slices   an EndpointSlice change reaching every one of many sidecars
//   kube-cutover  a blue/green rollout of thousands of live sessions at the CRD's default rate
import { get } from 'node:https';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { WsBalancerSpecSchema } from '../operator/api/wsbalancer.js';
import type { BackendsResponse } from '../common/admin/contract.js';
import { BackendProcess, freePort } from '../test/helpers.js';
import { eventually } from '../test/kube/control-plane.js';
import type { FakeKubelet } from '../test/kube/kubelet.js';
import { OperatorProcess, runPods, startOperatorCluster, testOperatorArgs, type OperatorCluster } from '../test/kube/operator-process.js';
import { condition, createEdgeAndService, createEdgeBalancer, deployment, readBalancer, revisionGone, sessionsOn } from '../test/kube/rollout.js';
import { BACKEND_PORT, PodProcesses, ROLE_LABEL, type PodProcessesOptions, type SidecarProcess } from '../test/kube/workloads.js';
import { cpuShare, cpuSnapshot, startMigrationTraffic, type CpuShare, type MigrationTally, type MigrationTraffic } from './loadgen.js';
import { imageNodeOptions, readRssKiB } from './procs.js';
import { distributionOf, formatNumber, renderTable, type Distribution } from './stats.js';

// ---- plans and results ----------------------------------------------------------------------------

export const KUBE_PARTS = ['kube-cache', 'kube-slices', 'kube-cutover'] as const;
export type KubePart = (typeof KUBE_PARTS)[number];

export interface KubePlan {
  cache: {
    /** Pending pods in other namespaces, spread over `unrelatedNamespaces`. */
    unrelatedPods: number;
    unrelatedNamespaces: number;
    /** Pods in the WsBalancer's namespace: half sidecar pods, half backend pods. */
    relevantPods: number;
    /** Pod creations in flight at once. */
    createConcurrency: number;
  };
  slices: {
    sidecars: number;
    /** Sidecar pods started at a time (each is a Node process: startup is CPU-bound). */
    startBatch: number;
    changes: number;
    /** Each sidecar not yet holding the new set is asked (GET /v1/backends) this often. */
    pollEveryMs: number;
  };
  cutover: {
    /** Split evenly over two sidecar processes. */
    sessions: number;
    /** Each session sends one message this often. */
    sendEveryMs: number;
    /** The echo backends' --answer-delay (MIN-MAX ms). */
    answerDelay: string;
    /** Steady traffic on blue before green is deployed (the "before" latency window). */
    steadyMs: number;
  };
}

export const KUBE_FULL_PLAN: KubePlan = {
  cache: { unrelatedPods: 5000, unrelatedNamespaces: 10, relevantPods: 500, createConcurrency: 32 },
  slices: { sidecars: 50, startBatch: 5, changes: 20, pollEveryMs: 20 },
  cutover: { sessions: 10_000, sendEveryMs: 1000, answerDelay: '1-200', steadyMs: 10_000 },
};

export const KUBE_QUICK_PLAN: KubePlan = {
  cache: { ...KUBE_FULL_PLAN.cache, unrelatedPods: 500, relevantPods: 100 },
  slices: { ...KUBE_FULL_PLAN.slices, sidecars: 10, changes: 5 },
  cutover: { ...KUBE_FULL_PLAN.cutover, sessions: 1000, steadyMs: 3000 },
};

export interface CacheResult {
  unrelatedPods: number;
  relevantPods: number;
  /** Mean size of a pod as the API serves it (JSON), over a sample. */
  podBytes: number;
  /** Creating every pod. */
  setupMs: number;
  /** The same operator binary on the same control plane before any pod existed. */
  empty: { readyMs: number; rssKiB: number };
  loaded: { readyMs: number; rssReadyKiB: number; rssResyncedKiB: number };
  /** The operator's --resync. */
  resyncMs: number;
}

export interface SlicesResult {
  sidecars: number;
  /** Starting the sidecar pods (their processes up and Ready). */
  startupMs: number;
  /** Per change: the slice update → the last sidecar seen holding the new set, ms. */
  last: Distribution;
  /** Per change: → the first sidecar seen holding it, ms. */
  first: Distribution;
  /** Changes not held by every sidecar within SLICE_DEADLINE_MS (not in the percentiles). */
  timeouts: number;
}

export interface CutoverResult {
  sessions: number;
  /** The CRD's default spec.rollout.blueGreen.migrationRate, sessions/s per sidecar. */
  migrationRate: number;
  /** Opening every session. */
  connectMs: number;
  /** status.rollout.promotingSince → the Promoted condition's lastTransitionTime (null: not promoted in time). */
  promotionMs: number | null;
  /** Green deployed → both sidecars have dropped blue (every session moved off it). */
  movedMs: number | null;
  /** Sessions moved off blue per second per sidecar, from the promotion's start to its end (or the timeout). */
  achievedRate: number;
  /** baton_migrations_total by result, summed over both sidecars, at the end. */
  migrations: Record<string, number>;
  tally: MigrationTally;
  /** Round trip − the backend's own answer delay, ms. */
  before: Distribution;
  during: Distribution;
  /** From the green backends running to both sidecars on green only, % of one core. */
  cpu: CpuShare;
}

export interface KubeResults {
  cache?: CacheResult;
  slices?: SlicesResult;
  cutover?: CutoverResult;
}

/** The bars of issue 12. */
export const KUBE_BARS = { sliceP99Ms: 1000, lost: 0, closed: 0 };

// ---- shared set-up ----------------------------------------------------------------------------------

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** testOperatorArgs' --resync: short, so "after one full resync" comes soon. */
const RESYNC_MS = 5000;
const SLICE_DEADLINE_MS = 15_000;

type Log = (line: string) => void;

/** What each part tears down, last first; also run (synchronously, SIGKILL) if the bench exits early. */
class Teardown {
  private readonly steps: Array<() => Promise<void>> = [];
  private readonly kills: Array<() => void> = [];

  add(step: () => Promise<void>, kill?: () => void): void {
    this.steps.push(step);
    if (kill) this.kills.push(kill);
  }

  readonly onExit = (): void => {
    for (const kill of this.kills) kill();
  };

  async run(): Promise<void> {
    for (const step of this.steps.reverse()) await step().catch(() => {});
    process.off('exit', this.onExit);
  }
}

type Cluster = OperatorCluster;

async function startCluster(teardown: Teardown): Promise<Cluster> {
  const cluster = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN);
  teardown.add(() => cluster.cp.stop());
  return cluster;
}

function startOperator(cluster: Cluster, identity: string, metricsPort: number, teardown: Teardown): OperatorProcess {
  const op = new OperatorProcess(identity, cluster.operatorKubeconfig, metricsPort, testOperatorArgs(OPERATOR_NS));
  teardown.add(() => op.kill(), () => op.child.kill('SIGKILL'));
  return op;
}

/** Spawn → /readyz 200 (the operator's caches have listed), ms. */
async function timeToReady(op: OperatorProcess, startedAt: number, timeoutMs = 120_000): Promise<number> {
  for (;;) {
    if (!op.alive) throw new Error(`operator ${op.identity} exited (${op.child.exitCode ?? op.child.signalCode}) before it was ready`);
    const ok = await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`).then((r) => r.ok, () => false);
    if (ok) return performance.now() - startedAt;
    if (performance.now() - startedAt > timeoutMs) throw new Error(`operator ${op.identity} not ready after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Runs `work(i)` for i in [0, count), at most `concurrency` at a time. */
async function forEachBounded(count: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** Pods that the operator and its sidecars see, with the sidecar's default settings (not the tests' fast pings). */
function podProcesses(teardown: Teardown, opts: PodProcessesOptions<BackendProcess> = {}): PodProcesses {
  const pods = new PodProcesses<BackendProcess>(ADMIN_TOKEN, { sidecarConfig: [], ...opts });
  teardown.add(
    () => pods.stopAll(),
    () => {
      for (const s of pods.sidecars.values()) s.child?.kill('SIGKILL');
      for (const b of pods.backends.values()) b.child?.kill('SIGKILL');
    },
  );
  return pods;
}

async function startKubelet(cluster: Cluster, pods: PodProcesses, teardown: Teardown): Promise<FakeKubelet> {
  const kubelet = await runPods(cluster.admin, NS, pods);
  // Before the pods' processes: it must not restart them while they are being stopped.
  teardown.add(() => kubelet.stop());
  return kubelet;
}

export async function runKubeParts(parts: ReadonlySet<KubePart>, plan: KubePlan, log: Log): Promise<KubeResults> {
  const results: KubeResults = {};
  const run = async <T>(part: KubePart, body: (teardown: Teardown) => Promise<T>): Promise<T | undefined> => {
    if (!parts.has(part)) return undefined;
    const teardown = new Teardown();
    process.on('exit', teardown.onExit);
    // Every process this part spawns inherits the image's node flags.
    const saved = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = imageNodeOptions();
    try {
      return await body(teardown);
    } finally {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
      await teardown.run();
    }
  };
  results.cache = await run('kube-cache', (t) => runCache(plan.cache, log, t));
  results.slices = await run('kube-slices', (t) => runSlices(plan.slices, log, t));
  results.cutover = await run('kube-cutover', (t) => runCutover(plan.cutover, log, t));
  return results;
}

// ---- 1. the operator's cache: RSS and time to ready with many pods --------------------------------

/**
 * A pod as a real workload's: a few labels and annotations, two containers with env vars,
 * resources, probes and mounts. The API serves it with managedFields, defaults and the
 * ServiceAccount token volume added: about 6 KiB.
 */
function realisticPod(namespace: string, name: string, labels: Record<string, string>): V1Pod {
  const env = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => ({ name: `${prefix}_SETTING_${i}`, value: `${prefix.toLowerCase()}-value-${i}-0123456789abcdef` }));
  return {
    metadata: {
      name,
      namespace,
      labels: { ...labels, 'app.kubernetes.io/part-of': 'shop', 'app.kubernetes.io/version': '1.42.0', team: 'payments', tier: 'web' },
      annotations: {
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': '9090',
        'kubectl.kubernetes.io/restartedAt': '2026-01-01T00:00:00Z',
        'example.com/config-hash': 'c0ffee'.repeat(10),
        'example.com/owner': 'payments-team@example.com',
        'example.com/description': 'Serves the checkout flow; pages the payments on-call when unready for five minutes.',
      },
    },
    spec: {
      containers: [
        {
          name: 'app',
          image: 'registry.example.invalid/shop/checkout:1.42.0',
          ports: [
            { name: 'http', containerPort: 8080 },
            { name: 'metrics', containerPort: 9090 },
          ],
          env: env('APP', 8),
          resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } },
          readinessProbe: { httpGet: { path: '/ready', port: 8080 }, periodSeconds: 5 },
          livenessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 10 },
          volumeMounts: [{ name: 'config', mountPath: '/etc/checkout' }],
        },
        {
          name: 'log-shipper',
          image: 'registry.example.invalid/infra/log-shipper:3.1.4',
          env: env('SHIPPER', 3),
          resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '200m', memory: '128Mi' } },
          volumeMounts: [{ name: 'config', mountPath: '/etc/shipper', readOnly: true }],
        },
      ],
      volumes: [{ name: 'config', configMap: { name: 'checkout-config' } }],
    },
  };
}

/** Mean bytes per pod of a list of (up to 50) pods in `namespace`, as the API server sends it (JSON). */
async function servedPodBytes(cluster: Cluster, namespace: string): Promise<number> {
  const ca = Buffer.from(cluster.admin.getCurrentCluster()!.caData!, 'base64');
  const body = await new Promise<Buffer>((resolve, reject) => {
    const url = `${cluster.cp.server}/api/v1/namespaces/${namespace}/pods?limit=50`;
    get(url, { ca, headers: { authorization: `Bearer ${cluster.cp.adminToken}`, accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    }).on('error', reject);
  });
  const items = (JSON.parse(body.toString('utf8')) as { items: unknown[] }).items.length;
  return body.length / Math.max(1, items);
}

async function runCache(plan: KubePlan['cache'], log: Log, teardown: Teardown): Promise<CacheResult> {
  log(`kube-cache: starting a control plane`);
  const cluster = await startCluster(teardown);
  const { cp, core } = cluster;
  // The WsBalancer and its Service, as in a real namespace; its pods stay Pending (no node runs them).
  await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'ws', port: 80, targetPort: BACKEND_PORT }] } } });
  await createEdgeBalancer(cluster.custom, NS);

  // The same operator on the empty cluster first: the baseline.
  let spawnedAt = performance.now();
  const emptyOp = startOperator(cluster, 'bench-empty', await freePort(), teardown);
  const emptyReadyMs = await timeToReady(emptyOp, spawnedAt);
  const empty = { readyMs: emptyReadyMs, rssKiB: readRssKiB(emptyOp.child.pid!) };
  await emptyOp.kill();
  log(`kube-cache: empty cluster: operator ready in ${formatNumber(empty.readyMs)} ms, RSS ${formatNumber(empty.rssKiB / 1024)} MiB`);

  const namespaces = Array.from({ length: plan.unrelatedNamespaces }, (_, i) => `tenant-${i}`);
  const setupFrom = performance.now();
  await Promise.all(namespaces.map((ns) => cp.ensureNamespace(ns)));
  const relevantHalf = Math.floor(plan.relevantPods / 2);
  const podAt = (i: number): V1Pod => {
    if (i < relevantHalf) return realisticPod(NS, `edge-${i}`, { app: 'edge' });
    if (i < plan.relevantPods) return realisticPod(NS, `echo-${i}`, { app: 'echo', version: 'blue' });
    const n = i - plan.relevantPods;
    const ns = namespaces[n % namespaces.length]!;
    return realisticPod(ns, `web-${n}`, { app: `web-${n % 7}` });
  };
  const total = plan.relevantPods + plan.unrelatedPods;
  let created = 0;
  const progress = setInterval(() => log(`kube-cache: ${created} of ${total} pods created`), 10_000);
  try {
    await forEachBounded(total, plan.createConcurrency, async (i) => {
      const pod = podAt(i);
      await core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod });
      created++;
    });
  } finally {
    clearInterval(progress);
  }
  const setupMs = performance.now() - setupFrom;
  const podBytes = await servedPodBytes(cluster, namespaces[0]!);
  log(`kube-cache: ${total} pods created in ${formatNumber(setupMs / 1000)} s (${formatNumber((1000 * total) / setupMs)} pods/s, ${plan.createConcurrency} at a time), about ${formatNumber(podBytes / 1024)} KiB each as served`);

  const metricsPort = await freePort();
  spawnedAt = performance.now();
  const op = startOperator(cluster, 'bench-loaded', metricsPort, teardown);
  const readyMs = await timeToReady(op, spawnedAt);
  const rssReadyKiB = readRssKiB(op.child.pid!);
  log(`kube-cache: with ${total} pods: operator ready in ${formatNumber(readyMs)} ms, RSS ${formatNumber(rssReadyKiB / 1024)} MiB`);
  // One full resync: a reconcile that comes at least --resync after the first one (the first
  // needs the lease; its own status write may trigger another at once, which doesn't count).
  const reconciles = () => op.metric('baton_operator_reconciles_total{result="success"}');
  await eventually(async () => ((await reconciles()) >= 1 ? true : undefined), 'the first reconcile', 60_000, 100);
  const firstAt = performance.now();
  await sleep(RESYNC_MS); // the resync is a timer: nothing to poll before it is due
  const due = await reconciles();
  await eventually(async () => ((await reconciles()) > due ? true : undefined), 'a reconcile after one resync period', 2 * RESYNC_MS + 10_000, 100);
  const rssResyncedKiB = readRssKiB(op.child.pid!);
  log(`kube-cache: after one resync (${formatNumber((performance.now() - firstAt) / 1000)} s after the first reconcile): RSS ${formatNumber(rssResyncedKiB / 1024)} MiB`);
  return {
    unrelatedPods: plan.unrelatedPods,
    relevantPods: plan.relevantPods,
    podBytes,
    setupMs,
    empty,
    loaded: { readyMs, rssReadyKiB, rssResyncedKiB },
    resyncMs: RESYNC_MS,
  };
}

// ---- 2. an EndpointSlice change reaching many sidecars ------------------------------------------

/** An endpoint's backend id on the sidecars (an endpoint without a pod: ip-port). */
const endpointId = (ip: string) => `${ip}-${BACKEND_PORT}`;

/** Holds `ids`, each enabled; anything else it lists is draining (dropped once its sessions moved). */
function holdsEnabled(view: BackendsResponse, ids: ReadonlySet<string>): boolean {
  let found = 0;
  for (const b of view.backends) {
    if (ids.has(b.id)) {
      if (b.state !== 'enabled') return false;
      found++;
    } else if (b.state !== 'draining') return false;
  }
  return found === ids.size;
}

/**
 * The backend Service has no selector; the bench writes its EndpointSlice itself, so each change
 * has a known instant (the write) and no controller in between. Each change replaces the set with
 * 2-4 new endpoints (ids never seen before: every sidecar must add and drop backends).
 */
async function runSlices(plan: KubePlan['slices'], log: Log, teardown: Teardown): Promise<SlicesResult> {
  log(`kube-slices: starting a control plane`);
  const cluster = await startCluster(teardown);
  const { core, apps, custom } = cluster;
  const pods = podProcesses(teardown);
  await startKubelet(cluster, pods, teardown);

  const startFrom = performance.now();
  const edge = deployment(NS, 'edge', { app: 'edge', [ROLE_LABEL]: 'sidecar' }, Math.min(plan.startBatch, plan.sidecars));
  await apps.createNamespacedDeployment({ namespace: NS, body: edge });
  for (let n = Math.min(plan.startBatch, plan.sidecars); ; n = Math.min(n + plan.startBatch, plan.sidecars)) {
    await apps.patchNamespacedDeployment({ name: 'edge', namespace: NS, body: { spec: { replicas: n } } }, mergePatch);
    await eventually(async () => (pods.sidecars.size >= n ? true : undefined), `${n} sidecar processes`, 60_000, 100);
    if (n === plan.sidecars) break;
  }
  const sidecars = await pods.waitForSidecars(plan.sidecars);
  const startupMs = performance.now() - startFrom;
  log(`kube-slices: ${sidecars.length} sidecar processes up in ${formatNumber(startupMs / 1000)} s`);

  await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'echo' }, spec: { ports: [{ name: 'ws', port: 80, targetPort: BACKEND_PORT }] } } });
  const slice = { group: 'discovery.k8s.io', version: 'v1beta1', namespace: NS, plural: 'endpointslices' };
  const endpointsOf = (change: number) => Array.from({ length: 2 + (change % 3) }, (_, j) => `127.250.${change}.${j + 1}`);
  const sliceEndpoints = (ips: string[]) => ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } }));
  await custom.createNamespacedCustomObject({
    ...slice,
    body: {
      apiVersion: 'discovery.k8s.io/v1beta1',
      kind: 'EndpointSlice',
      metadata: { name: 'echo-bench', labels: { 'kubernetes.io/service-name': 'echo', 'endpointslice.kubernetes.io/managed-by': 'baton-bench' } },
      addressType: 'IPv4',
      ports: [{ name: 'ws', port: BACKEND_PORT, protocol: 'TCP' }],
      endpoints: sliceEndpoints(endpointsOf(0)),
    },
  });
  await createEdgeBalancer(cluster.custom, NS);
  startOperator(cluster, 'bench-operator', await freePort(), teardown);

  /** Until every sidecar holds `ids`: ms from `from` to the first and the last seen holding them. */
  const converge = async (ids: ReadonlySet<string>, from: number): Promise<{ first: number; last: number } | null> => {
    const pending = new Set<SidecarProcess>(sidecars);
    let first = Infinity;
    let last = 0;
    while (pending.size > 0) {
      if (performance.now() - from > SLICE_DEADLINE_MS) return null;
      const round = performance.now();
      await Promise.all(
        [...pending].map(async (s) => {
          const view = await s.admin<BackendsResponse>('/backends').catch(() => undefined);
          if (!view || !holdsEnabled(view, ids)) return;
          const at = performance.now() - from;
          first = Math.min(first, at);
          last = Math.max(last, at);
          pending.delete(s);
        }),
      );
      const rest = plan.pollEveryMs - (performance.now() - round);
      if (rest > 0) await sleep(rest);
    }
    return { first, last };
  };

  const initial = await converge(new Set(endpointsOf(0).map(endpointId)), performance.now());
  if (!initial) throw new Error('kube-slices: the sidecars never held the first backend set');
  const firsts = new Float64Array(plan.changes);
  const lasts = new Float64Array(plan.changes);
  let measured = 0;
  let timeouts = 0;
  for (let change = 1; change <= plan.changes; change++) {
    const ips = endpointsOf(change);
    const from = performance.now();
    await custom.patchNamespacedCustomObject({ ...slice, name: 'echo-bench', body: { endpoints: sliceEndpoints(ips) } }, mergePatch);
    const seen = await converge(new Set(ips.map(endpointId)), from);
    if (seen) {
      firsts[measured] = seen.first;
      lasts[measured++] = seen.last;
    } else timeouts++;
    log(`kube-slices: change ${change}/${plan.changes} (${ips.length} endpoints): ${seen ? `first sidecar ${formatNumber(seen.first)} ms, last ${formatNumber(seen.last)} ms` : `not held by every sidecar within ${SLICE_DEADLINE_MS} ms`}`);
    await sleep(200); // let the drained backends go before the next change
  }
  return { sidecars: sidecars.length, startupMs, first: distributionOf(firsts, measured), last: distributionOf(lasts, measured), timeouts };
}

// ---- 3. a blue/green cutover of many live sessions ------------------------------------------------

/** At the end: how long the clients wait for answers still due before counting the rest as lost. */
const STOP_WAIT_MS = 15_000;

/** The backends answer "<tag>|<seq>|<held ms>": one character per backend pod. */
const BACKEND_TAGS = 'abcdefghijklmnopqrstuvwxyz';

/**
 * Two sidecar pods, each with half of the sessions; blue backends answering late; then a green
 * Deployment. The operator promotes it after a 1 s delay (the default 30 s only makes the bench
 * longer) and moves the sessions at the CRD's default migrationRate. The clients send their
 * sequence number periodically and check every answer (loadgen's migration traffic).
 */
async function runCutover(plan: KubePlan['cutover'], log: Log, teardown: Teardown): Promise<CutoverResult> {
  log(`kube-cutover: starting a control plane`);
  const cluster = await startCluster(teardown);
  const { core, apps, custom } = cluster;
  const tags = new Map<string, string>();
  const pods = podProcesses(teardown, {
    backend: (name, ip, port) => {
      const tag = BACKEND_TAGS[tags.size % BACKEND_TAGS.length]!;
      tags.set(tag, name);
      return new BackendProcess(tag, port, ['--answer-delay', plan.answerDelay, '--stamp-delay'], ip);
    },
  });
  await startKubelet(cluster, pods, teardown);
  const backendLabels = (version: string) => ({ app: 'echo', version, [ROLE_LABEL]: 'backend' });
  await createEdgeAndService(apps, core, NS, { sidecars: 2 });
  await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-blue', backendLabels('blue'), 2, BACKEND_PORT) });
  const sidecars = await pods.waitForSidecars(2);
  await createEdgeBalancer(cluster.custom, NS, { blueGreen: { autoPromotionDelaySeconds: 1 } });
  const operator = startOperator(cluster, 'bench-operator', await freePort(), teardown);
  const enabledRevisions = async () => {
    const views = await Promise.all(sidecars.map((s) => s.admin<BackendsResponse>('/backends')));
    return views.map((v) => v.backends.filter((b) => b.state === 'enabled').map((b) => b.labels.revision).join());
  };
  await eventually(async () => ((await enabledRevisions()).every((r) => r === 'blue,blue') ? true : undefined), 'both sidecars hold the two blue backends', 60_000, 100);

  const migrationRate = WsBalancerSpecSchema.parse({
    sidecarSelector: { matchLabels: { app: 'edge' } },
    backend: { service: 'echo', port: 'ws' },
  }).rollout.blueGreen.migrationRate;
  const perSidecar = Math.ceil(plan.sessions / sidecars.length);
  // Long enough for the whole run at the default rate, three times over.
  const maxDurationMs = plan.steadyMs + 3 * ((1000 * perSidecar) / migrationRate) + 120_000;
  const connectFrom = performance.now();
  const traffic: MigrationTraffic[] = await Promise.all(sidecars.map((s) => startMigrationTraffic(s.url, { sessions: perSidecar, sendEveryMs: plan.sendEveryMs, maxDurationMs })));
  const connectMs = performance.now() - connectFrom;
  log(`kube-cutover: ${perSidecar * sidecars.length} sessions open through ${sidecars.length} sidecars in ${formatNumber(connectMs / 1000)} s`);
  const tallies: MigrationTally[] = [];
  let promotionMs: number | null = null;
  let movedMs: number | null = null;
  let steadyFrom = 0;
  let greenAt = 0;
  let promotingFrom = 0;
  let promotedAt = 0;
  let onBlueAtStart = 0;
  let achievedRate = 0;
  let migrations: Record<string, number> = {};
  let cpu: CpuShare = {};
  try {
    await sleep(plan.sendEveryMs + 1000); // every session has sent and been answered at least once
    steadyFrom = performance.now();
    await sleep(plan.steadyMs);
    greenAt = performance.now();
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-green', backendLabels('green'), 2, BACKEND_PORT) });
    await eventually(async () => (pods.backends.size >= 4 ? true : undefined), 'the green backends running', 60_000, 50);
    // cpuShare() wants one role per process: "role#n", summed per role below.
    const watched = [
      ...sidecars.map((s) => s.child!.pid!).map((pid, i) => ({ role: `sidecars#${i}`, pid })),
      ...[...pods.backends.values()].map((b, i) => ({ role: `backends#${i}`, pid: b.pid })),
      { role: 'operator', pid: operator.child.pid! },
      ...cluster.cp.pids().map((pid, i) => ({ role: `control plane#${i}`, pid })),
    ];
    const cpuFrom = cpuSnapshot(watched);
    // Expected: perSidecar / rate seconds; a timeout well past that is reported as such.
    const timeoutMs = 3 * ((1000 * perSidecar) / migrationRate) + 60_000;
    let promotingSince: string | undefined;
    let promotedTime: string | undefined;
    while (performance.now() - greenAt < timeoutMs) {
      const wsb = await readBalancer(custom, NS, 'edge');
      if (wsb.status?.rollout?.promotingSince && !promotingSince) {
        promotingSince = wsb.status.rollout.promotingSince;
        promotingFrom = performance.now();
        onBlueAtStart = await sessionsOn(sidecars, 'blue');
        log(`kube-cutover: promotion started`);
      }
      const promoted = condition(wsb, 'Promoted');
      if (wsb.status?.activeRevision === 'green' && promoted?.status === 'True') {
        promotedTime = promoted.lastTransitionTime;
        promotedAt = performance.now();
        break;
      }
      await sleep(200);
    }
    if (promotingSince && promotedTime) promotionMs = Date.parse(promotedTime) - Date.parse(promotingSince);
    if (promotingFrom) achievedRate = (onBlueAtStart - (await sessionsOn(sidecars, 'blue'))) / ((performance.now() - promotingFrom) / 1000) / sidecars.length;
    log(`kube-cutover: ${promotionMs === null ? `not promoted within ${formatNumber(timeoutMs / 1000)} s` : `promoted ${formatNumber(promotionMs / 1000)} s after the promotion started`}`);
    await revisionGone(() => sidecars, 'blue', 30_000).then(
      () => (movedMs = performance.now() - greenAt),
      () => undefined,
    );
    for (const [role, pct] of Object.entries(cpuShare(watched, cpuFrom, cpuSnapshot(watched)))) {
      const summed = role.split('#')[0]!;
      cpu[summed] = (cpu[summed] ?? 0) + pct;
    }
    await sleep(2000); // traffic on green for a while after the cutover
  } finally {
    migrations = await migrationCounts(sidecars).catch(() => ({}));
    // Answers are due within the backend's delay; a session still migrating holds its messages longer.
    for (const t of traffic) tallies.push(await t.stop(STOP_WAIT_MS));
  }
  const window = (from: number, until: number) => {
    const all = traffic.flatMap((t) => [...t.extraLatency(Array.from({ length: perSidecar }, (_, i) => i), from, until)]);
    return distributionOf(Float64Array.from(all), all.length);
  };
  const tally = tallies.reduce((a, b) => ({
    sent: a.sent + b.sent,
    lost: a.lost + b.lost,
    duplicates: a.duplicates + b.duplicates,
    outOfOrder: a.outOfOrder + b.outOfOrder,
    closed: a.closed + b.closed,
  }));
  const result: CutoverResult = {
    sessions: perSidecar * sidecars.length,
    migrationRate,
    connectMs,
    promotionMs,
    movedMs,
    achievedRate,
    migrations,
    tally,
    before: window(steadyFrom, greenAt),
    during: window(promotingFrom || greenAt, promotedAt || performance.now()),
    cpu,
  };
  log(`kube-cutover: ${tally.lost} lost, ${tally.duplicates} duplicates, ${tally.outOfOrder} out of order, ${tally.closed} closed of ${tally.sent} messages`);
  return result;
}

/** baton_migrations_total by result, summed over the sidecars (from their admin /metrics). */
async function migrationCounts(sidecars: readonly SidecarProcess[]): Promise<Record<string, number>> {
  const byResult: Record<string, number> = {};
  for (const s of sidecars) {
    const text = await fetch(`${s.adminUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => r.text());
    for (const line of text.split('\n')) {
      const m = /^baton_migrations_total\{(?:.*,)?result="([^"]+)"(?:,.*)?\} (\S+)$/.exec(line);
      if (m) byResult[m[1]!] = (byResult[m[1]!] ?? 0) + Number(m[2]);
    }
  }
  return byResult;
}

// ---- report -----------------------------------------------------------------------------------------

const mib = (kib: number) => formatNumber(kib / 1024);

export function kubeReport(r: KubeResults, plan: KubePlan): string[] {
  const out: string[] = [];
  const c = r.cache;
  if (c) {
    out.push('');
    out.push(
      `Operator cache (a real \`baton operator\` with the chart's RBAC on kube-apiserver 1.20; ${count(c.unrelatedPods)} Pending pods in ${plan.cache.unrelatedNamespaces} other namespaces ` +
        `and ${count(c.relevantPods)} in the WsBalancer's, about ${formatNumber(c.podBytes / 1024)} KiB each as served; created in ${formatNumber(c.setupMs / 1000)} s, ${plan.cache.createConcurrency} at a time):`,
    );
    out.push(
      renderTable(
        ['cluster', 'time to /readyz, ms', 'RSS ready, MiB', `RSS after one resync (${c.resyncMs / 1000} s), MiB`],
        [
          ['no pods', formatNumber(c.empty.readyMs), mib(c.empty.rssKiB), '—'],
          [`${count(c.unrelatedPods + c.relevantPods)} pods`, formatNumber(c.loaded.readyMs), mib(c.loaded.rssReadyKiB), mib(c.loaded.rssResyncedKiB)],
        ],
      ),
    );
  }
  const s = r.slices;
  if (s) {
    out.push('');
    out.push(
      `EndpointSlice → sidecars (${s.sidecars} sidecar processes, started in ${formatNumber(s.startupMs / 1000)} s; the bench rewrites the slice of a selector-less Service ` +
        `${s.first.count + s.timeouts} times and polls each sidecar's GET /v1/backends every ${plan.slices.pollEveryMs} ms until it holds the new set):`,
    );
    const row = (label: string, d: Distribution) => [label, formatNumber(d.p50), formatNumber(d.p99), formatNumber(d.max), String(d.count)];
    out.push(renderTable(['slice update →', 'p50 ms', 'p99 ms', 'max ms', 'changes'], [row('first sidecar holds it', s.first), row('last sidecar holds it', s.last)]));
    if (s.timeouts > 0) out.push(`(${s.timeouts} change(s) not held by every sidecar within ${SLICE_DEADLINE_MS / 1000} s: not in the percentiles.)`);
  }
  const u = r.cutover;
  if (u) {
    const cp = plan.cutover;
    out.push('');
    out.push(
      `Blue/green cutover (${count(u.sessions)} sessions over 2 sidecar processes, each sending its sequence number every ${cp.sendEveryMs} ms; ` +
        `2 blue → 2 green echo backends answering after ${cp.answerDelay} ms; migrationRate ${u.migrationRate}/s per sidecar, the CRD's default; sessions opened in ${formatNumber(u.connectMs / 1000)} s):`,
    );
    out.push(
      renderTable(
        ['figure', 'value'],
        [
          ['promotion start → Promoted, s', u.promotionMs === null ? 'not promoted' : formatNumber(u.promotionMs / 1000)],
          ['green deployed → both sidecars on green only, s', u.movedMs === null ? 'not within the timeout' : formatNumber(u.movedMs / 1000)],
          [`sessions moved per second per sidecar (configured ${u.migrationRate})`, formatNumber(u.achievedRate)],
          ['migrations by result (baton_migrations_total)', Object.entries(u.migrations).map(([k, n]) => `${count(n)} ${k}`).join(', ') || '—'],
          ['messages sent', count(u.tally.sent)],
          ['lost', count(u.tally.lost)],
          ['duplicated', count(u.tally.duplicates)],
          ['out of order', count(u.tally.outOfOrder)],
          ['clients closed', count(u.tally.closed)],
        ],
      ),
    );
    const row = (label: string, d: Distribution) => [label, formatNumber(d.p50), formatNumber(d.p99), formatNumber(d.max), count(d.count)];
    out.push(renderTable(['round trip − backend delay, ms', 'p50', 'p99', 'max', 'messages'], [row(`before (${cp.steadyMs / 1000} s on blue)`, u.before), row('during the promotion', u.during)]));
    out.push(`CPU from green running to every session on green, % of one core: ${Object.entries(u.cpu).map(([k, v]) => `${k} ${v.toFixed(0)}%`).join(', ')}`);
  }
  return out;
}

/** The kube bars: [passed (undefined: not measured), text]. */
export function kubeBars(r: KubeResults): Array<[boolean | undefined, string]> {
  const lines: Array<[boolean | undefined, string]> = [];
  const s = r.slices;
  const sliceBar = `EndpointSlice change held by every sidecar, p99 ≤ ${KUBE_BARS.sliceP99Ms} ms`;
  if (!s) lines.push([undefined, `${sliceBar}: not measured`]);
  else {
    const extra = s.timeouts > 0 ? `, ${s.timeouts} change(s) never held by all` : '';
    lines.push([s.timeouts === 0 && s.last.p99 <= KUBE_BARS.sliceP99Ms, `${sliceBar}: ${formatNumber(s.last.p99)} ms over ${s.last.count} changes to ${s.sidecars} sidecars${extra}`]);
  }
  const u = r.cutover;
  if (!u) lines.push([undefined, 'blue/green cutover: no message lost, no client closed: not measured']);
  else {
    const promoted = u.promotionMs !== null;
    lines.push([promoted && u.tally.lost === KUBE_BARS.lost, `blue/green cutover of ${count(u.sessions)} sessions: ${count(u.tally.lost)} messages lost${promoted ? '' : ' (not promoted)'}`]);
    lines.push([promoted && u.tally.closed === KUBE_BARS.closed, `blue/green cutover of ${count(u.sessions)} sessions: ${count(u.tally.closed)} clients closed${promoted ? '' : ' (not promoted)'}`]);
  }
  return lines;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}
