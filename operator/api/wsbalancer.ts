// The WsBalancer custom resource: the one definition of its spec (a zod schema with defaults,
// bounds and descriptions), from which the CRD's openAPIV3Schema in crds/ and docs/crd.md are
// generated (tools/gen-crd.ts), and with which the operator validates every object it reads — the
// test API server does not run CEL rules, and a bad spec must change nothing on the sidecars.
import { z } from 'zod';
import { BACKEND_FIELDS } from '../../common/config/backend.js';
import { checkManagedSetting, settingsOrderProblem } from '../../common/config/managed.js';

export const GROUP = 'baton.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'WsBalancer';
export const PLURAL = 'wsbalancers';
export const FINALIZER = 'baton.dev/finalizer';

/** Annotations a person (or `kubectl baton`) sets; annotations, not spec, so GitOps tools leave them alone. */
export const ANNOTATIONS = {
  /**
   * Value: the preview revision to promote (a stale value never promotes a later rollout). For a
   * canary, `<revision>@<step>` completes that step only while it is the current one (a leftover
   * value never skips a second step) and `<revision>@full` goes to the end.
   */
  promote: 'baton.dev/promote',
  /** Value: the preview (canary) revision to abort. */
  abort: 'baton.dev/abort',
  /** "true": a preview is held (no promotion starts); one already moving sessions completes. Sidecars are still kept in sync. */
  paused: 'baton.dev/paused',
} as const;

const dnsLabel = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label: lowercase letters, digits and "-"');
const dnsSubdomain = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a DNS subdomain: lowercase letters, digits, "-" and "."');
const labelKey = z
  .string()
  .min(1)
  .max(316)
  .regex(/^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/, 'must be a label key, e.g. app.kubernetes.io/version');
const port = z.number().int().min(1).max(65535);

const labelSelector = z
  .strictObject({
    matchLabels: z.record(z.string(), z.string()).optional().meta({ description: 'Labels a pod must carry, all of them.' }),
    matchExpressions: z
      .array(
        z.strictObject({
          key: labelKey.meta({ description: 'The label key the requirement applies to.' }),
          operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']).meta({ description: 'How the label relates to the values.' }),
          values: z.array(z.string()).optional().meta({ description: 'For In and NotIn; empty for Exists and DoesNotExist.' }),
        }),
      )
      .optional()
      .meta({ description: 'Label requirements a pod must meet, all of them.' }),
  })
  .meta({ description: 'A label selector, as in a Deployment.' });

const settings = z
  .record(z.string(), z.string())
  .default({})
  .superRefine((map, ctx) => {
    for (const [path, value] of Object.entries(map)) {
      const problem = checkManagedSetting(path, value);
      if (problem) ctx.addIssue({ code: 'custom', path: [path], message: problem });
    }
    // Against the sidecar defaults; a sidecar also checks against its own file and refuses.
    const disorder = settingsOrderProblem(map);
    if (disorder) ctx.addIssue({ code: 'custom', path: [disorder.path], message: disorder.message });
  })
  .meta({
    description:
      'Sidecar settings applied at runtime through the admin API, keyed by config path with the value as in its environment variable, e.g. {"balancer.algorithm": "consistent-hash", "failover.deadline": "60s"}: keys of the balancer, failover, health and session sections that need no restart (docs/config.md lists them).',
  });

const prometheusCheck = z.strictObject({
  address: z.url().meta({ description: 'Prometheus base URL, e.g. http://prometheus.monitoring:9090.' }),
  query: z.string().min(1).meta({
    description:
      'PromQL that must hold: it passes when the result is non-empty and every value is non-zero, e.g. `(sum(rate(errors_total[1m])) or vector(0)) < bool 1` (the `or vector(0)` makes "no errors yet" a 0, the `bool` makes the comparison 1 or 0).',
  }),
});

const webhookCheck = z.strictObject({
  url: z.url().meta({ description: 'POSTed a JSON body {namespace, name, activeRevision, previewRevision}; must answer 2xx.' }),
  timeoutSeconds: z.number().int().min(1).max(300).default(10).meta({ description: 'A webhook slower than this fails the check.' }),
});

const checks = z.strictObject({
  prometheus: prometheusCheck.optional().meta({ description: 'A Prometheus query that must hold.' }),
  webhook: webhookCheck.optional().meta({ description: 'An HTTP endpoint that must answer 2xx.' }),
});

const blueGreen = z.strictObject({
  previewMode: z
    .enum(['standby', 'disabled'])
    .default('standby')
    .meta({ description: 'How the preview revision is added to sidecars before promotion: standby (used only if the active revision has no usable backend) or disabled.' }),
  autoPromotion: z.boolean().default(true).meta({ description: 'Promote automatically once the delay has passed and the checks hold; false waits for the baton.dev/promote annotation.' }),
  autoPromotionDelaySeconds: z.number().int().min(0).max(86_400).default(30).meta({ description: 'How long a preview must have been ready before an automatic promotion.' }),
  migrationRate: z.number().min(0.1).max(10_000).default(50).meta({ description: 'Sessions moved per second per sidecar while the old revision drains.' }),
  drainDeadlineSeconds: z.number().int().min(1).max(86_400).default(600).meta({ description: 'After this, the remaining sessions are moved at once, ignoring the rate.' }),
  prePromotionChecks: checks.optional().meta({ description: 'Checks that must pass before an automatic promotion; a failed check aborts the rollout.' }),
});

/** A pause's duration as Argo Rollouts takes it: seconds, or a number with s, m or h. */
const duration = z
  .union([z.number().int().min(0).max(86_400 * 7), z.string().regex(/^[0-9]+(s|m|h)$/, 'must be seconds or a number with s, m or h, e.g. "30s", "5m"')])
  .meta({ description: 'Seconds, or a number with s, m or h ("30s", "5m", "1h").' });

const canaryStep = z
  .strictObject({
    setWeight: z.number().int().min(0).max(100).optional().meta({ description: 'Percent of the sessions (live and new) every sidecar holds on the canary revision; the step completes once each one holds it.' }),
    pause: z
      .strictObject({ duration: duration.optional() })
      .optional()
      .meta({ description: 'Wait this long; `pause: {}` waits until promoted (`kubectl baton promote`).' }),
    analysis: checks.optional().meta({ description: 'Checks run once at this step: passed goes on, failed aborts (see abortOnFailedAnalysis).' }),
  })
  .superRefine((step, ctx) => {
    const kinds = (['setWeight', 'pause', 'analysis'] as const).filter((k) => step[k] !== undefined);
    if (kinds.length !== 1) ctx.addIssue({ code: 'custom', message: `a step is exactly one of setWeight, pause, analysis (has ${kinds.join(', ') || 'none'})` });
    if (step.analysis && !step.analysis.prometheus && !step.analysis.webhook) ctx.addIssue({ code: 'custom', path: ['analysis'], message: 'an analysis needs a prometheus or a webhook check' });
  })
  .meta({ description: 'One of setWeight, pause or analysis.' });

const canary = z.strictObject({
  steps: z.array(canaryStep).min(1).max(64).meta({ description: 'The steps, in order; after the last one the canary is promoted (its remaining sessions moved at migrationRate) and the old revision retired.' }),
  migrationRate: z.number().min(0.1).max(10_000).default(50).meta({ description: 'Sessions moved per second per sidecar when a weight changes.' }),
  abortOnFailedAnalysis: z.boolean().default(true).meta({ description: 'A failed analysis aborts (every session back on the stable revision); false holds the step, status says why.' }),
});

export const WsBalancerSpecSchema = z.strictObject({
  sidecarSelector: labelSelector.meta({ description: 'Pods (in this namespace) that run the Baton sidecar.' }),
  sidecar: z
    .strictObject({
      adminPort: port.default(9901).meta({ description: "The sidecar's admin API port on the pod IP." }),
      adminTokenSecretRef: z
        .strictObject({
          name: dnsSubdomain.meta({ description: 'Name of the Secret.' }),
          key: z.string().min(1).max(253).default('token').meta({ description: 'Key in the Secret whose value is the token.' }),
        })
        .optional()
        .meta({ description: 'Secret (in this namespace) holding the admin API bearer token.' }),
    })
    .prefault({})
    .meta({ description: 'How the operator reaches each sidecar.' }),
  backend: z.strictObject({
    service: dnsLabel.meta({ description: 'Service whose EndpointSlices (label kubernetes.io/service-name) list the backends.' }),
    port: z
      .union([port, z.string().min(1).max(15)])
      .meta({ description: "A name matches the Service port's name; a number matches the endpoint (target) port, or a slice's only port." }),
    scheme: z.enum(['ws', 'wss']).default('ws').meta({ description: 'Scheme of the backend URLs the sidecars dial.' }),
    revisionLabel: labelKey.default('pod-template-hash').meta({ description: "Pod label whose value names a backend's revision." }),
    weight: BACKEND_FIELDS.weight.meta({ description: 'Balancing weight of every backend.' }),
  }).meta({ description: 'The backends: the endpoints of one Service.' }),
  settings,
  rollout: z
    .strictObject({
      strategy: z.enum(['blueGreen', 'canary']).default('blueGreen').meta({ description: 'How a new backend revision takes over: blueGreen (all sessions at once after one decision) or canary (by steps of weight).' }),
      blueGreen: blueGreen.prefault({}).meta({ description: 'The blue/green cutover: preview, promotion, migration, abort.' }),
      canary: canary.optional().meta({ description: 'The canary steps (required with strategy canary): a share of all sessions, live and new, on the new revision at each step.' }),
    })
    .superRefine((rollout, ctx) => {
      if (rollout.strategy === 'canary' && !rollout.canary) ctx.addIssue({ code: 'custom', path: ['canary'], message: 'strategy canary needs canary.steps' });
    })
    .prefault({})
    .meta({ description: 'What happens when a new backend revision becomes ready.' }),
});

export type WsBalancerSpec = z.output<typeof WsBalancerSpecSchema>;
export type CanarySpec = NonNullable<WsBalancerSpec['rollout']['canary']>;
export type CanaryStep = CanarySpec['steps'][number];
export type ChecksSpec = z.output<typeof checks>;

/** A pause's duration in milliseconds. */
export function durationMs(d: number | string): number {
  if (typeof d === 'number') return d * 1000;
  const n = Number(d.slice(0, -1));
  return n * { s: 1000, m: 60_000, h: 3_600_000 }[d.slice(-1) as 's' | 'm' | 'h'];
}

export type Phase = 'Healthy' | 'Progressing' | 'Paused' | 'Degraded';
export type ConditionType = 'Available' | 'Progressing' | 'Promoted' | 'SidecarsSynced' | 'InvalidSpec';
export const CONDITION_TYPES: readonly ConditionType[] = ['Available', 'Progressing', 'Promoted', 'SidecarsSynced', 'InvalidSpec'];

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface RevisionStatus {
  name: string;
  role: 'active' | 'preview' | 'previous' | 'aborted' | 'other';
  ready: number;
  serving: number;
  terminating: number;
  sessions: number;
}

/** Where a blue/green rollout stands; kept in status so a new leader carries on where the old one was. */
export interface RolloutStatus {
  /** When the current preview was first seen ready (ISO time). */
  previewSince?: string;
  /** When promotion started: the preview is enabled and the active revision drains. */
  promotingSince?: string;
  /** Result of the pre-promotion checks for the current preview. */
  checks?: { result: 'passed' | 'failed'; message: string };
  /** A canary's progress (strategy canary). */
  canary?: CanaryStatus;
}

/** Where a canary stands: enough for a new leader to resume the step without moving a session twice. */
export interface CanaryStatus {
  /** Index of the current step; steps.length once every step is done (promotion). */
  step: number;
  /** When the current step began (ISO time). */
  stepSince: string;
  /** Percent of the sessions asked on the canary. */
  weight: number;
  /** The current step, as text ("setWeight 10", "pause 30s", "analysis"). */
  stepText?: string;
  /** Every session is being moved back to the stable revision; then the canary is dropped. */
  aborting?: boolean;
  /** The last analysis and the step it ran at. */
  analysis?: { step: number; result: 'passed' | 'failed'; message: string };
  /** Why the canary waits, when it waits on a person (a failed analysis held, a pause without duration). */
  message?: string;
  /** The share measured on each sidecar. */
  sidecars?: CanaryShare[];
}

/** One sidecar's split as it reported it. */
export interface CanaryShare {
  name: string;
  /** Sessions on the canary revision, its target, and sessions on the stable one. */
  canary: number;
  target: number;
  stable: number;
  /** Sessions still waiting to move or moving. */
  moving: number;
}

export interface WsBalancerStatus {
  observedGeneration?: number;
  phase?: Phase;
  activeRevision?: string;
  previewRevision?: string;
  /** The revision retired by the last promotion. */
  previousRevision?: string;
  /** Every revision retired by a promotion that still has endpoints: none is taken as a new preview. */
  retiredRevisions?: string[];
  /** The revision of an aborted rollout; never taken as a new preview while it has endpoints. */
  abortedRevision?: string;
  rollout?: RolloutStatus;
  revisions?: RevisionStatus[];
  sessions?: number;
  sidecars?: { desired: number; synced: number; unreachable: number };
  /** Generation of the backend set last pushed to the sidecars (PUT /v1/backends). */
  backendsGeneration?: number;
  conditions?: Condition[];
}

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

export interface WsBalancer {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  /** Unvalidated: what the API server stored. */
  spec: unknown;
  status?: WsBalancerStatus;
}

export type SpecCheck = { ok: true; spec: WsBalancerSpec } | { ok: false; field: string; message: string };

/** Validates and defaults a stored spec; the first problem names its field as `spec.a.b[0].c`. */
export function validateSpec(raw: unknown): SpecCheck {
  const result = WsBalancerSpecSchema.safeParse(raw ?? {});
  if (result.success) return { ok: true, spec: result.data };
  const issue = result.error.issues[0]!;
  const field = issue.path.reduce<string>(
    (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(String(p)) ? `${acc}.${String(p)}` : `${acc}[${JSON.stringify(p)}]`),
    'spec',
  );
  return { ok: false, field, message: `${field}: ${issue.message}` };
}
