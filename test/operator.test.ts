// The operator end to end on a real control plane (etcd + kube-apiserver + kube-controller-manager
// 1.20, RBAC on): real sidecar and echo-backend processes run as the pods of Deployments, the
// operator runs as separate processes with only the chart's permissions, and real ws clients keep
// sessions open through rollouts. The backends answer late (1-200 ms after each message, in order),
// like a server doing real work: a switch lands while answers are still being computed, and none
// may be lost.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Deployment,
  type V1EndpointSlice,
} from '@kubernetes/client-node';
import type { BackendsResponse, StatusResponse } from '../common/admin/contract.js';
import type { WsBalancer } from '../operator/api/wsbalancer.js';
import { freePort, TestClient, waitFor } from './helpers.js';
import { ensurePrometheus, promtoolCheckMetrics } from './prometheus.js';
import { eventually, type ControlPlane } from './kube/control-plane.js';
import type { FakeKubelet } from './kube/kubelet.js';
import { OperatorProcess, runPods, startOperatorCluster, testOperatorArgs } from './kube/operator-process.js';
import {
  condition,
  createEdgeAndService,
  deployment as podDeployment,
  readBalancer,
  revisionGone as revisionDropped,
  sessionsOn as sessionsOnRevision,
  waitForPromoted as waitForRevisionPromoted,
} from './kube/rollout.js';
import { deploymentOf, settle, TrackedSession } from './kube/sessions.js';
import { ADMIN_PORT, BACKEND_PORT, PodProcesses, ROLE_LABEL, type SidecarProcess } from './kube/workloads.js';

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'test-admin-token-0123456789';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** Every backend pod answers each message after a random delay in this range (ms), in order per connection. */
const ANSWER_DELAY = '1-200';

const deployment = (name: string, labels: Record<string, string>, replicas: number, port?: number): V1Deployment =>
  podDeployment(NS, name, labels, replicas, port);

const backendLabels = (version: string) => ({ app: 'echo', version, [ROLE_LABEL]: 'backend' });


describe('operator on a real API server', { timeout: 600_000 }, () => {
  let cp: ControlPlane;
  let admin: KubeConfig;
  let apps: AppsV1Api;
  let core: CoreV1Api;
  let custom: CustomObjectsApi;
  let kubelet: FakeKubelet;
  let pods: PodProcesses;
  let kubeconfig: string;
  const operators: OperatorProcess[] = [];
  const sessions: TrackedSession[] = [];

  const startOperator = async (identity: string): Promise<OperatorProcess> => {
    const op = new OperatorProcess(identity, kubeconfig, await freePort(), testOperatorArgs(OPERATOR_NS));
    operators.push(op);
    return op;
  };

  const getBalancer = (name: string): Promise<WsBalancer> => readBalancer(custom, NS, name);

  const patchBalancer = (name: string, body: object) =>
    custom.patchNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name, body }, mergePatch);

  const scale = (name: string, replicas: number) =>
    apps.patchNamespacedDeployment({ name, namespace: NS, body: { spec: { replicas } } }, mergePatch);

  /** The two sidecars that carry the clients (the third one, the spare, is restarted mid-rollout). */
  const clientSidecars = (): SidecarProcess[] => [...pods.sidecars.values()].sort((a, b) => a.name.localeCompare(b.name)).slice(0, 2);

  /** Backends every sidecar holds in `state`, as pod names, when all sidecars agree; else undefined. */
  const agreedBackends = async (sidecars: SidecarProcess[], state = 'enabled'): Promise<string[] | undefined> => {
    const sets = await Promise.all(sidecars.map((s) => s.admin<BackendsResponse>('/backends')));
    const names = sets.map((v) => v.backends.filter((b) => b.state === state).map((b) => b.id).sort().join(','));
    return names.every((n) => n === names[0]) ? names[0]!.split(',').filter(Boolean) : undefined;
  };

  const readyPods = async (labels: Record<string, string>): Promise<string[]> => {
    const selector = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');
    const list = await core.listNamespacedPod({ namespace: NS, labelSelector: selector });
    return list.items
      .filter((p) => !p.metadata?.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      .map((p) => p.metadata!.name!)
      .sort();
  };

  before(async () => {
    // The operator's ServiceAccount with the chart's rules, nothing more.
    ({ cp, admin, apps, core, custom, operatorKubeconfig: kubeconfig } = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN));
    pods = new PodProcesses(ADMIN_TOKEN, { backendArgs: ['--answer-delay', ANSWER_DELAY] });
    kubelet = await runPods(admin, NS, pods);

    // Three sidecar pods (clients use two; the third is restarted mid-rollout) and the blue backends.
    await createEdgeAndService(apps, core, NS, { sidecars: 3 });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('echo-blue', backendLabels('blue'), 2, BACKEND_PORT) });
    await pods.waitForSidecars(3);
    await startOperator('operator-a');
    await startOperator('operator-b');
  });

  after(async () => {
    for (const t of sessions) {
      t.pause();
      t.client.close();
    }
    for (const op of operators) await op.kill();
    await kubelet?.stop();
    await pods?.stopAll();
    await cp?.stop();
  });

  const wsbSpec = (extra: Record<string, unknown> = {}) => ({
    sidecarSelector: { matchLabels: { app: 'edge' } },
    sidecar: { adminPort: ADMIN_PORT, adminTokenSecretRef: { name: 'baton-admin' } },
    backend: { service: 'echo', port: 'ws', revisionLabel: 'version' },
    rollout: { blueGreen: { autoPromotionDelaySeconds: 1, migrationRate: 50, drainDeadlineSeconds: 120 } },
    ...extra,
  });

  test('an invalid spec sets InvalidSpec naming the field and changes nothing on the sidecars', async () => {
    await custom.createNamespacedCustomObject({
      group: 'baton.dev',
      version: 'v1alpha1',
      namespace: NS,
      plural: 'wsbalancers',
      body: { apiVersion: 'baton.dev/v1alpha1', kind: 'WsBalancer', metadata: { name: 'bad' }, spec: wsbSpec({ settings: { 'failover.deadline': '3 parsecs' } }) },
    });
    const invalid = await eventually(async () => {
      const c = condition(await getBalancer('bad'), 'InvalidSpec');
      return c?.status === 'True' ? c : undefined;
    }, 'InvalidSpec condition', 15_000);
    assert.match(invalid.message, /spec\.settings\["failover\.deadline"\]: "3 parsecs" is not a duration/);
    for (const s of pods.sidecars.values()) assert.equal((await s.admin<StatusResponse>('/status')).backendsGeneration, 0, `${s.name} was changed`);

    // Deleting it removes the operator's finalizer and the object goes away.
    await custom.deleteNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'bad' });
    await eventually(() => getBalancer('bad').then(() => undefined, (err: { code?: number }) => (err.code === 404 ? true : undefined)), 'bad WsBalancer deleted');
  });

  test('an admin token Secret the operator may not read: a Warning event naming the chart value, nothing changed on the sidecars', async () => {
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'other-admin' }, stringData: { token: ADMIN_TOKEN } } });
    await custom.createNamespacedCustomObject({
      group: 'baton.dev',
      version: 'v1alpha1',
      namespace: NS,
      plural: 'wsbalancers',
      body: { apiVersion: 'baton.dev/v1alpha1', kind: 'WsBalancer', metadata: { name: 'other' }, spec: wsbSpec({ sidecar: { adminPort: ADMIN_PORT, adminTokenSecretRef: { name: 'other-admin' } } }) },
    });
    const event = await eventually(async () => {
      const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
      return events.items.find((e) => e.regarding?.name === 'other' && e.reason === 'AdminTokenUnreadable');
    }, 'an AdminTokenUnreadable event', 15_000, 200);
    assert.equal(event.type, 'Warning');
    assert.match(event.note ?? '', /Secret app\/other-admin .*rbac\.adminTokenSecretNames/);
    for (const s of pods.sidecars.values()) assert.equal((await s.admin<StatusResponse>('/status')).backendsGeneration, 0, `${s.name} was changed`);
    await custom.deleteNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'other' });
    await eventually(() => getBalancer('other').then(() => undefined, (err: { code?: number }) => (err.code === 404 ? true : undefined)), 'other WsBalancer deleted');
  });

  test('scaling the backend Deployment: every sidecar follows within two seconds of the EndpointSlice', async () => {
    await custom.createNamespacedCustomObject({
      group: 'baton.dev',
      version: 'v1alpha1',
      namespace: NS,
      plural: 'wsbalancers',
      body: { apiVersion: 'baton.dev/v1alpha1', kind: 'WsBalancer', metadata: { name: 'edge' }, spec: wsbSpec() },
    });
    const sidecars = [...pods.sidecars.values()];
    const follow = async (replicas: number): Promise<void> => {
      await scale('echo-blue', replicas);
      const ready = await eventually(async () => {
        const names = await readyPods(backendLabels('blue'));
        return names.length === replicas ? names : undefined;
      }, `${replicas} ready blue pods`, 20_000);
      const readyAt = Date.now();
      await eventually(async () => {
        const held = await agreedBackends(sidecars);
        return held && held.join() === ready.join() ? true : undefined;
      }, `sidecars hold ${ready.join(', ')}`, 10_000);
      assert.ok(Date.now() - readyAt <= 2000, `sidecars followed ${Date.now() - readyAt} ms after the pods were ready`);
    };
    await follow(2);
    await follow(3);
    await follow(1);
    await follow(2);
    const wsb = await getBalancer('edge');
    assert.equal(wsb.status?.activeRevision, 'blue');
    assert.equal(condition(wsb, 'SidecarsSynced')?.status, 'True');
    assert.equal(wsb.status?.sidecars?.synced, 3);
  });

  test('a pod labelled for the sidecar but created without it: the gauge counts it, a Warning event names it', async () => {
    const leader = operators.find((o) => o.leading)!;
    const gauge = `baton_operator_pods_without_sidecar{namespace="${NS}"}`;
    await core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'missed', labels: { app: 'lonely', 'baton.dev/inject': 'true' } }, spec: { containers: [{ name: 'main', image: 'example.invalid/none:1' }] } },
    });
    // Not a sidecar of any WsBalancer's selector: seen at the next resync (5 s here).
    await eventually(async () => ((await leader.metric(gauge)) === 1 ? true : undefined), `${gauge} = 1`, 20_000, 200);
    const event = await eventually(async () => {
      const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
      return events.items.find((e) => e.reason === 'PodsWithoutSidecar');
    }, 'a PodsWithoutSidecar event', 10_000, 200);
    assert.equal(event.type, 'Warning');
    assert.match(event.note ?? '', /1 pods labelled baton\.dev\/inject=true run without the Baton sidecar .*: missed;/);
    await core.deleteNamespacedPod({ name: 'missed', namespace: NS, body: { gracePeriodSeconds: 0 } });
    await eventually(async () => ((await leader.metric(gauge)) === 0 ? true : undefined), `${gauge} = 0`, 20_000, 200);
  });

  test("a pod of the namespace that is neither sidecar nor backend: 50 label changes reconcile nothing", async () => {
    await core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'unrelated', labels: { app: 'other', n: '0' } }, spec: { containers: [{ name: 'main', image: 'example.invalid/none:1' }] } },
    });
    const leader = operators.find((o) => o.leading)!;
    const before = await leader.metric('baton_operator_reconciles_total');
    const started = Date.now();
    for (let i = 1; i <= 50; i++) await core.patchNamespacedPod({ name: 'unrelated', namespace: NS, body: { metadata: { labels: { n: String(i) } } } }, mergePatch);
    // A change that must reconcile, seen on the same pod watch after the 50: once the sidecars hold
    // the new backend, the operator has handled every one of those events.
    await scale('echo-blue', 3);
    await eventually(async () => ((await agreedBackends([...pods.sidecars.values()]))?.length === 3 ? true : undefined), 'sidecars hold 3 backends', 20_000);
    const reconciles = (await leader.metric('baton_operator_reconciles_total')) - before;
    // The resync (5 s here) and the new backend's pod and slice changes account for a few.
    const budget = Math.ceil((Date.now() - started) / 5000) + 8;
    assert.ok(reconciles <= budget, `${reconciles} reconciles while an unrelated pod changed 50 times (budget ${budget})`);
    await core.deleteNamespacedPod({ name: 'unrelated', namespace: NS });
    await scale('echo-blue', 2);
    await eventually(async () => ((await agreedBackends([...pods.sidecars.values()]))?.length === 2 ? true : undefined), 'sidecars hold 2 backends', 30_000);
  });

  const resume = (): void => {
    for (const t of sessions) t.send(200);
  };

  /** Sessions per revision over the sidecars that carry clients. */
  const sessionsOn = (revision: string): Promise<number> => sessionsOnRevision(clientSidecars(), revision);

  const waitForPromoted = (revision: string, timeoutMs: number): Promise<WsBalancer> => waitForRevisionPromoted(custom, NS, 'edge', revision, timeoutMs);

  /** Every client sidecar has dropped the revision's backends: each of its sessions has finished moving. */
  const revisionGone = (revision: string) => revisionDropped(clientSidecars, revision);

  test('blue/green: 200 live sessions move from blue to green with no disconnect and no lost message', async () => {
    let n = 0;
    for (const s of clientSidecars()) {
      for (let i = 0; i < 100; i++) sessions.push(new TrackedSession(`c${n++}`, await TestClient.connect(`${s.url}/chat`), s.name));
    }
    resume();
    await waitFor(() => sessions.every((t) => t.client.received.length > 0), 'every session answered once', 10_000);

    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('echo-green', backendLabels('green'), 2, BACKEND_PORT) });
    const promoted = await waitForPromoted('green', 60_000);
    assert.equal(promoted.status?.previousRevision, 'blue');
    assert.equal(promoted.status?.phase, 'Healthy');

    await revisionGone('blue');
    const sentWhileRunning = sessions.map((t) => t.sent);
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => pod.startsWith('echo-green-')), `sessions answered by ${[...answeredBy].join(', ')}`);
    assert.equal(await sessionsOn('green'), 200);
    // The traffic ran through the switch: every session was answered by blue, then by green (in
    // order, settle() checked), and the switch came while its client was still sending.
    sessions.forEach((t, i) => {
      const by = t.answers().map((a) => deploymentOf(a.pod));
      const firstGreen = by.indexOf('echo-green');
      assert.ok(
        firstGreen > 0 && by.slice(0, firstGreen).every((d) => d === 'echo-blue') && by.slice(firstGreen).every((d) => d === 'echo-green'),
        `${t.id}: answered by blue, then green (first green answer: ${firstGreen}; ${[...new Set(by)].join(', ')})`,
      );
      assert.ok(firstGreen < sentWhileRunning[i]!, `${t.id} moved while its client was sending (message ${firstGreen} of ${sentWhileRunning[i]})`);
    });

    const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
    const reasons = events.items.filter((e) => e.regarding?.name === 'edge').map((e) => e.reason);
    for (const r of ['PreviewDetected', 'PromotionStarted', 'SessionsMigrated', 'Promoted']) assert.ok(reasons.includes(r), `event ${r} in ${reasons.join(', ')}`);
  });

  // Each test with traffic starts it itself (settle() stops it), so one test's failure doesn't leave the next without.
  test('abort midway: sessions return to the active revision, none lost', async () => {
    resume();
    // Slow migration so the abort lands while sessions are split between the revisions.
    await patchBalancer('edge', { spec: { rollout: { blueGreen: { migrationRate: 5 } } } });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('echo-red', backendLabels('red'), 2, BACKEND_PORT) });
    await eventually(async () => ((await sessionsOn('red')) >= 10 ? true : undefined), '10 sessions on red', 60_000, 100);
    await patchBalancer('edge', { metadata: { annotations: { 'baton.dev/abort': 'red' } } });

    const aborted = await eventually(async () => {
      const wsb = await getBalancer('edge');
      return wsb.status?.abortedRevision === 'red' ? wsb : undefined;
    }, 'rollout of red aborted', 15_000, 100);
    assert.equal(aborted.status?.activeRevision, 'green');
    assert.equal(aborted.status?.previewRevision, undefined);
    assert.equal(condition(aborted, 'Promoted')?.reason, 'RolloutAborted');
    assert.equal(aborted.status?.phase, 'Degraded');
    await revisionGone('red');
    assert.equal(await sessionsOn('green'), 200);

    let answeredBy: Set<string>;
    try {
      answeredBy = await settle(sessions);
    } finally {
      // Once the aborted revision is gone, the balancer is healthy again. (Also when settle() failed:
      // the next tests start a rollout of their own.)
      await apps.deleteNamespacedDeployment({ name: 'echo-red', namespace: NS });
      await eventually(async () => ((await getBalancer('edge')).status?.phase === 'Healthy' ? true : undefined), 'phase Healthy', 30_000, 200);
    }
    assert.ok([...answeredBy].every((pod) => pod.startsWith('echo-green-')), `sessions answered by ${[...answeredBy].join(', ')}`);
    const reasons = (await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS })).items.map((e) => e.reason);
    assert.ok(reasons.includes('Aborted'));
  });

  test('mid-rollout a sidecar restarts (re-synced at once) and the leader is killed (the standby completes the rollout)', async () => {
    resume();
    await patchBalancer('edge', { metadata: { annotations: { 'baton.dev/abort': null } } });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('echo-purple', backendLabels('purple'), 2, BACKEND_PORT) });
    await eventually(async () => ((await sessionsOn('purple')) >= 10 ? true : undefined), '10 sessions on purple', 60_000, 100);

    // The third sidecar (no clients) restarts mid-rollout: it comes back empty and must be re-synced
    // while the rollout is still moving sessions (not merely by the push that completes it).
    const spare = [...pods.sidecars.values()].find((s) => !clientSidecars().includes(s))!;
    await spare.stop('SIGKILL');
    await spare.start();
    await kubelet.restartContainer(NS, spare.name);
    const reference = clientSidecars()[0]!;
    await eventually(async () => {
      const [mine, theirs] = await Promise.all([spare.admin<BackendsResponse>('/backends'), reference.admin<BackendsResponse>('/backends')]);
      const ids = (v: BackendsResponse) => v.backends.map((b) => `${b.id}:${b.state}`).sort().join();
      return mine.generation === theirs.generation && ids(mine) === ids(theirs) ? true : undefined;
    }, 'the restarted sidecar re-synced', 10_000, 100);
    assert.ok((await getBalancer('edge')).status?.rollout?.promotingSince, 're-synced while the rollout is still migrating');

    const leader = operators.find((o) => o.leading);
    assert.ok(leader, 'one operator leads');
    await leader.kill();

    await waitForPromoted('purple', 90_000);
    await revisionGone('green');
    const standby = operators.find((o) => o !== leader)!;
    assert.ok(standby.leading, 'the standby took over');
    let answeredBy: Set<string>;
    try {
      answeredBy = await settle(sessions);
    } finally {
      // A standby again for the next tests (also when settle() failed).
      await startOperator('operator-c');
    }
    assert.ok([...answeredBy].every((pod) => pod.startsWith('echo-purple-')), `sessions answered by ${[...answeredBy].join(', ')}`);

    const views = await Promise.all([...pods.sidecars.values()].map((s) => s.admin<BackendsResponse>('/backends')));
    const enabled = views.map((v) => v.backends.filter((b) => b.state === 'enabled').map((b) => b.id).sort().join());
    assert.deepEqual(new Set(enabled).size, 1, `every sidecar holds the same backends: ${enabled.join(' | ')}`);
    assert.deepEqual(new Set(views.map((v) => v.generation)).size, 1, 'every sidecar holds the same generation');
  });

  test('an API server restart and a quiet minute later, the operator still follows without restarting', async () => {
    resume();
    const pids = operators.filter((o) => o.alive).map((o) => o.child.pid);
    await cp.restartApiServer();
    const follow = async (replicas: number, withinMs: number): Promise<void> => {
      await scale('echo-purple', replicas);
      const ready = await eventually(async () => {
        const names = await readyPods(backendLabels('purple'));
        return names.length === replicas ? names : undefined;
      }, `${replicas} ready purple pods`, 30_000);
      const readyAt = Date.now();
      await eventually(async () => {
        const held = await agreedBackends([...pods.sidecars.values()]);
        return held && held.join() === ready.join() ? true : undefined;
      }, `sidecars hold ${ready.join(', ')}`, withinMs + 10_000);
      assert.ok(Date.now() - readyAt <= withinMs, `sidecars followed ${Date.now() - readyAt} ms after the pods were ready`);
    };
    await follow(3, 15_000);
    // Leadership may move during the restart (the Lease cannot be renewed while the API server is
    // down): the operators that were running then are the ones whose informers saw it go away.
    const running = operators.filter((o) => o.alive && pids.includes(o.child.pid));
    const restarts = await Promise.all(running.map((o) => o.metric('baton_operator_informer_restarts_total')));
    assert.ok(restarts.some((n) => n > 0), `the informers restarted after the API server went away (${restarts.join(', ')})`);

    // Longer than client-node's 30 s watch inactivity timeout with nothing changing.
    await new Promise((r) => setTimeout(r, 35_000));
    await follow(2, 2000);
    assert.deepEqual(
      operators.filter((o) => o.alive).map((o) => o.child.pid),
      pids,
      'no operator process restarted',
    );
    await settle(sessions);
  });

  test('a rolling update of the active revision: terminating pods drain first, no session is dropped', async () => {
    resume();
    const before = await readyPods(backendLabels('purple'));
    // A template change makes a new ReplicaSet (same revision label); the old pods go one by one.
    await apps.patchNamespacedDeployment(
      { name: 'echo-purple', namespace: NS, body: { spec: { template: { metadata: { annotations: { 'baton.test/restartedAt': new Date().toISOString() } } } } } },
      mergePatch,
    );
    await eventually(async () => {
      const now = await readyPods(backendLabels('purple'));
      return now.length === 2 && now.every((p) => !before.includes(p)) ? now : undefined;
    }, 'every purple pod replaced', 90_000, 200);
    // Dropped only once their sessions have moved (draining until then).
    await eventually(async () => {
      const views = await Promise.all([...pods.sidecars.values()].map((s) => s.admin<BackendsResponse>('/backends')));
      return views.every((v) => v.backends.every((b) => !before.includes(b.id))) ? true : undefined;
    }, 'sidecars dropped the old pods', 30_000, 100);
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => pod.startsWith('echo-purple-') && !before.includes(pod)), `sessions answered by ${[...answeredBy].join(', ')}`);
    const wsb = await getBalancer('edge');
    assert.equal(wsb.status?.activeRevision, 'purple', 'a rolling update within one revision is not a blue/green rollout');
  });

  test('publishNotReadyAddresses: a pod that stops being ready is disabled on the sidecars although its endpoint stays "ready"', async () => {
    const patchService = (publishNotReadyAddresses: boolean) =>
      core.patchNamespacedService({ name: 'echo', namespace: NS, body: { spec: { publishNotReadyAddresses } } }, mergePatch);
    const stateOn = async (id: string): Promise<string | undefined> => {
      const states = await Promise.all([...pods.sidecars.values()].map(async (s) => (await s.admin<BackendsResponse>('/backends')).backends.find((b) => b.id === id)?.state));
      return states.every((st) => st === states[0]) ? states[0] : undefined;
    };
    await patchService(true);
    const [pod] = await readyPods(backendLabels('purple'));
    assert.ok(pod, 'a ready purple pod');
    try {
      await kubelet.setReady(NS, pod, false);
      // The API forces `ready` true for such a Service; `serving` follows the pod.
      await eventually(async () => {
        // discovery.k8s.io/v1beta1 on this 1.20 API server, which client-node has no class for.
        const slices = (await custom.listNamespacedCustomObject({
          group: 'discovery.k8s.io',
          version: 'v1beta1',
          namespace: NS,
          plural: 'endpointslices',
          labelSelector: 'kubernetes.io/service-name=echo',
        })) as { items: V1EndpointSlice[] };
        const ep = slices.items.flatMap((sl) => sl.endpoints ?? []).find((e) => e.targetRef?.name === pod);
        return ep?.conditions?.ready === true && ep.conditions.serving === false ? true : undefined;
      }, `${pod}'s endpoint ready but not serving`, 15_000, 100);
      assert.equal(await eventually(async () => ((await stateOn(pod)) === 'disabled' ? 'disabled' : undefined), `${pod} disabled on every sidecar`, 10_000, 100), 'disabled');
      await kubelet.setReady(NS, pod, true);
      await eventually(async () => ((await stateOn(pod)) === 'enabled' ? true : undefined), `${pod} enabled again`, 10_000, 100);
    } finally {
      await kubelet.setReady(NS, pod, true);
      await patchService(false);
    }
  });

  test('a sidecar that stops answering: SidecarSyncFailed, Degraded; re-synced once it answers again', async () => {
    const spare = [...pods.sidecars.values()].find((s) => !clientSidecars().includes(s))!;
    const since = Date.now();
    spare.child!.kill('SIGSTOP');
    try {
      await scale('echo-purple', 3);
      const degraded = await eventually(async () => {
        const wsb = await getBalancer('edge');
        return wsb.status?.sidecars?.unreachable === 1 ? wsb : undefined;
      }, 'one sidecar unreachable', 30_000, 200);
      assert.equal(degraded.status?.phase, 'Degraded');
      assert.equal(condition(degraded, 'SidecarsSynced')?.reason, 'SidecarsUnreachable');
      const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
      // Only this test's: the earlier restart of the same sidecar may have left one of its own.
      const failures = events.items.filter((e) => e.reason === 'SidecarSyncFailed' && new Date(e.eventTime as unknown as string).getTime() >= since - 1000);
      assert.equal(failures.length, 1, 'one event while the same sidecar keeps failing');
      assert.match(failures[0]!.note ?? '', new RegExp(`1 of 3 sidecars not synced: ${spare.name}`));
    } finally {
      spare.child!.kill('SIGCONT');
    }
    const healed = await eventually(async () => {
      const wsb = await getBalancer('edge');
      return wsb.status?.sidecars?.synced === 3 && wsb.status.phase === 'Healthy' ? wsb : undefined;
    }, 'every sidecar synced again', 30_000, 200);
    assert.equal(condition(healed, 'SidecarsSynced')?.status, 'True');
    const held = await agreedBackends([...pods.sidecars.values()]);
    assert.equal(held?.length, 3, 'the spare holds the same three backends as the others');
  });

  test('operator metrics pass promtool; /healthz and /readyz answer on every replica', async () => {
    const live = operators.filter((o) => o.alive);
    for (const op of live) {
      assert.equal((await fetch(`http://127.0.0.1:${op.metricsPort}/healthz`)).status, 200);
      assert.equal((await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`)).status, 200, `${op.identity} ready (a standby too)`);
    }
    const leader = live.find((o) => o.leading)!;
    const text = await fetch(`http://127.0.0.1:${leader.metricsPort}/metrics`).then((r) => r.text());
    ensurePrometheus();
    assert.equal(promtoolCheckMetrics(text), '');
    assert.ok((await leader.metric('baton_operator_reconciles_total{result="success"}')) > 0);
    assert.ok((await leader.metric('baton_operator_sidecar_pushes_total{result="success"}')) > 0);
    assert.equal(await leader.metric('baton_operator_leader'), 1);
    assert.equal(await leader.metric('baton_operator_sidecars_out_of_sync{namespace="app",wsbalancer="edge"}'), 0);
    assert.equal(await leader.metric('baton_operator_wsbalancer_phase{namespace="app",wsbalancer="edge",phase="Healthy"}'), 1);
    const standby = live.find((o) => !o.leading)!;
    assert.equal(await standby.metric('baton_operator_leader'), 0);
  });

  test('deleting the WsBalancer removes the finalizer; the sidecars keep serving their last backends', async () => {
    const held = await agreedBackends([...pods.sidecars.values()]);
    await custom.deleteNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'edge' });
    await eventually(() => getBalancer('edge').then(() => undefined, (err: { code?: number }) => (err.code === 404 ? true : undefined)), 'edge deleted');
    assert.deepEqual(await agreedBackends([...pods.sidecars.values()]), held);
    // Fresh answers (late ones: not merely the count catching up with what was sent before).
    const before = sessions.map((t) => t.client.received.length);
    resume();
    await waitFor(() => sessions.every((t, i) => t.client.received.length >= before[i]! + 3), 'sessions still answered', 10_000);
    await settle(sessions);
  });
});
