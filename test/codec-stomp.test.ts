// The STOMP codec: classify() and the session state keeper, with frames serialised by the real
// libraries — @stomp/stompjs's FrameImpl (what its Client puts on the wire) for client frames,
// stomp-broker-js's Frame for server frames — and a session recorded from a real stompjs Client.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Client, FrameImpl, Parser, type StompHeaders } from '@stomp/stompjs';
import { WebSocket, WebSocketServer } from 'ws';
import type { Frame, MessageKind, ProtocolState, ResumeRefusal, ResumeVerdict, Sender, StateLimits } from '../sidecar/codecs/codec.js';
import { CONNECT_ID, createStompCodec, heartBeatsCompatible } from '../sidecar/codecs/stomp.js';
import { mulberry32 } from './prng.js';

const stomp = createStompCodec();
const KINDS: readonly MessageKind[] = ['request', 'response', 'other', 'malformed'];
const LIMITS: StateLimits = { maxFrames: 1000, maxBytes: 1 << 20 };

const require = createRequire(import.meta.url);
const BrokerFrame = require('stomp-broker-js/lib/frame.js') as new (args: { command: string; headers: Record<string, string | number>; body?: string }) => {
  toStringOrBuffer(): string | Buffer;
};

/** A client frame as stompjs serialises it (STOMP 1.2: header values escaped except in CONNECT). */
function client(command: string, headers: StompHeaders = {}, body?: string, escape = true): Buffer {
  const out = FrameImpl.marshall({ command, headers, body, escapeHeaderValues: escape });
  return typeof out === 'string' ? Buffer.from(out, 'utf8') : Buffer.from(out);
}

/** A server frame as stomp-broker-js serialises it. */
function server(command: string, headers: Record<string, string | number> = {}, body?: string): Buffer {
  const out = new BrokerFrame({ command, headers, body }).toStringOrBuffer();
  return typeof out === 'string' ? Buffer.from(out, 'utf8') : out;
}

function classify(msg: string | Buffer, from: Sender = 'client'): [MessageKind, string[]] {
  const ids: string[] = [];
  const kind = stomp.classify(typeof msg === 'string' ? Buffer.from(msg, 'utf8') : msg, false, from, ids);
  assert.ok(KINDS.includes(kind));
  if (kind === 'request' || kind === 'response') assert.ok(ids.length > 0, 'a request/response carries ids');
  else assert.deepEqual(ids, [], `no ids for ${kind}`);
  return [kind, ids];
}

const CONNECT = client('CONNECT', { login: 'u', passcode: 'secret', 'accept-version': '1.2,1.1,1.0', 'heart-beat': '1000,0' }, undefined, false);
const CONNECTED = server('CONNECTED', { session: 's1', server: 'STOMP-JS/1.3.0', 'heart-beat': '0,1000', version: '1.2' });

function newState(limits: StateLimits = LIMITS): ProtocolState {
  return stomp.createState!(limits);
}

/** A state that has connected: CONNECT sent, CONNECTED received. */
function connectedState(limits: StateLimits = LIMITS, connected = CONNECTED): ProtocolState {
  const s = newState(limits);
  s.sent(CONNECT, false);
  s.received(connected, false);
  return s;
}

function texts(frames: Frame[]): string[] {
  return frames.map((f) => f.data.toString('utf8'));
}

function refusal(v: ResumeVerdict): ResumeRefusal {
  assert.equal(typeof v, 'object', `a refusal, got ${String(v)}`);
  return v as ResumeRefusal;
}

// ---------------------------------------------------------------- classify

test('stomp: name, subprotocols, a state keeper', () => {
  assert.equal(stomp.name, 'stomp');
  assert.deepEqual(stomp.subprotocols, ['v10.stomp', 'v11.stomp', 'v12.stomp']);
  assert.equal(typeof stomp.createState, 'function');
});

test('stomp classify: client frames with a receipt are requests; SUBSCRIBE/UNSUBSCRIBE are left to the state', () => {
  assert.deepEqual(classify(CONNECT), ['request', [CONNECT_ID]]);
  assert.deepEqual(classify(client('STOMP', { 'accept-version': '1.2', host: 'h' }, undefined, false)), ['request', [CONNECT_ID]]);
  assert.deepEqual(classify(client('SEND', { destination: '/q/a', receipt: 'r-1' }, 'hello')), ['request', ['r-1']]);
  assert.deepEqual(classify(client('SEND', { destination: '/q/a' }, 'hello')), ['other', []]);
  for (const cmd of ['ACK', 'NACK']) assert.deepEqual(classify(client(cmd, { id: 'm1', subscription: 's', receipt: `${cmd}-r` })), ['request', [`${cmd}-r`]]);
  for (const cmd of ['BEGIN', 'COMMIT', 'ABORT']) assert.deepEqual(classify(client(cmd, { transaction: 't', receipt: `${cmd}-r` })), ['request', [`${cmd}-r`]]);
  assert.deepEqual(classify(client('DISCONNECT', { receipt: 'close-2' })), ['request', ['close-2']]);
  assert.deepEqual(classify(client('SUBSCRIBE', { id: 'sub-0', destination: '/t/a', receipt: 'x' })), ['other', []]);
  assert.deepEqual(classify(client('UNSUBSCRIBE', { id: 'sub-0', receipt: 'y' })), ['other', []]);
  assert.deepEqual(classify(client('FOO', { receipt: 'z' })), ['other', []], 'an unknown command');
  assert.deepEqual(classify('\n'), ['other', []], 'a heart-beat');
  assert.deepEqual(classify('\r\n'), ['other', []], 'a 1.2 heart-beat');
  assert.deepEqual(classify(''), ['other', []]);
});

test('stomp classify: server frames: CONNECTED answers the CONNECT, RECEIPT and ERROR with receipt-id answer their receipt', () => {
  assert.deepEqual(classify(CONNECTED, 'backend'), ['response', [CONNECT_ID]]);
  assert.deepEqual(classify(server('RECEIPT', { 'receipt-id': 'r-1' }), 'backend'), ['response', ['r-1']]);
  assert.deepEqual(classify(server('ERROR', { 'receipt-id': 'r-1', message: 'no', 'content-type': 'text/plain', 'content-length': 3 }, 'bad'), 'backend'), ['response', ['r-1']]);
  assert.deepEqual(classify(server('ERROR', { message: 'CONNECTION ERROR', 'content-length': 5 }, 'bad!!'), 'backend'), ['other', []]);
  assert.deepEqual(classify(server('MESSAGE', { destination: '/t/a', subscription: 'sub-0', 'message-id': '1', 'content-length': 2 }, 'hi'), 'backend'), ['other', []]);
  // A client-only command from the backend, and a server-only one from the client, are other.
  assert.deepEqual(classify(client('SEND', { destination: '/x', receipt: 'r' }), 'backend'), ['other', []]);
  assert.deepEqual(classify(server('RECEIPT', { 'receipt-id': 'r' }), 'client'), ['other', []]);
});

test('stomp classify: escaped receipts match (1.2 escapes \\c \\n \\r \\\\), CR LF line ends, repeated headers, 1.0 padding', () => {
  const tricky = 'a:b\nc\\d\re';
  const [, req] = classify(client('SEND', { destination: '/q', receipt: tricky }, 'x'));
  assert.deepEqual(req, [tricky]);
  assert.deepEqual(classify(`RECEIPT\nreceipt-id:a\\cb\\nc\\\\d\\re\n\n\0`, 'backend'), ['response', [tricky]]);
  assert.deepEqual(classify('RECEIPT\r\nreceipt-id:r9\r\n\r\n\0\r\n', 'backend'), ['response', ['r9']]);
  assert.deepEqual(classify('RECEIPT\nreceipt-id:first\nreceipt-id:second\n\n\0', 'backend'), ['response', ['first']], 'the first of repeated headers');
  assert.deepEqual(classify('SEND\ndestination: /queue/a\nreceipt: 77 \n\nhi\0'), ['request', ['77']], 'STOMP 1.0 examples pad values');
  assert.deepEqual(classify('RECEIPT\nreceipt-id:\n\n\0', 'backend'), ['response', ['']]);
});

test('stomp classify: bodies are skipped by content-length (NULs inside) or up to the NUL; several frames in one message', () => {
  const body = 'a\0b\0c';
  const binary = client('SEND', { destination: '/q', receipt: 'bin' }, undefined);
  assert.deepEqual(classify(binary), ['request', ['bin']]);
  const withNuls = Buffer.concat([Buffer.from(`SEND\ndestination:/q\nreceipt:n1\ncontent-length:${body.length}\n\n`), Buffer.from(body), Buffer.from('\0')]);
  assert.deepEqual(classify(withNuls), ['request', ['n1']]);
  const three = Buffer.concat([
    client('SEND', { destination: '/q', receipt: 'r1' }, 'one'),
    Buffer.from('\n\n'),
    client('SEND', { destination: '/q' }, 'two'),
    client('ACK', { id: 'm', receipt: 'r2' }),
  ]);
  assert.deepEqual(classify(three), ['request', ['r1', 'r2']]);
  const mixed = Buffer.concat([server('RECEIPT', { 'receipt-id': 'r1' }), server('MESSAGE', { destination: '/t', subscription: 's' }, 'x')]);
  assert.deepEqual(classify(mixed, 'backend'), ['response', ['r1']]);
});

test('stomp classify: every proper prefix of a frame is malformed; broken frames are malformed', () => {
  for (const frame of [
    client('SEND', { destination: '/q', receipt: 'r-1' }, 'hello'),
    client('SEND', { destination: '/q' }),
    server('RECEIPT', { 'receipt-id': 'r-1' }),
    server('MESSAGE', { destination: '/t', 'content-length': 5 }, 'hello'),
  ]) {
    for (let i = 1; i < frame.length; i++) {
      for (const from of ['client', 'backend'] as const) {
        assert.deepEqual(classify(frame.subarray(0, i), from), ['malformed', []], `prefix ${i} of ${JSON.stringify(frame.toString())}`);
      }
    }
  }
  assert.deepEqual(classify('SEND\ndestination\n\n\0'), ['malformed', []], 'a header line without a colon');
  assert.deepEqual(classify('SEND\ncontent-length:x\n\n\0'), ['malformed', []], 'a bad content-length');
  assert.deepEqual(classify('SEND\ncontent-length:2\n\nabc\0'), ['malformed', []], 'content-length not followed by NUL');
  assert.deepEqual(classify('SEND\ncontent-length:99999999999\n\n\0'), ['malformed', []]);
  const ids = ['kept'];
  assert.equal(stomp.classify(Buffer.concat([client('SEND', { receipt: 'r1' }), Buffer.from('SEND\nreceipt:r2\n')]), false, 'client', ids), 'malformed');
  assert.deepEqual(ids, ['kept'], 'ids pushed before the broken frame are taken back, others left');
});

// ---------------------------------------------------------------- state: kept current, replay order

const SUB_A = client('SUBSCRIBE', { id: 'sub-0', destination: '/topic/a' });
const SUB_B = client('SUBSCRIBE', { id: 'sub-1', destination: '/topic/b' });
const SUB_C = client('SUBSCRIBE', { id: 'sub-2', destination: '/topic/c' });

test('stomp state: CONNECT then the live SUBSCRIBEs in order; UNSUBSCRIBE removes; a reused id replaces', () => {
  const s = connectedState();
  s.sent(SUB_A, false);
  s.sent(SUB_B, false);
  s.sent(SUB_C, false);
  assert.deepEqual(texts(s.replay()), texts([{ data: CONNECT, isBinary: false }, { data: SUB_A, isBinary: false }, { data: SUB_B, isBinary: false }, { data: SUB_C, isBinary: false }]));
  s.sent(client('UNSUBSCRIBE', { id: 'sub-1' }), false);
  assert.deepEqual(texts(s.replay()), [CONNECT, SUB_A, SUB_C].map(String));
  s.sent(client('UNSUBSCRIBE', { id: 'never-subscribed' }), false);
  const subA2 = client('SUBSCRIBE', { id: 'sub-0', destination: '/topic/a2' });
  s.sent(subA2, false);
  assert.deepEqual(texts(s.replay()), [CONNECT, SUB_C, subA2].map(String));
  assert.equal(s.unresumable(), null);
});

test('stomp state: the CONNECT goes at once, the SUBSCRIBEs once the new backend has answered CONNECTED (afterResume)', () => {
  const s = connectedState();
  s.sent(SUB_A, false);
  const unsub = client('UNSUBSCRIBE', { receipt: 'ur', id: 'sub-0' });
  s.sent(unsub, false);
  assert.deepEqual(s.replay().map((f) => [f.data.toString(), f.afterResume === true]), [
    [CONNECT.toString(), false],
    [SUB_A.toString(), true],
    [unsub.toString(), true],
  ]);
});

test('stomp state: frames are copied (socket buffers may be reused) and keep their binary flag', () => {
  const s = newState();
  const buf = Buffer.from(CONNECT);
  s.sent(buf, true);
  buf.fill(0);
  s.received(CONNECTED, false);
  const [f] = s.replay();
  assert.equal(f!.data.toString(), CONNECT.toString());
  assert.equal(f!.isBinary, true);
});

test('stomp state: several frames in one message, heart-beats and garbage are handled or ignored', () => {
  const s = newState();
  s.sent(Buffer.from('\n'), false);
  s.sent(Buffer.concat([CONNECT, SUB_A]), false);
  s.received(Buffer.concat([Buffer.from('\n'), CONNECTED]), false);
  s.sent(Buffer.from('SUBSCRIBE\nid:x\ndestination:/t/x\n\n'), false); // no NUL: ignored
  s.sent(Buffer.from('garbage'), false);
  s.sent(Buffer.concat([SUB_B, Buffer.from('\r\n\r\n')]), false);
  assert.deepEqual(texts(s.replay()), [CONNECT, SUB_A, SUB_B].map(String));
});

test('stomp state: STOMP 1.0 subscriptions without id are keyed and unsubscribed by destination', () => {
  const s = connectedState(LIMITS, server('CONNECTED', { session: 's' }));
  const subQ = Buffer.from('SUBSCRIBE\ndestination: /queue/foo\nack: client\n\n\0');
  const subR = Buffer.from('SUBSCRIBE\ndestination:/queue/bar\n\n\0');
  s.sent(subQ, false);
  s.sent(subR, false);
  assert.deepEqual(texts(s.replay()).slice(1), [subQ, subR].map(String));
  // 1.0 MESSAGE for the client-ack subscription, without a subscription header: awaits an ACK (message-id).
  s.received(Buffer.from('MESSAGE\ndestination:/queue/foo\nmessage-id:007\n\nhi\0'), false);
  assert.match(s.unresumable() ?? '', /ACK/);
  s.sent(Buffer.from('ACK\nmessage-id:007\n\n\0'), false);
  assert.equal(s.unresumable(), null);
  s.sent(Buffer.from('UNSUBSCRIBE\ndestination:/queue/foo\n\n\0'), false);
  assert.deepEqual(texts(s.replay()).slice(1), [subR].map(String));
});

test('stomp state: nothing to replay before CONNECTED (the tracker replays the CONNECT, a request); nothing without a CONNECT', () => {
  assert.deepEqual(newState().replay(), []);
  const s = newState();
  s.sent(CONNECT, false);
  assert.deepEqual(s.replay(), []);
  assert.equal(s.resumeAnswer(CONNECTED, false), 'pass', 'not resuming: the first CONNECTED is the client\'s');
  s.received(CONNECTED, false);
  assert.equal(s.replay().length, 1);
});

// ---------------------------------------------------------------- state: the resume's answers

test('stomp resume: the new CONNECTED completes it (swallowed); heart-beats before it pass; later frames pass', () => {
  const s = connectedState();
  s.sent(SUB_A, false);
  s.replay();
  assert.equal(s.resumeAnswer(Buffer.from('\n'), false), 'pass');
  assert.equal(s.resumeAnswer(server('CONNECTED', { session: 's2', server: 'STOMP-JS/1.3.0', 'heart-beat': '0,1000', version: '1.2' }), false), 'resumed');
  assert.equal(s.resumeAnswer(server('MESSAGE', { subscription: 'sub-0' }, 'x'), false), 'pass');
  // Each replay starts a new resume.
  s.replay();
  assert.equal(s.resumeAnswer(CONNECTED, false), 'resumed');
});

test('stomp resume: an ERROR (bad credentials) is a refusal: forwarded, closed 1008 with its message', () => {
  const s = connectedState();
  s.replay();
  const error = server('ERROR', { message: 'CONNECTION ERROR', 'content-type': 'text/plain', 'content-length': 16 }, 'CONNECTION ERROR');
  const r = refusal(s.resumeAnswer(error, false));
  assert.deepEqual(r, { refused: true, forward: true, code: 1008, reason: 'STOMP ERROR: CONNECTION ERROR' });
  const long = refusal((() => {
    const t = connectedState();
    t.replay();
    return t.resumeAnswer(server('ERROR', { message: `é${'x'.repeat(300)}` }), false);
  })());
  assert.ok(Buffer.byteLength(long.reason) <= 123, 'a close reason fits a close frame');
});

test('stomp resume: another version or heart-beats the client cannot keep is refused with 1012 (reconnect and renegotiate), not forwarded', () => {
  let s = connectedState();
  s.replay();
  let r = refusal(s.resumeAnswer(server('CONNECTED', { version: '1.1', 'heart-beat': '0,1000' }), false));
  assert.equal(r.code, 1012);
  assert.equal(r.forward, false);
  s = connectedState();
  s.replay();
  // The client sends every 1000 ms (its cx 1000, old sy 1000); the new backend wants one every 500... max(1000, 500) = 1000: fine.
  assert.equal(s.resumeAnswer(server('CONNECTED', { version: '1.2', 'heart-beat': '0,500' }), false), 'resumed');
  s = connectedState();
  s.replay();
  // ...but a client that negotiated 5000 with the old backend cannot satisfy one that wants 2000.
  const c = newState();
  c.sent(client('CONNECT', { 'accept-version': '1.2', 'heart-beat': '1000,0' }, undefined, false), false);
  c.received(server('CONNECTED', { version: '1.2', 'heart-beat': '0,5000' }), false);
  c.replay();
  r = refusal(c.resumeAnswer(server('CONNECTED', { version: '1.2', 'heart-beat': '0,2000' }), false));
  assert.deepEqual(r, { refused: true, forward: false, code: 1012, reason: 'STOMP heart-beats differ on the new backend' });
});

test('stomp heart-beats: compatibility of the client\'s old negotiation with the new CONNECTED', () => {
  // [client cx,cy], [old sx,sy], [new sx,sy] → ok
  const cases: [[number, number], [number, number], [number, number], boolean][] = [
    [[0, 0], [0, 0], [5000, 5000], true], // the client neither sends nor expects
    [[1000, 0], [0, 1000], [0, 1000], true], // same server
    [[1000, 0], [0, 1000], [0, 0], true], // the new one expects nothing
    [[1000, 0], [0, 0], [0, 1000], false], // the client sends none, the new one expects them
    [[1000, 0], [0, 5000], [0, 2000], false], // the client sends every 5 s, the new one wants 2 s
    [[1000, 0], [0, 2000], [0, 5000], true], // sends every 2 s, 5 s expected
    [[0, 1000], [1000, 0], [1000, 0], true], // server → client, same
    [[0, 1000], [1000, 0], [0, 0], false], // the new one does not send, the client expects
    [[0, 1000], [1000, 0], [3000, 0], false], // sends every 3 s, the client expects 1 s
    [[0, 3000], [1000, 0], [2000, 0], true], // every max(2000, 3000) = 3000, as before
  ];
  for (const [c, o, n, ok] of cases) assert.equal(heartBeatsCompatible(c, o, n), ok, JSON.stringify([c, o, n]));
});

// ---------------------------------------------------------------- state: receipts of state frames

test('stomp receipts: a SUBSCRIBE receipt already answered is stripped from the replay; one still awaited is kept', () => {
  const s = connectedState();
  const subR = client('SUBSCRIBE', { receipt: 'sr-0', id: 'sub-0', destination: '/topic/a' });
  const subR2 = client('SUBSCRIBE', { receipt: 'sr-1', id: 'sub-1', destination: '/topic/b' });
  s.sent(subR, false);
  s.sent(subR2, false);
  s.received(server('RECEIPT', { 'receipt-id': 'sr-0' }), false);
  const replayed = texts(s.replay());
  assert.equal(replayed[1], 'SUBSCRIBE\nid:sub-0\ndestination:/topic/a\n\n\0', 'answered: no receipt asked again');
  assert.equal(replayed[2], subR2.toString(), 'awaited: the new backend answers it');
  assert.equal(s.unresumable(), null);
});

test('stomp receipts: an UNSUBSCRIBE awaiting its receipt is replayed after its SUBSCRIBE; once answered both are gone', () => {
  const s = connectedState();
  s.sent(SUB_A, false);
  s.sent(SUB_B, false);
  const unsub = client('UNSUBSCRIBE', { receipt: 'ur-1', id: 'sub-0' });
  s.sent(unsub, false);
  assert.deepEqual(texts(s.replay()), [CONNECT, SUB_A, unsub, SUB_B].map(String));
  s.received(server('RECEIPT', { 'receipt-id': 'ur-1' }), false);
  assert.deepEqual(texts(s.replay()), [CONNECT, SUB_B].map(String));
});

// ---------------------------------------------------------------- state: unresumable

test('stomp unresumable: an open transaction, until COMMIT or ABORT', () => {
  const s = connectedState();
  s.sent(client('BEGIN', { transaction: 'tx-1' }), false);
  assert.equal(s.unresumable(), 'STOMP transaction tx-1 open');
  s.sent(client('SEND', { destination: '/q', transaction: 'tx-1' }, 'x'), false);
  s.sent(client('BEGIN', { transaction: 'tx-2' }), false);
  s.sent(client('COMMIT', { transaction: 'tx-1' }), false);
  assert.equal(s.unresumable(), 'STOMP transaction tx-2 open');
  s.sent(client('ABORT', { transaction: 'tx-2' }), false);
  assert.equal(s.unresumable(), null);
});

test('stomp unresumable: COMMIT, ABORT, ACK, NACK awaiting their receipt (their outcome on the old backend is unknown)', () => {
  const s = connectedState();
  s.sent(client('BEGIN', { transaction: 't' }), false);
  s.sent(client('COMMIT', { transaction: 't', receipt: 'c-1' }), false);
  assert.equal(s.unresumable(), 'a COMMIT awaits its receipt');
  s.received(server('RECEIPT', { 'receipt-id': 'c-1' }), false);
  assert.equal(s.unresumable(), null);
  s.sent(client('NACK', { id: 'm', receipt: 'n-1' }), false);
  assert.equal(s.unresumable(), 'a NACK awaits its receipt');
  s.received(server('RECEIPT', { 'receipt-id': 'n-1' }), false);
  assert.equal(s.unresumable(), null);
});

test('stomp unresumable: messages awaiting an ACK (client mode is cumulative, client-individual is not; 1.2 acks by the ack header)', () => {
  const s = connectedState();
  s.sent(client('SUBSCRIBE', { id: 'c', destination: '/q/c', ack: 'client' }), false);
  s.sent(client('SUBSCRIBE', { id: 'i', destination: '/q/i', ack: 'client-individual' }), false);
  s.sent(SUB_A, false);
  const msg = (sub: string, ack: string) => server('MESSAGE', { destination: '/q', subscription: sub, 'message-id': `mid-${ack}`, ack, 'content-length': 1 }, 'x');
  s.received(msg('sub-0', 'auto-1'), false);
  assert.equal(s.unresumable(), null, 'auto mode: nothing to acknowledge');
  s.received(msg('c', 'c1'), false);
  s.received(msg('c', 'c2'), false);
  s.received(msg('i', 'i1'), false);
  s.received(msg('i', 'i2'), false);
  assert.equal(s.unresumable(), 'STOMP messages await an ACK');
  s.sent(client('ACK', { id: 'c1', subscription: 'c' }), false);
  s.sent(client('ACK', { id: 'i2', subscription: 'i' }), false);
  assert.equal(s.unresumable(), 'STOMP messages await an ACK', 'c2 and i1 still await');
  s.sent(client('NACK', { id: 'c2', subscription: 'c' }), false);
  assert.equal(s.unresumable(), 'STOMP messages await an ACK', 'i1 still awaits');
  s.sent(client('ACK', { id: 'i1', subscription: 'i' }), false);
  assert.equal(s.unresumable(), null);
  s.received(msg('i', 'i3'), false);
  assert.notEqual(s.unresumable(), null);
  s.sent(client('UNSUBSCRIBE', { id: 'i' }), false);
  assert.equal(s.unresumable(), null, 'an unsubscribed subscription\'s messages are no longer awaited');
});

test('stomp unresumable: STOMP 1.1 acks by message-id', () => {
  const s = connectedState(LIMITS, server('CONNECTED', { version: '1.1' }));
  s.sent(client('SUBSCRIBE', { id: 'c', destination: '/q/c', ack: 'client-individual' }, undefined, false), false);
  s.received(server('MESSAGE', { destination: '/q', subscription: 'c', 'message-id': 'm-1' }, 'x'), false);
  assert.notEqual(s.unresumable(), null);
  s.sent(client('ACK', { 'message-id': 'm-1', subscription: 'c' }, undefined, false), false);
  assert.equal(s.unresumable(), null);
});

test('stomp unresumable: an ERROR from the backend ends the STOMP session', () => {
  const s = connectedState();
  s.sent(SUB_A, false);
  s.received(server('ERROR', { message: 'UNSUBSCRIBE ERROR' }), false);
  assert.match(s.unresumable() ?? '', /ERROR/);
});

test('stomp bounds: past maxFrames or maxBytes the session is unresumable for good (what was dropped cannot be rebuilt)', () => {
  const s = connectedState({ maxFrames: 2, maxBytes: 1 << 20 });
  s.sent(SUB_A, false);
  assert.equal(s.unresumable(), null);
  s.sent(SUB_B, false);
  assert.equal(s.unresumable(), 'STOMP session state over 2 frames');
  s.sent(client('UNSUBSCRIBE', { id: 'sub-0' }), false);
  assert.equal(s.unresumable(), 'STOMP session state over 2 frames', 'sticky');
  assert.deepEqual(s.replay(), []);
  const b = connectedState({ maxFrames: 100, maxBytes: CONNECT.length + SUB_A.length + 10 });
  b.sent(SUB_A, false);
  assert.equal(b.unresumable(), null);
  b.sent(SUB_B, false);
  assert.match(b.unresumable() ?? '', /over \d+ bytes/);
  // Unacknowledged messages and open transactions count too.
  const t = connectedState({ maxFrames: 2, maxBytes: 1 << 20 });
  t.sent(client('BEGIN', { transaction: 'a' }), false);
  t.sent(client('BEGIN', { transaction: 'b' }), false);
  assert.equal(t.unresumable(), 'STOMP session state over 2 frames');
});

// ---------------------------------------------------------------- a session recorded from the real client

test('stomp: a session recorded from a real stompjs Client is kept and replayed as the client sent it', async () => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (p) => [...p][0] ?? false });
  const fromClient: Buffer[] = [];
  const state = newState();
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      fromClient.push(Buffer.from(data));
      state.sent(data, isBinary);
      const [kind] = classify(data, 'client');
      const text = data.toString();
      const answer = (frame: Buffer) => {
        state.received(frame, false);
        ws.send(frame.toString());
      };
      if (text.startsWith('CONNECT')) {
        assert.equal(kind, 'request');
        answer(server('CONNECTED', { session: 'rec', server: 'STOMP-JS/1.3.0', 'heart-beat': '0,0', version: '1.2' }));
      }
      const receipt = /\nreceipt:([^\n]*)\n/.exec(text)?.[1];
      if (receipt !== undefined) answer(server('RECEIPT', { 'receipt-id': receipt }));
    });
  });
  await new Promise((r) => wss.once('listening', r));
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/stomp`;
  const c = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp']),
    connectHeaders: { login: 'u', passcode: 'p:w' },
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
  });
  const done = new Promise<void>((resolve) => {
    c.onConnect = () => {
      c.subscribe('/topic/a', () => {});
      const b = c.subscribe('/topic/b:x', () => {}, { receipt: 'sub-b' });
      c.subscribe('/queue/c', () => {}, { ack: 'client-individual' });
      c.watchForReceipt('sent-1', () => {
        b.unsubscribe();
        c.watchForReceipt('sent-2', () => resolve());
        c.publish({ destination: '/topic/req', headers: { receipt: 'sent-2' }, body: 'two' });
      });
      c.publish({ destination: '/topic/req', headers: { receipt: 'sent-1' }, body: 'one' });
    };
  });
  c.activate();
  await done;
  await c.deactivate();
  await new Promise<void>((r) => wss.close(() => r()));
  const sentText = fromClient.map(String);
  const subs = sentText.filter((t) => t.startsWith('SUBSCRIBE'));
  assert.equal(subs.length, 3);
  assert.ok(subs[1]!.includes('destination:/topic/b\\cx'), 'stompjs escapes header values in 1.2');
  const replayed = texts(state.replay());
  assert.deepEqual(replayed, [sentText[0]!, subs[0]!, subs[2]!], 'CONNECT, then the subscriptions still live, as sent');
  assert.equal(state.unresumable(), null);
});

// ---------------------------------------------------------------- fuzz

/** What a complete message holds, by stompjs's own Parser (reference for the fuzz test). */
function reference(msg: Buffer, from: Sender): [MessageKind, string[]] {
  const frames: { command: string; headers: [string, string][] }[] = [];
  const parser = new Parser((raw) => frames.push({ command: raw.command!, headers: raw.headers.slice() }), () => {});
  parser.parseChunk(new Uint8Array(msg).buffer);
  const ids: string[] = [];
  let kind: MessageKind = 'other';
  const first = (hs: [string, string][], name: string) => hs.find(([k]) => k.trim() === name)?.[1].trim();
  const unescape = (v: string) => v.replace(/\\(.)/g, (m, e: string) => ({ '\\': '\\', n: '\n', r: '\r', c: ':' } as Record<string, string>)[e] ?? m);
  for (const f of frames) {
    if (from === 'client') {
      if (f.command === 'CONNECT' || f.command === 'STOMP') {
        ids.push(CONNECT_ID);
        kind = 'request';
      } else if (['SEND', 'ACK', 'NACK', 'BEGIN', 'COMMIT', 'ABORT', 'DISCONNECT'].includes(f.command)) {
        const r = first(f.headers, 'receipt');
        if (r !== undefined) {
          ids.push(unescape(r));
          kind = 'request';
        }
      }
    } else if (f.command === 'CONNECTED') {
      ids.push(CONNECT_ID);
      kind = 'response';
    } else if (f.command === 'RECEIPT' || f.command === 'ERROR') {
      const r = first(f.headers, 'receipt-id');
      if (r !== undefined) {
        ids.push(unescape(r));
        kind = 'response';
      }
    }
  }
  return [kind, ids];
}

const COMMAND_NAMES = ['CONNECT', 'STOMP', 'CONNECTED', 'SEND', 'SUBSCRIBE', 'UNSUBSCRIBE', 'BEGIN', 'COMMIT', 'ABORT', 'ACK', 'NACK', 'DISCONNECT', 'MESSAGE', 'RECEIPT', 'ERROR', 'FOO'];
const HEADER_NAMES = ['id', 'destination', 'receipt', 'receipt-id', 'ack', 'transaction', 'message-id', 'subscription', 'version', 'heart-beat', 'message', 'x'];
const VALUES = ['0', '1', 'sub-0', 'sub-1', 'r1', 'r2', 'tx', 'client', 'client-individual', 'auto', '1.2', '1.1', '1000,0', '0,1000', 'a\\cb', ''];

function pick<T>(rnd: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rnd() * xs.length)]!;
}

/** A random well-formed frame (sometimes with CR LF, content-length, a body). */
function randomFrame(rnd: () => number): Buffer {
  const eol = rnd() < 0.2 ? '\r\n' : '\n';
  let head = pick(rnd, COMMAND_NAMES) + eol;
  const n = Math.floor(rnd() * 5);
  for (let i = 0; i < n; i++) head += `${pick(rnd, HEADER_NAMES)}:${pick(rnd, VALUES)}${eol}`;
  const body = rnd() < 0.4 ? Buffer.from(pick(rnd, ['', 'hello', 'a\0b', '{"x":1}'])) : Buffer.alloc(0);
  if (body.includes(0) || rnd() < 0.3) head += `content-length:${body.length}${eol}`;
  return Buffer.concat([Buffer.from(head + eol), body, Buffer.from(rnd() < 0.2 ? '\0\n' : '\0')]);
}

function mutate(rnd: () => number, src: Buffer): Buffer {
  const bytes = Array.from(src);
  const alphabet = Buffer.from('\n\r\0:\\ abcSUBCRIPTEND-0123456789');
  const n = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(rnd() * (bytes.length + 1));
    const b = rnd() < 0.8 ? alphabet[Math.floor(rnd() * alphabet.length)]! : Math.floor(rnd() * 256);
    const op = rnd();
    if (op < 0.3) bytes[Math.min(at, bytes.length - 1)] = b;
    else if (op < 0.5) bytes.splice(at, 0, b);
    else if (op < 0.7) bytes.splice(at, 1);
    else bytes.length = Math.min(bytes.length, at); // truncated
  }
  return Buffer.from(bytes);
}

test('stomp fuzz: random, mutated and truncated frames in both directions never throw; valid ones agree with stompjs\'s Parser; the state stays bounded', () => {
  const rnd = mulberry32(0x570c);
  const limits: StateLimits = { maxFrames: 20, maxBytes: 2000 };
  let state = newState(limits);
  let agreed = 0;
  for (let i = 0; i < 30000; i++) {
    let msg: Buffer;
    const r = rnd();
    if (r < 0.1) {
      msg = Buffer.alloc(Math.floor(rnd() * 48));
      for (let j = 0; j < msg.length; j++) msg[j] = Math.floor(rnd() * 256);
    } else {
      const frames = [randomFrame(rnd)];
      while (rnd() < 0.2) frames.push(randomFrame(rnd));
      msg = Buffer.concat(frames);
      if (r < 0.5) msg = mutate(rnd, msg);
    }
    const from: Sender = rnd() < 0.5 ? 'client' : 'backend';
    const got = classify(msg, from);
    if (got[0] !== 'malformed' && !msg.includes(0x5c) && r >= 0.1) {
      // A well-formed message: stompjs reads the same frames and ids (its parser has no 'malformed').
      assert.deepEqual(got, reference(msg, from), JSON.stringify(msg.toString('latin1')));
      agreed++;
    }
    if (from === 'client') state.sent(msg, rnd() < 0.5);
    else state.received(msg, false);
    if (rnd() < 0.05) {
      const why = state.unresumable();
      assert.ok(why === null || (typeof why === 'string' && why.length > 0));
      const frames = state.replay();
      assert.ok(frames.length <= limits.maxFrames, `replay of ${frames.length} frames`);
      assert.ok(frames.reduce((n, f) => n + f.data.length, 0) <= limits.maxBytes + 200, 'replay within the byte bound (answered receipts only shrink it)');
      for (const f of frames) assert.equal(classify(f.data, 'client')[0] === 'malformed', false, 'replayed frames are whole');
      const v = state.resumeAnswer(mutate(rnd, randomFrame(rnd)), false);
      assert.ok(v === 'swallow' || v === 'resumed' || v === 'pass' || (typeof v === 'object' && v.refused === true));
    }
    if (rnd() < 0.01) state = newState(limits);
  }
  assert.ok(agreed > 5000, `enough well-formed messages compared (${agreed})`);
});

test('stomp fuzz: a model of subscriptions under random SUBSCRIBE/UNSUBSCRIBE/receipts matches the replay', () => {
  const rnd = mulberry32(0x5b5);
  for (let round = 0; round < 200; round++) {
    const s = connectedState();
    const model = new Map<string, string>(); // id → destination, in subscription order
    for (let i = 0; i < 60; i++) {
      const id = `s${Math.floor(rnd() * 8)}`;
      if (rnd() < 0.6) {
        const dest = `/t/${Math.floor(rnd() * 100)}`;
        s.sent(client('SUBSCRIBE', { id, destination: dest }), false);
        model.delete(id);
        model.set(id, dest);
      } else {
        s.sent(client('UNSUBSCRIBE', { id }), false);
        model.delete(id);
      }
      if (rnd() < 0.2) s.received(server('MESSAGE', { subscription: id, destination: '/t' }, 'x'), false);
    }
    const replayed = texts(s.replay()).slice(1);
    assert.deepEqual(replayed, [...model].map(([id, dest]) => `SUBSCRIBE\nid:${id}\ndestination:${dest}\n\n\0`));
  }
});
