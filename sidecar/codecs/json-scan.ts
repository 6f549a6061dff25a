// A small allocation-free JSON scanner for the codecs. It walks a Buffer byte by byte (plain
// indexing, no strings built) and validates JSON as it goes: strings with their escapes, numbers,
// true/false/null, and nested objects/arrays, which are skipped with an explicit bracket stack (a
// preallocated Uint8Array, no recursion, so a deeply nested frame cannot overflow the call stack).
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
export const QUOTE = 0x22;
const PLUS = 0x2b;
export const COMMA = 0x2c;
export const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
export const DIGIT_0 = 0x30;
const DIGIT_1 = 0x31;
export const DIGIT_9 = 0x39;
export const COLON = 0x3a;
const UPPER_E = 0x45;
export const LBRACKET = 0x5b;
export const BACKSLASH = 0x5c;
export const RBRACKET = 0x5d;
const LOWER_B = 0x62;
const LOWER_E = 0x65;
const LOWER_F = 0x66;
export const LOWER_N = 0x6e;
const LOWER_R = 0x72;
const LOWER_T = 0x74;
const LOWER_U = 0x75;
export const LBRACE = 0x7b;
export const RBRACE = 0x7d;

/** Deepest nesting of objects/arrays skipped inside a value; deeper is malformed. */
const MAX_DEPTH = 1024;
/** Bracket stack for jsonValueEnd: one byte per open container, allocated once. */
const stack = new Uint8Array(MAX_DEPTH);

/** JSON whitespace: space, tab, LF, CR. */
export function isJsonWhitespace(c: number): boolean {
  return c === SPACE || c === LF || c === CR || c === TAB;
}

/** First index at or after `p` (below `len`) that is not JSON whitespace. */
export function skipJsonWhitespace(data: Buffer, p: number, len: number): number {
  while (p < len) {
    const c = data[p]!;
    if (c !== SPACE && c !== LF && c !== CR && c !== TAB) break;
    p++;
  }
  return p;
}

function isHexDigit(c: number): boolean {
  return (c >= DIGIT_0 && c <= DIGIT_9) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hexValue(c: number): number {
  return c <= DIGIT_9 ? c - DIGIT_0 : (c | 0x20) - 0x61 + 10;
}

/**
 * `data[p]` is the opening quote of a JSON string: returns the index just after its closing quote,
 * or -1 if the string is invalid (bad escape, raw control character) or not closed before `len`.
 */
export function jsonStringEnd(data: Buffer, p: number, len: number): number {
  p++;
  while (p < len) {
    const c = data[p]!;
    if (c === QUOTE) return p + 1;
    if (c === BACKSLASH) {
      if (p + 1 >= len) return -1;
      const e = data[p + 1]!;
      if (e === LOWER_U) {
        if (p + 5 >= len) return -1;
        if (!isHexDigit(data[p + 2]!) || !isHexDigit(data[p + 3]!) || !isHexDigit(data[p + 4]!) || !isHexDigit(data[p + 5]!)) {
          return -1;
        }
        p += 6;
        continue;
      }
      if (
        e !== QUOTE && e !== BACKSLASH && e !== SLASH && e !== LOWER_B &&
        e !== LOWER_F && e !== LOWER_N && e !== LOWER_R && e !== LOWER_T
      ) {
        return -1;
      }
      p += 2;
      continue;
    }
    if (c < 0x20) return -1;
    p++;
  }
  return -1;
}

/**
 * Decodes the content of a JSON string already validated by jsonStringEnd: `start` is just after
 * the opening quote, `end` is the closing quote. Without escapes this is one toString; with them
 * (the rare path) the pieces are concatenated. A backslash byte never occurs inside a multi-byte
 * UTF-8 sequence, so splitting at escapes never splits a character.
 */
export function decodeJsonString(data: Buffer, start: number, end: number): string {
  let i = start;
  while (i < end && data[i] !== BACKSLASH) i++;
  if (i === end) return data.toString('utf8', start, end);
  let out = '';
  let seg = start;
  while (i < end) {
    if (data[i] !== BACKSLASH) {
      i++;
      continue;
    }
    if (i > seg) out += data.toString('utf8', seg, i);
    const e = data[i + 1]!;
    switch (e) {
      case LOWER_B: out += '\b'; break;
      case LOWER_F: out += '\f'; break;
      case LOWER_N: out += '\n'; break;
      case LOWER_R: out += '\r'; break;
      case LOWER_T: out += '\t'; break;
      case LOWER_U:
        out += String.fromCharCode(
          (hexValue(data[i + 2]!) << 12) | (hexValue(data[i + 3]!) << 8) | (hexValue(data[i + 4]!) << 4) | hexValue(data[i + 5]!),
        );
        i += 4;
        break;
      default: out += String.fromCharCode(e); // " \ /
    }
    i += 2;
    seg = i;
  }
  if (seg < end) out += data.toString('utf8', seg, end);
  return out;
}

/** `data[p]` starts a JSON number: returns the index just after it, or -1. */
export function jsonNumberEnd(data: Buffer, p: number, len: number): number {
  if (p < len && data[p] === MINUS) p++;
  if (p >= len) return -1;
  const c = data[p]!;
  if (c === DIGIT_0) p++;
  else if (c >= DIGIT_1 && c <= DIGIT_9) {
    p++;
    while (p < len && data[p]! >= DIGIT_0 && data[p]! <= DIGIT_9) p++;
  } else return -1;
  if (p < len && data[p] === DOT) {
    p++;
    const s = p;
    while (p < len && data[p]! >= DIGIT_0 && data[p]! <= DIGIT_9) p++;
    if (p === s) return -1;
  }
  if (p < len && (data[p] === LOWER_E || data[p] === UPPER_E)) {
    p++;
    if (p < len && (data[p] === PLUS || data[p] === MINUS)) p++;
    const s = p;
    while (p < len && data[p]! >= DIGIT_0 && data[p]! <= DIGIT_9) p++;
    if (p === s) return -1;
  }
  return p;
}

/** `data[p]` starts true, false or null: returns the index just after it, or -1. */
function literalEnd(data: Buffer, p: number, len: number): number {
  const c = data[p];
  if (c === LOWER_T) {
    return p + 3 < len && data[p + 1] === LOWER_R && data[p + 2] === LOWER_U && data[p + 3] === LOWER_E ? p + 4 : -1;
  }
  if (c === LOWER_F) {
    return p + 4 < len && data[p + 1] === 0x61 && data[p + 2] === 0x6c && data[p + 3] === 0x73 && data[p + 4] === LOWER_E
      ? p + 5
      : -1;
  }
  if (c === LOWER_N) {
    return p + 3 < len && data[p + 1] === LOWER_U && data[p + 2] === 0x6c && data[p + 3] === 0x6c ? p + 4 : -1;
  }
  return -1;
}

/** At an object member: `"key"` `:` — returns the index of the value (whitespace skipped), or -1. */
function memberValueStart(data: Buffer, p: number, len: number): number {
  if (p >= len || data[p] !== QUOTE) return -1;
  p = jsonStringEnd(data, p, len);
  if (p < 0) return -1;
  p = skipJsonWhitespace(data, p, len);
  if (p >= len || data[p] !== COLON) return -1;
  return skipJsonWhitespace(data, p + 1, len);
}

/**
 * `data[p]` is the first byte of a JSON value (whitespace already skipped): validates the value
 * and returns the index just after it, or -1. Containers are walked iteratively with a bracket
 * stack of at most MAX_DEPTH levels.
 */
export function jsonValueEnd(data: Buffer, p: number, len: number): number {
  let depth = 0;
  for (;;) {
    // A value starts at p.
    if (p >= len) return -1;
    const c = data[p]!;
    if (c === LBRACE || c === LBRACKET) {
      p = skipJsonWhitespace(data, p + 1, len);
      if (p >= len) return -1;
      if (data[p] === (c === LBRACE ? RBRACE : RBRACKET)) {
        p++; // empty container: a complete value
      } else {
        if (depth === MAX_DEPTH) return -1;
        stack[depth++] = c;
        if (c === LBRACE) {
          p = memberValueStart(data, p, len);
          if (p < 0) return -1;
        }
        continue;
      }
    } else if (c === QUOTE) {
      p = jsonStringEnd(data, p, len);
    } else if (c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9)) {
      p = jsonNumberEnd(data, p, len);
    } else {
      p = literalEnd(data, p, len);
    }
    if (p < 0) return -1;
    // After a value: close containers until one goes on with a comma.
    for (;;) {
      if (depth === 0) return p;
      p = skipJsonWhitespace(data, p, len);
      if (p >= len) return -1;
      const d = data[p]!;
      const top = stack[depth - 1]!;
      if (d === COMMA) {
        p = skipJsonWhitespace(data, p + 1, len);
        if (top === LBRACE) {
          p = memberValueStart(data, p, len);
          if (p < 0) return -1;
        }
        break;
      }
      if ((d === RBRACE && top === LBRACE) || (d === RBRACKET && top === LBRACKET)) {
        depth--;
        p++;
        continue;
      }
      return -1;
    }
  }
}
