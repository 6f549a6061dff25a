// Loads the sidecar configuration: defaults < YAML file < environment, all driven by the key table
// in schema.ts, plus wsbalancer's names (wsbalancer.ts). Every problem is collected and reported
// together in one ConfigError.

import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { parseDocument, type YAMLError } from 'yaml';
import { ConfigSchema, Layer, ORDERED_KEYS, SCHEMA, SCHEMA_BY_PATH, keyDef, problemText, type Assignment, type ConfigPath, type KeyDef, type SidecarConfig } from '../../common/config/schema.js';
import { setValueAt } from '../../common/config/paths.js';
import { formatDuration, formatHostPort, isLoopbackHost, problemsOf, readValue, show } from '../../common/values.js';
import { readWsbalancerEnv, readWsbalancerYaml } from './wsbalancer.js';

export class ConfigError extends Error {
  readonly problems: string[];

  constructor(problems: string[], source?: string) {
    const n = problems.length;
    super(
      `invalid configuration${source ? ` (${source})` : ''}: ${n} problem${n === 1 ? '' : 's'}\n` +
        problems.map((p) => `  - ${p}`).join('\n'),
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadOptions {
  /** YAML file; without it only defaults and the environment are used. */
  file?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface LoadedConfig {
  config: SidecarConfig;
  /** Things that were accepted but deserve a log line (ignored wsbalancer keys, overridden aliases, ...). */
  warnings: string[];
  /** The file path, or "defaults" when no file was given. */
  source: string;
}

/** Reads the file (if given) and the environment, and validates the result. Throws ConfigError. */
export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  if (opts.file === undefined || opts.file === '') return parseConfig(undefined, env, 'defaults');
  let text: string;
  try {
    text = readFileSync(opts.file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError([`${opts.file}: cannot read the config file (${e.code ?? e.message})`], opts.file);
  }
  return parseConfig(text, env, opts.file);
}

/**
 * Validates YAML text (undefined = no file) plus the environment. Pure except that files named by
 * *File keys must exist and be readable. `sourceName` names the file in messages.
 */
export function parseConfig(yamlText: string | undefined, env: NodeJS.ProcessEnv, sourceName?: string): LoadedConfig {
  const source = sourceName ?? (yamlText === undefined ? 'defaults' : '<yaml>');
  const problems: string[] = [];
  const warnings: string[] = [];
  const assignments: Assignment[] = [];

  // 1. YAML: syntax first (nothing else is meaningful without it).
  let root: Record<string, unknown> = {};
  if (yamlText !== undefined) {
    const doc = parseDocument(yamlText, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length) throw new ConfigError(doc.errors.map((e) => yamlProblem(source, e)), source);
    for (const w of doc.warnings) warnings.push(yamlProblem(source, w));
    let js: unknown;
    try {
      js = doc.toJS({ maxAliasCount: 1000 });
    } catch (err) {
      throw new ConfigError([`${source}: ${(err as Error).message}`], source);
    }
    if (isMap(js)) root = js;
    else if (js !== null && js !== undefined) {
      throw new ConfigError([`${source}: the top level must be a mapping (listen:, session:, backends:, ...), not ${show(js)}`], source);
    }
  }

  // 2. wsbalancer's YAML keys (server:, upstream.backends:), then Baton's own keys.
  const wsbYaml = readWsbalancerYaml(root);
  assignments.push(...wsbYaml.assignments);
  problems.push(...wsbYaml.problems);
  warnings.push(...wsbYaml.warnings);
  walkYaml(wsbYaml.rest, '', assignments, problems);

  // 3. Environment: wsbalancer's names, then BATON_ names.
  const wsbEnv = readWsbalancerEnv(env);
  assignments.push(...wsbEnv.assignments);
  problems.push(...wsbEnv.problems);
  warnings.push(...wsbEnv.warnings);
  readEnv(env, assignments, problems, warnings);

  // 4. Precedence, then checks across keys.
  const resolved = resolve(assignments, warnings);
  const config = build(resolved, problems);
  crossChecks(config, resolved, problems);

  if (problems.length) throw new ConfigError(problems, source);
  return { config, warnings, source };
}

// ---------------------------------------------------------------------------------------------

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function yamlProblem(source: string, e: YAMLError): string {
  const firstLine = e.message.split('\n')[0]!.replace(/\s*at line \d+, column \d+:?\s*$/, '');
  const pos = e.linePos?.[0];
  return pos ? `${source}:${pos.line}:${pos.col}: YAML syntax error: ${firstLine}` : `${source}: YAML syntax error: ${firstLine}`;
}

/** Section prefixes ("failover", "failover.backoff", ...) and their child keys. */
const CHILDREN: ReadonlyMap<string, readonly string[]> = (() => {
  const m = new Map<string, Set<string>>();
  for (const k of SCHEMA) {
    const parts = k.path.split('.');
    for (let i = 0; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('.');
      if (!m.has(parent)) m.set(parent, new Set());
      m.get(parent)!.add(parts[i]!);
    }
  }
  return new Map([...m].map(([k, v]) => [k, [...v]]));
})();

function walkYaml(node: Record<string, unknown>, prefix: string, out: Assignment[], problems: string[]): void {
  for (const [k, v] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${k}` : k;
    const def = SCHEMA_BY_PATH.get(path);
    if (def) {
      // `key:` with nothing after it means "the default".
      if (v === null || v === undefined) continue;
      const p = readValue(def.type, v, 'yaml');
      if (p.ok) {
        out.push({
          path: def.path,
          value: p.value,
          layer: Layer.Yaml,
          label: path,
          name: path,
          ...(def.path === 'backends' ? { itemLabels: (p.value as unknown[]).map((_, i) => `backends[${i}]`) } : {}),
        });
      } else {
        for (const pr of p.problems) problems.push(problemText(path, path, pr, false));
      }
    } else if (CHILDREN.has(path)) {
      if (v === null || v === undefined) continue;
      if (!isMap(v)) {
        problems.push(`${path}: ${show(v)} is not a mapping (${path} has ${CHILDREN.get(path)!.join(', ')})`);
        continue;
      }
      walkYaml(v, path, out, problems);
    } else {
      problems.push(`${path}: unknown key${suggest(k, prefix)}`);
    }
  }
}

/** " (did you mean failover.deadline?)" for a near miss among the siblings, or a list of them. */
function suggest(k: string, prefix: string): string {
  const siblings = CHILDREN.get(prefix) ?? [];
  const full = (s: string) => (prefix ? `${prefix}.${s}` : s);
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestD = Infinity;
  for (const s of siblings) {
    const d = norm(s) === norm(k) ? 0 : distance(norm(s), norm(k));
    if (d < bestD) {
      bestD = d;
      best = s;
    }
  }
  if (best !== undefined && bestD <= Math.max(2, Math.floor(k.length / 4))) return ` (did you mean ${full(best)}?)`;
  // A known key in the wrong place?
  const elsewhere = SCHEMA.find((d) => d.path.endsWith(`.${k}`) || d.path === k);
  if (elsewhere) return ` (did you mean ${elsewhere.path}?)`;
  return prefix ? ` (${prefix} has ${siblings.join(', ')})` : ` (top-level keys: ${siblings.join(', ')}; wsbalancer's server:, upstream.backends:)`;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

const ENV_NAMES: ReadonlyMap<string, KeyDef> = new Map(SCHEMA.map((k) => [k.env, k]));

function readEnv(env: NodeJS.ProcessEnv, out: Assignment[], problems: string[], warnings: string[]): void {
  for (const def of SCHEMA) {
    const raw = env[def.env];
    if (raw === undefined) continue;
    const p = readValue(def.type, raw, 'env');
    if (p.ok) {
      out.push({
        path: def.path,
        value: p.value,
        layer: Layer.Env,
        label: `${def.env} (${def.path})`,
        name: def.env,
        ...(def.path === 'backends' ? { itemLabels: (p.value as unknown[]).map((_, i) => `${def.env} (backends[${i}])`) } : {}),
      });
    } else {
      for (const pr of p.problems) problems.push(problemText(def.env, def.path, pr, true));
    }
  }
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('BATON_') || ENV_NAMES.has(name)) continue;
    let hint = '';
    let bestD = 4;
    for (const known of ENV_NAMES.keys()) {
      const d = distance(known, name);
      if (d < bestD) {
        bestD = d;
        hint = ` (did you mean ${known}?)`;
      }
    }
    warnings.push(`${name}: not a Baton setting, ignored${hint}`);
  }
}

interface Resolved {
  value: unknown;
  /** How messages name the winning value. */
  label: string;
  itemLabels?: string[];
}

function resolve(assignments: Assignment[], warnings: string[]): Map<string, Resolved> {
  const out = new Map<string, Resolved>();
  for (const def of SCHEMA) {
    const value = structuredClone(def.default);
    out.set(def.path, {
      value,
      label: def.path,
      ...(def.path === 'backends' ? { itemLabels: [] } : {}),
    });
  }
  const byPath = new Map<string, Assignment[]>();
  for (const a of assignments) {
    if (!byPath.has(a.path)) byPath.set(a.path, []);
    byPath.get(a.path)!.push(a);
  }
  for (const [path, list] of byPath) {
    const def = SCHEMA_BY_PATH.get(path)!;
    const sets = list.filter((a) => (a.mode ?? 'set') === 'set');
    const appends = list.filter((a) => a.mode === 'append');
    let winner: Assignment | undefined;
    for (const a of sets) if (!winner || a.layer >= winner.layer) winner = a;
    for (const a of sets) {
      if (a === winner || !winner) continue;
      if (a.layer === Layer.WsbalancerYaml && winner.layer === Layer.Yaml) {
        warnings.push(`${a.name} is ignored: ${path} is also set, and Baton's own key wins`);
      } else if (a.layer === Layer.WsbalancerEnv && winner.layer === Layer.Env) {
        warnings.push(`${a.name} is ignored: ${def.env} is also set, and Baton's own name wins`);
      }
    }
    const r: Resolved = winner
      ? { value: winner.value, label: winner.label, ...(winner.itemLabels ? { itemLabels: [...winner.itemLabels] } : {}) }
      : out.get(path)!;
    const winnerLayer = winner?.layer ?? Layer.Default;
    for (const a of appends.sort((x, y) => x.layer - y.layer)) {
      if (a.layer < winnerLayer) {
        warnings.push(`${a.name} is ignored: ${winner!.name} is also set and replaces the whole list`);
        continue;
      }
      const cur = r.value as unknown[];
      const add = a.value as unknown[];
      r.value = path === 'backends' ? [...cur, ...add] : [...new Set([...cur, ...add])];
      r.label = r.label === path ? a.label : `${r.label} + ${a.label}`;
      if (r.itemLabels) r.itemLabels.push(...(a.itemLabels ?? add.map((_, i) => `${a.name}[${i}]`)));
    }
    out.set(path, r);
  }
  return out;
}

function build(resolved: Map<string, Resolved>, problems: string[]): SidecarConfig {
  const obj: Record<string, unknown> = {};
  for (const def of SCHEMA) setValueAt(obj, def.path, resolved.get(def.path)!.value);
  // Every value is valid already; this applies the tree's own rules (listen.tls: null unless set).
  const parsed = ConfigSchema.safeParse(obj);
  if (!parsed.success) throw new Error(`config schema: a valid value did not pass again: ${problemsOf(parsed.error).map((p) => `${p.sub}: ${p.message}`).join('; ')}`);
  const config = parsed.data;

  const tlsLabel = (p: ConfigPath) => resolved.get(p)!.label;
  const missing = (p: ConfigPath) => `${p} (env ${keyDef(p).env})`;
  if (config.listen.tls === null) {
    const value = (p: ConfigPath) => resolved.get(p)!.value as string;
    const tls = { certFile: value('listen.tls.certFile'), keyFile: value('listen.tls.keyFile'), caFile: value('listen.tls.caFile') };
    if (tls.certFile !== '' || tls.keyFile !== '') {
      const [have, lack] = tls.certFile !== '' ? (['listen.tls.certFile', 'listen.tls.keyFile'] as const) : (['listen.tls.keyFile', 'listen.tls.certFile'] as const);
      problems.push(
        `${missing(lack)} is not set but ${tlsLabel(have)} is ${show(have === 'listen.tls.certFile' ? tls.certFile : tls.keyFile)}: TLS needs both listen.tls.certFile and listen.tls.keyFile`,
      );
    } else if (tls.caFile !== '') {
      problems.push(
        `${tlsLabel('listen.tls.caFile')}: ${show(tls.caFile)} is set but listen.tls.certFile and listen.tls.keyFile are not; client certificate verification needs TLS`,
      );
    }
  }

  const up = config.upstream.tls;
  if ((up.certFile === '') !== (up.keyFile === '')) {
    const [have, lack] = up.certFile !== '' ? (['upstream.tls.certFile', 'upstream.tls.keyFile'] as const) : (['upstream.tls.keyFile', 'upstream.tls.certFile'] as const);
    problems.push(
      `${missing(lack)} is not set but ${tlsLabel(have)} is ${show(have === 'upstream.tls.certFile' ? up.certFile : up.keyFile)}: a client certificate needs both upstream.tls.certFile and upstream.tls.keyFile`,
    );
  }
  return config;
}

function crossChecks(config: SidecarConfig, resolved: Map<string, Resolved>, problems: string[]): void {
  const label = (p: ConfigPath) => resolved.get(p)!.label;

  // Files named by *File keys must exist and be readable now.
  for (const def of SCHEMA) {
    if (!def.file) continue;
    const path = resolved.get(def.path)!.value as string;
    if (path === '') continue;
    try {
      if (statSync(path).isDirectory()) {
        problems.push(`${label(def.path)}: ${show(path)} is a directory, not a file`);
        continue;
      }
      accessSync(path, fsConstants.R_OK);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'does not exist' : e.code === 'EACCES' ? 'is not readable' : `cannot be read (${e.code ?? e.message})`;
      problems.push(`${label(def.path)}: file ${show(path)} ${why}`);
    }
  }

  for (const [lo, hi, what] of ORDERED_KEYS) {
    const a = resolved.get(lo)!.value as number;
    const b = resolved.get(hi)!.value as number;
    if (a > b) problems.push(`${label(lo)}: ${formatDuration(a)} is greater than ${label(hi)} (${formatDuration(b)}); ${what}`);
  }

  const admin = config.admin;
  if (!isLoopbackHost(admin.address.host) && admin.token === '' && admin.tokenFile === '') {
    problems.push(
      `${label('admin.address')}: ${show(formatHostPort(admin.address))} is not a loopback address and neither admin.token nor admin.tokenFile is set; ` +
        `set admin.token / admin.tokenFile (env BATON_ADMIN_TOKEN / BATON_ADMIN_TOKEN_FILE) or bind to 127.0.0.1`,
    );
  }

  // Backend ids must be unique across the final list (YAML or BATON_BACKENDS, plus BE_URLS).
  const items = resolved.get('backends')!.itemLabels ?? [];
  const seen = new Map<string, string>();
  config.backends.forEach((b, i) => {
    const here = items[i] ?? `backends[${i}]`;
    const other = seen.get(b.id);
    if (other !== undefined) {
      problems.push(`${here}: id ${show(b.id)} is already used by ${other}; backend ids must be unique (give each backend an explicit id)`);
    } else seen.set(b.id, here);
  });
}
