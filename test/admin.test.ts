// The admin API, route by route, as the operator and a DevOps script see it.
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { AdminApiError, AdminClient } from '../common/admin/client.js';
import type { ErrorBody } from '../common/admin/contract.js';
import { parseConfig } from '../sidecar/config/load.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, type EchoBackend } from '../tools/echo-backend.js';
import { startSidecar, TestClient, waitFor } from './helpers.js';

const TOKEN = 'test-token-0123456789';

/** A raw request: status and parsed JSON body. */
async function call(base: string, method: string, path: string, opts: { token?: string | null; body?: string | object } = {}) {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const res = await fetch(`${base}${path}`, { method, headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, contentType: res.headers.get('content-type') ?? '' };
}

async function expectError(p: Promise<{ status: number; json: unknown }>, status: number, code: string, field?: string): Promise<ErrorBody> {
  const r = await p;
  assert.equal(r.status, status, JSON.stringify(r.json));
  const body = r.json as ErrorBody;
  assert.equal(body.error.code, code, JSON.stringify(body));
  assert.equal(typeof body.error.message, 'string');
  if (field !== undefined) assert.equal(body.error.field, field, JSON.stringify(body));
  return body;
}

describe('admin API', () => {
  let a: EchoBackend;
  let b: EchoBackend;
  let sidecar: Sidecar;
  let url: string;
  let base: string;
  let admin: AdminClient;

  before(async () => {
    a = await startEchoBackend({ id: 'a', tag: true });
    b = await startEchoBackend({ id: 'b', tag: true });
  });
  beforeEach(async () => {
    await sidecar?.stop(0);
    ({ sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}", labels: { rev: blue } }\n`, { BATON_ADMIN_TOKEN: TOKEN }));
    base = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
    admin = new AdminClient({ baseUrl: base, token: TOKEN });
  });
  after(async () => {
    await sidecar?.stop(0);
    await a.close();
    await b.close();
  });

  const ROUTES: [string, string][] = [
    ['GET', '/v1/status'],
    ['GET', '/v1/backends'],
    ['POST', '/v1/backends'],
    ['PUT', '/v1/backends'],
    ['POST', '/v1/backends/a/enable'],
    ['POST', '/v1/backends/a/disable'],
    ['POST', '/v1/backends/a/drain'],
    ['POST', '/v1/backends/a/reset'],
    ['DELETE', '/v1/backends/a'],
    ['GET', '/v1/sessions'],
    ['DELETE', '/v1/sessions/x'],
    ['POST', '/v1/sessions/x/migrate'],
    ['POST', '/v1/frontend/pause'],
    ['POST', '/v1/frontend/resume'],
  ];

  test('every /v1 route needs the bearer token: missing or wrong gets 401 JSON and reveals nothing', async () => {
    for (const [method, path] of ROUTES) {
      const missing = await expectError(call(base, method, path, { token: null }), 401, 'unauthorized');
      const wrong = await expectError(call(base, method, path, { token: 'nope' }), 401, 'unauthorized');
      assert.deepEqual(missing, wrong, 'the same answer whatever the route');
    }
    await expectError(call(base, 'GET', '/v1/no-such-route', { token: null }), 401, 'unauthorized');
    assert.equal(sidecar.pool.backends.get('a')!.state, 'enabled', 'nothing changed');
  });

  test('healthz, readyz and metrics need no token', async () => {
    assert.equal((await call(base, 'GET', '/healthz', { token: null })).status, 200);
    assert.deepEqual((await call(base, 'GET', '/readyz', { token: null })).json, { ready: true });
    const metrics = await call(base, 'GET', '/metrics', { token: null });
    assert.equal(metrics.status, 200);
    assert.match(metrics.contentType, /text\/plain/);
    assert.match(String(metrics.json), /baton_sessions_active/);
  });

  test('GET /v1/status and /v1/backends describe the sidecar', async () => {
    const c = await TestClient.connect(`${url}/s`);
    const status = await admin.status();
    assert.equal(status.sessions.total, 1);
    assert.deepEqual(status.sessions.byBackend, { a: 1 });
    assert.equal(status.sessions.byState.open, 1);
    assert.equal(status.frontendPaused, false);
    assert.equal(status.backendsGeneration, 0);
    assert.match(status.version, /^\d+\.\d+\.\d+/);
    const backends = await admin.backends();
    assert.deepEqual(backends, {
      generation: 0,
      backends: [
        {
          id: 'a',
          url: a.url,
          weight: 1,
          standby: false,
          labels: { rev: 'blue' },
          state: 'enabled',
          health: { status: 'healthy', phi: 0, consecutiveFailures: 0 },
          sessions: 1,
        },
      ],
    });
    c.close();
  });

  test('POST /v1/backends adds one (201); duplicate id 409; each bad field 400 naming it', async () => {
    const added = await admin.addBackend({ id: 'b', url: b.url, weight: 5, labels: { rev: 'green' } });
    assert.equal(added.id, 'b');
    assert.equal(added.weight, 5);
    assert.equal(sidecar.pool.backends.get('b')!.spec.weight, 5);
    await expectError(call(base, 'POST', '/v1/backends', { body: { id: 'b', url: b.url } }), 409, 'conflict', 'id');
    const bad: [object, string][] = [
      [{ id: 'c', url: 'http://x:1' }, 'url'],
      [{ id: 'c', url: 'not a url' }, 'url'],
      [{ id: 'c', url: 7 }, 'url'],
      [{ id: 'c' }, 'url'],
      [{ id: 'bad id!', url: b.url }, 'id'],
      [{ id: 12, url: b.url }, 'id'],
      [{ id: 'c', url: b.url, weight: 0 }, 'weight'],
      [{ id: 'c', url: b.url, weight: 1.5 }, 'weight'],
      [{ id: 'c', url: b.url, weight: '3' }, 'weight'],
      [{ id: 'c', url: b.url, standby: 'yes' }, 'standby'],
      [{ id: 'c', url: b.url, labels: ['x'] }, 'labels'],
      [{ id: 'c', url: b.url, labels: { rev: 1 } }, 'labels.rev'],
      [{ id: 'c', url: b.url, state: 'on' }, 'state'],
      [{ id: 'c', url: b.url, colour: 'red' }, 'colour'],
    ];
    for (const [body, field] of bad) await expectError(call(base, 'POST', '/v1/backends', { body }), 400, 'invalid_field', field);
    await expectError(call(base, 'POST', '/v1/backends', { body: '{"id": "c",' }), 400, 'bad_json');
    await expectError(call(base, 'POST', '/v1/backends', { body: '' }), 400, 'bad_json');
    await expectError(call(base, 'POST', '/v1/backends', { body: '[]' }), 400, 'invalid_field');
    assert.deepEqual([...sidecar.pool.backends.keys()], ['a', 'b'], 'no bad request added anything');
  });

  test('PUT /v1/backends replaces the set, is idempotent, refuses a stale generation, and drains removed backends', async () => {
    const c = await TestClient.connect(`${url}/put`);
    const body = { generation: 3, backends: [{ id: 'b', url: b.url, labels: { rev: 'green' } }] };
    const first = await admin.putBackends(body);
    assert.deepEqual(first, { generation: 3, settingsChanged: false, added: ['b'], updated: [], removed: ['a'], changed: true });
    // The session on the removed backend migrates, then the backend is gone.
    await waitFor(() => !sidecar.pool.backends.has('a'), 'a removed after its session moved');
    c.ws.send('after put');
    await waitFor(() => c.texts().includes('b|after put'), 'session now on b');
    assert.equal(c.closed, null);
    const again = await admin.putBackends(body);
    assert.deepEqual(again, { generation: 3, settingsChanged: false, added: [], updated: [], removed: [], changed: false });
    assert.equal((await admin.backends()).generation, 3);
    await expectError(call(base, 'PUT', '/v1/backends', { body: { generation: 2, backends: [] } }), 409, 'stale_generation', 'generation');
    assert.deepEqual([...sidecar.pool.backends.keys()], ['b'], 'the stale write changed nothing');
    const updated = await admin.putBackends({ generation: 4, backends: [{ id: 'b', url: b.url, weight: 2, state: 'disabled' }] });
    assert.deepEqual(updated.updated, ['b']);
    assert.equal(sidecar.pool.backends.get('b')!.state, 'disabled');
    const bad: [object, string][] = [
      [{ backends: [] }, 'generation'],
      [{ generation: '5', backends: [] }, 'generation'],
      [{ generation: 0, backends: [] }, 'generation'],
      [{ generation: 5 }, 'backends'],
      [{ generation: 5, backends: {} }, 'backends'],
      [{ generation: 5, backends: [{ id: 'x', url: 'ftp://x' }] }, 'backends[0].url'],
      [{ generation: 5, backends: [{ id: 'x', url: b.url }, { id: 'x', url: a.url }] }, 'backends[1].id'],
      [{ generation: 5, backends: [], extra: 1 }, 'extra'],
    ];
    for (const [b2, field] of bad) await expectError(call(base, 'PUT', '/v1/backends', { body: b2 }), 400, 'invalid_field', field);
    await expectError(call(base, 'PUT', '/v1/backends', { body: 'nope' }), 400, 'bad_json');
    c.close();
  });

  test('enable, disable, reset and unknown ids', async () => {
    await admin.addBackend({ id: 'b', url: b.url });
    assert.equal((await admin.disableBackend('a')).state, 'disabled');
    for (let i = 0; i < 3; i++) {
      const c = await TestClient.connect(`${url}/d${i}`);
      c.ws.send('x');
      await c.waitForCount(1);
      assert.equal(c.texts()[0], 'b|x', 'a disabled backend gets no new sessions');
      c.close();
    }
    assert.equal((await admin.enableBackend('a')).state, 'enabled');
    const tripped = sidecar.pool.backends.get('b')!;
    for (let i = 0; i < 10; i++) tripped.breaker.onFailure(Date.now());
    const reset = await admin.resetBackend('b');
    assert.deepEqual(reset.health, { status: 'healthy', phi: 0, consecutiveFailures: 0 });
    for (const [method, path] of [
      ['POST', '/v1/backends/zz/enable'],
      ['POST', '/v1/backends/zz/disable'],
      ['POST', '/v1/backends/zz/drain'],
      ['POST', '/v1/backends/zz/reset'],
      ['DELETE', '/v1/backends/zz'],
      ['DELETE', '/v1/sessions/zz'],
      ['POST', '/v1/sessions/zz/migrate'],
    ] as const) {
      await expectError(call(base, method, path), 404, 'not_found');
    }
    await expectError(call(base, 'PATCH', '/v1/backends'), 405, 'method_not_allowed');
  });

  test('drain moves sessions off (202), rate and deadline are validated; DELETE removes after draining', async () => {
    await admin.addBackend({ id: 'b', url: b.url, standby: true });
    const clients = await Promise.all(Array.from({ length: 4 }, (_, i) => TestClient.connect(`${url}/dr${i}`)));
    assert.equal(sidecar.pool.backends.get('a')!.sessions, 4);
    await expectError(call(base, 'POST', '/v1/backends/a/drain', { body: { rate: 'fast' } }), 400, 'invalid_field', 'rate');
    await expectError(call(base, 'POST', '/v1/backends/a/drain', { body: { rate: -1 } }), 400, 'invalid_field', 'rate');
    await expectError(call(base, 'POST', '/v1/backends/a/drain', { body: { deadlineSeconds: 0 } }), 400, 'invalid_field', 'deadlineSeconds');
    assert.equal(sidecar.pool.backends.get('a')!.state, 'enabled', 'a rejected drain changed nothing');
    const drained = await admin.drainBackend('a', { rate: 20, deadlineSeconds: 5 });
    assert.deepEqual(drained, { id: 'a', state: 'draining', sessions: 4 });
    await waitFor(() => sidecar.pool.backends.get('a')!.sessions === 0, 'a drained');
    clients.forEach((c, i) => c.ws.send(`m${i}`));
    await waitFor(() => clients.every((c, i) => c.texts().includes(`b|m${i}`)), 'all sessions on b');
    assert.ok(clients.every((c) => c.closed === null));
    // Deleting b while a still drains: b's sessions have nowhere to go and stay, served, on b...
    const removed = await admin.deleteBackend('b');
    assert.deepEqual(removed, { id: 'b', state: 'draining', sessions: 4 });
    clients[0]!.ws.send('stay');
    await waitFor(() => clients[0]!.texts().includes('b|stay'), 'still served by b');
    // ...until a is enabled again: the drain is retried, the sessions move, and b is removed.
    await admin.enableBackend('a');
    await waitFor(() => !sidecar.pool.backends.has('b'), 'b removed once its sessions moved', 5000);
    clients.forEach((c, i) => c.ws.send(`n${i}`));
    await waitFor(() => clients.every((c, i) => c.texts().includes(`a|n${i}`)), 'all sessions back on a');
    assert.ok(clients.every((c) => c.closed === null));
    clients.forEach((c) => c.close());
  });

  test('GET /v1/sessions: filter and paginate; DELETE closes one with the given code; migrate moves one', async () => {
    await admin.addBackend({ id: 'b', url: b.url });
    const clients = await Promise.all(Array.from({ length: 5 }, (_, i) => TestClient.connect(`${url}/list/${i}?q=1`)));
    const all = await admin.sessions();
    assert.equal(all.sessions.length, 5);
    assert.equal(all.nextCursor, null);
    const s0 = all.sessions[0]!;
    assert.equal(s0.path, '/list/0?q=1');
    assert.equal(s0.remoteAddress.endsWith('127.0.0.1'), true);
    assert.equal(s0.state, 'open');
    assert.ok(!Number.isNaN(Date.parse(s0.startedAt)));
    const onA = await admin.sessions({ backend: 'a' });
    assert.ok(onA.sessions.every((s) => s.backend === 'a'));
    assert.equal(onA.sessions.length, sidecar.pool.backends.get('a')!.sessions);
    const p1 = await admin.sessions({ limit: 2 });
    const p2 = await admin.sessions({ limit: 2, cursor: p1.nextCursor! });
    const p3 = await admin.sessions({ limit: 2, cursor: p2.nextCursor! });
    assert.deepEqual([...p1.sessions, ...p2.sessions, ...p3.sessions].map((s) => s.id), all.sessions.map((s) => s.id));
    assert.equal(p3.nextCursor, null);
    await expectError(call(base, 'GET', '/v1/sessions?limit=0'), 400, 'invalid_field', 'limit');
    await expectError(call(base, 'GET', '/v1/sessions?limit=x'), 400, 'invalid_field', 'limit');
    await expectError(call(base, 'GET', '/v1/sessions?cursor=gone'), 400, 'invalid_field', 'cursor');

    clients[0]!.ws.send('count me');
    await clients[0]!.waitForCount(1);
    const counted = (await admin.sessions()).sessions[0]!;
    assert.equal(counted.messagesIn, 1);
    assert.equal(counted.messagesOut, 1);
    assert.equal(counted.bytesIn, 'count me'.length);

    await expectError(call(base, 'DELETE', `/v1/sessions/${s0.id}`, { body: { code: 1006 } }), 400, 'invalid_field', 'code');
    await expectError(call(base, 'DELETE', `/v1/sessions/${s0.id}`, { body: { reason: 'x'.repeat(200) } }), 400, 'invalid_field', 'reason');
    await admin.closeSession(s0.id, { code: 4000, reason: 'kicked' });
    assert.deepEqual(await clients[0]!.waitForClose(), { code: 4000, reason: 'kicked' });

    const s1 = all.sessions[1]!;
    const target = s1.backend === 'a' ? 'b' : 'a';
    await expectError(call(base, 'POST', `/v1/sessions/${s1.id}/migrate`, { body: { backend: 'zz' } }), 404, 'not_found', 'backend');
    await expectError(call(base, 'POST', `/v1/sessions/${s1.id}/migrate`, { body: { backend: 5 } }), 400, 'invalid_field', 'backend');
    const moved = await admin.migrateSession(s1.id, { backend: target });
    assert.deepEqual(moved, { id: s1.id, result: 'migrated', backend: target });
    clients[1]!.ws.send('where');
    await waitFor(() => clients[1]!.texts().includes(`${target}|where`), 'answered by the target');
    clients.slice(1).forEach((c) => c.close());
  });

  test('frontend pause: new sessions get 503, open ones carry on; resume lets them in again', async () => {
    const open = await TestClient.connect(`${url}/open`);
    assert.deepEqual(await admin.pauseFrontend(), { frontendPaused: true });
    await assert.rejects(TestClient.connect(`${url}/new`), (err: { status?: number }) => err.status === 503);
    open.ws.send('still');
    await waitFor(() => open.texts().includes('a|still'), 'open session unaffected');
    assert.equal((await admin.status()).frontendPaused, true);
    assert.deepEqual(await admin.resumeFrontend(), { frontendPaused: false });
    (await TestClient.connect(`${url}/new`)).close();
    open.close();
  });

  test('every route that takes a body answers bad JSON and wrong types with 400 naming the field', async () => {
    const c = await TestClient.connect(`${url}/bodies`);
    const sid = [...sidecar.sessions.values()][0]!.id;
    const bodyRoutes: [string, string][] = [
      ['POST', '/v1/backends'],
      ['PUT', '/v1/backends'],
      ['POST', '/v1/backends/a/drain'],
      ['DELETE', `/v1/sessions/${sid}`],
      ['POST', `/v1/sessions/${sid}/migrate`],
    ];
    for (const [method, path] of bodyRoutes) {
      await expectError(call(base, method, path, { body: '{not json' }), 400, 'bad_json');
      await expectError(call(base, method, path, { body: '"a string"' }), 400, 'invalid_field');
    }
    const wrongTypes: [string, string, object, string][] = [
      ['POST', '/v1/backends/a/drain', { rate: true }, 'rate'],
      ['POST', '/v1/backends/a/drain', { deadlineSeconds: '10' }, 'deadlineSeconds'],
      ['POST', '/v1/backends/a/drain', { speed: 1 }, 'speed'],
      ['DELETE', `/v1/sessions/${sid}`, { code: '4000' }, 'code'],
      ['DELETE', `/v1/sessions/${sid}`, { reason: 42 }, 'reason'],
      ['POST', `/v1/sessions/${sid}/migrate`, { backend: ['a'] }, 'backend'],
    ];
    for (const [method, path, body, field] of wrongTypes) await expectError(call(base, method, path, { body }), 400, 'invalid_field', field);
    assert.equal(sidecar.pool.backends.get('a')!.state, 'enabled', 'no rejected request changed anything');
    assert.equal(c.closed, null);
    assert.equal(sidecar.sessions.size, 1);
    c.close();
  });

  test('AdminClient surfaces errors as AdminApiError with the code', async () => {
    await assert.rejects(admin.enableBackend('missing'), (err: AdminApiError) => err instanceof AdminApiError && err.status === 404 && err.code === 'not_found');
    const anonymous = new AdminClient({ baseUrl: base });
    await assert.rejects(anonymous.status(), (err: AdminApiError) => err.status === 401 && err.code === 'unauthorized');
  });
});

describe('admin API without backends, and with a token file', () => {
  test('/readyz is 503 until a backend is usable', async () => {
    const b = await startEchoBackend({ id: 'b' });
    const { sidecar } = await startSidecar('', { BATON_ADMIN_TOKEN: TOKEN });
    try {
      const base = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
      const before = await call(base, 'GET', '/readyz', { token: null });
      assert.equal(before.status, 503);
      await new AdminClient({ baseUrl: base, token: TOKEN }).addBackend({ id: 'b', url: b.url });
      assert.equal((await call(base, 'GET', '/readyz', { token: null })).status, 200);
    } finally {
      await sidecar.stop(0);
      await b.close();
    }
  });

  test('the token file is re-read when it changes (a rotated Secret)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'baton-token-'));
    const file = join(dir, 'token');
    writeFileSync(file, 'first-token\n');
    const { sidecar } = await startSidecar('', { BATON_ADMIN_TOKEN_FILE: file });
    try {
      const base = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
      assert.equal((await call(base, 'GET', '/v1/status', { token: 'first-token' })).status, 200);
      writeFileSync(join(dir, 'token.new'), 'second-token\n');
      renameSync(join(dir, 'token.new'), file);
      const deadline = Date.now() + 5000;
      let status = 200;
      while (Date.now() < deadline && status !== 401) {
        status = (await call(base, 'GET', '/v1/status', { token: 'first-token' })).status;
        if (status !== 401) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(status, 401, 'the old token stops working');
      assert.equal((await call(base, 'GET', '/v1/status', { token: 'second-token' })).status, 200);
    } finally {
      await sidecar.stop(0);
    }
  });

  test('metrics can be put behind the token', async () => {
    const { sidecar } = await startSidecar('admin:\n  metricsRequireToken: true\n', { BATON_ADMIN_TOKEN: TOKEN });
    try {
      const base = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
      await expectError(call(base, 'GET', '/metrics', { token: null }), 401, 'unauthorized');
      assert.equal((await call(base, 'GET', '/metrics')).status, 200);
      assert.equal((await call(base, 'GET', '/healthz', { token: null })).status, 200);
    } finally {
      await sidecar.stop(0);
    }
  });
});

describe('PUT /v1/backends: runtime settings and drain pace', () => {
  let a: EchoBackend;
  let b: EchoBackend;
  let sidecar: Sidecar;
  let url: string;
  let base: string;
  let admin: AdminClient;
  let clients: TestClient[] = [];
  /** The sidecar's YAML (without the listen/logLevel lines startSidecar adds). */
  const fileYaml = (extra = '') => `backends:\n  - { id: a, url: "${a.url}" }\n${extra}`;
  const ENV = { BATON_ADMIN_TOKEN: TOKEN };

  /** The file config as main.ts would re-read it: the same header startSidecar writes. */
  const reloadFile = (extra: string) => {
    const full = `listen:\n  address: "127.0.0.1:0"\nlogLevel: ${process.env.BATON_TEST_LOG ?? 'silent'}\n${fileYaml(extra)}`;
    return sidecar.reload(parseConfig(full, { BATON_ADMIN_ADDRESS: '127.0.0.1:0', ...ENV }, 'test').config);
  };

  /** Which backend answers this client now (sends a probe and waits for the tagged echo). */
  async function backendOf(c: TestClient, probe: string): Promise<string> {
    c.ws.send(probe);
    await waitFor(() => c.texts().some((t) => t.endsWith(`|${probe}`)) || c.closed !== null, `echo of ${probe}`);
    assert.equal(c.closed, null, `client closed: ${JSON.stringify(c.closed)}`);
    return c.texts().find((t) => t.endsWith(`|${probe}`))!.split('|')[0]!;
  }

  async function connect(n: number, path: (i: number) => string): Promise<TestClient[]> {
    const out: TestClient[] = [];
    for (let i = 0; i < n; i++) out.push(await TestClient.connect(`${url}${path(i)}`));
    clients.push(...out);
    return out;
  }

  before(async () => {
    a = await startEchoBackend({ id: 'a', tag: true });
    b = await startEchoBackend({ id: 'b', tag: true });
  });
  beforeEach(async () => {
    clients.forEach((c) => c.close());
    clients = [];
    await sidecar?.stop(0);
    ({ sidecar, url } = await startSidecar(fileYaml(), ENV));
    base = `http://127.0.0.1:${sidecar.adminAddress!.port}`;
    admin = new AdminClient({ baseUrl: base, token: TOKEN });
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await sidecar?.stop(0);
    await a.close();
    await b.close();
  });

  const AB = () => [
    { id: 'a', url: a.url },
    { id: 'b', url: b.url },
  ];

  test('settings: applied and shown by GET /v1/status; the same PUT again changes nothing; omitted settings are kept', async () => {
    assert.deepEqual((await admin.status()).settings, {}, 'none before the first PUT');
    const settings = { 'balancer.algorithm': 'round-robin', 'failover.deadline': '45s' };
    const first = await call(base, 'PUT', '/v1/backends', { body: { generation: 1, backends: AB(), settings } });
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.deepEqual(first.json, { generation: 1, settingsChanged: true, added: ['b'], updated: [], removed: [], changed: true });
    assert.deepEqual((await admin.status()).settings, settings);
    assert.equal(sidecar.config.balancer.algorithm, 'round-robin');
    assert.equal(sidecar.config.failover.deadline, 45_000);

    const again = await admin.putBackends({ generation: 1, backends: AB(), settings: { 'failover.deadline': '45s', 'balancer.algorithm': 'round-robin' } });
    assert.deepEqual(again, { generation: 1, settingsChanged: false, added: [], updated: [], removed: [], changed: false });

    // Settings only (same backends, newer generation): settingsChanged without a backend change.
    const onlySettings = await admin.putBackends({ generation: 2, backends: AB(), settings: { ...settings, 'failover.deadline': '50s' } });
    assert.deepEqual(onlySettings, { generation: 2, settingsChanged: true, added: [], updated: [], removed: [], changed: false });
    assert.equal(sidecar.config.failover.deadline, 50_000);

    // A PUT without settings leaves them as they are.
    const without = await admin.putBackends({ generation: 3, backends: AB() });
    assert.equal(without.settingsChanged, false);
    assert.deepEqual((await admin.status()).settings, { ...settings, 'failover.deadline': '50s' });
    assert.equal(sidecar.config.failover.deadline, 50_000);

    // An empty map clears them: back to the file's (here default) values.
    const cleared = await admin.putBackends({ generation: 4, backends: AB(), settings: {} });
    assert.equal(cleared.settingsChanged, true);
    assert.deepEqual((await admin.status()).settings, {});
    assert.equal(sidecar.config.balancer.algorithm, 'least-sessions');
    assert.equal(sidecar.config.failover.deadline, 30_000);
  });

  test('settings: a bad value, a non-runtime key or a wrong type is a 400 naming settings.<key>, and changes nothing', async () => {
    const good = { 'balancer.algorithm': 'round-robin' };
    await admin.putBackends({ generation: 1, backends: AB(), settings: good });
    const bad: [Record<string, unknown>, string][] = [
      [{ 'failover.deadline': '3 parsecs' }, 'settings.failover.deadline'],
      [{ 'balancer.algorithm': 'random' }, 'settings.balancer.algorithm'],
      [{ 'health.breaker.threshold': '-1' }, 'settings.health.breaker.threshold'],
      [{ 'listen.address': '127.0.0.1:1' }, 'settings.listen.address'],
      [{ 'admin.token': 'x' }, 'settings.admin.token'],
      [{ 'session.maxMessageBytes': '1MiB' }, 'settings.session.maxMessageBytes'], // needs a restart
      [{ 'failover.nope': '1s' }, 'settings.failover.nope'],
      [{ 'failover.deadline': 45 }, 'settings.failover.deadline'],
    ];
    for (const [settings, field] of bad) {
      const body = await expectError(
        call(base, 'PUT', '/v1/backends', { body: { generation: 2, backends: [{ id: 'b', url: b.url }], settings: { 'balancer.algorithm': 'consistent-hash', ...settings } } }),
        400,
        'invalid_field',
        field,
      );
      assert.ok(body.error.message.startsWith(`${field}: `), body.error.message);
    }
    await expectError(call(base, 'PUT', '/v1/backends', { body: { generation: 2, backends: [], settings: ['x'] } }), 400, 'invalid_field', 'settings');
    const status = await admin.status();
    assert.deepEqual(status.settings, good, 'settings unchanged');
    assert.equal(status.backendsGeneration, 1, 'generation unchanged');
    assert.equal(sidecar.config.balancer.algorithm, 'round-robin');
    assert.equal(sidecar.config.failover.deadline, 30_000);
    assert.deepEqual([...sidecar.pool.backends.keys()], ['a', 'b'], 'backends unchanged');
    assert.equal(sidecar.pool.backends.get('a')!.state, 'enabled');

    // A stale generation with settings: 409, settings not applied.
    await admin.putBackends({ generation: 5, backends: AB(), settings: good });
    await expectError(call(base, 'PUT', '/v1/backends', { body: { generation: 4, backends: AB(), settings: {} } }), 409, 'stale_generation', 'generation');
    assert.deepEqual((await admin.status()).settings, good);
    assert.equal(sidecar.config.balancer.algorithm, 'round-robin');
  });

  test('settings: the cross-key rules of the config loader hold too (backoff.initial ≤ backoff.max, breaker openBase ≤ openMax)', async () => {
    // The same values as env vars are refused when the sidecar loads its config...
    assert.throws(() => parseConfig('', { BATON_FAILOVER_BACKOFF_INITIAL: '10s' }, 'test'), /failover\.backoff\.initial/);
    assert.throws(() => parseConfig('', { BATON_HEALTH_BREAKER_OPEN_BASE: '1m' }, 'test'), /health\.breaker\.openBase/);
    // ...so a PUT must not be able to make the running config one the loader would refuse.
    for (const [key, value] of [
      ['failover.backoff.initial', '10s'], // default failover.backoff.max is 5s
      ['health.breaker.openBase', '1m'], // default health.breaker.openMax is 30s
    ] as const) {
      const r = await call(base, 'PUT', '/v1/backends', { body: { generation: 1, backends: AB(), settings: { [key]: value } } });
      assert.equal(r.status, 400, `${key}=${value}: ${JSON.stringify(r.json)}`);
      assert.equal((r.json as ErrorBody).error.field, `settings.${key}`);
    }
    assert.deepEqual((await admin.status()).settings, {});
    assert.equal(sidecar.config.failover.backoff.initial, 50);
  });

  test('drain: a bad rate or deadline is a 400 naming drain.<field>', async () => {
    const bad: [object, string][] = [
      [{ rate: 0 }, 'drain.rate'],
      [{ rate: 'fast' }, 'drain.rate'],
      [{ deadlineSeconds: 0 }, 'drain.deadlineSeconds'],
      [{ deadlineSeconds: '1' }, 'drain.deadlineSeconds'],
      [{ speed: 1 }, 'drain.speed'],
    ];
    for (const [drain, field] of bad) {
      await expectError(call(base, 'PUT', '/v1/backends', { body: { generation: 1, backends: [{ id: 'b', url: b.url }], drain } }), 400, 'invalid_field', field);
    }
    assert.deepEqual([...sidecar.pool.backends.keys()], ['a']);
    assert.equal((await admin.status()).backendsGeneration, 0);
  });

  test('settings take effect: consistent-hash keeps one path on one backend; cleared, least-sessions spreads again', async () => {
    await admin.putBackends({ generation: 1, backends: AB(), settings: { 'balancer.algorithm': 'consistent-hash', 'balancer.hashKey': 'path' } });
    const same = await connect(6, (i) => `/room/42?n=${i}`);
    const where = new Set<string>();
    for (const [i, c] of same.entries()) where.add(await backendOf(c, `h${i}`));
    assert.equal(where.size, 1, `one path, one backend (got ${[...where].join(',')})`);
    const hashed = [...where][0]!;
    const other = hashed === 'a' ? 'b' : 'a';

    // Back to least-sessions: the 6 sessions make `hashed` the busier one, so new ones go to the other.
    const cleared = await admin.putBackends({ generation: 2, backends: AB(), settings: {} });
    assert.equal(cleared.settingsChanged, true);
    const more = await connect(4, (i) => `/room/42?m=${i}`);
    for (const [i, c] of more.entries()) assert.equal(await backendOf(c, `l${i}`), other, `session ${i} by least-sessions`);
    for (const [i, c] of same.entries()) assert.equal(await backendOf(c, `again${i}`), hashed, 'open sessions stay where they are');
  });

  test('settings survive a config-file reload; the file still sets the keys the admin API does not', async () => {
    await admin.putBackends({ generation: 1, backends: AB(), settings: { 'balancer.algorithm': 'consistent-hash', 'failover.deadline': '45s' } });
    const genBefore = (await admin.status()).configGeneration;
    // The file now sets failover.deadline itself, plus a key the API did not set.
    const { restartNeeded } = reloadFile('failover:\n  deadline: 10s\nsession:\n  idleTimeout: 5m\n');
    assert.deepEqual(restartNeeded, []);
    const status = await admin.status();
    assert.ok(status.configGeneration > genBefore, 'the reload was applied');
    assert.deepEqual(status.settings, { 'balancer.algorithm': 'consistent-hash', 'failover.deadline': '45s' });
    assert.equal(sidecar.config.balancer.algorithm, 'consistent-hash', 'the API setting outlives the reload');
    assert.equal(sidecar.config.failover.deadline, 45_000, 'the API setting beats the file');
    assert.equal(sidecar.config.session.idleTimeout, 300_000, 'the file applies where the API is silent');
    assert.deepEqual([...sidecar.pool.backends.keys()], ['a', 'b'], "the file's backend list is ignored once the API owns the set");
    // The behaviour too: one path, one backend after the reload.
    const same = await connect(4, (i) => `/after-reload?n=${i}`);
    const where = new Set<string>();
    for (const [i, c] of same.entries()) where.add(await backendOf(c, `r${i}`));
    assert.equal(where.size, 1);
    // Dropping the API settings falls back to the file's values, not the defaults.
    await admin.putBackends({ generation: 2, backends: AB(), settings: {} });
    assert.equal(sidecar.config.failover.deadline, 10_000);
    assert.equal(sidecar.config.balancer.algorithm, 'least-sessions');
    assert.equal(sidecar.config.session.idleTimeout, 300_000);
  });

  /** Polls GET /v1/backends until `a` is gone or `timeoutMs` passes; returns what it saw. */
  async function watchDrain(timeoutMs: number, aGone: () => boolean = () => !sidecar.pool.backends.has('a')) {
    const seen: { t: number; a: number; b: number }[] = [];
    const start = Date.now();
    while (Date.now() - start < timeoutMs) {
      const view = await admin.backends();
      const n = (id: string) => view.backends.find((x) => x.id === id)?.sessions ?? 0;
      seen.push({ t: Date.now() - start, a: n('a'), b: n('b') });
      if (aGone()) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    return { seen, elapsed: Date.now() - start };
  }

  test('drain {rate: 10}: 20 sessions move off a removed backend over about 2 s, none lost', async () => {
    const cs = await connect(20, (i) => `/pace/${i}`);
    assert.equal(sidecar.pool.backends.get('a')!.sessions, 20);
    const put = await admin.putBackends({ generation: 1, backends: [{ id: 'b', url: b.url }], drain: { rate: 10 } });
    assert.deepEqual(put, { generation: 1, settingsChanged: false, added: ['b'], updated: [], removed: ['a'], changed: true });
    const { seen, elapsed } = await watchDrain(10_000);
    assert.ok(!sidecar.pool.backends.has('a'), `a removed after draining (saw ${JSON.stringify(seen.at(-1))})`);
    assert.ok(seen.some((s) => s.a > 0 && s.b > 0), `gradual: at some point both backends held sessions (${JSON.stringify(seen)})`);
    assert.ok(seen.some((s) => s.t < 1000 && s.a >= 5), `not all at once: a still held ≥ 5 after < 1 s (${JSON.stringify(seen.slice(0, 20))})`);
    assert.ok(elapsed >= 1500, `took ${elapsed} ms; 20 sessions at 10/s take ≈ 2 s`);
    assert.ok(elapsed < 6000, `took ${elapsed} ms`);
    assert.equal(sidecar.pool.backends.get('b')!.sessions, 20);
    for (const [i, c] of cs.entries()) assert.equal(await backendOf(c, `p${i}`), 'b');
    assert.ok(cs.every((c) => c.closed === null));
    assert.equal(sidecar.sessions.size, 20);
  });

  test('drain {rate: 10}: a second the process loses to a stall is made up, so 20 sessions still take about 2 s', async () => {
    const cs = await connect(20, (i) => `/stall/${i}`);
    const started = Date.now();
    await admin.putBackends({ generation: 1, backends: [{ id: 'b', url: b.url }], drain: { rate: 10 } });
    await new Promise((r) => setTimeout(r, 300));
    // The event loop stalls for a second (a GC, a CPU-throttled container): migrations paced by a
    // sleep per session would end a second later; paced by a schedule they catch up.
    const until = Date.now() + 1000;
    while (Date.now() < until);
    await waitFor(() => sidecar.pool.backends.get('b')?.sessions === 20, '20 sessions on b', 10_000, 25);
    const elapsed = Date.now() - started;
    // Measured here: ≈ 1.95 s; a sleep per session took ≈ 2.85 s.
    assert.ok(elapsed < 2400, `took ${elapsed} ms; without catching up ≈ 2.9 s`);
    assert.ok(cs.every((c) => c.closed === null));
  });

  test('drain {rate: 10} is the whole sidecar\'s: two busy backends removed together share it', async () => {
    const c = await startEchoBackend({ id: 'c', tag: true });
    try {
      await admin.putBackends({ generation: 1, backends: AB() });
      const cs = await connect(20, (i) => `/shared/${i}`);
      assert.equal(sidecar.pool.backends.get('a')!.sessions + sidecar.pool.backends.get('b')!.sessions, 20);
      assert.ok(sidecar.pool.backends.get('a')!.sessions > 0 && sidecar.pool.backends.get('b')!.sessions > 0);
      const started = Date.now();
      await admin.putBackends({ generation: 2, backends: [{ id: 'c', url: c.url }], drain: { rate: 10 } });
      await waitFor(() => sidecar.pool.backends.get('c')!.sessions === 20, '20 sessions on c', 10_000, 25);
      const elapsed = Date.now() - started;
      // 20 sessions at 10/s in all take ≈ 2 s; at 10/s per backend they would take ≈ 1 s.
      assert.ok(elapsed >= 1500, `took ${elapsed} ms`);
      for (const [i, cl] of cs.entries()) assert.equal(await backendOf(cl, `s${i}`), 'c');
      assert.ok(cs.every((cl) => cl.closed === null));
    } finally {
      clients.forEach((cl) => cl.close());
      await sidecar.stop(0);
      await c.close();
    }
  });

  test('drain {rate: 1, deadlineSeconds: 1}: paced until the deadline, then the rest at once', async () => {
    const cs = await connect(20, (i) => `/deadline/${i}`);
    // Here a stays in the set, draining (not removed): the pace applies to it too.
    const put = await admin.putBackends({
      generation: 1,
      backends: [
        { id: 'a', url: a.url, state: 'draining' },
        { id: 'b', url: b.url },
      ],
      drain: { rate: 1, deadlineSeconds: 1 },
    });
    assert.deepEqual(put.updated, ['a']);
    const { seen, elapsed } = await watchDrain(8000, () => sidecar.pool.backends.get('a')!.sessions === 0);
    assert.equal(sidecar.pool.backends.get('a')!.sessions, 0, `all moved within a few seconds, not 20 s (${JSON.stringify(seen.at(-1))})`);
    assert.ok(elapsed < 5000, `took ${elapsed} ms`);
    assert.ok(seen.filter((s) => s.t < 600).every((s) => s.b <= 1), `paced at 1/s before the deadline (${JSON.stringify(seen.slice(0, 10))})`);
    assert.equal(sidecar.pool.backends.get('a')!.state, 'draining');
    for (const [i, c] of cs.entries()) assert.equal(await backendOf(c, `d${i}`), 'b');
    assert.ok(cs.every((c) => c.closed === null));
  });
});
