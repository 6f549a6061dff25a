// The operator as tests run it: a `baton operator` process with the permissions the chart grants,
// on a control plane set up the way every operator end-to-end test starts.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api, type KubeConfig, type V1PolicyRule } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { installCrd, startControlPlane, type ControlPlane } from './control-plane.js';
import { FakeKubelet } from './kubelet.js';
import type { PodBackend, PodProcesses } from './workloads.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** A resource the chart's rules name, e.g. { apiGroup: 'discovery.k8s.io', resource: 'endpointslices' } ('' is the core group). */
export interface RbacResource {
  apiGroup: string;
  resource: string;
}

/** An operator ServiceAccount: its kubeconfig file, and how to give it what was withheld. */
export interface OperatorAccount {
  kubeconfig: string;
  /** Grants the chart's rules on the withheld resources (bound at once; the API server authorizes with them within moments). */
  grantWithheld(): Promise<void>;
}

/**
 * Creates the ServiceAccount `name` in `namespace` bound to exactly the rules of the chart's
 * files/operator-rbac.yaml (cluster rules, and namespaced rules in `namespace`), except the rules on
 * the `withhold` resources: those only once `grantWithheld()` is called (an operator that cannot
 * list or watch them until then, as when RBAC lags behind a deploy).
 */
export async function operatorAccount(cp: ControlPlane, namespace: string, name: string, opts: { withhold?: readonly RbacResource[] } = {}): Promise<OperatorAccount> {
  const admin = cp.kubeConfig();
  const rules = parse(readFileSync(`${root}charts/baton/files/operator-rbac.yaml`, 'utf8')) as { clusterRules: V1PolicyRule[]; namespaceRules: V1PolicyRule[] };
  const withhold = opts.withhold ?? [];
  const unmatched = new Set(withhold);
  /** The rules without the withheld resources, and the rules on them (every verb the chart grants). */
  const split = (list: V1PolicyRule[]): { kept: V1PolicyRule[]; held: V1PolicyRule[] } => {
    const kept: V1PolicyRule[] = [];
    const held: V1PolicyRule[] = [];
    for (const rule of list) {
      for (const group of rule.apiGroups ?? []) {
        const isHeld = (resource: string): boolean => {
          const w = withhold.find((x) => x.apiGroup === group && x.resource === resource);
          if (w) unmatched.delete(w);
          return w !== undefined;
        };
        const mine = (rule.resources ?? []).filter(isHeld);
        const rest = (rule.resources ?? []).filter((r) => !mine.includes(r));
        if (rest.length > 0) kept.push({ ...rule, apiGroups: [group], resources: rest });
        if (mine.length > 0) held.push({ ...rule, apiGroups: [group], resources: mine });
      }
    }
    return { kept, held };
  };
  const cluster = split(rules.clusterRules);
  const namespaced = split(rules.namespaceRules);
  if (unmatched.size > 0) throw new Error(`the chart grants nothing on ${[...unmatched].map((w) => `${w.resource}.${w.apiGroup}`).join(', ')}`);

  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  const subjects = [{ kind: 'ServiceAccount', name, namespace }];
  const bind = async (role: string, clusterRules: V1PolicyRule[], namespaceRules: V1PolicyRule[]): Promise<void> => {
    const roleRef = (kind: string) => ({ apiGroup: 'rbac.authorization.k8s.io', kind, name: role });
    await rbac.createClusterRole({ body: { metadata: { name: role }, rules: clusterRules } });
    await rbac.createClusterRoleBinding({ body: { metadata: { name: role }, roleRef: roleRef('ClusterRole'), subjects } });
    await rbac.createNamespacedRole({ namespace, body: { metadata: { name: role }, rules: namespaceRules } });
    await rbac.createNamespacedRoleBinding({ namespace, body: { metadata: { name: role }, roleRef: roleRef('Role'), subjects } });
  };
  await bind(name, cluster.kept, namespaced.kept);
  return {
    kubeconfig: cp.writeKubeconfig(await cp.serviceAccountToken(namespace, name)),
    grantWithheld: () => bind(`${name}-withheld`, cluster.held, namespaced.held),
  };
}

/** The kubeconfig of a ServiceAccount with exactly the chart's rules (see operatorAccount). */
export async function operatorKubeconfig(cp: ControlPlane, namespace: string, name = 'baton-operator'): Promise<string> {
  return (await operatorAccount(cp, namespace, name)).kubeconfig;
}

/**
 * The operator flags of the end-to-end tests: a short lease (a standby takes over within seconds),
 * fast resync and sidecar timeouts, and no admission webhook (replicas share one host;
 * test/webhook.test.ts covers it).
 */
export function testOperatorArgs(leaseNamespace: string): string[] {
  return [
    '--lease-namespace', leaseNamespace,
    '--lease-duration', '3s',
    '--lease-renew-deadline', '2s',
    '--lease-retry-period', '500ms',
    '--resync', '5s',
    '--sidecar-timeout', '1s',
    '--sidecar-attempts', '2',
    '--webhook-address', '',
  ];
}

/** A `baton operator` process; its JSON log lines are kept. */
export class OperatorProcess {
  readonly child: ChildProcess;
  readonly lines: Array<Record<string, unknown>> = [];

  constructor(
    readonly identity: string,
    kubeconfig: string,
    readonly metricsPort: number,
    args: string[],
  ) {
    this.child = spawn(
      process.execPath,
      [`${root}bin/baton.js`, 'operator', '--kubeconfig', kubeconfig, '--identity', identity, '--metrics-address', `127.0.0.1:${metricsPort}`, ...args],
      { env: { ...process.env, BATON_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let pending = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (process.env.BATON_TEST_LOG) process.stderr.write(`[${identity}] ${line}\n`);
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not a log line
        }
      }
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  logged(msg: string): boolean {
    return this.lines.some((l) => l.msg === msg);
  }

  /** Alive, and its log's last word on the lease is that it leads. */
  get leading(): boolean {
    if (!this.alive) return false;
    const changes = this.lines.filter((l) => l.msg === 'became the leader' || l.msg === 'no longer the leader');
    return changes.at(-1)?.msg === 'became the leader';
  }

  /** The sum of the samples whose line starts with `name` (a metric name, or name{labels}). */
  async metric(name: string): Promise<number> {
    const text = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`).then((r) => r.text());
    return text
      .split('\n')
      .filter((l) => l.startsWith(name))
      .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** What an operator end-to-end test (or the bench's kube sections) starts from. */
export interface OperatorCluster {
  cp: ControlPlane;
  admin: KubeConfig;
  apps: AppsV1Api;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  /** A kubeconfig file for the operator's ServiceAccount with the chart's rules. */
  operatorKubeconfig: string;
}

/**
 * A control plane with the WsBalancer CRD, the operator's namespace and ServiceAccount (the chart's
 * RBAC), and the app namespace holding the admin token Secret "baton-admin". Stops the control
 * plane if any step fails.
 */
export async function startOperatorCluster(operatorNamespace: string, appNamespace: string, adminToken: string): Promise<OperatorCluster> {
  const cp = await startControlPlane({ log: Boolean(process.env.BATON_TEST_KUBE_LOG) });
  try {
    await cp.ensureNamespace(operatorNamespace);
    await cp.ensureNamespace(appNamespace);
    const admin = cp.kubeConfig();
    await installCrd(admin);
    const core = admin.makeApiClient(CoreV1Api);
    await core.createNamespacedSecret({ namespace: appNamespace, body: { metadata: { name: 'baton-admin' }, stringData: { token: adminToken } } });
    return {
      cp,
      admin,
      core,
      apps: admin.makeApiClient(AppsV1Api),
      custom: admin.makeApiClient(CustomObjectsApi),
      operatorKubeconfig: await operatorKubeconfig(cp, operatorNamespace),
    };
  } catch (err) {
    await cp.stop();
    throw err;
  }
}

/** The fake kubelet of `namespace`, running the processes of `pods` as its pods. */
export async function runPods(admin: KubeConfig, namespace: string, pods: PodProcesses<PodBackend>): Promise<FakeKubelet> {
  const kubelet = await FakeKubelet.start(admin, { namespaces: [namespace] });
  kubelet.onPodStart(pods.start);
  kubelet.onPodStop(pods.stop);
  return kubelet;
}
