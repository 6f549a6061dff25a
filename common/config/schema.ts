// The sidecar's configuration keys: one zod object tree. Each leaf is made by key() and carries its
// value type, default, doc line and flags; its path gives its YAML key and env name. SidecarConfig
// is inferred from the tree, and walking it gives SCHEMA, the list of keys that the loader, the
// docs, the wsbalancer aliases and the managed settings use. Adding a key is one key() line.

import { z } from 'zod';
import { LOG_LEVELS } from '../logger.js';
import {
  address,
  bool,
  codecName,
  codecRoute,
  dnsServer,
  duration,
  file,
  float,
  hashKey,
  headerList,
  headerName,
  headerValue,
  intList,
  int,
  ipAddress,
  lenient,
  listOf,
  oneOf,
  size,
  str,
  type HashKey,
  type HostPort,
  type ValueProblem,
} from '../values.js';
import { backendList } from './backend.js';

export type { BackendSpec } from './backend.js';
export type { BackendState } from '../vocabulary.js';
export type { HashKey, HostPort } from '../values.js';

/** A name wsbalancer gives a key: sidecar/config/wsbalancer.ts reads it, docs/config.md lists it. */
export interface WsbalancerName {
  /** YAML key(s) as wsbalancer spells them: dotted paths, or (perBackend) keys of an `upstream.backends` entry. */
  readonly yaml: readonly string[];
  readonly env: string;
  readonly perBackend?: boolean;
  /** 'append': the env list is added to the lower layers' value (wsbalancer's BE_PASS_HEADERS). */
  readonly envMode?: 'set' | 'append';
  /** Handled specially (backend url / id lists). */
  readonly backendField?: 'url' | 'id';
  /** For the docs. */
  readonly note?: string;
}

interface KeyInfo {
  /** The value type (common/values.ts): its describe/format go in the docs. */
  readonly type: z.ZodType;
  /** One line for docs/config.md. */
  readonly doc: string;
  /** Must name an existing, readable file when not empty. */
  readonly file?: boolean;
  /** A change only takes effect after a restart (not on reload). */
  readonly restart?: boolean;
  /** wsbalancer's names for this key (aliases). */
  readonly wsbalancer?: readonly WsbalancerName[];
}

/** What key() knows of each leaf (a WeakMap: a zod registry's metadata type cannot hold a schema). */
const KEY_INFO = new WeakMap<z.ZodType, KeyInfo>();

/** A config key: `type` read with YAML/env spellings, `dflt` when not set. */
export function key<O>(type: z.ZodType<O, any>, dflt: NoInfer<O>, doc: string, flags: Pick<KeyInfo, 'file' | 'restart' | 'wsbalancer'> = {}): z.ZodDefault<z.ZodType<O, unknown>> {
  const leaf = (lenient(type) as z.ZodType).default(dflt) as unknown as z.ZodDefault<z.ZodType<O, unknown>>;
  KEY_INFO.set(leaf, { type, doc, ...flags });
  return leaf;
}

/** Doc lines of the top-level sections: they head their tables in the docs. */
const SECTION_DOC = z.registry<{ doc: string }>();

function documented<T extends z.ZodType>(schema: T, doc: string): T {
  SECTION_DOC.add(schema, { doc });
  return schema;
}

/** A group of keys (`doc` for a top-level one). */
export const section = <S extends z.ZodRawShape>(shape: S, doc?: string) => {
  const s = z.object(shape).prefault({} as never);
  return doc ? documented(s, doc) : s;
};

const S = 1000;
const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const tls = z
  .object({
    certFile: key(file(), '', 'PEM certificate chain; with keyFile, turns on TLS (wss://). Empty = plain ws://.', { file: true, restart: true }),
    keyFile: key(file(), '', 'PEM private key for certFile.', { file: true, restart: true }),
    caFile: key(file(), '', 'Optional CA bundle to verify client certificates against (mTLS); needs certFile and keyFile.', { file: true, restart: true }),
  })
  .prefault({})
  // null = plain ws:// (the loader reports a half-configured pair).
  .transform((t) => (t.certFile !== '' && t.keyFile !== '' ? t : null));

export const ConfigSchema = z.object({
  listen: section(
    {
      address: key(address(), { host: '0.0.0.0', port: 8080 }, 'Address the client-facing WebSocket listener binds.', { restart: true, wsbalancer: [{ yaml: ['server.frontend.address'], env: 'FE_ADDR' }] }),
      tls,
      maxHeaderBytes: key(size({ min: 1 * KiB, max: 16 * MiB }), 16 * KiB, 'Largest upgrade request header block accepted.', { restart: true, wsbalancer: [{ yaml: ['server.frontend.max-header-bytes'], env: 'FE_MAX_HDR_BYTES' }] }),
      requestTimeout: key(duration({ min: 1 }), 10 * S, 'Time a client has to send its complete upgrade request.', { restart: true, wsbalancer: [{ yaml: ['server.frontend.read-timeout'], env: 'FE_READ_TIMEOUT' }] }),
      perMessageDeflate: section({
        enabled: key(bool(), true, 'Offer permessage-deflate compression to clients. A client that takes it is relayed message by message (ws compresses each); without it frames pass through verbatim, the cheaper path (docs/performance.md).', { restart: true }),
        threshold: key(size({ max: 1 * GiB }), 1 * KiB, 'Messages smaller than this are sent uncompressed.', { restart: true }),
      }),
    },
    'The client-facing WebSocket listener.',
  ),
  admin: section(
    {
      address: key(address(), { host: '127.0.0.1', port: 9901 }, 'Address the admin HTTP listener binds; a non-loopback address needs admin.token or admin.tokenFile.', { restart: true, wsbalancer: [{ yaml: ['server.admin.address'], env: 'ADM_ADDR' }] }),
      tokenFile: key(file(), '', 'File holding the bearer token required by the admin API.', { file: true }),
      token: key(str(), '', 'Bearer token required by the admin API (prefer tokenFile or the env var over the YAML file).'),
      metricsRequireToken: key(bool(), false, 'Require the token for /metrics too (/healthz and /readyz never need it).'),
    },
    'The admin HTTP listener (health, metrics, backend control).',
  ),
  logLevel: documented(
    key(oneOf(LOG_LEVELS), 'info', "Log level. At `info` a session logs one line, when it ends (`session closed`: backend, path, client address, subprotocol, reason, duration, failovers), as a proxy's access log does, and a failover one line when it completes; `debug` adds each session's opening and each failover's start.", {
      wsbalancer: [{ yaml: ['server.logging-level'], env: 'LOG_LEVEL', note: 'PANIC and FATAL → fatal' }],
    }),
    'Logging.',
  ),
  session: section(
    {
      maxMessageBytes: key(size({ min: 1, max: 1 * GiB }), 16 * MiB, 'Largest message accepted on either leg; larger closes the session with 1009.', { restart: true }),
      highWaterMarkBytes: key(size({ min: 1 * KiB, max: 1 * GiB }), 1 * MiB, "Bytes queued towards one leg before the other leg's socket is paused."),
      pingInterval: key(duration({ min: 1 }), 10 * S, 'Interval between keep-alive pings on each leg.', { wsbalancer: [{ yaml: ['ping-time'], env: 'BE_PING_TIME', perBackend: true }] }),
      pongTimeout: key(duration({ min: 1 }), 5 * S, 'A leg whose pong is this late is considered dead.'),
      idleTimeout: key(duration(), 0, 'Close a session with no messages in either direction for this long; 0 = never.'),
      maxLifetime: key(duration(), 0, 'Migrate a session (planned) after this long; 0 = never.'),
      trustForwardedFor: key(bool(), true, 'Append to an incoming X-Forwarded-For instead of replacing it.', { wsbalancer: [{ yaml: ['server.trust-received-xff'], env: 'FE_TRUST_XFF' }] }),
      passRequestHeaders: key(headerList(), [], 'Request headers passed to the backend; empty = every header that is not blocked.'),
      blockRequestHeaders: key(headerList(), [], 'Request headers never passed to the backend.', { wsbalancer: [{ yaml: ['server.block-headers'], env: 'BLOCK_HEADERS' }] }),
      passResponseHeaders: key(headerList(), [], "Backend 101 response headers copied into the client's 101.", {
        wsbalancer: [{ yaml: ['pass-headers'], env: 'BE_PASS_HEADERS', perBackend: true, envMode: 'append', note: 'BE_PASS_HEADERS is appended' }],
      }),
    },
    'Per-session limits, keep-alive and header handling.',
  ),
  failover: section(
    {
      closeCodes: key(intList(1000, 4999), [1001, 1005, 1006, 1011, 1012, 1013], 'Backend close codes (and abnormal closes) that trigger failover instead of closing the client.', {
        wsbalancer: [{ yaml: ['abnormal-close-codes'], env: 'BE_ABNORMAL_CLOSE_CODES', perBackend: true }],
      }),
      deadline: key(duration({ min: 1 }), 30 * S, 'Give up reconnecting a session to a backend after this long.'),
      bufferMaxBytes: key(size({ max: 4 * GiB }), 16 * MiB, 'Client messages buffered during failover, in bytes; more closes the session.'),
      bufferMaxMessages: key(int(0, 1_000_000), 4096, 'Client messages buffered during failover, in messages; more closes the session.'),
      backoff: section({
        initial: key(duration({ min: 1 }), 50, 'First delay between reconnect attempts.'),
        max: key(duration({ min: 1 }), 5 * S, 'Largest delay between reconnect attempts.'),
        multiplier: key(float(1, 100), 2, 'Delay growth factor per attempt.'),
        jitter: key(float(0, 1), 0.2, 'Random spread applied to each delay (0.2 = ±20%).'),
      }),
      reconnectHeader: section({
        name: key(headerName(), 'X-Balancer-Reconnect', 'Header added to the upgrade request of a failover dial.', { wsbalancer: [{ yaml: ['server.reconnect-header'], env: 'RECONNECT_HDR' }] }),
        value: key(headerValue(), '1', 'Value of that header.'),
      }),
      mode: key(oneOf(['resume', 'close']), 'resume', 'resume: a session moves to another backend (its protocol state replayed by its codec); close: it is closed with 1012 instead, so the client reconnects.'),
      drainTimeout: key(duration({ min: 1 }), 10 * S, 'Planned migration: the longest the old backend is given to finish (answer, go quiet, close) before the session switches anyway.'),
    },
    'Keeping a client session open when its backend goes away.',
  ),
  migration: section({
    quietPeriod: key(duration({ min: 1 }), 300, 'Planned migration without a codec: the old backend is done once it has sent nothing for this long; set it above its slowest answer.'),
    maxQuietWait: key(duration({ min: 1 }), 2 * S, 'Planned migration without a codec: a backend that never goes quiet (a live feed) is let go after this long; what it sends after is lost.'),
  }),
  balancer: section(
    {
      algorithm: key(oneOf(['least-sessions', 'round-robin', 'consistent-hash']), 'least-sessions', 'How a new session picks a backend.'),
      hashKey: key(hashKey(), { source: 'path', name: '' }, 'What consistent-hash hashes: path, header:NAME or query:NAME.'),
      slowStart: key(duration(), 0, "A new or recovered backend's weight ramps up over this long; 0 = off."),
    },
    'Choosing a backend for a new session.',
  ),
  health: section(
    {
      breaker: section({
        threshold: key(int(0, 1000), 5, 'Consecutive failures that open the circuit breaker; 0 = breaker off.', {
          wsbalancer: [{ yaml: ['breaker-threshold'], env: 'BE_BREAKER_THRESHOLD', perBackend: true, note: '≤ 0 → 0 (off)' }],
        }),
        openBase: key(duration({ min: 1 }), 1 * S, 'First open period of the breaker (doubles per re-open).'),
        openMax: key(duration({ min: 1 }), 30 * S, 'Longest open period of the breaker.'),
      }),
      phi: section({
        threshold: key(float(0.5, 1000), 16, 'Phi accrual suspicion level at which a backend is considered failed.'),
        windowSize: key(int(2, 100_000), 100, 'Heartbeat intervals remembered by the phi detector.'),
        minStdDev: key(duration({ min: 1 }), 500, 'Lower bound of the heartbeat interval standard deviation.'),
        acceptablePause: key(duration(), 0, 'Extra pause tolerated before suspicion grows (e.g. GC pauses).'),
      }),
      maxEjectedPercent: key(int(0, 100), 50, 'Never eject more than this percentage of backends at once.'),
      probe: section({
        type: key(oneOf(['none', 'websocket', 'http']), 'none', 'Active health probe; none = passive only.'),
        interval: key(duration({ min: 1 }), 5 * S, 'Time between probes.'),
        timeout: key(duration({ min: 1 }), 2 * S, 'A probe slower than this fails.'),
        path: key(str({ check: (s) => s.startsWith('/'), expected: 'a path starting with "/"' }), '/', 'Path probed on each backend.'),
      }),
    },
    'Passive and active backend health.',
  ),
  upstream: section(
    {
      connectTimeout: key(duration({ min: 1 }), 5 * S, 'TCP (and TLS) connect timeout towards a backend.'),
      maxConcurrentDials: key(
        int(1, 100_000),
        128,
        "Dials (TCP connect and WebSocket upgrade) in flight to one backend at once; more wait their turn. When thousands of sessions fail over together, a connect each at once would overflow the backend's listen queue, and TCP retries a dropped connect only after 1 s.",
      ),
      handshakeTimeout: key(duration({ min: 1 }), 10 * S, 'WebSocket upgrade timeout towards a backend.', { wsbalancer: [{ yaml: ['handshake-timeout'], env: 'BE_HANDSHAKE_TIMEOUT', perBackend: true }] }),
      perMessageDeflate: key(bool(), false, 'Offer permessage-deflate to backends.'),
      tls: section({
        caFile: key(file(), '', 'CA bundle for verifying wss:// backends; empty = system CAs.', { file: true }),
        certFile: key(file(), '', 'Client certificate for wss:// backends (mTLS); needs keyFile.', { file: true }),
        keyFile: key(file(), '', 'Private key for upstream.tls.certFile.', { file: true }),
        servername: key(str(), '', "SNI and certificate name check; empty = the URL's host."),
        rejectUnauthorized: key(bool(), true, 'Verify backend certificates.'),
      }),
      keepAlive: section({
        enabled: key(bool(), false, 'TCP keep-alive on backend connections. Off by default: session pings (session.pingInterval) find a dead backend sooner, and it costs four system calls per dial.'),
        initialDelay: key(duration(), 30 * S, 'Idle time before the first TCP keep-alive probe.'),
      }),
      localAddress: key(ipAddress(), '', "Source address for backend connections; empty = the OS's choice."),
    },
    'Connections from the sidecar to backends.',
  ),
  codec: section(
    {
      default: key(codecName(), 'auto', 'Codec for sessions whose path matches no codec.paths entry: auto (chosen by the subprotocol the backend accepted, or the request: socket.io), none, stateful (a protocol that cannot be resumed: 1012 at a backend change), a built-in codec by name, or module:/path/to/codec.js.', { restart: true }),
      paths: key(listOf(codecRoute(), 'list of prefix=codec'), [], 'Codec by path prefix, e.g. ["/ocpp=ocpp", "/rpc=json-rpc"]; the longest matching prefix wins.', { restart: true }),
      maxTrackedRequests: key(int(1, 1_000_000), 1000, 'Unanswered requests tracked per session; beyond it the oldest is no longer tracked (counted).'),
      maxTrackedBytes: key(size({ min: 1, max: 1 * GiB }), 1 * MiB, 'Bytes of unanswered requests kept per session for replay; beyond it the oldest is no longer tracked (counted).'),
      requestTimeout: key(duration({ min: 1 }), 60 * S, 'A request unanswered this long is no longer tracked (counted as an unanswered timeout).'),
      maxStateFrames: key(int(1, 100_000), 256, "Frames of a session's protocol state kept for replay (a login, subscriptions); past it the session cannot be resumed (1012 at its next backend change)."),
      maxStateBytes: key(size({ min: 1, max: 1 * GiB }), 256 * KiB, "Bytes of a session's protocol state kept for replay; past it the session cannot be resumed. Also the most of a backend's unfinished packet held back from the client (MQTT: packets span frames), so that losing that backend mid-packet leaves the session resumable."),
      resumeTimeout: key(duration({ min: 1 }), 5 * S, "The longest a new backend may take to answer the replay of a session's protocol state; then it counts as failed."),
      orphanAnswers: key(oneOf(['forward', 'drop']), 'forward', "A client's answer to a call from a backend that has died since: forward it to the new backend, or drop it."),
    },
    'Protocol-aware sessions (OCPP-J, JSON-RPC): replay of unanswered requests after a failover, duplicate answers dropped. See docs/codecs.md.',
  ),
  shutdown: section({ grace: key(duration(), 30 * S, 'On SIGTERM, time given to sessions to migrate or finish before they are closed.') }, 'Graceful shutdown.'),
  dns: section(
    {
      resolve: key(bool(), false, 'Default of backends[].resolve: expand a backend whose URL host is a name to one backend per address (A and AAAA), re-resolved.'),
      refresh: key(duration({ min: 100, max: 24 * 3600 * S }), 30 * S, 'Re-resolve interval when an answer gives no TTL (or TTL 0); bounded by minTtl and maxTtl.'),
      minTtl: key(duration({ min: 100, max: 24 * 3600 * S }), 1 * S, 'A name is re-resolved no sooner than this, whatever its TTL; also the first retry after a failed resolution.'),
      maxTtl: key(duration({ min: 100, max: 24 * 3600 * S }), 60 * S, 'A name is re-resolved no later than this, whatever its TTL; also the longest retry interval while resolution fails.'),
      servers: key(listOf(dnsServer(), 'list of ip[:port]'), [], "DNS servers asked; empty = the system's (resolv.conf)."),
      timeout: key(duration({ min: 1, max: 60 * S }), 5 * S, 'A resolution slower than this fails (the last good answer is kept).'),
    },
    'Backends named by a host name that resolves to several addresses (a headless Service without the operator): one backend per address, re-resolved. See docs/dns.md.',
  ),
  backends: documented(key(backendList(), [], 'Where sessions go; format below.', {
      wsbalancer: [
        { yaml: ['url'], env: 'BE_URLS', perBackend: true, backendField: 'url', note: 'BE_URLS is appended to the backends' },
        { yaml: ['id'], env: 'BE_URL_IDS', perBackend: true, backendField: 'id', note: 'matches BE_URLS by position' },
      ],
    }), 'The backend list.'),
});

/** The sidecar's validated configuration, every field filled. */
export type SidecarConfig = z.output<typeof ConfigSchema>;
export type LogLevel = SidecarConfig['logLevel'];

// ---------------------------------------------------------------------------------------------
// The keys, from walking the tree

/** Values stored whole under one key (not descended into). */
type Leaf = string | number | boolean | readonly unknown[] | HostPort | HashKey;

type LeafPaths<T, P extends string = ''> = {
  [K in keyof T & string]: T[K] extends Leaf ? `${P}${K}` : NonNullable<T[K]> extends object ? LeafPaths<NonNullable<T[K]>, `${P}${K}.`> : never;
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

export interface KeyDef extends KeyInfo {
  /** Dotted path in the YAML file / SidecarConfig. */
  readonly path: ConfigPath;
  /** Environment variable: BATON_ + the path upper-snake-cased. */
  readonly env: string;
  readonly default: unknown;
}

/** "failover.backoff.initial" → "BATON_FAILOVER_BACKOFF_INITIAL"; "session.pingInterval" → "BATON_SESSION_PING_INTERVAL". */
export function envName(path: string): string {
  return `BATON_${path
    .split('.')
    .map((seg) => seg.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2'))
    .join('_')
    .toUpperCase()}`;
}

/** The keys of a config tree in order, and its top-level sections' doc lines. */
export function keysOf(tree: z.ZodObject): { keys: KeyDef[]; sections: Record<string, string> } {
  const keys: KeyDef[] = [];
  const sections: Record<string, string> = {};
  const walk = (node: z.ZodType, path: string): void => {
    const leaf = KEY_INFO.get(node);
    if (leaf) {
      keys.push({ path: path as ConfigPath, env: envName(path), default: (node as z.ZodDefault).def.defaultValue, ...leaf });
      return;
    }
    const def = node.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType> };
    if (def.type === 'object') for (const [k, child] of Object.entries(def.shape!)) walk(child, path ? `${path}.${k}` : k);
    else if (def.type === 'pipe') walk(def.in!, path);
    else if (def.innerType) walk(def.innerType, path);
    else throw new Error(`config schema: ${path} is neither a key() nor a section`);
  };
  for (const [k, child] of Object.entries(tree.shape)) {
    const doc = SECTION_DOC.get(child)?.doc;
    if (doc) sections[k] = doc;
    walk(child, k);
  }
  const seen = new Map<string, string>();
  for (const k of keys) {
    const other = seen.get(k.env);
    if (other !== undefined) throw new Error(`config schema: ${k.path} and ${other} share env name ${k.env}`);
    seen.set(k.env, k.path);
  }
  return { keys, sections };
}

const WALKED = keysOf(ConfigSchema);
export const SCHEMA: readonly KeyDef[] = WALKED.keys;
/** One-line descriptions of the top-level sections, for the docs. */
export const SECTIONS: Readonly<Record<string, string>> = WALKED.sections;

export const SCHEMA_BY_PATH: ReadonlyMap<string, KeyDef> = new Map(SCHEMA.map((k) => [k.path, k]));

export function keyDef<P extends ConfigPath>(path: P): KeyDef & { readonly default: PathValue<SidecarConfig, P> } {
  return SCHEMA_BY_PATH.get(path) as KeyDef & { readonly default: PathValue<SidecarConfig, P> };
}

/** Pairs of keys whose values must be in order (first ≤ second), with why. */
export const ORDERED_KEYS: ReadonlyArray<readonly [ConfigPath, ConfigPath, string]> = [
  ['failover.backoff.initial', 'failover.backoff.max', 'the first reconnect delay must not exceed the largest'],
  ['health.breaker.openBase', 'health.breaker.openMax', 'the first open period must not exceed the longest'],
  ['migration.quietPeriod', 'migration.maxQuietWait', 'the quiet period must not exceed the longest wait for it'],
  ['dns.minTtl', 'dns.maxTtl', 'the shortest re-resolve interval must not exceed the longest'],
];

/** Keys whose change needs a restart (fixed when the listeners are created). */
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
