// STOMP 1.0, 1.1 and 1.2 over WebSocket (subprotocols v10.stomp, v11.stomp, v12.stomp).
//
// A frame is `COMMAND EOL *(header EOL) EOL body NUL *(EOL)`, EOL being LF or (1.2) CR LF; a bare
// EOL between frames is a heart-beat. With a `content-length` header the body is exactly that many
// bytes (it may hold NULs), else it runs to the first NUL. The codec walks those bytes (command
// line, header lines, then a jump over the body by content-length or a memchr for the NUL) with no
// allocation but the id strings it returns.
//
// WebSocket framing: one STOMP frame per WebSocket message is what stompjs sends and what RabbitMQ's
// Web STOMP and stomp-broker-js send. Several whole frames in one message are read one by one
// (both directions). A frame split across messages (stompjs' splitLargeFrames, off by default) is
// not followed: classify() calls each piece 'malformed' and the state ignores it.
//
// Requests and answers (classify):
// - CONNECT/STOMP from the client is a request with the pseudo id CONNECT_ID, answered by the
//   CONNECTED frame: a session whose backend dies before CONNECTED gets its CONNECT replayed by the
//   request tracker, and the new backend's CONNECTED reaches the client as its first.
// - SEND, ACK, NACK, BEGIN, COMMIT, ABORT and DISCONNECT with a `receipt` header are requests (id:
//   the receipt); RECEIPT answers with `receipt-id`, and so does an ERROR carrying `receipt-id`
//   (spec 1.2: "the ERROR frame SHOULD set the receipt-id header"). In-flight receipted frames are
//   replayed after a failover and their receipt delivered once.
// - SUBSCRIBE and UNSUBSCRIBE are 'other' even with a receipt: the state keeps them, receipts
//   included (see replay()), so the tracker must not replay them a second time.
//
// The session state (createState):
// - kept: the CONNECT (or STOMP) frame and the live SUBSCRIBEs (keyed by `id`; a 1.0 SUBSCRIBE
//   without id by its destination), minus UNSUBSCRIBEs; open transactions; receipts still awaited
//   for SUBSCRIBE/UNSUBSCRIBE/COMMIT/ABORT/ACK/NACK; for subscriptions with ack mode client or
//   client-individual, the messages delivered and not yet ACKed/NACKed.
// - replay(): the CONNECT, then each SUBSCRIBE in order, the SUBSCRIBEs only once the new backend
//   has answered CONNECTED (Frame.afterResume), as the client itself sent them: a broker need not
//   take frames before its CONNECTED (Spring's STOMP broker relay ignores a client's frames until
//   the broker behind it has answered CONNECTED). A receipt the old backend already answered is
//   removed from a replayed SUBSCRIBE (the client must not get it twice); a receipt still awaited
//   is kept, so the new backend answers it. An UNSUBSCRIBE whose receipt is awaited is replayed
//   after its SUBSCRIBE, for the same reason. Nothing is replayed before the first CONNECTED: the CONNECT is then an unanswered
//   request, which the tracker replays.
// - resumeAnswer(): the resume is complete at the new backend's CONNECTED (swallowed: the client
//   has its own); the SUBSCRIBEs go next, before the unanswered requests and the client's held
//   frames, and STOMP handles a connection's frames in order, so they are in place before anything
//   the client sends next. Waiting for a receipt on the last SUBSCRIBE instead would hang on
//   brokers that do not answer one there (stomp-broker-js answers DISCONNECT's only). An ERROR
//   instead (bad credentials, unsupported version) is a refusal: forwarded, then the client is
//   closed with 1008 (policy violation; RabbitMQ closes with 1000 after an ERROR, a rejected login
//   is the usual cause). A CONNECTED whose version or heart-beats the client's old negotiation
//   cannot honour is a refusal without forwarding, closed with 1012 so the client reconnects and
//   negotiates afresh (see heartBeatsCompatible()).
// - unresumable(): the state over its bound (sticky: dropped state cannot be rebuilt), a
//   transaction open (spec: "Any started transactions which have not been committed will be
//   implicitly aborted if ... the TCP connection fails"), an awaited receipt for COMMIT, ABORT, ACK
//   or NACK (its outcome on the old backend is unknown and the new one knows neither the
//   transaction nor the message), messages awaiting an ACK (their ack ids mean nothing to the new
//   backend, which would refuse the ACK or ignore it: the client reconnects and the broker
//   redelivers), or an ERROR from the backend (spec: the server closes the connection after it).
import type { Frame, MessageKind, ProtocolState, ResumeVerdict, Sender, SessionCodec, StateLimits } from './codec.js';

const NUL = 0x00;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;
const COLON = 0x3a;
const BACKSLASH = 0x5c;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/** The request id of CONNECT/STOMP, answered by CONNECTED. A NUL cannot occur in a header value. */
export const CONNECT_ID = '\u0000CONNECT';

/** Longest content-length accepted, in digits (a larger one cannot fit a WebSocket message anyway). */
const MAX_LENGTH_DIGITS = 10;
/** Longest close reason: a WebSocket close frame carries at most 123 bytes of it. */
const MAX_REASON_BYTES = 123;

const enum Cmd {
  Unknown,
  Connect,
  Stomp,
  Connected,
  Send,
  Subscribe,
  Unsubscribe,
  Begin,
  Commit,
  Abort,
  Ack,
  Nack,
  Disconnect,
  Message,
  Receipt,
  Error,
}

const COMMANDS: readonly [Buffer, Cmd][] = (
  [
    ['CONNECT', Cmd.Connect],
    ['STOMP', Cmd.Stomp],
    ['CONNECTED', Cmd.Connected],
    ['SEND', Cmd.Send],
    ['SUBSCRIBE', Cmd.Subscribe],
    ['UNSUBSCRIBE', Cmd.Unsubscribe],
    ['BEGIN', Cmd.Begin],
    ['COMMIT', Cmd.Commit],
    ['ABORT', Cmd.Abort],
    ['ACK', Cmd.Ack],
    ['NACK', Cmd.Nack],
    ['DISCONNECT', Cmd.Disconnect],
    ['MESSAGE', Cmd.Message],
    ['RECEIPT', Cmd.Receipt],
    ['ERROR', Cmd.Error],
  ] as const
).map(([name, cmd]) => [Buffer.from(name, 'latin1'), cmd]);

const H_CONTENT_LENGTH = Buffer.from('content-length');
const H_RECEIPT = Buffer.from('receipt');
const H_RECEIPT_ID = Buffer.from('receipt-id');
const H_ID = Buffer.from('id');
const H_DESTINATION = Buffer.from('destination');
const H_ACK = Buffer.from('ack');
const H_MESSAGE_ID = Buffer.from('message-id');
const H_SUBSCRIPTION = Buffer.from('subscription');
const H_TRANSACTION = Buffer.from('transaction');
const H_VERSION = Buffer.from('version');
const H_HEART_BEAT = Buffer.from('heart-beat');
const H_MESSAGE = Buffer.from('message');

function bytesEqual(d: Buffer, start: number, end: number, want: Buffer): boolean {
  if (end - start !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (d[start + i] !== want[i]) return false;
  return true;
}

function commandOf(d: Buffer, start: number, end: number): Cmd {
  for (const [name, cmd] of COMMANDS) if (bytesEqual(d, start, end, name)) return cmd;
  return Cmd.Unknown;
}

function isBlank(c: number): boolean {
  return c === SPACE || c === TAB;
}

/**
 * Walks the STOMP frames of one WebSocket message. After next() returns true, the fields describe
 * the frame; header() finds one header's value (the first occurrence wins, as the spec says for
 * repeated headers; names and values are trimmed of spaces and tabs, as stompjs does). next()
 * returns false at the end of the message, with `error` set if what was left is not a whole frame.
 * Instances are reused (the codec runs synchronously, one message at a time).
 */
class FrameCursor {
  data: Buffer = Buffer.alloc(0);
  private end = 0;
  private pos = 0;
  error = false;
  cmd: Cmd = Cmd.Unknown;
  frameStart = 0;
  /** First header line. */
  hStart = 0;
  /** The blank line ending the headers. */
  hEnd = 0;
  /** Index just after the frame's NUL. */
  frameEnd = 0;
  /** The value found by header(). */
  vStart = 0;
  vEnd = 0;

  reset(data: Buffer): this {
    this.data = data;
    this.end = data.length;
    this.pos = 0;
    this.error = false;
    return this;
  }

  private fail(): false {
    this.error = true;
    this.pos = this.end;
    return false;
  }

  next(): boolean {
    const d = this.data;
    const end = this.end;
    let p = this.pos;
    // EOLs between frames are heart-beats (and the optional EOLs after a NUL); stompjs also skips NULs.
    while (p < end && (d[p] === LF || d[p] === CR || d[p] === NUL)) p++;
    if (p >= end) {
      this.pos = p;
      return false;
    }
    this.frameStart = p;
    let lf = d.indexOf(LF, p);
    if (lf < 0) return this.fail();
    let lineEnd = lf > p && d[lf - 1] === CR ? lf - 1 : lf;
    this.cmd = commandOf(d, p, lineEnd);
    const hStart = lf + 1;
    let q = hStart;
    let length = -1;
    for (;;) {
      if (q >= end) return this.fail();
      lf = d.indexOf(LF, q);
      if (lf < 0) return this.fail();
      lineEnd = lf > q && d[lf - 1] === CR ? lf - 1 : lf;
      if (lineEnd === q) break; // the blank line
      const colon = d.indexOf(COLON, q);
      if (colon < 0 || colon >= lineEnd) return this.fail();
      if (length === -1 && keyIs(d, q, colon, H_CONTENT_LENGTH)) {
        length = parseLength(d, colon + 1, lineEnd);
        if (length < 0) return this.fail();
      }
      q = lf + 1;
    }
    this.hStart = hStart;
    this.hEnd = q;
    const bodyStart = lf + 1;
    let nul: number;
    if (length >= 0) {
      nul = bodyStart + length;
      if (nul >= end || d[nul] !== NUL) return this.fail();
    } else {
      nul = d.indexOf(NUL, bodyStart);
      if (nul < 0) return this.fail();
    }
    this.frameEnd = nul + 1;
    this.pos = nul + 1;
    return true;
  }

  /** Finds the first header named `name`: true with vStart/vEnd set (trimmed), or false. */
  header(name: Buffer): boolean {
    const d = this.data;
    let q = this.hStart;
    while (q < this.hEnd) {
      const lf = d.indexOf(LF, q);
      const lineEnd = lf > q && d[lf - 1] === CR ? lf - 1 : lf;
      const colon = d.indexOf(COLON, q);
      if (keyIs(d, q, colon, name)) {
        let s = colon + 1;
        let e = lineEnd;
        while (s < e && isBlank(d[s]!)) s++;
        while (e > s && isBlank(d[e - 1]!)) e--;
        this.vStart = s;
        this.vEnd = e;
        return true;
      }
      q = lf + 1;
    }
    return false;
  }

  /** The header's value with STOMP 1.1/1.2 escapes decoded, or null if the frame has no such header. */
  value(name: Buffer): string | null {
    return this.header(name) ? decodeValue(this.data, this.vStart, this.vEnd) : null;
  }

  /** The header's value as written (CONNECT and CONNECTED are not escaped), or null. */
  rawValue(name: Buffer): string | null {
    return this.header(name) ? this.data.toString('utf8', this.vStart, this.vEnd) : null;
  }

  /** Whether the header's value is exactly `want` (no allocation). */
  valueIs(name: Buffer, want: Buffer): boolean {
    return this.header(name) && bytesEqual(this.data, this.vStart, this.vEnd, want);
  }
}

/** The key of a header line [start, colon), trimmed, is `name`. */
function keyIs(d: Buffer, start: number, colon: number, name: Buffer): boolean {
  let s = start;
  let e = colon;
  while (s < e && isBlank(d[s]!)) s++;
  while (e > s && isBlank(d[e - 1]!)) e--;
  return bytesEqual(d, s, e, name);
}

/** A content-length value: decimal digits (blanks around allowed), or -1. */
function parseLength(d: Buffer, start: number, end: number): number {
  while (start < end && isBlank(d[start]!)) start++;
  while (end > start && isBlank(d[end - 1]!)) end--;
  if (start === end || end - start > MAX_LENGTH_DIGITS) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = d[i]!;
    if (c < DIGIT_0 || c > DIGIT_9) return -1;
    n = n * 10 + (c - DIGIT_0);
  }
  return n;
}

/**
 * A header value with the STOMP escapes (\\ \n \r \c) decoded. An undefined escape is a fatal
 * protocol error for the peers; here it is kept as written, the same way on both sides of a match.
 */
function decodeValue(d: Buffer, start: number, end: number): string {
  const first = d.indexOf(BACKSLASH, start);
  if (first < 0 || first >= end) return d.toString('utf8', start, end);
  const out: number[] = [];
  for (let i = start; i < end; i++) {
    const c = d[i]!;
    if (c === BACKSLASH && i + 1 < end) {
      const e = d[i + 1]!;
      const decoded = e === BACKSLASH ? BACKSLASH : e === 0x6e ? LF : e === 0x72 ? CR : e === 0x63 ? COLON : -1;
      if (decoded >= 0) {
        out.push(decoded);
        i++;
        continue;
      }
    }
    out.push(c);
  }
  return Buffer.from(out).toString('utf8');
}

/** "a,b" heart-beat header: two non-negative integers; anything unreadable counts as 0 ("none"). */
function parseHeartBeat(value: string | null): [number, number] {
  if (value === null) return [0, 0];
  const comma = value.indexOf(',');
  if (comma < 0) return [0, 0];
  const num = (s: string): number => {
    const t = s.trim();
    return /^[0-9]{1,10}$/.test(t) ? Number(t) : 0;
  };
  return [num(value.slice(0, comma)), num(value.slice(comma + 1))];
}

/** Interval in ms at which heart-beats flow one way, 0 for none: MAX(can, wants) if both are non-zero (spec 1.1/1.2). */
function beatEvery(senderCan: number, receiverWants: number): number {
  return senderCan === 0 || receiverWants === 0 ? 0 : Math.max(senderCan, receiverWants);
}

/**
 * Whether the client, keeping the heart-beats it negotiated with the old backend (it never sees
 * the new CONNECTED), is safe with the new backend: the client must send at least as often as the
 * new backend now expects, and the new backend must send at least as often as the client expects.
 * `client` is the CONNECT's cx,cy; `old` and `next` the CONNECTEDs' sx,sy.
 */
export function heartBeatsCompatible(client: [number, number], old: [number, number], next: [number, number]): boolean {
  const [cx, cy] = client;
  const clientSends = beatEvery(cx, old[1]);
  const newExpects = beatEvery(cx, next[1]);
  if (newExpects !== 0 && (clientSends === 0 || clientSends > newExpects)) return false;
  const clientExpects = beatEvery(old[0], cy);
  const newSends = beatEvery(next[0], cy);
  if (clientExpects !== 0 && (newSends === 0 || newSends > clientExpects)) return false;
  return true;
}

const enum AckMode {
  Auto,
  Client,
  ClientIndividual,
}

const ACK_CLIENT = Buffer.from('client');
const ACK_CLIENT_INDIVIDUAL = Buffer.from('client-individual');

interface Subscription {
  readonly key: string;
  /** The SUBSCRIBE as the client sent it (a copy). */
  readonly frame: Buffer;
  readonly isBinary: boolean;
  readonly destination: string | null;
  /** From the SUBSCRIBE's own `id` header (a 1.0 subscription may have none). */
  readonly hasId: boolean;
  readonly ackMode: AckMode;
  /** The SUBSCRIBE's receipt: null once answered (or if it had none). */
  receipt: string | null;
  /** Whether the SUBSCRIBE carried a receipt header at all (stripped from the replay once answered). */
  readonly hadReceipt: boolean;
  /** An UNSUBSCRIBE sent with a receipt that has not come yet: replayed after the SUBSCRIBE. */
  unsubscribe: { frame: Buffer; isBinary: boolean; receipt: string } | null;
  /** client mode: the ack id of the last message delivered and not yet acknowledged. */
  lastAckId: string | null;
}

/** What an awaited receipt was for. */
type Awaited =
  | { kind: 'subscribe'; sub: Subscription }
  | { kind: 'unsubscribe'; sub: Subscription }
  | { kind: 'blocking'; what: string };

/** Rebuilds a frame without its `receipt` header(s): the rest is copied byte for byte. */
function withoutReceipt(frame: Buffer): Buffer {
  const c = auxCursor.reset(frame);
  if (!c.next()) return frame;
  const parts: Buffer[] = [frame.subarray(0, c.hStart)];
  let q = c.hStart;
  while (q < c.hEnd) {
    const lf = frame.indexOf(LF, q);
    const colon = frame.indexOf(COLON, q);
    if (!keyIs(frame, q, colon, H_RECEIPT)) parts.push(frame.subarray(q, lf + 1));
    q = lf + 1;
  }
  parts.push(frame.subarray(c.hEnd));
  return Buffer.concat(parts);
}

/** A close reason of at most 123 bytes, printable ASCII only. */
function closeReason(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > MAX_REASON_BYTES ? clean.slice(0, MAX_REASON_BYTES) : clean;
}

class StompState implements ProtocolState {
  private connect: { frame: Buffer; isBinary: boolean } | null = null;
  private clientBeats: [number, number] = [0, 0];
  /** From the first CONNECTED: the session's version and the server's heart-beat values. */
  private connected: { version: string; beats: [number, number] } | null = null;
  private readonly subs = new Map<string, Subscription>();
  private readonly transactions = new Set<string>();
  private readonly awaited = new Map<string, Awaited>();
  /** Blocking receipts (COMMIT/ABORT/ACK/NACK) among `awaited`. */
  private blocking = 0;
  /** client-individual subscriptions: ack id → subscription, for messages not yet acknowledged. */
  private readonly unacked = new Map<string, Subscription>();
  /** client-mode subscriptions: their last unacknowledged message's ack id → subscription. */
  private readonly lastUnacked = new Map<string, Subscription>();
  /** Subscriptions with ack mode client or client-individual. */
  private ackSubs = 0;
  /** Frames replay() would send (CONNECT, SUBSCRIBEs, UNSUBSCRIBEs awaiting their receipt). */
  private frames = 0;
  /** Bytes of those frames, and of the strings kept for the rest. */
  private bytes = 0;
  private overflowed: string | null = null;
  /** The messages awaiting an ACK could not all be tracked: unresumable while such a subscription lives. */
  private ackOverflow = false;
  private ended: string | null = null;
  /** Set by replay(): the new backend's CONNECTED is awaited. */
  private resuming = false;

  constructor(private readonly limits: StateLimits) {}

  /** Everything kept, in frames (replayed or not): what limits.maxFrames bounds. */
  private itemCount(): number {
    return this.frames + this.transactions.size + this.awaited.size + this.unacked.size;
  }

  /** Whether `frames` more frames and `bytes` more bytes fit; if not, the state overflows (sticky). */
  private fits(frames: number, bytes: number): boolean {
    if (this.overflowed !== null) return false;
    if (this.itemCount() + frames > this.limits.maxFrames) {
      this.overflow(`STOMP session state over ${this.limits.maxFrames} frames`);
      return false;
    }
    if (this.bytes + bytes > this.limits.maxBytes) {
      this.overflow(`STOMP session state over ${this.limits.maxBytes} bytes`);
      return false;
    }
    return true;
  }

  /** What was dropped cannot be rebuilt: the session stays unresumable; the memory is freed. */
  private overflow(reason: string): void {
    this.overflowed = reason;
    this.connect = null;
    this.subs.clear();
    this.transactions.clear();
    this.awaited.clear();
    this.unacked.clear();
    this.lastUnacked.clear();
    this.blocking = 0;
    this.ackSubs = 0;
    this.frames = 0;
    this.bytes = 0;
  }

  sent(data: Buffer, isBinary: boolean): void {
    if (this.overflowed !== null) return;
    const c = stateCursor.reset(data);
    while (c.next()) {
      switch (c.cmd) {
        case Cmd.Connect:
        case Cmd.Stomp:
          this.onConnect(c, isBinary);
          break;
        case Cmd.Subscribe:
          this.onSubscribe(c, isBinary);
          break;
        case Cmd.Unsubscribe:
          this.onUnsubscribe(c, isBinary);
          break;
        case Cmd.Begin: {
          const tx = c.value(H_TRANSACTION);
          if (tx !== null && !this.transactions.has(tx) && this.fits(1, tx.length)) {
            this.transactions.add(tx);
            this.bytes += tx.length;
          }
          break;
        }
        case Cmd.Commit:
        case Cmd.Abort: {
          const tx = c.value(H_TRANSACTION);
          if (tx !== null && this.transactions.delete(tx)) this.bytes -= tx.length;
          this.awaitBlocking(c, c.cmd === Cmd.Commit ? 'a COMMIT awaits its receipt' : 'an ABORT awaits its receipt');
          break;
        }
        case Cmd.Ack:
        case Cmd.Nack:
          this.onAck(c);
          this.awaitBlocking(c, c.cmd === Cmd.Ack ? 'an ACK awaits its receipt' : 'a NACK awaits its receipt');
          break;
        default:
          // SEND (in a transaction it is covered by the open transaction), DISCONNECT (the session
          // is kept as is: a replayed DISCONNECT then finds it connected), unknown commands.
          break;
      }
      if (this.overflowed !== null) return;
    }
  }

  private onConnect(c: FrameCursor, isBinary: boolean): void {
    if (this.connect !== null) return; // a second CONNECT is a protocol error: the first stands
    const frame = Buffer.from(c.data.subarray(c.frameStart, c.frameEnd));
    if (!this.fits(1, frame.length)) return;
    this.connect = { frame, isBinary };
    this.frames++;
    this.bytes += frame.length;
    this.clientBeats = parseHeartBeat(c.rawValue(H_HEART_BEAT));
  }

  private onSubscribe(c: FrameCursor, isBinary: boolean): void {
    const id = c.value(H_ID);
    const destination = c.value(H_DESTINATION);
    if (id === null && destination === null) return; // not a subscription any broker would keep
    const key = id ?? `\u0000${destination}`;
    const receipt = c.value(H_RECEIPT);
    const ackMode = c.valueIs(H_ACK, ACK_CLIENT)
      ? AckMode.Client
      : c.valueIs(H_ACK, ACK_CLIENT_INDIVIDUAL)
        ? AckMode.ClientIndividual
        : AckMode.Auto;
    const frame = Buffer.from(c.data.subarray(c.frameStart, c.frameEnd));
    const previous = this.subs.get(key);
    if (previous) this.removeSub(previous); // a reused id: the broker would refuse it; the latest stands
    if (!this.fits(receipt === null ? 1 : 2, frame.length + (receipt?.length ?? 0))) return;
    const sub: Subscription = {
      key,
      frame,
      isBinary,
      destination,
      hasId: id !== null,
      ackMode,
      receipt,
      hadReceipt: receipt !== null,
      unsubscribe: null,
      lastAckId: null,
    };
    this.subs.set(key, sub);
    this.frames++;
    this.bytes += frame.length;
    if (ackMode !== AckMode.Auto) this.ackSubs++;
    if (receipt !== null) this.await(receipt, { kind: 'subscribe', sub });
  }

  private onUnsubscribe(c: FrameCursor, isBinary: boolean): void {
    const id = c.value(H_ID);
    let targets: Subscription[];
    if (id !== null) {
      const sub = this.subs.get(id);
      targets = sub ? [sub] : [];
    } else {
      // STOMP 1.0: by destination.
      const destination = c.value(H_DESTINATION);
      if (destination === null) return;
      const sub = this.subs.get(`\u0000${destination}`);
      targets = sub ? [sub] : [...this.subs.values()].filter((s) => s.destination === destination);
    }
    if (targets.length === 0) return;
    const receipt = c.value(H_RECEIPT);
    for (const sub of targets) {
      // (A 1.0 UNSUBSCRIBE by destination ending several subscriptions: no replay for its receipt.)
      if (receipt === null || sub.unsubscribe !== null || targets.length > 1) {
        this.removeSub(sub);
        continue;
      }
      // Kept until the receipt comes: if the backend dies first, both are replayed so the new one answers it.
      const frame = Buffer.from(c.data.subarray(c.frameStart, c.frameEnd));
      if (!this.fits(2, frame.length + receipt.length)) return;
      sub.unsubscribe = { frame, isBinary, receipt };
      this.frames++;
      this.bytes += frame.length;
      this.await(receipt, { kind: 'unsubscribe', sub });
      this.forgetAcks(sub); // the client stops acknowledging an unsubscribed subscription's messages
    }
  }

  private removeSub(sub: Subscription): void {
    if (this.subs.get(sub.key) !== sub) return;
    this.subs.delete(sub.key);
    this.frames--;
    this.bytes -= sub.frame.length;
    if (sub.unsubscribe) {
      this.frames--;
      this.bytes -= sub.unsubscribe.frame.length;
    }
    if (sub.receipt !== null) this.unawait(sub.receipt);
    if (sub.unsubscribe) this.unawait(sub.unsubscribe.receipt);
    this.forgetAcks(sub);
    if (sub.ackMode !== AckMode.Auto) {
      this.ackSubs--;
      if (this.ackSubs === 0) this.ackOverflow = false;
    }
  }

  private forgetAcks(sub: Subscription): void {
    if (sub.lastAckId !== null) {
      this.lastUnacked.delete(sub.lastAckId);
      this.bytes -= sub.lastAckId.length;
      sub.lastAckId = null;
    }
    if (sub.ackMode === AckMode.ClientIndividual && this.unacked.size > 0) {
      for (const [ackId, s] of this.unacked) {
        if (s === sub) {
          this.unacked.delete(ackId);
          this.bytes -= ackId.length;
        }
      }
    }
  }

  private await(receipt: string, what: Awaited): void {
    const previous = this.awaited.get(receipt);
    if (previous) this.settle(receipt, previous, false);
    this.awaited.set(receipt, what);
    this.bytes += receipt.length;
    if (what.kind === 'blocking') this.blocking++;
  }

  private unawait(receipt: string): void {
    const what = this.awaited.get(receipt);
    if (!what) return;
    this.awaited.delete(receipt);
    this.bytes -= receipt.length;
    if (what.kind === 'blocking') this.blocking--;
  }

  private awaitBlocking(c: FrameCursor, what: string): void {
    const receipt = c.value(H_RECEIPT);
    if (receipt === null || !this.fits(1, receipt.length)) return;
    this.await(receipt, { kind: 'blocking', what });
  }

  /** An awaited receipt came (`answered`) or was superseded by a new frame reusing it. */
  private settle(receipt: string, what: Awaited, answered: boolean): void {
    this.unawait(receipt);
    if (what.kind === 'subscribe' && what.sub.receipt === receipt) what.sub.receipt = null;
    if (what.kind === 'unsubscribe' && what.sub.unsubscribe?.receipt === receipt) {
      if (answered) this.removeSub(what.sub);
      else {
        this.frames--;
        this.bytes -= what.sub.unsubscribe.frame.length;
        what.sub.unsubscribe = null;
      }
    }
  }

  /** The ack id an ACK/NACK names: `id` in 1.2, `message-id` before. */
  private ackIdOf(c: FrameCursor, command: 'ack' | 'message'): string | null {
    const v12 = this.connected?.version === '1.2';
    if (command === 'message') return v12 ? c.value(H_ACK) : c.value(H_MESSAGE_ID);
    return v12 ? c.value(H_ID) : c.value(H_MESSAGE_ID);
  }

  private onAck(c: FrameCursor): void {
    if (this.ackSubs === 0) return;
    const ackId = this.ackIdOf(c, 'ack');
    if (ackId === null) return;
    // client mode is cumulative: an ACK/NACK of the last message delivered settles them all.
    const sub = this.lastUnacked.get(ackId);
    if (sub) {
      this.lastUnacked.delete(ackId);
      this.bytes -= ackId.length;
      sub.lastAckId = null;
      return;
    }
    if (this.unacked.delete(ackId)) this.bytes -= ackId.length;
  }

  received(data: Buffer, _isBinary: boolean): void {
    if (this.overflowed !== null) return;
    const c = stateCursor.reset(data);
    // Fast path, the feed: nothing awaited and every subscription acknowledged automatically.
    if (this.connected !== null && this.awaited.size === 0 && this.ackSubs === 0) {
      if (c.next() && c.cmd === Cmd.Error) this.ended = 'the backend sent an ERROR frame (the STOMP session is over)';
      return;
    }
    while (c.next()) {
      switch (c.cmd) {
        case Cmd.Connected:
          if (this.connected === null) {
            this.connected = { version: c.rawValue(H_VERSION) ?? '1.0', beats: parseHeartBeat(c.rawValue(H_HEART_BEAT)) };
          }
          break;
        case Cmd.Receipt: {
          if (this.awaited.size === 0) break;
          const receipt = c.value(H_RECEIPT_ID);
          const what = receipt === null ? undefined : this.awaited.get(receipt);
          if (what) this.settle(receipt!, what, true);
          break;
        }
        case Cmd.Message:
          if (this.ackSubs > 0) this.onMessage(c);
          break;
        case Cmd.Error:
          this.ended = 'the backend sent an ERROR frame (the STOMP session is over)';
          break;
        default:
          break;
      }
      if (this.overflowed !== null) return;
    }
  }

  private onMessage(c: FrameCursor): void {
    const subId = c.value(H_SUBSCRIPTION);
    // A 1.0 subscription without id: its messages may carry no subscription header.
    const sub = (subId === null ? undefined : this.subs.get(subId)) ?? this.subs.get(`\u0000${c.value(H_DESTINATION) ?? ''}`);
    if (!sub || sub.ackMode === AckMode.Auto || sub.unsubscribe !== null) return;
    const ackId = this.ackIdOf(c, 'message');
    if (ackId === null) return;
    if (sub.ackMode === AckMode.Client) {
      if (sub.lastAckId !== null) {
        this.lastUnacked.delete(sub.lastAckId);
        this.bytes -= sub.lastAckId.length;
        sub.lastAckId = null;
      }
      if (this.bytes + ackId.length > this.limits.maxBytes) {
        this.ackOverflow = true;
        return;
      }
      sub.lastAckId = ackId;
      this.lastUnacked.set(ackId, sub);
      this.bytes += ackId.length;
      return;
    }
    if (this.unacked.has(ackId)) return;
    if (this.itemCount() + 1 > this.limits.maxFrames || this.bytes + ackId.length > this.limits.maxBytes) {
      this.ackOverflow = true;
      return;
    }
    this.unacked.set(ackId, sub);
    this.bytes += ackId.length;
  }

  unresumable(): string | null {
    if (this.overflowed !== null) return this.overflowed;
    if (this.ended !== null) return this.ended;
    if (this.transactions.size > 0) {
      const tx = this.transactions.values().next().value!;
      return closeReason(`STOMP transaction ${tx} open`);
    }
    if (this.blocking > 0) {
      for (const what of this.awaited.values()) if (what.kind === 'blocking') return what.what;
    }
    if (this.ackOverflow || this.unacked.size > 0 || this.lastUnacked.size > 0) return 'STOMP messages await an ACK';
    return null;
  }

  replay(): Frame[] {
    this.resuming = false;
    // Before CONNECTED, the CONNECT is an unanswered request: the tracker replays it and the new
    // CONNECTED goes to the client, whose first it is.
    if (this.overflowed !== null || this.connect === null || this.connected === null) return [];
    const frames: Frame[] = [{ data: this.connect.frame, isBinary: this.connect.isBinary }];
    for (const sub of this.subs.values()) {
      // A receipt already delivered must not come again; one still awaited is asked of the new backend.
      const frame = sub.hadReceipt && sub.receipt === null ? withoutReceipt(sub.frame) : sub.frame;
      frames.push({ data: frame, isBinary: sub.isBinary, afterResume: true });
      if (sub.unsubscribe) frames.push({ data: sub.unsubscribe.frame, isBinary: sub.unsubscribe.isBinary, afterResume: true });
    }
    this.resuming = true;
    return frames;
  }

  resumeAnswer(data: Buffer, _isBinary: boolean): ResumeVerdict {
    if (!this.resuming) return 'pass';
    const c = stateCursor.reset(data);
    while (c.next()) {
      if (c.cmd === Cmd.Error) {
        this.resuming = false;
        const message = c.value(H_MESSAGE);
        return { refused: true, forward: true, code: 1008, reason: closeReason(`STOMP ERROR${message ? `: ${message}` : ''}`) };
      }
      if (c.cmd === Cmd.Connected) {
        this.resuming = false;
        const old = this.connected!;
        const version = c.rawValue(H_VERSION) ?? '1.0';
        if (version !== old.version) {
          return { refused: true, forward: false, code: 1012, reason: closeReason(`STOMP version ${version} on the new backend, was ${old.version}`) };
        }
        if (!heartBeatsCompatible(this.clientBeats, old.beats, parseHeartBeat(c.rawValue(H_HEART_BEAT)))) {
          return { refused: true, forward: false, code: 1012, reason: 'STOMP heart-beats differ on the new backend' };
        }
        return 'resumed';
      }
    }
    // Heart-beats, frames before CONNECTED (a broker would not send any), unreadable frames.
    return 'pass';
  }
}

const classifyCursor = new FrameCursor();
const stateCursor = new FrameCursor();
const auxCursor = new FrameCursor();

function classifyStomp(data: Buffer, from: Sender, ids: string[]): MessageKind {
  const c = classifyCursor.reset(data);
  const start = ids.length;
  let kind: MessageKind = 'other';
  while (c.next()) {
    const cmd = c.cmd;
    if (from === 'client') {
      if (cmd === Cmd.Connect || cmd === Cmd.Stomp) {
        ids.push(CONNECT_ID);
        kind = 'request';
      } else if (
        cmd === Cmd.Send || cmd === Cmd.Ack || cmd === Cmd.Nack || cmd === Cmd.Begin ||
        cmd === Cmd.Commit || cmd === Cmd.Abort || cmd === Cmd.Disconnect
      ) {
        const receipt = c.value(H_RECEIPT);
        if (receipt !== null) {
          ids.push(receipt);
          kind = 'request';
        }
      }
    } else if (cmd === Cmd.Connected) {
      ids.push(CONNECT_ID);
      kind = 'response';
    } else if (cmd === Cmd.Receipt || cmd === Cmd.Error) {
      const receipt = c.value(H_RECEIPT_ID);
      if (receipt !== null) {
        ids.push(receipt);
        kind = 'response';
      }
    }
  }
  if (c.error) {
    ids.length = start;
    return 'malformed';
  }
  return kind;
}

/** The STOMP codec (name 'stomp'). See the notes at the top of this file. */
export function createStompCodec(): SessionCodec {
  return {
    name: 'stomp',
    subprotocols: ['v10.stomp', 'v11.stomp', 'v12.stomp'],
    classify(data: Buffer, _isBinary: boolean, from: Sender, ids: string[]): MessageKind {
      return classifyStomp(data, from, ids);
    },
    createState(limits: StateLimits): ProtocolState {
      return new StompState(limits);
    },
  };
}
