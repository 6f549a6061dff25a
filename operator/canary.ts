// The canary strategy's decisions, pure like the rest of plan.ts: which step a canary is at, when it
// moves on, the split every sidecar must hold, and whether they hold it. The sidecars do the moves
// (PUT /v1/backends `split`); the operator only asks for a weight and reads back each sidecar's share.
// Everything a step needs is kept in status.rollout.canary, so a new leader resumes the step and
// pushes the same split again, which moves nobody.
import type { Split, SplitView } from '../common/admin/contract.js';
import { ANNOTATIONS, durationMs, type CanaryShare, type CanaryStatus, type CanaryStep, type WsBalancerSpec } from './api/wsbalancer.js';
import { isPaused, PROGRESS_POLL_MS, type RolloutEvent, type RolloutState, type RolloutStep } from './rollout.js';

/** What a canary step reads (a part of plan.ts's RolloutInput). */
export interface CanaryInput {
  spec: WsBalancerSpec;
  annotations: Record<string, string>;
  /** Every ready sidecar answered and already holds the backend set. */
  sidecarsSynced: boolean;
  /** Each sidecar's split (undefined: none, or it did not answer). */
  splits?: readonly (SplitView | undefined)[];
  now: number;
}

/** The backend label the sidecars split by: desiredBackends puts the revision there. */
export const SPLIT_LABEL = 'revision';

/** A step as text, for status and events: "setWeight 10", "pause 30s", "pause (until promoted)", "analysis". */
export function stepText(step: CanaryStep): string {
  if (step.setWeight !== undefined) return `setWeight ${step.setWeight}`;
  if (step.pause) return step.pause.duration === undefined ? 'pause (until promoted)' : `pause ${typeof step.pause.duration === 'number' ? `${step.pause.duration}s` : step.pause.duration}`;
  return 'analysis';
}

/** A canary in motion (not yet promoting): its revision and the stable one share the sessions. */
export const canaryRunning = (state: RolloutState): boolean =>
  state.previewRevision !== undefined && state.rollout?.canary !== undefined && state.rollout.promotingSince === undefined;

/** The split every sidecar holds while a canary runs: the canary first, so it grows outwards from rank 0. */
export function desiredSplit(spec: WsBalancerSpec, state: RolloutState): Split | undefined {
  if (!canaryRunning(state) || state.activeRevision === undefined) return undefined;
  const weight = state.rollout!.canary!.weight;
  return {
    label: SPLIT_LABEL,
    rate: spec.rollout.canary?.migrationRate ?? spec.rollout.blueGreen.migrationRate,
    groups: [
      { value: state.previewRevision!, weight },
      { value: state.activeRevision, weight: 100 - weight },
    ],
  };
}

/** How far a sidecar's canary share may be from its target and count as reached: departures leave a group short until arrivals fill it. */
export const shareTolerance = (sessions: number): number => Math.max(1, Math.floor(sessions * 0.02));

/**
 * Whether every sidecar holds `weight` % on the canary: its split asks that weight, nothing is left
 * to move, and the canary's sessions are at their target (within shareTolerance). Without any
 * sidecar nothing is reached: a canary does not race through its steps while none is seen.
 */
export function shareReached(splits: readonly (SplitView | undefined)[], canary: string, weight: number): boolean {
  return splits.length > 0 && splits.every((s) => {
    const group = s?.groups.find((g) => g.value === canary);
    if (!s || !group || group.weight !== weight || s.moving !== 0) return false;
    const total = s.groups.reduce((n, g) => n + g.sessions, 0);
    return Math.abs(group.sessions - group.target) <= shareTolerance(total);
  });
}

/** Each sidecar's share as status shows it (sidecars without a split are left out). */
export function canaryShares(sidecars: ReadonlyArray<{ name: string; split?: SplitView }>, canary: string, stable: string): CanaryShare[] {
  return sidecars.flatMap(({ name, split }) => {
    const c = split?.groups.find((g) => g.value === canary);
    if (!split || !c) return [];
    return [{ name, canary: c.sessions, target: c.target, stable: split.groups.find((g) => g.value === stable)?.sessions ?? 0, moving: split.moving }];
  });
}

/** The promote annotation's value that completes step `step` of `revision` (`full`: every step). */
export const promoteValue = (revision: string, step: number | 'full'): string => `${revision}@${step}`;

/**
 * One step of a canary (the preview revision of RolloutState is the canary). Abort moves every
 * session back (weight 0) and then drops the canary; each step completes as described in
 * docs/operator.md; after the last one, blue/green's promotion takes over (the canary is enabled
 * alone, the stable revision drains, then retires).
 */
export function stepCanary(input: CanaryInput, state: RolloutState, events: RolloutEvent[]): Partial<RolloutStep> {
  const { spec, annotations, now } = input;
  const steps = spec.rollout.canary!.steps;
  const canary = state.previewRevision!;
  const stable = state.activeRevision!;
  const rollout = (state.rollout ??= { previewSince: new Date(now).toISOString() });
  const reached = (weight: number): boolean => input.sidecarsSynced && shareReached(input.splits ?? [], canary, weight);
  const begin = (c: CanaryStatus, index: number): void => {
    c.step = index;
    c.stepSince = new Date(now).toISOString();
    delete c.message;
    const step = steps[index];
    if (!step) {
      delete c.stepText;
      return;
    }
    c.stepText = stepText(step);
    if (step.setWeight !== undefined) c.weight = step.setWeight;
    events.push({ reason: 'StepStarted', type: 'Normal', note: `canary ${canary}: step ${index + 1}/${steps.length}: ${c.stepText}` });
  };
  if (!rollout.canary) begin((rollout.canary = { step: 0, stepSince: '', weight: 0 }), 0);
  const c = rollout.canary;

  if (c.aborting) {
    if (!reached(0)) return { requeueAfterMs: PROGRESS_POLL_MS };
    events.push({ reason: 'SessionsMigrated', type: 'Normal', note: `every session is back on revision ${stable}; canary revision ${canary} dropped` });
    state.abortedRevision = canary;
    delete state.previewRevision;
    delete state.rollout;
    return {};
  }
  const startAbort = (why: string): Partial<RolloutStep> => {
    c.aborting = true;
    c.weight = 0;
    delete c.message;
    events.push({ reason: 'Aborted', type: 'Warning', note: `canary of revision ${canary} aborted by ${why}: every session moves back to revision ${stable}` });
    return { requeueAfterMs: PROGRESS_POLL_MS };
  };
  if (annotations[ANNOTATIONS.abort] === canary) return startAbort('the baton.dev/abort annotation');
  if (isPaused(annotations)) return {};

  const promote = annotations[ANNOTATIONS.promote];
  if (promote === promoteValue(canary, 'full') && c.step < steps.length) {
    events.push({ reason: 'StepPromoted', type: 'Normal', note: `canary ${canary}: promoted to the end by the baton.dev/promote annotation (from step ${c.step + 1}/${steps.length})` });
    begin(c, steps.length);
  }
  // Each pass completes at most one step; a step that completes at once lets the next one start now.
  for (;;) {
    if (c.step >= steps.length) {
      rollout.promotingSince = new Date(now).toISOString();
      // The split ends: the last shares measured would only go stale.
      delete c.sidecars;
      events.push({
        reason: 'PromotionStarted',
        type: 'Normal',
        note: `every canary step done: revision ${canary} takes every session, revision ${stable} draining at ${spec.rollout.canary!.migrationRate} sessions/s per sidecar`,
      });
      return { requeueAfterMs: PROGRESS_POLL_MS };
    }
    const step = steps[c.step]!;
    if (promote === promoteValue(canary, c.step)) {
      events.push({ reason: 'StepPromoted', type: 'Normal', note: `canary ${canary}: step ${c.step + 1}/${steps.length} (${c.stepText}) completed by the baton.dev/promote annotation` });
    } else if (step.setWeight !== undefined) {
      if (!reached(c.weight)) return { requeueAfterMs: PROGRESS_POLL_MS };
      events.push({ reason: 'WeightReached', type: 'Normal', note: `canary ${canary}: every sidecar holds ${c.weight}% of its sessions on it` });
    } else if (step.pause) {
      if (step.pause.duration === undefined) {
        c.message = `paused until promoted: kubectl baton promote (baton.dev/promote=${promoteValue(canary, c.step)})`;
        return {};
      }
      const dueAt = Date.parse(c.stepSince) + durationMs(step.pause.duration);
      if (now < dueAt) return { requeueAfterMs: dueAt - now };
    } else {
      const analysis = c.analysis?.step === c.step ? c.analysis : undefined;
      if (!analysis) return { checksDue: true };
      if (analysis.result === 'failed') {
        if (spec.rollout.canary!.abortOnFailedAnalysis) {
          events.push({ reason: 'AnalysisFailed', type: 'Warning', note: `canary ${canary}, step ${c.step + 1}/${steps.length}: ${analysis.message}` });
          return startAbort(`a failed analysis (${analysis.message})`);
        }
        if (c.message === undefined) events.push({ reason: 'AnalysisFailed', type: 'Warning', note: `canary ${canary}, step ${c.step + 1}/${steps.length}: ${analysis.message}; held (abortOnFailedAnalysis is false)` });
        c.message = `analysis failed: ${analysis.message}; held at ${c.weight}% until promoted or aborted`;
        return {};
      }
      events.push({ reason: 'AnalysisPassed', type: 'Normal', note: `canary ${canary}, step ${c.step + 1}/${steps.length}: ${analysis.message}` });
    }
    begin(c, c.step + 1);
  }
}
