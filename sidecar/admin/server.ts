// The admin listener: the /v1 REST API of admin/contract.ts behind a bearer token, plus the
// unauthenticated /healthz, /readyz and (by default) /metrics.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, resolve } from 'node:path';
import type { z } from 'zod';
import type { Backend, BackendPool, DrainPace } from '../backends.js';
import type { ReadonlyChurnMap } from '../churn-map.js';
import type { SidecarConfig } from '../../common/config/schema.js';
import type { Logger } from '../../common/logger.js';
import type { SidecarMetrics } from '../metrics.js';
import type { Session } from '../session.js';
import { SESSION_STATES, zeroCounts, type MigrationReason } from '../../common/vocabulary.js';
import {
  AddBackendRequestSchema,
  API_PREFIX,
  CloseSessionRequestSchema,
  DrainRequestSchema,
  MigrateSessionRequestSchema,
  PutBackendsRequestSchema,
  SESSIONS_PAGE,
  type BackendsResponse,
  type BackendView,
  type DrainResponse,
  type ErrorBody,
  type ErrorCode,
  type FrontendResponse,
  type MigrateSessionResponse,
  type PutBackendsResponse,
  type SessionsResponse,
  type SessionView,
  type SplitView,
  type StatusResponse,
} from '../../common/admin/contract.js';

const MAX_BODY_BYTES = 1024 * 1024;

/** What the admin API may read and do in the sidecar (the sidecar implements it). */
export interface AdminPort {
  readonly metrics: SidecarMetrics;
  readonly pool: BackendPool;
  readonly sessions: ReadonlyChurnMap<Session>;
  readonly startedAt: number;
  readonly configGeneration: number;
  readonly backendsGeneration: number;
  readonly managedSettings: Readonly<Record<string, string>>;
  readonly frontendPaused: boolean;
  setFrontendPaused(paused: boolean): void;
  /** Moves a backend's sessions off it in the background, at `pace` when given. */
  migrateAway(backendId: string, reason: MigrationReason, pace?: DrainPaceRequest): Promise<unknown>;
  /** The split in force, with its sessions per group (GET /v1/backends). */
  splitView(): SplitView | undefined;
  /** PUT /v1/backends, already validated; a refusal names its field. */
  putBackends(body: z.output<typeof PutBackendsRequestSchema>): PutBackendsResponse | PutBackendsRefusal;
}

export type DrainPaceRequest = Omit<DrainPace, 'deadlineAt'> & { deadlineMs?: number };

export interface PutBackendsRefusal {
  refused: { status: number; code: ErrorCode; message: string; field: string };
}

/** A failed request: becomes `{ error: { code, message, field } }` with `status`. */
class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

interface Reply {
  status: number;
  body: unknown;
}

type Handler = (req: IncomingMessage, params: string[], url: URL) => Promise<Reply> | Reply;

interface Route {
  method: string;
  /** Label for metrics and errors, e.g. "POST /v1/backends/{id}/drain". */
  name: string;
  pattern: RegExp;
  handler: Handler;
}

/** The bearer token, from admin.token or admin.tokenFile (re-read when the file changes). */
class TokenSource {
  private digest: Buffer | null = null;
  private watcher: FSWatcher | undefined;

  constructor(
    private readonly admin: SidecarConfig['admin'],
    private readonly log: Logger,
  ) {
    this.load();
    if (admin.tokenFile) {
      // Watch the directory: a mounted Secret is updated by swapping a symlink.
      const path = resolve(admin.tokenFile);
      this.watcher = watch(dirname(path), (_e, name) => {
        if (!name || name === basename(path) || name.startsWith('..')) this.load();
      });
    }
  }

  get configured(): boolean {
    return this.digest !== null;
  }

  private load(): void {
    let token = this.admin.token;
    if (this.admin.tokenFile) {
      try {
        token = readFileSync(this.admin.tokenFile, 'utf8').trim();
      } catch (err) {
        // Mid-swap or removed: keep the previous token rather than opening the API.
        this.log.warn({ reason: (err as Error).message, file: this.admin.tokenFile }, 'admin token file unreadable; keeping the previous token');
        return;
      }
    }
    this.digest = token ? sha256(token) : null;
  }

  /** Constant-time check (digests make the lengths equal). */
  accepts(header: string | undefined): boolean {
    if (!this.digest) return true;
    const m = header ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    return m !== null && timingSafeEqual(sha256(m[1]!), this.digest);
  }

  close(): void {
    this.watcher?.close();
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class AdminServer {
  private readonly server: Server;
  private readonly token: TokenSource;
  private readonly routes: Route[];
  private readonly version: string;

  constructor(
    private readonly sidecar: AdminPort,
    private readonly admin: SidecarConfig['admin'],
    private readonly log: Logger,
  ) {
    this.token = new TokenSource(admin, log);
    this.version = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    this.routes = this.defineRoutes();
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async start(): Promise<AddressInfo> {
    const { host, port } = this.admin.address;
    if (!this.token.configured) {
      this.log.warn({ address: `${host}:${port}` }, 'admin API has no token: reachable from this host only');
    }
    await new Promise<void>((ok, fail) => {
      this.server.once('error', fail);
      this.server.listen(port, host, () => {
        this.server.off('error', fail);
        ok();
      });
    });
    const address = this.server.address() as AddressInfo;
    this.log.info({ address: `${address.address}:${address.port}` }, 'admin API listening');
    return address;
  }

  async stop(): Promise<void> {
    this.token.close();
    await new Promise<void>((ok) => {
      this.server.close(() => ok());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    let routeName = 'unmatched';
    let reply: Reply;
    try {
      reply = await this.dispatch(req, url, (name) => (routeName = name));
    } catch (err) {
      if (err instanceof AdminError) {
        const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) } };
        reply = { status: err.status, body };
      } else {
        this.log.error({ reason: (err as Error).message, stack: (err as Error).stack, route: routeName }, 'admin request failed');
        reply = { status: 500, body: { error: { code: 'internal', message: 'internal error (see the sidecar log)' } } };
      }
    }
    this.sidecar.metrics.adminRequests.inc({ route: routeName, status: String(reply.status) });
    if (typeof reply.body === 'string') {
      res.writeHead(reply.status, { 'content-type': this.sidecar.metrics.registry.contentType });
      res.end(reply.body);
      return;
    }
    const json = JSON.stringify(reply.body);
    res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
    res.end(json);
  }

  private async dispatch(req: IncomingMessage, url: URL, named: (name: string) => void): Promise<Reply> {
    const path = url.pathname;
    if (path === '/healthz') {
      named('GET /healthz');
      return { status: 200, body: { status: 'alive' } };
    }
    if (path === '/readyz') {
      named('GET /readyz');
      const ready = this.sidecar.pool.hasUsable();
      return { status: ready ? 200 : 503, body: ready ? { ready: true } : { ready: false, reason: 'no usable backend' } };
    }
    if (path === '/metrics') {
      named('GET /metrics');
      if (this.admin.metricsRequireToken) this.authorize(req);
      return { status: 200, body: await this.sidecar.metrics.registry.metrics() };
    }
    if (!path.startsWith(`${API_PREFIX}/`)) throw new AdminError(404, 'not_found', `no such path: ${path}`);
    // Authenticate before routing, so an unauthenticated caller learns nothing about the API.
    this.authorize(req);
    let pathMatched = false;
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (route.method !== req.method) continue;
      named(route.name);
      return route.handler(req, m.slice(1).map(decodeURIComponent), url);
    }
    if (pathMatched) throw new AdminError(405, 'method_not_allowed', `${req.method} is not allowed on ${path}`);
    throw new AdminError(404, 'not_found', `no such route: ${req.method} ${path}`);
  }

  private authorize(req: IncomingMessage): void {
    if (!this.token.accepts(req.headers.authorization)) {
      throw new AdminError(401, 'unauthorized', 'missing or invalid bearer token');
    }
  }

  // ---- routes ------------------------------------------------------------------------------

  private defineRoutes(): Route[] {
    const id = '([^/]+)';
    const route = (method: string, template: string, handler: Handler): Route => ({
      method,
      name: `${method} ${API_PREFIX}${template}`,
      pattern: new RegExp(`^${API_PREFIX}${template.replace('{id}', id)}$`),
      handler,
    });
    const sc = this.sidecar;
    return [
      route('GET', '/status', () => ({ status: 200, body: this.status() })),
      route('GET', '/backends', () => ({ status: 200, body: this.backends() })),
      route('POST', '/backends', async (req) => {
        const def = parseBody(AddBackendRequestSchema, await readJson(req));
        if (!sc.pool.add(def, Date.now())) throw new AdminError(409, 'conflict', `backend "${def.id}" already exists`, 'id');
        this.log.info({ backend: def.id, url: def.url, reason: 'admin add' }, 'backend added');
        return { status: 201, body: backendView(sc.pool.backends.get(def.id)!) };
      }),
      route('PUT', '/backends', async (req) => {
        const body = parseBody(PutBackendsRequestSchema, await readJson(req));
        return { status: 200, body: this.putBackends(body) };
      }),
      route('POST', '/backends/{id}/enable', (_req, [bid]) => this.setState(bid!, 'enabled')),
      route('POST', '/backends/{id}/disable', (_req, [bid]) => this.setState(bid!, 'disabled')),
      route('POST', '/backends/{id}/drain', async (req, [bid]) => {
        const backend = this.backend(bid!);
        const body = parseBody(DrainRequestSchema, await readJson(req, true));
        sc.pool.setState(backend, 'draining', Date.now());
        const sessions = backend.sessions;
        void sc.migrateAway(backend.id, 'drain', {
          rate: body.rate,
          deadlineMs: body.deadlineSeconds === undefined ? undefined : body.deadlineSeconds * 1000,
        });
        this.log.info({ backend: backend.id, reason: 'admin drain', sessions, rate: body.rate }, 'draining backend');
        const reply: DrainResponse = { id: backend.id, state: 'draining', sessions };
        return { status: 202, body: reply };
      }),
      route('POST', '/backends/{id}/reset', (_req, [bid]) => {
        const backend = this.backend(bid!);
        sc.pool.resetHealth(backend, Date.now());
        return { status: 200, body: backendView(backend) };
      }),
      route('DELETE', '/backends/{id}', (_req, [bid]) => {
        const backend = this.backend(bid!);
        const sessions = backend.sessions;
        sc.pool.remove(backend);
        if (sessions > 0) void sc.migrateAway(backend.id, 'drain');
        this.log.info({ backend: backend.id, reason: 'admin delete', sessions }, 'removing backend');
        const reply: DrainResponse = { id: backend.id, state: 'draining', sessions };
        return { status: 202, body: reply };
      }),
      route('GET', '/sessions', (_req, _p, url) => ({ status: 200, body: this.sessions(url) })),
      route('DELETE', '/sessions/{id}', async (req, [sid]) => {
        const session = this.session(sid!);
        const body = parseBody(CloseSessionRequestSchema, await readJson(req, true));
        session.close('admin', body.code, body.reason, 1001);
        return { status: 200, body: sessionView(session) };
      }),
      route('POST', '/sessions/{id}/migrate', async (req, [sid]) => {
        const session = this.session(sid!);
        const body = parseBody(MigrateSessionRequestSchema, await readJson(req, true));
        const target = body.backend === undefined ? undefined : sc.pool.backends.get(body.backend);
        if (body.backend !== undefined && !target) throw new AdminError(404, 'not_found', `no backend "${body.backend}"`, 'backend');
        if (target && target === session.backend) throw new AdminError(409, 'conflict', `the session is already on "${target.id}"`, 'backend');
        const result = await session.migrate('admin', target?.id);
        const reply: MigrateSessionResponse = { id: session.id, result, backend: session.backend?.id ?? null };
        if (result === 'migrated') return { status: 200, body: reply };
        throw new AdminError(409, result === 'busy' ? 'conflict' : 'migration_failed', `migration ${result}: ${session.backend ? `still on "${session.backend.id}"` : 'no backend'}`);
      }),
      route('POST', '/frontend/pause', () => this.setPaused(true)),
      route('POST', '/frontend/resume', () => this.setPaused(false)),
    ];
  }

  private backend(id: string): Backend {
    const backend = this.sidecar.pool.backends.get(id);
    if (!backend) throw new AdminError(404, 'not_found', `no backend "${id}"`);
    return backend;
  }

  private session(id: string): Session {
    const session = this.sidecar.sessions.get(id);
    if (!session) throw new AdminError(404, 'not_found', `no session "${id}"`);
    return session;
  }

  private setState(id: string, state: 'enabled' | 'disabled'): Reply {
    const backend = this.backend(id);
    this.sidecar.pool.setState(backend, state, Date.now());
    this.log.info({ backend: id, reason: `admin ${state === 'enabled' ? 'enable' : 'disable'}` }, `backend ${state}`);
    return { status: 200, body: backendView(backend) };
  }

  private setPaused(paused: boolean): Reply {
    this.sidecar.setFrontendPaused(paused);
    this.log.info({ reason: paused ? 'admin pause' : 'admin resume' }, paused ? 'frontend paused' : 'frontend resumed');
    const reply: FrontendResponse = { frontendPaused: paused };
    return { status: 200, body: reply };
  }

  private status(): StatusResponse {
    const sc = this.sidecar;
    const byBackend: Record<string, number> = {};
    for (const b of sc.pool.backends.values()) byBackend[b.id] = b.sessions;
    const byState = zeroCounts(SESSION_STATES);
    for (const s of sc.sessions.values()) byState[s.state]++;
    return {
      version: this.version,
      uptimeSeconds: Math.round((Date.now() - sc.startedAt) / 1000),
      configGeneration: sc.configGeneration,
      backendsGeneration: sc.backendsGeneration,
      settings: { ...sc.managedSettings },
      sessions: { total: sc.sessions.size, byBackend, byState },
      frontendPaused: sc.frontendPaused,
    };
  }

  private backends(): BackendsResponse {
    const split = this.sidecar.splitView();
    return { generation: this.sidecar.backendsGeneration, backends: [...this.sidecar.pool.backends.values()].map(backendView), ...(split ? { split } : {}) };
  }

  /** The declarative form: same body twice changes nothing; an older generation is refused. */
  private putBackends(body: z.output<typeof PutBackendsRequestSchema>): PutBackendsResponse {
    const result = this.sidecar.putBackends(body);
    if ('refused' in result) {
      const r = result.refused;
      throw new AdminError(r.status, r.code, r.message, r.field);
    }
    return result;
  }

  private sessions(url: URL): SessionsResponse {
    const backend = url.searchParams.get('backend');
    const cursor = url.searchParams.get('cursor');
    const limitRaw = url.searchParams.get('limit');
    const limit = limitRaw === null ? SESSIONS_PAGE.default : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > SESSIONS_PAGE.max) {
      throw new AdminError(400, 'invalid_field', `limit must be an integer 1..${SESSIONS_PAGE.max}, got "${limitRaw}"`, 'limit');
    }
    const page: SessionView[] = [];
    let started = cursor === null;
    let nextCursor: string | null = null;
    for (const s of this.sidecar.sessions.values()) {
      if (!started) {
        started = s.id === cursor;
        continue;
      }
      if (backend !== null && s.backend?.id !== backend) continue;
      if (page.length === limit) {
        nextCursor = page[page.length - 1]!.id;
        break;
      }
      page.push(sessionView(s));
    }
    if (!started) throw new AdminError(400, 'invalid_field', `cursor "${cursor}" is not a current session id`, 'cursor');
    return { sessions: page, nextCursor };
  }
}

function backendView(b: Backend): BackendView {
  const { id, url, weight, standby, labels, state } = b.spec;
  return {
    id,
    url,
    weight,
    standby,
    labels,
    state,
    health: { status: b.health, phi: Number(b.phiValue.toFixed(3)), consecutiveFailures: b.breaker.consecutiveFailures },
    sessions: b.sessions,
  };
}

function sessionView(s: Session): SessionView {
  return {
    id: s.id,
    path: s.path,
    remoteAddress: s.remoteAddress,
    backend: s.backend?.id ?? null,
    startedAt: new Date(s.startedAt).toISOString(),
    failovers: s.failovers,
    messagesIn: s.messagesIn,
    messagesOut: s.messagesOut,
    bytesIn: s.bytesIn,
    bytesOut: s.bytesOut,
    bufferedBytes: s.bufferedBytes,
    state: s.state,
  };
}

/** Reads a JSON body; `optional` routes accept an empty body as `{}`. */
async function readJson(req: IncomingMessage, optional = false): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new AdminError(413, 'payload_too_large', `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') {
    if (optional) return {};
    throw new AdminError(400, 'bad_json', 'a JSON request body is required');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AdminError(400, 'bad_json', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** Validates a body; the first problem becomes the error, naming its field (e.g. backends[2].url). */
function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.reduce<string>(
    (acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)),
    '',
  );
  const keys = issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys : [];
  const named = keys.length > 0 ? [field, keys[0]].filter(Boolean).join('.') : field;
  return failField(named, issue.message);
}

function failField(field: string, message: string): never {
  throw new AdminError(400, 'invalid_field', field ? `${field}: ${message}` : message, field || undefined);
}
