// A split of sessions over groups of backends (a canary rollout: `revision: v2` 10 %, `v1` 90 %).
// Pure decisions, no sockets and no clock of their own: how many sessions each group should hold,
// which group a new session joins, which live sessions move when the weights change, and when the
// next move may start. sidecar/split-keeper.ts does the moves as planned migrations.
//
// Why none bounces: every session has a fixed rank in [0, 1). Groups are ordered (the first holds
// the lowest ranks), and a group that grows takes the lowest-ranked sessions of the groups after
// it (the highest of those before it), so it grows from its boundary outwards. A session moved
// into the canary at 10 % is still inside at 50 %; only a shrinking weight moves it back.

/** Percent weights, one per group in the split's order; they sum to 100. */
export type SplitWeights = readonly number[];

/** A session as the split sees it: its rank and the group index it is in (or moving to). */
export interface SplitMember {
  id: string;
  rank: number;
  group: number;
}

export interface SplitMove {
  id: string;
  from: number;
  to: number;
}

/**
 * Sessions each group should hold out of `total`: weight × total, rounded by largest remainder so
 * the targets sum to `total` exactly (ties go to the earlier group).
 */
export function splitTargets(weights: SplitWeights, total: number): number[] {
  const sum = weights.reduce((a, w) => a + w, 0);
  if (sum <= 0 || total <= 0) return weights.map(() => 0);
  const exact = weights.map((w) => (w * total) / sum);
  const targets = exact.map(Math.floor);
  let left = total - targets.reduce((a, t) => a + t, 0);
  const byRemainder = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of byRemainder) {
    if (left === 0) break;
    targets[i]!++;
    left--;
  }
  return targets;
}

/** The group whose slice of [0, 1) holds `rank` (cumulative weights in order). */
export function groupOfRank(weights: SplitWeights, rank: number): number {
  const sum = weights.reduce((a, w) => a + w, 0);
  let upTo = 0;
  let last = 0;
  for (let i = 0; i < weights.length; i++) {
    if (!(weights[i]! > 0)) continue;
    last = i;
    upTo += weights[i]! / sum;
    if (rank < upTo) return i;
  }
  return last; // floating-point leftover at the top
}

/**
 * The group a new session joins, given how many each group holds now: its rank's own group when
 * that group is below its target for one more session, else the one furthest below. Arrivals so
 * keep the share on their own, and no live session has to move for them.
 */
export function groupForNewSession(weights: SplitWeights, counts: readonly number[], rank: number): number {
  const total = counts.reduce((a, c) => a + c, 0) + 1;
  const targets = splitTargets(weights, total);
  const own = groupOfRank(weights, rank);
  if (targets[own]! - counts[own]! > 0) return own;
  let best = own;
  let bestDeficit = -Infinity;
  for (let i = 0; i < targets.length; i++) {
    const deficit = targets[i]! - counts[i]!;
    if (weights[i]! > 0 && deficit > bestDeficit) {
      best = i;
      bestDeficit = deficit;
    }
  }
  return best;
}

/**
 * The fewest moves that bring every group to its target. A growing group takes, from the nearest
 * group with a surplus, the sessions nearest its own boundary: the lowest ranks of a group after
 * it, the highest ranks of a group before it.
 */
export function planMoves(weights: SplitWeights, members: readonly SplitMember[]): SplitMove[] {
  const n = weights.length;
  const targets = splitTargets(weights, members.length);
  // Each group's members by rank (ties by id, so the plan does not depend on input order).
  const sorted: SplitMember[][] = weights.map(() => []);
  for (const m of members) sorted[m.group]?.push(m);
  for (const list of sorted) list.sort((a, b) => a.rank - b.rank || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const low = sorted.map(() => 0);
  const high = sorted.map((list) => list.length);
  const surplus = sorted.map((list, i) => list.length - targets[i]!);
  const moves: SplitMove[] = [];
  for (let to = 0; to < n; to++) {
    while (surplus[to]! < 0) {
      const from = nearestSurplus(surplus, to);
      if (from < 0) break; // cannot happen: surpluses and deficits sum to zero
      const list = sorted[from]!;
      const m = from > to ? list[low[from]!++]! : list[--high[from]!]!;
      moves.push({ id: m.id, from, to });
      surplus[from]!--;
      surplus[to]!++;
    }
  }
  return moves;
}

function nearestSurplus(surplus: readonly number[], to: number): number {
  for (let d = 1; d < surplus.length; d++) {
    if (to + d < surplus.length && surplus[to + d]! > 0) return to + d;
    if (to - d >= 0 && surplus[to - d]! > 0) return to - d;
  }
  return -1;
}

/**
 * When the next paced move may start, given when the last one was due: one every 1/rate s, on a
 * schedule rather than a sleep per move, so time lost to a busy event loop is made up, but never
 * more than one second's worth at once.
 */
export function nextStartAt(lastAt: number, now: number, rate: number): number {
  return Math.max(lastAt + 1000 / rate, now - 1000);
}
