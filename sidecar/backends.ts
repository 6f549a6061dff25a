import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createChooser, type BackendView, type Chooser } from './balancing/choose.js';
import type { BackendSpec, BackendState, SidecarConfig } from '../common/config/schema.js';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { dialBackend, dialEndpoint, requestTarget, type Cancel, type DialContext, type DialEndpoint, type DialResult } from './dial.js';
import { DialSlots } from './dial-slots.js';
import { CircuitBreaker } from './health/breaker.js';
import { healthStatuses, type HealthStatus } from './health/ejection.js';
import { PhiAccrualDetector } from './health/phi.js';
import type { Logger } from '../common/logger.js';
import type { SidecarMetrics } from './metrics.js';
import { DISCARD, type Peer } from './wire/peer.js';

/** A backend as the sidecar runs it: its spec plus live health and session count. */
export class Backend {
  /** Legs open to it (a migrating session counts on both backends until the switch). */
  private legs = 0;
  health: HealthStatus = 'healthy';
  phiValue = 0;
  /** Set by a pong or probe since the last tick; the tick turns it into one φ heartbeat. */
  alive = false;
  /** Removed from the config/admin set: drained, then forgotten once its last session left. */
  removing = false;
  warmSince: number;
  /** How a drain of this backend is paced (admin drain or PUT); kept so retried drains keep the pace. */
  drainPace: DrainPace = {};
  nextProbeAt = 0;
  probing = false;
  readonly breaker: CircuitBreaker;
  readonly phi: PhiAccrualDetector;
  readonly dialSlots = new DialSlots();
  /** The spec whose URL `endpointOf` holds taken apart (a spec is replaced, never changed). */
  private endpointSpec: BackendSpec | null = null;
  private endpointOf: DialEndpoint | null = null;

  constructor(
    public spec: BackendSpec,
    health: SidecarConfig['health'],
    now: number,
  ) {
    this.breaker = new CircuitBreaker(health.breaker);
    this.phi = new PhiAccrualDetector(health.phi);
    this.warmSince = now;
  }

  get id(): string {
    return this.spec.id;
  }
  get sessions(): number {
    return this.legs;
  }
  get dialsWaiting(): number {
    return this.dialSlots.queued;
  }
  /** Only the pool changes the count (BackendPool.attach/detach). */
  countLeg(delta: 1 | -1): void {
    this.legs += delta;
  }
  get state(): BackendState {
    return this.spec.state;
  }
  /** Where dials go: the spec's URL, parsed once per spec rather than per dial. */
  get endpoint(): DialEndpoint {
    if (this.endpointSpec !== this.spec) {
      this.endpointOf = dialEndpoint(this.spec.url, this.spec.address);
      this.endpointSpec = this.spec;
    }
    return this.endpointOf!;
  }
}

export interface DrainPace {
  /** Sessions started migrating per second; unset = as fast as the migration concurrency allows. */
  rate?: number;
  /** Epoch ms after which the rest migrate without the rate. */
  deadlineAt?: number;
}

export type DialOutcome = 'success' | 'failure' | 'refused' | 'aborted';

/** What a session (or a new client) asks the pool to connect to. */
export interface ConnectRequest {
  /** For logs. */
  session: string;
  path: string;
  protocols: readonly string[];
  headers: OutgoingHttpHeaders;
  /** Consistent-hash key. */
  key: string | undefined;
  /** Only this backend (a named migration target); otherwise the balancer chooses. */
  target: string | null;
  /** Never this backend (the one the session is leaving). */
  exclude: string | null;
  /** The subprotocol the client already agreed on; a backend that picks another can't serve it. */
  protocol: string | null;
  /** A 3xx/4xx answer ends the attempt and goes to the client (new sessions); otherwise the next backend is tried. */
  relayRefusal: boolean;
  cancel?: Cancel;
}

export type ConnectResult =
  | { ok: true; backend: Backend; peer: Peer; headers: IncomingHttpHeaders }
  | { ok: false; kind: 'refused'; backend: Backend; status: number; headers: IncomingHttpHeaders; body: Buffer }
  /** No backend could be chosen, or every one chosen failed. */
  | { ok: false; kind: 'none' }
  | { ok: false; kind: 'aborted' };

/**
 * The set of backends and the one place that decides where a session goes. Sockets stay out of
 * here except for active health probes.
 */
export class BackendPool {
  readonly backends = new Map<string, Backend>();
  private chooser: Chooser;
  private views: BackendView[] = [];
  /** Sessions holding through an outage wait here to be woken when a backend becomes usable. */
  private readonly waiters = new Set<() => void>();
  /**
   * The backends a session's balanced dial keeps out of (the other groups of a split, sidecar.ts);
   * strict = fail rather than use them (a split move), else they serve when its own group cannot.
   */
  fence: (session: string, leaving: string | null) => { outside: ReadonlySet<string>; strict: boolean } | null = () => null;

  constructor(
    private config: SidecarConfig,
    private dialContext: DialContext,
    private readonly log: Logger,
    private readonly metrics: SidecarMetrics,
    now: number,
  ) {
    this.chooser = createChooser({ algorithm: config.balancer.algorithm, slowStart: config.balancer.slowStart });
    for (const spec of config.backends) this.backends.set(spec.id, new Backend(spec, config.health, now));
  }

  /** Picks a backend and claims a dial on it (the breaker's half-open trial, when that applies). */
  private choose(key: string | undefined, excluded: Set<string>, now: number): Backend | undefined {
    const views = this.views;
    views.length = 0;
    for (const b of this.backends.values()) {
      views.push({
        id: b.id,
        weight: b.spec.weight,
        standby: b.spec.standby,
        state: b.spec.state,
        sessions: b.sessions,
        health: b.health,
        trialAvailable: b.breaker.trialAvailable(now, true),
        trialDue: b.breaker.state === 'open' && b.breaker.trialAvailable(now, false),
        warmSince: b.warmSince,
      });
    }
    // A claim can fail (another session holds the trial): exclude that backend and ask again.
    const tried: string[] = [];
    let chosen: Backend | undefined;
    for (let i = 0; i <= this.backends.size; i++) {
      const pick = this.chooser.choose(views, { key, excluded, now });
      if (!pick) break;
      const backend = this.backends.get(pick.id)!;
      if (backend.breaker.tryAcquire(now, pick.panic)) {
        chosen = backend;
        break;
      }
      excluded.add(pick.id);
      tried.push(pick.id);
    }
    for (const id of tried) excluded.delete(id);
    return chosen;
  }

  /**
   * The one dial policy of the handshake, failover and migration paths: one pass over the
   * backends the balancer offers (breaker trials claimed, each failed backend excluded from the
   * rest of the pass), until one opens.
   */
  async connect(req: ConnectRequest): Promise<ConnectResult> {
    const excluded = new Set<string>();
    if (req.exclude !== null) excluded.add(req.exclude);
    const fence = req.target === null ? this.fence(req.session, req.exclude) : null;
    for (;;) {
      if (req.cancel?.cancelled) return { ok: false, kind: 'aborted' };
      let backend = fence ? this.pick(req, new Set([...excluded, ...fence.outside])) : undefined;
      if (!backend && !fence?.strict) backend = this.pick(req, excluded);
      if (!backend) return { ok: false, kind: 'none' };
      const result = await this.dial(backend, req.path, req.protocols, req.headers, req.protocol, req.cancel);
      if (result.ok) {
        return { ok: true, backend, peer: result.peer, headers: result.headers };
      } else if (result.kind === 'aborted') {
        return result;
      } else if (result.kind === 'refused' && req.relayRefusal) {
        return { ok: false, kind: 'refused', backend, status: result.status, headers: result.headers, body: result.body };
      } else {
        this.log.info(
          { session: req.session, backend: backend.id, reason: result.kind === 'error' ? result.reason : `refused with ${result.status}` },
          'backend dial failed',
        );
      }
      if (req.target !== null) return { ok: false, kind: 'none' };
      excluded.add(backend.id);
    }
  }

  private pick(req: ConnectRequest, excluded: Set<string>): Backend | undefined {
    if (req.target === null) return this.choose(req.key, excluded, Date.now());
    const target = this.backends.get(req.target);
    // A named target is tried even when the balancer would skip it (the operator asked for it).
    return target && !excluded.has(target.id) && target.breaker.tryAcquire(Date.now(), true) ? target : undefined;
  }

  /** A session's leg has opened on `backend`. */
  attach(backend: Backend): void {
    backend.countLeg(1);
  }

  /** A session's leg to `backend` is gone; a removed backend leaves once its last leg has. */
  detach(backend: Backend): void {
    backend.countLeg(-1);
    if (backend.removing && backend.sessions === 0) this.forgetDrained();
  }

  /**
   * Dials a backend for a session's path and feeds the outcome to its breaker. A leg whose
   * subprotocol is not the one the session already agreed (`protocol`) is dropped: the backend
   * answered (no failure for its breaker), but it can't serve this session.
   */
  private async dial(
    backend: Backend,
    path: string,
    protocols: readonly string[],
    headers: OutgoingHttpHeaders,
    protocol: string | null,
    cancel?: Cancel,
  ): Promise<DialResult> {
    const endpoint = backend.endpoint;
    const target = { endpoint, path: requestTarget(endpoint, path) };
    const slot = backend.dialSlots.acquire(this.config.upstream.maxConcurrentDials, cancel);
    if (slot !== true) {
      if (!(await slot)) return { ok: false, kind: 'aborted' };
      // Dials that failed while this one waited may have opened the breaker: then this session tries
      // another backend now, instead of a dial of its own that would likely fail the same way.
      if (backend.breaker.state !== 'closed') {
        backend.dialSlots.release(this.config.upstream.maxConcurrentDials);
        return { ok: false, kind: 'error', reason: 'its breaker opened while this dial waited for a slot', cause: 'other' };
      }
    }
    let result: DialResult;
    try {
      result = await dialBackend(target, protocols, headers, this.dialContext, cancel);
    } finally {
      backend.dialSlots.release(this.config.upstream.maxConcurrentDials);
    }
    const outcome: DialOutcome = result.ok ? 'success' : result.kind === 'error' ? 'failure' : result.kind;
    this.report(backend, outcome, Date.now(), result.ok ? undefined : result.kind === 'error' ? result.reason : outcome);
    if (result.ok && protocol !== null && result.peer.protocol !== protocol) {
      result.peer.terminate();
      result = { ok: false, kind: 'error', reason: `subprotocol "${result.peer.protocol}" != "${protocol}"`, cause: 'subprotocol' };
    }
    if (outcome !== 'aborted') this.metrics.dialed(backend.id, result.ok ? 'success' : result.kind === 'error' ? result.cause : 'refused');
    return result;
  }

  /** Whether any backend could take a new session now (readiness, and the held-client wait). */
  hasUsable(): boolean {
    for (const b of this.backends.values()) {
      if (b.spec.state === 'enabled' && (b.health === 'healthy' || b.health === 'suspect')) return true;
    }
    return false;
  }

  report(backend: Backend, outcome: DialOutcome, now: number, reason?: string): void {
    const wasOpen = backend.breaker.state !== 'closed';
    switch (outcome) {
      case 'success':
      case 'refused': // it answered: alive, even if it did not want this session
        backend.breaker.onSuccess();
        backend.alive = true;
        if (wasOpen) {
          backend.warmSince = now;
          this.log.info({ backend: backend.id, reason: 'dial succeeded' }, 'backend breaker closed');
          this.refreshHealth(now);
          this.wake();
        }
        break;
      case 'failure': {
        backend.breaker.onFailure(now);
        if (!wasOpen && backend.breaker.state !== 'closed') {
          this.log.warn(
            { backend: backend.id, reason, consecutiveFailures: backend.breaker.consecutiveFailures },
            'backend breaker tripped',
          );
        }
        this.refreshHealth(now);
        break;
      }
      case 'aborted':
        backend.breaker.release();
        break;
    }
  }

  /** Resolves after `ms`, or earlier when a backend may have become usable, or when cancelled. */
  waitForBackend(ms: number, cancel: Cancel): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        cancel.off();
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      cancel.on(done);
    });
  }

  wake(): void {
    for (const w of [...this.waiters]) w();
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /** Runs on the sidecar's tick: φ heartbeats, health statuses, probes. */
  tick(now: number): void {
    for (const b of this.backends.values()) {
      if (b.alive) {
        b.phi.heartbeat(now);
        b.alive = false;
      } else if (b.sessions === 0 && this.config.health.probe.type === 'none') {
        // Nothing is expected to report on an idle, unprobed backend: don't let φ accrue.
        b.phi.reset();
      }
      b.phiValue = b.phi.phi(now);
      if (this.config.health.probe.type !== 'none' && b.sessions === 0 && !b.probing && now >= b.nextProbeAt) {
        this.probe(b, now);
      }
    }
    this.refreshHealth(now);
  }

  private refreshHealth(now: number): void {
    const list = [...this.backends.values()];
    const statuses = healthStatuses(
      list.map((b) => ({
        id: b.id,
        phi: b.phiValue,
        breakerOpen: b.breaker.state !== 'closed',
        consecutiveFailures: b.breaker.consecutiveFailures,
      })),
      this.config.health.phi.threshold,
      this.config.health.maxEjectedPercent,
    );
    let recovered = false;
    for (const b of list) {
      const next = statuses.get(b.id) ?? 'healthy';
      if (next === b.health) continue;
      const wasUsable = b.health === 'healthy' || b.health === 'suspect';
      const usable = next === 'healthy' || next === 'suspect';
      if (usable && !wasUsable) {
        recovered = true;
        b.warmSince = now;
      }
      if (wasUsable !== usable) {
        this.log.info({ backend: b.id, health: next, phi: Number(b.phiValue.toFixed(2)) }, 'backend health changed');
      }
      b.health = next;
    }
    if (recovered) this.wake();
  }

  private probe(b: Backend, now: number): void {
    const probe = this.config.health.probe;
    b.probing = true;
    b.nextProbeAt = now + probe.interval;
    const done = (ok: boolean, reason: string) => {
      b.probing = false;
      if (!this.backends.has(b.id)) return;
      this.report(b, ok ? 'success' : 'failure', Date.now(), reason);
    };
    const url = new URL(probe.path, b.spec.url);
    if (probe.type === 'websocket') {
      const ctx = { ...this.dialContext, handshakeTimeout: probe.timeout };
      void dialBackend({ endpoint: b.endpoint, path: url.pathname + url.search }, [], {}, ctx).then((r) => {
        if (r.ok) {
          // Dialled legs come paused; the close handshake needs reading.
          r.peer.attach(DISCARD);
          r.peer.resume();
          r.peer.close(1000, 'health probe');
        }
        done(r.ok || r.kind === 'refused', r.ok ? 'probe ok' : `probe: ${r.kind === 'error' ? r.reason : r.kind}`);
      });
      return;
    }
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    // A backend expanded by DNS: connect to its address, keep the name for Host and SNI.
    const pinned = b.spec.address === undefined ? {} : { host: b.spec.address, servername: url.hostname, headers: { host: url.host } };
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'GET', timeout: probe.timeout, ...pinned }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done(status >= 200 && status < 400, `probe answered ${status}`);
    });
    req.on('timeout', () => req.destroy(new Error('probe timeout')));
    req.on('error', (err) => done(false, `probe: ${err.message}`));
    req.end();
  }

  /**
   * Applies a new backend set (config reload, later the admin API's PUT). Returns ids whose
   * sessions must be migrated away (removed or newly draining).
   */
  apply(specs: readonly BackendSpec[], now: number): { added: string[]; updated: string[]; removed: string[]; toDrain: string[] } {
    const added: string[] = [];
    const updated: string[] = [];
    const removed: string[] = [];
    const toDrain: string[] = [];
    const next = new Set(specs.map((s) => s.id));
    for (const spec of specs) {
      const existing = this.backends.get(spec.id);
      if (!existing) {
        this.backends.set(spec.id, new Backend(spec, this.config.health, now));
        added.push(spec.id);
        continue;
      }
      const changed = JSON.stringify(existing.spec) !== JSON.stringify(spec) || existing.removing;
      if (!changed) continue;
      if (spec.state === 'draining' && existing.spec.state !== 'draining') toDrain.push(spec.id);
      if (spec.state === 'enabled' && existing.spec.state !== 'enabled') {
        existing.warmSince = now;
        existing.drainPace = {};
      }
      existing.spec = spec;
      existing.removing = false;
      updated.push(spec.id);
    }
    for (const b of this.backends.values()) {
      if (next.has(b.id) || b.removing) continue;
      b.removing = true;
      b.spec = { ...b.spec, state: 'draining' };
      removed.push(b.id);
      toDrain.push(b.id);
    }
    this.forgetDrained();
    if (added.length > 0 || updated.length > 0) this.wake();
    return { added, updated, removed, toDrain };
  }

  /** Adds one backend (admin API); false when the id is taken. */
  add(spec: BackendSpec, now: number): boolean {
    if (this.backends.has(spec.id)) return false;
    this.backends.set(spec.id, new Backend(spec, this.config.health, now));
    this.wake();
    return true;
  }

  /** Changes a backend's administrative state; an enabled backend starts its slow start again. */
  setState(backend: Backend, state: BackendState, now: number): void {
    if (backend.spec.state === state) return;
    backend.spec = { ...backend.spec, state };
    if (state === 'enabled') {
      backend.removing = false;
      backend.warmSince = now;
      backend.drainPace = {};
      this.wake();
    }
  }

  /** Marks a backend for removal: it drains, and leaves once its last session has moved. */
  remove(backend: Backend): void {
    backend.removing = true;
    backend.spec = { ...backend.spec, state: 'draining' };
    this.forgetDrained();
  }

  /** Forgets a backend's failures: breaker closed, φ history cleared (admin reset). */
  resetHealth(backend: Backend, now: number): void {
    backend.breaker.reset();
    backend.phi.reset();
    backend.phiValue = 0;
    this.refreshHealth(now);
    this.wake();
  }

  /** Backends being removed leave the pool once their last session has moved. */
  forgetDrained(): void {
    for (const b of this.backends.values()) {
      if (b.removing && b.sessions === 0) {
        this.backends.delete(b.id);
        this.metrics.forgetBackend(b.id);
        this.log.info({ backend: b.id, reason: 'removed' }, 'backend removed');
      }
    }
  }

  reconfigure(config: SidecarConfig, dial: DialContext): void {
    if (config.balancer.algorithm !== this.config.balancer.algorithm || config.balancer.slowStart !== this.config.balancer.slowStart) {
      this.chooser = createChooser({ algorithm: config.balancer.algorithm, slowStart: config.balancer.slowStart });
    }
    this.config = config;
    this.dialContext = dial;
  }
}
