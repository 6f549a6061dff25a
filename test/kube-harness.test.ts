// The operator tests' Kubernetes harness itself: a real 1.20 control plane plus FakeKubelet running a
// Deployment behind a Service, EndpointSlices following scale and deletion, ServiceAccount tokens, and
// an apiserver restart.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  AppsV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type KubernetesObject,
  type V1Pod,
} from '@kubernetes/client-node';
import { waitFor } from './helpers.js';
import { eventually, startControlPlane, type ControlPlane } from './kube/control-plane.js';
import { FakeKubelet } from './kube/kubelet.js';

const ns = 'harness';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

interface SliceEndpoint {
  addresses: string[];
  conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
}

/** PIDs whose parent is this process. */
function childPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .flatMap((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid === process.pid ? [Number(d)] : [];
      } catch {
        return []; // exited while listing
      }
    });
}

describe('kube harness', () => {
  let cp: ControlPlane;
  let kubelet: FakeKubelet;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let objects: KubernetesObjectApi;
  let startupMs = 0;
  // A real listener per pod IP, as an operator test would run a sidecar there.
  const servers = new Map<string, Server>();
  // Lets a test hold a pod in its terminating state (the kubelet awaits the stop hook).
  let holdStop: ((pod: V1Pod) => Promise<void>) | undefined;

  before(async () => {
    const t0 = Date.now();
    cp = await startControlPlane();
    startupMs = Date.now() - t0;
    core = cp.kubeConfig().makeApiClient(CoreV1Api);
    apps = cp.kubeConfig().makeApiClient(AppsV1Api);
    objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig());
    await cp.ensureNamespace(ns);
    kubelet = await FakeKubelet.start(cp.kubeConfig(), { namespaces: [ns] });
    kubelet.onPodStart(async (_pod, ip) => {
      const server = createServer((s) => s.end());
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(8080, ip, resolve));
      servers.set(ip, server);
    });
    kubelet.onPodStop(async (pod, ip) => {
      await holdStop?.(pod);
      await new Promise((r) => servers.get(ip)?.close(r) ?? r(undefined));
      servers.delete(ip);
    });
  });

  after(async () => {
    await kubelet?.stop();
    await cp?.stop();
    for (const s of servers.values()) s.close();
    assert.deepEqual(childPids(), [], 'control-plane processes left running');
  });

  async function pods(): Promise<V1Pod[]> {
    return (await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' })).items;
  }

  async function sliceEndpoints(): Promise<SliceEndpoint[]> {
    const list = await objects.list<KubernetesObject & { endpoints?: SliceEndpoint[] | null }>(
      'discovery.k8s.io/v1beta1',
      'EndpointSlice',
      ns,
      undefined,
      undefined,
      undefined,
      undefined,
      'kubernetes.io/service-name=web',
    );
    return list.items.flatMap((s) => s.endpoints ?? []);
  }

  /** Waits until the Service's slices list exactly `n` endpoints, all ready; returns their IPs. */
  async function readySliceIps(n: number): Promise<string[]> {
    return eventually(async () => {
      const eps = await sliceEndpoints();
      const ready = eps.filter((e) => e.conditions?.ready).flatMap((e) => e.addresses);
      return eps.length === n && ready.length === n ? ready.sort() : undefined;
    }, `${n} ready endpoints in the slices of Service web`, 20_000);
  }

  async function scale(replicas: number): Promise<void> {
    await apps.patchNamespacedDeployment({ namespace: ns, name: 'web', body: { spec: { replicas } } }, mergePatch);
  }

  test('a Deployment behind a Service gets bound, Ready pods on distinct loopback IPs', async (t) => {
    t.diagnostic(`control plane ready in ${startupMs} ms`);
    const labels = { app: 'web' };
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 2,
          selector: { matchLabels: labels },
          template: { metadata: { labels }, spec: { containers: [{ name: 'web', image: 'example.invalid/web:1', ports: [{ containerPort: 8080 }] }] } },
        },
      },
    });
    await core.createNamespacedService({
      namespace: ns,
      body: { metadata: { name: 'web' }, spec: { selector: labels, ports: [{ port: 80, targetPort: 8080 }] } },
    });

    const running = await eventually(async () => {
      const ps = await pods();
      const ok = ps.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return ps.length === 2 && ok.length === 2 ? ps : undefined;
    }, '2 Ready pods', 20_000);
    const ips = running.map((p) => p.status!.podIP!);
    assert.equal(new Set(ips).size, 2);
    for (const p of running) {
      assert.equal(p.spec!.nodeName, kubelet.nodeName);
      assert.match(p.status!.podIP!, /^127\./);
      assert.equal(p.status!.phase, 'Running');
      assert.equal(kubelet.ipOf(p.metadata!.name!, ns), p.status!.podIP);
      assert.ok(servers.has(p.status!.podIP!), 'the start hook ran before Ready');
    }
    assert.deepEqual(await readySliceIps(2), ips.sort());
  });

  test('EndpointSlices follow scaling', async () => {
    await scale(3);
    const three = await readySliceIps(3);
    await scale(1);
    const [one] = await readySliceIps(1);
    assert.ok(three.includes(one!));
    assert.equal(servers.size, 1, 'the stop hook ran for the scaled-down pods');
  });

  test('a deleted pod is terminating in the slice until the kubelet removes it', async () => {
    const [victim] = await pods();
    const ip = victim!.status!.podIP!;
    let seen: SliceEndpoint | undefined;
    holdStop = async (pod) => {
      if (pod.metadata!.name !== victim!.metadata!.name) return;
      // While the stop hook runs, the pod has a deletionTimestamp and is still Ready (as while a real
      // kubelet runs preStop). With EndpointSliceTerminatingCondition on, 1.20's controller keeps such a pod
      // in the slice (ShouldPodBeInEndpointSlice includes terminating pods) as ready=false, serving=true
      // (serving mirrors the pod's Ready condition), terminating=true.
      seen = await eventually(async () => {
        const ep = (await sliceEndpoints()).find((e) => e.addresses.includes(ip));
        return ep?.conditions?.terminating ? ep : undefined;
      }, 'the deleted pod as a terminating endpoint', 20_000);
    };
    try {
      await core.deleteNamespacedPod({ namespace: ns, name: victim!.metadata!.name! });
      // The ReplicaSet replaces it; once FakeKubelet deleted the old pod, the slice drops its address.
      const [replacement] = await readySliceIps(1);
      assert.notEqual(replacement, ip);
    } finally {
      holdStop = undefined;
    }
    assert.deepEqual(seen?.conditions, { ready: false, serving: true, terminating: true });
    await waitFor(() => kubelet.ipOf(victim!.metadata!.name!, ns) === undefined, 'FakeKubelet to forget the deleted pod');
  });

  test('readiness flips and container restarts show in the pod and the slice', async () => {
    const [pod] = await pods();
    const name = pod!.metadata!.name!;
    await kubelet.setReady(ns, name, false);
    await eventually(async () => ((await sliceEndpoints())[0]?.conditions?.ready === false ? true : undefined), 'endpoint not ready');
    await kubelet.setReady(ns, name, true);
    await readySliceIps(1);
    await kubelet.restartContainer(ns, name);
    const [status] = (await core.readNamespacedPod({ namespace: ns, name })).status!.containerStatuses!;
    assert.equal(status!.restartCount, 1);
    assert.equal(status!.ready, true);
  });

  test('a ServiceAccount token authenticates (403, not 401)', async () => {
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'reader' } } });
    const token = await cp.serviceAccountToken(ns, 'reader');
    const asReader = cp.kubeConfig(token).makeApiClient(CoreV1Api);
    await assert.rejects(asReader.listNamespacedSecret({ namespace: ns }), (err: { code?: number; body?: string }) => {
      assert.equal(err.code, 403);
      assert.match(String(err.body), new RegExp(`system:serviceaccount:${ns}:reader`));
      return true;
    });
    const asNobody = cp.kubeConfig('not-a-token').makeApiClient(CoreV1Api);
    await assert.rejects(asNobody.listNamespacedSecret({ namespace: ns }), { code: 401 });
  });

  test('after an apiserver restart, old watches get 410 Gone and the kubelet keeps working', async () => {
    const listed = await core.listNamespacedPod({ namespace: ns });
    await cp.restartApiServer();
    assert.ok((await core.listNamespacedPod({ namespace: ns })).items.length >= 1);

    // The restarted apiserver's watch cache starts at the current etcd revision, so an older one is expired.
    let settle!: (status: { code?: number } | Error) => void;
    const status = new Promise<{ code?: number } | Error>((resolve) => (settle = resolve));
    const watch = await new Watch(cp.kubeConfig()).watch(
      `/api/v1/namespaces/${ns}/pods`,
      { resourceVersion: listed.metadata!.resourceVersion },
      (type, obj) => type === 'ERROR' && settle(obj as { code?: number }),
      (err) => settle(err ?? new Error('watch ended without an ERROR event')),
    );
    try {
      const got = await status;
      if (got instanceof Error) throw got;
      assert.equal(got.code, 410);
    } finally {
      watch.abort();
    }

    await scale(2);
    await readySliceIps(2);
  });
});
