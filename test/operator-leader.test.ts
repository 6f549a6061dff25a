// Leader election as client-go does it (operator/leader.ts) and the timeouts that bound every API
// request (operator/kube-client.ts). The decisions are pure and run on a fake clock, transition
// by transition; the elector and the timeouts then run against a local server that stops answering.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { CoordinationV1Api, KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubeConfigWithTimeout, requestTimeout } from '../operator/kube-client.js';
import { JITTER_FACTOR, LeaderElector, leadsAt, leaseAction, leaseDurationProblems, observe, type ObservedRecord } from '../operator/leader.js';
import { parseOptions } from '../operator/options.js';
import { AdminClient } from '../common/admin/client.js';
import { waitFor } from './helpers.js';

const S = 1000;
const silent = pino({ level: 'silent' });

/** A lease as the API server returns it; `renewTime` is the holder's wall clock, whatever ours says. */
const lease = (holder: string, renewTime: string, extra: Partial<NonNullable<V1Lease['spec']>> = {}): V1Lease =>
  ({ metadata: { name: 'baton-operator', resourceVersion: '1' }, spec: { holderIdentity: holder, leaseDurationSeconds: 15, renewTime, acquireTime: renewTime, leaseTransitions: 0, ...extra } }) as unknown as V1Lease;

describe('leader election: what a replica does with the lease it observed', () => {
  test('no lease: create it', () => {
    assert.equal(leaseAction(null, 'b', 0), 'create');
  });

  test('a follower takes over only once the record has not changed for the lease duration on its own clock', () => {
    // B first sees A's record at t=100 s (its own monotonic clock).
    let seen: ObservedRecord = observe(null, lease('a', '2026-01-01T00:00:00.000000Z'), 100 * S);
    assert.equal(leaseAction(seen, 'b', 100 * S), 'follow');
    // The same record read again later: still observed since 100 s.
    seen = observe(seen, lease('a', '2026-01-01T00:00:00.000000Z'), 110 * S);
    assert.equal(seen.since, 100 * S);
    assert.equal(leaseAction(seen, 'b', 115 * S - 1), 'follow');
    assert.equal(leaseAction(seen, 'b', 115 * S), 'takeover');
  });

  test('every renewal restarts the wait, however old the renewTime looks on the local clock', () => {
    // A's clock is a day behind B's: its renewTime is long "expired" by B's wall clock, and never matters.
    let seen = observe(null, lease('a', '2025-12-31T00:00:00.000000Z'), 0);
    assert.equal(leaseAction(seen, 'b', 0), 'follow');
    seen = observe(seen, lease('a', '2025-12-31T00:00:02.000000Z'), 14 * S);
    assert.equal(seen.since, 14 * S, 'a changed record is observed anew');
    assert.equal(leaseAction(seen, 'b', 28 * S), 'follow');
    assert.equal(leaseAction(seen, 'b', 29 * S), 'takeover');
  });

  test("the holder's own lease duration counts, and a change of holder is a change", () => {
    let seen = observe(null, lease('a', '2026-01-01T00:00:00.000000Z', { leaseDurationSeconds: 3 }), 0);
    assert.equal(leaseAction(seen, 'b', 3 * S - 1), 'follow');
    assert.equal(leaseAction(seen, 'b', 3 * S), 'takeover');
    seen = observe(seen, lease('c', '2026-01-01T00:00:00.000000Z', { leaseDurationSeconds: 3 }), 3 * S);
    assert.equal(leaseAction(seen, 'b', 3 * S), 'follow');
  });

  test('a released lease (no holder) is taken at once; our own is renewed', () => {
    assert.equal(leaseAction(observe(null, lease('', '2026-01-01T00:00:00.000000Z'), 0), 'b', 0), 'takeover');
    assert.equal(leaseAction(observe(null, lease('b', '2026-01-01T00:00:00.000000Z'), 0), 'b', 0), 'renew');
  });

  test('the leader leads until the renew deadline after it sent its last successful write', () => {
    assert.equal(leadsAt(null, 10 * S, 0), false);
    assert.equal(leadsAt(50 * S, 10 * S, 50 * S), true);
    assert.equal(leadsAt(50 * S, 10 * S, 60 * S - 1), true);
    assert.equal(leadsAt(50 * S, 10 * S, 60 * S), false);
  });

  test("the durations follow client-go's rule: lease duration > renew deadline > retry period × jitter factor", () => {
    assert.deepEqual(leaseDurationProblems({ leaseDurationMs: 15 * S, renewDeadlineMs: 10 * S, retryPeriodMs: 2 * S }), []);
    const [a] = leaseDurationProblems({ leaseDurationMs: 10 * S, renewDeadlineMs: 10 * S, retryPeriodMs: 2 * S });
    assert.match(a!, /--lease-duration \(10s\) must be longer than --lease-renew-deadline \(10s\)/);
    const [b] = leaseDurationProblems({ leaseDurationMs: 15 * S, renewDeadlineMs: 2400, retryPeriodMs: 2 * S });
    assert.match(b!, new RegExp(`--lease-renew-deadline \\(2400ms\\) must be longer than ${JITTER_FACTOR} × --lease-retry-period \\(2s\\)`));

    const defaults = parseOptions({}, {});
    assert.ok(defaults.ok);
    assert.deepEqual([defaults.options.leaseDuration, defaults.options.leaseRenewDeadline, defaults.options.leaseRetryPeriod], [15 * S, 10 * S, 2 * S]);
    const bad = parseOptions({ 'lease-renew-deadline': '20s' }, {});
    assert.ok(!bad.ok);
    assert.match(bad.problems.join('\n'), /--lease-duration \(15s\) must be longer than --lease-renew-deadline \(20s\)/);
    assert.ok(parseOptions({ 'lease-renew-deadline': '20s', 'leader-elect': 'false' }, {}).ok, 'no election, no rule');
  });
});

/** A local HTTP "API server" whose handler the test swaps; `stall` holds every request open, unanswered. */
class StubApiServer {
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void = (_req, res) => res.writeHead(404).end('{}');
  private readonly held: ServerResponse[] = [];
  private constructor(readonly server: Server) {}

  static async start(): Promise<StubApiServer> {
    const stub: StubApiServer = new StubApiServer(
      createServer((req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => stub.handler(req, res, body));
      }),
    );
    await new Promise<void>((r) => stub.server.listen(0, '127.0.0.1', r));
    return stub;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stall(): void {
    this.handler = (_req, res) => this.held.push(res);
  }

  kubeConfig(timeoutMs?: number): KubeConfig {
    const kc = timeoutMs === undefined ? new KubeConfig() : new KubeConfigWithTimeout(timeoutMs);
    kc.loadFromOptions({
      clusters: [{ name: 'stub', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'stub' }],
      contexts: [{ name: 'stub', cluster: 'stub', user: 'stub' }],
      currentContext: 'stub',
    });
    return kc;
  }

  async close(): Promise<void> {
    for (const res of this.held) res.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

describe('API request timeouts', () => {
  const stubs: StubApiServer[] = [];
  const stub = async () => {
    const s = await StubApiServer.start();
    stubs.push(s);
    return s;
  };
  after(async () => {
    for (const s of stubs) await s.close();
  });

  const elapsed = async (call: () => Promise<unknown>): Promise<{ ms: number; err: Error }> => {
    const t0 = Date.now();
    const err = await call().then(
      () => assert.fail('the request succeeded'),
      (e: Error) => e,
    );
    return { ms: Date.now() - t0, err };
  };

  test('a request to a server that never answers ends after the timeout (headers)', async () => {
    const s = await stub();
    s.stall();
    const { ms, err } = await elapsed(() => s.kubeConfig(300).makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: 'ns', name: 'l' }));
    assert.ok(ms >= 280 && ms < 2000, `ended after ${ms} ms`);
    assert.match(String(err), /abort|timeout/i);
  });

  test('a request whose body stalls after the headers ends after the timeout too', async () => {
    const s = await stub();
    s.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"metadata": {'); // and nothing more
    };
    const { ms } = await elapsed(() => s.kubeConfig(300).makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: 'ns', name: 'l' }));
    assert.ok(ms >= 280 && ms < 2000, `ended after ${ms} ms`);
  });

  test('one request can be given its own timeout, shorter or longer than the KubeConfig one', async () => {
    const s = await stub();
    s.stall();
    const api = s.kubeConfig(5000).makeApiClient(CoordinationV1Api);
    const { ms } = await elapsed(() => api.readNamespacedLease({ namespace: 'ns', name: 'l' }, requestTimeout(200)));
    assert.ok(ms >= 180 && ms < 2000, `ended after ${ms} ms`);
  });

  test('a sidecar admin call ends after --sidecar-timeout, on stalled headers and on a stalled body', async () => {
    const s = await stub();
    s.stall();
    const admin = new AdminClient({ baseUrl: s.url, timeoutMs: 300 });
    assert.ok((await elapsed(() => admin.status())).ms < 2000);
    s.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"backends": [');
    };
    const { ms } = await elapsed(() => admin.backends());
    assert.ok(ms >= 280 && ms < 2000, `ended after ${ms} ms`);
  });

  test('the elector stops leading at the renew deadline although its renew request hangs, and never before', async (t) => {
    const s = await stub();
    let stored: V1Lease | undefined;
    let version = 0;
    let lastWriteAt = 0;
    s.handler = (req, res, body) => {
      const json = { 'content-type': 'application/json' };
      if (req.method === 'GET') return stored ? res.writeHead(200, json).end(JSON.stringify(stored)) : res.writeHead(404, json).end('{"kind":"Status","code":404}');
      lastWriteAt = Date.now();
      stored = JSON.parse(body) as V1Lease;
      stored.metadata = { ...stored.metadata, resourceVersion: String(++version) };
      res.writeHead(req.method === 'POST' ? 201 : 200, json).end(JSON.stringify(stored));
    };
    const changes: Array<{ leading: boolean; at: number }> = [];
    const elector = new LeaderElector(
      s.kubeConfig(),
      { namespace: 'ns', name: 'l', identity: 'a', leaseDurationSeconds: 2, renewDeadlineMs: 600, retryPeriodMs: 100 },
      silent,
      (leading) => changes.push({ leading, at: Date.now() }),
    );
    elector.start();
    t.after(() => elector.stop());
    await waitFor(() => elector.isLeader, 'a leads', 3000);
    await waitFor(() => version >= 3, 'a renewed twice', 3000);
    s.stall();
    await waitFor(() => !elector.isLeader, 'a stops leading', 3000);
    const lostAt = Date.now();
    // Its last write was sent a moment before it arrived here (the deadline counts from the sending);
    // the margins are for a loaded machine, the exact instants are the pure tests' business.
    assert.ok(lostAt - lastWriteAt <= 600 + 150, `led ${lostAt - lastWriteAt} ms after its last write arrived`);
    assert.ok(lostAt - lastWriteAt >= 600 - 200, `stopped ${lostAt - lastWriteAt} ms after its last write: before the deadline`);
    await waitFor(() => changes.length === 2, 'onChange(false)', 1000);
    assert.deepEqual(
      changes.map((c) => c.leading),
      [true, false],
    );
    assert.ok(changes[1]!.at - lostAt < 150, 'onChange(false) comes at the deadline, not when the hung request ends');
  });
});
