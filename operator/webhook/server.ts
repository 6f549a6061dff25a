// The sidecar injection webhook's HTTPS server: POST /mutate-pods answers AdmissionReviews with
// inject.ts. It reloads its certificate from the CertificateSource every refresh, reads the API
// server's version once and, with --native-sidecars=auto, keeps a cache of the nodes' kubelet
// versions: native.ts decides each pod's sidecar form from them.
import { CoreV1Api, VersionApi, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HostPort } from '../../common/values.js';
import type { Logger } from '../../common/logger.js';
import type { AdmissionResult, OperatorMetrics } from '../metrics.js';
import type { CertificateSource, ServingPair } from './certs.js';
import { Informer } from '../informer.js';
import { admit, parseAdmissionReview } from './inject.js';
import { nodesForPod, sidecarForm, summarizeNode, type NativeSidecarsMode, type NodeSummary, type SidecarForm } from './native.js';

export const WEBHOOK_PATH = '/mutate-pods';
/** A pod is at most ~1.5 MB in etcd; a review carries it once on CREATE. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Retry pace while there is no certificate or server version yet. */
const STARTING_REFRESH_MS = 1000;

export interface WebhookServerOptions {
  kubeConfig: KubeConfig;
  address: HostPort;
  /** The operator's sidecar image (--sidecar-image). */
  image: string;
  /** --native-sidecars: auto decides per pod from the API server's and the kubelets' versions. */
  nativeSidecars: NativeSidecarsMode;
  certificates: CertificateSource;
  /** How often the certificate is reloaded (and, self-managed, checked for renewal). */
  refreshMs: number;
  metrics: OperatorMetrics;
  log: Logger;
}

export class WebhookServer {
  private readonly server: Server;
  private served: ServingPair | undefined;
  /** The API server's gitVersion, as last read. */
  private apiServer: string | undefined;
  /** Name, labels and kubelet version of every node (auto only). */
  private readonly nodes: Informer<NodeSummary> | undefined;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private lastProblem = '';

  private constructor(private readonly o: WebhookServerOptions) {
    // No certificate yet: handshakes fail until the first one is loaded.
    this.server = createServer({}, (req, res) => void this.handle(req, res));
    if (o.nativeSidecars === 'auto') {
      const core = o.kubeConfig.makeApiClient(CoreV1Api);
      this.nodes = new Informer<NodeSummary>({
        resource: 'nodes',
        path: '/api/v1/nodes',
        list: ({ limit, continueToken }) => core.listNode({ limit, _continue: continueToken }),
        // A few hundred bytes per node, whatever the API serves (images, conditions, addresses).
        project: summarizeNode,
        watch: new Watch(o.kubeConfig),
        log: o.log,
        onRestart: () => o.metrics.informerRestarts.inc({ resource: 'nodes' }),
      });
    }
  }

  /** Binds the address (failing if it cannot), then loads the certificate in the background. */
  static async start(o: WebhookServerOptions): Promise<WebhookServer> {
    const w = new WebhookServer(o);
    await new Promise<void>((resolve, reject) => {
      w.server.once('error', reject);
      w.server.listen(o.address.port, o.address.host, () => resolve());
    });
    w.nodes?.start();
    w.loop = w.refreshLoop();
    return w;
  }

  /** Serving with a certificate, and knows enough to choose each pod's sidecar form. */
  get isReady(): boolean {
    return this.served !== undefined && this.knowsForms;
  }

  private get knowsForms(): boolean {
    return this.apiServer !== undefined && (this.nodes?.isSynced ?? true);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.all([this.loop, this.nodes?.stop()]);
    await new Promise((resolve) => this.server.close(resolve));
  }

  private async refreshLoop(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      try {
        await this.refresh();
        this.problem('');
      } catch (err) {
        this.problem((err as Error).message);
      }
      await sleep(this.isReady ? this.o.refreshMs : STARTING_REFRESH_MS, undefined, { signal: this.stopping.signal }).catch(() => undefined);
    }
  }

  private async refresh(): Promise<void> {
    // Read at every refresh: a control plane upgraded under a running operator counts at once.
    const version = (await this.o.kubeConfig.makeApiClient(VersionApi).getCode()).gitVersion;
    if (version !== this.apiServer) {
      this.o.log.info({ version, previous: this.apiServer, nativeSidecars: this.o.nativeSidecars }, 'webhook chooses the sidecar form per pod');
      this.apiServer = version;
    }
    const pair = await this.o.certificates.load();
    if (!pair || (pair.cert === this.served?.cert && pair.key === this.served?.key)) return;
    // Throws on a key that does not match its certificate: the previous pair keeps serving.
    this.server.setSecureContext({ cert: pair.cert, key: pair.key });
    this.served = pair;
    const notAfter = new X509Certificate(pair.cert).validTo;
    this.o.metrics.webhookCertificateExpiry.set(Date.parse(notAfter) / 1000);
    this.o.log.info({ notAfter }, 'webhook serving certificate loaded');
  }

  /** Logs a refresh problem when it first appears, not on every retry. */
  private problem(message: string): void {
    if (message && message !== this.lastProblem) this.o.log.warn({ reason: message }, 'webhook certificate not refreshed');
    this.lastProblem = message;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reply = (status: number, body: string, type = 'text/plain') => res.writeHead(status, { 'content-type': type }).end(body);
    if ((req.url ?? '').split('?')[0] !== WEBHOOK_PATH) return void reply(404, 'not found\n');
    if (req.method !== 'POST') return void reply(405, 'POST only\n');
    if (!this.knowsForms) return void reply(503, 'the API server version or the nodes are not known yet\n');
    let review;
    try {
      review = parseAdmissionReview(JSON.parse(await readBody(req)));
    } catch (err) {
      this.o.metrics.webhookAdmissions.inc({ result: 'error' });
      return void reply(400, `${(err as Error).message}\n`);
    }
    const { answer, injection } = admit(review, { image: this.o.image, formFor: (pod) => this.formFor(pod) });
    const result: AdmissionResult = injection.action === 'inject' ? 'injected' : injection.action === 'reject' ? 'rejected' : 'skipped';
    this.o.metrics.webhookAdmissions.inc({ result });
    const pod = review.request.object?.metadata;
    const where = { namespace: review.request.namespace, pod: pod?.name || `${pod?.generateName ?? ''}*` };
    if (injection.action === 'inject') {
      const { form, shutdown } = injection;
      this.o.log.info(
        { ...where, image: injection.settings.image, form: form.native ? 'native' : 'regular', reason: form.reason, preStopSeconds: shutdown.preStopSeconds, graceSeconds: shutdown.graceSeconds },
        'sidecar injected',
      );
    }
    else if (injection.action === 'reject') this.o.log.info({ ...where, reason: injection.message }, 'pod rejected');
    else this.o.log.debug({ ...where, reason: injection.reason }, 'pod left alone');
    reply(200, JSON.stringify(answer), 'application/json');
  }

  private formFor(pod: V1Pod): SidecarForm {
    const { nodes, scope } = nodesForPod(this.nodes?.list() ?? [], pod.spec);
    return sidecarForm({ mode: this.o.nativeSidecars, apiServer: this.apiServer!, nodes, scope });
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error(`the body is larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
