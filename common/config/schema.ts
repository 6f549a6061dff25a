// The one table of sidecar configuration keys. Everything else — loading the YAML file, the
// environment names, defaults, validation and docs/config.md — is driven by SCHEMA below; there is
// no second list of keys anywhere. Each entry is one leaf of SidecarConfig (types.ts), addressed by
// its dotted path. The compiler checks that every leaf of SidecarConfig has exactly one entry and
// that each entry's value type and default match the field's type.

import { isIP } from 'node:net';
import { BACKEND_STATES, BUILTIN_CODECS, type BackendState } from '../vocabulary.js';
import type {
  BackendSpec,
  HashKey,
  HostPort,
  SidecarConfig,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Value types

/** One problem found by a value parser. `sub` is appended to the key's path (e.g. "[2].url"). */
export interface ValueProblem {
  sub?: string;
  /** Starts with the offending value, e.g. `"30 parsecs" is not a duration (use e.g. 250ms, 10s, 5m)`. */
  message: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problems: ValueProblem[] };

/** Where a raw value came from: YAML values may be numbers, booleans, lists, maps; env values are strings. */
export type Origin = 'yaml' | 'env';

export interface ValueType<T> {
  /** Short description for the docs, e.g. "duration ≥ 1ms", "int 1..1000". */
  readonly describe: string;
  parse(raw: unknown, origin: Origin): Parsed<T>;
  /** How a value (e.g. the default) is written in the docs. */
  format(value: T): string;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T = never>(message: string, sub?: string): Parsed<T> => ({
  ok: false,
  problems: [sub === undefined ? { message } : { sub, message }],
});

/** A raw value as shown in messages: strings quoted, everything else compact JSON (truncated). */
export function show(raw: unknown): string {
  let s: string;
  if (raw === undefined) s = 'undefined';
  else if (typeof raw === 'string') s = JSON.stringify(raw);
  else if (typeof raw === 'number' || typeof raw === 'boolean' || raw === null) s = String(raw);
  else {
    try {
      s = JSON.stringify(raw) ?? String(raw);
    } catch {
      s = String(raw);
    }
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

/** Scalars accepted where a string is expected (YAML may type `value: 1` as a number). */
function scalarString(raw: unknown): string | undefined {
  if (typeof raw === 'string') return raw;
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw);
  if (typeof raw === 'boolean') return String(raw);
  return undefined;
}

// --- durations ---------------------------------------------------------------------------------

/** Largest timer delay Node honours (setTimeout overflows above 2^31-1 ms). */
export const MAX_DURATION_MS = 2_147_483_647;

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
const DURATION_HINT = 'use e.g. 250ms, 10s, 5m, 1m30s or a number of milliseconds';

/**
 * Parses "250ms", "10s", "1.5s", "5m", "1h", Go-style compounds such as "1m30s", or a plain number
 * of milliseconds. Returns milliseconds (fractions rounded up, so a positive duration stays
 * positive), or undefined for anything else (including negatives).
 */
export function parseDuration(raw: unknown): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) && raw >= 0 ? Math.ceil(raw) : undefined;
  if (typeof raw !== 'string') return undefined;
  const s = raw.trim();
  if (s === '') return undefined;
  if (/^(\d+(\.\d*)?|\.\d+)$/.test(s)) return Math.ceil(Number(s));
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = DURATION_PART.lastIndex;
  }
  return Number.isFinite(total) ? Math.ceil(total) : undefined;
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export function duration(opts: { min?: number; max?: number } = {}): ValueType<number> {
  const min = opts.min ?? 0;
  const max = opts.max ?? MAX_DURATION_MS;
  return {
    describe: min > 0 ? `duration ≥ ${formatDuration(min)}` : 'duration (0 allowed)',
    parse(raw) {
      const ms = parseDuration(raw);
      if (ms === undefined) {
        const negative =
          (typeof raw === 'number' && raw < 0) || (typeof raw === 'string' && raw.trim().startsWith('-'));
        return bad(`${show(raw)} is ${negative ? 'negative; a duration must be ≥ 0' : 'not a duration'} (${DURATION_HINT})`);
      }
      if (ms < min) return bad(`${show(raw)} is too short: must be at least ${formatDuration(min)}`);
      if (ms > max) return bad(`${show(raw)} is too long: must be at most ${formatDuration(max)}`);
      return ok(ms);
    },
    format: formatDuration,
  };
}

// --- sizes -------------------------------------------------------------------------------------

const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const SIZE_HINT = 'use e.g. 512B, 64KiB, 16MiB, 1GiB or a number of bytes';

/** Parses "512B", "64KiB", "16MiB", "1GiB" or a plain number of bytes; undefined otherwise. */
export function parseSize(raw: unknown): number | undefined {
  if (typeof raw === 'number') return Number.isSafeInteger(raw) && raw >= 0 ? raw : undefined;
  if (typeof raw !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/.exec(raw.trim());
  if (!m) return undefined;
  const bytes = Number(m[1]) * SIZE_UNITS[m[2] ?? 'B']!;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export function formatSize(bytes: number): string {
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    const n = SIZE_UNITS[unit]!;
    if (bytes !== 0 && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return bytes === 0 ? '0' : `${bytes}B`;
}

export function size(opts: { min?: number; max?: number } = {}): ValueType<number> {
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  return {
    describe: max === Number.MAX_SAFE_INTEGER ? (min > 0 ? `size ≥ ${formatSize(min)}` : 'size') : `size ${formatSize(min)}..${formatSize(max)}`,
    parse(raw) {
      const n = parseSize(raw);
      if (n === undefined) {
        const hint = typeof raw === 'string' && /\d\s*[kKmMgG][bB]$/.test(raw.trim()) ? '; binary units only: KiB, MiB, GiB' : '';
        return bad(`${show(raw)} is not a size (${SIZE_HINT}${hint})`);
      }
      if (n < min || n > max) return bad(`${show(raw)} is out of range: must be ${formatSize(min)}..${formatSize(max)}`);
      return ok(n);
    },
    format: formatSize,
  };
}

// --- numbers, booleans, enums, strings ---------------------------------------------------------

function toNumber(raw: unknown): number | undefined {
  if (typeof raw === 'number') return raw;
  if (typeof raw === 'string' && /^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$/.test(raw)) return Number(raw);
  return undefined;
}

export function int(min: number, max: number): ValueType<number> {
  return {
    describe: `integer ${min}..${max}`,
    parse(raw) {
      const n = toNumber(raw);
      if (n === undefined || !Number.isSafeInteger(n)) return bad(`${show(raw)} is not an integer`);
      if (n < min || n > max) return bad(`${show(raw)} is out of range: must be ${min}..${max}`);
      return ok(n);
    },
    format: String,
  };
}

export function float(min: number, max: number): ValueType<number> {
  return {
    describe: `number ${min}..${max}`,
    parse(raw) {
      const n = toNumber(raw);
      if (n === undefined || !Number.isFinite(n)) return bad(`${show(raw)} is not a number`);
      if (n < min || n > max) return bad(`${show(raw)} is out of range: must be ${min}..${max}`);
      return ok(n);
    },
    format: String,
  };
}

const TRUE_WORDS = new Set(['true', '1', 'yes']);
const FALSE_WORDS = new Set(['false', '0', 'no']);

export function bool(): ValueType<boolean> {
  return {
    describe: 'boolean',
    parse(raw) {
      if (typeof raw === 'boolean') return ok(raw);
      const s = scalarString(raw)?.trim().toLowerCase();
      if (s !== undefined && TRUE_WORDS.has(s)) return ok(true);
      if (s !== undefined && FALSE_WORDS.has(s)) return ok(false);
      return bad(`${show(raw)} is not a boolean (use true/false, 1/0 or yes/no)`);
    },
    format: String,
  };
}

export function oneOf<const V extends string>(values: readonly V[]): ValueType<V> {
  return {
    describe: `one of ${values.join(', ')}`,
    parse(raw) {
      const s = typeof raw === 'string' ? raw.trim().toLowerCase() : undefined;
      const hit = values.find((v) => v.toLowerCase() === s);
      return hit !== undefined ? ok(hit) : bad(`${show(raw)} is not one of ${values.join(', ')}`);
    },
    format: (v) => v,
  };
}

export function str(opts: { check?: (s: string) => boolean; expected?: string; describe?: string } = {}): ValueType<string> {
  return {
    describe: opts.describe ?? 'string',
    parse(raw) {
      const s = scalarString(raw);
      if (s === undefined) return bad(`${show(raw)} is not a string`);
      if (opts.check && !opts.check(s)) return bad(`${show(raw)} is not ${opts.expected ?? 'valid'}`);
      return ok(s);
    },
    format: (v) => JSON.stringify(v),
  };
}

/** A path to a file that must exist and be readable at load time (when not empty). */
export const file = (): ValueType<string> => str({ describe: 'file path' });

// --- lists -------------------------------------------------------------------------------------

/** A YAML list of scalars, or a comma-separated string (always the form in env). Entries trimmed, empty ones dropped. */
function listItems(raw: unknown): { items: Array<{ raw: unknown; index: number }> } | undefined {
  if (raw === null) return { items: [] };
  if (typeof raw === 'string') {
    return {
      items: raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
        .map((s, index) => ({ raw: s, index })),
    };
  }
  if (Array.isArray(raw)) {
    return {
      items: raw
        .map((r, index) => ({ raw: typeof r === 'string' ? r.trim() : r, index }))
        .filter((e) => e.raw !== ''),
    };
  }
  return undefined;
}

function listOf<T>(
  item: ValueType<T>,
  describe: string,
  key: (v: T) => string = (v) => String(v),
): ValueType<T[]> {
  return {
    describe,
    parse(raw) {
      const l = listItems(raw);
      if (!l) return bad(`${show(raw)} is not a list (use a YAML list, or comma-separated in env)`);
      const out: T[] = [];
      const seen = new Set<string>();
      const problems: ValueProblem[] = [];
      for (const { raw: r, index } of l.items) {
        const p = item.parse(r, 'yaml');
        if (!p.ok) {
          for (const pr of p.problems) problems.push({ sub: `[${index}]`, message: pr.message });
          continue;
        }
        const k = key(p.value);
        if (!seen.has(k)) {
          seen.add(k);
          out.push(p.value);
        }
      }
      return problems.length ? { ok: false, problems } : ok(out);
    },
    format: (v) => (v.length === 0 ? '[]' : v.join(', ')),
  };
}

export const stringList = (): ValueType<string[]> => listOf(str(), 'list of strings');

const CODEC_NAMES: readonly string[] = ['auto', 'none', ...BUILTIN_CODECS];

function isCodecName(s: string): boolean {
  return CODEC_NAMES.includes(s) || (s.startsWith('module:') && s.length > 'module:'.length);
}

/** none | ocpp | json-rpc | module:/path/to/codec.js */
export function codecName(): ValueType<string> {
  return str({ check: isCodecName, expected: `a codec (${CODEC_NAMES.join(', ')} or module:/path/to/codec.js)`, describe: 'codec name' });
}

/** "prefix=codec", e.g. "/ocpp=ocpp". */
export function codecRoute(): ValueType<string> {
  return str({
    check: (s) => {
      const eq = s.indexOf('=');
      return eq > 0 && s.startsWith('/') && isCodecName(s.slice(eq + 1).trim());
    },
    expected: 'a "prefix=codec" entry such as "/ocpp=ocpp" (prefix starting with /)',
  });
}

/** RFC 7230 token characters (header field names). */
export const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A single header name (kept as written). */
export function headerName(): ValueType<string> {
  return str({
    check: (s) => HEADER_TOKEN.test(s),
    expected: 'a valid header name (RFC 7230 token: letters, digits and !#$%&\'*+-.^_`|~)',
    describe: 'header name',
  });
}

/** A list of header names: matched case-insensitively, stored lower-case, duplicates dropped. */
export function headerList(): ValueType<string[]> {
  const name = headerName();
  const lower: ValueType<string> = {
    describe: name.describe,
    parse: (raw, origin) => {
      const p = name.parse(raw, origin);
      return p.ok ? ok(p.value.toLowerCase()) : p;
    },
    format: name.format,
  };
  return listOf(lower, 'list of header names');
}

export function intList(min: number, max: number): ValueType<number[]> {
  return listOf(int(min, max), `list of integers ${min}..${max}`);
}

// --- addresses ---------------------------------------------------------------------------------

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const ADDRESS_HINT = 'use host:port, e.g. :8080, 127.0.0.1:9901 or [::1]:80; port 0..65535';

/** ":8080" → {host "0.0.0.0", port 8080}; "127.0.0.1:9901"; "[::1]:80"; "name:80". */
export function parseHostPort(raw: unknown): HostPort | undefined {
  if (typeof raw !== 'string') return undefined;
  const s = raw.trim();
  let host: string;
  let port: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (v6) {
    host = v6[1]!;
    port = v6[2]!;
    if (isIP(host) !== 6) return undefined;
  } else {
    const m = /^([^:[\]]*):(\d+)$/.exec(s);
    if (!m) return undefined;
    host = m[1] === '' ? '0.0.0.0' : m[1]!;
    port = m[2]!;
    if (isIP(host) !== 4 && !HOSTNAME.test(host)) return undefined;
  }
  if (port.length > 5) return undefined;
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) return undefined;
  return { host, port: n };
}

export function formatHostPort(a: HostPort): string {
  return `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

export function address(): ValueType<HostPort> {
  return {
    describe: 'host:port (port 0 = any free port)',
    parse(raw) {
      if (isPlainObject(raw)) {
        // The SidecarConfig shape itself: { host, port }.
        const extra = Object.keys(raw).find((k) => k !== 'host' && k !== 'port');
        if (extra !== undefined) return bad('unknown key (an address map has only host and port)', `.${extra}`);
        const host = raw.host === undefined || raw.host === null ? '' : raw.host;
        const port = typeof raw.port === 'number' || typeof raw.port === 'string' ? String(raw.port) : '';
        const a = typeof host === 'string' && port !== '' ? parseHostPort(`${host.includes(':') ? `[${host}]` : host}:${port}`) : undefined;
        return a ? ok(a) : bad(`${show(raw)} is not a host:port address (${ADDRESS_HINT})`);
      }
      const a = parseHostPort(raw);
      return a ? ok(a) : bad(`${show(raw)} is not a host:port address (${ADDRESS_HINT})`);
    },
    format: formatHostPort,
  };
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x.x.x and "localhost". */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

// --- hash key ----------------------------------------------------------------------------------

const HASH_KEY_HINT = 'use path, header:NAME or query:NAME';

export function hashKey(): ValueType<HashKey> {
  const check = (source: unknown, name: unknown, rawShown: string): Parsed<HashKey> => {
    if (source === 'path') return ok({ source: 'path', name: '' });
    if (source !== 'header' && source !== 'query') return bad(`${rawShown} is not a hash key (${HASH_KEY_HINT})`);
    const n = scalarString(name)?.trim() ?? '';
    if (n === '') return bad(`${rawShown} has no ${source} name (${HASH_KEY_HINT})`);
    if (source === 'header') {
      if (!HEADER_TOKEN.test(n)) return bad(`${rawShown}: ${JSON.stringify(n)} is not a valid header name`);
      return ok({ source, name: n.toLowerCase() });
    }
    return ok({ source, name: n });
  };
  return {
    describe: 'path | header:NAME | query:NAME (or a map {source, name})',
    parse(raw) {
      if (typeof raw === 'string') {
        const s = raw.trim();
        const i = s.indexOf(':');
        const source = (i < 0 ? s : s.slice(0, i)).toLowerCase();
        if (i < 0 && source !== 'path') return bad(`${show(raw)} is not a hash key (${HASH_KEY_HINT})`);
        if (i >= 0 && source === 'path') return bad(`${show(raw)} is not a hash key (path takes no name; ${HASH_KEY_HINT})`);
        return check(source, i < 0 ? '' : s.slice(i + 1), show(raw));
      }
      if (isPlainObject(raw)) {
        const unknown = Object.keys(raw).filter((k) => k !== 'source' && k !== 'name');
        if (unknown.length) return bad(`unknown key (a hash key map has only source and name)`, `.${unknown[0]}`);
        const source = typeof raw.source === 'string' ? raw.source.trim().toLowerCase() : raw.source;
        return check(source, raw.name, show(raw));
      }
      return bad(`${show(raw)} is not a hash key (${HASH_KEY_HINT})`);
    },
    format: (v) => (v.source === 'path' ? 'path' : `${v.source}:${v.name}`),
  };
}

function dnsServer(s: string): boolean {
  if (isIP(s) !== 0) return true;
  const hp = parseHostPort(s);
  return hp !== undefined && !s.startsWith(':') && isIP(hp.host) !== 0;
}

// --- backends ----------------------------------------------------------------------------------

/** '/', '[' and ']' are for the ids DNS expansion makes: name/address:port, name/[v6]:port. */
export const BACKEND_ID = /^[A-Za-z0-9._:/[\]-]{1,128}$/;
const BACKEND_ID_HINT = '1..128 characters from A-Z a-z 0-9 . _ : / [ ] -';
const BACKEND_KEYS = ['id', 'url', 'weight', 'standby', 'labels', 'state', 'resolve'];

/** Checks a backend URL; returns the default id (host:port, default port filled in) or a message. */
export function checkBackendUrl(raw: unknown): { id: string; url: string } | { message: string } {
  if (typeof raw !== 'string' || raw.trim() === '') {
    return { message: `${show(raw)} is not a URL (use e.g. ws://10.0.0.5:9000/path)` };
  }
  const s = raw.trim();
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return { message: `${show(raw)} is not a valid URL (use e.g. ws://10.0.0.5:9000/path)` };
  }
  if (u.protocol === 'http:' || u.protocol === 'https:') {
    const ws = u.protocol === 'http:' ? 'ws' : 'wss';
    return { message: `${show(raw)} uses ${u.protocol}// but backends are WebSocket URLs: use ${ws}://${s.slice(u.protocol.length + 2)}` };
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    return { message: `${show(raw)} has scheme ${u.protocol} — backend URLs must be ws:// or wss://` };
  }
  if (s.includes('#')) return { message: `${show(raw)} has a #fragment; backend URLs must not` };
  if (u.hostname === '') return { message: `${show(raw)} has no host` };
  const port = u.port !== '' ? u.port : u.protocol === 'wss:' ? '443' : '80';
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { id: `${host}:${port}`, url: s };
}

function backendFromUrl(rawId: unknown, rawUrl: unknown, idSub: string, urlSub: string): Parsed<{ id: string; url: string }> {
  const problems: ValueProblem[] = [];
  const u = checkBackendUrl(rawUrl);
  if ('message' in u) problems.push({ sub: urlSub, message: u.message });
  let id: string | undefined;
  if (rawId !== undefined && rawId !== null && rawId !== '') {
    const s = scalarString(rawId);
    if (s === undefined || !BACKEND_ID.test(s)) {
      problems.push({ sub: idSub, message: `${show(rawId)} is not a valid backend id (${BACKEND_ID_HINT})` });
    } else id = s;
  } else if (!('message' in u)) {
    id = u.id;
    if (!BACKEND_ID.test(id)) {
      problems.push({ sub: idSub, message: `default id ${show(id)} from the URL is not a valid backend id; give an explicit id (${BACKEND_ID_HINT})` });
    }
  }
  if (problems.length || id === undefined || 'message' in u) return { ok: false, problems };
  return ok({ id, url: u.url });
}

/** A backend from a URL and optional id, other fields at their defaults (used for wsbalancer's backends). */
export function parseBackendRef(rawId: unknown, rawUrl: unknown, idSub: string, urlSub: string): Parsed<BackendSpec> {
  const p = backendFromUrl(rawId, rawUrl, idSub, urlSub);
  return p.ok ? ok({ ...p.value, weight: 1, standby: false, labels: {}, state: 'enabled' }) : p;
}

/** Splits "id=url" (the id part has no "/"), or returns the whole string as the url. */
export function splitIdUrl(entry: string): { id?: string; url: string } {
  const eq = entry.indexOf('=');
  if (eq > 0 && !entry.slice(0, eq).includes('/')) return { id: entry.slice(0, eq).trim(), url: entry.slice(eq + 1).trim() };
  return { url: entry.trim() };
}

function parseBackendEntry(raw: unknown, i: number): Parsed<BackendSpec> {
  const at = `[${i}]`;
  const base = { weight: 1, standby: false, labels: {}, state: 'enabled' as BackendState };
  if (typeof raw === 'string') {
    const { id, url } = splitIdUrl(raw);
    const p = backendFromUrl(id, url, `${at}.id`, `${at}.url`);
    return p.ok ? ok({ ...p.value, ...base }) : p;
  }
  if (!isPlainObject(raw)) return bad(`${show(raw)} is not a backend (use a map with url and optional id, weight, standby, labels, state)`, at);
  const problems: ValueProblem[] = [];
  for (const k of Object.keys(raw)) {
    if (!BACKEND_KEYS.includes(k)) problems.push({ sub: `${at}.${k}`, message: `unknown key (a backend has ${BACKEND_KEYS.join(', ')})` });
  }
  let idUrl: { id: string; url: string } | undefined;
  if (raw.url === undefined) problems.push({ sub: `${at}.url`, message: 'is required (a ws:// or wss:// URL)' });
  else {
    const p = backendFromUrl(raw.id, raw.url, `${at}.id`, `${at}.url`);
    if (p.ok) idUrl = p.value;
    else problems.push(...p.problems);
  }
  const spec: BackendSpec = { id: '', url: '', ...base, labels: {} };
  const field = <T>(key: string, t: ValueType<T>, set: (v: T) => void) => {
    if (raw[key] === undefined || raw[key] === null) return;
    const p = t.parse(raw[key], 'yaml');
    if (p.ok) set(p.value);
    else for (const pr of p.problems) problems.push({ sub: `${at}.${key}${pr.sub ?? ''}`, message: pr.message });
  };
  field('weight', int(1, 1000), (v) => (spec.weight = v));
  field('standby', bool(), (v) => (spec.standby = v));
  field('state', oneOf(BACKEND_STATES), (v) => (spec.state = v));
  field('resolve', bool(), (v) => (spec.resolve = v));
  if (raw.labels !== undefined && raw.labels !== null) {
    if (!isPlainObject(raw.labels)) problems.push({ sub: `${at}.labels`, message: `${show(raw.labels)} is not a map of strings` });
    else {
      for (const [k, v] of Object.entries(raw.labels)) {
        const s = scalarString(v);
        if (s === undefined) problems.push({ sub: `${at}.labels.${k}`, message: `${show(v)} is not a string` });
        else spec.labels[k] = s;
      }
    }
  }
  if (problems.length || !idUrl) return { ok: false, problems };
  return ok({ ...spec, ...idUrl });
}

/**
 * Backends: a YAML list of {id?, url, weight?, standby?, labels?, state?}; in env a comma-separated
 * list of `url` or `id=url`. Id uniqueness is checked by the loader on the final list.
 */
export function backendList(): ValueType<BackendSpec[]> {
  return {
    describe: 'list of backends',
    parse(raw, origin) {
      let entries: unknown[];
      if (raw === null) entries = [];
      else if (Array.isArray(raw)) entries = raw;
      else if (typeof raw === 'string' && origin === 'env') {
        entries = raw
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
      } else return bad(`${show(raw)} is not a list of backends`);
      const out: BackendSpec[] = [];
      const problems: ValueProblem[] = [];
      entries.forEach((e, i) => {
        const p = parseBackendEntry(e, i);
        if (p.ok) out.push(p.value);
        else problems.push(...p.problems);
      });
      return problems.length ? { ok: false, problems } : ok(out);
    },
    format: (v) => (v.length === 0 ? '[]' : v.map((b) => `${b.id}=${b.url}`).join(', ')),
  };
}

// ---------------------------------------------------------------------------------------------
// Compile-time description of SidecarConfig's leaves

/** Values stored whole under one key (not descended into). */
type Leaf = string | number | boolean | readonly unknown[] | HostPort | HashKey;

type LeafPaths<T, P extends string = ''> = {
  [K in keyof T & string]: T[K] extends Leaf
    ? `${P}${K}`
    : NonNullable<T[K]> extends object
      ? LeafPaths<NonNullable<T[K]>, `${P}${K}.`>
      : never;
}[keyof T & string];

/** Every dotted leaf path of SidecarConfig, e.g. "failover.backoff.initial". */
export type ConfigPath = LeafPaths<SidecarConfig>;

export type PathValue<T, P extends string> = P extends `${infer H}.${infer R}`
  ? H extends keyof T
    ? PathValue<NonNullable<T[H]>, R>
    : never
  : P extends keyof T
    ? T[P]
    : never;

export interface KeyDef<P extends ConfigPath = ConfigPath> {
  /** Dotted path in the YAML file / SidecarConfig. */
  readonly path: P;
  /** Environment variable: BATON_ + the path upper-snake-cased. */
  readonly env: string;
  readonly type: ValueType<PathValue<SidecarConfig, P>>;
  readonly default: PathValue<SidecarConfig, P>;
  /** One line for docs/config.md. */
  readonly doc: string;
  /** Must name an existing, readable file when not empty. */
  readonly file?: boolean;
  /** A change only takes effect after a restart (not on reload). */
  readonly restart?: boolean;
}

/** "failover.backoff.initial" → "BATON_FAILOVER_BACKOFF_INITIAL"; "session.pingInterval" → "BATON_SESSION_PING_INTERVAL". */
export function envName(path: string): string {
  return `BATON_${path
    .split('.')
    .map((seg) => seg.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2'))
    .join('_')
    .toUpperCase()}`;
}

function key<P extends ConfigPath>(
  path: P,
  type: ValueType<PathValue<SidecarConfig, P>>,
  dflt: PathValue<SidecarConfig, P>,
  doc: string,
  flags: { file?: boolean; restart?: boolean } = {},
): KeyDef<P> {
  return { path, env: envName(path), type, default: dflt, doc, ...flags };
}

type Missing<T extends readonly KeyDef<any>[]> = Exclude<ConfigPath, T[number]['path']>;

/** Fails to compile (naming the missing paths) unless every leaf of SidecarConfig has an entry. */
function table<const T extends readonly KeyDef<any>[]>(
  defs: T & ([Missing<T>] extends [never] ? unknown : { missingKeys: Missing<T> }),
): readonly KeyDef[] {
  return defs as unknown as readonly KeyDef[];
}

// ---------------------------------------------------------------------------------------------
// The table

const S = 1000;
const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** One-line descriptions of the top-level sections, for the docs. */
export const SECTIONS: Readonly<Record<string, string>> = {
  listen: 'The client-facing WebSocket listener.',
  admin: 'The admin HTTP listener (health, metrics, backend control).',
  logLevel: 'Logging.',
  session: 'Per-session limits, keep-alive and header handling.',
  failover: 'Keeping a client session open when its backend goes away.',
  balancer: 'Choosing a backend for a new session.',
  health: 'Passive and active backend health.',
  upstream: 'Connections from the sidecar to backends.',
  codec: 'Protocol-aware sessions (OCPP-J, JSON-RPC): replay of unanswered requests after a failover, duplicate answers dropped. See docs/codecs.md.',
  shutdown: 'Graceful shutdown.',
  dns: 'Backends named by a host name that resolves to several addresses (a headless Service without the operator): one backend per address, re-resolved. See docs/dns.md.',
  backends: 'The backend list.',
};

export const SCHEMA: readonly KeyDef[] = table([
  key('listen.address', address(), { host: '0.0.0.0', port: 8080 }, 'Address the client-facing WebSocket listener binds.', { restart: true }),
  key('listen.tls.certFile', file(), '', 'PEM certificate chain; with keyFile, turns on TLS (wss://). Empty = plain ws://.', { file: true, restart: true }),
  key('listen.tls.keyFile', file(), '', 'PEM private key for certFile.', { file: true, restart: true }),
  key('listen.tls.caFile', file(), '', 'Optional CA bundle to verify client certificates against (mTLS); needs certFile and keyFile.', { file: true, restart: true }),
  key('listen.maxHeaderBytes', size({ min: 1 * KiB, max: 16 * MiB }), 16 * KiB, 'Largest upgrade request header block accepted.', { restart: true }),
  key('listen.requestTimeout', duration({ min: 1 }), 10 * S, 'Time a client has to send its complete upgrade request.', { restart: true }),
  key('listen.perMessageDeflate.enabled', bool(), true, 'Offer permessage-deflate compression to clients. A client that takes it is relayed message by message (ws compresses each); without it frames pass through verbatim, the cheaper path (docs/performance.md).', { restart: true }),
  key('listen.perMessageDeflate.threshold', size({ max: 1 * GiB }), 1 * KiB, 'Messages smaller than this are sent uncompressed.', { restart: true }),

  key('admin.address', address(), { host: '127.0.0.1', port: 9901 }, 'Address the admin HTTP listener binds; a non-loopback address needs admin.token or admin.tokenFile.', { restart: true }),
  key('admin.tokenFile', file(), '', 'File holding the bearer token required by the admin API.', { file: true }),
  key('admin.token', str(), '', 'Bearer token required by the admin API (prefer tokenFile or the env var over the YAML file).'),
  key('admin.metricsRequireToken', bool(), false, 'Require the token for /metrics too (/healthz and /readyz never need it).'),

  key('logLevel', oneOf(LOG_LEVELS), 'info', 'Log level.'),

  key('session.maxMessageBytes', size({ min: 1, max: 1 * GiB }), 16 * MiB, 'Largest message accepted on either leg; larger closes the session with 1009.', { restart: true }),
  key('session.highWaterMarkBytes', size({ min: 1 * KiB, max: 1 * GiB }), 1 * MiB, "Bytes queued towards one leg before the other leg's socket is paused."),
  key('session.pingInterval', duration({ min: 1 }), 10 * S, 'Interval between keep-alive pings on each leg.'),
  key('session.pongTimeout', duration({ min: 1 }), 5 * S, 'A leg whose pong is this late is considered dead.'),
  key('session.idleTimeout', duration(), 0, 'Close a session with no messages in either direction for this long; 0 = never.'),
  key('session.maxLifetime', duration(), 0, 'Migrate a session (planned) after this long; 0 = never.'),
  key('session.trustForwardedFor', bool(), true, 'Append to an incoming X-Forwarded-For instead of replacing it.'),
  key('session.passRequestHeaders', headerList(), [], 'Request headers passed to the backend; empty = every header that is not blocked.'),
  key('session.blockRequestHeaders', headerList(), [], 'Request headers never passed to the backend.'),
  key('session.passResponseHeaders', headerList(), [], "Backend 101 response headers copied into the client's 101."),

  key('failover.closeCodes', intList(1000, 4999), [1001, 1005, 1006, 1011, 1012, 1013], 'Backend close codes (and abnormal closes) that trigger failover instead of closing the client.'),
  key('failover.deadline', duration({ min: 1 }), 30 * S, 'Give up reconnecting a session to a backend after this long.'),
  key('failover.bufferMaxBytes', size({ max: 4 * GiB }), 16 * MiB, 'Client messages buffered during failover, in bytes; more closes the session.'),
  key('failover.bufferMaxMessages', int(0, 1_000_000), 4096, 'Client messages buffered during failover, in messages; more closes the session.'),
  key('failover.backoff.initial', duration({ min: 1 }), 50, 'First delay between reconnect attempts.'),
  key('failover.backoff.max', duration({ min: 1 }), 5 * S, 'Largest delay between reconnect attempts.'),
  key('failover.backoff.multiplier', float(1, 100), 2, 'Delay growth factor per attempt.'),
  key('failover.backoff.jitter', float(0, 1), 0.2, 'Random spread applied to each delay (0.2 = ±20%).'),
  key('failover.reconnectHeader.name', headerName(), 'X-Balancer-Reconnect', 'Header added to the upgrade request of a failover dial.'),
  key('failover.reconnectHeader.value', str({ check: (s) => !/[\r\n\0]/.test(s), expected: 'a valid header value' }), '1', 'Value of that header.'),
  key('failover.mode', oneOf(['resume', 'close'] as const), 'resume', 'resume: a session moves to another backend (its protocol state replayed by its codec); close: it is closed with 1012 instead, so the client reconnects.'),
  key('failover.drainTimeout', duration({ min: 1 }), 10 * S, 'Planned migration: the longest the old backend is given to finish (answer, go quiet, close) before the session switches anyway.'),
  key('migration.quietPeriod', duration({ min: 1 }), 300, 'Planned migration without a codec: the old backend is done once it has sent nothing for this long; set it above its slowest answer.'),
  key('migration.maxQuietWait', duration({ min: 1 }), 2 * S, 'Planned migration without a codec: a backend that never goes quiet (a live feed) is let go after this long; what it sends after is lost.'),

  key('balancer.algorithm', oneOf(['least-sessions', 'round-robin', 'consistent-hash'] as const), 'least-sessions', 'How a new session picks a backend.'),
  key('balancer.hashKey', hashKey(), { source: 'path', name: '' }, 'What consistent-hash hashes: path, header:NAME or query:NAME.'),
  key('balancer.slowStart', duration(), 0, "A new or recovered backend's weight ramps up over this long; 0 = off."),

  key('health.breaker.threshold', int(0, 1000), 5, 'Consecutive failures that open the circuit breaker; 0 = breaker off.'),
  key('health.breaker.openBase', duration({ min: 1 }), 1 * S, 'First open period of the breaker (doubles per re-open).'),
  key('health.breaker.openMax', duration({ min: 1 }), 30 * S, 'Longest open period of the breaker.'),
  key('health.phi.threshold', float(0.5, 1000), 16, 'Phi accrual suspicion level at which a backend is considered failed.'),
  key('health.phi.windowSize', int(2, 100_000), 100, 'Heartbeat intervals remembered by the phi detector.'),
  key('health.phi.minStdDev', duration({ min: 1 }), 500, 'Lower bound of the heartbeat interval standard deviation.'),
  key('health.phi.acceptablePause', duration(), 0, 'Extra pause tolerated before suspicion grows (e.g. GC pauses).'),
  key('health.maxEjectedPercent', int(0, 100), 50, 'Never eject more than this percentage of backends at once.'),
  key('health.probe.type', oneOf(['none', 'websocket', 'http'] as const), 'none', 'Active health probe; none = passive only.'),
  key('health.probe.interval', duration({ min: 1 }), 5 * S, 'Time between probes.'),
  key('health.probe.timeout', duration({ min: 1 }), 2 * S, 'A probe slower than this fails.'),
  key('health.probe.path', str({ check: (s) => s.startsWith('/'), expected: 'a path starting with "/"' }), '/', 'Path probed on each backend.'),

  key('upstream.connectTimeout', duration({ min: 1 }), 5 * S, 'TCP (and TLS) connect timeout towards a backend.'),
  key('upstream.handshakeTimeout', duration({ min: 1 }), 10 * S, 'WebSocket upgrade timeout towards a backend.'),
  key('upstream.perMessageDeflate', bool(), false, 'Offer permessage-deflate to backends.'),
  key('upstream.tls.caFile', file(), '', 'CA bundle for verifying wss:// backends; empty = system CAs.', { file: true }),
  key('upstream.tls.certFile', file(), '', 'Client certificate for wss:// backends (mTLS); needs keyFile.', { file: true }),
  key('upstream.tls.keyFile', file(), '', 'Private key for upstream.tls.certFile.', { file: true }),
  key('upstream.tls.servername', str(), '', "SNI and certificate name check; empty = the URL's host."),
  key('upstream.tls.rejectUnauthorized', bool(), true, 'Verify backend certificates.'),
  key('upstream.keepAlive.enabled', bool(), false, 'TCP keep-alive on backend connections. Off by default: session pings (session.pingInterval) find a dead backend sooner, and it costs four system calls per dial.'),
  key('upstream.keepAlive.initialDelay', duration(), 30 * S, 'Idle time before the first TCP keep-alive probe.'),
  key('upstream.localAddress', str({ check: (s) => s === '' || isIP(s) !== 0, expected: 'an IP address (or empty)', describe: 'IP address' }), '', "Source address for backend connections; empty = the OS's choice."),

  key('codec.default', codecName(), 'auto', 'Codec for sessions whose path matches no codec.paths entry: auto (chosen by the subprotocol the backend accepted, or the request: socket.io), none, stateful (a protocol that cannot be resumed: 1012 at a backend change), a built-in codec by name, or module:/path/to/codec.js.', { restart: true }),
  key('codec.paths', listOf(codecRoute(), 'list of prefix=codec'), [], 'Codec by path prefix, e.g. ["/ocpp=ocpp", "/rpc=json-rpc"]; the longest matching prefix wins.', { restart: true }),
  key('codec.maxTrackedRequests', int(1, 1_000_000), 1000, 'Unanswered requests tracked per session; beyond it the oldest is no longer tracked (counted).'),
  key('codec.maxTrackedBytes', size({ min: 1, max: 1 * GiB }), 1 * MiB, 'Bytes of unanswered requests kept per session for replay; beyond it the oldest is no longer tracked (counted).'),
  key('codec.requestTimeout', duration({ min: 1 }), 60 * S, 'A request unanswered this long is no longer tracked (counted as an unanswered timeout).'),
  key('codec.maxStateFrames', int(1, 100_000), 256, "Frames of a session's protocol state kept for replay (a login, subscriptions); past it the session cannot be resumed (1012 at its next backend change)."),
  key('codec.maxStateBytes', size({ min: 1, max: 1 * GiB }), 256 * KiB, "Bytes of a session's protocol state kept for replay; past it the session cannot be resumed."),
  key('codec.resumeTimeout', duration({ min: 1 }), 5 * S, "The longest a new backend may take to answer the replay of a session's protocol state; then it counts as failed."),
  key('codec.orphanAnswers', oneOf(['forward', 'drop'] as const), 'forward', "A client's answer to a call from a backend that has died since: forward it to the new backend, or drop it."),
  key('shutdown.grace', duration(), 30 * S, 'On SIGTERM, time given to sessions to migrate or finish before they are closed.'),

  key('dns.resolve', bool(), false, 'Default of backends[].resolve: expand a backend whose URL host is a name to one backend per address (A and AAAA), re-resolved.'),
  key('dns.refresh', duration({ min: 100, max: 24 * 3600 * S }), 30 * S, 'Re-resolve interval when an answer gives no TTL (or TTL 0); bounded by minTtl and maxTtl.'),
  key('dns.minTtl', duration({ min: 100, max: 24 * 3600 * S }), 1 * S, 'A name is re-resolved no sooner than this, whatever its TTL; also the first retry after a failed resolution.'),
  key('dns.maxTtl', duration({ min: 100, max: 24 * 3600 * S }), 60 * S, 'A name is re-resolved no later than this, whatever its TTL; also the longest retry interval while resolution fails.'),
  key('dns.servers', listOf(str({ check: (s) => dnsServer(s), expected: 'an IP address or ip:port', describe: 'ip[:port]' }), 'list of ip[:port]'), [], "DNS servers asked; empty = the system's (resolv.conf)."),
  key('dns.timeout', duration({ min: 1, max: 60 * S }), 5 * S, 'A resolution slower than this fails (the last good answer is kept).'),
  key('backends', backendList(), [], 'Where sessions go; format below.'),
]);

// Sanity: env names must be unique (two paths must never upper-snake-case to the same name).
{
  const seen = new Map<string, string>();
  for (const k of SCHEMA) {
    const other = seen.get(k.env);
    if (other !== undefined) throw new Error(`config schema: ${k.path} and ${other} share env name ${k.env}`);
    seen.set(k.env, k.path);
  }
}

export const SCHEMA_BY_PATH: ReadonlyMap<string, KeyDef> = new Map(SCHEMA.map((k) => [k.path, k]));

export function keyDef<P extends ConfigPath>(path: P): KeyDef<P> {
  return SCHEMA_BY_PATH.get(path) as unknown as KeyDef<P>;
}

/** Keys whose change needs a restart (fixed when the listeners are created). */
/** Pairs of keys whose values must be in order (first ≤ second), with why. */
export const ORDERED_KEYS: ReadonlyArray<readonly [ConfigPath, ConfigPath, string]> = [
  ['failover.backoff.initial', 'failover.backoff.max', 'the first reconnect delay must not exceed the largest'],
  ['health.breaker.openBase', 'health.breaker.openMax', 'the first open period must not exceed the longest'],
  ['migration.quietPeriod', 'migration.maxQuietWait', 'the quiet period must not exceed the longest wait for it'],
  ['dns.minTtl', 'dns.maxTtl', 'the shortest re-resolve interval must not exceed the longest'],
];

export const RESTART_KEYS: readonly string[] = SCHEMA.filter((k) => k.restart).map((k) => k.path);

// ---------------------------------------------------------------------------------------------
// Shared between the loader and the wsbalancer aliases

/** Precedence layers, lowest first: defaults < wsbalancer YAML keys < YAML < wsbalancer env < BATON_ env. */
export const Layer = { Default: 0, WsbalancerYaml: 1, Yaml: 2, WsbalancerEnv: 3, Env: 4 } as const;
export type Layer = (typeof Layer)[keyof typeof Layer];

/** One value for one key from one source. */
export interface Assignment {
  path: ConfigPath;
  value: unknown;
  layer: Layer;
  /** How problems about this value name it: "failover.deadline", "BATON_FAILOVER_DEADLINE (failover.deadline)". */
  label: string;
  /** The name the user wrote (YAML key or env var), for override warnings. */
  name: string;
  /** 'append' adds list items to whatever lower layer won (wsbalancer's BE_URLS / BE_PASS_HEADERS). */
  mode?: 'set' | 'append';
  /** For backend lists: a label per entry, for duplicate-id messages. */
  itemLabels?: string[];
}

/** Formats a value problem: `<label><sub>: <message>` or, from env, `ENV (<path><sub>): <message>`. */
export function problemText(name: string, path: string, p: ValueProblem, viaAlias: boolean): string {
  const sub = p.sub ?? '';
  return viaAlias ? `${name} (${path}${sub}): ${p.message}` : `${path}${sub}: ${p.message}`;
}
