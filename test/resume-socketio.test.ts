// socket.io sessions resumed on another backend: a real socket.io-client (websocket transport,
// two namespaces with auth) through a real sidecar to socket.io servers in their own processes
// (test/fixtures/socketio-server.ts), each sending a tick every 50 ms per namespace. The codec is
// chosen by the request's query (codec.default: auto). What is promised:
// - SIGKILL or drain of the serving backend: the same client connection goes on with the other
//   backend (ticks from it within 1 s of a kill), the client library sees no disconnect, no second
//   'connect' or Engine.IO handshake, and an emitWithAck in flight is answered once, by the survivor;
// - a namespace left before the kill is not joined again on the new backend;
// - a new backend refusing the replayed CONNECT: the connection closes (1008), the client library
//   reconnects by itself and gets the refusal as a proper connect_error, not a zombie;
// - state over its bound, or failover.mode close: the client is closed with 1012 and
//   socket.io-client reconnects by itself.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, test } from 'node:test';
import { Manager, type Socket } from 'socket.io-client';
import type { Sidecar } from '../sidecar/sidecar.js';
import { backendsYaml, FixtureProcess, freePort, killAllFixtures, startSidecar, waitFor } from './helpers.js';

const script = fileURLToPath(new URL('./fixtures/socketio-server.js', import.meta.url));
const TOKEN = 'tok-good';
const ADMIN_TOKEN = 'admin-token-0123456789';

/** A socket.io server process; records the JSON lines it prints. */
class Fixture extends FixtureProcess {
  static async begin(id: string, token = TOKEN, port = 0): Promise<Fixture> {
    const f = new Fixture(id, script, ['--host', '127.0.0.1', '--port', String(port), '--id', id, '--token', token, '--ping-interval', '400', '--ping-timeout', '1500']);
    await f.start();
    return f;
  }

  /** socket.io packets it received (text after the Engine.IO '4'), in order. */
  messages(): string[] {
    return this.of('message').map((e) => String(e.raw));
  }
}

// ---- the client ---------------------------------------------------------------------------------

interface Tick {
  n: number;
  nsp: string;
  servedBy: string;
  at: number;
}

/** What one namespace socket saw. */
class NsRecord {
  readonly ticks: Tick[] = [];
  connects = 0;
  readonly disconnects: { reason: string; code: number | undefined; at: number }[] = [];
  readonly connectErrors: { message: string; data: unknown }[] = [];

  constructor(readonly socket: Socket) {
    socket.on('connect', () => this.connects++);
    socket.on('disconnect', (reason, details) => {
      const context = (details as { context?: { code?: number } } | undefined)?.context;
      this.disconnects.push({ reason, code: context?.code, at: Date.now() });
    });
    socket.on('connect_error', (err: Error & { data?: unknown }) => this.connectErrors.push({ message: err.message, data: err.data }));
    socket.on('tick', (t: Omit<Tick, 'at'>) => this.ticks.push({ ...t, at: Date.now() }));
  }

  ticksFrom(id: string, since = 0): Tick[] {
    return this.ticks.filter((t) => t.servedBy === id && t.at >= since);
  }
}

/** A socket.io-client Manager on the sidecar with a socket per namespace, recording everything. */
class Client {
  readonly manager: Manager;
  readonly ns = new Map<string, NsRecord>();
  /** Engine.IO packets the client received: every handshake and socket.io packet. */
  readonly packets: { type: string; data: string }[] = [];

  constructor(url: string, namespaces: string[], opts: { token?: string; reconnection?: boolean } = {}) {
    this.manager = new Manager(url, {
      transports: ['websocket'],
      reconnection: opts.reconnection ?? true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 300,
      randomizationFactor: 0,
    });
    const watch = () => {
      this.manager.engine.on('packet', (p: { type: string; data?: unknown }) => {
        this.packets.push({ type: p.type, data: typeof p.data === 'string' ? p.data : '' });
      });
    };
    watch(); // the Manager opened its engine in the constructor
    this.manager.on('reconnect_attempt', () => queueMicrotask(watch));
    for (const n of namespaces) this.ns.set(n, new NsRecord(this.manager.socket(n, { auth: { token: opts.token ?? TOKEN } })));
  }

  get(n: string): NsRecord {
    return this.ns.get(n)!;
  }

  handshakes(): number {
    return this.packets.filter((p) => p.type === 'open').length;
  }

  /** CONNECT packets the client received for a namespace (`0/chat,{"sid":…}`). */
  connectPackets(nsp: string): number {
    const prefix = nsp === '/' ? '0{' : `0${nsp},`;
    return this.packets.filter((p) => p.type === 'message' && p.data.startsWith(prefix)).length;
  }

  async connected(): Promise<void> {
    await waitFor(() => [...this.ns.values()].every((r) => r.socket.connected), 'every namespace connected', 5000);
  }

  close(): void {
    for (const r of this.ns.values()) r.socket.disconnect();
    this.manager.engine?.close();
  }
}

const clients = new Set<Client>();
function client(url: string, namespaces: string[], opts: { token?: string; reconnection?: boolean } = {}): Client {
  const c = new Client(url, namespaces, opts);
  clients.add(c);
  return c;
}

// ---- sidecar ------------------------------------------------------------------------------------

function config(backends: { id: string; url: string }[], extra = ''): string {
  return `session: { pingInterval: 1s, pongTimeout: 1s }\n${extra}${backendsYaml(backends)}`;
}

/** A codec counter of the socket.io codec, from the sidecar's registry. */
async function metric(sidecar: Sidecar, name: string): Promise<number> {
  const text = await sidecar.metrics.registry.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{codec="socket.io"\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name}{codec="socket.io"} in:\n${text}`);
  return Number(m[1]);
}

async function metrics(sidecar: Sidecar, ...names: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of names) out[n.replace(/^baton_codec_|_total$/g, '')] = await metric(sidecar, n);
  return out;
}

const RESUME_METRICS = [
  'baton_codec_resumes_total',
  'baton_codec_resumed_total',
  'baton_codec_resume_answers_swallowed_total',
  'baton_codec_resume_refusals_total',
  'baton_codec_unresumable_sessions_total',
  'baton_codec_requests_replayed_total',
];

function onlySession(sidecar: Sidecar) {
  assert.equal(sidecar.sessions.size, 1, 'one session');
  return [...sidecar.sessions.values()][0]!;
}

/** The backend serving the only session and the other one. */
function servingPair(sidecar: Sidecar, x: Fixture, y: Fixture): { victim: Fixture; survivor: Fixture } {
  const id = onlySession(sidecar).backend!.id;
  assert.ok(id === x.id || id === y.id, `session on ${id}`);
  return id === x.id ? { victim: x, survivor: y } : { victim: y, survivor: x };
}

/** Asserts nothing of the session's life showed to the client library: no disconnect, no second connect or handshake. */
function assertSeamless(c: Client, namespaces: string[]): void {
  assert.equal(c.handshakes(), 1, 'one Engine.IO handshake reached the client');
  for (const n of namespaces) {
    const r = c.get(n);
    assert.deepEqual(r.disconnects, [], `${n}: no disconnect`);
    assert.deepEqual(r.connectErrors, [], `${n}: no connect_error`);
    assert.equal(r.connects, 1, `${n}: one 'connect' event`);
    assert.equal(c.connectPackets(n), 1, `${n}: one CONNECT answer reached the client`);
    assert.ok(r.socket.connected, `${n}: still connected`);
  }
}

/** Ticks of `survivor` on each namespace, the first within `withinMs` of `since`. */
async function waitForTicksFrom(c: Client, namespaces: string[], survivor: Fixture, since: number, withinMs = 1000): Promise<void> {
  await waitFor(() => namespaces.every((n) => c.get(n).ticksFrom(survivor.id, since).length >= 3), `ticks from ${survivor.id} on ${namespaces.join(' and ')}`, 5000);
  for (const n of namespaces) {
    const first = c.get(n).ticksFrom(survivor.id, since)[0]!;
    assert.ok(first.at - since <= withinMs, `${n}: first tick from ${survivor.id} ${first.at - since} ms after the kill (at most ${withinMs})`);
  }
}

// ---- tests --------------------------------------------------------------------------------------

describe('socket.io sessions resumed on another backend', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    for (const c of clients) c.close();
    clients.clear();
    await sidecar?.stop(0);
    sidecar = undefined;
    await killAllFixtures();
  });
  after(killAllFixtures);

  test('SIGKILL of the serving backend: the same connection goes on with the survivor, both namespaces, no disconnect or second connect; the emitWithAck in flight is answered once, by the survivor', async () => {
    const a = await Fixture.begin('a');
    const b = await Fixture.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    const c = client(url, ['/chat', '/news']);
    await c.connected();
    const session = onlySession(sidecar);
    const { victim, survivor } = servingPair(sidecar, a, b);
    await waitFor(() => c.get('/chat').ticksFrom(victim.id).length >= 3 && c.get('/news').ticksFrom(victim.id).length >= 3, 'ticks from the serving backend');

    // An emit with an ack the victim holds (it answers after 10 s): in flight at the kill.
    const chat = c.get('/chat').socket;
    const inFlight = chat.timeout(5000).emitWithAck('echo', { n: 1, delayOn: victim.id, delayMs: 10_000 }) as Promise<{ echo: { n: number }; servedBy: string }>;
    await waitFor(() => victim.of('echo').length === 1, 'the victim has the request');
    const killedAt = Date.now();
    await victim.kill();

    await waitForTicksFrom(c, ['/chat', '/news'], survivor, killedAt);
    const answer = await inFlight;
    assert.deepEqual(answer, { echo: { n: 1, delayOn: victim.id, delayMs: 10_000 }, servedBy: survivor.id }, 'the replayed request answered by the survivor');
    const after = (await chat.timeout(3000).emitWithAck('echo', { n: 2 })) as { servedBy: string };
    assert.equal(after.servedBy, survivor.id, 'a new request answered by the survivor');

    // Heartbeats: the survivor pings every 400 ms (timeout 1.5 s); the client answers it.
    await new Promise((r) => setTimeout(r, 1500));
    assertSeamless(c, ['/chat', '/news']);
    const acks = c.packets.filter((p) => p.type === 'message' && /^3\/chat,\d+\[/.test(p.data));
    assert.equal(acks.length, 2, 'one ACK per request reached the client');

    // What the survivor saw: the replayed joins, in order, with the client's auth, then the replayed request.
    assert.deepEqual(survivor.of('connection').length, 1);
    assert.deepEqual(survivor.of('connect').map((e) => e.nsp), ['/chat', '/news'], 'each namespace joined once');
    const got = survivor.messages();
    assert.deepEqual(got.slice(0, 3), [
      `0/chat,{"token":"${TOKEN}"}`,
      `0/news,{"token":"${TOKEN}"}`,
      `2/chat,0["echo",{"n":1,"delayOn":"${victim.id}","delayMs":10000}]`,
    ]);
    assert.deepEqual(survivor.of('echo').map((e) => (e.x as { n: number }).n), [1, 2], 'the survivor ran each request once');
    assert.equal(session.failovers, 1);
    assert.equal(onlySession(sidecar), session, 'the same session throughout');
    assert.deepEqual(await metrics(sidecar, ...RESUME_METRICS), {
      resumes: 1,
      resumed: 1,
      resume_answers_swallowed: 3, // the open packet and two CONNECT answers
      resume_refusals: 0,
      unresumable_sessions: 0,
      requests_replayed: 1,
    });
  });

  test('a namespace left before the kill is not joined again: the survivor sees exactly one join', async () => {
    const a = await Fixture.begin('a');
    const b = await Fixture.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    const c = client(url, ['/chat', '/news']);
    await c.connected();
    const { victim, survivor } = servingPair(sidecar, a, b);
    c.get('/news').socket.disconnect(); // sends "41/news,"
    await waitFor(() => victim.of('disconnect', { nsp: '/news' }).length === 1, 'the victim saw /news leave');
    const newsTicks = c.get('/news').ticks.length;
    const killedAt = Date.now();
    await victim.kill();

    await waitForTicksFrom(c, ['/chat'], survivor, killedAt);
    assert.deepEqual(survivor.of('connect').map((e) => e.nsp), ['/chat'], 'only /chat joined on the survivor');
    assert.deepEqual(survivor.messages().filter((m) => m.startsWith('0')), [`0/chat,{"token":"${TOKEN}"}`]);
    assert.equal(c.get('/news').ticks.length, newsTicks, 'no tick on the namespace the client left');
    assert.deepEqual(c.get('/news').disconnects.map((d) => d.reason), ['io client disconnect']);
    assert.equal(c.get('/chat').connects, 1);
    assert.deepEqual(c.get('/chat').disconnects, []);
    assert.equal(c.handshakes(), 1);
    assert.equal(((await c.get('/chat').socket.timeout(3000).emitWithAck('echo', { n: 3 })) as { servedBy: string }).servedBy, survivor.id);
  });

  test('drain of the serving backend through the admin API: same outcome, the request in flight answered by the old backend and not replayed', async () => {
    const a = await Fixture.begin('a');
    const b = await Fixture.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b]), { BATON_ADMIN_TOKEN: ADMIN_TOKEN }));
    const c = client(url, ['/chat', '/news']);
    await c.connected();
    const { victim, survivor } = servingPair(sidecar, a, b);
    await waitFor(() => c.get('/news').ticksFrom(victim.id).length >= 2, 'ticks from the serving backend');
    const inFlight = c.get('/chat').socket.timeout(5000).emitWithAck('echo', { n: 7, delayOn: victim.id, delayMs: 300 }) as Promise<{ servedBy: string }>;
    await waitFor(() => victim.of('echo').length === 1, 'the old backend has the request');
    const drainedAt = Date.now();
    const res = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/v1/backends/${victim.id}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 202, await res.text());

    assert.equal((await inFlight).servedBy, victim.id, 'answered by the old backend before the switch');
    await waitForTicksFrom(c, ['/chat', '/news'], survivor, drainedAt, 2000);
    assert.equal(((await c.get('/chat').socket.timeout(3000).emitWithAck('echo', { n: 8 })) as { servedBy: string }).servedBy, survivor.id);
    assertSeamless(c, ['/chat', '/news']);
    assert.deepEqual(survivor.of('connect').map((e) => e.nsp), ['/chat', '/news']);
    assert.deepEqual(survivor.of('echo').map((e) => (e.x as { n: number }).n), [8], 'nothing replayed');
    const m = await metrics(sidecar, ...RESUME_METRICS);
    assert.deepEqual([m.resumes, m.resumed, m.resume_answers_swallowed, m.requests_replayed], [1, 1, 3, 0]);
    await waitFor(() => victim.of('disconnect').length === 2, 'the old backend let go');
  });

  test('the new backend refuses the replayed CONNECT (another token): the connection closes (1008), socket.io-client reconnects and gets the refusal as a connect_error; nothing left connected', async () => {
    const a = await Fixture.begin('a');
    const laterPort = await freePort();
    let url: string;
    // b is down at first, so the session lands on a; it comes up accepting another token only.
    ({ sidecar, url } = await startSidecar(config([a, { id: 'b', url: `ws://127.0.0.1:${laterPort}` }])));
    const c = client(url, ['/chat', '/news']);
    await c.connected();
    assert.equal(onlySession(sidecar).backend!.id, 'a');
    const first = onlySession(sidecar);
    const b = await Fixture.begin('b', 'another-token', laterPort);
    await a.kill();

    const all = [...c.ns.values()];
    await waitFor(() => all.every((r) => r.connectErrors.length > 0), 'a connect_error on every namespace', 5000);
    for (const [n, r] of c.ns) {
      assert.deepEqual(r.disconnects.map((d) => [d.reason, d.code]), [['transport close', 1008]], `${n}: the resumed connection closed with 1008`);
      assert.deepEqual(r.connectErrors, [{ message: 'not authorized', data: { servedBy: 'b' } }], `${n}: the new backend's own refusal, on a fresh connect`);
      assert.equal(r.socket.connected, false, `${n}: not connected (no zombie)`);
      assert.equal(r.socket.active, false, `${n}: not retried by itself (the app decides, as after any middleware refusal)`);
      assert.equal(r.connects, 1);
    }
    assert.equal(c.handshakes(), 2, 'the client library\'s own reconnect');
    assert.deepEqual(b.of('connect'), [], 'b accepted nothing');
    assert.deepEqual(b.of('refused').map((e) => e.nsp).sort(), ['/chat', '/chat', '/news', '/news'], 'the replay, then the fresh connect');
    assert.equal(first.closed, true);
    const m = await metrics(sidecar, ...RESUME_METRICS);
    assert.equal(m.resumes, 1);
    assert.equal(m.resume_refusals, 1);
    assert.equal(m.resumed, 0);
    await waitFor(() => sidecar!.sessions.size === 0, 'no session left (the client library closed once every namespace was refused)');
  });

  for (const [name, extra] of [
    ['state past codec.maxStateFrames', 'codec: { maxStateFrames: 1 }\n'],
    ['failover.mode close', 'failover: { mode: close }\n'],
  ] as const) {
    test(`${name}: the client is closed with 1012 and socket.io-client reconnects by itself to the survivor`, async () => {
      const a = await Fixture.begin('a');
      const b = await Fixture.begin('b');
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b], extra)));
      const c = client(url, ['/chat', '/news']);
      await c.connected();
      const { victim, survivor } = servingPair(sidecar, a, b);
      await victim.kill();

      await waitFor(() => [...c.ns.values()].every((r) => r.connects === 2 && r.socket.connected), 'both namespaces connected again', 5000);
      for (const [n, r] of c.ns) {
        assert.deepEqual(r.disconnects.map((d) => [d.reason, d.code]), [['transport close', 1012]], `${n}: closed with 1012`);
        assert.deepEqual(r.connectErrors, []);
      }
      assert.equal(c.handshakes(), 2, 'a new Engine.IO session');
      await waitFor(() => ['/chat', '/news'].every((n) => c.get(n).ticksFrom(survivor.id).length >= 2), 'ticks from the survivor');
      assert.deepEqual(survivor.of('connect').map((e) => e.nsp).sort(), ['/chat', '/news'], 'joined by the client library itself');
      assert.equal(((await c.get('/chat').socket.timeout(3000).emitWithAck('echo', { n: 9 })) as { servedBy: string }).servedBy, survivor.id);
      const m = await metrics(sidecar, ...RESUME_METRICS);
      assert.equal(m.unresumable_sessions, 1);
      assert.equal(m.resumes, 0, 'nothing replayed');
    });
  }
});
