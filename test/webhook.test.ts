// The sidecar injection webhook end to end on a real control plane (kube-apiserver 1.20, RBAC on):
// the operator runs as a process with the chart's RBAC rules, creates its certificate Secret, fills
// in the caBundle of a url-based MutatingWebhookConfiguration, and the API server calls it over
// HTTPS for every pod created with the label baton.dev/inject: "true". Node objects report kubelets
// 1.27 to 1.31; 1.20 has no native sidecars, so auto chooses the regular form and only always
// stores the native one (whose restartPolicy 1.20 drops: no kubelet runs these pods here).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  PatchStrategy,
  VersionApi,
  setHeaderOptions,
  type V1Container,
  type V1Pod,
  type V1Secret,
} from '@kubernetes/client-node';
import { OperatorMetrics } from '../operator/metrics.js';
import { DirectoryCertificates, fromSecret, issueCa, issueServing, splitPem } from '../operator/webhook/certs.js';
import { WebhookServer } from '../operator/webhook/server.js';
import { createLogger } from '../common/logger.js';
import { makePki } from './certs.js';
import { freePort } from './helpers.js';
import { ensurePrometheus, promtoolCheckMetrics } from './prometheus.js';
import { apiCode, eventually, startControlPlane, type ControlPlane } from './kube/control-plane.js';
import { OperatorProcess, operatorKubeconfig } from './kube/operator-process.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NS = 'app';
const OPERATOR_NS = 'baton-system';
const CONFIGURATION = 'baton-sidecar-injector';
const CERT_SECRET = 'baton-webhook-cert';
const IMAGE = 'example.invalid/baton:webhook-test';
const ADMIN_TOKEN = 'webhook-test-admin-token';
const DAY = 24 * 3600 * 1000;
/** The nodes the test registers: name → kubelet version (label baton.dev/test-kubelet: the minor). */
const KUBELETS: Record<string, string> = { 'node-127': 'v1.27.16', 'node-128': 'v1.28.15-eks-1', 'node-129': 'v1.29.0', 'node-131': 'v1.31.2+k3s1' };
const FORM = 'baton.dev/sidecar-form';
const REASON = 'baton.dev/sidecar-form-reason';

/** The certificate a TLS server on 127.0.0.1:port presents. */
function servedCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(new X509Certificate(raw));
    });
    socket.once('error', reject);
  });
}

const sameCert = (a: X509Certificate, pem: string) => a.fingerprint256 === new X509Certificate(pem).fingerprint256;
/** client-node's model objects as plain JSON, to compare with literals. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

describe('sidecar injection webhook on a real API server', { timeout: 180_000 }, () => {
  let cp: ControlPlane;
  let core: CoreV1Api;
  let admission: AdmissionregistrationV1Api;
  let kubeconfig: string;
  let webhookPort: number;
  let operator: OperatorProcess | undefined;
  const cleanups: Array<() => Promise<void> | void> = [];

  const startOperator = async (extra: string[] = []) => {
    operator = new OperatorProcess('operator', kubeconfig, await freePort(), [
      ...extra,
      '--leader-elect', 'false',
      '--webhook-address', `127.0.0.1:${webhookPort}`,
      '--webhook-service', 'baton-operator',
      '--webhook-service-namespace', OPERATOR_NS,
      '--webhook-configuration', CONFIGURATION,
      '--webhook-cert-secret', CERT_SECRET,
      '--sidecar-image', IMAGE,
    ]);
    return operator;
  };
  const readSecret = () => core.readNamespacedSecret({ namespace: OPERATOR_NS, name: CERT_SECRET });
  const caBundle = async () => {
    const config = await admission.readMutatingWebhookConfiguration({ name: CONFIGURATION });
    return Buffer.from(config.webhooks![0]!.clientConfig.caBundle ?? '', 'base64').toString('utf8');
  };

  let pods = 0;
  const createPod = (
    annotations: Record<string, string> | undefined,
    opts: { containers?: V1Container[]; labelled?: boolean; nodeSelector?: Record<string, string> } = {},
  ) =>
    core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: `pod-${++pods}`, ...(opts.labelled === false ? {} : { labels: { 'baton.dev/inject': 'true' } }), ...(annotations ? { annotations } : {}) },
        spec: { containers: opts.containers ?? [{ name: 'app', image: 'example.invalid/app:1' }], ...(opts.nodeSelector ? { nodeSelector: opts.nodeSelector } : {}) },
      },
    });
  /**
   * A labelled pod, created once a (re)started operator's webhook answers (the policy is Fail: until
   * then the API server fails the call), or the API server's refusal of what the webhook made.
   */
  const createdOnceServing = (opts: { nodeSelector?: Record<string, string> }) =>
    eventually<{ pod?: V1Pod; err?: { code?: number; body: string } }>(
      () =>
        createPod(undefined, opts).then(
          (pod) => ({ pod }),
          (err: { code?: number; body: string }) => (String(err.body).includes('failed calling webhook') ? undefined : { err }),
        ),
      'the webhook answering',
      20_000,
      200,
    );
  /** The message of the API server's refusal to create the pod. */
  const refusal = async (annotations: Record<string, string>): Promise<string> => {
    try {
      await createPod(annotations);
    } catch (err) {
      assert.equal(apiCode(err), 400, String(err));
      return (JSON.parse((err as { body: string }).body) as { message: string }).message;
    }
    assert.fail('the pod was created');
  };
  const sidecarOf = (pod: V1Pod) => pod.spec!.containers.find((c) => c.name === 'baton');

  before(async () => {
    cp = await startControlPlane({ log: Boolean(process.env.BATON_TEST_KUBE_LOG) });
    await cp.ensureNamespace(OPERATOR_NS);
    await cp.ensureNamespace(NS);
    const admin = cp.kubeConfig();
    core = admin.makeApiClient(CoreV1Api);
    admission = admin.makeApiClient(AdmissionregistrationV1Api);

    // The operator's ServiceAccount with the chart's rules, nothing more.
    kubeconfig = await operatorKubeconfig(cp, OPERATOR_NS);

    // The chart's webhook, but url-based (no Service needed) and failing closed, so that a webhook
    // that does not answer fails the test's pod creation instead of silently skipping injection.
    webhookPort = await freePort();
    await admission.createMutatingWebhookConfiguration({
      body: {
        metadata: { name: CONFIGURATION },
        webhooks: [
          {
            name: 'inject.baton.dev',
            admissionReviewVersions: ['v1'],
            sideEffects: 'None',
            failurePolicy: 'Fail',
            timeoutSeconds: 5,
            clientConfig: { url: `https://127.0.0.1:${webhookPort}/mutate-pods` },
            rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
            namespaceSelector: { matchLabels: { 'baton.dev/test-injection': 'on' } },
            objectSelector: { matchLabels: { 'baton.dev/inject': 'true' } },
          },
        ],
      },
    });
    await core.patchNamespace({ name: NS, body: { metadata: { labels: { 'baton.dev/test-injection': 'on' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'baton-admin' }, stringData: { token: ADMIN_TOKEN } } });
    // Nodes as kubelets register them: the version is status, written through /status.
    for (const [name, kubeletVersion] of Object.entries(KUBELETS)) {
      await core.createNode({ body: { metadata: { name, labels: { 'baton.dev/test-kubelet': kubeletVersion.slice(1, 5) } } } });
      await core.patchNodeStatus({ name, body: { status: { nodeInfo: { kubeletVersion } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    }
    await startOperator();
  });

  after(async () => {
    await operator?.kill();
    for (const c of cleanups.reverse()) await c();
    await cp?.stop();
  });

  test('the operator creates its certificate Secret, fills in the caBundle and serves that certificate', async () => {
    const bundle = await eventually(async () => (await caBundle()) || undefined, 'the caBundle filled in', 20_000);
    // The caBundle and the Secret are two writes: the Secret may come a moment after.
    const secret = await eventually(() => readSecret(), 'the certificate Secret', 20_000);
    const certs = fromSecret(secret);
    assert.equal(secret.type, 'kubernetes.io/tls');
    assert.equal(bundle, certs.caBundle);
    const ca = new X509Certificate(bundle);
    const serving = new X509Certificate(certs.cert!);
    assert.ok(serving.checkIssued(ca) && serving.verify(ca.publicKey), 'the serving certificate is issued by the CA in the caBundle');
    assert.deepEqual(serving.subjectAltName!.split(', ').sort(), [
      'DNS:baton-operator.baton-system.svc',
      'DNS:baton-operator.baton-system.svc.cluster.local',
      'IP Address:127.0.0.1',
    ]);
    await eventually(async () => (sameCert(await servedCertificate(webhookPort), certs.cert!) ? true : undefined), 'the webhook serving the certificate of the Secret');
  });

  test('a labelled pod is stored with the sidecar, which starts with the token and the config', async () => {
    const [listenPort, adminPort] = [await freePort(), await freePort()];
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'edge-baton' }, data: { 'baton.yaml': 'admin:\n  metricsRequireToken: true\n' } } });
    const pod = await createPod(
      { 'baton.dev/listen-port': String(listenPort), 'baton.dev/admin-port': String(adminPort), 'baton.dev/config': 'edge-baton' },
      { containers: [{ name: 'app', image: 'example.invalid/app:1', ports: [{ containerPort: 9000 }] }] },
    );
    assert.deepEqual(pod.spec!.containers.map((c) => c.name), ['app', 'baton']);
    assert.equal(pod.metadata!.labels?.['baton.dev/sidecar'], 'true');
    const c = sidecarOf(pod)!;
    assert.equal(c.image, IMAGE);
    assert.deepEqual(c.args, ['sidecar', '--config', '/etc/baton/baton.yaml']);
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value ?? plain(e.valueFrom)]));
    assert.deepEqual(env, {
      BATON_LISTEN_ADDRESS: `0.0.0.0:${listenPort}`,
      BATON_ADMIN_ADDRESS: `0.0.0.0:${adminPort}`,
      BATON_ADMIN_TOKEN: { secretKeyRef: { name: 'baton-admin', key: 'token' } },
      BATON_SHUTDOWN_GRACE: '23s',
    });
    assert.equal(c.startupProbe?.httpGet?.path, '/healthz');
    assert.deepEqual(plain(c.lifecycle?.preStop?.exec?.command), ['sleep', '5']);
    assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
    assert.equal(c.livenessProbe?.httpGet?.port, adminPort);
    assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
    assert.equal(c.readinessProbe?.httpGet?.port, adminPort);
    assert.deepEqual(plain(c.volumeMounts?.find((m) => m.name === 'baton-config')), { name: 'baton-config', mountPath: '/etc/baton', readOnly: true });
    assert.equal(pod.spec!.volumes?.find((v) => v.name === 'baton-config')?.configMap?.name, 'edge-baton');
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL']);

    // Run the container as a kubelet would: its args and env (the token from the Secret), the
    // ConfigMap's files where its mount is.
    const dir = mkdtempSync(join(tmpdir(), 'baton-webhook-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const configMap = await core.readNamespacedConfigMap({ namespace: NS, name: 'edge-baton' });
    for (const [key, text] of Object.entries(configMap.data ?? {})) writeFileSync(join(dir, key), text);
    const mount = c.volumeMounts![0]!.mountPath;
    const args = c.args!.map((a) => (a.startsWith(`${mount}/`) ? join(dir, a.slice(mount.length + 1)) : a));
    const processEnv: Record<string, string> = { PATH: process.env.PATH ?? '' };
    for (const e of c.env!) {
      const ref = e.valueFrom?.secretKeyRef;
      processEnv[e.name] = ref ? Buffer.from((await core.readNamespacedSecret({ namespace: NS, name: ref.name! })).data![ref.key]!, 'base64').toString() : e.value!;
    }
    const token = processEnv.BATON_ADMIN_TOKEN!;
    assert.equal(token, ADMIN_TOKEN);
    const sidecar = spawn(process.execPath, [`${root}bin/baton.js`, ...args], { env: processEnv, stdio: 'ignore' });
    cleanups.push(() => void sidecar.kill('SIGKILL'));
    const admin = `http://127.0.0.1:${adminPort}`;
    await eventually(async () => ((await fetch(`${admin}${c.livenessProbe!.httpGet!.path}`)).status === 200 ? true : undefined), 'the sidecar answering its liveness probe');
    // Not ready until the operator gives it backends.
    assert.equal((await fetch(`${admin}${c.readinessProbe!.httpGet!.path}`)).status, 503);
    assert.equal((await fetch(`${admin}/v1/status`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await fetch(`${admin}/metrics`)).status, 401, 'the ConfigMap config (admin.metricsRequireToken) is loaded');
  });

  test('a pod without the label is never sent to the webhook, also when it has the old annotation', async () => {
    const admissions = () => operator!.metric('baton_operator_webhook_admissions_total');
    const before = await admissions();
    const pod = await createPod({ 'baton.dev/inject': 'true' }, { labelled: false });
    assert.deepEqual(pod.spec!.containers.map((c) => c.name), ['app']);
    assert.equal(pod.metadata!.labels?.['baton.dev/sidecar'], undefined);
    assert.equal(pod.metadata!.annotations?.[FORM], undefined);
    assert.equal(await admissions(), before, 'the webhook did not see the pod');
    // The count would have moved: a labelled pod is seen (and injected).
    assert.ok(sidecarOf(await createPod(undefined)));
    assert.equal(await admissions(), before + 1);
  });

  test('auto on this 1.20 API server: regular, the reason naming the API server and the lowest kubelet of the nodes the pod may run on', async () => {
    const apiServer = (await cp.kubeConfig().makeApiClient(VersionApi).getCode()).gitVersion;
    assert.match(apiServer, /^v1\.20\./);
    const everywhere = await createPod(undefined);
    assert.ok(sidecarOf(everywhere), 'a regular container');
    assert.equal(everywhere.spec!.initContainers, undefined);
    assert.equal(everywhere.metadata!.annotations![FORM], 'regular');
    assert.equal(everywhere.metadata!.annotations![REASON], `the API server is ${apiServer} and node node-127 runs kubelet v1.27.16 (the lowest of 4 nodes in the cluster); native sidecars need 1.29`);

    const on127 = await createPod(undefined, { nodeSelector: { 'baton.dev/test-kubelet': '1.27' } });
    assert.equal(
      on127.metadata!.annotations![REASON],
      `the API server is ${apiServer} and node node-127 runs kubelet v1.27.16 (the lowest of 1 node matching the pod's nodeSelector baton.dev/test-kubelet=1.27); native sidecars need 1.29`,
    );
    // On the 1.31 node only the API server stands in the way.
    const on131 = await createPod(undefined, { nodeSelector: { 'baton.dev/test-kubelet': '1.31' } });
    assert.equal(on131.metadata!.annotations![REASON], `the API server is ${apiServer}; native sidecars need 1.29`);
    await eventually(
      async () => operator!.lines.some((l) => l.msg === 'sidecar injected' && l.form === 'regular' && l.reason === on131.metadata!.annotations![REASON]) || undefined,
      'the decision logged',
    );
  });

  test('--native-sidecars=always injects the native form, never the regular one, whatever the versions', async () => {
    await operator!.kill();
    const always = await startOperator(['--native-sidecars', 'always']);
    // 1.20 drops the init container's restartPolicy it does not know, and then refuses an init
    // container with probes and a preStop: the pod is not created, rather than stuck in Init.
    const { err } = await createdOnceServing({ nodeSelector: { 'baton.dev/test-kubelet': '1.27' } });
    assert.equal(apiCode(err), 422, String(err?.body));
    const message = (JSON.parse(err!.body) as { message: string }).message;
    assert.match(message, /spec\.initContainers\[0\]\.(startupProbe|livenessProbe|readinessProbe|lifecycle)/, message);
    // The operator's log comes through a pipe: it may arrive after the API server's answer.
    const injected = await eventually(async () => always.lines.find((l) => l.msg === 'sidecar injected'), 'the injection logged');
    assert.equal(injected?.form, 'native');
    assert.equal(injected?.reason, 'native sidecars are forced on (--native-sidecars=always)');
    assert.equal(injected?.graceSeconds, 0, 'a native sidecar closes its sessions as soon as its SIGTERM comes');

    await operator!.kill();
    await startOperator(['--native-sidecars', 'never']);
    const { pod: regular } = await createdOnceServing({ nodeSelector: { 'baton.dev/test-kubelet': '1.31' } });
    assert.ok(regular);
    assert.ok(sidecarOf(regular));
    assert.equal(regular.spec!.initContainers, undefined);
    assert.equal(regular.metadata!.annotations![FORM], 'regular');
    assert.equal(regular.metadata!.annotations![REASON], 'native sidecars are turned off (--native-sidecars=never)');
  });

  test('a pod with a bad annotation is refused, naming the annotation and its value', async () => {
    const denied = 'admission webhook "inject.baton.dev" denied the request: ';
    assert.equal(await refusal({ 'baton.dev/listen-port': '70000' }), `${denied}baton.dev/listen-port: "70000" is not a port number (1-65535)`);
    assert.equal(
      await refusal({ 'baton.dev/listen-port': '9000', 'baton.dev/admin-port': '9000' }),
      `${denied}baton.dev/admin-port: "9000" is also the listen port (baton.dev/listen-port); the sidecar needs two ports`,
    );
  });

  test('a restarted operator reuses the certificate in the Secret; its metrics count the injection', async () => {
    const before = await readSecret();
    await operator!.kill();
    const restarted = await startOperator();
    const cert = fromSecret(before).cert!;
    await eventually(async () => (sameCert(await servedCertificate(webhookPort), cert) ? true : undefined), 'the restarted operator serving the certificate of the Secret', 20_000);
    assert.ok(sidecarOf(await createPod(undefined)));
    assert.equal((await readSecret()).metadata!.resourceVersion, before.metadata!.resourceVersion);
    assert.equal(restarted.logged('issuing the webhook certificate'), false);

    const text = await fetch(`http://127.0.0.1:${restarted.metricsPort}/metrics`).then((r) => r.text());
    ensurePrometheus();
    assert.equal(promtoolCheckMetrics(text), '');
    assert.match(text, /^baton_operator_webhook_admissions_total\{result="injected"\} 1$/m);
    const expiry = Date.parse(new X509Certificate(cert).validTo) / 1000;
    assert.match(text, new RegExp(`^baton_operator_webhook_certificate_expiry_timestamp_seconds ${expiry}$`, 'm'));
  });

  test('a CA with less than a third of its lifetime left is replaced; the old CA stays trusted meanwhile', async () => {
    await operator!.kill();
    // A CA of five years issued four years ago, and a serving certificate from it.
    const issued = new Date(Date.now() - 4 * 365 * DAY);
    const oldCa = await issueCa(issued);
    const oldServing = await issueServing(oldCa, { dns: ['baton-operator.baton-system.svc', 'baton-operator.baton-system.svc.cluster.local'], ips: ['127.0.0.1'] }, new Date());
    const secret: V1Secret = await readSecret();
    secret.data = {
      'ca.crt': Buffer.from(oldCa.cert).toString('base64'),
      'ca.key': Buffer.from(oldCa.key).toString('base64'),
      'tls.crt': Buffer.from(oldServing.cert).toString('base64'),
      'tls.key': Buffer.from(oldServing.key).toString('base64'),
    };
    await core.replaceNamespacedSecret({ namespace: OPERATOR_NS, name: CERT_SECRET, body: secret });

    const restarted = await startOperator();
    // The bundle may pass through other pairs first (the CA the webhook was trusted with until now).
    const bundle = await eventually(async () => {
      const b = splitPem(await caBundle());
      return b.length === 2 && b[1] === oldCa.cert ? b : undefined;
    }, 'a caBundle with the new and the old CA', 20_000);
    // The new CA is trusted (the bundle above) before the Secret that serves with it is written.
    const renewed = await eventually(async () => {
      const r = fromSecret(await readSecret());
      return r.caBundle === bundle.join('') ? r : undefined;
    }, 'the Secret holding the same bundle', 20_000);
    assert.ok(new X509Certificate(renewed.cert!).checkIssued(new X509Certificate(bundle[0]!)), 'the new serving certificate is issued by the new CA');
    assert.ok(restarted.logged('issuing the webhook certificate'));
    await eventually(async () => (sameCert(await servedCertificate(webhookPort), renewed.cert!) ? true : undefined), 'the webhook serving the renewed certificate');
    assert.ok(sidecarOf(await createPod(undefined)), 'the API server trusts the renewed certificate');
  });

  test('cert-manager: the certificate comes from a directory, is reloaded when it changes, and nothing is written', async () => {
    await operator!.kill();
    const pki = makePki();
    cleanups.push(() => pki.cleanup());
    const dir = mkdtempSync(join(tmpdir(), 'baton-webhook-certs-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'tls.crt'), pki.server.cert);
    writeFileSync(join(dir, 'tls.key'), pki.server.key);
    // What cert-manager's CA injector does: the caBundle is its CA.
    const encodedCa = pki.ca.cert.toString('base64');
    await admission.patchMutatingWebhookConfiguration(
      { name: CONFIGURATION, body: [{ op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: encodedCa }] },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    );
    const secretVersion = (await readSecret()).metadata!.resourceVersion;

    const webhook = await WebhookServer.start({
      kubeConfig: cp.kubeConfig(await cp.serviceAccountToken(OPERATOR_NS, 'baton-operator')),
      address: { host: '127.0.0.1', port: webhookPort },
      image: IMAGE,
      nativeSidecars: 'auto',
      certificates: new DirectoryCertificates(dir),
      refreshMs: 100,
      metrics: new OperatorMetrics(),
      log: createLogger('warn', 'webhook-test'),
    });
    cleanups.push(() => webhook.stop());
    await eventually(async () => (webhook.isReady ? true : undefined), 'the webhook serving');
    assert.ok(sidecarOf(await createPod(undefined)), 'injected with the certificate from the directory');

    const next = await issueServing(await issueCa(new Date()), { dns: [], ips: ['127.0.0.1'] }, new Date());
    writeFileSync(join(dir, 'tls.key'), next.key);
    writeFileSync(join(dir, 'tls.crt'), next.cert);
    await eventually(async () => (sameCert(await servedCertificate(webhookPort), next.cert) ? true : undefined), 'the webhook serving the replaced certificate');
    const config = await admission.readMutatingWebhookConfiguration({ name: CONFIGURATION });
    assert.equal(config.webhooks![0]!.clientConfig.caBundle, encodedCa);
    assert.equal((await readSecret()).metadata!.resourceVersion, secretVersion);
  });
});
