// A canary rollout end to end on a real control plane (kube-apiserver 1.20 + etcd, RBAC on): echo
// backends answering 1-200 ms late run as the pods of Deployments, real sidecars as the pods of a
// third, the operator as its own process with the chart's permissions, and 300 ws clients sending all
// the time through two sidecars. The weight means a share of every session, live and new: at each
// pause the clients' own answers show that share on each sidecar; no session changes backend more
// often than the steps ask, none is closed, no message is lost. A failing analysis aborts: every
// session is back on the stable revision.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EventsV1Api, PatchStrategy, setHeaderOptions, type AppsV1Api, type CoreV1Api, type CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { WsBalancer } from '../operator/api/wsbalancer.js';
import { freePort, TestClient, waitFor } from './helpers.js';
import { eventually, type ControlPlane } from './kube/control-plane.js';
import type { FakeKubelet } from './kube/kubelet.js';
import { OperatorProcess, runPods, startOperatorCluster, testOperatorArgs } from './kube/operator-process.js';
import { canaryPausedAt, createEdgeAndService, createEdgeBalancer, deployment, readBalancer, revisionGone, waitForPromoted } from './kube/rollout.js';
import { deploymentOf, settle, TrackedSession } from './kube/sessions.js';
import { BACKEND_PORT, PodProcesses, ROLE_LABEL, type SidecarProcess } from './kube/workloads.js';

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'test-admin-token-0123456789';
const SESSIONS = 300;
const SEND_EVERY_MS = 500;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const backendLabels = (version: string) => ({ app: 'echo', version, [ROLE_LABEL]: 'backend' });
/** "echo-green-5d8f7c9b4-x2x7q" → "green". */
const revisionOf = (pod: string): string => deploymentOf(pod).slice('echo-'.length);

describe('operator on a real API server: canary rollouts', { timeout: 240_000 }, () => {
  let cp: ControlPlane;
  let admin: KubeConfig;
  let apps: AppsV1Api;
  let custom: CustomObjectsApi;
  let kubelet: FakeKubelet;
  let pods: PodProcesses;
  let operatorKubeconfig: string;
  const operators: OperatorProcess[] = [];
  let failingHook: Server | undefined;
  const sessions: TrackedSession[] = [];

  const sidecars = (): SidecarProcess[] => [...pods.sidecars.values()].sort((a, b) => a.name.localeCompare(b.name));
  const getBalancer = (): Promise<WsBalancer> => readBalancer(custom, NS, 'edge');
  const patchBalancer = (body: object) =>
    custom.patchNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'edge', body }, mergePatch);
  const resume = (): void => {
    for (const t of sessions) t.send(SEND_EVERY_MS);
  };

  before(async () => {
    let core: CoreV1Api;
    ({ cp, admin, apps, core, custom, operatorKubeconfig } = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN));
    pods = new PodProcesses(ADMIN_TOKEN, { backendArgs: ['--answer-delay', '1-200'] });
    kubelet = await runPods(admin, NS, pods);
    await createEdgeAndService(apps, core, NS, { sidecars: 2 });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-blue', backendLabels('blue'), 2, BACKEND_PORT) });
    // A pause until promoted after each weight: the test measures the share there, then promotes.
    await createEdgeBalancer(custom, NS, {
      canary: { migrationRate: 50, steps: [{ setWeight: 10 }, { pause: {} }, { setWeight: 50 }, { pause: {} }, { setWeight: 100 }, { pause: {} }] },
    });
    await pods.waitForSidecars(2);
    await startOperator('operator-a');
  });

  const startOperator = async (identity: string): Promise<OperatorProcess> => {
    const op = new OperatorProcess(identity, operatorKubeconfig, await freePort(), testOperatorArgs(OPERATOR_NS));
    operators.push(op);
    return op;
  };

  after(async () => {
    for (const t of sessions) {
      t.pause();
      t.client.close();
    }
    failingHook?.close();
    for (const op of operators) await op.kill();
    await kubelet?.stop();
    await pods?.stopAll();
    await cp?.stop();
  });

  const pausedAt = (step: number): Promise<WsBalancer> => canaryPausedAt(custom, NS, 'edge', step);

  /**
   * Stops the traffic, checks every answer (settle), and returns per sidecar the sessions whose last
   * answer came from `revision` and how many it carries.
   */
  const measuredShare = async (revision: string): Promise<Map<string, { on: number; of: number }>> => {
    await settle(sessions);
    const share = new Map<string, { on: number; of: number }>();
    for (const t of sessions) {
      const s = share.get(t.via) ?? { on: 0, of: 0 };
      s.of++;
      if (revisionOf(t.answers().at(-1)!.pod) === revision) s.on++;
      share.set(t.via, s);
    }
    return share;
  };

  const assertShare = (share: Map<string, { on: number; of: number }>, weight: number, wsb: WsBalancer): void => {
    assert.equal(share.size, 2);
    for (const [via, { on, of }] of share) {
      const want = (of * weight) / 100;
      assert.ok(Math.abs(on - want) <= Math.max(1, of * 0.02), `${via}: ${on} of ${of} sessions on the canary at weight ${weight}`);
      // Status shows what the sidecar reports, the same share.
      const reported = wsb.status?.rollout?.canary?.sidecars?.find((s) => s.name === via);
      assert.ok(reported && Math.abs(reported.canary - on) <= 1, `${via}: status says ${JSON.stringify(reported)}, the clients ${on}`);
    }
  };

  /** How many times each session's answers changed backend pod since answer `from` (its index per session). */
  const moves = (from: readonly number[] = []): number[] =>
    sessions.map((t, i) => {
      const pods = t.answers().slice(from[i] ?? 0).map((a) => a.pod);
      return pods.filter((p, j) => j > 0 && p !== pods[j - 1]).length;
    });

  /** The pods that answered a session since answer `from`, each run of one pod once. */
  const pathOf = (t: TrackedSession, from = 0): string =>
    t
      .answers()
      .slice(from)
      .map((a) => a.pod)
      .filter((p, j, all) => j === 0 || p !== all[j - 1])
      .join(' → ');

  test(`10 → 50 → 100 over ${SESSIONS} live sessions on two sidecars: the share at each step, no session moves twice, nothing lost`, async () => {
    await eventually(async () => {
      const views = await Promise.all(sidecars().map((s) => s.admin<{ backends: { state: string }[] }>('/backends')));
      return views.every((v) => v.backends.filter((b) => b.state === 'enabled').length === 2) ? true : undefined;
    }, 'both sidecars hold the two blue pods', 30_000, 100);
    for (let i = 0; i < SESSIONS; i++) {
      const via = sidecars()[i % 2]!;
      sessions.push(new TrackedSession(`c${i}`, await TestClient.connect(`${via.url}/chat`), via.name));
    }
    resume();
    await waitFor(() => sessions.every((t) => t.client.received.length > 0), 'every session answered once', 20_000);

    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-green', backendLabels('green'), 2, BACKEND_PORT) });
    const steps = [
      { weight: 10, pause: 1 },
      { weight: 50, pause: 3 },
      { weight: 100, pause: 5 },
    ];
    for (const { weight, pause } of steps) {
      const wsb = await pausedAt(pause);
      assert.equal(wsb.status?.rollout?.canary?.weight, weight);
      assertShare(await measuredShare('green'), weight, await getBalancer());
      resume();
      await patchBalancer({ metadata: { annotations: { 'baton.dev/promote': `green@${pause}` } } });
    }

    const promoted = await waitForPromoted(custom, NS, 'edge', 'green', 30_000);
    assert.equal(promoted.status?.previousRevision, 'blue');
    assert.equal(promoted.status?.rollout, undefined);
    await revisionGone(sidecars, 'blue');
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => revisionOf(pod) === 'green'), `answered by ${[...answeredBy].join(', ')}`);
    const moved = moves();
    assert.ok(moved.every((n) => n === 1), `each session changed backend once (blue → green): ${moved.filter((n) => n !== 1).length} did not (${[...new Set(moved)].join(', ')})`);

    const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
    const reasons = events.items.filter((e) => e.regarding?.name === 'edge').map((e) => e.reason);
    for (const r of ['PreviewDetected', 'StepStarted', 'WeightReached', 'StepPromoted', 'PromotionStarted', 'Promoted']) assert.ok(reasons.includes(r), `event ${r} in ${[...new Set(reasons)].join(', ')}`);
    assert.equal(await operators[0]!.metric('baton_operator_canary_step{'), 0, 'no canary series once promoted');
  });

  test('a failing analysis at 50 % aborts: every session back on stable, each moved there and back at most once, nothing lost', async () => {
    failingHook = createServer((_req, res) => res.writeHead(503).end('no'));
    await new Promise<void>((r) => failingHook!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(failingHook.address() as AddressInfo).port}/analysis`;
    await patchBalancer({ spec: { rollout: { canary: { steps: [{ setWeight: 10 }, { setWeight: 50 }, { analysis: { webhook: { url } } }, { setWeight: 100 }] } } } });
    // From each session's last answer (of green): the moves since then.
    const from = sessions.map((t) => t.answers().length - 1);
    resume();

    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-red', backendLabels('red'), 2, BACKEND_PORT) });
    const aborted = await eventually(async () => {
      const wsb = await getBalancer();
      return wsb.status?.abortedRevision === 'red' ? wsb : undefined;
    }, 'the canary of red aborted and its sessions back', 60_000, 200);
    assert.equal(aborted.status?.activeRevision, 'green');
    assert.equal(aborted.status?.previewRevision, undefined);
    await revisionGone(sidecars, 'red');
    const answeredBy = await settle(sessions);
    assert.ok([...answeredBy].every((pod) => revisionOf(pod) === 'green'), `answered by ${[...answeredBy].join(', ')}`);

    // Half the sessions went to red at 50 % and came back once; none moved more.
    const byRevision = sessions.map((t, i) => [...new Set(t.answers().slice(from[i]).map((a) => revisionOf(a.pod)))]);
    const visitedRed = byRevision.filter((r) => r.includes('red')).length;
    assert.ok(Math.abs(visitedRed - SESSIONS / 2) <= 6, `${visitedRed} sessions were on red at 50 %`);
    const moved = moves(from);
    const odd = sessions.flatMap((t, i) => (moved[i] === 0 || moved[i] === 2 ? [] : [`${t.id} via ${t.via}: ${pathOf(t, from[i])}`]));
    assert.deepEqual(odd, [], 'each session stayed, or went to red and back once');

    const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
    const notes = events.items.filter((e) => e.regarding?.name === 'edge').map((e) => `${e.reason}: ${e.note}`);
    assert.ok(notes.some((n) => /^AnalysisFailed: canary red, step 3\/4: webhook: .* answered 503/.test(n)), notes.join('\n'));
    assert.ok(notes.some((n) => n.startsWith('Aborted: canary of revision red aborted by a failed analysis')), notes.join('\n'));
  });

  test('the operator killed mid-step: the new leader resumes the step from status, no session moves twice, the share is reached', async () => {
    // Slow moves, so the kill lands while sessions are moving.
    await patchBalancer({ spec: { rollout: { canary: { migrationRate: 10, steps: [{ setWeight: 50 }, { pause: {} }] } } } });
    const from = sessions.map((t) => t.answers().length - 1);
    resume();
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-gold', backendLabels('gold'), 2, BACKEND_PORT) });
    await eventually(async () => {
      const c = (await getBalancer()).status?.rollout?.canary;
      const moved = c?.sidecars?.reduce((n, s) => n + s.canary, 0) ?? 0;
      return c?.weight === 50 && moved >= 20 && moved <= 100 ? true : undefined;
    }, 'the canary of gold moving sessions at 50 %', 30_000, 100);
    await operators[0]!.kill();
    const next = await startOperator('operator-b');
    await waitFor(() => next.leading, 'operator-b leads', 20_000);

    const wsb = await pausedAt(1);
    assert.equal(wsb.status?.previewRevision, 'gold');
    assertShare(await measuredShare('gold'), 50, await getBalancer());
    const moved = moves(from);
    const twice = sessions.flatMap((t, i) => (moved[i]! <= 1 ? [] : [`${t.id} via ${t.via}: ${pathOf(t, from[i])}`]));
    assert.deepEqual(twice, [], 'no session moved twice');
    const events = await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS });
    const started = events.items.filter((e) => e.regarding?.name === 'edge' && e.reason === 'StepStarted' && e.note?.startsWith('canary gold: step 1/'));
    assert.equal(started.length, 1, 'the step was started once, by the first operator');
  });
});
