import { KubeConfig } from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../sidecar/logger.js';
import { Controller } from './controller.js';
import { OperatorMetrics } from './metrics.js';
import { parseOptions, type OperatorOptions } from './options.js';

/**
 * `baton operator [--flag value ...]`: check the options (exit 2 naming each bad one), serve
 * /metrics, /healthz and /readyz, run the controller; SIGTERM hands the lease over and exits 0.
 */
export async function runOperator(flags: Record<string, string | undefined>): Promise<void> {
  const parsed = parseOptions(flags, process.env);
  if (!parsed.ok) {
    process.stderr.write(`baton operator: invalid options:\n${parsed.problems.map((p) => `  - ${p}`).join('\n')}\n`);
    process.exit(2);
  }
  const o = parsed.options;
  const log = createLogger(o.logLevel, 'operator');
  const kc = new KubeConfig();
  if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
  else kc.loadFromDefault();

  const metrics = new OperatorMetrics();
  const controller = new Controller({
    kubeConfig: kc,
    ...(o.namespace ? { namespace: o.namespace } : {}),
    identity: o.identity,
    leaderElection: o.leaderElect
      ? { namespace: o.leaseNamespace, name: o.leaseName, leaseDurationSeconds: Math.ceil(o.leaseDuration / 1000), retryPeriodMs: o.leaseRetryPeriod }
      : null,
    resyncMs: o.resync,
    sidecar: { timeoutMs: o.sidecarTimeout, concurrency: o.sidecarConcurrency, attempts: o.sidecarAttempts },
    concurrency: o.concurrency,
    metrics,
    log,
  });
  const server = await serveProbes(o, controller, metrics);
  const bound = server.address() as AddressInfo;
  log.info({ identity: o.identity, namespace: o.namespace || '(all)', metrics: `${bound.address}:${bound.port}` }, 'operator starting');
  await controller.start();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ reason: signal }, 'stopping');
    server.close();
    void controller.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function serveProbes(o: OperatorOptions, controller: Controller, metrics: OperatorMetrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      // Ready once every cache has listed: a standby is ready too (it takes over warm).
      const ready = controller.isReady;
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ok\n' : 'caches not synced\n');
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
