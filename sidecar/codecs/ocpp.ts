// OCPP-J codec (OCPP 1.6, 2.0.1 and 2.1 JSON framing). A message is a JSON array:
//   CALL             [2, "<id>", "<Action>", {payload}]        → 'request', id
//   CALLRESULT       [3, "<id>", {payload}]                    → 'response', id
//   CALLERROR        [4, "<id>", "<code>", "<desc>", {details}] → 'response', id
//   CALLRESULTERROR  [5, "<id>", ...]            (2.1)         → 'response', id
//   SEND             [6, "<id>", "<Action>", {payload}] (2.1)  → 'other' (no response expected)
//
// Only the frame's head is read: '[', the message type, the id and the comma after it, plus the
// last non-whitespace byte, which must be the closing ']' (an O(1) check that catches most
// truncated frames). The payload is neither parsed nor validated. No allocation but the id
// string (decoded from its JSON escapes on the rare path where it has any).
//
// Decisions:
// - Binary frames are 'other': OCPP-J is carried in text frames.
// - The sender does not matter: both sides send CALLs.
// - The message type must be a one-digit JSON number, 2 to 6 ("2", 2.0, 2e0, 02 are malformed).
// - The id must be a non-empty JSON string of at most MAX_ID_LENGTH characters once decoded
//   (the spec's limit is 36; longer ids seen in the field are tolerated up to that).
// - Anything else (type 0, 1, 7+, not an array, no id, a non-string id, truncated) is 'malformed'.

import type { MessageKind, Sender, SessionCodec } from './codec.js';
import { decodeJsonString, isJsonWhitespace, jsonStringEnd, skipJsonWhitespace } from './json-scan.js';

/** Longest id accepted, in characters (UTF-16 code units) after decoding escapes. */
const MAX_ID_LENGTH = 128;
/** Longest id as written: every character escaped as \uXXXX. */
const MAX_ID_RAW_BYTES = MAX_ID_LENGTH * 6;

const QUOTE = 0x22;
const COMMA = 0x2c;
const DIGIT_0 = 0x30;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

const CALL = 2;
const SEND = 6;

function classifyOcpp(data: Buffer, ids: string[]): MessageKind {
  let end = data.length;
  while (end > 0 && isJsonWhitespace(data[end - 1]!)) end--;
  if (end === 0 || data[end - 1] !== RBRACKET) return 'malformed';
  let p = skipJsonWhitespace(data, 0, end);
  if (p >= end || data[p] !== LBRACKET) return 'malformed';
  p = skipJsonWhitespace(data, p + 1, end);
  if (p >= end) return 'malformed';
  const type = data[p]! - DIGIT_0;
  if (type < CALL || type > SEND) return 'malformed';
  p = skipJsonWhitespace(data, p + 1, end);
  if (p >= end || data[p] !== COMMA) return 'malformed';
  p = skipJsonWhitespace(data, p + 1, end);
  if (p >= end || data[p] !== QUOTE) return 'malformed';
  const idStart = p + 1;
  // Bounded: a bogus "id" running into a large payload is not scanned to its end.
  p = jsonStringEnd(data, p, Math.min(end, idStart + MAX_ID_RAW_BYTES + 1));
  if (p < 0) return 'malformed';
  const idEnd = p - 1;
  if (idEnd === idStart) return 'malformed'; // empty id
  p = skipJsonWhitespace(data, p, end);
  if (p >= end || data[p] !== COMMA) return 'malformed';
  // A decoded id is never longer than its bytes, so only a long raw id needs decoding to check.
  let id: string | null = null;
  if (idEnd - idStart > MAX_ID_LENGTH) {
    id = decodeJsonString(data, idStart, idEnd);
    if (id.length > MAX_ID_LENGTH) return 'malformed';
  }
  if (type === SEND) return 'other';
  ids.push(id ?? decodeJsonString(data, idStart, idEnd));
  return type === CALL ? 'request' : 'response';
}

/** The OCPP-J codec (name 'ocpp'). See the notes at the top of this file. */
export function createOcppCodec(): SessionCodec {
  return {
    name: 'ocpp',
    // OCPP-J's WebSocket subprotocols (OCPP-J 1.6 §3.1.2; 2.0.1 and 2.1 Part 4).
    subprotocols: ['ocpp1.6', 'ocpp2.0', 'ocpp2.0.1', 'ocpp2.1'],
    classify(data: Buffer, isBinary: boolean, _from: Sender, ids: string[]): MessageKind {
      if (isBinary) return 'other';
      return classifyOcpp(data, ids);
    },
  };
}
