// The frame-level relay's WebSocket peer: our own framing over the TCP (or TLS) socket that `ws`'s
// handshake — or ours, handshake.ts — left open.
//
// Why not `ws` here: ws reassembles every message into a new buffer, then the other leg's ws frames
// it again, masks it into another new buffer and writes it on its own. Per message that is two
// allocations, two copies and a system call. A proxy needs none of it: a frame's bytes can go to the
// other leg as they came. A client's frames are masked with the key the client chose (unpredictable
// to any script in it, which is what RFC 6455 §10.3 asks of masking), so the backend can be sent the
// same masked bytes; a backend's frames are unmasked, as a client must get them. So a read's whole
// messages leave in one write, unchanged, and the only per-frame work is reading its header.
//
// What stays whole: a message. Its frames are forwarded once its last frame (FIN) has arrived — a
// fragmented message's frames are held until then, uncopied — so a backend change (failover,
// migration, a codec's replay) happens only between messages, and no leg ever gets half a message.
// A frame split across reads is joined once. Messages the session must read (a codec's, those held
// while failing over) are unmasked and delivered whole through the sink instead.
//
// A backend leg reads into one reused buffer (BackendReads, net's `onread`) instead of a new buffer
// and a 'data' event per read. A client leg comes from node:http, which has no such option: it
// reads through 'data'. Both go to receive(), so the frames are parsed in one place.
//
// The RFC's rules for each leg hold: client frames must be masked and backend frames must not be;
// RSV bits need a negotiated extension (none here: permessage-deflate sessions use WsPeer); control
// frames are at most 125 bytes, never fragmented, and answered on their own leg (ping → pong; close
// → close, with the code checked and the reason's UTF-8 validated). A broken rule closes that one
// leg with 1002 (1007 for a reason that is not UTF-8, 1009 for a message over maxPayload), as ws
// does. Text payloads are not validated here: an intermediary passes them on, and the endpoint that
// interprets them validates them (a codec that reads them treats invalid ones as malformed).
import { isUtf8 } from 'node:buffer';
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { isSendableCloseCode } from '../../common/close-codes.js';
import { CLOSED, CLOSING, OPEN, type Peer, type PeerError, type PeerSink } from './peer.js';

const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
/** As ws: a closing handshake the other side does not finish is cut after this. */
const CLOSE_TIMEOUT_MS = 30_000;
/** After a closing handshake, how long a backend's leg waits for the backend to close TCP first. */
const SERVER_CLOSE_WAIT_MS = 1000;
const EMPTY = Buffer.alloc(0);
/**
 * A leg not yet heard (dialled, not serving) keeps reading up to this much before its socket is
 * paused: most legs are heard at once, and pausing and resuming a socket costs system calls.
 */
const HOLD_BYTES = 64 * 1024;
/** Payloads up to this are copied after their header (one write); larger ones go out as two (one writev). */
const COPY_LIMIT = 1024;
/** Below this, masking in JavaScript beats calling the native addon. */
const NATIVE_MASK_MIN = 128;
/**
 * A backend leg's first read buffer: room for a 101, pongs and small messages. A slice of Node's
 * shared pool, so an idle leg holds no memory page of its own (a buffer of its own would cost every
 * idle session about 3 KiB of RSS: the page its first read touches).
 */
const FIRST_READ_BYTES = 512;
/** Once a read fills the buffer: libuv's suggested read size, as Node's own reads get. */
const READ_BUFFER_BYTES = 64 * 1024;
/**
 * A full-size buffer goes back to FIRST_READ_BYTES at a small read this long after the last read
 * that filled a buffer: a leg gone quiet keeps no 64 KiB (it gives it up at its next read, a pong
 * at the latest), and a leg whose reads come in bursts is not switched back and forth at every
 * burst (a 64 KiB buffer per switch, and reads split at 512 bytes, cost twice the CPU per message).
 */
const SHRINK_AFTER_MS = 1000;

interface BufferUtil {
  mask(source: Buffer, mask: Buffer, output: Buffer, offset: number, length: number): void;
  unmask(buffer: Buffer, mask: Buffer): void;
}
/** ws's optional native addon (the image ships it); JavaScript loops without it. */
const native: BufferUtil | null = (() => {
  try {
    return createRequire(import.meta.url)('bufferutil') as BufferUtil;
  } catch {
    return null;
  }
})();

/** Random masking keys for the frames the sidecar writes itself, drawn 4 bytes at a time. */
const keyPool = Buffer.alloc(4096);
let keyOffset = keyPool.length;

const kPeer = Symbol('framePeer');
type TaggedSocket = Socket & { [kPeer]: FramePeer };

// Shared listeners (no closure per connection): each socket points at its peer.
function onData(this: Socket, chunk: Buffer): void {
  (this as TaggedSocket)[kPeer].receive(chunk);
}
function onEnd(this: Socket): void {
  (this as TaggedSocket)[kPeer].ended();
}
function onClose(this: Socket): void {
  (this as TaggedSocket)[kPeer].socketClosed();
}
function destroySocket(socket: Socket): void {
  socket.destroy();
}
function onError(this: Socket, err: Error): void {
  (this as TaggedSocket)[kPeer].socketError(err);
}
function parseHeld(peer: FramePeer): void {
  peer.parseHeld();
}

/** Whoever reads a backend socket's bytes: the handshake, then the FramePeer. */
export interface ChunkReader {
  receive(chunk: Buffer): void;
}
const NO_READER: ChunkReader = { receive: () => undefined };

/**
 * A backend socket's reads (net's `onread`, for net.connect and tls.connect alike): into one
 * buffer, read over only while nothing holds a piece of it. Whoever keeps a piece past its read —
 * a frame split over reads, a fragmented message's frames, a message handed to the session, the
 * handshake's leftover bytes, a relayed slice still queued for writing — calls lend(), and the next
 * read goes after that read's bytes (Node asks `buffer()` where to read after every read), or into
 * a new buffer once less than a quarter of it is left. So nothing is copied to make reuse safe, and
 * no byte is read over while something may refer to it. Saves, per read, Node's new buffer (and
 * the scavenges after it) and its 'data' event and stream bookkeeping. 'end', 'close' and 'error'
 * still come as events; pause() and resume() stop and start the reads.
 */
export class BackendReads {
  reader: ChunkReader = NO_READER;
  private buffer = EMPTY;
  /** Where in `buffer` the next read goes: after every byte lent. */
  private offset = 0;
  /** buffer[offset..], as handed to Node. */
  private free = EMPTY;
  /** Bytes of the last read. */
  private bytes = 0;
  private lent = false;
  /** When a read last filled the buffer. */
  private filledAt = 0;

  /** `now`: the clock (a test's own). */
  constructor(private readonly now: () => number = Date.now) {}

  readonly onread = {
    buffer: (): Buffer => {
      if (this.buffer === EMPTY) this.moveOn(FIRST_READ_BYTES);
      else if (this.bytes === this.free.length) {
        this.filledAt = this.now();
        this.moveOn(READ_BUFFER_BYTES);
      } else if (this.buffer.length === READ_BUFFER_BYTES && this.bytes <= FIRST_READ_BYTES && this.now() - this.filledAt >= SHRINK_AFTER_MS) {
        this.moveOn(FIRST_READ_BYTES);
      } else if (this.lent) this.moveOn(this.buffer.length);
      return this.free;
    },
    // Pausing is the reader's socket.pause(), which stops reads at once under `onread`.
    callback: (bytes: number, free: Buffer): boolean => {
      this.bytes = bytes;
      this.reader.receive(free.subarray(0, bytes));
      return true;
    },
  };

  /** Something keeps a piece of the current read: it is not read over. */
  lend(): void {
    this.lent = true;
  }

  /** `reader` stops reading (it gave the socket to another, or is done with it). */
  release(reader: ChunkReader): void {
    if (this.reader === reader) this.reader = NO_READER;
  }

  /**
   * The next read's room, in a buffer of `size`: the first read, one that filled the buffer (a busy
   * leg: 64 KiB next), a small one long after the last full one (back to 512 bytes), or one that
   * lent (after its bytes).
   */
  private moveOn(size: number): void {
    if (this.lent) this.offset += this.bytes;
    this.lent = false;
    this.bytes = 0;
    if (size !== this.buffer.length || this.buffer.length - this.offset < size / 4) {
      this.buffer = size === READ_BUFFER_BYTES ? Buffer.allocUnsafeSlow(size) : Buffer.allocUnsafe(size);
      this.offset = 0;
    }
    this.free = this.offset === 0 ? this.buffer : this.buffer.subarray(this.offset);
  }
}

export class FramePeer implements Peer {
  readyState = OPEN;
  readonly verbatim = true;
  no = 0;
  private sink: PeerSink | null = null;
  /** Bytes not parsed yet: an incomplete frame, or what arrived while paused (held). */
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** Bytes `parts` must hold before parsing them is worth trying. */
  private need = 0;
  private paused = true;
  /** No more frames are read: a close frame came, the protocol was broken, or the socket is gone. */
  private stopped = false;
  /** The open message's opcode (0: none), its payload bytes so far, and its frames before the last. */
  private messageOpcode = 0;
  private messageBytes = 0;
  private held: Buffer[] | null = null;
  private closeSent = false;
  private closeReceived = false;
  private closeCode = 1006;
  private closeReason = EMPTY;
  private closeTimer: NodeJS.Timeout | null = null;

  /**
   * `masks`: this side is the WebSocket client (the backend leg): it masks what it writes, and
   * frames it reads must not be masked. `head`: bytes that came with the handshake. `reads`: the
   * socket reads through `onread` (a backend leg), not 'data' events. Starts paused: nothing is
   * parsed until resume() (see HOLD_BYTES).
   */
  constructor(
    private readonly socket: Socket,
    head: Buffer,
    readonly protocol: string,
    private readonly masks: boolean,
    private readonly maxPayload: number,
    private readonly reads: BackendReads | null = null,
  ) {
    (socket as TaggedSocket)[kPeer] = this;
    socket.setTimeout(0);
    socket.setNoDelay(true);
    if (reads === null) socket.on('data', onData);
    else reads.reader = this;
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
    if (head.length > 0) this.keep(head);
  }

  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  attach(sink: PeerSink): void {
    this.sink = sink;
  }

  // ---- reading -------------------------------------------------------------------------------

  /** @internal (socket listener) */
  receive(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.paused) {
      this.keep(chunk);
      if (this.partsLength > HOLD_BYTES) this.socket.pause();
      return;
    }
    while (this.partsLength > 0) {
      const missing = this.need - this.partsLength;
      if (missing > chunk.length) {
        this.keep(chunk);
        return;
      }
      // Only the frame begun in an earlier read is copied (joined with the head of this one); the
      // rest of this read is parsed where it lies. (need 0: what was held while paused, all of it.)
      const take = missing > 0 ? missing : chunk.length;
      this.parts.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      this.partsLength += take;
      this.parse(this.takeParts());
      chunk = chunk.subarray(take);
      if (chunk.length === 0 || this.stopped) return;
      if (this.paused) return this.receive(chunk);
    }
    this.parse(chunk);
  }

  /** @internal (after resume) */
  parseHeld(): void {
    if (this.paused || this.stopped || this.partsLength === 0 || this.partsLength < this.need) return;
    this.parse(this.takeParts());
  }

  /** Bytes left for a later read to complete (or for resume()): their read buffer is lent. */
  private keep(bytes: Buffer): void {
    this.parts.push(bytes);
    this.partsLength += bytes.length;
    this.reads?.lend();
  }

  private takeParts(): Buffer {
    const parts = this.parts;
    const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.partsLength);
    this.parts = [];
    this.partsLength = 0;
    this.need = 0;
    return buf;
  }

  /** Reads the frames in `buf`; consecutive whole messages going to one peer are relayed in one piece. */
  private parse(buf: Buffer): void {
    const sink = this.sink!;
    let pos = 0;
    let need = 0;
    let failCode = 0;
    let failWhy = '';
    // The run of whole messages not yet relayed: buf[runStart, runEnd) for runTarget.
    let runTarget: Peer | null = null;
    let runStart = 0;
    let runEnd = 0;
    while (pos < buf.length) {
      if (this.paused || this.stopped) break;
      const avail = buf.length - pos;
      if (avail < 2) {
        need = 2;
        break;
      }
      const b0 = buf[pos]!;
      const b1 = buf[pos + 1]!;
      let len = b1 & 0x7f;
      let hlen = 2;
      if (len === 126) {
        if (avail < 4) {
          need = 4;
          break;
        }
        len = buf.readUInt16BE(pos + 2);
        hlen = 4;
      } else if (len === 127) {
        if (avail < 10) {
          need = 10;
          break;
        }
        const high = buf.readUInt32BE(pos + 2);
        len = high * 0x1_0000_0000 + buf.readUInt32BE(pos + 6);
        hlen = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (masked) hlen += 4;
      const opcode = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      if (masked === this.masks) {
        failCode = 1002;
        failWhy = masked ? 'a backend frame is masked' : 'a client frame is not masked';
        break;
      }
      if ((b0 & 0x70) !== 0) {
        failCode = 1002;
        failWhy = 'RSV bits set without a negotiated extension';
        break;
      }
      const end = pos + hlen + len;
      if (opcode >= 8) {
        if (opcode > OP_PONG || !fin || len > 125) {
          failCode = 1002;
          failWhy = opcode > OP_PONG ? `invalid opcode ${opcode}` : !fin ? 'fragmented control frame' : 'control frame over 125 bytes';
          break;
        }
        if (end > buf.length) {
          need = end - pos;
          break;
        }
        if (runTarget !== null) runTarget = this.relayRun(sink, runTarget, buf, runStart, runEnd);
        this.control(opcode, buf, pos + hlen, len, masked ? pos + hlen - 4 : -1);
        pos = end;
        continue;
      }
      // Checked before the frame is whole (a frame over the limit is refused before it is read),
      // applied once it is (an incomplete frame is parsed again when the rest arrives).
      if (opcode === 0 ? this.messageOpcode === 0 : opcode > OP_BINARY || this.messageOpcode !== 0) {
        failCode = 1002;
        failWhy = opcode > OP_BINARY ? `invalid opcode ${opcode}` : opcode === 0 ? 'continuation frame without a message' : 'new message before the last one ended';
        break;
      }
      const messageBytes = (opcode === 0 ? this.messageBytes : 0) + len;
      if (messageBytes > this.maxPayload) {
        failCode = 1009;
        failWhy = 'message too big';
        break;
      }
      if (end > buf.length) {
        need = end - pos;
        break;
      }
      if (opcode !== 0) this.messageOpcode = opcode;
      this.messageBytes = messageBytes;
      if (!fin) {
        (this.held ??= []).push(buf.subarray(pos, end));
        this.reads?.lend();
        pos = end;
        continue;
      }
      // A whole message ends here.
      const isBinary = this.messageOpcode === OP_BINARY;
      this.messageOpcode = 0;
      const target = sink.route(this, this.messageBytes);
      const held = this.held;
      this.held = null;
      if (target !== null && held === null) {
        if (runTarget !== target || runEnd !== pos) {
          if (runTarget !== null) this.relayRun(sink, runTarget, buf, runStart, runEnd);
          runTarget = target;
          runStart = pos;
        }
        runEnd = end;
      } else {
        if (runTarget !== null) runTarget = this.relayRun(sink, runTarget, buf, runStart, runEnd);
        if (target !== null) {
          for (const frame of held!) this.relay(sink, target, frame);
          this.relay(sink, target, buf.subarray(pos, end));
        } else {
          // The session may keep it (a codec's state, a message held while failing over).
          this.reads?.lend();
          sink.message(this, payloadOf(held, buf, pos, end), isBinary);
        }
      }
      pos = end;
    }
    if (runTarget !== null) this.relayRun(sink, runTarget, buf, runStart, runEnd);
    if (failCode !== 0) {
      this.fail(failCode, failWhy);
      return;
    }
    if (pos < buf.length && !this.stopped) {
      this.keep(pos === 0 ? buf : buf.subarray(pos));
      this.need = this.paused ? 0 : need;
    }
  }

  private relayRun(sink: PeerSink, target: Peer, buf: Buffer, start: number, end: number): null {
    this.relay(sink, target, buf.subarray(start, end));
    return null;
  }

  /**
   * Relays frames that lie in the read buffer. A write Node could not finish at once (its request
   * pending in libuv, or the chunk queued in the Writable: corked, or behind an earlier write)
   * still refers to them: writableLength (bufferedAmount) counts a chunk until its write is done.
   */
  private relay(sink: PeerSink, target: Peer, frames: Buffer): void {
    sink.relay(this, target, frames);
    if (target.bufferedAmount > 0) this.reads?.lend();
  }

  private control(opcode: number, buf: Buffer, start: number, len: number, maskAt: number): void {
    const payload = Buffer.from(buf.subarray(start, start + len));
    if (maskAt >= 0) for (let i = 0; i < len; i++) payload[i]! ^= buf[maskAt + (i & 3)]!;
    if (opcode === OP_PING) {
      if (this.readyState === OPEN) this.writeFrame(OP_PONG, payload);
      return;
    }
    if (opcode === OP_PONG) {
      this.sink!.pong(this);
      return;
    }
    // Close (RFC 6455 §5.5.1): answered with the same code, then this leg reads nothing more.
    if (len === 1) return this.fail(1002, 'close frame with a 1-byte payload');
    const code = len === 0 ? 1005 : payload.readUInt16BE(0);
    if (len > 0 && !isSendableCloseCode(code)) return this.fail(1002, `invalid close code ${code}`);
    const reason = payload.subarray(2);
    if (!isUtf8(reason)) return this.fail(1007, 'close reason is not valid UTF-8');
    this.closeReceived = true;
    this.closeCode = code;
    this.closeReason = reason;
    this.stopped = true;
    if (!this.closeSent) this.close(len === 0 ? undefined : code, reason);
    else this.closeConnection();
  }

  /** The peer broke the protocol: tell the sink, then close with `code` (as ws does). */
  private fail(code: number, why: string): void {
    this.stopped = true;
    const err: PeerError = new Error(why);
    err.closeCode = code;
    this.sink?.error(this, err);
    this.close(code);
  }

  // ---- writing -------------------------------------------------------------------------------

  send(data: Buffer, isBinary: boolean, done?: () => void): void {
    if (this.readyState !== OPEN) {
      if (done) process.nextTick(done);
      return;
    }
    this.writeFrame(isBinary ? OP_BINARY : OP_TEXT, data, done);
  }

  writeFrames(frames: Buffer, done?: () => void): void {
    if (this.readyState !== OPEN) {
      if (done) process.nextTick(done);
      return;
    }
    this.socket.write(frames, done);
  }

  ping(): void {
    if (this.readyState === OPEN) this.writeFrame(OP_PING, EMPTY);
  }

  /** One frame with FIN set; masked with a fresh random key when this side is the client. */
  private writeFrame(opcode: number, payload: Buffer, done?: () => void): void {
    const len = payload.length;
    const lengthBytes = len < 126 ? 0 : len < 0x1_0000 ? 2 : 8;
    const hlen = 2 + lengthBytes + (this.masks ? 4 : 0);
    const socket = this.socket;
    if (!this.masks && len > COPY_LIMIT) {
      const header = Buffer.allocUnsafe(hlen);
      writeHeader(header, opcode, len, lengthBytes, false);
      socket.cork();
      socket.write(header);
      socket.write(payload, done);
      socket.uncork();
      return;
    }
    const out = Buffer.allocUnsafe(hlen + len);
    writeHeader(out, opcode, len, lengthBytes, this.masks);
    if (this.masks) {
      if (keyOffset === keyPool.length) {
        randomFillSync(keyPool);
        keyOffset = 0;
      }
      const keyAt = hlen - 4;
      keyPool.copy(out, keyAt, keyOffset, keyOffset + 4);
      keyOffset += 4;
      if (native !== null && len >= NATIVE_MASK_MIN) native.mask(payload, out.subarray(keyAt, hlen), out, hlen, len);
      else for (let i = 0; i < len; i++) out[hlen + i] = payload[i]! ^ out[keyAt + (i & 3)]!;
    } else {
      payload.copy(out, hlen);
    }
    socket.write(out, done);
  }

  // ---- flow and lifetime ---------------------------------------------------------------------

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.socket.isPaused()) this.socket.resume();
    // What arrived while paused is parsed after the caller's step, as a read would be.
    if (this.partsLength > 0) process.nextTick(parseHeld, this);
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  close(code?: number, reason: string | Buffer = EMPTY): void {
    if (this.readyState === CLOSED) return;
    if (this.closeSent) {
      if (this.closeReceived) this.closeConnection();
      return;
    }
    this.readyState = CLOSING;
    let payload = EMPTY;
    if (code !== undefined) {
      const text = typeof reason === 'string' ? Buffer.from(reason) : reason;
      payload = Buffer.allocUnsafe(2 + text.length);
      payload.writeUInt16BE(code, 0);
      text.copy(payload, 2);
    }
    this.writeFrame(OP_CLOSE, payload);
    this.closeSent = true;
    this.closeTimer = setTimeout(destroySocket, CLOSE_TIMEOUT_MS, this.socket);
    if (this.closeReceived) this.closeConnection();
  }

  /**
   * Both close frames are through: the TCP connection goes, closed first by the server as RFC
   * 6455 §7.1.1 asks, so that the server keeps the TIME_WAIT. On the client's leg (the sidecar is
   * the server) that is at once when the close frame is out, which saves a shutdown() and a read
   * of the client's FIN. A backend's leg (the sidecar is the client) waits for the backend's FIN
   * and then closes without a shutdown() (ended()); a backend that does not close within
   * SERVER_CLOSE_WAIT_MS has its leg closed from here. Half-closing at once instead, as ws does,
   * raced the backend's FIN and left a TIME_WAIT on the sidecar for one connection in eight.
   */
  private closeConnection(): void {
    if (this.masks) {
      clearTimeout(this.closeTimer!);
      this.closeTimer = setTimeout(destroySocket, SERVER_CLOSE_WAIT_MS, this.socket);
    } else if (this.socket.writableLength === 0) this.socket.destroy();
    else if (!this.socket.writableEnded) this.socket.end();
  }

  terminate(): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSING;
    this.stopped = true;
    this.socket.destroy();
  }

  /**
   * @internal (socket listener) The other side closed its half. Without a closing handshake the
   * peer is gone (a crashed backend, a client that vanished), and the socket is dropped at once:
   * nothing written to it now would be read. So is a backend's leg whose closing handshake is
   * done (closeConnection). Otherwise ours is closed in turn, once what is written is out.
   */
  ended(): void {
    if (this.readyState === OPEN) this.readyState = CLOSING;
    if (!this.closeReceived && !this.closeSent) this.socket.destroy();
    else if (this.masks && this.closeReceived && this.closeSent) this.socket.destroy();
    else if (!this.socket.writableEnded) this.socket.end();
  }

  /** @internal (socket listener) */
  socketClosed(): void {
    this.readyState = CLOSED;
    this.stopped = true;
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    this.sink?.disconnected(this, this.closeReceived ? this.closeCode : 1006, this.closeReason);
  }

  /** @internal (socket listener) 'close' follows. */
  socketError(err: Error): void {
    this.sink?.error(this, err);
  }
}

/** A message's payload, unmasked (in place: the frames are not relayed): its held frames, then buf[start, end). */
function payloadOf(held: Buffer[] | null, buf: Buffer, start: number, end: number): Buffer {
  if (held === null) return unmaskedPayload(buf, start, end);
  const payloads = held.map((frame) => unmaskedPayload(frame, 0, frame.length));
  payloads.push(unmaskedPayload(buf, start, end));
  return Buffer.concat(payloads);
}

function unmaskedPayload(buf: Buffer, start: number, end: number): Buffer {
  const b1 = buf[start + 1]!;
  const len7 = b1 & 0x7f;
  const masked = (b1 & 0x80) !== 0;
  const at = start + 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
  const payload = buf.subarray(at, end);
  if (!masked) return payload;
  const keyAt = at - 4;
  if (native !== null && payload.length >= NATIVE_MASK_MIN) native.unmask(payload, buf.subarray(keyAt, at));
  else for (let i = 0; i < payload.length; i++) payload[i]! ^= buf[keyAt + (i & 3)]!;
  return payload;
}

function writeHeader(out: Buffer, opcode: number, len: number, lengthBytes: number, masked: boolean): void {
  out[0] = 0x80 | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (lengthBytes === 0) out[1] = maskBit | len;
  else if (lengthBytes === 2) {
    out[1] = maskBit | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = maskBit | 127;
    out.writeUInt32BE(Math.floor(len / 0x1_0000_0000), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
}
