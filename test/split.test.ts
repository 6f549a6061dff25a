// The split's pure decisions (sidecar/balancing/split.ts): targets and their rounding, the group
// of a new session, the moves a weight change plans, and the pace of those moves on a fake clock.
// Sessions are simulated as plain members; the sidecar test (split-sidecar.test.ts) runs them real.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { keyRank } from '../sidecar/balancing/choose.js';
import { groupForNewSession, groupOfRank, nextStartAt, planMoves, splitTargets, type SplitMember, type SplitWeights } from '../sidecar/balancing/split.js';

/** A canary split: group 0 (canary) holds `canary` %, group 1 the rest. */
const canaryAt = (canary: number): SplitWeights => [canary, 100 - canary];

/** `n` sessions with the ranks the sidecar gives them, all on group `group`. */
function sessions(n: number, group = 1): SplitMember[] {
  return Array.from({ length: n }, (_, i) => ({ id: `s${i}`, rank: keyRank(`s${i}`), group }));
}

/** Applies a plan: each moved member takes its new group; returns how many moved. */
function apply(members: SplitMember[], weights: SplitWeights, movedCount: Map<string, number>): number {
  const moves = planMoves(weights, members);
  const byId = new Map(members.map((m) => [m.id, m]));
  for (const mv of moves) {
    const m = byId.get(mv.id)!;
    assert.equal(m.group, mv.from, `${mv.id} moves from the group it is in`);
    m.group = mv.to;
    movedCount.set(mv.id, (movedCount.get(mv.id) ?? 0) + 1);
  }
  return moves.length;
}

const countIn = (members: readonly SplitMember[], group: number): number => members.filter((m) => m.group === group).length;

describe('split targets', () => {
  test('round by largest remainder and always sum to the total', () => {
    assert.deepEqual(splitTargets([10, 90], 300), [30, 270]);
    assert.deepEqual(splitTargets([10, 90], 7), [1, 6]); // 0.7 / 6.3: the larger remainder gets the spare
    assert.deepEqual(splitTargets([50, 50], 3), [2, 1]); // a tie goes to the earlier group
    assert.deepEqual(splitTargets([34, 33, 33], 10), [4, 3, 3]);
    assert.deepEqual(splitTargets([0, 100], 5), [0, 5]);
    assert.deepEqual(splitTargets([10, 90], 0), [0, 0]);
    for (let total = 0; total < 200; total++) {
      for (const w of [[1, 99], [33, 33, 34], [10, 20, 30, 40], [100]]) {
        const t = splitTargets(w, total);
        assert.equal(t.reduce((a, b) => a + b, 0), total, `targets of ${w} over ${total} sum to it`);
        t.forEach((ti, i) => assert.ok(Math.abs(ti - (w[i]! * total) / 100) < 1, `target ${i} within one of the exact share`));
      }
    }
  });

  test('ranks fall into the groups by cumulative weight; a weight of 0 owns no rank', () => {
    assert.equal(groupOfRank([10, 90], 0.05), 0);
    assert.equal(groupOfRank([10, 90], 0.1), 1);
    assert.equal(groupOfRank([0, 100], 0), 1);
    assert.equal(groupOfRank([100, 0], 0.999999), 0);
  });
});

describe('split moves', () => {
  test('10 → 50 → 100 over 300 sessions: the share exact at each step, every session moved at most once', () => {
    const members = sessions(300);
    const moved = new Map<string, number>();
    const canaryAtStep = new Map<number, Set<string>>();
    for (const w of [10, 50, 100]) {
      apply(members, canaryAt(w), moved);
      assert.equal(countIn(members, 0), (300 * w) / 100, `canary holds ${w} %`);
      canaryAtStep.set(w, new Set(members.filter((m) => m.group === 0).map((m) => m.id)));
    }
    assert.equal(moved.size, 300, 'every session reached the canary');
    assert.deepEqual([...new Set(moved.values())], [1], 'and none moved twice');
    for (const id of canaryAtStep.get(10)!) assert.ok(canaryAtStep.get(50)!.has(id), `${id}, on the canary at 10 %, is still there at 50 %`);
    // The lowest ranks move first: the canary at 10 % holds the 30 lowest-ranked sessions.
    const lowest = [...members].sort((a, b) => a.rank - b.rank).slice(0, 30).map((m) => m.id);
    assert.deepEqual(new Set(lowest), canaryAtStep.get(10));
  });

  test('abort at 50 %: every canary session moves back, and only those', () => {
    const members = sessions(300);
    const moved = new Map<string, number>();
    apply(members, canaryAt(10), moved);
    apply(members, canaryAt(50), moved);
    const onCanary = new Set(members.filter((m) => m.group === 0).map((m) => m.id));
    const back = new Map<string, number>();
    assert.equal(apply(members, canaryAt(0), back), 150);
    assert.deepEqual(new Set(back.keys()), onCanary);
    assert.equal(countIn(members, 0), 0);
  });

  test('a shrinking canary gives back its highest ranks, so what stays is what would have moved first', () => {
    const members = sessions(200);
    const moved = new Map<string, number>();
    apply(members, canaryAt(50), moved);
    apply(members, canaryAt(20), moved);
    const kept = members.filter((m) => m.group === 0).map((m) => m.rank);
    const gone = members.filter((m) => m.group === 1 && moved.has(m.id)).map((m) => m.rank);
    assert.equal(kept.length, 40);
    assert.ok(Math.max(...kept) < Math.min(...gone), 'every kept rank is below every returned one');
  });

  test('arrivals and departures at a steady weight need no moves: arrivals alone keep the share within one session', () => {
    const members = sessions(100);
    const moved = new Map<string, number>();
    apply(members, canaryAt(10), moved);
    const weights = canaryAt(10);
    let next = 100;
    // A deterministic churn: every round two sessions leave (a pseudo-random pick) and three arrive.
    let seed = 7;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let round = 0; round < 200; round++) {
      for (let k = 0; k < 2; k++) members.splice(Math.floor(random() * members.length), 1);
      for (let k = 0; k < 3; k++) {
        const id = `s${next++}`;
        const rank = keyRank(id);
        const counts = [countIn(members, 0), countIn(members, 1)];
        members.push({ id, rank, group: groupForNewSession(weights, counts, rank) });
      }
      const target = splitTargets(weights, members.length)[0]!;
      assert.ok(Math.abs(countIn(members, 0) - target) <= 1, `round ${round}: canary ${countIn(members, 0)}, target ${target}`);
    }
    assert.equal(members.length, 300);
    // Departures can put a group under its target; arrivals fill the largest deficit first. With
    // this churn the canary stays within a few sessions of 10 %, and the plan at the same weight
    // is only the drift, never a reshuffle.
    const drift = planMoves(weights, members);
    assert.ok(drift.length <= 3, `a re-plan at the same weight would move only the drift (${drift.length})`);
  });

  test('a new session joins its rank\'s group when that group is short, else the furthest-behind one', () => {
    // 10 % of 10 sessions: the 11th session's rank in the canary slice and the canary short by one.
    assert.equal(groupForNewSession([10, 90], [0, 10], 0.05), 0);
    // The canary full: a canary-ranked session goes to the stable group.
    assert.equal(groupForNewSession([10, 90], [1, 9], 0.05), 1);
    // A weight of 0 never takes a session, whatever the counts.
    assert.equal(groupForNewSession([0, 100], [5, 0], 0.01), 1);
    // Both groups short: the rank decides.
    assert.equal(groupForNewSession([50, 50], [1, 0], 0.7), 1);
    assert.equal(groupForNewSession([20, 30, 50], [0, 0, 1], 0.3), 1);
  });

  test('three groups: every group reaches its target with the fewest moves', () => {
    const members = sessions(90, 2);
    const moved = new Map<string, number>();
    assert.equal(apply(members, [20, 30, 50], moved), 45);
    assert.deepEqual([countIn(members, 0), countIn(members, 1), countIn(members, 2)], [18, 27, 45]);
  });
});

describe('split pace', () => {
  test('moves start at the rate asked on a fake clock, and a stall is made up by at most one second', () => {
    let now = 1_000_000;
    let at = now;
    const starts: number[] = [];
    // The runner: start one, then wait until the next start time (the clock only moves by waiting).
    for (let i = 0; i < 50; i++) {
      starts.push(now);
      at = nextStartAt(at, now, 10);
      now = Math.max(now, at);
    }
    assert.equal(starts.at(-1)! - starts[0]!, 4900, '50 moves at 10/s take 4.9 s');
    // The event loop stalls 5 s: the schedule catches up only one second's worth (10 moves) plus
    // the one due now, not the 50 the stall cost.
    now += 5000;
    let burst = 0;
    while (nextStartAt(at, now, 10) <= now) {
      at = nextStartAt(at, now, 10);
      burst++;
    }
    assert.equal(burst, 11);
  });
});
