// A typed client of the sidecar admin API (used by the operator and the tests). Every method maps
// to one route of admin/contract.ts; a non-2xx answer throws AdminApiError with the error body.
import {
  API_PREFIX,
  type AddBackendRequest,
  type BackendsResponse,
  type BackendView,
  type CloseSessionRequest,
  type DrainRequest,
  type DrainResponse,
  type ErrorBody,
  type FrontendResponse,
  type MigrateSessionRequest,
  type MigrateSessionResponse,
  type PutBackendsRequest,
  type PutBackendsResponse,
  type SessionsResponse,
  type SessionView,
  type StatusResponse,
} from './contract.js';

export class AdminApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody | undefined,
  ) {
    super(body ? `${status} ${body.error.code}: ${body.error.message}` : `admin API answered ${status}`);
  }

  get code(): string | undefined {
    return this.body?.error.code;
  }
}

export interface AdminClientOptions {
  /** e.g. http://10.0.0.7:9901 */
  baseUrl: string;
  token?: string;
  /** Per-request timeout in ms (default 5000). */
  timeoutMs?: number;
}

export class AdminClient {
  private readonly baseUrl: string;

  constructor(private readonly opts: AdminClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/$/, '');
  }

  status(): Promise<StatusResponse> {
    return this.call('GET', '/status');
  }
  backends(): Promise<BackendsResponse> {
    return this.call('GET', '/backends');
  }
  addBackend(body: AddBackendRequest): Promise<BackendView> {
    return this.call('POST', '/backends', body);
  }
  putBackends(body: PutBackendsRequest): Promise<PutBackendsResponse> {
    return this.call('PUT', '/backends', body);
  }
  enableBackend(id: string): Promise<BackendView> {
    return this.call('POST', `/backends/${encodeURIComponent(id)}/enable`);
  }
  disableBackend(id: string): Promise<BackendView> {
    return this.call('POST', `/backends/${encodeURIComponent(id)}/disable`);
  }
  drainBackend(id: string, body: DrainRequest = {}): Promise<DrainResponse> {
    return this.call('POST', `/backends/${encodeURIComponent(id)}/drain`, body);
  }
  resetBackend(id: string): Promise<BackendView> {
    return this.call('POST', `/backends/${encodeURIComponent(id)}/reset`);
  }
  deleteBackend(id: string): Promise<DrainResponse> {
    return this.call('DELETE', `/backends/${encodeURIComponent(id)}`);
  }
  sessions(query: { backend?: string; limit?: number; cursor?: string } = {}): Promise<SessionsResponse> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.call('GET', `/sessions${qs ? `?${qs}` : ''}`);
  }
  closeSession(id: string, body: CloseSessionRequest = {}): Promise<SessionView> {
    return this.call('DELETE', `/sessions/${encodeURIComponent(id)}`, body);
  }
  migrateSession(id: string, body: MigrateSessionRequest = {}): Promise<MigrateSessionResponse> {
    return this.call('POST', `/sessions/${encodeURIComponent(id)}/migrate`, body);
  }
  pauseFrontend(): Promise<FrontendResponse> {
    return this.call('POST', '/frontend/pause');
  }
  resumeFrontend(): Promise<FrontendResponse> {
    return this.call('POST', '/frontend/resume');
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.baseUrl}${API_PREFIX}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000),
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) throw new AdminApiError(res.status, parsed as ErrorBody | undefined);
    return parsed as T;
  }
}
