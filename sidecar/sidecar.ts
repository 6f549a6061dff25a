import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer, type WebSocket } from 'ws';
import type { z } from 'zod';
import type { PutBackendsRequestSchema, PutBackendsResponse, SplitView } from '../common/admin/contract.js';
import { AdminServer, type AdminPort, type DrainPaceRequest, type PutBackendsRefusal } from './admin/server.js';
import { BackendPool } from './backends.js';
import { ChurnMap } from './churn-map.js';
import { CodecRouter, loadCodecs } from './codecs/registry.js';
import { settingsOrderProblem, withManagedSettings } from '../common/config/managed.js';
import { setValueAt, valueAt } from '../common/config/paths.js';
import { RESTART_KEYS } from '../common/config/schema.js';
import type { SidecarConfig } from '../common/config/schema.js';
import { dialContext } from './dial.js';
import { DnsExpander } from './dns/resolver.js';
import { backendRequestHeaders, clientTarget, headerPolicy, offeredProtocols, passedResponseHeaderLines, type HeaderPolicy } from './headers.js';
import type { Logger } from '../common/logger.js';
import { SidecarMetrics } from './metrics.js';
import { runPaced } from './paced.js';
import { Session, type CodecKind, type SessionHost } from './session.js';
import type { MachinePolicy } from './session-machine.js';
import { SplitKeeper } from './split-keeper.js';
import type { MigrationReason, MigrationResult, SessionEndReason } from '../common/vocabulary.js';
import { FramePeer } from './wire/frame-peer.js';
import { switchingProtocols } from './wire/handshake.js';
import { CLOSED, type Peer } from './wire/peer.js';
import { WsPeer } from './wire/ws-peer.js';

// Per-request facts handed from the upgrade handler to ws's handshake callbacks.
const kProtocol = Symbol('backendProtocol');
const kResponseHeaders = Symbol('passedResponseHeaders');
type PendingUpgrade = IncomingMessage & { [kProtocol]?: string; [kResponseHeaders]?: string[] };

const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'upgrade', 'proxy-connection']);
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;

/** How often a draining backend that still has sessions is drained again. */
const DRAIN_RETRY_MS = 1000;

export class Sidecar implements SessionHost, AdminPort {
  config: SidecarConfig;
  readonly pool: BackendPool;
  /** Expands the file's backends marked resolve to one backend per address (docs/dns.md). */
  private readonly dns: DnsExpander;
  readonly sessions = new ChurnMap<Session>();
  readonly metrics: SidecarMetrics;
  /** Loaded in start() (user codec modules are imported then). */
  codecs = new CodecRouter([], null, [], new Map());
  private readonly admin: AdminServer;
  adminAddress: AddressInfo | null = null;
  /** While set (admin API), new upgrades are answered 503; open sessions are untouched. */
  frontendPaused = false;
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private headers: HeaderPolicy;
  /** The session machine's policies (made per config), by what the session's codec does. */
  private policies: MachinePolicies;
  private ticker: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly idPrefix = randomBytes(3).toString('hex');
  private nextId = 0;
  /** Backends with a migrateAway() under way. */
  private readonly draining = new Set<string>();
  private nextDrainRetryAt = 0;
  /** Bumped by every applied config reload (the file changed, or the admin API changed settings). */
  configGeneration = 1;
  /** The config as the file and environment give it, before managedSettings. */
  fileConfig: SidecarConfig;
  /** Settings set through the admin API (PUT /v1/backends): they outlive file reloads. */
  managedSettings: Readonly<Record<string, string>> = {};
  /** The last generation applied through the admin API's PUT /v1/backends (0 = none yet). */
  backendsGeneration = 0;
  readonly startedAt = Date.now();
  /** Holds a share of the sessions per backend group (PUT /v1/backends split). */
  private readonly split: SplitKeeper;

  constructor(
    config: SidecarConfig,
    readonly log: Logger,
  ) {
    this.config = config;
    this.fileConfig = config;
    this.headers = this.headerPolicyOf(config);
    this.policies = machinePolicies(config);
    this.metrics = new SidecarMetrics({
      sessions: () => this.sessions.values(),
      backends: () => this.pool.backends.values(),
      frontendPaused: () => this.frontendPaused,
      codecs: () => this.codecs.all,
      split: () => this.splitView(),
    });
    this.dns = new DnsExpander(() => this.dnsChanged(), log, this.metrics);
    this.dns.configure(config.backends, config.dns);
    this.pool = new BackendPool({ ...config, backends: this.dns.expand() }, dialContext(config), log, this.metrics, Date.now());
    this.split = new SplitKeeper({
      sessions: this.sessions,
      backends: () => this.pool.backends.values(),
      backend: (id) => this.pool.backends.get(id),
      stopping: () => this.stopping,
      log,
    });
    this.pool.fence = (session, leaving) => this.split.fence(session, leaving);
    this.admin = new AdminServer(this, config.admin, log);
    const listen = config.listen;
    const serverOptions = { maxHeaderSize: listen.maxHeaderBytes, requestTimeout: listen.requestTimeout, headersTimeout: listen.requestTimeout };
    this.server = listen.tls
      ? createHttpsServer({
          ...serverOptions,
          cert: readFileSync(listen.tls.certFile),
          key: readFileSync(listen.tls.keyFile),
          ...(listen.tls.caFile ? { ca: readFileSync(listen.tls.caFile), requestCert: true, rejectUnauthorized: true } : {}),
        })
      : createHttpServer(serverOptions);
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: config.session.maxMessageBytes,
      perMessageDeflate: listen.perMessageDeflate.enabled ? { threshold: listen.perMessageDeflate.threshold } : false,
      handleProtocols: (_offered, req) => (req as PendingUpgrade)[kProtocol] || false,
    });
    this.wss.on('headers', (lines, req) => {
      const extra = (req as PendingUpgrade)[kResponseHeaders];
      if (extra) lines.push(...extra);
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.handleUpgrade(req, socket, head);
    });
    this.server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket', connection: 'close' });
      res.end('This is a WebSocket endpoint.\n');
    });
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  async start(): Promise<AddressInfo> {
    this.codecs = await loadCodecs(this.config.codec);
    // The first answers before the first sessions (each name bounded by dns.timeout).
    await this.dns.start();
    const { host, port } = this.config.listen.address;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      this.dns.stop();
      throw err;
    });
    try {
      this.adminAddress = await this.admin.start();
    } catch (err) {
      this.dns.stop();
      this.server.close();
      throw err;
    }
    this.ticker = setInterval(() => this.tick(), tickInterval(this.config));
    const address = this.server.address() as AddressInfo;
    this.log.info(
      { address: `${address.address}:${address.port}`, backends: [...this.pool.backends.keys()], algorithm: this.config.balancer.algorithm },
      'sidecar listening',
    );
    return address;
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  private tick(): void {
    const now = Date.now();
    this.pool.tick(now);
    for (const s of this.sessions.values()) s.tick(now);
    if (now >= this.nextDrainRetryAt) {
      // A drain whose sessions found no other backend (all busy or down) is tried again.
      this.nextDrainRetryAt = now + DRAIN_RETRY_MS;
      for (const b of this.pool.backends.values()) {
        if (b.state === 'draining' && b.sessions > 0 && !this.draining.has(b.id)) void this.migrateAway(b.id, 'drain');
      }
      this.split.retryDeferred();
    }
  }

  // ---- new sessions ------------------------------------------------------------------------

  private async handleUpgrade(rawReq: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const req = rawReq as PendingUpgrade;
    // A client that resets while its backend is dialled must not crash us; ws takes over after.
    socket.on('error', ignoreSocketError);
    if (this.stopping) return respond(socket, 503, 'sidecar is shutting down');
    if (this.frontendPaused) return respond(socket, 503, 'new sessions are paused', { 'retry-after': '1' });
    const problem = invalidUpgrade(req);
    if (problem) return respond(socket, problem.status, problem.message, problem.headers);

    const id = `${this.idPrefix}-${(++this.nextId).toString(36)}`;
    const path = clientTarget(req.url!);
    const headers = backendRequestHeaders(req, this.headers);
    const protocols = offeredProtocols(req.headers);
    const hashKey = this.hashKeyOf(req, path);
    const remoteAddress = req.socket.remoteAddress ?? '';
    this.split.arrive(id, hashKey);

    // One pass over the backends: 3xx/4xx is the backend's answer to this client; 5xx and
    // network errors try the next one.
    const result = await this.pool.connect({
      session: id,
      path,
      protocols,
      headers,
      key: hashKey,
      target: null,
      exclude: null,
      protocol: null,
      relayRefusal: true,
    });
    this.split.arrived(id);
    if (!result.ok) {
      if (result.kind === 'refused') {
        this.log.info({ session: id, backend: result.backend.id, reason: `backend refused with ${result.status}`, path }, 'handshake refused');
        return respond(socket, result.status, result.body, relayedHeaders(result.headers));
      }
      this.log.warn({ session: id, reason: 'no backend available', path }, 'handshake failed: 502');
      return respond(socket, 502, 'no backend available');
    }
    const { backend, peer: leg, headers: responseHeaders } = result;
    if (this.stopping) {
      leg.terminate();
      return;
    }
    // No listener of ours may outlive the handshake (it would keep this scope alive per session).
    socket.off('error', ignoreSocketError);
    const client = this.acceptClient(req, socket, head, leg.protocol, passedResponseHeaderLines(this.config.session.passResponseHeaders, responseHeaders));
    if (client === null) {
      // The client left while its backend was dialled, or ws refused its offer (400).
      leg.terminate();
      return;
    }
    const session = new Session(this, client, backend, leg, leg.protocol, {
      id,
      path,
      remoteAddress,
      headers,
      protocols,
      hashKey,
      codec: this.codecs.forSession(path, leg.protocol),
    });
    this.sessions.set(id, session);
    this.metrics.sessionsOpened.inc();
    // At debug: the line at info is the session's close, which says all of it (one line per session).
    this.log.debug({ session: id, backend: backend.id, path, remoteAddress, protocol: leg.protocol || undefined }, 'session opened');
  }

  /**
   * Answers the client's upgrade with the backend's subprotocol. A client that offers
   * permessage-deflate (when the listener enables it) gets ws, which negotiates and runs it; any
   * other gets our 101 and a FramePeer (wire/frame-peer.ts).
   */
  private acceptClient(req: PendingUpgrade, socket: Duplex, head: Buffer, protocol: string, extraLines: string[]): Peer | null {
    const offer = req.headers['sec-websocket-extensions'];
    if (this.config.listen.perMessageDeflate.enabled && offer !== undefined && offer.toLowerCase().includes('permessage-deflate')) {
      req[kProtocol] = protocol;
      req[kResponseHeaders] = extraLines;
      let ws: WebSocket | null = null;
      // The callback runs synchronously or not at all.
      this.wss.handleUpgrade(req, socket, head, (accepted) => (ws = accepted));
      return ws === null ? null : new WsPeer(ws);
    }
    if (!socket.readable || !socket.writable) {
      socket.destroy();
      return null;
    }
    socket.write(switchingProtocols(req.headers['sec-websocket-key']!, protocol, extraLines));
    return new FramePeer(socket as Socket, head, protocol, false, this.config.session.maxMessageBytes);
  }

  /** `target`: the client's request-target as the backends get it (clientTarget), so equal paths hash alike. */
  private hashKeyOf(req: IncomingMessage, target: string): string | undefined {
    const { algorithm, hashKey } = this.config.balancer;
    if (algorithm !== 'consistent-hash') return undefined;
    switch (hashKey.source) {
      case 'path': {
        const q = target.indexOf('?');
        return q === -1 ? target : target.slice(0, q);
      }
      case 'header': {
        const v = req.headers[hashKey.name.toLowerCase()];
        return Array.isArray(v) ? v[0] : v;
      }
      case 'query':
        return new URL(target, 'http://x').searchParams.get(hashKey.name) ?? undefined;
    }
  }

  machinePolicy(codec: CodecKind): MachinePolicy {
    return this.policies[codec];
  }

  sessionClosed(session: Session, why: SessionEndReason): void {
    this.sessions.delete(session.id);
    this.split.closed(session.id);
    this.metrics.sessionEnded(session, why);
  }

  /** GET /v1/backends: the split in force, with the sessions each group's backends hold. */
  splitView(): SplitView | undefined {
    return this.split.view();
  }

  // ---- planned moves -----------------------------------------------------------------------

  /** Planned, lossless migration of one session (the admin API's migrate route). */
  migrateSession(id: string, reason: MigrationReason, targetId?: string): Promise<MigrationResult> | undefined {
    const session = this.sessions.get(id);
    if (!session) return undefined;
    return session.migrate(reason, targetId);
  }

  /**
   * Moves every session off a backend by planned migration: at most MIGRATION_CONCURRENCY at once,
   * started at the backend's drain rate when it has one; past its deadline the rest start without
   * the rate. A given pace replaces the backend's. Stops early if the backend is enabled again.
   */
  async migrateAway(backendId: string, reason: MigrationReason, pace?: DrainPaceRequest): Promise<Record<MigrationResult, number>> {
    const counts: Record<MigrationResult, number> = { migrated: 0, failed: 0, busy: 0, closed: 0 };
    const target = this.pool.backends.get(backendId);
    if (target && pace) {
      target.drainPace = {
        ...(pace.rate !== undefined ? { rate: pace.rate } : {}),
        ...(pace.deadlineMs !== undefined ? { deadlineAt: Date.now() + pace.deadlineMs } : {}),
      };
    }
    if (this.draining.has(backendId)) return counts;
    this.draining.add(backendId);
    try {
      await this.migrateAll(backendId, reason, counts);
    } finally {
      this.draining.delete(backendId);
    }
    this.log.info({ backend: backendId, reason, ...counts }, 'backend drained');
    this.pool.forgetDrained();
    return counts;
  }

  private async migrateAll(backendId: string, reason: MigrationReason, counts: Record<MigrationResult, number>): Promise<void> {
    const queue = [...this.sessions.values()].filter((s) => s.backend?.id === backendId);
    let i = 0;
    const next = (): Session | undefined => {
      const backend = this.pool.backends.get(backendId);
      if (this.stopping || !backend || backend.state === 'enabled') return undefined;
      while (i < queue.length) {
        const session = queue[i++]!;
        if (session.backend?.id === backendId) return session; // else it left on its own meanwhile
      }
      return undefined;
    };
    await runPaced(
      next,
      (session) => session.migrate(reason).then((r) => void counts[r]++),
      // Read each time: a later drain request may change the pace mid-way.
      () => this.pool.backends.get(backendId)?.drainPace ?? {},
    );
  }

  // ---- reload and shutdown -----------------------------------------------------------------

  /** Applies a reloaded config. Keys fixed at listener creation keep their running values. */
  reload(fileConfig: SidecarConfig): { backends: ReturnType<BackendPool['apply']>; restartNeeded: string[] } {
    this.fileConfig = fileConfig;
    const next = withManagedSettings(fileConfig, this.managedSettings);
    const restartNeeded: string[] = [];
    const config = structuredClone(next);
    for (const path of RESTART_KEYS) {
      const running = valueAt(this.config, path);
      if (JSON.stringify(valueAt(next, path)) === JSON.stringify(running)) continue;
      restartNeeded.push(path);
      // Keep the running value; where the key sits under a section that is off (listen.tls: null),
      // keep that whole section.
      let keep = path;
      while (valueAt(this.config, keep) === undefined && keep.includes('.')) keep = keep.slice(0, keep.lastIndexOf('.'));
      setValueAt(config, keep, valueAt(this.config, keep));
    }
    this.config = config;
    this.headers = this.headerPolicyOf(config);
    this.policies = machinePolicies(config);
    this.pool.reconfigure(config, dialContext(config));
    this.log.level = config.logLevel;
    // Once the admin API owns the backend set (the operator), the file's backends are ignored.
    this.dns.configure(config.backends, config.dns);
    const backends =
      this.backendsGeneration === 0 ? this.pool.apply(this.dns.expand(), Date.now()) : { added: [], updated: [], removed: [], toDrain: [] };
    if (this.backendsGeneration > 0) this.log.info({ backendsGeneration: this.backendsGeneration }, "backends are managed through the admin API; the file's list is ignored");
    this.configGeneration++;
    for (const id of backends.toDrain) void this.migrateAway(id, 'reload');
    if (restartNeeded.length > 0) this.log.warn({ keys: restartNeeded }, 'config reloaded; these settings take effect only after a restart');
    this.log.info({ generation: this.configGeneration, added: backends.added, updated: backends.updated, removed: backends.removed }, 'config reloaded');
    if (this.ticker) {
      clearInterval(this.ticker);
      this.ticker = setInterval(() => this.tick(), tickInterval(config));
    }
    return { backends, restartNeeded };
  }

  /**
   * A name's addresses changed: the pool takes the new list like a reload (new addresses join,
   * vanished ones drain by planned migration). Not once the admin API owns the backend set.
   */
  private dnsChanged(): void {
    if (this.backendsGeneration > 0 || this.stopping) return;
    const changes = this.pool.apply(this.dns.expand(), Date.now());
    for (const id of changes.toDrain) void this.migrateAway(id, 'dns');
    if (changes.added.length + changes.removed.length > 0) {
      this.log.info({ added: changes.added, removed: changes.removed, reason: 'dns' }, 'backends changed');
    }
  }

  setFrontendPaused(paused: boolean): void {
    this.frontendPaused = paused;
  }

  /**
   * PUT /v1/backends: the whole backend set (and runtime settings) from the operator. An older
   * generation than the applied one is refused; the same body twice changes nothing.
   */
  putBackends(body: z.output<typeof PutBackendsRequestSchema>): PutBackendsResponse | PutBackendsRefusal {
    const { generation } = body;
    const current = this.backendsGeneration;
    if (generation < current) {
      const message = `generation ${generation} is older than the applied generation ${current}`;
      return { refused: { status: 409, code: 'stale_generation', message, field: 'generation' } };
    }
    const disorder = body.settings && settingsOrderProblem(body.settings, this.fileConfig);
    if (disorder) return { refused: { status: 400, code: 'invalid_field', message: disorder.message, field: `settings.${disorder.path}` } };
    // Set first: from now on a settings reload must not re-apply the file's backends, nor DNS expand them.
    this.backendsGeneration = generation;
    this.dns.stop();
    const settingsChanged = body.settings !== undefined && this.applySettings(body.settings);
    const changes = this.pool.apply(body.backends, Date.now());
    const changed = changes.added.length + changes.updated.length + changes.removed.length > 0;
    // The rate is the sidecar's: backends draining together share it.
    const busy = changes.toDrain.filter((id) => (this.pool.backends.get(id)?.sessions ?? 0) > 0).length;
    const pace = body.drain && {
      rate: body.drain.rate === undefined ? undefined : body.drain.rate / Math.max(1, busy),
      deadlineMs: body.drain.deadlineSeconds === undefined ? undefined : body.drain.deadlineSeconds * 1000,
    };
    for (const id of changes.toDrain) void this.migrateAway(id, 'drain', pace);
    this.split.apply(body.split);
    if (changed || settingsChanged) {
      this.log.info(
        { generation, added: changes.added, updated: changes.updated, removed: changes.removed, settings: settingsChanged ? body.settings : undefined, reason: 'admin put' },
        'backends replaced',
      );
    }
    return { generation, settingsChanged, added: changes.added, updated: changes.updated, removed: changes.removed, changed };
  }

  /** Replaces the admin API's settings (already checked); false when they are the same as before. */
  applySettings(settings: Readonly<Record<string, string>>): boolean {
    const current = this.managedSettings;
    const keys = Object.keys(settings);
    if (keys.length === Object.keys(current).length && keys.every((k) => current[k] === settings[k])) return false;
    this.managedSettings = { ...settings };
    this.reload(this.fileConfig);
    return true;
  }

  /**
   * Stops accepting, lets sessions end on their own for up to `graceMs`, then closes the rest
   * with 1001 so clients reconnect elsewhere.
   */
  async stop(graceMs = this.config.shutdown.grace): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.dns.stop();
    this.server.close();
    this.log.info({ sessions: this.sessions.size, graceMs }, 'shutting down: no new sessions');
    const deadline = Date.now() + graceMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await sleep(Math.min(100, deadline - Date.now()));
    const sockets: Peer[] = [];
    for (const s of [...this.sessions.values()]) {
      sockets.push(s.client);
      if (s.legSocket) sockets.push(s.legSocket);
      s.close('shutdown', 1001, 'sidecar shutting down', 1001);
    }
    // Give close handshakes a moment, then cut what is left.
    const closeBy = Date.now() + 1000;
    while (sockets.some((w) => w.readyState !== CLOSED) && Date.now() < closeBy) await sleep(20);
    for (const w of sockets) if (w.readyState !== CLOSED) w.terminate();
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    this.pool.wake();
    this.server.closeAllConnections();
    await this.admin.stop();
    this.log.info('sidecar stopped');
  }

  private headerPolicyOf(config: SidecarConfig): HeaderPolicy {
    return headerPolicy({
      passRequestHeaders: config.session.passRequestHeaders,
      blockRequestHeaders: config.session.blockRequestHeaders,
      reconnectHeaderName: config.failover.reconnectHeader.name,
      trustForwardedFor: config.session.trustForwardedFor,
    });
  }
}

function ignoreSocketError(): void {}

type MachinePolicies = Readonly<Record<CodecKind, MachinePolicy>>;

function machinePolicies(config: SidecarConfig): MachinePolicies {
  const { failover, migration, codec } = config;
  const policy = (kind: CodecKind): MachinePolicy => ({
    failoverDeadline: failover.deadline,
    backoff: failover.backoff,
    closeCodes: failover.closeCodes,
    drainTimeout: failover.drainTimeout,
    quietPeriod: migration.quietPeriod,
    maxQuietWait: migration.maxQuietWait,
    codec: kind !== 'none',
    resumes: kind === 'resumes',
    resumeTimeout: codec.resumeTimeout,
    random: Math.random,
  });
  return { none: policy('none'), requests: policy('requests'), resumes: policy('resumes') };
}

/** Fine enough to catch a pong timeout within a quarter of its length; never busier than 20 ms. */
function tickInterval(config: SidecarConfig): number {
  const s = config.session;
  const spans = [s.pingInterval, s.pongTimeout, s.idleTimeout, s.maxLifetime].filter((v) => v > 0);
  return Math.max(20, Math.min(1000, Math.floor(Math.min(...spans) / 4)));
}

function invalidUpgrade(req: IncomingMessage): { status: number; message: string; headers?: Record<string, string> } | null {
  if (req.method !== 'GET') return { status: 405, message: 'WebSocket upgrades must use GET' };
  // RFC 6455 §4.1: the resource name, a path; never a proxy's absolute-form.
  if (!req.url?.startsWith('/')) return { status: 400, message: 'the request-target must be a path starting with "/"' };
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return { status: 400, message: 'Upgrade header must be "websocket"' };
  const key = req.headers['sec-websocket-key'];
  if (!key || !WS_KEY.test(key)) return { status: 400, message: 'missing or invalid Sec-WebSocket-Key' };
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') {
    return { status: 426, message: 'unsupported WebSocket version', headers: { 'sec-websocket-version': '13, 8' } };
  }
  return null;
}

function relayedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP_RESPONSE.has(name)) out[name] = value;
  }
  return out;
}

/** Writes a plain HTTP response on a not-yet-upgraded socket and closes it. */
function respond(socket: Duplex, status: number, body: string | Buffer, headers: Record<string, string | string[]> = {}): void {
  if (socket.destroyed) return;
  const payload = typeof body === 'string' ? Buffer.from(`${body}\n`) : body;
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}`, 'connection: close', `content-length: ${payload.length}`];
  if (typeof body === 'string') lines.push('content-type: text/plain; charset=utf-8');
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), payload]));
}

