// The session machine (sidecar/session-machine.ts): one test per transition and per race. No
// sockets and no clock: `now` is a plain number, the policy is fixed and its random() constant, and
// states are reached by driving the machine itself from openState().
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backoffDelay } from '../common/backoff.js';
import {
  openState,
  step,
  type Effect,
  type MachinePolicy,
  type Phase,
  type SessionEvent,
  type SessionState,
  type Step,
} from '../sidecar/session-machine.js';

// ---- builders ----------------------------------------------------------------------------------

const A = 'a';
const B = 'b';
const C = 'c';
/** When the migration is asked for, or the serving leg is lost. */
const T0 = 1_000_000;
/** When the migration's next leg opens. */
const DIALLED = T0 + 100;

const POLICY: MachinePolicy = {
  failoverDeadline: 10_000,
  // random() = 0.75 → every delay is base × 1.25: 125, 250, 500, …
  backoff: { initial: 100, max: 2000, multiplier: 2, jitter: 0.5 },
  closeCodes: [1001, 1011, 1012],
  drainTimeout: 5000,
  quietPeriod: 200,
  maxQuietWait: 1000,
  codec: false,
  resumes: false,
  resumeTimeout: 5_000,
  random: () => 0.75,
};
const CODEC: MachinePolicy = { ...POLICY, codec: true };

function run(state: SessionState, event: SessionEvent, now: number, policy: MachinePolicy = POLICY): Step {
  return step(state, event, now, policy);
}

const migrate = (target: string | null = null): SessionEvent => ({ type: 'migrate', reason: 'drain', target });
const dialled = (leg: number, backend: string | null, lastActiveAt = DIALLED, settled = false): SessionEvent => ({
  type: 'dialled',
  leg,
  backend,
  lastActiveAt,
  settled,
});
const legClosed = (leg: number, code: number, reason = '', protocolError = 0): SessionEvent => ({ type: 'leg-closed', leg, code, reason, protocolError });
const oldMessage = (leg: number, settled = false): SessionEvent => ({ type: 'old-message', leg, settled });
const TIMER: SessionEvent = { type: 'timer' };
const WAIT_OVER: SessionEvent = { type: 'wait-over' };
const clientClosed = (code: number | null = 1000, reason = 'bye'): SessionEvent => ({ type: 'client-closed', code, reason });

type Kind = Effect['kind'];
type EffectOf<K extends Kind> = Extract<Effect, { kind: K }>;

function effectsOf<K extends Kind>(s: Step, kind: K): EffectOf<K>[] {
  return s.effects.filter((e): e is EffectOf<K> => e.kind === kind);
}
/** The one effect of `kind` (fails on none or several). */
function one<K extends Kind>(s: Step, kind: K): EffectOf<K> {
  const found = effectsOf(s, kind);
  assert.equal(found.length, 1, `one ${kind} effect expected in ${JSON.stringify(s.effects)}`);
  return found[0]!;
}
function none(s: Step, ...kinds: Kind[]): void {
  for (const kind of kinds) assert.deepEqual(effectsOf(s, kind), [], `no ${kind} effect expected`);
}
/** Where `kind` first comes in the effects (for order that matters). */
function indexOf(s: Step, kind: Kind): number {
  const i = s.effects.findIndex((e) => e.kind === kind);
  assert.ok(i >= 0, `${kind} effect expected in ${JSON.stringify(s.effects)}`);
  return i;
}

function phaseOf<N extends Phase['name']>(s: Step | SessionState, name: N): Extract<Phase, { name: N }> {
  const state = 'effects' in s ? s.state : s;
  assert.equal(state.phase.name, name, `phase ${JSON.stringify(state.phase)}`);
  return state.phase as Extract<Phase, { name: N }>;
}

/** The event changes nothing: the very same state, no effect. */
function ignored(state: SessionState, event: SessionEvent, now: number, policy: MachinePolicy = POLICY): void {
  const s = run(state, event, now, policy);
  assert.equal(s.state, state, `${event.type}: state unchanged`);
  assert.deepEqual(s.effects, [], `${event.type}: no effects`);
}

// The states the tests start from, each reached through the machine.

/** Serving leg 1 on A. */
const opened = (): SessionState => openState(A);
/** A migration (reason 'drain') asked at T0, dialling leg 2. */
const migrationDialling = (target: string | null = null): SessionState => run(opened(), migrate(target), T0).state;
/** Leg 2 to B opened at DIALLED; the old leg was last active `lastActiveAt`. */
const drainingStep = (o: { lastActiveAt?: number; settled?: boolean; policy?: MachinePolicy } = {}): Step =>
  run(migrationDialling(), dialled(2, B, o.lastActiveAt ?? DIALLED, o.settled ?? false), DIALLED, o.policy);
const draining = (policy: MachinePolicy = POLICY): SessionState => drainingStep({ policy }).state;
/** Draining, and the old leg was let go (quiet) at DIALLED + quietPeriod. */
const closingDrain = (): SessionState => run(draining(), TIMER, DIALLED + POLICY.quietPeriod).state;
/** Leg 1 lost (1006) at T0, dialling leg 2. */
const failingOver = (): SessionState => run(opened(), legClosed(1, 1006), T0).state;
/** Failing over, the first pass failed at T0 + 50: waiting between passes. */
const failoverWaiting = (): SessionState => run(failingOver(), dialled(2, null), T0 + 50).state;
/** Closed by the backend (4000). */
const closedByBackend = (): SessionState => run(opened(), legClosed(1, 4000, 'done'), T0).state;

// ---- open --------------------------------------------------------------------------------------

describe('open', () => {
  test('migrate: dials the next leg, excluding the current backend', () => {
    const s = run(opened(), { type: 'migrate', reason: 'admin', target: null }, T0);
    assert.deepEqual(phaseOf(s, 'migration-dialling'), { name: 'migration-dialling', leg: { no: 1, backend: A }, reason: 'admin', dialling: 2 });
    assert.equal(s.state.legs, 2);
    assert.deepEqual(s.effects, [{ kind: 'dial', leg: 2, target: null, exclude: A }]);
  });

  test('migrate to a named target: the dial goes to it', () => {
    const s = run(opened(), migrate(C), T0);
    assert.deepEqual(s.effects, [{ kind: 'dial', leg: 2, target: C, exclude: A }]);
  });

  test('migrate to the current backend: refused, failed', () => {
    const state = opened();
    const s = run(state, migrate(A), T0);
    assert.equal(s.state, state);
    assert.deepEqual(s.effects, [{ kind: 'migration-refused', result: 'failed' }]);
  });

  test('migrate while a migration is under way: refused, busy', () => {
    for (const state of [migrationDialling(), draining(), closingDrain()]) {
      const s = run(state, migrate(), DIALLED + 500);
      assert.equal(s.state, state);
      assert.deepEqual(s.effects, [{ kind: 'migration-refused', result: 'busy' }]);
    }
  });

  test('migrate when closed: refused, closed', () => {
    const state = closedByBackend();
    const s = run(state, migrate(), T0 + 1);
    assert.equal(s.state, state);
    assert.deepEqual(s.effects, [{ kind: 'migration-refused', result: 'closed' }]);
  });

  test('leg closed with a failover code: failing over (old leg dropped with 1001, hold, dial excluding it)', () => {
    const s = run(opened(), legClosed(1, 1012, 'restart'), T0);
    assert.deepEqual(phaseOf(s, 'failing-over'), {
      name: 'failing-over',
      failed: A,
      switch: { reason: 'close-code', startedAt: T0 },
      pass: 0,
      deadline: T0 + POLICY.failoverDeadline,
      dialling: 2,
    });
    assert.equal(s.state.legs, 2);
    assert.deepEqual(s.effects, [
      { kind: 'drop-leg', leg: 1, code: 1001, reason: 'failing over', terminate: false },
      { kind: 'hold' },
      { kind: 'failover-started', reason: 'close-code', failed: A, detail: 'backend closed with 1012' },
      { kind: 'dial', leg: 2, target: null, exclude: A },
    ]);
  });

  test('leg closed abnormally (1006): failing over with reason error', () => {
    const s = run(opened(), legClosed(1, 1006), T0);
    assert.equal(phaseOf(s, 'failing-over').switch.reason, 'error');
    assert.equal(one(s, 'failover-started').reason, 'error');
    assert.deepEqual(one(s, 'dial'), { kind: 'dial', leg: 2, target: null, exclude: A });
  });

  test('leg closed with a code that is not a failover code: closed, backend-closed, the code relayed to the client', () => {
    const s = run(opened(), legClosed(1, 4000, 'game over'), T0);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'backend-closed' });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'drop-leg', leg: 1, code: null, reason: 'game over', terminate: false },
      { kind: 'close-client', code: 4000, reason: 'game over' },
      { kind: 'ended', why: 'backend-closed', detail: 'backend closed with 4000' },
    ]);
  });

  test('leg closed after a protocol error: closed, protocol-error, the client gets that code', () => {
    const s = run(opened(), legClosed(1, 1006, '', 1009), T0);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'protocol-error' });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 1009, reason: 'backend message too big' });
    assert.deepEqual(one(s, 'ended'), { kind: 'ended', why: 'protocol-error', detail: 'backend message too big (1009)' });
    none(s, 'dial', 'hold', 'failover-started');
    const other = run(opened(), legClosed(1, 1006, '', 1002), T0);
    assert.deepEqual(one(other, 'close-client'), { kind: 'close-client', code: 1002, reason: 'backend protocol error' });
  });

  test('pong timeout: failing over with reason pong-timeout', () => {
    const s = run(opened(), { type: 'pong-timeout', leg: 1 }, T0);
    assert.deepEqual(phaseOf(s, 'failing-over').switch, { reason: 'pong-timeout', startedAt: T0 });
    assert.deepEqual(s.effects, [
      { kind: 'drop-leg', leg: 1, code: 1001, reason: 'failing over', terminate: false },
      { kind: 'hold' },
      { kind: 'failover-started', reason: 'pong-timeout', failed: A, detail: 'no pong in time' },
      { kind: 'dial', leg: 2, target: null, exclude: A },
    ]);
  });

  test('pong timeout or close of a stale leg: nothing', () => {
    ignored(opened(), { type: 'pong-timeout', leg: 7 }, T0);
    ignored(opened(), legClosed(7, 1006), T0);
  });

  test('a timer or wait-over while open: nothing', () => {
    ignored(opened(), TIMER, T0);
    ignored(opened(), WAIT_OVER, T0);
    ignored(opened(), oldMessage(1), T0);
  });
});

// ---- migration-dialling ------------------------------------------------------------------------

describe('migration-dialling', () => {
  test('dial ok: draining the old leg, client held, a timer for the quiet check', () => {
    const s = drainingStep();
    assert.deepEqual(phaseOf(s, 'draining-old'), {
      name: 'draining-old',
      leg: { no: 1, backend: A },
      next: { no: 2, backend: B },
      switch: { reason: 'drain', startedAt: DIALLED },
      lastHeardAt: DIALLED,
      feedBoundAt: DIALLED + POLICY.maxQuietWait,
      drainDeadline: DIALLED + POLICY.drainTimeout,
      closing: null,
    });
    assert.deepEqual(s.effects, [{ kind: 'hold' }, { kind: 'timer', at: DIALLED + POLICY.quietPeriod }]);
  });

  test('dial ok: quiet is measured from the old leg\'s last activity (never from the future)', () => {
    const earlier = drainingStep({ lastActiveAt: DIALLED - 150 });
    assert.equal(phaseOf(earlier, 'draining-old').lastHeardAt, DIALLED - 150);
    assert.deepEqual(one(earlier, 'timer'), { kind: 'timer', at: DIALLED + 50 });
    const later = drainingStep({ lastActiveAt: DIALLED + 40 });
    assert.equal(phaseOf(later, 'draining-old').lastHeardAt, DIALLED);
  });

  test('dial failed: back to open on the same leg, migration failed', () => {
    const s = run(migrationDialling(), dialled(2, null), DIALLED);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 1, backend: A } });
    assert.deepEqual(s.effects, [{ kind: 'migration-ended', result: 'failed' }]);
  });

  test('failover during migration: the serving leg closes (1006), the migration\'s dial is the failover\'s first try', () => {
    const s = run(migrationDialling(), legClosed(1, 1006), T0 + 50);
    assert.deepEqual(phaseOf(s, 'failing-over'), {
      name: 'failing-over',
      failed: A,
      switch: { reason: 'error', startedAt: T0 + 50 },
      pass: 0,
      deadline: T0 + 50 + POLICY.failoverDeadline,
      dialling: 2,
    });
    assert.equal(s.state.legs, 2, 'no new leg number');
    assert.deepEqual(s.effects, [
      { kind: 'drop-leg', leg: 1, code: 1001, reason: 'failing over', terminate: false },
      { kind: 'migration-ended', result: 'failed' },
      { kind: 'hold' },
      { kind: 'failover-started', reason: 'error', failed: A, detail: 'backend closed with 1006' },
    ]);
    // The migration's dial then lands: the failover is over.
    const landed = run(s.state, dialled(2, B), T0 + 80);
    assert.deepEqual(phaseOf(landed, 'open'), { name: 'open', leg: { no: 2, backend: B } });
    assert.deepEqual(landed.effects, [
      { kind: 'serve', leg: { no: 2, backend: B } },
      { kind: 'switch-ended', reason: 'error', result: 'resumed', startedAt: T0 + 50 },
    ]);
  });

  test('failover during migration: a pong timeout keeps the migration\'s dial too', () => {
    const s = run(migrationDialling(), { type: 'pong-timeout', leg: 1 }, T0 + 50);
    assert.equal(phaseOf(s, 'failing-over').dialling, 2);
    assert.equal(one(s, 'failover-started').reason, 'pong-timeout');
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'failed' });
    none(s, 'dial');
  });

  test('a stale dialled event (another leg number): that leg is dropped, nothing else', () => {
    const state = migrationDialling();
    const s = run(state, dialled(7, C), DIALLED);
    assert.equal(s.state, state);
    assert.deepEqual(s.effects, [{ kind: 'drop-leg', leg: 7, code: null, reason: 'not needed', terminate: true }]);
    ignored(state, dialled(7, null), DIALLED);
  });

  test('the backend ends the session (4000) while dialling: closed, the dial cancelled, migration closed', () => {
    const s = run(migrationDialling(), legClosed(1, 4000, 'done'), T0 + 50);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'backend-closed' });
    one(s, 'cancel');
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 4000, reason: 'done' });
  });

  test('a close of an unknown leg, a timer or a wait-over while dialling: nothing', () => {
    ignored(migrationDialling(), legClosed(2, 1006), T0 + 50);
    ignored(migrationDialling(), TIMER, T0 + 50);
    ignored(migrationDialling(), WAIT_OVER, T0 + 50);
  });
});

// ---- draining-old, no codec --------------------------------------------------------------------

describe('draining-old without a codec', () => {
  test('an old message keeps it waiting: lastHeardAt moves, the pending timer then waits on', () => {
    const heard = run(draining(), oldMessage(1), DIALLED + 150);
    assert.equal(phaseOf(heard, 'draining-old').lastHeardAt, DIALLED + 150);
    assert.equal(phaseOf(heard, 'draining-old').closing, null);
    assert.deepEqual(heard.effects, []);
    // The timer set for DIALLED + 200 finds the old leg heard since: look again 200 ms after it.
    const looked = run(heard.state, TIMER, DIALLED + 200);
    assert.equal(phaseOf(looked, 'draining-old').closing, null);
    assert.deepEqual(looked.effects, [{ kind: 'timer', at: DIALLED + 350 }]);
  });

  test('timer after quietPeriod of silence: the old leg is sent its close (1001), closing quiet', () => {
    const s = run(draining(), TIMER, DIALLED + POLICY.quietPeriod);
    const p = phaseOf(s, 'draining-old');
    assert.equal(p.closing, 'quiet');
    assert.deepEqual(p.next, { no: 2, backend: B }, 'the next leg still waits');
    assert.deepEqual(s.effects, [
      { kind: 'close-leg', leg: 1, code: 1001, reason: 'session migrating' },
      { kind: 'timer', at: DIALLED + POLICY.drainTimeout },
    ]);
  });

  test('a timer before the quiet period is over: waits on', () => {
    const s = run(draining(), TIMER, DIALLED + 199);
    assert.equal(phaseOf(s, 'draining-old').closing, null);
    assert.deepEqual(s.effects, [{ kind: 'timer', at: DIALLED + 200 }]);
  });

  test('a session idle for longer than the quiet period before the dial: let go at once', () => {
    const s = drainingStep({ lastActiveAt: T0 - 10_000 });
    assert.equal(phaseOf(s, 'draining-old').closing, 'quiet');
    assert.deepEqual(s.effects, [
      { kind: 'hold' },
      { kind: 'close-leg', leg: 1, code: 1001, reason: 'session migrating' },
      { kind: 'timer', at: DIALLED + POLICY.drainTimeout },
    ]);
  });

  test('a backend that never pauses (a message every 5 ms): let go at maxQuietWait, feed-bound', () => {
    let state = draining();
    let timerAt = DIALLED + POLICY.quietPeriod;
    let letGoAt: number | null = null;
    for (let t = DIALLED + 5; t <= DIALLED + POLICY.drainTimeout && letGoAt === null; t += 5) {
      if (t >= timerAt) {
        const fired = run(state, TIMER, t);
        state = fired.state;
        timerAt = effectsOf(fired, 'timer').at(-1)!.at!;
        if (effectsOf(fired, 'close-leg').length > 0) letGoAt = t;
      }
      state = run(state, oldMessage(1), t).state;
    }
    assert.equal(letGoAt, DIALLED + POLICY.maxQuietWait);
    const p = phaseOf(state, 'draining-old');
    assert.equal(p.closing, 'feed-bound');
    assert.equal(p.lastHeardAt, DIALLED + POLICY.maxQuietWait - 5, 'messages after the close change nothing');
    // Its close then completes the switch, reporting the bound.
    const s = run(state, legClosed(1, 1001), DIALLED + 1100);
    assert.equal(one(s, 'drain-ended').ended, 'feed-bound');
    assert.equal(one(s, 'drop-leg').terminate, false);
  });

  test('the old leg\'s close after letting go: switch (drop old, serve next, resumed, migrated)', () => {
    // 1000 is no failover code: after we asked, it is only the old backend's answer.
    const s = run(closingDrain(), legClosed(1, 1000), DIALLED + 260);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 2, backend: B } });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: false },
      { kind: 'drain-ended', ended: 'quiet', heldMs: 260, from: A, to: B },
      { kind: 'serve', leg: { no: 2, backend: B } },
      { kind: 'switch-ended', reason: 'drain', result: 'resumed', startedAt: DIALLED },
      { kind: 'migration-ended', result: 'migrated' },
    ]);
  });

  test('drain deadline without the old leg let go: switch, the old leg cut, drain-timeout', () => {
    // A drain timeout shorter than maxQuietWait, and a chatty old leg: the deadline comes first.
    const policy: MachinePolicy = { ...POLICY, drainTimeout: 500 };
    let state = draining(policy);
    state = run(state, oldMessage(1), DIALLED + 450, policy).state;
    const s = run(state, TIMER, DIALLED + 500, policy);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 2, backend: B } });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: true },
      { kind: 'drain-ended', ended: 'drain-timeout', heldMs: 500, from: A, to: B },
      { kind: 'serve', leg: { no: 2, backend: B } },
      { kind: 'switch-ended', reason: 'drain', result: 'resumed', startedAt: DIALLED },
      { kind: 'migration-ended', result: 'migrated' },
    ]);
  });

  test('drain deadline after the old leg was let go but never closed: switch, the old leg cut', () => {
    const s = run(closingDrain(), TIMER, DIALLED + POLICY.drainTimeout);
    assert.deepEqual(phaseOf(s, 'open').leg, { no: 2, backend: B });
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: true });
    assert.deepEqual(one(s, 'drain-ended'), { kind: 'drain-ended', ended: 'quiet', heldMs: POLICY.drainTimeout, from: A, to: B });
    assert.deepEqual(one(s, 'serve'), { kind: 'serve', leg: { no: 2, backend: B } });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'migrated' });
    assert.ok(indexOf(s, 'drop-leg') < indexOf(s, 'serve'), 'the old leg is no longer heard when the next serves');
  });

  test('after letting go, a timer before the deadline only re-arms it', () => {
    const s = run(closingDrain(), TIMER, DIALLED + 1000);
    assert.equal(phaseOf(s, 'draining-old').closing, 'quiet');
    assert.deepEqual(s.effects, [{ kind: 'timer', at: DIALLED + POLICY.drainTimeout }]);
  });

  test('after letting go, old messages change nothing', () => {
    ignored(closingDrain(), oldMessage(1), DIALLED + 250);
  });

  test('the old leg dying before we asked (1006, or a failover code): switch to the next, old-closed', () => {
    for (const code of [1006, 1012]) {
      const s = run(draining(), legClosed(1, code), DIALLED + 50);
      assert.deepEqual(phaseOf(s, 'open').leg, { no: 2, backend: B });
      assert.deepEqual(s.effects, [
        { kind: 'timer', at: null },
        { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: false },
        { kind: 'drain-ended', ended: 'old-closed', heldMs: 50, from: A, to: B },
        { kind: 'serve', leg: { no: 2, backend: B } },
        { kind: 'switch-ended', reason: 'drain', result: 'resumed', startedAt: DIALLED },
        { kind: 'migration-ended', result: 'migrated' },
      ]);
    }
  });

  test('the old backend ending the session (4000) while draining: closed, next leg dropped, the client told 4000', () => {
    const s = run(draining(), legClosed(1, 4000, 'done'), DIALLED + 50);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'backend-closed' });
    assert.deepEqual(
      effectsOf(s, 'drop-leg').map((e) => [e.leg, e.terminate]),
      [
        [1, false],
        [2, true],
      ],
    );
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 4000, reason: 'done' });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'failed', startedAt: DIALLED });
    assert.deepEqual(one(s, 'timer'), { kind: 'timer', at: null });
    none(s, 'serve', 'dial');
  });

  test('a protocol error on the old leg while draining: closed, protocol-error', () => {
    const s = run(draining(), legClosed(1, 1006, '', 1009), DIALLED + 50);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'protocol-error' });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 1009, reason: 'backend message too big' });
    none(s, 'serve');
  });

  test('stale events while draining: another leg\'s message or close, a pong timeout, a wait-over', () => {
    ignored(draining(), oldMessage(2), DIALLED + 50);
    ignored(draining(), legClosed(9, 1006), DIALLED + 50);
    ignored(draining(), { type: 'pong-timeout', leg: 1 }, DIALLED + 50);
    ignored(draining(), WAIT_OVER, DIALLED + 50);
  });
});

// ---- draining-old, codec -----------------------------------------------------------------------

describe('draining-old with a codec', () => {
  test('settled at the dial: let go at once, settled', () => {
    const s = drainingStep({ policy: CODEC, settled: true });
    assert.equal(phaseOf(s, 'draining-old').closing, 'settled');
    assert.deepEqual(s.effects, [
      { kind: 'hold' },
      { kind: 'close-leg', leg: 1, code: 1001, reason: 'session migrating' },
      { kind: 'timer', at: DIALLED + POLICY.drainTimeout },
    ]);
  });

  test('not settled at the dial: waits for the answers (the only timer is the deadline)', () => {
    const s = drainingStep({ policy: CODEC, settled: false });
    assert.equal(phaseOf(s, 'draining-old').closing, null);
    assert.deepEqual(s.effects, [{ kind: 'hold' }, { kind: 'timer', at: DIALLED + POLICY.drainTimeout }]);
  });

  test('an old message with requests still unanswered: waits, however quiet', () => {
    const state = draining(CODEC);
    const heard = run(state, oldMessage(1, false), DIALLED + 300, CODEC);
    assert.equal(phaseOf(heard, 'draining-old').lastHeardAt, DIALLED + 300);
    assert.equal(phaseOf(heard, 'draining-old').closing, null);
    assert.deepEqual(heard.effects, []);
    // Past the quiet period and maxQuietWait: with a codec, neither lets it go.
    const later = run(heard.state, TIMER, DIALLED + 2000, CODEC);
    assert.equal(phaseOf(later, 'draining-old').closing, null);
    assert.deepEqual(later.effects, [{ kind: 'timer', at: DIALLED + POLICY.drainTimeout }]);
  });

  test('an old message that settles the last request: let go, settled', () => {
    const s = run(draining(CODEC), oldMessage(1, true), DIALLED + 300, CODEC);
    assert.equal(phaseOf(s, 'draining-old').closing, 'settled');
    assert.deepEqual(s.effects, [
      { kind: 'close-leg', leg: 1, code: 1001, reason: 'session migrating' },
      { kind: 'timer', at: DIALLED + POLICY.drainTimeout },
    ]);
    const switched = run(s.state, legClosed(1, 1001), DIALLED + 320, CODEC);
    assert.equal(one(switched, 'drain-ended').ended, 'settled');
    assert.deepEqual(one(switched, 'migration-ended'), { kind: 'migration-ended', result: 'migrated' });
  });

  test('never settles: drain timeout at drainTimeout, the old leg cut', () => {
    let state = draining(CODEC);
    state = run(state, oldMessage(1, false), DIALLED + 4000, CODEC).state;
    const s = run(state, TIMER, DIALLED + POLICY.drainTimeout, CODEC);
    assert.deepEqual(phaseOf(s, 'open').leg, { no: 2, backend: B });
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: true });
    assert.deepEqual(one(s, 'drain-ended'), { kind: 'drain-ended', ended: 'drain-timeout', heldMs: POLICY.drainTimeout, from: A, to: B });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'resumed', startedAt: DIALLED });
  });
});

// ---- the next leg dying before the switch ------------------------------------------------------

describe('the new leg dying before the switch', () => {
  test('while the old leg is not closing: back to open on the old leg', () => {
    const s = run(draining(), legClosed(2, 1006), DIALLED + 50);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 1, backend: A } });
    assert.deepEqual(one(s, 'timer'), { kind: 'timer', at: null });
    assert.deepEqual(one(s, 'serve'), { kind: 'serve', leg: { no: 1, backend: A } });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'failed', startedAt: DIALLED });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'failed' });
    none(s, 'close-leg', 'dial', 'hold', 'failover-started');
    assert.ok(effectsOf(s, 'drop-leg').every((e) => e.leg !== 1), 'the old leg is kept');
  });

  // Without its drop-leg the pool would count the session on the dead leg's backend for good.
  test('the dead next leg is dropped (its backend detached), closing or not', () => {
    for (const state of [draining(), closingDrain()]) {
      const s = run(state, legClosed(2, 1006), DIALLED + 300);
      assert.deepEqual(effectsOf(s, 'drop-leg').map((e) => e.leg), [2]);
    }
  });

  test('while the old leg is closing: next becomes null, and its close then fails over', () => {
    const died = run(closingDrain(), legClosed(2, 1006), DIALLED + 300);
    const p = phaseOf(died, 'draining-old');
    assert.equal(p.next, null);
    assert.equal(p.closing, 'quiet');
    none(died, 'serve', 'switch-ended', 'migration-ended', 'dial');

    const s = run(died.state, legClosed(1, 1001), DIALLED + 400);
    assert.deepEqual(phaseOf(s, 'failing-over'), {
      name: 'failing-over',
      failed: A,
      switch: { reason: 'error', startedAt: DIALLED + 400 },
      pass: 0,
      deadline: DIALLED + 400 + POLICY.failoverDeadline,
      dialling: 3,
    });
    assert.equal(s.state.legs, 3);
    assert.deepEqual(one(s, 'timer'), { kind: 'timer', at: null });
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: false });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'failed', startedAt: DIALLED });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'failed' });
    assert.deepEqual(one(s, 'failover-started'), { kind: 'failover-started', reason: 'error', failed: A, detail: 'migration target closed before the switch' });
    assert.deepEqual(one(s, 'dial'), { kind: 'dial', leg: 3, target: null, exclude: A });
    one(s, 'hold');
    none(s, 'serve');
  });

  test('next leg dead and the old leg never closing: failover at the drain deadline, the old leg cut', () => {
    const died = run(closingDrain(), legClosed(2, 1006), DIALLED + 300).state;
    const s = run(died, TIMER, DIALLED + POLICY.drainTimeout);
    assert.equal(phaseOf(s, 'failing-over').dialling, 3);
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: null, reason: 'migrated', terminate: true });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'failed' });
    assert.deepEqual(one(s, 'dial'), { kind: 'dial', leg: 3, target: null, exclude: A });
  });
});

// ---- failing-over ------------------------------------------------------------------------------

describe('failing-over', () => {
  test('dial ok: open on the new leg, it serves, switch resumed', () => {
    const s = run(failingOver(), dialled(2, B), T0 + 30);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 2, backend: B } });
    assert.deepEqual(s.effects, [
      { kind: 'serve', leg: { no: 2, backend: B } },
      { kind: 'switch-ended', reason: 'error', result: 'resumed', startedAt: T0 },
    ]);
  });

  test('dial failed: wait for a backend for the backoff of this pass, pass incremented', () => {
    const s = run(failingOver(), dialled(2, null), T0 + 50);
    assert.deepEqual(phaseOf(s, 'failing-over'), {
      name: 'failing-over',
      failed: A,
      switch: { reason: 'error', startedAt: T0 },
      pass: 1,
      deadline: T0 + POLICY.failoverDeadline,
      dialling: null,
    });
    assert.equal(backoffDelay(0, POLICY.backoff, POLICY.random), 125);
    assert.deepEqual(s.effects, [{ kind: 'wait-for-backend', ms: 125 }]);
    // The next pass fails too: the wait grows.
    const again = run(run(s.state, WAIT_OVER, T0 + 175).state, dialled(3, null), T0 + 200);
    assert.equal(phaseOf(again, 'failing-over').pass, 2);
    assert.deepEqual(again.effects, [{ kind: 'wait-for-backend', ms: backoffDelay(1, POLICY.backoff, POLICY.random) }]);
    assert.equal(backoffDelay(1, POLICY.backoff, POLICY.random), 250);
  });

  test('dial failed near the deadline: the wait ends at the deadline', () => {
    const s = run(failingOver(), dialled(2, null), T0 + POLICY.failoverDeadline - 40);
    assert.deepEqual(s.effects, [{ kind: 'wait-for-backend', ms: 40 }]);
  });

  test('wait over: a new dial, excluding nothing', () => {
    const s = run(failoverWaiting(), WAIT_OVER, T0 + 175);
    const p = phaseOf(s, 'failing-over');
    assert.equal(p.dialling, 3);
    assert.equal(p.pass, 1);
    assert.equal(s.state.legs, 3);
    assert.deepEqual(s.effects, [{ kind: 'dial', leg: 3, target: null, exclude: null }]);
  });

  test('a wait-over while a dial is under way: nothing', () => {
    ignored(failingOver(), WAIT_OVER, T0 + 10);
  });

  test('a second failure while failing over (stale leg-closed, pong timeout, timer): ignored', () => {
    for (const state of [failingOver(), failoverWaiting()]) {
      ignored(state, legClosed(1, 1006), T0 + 60);
      ignored(state, legClosed(1, 1012), T0 + 60);
      ignored(state, legClosed(2, 1006), T0 + 60);
      ignored(state, { type: 'pong-timeout', leg: 1 }, T0 + 60);
      ignored(state, TIMER, T0 + 60);
      ignored(state, oldMessage(1), T0 + 60);
    }
  });

  test('a stale dialled event while failing over: that leg is dropped', () => {
    const state = failoverWaiting();
    const s = run(state, dialled(2, C), T0 + 60);
    assert.equal(s.state, state);
    assert.deepEqual(s.effects, [{ kind: 'drop-leg', leg: 2, code: null, reason: 'not needed', terminate: true }]);
  });

  test('deadline passed at a dial failure: closed, failover-deadline, client told 1013', () => {
    const s = run(failingOver(), dialled(2, null), T0 + POLICY.failoverDeadline);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'failover-deadline' });
    assert.deepEqual(one(s, 'timer'), { kind: 'timer', at: null });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'error', result: 'deadline', startedAt: T0 });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 1013, reason: 'no backend available' });
    assert.deepEqual(one(s, 'ended'), { kind: 'ended', why: 'failover-deadline', detail: 'no backend within the failover deadline' });
    none(s, 'wait-for-backend', 'dial', 'drop-leg');
  });

  test('deadline passed at wait-over: closed, failover-deadline, no new dial', () => {
    const s = run(failoverWaiting(), WAIT_OVER, T0 + POLICY.failoverDeadline + 1);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'failover-deadline' });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'cancel' },
      { kind: 'switch-ended', reason: 'error', result: 'deadline', startedAt: T0 },
      { kind: 'close-client', code: 1013, reason: 'no backend available' },
      { kind: 'ended', why: 'failover-deadline', detail: 'no backend within the failover deadline' },
    ]);
  });

  test('migrate during failover: refused, busy', () => {
    for (const state of [failingOver(), failoverWaiting()]) {
      const s = run(state, migrate(), T0 + 60);
      assert.equal(s.state, state);
      assert.deepEqual(s.effects, [{ kind: 'migration-refused', result: 'busy' }]);
    }
  });
});

// ---- the client closing, in every phase --------------------------------------------------------

describe('client close', () => {
  /** Closes with code 1000 'bye' at `now`; checks what every phase has in common, and that a second close is a no-op. */
  function clientClose(state: SessionState, now: number): Step {
    const s = run(state, clientClosed(), now);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'client-closed' });
    assert.deepEqual(s.effects[0], { kind: 'timer', at: null });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: null, reason: 'bye' });
    assert.deepEqual(one(s, 'ended'), { kind: 'ended', why: 'client-closed', detail: 'client closed with 1000' });
    ignored(s.state, clientClosed(), now + 1);
    ignored(s.state, { type: 'close', why: 'admin', clientCode: 1001, reason: 'x', backendCode: 1001 }, now + 1);
    return s;
  }

  test('while open: the leg closed with the client\'s code', () => {
    const s = clientClose(opened(), T0);
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'drop-leg', leg: 1, code: 1000, reason: 'bye', terminate: false },
      { kind: 'close-client', code: null, reason: 'bye' },
      { kind: 'ended', why: 'client-closed', detail: 'client closed with 1000' },
    ]);
  });

  test('while open, without a code (1005): the backend is closed without one', () => {
    const s = run(opened(), clientClosed(null, ''), T0);
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: null, reason: '', terminate: false });
    assert.deepEqual(one(s, 'ended'), { kind: 'ended', why: 'client-closed', detail: 'client closed with 1005' });
  });

  test('while migration-dialling: the leg closed, the dial aborted, migration closed', () => {
    const s = clientClose(migrationDialling(), T0 + 50);
    assert.deepEqual(one(s, 'drop-leg'), { kind: 'drop-leg', leg: 1, code: 1000, reason: 'bye', terminate: false });
    one(s, 'cancel');
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    none(s, 'switch-ended');
  });

  test('while draining-old, waiting for quiet: both legs dropped (next cut), switch client-gone, migration closed', () => {
    const s = clientClose(draining(), DIALLED + 50);
    assert.deepEqual(effectsOf(s, 'drop-leg'), [
      { kind: 'drop-leg', leg: 1, code: 1000, reason: 'bye', terminate: false },
      { kind: 'drop-leg', leg: 2, code: null, reason: 'bye', terminate: true },
    ]);
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'client-gone', startedAt: DIALLED });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    none(s, 'cancel', 'serve');
  });

  test('while draining-old, the old leg closing: both legs dropped, switch client-gone, migration closed', () => {
    const s = clientClose(closingDrain(), DIALLED + 300);
    assert.deepEqual(
      effectsOf(s, 'drop-leg').map((e) => [e.leg, e.terminate]),
      [
        [1, false],
        [2, true],
      ],
    );
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'client-gone', startedAt: DIALLED });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    none(s, 'serve');
  });

  test('while draining-old, the old leg closing and the next leg dead: only the old leg dropped', () => {
    const died = run(closingDrain(), legClosed(2, 1006), DIALLED + 300).state;
    const s = clientClose(died, DIALLED + 350);
    assert.deepEqual(effectsOf(s, 'drop-leg').map((e) => e.leg), [1]);
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
  });

  test('while failing over, dialling: the dial cancelled, switch client-gone', () => {
    const s = clientClose(failingOver(), T0 + 50);
    one(s, 'cancel');
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'error', result: 'client-gone', startedAt: T0 });
    none(s, 'drop-leg', 'migration-ended');
  });

  test('while failing over, waiting: the wait cancelled, switch client-gone', () => {
    const s = clientClose(failoverWaiting(), T0 + 80);
    one(s, 'cancel');
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'error', result: 'client-gone', startedAt: T0 });
    none(s, 'drop-leg', 'migration-ended', 'dial');
  });

  test('when already closed: nothing', () => {
    ignored(closedByBackend(), clientClosed(), T0 + 10);
  });
});

// ---- close requested by the sidecar ------------------------------------------------------------

describe('close requested', () => {
  test('buffer full while failing over: switch buffer-full, the client told 1013', () => {
    const s = run(failingOver(), { type: 'close', why: 'buffer-full', clientCode: 1013, reason: 'failover buffer full', backendCode: 1001 }, T0 + 70);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'buffer-full' });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'cancel' },
      { kind: 'switch-ended', reason: 'error', result: 'buffer-full', startedAt: T0 },
      { kind: 'close-client', code: 1013, reason: 'failover buffer full' },
      { kind: 'ended', why: 'buffer-full', detail: 'failover buffer full' },
    ]);
  });

  test('buffer full while draining: switch buffer-full, migration closed, next leg cut', () => {
    const s = run(draining(), { type: 'close', why: 'buffer-full', clientCode: 1013, reason: 'failover buffer full', backendCode: 1001 }, DIALLED + 70);
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'buffer-full', startedAt: DIALLED });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    assert.deepEqual(
      effectsOf(s, 'drop-leg').map((e) => [e.leg, e.code, e.terminate]),
      [
        [1, 1001, false],
        [2, null, true],
      ],
    );
  });

  test('admin while open: the backend gets backendCode, the client clientCode', () => {
    const s = run(opened(), { type: 'close', why: 'admin', clientCode: 4002, reason: 'closed by admin', backendCode: 1000 }, T0);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'admin' });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'drop-leg', leg: 1, code: 1000, reason: 'closed by admin', terminate: false },
      { kind: 'close-client', code: 4002, reason: 'closed by admin' },
      { kind: 'ended', why: 'admin', detail: 'closed by admin' },
    ]);
  });
});

// ---- races -------------------------------------------------------------------------------------

describe('races', () => {
  test('a dialled event after the session closed: the leg is dropped', () => {
    const closed = run(migrationDialling(), clientClosed(), T0 + 20).state;
    const s = run(closed, dialled(2, B), T0 + 40);
    assert.equal(s.state, closed);
    assert.deepEqual(s.effects, [{ kind: 'drop-leg', leg: 2, code: null, reason: 'not needed', terminate: true }]);
    ignored(closed, dialled(2, null), T0 + 40);
  });

  test('any other event after the session closed: nothing', () => {
    const closed = closedByBackend();
    for (const e of [TIMER, WAIT_OVER, legClosed(1, 1006), oldMessage(1, true), { type: 'pong-timeout', leg: 1 } as const]) {
      ignored(closed, e, T0 + 40);
    }
  });

  test('the cut old leg\'s late close, a late timer and a late old message after the switch: nothing', () => {
    const switched = run(closingDrain(), TIMER, DIALLED + POLICY.drainTimeout).state;
    assert.equal(phaseOf(switched, 'open').leg.no, 2);
    ignored(switched, legClosed(1, 1006), DIALLED + POLICY.drainTimeout + 5);
    ignored(switched, TIMER, DIALLED + POLICY.drainTimeout + 5);
    ignored(switched, oldMessage(1), DIALLED + POLICY.drainTimeout + 5);
  });

  test('the old leg back on its own after the next leg died: its timer and messages are stale', () => {
    const back = run(draining(), legClosed(2, 1006), DIALLED + 50).state;
    ignored(back, TIMER, DIALLED + 200);
    ignored(back, oldMessage(1), DIALLED + 210);
    // And it can migrate again, with a fresh leg number.
    const again = run(back, migrate(), DIALLED + 300);
    assert.deepEqual(again.effects, [{ kind: 'dial', leg: 3, target: null, exclude: A }]);
  });

  test('the next leg\'s close after the switch is the serving leg\'s: it fails over', () => {
    const switched = run(closingDrain(), legClosed(1, 1001), DIALLED + 260).state;
    const s = run(switched, legClosed(2, 1006), DIALLED + 300);
    assert.deepEqual(phaseOf(s, 'failing-over'), {
      name: 'failing-over',
      failed: B,
      switch: { reason: 'error', startedAt: DIALLED + 300 },
      pass: 0,
      deadline: DIALLED + 300 + POLICY.failoverDeadline,
      dialling: 3,
    });
    assert.deepEqual(one(s, 'dial'), { kind: 'dial', leg: 3, target: null, exclude: B });
  });
});

// ---- resuming: sessions whose codec keeps protocol state ---------------------------------------

describe('resuming (protocol state replayed to the new backend)', () => {
  const RESUMES: MachinePolicy = { ...POLICY, codec: true, resumes: true };
  /** Failing over with a resumable codec; leg 2 to B opened at T0 + 30: resuming. */
  const resumingAfterFailover = (): Step => run(run(opened(), legClosed(1, 1006), T0, RESUMES).state, dialled(2, B), T0 + 30, RESUMES);
  /** A drain whose old leg closed after being let go: resuming on leg 2. */
  const resumingAfterMigration = (): Step => {
    let state = run(opened(), migrate(), T0, RESUMES).state;
    state = run(state, dialled(2, B, 0, true), DIALLED, RESUMES).state; // every request answered: let go at once
    return run(state, legClosed(1, 1000), DIALLED + 5, RESUMES);
  };

  test('failover: the dialled leg gets the state replayed (timer first), client messages still held', () => {
    const s = resumingAfterFailover();
    assert.deepEqual(phaseOf(s, 'resuming'), {
      name: 'resuming',
      leg: { no: 2, backend: B },
      switch: { reason: 'error', startedAt: T0 },
      deadline: T0 + 30 + RESUMES.resumeTimeout,
      migrating: false,
    });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: T0 + 30 + RESUMES.resumeTimeout },
      { kind: 'resume', leg: { no: 2, backend: B } },
    ]);
    none(s, 'serve', 'switch-ended');
  });

  test('without protocol state the dialled leg serves at once (no resume)', () => {
    const s = run(failingOver(), dialled(2, B), T0 + 30, CODEC);
    phaseOf(s, 'open');
    none(s, 'resume');
  });

  test('resumed: open on the new leg, held messages served, switch resumed', () => {
    const s = run(resumingAfterFailover().state, { type: 'resumed', leg: 2 }, T0 + 40, RESUMES);
    assert.deepEqual(phaseOf(s, 'open'), { name: 'open', leg: { no: 2, backend: B } });
    assert.deepEqual(s.effects, [
      { kind: 'timer', at: null },
      { kind: 'serve', leg: { no: 2, backend: B } },
      { kind: 'switch-ended', reason: 'error', result: 'resumed', startedAt: T0 },
    ]);
  });

  test('planned migration: resumes after the switch, and reports migrated only once resumed', () => {
    const switched = resumingAfterMigration();
    assert.equal(phaseOf(switched, 'resuming').migrating, true);
    assert.ok(indexOf(switched, 'drain-ended') < indexOf(switched, 'resume'));
    none(switched, 'serve', 'migration-ended', 'switch-ended');
    const s = run(switched.state, { type: 'resumed', leg: 2 }, DIALLED + 8, RESUMES);
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'migrated' });
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'drain', result: 'resumed', startedAt: DIALLED });
  });

  test('refused by an answer: closed resume-refused with the protocol code, the leg dropped', () => {
    const s = run(resumingAfterFailover().state, { type: 'resume-refused', leg: 2, code: 4403, reason: 'Forbidden' }, T0 + 40, RESUMES);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'resume-refused' });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 4403, reason: 'Forbidden' });
    assert.equal(one(s, 'drop-leg').leg, 2);
    assert.deepEqual(one(s, 'switch-ended'), { kind: 'switch-ended', reason: 'error', result: 'failed', startedAt: T0 });
  });

  test('refused by a close (graphql-ws 4403): the client gets that code', () => {
    const s = run(resumingAfterFailover().state, legClosed(2, 4403, 'Forbidden'), T0 + 40, RESUMES);
    assert.deepEqual(phaseOf(s, 'closed'), { name: 'closed', why: 'backend-closed' });
    assert.deepEqual(one(s, 'close-client'), { kind: 'close-client', code: 4403, reason: 'Forbidden' });
  });

  test('the new leg dies during the resume: fail over from it', () => {
    const s = run(resumingAfterMigration().state, legClosed(2, 1006), DIALLED + 10, RESUMES);
    const p = phaseOf(s, 'failing-over');
    assert.equal(p.failed, B);
    assert.deepEqual(one(s, 'dial'), { kind: 'dial', leg: 3, target: null, exclude: B });
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'failed' });
  });

  test('no answer within resumeTimeout: the leg is cut and the session fails over (resume-timeout)', () => {
    const resuming = resumingAfterFailover().state;
    ignored(resuming, TIMER, T0 + 30 + RESUMES.resumeTimeout - 1, RESUMES);
    const s = run(resuming, TIMER, T0 + 30 + RESUMES.resumeTimeout, RESUMES);
    assert.equal(phaseOf(s, 'failing-over').switch.reason, 'resume-timeout');
    assert.deepEqual(effectsOf(s, 'drop-leg'), [{ kind: 'drop-leg', leg: 2, code: 1001, reason: 'failing over', terminate: true }]);
  });

  test('stale resume events and a migration request while resuming', () => {
    const resuming = resumingAfterFailover().state;
    ignored(resuming, { type: 'resumed', leg: 7 }, T0 + 40, RESUMES);
    ignored(resuming, { type: 'pong-timeout', leg: 2 }, T0 + 40, RESUMES);
    assert.deepEqual(run(resuming, migrate(), T0 + 40, RESUMES).effects, [{ kind: 'migration-refused', result: 'busy' }]);
  });

  test('client close while resuming: the new leg dropped, switch client-gone', () => {
    const s = run(resumingAfterMigration().state, clientClosed(), DIALLED + 10, RESUMES);
    phaseOf(s, 'closed');
    assert.equal(one(s, 'drop-leg').leg, 2);
    assert.deepEqual(one(s, 'migration-ended'), { kind: 'migration-ended', result: 'closed' });
    assert.equal(one(s, 'switch-ended').result, 'client-gone');
  });

  test('unresumable state: a lost leg, a pong timeout or a migration closes the client with 1012 instead', () => {
    const lost = run(opened(), { ...legClosed(1, 1006), unresumable: 'over its bound' } as SessionEvent, T0, RESUMES);
    assert.deepEqual(phaseOf(lost, 'closed'), { name: 'closed', why: 'unresumable' });
    assert.deepEqual(one(lost, 'close-client'), { kind: 'close-client', code: 1012, reason: 'service restart' });
    none(lost, 'dial');
    const pong = run(opened(), { type: 'pong-timeout', leg: 1, unresumable: 'over its bound' }, T0, RESUMES);
    assert.equal(phaseOf(pong, 'closed').why, 'unresumable');
    const moved = run(opened(), { type: 'migrate', reason: 'drain', target: null, unresumable: 'transaction open' }, T0, RESUMES);
    assert.equal(phaseOf(moved, 'closed').why, 'unresumable');
    assert.deepEqual(one(moved, 'migration-refused'), { kind: 'migration-refused', result: 'closed' });
    // A deliberate close by the backend still ends the session with the backend's own code.
    const ended = run(opened(), { ...legClosed(1, 4000, 'bye'), unresumable: 'x' } as SessionEvent, T0, RESUMES);
    assert.equal(phaseOf(ended, 'closed').why, 'backend-closed');
  });
});
