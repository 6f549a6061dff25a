// The operator's control loop: informers on WsBalancers, and on the EndpointSlices and Pods of their
// namespaces (caches.ts), feed a keyed work queue; each reconcile reads the caches and the sidecars,
// asks plan.ts what must change, pushes the backend set to every sidecar that differs, records events
// and writes status when it changed. Nothing is decided from a cache that has not listed yet: an
// empty cache would look like a Service without endpoints (every backend drained) or a revision
// without pods (the rollout's memory forgotten). Only the leader reconciles; a standby keeps its
// caches warm.
import { CoreV1Api, CustomObjectsApi, DiscoveryApi, PatchStrategy, setHeaderOptions, Watch, type KubeConfig } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import type { PutBackendsRequest } from '../common/admin/contract.js';
import type { Logger } from '../common/logger.js';
import { FINALIZER, GROUP, PLURAL, VERSION, validateSpec, type WsBalancer, type WsBalancerSpec, type WsBalancerStatus } from './api/wsbalancer.js';
import { canaryShares, desiredSplit } from './canary.js';
import { runCheckSet } from './checks.js';
import { ENDPOINTSLICE_SERVICE_LABEL, NamespaceCaches } from './caches.js';
import { EventRecorder } from './events.js';
import { Informer } from './informer.js';
import { LeaderElector, type LeaderElectionOptions } from './leader.js';
import type { OperatorMetrics } from './metrics.js';
import {
  buildStatus,
  collectEndpoints,
  desiredBackends,
  endpointPods,
  invalidSpecStatus,
  matchesSelector,
  podChanged,
  podsWithoutSidecar,
  sessionsByRevision,
  sidecarHolds,
  sidecarTargets,
  statusChanged,
  stepRollout,
  type PodView,
  type RolloutState,
  type SliceView,
} from './plan.js';
import { WorkQueue } from './queue.js';
import { observeSidecars, pushSidecars, type SidecarIo } from './sidecars.js';

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  /** Watch only this namespace; undefined = all namespaces. */
  namespace?: string;
  /** This replica's name in the lease and in events (the pod name in a cluster). */
  identity: string;
  /** null: no election, this replica always leads (a single replica, or tests). */
  leaderElection: Omit<LeaderElectionOptions, 'identity'> | null;
  /** A WsBalancer with nothing in motion is looked at again this often (catches missed changes). */
  resyncMs: number;
  sidecar: Omit<SidecarIo, 'token'>;
  /** WsBalancers reconciled at the same time. */
  concurrency: number;
  metrics: OperatorMetrics;
  log: Logger;
}

/** How long an admin token read from its Secret is reused. */
const TOKEN_CACHE_MS = 10_000;
/**
 * An endpoint whose pod is not cached yet (its event comes after the slice's) is looked at again
 * this soon; nothing is decided meanwhile, as its revision is unknown.
 */
const UNRESOLVED_RETRY_MS = 1000;
/** Pods still missing after this long get a Warning event: something else is wrong. */
const UNRESOLVED_WARN_MS = 30_000;

type Key = string;
const keyOf = (namespace: string, name: string): Key => `${namespace}/${name}`;

export class Controller {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly watch: Watch;
  private readonly events: EventRecorder;
  private readonly queue: WorkQueue;
  private readonly elector: LeaderElector | null;
  private balancers!: Informer<WsBalancer>;
  private caches!: NamespaceCaches;
  /** discovery.k8s.io version the server serves: v1, or v1beta1 before Kubernetes 1.21. */
  endpointSliceVersion = 'v1';
  /** The last backend set pushed per WsBalancer and its generation. */
  private readonly pushed = new Map<Key, { hash: string; generation: number }>();
  /** The object as this replica last wrote it: newer than the cache until the watch catches up. */
  private readonly written = new Map<Key, WsBalancer>();
  private readonly tokens = new Map<string, { token: string | undefined; readAt: number }>();
  /** The sidecars that failed the last sync, per WsBalancer: an event only when that changes. */
  private readonly syncFailures = new Map<Key, string>();
  /** The pods each WsBalancer's EndpointSlices named at its last reconcile: a pod's event reconciles only these. */
  private readonly backendPods = new Map<Key, ReadonlySet<string>>();
  /** Since when a WsBalancer has waited for pods its slices name (its Warning is recorded once). */
  private readonly unresolvedSince = new Map<Key, { since: number; warned: boolean }>();
  /** Per namespace, the pods last reported running without the sidecar (joined names). */
  private readonly withoutSidecar = new Map<string, string>();
  /** The last Warning that stopped each WsBalancer's reconcile: recorded again only when it changes. */
  private readonly stoppedBy = new Map<Key, string>();
  private readonly log: Logger;

  constructor(private readonly opts: ControllerOptions) {
    const kc = opts.kubeConfig;
    this.log = opts.log;
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
    this.watch = new Watch(kc);
    this.events = new EventRecorder(kc, opts.identity, opts.log);
    this.queue = new WorkQueue(
      { concurrency: opts.concurrency, retry: { initial: 200, max: 60_000 }, onDepth: (d) => opts.metrics.queueDepth.set(d) },
      (key) => this.process(key),
    );
    this.elector = opts.leaderElection
      ? new LeaderElector(kc, { identity: opts.identity, ...opts.leaderElection }, opts.log, (leading) => {
          opts.metrics.leader.set(leading ? 1 : 0);
          // A new leader looks at everything; one that lost the lease just stops acting.
          if (leading) this.enqueueAll();
        })
      : null;
  }

  get isLeader(): boolean {
    return this.elector ? this.elector.isLeader : true;
  }

  /** Every informer has listed once. */
  get isReady(): boolean {
    return Boolean(this.balancers?.isSynced && this.caches?.isSynced);
  }

  async start(): Promise<void> {
    this.endpointSliceVersion = await this.detectEndpointSliceVersion();
    const ns = this.opts.namespace;
    const restarted = (resource: string) => this.opts.metrics.informerRestarts.inc({ resource });

    this.balancers = new Informer<WsBalancer>({
      resource: 'wsbalancers',
      path: `/apis/${GROUP}/${VERSION}${ns ? `/namespaces/${ns}` : ''}/${PLURAL}`,
      list: ({ limit, continueToken }) =>
        ns
          ? this.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, limit, _continue: continueToken })
          : this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, limit, _continue: continueToken }),
      watch: this.watch,
      log: this.log,
      onRestart: () => restarted('wsbalancers'),
    });
    this.caches = new NamespaceCaches({
      kubeConfig: this.opts.kubeConfig,
      watch: this.watch,
      endpointSliceVersion: this.endpointSliceVersion,
      log: this.log,
      onSlice: (slice) => this.sliceChanged(slice),
      onPod: (pod, type, old) => this.podChanged(pod, type === 'modified' ? old : undefined),
      onSynced: (namespace) => this.enqueueNamespace(namespace),
      onRestart: restarted,
    });

    this.balancers.onChange((b, type) => {
      const namespace = b.metadata.namespace;
      if (type !== 'deleted') this.caches.ensure(namespace);
      else if (this.balancers.list(namespace).length === 0) {
        void this.caches.release(namespace);
        this.withoutSidecar.delete(namespace);
        this.opts.metrics.podsWithoutSidecar.remove({ namespace });
      }
      this.queue.add(keyOf(namespace, b.metadata.name));
    });
    this.balancers.start();
    this.elector?.start();
    if (!this.elector) this.opts.metrics.leader.set(1);
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.queue.idle();
    await Promise.all([this.balancers?.stop(), this.caches?.stop()]);
    await this.elector?.stop();
  }

  /** A slice reconciles the WsBalancers whose backend Service it belongs to. */
  private sliceChanged(slice: SliceView): void {
    const service = slice.metadata?.labels?.[ENDPOINTSLICE_SERVICE_LABEL];
    for (const b of this.balancers.list(slice.metadata?.namespace)) {
      if ((b.spec as Partial<WsBalancerSpec> | undefined)?.backend?.service === service) this.queue.add(keyOf(b.metadata.namespace, b.metadata.name));
    }
  }

  /**
   * A pod reconciles the WsBalancers it is a sidecar of (by their selectors, before or after the
   * change) or a backend of (named by their slices), and only when something the operator reads
   * changed: an unrelated pod of the namespace costs nothing.
   */
  private podChanged(pod: PodView, old: PodView | undefined): void {
    if (old && !podChanged(old, pod)) return;
    const name = pod.metadata?.name ?? '';
    for (const b of this.balancers.list(pod.metadata?.namespace)) {
      const key = keyOf(b.metadata.namespace, b.metadata.name);
      const selector = (b.spec as Partial<WsBalancerSpec> | undefined)?.sidecarSelector;
      const sidecar = selector !== undefined && (matchesSelector(pod.metadata?.labels, selector) || (old !== undefined && matchesSelector(old.metadata?.labels, selector)));
      if (sidecar || this.backendPods.get(key)?.has(name)) this.queue.add(key);
    }
  }

  private enqueueNamespace(namespace: string): void {
    for (const b of this.balancers.list(namespace)) this.queue.add(keyOf(b.metadata.namespace, b.metadata.name));
  }

  private enqueueAll(): void {
    for (const b of this.balancers?.list() ?? []) this.queue.add(keyOf(b.metadata.namespace, b.metadata.name));
  }

  private async detectEndpointSliceVersion(): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        const group = await this.opts.kubeConfig.makeApiClient(DiscoveryApi).getAPIGroup();
        return group.versions.some((v) => v.version === 'v1') ? 'v1' : 'v1beta1';
      } catch (err) {
        if (attempt >= 30) throw err;
        this.log.warn({ err: (err as Error).message }, 'cannot read the discovery.k8s.io API group yet; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  // ---- one reconcile ---------------------------------------------------------------------------

  private async process(key: Key): Promise<void> {
    if (!this.isLeader) return;
    const started = process.hrtime.bigint();
    try {
      const requeueAfterMs = await this.reconcile(key);
      this.queue.forget(key);
      if (requeueAfterMs !== undefined) this.queue.addAfter(key, requeueAfterMs);
    } catch (err) {
      const conflict = (err as { code?: number }).code === 409;
      this.opts.metrics.reconciles.inc({ result: conflict ? 'conflict' : 'error' });
      // A conflict only means the object moved on: look again at once, no backoff.
      if (conflict) this.queue.add(key);
      else {
        this.log.warn({ wsbalancer: key, err: (err as Error).message }, 'reconcile failed; retrying with backoff');
        this.queue.addRateLimited(key);
      }
    } finally {
      this.opts.metrics.reconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /** The newest copy of the object: the cache, or what this replica wrote if the watch lags. */
  private current(namespace: string, name: string): WsBalancer | undefined {
    const cached = this.balancers.get(namespace, name);
    const mine = this.written.get(keyOf(namespace, name));
    if (!cached || !mine || cached.metadata.uid !== mine.metadata.uid) return cached;
    // resourceVersions are etcd revisions; compared only to tell which of two copies is newer.
    return BigInt(mine.metadata.resourceVersion ?? '0') > BigInt(cached.metadata.resourceVersion ?? '0') ? mine : cached;
  }

  /** Returns when to look again (ms), or undefined for the regular resync. */
  private async reconcile(key: Key): Promise<number | undefined> {
    const [namespace, name] = key.split('/') as [string, string];
    const wsb = this.current(namespace, name);
    if (!wsb) {
      this.forget(key, namespace, name);
      return undefined;
    }
    if (wsb.metadata.deletionTimestamp) {
      // Sidecars keep serving their last backend set; nothing else to clean up.
      if (wsb.metadata.finalizers?.includes(FINALIZER)) await this.setFinalizer(wsb, false);
      this.forget(key, namespace, name);
      this.opts.metrics.reconciles.inc({ result: 'success' });
      return undefined;
    }
    if (!wsb.metadata.finalizers?.includes(FINALIZER)) {
      await this.setFinalizer(wsb, true);
      return 0;
    }

    const now = Date.now();
    const previous = wsb.status ?? {};
    const checked = validateSpec(wsb.spec);
    if (!checked.ok) {
      const status = invalidSpecStatus(previous, wsb.metadata.generation, checked.message, now);
      if (statusChanged(previous, status)) {
        await this.writeStatus(wsb, status);
        await this.events.record(wsb.metadata, 'Warning', 'InvalidSpec', checked.message);
      }
      this.opts.metrics.reconciles.inc({ result: 'invalid' });
      return undefined;
    }
    const spec = checked.spec;
    const annotations = wsb.metadata.annotations ?? {};

    // Nothing is decided from caches that have not listed: their synced callback reconciles again.
    const cache = this.caches.get(namespace);
    if (!cache?.isSynced) return undefined;
    const slices = cache.slices.list().filter((s) => s.metadata?.labels?.[ENDPOINTSLICE_SERVICE_LABEL] === spec.backend.service);
    const named = endpointPods(slices);
    this.backendPods.set(key, named);
    const missing = [...named].filter((pod) => !cache.pods.get(namespace, pod));
    if (missing.length > 0) return this.waitForPods(wsb, missing);
    this.unresolvedSince.delete(key);
    const endpoints = collectEndpoints(slices, (pod) => cache.pods.get(namespace, pod), spec);
    const targets = sidecarTargets(cache.pods.list(), namespace, spec);
    await this.notePodsWithoutSidecar(wsb, podsWithoutSidecar(cache.pods.list()));
    const io: SidecarIo = { ...this.opts.sidecar, token: await this.adminToken(wsb, spec), proceed: () => this.isLeader };

    const state: RolloutState = {
      activeRevision: previous.activeRevision,
      previewRevision: previous.previewRevision,
      previousRevision: previous.previousRevision,
      retiredRevisions: previous.retiredRevisions,
      abortedRevision: previous.abortedRevision,
      rollout: previous.rollout,
    };
    for (const k of Object.keys(state) as Array<keyof RolloutState>) if (state[k] === undefined) delete state[k];

    const observed = await observeSidecars(targets, io);
    const views = observed.flatMap((o) => (o.view ? [o.view] : []));
    const sessions = sessionsByRevision(views);
    const before = desiredBackends(spec, endpoints, state);
    const synced = observed.every((o) => o.view && sidecarHolds(o.view, before));

    const splits = observed.map((o) => o.view?.split);
    const rolloutInput = { spec, annotations, state, endpoints, sessionsByRevision: sessions, sidecarsSynced: synced, splits, now };
    let step = stepRollout(rolloutInput);
    if (step.checksDue && step.state.previewRevision !== undefined) {
      const ctx = { namespace, name, activeRevision: step.state.activeRevision, previewRevision: step.state.previewRevision };
      const canary = step.state.rollout?.canary;
      // A canary's analysis is recorded with its step: a later analysis step runs its own.
      const rollout = canary
        ? { ...step.state.rollout, canary: { ...canary, analysis: { step: canary.step, ...(await runCheckSet(spec.rollout.canary?.steps[canary.step]?.analysis, ctx)) } } }
        : { ...step.state.rollout, checks: await runCheckSet(spec.rollout.blueGreen.prePromotionChecks, ctx) };
      const first = step;
      step = stepRollout({ ...rolloutInput, state: { ...first.state, rollout } });
      step.events.unshift(...first.events);
    }

    // Push the backend set (and a canary's split) to every sidecar that does not hold it yet.
    const backends = desiredBackends(spec, endpoints, step.state);
    const split = desiredSplit(spec, step.state);
    const bg = spec.rollout.blueGreen;
    const drain = { rate: spec.rollout.canary && step.state.rollout?.canary ? spec.rollout.canary.migrationRate : bg.migrationRate, deadlineSeconds: bg.drainDeadlineSeconds };
    const hash = createHash('sha256').update(JSON.stringify({ backends, settings: spec.settings, drain, split })).digest('hex');
    let last = this.pushed.get(key);
    if (!last || last.hash !== hash) {
      const highest = Math.max(previous.backendsGeneration ?? 0, last?.generation ?? 0, ...views.map((v) => v.generation));
      last = { hash, generation: highest + 1 };
      this.pushed.set(key, last);
    }
    const body: PutBackendsRequest = { generation: last.generation, backends, settings: spec.settings, drain, ...(split ? { split } : {}) };
    const stale = observed.filter((o) => o.view && !(o.view.generation === last.generation && sidecarHolds(o.view, backends)));
    if (!this.isLeader) return undefined;
    if (backends.length === 0 && stale.some((o) => o.view!.backends.some((b) => b.state !== 'draining'))) await this.checkEmptySet(wsb, spec);
    this.stoppedBy.delete(key);
    const pushes = await pushSidecars(stale.map((o) => o.target), body, io);
    let failed = observed.filter((o) => !o.view).map((o) => `${o.target.name}: ${o.error}`);
    for (const p of pushes) {
      this.opts.metrics.pushes.inc({ result: p.ok ? 'success' : 'failure' });
      if (!p.ok) failed.push(`${p.target.name}: ${p.error}`);
    }
    const unreachable = failed.length;
    const failedNames = failed.map((f) => f.slice(0, f.indexOf(':'))).join();
    if (unreachable > 0 && this.syncFailures.get(key) !== failedNames) {
      failed = failed.slice(0, 5);
      await this.events.record(wsb.metadata, 'Warning', 'SidecarSyncFailed', `${unreachable} of ${targets.length} sidecars not synced: ${failed.join('; ')}`);
    }
    if (unreachable > 0) this.syncFailures.set(key, failedNames);
    else this.syncFailures.delete(key);

    const status = buildStatus({
      generation: wsb.metadata.generation,
      annotations,
      spec,
      previous,
      state: step.state,
      endpoints,
      sessionsByRevision: sessions,
      sidecars: { desired: targets.length, synced: targets.length - unreachable, unreachable },
      ...(split ? { canaryShares: canaryShares(observed.map((o) => ({ name: o.target.name, split: o.view?.split })), split.groups[0]!.value, split.groups[1]!.value) } : {}),
      backendsGeneration: last.generation,
      now,
    });
    if (!this.isLeader) return undefined;
    if (statusChanged(previous, status)) await this.writeStatus(wsb, status);
    this.opts.metrics.observeStatus(namespace, name, status);
    // Events only once the step they report is stored (a failed write repeats the step).
    for (const e of step.events) {
      this.opts.metrics.rolloutEvents.inc({ namespace, wsbalancer: name, reason: e.reason });
      await this.events.record(wsb.metadata, e.type, e.reason, e.note);
    }
    this.opts.metrics.reconciles.inc({ result: 'success' });
    if (unreachable > 0) throw Object.assign(new Error(`${unreachable} sidecars not synced`), { code: 503 });
    return step.requeueAfterMs ?? this.opts.resyncMs;
  }

  /**
   * Pods that asked for the sidecar and run without it (the webhook was not called: with
   * failurePolicy Ignore the API server lets them through): a gauge, and a Warning event naming
   * them whenever that list changes.
   */
  private async notePodsWithoutSidecar(wsb: WsBalancer, names: string[]): Promise<void> {
    const namespace = wsb.metadata.namespace;
    this.opts.metrics.podsWithoutSidecar.set({ namespace }, names.length);
    const joined = names.join();
    if (joined === (this.withoutSidecar.get(namespace) ?? '')) return;
    this.withoutSidecar.set(namespace, joined);
    if (names.length === 0) return;
    this.log.warn({ namespace, pods: names.slice(0, 5), count: names.length }, 'pods labelled for the sidecar run without it');
    await this.events.record(
      wsb.metadata,
      'Warning',
      'PodsWithoutSidecar',
      `${names.length} pods labelled baton.dev/inject=true run without the Baton sidecar (created while the injection webhook did not answer): ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}; recreate them (kubectl rollout restart)`,
    );
  }

  /**
   * The slices name pods the cache has not seen yet: nothing is decided (their revisions are
   * unknown) until they arrive; a Warning if that lasts.
   */
  private async waitForPods(wsb: WsBalancer, missing: string[]): Promise<number> {
    const key = keyOf(wsb.metadata.namespace, wsb.metadata.name);
    const now = Date.now();
    let wait = this.unresolvedSince.get(key);
    if (!wait) this.unresolvedSince.set(key, (wait = { since: now, warned: false }));
    if (!wait.warned && now - wait.since >= UNRESOLVED_WARN_MS) {
      wait.warned = true;
      const note = `the EndpointSlices of service ${(wsb.spec as Partial<WsBalancerSpec>).backend?.service} name pods that do not exist: ${missing.slice(0, 5).join(', ')}; the backend set is not changed until they do`;
      this.log.warn({ wsbalancer: key, pods: missing.slice(0, 5) }, 'endpoints name pods that are not there; waiting');
      await this.events.record(wsb.metadata, 'Warning', 'EndpointsUnresolved', note);
    }
    this.opts.metrics.reconciles.inc({ result: 'waiting' });
    return UNRESOLVED_RETRY_MS;
  }

  /**
   * An empty backend set would drain every backend of every sidecar. Before it is pushed the API is
   * asked directly (no cache) whether the Service truly has no endpoints; if it has some, the set is
   * refused: a Warning event, and the reconcile fails (retried with backoff).
   */
  private async checkEmptySet(wsb: WsBalancer, spec: WsBalancerSpec): Promise<void> {
    const { namespace, name } = wsb.metadata;
    const live = (await this.custom.listNamespacedCustomObject({
      group: 'discovery.k8s.io',
      version: this.endpointSliceVersion,
      namespace,
      plural: 'endpointslices',
      labelSelector: `${ENDPOINTSLICE_SERVICE_LABEL}=${spec.backend.service}`,
    })) as { items: SliceView[] };
    const endpoints = live.items.reduce((n, s) => n + (s.endpoints?.filter((e) => e.addresses.length > 0).length ?? 0), 0);
    if (endpoints === 0) return;
    this.log.warn({ wsbalancer: keyOf(namespace, name), endpoints }, 'refused an empty backend set; the cache disagrees with the API');
    await this.giveUp(wsb, 'BackendSetRefused', `refused to push an empty backend set: service ${spec.backend.service} has ${endpoints} endpoints in the API that the operator's cache does not show`);
  }

  /** Ends the reconcile with an error (retried with backoff) and a Warning event, unless the same one was just recorded. */
  private async giveUp(wsb: WsBalancer, reason: 'BackendSetRefused' | 'AdminTokenUnreadable', note: string): Promise<never> {
    const key = keyOf(wsb.metadata.namespace, wsb.metadata.name);
    if (this.stoppedBy.get(key) !== `${reason}: ${note}`) {
      this.stoppedBy.set(key, `${reason}: ${note}`);
      await this.events.record(wsb.metadata, 'Warning', reason, note);
    }
    throw new Error(note);
  }

  private forget(key: Key, namespace: string, name: string): void {
    this.pushed.delete(key);
    this.syncFailures.delete(key);
    this.written.delete(key);
    this.backendPods.delete(key);
    this.unresolvedSince.delete(key);
    this.stoppedBy.delete(key);
    this.opts.metrics.forget(namespace, name);
  }

  private async setFinalizer(wsb: WsBalancer, present: boolean): Promise<void> {
    const others = (wsb.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
    const updated = (await this.custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace: wsb.metadata.namespace,
        plural: PLURAL,
        name: wsb.metadata.name,
        // The resourceVersion makes this a compare-and-swap: a conflict reconciles again.
        body: { metadata: { finalizers: present ? [...others, FINALIZER] : others, resourceVersion: wsb.metadata.resourceVersion } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as WsBalancer;
    this.written.set(keyOf(wsb.metadata.namespace, wsb.metadata.name), updated);
  }

  private async writeStatus(wsb: WsBalancer, status: WsBalancerStatus): Promise<void> {
    const updated = (await this.custom.replaceNamespacedCustomObjectStatus({
      group: GROUP,
      version: VERSION,
      namespace: wsb.metadata.namespace,
      plural: PLURAL,
      name: wsb.metadata.name,
      body: { ...wsb, status },
    })) as WsBalancer;
    this.written.set(keyOf(wsb.metadata.namespace, wsb.metadata.name), updated);
  }

  private async adminToken(wsb: WsBalancer, spec: WsBalancerSpec): Promise<string | undefined> {
    const ref = spec.sidecar.adminTokenSecretRef;
    if (!ref) return undefined;
    const namespace = wsb.metadata.namespace;
    const cacheKey = `${namespace}/${ref.name}/${ref.key}`;
    const cached = this.tokens.get(cacheKey);
    if (cached && Date.now() - cached.readAt < TOKEN_CACHE_MS) return cached.token;
    let secret;
    try {
      secret = await this.core.readNamespacedSecret({ namespace, name: ref.name });
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (code !== 403 && code !== 404) throw err;
      const why =
        code === 403
          ? 'the operator may not read it: it reads only the Secrets named in the chart value rbac.adminTokenSecretNames'
          : 'it does not exist';
      return this.giveUp(wsb, 'AdminTokenUnreadable', `cannot read the admin token Secret ${namespace}/${ref.name} (spec.sidecar.adminTokenSecretRef): ${why}`);
    }
    const encoded = secret.data?.[ref.key];
    if (encoded === undefined) return this.giveUp(wsb, 'AdminTokenUnreadable', `secret ${namespace}/${ref.name} has no key "${ref.key}" (spec.sidecar.adminTokenSecretRef.key)`);
    const token = Buffer.from(encoded, 'base64').toString('utf8').trim();
    this.tokens.set(cacheKey, { token, readAt: Date.now() });
    return token;
  }
}
