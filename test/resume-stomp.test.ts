// STOMP sessions resumed on another backend: a real @stomp/stompjs Client (login/passcode, two
// subscriptions, heart-beats to the broker) through an in-process sidecar in front of two
// stomp-broker-js brokers in their own processes (test/fixtures/stomp-server.ts), each publishing
// to /topic/a and /topic/b every 50 ms. When the serving broker is SIGKILLed or drained, the
// sidecar replays the CONNECT and the live SUBSCRIBEs to the other and swallows its CONNECTED: the
// client's connection carries on, fed by the new broker, without a second onConnect, a close or an
// ERROR; a receipted SEND the dead broker never answered is replayed after the resume. A broker
// refusing the replayed CONNECT sends the client its ERROR and a close (1008); one whose heart-beat
// needs the client cannot meet gets a 1012; a session that cannot be resumed (state over its
// bound, failover.mode close) gets 1012 and stompjs reconnects by itself.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, test } from 'node:test';
import { Client, type IFrame, type StompSubscription } from '@stomp/stompjs';
import { WebSocket } from 'ws';
import { AdminClient } from '../common/admin/client.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { FixtureProcess, killAllFixtures, startSidecar, waitFor } from './helpers.js';

const script = fileURLToPath(new URL('./fixtures/stomp-server.js', import.meta.url));
const TOKEN = 'secret';
const ADMIN_TOKEN = 'stomp-admin-token-0123456789';
/** The broker checks the client's heart-beats every second: a resume that broke them would be closed. */
const BROKER_HEARTBEAT = '0,1000';

/** A stomp-server fixture process; records the JSON lines it prints. */
class Broker extends FixtureProcess {
  static async begin(id: string, token = TOKEN, heartbeat = BROKER_HEARTBEAT): Promise<Broker> {
    const b = new Broker(id, script, ['--port', '0', '--host', '127.0.0.1', '--id', id, '--token', token, '--heartbeat', heartbeat]);
    await b.start();
    return b;
  }

  /** SIGSTOP: the broker stops reading and answering (its socket stays open). */
  pause(): void {
    void this.signal('SIGSTOP');
  }
}

interface Received {
  from: string;
  topic: string;
  n: number;
  at: number;
}

/** A stompjs Client that records its lifecycle and the messages of its two subscriptions. */
class StompUser {
  readonly client: Client;
  connects = 0;
  readonly closes: number[] = [];
  readonly stompErrors: string[] = [];
  disconnects = 0;
  readonly messages: Received[] = [];
  readonly subs = new Map<string, StompSubscription>();

  constructor(url: string, opts: { passcode?: string; reconnectDelay?: number; topics?: string[] } = {}) {
    const topics = opts.topics ?? ['a', 'b'];
    this.client = new Client({
      webSocketFactory: () => new WebSocket(`${url}/stomp`, ['v12.stomp']),
      connectHeaders: { login: 'user', passcode: opts.passcode ?? TOKEN },
      reconnectDelay: opts.reconnectDelay ?? 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 1000,
    });
    this.client.onConnect = () => {
      this.connects++;
      for (const topic of topics) {
        this.subs.set(
          topic,
          this.client.subscribe(`/topic/${topic}`, (m) => {
            const body = JSON.parse(m.body) as { from: string; topic: string; n: number };
            this.messages.push({ ...body, at: Date.now() });
          }),
        );
      }
    };
    this.client.onWebSocketClose = (e: { code: number }) => this.closes.push(e.code);
    this.client.onStompError = (f: IFrame) => this.stompErrors.push(f.headers.message ?? '');
    this.client.onDisconnect = () => this.disconnects++;
    this.client.activate();
  }

  from(backend: string, topic?: string, since = 0): Received[] {
    return this.messages.filter((m) => m.from === backend && (topic === undefined || m.topic === topic) && m.at >= since);
  }

  /** A SEND with a receipt: resolves with the RECEIPT frame. */
  request(receipt: string, timeoutMs = 3000): Promise<IFrame> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no RECEIPT ${receipt} in ${timeoutMs} ms`)), timeoutMs);
      this.client.watchForReceipt(receipt, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      this.client.publish({ destination: '/queue/requests', headers: { receipt }, body: `request ${receipt}` });
    });
  }

  /** No close, ERROR, DISCONNECT or second CONNECTED ever reached the client. */
  assertUntouched(): void {
    assert.equal(this.connects, 1, 'onConnect fired once');
    assert.deepEqual(this.closes, [], 'no onWebSocketClose');
    assert.deepEqual(this.stompErrors, [], 'no onStompError');
    assert.equal(this.disconnects, 0, 'no onDisconnect');
  }

  async stop(): Promise<void> {
    this.client.onWebSocketClose = () => {};
    await this.client.deactivate({ force: true });
  }
}

/** A codec counter's value for the stomp codec, from the sidecar's registry. */
async function stompMetric(sidecar: Sidecar, name: string): Promise<number> {
  const text = await sidecar.metrics.registry.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{codec="stomp"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function stompMetrics(sidecar: Sidecar): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of ['resumes', 'resumed', 'resume_answers_swallowed', 'resume_refusals', 'unresumable_sessions']) {
    out[n] = await stompMetric(sidecar, `baton_codec_${n}_total`);
  }
  return out;
}

function config(brokers: { id: string; url: string; standby?: boolean }[], extra = ''): string {
  return (
    `session: { pingInterval: 1s, pongTimeout: 1s }\n${extra}` +
    `backends:\n${brokers.map((b) => `  - { id: ${b.id}, url: "${b.url}"${b.standby ? ', standby: true' : ''} }`).join('\n')}\n`
  );
}

/** Waits for the client's session to be served (CONNECTED, both subscriptions fed) and says by whom. */
async function serving(user: StompUser, x: Broker, y: Broker, topics = ['a', 'b']): Promise<{ victim: Broker; survivor: Broker }> {
  await waitFor(() => user.connects === 1 && topics.every((t) => user.messages.some((m) => m.topic === t)), 'messages on every subscription', 5000);
  const first = user.messages[0]!.from;
  assert.ok(first === x.id || first === y.id, `served by ${first}`);
  return first === x.id ? { victim: x, survivor: y } : { victim: y, survivor: x };
}

describe('STOMP sessions resumed on another backend', () => {
  let sidecar: Sidecar | undefined;
  let user: StompUser | undefined;
  afterEach(async () => {
    await user?.stop();
    user = undefined;
    await sidecar?.stop(0);
    sidecar = undefined;
    await killAllFixtures();
  });
  after(killAllFixtures);

  test('the fixture, directly: CONNECT with the passcode, two subscriptions fed every 50 ms, a receipted SEND answered; a bad passcode gets ERROR and a close', async () => {
    const a = await Broker.begin('a');
    user = new StompUser(`ws://127.0.0.1:${a.port}`);
    await waitFor(() => user!.from('a', 'a').length >= 3 && user!.from('a', 'b').length >= 3, 'messages on both topics');
    const receipt = await user.request('direct-1');
    assert.equal(receipt.headers['receipt-id'], 'direct-1');
    assert.deepEqual(a.of('subscribe').map((e) => [e.id, e.topic]), [['sub-0', '/topic/a'], ['sub-1', '/topic/b']]);
    assert.equal(a.of('connection')[0]!.protocol, 'v12.stomp');
    user.assertUntouched();
    await user.stop();
    user = new StompUser(`ws://127.0.0.1:${a.port}`, { passcode: 'wrong' });
    await waitFor(() => user!.closes.length > 0, 'the refused client closed');
    assert.deepEqual(user.stompErrors, ['CONNECTION ERROR']);
    assert.deepEqual(user.closes, [1008]);
    assert.equal(a.of('refused').length, 1);
  });

  test('SIGKILL of the serving broker: the same connection is fed by the other within 1 s, a request is answered, nothing reaches the client', async () => {
    const a = await Broker.begin('a');
    const b = await Broker.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    user = new StompUser(url);
    const { victim, survivor } = await serving(user, a, b);
    assert.equal(survivor.of('connect').length, 0, 'the survivor has no STOMP session yet');
    await user.request('before-kill');
    const killedAt = Date.now();
    await victim.kill();
    await waitFor(() => user!.from(survivor.id, 'a').length > 0 && user!.from(survivor.id, 'b').length > 0, 'messages from the survivor on both topics', 3000);
    for (const topic of ['a', 'b']) {
      const first = user.from(survivor.id, topic)[0]!;
      assert.ok(first.at - killedAt < 1000, `topic ${topic} resumed ${first.at - killedAt} ms after the kill`);
    }
    const answer = await user.request('after-kill');
    assert.equal(answer.headers['receipt-id'], 'after-kill');
    assert.deepEqual(survivor.of('send').map((e) => e.receipt), ['after-kill'], 'the request went to the survivor, once');
    // The survivor got the client's own CONNECT (login, passcode, heart-beat) and both subscriptions, once.
    assert.deepEqual(survivor.of('connect').map((e) => [e.login, e.heartBeat]), [['user', '1000,0']]);
    assert.deepEqual(survivor.of('subscribe').map((e) => [e.id, e.topic]), [['sub-0', '/topic/a'], ['sub-1', '/topic/b']]);
    // Heart-beats still flow: the broker closes a client silent for 2 s; the feed goes on past that.
    const resumedAt = Date.now();
    await waitFor(() => user!.from(survivor.id, 'a', resumedAt + 2500).length > 0 || user!.closes.length > 0, 'the feed 2.5 s on', 5000);
    user.assertUntouched();
    assert.equal(survivor.of('disconnected').length, 0, 'the survivor kept the session');
    assert.deepEqual(await stompMetrics(sidecar), { resumes: 1, resumed: 1, resume_answers_swallowed: 1, resume_refusals: 0, unresumable_sessions: 0 });
  });

  test('a receipted SEND the dying broker never answered is replayed to the new one after the resume, its RECEIPT delivered once', async () => {
    const a = await Broker.begin('a');
    const b = await Broker.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    user = new StompUser(url);
    const { victim, survivor } = await serving(user, a, b);
    victim.pause();
    const receipts: string[] = [];
    user.client.onUnhandledReceipt = (f) => receipts.push(`unhandled ${f.headers['receipt-id']}`);
    const answered = user.request('in-flight', 5000).then((f) => receipts.push(f.headers['receipt-id']!));
    await new Promise((r) => setTimeout(r, 100)); // the SEND has gone to the stopped broker
    await victim.kill();
    await answered;
    await waitFor(() => user!.from(survivor.id, 'a').length >= 3, 'the feed from the survivor', 3000);
    assert.deepEqual(receipts, ['in-flight'], 'one RECEIPT');
    assert.deepEqual(survivor.of('send').map((e) => e.receipt), ['in-flight']);
    // On the wire to the survivor: the replayed CONNECT and SUBSCRIBEs, then the replayed SEND.
    assert.deepEqual(survivor.of('frame').map((e) => e.command).slice(0, 4), ['CONNECT', 'SUBSCRIBE', 'SUBSCRIBE', 'SEND']);
    user.assertUntouched();
  });

  test('after an UNSUBSCRIBE, only the remaining subscription is resumed', async () => {
    const a = await Broker.begin('a');
    const b = await Broker.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    user = new StompUser(url);
    const { victim, survivor } = await serving(user, a, b);
    user.subs.get('b')!.unsubscribe();
    await waitFor(() => victim.of('unsubscribe').length === 1, 'the serving broker unsubscribed sub-1');
    await victim.kill();
    await waitFor(() => user!.from(survivor.id, 'a').length >= 3, 'topic a from the survivor', 3000);
    assert.deepEqual(survivor.of('subscribe').map((e) => [e.id, e.topic]), [['sub-0', '/topic/a']], 'exactly one subscribe replayed');
    assert.equal(user.from(survivor.id, 'b').length, 0, 'nothing from the unsubscribed topic');
    await user.request('after-unsubscribe');
    user.assertUntouched();
  });

  test('drain of the serving broker through the admin API: same outcome, the old broker let go', async () => {
    const a = await Broker.begin('a');
    const b = await Broker.begin('b');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b]), { BATON_ADMIN_TOKEN: ADMIN_TOKEN }));
    const admin = new AdminClient({ baseUrl: `http://127.0.0.1:${sidecar.adminAddress!.port}`, token: ADMIN_TOKEN });
    user = new StompUser(url);
    const { victim, survivor } = await serving(user, a, b);
    const drainedAt = Date.now();
    await admin.drainBackend(victim.id);
    await waitFor(() => user!.from(survivor.id, 'a').length > 0 && user!.from(survivor.id, 'b').length > 0, 'messages from the other broker on both topics', 5000);
    await waitFor(() => victim.of('disconnected').length > 0, 'the drained broker let go');
    const lastOld = Math.max(...user.from(victim.id).map((m) => m.at));
    const firstNew = Math.min(...user.from(survivor.id).map((m) => m.at));
    assert.ok(firstNew - drainedAt < 3000, `moved ${firstNew - drainedAt} ms after the drain`);
    assert.ok(lastOld <= firstNew, 'nothing from the old broker after the new one took over');
    await user.request('after-drain');
    assert.deepEqual(survivor.of('connect').length, 1);
    assert.deepEqual(survivor.of('subscribe').map((e) => [e.id, e.topic]), [['sub-0', '/topic/a'], ['sub-1', '/topic/b']]);
    user.assertUntouched();
    assert.deepEqual(await stompMetrics(sidecar), { resumes: 1, resumed: 1, resume_answers_swallowed: 1, resume_refusals: 0, unresumable_sessions: 0 });
  });

  test('the new broker refuses the replayed CONNECT (another passcode): the client gets its ERROR and a close, not a zombie session', async () => {
    const a = await Broker.begin('a');
    const b = await Broker.begin('b', 'another-token');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, { id: b.id, url: b.url, standby: true }])));
    user = new StompUser(url);
    await serving(user, a, b);
    assert.equal(user.messages[0]!.from, 'a');
    await a.kill();
    await waitFor(() => user!.closes.length > 0, 'the client closed', 5000);
    assert.equal(b.of('refused').length, 1, 'the standby refused the replayed CONNECT');
    assert.deepEqual(user.stompErrors, ['CONNECTION ERROR'], 'the broker\'s own ERROR reached the client');
    assert.deepEqual(user.closes, [1008]);
    assert.equal(user.connects, 1);
    assert.equal(user.from('b').length, 0);
    assert.deepEqual(await stompMetrics(sidecar), { resumes: 1, resumed: 0, resume_answers_swallowed: 0, resume_refusals: 1, unresumable_sessions: 0 });
  });

  test('a new broker wanting heart-beats more often than the client was told to send them: 1012, and stompjs reconnects and negotiates with it', async () => {
    // The client offers to send every 1 s; a wants one every 3 s (the client sends every 3 s), b every 1 s.
    const a = await Broker.begin('a', TOKEN, '0,3000');
    const b = await Broker.begin('b', TOKEN, '0,1000');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, { id: b.id, url: b.url, standby: true }])));
    user = new StompUser(url, { reconnectDelay: 100 });
    await serving(user, a, b);
    await a.kill();
    await waitFor(() => user!.connects === 2 && user!.from('b', 'a').length > 0, 'reconnected to b', 5000);
    assert.deepEqual(user.closes, [1012]);
    assert.deepEqual(user.stompErrors, []);
    assert.equal(b.of('connect').length, 2, 'the replayed CONNECT, then the client\'s own');
    assert.deepEqual(await stompMetrics(sidecar), { resumes: 1, resumed: 0, resume_answers_swallowed: 0, resume_refusals: 1, unresumable_sessions: 0 });
  });

  for (const [name, extra] of [
    ['state past its bound (codec.maxStateFrames: 2)', 'codec: { maxStateFrames: 2 }\n'],
    ['failover.mode: close', 'failover: { mode: close }\n'],
  ] as const) {
    test(`${name}: the client gets 1012 at the kill and stompjs reconnects by itself`, async () => {
      const a = await Broker.begin('a');
      const b = await Broker.begin('b');
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b], extra)));
      user = new StompUser(url, { reconnectDelay: 100 });
      const { victim, survivor } = await serving(user, a, b);
      await victim.kill();
      await waitFor(() => user!.closes.length > 0, 'the client closed', 3000);
      assert.deepEqual(user.closes, [1012]);
      await waitFor(() => user!.connects === 2 && user!.from(survivor.id, 'a').length > 0 && user!.from(survivor.id, 'b').length > 0, 'reconnected and fed by the survivor', 5000);
      assert.deepEqual(user.stompErrors, []);
      assert.equal(survivor.of('connect').length, 1, 'one CONNECT: the client\'s new one, nothing replayed');
      assert.deepEqual(user.closes, [1012]);
      assert.deepEqual(await stompMetrics(sidecar), { resumes: 0, resumed: 0, resume_answers_swallowed: 0, resume_refusals: 0, unresumable_sessions: 1 });
    });
  }
});
