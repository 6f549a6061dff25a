// The admin API, route by route, as the operator and a DevOps script see it.
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { AdminApiError, AdminClient } from '../sidecar/admin/client.js';
import type { ErrorBody } from '../sidecar/admin/contract.js';
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
    assert.deepEqual(first, { generation: 3, added: ['b'], updated: [], removed: ['a'], changed: true });
    // The session on the removed backend migrates, then the backend is gone.
    await waitFor(() => !sidecar.pool.backends.has('a'), 'a removed after its session moved');
    c.ws.send('after put');
    await waitFor(() => c.texts().includes('b|after put'), 'session now on b');
    assert.equal(c.closed, null);
    const again = await admin.putBackends(body);
    assert.deepEqual(again, { generation: 3, added: [], updated: [], removed: [], changed: false });
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
    const sid = [...sidecar.sessions.keys()][0]!;
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
