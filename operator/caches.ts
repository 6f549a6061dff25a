// The caches of the namespaces that hold WsBalancers: each one's EndpointSlices and Pods, listed and
// watched in that namespace only and kept as projections (plan.ts's SliceView and PodView). Pods of
// other namespaces are never listed, so the operator's memory follows what it balances, not the size
// of the cluster. A namespace's caches start with its first WsBalancer and stop with its last.
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type Watch } from '@kubernetes/client-node';
import type { Logger } from '../common/logger.js';
import { Informer, type ChangeHandler } from './informer.js';
import { podView, sliceView, type PodView, type SliceView } from './plan.js';

export const ENDPOINTSLICE_SERVICE_LABEL = 'kubernetes.io/service-name';

/** One namespace's caches. */
export interface NamespaceCache {
  readonly slices: Informer<SliceView>;
  readonly pods: Informer<PodView>;
  /** Both have listed at least once: only then may anything be decided from them. */
  readonly isSynced: boolean;
}

export interface NamespaceCachesOptions {
  kubeConfig: KubeConfig;
  watch: Watch;
  /** discovery.k8s.io version the server serves: v1, or v1beta1 before Kubernetes 1.21. */
  endpointSliceVersion: string;
  log: Logger;
  onSlice: ChangeHandler<SliceView>;
  onPod: ChangeHandler<PodView>;
  /** A namespace's caches have both listed for the first time. */
  onSynced: (namespace: string) => void;
  /** An informer recovered from an error (for the restarts metric). */
  onRestart: (resource: string) => void;
}

export class NamespaceCaches {
  private readonly byNamespace = new Map<string, NamespaceCache>();
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;

  constructor(private readonly opts: NamespaceCachesOptions) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  get(namespace: string): NamespaceCache | undefined {
    return this.byNamespace.get(namespace);
  }

  /** Every namespace's caches have synced. */
  get isSynced(): boolean {
    for (const c of this.byNamespace.values()) if (!c.isSynced) return false;
    return true;
  }

  /** Starts the namespace's caches unless they run. */
  ensure(namespace: string): NamespaceCache {
    const running = this.byNamespace.get(namespace);
    if (running) return running;
    const { watch, log, endpointSliceVersion: version } = this.opts;
    const slices = new Informer<SliceView>({
      resource: 'endpointslices',
      path: `/apis/discovery.k8s.io/${version}/namespaces/${namespace}/endpointslices`,
      list: ({ limit, continueToken }) =>
        this.custom.listNamespacedCustomObject({
          group: 'discovery.k8s.io',
          version,
          namespace,
          plural: 'endpointslices',
          labelSelector: ENDPOINTSLICE_SERVICE_LABEL,
          limit,
          _continue: continueToken,
        }),
      labelSelector: ENDPOINTSLICE_SERVICE_LABEL,
      project: sliceView,
      watch,
      log,
      onRestart: () => this.opts.onRestart('endpointslices'),
    });
    const pods = new Informer<PodView>({
      resource: 'pods',
      path: `/api/v1/namespaces/${namespace}/pods`,
      list: ({ limit, continueToken }) => this.core.listNamespacedPod({ namespace, limit, _continue: continueToken }),
      project: podView,
      watch,
      log,
      onRestart: () => this.opts.onRestart('pods'),
    });
    const cache: NamespaceCache = {
      slices,
      pods,
      get isSynced() {
        return slices.isSynced && pods.isSynced;
      },
    };
    this.byNamespace.set(namespace, cache);
    slices.onChange(this.opts.onSlice);
    pods.onChange(this.opts.onPod);
    void Promise.all([slices.synced, pods.synced]).then(() => {
      if (this.byNamespace.get(namespace) === cache) this.opts.onSynced(namespace);
    });
    slices.start();
    pods.start();
    return cache;
  }

  /** Stops the namespace's caches (its last WsBalancer is gone). */
  async release(namespace: string): Promise<void> {
    const cache = this.byNamespace.get(namespace);
    if (!cache) return;
    this.byNamespace.delete(namespace);
    await Promise.all([cache.slices.stop(), cache.pods.stop()]);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.byNamespace.keys()].map((ns) => this.release(ns)));
  }
}
