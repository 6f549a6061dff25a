import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';

// Never copied to the backend: hop-by-hop headers (RFC 9110 §7.6.1) apply to one connection only,
// Host is the backend's own, and the Sec-WebSocket-* handshake is negotiated per leg.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

export interface HeaderPolicy {
  /** Lower-case names; empty = every header not otherwise excluded. */
  pass: ReadonlySet<string>;
  block: ReadonlySet<string>;
  /** Lower-case name of the reconnect header: a client-supplied copy is stripped. */
  reconnectName: string;
  trustForwardedFor: boolean;
}

export function headerPolicy(opts: {
  passRequestHeaders: string[];
  blockRequestHeaders: string[];
  reconnectHeaderName: string;
  trustForwardedFor: boolean;
}): HeaderPolicy {
  const lower = (names: string[]) => new Set(names.map((n) => n.toLowerCase()));
  return {
    pass: lower(opts.passRequestHeaders),
    block: lower(opts.blockRequestHeaders),
    reconnectName: opts.reconnectHeaderName.toLowerCase(),
    trustForwardedFor: opts.trustForwardedFor,
  };
}

function clientAddress(req: IncomingMessage): string {
  const addr = req.socket.remoteAddress ?? '';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** The headers sent to the backend on every dial of this session (computed once per session). */
export function backendRequestHeaders(req: IncomingMessage, policy: HeaderPolicy): OutgoingHttpHeaders {
  const incoming = req.headers;
  const perConnection = new Set(
    String(incoming.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const name of Object.keys(incoming)) {
    if (
      HOP_BY_HOP.has(name) ||
      perConnection.has(name) ||
      name.startsWith('sec-websocket-') ||
      name === policy.reconnectName ||
      policy.block.has(name) ||
      (policy.pass.size > 0 && !policy.pass.has(name))
    ) {
      continue;
    }
    if (name.startsWith('x-forwarded-') && !policy.trustForwardedFor) continue;
    out[name] = incoming[name];
  }
  const client = clientAddress(req);
  const priorFor = policy.trustForwardedFor ? incoming['x-forwarded-for'] : undefined;
  out['x-forwarded-for'] = priorFor ? `${String(priorFor)}, ${client}` : client;
  if (out['x-forwarded-proto'] === undefined) {
    out['x-forwarded-proto'] = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
  }
  if (out['x-forwarded-host'] === undefined && incoming.host) out['x-forwarded-host'] = incoming.host;
  return out;
}

/** The subprotocols the client offered, in its order. */
export function offeredProtocols(headers: IncomingHttpHeaders): string[] {
  const raw = headers['sec-websocket-protocol'];
  if (!raw) return [];
  return raw
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
}

/** Header lines for the client's 101, taken from the backend's 101 (configured names only). */
export function passedResponseHeaderLines(names: readonly string[], backendHeaders: IncomingHttpHeaders): string[] {
  const lines: string[] = [];
  for (const name of names) {
    const value = backendHeaders[name.toLowerCase()];
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  return lines;
}

/**
 * The client's request-target (a path: the upgrade checks it starts with "/") as every backend of
 * the session gets it, after the backend URL's own path (dial.ts requestTarget). Parsed once per
 * session: dot segments are resolved within it, so "/../x" stays under the backend's path, and what
 * a request line cannot carry is percent-encoded or dropped.
 */
export function clientTarget(requestPath: string): string {
  // Behind a fixed origin, a path that starts with "//" stays a path and parsing cannot fail.
  const u = new URL(`http://client${requestPath}`);
  return u.pathname + u.search;
}
