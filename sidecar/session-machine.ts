// The lifecycle of one client session, as a pure state machine: no sockets, no timers, no clock.
// `step(state, event, now, policy)` returns the next state and the effects the I/O layer
// (session.ts) carries out. Per-message relaying does not pass through here; only what changes the
// session's course does (a leg opening or closing, a timer, a request to migrate or close).
//
// Legs are numbered: the serving leg, a migration's next leg and each dial get a number from the
// state's `legs` counter, and every event names the leg it concerns, so a late event of a leg that
// is no longer current is recognised and ignored here rather than by checks scattered over the I/O.
//
//   open ──migrate──▶ migration-dialling ──next leg open──▶ draining-old ──old done──▶ open (next)
//     │                      │ dial failed ─▶ open                │ next leg died ─▶ open (old)
//     └──leg lost──▶ failing-over ◀──leg lost──┘                   └─ old lost after close ─▶ failing-over
//                      │ dialled ─▶ open    deadline ─▶ closed
//   A session with protocol state (policy.resumes) passes through `resuming` on its way to the new
//   leg: the state is replayed and the new backend's answers swallowed before anything else.
//   any ──client gone / close requested──▶ closed
import { backoffDelay, type BackoffPolicy } from '../common/backoff.js';
import type {
  DrainEnd,
  FailoverReason,
  MigrationReason,
  MigrationResult,
  SessionEndReason,
  SwitchReason,
  SwitchResult,
} from '../common/vocabulary.js';

/** A leg: its number and the backend it goes to. */
export interface Leg {
  readonly no: number;
  readonly backend: string;
}

/** A backend switch under way (failover or migration), for its metrics. */
export interface Switch {
  readonly reason: SwitchReason;
  readonly startedAt: number;
}

export type Phase =
  | { readonly name: 'open'; readonly leg: Leg }
  | {
      readonly name: 'migration-dialling';
      readonly leg: Leg;
      readonly reason: MigrationReason;
      /** The number the dialled leg will have. */
      readonly dialling: number;
    }
  | {
      readonly name: 'draining-old';
      /** Still serving: its messages reach the client; the client's wait (held) for `next`. */
      readonly leg: Leg;
      /** Open and paused until the switch; null once it has died (then: fail over after the old). */
      readonly next: Leg | null;
      readonly switch: Switch;
      /** Latest known activity of the old leg (messages either way); quiet is measured from it. */
      readonly lastHeardAt: number;
      readonly feedBoundAt: number;
      readonly drainDeadline: number;
      /** Set once the old leg has been sent its close: why it was let go. */
      readonly closing: DrainEnd | null;
    }
  | {
      readonly name: 'failing-over';
      readonly failed: string | null;
      readonly switch: Switch;
      readonly pass: number;
      readonly deadline: number;
      /** The leg being dialled, or null while waiting between passes. */
      readonly dialling: number | null;
    }
  | {
      readonly name: 'resuming';
      /** The new leg: the session's protocol state has been replayed to it; its answers are awaited. */
      readonly leg: Leg;
      readonly switch: Switch;
      readonly deadline: number;
      /** A planned migration ends here (its result is reported when the resume ends). */
      readonly migrating: boolean;
    }
  | { readonly name: 'closed'; readonly why: SessionEndReason };

export interface SessionState {
  readonly phase: Phase;
  /** Legs numbered so far (the next leg is `legs + 1`). */
  readonly legs: number;
}

/** What the machine needs from the config (read per step: a reload applies to running sessions). */
export interface MachinePolicy {
  readonly failoverDeadline: number;
  readonly backoff: BackoffPolicy;
  /** Backend close codes that mean "fail over" rather than "end the session". 1006 always does. */
  readonly closeCodes: readonly number[];
  readonly drainTimeout: number;
  readonly quietPeriod: number;
  readonly maxQuietWait: number;
  /** The session has a codec: the old backend is done when every tracked request is answered. */
  readonly codec: boolean;
  /** The codec keeps the session's protocol state: a new backend gets it replayed first. */
  readonly resumes: boolean;
  /** The longest a new backend may take to answer the replay. */
  readonly resumeTimeout: number;
  readonly random: () => number;
}

/**
 * On the events that can start a backend change: why the session's state cannot move to another
 * backend (then it is closed with 1012 instead, so the client's library reconnects); absent = it can.
 */
interface Movable {
  readonly unresumable?: string | null;
}

export type SessionEvent =
  /** A planned move; `target` null = let the balancer choose. */
  | ({ readonly type: 'migrate'; readonly reason: MigrationReason; readonly target: string | null } & Movable)
  /**
   * A dial ended: `backend` is where the leg opened, null when no backend could be dialled.
   * `lastActiveAt` and `settled` describe the serving leg at that moment (used by a migration).
   */
  | {
      readonly type: 'dialled';
      readonly leg: number;
      readonly backend: string | null;
      readonly lastActiveAt: number;
      /** The codec has no request left unanswered on the serving leg. */
      readonly settled: boolean;
    }
  /** `protocolError`: the close code a protocol violation on that leg deserves (0 = none). */
  | ({ readonly type: 'leg-closed'; readonly leg: number; readonly code: number; readonly reason: string; readonly protocolError: number } & Movable)
  /** The old leg sent a message while draining; `settled`: the codec has no request left unanswered. */
  | { readonly type: 'old-message'; readonly leg: number; readonly settled: boolean }
  | ({ readonly type: 'pong-timeout'; readonly leg: number } & Movable)
  /** The new backend answered the replay: the session goes on there. */
  | { readonly type: 'resumed'; readonly leg: number }
  /** The new backend refused the replay: the client is closed with `code` (its refusal frame already went). */
  | { readonly type: 'resume-refused'; readonly leg: number; readonly code: number; readonly reason: string }
  | { readonly type: 'timer' }
  /** The failover's wait between passes is over (its time, or a backend became usable). */
  | { readonly type: 'wait-over' }
  | { readonly type: 'client-closed'; readonly code: number | null; readonly reason: string }
  /** The sidecar ends the session: the client gets `clientCode`, the backend `backendCode` (null: none). */
  | {
      readonly type: 'close';
      readonly why: SessionEndReason;
      readonly clientCode: number | null;
      readonly reason: string;
      readonly backendCode: number | null;
    };

export type Effect =
  /** One pass over the backends (or only `target`), skipping `exclude`; ends in a 'dialled' event. */
  | { readonly kind: 'dial'; readonly leg: number; readonly target: string | null; readonly exclude: string | null }
  /** Abandon the dial or the wait under way (no event follows). */
  | { readonly kind: 'cancel' }
  /** Wait `ms`, or less if a backend becomes usable; ends in a 'wait-over' event. */
  | { readonly kind: 'wait-for-backend'; readonly ms: number }
  /** The session's one timer: a 'timer' event at `at`; null = none. */
  | { readonly kind: 'timer'; readonly at: number | null }
  /** Send a leg its close (`code` null: without a code); it is still heard until its close arrives. */
  | { readonly kind: 'close-leg'; readonly leg: number; readonly code: number; readonly reason: string }
  /** Stop hearing a leg: it is closed with `code` (null: without one), or cut (`terminate`). */
  | { readonly kind: 'drop-leg'; readonly leg: number; readonly code: number | null; readonly reason: string; readonly terminate: boolean }
  /** The leg serves from now on: it is heard and resumed, then unanswered requests and held messages go to it. */
  | { readonly kind: 'serve'; readonly leg: Leg }
  /** The new leg is heard and gets the session's protocol state; its answers decide (resumed or refused). */
  | { readonly kind: 'resume'; readonly leg: Leg }
  /** Client messages are held from now on (until 'serve'). */
  | { readonly kind: 'hold' }
  | { readonly kind: 'failover-started'; readonly reason: FailoverReason; readonly failed: string | null; readonly detail: string }
  | { readonly kind: 'switch-ended'; readonly reason: SwitchReason; readonly result: SwitchResult; readonly startedAt: number }
  /** A migration's hold ended in its switch; `heldMs` from the next leg opening to the switch. */
  | { readonly kind: 'drain-ended'; readonly ended: DrainEnd; readonly heldMs: number; readonly from: string; readonly to: string }
  /** The migration under way came to `result`. */
  | { readonly kind: 'migration-ended'; readonly result: MigrationResult }
  /** A migration request was not started (another switch under way, or the session is closed). */
  | { readonly kind: 'migration-refused'; readonly result: MigrationResult }
  | { readonly kind: 'close-client'; readonly code: number | null; readonly reason: string }
  | { readonly kind: 'ended'; readonly why: SessionEndReason; readonly detail: string };

export interface Step {
  readonly state: SessionState;
  readonly effects: readonly Effect[];
}

/** A session that has just opened on `backend` (its leg is number 1). */
export function openState(backend: string): SessionState {
  return { phase: { name: 'open', leg: { no: 1, backend } }, legs: 1 };
}

const NOTHING: readonly Effect[] = [];
/** A close with no close frame (reset, EOF): always a failover trigger. */
const ABNORMAL = 1006;

export function step(state: SessionState, event: SessionEvent, now: number, policy: MachinePolicy): Step {
  const p = state.phase;
  if (p.name === 'closed') {
    if (event.type === 'migrate') return { state, effects: [{ kind: 'migration-refused', result: 'closed' }] };
    if (event.type === 'dialled' && event.backend !== null) return { state, effects: [dropDialled(event.leg)] };
    return { state, effects: NOTHING };
  }
  switch (event.type) {
    case 'client-closed':
      return close(state, 'client-closed', null, event.reason, event.code, `client closed with ${event.code ?? 1005}`);
    case 'close':
      return close(state, event.why, event.clientCode, event.reason, event.backendCode, event.reason);
    case 'migrate':
      if (event.unresumable && p.name === 'open') {
        return withEffect(unmovable(state, event.unresumable), { kind: 'migration-refused', result: 'closed' });
      }
      return migrate(state, event.reason, event.target);
    case 'dialled':
      return dialled(state, event, now, policy);
    case 'leg-closed':
      return legClosed(state, event, now, policy);
    case 'old-message':
      return oldMessage(state, event, now, policy);
    case 'pong-timeout':
      if ((p.name === 'open' || p.name === 'migration-dialling') && event.leg === p.leg.no) {
        return event.unresumable ? unmovable(state, event.unresumable) : failover(state, 'pong-timeout', 'no pong in time', now, policy);
      }
      return { state, effects: NOTHING };
    case 'timer':
      if (p.name === 'draining-old') return drainCheck(state, p, now, policy);
      if (p.name === 'resuming' && now >= p.deadline) return resumeFailed(state, p, 'resume-timeout', `no answer to the replay within ${policy.resumeTimeout}ms`, now, policy);
      return { state, effects: NOTHING };
    case 'resumed':
      return p.name === 'resuming' && event.leg === p.leg.no ? resumed(state, p) : { state, effects: NOTHING };
    case 'resume-refused':
      if (p.name !== 'resuming' || event.leg !== p.leg.no) return { state, effects: NOTHING };
      return close(state, 'resume-refused', event.code, event.reason, null, `the new backend refused the session: ${event.reason}`);
    case 'wait-over':
      return p.name === 'failing-over' && p.dialling === null ? nextPass(state, p, now) : { state, effects: NOTHING };
  }
}

function migrate(state: SessionState, reason: MigrationReason, target: string | null): Step {
  const p = state.phase;
  if (p.name !== 'open') return { state, effects: [{ kind: 'migration-refused', result: 'busy' }] };
  if (target === p.leg.backend) return { state, effects: [{ kind: 'migration-refused', result: 'failed' }] };
  const dialling = state.legs + 1;
  return {
    state: { phase: { name: 'migration-dialling', leg: p.leg, reason, dialling }, legs: dialling },
    effects: [{ kind: 'dial', leg: dialling, target, exclude: p.leg.backend }],
  };
}

function dialled(state: SessionState, e: Extract<SessionEvent, { type: 'dialled' }>, now: number, policy: MachinePolicy): Step {
  const p = state.phase;
  const stale = (): Step => ({ state, effects: e.backend === null ? NOTHING : [dropDialled(e.leg)] });
  if (p.name === 'migration-dialling') {
    if (e.leg !== p.dialling) return stale();
    if (e.backend === null) return { state: { ...state, phase: { name: 'open', leg: p.leg } }, effects: [{ kind: 'migration-ended', result: 'failed' }] };
    const next: Leg = { no: e.leg, backend: e.backend };
    const draining: Phase = {
      name: 'draining-old',
      leg: p.leg,
      next,
      switch: { reason: p.reason, startedAt: now },
      lastHeardAt: Math.min(e.lastActiveAt, now),
      feedBoundAt: now + policy.maxQuietWait,
      drainDeadline: now + policy.drainTimeout,
      closing: null,
    };
    // Checked at once: a session with nothing in flight moves without waiting.
    const held = { ...state, phase: draining };
    const checked = policy.codec && e.settled ? letGo(held, draining, 'settled') : drainCheck(held, draining, now, policy);
    return { state: checked.state, effects: [{ kind: 'hold' }, ...checked.effects] };
  }
  if (p.name === 'failing-over') {
    if (e.leg !== p.dialling) return stale();
    if (e.backend === null) {
      if (now >= p.deadline) return giveUp(state);
      const ms = Math.min(backoffDelay(p.pass, policy.backoff, policy.random), p.deadline - now);
      return { state: { ...state, phase: { ...p, pass: p.pass + 1, dialling: null } }, effects: [{ kind: 'wait-for-backend', ms }] };
    }
    const leg: Leg = { no: e.leg, backend: e.backend };
    if (policy.resumes) return startResume(state, leg, p.switch, false, now, policy, []);
    return {
      state: { ...state, phase: { name: 'open', leg } },
      effects: [{ kind: 'serve', leg }, { kind: 'switch-ended', reason: p.switch.reason, result: 'resumed', startedAt: p.switch.startedAt }],
    };
  }
  return stale();
}

function nextPass(state: SessionState, p: Extract<Phase, { name: 'failing-over' }>, now: number): Step {
  if (now >= p.deadline) return giveUp(state);
  const dialling = state.legs + 1;
  // After a whole pass every backend is worth another try, the failed one included (it may be back).
  return { state: { phase: { ...p, dialling }, legs: dialling }, effects: [{ kind: 'dial', leg: dialling, target: null, exclude: null }] };
}

function giveUp(state: SessionState): Step {
  return close(state, 'failover-deadline', 1013, 'no backend available', null, 'no backend within the failover deadline');
}

function legClosed(state: SessionState, e: Extract<SessionEvent, { type: 'leg-closed' }>, now: number, policy: MachinePolicy): Step {
  const p = state.phase;
  if (p.name === 'open' || p.name === 'migration-dialling') {
    if (e.leg !== p.leg.no) return { state, effects: NOTHING };
    const ended = backendEnded(state, e, policy);
    if (ended) return ended;
    if (e.unresumable) return unmovable(state, e.unresumable);
    return failover(state, e.code === ABNORMAL ? 'error' : 'close-code', `backend closed with ${e.code}`, now, policy);
  }
  if (p.name === 'resuming') {
    if (e.leg !== p.leg.no) return { state, effects: NOTHING };
    // A refusal by close (graphql-ws 4403) ends the session with that code, as a fresh connect would.
    return backendEnded(state, e, policy) ?? resumeFailed(state, p, 'error', `backend closed with ${e.code} during the resume`, now, policy);
  }
  if (p.name !== 'draining-old') return { state, effects: NOTHING };
  if (p.next !== null && e.leg === p.next.no) {
    const dropNext: Effect = { kind: 'drop-leg', leg: p.next.no, code: null, reason: 'closed', terminate: true };
    if (p.closing === null) {
      // The new backend died before the switch; the old one still serves: carry on there.
      return {
        state: { ...state, phase: { name: 'open', leg: p.leg } },
        effects: [
          dropNext,
          { kind: 'timer', at: null },
          { kind: 'serve', leg: p.leg },
          { kind: 'switch-ended', reason: p.switch.reason, result: 'failed', startedAt: p.switch.startedAt },
          { kind: 'migration-ended', result: 'failed' },
        ],
      };
    }
    // The old leg is already closing: once it has finished, fail over from there.
    return { state: { ...state, phase: { ...p, next: null } }, effects: [dropNext] };
  }
  if (e.leg !== p.leg.no) return { state, effects: NOTHING };
  if (p.closing === null) {
    // Closed by the backend before we asked: its own decision ends the session as it would when open.
    const ended = backendEnded(state, e, policy);
    if (ended) return ended;
  }
  return switchOver(state, p, p.closing ?? 'old-closed', now, false, policy);
}

/** The backend ended the session on purpose (or broke the protocol): the client is told; else null. */
function backendEnded(state: SessionState, e: Extract<SessionEvent, { type: 'leg-closed' }>, policy: MachinePolicy): Step | null {
  if (e.protocolError) {
    const reason = e.protocolError === 1009 ? 'backend message too big' : 'backend protocol error';
    return close(state, 'protocol-error', e.protocolError, reason, null, `${reason} (${e.protocolError})`);
  }
  if (e.code === ABNORMAL || policy.closeCodes.includes(e.code)) return null;
  return close(state, 'backend-closed', e.code, e.reason, null, `backend closed with ${e.code}`);
}

function oldMessage(state: SessionState, e: Extract<SessionEvent, { type: 'old-message' }>, now: number, policy: MachinePolicy): Step {
  const p = state.phase;
  if (p.name !== 'draining-old' || e.leg !== p.leg.no || p.closing !== null) return { state, effects: NOTHING };
  const heard: Phase = { ...p, lastHeardAt: now };
  if (policy.codec && e.settled) return letGo({ ...state, phase: heard }, heard, 'settled');
  // No new timer: the pending one finds the later lastHeardAt and waits on from there.
  return { state: { ...state, phase: heard }, effects: NOTHING };
}

/** Decides whether the old leg is done (or out of time), and otherwise when to look again. */
function drainCheck(state: SessionState, p: Extract<Phase, { name: 'draining-old' }>, now: number, policy: MachinePolicy): Step {
  if (now >= p.drainDeadline) return switchOver(state, p, p.closing ?? 'drain-timeout', now, true, policy);
  if (p.closing !== null) return { state, effects: [{ kind: 'timer', at: p.drainDeadline }] };
  if (!policy.codec) {
    const quietAt = p.lastHeardAt + policy.quietPeriod;
    if (now >= quietAt) return letGo(state, p, 'quiet');
    if (now >= p.feedBoundAt) return letGo(state, p, 'feed-bound');
    return { state, effects: [{ kind: 'timer', at: Math.min(quietAt, p.feedBoundAt, p.drainDeadline) }] };
  }
  return { state, effects: [{ kind: 'timer', at: p.drainDeadline }] };
}

/** The old leg has finished (or must): it gets its close and is heard until its close arrives. */
function letGo(state: SessionState, p: Extract<Phase, { name: 'draining-old' }>, why: DrainEnd): Step {
  return {
    state: { ...state, phase: { ...p, closing: why } },
    effects: [
      { kind: 'close-leg', leg: p.leg.no, code: 1001, reason: 'session migrating' },
      { kind: 'timer', at: p.drainDeadline },
    ],
  };
}

/** Leaves the old leg for the next one; with no next leg left, fails over. */
function switchOver(
  state: SessionState,
  p: Extract<Phase, { name: 'draining-old' }>,
  ended: DrainEnd,
  now: number,
  cut: boolean,
  policy: MachinePolicy,
): Step {
  const effects: Effect[] = [
    { kind: 'timer', at: null },
    // A cut old leg is not heard to its close: its late messages would come after the next leg's.
    { kind: 'drop-leg', leg: p.leg.no, code: null, reason: 'migrated', terminate: cut },
  ];
  if (p.next === null) {
    effects.push({ kind: 'switch-ended', reason: p.switch.reason, result: 'failed', startedAt: p.switch.startedAt }, { kind: 'migration-ended', result: 'failed' });
    return startFailover(state, p.leg.backend, null, 'error', 'migration target closed before the switch', now, policy, effects);
  }
  effects.push({ kind: 'drain-ended', ended, heldMs: now - p.switch.startedAt, from: p.leg.backend, to: p.next.backend });
  if (policy.resumes) return startResume(state, p.next, p.switch, true, now, policy, effects);
  effects.push(
    { kind: 'serve', leg: p.next },
    { kind: 'switch-ended', reason: p.switch.reason, result: 'resumed', startedAt: p.switch.startedAt },
    { kind: 'migration-ended', result: 'migrated' },
  );
  return { state: { ...state, phase: { name: 'open', leg: p.next } }, effects };
}

/** The serving leg is lost: it is closed, the client's messages are held, and another backend is dialled. */
function failover(state: SessionState, reason: FailoverReason, detail: string, now: number, policy: MachinePolicy): Step {
  const p = state.phase;
  if (p.name !== 'open' && p.name !== 'migration-dialling') return { state, effects: NOTHING };
  const effects: Effect[] = [{ kind: 'drop-leg', leg: p.leg.no, code: 1001, reason: 'failing over', terminate: false }];
  if (p.name === 'migration-dialling') {
    // The migration's dial carries on as the failover's first try.
    effects.push({ kind: 'migration-ended', result: 'failed' });
    return startFailover(state, p.leg.backend, p.dialling, reason, detail, now, policy, effects);
  }
  return startFailover(state, p.leg.backend, null, reason, detail, now, policy, effects);
}

/** Enters failing-over; `dialling` is a dial already under way, or null to start one now. */
function startFailover(
  state: SessionState,
  failed: string,
  dialling: number | null,
  reason: FailoverReason,
  detail: string,
  now: number,
  policy: MachinePolicy,
  effects: Effect[],
): Step {
  let legs = state.legs;
  effects.push({ kind: 'hold' }, { kind: 'failover-started', reason, failed, detail });
  if (dialling === null) {
    dialling = ++legs;
    effects.push({ kind: 'dial', leg: dialling, target: null, exclude: failed });
  }
  const phase: Phase = { name: 'failing-over', failed, switch: { reason, startedAt: now }, pass: 0, deadline: now + policy.failoverDeadline, dialling };
  return { state: { phase, legs }, effects };
}

/** What a switch under way came to when the session ended for `why`. */
const SWITCH_RESULT_OF_END: Readonly<Record<SessionEndReason, SwitchResult>> = {
  'failover-deadline': 'deadline',
  'buffer-full': 'buffer-full',
  'backend-closed': 'failed',
  'protocol-error': 'failed',
  'resume-refused': 'failed',
  unresumable: 'failed',
  'client-closed': 'client-gone',
  'client-unresponsive': 'client-gone',
  'idle-timeout': 'client-gone',
  admin: 'client-gone',
  shutdown: 'client-gone',
};

/** Ends the session from any live phase: every leg closed, every dial and wait dropped. */
function close(
  state: SessionState,
  why: SessionEndReason,
  clientCode: number | null,
  reason: string,
  backendCode: number | null,
  detail: string,
): Step {
  const p = state.phase;
  const effects: Effect[] = [{ kind: 'timer', at: null }];
  const switchResult = SWITCH_RESULT_OF_END[why];
  switch (p.name) {
    case 'open':
      effects.push(closeServing(p.leg, backendCode, reason));
      break;
    case 'migration-dialling':
      effects.push(closeServing(p.leg, backendCode, reason), { kind: 'cancel' }, { kind: 'migration-ended', result: 'closed' });
      break;
    case 'draining-old':
      effects.push(closeServing(p.leg, backendCode, reason));
      if (p.next) effects.push({ kind: 'drop-leg', leg: p.next.no, code: null, reason, terminate: true });
      effects.push({ kind: 'switch-ended', reason: p.switch.reason, result: switchResult, startedAt: p.switch.startedAt }, { kind: 'migration-ended', result: 'closed' });
      break;
    case 'resuming':
      effects.push({ kind: 'drop-leg', leg: p.leg.no, code: backendCode, reason, terminate: false });
      effects.push({ kind: 'switch-ended', reason: p.switch.reason, result: switchResult, startedAt: p.switch.startedAt });
      if (p.migrating) effects.push({ kind: 'migration-ended', result: 'closed' });
      break;
    case 'failing-over':
      effects.push({ kind: 'cancel' }, { kind: 'switch-ended', reason: p.switch.reason, result: switchResult, startedAt: p.switch.startedAt });
      break;
    case 'closed':
      return { state, effects: NOTHING };
  }
  effects.push({ kind: 'close-client', code: clientCode, reason }, { kind: 'ended', why, detail });
  return { state: { ...state, phase: { name: 'closed', why } }, effects };
}

/** Replays the protocol state to `leg` and waits for its answers (timer at the resume deadline). */
function startResume(state: SessionState, leg: Leg, sw: Switch, migrating: boolean, now: number, policy: MachinePolicy, effects: Effect[]): Step {
  const deadline = now + policy.resumeTimeout;
  // The timer before the resume: a resume with nothing to replay may end at once.
  effects.push({ kind: 'timer', at: deadline }, { kind: 'resume', leg });
  return { state: { ...state, phase: { name: 'resuming', leg, switch: sw, deadline, migrating } }, effects };
}

function resumed(state: SessionState, p: Extract<Phase, { name: 'resuming' }>): Step {
  const effects: Effect[] = [
    { kind: 'timer', at: null },
    { kind: 'serve', leg: p.leg },
    { kind: 'switch-ended', reason: p.switch.reason, result: 'resumed', startedAt: p.switch.startedAt },
  ];
  if (p.migrating) effects.push({ kind: 'migration-ended', result: 'migrated' });
  return { state: { ...state, phase: { name: 'open', leg: p.leg } }, effects };
}

/** The new leg died or stayed silent during the resume: like any lost backend, fail over from it. */
function resumeFailed(
  state: SessionState,
  p: Extract<Phase, { name: 'resuming' }>,
  reason: FailoverReason,
  detail: string,
  now: number,
  policy: MachinePolicy,
): Step {
  const effects: Effect[] = [{ kind: 'drop-leg', leg: p.leg.no, code: 1001, reason: 'failing over', terminate: reason === 'resume-timeout' }];
  if (p.migrating) effects.push({ kind: 'migration-ended', result: 'failed' });
  effects.push({ kind: 'switch-ended', reason: p.switch.reason, result: 'failed', startedAt: p.switch.startedAt });
  return startFailover(state, p.leg.backend, null, reason, detail, now, policy, effects);
}

/** A backend change the session's protocol state cannot survive: 1012, so the client's library reconnects. */
function unmovable(state: SessionState, why: string): Step {
  return close(state, 'unresumable', 1012, 'service restart', 1001, `cannot resume on another backend: ${why}`);
}

function withEffect(s: Step, effect: Effect): Step {
  return { state: s.state, effects: [...s.effects, effect] };
}

/** A dialled leg nobody needs any more (the session moved on, or closed, meanwhile). */
function dropDialled(leg: number): Effect {
  return { kind: 'drop-leg', leg, code: null, reason: 'not needed', terminate: true };
}

function closeServing(leg: Leg, code: number | null, reason: string): Effect {
  return { kind: 'drop-leg', leg: leg.no, code, reason, terminate: false };
}
