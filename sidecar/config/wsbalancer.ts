// wsbalancer compatibility: its YAML keys (top-level `server:` and `upstream.backends:`) and its
// environment names are accepted as aliases of Baton's own keys, so a wsbalancer deployment can
// switch without rewriting its config. See /docs/config.md ("wsbalancer aliases") for the table.
//
// Precedence (see load.ts): wsbalancer YAML keys < Baton YAML keys < wsbalancer env < BATON_ env.
// wsbalancer's defaults are NOT applied: an alias only matters when it is set.

import { z } from 'zod';
import { backendRef } from '../../common/config/backend.js';
import { Layer, SCHEMA, keyDef, problemText, type Assignment, type BackendSpec, type ConfigPath, type LogLevel, type WsbalancerName } from '../../common/config/schema.js';
import { bool, duration, int, lenient, readValue, show, size, splitList, subPath, type ValueProblem } from '../../common/values.js';

/** A wsbalancer name: of a Baton key (its `wsbalancer` entry in the schema), or accepted with no effect. */
export interface WsbalancerAlias extends WsbalancerName {
  /** The Baton key this sets, or null when it is accepted but has no effect. */
  readonly target: ConfigPath | null;
  /** Parser, when not the target key's own. */
  readonly type?: z.ZodType;
  /** Warning given whenever the alias is used (for no-effect keys). */
  readonly warning?: string;
}

const NO_EFFECT = 'accepted for wsbalancer compatibility but has no effect in Baton (ignored)';

const LOG_LEVEL_WORDS: Readonly<Record<string, LogLevel>> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  panic: 'fatal',
  fatal: 'fatal',
  silent: 'silent',
};

/** wsbalancer's TRACE, DEBUG, INFO, WARN, PANIC, FATAL (any case) → Baton's levels. */
const wsbLogLevel = z.unknown().transform((raw, ctx): LogLevel => {
  const lvl = typeof raw === 'string' ? LOG_LEVEL_WORDS[raw.trim().toLowerCase()] : undefined;
  if (lvl) return lvl;
  ctx.addIssue({ code: 'custom', message: `${show(raw)} is not a log level (use TRACE, DEBUG, INFO, WARN, PANIC or FATAL)`, input: raw });
  return z.NEVER;
});

/** wsbalancer: threshold ≤ 0 disables the breaker; Baton's threshold 0 does the same. */
const wsbBreakerThreshold = lenient(int(-2_147_483_648, 1000)).transform((n) => Math.max(0, n));

/** wsbalancer's value syntax where it differs from the Baton key's, by env name. */
const WSBALANCER_TYPES: Readonly<Record<string, z.ZodType>> = { LOG_LEVEL: wsbLogLevel, BE_BREAKER_THRESHOLD: wsbBreakerThreshold };

/** wsbalancer settings Baton has no use for: validated, then ignored with a warning. */
const NO_EFFECT_ALIASES: readonly WsbalancerAlias[] = [
  { yaml: ['server.frontend.wite-timeout', 'server.frontend.write-timeout'], env: 'FE_WRITE_TIMEOUT', target: null, type: duration(), warning: NO_EFFECT },
  { yaml: ['server.admin.read-timeout'], env: 'ADM_READ_TIMEOUT', target: null, type: duration(), warning: NO_EFFECT },
  { yaml: ['server.admin.wite-timeout', 'server.admin.write-timeout'], env: 'ADM_WRITE_TIMEOUT', target: null, type: duration(), warning: NO_EFFECT },
  { yaml: ['server.admin.max-header-bytes'], env: 'ADM_MAX_HDR_BYTES', target: null, type: size(), warning: NO_EFFECT },
  { yaml: ['server.read-buffer-size'], env: 'FE_RB_SIZE', target: null, type: size(), warning: NO_EFFECT },
  { yaml: ['server.write-buffer-size'], env: 'FE_WB_SIZE', target: null, type: size(), warning: NO_EFFECT },
  {
    yaml: ['server.enable-instrumentation'],
    env: 'ENABLE_INST',
    target: null,
    type: bool(),
    warning: 'accepted for wsbalancer compatibility; metrics are always on in Baton (admin listener), so it has no effect',
    note: 'metrics are always on',
  },
  { yaml: ['read-buffer-size'], env: 'BE_RB_SIZE', target: null, perBackend: true, type: size(), warning: NO_EFFECT },
  { yaml: ['write-buffer-size'], env: 'BE_WB_SIZE', target: null, perBackend: true, type: size(), warning: NO_EFFECT },
];

/** Every wsbalancer name: the keys' own (in schema order), then the ones with no effect. */
export const WSBALANCER_ALIASES: readonly WsbalancerAlias[] = [
  ...SCHEMA.flatMap((k) =>
    (k.wsbalancer ?? []).map((n): WsbalancerAlias => {
      const type = WSBALANCER_TYPES[n.env];
      return { ...n, target: k.path, ...(type ? { type } : {}) };
    }),
  ),
  ...NO_EFFECT_ALIASES,
];

/** The YAML key as shown to users: per-backend keys get their `upstream.backends[].` prefix. */
export function aliasYamlKeys(a: WsbalancerAlias): string[] {
  return a.yaml.map((k) => (a.perBackend ? `upstream.backends[].${k}` : k));
}

function aliasType(a: WsbalancerAlias): z.ZodType {
  if (a.type) return a.type;
  if (!a.target) throw new Error(`wsbalancer alias ${a.env} has neither type nor target`);
  return keyDef(a.target).type;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Order-insensitive comparison key for per-backend values (lists of headers / codes are sets). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return JSON.stringify(v.map((x) => JSON.stringify(x)).sort());
  return JSON.stringify(v);
}

export interface AliasResult {
  assignments: Assignment[];
  problems: string[];
  warnings: string[];
}

function describeProblems(name: string, target: ConfigPath | null, problems: ValueProblem[]): string[] {
  return problems.map((p) => (target ? problemText(name, target, p, true) : `${name}${p.sub ?? ''}: ${p.message}`));
}

// ---------------------------------------------------------------------------------------------
// YAML

const SERVER_ALIASES = WSBALANCER_ALIASES.filter((a) => !a.perBackend);
const BACKEND_ALIASES = WSBALANCER_ALIASES.filter((a) => a.perBackend);
const BACKEND_ENTRY_KEYS = BACKEND_ALIASES.flatMap((a) => a.yaml);

/**
 * Takes wsbalancer's keys out of a parsed YAML root: all of `server:` and `upstream.backends:`.
 * Returns the remaining (Baton) part of the document and the aliases' assignments.
 */
export function readWsbalancerYaml(root: Record<string, unknown>): AliasResult & { rest: Record<string, unknown> } {
  const out: AliasResult = { assignments: [], problems: [], warnings: [] };
  const rest: Record<string, unknown> = { ...root };

  if ('server' in root) {
    delete rest.server;
    walkServer(root.server, 'server', out);
  }
  if (isMap(root.upstream) && 'backends' in root.upstream) {
    const { backends, ...upstream } = root.upstream;
    rest.upstream = upstream;
    readBackends(backends, out);
  }
  return { ...out, rest };
}

function walkServer(node: unknown, path: string, out: AliasResult): void {
  if (node === null || node === undefined) return;
  if (!isMap(node)) {
    out.problems.push(`${path}: ${show(node)} is not a mapping (wsbalancer's ${path} section)`);
    return;
  }
  for (const [k, v] of Object.entries(node)) {
    const p = `${path}.${k}`;
    const alias = SERVER_ALIASES.find((a) => a.yaml.includes(p));
    if (alias) {
      setAlias(alias, p, v, Layer.WsbalancerYaml, out);
    } else if (SERVER_ALIASES.some((a) => a.yaml.some((y) => y.startsWith(`${p}.`)))) {
      walkServer(v, p, out);
    } else {
      const known = SERVER_ALIASES.flatMap((a) => a.yaml)
        .filter((y) => y.startsWith(`${path}.`))
        .map((y) => y.slice(path.length + 1).split('.')[0]!);
      out.problems.push(`${p}: unknown key (wsbalancer's ${path} has ${[...new Set(known)].join(', ')})`);
    }
  }
}

function setAlias(alias: WsbalancerAlias, name: string, raw: unknown, layer: Layer, out: AliasResult, mode: 'set' | 'append' = 'set'): unknown {
  const p = readValue(aliasType(alias), raw, layer === Layer.WsbalancerEnv ? 'env' : 'yaml');
  if (!p.ok) {
    out.problems.push(...describeProblems(name, alias.target, p.problems));
    return undefined;
  }
  if (alias.warning) out.warnings.push(`${name}: ${alias.warning}`);
  if (alias.target) {
    out.assignments.push({ path: alias.target, value: p.value, layer, label: `${name} (${alias.target})`, name, mode });
  }
  return p.value;
}

function readBackends(raw: unknown, out: AliasResult): void {
  if (raw === null || raw === undefined) {
    out.assignments.push({ path: 'backends', value: [], layer: Layer.WsbalancerYaml, label: 'upstream.backends (backends)', name: 'upstream.backends', itemLabels: [] });
    return;
  }
  if (!Array.isArray(raw)) {
    out.problems.push(`upstream.backends: ${show(raw)} is not a list of backends (wsbalancer: a list of {url, id, ...})`);
    return;
  }
  const specs: BackendSpec[] = [];
  const itemLabels: string[] = [];
  let failed = false;
  // Per-backend wsbalancer settings: Baton applies one value to every backend.
  const seen = new Map<WsbalancerAlias, { key: string; raw: unknown; canon: string }>();
  const warned = new Set<WsbalancerAlias>();

  raw.forEach((entry, i) => {
    const at = `upstream.backends[${i}]`;
    if (!isMap(entry)) {
      out.problems.push(`${at}: ${show(entry)} is not a backend (wsbalancer: a map with url and optional id, ping-time, ...)`);
      failed = true;
      return;
    }
    for (const k of Object.keys(entry)) {
      if (!BACKEND_ENTRY_KEYS.includes(k)) {
        out.problems.push(
          `${at}.${k}: unknown key (a wsbalancer backend has ${BACKEND_ENTRY_KEYS.join(', ')}; Baton's own backend list, with weight/standby/labels/state, is the top-level "backends")`,
        );
      }
    }
    if (entry.url === undefined) {
      out.problems.push(`${at}.url: is required (a ws:// or wss:// URL)`);
      failed = true;
    } else {
      const b = backendRef(entry.id, entry.url, (message, path) => out.problems.push(`${at}${subPath(path)} (backends[${i}]${subPath(path)}): ${message}`));
      if (b) {
        specs.push(b);
        itemLabels.push(at);
      } else failed = true;
    }
    for (const alias of BACKEND_ALIASES) {
      if (alias.backendField) continue;
      const k = alias.yaml[0]!;
      if (entry[k] === undefined) continue;
      const name = `${at}.${k}`;
      const p = readValue(aliasType(alias), entry[k], 'yaml');
      if (!p.ok) {
        out.problems.push(...describeProblems(name, alias.target, p.problems));
        continue;
      }
      const first = seen.get(alias);
      const canon = canonical(p.value);
      if (first) {
        if (first.canon !== canon) {
          out.problems.push(
            `${name}: ${show(entry[k])} differs from ${first.key} ${show(first.raw)}; Baton applies one value to every backend`,
          );
        }
        continue;
      }
      seen.set(alias, { key: name, raw: entry[k], canon });
      if (alias.warning && !warned.has(alias)) {
        warned.add(alias);
        out.warnings.push(`upstream.backends[].${k}: ${alias.warning}`);
      }
      if (alias.target) {
        out.assignments.push({ path: alias.target, value: p.value, layer: Layer.WsbalancerYaml, label: `${name} (${alias.target})`, name: `upstream.backends[].${k}` });
      }
    }
  });
  if (!failed) {
    out.assignments.push({ path: 'backends', value: specs, layer: Layer.WsbalancerYaml, label: 'upstream.backends (backends)', name: 'upstream.backends', itemLabels });
  }
}

// ---------------------------------------------------------------------------------------------
// Environment

export function readWsbalancerEnv(env: NodeJS.ProcessEnv): AliasResult {
  const out: AliasResult = { assignments: [], problems: [], warnings: [] };
  for (const alias of WSBALANCER_ALIASES) {
    if (alias.backendField) continue;
    const raw = env[alias.env];
    if (raw === undefined) continue;
    setAlias(alias, alias.env, raw, Layer.WsbalancerEnv, out, alias.envMode ?? 'set');
  }
  readEnvBackends(env, out);
  return out;
}

/** BE_URLS (appended to the backends) with BE_URL_IDS matching by position. */
function readEnvBackends(env: NodeJS.ProcessEnv, out: AliasResult): void {
  const urlsRaw = env.BE_URLS;
  const idsRaw = env.BE_URL_IDS;
  if (urlsRaw === undefined && idsRaw === undefined) return;
  const urls = splitList(urlsRaw ?? '');
  // Ids keep their positions; an empty id means "the default id" for that URL.
  const ids = idsRaw === undefined || idsRaw.trim() === '' ? undefined : idsRaw.split(',').map((x) => x.trim());
  if (ids && ids.length !== urls.length) {
    out.problems.push(
      `BE_URL_IDS: ${show(idsRaw)} has ${ids.length} id${ids.length === 1 ? '' : 's'} but BE_URLS has ${urls.length} URL${urls.length === 1 ? '' : 's'}; give one id per URL, in the same order`,
    );
    return;
  }
  const specs: BackendSpec[] = [];
  const itemLabels: string[] = [];
  let failed = false;
  urls.forEach((url, i) => {
    const b = backendRef(ids?.[i], url, (message, path) => out.problems.push(`${path[0] === 'id' ? 'BE_URL_IDS' : 'BE_URLS'}[${i}] (backends): ${message}`));
    if (b) {
      specs.push(b);
      itemLabels.push(ids?.[i] ? `BE_URLS[${i}] / BE_URL_IDS[${i}]` : `BE_URLS[${i}]`);
      return;
    }
    failed = true;
  });
  if (failed) return;
  out.assignments.push({ path: 'backends', value: specs, layer: Layer.WsbalancerEnv, label: 'BE_URLS (backends)', name: 'BE_URLS', mode: 'append', itemLabels });
}
