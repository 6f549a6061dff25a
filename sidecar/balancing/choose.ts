// Which backend gets a new session (or a failover attempt). Pure decision logic over a snapshot of
// backend views; the only state is the round-robin counters. Called per session / per attempt,
// not per message, but still written to avoid per-call array copies.

import type { BackendState, HealthStatus } from '../../common/vocabulary.js';

export interface BackendView {
  id: string;
  /** 1..1000 */
  weight: number;
  standby: boolean;
  state: BackendState;
  /** Current sessions on it. */
  sessions: number;
  health: HealthStatus;
  /** The breaker would let a dial through in panic mode (CircuitBreaker.trialAvailable(now, true)). */
  trialAvailable: boolean;
  /**
   * The breaker's open period is over (CircuitBreaker.trialAvailable(now, false)): a tripped
   * backend then competes in the usable tier for its one half-open trial, so it can recover
   * while other backends are still serving.
   */
  trialDue: boolean;
  /** ms timestamp when it was added or last recovered (slow start). */
  warmSince: number;
}

export interface ChooseRequest {
  /** Consistent-hash key; ignored by the other algorithms. */
  key?: string;
  /** Ids not to pick (e.g. the backend that just failed this session). */
  excluded?: ReadonlySet<string>;
  now: number;
}

export interface Choice {
  id: string;
  /** True when nothing usable was left and this is a breaker trial on a tripped/ejected backend. */
  panic: boolean;
}

export interface Chooser {
  choose(views: readonly BackendView[], req: ChooseRequest): Choice | undefined;
}

export type ChooserAlgorithm = 'least-sessions' | 'round-robin' | 'consistent-hash';

export interface ChooserOptions {
  algorithm: ChooserAlgorithm;
  /** 0 = off; otherwise weight ramps from 10% to 100% over this many ms after warmSince. */
  slowStart: number;
  random?: () => number;
}

/** Weight after slow start: weight × clamp((now − warmSince) / slowStart, 0.1, 1). */
export function effectiveWeight(v: BackendView, now: number, slowStart: number): number {
  const w = v.weight > 0 ? v.weight : 0;
  if (!(slowStart > 0)) return w;
  const ramp = (now - v.warmSince) / slowStart;
  if (ramp >= 1) return w;
  // Start at 10%, not 0: a fresh backend must still get some traffic or it never proves itself.
  return ramp > 0.1 ? w * ramp : w * 0.1; // NaN ramp → 10%
}

// Tier ranks, best first. A view's rank says which tier it can serve in; only the best rank present
// is used. NONE = not a candidate at all.
const USABLE = 0;
const USABLE_STANDBY = 1;
const PANIC = 2;
const PANIC_STANDBY = 3;
const NONE = 4;

function rank(v: BackendView, excluded: ReadonlySet<string> | undefined): number {
  if (v.state !== 'enabled' || (excluded !== undefined && excluded.has(v.id))) return NONE;
  if (v.health === 'healthy' || v.health === 'suspect' || (v.health === 'tripped' && v.trialDue)) {
    return v.standby ? USABLE_STANDBY : USABLE;
  }
  if (v.trialAvailable) return v.standby ? PANIC_STANDBY : PANIC;
  return NONE;
}

interface RrEntry {
  current: number;
  seen: number; // epoch of the last choose() whose views contained this id
}

export function createChooser(opts: ChooserOptions): Chooser {
  const random = opts.random ?? Math.random;
  const slowStart = opts.slowStart;
  // Reusable scratch: the chosen tier and its effective weights. Cleared after each call so we don't
  // keep views (and whatever they reference) alive between calls.
  const tier: BackendView[] = [];
  const weights: number[] = [];
  const rr = new Map<string, RrEntry>();
  let epoch = 0;

  /** Weighted draw over tier[0..n), skipping index `skip`; total = sum of the included weights. */
  function draw(total: number, skip: number): number {
    const n = tier.length;
    if (total > 0) {
      let r = random() * total;
      let lastIncluded = -1;
      for (let i = 0; i < n; i++) {
        if (i === skip || !(weights[i]! > 0)) continue;
        r -= weights[i]!;
        lastIncluded = i;
        if (r < 0) return i;
      }
      if (lastIncluded >= 0) return lastIncluded; // floating-point leftover
    }
    // All weights zero: uniform.
    let i = Math.floor(random() * (skip >= 0 ? n - 1 : n));
    if (skip >= 0 && i >= skip) i++;
    return Math.min(i, n - 1);
  }

  // Weighted power of two choices: two distinct draws ∝ weight, keep the one with fewer sessions per
  // unit weight. Near-least-loaded, but without every new session stampeding onto the same
  // emptiest backend (e.g. one that just recovered), and O(n) with no sorting.
  function leastSessions(total: number): number {
    if (tier.length === 1) return 0;
    const a = draw(total, -1);
    const b = draw(total - weights[a]!, a);
    const la = (tier[a]!.sessions + 1) / weights[a]!;
    const lb = (tier[b]!.sessions + 1) / weights[b]!;
    return lb < la ? b : a; // tie → first drawn
  }

  // nginx's smooth weighted round-robin: over sum(w) picks each backend gets exactly its weight,
  // interleaved (5,1,1 → a a b a c a a) rather than in bursts. Counters live per id, so they
  // survive the tier changing shape between calls.
  function roundRobin(views: readonly BackendView[], total: number): number {
    epoch++;
    for (const v of views) {
      const e = rr.get(v.id);
      if (e === undefined) rr.set(v.id, { current: 0, seen: epoch });
      else e.seen = epoch;
    }
    let best = -1;
    let bestEntry: RrEntry | undefined;
    for (let i = 0; i < tier.length; i++) {
      const e = rr.get(tier[i]!.id)!;
      e.current += weights[i]!;
      if (bestEntry === undefined || e.current > bestEntry.current) {
        best = i;
        bestEntry = e;
      }
    }
    bestEntry!.current -= total;
    // Drop counters of backends that are gone. Every present id has an entry, so the map can only
    // be larger than the view list if something stale is in it.
    if (rr.size > views.length) {
      for (const [id, e] of rr) if (e.seen !== epoch) rr.delete(id);
    }
    return best;
  }

  // Weighted rendezvous hashing: score = −w / ln(u), u = hash(key, id) in (0,1); highest wins.
  // P(win) ∝ w, a key only moves when its winner leaves (or a new/reweighted backend outscores it),
  // and there is no ring to rebuild.
  function consistentHash(key: string): number {
    const seed = hashString(HASH_SEED1, HASH_SEED2, key);
    let best = 0;
    let bestScore = -Infinity;
    for (let i = 0; i < tier.length; i++) {
      const u = hashUnit(seed, tier[i]!.id);
      const score = -weights[i]! / Math.log(u);
      if (score > bestScore) {
        best = i;
        bestScore = score;
      }
    }
    return best;
  }

  return {
    choose(views, req) {
      const { excluded, now } = req;
      // One pass: keep only views of the best rank seen so far.
      let best = NONE;
      tier.length = 0;
      for (const v of views) {
        const r = rank(v, excluded);
        if (r === NONE || r > best) continue;
        if (r < best) {
          best = r;
          tier.length = 0;
        }
        tier.push(v);
      }
      if (best === NONE) return undefined;

      let total = 0;
      for (let i = 0; i < tier.length; i++) {
        const w = effectiveWeight(tier[i]!, now, slowStart);
        weights[i] = w;
        total += w;
      }
      weights.length = tier.length;

      let i: number;
      if (tier.length === 1) i = 0;
      else if (opts.algorithm === 'round-robin') i = roundRobin(views, total);
      else if (opts.algorithm === 'consistent-hash' && req.key !== undefined) i = consistentHash(req.key);
      else i = leastSessions(total);

      const id = tier[i]!.id;
      tier.length = 0;
      return { id, panic: best >= PANIC };
    },
  };
}

// ---- hashing -------------------------------------------------------------------------------------
// A small murmur-style 2×32-bit string hash (after bryc's public-domain cyrb53): not cryptographic,
// just well mixed and fast. The key is hashed once per choose(); each id continues from that state,
// which equals hashing key + '\0' + id without building the string.

const HASH_SEED1 = 0xdeadbeef;
const HASH_SEED2 = 0x41c6ce57;

interface HashState {
  h1: number;
  h2: number;
}

function hashString(h1: number, h2: number, s: string): HashState {
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  // The '\0' separator, so ("ab", "c") and ("a", "bc") differ.
  h1 = Math.imul(h1, 2654435761);
  h2 = Math.imul(h2, 1597334677);
  return { h1, h2 };
}

/** Hash of (key state, id) mapped to u in the open interval (0, 1) with 52 bits. */
function hashUnit(seed: HashState, id: string): number {
  let h1 = seed.h1;
  let h2 = seed.h2;
  for (let i = 0; i < id.length; i++) {
    const ch = id.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  // 20 bits of h2 + 32 bits of h1 = 52 bits; (h + 0.5) / 2^52 is exact and never 0 or 1,
  // so ln(u) is finite and negative.
  const h = (h2 & 0xfffff) * 4294967296 + (h1 >>> 0);
  return (h + 0.5) / 4503599627370496;
}


/** A key's fixed place in [0, 1) (the split's session rank, balancing/split.ts): the same hash as consistent-hash. */
export function keyRank(key: string): number {
  return hashUnit(hashString(HASH_SEED1, HASH_SEED2, key), '');
}
