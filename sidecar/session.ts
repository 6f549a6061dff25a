import type { OutgoingHttpHeaders } from 'node:http';
import type { Backend, BackendPool } from './backends.js';
import { Cancel } from './dial.js';
import { isSendableCloseCode, MAX_CLOSE_REASON_BYTES } from '../common/close-codes.js';
import type { Frame, ProtocolState } from './codecs/codec.js';
import type { ActiveCodec } from './codecs/registry.js';
import { RequestTracker } from './codecs/tracker.js';
import type { SidecarConfig } from '../common/config/schema.js';
import type { Logger } from '../common/logger.js';
import { Relay } from './relay.js';
import { CLOSED, OPEN, type Peer, type PeerError, type PeerSink } from './wire/peer.js';
import { DIRECTION_IN, DIRECTION_OUT, type SidecarMetrics } from './metrics.js';
import { openState, step, type Effect, type Leg, type MachinePolicy, type SessionEvent, type SessionState } from './session-machine.js';
import {
  CUT_DRAIN_ENDS,
  FAILOVER_REASONS,
  STATE_OF_PHASE,
  type MigrationReason,
  type MigrationResult,
  type SessionEndReason,
  type SessionPhase,
  type SessionStateName,
  type FailoverReason,
  type SwitchReason,
} from '../common/vocabulary.js';

/** What a session needs from the sidecar that owns it. */
export interface SessionHost {
  readonly config: SidecarConfig;
  readonly pool: BackendPool;
  readonly log: Logger;
  readonly metrics: SidecarMetrics;
  /** What the session machine reads from the config, by what the session's codec does. */
  machinePolicy(codec: CodecKind): MachinePolicy;
  sessionClosed(session: Session, why: SessionEndReason): void;
}

/** What a session's codec does: nothing (no codec), track requests, or also keep protocol state to resume. */
export type CodecKind = 'none' | 'requests' | 'resumes';

export interface SessionInit {
  /** The session's codec (by path), or null: frames are then only forwarded. */
  codec: ActiveCodec | null;
  id: string;
  path: string;
  remoteAddress: string;
  headers: OutgoingHttpHeaders;
  protocols: readonly string[];
  hashKey: string | undefined;
}

interface Buffered {
  data: Buffer;
  isBinary: boolean;
  /** The request ids it carries (codec sessions), tracked once it is actually sent. */
  requestIds: string[] | null;
}

/** Ids found by a codec in the message being handled (reused: one message at a time). */
const scratchIds: string[] = [];

/**
 * One client's WebSocket session: the relay between the client leg and the backend leg that
 * currently serves it, and the I/O of its state machine (session-machine.ts), which decides
 * everything else. The client leg lives as long as the session; backend legs come and go.
 */
export class Session implements PeerSink {
  readonly id: string;
  readonly path: string;
  readonly remoteAddress: string;
  readonly startedAt: number;
  /** The serving backend and its leg (null while failing over). */
  backend: Backend | null;
  private leg: Peer | null;
  /** A leg dialled and not yet serving: a failover's or migration's target (kept paused). */
  private nextLeg: Peer | null = null;
  private nextBackend: Backend | null = null;
  private machine: SessionState;
  /** False while the client's messages are held (failing over, or draining the old backend). */
  private relaying = true;
  failovers = 0;
  messagesIn = 0;
  messagesOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** Set per message, turned into lastActivity by the tick (no clock read per message). */
  active = false;
  lastActivity: number;
  lifetimeEndsAt: number;
  /** When the outstanding ping to each leg was sent; 0 = none outstanding. */
  clientPongAt = 0;
  legPingAt = 0;
  private clientPingDue: number;
  private legPingDue = 0;
  /** The serving leg's number: whose backend calls the client's answers belong to (codec). */
  private legGeneration = 1;
  private readonly codec: ActiveCodec | null;
  private readonly codecKind: CodecKind;
  private readonly tracker: RequestTracker | null;
  /** The codec's protocol state of this session (a login, subscriptions), replayed to a new backend. */
  private readonly protocolState: ProtocolState | null;
  /** The serving leg's frames answer the replay of the protocol state (until resumed or refused). */
  private resuming = false;
  /** The leg held messages were last flushed to: a new one gets the unanswered requests first. */
  private servedLeg = 1;
  /** The replay's frames that wait for the new backend's answer (Frame.afterResume). */
  private afterResume: Frame[] | null = null;
  /** The serving leg's frames that end inside a protocol packet, held from the client until it is whole (ProtocolState.midPacket). */
  private partial: Frame[] | null = null;
  private partialBytes = 0;
  /** The packet under way was too large to hold: its frames go to the client as they come. */
  private partialReleased = false;
  private buffer: Buffered[] = [];
  bufferedBytes = 0;
  /** Cancels the dial or wait under way (a client gone, a session closed). */
  private pending: Cancel | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** The migration under way, answered when it ends; and a request being decided right now. */
  private migrationWaiter: ((r: MigrationResult) => void) | null = null;
  private refusal: MigrationResult | null = null;
  private legProtocolError = 0;
  /** The backend that served last (the session's close line names it; `backend` is null by then). */
  private servedBy = '';
  /** The backend the last failover left, and why: its 'failover complete' line names them. */
  private lost: { backend: string | null; detail: string } | null = null;
  /** Client → backend (its source, the client, is paused when the backend is slow) and back. */
  private readonly toBackend = new Relay();
  private readonly toClient = new Relay();
  private readonly onTimer = (): void => {
    this.timer = null;
    this.dispatch({ type: 'timer' });
  };

  constructor(
    private readonly host: SessionHost,
    readonly client: Peer,
    backend: Backend,
    leg: Peer,
    readonly protocol: string,
    private readonly init: SessionInit,
  ) {
    this.id = init.id;
    this.path = init.path;
    this.codec = init.codec;
    const c = host.config.codec;
    this.tracker = init.codec
      ? new RequestTracker({ maxRequests: c.maxTrackedRequests, maxBytes: c.maxTrackedBytes, timeoutMs: c.requestTimeout }, init.codec.stats)
      : null;
    this.protocolState = init.codec?.codec.createState?.({ maxFrames: c.maxStateFrames, maxBytes: c.maxStateBytes }) ?? null;
    this.codecKind = this.protocolState ? 'resumes' : init.codec ? 'requests' : 'none';
    this.remoteAddress = init.remoteAddress;
    // Timers start from the real time of opening, not the last tick (which can be a tick behind).
    this.startedAt = Date.now();
    this.lastActivity = this.startedAt;
    this.lifetimeEndsAt = this.nextLifetimeEnd(this.startedAt);
    this.clientPingDue = this.startedAt + host.config.session.pingInterval;
    this.toBackend.source = client;
    client.attach(this);
    client.resume();
    this.machine = openState(backend.id);
    this.backend = backend;
    this.leg = leg;
    this.listen(leg, this.machine.legs);
    host.pool.attach(backend);
    this.startServing(leg);
  }

  /** The session's state as users see it (admin API, metrics). */
  /** The key consistent-hash balances it by (and a split ranks it by), if any. */
  get hashKey(): string | undefined {
    return this.init.hashKey;
  }

  get state(): SessionStateName {
    return STATE_OF_PHASE[this.machine.phase.name];
  }

  get phase(): SessionPhase {
    return this.machine.phase.name;
  }

  get closed(): boolean {
    return this.machine.phase.name === 'closed';
  }

  get bufferedMessages(): number {
    return this.buffer.length;
  }

  get legSocket(): Peer | null {
    return this.leg;
  }

  // ---- data path: what the peers report (PeerSink) ---------------------------------------------

  /**
   * Where a whole message's frames go verbatim (frame-peer.ts), or null to have it read here. Only
   * a session without a codec, relaying, between two verbatim peers: everything else (a codec's
   * reading, holding while failing over, draining, replaying) is done on whole messages below.
   */
  route(from: Peer, payloadBytes: number): Peer | null {
    if (this.codec !== null || !this.relaying) return null;
    if (from === this.client) {
      const leg = this.leg;
      if (leg === null || !leg.verbatim || leg.readyState !== OPEN) return null;
      this.countIn(payloadBytes);
      return leg;
    }
    if (from !== this.leg || !this.client.verbatim || this.client.readyState !== OPEN) return null;
    this.countOut(payloadBytes);
    return this.client;
  }

  relay(from: Peer, to: Peer, frames: Buffer): void {
    (from === this.client ? this.toBackend : this.toClient).forwardFrames(to, frames, this.host.config.session.highWaterMarkBytes);
  }

  message(from: Peer, data: Buffer, isBinary: boolean): void {
    if (from === this.client) this.fromClient(data, isBinary);
    else this.fromBackend(from, data, isBinary);
  }

  pong(from: Peer): void {
    if (from === this.client) this.clientPongAt = 0;
    else this.legPong(from);
  }

  disconnected(from: Peer, code: number, reason: Buffer): void {
    if (from === this.client) this.clientClosed(code, reason);
    else this.legClosed(from, code, reason);
  }

  error(from: Peer, err: PeerError): void {
    if (from === this.client) {
      this.host.log.debug({ session: this.id, reason: err.message }, 'client socket error');
      return;
    }
    // 'close' follows; remember protocol errors so the close can name them.
    if (from === this.leg && err.closeCode !== undefined) this.legProtocolError = err.closeCode;
    this.host.log.debug({ session: this.id, backend: this.backend?.id, reason: err.message }, 'backend socket error');
  }

  private countIn(bytes: number): void {
    this.messagesIn++;
    this.bytesIn += bytes;
    this.active = true;
    this.host.metrics.messageSize.observeAt(DIRECTION_IN, bytes);
  }

  private countOut(bytes: number): void {
    this.messagesOut++;
    this.bytesOut += bytes;
    this.active = true;
    this.host.metrics.messageSize.observeAt(DIRECTION_OUT, bytes);
  }

  private fromClient(data: Buffer, isBinary: boolean): void {
    this.countIn(data.length);
    let requestIds: string[] | null = null;
    const codec = this.codec;
    if (codec !== null) {
      scratchIds.length = 0;
      const kind = codec.codec.classify(data, isBinary, 'client', scratchIds);
      if (kind === 'request') requestIds = scratchIds;
      else if (kind === 'response') {
        const verdict = this.tracker!.clientAnswered(scratchIds, this.legGeneration);
        if (verdict === 'orphan' && this.host.config.codec.orphanAnswers === 'drop') return;
        // While the old backend drains, the answers to its own calls still go to it.
        if (verdict === 'forward' && !this.relaying && this.leg !== null && this.leg.readyState === OPEN) {
          this.toBackend.forward(this.leg, data, isBinary, this.host.config.session.highWaterMarkBytes);
          return;
        }
      } else if (kind === 'malformed') codec.stats.malformed++;
    }
    const leg = this.leg;
    if (this.relaying && leg !== null && leg.readyState === OPEN) this.send(leg, data, isBinary, requestIds);
    else if (!this.closed) this.enqueue(data, isBinary, requestIds);
  }

  /** Sends a client's frame to a backend leg; a codec's requests and protocol state are kept from then on. */
  private send(leg: Peer, data: Buffer, isBinary: boolean, requestIds: string[] | null): void {
    this.toBackend.forward(leg, data, isBinary, this.host.config.session.highWaterMarkBytes);
    if (requestIds !== null) this.tracker!.requestSent(requestIds, data, isBinary, Date.now());
    this.protocolState?.sent(data, isBinary);
  }

  private fromBackend(leg: Peer, data: Buffer, isBinary: boolean): void {
    // A replaced leg's late messages are never delivered (they would come after the new leg's).
    if (leg !== this.leg) return;
    if (this.resuming && !this.resumeAnswer(leg, data, isBinary)) return;
    const codec = this.codec;
    if (codec !== null) {
      scratchIds.length = 0;
      const kind = codec.codec.classify(data, isBinary, 'backend', scratchIds);
      if (kind === 'response') {
        if (!this.tracker!.answer(scratchIds)) return; // the client already has an answer to this id
      } else if (kind === 'request') this.tracker!.backendCalled(scratchIds, this.legGeneration);
      else if (kind === 'malformed') codec.stats.malformed++;
    }
    this.countOut(data.length);
    this.protocolState?.received(data, isBinary);
    this.deliver(data, isBinary);
    // Held while a leg serves: the old backend of a migration is being drained.
    if (!this.relaying && !this.resuming) this.dispatch({ type: 'old-message', leg: leg.no, settled: this.settled });
  }

  /**
   * Sends a backend's frame on to the client, after the frames held before it; or holds it, while
   * the protocol packet it belongs to is unfinished and small enough to hold (codec.maxStateBytes).
   */
  private deliver(data: Buffer, isBinary: boolean): void {
    const mid = this.protocolState?.midPacket?.() === true;
    if (mid && !this.partialReleased) {
      if (this.partialBytes + data.length <= this.host.config.codec.maxStateBytes) {
        (this.partial ??= []).push({ data, isBinary });
        this.partialBytes += data.length;
        return;
      }
      this.partialReleased = true;
    } else if (!mid) {
      this.partialReleased = false;
    }
    const held = this.partial;
    this.partial = null;
    this.partialBytes = 0;
    if (this.client.readyState !== OPEN) return;
    const hwm = this.host.config.session.highWaterMarkBytes;
    if (held !== null) for (const f of held) this.toClient.forward(this.client, f.data, f.isBinary, hwm);
    this.toClient.forward(this.client, data, isBinary, hwm);
  }

  /** The serving leg is gone or replaced: a packet it left unfinished never reaches the client. */
  private dropPartial(): void {
    if (this.partial !== null) {
      this.partial = null;
      this.partialBytes = 0;
      this.protocolState!.packetDropped?.();
    }
    this.partialReleased = false;
  }

  /** A frame of the new backend while it answers the replay: true = deliver it to the client. */
  private resumeAnswer(leg: Peer, data: Buffer, isBinary: boolean): boolean {
    const verdict = this.protocolState!.resumeAnswer(data, isBinary);
    if (verdict === 'pass') return true;
    const stats = this.codec!.stats;
    if (verdict === 'swallow') {
      stats.swallowed++;
      return false;
    }
    this.resuming = false;
    if (verdict === 'resumed') {
      stats.swallowed++;
      stats.resumed++;
      this.dispatch({ type: 'resumed', leg: leg.no });
      return false;
    }
    stats.resumeRefusals++;
    // The client gets the refusal as a fresh connect would have had it, then the close.
    if (verdict.forward && this.client.readyState === OPEN) this.toClient.forward(this.client, data, isBinary, this.host.config.session.highWaterMarkBytes);
    this.dispatch({ type: 'resume-refused', leg: leg.no, code: verdict.code, reason: verdict.reason });
    return false;
  }

  /** Why this session's state could not move to another backend now, or null. */
  private unresumable(): string | null {
    if (this.host.config.failover.mode === 'close') return 'failover.mode is close';
    return this.protocolState?.unresumable() ?? null;
  }

  /** The codec has no request of the serving leg left unanswered, nor its protocol state an exchange. */
  private get settled(): boolean {
    return this.tracker !== null && this.tracker.size === 0 && (this.protocolState?.settled?.() ?? true);
  }

  private enqueue(data: Buffer, isBinary: boolean, requestIds: string[] | null): void {
    const f = this.host.config.failover;
    if (this.buffer.length + 1 > f.bufferMaxMessages || this.bufferedBytes + data.length > f.bufferMaxBytes) {
      this.host.log.warn(
        { session: this.id, backend: this.backend?.id, reason: 'buffer-full', bufferedBytes: this.bufferedBytes, bufferedMessages: this.buffer.length },
        'failover buffer full: closing client',
      );
      this.close('buffer-full', 1013, 'failover buffer full', 1001);
      return;
    }
    this.buffer.push({ data, isBinary, requestIds: requestIds === null ? null : requestIds.slice() });
    this.bufferedBytes += data.length;
  }

  // ---- leg events -----------------------------------------------------------------------------

  private legClosed(leg: Peer, code: number, reason: Buffer): void {
    if (leg === this.leg) this.dropPartial();
    const protocolError = leg === this.leg ? this.legProtocolError : 0;
    this.dispatch({ type: 'leg-closed', leg: leg.no, code, reason: reason.toString(), protocolError, unresumable: this.unresumable() });
  }

  private legPong(leg: Peer): void {
    if (leg !== this.leg) return;
    this.legPingAt = 0;
    if (this.backend) this.backend.alive = true;
  }

  private clientClosed(code: number, reason: Buffer): void {
    this.dispatch({ type: 'client-closed', code: code === 1005 ? null : code, reason: reason.toString() });
  }

  // ---- requests from the sidecar ------------------------------------------------------------

  /**
   * Moves the session to another backend (`target`, or the balancer's choice) without losing a
   * message: see session-machine.ts for the course; counted in baton_migrations_total.
   */
  migrate(reason: MigrationReason, target?: string): Promise<MigrationResult> {
    this.refusal = null;
    this.dispatch({ type: 'migrate', reason, target: target ?? null, unresumable: this.unresumable() });
    const refused = this.refusal as MigrationResult | null;
    const result = refused !== null ? Promise.resolve(refused) : new Promise<MigrationResult>((resolve) => (this.migrationWaiter = resolve));
    return result.then((r) => {
      this.host.metrics.migrations.inc({ result: r });
      return r;
    });
  }

  /**
   * Ends the session. clientCode null = the client leg is already closing; backendCode null =
   * close the backend without a code (or it is already closing).
   */
  close(why: SessionEndReason, clientCode: number | null, reason: string, backendCode: number | null): void {
    this.dispatch({ type: 'close', why, clientCode, reason, backendCode });
  }

  // ---- the machine's I/O ---------------------------------------------------------------------

  private dispatch(event: SessionEvent): void {
    const { state, effects } = step(this.machine, event, Date.now(), this.host.machinePolicy(this.codecKind));
    this.machine = state;
    for (const effect of effects) this.apply(effect);
  }

  private apply(e: Effect): void {
    const host = this.host;
    switch (e.kind) {
      case 'dial':
        void this.dial(e.leg, e.target, e.exclude);
        return;
      case 'cancel':
        this.pending?.cancel();
        this.pending = null;
        return;
      case 'wait-for-backend': {
        const cancel = new Cancel();
        this.pending = cancel;
        void host.pool.waitForBackend(e.ms, cancel).then(() => {
          if (this.pending === cancel) this.pending = null;
          this.dispatch({ type: 'wait-over' });
        });
        return;
      }
      case 'timer':
        if (this.timer) clearTimeout(this.timer);
        this.timer = e.at === null ? null : setTimeout(this.onTimer, Math.max(0, e.at - Date.now()));
        return;
      case 'close-leg': {
        const leg = this.legByNo(e.leg);
        if (!leg) return;
        // The old backend of a migration is let go: the protocol's own goodbye first.
        if (leg.readyState === OPEN) {
          const hwm = this.host.config.session.highWaterMarkBytes;
          for (const f of this.protocolState?.farewell?.() ?? []) this.toBackend.forward(leg, f.data, f.isBinary, hwm);
        }
        closeLeg(leg, e.code, e.reason);
        return;
      }
      case 'drop-leg':
        this.dropLeg(e.leg, e.code, e.reason, e.terminate);
        return;
      case 'serve':
        this.serve(e.leg);
        return;
      case 'resume':
        this.resume(e.leg);
        return;
      case 'hold':
        this.relaying = false;
        return;
      case 'failover-started':
        this.failovers++;
        this.lost = { backend: e.failed, detail: e.detail };
        // At debug: the failover's line at info comes when it ends ('failover complete', or the
        // session's close at warn), one line per failover even when thousands fail over at once.
        host.log.debug({ session: this.id, backend: e.failed, reason: e.reason, detail: e.detail }, 'backend lost: failing over');
        return;
      case 'switch-ended':
        host.metrics.switched(e.reason, e.result);
        if (e.result === 'resumed') host.metrics.switchGap.observe(e.reason, (Date.now() - e.startedAt) / 1000);
        if (e.result === 'resumed' && isFailover(e.reason)) {
          const gapMs = Date.now() - e.startedAt;
          host.log.info(
            { session: this.id, backend: this.backend?.id, from: this.lost?.backend, reason: e.reason, detail: this.lost?.detail, gapMs },
            'failover complete',
          );
        }
        return;
      case 'drain-ended': {
        host.metrics.migrationDrain.observe(e.ended, e.heldMs / 1000);
        const fields = { session: this.id, backend: e.from, target: e.to, reason: e.ended, heldMs: e.heldMs };
        if (CUT_DRAIN_ENDS.includes(e.ended) && this.tracker === null) {
          host.metrics.migrationCutoffs.inc({ ended: e.ended });
          host.log.warn(fields, 'old backend let go before it was quiet: answers it still owed are lost');
        } else host.log.info(fields, 'migration complete');
        return;
      }
      case 'migration-ended': {
        const waiter = this.migrationWaiter;
        this.migrationWaiter = null;
        waiter?.(e.result);
        return;
      }
      case 'migration-refused':
        this.refusal = e.result;
        return;
      case 'close-client':
        if (e.code !== null && this.client.readyState === OPEN) {
          if (isSendableCloseCode(e.code)) this.client.close(e.code, truncateReason(e.reason));
          else this.client.close();
        }
        return;
      case 'ended':
        this.ended(e.why, e.detail);
        return;
    }
  }

  /** One pass over the backends for the machine's dial `no`; its outcome becomes a 'dialled' event. */
  private async dial(no: number, target: string | null, exclude: string | null): Promise<void> {
    const cancel = new Cancel();
    this.pending = cancel;
    const h = this.host.config.failover.reconnectHeader;
    const result = await this.host.pool.connect({
      session: this.id,
      path: this.path,
      protocols: this.init.protocols,
      headers: { ...this.init.headers, [h.name]: h.value },
      key: this.init.hashKey,
      target,
      exclude,
      protocol: this.protocol,
      relayRefusal: false,
      cancel,
    });
    if (this.pending === cancel) this.pending = null;
    if (result.ok) {
      // Kept paused (as dialled) until it serves: its messages must come after the old leg's.
      this.nextLeg = result.peer;
      this.nextBackend = result.backend;
      this.listen(result.peer, no);
      this.host.pool.attach(result.backend);
    }
    const lastActiveAt = this.active ? Date.now() : this.lastActivity;
    this.dispatch({ type: 'dialled', leg: no, backend: result.ok ? result.backend.id : null, lastActiveAt, settled: this.settled });
  }

  private legByNo(no: number): Peer | null {
    if (this.leg !== null && this.leg.no === no) return this.leg;
    if (this.nextLeg !== null && this.nextLeg.no === no) return this.nextLeg;
    return null;
  }

  /** Numbers a backend leg and hears it (it stays paused until it serves: its messages come then). */
  private listen(leg: Peer, no: number): void {
    leg.no = no;
    leg.attach(this);
  }

  /** The session stops hearing a leg: it is closed (or cut) and leaves its backend's count. */
  private dropLeg(no: number, code: number | null, reason: string, terminate: boolean): void {
    let leg: Peer;
    let backend: Backend;
    if (this.leg !== null && this.leg.no === no) {
      leg = this.leg;
      backend = this.backend!;
      this.leg = null;
      this.backend = null;
      this.legGeneration = 0;
      this.toBackend.reset(this.client);
      this.toClient.reset(null);
    } else if (this.nextLeg !== null && this.nextLeg.no === no) {
      leg = this.nextLeg;
      backend = this.nextBackend!;
      this.nextLeg = null;
      this.nextBackend = null;
    } else {
      return;
    }
    this.host.pool.detach(backend);
    if (terminate) leg.terminate();
    else closeLeg(leg, code, reason);
  }

  /** The machine's serving leg from now on: the next leg moves in (or the old one stays), then held messages go. */
  private serve(leg: Leg): void {
    this.adopt(leg);
    const serving = this.leg!;
    if (this.servedLeg !== leg.no) {
      this.servedLeg = leg.no;
      const hwm = this.host.config.session.highWaterMarkBytes;
      // The replay's frames that waited for the new backend's answer, then (codec sessions) the
      // requests the previous backend never answered, in their order.
      for (const f of this.afterResume ?? []) this.toBackend.forward(serving, f.data, f.isBinary, hwm);
      this.afterResume = null;
      this.tracker?.replay((data, isBinary) => this.toBackend.forward(serving, data, isBinary, hwm));
    }
    this.relaying = true;
    const buffered = this.buffer;
    this.buffer = [];
    this.bufferedBytes = 0;
    if (buffered.length > 0) this.host.metrics.replayed.inc(buffered.length);
    for (const m of buffered) this.fromHeld(m);
  }

  /** The next leg becomes the serving one (heard, resumed) unless it already is. */
  private adopt(leg: Leg): void {
    if (this.leg !== null && this.leg.no === leg.no) return;
    this.dropPartial();
    const next = this.nextLeg!;
    this.leg = next;
    this.backend = this.nextBackend;
    this.nextLeg = null;
    this.nextBackend = null;
    this.legGeneration = leg.no;
    this.startServing(next);
  }

  /** The new leg gets the session's protocol state; its answers are read by resumeAnswer(). */
  private resume(leg: Leg): void {
    this.adopt(leg);
    const serving = this.leg!;
    // The state may have become unmovable since the backend change began (a migration's hold).
    const unmovable = this.unresumable();
    if (unmovable !== null) {
      queueMicrotask(() => this.close('unresumable', 1012, 'service restart', 1001));
      return;
    }
    const frames = this.protocolState!.replay();
    this.codec!.stats.resumes++;
    this.resuming = true;
    const hwm = this.host.config.session.highWaterMarkBytes;
    this.afterResume = null;
    let sent = 0;
    for (const f of frames) {
      if (f.afterResume) (this.afterResume ??= []).push(f);
      else {
        this.toBackend.forward(serving, f.data, f.isBinary, hwm);
        sent++;
      }
    }
    if (sent > 0) return;
    // Nothing to wait for: resumed at once (after this step's effects).
    queueMicrotask(() => {
      if (!this.resuming || this.leg !== serving) return;
      this.resuming = false;
      this.dispatch({ type: 'resumed', leg: leg.no });
    });
  }

  private fromHeld(m: Buffered): void {
    const leg = this.leg;
    if (this.relaying && leg !== null && leg.readyState === OPEN) this.send(leg, m.data, m.isBinary, m.requestIds);
    else if (!this.closed) this.enqueue(m.data, m.isBinary, m.requestIds);
  }

  private startServing(leg: Peer): void {
    this.servedBy = this.backend!.id;
    this.toClient.source = leg;
    leg.resume(); // dialBackend() hands legs over paused: its messages come after the old leg's
    this.legPingAt = 0;
    this.legPingDue = Date.now() + this.host.config.session.pingInterval;
    this.legProtocolError = 0;
  }

  private ended(why: SessionEndReason, detail: string): void {
    this.relaying = false;
    this.resuming = false;
    if (why === 'unresumable' && this.codec) this.codec.stats.unresumable++;
    this.buffer = [];
    this.bufferedBytes = 0;
    const level = WARN_ENDS.includes(why) ? 'warn' : 'info';
    // The session's one line at info, as a proxy's access log: everything about it, at its end.
    this.host.log[level](
      {
        session: this.id,
        backend: this.servedBy,
        path: this.path,
        remoteAddress: this.remoteAddress,
        protocol: this.protocol || undefined,
        reason: why,
        detail,
        durationMs: Date.now() - this.startedAt,
        failovers: this.failovers,
      },
      'session closed',
    );
    this.host.sessionClosed(this, why);
  }

  // ---- heartbeats and timers (driven by the sidecar's tick) ------------------------------

  tick(now: number): void {
    if (this.closed) return;
    const s = this.host.config.session;
    if (this.active) {
      this.active = false;
      this.lastActivity = now;
    }
    this.tracker?.expire(now);
    if (s.idleTimeout > 0 && now - this.lastActivity >= s.idleTimeout) {
      this.close('idle-timeout', 1001, 'idle timeout', 1001);
      return;
    }
    // Client leg: a missing pong means the client is gone (a paused socket can't read its pong).
    if (this.clientPongAt > 0) {
      if (!this.toBackend.paused && now - this.clientPongAt >= s.pongTimeout) {
        this.client.terminate();
        this.close('client-unresponsive', null, 'client unresponsive', 1001);
        return;
      }
    } else if (now >= this.clientPingDue && this.client.readyState === OPEN) {
      this.clientPongAt = now;
      this.clientPingDue = now + s.pingInterval;
      this.client.ping();
    }
    const leg = this.leg;
    if (!this.relaying || leg === null) return;
    if (this.legPingAt > 0) {
      if (!this.toClient.paused && now - this.legPingAt >= s.pongTimeout) {
        this.dispatch({ type: 'pong-timeout', leg: leg.no, unresumable: this.unresumable() });
        return;
      }
    } else if (now >= this.legPingDue && leg.readyState === OPEN) {
      this.legPingAt = now;
      this.legPingDue = now + s.pingInterval;
      leg.ping();
    }
    if (s.maxLifetime > 0 && now >= this.lifetimeEndsAt) {
      this.lifetimeEndsAt = this.nextLifetimeEnd(now);
      void this.migrate('lifetime');
    }
  }

  private nextLifetimeEnd(now: number): number {
    const life = this.host.config.session.maxLifetime;
    // ±10% so sessions opened together don't all migrate together.
    return life > 0 ? now + life * (0.9 + Math.random() * 0.2) : Infinity;
  }
}

function closeLeg(leg: Peer, code: number | null, reason: string): void {
  if (leg.readyState === CLOSED) return;
  if (leg.readyState !== OPEN || code === null) {
    if (leg.readyState === OPEN) leg.close();
    else leg.terminate();
    return;
  }
  leg.close(isSendableCloseCode(code) ? code : 1001, truncateReason(reason));
}

/** Session ends logged as warnings: the client lost its session through no choice of its own or its backend's. */
const WARN_ENDS: readonly SessionEndReason[] = ['failover-deadline', 'protocol-error', 'buffer-full', 'unresumable', 'resume-refused'];

function isFailover(reason: SwitchReason): reason is FailoverReason {
  return (FAILOVER_REASONS as readonly SwitchReason[]).includes(reason);
}

function truncateReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let r = reason.slice(0, MAX_CLOSE_REASON_BYTES);
  while (Buffer.byteLength(r) > MAX_CLOSE_REASON_BYTES) r = r.slice(0, -1);
  return r;
}
