// The domain value types of Baton's settings (sidecar config, operator options, admin contract,
// CRD) as zod schemas. Each schema accepts the JSON form of its value (what the admin API and the
// CRD take); VALUE_INFO adds how YAML and environment strings spell it (`read`, `fromEnv`), a
// short description for the docs and how a value is written back (`format`). Every message starts
// with the offending value, e.g. `"30 parsecs" is not a duration (use e.g. 250ms, ...)`.
import { isIP } from 'node:net';
import { z } from 'zod';
import { BUILTIN_CODECS } from './vocabulary.js';

export interface ValueInfo {
  /** Short description for the docs, e.g. "duration ≥ 1ms", "integer 1..1000". */
  readonly describe: string;
  /** How a value (e.g. the default) is written in the docs and in an env var. */
  readonly format: (value: never) => string;
  /** YAML/env spellings → the JSON value the schema takes ("10" → 10, "yes" → true). */
  readonly read?: (raw: unknown) => unknown;
  /** An environment string → what YAML would hold, where the two differ (a list of backends). */
  readonly fromEnv?: (raw: string) => unknown;
}

export const VALUE_INFO = z.registry<ValueInfo>();

/** One problem with a value; `sub` is appended to its key (e.g. "[2].url"). */
export interface ValueProblem {
  sub?: string;
  message: string;
}

export type Read<T> = { ok: true; value: T } | { ok: false; problems: ValueProblem[] };

function info(type: z.ZodType): ValueInfo {
  const i = VALUE_INFO.get(type);
  if (!i) throw new Error('not a value type of common/values.ts');
  return i;
}

/** YAML/env spellings of `type` (or of the type it gives a default to), when it has them. */
const spellings = (type: z.ZodType): Partial<ValueInfo> =>
  VALUE_INFO.get(type) ?? (type instanceof z.ZodDefault ? spellings(type.unwrap() as z.ZodType) : {});

export const describeValue = (type: z.ZodType): string => info(type).describe;
export const formatValue = (type: z.ZodType, value: unknown): string => info(type).format(value as never);

const lenientCache = new WeakMap<z.ZodType, z.ZodType>();

/** `type` taking YAML/env spellings too: the form used for config files and env vars. */
export function lenient<T extends z.ZodType>(type: T): z.ZodType<z.output<T>, unknown> {
  const read = spellings(type).read;
  if (!read) return type as z.ZodType<z.output<T>, unknown>;
  let l = lenientCache.get(type);
  if (!l) {
    l = z.unknown().transform((raw, ctx) => {
      const v = read(raw);
      const r = type.safeParse(v);
      if (r.success) return r.data;
      // Messages start with the value: name it as written ("2" from env, not 2).
      const shown = show(v);
      for (const i of r.error.issues) {
        const message = i.path.length === 0 && v !== raw && i.message.startsWith(shown) ? show(raw) + i.message.slice(shown.length) : i.message;
        ctx.addIssue({ code: 'custom', message, path: i.path, input: raw });
      }
      return z.NEVER;
    });
    lenientCache.set(type, l);
  }
  return l as z.ZodType<z.output<T>, unknown>;
}

/** "[2].url" for the issue path [2, "url"]. */
export const subPath = (path: readonly PropertyKey[]): string =>
  path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');

export function problemsOf(error: z.ZodError): ValueProblem[] {
  return error.issues.map((i) => (i.path.length ? { sub: subPath(i.path), message: i.message } : { message: i.message }));
}

/** A value from YAML ('yaml') or an environment variable ('env'), validated by its type. */
export function readValue<T extends z.ZodType>(type: T, raw: unknown, origin: 'yaml' | 'env'): Read<z.output<T>> {
  const fromEnv = spellings(type).fromEnv;
  const r = lenient(type).safeParse(origin === 'env' && fromEnv && typeof raw === 'string' ? fromEnv(raw) : raw);
  return r.success ? { ok: true, value: r.data } : { ok: false, problems: problemsOf(r.error) };
}

function value<T extends z.ZodType>(type: T, i: ValueInfo): T {
  VALUE_INFO.add(type, i);
  return type;
}

/**
 * A value written as text (a duration, an address): `parse` returns it, or calls `fail` for each
 * problem (and returns what `fail` returns).
 */
function textual<T>(i: ValueInfo, parse: (raw: unknown, fail: (message: string, path?: PropertyKey[]) => never) => T): z.ZodType<T, unknown> {
  return value(
    z.unknown().transform((raw, ctx) =>
      parse(raw, (message, path = []) => {
        ctx.addIssue({ code: 'custom', message, path, input: raw });
        return z.NEVER;
      }),
    ),
    i,
  );
}

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

export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
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

const DURATION_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
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

/** Milliseconds. */
export function duration(opts: { min?: number; max?: number } = {}): z.ZodType<number, unknown> {
  const min = opts.min ?? 0;
  const max = opts.max ?? MAX_DURATION_MS;
  return textual({ describe: min > 0 ? `duration ≥ ${formatDuration(min)}` : 'duration (0 allowed)', format: formatDuration }, (raw, fail) => {
    const ms = parseDuration(raw);
    if (ms === undefined) {
      const negative = (typeof raw === 'number' && raw < 0) || (typeof raw === 'string' && raw.trim().startsWith('-'));
      return fail(`${show(raw)} is ${negative ? 'negative; a duration must be ≥ 0' : 'not a duration'} (${DURATION_HINT})`);
    }
    if (ms < min) return fail(`${show(raw)} is too short: must be at least ${formatDuration(min)}`);
    if (ms > max) return fail(`${show(raw)} is too long: must be at most ${formatDuration(max)}`);
    return ms;
  });
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

/** Bytes. */
export function size(opts: { min?: number; max?: number } = {}): z.ZodType<number, unknown> {
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  const describe = max === Number.MAX_SAFE_INTEGER ? (min > 0 ? `size ≥ ${formatSize(min)}` : 'size') : `size ${formatSize(min)}..${formatSize(max)}`;
  return textual({ describe, format: formatSize }, (raw, fail) => {
    const n = parseSize(raw);
    if (n === undefined) {
      const hint = typeof raw === 'string' && /\d\s*[kKmMgG][bB]$/.test(raw.trim()) ? '; binary units only: KiB, MiB, GiB' : '';
      return fail(`${show(raw)} is not a size (${SIZE_HINT}${hint})`);
    }
    if (n < min || n > max) return fail(`${show(raw)} is out of range: must be ${formatSize(min)}..${formatSize(max)}`);
    return n;
  });
}

// --- numbers, booleans, enums, strings ---------------------------------------------------------

function readNumber(raw: unknown): unknown {
  if (typeof raw === 'string' && /^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$/.test(raw)) return Number(raw);
  return raw;
}

function number(kind: 'an integer' | 'a number', min: number, max: number): z.ZodNumber {
  const n = z.number({ error: (iss) => (iss.code === 'invalid_type' ? `${show(iss.input)} is not ${kind}` : `${show(iss.input)} is out of range: must be ${min}..${max}`) });
  return (kind === 'an integer' ? n.int() : n).min(min).max(max);
}

export const int = (min: number, max: number): z.ZodNumber =>
  value(number('an integer', min, max), { describe: `integer ${min}..${max}`, format: String, read: readNumber });

export const float = (min: number, max: number): z.ZodNumber =>
  value(number('a number', min, max), { describe: `number ${min}..${max}`, format: String, read: readNumber });

const TRUE_WORDS = new Set(['true', '1', 'yes']);
const FALSE_WORDS = new Set(['false', '0', 'no']);

export const bool = (): z.ZodBoolean =>
  value(z.boolean({ error: (iss) => `${show(iss.input)} is not a boolean (use true/false, 1/0 or yes/no)` }), {
    describe: 'boolean',
    format: String,
    read: (raw) => {
      const s = typeof raw === 'boolean' ? undefined : scalarString(raw)?.trim().toLowerCase();
      return s !== undefined && TRUE_WORDS.has(s) ? true : s !== undefined && FALSE_WORDS.has(s) ? false : raw;
    },
  });

/** One of `values`; YAML and env spellings match case-insensitively. */
export const oneOf = <const V extends string>(values: readonly V[]): z.ZodEnum<{ [K in V]: K }> =>
  value(z.enum(values as readonly [V, ...V[]], { error: (iss) => `${show(iss.input)} is not one of ${values.join(', ')}` }), {
    describe: `one of ${values.join(', ')}`,
    format: (v: string) => v,
    read: (raw) => (typeof raw === 'string' ? (values.find((v) => v.toLowerCase() === raw.trim().toLowerCase()) ?? raw) : raw),
  });

/** A string; `check` with `expected` (completing "... is not <expected>") narrows it. */
export function str(opts: { check?: (s: string) => boolean; expected?: string; describe?: string } = {}): z.ZodString {
  const s = z.string({ error: (iss) => `${show(iss.input)} is not a string` });
  const checked = opts.check ? s.refine(opts.check, { error: (iss) => `${show(iss.input)} is not ${opts.expected ?? 'valid'}` }) : s;
  return value(checked, { describe: opts.describe ?? 'string', format: (v: string) => JSON.stringify(v), read: (raw) => scalarString(raw) ?? raw });
}

/** A path to a file that must exist and be readable at load time (when not empty). */
export const file = (): z.ZodString => str({ describe: 'file path' });

/** A map of strings (backend labels); YAML scalars are taken as strings. */
export const stringMap = (): z.ZodRecord<z.ZodString, z.ZodString> =>
  value(z.record(z.string(), z.string({ error: (iss) => `${show(iss.input)} is not a string` }), { error: (iss) => `${show(iss.input)} is not a map of strings` }), {
    describe: 'map of strings',
    format: (v: Record<string, string>) => JSON.stringify(v),
    read: (raw) => (isPlainObject(raw) ? Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, scalarString(v) ?? v])) : raw),
  });

// --- lists -------------------------------------------------------------------------------------

/** A YAML list of scalars, or a comma-separated string (always the form in env). Entries trimmed, empty ones dropped. */
function listItems(raw: unknown): unknown[] | undefined {
  if (raw === null) return [];
  if (typeof raw === 'string') return splitList(raw);
  if (Array.isArray(raw)) return raw.map((r) => (typeof r === 'string' ? r.trim() : r)).filter((r) => r !== '');
  return undefined;
}

export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

/** A list of `item`s, duplicates dropped (by `key`). */
export function listOf<T>(item: z.ZodType<T>, describe: string, key: (v: T) => string = String): z.ZodType<T[], unknown> {
  return textual({ describe, format: (v: T[]) => (v.length === 0 ? '[]' : v.join(', ')) }, (raw, fail) => {
    const items = listItems(raw);
    if (!items) return fail(`${show(raw)} is not a list (use a YAML list, or comma-separated in env)`);
    const out = new Map<string, T>();
    let failed = false;
    items.forEach((r, index) => {
      const p = lenient(item).safeParse(r);
      if (!p.success) {
        failed = true;
        for (const i of p.error.issues) fail(i.message, [index, ...i.path]);
      } else if (!out.has(key(p.data))) out.set(key(p.data), p.data);
    });
    return failed ? z.NEVER : [...out.values()];
  });
}

export const intList = (min: number, max: number) => listOf(int(min, max), `list of integers ${min}..${max}`);

// --- codecs and headers ------------------------------------------------------------------------

const CODEC_NAMES: readonly string[] = ['auto', 'none', ...BUILTIN_CODECS];
const isCodecName = (s: string) => CODEC_NAMES.includes(s) || (s.startsWith('module:') && s.length > 'module:'.length);

/** auto | none | a built-in codec | module:/path/to/codec.js */
export const codecName = () =>
  str({ check: isCodecName, expected: `a codec (${CODEC_NAMES.join(', ')} or module:/path/to/codec.js)`, describe: 'codec name' });

/** "prefix=codec", e.g. "/ocpp=ocpp". */
export const codecRoute = () =>
  str({
    check: (s) => {
      const eq = s.indexOf('=');
      return eq > 0 && s.startsWith('/') && isCodecName(s.slice(eq + 1).trim());
    },
    expected: 'a "prefix=codec" entry such as "/ocpp=ocpp" (prefix starting with /)',
  });

/** RFC 7230 token characters (header field names). */
export const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A single header name (kept as written). */
export const headerName = () =>
  str({ check: (s) => HEADER_TOKEN.test(s), expected: 'a valid header name (RFC 7230 token: letters, digits and !#$%&\'*+-.^_`|~)', describe: 'header name' });

/** A list of header names: matched case-insensitively, stored lower-case, duplicates dropped. */
export const headerList = () => listOf(lenient(headerName()).transform((s) => s.toLowerCase()), 'list of header names');

/** A header value: no CR, LF or NUL. */
export const headerValue = () => str({ check: (s) => !/[\r\n\0]/.test(s), expected: 'a valid header value' });

// --- addresses ---------------------------------------------------------------------------------

export interface HostPort {
  host: string;
  port: number;
}

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

/** host:port, or the map {host, port}. */
export const address = () =>
  textual({ describe: 'host:port (port 0 = any free port)', format: formatHostPort }, (raw, fail): HostPort => {
    let text = raw;
    if (isPlainObject(raw)) {
      const extra = Object.keys(raw).find((k) => k !== 'host' && k !== 'port');
      if (extra !== undefined) return fail('unknown key (an address map has only host and port)', [extra]);
      const host = raw.host === undefined || raw.host === null ? '' : raw.host;
      const port = typeof raw.port === 'number' || typeof raw.port === 'string' ? String(raw.port) : '';
      text = typeof host === 'string' && port !== '' ? `${host.includes(':') ? `[${host}]` : host}:${port}` : undefined;
    }
    return parseHostPort(text) ?? fail(`${show(raw)} is not a host:port address (${ADDRESS_HINT})`);
  });

/** True for 127.0.0.0/8, ::1, ::ffff:127.x.x.x and "localhost". */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** An IP address, or empty. */
export const ipAddress = () => str({ check: (s) => s === '' || isIP(s) !== 0, expected: 'an IP address (or empty)', describe: 'IP address' });

/** A DNS server: an IP address, or ip:port. */
export const dnsServer = () =>
  str({
    check: (s) => {
      if (isIP(s) !== 0) return true;
      const hp = parseHostPort(s);
      return hp !== undefined && !s.startsWith(':') && isIP(hp.host) !== 0;
    },
    expected: 'an IP address or ip:port',
    describe: 'ip[:port]',
  });

// --- hash key ----------------------------------------------------------------------------------

export interface HashKey {
  source: 'path' | 'header' | 'query';
  /** Header or query parameter name (unused for `path`). */
  name: string;
}

const HASH_KEY_HINT = 'use path, header:NAME or query:NAME';

/** path | header:NAME | query:NAME, or the map {source, name}. */
export const hashKey = () =>
  textual(
    { describe: 'path | header:NAME | query:NAME (or a map {source, name})', format: (v: HashKey) => (v.source === 'path' ? 'path' : `${v.source}:${v.name}`) },
    (raw, fail): HashKey => {
      let source: unknown;
      let name: unknown;
      if (typeof raw === 'string') {
        const s = raw.trim();
        const i = s.indexOf(':');
        source = (i < 0 ? s : s.slice(0, i)).toLowerCase();
        if (i < 0 && source !== 'path') return fail(`${show(raw)} is not a hash key (${HASH_KEY_HINT})`);
        if (i >= 0 && source === 'path') return fail(`${show(raw)} is not a hash key (path takes no name; ${HASH_KEY_HINT})`);
        name = i < 0 ? '' : s.slice(i + 1);
      } else if (isPlainObject(raw)) {
        const unknown = Object.keys(raw).find((k) => k !== 'source' && k !== 'name');
        if (unknown !== undefined) return fail('unknown key (a hash key map has only source and name)', [unknown]);
        source = typeof raw.source === 'string' ? raw.source.trim().toLowerCase() : raw.source;
        name = raw.name;
      } else return fail(`${show(raw)} is not a hash key (${HASH_KEY_HINT})`);
      if (source === 'path') return { source: 'path', name: '' };
      if (source !== 'header' && source !== 'query') return fail(`${show(raw)} is not a hash key (${HASH_KEY_HINT})`);
      const n = scalarString(name)?.trim() ?? '';
      if (n === '') return fail(`${show(raw)} has no ${source} name (${HASH_KEY_HINT})`);
      if (source === 'header' && !HEADER_TOKEN.test(n)) return fail(`${show(raw)}: ${JSON.stringify(n)} is not a valid header name`);
      return { source, name: source === 'header' ? n.toLowerCase() : n };
    },
  );

// --- backend URLs and ids ----------------------------------------------------------------------

/** '/', '[' and ']' are for the ids DNS expansion makes: name/address:port, name/[v6]:port. */
export const BACKEND_ID = /^[A-Za-z0-9._:/[\]-]{1,128}$/;
export const BACKEND_ID_HINT = '1..128 characters from A-Z a-z 0-9 . _ : / [ ] -';

export const backendId = () =>
  value(z.string({ error: (iss) => `${show(iss.input)} is not a valid backend id (${BACKEND_ID_HINT})` }).regex(BACKEND_ID, { error: (iss) => `${show(iss.input)} is not a valid backend id (${BACKEND_ID_HINT})` }), {
    describe: 'backend id',
    format: (v: string) => v,
    read: (raw) => scalarString(raw) ?? raw,
  });

/** Checks a backend URL; returns the default id (host:port, default port filled in) or a message. */
export function checkBackendUrl(raw: unknown): { id: string; url: string } | { message: string } {
  if (typeof raw !== 'string' || raw.trim() === '') return { message: `${show(raw)} is not a URL (use e.g. ws://10.0.0.5:9000/path)` };
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
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return { message: `${show(raw)} has scheme ${u.protocol} — backend URLs must be ws:// or wss://` };
  if (s.includes('#')) return { message: `${show(raw)} has a #fragment; backend URLs must not` };
  if (u.hostname === '') return { message: `${show(raw)} has no host` };
  const port = u.port !== '' ? u.port : u.protocol === 'wss:' ? '443' : '80';
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { id: `${host}:${port}`, url: s };
}

/** A ws:// or wss:// URL (trimmed), no #fragment. */
export const backendUrl = () =>
  value(
    z.string({ error: (iss) => (checkBackendUrl(iss.input) as { message: string }).message }).transform((raw, ctx) => {
      const u = checkBackendUrl(raw);
      if (!('message' in u)) return u.url;
      ctx.addIssue({ code: 'custom', message: u.message, input: raw });
      return z.NEVER;
    }),
    { describe: 'ws:// or wss:// URL', format: (v: string) => v },
  );
