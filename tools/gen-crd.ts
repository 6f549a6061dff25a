// Writes crds/baton.dev_wsbalancers.yaml (the WsBalancer CustomResourceDefinition) and docs/crd.md
// from operator/api/wsbalancer.ts, the one definition of the resource. Run after a build:
//
//   node dist/tools/gen-crd.js           # (re)write both files
//   node dist/tools/gen-crd.js --check   # exit 1 if either is out of date
//
// The spec's schema is zod's JSON Schema made structural (the form apiextensions.k8s.io/v1
// requires); the status has no zod schema, so its schema is written here, checked by tsc against the
// status interfaces. test/crd.test.ts asserts both files equal what this module renders.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stringify } from 'yaml';
import { z } from 'zod';
import {
  ANNOTATIONS,
  API_VERSION,
  CONDITION_TYPES,
  FINALIZER,
  GROUP,
  KIND,
  PLURAL,
  VERSION,
  WsBalancerSpecSchema,
  type Condition,
  type ConditionType,
  type Phase,
  type RevisionStatus,
  type RolloutStatus,
  type CanaryShare,
  type CanaryStatus,
  type WsBalancerStatus,
} from '../operator/api/wsbalancer.js';

/** Output files, relative to this module (dist/tools/ → repo root). */
export const CRD_PATH = fileURLToPath(new URL('../../crds/baton.dev_wsbalancers.yaml', import.meta.url));
export const DOCS_PATH = fileURLToPath(new URL('../../docs/crd.md', import.meta.url));

// ---- the schema ----------------------------------------------------------------------------------

/** A node of an apiextensions.k8s.io/v1 openAPIV3Schema (the keywords this CRD uses). */
export interface Schema {
  description?: string;
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  format?: string;
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  'x-kubernetes-int-or-string'?: true;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema;
  'x-kubernetes-list-type'?: 'atomic' | 'map' | 'set';
  'x-kubernetes-list-map-keys'?: string[];
}

type JsonSchema = z.core.JSONSchema.JSONSchema;

/**
 * The formats the apiserver validates (apiextensions-apiserver's validation/formats.go, compared
 * with "-" removed, so date-time is datetime). Any other format is not checked there and is warned
 * about when the CRD is created, so it is dropped.
 */
export const K8S_FORMATS: ReadonlySet<string> = new Set([
  'bsonobjectid', 'uri', 'email', 'hostname', 'ipv4', 'ipv6', 'cidr', 'mac', 'uuid', 'uuid3', 'uuid4', 'uuid5',
  'isbn', 'isbn10', 'isbn13', 'creditcard', 'ssn', 'hexcolor', 'rgbcolor', 'byte', 'password', 'date', 'duration', 'datetime',
]);

/** Validation keywords that mean the same in JSON Schema 2020-12 and in apiextensions v1. */
const VALUE_KEYWORDS = ['enum', 'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems'] as const;

/**
 * Everything structural() reads or deliberately drops. Any other keyword is an error rather than
 * passed through, so a new kind of zod schema in the spec gets a look before it reaches a cluster.
 */
const HANDLED = new Set<string>([
  '$schema', 'description', 'type', 'format', 'default', 'anyOf', 'properties', 'required', 'items', 'additionalProperties', 'propertyNames',
  ...VALUE_KEYWORDS,
]);

const SCHEMA_TYPES = new Set(['object', 'array', 'string', 'integer', 'number', 'boolean']);

/** zod's JSON Schema as a structural schema; `path` (e.g. spec.backend) only names errors. */
export function structural(node: JsonSchema, path: string): Schema {
  const unhandled = Object.keys(node).filter((k) => !HANDLED.has(k));
  if (unhandled.length > 0) throw new Error(`${path}: no structural form for ${unhandled.join(', ')} (extend tools/gen-crd.ts)`);
  const out: Schema = {};
  if (node.description !== undefined) out.description = node.description;
  if (node.anyOf !== undefined) {
    Object.assign(out, intOrString(node.anyOf, path));
  } else {
    if (typeof node.type !== 'string' || !SCHEMA_TYPES.has(node.type)) throw new Error(`${path}: type ${JSON.stringify(node.type)} has no structural form`);
    out.type = node.type as Schema['type'];
  }
  if (node.format !== undefined && K8S_FORMATS.has(node.format.replaceAll('-', ''))) out.format = node.format;
  if (node.default !== undefined) out.default = node.default;
  for (const k of VALUE_KEYWORDS) if (node[k] !== undefined) (out as Record<string, unknown>)[k] = node[k];

  // A record's keys are strings anyway; any narrower propertyNames would be lost, so it is refused.
  if (node.propertyNames !== undefined && JSON.stringify(node.propertyNames) !== '{"type":"string"}') {
    throw new Error(`${path}: propertyNames ${JSON.stringify(node.propertyNames)} has no structural form`);
  }
  if (node.properties !== undefined) {
    out.properties = Object.fromEntries(Object.entries(node.properties).map(([k, v]) => [k, structural(asNode(v, `${path}.${k}`), `${path}.${k}`)]));
    if (node.required !== undefined && node.required.length > 0) out.required = [...node.required];
  }
  if (node.items !== undefined) {
    if (Array.isArray(node.items)) throw new Error(`${path}: tuple items have no structural form`);
    out.items = structural(asNode(node.items, `${path}[]`), `${path}[]`);
  }
  // additionalProperties: false (strictObject) is dropped: the apiserver prunes unknown fields of a
  // structural schema anyway, and false is not allowed next to properties. A schema (a record) stays.
  if (node.additionalProperties !== undefined && node.additionalProperties !== false) {
    if (node.properties !== undefined) throw new Error(`${path}: additionalProperties next to properties is not structural`);
    out.additionalProperties = structural(asNode(node.additionalProperties, `${path}.*`), `${path}.*`);
  }
  return out;
}

function asNode(v: unknown, path: string): JsonSchema {
  if (typeof v !== 'object' || v === null) throw new Error(`${path}: boolean schema has no structural form`);
  return v as JsonSchema;
}

/**
 * `anyOf: [integer, string]` (a port number or name) as `x-kubernetes-int-or-string`. A structural
 * schema allows no types under anyOf, so each branch's bounds move up to the node itself: there the
 * number keywords apply only to integers and the string keywords only to strings (in JSON Schema and
 * in the apiserver, which types the node as [integer, string]), which keeps the union's meaning.
 */
function intOrString(branches: JsonSchema[], path: string): Schema {
  const allowed: Record<string, readonly string[]> = { integer: ['type', 'minimum', 'maximum'], string: ['type', 'minLength', 'maxLength', 'pattern'] };
  const types = branches.map((b) => String(b.type)).sort();
  if (types.join() !== 'integer,string') throw new Error(`${path}: anyOf of ${types.join(', ')} has no structural form (only integer or string)`);
  const out: Record<string, unknown> = { 'x-kubernetes-int-or-string': true };
  for (const b of branches) {
    for (const [k, v] of Object.entries(b)) {
      if (!allowed[String(b.type)]!.includes(k)) throw new Error(`${path}: ${k} in the ${String(b.type)} branch has no structural form`);
      if (k !== 'type') out[k] = v;
    }
  }
  return out as Schema;
}

// The status is written by the operator only, so its schema documents more than it guards.

type RequiredKeys<T> = { [K in keyof T]-?: undefined extends T[K] ? never : K }[keyof T];

/**
 * An object schema for the TypeScript type T: tsc checks that `properties` names exactly T's
 * fields and `required` exactly its non-optional ones, so the status schema cannot drift from
 * the interfaces.
 */
function objectOf<T>(description: string, properties: { [K in keyof T]-?: Schema }, required: { [K in RequiredKeys<T>]: true }): Schema {
  const names = Object.keys(required);
  return { description, type: 'object', properties, ...(names.length > 0 ? { required: names } : {}) };
}

const string = (description: string): Schema => ({ description, type: 'string' });
const integer = (description: string): Schema => ({ description, type: 'integer' });
const time = (description: string): Schema => ({ description, type: 'string', format: 'date-time' });
const enumOf = (description: string, meanings: Record<string, string>): Schema => ({
  description: `${description} ${Object.entries(meanings).map(([v, m]) => `${v}: ${m}.`).join(' ')}`,
  type: 'string',
  enum: Object.keys(meanings),
});

/** What each phase means (the descriptions of status.phase and the docs' phase table). */
const PHASES = {
  Healthy: 'the active revision has ready endpoints, no rollout is under way and every sidecar answers',
  Progressing: 'a preview revision is waiting for its promotion delay or checks, or its promotion is moving sessions',
  Paused: `a preview revision waits for a person: ${ANNOTATIONS.paused} is "true", or autoPromotion is false and ${ANNOTATIONS.promote} does not name it yet`,
  Degraded: 'the active revision has no ready endpoint, the last rollout was aborted (while the aborted revision still has endpoints), a sidecar does not answer, or the spec is invalid',
} satisfies Record<Phase, string>;

/** What each condition means when True (the docs' condition table). */
const CONDITIONS = {
  Available: 'the active revision has at least one ready endpoint',
  Progressing: 'a preview revision exists: it is waiting to be promoted or its promotion is moving sessions; False when idle or after an abort',
  Promoted: 'the active revision serves and no rollout is pending or aborted; False while a preview waits or is being promoted, after an abort, and while the Service has no ready endpoint',
  SidecarsSynced: 'every running sidecar pod answered and holds the current backend set (status.backendsGeneration)',
  InvalidSpec: 'the spec failed validation; the message names the field, and nothing changes on the sidecars until it is fixed',
} satisfies Record<ConditionType, string>;

const ROLES = {
  active: 'serves new sessions',
  preview: 'being rolled out',
  previous: 'retired by the last promotion',
  aborted: 'its rollout was aborted',
  other: 'none of these; left out of the sidecars',
} satisfies Record<RevisionStatus['role'], string>;

const CHECK_RESULTS = {
  passed: 'the promotion may start',
  failed: 'the rollout is aborted',
} satisfies Record<NonNullable<RolloutStatus['checks']>['result'], string>;

const ANALYSIS_RESULTS = {
  passed: 'the next step starts',
  failed: 'the canary is aborted (or held, with abortOnFailedAnalysis false)',
} satisfies Record<NonNullable<CanaryStatus['analysis']>['result'], string>;

const CONDITION: Schema = objectOf<Condition>(
  'The latest observation of one aspect of the WsBalancer.',
  {
    type: { description: 'Which aspect.', type: 'string', enum: [...CONDITION_TYPES] },
    status: { description: 'True, False or Unknown.', type: 'string', enum: ['True', 'False', 'Unknown'] },
    reason: string('Why, as one CamelCase word.'),
    message: string('Why, for a person.'),
    lastTransitionTime: time('When status last changed.'),
    observedGeneration: integer('The metadata.generation this condition was computed from.'),
  },
  { type: true, status: true, reason: true, message: true, lastTransitionTime: true },
);

export const STATUS_SCHEMA: Schema = objectOf<WsBalancerStatus>(
  'What the operator observed and did; written by the operator only.',
  {
    observedGeneration: integer('The metadata.generation this status was computed from.'),
    phase: enumOf('Summary of the state.', PHASES),
    activeRevision: string('The revision (value of spec.backend.revisionLabel) that serves new sessions.'),
    previewRevision: string('The revision being rolled out, until it is promoted or aborted.'),
    previousRevision: string('The revision retired by the last promotion.'),
    retiredRevisions: { type: 'array', items: { type: 'string' }, description: 'Every revision retired by a promotion that still has endpoints: none is taken as a new preview.' },
    abortedRevision: string('The revision of an aborted rollout; never taken as a new preview while it has endpoints.'),
    rollout: objectOf<RolloutStatus>(
      'Where the blue/green rollout of the preview stands.',
      {
        previewSince: time('When the current preview was first seen ready.'),
        promotingSince: time('When promotion started: the preview is enabled and the active revision drains.'),
        checks: objectOf<NonNullable<RolloutStatus['checks']>>(
          'Result of the pre-promotion checks for the current preview.',
          { result: enumOf('Result.', CHECK_RESULTS), message: string('What the checks saw.') },
          { result: true, message: true },
        ),
        canary: objectOf<CanaryStatus>(
          'Where a canary stands (strategy canary); the preview revision is the canary.',
          {
            step: integer('Index (from 0) of the current step; the number of steps once every step is done.'),
            stepSince: time('When the current step began.'),
            weight: integer('Percent of the sessions asked on the canary.'),
            stepText: string('The current step, e.g. "setWeight 10", "pause 30s", "analysis".'),
            aborting: { type: 'boolean', description: 'Every session is moving back to the active revision; then the canary is dropped.' },
            analysis: objectOf<NonNullable<CanaryStatus['analysis']>>(
              'The last analysis.',
              { step: integer('The step it ran at.'), result: enumOf('Result.', ANALYSIS_RESULTS), message: string('What the checks saw.') },
              { step: true, result: true, message: true },
            ),
            message: string('Why the canary waits on a person: a pause until promoted, a failed analysis held.'),
            sidecars: {
              description: 'The share measured on each sidecar.',
              type: 'array',
              items: objectOf<CanaryShare>(
                'One sidecar.',
                {
                  name: string('The sidecar pod.'),
                  canary: integer('Sessions on the canary revision.'),
                  target: integer('Sessions the weight asks on the canary.'),
                  stable: integer('Sessions on the active revision.'),
                  moving: integer('Sessions waiting to move or moving.'),
                },
                { name: true, canary: true, target: true, stable: true, moving: true },
              ),
            },
          },
          { step: true, stepSince: true, weight: true },
        ),
      },
      {},
    ),
    revisions: {
      description: "Every revision among the Service's endpoints, and the ones named above.",
      type: 'array',
      items: objectOf<RevisionStatus>(
        'One revision.',
        {
          name: string('Value of spec.backend.revisionLabel ("" for endpoints without the label).'),
          role: enumOf('Its part in the rollout.', ROLES),
          ready: integer('Ready endpoints that are not terminating.'),
          serving: integer('Serving endpoints (terminating ones included).'),
          terminating: integer('Terminating endpoints.'),
          sessions: integer('Sessions on its backends, summed over the sidecars.'),
        },
        { name: true, role: true, ready: true, serving: true, terminating: true, sessions: true },
      ),
    },
    sessions: integer('Sessions on all backends, summed over the sidecars that answered.'),
    sidecars: objectOf<NonNullable<WsBalancerStatus['sidecars']>>(
      'The sidecar pods spec.sidecarSelector matches.',
      {
        desired: integer('Running sidecar pods: the ones the backend set is pushed to.'),
        synced: integer('Sidecars that hold the current backend set.'),
        unreachable: integer("Sidecars whose admin API did not answer."),
      },
      { desired: true, synced: true, unreachable: true },
    ),
    backendsGeneration: integer('Generation of the backend set last pushed to the sidecars (PUT /v1/backends).'),
    conditions: {
      description: 'Available, Progressing, Promoted, SidecarsSynced and InvalidSpec, one of each at most.',
      type: 'array',
      items: CONDITION,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
  },
  {},
);

export const SPEC_SCHEMA: Schema = {
  description: 'Which sidecars to drive, where their backends are, and how a new backend revision is rolled out.',
  ...structural(z.toJSONSchema(WsBalancerSpecSchema, { io: 'input' }), 'spec'),
};

const PRINTER_COLUMNS = [
  { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
  { name: 'Active', type: 'string', jsonPath: '.status.activeRevision' },
  { name: 'Preview', type: 'string', jsonPath: '.status.previewRevision' },
  { name: 'Synced', type: 'integer', jsonPath: '.status.sidecars.synced' },
  { name: 'Sessions', type: 'integer', jsonPath: '.status.sessions' },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
];

const SHORT_NAME = 'wsb';
const CATEGORY = 'baton';

/** The CustomResourceDefinition, as an object. */
export function crd(): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: KIND.toLowerCase(), shortNames: [SHORT_NAME], categories: [CATEGORY] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: PRINTER_COLUMNS,
          schema: {
            openAPIV3Schema: {
              description:
                "A WsBalancer keeps the backend set of every Baton sidecar it selects in step with a Service's endpoints, and rolls out a new backend revision blue/green without closing client sessions.",
              type: 'object',
              properties: {
                apiVersion: { description: 'The versioned schema of this object.', type: 'string' },
                kind: { description: 'The REST resource this object represents.', type: 'string' },
                metadata: { type: 'object' },
                spec: SPEC_SCHEMA,
                status: STATUS_SCHEMA,
              },
              required: ['spec'],
            },
          },
        },
      ],
    },
  };
}

/** The full text of crds/baton.dev_wsbalancers.yaml. */
export function renderCrd(): string {
  // No anchors/aliases for repeated objects, no folding of long descriptions.
  return `# Generated by tools/gen-crd.ts from operator/api/wsbalancer.ts; do not edit.\n${stringify(crd(), { aliasDuplicateObjects: false, lineWidth: 0 })}`;
}

// ---- the reference page --------------------------------------------------------------------------

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s: string) => `\`${s.replace(/\|/g, '\\|')}\``;

function typeText(s: Schema): string {
  if (s['x-kubernetes-int-or-string']) return 'integer or string';
  if (s.type === 'array') return `[]${typeText(s.items!)}`;
  if (s.type === 'object' && s.additionalProperties) return `map[string]${typeText(s.additionalProperties)}`;
  return s.type!;
}

function range(lo: number | undefined, hi: number | undefined): string | undefined {
  if (lo !== undefined && hi !== undefined) return `${lo}..${hi}`;
  if (lo !== undefined) return `≥ ${lo}`;
  if (hi !== undefined) return `≤ ${hi}`;
  return undefined;
}

function boundsText(s: Schema): string {
  const parts: string[] = [];
  const value = range(s.minimum, s.maximum);
  const length = range(s.minLength, s.maxLength);
  if (value) parts.push(s['x-kubernetes-int-or-string'] ? `integer ${value}` : value);
  if (length) parts.push(s['x-kubernetes-int-or-string'] ? `string of length ${length}` : `length ${length}`);
  const items = range(s.minItems, s.maxItems);
  if (items) parts.push(`${items} items`);
  if (s.enum) parts.push(`one of ${s.enum.map((v) => code(String(v))).join(', ')}`);
  if (s.pattern) parts.push(`matches ${code(s.pattern)}`);
  if (s.format) parts.push(`format ${s.format}`);
  return parts.join('; ');
}

/** One table row per field under `node`, depth first, with full paths such as spec.backend.port. */
function fieldRows(node: Schema, path: string, withDefaults: boolean): string[] {
  const rows: string[] = [];
  for (const [name, field] of Object.entries(node.properties ?? {})) {
    const p = `${path}.${name}`;
    const dflt = node.required?.includes(name) ? '*required*' : field.default !== undefined ? code(JSON.stringify(field.default)) : '';
    const cells = [code(p), code(typeText(field)), ...(withDefaults ? [dflt] : []), boundsText(field), cell(field.description ?? '')];
    rows.push(`| ${cells.join(' | ')} |`);
    rows.push(...fieldRows(field, p, withDefaults));
  }
  if (node.items) rows.push(...fieldRows(node.items, `${path}[]`, withDefaults));
  if (node.additionalProperties) rows.push(...fieldRows(node.additionalProperties, `${path}.*`, withDefaults));
  return rows;
}

const EXAMPLE = `apiVersion: ${API_VERSION}
kind: ${KIND}
metadata:
  name: chat
  namespace: chat
spec:
  # The gateway pods that run the Baton sidecar in front of the chat backends.
  sidecarSelector:
    matchLabels:
      app.kubernetes.io/name: chat-gateway
  sidecar:
    adminPort: 9901
    adminTokenSecretRef:
      name: baton-admin   # key "token"
  backend:
    service: chat-backend
    port: ws
    # Two Deployments, chat-blue and chat-green, behind the Service; their pods carry the version.
    revisionLabel: app.kubernetes.io/version
  settings:
    failover.deadline: 60s
    balancer.slowStart: 30s
  rollout:
    strategy: blueGreen
    blueGreen:
      previewMode: standby
      autoPromotion: true
      autoPromotionDelaySeconds: 120
      migrationRate: 100
      drainDeadlineSeconds: 900
      prePromotionChecks:
        prometheus:
          address: http://prometheus.monitoring:9090
          # Holds while the sidecars lose fewer than one session every 10 s.
          query: '(sum(rate(baton_sessions_closed_total{reason=~"failover-deadline|buffer-full"}[5m])) or vector(0)) < bool 0.1'
`;

/** spec.rollout of a canary, for the docs (a fragment of the example's spec). */
export const CANARY_EXAMPLE = `rollout:
  strategy: canary
  canary:
    migrationRate: 50          # sessions moved per second per sidecar when a weight changes
    abortOnFailedAnalysis: true
    steps:
      - setWeight: 10          # 10 % of all sessions, live and new, on the new revision
      - pause: { duration: 5m }
      - analysis:
          prometheus:
            address: http://prometheus.monitoring:9090
            query: '(sum(rate(baton_sessions_closed_total{reason=~"failover-deadline|buffer-full"}[5m])) or vector(0)) < bool 0.1'
      - setWeight: 50
      - pause: {}              # until kubectl baton promote chat
      - setWeight: 100
`;

const ANNOTATION_DOCS = {
  promote: [
    'the name of the preview revision; for a canary `<revision>@<step>` or `<revision>@full`',
    `Starts the promotion of that preview now, without waiting for the delay or the checks (not while ${ANNOTATIONS.paused} is "true"). A value naming an older revision never promotes a later rollout, so the annotation can be left in place. For a canary, \`<revision>@<step>\` (the step's index from 0, as in status.rollout.canary.step) completes that step while it is the current one, so a leftover value never skips a second step; \`<revision>@full\` skips every remaining step. \`kubectl baton promote [--full]\` writes them.`,
  ],
  abort: [
    'the name of the preview revision',
    'Aborts that rollout, even while its promotion is moving sessions (they move back): the active revision stays, and the aborted revision is never taken as a preview again while it has endpoints. A canary first moves every session back (weight 0), then drops the revision.',
  ],
  paused: [
    '`"true"`',
    'A preview is not promoted, automatically or by annotation; abort still works, and a promotion already under way goes on. The sidecars are still kept in step with the endpoints.',
  ],
} satisfies Record<keyof typeof ANNOTATIONS, [string, string]>;

function annotationTable(): string {
  const rows = Object.entries(ANNOTATION_DOCS).map(([k, [value, meaning]]) => `| \`${ANNOTATIONS[k as keyof typeof ANNOTATIONS]}\` | ${value} | ${cell(meaning)} |`);
  return ['| annotation | value | effect |', '|---|---|---|', ...rows].join('\n');
}

const meaningTable = (head: string, meanings: Record<string, string>) =>
  [`| ${head} | meaning |`, '|---|---|', ...Object.entries(meanings).map(([k, m]) => `| \`${k}\` | ${cell(m)} |`)].join('\n');

/** The full text of docs/crd.md. */
export function renderCrdDocs(): string {
  const columns = ['NAME', ...PRINTER_COLUMNS.map((c) => c.name.toUpperCase())].map(code).join(', ');
  return `# The WsBalancer resource

<!-- Generated by tools/gen-crd.ts from operator/api/wsbalancer.ts.
     Do not edit by hand: run \`npm run docs:crd\`. -->

A **${KIND}** (\`${API_VERSION}\`, short name \`${SHORT_NAME}\`, category \`${CATEGORY}\`) tells the Baton
operator which pods run the Baton sidecar and which Service holds the WebSocket backends behind
them. The operator keeps every selected sidecar's backend set in step with the Service's
EndpointSlices through the sidecar's admin API ([docs/admin-api.md](admin-api.md)), and rolls a new
backend revision out blue/green: the new revision waits as the *preview*, is promoted (after a delay
and optional checks, or by an annotation), and the old revision's sessions are moved to it by planned
migration, which closes no client connection and loses no message.

Install the CustomResourceDefinition with \`kubectl apply -f crds/baton.dev_wsbalancers.yaml\`.
\`kubectl get ${SHORT_NAME}\` (or \`kubectl get ${CATEGORY}\`) shows the columns ${columns}.

## Example

\`\`\`yaml
${EXAMPLE}\`\`\`

The sidecars in the \`chat-gateway\` pods get the endpoints of the \`chat-backend\` Service's port
named \`ws\` as backends, grouped into revisions by the pod label \`app.kubernetes.io/version\`. A new
version deployed next to the running one becomes the preview; it is promoted two minutes after it
is first seen ready if the sidecars have not been losing sessions, and then each sidecar moves up to
100 sessions a second to it. Once no session is left on the old version, scale its Deployment down.

The check's query shows the two things to get right in a Prometheus check, which passes when the
result is non-empty and every value is non-zero: \`< bool 0.1\` returns 1 or 0 (a plain \`< 0.1\`
filters, returning the value itself, and a rate of 0 would fail the check), and \`or vector(0)\`
keeps the result non-empty while the counter has no series yet.

## How a rollout goes

Backends are grouped into *revisions* by the value of the pod label \`spec.backend.revisionLabel\`
(default \`pod-template-hash\`, which a Deployment changes with every change of its pod template).
An endpoint is *ready* when its EndpointSlice condition \`serving\` is true and \`terminating\` is not
(\`ready\` where the API server sets no \`serving\`): correct also for a Service with
\`publishNotReadyAddresses\`, whose \`ready\` is always true ([operator.md](operator.md#endpoints-and-backends)).

1. The first revision seen with ready endpoints becomes the **active** revision; its endpoints are
   enabled on every sidecar.
2. Another revision with ready endpoints becomes the **preview** (phase \`Progressing\`). It is added to
   the sidecars as \`standby\` backends (used only if the active revision has no usable backend) or,
   with \`previewMode: disabled\`, disabled.
3. The promotion starts when \`${ANNOTATIONS.promote}\` names the preview, or, with \`autoPromotion\`,
   once \`autoPromotionDelaySeconds\` have passed since the preview was first seen ready and the
   \`prePromotionChecks\` have passed. A failed check aborts the rollout. With \`autoPromotion: false\`
   or \`${ANNOTATIONS.paused}: "true"\` the rollout waits (phase \`Paused\`).
4. Promoting: the preview is enabled and the active revision's backends drain: every sidecar moves
   their sessions to the preview by planned migration, \`migrationRate\` sessions a second, and the
   rest at once after \`drainDeadlineSeconds\`.
5. When no session is left on the old revision and every sidecar holds the new backend set, the
   preview becomes the active revision (condition \`Promoted\`). The old one is recorded as
   \`status.previousRevision\` and in \`status.retiredRevisions\`, and left out of the sidecars'
   backend set; a retired revision is never taken as a new preview while it has endpoints.

A rollout is **aborted** by \`${ANNOTATIONS.abort}\`, by a failed check, or when the preview loses all
its endpoints; the active revision stays. If the active revision loses all its endpoints instead (a
Deployment's rolling update replaced every pod), the preview, or else the revision with the most
ready endpoints, becomes active at once.

### Canary

With \`rollout.strategy: canary\` the new revision (still \`status.previewRevision\`) takes a share of
**all** sessions, live and new, step by step, instead of all at once. Where a traffic weight moves
only new connections, here every sidecar moves the fewest live sessions (planned migration, at
\`canary.migrationRate\`) so that the share on the canary is the weight asked, and keeps it for new
sessions; a session moved at 10 % is still on the canary at 50 % (none moves twice).

\`\`\`yaml
${CANARY_EXAMPLE}\`\`\`

1. A new ready revision starts the canary at its first step (events \`PreviewDetected\`, \`StepStarted\`);
   both revisions' backends are enabled on every sidecar, with a split by revision.
2. \`setWeight: N\` asks every sidecar to hold N % of its sessions on the canary; the step completes
   (\`WeightReached\`) when each one reports its share reached: nothing left to move and the canary's
   sessions at the target (within one session or 2 %, as departures leave a group short until
   arrivals fill it). The share per sidecar is in \`status.rollout.canary.sidecars\`.
3. \`pause: {duration: 5m}\` waits that long; \`pause: {}\` waits for \`kubectl baton promote\` (phase
   \`Paused\`).
4. \`analysis\` runs its checks once (the same Prometheus and webhook checks as \`prePromotionChecks\`):
   passed goes on (\`AnalysisPassed\`); failed (\`AnalysisFailed\`) aborts, or with
   \`abortOnFailedAnalysis: false\` holds the step until promoted or aborted.
5. After the last step the promotion of blue/green takes over: the canary is enabled alone, the split
   ends, the sessions left on the old revision move at \`migrationRate\` (none after a last
   \`setWeight: 100\`), and the old revision is retired (\`Promoted\`).

An abort (\`${ANNOTATIONS.abort}\`, \`kubectl baton abort\`, or a failed analysis) asks weight 0: every
session moves back to the active revision once, then the canary's backends are dropped and the
revision is recorded as \`status.abortedRevision\`. \`${ANNOTATIONS.paused}: "true"\` holds the current step.
Everything a step needs is in \`status.rollout.canary\` (the step, when it began, the weight asked, the
last analysis), so a restarted operator or a new leader resumes the step; the split it pushes again is
the same, which moves nobody.

To keep the old revision running until its sessions have moved, run each revision as its own
Deployment behind the same Service, with a label that tells them apart (as in the example), and
scale the old one down after the promotion. A single Deployment works too, but its rolling update
replaces the old pods on its own schedule: see [Rolling Deployments](#rolling-deployments-without-dropped-sessions).

## Spec

The API server checks the types, bounds, patterns and enums below and fills in the defaults (the
CRD's schema is generated from the operator's own definition). The operator validates every object
again, with the rules a CRD schema cannot express (which \`settings\` keys exist and may be set at
runtime, their values, URLs): an invalid spec sets the condition \`InvalidSpec\`, whose message names
the field (e.g. \`spec.settings["listen.address"]: ...\`), and changes nothing on the sidecars.

| field | type | default | bounds | description |
|---|---|---|---|---|
${fieldRows(SPEC_SCHEMA, 'spec', true).join('\n')}

## Annotations

Set by a person (or a pipeline) on the ${KIND}, not in its spec, so GitOps tools leave them alone.

${annotationTable()}

\`\`\`sh
kubectl annotate ${SHORT_NAME} chat ${ANNOTATIONS.promote}="$(kubectl get ${SHORT_NAME} chat -o jsonpath='{.status.previewRevision}')" --overwrite
kubectl annotate ${SHORT_NAME} chat ${ANNOTATIONS.paused}=true --overwrite
\`\`\`

## Status

Written by the operator only (through the status subresource).

| field | type | bounds | description |
|---|---|---|---|
${fieldRows(STATUS_SCHEMA, 'status', false).join('\n')}

### Phases

${meaningTable('phase', PHASES)}

### Conditions

Each condition has \`type\`, \`status\` (\`True\`, \`False\` or \`Unknown\`), \`reason\`, \`message\`,
\`lastTransitionTime\` and \`observedGeneration\`, as in any Kubernetes API.

${meaningTable('type (when True)', CONDITIONS)}

To wait for a rollout to finish, e.g. in a pipeline after deploying a new revision:

\`\`\`sh
kubectl wait --for=condition=Progressing ${SHORT_NAME}/NAME --timeout=5m   # the new revision was seen
kubectl wait --for=condition=Promoted ${SHORT_NAME}/NAME --timeout=30m     # and it is active
\`\`\`

\`Promoted\` is also True before a rollout starts, hence the first wait. An aborted rollout leaves
\`Promoted\` False, so the second wait times out; \`kubectl describe ${SHORT_NAME} NAME\` shows why.

## Deleting a ${KIND}

The operator puts the finalizer \`${FINALIZER}\` on every ${KIND}. When one is deleted,
the operator stops managing its sidecars and removes the finalizer; it does not touch the sidecars,
which keep serving their last backend set, sessions included. Nothing updates that set any more: a
backend that goes away is handled by the sidecars' failover and health checks, and a new endpoint
is not added. A sidecar that restarts starts from its configuration file's \`backends\` again.

If the operator is not running, the deletion waits for it; removing the finalizer by hand
(\`kubectl patch ${SHORT_NAME} NAME --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'\`)
lets it go.

## Rolling Deployments without dropped sessions

When a backend pod is deleted (a Deployment's rolling update, a scale-down, a node drain),
Kubernetes marks its endpoint \`terminating\` (still \`serving\` while the pod is ready), runs the pod's
preStop hook and then sends SIGTERM. The operator makes every serving-but-terminating endpoint a
*draining* backend on every sidecar, and each sidecar moves that backend's sessions to another one
by planned migration, which loses no message. That takes a moment: the EndpointSlice change has to
reach the operator, the operator has to push the new backend set to every sidecar, and each
migration waits for the old backend to close its leg (at most \`failover.drainTimeout\`, 10 s by
default).

The pod has to keep serving its sessions meanwhile. Most servers close every WebSocket on SIGTERM;
a session that has not moved yet then fails over instead: it stays open, but frames in flight to the
backend may be lost (see [what happens when a backend goes away](../README.md#what-happens-when-a-backend-goes-away)).
And a pod still running at the end of its \`terminationGracePeriodSeconds\` is killed. So delay
SIGTERM with a preStop hook, and give the pod the time for the delay and its own shutdown:

\`\`\`yaml
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 60
      containers:
        - name: chat
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "20"]
\`\`\`

- The sleep runs while the endpoint is already terminating, so the sidecars drain the pod while it
  still serves as usual. Make it long enough for your sessions per pod; during a rollout,
  \`baton_failovers_total{reason="drain"}\` should grow and the unplanned reasons (\`error\`,
  \`close-code\`) should not.
- \`terminationGracePeriodSeconds\` (default 30) counts from the start of the preStop hook, so it must
  cover the sleep plus the server's own shutdown after SIGTERM.
- The image needs a \`sleep\` binary; from Kubernetes 1.30 on, \`preStop: {sleep: {seconds: 20}}\` does
  the same without one.
- With a single Deployment, its new pods are the preview while the old ones are replaced. Keep
  \`previewMode: standby\` (the default): the last old pods' sessions can then move to the new pods,
  which the operator makes active once no old endpoint is ready or serving. With \`disabled\` those
  sessions have nowhere to go, stay on their pod, and fail over when it stops.
`;
}

// ---- main ----------------------------------------------------------------------------------------

function main(argv: string[]): number {
  const outputs: Array<[string, string]> = [
    [CRD_PATH, renderCrd()],
    [DOCS_PATH, renderCrdDocs()],
  ];
  if (argv.includes('--check')) {
    const stale = outputs.filter(([path, text]) => {
      try {
        return readFileSync(path, 'utf8') !== text;
      } catch {
        return true; // missing counts as out of date
      }
    });
    for (const [path] of stale) process.stderr.write(`${path} is out of date; run node dist/tools/gen-crd.js\n`);
    return stale.length > 0 ? 1 : 0;
  }
  for (const [path, text] of outputs) {
    writeFileSync(path, text);
    process.stdout.write(`wrote ${path}\n`);
  }
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2));
}
