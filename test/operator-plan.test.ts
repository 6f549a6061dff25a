// The operator's pure decisions (operator/plan.ts): selectors, sidecar targets, endpoints, the
// backend set, the blue/green state machine and the status. No cluster: specs go through
// validateSpec (so they carry the real defaults) and pods / slices are plain objects.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { V1Endpoint, V1EndpointSlice, V1LabelSelector, V1Pod } from '@kubernetes/client-node';
import { ANNOTATIONS, durationMs, validateSpec, type Condition, type WsBalancerSpec, type WsBalancerStatus } from '../operator/api/wsbalancer.js';
import {
  buildStatus,
  collectEndpoints,
  desiredBackends,
  endpointPods,
  invalidSpecStatus,
  matchesSelector,
  mergeConditions,
  podChanged,
  podsWithoutSidecar,
  podView,
  PROGRESS_POLL_MS,
  sessionsByRevision,
  sidecarHolds,
  sidecarTargets,
  sliceView,
  statusChanged,
  stepRollout,
  type BackendEndpoint,
  type RolloutInput,
  type RolloutState,
  type RolloutStep,
  type SidecarCounts,
  type StatusInput,
} from '../operator/plan.js';
import type { BackendInput, BackendsResponse, BackendView, SplitView } from '../common/admin/contract.js';
import { parse } from 'yaml';
import { canaryShares, desiredSplit, shareReached } from '../operator/canary.js';
import { CANARY_EXAMPLE } from '../tools/gen-crd.js';

// ---- builders ----------------------------------------------------------------------------------

const NS = 'chat';
const T0 = Date.parse('2025-03-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();

interface SpecOptions {
  port?: number | string;
  revisionLabel?: string;
  weight?: number;
  adminPort?: number;
  selector?: V1LabelSelector;
  blueGreen?: Record<string, unknown>;
  canary?: Record<string, unknown>;
}

/** A spec through validateSpec, so it has every default the operator sees. */
function specOf(o: SpecOptions = {}): WsBalancerSpec {
  const raw = {
    sidecarSelector: o.selector ?? { matchLabels: { app: 'gateway' } },
    ...(o.adminPort !== undefined ? { sidecar: { adminPort: o.adminPort } } : {}),
    backend: {
      service: 'chat-backend',
      port: o.port ?? 'ws',
      ...(o.revisionLabel !== undefined ? { revisionLabel: o.revisionLabel } : {}),
      ...(o.weight !== undefined ? { weight: o.weight } : {}),
    },
    ...(o.blueGreen ? { rollout: { blueGreen: o.blueGreen } } : {}),
    ...(o.canary ? { rollout: { strategy: 'canary', canary: o.canary } } : {}),
  };
  const checked = validateSpec(raw);
  assert.ok(checked.ok, checked.ok ? '' : checked.message);
  return checked.spec;
}

function pod(name: string, o: { ns?: string; ip?: string | null; phase?: string; labels?: Record<string, string> } = {}): V1Pod {
  return {
    metadata: { name, namespace: o.ns ?? NS, labels: o.labels ?? { app: 'gateway' } },
    status: {
      ...(o.ip === null ? {} : { podIP: o.ip ?? '10.0.0.1' }),
      phase: o.phase ?? 'Running',
    },
  };
}

function endpointOf(ip: string, podName?: string, conditions?: V1Endpoint['conditions']): V1Endpoint {
  return {
    addresses: [ip],
    ...(podName ? { targetRef: { kind: 'Pod', name: podName, namespace: NS } } : {}),
    ...(conditions ? { conditions } : {}),
  };
}

function slice(ports: { name?: string; port?: number }[], endpoints: V1Endpoint[], addressType = 'IPv4'): V1EndpointSlice {
  return { addressType, ports, endpoints };
}

/** A backend endpoint as collectEndpoints would give it. */
let nextIp = 1;
function ep(id: string, revision: string, o: Partial<Pick<BackendEndpoint, 'ready' | 'serving' | 'terminating'>> & { ip?: string } = {}): BackendEndpoint {
  const ready = o.ready ?? true;
  const n = nextIp++;
  return {
    id,
    url: `ws://${o.ip ?? `10.1.${n >> 8}.${n & 255}`}:8080`,
    pod: id,
    revision,
    ready,
    serving: o.serving ?? ready,
    terminating: o.terminating ?? false,
  };
}

/** `n` ready endpoints of `revision`, ids "<revision>-<i>". */
function revisionEndpoints(revision: string, n: number, o: Partial<Pick<BackendEndpoint, 'ready' | 'serving' | 'terminating'>> = {}): BackendEndpoint[] {
  return Array.from({ length: n }, (_, i) => ep(`${revision}-${i}`, revision, o));
}

/** What a sidecar reports for a backend set it holds exactly. */
function viewOf(desired: readonly BackendInput[], generation = 1): BackendsResponse {
  return {
    generation,
    backends: desired.map(
      (d): BackendView => ({
        id: d.id,
        url: d.url,
        weight: d.weight ?? 1,
        standby: d.standby ?? false,
        labels: { ...(d.labels ?? {}) },
        state: d.state ?? 'enabled',
        health: { status: 'healthy', phi: 0, consecutiveFailures: 0 },
        sessions: 0,
      }),
    ),
  };
}

// ---- matchesSelector ---------------------------------------------------------------------------

describe('matchesSelector', () => {
  const L = { app: 'gateway', tier: 'edge', zone: 'a' };
  const cases: [string, Record<string, string> | undefined, V1LabelSelector, boolean][] = [
    ['empty selector, labels', L, {}, true],
    ['empty selector, no labels', undefined, {}, true],
    ['empty matchLabels and matchExpressions', L, { matchLabels: {}, matchExpressions: [] }, true],
    ['matchLabels: all equal', L, { matchLabels: { app: 'gateway', tier: 'edge' } }, true],
    ['matchLabels: one differs', L, { matchLabels: { app: 'gateway', tier: 'core' } }, false],
    ['matchLabels: key missing', L, { matchLabels: { team: 'x' } }, false],
    ['matchLabels: no labels at all', undefined, { matchLabels: { app: 'gateway' } }, false],
    ['matchLabels: inherited property name is not a label', {}, { matchLabels: { constructor: 'x' } }, false],
    ['In: value listed', L, { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a', 'b'] }] }, true],
    ['In: value not listed', L, { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b', 'c'] }] }, false],
    ['In: key absent', L, { matchExpressions: [{ key: 'rack', operator: 'In', values: ['a'] }] }, false],
    ['In: empty values', L, { matchExpressions: [{ key: 'zone', operator: 'In', values: [] }] }, false],
    ['NotIn: value listed', L, { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, false],
    ['NotIn: value not listed', L, { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['b'] }] }, true],
    ['NotIn: key absent matches', L, { matchExpressions: [{ key: 'rack', operator: 'NotIn', values: ['a'] }] }, true],
    ['Exists: present', L, { matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, true],
    ['Exists: present with empty value', { tier: '' }, { matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, true],
    ['Exists: absent', L, { matchExpressions: [{ key: 'rack', operator: 'Exists' }] }, false],
    ['Exists: inherited property name is not a label', {}, { matchExpressions: [{ key: 'toString', operator: 'Exists' }] }, false],
    ['DoesNotExist: absent', L, { matchExpressions: [{ key: 'rack', operator: 'DoesNotExist' }] }, true],
    ['DoesNotExist: present', L, { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, false],
    [
      'matchLabels AND expressions: all hold',
      L,
      { matchLabels: { app: 'gateway' }, matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }, { key: 'rack', operator: 'DoesNotExist' }] },
      true,
    ],
    [
      'matchLabels AND expressions: one expression fails',
      L,
      { matchLabels: { app: 'gateway' }, matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }, { key: 'tier', operator: 'DoesNotExist' }] },
      false,
    ],
    ['matchLabels fails, expressions hold', L, { matchLabels: { app: 'other' }, matchExpressions: [{ key: 'zone', operator: 'Exists' }] }, false],
  ];
  for (const [name, labels, selector, want] of cases) {
    test(name, () => assert.equal(matchesSelector(labels, selector), want));
  }
});

// ---- sidecarTargets ----------------------------------------------------------------------------

describe('sidecarTargets', () => {
  test('only running pods with a podIP, in the namespace, matching the selector; sorted by name', () => {
    const spec = specOf({ adminPort: 9911 });
    const pods = [
      pod('gw-c', { ip: '10.0.0.3' }),
      pod('gw-a', { ip: '10.0.0.1' }),
      // Not Ready is fine: a sidecar turns ready only once the push has given it backends.
      pod('gw-pending', { ip: '10.0.0.4', phase: 'Pending' }),
      pod('gw-done', { ip: '10.0.0.7', phase: 'Succeeded' }),
      pod('gw-noip', { ip: null }),
      pod('gw-elsewhere', { ns: 'other', ip: '10.0.0.5' }),
      pod('backend-0', { ip: '10.0.0.6', labels: { app: 'chat-backend' } }),
      pod('gw-b', { ip: '10.0.0.2' }),
    ];
    assert.deepEqual(sidecarTargets(pods, NS, spec), [
      { name: 'gw-a', adminUrl: 'http://10.0.0.1:9911' },
      { name: 'gw-b', adminUrl: 'http://10.0.0.2:9911' },
      { name: 'gw-c', adminUrl: 'http://10.0.0.3:9911' },
    ]);
  });

  test('a pod without a phase is not running', () => {
    const p = pod('gw-a');
    p.status = { podIP: '10.0.0.1' };
    assert.deepEqual(sidecarTargets([p], NS, specOf()), []);
  });

  test('default admin port 9901; an IPv6 pod IP is bracketed', () => {
    const targets = sidecarTargets([pod('gw-6', { ip: 'fd00::1:2' }), pod('gw-4', { ip: '192.168.1.9' })], NS, specOf());
    assert.deepEqual(
      targets.map((t) => t.adminUrl),
      ['http://192.168.1.9:9901', 'http://[fd00::1:2]:9901'],
    );
    for (const t of targets) assert.doesNotThrow(() => new URL(t.adminUrl), t.adminUrl);
  });

  test('the selector may use expressions', () => {
    const spec = specOf({ selector: { matchExpressions: [{ key: 'baton.dev/sidecar', operator: 'Exists' }] } });
    const pods = [pod('with', { labels: { 'baton.dev/sidecar': '' } }), pod('without', { labels: { app: 'gateway' } })];
    assert.deepEqual(
      sidecarTargets(pods, NS, spec).map((t) => t.name),
      ['with'],
    );
  });
});

// ---- collectEndpoints --------------------------------------------------------------------------

describe('collectEndpoints', () => {
  const pods = new Map<string, V1Pod>([
    ['blue-1', pod('blue-1', { labels: { app: 'chat', 'pod-template-hash': 'blue', 'app.kubernetes.io/version': 'v1' } })],
    ['blue-2', pod('blue-2', { labels: { app: 'chat', 'pod-template-hash': 'blue', 'app.kubernetes.io/version': 'v1' } })],
    ['green-1', pod('green-1', { labels: { app: 'chat', 'pod-template-hash': 'green', 'app.kubernetes.io/version': 'v2' } })],
    ['unlabelled', pod('unlabelled', { labels: { app: 'chat' } })],
  ]);
  const byName = (n: string): V1Pod | undefined => pods.get(n);

  test('port by name: the slice port with that name, whatever its number', () => {
    const spec = specOf({ port: 'ws' });
    const got = collectEndpoints(
      [slice([{ name: 'metrics', port: 9090 }, { name: 'ws', port: 8081 }], [endpointOf('10.1.0.1', 'blue-1')])],
      byName,
      spec,
    );
    assert.equal(got.length, 1);
    assert.equal(got[0]!.url, 'ws://10.1.0.1:8081');
  });

  test('port by name: a slice without that port name contributes nothing (even with one port)', () => {
    const spec = specOf({ port: 'ws' });
    assert.deepEqual(collectEndpoints([slice([{ name: 'http', port: 80 }], [endpointOf('10.1.0.1', 'blue-1')])], byName, spec), []);
    assert.deepEqual(collectEndpoints([slice([], [endpointOf('10.1.0.1', 'blue-1')])], byName, spec), []);
  });

  test('port by number: the matching target port among several', () => {
    const spec = specOf({ port: 8081 });
    const got = collectEndpoints(
      [slice([{ name: 'metrics', port: 9090 }, { name: 'ws', port: 8081 }], [endpointOf('10.1.0.1', 'blue-1')])],
      byName,
      spec,
    );
    assert.deepEqual(
      got.map((e) => e.url),
      ['ws://10.1.0.1:8081'],
    );
  });

  test("port by number: a single-port slice's only port is taken; several ports and none matches → nothing", () => {
    const spec = specOf({ port: 80 });
    assert.deepEqual(
      collectEndpoints([slice([{ port: 8080 }], [endpointOf('10.1.0.1', 'blue-1')])], byName, spec).map((e) => e.url),
      ['ws://10.1.0.1:8080'],
    );
    assert.deepEqual(collectEndpoints([slice([{ name: 'a', port: 8080 }, { name: 'b', port: 9090 }], [endpointOf('10.1.0.1', 'blue-1')])], byName, spec), []);
  });

  test('a port without a number, and an endpoint without an address, are skipped', () => {
    const spec = specOf({ port: 'ws' });
    assert.deepEqual(collectEndpoints([slice([{ name: 'ws' }], [endpointOf('10.1.0.1', 'blue-1')])], byName, spec), []);
    assert.deepEqual(collectEndpoints([slice([{ name: 'ws', port: 8080 }], [{ addresses: [] }])], byName, spec), []);
  });

  test('an endpoint without a Pod targetRef gets id ip-port, no pod and revision ""', () => {
    const spec = specOf({ port: 'ws' });
    const got = collectEndpoints(
      [
        slice(
          [{ name: 'ws', port: 8080 }],
          [{ addresses: ['10.1.0.9'] }, { addresses: ['10.1.0.8'], targetRef: { kind: 'Node', name: 'node-1' } }],
        ),
      ],
      byName,
      spec,
    );
    assert.deepEqual(got, [
      { id: '10.1.0.8-8080', url: 'ws://10.1.0.8:8080', revision: '', ready: true, serving: true, terminating: false },
      { id: '10.1.0.9-8080', url: 'ws://10.1.0.9:8080', revision: '', ready: true, serving: true, terminating: false },
    ]);
  });

  test('publishNotReadyAddresses: ready is forced true, serving tracks the pod; a not-serving endpoint takes no new sessions', () => {
    const spec = specOf({ port: 'ws' });
    const got = collectEndpoints(
      [
        slice(
          [{ name: 'ws', port: 8080 }],
          [
            endpointOf('10.1.0.1', 'blue-1', { ready: true, serving: true, terminating: false }),
            endpointOf('10.1.0.2', 'blue-2', { ready: true, serving: false, terminating: false }),
            endpointOf('10.1.0.3', 'green-1', { ready: true, serving: true, terminating: true }),
          ],
        ),
      ],
      byName,
      spec,
    );
    assert.deepEqual(
      Object.fromEntries(got.map((e) => [e.id, e.ready])),
      { 'blue-1': true, 'blue-2': false, 'green-1': false },
    );
    // The unready pod of a new revision is no ready endpoint: not a preview, and disabled on the sidecars.
    const step = stepRollout({
      spec,
      annotations: {},
      state: { activeRevision: 'green' },
      endpoints: got.filter((e) => e.id === 'blue-2').concat(ep('green-2', 'green')),
      sessionsByRevision: new Map(),
      sidecarsSynced: true,
      now: 0,
    });
    assert.equal(step.state.previewRevision, undefined, 'a revision whose only pod is not serving is no preview');
    const backends = desiredBackends(spec, got, { activeRevision: 'blue' });
    assert.deepEqual(
      Object.fromEntries(backends.map((b) => [b.id, b.state])),
      { 'blue-1': 'enabled', 'blue-2': 'disabled' },
    );
  });

  test('unset conditions: ready, serving (= ready) and not terminating', () => {
    const spec = specOf({ port: 'ws' });
    const got = collectEndpoints(
      [
        slice(
          [{ name: 'ws', port: 8080 }],
          [
            endpointOf('10.1.0.1', 'blue-1'),
            endpointOf('10.1.0.2', 'blue-2', { ready: false }),
            endpointOf('10.1.0.3', 'green-1', { ready: false, serving: true, terminating: true }),
            endpointOf('10.1.0.4', 'unlabelled', {}),
          ],
        ),
      ],
      byName,
      spec,
    );
    const flags = Object.fromEntries(got.map((e) => [e.id, [e.ready, e.serving, e.terminating]]));
    assert.deepEqual(flags, {
      'blue-1': [true, true, false],
      'blue-2': [false, false, false],
      'green-1': [false, true, true],
      unlabelled: [true, true, false],
    });
  });

  test('revision from the pod label: default pod-template-hash, a custom revisionLabel, unlabelled → ""; a pod not yet cached waits', () => {
    const eps = [endpointOf('10.1.0.1', 'blue-1'), endpointOf('10.1.0.3', 'green-1'), endpointOf('10.1.0.4', 'unlabelled'), endpointOf('10.1.0.5', 'not-in-cache')];
    const slices = [slice([{ name: 'ws', port: 8080 }], eps)];
    const revs = (spec: WsBalancerSpec) => Object.fromEntries(collectEndpoints(slices, byName, spec).map((e) => [e.id, e.revision]));
    // An endpoint whose pod the cache lacks would show up as revision "" (a false preview): it is left out until the pod arrives.
    assert.deepEqual(revs(specOf()), { 'blue-1': 'blue', 'green-1': 'green', unlabelled: '' });
    assert.deepEqual(revs(specOf({ revisionLabel: 'app.kubernetes.io/version' })), { 'blue-1': 'v1', 'green-1': 'v2', unlabelled: '' });
  });

  test('scheme wss and IPv6 addresses are bracketed in the url', () => {
    const checked = validateSpec({ sidecarSelector: {}, backend: { service: 's', port: 8443, scheme: 'wss' } });
    assert.ok(checked.ok);
    const got = collectEndpoints([slice([{ port: 8443 }], [endpointOf('fd00::7', 'green-1')], 'IPv6')], byName, checked.spec);
    assert.equal(got[0]!.url, 'wss://[fd00::7]:8443');
    assert.doesNotThrow(() => new URL(got[0]!.url));
  });

  test('an endpoint in two slices counts once; the ready copy wins whichever slice comes first', () => {
    const spec = specOf({ port: 'ws' });
    const port = [{ name: 'ws', port: 8080 }];
    const notReady = slice(port, [endpointOf('10.1.0.1', 'blue-1', { ready: false })]);
    const ready = slice(port, [endpointOf('10.1.0.1', 'blue-1', { ready: true })]);
    for (const slices of [
      [notReady, ready],
      [ready, notReady],
    ]) {
      const got = collectEndpoints(slices, byName, spec);
      assert.equal(got.length, 1);
      assert.equal(got[0]!.ready, true);
    }
  });

  test('output is sorted by id across slices', () => {
    const spec = specOf({ port: 'ws' });
    const port = [{ name: 'ws', port: 8080 }];
    const got = collectEndpoints(
      [slice(port, [endpointOf('10.1.0.3', 'green-1'), endpointOf('10.1.0.9')]), slice(port, [endpointOf('10.1.0.2', 'blue-2'), endpointOf('10.1.0.1', 'blue-1')])],
      byName,
      spec,
    );
    assert.deepEqual(
      got.map((e) => e.id),
      ['10.1.0.9-8080', 'blue-1', 'blue-2', 'green-1'],
    );
  });
});

// ---- desiredBackends ---------------------------------------------------------------------------

describe('desiredBackends', () => {
  const endpoints = [
    ep('blue-0', 'blue'),
    ep('blue-1', 'blue'),
    ep('green-0', 'green'),
    ep('green-1', 'green'),
    ep('grey-0', 'grey'),
  ];
  const stateOf = (backends: BackendInput[]) => Object.fromEntries(backends.map((b) => [b.id, [b.state, b.standby]]));

  test('no active revision yet: every endpoint enabled', () => {
    const got = desiredBackends(specOf(), endpoints, {});
    assert.deepEqual(stateOf(got), {
      'blue-0': ['enabled', false],
      'blue-1': ['enabled', false],
      'green-0': ['enabled', false],
      'green-1': ['enabled', false],
      'grey-0': ['enabled', false],
    });
  });

  test('active enabled, preview standby (previewMode standby, the default); other revisions left out', () => {
    const got = desiredBackends(specOf(), endpoints, { activeRevision: 'blue', previewRevision: 'green', rollout: { previewSince: iso(T0) } });
    assert.deepEqual(stateOf(got), {
      'blue-0': ['enabled', false],
      'blue-1': ['enabled', false],
      'green-0': ['enabled', true],
      'green-1': ['enabled', true],
    });
  });

  test('previewMode disabled: the preview is disabled, not standby', () => {
    const got = desiredBackends(specOf({ blueGreen: { previewMode: 'disabled' } }), endpoints, {
      activeRevision: 'blue',
      previewRevision: 'green',
      rollout: { previewSince: iso(T0) },
    });
    assert.deepEqual(stateOf(got), {
      'blue-0': ['enabled', false],
      'blue-1': ['enabled', false],
      'green-0': ['disabled', false],
      'green-1': ['disabled', false],
    });
  });

  test('promoting: active draining, preview enabled (not standby)', () => {
    for (const previewMode of ['standby', 'disabled']) {
      const got = desiredBackends(specOf({ blueGreen: { previewMode } }), endpoints, {
        activeRevision: 'blue',
        previewRevision: 'green',
        rollout: { previewSince: iso(T0), promotingSince: iso(T0 + 1000) },
      });
      assert.deepEqual(stateOf(got), {
        'blue-0': ['draining', false],
        'blue-1': ['draining', false],
        'green-0': ['enabled', false],
        'green-1': ['enabled', false],
      }, previewMode);
    }
  });

  test('no preview: only the active revision', () => {
    const got = desiredBackends(specOf(), endpoints, { activeRevision: 'blue', previousRevision: 'grey' });
    assert.deepEqual(
      got.map((b) => b.id),
      ['blue-0', 'blue-1'],
    );
  });

  test('endpoint conditions: terminating drains, not ready is disabled (before the role)', () => {
    const eps = [
      ep('blue-term', 'blue', { ready: false, serving: true, terminating: true }),
      ep('blue-unready', 'blue', { ready: false }),
      ep('green-term', 'green', { ready: false, terminating: true }),
      ep('green-unready', 'green', { ready: false }),
    ];
    const state: RolloutState = { activeRevision: 'blue', previewRevision: 'green', rollout: { previewSince: iso(T0) } };
    assert.deepEqual(stateOf(desiredBackends(specOf(), eps, state)), {
      'blue-term': ['draining', false],
      'blue-unready': ['disabled', false],
      'green-term': ['draining', true],
      'green-unready': ['disabled', true],
    });
    const promoting = { ...state, rollout: { previewSince: iso(T0), promotingSince: iso(T0) } };
    assert.deepEqual(stateOf(desiredBackends(specOf(), eps, promoting)), {
      'blue-term': ['draining', false],
      'blue-unready': ['draining', false],
      'green-term': ['draining', false],
      'green-unready': ['disabled', false],
    });
    // No active revision: conditions still apply.
    assert.deepEqual(stateOf(desiredBackends(specOf(), eps, {})), {
      'blue-term': ['draining', false],
      'blue-unready': ['disabled', false],
      'green-term': ['draining', false],
      'green-unready': ['disabled', false],
    });
  });

  test('each backend: id and url of the endpoint, weight from the spec, labels revision and pod', () => {
    const eps: BackendEndpoint[] = [
      ep('blue-0', 'blue', { ip: '10.9.9.9' }),
      { id: '10.1.0.7-8080', url: 'ws://10.1.0.7:8080', revision: 'blue', ready: true, serving: true, terminating: false },
    ];
    const got = desiredBackends(specOf({ weight: 7 }), eps, { activeRevision: 'blue' });
    assert.deepEqual(got, [
      { id: 'blue-0', url: 'ws://10.9.9.9:8080', weight: 7, standby: false, labels: { revision: 'blue', pod: 'blue-0' }, state: 'enabled' },
      { id: '10.1.0.7-8080', url: 'ws://10.1.0.7:8080', weight: 7, standby: false, labels: { revision: 'blue' }, state: 'enabled' },
    ]);
  });
});

// ---- sidecarHolds ------------------------------------------------------------------------------

describe('sidecarHolds', () => {
  const spec = specOf();
  const desired = desiredBackends(spec, [ep('blue-0', 'blue'), ep('blue-1', 'blue'), ep('green-0', 'green')], {
    activeRevision: 'blue',
    previewRevision: 'green',
    rollout: { previewSince: iso(T0) },
  });

  test('the same set → true; an empty desired set and an empty sidecar → true', () => {
    assert.equal(sidecarHolds(viewOf(desired), desired), true);
    assert.equal(sidecarHolds(viewOf([]), []), true);
  });

  test('defaults: omitted weight/standby/state in the desired set mean 1/false/enabled', () => {
    const bare: BackendInput[] = [{ id: 'b', url: 'ws://10.0.0.1:1' }];
    assert.equal(sidecarHolds(viewOf([{ id: 'b', url: 'ws://10.0.0.1:1', weight: 1, standby: false, state: 'enabled', labels: {} }]), bare), true);
  });

  const mutations: [string, (v: BackendView) => void][] = [
    ['state', (v) => (v.state = 'disabled')],
    ['url', (v) => (v.url = 'ws://10.2.0.1:8080')],
    ['weight', (v) => (v.weight = 2)],
    ['standby', (v) => (v.standby = !v.standby)],
    ['a label value', (v) => (v.labels = { ...v.labels, revision: 'other' })],
    ['an extra label', (v) => (v.labels = { ...v.labels, extra: 'x' })],
    ['a missing label', (v) => (v.labels = { revision: v.labels.revision! })],
  ];
  for (const [what, mutate] of mutations) {
    test(`a changed ${what} → false`, () => {
      for (const id of ['blue-0', 'green-0']) {
        const view = viewOf(desired);
        mutate(view.backends.find((b) => b.id === id)!);
        assert.equal(sidecarHolds(view, desired), false, `${what} of ${id}`);
      }
    });
  }

  test('a missing backend → false', () => {
    const view = viewOf(desired);
    view.backends = view.backends.filter((b) => b.id !== 'green-0');
    assert.equal(sidecarHolds(view, desired), false);
  });

  test('an extra backend: draining → true (it leaves once drained); enabled or disabled → false', () => {
    const extra = (state: 'enabled' | 'disabled' | 'draining') => {
      const view = viewOf([...desired, { id: 'grey-0', url: 'ws://10.3.0.1:8080', labels: { revision: 'grey' }, state }]);
      return sidecarHolds(view, desired);
    };
    assert.equal(extra('draining'), true);
    assert.equal(extra('enabled'), false);
    assert.equal(extra('disabled'), false);
  });

  test('session counts and health do not matter', () => {
    const view = viewOf(desired);
    for (const b of view.backends) {
      b.sessions = 17;
      b.health = { status: 'ejected', phi: 20, consecutiveFailures: 9 };
    }
    assert.equal(sidecarHolds(view, desired), true);
  });
});

// ---- sessionsByRevision ------------------------------------------------------------------------

describe('sessionsByRevision', () => {
  test('sums sessions by the revision label across sidecars; backends without one are ignored', () => {
    const one = viewOf([
      { id: 'blue-0', url: 'ws://a:1', labels: { revision: 'blue' } },
      { id: 'green-0', url: 'ws://b:1', labels: { revision: 'green' } },
      { id: 'manual', url: 'ws://c:1', labels: { team: 'x' } },
    ]);
    one.backends[0]!.sessions = 5;
    one.backends[1]!.sessions = 2;
    one.backends[2]!.sessions = 100;
    const two = viewOf([
      { id: 'blue-0', url: 'ws://a:1', labels: { revision: 'blue' } },
      { id: 'blue-1', url: 'ws://d:1', labels: { revision: 'blue' } },
      { id: 'green-0', url: 'ws://b:1', labels: { revision: 'green' } },
      { id: 'unlabelled', url: 'ws://e:1', labels: { revision: '' } },
    ]);
    two.backends[0]!.sessions = 3;
    two.backends[1]!.sessions = 4;
    two.backends[2]!.sessions = 0;
    two.backends[3]!.sessions = 1;
    assert.deepEqual(
      [...sessionsByRevision([one, two]).entries()].sort(),
      [
        ['', 1],
        ['blue', 12],
        ['green', 2],
      ],
    );
    assert.equal(sessionsByRevision([]).size, 0);
  });
});

// ---- stepRollout -------------------------------------------------------------------------------

/** Drives stepRollout, feeding each step's state into the next. */
class Rollout {
  state: RolloutState = {};
  annotations: Record<string, string> = {};
  endpoints: BackendEndpoint[] = [];
  sessions = new Map<string, number>();
  synced = true;
  splits: (SplitView | undefined)[] = [];
  now = T0;
  last!: RolloutStep;

  constructor(readonly spec: WsBalancerSpec) {}

  step(o: Partial<Omit<RolloutInput, 'spec' | 'state'>> = {}): RolloutStep {
    if (o.now !== undefined) this.now = o.now;
    if (o.annotations) this.annotations = o.annotations;
    if (o.endpoints) this.endpoints = [...o.endpoints];
    if (o.sessionsByRevision) this.sessions = new Map(o.sessionsByRevision);
    if (o.sidecarsSynced !== undefined) this.synced = o.sidecarsSynced;
    if (o.splits) this.splits = [...o.splits];
    const input: RolloutInput = {
      spec: this.spec,
      annotations: this.annotations,
      state: this.state,
      endpoints: this.endpoints,
      sessionsByRevision: this.sessions,
      sidecarsSynced: this.synced,
      splits: this.splits,
      now: this.now,
    };
    const frozen = structuredClone(input.state);
    this.last = stepRollout(input);
    assert.deepEqual(input.state, frozen, 'stepRollout does not modify its input state');
    this.state = this.last.state;
    return this.last;
  }

  /** An independent copy, to try two different futures of the same rollout. */
  fork(): Rollout {
    const r = new Rollout(this.spec);
    Object.assign(r, { state: structuredClone(this.state), annotations: { ...this.annotations }, endpoints: [...this.endpoints], sessions: new Map(this.sessions), synced: this.synced, now: this.now, last: this.last });
    return r;
  }

  reasons(): string[] {
    return this.last.events.map((e) => e.reason);
  }
}

const BLUE = revisionEndpoints('blue', 3);
const GREEN = revisionEndpoints('green', 2);

/** A rollout with blue active and green detected as the preview at T0. */
function withPreview(spec: WsBalancerSpec, annotations: Record<string, string> = {}): Rollout {
  const r = new Rollout(spec);
  r.step({ endpoints: BLUE, annotations });
  assert.equal(r.state.activeRevision, 'blue');
  r.step({ endpoints: [...BLUE, ...GREEN], now: T0 });
  assert.deepEqual(r.reasons(), ['PreviewDetected']);
  assert.equal(r.state.previewRevision, 'green');
  return r;
}

describe('stepRollout', () => {
  test('initial: the revision with the most ready endpoints becomes active; no events', () => {
    const r = new Rollout(specOf());
    const step = r.step({ endpoints: [...revisionEndpoints('aaa', 1), ...revisionEndpoints('bbb', 3), ...revisionEndpoints('ccc', 2), ...revisionEndpoints('ddd', 4, { ready: false })] });
    assert.equal(step.state.activeRevision, 'bbb');
    assert.deepEqual(step.events, []);
    assert.equal(step.state.previewRevision, undefined);
    // A tie goes to the first name.
    const tie = new Rollout(specOf()).step({ endpoints: [...revisionEndpoints('zz', 2), ...revisionEndpoints('mm', 2)] });
    assert.equal(tie.state.activeRevision, 'mm');
    // Nothing ready: still no active revision.
    const none = new Rollout(specOf()).step({ endpoints: revisionEndpoints('aaa', 2, { ready: false }) });
    assert.equal(none.state.activeRevision, undefined);
  });

  test('automatic blue/green, step by step: preview, delay, promotion, migration, promoted, cleanup', () => {
    const r = new Rollout(specOf({ blueGreen: { autoPromotionDelaySeconds: 30 } }));
    r.step({ endpoints: BLUE });
    assert.equal(r.state.activeRevision, 'blue');

    // Nothing new: nothing happens.
    r.step({ now: T0 - 5000 });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previewRevision, undefined);

    // A new revision is ready: it becomes the preview; blue stays active.
    r.step({ endpoints: [...BLUE, ...GREEN], now: T0 });
    assert.deepEqual(r.reasons(), ['PreviewDetected']);
    assert.equal(r.last.events[0]!.type, 'Normal');
    assert.equal(r.state.activeRevision, 'blue');
    assert.equal(r.state.previewRevision, 'green');
    assert.equal(r.state.rollout?.previewSince, iso(T0));
    assert.equal(r.state.rollout?.promotingSince, undefined);
    assert.equal(r.last.requeueAfterMs, 30_000);
    assert.equal(r.last.checksDue, false);

    // Before the delay: nothing, and a requeue for the time left.
    r.step({ now: T0 + 12_000 });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.rollout?.promotingSince, undefined);
    assert.equal(r.last.requeueAfterMs, 18_000);
    assert.equal(r.state.rollout?.previewSince, iso(T0), 'previewSince is kept');
    r.step({ now: T0 + 29_999 });
    assert.equal(r.state.rollout?.promotingSince, undefined);
    assert.equal(r.last.requeueAfterMs, 1);

    // The delay has passed: promotion starts.
    r.step({ now: T0 + 30_000 });
    assert.deepEqual(r.reasons(), ['PromotionStarted']);
    assert.equal(r.state.rollout?.promotingSince, iso(T0 + 30_000));
    assert.equal(r.state.activeRevision, 'blue');
    assert.equal(r.state.previewRevision, 'green');
    assert.equal(r.last.requeueAfterMs, PROGRESS_POLL_MS);
    const during = desiredBackends(r.spec, r.endpoints, r.state);
    assert.ok(during.filter((b) => b.labels?.revision === 'blue').every((b) => b.state === 'draining'));
    assert.ok(during.filter((b) => b.labels?.revision === 'green').every((b) => b.state === 'enabled' && !b.standby));

    // Sessions left on blue: still promoting.
    r.step({ now: T0 + 31_000, sessionsByRevision: new Map([['blue', 7], ['green', 3]]) });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.activeRevision, 'blue');
    assert.equal(r.state.rollout?.promotingSince, iso(T0 + 30_000));
    assert.equal(r.last.requeueAfterMs, PROGRESS_POLL_MS);

    // No session left, but a sidecar is not yet synced: still promoting.
    r.step({ now: T0 + 32_000, sessionsByRevision: new Map([['green', 10]]), sidecarsSynced: false });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.activeRevision, 'blue');
    assert.equal(r.last.requeueAfterMs, PROGRESS_POLL_MS);

    // An explicit 0 for blue counts as none.
    r.step({ now: T0 + 33_000, sessionsByRevision: new Map([['blue', 0], ['green', 10]]), sidecarsSynced: true });
    assert.deepEqual(r.reasons(), ['SessionsMigrated', 'Promoted']);
    assert.equal(r.state.activeRevision, 'green');
    assert.equal(r.state.previousRevision, 'blue');
    assert.equal(r.state.previewRevision, undefined);
    assert.equal(r.state.rollout, undefined);
    assert.equal(r.last.requeueAfterMs, undefined);
    assert.deepEqual(
      desiredBackends(r.spec, r.endpoints, r.state).map((b) => [b.id, b.state]),
      [
        ['green-0', 'enabled'],
        ['green-1', 'enabled'],
      ],
    );

    // The old revision still has endpoints: it is not taken as a new preview.
    r.step({ now: T0 + 60_000, sessionsByRevision: new Map() });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previewRevision, undefined);
    assert.equal(r.state.previousRevision, 'blue');

    // Once its endpoints are gone it is forgotten...
    r.step({ now: T0 + 70_000, endpoints: GREEN });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previousRevision, undefined);
    assert.equal(r.state.activeRevision, 'green');

    // ...so if it comes back later it is a new preview like any other.
    r.step({ now: T0 + 80_000, endpoints: [...GREEN, ...BLUE] });
    assert.deepEqual(r.reasons(), ['PreviewDetected']);
    assert.equal(r.state.previewRevision, 'blue');
  });

  test('every revision retired by a promotion stays out of preview detection while it has endpoints', () => {
    const PURPLE = revisionEndpoints('purple', 2);
    const r = new Rollout(specOf({ blueGreen: { autoPromotionDelaySeconds: 0 } }));
    const promoteTo = (endpoints: BackendEndpoint[], from: string) => {
      r.step({ now: T0, endpoints });
      r.step({ now: T0 + 1000, endpoints, sessionsByRevision: new Map([[from, 0]]), sidecarsSynced: true });
    };
    r.step({ endpoints: BLUE });
    promoteTo([...BLUE, ...GREEN], 'blue');
    assert.equal(r.state.activeRevision, 'green');
    promoteTo([...BLUE, ...GREEN, ...PURPLE], 'green');
    assert.equal(r.state.activeRevision, 'purple');
    assert.equal(r.state.previousRevision, 'green');
    assert.deepEqual(r.state.retiredRevisions, ['blue', 'green']);
    // Blue, retired two promotions ago, still runs: it must not come back as a preview.
    r.step({ now: T0 + 5000, endpoints: [...BLUE, ...GREEN, ...PURPLE] });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previewRevision, undefined);
    // Green's endpoints go: it is forgotten; blue is still remembered.
    r.step({ now: T0 + 6000, endpoints: [...BLUE, ...PURPLE] });
    assert.deepEqual(r.state.retiredRevisions, ['blue']);
    assert.equal(r.state.previousRevision, undefined);
  });

  test('autoPromotionDelaySeconds 0: detected and promotion started in one step', () => {
    const r = new Rollout(specOf({ blueGreen: { autoPromotionDelaySeconds: 0 } }));
    r.step({ endpoints: BLUE });
    r.step({ endpoints: [...BLUE, ...GREEN] });
    assert.deepEqual(r.reasons(), ['PreviewDetected', 'PromotionStarted']);
    assert.equal(r.state.rollout?.previewSince, iso(T0));
    assert.equal(r.state.rollout?.promotingSince, iso(T0));
  });

  test('the default delay is 30 s', () => {
    const r = withPreview(specOf());
    assert.equal(r.last.requeueAfterMs, 30_000);
    r.step({ now: T0 + 30_000 });
    assert.deepEqual(r.reasons(), ['PromotionStarted']);
  });

  test('the largest ready candidate becomes the preview; a not-ready revision is no candidate', () => {
    const r = new Rollout(specOf());
    r.step({ endpoints: BLUE });
    r.step({ endpoints: [...BLUE, ...revisionEndpoints('small', 1), ...revisionEndpoints('big', 2), ...revisionEndpoints('starting', 5, { ready: false })] });
    assert.equal(r.state.previewRevision, 'big');
    const s = new Rollout(specOf());
    s.step({ endpoints: BLUE });
    s.step({ endpoints: [...BLUE, ...revisionEndpoints('starting', 5, { ready: false })] });
    assert.equal(s.state.previewRevision, undefined);
    assert.deepEqual(s.reasons(), []);
  });

  test('manual promotion: waits forever; a promote annotation for another revision does nothing; the right one starts it', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotion: false, autoPromotionDelaySeconds: 5 } }));
    assert.equal(r.last.requeueAfterMs, undefined, 'no timer: only a person moves it on');
    r.step({ now: T0 + 86_400_000 * 3 });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.rollout?.promotingSince, undefined);
    assert.equal(r.last.requeueAfterMs, undefined);
    assert.equal(r.last.checksDue, false);

    r.step({ annotations: { [ANNOTATIONS.promote]: 'blue' } });
    assert.deepEqual(r.reasons(), []);
    r.step({ annotations: { [ANNOTATIONS.promote]: 'an-older-preview' } });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.rollout?.promotingSince, undefined);

    const at = T0 + 86_400_000 * 3 + 1000;
    r.step({ annotations: { [ANNOTATIONS.promote]: 'green' }, now: at });
    assert.deepEqual(r.reasons(), ['PromotionStarted']);
    assert.equal(r.state.rollout?.promotingSince, iso(at));
    assert.equal(r.last.requeueAfterMs, PROGRESS_POLL_MS);
    r.step({ now: at + 1000, sessionsByRevision: new Map([['blue', 0]]) });
    assert.deepEqual(r.reasons(), ['SessionsMigrated', 'Promoted']);
    assert.equal(r.state.activeRevision, 'green');
  });

  test('the promote annotation also promotes before the automatic delay', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 600 } }));
    r.step({ now: T0 + 1000, annotations: { [ANNOTATIONS.promote]: 'green' } });
    assert.deepEqual(r.reasons(), ['PromotionStarted']);
  });

  test('the paused annotation holds the preview past the delay; removing it lets the promotion start', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 10 } }), {});
    r.step({ now: T0 + 60_000, annotations: { [ANNOTATIONS.paused]: 'true' } });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previewRevision, 'green');
    assert.equal(r.state.rollout?.promotingSince, undefined);
    // Only "true" pauses.
    r.step({ now: T0 + 61_000, annotations: { [ANNOTATIONS.paused]: 'false' } });
    assert.deepEqual(r.reasons(), ['PromotionStarted']);
  });

  test('the paused annotation also holds a promote annotation', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotion: false } }));
    r.step({ annotations: { [ANNOTATIONS.paused]: 'true', [ANNOTATIONS.promote]: 'green' } });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.rollout?.promotingSince, undefined);
  });

  for (const when of ['preview', 'promotion'] as const) {
    test(`abort annotation during the ${when}: Aborted, preview cleared, active enabled again, aborted revision not re-detected`, () => {
      const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: when === 'promotion' ? 10 : 600 } }));
      if (when === 'promotion') {
        r.step({ now: T0 + 10_000, sessionsByRevision: new Map([['blue', 4]]) });
        assert.deepEqual(r.reasons(), ['PromotionStarted']);
      }
      // An abort naming another revision does nothing.
      r.step({ now: T0 + 11_000, annotations: { [ANNOTATIONS.abort]: 'blue' } });
      assert.deepEqual(r.reasons(), []);
      assert.equal(r.state.previewRevision, 'green');

      r.step({ now: T0 + 12_000, annotations: { [ANNOTATIONS.abort]: 'green' } });
      assert.deepEqual(r.reasons(), ['Aborted']);
      assert.equal(r.last.events[0]!.type, 'Warning');
      assert.equal(r.state.abortedRevision, 'green');
      assert.equal(r.state.previewRevision, undefined);
      assert.equal(r.state.rollout, undefined);
      assert.equal(r.state.activeRevision, 'blue');
      const backends = desiredBackends(r.spec, r.endpoints, r.state);
      assert.deepEqual(
        backends.map((b) => [b.id, b.state, b.standby]),
        [
          ['blue-0', 'enabled', false],
          ['blue-1', 'enabled', false],
          ['blue-2', 'enabled', false],
        ],
      );

      // Still there, and the annotation removed: not a preview again.
      r.step({ now: T0 + 100_000, annotations: {} });
      assert.deepEqual(r.reasons(), []);
      assert.equal(r.state.previewRevision, undefined);
      assert.equal(r.state.abortedRevision, 'green');

      // Its endpoints gone: forgotten.
      r.step({ now: T0 + 110_000, endpoints: BLUE });
      assert.equal(r.state.abortedRevision, undefined);
    });
  }

  test('pre-promotion checks: due after the delay (no promotion); passed → promotion; failed → Aborted', () => {
    const spec = specOf({ blueGreen: { autoPromotionDelaySeconds: 10, prePromotionChecks: { webhook: { url: 'http://checks.example/hook' } } } });
    const r = withPreview(spec);
    assert.equal(r.last.checksDue, false);
    r.step({ now: T0 + 5000 });
    assert.equal(r.last.checksDue, false, 'not before the delay');
    r.step({ now: T0 + 10_000 });
    assert.equal(r.last.checksDue, true);
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.rollout?.promotingSince, undefined);

    const passed = r.fork();
    passed.state = { ...r.state, rollout: { ...r.state.rollout, checks: { result: 'passed', message: 'webhook answered 200' } } };
    passed.step({ now: T0 + 11_000 });
    assert.deepEqual(passed.reasons(), ['PromotionStarted']);
    assert.equal(passed.last.checksDue, false);
    assert.match(passed.last.events[0]!.note, /checks passed/);

    const failed = r.fork();
    failed.state = { ...r.state, rollout: { ...r.state.rollout, checks: { result: 'failed', message: 'webhook answered 500' } } };
    failed.step({ now: T0 + 11_000 });
    assert.deepEqual(failed.reasons(), ['Aborted']);
    assert.match(failed.last.events[0]!.note, /webhook answered 500/);
    assert.equal(failed.state.abortedRevision, 'green');
    assert.equal(failed.state.previewRevision, undefined);
    assert.equal(failed.last.checksDue, false);
  });

  test('prometheus checks count as checks too', () => {
    const spec = specOf({ blueGreen: { autoPromotionDelaySeconds: 0, prePromotionChecks: { prometheus: { address: 'http://prom:9090', query: 'up > 0' } } } });
    const r = new Rollout(spec);
    r.step({ endpoints: BLUE });
    r.step({ endpoints: [...BLUE, ...GREEN] });
    assert.deepEqual(r.reasons(), ['PreviewDetected']);
    assert.equal(r.last.checksDue, true);
  });

  test('the active revision has no ready or serving endpoint: the ready preview is promoted at once', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 600 } }));
    r.step({ now: T0 + 1000, endpoints: [...revisionEndpoints('blue', 3, { ready: false }), ...GREEN] });
    assert.deepEqual(r.reasons(), ['Promoted']);
    assert.equal(r.state.activeRevision, 'green');
    assert.equal(r.state.previousRevision, 'blue');
    assert.equal(r.state.previewRevision, undefined);
    assert.equal(r.state.rollout, undefined);
  });

  test('an active revision that is terminating but still serving keeps its role', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 600 } }));
    r.step({ now: T0 + 1000, endpoints: [...revisionEndpoints('blue', 3, { ready: false, serving: true, terminating: true }), ...GREEN] });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.activeRevision, 'blue');
    assert.equal(r.state.previewRevision, 'green');
  });

  test('the active revision is gone and there is no preview: the largest ready revision becomes active', () => {
    const r = new Rollout(specOf());
    r.step({ endpoints: BLUE });
    r.step({ endpoints: [...revisionEndpoints('red', 1), ...revisionEndpoints('green', 2)] });
    assert.deepEqual(r.reasons(), ['Promoted']);
    assert.equal(r.last.events[0]!.type, 'Normal');
    assert.equal(r.state.activeRevision, 'green');
    assert.equal(r.state.previousRevision, 'blue');
    assert.equal(r.state.previewRevision, undefined);
    // Blue has no endpoints, so it is forgotten at the next step, where red becomes the preview.
    r.step({ now: T0 + 1000 });
    assert.deepEqual(r.reasons(), ['PreviewDetected']);
    assert.equal(r.state.previousRevision, undefined);
    assert.equal(r.state.previewRevision, 'red');
  });

  test('the active revision is gone, nothing else ready: the state stays', () => {
    const r = new Rollout(specOf());
    r.step({ endpoints: BLUE });
    r.step({ endpoints: revisionEndpoints('blue', 3, { ready: false }) });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.activeRevision, 'blue');
  });

  test('a preview that lost all its endpoints: Aborted event, preview cleared (during preview and during promotion)', () => {
    for (const promoting of [false, true]) {
      const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 600 } }));
      if (promoting) r.step({ annotations: { [ANNOTATIONS.promote]: 'green' } });
      assert.equal(r.state.rollout?.promotingSince !== undefined, promoting);
      r.step({ now: T0 + 5000, endpoints: BLUE });
      assert.deepEqual(r.reasons(), ['Aborted'], `promoting=${promoting}`);
      assert.equal(r.last.events[0]!.type, 'Warning');
      assert.equal(r.state.previewRevision, undefined);
      assert.equal(r.state.rollout, undefined);
      assert.equal(r.state.activeRevision, 'blue');
    }
  });

  test('the active revision and the preview are both gone: the preview is dropped and a ready revision takes over', () => {
    // E.g. blue active, green previewing, then both Deployments' pods replaced by purple's. Nothing
    // of blue or green is left; purple is ready. Keeping blue active and green as preview would push
    // an empty backend set to every sidecar (purple is neither active nor preview).
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 600 } }));
    const PURPLE = revisionEndpoints('purple', 2);
    r.step({ now: T0 + 1000, endpoints: PURPLE });
    r.step({ now: T0 + 2000 });
    assert.equal(r.state.previewRevision, undefined, 'a preview without endpoints is dropped');
    assert.equal(r.state.activeRevision, 'purple', 'the ready revision takes over');
    assert.ok(desiredBackends(r.spec, r.endpoints, r.state).some((b) => b.state === 'enabled'), 'the sidecars get something to serve');
  });

  test('the abort annotation works while paused', () => {
    const r = withPreview(specOf(), { [ANNOTATIONS.paused]: 'true' });
    r.step({ annotations: { [ANNOTATIONS.paused]: 'true', [ANNOTATIONS.abort]: 'green' } });
    assert.deepEqual(r.reasons(), ['Aborted']);
    assert.equal(r.state.abortedRevision, 'green');
  });

  test('a preview that is present but not ready does not promote, and takes no timer', () => {
    const r = withPreview(specOf({ blueGreen: { autoPromotionDelaySeconds: 1 } }));
    r.step({ now: T0 + 10_000, endpoints: [...BLUE, ...revisionEndpoints('green', 2, { ready: false })] });
    assert.deepEqual(r.reasons(), []);
    assert.equal(r.state.previewRevision, 'green');
    assert.equal(r.state.rollout?.promotingSince, undefined);
  });
});

// ---- buildStatus -------------------------------------------------------------------------------

// ---- canary (operator/canary.ts through stepRollout) --------------------------------------------

const WEBHOOK = { webhook: { url: 'http://checks.example/ok' } };
const CANARY_STEPS = [{ setWeight: 10 }, { pause: { duration: '30s' } }, { analysis: WEBHOOK }, { setWeight: 50 }, { pause: {} }, { setWeight: 100 }];

/** One sidecar's split view at `weight` % on green: `sessions` in all, `moving` still to move, `off` sessions short of the target. */
function splitAt(weight: number, o: { sessions?: number; moving?: number; off?: number } = {}): SplitView {
  const total = o.sessions ?? 100;
  const target = Math.round((total * weight) / 100);
  const on = target - (o.off ?? 0);
  return {
    label: 'revision',
    rate: 50,
    groups: [
      { value: 'green', weight, target, sessions: on },
      { value: 'blue', weight: 100 - weight, target: total - target, sessions: total - on },
    ],
    moving: o.moving ?? 0,
  };
}

/** Blue active, green detected as the canary at T0 (its first step started). */
function withCanary(canary: Record<string, unknown> = { steps: CANARY_STEPS }): Rollout {
  const r = new Rollout(specOf({ canary }));
  r.step({ endpoints: BLUE });
  r.step({ endpoints: [...BLUE, ...GREEN], now: T0 });
  assert.deepEqual(r.reasons(), ['PreviewDetected', 'StepStarted']);
  return r;
}

const canaryOf = (r: Rollout) => r.state.rollout!.canary!;
const analysed = (r: Rollout, result: 'passed' | 'failed'): void => {
  canaryOf(r).analysis = { step: canaryOf(r).step, result, message: result === 'passed' ? 'webhook passed' : 'webhook: answered 500' };
};

describe('canary', () => {
  test('every step in turn on a fake clock: weight, share reached, timed pause, analysis, pause until promoted, promotion, retirement', () => {
    const r = withCanary();
    assert.deepEqual(canaryOf(r), { step: 0, stepSince: iso(T0), weight: 10, stepText: 'setWeight 10' });
    assert.deepEqual(desiredSplit(r.spec, r.state), { label: 'revision', rate: 50, groups: [{ value: 'green', weight: 10 }, { value: 'blue', weight: 90 }] });
    // Both revisions serve; the split decides the share.
    assert.deepEqual(desiredBackends(r.spec, r.endpoints, r.state).map((b) => `${b.id}:${b.state}`), ['blue-0:enabled', 'blue-1:enabled', 'blue-2:enabled', 'green-0:enabled', 'green-1:enabled']);

    // Sessions still moving, a sidecar still on the old split, or one not synced: the step waits.
    for (const o of [{ splits: [splitAt(10), splitAt(10, { moving: 3 })] }, { splits: [splitAt(10), splitAt(0)] }, { splits: [splitAt(10), undefined] }, { splits: [splitAt(10), splitAt(10)], sidecarsSynced: false }]) {
      assert.equal(r.fork().step({ ...o, now: T0 + 1000 }).requeueAfterMs, PROGRESS_POLL_MS);
    }
    const waiting = r.fork();
    waiting.step({ splits: [splitAt(10), splitAt(10, { off: 5 })], now: T0 + 1000 });
    assert.deepEqual(waiting.reasons(), [], 'five sessions short of the target (2 % of 100 allowed) is not reached');
    assert.equal(canaryOf(waiting).step, 0);

    // Reached on both sidecars (one a session short: departures): the timed pause starts.
    r.step({ splits: [splitAt(10), splitAt(10, { off: 1 })], now: T0 + 2000 });
    assert.deepEqual(r.reasons(), ['WeightReached', 'StepStarted']);
    assert.deepEqual(canaryOf(r), { step: 1, stepSince: iso(T0 + 2000), weight: 10, stepText: 'pause 30s' });
    assert.equal(r.last.requeueAfterMs, 30_000);
    assert.equal(r.step({ now: T0 + 31_000 }).requeueAfterMs, 1000);
    assert.deepEqual(r.reasons(), []);

    // The pause is over: the analysis step asks for its checks.
    r.step({ now: T0 + 32_000 });
    assert.deepEqual(r.reasons(), ['StepStarted']);
    assert.equal(r.last.checksDue, true);
    assert.equal(canaryOf(r).stepText, 'analysis');
    analysed(r, 'passed');
    r.step({ now: T0 + 32_500 });
    assert.deepEqual(r.reasons(), ['AnalysisPassed', 'StepStarted']);
    assert.equal(canaryOf(r).weight, 50);
    assert.equal(desiredSplit(r.spec, r.state)!.groups[0]!.weight, 50);

    // 50 % reached: the pause until promoted, which waits on a person (phase Paused).
    r.step({ splits: [splitAt(50), splitAt(50)], now: T0 + 40_000 });
    assert.deepEqual(r.reasons(), ['WeightReached', 'StepStarted']);
    assert.equal(canaryOf(r).step, 4);
    assert.match(canaryOf(r).message!, /baton\.dev\/promote=green@4/);
    assert.equal(r.step({ now: T0 + 3_600_000 }).requeueAfterMs, undefined);
    assert.equal(buildStatus(statusInput({ state: r.state, annotations: r.annotations, spec: r.spec })).phase, 'Paused');

    // A promote annotation left from an earlier step, or a bare revision (blue/green's), does nothing.
    for (const value of ['green@1', 'green', 'blue@4']) {
      r.step({ annotations: { [ANNOTATIONS.promote]: value } });
      assert.deepEqual(r.reasons(), [], value);
      assert.equal(canaryOf(r).step, 4);
    }
    r.step({ annotations: { [ANNOTATIONS.promote]: 'green@4' }, now: T0 + 3_700_000 });
    assert.deepEqual(r.reasons(), ['StepPromoted', 'StepStarted']);
    assert.equal(canaryOf(r).weight, 100);
    // The annotation stays: it never completes the next step.
    r.step({ splits: [splitAt(100, { moving: 1 }), splitAt(100)] });
    assert.deepEqual(r.reasons(), []);

    // 100 % reached: the last step is done, blue/green's promotion takes over (split gone, blue drains).
    r.step({ splits: [splitAt(100), splitAt(100)], sessionsByRevision: new Map([['blue', 0], ['green', 200]]) });
    assert.deepEqual(r.reasons(), ['WeightReached', 'PromotionStarted']);
    assert.equal(desiredSplit(r.spec, r.state), undefined);
    assert.deepEqual(desiredBackends(r.spec, r.endpoints, r.state).map((b) => `${b.id}:${b.state}`), ['blue-0:draining', 'blue-1:draining', 'blue-2:draining', 'green-0:enabled', 'green-1:enabled']);
    r.step({ now: T0 + 3_701_000 });
    assert.deepEqual(r.reasons(), ['SessionsMigrated', 'Promoted']);
    assert.equal(r.state.activeRevision, 'green');
    assert.equal(r.state.previousRevision, 'blue');
    assert.equal(r.state.rollout, undefined);
  });

  test('abort by annotation: weight 0 until every session is back on stable, then the canary is dropped and not taken again', () => {
    const r = withCanary({ steps: [{ setWeight: 50 }, { pause: {} }] });
    r.step({ splits: [splitAt(50), splitAt(50)], now: T0 + 1000 });
    assert.equal(canaryOf(r).step, 1);
    r.step({ annotations: { [ANNOTATIONS.abort]: 'green' }, now: T0 + 2000 });
    assert.deepEqual(r.reasons(), ['Aborted']);
    assert.equal(canaryOf(r).aborting, true);
    assert.equal(r.last.requeueAfterMs, PROGRESS_POLL_MS);
    assert.deepEqual(desiredSplit(r.spec, r.state)!.groups, [{ value: 'green', weight: 0 }, { value: 'blue', weight: 100 }]);
    assert.ok(desiredBackends(r.spec, r.endpoints, r.state).some((b) => b.labels?.revision === 'green' && b.state === 'enabled'), 'the canary stays until its sessions are back');
    const status = buildStatus(statusInput({ state: r.state, annotations: r.annotations, spec: r.spec }));
    assert.equal(cond(status, 'Progressing').reason, 'CanaryAborting');
    assert.equal(status.phase, 'Progressing');

    // Sessions still on green (a target of 0 is within one session, but moves remain): wait.
    r.step({ splits: [splitAt(0, { off: -1 }), splitAt(0, { moving: 2 })] });
    assert.deepEqual(r.reasons(), []);
    r.step({ splits: [splitAt(0), splitAt(0)] });
    assert.deepEqual(r.reasons(), ['SessionsMigrated']);
    assert.equal(r.state.abortedRevision, 'green');
    assert.equal(r.state.previewRevision, undefined);
    assert.ok(desiredBackends(r.spec, r.endpoints, r.state).every((b) => b.labels?.revision === 'blue'));
    r.step({ annotations: {} });
    assert.deepEqual(r.reasons(), [], 'an aborted revision is not taken again');
  });

  test('a failed analysis aborts; with abortOnFailedAnalysis false it holds (one event) until promoted past it', () => {
    const steps = [{ setWeight: 50 }, { analysis: WEBHOOK }, { setWeight: 80 }];
    const r = withCanary({ steps });
    r.step({ splits: [splitAt(50)] });
    assert.equal(r.last.checksDue, true);
    analysed(r, 'failed');
    r.step();
    assert.deepEqual(r.reasons(), ['AnalysisFailed', 'Aborted']);
    assert.equal(canaryOf(r).weight, 0);
    assert.equal(canaryOf(r).aborting, true);

    const held = withCanary({ steps, abortOnFailedAnalysis: false });
    held.step({ splits: [splitAt(50)] });
    analysed(held, 'failed');
    held.step();
    assert.deepEqual(held.reasons(), ['AnalysisFailed']);
    assert.match(canaryOf(held).message!, /analysis failed: webhook: answered 500; held at 50%/);
    assert.equal(held.last.checksDue, false, 'a failed analysis is not run again by itself');
    held.step();
    assert.deepEqual(held.reasons(), [], 'the event once');
    assert.equal(buildStatus(statusInput({ state: held.state, spec: held.spec })).phase, 'Paused');
    held.step({ annotations: { [ANNOTATIONS.promote]: 'green@1' } });
    assert.deepEqual(held.reasons(), ['StepPromoted', 'StepStarted']);
    assert.equal(canaryOf(held).weight, 80);
    assert.equal(canaryOf(held).message, undefined);
  });

  test('a new leader resumes the step from status: no event repeated, the same split asked (nobody moves)', () => {
    const r = withCanary();
    const split = desiredSplit(r.spec, r.state);
    // What the status holds, read back by another operator process.
    const resumed = new Rollout(r.spec);
    Object.assign(resumed, { state: JSON.parse(JSON.stringify(r.state)), endpoints: r.endpoints, now: T0 + 5000 });
    resumed.step({ splits: [splitAt(0), splitAt(10, { moving: 4 })] });
    assert.deepEqual(resumed.reasons(), []);
    assert.deepEqual(desiredSplit(resumed.spec, resumed.state), split);
    assert.equal(canaryOf(resumed).stepSince, iso(T0), 'the step keeps its start');
    resumed.step({ splits: [splitAt(10), splitAt(10)] });
    assert.deepEqual(resumed.reasons(), ['WeightReached', 'StepStarted']);
  });

  test('promote @full goes to the end from any step; paused holds the steps', () => {
    const r = withCanary();
    const paused = r.fork();
    paused.step({ annotations: { [ANNOTATIONS.paused]: 'true' }, splits: [splitAt(10)] });
    assert.deepEqual(paused.reasons(), []);
    r.step({ annotations: { [ANNOTATIONS.promote]: 'green@full' }, sessionsByRevision: new Map([['blue', 90], ['green', 10]]) });
    assert.deepEqual(r.reasons(), ['StepPromoted', 'PromotionStarted']);
    assert.equal(r.state.rollout?.promotingSince, iso(T0));
  });

  test('shares and reached: per sidecar, against the weight asked', () => {
    assert.equal(shareReached([splitAt(10, { sessions: 300, off: 6 })], 'green', 10), true, '2 % of 300');
    assert.equal(shareReached([splitAt(10, { sessions: 300, off: 7 })], 'green', 10), false);
    assert.equal(shareReached([splitAt(10)], 'green', 50), false, 'the old weight');
    assert.equal(shareReached([], 'green', 10), false, 'no sidecar seen: no step completes');
    assert.deepEqual(canaryShares([{ name: 'edge-a', split: splitAt(10, { moving: 2, off: 1 }) }, { name: 'edge-b' }], 'green', 'blue'), [
      { name: 'edge-a', canary: 9, target: 10, stable: 91, moving: 2 },
    ]);
  });

  test('the spec: one kind per step, canary needs steps, durations as Argo takes them', () => {
    const bad = (canary: unknown, strategy = 'canary') => validateSpec({ sidecarSelector: {}, backend: { service: 's', port: 80 }, rollout: { strategy, ...(canary ? { canary } : {}) } });
    assert.match((bad(undefined) as { message: string }).message, /^spec\.rollout\.canary: strategy canary needs canary\.steps/);
    assert.match((bad({ steps: [{ setWeight: 10, pause: {} }] }) as { message: string }).message, /^spec\.rollout\.canary\.steps\[0\]: a step is exactly one of/);
    assert.match((bad({ steps: [{ pause: { duration: '5 minutes' } }] }) as { message: string }).message, /^spec\.rollout\.canary\.steps\[0\]\.pause\.duration/);
    assert.match((bad({ steps: [{ analysis: {} }] }) as { message: string }).message, /needs a prometheus or a webhook/);
    const documented = validateSpec({ sidecarSelector: {}, backend: { service: 's', port: 'ws' }, ...(parse(CANARY_EXAMPLE) as object) });
    assert.ok(documented.ok, `the canary of docs/crd.md: ${documented.ok ? '' : documented.message}`);
    const ok = specOf({ canary: { steps: [{ setWeight: 5 }, { pause: { duration: 90 } }, { pause: { duration: '5m' } }] } });
    assert.equal(ok.rollout.canary!.migrationRate, 50);
    assert.equal(ok.rollout.canary!.abortOnFailedAnalysis, true);
    assert.equal(durationMs('5m'), 300_000);
    assert.equal(durationMs(90), 90_000);
  });
});

const SYNCED: SidecarCounts = { desired: 2, synced: 2, unreachable: 0 };

function statusInput(o: Partial<StatusInput> = {}): StatusInput {
  return {
    generation: 4,
    annotations: {},
    spec: specOf(),
    previous: {},
    state: { activeRevision: 'blue' },
    endpoints: BLUE,
    sessionsByRevision: new Map([['blue', 9]]),
    sidecars: SYNCED,
    backendsGeneration: 12,
    now: T0,
    ...o,
  };
}

const cond = (s: WsBalancerStatus, type: Condition['type']): Condition => {
  const c = s.conditions?.find((x) => x.type === type);
  assert.ok(c, `condition ${type} present`);
  return c;
};
const statuses = (s: WsBalancerStatus) => Object.fromEntries((s.conditions ?? []).map((c) => [c.type, c.status]));

describe('buildStatus', () => {
  const previewState: RolloutState = { activeRevision: 'blue', previewRevision: 'green', rollout: { previewSince: iso(T0) } };
  const promotingState: RolloutState = { activeRevision: 'blue', previewRevision: 'green', rollout: { previewSince: iso(T0), promotingSince: iso(T0 + 1) } };

  const phases: [string, Partial<StatusInput>, WsBalancerStatus['phase']][] = [
    ['active with ready endpoints, sidecars synced', {}, 'Healthy'],
    ['sidecars still syncing (none unreachable)', { sidecars: { desired: 2, synced: 1, unreachable: 0 } }, 'Healthy'],
    ['a preview, automatic promotion', { state: previewState, endpoints: [...BLUE, ...GREEN] }, 'Progressing'],
    ['promoting', { state: promotingState, endpoints: [...BLUE, ...GREEN] }, 'Progressing'],
    ['a preview, manual promotion', { state: previewState, endpoints: [...BLUE, ...GREEN], spec: specOf({ blueGreen: { autoPromotion: false } }) }, 'Paused'],
    ['a preview, paused annotation', { state: previewState, endpoints: [...BLUE, ...GREEN], annotations: { [ANNOTATIONS.paused]: 'true' } }, 'Paused'],
    ['promoting with the paused annotation', { state: promotingState, endpoints: [...BLUE, ...GREEN], annotations: { [ANNOTATIONS.paused]: 'true' } }, 'Progressing'],
    ['paused annotation but no preview', { annotations: { [ANNOTATIONS.paused]: 'true' } }, 'Healthy'],
    ['aborted rollout', { state: { activeRevision: 'blue', abortedRevision: 'green' }, endpoints: [...BLUE, ...GREEN] }, 'Degraded'],
    ['active revision without ready endpoints', { endpoints: revisionEndpoints('blue', 3, { ready: false }) }, 'Degraded'],
    ['no active revision at all', { state: {}, endpoints: [] }, 'Degraded'],
    ['an unreachable sidecar', { sidecars: { desired: 3, synced: 2, unreachable: 1 } }, 'Degraded'],
  ];
  for (const [name, over, phase] of phases) {
    test(`phase ${phase}: ${name}`, () => assert.equal(buildStatus(statusInput(over)).phase, phase));
  }

  test('healthy: every field and condition', () => {
    const s = buildStatus(statusInput({ endpoints: [...BLUE, ep('blue-t', 'blue', { ready: false, serving: true, terminating: true })] }));
    assert.equal(s.observedGeneration, 4);
    assert.equal(s.activeRevision, 'blue');
    assert.equal(s.sessions, 9);
    assert.deepEqual(s.sidecars, SYNCED);
    assert.equal(s.backendsGeneration, 12);
    assert.deepEqual(s.revisions, [{ name: 'blue', role: 'active', ready: 3, serving: 4, terminating: 1, sessions: 9 }]);
    assert.deepEqual(
      s.conditions!.map((c) => c.type),
      ['Available', 'InvalidSpec', 'Progressing', 'Promoted', 'SidecarsSynced'],
    );
    assert.deepEqual(statuses(s), { Available: 'True', InvalidSpec: 'False', Progressing: 'False', Promoted: 'True', SidecarsSynced: 'True' });
    for (const c of s.conditions!) {
      assert.equal(c.lastTransitionTime, iso(T0));
      assert.equal(c.observedGeneration, 4);
      assert.ok(c.reason.length > 0 && c.message.length > 0);
    }
    assert.match(cond(s, 'SidecarsSynced').message, /2\/2 .*generation 12/);
  });

  test('no generation: no observedGeneration anywhere', () => {
    const s = buildStatus(statusInput({ generation: undefined }));
    assert.equal('observedGeneration' in s, false);
    assert.ok(s.conditions!.every((c) => !('observedGeneration' in c)));
  });

  test('revisions: every revision with endpoints and every named one, sorted, with roles, counts and sessions', () => {
    const s = buildStatus(
      statusInput({
        state: { activeRevision: 'blue', previewRevision: 'green', previousRevision: 'amber', retiredRevisions: ['amber'], abortedRevision: 'red', rollout: { previewSince: iso(T0) } },
        endpoints: [...BLUE, ...GREEN, ...revisionEndpoints('amber', 1, { ready: false, terminating: true }), ...revisionEndpoints('grey', 1), ...revisionEndpoints('red', 2, { ready: false })],
        sessionsByRevision: new Map([
          ['blue', 10],
          ['amber', 2],
          ['green', 1],
        ]),
      }),
    );
    assert.deepEqual(s.revisions, [
      { name: 'amber', role: 'previous', ready: 0, serving: 0, terminating: 1, sessions: 2 },
      { name: 'blue', role: 'active', ready: 3, serving: 3, terminating: 0, sessions: 10 },
      { name: 'green', role: 'preview', ready: 2, serving: 2, terminating: 0, sessions: 1 },
      { name: 'grey', role: 'other', ready: 1, serving: 1, terminating: 0, sessions: 0 },
      { name: 'red', role: 'aborted', ready: 0, serving: 0, terminating: 0, sessions: 0 },
    ]);
    assert.equal(s.sessions, 13);
    assert.equal(s.previousRevision, 'amber');
    assert.equal(s.abortedRevision, 'red');
  });

  test('a named revision without endpoints is listed with zero counts', () => {
    const s = buildStatus(statusInput({ endpoints: [], sessionsByRevision: new Map() }));
    assert.deepEqual(s.revisions, [{ name: 'blue', role: 'active', ready: 0, serving: 0, terminating: 0, sessions: 0 }]);
    assert.equal(s.sessions, 0);
  });

  test('conditions while previewing, promoting, aborted, unavailable and with sidecars off', () => {
    const preview = buildStatus(statusInput({ state: previewState, endpoints: [...BLUE, ...GREEN] }));
    assert.deepEqual(statuses(preview), { Available: 'True', InvalidSpec: 'False', Progressing: 'True', Promoted: 'False', SidecarsSynced: 'True' });
    assert.equal(cond(preview, 'Progressing').reason, 'Previewing');
    assert.equal(preview.rollout?.previewSince, iso(T0));

    const promoting = buildStatus(statusInput({ state: promotingState, endpoints: [...BLUE, ...GREEN] }));
    assert.equal(cond(promoting, 'Progressing').reason, 'Promoting');
    assert.equal(cond(promoting, 'Promoted').status, 'False');

    const aborted = buildStatus(statusInput({ state: { activeRevision: 'blue', abortedRevision: 'green' }, endpoints: [...BLUE, ...GREEN] }));
    assert.deepEqual(statuses(aborted), { Available: 'True', InvalidSpec: 'False', Progressing: 'False', Promoted: 'False', SidecarsSynced: 'True' });
    assert.equal(cond(aborted, 'Progressing').reason, 'RolloutAborted');
    assert.equal(cond(aborted, 'Promoted').reason, 'RolloutAborted');

    const down = buildStatus(statusInput({ endpoints: revisionEndpoints('blue', 2, { ready: false }) }));
    assert.equal(cond(down, 'Available').status, 'False');

    const empty = buildStatus(statusInput({ state: {}, endpoints: [] }));
    assert.deepEqual(statuses(empty), { Available: 'False', InvalidSpec: 'False', Progressing: 'False', Promoted: 'False', SidecarsSynced: 'True' });

    const syncing = buildStatus(statusInput({ sidecars: { desired: 3, synced: 1, unreachable: 0 } }));
    assert.equal(cond(syncing, 'SidecarsSynced').status, 'False');
    assert.equal(cond(syncing, 'SidecarsSynced').reason, 'Syncing');
    const unreachable = buildStatus(statusInput({ sidecars: { desired: 3, synced: 3, unreachable: 1 } }));
    assert.equal(cond(unreachable, 'SidecarsSynced').status, 'False');
    assert.equal(cond(unreachable, 'SidecarsSynced').reason, 'SidecarsUnreachable');
    assert.match(cond(unreachable, 'SidecarsSynced').message, /1 unreachable/);
  });

  test('rebuilding the same status changes nothing; lastTransitionTime moves only when a status flips', () => {
    const first = buildStatus(statusInput({ now: T0 }));
    const same = buildStatus(statusInput({ previous: first, now: T0 + 60_000 }));
    assert.equal(statusChanged(first, same), false);
    assert.deepEqual(same.conditions, first.conditions);

    // A message change without a status flip keeps the time (and is a change).
    const bumped = buildStatus(statusInput({ previous: same, now: T0 + 70_000, backendsGeneration: 13 }));
    assert.equal(statusChanged(same, bumped), true);
    assert.equal(cond(bumped, 'SidecarsSynced').lastTransitionTime, iso(T0));
    assert.match(cond(bumped, 'SidecarsSynced').message, /generation 13/);

    // A preview appears: Progressing and Promoted flip at T0+80s, the rest keep T0.
    const t = T0 + 80_000;
    const preview = buildStatus(statusInput({ previous: bumped, now: t, state: previewState, endpoints: [...BLUE, ...GREEN], backendsGeneration: 13 }));
    assert.equal(statusChanged(bumped, preview), true);
    assert.equal(cond(preview, 'Progressing').lastTransitionTime, iso(t));
    assert.equal(cond(preview, 'Promoted').lastTransitionTime, iso(t));
    assert.equal(cond(preview, 'Available').lastTransitionTime, iso(T0));
    assert.equal(cond(preview, 'SidecarsSynced').lastTransitionTime, iso(T0));
    assert.equal(cond(preview, 'InvalidSpec').lastTransitionTime, iso(T0));

    // A new generation alone is a change (observedGeneration), but no flip.
    const regen = buildStatus(statusInput({ previous: preview, now: t + 1000, generation: 5, state: previewState, endpoints: [...BLUE, ...GREEN], backendsGeneration: 13 }));
    assert.equal(statusChanged(preview, regen), true);
    assert.equal(cond(regen, 'Progressing').lastTransitionTime, iso(t));
    assert.equal(cond(regen, 'Progressing').observedGeneration, 5);

    // Sessions moving is a change too.
    const moved = buildStatus(statusInput({ previous: first, now: T0 + 1, sessionsByRevision: new Map([['blue', 10]]) }));
    assert.equal(statusChanged(first, moved), true);
  });

  test('statusChanged ignores key order and undefined values; no previous status is a change', () => {
    const s = buildStatus(statusInput());
    const reordered = Object.fromEntries(Object.entries(s).reverse()) as WsBalancerStatus;
    assert.equal(statusChanged(s, reordered), false);
    assert.equal(statusChanged(s, { ...s, previewRevision: undefined }), false);
    assert.equal(statusChanged(undefined, s), true);
    assert.equal(statusChanged(undefined, {}), false);
    assert.equal(statusChanged(s, { ...s, phase: 'Degraded' }), true);
  });
});

describe('mergeConditions and invalidSpecStatus', () => {
  test('mergeConditions replaces by type, keeps the time unless the status flips, keeps other types, sorts', () => {
    const prev: Condition[] = [
      { type: 'Available', status: 'True', reason: 'A', message: 'a', lastTransitionTime: iso(T0) },
      { type: 'Promoted', status: 'True', reason: 'P', message: 'p', lastTransitionTime: iso(T0) },
    ];
    const t = T0 + 5000;
    const out = mergeConditions(
      prev,
      [
        { type: 'Promoted', status: 'False', reason: 'Previewing', message: 'x' },
        { type: 'Available', status: 'True', reason: 'B', message: 'b' },
        { type: 'InvalidSpec', status: 'False', reason: 'Valid', message: 'ok' },
      ],
      t,
      7,
    );
    assert.deepEqual(out, [
      { type: 'Available', status: 'True', reason: 'B', message: 'b', lastTransitionTime: iso(T0), observedGeneration: 7 },
      { type: 'InvalidSpec', status: 'False', reason: 'Valid', message: 'ok', lastTransitionTime: iso(t), observedGeneration: 7 },
      { type: 'Promoted', status: 'False', reason: 'Previewing', message: 'x', lastTransitionTime: iso(t), observedGeneration: 7 },
    ]);
    const untouched = mergeConditions(prev, [{ type: 'SidecarsSynced', status: 'True', reason: 'Synced', message: 's' }], t, undefined);
    assert.deepEqual(
      untouched.map((c) => [c.type, c.lastTransitionTime]),
      [
        ['Available', iso(T0)],
        ['Promoted', iso(T0)],
        ['SidecarsSynced', iso(t)],
      ],
    );
    assert.equal(mergeConditions(undefined, [], t, 1).length, 0);
  });

  test('invalidSpecStatus: Degraded, InvalidSpec True with the message; the rest kept; then a valid spec flips it back', () => {
    const good = buildStatus(statusInput({ now: T0 }));
    const t = T0 + 10_000;
    const bad = invalidSpecStatus(good, 5, 'spec.backend.port: Invalid input', t);
    assert.equal(bad.phase, 'Degraded');
    assert.equal(bad.observedGeneration, 5);
    const inv = cond(bad, 'InvalidSpec');
    assert.equal(inv.status, 'True');
    assert.equal(inv.reason, 'InvalidSpec');
    assert.equal(inv.message, 'spec.backend.port: Invalid input');
    assert.equal(inv.lastTransitionTime, iso(t));
    assert.equal(inv.observedGeneration, 5);
    for (const type of ['Available', 'Progressing', 'Promoted', 'SidecarsSynced'] as const) assert.deepEqual(cond(bad, type), cond(good, type), type);
    assert.equal(bad.activeRevision, good.activeRevision);
    assert.deepEqual(bad.revisions, good.revisions);
    assert.equal(bad.sessions, good.sessions);
    assert.equal(bad.backendsGeneration, good.backendsGeneration);
    assert.equal(statusChanged(good, bad), true);

    // The same message again: same time.
    const again = invalidSpecStatus(bad, 5, 'spec.backend.port: Invalid input', t + 1000);
    assert.equal(cond(again, 'InvalidSpec').lastTransitionTime, iso(t));
    assert.equal(statusChanged(bad, again), false);

    // Fixed: InvalidSpec flips back to False now, the rest keep their times.
    const t2 = t + 20_000;
    const fixed = buildStatus(statusInput({ previous: again, generation: 6, now: t2 }));
    assert.equal(fixed.phase, 'Healthy');
    assert.equal(cond(fixed, 'InvalidSpec').status, 'False');
    assert.equal(cond(fixed, 'InvalidSpec').lastTransitionTime, iso(t2));
    assert.equal(cond(fixed, 'Available').lastTransitionTime, iso(T0));
  });

  test('invalidSpecStatus on an object with no status yet', () => {
    const s = invalidSpecStatus({}, undefined, 'spec.backend: Required', T0);
    assert.equal(s.phase, 'Degraded');
    assert.equal('observedGeneration' in s, false);
    assert.deepEqual(s.conditions, [{ type: 'InvalidSpec', status: 'True', reason: 'InvalidSpec', message: 'spec.backend: Required', lastTransitionTime: iso(T0) }]);
  });
});

// ---- specs through validateSpec ----------------------------------------------------------------

describe('validateSpec (the specs above rely on its defaults)', () => {
  test('defaults', () => {
    const s = specOf();
    assert.equal(s.sidecar.adminPort, 9901);
    assert.equal(s.backend.scheme, 'ws');
    assert.equal(s.backend.revisionLabel, 'pod-template-hash');
    assert.equal(s.backend.weight, 1);
    assert.deepEqual(s.settings, {});
    assert.deepEqual(
      { ...s.rollout.blueGreen },
      { previewMode: 'standby', autoPromotion: true, autoPromotionDelaySeconds: 30, migrationRate: 50, drainDeadlineSeconds: 600 },
    );
  });

  test('a bad setting names its field', () => {
    const r = validateSpec({ sidecarSelector: {}, backend: { service: 's', port: 80 }, settings: { 'failover.deadline': '3 parsecs' } });
    assert.equal(r.ok, false);
    assert.ok(!r.ok);
    assert.equal(r.field, 'spec.settings["failover.deadline"]');
  });
});

// ---- what the caches keep ----------------------------------------------------------------------

describe('cache projections', () => {
  const full: V1Pod = {
    metadata: {
      name: 'echo-1',
      namespace: NS,
      resourceVersion: '42',
      labels: { app: 'echo', version: 'blue' },
      annotations: { big: 'x'.repeat(4096) },
      managedFields: [{ manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:metadata': {} } }],
    },
    spec: { containers: [{ name: 'main', image: 'example.invalid/echo:1', env: [{ name: 'A', value: 'b' }] }] },
    status: { phase: 'Running', podIP: '10.0.0.7', conditions: [{ type: 'Ready', status: 'True' }] },
  };

  test('a pod keeps its name, namespace, resourceVersion, labels, IP and phase, and nothing else', () => {
    assert.deepEqual(podView(full), {
      metadata: { namespace: NS, name: 'echo-1', resourceVersion: '42', labels: { app: 'echo', version: 'blue' } },
      status: { podIP: '10.0.0.7', phase: 'Running' },
    });
    assert.ok(JSON.stringify(podView(full)).length < JSON.stringify(full).length / 10);
  });

  test('a pod changed only in what the operator does not read is no change', () => {
    const view = podView(full);
    const bumped = podView({ ...full, metadata: { ...full.metadata, resourceVersion: '43', annotations: {} } });
    assert.equal(podChanged(view, bumped), false);
    assert.equal(podChanged(view, podView({ ...full, metadata: { ...full.metadata, labels: { app: 'echo', version: 'green' } } })), true);
    assert.equal(podChanged(view, podView({ ...full, status: { ...full.status, phase: 'Failed' } })), true);
    assert.equal(podChanged(view, podView({ ...full, status: { ...full.status, podIP: '10.0.0.8' } })), true);
  });

  test('a slice keeps its ports and endpoints (addresses, conditions, pod); endpointPods names the pods', () => {
    const raw: V1EndpointSlice = {
      addressType: 'IPv4',
      metadata: { name: 'echo-abc', namespace: NS, resourceVersion: '7', labels: { 'kubernetes.io/service-name': 'echo' }, managedFields: [{ manager: 'x' }] },
      ports: [{ name: 'ws', port: 8080 }],
      endpoints: [
        { addresses: ['10.0.0.7'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'echo-1', namespace: NS, uid: 'u1' }, nodeName: 'n1' },
        { addresses: ['10.0.0.9'], targetRef: { kind: 'Node', name: 'n1' } },
        { addresses: ['10.0.0.10'] },
      ],
    };
    const view = sliceView(raw);
    assert.deepEqual(view.endpoints?.[0], { addresses: ['10.0.0.7'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'echo-1' } });
    assert.equal(view.metadata?.managedFields, undefined);
    assert.deepEqual([...endpointPods([view])], ['echo-1']);
    assert.deepEqual(collectEndpoints([view], (n) => (n === 'echo-1' ? podView(full) : undefined), specOf({ port: 'ws', revisionLabel: 'version' })).map((e) => [e.id, e.revision]), [
      ['10.0.0.10-8080', ''],
      ['10.0.0.9-8080', ''],
      ['echo-1', 'blue'],
    ]);
  });
});

describe('podsWithoutSidecar', () => {
  test('labelled for the sidecar, not injected, not finished', () => {
    const pods = [
      pod('injected', { labels: { 'baton.dev/inject': 'true', 'baton.dev/sidecar': 'true' } }),
      pod('missed', { labels: { 'baton.dev/inject': 'true' } }),
      pod('missed-pending', { labels: { 'baton.dev/inject': 'true' }, phase: 'Pending', ip: null }),
      pod('done', { labels: { 'baton.dev/inject': 'true' }, phase: 'Succeeded' }),
      pod('not-asked', { labels: { app: 'x' } }),
      pod('asked-false', { labels: { 'baton.dev/inject': 'false' } }),
    ];
    assert.deepEqual(podsWithoutSidecar(pods), ['missed', 'missed-pending']);
  });
});
