// The webhook's TLS certificate. Self-managed: a CA and a serving certificate for the webhook's
// Service, kept in a Secret and renewed when a third of a certificate's lifetime is left, the CA
// written into the MutatingWebhookConfiguration's caBundle; only the leader writes, with
// create-if-missing and resourceVersion checks, so two replicas never overwrite each other. Or
// cert-manager's: tls.crt and tls.key read from a directory.
//
// Node's crypto can make keys and read certificates but not sign them; node-forge (no
// dependencies) builds and signs the certificates, over RSA keys that Node generates natively.
import { AdmissionregistrationV1Api, CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import forge from 'node-forge';
import { createPublicKey, generateKeyPair, randomBytes, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../common/logger.js';

const DAY = 24 * 3600 * 1000;
export const CA_LIFETIME_MS = 5 * 365 * DAY;
export const SERVING_LIFETIME_MS = 365 * DAY;
/** Certificates start this far in the past, for clocks a little behind. */
const BACKDATE_MS = 3600 * 1000;

/** A certificate and its private key, PEM. */
export interface KeyPair {
  cert: string;
  key: string;
}

/** What the webhook serves with; the cert may be followed by its chain. */
export type ServingPair = KeyPair;

/** Where the webhook's serving certificate comes from: asked again every refresh. */
export interface CertificateSource {
  /** The pair to serve now; undefined while there is none yet. */
  load(): Promise<ServingPair | undefined>;
}

/** The names a serving certificate must carry. */
export interface ServingNames {
  dns: string[];
  ips: string[];
}

/**
 * The Service's DNS names, and the address the webhook binds when it is one IP (a webhook
 * configuration with a `url` can then reach it by IP, as the tests do).
 */
export function servingNames(service: string, namespace: string, bindHost: string): ServingNames {
  const ip = isIP(bindHost) && bindHost !== '0.0.0.0' && bindHost !== '::' ? [bindHost] : [];
  return { dns: [`${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`], ips: ip };
}

const generateRsa = promisify(generateKeyPair);

// forge writes CRLF line ends.
const toPem = (cert: forge.pki.Certificate) => forge.pki.certificateToPem(cert).replace(/\r\n/g, '\n');
const rsaKeyFromPem = (pem: string) => forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;

async function newKey(): Promise<{ publicKey: forge.pki.PublicKey; privateKey: forge.pki.rsa.PrivateKey; pem: string }> {
  const { publicKey, privateKey } = await generateRsa('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { publicKey: forge.pki.publicKeyFromPem(publicKey), privateKey: rsaKeyFromPem(privateKey), pem: privateKey };
}

function newCertificate(publicKey: forge.pki.PublicKey, notBefore: Date, notAfter: Date): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // A positive 127-bit serial (DER integers are signed).
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  cert.serialNumber = serial.toString('hex');
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  return cert;
}

/** A self-signed CA valid from `now` (less a little) for `lifetimeMs`. */
export async function issueCa(now: Date, lifetimeMs = CA_LIFETIME_MS): Promise<KeyPair> {
  const key = await newKey();
  const cert = newCertificate(key.publicKey, new Date(now.getTime() - BACKDATE_MS), new Date(now.getTime() + lifetimeMs));
  const subject = [{ name: 'commonName', value: `baton-webhook-ca-${now.getTime()}` }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key.privateKey, forge.md.sha256.create());
  return { cert: toPem(cert), key: key.pem };
}

/** A serving certificate for `names`, signed by `ca`, never outliving it. */
export async function issueServing(ca: KeyPair, names: ServingNames, now: Date, lifetimeMs = SERVING_LIFETIME_MS): Promise<KeyPair> {
  const key = await newKey();
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const notAfter = Math.min(now.getTime() + lifetimeMs, caCert.validity.notAfter.getTime());
  const cert = newCertificate(key.publicKey, new Date(now.getTime() - BACKDATE_MS), new Date(notAfter));
  cert.setSubject([{ name: 'commonName', value: names.dns[0] ?? names.ips[0] ?? 'baton-webhook' }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...names.dns.map((value) => ({ type: 2, value })), ...names.ips.map((ip) => ({ type: 7, ip }))] },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(rsaKeyFromPem(ca.key), forge.md.sha256.create());
  return { cert: toPem(cert), key: key.pem };
}

/** The PEM certificates of a bundle, in order, each ending in a newline. */
export function splitPem(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem}\n`);
}

/** Everything the self-managed Secret holds (its data keys: ca.crt, ca.key, tls.crt, tls.key). */
export interface WebhookCertificates {
  /** The current CA first, then the previous one while it is still valid: the caBundle. */
  caBundle: string;
  caKey: string;
  cert: string;
  key: string;
}

export type Renewal = { renew: 'none' } | { renew: 'serving' | 'all'; reason: string };

const lowOnTime = (c: X509Certificate, now: Date) => {
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  return to - now.getTime() < (to - from) / 3;
};
const samePublicKey = (c: X509Certificate, keyPem: string) =>
  c.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(keyPem).export({ type: 'spki', format: 'der' }));

/** What must be issued anew so that `current` serves `names` for a while yet. */
export function renewal(current: Partial<WebhookCertificates> | undefined, names: ServingNames, now: Date): Renewal {
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(splitPem(current?.caBundle ?? '')[0] ?? '');
    if (!samePublicKey(ca, current?.caKey ?? '')) return { renew: 'all', reason: 'the CA key does not match the CA certificate' };
  } catch {
    return { renew: 'all', reason: current ? 'no valid CA certificate and key' : 'no certificate yet' };
  }
  if (lowOnTime(ca, now)) return { renew: 'all', reason: `the CA expires on ${ca.validTo}` };
  let serving: X509Certificate;
  try {
    serving = new X509Certificate(current?.cert ?? '');
    if (!samePublicKey(serving, current?.key ?? '')) return { renew: 'serving', reason: 'the serving key does not match its certificate' };
  } catch {
    return { renew: 'serving', reason: 'no valid serving certificate and key' };
  }
  if (!serving.checkIssued(ca) || !serving.verify(ca.publicKey)) return { renew: 'serving', reason: 'the serving certificate was not issued by the CA' };
  const wanted = [...names.dns.map((d) => `DNS:${d}`), ...names.ips.map((ip) => `IP Address:${ip}`)].sort().join(', ');
  const has = (serving.subjectAltName ?? '').split(', ').sort().join(', ');
  if (has !== wanted) return { renew: 'serving', reason: `the serving certificate names ${has || 'nothing'}, not ${wanted}` };
  if (lowOnTime(serving, now)) return { renew: 'serving', reason: `the serving certificate expires on ${serving.validTo}` };
  return { renew: 'none' };
}

/** `current` with what `r` says renewed; a replaced CA stays in the bundle while it is valid. */
export async function renew(current: Partial<WebhookCertificates> | undefined, r: Exclude<Renewal, { renew: 'none' }>, names: ServingNames, now: Date): Promise<WebhookCertificates> {
  if (r.renew === 'serving') {
    const caPem = splitPem(current!.caBundle!)[0]!;
    const serving = await issueServing({ cert: caPem, key: current!.caKey! }, names, now);
    return { caBundle: current!.caBundle!, caKey: current!.caKey!, ...serving };
  }
  const ca = await issueCa(now);
  const previous = splitPem(current?.caBundle ?? '')
    .slice(0, 1)
    .filter((pem) => {
      try {
        return Date.parse(new X509Certificate(pem).validTo) > now.getTime();
      } catch {
        return false;
      }
    });
  const serving = await issueServing(ca, names, now);
  return { caBundle: [ca.cert, ...previous].join(''), caKey: ca.key, ...serving };
}

const SECRET_KEYS = { caBundle: 'ca.crt', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key' } as const;

export function fromSecret(secret: V1Secret): Partial<WebhookCertificates> {
  const data = secret.data ?? {};
  const out: Partial<WebhookCertificates> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS)) {
    if (data[key]) out[field as keyof WebhookCertificates] = Buffer.from(data[key], 'base64').toString('utf8');
  }
  return out;
}

function secretData(c: WebhookCertificates): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS)) data[key] = Buffer.from(c[field as keyof WebhookCertificates]).toString('base64');
  return data;
}

const apiCode = (err: unknown) => (err as { code?: number }).code;

export interface SecretCertificatesOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  secret: string;
  webhookConfiguration: string;
  names: ServingNames;
  /** Only the leader creates and renews the certificate and writes the caBundle. */
  isLeader: () => boolean;
  log: Logger;
}

/** The self-managed certificate: every replica serves from the Secret; the leader maintains it. */
export class SecretCertificates implements CertificateSource {
  private readonly core: CoreV1Api;
  private readonly admission: AdmissionregistrationV1Api;
  private lastCaBundleProblem = '';

  constructor(private readonly o: SecretCertificatesOptions) {
    this.core = o.kubeConfig.makeApiClient(CoreV1Api);
    this.admission = o.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  }

  async load(): Promise<ServingPair | undefined> {
    let secret = await this.readSecret();
    if (this.o.isLeader()) {
      secret = await this.maintain(secret);
      await this.syncCaBundle(fromSecret(secret).caBundle!);
    }
    if (!secret) return undefined;
    const { cert, key } = fromSecret(secret);
    return cert && key ? { cert, key } : undefined;
  }

  private async readSecret(): Promise<V1Secret | undefined> {
    try {
      return await this.core.readNamespacedSecret({ namespace: this.o.namespace, name: this.o.secret });
    } catch (err) {
      if (apiCode(err) === 404) return undefined;
      throw err;
    }
  }

  /** Issues what is due and stores it; the Secret as it is now. */
  private async maintain(secret: V1Secret | undefined): Promise<V1Secret> {
    const current = secret && fromSecret(secret);
    const now = new Date();
    const due = renewal(current, this.o.names, now);
    if (due.renew === 'none') return secret!;
    this.o.log.info({ secret: `${this.o.namespace}/${this.o.secret}`, renew: due.renew, reason: due.reason }, 'issuing the webhook certificate');
    const next = await renew(current, due, this.o.names, now);
    // A new CA is trusted before anything serves with it; the old one stays in the bundle meanwhile.
    if (next.caBundle !== current?.caBundle) await this.syncCaBundle(next.caBundle);
    const { namespace, secret: name } = this.o;
    const body: V1Secret = {
      metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'baton-operator' }, resourceVersion: secret?.metadata?.resourceVersion },
      // A Secret's type cannot change: one made by hand keeps its own.
      type: secret?.type ?? 'kubernetes.io/tls',
      data: secretData(next),
    };
    try {
      return secret ? await this.core.replaceNamespacedSecret({ namespace, name, body }) : await this.core.createNamespacedSecret({ namespace, body });
    } catch (err) {
      // Another replica wrote first (a leader change in between): use what it wrote.
      if (apiCode(err) !== 409) throw err;
      this.o.log.info({ secret: `${namespace}/${name}` }, 'the webhook certificate was written by another replica; using it');
      const theirs = await this.readSecret();
      if (!theirs) throw new Error(`Secret ${namespace}/${name} conflicted but cannot be read`);
      return theirs;
    }
  }

  /** Sets every webhook's caBundle in the configuration to `bundle` (a problem is logged once, not thrown). */
  private async syncCaBundle(bundle: string): Promise<void> {
    const name = this.o.webhookConfiguration;
    const encoded = Buffer.from(bundle).toString('base64');
    try {
      const config = await this.admission.readMutatingWebhookConfiguration({ name });
      const webhooks = config.webhooks ?? [];
      if (webhooks.every((w) => w.clientConfig.caBundle === encoded)) return this.problem('');
      // The resourceVersion test makes the patch fail rather than overwrite a concurrent change.
      const patch = [
        { op: 'test', path: '/metadata/resourceVersion', value: config.metadata?.resourceVersion },
        ...webhooks.map((_, i) => ({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: encoded })),
      ];
      await this.admission.patchMutatingWebhookConfiguration({ name, body: patch }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      this.o.log.info({ webhookConfiguration: name, webhooks: webhooks.length }, 'webhook caBundle updated');
      this.problem('');
    } catch (err) {
      this.problem(`cannot set the caBundle of MutatingWebhookConfiguration ${name}: ${(err as Error).message}`);
    }
  }

  private problem(message: string): void {
    if (message && message !== this.lastCaBundleProblem) this.o.log.warn({ reason: message }, 'webhook caBundle not set');
    this.lastCaBundleProblem = message;
  }
}

/** cert-manager's certificate: tls.crt and tls.key in a directory (a mounted Secret). */
export class DirectoryCertificates implements CertificateSource {
  constructor(private readonly dir: string) {}

  async load(): Promise<ServingPair> {
    const [cert, key] = await Promise.all([readFile(join(this.dir, 'tls.crt'), 'utf8'), readFile(join(this.dir, 'tls.key'), 'utf8')]);
    return { cert, key };
  }
}
