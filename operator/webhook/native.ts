// Which form the injected sidecar takes: a native sidecar (an init container with restartPolicy
// Always) or a regular container. Pure: versions, nodes and the mode in, the form and a sentence
// saying why out. The API server and the kubelets decide together: a pre-1.29 kubelet (nodes may
// lag the control plane by three minors) runs a restartable init container as an ordinary one that
// never exits, so the pod would stay in Init for ever.
import type { V1PodSpec } from '@kubernetes/client-node';

export type NativeSidecarsMode = 'auto' | 'always' | 'never';
export const NATIVE_SIDECARS_MODES: readonly NativeSidecarsMode[] = ['auto', 'always', 'never'];

/** SidecarContainers is on by default from 1.29 (beta; alpha and off in 1.28). */
const NATIVE_SINCE = { major: 1, minor: 29 };

export interface Version {
  major: number;
  minor: number;
}

/** "v1.29.3-eks-abc", "v1.31.0+k3s1", "1.28" → major and minor; undefined when unreadable. */
export function parseVersion(text: string): Version | undefined {
  const m = /^v?(\d+)\.(\d+)(?:[.+-]|$)/.exec(text.trim());
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : undefined;
}

const supportsNative = (v: Version) => v.major > NATIVE_SINCE.major || (v.major === NATIVE_SINCE.major && v.minor >= NATIVE_SINCE.minor);
const older = (a: Version, b: Version) => a.major < b.major || (a.major === b.major && a.minor < b.minor);

/** What the webhook keeps of a Node: enough to narrow by nodeSelector and read the kubelet's version. */
export interface NodeSummary {
  metadata: { name: string; labels: Record<string, string>; resourceVersion?: string };
  kubeletVersion: string;
}

/** The projection the node cache keeps (of a Node as the API serves it, list or watch). */
export function summarizeNode(raw: unknown): NodeSummary {
  const node = raw as { metadata?: { name?: string; labels?: Record<string, string>; resourceVersion?: string }; status?: { nodeInfo?: { kubeletVersion?: string } } };
  return {
    metadata: { name: node.metadata?.name ?? '', labels: node.metadata?.labels ?? {}, resourceVersion: node.metadata?.resourceVersion },
    kubeletVersion: node.status?.nodeInfo?.kubeletVersion ?? '',
  };
}

/** The nodes the pod may run on, as far as its spec.nodeName and spec.nodeSelector say. */
export function nodesForPod(nodes: readonly NodeSummary[], spec: Pick<V1PodSpec, 'nodeName' | 'nodeSelector'> | undefined): { nodes: NodeSummary[]; scope: string } {
  let out = [...nodes];
  const scope: string[] = [];
  if (spec?.nodeName) {
    out = out.filter((n) => n.metadata.name === spec.nodeName);
    scope.push(`spec.nodeName ${spec.nodeName}`);
  }
  const selector = Object.entries(spec?.nodeSelector ?? {});
  if (selector.length) {
    out = out.filter((n) => selector.every(([k, v]) => n.metadata.labels[k] === v));
    scope.push(`nodeSelector ${selector.map(([k, v]) => `${k}=${v}`).join(',')}`);
  }
  return { nodes: out, scope: scope.length ? `matching the pod's ${scope.join(' and ')}` : 'in the cluster' };
}

export interface SidecarForm {
  native: boolean;
  /** One sentence for the pod's annotation and the log. */
  reason: string;
}

/**
 * The form to inject. `nodes` are the nodes the pod may land on (nodesForPod); `scope` says which
 * those are, for the reason. auto: native only when the API server and the lowest of those
 * kubelets are 1.29 or later; no node known means regular (the safe form everywhere). A regular
 * reason names every cause, so that upgrading the API server does not reveal the nodes only then.
 */
export function sidecarForm(input: { mode: NativeSidecarsMode; apiServer: string; nodes: readonly NodeSummary[]; scope: string }): SidecarForm {
  const { mode, apiServer, nodes, scope } = input;
  if (mode === 'always') return { native: true, reason: 'native sidecars are forced on (--native-sidecars=always)' };
  if (mode === 'never') return { native: false, reason: 'native sidecars are turned off (--native-sidecars=never)' };
  const need = `${NATIVE_SINCE.major}.${NATIVE_SINCE.minor}`;
  const causes: string[] = [];
  const server = parseVersion(apiServer);
  if (!server) causes.push(`the API server's version "${apiServer}" cannot be read`);
  else if (!supportsNative(server)) causes.push(`the API server is ${apiServer}`);
  const count = `${nodes.length} node${nodes.length === 1 ? '' : 's'} ${scope}`;
  const unreadable = nodes.find((n) => !parseVersion(n.kubeletVersion));
  const lowest = unreadable ? undefined : nodes.reduce<NodeSummary | undefined>((low, n) => (!low || older(parseVersion(n.kubeletVersion)!, parseVersion(low.kubeletVersion)!) ? n : low), undefined);
  if (nodes.length === 0) causes.push(`no node is known ${scope}`);
  else if (unreadable) causes.push(`node ${unreadable.metadata.name} reports kubelet version "${unreadable.kubeletVersion}", which cannot be read`);
  else if (!supportsNative(parseVersion(lowest!.kubeletVersion)!)) causes.push(`node ${lowest!.metadata.name} runs kubelet ${lowest!.kubeletVersion} (the lowest of ${count})`);
  if (causes.length) return { native: false, reason: `${causes.join(' and ')}; native sidecars need ${need}` };
  return { native: true, reason: `the API server (${apiServer}) and every kubelet of ${count} (lowest ${lowest!.kubeletVersion}) are ${need} or later` };
}
