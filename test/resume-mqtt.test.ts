// MQTT sessions resumed on another backend: a real mqtt.js client (3.1.1, and 5) through a real
// sidecar to MQTT brokers in their own processes (test/fixtures/mqtt-server.ts: aedes for 3.1.1, an
// mqtt-packet broker for 5), each publishing to t/a and t/b every 50 ms. The codec is chosen by the
// subprotocol the backend accepted ("mqtt", codec.default: auto). What is promised:
// - SIGKILL or drain of the serving backend: the same connection goes on with the other broker
//   (messages from it within 1 s of a kill, on both subscriptions), mqtt.js sees no close, offline,
//   error or second connect, a QoS 1 PUBLISH the dead broker never acknowledged is replayed (DUP)
//   and acknowledged once, by the survivor, and a new one is acknowledged too;
// - a broker crashing in the middle of a packet it sends (aedes writes each field as its own frame):
//   the unfinished packet never reaches mqtt.js, and the connection goes on with the other broker;
//   unless the packet is larger than codec.maxStateBytes: then it is not held, and the client is
//   closed with 1012 (it has part of the packet);
// - a subscription removed before the kill is not made again on the new broker;
// - a new broker refusing the replayed CONNECT (other credentials): the connection closes, mqtt.js
//   reconnects by itself and gets the broker's own refusal (CONNACK 5, not authorized), no zombie;
// - state over its bound, or failover.mode close: the client is closed with 1012 and mqtt.js
//   reconnects (and resubscribes) by itself.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, test } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { backendsYaml, FixtureProcess, freePort, killAllFixtures, startSidecar, waitFor, type FixtureEvent } from './helpers.js';

const script = fileURLToPath(new URL('./fixtures/mqtt-server.js', import.meta.url));
const TOKEN = 'tok-good';
const ADMIN_TOKEN = 'admin-token-0123456789';

/** A broker process; records the JSON lines it prints. */
class Fixture extends FixtureProcess {
  static async begin(id: string, token = TOKEN, port = 0, extra: string[] = []): Promise<Fixture> {
    const f = new Fixture(id, script, ['--host', '127.0.0.1', '--port', String(port), '--id', id, '--token', token, ...extra]);
    await f.start();
    return f;
  }

  /** The MQTT packets it received, in order (optionally of one kind). */
  packets(cmd?: string): FixtureEvent[] {
    return this.events.filter((e) => e.event === 'packet' && (cmd === undefined || e.cmd === cmd));
  }
}

// ---- the client ---------------------------------------------------------------------------------

interface Message {
  topic: string;
  from: string;
  at: number;
}

/** An mqtt.js client on the sidecar, recording its events, messages and WebSocket closes. */
class Client {
  readonly mqtt: MqttClient;
  readonly events: string[] = [];
  readonly errors: { message: string; code: unknown }[] = [];
  readonly messages: Message[] = [];
  /** Close codes of every WebSocket mqtt.js opened (its own reconnects included). */
  readonly wsCloses: { code: number; reason: string }[] = [];
  wsOpened = 0;

  constructor(url: string, opts: { protocolVersion?: 4 | 5; reconnectPeriod?: number; password?: string } = {}) {
    this.mqtt = mqtt.connect(url, {
      username: 'device-1',
      password: opts.password ?? TOKEN,
      protocolVersion: opts.protocolVersion ?? 4,
      reconnectPeriod: opts.reconnectPeriod ?? 0,
      connectTimeout: 5000,
      createWebsocket: (u: string, protocols: string[]) => {
        const ws = new WebSocket(u, protocols, { perMessageDeflate: false });
        this.wsOpened++;
        ws.on('close', (code, reason) => this.wsCloses.push({ code, reason: reason.toString() }));
        return ws;
      },
    });
    for (const e of ['connect', 'close', 'offline', 'disconnect', 'reconnect', 'end'] as const) this.mqtt.on(e, () => this.events.push(e));
    this.mqtt.on('error', (err: Error & { code?: unknown }) => {
      this.events.push('error');
      this.errors.push({ message: err.message, code: err.code });
    });
    this.mqtt.on('message', (topic, payload) => {
      let from = '?';
      try {
        from = (JSON.parse(String(payload)) as { from: string }).from;
      } catch {
        // not one of the fixture's messages
      }
      this.messages.push({ topic, from, at: Date.now() });
    });
  }

  count(event: string): number {
    return this.events.filter((e) => e === event).length;
  }

  from(id: string, since = 0, topic?: string): Message[] {
    return this.messages.filter((m) => m.from === id && m.at >= since && (topic === undefined || m.topic === topic));
  }

  async connected(): Promise<void> {
    await waitFor(() => this.mqtt.connected, 'mqtt.js connected', 5000);
  }
}

const clients = new Set<Client>();
function client(url: string, opts: ConstructorParameters<typeof Client>[1] = {}): Client {
  const c = new Client(url, opts);
  clients.add(c);
  return c;
}

// ---- sidecar ------------------------------------------------------------------------------------

function config(backends: { id: string; url: string }[], extra = ''): string {
  return `session: { pingInterval: 1s, pongTimeout: 1s }\n${extra}${backendsYaml(backends)}`;
}

async function metric(sidecar: Sidecar, name: string): Promise<number> {
  const text = await sidecar.metrics.registry.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{codec="mqtt"\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name}{codec="mqtt"} in:\n${text}`);
  return Number(m[1]);
}

async function metrics(sidecar: Sidecar): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of ['resumes', 'resumed', 'resume_answers_swallowed', 'resume_refusals', 'unresumable_sessions', 'requests_replayed']) {
    out[n] = await metric(sidecar, `baton_codec_${n}_total`);
  }
  return out;
}

function onlySession(sidecar: Sidecar) {
  assert.equal(sidecar.sessions.size, 1, 'one session');
  return [...sidecar.sessions.values()][0]!;
}

function servingPair(sidecar: Sidecar, x: Fixture, y: Fixture): { victim: Fixture; survivor: Fixture } {
  const id = onlySession(sidecar).backend!.id;
  assert.ok(id === x.id || id === y.id, `session on ${id}`);
  return id === x.id ? { victim: x, survivor: y } : { victim: y, survivor: x };
}

/** Messages from `survivor` on each topic, the first within `withinMs` of `since`. */
async function waitForMessagesFrom(c: Client, topics: string[], survivor: Fixture, since: number, withinMs = 1000): Promise<number> {
  await waitFor(() => topics.every((t) => c.from(survivor.id, since, t).length >= 3), `messages from ${survivor.id} on ${topics.join(' and ')}`, 5000);
  let gap = 0;
  for (const t of topics) {
    const first = c.from(survivor.id, since, t)[0]!;
    assert.ok(first.at - since <= withinMs, `${t}: first message from ${survivor.id} ${first.at - since} ms after (at most ${withinMs})`);
    gap = Math.max(gap, first.at - since);
  }
  return gap;
}

/** Nothing of the backend change showed to mqtt.js. */
function assertSeamless(c: Client): void {
  assert.deepEqual(c.events, ['connect'], 'one connect; no close, offline, error, disconnect or reconnect');
  assert.equal(c.wsOpened, 1, 'one WebSocket');
  assert.deepEqual(c.wsCloses, []);
  assert.ok(c.mqtt.connected);
}

/** A QoS 1 publish the broker `holdOn` keeps unacknowledged (10 s): answered by whoever acks it. */
function publishHeld(c: Client, holdOn: string, n: number, delayMs = 10_000): Promise<void> {
  return c.mqtt.publishAsync('req/x', JSON.stringify({ delayOn: holdOn, delayMs, n }), { qos: 1 }).then(() => undefined);
}

// ---- tests --------------------------------------------------------------------------------------

describe('MQTT sessions resumed on another backend', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    for (const c of clients) c.mqtt.end(true);
    clients.clear();
    await sidecar?.stop(0);
    sidecar = undefined;
    await killAllFixtures();
  });
  after(killAllFixtures);

  /** Brokers a and b behind the sidecar, and an mqtt.js client subscribed to t/a and t/b (QoS 0). */
  const subscribedOnTwo = async (extra = ''): Promise<{ a: Fixture; b: Fixture; c: Client; s: Sidecar }> => {
    const a = await Fixture.begin('a');
    const b = await Fixture.begin('b');
    const started = await startSidecar(config([a, b], extra));
    sidecar = started.sidecar;
    const c = client(started.url);
    await c.connected();
    await c.mqtt.subscribeAsync('t/a');
    await c.mqtt.subscribeAsync('t/b');
    return { a, b, c, s: started.sidecar };
  };

  for (const protocolVersion of [4, 5] as const) {
    test(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: SIGKILL of the serving broker — the same connection goes on with the survivor on both subscriptions, no close or second connect; the QoS 1 PUBLISH in flight is replayed (DUP) and acknowledged once, by the survivor`, async (t) => {
      const a = await Fixture.begin('a');
      const b = await Fixture.begin('b');
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b])));
      const c = client(url, { protocolVersion });
      await c.connected();
      await c.mqtt.subscribeAsync('t/a', { qos: 1 });
      await c.mqtt.subscribeAsync('t/b');
      const session = onlySession(sidecar);
      const { victim, survivor } = servingPair(sidecar, a, b);
      await waitFor(() => c.from(victim.id, 0, 't/a').length >= 3 && c.from(victim.id, 0, 't/b').length >= 3, 'messages from the serving broker');

      let acked = 0;
      const inFlight = publishHeld(c, victim.id, 1).then(() => acked++);
      await waitFor(() => victim.packets('publish').length === 1, 'the victim has the PUBLISH');
      const killedAt = Date.now();
      await victim.kill();

      t.diagnostic(`first messages from the survivor ${await waitForMessagesFrom(c, ['t/a', 't/b'], survivor, killedAt)} ms after the kill`);
      await inFlight;
      await c.mqtt.publishAsync('req/y', 'after', { qos: 1 });
      assert.equal(acked, 1);
      assertSeamless(c);

      const got = survivor.packets();
      assert.deepEqual(
        got.slice(0, 5).map((p) => `${p.cmd}${p.topics ? ` ${String(p.topics)}` : ''}${p.cmd === 'publish' ? ` ${String(p.topic)} dup=${String(p.dup)}` : ''}`),
        ['connect', 'subscribe t/a', 'subscribe t/b', 'publish req/x dup=true', 'publish req/y dup=false'],
        'the CONNECT and both SUBSCRIBEs replayed, then the PUBLISH in flight, then the new one',
      );
      assert.equal(got[0]!.protocolVersion, protocolVersion);
      assert.equal(got[0]!.ok, true, 'the replayed CONNECT carried the credentials');
      assert.equal(got[3]!.messageId, victim.packets('publish')[0]!.messageId, 'the replayed PUBLISH keeps its packet identifier');
      assert.equal(session.failovers, 1);
      assert.equal(onlySession(sidecar), session, 'the same session throughout');
      const m = await metrics(sidecar);
      assert.deepEqual([m.resumes, m.resumed, m.resume_refusals, m.unresumable_sessions, m.requests_replayed], [1, 1, 0, 0, 0]);
      assert.ok(m.resume_answers_swallowed >= 3, `the CONNACK and two SUBACKs swallowed (${m.resume_answers_swallowed} frames)`);
    });
  }

  test('a broker crashing in the middle of a packet (aedes writes each field as its own frame): the unfinished packet never reaches mqtt.js, and the same connection goes on with the survivor', async () => {
    const { a, b, c, s } = await subscribedOnTwo();
    const session = onlySession(s);
    const { victim, survivor } = servingPair(s, a, b);
    await waitFor(() => c.from(victim.id, 0, 't/a').length >= 3 && c.from(victim.id, 0, 't/b').length >= 3, 'messages from the serving broker');
    const crashedAt = Date.now();
    // The victim sends the first half of a PUBLISH to t/a as one frame, then SIGKILLs itself.
    c.mqtt.publish('die/mid-packet', 'now');
    await waitForMessagesFrom(c, ['t/a', 't/b'], survivor, crashedAt);
    assertSeamless(c);
    assert.equal(session.failovers, 1);
    assert.equal(onlySession(s), session, 'the same session throughout');
    const m = await metrics(s);
    assert.deepEqual([m.resumes, m.resumed, m.unresumable_sessions], [1, 1, 0]);
  });

  test('a packet larger than codec.maxStateBytes is not held: a broker crashing inside it leaves mqtt.js with part of it, so the session is closed with 1012, not resumed', async () => {
    const { a, b, c, s } = await subscribedOnTwo('codec: { maxStateBytes: 400 }\n');
    const { victim } = servingPair(s, a, b);
    await waitFor(() => c.from(victim.id, 0, 't/a').length >= 3, 'messages from the serving broker');
    // 600 bytes of a PUBLISH as one frame (over the bound: it goes on), then 10 more (they must go
    // on too: the client has the packet's start), then the crash.
    c.mqtt.publish('die/mid-packet', JSON.stringify({ headBytes: 600 }));
    await waitFor(() => c.wsCloses.length === 1, 'the client closed');
    assert.deepEqual(c.wsCloses.map((x) => x.code), [1012]);
    const m = await metrics(s);
    assert.deepEqual([m.resumes, m.unresumable_sessions], [0, 1]);
  });

  test('a subscription removed before the kill is not made again: the survivor gets exactly one SUBSCRIBE', async () => {
    const { a, b, c, s } = await subscribedOnTwo();
    const { victim, survivor } = servingPair(s, a, b);
    await waitFor(() => c.from(victim.id, 0, 't/b').length >= 2, 'messages on t/b');
    await c.mqtt.unsubscribeAsync('t/b');
    const killedAt = Date.now();
    await victim.kill();

    await waitForMessagesFrom(c, ['t/a'], survivor, killedAt);
    await new Promise((r) => setTimeout(r, 300)); // six more ticks: none may come on t/b
    assert.deepEqual(c.from(survivor.id, 0, 't/b'), [], 'nothing on the topic the client left');
    assert.deepEqual(survivor.packets('subscribe').map((p) => p.topics), [['t/a']], 'only t/a subscribed on the survivor');
    assert.deepEqual(survivor.packets('unsubscribe'), []);
    await c.mqtt.publishAsync('req/y', 'after', { qos: 1 });
    assertSeamless(c);
  });

  test('drain of the serving broker through the admin API: the same outcome; the PUBLISH the old broker holds is acknowledged by it, once, and not replayed', async () => {
    const a = await Fixture.begin('a');
    const b = await Fixture.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b]), { BATON_ADMIN_TOKEN: ADMIN_TOKEN }));
    const c = client(url);
    await c.connected();
    await c.mqtt.subscribeAsync('t/a');
    await c.mqtt.subscribeAsync('t/b');
    const { victim, survivor } = servingPair(sidecar, a, b);
    await waitFor(() => c.from(victim.id, 0, 't/b').length >= 2, 'messages from the serving broker');
    let acked = 0;
    // The old broker takes 600 ms over it: the drain waits for its PUBACK before letting it go.
    const inFlight = publishHeld(c, victim.id, 7, 600).then(() => acked++);
    await waitFor(() => victim.packets('publish').length === 1, 'the old broker has the PUBLISH');
    const drainedAt = Date.now();
    const res = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/v1/backends/${victim.id}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 202, await res.text());

    await waitForMessagesFrom(c, ['t/a', 't/b'], survivor, drainedAt, 2000);
    await inFlight;
    await c.mqtt.publishAsync('req/y', 'after', { qos: 1 });
    assert.equal(acked, 1);
    assertSeamless(c);
    assert.deepEqual(survivor.packets('subscribe').map((p) => p.topics), [['t/a'], ['t/b']]);
    assert.equal(survivor.packets('connect').length, 1);
    // The drain waited for the PUBACK the old broker owed (the state was not settled before it):
    // nothing is replayed, the new broker sees only what came after.
    assert.deepEqual(
      survivor.packets('publish').map((p) => `${String(p.topic)} dup=${String(p.dup)}`),
      ['req/y dup=false'],
    );
    assert.equal(victim.packets('publish').length, 1);
    const m = await metrics(sidecar);
    assert.deepEqual([m.resumes, m.resumed, m.resume_refusals], [1, 1, 0]);
    await waitFor(() => sidecar!.pool.backends.get(victim.id)!.sessions === 0, 'the old broker let go');
    // A client leaving on purpose: the old broker got DISCONNECT, so it publishes no Will.
    await waitFor(() => victim.packets('disconnect').length === 1, 'the old broker got DISCONNECT before the close');
  });

  test('the new broker refuses the replayed CONNECT (other credentials): the connection closes, mqtt.js reconnects and gets the broker\'s own refusal (CONNACK 5); nothing left connected', async () => {
    const a = await Fixture.begin('a');
    const laterPort = await freePort();
    let url: string;
    // b is down at first, so the session lands on a; it comes up accepting another token only.
    ({ sidecar, url } = await startSidecar(config([a, { id: 'b', url: `ws://127.0.0.1:${laterPort}` }])));
    const c = client(url, { reconnectPeriod: 200 });
    await c.connected();
    await c.mqtt.subscribeAsync('t/a');
    await c.mqtt.subscribeAsync('t/b');
    const first = onlySession(sidecar);
    assert.equal(first.backend!.id, 'a');
    const b = await Fixture.begin('b', 'another-token', laterPort);
    await a.kill();

    await waitFor(() => c.errors.length > 0, 'an error from mqtt.js', 5000);
    assert.deepEqual(c.errors, [{ message: 'Connection refused: Not authorized', code: 5 }], 'the broker\'s own refusal, on a fresh connect');
    assert.equal(c.wsCloses[0]!.code, 1000, 'the resumed connection closed normally, as a refusing broker ends it');
    assert.match(c.wsCloses[0]!.reason, /refused the CONNECT \(0x05 not authorized\)/);
    assert.equal(c.count('connect'), 1, 'never connected again');
    assert.equal(c.mqtt.connected, false, 'not connected (no zombie)');
    // The replay pipelines its SUBSCRIBEs after the CONNECT (allowed: MQTT 3.1.1 §3.1.4); a broker
    // that refuses the CONNECT processes nothing after it [MQTT-3.1.4-5].
    assert.deepEqual(
      b.packets().map((p) => `${p.cmd}${p.ok === undefined ? '' : ` ok=${String(p.ok)}`}`),
      ['connect ok=false', 'subscribe', 'subscribe', 'connect ok=false'],
      'the replay, then mqtt.js\'s own fresh connect',
    );
    assert.equal(first.closed, true);
    const m = await metrics(sidecar);
    assert.deepEqual([m.resumes, m.resume_refusals, m.resumed], [1, 1, 0]);
  });

  test('MQTT 5: the new broker connects on other terms (Receive Maximum 5, was 20): closed with 1012 rather than carried on under terms mqtt.js does not know; it reconnects and learns them', async () => {
    const a = await Fixture.begin('a');
    const laterPort = await freePort();
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, { id: 'b', url: `ws://127.0.0.1:${laterPort}` }])));
    const c = client(url, { protocolVersion: 5, reconnectPeriod: 100 });
    await c.connected();
    await c.mqtt.subscribeAsync('t/a');
    const b = await Fixture.begin('b', TOKEN, laterPort, ['--receive-maximum', '5']);
    const killedAt = Date.now();
    await a.kill();

    await waitFor(() => c.count('connect') === 2, 'mqtt.js connected again', 5000);
    assert.equal(c.wsCloses[0]!.code, 1012);
    assert.match(c.wsCloses[0]!.reason, /other terms/);
    await waitForMessagesFrom(c, ['t/a'], b, killedAt, 3000);
    assert.equal(b.packets('connect').length, 2, 'the replay, refused by the sidecar; then mqtt.js\'s own CONNECT');
    const m = await metrics(sidecar);
    assert.deepEqual([m.resumes, m.resume_refusals, m.resumed], [1, 1, 0]);
  });

  for (const [name, extra] of [
    ['state past codec.maxStateFrames (CONNECT + two SUBSCRIBEs > 2)', 'codec: { maxStateFrames: 2 }\n'],
    ['failover.mode close', 'failover: { mode: close }\n'],
  ] as const) {
    test(`${name}: the client is closed with 1012 and mqtt.js reconnects and resubscribes by itself`, async () => {
      const a = await Fixture.begin('a');
      const b = await Fixture.begin('b');
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b], extra)));
      const c = client(url, { reconnectPeriod: 100 });
      await c.connected();
      await c.mqtt.subscribeAsync('t/a');
      await c.mqtt.subscribeAsync('t/b');
      const { victim, survivor } = servingPair(sidecar, a, b);
      await waitFor(() => c.from(victim.id, 0, 't/b').length >= 2, 'messages from the serving broker');
      const killedAt = Date.now();
      await victim.kill();

      await waitFor(() => c.count('connect') === 2, 'mqtt.js connected again', 5000);
      assert.deepEqual(c.wsCloses.map((x) => x.code), [1012]);
      assert.deepEqual(c.errors, []);
      await waitForMessagesFrom(c, ['t/a', 't/b'], survivor, killedAt, 3000);
      assert.deepEqual(survivor.packets('subscribe').map((p) => p.topics), [['t/a', 't/b']], 'resubscribed by mqtt.js itself');
      await c.mqtt.publishAsync('req/y', 'after', { qos: 1 });
      const m = await metrics(sidecar);
      assert.equal(m.unresumable_sessions, 1);
      assert.equal(m.resumes, 0, 'nothing replayed');
    });
  }
});
