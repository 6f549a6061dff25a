// DNS expansion of backends, as pure functions: no sockets, no timers, no clock. Which names to
// resolve, what a resolution result does to a name's state (last good answer, failure streak, when
// to resolve next), and the backend list the configured entries expand to. resolver.ts feeds these
// and carries them out.
//
//   unresolved ──ok──▶ resolved ──ok──▶ resolved (new addresses; next = clamp(TTL, minTtl, maxTtl))
//        │ fail           │ fail ▲ ok
//        ▼                ▼      │
//   unresolved (retry)   failing (the last good answer kept; retry with backoff, at most maxTtl)
import { isIP } from 'node:net';
import { backoffDelay } from '../../common/backoff.js';
import type { BackendSpec, SidecarConfig } from '../../common/config/schema.js';

export type DnsSettings = SidecarConfig['dns'];

/** One resolved address with its TTL in seconds (undefined when the answer gave none). */
export interface DnsRecord {
  address: string;
  ttl?: number;
}

export type Resolution = { ok: true; records: readonly DnsRecord[] } | { ok: false; reason: string };

export interface NameState {
  /** The last good answer's addresses, sorted; null = never resolved. */
  readonly addresses: readonly string[] | null;
  /** Failed resolutions in a row (0 after a good one). */
  readonly failures: number;
  /** Epoch ms of the next resolution. */
  readonly nextAt: number;
}

export interface NameStep {
  state: NameState;
  /** The addresses changed (the backend set must be applied again). */
  changed: boolean;
  /** First failure of a streak: log it (the rest of the streak is only counted). */
  logFailure: boolean;
  /** A good answer after a failure streak: log the recovery. */
  recovered: boolean;
}

/** The host a backend dials by name, or null when it is not to be expanded (no resolve, or an IP literal). */
export function resolvedName(spec: BackendSpec, defaultResolve: boolean): string | null {
  if (!(spec.resolve ?? defaultResolve) || spec.address !== undefined) return null;
  const host = new URL(spec.url).hostname.replace(/^\[(.*)\]$/, '$1');
  return isIP(host) === 0 ? host : null;
}

/** The distinct names the configured backends need resolved. */
export function namesOf(specs: readonly BackendSpec[], defaultResolve: boolean): string[] {
  const names = new Set<string>();
  for (const spec of specs) {
    const name = resolvedName(spec, defaultResolve);
    if (name !== null) names.add(name);
  }
  return [...names];
}

/** A name first seen: resolve it now. */
export function initialState(now: number): NameState {
  return { addresses: null, failures: 0, nextAt: now };
}

/**
 * What a resolution does to a name. A good answer with addresses replaces the last one and sets
 * the next resolution from its smallest TTL (dns.refresh when it gives none or 0), clamped to
 * [minTtl, maxTtl]. A failure, or an answer with no address, keeps the last good answer: a DNS
 * error never takes backends away; it retries after backoff from minTtl, never later than maxTtl.
 */
export function stepName(state: NameState, result: Resolution, now: number, dns: DnsSettings, random: () => number = Math.random): NameStep {
  if (result.ok && result.records.length > 0) {
    const addresses = [...new Set(result.records.map((r) => r.address))].sort();
    const ttls = result.records.map((r) => r.ttl).filter((t): t is number => t !== undefined && t > 0);
    const interval = ttls.length > 0 ? Math.min(...ttls) * 1000 : dns.refresh;
    const changed = state.addresses === null || addresses.join() !== state.addresses.join();
    return {
      state: { addresses, failures: 0, nextAt: now + clamp(interval, dns.minTtl, dns.maxTtl) },
      changed,
      logFailure: false,
      recovered: state.failures > 0,
    };
  }
  const retry = backoffDelay(state.failures, { initial: dns.minTtl, max: dns.maxTtl, multiplier: 2, jitter: 0.2 }, random);
  return {
    state: { addresses: state.addresses, failures: state.failures + 1, nextAt: now + Math.min(retry, dns.maxTtl) },
    changed: false,
    logFailure: state.failures === 0,
    recovered: false,
  };
}

function clamp(v: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, v));
}

/**
 * The backend list the configured entries stand for: an entry to resolve becomes one backend per
 * address of its name's last good answer (none before the first), each with the entry's weight,
 * id `<name>/<address>:<port>` (name: the entry's own id when one was given, else the URL host;
 * IPv6 in brackets), the entry's URL (so Host, SNI and the certificate check keep the name) and
 * the address to connect to. Other entries pass through unchanged.
 */
export function expandBackends(
  specs: readonly BackendSpec[],
  answers: ReadonlyMap<string, readonly string[] | null>,
  defaultResolve: boolean,
): BackendSpec[] {
  const out: BackendSpec[] = [];
  for (const spec of specs) {
    const name = resolvedName(spec, defaultResolve);
    const { resolve: _resolve, ...rest } = spec;
    if (name === null) {
      out.push(rest);
      continue;
    }
    const url = new URL(spec.url);
    const port = url.port || (url.protocol === 'wss:' ? '443' : '80');
    const prefix = spec.id === `${name}:${port}` ? name : spec.id;
    for (const address of answers.get(name) ?? []) {
      const host = isIP(address) === 6 ? `[${address}]` : address;
      out.push({ ...rest, id: `${prefix}/${host}:${port}`, address });
    }
  }
  return out;
}
