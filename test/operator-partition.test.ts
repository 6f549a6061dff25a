// Two operators, one partitioned from the API server: operator A reaches it through a TCP proxy
// the test pauses (its requests hang, as in a real partition, rather than fail), operator B
// directly. A leads; once cut off it must stop acting within the renew deadline, B takes over
// after the lease duration, and no sidecar ever sees its backend generation go backwards. Only
// behaviour is observed: logs, metrics, the Lease and the sidecars' admin API.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AppsV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import type { BackendsResponse, StatusResponse } from '../common/admin/contract.js';
import { freePort } from './helpers.js';
import { eventually, type ControlPlane } from './kube/control-plane.js';
import type { FakeKubelet } from './kube/kubelet.js';
import { OperatorProcess, runPods, startOperatorCluster, testOperatorArgs } from './kube/operator-process.js';
import { createEdgeAndService, createEdgeBalancer, deployment } from './kube/rollout.js';
import { PausableTcpProxy } from './kube/tcp-proxy.js';
import { BACKEND_PORT, PodProcesses, ROLE_LABEL, type SidecarProcess } from './kube/workloads.js';

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'test-admin-token-0123456789';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const backendLabels = { app: 'echo', version: 'blue', [ROLE_LABEL]: 'backend' };
/** testOperatorArgs' durations (test/kube/operator-process.ts). */
const LEASE = { durationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500, resyncMs: 5000 };
/** Log lines are read a moment after they are written; time between processes on one machine. */
const SLACK_MS = 300;

const flagValue = (args: string[], flag: string): string => args[args.indexOf(flag) + 1]!;

/** Every `everyMs`, each sidecar's backendsGeneration; any step backwards is kept as a violation. */
class GenerationWatch {
  readonly latest = new Map<string, number>();
  readonly backwards: string[] = [];
  private timer: NodeJS.Timeout;

  constructor(sidecars: SidecarProcess[], everyMs: number) {
    this.timer = setInterval(() => {
      for (const s of sidecars) {
        void s.admin<StatusResponse>('/status').then(
          ({ backendsGeneration: g }) => {
            const before = this.latest.get(s.name) ?? 0;
            if (g < before) this.backwards.push(`${s.name}: ${before} → ${g} at ${new Date().toISOString()}`);
            this.latest.set(s.name, Math.max(before, g));
          },
          () => undefined,
        );
      }
    }, everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

describe('operator leader partitioned from the API server', { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  let admin: KubeConfig;
  let kubelet: FakeKubelet;
  let pods: PodProcesses;
  let proxy: PausableTcpProxy;
  const operators: OperatorProcess[] = [];

  before(async () => {
    assert.equal(flagValue(testOperatorArgs(''), '--lease-duration'), '3s');
    assert.equal(flagValue(testOperatorArgs(''), '--lease-renew-deadline'), '2s');
    const cluster = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN);
    ({ cp, admin } = cluster);
    const { core, apps } = cluster;
    pods = new PodProcesses(ADMIN_TOKEN);
    kubelet = await runPods(admin, NS, pods);
    await createEdgeAndService(apps, core, NS, { sidecars: 2 });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'echo-blue', backendLabels, 2, BACKEND_PORT) });
    await pods.waitForSidecars(2);
    await createEdgeBalancer(admin.makeApiClient(CustomObjectsApi), NS);

    // Both operators run as the chart's ServiceAccount; A's kubeconfig points at the proxy.
    const direct = cluster.operatorKubeconfig;
    const server = new URL(cp.server);
    proxy = await PausableTcpProxy.start({ host: server.hostname, port: Number(server.port) });
    const viaProxy = direct.replace(/\.yaml$/, '-via-proxy.yaml');
    const config = parse(readFileSync(direct, 'utf8')) as { clusters: Array<{ cluster: { server: string } }> };
    config.clusters[0]!.cluster.server = `https://${server.hostname}:${proxy.port}`;
    writeFileSync(viaProxy, stringify(config));

    const a = new OperatorProcess('operator-a', viaProxy, await freePort(), testOperatorArgs(OPERATOR_NS));
    operators.push(a);
    await eventually(async () => (a.leading ? true : undefined), 'operator-a leads', 20_000);
    operators.push(new OperatorProcess('operator-b', direct, await freePort(), testOperatorArgs(OPERATOR_NS)));
    await eventually(async () => (operators[1]!.logged('operator starting') ? true : undefined), 'operator-b started', 20_000);
  });

  after(async () => {
    for (const op of operators) await op.kill();
    await proxy?.close();
    await kubelet?.stop();
    await pods?.stopAll();
    await cp?.stop();
  });

  const readyBackendPods = async (): Promise<string[]> => {
    const list = await admin.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: NS, labelSelector: 'app=echo' });
    return list.items
      .filter((p) => !p.metadata?.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      .map((p) => p.metadata!.name!)
      .sort();
  };

  /** The enabled backends and the generation, when every sidecar holds the same; else undefined. */
  const agreed = async (sidecars: SidecarProcess[]): Promise<{ backends: string; generation: number } | undefined> => {
    const views = await Promise.all(sidecars.map((s) => s.admin<BackendsResponse>('/backends')));
    const held = views.map((v) => ({ backends: v.backends.filter((b) => b.state === 'enabled').map((b) => b.id).sort().join(), generation: v.generation }));
    return held.every((h) => h.backends === held[0]!.backends && h.generation === held[0]!.generation) ? held[0] : undefined;
  };

  const loggedAt = (op: OperatorProcess, msg: string): number[] => op.lines.filter((l) => l.msg === msg).map((l) => Date.parse(l.time as string));

  test('the cut-off leader stops within the renew deadline, the other takes over after the lease duration, generations never go back', async (t) => {
    const [a, b] = operators as [OperatorProcess, OperatorProcess];
    const sidecars = [...pods.sidecars.values()];
    const initial = await readyBackendPods();
    const before = await eventually(async () => {
      const h = await agreed(sidecars);
      return h?.backends === initial.join() ? h : undefined;
    }, `sidecars hold ${initial.join()}`, 20_000);
    const watch = new GenerationWatch(sidecars, 50);
    try {
      assert.ok(a.leading && !b.leading, 'A leads, B follows');

      // The partition: A's connections to the API server stay open and go silent.
      proxy.pause();
      const pausedAt = Date.now();
      await admin.makeApiClient(AppsV1Api).patchNamespacedDeployment({ name: 'echo-blue', namespace: NS, body: { spec: { replicas: 3 } } }, mergePatch);

      // A's last successful renew was before the pause: it stops by the renew deadline after it.
      await eventually(async () => (loggedAt(a, 'no longer the leader').length ? true : undefined), 'A: no longer the leader', 10_000);
      const aStopped = loggedAt(a, 'no longer the leader')[0]!;
      assert.ok(aStopped - pausedAt <= LEASE.renewDeadlineMs + SLACK_MS, `A acted ${aStopped - pausedAt} ms into the partition (renew deadline ${LEASE.renewDeadlineMs} ms)`);
      const aPushes = await a.metric('baton_operator_sidecar_pushes_total');

      // B takes over only after A stopped, a lease duration after it last saw the Lease change.
      await eventually(async () => (b.leading ? true : undefined), 'B becomes the leader', 15_000);
      const bStarted = loggedAt(b, 'became the leader')[0]!;
      assert.ok(bStarted > aStopped, `B led from ${new Date(bStarted).toISOString()}, A until ${new Date(aStopped).toISOString()}`);
      assert.ok(bStarted - pausedAt >= LEASE.durationMs - LEASE.retryPeriodMs - SLACK_MS, `B took over ${bStarted - pausedAt} ms into the partition`);
      const lease = await admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: OPERATOR_NS, name: 'baton-operator' });
      assert.equal(lease.spec?.holderIdentity, 'operator-b');

      // B pushes the new backend set; A, still cut off through more than one resync, pushes nothing.
      const scaled = await eventually(async () => {
        const ready = await readyBackendPods();
        return ready.length === 3 ? ready : undefined;
      }, '3 ready backend pods', 20_000);
      const held = await eventually(async () => {
        const h = await agreed(sidecars);
        return h?.backends === scaled.join() ? h : undefined;
      }, `sidecars hold ${scaled.join()}`, 15_000);
      await new Promise((r) => setTimeout(r, Math.max(0, aStopped + LEASE.resyncMs + 1000 - Date.now())));
      assert.equal(await a.metric('baton_operator_sidecar_pushes_total'), aPushes, 'A pushed to sidecars after it stopped leading');
      assert.ok((await b.metric('baton_operator_sidecar_pushes_total{result="success"}')) >= sidecars.length, 'B pushed');

      // The partition heals: A finds the Lease held by B and stays a follower; the sidecars keep B's set.
      proxy.resume();
      const resumedAt = Date.now();
      await new Promise((r) => setTimeout(r, LEASE.resyncMs + 1000));
      assert.ok(!loggedAt(a, 'became the leader').some((t) => t > resumedAt), 'A became the leader again');
      assert.ok(b.leading, 'B still leads');
      assert.equal(await a.metric('baton_operator_sidecar_pushes_total'), aPushes, 'A pushed after the partition healed');
      assert.deepEqual(await agreed(sidecars), held, 'the sidecars were disturbed');
      t.diagnostic(`A stopped ${aStopped - pausedAt} ms and B took over ${bStarted - pausedAt} ms into the partition; generation ${before.generation} → ${held.generation}`);
    } finally {
      watch.stop();
    }
    assert.deepEqual(watch.backwards, [], 'a backendsGeneration went backwards');
    assert.ok(sidecars.every((s) => (watch.latest.get(s.name) ?? 0) > 0), 'the generations were watched');
  });
});
