// Sidecar injection, the pure part: an AdmissionReview of a pod in, its answer out — a JSON patch
// that adds the Baton sidecar, no patch at all, or a rejection naming the bad annotation and value.
// The HTTPS server around it is server.ts; docs/injection.md describes what is injected.
import type { V1Container, V1Pod, V1Volume } from '@kubernetes/client-node';
import type { SidecarForm } from './native.js';

/**
 * The pod label that asks for the sidecar. A label, not an annotation, so that the webhook's
 * objectSelector sends the API server's pod creations here only for the pods that want one.
 */
export const INJECT_LABEL = 'baton.dev/inject';

/** The pod annotations the webhook reads. */
export const ANNOTATIONS = {
  listenPort: 'baton.dev/listen-port',
  adminPort: 'baton.dev/admin-port',
  config: 'baton.dev/config',
  adminTokenSecret: 'baton.dev/admin-token-secret',
  image: 'baton.dev/image',
  cpuRequest: 'baton.dev/cpu-request',
  memoryRequest: 'baton.dev/memory-request',
  memoryLimit: 'baton.dev/memory-limit',
} as const;

/** The annotations the webhook writes: which form it injected, and why. */
const FORM_ANNOTATIONS = { form: 'baton.dev/sidecar-form', reason: 'baton.dev/sidecar-form-reason' } as const;
/**
 * Accepted on a pod without meaning: what the webhook wrote (a pod re-created from an injected one's
 * metadata), and the annotation that was the switch before the label.
 */
const TOLERATED = new Set<string>([...Object.values(FORM_ANNOTATIONS), INJECT_LABEL]);

/** The label an injected pod gets, for a WsBalancer's sidecarSelector to match. */
export const SIDECAR_LABEL = 'baton.dev/sidecar';
const CONTAINER_NAME = 'baton';
const CONFIG_VOLUME = 'baton-config';
const CONFIG_DIR = '/etc/baton';
/** The key of the admin token in its Secret (as for WsBalancer's adminTokenSecretRef). */
const TOKEN_KEY = 'token';
/** The image's non-root USER, also set here: runAsNonRoot cannot check an image whose USER is a name. */
const SIDECAR_USER = 10001;
/** How long the sidecar may take to bind its listener before the kubelet restarts it. */
const STARTUP_SECONDS = 30;

const DEFAULTS = {
  listenPort: 8080,
  adminPort: 9901,
  adminTokenSecret: 'baton-admin',
  cpuRequest: '100m',
  memoryRequest: '64Mi',
  memoryLimit: '256Mi',
} as const;

/** What one injected sidecar looks like, from the pod's annotations and the operator's image. */
export interface SidecarSettings {
  image: string;
  listenPort: number;
  adminPort: number;
  /** A ConfigMap holding baton.yaml, or null for none. */
  config: string | null;
  adminTokenSecret: string;
  cpuRequest: string;
  memoryRequest: string;
  memoryLimit: string;
}

export type JsonPatchOp = { op: 'add'; path: string; value: unknown };

export type Injection =
  | { action: 'inject'; settings: SidecarSettings; form: SidecarForm; shutdown: ShutdownTiming; patch: JsonPatchOp[] }
  | { action: 'skip'; reason: string }
  | { action: 'reject'; message: string };

/** The pod's terminationGracePeriodSeconds when it sets none (the API's default). */
const DEFAULT_POD_GRACE_SECONDS = 30;
/** The longest preStop wait: time for Services and load balancers to stop sending new clients. */
const MAX_PRESTOP_SECONDS = 5;
/**
 * After its grace the sidecar closes every session with 1001 and gives the close handshakes up to
 * 1 s (sidecar.ts stop()); one more second covers signal delivery and the kubelet's whole seconds.
 */
const CLOSE_SECONDS = 1;
const MARGIN_SECONDS = 1;

/** How the sidecar's stop fits in the pod's grace period T (docs/injection.md has the timeline). */
export interface ShutdownTiming {
  podGraceSeconds: number;
  /** preStop: wait this long before the kubelet sends SIGTERM (0: no preStop). */
  preStopSeconds: number;
  /** BATON_SHUTDOWN_GRACE: sessions may end by themselves for this long after SIGTERM, then get 1001. */
  graceSeconds: number;
}

/**
 * Regular container: SIGTERM comes at preStop's end, SIGKILL at T; the grace is what is left.
 * Native sidecar: SIGTERM comes only once the app's containers have exited, at any time up to T,
 * and the kubelet then grants the rest of T but at least 2 s. Only a zero grace closes every
 * session with 1001 before SIGKILL whatever the app takes; the sessions are relayed meanwhile.
 */
export function shutdownTiming(podGraceSeconds: number, native: boolean): ShutdownTiming {
  const preStopSeconds = Math.min(MAX_PRESTOP_SECONDS, Math.floor(podGraceSeconds / 4));
  const graceSeconds = native ? 0 : Math.max(0, podGraceSeconds - preStopSeconds - CLOSE_SECONDS - MARGIN_SECONDS);
  return { podGraceSeconds, preStopSeconds, graceSeconds };
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const isObjectName = (s: string) => s.length <= 253 && s.split('.').every((part) => DNS_LABEL.test(part));
const QUANTITY = /^([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const KNOWN = new Set<string>(Object.values(ANNOTATIONS));

/** The sidecar's settings from the pod's annotations, or every problem with them. */
function sidecarSettings(pod: V1Pod, image: string): { ok: true; settings: SidecarSettings } | { ok: false; problems: string[] } {
  const annotations = pod.metadata?.annotations ?? {};
  const problems: string[] = [];
  const bad = (key: string, why: string) => problems.push(`${key}: ${JSON.stringify(annotations[key])} ${why}`);
  const text = (key: string, fallback: string, valid: (s: string) => boolean, expected: string): string => {
    const v = annotations[key];
    if (v === undefined) return fallback;
    if (!valid(v)) bad(key, `is not ${expected}`);
    return v;
  };
  const port = (key: string, fallback: number): number => {
    const v = annotations[key];
    if (v === undefined) return fallback;
    const n = /^[0-9]{1,5}$/.test(v) ? Number(v) : NaN;
    if (!(n >= 1 && n <= 65535)) bad(key, 'is not a port number (1-65535)');
    return n;
  };

  // A misspelt annotation would silently be ignored otherwise.
  for (const key of Object.keys(annotations)) {
    if (key.startsWith('baton.dev/') && !KNOWN.has(key) && !TOLERATED.has(key)) problems.push(`${key}: unknown annotation (known: ${[...KNOWN].join(', ')})`);
  }
  const settings: SidecarSettings = {
    image: text(ANNOTATIONS.image, image, (s) => /^[^\s]+$/.test(s), 'an image reference'),
    listenPort: port(ANNOTATIONS.listenPort, DEFAULTS.listenPort),
    adminPort: port(ANNOTATIONS.adminPort, DEFAULTS.adminPort),
    config: annotations[ANNOTATIONS.config] === undefined ? null : text(ANNOTATIONS.config, '', isObjectName, 'a ConfigMap name (a DNS-1123 subdomain)'),
    adminTokenSecret: text(ANNOTATIONS.adminTokenSecret, DEFAULTS.adminTokenSecret, isObjectName, 'a Secret name (a DNS-1123 subdomain)'),
    cpuRequest: text(ANNOTATIONS.cpuRequest, DEFAULTS.cpuRequest, (s) => QUANTITY.test(s), 'a quantity (e.g. 100m, 0.5, 2)'),
    memoryRequest: text(ANNOTATIONS.memoryRequest, DEFAULTS.memoryRequest, (s) => QUANTITY.test(s), 'a quantity (e.g. 64Mi, 1Gi)'),
    memoryLimit: text(ANNOTATIONS.memoryLimit, DEFAULTS.memoryLimit, (s) => QUANTITY.test(s), 'a quantity (e.g. 256Mi, 1Gi)'),
  };
  if (problems.length) return { ok: false, problems };

  const describe = (key: string, value: number) => (annotations[key] === undefined ? `${value} (the default of ${key})` : `${key}: "${value}"`);
  if (settings.adminPort === settings.listenPort) {
    problems.push(`${describe(ANNOTATIONS.adminPort, settings.adminPort)} is also the listen port (${ANNOTATIONS.listenPort}); the sidecar needs two ports`);
  }
  // The sidecar shares the pod's network: a port another container declares is taken.
  const neighbours = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? []).filter((c) => c.restartPolicy === 'Always')];
  for (const [key, value] of [[ANNOTATIONS.listenPort, settings.listenPort], [ANNOTATIONS.adminPort, settings.adminPort]] as const) {
    const user = neighbours.find((c) => c.ports?.some((p) => p.containerPort === value && (p.protocol ?? 'TCP') === 'TCP'));
    if (user) problems.push(`${describe(key, value)} is already a port of container "${user.name}"; set ${key} to a free port`);
  }
  if (settings.config !== null && pod.spec?.volumes?.some((v) => v.name === CONFIG_VOLUME)) {
    problems.push(`${ANNOTATIONS.config}: the pod already has a volume named "${CONFIG_VOLUME}"`);
  }
  return problems.length ? { ok: false, problems } : { ok: true, settings };
}

/** The sidecar container: an init container that keeps running (native) or a regular one. */
function sidecarContainer(s: SidecarSettings, native: boolean, shutdown: ShutdownTiming): V1Container {
  return {
    name: CONTAINER_NAME,
    image: s.image,
    args: ['sidecar', ...(s.config !== null ? ['--config', `${CONFIG_DIR}/baton.yaml`] : [])],
    ...(native ? { restartPolicy: 'Always' } : {}),
    ports: [
      { name: 'baton', containerPort: s.listenPort, protocol: 'TCP' },
      { name: 'baton-admin', containerPort: s.adminPort, protocol: 'TCP' },
    ],
    env: [
      { name: 'BATON_LISTEN_ADDRESS', value: `0.0.0.0:${s.listenPort}` },
      { name: 'BATON_ADMIN_ADDRESS', value: `0.0.0.0:${s.adminPort}` },
      { name: 'BATON_ADMIN_TOKEN', valueFrom: { secretKeyRef: { name: s.adminTokenSecret, key: TOKEN_KEY } } },
      { name: 'BATON_SHUTDOWN_GRACE', value: `${shutdown.graceSeconds}s` },
    ],
    resources: {
      requests: { cpu: s.cpuRequest, memory: s.memoryRequest },
      limits: { memory: s.memoryLimit },
    },
    // /healthz answers once the client listener is bound. A native sidecar's app containers start
    // only after this probe has passed, so they never come up before the proxy in front of them.
    startupProbe: { httpGet: { path: '/healthz', port: s.adminPort }, periodSeconds: 1, failureThreshold: STARTUP_SECONDS },
    livenessProbe: { httpGet: { path: '/healthz', port: s.adminPort }, periodSeconds: 10, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port: s.adminPort }, periodSeconds: 5, failureThreshold: 2 },
    // The listener closes at SIGTERM: wait first, until the pod's removal from Services has spread.
    ...(shutdown.preStopSeconds > 0 ? { lifecycle: { preStop: { exec: { command: ['sleep', String(shutdown.preStopSeconds)] } } } } : {}),
    securityContext: {
      runAsNonRoot: true,
      runAsUser: SIDECAR_USER,
      runAsGroup: SIDECAR_USER,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    ...(s.config !== null ? { volumeMounts: [{ name: CONFIG_VOLUME, mountPath: CONFIG_DIR, readOnly: true }] } : {}),
  };
}

/** JSON Pointer escaping of one path segment (RFC 6901). */
const pointer = (segment: string) => segment.replace(/~/g, '~0').replace(/\//g, '~1');

/** Adds `value` to the list at `path`: creates the list if the pod has none. */
function addToList(list: unknown[] | undefined, path: string, value: unknown, at: 'start' | 'end'): JsonPatchOp {
  if (!list) return { op: 'add', path, value: [value] };
  return { op: 'add', path: `${path}/${at === 'start' ? '0' : '-'}`, value };
}

export interface InjectOptions {
  image: string;
  /** The form for this pod (native.ts sidecarForm); asked only for a pod that gets the sidecar. */
  formFor: (pod: V1Pod) => SidecarForm;
}

/** What the webhook does with a pod being created. */
export function injection(pod: V1Pod, opts: InjectOptions): Injection {
  if (pod.metadata?.labels?.[INJECT_LABEL] !== 'true') return { action: 'skip', reason: `not labelled ${INJECT_LABEL}: "true"` };
  const spec = pod.spec;
  if ([...(spec?.containers ?? []), ...(spec?.initContainers ?? [])].some((c) => c.name === CONTAINER_NAME)) {
    return { action: 'skip', reason: `already has a container named "${CONTAINER_NAME}"` };
  }
  const parsed = sidecarSettings(pod, opts.image);
  if (!parsed.ok) return { action: 'reject', message: parsed.problems.join('; ') };
  const s = parsed.settings;

  const form = opts.formFor(pod);
  const shutdown = shutdownTiming(spec?.terminationGracePeriodSeconds ?? DEFAULT_POD_GRACE_SECONDS, form.native);
  // The label is there: the webhook only sees pods labelled INJECT_LABEL.
  const patch: JsonPatchOp[] = [{ op: 'add', path: `/metadata/labels/${pointer(SIDECAR_LABEL)}`, value: 'true' }];
  const written = { [FORM_ANNOTATIONS.form]: form.native ? 'native' : 'regular', [FORM_ANNOTATIONS.reason]: form.reason };
  if (!pod.metadata?.annotations) patch.push({ op: 'add', path: '/metadata/annotations', value: written });
  else for (const [key, value] of Object.entries(written)) patch.push({ op: 'add', path: `/metadata/annotations/${pointer(key)}`, value });
  const container = sidecarContainer(s, form.native, shutdown);
  // A native sidecar goes first, so it runs before the other init containers start.
  patch.push(form.native ? addToList(spec?.initContainers, '/spec/initContainers', container, 'start') : addToList(spec?.containers, '/spec/containers', container, 'end'));
  if (s.config !== null) {
    const volume: V1Volume = { name: CONFIG_VOLUME, configMap: { name: s.config } };
    patch.push(addToList(spec?.volumes, '/spec/volumes', volume, 'end'));
  }
  return { action: 'inject', settings: s, form, shutdown, patch };
}

/** The parts of an admission.k8s.io AdmissionReview (v1 or v1beta1) the webhook reads. */
export interface AdmissionReviewRequest {
  apiVersion: string;
  kind: 'AdmissionReview';
  request: {
    uid: string;
    kind?: { group: string; version: string; kind: string };
    subResource?: string;
    operation?: string;
    namespace?: string;
    object?: V1Pod;
  };
}

export interface AdmissionReviewResponse {
  apiVersion: string;
  kind: 'AdmissionReview';
  response: {
    uid: string;
    allowed: boolean;
    patchType?: 'JSONPatch';
    /** Base64 of the JSON patch. */
    patch?: string;
    status?: { code: number; message: string };
  };
}

/** Throws a message naming what is missing when `body` is no AdmissionReview request. */
export function parseAdmissionReview(body: unknown): AdmissionReviewRequest {
  const review = body as Partial<AdmissionReviewRequest> | null;
  if (typeof review !== 'object' || review === null || review.kind !== 'AdmissionReview') throw new Error('the body is not an AdmissionReview');
  if (typeof review.apiVersion !== 'string' || !review.apiVersion.startsWith('admission.k8s.io/')) throw new Error('apiVersion is not admission.k8s.io/*');
  if (typeof review.request?.uid !== 'string') throw new Error('request.uid is missing');
  return review as AdmissionReviewRequest;
}

/** The webhook's answer to one AdmissionReview, and what it did (for logs and metrics). */
export function admit(review: AdmissionReviewRequest, opts: InjectOptions): { answer: AdmissionReviewResponse; injection: Injection } {
  const { request } = review;
  const isPodCreate = request.kind?.group === '' && request.kind.kind === 'Pod' && request.operation === 'CREATE' && !request.subResource && request.object;
  const result: Injection = isPodCreate ? injection(request.object!, opts) : { action: 'skip', reason: 'not the creation of a pod' };
  const response: AdmissionReviewResponse['response'] = { uid: request.uid, allowed: result.action !== 'reject' };
  if (result.action === 'inject') {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(result.patch)).toString('base64');
  } else if (result.action === 'reject') {
    response.status = { code: 400, message: result.message };
  }
  return { answer: { apiVersion: review.apiVersion, kind: 'AdmissionReview', response }, injection: result };
}
