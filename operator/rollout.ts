// The vocabulary of a rollout, shared by the blue/green machine (plan.ts) and the canary's
// (canary.ts): the part of the status they read and write, their events and their answer.
import { ANNOTATIONS, type WsBalancerStatus } from './api/wsbalancer.js';

/** The rollout part of the status: what stepRollout reads and writes. */
export type RolloutState = Pick<WsBalancerStatus, 'activeRevision' | 'previewRevision' | 'previousRevision' | 'retiredRevisions' | 'abortedRevision' | 'rollout'>;

export const ROLLOUT_REASONS = [
  'PreviewDetected',
  'PromotionStarted',
  'SessionsMigrated',
  'Promoted',
  'Aborted',
  'StepStarted',
  'WeightReached',
  'StepPromoted',
  'AnalysisPassed',
  'AnalysisFailed',
] as const;
export type RolloutReason = (typeof ROLLOUT_REASONS)[number];

export interface RolloutEvent {
  reason: RolloutReason;
  note: string;
  type: 'Normal' | 'Warning';
}

export interface RolloutStep {
  state: RolloutState;
  events: RolloutEvent[];
  /** The delay has passed and pre-promotion checks (or the canary step's analysis) are configured but not yet run. */
  checksDue: boolean;
  /** Look again after this long even if nothing changes (a delay to expire, sessions to move). */
  requeueAfterMs?: number;
}

export const isPaused = (annotations: Record<string, string>): boolean => annotations[ANNOTATIONS.paused] === 'true';

/** How often a rollout in motion is looked at again: the sidecars' session counts change without events. */
export const PROGRESS_POLL_MS = 1000;
