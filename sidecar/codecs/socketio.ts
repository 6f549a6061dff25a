// socket.io v4 codec (Engine.IO protocol 4 over the websocket transport, socket.io protocol 5).
//
// Framing (engine.io-parser 5, socket.io-parser 4 — the versions socket.io 4.x ships):
// - Every Engine.IO packet is one WebSocket frame. A text frame starts with the packet type:
//   0 open (server → client, `0{"sid":…,"pingInterval":…}`), 1 close, 2 ping, 3 pong, 4 message,
//   5 upgrade, 6 noop. In EIO 4 the *server* pings (`2`) and the client answers (`3`). A binary
//   frame is a whole message packet (no type byte): over websocket binary data is never base64'd.
// - A socket.io packet rides in a message packet: `4`, then its type digit (0 CONNECT,
//   1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR, 5 BINARY_EVENT, 6 BINARY_ACK), for the binary
//   types the attachment count and `-`, then `/nsp,` unless the namespace is the main one `/`, then
//   the ack id digits if any, then the JSON payload. A BINARY_* packet's attachments follow as that
//   many binary frames. E.g. `40/chat,{"token":"t"}` (the client's CONNECT with its auth),
//   `40/chat,{"sid":"…"}` (the server's answer), `44/chat,{"message":"not authorized"}`,
//   `42/chat,17["echo",1]` (emit with ack id 17), `43/chat,17[…]` (its ack), `41/chat,`.
//
// classify():
// - client EVENT with an ack id → 'request' (id = namespace and ack id as written, `/chat,17`, or
//   just `17` on the main namespace); the backend's ACK or BINARY_ACK with that id → 'response'.
//   So an emitWithAck in flight when its backend dies is replayed to the new one after the resume.
// - backend EVENT with an ack id (the server asking the client) → 'request', the client's ACK →
//   'response': the RequestTracker's backend-call bookkeeping (orphan answers) applies.
// - A client BINARY_EVENT is 'other' even with an ack id: replaying its text frame without its
//   attachments would break the new server's decoder. A client BINARY_ACK is 'other' too, so it is
//   never dropped as an orphan while its attachments go through.
// - Everything else that parses is 'other'; a frame that is not Engine.IO 4 / socket.io 5 is
//   'malformed'. Only the head is read (type, attachments, namespace, ack id) plus, for EVENT/ACK
//   with an id, the first payload byte `[` and the last non-whitespace byte `]` (or no payload).
//
// State (createState): the namespaces the client has joined, as its own CONNECT packets (with
// their auth), minus those left by a DISCONNECT from either side or refused by a CONNECT_ERROR; a
// namespace joined again keeps only its latest CONNECT. replay() sends them in join order; the new
// server's Engine.IO open packet and its CONNECT answers to namespaces the client had already been
// answered on are swallowed ('resumed' once all are in). A CONNECT_ERROR for one of those is a
// refusal: the client is closed with 1008 and the CONNECT_ERROR is *not* forwarded, because
// socket.io-client handles a CONNECT_ERROR on a connected socket by unsubscribing it while leaving
// `connected` true (no 'disconnect', and `socket.connect()` after the connect_error is then a
// no-op: a zombie). Closed, every socket gets 'disconnect' ("transport close") and the Manager
// reconnects by itself; that fresh CONNECT gets the server's refusal as a proper connect_error.
// A namespace whose CONNECT the old server had not answered yet is replayed too, and the new
// server's answer (success or error) goes to the client, which is still waiting for it.
//
// Not resumable (unresumable() → the session is closed with 1012 at its next backend change, and
// socket.io-client's Manager reconnects by itself):
// - more namespaces or bytes of CONNECT packets than the limits;
// - a BINARY_* packet half way through its attachments in either direction (the rest would reach a
//   decoder that never saw the head);
// - an emit with an ack id still unanswered on a namespace that is no longer joined (the tracker
//   would replay it, and a socket.io server closes the whole connection on a packet for a
//   namespace the client has not joined);
// - a session upgraded from HTTP long-polling (`2probe`/`3probe`, `5`): its Engine.IO session and
//   namespace CONNECTs went over HTTP, where the sidecar never saw them.
//
// Rooms joined by application events, the server-side socket ids and anything else the
// application keeps per socket are not replayed: only the protocol's own joins are.

import type { Frame, MessageKind, ProtocolState, ResumeVerdict, Sender, SessionCodec, StateLimits } from './codec.js';
import { isJsonWhitespace } from './json-scan.js';

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const COMMA = 0x2c;
const MINUS = 0x2d;
const SLASH = 0x2f;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const LOWER_B = 0x62;

// Engine.IO packet types (first byte of a text frame).
const EIO_OPEN = 0x30;
const EIO_PING = 0x32;
const EIO_PONG = 0x33;
const EIO_MESSAGE = 0x34;
const EIO_UPGRADE = 0x35;
const EIO_NOOP = 0x36;

// socket.io packet types (second byte of a message frame, as a number).
const CONNECT = 0;
const DISCONNECT = 1;
const EVENT = 2;
const ACK = 3;
const CONNECT_ERROR = 4;
const BINARY_EVENT = 5;
const BINARY_ACK = 6;

/** Longest namespace read, in bytes; a longer one makes the packet unreadable here. */
const MAX_NSP_BYTES = 1024;
/** Longest ack id, in digits (socket.io's ids are counters: safe integers). */
const MAX_ID_DIGITS = 15;
/** Most attachments digits read (socket.io's decoders accept 10 attachments by default). */
const MAX_ATTACHMENT_DIGITS = 6;
/** Unanswered client acks remembered per session (for the namespace check); the oldest go first. */
const MAX_PENDING_ACKS = 1000;

/**
 * Close code for a refused resume: the new server refused a namespace's CONNECT (its auth, or it has
 * no such namespace): 1008 Policy Violation. socket.io-client treats every close alike ("transport
 * close", then reconnection), so the code is for logs and other observers.
 */
export const SOCKETIO_REFUSED_CODE = 1008;

/**
 * The head of one socket.io packet, filled by parsePacket (module scratch: no allocation per frame).
 * Offsets are into the frame; nsStart === nsEnd for the main namespace.
 */
const head = {
  type: 0,
  attachments: 0,
  nsStart: 0,
  nsEnd: 0,
  idStart: 0,
  idEnd: 0,
  /** Index of the payload's first byte (= frame length when there is none). */
  payload: 0,
};

/**
 * Reads the socket.io packet in an Engine.IO message frame (`data[0]` is '4') into `head`, as
 * socket.io-parser's decodeString does. False if it is not one.
 */
function parsePacket(data: Buffer): boolean {
  const len = data.length;
  if (len < 2) return false;
  const type = data[1]! - DIGIT_0;
  if (type < CONNECT || type > BINARY_ACK) return false;
  head.type = type;
  head.attachments = 0;
  let p = 2;
  if (type === BINARY_EVENT || type === BINARY_ACK) {
    const s = p;
    let n = 0;
    while (p < len && data[p]! >= DIGIT_0 && data[p]! <= DIGIT_9 && p - s < MAX_ATTACHMENT_DIGITS) n = n * 10 + (data[p++]! - DIGIT_0);
    if (p === s || p >= len || data[p] !== MINUS || n < 1) return false;
    head.attachments = n;
    p++;
  }
  if (p < len && data[p] === SLASH) {
    // The namespace runs to the first comma, or to the end (`41/chat`), as the parser reads it;
    // only MAX_NSP_BYTES are looked at.
    const limit = Math.min(len, p + MAX_NSP_BYTES + 1);
    let e = p + 1;
    while (e < limit && data[e] !== COMMA) e++;
    if (e === limit && limit < len) return false;
    head.nsStart = p;
    head.nsEnd = e;
    p = e < len ? e + 1 : len;
  } else {
    head.nsStart = head.nsEnd = p;
  }
  head.idStart = p;
  while (p < len && data[p]! >= DIGIT_0 && data[p]! <= DIGIT_9) {
    if (p - head.idStart === MAX_ID_DIGITS) return false;
    p++;
  }
  head.idEnd = p;
  head.payload = p;
  return true;
}

/**
 * The payload by its ends: 1 = a JSON array ('[' first, ']' last, trailing whitespace allowed),
 * 0 = none (socket.io-parser accepts `43/chat,4`: the ack is called without arguments), -1 = other.
 */
function payloadShape(data: Buffer): number {
  let end = data.length;
  while (end > head.payload && isJsonWhitespace(data[end - 1]!)) end--;
  if (end === head.payload) return head.payload === data.length ? 0 : -1;
  return end - head.payload >= 2 && data[head.payload] === LBRACKET && data[end - 1] === RBRACKET ? 1 : -1;
}

function hasId(): boolean {
  return head.idEnd > head.idStart;
}

/** The request/answer id: namespace and ack id as written (`/chat,17`), or the digits on `/`. */
function idString(data: Buffer): string {
  return data.toString('utf8', head.nsStart === head.nsEnd ? head.idStart : head.nsStart, head.idEnd);
}

/** A namespace's key in the state (bytes as latin1: one char per byte, cheap and exact). */
function nsKey(data: Buffer): string {
  return head.nsStart === head.nsEnd ? '/' : data.toString('latin1', head.nsStart, head.nsEnd);
}

/**
 * A namespace and ack id as written (`/chat,17`, or `17` on `/`), for the pending-acks set: one
 * string per emit; its namespace is only worked out (nsOfAckKey) when the session changes backend.
 */
function ackKey(data: Buffer): string {
  return data.toString('latin1', head.nsStart === head.nsEnd ? head.idStart : head.nsStart, head.idEnd);
}

function nsOfAckKey(key: string): string {
  return key.charCodeAt(0) === SLASH ? key.slice(0, key.lastIndexOf(',')) : '/';
}

function classifySocketIo(data: Buffer, from: Sender, ids: string[]): MessageKind {
  const len = data.length;
  if (len === 0) return 'malformed';
  const c = data[0]!;
  if (c !== EIO_MESSAGE) return (c >= EIO_OPEN && c <= EIO_NOOP) || c === LOWER_B ? 'other' : 'malformed';
  if (!parsePacket(data)) return 'malformed';
  switch (head.type) {
    case EVENT: {
      if (!hasId()) return 'other';
      const shape = payloadShape(data);
      if (shape < 0) return 'malformed';
      if (shape === 0) return 'other'; // an emit with no event name: nothing will ack it
      ids.push(idString(data));
      return 'request';
    }
    case ACK:
    case BINARY_ACK:
      if (payloadShape(data) < 0) return 'malformed';
      // No id: socket.io-parser accepts it, the socket drops it ("bad ack"); a client BINARY_ACK is not tracked.
      if (!hasId() || (head.type === BINARY_ACK && from === 'client')) return 'other';
      ids.push(idString(data));
      return 'response';
    default:
      return 'other';
  }
}

interface Joined {
  /** The client's CONNECT packet, copied. */
  readonly frame: Buffer;
  /** The server answered it with a CONNECT (the client has its 'connect'). */
  confirmed: boolean;
}

class SocketIoState implements ProtocolState {
  /** Namespace key → its latest CONNECT, in join order. */
  private readonly joined = new Map<string, Joined>();
  private bytes = 0;
  /** The client has had an Engine.IO open packet (a new server's must then be swallowed). */
  private sawOpen = false;
  /** The websocket upgraded an HTTP long-polling session. */
  private upgraded = false;
  /** Binary frames still to come for a BINARY_* packet, client → backend and backend → client. */
  private clientAttachments = 0;
  private backendAttachments = 0;
  /** Client emits with an ack id not yet acked (ackKey), oldest first. */
  private readonly pendingAcks = new Set<string>();

  // Resume bookkeeping (reset by replay()).
  private awaitingOpen = false;
  /** Namespaces whose CONNECT answer is swallowed (the client already had one). */
  private readonly awaiting = new Set<string>();
  /** Namespaces whose CONNECT answer goes to the client (the old server had not answered). */
  private readonly passing = new Set<string>();

  constructor(private readonly limits: StateLimits) {}

  sent(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (this.clientAttachments > 0) this.clientAttachments--;
      return;
    }
    this.clientAttachments = 0;
    const len = data.length;
    if (len === 0) return;
    const c = data[0]!;
    if (c === EIO_UPGRADE || (c === EIO_PING && len > 1)) {
      this.upgraded = true; // `5`, or a `2probe`: only an upgrade from polling sends them
      return;
    }
    if (c !== EIO_MESSAGE || !parsePacket(data)) return;
    switch (head.type) {
      case CONNECT: {
        const key = nsKey(data);
        this.leave(key);
        const frame = Buffer.from(data);
        this.joined.set(key, { frame, confirmed: false });
        this.bytes += frame.length;
        return;
      }
      case DISCONNECT:
        this.leave(nsKey(data));
        return;
      case EVENT:
        if (hasId()) {
          this.pendingAcks.add(ackKey(data));
          if (this.pendingAcks.size > MAX_PENDING_ACKS) this.pendingAcks.delete(this.pendingAcks.values().next().value!);
        }
        return;
      case BINARY_EVENT:
      case BINARY_ACK:
        this.clientAttachments = head.attachments;
        return;
    }
  }

  received(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (this.backendAttachments > 0) this.backendAttachments--;
      return;
    }
    this.backendAttachments = 0;
    const len = data.length;
    if (len === 0) return;
    const c = data[0]!;
    if (c === EIO_OPEN) {
      this.sawOpen = true;
      return;
    }
    if (c === EIO_PONG && len > 1) {
      this.upgraded = true; // `3probe`
      return;
    }
    if (c !== EIO_MESSAGE || !parsePacket(data)) return;
    switch (head.type) {
      case CONNECT: {
        const j = this.joined.get(nsKey(data));
        if (j) j.confirmed = true;
        return;
      }
      case DISCONNECT:
      case CONNECT_ERROR:
        this.leave(nsKey(data));
        return;
      case ACK:
        if (hasId()) this.pendingAcks.delete(ackKey(data));
        return;
      case BINARY_ACK:
        if (hasId()) this.pendingAcks.delete(ackKey(data));
        this.backendAttachments = head.attachments;
        return;
      case BINARY_EVENT:
        this.backendAttachments = head.attachments;
        return;
    }
  }

  unresumable(): string | null {
    if (this.upgraded) return 'socket.io session upgraded from HTTP long-polling: its Engine.IO session is on the backend';
    if (this.joined.size > this.limits.maxFrames) {
      return `socket.io state of ${this.joined.size} namespaces over the limit of ${this.limits.maxFrames} frames`;
    }
    if (this.bytes > this.limits.maxBytes) return `socket.io state of ${this.bytes} bytes over the limit of ${this.limits.maxBytes}`;
    if (this.clientAttachments > 0) return 'socket.io binary packet half sent (attachments still to come from the client)';
    if (this.backendAttachments > 0) return 'socket.io binary packet half received (attachments still to come from the backend)';
    for (const key of this.pendingAcks) {
      if (!this.joined.has(nsOfAckKey(key))) return 'socket.io emit unanswered on a namespace the client has left (its replay would close the connection)';
    }
    return null;
  }

  replay(): Frame[] {
    this.awaitingOpen = false;
    this.awaiting.clear();
    this.passing.clear();
    // Nothing joined, or no open packet seen (then the new server's goes to the client): nothing to do.
    if (!this.sawOpen || this.joined.size === 0) return [];
    this.awaitingOpen = true;
    const frames: Frame[] = [];
    for (const [key, j] of this.joined) {
      frames.push({ data: j.frame, isBinary: false });
      (j.confirmed ? this.awaiting : this.passing).add(key);
    }
    return frames;
  }

  resumeAnswer(data: Buffer, isBinary: boolean): ResumeVerdict {
    if (isBinary || data.length === 0) return 'pass';
    const c = data[0]!;
    if (c === EIO_OPEN) {
      if (!this.awaitingOpen) return 'pass';
      this.awaitingOpen = false;
      return this.answered();
    }
    if (c !== EIO_MESSAGE || !parsePacket(data)) return 'pass';
    if (head.type === CONNECT) {
      const key = nsKey(data);
      if (this.awaiting.delete(key)) return this.answered();
      if (this.passing.delete(key)) {
        const j = this.joined.get(key);
        if (j) j.confirmed = true;
      }
      return 'pass';
    }
    if (head.type === CONNECT_ERROR) {
      const key = nsKey(data);
      if (this.awaiting.has(key)) {
        this.awaiting.clear();
        this.passing.clear();
        this.awaitingOpen = false;
        this.leave(key);
        return { refused: true, forward: false, code: SOCKETIO_REFUSED_CODE, reason: 'socket.io namespace refused on resume (CONNECT_ERROR)' };
      }
      if (this.passing.delete(key)) this.leave(key);
      return 'pass';
    }
    return 'pass';
  }

  /** After an answer was swallowed: 'resumed' when it was the last one awaited. */
  private answered(): ResumeVerdict {
    return !this.awaitingOpen && this.awaiting.size === 0 ? 'resumed' : 'swallow';
  }

  private leave(key: string): void {
    const j = this.joined.get(key);
    if (!j) return;
    this.joined.delete(key);
    this.bytes -= j.frame.length;
  }
}

/** Whether a request's query names an Engine.IO 4 websocket session (`EIO=4&transport=websocket`). */
export function isSocketIoRequest(path: string): boolean {
  try {
    const q = path.indexOf('?');
    if (q < 0) return false;
    const params = new URLSearchParams(path.slice(q + 1));
    return params.get('EIO') === '4' && params.get('transport') === 'websocket';
  } catch {
    return false;
  }
}

/** The socket.io v4 codec (name 'socket.io'). See the notes at the top of this file. */
export function createSocketIoCodec(): SessionCodec {
  return {
    name: 'socket.io',
    matchesRequest: isSocketIoRequest,
    classify(data: Buffer, isBinary: boolean, from: Sender, ids: string[]): MessageKind {
      if (isBinary) return 'other';
      return classifySocketIo(data, from, ids);
    },
    createState(limits: StateLimits): ProtocolState {
      return new SocketIoState(limits);
    },
  };
}
