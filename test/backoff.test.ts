import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, type BackoffPolicy } from '../common/backoff.js';
import { mulberry32 } from './prng.js';

const policy: BackoffPolicy = { initial: 100, max: 1000, multiplier: 2, jitter: 0 };

test('backoff grows by the multiplier from initial and is capped at max', () => {
  const delays = Array.from({ length: 7 }, (_, i) => backoffDelay(i, policy));
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(backoffDelay(10_000, policy), 1000, 'huge attempt numbers do not overflow');
  assert.equal(backoffDelay(-3, policy), 100);
  assert.equal(backoffDelay(Number.NaN, policy), 100);
  assert.equal(backoffDelay(2, { ...policy, multiplier: 1.5 }), 225);
  assert.equal(backoffDelay(0, { ...policy, initial: 5000 }), 1000, 'initial above max is capped');
});

test('backoff jitter stays within ±jitter × delay, is an integer and centred', () => {
  const jp = { ...policy, jitter: 0.5 };
  assert.equal(backoffDelay(3, jp, () => 0), 400);
  assert.equal(backoffDelay(3, jp, () => 0.5), 800);
  assert.equal(backoffDelay(3, jp, () => 0.999999), 1200);
  const rnd = mulberry32(1);
  for (const attempt of [0, 2, 4, 9]) {
    const base = Math.min(1000, 100 * 2 ** attempt);
    let sum = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < 10_000; i++) {
      const d = backoffDelay(attempt, jp, rnd);
      assert.ok(Number.isInteger(d));
      lo = Math.min(lo, d);
      hi = Math.max(hi, d);
      sum += d;
    }
    assert.ok(lo >= base * 0.5 && hi <= base * 1.5, `attempt ${attempt}: [${lo}, ${hi}] outside ±50% of ${base}`);
    assert.ok(lo < base * 0.55 && hi > base * 1.45, `attempt ${attempt}: jitter did not spread [${lo}, ${hi}]`);
    assert.ok(Math.abs(sum / 10_000 - base) < base * 0.02, `attempt ${attempt}: mean ${sum / 10_000}`);
  }
});

test('backoff with full jitter is never negative nor above max × 2', () => {
  const fp = { ...policy, jitter: 1 };
  assert.equal(backoffDelay(0, fp, () => 0), 0);
  const rnd = mulberry32(2);
  for (let i = 0; i < 10_000; i++) {
    const d = backoffDelay(i % 12, fp, rnd);
    assert.ok(d >= 0 && d <= 2000, String(d));
  }
  // Out-of-range jitter is clamped to 0..1.
  assert.equal(backoffDelay(0, { ...policy, jitter: 5 }, () => 0), 0);
  assert.equal(backoffDelay(0, { ...policy, jitter: -1 }, () => 0), 100);
});
