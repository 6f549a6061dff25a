// Resumable GraphQL over WebSocket sessions end to end: the real graphql-ws client (createClient,
// subprotocol graphql-transport-ws) through an in-process sidecar (codec chosen by the subprotocol
// the backend accepted) to two graphql-ws server processes (test/fixtures/graphql-ws-server.ts)
// that tick every 50 ms on each subscription. When the serving backend is killed or drained the
// client's connection stays open: its connection_init and live subscriptions are replayed to the
// other backend (the subscribes after its connection_ack), that ack is swallowed, ticks come from
// the other backend within a second, and queries are answered (one in flight replayed). A refused
// replay (4403) reaches the client as a fresh connect would; a session whose state cannot move
// (past codec.maxStateFrames, failover.mode close, a mutation in flight) gets 1012 and the
// client library reconnects by itself.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, test } from 'node:test';
import { createClient, type Client, type ExecutionResult } from 'graphql-ws';
import { WebSocket } from 'ws';
import { AdminClient } from '../common/admin/client.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { backendsYaml, FixtureProcess, killAllFixtures, startSidecar, waitFor } from './helpers.js';

const script = fileURLToPath(new URL('./fixtures/graphql-ws-server.js', import.meta.url));
const TOKEN = 'token-a';
const ADMIN_TOKEN = 'admin-token-0123456789';

/** A graphql-ws server process; records the JSON lines it prints. */
class Fixture extends FixtureProcess {
  static async begin(id: string, token = TOKEN): Promise<Fixture> {
    const f = new Fixture(id, script, ['--host', '127.0.0.1', '--port', '0', '--id', id, '--token', token]);
    await f.start();
    return f;
  }

  /** Ids of the operations of a kind it was asked to run, in order. */
  operations(kind: 'subscription' | 'query' | 'mutation'): string[] {
    return this.of('subscribe')
      .filter((e) => e.kind === kind)
      .map((e) => String(e.id));
  }

  /** The frames it received, parsed. */
  messages(): { type: string; id?: string }[] {
    return this.of('message').map((e) => JSON.parse(String(e.raw)) as { type: string; id?: string });
  }
}

// ---- the client side ---------------------------------------------------------------------------

interface Tick {
  topic: string;
  n: number;
  servedBy: string;
  at: number;
}

/** A graphql-ws client and everything it saw. */
class GqlClient {
  readonly client: Client;
  readonly ticks: Tick[] = [];
  readonly connected: number[] = [];
  readonly opened: number[] = [];
  readonly closed: { code: number; reason: string }[] = [];
  readonly errors: unknown[] = [];
  /** Every message type the client received, in order. */
  readonly messageTypes: string[] = [];
  /** Errors delivered to subscription sinks. */
  readonly sinkErrors: { topic: string; error: unknown }[] = [];
  private readonly unsubscribes = new Map<string, () => void>();

  constructor(url: string, opts: { token?: string; retry?: boolean } = {}) {
    this.client = createClient({
      url,
      webSocketImpl: WebSocket,
      connectionParams: { token: opts.token ?? TOKEN },
      lazy: true,
      retryAttempts: opts.retry ? 5 : 0,
      retryWait: () => new Promise((r) => setTimeout(r, 50)),
      on: {
        opened: () => this.opened.push(Date.now()),
        connected: () => this.connected.push(Date.now()),
        closed: (e) => {
          const ev = e as { code: number; reason: string };
          this.closed.push({ code: ev.code, reason: String(ev.reason) });
        },
        error: (err) => this.errors.push(err),
        message: (m) => this.messageTypes.push(m.type),
      },
    });
  }

  subscribe(topic: string): void {
    const dispose = this.client.subscribe<{ ticks: Omit<Tick, 'at'> }>(
      { query: `subscription Ticks($topic: String!) { ticks(topic: $topic) { topic n servedBy } }`, variables: { topic } },
      {
        next: (r: ExecutionResult<{ ticks: Omit<Tick, 'at'> }>) => {
          if (r.data) this.ticks.push({ ...r.data.ticks, at: Date.now() });
        },
        error: (error) => this.sinkErrors.push({ topic, error }),
        complete: () => {},
      },
    );
    this.unsubscribes.set(topic, dispose);
  }

  unsubscribe(topic: string): void {
    this.unsubscribes.get(topic)?.();
  }

  /** One query or mutation: its single result (rejects on an error or a close). */
  request<T>(query: string, variables: Record<string, unknown> = {}): Promise<ExecutionResult<T>> {
    return new Promise((resolve, reject) => {
      let result: ExecutionResult<T> | null = null;
      let count = 0;
      this.client.subscribe<T>(
        { query, variables },
        {
          next: (r) => {
            count++;
            result = r as ExecutionResult<T>;
          },
          error: reject,
          complete: () => (count === 1 ? resolve(result!) : reject(new Error(`${count} results for one operation`))),
        },
      );
    });
  }

  ticksOf(topic: string, servedBy?: string): Tick[] {
    return this.ticks.filter((t) => t.topic === topic && (servedBy === undefined || t.servedBy === servedBy));
  }

  async dispose(): Promise<void> {
    await this.client.dispose();
  }
}

// ---- sidecar -----------------------------------------------------------------------------------

function config(backends: { id: string; url: string }[], extra = '', standbyB = false): string {
  // standbyB: b is used only once a is not (so the session starts on a).
  const list = standbyB
    ? `backends:\n  - { id: a, url: "${backends[0]!.url}" }\n  - { id: b, url: "${backends[1]!.url}", standby: true }\n`
    : backendsYaml(backends);
  return `session: { pingInterval: 1s, pongTimeout: 1s }\n${extra}${list}`;
}

/** A codec counter's value for graphql-ws, from the sidecar's registry (the line must exist). */
async function metric(sidecar: Sidecar, name: string): Promise<number> {
  const text = await sidecar.metrics.registry.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{codec="graphql-ws"\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name}{codec="graphql-ws"} in:\n${text}`);
  return Number(m[1]);
}

async function metrics(sidecar: Sidecar, names: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = await metric(sidecar, `baton_codec_${n}_total`);
  return out;
}

function onlySession(sidecar: Sidecar) {
  assert.equal(sidecar.sessions.size, 1, 'one session');
  return [...sidecar.sessions.values()][0]!;
}

/** The backend serving the only session, and the other one. */
function servingPair(sidecar: Sidecar, x: Fixture, y: Fixture): { victim: Fixture; survivor: Fixture } {
  const id = onlySession(sidecar).backend?.id;
  assert.ok(id === x.id || id === y.id, `session on ${id}`);
  return id === x.id ? { victim: x, survivor: y } : { victim: y, survivor: x };
}

/** Starts two backends, a sidecar and a client with two subscriptions ticking from the serving backend. */
async function setup(opts: { extra?: string; survivorToken?: string; retry?: boolean; env?: NodeJS.ProcessEnv } = {}) {
  const a = await Fixture.begin('a');
  const b = await Fixture.begin('b', opts.survivorToken);
  // With another token, b must not get the session first: it is a standby then.
  const { sidecar, url } = await startSidecar(config([a, b], opts.extra ?? '', opts.survivorToken !== undefined), opts.env ?? {});
  current = sidecar;
  const c = new GqlClient(url, { retry: opts.retry ?? false });
  clients.push(c);
  c.subscribe('a');
  c.subscribe('b');
  await waitFor(() => c.ticksOf('a').length >= 2 && c.ticksOf('b').length >= 2, 'ticks on both subscriptions');
  const { victim, survivor } = servingPair(sidecar, a, b);
  assert.deepEqual(victim.operations('subscription').length, 2);
  return { sidecar, url, c, victim, survivor };
}

let current: Sidecar | null = null;
const clients: GqlClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.dispose().catch(() => {});
  await current?.stop(0);
  current = null;
  await killAllFixtures();
});
after(async () => {
  await killAllFixtures();
});

/** The moment every topic has a tick from `backend` after `since`, or throws with what the client and backend saw. */
async function resumedOn(c: GqlClient, backend: Fixture, topics: string[], since: number, timeoutMs = 3000): Promise<number> {
  try {
    await waitFor(() => topics.every((t) => c.ticksOf(t, backend.id).some((x) => x.at >= since)), `ticks from ${backend.id} on ${topics.join(', ')}`, timeoutMs);
  } catch (err) {
    const seen = backend.events.filter((e) => e.event !== 'listening').map((e) => JSON.stringify(e));
    throw new Error(`${(err as Error).message}\nclient closes: ${JSON.stringify(c.closed)}\n${backend.id} saw:\n${seen.join('\n')}`);
  }
  return Math.max(...topics.map((t) => c.ticksOf(t, backend.id)[0]!.at));
}

function assertOneConnection(c: GqlClient): void {
  assert.equal(c.opened.length, 1, 'one socket opened');
  assert.equal(c.connected.length, 1, "'connected' fired once");
  assert.deepEqual(c.closed, [], 'no close');
  assert.deepEqual(c.errors, [], 'no error');
  assert.deepEqual(c.sinkErrors, [], 'no subscription error');
  assert.equal(c.messageTypes.filter((t) => t === 'connection_ack').length, 1, 'one connection_ack reached the client');
}

/** The survivor got one connection and connection_init (with the client's token) and exactly these subscriptions. */
function assertResumedOn(survivor: Fixture, subscriptionIds: string[]): void {
  assert.equal(survivor.of('connection').length, 1, 'one connection to the survivor');
  assert.deepEqual(survivor.of('connect').map((e) => [e.ok, e.token]), [[true, TOKEN]], 'one connection_init, accepted');
  assert.deepEqual(survivor.operations('subscription'), subscriptionIds, 'exactly the live subscriptions, in order');
  assert.equal(new Set(survivor.messages().filter((m) => m.type === 'subscribe').map((m) => m.id)).size, survivor.messages().filter((m) => m.type === 'subscribe').length, 'no id twice');
  assert.deepEqual(survivor.of('close'), [], 'the survivor closed nothing (no 4401, 4409, 4429)');
}

describe('graphql-ws: resumed sessions', () => {
  test('SIGKILL of the serving backend: the same connection keeps ticking from the other within 1 s; a query in flight is replayed, a new one answered', async () => {
    const { c, victim, survivor } = await setup();
    const subs = victim.operations('subscription');
    // A query the victim will not have answered when it dies.
    const slow = c.request<{ echo: { n: number; servedBy: string } }>('query Slow($n: Int!) { echo(n: $n, delayMs: 1500) { n servedBy } }', { n: 1 });
    await waitFor(() => victim.operations('query').length === 1, 'the victim has the slow query');
    const killedAt = Date.now();
    await victim.kill();
    const resumedAt = await resumedOn(c, survivor, ['a', 'b'], killedAt);
    assert.ok(resumedAt - killedAt < 1000, `ticks from the survivor ${resumedAt - killedAt} ms after the kill`);
    assert.deepEqual((await slow).data, { echo: { n: 1, servedBy: survivor.id } }, 'the query in flight was replayed to the survivor');
    const fresh = await c.request<{ servedBy: string }>('{ servedBy }');
    assert.deepEqual(fresh.data, { servedBy: survivor.id });
    // Ticks go on, numbered from 0 by the survivor (a subscription started there), on both topics.
    await waitFor(() => c.ticksOf('a', survivor.id).length >= 5 && c.ticksOf('b', survivor.id).length >= 5, 'more ticks from the survivor');
    assert.deepEqual(c.ticksOf('a', survivor.id).slice(0, 3).map((t) => t.n), [0, 1, 2]);
    assertOneConnection(c);
    assertResumedOn(survivor, subs);
    assert.deepEqual(survivor.operations('query').length, 2, 'the replayed query and the new one');
    assert.equal(current!.sessions.size, 1);
    assert.deepEqual(await metrics(current!, ['resumes', 'resumed', 'resume_answers_swallowed', 'resume_refusals', 'requests_replayed', 'malformed_frames']), {
      resumes: 1,
      resumed: 1,
      resume_answers_swallowed: 1,
      resume_refusals: 0,
      requests_replayed: 1,
      malformed_frames: 0,
    });
  });

  test('unsubscribe one, then kill: only the remaining subscription is resumed', async () => {
    const { c, victim, survivor } = await setup();
    const [subA, subB] = victim.operations('subscription');
    c.unsubscribe('a');
    await waitFor(() => victim.messages().some((m) => m.type === 'complete' && m.id === subA), 'the victim got the complete');
    const killedAt = Date.now();
    await victim.kill();
    await resumedOn(c, survivor, ['b'], killedAt);
    await new Promise((r) => setTimeout(r, 200)); // room for any tick of a to (wrongly) arrive
    assert.deepEqual(c.ticksOf('a', survivor.id), [], 'no tick of the ended subscription');
    assertOneConnection(c);
    assertResumedOn(survivor, [subB!]);
  });

  test('drain through the admin API: same outcome, the old backend let go', async () => {
    const { sidecar, c, victim, survivor } = await setup({ env: { BATON_ADMIN_TOKEN: ADMIN_TOKEN } });
    const subs = victim.operations('subscription');
    const admin = new AdminClient({ baseUrl: `http://127.0.0.1:${sidecar.adminAddress!.port}`, token: ADMIN_TOKEN });
    const drainedAt = Date.now();
    await admin.drainBackend(victim.id, {});
    await resumedOn(c, survivor, ['a', 'b'], drainedAt);
    await waitFor(() => victim.of('close').length === 1, 'the old backend connection closed');
    const request = await c.request<{ servedBy: string }>('{ servedBy }');
    assert.deepEqual(request.data, { servedBy: survivor.id });
    assertOneConnection(c);
    assertResumedOn(survivor, subs);
    assert.equal(onlySession(sidecar).backend?.id, survivor.id);
  });

  test('the new backend refuses the replayed connection_init (4403): the client gets 4403 as a fresh connect would, no zombie', async () => {
    const { sidecar, c, victim, survivor } = await setup({ survivorToken: 'another-token' });
    await victim.kill();
    await waitFor(() => c.closed.length > 0, 'the client closed', 5000);
    assert.deepEqual(c.closed.map((e) => e.code), [4403]);
    assert.equal(c.connected.length, 1);
    assert.deepEqual(survivor.of('connect').map((e) => [e.ok, e.token]), [[false, TOKEN]], 'the survivor refused the replayed init');
    assert.deepEqual(survivor.operations('subscription'), [], 'no subscribe went before an ack');
    await waitFor(() => c.sinkErrors.length === 2, 'both subscriptions errored');
    assert.deepEqual(c.sinkErrors.map((e) => (e.error as { code: number }).code), [4403, 4403]);
    await waitFor(() => sidecar.sessions.size === 0, 'the session is gone');
    assert.deepEqual(await metrics(sidecar, ['resumes', 'resumed']), { resumes: 1, resumed: 0 });
  });

  for (const [what, extra] of [
    ['state past codec.maxStateFrames', 'codec: { maxStateFrames: 2 }\n'],
    ['failover.mode close', 'failover: { mode: close }\n'],
  ] as const) {
    test(`${what}: the client gets 1012 and graphql-ws reconnects and resubscribes by itself`, async () => {
      const { sidecar, c, victim, survivor } = await setup({ extra, retry: true });
      const killedAt = Date.now();
      await victim.kill();
      await waitFor(() => c.closed.length > 0, 'the client closed');
      assert.deepEqual(c.closed.map((e) => e.code), [1012]);
      await waitFor(() => c.connected.length === 2, "'connected' a second time");
      await resumedOn(c, survivor, ['a', 'b'], killedAt);
      assert.deepEqual(c.sinkErrors, [], 'the subscriptions went on (the library resubscribed)');
      assert.equal(survivor.operations('subscription').length, 2, 'resubscribed by the client, not replayed');
      assert.equal(survivor.of('connection').length, 1);
      assert.deepEqual(await metrics(sidecar, ['unresumable_sessions', 'resumes']), { unresumable_sessions: 1, resumes: 0 });
    });
  }

  test('a mutation in flight is never replayed: the session gets 1012, and the library decides (graphql-ws sends it again)', async () => {
    const { c, victim, survivor } = await setup({ retry: true });
    const mutation = c.request<{ add: { n: number; servedBy: string } }>('mutation { add(n: 3, delayMs: 1500) { n servedBy } }');
    await waitFor(() => victim.operations('mutation').length === 1, 'the victim has the mutation');
    await victim.kill();
    await waitFor(() => c.closed.length > 0, 'the client closed');
    assert.deepEqual(c.closed.map((e) => e.code), [1012]);
    assert.deepEqual((await mutation).data, { add: { n: 3, servedBy: survivor.id } });
    assert.equal(c.connected.length, 2);
    const resent = survivor.of('subscribe').filter((e) => e.kind === 'mutation');
    assert.equal(resent.length, 1, 'sent again by the client library on its new connection');
    assert.equal(survivor.of('connection').length, 1, 'one (new) connection: the sidecar replayed nothing');
  });
});
