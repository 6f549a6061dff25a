// The sidecar's own WebSocket handshake (sidecar/wire/handshake.ts), as clients and backends see
// it: 3xx/4xx answers relayed (status, headers, body however it is framed), invalid 101s treated
// as dial failures, frames that come with a 101, the upgrade request a backend receives,
// permessage-deflate on the backend leg (ws), the websocket health probe, and who closes the TCP
// connection after a closing handshake. Backends that must say what ws cannot are raw TCP servers
// writing crafted bytes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startEchoBackend, type EchoBackend } from '../tools/echo-backend.js';
import { backendsYaml, startSidecar, TestClient, waitFor } from './helpers.js';
import { acceptFor, rawBackend, switching, type SeenRequest } from './raw-backend.js';

const KiB = 1024;
/** Short enough that a sidecar waiting for bytes that never come fails the test, not its timeout. */
const UPSTREAM = 'upstream: { handshakeTimeout: 3s }\n';

const turn = () => new Promise((r) => setImmediate(r));

/** An unmasked frame, as a server sends it (payloads under 126 bytes). */
function serverFrame(opcode: number, payload: Buffer): Buffer {
  assert.ok(payload.length < 126);
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

/** A masked frame, as a client sends it (payloads under 126 bytes). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  assert.ok(payload.length < 126);
  const key = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), key, masked]);
}

/** Writes `text` one byte per write, letting the sidecar (in this process) read each on its own. */
async function trickle(socket: net.Socket, text: string): Promise<void> {
  for (const byte of Buffer.from(text, 'latin1')) {
    socket.write(Buffer.from([byte]));
    await turn();
  }
}

// ---- what a client gets back -------------------------------------------------------------

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** An upgrade request with node's HTTP client; a non-101 answer is read whole (a 101 is closed at once). */
function upgradeRequest(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url.replace(/^ws:/, 'http:'), {
      agent: false,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: 101, headers: res.headers, body: Buffer.alloc(0) });
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** baton_backend_dial_failures_total for one backend (one reason, or all together), from the admin /metrics. */
async function dialFailures(sidecar: Sidecar, backend: string, reason = '[^"]*'): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/metrics`)).text();
  const line = new RegExp(`^baton_backend_dial_failures_total\\{backend="${backend}",reason="${reason}"\\} (\\S+)$`, 'gm');
  return [...text.matchAll(line)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Runs `body` against a sidecar made from this YAML, and stops the sidecar after. */
async function withSidecar(yaml: string, body: (sidecar: Sidecar, url: string) => Promise<void>): Promise<void> {
  const { sidecar, url } = await startSidecar(yaml);
  try {
    await body(sidecar, url);
  } finally {
    await sidecar.stop(0);
  }
}

/** A tagged echo backend counting the connections it got (the one a failed dial falls through to). */
async function fallback(): Promise<EchoBackend & { connections: () => number }> {
  let n = 0;
  const echo = await startEchoBackend({ id: 'good', tag: true, onConnection: () => n++ });
  return Object.assign(echo, { connections: () => n });
}

const standbyYaml = (first: string, standby: string) =>
  `backends:\n  - { id: first, url: "${first}" }\n  - { id: good, url: "${standby}", standby: true }\n${UPSTREAM}`;

// ---- 1. refusals ---------------------------------------------------------------------------

describe("a backend's 3xx/4xx goes to the client as it was sent", () => {
  /** Answers every upgrade with this refusal, then leaves the connection open unless told to end it. */
  async function refusingWith(write: (socket: net.Socket) => unknown, check: (answer: Answer) => void): Promise<void> {
    const refusing = await rawBackend((socket) => write(socket));
    const good = await fallback();
    try {
      await withSidecar(standbyYaml(refusing.url, good.url), async (_sidecar, url) => {
        check(await upgradeRequest(`${url}/chat`));
        assert.equal(good.connections(), 0, 'no other backend is tried after a 3xx/4xx');
        assert.equal(refusing.requests.length, 1);
      });
    } finally {
      refusing.close();
      await good.close();
    }
  }

  test('403 with a Content-Length body (connection left open, bytes after the body ignored): status, body, headers minus hop-by-hop', async () => {
    const body = 'forbidden: token expired';
    await refusingWith(
      (s) =>
        s.write(
          `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Why: token expired\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: ${body.length}\r\n\r\n${body}NOT PART OF IT`,
        ),
      (answer) => {
        assert.equal(answer.status, 403);
        assert.equal(answer.body.toString(), body);
        assert.equal(answer.headers['x-why'], 'token expired');
        assert.equal(answer.headers['content-type'], 'text/plain');
        assert.deepEqual(answer.headers['set-cookie'], ['a=1', 'b=2']);
        assert.equal(answer.headers['keep-alive'], undefined, 'hop-by-hop headers are not relayed');
        assert.equal(answer.headers.connection, 'close');
        assert.equal(answer.headers['content-length'], String(body.length));
      },
    );
  });

  test('302 with a chunked body (chunk extensions, several writes) and a Location header: decoded body, Location kept', async () => {
    const chunks = ['<a href="https://login.example/">', 'Found', '</a>\n'];
    await refusingWith(
      async (s) => {
        s.write('HTTP/1.1 302 Found\r\nLocation: https://login.example/?next=%2Fchat\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n');
        for (const [i, c] of chunks.entries()) {
          s.write(`${c.length.toString(16)}${i === 1 ? ';note=x' : ''}\r\n${c}\r\n`);
          await turn();
        }
        s.write('0\r\n\r\n');
      },
      (answer) => {
        assert.equal(answer.status, 302);
        assert.equal(answer.headers.location, 'https://login.example/?next=%2Fchat');
        assert.equal(answer.body.toString(), chunks.join(''));
        assert.equal(answer.headers['transfer-encoding'], undefined);
      },
    );
  });

  test('401 without a length: the body is what comes until the backend closes', async () => {
    await refusingWith(
      async (s) => {
        s.write('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="chat"\r\n\r\nlog in ');
        await turn();
        s.end('first, please');
      },
      (answer) => {
        assert.equal(answer.status, 401);
        assert.equal(answer.headers['www-authenticate'], 'Bearer realm="chat"');
        assert.equal(answer.body.toString(), 'log in first, please');
      },
    );
  });

  for (const framing of ['content-length', 'chunked', 'none'] as const) {
    test(`a 40 KiB refusal body (${framing}, connection left open) is cut at 16 KiB`, async () => {
      const big = Buffer.from(Array.from({ length: 40 * KiB }, (_, i) => 0x41 + (i % 26)));
      await refusingWith(
        async (s) => {
          const length = framing === 'content-length' ? `Content-Length: ${big.length}\r\n` : framing === 'chunked' ? 'Transfer-Encoding: chunked\r\n' : '';
          s.write(`HTTP/1.1 429 Too Many Requests\r\n${length}\r\n`);
          for (let at = 0; at < big.length; at += 10 * KiB) {
            const piece = big.subarray(at, at + 10 * KiB);
            s.write(framing === 'chunked' ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece);
            await turn();
          }
        },
        (answer) => {
          assert.equal(answer.status, 429);
          assert.equal(answer.body.length, 16 * KiB);
          assert.ok(answer.body.equals(big.subarray(0, 16 * KiB)), 'the first 16 KiB, in order');
        },
      );
    });
  }

  test('a response head written one byte at a time is read whole', async () => {
    await refusingWith(
      async (s) => {
        await trickle(s, 'HTTP/1.1 403 Forbidden\r\nX-Why: slow\r\nContent-Length: 4\r\n\r\n');
        s.write('nope');
      },
      (answer) => {
        assert.equal(answer.status, 403);
        assert.equal(answer.headers['x-why'], 'slow');
        assert.equal(answer.body.toString(), 'nope');
      },
    );
  });
});

// ---- 2. invalid 101s ------------------------------------------------------------------------

describe('an invalid 101 is a failed dial: the next backend serves, alone it is a 502, and it is counted', () => {
  const cases: [string, (socket: net.Socket, req: SeenRequest) => unknown][] = [
    ['a wrong Sec-WebSocket-Accept', (s, req) => s.write(switching(req, { accept: acceptFor(randomBytes(16).toString('base64')) }))],
    ['a subprotocol that was not offered', (s, req) => s.write(switching(req, { extra: ['Sec-WebSocket-Protocol: other'] }))],
    ['a Sec-WebSocket-Extensions header (none was offered)', (s, req) => s.write(switching(req, { extra: ['Sec-WebSocket-Extensions: permessage-deflate'] }))],
    ['no "Upgrade: websocket"', (s, req) => s.write(switching(req, { upgrade: '' }))],
    ['"Upgrade: h2c"', (s, req) => s.write(switching(req, { upgrade: 'h2c' }))],
    ['a head over 16 KiB (in one write)', (s, req) => s.write(switching(req, { extra: [`X-Padding: ${'p'.repeat(17 * KiB)}`] }))],
    ['a head over 16 KiB (in many writes)', async (s, req) => {
      s.write('HTTP/1.1 101 Switching Protocols\r\n');
      for (let i = 0; i < 20; i++) {
        s.write(`X-Padding-${i}: ${'p'.repeat(KiB)}\r\n`);
        await turn();
      }
      s.write(switching(req).slice('HTTP/1.1 101 Switching Protocols\r\n'.length));
    }],
    ['the backend closing mid-head', (s) => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConn')],
    ['a garbage status line', (s, req) => s.write(switching(req).replace('HTTP/1.1 101', 'HTTP/1.1 1O1'))],
  ];

  for (const [what, answer] of cases) {
    test(what, async () => {
      const bad = await rawBackend(answer);
      const good = await fallback();
      try {
        await withSidecar(standbyYaml(bad.url, good.url), async (sidecar, url) => {
          const c = await TestClient.connect(`${url}/x`, ['chat']);
          c.ws.send('hi');
          await c.waitForCount(1);
          assert.deepEqual(c.texts(), ['good|hi'], 'served by the next backend');
          assert.equal(c.ws.protocol, 'chat');
          assert.equal(bad.requests.length, 1, 'the bad backend was tried first, once');
          assert.equal(await dialFailures(sidecar, 'first'), 1);
          assert.equal(await dialFailures(sidecar, 'first', what.includes('subprotocol') ? 'subprotocol' : 'other'), 1, 'counted with its reason');
          c.close();
        });
        await withSidecar(`${backendsYaml([{ id: 'first', url: bad.url }])}${UPSTREAM}`, async (sidecar, url) => {
          const started = Date.now();
          const answer = await upgradeRequest(`${url}/x`, { 'sec-websocket-protocol': 'chat' });
          assert.equal(answer.status, 502);
          assert.ok(Date.now() - started < 1500, 'known bad at once, not after the handshake timeout');
          assert.equal(await dialFailures(sidecar, 'first'), 1);
          assert.equal(sidecar.sessions.size, 0);
        });
      } finally {
        bad.close();
        await good.close();
      }
    });
  }
});

// ---- 3. frames that come with the 101 ----------------------------------------------------------

describe('frames a backend sends with its 101', () => {
  const first = serverFrame(0x1, Buffer.from('hello before anything'));
  const second = serverFrame(0x2, Buffer.from([0, 1, 2, 0xff, 0x80]));
  const expected = [
    { data: Buffer.from('hello before anything'), isBinary: false },
    { data: Buffer.from([0, 1, 2, 0xff, 0x80]), isBinary: true },
  ];
  const variants: [string, (s: net.Socket, req: SeenRequest) => Promise<void>][] = [
    ['in the same TCP write', async (s, req) => void s.write(Buffer.concat([Buffer.from(switching(req), 'latin1'), first, second]))],
    ['with the last byte of a head written one byte at a time', async (s, req) => {
      const head = switching(req);
      await trickle(s, head.slice(0, -1));
      s.write(Buffer.concat([Buffer.from(head.slice(-1), 'latin1'), first, second]));
    }],
  ];
  for (const [how, answer] of variants) {
    for (const deflate of [false, true]) {
      test(`${how} reach the client first and intact (client leg: ${deflate ? 'ws, permessage-deflate' : 'our framing'})`, async () => {
        const backend = await rawBackend(answer);
        try {
          await withSidecar(`${backendsYaml([{ id: 'raw', url: backend.url }])}${UPSTREAM}`, async (_sidecar, url) => {
            const c = await TestClient.connect(`${url}/early`, [], deflate ? { perMessageDeflate: {} } : {});
            assert.equal(c.ws.extensions !== '', deflate);
            await c.waitForCount(2);
            assert.deepEqual(c.received, expected);
            c.close();
          });
        } finally {
          backend.close();
        }
      });
    }
  }
});

// ---- 4. the request a backend receives -----------------------------------------------------------

test('the upgrade request a backend receives: path and query, its own Host, a fresh key per dial, the offer, forwarded headers, no hop-by-hop', async () => {
  const backend = await rawBackend((s, req) => s.write(switching(req, { extra: ['Sec-WebSocket-Protocol: chat.v1'] })));
  try {
    await withSidecar(`${backendsYaml([{ id: 'raw', url: `${backend.url}/base?from=sidecar` }])}${UPSTREAM}`, async (_sidecar, url) => {
      const clientKeys = [randomBytes(16).toString('base64'), randomBytes(16).toString('base64')];
      for (const key of clientKeys) {
        const answer = await upgradeRequest(`${url}/room/7?user=ann`, {
          host: 'chat.example:8443',
          connection: 'keep-alive, Upgrade, X-Hop',
          'x-hop': 'only for the first hop',
          'keep-alive': 'timeout=5',
          te: 'trailers',
          'proxy-authorization': 'Basic c2VjcmV0',
          'sec-websocket-key': key,
          'sec-websocket-protocol': 'chat.v2, chat.v1',
          'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits',
          'x-forwarded-for': '203.0.113.9',
          'x-custom': 'yes',
          origin: 'https://app.example',
        });
        assert.equal(answer.status, 101);
        assert.equal(answer.headers['sec-websocket-protocol'], 'chat.v1', "the backend's choice reaches the client");
      }
      assert.equal(backend.requests.length, 2);
      const port = new URL(backend.url).port;
      for (const [i, req] of backend.requests.entries()) {
        assert.equal(req.line, 'GET /base/room/7?from=sidecar&user=ann HTTP/1.1');
        assert.equal(req.get('host'), `127.0.0.1:${port}`);
        assert.equal(req.get('upgrade')?.toLowerCase(), 'websocket');
        assert.equal(req.get('connection')?.toLowerCase(), 'upgrade');
        assert.equal(req.get('sec-websocket-version'), '13');
        const key = req.get('sec-websocket-key')!;
        assert.match(key, /^[+/0-9A-Za-z]{22}==$/);
        assert.equal(Buffer.from(key, 'base64').length, 16);
        assert.notEqual(key, clientKeys[i], "the client's key is not reused");
        assert.equal(req.get('sec-websocket-protocol'), 'chat.v2, chat.v1', 'the offer, in order');
        assert.equal(req.get('x-forwarded-for'), '203.0.113.9, 127.0.0.1');
        assert.equal(req.get('x-forwarded-proto'), 'http');
        assert.equal(req.get('x-forwarded-host'), 'chat.example:8443');
        assert.equal(req.get('x-custom'), 'yes');
        assert.equal(req.get('origin'), 'https://app.example');
        for (const name of ['x-hop', 'keep-alive', 'te', 'proxy-authorization', 'sec-websocket-extensions']) {
          assert.equal(req.get(name), undefined, `${name} is not sent to the backend`);
        }
      }
      assert.notEqual(backend.requests[0]!.get('sec-websocket-key'), backend.requests[1]!.get('sec-websocket-key'), 'a fresh key per dial');
    });
  } finally {
    backend.close();
  }
});

/** Sends an upgrade request with this request-target as written (no client library resolves it first); resolves with the status line. */
function rawUpgrade(url: string, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(url).port), '127.0.0.1');
    let head = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      head += chunk;
      const end = head.indexOf('\r\n');
      if (end === -1) return;
      socket.destroy();
      resolve(head.slice(0, end));
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed without an answer to ${target}`)));
    socket.write(
      `GET ${target} HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
    );
  });
}

test("a client's path stays under the backend URL's path: dot segments resolved within it, \"//\" kept, an absolute-form target refused", async () => {
  const backend = await rawBackend((s, req) => s.write(switching(req)));
  try {
    await withSidecar(`${backendsYaml([{ id: 'raw', url: `${backend.url}/base?from=sidecar` }])}${UPSTREAM}`, async (_sidecar, url) => {
      const sent: [string, string][] = [
        ['/room/../../../admin?x=1', '/base/admin?from=sidecar&x=1'],
        ['/room/./7/%2e%2E/8', '/base/room/8?from=sidecar'],
        ['//room//7', '/base//room//7?from=sidecar'],
        ['/a"b<c>{d}', '/base/a%22b%3Cc%3E%7Bd%7D?from=sidecar'],
      ];
      for (const [target] of sent) assert.equal(await rawUpgrade(url, target), 'HTTP/1.1 101 Switching Protocols', target);
      assert.deepEqual(
        backend.requests.map((r) => r.line),
        sent.map(([, path]) => `GET ${path} HTTP/1.1`),
      );
      assert.match(await rawUpgrade(url, 'http://evil.example/admin'), /^HTTP\/1\.1 400 /);
      assert.equal(backend.requests.length, sent.length, 'the backend never saw the absolute-form request');
    });
  } finally {
    backend.close();
  }
});

// ---- 5. permessage-deflate on the backend leg ----------------------------------------------------

test('upstream.perMessageDeflate: the backend leg negotiates it, and messages flow both ways with either kind of client', async () => {
  const extensions: string[] = [];
  const backend = await startEchoBackend({
    id: 'z',
    perMessageDeflate: true,
    onConnection: (info, ws) => {
      extensions.push(info.extensions);
      ws.send(`welcome to ${info.path}`);
    },
  });
  try {
    await withSidecar(`${backendsYaml([{ id: 'z', url: backend.url }])}upstream: { perMessageDeflate: true }\n`, async (_sidecar, url) => {
      for (const deflate of [false, true]) {
        const c = await TestClient.connect(`${url}/d${deflate}`, [], deflate ? { perMessageDeflate: { threshold: 0 } } : {});
        assert.equal(c.ws.extensions.includes('permessage-deflate'), deflate, 'the client leg negotiates on its own');
        assert.match(extensions.at(-1)!, /permessage-deflate/, 'the backend saw the extension');
        const text = 'compress me please '.repeat(2000);
        const binary = randomBytes(3000);
        c.ws.send(text);
        c.ws.send(binary);
        await c.waitForCount(3);
        assert.deepEqual(c.received, [
          { data: Buffer.from(`welcome to /d${deflate}`), isBinary: false },
          { data: Buffer.from(text), isBinary: false },
          { data: binary, isBinary: true },
        ]);
        c.close();
      }
      assert.equal(extensions.length, 2);
    });
  } finally {
    await backend.close();
  }
});

// ---- 6. the websocket health probe -----------------------------------------------------------------

test('a websocket health probe: a ws backend sees it close with 1000 "health probe" and stays healthy; a bad 101 is a failed probe', async () => {
  const probes: { path: string; close: { code: number; reason: string } | null }[] = [];
  const good = await startEchoBackend({
    id: 'good',
    onConnection: (info, ws) => {
      const probe = { path: info.path, close: null as { code: number; reason: string } | null };
      probes.push(probe);
      ws.on('close', (code, reason) => (probe.close = { code, reason: reason.toString() }));
    },
  });
  const bad = await rawBackend((s, req) => s.write(switching(req, { accept: acceptFor(randomBytes(16).toString('base64')) })));
  try {
    await withSidecar(
      `backends:\n  - { id: good, url: "${good.url}" }\n  - { id: bad, url: "${bad.url}" }\n` +
        'health: { probe: { type: websocket, interval: 100ms, timeout: 500ms, path: /probe } }\nsession: { pingInterval: 200ms }\n',
      async (sidecar) => {
        await waitFor(() => probes.some((p) => p.close !== null) && bad.requests.length > 0, 'both backends probed', 3000);
        const closed = probes.find((p) => p.close !== null)!;
        assert.deepEqual(closed, { path: '/probe', close: { code: 1000, reason: 'health probe' } });
        assert.equal(bad.requests[0]!.line, 'GET /probe HTTP/1.1');
        await waitFor(() => sidecar.pool.backends.get('bad')!.breaker.consecutiveFailures >= 2, 'two failed probes of the bad backend', 3000);
        const res = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/v1/backends`);
        const { backends } = (await res.json()) as { backends: { id: string; health: { status: string; consecutiveFailures: number } }[] };
        const seen = Object.fromEntries(backends.map((b) => [b.id, b.health]));
        assert.ok(seen.bad!.consecutiveFailures >= 2, JSON.stringify(seen));
        assert.notEqual(seen.bad!.status, 'healthy');
        assert.equal(seen.good!.status, 'healthy');
        assert.equal(seen.good!.consecutiveFailures, 0);
      },
    );
  } finally {
    await good.close();
    bad.close();
  }
});

// ---- 7. closing: the sidecar hangs up first --------------------------------------------------------

test("after a client's closing handshake the sidecar closes the TCP connection first, and the backend gets the code and reason", async () => {
  let backendClose: { code: number; reason: string } | null = null;
  const backend = await startEchoBackend({
    id: 'e',
    onConnection: (_info, ws) => ws.on('close', (code, reason) => (backendClose = { code, reason: reason.toString() })),
  });
  try {
    await withSidecar(backendsYaml([{ id: 'e', url: backend.url }]), async (sidecar, url) => {
      const port = Number(new URL(url).port);
      // A raw client that never half-closes on its own (allowHalfOpen): any FIN it sees is the sidecar's.
      const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      socket.on('error', () => {});
      const key = randomBytes(16).toString('base64');
      let received = Buffer.alloc(0);
      let endedByServer: { clientHadEnded: boolean } | null = null;
      socket.on('data', (c: Buffer) => (received = Buffer.concat([received, c])));
      socket.on('end', () => (endedByServer = { clientHadEnded: socket.writableEnded }));
      await new Promise((r) => socket.once('connect', r));
      socket.write(`GET /bye HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      await waitFor(() => received.includes('\r\n\r\n'), 'the 101');
      const head = received.toString('latin1').toLowerCase();
      assert.ok(head.startsWith('http/1.1 101 ') && head.includes(`\r\nsec-websocket-accept: ${acceptFor(key).toLowerCase()}\r\n`), head);
      await waitFor(() => sidecar.sessions.size === 1, 'the session');
      const afterHead = received.indexOf('\r\n\r\n') + 4;
      const payload = Buffer.concat([Buffer.from([4000 >> 8, 4000 & 0xff]), Buffer.from('client done')]);
      socket.write(clientFrame(0x8, payload));
      await waitFor(() => endedByServer !== null, "the sidecar's FIN");
      assert.deepEqual(endedByServer, { clientHadEnded: false }, 'the sidecar hung up before the client did');
      const frames = received.subarray(afterHead);
      assert.equal(frames[0], 0x88, 'a close frame answered the client');
      assert.equal(frames.readUInt16BE(2), 4000);
      await waitFor(() => backendClose !== null, 'the backend saw the close');
      assert.deepEqual(backendClose, { code: 4000, reason: 'client done' });
      socket.destroy();
      await waitFor(() => sidecar.sessions.size === 0, 'the session ended');
    });
  } finally {
    await backend.close();
  }
});

test("after a closing handshake a backend's leg waits for the backend to close TCP first (its TIME_WAIT stays there), at most a second", async () => {
  /** When the sidecar's close frame reached the backend, and when the sidecar's FIN did. */
  const seen = new Map<string, { closeFrameAt: number; finAt: number }>();
  const backend = await rawBackend((s, req) => {
    const path = req.line.split(' ')[1]!;
    s.write(switching(req));
    s.on('data', (chunk: Buffer) => {
      if (chunk[0] !== 0x88 || seen.has(path)) return;
      const record = { closeFrameAt: Date.now(), finAt: 0 };
      seen.set(path, record);
      s.on('end', () => (record.finAt = Date.now()));
      s.write(Buffer.from([0x88, 0x02, 4000 >> 8, 4000 & 0xff]));
      // /late closes 300 ms after its close frame, as a busy server might; /never waits for the sidecar.
      if (path === '/late') setTimeout(() => s.end(), 300);
    });
  });
  try {
    await withSidecar(`${backendsYaml([{ id: 'raw', url: backend.url }])}${UPSTREAM}`, async (sidecar, url) => {
      for (const path of ['/late', '/never']) {
        const c = await TestClient.connect(`${url}${path}`);
        c.ws.close(4000);
        await waitFor(() => (seen.get(path)?.finAt ?? 0) > 0, `the sidecar's FIN on ${path}`, 5000);
        await waitFor(() => sidecar.sessions.size === 0, 'the session ended');
      }
      const waited = (path: string) => seen.get(path)!.finAt - seen.get(path)!.closeFrameAt;
      assert.ok(waited('/late') >= 280, `the sidecar closed ${waited('/late')} ms after its close frame, before the backend did`);
      assert.ok(waited('/never') >= 900 && waited('/never') < 3000, `a backend that never closes: the sidecar closed after ${waited('/never')} ms`);
    });
  } finally {
    backend.close();
  }
});
