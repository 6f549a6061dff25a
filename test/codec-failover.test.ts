// Session codecs end to end: real OCPP-J (ocpp-rpc) and JSON-RPC 2.0 (json-rpc-2.0) peers through
// the sidecar, backends in their own processes so they can be SIGKILLed. What the codecs promise:
// requests the dead backend never answered are replayed to the new one (in order, before newer
// messages), every request is answered exactly once, a client's answer to a dead backend's call is
// forwarded or dropped per codec.orphanAnswers, unanswered requests stop being tracked after
// codec.requestTimeout, and frames a codec can't read pass through untouched.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, test } from 'node:test';
import { createJSONRPCRequest, JSONRPCClient, type JSONRPCRequest, type JSONRPCResponse } from 'json-rpc-2.0';
import ocpp from 'ocpp-rpc';
import { WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { BackendProcess, backendsYaml, freePort, killAllBackends, startSidecar, TestClient, waitFor } from './helpers.js';

const { RPCClient } = ocpp;
type ChargerOptions = ConstructorParameters<typeof RPCClient>[0];

// ---- backend fixtures as processes ------------------------------------------------------------

type Kind = 'ocpp' | 'json-rpc';

const scripts: Record<Kind, string> = {
  ocpp: fileURLToPath(new URL('./fixtures/ocpp-server.js', import.meta.url)),
  'json-rpc': fileURLToPath(new URL('./fixtures/jsonrpc-server.js', import.meta.url)),
};

interface FixtureEvent {
  event: string;
  [key: string]: unknown;
}

const liveFixtures = new Set<Fixture>();

/** A fixture backend process (test/fixtures/*.ts); records the JSON lines it prints. */
class Fixture {
  readonly events: FixtureEvent[] = [];
  private child: ChildProcessWithoutNullStreams | null = null;
  port = 0;

  private constructor(
    readonly kind: Kind,
    readonly id: string,
  ) {}

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  static async start(kind: Kind, id: string, args: string[] = [], port = 0): Promise<Fixture> {
    const f = new Fixture(kind, id);
    const child = spawn(process.execPath, [scripts[kind], '--port', String(port), '--id', id, ...args]);
    f.child = child;
    liveFixtures.add(f);
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let pending = '';
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`${kind} fixture ${id} exited early (${code}): ${stderr}`)));
      child.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString();
        let nl: number;
        while ((nl = pending.indexOf('\n')) !== -1) {
          const line = JSON.parse(pending.slice(0, nl)) as FixtureEvent;
          pending = pending.slice(nl + 1);
          f.events.push(line);
          if (line.event === 'listening') {
            f.port = line.port as number;
            resolve();
          }
        }
      });
    });
    child.removeAllListeners('exit');
    return f;
  }

  /** Ids of the requests it received (batch members one by one), in arrival order. */
  requestIds(): string[] {
    return this.events.filter((e) => e.event === 'request').map((e) => String(e.id));
  }

  requests(): { id: string; method: string }[] {
    return this.events.filter((e) => e.event === 'request').map((e) => ({ id: String(e.id), method: String(e.method) }));
  }

  /** Raw text of every frame it received, in order. */
  messages(): string[] {
    return this.events.filter((e) => e.event === 'message').map((e) => String(e.raw));
  }

  async kill(): Promise<void> {
    const child = this.child;
    liveFixtures.delete(this);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    // 'close', not 'exit': what the fixture printed before it died must all have been read.
    const exited = new Promise((r) => child.once('close', r));
    child.kill('SIGKILL');
    await exited;
    this.child = null;
  }
}

async function killAllFixtures(): Promise<void> {
  await Promise.all([...liveFixtures].map((f) => f.kill()));
}

// ---- sidecar config and metrics --------------------------------------------------------------

function config(backends: { id: string; url: string }[], codecExtra = ''): string {
  return (
    `codec:\n  paths: ["/ocpp=ocpp", "/rpc=json-rpc"]\n${codecExtra}` +
    `session: { pingInterval: 200ms, pongTimeout: 300ms }\n` +
    `failover: { backoff: { initial: 20ms, max: 200ms, multiplier: 2, jitter: 0.2 } }\n` +
    backendsYaml(backends)
  );
}

/** A codec counter's value for one codec, from the sidecar's registry (the line must exist). */
async function codecMetric(sidecar: Sidecar, name: string, codec: Kind): Promise<number> {
  const text = await sidecar.metrics.registry.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{codec="${codec}"\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name}{codec="${codec}"} in:\n${text}`);
  return Number(m[1]);
}

/** Polls a codec counter until `ok(value)` or the deadline; returns the value. */
async function waitForMetric(sidecar: Sidecar, name: string, codec: Kind, ok: (v: number) => boolean, timeoutMs = 3000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await codecMetric(sidecar, name, codec);
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting on ${name}{codec="${codec}"} (now ${v})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Which backend serves the only session, and the other one. */
function servingPair<T extends { id: string }>(sidecar: Sidecar, x: T, y: T): { session: NonNullable<ReturnType<typeof onlySession>>; victim: T; survivor: T } {
  const session = onlySession(sidecar);
  const first = session.backend!.id;
  assert.ok(first === x.id || first === y.id, `session on ${first}`);
  return first === x.id ? { session, victim: x, survivor: y } : { session, victim: y, survivor: x };
}

function onlySession(sidecar: Sidecar) {
  assert.equal(sidecar.sessions.size, 1, 'one session');
  return [...sidecar.sessions.values()][0]!;
}

// ---- raw framing for TestClient-driven tests --------------------------------------------------

interface Answer {
  id: string;
  body: { servedBy?: string; echo?: { n?: number } } & Record<string, unknown>;
}

interface Dialect {
  kind: Kind;
  path: string;
  protocols: string[];
  request(id: string, method: string, params: Record<string, unknown>): string;
  answers(frame: string): Answer[];
}

function tryParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const OCPP: Dialect = {
  kind: 'ocpp',
  path: '/ocpp/CP042',
  protocols: ['ocpp1.6'],
  request: (id, method, params) => JSON.stringify([2, id, method, params]),
  answers(frame) {
    const m = tryParse(frame);
    if (!Array.isArray(m) || (m[0] !== 3 && m[0] !== 4)) return [];
    return [{ id: String(m[1]), body: m[0] === 3 ? (m[2] as Answer['body']) : { error: m[2] } }];
  },
};

const JSONRPC: Dialect = {
  kind: 'json-rpc',
  path: '/rpc/t',
  protocols: [],
  request: (id, method, params) => JSON.stringify({ jsonrpc: '2.0', id, method, params }),
  answers(frame) {
    const m = tryParse(frame);
    const all = (Array.isArray(m) ? m : [m]) as Partial<JSONRPCResponse>[];
    return all
      .filter((r) => typeof r === 'object' && r !== null && ('result' in r || 'error' in r))
      .map((r) => ({ id: String(r.id), body: 'result' in r ? (r.result as Answer['body']) : { error: r.error } }));
  },
};

function answersOf(c: TestClient, d: Dialect): Answer[] {
  return c.texts().flatMap((t) => d.answers(t));
}

function answersTo(c: TestClient, d: Dialect, id: string): Answer[] {
  return answersOf(c, d).filter((a) => a.id === id);
}

async function waitForAnswer(c: TestClient, d: Dialect, id: string, timeoutMs = 5000): Promise<Answer> {
  await waitFor(() => answersTo(c, d, id).length > 0 || c.closed !== null, `an answer to ${id}`, timeoutMs);
  assert.equal(c.closed, null, 'client still connected');
  return answersTo(c, d, id)[0]!;
}

// ---- the tests --------------------------------------------------------------------------------

describe('session codecs through failover', () => {
  let sidecar: Sidecar | undefined;
  afterEach(async () => {
    await sidecar?.stop(0);
    sidecar = undefined;
    await killAllFixtures();
    await killAllBackends();
  });
  after(async () => {
    await killAllFixtures();
    await killAllBackends();
  });

  test('OCPP: ocpp-rpc charger making 200 calls, serving backend SIGKILLed mid-stream: every call answered once, unanswered ones replayed in order to the survivor, the charger never disconnects', async () => {
    const a = await Fixture.start('ocpp', 'a', ['--delay', '300']);
    const b = await Fixture.start('ocpp', 'b', ['--delay', '300']);
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    const charger = new RPCClient({
      endpoint: `${url}/ocpp`,
      identity: 'CP001',
      protocols: ['ocpp1.6'],
      callTimeoutMs: 20_000,
      callConcurrency: 10,
      reconnect: false,
    } as ChargerOptions);
    const lifecycle: string[] = [];
    charger.on('disconnect', (e: { code: number }) => lifecycle.push(`disconnect ${e.code}`));
    charger.on('close', (e: { code: number }) => lifecycle.push(`close ${e.code}`));
    const badMessages: string[] = [];
    charger.on('badMessage', (e: { buffer: Buffer; error: Error }) => badMessages.push(`${e.error.message}: ${String(e.buffer)}`));
    let killed = false;
    /** Calls in the order they went on the wire. */
    const sent: { id: string; n: number; afterKill: boolean }[] = [];
    charger.on('call', ({ outbound, payload }: { outbound: boolean; payload: [number, string, string, { n: number }] }) => {
      if (outbound) sent.push({ id: payload[1], n: payload[3].n, afterKill: killed });
    });
    const answerCount = new Map<string, number>();
    charger.on('message', ({ message, outbound }: { message: string; outbound: boolean }) => {
      const m = tryParse(String(message));
      if (!outbound && Array.isArray(m) && (m[0] === 3 || m[0] === 4)) answerCount.set(String(m[1]), (answerCount.get(String(m[1])) ?? 0) + 1);
    });
    await charger.connect();
    const { session, victim, survivor } = servingPair(sidecar, a, b);

    const TOTAL = 200;
    let settled = 0;
    const outcomes = Array.from({ length: TOTAL }, (_, n) =>
      charger.call('Echo', { n }).then(
        (result) => {
          settled++;
          return { n, ok: true as const, result: result as { servedBy: string; echo: { n: number } } };
        },
        (err: Error) => {
          settled++;
          return { n, ok: false as const, error: err.message };
        },
      ),
    );
    await waitFor(() => settled >= 80, '80 calls answered before the kill', 15_000);
    await victim.kill();
    killed = true;
    await waitFor(() => settled === TOTAL, `all ${TOTAL} calls settled`, 20_000);
    const results = await Promise.all(outcomes);

    assert.deepEqual(results.filter((r) => !r.ok), [], 'no call rejected or timed out');
    const servedBy = new Map<number, string>();
    for (const r of results) {
      assert.ok(r.ok);
      assert.equal(r.result.echo.n, r.n, 'each call got its own answer');
      servedBy.set(r.n, r.result.servedBy);
    }
    assert.deepEqual(lifecycle, [], 'the charger never saw a disconnect or close');
    assert.equal(charger.state, RPCClient.OPEN);
    assert.deepEqual(badMessages, [], 'no stray or duplicate answer reached the charger');
    assert.equal(sent.length, TOTAL);
    assert.equal(new Set(sent.map((s) => s.id)).size, TOTAL, 'distinct message ids');
    const notOnce = sent.filter((s) => answerCount.get(s.id) !== 1).map((s) => `${s.n}:${answerCount.get(s.id) ?? 0}`);
    assert.deepEqual(notOnce, [], 'every call answered exactly once on the wire');

    const afterKill = sent.filter((s) => s.afterKill);
    assert.ok(afterKill.length > 0, 'calls were still being made after the kill');
    assert.deepEqual(afterKill.filter((s) => servedBy.get(s.n) !== survivor.id).map((s) => s.n), [], 'calls made after the kill are answered by the survivor');
    assert.ok([...servedBy.values()].every((id) => id === victim.id || id === survivor.id));

    const sentIndex = new Map(sent.map((s, i) => [s.id, i]));
    const survivorGot = survivor.requestIds();
    const victimGot = victim.requestIds();
    assert.equal(new Set(survivorGot).size, survivorGot.length, 'the survivor received no call twice');
    const order = survivorGot.map((id) => sentIndex.get(id)!);
    assert.deepEqual(order, [...order].sort((x, y) => x - y), 'the survivor received replays first, then newer calls, all in the charger\'s order');
    const answeredByVictim = new Set(sent.filter((s) => servedBy.get(s.n) === victim.id).map((s) => s.id));
    assert.deepEqual(survivorGot.filter((id) => answeredByVictim.has(id)), [], 'nothing the victim answered was replayed');
    const lost = victimGot.filter((id) => !answeredByVictim.has(id));
    assert.ok(lost.length > 0, 'the victim died with calls unanswered');
    assert.deepEqual(lost.filter((id) => !survivorGot.includes(id)), [], 'every call the victim left unanswered was replayed to the survivor');

    const replayed = await codecMetric(sidecar, 'baton_codec_requests_replayed_total', 'ocpp');
    assert.ok(replayed >= lost.length && replayed <= 10, `replayed ${replayed}: at least the ${lost.length} the victim dropped, at most the 10 in flight`);
    assert.equal(await codecMetric(sidecar, 'baton_codec_requests_tracked_total', 'ocpp'), TOTAL, 'each call tracked once (replays are not new requests)');
    assert.equal(await codecMetric(sidecar, 'baton_codec_duplicate_answers_dropped_total', 'ocpp'), 0);
    const scraped = await (await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/metrics`)).text();
    assert.match(scraped, new RegExp(`^baton_codec_requests_replayed_total\\{codec="ocpp"\\} ${replayed}$`, 'm'), 'the admin endpoint exports the same figure');
    assert.equal(session.failovers, 1);
    assert.equal(onlySession(sidecar), session, 'the same session throughout');
    await charger.close({ force: true });
  });

  for (const mode of ['forward', 'drop'] as const) {
    test(`OCPP backend-initiated call answered after that backend died: orphanAnswers ${mode}`, async () => {
      const a = await Fixture.start('ocpp', 'a', ['--delay', '0']);
      const b = await Fixture.start('ocpp', 'b', ['--delay', '0']);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b], `  orphanAnswers: ${mode}\n`)));
      const charger = new RPCClient({ endpoint: `${url}/ocpp`, identity: 'CP002', protocols: ['ocpp1.6'], callTimeoutMs: 10_000, reconnect: false } as ChargerOptions);
      const lifecycle: string[] = [];
      charger.on('disconnect', () => lifecycle.push('disconnect'));
      charger.on('close', () => lifecycle.push('close'));
      const chargerSent: string[] = [];
      charger.on('message', ({ message, outbound }: { message: string; outbound: boolean }) => {
        if (outbound) chargerSent.push(String(message));
      });
      let trigger: { id: string; answer: (v: Record<string, unknown>) => void } | null = null;
      charger.handle('TriggerMessage', ({ messageId }) => new Promise<Record<string, unknown>>((resolve) => (trigger = { id: String(messageId), answer: resolve })));
      await charger.connect();
      const { session, victim, survivor } = servingPair(sidecar, a, b);

      const ack = (await charger.call('RequestCall', { action: 'TriggerMessage', payload: { requestedMessage: 'Heartbeat' } })) as { servedBy: string };
      assert.equal(ack.servedBy, victim.id);
      await waitFor(() => trigger !== null, "the backend's TriggerMessage call reached the charger");
      await victim.kill();
      await waitFor(() => session.state === 'open' && session.backend?.id === survivor.id, 'session failed over to the survivor');
      const { id: callId, answer } = trigger!;
      answer({ status: 'Accepted' }); // the charger answers a call from a backend that is gone
      // ocpp-rpc sends the CALLRESULT a few ticks later: the next call must go out after it.
      await waitFor(() => chargerSent.some((f) => f.startsWith(`[3,"${callId}"`)), 'the charger sent its answer');
      const hb = (await charger.call('Heartbeat', {})) as { servedBy: string };
      assert.equal(hb.servedBy, survivor.id);
      await waitFor(() => survivor.requests().some((r) => r.method === 'Heartbeat'), 'the survivor reported the Heartbeat');

      const frames = survivor.messages();
      const hbAt = frames.findIndex((f) => (tryParse(f) as unknown[])[2] === 'Heartbeat');
      const orphanAt = frames.findIndex((f) => {
        const m = tryParse(f);
        return Array.isArray(m) && m[0] === 3 && m[1] === callId;
      });
      const badMessages = survivor.events.filter((e) => e.event === 'badMessage');
      if (mode === 'forward') {
        assert.ok(orphanAt >= 0 && orphanAt < hbAt, `the answer reached the new backend before the next call: ${JSON.stringify(frames)}`);
        assert.deepEqual(tryParse(frames[orphanAt]!), [3, callId, { status: 'Accepted' }], 'forwarded untouched');
        assert.equal(badMessages.length, 1, 'ocpp-rpc on the new backend saw an answer to a call it never made');
      } else {
        assert.equal(orphanAt, -1, 'dropped: the new backend never saw it');
        assert.deepEqual(frames.filter((f) => (tryParse(f) as unknown[])[0] !== 2), [], 'the new backend received only calls');
        assert.equal(badMessages.length, 0);
      }
      assert.ok(!victim.messages().some((f) => f.includes(callId)), 'the dead backend never got the answer');
      assert.equal(await codecMetric(sidecar, 'baton_codec_orphan_answers_total', 'ocpp'), 1);
      assert.equal(await codecMetric(sidecar, 'baton_codec_unknown_answers_total', 'ocpp'), 0);
      assert.deepEqual(lifecycle, []);
      await charger.close({ force: true });
    });
  }

  test('JSON-RPC: json-rpc-2.0 client with single and batch requests, serving backend SIGKILLed: every request (each batch member) answered once, none fails', async () => {
    const a = await Fixture.start('json-rpc', 'a', ['--delay', '150']);
    const b = await Fixture.start('json-rpc', 'b', ['--delay', '150']);
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a, b])));
    const ws = new WebSocket(`${url}/rpc`, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    let closed: number | null = null;
    ws.on('close', (code) => (closed = code));
    const { session, victim, survivor } = servingPair(sidecar, a, b);

    let killed = false;
    let nextId = 0;
    /** Request ids in the order they went on the wire. */
    const sent: { id: number; afterKill: boolean }[] = [];
    const client = new JSONRPCClient((payload: JSONRPCRequest | JSONRPCRequest[]) => {
      for (const r of Array.isArray(payload) ? payload : [payload]) sent.push({ id: r.id as number, afterKill: killed });
      ws.send(JSON.stringify(payload));
    });
    const answerCount = new Map<string, number>();
    ws.on('message', (data: Buffer) => {
      const parsed = JSON.parse(data.toString()) as JSONRPCResponse | JSONRPCResponse[];
      for (const r of Array.isArray(parsed) ? parsed : [parsed]) answerCount.set(String(r.id), (answerCount.get(String(r.id)) ?? 0) + 1);
      client.receive(parsed);
    });
    const timed = client.timeout(15_000);
    const responses: JSONRPCResponse[] = [];
    const request = (n: number) => createJSONRPCRequest(++nextId, 'Echo', { n });
    let n = 0;
    const single = async () => {
      for (let i = 0; i < 25; i++) responses.push(await timed.requestAdvanced(request(n++)));
    };
    const batches = async () => {
      for (let i = 0; i < 12; i++) responses.push(...(await timed.requestAdvanced([request(n++), request(n++), request(n++)])));
    };
    const done = Promise.all([...Array.from({ length: 6 }, single), batches()]);
    const TOTAL = 6 * 25 + 12 * 3;
    await waitFor(() => responses.length >= 60, '60 answers before the kill', 10_000);
    await victim.kill();
    killed = true;
    await waitFor(() => responses.length === TOTAL || closed !== null, `all ${TOTAL} answers`, 20_000);
    await done;

    assert.equal(closed, null, 'the client connection never closed');
    assert.deepEqual(responses.filter((r) => r.error !== undefined), [], 'no request failed or timed out');
    assert.equal(sent.length, TOTAL);
    const servedBy = new Map<number, string>();
    for (const r of responses) {
      const result = r.result as { servedBy: string; echo: { n: number } };
      assert.ok(result.servedBy === victim.id || result.servedBy === survivor.id);
      servedBy.set(r.id as number, result.servedBy);
    }
    assert.equal(servedBy.size, TOTAL, 'an answer for every id');
    assert.deepEqual(sent.filter((s) => answerCount.get(String(s.id)) !== 1).map((s) => `${s.id}:${answerCount.get(String(s.id)) ?? 0}`), [], 'every id answered exactly once on the wire');
    assert.equal(answerCount.size, TOTAL, 'no answer to an id never sent');
    const afterKill = sent.filter((s) => s.afterKill);
    assert.ok(afterKill.length > 0);
    assert.deepEqual(afterKill.filter((s) => servedBy.get(s.id) !== survivor.id).map((s) => s.id), [], 'requests made after the kill are answered by the survivor');

    const survivorGot = survivor.requestIds().map(Number);
    const answeredByVictim = new Set(sent.filter((s) => servedBy.get(s.id) === victim.id).map((s) => s.id));
    assert.equal(new Set(survivorGot).size, survivorGot.length, 'the survivor received no request twice');
    assert.deepEqual(survivorGot, [...survivorGot].sort((x, y) => x - y), 'replays first, then newer requests, in the client\'s order');
    assert.deepEqual(survivorGot.filter((id) => answeredByVictim.has(id)), [], 'nothing the victim answered was replayed');
    // What the victim read and never answered. It may be none: on a busy machine the requests in
    // flight at the kill can still be in its socket, unread. The replay count below (≥ 1) is what
    // shows the kill left requests unanswered.
    const lost = victim.requestIds().map(Number).filter((id) => !answeredByVictim.has(id));
    assert.deepEqual(lost.filter((id) => !survivorGot.includes(id)), [], 'every request the victim left unanswered was replayed');
    const replayed = await codecMetric(sidecar, 'baton_codec_requests_replayed_total', 'json-rpc');
    assert.ok(replayed >= 1 && replayed <= 7, `replayed ${replayed} messages (at most 6 singles + 1 batch were in flight)`);
    assert.equal(await codecMetric(sidecar, 'baton_codec_requests_tracked_total', 'json-rpc'), 6 * 25 + 12, 'each message tracked once (a batch is one)');
    assert.equal(session.failovers, 1);
    ws.close();
  });

  for (const d of [OCPP, JSONRPC]) {
    test(`${d.kind}: a backend answering out of order — every answer reaches the client once, and nothing is left to replay`, async () => {
      const a = await Fixture.start(d.kind, 'a', ['--delay', '0']);
      const b = await Fixture.start(d.kind, 'b', ['--delay', '0']);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b])));
      const c = await TestClient.connect(`${url}${d.path}`, d.protocols);
      const { session, victim, survivor } = servingPair(sidecar, a, b);
      const delays = [250, 200, 150, 100, 50, 0];
      delays.forEach((delayMs, i) => c.ws.send(d.request(`o${i}`, 'Echo', { n: i, delayMs })));
      await waitFor(() => answersOf(c, d).length >= delays.length || c.closed !== null, 'six answers');
      const got = answersOf(c, d);
      assert.deepEqual(got.map((x) => x.id), ['o5', 'o4', 'o3', 'o2', 'o1', 'o0'], 'answered (and delivered) in reverse order');
      for (const x of got) assert.equal(x.body.echo?.n, Number(x.id.slice(1)));
      assert.equal(await codecMetric(sidecar, 'baton_codec_duplicate_answers_dropped_total', d.kind), 0);

      // Every request is settled: a failover now has nothing to replay.
      await victim.kill();
      await waitFor(() => session.state === 'open' && session.backend?.id === survivor.id, 'session on the survivor');
      c.ws.send(d.request('after', 'Echo', { n: 99 }));
      assert.equal((await waitForAnswer(c, d, 'after')).body.servedBy, survivor.id);
      assert.deepEqual(survivor.requestIds(), ['after'], 'no request replayed');
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_replayed_total', d.kind), 0);
      assert.equal(answersOf(c, d).length, delays.length + 1, 'no answer twice');
      assert.equal(c.closed, null);
      c.close();
    });

    test(`${d.kind}: after an outage, unanswered requests are replayed first, in their order, then the messages buffered meanwhile`, async () => {
      const port = await freePort();
      const old = await Fixture.start(d.kind, 'old', ['--delay', '60000'], port);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([{ id: 'only', url: old.url }])));
      const c = await TestClient.connect(`${url}${d.path}`, d.protocols);
      const session = onlySession(sidecar);
      c.ws.send(d.request('r1', 'Echo', { n: 1 }));
      c.ws.send(d.request('r2', 'Echo', { n: 2 }));
      await waitFor(() => old.requestIds().length === 2, 'the old backend has both requests');
      await old.kill();
      await waitFor(() => session.state === 'failing-over', 'failing over (no backend up)');
      c.ws.send(d.request('b1', 'Echo', { n: 3 }));
      c.ws.send(d.request('b2', 'Echo', { n: 4 }));
      await waitFor(() => session.bufferedMessages === 2, 'both newer requests buffered');
      const restarted = await Fixture.start(d.kind, 'new', ['--delay', '0'], port);
      await waitFor(() => answersOf(c, d).length >= 4 || c.closed !== null, 'four answers', 5000);
      assert.deepEqual(restarted.requestIds(), ['r1', 'r2', 'b1', 'b2'], 'replays first, in their order, then the buffered requests');
      assert.deepEqual(answersOf(c, d).map((x) => `${x.id}:${x.body.servedBy}`), ['r1:new', 'r2:new', 'b1:new', 'b2:new']);
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_replayed_total', d.kind), 2);
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_tracked_total', d.kind), 4);
      assert.equal(c.closed, null);
      c.close();
    });

    test(`${d.kind}: a request never answered stops being tracked after codec.requestTimeout; other traffic flows; a later failover does not replay it`, async () => {
      const a = await Fixture.start(d.kind, 'a', ['--delay', '0']);
      const b = await Fixture.start(d.kind, 'b', ['--delay', '0']);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a, b], '  requestTimeout: 500ms\n')));
      const c = await TestClient.connect(`${url}${d.path}`, d.protocols);
      const { session, victim, survivor } = servingPair(sidecar, a, b);
      const sentAt = Date.now();
      c.ws.send(d.request('lost', 'Never', {}));
      c.ws.send(d.request('e1', 'Echo', { n: 1 }));
      assert.equal((await waitForAnswer(c, d, 'e1')).body.servedBy, victim.id);
      const early = await codecMetric(sidecar, 'baton_codec_unanswered_timeouts_total', d.kind);
      const earlyAt = Date.now();
      await waitForMetric(sidecar, 'baton_codec_unanswered_timeouts_total', d.kind, (v) => v >= 1);
      const elapsed = Date.now() - sentAt;
      if (earlyAt - sentAt < 500) assert.equal(early, 0, 'not expired before the timeout');
      assert.ok(elapsed >= 500, `expired after ${elapsed} ms, not before 500`);
      c.ws.send(d.request('e2', 'Echo', { n: 2 }));
      assert.equal((await waitForAnswer(c, d, 'e2')).body.echo?.n, 2, 'traffic after the timeout unaffected');

      await victim.kill();
      await waitFor(() => session.state === 'open' && session.backend?.id === survivor.id, 'session on the survivor');
      c.ws.send(d.request('e3', 'Echo', { n: 3 }));
      assert.equal((await waitForAnswer(c, d, 'e3')).body.servedBy, survivor.id);
      assert.deepEqual(survivor.requestIds(), ['e3'], 'the timed-out request was not replayed');
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_replayed_total', d.kind), 0);
      assert.equal(await codecMetric(sidecar, 'baton_codec_unanswered_timeouts_total', d.kind), 1);
      assert.deepEqual(answersTo(c, d, 'lost'), []);
      c.close();
    });

    test(`${d.kind}: a client reusing an id after its answer gets both answers (the second is not a duplicate), also when the reused id's tracking was evicted`, async () => {
      const a = await Fixture.start(d.kind, 'a', ['--delay', '0']);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a], '  maxTrackedRequests: 2\n')));
      const c = await TestClient.connect(`${url}${d.path}`, d.protocols);
      c.ws.send(d.request('same', 'Echo', { n: 1 }));
      await waitForAnswer(c, d, 'same');
      c.ws.send(d.request('same', 'Echo', { n: 2 }));
      await waitFor(() => answersTo(c, d, 'same').length >= 2 || c.closed !== null, 'the second answer to "same"');
      assert.deepEqual(answersTo(c, d, 'same').map((x) => x.body.echo?.n), [1, 2]);
      assert.equal(await codecMetric(sidecar, 'baton_codec_duplicate_answers_dropped_total', d.kind), 0);
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_tracked_total', d.kind), 2);

      // Third use, and two newer requests push it out of tracking (limit 2) before it is answered:
      // its answer is still not a duplicate of the earlier "same" answers.
      c.ws.send(d.request('same', 'Echo', { n: 3, delayMs: 100 }));
      c.ws.send(d.request('o1', 'Echo', { n: 4, delayMs: 200 }));
      c.ws.send(d.request('o2', 'Echo', { n: 5, delayMs: 200 }));
      await waitFor(() => answersOf(c, d).length >= 5 || c.closed !== null, 'answers to same, o1 and o2');
      assert.deepEqual(answersOf(c, d).map((x) => `${x.id}:${x.body.echo?.n}`), ['same:1', 'same:2', 'same:3', 'o1:4', 'o2:5']);
      assert.equal(await codecMetric(sidecar, 'baton_codec_tracking_evicted_total', d.kind), 1, 'the reused id was evicted from tracking');
      assert.equal(await codecMetric(sidecar, 'baton_codec_duplicate_answers_dropped_total', d.kind), 0);
      assert.deepEqual(a.requestIds(), ['same', 'same', 'same', 'o1', 'o2']);
      c.close();
    });

    test(`${d.kind}: a backend answering the same id twice — the client sees one answer, the duplicate is counted`, async () => {
      const a = await Fixture.start(d.kind, 'a', ['--delay', '0']);
      let url: string;
      ({ sidecar, url } = await startSidecar(config([a])));
      const c = await TestClient.connect(`${url}${d.path}`, d.protocols);
      c.ws.send(d.request('dup', 'Twice', { n: 1 }));
      await waitForAnswer(c, d, 'dup');
      // The copy leaves the backend right after the original, so it would arrive before this answer.
      c.ws.send(d.request('next', 'Echo', { n: 2 }));
      await waitForAnswer(c, d, 'next');
      assert.deepEqual(answersOf(c, d).map((x) => x.id), ['dup', 'next'], 'one answer to "dup"');
      assert.equal(c.received.length, 2, 'nothing else reached the client');
      assert.equal(await codecMetric(sidecar, 'baton_codec_duplicate_answers_dropped_total', d.kind), 1);
      c.close();
    });
  }

  test('malformed frames under each codec pass through untouched, are counted, and the session stays open', async () => {
    const a = await BackendProcess.start('a');
    let url: string;
    ({ sidecar, url } = await startSidecar(config([a])));
    const garbage = Buffer.from([0xff, 0x00, 0x5b, 0x32, 0x2c, 0xfe, 0x22, 0x78, 0x5d, 0x80, 0x0a]);
    const texts = ['[9,"x"]', 'not json', '{"jsonrpc":"2.0"'];
    for (const d of [OCPP, JSONRPC]) {
      const c = await TestClient.connect(`${url}${d.path}`);
      for (const t of texts) c.ws.send(t);
      c.ws.send(garbage, { binary: true });
      await c.waitForCount(texts.length + 1);
      assert.deepEqual(c.texts().slice(0, texts.length), texts.map((t) => `a|${t}`), `${d.kind}: text frames reached the backend untouched`);
      const echoed = c.received[texts.length]!;
      assert.ok(echoed.isBinary && echoed.data.equals(garbage), `${d.kind}: binary frame reached the backend untouched`);
      assert.equal(c.closed, null, `${d.kind}: session open`);
      // Each malformed text frame counts twice: the client's, and the backend's tagged echo of it.
      // Binary frames are 'other' to both codecs (they carry text only), so they are not counted.
      assert.equal(await codecMetric(sidecar, 'baton_codec_malformed_frames_total', d.kind), texts.length * 2, `${d.kind}: malformed frames counted`);
      assert.equal(await codecMetric(sidecar, 'baton_codec_requests_tracked_total', d.kind), 0, `${d.kind}: nothing tracked`);
      c.ws.send('still here');
      await c.waitForCount(texts.length + 2);
      assert.equal(c.texts().at(-1), 'a|still here');
      assert.equal(c.closed, null);
      c.close();
    }
    assert.deepEqual(
      a.connections.map((x) => x.path),
      [OCPP.path, JSONRPC.path],
      'one backend connection per session, none re-dialled',
    );
  });
});
