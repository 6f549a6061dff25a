// Metrics as Prometheus sees them: valid exposition, values that move with what happens, a real scrape.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AdminClient } from '../common/admin/client.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, type EchoBackend } from '../tools/echo-backend.js';
import { BackendProcess, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';
import { ensurePrometheus, PrometheusServer, promtoolCheckMetrics } from './prometheus.js';

/** Parses exposition text into "name{labels}" → value (labels in the order written). */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function scrape(sidecar: Sidecar): Promise<{ text: string; values: Map<string, number> }> {
  const res = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/metrics`);
  const text = await res.text();
  return { text, values: samples(text) };
}

const value = (m: Map<string, number>, key: string) => m.get(key) ?? 0;

describe('metrics', () => {
  before(ensurePrometheus);
  after(killAllBackends);

  test('the exposition passes promtool, and counters move as sessions, messages, failovers and dials happen', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    const { sidecar, url } = await startSidecar(
      `balancer: { algorithm: round-robin }\nbackends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n  - { id: dead, url: "ws://127.0.0.1:1", standby: true }\n` +
        'session: { pingInterval: 200ms, pongTimeout: 300ms }\nfailover: { backoff: { initial: 20ms, max: 100ms, multiplier: 2, jitter: 0 } }\n',
    );
    try {
      const before = await scrape(sidecar);
      assert.equal(promtoolCheckMetrics(before.text), '', 'promtool check metrics (idle)');
      assert.ok(before.values.has('process_resident_memory_bytes'), 'default process metrics included');

      const c = await TestClient.connect(`${url}/m`);
      for (let i = 0; i < 10; i++) c.ws.send('x'.repeat(100));
      await c.waitForCount(10);
      let m = (await scrape(sidecar)).values;
      assert.equal(value(m, 'baton_sessions_opened_total'), 1);
      assert.equal(value(m, 'baton_sessions_active{backend="a"}'), 1);
      assert.equal(value(m, 'baton_sessions{state="open"}'), 1);
      assert.equal(value(m, 'baton_messages_total{direction="in"}'), 10);
      assert.equal(value(m, 'baton_messages_total{direction="out"}'), 10);
      assert.equal(value(m, 'baton_bytes_total{direction="in"}'), 1000);
      assert.equal(value(m, 'baton_bytes_total{direction="out"}'), 1020, 'tagged echoes are "a|" + 100 bytes');
      assert.equal(value(m, 'baton_message_size_bytes_bucket{direction="in",le="256"}'), 10);
      assert.equal(value(m, 'baton_message_size_bytes_bucket{direction="in",le="64"}'), 0);
      assert.equal(value(m, 'baton_message_size_bytes_count{direction="out"}'), 10);
      assert.equal(value(m, 'baton_backend_dials_total{backend="a",result="success"}'), 1);
      assert.equal(value(m, 'baton_backend_state{backend="a",state="enabled"}'), 1);
      assert.equal(value(m, 'baton_backend_health{backend="a",status="healthy"}'), 1);

      // Kill a: the session fails over (to b, or via the dead standby first).
      await a.signal('SIGKILL');
      await waitFor(() => [...sidecar.sessions.values()][0]?.backend?.id === 'b', 'session on b');
      c.ws.send('after');
      await waitFor(() => c.texts().includes('b|after'), 'echo from b');
      const after = await scrape(sidecar);
      assert.equal(promtoolCheckMetrics(after.text), '', 'promtool check metrics (after a failover)');
      m = after.values;
      assert.equal(value(m, 'baton_failovers_total{reason="error",result="resumed"}'), 1);
      assert.equal(value(m, 'baton_failover_gap_seconds_count{reason="error"}'), 1);
      assert.ok(value(m, 'baton_failover_gap_seconds_sum{reason="error"}') > 0);
      assert.equal(value(m, 'baton_sessions_active{backend="b"}'), 1, 'the backend label follows the session');
      assert.equal(value(m, 'baton_sessions_active{backend="a"}'), 0);
      assert.equal(value(m, 'baton_backend_dials_total{backend="b",result="success"}'), 1);
      const deadFailures = value(m, 'baton_backend_dial_failures_total{backend="dead",reason="connect"}');
      const aFailures = value(m, 'baton_backend_dial_failures_total{backend="a",reason="connect"}');
      assert.equal(value(m, 'baton_backend_dials_total{backend="dead",result="failure"}'), deadFailures);
      assert.ok(deadFailures + aFailures <= 2, 'at most one try of each dead backend before b answered');

      c.close();
      await waitFor(() => sidecar.sessions.size === 0, 'session closed');
      m = (await scrape(sidecar)).values;
      assert.equal(value(m, 'baton_sessions_closed_total{reason="client-closed"}'), 1);
      assert.equal(value(m, 'baton_messages_total{direction="in"}'), 11, 'ended sessions stay counted');
      assert.equal(value(m, 'baton_admin_requests_total{route="GET /metrics",status="200"}'), 3, 'the three earlier scrapes (this one counts after it is served)');
    } finally {
      await sidecar.stop(0);
    }
  });

  test('draining a backend with 200 live sessions under traffic: all move, nothing lost, 200 migrations counted', async () => {
    const a = await startEchoBackend({ id: 'a', tag: true });
    const b = await startEchoBackend({ id: 'b', tag: true });
    const backends: EchoBackend[] = [a, b];
    const token = 'drain-token';
    const { sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}" }\nsession: { pingInterval: 5s, pongTimeout: 5s }\n`, {
      BATON_ADMIN_TOKEN: token,
    });
    const admin = new AdminClient({ baseUrl: `http://127.0.0.1:${sidecar.adminAddress!.port}`, token });
    try {
      const clients: TestClient[] = [];
      for (let i = 0; i < 200; i++) clients.push(await TestClient.connect(`${url}/load/${i}`));
      assert.equal(sidecar.pool.backends.get('a')!.sessions, 200);
      await admin.addBackend({ id: 'b', url: b.url });
      const pumps = clients.map((c) => pump(c, 'm', 100));
      await waitFor(() => clients.every((c) => c.received.length >= 3), 'traffic flowing on every session', 10000);

      const drain = await admin.drainBackend('a', { rate: 200 });
      assert.equal(drain.sessions, 200);
      await waitFor(() => sidecar.pool.backends.get('a')!.sessions === 0, 'a drained', 20000, 50);
      await waitFor(() => clients.every((c) => c.texts().some((t) => t.startsWith('b|'))), 'every session answered by b', 10000);
      const sent = pumps.map((p) => p.stop());
      await waitFor(() => clients.every((c, i) => c.received.length === sent[i]), 'every message answered', 15000, 50);

      clients.forEach((c, i) => {
        assert.equal(c.closed, null, `client ${i} stayed connected`);
        const ns = c.texts().map((t) => Number(t.split('|')[1]!.slice(1)));
        assert.deepEqual(ns, Array.from({ length: sent[i]! }, (_, k) => k), `client ${i}: every message once, in order`);
      });
      assert.equal((await admin.backends()).backends.find((x) => x.id === 'a')!.sessions, 0);
      const m = (await scrape(sidecar)).values;
      assert.equal(value(m, 'baton_migrations_total{result="migrated"}'), 200);
      assert.equal(value(m, 'baton_failovers_total{reason="drain",result="resumed"}'), 200);
      assert.equal(value(m, 'baton_sessions_active{backend="b"}'), 200);
      assert.equal(value(m, 'baton_backend_state{backend="a",state="draining"}'), 1);
      clients.forEach((c) => c.close());
    } finally {
      await sidecar.stop(0);
      await Promise.all(backends.map((x) => x.close()));
    }
  });

  test('a real Prometheus server scrapes the sidecar and sees its series', async () => {
    const a = await startEchoBackend({ id: 'a', tag: true });
    const { sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}" }\n`);
    const prometheus = await PrometheusServer.start(`127.0.0.1:${sidecar.adminAddress!.port}`);
    try {
      const c = await TestClient.connect(`${url}/p`);
      c.ws.send('hello');
      await c.waitForCount(1);
      let result: Awaited<ReturnType<PrometheusServer['query']>> = [];
      const deadline = Date.now() + 15000;
      while (Date.now() < deadline) {
        result = await prometheus.query('baton_messages_total{direction="in"}');
        if (result.length === 1 && result[0]!.value[1] === '1') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(result.length, 1, 'the series was scraped');
      assert.equal(result[0]!.value[1], '1');
      assert.equal(result[0]!.metric.job, 'baton');
      const up = await prometheus.query('up{job="baton"}');
      assert.equal(up[0]!.value[1], '1', 'Prometheus sees the target up');
      const active = await prometheus.query('baton_sessions_active{backend="a"}');
      assert.equal(active[0]!.value[1], '1');
      c.close();
    } finally {
      await prometheus.stop();
      await sidecar.stop(0);
      await a.close();
    }
  });
});
