import type { KubeConfig } from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatHostPort, type HostPort } from '../common/values.js';
import { createLogger, type Logger } from '../common/logger.js';
import { Controller } from './controller.js';
import { KubeConfigWithTimeout } from './kube-client.js';
import { OperatorMetrics } from './metrics.js';
import { parseOptions, type OperatorOptions } from './options.js';
import { DirectoryCertificates, SecretCertificates, servingNames } from './webhook/certs.js';
import { WebhookServer } from './webhook/server.js';

/** How often the webhook reloads its certificate and, self-managed, checks whether it is due. */
const WEBHOOK_REFRESH_MS = 10_000;

/**
 * `baton operator [--flag value ...]`: check the options (exit 2 naming each bad one), serve
 * /metrics, /healthz and /readyz and the sidecar injection webhook, run the controller; SIGTERM
 * hands the lease over and exits 0.
 */
export async function runOperator(flags: Record<string, string | undefined>): Promise<void> {
  const parsed = parseOptions(flags, process.env);
  if (!parsed.ok) {
    process.stderr.write(`baton operator: invalid options:\n${parsed.problems.map((p) => `  - ${p}`).join('\n')}\n`);
    process.exit(2);
  }
  const o = parsed.options;
  const log = createLogger(o.logLevel, 'operator');
  // Every API client is made from this KubeConfig, so every request gets the timeout.
  const kc = new KubeConfigWithTimeout(o.apiTimeout);
  if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
  else kc.loadFromDefault();

  const metrics = new OperatorMetrics();
  const controller = new Controller({
    kubeConfig: kc,
    ...(o.namespace ? { namespace: o.namespace } : {}),
    identity: o.identity,
    leaderElection: o.leaderElect
      ? {
          namespace: o.leaseNamespace,
          name: o.leaseName,
          leaseDurationSeconds: Math.ceil(o.leaseDuration / 1000),
          renewDeadlineMs: o.leaseRenewDeadline,
          retryPeriodMs: o.leaseRetryPeriod,
        }
      : null,
    resyncMs: o.resync,
    sidecar: { timeoutMs: o.sidecarTimeout, concurrency: o.sidecarConcurrency, attempts: o.sidecarAttempts },
    concurrency: o.concurrency,
    metrics,
    log,
  });
  let webhook: WebhookServer | undefined;
  if (o.webhookAddress) {
    try {
      webhook = await startWebhook(o, o.webhookAddress, kc, controller, metrics, log);
    } catch (err) {
      log.fatal({ address: formatHostPort(o.webhookAddress), reason: (err as Error).message }, 'cannot start the webhook listener');
      process.exit(1);
    }
  }
  // Ready once every cache has listed (a standby is ready too: it takes over warm) and the webhook
  // has a certificate, so that a Service sends admission requests only to replicas that can answer.
  const notReady = () => (!controller.isReady ? 'caches not synced' : webhook && !webhook.isReady ? 'webhook not serving yet' : undefined);
  const server = await serveProbes(o, notReady, metrics);
  const bound = server.address() as AddressInfo;
  log.info(
    { identity: o.identity, namespace: o.namespace || '(all)', metrics: `${bound.address}:${bound.port}`, webhook: webhook ? `${o.webhookAddress!.host}:${webhook.port}` : '(off)' },
    'operator starting',
  );
  await controller.start();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ reason: signal }, 'stopping');
    server.close();
    void Promise.all([controller.stop(), webhook?.stop()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function startWebhook(o: OperatorOptions, address: HostPort, kc: KubeConfig, controller: Controller, metrics: OperatorMetrics, log: Logger): Promise<WebhookServer> {
  const certificates = o.webhookCertDir
    ? new DirectoryCertificates(o.webhookCertDir)
    : new SecretCertificates({
        kubeConfig: kc,
        namespace: o.webhookServiceNamespace,
        secret: o.webhookCertSecret,
        webhookConfiguration: o.webhookConfiguration,
        names: servingNames(o.webhookService, o.webhookServiceNamespace, address.host),
        isLeader: () => controller.isLeader,
        log,
      });
  return WebhookServer.start({ kubeConfig: kc, address, image: o.sidecarImage, nativeSidecars: o.nativeSidecars, certificates, refreshMs: WEBHOOK_REFRESH_MS, metrics, log });
}

function serveProbes(o: OperatorOptions, notReady: () => string | undefined, metrics: OperatorMetrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const why = notReady();
      res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain' }).end(`${why ?? 'ok'}\n`);
    } else if (path === '/metrics') {
      void metrics.registry.metrics().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.metricsAddress.port, o.metricsAddress.host, () => resolve(server));
  });
}
