// Socket-level upstream settings (source address, connect and handshake timeouts, TCP keep-alive)
// and the session timers (idle timeout, max lifetime). Real sockets on 127.0.0.x only.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { after, afterEach, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Session } from '../sidecar/session.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, stopWsServer, type EchoBackend } from '../tools/echo-backend.js';
import { makePki, type TestPki } from './certs.js';
import { pump, startSidecar, TestClient, waitFor } from './helpers.js';

/** What a backend saw of one WebSocket connection. */
interface Seen {
  remoteAddress: string;
  remotePort: number;
  closeCode: number | null;
}

interface RecordingBackend {
  port: number;
  url: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** A ws (or, with tls, wss) echo backend that records the peer address of every connection. */
async function startRecordingBackend(id: string, tls?: { cert: Buffer; key: Buffer }): Promise<RecordingBackend> {
  const server = tls ? createHttpsServer(tls) : createHttpServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const seen: Seen[] = [];
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const entry: Seen = { remoteAddress: req.socket.remoteAddress ?? '', remotePort: req.socket.remotePort ?? 0, closeCode: null };
      seen.push(entry);
      ws.on('error', () => {});
      ws.on('close', (code) => {
        entry.closeCode = code;
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => ws.send(isBinary ? data : `${id}|${data.toString()}`, { binary: isBinary }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}`,
    seen,
    close: () => stopWsServer(server, wss),
  };
}

/** A TCP server that accepts and never writes; it records what it reads and when peers leave. */
interface SilentServer {
  port: number;
  sockets: { data: Buffer; closed: boolean }[];
  close(): Promise<void>;
}

async function startSilentServer(): Promise<SilentServer> {
  const sockets: SilentServer['sockets'] = [];
  const live = new Set<Socket>();
  const server: NetServer = createNetServer((socket) => {
    const entry = { data: Buffer.alloc(0), closed: false };
    sockets.push(entry);
    live.add(socket);
    socket.on('data', (chunk: Buffer) => {
      entry.data = Buffer.concat([entry.data, chunk]);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      entry.closed = true;
      live.delete(socket);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects through the sidecar expecting an HTTP refusal; returns its status and how long it took. */
async function timedRefusal(url: string): Promise<{ status: number | undefined; ms: number }> {
  const started = Date.now();
  try {
    const c = await TestClient.connect(url);
    c.close();
  } catch (err) {
    return { status: (err as { status?: number }).status, ms: Date.now() - started };
  }
  assert.fail(`connecting to ${url} should have been refused`);
}

/**
 * The kernel's view of one IPv4 TCP socket, from /proc/net/tcp (Linux): the `tr` column is the
 * pending timer (2 = the keep-alive timer sk_timer, 0 = none) and `when` its expiry in USER_HZ
 * ticks. An established socket has its keep-alive timer pending exactly when SO_KEEPALIVE is on.
 */
function procTcpTimer(local: { address: string; port: number }, remote: { address: string; port: number }): { timer: number; when: number } | null {
  const hex = (ip: string, port: number) =>
    `${Buffer.from(ip.split('.').map(Number).reverse()).toString('hex').toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const want = `${hex(local.address, local.port)} ${hex(remote.address, remote.port)} 01`; // 01 = ESTABLISHED
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (`${fields[1]} ${fields[2]} ${fields[3]}` !== want) continue;
    const [tr, when] = fields[5]!.split(':') as [string, string];
    return { timer: parseInt(tr, 16), when: parseInt(when, 16) };
  }
  return null;
}

function procTcpReadable(): boolean {
  try {
    return readFileSync('/proc/net/tcp', 'utf8').includes('local_address');
  } catch {
    return false;
  }
}

const sessionsOf = (s: Sidecar) => [...s.sessions.values()];

describe('upstream socket settings', () => {
  let sidecar: Sidecar | undefined;
  const closers: (() => Promise<void>)[] = [];
  let pki: TestPki | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    for (const close of closers.splice(0)) await close();
  });
  after(() => pki?.cleanup());

  async function recording(id: string, tls?: { cert: Buffer; key: Buffer }): Promise<RecordingBackend> {
    const b = await startRecordingBackend(id, tls);
    closers.push(b.close);
    return b;
  }

  test('upstream.localAddress: 127.0.0.2 is the source address the backend sees (127.0.0.1 without it)', async () => {
    const b = await recording('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(`upstream:\n  localAddress: 127.0.0.2\nbackends:\n  - { id: b, url: "${b.url}" }\n`));
    const c = await TestClient.connect(`${url}/src`);
    c.ws.send('x');
    await c.waitForCount(1);
    assert.equal(c.texts()[0], 'b|x');
    assert.equal(b.seen.length, 1);
    assert.equal(b.seen[0]!.remoteAddress, '127.0.0.2');
    c.close();
    await sidecar.stop(0);

    ({ sidecar, url } = await startSidecar(`backends:\n  - { id: b, url: "${b.url}" }\n`));
    const d = await TestClient.connect(`${url}/src`);
    assert.equal(b.seen.length, 2);
    assert.equal(b.seen[1]!.remoteAddress, '127.0.0.1', 'the default source address differs, so the first check means something');
    d.close();
  });

  test('upstream.connectTimeout covers the TLS handshake: a wss:// backend that never answers gives 502 after ~connectTimeout', async () => {
    const silent = await startSilentServer();
    closers.push(silent.close);
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `upstream:\n  connectTimeout: 300ms\n  handshakeTimeout: 10s\nhealth:\n  breaker:\n    threshold: 0\n` +
        `backends:\n  - { id: hung, url: "wss://127.0.0.1:${silent.port}" }\n`,
    ));
    const { status, ms } = await timedRefusal(`${url}/tls-hang`);
    assert.equal(status, 502);
    assert.ok(ms >= 250, `502 came after ${ms} ms: sooner than connectTimeout`);
    assert.ok(ms < 3000, `502 came after ${ms} ms: not bounded by connectTimeout (300ms)`);
    assert.equal(silent.sockets.length, 1, 'the sidecar opened one TCP connection');
    assert.equal(silent.sockets[0]!.data[0], 0x16, 'and sent a TLS ClientHello (handshake record) on it');
    await waitFor(() => silent.sockets[0]!.closed, 'the sidecar to close the hung connection');
  });

  test('upstream.handshakeTimeout: a backend that reads the upgrade and never answers gives 502 after ~handshakeTimeout', async () => {
    const silent = await startSilentServer();
    closers.push(silent.close);
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `upstream:\n  handshakeTimeout: 300ms\nhealth:\n  breaker:\n    threshold: 0\nbackends:\n  - { id: mute, url: "ws://127.0.0.1:${silent.port}" }\n`,
    ));
    const { status, ms } = await timedRefusal(`${url}/upgrade-hang`);
    assert.equal(status, 502);
    assert.ok(ms >= 250, `502 came after ${ms} ms: sooner than handshakeTimeout`);
    assert.ok(ms < 3000, `502 came after ${ms} ms: not bounded by handshakeTimeout (300ms)`);
    assert.equal(silent.sockets.length, 1);
    const request = silent.sockets[0]!.data.toString();
    assert.match(request, /^GET \/upgrade-hang HTTP\/1\.1\r\n/, 'the backend received the upgrade request');
    assert.match(request, /\r\nupgrade: websocket\r\n/i);
    await waitFor(() => silent.sockets[0]!.closed, 'the sidecar to close the hung connection');
  });

  test('upstream.keepAlive: the backend socket has the kernel keep-alive timer armed (initialDelay) when enabled, not when disabled', async (t) => {
    if (!procTcpReadable()) return t.skip('needs Linux /proc/net/tcp');
    const b = await recording('b');
    const socketOf = async (yaml: string) => {
      let url: string;
      ({ sidecar, url } = await startSidecar(yaml));
      const c = await TestClient.connect(`${url}/ka`);
      const seen = b.seen.at(-1)!;
      // The sidecar's end: local = what the backend sees as its peer, remote = the backend.
      const row = procTcpTimer({ address: seen.remoteAddress, port: seen.remotePort }, { address: '127.0.0.1', port: b.port });
      assert.ok(row, 'the sidecar->backend socket is listed in /proc/net/tcp');
      c.close();
      await sidecar.stop(0);
      return row;
    };
    const on = await socketOf(`upstream:\n  keepAlive: { enabled: true, initialDelay: 45s }\nbackends:\n  - { id: b, url: "${b.url}" }\n`);
    assert.equal(on.timer, 2, 'keep-alive timer pending');
    // USER_HZ is 100: 45 s is 4500 ticks (a little less by the time we look).
    assert.ok(on.when > 4000 && on.when <= 4500, `keep-alive timer due in ${on.when} ticks, expected ~4500 (initialDelay 45s)`);
    const off = await socketOf(`upstream:\n  keepAlive: { enabled: false }\nbackends:\n  - { id: b, url: "${b.url}" }\n`);
    assert.equal(off.timer, 0, 'no keep-alive timer with keepAlive.enabled: false');
  });

  test('upstream.keepAlive also applies to wss:// backends', async (t) => {
    if (!procTcpReadable()) return t.skip('needs Linux /proc/net/tcp');
    pki ??= makePki();
    const b = await recording('s', { cert: pki.server.cert, key: pki.server.key });
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `upstream:\n  keepAlive: { enabled: true, initialDelay: 45s }\n  tls: { caFile: "${pki.ca.certFile}" }\nbackends:\n  - { id: s, url: "${b.url}" }\n`,
    ));
    const c = await TestClient.connect(`${url}/ka`);
    c.ws.send('x');
    await c.waitForCount(1);
    assert.equal(c.texts()[0], 's|x');
    const seen = b.seen[0]!;
    const row = procTcpTimer({ address: seen.remoteAddress, port: seen.remotePort }, { address: '127.0.0.1', port: b.port });
    assert.ok(row, 'the sidecar->backend socket is listed in /proc/net/tcp');
    assert.equal(row.timer, 2, 'keep-alive timer pending');
    assert.ok(row.when > 4000 && row.when <= 4500, `keep-alive timer due in ${row.when} ticks, expected ~4500`);
    c.close();
  });
});

describe('session timers', () => {
  let sidecar: Sidecar | undefined;
  const backends: (EchoBackend | RecordingBackend)[] = [];
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    for (const b of backends.splice(0)) await b.close();
  });

  test('session.idleTimeout: a silent session is closed with 1001 on both legs; one sending every 50 ms for 1 s is not', async () => {
    const b = await startRecordingBackend('b');
    backends.push(b);
    let url: string;
    ({ sidecar, url } = await startSidecar(`session:\n  idleTimeout: 300ms\nbackends:\n  - { id: b, url: "${b.url}" }\n`));

    const busy = await TestClient.connect(`${url}/busy`);
    const traffic = pump(busy, 'm', 50);
    const idleStarted = Date.now();
    const idle = await TestClient.connect(`${url}/idle`);
    const closed = await idle.waitForClose(3000);
    const idleMs = Date.now() - idleStarted;
    assert.equal(closed.code, 1001);
    // The check runs on a tick of idleTimeout/4, so allow a quarter early.
    assert.ok(idleMs >= 200, `idle session closed after ${idleMs} ms, idleTimeout is 300ms`);
    assert.ok(idleMs < 2000, `idle session closed only after ${idleMs} ms`);
    await waitFor(() => b.seen[1]?.closeCode !== null, 'the idle session\'s backend leg to close');
    assert.equal(b.seen[1]!.closeCode, 1001, 'the backend leg is closed with 1001 too');

    await waitFor(() => traffic.sent() >= 20, '1 s of traffic (20 messages at 50 ms)', 3000);
    assert.equal(busy.closed, null, 'a session with traffic is not idle');
    const sent = traffic.stop();
    await waitFor(() => busy.received.length >= sent || busy.closed !== null, 'every message echoed');
    assert.equal(busy.received.length, sent);
    assert.equal(busy.closed, null);
    // Once quiet, the same session does time out: the timer was live all along.
    assert.equal((await busy.waitForClose(3000)).code, 1001);
  });

  test('session.maxLifetime: the session is migrated (planned, not a failover) without closing the client; later messages reach the new backend', async () => {
    const a = await startEchoBackend({ id: 'a', tag: true });
    const b = await startEchoBackend({ id: 'b', tag: true });
    backends.push(a, b);
    let url: string;
    ({ sidecar, url } = await startSidecar(
      // pingInterval/pongTimeout 1s make the sidecar tick every 250 ms (the default is 1 s).
      `session:\n  maxLifetime: 400ms\n  pingInterval: 1s\n  pongTimeout: 1s\nfailover:\n  drainTimeout: 500ms\nbackends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n`,
    ));
    const c = await TestClient.connect(`${url}/life`);
    const session = sessionsOf(sidecar)[0]!;
    const first = session.backend!.id;
    c.ws.send('before');
    await waitFor(() => c.texts().includes(`${first}|before`), 'echo from the first backend');

    const visited = [first];
    for (let move = 1; move <= 2; move++) {
      await waitFor(() => session.backend !== null && session.backend.id !== visited.at(-1), `lifetime migration ${move}`, 4000);
      const now = session.backend!.id;
      visited.push(now);
      c.ws.send(`after${move}`);
      await waitFor(() => c.texts().some((t) => t.endsWith(`|after${move}`)), `echo of after${move}`);
      assert.equal(c.texts().find((t) => t.endsWith(`|after${move}`)), `${now}|after${move}`, 'echoed by the backend the session moved to');
    }
    assert.deepEqual(visited, first === 'a' ? ['a', 'b', 'a'] : ['b', 'a', 'b']);
    assert.equal(session.failovers, 0, 'lifetime moves are planned migrations, not failovers');
    assert.equal(c.closed, null, 'the client was never closed');
    assert.equal(sidecar.sessions.size, 1);
    assert.deepEqual(c.texts().map((t) => t.split('|')[1]), ['before', 'after1', 'after2'], 'nothing lost or duplicated');
    c.close();
  });

  test('session.maxLifetime: sessions move no sooner than 0.9 × and not much later than 1.1 × maxLifetime', async () => {
    const a = await startEchoBackend({ id: 'a', tag: true });
    const b = await startEchoBackend({ id: 'b', tag: true });
    backends.push(a, b);
    let url: string;
    ({ sidecar, url } = await startSidecar(`session:\n  maxLifetime: 400ms\nbackends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n`));
    // Sessions opened at different moments of the sidecar's tick must all get their full lifetime.
    const opened: { c: TestClient; at: number; session: Session; first: string; movedAfter?: number }[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await TestClient.connect(`${url}/life${i}`);
      const at = Date.now();
      const session = sessionsOf(sidecar).find((x) => x.path === `/life${i}`)!;
      opened.push({ c, at, session, first: session.backend!.id });
      await new Promise((r) => setTimeout(r, 30)); // spread the openings over a tick period
    }
    await waitFor(
      () => {
        for (const o of opened) if (o.movedAfter === undefined && o.session.backend?.id !== o.first) o.movedAfter = Date.now() - o.at;
        return opened.every((o) => o.movedAfter !== undefined);
      },
      'every session moved once',
      4000,
      5,
    );
    for (const o of opened) {
      assert.ok(o.movedAfter! >= 360, `moved ${o.movedAfter} ms after opening; no sooner than 360 ms allowed`);
      assert.ok(o.movedAfter! < 1000, `moved ${o.movedAfter} ms after opening; 440 ms + a tick expected`);
    }
    opened.forEach((o) => o.c.close());
  });
});

