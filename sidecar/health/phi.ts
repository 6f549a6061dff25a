// φ-accrual failure detector (Hayashibara et al. 2004; the variant used by Akka, Cassandra and
// Fluentd's out_forward). Instead of a yes/no timeout it reports a suspicion level φ that grows the
// longer a heartbeat is overdue relative to the observed inter-arrival distribution:
//   φ = −log10(1 − F(Δt))    where F is the CDF of N(mean + acceptablePause, max(stddev, minStdDev))
// φ = 1 means ~10% chance the peer is actually alive and just late, φ = 2 ~1%, φ = 16 ~1e-16.
// Pure: the caller passes `now` (ms) for every heartbeat and query.

export interface PhiOptions {
  /** How many recent inter-arrival intervals are remembered. */
  windowSize: number;
  /** Floor on the standard deviation, ms; keeps perfectly regular heartbeats from making φ hair-trigger. */
  minStdDev: number;
  /** Extra ms added to the mean: a pause this long is not yet suspicious (GC, scheduling hiccups). */
  acceptablePause: number;
}

/** φ is capped here so callers never see Infinity (sorting, metrics and JSON all prefer finite numbers). */
export const PHI_MAX = 1e3;

const LN10 = Math.LN10;

export class PhiAccrualDetector {
  private readonly intervals: Float64Array; // ring buffer, allocated once
  private readonly minStdDev: number;
  private readonly acceptablePause: number;
  private next = 0; // ring write position
  private count = 0; // intervals currently in the ring (<= capacity)
  private sum = 0;
  private sumSq = 0;
  private pushes = 0; // for periodic exact recomputation of sum/sumSq
  private last = NaN; // time of the latest heartbeat; NaN = none yet
  private beats = 0;

  constructor(opts: PhiOptions) {
    this.intervals = new Float64Array(Math.max(1, Math.floor(opts.windowSize) || 1));
    this.minStdDev = Math.max(opts.minStdDev, Number.MIN_VALUE); // never divide by 0
    this.acceptablePause = Math.max(0, opts.acceptablePause);
  }

  /** Heartbeats seen since construction or the last reset() (the first only sets the reference time). */
  get heartbeats(): number {
    return this.beats;
  }

  heartbeat(now: number): void {
    this.beats++;
    if (this.beats === 1) {
      this.last = now;
      return;
    }
    // A clock step backwards must not poison the statistics with a negative interval.
    const interval = Math.max(0, now - this.last);
    this.last = Math.max(this.last, now);
    const cap = this.intervals.length;
    if (this.count === cap) {
      const old = this.intervals[this.next]!;
      this.sum -= old;
      this.sumSq -= old * old;
    } else {
      this.count++;
    }
    this.intervals[this.next] = interval;
    this.sum += interval;
    this.sumSq += interval * interval;
    this.next = (this.next + 1) % cap;
    // Running sums drift under repeated add/subtract; recompute exactly once per window's worth of
    // heartbeats (amortised O(1)), which also keeps the variance from going slightly negative.
    if (++this.pushes >= cap) {
      this.pushes = 0;
      let s = 0;
      let sq = 0;
      for (let i = 0; i < this.count; i++) {
        const v = this.intervals[i]!;
        s += v;
        sq += v * v;
      }
      this.sum = s;
      this.sumSq = sq;
    }
  }

  /** Suspicion level at `now`; 0 until two heartbeats have given at least one interval. */
  phi(now: number): number {
    if (this.count === 0) return 0;
    const mean = this.sum / this.count;
    const variance = Math.max(0, this.sumSq / this.count - mean * mean);
    const stdDev = Math.max(Math.sqrt(variance), this.minStdDev);
    const y = (now - this.last - (mean + this.acceptablePause)) / stdDev;
    // Logistic approximation of the normal CDF (Bowling et al. 2009, as used by Akka):
    //   F(y) ≈ 1 / (1 + e^(−z)),  z = y·(1.5976 + 0.070566·y²)
    // so 1 − F = 1 / (1 + e^z) and φ = log10(1 + e^z). Computing 1 − F directly underflows to 0
    // (φ = Infinity) a few σ out; the softplus form below stays finite and exact in both tails.
    // z is strictly increasing in y, so φ never decreases while no heartbeat arrives.
    const z = y * (1.5976 + 0.070566 * y * y);
    const softplus = z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
    const phi = softplus / LN10;
    return phi < PHI_MAX ? phi : PHI_MAX; // also maps NaN (e.g. now = NaN) to the cap: fail suspicious
  }

  /** Forget everything (e.g. after the backend was re-added or recovered). */
  reset(): void {
    this.next = 0;
    this.count = 0;
    this.sum = 0;
    this.sumSq = 0;
    this.pushes = 0;
    this.last = NaN;
    this.beats = 0;
  }
}
