// MQTT codec (MQTT 3.1, 3.1.1 and 5.0 over WebSocket: subprotocol "mqtt", or "mqttv3.1").
//
// MQTT over WebSocket is a byte stream carried in binary frames: "a single WebSocket data frame can
// contain multiple or partial MQTT Control Packets; the receiver MUST NOT assume that packets are
// aligned on frame boundaries" [MQTT-6.0.0-2]. Real peers do split them: mqtt.js in Node and aedes
// (both write through ws.createWebSocketStream) send every field of a packet as its own frame
// (a QoS 1 PUBLISH is 7 frames, a CONNECT 13). So the state keeper runs a small incremental parser
// per direction (fixed header, remaining-length varint, then only the body bytes it needs) and
// classify(), which sees one frame without context, cannot tell a packet from a fragment.
//
// What is kept per session, and replayed to a new backend in this order:
//   1. the CONNECT, byte for byte (credentials, client id, keep-alive, clean session/start, will);
//   2. the SUBSCRIBEs still in force, in their order: a SUBSCRIBE is kept once sent and settled by
//      its SUBACK (filters the broker refused are dropped, and a later SUBSCRIBE of the same filter
//      replaces the earlier one [MQTT-3.8.4-3]); an UNSUBSCRIBE removes its filters once its
//      UNSUBACK arrives. A SUBSCRIBE that lost filters is rebuilt with the rest. Replayed copies
//      carry packet identifiers chosen by the sidecar, none in use by the client (the client's ids
//      in flight are known: its unanswered QoS>0 PUBLISHes and PUBRELs);
//   3. the client's QoS 1/2 PUBLISHes and PUBRELs the old broker never answered (no PUBACK, PUBREC
//      or PUBCOMP reached the client), in the order they were sent, PUBLISHes with the DUP flag set
//      [MQTT-3.3.1-1] — what a client does itself when it resumes a session [MQTT-4.4.0-1];
//   4. a PINGREQ if the client's last one was not answered (its keep-alive would otherwise time out).
//
// The new broker's answers: its CONNACK and the SUBACKs of (2) are swallowed (the client had them
// from the old broker); 'resumed' when the last of them has arrived. The answers to (3) and (4) are
// the client's: they pass (the client never had them: the state knows what was delivered).
//
// Refusals (the session ends, as a fresh connect would have):
// - CONNACK with an error code (3.1.1: 1-5; 5.0: >= 0x80, e.g. 0x86 bad credentials, 0x87 not
//   authorized): not forwarded — a client already has its CONNACK, and a second one is a protocol
//   violation (mqtt.js 5 reports "duplicate CONNACK", not the refusal) — then the client is closed
//   with 1000: in MQTT a refusing broker ends the network connection [MQTT-3.2.2-5], an orderly
//   close; the client's library reconnects by its own policy and meets the refusal itself;
// - MQTT 5 DISCONNECT from the new broker: forwarded (the client learns the broker's reason code),
//   then 1000;
// - the new broker grants a replayed subscription differently (a refused filter, another QoS), or
//   (MQTT 5) its CONNACK properties differ from the original's (Receive Maximum, Topic Alias
//   Maximum, Server Keep Alive, Maximum QoS, Maximum Packet Size, …; Reason String and User
//   Properties aside): the client would carry on under terms it does not know: 1012 (not
//   forwarded), so it reconnects and negotiates them itself;
// - a packet before the CONNACK, or a malformed one: 1002; a frame mixing answers to swallow with
//   packets to pass (a verdict is per frame): 1012.
//
// unresumable() (the session gets 1012 at its next backend change) when:
// - the kept state is over its bounds (CONNECT + SUBSCRIBEs over maxBytes stop being kept at all;
//   frames over maxFrames, or an in-flight PUBLISH that did not fit in maxBytes, until that passes);
// - either direction was cut mid-packet (the new stream would start with the tail of a packet).
//   Towards the client that happens only past codec.maxStateBytes: until then the session holds a
//   broker's frames that end inside a packet (midPacket()) until the packet is whole, and drops them
//   if the broker is lost first (packetDropped()): a QoS 0 message lost, the session resumable;
// - the CONNECT, a SUBSCRIBE or an UNSUBSCRIBE awaits its answer (its answer could not be told
//   from the replay's by the frame's first bytes, which is when a verdict is due);
// - MQTT 5: the client used a Topic Alias (aliases live only as long as one network connection
//   [MQTT-3.3.2-7]: the new broker would reject the client's next aliased PUBLISH); the broker
//   assigned the client identifier (a new broker assigns another); enhanced authentication (an
//   AUTH exchange cannot be replayed);
// - the stream could not be read (malformed, or not starting with CONNECT), the CONNECT was refused,
//   or either side sent DISCONNECT (MQTT 5: 0x8E session taken over among others);
// - it was resumed 3 times within 30 s: an MQTT 3.1.1 broker ends a connection taken over by
//   another with the same client id without a word, like a crash; resuming again and again would
//   have the two connections evict each other for ever.
//
// classify(): binary frames are 'other' and text frames 'malformed' (MQTT must be in binary frames
// [MQTT-6.0.0-1]). It never reports requests: a frame may be a fragment of a PUBLISH payload that
// happens to look like a whole QoS 1 PUBLISH, and the RequestTracker would then replay that
// fragment into the new stream. In-flight QoS 1/2 traffic is replayed by the state instead (3),
// which parses the stream and knows exactly what each side has seen.
//
// Not resumed: QoS 1/2 messages the old broker was delivering to the client (its PUBLISH or PUBREL
// unanswered), messages queued for a persistent session (clean session 0 / clean start 0) on a broker
// without shared persistence, retained-message state. A QoS 2 PUBLISH replayed may be delivered
// twice (the old broker may have forwarded it before dying): at least once across a failover.

import type { Frame, MessageKind, ProtocolState, ResumeRefusal, ResumeVerdict, Sender, SessionCodec, StateLimits } from './codec.js';

// ---- packet types -----------------------------------------------------------------------------

const CONNECT = 1;
const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const PUBREC = 5;
const PUBREL = 6;
const PUBCOMP = 7;
const SUBSCRIBE = 8;
const SUBACK = 9;
const UNSUBSCRIBE = 10;
const UNSUBACK = 11;
const PINGREQ = 12;
const PINGRESP = 13;
const DISCONNECT = 14;
const AUTH = 15;

const DUP_FLAG = 0x08;

/** MQTT 5 properties read here. */
const PROP_ASSIGNED_CLIENT_ID = 0x12;
const PROP_AUTH_METHOD = 0x15;
const PROP_REASON_STRING = 0x1f;
const PROP_TOPIC_ALIAS = 0x23;
const PROP_USER_PROPERTY = 0x26;

/**
 * A session resumed this many times within the window is not resumed again. An MQTT 3.1.1 broker
 * ends a connection whose client id connects again elsewhere ("session takeover" [MQTT-3.1.4-2])
 * without saying so (aedes cuts it: 1006, like a crash); resuming would take the session back and
 * the two connections would evict each other for ever. MQTT 5 says so (DISCONNECT 0x8E): never resumed.
 */
const MAX_RESUMES_IN_WINDOW = 3;
const RESUME_WINDOW_MS = 30_000;

/** Longest PUBLISH header (topic, id, properties) read to look for a Topic Alias, in bytes. */
const MAX_PUBLISH_HEADER = 128 * 1024;
/** Longest CONNACK / SUBACK / UNSUBACK read (they are small; a SUBACK has one byte per filter). */
const MAX_ACK = 256 * 1024;

/** Byte size of each MQTT 5 property's value by id (-1 UTF-8 string / binary, -2 string pair, -3 varint). */
const PROPERTY_SIZE: Record<number, number> = {
  0x01: 1, 0x02: 4, 0x03: -1, 0x08: -1, 0x09: -1, 0x0b: -3, 0x11: 4, 0x12: -1, 0x13: 2, 0x15: -1, 0x16: -1,
  0x17: 1, 0x18: 4, 0x19: 1, 0x1a: -1, 0x1c: -1, 0x1f: -1, 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1,
  0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2a: 1,
};

const CONNACK_V3_CODES: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

const V5_REASONS: Record<number, string> = {
  0x80: 'unspecified error', 0x81: 'malformed packet', 0x82: 'protocol error', 0x83: 'implementation specific error',
  0x84: 'unsupported protocol version', 0x85: 'client identifier not valid', 0x86: 'bad user name or password',
  0x87: 'not authorized', 0x88: 'server unavailable', 0x89: 'server busy', 0x8a: 'banned', 0x8b: 'server shutting down',
  0x8c: 'bad authentication method', 0x8d: 'keep alive timeout', 0x8e: 'session taken over', 0x95: 'packet too large',
  0x97: 'quota exceeded', 0x9c: 'use another server', 0x9d: 'server moved', 0x9f: 'connection rate exceeded',
};

function hex(code: number): string {
  return `0x${code.toString(16).padStart(2, '0')}`;
}

// ---- byte helpers (bounds-checked by the callers' `end`) ---------------------------------------

function u16(b: Buffer, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}

/** A variable byte integer at p: [value, length], or null if incomplete or longer than 4 bytes. */
function varint(b: Buffer, p: number, end: number): [number, number] | null {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 4; i++) {
    if (p + i >= end) return null;
    const byte = b[p + i]!;
    value += (byte & 0x7f) * mul;
    if ((byte & 0x80) === 0) return [value, i + 1];
    mul *= 128;
  }
  return null;
}

function varintLength(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

function writeVarint(b: Buffer, p: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    b[p++] = byte;
  } while (n > 0);
  return p;
}

/**
 * Walks the MQTT 5 properties in [p, end): calls `each(id, valueStart, valueEnd)`; false if malformed.
 * `each` returning false stops the walk (the result is then still true).
 */
function walkProperties(b: Buffer, p: number, end: number, each: (id: number, start: number, stop: number) => boolean): boolean {
  while (p < end) {
    const id = b[p++]!;
    const size = PROPERTY_SIZE[id];
    if (size === undefined) return false;
    const start = p;
    if (size > 0) p += size;
    else if (size === -1) {
      if (p + 2 > end) return false;
      p += 2 + u16(b, p);
    } else if (size === -2) {
      if (p + 2 > end) return false;
      p += 2 + u16(b, p);
      if (p + 2 > end) return false;
      p += 2 + u16(b, p);
    } else {
      const v = varint(b, p, end);
      if (v === null) return false;
      p += v[1];
    }
    if (p > end) return false;
    if (!each(id, start, p)) return true;
  }
  return p === end;
}

/** The MQTT 5 property block whose length is at p: [start, end) of the properties, or null if malformed. */
function propertiesEnd(b: Buffer, p: number, end: number): [start: number, stop: number] | null {
  const v = varint(b, p, end);
  if (v === null) return null;
  const start = p + v[1];
  const stop = start + v[0];
  return stop > end ? null : [start, stop];
}

// ---- incremental packet parser ----------------------------------------------------------------

/** What a parser's owner does with the packets of one direction. */
interface PacketSink {
  /** Whether a packet of this type and flags may come this way (else the stream is broken). */
  valid(type: number, flags: number): boolean;
  /** A packet starts (its type is known). */
  started(type: number): void;
  /**
   * How many body bytes of this packet to keep (its first n), asked at its fixed header (have 0)
   * and again each time that many have arrived; n <= have means enough. -1: the stream is unusable.
   */
  want(type: number, flags: number, remaining: number, packet: Buffer, bodyStart: number, have: number): number;
  /**
   * The packet has passed whole; `packet` holds its fixed header and its first `have` body bytes
   * (nothing at all when none were wanted).
   */
  complete(type: number, flags: number, remaining: number, packet: Buffer, bodyStart: number, have: number): void;
}

const EMPTY = Buffer.alloc(0);

/** Parses one direction's byte stream, frame after frame, keeping only what its sink wants. */
class PacketStream {
  /** 0: at a packet boundary; 1: in the remaining-length varint; 2: in the body. */
  private phase = 0;
  private byte0 = 0;
  private remaining = 0;
  private mul = 1;
  private lenBytes = 0;
  private passed = 0;
  private buf: Buffer = EMPTY;
  private bodyStart = 0;
  private have = 0;
  private wanted = 0;
  broken = false;

  constructor(public sink: PacketSink) {}

  get atBoundary(): boolean {
    return this.phase === 0;
  }

  /** The type of the packet under way (phase > 0). */
  get currentType(): number {
    return this.byte0 >> 4;
  }

  push(data: Buffer): void {
    let i = 0;
    const n = data.length;
    while (i < n && !this.broken) {
      if (this.phase === 0) {
        const b = data[i++]!;
        if (!this.sink.valid(b >> 4, b & 0x0f)) {
          this.broken = true;
          return;
        }
        this.byte0 = b;
        this.remaining = 0;
        this.mul = 1;
        this.lenBytes = 0;
        this.phase = 1;
        this.sink.started(b >> 4);
      } else if (this.phase === 1) {
        const b = data[i++]!;
        this.remaining += (b & 0x7f) * this.mul;
        this.mul *= 128;
        this.lenBytes++;
        if (b & 0x80) {
          if (this.lenBytes === 4) this.broken = true;
          continue;
        }
        this.startBody();
      } else {
        const take = Math.min(n - i, this.remaining - this.passed);
        if (this.have < this.wanted) {
          const copy = Math.min(take, this.wanted - this.have);
          data.copy(this.buf, this.bodyStart + this.have, i, i + copy);
          this.have += copy;
          if (this.have === this.wanted && this.wanted < this.remaining) this.ask();
          // ask() may have raised the want: the rest of this chunk is read on the next turn.
          if (this.broken) return;
          i += copy;
          this.passed += copy;
          if (this.passed === this.remaining) this.finish();
          continue;
        }
        i += take;
        this.passed += take;
        if (this.passed === this.remaining) this.finish();
      }
    }
  }

  private startBody(): void {
    const type = this.byte0 >> 4;
    const flags = this.byte0 & 0x0f;
    this.passed = 0;
    this.have = 0;
    this.bodyStart = 1 + this.lenBytes;
    const w = this.sink.want(type, flags, this.remaining, EMPTY, this.bodyStart, 0);
    if (w < 0) {
      this.broken = true;
      return;
    }
    this.wanted = Math.min(w, this.remaining);
    // Most packets (QoS 0 PUBLISHes, pings) want nothing: no buffer for them.
    if (this.wanted > 0) {
      this.buf = Buffer.allocUnsafe(this.bodyStart + this.wanted);
      this.buf[0] = this.byte0;
      writeVarint(this.buf, 1, this.remaining);
    }
    if (this.remaining === 0) this.finish();
    else this.phase = 2;
  }

  /** The captured bytes reached the want: ask for more (a header read field by field). */
  private ask(): void {
    const w = this.sink.want(this.byte0 >> 4, this.byte0 & 0x0f, this.remaining, this.buf, this.bodyStart, this.have);
    if (w < 0) {
      this.broken = true;
      return;
    }
    const wanted = Math.min(w, this.remaining);
    if (wanted <= this.have) return;
    const bigger = Buffer.allocUnsafe(this.bodyStart + wanted);
    this.buf.copy(bigger, 0, 0, this.bodyStart + this.have);
    this.buf = bigger;
    this.wanted = wanted;
  }

  private finish(): void {
    const buf = this.buf;
    this.buf = EMPTY;
    this.phase = 0;
    this.sink.complete(this.byte0 >> 4, this.byte0 & 0x0f, this.remaining, buf, this.bodyStart, this.have);
  }
}

/** Whether a packet type may be sent by the client (c) or the server (s) with these flags. */
function validFixedHeader(type: number, flags: number, from: Sender, version: number): boolean {
  const client = from === 'client';
  switch (type) {
    case CONNECT:
    case SUBSCRIBE:
    case UNSUBSCRIBE:
    case PINGREQ:
      if (!client) return false;
      break;
    case CONNACK:
    case SUBACK:
    case UNSUBACK:
    case PINGRESP:
      if (client) return false;
      break;
    case DISCONNECT:
      if (!client && version !== 5) return false;
      break;
    case AUTH:
      if (version !== 5) return false;
      break;
    case PUBLISH:
      return (flags & 0x06) !== 0x06; // QoS 3 is malformed
    case PUBACK:
    case PUBREC:
    case PUBCOMP:
      break;
    case PUBREL:
      return flags === 0x02;
    default:
      return false; // 0 is reserved
  }
  if (type === SUBSCRIBE || type === UNSUBSCRIBE) return flags === 0x02;
  return flags === 0;
}

// ---- the kept state ---------------------------------------------------------------------------

interface Filter {
  /** Topic filter bytes in the entry's packet (its 2-byte length is just before). */
  start: number;
  end: number;
}

interface SubEntry {
  seq: number;
  id: number;
  /** The whole SUBSCRIBE (rebuilt when filters are removed). */
  packet: Buffer;
  bodyStart: number;
  /** End of the identifier and (MQTT 5) properties: the filters follow. */
  filtersStart: number;
  filters: Filter[];
  /** Granted codes, one per filter, once the SUBACK came; null while pending. */
  codes: Buffer | null;
}

interface UnsubEntry {
  seq: number;
  packet: Buffer;
  filters: Filter[];
}

interface InFlight {
  seq: number;
  id: number;
  kind: typeof PUBLISH | typeof PUBREL;
  qos: number;
  /** The PUBLISH as sent; null when it did not fit in the bounds (the session is then unresumable until it is answered). */
  packet: Buffer | null;
}

const SWALLOW = 1;
const PASS = 2;

interface Resume {
  stream: PacketStream;
  /** The replayed SUBSCRIBEs' ids → the codes the client was granted. */
  subacks: Map<number, Buffer>;
  connack: boolean;
  /** This frame so far: which dispositions its bytes had, a refusal it produced. */
  seen: number;
  refusal: ResumeRefusal | null;
  /** Disposition of the packet under way in the stream. */
  current: number;
  /** The last frame passed to the client (received() is then told of it too). */
  lastPassed: Buffer | null;
}

/**
 * The MQTT 5 CONNACK properties that bind the client, canonical (sorted by id; Reason String and
 * User Properties left out), and whether it assigned the client identifier; null if malformed.
 */
function connackTerms(b: Buffer, s: number, end: number): { terms: Buffer; assigned: boolean } | null {
  const props = propertiesEnd(b, s + 2, end);
  if (props === null) return null;
  const parts: [number, number, number][] = [];
  let assigned = false;
  const ok = walkProperties(b, props[0], props[1], (id, start, stop) => {
    if (id === PROP_ASSIGNED_CLIENT_ID) assigned = true;
    if (id !== PROP_REASON_STRING && id !== PROP_USER_PROPERTY) parts.push([id, start, stop]);
    return true;
  });
  if (!ok) return null;
  parts.sort((x, y) => x[0] - y[0]);
  return { terms: Buffer.concat(parts.flatMap(([id, start, stop]) => [Buffer.from([id]), b.subarray(start, stop)])), assigned };
}

function refusal(code: number, reason: string, forward = false): ResumeRefusal {
  return { refused: true, forward, code, reason };
}

function sameBytes(a: Buffer, as: number, ae: number, b: Buffer, bs: number, be: number): boolean {
  return ae - as === be - bs && a.compare(b, bs, be, as, ae) === 0;
}

class MqttState implements ProtocolState {
  /** Protocol level from the CONNECT: 3 (3.1), 4 (3.1.1), 5 (5.0); 0 before. */
  private version = 0;
  /** Why the session can never be resumed (it stops being tracked at all). */
  private sticky: string | null = null;
  private connect: Buffer | null = null;
  private connackDelivered = false;
  /** MQTT 5: the original CONNACK's properties that bind the client, canonical form. */
  private connackTerms: Buffer = EMPTY;
  private subs: SubEntry[] = [];
  private readonly unsubs = new Map<number, UnsubEntry>();
  private readonly inflight = new Map<number, InFlight>();
  private overflow = 0;
  private pingOutstanding = false;
  private seq = 0;
  /** CONNECT + SUBSCRIBEs + pending UNSUBSCRIBEs kept, and in-flight copies, in bytes. */
  private persistentBytes = 0;
  private transientBytes = 0;
  private readonly client: PacketStream;
  private server: PacketStream;
  /** The leg being left while a resume is under way (a migration's old leg may still deliver). */
  private previous: PacketStream | null = null;
  private resume: Resume | null = null;
  /** When the recent replays were made (a session taken over again and again must stop). */
  private readonly replayedAt: number[] = [];
  /** Packets the broker's stream has completed (how received() tells that a frame finished one). */
  private serverPackets = 0;
  /**
   * The broker's frames since its stream was last at a packet boundary started there and completed
   * no packet: all of them belong to the packet under way, and none of it has to reach the client yet.
   */
  private unfinishedFromBoundary = false;

  private readonly clientSink: PacketSink = {
    valid: (type, flags) => (this.connect === null && this.version === 0 ? type === CONNECT && flags === 0 : type !== CONNECT && validFixedHeader(type, flags, 'client', this.version)),
    started: () => {},
    want: (type, flags, remaining, packet, bodyStart, have) => this.clientWant(type, flags, remaining, packet, bodyStart, have),
    complete: (type, flags, remaining, packet, bodyStart, have) => this.clientPacket(type, flags, remaining, packet, bodyStart, have),
  };

  private readonly serverSink: PacketSink = {
    valid: (type, flags) => this.version !== 0 && validFixedHeader(type, flags, 'backend', this.version),
    started: () => {},
    want: (type, _flags, remaining) => this.serverWant(type, remaining),
    complete: (type, flags, remaining, packet, bodyStart, have) => {
      this.serverPackets++;
      this.serverPacket(type, flags, remaining, packet, bodyStart, have);
    },
  };

  private readonly resumeSink: PacketSink = {
    valid: (type, flags) => validFixedHeader(type, flags, 'backend', this.version),
    started: (type) => {
      const r = this.resume!;
      r.current = type === CONNACK || type === SUBACK ? SWALLOW : PASS;
      r.seen |= r.current;
    },
    want: (type, _flags, remaining) => this.serverWant(type, remaining),
    complete: (type, flags, remaining, packet, bodyStart, have) => this.resumePacket(type, flags, remaining, packet, bodyStart, have),
  };

  constructor(private readonly limits: StateLimits) {
    this.client = new PacketStream(this.clientSink);
    this.server = new PacketStream(this.serverSink);
  }

  // ---- ProtocolState ----

  sent(data: Buffer, isBinary: boolean): void {
    if (this.sticky !== null || !isBinary) return;
    try {
      this.client.push(data);
      if (this.client.broken) this.stop('mqtt: the client stream could not be read');
    } catch (err) {
      this.failed(err);
    }
  }

  received(data: Buffer, isBinary: boolean): void {
    if (this.sticky !== null || !isBinary) return;
    const r = this.resume;
    if (r !== null) {
      // A frame resumeAnswer() passed has been handled there; any other comes from the leg being left.
      if (r.lastPassed === data) {
        r.lastPassed = null;
        return;
      }
      if (this.previous === null) return;
      try {
        this.previous.push(data);
      } catch (err) {
        this.failed(err);
      }
      return;
    }
    try {
      const fromBoundary = this.server.atBoundary || this.unfinishedFromBoundary;
      const completed = this.serverPackets;
      this.server.push(data);
      this.unfinishedFromBoundary = fromBoundary && this.serverPackets === completed && !this.server.atBoundary;
      if (this.server.broken) this.stop('mqtt: the backend stream could not be read');
    } catch (err) {
      this.failed(err);
    }
  }

  unresumable(): string | null {
    if (this.sticky !== null) return this.sticky;
    if (!this.client.atBoundary) return 'mqtt: the client was cut off mid-packet';
    const r = this.resume;
    const delivered = r === null ? this.server : r.stream;
    if (!delivered.atBoundary && (r === null || r.current === PASS)) return 'mqtt: the client was sent part of a packet';
    if (this.connect === null) return null;
    if (!this.connackDelivered) return 'mqtt: the CONNECT is not answered yet';
    const now = Date.now();
    while (this.replayedAt.length > 0 && now - this.replayedAt[0]! > RESUME_WINDOW_MS) this.replayedAt.shift();
    if (this.replayedAt.length >= MAX_RESUMES_IN_WINDOW) {
      return `mqtt: resumed ${this.replayedAt.length} times within ${RESUME_WINDOW_MS / 1000} s (another connection with the same client id taking the session over?)`;
    }
    if (this.subs.some((s) => s.codes === null)) return 'mqtt: a SUBSCRIBE is not answered yet';
    if (this.unsubs.size > 0) return 'mqtt: an UNSUBSCRIBE is not answered yet';
    if (this.overflow > 0) return 'mqtt: an unanswered PUBLISH is larger than codec.maxStateBytes';
    // Packet identifiers are 16 bits: the replayed SUBSCRIBEs need ids the client does not use.
    if (this.subs.length + this.inflight.size > 0xffff) return 'mqtt: more SUBSCRIBEs and messages in flight than packet identifiers';
    const frames = 1 + this.subs.length + this.inflight.size + (this.pingOutstanding ? 1 : 0);
    if (frames > this.limits.maxFrames) return `mqtt: ${frames} frames of state (codec.maxStateFrames ${this.limits.maxFrames})`;
    const bytes = this.persistentBytes + this.transientBytes;
    if (bytes > this.limits.maxBytes) return `mqtt: ${bytes} bytes of state (codec.maxStateBytes ${this.limits.maxBytes})`;
    return null;
  }

  /** Only a packet whose every byte came in the frames held so far: a frame that finished another goes to the client. */
  midPacket(): boolean {
    return this.sticky === null && this.resume === null && this.unfinishedFromBoundary;
  }

  packetDropped(): void {
    if (this.resume !== null) return;
    this.server = new PacketStream(this.serverSink);
    this.unfinishedFromBoundary = false;
  }

  /** No QoS 1/2 exchange or PINGREQ of the client in flight: a drain need not replay anything. */
  settled(): boolean {
    return this.inflight.size === 0 && !this.pingOutstanding;
  }

  /**
   * A drained broker gets DISCONNECT (reason 0 in MQTT 5) before the close: a client leaving on
   * purpose, so it publishes no Will (MQTT-3.1.2-10 / 3.14.4). Only between two of the client's packets.
   */
  farewell(): Frame[] {
    return this.connect !== null && this.client.atBoundary ? [{ data: Buffer.from([0xe0, 0x00]), isBinary: true }] : [];
  }

  replay(): Frame[] {
    if (this.sticky !== null || this.connect === null) {
      this.resume = null;
      this.previous = null;
      this.server = new PacketStream(this.serverSink);
      this.unfinishedFromBoundary = false;
      return [];
    }
    this.replayedAt.push(Date.now());
    const frames: Frame[] = [{ data: Buffer.from(this.connect), isBinary: true }];
    const subacks = new Map<number, Buffer>();
    let next = 1;
    for (const s of this.subs) {
      while (this.inflight.has(next)) next++;
      const copy = Buffer.from(s.packet);
      copy[s.bodyStart] = next >> 8;
      copy[s.bodyStart + 1] = next & 0xff;
      subacks.set(next, s.codes ?? EMPTY);
      next++;
      frames.push({ data: copy, isBinary: true });
    }
    for (const f of [...this.inflight.values()].sort((a, b) => a.seq - b.seq)) {
      if (f.kind === PUBLISH && f.packet !== null) {
        const copy = Buffer.from(f.packet);
        copy[0] = copy[0]! | DUP_FLAG;
        frames.push({ data: copy, isBinary: true });
      } else if (f.kind === PUBREL) {
        frames.push({ data: Buffer.from([0x62, 0x02, f.id >> 8, f.id & 0xff]), isBinary: true });
      }
    }
    if (this.pingOutstanding) frames.push({ data: Buffer.from([0xc0, 0x00]), isBinary: true });
    const stream = new PacketStream(this.resumeSink);
    // The leg being left: a migration's old leg may still deliver before the switch (its stream
    // goes on where it was); after a failed resume, the failed leg delivers nothing more.
    this.previous = this.resume === null ? this.server : null;
    this.resume = { stream, subacks, connack: false, seen: 0, refusal: null, current: 0, lastPassed: null };
    return frames;
  }

  resumeAnswer(data: Buffer, isBinary: boolean): ResumeVerdict {
    const r = this.resume;
    if (r === null || !isBinary) return 'pass';
    r.seen = 0;
    r.refusal = null;
    if (!r.stream.atBoundary) r.seen |= r.current;
    try {
      r.stream.push(data);
    } catch {
      return refusal(1011, 'mqtt: internal error reading the new backend');
    }
    if (r.refusal !== null) return r.refusal;
    if (r.stream.broken) return refusal(1002, 'mqtt: malformed packet from the new backend');
    if (r.seen === (SWALLOW | PASS)) return refusal(1012, 'mqtt: a frame of the new backend mixes answers to the replay with other packets');
    if (r.seen === SWALLOW) {
      if (r.connack && r.subacks.size === 0 && r.stream.atBoundary) {
        this.resumed(r);
        return 'resumed';
      }
      return 'swallow';
    }
    r.lastPassed = data;
    return 'pass';
  }

  // ---- internals ----

  private resumed(r: Resume): void {
    r.stream.sink = this.serverSink;
    this.server = r.stream;
    this.unfinishedFromBoundary = false;
    this.resume = null;
    this.previous = null;
  }

  /** The session will never be resumed: forget everything and stop reading. */
  private stop(reason: string): void {
    if (this.sticky !== null) return;
    this.sticky = reason;
    this.connect = null;
    this.subs = [];
    this.unsubs.clear();
    this.inflight.clear();
    this.persistentBytes = 0;
    this.transientBytes = 0;
    this.overflow = 0;
  }

  /** A bug here must not break the session: it just can no longer be resumed. */
  private failed(err: unknown): void {
    this.stop(`mqtt: internal error: ${(err as Error).message}`);
  }

  // ---- client → broker ----

  private clientWant(type: number, flags: number, remaining: number, packet: Buffer, bodyStart: number, have: number): number {
    if (this.sticky !== null) return 0;
    const size = bodyStart + remaining;
    switch (type) {
      case CONNECT:
        if (size > this.limits.maxBytes) {
          this.stop(`mqtt: the CONNECT (${size} bytes) is larger than codec.maxStateBytes`);
          return 0;
        }
        return remaining;
      case SUBSCRIBE:
      case UNSUBSCRIBE:
        if (this.persistentBytes + size > this.limits.maxBytes) {
          this.stop(`mqtt: subscriptions over codec.maxStateBytes (${this.limits.maxBytes})`);
          return 0;
        }
        return remaining;
      case PUBLISH: {
        const qos = (flags >> 1) & 3;
        if (qos > 0 && have === 0 && this.persistentBytes + this.transientBytes + size <= this.limits.maxBytes) return remaining;
        if (have === remaining) return remaining;
        if (qos === 0 && this.version !== 5) return 0;
        return this.publishHeaderWant(qos, packet, bodyStart, have);
      }
      case PUBREL:
        return 2;
      default:
        return 0;
    }
  }

  /** Body bytes needed to read a PUBLISH up to the end of its properties (MQTT 5) or its id. */
  private publishHeaderWant(qos: number, b: Buffer, s: number, have: number): number {
    if (have < 2) return 2;
    const n = 2 + u16(b, s) + (qos > 0 ? 2 : 0);
    if (this.version !== 5) return n;
    if (have <= n) return n + 4; // the property length: up to 4 bytes (clamped to the packet)
    const v = varint(b, s + n, s + have);
    if (v === null) return have < n + 4 ? n + 4 : -1;
    const want = n + v[1] + v[0];
    if (want > MAX_PUBLISH_HEADER) {
      this.stop('mqtt: a PUBLISH header too long to check for a Topic Alias');
      return 0;
    }
    return want;
  }

  private clientPacket(type: number, flags: number, remaining: number, b: Buffer, s: number, have: number): void {
    if (this.sticky !== null) return;
    const end = s + have;
    switch (type) {
      case CONNECT:
        this.onConnect(b, s, end);
        return;
      case SUBSCRIBE:
        this.onSubscribe(b, s, end);
        return;
      case UNSUBSCRIBE:
        this.onUnsubscribe(b, s, end);
        return;
      case PUBLISH:
        this.onPublish(flags, remaining, b, s, have);
        return;
      case PUBREL: {
        if (have < 2) return this.stop('mqtt: malformed PUBREL');
        const id = u16(b, s);
        this.forget(id);
        this.inflight.set(id, { seq: this.seq++, id, kind: PUBREL, qos: 2, packet: null });
        this.transientBytes += 4;
        return;
      }
      case PINGREQ:
        this.pingOutstanding = true;
        return;
      case DISCONNECT:
        this.stop('mqtt: the client sent DISCONNECT');
        return;
      case AUTH:
        this.stop('mqtt: enhanced authentication (AUTH) cannot be replayed');
        return;
      default:
        return; // PUBACK, PUBREC, PUBCOMP: answers to the broker's messages, not kept
    }
  }

  private onConnect(b: Buffer, s: number, end: number): void {
    if (end - s < 2) return this.stop('mqtt: malformed CONNECT');
    const nameLen = u16(b, s);
    let p = s + 2 + nameLen;
    if (p + 4 > end) return this.stop('mqtt: malformed CONNECT');
    const name = b.toString('latin1', s + 2, s + 2 + nameLen);
    const level = b[p]!;
    if (!((name === 'MQTT' && (level === 4 || level === 5)) || (name === 'MQIsdp' && level === 3))) {
      return this.stop(`mqtt: unsupported protocol ${JSON.stringify(name.slice(0, 16))} level ${level}`);
    }
    p += 4; // level, flags, keep-alive
    if (level === 5) {
      const props = propertiesEnd(b, p, end);
      if (props === null) return this.stop('mqtt: malformed CONNECT');
      let auth = false;
      if (!walkProperties(b, props[0], props[1], (id) => !(auth = id === PROP_AUTH_METHOD))) return this.stop('mqtt: malformed CONNECT');
      if (auth) return this.stop('mqtt: enhanced authentication (AUTH) cannot be replayed');
    }
    this.version = level;
    this.connect = Buffer.from(b.subarray(0, end));
    this.persistentBytes += this.connect.length;
  }

  /** Identifier and (MQTT 5) properties, then the filters: [filtersStart, filters] or null if malformed. */
  private readFilters(b: Buffer, s: number, end: number, optionsByte: boolean): [number, Filter[]] | null {
    let p = s + 2;
    if (p > end) return null;
    if (this.version === 5) {
      const props = propertiesEnd(b, p, end);
      if (props === null) return null;
      p = props[1];
    }
    const filtersStart = p;
    const filters: Filter[] = [];
    const extra = optionsByte ? 1 : 0;
    while (p < end) {
      if (p + 2 > end) return null;
      const len = u16(b, p);
      const stop = p + 2 + len;
      if (stop + extra > end) return null;
      filters.push({ start: p + 2, end: stop });
      p = stop + extra;
    }
    return filters.length === 0 ? null : [filtersStart, filters];
  }

  private onSubscribe(b: Buffer, s: number, end: number): void {
    const read = this.readFilters(b, s, end, true);
    if (read === null) return this.stop('mqtt: malformed SUBSCRIBE');
    const packet = b.subarray(0, end);
    // A copy: the packet buffer is the parser's own, but keep exactly its size.
    const kept = Buffer.from(packet);
    this.subs.push({ seq: this.seq++, id: u16(b, s), packet: kept, bodyStart: s, filtersStart: read[0], filters: read[1], codes: null });
    this.persistentBytes += kept.length;
  }

  private onUnsubscribe(b: Buffer, s: number, end: number): void {
    const read = this.readFilters(b, s, end, false);
    if (read === null) return this.stop('mqtt: malformed UNSUBSCRIBE');
    const id = u16(b, s);
    const previous = this.unsubs.get(id);
    if (previous) this.persistentBytes -= previous.packet.length;
    const kept = Buffer.from(b.subarray(0, end));
    this.unsubs.set(id, { seq: this.seq++, packet: kept, filters: read[1] });
    this.persistentBytes += kept.length;
  }

  private onPublish(flags: number, remaining: number, b: Buffer, s: number, have: number): void {
    const qos = (flags >> 1) & 3;
    const end = s + have;
    if (have < 2) {
      if (qos > 0 || this.version === 5) this.stop('mqtt: malformed PUBLISH');
      return;
    }
    let p = s + 2 + u16(b, s);
    let id = -1;
    if (qos > 0) {
      if (p + 2 > end) return this.stop('mqtt: malformed PUBLISH');
      id = u16(b, p);
      p += 2;
    }
    if (this.version === 5) {
      const props = propertiesEnd(b, p, end);
      if (props === null) return this.stop('mqtt: malformed PUBLISH');
      let alias = false;
      if (!walkProperties(b, props[0], props[1], (pid) => !(alias = pid === PROP_TOPIC_ALIAS))) return this.stop('mqtt: malformed PUBLISH');
      if (alias) return this.stop('mqtt: the client uses Topic Aliases (MQTT 5), which do not outlive a connection');
    }
    if (qos === 0) return;
    this.forget(id);
    const whole = have === remaining;
    const packet = whole ? Buffer.from(b.subarray(0, end)) : null;
    this.inflight.set(id, { seq: this.seq++, id, kind: PUBLISH, qos, packet });
    if (packet === null) this.overflow++;
    else this.transientBytes += packet.length;
  }

  /** Drops an in-flight entry (answered, or its id reused). */
  private forget(id: number): void {
    const f = this.inflight.get(id);
    if (!f) return;
    this.inflight.delete(id);
    if (f.kind === PUBREL) this.transientBytes -= 4;
    else if (f.packet === null) this.overflow--;
    else this.transientBytes -= f.packet.length;
  }

  // ---- broker → client ----

  private serverWant(type: number, remaining: number): number {
    switch (type) {
      case CONNACK:
      case SUBACK:
      case UNSUBACK:
        return remaining > MAX_ACK ? -1 : remaining;
      case PUBACK:
      case PUBREC:
      case PUBCOMP:
      case DISCONNECT:
        return 2;
      default:
        return 0;
    }
  }

  private serverPacket(type: number, _flags: number, _remaining: number, b: Buffer, s: number, have: number): void {
    if (this.sticky !== null) return;
    const end = s + have;
    switch (type) {
      case CONNACK: {
        if (this.connackDelivered || have < 2) return this.stop('mqtt: unexpected CONNACK');
        const code = b[s + 1]!;
        if (code !== 0) return this.stop(`mqtt: the CONNECT was refused (${hex(code)})`);
        if (this.version === 5) {
          const terms = connackTerms(b, s, end);
          if (terms === null) return this.stop('mqtt: malformed CONNACK');
          if (terms.assigned) return this.stop('mqtt: the broker assigned the client identifier (a new broker would assign another)');
          this.connackTerms = terms.terms;
        }
        this.connackDelivered = true;
        return;
      }
      case SUBACK:
        this.onSuback(b, s, end);
        return;
      case UNSUBACK:
        this.onUnsuback(b, s, end);
        return;
      case PUBACK:
      case PUBREC:
      case PUBCOMP: {
        if (have < 2) return this.stop('mqtt: malformed acknowledgement');
        const f = this.inflight.get(u16(b, s));
        if (f && (type === PUBCOMP ? f.kind === PUBREL : f.kind === PUBLISH && f.qos === (type === PUBACK ? 1 : 2))) this.forget(f.id);
        return;
      }
      case PINGRESP:
        this.pingOutstanding = false;
        return;
      case DISCONNECT:
        this.stop('mqtt: the backend sent DISCONNECT');
        return;
      default:
        return; // PUBLISH, PUBREL (the broker's own messages), AUTH
    }
  }

  /** Reason codes of a SUBACK / UNSUBACK body: [start, end), or null if malformed. */
  private ackCodes(b: Buffer, s: number, end: number): [number, number] | null {
    let p = s + 2;
    if (p > end) return null;
    if (this.version === 5) {
      const props = propertiesEnd(b, p, end);
      if (props === null) return null;
      p = props[1];
    }
    return [p, end];
  }

  private onSuback(b: Buffer, s: number, end: number): void {
    const codes = this.ackCodes(b, s, end);
    if (codes === null) return this.stop('mqtt: malformed SUBACK');
    const id = u16(b, s);
    const entry = this.subs.find((e) => e.codes === null && e.id === id);
    if (!entry) return;
    if (codes[1] - codes[0] !== entry.filters.length) return this.stop('mqtt: a SUBACK does not match its SUBSCRIBE');
    entry.codes = Buffer.from(b.subarray(codes[0], codes[1]));
    // Filters refused are not subscribed; granted ones replace the same filter subscribed earlier.
    const refused = new Set<number>();
    entry.filters.forEach((_f, i) => {
      if (entry.codes![i]! >= 0x80) refused.add(i);
    });
    const granted = entry.filters.filter((_f, i) => !refused.has(i));
    for (const other of this.subs) {
      if (other.seq >= entry.seq) break;
      this.removeFilters(other, granted, entry.packet);
    }
    if (refused.size > 0) this.rebuild(entry, entry.filters.map((_f, i) => !refused.has(i)));
    this.compact();
  }

  private onUnsuback(b: Buffer, s: number, end: number): void {
    const id = u16(b, s);
    const u = this.unsubs.get(id);
    if (!u) return;
    let removed = u.filters;
    if (this.version === 5) {
      const codes = this.ackCodes(b, s, end);
      if (codes === null || codes[1] - codes[0] !== u.filters.length) return this.stop('mqtt: malformed UNSUBACK');
      removed = u.filters.filter((_f, i) => b[codes[0] + i]! < 0x80);
    }
    this.unsubs.delete(id);
    this.persistentBytes -= u.packet.length;
    for (const entry of this.subs) {
      if (entry.seq >= u.seq) break;
      this.removeFilters(entry, removed, u.packet);
    }
    this.compact();
  }

  /** Removes from `entry` the filters equal to any of `gone` (read in `from`). */
  private removeFilters(entry: SubEntry, gone: Filter[], from: Buffer): void {
    if (gone.length === 0) return;
    const keep = entry.filters.map((f) => !gone.some((g) => sameBytes(entry.packet, f.start, f.end, from, g.start, g.end)));
    if (keep.every(Boolean)) return;
    this.rebuild(entry, keep);
  }

  /** Rebuilds a SUBSCRIBE with only the filters kept (an empty one is dropped by compact()). */
  private rebuild(entry: SubEntry, keep: boolean[]): void {
    const old = entry.packet;
    const s = entry.bodyStart;
    const live = entry.filters.filter((_f, i) => keep[i]);
    let body = entry.filtersStart - s;
    for (const f of live) body += f.end - f.start + 3;
    const start = 1 + varintLength(body);
    const packet = Buffer.allocUnsafe(start + body);
    packet[0] = old[0]!;
    writeVarint(packet, 1, body);
    old.copy(packet, start, s, entry.filtersStart);
    let p = start + (entry.filtersStart - s);
    const filters: Filter[] = [];
    for (const f of live) {
      old.copy(packet, p, f.start - 2, f.end + 1);
      filters.push({ start: p + 2, end: p + 2 + (f.end - f.start) });
      p += f.end - f.start + 3;
    }
    const codes = entry.codes === null ? null : Buffer.from(entry.filters.flatMap((_f, i) => (keep[i] ? [entry.codes![i]!] : [])));
    this.persistentBytes += packet.length - old.length;
    entry.filtersStart = start + (entry.filtersStart - s);
    entry.bodyStart = start;
    entry.packet = packet;
    entry.filters = filters;
    entry.codes = codes;
  }

  /** Drops SUBSCRIBEs left without a filter. */
  private compact(): void {
    if (this.subs.every((e) => e.filters.length > 0)) return;
    for (const e of this.subs) if (e.filters.length === 0) this.persistentBytes -= e.packet.length;
    this.subs = this.subs.filter((e) => e.filters.length > 0);
  }

  // ---- the new broker's answers to the replay ----

  private resumePacket(type: number, flags: number, remaining: number, b: Buffer, s: number, have: number): void {
    const r = this.resume!;
    const end = s + have;
    if (!r.connack && type !== CONNACK) {
      r.refusal = refusal(1002, `mqtt: the new backend sent packet type ${type} before its CONNACK`);
      return;
    }
    switch (type) {
      case CONNACK: {
        if (r.connack || have < 2) {
          r.refusal = refusal(1002, 'mqtt: unexpected CONNACK from the new backend');
          return;
        }
        const code = b[s + 1]!;
        if (code !== 0) {
          const name = this.version === 5 ? V5_REASONS[code] : CONNACK_V3_CODES[code];
          r.refusal = refusal(1000, `mqtt: the new backend refused the CONNECT (${hex(code)}${name ? ` ${name}` : ''})`);
          return;
        }
        if (this.version === 5) {
          const terms = connackTerms(b, s, end);
          if (terms === null) {
            r.refusal = refusal(1002, 'mqtt: malformed CONNACK from the new backend');
            return;
          }
          if (!terms.terms.equals(this.connackTerms)) {
            r.refusal = refusal(1012, 'mqtt: the new backend connects on other terms (MQTT 5 CONNACK properties differ)');
            return;
          }
        }
        r.connack = true;
        return;
      }
      case SUBACK: {
        const codes = this.ackCodes(b, s, end);
        if (codes === null) {
          r.refusal = refusal(1002, 'mqtt: malformed SUBACK from the new backend');
          return;
        }
        const id = u16(b, s);
        const expected = r.subacks.get(id);
        if (expected === undefined) return; // not one of ours: nothing waits for it
        if (!sameBytes(b, codes[0], codes[1], expected, 0, expected.length)) {
          const got = [...b.subarray(codes[0], codes[1])].map(hex).join(',');
          r.refusal = refusal(1012, `mqtt: the new backend granted the subscriptions differently (${got}, was ${[...expected].map(hex).join(',')})`);
          return;
        }
        r.subacks.delete(id);
        return;
      }
      case DISCONNECT: {
        const code = have >= 1 ? b[s]! : 0;
        r.refusal = refusal(1000, `mqtt: the new backend sent DISCONNECT (${hex(code)}${V5_REASONS[code] ? ` ${V5_REASONS[code]}` : ''})`, true);
        this.stop('mqtt: the backend sent DISCONNECT');
        return;
      }
      case AUTH:
        r.refusal = refusal(1012, 'mqtt: the new backend asks for enhanced authentication');
        return;
      default:
        // Answers to the replayed PUBLISHes, PUBRELs and PINGREQ, and the broker's own messages:
        // the client's, kept current like any frame delivered.
        this.serverPacket(type, flags, remaining, b, s, have);
    }
  }
}

/** The MQTT codec (name 'mqtt'). See the notes at the top of this file. */
export function createMqttCodec(): SessionCodec {
  return {
    name: 'mqtt',
    subprotocols: ['mqtt', 'mqttv3.1'],
    classify(_data: Buffer, isBinary: boolean, _from: Sender, _ids: string[]): MessageKind {
      return isBinary ? 'other' : 'malformed';
    },
    createState(limits: StateLimits): ProtocolState {
      return new MqttState(limits);
    },
  };
}
