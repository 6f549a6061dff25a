import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse, parseAllDocuments } from 'yaml';
import { KIND, validateSpec } from '../operator/api/wsbalancer.js';
import { CRD_PATH, DOCS_PATH, K8S_FORMATS, renderCrd, renderCrdDocs, structural, type Schema } from '../tools/gen-crd.js';

type Node = Record<string, unknown>;

interface CrdVersion {
  name: string;
  served: boolean;
  storage: boolean;
  subresources: unknown;
  additionalPrinterColumns: Array<{ name: string; type: string; jsonPath: string }>;
  schema: { openAPIV3Schema: Schema };
}

interface Crd {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: { group: string; scope: string; names: unknown; versions: CrdVersion[] };
}

/** The parsed CRD file, its single version and that version's schema. */
function loadCrd(): { crd: Crd; version: CrdVersion; schema: Schema } {
  const docs = parseAllDocuments(readFileSync(CRD_PATH, 'utf8'));
  assert.equal(docs.length, 1, 'one YAML document');
  const crd = docs[0]!.toJS() as Crd;
  assert.equal(crd.spec.versions.length, 1);
  const version = crd.spec.versions[0]!;
  return { crd, version, schema: version.schema.openAPIV3Schema };
}

/** The schema of the field at a dotted path, e.g. at(schema, 'spec.backend.port'). */
function at(schema: Schema, path: string): Schema {
  let node = schema;
  for (const name of path.split('.')) {
    const next = node.properties?.[name];
    assert.ok(next, `no field ${path}`);
    node = next;
  }
  return node;
}

/** Problems that make a schema non-structural (or not accepted by apiextensions v1), with their paths. */
function structuralProblems(node: Node, path: string): string[] {
  const out: string[] = [];
  for (const k of ['$ref', '$schema', '$defs', 'propertyNames', 'oneOf', 'const']) if (k in node) out.push(`${path}: has ${k}`);
  if (node.properties !== undefined && node.type !== 'object') out.push(`${path}: properties without type: object`);
  if (node.properties !== undefined && node.additionalProperties !== undefined) out.push(`${path}: additionalProperties next to properties`);
  if (typeof node.additionalProperties === 'boolean') out.push(`${path}: boolean additionalProperties`);
  if (node.type === undefined && node['x-kubernetes-int-or-string'] !== true) out.push(`${path}: no type`);
  if (node['x-kubernetes-int-or-string'] === true && node.type !== undefined) out.push(`${path}: type next to x-kubernetes-int-or-string`);
  if (node.type === 'array' && node.items === undefined) out.push(`${path}: array without items`);
  if (typeof node.format === 'string' && !K8S_FORMATS.has(node.format.replaceAll('-', ''))) out.push(`${path}: format ${node.format} is not validated by the apiserver`);
  for (const k of ['anyOf', 'allOf']) {
    for (const [i, sub] of ((node[k] as Node[] | undefined) ?? []).entries()) {
      if ('type' in sub || 'description' in sub || 'default' in sub) out.push(`${path}.${k}[${i}]: type, description or default under ${k}`);
    }
  }
  for (const [name, sub] of Object.entries((node.properties as Record<string, Node> | undefined) ?? {})) out.push(...structuralProblems(sub, `${path}.${name}`));
  if (node.items !== undefined) out.push(...structuralProblems(node.items as Node, `${path}[]`));
  if (typeof node.additionalProperties === 'object') out.push(...structuralProblems(node.additionalProperties as Node, `${path}.*`));
  return out;
}

/** The example manifest: the YAML code block of docs/crd.md whose kind is WsBalancer. */
function docsExample(): { kind: string; spec: Record<string, Record<string, unknown>> } {
  const blocks = [...readFileSync(DOCS_PATH, 'utf8').matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => parse(m[1]!));
  const examples = blocks.filter((b) => b?.kind === KIND);
  assert.equal(examples.length, 1, 'one WsBalancer example in docs/crd.md');
  return examples[0];
}

describe('generated files', () => {
  test('crds/baton.dev_wsbalancers.yaml is up to date (node dist/tools/gen-crd.js)', () => {
    assert.equal(readFileSync(CRD_PATH, 'utf8'), renderCrd());
  });

  test('docs/crd.md is up to date (node dist/tools/gen-crd.js)', () => {
    assert.equal(readFileSync(DOCS_PATH, 'utf8'), renderCrdDocs());
  });
});

describe('the CustomResourceDefinition', () => {
  test('names, scope, version, status subresource and printer columns', () => {
    const { crd, version } = loadCrd();
    assert.equal(crd.apiVersion, 'apiextensions.k8s.io/v1');
    assert.equal(crd.kind, 'CustomResourceDefinition');
    assert.equal(crd.metadata.name, 'wsbalancers.baton.dev');
    assert.equal(crd.spec.group, 'baton.dev');
    assert.equal(crd.spec.scope, 'Namespaced');
    assert.deepEqual(crd.spec.names, {
      kind: 'WsBalancer',
      listKind: 'WsBalancerList',
      plural: 'wsbalancers',
      singular: 'wsbalancer',
      shortNames: ['wsb'],
      categories: ['baton'],
    });
    assert.equal(version.name, 'v1alpha1');
    assert.equal(version.served, true);
    assert.equal(version.storage, true);
    assert.deepEqual(version.subresources, { status: {} });
    assert.deepEqual(
      version.additionalPrinterColumns.map((c) => [c.name, c.type, c.jsonPath]),
      [
        ['Phase', 'string', '.status.phase'],
        ['Active', 'string', '.status.activeRevision'],
        ['Preview', 'string', '.status.previewRevision'],
        ['Synced', 'integer', '.status.sidecars.synced'],
        ['Sessions', 'integer', '.status.sessions'],
        ['Age', 'date', '.metadata.creationTimestamp'],
      ],
    );
  });

  test('the openAPIV3Schema is structural', () => {
    const { schema } = loadCrd();
    assert.deepEqual(structuralProblems(schema as Node, 'openAPIV3Schema'), []);
    assert.equal(typeof schema.description, 'string');
  });

  test('spec is required, with sidecarSelector and backend; defaults and bounds survive', () => {
    const { schema } = loadCrd();
    assert.deepEqual(schema.required, ['spec']);
    assert.deepEqual(at(schema, 'spec').required, ['sidecarSelector', 'backend']);
    const { description, ...adminPort } = at(schema, 'spec.sidecar.adminPort');
    assert.ok(description);
    assert.deepEqual(adminPort, { type: 'integer', default: 9901, minimum: 1, maximum: 65535 });
    const port = at(schema, 'spec.backend.port');
    assert.equal(port['x-kubernetes-int-or-string'], true);
    assert.deepEqual([port.minimum, port.maximum, port.minLength, port.maxLength], [1, 65535, 1, 15]);
    assert.deepEqual(at(schema, 'spec.settings').additionalProperties, { type: 'string' });
    assert.equal(at(schema, 'spec.rollout.blueGreen.prePromotionChecks.prometheus.address').format, 'uri');
  });

  test('status conditions are a map list keyed by type, with the standard fields', () => {
    const { schema } = loadCrd();
    const conditions = at(schema, 'status.conditions');
    assert.equal(conditions['x-kubernetes-list-type'], 'map');
    assert.deepEqual(conditions['x-kubernetes-list-map-keys'], ['type']);
    const item = conditions.items!;
    assert.deepEqual(Object.keys(item.properties ?? {}).sort(), ['lastTransitionTime', 'message', 'observedGeneration', 'reason', 'status', 'type']);
    assert.deepEqual(item.required, ['type', 'status', 'reason', 'message', 'lastTransitionTime']);
    assert.equal(at(item, 'lastTransitionTime').format, 'date-time');
  });

  test('the conversion refuses what it cannot make structural', () => {
    assert.throws(() => structural({ anyOf: [{ type: 'number' }, { type: 'string' }] }, 'spec.x'), /spec\.x: anyOf of number, string/);
    assert.throws(() => structural({ type: 'object', properties: {}, additionalProperties: { type: 'string' } }, 'spec.y'), /spec\.y: additionalProperties next to properties/);
    assert.throws(() => structural({ type: 'string', const: 'a' }, 'spec.z'), /spec\.z: no structural form for const/);
    assert.deepEqual(structural({ type: 'string', format: 'date-time' }, 's'), { type: 'string', format: 'date-time' });
    assert.deepEqual(structural({ type: 'string', format: 'jwt' }, 's'), { type: 'string' }, 'a format the apiserver ignores is dropped');
  });
});

describe('docs/crd.md', () => {
  test('the example manifest is a valid spec', () => {
    const example = docsExample();
    const check = validateSpec(example.spec);
    assert.ok(check.ok, check.ok ? '' : check.message);
    assert.ok(check.spec.rollout.blueGreen.prePromotionChecks?.prometheus, 'blue/green with a Prometheus check');
  });

  test('bad specs are refused, naming the field', () => {
    const base = docsExample().spec;
    const cases: Array<[string, unknown, string]> = [
      ['port out of range', { ...base, backend: { ...base.backend, port: 70000 } }, 'spec.backend.port'],
      ['setting that needs a restart', { ...base, settings: { 'listen.address': 'x' } }, 'spec.settings["listen.address"]'],
      ['bad setting value', { ...base, settings: { 'failover.deadline': 'soon' } }, 'spec.settings["failover.deadline"]'],
      ['missing backend', { sidecarSelector: {} }, 'spec.backend'],
      ['unknown field', { ...base, backend: { ...base.backend, servce: 'x' } }, 'spec.backend'],
      [
        'bad label-selector operator',
        { ...base, sidecarSelector: { matchExpressions: [{ key: 'app', operator: 'Is' }] } },
        'spec.sidecarSelector.matchExpressions[0].operator',
      ],
    ];
    for (const [name, spec, field] of cases) {
      const check = validateSpec(spec);
      assert.equal(check.ok, false, name);
      if (check.ok) continue;
      assert.equal(check.field, field, name);
      assert.ok(check.message.startsWith(`${field}: `), `${name}: ${check.message}`);
    }
  });

  test('documents every spec field, annotation, phase and condition', () => {
    const text = renderCrdDocs();
    for (const f of ['spec.backend.port', 'spec.rollout.blueGreen.prePromotionChecks.webhook.timeoutSeconds', 'status.sidecars.synced', 'status.conditions[].type']) {
      assert.ok(text.includes(`| \`${f}\` |`), f);
    }
    for (const a of ['baton.dev/promote', 'baton.dev/abort', 'baton.dev/paused', 'baton.dev/finalizer']) assert.ok(text.includes(a), a);
    for (const p of ['Healthy', 'Progressing', 'Paused', 'Degraded', 'Available', 'Promoted', 'SidecarsSynced', 'InvalidSpec']) assert.ok(text.includes(`| \`${p}\` |`), p);
    assert.ok(text.includes('kubectl wait --for=condition=Promoted wsb/NAME'));
    assert.ok(text.includes('terminationGracePeriodSeconds: 60'));
  });
});
