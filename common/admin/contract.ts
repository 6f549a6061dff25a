// The admin API contract: the one definition of every route, request body and response that the
// sidecar serves (admin/server.ts) and its callers use (admin/client.ts, the operator). Request
// bodies are zod schemas, so the server validates with exactly the types the client sends.
import { z } from 'zod';
import { isSendableCloseCode, MAX_CLOSE_REASON_BYTES } from '../close-codes.js';
import { checkManagedSetting } from '../config/managed.js';
import { BackendInputSchema } from '../config/backend.js';
import { backendId } from '../values.js';
import { BACKEND_STATES, type HealthStatus, type MigrationResult, type SessionStateName } from '../vocabulary.js';

export type { SessionStateName };

export const API_PREFIX = '/v1';

// ---- shared pieces ------------------------------------------------------------------------------

export const BackendStateSchema = z.enum(BACKEND_STATES);
export type BackendStateName = z.infer<typeof BackendStateSchema>;

/** A backend as callers describe it (common/config/backend.ts): the config file's fields and defaults. */
export { BackendInputSchema };
export type BackendInput = z.input<typeof BackendInputSchema>;
export type BackendDefinition = z.output<typeof BackendInputSchema>;

// ---- request bodies -----------------------------------------------------------------------------

/** POST /v1/backends */
export const AddBackendRequestSchema = BackendInputSchema;
export type AddBackendRequest = z.input<typeof AddBackendRequestSchema>;

/** POST /v1/backends/{id}/drain */
export const DrainRequestSchema = z.strictObject({
  /** Sessions migrated per second; omitted = as fast as the migration concurrency allows. */
  rate: z.number().positive().max(100_000).optional(),
  /** After this, the remaining sessions are migrated at once, ignoring the rate. */
  deadlineSeconds: z.number().positive().max(86_400).optional(),
});
export type DrainRequest = z.input<typeof DrainRequestSchema>;

// ---- split (canary rollouts) -------------------------------------------------------------------

/**
 * A split of the sidecar's sessions over groups of backends, by one label (the operator's
 * `revision`): each group holds `weight` % of the sessions. Ordered: the first group holds the
 * lowest session ranks (list the canary first), so a growing group never gives back a session.
 */
export const SplitSchema = z
  .strictObject({
    label: z.string().min(1).max(317),
    groups: z
      .array(z.strictObject({ value: z.string().max(63), weight: z.number().int().min(0).max(100) }))
      .min(1)
      .max(16),
    /** Sessions moved per second for the whole sidecar; omitted = as fast as the migration concurrency allows. */
    rate: z.number().positive().max(100_000).optional(),
  })
  .superRefine((split, ctx) => {
    const sum = split.groups.reduce((a, g) => a + g.weight, 0);
    if (sum !== 100) ctx.addIssue({ code: 'custom', path: ['groups'], message: `weights must sum to 100, not ${sum}` });
    const seen = new Set<string>();
    split.groups.forEach((g, i) => {
      if (seen.has(g.value)) ctx.addIssue({ code: 'custom', path: ['groups', i, 'value'], message: `duplicate group "${g.value}"` });
      seen.add(g.value);
    });
  });
export type Split = z.input<typeof SplitSchema>;

/** The split in force (GET /v1/backends): per group its weight, its target and the sessions it holds. */
export interface SplitView {
  label: string;
  rate?: number;
  groups: { value: string; weight: number; target: number; sessions: number }[];
  /** Sessions waiting to move or moving to another group. */
  moving: number;
}

/**
 * PUT /v1/backends: the whole set; a generation lower than the sidecar's is refused (stale writer).
 * `drain` paces the backends this PUT drains or removes (its rate is shared by them: sessions per
 * second for the whole sidecar); `settings` (when given) replaces the
 * runtime settings (config path → value as in its environment variable, see config/managed.ts);
 * `split` (fenced by the same generation) holds a share of the sessions per backend group.
 */
export const PutBackendsRequestSchema = z
  .strictObject({
    generation: z.number().int().min(1),
    backends: z.array(BackendInputSchema).max(10_000),
    drain: DrainRequestSchema.optional(),
    settings: z.record(z.string(), z.string()).optional(),
    /** Omitted = no split: every backend serves every session. */
    split: SplitSchema.optional(),
  })
  .superRefine((body, ctx) => {
    const seen = new Set<string>();
    body.backends.forEach((b, i) => {
      if (seen.has(b.id)) ctx.addIssue({ code: 'custom', path: ['backends', i, 'id'], message: `duplicate backend id "${b.id}"` });
      seen.add(b.id);
    });
    for (const [path, value] of Object.entries(body.settings ?? {})) {
      const problem = checkManagedSetting(path, value);
      if (problem) ctx.addIssue({ code: 'custom', path: ['settings', path], message: problem });
    }
  });
export type PutBackendsRequest = z.input<typeof PutBackendsRequestSchema>;

/** POST /v1/sessions/{id}/migrate */
export const MigrateSessionRequestSchema = z.strictObject({ backend: backendId().optional() });
export type MigrateSessionRequest = z.input<typeof MigrateSessionRequestSchema>;

/** DELETE /v1/sessions/{id} */
export const CloseSessionRequestSchema = z.strictObject({
  code: z
    .number()
    .int()
    .refine(isSendableCloseCode, 'must be a close code a server may send: 1000-1003, 1007-1014 or 3000-4999')
    .default(1000),
  reason: z
    .string()
    .refine((r) => Buffer.byteLength(r) <= MAX_CLOSE_REASON_BYTES, `must be at most ${MAX_CLOSE_REASON_BYTES} bytes of UTF-8`)
    .default('closed by admin'),
});
export type CloseSessionRequest = z.input<typeof CloseSessionRequestSchema>;

// ---- responses ----------------------------------------------------------------------------------


export interface BackendView extends BackendDefinition {
  health: { status: HealthStatus; phi: number; consecutiveFailures: number };
  sessions: number;
}

export interface BackendsResponse {
  generation: number;
  backends: BackendView[];
  /** Present while a split is in force. */
  split?: SplitView;
}

export interface PutBackendsResponse {
  generation: number;
  /** Whether the runtime settings changed (false when the body had none). */
  settingsChanged: boolean;
  added: string[];
  updated: string[];
  /** Being drained: their sessions migrate, then they are removed. */
  removed: string[];
  changed: boolean;
}

export interface StatusResponse {
  version: string;
  uptimeSeconds: number;
  /** Bumped by each applied config-file reload. */
  configGeneration: number;
  /** The last generation applied by PUT /v1/backends (0 = none yet). */
  backendsGeneration: number;
  /** Runtime settings applied through PUT /v1/backends. */
  settings: Record<string, string>;
  sessions: {
    total: number;
    byBackend: Record<string, number>;
    byState: Record<SessionStateName, number>;
  };
  frontendPaused: boolean;
}

export interface SessionView {
  id: string;
  path: string;
  remoteAddress: string;
  backend: string | null;
  startedAt: string;
  failovers: number;
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
  bufferedBytes: number;
  state: SessionStateName;
}

export interface SessionsResponse {
  sessions: SessionView[];
  /** Pass as ?cursor= for the next page; null on the last page. */
  nextCursor: string | null;
}

export interface DrainResponse {
  id: string;
  state: BackendStateName;
  /** Sessions on the backend when the drain started (they migrate in the background). */
  sessions: number;
}

export interface MigrateSessionResponse {
  id: string;
  result: MigrationResult;
  backend: string | null;
}

export interface FrontendResponse {
  frontendPaused: boolean;
}

export type ErrorCode =
  | 'unauthorized'
  | 'not_found'
  | 'method_not_allowed'
  | 'bad_json'
  | 'invalid_field'
  | 'payload_too_large'
  | 'conflict'
  | 'stale_generation'
  | 'migration_failed';

export interface ErrorBody {
  error: { code: ErrorCode; message: string; field?: string };
}

/** Page size of GET /v1/sessions when ?limit= is not given, and its maximum. */
export const SESSIONS_PAGE = { default: 100, max: 1000 } as const;
