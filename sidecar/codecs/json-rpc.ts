// JSON-RPC 2.0 codec, on the allocation-free scanner of json-scan.ts. Of a message it only notes, for
// each top-level object (or each element of a batch), where the "id" value is and whether
// "method", "result" and "error" keys are present; keys are compared bytewise. That is linear in
// the message size but builds nothing: the only allocations per message are the id keys pushed
// onto `ids` (and a decoded string on the rare path of an id or key with backslash escapes).
//
// Id keys: a string id becomes `s:<decoded string>`, a number id `n:<number token as written>`,
// so "1" and 1 never collide. Number ids are NOT normalised (1, 1.0 and 1e0 are three different
// keys): JSON-RPC requires a response to carry the same id as the request and peers echo it
// verbatim; normalising through a double would instead merge distinct large integers.
//
// Decisions:
// - Binary frames are 'other': JSON-RPC over WebSocket is carried in text frames.
// - The sender does not matter: either side may send requests (bidirectional JSON-RPC).
// - The "jsonrpc": "2.0" member is not required (1.0-style peers work too).
// - A request with "id": null is treated like a notification ('other'); so is an error response
//   with "id": null (the server could not read the request's id). A result with a null id, a
//   response without an id, an id that is not a string/number/null, a non-string "method", an
//   object with both "method" and "result"/"error", or with both "result" and "error", and an
//   object with none of them are 'malformed'.
// - Batches: requests (with or without notifications) → 'request' with every request id, in
//   order; responses (null-id errors ignored) → 'response' with every id; notifications only →
//   'other'; an empty batch, a batch mixing requests and responses, or any element that is not a
//   well-formed message → 'malformed' (and nothing is left on `ids`).
// - Duplicate keys: the last "id" wins (as with JSON.parse).
// - Limits: nesting deeper than the scanner's depth limit and ids longer than MAX_ID_BYTES (as written, quotes
//   excluded) are 'malformed'. UTF-8 inside strings is not validated (invalid sequences decode to
//   U+FFFD, the same for a request and its response).

import type { MessageKind, Sender, SessionCodec } from './codec.js';
import {
  BACKSLASH,
  COLON,
  COMMA,
  DIGIT_0,
  DIGIT_9,
  LBRACE,
  LBRACKET,
  LOWER_N,
  MINUS,
  QUOTE,
  RBRACE,
  RBRACKET,
  decodeJsonString,
  jsonStringEnd,
  jsonValueEnd,
  skipJsonWhitespace,
} from './json-scan.js';

// ---- JSON-RPC ----

/** Longest id accepted, in bytes as written (quotes excluded); longer ids are malformed. */
const MAX_ID_BYTES = 512;

const KEY_OTHER = 0;
const KEY_ID = 1;
const KEY_METHOD = 2;
const KEY_RESULT = 3;
const KEY_ERROR = 4;

const F_METHOD = 1;
const F_RESULT = 2;
const F_ERROR = 4;
const F_BAD = 8; // a member that makes the object invalid (e.g. a non-string method)

const ID_ABSENT = 0;
const ID_STRING = 1;
const ID_NUMBER = 2;
const ID_NULL = 3;
const ID_INVALID = 4;

const K_REQUEST = 1;
const K_RESPONSE = 2;
const K_OTHER = 3;
const K_MALFORMED = 4;

// Scratch state of the last scanned object. classify is synchronous and not re-entrant, so
// module-level state is safe and keeps the scan allocation-free.
let objFlags = 0;
let idKind = ID_ABSENT;
let idStart = 0;
let idEnd = 0;

function bytesEqual(data: Buffer, start: number, end: number, ascii: string): boolean {
  if (end - start !== ascii.length) return false;
  for (let i = 0; i < ascii.length; i++) {
    if (data[start + i] !== ascii.charCodeAt(i)) return false;
  }
  return true;
}

/** Which key a member name (raw content between the quotes) is; escaped names take the rare path. */
function keyOf(data: Buffer, start: number, end: number): number {
  const n = end - start;
  if (n === 2) return data[start] === 0x69 && data[start + 1] === 0x64 ? KEY_ID : KEY_OTHER;
  if (n === 5) return bytesEqual(data, start, end, 'error') ? KEY_ERROR : KEY_OTHER;
  if (n === 6) {
    if (bytesEqual(data, start, end, 'method')) return KEY_METHOD;
    if (bytesEqual(data, start, end, 'result')) return KEY_RESULT;
  }
  // An escaped name such as "\u0069d" can only be longer than its decoded form (at most 6 bytes
  // per character); only such short names are decoded.
  if (n > 2 && n <= 36) {
    let i = start;
    while (i < end && data[i] !== BACKSLASH) i++;
    if (i < end) {
      switch (decodeJsonString(data, start, end)) {
        case 'id': return KEY_ID;
        case 'method': return KEY_METHOD;
        case 'result': return KEY_RESULT;
        case 'error': return KEY_ERROR;
      }
    }
  }
  return KEY_OTHER;
}

/**
 * `data[p]` is '{': scans one message object, noting its top-level keys into the scratch state.
 * Returns the index just after the closing brace, or -1 if it is not valid JSON.
 */
function scanObject(data: Buffer, p: number, len: number): number {
  objFlags = 0;
  idKind = ID_ABSENT;
  p = skipJsonWhitespace(data, p + 1, len);
  if (p >= len) return -1;
  if (data[p] === RBRACE) return p + 1;
  for (;;) {
    if (p >= len || data[p] !== QUOTE) return -1;
    const keyStart = p + 1;
    p = jsonStringEnd(data, p, len);
    if (p < 0) return -1;
    const key = keyOf(data, keyStart, p - 1);
    p = skipJsonWhitespace(data, p, len);
    if (p >= len || data[p] !== COLON) return -1;
    p = skipJsonWhitespace(data, p + 1, len);
    if (p >= len) return -1;
    const valueStart = p;
    const c = data[p]!;
    p = jsonValueEnd(data, p, len);
    if (p < 0) return -1;
    switch (key) {
      case KEY_ID:
        idStart = valueStart;
        idEnd = p;
        idKind = c === QUOTE ? ID_STRING : c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9) ? ID_NUMBER : c === LOWER_N ? ID_NULL : ID_INVALID;
        break;
      case KEY_METHOD:
        objFlags |= c === QUOTE ? F_METHOD : F_BAD;
        break;
      case KEY_RESULT:
        objFlags |= F_RESULT;
        break;
      case KEY_ERROR:
        objFlags |= F_ERROR;
        break;
    }
    p = skipJsonWhitespace(data, p, len);
    if (p >= len) return -1;
    const d = data[p];
    if (d === RBRACE) return p + 1;
    if (d !== COMMA) return -1;
    p = skipJsonWhitespace(data, p + 1, len);
  }
}

/** Pushes the scanned id's key onto `ids`; false if the id is too long. */
function pushId(data: Buffer, ids: string[]): boolean {
  if (idKind === ID_STRING) {
    if (idEnd - idStart - 2 > MAX_ID_BYTES) return false;
    ids.push('s:' + decodeJsonString(data, idStart + 1, idEnd - 1));
    return true;
  }
  if (idEnd - idStart > MAX_ID_BYTES) return false;
  ids.push('n:' + data.toString('latin1', idStart, idEnd));
  return true;
}

/** Classifies the object just scanned (scratch state); pushes its id for requests and responses. */
function classifyObject(data: Buffer, ids: string[]): number {
  const flags = objFlags;
  if (flags & F_BAD) return K_MALFORMED;
  if (flags & F_METHOD) {
    if (flags & (F_RESULT | F_ERROR)) return K_MALFORMED;
    if (idKind === ID_ABSENT || idKind === ID_NULL) return K_OTHER; // notification
    if (idKind === ID_INVALID) return K_MALFORMED;
    return pushId(data, ids) ? K_REQUEST : K_MALFORMED;
  }
  if (flags === F_RESULT || flags === F_ERROR) {
    if (idKind === ID_NULL) return flags === F_ERROR ? K_OTHER : K_MALFORMED;
    if (idKind === ID_ABSENT || idKind === ID_INVALID) return K_MALFORMED;
    return pushId(data, ids) ? K_RESPONSE : K_MALFORMED;
  }
  return K_MALFORMED; // both result and error, or none of method/result/error
}

function kindName(k: number): MessageKind {
  return k === K_REQUEST ? 'request' : k === K_RESPONSE ? 'response' : k === K_OTHER ? 'other' : 'malformed';
}

function classifyJsonRpc(data: Buffer, ids: string[]): MessageKind {
  const len = data.length;
  let p = skipJsonWhitespace(data, 0, len);
  if (p >= len) return 'malformed';
  const first = data[p];
  if (first === LBRACE) {
    p = scanObject(data, p, len);
    if (p < 0 || skipJsonWhitespace(data, p, len) !== len) return 'malformed';
    return kindName(classifyObject(data, ids));
  }
  if (first !== LBRACKET) return 'malformed';
  // A batch.
  const base = ids.length;
  p = skipJsonWhitespace(data, p + 1, len);
  if (p >= len || data[p] === RBRACKET) return 'malformed'; // truncated or empty batch
  let mode = K_OTHER;
  for (;;) {
    if (data[p] !== LBRACE) break;
    p = scanObject(data, p, len);
    if (p < 0) break;
    const k = classifyObject(data, ids);
    if (k === K_MALFORMED) break;
    if (k !== K_OTHER) {
      if (mode !== K_OTHER && mode !== k) break; // requests and responses mixed
      mode = k;
    }
    p = skipJsonWhitespace(data, p, len);
    if (p >= len) break;
    const d = data[p];
    if (d === RBRACKET) {
      if (skipJsonWhitespace(data, p + 1, len) !== len) break;
      return kindName(mode);
    }
    if (d !== COMMA) break;
    p = skipJsonWhitespace(data, p + 1, len);
    if (p >= len) break;
  }
  ids.length = base;
  return 'malformed';
}

/** The JSON-RPC 2.0 codec (name 'json-rpc'). See the notes at the top of this file. */
export function createJsonRpcCodec(): SessionCodec {
  return {
    name: 'json-rpc',
    classify(data: Buffer, isBinary: boolean, _from: Sender, ids: string[]): MessageKind {
      if (isBinary) return 'other';
      return classifyJsonRpc(data, ids);
    },
  };
}
