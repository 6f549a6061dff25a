// What the operator's end-to-end tests share about rollouts: the Deployments whose pods the fake
// kubelet runs, the WsBalancer's status, and what the sidecars hold of a revision.
import type { CustomObjectsApi, V1Deployment } from '@kubernetes/client-node';
import type { WsBalancer } from '../../operator/api/wsbalancer.js';
import type { BackendsResponse } from '../../sidecar/admin/contract.js';
import { eventually } from './control-plane.js';
import type { SidecarProcess } from './workloads.js';

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
