// Settings the operator sets at runtime through PUT /v1/backends (a WsBalancer's spec.settings):
// the config keys of a few sections that take effect without a restart, written as strings exactly
// as in their environment variables and parsed by the same value types as the config file.
import { setValueAt, valueAt } from './paths.js';
import { formatDuration, readValue } from '../values.js';
import { keyDef, ORDERED_KEYS, SCHEMA_BY_PATH, type ConfigPath, type SidecarConfig } from './schema.js';

const MANAGED_SECTIONS = ['balancer.', 'failover.', 'health.', 'session.'];

export function isManagedSetting(path: string): boolean {
  const def = SCHEMA_BY_PATH.get(path);
  return def !== undefined && !def.restart && MANAGED_SECTIONS.some((s) => path.startsWith(s));
}

/** The problem with one setting, or undefined when `value` is a valid value for `path`. */
export function checkManagedSetting(path: string, value: string): string | undefined {
  if (!isManagedSetting(path)) {
    return `"${path}" is not a setting that can be changed at runtime (keys of balancer, failover, health and session that need no restart)`;
  }
  const parsed = readValue(keyDef(path as ConfigPath).type, value, 'env');
  return parsed.ok ? undefined : parsed.problems.map((p) => p.message).join('; ');
}

/**
 * The first pair of keys (ORDERED_KEYS) that settings put out of order over `base` (a running
 * config, or undefined for the defaults), naming the key the settings set.
 */
export function settingsOrderProblem(settings: Readonly<Record<string, string>>, base?: SidecarConfig): { path: string; message: string } | undefined {
  const value = (path: ConfigPath): number => {
    const raw = settings[path];
    const parsed = raw === undefined ? undefined : readValue(keyDef(path).type, raw, 'env');
    if (parsed?.ok) return parsed.value as number;
    return (base ? valueAt(base, path) : keyDef(path).default) as number;
  };
  for (const [lo, hi, what] of ORDERED_KEYS) {
    if (settings[lo] === undefined && settings[hi] === undefined) continue;
    const a = value(lo);
    const b = value(hi);
    if (a > b) return { path: settings[lo] !== undefined ? lo : hi, message: `${lo} ${formatDuration(a)} is greater than ${hi} ${formatDuration(b)}; ${what}` };
  }
  return undefined;
}

/** `config` with the settings applied (they are checked already). */
export function withManagedSettings(config: SidecarConfig, settings: Readonly<Record<string, string>>): SidecarConfig {
  const out = structuredClone(config);
  for (const [path, raw] of Object.entries(settings)) {
    const parsed = readValue(keyDef(path as ConfigPath).type, raw, 'env');
    if (parsed.ok) setValueAt(out, path, parsed.value);
  }
  return out;
}
