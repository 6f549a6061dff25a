import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createChooser, effectiveWeight, type BackendView, type Chooser } from '../sidecar/balancing/choose.js';
import { mulberry32 } from './prng.js';

function view(id: string, over: Partial<BackendView> = {}): BackendView {
  return {
    id,
    weight: 1,
    standby: false,
    state: 'enabled',
    sessions: 0,
    health: 'healthy',
    trialAvailable: true,
    trialDue: false,
    warmSince: 0,
    ...over,
  };
}

const ALGORITHMS = ['least-sessions', 'round-robin', 'consistent-hash'] as const;
const NOW = 1_000_000;

/** Choose `n` times, adding each pick to its backend's sessions; returns pick counts by id. */
function simulate(chooser: Chooser, views: BackendView[], n: number, keyOf?: (i: number) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const c = chooser.choose(views, { now: NOW, key: keyOf?.(i) });
    assert.ok(c);
    counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
    views.find((v) => v.id === c.id)!.sessions++;
  }
  return counts;
}

test('disabled, draining and excluded backends are never chosen (all algorithms)', () => {
  for (const algorithm of ALGORITHMS) {
    const chooser = createChooser({ algorithm, slowStart: 0, random: mulberry32(1) });
    const views = [
      view('off', { state: 'disabled', weight: 1000 }),
      view('drain', { state: 'draining', weight: 1000 }),
      view('ex', { weight: 1000 }),
      view('ok1'),
      view('ok2'),
    ];
    const excluded = new Set(['ex']);
    for (let i = 0; i < 2000; i++) {
      const c = chooser.choose(views, { now: NOW, excluded, key: `k${i}` });
      assert.ok(c && (c.id === 'ok1' || c.id === 'ok2'), `${algorithm} chose ${c?.id}`);
      assert.equal(c.panic, false);
    }
    // Nothing enabled and not excluded → undefined, not a disabled one.
    assert.equal(chooser.choose(views, { now: NOW, excluded: new Set(['ex', 'ok1', 'ok2']) }), undefined);
  }
});

test('standby backends are only used when no non-standby backend is usable', () => {
  for (const algorithm of ALGORITHMS) {
    const chooser = createChooser({ algorithm, slowStart: 0, random: mulberry32(2) });
    const views = [view('primary', { health: 'suspect' }), view('spare', { standby: true, weight: 1000 })];
    for (let i = 0; i < 500; i++) {
      assert.deepEqual(chooser.choose(views, { now: NOW, key: `k${i}` }), { id: 'primary', panic: false });
    }
    views[0]!.health = 'ejected';
    assert.deepEqual(chooser.choose(views, { now: NOW, key: 'x' }), { id: 'spare', panic: false });
    views[0]!.health = 'healthy';
    assert.deepEqual(chooser.choose(views, { now: NOW, key: 'x', excluded: new Set(['primary']) }), {
      id: 'spare',
      panic: false,
    });
  }
});

test('panic tier: with nothing usable, a tripped backend whose trial is available is chosen with panic=true', () => {
  for (const algorithm of ALGORITHMS) {
    const chooser = createChooser({ algorithm, slowStart: 0, random: mulberry32(3) });
    const views = [
      view('a', { health: 'tripped', trialAvailable: false }),
      view('b', { health: 'tripped', trialAvailable: true }),
      view('c', { health: 'ejected', trialAvailable: false }),
      view('s', { health: 'tripped', trialAvailable: true, standby: true }),
    ];
    for (let i = 0; i < 200; i++) {
      assert.deepEqual(chooser.choose(views, { now: NOW, key: `k${i}` }), { id: 'b', panic: true });
    }
    // Non-standby panic candidates first, then standby ones.
    views[1]!.trialAvailable = false;
    assert.deepEqual(chooser.choose(views, { now: NOW, key: 'k' }), { id: 's', panic: true });
    // A usable standby beats any panic candidate.
    views.push(view('s2', { standby: true }));
    assert.deepEqual(chooser.choose(views, { now: NOW, key: 'k' }), { id: 's2', panic: false });
    views.pop();
    // No trial available anywhere → undefined.
    views[3]!.trialAvailable = false;
    assert.equal(chooser.choose(views, { now: NOW, key: 'k' }), undefined);
    // Excluded backends are not panic candidates either.
    views[1]!.trialAvailable = true;
    assert.equal(chooser.choose(views, { now: NOW, key: 'k', excluded: new Set(['b']) }), undefined);
  }
});

test('a tripped backend whose open period is over competes with usable ones for its trial', () => {
  const chooser = createChooser({ algorithm: 'round-robin', slowStart: 0 });
  const views = [view('ok'), view('tripped', { health: 'tripped', trialDue: false })];
  const picks = new Set<string>();
  for (let i = 0; i < 10; i++) picks.add(chooser.choose(views, { now: NOW })!.id);
  assert.deepEqual([...picks], ['ok']);
  views[1]!.trialDue = true;
  for (let i = 0; i < 10; i++) picks.add(chooser.choose(views, { now: NOW })!.id);
  assert.ok(picks.has('tripped'), 'the due trial is offered while another backend is usable');
  assert.equal(chooser.choose([views[1]!], { now: NOW })!.panic, false);
});

test('least-sessions prefers the emptier backend', () => {
  const chooser = createChooser({ algorithm: 'least-sessions', slowStart: 0, random: mulberry32(4) });
  const views = [view('busy', { sessions: 10 }), view('empty', { sessions: 0 })];
  for (let i = 0; i < 100; i++) assert.equal(chooser.choose(views, { now: NOW })!.id, 'empty');
  // Load is per unit weight: 10 sessions on weight 10 beats 2 sessions on weight 1.
  const weighted = [view('big', { weight: 10, sessions: 10 }), view('small', { weight: 1, sessions: 2 })];
  for (let i = 0; i < 100; i++) assert.equal(chooser.choose(weighted, { now: NOW })!.id, 'big');
  // With many backends the emptiest wins whenever it is one of the two drawn (~2/n + ...), far above 1/n.
  const many = Array.from({ length: 10 }, (_, i) => view(`b${i}`, { sessions: i === 7 ? 0 : 50 }));
  let hits = 0;
  for (let i = 0; i < 10_000; i++) if (chooser.choose(many, { now: NOW })!.id === 'b7') hits++;
  assert.ok(Math.abs(hits / 10_000 - 0.2) < 0.02, `emptiest chosen ${hits}/10000, expected ~20%`);
});

test('least-sessions spreads sessions in proportion to weight (10k draws)', () => {
  const chooser = createChooser({ algorithm: 'least-sessions', slowStart: 0, random: mulberry32(5) });
  const views = [view('a', { weight: 1 }), view('b', { weight: 2 }), view('c', { weight: 7 })];
  const counts = simulate(chooser, views, 10_000);
  for (const [id, w] of [['a', 0.1], ['b', 0.2], ['c', 0.7]] as const) {
    const share = (counts.get(id) ?? 0) / 10_000;
    assert.ok(Math.abs(share - w) < 0.01, `${id}: share ${share}, expected ${w}`);
  }
});

test('least-sessions weighted draw: the pair is drawn in proportion to weight', () => {
  // With 3 backends and equal load per weight everywhere, the winner is decided by the draw alone:
  // ties go to the first drawn, so the pick frequency equals P(first draw) = w / sum(w).
  const chooser = createChooser({ algorithm: 'least-sessions', slowStart: 0, random: mulberry32(6) });
  // (sessions + 1) / weight = 1 for all three.
  const views = [view('a', { weight: 1, sessions: 0 }), view('b', { weight: 3, sessions: 2 }), view('c', { weight: 6, sessions: 5 })];
  const counts = new Map<string, number>();
  for (let i = 0; i < 10_000; i++) {
    const id = chooser.choose(views, { now: NOW })!.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  for (const [id, w] of [['a', 0.1], ['b', 0.3], ['c', 0.6]] as const) {
    const share = (counts.get(id) ?? 0) / 10_000;
    assert.ok(Math.abs(share - w) < 0.02, `${id}: share ${share}, expected ${w}`);
  }
});

test('round-robin: smooth weighted sequence for weights 5,1,1 is a a b a c a a', () => {
  const chooser = createChooser({ algorithm: 'round-robin', slowStart: 0 });
  const views = [view('a', { weight: 5 }), view('b', { weight: 1 }), view('c', { weight: 1 })];
  const seq: string[] = [];
  for (let i = 0; i < 14; i++) seq.push(chooser.choose(views, { now: NOW })!.id);
  assert.equal(seq.join(''), 'aabacaa'.repeat(2));
});

test('round-robin: equal weights rotate; an excluded backend is skipped and the rotation continues', () => {
  const chooser = createChooser({ algorithm: 'round-robin', slowStart: 0 });
  const views = [view('a'), view('b'), view('c')];
  const seq: string[] = [];
  for (let i = 0; i < 6; i++) seq.push(chooser.choose(views, { now: NOW })!.id);
  assert.equal(seq.join(''), 'abcabc');
  const excluded = new Set(['b']);
  const seq2: string[] = [];
  for (let i = 0; i < 4; i++) seq2.push(chooser.choose(views, { now: NOW, excluded })!.id);
  assert.ok(!seq2.includes('b'));
  assert.equal(seq2.filter((x) => x === 'a').length, 2);
});

test('round-robin: exact shares over a full cycle and survives backends leaving', () => {
  const chooser = createChooser({ algorithm: 'round-robin', slowStart: 0 });
  const views = [view('a', { weight: 3 }), view('b', { weight: 2 }), view('gone', { weight: 4 })];
  chooser.choose(views, { now: NOW });
  views.pop(); // 'gone' removed from the config: its counter is dropped, a/b keep rotating 3:2
  const counts = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    const id = chooser.choose(views, { now: NOW })!.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  assert.equal(counts.get('gone'), undefined);
  assert.ok(Math.abs(counts.get('a')! - 300) <= 3 && Math.abs(counts.get('b')! - 200) <= 3, JSON.stringify([...counts]));
});

test('slow start ramps a new backend from 10% to its full weight', () => {
  const slowStart = 60_000;
  assert.equal(effectiveWeight(view('x', { weight: 10, warmSince: NOW }), NOW, slowStart), 1);
  assert.equal(effectiveWeight(view('x', { weight: 10, warmSince: NOW }), NOW + 30_000, slowStart), 5);
  assert.equal(effectiveWeight(view('x', { weight: 10, warmSince: NOW }), NOW + 90_000, slowStart), 10);
  assert.equal(effectiveWeight(view('x', { weight: 10, warmSince: NOW }), NOW, 0), 10);

  // Round-robin (deterministic): shares are exactly w_eff / sum(w_eff).
  const share = (elapsed: number): number => {
    const chooser = createChooser({ algorithm: 'round-robin', slowStart });
    const views = [view('old', { weight: 10, warmSince: 0 }), view('new', { weight: 10, warmSince: NOW })];
    let n = 0;
    for (let i = 0; i < 1100; i++) if (chooser.choose(views, { now: NOW + elapsed })!.id === 'new') n++;
    return n / 1100;
  };
  assert.ok(Math.abs(share(0) - 1 / 11) < 0.005, `t=0 share ${share(0)}`);
  assert.ok(Math.abs(share(30_000) - 1 / 3) < 0.005, `t=30s share ${share(30_000)}`);
  assert.ok(Math.abs(share(60_000) - 1 / 2) < 0.005, `t=60s share ${share(60_000)}`);

  // Least-sessions: the warming backend fills up proportionally slower.
  const chooser = createChooser({ algorithm: 'least-sessions', slowStart, random: mulberry32(7) });
  const views = [view('old', { warmSince: 0 }), view('new', { warmSince: NOW })];
  const counts = simulate(chooser, views, 10_000);
  const newShare = counts.get('new')! / 10_000;
  assert.ok(Math.abs(newShare - 1 / 11) < 0.01, `least-sessions new share ${newShare}`);
});

test('consistent-hash: same key → same backend; shares follow weight', () => {
  const chooser = createChooser({ algorithm: 'consistent-hash', slowStart: 0, random: mulberry32(8) });
  const views = [view('a', { weight: 1 }), view('b', { weight: 2 }), view('c', { weight: 3 }), view('d', { weight: 4 })];
  const first = new Map<string, string>();
  const counts = new Map<string, number>();
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    const key = `user-${i}`;
    const id = chooser.choose(views, { now: NOW, key })!.id;
    first.set(key, id);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  // Load changes must not matter for a keyed request.
  views[0]!.sessions = 1000;
  for (let i = 0; i < N; i += 7) assert.equal(chooser.choose(views, { now: NOW, key: `user-${i}` })!.id, first.get(`user-${i}`));
  for (const [id, w] of [['a', 0.1], ['b', 0.2], ['c', 0.3], ['d', 0.4]] as const) {
    const share = counts.get(id)! / N;
    assert.ok(Math.abs(share - w) < 0.015, `${id}: share ${share}, expected ${w}`);
  }
});

test('consistent-hash: removing a backend moves only the keys that were on it', () => {
  const chooser = createChooser({ algorithm: 'consistent-hash', slowStart: 0 });
  const views = ['a', 'b', 'c', 'd', 'e'].map((id) => view(id));
  const before = new Map<string, string>();
  for (let i = 0; i < 5000; i++) before.set(`k${i}`, chooser.choose(views, { now: NOW, key: `k${i}` })!.id);

  // Removed from the list, or excluded (failover), or ejected: all take it out of the tier.
  const without = views.filter((v) => v.id !== 'c');
  const ejected = views.map((v) => (v.id === 'c' ? { ...v, health: 'ejected' as const } : v));
  for (const [label, vs, excluded] of [
    ['removed', without, undefined],
    ['excluded', views, new Set(['c'])],
    ['ejected', ejected, undefined],
  ] as const) {
    let moved = 0;
    for (const [key, was] of before) {
      const now = chooser.choose(vs, { now: NOW, key, excluded })!.id;
      if (was === 'c') {
        assert.notEqual(now, 'c');
        moved++;
      } else {
        assert.equal(now, was, `${label}: key ${key} moved from ${was} to ${now}`);
      }
    }
    assert.ok(moved > 700 && moved < 1300, `${label}: ${moved} keys were on c`);
  }
  // And when c comes back, its keys return to it.
  for (const [key, was] of before) assert.equal(chooser.choose(views, { now: NOW, key })!.id, was);

  // Adding a backend only takes keys onto the new one.
  const plus = [...views, view('f')];
  let gained = 0;
  for (const [key, was] of before) {
    const now = chooser.choose(plus, { now: NOW, key })!.id;
    if (now === 'f') gained++;
    else assert.equal(now, was);
  }
  assert.ok(gained > 600 && gained < 1100, `f gained ${gained}`);
});

test('consistent-hash: key and id are separated (no concatenation collisions) and order does not matter', () => {
  const chooser = createChooser({ algorithm: 'consistent-hash', slowStart: 0 });
  const views = Array.from({ length: 8 }, (_, i) => view(`n${i}`));
  const reversed = [...views].reverse();
  for (let i = 0; i < 1000; i++) {
    const key = `s${i}`;
    assert.equal(chooser.choose(views, { now: NOW, key })!.id, chooser.choose(reversed, { now: NOW, key })!.id);
  }
});

test('consistent-hash without a key falls back to least-sessions', () => {
  const chooser = createChooser({ algorithm: 'consistent-hash', slowStart: 0, random: mulberry32(9) });
  const views = [view('busy', { sessions: 5 }), view('empty')];
  for (let i = 0; i < 50; i++) assert.equal(chooser.choose(views, { now: NOW })!.id, 'empty');
});
