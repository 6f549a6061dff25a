// The sidecar on its own following a name that resolves to several addresses (dns.resolve): a DNS
// server on 127.0.0.1 that the test controls (test/dns-server.ts), three echo backends answering
// late on one port at 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback on Linux), a real sidecar.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AdminClient } from '../common/admin/client.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { TestDnsServer } from './dns-server.js';
import { eventually } from './kube/control-plane.js';
import { BackendProcess, freePort, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';

const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

let dns: TestDnsServer;
let port: number;
let backends: BackendProcess[];

interface Run {
  sidecar: Sidecar;
  url: string;
  /** Closed after the test. */
  clients: TestClient[];
}

/**
 * Runs `body` against a sidecar whose only backend entry is `ws://<name>:<port>/ws`, resolved
 * through the test's DNS server, where `name` starts as the three addresses with `ttl` seconds.
 */
async function withSidecar(name: string, ttl: number, dnsKeys: string, body: (run: Run) => Promise<void>): Promise<void> {
  dns.set(name, ADDRESSES, ttl);
  const { sidecar, url } = await startSidecar(
    'balancer: { algorithm: round-robin }\n' +
      `dns: { resolve: true, servers: ["${dns.address}"], minTtl: 200ms, timeout: 300ms${dnsKeys} }\n` +
      `backends:\n  - url: "ws://${name}:${port}/ws"\n`,
  );
  const clients: TestClient[] = [];
  try {
    await body({ sidecar, url, clients });
  } finally {
    dns.failure = null;
    for (const c of clients) c.close();
    await sidecar.stop(0);
  }
}

const idOf = (name: string, address: string) => `${name}/${address}:${port}`;
const backendIds = (sidecar: Sidecar) => [...sidecar.pool.backends.keys()].sort();
/** Which backend process answered: the echo backends tag each reply "<id>|". */
const answeredBy = (reply: string) => reply.slice(0, reply.indexOf('|'));

async function metric(sidecar: Sidecar, name: 'baton_dns_resolutions_total' | 'baton_dns_addresses' | 'baton_failovers_total', labels: Record<string, string>): Promise<number> {
  const { values } = await sidecar.metrics.registry.getSingleMetric(name)!.get();
  return values.find((v) => Object.entries(labels).every(([k, want]) => (v.labels as Record<string, unknown>)[k] === want))?.value ?? 0;
}

describe('dns: one backend per address of a name', () => {
  before(async () => {
    dns = await TestDnsServer.start();
    port = await freePort();
    // Late answers (1–200 ms, in order per connection): a migration must wait for them.
    backends = ADDRESSES.map((address, i) => new BackendProcess(`b${i + 1}`, port, ['--answer-delay', '1-200'], address));
    await Promise.all(backends.map((b) => b.start()));
  });
  after(async () => {
    await killAllBackends();
    await dns.close();
  });

  test('three addresses → three backends, dialled at their address with the name as Host; admin calls take the generated ids', async () => {
    const name = 'three.test';
    await withSidecar(name, 30, '', async ({ sidecar, url, clients }) => {
      assert.deepEqual(backendIds(sidecar), ADDRESSES.map((a) => idOf(name, a)));
      for (let i = 0; i < 6; i++) clients.push(await TestClient.connect(`${url}/chat`));
      for (const c of clients) c.ws.send('hi');
      await Promise.all(clients.map((c) => c.waitForCount(1)));
      const by = clients.map((c) => answeredBy(c.texts()[0]!)).sort();
      assert.deepEqual(by, ['b1', 'b1', 'b2', 'b2', 'b3', 'b3'], 'round-robin over the three addresses');
      for (const b of backends) {
        const seen = b.connections.filter((c) => c.path === '/ws/chat').map((c) => c.headers.host);
        assert.deepEqual(seen, [`${name}:${port}`, `${name}:${port}`], `${b.id} saw the name, not its address`);
      }
      assert.equal(await metric(sidecar, 'baton_dns_addresses', { name }), 3);
      assert.equal(await metric(sidecar, 'baton_dns_resolutions_total', { name, result: 'success' }), 1);

      // An id with '/' through the admin API (the client encodes it as %2F).
      const admin = new AdminClient({ baseUrl: `http://127.0.0.1:${sidecar.adminAddress!.port}` });
      const drained = idOf(name, '127.0.0.2');
      const drain = await admin.drainBackend(drained);
      assert.deepEqual([drain.id, drain.sessions], [drained, 2]);
      await waitFor(() => sidecar.pool.backends.get(drained)!.sessions === 0, 'its two sessions migrated');
      const listed = await admin.backends();
      assert.ok(listed.backends.some((b) => b.id === drained && b.state === 'draining'));
    });
  });

  test('an address removed: its sessions migrate with nothing lost; an address added takes new sessions', async () => {
    const name = 'moves.test';
    let pumps: ReturnType<typeof pump>[] = [];
    await withSidecar(name, 1, '', async ({ sidecar, url, clients }) => {
      for (let i = 0; i < 9; i++) clients.push(await TestClient.connect(`${url}/chat`));
      pumps = clients.map((c, i) => pump(c, `c${i}-`, 20));
      const gone = idOf(name, '127.0.0.2');
      assert.equal(sidecar.pool.backends.get(gone)?.sessions, 3);
      await waitFor(() => clients.every((c) => c.received.length >= 10), 'traffic running');
      dns.set(name, ['127.0.0.1', '127.0.0.3'], 1);
      await waitFor(() => !sidecar.pool.backends.has(gone), '127.0.0.2 drained and removed after the next resolution', 5000);
      const atSwitch = clients.map((c) => c.received.length);
      await waitFor(() => clients.every((c, i) => c.received.length >= atSwitch[i]! + 10), 'traffic running after the switch');
      const sent = pumps.map((p) => p.stop());
      await Promise.all(clients.map((c, i) => c.waitForCount(sent[i]!, 10_000)));
      clients.forEach((c, i) => {
        const echoed = c.texts().map((t) => t.slice(t.indexOf('|') + 1));
        assert.deepEqual(echoed, Array.from({ length: sent[i]! }, (_, k) => `c${i}-${k}`), `client ${i}: every message answered once, in order`);
      });
      const moved = clients.filter((c) => c.texts().some((t) => answeredBy(t) === 'b2'));
      assert.equal(moved.length, 3);
      assert.ok(moved.every((c) => answeredBy(c.texts().at(-1)!) !== 'b2'), 'the sessions of 127.0.0.2 ended on the other two');
      assert.equal(await metric(sidecar, 'baton_failovers_total', { reason: 'dns', result: 'resumed' }), 3, 'counted as planned moves for dns');

      dns.set(name, ADDRESSES, 1);
      await waitFor(() => sidecar.pool.backends.has(gone), '127.0.0.2 back after the next resolution', 5000);
      const fresh: TestClient[] = [];
      for (let i = 0; i < 3; i++) fresh.push(await TestClient.connect(`${url}/chat`));
      clients.push(...fresh);
      for (const c of fresh) c.ws.send('new');
      await Promise.all(fresh.map((c) => c.waitForCount(1)));
      assert.ok(fresh.some((c) => answeredBy(c.texts()[0]!) === 'b2'), 'the added address takes new sessions');
    }).finally(() => pumps.forEach((p) => p.stop()));
  });

  test('resolution failing (SERVFAIL, then no answer) through many retries: the backends stay and keep taking sessions', async () => {
    const name = 'flaky.test';
    const ids = ADDRESSES.map((a) => idOf(name, a));
    await withSidecar(name, 1, ', maxTtl: 2s', async ({ sidecar, url, clients }) => {
      clients.push(await TestClient.connect(`${url}/chat`));
      const failingSince = Date.now();
      const asked = dns.queryTimes(name).length;
      dns.failure = 'servfail';
      // Checked every second for 10 s: about seven retries, backed off to maxTtl. A whole minute of
      // failures is test/dns-plan.test.ts's, on a fake clock: the same decisions, without the wait.
      for (let second = 1; second <= 10; second++) {
        if (second === 5) dns.failure = 'silent';
        await new Promise((r) => setTimeout(r, failingSince + second * 1000 - Date.now()));
        assert.deepEqual(backendIds(sidecar), ids, `${second}s into the outage`);
        if (second % 3 === 0) {
          const c = await TestClient.connect(`${url}/chat`);
          clients.push(c);
          c.ws.send(`at ${second}s`);
          await c.waitForCount(1);
        }
      }
      const retries = dns.queryTimes(name).length - asked;
      // 0.2 + 0.4 + 0.8 + 1.6 s, then every 2 s (±20%), the silent half each plus the 300 ms timeout: about 7.
      assert.ok(retries >= 4 && retries <= 10, `retried with backoff up to maxTtl (2s): ${retries} retries in 10 s`);
      const failures = await metric(sidecar, 'baton_dns_resolutions_total', { name, result: 'failure' });
      assert.ok(failures >= retries - 1 && failures <= retries, `${failures} failures counted (one may be under way)`);
      assert.equal(await metric(sidecar, 'baton_dns_addresses', { name }), 3, 'the last good answer');
      clients[0]!.ws.send('still here');
      await clients[0]!.waitForCount(1);

      dns.failure = null;
      await eventually(
        async () => ((await metric(sidecar, 'baton_dns_resolutions_total', { name, result: 'success' })) > 1 ? true : undefined),
        'a good answer after the outage',
        3000,
      );
      assert.deepEqual(backendIds(sidecar), ids);
    });
  });

  test('the TTL sets the re-resolve interval, within dns.minTtl and dns.maxTtl', async () => {
    const name = 'ttl.test';
    await withSidecar(name, 1, ', maxTtl: 1500ms', async () => {
      /** The gaps between the next `n` queries for the name's A record. */
      const nextGaps = async (n: number) => {
        const from = dns.queryTimes(name).length;
        await waitFor(() => dns.queryTimes(name).length >= from + n + 1, `${n + 1} more queries`, (n + 2) * 2000);
        const times = dns.queryTimes(name).slice(from, from + n + 1);
        return times.slice(1).map((t, i) => t - times[i]!);
      };
      for (const gap of await nextGaps(2)) assert.ok(gap >= 950 && gap < 1300, `TTL 1s: ${gap} ms`);
      dns.set(name, ADDRESSES, 3600);
      await nextGaps(1); // the answer that still had TTL 1s
      for (const gap of await nextGaps(2)) assert.ok(gap >= 1450 && gap < 1800, `TTL 1h, capped by maxTtl 1.5s: ${gap} ms`);
    });
  });

  test('once the admin API owns the backend set (the operator), DNS no longer expands the file', async () => {
    const name = 'owned.test';
    await withSidecar(name, 0, ', refresh: 200ms', async ({ sidecar }) => {
      await waitFor(() => dns.queryTimes(name).length >= 3, 'resolved every 200 ms (TTL 0: dns.refresh)');
      const admin = new AdminClient({ baseUrl: `http://127.0.0.1:${sidecar.adminAddress!.port}` });
      await admin.putBackends({ generation: 1, backends: [{ id: 'only', url: `ws://127.0.0.1:${port}/ws` }] });
      const asked = dns.queryTimes(name).length;
      dns.set(name, ['127.0.0.3'], 0);
      await new Promise((r) => setTimeout(r, 1000)); // five refresh intervals: nothing may happen
      assert.ok(dns.queryTimes(name).length <= asked + 1, 'no resolution after the PUT (one may have been under way)');
      await waitFor(() => backendIds(sidecar).length === 1, 'the file-expanded backends drained (no sessions: at once)');
      assert.deepEqual(backendIds(sidecar), ['only']);
    });
  });
});
