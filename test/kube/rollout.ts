// What the operator's end-to-end tests share about rollouts: the Deployments whose pods the fake
// kubelet runs, the WsBalancer's status, and what the sidecars hold of a revision.
import type { AppsV1Api, CoreV1Api, CustomObjectsApi, V1Deployment } from '@kubernetes/client-node';
import type { WsBalancer } from '../../operator/api/wsbalancer.js';
import type { BackendsResponse } from '../../common/admin/contract.js';
import { eventually } from './control-plane.js';
import { ADMIN_PORT, BACKEND_PORT, ROLE_LABEL, type SidecarProcess } from './workloads.js';

/** A Deployment of `replicas` pods labelled `labels` (one container; the port named "ws" when given). */
export function deployment(namespace: string, name: string, labels: Record<string, string>, replicas: number, port?: number): V1Deployment {
  return {
    metadata: { name, namespace },
    spec: {
      replicas,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          terminationGracePeriodSeconds: 30,
          containers: [{ name: 'main', image: 'example.invalid/none:1', ...(port ? { ports: [{ name: 'ws', containerPort: port }] } : {}) }],
        },
      },
    },
  };
}

/**
 * The sidecar Deployment "edge" (`sidecars` pods labelled app=edge, run as Baton sidecars) and the
 * backend Service `service` (pods labelled app=<service>, port "ws" to the backends' port).
 */
export async function createEdgeAndService(apps: AppsV1Api, core: CoreV1Api, namespace: string, o: { sidecars: number; service?: string }): Promise<void> {
  const service = o.service ?? 'echo';
  await apps.createNamespacedDeployment({ namespace, body: deployment(namespace, 'edge', { app: 'edge', [ROLE_LABEL]: 'sidecar' }, o.sidecars) });
  await core.createNamespacedService({
    namespace,
    body: { metadata: { name: service }, spec: { selector: { app: service }, ports: [{ name: 'ws', port: 80, targetPort: BACKEND_PORT }] } },
  });
}

export async function readBalancer(custom: CustomObjectsApi, namespace: string, name: string): Promise<WsBalancer> {
  return (await custom.getNamespacedCustomObject({ group: 'baton.dev', version: 'v1alpha1', namespace, plural: 'wsbalancers', name })) as WsBalancer;
}

export const condition = (wsb: WsBalancer, type: string) => wsb.status?.conditions?.find((c) => c.type === type);

/** Until `revision` is the active one and Promoted is True; the error carries the last status seen. */
export async function waitForPromoted(custom: CustomObjectsApi, namespace: string, name: string, revision: string, timeoutMs: number): Promise<WsBalancer> {
  let last: WsBalancer | undefined;
  try {
    return await eventually(async () => {
      last = await readBalancer(custom, namespace, name);
      return last.status?.activeRevision === revision && condition(last, 'Promoted')?.status === 'True' ? last : undefined;
    }, `revision ${revision} promoted`, timeoutMs, 200);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last?.status)}`);
  }
}

/** Sessions on the revision's backends, summed over the sidecars. */
export async function sessionsOn(sidecars: readonly SidecarProcess[], revision: string): Promise<number> {
  let n = 0;
  for (const s of sidecars) for (const b of (await s.admin<BackendsResponse>('/backends')).backends) if (b.labels.revision === revision) n += b.sessions;
  return n;
}

/** Until every one of `sidecars()` has dropped the revision's backends: each of its sessions has finished moving. */
export function revisionGone(sidecars: () => readonly SidecarProcess[], revision: string, timeoutMs = 30_000): Promise<true> {
  return eventually(async () => {
    const views = await Promise.all(sidecars().map((s) => s.admin<BackendsResponse>('/backends')));
    return views.every((v) => v.backends.every((b) => b.labels.revision !== revision)) ? true : undefined;
  }, `revision ${revision} dropped by the sidecars`, timeoutMs, 100);
}

/**
 * The WsBalancer "edge" of the e2e tests and the bench: the sidecars are the pods labelled
 * app=edge, the backends the Service's (port "ws", revisions by the label "version"), the admin
 * token in the Secret baton-admin.
 */
export async function createEdgeBalancer(
  custom: CustomObjectsApi,
  namespace: string,
  o: { service?: string; blueGreen?: Record<string, unknown>; canary?: Record<string, unknown> } = {},
): Promise<void> {
  const spec = {
    sidecarSelector: { matchLabels: { app: 'edge' } },
    sidecar: { adminPort: ADMIN_PORT, adminTokenSecretRef: { name: 'baton-admin' } },
    backend: { service: o.service ?? 'echo', port: 'ws', revisionLabel: 'version' },
    ...(o.blueGreen ? { rollout: { blueGreen: o.blueGreen } } : {}),
    ...(o.canary ? { rollout: { strategy: 'canary', canary: o.canary } } : {}),
  };
  await custom.createNamespacedCustomObject({
    group: 'baton.dev',
    version: 'v1alpha1',
    namespace,
    plural: 'wsbalancers',
    body: { apiVersion: 'baton.dev/v1alpha1', kind: 'WsBalancer', metadata: { name: 'edge' }, spec },
  });
}

/** Until the WsBalancer's canary waits at step `step` (a pause until promoted); its object then. */
export function canaryPausedAt(custom: CustomObjectsApi, namespace: string, name: string, step: number, timeoutMs = 60_000): Promise<WsBalancer> {
  return eventually(async () => {
    const wsb = await readBalancer(custom, namespace, name);
    const c = wsb.status?.rollout?.canary;
    return c?.step === step && c.message !== undefined && wsb.status?.phase === 'Paused' ? wsb : undefined;
  }, `the canary paused at step ${step}`, timeoutMs, 200);
}
