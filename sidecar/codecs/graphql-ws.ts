// GraphQL over WebSocket codec (name 'graphql-ws'): both subprotocols in use.
//
//   graphql-transport-ws (the graphql-ws library, its PROTOCOL.md)
//     client: connection_init, subscribe {id, payload: {query, operationName?, variables?}},
//             complete {id}, ping, pong
//     server: connection_ack, next {id}, error {id}, complete {id}, ping, pong
//     a refused connection_init is a close (4403 Forbidden), not a frame
//   graphql-ws (the legacy subscriptions-transport-ws, its PROTOCOL.md)
//     client: connection_init, start {id, payload}, stop {id}, connection_terminate
//     server: connection_ack, connection_error, ka, data {id}, error {id}, complete {id}
//
// Every message type means one thing in both, so one codec reads both by `type` alone, whatever
// the subprotocol. A frame is a JSON object; only its top-level members are walked (type, id and,
// for a client's subscribe/start only, payload.query and payload.operationName); other values
// are skipped (validated, never decoded). A server's frames are read only up to their type (and id for complete and
// error): graphql-ws writes the id and type before the payload.
//
// Operations (queries, mutations and subscriptions share `subscribe`/`start` and the id space)
// are told apart by the operation keyword of the document, found by a token scan of
// payload.query that skips strings, block strings and comments and follows brace depth (rule in
// operationKind below, as graphql's getOperationAST chooses: by operationName, else the only one).
//
// classify():
//   client connection_init                           → 'request' (INIT_REQUEST_ID): an init the
//                                                      backend never acknowledged is sent again
//   server connection_ack                            → 'response' (INIT_REQUEST_ID)
//   client subscribe/start of a query                → 'request' (id): replayed if unanswered
//   client subscribe/start of a mutation, or of an
//   operation whose kind cannot be told               → 'request' (id): tracked so a planned
//                                                      migration waits for its answer; never
//                                                      replayed, see unresumable()
//   client subscribe/start of a subscription         → 'other' (protocol state, below)
//   server complete / error                          → 'response' (id): ends the operation
//   anything else readable                            → 'other' (next/data are not answers: a
//                                                      query's complete follows its next)
//   not a JSON object, no string type, an id-carrying
//   type without a usable string id                  → 'malformed'
//
// Protocol state (createState): the session's connection_init (the first one the client sent)
// once a backend acknowledged it, and every subscription operation sent whose id has not ended:
// by the server's complete or error, or the client's complete (legacy: stop). Replayed to a new
// backend in the order sent: connection_init first, then the subscriptions. A
// graphql-transport-ws server handles frames concurrently and closes a `subscribe` that arrives
// before its connection_ack with 4401 Unauthorized (graphql-ws's makeServer awaits onConnect,
// while `subscribe` is checked against `acknowledged` at once), so `subscribe` frames are marked
// `afterResume`: they may only go once the new backend's connection_ack has come. A legacy
// server awaits its init before each `start`, so `start` frames go with the connection_init. The
// new backend's connection_ack is swallowed and ends the resume; a legacy connection_error is a
// refusal (forwarded, then 1011 as that server closes). A graphql-transport-ws server refuses by
// closing (4403), which the session machine hands to the client as it is. ping/pong, ka and
// queries are not state (queries are the request tracker's).
//
// No id is ever replayed twice (4409 Subscriber already exists) and connection_init never twice
// (4429 Too many initialisation requests): the state is a map by id of frames the old backend
// was actually sent (sent() is not called for held or replayed frames), replayed once to a fresh
// backend connection; held frames follow the replay and enter the state when they are sent. An
// init never acknowledged is not in the replay: the request tracker sends it (once) instead.
//
// Not resumable (the session is closed with 1012 at its next backend change, and the client
// library reconnects and resubscribes by itself): while a mutation (or an operation whose kind
// cannot be told) is in flight, since running it again is not safe and dropping it would leave
// the client waiting for ever; while subscriptions past codec.maxStateFrames/maxStateBytes are
// open; when legacy operations were started without an acknowledged init; after a legacy
// connection_error refused the init; for good once the init itself is past the bounds or over
// max(1024, maxStateFrames) operations are in flight at once.

import type { Frame, MessageKind, ProtocolState, ResumeVerdict, Sender, SessionCodec, StateLimits } from './codec.js';
import {
  BACKSLASH,
  COLON,
  COMMA,
  decodeJsonString,
  isJsonWhitespace,
  jsonStringEnd,
  jsonValueEnd,
  LBRACE,
  QUOTE,
  RBRACE,
  skipJsonWhitespace,
} from './json-scan.js';

/** A frame of the replay, possibly held back until the new backend has acknowledged the init. */
export interface StagedFrame extends Frame {
  /** Send only after the new backend answered the replay (connection_ack), before anything else. */
  afterResume?: boolean;
}

// ---- message types -------------------------------------------------------------------------

const T_UNKNOWN = 0;
const T_CONNECTION_INIT = 1;
const T_CONNECTION_ACK = 2;
const T_CONNECTION_ERROR = 3;
const T_SUBSCRIBE = 4;
const T_START = 5;
const T_COMPLETE = 6;
const T_STOP = 7;
const T_ERROR = 8;
const T_NEXT = 9;
const T_DATA = 10;
const T_OTHER_KNOWN = 11; // ping, pong, ka, connection_terminate

const TYPES: ReadonlyMap<string, number> = new Map([
  ['connection_init', T_CONNECTION_INIT],
  ['connection_ack', T_CONNECTION_ACK],
  ['connection_error', T_CONNECTION_ERROR],
  ['subscribe', T_SUBSCRIBE],
  ['start', T_START],
  ['complete', T_COMPLETE],
  ['stop', T_STOP],
  ['error', T_ERROR],
  ['next', T_NEXT],
  ['data', T_DATA],
  ['ping', T_OTHER_KNOWN],
  ['pong', T_OTHER_KNOWN],
  ['ka', T_OTHER_KNOWN],
  ['connection_terminate', T_OTHER_KNOWN],
]);
/** The same names as bytes, for comparison without decoding (longest type is 20 bytes). */
const TYPE_BYTES: readonly [Buffer, number][] = [...TYPES].map(([name, code]) => [Buffer.from(name, 'latin1'), code]);
const MAX_TYPE_BYTES = 20;

/** Longest operation id kept, in characters once decoded (graphql-ws ids are 36-character UUIDs). */
const MAX_ID_LENGTH = 256;
/** Longest id as written: every character escaped as \uXXXX. */
const MAX_ID_RAW_BYTES = MAX_ID_LENGTH * 6;

// ---- operation kinds -----------------------------------------------------------------------

export type OperationKind = 'query' | 'mutation' | 'subscription' | 'unknown';

/**
 * The kind of the operation a GraphQL document executes: the operation named `operationName`
 * when given (none by that name: 'unknown'), else the document's only operation ('unknown' for
 * none or several, which servers reject). A token scan, no parse: strings, block strings and
 * comments are skipped; a definition starts at brace/paren/bracket depth 0 after the previous
 * one's selection set closed; it is `{` (a query), or `query`/`mutation`/`subscription`
 * [Name] ..., or anything else (a fragment: not an operation). Unbalanced: 'unknown'.
 */
export function operationKind(doc: string, operationName: string | null): OperationKind {
  const n = doc.length;
  let depth = 0;
  let atDefinition = true;
  /** The kind of an operation just started by its keyword: the next name token names it. */
  let naming: OperationKind | null = null;
  let count = 0;
  let only: OperationKind = 'unknown';
  let named: OperationKind = 'unknown';
  let i = 0;
  while (i < n) {
    const c = doc.charCodeAt(i);
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x2c || c === 0xfeff) {
      i++;
      continue;
    }
    if (c === 0x23) {
      // # comment to the end of the line
      while (i < n && doc.charCodeAt(i) !== 0x0a && doc.charCodeAt(i) !== 0x0d) i++;
      continue;
    }
    if (c === 0x22) {
      i = gqlStringEnd(doc, i);
      if (i < 0) return 'unknown';
      naming = null;
      continue;
    }
    if (isNameStart(c)) {
      let j = i + 1;
      while (j < n && isNameContinue(doc.charCodeAt(j))) j++;
      if (depth === 0) {
        if (naming !== null) {
          if (operationName !== null && j - i === operationName.length && doc.startsWith(operationName, i)) named = naming;
          naming = null;
        } else if (atDefinition) {
          atDefinition = false;
          const kind = keyword(doc, i, j);
          if (kind !== null) {
            count++;
            only = kind;
            naming = kind;
          }
        }
      }
      i = j;
      continue;
    }
    naming = null;
    if (c === 0x7b) {
      // {
      if (depth === 0 && atDefinition) {
        count++; // shorthand query: no name
        only = 'query';
      }
      atDefinition = false;
      depth++;
    } else if (c === 0x28 || c === 0x5b) {
      depth++;
    } else if (c === 0x7d || c === 0x29 || c === 0x5d) {
      if (--depth < 0) return 'unknown';
      if (depth === 0 && c === 0x7d) atDefinition = true;
    }
    i++;
  }
  if (depth !== 0) return 'unknown';
  if (operationName !== null) return named;
  return count === 1 ? only : 'unknown';
}

function keyword(doc: string, i: number, j: number): OperationKind | null {
  const len = j - i;
  if (len === 5 && doc.startsWith('query', i)) return 'query';
  if (len === 8 && doc.startsWith('mutation', i)) return 'mutation';
  if (len === 12 && doc.startsWith('subscription', i)) return 'subscription';
  return null;
}

function isNameStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
}

function isNameContinue(c: number): boolean {
  return isNameStart(c) || (c >= 0x30 && c <= 0x39);
}

/** `doc[i]` is a `"`: the index after the string or block string, or -1 if it does not end. */
function gqlStringEnd(doc: string, i: number): number {
  const n = doc.length;
  if (doc.startsWith('"""', i)) {
    i += 3;
    while (i < n) {
      const c = doc.charCodeAt(i);
      if (c === 0x5c && doc.startsWith('\\"""', i)) i += 4;
      else if (c === 0x22 && doc.startsWith('"""', i)) return i + 3;
      else i++;
    }
    return -1;
  }
  i++;
  while (i < n) {
    const c = doc.charCodeAt(i);
    if (c === 0x22) return i + 1;
    if (c === 0x5c) i += 2;
    else if (c === 0x0a || c === 0x0d) return -1;
    else i++;
  }
  return -1;
}

// ---- frame scanning ------------------------------------------------------------------------

/** What a scan found; offsets are the contents of JSON strings (between the quotes), -1 = absent. */
interface Scan {
  /** The message type (T_*), -1 when absent or not a string. */
  type: number;
  idStart: number;
  idEnd: number;
  /** An `id` member was present but not a string (or too long to keep). */
  idBad: boolean;
  queryStart: number;
  queryEnd: number;
  nameStart: number;
  nameEnd: number;
  /** payload.operationName was present and not a string or null. */
  nameBad: boolean;
}

/** One scan at a time (the codec runs on one thread, and nothing here yields). */
const scratch: Scan = {
  type: -1,
  idStart: -1,
  idEnd: -1,
  idBad: false,
  queryStart: -1,
  queryEnd: -1,
  nameStart: -1,
  nameEnd: -1,
  nameBad: false,
};

function resetScan(s: Scan): void {
  s.type = -1;
  s.idStart = -1;
  s.idEnd = -1;
  s.idBad = false;
  s.queryStart = -1;
  s.queryEnd = -1;
  s.nameStart = -1;
  s.nameEnd = -1;
  s.nameBad = false;
}

const KEY_OTHER = 0;
const KEY_TYPE = 1;
const KEY_ID = 2;
const KEY_PAYLOAD = 3;
const KEY_QUERY = 4;
const KEY_OPERATION_NAME = 5;

const K_TYPE = Buffer.from('type');
const K_ID = Buffer.from('id');
const K_PAYLOAD = Buffer.from('payload');
const K_QUERY = Buffer.from('query');
const K_OPERATION_NAME = Buffer.from('operationName');

/** Whether bytes start..end of `data` are exactly `word` (no allocation). */
function isWord(data: Buffer, start: number, end: number, word: Buffer): boolean {
  if (end - start !== word.length) return false;
  // A loop beats Buffer#compare (a native call) at these lengths.
  for (let i = 0; i < word.length; i++) if (data[start + i] !== word[i]) return false;
  return true;
}

/** Which member a key (the content of its JSON string) names; escaped keys are decoded (rare). */
function keyOf(data: Buffer, start: number, end: number, inPayload: boolean): number {
  if (end - start > 13 * 6) return KEY_OTHER; // longer than "operationName" with every character escaped
  for (let i = start; i < end; i++) {
    if (data[i] === BACKSLASH) {
      const key = decodeJsonString(data, start, end);
      if (inPayload) return key === 'query' ? KEY_QUERY : key === 'operationName' ? KEY_OPERATION_NAME : KEY_OTHER;
      return key === 'type' ? KEY_TYPE : key === 'id' ? KEY_ID : key === 'payload' ? KEY_PAYLOAD : KEY_OTHER;
    }
  }
  if (inPayload) {
    if (isWord(data, start, end, K_QUERY)) return KEY_QUERY;
    if (isWord(data, start, end, K_OPERATION_NAME)) return KEY_OPERATION_NAME;
    return KEY_OTHER;
  }
  if (isWord(data, start, end, K_TYPE)) return KEY_TYPE;
  if (isWord(data, start, end, K_ID)) return KEY_ID;
  if (isWord(data, start, end, K_PAYLOAD)) return KEY_PAYLOAD;
  return KEY_OTHER;
}

/** The message type named by a JSON string's content (T_UNKNOWN for any other string). */
function typeOf(data: Buffer, start: number, end: number): number {
  const len = end - start;
  if (len > MAX_TYPE_BYTES * 6) return T_UNKNOWN;
  for (let i = start; i < end; i++) {
    if (data[i] === BACKSLASH) return TYPES.get(decodeJsonString(data, start, end)) ?? T_UNKNOWN;
  }
  if (len > MAX_TYPE_BYTES) return T_UNKNOWN;
  for (const [bytes, code] of TYPE_BYTES) if (isWord(data, start, end, bytes)) return code;
  return T_UNKNOWN;
}

/** Types whose id the reader needs: a client's operation start or end, a server's operation end. */
function needsId(type: number): boolean {
  return type === T_SUBSCRIBE || type === T_START || type === T_COMPLETE || type === T_STOP || type === T_ERROR;
}

/**
 * Walks the frame's top-level object into `s`. `full`: every member is read (the last of a
 * repeated key wins, as JSON.parse does), and payload's query and operationName for a
 * subscribe/start; otherwise the walk stops as soon as the type (and the id it needs) is known.
 * Returns false when the frame is not a readable JSON object.
 */
function scan(data: Buffer, s: Scan, full: boolean): boolean {
  resetScan(s);
  let end = data.length;
  while (end > 0 && isJsonWhitespace(data[end - 1]!)) end--;
  if (end < 2 || data[end - 1] !== RBRACE) return false;
  let p = skipJsonWhitespace(data, 0, end);
  if (data[p] !== LBRACE) return false;
  p = skipJsonWhitespace(data, p + 1, end);
  if (p === end - 1) return true; // {}
  for (;;) {
    if (p >= end || data[p] !== QUOTE) return false;
    const keyStart = p + 1;
    const keyEnd = jsonStringEnd(data, p, end);
    if (keyEnd < 0) return false;
    p = skipJsonWhitespace(data, keyEnd, end);
    if (p >= end || data[p] !== COLON) return false;
    p = skipJsonWhitespace(data, p + 1, end);
    if (p >= end) return false;
    const key = keyOf(data, keyStart, keyEnd - 1, false);
    if (key === KEY_TYPE) {
      if (data[p] === QUOTE) {
        const e = jsonStringEnd(data, p, end);
        if (e < 0) return false;
        s.type = typeOf(data, p + 1, e - 1);
        p = e;
      } else {
        s.type = -1;
        p = jsonValueEnd(data, p, end);
      }
    } else if (key === KEY_ID) {
      if (data[p] === QUOTE) {
        const e = jsonStringEnd(data, p, Math.min(end, p + MAX_ID_RAW_BYTES + 2));
        if (e < 0) {
          // Not closed within the longest id kept: too long, or invalid.
          p = jsonValueEnd(data, p, end);
          s.idStart = s.idEnd = -1;
          s.idBad = true;
        } else {
          s.idStart = p + 1;
          s.idEnd = e - 1;
          s.idBad = e - 1 === p + 1; // empty id
          p = e;
        }
      } else {
        s.idStart = s.idEnd = -1;
        s.idBad = true;
        p = jsonValueEnd(data, p, end);
      }
    } else if (key === KEY_PAYLOAD && full && data[p] === LBRACE) {
      p = scanPayload(data, p, end, s);
    } else {
      p = jsonValueEnd(data, p, end);
    }
    if (p < 0) return false;
    if (!full && s.type !== -1 && (!needsId(s.type) || s.idStart !== -1 || s.idBad)) return true;
    p = skipJsonWhitespace(data, p, end);
    if (p >= end) return false;
    if (data[p] === COMMA) {
      p = skipJsonWhitespace(data, p + 1, end);
      continue;
    }
    return data[p] === RBRACE && p === end - 1;
  }
}

/** `data[p]` is the `{` of payload: records query and operationName; returns the index after `}`, or -1. */
function scanPayload(data: Buffer, p: number, end: number, s: Scan): number {
  const payloadEnd = jsonValueEnd(data, p, end);
  if (payloadEnd < 0) return -1;
  s.queryStart = s.queryEnd = s.nameStart = s.nameEnd = -1;
  s.nameBad = false;
  p = skipJsonWhitespace(data, p + 1, payloadEnd);
  if (data[p] === RBRACE) return payloadEnd;
  // Already validated by jsonValueEnd: only the structure is walked.
  for (;;) {
    const keyStart = p + 1;
    const keyEnd = jsonStringEnd(data, p, payloadEnd);
    p = skipJsonWhitespace(data, keyEnd, payloadEnd);
    p = skipJsonWhitespace(data, p + 1, payloadEnd); // after ':'
    const key = keyOf(data, keyStart, keyEnd - 1, true);
    const valueEnd = jsonValueEnd(data, p, payloadEnd);
    if (key === KEY_QUERY) {
      if (data[p] === QUOTE) {
        s.queryStart = p + 1;
        s.queryEnd = valueEnd - 1;
      } else s.queryStart = s.queryEnd = -1;
    } else if (key === KEY_OPERATION_NAME) {
      s.nameStart = s.nameEnd = -1;
      s.nameBad = false;
      if (data[p] === QUOTE) {
        s.nameStart = p + 1;
        s.nameEnd = valueEnd - 1;
      } else if (data[p] !== 0x6e) s.nameBad = true; // not null
    }
    p = skipJsonWhitespace(data, valueEnd, payloadEnd);
    if (data[p] !== COMMA) return payloadEnd;
    p = skipJsonWhitespace(data, p + 1, payloadEnd);
  }
}

/** The kind of the operation a scanned subscribe/start carries. */
function scannedKind(data: Buffer, s: Scan): OperationKind {
  if (s.queryStart < 0 || s.nameBad) return 'unknown';
  const name = s.nameStart < 0 ? null : decodeJsonString(data, s.nameStart, s.nameEnd);
  return operationKind(decodeJsonString(data, s.queryStart, s.queryEnd), name);
}

function scannedId(data: Buffer, s: Scan): string | null {
  if (s.idStart < 0 || s.idBad) return null;
  const id = decodeJsonString(data, s.idStart, s.idEnd);
  return id.length <= MAX_ID_LENGTH ? id : null;
}

// ---- classify ------------------------------------------------------------------------------

/**
 * The id under which a connection_init is tracked as a request and its connection_ack as the
 * answer (operation ids are the client's; a NUL keeps this one apart from any it would choose).
 */
export const INIT_REQUEST_ID = '\u0000connection_init';

function classifyFrame(data: Buffer, from: Sender, ids: string[]): MessageKind {
  const s = scratch;
  const client = from === 'client';
  if (!scan(data, s, client)) return 'malformed';
  const type = s.type;
  if (type === -1) return 'malformed'; // no type, or not a string
  if (!needsId(type)) {
    if (client ? type === T_CONNECTION_INIT : type === T_CONNECTION_ACK) {
      ids.push(INIT_REQUEST_ID);
      return client ? 'request' : 'response';
    }
    return 'other';
  }
  const id = scannedId(data, s);
  if (id === null) return 'malformed';
  if (client) {
    if (type !== T_SUBSCRIBE && type !== T_START) return 'other';
    if (scannedKind(data, s) === 'subscription') return 'other';
    ids.push(id);
    return 'request';
  }
  if (type !== T_COMPLETE && type !== T_ERROR) return 'other';
  ids.push(id);
  return 'response';
}

// ---- protocol state ------------------------------------------------------------------------

/** An operation sent that is never replayed, while it is in flight. */
type Unreplayable = 'mutation' | 'unknown' | 'over-bound';

class GraphqlWsState implements ProtocolState {
  /** The first connection_init the client sent (a copy), and whether a backend acknowledged it. */
  private init: StagedFrame | null = null;
  private acked = false;
  /** A legacy server answered the init with connection_error (it closes next). */
  private refused = false;
  /** Subscriptions in flight: id → the frame that started it (a copy), in the order sent. */
  private readonly subscriptions = new Map<string, StagedFrame>();
  private subscriptionBytes = 0;
  /** Operations in flight that are never replayed: id → why. */
  private readonly unreplayable = new Map<string, Unreplayable>();
  /** Set once and for good: something the state could not keep (an init past the bounds, too many operations). */
  private broken: string | null = null;
  /** The replay's connection_init awaits its connection_ack from the new backend. */
  private awaitingAck = false;

  constructor(private readonly limits: StateLimits) {}

  sent(data: Buffer, isBinary: boolean): void {
    if (this.broken !== null) return;
    const s = scratch;
    if (!scan(data, s, true)) return;
    switch (s.type) {
      case T_CONNECTION_INIT:
        if (this.init !== null) return; // a second one ends the session on the server (4429)
        if (data.length + this.subscriptionBytes > this.limits.maxBytes || this.limits.maxFrames < 1) {
          this.fail(`its connection_init (${data.length} bytes) does not fit codec.maxStateBytes/maxStateFrames`);
          return;
        }
        this.init = { data: Buffer.from(data), isBinary };
        this.acked = false;
        return;
      case T_SUBSCRIBE:
      case T_START: {
        const id = scannedId(data, s);
        if (id === null) return; // the server refuses it
        this.end(id); // legacy: a start for a live id replaces it
        const kind = scannedKind(data, s);
        if (kind === 'query') return; // the request tracker's
        if (kind !== 'subscription') {
          this.markUnreplayable(id, kind);
          return;
        }
        const frames = 1 + this.subscriptions.size + (this.init === null ? 0 : 1);
        const bytes = this.subscriptionBytes + data.length + (this.init?.data.length ?? 0);
        if (frames > this.limits.maxFrames || bytes > this.limits.maxBytes) {
          this.markUnreplayable(id, 'over-bound');
          return;
        }
        const frame: StagedFrame = { data: Buffer.from(data), isBinary };
        // graphql-transport-ws refuses a subscribe its connection_init has not been acknowledged for.
        if (s.type === T_SUBSCRIBE) frame.afterResume = true;
        this.subscriptions.set(id, frame);
        this.subscriptionBytes += data.length;
        return;
      }
      case T_COMPLETE:
      case T_STOP: {
        const id = scannedId(data, s);
        if (id !== null) this.end(id);
        return;
      }
    }
  }

  received(data: Buffer, _isBinary: boolean): void {
    if (this.broken !== null) return;
    const s = scratch;
    if (!scan(data, s, false)) return;
    if (s.type === T_CONNECTION_ACK) this.acked = true;
    else if (s.type === T_CONNECTION_ERROR && !this.acked && this.init !== null) this.refused = true;
    else if (s.type === T_COMPLETE || s.type === T_ERROR) {
      const id = scannedId(data, s);
      if (id !== null) this.end(id);
    }
  }

  unresumable(): string | null {
    if (this.broken !== null) return this.broken;
    if (this.init === null || !this.acked) {
      if (this.refused) return 'its backend refused its connection_init (connection_error)';
      // Legacy clients may start operations before the ack (or without an init at all).
      if (this.subscriptions.size > 0) return 'it has subscriptions but no acknowledged connection_init to replay';
    }
    for (const [id, why] of this.unreplayable) {
      if (why === 'over-bound') return `subscription ${JSON.stringify(id)} is past codec.maxStateFrames/maxStateBytes`;
      if (why === 'mutation') return `mutation ${JSON.stringify(id)} is in flight (never replayed)`;
      return `operation ${JSON.stringify(id)} of unknown kind is in flight (never replayed)`;
    }
    return null;
  }

  replay(): Frame[] {
    this.awaitingAck = false;
    // An init never acknowledged is a request still unanswered: the request tracker sends it again
    // once the resume is over, and the new backend's ack then reaches the client.
    if (this.init === null || !this.acked || this.broken !== null) return [];
    const frames: StagedFrame[] = [this.init];
    for (const f of this.subscriptions.values()) frames.push(f);
    this.awaitingAck = true;
    return frames;
  }

  resumeAnswer(data: Buffer, _isBinary: boolean): ResumeVerdict {
    if (!this.awaitingAck) return 'pass';
    const s = scratch;
    if (!scan(data, s, false)) return 'pass';
    if (s.type === T_CONNECTION_ACK) {
      this.awaitingAck = false;
      return 'resumed';
    }
    if (s.type === T_CONNECTION_ERROR) {
      // subscriptions-transport-ws refuses an init with connection_error, then closes with 1011.
      this.awaitingAck = false;
      return { refused: true, forward: true, code: 1011, reason: '' };
    }
    return 'pass';
  }

  /** An operation ended (either side): it is no longer state. */
  private end(id: string): void {
    const f = this.subscriptions.get(id);
    if (f !== undefined) {
      this.subscriptions.delete(id);
      this.subscriptionBytes -= f.data.length;
    }
    this.unreplayable.delete(id);
  }

  private markUnreplayable(id: string, why: Unreplayable): void {
    this.unreplayable.set(id, why);
    // Ids only, but bounded all the same.
    if (this.unreplayable.size > Math.max(1024, this.limits.maxFrames)) this.fail(`over ${this.unreplayable.size - 1} operations in flight at once`);
  }

  private fail(why: string): void {
    this.broken = why;
    this.init = null;
    this.subscriptions.clear();
    this.subscriptionBytes = 0;
    this.unreplayable.clear();
    this.awaitingAck = false;
  }
}

/** The GraphQL over WebSocket codec (name 'graphql-ws'). See the notes at the top of this file. */
export function createGraphqlWsCodec(): SessionCodec {
  return {
    name: 'graphql-ws',
    subprotocols: ['graphql-transport-ws', 'graphql-ws'],
    classify(data: Buffer, _isBinary: boolean, from: Sender, ids: string[]): MessageKind {
      return classifyFrame(data, from, ids);
    },
    createState(limits: StateLimits): ProtocolState {
      return new GraphqlWsState(limits);
    },
  };
}
