// A backend entry, defined once: the admin API takes it as JSON (BackendInputSchema), the config
// file and BATON_BACKENDS in YAML/env spellings (backendList), the operator compares with its
// defaults (BACKEND_DEFAULTS) and the CRD takes its weight.
import { z } from 'zod';
import { BACKEND_STATES } from '../vocabulary.js';
import { BACKEND_ID, BACKEND_ID_HINT, backendId, backendUrl, bool, checkBackendUrl, int, isPlainObject, lenient, oneOf, show, splitList, stringMap, VALUE_INFO } from '../values.js';

/** The fields of a backend besides its id, with their defaults. */
export const BACKEND_FIELDS = {
  /** ws:// or wss:// URL; the client's path and query are appended to its path. */
  url: backendUrl(),
  /** Relative share of new sessions. */
  weight: int(1, 1000).default(1),
  /** Only used when no non-standby backend is usable. */
  standby: bool().default(false),
  labels: stringMap().default({}),
  state: oneOf(BACKEND_STATES).default('enabled'),
};

/** A backend as the admin API takes it (JSON: no YAML spellings); omitted fields take their defaults. */
export const BackendInputSchema = z.strictObject({ id: backendId(), ...BACKEND_FIELDS });
/**
 * A backend as the sidecar holds it. Two fields come from the sidecar alone, never the admin API:
 * `resolve` from a config file entry (expand its URL's host name, docs/dns.md) and `address` on a
 * backend that expansion made (it dials that IP; Host, SNI and the certificate check keep the name).
 */
export type BackendSpec = z.output<typeof BackendInputSchema> & { resolve?: boolean; address?: string };

const optionalFields = z.object(BACKEND_FIELDS).omit({ url: true });
export const BACKEND_DEFAULTS: Omit<BackendSpec, 'id' | 'url'> = optionalFields.parse({});
/** The keys of a config file's entry: the admin API's, and `resolve`. */
const BACKEND_KEYS = [...Object.keys(BackendInputSchema.shape), 'resolve'];
const resolveField = lenient(bool());

/** Splits "id=url" (the id part has no "/"), or returns the whole string as the url. */
export function splitIdUrl(entry: string): { id?: string; url: string } {
  const eq = entry.indexOf('=');
  if (eq > 0 && !entry.slice(0, eq).includes('/')) return { id: entry.slice(0, eq).trim(), url: entry.slice(eq + 1).trim() };
  return { url: entry.trim() };
}

type Fail = (message: string, path: PropertyKey[]) => void;

/**
 * A backend from a URL and optional id, other fields at their defaults: the id defaults to the URL's
 * host:port. `fail` gets each problem with the field's name.
 */
export function backendRef(rawId: unknown, rawUrl: unknown, fail: Fail): BackendSpec | undefined {
  const u = checkBackendUrl(rawUrl);
  if ('message' in u) fail(u.message, ['url']);
  let id: string | undefined;
  if (rawId !== undefined && rawId !== null && rawId !== '') {
    const p = lenient(backendId()).safeParse(rawId);
    if (p.success) id = p.data;
    else fail(p.error.issues[0]!.message, ['id']);
  } else if (!('message' in u)) {
    if (BACKEND_ID.test(u.id)) id = u.id;
    else fail(`default id ${show(u.id)} from the URL is not a valid backend id; give an explicit id (${BACKEND_ID_HINT})`, ['id']);
  }
  return id === undefined || 'message' in u ? undefined : { id, url: u.url, ...structuredClone(BACKEND_DEFAULTS) };
}

/** A config file's backend: the JSON form with YAML spellings, an optional id, or a string "url" / "id=url". */
function backendEntry(raw: unknown, fail: Fail): BackendSpec | undefined {
  if (typeof raw === 'string') {
    const { id, url } = splitIdUrl(raw);
    return backendRef(id, url, fail);
  }
  if (!isPlainObject(raw)) {
    fail(`${show(raw)} is not a backend (use a map with url and optional id, weight, standby, labels, state, resolve)`, []);
    return undefined;
  }
  let ok = true;
  for (const k of Object.keys(raw)) {
    if (!BACKEND_KEYS.includes(k)) {
      ok = false;
      fail(`unknown key (a backend has ${BACKEND_KEYS.join(', ')})`, [k]);
    }
  }
  const failHere: Fail = (m, p) => {
    ok = false;
    fail(m, p);
  };
  let ref: BackendSpec | undefined;
  if (raw.url === undefined) failHere('is required (a ws:// or wss:// URL)', ['url']);
  else ref = backendRef(raw.id, raw.url, failHere);
  const spec: Record<string, unknown> = {};
  for (const [k, type] of Object.entries(optionalFields.shape)) {
    const p = lenient(type).safeParse(raw[k] ?? undefined);
    if (p.success) spec[k] = p.data;
    else for (const i of p.error.issues) failHere(i.message, [k, ...i.path]);
  }
  if (raw.resolve !== undefined && raw.resolve !== null) {
    const p = resolveField.safeParse(raw.resolve);
    if (p.success) spec.resolve = p.data;
    else for (const i of p.error.issues) failHere(i.message, ['resolve', ...i.path]);
  }
  return ok && ref ? { ...ref, ...spec } : undefined;
}

/**
 * Backends: a YAML list of {id?, url, weight?, standby?, labels?, state?} or "id=url" strings; in
 * env a comma-separated list of `url` or `id=url`. Id uniqueness is checked by the loader on the
 * final list.
 */
export function backendList(): z.ZodType<BackendSpec[], unknown> {
  const type = z.unknown().transform((raw, ctx): BackendSpec[] => {
    const entries = raw === null ? [] : raw;
    if (!Array.isArray(entries)) {
      ctx.addIssue({ code: 'custom', message: `${show(raw)} is not a list of backends`, input: raw });
      return z.NEVER;
    }
    const out: BackendSpec[] = [];
    entries.forEach((e, i) => {
      const b = backendEntry(e, (message, path) => ctx.addIssue({ code: 'custom', message, path: [i, ...path], input: e }));
      if (b) out.push(b);
    });
    return out;
  });
  VALUE_INFO.add(type, {
    describe: 'list of backends',
    format: (v: BackendSpec[]) => (v.length === 0 ? '[]' : v.map((b) => `${b.id}=${b.url}`).join(', ')),
    fromEnv: splitList,
  });
  return type;
}
