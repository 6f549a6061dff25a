// The sidecar's resume machinery, through a small stateful protocol (a codec module and ws servers
// on 127.0.0.1): a login and subscriptions live on the backend, and a new backend must get them
// back before anything else. The real protocols (socket.io, graphql-ws, MQTT, STOMP) have their own
// tests (resume-*.test.ts); this one shows the core on its own.
//   client → "login <token>", "sub <topic>", "unsub <topic>", "ask <n>"
//   server → "welcome <id>" | close 4401; "<id>|<topic>|<n>" every 20 ms per topic; "answer <n>"
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { startSidecar, TestClient, waitFor } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'baton-resume-'));
const codecFile = join(dir, 'topics-codec.mjs');
writeFileSync(
  codecFile,
  `export function createCodec() {
  return {
    name: 'topics',
    classify: () => 'other',
    createState(limits) {
      let login = null;
      const subs = new Map();
      let over = false;
      return {
        sent(data) {
          const t = data.toString();
          if (t.startsWith('login ')) login = t;
          else if (t.startsWith('sub ')) subs.set(t.slice(4), t);
          else if (t.startsWith('unsub ')) subs.delete(t.slice(6));
          if (subs.size + 1 > limits.maxFrames) over = true;
        },
        received() {},
        unresumable: () => (over ? 'state over its bound' : null),
        replay: () => [login, ...subs.values()].filter(Boolean).map((t) => ({ data: Buffer.from(t), isBinary: false })),
        resumeAnswer(data) {
          const t = data.toString();
          if (t.startsWith('welcome ')) return 'resumed';
          if (t.startsWith('denied')) return { refused: true, forward: true, code: 4401, reason: 'denied' };
          return 'pass';
        },
      };
    },
  };
}
`,
);

/** Every topic server started, so that a failing test still stops them. */
const servers: { kill: () => void }[] = [];

/** A backend of the topics protocol in this process; `kill()` cuts every connection and stops it. */
async function topicServer(id: string, token: string): Promise<{ url: string; logins: string[]; subs: string[]; kill: () => void }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const logins: string[] = [];
  const subs: string[] = [];
  const timers = new Set<NodeJS.Timeout>();
  wss.on('connection', (ws: WebSocket) => {
    const topics = new Map<string, NodeJS.Timeout>();
    ws.on('close', () => {
      for (const t of topics.values()) clearInterval(t);
    });
    ws.on('message', (data: Buffer) => {
      const t = data.toString();
      if (t.startsWith('login ')) {
        logins.push(t);
        if (t === `login ${token}`) ws.send(`welcome ${id}`);
        else ws.close(4401, 'bad token');
      } else if (t.startsWith('sub ')) {
        const topic = t.slice(4);
        subs.push(topic);
        let n = 0;
        const timer = setInterval(() => ws.send(`${id}|${topic}|${n++}`), 20);
        timers.add(timer);
        topics.set(topic, timer);
      } else if (t.startsWith('unsub ')) {
        clearInterval(topics.get(t.slice(6)));
        topics.delete(t.slice(6));
      } else if (t.startsWith('ask ')) {
        setTimeout(() => ws.send(`answer ${t.slice(4)} from ${id}`), 10);
      }
    });
  });
  const server = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    logins,
    subs,
    kill: () => {
      for (const t of timers) clearInterval(t);
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };
  servers.push(server);
  return server;
}

describe('resuming a session on a new backend (a codec with protocol state)', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    for (const s of servers.splice(0)) s.kill();
  });

  async function setup(extra = '', tokenB = 'secret', codecExtra = '') {
    const a = await topicServer('a', 'secret');
    const b = await topicServer('b', tokenB);
    let url: string;
    ({ sidecar, url } = await startSidecar(
      `codec: { default: "module:${codecFile}"${codecExtra} }\nsession: { pingInterval: 1s, pongTimeout: 1s }\n${extra}` +
        `backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n`,
    ));
    const c = await TestClient.connect(`${url}/t`);
    c.ws.send('login secret');
    await waitFor(() => c.texts().includes('welcome a'), 'logged in on a');
    c.ws.send('sub x');
    c.ws.send('sub y');
    await waitFor(() => c.texts().some((t) => t.startsWith('a|y|')), 'events from a');
    return { a, b, c };
  }

  test('a killed backend: the login and subscriptions are replayed to the other, its welcome swallowed, events go on', async () => {
    const { a, b, c } = await setup();
    c.ws.send('unsub x');
    await waitFor(() => b.logins.length === 0 && a.subs.length === 2, 'unsubscribed');
    a.kill();
    await waitFor(() => c.texts().some((t) => t.startsWith('b|y|')), 'events from b within the wait', 1000);
    c.ws.send('ask 1');
    await waitFor(() => c.texts().includes('answer 1 from b'), 'a request answered by b');
    assert.deepEqual(b.logins, ['login secret'], 'b got the login once');
    assert.deepEqual(b.subs, ['y'], 'only the remaining subscription was resumed');
    assert.ok(!c.texts().includes('welcome b'), "b's welcome was swallowed");
    assert.equal(c.closed, null);
    const stats = sidecar!.codecs.all.get('topics')!.stats;
    assert.equal(stats.resumes, 1);
    assert.equal(stats.resumed, 1);
    assert.equal(stats.swallowed, 1);
    c.close();
    b.kill();
  });

  test('a drain through the admin path: the same replay, nothing closed', async () => {
    const { a, b, c } = await setup();
    assert.equal(await sidecar!.migrateSession([...sidecar!.sessions.values()][0]!.id, 'admin', 'b'), 'migrated');
    await waitFor(() => c.texts().some((t) => t.startsWith('b|x|')), 'events from b');
    assert.deepEqual(b.logins, ['login secret']);
    assert.deepEqual(b.subs.sort(), ['x', 'y']);
    assert.equal(c.closed, null);
    c.close();
    a.kill();
    b.kill();
  });

  test('the new backend refuses the login: the client gets its refusal (4401), not a zombie', async () => {
    const { a, b, c } = await setup('', 'other');
    a.kill();
    const closed = await c.waitForClose(3000);
    assert.equal(closed.code, 4401);
    assert.ok(!c.texts().some((t) => t.startsWith('b|')), 'nothing from b');
    b.kill();
  });

  for (const [what, extra, codecExtra] of [
    ['state over its bound (codec.maxStateFrames: 2)', '', ', maxStateFrames: 2'],
    ['failover.mode close', 'failover: { mode: close }\n', ''],
  ] as const) {
    test(`${what}: the client gets 1012 at the backend change, nothing is half-resumed`, async () => {
      const { a, b, c } = await setup(extra, 'secret', codecExtra);
      a.kill();
      assert.equal((await c.waitForClose(3000)).code, 1012);
      assert.equal(b.logins.length, 0, 'nothing replayed to b');
      assert.equal(sidecar!.codecs.all.get('topics')!.stats.unresumable, 1);
      b.kill();
    });
  }
});
