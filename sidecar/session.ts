import type { OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { backoffDelay } from './backoff.js';
import type { Backend, BackendPool } from './backends.js';
import { isSendableCloseCode, MAX_CLOSE_REASON_BYTES } from './close-codes.js';
import type { SidecarConfig } from './config/types.js';
import type { ActiveCodec } from './codecs/registry.js';
import { RequestTracker } from './codecs/tracker.js';
import type { DialResult } from './dial.js';
import { DIRECTION_IN, DIRECTION_OUT, type SessionEndReason, type SidecarMetrics, type SwitchReason, type SwitchResult, type MigrationResult } from './metrics.js';
import type { Logger } from './logger.js';

/** Why a session left its backend (also the `reason` label of later metrics). */
export type FailoverReason = Extract<SwitchReason, 'error' | 'close-code' | 'pong-timeout'>;
export type { MigrationResult };
export type MigrationReason = Extract<SwitchReason, 'drain' | 'admin' | 'lifetime' | 'reload'>;

export type SessionState = 'open' | 'failing-over' | 'migrating' | 'closed';

/** What a session needs from the sidecar that owns it. */
export interface SessionHost {
  readonly config: SidecarConfig;
  readonly pool: BackendPool;
  readonly log: Logger;
  readonly metrics: SidecarMetrics;
  sessionClosed(session: Session, why: SessionEndReason): void;
}

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

/** ws keeps the TCP socket private; batching writes needs it (stable in ws 8). */
function tcpOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}

const SEND_BINARY = { binary: true } as const;
const SEND_TEXT = { binary: false } as const;
const OPEN = WebSocket.OPEN;

// Listeners are shared functions (no closure per socket): each socket points at its session.
const kSession = Symbol('session');
type TaggedSocket = WebSocket & { [kSession]: Session };

function sessionOf(ws: WebSocket): Session {
  return (ws as TaggedSocket)[kSession];
}

function onClientMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  sessionOf(this).fromClient(data, isBinary);
}
function onClientClose(this: WebSocket, code: number, reason: Buffer): void {
  sessionOf(this).clientClosed(code, reason);
}
function onClientPong(this: WebSocket): void {
  sessionOf(this).clientPongAt = 0;
}
function onLegMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  sessionOf(this).fromBackend(this, data, isBinary);
}
function onLegClose(this: WebSocket, code: number, reason: Buffer): void {
  sessionOf(this).legClosed(this, code, reason);
}
function onLegPong(this: WebSocket): void {
  sessionOf(this).legPong(this);
}
function onSocketError(this: WebSocket, err: Error & { code?: string }): void {
  // 'close' follows every 'error'; remember protocol errors so the close can name them.
  const s = sessionOf(this);
  if (s) s.socketError(this, err);
}


/** ws error codes that mean the peer broke the protocol, with the close code they deserve. */
const PROTOCOL_ERROR_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 1009,
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_INVALID_CLOSE_CODE: 1002,
  WS_ERR_INVALID_OPCODE: 1002,
  WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH: 1002,
  WS_ERR_EXPECTED_FIN: 1002,
  WS_ERR_EXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_RSV_1: 1002,
  WS_ERR_UNEXPECTED_RSV_2_3: 1002,
};

interface Buffered {
  data: Buffer;
  isBinary: boolean;
  /** The request ids it carries (codec sessions), tracked once it is actually sent. */
  requestIds: string[] | null;
}

/** Ids found by a codec in the message being handled (reused: one message at a time). */
const scratchIds: string[] = [];

/**
 * One client's WebSocket session and the backend leg that currently serves it. The client leg
 * lives as long as the session; backend legs come and go (failover, planned migration).
 */
export class Session {
  readonly id: string;
  readonly path: string;
  readonly remoteAddress: string;
  readonly startedAt: number;
  state: SessionState = 'open';
  backend: Backend | null;
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

  private leg: WebSocket | null;
  /** Bumped whenever the session loses or changes its backend leg (codec: whose calls are whose). */
  private legGeneration = 0;
  private readonly codec: ActiveCodec | null;
  private readonly tracker: RequestTracker | null;
  /** Planned migration: the new leg, opened and paused until the old one has finished. */
  private nextLeg: WebSocket | null = null;
  private nextBackend: Backend | null = null;
  private migrationDone: ((r: MigrationResult) => void) | null = null;
  /** A planned migration is dialling its target (the session is still open on the old leg). */
  private migrationDialling: AbortController | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  private buffer: Buffered[] = [];
  bufferedBytes = 0;
  /** The failover loop's cancel switch (client gone, session closed). */
  private failoverAbort: AbortController | null = null;
  private legProtocolError = 0;
  /** The backend switch under way (failover or migration), for the failover metrics. */
  private switchReason: SwitchReason | null = null;
  private switchStartedAt = 0;
  private clientPaused = false;
  private legPaused = false;
  private toLegDrains = 0;
  private toClientDrains = 0;
  /**
   * Sockets corked until the end of the current tick: the messages of one read go out in one
   * write instead of one write each (most of a proxy's cost is in those system calls).
   */
  private corkedLeg: Socket | null = null;
  private corkedClient: Socket | null = null;
  private readonly uncorkLeg = (): void => {
    const s = this.corkedLeg;
    this.corkedLeg = null;
    s?.uncork();
  };
  private readonly uncorkClient = (): void => {
    const s = this.corkedClient;
    this.corkedClient = null;
    s?.uncork();
  };
  private readonly onLegDrained = (): void => {
    if (this.toLegDrains > 0 && --this.toLegDrains === 0 && this.clientPaused) {
      this.clientPaused = false;
      this.client.resume();
    }
  };
  private readonly onClientDrained = (): void => {
    if (this.toClientDrains > 0 && --this.toClientDrains === 0 && this.legPaused) {
      this.legPaused = false;
      this.leg?.resume();
    }
  };

  constructor(
    private readonly host: SessionHost,
    readonly client: WebSocket,
    backend: Backend,
    leg: WebSocket,
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
    this.remoteAddress = init.remoteAddress;
    // Timers start from the real time of opening, not the last tick (which can be a tick behind).
    this.startedAt = Date.now();
    this.lastActivity = this.startedAt;
    this.lifetimeEndsAt = this.nextLifetimeEnd(this.startedAt);
    this.clientPingDue = this.startedAt + host.config.session.pingInterval;
    (client as TaggedSocket)[kSession] = this;
    client.on('message', onClientMessage);
    client.on('close', onClientClose);
    client.on('pong', onClientPong);
    client.on('error', onSocketError);
    this.backend = backend;
    this.leg = leg;
    this.attachLeg(backend, leg);
  }

  /** Read through a getter so checks after an await aren't narrowed away by the compiler. */
  get closed(): boolean {
    return this.state === 'closed';
  }

  get bufferedMessages(): number {
    return this.buffer.length;
  }

  get legSocket(): WebSocket | null {
    return this.leg;
  }

  // ---- data path -------------------------------------------------------------------------

  fromClient(data: Buffer, isBinary: boolean): void {
    this.messagesIn++;
    this.bytesIn += data.length;
    this.active = true;
    this.host.metrics.messageSize.observe(DIRECTION_IN, data.length);
    let requestIds: string[] | null = null;
    const codec = this.codec;
    if (codec !== null) {
      scratchIds.length = 0;
      const kind = codec.codec.classify(data, isBinary, 'client', scratchIds);
      if (kind === 'request') requestIds = scratchIds;
      else if (kind === 'response') {
        const verdict = this.tracker!.clientAnswered(scratchIds, this.legGeneration);
        if (verdict === 'orphan' && this.host.config.codec.orphanAnswers === 'drop') return;
      } else if (kind === 'malformed') codec.stats.malformed++;
    }
    this.toBackend(data, isBinary, requestIds);
  }

  /** Sends to the backend leg, or holds the message while there is no open leg. */
  private toBackend(data: Buffer, isBinary: boolean, requestIds: string[] | null): void {
    const leg = this.leg;
    if (this.state === 'open' && leg !== null && leg.readyState === OPEN) {
      if (this.corkedLeg === null) {
        this.corkedLeg = tcpOf(leg);
        this.corkedLeg.cork();
        process.nextTick(this.uncorkLeg);
      }
      if (leg.bufferedAmount + data.length > this.host.config.session.highWaterMarkBytes) {
        // The backend is slower than the client: stop reading the client until this is written.
        this.toLegDrains++;
        leg.send(data, isBinary ? SEND_BINARY : SEND_TEXT, this.onLegDrained);
        if (!this.clientPaused) {
          this.clientPaused = true;
          this.client.pause();
        }
      } else {
        leg.send(data, isBinary ? SEND_BINARY : SEND_TEXT);
      }
      if (requestIds !== null) this.tracker!.requestSent(requestIds, data, isBinary, Date.now());
      return;
    }
    if (this.state !== 'closed') this.enqueue(data, isBinary, requestIds);
  }

  fromBackend(leg: WebSocket, data: Buffer, isBinary: boolean): void {
    // A replaced leg's late messages are never delivered (they would come after the new leg's).
    if (leg !== this.leg) return;
    const codec = this.codec;
    if (codec !== null) {
      scratchIds.length = 0;
      const kind = codec.codec.classify(data, isBinary, 'backend', scratchIds);
      if (kind === 'response') {
        if (!this.tracker!.answer(scratchIds)) return; // the client already has an answer to this id
      } else if (kind === 'request') this.tracker!.backendCalled(scratchIds, this.legGeneration);
      else if (kind === 'malformed') codec.stats.malformed++;
    }
    this.messagesOut++;
    this.bytesOut += data.length;
    this.active = true;
    this.host.metrics.messageSize.observe(DIRECTION_OUT, data.length);
    const client = this.client;
    if (client.readyState !== OPEN) return;
    if (this.corkedClient === null) {
      this.corkedClient = tcpOf(client);
      this.corkedClient.cork();
      process.nextTick(this.uncorkClient);
    }
    if (client.bufferedAmount + data.length > this.host.config.session.highWaterMarkBytes) {
      this.toClientDrains++;
      client.send(data, isBinary ? SEND_BINARY : SEND_TEXT, this.onClientDrained);
      if (!this.legPaused) {
        this.legPaused = true;
        leg.pause();
      }
    } else {
      client.send(data, isBinary ? SEND_BINARY : SEND_TEXT);
    }
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

  private flush(): void {
    const buffered = this.buffer;
    this.buffer = [];
    this.bufferedBytes = 0;
    // Codec sessions: requests the lost backend never answered go first, in their original order.
    this.tracker?.replay((data, isBinary) => this.toBackend(data, isBinary, null));
    if (buffered.length > 0) this.host.metrics.replayed.inc(buffered.length);
    for (const m of buffered) this.toBackend(m.data, m.isBinary, m.requestIds);
  }

  // ---- leg lifecycle -----------------------------------------------------------------------

  private attachLeg(backend: Backend, leg: WebSocket): void {
    (leg as TaggedSocket)[kSession] = this;
    leg.on('message', onLegMessage);
    leg.on('close', onLegClose);
    leg.on('pong', onLegPong);
    leg.removeAllListeners('error');
    leg.on('error', onSocketError);
    leg.resume(); // dialBackend() hands legs over paused, so no message arrives before these listeners
    backend.sessions++;
    this.legPingAt = 0;
    this.legPingDue = Date.now() + this.host.config.session.pingInterval;
    this.legProtocolError = 0;
  }

  /** Leaves the current backend: the leg is closed (or killed) and no longer heard. */
  private detachLeg(code: number | null, reason: string): void {
    const leg = this.leg;
    const backend = this.backend;
    this.leg = null;
    this.backend = null;
    this.legGeneration++;
    if (backend) {
      backend.sessions--;
      if (backend.removing && backend.sessions === 0) this.host.pool.forgetDrained();
    }
    this.toLegDrains = 0;
    this.toClientDrains = 0;
    this.legPaused = false;
    if (this.clientPaused) {
      this.clientPaused = false;
      this.client.resume();
    }
    if (leg) closeLeg(leg, code, reason);
  }

  socketError(ws: WebSocket, err: Error & { code?: string }): void {
    const protocolCode = err.code ? PROTOCOL_ERROR_CODES[err.code] : undefined;
    if (ws === this.client) {
      this.host.log.debug({ session: this.id, reason: err.message }, 'client socket error');
      return;
    }
    if (ws === this.leg && protocolCode) this.legProtocolError = protocolCode;
    this.host.log.debug({ session: this.id, backend: this.backend?.id, reason: err.message }, 'backend socket error');
  }

  legClosed(leg: WebSocket, code: number, reason: Buffer): void {
    if (leg === this.nextLeg) {
      // The migration target died before the switch; finishMigration() will fail over.
      this.nextLeg = null;
      return;
    }
    if (leg !== this.leg) return;
    if (this.state === 'migrating') {
      this.finishMigration();
      return;
    }
    if (this.state !== 'open') return;
    const backendId = this.backend?.id;
    if (this.legProtocolError) {
      const closeCode = this.legProtocolError;
      this.host.log.warn({ session: this.id, backend: backendId, reason: `backend protocol error (${closeCode})` }, 'closing session');
      this.close('protocol-error', closeCode, closeCode === 1009 ? 'backend message too big' : 'backend protocol error', null);
      return;
    }
    // 1006: no close frame (reset, EOF, error) — always a failover trigger.
    if (code === 1006 || this.host.config.failover.closeCodes.includes(code)) {
      void this.failover(code === 1006 ? 'error' : 'close-code', `backend closed with ${code}`);
      return;
    }
    // The backend ended the session deliberately: the client gets its code and reason.
    this.host.log.info({ session: this.id, backend: backendId, reason: `backend closed with ${code}`, code }, 'session closed by backend');
    this.close('backend-closed', code, reason.toString(), null);
  }

  legPong(leg: WebSocket): void {
    if (leg !== this.leg) return;
    this.legPingAt = 0;
    if (this.backend) this.backend.alive = true;
  }

  clientClosed(code: number, reason: Buffer): void {
    if (this.state === 'closed') return;
    this.host.log.info({ session: this.id, backend: this.backend?.id, reason: `client closed with ${code}`, code }, 'session closed by client');
    const toBackend = code === 1005 ? null : isSendableCloseCode(code) ? code : 1001;
    this.close('client-closed', null, reason.toString(), toBackend);
  }

  // ---- failover (unplanned) ----------------------------------------------------------------

  private startSwitch(reason: SwitchReason): void {
    this.switchReason = reason;
    this.switchStartedAt = performance.now();
  }

  /** Counts the switch under way once, with its result (and its gap when it resumed). */
  private endSwitch(result: SwitchResult): void {
    const reason = this.switchReason;
    if (reason === null) return;
    this.switchReason = null;
    const m = this.host.metrics;
    m.switches.inc({ reason, result });
    if (result === 'resumed') m.switchGap.observe({ reason }, (performance.now() - this.switchStartedAt) / 1000);
  }

  /** The backend leg is gone: hold the client, buffer its messages, and find another backend. */
  async failover(reason: FailoverReason, detail: string): Promise<void> {
    if (this.state !== 'open' && this.state !== 'migrating') return;
    const failed = this.backend;
    const host = this.host;
    const f = host.config.failover;
    this.cancelMigration();
    this.detachLeg(1001, 'failing over');
    this.state = 'failing-over';
    this.failovers++;
    this.startSwitch(reason);
    const started = Date.now();
    const deadline = started + f.deadline;
    host.log.warn({ session: this.id, backend: failed?.id, reason, detail }, 'backend lost: failing over');
    const abort = new AbortController();
    this.failoverAbort = abort;
    const excluded = new Set<string>();
    if (failed) excluded.add(failed.id);
    let pass = 0;
    while (this.state === 'failing-over') {
      const now = Date.now();
      if (now >= deadline) {
        host.log.warn({ session: this.id, reason: 'deadline', detail: `no backend within ${f.deadline}ms` }, 'failover gave up: closing client');
        this.close('failover-deadline', 1013, 'no backend available', null);
        return;
      }
      const backend = host.pool.choose(this.init.hashKey, excluded, now);
      if (backend) {
        const result = await this.dialTo(backend, true, abort.signal);
        if (this.state !== 'failing-over') {
          if (result.ok) result.socket.terminate();
          return;
        }
        if (result.ok) {
          this.failoverAbort = null;
          this.adopt(backend, result.socket);
          this.endSwitch('resumed');
          host.log.info(
            { session: this.id, backend: backend.id, reason, previous: failed?.id, gapMs: Date.now() - started, replayed: this.buffer.length },
            'failover complete',
          );
          this.flush();
          return;
        }
        excluded.add(backend.id);
        continue; // try the next backend at once; back off only after a whole pass
      }
      excluded.clear();
      const wait = Math.min(backoffDelay(pass++, f.backoff), deadline - Date.now());
      if (wait > 0) await host.pool.waitForBackend(wait, abort.signal);
    }
  }

  private async dialTo(backend: Backend, reconnect: boolean, signal?: AbortSignal): Promise<DialResult> {
    const host = this.host;
    const headers = reconnect ? this.reconnectHeaders() : this.init.headers;
    const result = await host.pool.dial(backend, this.path, this.init.protocols, headers, signal);
    if (result.ok && result.socket.protocol !== this.protocol) {
      // The client already agreed on a subprotocol; a backend that picks another can't serve it.
      result.socket.terminate();
      host.log.warn({ session: this.id, backend: backend.id, reason: `subprotocol "${result.socket.protocol}" != "${this.protocol}"` }, 'backend dial rejected');
      return { ok: false, kind: 'error', reason: 'subprotocol mismatch', cause: 'subprotocol' };
    }
    if (!result.ok && result.kind !== 'aborted') {
      host.log.info(
        { session: this.id, backend: backend.id, reason: result.kind === 'error' ? result.reason : `refused with ${result.status}` },
        'backend dial failed',
      );
    }
    return result;
  }

  private reconnectHeaders(): OutgoingHttpHeaders {
    const h = this.host.config.failover.reconnectHeader;
    return { ...this.init.headers, [h.name]: h.value };
  }

  private adopt(backend: Backend, leg: WebSocket): void {
    this.backend = backend;
    this.leg = leg;
    this.attachLeg(backend, leg);
    this.state = 'open';
  }

  // ---- planned migration ----------------------------------------------------------------

  /**
   * Moves the session to another backend without losing a message: the new leg is opened first;
   * then client messages are held, the old backend gets a 1001 close and its remaining messages
   * are delivered until its close arrives (or drainTimeout); then the held messages go to the new
   * leg. Lossless for a backend that answers in order.
   */
  async migrate(reason: MigrationReason, target?: Backend): Promise<MigrationResult> {
    const result = await this.migrateOnce(reason, target);
    this.host.metrics.migrations.inc({ result });
    return result;
  }

  private async migrateOnce(reason: MigrationReason, target?: Backend): Promise<MigrationResult> {
    if (this.state === 'closed') return 'closed';
    if (this.state !== 'open' || this.migrationDialling || this.nextLeg) return 'busy';
    const host = this.host;
    const from = this.backend;
    const excluded = new Set<string>();
    if (from) excluded.add(from.id);
    let backend = target;
    if (backend === from) return 'failed';
    if (backend) {
      if (!backend.breaker.tryAcquire(Date.now(), true)) return 'failed';
    } else {
      backend = host.pool.choose(this.init.hashKey, excluded, Date.now());
    }
    if (!backend) {
      host.log.warn({ session: this.id, backend: from?.id, reason, detail: 'no other usable backend' }, 'migration not possible');
      return 'failed';
    }
    const abort = new AbortController();
    this.migrationDialling = abort;
    const result = await this.dialTo(backend, true, abort.signal);
    this.migrationDialling = null;
    if (!result.ok) return this.closed ? 'closed' : 'failed';
    if (this.closed || this.state !== 'open' || this.leg === null) {
      // The old leg failed meanwhile; the failover already looks after the session.
      result.socket.terminate();
      return this.closed ? 'closed' : 'failed';
    }
    // It stays paused (as dialBackend() hands it over): its messages must come after everything
    // the old backend still sends.
    const next = result.socket;
    (next as TaggedSocket)[kSession] = this;
    next.on('close', onLegClose);
    this.nextLeg = next;
    this.nextBackend = backend;
    backend.sessions++; // counted now so the balancer sees it; attachLeg() won't count it again
    this.state = 'migrating';
    this.startSwitch(reason);
    host.log.info({ session: this.id, backend: from?.id, target: backend.id, reason }, 'migrating session');
    const done = new Promise<MigrationResult>((resolve) => {
      this.migrationDone = resolve;
    });
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      host.log.warn({ session: this.id, backend: from?.id, reason: 'drain-timeout' }, 'old backend did not close in time');
      this.finishMigration();
    }, host.config.failover.drainTimeout);
    this.leg.close(1001, 'session migrating');
    return done;
  }

  /** The old leg has closed (or timed out): switch to the new one and release held messages. */
  private finishMigration(): void {
    if (this.state !== 'migrating') return;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    const next = this.nextLeg;
    const nextBackend = this.nextBackend!;
    const resolve = this.migrationDone;
    this.nextLeg = null;
    this.nextBackend = null;
    this.migrationDone = null;
    nextBackend.sessions--; // attachLeg() counts it again
    this.detachLeg(null, 'migrated');
    if (next === null || next.readyState !== OPEN) {
      // The new backend died while the old one drained: an ordinary failover from here.
      this.state = 'open';
      this.endSwitch('failed');
      resolve?.('failed');
      void this.failover('error', 'migration target closed before the switch');
      return;
    }
    next.removeListener('close', onLegClose);
    this.adopt(nextBackend, next);
    this.endSwitch('resumed');
    this.host.log.info({ session: this.id, backend: nextBackend.id, reason: 'migrated', replayed: this.buffer.length }, 'migration complete');
    this.flush();
    resolve?.('migrated');
  }

  private cancelMigration(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    const next = this.nextLeg;
    if (this.nextBackend) this.nextBackend.sessions--;
    this.nextLeg = null;
    this.nextBackend = null;
    if (next) next.terminate();
    const resolve = this.migrationDone;
    this.migrationDone = null;
    resolve?.(this.state === 'closed' ? 'closed' : 'failed');
  }

  // ---- heartbeats and timers (driven by the sidecar's tick) ------------------------------

  tick(now: number): void {
    if (this.state === 'closed') return;
    const s = this.host.config.session;
    if (this.active) {
      this.active = false;
      this.lastActivity = now;
    }
    this.tracker?.expire(now);
    if (s.idleTimeout > 0 && now - this.lastActivity >= s.idleTimeout) {
      this.host.log.info({ session: this.id, backend: this.backend?.id, reason: 'idle-timeout' }, 'closing idle session');
      this.close('idle-timeout', 1001, 'idle timeout', 1001);
      return;
    }
    // Client leg: a missing pong means the client is gone (a paused socket can't read its pong).
    if (this.clientPongAt > 0) {
      if (!this.clientPaused && now - this.clientPongAt >= s.pongTimeout) {
        this.host.log.info({ session: this.id, backend: this.backend?.id, reason: 'client-pong-timeout' }, 'client unresponsive: closing session');
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
    if (this.state !== 'open' || leg === null) return;
    if (this.legPingAt > 0) {
      if (!this.legPaused && now - this.legPingAt >= s.pongTimeout) {
        void this.failover('pong-timeout', `no pong within ${s.pongTimeout}ms`);
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

  // ---- closing ---------------------------------------------------------------------------

  /**
   * Ends the session. clientCode null = the client leg is already closing; backendCode null =
   * close the backend without a code (or it is already closing).
   */
  close(why: SessionEndReason, clientCode: number | null, reason: string, backendCode: number | null): void {
    if (this.state === 'closed') return;
    this.endSwitch(why === 'failover-deadline' ? 'deadline' : why === 'buffer-full' ? 'buffer-full' : 'client-gone');
    this.state = 'closed';
    this.failoverAbort?.abort();
    this.failoverAbort = null;
    this.migrationDialling?.abort();
    this.cancelMigration();
    this.buffer = [];
    this.bufferedBytes = 0;
    this.detachLeg(backendCode, reason);
    if (clientCode !== null && this.client.readyState === OPEN) {
      if (isSendableCloseCode(clientCode)) this.client.close(clientCode, truncateReason(reason));
      else this.client.close();
    }
    this.host.sessionClosed(this, why);
  }
}

function closeLeg(leg: WebSocket, code: number | null, reason: string): void {
  if (leg.readyState === WebSocket.CLOSED) return;
  if (leg.readyState !== OPEN || code === null) {
    if (leg.readyState === OPEN) leg.close();
    else leg.terminate();
    return;
  }
  leg.close(isSendableCloseCode(code) ? code : 1001, truncateReason(reason));
}

function truncateReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let r = reason.slice(0, MAX_CLOSE_REASON_BYTES);
  while (Buffer.byteLength(r) > MAX_CLOSE_REASON_BYTES) r = r.slice(0, -1);
  return r;
}
