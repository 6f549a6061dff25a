import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { WebSocket } from 'ws';
import type { SidecarConfig } from '../common/config/schema.js';
import type { DialFailureReason } from '../common/vocabulary.js';
import { BackendReads } from './wire/frame-peer.js';
import { MAX_REFUSAL_BODY, upgrade } from './wire/handshake.js';
import type { Peer } from './wire/peer.js';
import { WsPeer } from './wire/ws-peer.js';

/** How a dial ended. `refused` is the backend answering the handshake with a non-101 status. */
export type DialResult =
  | { ok: true; peer: Peer; headers: IncomingHttpHeaders }
  | { ok: false; kind: 'refused'; status: number; headers: IncomingHttpHeaders; body: Buffer }
  | { ok: false; kind: 'error'; reason: string; cause: DialFailureReason }
  | { ok: false; kind: 'aborted' };

/** Everything a dial needs that does not change per session: built once per config generation. */
export interface DialContext {
  connectTimeout: number;
  handshakeTimeout: number;
  maxPayload: number;
  perMessageDeflate: boolean;
  keepAlive: { enabled: boolean; initialDelay: number };
  localAddress: string | undefined;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string; rejectUnauthorized: boolean };
}

export function dialContext(config: SidecarConfig): DialContext {
  const up = config.upstream;
  const file = (path: string) => (path ? readFileSync(path) : undefined);
  return {
    connectTimeout: up.connectTimeout,
    handshakeTimeout: up.handshakeTimeout,
    maxPayload: config.session.maxMessageBytes,
    perMessageDeflate: up.perMessageDeflate,
    keepAlive: up.keepAlive,
    localAddress: up.localAddress || undefined,
    tls: {
      ca: file(up.tls.caFile),
      cert: file(up.tls.certFile),
      key: file(up.tls.keyFile),
      servername: up.tls.servername || undefined,
      rejectUnauthorized: up.tls.rejectUnauthorized,
    },
  };
}

/**
 * Stops a dial, or a wait for a backend, under way: a session that closes or moves on cancels
 * what it started. Not an AbortSignal: an AbortController and its listener cost about 5 µs per
 * dial in Node 20 (EventTarget), paid by each session of a mass failover; this costs nothing.
 */
export class Cancel {
  cancelled = false;
  private listener: (() => void) | null = null;

  /** `fn` runs once, at cancel(); one listener at a time (a dial, or a wait), until off(). */
  on(fn: () => void): void {
    this.listener = fn;
  }

  off(): void {
    this.listener = null;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    const fn = this.listener;
    this.listener = null;
    fn?.();
  }
}

/**
 * A backend's URL taken apart once per backend, so that a dial only appends the session's path.
 * `address` (a backend expanded by DNS) is where the TCP connection goes; Host, TLS SNI and the
 * certificate check keep the URL's name.
 */
export interface DialEndpoint {
  secure: boolean;
  /** The URL's host[:port] as written in the Host header. */
  host: string;
  /** The address to connect to: `address`, or the URL's host name (an IPv6 address without brackets). */
  connectTo: string;
  port: number;
  /** For TLS SNI: the host name, or '' for an IP address (SNI takes no addresses). */
  servername: string;
  /** The URL's path without its trailing "/", and its query without the "?". */
  basePath: string;
  baseQuery: string;
  /** "ws://host:port", for ws's client (permessage-deflate legs). */
  origin: string;
}

/** `url` is a valid ws:// or wss:// URL (the config and the admin API check it). */
export function dialEndpoint(url: string, address?: string): DialEndpoint {
  const u = new URL(url);
  const secure = u.protocol === 'wss:';
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return {
    secure,
    host: u.host,
    connectTo: address ?? hostname,
    port: Number(u.port) || (secure ? 443 : 80),
    servername: net.isIP(hostname) ? '' : hostname,
    basePath: u.pathname.endsWith('/') ? u.pathname.slice(0, -1) : u.pathname,
    baseQuery: u.search.slice(1),
    origin: `${u.protocol}//${u.host}`,
  };
}

/**
 * The request-target a backend gets: its URL's path, then the session's path (`clientTarget`),
 * and its URL's query before the client's (ws://b:9000/base?v=2 + /chat?x=1 → /base/chat?v=2&x=1).
 */
export function requestTarget(endpoint: DialEndpoint, path: string): string {
  if (endpoint.baseQuery === '') return endpoint.basePath + path;
  const q = path.indexOf('?');
  if (q === -1) return `${endpoint.basePath}${path}?${endpoint.baseQuery}`;
  return `${endpoint.basePath}${path.slice(0, q)}?${endpoint.baseQuery}&${path.slice(q + 1)}`;
}

/** Where a dial goes: a backend's endpoint, and the request-target asked of it (requestTarget). */
export interface DialTarget {
  endpoint: DialEndpoint;
  path: string;
}

/**
 * Opens one WebSocket to a backend (DialEndpoint says where the TCP connection goes). Resolves,
 * never rejects. The connect timeout covers TCP and TLS; the handshake timeout covers everything
 * up to the 101. An open leg is handed over paused: the caller resumes it once it listens.
 * Without permessage-deflate the leg is a FramePeer on our own handshake (wire/handshake.ts), its
 * socket read through `onread` into a reused buffer (BackendReads); with it, ws does the handshake
 * and framing.
 */
export function dialBackend(
  target: DialTarget,
  protocols: readonly string[],
  headers: OutgoingHttpHeaders,
  ctx: DialContext,
  cancel?: Cancel,
): Promise<DialResult> {
  return ctx.perMessageDeflate ? dialWs(target, protocols, headers, ctx, cancel) : dialFrames(target, protocols, headers, ctx, cancel);
}

function dialFrames({ endpoint, path }: DialTarget, protocols: readonly string[], headers: OutgoingHttpHeaders, ctx: DialContext, cancel?: Cancel): Promise<DialResult> {
  return new Promise((resolve) => {
    const { secure, connectTo: host, port } = endpoint;
    let settled = false;
    const reads = new BackendReads();
    const socket = secure
      ? tls.connect({ host, port, localAddress: ctx.localAddress, ...ctx.tls, servername: ctx.tls.servername ?? endpoint.servername, onread: reads.onread } as tls.ConnectionOptions)
      : net.connect({ host, port, localAddress: ctx.localAddress, onread: reads.onread });
    const finish = (result: DialResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(handshakeTimer);
      cancel?.off();
      socket.off('error', onError);
      socket.off(secure ? 'secureConnect' : 'connect', onConnect);
      if (!result.ok) socket.destroy();
      resolve(result);
    };
    const onAbort = () => finish({ ok: false, kind: 'aborted' });
    const onError = (err: Error) => finish({ ok: false, kind: 'error', reason: err.message, cause: classify(err) });
    const onConnect = () => {
      clearTimeout(connectTimer);
      if (ctx.keepAlive.enabled) socket.setKeepAlive(true, ctx.keepAlive.initialDelay);
      void upgrade(socket, reads, { host: endpoint.host, path, protocols, headers, maxPayload: ctx.maxPayload }).then((outcome) => {
        if (outcome.ok) {
          if (settled) outcome.peer.terminate();
          else finish({ ok: true, peer: outcome.peer, headers: outcome.headers });
        } else if ('error' in outcome) {
          finish({ ok: false, kind: 'error', reason: outcome.error.message, cause: outcome.cause });
        } else {
          const { status, headers: answer, body } = outcome.refusal;
          if (status >= 500 || status < 300) finish({ ok: false, kind: 'error', reason: `backend answered ${status}`, cause: status >= 500 ? 'server-error' : 'other' });
          else finish({ ok: false, kind: 'refused', status, headers: answer, body });
        }
      });
    };
    const connectTimer = setTimeout(() => socket.destroy(new Error(`connect timeout after ${ctx.connectTimeout}ms`)), ctx.connectTimeout);
    const handshakeTimer = setTimeout(
      () => finish({ ok: false, kind: 'error', reason: `handshake timeout after ${ctx.handshakeTimeout}ms`, cause: 'timeout' }),
      ctx.handshakeTimeout,
    );
    socket.on('error', onError);
    socket.once(secure ? 'secureConnect' : 'connect', onConnect);
    if (cancel?.cancelled) return onAbort();
    cancel?.on(onAbort);
  });
}

function dialWs(
  { endpoint, path }: DialTarget,
  protocols: readonly string[],
  headers: OutgoingHttpHeaders,
  ctx: DialContext,
  cancel?: Cancel,
): Promise<DialResult> {
  return new Promise((resolve) => {
    let settled = false;
    let upgradeHeaders: IncomingHttpHeaders = {};
    const { secure, connectTo } = endpoint;
    let socket: WebSocket;

    const finish = (result: DialResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(handshakeTimer);
      cancel?.off();
      if (!result.ok) socket.terminate();
      resolve(result);
    };
    const onAbort = () => finish({ ok: false, kind: 'aborted' });

    try {
      socket = new WebSocket(endpoint.origin + path, protocols as string[], {
        headers: headers as Record<string, string>,
        perMessageDeflate: ctx.perMessageDeflate,
        maxPayload: ctx.maxPayload,
        followRedirects: false,
        localAddress: ctx.localAddress,
        ...(secure ? ctx.tls : {}),
        createConnection: (options: net.NetConnectOpts & tls.ConnectionOptions) => {
          if (secure && options.servername === undefined) options.servername = endpoint.servername;
          options.host = connectTo;
          const s: net.Socket = secure ? tls.connect(options) : net.connect(options);
          const connectTimer = setTimeout(() => s.destroy(new Error(`connect timeout after ${ctx.connectTimeout}ms`)), ctx.connectTimeout);
          const stopTimer = () => clearTimeout(connectTimer);
          s.once('close', stopTimer);
          s.once(secure ? 'secureConnect' : 'connect', () => {
            stopTimer();
            // Don't keep this dial's scope alive for the life of the connection.
            s.removeListener('close', stopTimer);
            s.setNoDelay(true);
            if (ctx.keepAlive.enabled) s.setKeepAlive(true, ctx.keepAlive.initialDelay);
          });
          return s;
        },
      } as ConstructorParameters<typeof WebSocket>[2]);
    } catch (err) {
      resolve({ ok: false, kind: 'error', reason: (err as Error).message, cause: 'other' });
      return;
    }

    const handshakeTimer = setTimeout(
      () => finish({ ok: false, kind: 'error', reason: `handshake timeout after ${ctx.handshakeTimeout}ms`, cause: 'timeout' }),
      ctx.handshakeTimeout,
    );
    if (cancel?.cancelled) return onAbort();
    cancel?.on(onAbort);

    socket.on('upgrade', (res) => {
      upgradeHeaders = res.headers;
    });
    socket.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      if (status >= 500 || status < 300) {
        res.resume();
        finish({ ok: false, kind: 'error', reason: `backend answered ${status}`, cause: status >= 500 ? 'server-error' : 'other' });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => finish({ ok: false, kind: 'refused', status, headers: res.headers, body: Buffer.concat(chunks) });
      res.on('data', (chunk: Buffer) => {
        if (size < MAX_REFUSAL_BODY) chunks.push(chunk.subarray(0, MAX_REFUSAL_BODY - size));
        size += chunk.length;
        if (size >= MAX_REFUSAL_BODY) done();
      });
      res.on('end', done);
      res.on('error', done);
    });
    socket.on('error', (err) => finish({ ok: false, kind: 'error', reason: err.message, cause: classify(err) }));
    socket.on('open', () => {
      if (settled) return;
      // Frames that came with the 101 are parsed on the next tick, before whoever awaits this
      // dial can listen: hold them until the session attaches its listeners and resumes.
      socket.pause();
      // Remove the dial's own listeners; the session attaches its own (WsPeer replaces 'error').
      socket.removeAllListeners('upgrade');
      socket.removeAllListeners('unexpected-response');
      finish({ ok: true, peer: new WsPeer(socket), headers: upgradeHeaders });
    });
  });
}

/** Sorts a dial error into a bounded metric label. */
function classify(err: Error & { code?: string }): DialFailureReason {
  if (err.message.startsWith('connect timeout')) return 'timeout';
  const code = err.code ?? '';
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT') return 'tls';
  if (['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'EPIPE'].includes(code)) return 'connect';
  return 'other';
}
