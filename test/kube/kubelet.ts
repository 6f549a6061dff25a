// Plays the scheduler and a kubelet through the API, so pods of a real control plane "run" without
// containers: it binds pending pods to its Node, gives each a loopback IP (a test can start a real
// process on it from a hook), reports them Running/Ready, and finishes graceful deletions.
import {
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { apiCode } from './control-plane.js';

export type PodHook = (pod: V1Pod, ip: string) => Promise<void>;

export interface FakeKubeletOptions {
  /** Default "fake-node". */
  nodeName?: string;
  /** Only pods in these namespaces are scheduled and run. */
  namespaces: string[];
  /** Picks a pod's IP; undefined (or no function) takes the next of 127.P.0.1, 127.P.0.2, ... (P from the PID). */
  ipFor?: (pod: V1Pod) => string | undefined;
}

/** What this node reports for a pod it runs. */
interface PodState {
  uid: string;
  ip: string;
  ready: boolean;
  /** Restart count of each container that has restarted. */
  restarts: Map<string, number>;
  startTime: string;
  started: boolean;
  stopped: boolean;
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

// Module-wide, so two FakeKubelets in one test process never hand out the same address; the second octet
// comes from the PID so that test runs going on at the same time (which all bind the same ports) rarely meet.
const ipPrefix = `127.${1 + (process.pid % 254)}`;
let nextIp = 0;
function allocateIp(): string {
  const n = nextIp++;
  return `${ipPrefix}.${Math.floor(n / 254)}.${(n % 254) + 1}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A hook failure: reported, not retried (the hook may not be idempotent). */
class HookError extends Error {}

export class FakeKubelet {
  readonly nodeName: string;
  private readonly core: CoreV1Api;
  private readonly watcher: Watch;
  private readonly namespaces: Set<string>;
  private readonly pods = new Map<string, PodState>();
  /** Tail of each pod's work queue: all work on one pod runs in order. */
  private readonly queues = new Map<string, Promise<void>>();
  /** Pods with a reconcile queued but not started (further events need no second one). */
  private readonly pending = new Set<string>();
  private startHook: PodHook | undefined;
  private stopHook: PodHook | undefined;
  private stopped = false;
  private watchAbort: AbortController | undefined;
  private loop: Promise<void> | undefined;

  private constructor(
    kc: KubeConfig,
    private readonly opts: FakeKubeletOptions,
  ) {
    this.nodeName = opts.nodeName ?? 'fake-node';
    this.core = kc.makeApiClient(CoreV1Api);
    this.watcher = new Watch(kc);
    this.namespaces = new Set(opts.namespaces);
  }

  static async start(kc: KubeConfig, opts: FakeKubeletOptions): Promise<FakeKubelet> {
    const kubelet = new FakeKubelet(kc, opts);
    await kubelet.registerNode();
    kubelet.loop = kubelet.listAndWatch();
    return kubelet;
  }

  /** Awaited before a pod is reported Ready: start whatever serves the pod on `ip` here. */
  onPodStart(hook: PodHook): void {
    this.startHook = hook;
  }

  /** Awaited when a pod is being deleted, while it is still Ready (its preStop and SIGTERM): stop its process here. */
  onPodStop(hook: PodHook): void {
    this.stopHook = hook;
  }

  ipOf(podName: string, namespace?: string): string | undefined {
    if (namespace !== undefined) return this.pods.get(`${namespace}/${podName}`)?.ip;
    for (const [key, st] of this.pods) if (key.endsWith(`/${podName}`)) return st.ip;
    return undefined;
  }

  /** Flips the pod's readiness, as a readiness probe would. */
  setReady(namespace: string, podName: string, ready: boolean): Promise<void> {
    return this.serial(`${namespace}/${podName}`, async () => {
      const st = this.started(namespace, podName);
      st.ready = ready;
      await this.writeStatus(await this.core.readNamespacedPod({ namespace, name: podName }), st);
    });
  }

  /** A container (default: the first) exits and is restarted: not Ready with a higher restartCount, then Ready. */
  restartContainer(namespace: string, podName: string, container?: string): Promise<void> {
    return this.serial(`${namespace}/${podName}`, async () => {
      const st = this.started(namespace, podName);
      const pod = await this.core.readNamespacedPod({ namespace, name: podName });
      const name = container ?? pod.spec!.containers[0]!.name;
      st.restarts.set(name, (st.restarts.get(name) ?? 0) + 1);
      st.ready = false;
      await this.writeStatus(pod, st);
      st.ready = true;
      await this.writeStatus(pod, st);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watchAbort?.abort();
    await this.loop;
    await Promise.all(this.queues.values());
  }

  private started(namespace: string, podName: string): PodState {
    const st = this.pods.get(`${namespace}/${podName}`);
    if (!st?.started) throw new Error(`pod ${namespace}/${podName} is not running on ${this.nodeName}`);
    return st;
  }

  private async registerNode(): Promise<void> {
    const now = new Date();
    const status = {
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', lastHeartbeatTime: now, lastTransitionTime: now }],
      addresses: [{ type: 'InternalIP', address: '127.0.0.1' }],
      capacity: { cpu: '64', memory: '256Gi', pods: '1000' },
      allocatable: { cpu: '64', memory: '256Gi', pods: '1000' },
    };
    try {
      await this.core.createNode({ body: { metadata: { name: this.nodeName, labels: { 'kubernetes.io/hostname': this.nodeName } }, status } });
    } catch (err) {
      if (apiCode(err) !== 409) throw err;
      // Left by an earlier FakeKubelet: report it Ready again (status is only writable through /status).
      await this.core.patchNodeStatus({ name: this.nodeName, body: { status } }, mergePatch);
    }
  }

  /** Lists, then watches from that list; any watch end or error (410 Gone, apiserver restart) relists. */
  private async listAndWatch(): Promise<void> {
    while (!this.stopped) {
      try {
        const list = await this.core.listPodForAllNamespaces({});
        const listed = new Set<string>();
        for (const pod of list.items) {
          listed.add(`${pod.metadata!.namespace}/${pod.metadata!.name}`);
          this.kick(pod.metadata!.namespace!, pod.metadata!.name!);
        }
        // Pods deleted while no watch was open get no event.
        for (const key of this.pods.keys()) if (!listed.has(key)) this.kick(...splitKey(key));
        await this.watchFrom(list.metadata!.resourceVersion!);
      } catch {
        if (!this.stopped) await sleep(200);
      }
    }
  }

  private watchFrom(resourceVersion: string): Promise<void> {
    return new Promise((resolve) => {
      const onEvent = (type: string, obj: { metadata?: { namespace?: string; name?: string } }) => {
        // ERROR (e.g. 410 Gone) is followed by the server ending the stream; BOOKMARK names no pod.
        if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
        this.kick(obj.metadata!.namespace!, obj.metadata!.name!);
      };
      // The server ends the watch before client-node's 30 s inactivity timeout would.
      const query = { resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 25 };
      this.watcher.watch('/api/v1/pods', query, onEvent, () => resolve()).then(
        (abort) => {
          this.watchAbort = abort;
          if (this.stopped) abort.abort();
        },
        () => resolve(),
      );
    });
  }

  private kick(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (this.stopped || !this.namespaces.has(namespace) || this.pending.has(key)) return;
    this.pending.add(key);
    void this.serial(key, async () => {
      this.pending.delete(key);
      await this.reconcile(namespace, name);
    }).catch(() => {}); // reconcile reports its own failures
  }

  private serial(key: string, work: () => Promise<void>): Promise<void> {
    const result = (this.queues.get(key) ?? Promise.resolve()).then(work);
    const tail = result.catch(() => {});
    this.queues.set(key, tail);
    void tail.then(() => {
      if (this.queues.get(key) === tail) this.queues.delete(key);
    });
    return result;
  }

  /** Retries API failures (conflicts, an apiserver restarting) until it succeeds or the kubelet stops. */
  private async reconcile(namespace: string, name: string): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        return await this.reconcileOnce(namespace, name);
      } catch (err) {
        if (err instanceof HookError) {
          console.error(`FakeKubelet: ${err.message}`);
          return;
        }
        if (attempt === 10) console.error(`FakeKubelet: pod ${namespace}/${name} still failing, retrying:`, err);
        await sleep(200);
      }
    }
  }

  /** Moves one pod a step towards what a scheduler plus kubelet would make of it, from a fresh read. */
  private async reconcileOnce(namespace: string, name: string): Promise<void> {
    const key = `${namespace}/${name}`;
    let pod: V1Pod;
    try {
      pod = await this.core.readNamespacedPod({ namespace, name });
    } catch (err) {
      if (apiCode(err) !== 404) throw err;
      this.pods.delete(key);
      return;
    }
    const uid = pod.metadata!.uid!;
    let st = this.pods.get(key);
    if (st && st.uid !== uid) {
      this.pods.delete(key); // a new pod with the old one's name
      st = undefined;
    }
    const nodeName = pod.spec!.nodeName;
    if (nodeName && nodeName !== this.nodeName) return;
    if (pod.metadata!.deletionTimestamp) return this.terminate(pod, st);
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;

    if (!nodeName) {
      // As the scheduler does; a 409 means it was bound meanwhile, and the retry rereads it.
      await this.core.createNamespacedPodBinding({
        namespace,
        name,
        body: { metadata: { name }, target: { apiVersion: 'v1', kind: 'Node', name: this.nodeName } },
      });
    }
    if (!st) {
      const running = pod.status?.phase === 'Running' && pod.status.podIP;
      st = {
        uid,
        ip: running ? pod.status!.podIP! : (this.opts.ipFor?.(pod) ?? allocateIp()),
        ready: running ? pod.status!.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true : true,
        restarts: new Map(),
        startTime: pod.status?.startTime?.toISOString() ?? new Date().toISOString(),
        started: Boolean(running), // already run by this node before (an earlier FakeKubelet)
        stopped: false,
      };
      this.pods.set(key, st);
    }
    if (!st.started) {
      try {
        await this.startHook?.(pod, st.ip);
      } catch (err) {
        throw new HookError(`onPodStart(${key}, ${st.ip}) failed, pod left pending: ${String(err)}`);
      }
      st.started = true;
    }
    await this.writeStatus(pod, st);
  }

  /** A graceful deletion: not Ready, the stop hook, then removal (as kubelet does once containers are gone). */
  private async terminate(pod: V1Pod, st: PodState | undefined): Promise<void> {
    const { namespace, name, uid } = pod.metadata! as { namespace: string; name: string; uid: string };
    if (st?.started && !st.stopped) {
      // As a real kubelet: the pod stays Ready while it shuts down (preStop, then SIGTERM), so its
      // endpoint is serving and terminating until the containers have stopped.
      try {
        await this.stopHook?.(pod, st.ip);
      } catch (err) {
        console.error(`FakeKubelet: onPodStop(${namespace}/${name}, ${st.ip}) failed, deleting the pod anyway:`, err);
      }
      st.stopped = true;
      st.ready = false;
      await this.writeStatus(pod, st);
    }
    try {
      // With a body the apiserver ignores the query parameters, so the grace period goes in the body.
      await this.core.deleteNamespacedPod({ namespace, name, body: { gracePeriodSeconds: 0, preconditions: { uid } } });
    } catch (err) {
      if (apiCode(err) !== 404) throw err;
    }
  }

  /** Merge-patches the pod's status to what `st` says, unless it already says so. */
  private async writeStatus(pod: V1Pod, st: PodState): Promise<void> {
    const status = pod.status;
    const ready = status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    const restartsShown = (status?.containerStatuses ?? []).every((c) => c.restartCount === (st.restarts.get(c.name) ?? 0));
    if (status?.phase === 'Running' && status.podIP === st.ip && ready === st.ready && restartsShown) return;

    const now = new Date().toISOString();
    const condition = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: now });
    const containerStatuses = pod.spec!.containers.map((c) => {
      const restartCount = st.restarts.get(c.name) ?? 0;
      return {
        name: c.name,
        image: c.image ?? '',
        imageID: '',
        containerID: `fake://${st.uid}/${c.name}/${restartCount}`,
        ready: st.ready,
        started: true,
        restartCount,
        state: { running: { startedAt: now } },
        lastState: restartCount > 0 ? { terminated: { exitCode: 1, reason: 'Error', startedAt: st.startTime, finishedAt: now } } : {},
      };
    });
    const body = {
      status: {
        phase: 'Running',
        hostIP: '127.0.0.1',
        podIP: st.ip,
        podIPs: [{ ip: st.ip }],
        startTime: st.startTime,
        conditions: [
          condition('Initialized', true),
          condition('PodScheduled', true),
          condition('ContainersReady', st.ready),
          condition('Ready', st.ready),
        ],
        containerStatuses,
      },
    };
    await this.core.patchNamespacedPodStatus({ namespace: pod.metadata!.namespace!, name: pod.metadata!.name!, body }, mergePatch);
  }
}

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}
