// Circuit breaker on consecutive dial failures to one backend. After `threshold` failures in a row
// the backend is skipped ('open') for a while, then a single trial dial is let through
// ('half-open'): success closes the breaker, failure reopens it for twice as long (capped).
// Pure: the caller passes `now` (ms) and reports every dial's outcome.

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Consecutive failures that open the breaker; <= 0 disables it. */
  threshold: number;
  /** First open period, ms; doubles on every re-trip without an intervening success. */
  openBase: number;
  /** Cap on the open period, ms. */
  openMax: number;
}

export class CircuitBreaker {
  private readonly threshold: number;
  private readonly openBase: number;
  private readonly openMax: number;
  private _state: BreakerState = 'closed';
  private failures = 0;
  private trips = 0; // times opened since the last success
  private _retryAt = 0;

  constructor(opts: BreakerOptions) {
    this.threshold = opts.threshold;
    this.openBase = Math.max(0, opts.openBase);
    this.openMax = Math.max(0, opts.openMax);
  }

  get state(): BreakerState {
    return this._state;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** When an open breaker will allow its trial (ms); 0 while closed. Read-only. */
  get retryAt(): number {
    return this._retryAt;
  }

  private get disabled(): boolean {
    return !(this.threshold > 0);
  }

  /**
   * May a dial be made now? In the open state this claims the single half-open trial, so the caller
   * that gets `true` MUST later call onSuccess(), onFailure() or release(), or it stays half-open.
   * `panic` = the caller has no other usable backend: probe without waiting for retryAt, but still
   * only one trial at a time (a dead backend must not get a thundering herd of dials).
   */
  tryAcquire(now: number, panic: boolean): boolean {
    if (!this.trialAvailable(now, panic)) return false;
    if (this._state === 'open') this._state = 'half-open';
    return true;
  }

  /** What tryAcquire() would answer, without claiming anything. */
  trialAvailable(now: number, panic: boolean): boolean {
    if (this.disabled) return true;
    switch (this._state) {
      case 'closed':
        return true;
      case 'open':
        return panic || now >= this._retryAt;
      case 'half-open':
        return false; // the one trial is still in flight
    }
  }

  /**
   * A dial succeeded: close and forget history. Also honoured while open (a dial started before the
   * trip may finish late): a working connection is better evidence than the failures were.
   */
  onSuccess(): void {
    this._state = 'closed';
    this.failures = 0;
    this.trips = 0;
    this._retryAt = 0;
  }

  onFailure(now: number): void {
    this.failures++;
    if (this.disabled) return;
    // Open: a late failure from a dial started before the trip adds no news; don't extend the wait.
    if (this._state === 'open') return;
    if (this._state === 'half-open' || this.failures >= this.threshold) this.trip(now);
  }

  /**
   * Give back a claimed half-open trial without a verdict (the dial was aborted, e.g. the client
   * left): back to 'open' with the same retryAt, so the next caller may take the trial. No-op
   * otherwise. Not in the original brief; the proxy code needs it for aborted dials.
   */
  release(): void {
    if (this._state === 'half-open') this._state = 'open';
  }

  reset(): void {
    this.onSuccess();
  }

  private trip(now: number): void {
    this.trips++;
    // openBase × 2^(trips−1), capped. The exponent is bounded so 0 × 2^huge can't become NaN.
    const duration = Math.min(this.openMax, this.openBase * Math.pow(2, Math.min(this.trips - 1, 52)));
    this._state = 'open';
    this._retryAt = now + duration;
  }
}
