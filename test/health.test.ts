import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker } from '../sidecar/health/breaker.js';
import { PhiAccrualDetector, PHI_MAX } from '../sidecar/health/phi.js';
import { healthStatuses } from '../sidecar/health/ejection.js';
import { mulberry32 } from './prng.js';

// ---- circuit breaker ---------------------------------------------------------------------------

test('breaker trips at the threshold and stays open until retryAt', () => {
  const b = new CircuitBreaker({ threshold: 3, openBase: 1000, openMax: 10_000 });
  assert.equal(b.state, 'closed');
  b.onFailure(100);
  b.onFailure(200);
  assert.equal(b.state, 'closed');
  assert.equal(b.consecutiveFailures, 2);
  assert.equal(b.tryAcquire(250, false), true);
  b.onFailure(300);
  assert.equal(b.state, 'open');
  assert.equal(b.consecutiveFailures, 3);
  assert.equal(b.retryAt, 1300);
  assert.equal(b.trialAvailable(1299, false), false);
  assert.equal(b.tryAcquire(1299, false), false);
  assert.equal(b.state, 'open');
  // trialAvailable does not claim anything.
  assert.equal(b.trialAvailable(1300, false), true);
  assert.equal(b.state, 'open');
  assert.equal(b.tryAcquire(1300, false), true);
  assert.equal(b.state, 'half-open');
});

test('breaker: a success in closed state resets the failure count', () => {
  const b = new CircuitBreaker({ threshold: 3, openBase: 1000, openMax: 10_000 });
  b.onFailure(0);
  b.onFailure(0);
  b.onSuccess();
  assert.equal(b.consecutiveFailures, 0);
  b.onFailure(0);
  b.onFailure(0);
  assert.equal(b.state, 'closed');
});

test('breaker: one half-open trial at a time; success closes and resets', () => {
  const b = new CircuitBreaker({ threshold: 1, openBase: 1000, openMax: 10_000 });
  b.onFailure(0);
  assert.equal(b.tryAcquire(1000, false), true);
  assert.equal(b.tryAcquire(1000, false), false);
  assert.equal(b.tryAcquire(5000, true), false, 'panic does not bypass the single-trial rule');
  assert.equal(b.trialAvailable(5000, true), false);
  b.onSuccess();
  assert.equal(b.state, 'closed');
  assert.equal(b.consecutiveFailures, 0);
  assert.equal(b.retryAt, 0);
  // Trips were reset too: the next trip uses openBase again.
  b.onFailure(20_000);
  assert.equal(b.retryAt, 21_000);
});

test('breaker: a failed trial reopens with a doubled duration, capped at openMax', () => {
  const b = new CircuitBreaker({ threshold: 2, openBase: 1000, openMax: 5000 });
  let now = 0;
  b.onFailure(now);
  b.onFailure(now);
  const durations = [b.retryAt - now];
  for (let i = 0; i < 5; i++) {
    now = b.retryAt;
    assert.equal(b.tryAcquire(now, false), true);
    b.onFailure(now);
    assert.equal(b.state, 'open');
    durations.push(b.retryAt - now);
  }
  assert.deepEqual(durations, [1000, 2000, 4000, 5000, 5000, 5000]);
});

test('breaker: panic bypasses the wait but not the single trial', () => {
  const b = new CircuitBreaker({ threshold: 1, openBase: 60_000, openMax: 60_000 });
  b.onFailure(0);
  assert.equal(b.trialAvailable(10, false), false);
  assert.equal(b.trialAvailable(10, true), true);
  assert.equal(b.tryAcquire(10, false), false);
  assert.equal(b.tryAcquire(10, true), true);
  assert.equal(b.state, 'half-open');
  assert.equal(b.tryAcquire(10, true), false);
  b.onFailure(20);
  assert.equal(b.state, 'open');
  assert.equal(b.retryAt, 20 + 60_000);
});

test('breaker: release() gives the trial back without a verdict', () => {
  const b = new CircuitBreaker({ threshold: 1, openBase: 1000, openMax: 8000 });
  b.onFailure(0);
  assert.equal(b.tryAcquire(1000, false), true);
  b.release();
  assert.equal(b.state, 'open');
  assert.equal(b.retryAt, 1000);
  assert.equal(b.consecutiveFailures, 1);
  assert.equal(b.tryAcquire(1000, false), true, 'trial can be claimed again');
  b.onFailure(1000);
  assert.equal(b.retryAt, 3000, 'release did not count as a trip');
  // No-op when closed.
  b.reset();
  b.release();
  assert.equal(b.state, 'closed');
});

test('breaker: a late failure while open does not extend the wait', () => {
  const b = new CircuitBreaker({ threshold: 1, openBase: 1000, openMax: 8000 });
  b.onFailure(0);
  b.onFailure(500);
  assert.equal(b.retryAt, 1000);
  assert.equal(b.consecutiveFailures, 2);
});

test('breaker: threshold 0 disables it but still counts failures', () => {
  for (const threshold of [0, -1]) {
    const b = new CircuitBreaker({ threshold, openBase: 1000, openMax: 1000 });
    for (let i = 0; i < 100; i++) b.onFailure(i);
    assert.equal(b.state, 'closed');
    assert.equal(b.consecutiveFailures, 100);
    assert.equal(b.tryAcquire(100, false), true);
    assert.equal(b.tryAcquire(100, false), true);
    assert.equal(b.trialAvailable(100, false), true);
    b.onSuccess();
    assert.equal(b.consecutiveFailures, 0);
  }
});

// ---- φ accrual -----------------------------------------------------------------------------------

const PHI_OPTS = { windowSize: 100, minStdDev: 100, acceptablePause: 0 };

/** `count` regular ~1 s heartbeats with ±50 ms jitter. */
function feed(d: PhiAccrualDetector, count: number, seed = 1): void {
  const rnd = mulberry32(seed);
  let t = 0;
  for (let i = 0; i < count; i++) {
    d.heartbeat(t);
    t += 1000 + (rnd() - 0.5) * 100;
  }
}

test('φ is 0 until two heartbeats give an interval', () => {
  const d = new PhiAccrualDetector(PHI_OPTS);
  assert.equal(d.phi(10_000), 0);
  d.heartbeat(0);
  assert.equal(d.heartbeats, 1);
  assert.equal(d.phi(10_000), 0);
  d.heartbeat(1000);
  assert.equal(d.heartbeats, 2);
  assert.ok(d.phi(10_000) > 16);
});

test('φ matches −log10(1 − Φ(y)) of the normal distribution closely', () => {
  const d = new PhiAccrualDetector(PHI_OPTS);
  for (let t = 0; t <= 10_000; t += 1000) d.heartbeat(t); // mean 1000, stddev 0 → minStdDev 100
  const last = 10_000;
  // Upper-tail probabilities of N(0,1) at y = 0, 1, 2.
  assert.ok(Math.abs(d.phi(last + 1000) - -Math.log10(0.5)) < 1e-9);
  assert.ok(Math.abs(d.phi(last + 1100) - -Math.log10(0.158655)) < 0.02);
  assert.ok(Math.abs(d.phi(last + 1200) - -Math.log10(0.0227501)) < 0.02);
  // acceptablePause shifts the mean.
  const p = new PhiAccrualDetector({ ...PHI_OPTS, acceptablePause: 3000 });
  for (let t = 0; t <= 10_000; t += 1000) p.heartbeat(t);
  assert.ok(Math.abs(p.phi(last + 4000) - Math.log10(2)) < 1e-9);
  assert.ok(p.phi(last + 3500) < 0.01);
});

test('φ stays low with regular heartbeats and rises monotonically, past 16, when they stop', () => {
  const d = new PhiAccrualDetector(PHI_OPTS);
  const rnd = mulberry32(11);
  let t = 0;
  let last = 0;
  for (let i = 0; i < 300; i++) {
    d.heartbeat(t);
    last = t;
    // Just before the next beat is due, suspicion is low.
    t += 1000 + (rnd() - 0.5) * 100;
    if (i > 2) assert.ok(d.phi(t) < 3, `φ ${d.phi(t)} at beat ${i}`);
  }
  d.heartbeat(t);
  last = t;
  assert.ok(d.phi(last + 1000) < 1);
  let prev = -1;
  let crossed16At = -1;
  for (let dt = 0; dt <= 60_000; dt += 10) {
    const phi = d.phi(last + dt);
    assert.ok(Number.isFinite(phi), `φ not finite at +${dt}`);
    assert.ok(phi >= prev, `φ decreased at +${dt}: ${prev} → ${phi}`);
    assert.ok(phi <= PHI_MAX);
    if (crossed16At < 0 && phi >= 16) crossed16At = dt;
    prev = phi;
  }
  assert.ok(crossed16At > 1000 && crossed16At < 10_000, `crossed 16 at +${crossed16At} ms`);
  assert.equal(d.phi(last + 1e9), PHI_MAX);
  assert.equal(d.phi(last + Number.MAX_VALUE), PHI_MAX);
});

test('φ window slides: the detector adapts to a new heartbeat rate', () => {
  const d = new PhiAccrualDetector({ windowSize: 20, minStdDev: 100, acceptablePause: 0 });
  let t = 0;
  for (let i = 0; i < 50; i++, t += 1000) d.heartbeat(t);
  const last1 = t - 1000;
  assert.ok(d.phi(last1 + 5000) > 16, 'a 5 s gap is alarming at a 1 s rate');
  for (let i = 0; i < 25; i++, t += 5000) d.heartbeat(t); // > windowSize intervals at 5 s
  const last2 = t - 5000;
  assert.ok(Math.abs(d.phi(last2 + 5000) - Math.log10(2)) < 1e-6, `φ ${d.phi(last2 + 5000)} after adapting`);
  // Long runs keep the running sums exact (periodic recomputation).
  for (let i = 0; i < 100_000; i++, t += 1000 + (i % 7)) d.heartbeat(t);
  assert.ok(d.phi(t - (1000 + (100_000 % 7)) + 1003) < 1);
});

test('φ reset forgets history', () => {
  const d = new PhiAccrualDetector(PHI_OPTS);
  feed(d, 10);
  assert.equal(d.heartbeats, 10);
  d.reset();
  assert.equal(d.heartbeats, 0);
  assert.equal(d.phi(1e6), 0);
  d.heartbeat(0);
  assert.equal(d.phi(1e6), 0);
});

// ---- ejection ------------------------------------------------------------------------------------

const hb = (id: string, phi: number, breakerOpen = false, consecutiveFailures = 0) => ({
  id,
  phi,
  breakerOpen,
  consecutiveFailures,
});

test('ejection cap: 3 backends at 50% → at most one ejected, highest φ first, the rest suspect', () => {
  const s = healthStatuses([hb('a', 20), hb('b', 30), hb('c', 17)], 16, 50);
  assert.deepEqual(Object.fromEntries(s), { a: 'suspect', b: 'ejected', c: 'suspect' });
});

test('ejection cap counts tripped backends', () => {
  const s = healthStatuses([hb('a', 20), hb('b', 0, true), hb('c', 30), hb('d', 1)], 16, 50);
  // cap = floor(4 × 0.5) = 2: b is tripped (1), c has the highest φ (2), a is over but capped.
  assert.deepEqual(Object.fromEntries(s), { a: 'suspect', b: 'tripped', c: 'ejected', d: 'healthy' });
  // Tripped always shows as tripped, even beyond the cap.
  const all = healthStatuses([hb('a', 0, true), hb('b', 0, true), hb('c', 50, true)], 16, 10);
  assert.deepEqual([...all.values()], ['tripped', 'tripped', 'tripped']);
});

test('ejection: at least one may be ejected; larger fleets follow the percentage', () => {
  assert.equal(healthStatuses([hb('a', 99), hb('b', 1)], 16, 0).get('a'), 'ejected');
  const ten = Array.from({ length: 10 }, (_, i) => hb(`b${i}`, 100 + i));
  const s = healthStatuses(ten, 16, 30);
  assert.deepEqual(
    ten.filter((b) => s.get(b.id) === 'ejected').map((b) => b.id),
    ['b7', 'b8', 'b9'],
  );
  assert.equal([...s.values()].filter((x) => x === 'suspect').length, 7);
});

test('ejection: suspect on failures or φ ≥ threshold/2, otherwise healthy', () => {
  const s = healthStatuses([hb('ok', 7.9), hb('half', 8), hb('fails', 0, false, 1), hb('fine', 0)], 16, 100);
  assert.deepEqual(Object.fromEntries(s), { ok: 'healthy', half: 'suspect', fails: 'suspect', fine: 'healthy' });
  assert.equal(healthStatuses([], 16, 50).size, 0);
});
