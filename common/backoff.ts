// Exponential backoff with jitter for redial attempts (config: failover.backoff).
// Pure: the caller owns the timer; this only says how long to wait.

export interface BackoffPolicy {
  /** Delay for attempt 0, ms. */
  initial: number;
  /** Cap on the un-jittered delay, ms. */
  max: number;
  /** Growth factor per attempt (>= 1 in any sane config). */
  multiplier: number;
  /** Fraction 0..1: the delay is spread uniformly over ±jitter × delay. */
  jitter: number;
}

/**
 * Delay in integer ms before redial number `attempt` (0-based).
 *
 * base  = min(max, initial × multiplier^attempt)
 * delay = base × (1 + jitter × (2·random() − 1)), rounded
 *
 * So the result lies in [base × (1 − jitter), base × (1 + jitter)], i.e. never negative and never
 * above max × (1 + jitter). Jitter is applied after the cap on purpose: many sessions failing over
 * at once sit at the cap together, and that is exactly when they most need spreading out.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const n = attempt > 0 ? Math.floor(attempt) : 0; // also maps NaN to 0
  const initial = Math.max(0, policy.initial);
  const max = Math.max(0, policy.max);
  const multiplier = policy.multiplier > 0 ? policy.multiplier : 1; // config validates; don't go NaN
  // multiplier^n overflows to Infinity for large n; min() caps it (initial > 0 avoids 0 × Infinity).
  const base = initial > 0 ? Math.min(max, initial * Math.pow(multiplier, n)) : 0;
  const jitter = Math.min(1, Math.max(0, policy.jitter || 0));
  const delay = base * (1 + jitter * (2 * random() - 1));
  return Math.max(0, Math.round(delay));
}
