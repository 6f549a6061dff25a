// Unplanned failover: backends that die, restart, flap, hang, or close with a code.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, afterEach, describe, test } from 'node:test';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, type EchoBackend } from '../tools/echo-backend.js';
import { BackendProcess, backendsYaml, freePort, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';

/** Parses "<backend>|<prefix><n>" echoes. */
function echoes(c: TestClient, prefix: string): { backend: string; n: number }[] {
  return c
    .texts()
    .filter((t) => t.includes(`|${prefix}`))
    .map((t) => {
      const [backend, rest] = t.split('|') as [string, string];
      return { backend, n: Number(rest.slice(prefix.length)) };
    });
}

const FAST = `session:
  pingInterval: 200ms
  pongTimeout: 300ms
failover:
  backoff: { initial: 20ms, max: 200ms, multiplier: 2, jitter: 0.2 }
health:
  breaker: { threshold: 5, openBase: 100ms, openMax: 500ms }
`;

describe('unplanned failover', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
  });
  after(killAllBackends);

  test('SIGKILL of the serving backend under traffic: the client stays connected and the other backend takes over', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b]) + FAST));
    const c = await TestClient.connect(`${url}/stream?id=7`);
    const session = [...sidecar.sessions.values()][0]!;
    const first = session.backend!.id;
    const [victim, survivor] = first === 'a' ? [a, b] : [b, a];
    const traffic = pump(c, 'm', 5);
    await waitFor(() => echoes(c, 'm').length >= 20, '20 echoes before the kill');
    await victim.signal('SIGKILL');
    await waitFor(() => echoes(c, 'm').some((e) => e.backend === survivor.id), 'an echo from the surviving backend');
    await waitFor(() => echoes(c, 'm').filter((e) => e.backend === survivor.id).length >= 50, '50 echoes after the failover');
    const sent = traffic.stop();
    await waitFor(() => echoes(c, 'm').at(-1)?.n === sent - 1, 'the last message echoed');

    assert.equal(c.closed, null, 'the client connection never closed');
    const got = echoes(c, 'm');
    const ns = got.map((e) => e.n);
    assert.deepEqual(ns, [...ns].sort((x, y) => x - y), 'order kept');
    assert.equal(new Set(ns).size, ns.length, 'nothing delivered twice');
    const lastOld = Math.max(...got.filter((e) => e.backend === victim.id).map((e) => e.n));
    const firstNew = Math.min(...got.filter((e) => e.backend === survivor.id).map((e) => e.n));
    assert.ok(got.filter((e) => e.n > firstNew).every((e) => e.backend === survivor.id), 'everything after the switch comes from the survivor');
    // Without a codec, only frames in flight to the dead backend at the moment of the kill may be lost.
    const missing = [...Array(sent).keys()].filter((n) => !ns.includes(n));
    assert.ok(missing.every((n) => n > lastOld && n < firstNew), `lost only at the kill boundary: ${missing.join(',')}`);
    const reconnect = survivor.connections.at(-1)!;
    assert.equal(reconnect.headers['x-balancer-reconnect'], '1', 'the reconnect header reaches the new backend');
    assert.equal(reconnect.path, '/stream?id=7', 'the original path and query are kept');
    assert.equal(session.failovers, 1);
    c.close();
  });

  for (const code of [1001, 1005, 1011, 1012, 1013]) {
    test(`backend closing with ${code} triggers failover`, async () => {
      const a = await startEchoBackend({ id: 'a', tag: true });
      const b = await startEchoBackend({ id: 'b', tag: true });
      try {
        let url: string;
        ({ sidecar, url } = await startSidecar(backendsYaml([a, b].map((x, i) => ({ id: 'ab'[i]!, url: x.url }))) + FAST));
        const c = await TestClient.connect(`${url}/codes`);
        const session = [...sidecar.sessions.values()][0]!;
        const first = session.backend!.id;
        c.ws.send(code === 1005 ? '__close 0' : `__close ${code} restarting`);
        await waitFor(() => session.backend !== null && session.backend.id !== first && session.state === 'open', 'session on the other backend');
        c.ws.send('after');
        await c.waitForCount(1);
        assert.equal(c.texts()[0], `${session.backend!.id}|after`);
        assert.equal(c.closed, null);
        c.close();
      } finally {
        await a.close();
        await b.close();
      }
    });
  }

  for (const [code, reason] of [
    [1000, 'bye'],
    [4001, 'kicked by the app'],
    [1008, 'policy'],
  ] as const) {
    test(`backend closing with ${code} passes the code and reason to the client`, async () => {
      const a = await startEchoBackend({ id: 'a', tag: true });
      const b = await startEchoBackend({ id: 'b', tag: true });
      try {
        let url: string;
        ({ sidecar, url } = await startSidecar(backendsYaml([a, b].map((x, i) => ({ id: 'ab'[i]!, url: x.url }))) + FAST));
        const c = await TestClient.connect(`${url}/codes`);
        c.ws.send(`__close ${code} ${reason}`);
        assert.deepEqual(await c.waitForClose(), { code, reason });
        await waitFor(() => sidecar!.sessions.size === 0, 'session gone');
        assert.equal(a.clients.size + b.clients.size, 0, 'no backend connection left');
      } finally {
        await a.close();
        await b.close();
      }
    });
  }

  test('backends that greet on connect: the greeting reaches the client, also from the backend taken over', async () => {
    const greeters = await Promise.all(
      ['a', 'b'].map(async (id) => {
        const srv = await startEchoBackend({ id, tag: true, onConnection: (_info, ws) => ws.send(`hello from ${id}`) });
        return srv;
      }),
    );
    try {
      let url: string;
      ({ sidecar, url } = await startSidecar(backendsYaml(greeters.map((g, i) => ({ id: 'ab'[i]!, url: g.url }))) + FAST));
      const c = await TestClient.connect(`${url}/greet`);
      await c.waitForCount(1);
      const first = c.texts()[0]!;
      assert.match(first, /^hello from [ab]$/);
      const other = first.endsWith('a') ? 'b' : 'a';
      c.ws.send('__close 1012 restart');
      await c.waitForCount(2);
      assert.equal(c.texts()[1], `hello from ${other}`);
      c.close();
    } finally {
      await Promise.all(greeters.map((g) => g.close()));
    }
  });

  test('a second backend dies while the first failover is under way: the session ends up on the third', async () => {
    const [a, b, c] = [await BackendProcess.start('a'), await BackendProcess.start('b'), await BackendProcess.start('c')];
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `balancer: { algorithm: round-robin }\nbackends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n  - { id: c, url: "${c.url}", standby: true }\n` +
        FAST,
    ));
    const client = await TestClient.connect(`${url}/race`);
    const session = [...sidecar.sessions.values()][0]!;
    assert.equal(session.backend!.id, 'a');
    await Promise.all([a.signal('SIGKILL'), b.signal('SIGKILL')]);
    await waitFor(() => session.failovers === 1, 'failover noticed'); // frames sent before that may be lost
    client.ws.send('x1');
    await waitFor(() => session.state === 'open' && session.backend?.id === 'c', 'session on c');
    client.ws.send('x2');
    await waitFor(() => client.texts().includes('c|x2'), 'echo from c');
    assert.deepEqual(client.texts(), ['c|x1', 'c|x2']);
    assert.equal(client.closed, null);
    client.close();
  });

  test('a failover backend that picks a different subprotocol is a failed dial, never a switch', async () => {
    const v2 = await startEchoBackend({ id: 'v2', tag: true, protocol: 'chat.v2' });
    let v1Dials = 0;
    const v1 = await startEchoBackend({ id: 'v1', tag: true, protocol: 'chat.v1', onConnection: () => v1Dials++ });
    try {
      let url: string;
      ({ sidecar, url } = await startSidecar(
        `backends:\n  - { id: v2, url: "${v2.url}" }\n  - { id: v1, url: "${v1.url}", standby: true }\n` +
          `failover:\n  deadline: 600ms\n  backoff: { initial: 20ms, max: 100ms, multiplier: 2, jitter: 0 }\n`,
      ));
      const c = await TestClient.connect(`${url}/proto`, ['chat.v2', 'chat.v1']);
      assert.equal(c.ws.protocol, 'chat.v2');
      const session = [...sidecar.sessions.values()][0]!;
      await v2.close(); // the only backend that speaks chat.v2 is gone
      const closed = await c.waitForClose(3000);
      assert.equal(closed.code, 1013, 'held until the deadline, then told to retry');
      assert.equal(session.backend, null, 'never switched to the chat.v1 backend');
      assert.ok(v1Dials > 0, 'the chat.v1 backend was tried');
      await waitFor(() => v1.clients.size === 0, 'mismatched dials closed');
    } finally {
      await v1.close();
    }
  });

  test('single backend restarted (down 2 s): the client is held and resumes; buffered messages delivered in order', async () => {
    const a = await BackendProcess.start('a');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a]) + FAST));
    const c = await TestClient.connect(`${url}/hold`);
    c.ws.send('before');
    await c.waitForCount(1);
    const session = [...sidecar.sessions.values()][0]!;
    await a.signal('SIGKILL');
    await waitFor(() => session.state === 'failing-over', 'failover started');
    const downAt = Date.now();
    for (let i = 0; i < 10; i++) c.ws.send(`held${i}`);
    await waitFor(() => session.bufferedBytes > 0 && Date.now() - downAt >= 2000, 'two seconds of outage', 5000, 50);
    assert.equal(c.closed, null, 'held, not closed, during the outage');
    await a.start();
    await c.waitForCount(11, 10000);
    assert.deepEqual(c.texts(), ['a|before', ...Array.from({ length: 10 }, (_, i) => `a|held${i}`)]);
    assert.equal(c.closed, null);
    assert.equal(a.connections.at(-1)!.headers['x-balancer-reconnect'], '1');
    c.close();
  });

  test('flapping backend (up/down 20 times): every session recovers every time, no sidecar restart', async () => {
    const port = await freePort();
    let backend: EchoBackend | null = await startEchoBackend({ id: 'f', port, tag: true });
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([{ id: 'f', url: backend.url }]) + FAST));
    const clients = await Promise.all(Array.from({ length: 5 }, (_, i) => TestClient.connect(`${url}/flap/${i}`)));
    for (let cycle = 0; cycle < 20; cycle++) {
      // Up: every session must answer through the backend before it goes down again.
      const before = clients.map((c) => c.received.length);
      clients.forEach((c) => c.ws.send(`cycle${cycle}`));
      await waitFor(() => clients.every((c, i) => c.received.length > before[i]!), `all sessions echo in cycle ${cycle}`, 5000);
      clients.forEach((c) => assert.equal(c.texts().at(-1), `f|cycle${cycle}`));
      await backend!.close();
      backend = null;
      await waitFor(() => [...sidecar!.sessions.values()].every((s) => s.state === 'failing-over'), 'all sessions held');
      await new Promise((r) => setTimeout(r, 150)); // the backend stays down a while (the outage being simulated)
      backend = await startEchoBackend({ id: 'f', port, tag: true });
    }
    assert.ok(clients.every((c) => c.closed === null), 'no client was disconnected');
    assert.equal(sidecar.sessions.size, 5);
    assert.ok([...sidecar.sessions.values()].every((s) => s.failovers === 20));
    clients.forEach((c) => c.close());
    await backend?.close();
  });

  test('half-open backend (SIGSTOP): detected by pong timeout and failed over within ping+pong bounds', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(backendsYaml([a, b]) + FAST));
    const c = await TestClient.connect(`${url}/halfopen`);
    const session = [...sidecar.sessions.values()][0]!;
    const first = session.backend!.id;
    const [stuck, other] = first === 'a' ? [a, b] : [b, a];
    await stuck.signal('SIGSTOP');
    const stoppedAt = Date.now();
    c.ws.send('during');
    await waitFor(() => session.backend?.id === other.id, 'session moved to the other backend', 3000);
    const detectedMs = Date.now() - stoppedAt;
    // pingInterval 200 + pongTimeout 300 + tick granularity (50) + dial: well under a second.
    assert.ok(detectedMs < 1000, `failed over after ${detectedMs} ms`);
    c.ws.send('after');
    await waitFor(() => c.texts().includes(`${other.id}|after`), 'echo from the other backend');
    assert.equal(c.closed, null);
    await stuck.signal('SIGCONT');
    c.close();
  });

  test('client closes while a failover dial is in flight: no crash, no leaked session, dial or timer', async () => {
    const a = await BackendProcess.start('a');
    // A backend whose handshake never completes: the failover dial to it hangs until cancelled.
    const hanging = createServer();
    const pending: Socket[] = [];
    hanging.on('upgrade', (_req, socket: Socket) => {
      socket.resume(); // read, so the proxy hanging up is seen as 'end'
      pending.push(socket);
    });
    await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
    const hangingUrl = `ws://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
    try {
      let url: string;
      ({ sidecar, url } = await startSidecar(
        `backends:\n  - { id: a, url: "${a.url}" }\n  - { id: hanging, url: "${hangingUrl}", standby: true }\n` + FAST,
      ));
      const c = await TestClient.connect(`${url}/leaving`);
      const session = [...sidecar.sessions.values()][0]!;
      assert.equal(session.backend!.id, 'a');
      await a.signal('SIGKILL');
      await waitFor(() => pending.length === 1, 'the failover dial reached the hanging backend');
      const closedByProxy = new Promise((r) => pending[0]!.once('end', r));
      c.ws.close(1000, 'bye');
      await waitFor(() => sidecar!.sessions.size === 0, 'session removed');
      await closedByProxy; // the in-flight dial was cancelled, not left to time out
      assert.equal(session.state, 'closed');
      assert.equal(sidecar.pool.waiting, 0, 'no session left waiting for a backend');
      assert.equal(sidecar.pool.backends.get('hanging')!.sessions, 0);
      assert.equal(sidecar.pool.backends.get('hanging')!.breaker.state, 'closed', 'a cancelled dial is not counted against the backend');
    } finally {
      pending.forEach((p) => p.destroy());
      hanging.close();
    }
  });

  test('past the failover deadline the client is closed with 1013', async () => {
    const a = await BackendProcess.start('a');
    let url: string;
    ({ sidecar, url } = await startSidecar(
      backendsYaml([a]) +
        `session:\n  pingInterval: 200ms\n  pongTimeout: 300ms\nfailover:\n  deadline: 500ms\n  backoff: { initial: 20ms, max: 100ms, multiplier: 2, jitter: 0 }\n`,
    ));
    const c = await TestClient.connect(`${url}/deadline`);
    await a.signal('SIGKILL');
    const closed = await c.waitForClose(3000);
    assert.equal(closed.code, 1013);
    assert.equal(sidecar.sessions.size, 0);
  });

  test('the failover buffer limit closes the client with 1013 instead of growing', async () => {
    const a = await BackendProcess.start('a');
    let url: string;
    ({ sidecar, url } = await startSidecar(
      backendsYaml([a]) +
        `session:\n  pingInterval: 200ms\n  pongTimeout: 300ms\nfailover:\n  bufferMaxMessages: 5\n  backoff: { initial: 20ms, max: 100ms, multiplier: 2, jitter: 0 }\n`,
    ));
    const c = await TestClient.connect(`${url}/buffer`);
    const session = [...sidecar.sessions.values()][0]!;
    await a.signal('SIGKILL');
    await waitFor(() => session.state === 'failing-over', 'failover started');
    for (let i = 0; i < 6; i++) c.ws.send(`x${i}`);
    const closed = await c.waitForClose(3000);
    assert.deepEqual(closed, { code: 1013, reason: 'failover buffer full' });
  });
});
