// The socket.io codec on its own: classify() and the per-session state keeper, with frames made by
// the real libraries (socket.io-parser's Encoder, engine.io-parser's encodePacket, the packet type
// table they share) or copied from what socket.io 4.8 and socket.io-client 4.8 put on the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodePacket } from 'engine.io-parser';
import { Decoder, Encoder, PacketType, type Packet } from 'socket.io-parser';
import type { Frame, MessageKind, ProtocolState, ResumeVerdict, Sender } from '../sidecar/codecs/codec.js';
import { createSocketIoCodec, SOCKETIO_REFUSED_CODE } from '../sidecar/codecs/socketio.js';
import { mulberry32 } from './prng.js';

const codec = createSocketIoCodec();
const encoder = new Encoder();
const KINDS: readonly MessageKind[] = ['request', 'response', 'other', 'malformed'];
const LIMITS = { maxFrames: 100, maxBytes: 1 << 20 };

/** One socket.io packet as the frames that carry it: the text frame ('4' + packet) and any attachments. */
function sio(packet: Omit<Packet, 'nsp'> & { nsp?: string }): Frame[] {
  const parts = encoder.encode({ nsp: '/', ...packet } as Packet) as (string | Buffer)[];
  return parts.map((p) =>
    typeof p === 'string' ? { data: Buffer.from(`4${p}`), isBinary: false } : { data: Buffer.from(p), isBinary: true },
  );
}

/** The one text frame of a packet without attachments. */
function text(packet: Omit<Packet, 'nsp'> & { nsp?: string }): Buffer {
  const frames = sio(packet);
  assert.equal(frames.length, 1);
  return frames[0]!.data;
}

/** An Engine.IO packet as engine.io-parser writes it on a websocket. */
function eio(type: 'open' | 'close' | 'ping' | 'pong' | 'message' | 'upgrade' | 'noop', data?: string): Buffer {
  let out = '';
  encodePacket({ type, ...(data === undefined ? {} : { data }) }, true, (encoded) => (out = encoded as string));
  return Buffer.from(out);
}

const OPEN = eio('open', '{"sid":"O2vHnx55YbAUXHgSAAAA","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}');
const OPEN2 = eio('open', '{"sid":"b9Xz8fQ1aaaaaaaaAAAA","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}');

// What socket.io-client sends to join, and what the server answers (as captured from 4.8).
const JOIN_MAIN = text({ type: PacketType.CONNECT }); // "40"
const JOIN_CHAT = text({ type: PacketType.CONNECT, nsp: '/chat', data: { token: 'good' } }); // 40/chat,{"token":"good"}
const JOIN_NEWS = text({ type: PacketType.CONNECT, nsp: '/news' }); // "40/news,"
const OK_MAIN = text({ type: PacketType.CONNECT, data: { sid: 'y7uwdpI53FQs1bjVAAAA' } });
const OK_CHAT = text({ type: PacketType.CONNECT, nsp: '/chat', data: { sid: 'yJSA6XmY92ZNOoZoAAAB' } });
const OK_NEWS = text({ type: PacketType.CONNECT, nsp: '/news', data: { sid: 'fENVHoCnCxx_9HsUAAAC' } });
const REFUSED_CHAT = text({ type: PacketType.CONNECT_ERROR, nsp: '/chat', data: { message: 'not authorized', data: { why: 'token' } } });
const LEAVE_CHAT = text({ type: PacketType.DISCONNECT, nsp: '/chat' }); // "41/chat,"
const LEAVE_NEWS = text({ type: PacketType.DISCONNECT, nsp: '/news' });
const NEWS_EVENT = text({ type: PacketType.EVENT, nsp: '/news', data: ['tick', { n: 1, from: 'a' }] });
const CHAT_EVENT = text({ type: PacketType.EVENT, nsp: '/chat', data: ['tick', { n: 1, from: 'a' }] });

function classify(msg: string | Buffer, from: Sender = 'client', isBinary = false): [MessageKind, string[]] {
  const ids: string[] = [];
  const kind = codec.classify(typeof msg === 'string' ? Buffer.from(msg) : msg, isBinary, from, ids);
  assert.ok(KINDS.includes(kind));
  if (kind === 'request' || kind === 'response') assert.equal(ids.length, 1);
  else assert.deepEqual(ids, [], `no ids for ${kind}`);
  return [kind, ids];
}

function texts(frames: Frame[]): string[] {
  return frames.map((f) => {
    assert.equal(f.isBinary, false);
    return f.data.toString();
  });
}

/** A session as the sidecar sees it: the open packet, then the joins and their answers. */
function session(limits = LIMITS, ...steps: [Sender, Buffer][]): ProtocolState {
  const s = codec.createState!(limits);
  s.received(OPEN, false);
  for (const [from, data] of steps) (from === 'client' ? s.sent(data, false) : s.received(data, false));
  return s;
}

function joinedChatAndNews(limits = LIMITS): ProtocolState {
  return session(limits, ['client', JOIN_CHAT], ['client', JOIN_NEWS], ['backend', OK_CHAT], ['backend', OK_NEWS]);
}

// ---------------------------------------------------------------- detection and classify

test('socket.io: name, no subprotocol, matched by the Engine.IO 4 websocket query', () => {
  assert.equal(codec.name, 'socket.io');
  assert.equal(codec.subprotocols, undefined);
  const m = codec.matchesRequest!;
  assert.equal(m('/socket.io/?EIO=4&transport=websocket'), true);
  assert.equal(m('/my-app/io/?transport=websocket&EIO=4&t=PZ1x'), true, 'any path, any order');
  assert.equal(m('/socket.io/?EIO=4&transport=websocket&sid=abc'), true, 'an upgrade: matched, the state makes it unresumable');
  assert.equal(m('/socket.io/?EIO=4&transport=polling'), false, 'long-polling is HTTP, not a WebSocket session');
  assert.equal(m('/socket.io/?EIO=3&transport=websocket'), false, 'Engine.IO 3 (socket.io 2): not this protocol');
  assert.equal(m('/socket.io/'), false);
  assert.equal(m('/socket.io/?EIO=4'), false);
  assert.equal(m('/?EIO=%zz&transport=websocket'), false, 'a bad escape does not throw');
  assert.equal(m(''), false);
});

test('socket.io: emits with an ack id are requests, acks their responses, in both directions', () => {
  const emit = text({ type: PacketType.EVENT, nsp: '/chat', id: 17, data: ['echo', { x: 1 }] });
  assert.equal(emit.toString(), '42/chat,17["echo",{"x":1}]');
  assert.deepEqual(classify(emit, 'client'), ['request', ['/chat,17']]);
  assert.deepEqual(classify(text({ type: PacketType.ACK, nsp: '/chat', id: 17, data: [{ echo: { x: 1 } }] }), 'backend'), ['response', ['/chat,17']]);
  // Main namespace: no "/," written.
  assert.deepEqual(classify(text({ type: PacketType.EVENT, id: 0, data: ['x', 1] })), ['request', ['0']]);
  assert.deepEqual(classify('430[{"ok":true}]', 'backend'), ['response', ['0']]);
  // The server asking the client (copied: socket.emit('ask', 1, cb) on /chat), and the client's ack.
  assert.deepEqual(classify('42/chat,0["ask",1]', 'backend'), ['request', ['/chat,0']]);
  assert.deepEqual(classify('43/chat,0["yes"]', 'client'), ['response', ['/chat,0']]);
  // Emits without an ack id.
  assert.deepEqual(classify(CHAT_EVENT, 'backend'), ['other', []]);
  assert.deepEqual(classify('42/chat,["plain","no ack"]', 'client'), ['other', []]);
});

test('socket.io: binary packets — the server\'s BINARY_ACK is a response; a client BINARY_EVENT/BINARY_ACK is never tracked; attachments are other', () => {
  const binEmit = sio({ type: PacketType.EVENT, nsp: '/chat', id: 1, data: ['bin', Buffer.from([5, 6])] });
  assert.equal(binEmit[0]!.data.toString(), '451-/chat,1["bin",{"_placeholder":true,"num":0}]');
  assert.equal(binEmit.length, 2);
  assert.deepEqual(classify(binEmit[0]!.data, 'client'), ['other', []], 'replaying it without its attachment would break the new server');
  assert.deepEqual(classify(binEmit[1]!.data, 'client', true), ['other', []]);
  const binAck = sio({ type: PacketType.ACK, nsp: '/chat', id: 1, data: [Buffer.from([9, 8, 7])] });
  assert.equal(binAck[0]!.data.toString(), '461-/chat,1[{"_placeholder":true,"num":0}]');
  assert.deepEqual(classify(binAck[0]!.data, 'backend'), ['response', ['/chat,1']]);
  assert.deepEqual(classify(binAck[0]!.data, 'client'), ['other', []], 'a client BINARY_ACK is never dropped as an orphan');
  const push = sio({ type: PacketType.EVENT, nsp: '/chat', data: ['binpush', Buffer.from([1, 2, 3]), Buffer.from([4])] });
  assert.equal(push[0]!.data.toString(), '452-/chat,["binpush",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
  assert.deepEqual(classify(push[0]!.data, 'backend'), ['other', []]);
});

test('socket.io: Engine.IO packets and the other socket.io packets are other', () => {
  for (const f of [OPEN, eio('close'), eio('ping'), eio('pong'), eio('ping', 'probe'), eio('pong', 'probe'), eio('upgrade'), eio('noop'), Buffer.from('bAQID')]) {
    assert.deepEqual(classify(f, 'backend'), ['other', []], f.toString());
    assert.deepEqual(classify(f, 'client'), ['other', []], f.toString());
  }
  for (const f of [JOIN_MAIN, JOIN_CHAT, JOIN_NEWS, OK_CHAT, REFUSED_CHAT, LEAVE_CHAT, Buffer.from('41'), Buffer.from('44{"message":"x"}')]) {
    assert.deepEqual(classify(f), ['other', []], f.toString());
  }
  assert.deepEqual(classify(Buffer.from([0x34, 0x32, 0xff, 0x00]), 'client', true), ['other', []], 'binary frames are attachments');
});

test('socket.io: frames that are not Engine.IO 4 / socket.io 5 are malformed', () => {
  for (const f of ['', 'x', '7', '{"a":1}', '4', '47', '4x', '42/chat,17["echo"', '42/chat,17{"a":1}', '43{}', '43/chat,"x"',
    '45-/chat,1[]', '450-[1]', '45x-[1]', '46/chat,1[1]', `42${'1'.repeat(16)}["x"]`, `42/${'n'.repeat(2000)},1["x"]`]) {
    assert.deepEqual(classify(f), ['malformed', []], JSON.stringify(f));
  }
  assert.deepEqual(classify('42/chat,17["echo"]  \n'), ['request', ['/chat,17']], 'trailing whitespace is fine');
  assert.deepEqual(classify('41/chat'), ['other', []], 'a namespace running to the end, as the parser reads it');
  assert.deepEqual(classify('42/chat,17'), ['other', []], 'an emit with no payload: socket.io-parser accepts it, nothing acks it');
  assert.deepEqual(classify('43/chat,17', 'backend'), ['response', ['/chat,17']], 'an ack with no payload: the callback gets no arguments');
  assert.deepEqual(classify('43/chat,[1]', 'backend'), ['other', []], 'an ack without an id: the socket drops it');
});

test('socket.io: every truncation of real frames is classified without throwing, and never as a request with another id', () => {
  const frames = [
    text({ type: PacketType.EVENT, nsp: '/chat', id: 1234, data: ['echo', { x: 'é', y: [1, 2] }] }),
    text({ type: PacketType.ACK, nsp: '/chat', id: 1234, data: [{ ok: true }] }),
    ...sio({ type: PacketType.ACK, id: 3, data: [Buffer.from([1])] }).map((f) => f.data),
    JOIN_CHAT, OK_CHAT, REFUSED_CHAT, OPEN,
  ];
  for (const f of frames) {
    for (let i = 0; i <= f.length; i++) {
      for (const from of ['client', 'backend'] as const) {
        const [kind, ids] = classify(f.subarray(0, i), from);
        if (kind === 'request' || kind === 'response') assert.ok(f.subarray(0, i).toString().includes(ids[0]!), `${ids[0]} in the frame`);
      }
    }
  }
});

// ---------------------------------------------------------------- the state keeper

test('state: the namespaces joined, replayed in join order with their auth; the new server\'s open and CONNECT answers swallowed, resumed on the last', () => {
  const s = session(LIMITS, ['client', JOIN_MAIN], ['client', JOIN_CHAT], ['client', JOIN_NEWS], ['backend', OK_MAIN], ['backend', OK_CHAT], ['backend', OK_NEWS],
    ['backend', CHAT_EVENT], ['client', text({ type: PacketType.EVENT, nsp: '/chat', data: ['say', 'hi'] })], ['backend', eio('ping')], ['client', eio('pong')]);
  assert.equal(s.unresumable(), null);
  assert.deepEqual(texts(s.replay()), ['40', '40/chat,{"token":"good"}', '40/news,']);
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow', 'the new Engine.IO handshake: the client has one');
  assert.equal(s.resumeAnswer(OK_MAIN, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'swallow');
  assert.equal(s.resumeAnswer(CHAT_EVENT, false), 'pass', 'an event on a namespace already back is delivered');
  assert.equal(s.resumeAnswer(eio('ping'), false), 'pass', 'the new server\'s ping: the client answers it');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'resumed');
});

test('state: answers may come in any order; the open packet is awaited too', () => {
  const s = joinedChatAndNews();
  s.replay();
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'swallow', 'the open packet is still to come');
  assert.equal(s.resumeAnswer(OPEN2, false), 'resumed');
});

test('state: kept current — a namespace left by the client or kicked by the server is not replayed; a CONNECT_ERROR removes it', () => {
  const s = joinedChatAndNews();
  s.sent(LEAVE_CHAT, false);
  assert.deepEqual(texts(s.replay()), ['40/news,']);
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'resumed');

  const kicked = joinedChatAndNews();
  kicked.received(LEAVE_NEWS, false); // socket.disconnect() on the server: "41/news,"
  assert.deepEqual(texts(kicked.replay()), ['40/chat,{"token":"good"}']);

  const refused = session(LIMITS, ['client', JOIN_MAIN], ['client', JOIN_CHAT], ['backend', OK_MAIN], ['backend', REFUSED_CHAT]);
  assert.deepEqual(texts(refused.replay()), ['40'], 'a join the server refused is not state');
});

test('state: a namespace joined again keeps only its latest CONNECT (new auth), at its new place in the order', () => {
  const s = joinedChatAndNews();
  s.sent(LEAVE_CHAT, false);
  const rejoin = text({ type: PacketType.CONNECT, nsp: '/chat', data: { token: 'fresh' } });
  s.sent(rejoin, false);
  s.received(OK_CHAT, false);
  assert.deepEqual(texts(s.replay()), ['40/news,', '40/chat,{"token":"fresh"}']);
});

test('state: a CONNECT the old server never answered is replayed and its answer goes to the client (success or error)', () => {
  const s = session(LIMITS, ['client', JOIN_CHAT], ['backend', OK_CHAT], ['client', JOIN_NEWS]);
  assert.deepEqual(texts(s.replay()), ['40/chat,{"token":"good"}', '40/news,']);
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'pass', 'the client is still waiting for this one');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'resumed');
  // Now confirmed: a later failover swallows its answer.
  s.replay();
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'resumed');

  const onlyPending = session(LIMITS, ['client', JOIN_CHAT]);
  assert.deepEqual(texts(onlyPending.replay()), ['40/chat,{"token":"good"}']);
  assert.equal(onlyPending.resumeAnswer(OPEN2, false), 'resumed', 'nothing else to swallow');
  assert.equal(onlyPending.resumeAnswer(REFUSED_CHAT, false), 'pass');

  const pendingRefused = session(LIMITS, ['client', JOIN_NEWS], ['backend', OK_NEWS], ['client', JOIN_CHAT]);
  pendingRefused.replay();
  assert.equal(pendingRefused.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(pendingRefused.resumeAnswer(REFUSED_CHAT, false), 'pass', 'the client gets its connect_error, as from the old server');
  assert.equal(pendingRefused.resumeAnswer(OK_NEWS, false), 'resumed');
  assert.deepEqual(texts(pendingRefused.replay()), ['40/news,'], 'the refused join is no longer state');
});

test('state: a CONNECT_ERROR for a namespace the client had is a refusal, not forwarded (socket.io-client would keep that socket "connected"), closed with 1008', () => {
  const s = joinedChatAndNews();
  s.replay();
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'swallow');
  const v = s.resumeAnswer(REFUSED_CHAT, false) as Exclude<ResumeVerdict, string>;
  assert.equal(v.refused, true);
  assert.equal(v.forward, false);
  assert.equal(v.code, SOCKETIO_REFUSED_CODE);
  assert.equal(SOCKETIO_REFUSED_CODE, 1008);
  assert.ok(Buffer.byteLength(v.reason) <= 123, 'fits a close frame');
  // Main namespace, and a namespace the new server does not have (copied from socket.io 4.8).
  const m = session(LIMITS, ['client', JOIN_MAIN], ['backend', OK_MAIN]);
  m.replay();
  m.resumeAnswer(OPEN2, false);
  assert.equal((m.resumeAnswer(Buffer.from('44{"message":"not authorized"}'), false) as { refused: boolean }).refused, true);
  const nope = session(LIMITS, ['client', Buffer.from('40/nope,')], ['backend', Buffer.from('40/nope,{"sid":"x"}')]);
  nope.replay();
  assert.equal((nope.resumeAnswer(Buffer.from('44/nope,{"message":"Invalid namespace"}'), false) as { refused: boolean }).refused, true);
});

test('state: a replay resets the resume bookkeeping (a second backend change starts over)', () => {
  const s = joinedChatAndNews();
  s.replay();
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'swallow');
  // That backend died before /news was answered: start over on the next one.
  assert.deepEqual(texts(s.replay()), ['40/chat,{"token":"good"}', '40/news,']);
  assert.equal(s.resumeAnswer(OPEN2, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_CHAT, false), 'swallow');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'resumed');
  assert.equal(s.resumeAnswer(OK_NEWS, false), 'pass', 'after the resume nothing is swallowed');
  assert.equal(s.resumeAnswer(OPEN2, false), 'pass');
});

test('state: nothing to resume before the open packet or with no namespace joined', () => {
  const fresh = codec.createState!(LIMITS);
  assert.deepEqual(fresh.replay(), [], 'the new server\'s open packet is the client\'s first');
  assert.equal(fresh.unresumable(), null);
  const none = session(LIMITS);
  assert.deepEqual(none.replay(), []);
  const left = session(LIMITS, ['client', JOIN_CHAT], ['backend', OK_CHAT], ['client', LEAVE_CHAT]);
  assert.deepEqual(left.replay(), []);
});

test('state: kept frames are copies (socket buffers may be reused)', () => {
  const s = codec.createState!(LIMITS);
  s.received(Buffer.from(OPEN), false);
  const buf = Buffer.from(JOIN_CHAT);
  s.sent(buf, false);
  buf.fill(0x78);
  assert.deepEqual(texts(s.replay()), ['40/chat,{"token":"good"}']);
});

test('state: past maxFrames or maxBytes the session is unresumable, and resumable again once back under', () => {
  const s = session({ maxFrames: 2, maxBytes: 1 << 20 }, ['client', JOIN_MAIN], ['client', JOIN_CHAT], ['client', JOIN_NEWS]);
  assert.match(s.unresumable() ?? '', /3 namespaces over the limit of 2/);
  s.sent(LEAVE_NEWS, false);
  assert.equal(s.unresumable(), null);
  const b = session({ maxFrames: 10, maxBytes: JOIN_CHAT.length + 1 }, ['client', JOIN_CHAT]);
  assert.equal(b.unresumable(), null);
  b.sent(JOIN_NEWS, false);
  assert.match(b.unresumable() ?? '', /bytes over the limit/);
  b.sent(LEAVE_CHAT, false);
  assert.equal(b.unresumable(), null);
  // Rejoining the same namespace many times does not grow the state.
  const r = session({ maxFrames: 1, maxBytes: 200 }, ['client', JOIN_CHAT]);
  for (let i = 0; i < 100; i++) r.sent(JOIN_CHAT, false);
  assert.equal(r.unresumable(), null);
  assert.equal(r.replay().length, 1);
});

test('state: a binary packet half way through its attachments, either way, is unresumable until they are through', () => {
  const s = joinedChatAndNews();
  const up = sio({ type: PacketType.EVENT, nsp: '/chat', id: 4, data: ['up', Buffer.from([1]), Buffer.from([2])] });
  s.sent(up[0]!.data, false);
  assert.match(s.unresumable() ?? '', /half sent/);
  s.sent(up[1]!.data, true);
  assert.match(s.unresumable() ?? '', /half sent/);
  s.sent(up[2]!.data, true);
  assert.equal(s.unresumable(), null);
  const down = sio({ type: PacketType.EVENT, nsp: '/news', data: ['img', Buffer.from([1, 2, 3])] });
  s.received(down[0]!.data, false);
  assert.match(s.unresumable() ?? '', /half received/);
  s.received(down[1]!.data, true);
  assert.equal(s.unresumable(), null);
  assert.deepEqual(texts(s.replay()), ['40/chat,{"token":"good"}', '40/news,'], 'binary frames are not state');
});

test('state: an emit still unanswered on a namespace the client left is unresumable (its replay would make the server close)', () => {
  const s = joinedChatAndNews();
  s.sent(text({ type: PacketType.EVENT, nsp: '/chat', id: 7, data: ['slow'] }), false);
  s.sent(text({ type: PacketType.EVENT, nsp: '/news', id: 8, data: ['slow'] }), false);
  assert.equal(s.unresumable(), null, 'both namespaces joined: the tracker may replay them');
  s.sent(LEAVE_CHAT, false);
  assert.match(s.unresumable() ?? '', /left/);
  s.received(text({ type: PacketType.ACK, nsp: '/chat', id: 7, data: [] }), false);
  assert.equal(s.unresumable(), null, 'answered after all');
  s.received(LEAVE_NEWS, false);
  assert.match(s.unresumable() ?? '', /left/, 'kicked by the server with /news,8 open');
  s.sent(JOIN_NEWS, false);
  assert.equal(s.unresumable(), null, 'joined again: a replay goes to the new /news socket');
  s.received(sio({ type: PacketType.ACK, nsp: '/news', id: 8, data: [Buffer.from([1])] })[0]!.data, false);
  s.received(Buffer.from([1]), true);
  s.sent(LEAVE_NEWS, false);
  assert.equal(s.unresumable(), null, 'a BINARY_ACK answers too');
});

test('state: a websocket upgraded from long-polling (probe, upgrade) is unresumable', () => {
  const c = codec.createState!(LIMITS);
  c.sent(eio('ping', 'probe'), false);
  assert.match(c.unresumable() ?? '', /long-polling/);
  const s = codec.createState!(LIMITS);
  s.received(eio('pong', 'probe'), false);
  assert.match(s.unresumable() ?? '', /long-polling/);
  const u = codec.createState!(LIMITS);
  u.sent(eio('upgrade'), false);
  assert.match(u.unresumable() ?? '', /long-polling/);
});

// ---------------------------------------------------------------- fuzz

/** What socket.io-parser's Decoder makes of a message frame's text (after the Engine.IO '4'), or null. */
function reference(textAfter4: string): Packet | null {
  const d = new Decoder();
  let out: Packet | null = null;
  d.on('decoded', (p: Packet) => (out = p));
  try {
    d.add(textAfter4);
  } catch {
    return null;
  }
  // A BINARY_* head: the decoder now waits for its attachments; give it some.
  for (let i = 0; out === null && i <= 10; i++) {
    try {
      d.add(Buffer.alloc(1));
    } catch {
      return null;
    }
  }
  return out;
}

function mutate(rnd: () => number, src: Buffer, alphabet: Buffer): Buffer {
  const bytes = Array.from(src);
  const n = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(rnd() * (bytes.length + 1));
    const b = rnd() < 0.8 ? alphabet[Math.floor(rnd() * alphabet.length)]! : Math.floor(rnd() * 256);
    const op = rnd();
    if (op < 0.4) bytes[Math.min(at, bytes.length - 1)] = b;
    else if (op < 0.7) bytes.splice(at, 0, b);
    else bytes.splice(at, 1);
  }
  return Buffer.from(bytes);
}

const ALPHABET = Buffer.from('0123456789-/,[]{}":abcprobe \n');

test('fuzz: random, mutated and truncated frames in both directions never throw; classify agrees with socket.io-parser on what it accepts', () => {
  const rnd = mulberry32(0x50c7e710);
  const seeds: Frame[] = [
    { data: OPEN, isBinary: false }, { data: JOIN_MAIN, isBinary: false }, { data: JOIN_CHAT, isBinary: false }, { data: JOIN_NEWS, isBinary: false },
    { data: OK_CHAT, isBinary: false }, { data: OK_NEWS, isBinary: false }, { data: REFUSED_CHAT, isBinary: false }, { data: LEAVE_CHAT, isBinary: false },
    { data: NEWS_EVENT, isBinary: false }, { data: eio('ping'), isBinary: false }, { data: eio('pong'), isBinary: false }, { data: eio('ping', 'probe'), isBinary: false },
    { data: text({ type: PacketType.EVENT, nsp: '/chat', id: 42, data: ['echo', 1] }), isBinary: false },
    { data: text({ type: PacketType.ACK, nsp: '/chat', id: 42, data: [1] }), isBinary: false },
    ...sio({ type: PacketType.EVENT, nsp: '/news', id: 3, data: ['b', Buffer.from([1, 2]), Buffer.from([3])] }),
    ...sio({ type: PacketType.ACK, id: 9, data: [Buffer.from([0x34, 0x30])] }),
  ];
  const states = [joinedChatAndNews(), codec.createState!({ maxFrames: 3, maxBytes: 300 }), codec.createState!(LIMITS)];
  const verdicts = new Set<string>();
  let compared = 0;
  for (let i = 0; i < 30_000; i++) {
    const r = rnd();
    let frame: Frame;
    if (r < 0.15) {
      const len = Math.floor(rnd() * 48);
      const buf = Buffer.alloc(len);
      for (let j = 0; j < len; j++) buf[j] = Math.floor(rnd() * 256);
      frame = { data: buf, isBinary: rnd() < 0.3 };
    } else {
      const seed = seeds[Math.floor(rnd() * seeds.length)]!;
      const data = r < 0.35 ? seed.data.subarray(0, Math.floor(rnd() * (seed.data.length + 1))) : r < 0.9 ? mutate(rnd, seed.data, ALPHABET) : seed.data;
      frame = { data, isBinary: seed.isBinary };
    }
    for (const from of ['client', 'backend'] as const) {
      const ids: string[] = [];
      const kind = codec.classify(frame.data, frame.isBinary, from, ids);
      assert.ok(KINDS.includes(kind));
      assert.equal(ids.length, kind === 'request' || kind === 'response' ? 1 : 0);
      if (!frame.isBinary && frame.data.length > 1 && frame.data[0] === 0x34 && frame.data.length < 600) {
        const t = frame.data.toString('latin1');
        // socket.io-parser reads whitespace as a digit (Number(" ") == " " is true); the codec does not.
        if (!/[ \t\n\r\f\v]/.test(t) && !/\d{16}/.test(t)) {
          const ref = reference(frame.data.toString('utf8').slice(1));
          if (ref !== null) {
            compared++;
            assert.notEqual(kind, 'malformed', `socket.io-parser accepts ${JSON.stringify(t)}`);
            const hasId = ref.id !== undefined && ref.id !== null;
            if (kind === 'request') assert.ok(hasId && (ref.type === PacketType.EVENT), t);
            if (kind === 'response') assert.ok(hasId && (ref.type === PacketType.ACK || ref.type === PacketType.BINARY_ACK), t);
          }
        }
      }
    }
    const s = states[i % states.length]!;
    const op = rnd();
    if (op < 0.4) s.sent(frame.data, frame.isBinary);
    else if (op < 0.8) s.received(frame.data, frame.isBinary);
    else if (op < 0.85) {
      for (const f of s.replay()) assert.equal(f.isBinary, false);
    } else {
      const v = s.resumeAnswer(frame.data, frame.isBinary);
      verdicts.add(typeof v === 'string' ? v : 'refused');
    }
    const why = s.unresumable();
    assert.ok(why === null || typeof why === 'string');
  }
  assert.ok(compared > 2000, `compared with socket.io-parser on ${compared} frames`);
  assert.ok(verdicts.has('pass') && verdicts.has('swallow'), [...verdicts].join());
  // Bounded: a state fed 30k frames keeps no more namespaces than it was sent distinct CONNECTs.
  for (const s of states) assert.ok(s.replay().length < 1000);
});
