// The sidecar's vocabulary: every list of states, reasons and results, written once. The session
// machine, the pool, the metrics, the admin contract and the operator import these; a metric's
// label values and an API's enum are these lists, so they cannot drift apart.

/** The built-in session codecs by config name (codec.default, codec.paths); `stateful` resumes nothing: 1012. */
export const BUILTIN_CODECS = ['ocpp', 'json-rpc', 'socket.io', 'graphql-ws', 'mqtt', 'stomp', 'stateful'] as const;
export type BuiltinCodec = (typeof BUILTIN_CODECS)[number];

/** A backend's administrative state (config, admin API, operator). */
export const BACKEND_STATES = ['enabled', 'disabled', 'draining'] as const;
export type BackendState = (typeof BACKEND_STATES)[number];

/** A backend's health, from φ and its circuit breaker (health/ejection.ts). */
export const HEALTH_STATUSES = ['healthy', 'suspect', 'ejected', 'tripped'] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

/** The phases of a session's machine (session-machine.ts): what it is doing right now. */
export const SESSION_PHASES = ['open', 'migration-dialling', 'draining-old', 'failing-over', 'resuming', 'closed'] as const;
export type SessionPhase = (typeof SESSION_PHASES)[number];

/**
 * A session's state as users see it (admin API, the baton_sessions metric): a migration counts as
 * "migrating" once it holds the client's messages, not while it only dials; "resuming" while a new
 * backend answers the replay of the session's protocol state.
 */
export const SESSION_STATES = ['open', 'failing-over', 'migrating', 'resuming', 'closed'] as const;
export type SessionStateName = (typeof SESSION_STATES)[number];
export const STATE_OF_PHASE: Readonly<Record<SessionPhase, SessionStateName>> = {
  open: 'open',
  'migration-dialling': 'open',
  'draining-old': 'migrating',
  'failing-over': 'failing-over',
  resuming: 'resuming',
  closed: 'closed',
};

export const SESSION_END_REASONS = [
  'client-closed',
  'backend-closed',
  'idle-timeout',
  'client-unresponsive',
  'failover-deadline',
  'buffer-full',
  'protocol-error',
  'shutdown',
  'admin',
  /** Its protocol state could not move to another backend (over its bound, a transaction, failover.mode close): 1012. */
  'unresumable',
  /** The new backend refused the replayed session state (auth expired, a protocol error). */
  'resume-refused',
] as const;
export type SessionEndReason = (typeof SESSION_END_REASONS)[number];

/** Why a session lost its backend (unplanned); resume-timeout: a new backend did not answer the replay of the session's state. */
export const FAILOVER_REASONS = ['error', 'close-code', 'pong-timeout', 'resume-timeout'] as const;
export type FailoverReason = (typeof FAILOVER_REASONS)[number];
/**
 * Why a session is moved to another backend (planned); dns = its address vanished from a resolved
 * name (sidecar/dns/); split = to keep a split's share (balancing/split.ts).
 */
export const MIGRATION_REASONS = ['drain', 'admin', 'lifetime', 'reload', 'dns', 'split'] as const;
export type MigrationReason = (typeof MIGRATION_REASONS)[number];
/** Why a session changed backend: unplanned or planned. */
export const SWITCH_REASONS = [...FAILOVER_REASONS, ...MIGRATION_REASONS] as const;
export type SwitchReason = (typeof SWITCH_REASONS)[number];
export const SWITCH_RESULTS = ['resumed', 'deadline', 'buffer-full', 'client-gone', 'failed'] as const;
export type SwitchResult = (typeof SWITCH_RESULTS)[number];

/** What a requested planned migration came to. */
export const MIGRATION_RESULTS = ['migrated', 'failed', 'busy', 'closed'] as const;
export type MigrationResult = (typeof MIGRATION_RESULTS)[number];

/**
 * How a migration's hold ended, i.e. why the old backend was let go: it went quiet, a codec saw
 * every request answered, it closed, or a bound ran out (a backend that never pauses, or the
 * drain timeout). The last two may cut off answers the old backend still owed.
 */
export const DRAIN_ENDS = ['quiet', 'settled', 'old-closed', 'feed-bound', 'drain-timeout'] as const;
export type DrainEnd = (typeof DRAIN_ENDS)[number];
export const CUT_DRAIN_ENDS: readonly DrainEnd[] = ['feed-bound', 'drain-timeout'];

/** How a dial to a backend ended (a metric label): refused = it answered the handshake with 3xx/4xx. */
export const DIAL_RESULTS = ['success', 'failure', 'refused'] as const;
export type DialResultLabel = (typeof DIAL_RESULTS)[number];
/** Why a dial to a backend failed (a metric label). */
export const DIAL_FAILURE_REASONS = ['refused', 'server-error', 'connect', 'timeout', 'tls', 'subprotocol', 'other'] as const;
export type DialFailureReason = (typeof DIAL_FAILURE_REASONS)[number];

/** A count per value of a vocabulary list, each 0 (plain numbers for a hot path, or a tally). */
export function zeroCounts<V extends string>(values: readonly V[]): Record<V, number> {
  return Object.fromEntries(values.map((v) => [v, 0])) as Record<V, number>;
}
