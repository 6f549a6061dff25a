// The graphql-ws codec alone: classify() and the protocol state keeper, with frames written by the
// real library (graphql-ws's own stringifyMessage, and frames captured from its client and server
// talking in this process) and legacy subscriptions-transport-ws frames as its client and server
// build them ({id, type, payload} / {type, id, payload}); a seeded fuzz test of both directions.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { buildSchema } from 'graphql';
import { createClient, MessageType, stringifyMessage, type Message } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocket, WebSocketServer } from 'ws';
import type { Frame, MessageKind, ProtocolState, ResumeVerdict, Sender } from '../sidecar/codecs/codec.js';
import { createGraphqlWsCodec, INIT_REQUEST_ID, operationKind, type StagedFrame } from '../sidecar/codecs/graphql-ws.js';
import { waitFor } from './helpers.js';
import { mulberry32 } from './prng.js';

const codec = createGraphqlWsCodec();
const LIMITS = { maxFrames: 100, maxBytes: 1 << 20 };

function msg(m: Message): Buffer {
  return Buffer.from(stringifyMessage(m));
}
function raw(text: string): Buffer {
  return Buffer.from(text);
}

function classify(data: Buffer | string, from: Sender): [MessageKind, string[]] {
  const ids: string[] = [];
  const kind = codec.classify(typeof data === 'string' ? raw(data) : data, false, from, ids);
  if (kind !== 'request' && kind !== 'response') assert.deepEqual(ids, [], `no ids for ${kind}`);
  return [kind, ids];
}

// Frames as graphql-ws writes them.
const INIT = msg({ type: MessageType.ConnectionInit, payload: { token: 't1' } });
const ACK = msg({ type: MessageType.ConnectionAck });
const SUB = (id: string, topic: string) =>
  msg({ id, type: MessageType.Subscribe, payload: { query: `subscription { ticks(topic: "${topic}") { topic n servedBy } }` } });
const QUERY = (id: string) => msg({ id, type: MessageType.Subscribe, payload: { query: 'query Q { echo(n: 1) { n servedBy } }' } });
const MUTATION = (id: string) => msg({ id, type: MessageType.Subscribe, payload: { query: 'mutation { add(n: 1) { n servedBy } }' } });
const NEXT = (id: string) => msg({ id, type: MessageType.Next, payload: { data: { ticks: { topic: 'a', n: 1, servedBy: 'a' } } } });
const ERROR = (id: string) => msg({ id, type: MessageType.Error, payload: [{ message: 'boom' }] });
const COMPLETE = (id: string) => msg({ id, type: MessageType.Complete });
const PING = msg({ type: MessageType.Ping });
const PONG = msg({ type: MessageType.Pong });

// Legacy subscriptions-transport-ws frames: the client builds {id, type, payload}, the server {type, id, payload}.
const L_INIT = raw('{"type":"connection_init","payload":{"token":"t1"}}');
const L_START = (id: string, query: string) => raw(JSON.stringify({ id, type: 'start', payload: { query, variables: {}, operationName: null } }));
const L_STOP = (id: string) => raw(JSON.stringify({ id, type: 'stop' }));
const L_DATA = (id: string) => raw(JSON.stringify({ type: 'data', id, payload: { data: { ticks: 1 } } }));
const L_COMPLETE = (id: string) => raw(JSON.stringify({ type: 'complete', id }));
const L_ACK = raw('{"type":"connection_ack"}');
const L_KA = raw('{"type":"ka"}');
const L_CONNECTION_ERROR = raw('{"type":"connection_error","payload":{"message":"Prohibited connection!"}}');

function texts(frames: Frame[]): string[] {
  return frames.map((f) => f.data.toString());
}
function staged(frames: Frame[]): boolean[] {
  return (frames as StagedFrame[]).map((f) => f.afterResume === true);
}

function newState(limits = LIMITS): ProtocolState {
  return codec.createState!(limits);
}

/** A state that has seen the init acknowledged. */
function connected(limits = LIMITS): ProtocolState {
  const s = newState(limits);
  s.sent(INIT, false);
  s.received(ACK, false);
  return s;
}

describe('graphql-ws codec: classify', () => {
  test('name and subprotocols (graphql-transport-ws and the legacy graphql-ws)', () => {
    assert.equal(codec.name, 'graphql-ws');
    assert.deepEqual(codec.subprotocols, ['graphql-transport-ws', 'graphql-ws']);
    assert.equal(codec.matchesRequest, undefined);
  });

  test('graphql-transport-ws: queries and mutations are requests, subscriptions are not; complete and error answer', () => {
    assert.deepEqual(classify(INIT, 'client'), ['request', [INIT_REQUEST_ID]], 'the init is a request, under a reserved id');
    assert.deepEqual(classify(ACK, 'backend'), ['response', [INIT_REQUEST_ID]], 'answered by the ack');
    assert.deepEqual(classify(INIT, 'backend'), ['other', []]);
    assert.deepEqual(classify(ACK, 'client'), ['other', []]);
    assert.deepEqual(classify(SUB('s1', 'a'), 'client'), ['other', []]);
    assert.deepEqual(classify(QUERY('q1'), 'client'), ['request', ['q1']]);
    assert.deepEqual(classify(MUTATION('m1'), 'client'), ['request', ['m1']]);
    assert.deepEqual(classify(NEXT('q1'), 'backend'), ['other', []], 'a next is not the answer: complete follows');
    assert.deepEqual(classify(COMPLETE('q1'), 'backend'), ['response', ['q1']]);
    assert.deepEqual(classify(ERROR('q2'), 'backend'), ['response', ['q2']]);
    assert.deepEqual(classify(COMPLETE('s1'), 'client'), ['other', []], "the client's complete is no answer");
    for (const f of [PING, PONG]) {
      assert.deepEqual(classify(f, 'client'), ['other', []]);
      assert.deepEqual(classify(f, 'backend'), ['other', []]);
    }
  });

  test('legacy subscriptions-transport-ws frames', () => {
    assert.deepEqual(classify(L_INIT, 'client'), ['request', [INIT_REQUEST_ID]]);
    assert.deepEqual(classify(L_ACK, 'backend'), ['response', [INIT_REQUEST_ID]]);
    assert.deepEqual(classify(L_START('1', 'subscription { ticks }'), 'client'), ['other', []]);
    assert.deepEqual(classify(L_START('2', '{ hello }'), 'client'), ['request', ['2']]);
    assert.deepEqual(classify(L_START('3', 'mutation M { add }'), 'client'), ['request', ['3']]);
    assert.deepEqual(classify(L_STOP('1'), 'client'), ['other', []]);
    assert.deepEqual(classify(L_DATA('2'), 'backend'), ['other', []]);
    assert.deepEqual(classify(L_COMPLETE('2'), 'backend'), ['response', ['2']]);
    assert.deepEqual(classify(raw('{"type":"error","id":"3","payload":{"message":"x"}}'), 'backend'), ['response', ['3']]);
    for (const f of [L_KA, L_CONNECTION_ERROR, raw('{"type":"connection_terminate"}')]) {
      assert.deepEqual(classify(f, 'backend'), ['other', []]);
    }
  });

  test('member order, whitespace, escapes, binary frames and unknown types', () => {
    assert.deepEqual(classify(' { "type" : "complete" , "id" : "x1" } \n', 'backend'), ['response', ['x1']]);
    assert.deepEqual(classify('{"payload":{"data":{"a":[1,{"b":"}"}]}},"id":"x2","type":"error"}', 'backend'), ['response', ['x2']]);
    assert.deepEqual(classify('{"\\u0074ype":"\\u0063omplete","id":"\\u00e9t\\u00e9"}', 'backend'), ['response', ['été']]);
    assert.deepEqual(
      classify('{"payload":{"variables":{"q":"mutation"},"query":"query { a }"},"type":"subscribe","id":"q9"}', 'client'),
      ['request', ['q9']],
      'payload before the type',
    );
    const ids: string[] = [];
    assert.equal(codec.classify(COMPLETE('b1'), true, 'backend', ids), 'response', 'binary frames are read too (graphql-ws servers accept them)');
    assert.deepEqual(ids, ['b1']);
    assert.deepEqual(classify('{"type":"whatever","id":"1"}', 'client'), ['other', []]);
    assert.deepEqual(classify('{"type":"next"}', 'backend'), ['other', []]);
  });

  test('unreadable frames are malformed', () => {
    for (const f of [
      '',
      'null',
      '[]',
      '"complete"',
      '{}',
      '{"id":"1"}',
      '{"type":1,"id":"1"}',
      '{"type":null}',
      '{"type":"complete"}',
      '{"type":"complete","id":""}',
      '{"type":"complete","id":7}',
      '{"type":"complete","id":"1"',
      '{"type":"complete" "id":"1"}',
      `{"type":"complete","id":"${'x'.repeat(300)}"}`,
      '{"type":"subscribe","id":"1","payload":{"query":"{ a }"}} x',
    ]) {
      assert.equal(classify(f, 'backend')[0], 'malformed', f);
      assert.equal(classify(f, 'client')[0], 'malformed', f);
    }
    // A client's frame is read whole; a backend's only up to its type and id (plus the last byte).
    for (const [f, backendKind] of [
      ['{"type":"subscribe","id":"1","payload":{"query":"{ a }"}', 'other'],
      ['{"type":"complete","id":"1",}', 'response'],
    ] as const) {
      assert.equal(classify(f, 'client')[0], 'malformed', f);
      assert.equal(classify(f, 'backend')[0], backendKind, f);
    }
    // Every proper prefix of a real frame is malformed from a client; from a backend (read up to
    // its type and id) any prefix that does not end in '}' is.
    for (const frame of [SUB('s1', 'a'), QUERY('q1'), COMPLETE('q1'), ERROR('e1'), NEXT('s1')]) {
      for (let i = 0; i < frame.length; i++) {
        const prefix = frame.subarray(0, i);
        assert.equal(classify(prefix, 'client')[0], 'malformed', prefix.toString());
        if (!prefix.toString().trimEnd().endsWith('}')) assert.equal(classify(prefix, 'backend')[0], 'malformed', prefix.toString());
      }
    }
  });
});

describe('graphql-ws codec: the operation kind of a document', () => {
  test('the only operation, shorthand, named, or chosen by operationName', () => {
    assert.equal(operationKind('{ a }', null), 'query');
    assert.equal(operationKind('query { a }', null), 'query');
    assert.equal(operationKind('mutation M($x: Int) { add(n: $x) }', null), 'mutation');
    assert.equal(operationKind('subscription S { ticks(topic: "a") { n } }', null), 'subscription');
    const doc = 'query A { a } mutation B { b } subscription C { c }';
    assert.equal(operationKind(doc, 'A'), 'query');
    assert.equal(operationKind(doc, 'B'), 'mutation');
    assert.equal(operationKind(doc, 'C'), 'subscription');
    assert.equal(operationKind(doc, 'D'), 'unknown', 'no operation by that name');
    assert.equal(operationKind(doc, null), 'unknown', 'several operations and no name: servers refuse it');
    assert.equal(operationKind('{ a } subscription S { b }', 'S'), 'subscription');
    assert.equal(operationKind('{ a }', 'Q'), 'unknown', 'a shorthand query has no name');
    assert.equal(operationKind('', null), 'unknown');
    assert.equal(operationKind('fragment F on T { a }', null), 'unknown');
  });

  test('fragments, comments, strings, block strings, defaults and directives do not mislead it', () => {
    assert.equal(operationKind('fragment F on Subscription { ticks } subscription { ...F }', null), 'subscription');
    assert.equal(operationKind('# mutation {\nsubscription { ticks }', null), 'subscription');
    assert.equal(operationKind('subscription { ticks(topic: "} mutation { x") }', null), 'subscription');
    assert.equal(operationKind('subscription { ticks(topic: """ \\""" } { """) }', null), 'subscription');
    assert.equal(operationKind('query Q($in: In = {a: {b: [1, 2]}}) @live { a(x: {y: "{"}) }', null), 'query');
    assert.equal(operationKind('subscription @defer { mutation: ticks }', null), 'subscription', 'a field named like a keyword');
    assert.equal(operationKind('\ufeff ,, subscription,{ticks}', null), 'subscription');
    assert.equal(operationKind('query Q { a } query R { b }', 'R'), 'query');
    assert.equal(operationKind('query Q { a } subscription R { b }', 'Q'), 'query');
  });

  test('unbalanced or unterminated documents are unknown', () => {
    for (const d of ['subscription { a', 'subscription { a } }', 'subscription { a(b: "x) }', 'subscription { a(b: """x) }', 'query ) {', 'subscription { a(b: "x\ny") }']) {
      assert.equal(operationKind(d, null), 'unknown', d);
    }
  });
});

describe('graphql-ws codec: protocol state', () => {
  test('kept current: the init and the live subscriptions, in the order sent; complete and error end them', () => {
    const s = connected();
    s.sent(SUB('s1', 'a'), false);
    s.sent(SUB('s2', 'b'), false);
    s.sent(SUB('s3', 'c'), false);
    s.received(NEXT('s1'), false);
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s1', 'a'), SUB('s2', 'b'), SUB('s3', 'c')].map(String));
    s.sent(COMPLETE('s2'), false); // the client unsubscribes
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s1', 'a'), SUB('s3', 'c')].map(String));
    s.received(COMPLETE('s1'), false); // the server ends one
    s.received(ERROR('s3'), false); // and refuses another
    assert.deepEqual(texts(s.replay()), [String(INIT)]);
    // An id may be used again once complete: it goes to the end of the order.
    s.sent(SUB('s4', 'd'), false);
    s.sent(SUB('s1', 'a2'), false);
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s4', 'd'), SUB('s1', 'a2')].map(String));
    assert.equal(s.unresumable(), null);
  });

  test('subscribes wait for the new backend\'s connection_ack (afterResume); the init and legacy starts do not', () => {
    const s = connected();
    s.sent(SUB('s1', 'a'), false);
    const frames = s.replay();
    assert.deepEqual(staged(frames), [false, true]);
    const l = newState();
    l.sent(L_INIT, false);
    l.received(L_ACK, false);
    l.sent(L_START('1', 'subscription { ticks }'), false);
    assert.deepEqual(staged(l.replay()), [false, false], 'a legacy server awaits its init before each start');
  });

  test('queries, ping/pong and ka are not state; a second connection_init is not kept', () => {
    const s = connected();
    s.sent(QUERY('q1'), false);
    s.sent(PING, false);
    s.received(PONG, false);
    s.received(PING, false);
    s.sent(PONG, false);
    s.received(L_KA, false);
    s.sent(raw('{"type":"connection_init","payload":{"token":"other"}}'), false);
    assert.deepEqual(texts(s.replay()), [String(INIT)]);
    assert.equal(s.unresumable(), null, 'a query in flight is the request tracker\'s (replayed)');
  });

  test('legacy: start/stop, data and complete keep the state current', () => {
    const s = newState();
    s.sent(L_INIT, false);
    s.received(L_ACK, false);
    s.received(L_KA, false);
    s.sent(L_START('1', 'subscription { a }'), false);
    s.sent(L_START('2', 'subscription { b }'), false);
    s.sent(L_START('3', 'subscription { c }'), false);
    s.received(L_DATA('1'), false);
    s.sent(L_STOP('2'), false);
    s.received(L_COMPLETE('3'), false);
    assert.deepEqual(texts(s.replay()), [L_INIT, L_START('1', 'subscription { a }')].map(String));
    // A start for a live id replaces it (the legacy server restarts it).
    s.sent(L_START('1', 'subscription { a2 }'), false);
    assert.deepEqual(texts(s.replay()), [L_INIT, L_START('1', 'subscription { a2 }')].map(String));
  });

  test('the frames kept are copies: the socket\'s buffers may be reused', () => {
    const s = newState();
    const init = Buffer.from(INIT);
    const sub = Buffer.from(SUB('s1', 'a'));
    s.sent(init, false);
    s.received(ACK, false);
    s.sent(sub, false);
    init.fill(0x20);
    sub.fill(0x20);
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s1', 'a')].map(String));
  });

  test('binary frames are kept as binary', () => {
    const s = newState();
    s.sent(INIT, true);
    s.received(ACK, true);
    s.sent(SUB('s1', 'a'), true);
    assert.deepEqual(s.replay().map((f) => f.isBinary), [true, true]);
  });

  test('nothing to replay before a connection_init', () => {
    const s = newState();
    assert.deepEqual(s.replay(), []);
    assert.equal(s.unresumable(), null);
    assert.equal(s.resumeAnswer(ACK, false), 'pass', 'no resume awaited: frames pass');
  });

  test('resume: the connection_ack is swallowed and ends it; frames before it pass; after it everything passes', () => {
    const s = connected();
    s.sent(SUB('s1', 'a'), false);
    assert.equal(s.replay().length, 2);
    assert.equal(s.resumeAnswer(PING, false), 'pass');
    assert.equal(s.resumeAnswer(raw('garbage'), false), 'pass');
    assert.equal(s.resumeAnswer(ACK, false), 'resumed');
    assert.equal(s.resumeAnswer(ACK, false), 'pass', 'a second ack is no answer to this replay');
    assert.equal(s.resumeAnswer(NEXT('s1'), false), 'pass');
    // Each replay resets it.
    s.replay();
    assert.equal(s.resumeAnswer(raw('{"type":"connection_ack","payload":{"x":1}}'), false), 'resumed');
  });

  test('resume refused: a legacy connection_error is forwarded, then 1011 as its server closes', () => {
    const s = newState();
    s.sent(L_INIT, false);
    s.received(L_ACK, false);
    s.replay();
    const v = s.resumeAnswer(L_CONNECTION_ERROR, false) as Exclude<ResumeVerdict, string>;
    assert.deepEqual(v, { refused: true, forward: true, code: 1011, reason: '' });
    assert.equal(s.resumeAnswer(L_ACK, false), 'pass');
  });

  test('an init not acknowledged yet is not replayed (the request tracker sends it again): nothing to resume', () => {
    const s = newState();
    s.sent(INIT, false);
    assert.equal(s.unresumable(), null);
    assert.deepEqual(s.replay(), []);
    s.received(ACK, false);
    assert.deepEqual(texts(s.replay()), [String(INIT)]);
  });

  test('unresumable: legacy starts before the ack (or without an init); a legacy init refused with connection_error', () => {
    const s = newState();
    s.sent(L_INIT, false);
    s.sent(L_START('1', 'subscription { a }'), false);
    assert.match(s.unresumable()!, /no acknowledged connection_init/);
    s.received(L_ACK, false);
    assert.equal(s.unresumable(), null);
    const n = newState();
    n.sent(L_START('1', 'subscription { a }'), false);
    assert.match(n.unresumable()!, /no acknowledged connection_init/);
    const r = newState();
    r.sent(L_INIT, false);
    r.received(L_CONNECTION_ERROR, false);
    assert.match(r.unresumable()!, /refused its connection_init/);
    const later = connected();
    later.received(L_CONNECTION_ERROR, false); // a legacy server's answer to an unreadable frame: not a refusal
    assert.equal(later.unresumable(), null);
  });

  test('unresumable while a mutation (or an operation of unknown kind) is in flight: never replayed', () => {
    const s = connected();
    s.sent(SUB('s1', 'a'), false);
    s.sent(MUTATION('m1'), false);
    assert.match(s.unresumable()!, /mutation "m1" is in flight/);
    s.received(NEXT('m1'), false);
    assert.match(s.unresumable()!, /mutation "m1"/, 'still in flight until its complete');
    s.received(COMPLETE('m1'), false);
    assert.equal(s.unresumable(), null);
    s.sent(MUTATION('m2'), false);
    s.received(ERROR('m2'), false);
    assert.equal(s.unresumable(), null, 'ended by an error');
    s.sent(MUTATION('m3'), false);
    s.sent(COMPLETE('m3'), false);
    assert.equal(s.unresumable(), null, 'ended by the client');
    const several = raw(JSON.stringify({ id: 'u1', type: 'subscribe', payload: { query: 'query A { a } subscription B { b }' } }));
    s.sent(several, false);
    assert.match(s.unresumable()!, /unknown kind/);
    s.received(COMPLETE('u1'), false);
    assert.equal(s.unresumable(), null);
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s1', 'a')].map(String), 'mutations are never in the replay');
  });

  test('bounds: past maxFrames or maxBytes unresumable, and again resumable once subscriptions end', () => {
    const s = connected({ maxFrames: 2, maxBytes: 1 << 20 });
    s.sent(SUB('s1', 'a'), false);
    assert.equal(s.unresumable(), null, 'init + 1 subscription = 2 frames');
    s.sent(SUB('s2', 'b'), false);
    assert.match(s.unresumable()!, /"s2" is past codec\.maxStateFrames/);
    assert.deepEqual(texts(s.replay()), [INIT, SUB('s1', 'a')].map(String), 'nothing past the bound is kept');
    s.sent(COMPLETE('s2'), false);
    assert.equal(s.unresumable(), null);

    const bytes = INIT.length + SUB('s1', 'a').length;
    const b = connected({ maxFrames: 100, maxBytes: bytes });
    b.sent(SUB('s1', 'a'), false);
    assert.equal(b.unresumable(), null);
    b.sent(SUB('s2', 'b'), false);
    assert.match(b.unresumable()!, /maxStateBytes/);
    b.received(COMPLETE('s2'), false);
    assert.equal(b.unresumable(), null);
  });

  test('an init past the bounds, or too many operations in flight, make the session unresumable for good', () => {
    const s = newState({ maxFrames: 10, maxBytes: 20 });
    s.sent(INIT, false);
    s.received(ACK, false);
    assert.match(s.unresumable()!, /connection_init/);
    assert.deepEqual(s.replay(), []);
    const m = connected({ maxFrames: 10, maxBytes: 1 << 20 });
    for (let i = 0; i <= 1024; i++) m.sent(MUTATION(`m${i}`), false);
    assert.match(m.unresumable()!, /operations in flight/);
    for (let i = 0; i <= 1024; i++) m.received(COMPLETE(`m${i}`), false);
    assert.match(m.unresumable()!, /operations in flight/, 'for good');
    assert.deepEqual(m.replay(), []);
  });
});

describe('graphql-ws codec: frames of the real client and server', () => {
  const closers: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of closers.reverse()) await c();
  });

  const schema = buildSchema(`
    type Query { hello: String }
    type Mutation { bump: Int }
    type Subscription { ticks(topic: String!): String }
  `);
  const roots = {
    query: { hello: () => 'hi' },
    mutation: { bump: () => 1 },
    subscription: {
      ticks: async function* ({ topic }: { topic: string }) {
        for (let n = 0; ; n++) {
          await new Promise((r) => setTimeout(r, 20));
          yield { ticks: `${topic}${n}` };
        }
      },
    },
  };

  async function server(): Promise<{ url: string; frames: { from: Sender; data: Buffer }[]; closes: number[] }> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    const frames: { from: Sender; data: Buffer }[] = [];
    const closes: number[] = [];
    wss.on('connection', (socket) => {
      socket.on('message', (data: Buffer) => frames.push({ from: 'client', data }));
      const send = socket.send.bind(socket) as (data: unknown, cb?: (err?: Error) => void) => void;
      (socket as unknown as { send: typeof send }).send = (data, cb) => {
        frames.push({ from: 'backend', data: Buffer.from(String(data)) });
        send(data, cb);
      };
      socket.on('close', (code) => closes.push(code));
    });
    const disposer = useServer({ schema, roots }, wss, 0);
    await new Promise<void>((r) => wss.once('listening', r));
    closers.push(() => disposer.dispose());
    return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, frames, closes };
  }

  test('a session of the real graphql-ws client: classified and kept; the replay rebuilds it on a fresh server, the subscribes after its ack', async () => {
    const a = await server();
    const client = createClient({ url: a.url, webSocketImpl: WebSocket, connectionParams: { token: 't' }, retryAttempts: 0 });
    closers.push(() => client.dispose());
    const got: Record<string, unknown[]> = { a: [], b: [] };
    const unsubA = client.subscribe({ query: 'subscription { ticks(topic: "a") }' }, { next: (v) => got.a!.push(v), error: () => {}, complete: () => {} });
    client.subscribe({ query: 'subscription Named { ticks(topic: "b") }', operationName: 'Named' }, { next: (v) => got.b!.push(v), error: () => {}, complete: () => {} });
    await waitFor(() => got.a!.length > 0 && got.b!.length > 0, 'ticks on both');
    const answer = (query: string) =>
      new Promise<void>((resolve, reject) => client.subscribe({ query }, { next: () => {}, error: reject, complete: () => resolve() }));
    await answer('{ hello }');
    await answer('mutation { bump }');
    unsubA();
    await waitFor(() => a.frames.filter((f) => f.from === 'client').length >= 6, 'the complete sent');

    // Feed the state as the sidecar does: client frames once sent, backend frames once delivered.
    const state = newState();
    const requests: string[] = [];
    const responses: string[] = [];
    for (const f of a.frames) {
      const ids: string[] = [];
      const kind = codec.classify(f.data, false, f.from, ids);
      assert.notEqual(kind, 'malformed', f.data.toString());
      if (kind === 'request') requests.push(...ids);
      if (kind === 'response') responses.push(...ids);
      if (f.from === 'client') state.sent(f.data, false);
      else state.received(f.data, false);
    }
    const clientFrames = a.frames.filter((f) => f.from === 'client').map((f) => JSON.parse(f.data.toString()) as { type: string; id?: string });
    assert.deepEqual(clientFrames.map((m) => m.type), ['connection_init', 'subscribe', 'subscribe', 'subscribe', 'subscribe', 'complete']);
    const [, subA, subB, query, mutation] = clientFrames;
    assert.deepEqual(requests, [INIT_REQUEST_ID, query!.id, mutation!.id], 'the init, the query and the mutation are requests');
    assert.deepEqual(responses, [INIT_REQUEST_ID, query!.id, mutation!.id], 'answered by the ack and their complete');
    assert.equal(clientFrames[5]!.id, subA!.id);
    assert.equal(state.unresumable(), null);
    const replay = state.replay();
    assert.deepEqual(
      replay.map((f) => JSON.parse(f.data.toString()) as { type: string; id?: string }).map((m) => `${m.type}:${m.id ?? ''}`),
      ['connection_init:', `subscribe:${subB!.id}`],
    );

    // On a fresh server: the init, then (after its ack) the subscribe — the subscription runs again.
    const b = await server();
    const ws = new WebSocket(b.url, 'graphql-transport-ws');
    closers.push(() => ws.terminate());
    const received: Buffer[] = [];
    ws.on('message', (d: Buffer) => received.push(d));
    await new Promise((r) => ws.once('open', r));
    for (const f of replay as StagedFrame[]) if (!f.afterResume) ws.send(f.data);
    await waitFor(() => received.length > 0, 'an answer to the init');
    assert.equal(state.resumeAnswer(received[0]!, false), 'resumed');
    for (const f of replay as StagedFrame[]) if (f.afterResume) ws.send(f.data);
    await waitFor(() => received.length >= 3, 'ticks of the resumed subscription');
    for (const d of received.slice(1)) {
      const m = JSON.parse(d.toString()) as { type: string; id: string; payload: { data: { ticks: string } } };
      assert.equal(m.type, 'next');
      assert.equal(m.id, subB!.id);
      assert.match(m.payload.data.ticks, /^b\d+$/);
    }
    assert.deepEqual(b.closes, []);

    // Why the subscribes wait: sent at once with the init, graphql-ws refuses them (4401).
    const c = await server();
    const raw = new WebSocket(c.url, 'graphql-transport-ws');
    closers.push(() => raw.terminate());
    const closed = new Promise<number>((r) => raw.once('close', (code) => r(code)));
    await new Promise((r) => raw.once('open', r));
    for (const f of replay) raw.send(f.data);
    assert.equal(await closed, 4401);
  });
});

describe('graphql-ws codec: fuzz', () => {
  const corpus: Buffer[] = [
    INIT,
    ACK,
    SUB('s1', 'a'),
    SUB('s2', 'b'),
    QUERY('q1'),
    MUTATION('m1'),
    NEXT('s1'),
    ERROR('q1'),
    COMPLETE('s1'),
    COMPLETE('m1'),
    PING,
    PONG,
    L_INIT,
    L_START('1', 'subscription { a }'),
    L_STOP('1'),
    L_DATA('1'),
    L_COMPLETE('1'),
    L_KA,
    L_CONNECTION_ERROR,
    raw('{"id":"x","type":"subscribe","payload":{"query":"subscription S($a: In = {b: \\"}\\"}) { t } query { q }","operationName":"S","variables":{"a":[1,2,{"c":null}]}}}'),
    raw('{"id":"\\ud83d\\ude00","type":"subscribe","payload":{"query":"\\"\\"\\" block \\"\\"\\" subscription { t }"}}'),
  ];
  const ALPHABET = Buffer.from('{}[]":,\\ \n0123456789abcdefgilnoprstuyqmkACEIKNOPSTU#"""-.eE+ntrufalse');

  function mutate(rand: () => number, base: Buffer): Buffer {
    const r = rand();
    if (r < 0.25) return base.subarray(0, Math.floor(rand() * base.length)); // truncated
    if (r < 0.5) {
      const b = Buffer.from(base);
      const n = 1 + Math.floor(rand() * 4);
      for (let i = 0; i < n && b.length > 0; i++) b[Math.floor(rand() * b.length)] = ALPHABET[Math.floor(rand() * ALPHABET.length)]!;
      return b;
    }
    if (r < 0.6) {
      const b = Buffer.alloc(Math.floor(rand() * 64));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
      return b;
    }
    if (r < 0.75) {
      const b = Buffer.alloc(Math.floor(rand() * 96));
      for (let i = 0; i < b.length; i++) b[i] = ALPHABET[Math.floor(rand() * ALPHABET.length)]!;
      return Buffer.concat([Buffer.from('{"type":"'), b]);
    }
    if (r < 0.85) {
      // Deep nesting inside a payload.
      const depth = Math.floor(rand() * 3000);
      return Buffer.from(`{"id":"d","type":"subscribe","payload":{"query":"subscription{t}","variables":${'['.repeat(depth)}${']'.repeat(depth)}}}`);
    }
    return base; // intact
  }

  test('random and truncated frames, both directions, through classify and the state: never throws, stays bounded', () => {
    const rand = mulberry32(0x67716c);
    const limits = { maxFrames: 8, maxBytes: 2048 };
    let state = newState(limits);
    const seen = new Set<MessageKind>();
    for (let i = 0; i < 20_000; i++) {
      const data = mutate(rand, corpus[Math.floor(rand() * corpus.length)]!);
      const from: Sender = rand() < 0.5 ? 'client' : 'backend';
      const isBinary = rand() < 0.1;
      const ids: string[] = [];
      const kind = codec.classify(data, isBinary, from, ids);
      seen.add(kind);
      assert.ok(['request', 'response', 'other', 'malformed'].includes(kind));
      if (kind === 'request' || kind === 'response') assert.equal(ids.length, 1);
      else assert.equal(ids.length, 0);
      const r = rand();
      if (r < 0.45) state.sent(data, isBinary);
      else if (r < 0.9) state.received(data, isBinary);
      else if (r < 0.95) {
        const v = state.resumeAnswer(data, isBinary);
        assert.ok(v === 'pass' || v === 'swallow' || v === 'resumed' || (typeof v === 'object' && v.refused === true));
      } else {
        const frames = state.replay();
        assert.ok(frames.length <= limits.maxFrames, `${frames.length} frames replayed`);
        assert.ok(frames.reduce((n, f) => n + f.data.length, 0) <= limits.maxBytes);
      }
      const why = state.unresumable();
      assert.ok(why === null || typeof why === 'string');
      if (rand() < 0.002) state = newState(limits);
    }
    assert.deepEqual([...seen].sort(), ['malformed', 'other', 'request', 'response']);
  });
});
