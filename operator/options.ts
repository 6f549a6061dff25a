// The operator's settings: one table of command-line flags, each with an environment variable and
// a default, parsed by the same value types as the sidecar's config (docs/operator.md lists them).
import { hostname } from 'node:os';
import type { z } from 'zod';
import { LOG_LEVELS, type LogLevel } from '../common/logger.js';
import { address, bool, duration, formatDuration, int, oneOf, readValue, str, type HostPort } from '../common/values.js';
import { NATIVE_SIDECARS_MODES, type NativeSidecarsMode } from './webhook/native.js';
import { leaseDurationProblems } from './leader.js';

export interface OperatorOptions {
  kubeconfig: string;
  namespace: string;
  metricsAddress: HostPort;
  leaderElect: boolean;
  leaseNamespace: string;
  leaseName: string;
  leaseDuration: number;
  leaseRenewDeadline: number;
  leaseRetryPeriod: number;
  identity: string;
  resync: number;
  apiTimeout: number;
  sidecarTimeout: number;
  sidecarConcurrency: number;
  sidecarAttempts: number;
  concurrency: number;
  logLevel: LogLevel;
  /** null: the webhook is off. */
  webhookAddress: HostPort | null;
  webhookService: string;
  webhookServiceNamespace: string;
  webhookConfiguration: string;
  webhookCertSecret: string;
  webhookCertDir: string;
  sidecarImage: string;
  nativeSidecars: NativeSidecarsMode;
}

interface OptionDef<K extends keyof OperatorOptions = keyof OperatorOptions> {
  key: K;
  flag: string;
  env: string;
  type: z.ZodType<OperatorOptions[K], unknown>;
  default: (env: NodeJS.ProcessEnv) => OperatorOptions[K];
  doc: string;
  /** What an explicitly empty value means, when that is not the default. */
  empty?: OperatorOptions[K];
}

const opt = <K extends keyof OperatorOptions>(
  key: K,
  flag: string,
  env: string,
  type: z.ZodType<OperatorOptions[K], unknown>,
  dflt: OperatorOptions[K] | ((env: NodeJS.ProcessEnv) => OperatorOptions[K]),
  doc: string,
  extra: { empty?: OperatorOptions[K] } = {},
): OptionDef<K> => ({ key, flag, env, type, default: typeof dflt === 'function' ? dflt : () => dflt, doc, ...extra });

// Kubernetes object names: a DNS-1123 label (Services) or subdomain (most others).
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const isSubdomain = (s: string) => s.length <= 253 && s.split('.').every((part) => DNS_LABEL.test(part));
const label = () => str({ check: (s) => DNS_LABEL.test(s), expected: 'a DNS-1123 label (lower-case letters, digits and "-", at most 63)' });
const subdomain = () => str({ check: isSubdomain, expected: 'a DNS-1123 subdomain (lower-case letters, digits, "-" and ".")' });

export const OPTIONS: ReadonlyArray<OptionDef> = [
  opt('kubeconfig', 'kubeconfig', 'KUBECONFIG', str(), '', 'Kubeconfig file; empty = the in-cluster service account (or ~/.kube/config outside a cluster).'),
  opt('namespace', 'namespace', 'BATON_OPERATOR_NAMESPACE', str(), '', 'Watch only this namespace; empty = all namespaces.'),
  opt('metricsAddress', 'metrics-address', 'BATON_OPERATOR_METRICS_ADDRESS', address(), { host: '0.0.0.0', port: 8080 }, 'Address of /metrics, /healthz and /readyz.'),
  opt('leaderElect', 'leader-elect', 'BATON_OPERATOR_LEADER_ELECT', bool(), true, 'Elect one leader among replicas with a Lease; false = this replica always acts.'),
  opt('leaseNamespace', 'lease-namespace', 'BATON_OPERATOR_LEASE_NAMESPACE', str(), (env) => env.POD_NAMESPACE || 'default', 'Namespace of the leader Lease (default: $POD_NAMESPACE, else "default").'),
  opt('leaseName', 'lease-name', 'BATON_OPERATOR_LEASE_NAME', str(), 'baton-operator', 'Name of the leader Lease.'),
  opt('leaseDuration', 'lease-duration', 'BATON_OPERATOR_LEASE_DURATION', duration({ min: 1000 }), 15_000, 'A standby takes over once the lease has not changed for this long, on its own clock.'),
  opt('leaseRenewDeadline', 'lease-renew-deadline', 'BATON_OPERATOR_LEASE_RENEW_DEADLINE', duration({ min: 100 }), 10_000, 'The leader stops acting when it has not renewed the lease for this long; shorter than --lease-duration.'),
  opt('leaseRetryPeriod', 'lease-retry-period', 'BATON_OPERATOR_LEASE_RETRY_PERIOD', duration({ min: 100 }), 2000, 'How often the lease is renewed (leader) or tried (standby).'),
  opt('identity', 'identity', 'BATON_OPERATOR_IDENTITY', str(), (env) => env.POD_NAME || `${hostname()}-${process.pid}`, 'This replica in the Lease and in events (default: $POD_NAME).'),
  opt('resync', 'resync', 'BATON_OPERATOR_RESYNC', duration({ min: 1000 }), 30_000, 'A WsBalancer with nothing in motion is reconciled again this often.'),
  opt('apiTimeout', 'api-timeout', 'BATON_OPERATOR_API_TIMEOUT', duration({ min: 100 }), 10_000, 'Timeout of each API server request (watches excepted; Lease requests end by --lease-renew-deadline).'),
  opt('sidecarTimeout', 'sidecar-timeout', 'BATON_OPERATOR_SIDECAR_TIMEOUT', duration({ min: 100 }), 5000, 'Timeout of each admin API request to a sidecar.'),
  opt('sidecarConcurrency', 'sidecar-concurrency', 'BATON_OPERATOR_SIDECAR_CONCURRENCY', int(1, 1000), 16, 'Sidecars of one WsBalancer called at the same time.'),
  opt('sidecarAttempts', 'sidecar-attempts', 'BATON_OPERATOR_SIDECAR_ATTEMPTS', int(1, 20), 3, 'Attempts per sidecar request within one reconcile (retried with backoff).'),
  opt('concurrency', 'concurrency', 'BATON_OPERATOR_CONCURRENCY', int(1, 100), 4, 'WsBalancers reconciled at the same time.'),
  opt('logLevel', 'log-level', 'BATON_LOG_LEVEL', oneOf(LOG_LEVELS), 'info', 'Log level.'),
  opt('webhookAddress', 'webhook-address', 'BATON_OPERATOR_WEBHOOK_ADDRESS', address(), { host: '0.0.0.0', port: 9443 }, 'Address of the sidecar injection webhook (HTTPS, /mutate-pods); empty = no webhook.', { empty: null }),
  opt('webhookService', 'webhook-service', 'BATON_OPERATOR_WEBHOOK_SERVICE', label(), 'baton-operator', "The webhook's Service: its DNS names go in the serving certificate."),
  opt('webhookServiceNamespace', 'webhook-service-namespace', 'BATON_OPERATOR_WEBHOOK_SERVICE_NAMESPACE', label(), (env) => env.POD_NAMESPACE || 'default', "Namespace of the webhook's Service and certificate Secret (default: $POD_NAMESPACE, else \"default\")."),
  opt('webhookConfiguration', 'webhook-configuration', 'BATON_OPERATOR_WEBHOOK_CONFIGURATION', subdomain(), 'baton-sidecar-injector', 'MutatingWebhookConfiguration whose caBundle the operator fills in.'),
  opt('webhookCertSecret', 'webhook-cert-secret', 'BATON_OPERATOR_WEBHOOK_CERT_SECRET', subdomain(), 'baton-webhook-cert', 'Secret holding the self-managed webhook CA and serving certificate.'),
  opt('webhookCertDir', 'webhook-cert-dir', 'BATON_OPERATOR_WEBHOOK_CERT_DIR', str(), '', 'Serve tls.crt/tls.key from this directory (e.g. cert-manager\'s Secret) instead of self-managed certificates.'),
  opt('sidecarImage', 'sidecar-image', 'BATON_OPERATOR_SIDECAR_IMAGE', str(), 'ghcr.io/baton-dev/baton:0.1.0', 'Image of the injected sidecar (a pod can override it with baton.dev/image).'),
  opt('nativeSidecars', 'native-sidecars', 'BATON_OPERATOR_NATIVE_SIDECARS', oneOf(NATIVE_SIDECARS_MODES), 'auto', 'Inject the sidecar as a native sidecar: auto = when the API server and the kubelets of the nodes the pod may run on are 1.29+; always; never.'),
];

export type OptionsResult = { ok: true; options: OperatorOptions } | { ok: false; problems: string[] };

/** Flags win over environment variables, which win over defaults; every problem is reported. */
export function parseOptions(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv): OptionsResult {
  const problems: string[] = [];
  const known = new Set(OPTIONS.map((o) => o.flag));
  for (const f of Object.keys(flags)) if (!known.has(f)) problems.push(`--${f}: unknown option`);
  const out: Record<string, unknown> = {};
  for (const o of OPTIONS) {
    const fromFlag = flags[o.flag];
    const raw = fromFlag ?? env[o.env];
    if (raw === '' && 'empty' in o) {
      out[o.key] = o.empty;
      continue;
    }
    if (raw === undefined || raw === '') {
      out[o.key] = o.default(env);
      continue;
    }
    const parsed = readValue(o.type, raw, 'env');
    if (parsed.ok) out[o.key] = parsed.value;
    else problems.push(`${fromFlag !== undefined ? `--${o.flag}` : o.env}: ${parsed.problems.map((p) => p.message).join('; ')}`);
  }
  const options = out as unknown as OperatorOptions;
  if (!problems.length && options.leaderElect) {
    problems.push(...leaseDurationProblems({ leaseDurationMs: options.leaseDuration, renewDeadlineMs: options.leaseRenewDeadline, retryPeriodMs: options.leaseRetryPeriod }));
    // Each push attempt asks first whether this replica still leads; one started just before the
    // renew deadline must end before a standby can take over.
    const margin = options.leaseDuration - options.leaseRenewDeadline;
    if (options.sidecarTimeout > margin) {
      problems.push(
        `--sidecar-timeout (${formatDuration(options.sidecarTimeout)}) must be at most --lease-duration minus --lease-renew-deadline (${formatDuration(margin)}): a push to a sidecar started by a leader just before its deadline would still land after a standby took over`,
      );
    }
  }
  return problems.length ? { ok: false, problems } : { ok: true, options };
}
