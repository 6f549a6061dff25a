// The operator at a cold start, on a real control plane (1.20, RBAC on): a leader whose caches have
// not listed everything must not act on what it has not seen. A list is held back with RBAC (the
// new operator's ServiceAccount lacks list/watch on a resource until the test grants it), as when an
// operator restarts while the API server is slow to answer one list: the sidecars keep their
// backends and the WsBalancer's status keeps its rollout memory until the cache has synced. Then
// the leader is killed ten times at random moments of a promotion with live sessions, while the
// lists of pods and EndpointSlices are answered late (as in a large cluster) and some kills are
// cold (every replica gone, a fresh process takes over the expired lease with empty caches); every
// sidecar and the status are watched throughout for what must never happen.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import type { WsBalancer, WsBalancerStatus } from '../operator/api/wsbalancer.js';
import type { BackendsResponse, StatusResponse } from '../common/admin/contract.js';
import { freePort, TestClient, waitFor } from './helpers.js';
import { mulberry32 } from './prng.js';
import { eventually, type ControlPlane } from './kube/control-plane.js';
import type { FakeKubelet } from './kube/kubelet.js';
import { OperatorProcess, operatorAccount, runPods, startOperatorCluster, testOperatorArgs, type RbacResource } from './kube/operator-process.js';
import { condition, createEdgeAndService, createEdgeBalancer, deployment, readBalancer, revisionGone, sessionsOn, waitForPromoted } from './kube/rollout.js';
import { deploymentOf, settle, TrackedSession } from './kube/sessions.js';
import { BACKEND_PORT, PodProcesses, ROLE_LABEL, type SidecarProcess } from './kube/workloads.js';

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'test-admin-token-0123456789';
const LEASE = 'baton-operator';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** Every backend pod answers each message after a random delay in this range (ms), in order per connection. */
const ANSWER_DELAY = '1-200';
/** How long a leader that cannot list a resource is watched doing nothing. */
const BLIND_MS = 8000;
/** The informers retry a failing list with backoff up to 30 s: once granted, the operator catches up within this. */
const CATCH_UP_MS = 45_000;
const SESSIONS_PER_SIDECAR = 20;
/** Leader kills in the restarts test (BATON_TEST_RESTARTS for a longer soak). */
const RESTARTS = Number(process.env.BATON_TEST_RESTARTS ?? 6);
/** In the restarts test, each list of pods or EndpointSlices is answered after up to this long. */
const SLOW_LIST_MS = 3000;

const backendLabels = (version: string) => ({ app: 'echo', version, [ROLE_LABEL]: 'backend' });
/** "echo-green-5d8f7c9b4-x2x7q" → "green". */
const revisionOf = (pod: string): string => deploymentOf(pod).replace(/^echo-/, '');

/** What a client and the operator see of a sidecar: its last PUT, its backends and whether it takes clients. */
interface SidecarView {
  backendsGeneration: number;
  /** "id:state", sorted. */
  backends: string[];
  readyz: number;
}

async function viewOf(s: SidecarProcess): Promise<SidecarView> {
  const [status, held, readyz] = await Promise.all([
    s.admin<StatusResponse>('/status'),
    s.admin<BackendsResponse>('/backends'),
    fetch(`${s.adminUrl}/readyz`).then((r) => r.status),
  ]);
  return { backendsGeneration: status.backendsGeneration, backends: held.backends.map((b) => `${b.id}:${b.state}`).sort(), readyz };
}

/** The rollout memory of a status: what a reconcile lacking data must never drop. */
const rolloutMemory = (s: WsBalancerStatus | undefined) => ({
  activeRevision: s?.activeRevision,
  previewRevision: s?.previewRevision,
  previousRevision: s?.previousRevision,
  retiredRevisions: s?.retiredRevisions,
  abortedRevision: s?.abortedRevision,
});

/** Runs `check` every `everyMs` for `forMs`; its first failure fails the test, saying when it came. */
async function throughout(forMs: number, what: string, check: () => Promise<void>, everyMs = 100): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < forMs) {
    try {
      await check();
    } catch (err) {
      assert.fail(`${Date.now() - start} ms into "${what}": ${(err as Error).message}`);
    }
    await sleep(everyMs);
  }
}

/**
 * A plain-HTTP front for the API server of `kubeconfigFile` that tampers with the lists of pods and
 * EndpointSlices (not the watches): `delayMs` holds each back (as a busy API server of a large
 * cluster answers the lists a starting operator makes); `emptySliceCache` answers the operator's
 * cache list of EndpointSlices (every service's, by label existence) with no items, as a cache
 * gone wrong, while a list for one named service still gets the truth. Returns a kubeconfig with
 * the same user pointing at it.
 */
async function listsProxy(kubeconfigFile: string, o: { delayMs?: () => number; emptySliceCache?: boolean }): Promise<{ kubeconfig: string; close(): void }> {
  const config = parse(readFileSync(kubeconfigFile, 'utf8')) as { clusters: Array<{ cluster: Record<string, string | boolean> }> };
  const cluster = config.clusters[0]!.cluster;
  const target = new URL(String(cluster.server));
  const ca = Buffer.from(String(cluster['certificate-authority-data']), 'base64');
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const isList = req.method === 'GET' && url.searchParams.get('watch') !== 'true' && /\/(pods|endpointslices)$/.test(url.pathname);
    const emptied = isList && o.emptySliceCache && url.pathname.endsWith('/endpointslices') && url.searchParams.get('labelSelector') === 'kubernetes.io/service-name';
    const forward = (): void => {
      // identity: a body to rewrite must come uncompressed.
      const headers = { ...req.headers, host: target.host, ...(emptied ? { 'accept-encoding': 'identity' } : {}) };
      const upstream = httpsRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers, ca }, (answer) => {
        if (!emptied || answer.statusCode !== 200) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        answer.on('data', (c: Buffer) => chunks.push(c));
        answer.on('end', () => {
          const list = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { items: unknown[] };
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ...list, items: [] }));
        });
      });
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    };
    if (isList && o.delayMs) setTimeout(forward, o.delayMs());
    else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  // client-node takes a plain-HTTP server only with this set (there is no TLS to verify).
  const proxied = { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true };
  config.clusters[0]!.cluster = proxied;
  const kubeconfig = kubeconfigFile.replace(/\.yaml$/, '') + `-lists-proxy-${port}.yaml`;
  writeFileSync(kubeconfig, stringify(config));
  return {
    kubeconfig,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/**
 * Watches for what must never happen while operators come and go, polling every sidecar every 50 ms
 * and the status every 100 ms: a sidecar left without an enabled backend, a backendsGeneration
 * going backwards, a backend of the `protect`ed revision drained or removed once enabled; an active
 * revision coming back after it was replaced, a retired revision leaving retiredRevisions while it
 * still has pods, or coming back as the preview.
 */
class SafetyMonitor {
  /** Each distinct violation: when it was first seen (s since the start) and how many polls saw it. */
  private readonly found = new Map<string, { firstAt: string; polls: number }>();
  private stopped = false;
  private readonly loops: Promise<void>[];
  private readonly started = Date.now();
  private readonly generations = new Map<string, number>();
  /** "sidecar/backend" of the protected revision, once enabled there. */
  private readonly enabled = new Set<string>();
  private readonly actives: string[] = [];
  private readonly retired = new Set<string>();
  polls = { sidecars: 0, status: 0 };

  constructor(
    private readonly sidecars: () => readonly SidecarProcess[],
    private readonly status: () => Promise<WsBalancerStatus | undefined>,
    /** Revisions that have running pods now. */
    private readonly withPods: () => Set<string>,
    private readonly protect: string,
  ) {
    this.loops = [this.every(50, () => this.pollSidecars()), this.every(100, () => this.pollStatus())];
  }

  /** Stops watching; returns what it saw go wrong ('' when nothing). */
  async stop(): Promise<string> {
    this.stopped = true;
    await Promise.all(this.loops);
    const all = [...this.found].map(([what, { firstAt, polls }]) => `at ${firstAt} s ${what} (seen by ${polls} polls)`);
    return all.length === 0 ? '' : `${all.length} distinct violations: ${all.slice(0, 8).join('; ')}${all.length > 8 ? '; …' : ''}`;
  }

  private violation(what: string): void {
    const seen = this.found.get(what);
    if (seen) seen.polls++;
    else this.found.set(what, { firstAt: ((Date.now() - this.started) / 1000).toFixed(2), polls: 1 });
  }

  private async every(ms: number, poll: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      // A poll that fails (a sidecar slow to answer under load) says nothing about the operator.
      await poll().catch(() => undefined);
      await sleep(ms);
    }
  }

  private async pollSidecars(): Promise<void> {
    await Promise.all(
      this.sidecars().map(async (s) => {
        const held = await s.admin<BackendsResponse>('/backends');
        this.polls.sidecars++;
        const last = this.generations.get(s.name) ?? 0;
        if (held.generation < last) this.violation(`${s.name}: backend generation ${last} → ${held.generation}`);
        this.generations.set(s.name, Math.max(last, held.generation));
        if (!held.backends.some((b) => b.state === 'enabled')) {
          this.violation(`${s.name} has no enabled backend (generation ${held.generation}: ${held.backends.map((b) => `${b.id}:${b.state}`).join(', ') || 'empty'})`);
        }
        for (const key of this.enabled) {
          const [sidecar, id] = key.split('/') as [string, string];
          if (sidecar !== s.name) continue;
          const b = held.backends.find((x) => x.id === id);
          if (b?.state !== 'enabled') this.violation(`${s.name}: ${id} of revision ${this.protect} ${b ? b.state : 'removed'} (generation ${held.generation})`);
        }
        for (const b of held.backends) if (b.labels.revision === this.protect && b.state === 'enabled') this.enabled.add(`${s.name}/${b.id}`);
      }),
    );
  }

  private async pollStatus(): Promise<void> {
    const status = await this.status();
    this.polls.status++;
    const active = status?.activeRevision;
    if (active !== undefined && active !== this.actives.at(-1)) {
      if (this.actives.includes(active)) this.violation(`revision ${active} is active again (after ${this.actives.join(' → ')})`);
      this.actives.push(active);
    }
    if (status?.previewRevision !== undefined && this.retired.has(status.previewRevision)) this.violation(`retired revision ${status.previewRevision} is the preview again`);
    const now = new Set(status?.retiredRevisions ?? []);
    const running = this.withPods();
    for (const rev of this.retired) if (!now.has(rev) && running.has(rev)) this.violation(`retiredRevisions lost ${rev}, whose pods still run (now: ${JSON.stringify(status?.retiredRevisions)})`);
    for (const rev of now) this.retired.add(rev);
    for (const rev of this.retired) if (!running.has(rev)) this.retired.delete(rev);
  }
}

describe('operator at a cold start: nothing acts on a cache that has not synced', { timeout: 600_000 }, () => {
  let cp: ControlPlane;
  let admin: KubeConfig;
  let apps: AppsV1Api;
  let custom: CustomObjectsApi;
  let coordination: CoordinationV1Api;
  let kubelet: FakeKubelet;
  let pods: PodProcesses;
  /** The chart's rules, all of them. */
  let kubeconfig: string;
  const operators: OperatorProcess[] = [];
  /** Every session opened, for cleanup; each test with traffic opens its own. */
  const allSessions: TrackedSession[] = [];

  const startOperator = async (identity: string, config = kubeconfig): Promise<OperatorProcess> => {
    const op = new OperatorProcess(identity, config, await freePort(), testOperatorArgs(OPERATOR_NS));
    operators.push(op);
    return op;
  };
  const killOperators = async (): Promise<void> => {
    for (const op of operators) await op.kill();
  };
  /** An operator's ServiceAccount without the chart's rules on `withhold`; `grant` (once) gives them, and is also run when the test ends. */
  const blindAccount = async (t: TestContext, name: string, withhold: RbacResource[]): Promise<{ kubeconfig: string; grant: () => Promise<void> }> => {
    const account = await operatorAccount(cp, OPERATOR_NS, name, { withhold });
    let granted: Promise<void> | undefined;
    const grant = () => (granted ??= account.grantWithheld());
    // Also when the test failed: the next tests need an operator that sees everything.
    t.after(grant);
    return { kubeconfig: account.kubeconfig, grant };
  };
  const becameLeader = (op: OperatorProcess) => waitFor(() => op.logged('became the leader'), `${op.identity} leads`, 20_000, 20);

  const getBalancer = (): Promise<WsBalancer> => readBalancer(custom, NS, 'edge');
  const patchBalancer = (body: object) =>
    custom.patchNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'edge', body }, mergePatch);
  const scale = (name: string, replicas: number) => apps.patchNamespacedDeployment({ name, namespace: NS, body: { spec: { replicas } } }, mergePatch);

  const sidecars = (): SidecarProcess[] => [...pods.sidecars.values()].sort((a, b) => a.name.localeCompare(b.name));
  const views = async (): Promise<Record<string, SidecarView>> => Object.fromEntries(await Promise.all(sidecars().map(async (s) => [s.name, await viewOf(s)])));
  /** The backend pods of a revision whose processes run (the fake kubelet reports them Ready once started). */
  const runningPods = (revision: string): string[] => [...pods.backends.keys()].filter((p) => revisionOf(p) === revision).sort();
  const revisionsWithPods = (): Set<string> => new Set([...pods.backends.keys()].map(revisionOf));
  /** Until every sidecar holds exactly `ids` enabled. */
  const sidecarsHold = (ids: string[], timeoutMs: number) =>
    eventually(async () => {
      const all = await views();
      return Object.values(all).every((v) => v.backends.filter((b) => b.endsWith(':enabled')).join() === ids.map((id) => `${id}:enabled`).join()) ? all : undefined;
    }, `every sidecar holds ${ids.join(', ')} enabled`, timeoutMs, 100);
  /** SESSIONS_PER_SIDECAR sessions through each sidecar, sending every 200 ms, each answered once. */
  const openSessions = async (prefix: string): Promise<TrackedSession[]> => {
    const opened: TrackedSession[] = [];
    for (const s of sidecars()) {
      for (let i = 0; i < SESSIONS_PER_SIDECAR; i++) opened.push(new TrackedSession(`${prefix}${opened.length}`, await TestClient.connect(`${s.url}/chat`), s.name));
    }
    allSessions.push(...opened);
    for (const t of opened) t.send(200);
    await waitFor(() => opened.every((t) => t.client.received.length > 0), 'every session answered once', 10_000);
    return opened;
  };
  const closeSessions = (sessions: readonly TrackedSession[]): void => {
    for (const t of sessions) {
      t.pause();
      t.client.close();
    }
  };
  /** Until a revision is active with nothing in motion and every sidecar holds exactly its running pods; returns it. */
  const settledRevision = async (timeoutMs: number): Promise<string> => {
    let last = '';
    try {
      return await eventually(async () => {
        const [wsb, held] = await Promise.all([getBalancer(), views()]);
        const active = wsb.status?.activeRevision;
        last = `status ${JSON.stringify(rolloutMemory(wsb.status))}, Promoted ${condition(wsb, 'Promoted')?.status}; sidecars ${JSON.stringify(held)}`;
        if (!active || condition(wsb, 'Promoted')?.status !== 'True' || wsb.status?.previewRevision) return undefined;
        const enabled = runningPods(active).map((id) => `${id}:enabled`).join();
        return Object.values(held).every((v) => v.backends.join() === enabled) ? active : undefined;
      }, 'a revision promoted, no rollout in motion, every sidecar holding its pods', timeoutMs, 200);
    } catch (err) {
      throw new Error(`${(err as Error).message}; last seen: ${last}`);
    }
  };

  before(async () => {
    let core: CoreV1Api;
    ({ cp, admin, apps, core, custom, operatorKubeconfig: kubeconfig } = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN));
    coordination = admin.makeApiClient(CoordinationV1Api);
    pods = new PodProcesses(ADMIN_TOKEN, { backendArgs: ['--answer-delay', ANSWER_DELAY] });
    kubelet = await runPods(admin, NS, pods);
    await createEdgeAndService(apps, core, NS, { sidecars: 2 });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-blue', backendLabels('blue'), 2, BACKEND_PORT) });
    await pods.waitForSidecars(2);
    await createEdgeBalancer(custom, NS, { blueGreen: { autoPromotionDelaySeconds: 1, migrationRate: 50, drainDeadlineSeconds: 120 } });
  });

  after(async () => {
    closeSessions(allSessions);
    await killOperators();
    await kubelet?.stop();
    await pods?.stopAll();
    await cp?.stop();
  });

  test('EndpointSlices not listable at a restart: no PUT, no status until they are; then the set that changed meanwhile', async (t) => {
    const first = await startOperator('operator-a');
    const blue = await eventually(async () => (runningPods('blue').length === 2 ? runningPods('blue') : undefined), 'two blue pods', 20_000);
    await sidecarsHold(blue, 20_000);
    await eventually(async () => (condition(await getBalancer(), 'SidecarsSynced')?.status === 'True' ? true : undefined), 'SidecarsSynced', 10_000);
    await first.kill();
    const held = await views();
    for (const [name, v] of Object.entries(held)) assert.equal(v.readyz, 200, `${name} takes clients`);
    const resourceVersion = (await getBalancer()).metadata.resourceVersion;

    const account = await blindAccount(t, 'operator-noslices', [{ apiGroup: 'discovery.k8s.io', resource: 'endpointslices' }]);
    const blind = await startOperator('operator-b', account.kubeconfig);
    // A change it cannot see yet: a third blue pod.
    await scale('echo-blue', 3);
    await becameLeader(blind);
    await throughout(BLIND_MS, 'the leader cannot list EndpointSlices', async () => {
      assert.deepEqual(await views(), held, 'every sidecar keeps its backends and its generation, and takes clients');
      assert.equal((await getBalancer()).metadata.resourceVersion, resourceVersion, 'the status is not written');
    });
    // A new client gets in and is answered.
    for (const s of sidecars()) {
      const client = await TestClient.connect(`${s.url}/chat`);
      client.ws.send('hello');
      await client.waitForCount(1, 5000);
      assert.match(client.texts()[0]!, /^echo-blue-[^|]+\|hello$/, `answer through ${s.name}`);
      client.close();
    }

    await account.grant();
    const three = await eventually(async () => (runningPods('blue').length === 3 ? runningPods('blue') : undefined), 'three blue pods', 20_000);
    await sidecarsHold(three, CATCH_UP_MS);
    const written = await eventually(async () => {
      const wsb = await getBalancer();
      const synced = condition(wsb, 'SidecarsSynced')?.status === 'True' && wsb.status?.backendsGeneration === (await views())[sidecars()[0]!.name]!.backendsGeneration;
      return synced && wsb.status?.revisions?.find((r) => r.name === 'blue')?.ready === 3 ? wsb : undefined;
    }, 'status written: three ready blue endpoints, sidecars synced', 10_000, 100);
    assert.notEqual(written.metadata.resourceVersion, resourceVersion);
    assert.equal(written.status?.activeRevision, 'blue');
  });

  test('pods not listable at a restart after blue→green: status keeps its rollout memory, nothing is pushed; then blue never returns', async (t) => {
    assert.equal(await settledRevision(CATCH_UP_MS), 'blue');
    const sessions = await openSessions('b');
    t.after(() => closeSessions(sessions));
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-green', backendLabels('green'), 2, BACKEND_PORT) });
    await waitForPromoted(custom, NS, 'edge', 'green', 60_000);
    await revisionGone(sidecars, 'blue');
    const promoted = await getBalancer();
    assert.equal(promoted.status?.previousRevision, 'blue');
    assert.ok(promoted.status?.retiredRevisions?.includes('blue'), `blue retired: ${JSON.stringify(promoted.status?.retiredRevisions)}`);
    assert.equal(runningPods('blue').length, 3, 'the blue pods still run');

    await killOperators();
    const memory = rolloutMemory((await getBalancer()).status);
    const resourceVersion = (await getBalancer()).metadata.resourceVersion;
    const held = await views();
    const monitor = new SafetyMonitor(sidecars, async () => (await getBalancer()).status, revisionsWithPods, 'green');
    t.after(() => monitor.stop());
    const account = await blindAccount(t, 'operator-nopods', [{ apiGroup: '', resource: 'pods' }]);
    const blind = await startOperator('operator-c', account.kubeconfig);
    // A change it cannot see yet: a third green pod.
    await scale('echo-green', 3);
    await becameLeader(blind);
    await throughout(BLIND_MS, 'the leader cannot list pods', async () => {
      const wsb = await getBalancer();
      assert.deepEqual(rolloutMemory(wsb.status), memory, 'the rollout memory in status is kept');
      assert.equal(wsb.metadata.resourceVersion, resourceVersion, 'the status is not written');
      assert.deepEqual(await views(), held, 'every sidecar keeps its backends and its generation');
    });

    await account.grant();
    const green = await eventually(async () => (runningPods('green').length === 3 ? runningPods('green') : undefined), 'three green pods', 20_000);
    await sidecarsHold(green, CATCH_UP_MS);
    // Longer than the auto-promotion delay: a blue preview would have shown, and been promoted.
    await throughout(3000, 'the operator has caught up', async () => {
      const wsb = await getBalancer();
      assert.deepEqual(rolloutMemory(wsb.status), { ...memory, retiredRevisions: wsb.status?.retiredRevisions }, 'green active, blue previous, no preview');
      assert.ok(wsb.status?.retiredRevisions?.includes('blue'), `blue stays retired: ${JSON.stringify(wsb.status?.retiredRevisions)}`);
    });
    assert.equal(await monitor.stop(), '', 'nothing drained by mistake, no retired revision back');
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => revisionOf(pod) === 'green'), `sessions answered by ${[...answeredBy].join(', ')}`);
    assert.equal(await sessionsOn(sidecars(), 'green'), sessions.length);
  });

  test(`${RESTARTS} leader kills at random moments of a promotion with live sessions: nothing drained by mistake, no retired revision back, no session lost`, async (t) => {
    const seed = Number(process.env.BATON_TEST_SEED ?? 20261207);
    const random = mulberry32(seed);
    // Pods and EndpointSlices are listed late, as in a large cluster: a fresh process holds the
    // lease and has listed the WsBalancers well before it has them.
    const slowRandom = mulberry32(seed + 1);
    const slow = await listsProxy(kubeconfig, { delayMs: () => slowRandom() * SLOW_LIST_MS });
    t.after(() => slow.close());
    await startOperator('operator-d', slow.kubeconfig);
    const from = await settledRevision(CATCH_UP_MS);
    // Slow migration (20 sessions per sidecar at 0.6/s: about 33 s), so the kills (the sixth comes
    // some 30 s in) land mid-rollout.
    await patchBalancer({ spec: { rollout: { blueGreen: { migrationRate: 0.6 } } } });
    const sessions = await openSessions('p');
    t.after(() => closeSessions(sessions));
    const monitor = new SafetyMonitor(sidecars, async () => (await getBalancer()).status, revisionsWithPods, 'purple');
    t.after(() => monitor.stop());
    const kills: string[] = [];
    const since = Date.now();
    const at = () => `${((Date.now() - since) / 1000).toFixed(1)} s`;
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-purple', backendLabels('purple'), 2, BACKEND_PORT) });
    for (let i = 0; i < RESTARTS; i++) {
      const leader = await eventually(async () => operators.find((o) => o.leading), 'a leader', 20_000, 20);
      await sleep(random() * 2500); // a random moment of its leadership
      const cold = random() < 0.5;
      const status = (await getBalancer()).status;
      kills.push(`${cold ? 'cold' : 'warm'} at ${at()} (${status?.activeRevision}${status?.previewRevision ? `→${status.previewRevision}` : ''}${status?.rollout?.promotingSince ? ' promoting' : ''})`);
      await leader.kill();
      if (cold) {
        // No replica left and the lease expired: a fresh process takes over with empty caches.
        await killOperators();
        await eventually(async () => {
          const spec = (await coordination.readNamespacedLease({ name: LEASE, namespace: OPERATOR_NS })).spec;
          return Date.now() > new Date(spec!.renewTime!).getTime() + spec!.leaseDurationSeconds! * 1000 ? true : undefined;
        }, 'the lease expired', 10_000, 50);
        await startOperator(`operator-r${i}a`, slow.kubeconfig);
      }
      await startOperator(`operator-r${i}`, slow.kubeconfig);
    }
    await waitForPromoted(custom, NS, 'edge', 'purple', 120_000);
    t.diagnostic(`kills: ${kills.join(', ')}; purple promoted at ${at()}`);
    await revisionGone(sidecars, from);
    assert.equal(await monitor.stop(), '', `nothing drained by mistake, no retired revision back (kills: ${kills.join(', ')}; ${JSON.stringify(monitor.polls)} polls)`);
    assert.ok(kills.filter((k) => k.includes('→purple')).length >= RESTARTS / 2, `most kills landed mid-rollout: ${kills.join(', ')}`);
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => revisionOf(pod) === 'purple'), `sessions answered by ${[...answeredBy].join(', ')}`);
    assert.equal(await sessionsOn(sidecars(), 'purple'), sessions.length);
    const wsb = await getBalancer();
    const retired = [...revisionsWithPods()].filter((r) => r !== 'purple').sort();
    assert.deepEqual(wsb.status?.retiredRevisions?.slice().sort(), retired, 'every earlier revision whose pods still run is retired');
  });

  test('a cache that shows no endpoints while the API has some: the empty set is refused (BackendSetRefused), nothing pushed', async (t) => {
    if (!operators.some((o) => o.alive)) await startOperator('operator-e0');
    await settledRevision(CATCH_UP_MS);
    await killOperators();
    const held = await views();
    const since = Date.now();
    const lying = await listsProxy(kubeconfig, { emptySliceCache: true });
    t.after(async () => {
      // Leave an operator that sees the truth.
      await killOperators();
      lying.close();
      await startOperator('operator-after-lying');
    });
    const op = await startOperator('operator-e', lying.kubeconfig);
    await becameLeader(op);
    const refused = await eventually(async () => {
      const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
      return events.items.find((e) => e.reason === 'BackendSetRefused' && e.regarding?.name === 'edge' && new Date(e.eventTime as unknown as string).getTime() >= since - 1000);
    }, 'a BackendSetRefused event', 20_000, 200);
    assert.equal(refused.type, 'Warning');
    // Every backend pod of every revision is an endpoint of the Service.
    assert.match(refused.note ?? '', new RegExp(`service echo has ${pods.backends.size} endpoints in the API`));
    await throughout(BLIND_MS, 'the cache shows no endpoint', async () => {
      assert.deepEqual(await views(), held, 'every sidecar keeps its backends and its generation');
    });
    assert.ok(op.logged('refused an empty backend set; the cache disagrees with the API'));
  });
});
