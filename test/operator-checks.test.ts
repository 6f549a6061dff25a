// Pre-promotion checks (operator/checks.ts) against real peers on 127.0.0.1: a real Prometheus
// server answering PromQL, and node:http servers standing in for webhooks.
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { runChecks, type CheckContext, type CheckResult } from '../operator/checks.js';
import { validateSpec, type WsBalancerSpec } from '../operator/api/wsbalancer.js';
import { freePort } from './helpers.js';
import { ensurePrometheus, PrometheusServer } from './prometheus.js';

const ctx: CheckContext = { namespace: 'chat', name: 'gateway', activeRevision: 'rev-a', previewRevision: 'rev-b' };

/** A spec through validateSpec (so webhook.timeoutSeconds and the rest get their defaults). */
function specWith(prePromotionChecks: Record<string, unknown> | undefined): WsBalancerSpec {
  const checked = validateSpec({
    sidecarSelector: { matchLabels: { app: 'gateway' } },
    backend: { service: 'chat-backend', port: 'ws' },
    ...(prePromotionChecks ? { rollout: { blueGreen: { prePromotionChecks } } } : {}),
  });
  assert.ok(checked.ok, checked.ok ? '' : checked.message);
  return checked.spec;
}

/** An address where nothing listens (a port that was free a moment ago). */
async function deadAddress(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

interface ReceivedRequest {
  method: string;
  url: string;
  contentType: string | undefined;
  body: string;
}

/** A webhook on 127.0.0.1 that records each request, then lets `respond` answer it (or not). */
class Webhook {
  readonly requests: ReceivedRequest[] = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(respond: (res: ServerResponse) => void, path = '/hooks/pre-promotion'): Promise<Webhook> {
    let hook: Webhook | undefined;
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        hook!.requests.push({ method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], body: Buffer.concat(chunks).toString() });
        respond(res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    hook = new Webhook(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`);
    return hook;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const answer = (status: number, body = '') => (res: ServerResponse) => res.writeHead(status).end(body);

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function assertFailed(r: CheckResult, pattern: RegExp): void {
  assert.equal(r.result, 'failed', `expected a failure, got ${JSON.stringify(r)}`);
  assert.match(r.message, pattern);
}

describe('pre-promotion checks', () => {
  let prom: PrometheusServer;
  const prometheusCheck = (query: string) => specWith({ prometheus: { address: prom.url, query } });

  before(async () => {
    ensurePrometheus();
    // No scrape target is needed: every query below is self-contained. The one configured points nowhere.
    prom = await PrometheusServer.start(`127.0.0.1:${await freePort()}`);
  });
  after(async () => {
    await prom?.stop();
  });

  describe('prometheus', () => {
    test('vector(1) holds', async () => {
      assert.deepEqual(await runChecks(prometheusCheck('vector(1)'), ctx), { result: 'passed', message: 'prometheus passed' });
    });

    test('vector(0) fails, naming the query and the value', async () => {
      const r = await runChecks(prometheusCheck('vector(0)'), ctx);
      assert.deepEqual(r, { result: 'failed', message: 'prometheus: "vector(0)" returned 0' });
    });

    test('a series with any zero value fails, even next to non-zero ones', async () => {
      const r = await runChecks(prometheusCheck('label_replace(vector(1), "s", "x", "", "") or label_replace(vector(0), "s", "y", "", "")'), ctx);
      assertFailed(r, /^prometheus: ".*" returned 0$/);
    });

    test('a comparison that filters every series away fails as "returned no series"', async () => {
      const r = await runChecks(prometheusCheck('vector(1) > 2'), ctx);
      assert.deepEqual(r, { result: 'failed', message: 'prometheus: "vector(1) > 2" returned no series (the condition does not hold)' });
    });

    test('a non-zero scalar holds; a zero scalar fails', async () => {
      assert.equal((await runChecks(prometheusCheck('scalar(vector(3))'), ctx)).result, 'passed');
      const r = await runChecks(prometheusCheck('scalar(vector(0))'), ctx);
      assert.deepEqual(r, { result: 'failed', message: 'prometheus: "scalar(vector(0))" returned 0' });
    });

    test('NaN does not hold', async () => {
      const r = await runChecks(prometheusCheck('vector(NaN)'), ctx);
      assert.deepEqual(r, { result: 'failed', message: 'prometheus: "vector(NaN)" returned NaN' });
    });

    test('the form docs/crd.md recommends holds while the counter has no series: (sum(rate(x[1m])) or vector(0)) < bool 1', async () => {
      const query = '(sum(rate(baton_no_such_counter_total[1m])) or vector(0)) < bool 1';
      assert.deepEqual(await runChecks(prometheusCheck(query), ctx), { result: 'passed', message: 'prometheus passed' });
      // ...and fails when the bound is crossed (the bool comparison returns 0, not an empty result).
      const crossed = '(sum(rate(baton_no_such_counter_total[1m])) or vector(5)) < bool 1';
      assert.deepEqual(await runChecks(prometheusCheck(crossed), ctx), { result: 'failed', message: `prometheus: "${crossed}" returned 0` });
    });

    test('the plain comparison of a missing counter fails as "returned no series" (why the docs add `or vector(0)`)', async () => {
      const query = 'sum(rate(baton_no_such_counter_total[1m])) < 1';
      assertFailed(await runChecks(prometheusCheck(query), ctx), /^prometheus: ".*" returned no series/);
    });

    test("bad PromQL fails with Prometheus's own error text", async () => {
      const r = await runChecks(prometheusCheck('sum('), ctx);
      assertFailed(r, /^prometheus: query failed: .*parse error: unclosed left parenthesis/);
    });

    test('a range vector (matrix) fails as the wrong result type, whether empty or not', async () => {
      // An empty matrix: the type is checked before emptiness, so this is not "returned no series".
      const empty = await runChecks(prometheusCheck('baton_no_such_metric[1m]'), ctx);
      assert.deepEqual(empty, { result: 'failed', message: 'prometheus: query must return a vector or a scalar, got matrix' });
      // A matrix full of 1s (a subquery) fails just the same.
      const full = await runChecks(prometheusCheck('vector(1)[1m:10s]'), ctx);
      assert.deepEqual(full, { result: 'failed', message: 'prometheus: query must return a vector or a scalar, got matrix' });
    });

    test('a string result fails as the wrong result type', async () => {
      const r = await runChecks(prometheusCheck('"ok"'), ctx);
      assert.deepEqual(r, { result: 'failed', message: 'prometheus: query must return a vector or a scalar, got string' });
    });

    test('an address where nothing listens fails as "query failed"', async () => {
      const spec = specWith({ prometheus: { address: await deadAddress(), query: 'vector(1)' } });
      assertFailed(await runChecks(spec, ctx), /^prometheus: query failed: /);
    });

    test(
      'an address with a path prefix (Prometheus behind a path-routing proxy) keeps the prefix',
      async () => {
        // A proxy serving the real Prometheus under /prom/, as an ingress or --web.route-prefix would.
        const upstream = new URL(prom.url);
        const proxy = createServer((req, res) => {
          if (!req.url?.startsWith('/prom/')) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
          const fwd = request({ host: upstream.hostname, port: upstream.port, path: req.url.slice('/prom'.length), method: req.method, headers: req.headers }, (up) => {
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
          });
          fwd.on('error', () => res.writeHead(502).end());
          req.pipe(fwd);
        });
        await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
        try {
          const base = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/prom`;
          for (const address of [base, `${base}/`]) {
            const r = await runChecks(specWith({ prometheus: { address, query: 'vector(1)' } }), ctx);
            assert.deepEqual(r, { result: 'passed', message: 'prometheus passed' }, `address ${address}`);
          }
        } finally {
          proxy.closeAllConnections();
          await new Promise((r) => proxy.close(r));
        }
      },
    );
  });

  describe('webhook', () => {
    test('a 200 passes, and the webhook got a JSON POST of exactly {namespace, name, activeRevision, previewRevision}', async () => {
      const hook = await Webhook.start(answer(200, 'ok'));
      try {
        const r = await runChecks(specWith({ webhook: { url: `${hook.url}?source=baton` } }), ctx);
        assert.deepEqual(r, { result: 'passed', message: 'webhook passed' });
        assert.equal(hook.requests.length, 1);
        const [req] = hook.requests;
        assert.equal(req!.method, 'POST');
        assert.equal(req!.url, '/hooks/pre-promotion?source=baton', 'path and query string kept');
        assert.equal(req!.contentType, 'application/json');
        assert.deepEqual(JSON.parse(req!.body), { namespace: 'chat', name: 'gateway', activeRevision: 'rev-a', previewRevision: 'rev-b' });
      } finally {
        await hook.stop();
      }
    });

    test('a 204 passes', async () => {
      const hook = await Webhook.start(answer(204));
      try {
        assert.deepEqual(await runChecks(specWith({ webhook: { url: hook.url } }), ctx), { result: 'passed', message: 'webhook passed' });
        assert.equal(hook.requests.length, 1);
      } finally {
        await hook.stop();
      }
    });

    test('a 500 fails, naming the URL and the status', async () => {
      const hook = await Webhook.start(answer(500, 'rollout vetoed'));
      try {
        const r = await runChecks(specWith({ webhook: { url: hook.url } }), ctx);
        assert.deepEqual(r, { result: 'failed', message: `webhook: ${hook.url} answered 500` });
      } finally {
        await hook.stop();
      }
    });

    test('a webhook that never answers fails after timeoutSeconds', async () => {
      const hook = await Webhook.start(() => {}); // reads the request, never responds
      try {
        const spec = specWith({ webhook: { url: hook.url, timeoutSeconds: 1 } });
        assert.equal(spec.rollout.blueGreen.prePromotionChecks?.webhook?.timeoutSeconds, 1);
        const started = performance.now();
        const r = await runChecks(spec, ctx);
        const elapsed = performance.now() - started;
        assertFailed(r, new RegExp(`^webhook: ${escape(hook.url)} failed: .*time`, 'i'));
        assert.equal(hook.requests.length, 1, 'the request did arrive');
        assert.ok(elapsed >= 900, `gave up after ${elapsed.toFixed(0)} ms, before the 1 s timeout`);
        assert.ok(elapsed < 3000, `took ${elapsed.toFixed(0)} ms to give up on a 1 s timeout`);
      } finally {
        await hook.stop();
      }
    });

    test('timeoutSeconds defaults to 10', () => {
      assert.equal(specWith({ webhook: { url: 'http://127.0.0.1:1/' } }).rollout.blueGreen.prePromotionChecks?.webhook?.timeoutSeconds, 10);
    });

    test('connection refused fails', async () => {
      const url = `${await deadAddress()}/hook`;
      const r = await runChecks(specWith({ webhook: { url } }), ctx);
      assertFailed(r, new RegExp(`^webhook: ${escape(url)} failed: `));
    });
  });

  describe('both, and neither', () => {
    test('a failing webhook fails the checks even though prometheus passed', async () => {
      const hook = await Webhook.start(answer(503));
      try {
        const r = await runChecks(specWith({ prometheus: { address: prom.url, query: 'vector(1)' }, webhook: { url: hook.url } }), ctx);
        assert.deepEqual(r, { result: 'failed', message: `webhook: ${hook.url} answered 503` });
      } finally {
        await hook.stop();
      }
    });

    test('a failing prometheus check fails first, and the webhook is not called', async () => {
      const hook = await Webhook.start(answer(200));
      try {
        const r = await runChecks(specWith({ prometheus: { address: prom.url, query: 'vector(0)' }, webhook: { url: hook.url } }), ctx);
        assert.deepEqual(r, { result: 'failed', message: 'prometheus: "vector(0)" returned 0' });
        assert.equal(hook.requests.length, 0);
      } finally {
        await hook.stop();
      }
    });

    test('both passing: "prometheus and webhook passed"', async () => {
      const hook = await Webhook.start(answer(200));
      try {
        const r = await runChecks(specWith({ prometheus: { address: prom.url, query: 'vector(1)' }, webhook: { url: hook.url } }), ctx);
        assert.deepEqual(r, { result: 'passed', message: 'prometheus and webhook passed' });
        assert.equal(hook.requests.length, 1);
      } finally {
        await hook.stop();
      }
    });

    test('no checks configured passes as "no checks" (with or without an empty prePromotionChecks)', async () => {
      assert.deepEqual(await runChecks(specWith(undefined), ctx), { result: 'passed', message: 'no checks' });
      assert.deepEqual(await runChecks(specWith({}), ctx), { result: 'passed', message: 'no checks' });
    });
  });
});
