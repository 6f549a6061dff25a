// What a client sees through the sidecar when nothing fails: bytes, frames, handshake details.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, stopWsServer, type ConnectionInfo, type EchoBackend } from '../tools/echo-backend.js';
import { backendsYaml, startSidecar, TestClient, waitFor } from './helpers.js';

describe('proxying through the sidecar', () => {
  let a: EchoBackend;
  const seen: ConnectionInfo[] = [];
  let sidecar: Sidecar;
  let url: string;

  before(async () => {
    a = await startEchoBackend({ id: 'a', perMessageDeflate: true, onConnection: (info) => seen.push(info) });
    ({ sidecar, url } = await startSidecar(
      `${backendsYaml([{ id: 'a', url: `${a.url}/base?from=sidecar` }])}` +
        'session:\n  blockRequestHeaders: [x-secret]\n  passResponseHeaders: [x-backend-said]\n',
    ));
  });
  after(async () => {
    await sidecar.stop(0);
    await a.close();
  });

  test('text and binary messages come back byte for byte, with their frame type', async () => {
    const c = await TestClient.connect(`${url}/echo`);
    const binary = Buffer.from([0, 1, 2, 255, 254, 0x80]);
    c.ws.send('héllo wörld');
    c.ws.send(binary);
    await c.waitForCount(2);
    assert.deepEqual(c.received[0], { data: Buffer.from('héllo wörld'), isBinary: false });
    assert.deepEqual(c.received[1], { data: binary, isBinary: true });
    c.close();
  });

  test('a 16 MiB message arrives whole', async () => {
    const c = await TestClient.connect(`${url}/big`);
    const big = Buffer.alloc(16 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big[i] = i % 251;
    c.ws.send(big);
    await c.waitForCount(1, 20000);
    assert.equal(c.received[0]!.data.length, big.length);
    assert.ok(c.received[0]!.data.equals(big));
    c.close();
  });

  test('a fragmented message is delivered as one message', async () => {
    const c = await TestClient.connect(`${url}/frag`);
    c.ws.send('part one, ', { fin: false });
    c.ws.send('part two, ', { fin: false });
    c.ws.send('the end', { fin: true });
    await c.waitForCount(1);
    assert.equal(c.texts()[0], 'part one, part two, the end');
    c.close();
  });

  test('path and query are appended to the backend URL; headers are filtered and forwarded', async () => {
    const before = seen.length;
    const c = await TestClient.connect(`${url}/room/42?user=ann&x=1`, [], {
      headers: { 'x-secret': 'no', 'x-custom': 'yes', 'x-forwarded-for': '203.0.113.9', 'x-balancer-reconnect': 'forged' },
    });
    await waitFor(() => seen.length > before, 'backend connection');
    const info = seen[seen.length - 1]!;
    assert.equal(info.path, '/base/room/42?from=sidecar&user=ann&x=1');
    assert.equal(info.headers['x-custom'], 'yes');
    assert.equal(info.headers['x-secret'], undefined, 'blocked header must not reach the backend');
    assert.equal(info.headers['x-balancer-reconnect'], undefined, "a client's reconnect header is stripped");
    assert.equal(info.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1', 'XFF appended (trusted by default)');
    assert.equal(info.headers['x-forwarded-proto'], 'http');
    assert.equal(info.extensions, '', 'permessage-deflate is off on the backend leg by default');
    c.close();
  });

  test('subprotocol: the client offer is forwarded and the backend choice returned', async () => {
    const c = await TestClient.connect(`${url}/proto`, ['ocpp2.0.1', 'ocpp1.6']);
    assert.equal(c.ws.protocol, 'ocpp2.0.1');
    assert.equal(seen[seen.length - 1]!.protocol, 'ocpp2.0.1');
    c.ws.send('[2,"1","Heartbeat",{}]');
    await c.waitForCount(1);
    assert.equal(c.texts()[0], '[2,"1","Heartbeat",{}]');
    c.close();
  });

  test('permessage-deflate offered by the client is negotiated on the client leg and works', async () => {
    const c = await TestClient.connect(`${url}/deflate`, [], { perMessageDeflate: { threshold: 0 } });
    assert.match(c.ws.extensions, /permessage-deflate/);
    const text = 'compress me '.repeat(1000);
    c.ws.send(text);
    await c.waitForCount(1);
    assert.equal(c.texts()[0], text);
    assert.equal(seen[seen.length - 1]!.extensions, '', 'the backend leg negotiates on its own (off)');
    c.close();
  });

  test('sidecar answers pings from the client', async () => {
    const c = await TestClient.connect(`${url}/ping`);
    let pong = false;
    c.ws.on('pong', () => (pong = true));
    c.ws.ping();
    await waitFor(() => pong, 'pong from sidecar');
    c.close();
  });

  test('a message over maxMessageBytes closes that session with 1009 and nothing else', async () => {
    const { sidecar: small, url: smallUrl } = await startSidecar(`${backendsYaml([{ id: 'a', url: a.url }])}session:\n  maxMessageBytes: 1KiB\n`);
    try {
      const ok = await TestClient.connect(`${smallUrl}/ok`);
      const c = await TestClient.connect(`${smallUrl}/big`);
      c.ws.send(Buffer.alloc(2048));
      assert.equal((await c.waitForClose()).code, 1009);
      ok.ws.send('still here');
      await ok.waitForCount(1);
      assert.equal(ok.texts()[0], 'still here');
      ok.close();
      await waitFor(() => small.sessions.size === 0, 'sessions closed');
    } finally {
      await small.stop(0);
    }
  });

  test('a backend message over maxMessageBytes closes that session with 1009 too', async () => {
    // The tagged echo adds "t|" to what it sends back: 1 KiB in, 1 KiB + 2 bytes out.
    const tagged = await startEchoBackend({ id: 't', tag: true });
    const { sidecar: small, url: smallUrl } = await startSidecar(`${backendsYaml([{ id: 't', url: tagged.url }])}session:\n  maxMessageBytes: 1KiB\n`);
    try {
      const c = await TestClient.connect(`${smallUrl}/big-reply`);
      c.ws.send('x'.repeat(1024));
      assert.deepEqual(await c.waitForClose(), { code: 1009, reason: 'backend message too big' });
      await waitFor(() => small.sessions.size === 0 && tagged.clients.size === 0, 'both legs closed');
    } finally {
      await small.stop(0);
      await tagged.close();
    }
  });

  test('invalid UTF-8 in a text frame closes the session with 1007', async () => {
    const c = await TestClient.connect(`${url}/utf8`);
    // ws validates what it sends only when told to; write a raw masked text frame with bad UTF-8.
    const socket = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
    socket.write(Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]));
    assert.equal((await c.waitForClose()).code, 1007);
  });
});

describe('handshake outcomes', () => {
  let refusing: Server;
  let refusingUrl: string;
  let failing: Server;
  let failingUrl: string;
  let good: EchoBackend;

  before(async () => {
    const listen = async (status: number, headers: Record<string, string>) => {
      const srv = createServer();
      srv.on('upgrade', (_req, socket) => {
        const body = `refused with ${status}`;
        socket.end(
          `HTTP/1.1 ${status} X\r\n${Object.entries(headers)
            .map(([k, v]) => `${k}: ${v}\r\n`)
            .join('')}content-length: ${body.length}\r\n\r\n${body}`,
        );
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      return { srv, url: `ws://127.0.0.1:${(srv.address() as AddressInfo).port}` };
    };
    ({ srv: refusing, url: refusingUrl } = await listen(403, { 'x-why': 'token expired' }));
    ({ srv: failing, url: failingUrl } = await listen(503, {}));
    good = await startEchoBackend({ id: 'good', tag: true });
  });
  after(async () => {
    refusing.close();
    failing.close();
    await good.close();
  });

  test('a backend refusing with 4xx: the client gets that status and body, no other backend tried', async () => {
    const { sidecar, url } = await startSidecar(
      `${backendsYaml([{ id: 'refusing', url: refusingUrl }])}balancer:\n  algorithm: round-robin\n`,
    );
    try {
      const res = await new Promise<{ status: number; body: string; why: string | undefined }>((resolve, reject) => {
        const ws = new WebSocket(`${url}/x`);
        ws.on('unexpected-response', (_req, r) => {
          let body = '';
          r.on('data', (d: Buffer) => (body += d.toString()));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body, why: r.headers['x-why'] as string | undefined }));
        });
        ws.on('open', () => reject(new Error('should not open')));
        ws.on('error', () => {});
      });
      assert.deepEqual(res, { status: 403, body: 'refused with 403', why: 'token expired' });
    } finally {
      await sidecar.stop(0);
    }
  });

  test('5xx and refused connections try the next backend; none left gives 502', async () => {
    const { sidecar, url } = await startSidecar(
      `${backendsYaml([
        { id: 'failing', url: failingUrl },
        { id: 'dead', url: 'ws://127.0.0.1:1' },
        { id: 'good', url: good.url },
      ])}balancer:\n  algorithm: round-robin\n`,
    );
    try {
      for (let i = 0; i < 3; i++) {
        const c = await TestClient.connect(`${url}/try${i}`);
        c.ws.send('hi');
        await c.waitForCount(1);
        assert.equal(c.texts()[0], 'good|hi');
        c.close();
      }
    } finally {
      await sidecar.stop(0);
    }
    const { sidecar: none, url: noneUrl } = await startSidecar(backendsYaml([{ id: 'failing', url: failingUrl }]));
    try {
      await assert.rejects(TestClient.connect(`${noneUrl}/x`), (err: { status?: number }) => err.status === 502);
    } finally {
      await none.stop(0);
    }
  });

  test('backend response headers named in passResponseHeaders reach the client 101', async () => {
    const srv = createServer();
    const { WebSocketServer } = await import('ws');
    const wss = new WebSocketServer({ noServer: true });
    wss.on('headers', (h) => h.push('x-backend-said: hello', 'x-private: no'));
    srv.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => {}));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const backendUrl = `ws://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const { sidecar, url } = await startSidecar(`${backendsYaml([{ id: 'h', url: backendUrl }])}session:\n  passResponseHeaders: [X-Backend-Said]\n`);
    try {
      const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.on('upgrade', (res) => resolve(res.headers));
        ws.on('error', reject);
      });
      assert.equal(headers['x-backend-said'], 'hello');
      assert.equal(headers['x-private'], undefined);
    } finally {
      await sidecar.stop(0);
      for (const c of wss.clients) c.terminate();
      srv.close();
    }
  });

  test('a client that leaves while its backend is being dialled: no session, the backend leg is closed', async () => {
    // A backend that answers upgrades 300 ms late, and says when one arrives.
    const srv = createServer();
    const { WebSocketServer } = await import('ws');
    const wss = new WebSocketServer({ noServer: true });
    let upgrades = 0;
    let accepted = 0;
    srv.on('upgrade', (req, socket, head) => {
      upgrades++;
      setTimeout(
        () =>
          wss.handleUpgrade(req, socket, head, (ws) => {
            accepted++;
            ws.on('error', () => {});
          }),
        300,
      );
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const slowUrl = `ws://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const { sidecar, url } = await startSidecar(backendsYaml([{ id: 'slow', url: slowUrl }]));
    try {
      const ws = new WebSocket(`${url}/leaving-early`);
      ws.on('error', () => {});
      await waitFor(() => upgrades === 1, 'the sidecar is dialling the backend');
      ws.terminate(); // gone before the sidecar could answer its upgrade
      await waitFor(() => accepted === 1, 'the backend handshake completed', 3000);
      await waitFor(() => wss.clients.size === 0, 'the sidecar closed the unused backend leg', 3000);
      assert.equal(sidecar.sessions.size, 0);
      assert.equal(sidecar.pool.backends.get('slow')!.sessions, 0);
    } finally {
      await sidecar.stop(0);
      await stopWsServer(srv, wss);
    }
  });

  test('plain HTTP requests get 426; malformed upgrades get 400', async () => {
    const { sidecar, url } = await startSidecar(backendsYaml([{ id: 'good', url: good.url }]));
    try {
      const httpUrl = url.replace('ws:', 'http:');
      const plain = await fetch(httpUrl);
      assert.equal(plain.status, 426);
      // A raw socket: an upgrade request without Sec-WebSocket-Key.
      const { connect } = await import('node:net');
      const status = await new Promise<string>((resolve) => {
        const s = connect(sidecar.address().port, '127.0.0.1', () => {
          s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n');
        });
        let buf = '';
        s.on('data', (d) => (buf += d.toString()));
        s.on('close', () => resolve(buf.split('\r\n')[0]!));
      });
      assert.equal(status, 'HTTP/1.1 400 Bad Request');
      assert.equal(sidecar.sessions.size, 0);
    } finally {
      await sidecar.stop(0);
    }
  });
});
