// Planned migration: moving a live session between backends without losing a message.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import type { Sidecar } from '../sidecar/sidecar.js';
import { BackendProcess, backendsYaml, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';

function parse(c: TestClient): { backend: string; n: number }[] {
  return c.texts().map((t) => {
    const [backend, rest] = t.split('|') as [string, string];
    return { backend, n: Number(rest.slice(1)) };
  });
}

const CONFIG = `session:
  pingInterval: 1s
  pongTimeout: 1s
failover:
  drainTimeout: 400ms
  backoff: { initial: 20ms, max: 200ms, multiplier: 2, jitter: 0.2 }
`;

describe('planned migration', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
  });
  after(killAllBackends);

  test('ten migrations under traffic to in-order echo backends: zero lost, zero duplicated, order kept', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b]) + CONFIG));
    const c = await TestClient.connect(`${url}/planned`);
    const session = [...sidecar.sessions.values()][0]!;
    const traffic = pump(c, 'm', 2);
    const visited: string[] = [session.backend!.id];
    for (let i = 0; i < 10; i++) {
      await waitFor(() => c.received.length >= (i + 1) * 20, `traffic before migration ${i}`);
      const result: string | undefined = await sidecar.migrateSession(session.id, "admin");
      assert.equal(result, 'migrated');
      visited.push(session.backend!.id);
    }
    const sent = traffic.stop();
    await waitFor(() => parse(c).at(-1)?.n === sent - 1, 'last message echoed');
    const got = parse(c).map((e) => e.n);
    assert.deepEqual(got, Array.from({ length: sent }, (_, i) => i), 'every message exactly once, in order');
    for (let i = 1; i < visited.length; i++) assert.notEqual(visited[i], visited[i - 1], 'each migration changed backend');
    // Messages of one backend never follow the next backend's.
    const runs = parse(c).map((e) => e.backend).filter((x, i, all) => i === 0 || all[i - 1] !== x);
    assert.equal(runs.length, 11, 'one contiguous run per backend visited');
    assert.equal(c.closed, null);
    assert.equal(session.failovers, 0, 'planned moves are not failovers');
    c.close();
  });

  test('migration to a named target, and a second migration while one is in progress is refused as busy', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    const d = await BackendProcess.start('d');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b, d]) + CONFIG));
    const c = await TestClient.connect(`${url}/target`);
    const session = [...sidecar.sessions.values()][0]!;
    const target = session.backend!.id === 'd' ? 'b' : 'd';
    const [first, second] = await Promise.all([sidecar.migrateSession(session.id, 'admin', target), sidecar.migrateSession(session.id, 'admin')]);
    assert.equal(first, 'migrated');
    assert.equal(second, 'busy');
    assert.equal(session.backend!.id, target);
    c.ws.send('m0');
    await waitFor(() => c.texts().includes(`${target}|m0`), 'echo from the target');
    c.close();
  });

  test('old backend that never answers the close: switch after drainTimeout; its late messages are never delivered', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n` + CONFIG));
    const c = await TestClient.connect(`${url}/stuck`);
    const session = [...sidecar.sessions.values()][0]!;
    assert.equal(session.backend!.id, 'a');
    await a.signal('SIGSTOP');
    c.ws.send('m0'); // reaches a, which is frozen and will not answer in time
    const migrating = sidecar.migrateSession(session.id, 'drain')!;
    await waitFor(() => session.state === 'migrating', 'migration draining the old backend');
    c.ws.send('m1'); // held until the switch
    const started = Date.now();
    assert.equal(await migrating, 'migrated');
    assert.ok(Date.now() - started >= 300, 'waited for the drain timeout');
    await waitFor(() => c.texts().includes('b|m1'), 'held message delivered by b');
    await a.signal('SIGCONT'); // a wakes up and would answer m0 now, on a connection the sidecar dropped
    c.ws.send('m2');
    await waitFor(() => c.texts().includes('b|m2'), 'b still serving');
    assert.deepEqual(c.texts(), ['b|m1', 'b|m2'], 'nothing from the old backend after the switch');
    c.close();
  });

  test('old backend dies during the drain: the session switches to the new one and keeps its held messages', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n` + CONFIG.replace('400ms', '5s'),
    ));
    const c = await TestClient.connect(`${url}/dies`);
    const session = [...sidecar.sessions.values()][0]!;
    await a.signal('SIGSTOP'); // so the close handshake can't finish before we kill it
    const migrating = sidecar.migrateSession(session.id, 'drain')!;
    await waitFor(() => session.state === 'migrating', 'draining');
    c.ws.send('m1');
    await a.signal('SIGKILL');
    assert.equal(await migrating, 'migrated');
    await waitFor(() => c.texts().includes('b|m1'), 'held message delivered by b');
    assert.equal(c.closed, null);
    c.close();
  });

  test('serving backend dies while a migration is dialling: one failover, no duplicate, session lives', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b]) + CONFIG));
    const c = await TestClient.connect(`${url}/race`);
    const session = [...sidecar.sessions.values()][0]!;
    const [victim, other] = session.backend!.id === 'a' ? [a, b] : [b, a];
    const migrating = sidecar.migrateSession(session.id, 'admin')!;
    await victim.signal('SIGKILL');
    const result = await migrating;
    assert.ok(result === 'migrated' || result === 'failed', result);
    await waitFor(() => session.state === 'open' && session.backend?.id === other.id, 'session open on the survivor');
    c.ws.send('m9');
    await waitFor(() => c.texts().includes(`${other.id}|m9`), 'echo');
    assert.equal(c.texts().filter((t) => t.endsWith('|m9')).length, 1);
    assert.equal(sidecar.pool.backends.get(other.id)!.sessions, 1, 'the session is counted once, on the survivor');
    assert.equal(sidecar.pool.backends.get(victim.id)!.sessions, 0);
    assert.equal(c.closed, null);
    c.close();
  });

  test('draining a backend (migrateAway) moves all of its sessions', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b]) + CONFIG));
    const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => TestClient.connect(`${url}/s${i}`)));
    const onA = [...sidecar.sessions.values()].filter((s) => s.backend?.id === 'a').length;
    assert.ok(onA > 0);
    sidecar.pool.setState(sidecar.pool.backends.get('a')!, 'draining', Date.now());
    const counts = await sidecar.migrateAway('a', 'drain');
    assert.equal(counts.migrated, onA);
    assert.equal(sidecar.pool.backends.get('a')!.sessions, 0);
    assert.ok([...sidecar.sessions.values()].every((s) => s.backend?.id === 'b'));
    clients.forEach((c, i) => c.ws.send(`m${i}`));
    await waitFor(() => clients.every((c, i) => c.texts().includes(`b|m${i}`)), 'every session answers from b');
    clients.forEach((c) => c.close());
  });
});
