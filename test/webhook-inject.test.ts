// The sidecar injection webhook's pure part: pod in, JSON patch (or rejection) out. The patch is
// applied here to see the pod the API server would store; test/webhook.test.ts runs the real thing.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { admit, injection, parseAdmissionReview, shutdownTiming, type InjectOptions, type JsonPatchOp } from '../operator/webhook/inject.js';
import { nodesForPod, parseVersion, sidecarForm, summarizeNode, type NativeSidecarsMode, type NodeSummary, type SidecarForm } from '../operator/webhook/native.js';
import { OPTIONS, parseOptions } from '../operator/options.js';
import { issueCa, issueServing, renew, renewal, splitPem, type ServingNames } from '../operator/webhook/certs.js';

const IMAGE = 'example.invalid/baton:test';

const SWITCH = { 'baton.dev/inject': 'true' };
const REGULAR: SidecarForm = { native: false, reason: 'test: regular' };
const NATIVE: SidecarForm = { native: true, reason: 'test: native' };
const opts = (native = false, image = IMAGE): InjectOptions => ({ image, formFor: () => (native ? NATIVE : REGULAR) });

/** A pod as a Deployment would create it; labelled baton.dev/inject: "true" unless `labels` says otherwise (null: none). */
function pod(annotations?: Record<string, string>, spec: Partial<V1Pod['spec']> = {}, labels: Record<string, string> | null = SWITCH): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'edge-', namespace: 'app', ...(annotations ? { annotations } : {}), ...(labels ? { labels } : {}) },
    spec: { containers: [{ name: 'app', image: 'example.invalid/app:1', ports: [{ containerPort: 9000 }] }], ...spec },
  };
}

/** Applies "add" operations as RFC 6902 does (the only op the webhook emits). */
function applyPatch<T>(doc: T, patch: JsonPatchOp[]): T {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of patch) {
    assert.equal(op.op, 'add');
    const parts = op.path.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    let parent: unknown = out;
    for (const p of parts) {
      parent = (parent as Record<string, unknown>)[p];
      assert.ok(parent !== undefined, `${op.path}: ${p} does not exist`);
    }
    if (Array.isArray(parent)) parent.splice(last === '-' ? parent.length : Number(last), 0, op.value);
    else (parent as Record<string, unknown>)[last] = op.value;
  }
  return out as T;
}

function injected(p: V1Pod, native = false, image = IMAGE): V1Pod {
  const r = injection(p, opts(native, image));
  assert.equal(r.action, 'inject', JSON.stringify(r));
  return applyPatch(p, r.action === 'inject' ? r.patch : []);
}

function rejection(annotations: Record<string, string>, spec: Partial<V1Pod['spec']> = {}): string {
  const r = injection(pod(annotations, spec), opts());
  assert.equal(r.action, 'reject', JSON.stringify(r));
  return r.action === 'reject' ? r.message : '';
}

const env = (c: V1Container, name: string) => c.env?.find((e) => e.name === name);

describe('sidecar injection (pure)', () => {
  test('the label is the switch: a pod without it, labelled "false", or only annotated is left alone', () => {
    for (const p of [pod(undefined, {}, null), pod({ other: 'x' }, {}, { app: 'edge' }), pod(undefined, {}, { 'baton.dev/inject': 'false' }), pod(SWITCH, {}, null)]) {
      assert.deepEqual(injection(p, opts(true)), { action: 'skip', reason: 'not labelled baton.dev/inject: "true"' });
    }
    // The old switch next to the label is harmless.
    assert.equal(injection(pod(SWITCH), opts()).action, 'inject');
  });

  test('the default sidecar, as a regular container: command, addresses, token, probes, security, resources, label', () => {
    const out = injected(pod());
    assert.deepEqual(out.spec!.containers.map((c) => c.name), ['app', 'baton']);
    assert.equal(out.spec!.initContainers, undefined);
    const c = out.spec!.containers[1]!;
    assert.equal(c.image, IMAGE);
    assert.deepEqual(c.args, ['sidecar']);
    assert.equal(c.restartPolicy, undefined);
    assert.deepEqual(c.ports?.map((p) => p.containerPort), [8080, 9901]);
    assert.equal(env(c, 'BATON_LISTEN_ADDRESS')?.value, '0.0.0.0:8080');
    assert.equal(env(c, 'BATON_ADMIN_ADDRESS')?.value, '0.0.0.0:9901');
    assert.deepEqual(env(c, 'BATON_ADMIN_TOKEN')?.valueFrom, { secretKeyRef: { name: 'baton-admin', key: 'token' } });
    assert.equal(env(c, 'NODE_OPTIONS'), undefined, "V8's defaults, as the image ships them");
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 9901 });
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 9901 });
    const sc = c.securityContext!;
    assert.equal(sc.runAsNonRoot, true);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(sc.capabilities, { drop: ['ALL'] });
    assert.deepEqual(c.resources, { requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '256Mi' } });
    assert.equal(c.volumeMounts, undefined);
    assert.equal(out.spec!.volumes, undefined);
    assert.deepEqual(out.metadata!.labels, { 'baton.dev/inject': 'true', 'baton.dev/sidecar': 'true' });
    assert.deepEqual(out.metadata!.annotations, { 'baton.dev/sidecar-form': 'regular', 'baton.dev/sidecar-form-reason': 'test: regular' });
  });

  test('the native sidecar (1.29+): first init container with restartPolicy Always; existing labels kept', () => {
    const withInit = pod({ other: 'x' }, { initContainers: [{ name: 'migrate', image: 'example.invalid/migrate:1' }] }, { app: 'edge', ...SWITCH });
    const out = injected(withInit, true);
    assert.deepEqual(out.spec!.initContainers!.map((c) => c.name), ['baton', 'migrate']);
    assert.equal(out.spec!.initContainers![0]!.restartPolicy, 'Always');
    assert.deepEqual(out.spec!.containers.map((c) => c.name), ['app']);
    assert.deepEqual(out.metadata!.labels, { app: 'edge', ...SWITCH, 'baton.dev/sidecar': 'true' });
    assert.deepEqual(out.metadata!.annotations, { other: 'x', 'baton.dev/sidecar-form': 'native', 'baton.dev/sidecar-form-reason': 'test: native' });

    const noInit = injected(pod(), true);
    assert.deepEqual(noInit.spec!.initContainers!.map((c) => [c.name, c.restartPolicy]), [['baton', 'Always']]);
  });

  test('annotations set the ports, the config ConfigMap, the token Secret, the image and the resources', () => {
    const out = injected(
      pod(
        {
          'baton.dev/listen-port': '7000',
          'baton.dev/admin-port': '7001',
          'baton.dev/config': 'edge-baton',
          'baton.dev/admin-token-secret': 'edge-admin',
          'baton.dev/image': 'registry.example/baton:dev',
          'baton.dev/cpu-request': '250m',
          'baton.dev/memory-request': '128Mi',
          'baton.dev/memory-limit': '1Gi',
        },
        { volumes: [{ name: 'data', emptyDir: {} }] },
      ),
    );
    const c = out.spec!.containers[1]!;
    assert.equal(c.image, 'registry.example/baton:dev');
    assert.deepEqual(c.args, ['sidecar', '--config', '/etc/baton/baton.yaml']);
    assert.equal(env(c, 'BATON_LISTEN_ADDRESS')?.value, '0.0.0.0:7000');
    assert.equal(env(c, 'BATON_ADMIN_ADDRESS')?.value, '0.0.0.0:7001');
    assert.equal(env(c, 'BATON_ADMIN_TOKEN')?.valueFrom?.secretKeyRef?.name, 'edge-admin');
    assert.equal(c.readinessProbe?.httpGet?.port, 7001);
    assert.deepEqual(c.resources, { requests: { cpu: '250m', memory: '128Mi' }, limits: { memory: '1Gi' } });
    assert.deepEqual(c.volumeMounts, [{ name: 'baton-config', mountPath: '/etc/baton', readOnly: true }]);
    assert.deepEqual(out.spec!.volumes, [{ name: 'data', emptyDir: {} }, { name: 'baton-config', configMap: { name: 'edge-baton' } }]);
  });

  test('a pod that already has the sidecar is left alone (idempotent)', () => {
    const once = injected(pod());
    assert.deepEqual(injection(once, opts()), { action: 'skip', reason: 'already has a container named "baton"' });
    const native = injected(pod(), true);
    assert.equal(injection(native, opts(true)).action, 'skip');
  });

  test('a pod made from an injected one\'s metadata (the form annotations, no sidecar) is injected, not refused', () => {
    const copied = pod({ 'baton.dev/sidecar-form': 'native', 'baton.dev/sidecar-form-reason': 'an older decision' });
    const out = injected(copied);
    assert.deepEqual(out.spec!.containers.map((c) => c.name), ['app', 'baton']);
    assert.equal(out.metadata!.annotations!['baton.dev/sidecar-form'], 'regular', 'the decision of this admission replaces the copied one');
    assert.equal(out.metadata!.annotations!['baton.dev/sidecar-form-reason'], 'test: regular');
  });

  test('a bad annotation is rejected, naming the annotation and its value', () => {
    assert.equal(rejection({ 'baton.dev/listen-port': '70000' }), 'baton.dev/listen-port: "70000" is not a port number (1-65535)');
    assert.equal(rejection({ 'baton.dev/admin-port': 'http' }), 'baton.dev/admin-port: "http" is not a port number (1-65535)');
    assert.equal(
      rejection({ 'baton.dev/admin-port': '8080' }),
      'baton.dev/admin-port: "8080" is also the listen port (baton.dev/listen-port); the sidecar needs two ports',
    );
    assert.equal(rejection({ 'baton.dev/config': 'Edge_Config' }), 'baton.dev/config: "Edge_Config" is not a ConfigMap name (a DNS-1123 subdomain)');
    assert.equal(rejection({ 'baton.dev/admin-token-secret': '' }), 'baton.dev/admin-token-secret: "" is not a Secret name (a DNS-1123 subdomain)');
    assert.equal(rejection({ 'baton.dev/memory-limit': '1 GB' }), 'baton.dev/memory-limit: "1 GB" is not a quantity (e.g. 256Mi, 1Gi)');
    assert.equal(rejection({ 'baton.dev/image': 'a b' }), 'baton.dev/image: "a b" is not an image reference');
    assert.match(rejection({ 'baton.dev/listen_port': '7000' }), /^baton\.dev\/listen_port: unknown annotation \(known: baton\.dev\/listen-port, .*baton\.dev\/memory-limit\)$/);
    // Every problem at once.
    assert.equal(rejection({ 'baton.dev/listen-port': '0', 'baton.dev/cpu-request': 'lots' }).split('; ').length, 2);
  });

  test('a port another container declares is rejected, also when it is the default', () => {
    const app8080 = { containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 8080 }] }] };
    assert.equal(
      rejection({}, app8080),
      '8080 (the default of baton.dev/listen-port) is already a port of container "app"; set baton.dev/listen-port to a free port',
    );
    assert.equal(injection(pod({ 'baton.dev/listen-port': '8081' }, app8080), opts()).action, 'inject');
    const nativeNeighbour = { initContainers: [{ name: 'mesh', image: 'x', restartPolicy: 'Always', ports: [{ containerPort: 9901 }] }] };
    assert.match(rejection({}, nativeNeighbour), /^9901 \(the default of baton\.dev\/admin-port\) is already a port of container "mesh"/);
  });

  test('AdmissionReview: the answer echoes uid and apiVersion; a patch only for a created, labelled pod', () => {
    const review = (operation: string, object: V1Pod, kind = 'Pod') =>
      parseAdmissionReview({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u-1', kind: { group: '', version: 'v1', kind }, operation, namespace: 'app', object } });
    const created = admit(review('CREATE', pod()), opts()).answer;
    assert.equal(created.apiVersion, 'admission.k8s.io/v1');
    assert.equal(created.response.uid, 'u-1');
    assert.equal(created.response.allowed, true);
    assert.equal(created.response.patchType, 'JSONPatch');
    const patch = JSON.parse(Buffer.from(created.response.patch!, 'base64').toString()) as JsonPatchOp[];
    assert.equal(applyPatch(pod(), patch).spec!.containers[1]!.name, 'baton');

    for (const other of [admit(review('UPDATE', pod()), opts()), admit(review('CREATE', pod(undefined, {}, null)), opts())]) {
      assert.deepEqual(other.answer.response, { uid: 'u-1', allowed: true });
    }
    const rejected = admit(review('CREATE', pod({ 'baton.dev/listen-port': '0' })), opts()).answer.response;
    assert.deepEqual(rejected, { uid: 'u-1', allowed: false, status: { code: 400, message: 'baton.dev/listen-port: "0" is not a port number (1-65535)' } });

    assert.throws(() => parseAdmissionReview({ kind: 'Pod' }), /not an AdmissionReview/);
    assert.throws(() => parseAdmissionReview({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} }), /request\.uid is missing/);
  });

  test('docs/injection.md: the manual pod spec is exactly what the webhook injects', () => {
    const doc = readFileSync(new URL('../../docs/injection.md', import.meta.url), 'utf8');
    const block = /<!-- manual pod spec -->\s*```yaml\n([\s\S]+?)```/.exec(doc);
    assert.ok(block, 'docs/injection.md has a yaml block after <!-- manual pod spec -->');
    const manual = parse(block[1]!) as V1Pod;
    const image = OPTIONS.find((o) => o.key === 'sidecarImage')!.default({}) as string;
    const expected = injected(pod({ 'baton.dev/config': 'my-baton-config' }), true, image);
    assert.deepEqual(manual.spec?.initContainers?.find((c) => c.name === 'baton'), expected.spec!.initContainers![0]);
    assert.deepEqual(manual.spec?.volumes?.find((v) => v.name === 'baton-config'), expected.spec!.volumes![0]);
    assert.equal(manual.metadata?.labels?.['baton.dev/sidecar'], 'true');
  });
});

const node = (name: string, kubeletVersion: string, labels: Record<string, string> = {}): NodeSummary => ({ metadata: { name, labels }, kubeletVersion });
/** The form for a pod on `nodes`, as the webhook decides it. */
const formOn = (mode: NativeSidecarsMode, apiServer: string, nodes: NodeSummary[], spec?: V1Pod['spec']) => sidecarForm({ mode, apiServer, ...nodesForPod(nodes, spec) });

describe('native sidecar or regular container (pure)', () => {
  test('versions as managed clusters and distributions report them', () => {
    assert.deepEqual(parseVersion('v1.29.3-eks-abc1234'), { major: 1, minor: 29 });
    assert.deepEqual(parseVersion('v1.31.0+k3s1'), { major: 1, minor: 31 });
    assert.deepEqual(parseVersion('v1.28.15-gke.1020000'), { major: 1, minor: 28 });
    assert.deepEqual(parseVersion('1.30'), { major: 1, minor: 30 });
    assert.deepEqual(parseVersion('v2.0.0'), { major: 2, minor: 0 });
    for (const bad of ['', 'unknown', 'v1', 'v1.x.0', 'v1.290a']) assert.equal(parseVersion(bad), undefined, bad);
  });

  test('the matrix: API server × lowest kubelet × mode', () => {
    for (const apiServer of ['v1.28.9', 'v1.29.3-eks-abc', 'v1.31.0+k3s1']) {
      for (const lowest of ['v1.27.16', 'v1.28.4', 'v1.29.0', 'v1.31.2']) {
        // The lagging node among up-to-date ones: the lowest decides, wherever it is in the list.
        const nodes = [node('a', 'v1.31.2'), node('lagging', lowest), node('b', 'v1.31.2')];
        const expectNative = parseVersion(apiServer)!.minor >= 29 && parseVersion(lowest)!.minor >= 29;
        const cell = `${apiServer} × ${lowest}`;
        assert.deepEqual(formOn('always', apiServer, nodes), { native: true, reason: 'native sidecars are forced on (--native-sidecars=always)' }, cell);
        assert.deepEqual(formOn('never', apiServer, nodes), { native: false, reason: 'native sidecars are turned off (--native-sidecars=never)' }, cell);
        const auto = formOn('auto', apiServer, nodes);
        assert.equal(auto.native, expectNative, `${cell}: ${auto.reason}`);
        const oldServer = apiServer === 'v1.28.9' ? 'the API server is v1.28.9' : '';
        const oldKubelet = parseVersion(lowest)!.minor < 29 ? `node lagging runs kubelet ${lowest} (the lowest of 3 nodes in the cluster)` : '';
        if (!expectNative) assert.equal(auto.reason, `${[oldServer, oldKubelet].filter(Boolean).join(' and ')}; native sidecars need 1.29`, cell);
        else assert.equal(auto.reason, `the API server (${apiServer}) and every kubelet of 3 nodes in the cluster (lowest ${lowest === 'v1.29.0' ? 'v1.29.0' : 'v1.31.2'}) are 1.29 or later`, cell);
      }
    }
  });

  test("auto narrows to the nodes the pod may run on: its nodeSelector, its nodeName", () => {
    const nodes = [
      node('old-1', 'v1.27.16', { pool: 'legacy', zone: 'a' }),
      node('new-1', 'v1.31.2', { pool: 'edge', zone: 'a' }),
      node('new-2', 'v1.29.6-eks-1', { pool: 'edge', zone: 'b' }),
    ];
    const api = 'v1.31.2';
    assert.equal(formOn('auto', api, nodes).reason, 'node old-1 runs kubelet v1.27.16 (the lowest of 3 nodes in the cluster); native sidecars need 1.29');
    assert.deepEqual(formOn('auto', api, nodes, { containers: [], nodeSelector: { pool: 'edge' } }), {
      native: true,
      reason: "the API server (v1.31.2) and every kubelet of 2 nodes matching the pod's nodeSelector pool=edge (lowest v1.29.6-eks-1) are 1.29 or later",
    });
    assert.equal(formOn('auto', api, nodes, { containers: [], nodeSelector: { zone: 'a' } }).native, false, 'zone a holds the old node');
    assert.equal(formOn('auto', api, nodes, { containers: [], nodeSelector: { zone: 'a', pool: 'edge' } }).native, true);
    assert.equal(formOn('auto', api, nodes, { containers: [], nodeName: 'new-2' }).native, true);
    assert.deepEqual(formOn('auto', api, nodes, { containers: [], nodeName: 'old-1', nodeSelector: { zone: 'a' } }), {
      native: false,
      reason: "node old-1 runs kubelet v1.27.16 (the lowest of 1 node matching the pod's spec.nodeName old-1 and nodeSelector zone=a); native sidecars need 1.29",
    });
    assert.deepEqual(formOn('auto', api, nodes, { containers: [], nodeSelector: { pool: 'gpu' } }), { native: false, reason: "no node is known matching the pod's nodeSelector pool=gpu; native sidecars need 1.29" });
  });

  test('no nodes known, or a kubelet version that cannot be read: regular', () => {
    assert.deepEqual(formOn('auto', 'v1.31.0', []), { native: false, reason: 'no node is known in the cluster; native sidecars need 1.29' });
    assert.deepEqual(formOn('auto', 'v1.31.0', [node('n', 'v1.31.0'), node('odd', 'unknown')]), {
      native: false,
      reason: 'node odd reports kubelet version "unknown", which cannot be read; native sidecars need 1.29',
    });
    assert.deepEqual(formOn('auto', 'devel', [node('n', 'v1.31.0')]), { native: false, reason: 'the API server\'s version "devel" cannot be read; native sidecars need 1.29' });
    assert.equal(formOn('always', 'devel', []).native, true, 'always does not look');
  });

  test('the node cache keeps name, labels and the kubelet version, nothing else', () => {
    const big = {
      metadata: { name: 'n1', labels: { pool: 'edge' }, resourceVersion: '42', annotations: { huge: 'x'.repeat(10_000) } },
      status: { nodeInfo: { kubeletVersion: 'v1.30.1', osImage: 'Bottlerocket' }, images: [{ names: ['a'], sizeBytes: 1 }] },
    };
    assert.deepEqual(summarizeNode(big), { metadata: { name: 'n1', labels: { pool: 'edge' }, resourceVersion: '42' }, kubeletVersion: 'v1.30.1' });
  });
});

/**
 * When the kubelet signals the sidecar, as kuberuntime_container.go killContainer does from 1.29 on
 * (preStop, then for a sidecar its turn after the app's containers, grace in whole seconds, never
 * less than 2 s): `appExit` is when the app's containers have exited.
 */
function kubeletStops(podGrace: number, preStop: number, native: boolean, appExit: number): { sigterm: number; sigkill: number } {
  let grace = podGrace - preStop;
  let sigterm = preStop;
  if (native && grace > 0) {
    const waited = Math.min(Math.max(appExit - preStop, 0), grace);
    sigterm += waited;
    grace -= Math.floor(waited);
  }
  return { sigterm, sigkill: sigterm + Math.max(grace, 2) };
}

describe('the sidecar stops within the pod grace period (pure)', () => {
  const sidecarOf = (out: V1Pod) => [...(out.spec!.initContainers ?? []), ...out.spec!.containers].find((c) => c.name === 'baton')!;

  test('startupProbe, BATON_SHUTDOWN_GRACE and preStop for a few pod grace periods, in both forms', () => {
    // [terminationGracePeriodSeconds (undefined: the default 30), preStop wait, grace regular, grace native]
    const cases: Array<[number | undefined, number, number]> = [
      [undefined, 5, 23],
      [60, 5, 53],
      [10, 2, 6],
      [5, 1, 2],
      [1, 0, 0],
    ];
    for (const [podGrace, preStop, regularGrace] of cases) {
      for (const native of [false, true]) {
        const out = injected(pod(undefined, podGrace === undefined ? {} : { terminationGracePeriodSeconds: podGrace }), native);
        const c = sidecarOf(out);
        const what = `T=${podGrace ?? 'default'} ${native ? 'native' : 'regular'}`;
        assert.deepEqual(c.startupProbe, { httpGet: { path: '/healthz', port: 9901 }, periodSeconds: 1, failureThreshold: 30 }, what);
        assert.equal(env(c, 'BATON_SHUTDOWN_GRACE')?.value, `${native ? 0 : regularGrace}s`, what);
        assert.deepEqual(c.lifecycle, preStop ? { preStop: { exec: { command: ['sleep', String(preStop)] } } } : undefined, what);
      }
    }
  });

  test('the sidecar has closed every session with 1001 before SIGKILL, however long the app takes to stop', () => {
    const CLOSE = 1; // the sidecar's wait for close handshakes after sending 1001
    for (let podGrace = 0; podGrace <= 120; podGrace++) {
      for (const native of [false, true]) {
        const t = shutdownTiming(podGrace, native);
        for (let appExit = 0; appExit <= podGrace + 5; appExit++) {
          const { sigterm, sigkill } = kubeletStops(podGrace, t.preStopSeconds, native, appExit);
          const closed = sigterm + t.graceSeconds + CLOSE;
          assert.ok(closed < sigkill, `T=${podGrace} ${native ? 'native' : 'regular'}, app exits at ${appExit}: SIGTERM ${sigterm}, sessions closed by ${closed}, SIGKILL ${sigkill}`);
        }
        // The listener stays open while the pod's removal from Services spreads.
        assert.ok(t.preStopSeconds <= 5 && t.preStopSeconds <= podGrace / 4);
      }
    }
    // The regular form leaves the sessions as long as fits: SIGKILL comes 1 s after the close.
    assert.deepEqual(shutdownTiming(30, false), { podGraceSeconds: 30, preStopSeconds: 5, graceSeconds: 23 });
  });
});

describe('webhook options', () => {
  test('on at 0.0.0.0:9443 by default; an empty --webhook-address or variable turns it off', () => {
    const d = parseOptions({}, { POD_NAMESPACE: 'baton-system' });
    assert.ok(d.ok);
    assert.deepEqual(d.options.webhookAddress, { host: '0.0.0.0', port: 9443 });
    assert.equal(d.options.webhookServiceNamespace, 'baton-system');
    assert.equal(d.options.webhookCertDir, '');
    for (const off of [parseOptions({ 'webhook-address': '' }, {}), parseOptions({}, { BATON_OPERATOR_WEBHOOK_ADDRESS: '' })]) {
      assert.ok(off.ok);
      assert.equal(off.options.webhookAddress, null);
    }
  });

  test('--native-sidecars: auto by default; always and never; anything else is refused', () => {
    const d = parseOptions({}, {});
    assert.ok(d.ok);
    assert.equal(d.options.nativeSidecars, 'auto');
    const never = parseOptions({}, { BATON_OPERATOR_NATIVE_SIDECARS: 'never' });
    assert.ok(never.ok);
    assert.equal(never.options.nativeSidecars, 'never');
    assert.deepEqual(parseOptions({ 'native-sidecars': 'yes' }, {}), { ok: false, problems: ['--native-sidecars: "yes" is not one of auto, always, never'] });
  });

  test('bad names are reported naming the flag', () => {
    const r = parseOptions({ 'webhook-service': 'Baton_Operator', 'webhook-cert-secret': 'a..b' }, {});
    assert.ok(!r.ok);
    assert.deepEqual(r.problems, [
      '--webhook-service: "Baton_Operator" is not a DNS-1123 label (lower-case letters, digits and "-", at most 63)',
      '--webhook-cert-secret: "a..b" is not a DNS-1123 subdomain (lower-case letters, digits, "-" and ".")',
    ]);
  });
});

describe('webhook certificates (pure)', () => {
  const names: ServingNames = { dns: ['baton-operator.baton-system.svc', 'baton-operator.baton-system.svc.cluster.local'], ips: [] };
  const DAY = 24 * 3600 * 1000;
  const daysAgo = (n: number) => new Date(Date.now() - n * DAY);

  test('nothing yet: a CA and a serving certificate for the names, which then need nothing', async () => {
    const due = renewal(undefined, names, new Date());
    assert.ok(due.renew === 'all');
    assert.equal(due.reason, 'no certificate yet');
    const certs = await renew(undefined, due, names, new Date());
    assert.equal(splitPem(certs.caBundle).length, 1);
    const serving = new X509Certificate(certs.cert);
    assert.equal(serving.subjectAltName, 'DNS:baton-operator.baton-system.svc, DNS:baton-operator.baton-system.svc.cluster.local');
    assert.ok(serving.checkIssued(new X509Certificate(certs.caBundle)));
    assert.deepEqual(renewal(certs, names, new Date()), { renew: 'none' });
    // Renewed once less than a third of its year is left: not at 240 days, at 250.
    assert.deepEqual(renewal(certs, names, new Date(Date.now() + 240 * DAY)), { renew: 'none' });
    assert.equal(renewal(certs, names, new Date(Date.now() + 250 * DAY)).renew, 'serving');
  });

  test('a serving certificate low on time, for other names, or with the wrong key is reissued by the same CA', async () => {
    const ca = await issueCa(new Date());
    const old = await issueServing(ca, names, daysAgo(300));
    const current = { caBundle: ca.cert, caKey: ca.key, ...old };
    const due = renewal(current, names, new Date());
    assert.ok(due.renew === 'serving');
    assert.match(due.reason, /^the serving certificate expires on /);
    const renewed = await renew(current, due, names, new Date());
    assert.equal(renewed.caBundle, ca.cert, 'the caBundle is unchanged');
    assert.equal(renewed.caKey, ca.key);
    assert.notEqual(renewed.cert, old.cert);
    assert.deepEqual(renewal(renewed, names, new Date()), { renew: 'none' });

    const moved = { ...names, ips: ['10.0.0.7'] };
    assert.equal(renewal(renewed, moved, new Date()).renew, 'serving');
    assert.deepEqual(renewal({ ...renewed, key: ca.key }, names, new Date()), { renew: 'serving', reason: 'the serving key does not match its certificate' });
    const stranger = await issueServing(await issueCa(new Date()), names, new Date());
    assert.deepEqual(renewal({ ...renewed, ...stranger }, names, new Date()), { renew: 'serving', reason: 'the serving certificate was not issued by the CA' });
  });

  test('a CA low on time is replaced; the old one stays in the bundle until it has expired', async () => {
    const oldCa = await issueCa(daysAgo(4 * 365));
    const current = { caBundle: oldCa.cert, caKey: oldCa.key, ...(await issueServing(oldCa, names, new Date())) };
    const due = renewal(current, names, new Date());
    assert.ok(due.renew === 'all');
    const renewed = await renew(current, due, names, new Date());
    const bundle = splitPem(renewed.caBundle);
    assert.equal(bundle.length, 2);
    assert.equal(bundle[1], oldCa.cert);
    assert.ok(new X509Certificate(renewed.cert).checkIssued(new X509Certificate(bundle[0]!)));
    assert.deepEqual(renewal(renewed, names, new Date()), { renew: 'none' });

    const expiredCa = await issueCa(daysAgo(6 * 365));
    const expired = { caBundle: expiredCa.cert, caKey: expiredCa.key, cert: '', key: '' };
    const replaced = await renew(expired, { renew: 'all', reason: 'test' }, names, new Date());
    assert.equal(splitPem(replaced.caBundle).length, 1, 'an expired CA is dropped');
  });
});
