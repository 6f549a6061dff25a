// The Helm chart (charts/baton) with the real helm 3.18: rendered and checked against its values,
// files/operator-rbac.yaml and crds/; then, on a real API server, installed with helm, the operator
// run with the ServiceAccount the chart made, upgraded (the CRD follows) and uninstalled (the CRD
// and the WsBalancers stay).
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  AdmissionregistrationV1Api,
  ApiextensionsV1Api,
  AppsV1Api,
  AuthorizationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type V1ClusterRole,
  type V1ConfigMap,
  type V1Container,
  type V1CustomResourceDefinition,
  type V1Deployment,
  type V1MutatingWebhookConfiguration,
  type V1PolicyRule,
  type V1Role,
  type V1RoleBinding,
  type V1Service,
} from '@kubernetes/client-node';
import { parse, parseAllDocuments, stringify } from 'yaml';
import type { WsBalancer } from '../operator/api/wsbalancer.js';
import { OPTIONS } from '../operator/options.js';
import { freePort } from './helpers.js';
import { apiCode, eventually, startControlPlane, type ControlPlane } from './kube/control-plane.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const CHART = join(root, 'charts/baton');
const RELEASE = 'baton';
const NS = 'baton-system';
const CRD_FILE = join(root, 'crds/baton.dev_wsbalancers.yaml');
const RBAC = parse(readFileSync(join(CHART, 'files/operator-rbac.yaml'), 'utf8')) as { clusterRules: V1PolicyRule[]; namespaceRules: V1PolicyRule[] };
const CHART_YAML = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { version: string; appVersion: string };
const VALUES = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as { image: { repository: string }; rbac: { adminTokenSecretNames: string[] } };

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

interface Rendered {
  /** helm's output as text. */
  text: string;
  objects: Manifest[];
}

const kinds = (r: Rendered): string[] => r.objects.map((o) => o.kind).sort();

/** The one object of that kind (and name), typed as the caller says. */
function one<T>(r: Rendered, kind: string, name?: string): T {
  const found = r.objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''} in ${r.objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found[0] as T;
}

const operatorContainer = (r: Rendered): V1Container => one<V1Deployment>(r, 'Deployment').spec!.template.spec!.containers[0]!;

/** The operator's flags as name → value, from `--name=value` args. */
function flags(container: V1Container): Map<string, string> {
  const [command, ...rest] = container.args!;
  assert.equal(command, 'operator');
  return new Map(
    rest.map((a) => {
      const m = /^--([a-z-]+)=(.*)$/.exec(a);
      assert.ok(m, `argument "${a}" is --name=value`);
      return [m[1]!, m[2]!];
    }),
  );
}

/** The top-level `spec:` block of the CRD file, as text (it is the file's last key). */
const crdSpecText = (text: string): string => text.slice(text.search(/^spec:$/m));

/** The commands of README's "Quick start on a cluster", as words: its sh blocks, continuations joined, comments dropped. */
function quickStartCommands(): string[][] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('## Quick start on a cluster');
  assert.ok(start >= 0, 'README has the quick start');
  const section = readme.slice(start, readme.indexOf('\n## ', start));
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1]!.replace(/\\\n/g, ' ').split('\n'))
    .filter((line) => !line.trimStart().startsWith('#'))
    .map((line) => line.replace(/\s#\s.*$/, '').trim().split(/\s+/));
}

/** The `--set name=value` flags of a command line. */
const setFlags = (words: string[]): Map<string, string> =>
  new Map(words.flatMap((w, i) => (words[i - 1] === '--set' ? [w.split('=') as [string, string]] : [])));

describe('Helm chart charts/baton', { timeout: 300_000 }, () => {
  let work: string;
  let helmBin: string;
  let kubectlBin: string;
  let env: NodeJS.ProcessEnv;
  let valuesFiles = 0;

  /** Runs a binary; resolves with its exit code and output (never rejects). */
  const run = (bin: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(bin, args, { env, maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });

  /** Runs helm; fails the test with its stderr unless it succeeds. */
  const helm = async (...args: string[]): Promise<string> => {
    const r = await run(helmBin, args);
    assert.equal(r.code, 0, `helm ${args.join(' ')} failed:\n${r.stderr}`);
    return r.stdout;
  };

  const valuesFile = (values: object): string => {
    const file = join(work, `values-${++valuesFiles}.yaml`);
    writeFileSync(file, stringify(values));
    return file;
  };

  const render = async (values: object = {}, opts: { chart?: string; release?: string; extra?: string[] } = {}): Promise<Rendered> => {
    const text = await helm('template', opts.release ?? RELEASE, opts.chart ?? CHART, '--namespace', NS, '-f', valuesFile(values), ...(opts.extra ?? []));
    const objects = parseAllDocuments(text)
      .map((d) => d.toJS() as Manifest | null)
      .filter((o): o is Manifest => o !== null);
    return { text, objects };
  };

  /**
   * A copy of the chart in a temporary repository layout: its symlinks kept as they are, pointing at
   * a copy of crds/ and at monitoring/ and dashboards/ holding only the given files.
   */
  const chartCopy = (files: Record<string, string> = {}): { chart: string; repo: string } => {
    const repo = mkdtempSync(join(work, 'repo-'));
    cpSync(CHART, join(repo, 'charts/baton'), { recursive: true, verbatimSymlinks: true });
    cpSync(join(root, 'crds'), join(repo, 'crds'), { recursive: true });
    mkdirSync(join(repo, 'monitoring'));
    mkdirSync(join(repo, 'dashboards'));
    for (const [path, content] of Object.entries(files)) writeFileSync(join(repo, path), content);
    return { chart: join(repo, 'charts/baton'), repo };
  };

  before(() => {
    const tools = execFileSync('bash', [join(root, 'scripts/ensure-helm.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    helmBin = join(tools, 'helm');
    kubectlBin = join(tools, 'kubectl');
    work = mkdtempSync(join(tmpdir(), 'baton-chart-'));
    // helm's own state (repository cache, plugins) stays in the test's directory.
    env = { ...process.env, HELM_CACHE_HOME: join(work, 'helm/cache'), HELM_CONFIG_HOME: join(work, 'helm/config'), HELM_DATA_HOME: join(work, 'helm/data') };
  });

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** Values away from the defaults: no webhook, monitoring forced on, no dashboards, another image, resources, replicas, flags. */
  const nonDefault = {
    replicas: 3,
    image: { repository: 'registry.example.com/baton', tag: '9.9.9', pullPolicy: 'Always' },
    resources: { requests: { cpu: '200m', memory: '300Mi' }, limits: { cpu: 2, memory: '1Gi' } },
    webhook: { enabled: false },
    monitoring: {
      serviceMonitor: { enabled: true, interval: '15s', labels: { release: 'prom' } },
      podMonitor: { enabled: true, interval: '20s' },
      prometheusRule: { enabled: true },
    },
    dashboards: { enabled: false },
    operator: { watchNamespace: 'apps', logLevel: 'debug', leaderElection: { leaseDuration: '30s' } },
  };

  test('helm lint --strict passes, with the default values, non-default ones and cert-manager', async () => {
    const out = await helm('lint', '--strict', CHART);
    assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    await helm('lint', '--strict', CHART, '-f', valuesFile(nonDefault));
    await helm('lint', '--strict', CHART, '-f', valuesFile({ webhook: { certManager: { enabled: true } } }));
  });

  test('files/crds, files/monitoring and files/dashboards are symlinks into the repository, packaged as files', async () => {
    for (const dir of ['crds', 'monitoring', 'dashboards']) {
      assert.equal(readlinkSync(join(CHART, 'files', dir)), `../../../${dir}`, `files/${dir} is a symlink, not a copy`);
    }
    const packaged = join(work, 'package');
    await helm('package', CHART, '--destination', packaged);
    const tgz = join(packaged, `baton-${CHART_YAML.version}.tgz`);
    const values = { monitoring: { serviceMonitor: { enabled: true }, prometheusRule: { enabled: true } } };
    assert.deepEqual((await render(values, { chart: tgz })).objects, (await render(values)).objects);
  });

  test('default values: two operator replicas with leader election, the webhook, and nothing for monitoring', async () => {
    const r = await render();
    assert.deepEqual(kinds(r), [
      'ClusterRole',
      'ClusterRoleBinding',
      'CustomResourceDefinition',
      'Deployment',
      'MutatingWebhookConfiguration',
      'Role',
      'RoleBinding',
      'Service',
      'ServiceAccount',
      ...readdirSync(join(root, 'dashboards')).filter((f) => f.endsWith('.json')).map(() => 'ConfigMap'),
    ].sort());

    const deployment = one<V1Deployment>(r, 'Deployment', 'baton');
    assert.equal(deployment.metadata!.namespace, NS);
    assert.equal(deployment.spec!.replicas, 2);
    const pod = deployment.spec!.template.spec!;
    assert.equal(pod.serviceAccountName, 'baton');
    const c = operatorContainer(r);
    assert.equal(c.image, `ghcr.io/baton-dev/baton:${CHART_YAML.appVersion}`);
    // The operator's own default (outside the chart) is the chart's default image too.
    assert.equal(OPTIONS.find((o) => o.key === 'sidecarImage')!.default({}), c.image);
    assert.deepEqual(
      Object.fromEntries(flags(c)),
      {
        'metrics-address': '0.0.0.0:8080',
        'leader-elect': 'true',
        'lease-name': 'baton',
        'lease-duration': '15s',
        'lease-renew-deadline': '10s',
        'lease-retry-period': '2s',
        resync: '30s',
        concurrency: '4',
        'api-timeout': '10s',
        'sidecar-timeout': '5s',
        'sidecar-concurrency': '16',
        'sidecar-attempts': '3',
        'log-level': 'info',
        'webhook-address': '0.0.0.0:9443',
        'webhook-service': 'baton',
        'webhook-configuration': 'baton-sidecar-injector',
        'webhook-cert-secret': 'baton-webhook-cert',
        'sidecar-image': `ghcr.io/baton-dev/baton:${CHART_YAML.appVersion}`,
        'native-sidecars': 'auto',
      },
    );
    // The Lease's namespace and the replica's identity come from the downward API.
    assert.deepEqual(
      c.env!.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]),
      [
        ['POD_NAMESPACE', 'metadata.namespace'],
        ['POD_NAME', 'metadata.name'],
      ],
    );
    assert.deepEqual(c.ports!.map((p) => [p.name, p.containerPort]), [
      ['metrics', 8080],
      ['webhook', 9443],
    ]);
    assert.deepEqual([c.livenessProbe!.httpGet!.path, c.livenessProbe!.httpGet!.port], ['/healthz', 'metrics']);
    assert.deepEqual([c.readinessProbe!.httpGet!.path, c.readinessProbe!.httpGet!.port], ['/readyz', 'metrics']);
    assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.cpu && c.resources.limits.memory, 'requests and limits');
    const sc = c.securityContext!;
    assert.equal(sc.runAsNonRoot, true);
    assert.equal(sc.runAsUser, 10001);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(sc.capabilities, { drop: ['ALL'] });
    assert.deepEqual(sc.seccompProfile, { type: 'RuntimeDefault' });
    assert.equal(pod.securityContext!.runAsNonRoot, true);

    // The Service: metrics, and the webhook on 443 in front of the container's 9443.
    const service = one<V1Service>(r, 'Service', 'baton');
    assert.deepEqual(service.spec!.selector, deployment.spec!.selector.matchLabels);
    assert.deepEqual(service.spec!.ports!.map((p) => [p.name, p.port, p.targetPort]), [
      ['metrics', 8080, 'metrics'],
      ['webhook', 443, 'webhook'],
    ]);

    const injector = one<V1MutatingWebhookConfiguration>(r, 'MutatingWebhookConfiguration', 'baton-sidecar-injector');
    assert.equal(injector.metadata!.annotations, undefined, 'no cert-manager CA injection');
    assert.equal(injector.webhooks!.length, 1);
    const hook = injector.webhooks![0]!;
    assert.equal(hook.name, 'inject.baton.dev');
    assert.deepEqual(hook.clientConfig, { service: { name: 'baton', namespace: NS, path: '/mutate-pods', port: 443 } });
    assert.deepEqual(hook.rules, [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }]);
    assert.deepEqual(hook.admissionReviewVersions, ['v1']);
    assert.equal(hook.sideEffects, 'None');
    assert.equal(hook.failurePolicy, 'Ignore');
    assert.equal(hook.timeoutSeconds, 5);
    assert.deepEqual(hook.namespaceSelector, { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [NS, 'kube-system'] }] });
    // Only the pods labelled for injection are sent to the webhook.
    assert.deepEqual(hook.objectSelector, { matchLabels: { 'baton.dev/inject': 'true' } });
  });

  test('RBAC: exactly the rules of files/operator-rbac.yaml, bound to the chart\'s ServiceAccount', async () => {
    const r = await render();
    assert.deepEqual(one<V1ClusterRole>(r, 'ClusterRole', 'baton').rules, RBAC.clusterRules);
    const role = one<V1Role>(r, 'Role', 'baton');
    assert.equal(role.metadata!.namespace, NS);
    assert.deepEqual(role.rules, RBAC.namespaceRules);
    const subject = [{ kind: 'ServiceAccount', name: 'baton', namespace: NS }];
    for (const [kind, roleKind] of [['ClusterRoleBinding', 'ClusterRole'], ['RoleBinding', 'Role']] as const) {
      const binding = one<V1RoleBinding>(r, kind, 'baton');
      assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: roleKind, name: 'baton' });
      assert.deepEqual(binding.subjects, subject);
    }
    assert.equal(one<Manifest>(r, 'ServiceAccount', 'baton').metadata.namespace, NS);

    // The file's resourceNames are the operator's default names (those of release "baton"); in another
    // release they become the names the chart gives those objects, and passes to the operator.
    const edge = await render({}, { release: 'edge' });
    const f = flags(operatorContainer(edge));
    const renamed: Record<string, string[]> = {
      'baton-sidecar-injector': [f.get('webhook-configuration')!],
      'baton-webhook-cert': [f.get('webhook-cert-secret')!],
      'baton-admin': VALUES.rbac.adminTokenSecretNames,
    };
    const rename = (rules: V1PolicyRule[]) => rules.map((rule) => (rule.resourceNames ? { ...rule, resourceNames: rule.resourceNames.flatMap((n) => renamed[n] ?? [n]) } : rule));
    assert.deepEqual(one<V1ClusterRole>(edge, 'ClusterRole', 'edge-baton').rules, rename(RBAC.clusterRules));
    assert.deepEqual(one<V1Role>(edge, 'Role', 'edge-baton').rules, rename(RBAC.namespaceRules));
    assert.equal(one<V1MutatingWebhookConfiguration>(edge, 'MutatingWebhookConfiguration').metadata!.name, 'edge-baton-sidecar-injector');
    assert.deepEqual(renamed['baton-webhook-cert'], ['edge-baton-webhook-cert']);
    for (const rule of [...RBAC.clusterRules, ...RBAC.namespaceRules]) {
      for (const name of rule.resourceNames ?? []) assert.ok(name in renamed, `the chart substitutes resourceName ${name}`);
    }

    const none = await render({ rbac: { create: false }, serviceAccount: { create: false, name: 'mine' } });
    assert.deepEqual(kinds(none).filter((k) => /Role|ServiceAccount/.test(k)), []);
    assert.equal(one<V1Deployment>(none, 'Deployment').spec!.template.spec!.serviceAccountName, 'mine');
  });

  test('RBAC: the operator gets Secrets by name only: the admin-token names of rbac.adminTokenSecretNames', async () => {
    const secretRules = (rules: V1PolicyRule[]) => rules.filter((rule) => rule.resources?.includes('secrets'));
    const clusterSecretRules = async (values: object) => secretRules(one<V1ClusterRole>(await render(values), 'ClusterRole').rules!);

    assert.deepEqual(VALUES.rbac.adminTokenSecretNames, ['baton-admin'], 'the name the webhook, the docs and the tests use');
    assert.deepEqual(await clusterSecretRules({}), [{ apiGroups: [''], resources: ['secrets'], resourceNames: ['baton-admin'], verbs: ['get'] }]);
    const names = ['baton-admin', 'chat-admin-token', 'ocpp.admin'];
    assert.deepEqual(await clusterSecretRules({ rbac: { adminTokenSecretNames: names } }), [{ apiGroups: [''], resources: ['secrets'], resourceNames: names, verbs: ['get'] }]);
    // The namespaced Secret rules (the webhook's certificate) are not the admin token's.
    const role = one<V1Role>(await render({ rbac: { adminTokenSecretNames: names } }), 'Role');
    assert.deepEqual(secretRules(role.rules!), secretRules(RBAC.namespaceRules));

    // No list, and never every name: an empty resourceNames would grant any Secret.
    for (const args of [[], ['--skip-schema-validation']]) {
      const r = await run(helmBin, ['template', RELEASE, CHART, '-f', valuesFile({ rbac: { adminTokenSecretNames: [] } }), ...args]);
      assert.notEqual(r.code, 0, `an empty list accepted ${args.join(' ')}`);
      assert.match(r.stderr, /rbac\.adminTokenSecretNames/);
    }
  });

  test("README's quick start: each helm install runs the image its cluster was given, pulled as it can be", async () => {
    const commands = quickStartCommands();
    const built = commands.find((w) => w.slice(0, 2).join(' ') === 'docker build');
    assert.ok(built, 'the quick start builds the image');
    const image = built[built.indexOf('-t') + 1]!;
    assert.doesNotMatch(image, /:latest$|^[^:]*$/, 'a tag other than latest, so the sidecars (IfNotPresent) do not re-pull it');

    let given: { image: string; loaded: boolean } | undefined;
    let tagged: string | undefined;
    let installs = 0;
    for (const words of commands) {
      const command = words.slice(0, 3).join(' ');
      if (command === 'kind load docker-image' || command === 'minikube image load') {
        assert.equal(words[3], image, 'the built image is loaded');
        given = { image, loaded: true };
      } else if (command.startsWith('docker tag')) {
        assert.equal(words[2], image, 'docker tag names the built image');
        tagged = words[3];
      } else if (command.startsWith('docker push')) {
        assert.equal(words[2], tagged, 'the tagged image is pushed');
        given = { image: words[2]!, loaded: false };
      } else if (command.startsWith('helm install')) {
        installs++;
        assert.ok(given, `${words.join(' ')}: preceded by a load or a push`);
        assert.equal(words[3], 'charts/baton');
        for (const w of words) assert.doesNotMatch(w, /['"$]/, 'plain words, as run here');
        for (const name of setFlags(words).keys()) assert.match(name, /^image\./, 'only the image is set');
        const r = await render({}, { release: words[2], extra: words.slice(4) });
        const c = operatorContainer(r);
        assert.equal(c.image, given.image, words.join(' '));
        assert.equal(flags(c).get('sidecar-image'), given.image, 'the injected sidecars run it too');
        // Loaded onto the nodes: never pulled (a missing image says ErrImageNeverPull); pushed: pulled.
        assert.equal(c.imagePullPolicy, given.loaded ? 'Never' : 'IfNotPresent');
        given = undefined;
      }
    }
    assert.equal(installs, 3, 'kind, minikube and a registry');
  });

  test('the CRD is crds/ byte for byte in its spec, kept on uninstall; crds.install=false leaves it out', async () => {
    const r = await render();
    const file = readFileSync(CRD_FILE, 'utf8');
    const crd = one<V1CustomResourceDefinition>(r, 'CustomResourceDefinition', 'wsbalancers.baton.dev');
    assert.ok(r.text.includes(crdSpecText(file)), 'the spec block of crds/ appears verbatim');
    const source = parse(file) as V1CustomResourceDefinition;
    assert.deepEqual(crd.spec, source.spec);
    assert.equal(crd.apiVersion, source.apiVersion);
    assert.equal(crd.metadata!.annotations!['helm.sh/resource-policy'], 'keep');

    assert.ok(!kinds(await render({ crds: { install: false } })).includes('CustomResourceDefinition'));
  });

  test('non-default values: webhook off, monitoring forced on, dashboards off, custom image, resources and replicas', async () => {
    const r = await render(nonDefault);
    const alertsFile = join(root, 'monitoring/alerts.yaml');
    assert.deepEqual(
      kinds(r),
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'CustomResourceDefinition',
        'Deployment',
        'Role',
        'RoleBinding',
        'Service',
        'PodMonitor',
        'ServiceAccount',
        'ServiceMonitor',
        // A PrometheusRule only with the repository's alerts to carry.
        ...(existsSync(alertsFile) ? ['PrometheusRule'] : []),
      ].sort(),
    );
    if (existsSync(alertsFile)) {
      const rule = one<Manifest & { spec: { groups: unknown } }>(r, 'PrometheusRule', 'baton');
      assert.deepEqual(rule.spec.groups, (parse(readFileSync(alertsFile, 'utf8')) as { groups: unknown }).groups);
    }

    const deployment = one<V1Deployment>(r, 'Deployment');
    assert.equal(deployment.spec!.replicas, 3);
    const c = operatorContainer(r);
    assert.equal(c.image, 'registry.example.com/baton:9.9.9');
    assert.equal(c.imagePullPolicy, 'Always');
    assert.deepEqual(c.resources, nonDefault.resources);
    const f = flags(c);
    assert.equal(f.get('webhook-address'), '', 'the webhook server is off');
    assert.deepEqual([...f.keys()].filter((k) => k.startsWith('webhook-') || k === 'sidecar-image'), ['webhook-address']);
    assert.equal(f.get('namespace'), 'apps');
    assert.equal(f.get('log-level'), 'debug');
    assert.equal(f.get('lease-duration'), '30s');
    assert.deepEqual(c.ports!.map((p) => p.name), ['metrics']);
    assert.deepEqual(one<V1Service>(r, 'Service').spec!.ports!.map((p) => p.name), ['metrics']);

    const monitor = one<Manifest & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<Record<string, string>> } }>(r, 'ServiceMonitor', 'baton');
    assert.equal(monitor.metadata.labels!.release, 'prom');
    assert.deepEqual(monitor.spec.selector.matchLabels, one<V1Service>(r, 'Service').spec!.selector);
    assert.deepEqual(monitor.spec.endpoints, [{ port: 'metrics', path: '/metrics', interval: '15s' }]);
    // The sidecars: every injected pod, by the label and the admin port name the webhook gives it.
    const pods = one<Manifest & { spec: { selector: { matchLabels: Record<string, string> }; podMetricsEndpoints: Array<Record<string, string>> } }>(r, 'PodMonitor', 'baton-sidecars');
    assert.deepEqual(pods.spec.selector.matchLabels, { 'baton.dev/sidecar': 'true' });
    assert.deepEqual(pods.spec.podMetricsEndpoints, [{ port: 'baton-admin', path: '/metrics', interval: '20s' }]);
  });

  test('cert-manager: an Issuer and a Certificate, the CA injected, the certificate mounted at /certs', async () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const r = await render({
      image: { digest },
      webhook: { certManager: { enabled: true }, failurePolicy: 'Fail', sidecarImage: 'registry.example.com/sidecar:1', nativeSidecars: 'never' },
    });
    const issuer = one<Manifest & { spec: unknown }>(r, 'Issuer', 'baton-selfsigned');
    assert.deepEqual(issuer.spec, { selfSigned: {} });
    const cert = one<Manifest & { spec: { secretName: string; dnsNames: string[]; issuerRef: unknown } }>(r, 'Certificate', 'baton-webhook');
    assert.equal(cert.spec.secretName, 'baton-webhook-cert');
    assert.deepEqual(cert.spec.dnsNames, [`baton.${NS}.svc`, `baton.${NS}.svc.cluster.local`]);
    assert.deepEqual(cert.spec.issuerRef, { kind: 'Issuer', name: 'baton-selfsigned' });

    const injector = one<V1MutatingWebhookConfiguration>(r, 'MutatingWebhookConfiguration');
    assert.equal(injector.metadata!.annotations!['cert-manager.io/inject-ca-from'], `${NS}/baton-webhook`);
    assert.equal(injector.webhooks![0]!.failurePolicy, 'Fail');

    const c = operatorContainer(r);
    assert.equal(c.image, `ghcr.io/baton-dev/baton@${digest}`);
    const f = flags(c);
    assert.equal(f.get('webhook-cert-dir'), '/certs');
    assert.equal(f.has('webhook-cert-secret'), false);
    assert.equal(f.get('sidecar-image'), 'registry.example.com/sidecar:1');
    assert.equal(f.get('native-sidecars'), 'never');
    assert.deepEqual(c.volumeMounts, [{ name: 'webhook-cert', mountPath: '/certs', readOnly: true }]);
    assert.deepEqual(one<V1Deployment>(r, 'Deployment').spec!.template.spec!.volumes, [{ name: 'webhook-cert', secret: { secretName: 'baton-webhook-cert' } }]);

    // An issuer of the user's: no Issuer of the chart's.
    const own = await render({ webhook: { certManager: { enabled: true, issuerRef: { kind: 'ClusterIssuer', name: 'corp-ca' } } } });
    assert.ok(!kinds(own).includes('Issuer'));
    assert.deepEqual(one<Manifest & { spec: { issuerRef: unknown } }>(own, 'Certificate').spec.issuerRef, { kind: 'ClusterIssuer', name: 'corp-ca' });
  });

  test('monitoring/alerts.yaml and dashboards/*.json: nothing while there are none, each rendered once it exists', async () => {
    const forced = { monitoring: { serviceMonitor: { enabled: true }, prometheusRule: { enabled: true } } };
    const empty = chartCopy();
    const none = await render(forced, { chart: empty.chart });
    assert.ok(!kinds(none).includes('PrometheusRule'), 'no PrometheusRule without alerts');
    assert.ok(!kinds(none).includes('ConfigMap'), 'no dashboard without dashboards/*.json');

    const alerts = { groups: [{ name: 'baton', rules: [{ alert: 'BatonOperatorDown', expr: 'absent(up{job="baton"} == 1)', for: '5m', annotations: { summary: 'no operator in {{ $labels.namespace }}' } }] }] };
    const dashboard = `{\n  "title": "Baton \\"operator\\"",\n  "panels": [{ "type": "timeseries", "targets": [{ "expr": "sum(rate(baton_operator_reconciles_total[5m]))" }] }]\n}\n`;
    const full = chartCopy({ 'monitoring/alerts.yaml': stringify(alerts), 'dashboards/Baton_Operator.json': dashboard, 'dashboards/README.md': 'not a dashboard' });
    const r = await render({ ...forced, dashboards: { label: 'grafana.example/dashboard', labelValue: 'dashboard', namespace: 'grafana' } }, { chart: full.chart });
    assert.deepEqual(one<Manifest & { spec: unknown }>(r, 'PrometheusRule', 'baton').spec, { groups: alerts.groups });
    const cm = one<V1ConfigMap>(r, 'ConfigMap', 'baton-dashboard-baton-operator');
    assert.equal(cm.metadata!.namespace, 'grafana');
    assert.equal(cm.metadata!.labels!['grafana.example/dashboard'], 'dashboard');
    assert.deepEqual(Object.keys(cm.data!), ['Baton_Operator.json']);
    assert.deepEqual(JSON.parse(cm.data!['Baton_Operator.json']!), JSON.parse(dashboard));

    // auto: only for the kinds the cluster serves (given to `helm template` with --api-versions).
    const auto = await render({}, { chart: full.chart, extra: ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor'] });
    assert.ok(kinds(auto).includes('ServiceMonitor'));
    assert.ok(!kinds(auto).includes('PrometheusRule'));
    assert.equal(one<V1ConfigMap>(auto, 'ConfigMap').metadata!.labels!.grafana_dashboard, '1');
    const both = await render({}, { chart: full.chart, extra: ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor', '--api-versions', 'monitoring.coreos.com/v1/PrometheusRule'] });
    assert.ok(kinds(both).includes('PrometheusRule'));
    const withPods = await render({}, { chart: full.chart, extra: ['--api-versions', 'monitoring.coreos.com/v1/PodMonitor'] });
    assert.ok(kinds(withPods).includes('PodMonitor'), 'auto: a PodMonitor where the cluster serves them');
    const off = await render(
      { monitoring: { serviceMonitor: { enabled: false }, podMonitor: { enabled: false }, prometheusRule: { enabled: false } }, dashboards: { enabled: false } },
      { chart: full.chart, extra: ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor', '--api-versions', 'monitoring.coreos.com/v1/PodMonitor', '--api-versions', 'monitoring.coreos.com/v1/PrometheusRule'] },
    );
    assert.deepEqual(kinds(off).filter((k) => ['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'ConfigMap'].includes(k)), []);
  });

  test('values that break the schema are refused, naming the value', async () => {
    const cases: Array<[object, RegExp]> = [
      [{ replicas: 'two' }, /replicas: Invalid type\. Expected: integer, given: string/],
      [{ replicas: 0 }, /replicas: Must be greater than or equal to 1/],
      [{ webhook: { failurePolicy: 'Sometimes' } }, /webhook\.failurePolicy must be one of the following: "Ignore", "Fail"/],
      [{ replica: 3 }, /Additional property replica is not allowed/],
      [{ image: { repository: '' } }, /image\.repository: String length must be greater than or equal to 1/],
      [{ image: { registry: 'x' } }, /image: Additional property registry is not allowed/],
      [{ monitoring: { serviceMonitor: { enabled: 'maybe' } } }, /monitoring\.serviceMonitor\.enabled must be one of the following: "auto", true, false/],
      [{ operator: { resync: '30 seconds' } }, /operator\.resync: Does not match pattern/],
      [{ webhook: { timeoutSeconds: 60 } }, /webhook\.timeoutSeconds: Must be less than or equal to 30/],
      [{ webhook: { nativeSidecars: 'yes' } }, /webhook\.nativeSidecars must be one of the following: "auto", "always", "never"/],
      [{ resources: { limits: { memory: 'lots' } } }, /resources\.limits\.memory: Does not match pattern/],
      [{ rbac: { adminTokenSecretNames: [] } }, /rbac\.adminTokenSecretNames: Array must have at least 1 items/],
      [{ rbac: { adminTokenSecretNames: ['Admin_Token'] } }, /rbac\.adminTokenSecretNames\.0: Does not match pattern/],
    ];
    for (const [values, message] of cases) {
      const r = await run(helmBin, ['template', RELEASE, CHART, '-f', valuesFile(values)]);
      assert.notEqual(r.code, 0, `${JSON.stringify(values)} accepted`);
      assert.match(r.stderr, message, `${JSON.stringify(values)}`);
    }
  });

  describe('on a real API server', () => {
    let cp: ControlPlane;
    let adminKubeconfig: string;
    let operator: ChildProcess | undefined;
    const APP_NS = 'app';
    const wsb = { group: 'baton.dev', version: 'v1alpha1', plural: 'wsbalancers' };

    before(async () => {
      cp = await startControlPlane({ log: Boolean(process.env.BATON_TEST_KUBE_LOG) });
      adminKubeconfig = cp.writeKubeconfig();
      await cp.ensureNamespace(NS);
      await cp.ensureNamespace(APP_NS);
    });

    after(async () => {
      operator?.kill('SIGKILL');
      await cp?.stop();
    });

    // The test server serves no monitoring.coreos.com kinds: auto renders none, as on a cluster without them.
    test('the default manifests pass kubectl apply --dry-run=server; helm install creates them', async () => {
      const r = await render();
      const manifests = join(work, 'defaults.yaml');
      writeFileSync(manifests, r.text);
      const dry = await run(kubectlBin, ['apply', '--dry-run=server', '--kubeconfig', adminKubeconfig, '-f', manifests]);
      assert.equal(dry.code, 0, `kubectl apply --dry-run=server:\n${dry.stderr}`);
      assert.equal(dry.stdout.trim().split('\n').length, r.objects.length, dry.stdout);

      await helm('install', RELEASE, CHART, '--namespace', NS, '--kubeconfig', adminKubeconfig);
      const apps = cp.kubeConfig().makeApiClient(AppsV1Api);
      const deployment = await apps.readNamespacedDeployment({ name: 'baton', namespace: NS });
      assert.equal(deployment.spec!.replicas, 2);

      // The API server's RBAC: the chart's ServiceAccount gets the admin-token Secret by name, in
      // any namespace, and no other Secret there.
      const authz = cp.kubeConfig().makeApiClient(AuthorizationV1Api);
      const may = async (verb: string, namespace: string, name?: string) =>
        (await authz.createSubjectAccessReview({ body: { spec: { user: `system:serviceaccount:${NS}:baton`, resourceAttributes: { verb, resource: 'secrets', namespace, name } } } })).status!.allowed;
      assert.equal(await may('get', APP_NS, 'baton-admin'), true);
      assert.equal(await may('get', 'default', 'baton-admin'), true);
      assert.equal(await may('get', APP_NS, 'db-password'), false);
      assert.equal(await may('list', APP_NS), false);
      assert.equal(await may('watch', APP_NS), false);
    });

    test("the operator, run as the chart's ServiceAccount with the chart's flags, reconciles a WsBalancer and sets up its webhook", async () => {
      const token = await cp.serviceAccountToken(NS, 'baton');
      const metricsPort = await freePort();
      // The Deployment's flags, with its servers on loopback ports.
      const webhookPort = await freePort();
      const args = [...flags(operatorContainer(await render()))].map(([name, value]) => {
        if (name === 'metrics-address') return `--${name}=127.0.0.1:${metricsPort}`;
        if (name === 'webhook-address') return `--${name}=127.0.0.1:${webhookPort}`;
        return `--${name}=${value}`;
      });
      const podName = 'baton-7d9f8-abcde';
      operator = spawn(process.execPath, [join(root, 'bin/baton.js'), 'operator', ...args, `--kubeconfig=${cp.writeKubeconfig(token)}`], {
        env: { ...process.env, POD_NAMESPACE: NS, POD_NAME: podName },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const log: string[] = [];
      operator.stdout!.on('data', (chunk: Buffer) => {
        log.push(chunk.toString());
        if (process.env.BATON_TEST_LOG) process.stderr.write(chunk);
      });
      /** A wait that, when it fails, shows what the operator logged. */
      const showingLog = <T>(wait: Promise<T>): Promise<T> =>
        wait.catch((err: Error) => {
          throw new Error(`${err.message}\noperator log:\n${log.join('').trim().split('\n').slice(-20).join('\n')}`);
        });
      const exited = new Promise<number | null>((resolve) => operator!.once('exit', (code) => resolve(code)));

      const ready = async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200;
      await showingLog(
        Promise.race([
          eventually(async () => ((await ready()) ? true : undefined), 'the operator ready (caches listed, webhook certificate loaded)', 20_000, 100),
          exited.then((code) => assert.fail(`the operator exited (${code})`)),
        ]),
      );

      const custom = cp.kubeConfig().makeApiClient(CustomObjectsApi);
      await custom.createNamespacedCustomObject({
        ...wsb,
        namespace: APP_NS,
        body: {
          apiVersion: 'baton.dev/v1alpha1',
          kind: 'WsBalancer',
          metadata: { name: 'edge' },
          spec: { sidecarSelector: { matchLabels: { app: 'edge' } }, backend: { service: 'echo', port: 'ws' } },
        },
      });
      const reconciled = await showingLog(
        eventually(async () => {
          const got = (await custom.getNamespacedCustomObject({ ...wsb, namespace: APP_NS, name: 'edge' })) as WsBalancer;
          return got.status?.observedGeneration === got.metadata.generation && got.status?.conditions?.length ? got : undefined;
        }, 'the WsBalancer reconciled: status written', 20_000, 100),
      );
      assert.ok(reconciled.metadata.finalizers?.includes('baton.dev/finalizer'), 'finalizer added');

      // It leads through a Lease in the release namespace (the chart's Role), as the pod named by POD_NAME.
      const lease = await cp.kubeConfig().makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'baton', namespace: NS });
      assert.equal(lease.spec!.holderIdentity, podName);

      // The leader made the webhook's certificate and put its CA into the chart's configuration (a
      // failed write is retried at the webhook's next certificate refresh, every 10 s).
      const secret = await cp.kubeConfig().makeApiClient(CoreV1Api).readNamespacedSecret({ name: 'baton-webhook-cert', namespace: NS });
      const injector = await showingLog(
        eventually(async () => {
          const got = await cp.kubeConfig().makeApiClient(AdmissionregistrationV1Api).readMutatingWebhookConfiguration({ name: 'baton-sidecar-injector' });
          return got.webhooks?.[0]?.clientConfig.caBundle ? got : undefined;
        }, 'the caBundle filled in', 25_000, 100),
      );
      assert.equal(injector.webhooks![0]!.clientConfig.caBundle, secret.data!['ca.crt']);

      operator.kill('SIGTERM');
      assert.equal(await exited, 0);
      operator = undefined;
    });

    test('helm upgrade updates the CRD and keeps the caBundle; helm uninstall keeps the CRD and the WsBalancers; a new install takes it back', async () => {
      const marker = 'Changed by the chart upgrade test.';
      const copy = chartCopy();
      const crdFile = join(copy.repo, 'crds/baton.dev_wsbalancers.yaml');
      const original = readFileSync(crdFile, 'utf8');
      const changed = original.replace(/^( {10}description: ).*$/m, `$1${marker}`);
      assert.notEqual(changed, original, 'the top-level schema description was replaced');
      writeFileSync(crdFile, changed);

      const admission = cp.kubeConfig().makeApiClient(AdmissionregistrationV1Api);
      const caBundle = async () => (await admission.readMutatingWebhookConfiguration({ name: 'baton-sidecar-injector' })).webhooks![0]!.clientConfig.caBundle;
      const caBefore = await caBundle();
      assert.ok(caBefore, 'the operator filled the caBundle in');

      await helm('upgrade', RELEASE, copy.chart, '--namespace', NS, '--kubeconfig', adminKubeconfig);
      const apiext = cp.kubeConfig().makeApiClient(ApiextensionsV1Api);
      const crd = await apiext.readCustomResourceDefinition({ name: 'wsbalancers.baton.dev' });
      assert.equal(crd.spec.versions[0]!.schema!.openAPIV3Schema!.description, marker);
      assert.equal(await caBundle(), caBefore, 'the upgrade left the caBundle the operator wrote');

      const out = await helm('uninstall', RELEASE, '--namespace', NS, '--kubeconfig', adminKubeconfig);
      assert.match(out, /kept due to the resource policy/);
      await apiext.readCustomResourceDefinition({ name: 'wsbalancers.baton.dev' });
      const custom = cp.kubeConfig().makeApiClient(CustomObjectsApi);
      await custom.getNamespacedCustomObject({ ...wsb, namespace: APP_NS, name: 'edge' });
      const apps = cp.kubeConfig().makeApiClient(AppsV1Api);
      await assert.rejects(apps.readNamespacedDeployment({ name: 'baton', namespace: NS }), (err) => apiCode(err) === 404);

      // Installed again, the release takes the kept CRD back.
      await helm('install', RELEASE, CHART, '--namespace', NS, '--kubeconfig', adminKubeconfig);
      const back = await apiext.readCustomResourceDefinition({ name: 'wsbalancers.baton.dev' });
      assert.equal(back.spec.versions[0]!.schema!.openAPIV3Schema!.description, (parse(readFileSync(CRD_FILE, 'utf8')) as V1CustomResourceDefinition).spec.versions[0]!.schema!.openAPIV3Schema!.description);
    });
  });
});
