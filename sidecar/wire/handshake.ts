// The opening handshake (RFC 6455 §4) for legs without permessage-deflate, both ends of it:
// the 101 the sidecar answers a client with, and the upgrade request it sends a backend.
//
// Why not `ws` (or node:http's client) here: a proxy's handshake is its most expensive moment —
// most of a reconnect storm's CPU. The client leg arrives through node:http's server, which has
// parsed the request already; what is left is one header line to compute and one write. Towards
// the backend, node:http's client request, its response object and ws's WebSocket around them cost
// several times the request itself; a 101 is a status line and three headers, so we read that
// head ourselves. The answers that are not 101 (redirects and refusals relayed to the client, 5xx
// that make the balancer try the next backend) are read here too: status, headers, and a body of
// at most MAX_REFUSAL_BODY bytes (Content-Length, chunked, or until close).
import { hash, randomFillSync } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { type BackendReads, type ChunkReader, FramePeer } from './frame-peer.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** A backend's response head larger than this is refused (node:http's default limit). */
const MAX_HEAD_BYTES = 16 * 1024;
/** Error bodies of refused handshakes are relayed to the client; more than this is cut. */
export const MAX_REFUSAL_BODY = 16 * 1024;

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key. */
export function acceptValue(key: string): string {
  // One-shot: a Hash object per handshake costs three times as much (twice per session).
  return hash('sha1', key + GUID, 'base64');
}

/** The client's 101: the protocol chosen (or ''), then any extra header lines. */
export function switchingProtocols(key: string, protocol: string, extraLines: readonly string[]): string {
  let head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptValue(key)}\r\n`;
  if (protocol !== '') head += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
  for (const line of extraLines) head += `${line}\r\n`;
  return `${head}\r\n`;
}

/** How a backend answered an upgrade that was not a 101. */
export interface Refusal {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export type UpgradeOutcome =
  | { ok: true; peer: FramePeer; headers: IncomingHttpHeaders }
  | { ok: false; refusal: Refusal }
  | { ok: false; error: Error; cause: 'subprotocol' | 'other' };

export interface UpgradeRequest {
  /** The Host header. */
  host: string;
  /** The request-target: path and query. */
  path: string;
  protocols: readonly string[];
  headers: OutgoingHttpHeaders;
  maxPayload: number;
}

const LINE_BREAK = /[\r\n]/;
/** Random bytes for Sec-WebSocket-Key, drawn 16 at a time (one call to the CSPRNG per 64 dials). */
const keyPool = Buffer.alloc(16 * 64);
let keyOffset = keyPool.length;
const EMPTY = Buffer.alloc(0);

/**
 * Sends the upgrade request on a connected socket and reads the answer (through `reads`, the
 * socket's `onread`). Resolves once: with the open leg, the backend's refusal, or an error (the
 * socket is then destroyed by the caller).
 */
export function upgrade(socket: net.Socket | tls.TLSSocket, reads: BackendReads, req: UpgradeRequest): Promise<UpgradeOutcome> {
  if (keyOffset === keyPool.length) {
    randomFillSync(keyPool);
    keyOffset = 0;
  }
  const key = keyPool.toString('base64', keyOffset, (keyOffset += 16));
  let head = `GET ${req.path} HTTP/1.1\r\nHost: ${req.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n`;
  if (req.protocols.length > 0) head += `Sec-WebSocket-Protocol: ${req.protocols.join(', ')}\r\n`;
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      const text = String(v);
      if (LINE_BREAK.test(text)) return Promise.resolve({ ok: false, error: new Error(`header ${name} has a line break in its value`), cause: 'other' });
      head += `${name}: ${text}\r\n`;
    }
  }
  socket.write(`${head}\r\n`);
  return new Promise((resolve) => {
    let received: Buffer = Buffer.alloc(0);
    let response: { status: number; headers: IncomingHttpHeaders; bodyFrom: number } | null = null;
    const finish = (outcome: UpgradeOutcome) => {
      reads.release(reader);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      resolve(outcome);
    };
    const refusalIfDone = (ended: boolean): UpgradeOutcome | null => {
      const { status, headers, bodyFrom } = response!;
      const body = refusalBody(headers, received.subarray(bodyFrom), ended);
      return body === null ? null : { ok: false, refusal: { status, headers, body } };
    };
    /** What the bytes so far answer, or null while more is to come. */
    const answer = (): UpgradeOutcome | null => {
      if (response !== null) return refusalIfDone(false);
      const end = received.indexOf('\r\n\r\n');
      // A head that came whole in one read is measured too, not only one still arriving.
      if ((end === -1 ? received.length : end + 4) > MAX_HEAD_BYTES) return { ok: false, error: new Error('backend response head too large'), cause: 'other' };
      if (end === -1) return null;
      const parsed = parseHead(received.toString('latin1', 0, end));
      if (parsed === null) return { ok: false, error: new Error('backend sent a malformed HTTP response'), cause: 'other' };
      if (parsed.status !== 101) {
        // Only a 3xx or 4xx goes to the client: the body matters only then.
        if (parsed.status < 300 || parsed.status >= 500) return { ok: false, refusal: { ...parsed, body: EMPTY } };
        response = { ...parsed, bodyFrom: end + 4 };
        return refusalIfDone(false);
      }
      const problem = upgradeProblem(parsed.headers, key, req.protocols);
      if (problem !== null) return { ok: false, error: new Error(problem.message), cause: problem.cause };
      const protocol = parsed.headers['sec-websocket-protocol'];
      // The peer lends the read buffer if it keeps bytes that followed the 101.
      const peer = new FramePeer(socket, received.subarray(end + 4), typeof protocol === 'string' ? protocol : '', true, req.maxPayload, reads);
      return { ok: true, peer, headers: parsed.headers };
    };
    const reader: ChunkReader = {
      receive(chunk: Buffer): void {
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
        const outcome = answer();
        // An incomplete answer and a refusal's body keep pieces of this read.
        if (outcome?.ok !== true) reads.lend();
        if (outcome !== null) finish(outcome);
      },
    };
    // 'close' as well as 'end': a socket destroyed under us (an aborted dial) resolves this too.
    const onEnd = () => {
      const outcome = response === null ? null : refusalIfDone(true);
      finish(outcome ?? { ok: false, error: new Error('backend closed the connection during the handshake'), cause: 'other' });
    };
    reads.reader = reader;
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}

/** Why a 101 does not complete our request, or null. */
function upgradeProblem(headers: IncomingHttpHeaders, key: string, offered: readonly string[]): { message: string; cause: 'subprotocol' | 'other' } | null {
  const other = (message: string) => ({ message, cause: 'other' as const });
  if ((headers.upgrade ?? '').toLowerCase() !== 'websocket') return other('backend 101 without "Upgrade: websocket"');
  if (headers['sec-websocket-accept'] !== acceptValue(key)) return other('backend 101 with a wrong Sec-WebSocket-Accept');
  const protocol = headers['sec-websocket-protocol'];
  if (protocol !== undefined && !offered.includes(protocol)) return { message: `backend chose subprotocol "${protocol}", which was not offered`, cause: 'subprotocol' };
  if (headers['sec-websocket-extensions'] !== undefined) return other('backend 101 names an extension, and none was offered');
  return null;
}

/** Status and headers (lower-case names; repeats joined as node:http does, set-cookie kept as a list). */
function parseHead(text: string): { status: number; headers: IncomingHttpHeaders } | null {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]!);
  if (m === null) return null;
  const headers: IncomingHttpHeaders = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'set-cookie') (headers['set-cookie'] ??= []).push(value);
    else {
      const prior = headers[name];
      headers[name] = prior === undefined ? value : `${String(prior)}, ${value}`;
    }
  }
  return { status: Number(m[1]), headers };
}

/** The refusal's body once it is complete (cut at MAX_REFUSAL_BODY), or null while more is to come. */
function refusalBody(headers: IncomingHttpHeaders, raw: Buffer, ended: boolean): Buffer | null {
  if (/chunked/i.test(String(headers['transfer-encoding'] ?? ''))) return dechunked(raw, ended);
  const length = headers['content-length'];
  const expected = length === undefined ? Infinity : Math.min(Number(length), MAX_REFUSAL_BODY);
  if (raw.length >= expected) return raw.subarray(0, expected);
  if (raw.length >= MAX_REFUSAL_BODY) return raw.subarray(0, MAX_REFUSAL_BODY);
  return ended ? raw : null;
}

/** A chunked body decoded, once its last chunk (or MAX_REFUSAL_BODY) is in; null before. */
function dechunked(raw: Buffer, ended: boolean): Buffer | null {
  const parts: Buffer[] = [];
  let size = 0;
  let pos = 0;
  for (;;) {
    const eol = raw.indexOf('\r\n', pos);
    if (eol === -1) return ended ? Buffer.concat(parts) : null;
    const n = parseInt(raw.toString('latin1', pos, eol), 16);
    if (!Number.isFinite(n) || n === 0) return Buffer.concat(parts);
    const from = eol + 2;
    const chunk = raw.subarray(from, Math.min(from + n, raw.length));
    parts.push(chunk);
    size += chunk.length;
    if (size >= MAX_REFUSAL_BODY) return Buffer.concat(parts).subarray(0, MAX_REFUSAL_BODY);
    if (from + n + 2 > raw.length) return ended ? Buffer.concat(parts) : null;
    pos = from + n + 2;
  }
}
