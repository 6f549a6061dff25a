// The operator's decisions, as pure functions of what the caches and the sidecars show: which
// endpoints a WsBalancer has, which backend set every sidecar must hold, the next blue/green step,
// and the status to write. No sockets, no API calls: reconcile.ts feeds these and carries them out.
import type { V1EndpointSlice, V1LabelSelector } from '@kubernetes/client-node';
import type { BackendInput, BackendsResponse, SplitView } from '../common/admin/contract.js';
import { BACKEND_DEFAULTS } from '../common/config/backend.js';
import type { BackendState } from '../common/vocabulary.js';
import {
  ANNOTATIONS,
  type CanaryShare,
  type Condition,
  type ConditionType,
  type Phase,
  type RevisionStatus,
  type RolloutStatus,
  type WsBalancerSpec,
  type WsBalancerStatus,
} from './api/wsbalancer.js';
import { INJECT_LABEL, SIDECAR_LABEL } from './webhook/inject.js';
import { canaryRunning, stepCanary } from './canary.js';
import { isPaused, PROGRESS_POLL_MS, type RolloutEvent, type RolloutState, type RolloutStep } from './rollout.js';

export { isPaused, PROGRESS_POLL_MS, ROLLOUT_REASONS, type RolloutEvent, type RolloutReason, type RolloutState, type RolloutStep } from './rollout.js';

// ---- label selectors ---------------------------------------------------------------------------

/** Kubernetes label-selector semantics; an empty selector matches everything. */
export function matchesSelector(labels: Record<string, string> | undefined, selector: V1LabelSelector): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(l, e.key);
    const inValues = has && (e.values ?? []).includes(l[e.key]!);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

// ---- what the caches keep ----------------------------------------------------------------------

/** The fields of a Pod the operator reads: all its pod cache keeps (a V1Pod is one too). */
export interface PodView {
  metadata?: { namespace?: string; name?: string; resourceVersion?: string; labels?: Record<string, string> };
  status?: { podIP?: string; phase?: string };
}

/** The fields of an EndpointSlice the operator reads (a V1EndpointSlice is one too). */
export type SliceView = Pick<V1EndpointSlice, 'metadata' | 'ports' | 'endpoints'>;

/** A Pod as the cache keeps it: a few hundred bytes instead of the several KiB the API serves. */
export function podView(raw: unknown): PodView {
  const pod = raw as { metadata?: Record<string, unknown> & PodView['metadata']; status?: PodView['status'] };
  const m = pod.metadata ?? {};
  return {
    metadata: { namespace: m.namespace, name: m.name, resourceVersion: m.resourceVersion, labels: m.labels },
    status: { podIP: pod.status?.podIP, phase: pod.status?.phase },
  };
}

/** An EndpointSlice as the cache keeps it: without managedFields and the fields not read. */
export function sliceView(raw: unknown): SliceView {
  const slice = raw as V1EndpointSlice;
  const m = slice.metadata ?? {};
  return {
    metadata: { namespace: m.namespace, name: m.name, resourceVersion: m.resourceVersion, labels: m.labels },
    ports: slice.ports,
    endpoints: (slice.endpoints ?? []).map((ep) => ({
      addresses: ep.addresses,
      conditions: ep.conditions,
      ...(ep.targetRef ? { targetRef: { kind: ep.targetRef.kind, name: ep.targetRef.name } } : {}),
    })),
  };
}

/** Whether two cached pods differ in anything the operator reads (not merely their resourceVersion). */
export function podChanged(a: PodView, b: PodView): boolean {
  const am = a.metadata ?? {};
  const bm = b.metadata ?? {};
  return a.status?.podIP !== b.status?.podIP || a.status?.phase !== b.status?.phase || !sameRecord(am.labels ?? {}, bm.labels ?? {});
}

/** The pods the slices' endpoints name: the backend pods of a WsBalancer, resolved or not. */
export function endpointPods(slices: readonly SliceView[]): Set<string> {
  const out = new Set<string>();
  for (const slice of slices) for (const ep of slice.endpoints ?? []) if (ep.targetRef?.kind === 'Pod' && ep.targetRef.name) out.add(ep.targetRef.name);
  return out;
}

// ---- sidecars ----------------------------------------------------------------------------------

/**
 * Pods that asked for the sidecar (labelled INJECT_LABEL "true") but were created without it: the
 * webhook adds SIDECAR_LABEL when it injects, so its absence means the API server could not call
 * it (down, or timed out) and let the pod through (failurePolicy Ignore). Finished pods are left out.
 */
export function podsWithoutSidecar(pods: readonly PodView[]): string[] {
  return pods
    .filter((p) => p.metadata?.labels?.[INJECT_LABEL] === 'true' && p.metadata.labels[SIDECAR_LABEL] !== 'true' && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed')
    .map((p) => p.metadata!.name!)
    .sort();
}

export interface SidecarTarget {
  /** Pod name. */
  name: string;
  /** http://podIP:adminPort */
  adminUrl: string;
}

/**
 * The running pods of the balancer's namespace that run the sidecar: where the backend set is
 * pushed. Running, not Ready: a sidecar reports ready only once it has a usable backend, which is
 * what the push gives it.
 */
export function sidecarTargets(pods: readonly PodView[], namespace: string, spec: WsBalancerSpec): SidecarTarget[] {
  const out: SidecarTarget[] = [];
  for (const pod of pods) {
    const ip = pod.status?.podIP;
    if (pod.metadata?.namespace !== namespace || !ip || pod.status?.phase !== 'Running') continue;
    if (!matchesSelector(pod.metadata.labels, spec.sidecarSelector)) continue;
    out.push({ name: pod.metadata.name!, adminUrl: `http://${hostOf(ip)}:${spec.sidecar.adminPort}` });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

const hostOf = (ip: string): string => (ip.includes(':') ? `[${ip}]` : ip);

// ---- endpoints ---------------------------------------------------------------------------------

export interface BackendEndpoint {
  /** Backend id on the sidecars: the pod name, or ip-port for an endpoint without a pod. */
  id: string;
  url: string;
  pod?: string;
  /** Value of the revision label on the endpoint's pod ("" when unlabelled or without a pod). */
  revision: string;
  /** Takes new sessions: serving and not terminating. */
  ready: boolean;
  /** The pod is ready (terminating or not). */
  serving: boolean;
  terminating: boolean;
}

/**
 * The backend Service's endpoints, from its EndpointSlices (v1 or v1beta1: the fields read here are
 * the same) and each endpoint's pod for its revision. A port name matches the Service port's name;
 * a number matches the endpoint (target) port, or is taken as the slice's only port.
 */
export function collectEndpoints(
  slices: readonly SliceView[],
  podByName: (name: string) => PodView | undefined,
  spec: WsBalancerSpec,
): BackendEndpoint[] {
  const byId = new Map<string, BackendEndpoint>();
  for (const slice of slices) {
    const ports = slice.ports ?? [];
    const port =
      typeof spec.backend.port === 'string'
        ? ports.find((p) => p.name === spec.backend.port)
        : (ports.find((p) => p.port === spec.backend.port) ?? (ports.length === 1 ? ports[0] : undefined));
    if (port?.port === undefined) continue;
    for (const ep of slice.endpoints ?? []) {
      const ip = ep.addresses[0];
      if (!ip) continue;
      const podName = ep.targetRef?.kind === 'Pod' ? ep.targetRef.name : undefined;
      const pod = podName ? podByName(podName) : undefined;
      // Its revision is unknown until the pod cache has it (the pod's event reconciles again).
      if (podName && !pod) continue;
      // Per the API, an unset condition means ready / serving = ready / not terminating. `ready` is
      // forced true for a Service with publishNotReadyAddresses; `serving` still tracks the pod's
      // readiness there, so it decides (where the API server sets it: 1.22 on, 1.20–1.21 behind
      // the EndpointSliceTerminatingCondition gate).
      const serving = ep.conditions?.serving ?? ep.conditions?.ready ?? true;
      const terminating = ep.conditions?.terminating ?? false;
      const endpoint: BackendEndpoint = {
        id: podName ?? `${ip}-${port.port}`,
        url: `${spec.backend.scheme}://${hostOf(ip)}:${port.port}`,
        revision: pod?.metadata?.labels?.[spec.backend.revisionLabel] ?? '',
        ready: serving && !terminating,
        serving,
        terminating,
        ...(podName ? { pod: podName } : {}),
      };
      // The same endpoint may sit in two slices while the controller moves it; the ready copy wins.
      const seen = byId.get(endpoint.id);
      if (!seen || (!seen.ready && endpoint.ready)) byId.set(endpoint.id, endpoint);
    }
  }
  return [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
}

interface RevisionCounts {
  ready: number;
  serving: number;
  terminating: number;
  total: number;
}

function countByRevision(endpoints: readonly BackendEndpoint[]): Map<string, RevisionCounts> {
  const counts = new Map<string, RevisionCounts>();
  for (const ep of endpoints) {
    let c = counts.get(ep.revision);
    if (!c) counts.set(ep.revision, (c = { ready: 0, serving: 0, terminating: 0, total: 0 }));
    c.total++;
    if (ep.ready && !ep.terminating) c.ready++;
    if (ep.serving) c.serving++;
    if (ep.terminating) c.terminating++;
  }
  return counts;
}

// ---- the rollout -------------------------------------------------------------------------------

export interface RolloutInput {
  spec: WsBalancerSpec;
  annotations: Record<string, string>;
  state: RolloutState;
  endpoints: readonly BackendEndpoint[];
  /** Sessions per revision, summed over the sidecars that answered. */
  sessionsByRevision: ReadonlyMap<string, number>;
  /** Every ready sidecar answered and already holds the backend set of `state`. */
  sidecarsSynced: boolean;
  /** Each sidecar's split (undefined: none, or it did not answer); read by a canary. */
  splits?: readonly (SplitView | undefined)[];
  now: number;
}

export const hasChecks = (spec: WsBalancerSpec): boolean =>
  Boolean(spec.rollout.blueGreen.prePromotionChecks?.prometheus || spec.rollout.blueGreen.prePromotionChecks?.webhook);


/**
 * One step of the blue/green state machine. The active revision serves; a newly ready revision
 * becomes the preview; promotion enables it and drains the active one; once no session is left on
 * the old revision the preview becomes active. Abort returns everything to the active revision.
 */
export function stepRollout(input: RolloutInput): RolloutStep {
  const { spec, annotations, endpoints, now } = input;
  const state: RolloutState = structuredClone(input.state);
  const events: RolloutEvent[] = [];
  const counts = countByRevision(endpoints);
  const ready = (rev: string | undefined): number => (rev === undefined ? 0 : (counts.get(rev)?.ready ?? 0));
  const present = (rev: string | undefined): boolean => rev !== undefined && (counts.get(rev)?.total ?? 0) > 0;
  const result = (extra: Partial<RolloutStep> = {}): RolloutStep => ({ state, events, checksDue: false, ...extra });
  const isCanary = spec.rollout.strategy === 'canary';
  // The strategy changed to blue/green mid-canary: the split ends (nobody moves), the preview waits as blue/green's.
  if (!isCanary && state.rollout?.canary) delete state.rollout.canary;

  // Retired revisions are remembered only while they still have endpoints.
  if (!present(state.previousRevision)) delete state.previousRevision;
  if (!present(state.abortedRevision)) delete state.abortedRevision;
  let retired = (state.retiredRevisions ?? []).filter(present);
  const setRetired = (list: string[]): void => {
    retired = list;
    if (list.length > 0) state.retiredRevisions = list;
    else delete state.retiredRevisions;
  };
  setRetired(retired);

  // Candidates for a preview: ready revisions the balancer has not served or rejected before.
  const candidates = [...counts.entries()]
    .filter(([rev, c]) => c.ready > 0 && rev !== state.activeRevision && rev !== state.previewRevision && !retired.includes(rev) && rev !== state.abortedRevision)
    .sort(([ra, a], [rb, b]) => b.ready - a.ready || ra.localeCompare(rb));

  if (state.activeRevision === undefined) {
    const first = candidates[0];
    if (first) state.activeRevision = first[0];
    return result();
  }

  const active = state.activeRevision;
  const preview = state.previewRevision;
  const retire = (rev: string): void => {
    state.previousRevision = rev;
    setRetired([...retired.filter((r) => r !== rev), rev]);
  };
  const promote = (why: string): void => {
    events.push({ reason: 'Promoted', type: 'Normal', note: `revision ${state.previewRevision} is active (${why})` });
    retire(active);
    state.activeRevision = state.previewRevision!;
    delete state.previewRevision;
    delete state.rollout;
  };

  if (preview !== undefined && !present(preview)) {
    events.push({ reason: 'Aborted', type: 'Warning', note: `preview revision ${preview} has no endpoints left; revision ${active} stays active` });
    delete state.previewRevision;
    delete state.rollout;
  }

  // The active revision is gone (e.g. a rolling update replaced every pod): nothing is left to
  // protect, so the preview, or else the largest ready revision — even one retired or aborted
  // before, as anything ready beats an outage — takes over at once.
  if (ready(active) === 0 && (counts.get(active)?.serving ?? 0) === 0) {
    if (state.previewRevision !== undefined && ready(state.previewRevision) > 0) {
      promote(`revision ${active} has no ready endpoint left`);
      return result();
    }
    const replacement = [...counts.entries()]
      .filter(([rev, c]) => c.ready > 0 && rev !== active)
      .sort(([ra, a], [rb, b]) => b.ready - a.ready || ra.localeCompare(rb))[0];
    if (replacement) {
      const [rev] = replacement;
      if (state.abortedRevision === rev) delete state.abortedRevision;
      setRetired(retired.filter((r) => r !== rev));
      delete state.previewRevision;
      delete state.rollout;
      retire(active);
      state.activeRevision = rev;
      events.push({ reason: 'Promoted', type: 'Normal', note: `revision ${rev} is active (revision ${active} has no ready endpoint left)` });
    }
    return result();
  }

  if (state.previewRevision === undefined) {
    const next = candidates[0];
    if (!next) return result();
    state.previewRevision = next[0];
    state.rollout = { previewSince: new Date(now).toISOString() };
    events.push({ reason: 'PreviewDetected', type: 'Normal', note: `revision ${next[0]} is ready (${next[1].ready} endpoints); revision ${active} stays active` });
    return result(isCanary ? stepCanary(input, state, events) : stepPreview(spec, annotations, state, events, ready, now));
  }

  if (state.rollout?.promotingSince !== undefined) {
    if (annotations[ANNOTATIONS.abort] === preview) {
      abort(state, events, 'the baton.dev/abort annotation');
      return result();
    }
    const left = input.sessionsByRevision.get(active) ?? 0;
    if (input.sidecarsSynced && left === 0) {
      events.push({ reason: 'SessionsMigrated', type: 'Normal', note: `no session is left on revision ${active}` });
      promote(`promoted after ${Math.round((now - Date.parse(state.rollout.promotingSince)) / 1000)}s of migration`);
      return result();
    }
    return result({ requeueAfterMs: PROGRESS_POLL_MS });
  }
  return result(isCanary ? stepCanary(input, state, events) : stepPreview(spec, annotations, state, events, ready, now));
}

/** A preview that is not yet promoting: abort, wait, run the checks, or start the promotion. */
function stepPreview(
  spec: WsBalancerSpec,
  annotations: Record<string, string>,
  state: RolloutState,
  events: RolloutEvent[],
  ready: (rev: string | undefined) => number,
  now: number,
): Partial<RolloutStep> {
  const bg = spec.rollout.blueGreen;
  const preview = state.previewRevision!;
  const rollout: RolloutStatus = (state.rollout ??= { previewSince: new Date(now).toISOString() });
  if (annotations[ANNOTATIONS.abort] === preview) {
    abort(state, events, 'the baton.dev/abort annotation');
    return {};
  }
  if (rollout.checks?.result === 'failed') {
    abort(state, events, `a pre-promotion check failed: ${rollout.checks.message}`);
    return {};
  }
  if (isPaused(annotations) || ready(preview) === 0) return {};
  const start = (why: string): Partial<RolloutStep> => {
    rollout.promotingSince = new Date(now).toISOString();
    events.push({
      reason: 'PromotionStarted',
      type: 'Normal',
      note: `${why}: revision ${preview} enabled, revision ${state.activeRevision} draining at ${bg.migrationRate} sessions/s per sidecar`,
    });
    return { requeueAfterMs: PROGRESS_POLL_MS };
  };
  if (annotations[ANNOTATIONS.promote] === preview) return start('promoted by the baton.dev/promote annotation');
  if (!bg.autoPromotion) return {};
  const dueAt = Date.parse(rollout.previewSince!) + bg.autoPromotionDelaySeconds * 1000;
  if (now < dueAt) return { requeueAfterMs: dueAt - now };
  if (hasChecks(spec) && rollout.checks?.result !== 'passed') return { checksDue: true };
  return start(hasChecks(spec) ? 'automatic promotion, checks passed' : 'automatic promotion');
}

function abort(state: RolloutState, events: RolloutEvent[], why: string): void {
  events.push({ reason: 'Aborted', type: 'Warning', note: `rollout of revision ${state.previewRevision} aborted by ${why}; revision ${state.activeRevision} stays active` });
  state.abortedRevision = state.previewRevision!;
  delete state.previewRevision;
  delete state.rollout;
}

// ---- the backend set ---------------------------------------------------------------------------

/**
 * The backend set every sidecar holds. The active revision is enabled (draining while a promotion
 * moves its sessions); the preview is standby or disabled until promoted, then enabled. Endpoints of
 * other revisions are left out, so sidecars drain and then drop them. Endpoint conditions come first:
 * a terminating endpoint drains, a not-ready one takes no new sessions.
 */
export function desiredBackends(spec: WsBalancerSpec, endpoints: readonly BackendEndpoint[], state: RolloutState): BackendInput[] {
  const promoting = state.rollout?.promotingSince !== undefined;
  // A canary serves beside the active revision; the split decides how many sessions each holds.
  const canary = canaryRunning(state);
  const out: BackendInput[] = [];
  for (const ep of endpoints) {
    let role: 'serve' | 'preview' | 'drain';
    if (state.activeRevision === undefined) role = 'serve';
    else if (ep.revision === state.activeRevision) role = promoting ? 'drain' : 'serve';
    else if (ep.revision === state.previewRevision) role = promoting || canary ? 'serve' : 'preview';
    else continue;
    const standby = role === 'preview' && spec.rollout.blueGreen.previewMode === 'standby';
    let backendState: BackendState;
    if (ep.terminating || role === 'drain') backendState = 'draining';
    else if (!ep.ready || (role === 'preview' && !standby)) backendState = 'disabled';
    else backendState = 'enabled';
    out.push({
      id: ep.id,
      url: ep.url,
      weight: spec.backend.weight,
      standby,
      labels: { revision: ep.revision, ...(ep.pod ? { pod: ep.pod } : {}) },
      state: backendState,
    });
  }
  return out;
}

/**
 * Whether a sidecar already holds the backend set: every desired backend with the same fields; any
 * other backend it still lists must be draining (it is dropped once its sessions have moved).
 */
export function sidecarHolds(view: BackendsResponse, desired: readonly BackendInput[]): boolean {
  const have = new Map(view.backends.map((b) => [b.id, b]));
  for (const want of desired) {
    const b = have.get(want.id);
    if (!b) return false;
    if (b.url !== want.url || b.weight !== (want.weight ?? BACKEND_DEFAULTS.weight) || b.standby !== (want.standby ?? BACKEND_DEFAULTS.standby) || b.state !== (want.state ?? BACKEND_DEFAULTS.state)) return false;
    if (!sameRecord(b.labels, want.labels ?? BACKEND_DEFAULTS.labels)) return false;
    have.delete(want.id);
  }
  for (const extra of have.values()) if (extra.state !== 'draining') return false;
  return true;
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** Sessions per revision (by the revision label the operator puts on each backend). */
export function sessionsByRevision(views: readonly BackendsResponse[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const v of views) for (const b of v.backends) {
    const rev = b.labels.revision;
    if (rev !== undefined) out.set(rev, (out.get(rev) ?? 0) + b.sessions);
  }
  return out;
}

// ---- status ------------------------------------------------------------------------------------

export interface SidecarCounts {
  desired: number;
  synced: number;
  unreachable: number;
}

export interface StatusInput {
  generation: number | undefined;
  annotations: Record<string, string>;
  spec: WsBalancerSpec;
  previous: WsBalancerStatus;
  state: RolloutState;
  endpoints: readonly BackendEndpoint[];
  sessionsByRevision: ReadonlyMap<string, number>;
  sidecars: SidecarCounts;
  /** Each sidecar's canary share, while a canary runs. */
  canaryShares?: CanaryShare[];
  backendsGeneration: number;
  now: number;
}

/** The status to write; equal (by statusChanged) to the previous one when nothing moved. */
export function buildStatus(input: StatusInput): WsBalancerStatus {
  const { state, spec, sidecars } = input;
  const counts = countByRevision(input.endpoints);
  const names = new Set<string>([...counts.keys()]);
  const retired = state.retiredRevisions ?? [];
  for (const rev of [state.activeRevision, state.previewRevision, state.abortedRevision, ...retired]) if (rev !== undefined) names.add(rev);
  const roleOf = (rev: string): RevisionStatus['role'] =>
    rev === state.activeRevision ? 'active' : rev === state.previewRevision ? 'preview' : retired.includes(rev) ? 'previous' : rev === state.abortedRevision ? 'aborted' : 'other';
  const revisions: RevisionStatus[] = [...names].sort().map((name) => {
    const c = counts.get(name);
    return { name, role: roleOf(name), ready: c?.ready ?? 0, serving: c?.serving ?? 0, terminating: c?.terminating ?? 0, sessions: input.sessionsByRevision.get(name) ?? 0 };
  });
  const sessions = [...input.sessionsByRevision.values()].reduce((a, b) => a + b, 0);
  const available = state.activeRevision !== undefined && (counts.get(state.activeRevision)?.ready ?? 0) > 0;
  const promoting = state.rollout?.promotingSince !== undefined;
  const canary = state.previewRevision !== undefined && !promoting ? state.rollout?.canary : undefined;
  const waitingForPerson =
    state.previewRevision !== undefined &&
    !promoting &&
    !canary?.aborting &&
    (isPaused(input.annotations) || (canary ? canary.message !== undefined : !spec.rollout.blueGreen.autoPromotion));

  let phase: Phase;
  if (waitingForPerson) phase = 'Paused';
  else if (state.previewRevision !== undefined) phase = 'Progressing';
  else if (!available || state.abortedRevision !== undefined || sidecars.unreachable > 0) phase = 'Degraded';
  else phase = 'Healthy';

  const cond = (type: ConditionType, ok: boolean, reason: string, message: string): Omit<Condition, 'lastTransitionTime'> => ({
    type,
    status: ok ? 'True' : 'False',
    reason,
    message,
  });
  const progressing =
    state.previewRevision === undefined
      ? cond('Progressing', false, state.abortedRevision !== undefined ? 'RolloutAborted' : 'Idle', state.abortedRevision !== undefined ? `rollout of revision ${state.abortedRevision} was aborted` : 'no rollout in progress')
      : canary
        ? cond(
            'Progressing',
            true,
            canary.aborting ? 'CanaryAborting' : 'Canary',
            canary.aborting
              ? `moving every session of canary ${state.previewRevision} back to revision ${state.activeRevision}`
              : `canary ${state.previewRevision} at step ${canary.step + 1}/${spec.rollout.canary?.steps.length ?? 0} (${canary.stepText ?? 'promotion'}), weight ${canary.weight}%${canary.message ? `: ${canary.message}` : ''}`,
          )
        : cond('Progressing', true, promoting ? 'Promoting' : 'Previewing', promoting ? `moving sessions from revision ${state.activeRevision} to ${state.previewRevision}` : `revision ${state.previewRevision} is the preview`);
  const promoted =
    state.previewRevision !== undefined
      ? cond('Promoted', false, promoting ? 'Promoting' : 'Previewing', `revision ${state.previewRevision} is not yet promoted`)
      : state.abortedRevision !== undefined
        ? cond('Promoted', false, 'RolloutAborted', `rollout of revision ${state.abortedRevision} was aborted; revision ${state.activeRevision} is active`)
        : state.activeRevision !== undefined
          ? cond('Promoted', true, 'RevisionActive', `revision ${state.activeRevision} is active`)
          : cond('Promoted', false, 'NoEndpoints', `service ${spec.backend.service} has no ready endpoint`);
  const conditions = mergeConditions(
    input.previous.conditions,
    [
      cond('Available', available, available ? 'EndpointsReady' : 'NoReadyEndpoints', available ? `revision ${state.activeRevision} has ready endpoints` : 'the active revision has no ready endpoint'),
      progressing,
      promoted,
      cond(
        'SidecarsSynced',
        sidecars.synced === sidecars.desired && sidecars.unreachable === 0,
        sidecars.unreachable > 0 ? 'SidecarsUnreachable' : sidecars.synced === sidecars.desired ? 'Synced' : 'Syncing',
        `${sidecars.synced}/${sidecars.desired} sidecars hold backend generation ${input.backendsGeneration}${sidecars.unreachable > 0 ? `, ${sidecars.unreachable} unreachable` : ''}`,
      ),
      cond('InvalidSpec', false, 'Valid', 'the spec is valid'),
    ],
    input.now,
    input.generation,
  );
  const rollout = canary && input.canaryShares ? { ...state.rollout, canary: { ...canary, sidecars: input.canaryShares } } : state.rollout;
  return {
    ...(input.generation !== undefined ? { observedGeneration: input.generation } : {}),
    phase,
    ...state,
    ...(rollout ? { rollout } : {}),
    revisions,
    sessions,
    sidecars,
    backendsGeneration: input.backendsGeneration,
    conditions,
  };
}

/** The status of a WsBalancer whose spec is invalid: everything else is kept as it was. */
export function invalidSpecStatus(previous: WsBalancerStatus, generation: number | undefined, message: string, now: number): WsBalancerStatus {
  return {
    ...previous,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    phase: 'Degraded',
    conditions: mergeConditions(previous.conditions, [{ type: 'InvalidSpec', status: 'True', reason: 'InvalidSpec', message }], now, generation),
  };
}

/** Replaces conditions by type, keeping lastTransitionTime when the status did not flip. */
export function mergeConditions(
  previous: readonly Condition[] | undefined,
  next: ReadonlyArray<Omit<Condition, 'lastTransitionTime'>>,
  now: number,
  generation: number | undefined,
): Condition[] {
  const byType = new Map((previous ?? []).map((c) => [c.type, c]));
  for (const c of next) {
    const old = byType.get(c.type);
    const lastTransitionTime = old && old.status === c.status ? old.lastTransitionTime : new Date(now).toISOString();
    byType.set(c.type, { ...c, lastTransitionTime, ...(generation !== undefined ? { observedGeneration: generation } : {}) });
  }
  return [...byType.values()].sort((a, b) => a.type.localeCompare(b.type));
}

/** Whether writing `next` would change anything a reader can see. */
export function statusChanged(previous: WsBalancerStatus | undefined, next: WsBalancerStatus): boolean {
  return JSON.stringify(canonical(previous ?? {})) !== JSON.stringify(canonical(next));
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => [k, canonical(v)]),
    );
  }
  return value;
}
