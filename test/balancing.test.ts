// Where sessions land, seen from the outside: weights, standby, stickiness, health.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, type EchoBackend } from '../tools/echo-backend.js';
import { BackendProcess, freePort, killAllBackends, startSidecar, TestClient, waitFor } from './helpers.js';

/** Opens a session and returns the id of the backend that answered its first message. */
async function landOn(url: string, headers: Record<string, string> = {}): Promise<{ backend: string; client: TestClient }> {
  const client = await TestClient.connect(url, [], { headers });
  client.ws.send('who');
  await client.waitForCount(1);
  return { backend: client.texts()[0]!.split('|')[0]!, client };
}

describe('balancing', () => {
  const backends: EchoBackend[] = [];
  let sidecar: Sidecar | undefined;
  const clients: TestClient[] = [];
  afterEach(async () => {
    clients.splice(0).forEach((c) => c.close());
    await sidecar?.stop(0);
    sidecar = undefined;
  });
  after(async () => {
    await Promise.all(backends.map((b) => b.close()));
    await killAllBackends();
  });
  const echo = async (id: string) => {
    const b = await startEchoBackend({ id, tag: true });
    backends.push(b);
    return b;
  };

  test('round-robin honours weights (3:1)', async () => {
    const a = await echo('a');
    const b = await echo('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `balancer: { algorithm: round-robin }\nbackends:\n  - { id: a, url: "${a.url}", weight: 3 }\n  - { id: b, url: "${b.url}", weight: 1 }\n`,
    ));
    const counts: Record<string, number> = { a: 0, b: 0 };
    for (let i = 0; i < 40; i++) {
      const { backend, client } = await landOn(`${url}/rr${i}`);
      counts[backend]!++;
      clients.push(client);
    }
    assert.deepEqual(counts, { a: 30, b: 10 });
  });

  test('least-sessions fills the emptier backend', async () => {
    const a = await echo('a');
    const b = await echo('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n`));
    for (let i = 0; i < 20; i++) clients.push((await landOn(`${url}/ls${i}`)).client);
    const onA = sidecar.pool.backends.get('a')!.sessions;
    const onB = sidecar.pool.backends.get('b')!.sessions;
    assert.equal(onA + onB, 20);
    assert.ok(Math.abs(onA - onB) <= 4, `balanced: a=${onA} b=${onB}`);
  });

  test('standby serves only while no primary is usable', async () => {
    const spare = await echo('spare');
    const primary = await BackendProcess.start('primary');
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `health: { breaker: { threshold: 1, openBase: 10s, openMax: 10s } }\nbackends:\n  - { id: primary, url: "${primary.url}" }\n  - { id: spare, url: "${spare.url}", standby: true }\n`,
    ));
    for (let i = 0; i < 5; i++) {
      const { backend, client } = await landOn(`${url}/p${i}`);
      assert.equal(backend, 'primary');
      client.close();
    }
    await primary.signal('SIGKILL');
    // The first new session finds the primary dead (breaker trips) and goes to the standby; so do the next ones.
    for (let i = 0; i < 5; i++) {
      const { backend, client } = await landOn(`${url}/s${i}`);
      assert.equal(backend, 'spare');
      clients.push(client);
    }
    assert.equal(sidecar.pool.backends.get('primary')!.health, 'tripped');
  });

  for (const [source, makeUrl, headers] of [
    ['query:user', (base: string, k: string) => `${base}/room?user=${k}`, (_k: string) => ({})],
    ['header:x-user', (base: string, _k: string) => `${base}/room`, (k: string) => ({ 'x-user': k })],
    ['path', (base: string, k: string) => `${base}/users/${k}?t=${Math.random()}`, (_k: string) => ({})],
  ] as const) {
    test(`consistent-hash on ${source}: the same key lands on the same backend; removing another backend does not move it`, async () => {
      const [a, b, c] = [await echo('a'), await echo('b'), await echo('c')];
      let url: string;
      ({ sidecar, url } = await startSidecar(
        `balancer: { algorithm: consistent-hash, hashKey: "${source}" }\nbackends:\n` +
          `  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n  - { id: c, url: "${c.url}" }\n`,
      ));
      const placement = new Map<string, string>();
      for (let k = 0; k < 30; k++) {
        const key = `k${k}`;
        const first = await landOn(makeUrl(url, key), headers(key));
        const again = await landOn(makeUrl(url, key), headers(key));
        assert.equal(again.backend, first.backend, `key ${key} is sticky`);
        placement.set(key, first.backend);
        first.client.close();
        again.client.close();
      }
      assert.equal(new Set(placement.values()).size, 3, 'keys spread over all backends');
      // Take backend c out of the set (config reload): only c's keys move.
      sidecar.reload({ ...sidecar.config, backends: sidecar.config.backends.filter((x) => x.id !== 'c') });
      for (const [key, was] of placement) {
        const now = await landOn(makeUrl(url, key), headers(key));
        if (was !== 'c') assert.equal(now.backend, was, `key ${key} stayed on ${was}`);
        else assert.notEqual(now.backend, 'c');
        now.client.close();
      }
    });
  }
});

describe('health', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
  });
  after(killAllBackends);

  test('the breaker trips on consecutive dial failures and recovers with a half-open trial', async () => {
    const port = await freePort();
    const good = await startEchoBackend({ id: 'good', tag: true });
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `balancer: { algorithm: round-robin }\nhealth: { breaker: { threshold: 3, openBase: 300ms, openMax: 1s } }\nbackends:\n  - { id: flaky, url: "ws://127.0.0.1:${port}" }\n  - { id: good, url: "${good.url}" }\n`,
    ));
    const flaky = sidecar.pool.backends.get('flaky')!;
    try {
      // Every session still opens (the dead backend is skipped), and the failures trip its breaker.
      for (let i = 0; i < 6; i++) (await landOn(`${url}/t${i}`)).client.close();
      assert.equal(flaky.breaker.state, 'open');
      assert.equal(flaky.health, 'tripped');
      const dialsWhileOpen = flaky.breaker.consecutiveFailures;
      for (let i = 0; i < 4; i++) assert.equal((await landOn(`${url}/o${i}`)).backend, 'good');
      assert.equal(flaky.breaker.consecutiveFailures, dialsWhileOpen, 'no dials to a tripped backend');
      const revived = await startEchoBackend({ id: 'flaky', port, tag: true });
      try {
        // After openBase a new session is the trial; success closes the breaker.
        await waitFor(() => Date.now() >= flaky.breaker.retryAt, 'open period over');
        const seen = new Set<string>();
        for (let i = 0; i < 4; i++) {
          const { backend, client } = await landOn(`${url}/r${i}`);
          seen.add(backend);
          client.close();
        }
        assert.ok(seen.has('flaky'), 'the recovered backend takes sessions again');
        assert.equal(flaky.breaker.state, 'closed');
        await waitFor(() => flaky.health === 'healthy', 'healthy again');
      } finally {
        await revived.close();
      }
    } finally {
      await good.close();
    }
  });

  test('φ rises on missing pongs and ejects the silent backend from new sessions', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    // Long pong timeout: the session is not failed over, so φ alone has to notice.
    ({ sidecar, url } = await startSidecar(
      `session: { pingInterval: 100ms, pongTimeout: 30s }\nhealth: { phi: { threshold: 8, minStdDev: 50ms }, maxEjectedPercent: 50 }\nbackends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n`,
    ));
    const c = await TestClient.connect(`${url}/phi-a`);
    const d = await TestClient.connect(`${url}/phi-b`);
    const backendA = sidecar.pool.backends.get('a')!;
    assert.equal(backendA.sessions, 1);
    await waitFor(() => backendA.phi.heartbeats >= 5, 'pong heartbeats from a', 5000);
    const phiBefore = backendA.phiValue;
    assert.ok(phiBefore < 8, `φ low while pongs arrive (${phiBefore})`);
    await a.signal('SIGSTOP');
    await waitFor(() => backendA.health === 'ejected', 'a ejected', 5000);
    assert.ok(backendA.phiValue >= 8, `φ rose to ${backendA.phiValue}`);
    for (let i = 0; i < 4; i++) {
      const { backend, client } = await landOn(`${url}/new${i}`);
      assert.equal(backend, 'b', 'new sessions avoid the ejected backend');
      client.close();
    }
    await a.signal('SIGCONT');
    await waitFor(() => backendA.health === 'healthy', 'a healthy again after its pongs resume', 5000);
    c.close();
    d.close();
  });

  test('an active HTTP probe finds a dead idle backend and its recovery', async () => {
    const port = await freePort();
    const good = await startEchoBackend({ id: 'good', tag: true });
    ({ sidecar } = await startSidecar(
      `health: { probe: { type: http, interval: 100ms, timeout: 200ms, path: / }, breaker: { threshold: 2, openBase: 100ms, openMax: 200ms } }\nbackends:\n  - { id: idle, url: "ws://127.0.0.1:${port}" }\n  - { id: good, url: "${good.url}" }\n`,
    ));
    const idle = sidecar.pool.backends.get('idle')!;
    try {
      await waitFor(() => idle.health === 'tripped', 'probe failures trip the idle backend', 3000);
      const revived = await startEchoBackend({ id: 'idle', port, tag: true });
      try {
        await waitFor(() => idle.health === 'healthy', 'probe success brings it back', 3000);
      } finally {
        await revived.close();
      }
    } finally {
      await good.close();
    }
  });
});
