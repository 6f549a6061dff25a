// The operator as tests run it: a `baton operator` process with the permissions the chart grants.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, RbacAuthorizationV1Api, type V1PolicyRule } from '@kubernetes/client-node';
import { parse } from 'yaml';
import type { ControlPlane } from './control-plane.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * Creates the ServiceAccount `name` in `namespace` bound to exactly the rules of the chart's
 * files/operator-rbac.yaml (cluster rules, and namespaced rules in `namespace`); returns a
 * kubeconfig file with its token.
 */
export async function operatorKubeconfig(cp: ControlPlane, namespace: string, name = 'baton-operator'): Promise<string> {
  const admin = cp.kubeConfig();
  const rules = parse(readFileSync(`${root}charts/baton/files/operator-rbac.yaml`, 'utf8')) as { clusterRules: V1PolicyRule[]; namespaceRules: V1PolicyRule[] };
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  const subjects = [{ kind: 'ServiceAccount', name, namespace }];
  const roleRef = (kind: string) => ({ apiGroup: 'rbac.authorization.k8s.io', kind, name });
  await rbac.createClusterRole({ body: { metadata: { name }, rules: rules.clusterRules } });
  await rbac.createClusterRoleBinding({ body: { metadata: { name }, roleRef: roleRef('ClusterRole'), subjects } });
  await rbac.createNamespacedRole({ namespace, body: { metadata: { name }, rules: rules.namespaceRules } });
  await rbac.createNamespacedRoleBinding({ namespace, body: { metadata: { name }, roleRef: roleRef('Role'), subjects } });
  return cp.writeKubeconfig(await cp.serviceAccountToken(namespace, name));
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
