// The MQTT codec's state keeper, on the frames the real libraries send: mqtt-packet's writeToStream()
// (what mqtt.js in Node and aedes write: every field of a packet its own WebSocket frame) and whole
// generate()d packets; end to end, mqtt.js against aedes (and the fixture's MQTT 5 broker) through
// a small in-test relay that fails over the way the sidecar does (replay, resumeAnswer verdicts).
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import mqtt from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { WebSocket, WebSocketServer } from 'ws';
import type { Frame, ProtocolState, ResumeVerdict, StateLimits } from '../sidecar/codecs/codec.js';
import { createMqttCodec } from '../sidecar/codecs/mqtt.js';
import { startMqttBroker, type Broker } from './fixtures/mqtt-server.js';
import { waitFor } from './helpers.js';
import { mulberry32 } from './prng.js';

const codec = createMqttCodec();
const LIMITS: StateLimits = { maxFrames: 100, maxBytes: 1 << 20 };
type Version = 3 | 4 | 5;

// ---- frames as the libraries write them --------------------------------------------------------

/** The frames mqtt.js / aedes send for one packet: each write of mqtt-packet's writeToStream. */
function frames(p: Packet, v: Version = 4): Buffer[] {
  const out: Buffer[] = [];
  const sink = { write: (c: Buffer | string) => (out.push(Buffer.from(c)), true) };
  mqttPacket.writeToStream(p, sink as unknown as NodeJS.WritableStream, { protocolVersion: v });
  return out;
}

/** One packet as one buffer (mqtt-packet's generate()). */
function whole(p: Packet, v: Version = 4): Buffer {
  return mqttPacket.generate(p, { protocolVersion: v });
}

/** Parses frames with mqtt-packet; each frame must be exactly one whole packet. */
function decode(fs: readonly (Frame | Buffer)[], v: Version = 4): Packet[] {
  return fs.map((f) => {
    const data = Buffer.isBuffer(f) ? f : f.data;
    const parser = mqttPacket.parser({ protocolVersion: v });
    const got: Packet[] = [];
    parser.on('packet', (p: Packet) => got.push(p));
    parser.on('error', (e: Error) => assert.fail(`replayed frame ${data.toString('hex')} does not parse: ${e.message}`));
    parser.parse(data);
    assert.equal(got.length, 1, `one packet per frame: ${data.toString('hex')}`);
    return got[0]!;
  });
}

const CONNECT4: Packet = { cmd: 'connect', clientId: 'c1', protocolVersion: 4, clean: true, keepalive: 60, username: 'u', password: Buffer.from('tok') };
const CONNECT5: Packet = { ...CONNECT4, protocolVersion: 5, properties: { receiveMaximum: 10 } } as Packet;
const CONNACK4: Packet = { cmd: 'connack', returnCode: 0, sessionPresent: false };
const CONNACK5: Packet = { cmd: 'connack', reasonCode: 0, sessionPresent: false, properties: { receiveMaximum: 20, topicAliasMaximum: 10 } };

function sub(id: number, topics: string[], qos: 0 | 1 | 2 = 0): Packet {
  return { cmd: 'subscribe', messageId: id, subscriptions: topics.map((topic) => ({ topic, qos })) };
}
function suback(id: number, granted: number[]): Packet {
  return { cmd: 'suback', messageId: id, granted };
}
function unsub(id: number, topics: string[]): Packet {
  return { cmd: 'unsubscribe', messageId: id, unsubscriptions: topics };
}
function unsuback(id: number, granted?: number[]): Packet {
  return { cmd: 'unsuback', messageId: id, ...(granted ? { granted } : {}) } as Packet;
}
function pub(topic: string, qos: 0 | 1 | 2, id?: number, extra: Partial<Packet> = {}): Packet {
  return { cmd: 'publish', topic, payload: Buffer.from(`m-${topic}-${id ?? 0}`), qos, dup: false, retain: false, ...(id ? { messageId: id } : {}), ...extra } as Packet;
}

/** A session's state, fed packet by packet as the libraries frame them. */
class Session {
  readonly state: ProtocolState;
  constructor(
    readonly v: Version = 4,
    limits: StateLimits = LIMITS,
  ) {
    this.state = codec.createState!(limits);
  }
  client(...ps: Packet[]): this {
    for (const p of ps) for (const f of frames(p, this.v)) this.state.sent(f, true);
    return this;
  }
  server(...ps: Packet[]): this {
    for (const p of ps) for (const f of frames(p, this.v)) this.state.received(f, true);
    return this;
  }
  /** A connected session with its subscriptions answered. */
  static connected(v: Version = 4, limits: StateLimits = LIMITS): Session {
    return new Session(v, limits).client(v === 5 ? CONNECT5 : CONNECT4).server(v === 5 ? CONNACK5 : CONNACK4);
  }
  /** The new broker's answers, frame by frame: the verdicts. */
  answer(...ps: (Packet | Buffer)[]): ResumeVerdict[] {
    const out: ResumeVerdict[] = [];
    for (const p of ps) for (const f of Buffer.isBuffer(p) ? [p] : frames(p, this.v)) out.push(this.state.resumeAnswer(f, true));
    return out;
  }
}

/** Verdicts summarised: 'swallow' runs collapsed. */
function summary(vs: ResumeVerdict[]): string[] {
  const out: string[] = [];
  for (const v of vs) {
    const s = typeof v === 'string' ? v : `refused ${v.code}${v.forward ? ' forward' : ''}`;
    if (out.at(-1) !== s) out.push(s);
  }
  return out;
}

// ---- the codec --------------------------------------------------------------------------------

test('mqtt: name, subprotocols; classify: binary frames are other, text frames malformed, never a request', () => {
  assert.equal(codec.name, 'mqtt');
  assert.deepEqual(codec.subprotocols, ['mqtt', 'mqttv3.1']);
  assert.equal(typeof codec.createState, 'function');
  const ids: string[] = [];
  for (const p of [pub('t', 1, 7), pub('t', 2, 8), { cmd: 'puback', messageId: 7 } as Packet, CONNECT4, sub(3, ['t'])]) {
    assert.equal(codec.classify(whole(p), true, 'client', ids), 'other');
    for (const f of frames(p)) assert.equal(codec.classify(f, true, 'backend', ids), 'other');
  }
  assert.equal(codec.classify(Buffer.from('{"not":"mqtt"}'), false, 'client', ids), 'malformed');
  assert.deepEqual(ids, []);
});

describe('state kept current', () => {
  test('CONNECT then the SUBSCRIBEs in force, in order, byte for byte but for the ids', () => {
    const s = Session.connected()
      .client(sub(10, ['t/a'], 1))
      .server(suback(10, [1]))
      .client(sub(11, ['t/b']))
      .server(suback(11, [0]))
      .client(sub(12, ['t/c', 't/d'], 1))
      .server(suback(12, [1, 1]));
    assert.equal(s.state.unresumable(), null);
    const replay = s.state.replay();
    assert.deepEqual(replay[0]!.data, whole(CONNECT4), 'the CONNECT exactly as sent');
    const ps = decode(replay);
    assert.deepEqual(
      ps.map((p) => (p.cmd === 'subscribe' ? p.subscriptions.map((x) => `${x.topic}:${x.qos}`).join(' ') : p.cmd)),
      ['connect', 't/a:1', 't/b:0', 't/c:1 t/d:1'],
    );
    const ids = ps.slice(1).map((p) => p.messageId);
    assert.equal(new Set(ids).size, 3, 'distinct ids');
    assert.ok(replay.every((f) => f.isBinary));
  });

  test('UNSUBSCRIBE removes its filters once answered (per filter: a SUBSCRIBE of two keeps the other)', () => {
    const s = Session.connected().client(sub(1, ['t/a', 't/b'], 1)).server(suback(1, [1, 1]), pub('t/a', 0));
    s.client(sub(2, ['t/c'])).server(suback(2, [0]));
    s.client(unsub(3, ['t/a']));
    assert.match(s.state.unresumable() ?? '', /UNSUBSCRIBE is not answered/);
    s.server(unsuback(3));
    assert.equal(s.state.unresumable(), null);
    const ps = decode(s.state.replay());
    assert.deepEqual(
      ps.map((p) => (p.cmd === 'subscribe' ? p.subscriptions.map((x) => `${x.topic}:${x.qos}`).join(' ') : p.cmd)),
      ['connect', 't/b:1', 't/c:0'],
    );
    // Unsubscribing the rest drops the SUBSCRIBE entirely.
    const s2 = Session.connected().client(sub(1, ['t/a', 't/b'])).server(suback(1, [0, 0])).client(unsub(2, ['t/b', 't/a', 't/zz'])).server(unsuback(2));
    assert.deepEqual(decode(s2.state.replay()).map((p) => p.cmd), ['connect']);
  });

  test('a later SUBSCRIBE of the same filter replaces the earlier one; a refused filter is not kept', () => {
    const s = Session.connected()
      .client(sub(1, ['t/a', 't/x']))
      .server(suback(1, [0, 0]))
      .client(sub(2, ['t/a', 'forbidden/#'], 2))
      .server(suback(2, [2, 0x80]));
    const ps = decode(s.state.replay());
    assert.deepEqual(
      ps.map((p) => (p.cmd === 'subscribe' ? p.subscriptions.map((x) => `${x.topic}:${x.qos}`).join(' ') : p.cmd)),
      ['connect', 't/x:0', 't/a:2'],
    );
  });

  test('an UNSUBSCRIBE only removes what was subscribed before it', () => {
    // subscribe t/a, unsubscribe t/a, subscribe t/a again before the UNSUBACK: t/a stays.
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0])).client(unsub(2, ['t/a']), sub(3, ['t/a'], 1)).server(unsuback(2), suback(3, [1]));
    assert.deepEqual(
      decode(s.state.replay()).map((p) => (p.cmd === 'subscribe' ? p.subscriptions.map((x) => `${x.topic}:${x.qos}`).join(' ') : p.cmd)),
      ['connect', 't/a:1'],
    );
  });

  test('MQTT 5: properties kept in rebuilt SUBSCRIBEs; UNSUBACK codes >= 0x80 leave the filter', () => {
    const s5 = new Session(5).client(CONNECT5).server(CONNACK5);
    s5.client({ cmd: 'subscribe', messageId: 4, properties: { subscriptionIdentifier: 42 }, subscriptions: [{ topic: 't/a', qos: 1, nl: true, rap: false, rh: 0 }, { topic: 't/b', qos: 0 }] } as Packet);
    s5.server(suback(4, [1, 0]));
    s5.client(unsub(5, ['t/a', 't/b'])).server(unsuback(5, [0x00, 0x87]));
    const ps = decode(s5.state.replay(), 5);
    assert.equal(ps.length, 2);
    const subscribe = ps[1] as Packet & { cmd: 'subscribe' };
    assert.deepEqual(subscribe.subscriptions.map((x) => x.topic), ['t/b'], 't/a removed, t/b kept (its UNSUBSCRIBE was refused)');
    assert.equal(subscribe.properties?.subscriptionIdentifier, 42);
  });

  test('PINGREQ/PINGRESP and QoS 0 traffic are not state', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    for (let i = 0; i < 50; i++) s.client({ cmd: 'pingreq' }, pub('x', 0)).server({ cmd: 'pingresp' }, pub('t/a', 0));
    assert.equal(s.state.replay().length, 2);
  });
});

describe('in flight when the backend died', () => {
  test('QoS 1 and 2 PUBLISHes unanswered are replayed after the SUBSCRIBEs, in order, DUP set; PUBREL until PUBCOMP', () => {
    const s = Session.connected().client(sub(100, ['t/a'])).server(suback(100, [0]));
    s.client(pub('q/1', 1, 1), pub('q/2', 2, 2), pub('q/3', 1, 3), pub('q/4', 2, 4), pub('q/0', 0));
    s.server({ cmd: 'puback', messageId: 1 }, { cmd: 'pubrec', messageId: 4 });
    s.client({ cmd: 'pubrel', messageId: 4 });
    assert.equal(s.state.unresumable(), null);
    const ps = decode(s.state.replay());
    assert.deepEqual(
      ps.map((p) => `${p.cmd}${p.cmd === 'publish' ? `:${p.topic}:${p.qos}:${p.dup}` : ''}:${p.messageId ?? ''}`),
      ['connect:', `subscribe:${ps[1]!.messageId}`, 'publish:q/2:2:true:2', 'publish:q/3:1:true:3', 'pubrel:4'],
    );
    assert.ok(![2, 3, 4].includes(ps[1]!.messageId!), 'the replayed SUBSCRIBE takes an id not in flight');
    const original = whole(pub('q/2', 2, 2));
    const replayed = s.state.replay()[2]!.data;
    assert.equal(replayed[0], original[0]! | 0x08, 'DUP flag set');
    assert.deepEqual(replayed.subarray(1), original.subarray(1), 'otherwise byte for byte');
  });

  test('the answers to what was in flight pass to the client; the CONNACK and SUBACKs are swallowed', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0])).client(pub('q', 1, 5), { cmd: 'pingreq' });
    const ps = decode(s.state.replay());
    assert.deepEqual(ps.map((p) => p.cmd), ['connect', 'subscribe', 'publish', 'pingreq']);
    const subId = ps[1]!.messageId!;
    assert.deepEqual(summary(s.answer(CONNACK4)), ['swallow']);
    assert.deepEqual(summary(s.answer({ cmd: 'puback', messageId: 5 })), ['pass'], 'PUBACK before the SUBACK passes');
    assert.deepEqual(summary(s.answer(suback(subId, [0]))), ['swallow', 'resumed']);
    assert.deepEqual(summary(s.answer({ cmd: 'pingresp' })), ['pass'], 'after resume: not the resume\'s business');
    s.server({ cmd: 'pingresp' });
    assert.equal(s.state.unresumable(), null);
    assert.deepEqual(decode(s.state.replay()).map((p) => p.cmd), ['connect', 'subscribe'], 'answered: nothing left in flight');
  });

  test('replayed SUBSCRIBE ids skip every id in flight', () => {
    const s = Session.connected();
    for (let i = 1; i <= 5; i++) s.client(sub(1000 + i, [`t/${i}`])).server(suback(1000 + i, [0]));
    s.client(pub('q', 1, 1), pub('q', 1, 3), pub('q', 2, 4), pub('q', 1, 6));
    const ids = decode(s.state.replay()).filter((p) => p.cmd === 'subscribe').map((p) => p.messageId);
    assert.deepEqual(ids, [2, 5, 7, 8, 9]);
  });

  test('a PUBLISH larger than the bound is not copied: unresumable until it is answered', () => {
    const s = Session.connected(4, { maxFrames: 100, maxBytes: 400 });
    s.client({ ...pub('big', 1, 9), payload: Buffer.alloc(1000, 0x41) } as Packet);
    assert.match(s.state.unresumable() ?? '', /larger than codec.maxStateBytes/);
    s.server({ cmd: 'puback', messageId: 9 });
    assert.equal(s.state.unresumable(), null);
  });
});

describe('unresumable', () => {
  test('over maxFrames (CONNECT + two SUBSCRIBEs > 2) — and back under after an UNSUBSCRIBE', () => {
    const s = Session.connected(4, { maxFrames: 2, maxBytes: 1 << 20 }).client(sub(1, ['t/a'])).server(suback(1, [0]));
    assert.equal(s.state.unresumable(), null);
    s.client(sub(2, ['t/b'])).server(suback(2, [0]));
    assert.match(s.state.unresumable() ?? '', /3 frames of state \(codec.maxStateFrames 2\)/);
    s.client(unsub(3, ['t/b'])).server(unsuback(3));
    assert.equal(s.state.unresumable(), null);
  });

  test('over maxBytes: subscriptions stop being kept for good', () => {
    const s = Session.connected(4, { maxFrames: 100, maxBytes: 120 });
    s.client(sub(1, ['x'.repeat(60)])).server(suback(1, [0]));
    assert.equal(s.state.unresumable(), null);
    s.client(sub(2, ['y'.repeat(60)]));
    assert.match(s.state.unresumable() ?? '', /over codec.maxStateBytes/);
    s.server(suback(2, [0])).client(unsub(3, ['y'.repeat(60)])).server(unsuback(3));
    assert.match(s.state.unresumable() ?? '', /over codec.maxStateBytes/, 'sticky');
    assert.deepEqual(s.state.replay(), []);
    const big = new Session(4, { maxFrames: 100, maxBytes: 20 }).client(CONNECT4);
    assert.match(big.state.unresumable() ?? '', /CONNECT \(\d+ bytes\) is larger/);
  });

  test('while the CONNECT, a SUBSCRIBE or an UNSUBSCRIBE awaits its answer', () => {
    const s = new Session().client(CONNECT4);
    assert.match(s.state.unresumable() ?? '', /CONNECT is not answered/);
    s.server(CONNACK4).client(sub(1, ['t/a']));
    assert.match(s.state.unresumable() ?? '', /SUBSCRIBE is not answered/);
    s.server(suback(1, [0]));
    assert.equal(s.state.unresumable(), null);
    assert.equal(new Session().state.unresumable(), null, 'nothing sent yet: nothing to resume');
    assert.deepEqual(new Session().state.replay(), []);
  });

  test('cut off mid-packet, in either direction', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    const up = frames(pub('q', 1, 2));
    s.state.sent(up[0]!, true);
    assert.match(s.state.unresumable() ?? '', /client was cut off mid-packet/);
    for (const f of up.slice(1)) s.state.sent(f, true);
    assert.equal(s.state.unresumable(), null);
    const down = frames(pub('t/a', 0));
    for (const f of down.slice(0, 3)) s.state.received(f, true);
    assert.match(s.state.unresumable() ?? '', /client was sent part of a packet/);
    for (const f of down.slice(3)) s.state.received(f, true);
    assert.equal(s.state.unresumable(), null);
  });

  test('a broker packet unfinished: midPacket() until its last frame; dropped (its broker lost), the stream starts afresh and the session is resumable', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    const down = frames(pub('t/a', 0));
    assert.ok(down.length > 3, 'aedes-style framing: a frame per field');
    assert.equal(s.state.midPacket!(), false);
    for (const f of down.slice(0, 3)) s.state.received(f, true);
    assert.equal(s.state.midPacket!(), true, 'the session holds these frames from the client');
    for (const f of down.slice(3)) s.state.received(f, true);
    assert.equal(s.state.midPacket!(), false, 'whole: the held frames go');
    for (const f of down.slice(0, 2)) s.state.received(f, true);
    s.state.packetDropped!();
    assert.equal(s.state.midPacket!(), false);
    assert.equal(s.state.unresumable(), null, 'the client never got any of it');
    s.server(pub('t/b', 0));
    assert.equal(s.state.unresumable(), null, 'the next packet is read from its first byte');
    assert.equal(decode(s.state.replay()).map((p) => p.cmd).join(), 'connect,subscribe');
    assert.equal(s.state.midPacket!(), false, 'while the new broker answers the replay, resumeAnswer() judges its frames');
  });

  test('a frame that finishes one broker packet and starts another is not held: the client must get the first (a SUBACK, a PUBACK)', () => {
    const s = Session.connected().client(sub(1, ['t/a']));
    const ack = whole(suback(1, [0]));
    const next = whole(pub('t/a', 0));
    s.state.received(Buffer.concat([ack, next.subarray(0, 4)]), true);
    assert.equal(s.state.midPacket!(), false, 'the SUBACK goes to the client, with the start of the PUBLISH');
    s.state.received(next.subarray(4, 6), true);
    assert.equal(s.state.midPacket!(), false, 'the client has part of this packet already: nothing to hold');
    assert.match(s.state.unresumable() ?? '', /client was sent part of a packet/);
    s.state.received(next.subarray(6), true);
    assert.equal(s.state.unresumable(), null);
  });

  test('MQTT 5: a Topic Alias used by the client, a client id assigned by the broker, enhanced authentication', () => {
    const alias = new Session(5).client(CONNECT5).server(CONNACK5).client(pub('t/a', 0, undefined, { properties: { topicAlias: 1 } } as Partial<Packet>));
    assert.match(alias.state.unresumable() ?? '', /Topic Aliases/);
    const aliasQos1 = new Session(5).client(CONNECT5).server(CONNACK5).client(pub('t/a', 1, 3, { properties: { topicAlias: 2, userProperties: { a: 'b' } } } as Partial<Packet>));
    assert.match(aliasQos1.state.unresumable() ?? '', /Topic Aliases/);
    const noAlias = new Session(5).client(CONNECT5).server(CONNACK5).client(pub('t/a', 0, undefined, { properties: { contentType: 'x', userProperties: { a: 'b' } } } as Partial<Packet>));
    assert.equal(noAlias.state.unresumable(), null);
    const assigned = new Session(5).client({ ...CONNECT5, clientId: '' } as Packet).server({ ...CONNACK5, properties: { assignedClientIdentifier: 'auto-1' } } as Packet);
    assert.match(assigned.state.unresumable() ?? '', /assigned the client identifier/);
    const auth = new Session(5).client({ ...CONNECT5, properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: Buffer.from('x') } } as Packet);
    assert.match(auth.state.unresumable() ?? '', /enhanced authentication/);
  });

  test('resumed 3 times within 30 s: not again (a session taken over by a client with the same id, again and again)', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    for (let i = 0; i < 3; i++) {
      assert.equal(s.state.unresumable(), null, `resume ${i + 1}`);
      const id = decode(s.state.replay())[1]!.messageId!;
      assert.deepEqual(summary(s.answer(CONNACK4, suback(id, [0]))), ['swallow', 'resumed']);
    }
    assert.match(s.state.unresumable() ?? '', /resumed 3 times within 30 s/);
  });

  test('a refused CONNECT, a DISCONNECT either way, a stream that is not MQTT', () => {
    assert.match(new Session().client(CONNECT4).server({ cmd: 'connack', returnCode: 5, sessionPresent: false }).state.unresumable() ?? '', /refused \(0x05\)/);
    assert.match(Session.connected().client({ cmd: 'disconnect' }).state.unresumable() ?? '', /client sent DISCONNECT/);
    assert.match(Session.connected(5).server({ cmd: 'disconnect', reasonCode: 0x8b } as Packet).state.unresumable() ?? '', /backend sent DISCONNECT/);
    const s = new Session();
    s.state.sent(Buffer.from('GET / HTTP/1.1\r\n'), true);
    assert.match(s.state.unresumable() ?? '', /could not be read/);
    const t = Session.connected();
    t.state.sent(Buffer.from('text frames are not MQTT'), false);
    assert.equal(t.state.unresumable(), null, 'text frames are ignored');
  });
});

describe('answers to the replay', () => {
  test('CONNACK and SUBACKs swallowed (frame by frame as aedes writes them), resumed on the last; broker messages in between pass', () => {
    const s = Session.connected().client(sub(1, ['t/a']), sub(2, ['t/b'])).server(suback(1, [0]), suback(2, [1]));
    const [, s1, s2] = decode(s.state.replay());
    const v = s.answer(CONNACK4, suback(s1!.messageId!, [0]), pub('t/a', 0), suback(s2!.messageId!, [1]));
    assert.deepEqual(summary(v), ['swallow', 'pass', 'swallow', 'resumed']);
    assert.equal(v.at(-1), 'resumed');
    assert.equal(v.filter((x) => x === 'resumed').length, 1);
  });

  test('without subscriptions: resumed at the CONNACK; whole packets per frame work the same', () => {
    const s = Session.connected();
    assert.equal(s.state.replay().length, 1);
    assert.deepEqual(s.answer(whole(CONNACK4)), ['resumed']);
    const t = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    const id = decode(t.state.replay())[1]!.messageId!;
    assert.deepEqual(t.answer(whole(CONNACK4), whole(suback(id, [0]))), ['swallow', 'resumed']);
  });

  test('the state goes on from the new broker\'s stream after the resume', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    const id = decode(s.state.replay())[1]!.messageId!;
    s.answer(CONNACK4, suback(id, [0]));
    s.client(sub(2, ['t/b'])).server(suback(2, [0])).client(pub('q', 1, 3));
    assert.equal(s.state.unresumable(), null);
    assert.deepEqual(decode(s.state.replay()).map((p) => p.cmd), ['connect', 'subscribe', 'subscribe', 'publish']);
  });

  test('refusals: CONNACK with an error code (3.1.1 and 5), not forwarded, 1000', () => {
    for (const [v, connack, code] of [
      [4, { cmd: 'connack', returnCode: 5, sessionPresent: false }, /0x05 not authorized/],
      [4, { cmd: 'connack', returnCode: 4, sessionPresent: false }, /0x04 bad user name or password/],
      [5, { cmd: 'connack', reasonCode: 0x87, sessionPresent: false }, /0x87 not authorized/],
      [5, { cmd: 'connack', reasonCode: 0x86, sessionPresent: false }, /0x86 bad user name or password/],
    ] as [Version, Packet, RegExp][]) {
      const s = Session.connected(v).client(sub(1, ['t/a'])).server(suback(1, [0]));
      s.state.replay();
      const verdicts = s.answer(connack);
      const last = verdicts.at(-1)!;
      assert.ok(typeof last === 'object' && last.refused, `v${v}: refused`);
      assert.equal(last.forward, false);
      assert.equal(last.code, 1000);
      assert.match(last.reason, code);
      assert.ok(verdicts.slice(0, -1).every((x) => x === 'swallow'));
    }
  });

  test('refusals: MQTT 5 CONNACK on other terms, subscriptions granted differently → 1012; DISCONNECT forwarded', () => {
    const s = Session.connected(5).client(sub(1, ['t/a'], 1)).server(suback(1, [1]));
    s.state.replay();
    const other = s.answer({ ...CONNACK5, properties: { receiveMaximum: 5, topicAliasMaximum: 10 } } as Packet).at(-1)!;
    assert.ok(typeof other === 'object' && other.code === 1012 && !other.forward, JSON.stringify(other));
    // Reason String and User Properties do not count.
    const t = Session.connected(5).client(sub(1, ['t/a'], 1)).server(suback(1, [1]));
    const id = decode(t.state.replay(), 5)[1]!.messageId!;
    assert.deepEqual(summary(t.answer({ ...CONNACK5, properties: { topicAliasMaximum: 10, receiveMaximum: 20, reasonString: 'hi', userProperties: { node: 'b' } } } as Packet)), ['swallow']);
    const downgraded = t.answer(suback(id, [0])).at(-1)!;
    assert.ok(typeof downgraded === 'object' && downgraded.code === 1012, JSON.stringify(downgraded));
    assert.match(downgraded.reason, /granted the subscriptions differently \(0x00, was 0x01\)/);
    const d = Session.connected(5).client(sub(1, ['t/a'], 1)).server(suback(1, [1]));
    d.state.replay();
    assert.deepEqual(summary(d.answer(CONNACK5)), ['swallow'], 'still waiting for the SUBACK');
    const bye = d.answer(whole({ cmd: 'disconnect', reasonCode: 0x9c } as Packet, 5)).at(-1)!;
    assert.ok(typeof bye === 'object' && bye.forward && bye.code === 1000, JSON.stringify(bye));
    assert.match(bye.reason, /DISCONNECT \(0x9c use another server\)/);
    const refusedFilter = Session.connected(4).client(sub(1, ['t/a'])).server(suback(1, [0]));
    const rid = decode(refusedFilter.state.replay())[1]!.messageId!;
    refusedFilter.answer(CONNACK4);
    const r = refusedFilter.answer(whole(suback(rid, [0x80]))).at(-1)!;
    assert.ok(typeof r === 'object' && r.code === 1012);
  });

  test('a packet before the CONNACK, a malformed one, a frame mixing swallowed and passed packets', () => {
    const s = Session.connected();
    s.state.replay();
    const early = s.state.resumeAnswer(whole(pub('t/a', 0)), true);
    assert.ok(typeof early === 'object' && early.code === 1002, JSON.stringify(early));
    const m = Session.connected();
    m.state.replay();
    const bad = m.state.resumeAnswer(Buffer.from([0x00, 0x00]), true);
    assert.ok(typeof bad === 'object' && bad.code === 1002, JSON.stringify(bad));
    const x = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0]));
    x.state.replay();
    const mixed = x.state.resumeAnswer(Buffer.concat([whole(CONNACK4), whole(pub('t/a', 0))]), true);
    assert.ok(typeof mixed === 'object' && mixed.code === 1012 && !mixed.forward, JSON.stringify(mixed));
  });

  test('frames of the leg being left that arrive during the resume (a migration) still count', () => {
    const s = Session.connected().client(sub(1, ['t/a'])).server(suback(1, [0])).client(pub('q', 1, 7));
    const ps = decode(s.state.replay());
    assert.equal(ps.length, 3);
    for (const f of frames({ cmd: 'puback', messageId: 7 })) s.state.received(f, true); // from the old leg
    const v = s.answer(CONNACK4);
    // A passed frame is reported to received() too: it must not count twice.
    const pass = whole(pub('t/a', 0));
    assert.equal(s.state.resumeAnswer(pass, true), 'pass');
    s.state.received(pass, true);
    s.answer(suback(ps[1]!.messageId!, [0]));
    assert.deepEqual(summary(v), ['swallow']);
    assert.deepEqual(decode(s.state.replay()).map((p) => p.cmd), ['connect', 'subscribe'], 'the PUBLISH answered by the old leg is not in flight any more');
  });
});

describe('the byte stream, however framed', () => {
  /** A session's traffic: [from client?, packet]. */
  const traffic: [boolean, Packet][] = [
    [true, CONNECT4],
    [false, CONNACK4],
    [true, sub(1, ['t/a', 't/b'], 1)],
    [false, suback(1, [1, 1])],
    [true, sub(2, ['t/c'])],
    [false, pub('t/a', 1, 40)],
    [false, suback(2, [0])],
    [true, { cmd: 'puback', messageId: 40 }],
    [true, unsub(3, ['t/b'])],
    [true, pub('q/1', 1, 4)],
    [false, unsuback(3)],
    [true, pub('q/2', 2, 5)],
    [true, pub('q/3', 1, 6)],
    [false, { cmd: 'puback', messageId: 4 }],
    [false, { cmd: 'pubrec', messageId: 5 }],
    [true, { cmd: 'pubrel', messageId: 5 }],
    [true, { cmd: 'pingreq' }],
    [false, { cmd: 'pingresp' }],
  ];
  const reference = (() => {
    const s = new Session();
    for (const [up, p] of traffic) (up ? s.client(p) : s.server(p));
    return s.state.replay().map((f) => f.data.toString('hex'));
  })();

  test('reference: CONNECT, the SUBSCRIBEs left, what is in flight', () => {
    assert.deepEqual(
      decode(reference.map((h) => Buffer.from(h, 'hex'))).map((p) => `${p.cmd}${p.cmd === 'publish' ? `:${p.topic}` : ''}`),
      ['connect', 'subscribe', 'subscribe', 'publish:q/3', 'pubrel'],
    );
  });

  test('one byte per frame, whole packets, several packets per frame, random cuts: the same replay', () => {
    const rand = mulberry32(7);
    const upStream = Buffer.concat(traffic.filter(([up]) => up).map(([, p]) => whole(p)));
    for (const mode of ['bytes', 'random'] as const) {
      for (let round = 0; round < (mode === 'bytes' ? 1 : 200); round++) {
        const s = new Session();
        // Interleave by packet (answers must follow what they answer), each packet cut its own way.
        for (const [up, p] of traffic) {
          const b = whole(p);
          let i = 0;
          while (i < b.length) {
            const n = mode === 'bytes' ? 1 : 1 + Math.floor(rand() * 6);
            const part = b.subarray(i, i + n);
            if (up) s.state.sent(part, true);
            else s.state.received(part, true);
            i += n;
          }
        }
        assert.deepEqual(s.state.replay().map((f) => f.data.toString('hex')), reference, `${mode} round ${round}`);
      }
    }
    // Client packets coalesced into one frame per answer boundary.
    const s = new Session();
    s.state.sent(upStream.subarray(0, whole(CONNECT4).length), true);
    s.server(CONNACK4);
    assert.equal(s.state.unresumable(), null);
  });
});

test('fuzz: random, truncated and mutated frames in both directions, replays and answers — never throws, never an internal error, replays are whole packets', (t) => {
  const rand = mulberry32(20240611);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  /** Per version: the opening packets and a pool of later ones, each [from client?, packet]. */
  const traffic = (v: Version): { open: [boolean, Packet][]; pool: [boolean, Packet][] } => ({
    open: [
      [true, v === 5 ? CONNECT5 : CONNECT4],
      [false, v === 5 ? CONNACK5 : CONNACK4],
    ],
    pool: [
      [true, sub(1, ['t/a', 't/b'], 1)], [false, suback(1, [0, 0x80])], [true, sub(2, ['t/c'])], [false, suback(2, [0])],
      [true, unsub(3, ['t/a'])], [false, unsuback(3, v === 5 ? [0] : undefined)], [true, pub('q', 1, 4)], [true, pub('q', 2, 5)],
      [false, { cmd: 'puback', messageId: 4 }], [false, { cmd: 'pubrec', messageId: 5 }], [true, { cmd: 'pubrel', messageId: 5 }],
      [false, { cmd: 'pubcomp', messageId: 5 }], [true, { cmd: 'pingreq' }], [false, { cmd: 'pingresp' }], [false, pub('t/b', 1, 9)],
      [true, { cmd: 'puback', messageId: 9 }], [true, pub('big', 1, 6, { payload: Buffer.alloc(300, 1) } as Partial<Packet>)],
      [true, v === 5 ? pub('t/a', 0, undefined, { properties: { topicAlias: 1 } } as Partial<Packet>) : pub('t', 0)],
      [false, v === 5 ? ({ cmd: 'disconnect', reasonCode: 0x8b } as Packet) : pub('t', 0)], [true, { cmd: 'disconnect' }],
      [false, v === 5 ? CONNACK5 : CONNACK4], [true, v === 5 ? CONNECT5 : CONNECT4],
    ],
  });
  const mutate = (b: Buffer): Buffer => {
    const c = Buffer.from(b);
    const r = rand();
    if (r < 0.3) return c.subarray(0, Math.floor(rand() * c.length));
    if (r < 0.6 && c.length > 0) {
      c[Math.floor(rand() * c.length)] = Math.floor(rand() * 256);
      return c;
    }
    if (r < 0.8) return Buffer.from(Array.from({ length: Math.floor(rand() * 12) }, () => Math.floor(rand() * 256)));
    return Buffer.concat([c, c.subarray(0, Math.floor(rand() * c.length))]);
  };
  /** The frames of one packet: as written, whole, or cut at random; sometimes damaged. */
  const framesOf = (p: Packet, v: Version): Buffer[] => {
    const w = whole(p, v);
    const r = rand();
    let fs = r < 0.4 ? frames(p, v) : r < 0.7 ? [w] : [];
    if (fs.length === 0) for (let i = 0; i < w.length; ) fs.push(w.subarray(i, (i += 1 + Math.floor(rand() * 5))));
    if (rand() < 0.08) fs = fs.map((f) => (rand() < 0.3 ? mutate(f) : f));
    if (rand() < 0.04) fs = fs.slice(0, Math.floor(rand() * fs.length)); // cut off
    return fs;
  };
  const onePacket = (f: Buffer) => {
    let p = 1;
    let len = 0;
    let mul = 1;
    for (; p < f.length && p <= 4; p++) {
      len += (f[p]! & 0x7f) * mul;
      mul *= 128;
      if ((f[p]! & 0x80) === 0) break;
    }
    assert.equal(f.length, p + 1 + len, `replayed frame ${f.toString('hex')} is one packet`);
  };
  let replays = 0;
  let replayed = 0;
  let resumed = 0;
  let refused = 0;
  for (let round = 0; round < 3000; round++) {
    const v = pick([4, 5] as const);
    const { open, pool } = traffic(v);
    const s = codec.createState!({ maxFrames: 1 + Math.floor(rand() * 12), maxBytes: 40 + Math.floor(rand() * 600) });
    const feed = (up: boolean, fs: Buffer[]) => {
      for (const f of fs) {
        const isBinary = rand() > 0.02;
        if (up) s.sent(f, isBinary);
        else s.received(f, isBinary);
      }
    };
    if (rand() < 0.9) for (const [up, p] of open) feed(up, framesOf(p, v));
    const steps = 5 + Math.floor(rand() * 40);
    for (let i = 0; i < steps; i++) {
      const r = rand();
      if (r < 0.08) {
        s.unresumable();
        const out = s.replay();
        replays++;
        if (out.length > 0) replayed++;
        for (const f of out) {
          assert.ok(f.isBinary);
          onePacket(f.data);
        }
        if (out.length === 0) continue;
        // The new broker answers: rightly (CONNACK, a SUBACK granting what the pool granted), or not.
        const answers: Packet[] = [v === 5 ? CONNACK5 : CONNACK4];
        for (const f of out) {
          const parser = mqttPacket.parser({ protocolVersion: v });
          parser.on('packet', (p: Packet) => {
            if (p.cmd === 'subscribe') answers.push(suback(p.messageId!, p.subscriptions.map(() => 0)));
          });
          parser.on('error', () => {});
          parser.parse(f.data);
        }
        if (rand() < 0.5) answers.splice(1 + Math.floor(rand() * answers.length), 0, pick(pool)[1]);
        answering: for (const p of answers) {
          for (const f of framesOf(p, v)) {
            const verdict = s.resumeAnswer(f, rand() > 0.02);
            assert.ok(verdict === 'swallow' || verdict === 'pass' || verdict === 'resumed' || (typeof verdict === 'object' && verdict.refused === true));
            if (verdict === 'pass') s.received(f, true);
            if (verdict === 'resumed') resumed++;
            if (typeof verdict === 'object') {
              refused++;
              break answering;
            }
          }
        }
      } else {
        const [up, p] = pick(pool);
        feed(up, framesOf(p, v));
      }
      const reason = s.unresumable();
      assert.ok(reason === null || !reason.includes('internal'), reason ?? '');
    }
  }
  const tally = `${replays} replays (${replayed} with frames), ${resumed} resumed, ${refused} refused`;
  t.diagnostic(tally);
  assert.ok(replayed > 500 && resumed > 100 && refused > 50, tally);
});

// ---- end to end: mqtt.js and real brokers through a relay that fails over like the sidecar ------

interface Relay {
  url: string;
  /** The backend dies (its leg is cut) and the session moves to `to`. */
  failover(to: string): Promise<void>;
  verdicts: string[];
  closed: { code: number; reason: string } | null;
  close(): Promise<void>;
}

/** One client at a time, relayed to a backend; on failover: unresumable? → 1012; else replay, verdicts, held frames. */
async function startRelay(first: string, limits: StateLimits = LIMITS): Promise<Relay> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (ps) => [...ps][0] ?? false });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const relay: Relay = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    verdicts: [],
    closed: null,
    failover: async () => {},
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
  wss.on('connection', (client: WebSocket, req: IncomingMessage) => {
    const state = codec.createState!(limits);
    const protocols = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter(Boolean);
    let leg: WebSocket | null = null;
    let resuming = false;
    const held: [Buffer, boolean][] = [];
    const flush = () => {
      for (const [d, b] of held.splice(0)) {
        leg!.send(d, { binary: b });
        state.sent(d, b);
      }
    };
    const dial = (url: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        const l = new WebSocket(url, protocols);
        l.once('open', () => resolve(l));
        l.once('error', reject);
        l.on('message', (d: Buffer, b: boolean) => {
          if (l !== leg) return;
          if (resuming) {
            const v = state.resumeAnswer(d, b);
            relay.verdicts.push(typeof v === 'string' ? v : `refused ${v.code} ${v.reason}`);
            if (v === 'swallow') return;
            if (v === 'resumed') {
              resuming = false;
              flush();
              return;
            }
            if (typeof v === 'object') {
              if (v.forward) client.send(d, { binary: b });
              client.close(v.code, v.reason.slice(0, 120));
              return;
            }
          }
          client.send(d, { binary: b });
          state.received(d, b);
        });
      });
    client.on('message', (d: Buffer, b: boolean) => {
      if (leg && !resuming && leg.readyState === WebSocket.OPEN) {
        leg.send(d, { binary: b });
        state.sent(d, b);
      } else held.push([d, b]);
    });
    client.on('close', (code, reason) => {
      relay.closed = { code, reason: reason.toString() };
      leg?.terminate();
    });
    void dial(first).then((l) => {
      leg = l;
      flush();
    });
    relay.failover = async (to: string) => {
      const old = leg!;
      leg = null;
      old.terminate();
      const why = state.unresumable();
      if (why !== null) {
        client.close(1012, why.slice(0, 120));
        return;
      }
      const l = await dial(to);
      leg = l;
      const replay = state.replay();
      for (const f of replay) l.send(f.data, { binary: f.isBinary });
      resuming = replay.length > 0;
      if (!resuming) flush();
    };
  });
  return relay;
}

describe('end to end: mqtt.js through a failing-over relay, aedes and the MQTT 5 fixture broker behind', () => {
  let a: Broker;
  let b: Broker;
  let other: Broker;
  const reports: Record<string, Record<string, unknown>[]> = { a: [], b: [], other: [] };
  before(async () => {
    a = await startMqttBroker({ id: 'a', token: 'tok', report: (l) => reports.a!.push(l) });
    b = await startMqttBroker({ id: 'b', token: 'tok', report: (l) => reports.b!.push(l) });
    other = await startMqttBroker({ id: 'other', token: 'different', report: (l) => reports.other!.push(l) });
  });
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });
  after(async () => {
    await Promise.all([a.close(), b.close(), other.close()]);
  });

  for (const protocolVersion of [3, 4, 5] as const) {
    const name = { 3: '3.1 (aedes, subprotocol mqttv3.1)', 4: '3.1.1 (aedes)', 5: '5 (fixture broker)' }[protocolVersion];
    test(`MQTT ${name}: the same connection carries on, subscriptions resumed, a QoS 1 publish answered; no second connect`, async () => {
      const relay = await startRelay(`ws://127.0.0.1:${a.port}`);
      const client = mqtt.connect(relay.url, { username: 'u', password: 'tok', reconnectPeriod: 0, protocolVersion, ...(protocolVersion === 3 ? { protocolId: 'MQIsdp' as const } : {}) });
      cleanups.push(async () => {
        client.end(true);
        await relay.close();
      });
      const events: string[] = [];
      for (const e of ['connect', 'close', 'offline', 'error', 'disconnect'] as const) client.on(e, (x?: unknown) => events.push(`${e}${e === 'error' ? ` ${(x as Error).message}` : ''}`));
      const got: { from: string; topic: string }[] = [];
      client.on('message', (topic, payload) => got.push({ topic, from: (JSON.parse(String(payload)) as { from: string }).from }));
      await waitFor(() => events.includes('connect'), 'connected');
      await client.subscribeAsync('t/a', { qos: 1 });
      await client.subscribeAsync('t/b');
      await waitFor(() => got.filter((m) => m.from === 'a').length >= 6, 'messages from a');
      const before = reports.b!.length;
      await relay.failover(`ws://127.0.0.1:${b.port}`);
      const cut = got.length;
      await waitFor(() => got.slice(cut).filter((m) => m.from === 'b').length >= 4, 'messages from b', 1000);
      assert.deepEqual(new Set(got.slice(cut).filter((m) => m.from === 'b').map((m) => m.topic)), new Set(['t/a', 't/b']));
      const ack = await client.publishAsync('x/y', 'hello', { qos: 1 });
      assert.ok(ack === undefined || typeof ack === 'object');
      assert.deepEqual(events, ['connect'], 'one connect, nothing else');
      assert.equal(relay.closed, null);
      const toB = reports.b!.slice(before).filter((l) => l.event === 'packet');
      assert.deepEqual(toB.map((l) => l.cmd), ['connect', 'subscribe', 'subscribe', 'publish']);
      assert.deepEqual(toB.slice(1, 3).map((l) => l.topics), [['t/a'], ['t/b']]);
      assert.ok(relay.verdicts.includes('resumed') && !relay.verdicts.some((v) => v.startsWith('refused')), relay.verdicts.join(' '));
    });
  }

  test('MQTT 3.1.1: the new broker refuses the credentials — the client is closed, not left connected', async () => {
    const relay = await startRelay(`ws://127.0.0.1:${a.port}`);
    const client = mqtt.connect(relay.url, { username: 'u', password: 'tok', reconnectPeriod: 0 });
    cleanups.push(async () => {
      client.end(true);
      await relay.close();
    });
    const events: string[] = [];
    for (const e of ['connect', 'close', 'error'] as const) client.on(e, () => events.push(e));
    await waitFor(() => events.includes('connect'), 'connected');
    await client.subscribeAsync('t/a');
    await relay.failover(`ws://127.0.0.1:${other.port}`);
    await waitFor(() => relay.closed !== null, 'client closed');
    assert.equal(relay.closed!.code, 1000);
    assert.match(relay.closed!.reason, /refused the CONNECT \(0x05 not authorized\)/);
    await waitFor(() => events.includes('close'), 'mqtt.js saw the close');
    assert.deepEqual(events.filter((e) => e === 'connect'), ['connect']);
  });
});
