// Every frame shape through the sidecar, compared byte for byte with what a `ws` server parses.
// A raw client writes crafted frames (fragments, control frames between them, any TCP chunking);
// a real `ws` backend records the messages and the close it gets. Whatever relays frames inside
// the sidecar (message relay today, frame relay per issue 13), the backend must see what the
// client meant, the client must only ever see well-formed server frames, and what a `ws` endpoint
// fails as a protocol error must fail that session, and only that one.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Sidecar } from '../sidecar/sidecar.js';
import { stopWsServer } from '../tools/echo-backend.js';
import { backendsYaml, startSidecar, waitFor } from './helpers.js';
import { mulberry32 } from './prng.js';
import { acceptFor, rawBackend, switching } from './raw-backend.js';

const KiB = 1024;
const MAX_MESSAGE = 256 * KiB;
const CONT = 0x0;
const TEXT = 0x1;
const BINARY = 0x2;
const CLOSE = 0x8;
const PING = 0x9;
const PONG = 0xa;
/** RSV1 in the first header byte's RSV field (bits 6..4). */
const RSV1 = 0b100;

/** Payload lengths that cover the 7-, 16- and 64-bit length forms and their edges. */
const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 200 * KiB];

const random = mulberry32(13);
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(random() * 256)));

/** Exactly `n` bytes of valid UTF-8 with 1-, 2-, 3- and 4-byte characters mixed. */
function utf8(n: number): Buffer {
  const chars = ['a', 'é', '€', '𝄞'];
  let s = '';
  let left = n;
  while (left > 0) {
    const c = chars[Math.floor(random() * chars.length)]!;
    const len = Buffer.byteLength(c);
    s += len <= left ? c : 'a';
    left -= len <= left ? len : 1;
  }
  return Buffer.from(s);
}

/** `payload` cut into consecutive pieces of these sizes (their sum is its length). */
function split(payload: Buffer, sizes: number[]): Buffer[] {
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    payload.length,
  );
  let at = 0;
  return sizes.map((s) => payload.subarray(at, (at += s)));
}

// ---- frames on the wire (RFC 6455 §5.2) ----------------------------------------------------

interface FrameSpec {
  opcode: number;
  payload?: Buffer;
  fin?: boolean;
  /** RSV1..3 as a 3-bit number (RSV1 = 0b100). */
  rsv?: number;
  masked?: boolean;
}

/** One frame, masked with a fresh key unless `masked: false`; the shortest length form. */
function frame({ opcode, payload = Buffer.alloc(0), fin = true, rsv = 0, masked = true }: FrameSpec): Buffer {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const header = Buffer.alloc(2 + lengthBytes + (masked ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  header[1] = (masked ? 0x80 : 0) | (lengthBytes === 0 ? n : lengthBytes === 2 ? 126 : 127);
  if (lengthBytes === 2) header.writeUInt16BE(n, 2);
  else if (lengthBytes === 8) header.writeBigUInt64BE(BigInt(n), 2);
  if (!masked) return Buffer.concat([header, payload]);
  const key = bytes(4);
  key.copy(header, 2 + lengthBytes);
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i]! ^= key[i & 3]!;
  return Buffer.concat([header, body]);
}

function headerLength(f: Buffer): number {
  const len7 = f[1]! & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (f[1]! & 0x80 ? 4 : 0);
}

function closePayload(code: number, reason = ''): Buffer {
  const p = Buffer.alloc(2 + Buffer.byteLength(reason));
  p.writeUInt16BE(code, 0);
  p.write(reason, 2);
  return p;
}

interface Message {
  data: Buffer;
  isBinary: boolean;
}

/** Messages as lines (type, length, digest) that assert.deepEqual can diff readably; bytes are compared after. */
function summary(messages: Message[]): string[] {
  return messages.map((m) => `${m.isBinary ? 'binary' : 'text'} ${m.data.length} ${createHash('sha256').update(m.data).digest('hex').slice(0, 16)}`);
}

/**
 * What the client means to send: the frames in wire order, the messages a `ws` server reassembles
 * from them, and the pings it sent (each owed a pong with the same payload).
 */
class Script {
  readonly frames: Buffer[] = [];
  readonly expected: Message[] = [];
  readonly pings: Buffer[] = [];

  /** A message in these fragments; `between[i]`: control frames written after fragment i. */
  message(isBinary: boolean, fragments: Buffer[], between: FrameSpec[][] = []): this {
    fragments.forEach((payload, i) => {
      const fin = i === fragments.length - 1;
      this.frames.push(frame({ opcode: i === 0 ? (isBinary ? BINARY : TEXT) : CONT, payload, fin }));
      if (!fin) for (const c of between[i] ?? []) this.control(c);
    });
    this.expected.push({ data: Buffer.concat(fragments), isBinary });
    return this;
  }

  private control(c: FrameSpec): void {
    this.frames.push(frame(c));
    if (c.opcode === PING) this.pings.push(c.payload ?? Buffer.alloc(0));
  }
}

// ---- a raw client ----------------------------------------------------------------------------

interface Frame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/**
 * A WebSocket client on a bare TCP socket: the upgrade by hand (no extension offered), frames
 * written exactly as given, and every frame it reads checked against what a server may send.
 */
class RawClient {
  readonly messages: Message[] = [];
  readonly pongs: Buffer[] = [];
  /** The sidecar's close frame: code null when it had no payload. */
  closeReceived: { code: number | null; reason: string } | null = null;
  ended = false;
  /** Frames a server must not send (masked, RSV bits, oversized or fragmented control, bad sequence). */
  readonly violations: string[] = [];
  private closeSent = false;
  private pending: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] | null = null;
  private openIsBinary = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('close', () => (this.ended = true));
    socket.on('error', () => {}); // a peer that failed the connection may reset it; 'close' follows
  }

  static connect(port: number, path: string): Promise<RawClient> {
    const key = randomBytes(16).toString('base64');
    const accept = acceptFor(key);
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      socket.once('error', reject);
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        socket.off('data', onData);
        socket.off('error', reject);
        const response = head.subarray(0, end).toString('latin1');
        if (!/^HTTP\/1\.1 101 /.test(response)) return reject(new Error(`upgrade refused: ${response}`));
        if (!response.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) return reject(new Error(`bad accept: ${response}`));
        if (/sec-websocket-extensions/i.test(response)) return reject(new Error(`extension negotiated though none was offered: ${response}`));
        const client = new RawClient(socket);
        resolve(client);
        client.read(head.subarray(end + 4));
      };
      socket.on('data', onData);
    });
  }

  /** Each frame in its own write, or all of them in one. */
  send(frames: Buffer[], oneWrite = false): void {
    this.noteClose(frames);
    if (oneWrite) this.socket.write(Buffer.concat(frames));
    else for (const f of frames) this.socket.write(f);
  }

  /**
   * Each frame's header one byte per write and its payload in random chunks (mostly small), the
   * event loop turning between writes so the sidecar (in this process) reads each one on its own.
   */
  async trickle(frames: Buffer[]): Promise<void> {
    this.noteClose(frames);
    for (const f of frames) {
      const h = headerLength(f);
      for (let i = 0; i < h; i++) await this.writeAndYield(f.subarray(i, i + 1));
      for (let at = h; at < f.length; ) {
        const n = 1 + Math.floor(random() ** 3 * 16 * KiB);
        await this.writeAndYield(f.subarray(at, (at += n)));
      }
    }
  }

  private async writeAndYield(chunk: Buffer): Promise<void> {
    this.socket.write(chunk);
    await new Promise((r) => setImmediate(r));
  }

  /** A close among the frames written: the client answers nothing from then on (RFC 6455 §5.5.1). */
  private noteClose(frames: Buffer[]): void {
    if (frames.some((f) => (f[0]! & 0x0f) === CLOSE)) this.closeSent = true;
  }

  /** Answers the sidecar's close with its status code. */
  private closeBack(payload: Buffer): void {
    this.closeSent = true;
    this.socket.write(frame({ opcode: CLOSE, payload }));
  }

  async closedBySidecar(): Promise<{ code: number | null; reason: string }> {
    await waitFor(() => this.closeReceived !== null && this.ended, 'a close frame from the sidecar, then the connection closed');
    return this.closeReceived!;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Stops reading: the sidecar's writes to this client pile up, in the kernel and then in the sidecar. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  private read(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    for (;;) {
      const b = this.pending;
      if (b.length < 2) return;
      const len7 = b[1]! & 0x7f;
      const masked = (b[1]! & 0x80) !== 0;
      const at = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
      if (b.length < at) return;
      const n = len7 === 126 ? b.readUInt16BE(2) : len7 === 127 ? Number(b.readBigUInt64BE(2)) : len7;
      if (b.length < at + n) return;
      const payload = Buffer.from(b.subarray(at, at + n));
      if (masked) {
        const key = b.subarray(at - 4, at);
        for (let i = 0; i < n; i++) payload[i]! ^= key[i & 3]!;
      }
      this.pending = b.subarray(at + n);
      this.onFrame({ fin: (b[0]! & 0x80) !== 0, rsv: (b[0]! >> 4) & 7, opcode: b[0]! & 0x0f, masked, payload });
    }
  }

  private onFrame(f: Frame): void {
    const what = `frame opcode ${f.opcode} fin ${f.fin} length ${f.payload.length}`;
    if (f.masked) this.violations.push(`${what}: masked (a server must not mask)`);
    if (f.rsv !== 0) this.violations.push(`${what}: RSV ${f.rsv} without an extension`);
    if (f.opcode >= 0x8 && (!f.fin || f.payload.length > 125)) this.violations.push(`${what}: control frame fragmented or over 125 bytes`);
    switch (f.opcode) {
      case TEXT:
      case BINARY:
        if (this.fragments !== null) this.violations.push(`${what}: a new message while one is open`);
        this.fragments = [f.payload];
        this.openIsBinary = f.opcode === BINARY;
        break;
      case CONT:
        if (this.fragments === null) {
          this.violations.push(`${what}: continuation without a start`);
          return;
        }
        this.fragments.push(f.payload);
        break;
      case PING:
        if (!this.closeSent) this.socket.write(frame({ opcode: PONG, payload: f.payload }));
        return;
      case PONG:
        this.pongs.push(f.payload);
        return;
      case CLOSE:
        this.closeReceived = f.payload.length === 0 ? { code: null, reason: '' } : { code: f.payload.readUInt16BE(0), reason: f.payload.subarray(2).toString() };
        // A closing handshake's answer, then the TCP close (RFC 6455 §5.5.1).
        if (!this.closeSent) this.closeBack(f.payload.subarray(0, 2));
        this.socket.end();
        return;
      default:
        this.violations.push(`${what}: unknown opcode`);
        return;
    }
    if (f.fin) {
      this.messages.push({ data: Buffer.concat(this.fragments!), isBinary: this.openIsBinary });
      this.fragments = null;
    }
  }
}

// ---- the backend: a real ws server, one record per path --------------------------------------

interface BackendConnection {
  ws: WebSocket;
  messages: Message[];
  close: { code: number; reason: Buffer } | null;
  pongs: Buffer[];
}

describe('every frame shape through the sidecar, byte for byte', () => {
  const connections = new Map<string, BackendConnection>();
  let server: Server;
  let wss: WebSocketServer;
  let sidecar: Sidecar;
  let port: number;
  let nextPath = 0;

  before(async () => {
    server = createServer();
    wss = new WebSocketServer({ server, perMessageDeflate: false });
    wss.on('connection', (ws, req) => {
      const c: BackendConnection = { ws, messages: [], close: null, pongs: [] };
      connections.set(req.url!, c);
      ws.on('message', (data: Buffer, isBinary: boolean) => c.messages.push({ data, isBinary }));
      ws.on('close', (code, reason) => (c.close = { code, reason }));
      ws.on('pong', (data) => c.pongs.push(data));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const backendUrl = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    let url: string;
    ({ sidecar, url } = await startSidecar(
      // No keep-alive pings during the test: every frame the client gets is one the test caused.
      `${backendsYaml([{ id: 'ws', url: backendUrl }])}session:\n  maxMessageBytes: ${MAX_MESSAGE / KiB}KiB\n  pingInterval: 1m\n  pongTimeout: 1m\n`,
    ));
    port = Number(new URL(url).port);
  });
  after(async () => {
    await sidecar.stop(0);
    await stopWsServer(server, wss);
  });

  /** A raw client on a path of its own, and the backend connection the sidecar made for it. */
  async function open(name: string): Promise<{ client: RawClient; backend: BackendConnection }> {
    const path = `/${name.replace(/\W+/g, '-')}-${++nextPath}`;
    const client = await RawClient.connect(port, path);
    await waitFor(() => connections.has(path), `backend connection for ${path}`);
    return { client, backend: connections.get(path)! };
  }

  /** The backend got the script's messages in order, byte-equal and typed; each ping got its pong. */
  async function assertDelivered(script: Script, client: RawClient, backend: BackendConnection): Promise<void> {
    const n = script.expected.length;
    await waitFor(
      () => (backend.messages.length >= n && client.pongs.length >= script.pings.length) || client.ended || backend.close !== null,
      `${n} messages at the backend and ${script.pings.length} pongs at the client`,
    );
    assert.deepEqual(summary(backend.messages), summary(script.expected));
    for (let i = 0; i < n; i++) assert.ok(backend.messages[i]!.data.equals(script.expected[i]!.data), `message ${i} byte-equal`);
    assert.deepEqual(client.pongs, script.pings, 'one pong per ping, same payload, in order');
    assert.deepEqual(client.violations, []);
    assert.equal(client.ended, false);
    assert.equal(backend.close, null);
  }

  /** Every size as a text and a binary message, one frame each. */
  function unfragmented(): Script {
    const s = new Script();
    for (const n of SIZES) s.message(false, [utf8(n)]).message(true, [bytes(n)]);
    return s;
  }

  /**
   * Fragmented text and binary messages, 3+ fragments each with a 0-byte one, fragment lengths in
   * every length form, pings (0, 1, 125 bytes) and unsolicited pongs between fragments.
   */
  function fragmented(): Script {
    const s = new Script();
    const between: FrameSpec[][] = [
      [{ opcode: PING, payload: bytes(1) }],
      [{ opcode: PONG, payload: bytes(3) }],
      [{ opcode: PING, payload: Buffer.alloc(0) }, { opcode: PING, payload: bytes(125) }],
      [{ opcode: PONG }],
    ];
    const shapes = [
      [1, 0, 1],
      [0, 0, 5],
      [125, 126, 0, 127],
      [65535, 0, 65536, 1],
      [100 * KiB, 0, 100 * KiB],
      [0, 200 * KiB, 0],
    ];
    for (const sizes of shapes) {
      const total = sizes.reduce((a, b) => a + b, 0);
      s.message(true, split(bytes(total), sizes), between);
      s.message(false, split(utf8(total), sizes), between);
    }
    return s;
  }

  /** Text whose fragments all end inside a multi-byte character (ws validates UTF-8 per message). */
  function splitCharacters(): Script {
    const s = new Script();
    for (const text of ['é€𝄞', '𝄞𝄞𝄞𝄞 wörld €100', '€'.repeat(50000)]) {
      const payload = Buffer.from(text);
      const cuts: number[] = [];
      for (let i = 1; i < payload.length && cuts.length < 6; i++) if ((payload[i]! & 0xc0) === 0x80) cuts.push(i);
      const sizes = [...cuts, payload.length].map((c, i, all) => c - (i === 0 ? 0 : all[i - 1]!));
      s.message(false, split(payload, sizes), [[{ opcode: PING, payload: Buffer.from('mid-char') }]]);
    }
    return s;
  }

  const oneWritePerFrame: [string, string, () => Script][] = [
    ['unfragmented text and binary, every length form (0 to 200 KiB), one write per frame', 'unfragmented', unfragmented],
    ['fragmented text and binary (0-byte fragments, pings and pongs between fragments), one write per frame', 'fragmented', fragmented],
    ['multi-byte UTF-8 characters split across fragment boundaries', 'split-characters', splitCharacters],
  ];
  for (const [name, path, make] of oneWritePerFrame) {
    test(name, async () => {
      const { client, backend } = await open(path);
      const script = make();
      client.send(script.frames);
      await assertDelivered(script, client, backend);
      client.destroy();
    });
  }

  test('all of it in one TCP write', async () => {
    const { client, backend } = await open('one-write');
    const script = new Script();
    for (const part of [unfragmented(), fragmented(), splitCharacters()]) {
      script.frames.push(...part.frames);
      script.expected.push(...part.expected);
      script.pings.push(...part.pings);
    }
    client.send(script.frames, true);
    await assertDelivered(script, client, backend);
    client.destroy();
  });

  test('frames trickled in: headers one byte per write, payloads in random chunks', async () => {
    const { client, backend } = await open('trickle');
    const script = new Script()
      .message(false, [utf8(126)])
      .message(true, [bytes(65536)])
      .message(true, split(bytes(200 * KiB), [70 * KiB, 0, 130 * KiB]), [[{ opcode: PING, payload: bytes(125) }], [{ opcode: PONG, payload: bytes(2) }]]);
    const parts = splitCharacters();
    script.frames.push(...parts.frames);
    script.expected.push(...parts.expected);
    script.pings.push(...parts.pings);
    await client.trickle(script.frames);
    await assertDelivered(script, client, backend);
    client.destroy();
  });

  const closes = [
    { name: 'close with code and reason', payload: closePayload(4000, 'bye — ünïcode'), code: 4000, reason: 'bye — ünïcode' },
    // The longest reason a control frame holds (125 - 2 bytes), ending in a 3-byte character.
    { name: 'close with a 123-byte reason', payload: closePayload(4999, `${'r'.repeat(120)}€`), code: 4999, reason: `${'r'.repeat(120)}€` },
    { name: 'close with code only', payload: closePayload(1000), code: 1000, reason: '' },
    // No status in the frame: the backend hears "no status received" (1005), as from the client itself.
    { name: 'close with no payload', payload: Buffer.alloc(0), code: 1005, reason: '' },
  ];
  for (const c of closes) {
    test(`${c.name}: the backend gets the same close after the messages before it; the client gets a close back`, async () => {
      const { client, backend } = await open(c.name);
      const script = new Script().message(false, split(utf8(300), [100, 200])).message(true, [bytes(70000)]);
      client.send([...script.frames, frame({ opcode: CLOSE, payload: c.payload })], true);
      await waitFor(() => backend.close !== null, 'close at the backend');
      assert.deepEqual(summary(backend.messages), summary(script.expected));
      assert.deepEqual({ code: backend.close!.code, reason: backend.close!.reason.toString() }, { code: c.code, reason: c.reason });
      assert.ok(backend.close!.reason.equals(Buffer.from(c.reason)), 'reason byte-equal');
      // The client's close is answered (RFC 6455 §5.5.1: typically echoing its status code).
      const back = await client.closedBySidecar();
      assert.equal(back.code, c.code === 1005 ? null : c.code);
      assert.deepEqual(client.violations, []);
    });
  }

  test('backend → client: fragmented and whole messages with pings between fragments arrive as well-formed server frames', async () => {
    const { client, backend } = await open('from-backend');
    const sent: Message[] = [];
    const pings: Buffer[] = [];
    const ping = (p: Buffer): void => {
      pings.push(p);
      backend.ws.ping(p);
    };
    for (const n of SIZES) {
      for (const isBinary of [false, true]) {
        const data = isBinary ? bytes(n) : utf8(n);
        // Whole, then in three fragments (the middle one 0 bytes) with pings between them.
        backend.ws.send(data, { binary: isBinary });
        const [a, b, c] = split(data, [n >> 1, 0, n - (n >> 1)]);
        backend.ws.send(a!, { binary: isBinary, fin: false });
        ping(bytes(n % 126));
        backend.ws.send(b!, { binary: isBinary, fin: false });
        ping(Buffer.alloc(0));
        backend.ws.send(c!, { binary: isBinary, fin: true });
        sent.push({ data, isBinary }, { data, isBinary });
      }
    }
    // Text cut inside multi-byte characters.
    const text = Buffer.from('𝄞€é'.repeat(1000));
    backend.ws.send(text.subarray(0, 1), { binary: false, fin: false });
    ping(bytes(125));
    backend.ws.send(text.subarray(1, 3001), { binary: false, fin: false });
    backend.ws.send(text.subarray(3001), { binary: false, fin: true });
    sent.push({ data: text, isBinary: false });

    await waitFor(() => client.messages.length >= sent.length || client.ended, `${sent.length} messages at the client`);
    assert.deepEqual(summary(client.messages), summary(sent));
    for (let i = 0; i < sent.length; i++) assert.ok(client.messages[i]!.data.equals(sent[i]!.data), `message ${i} byte-equal`);
    assert.deepEqual(client.violations, [], 'every frame from the sidecar: unmasked, RSV 0, control frames whole and ≤ 125 bytes');
    await waitFor(() => backend.pongs.length >= pings.length, 'pongs at the backend');
    assert.deepEqual(backend.pongs, pings, "the backend's pings answered with their payload");
    client.destroy();
  });

  describe('protocol errors: that session fails with the code a ws endpoint sends, the others carry on', () => {
    let idle: { client: RawClient; backend: BackendConnection };
    let midMessage: { client: RawClient; backend: BackendConnection };

    before(async () => {
      // Two bystanders: one between messages, one with a message open (the rest is sent at the end).
      idle = await open('bystander-idle');
      midMessage = await open('bystander-mid-message');
      midMessage.client.send([frame({ opcode: BINARY, payload: Buffer.from('begun '), fin: false })]);
    });

    /** Both bystanders still relay both ways, and answer pings (the open message's too). */
    async function assertBystandersServed(tag: string): Promise<void> {
      const script = new Script().message(false, split(Buffer.from(`after ${tag}`), [3, 0, tag.length + 3]), [[{ opcode: PING, payload: Buffer.from(tag.slice(0, 10)) }]]);
      const before = idle.backend.messages.length;
      idle.client.send(script.frames);
      midMessage.client.send([frame({ opcode: PING, payload: Buffer.from(tag.slice(0, 10)) })]);
      await waitFor(() => idle.backend.messages.length === before + 1, 'bystander message at the backend');
      assert.deepEqual(idle.backend.messages.at(-1), script.expected[0]);
      for (const b of [idle, midMessage]) {
        await waitFor(() => b.client.pongs.length > 0 && b.client.pongs.at(-1)!.equals(Buffer.from(tag.slice(0, 10))), 'bystander pong');
        const received = b.client.messages.length;
        b.backend.ws.send(`to bystander after ${tag}`);
        await waitFor(() => b.client.messages.length === received + 1, 'bystander receives');
        assert.equal(b.client.messages.at(-1)!.data.toString(), `to bystander after ${tag}`);
      }
    }

    const cases: { name: string; frames: () => Buffer[]; code: number }[] = [
      { name: 'RSV1 set without an extension', frames: () => [frame({ opcode: TEXT, payload: Buffer.from('x'), rsv: RSV1 })], code: 1002 },
      { name: 'unknown opcode 0x3', frames: () => [frame({ opcode: 0x3, payload: Buffer.from('x') })], code: 1002 },
      { name: 'unmasked client frame', frames: () => [frame({ opcode: BINARY, payload: Buffer.from('x'), masked: false })], code: 1002 },
      { name: 'continuation without a start', frames: () => [frame({ opcode: CONT, payload: Buffer.from('x') })], code: 1002 },
      {
        name: 'text start while a message is open',
        frames: () => [frame({ opcode: TEXT, payload: Buffer.from('open'), fin: false }), frame({ opcode: TEXT, payload: Buffer.from('x') })],
        code: 1002,
      },
      { name: 'fragmented ping', frames: () => [frame({ opcode: PING, payload: Buffer.from('x'), fin: false })], code: 1002 },
      { name: 'ping of 126 bytes', frames: () => [frame({ opcode: PING, payload: bytes(126) })], code: 1002 },
      { name: 'one frame over maxMessageBytes', frames: () => [frame({ opcode: BINARY, payload: bytes(MAX_MESSAGE + 1) })], code: 1009 },
      {
        // Each fragment fits; their sum does not (a frame relay must count across fragments).
        name: 'fragments over maxMessageBytes together',
        frames: () => [frame({ opcode: BINARY, payload: bytes(200 * KiB), fin: false }), frame({ opcode: CONT, payload: bytes(100 * KiB) })],
        code: 1009,
      },
      // ws answers an invalid UTF-8 close reason with 1007; RFC 6455 §8.1 only says "fail": 1002 passes too.
      { name: 'close with an invalid UTF-8 reason', frames: () => [frame({ opcode: CLOSE, payload: Buffer.from([0x0f, 0xa0, 0xc3, 0x28]) })], code: 1007 },
      { name: 'close with code 1005 on the wire', frames: () => [frame({ opcode: CLOSE, payload: closePayload(1005) })], code: 1002 },
    ];
    for (const c of cases) {
      test(`${c.name} → ${c.code}`, async () => {
        const { client, backend } = await open(c.name);
        client.send([frame({ opcode: TEXT, payload: Buffer.from('before') })]);
        await waitFor(() => backend.messages.length === 1, 'the first message at the backend');
        client.send(c.frames());
        const closed = await client.closedBySidecar();
        if (c.code === 1007) assert.ok(closed.code === 1007 || closed.code === 1002, `close code ${closed.code}`);
        else assert.equal(closed.code, c.code);
        // The session ends on both legs; the backend got no part of the bad frames as a message.
        await waitFor(() => backend.close !== null, 'the backend leg closed');
        assert.deepEqual(backend.messages, [{ data: Buffer.from('before'), isBinary: false }]);
        assert.deepEqual(client.violations, []);
        await assertBystandersServed(c.name);
      });
    }

    test('the bystanders were never closed, and the message left open all along completes', async () => {
      midMessage.client.send([frame({ opcode: CONT, payload: Buffer.from('and finished'), fin: true })]);
      await waitFor(() => midMessage.backend.messages.length === 1, 'the open message completed');
      assert.deepEqual(midMessage.backend.messages, [{ data: Buffer.from('begun and finished'), isBinary: true }]);
      for (const b of [idle, midMessage]) {
        assert.equal(b.client.closeReceived, null);
        assert.equal(b.backend.close, null);
        assert.deepEqual(b.client.violations, []);
        b.client.destroy();
      }
    });
  });
});

// ---- a backend lost in the middle of a message ---------------------------------------------

describe('a message is never split between two backends', () => {
  let spareServer: Server;
  let spare: WebSocketServer;
  let spareUrl: string;
  const atSpare: Message[] = [];

  before(async () => {
    spareServer = createServer();
    spare = new WebSocketServer({ server: spareServer });
    spare.on('connection', (ws: WebSocket) => {
      ws.on('message', (data: Buffer, isBinary: boolean) => atSpare.push({ data, isBinary }));
      ws.send('from the spare');
    });
    await new Promise<void>((r) => spareServer.listen(0, '127.0.0.1', r));
    spareUrl = `ws://127.0.0.1:${(spareServer.address() as AddressInfo).port}`;
  });
  after(async () => {
    await stopWsServer(spareServer, spare);
  });

  const yaml = (dyingUrl: string): string =>
    `backends:\n  - { id: dying, url: "${dyingUrl}" }\n  - { id: spare, url: "${spareUrl}", standby: true }\nsession:\n  pingInterval: 1m\n  pongTimeout: 1m\n`;

  test("a backend that dies mid-message: the client gets no part of it, and the next backend's messages arrive well-formed", async () => {
    let dyingSocket: Socket | undefined;
    // Answers one upgrade and takes no other connection (so the failover has to go to the spare).
    const dying = await rawBackend((socket, req) => {
      dying.stopListening();
      socket.write(switching(req));
      dyingSocket = socket;
      // A whole message, then the first fragment of one the backend never finishes, in one write.
      socket.write(Buffer.concat([frame({ opcode: TEXT, payload: Buffer.from('whole'), masked: false }), frame({ opcode: TEXT, payload: Buffer.from('half of a'), fin: false, masked: false })]));
    });
    const { sidecar, url } = await startSidecar(yaml(dying.url));
    try {
      const client = await RawClient.connect(Number(new URL(url).port), '/mid-message');
      await waitFor(() => client.messages.length === 1, 'the whole message');
      dyingSocket!.destroy();
      await waitFor(() => client.messages.length === 2, "the spare's message after the failover");
      assert.deepEqual(
        client.messages.map((m) => m.data.toString()),
        ['whole', 'from the spare'],
      );
      assert.deepEqual(client.violations, [], 'no new message inside an unfinished one');
      assert.equal(client.closeReceived, null);
      client.destroy();
    } finally {
      await sidecar.stop(0);
    }
  });

  test('a client message begun before its backend died reaches the next backend whole', async () => {
    let dyingSocket: Socket | undefined;
    let received = 0;
    const dying = await rawBackend((socket, req) => {
      dying.stopListening();
      socket.write(switching(req));
      socket.on('data', (c: Buffer) => (received += c.length));
      dyingSocket = socket;
    });
    const { sidecar, url } = await startSidecar(yaml(dying.url));
    try {
      atSpare.length = 0;
      const client = await RawClient.connect(Number(new URL(url).port), '/client-mid-message');
      // The first fragment, then a ping: its pong shows the sidecar has read the fragment.
      client.send([frame({ opcode: TEXT, payload: Buffer.from('first half, '), fin: false }), frame({ opcode: PING, payload: Buffer.from('read?') })]);
      await waitFor(() => client.pongs.length === 1, 'the pong');
      assert.equal(received, 0, 'a message is forwarded once it is whole, not a fragment at a time');
      dyingSocket!.destroy();
      client.send([frame({ opcode: CONT, payload: Buffer.from('second half') }), frame({ opcode: BINARY, payload: Buffer.from('after') })]);
      await waitFor(() => atSpare.length === 2, 'both messages at the spare');
      assert.deepEqual(atSpare, [
        { data: Buffer.from('first half, second half'), isBinary: false },
        { data: Buffer.from('after'), isBinary: true },
      ]);
      assert.equal(client.closeReceived, null);
      client.destroy();
    } finally {
      await sidecar.stop(0);
    }
  });
});

// ---- a backend leg's reads into a reused buffer ---------------------------------------------

// The sidecar reads a backend leg into one buffer and reads into it again unless something keeps a
// piece of it (frame-peer.ts, BackendReads). Every way of keeping one is here, each followed by
// more reads: bytes that came with the 101, a frame split over reads, a fragmented message's
// frames, frames relayed to a client that is not reading (their writes pending), and, with a
// codec, messages read whole. A piece read over would reach the client changed.
describe("a backend leg's read buffer is never read over while a piece of it is kept", () => {
  /** Text messages of JSON-RPC notifications, random and numbered, about `size` bytes each. */
  const notification = (n: number, size: number): Buffer =>
    Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'tick', params: { n, data: randomBytes(Math.ceil((size * 3) / 4)).toString('base64') } }));
  const backendFrame = (opcode: number, payload: Buffer, fin = true): Buffer => frame({ opcode, payload, fin, masked: false });
  const yieldToSidecar = (): Promise<void> => new Promise((r) => setImmediate(r));

  for (const codec of ['none', 'json-rpc']) {
    test(`codec ${codec}: what the backend sent reaches the client byte for byte`, async () => {
      let backendSocket: Socket | undefined;
      const sent: Message[] = [];
      const message = (n: number, size: number): Buffer => {
        const data = notification(n, size);
        sent.push({ data, isBinary: false });
        return data;
      };
      // The 101 arrives with a whole message and the first 3 bytes (half a header) of the next.
      const whole = backendFrame(TEXT, message(0, 100));
      const split1 = backendFrame(TEXT, message(1, 3000));
      const backend = await rawBackend((socket, req) => {
        backendSocket = socket;
        socket.write(Buffer.concat([Buffer.from(switching(req)), whole, split1.subarray(0, 3)]));
      });
      // A high-water mark the test stays under: the backend leg is never paused (backpressure.test.ts).
      const { sidecar, url } = await startSidecar(
        `${backendsYaml([{ id: 'raw', url: backend.url }])}session:\n  highWaterMarkBytes: 64MiB\n  pingInterval: 1m\n  pongTimeout: 1m\ncodec:\n  default: ${codec}\n`,
      );
      try {
        const client = await RawClient.connect(Number(new URL(url).port), '/reads');
        /** The client has the first `n` messages sent, well-formed and byte-equal. */
        const assertDelivered = async (n: number, what: string): Promise<void> => {
          await waitFor(() => client.messages.length >= n || client.ended || client.violations.length > 0, what, n > 3 ? 20000 : 5000);
          assert.deepEqual(client.violations, [], 'every frame well-formed');
          assert.deepEqual(summary(client.messages), summary(sent.slice(0, n)), what);
          for (let i = 0; i < n; i++) assert.ok(client.messages[i]!.data.equals(sent[i]!.data), `message ${i} byte-equal`);
        };
        await assertDelivered(1, 'the message that came with the 101');
        const session = [...sidecar.sessions.values()][0]!;
        // Each piece its own read: the rest of that frame in two, then a fragmented message whose
        // fragments (and a header split between them) come one read at a time.
        const fragmented = message(2, 9000);
        const fragments = [
          backendFrame(TEXT, fragmented.subarray(0, 4000), false),
          backendFrame(CONT, fragmented.subarray(4000, 4000), false),
          backendFrame(CONT, fragmented.subarray(4000), true),
        ];
        const pieces = [split1.subarray(3, 1500), split1.subarray(1500), fragments[0]!, Buffer.concat([fragments[1]!, fragments[2]!.subarray(0, 1)]), fragments[2]!.subarray(1, 2000), fragments[2]!.subarray(2000)];
        for (const piece of pieces) {
          backendSocket!.write(piece);
          await yieldToSidecar();
        }
        await assertDelivered(3, 'the split and the fragmented message');
        // Then more than the kernel's buffers hold, to a client that does not read: what is relayed
        // now waits in the sidecar (its writes pending) while more reads come. Frames straddle the
        // reads (64 KiB each).
        client.pause();
        const bulk: Buffer[] = [];
        for (let i = 0; i < 512; i++) bulk.push(backendFrame(TEXT, message(sent.length, 16 * KiB)));
        backendSocket!.write(Buffer.concat(bulk));
        await waitFor(() => session.client.bufferedAmount > 0, 'writes queued towards the client');
        // Whole messages, one read each: each read's slice waits in the queue as the next comes.
        for (let i = 0; i < 64; i++) {
          backendSocket!.write(backendFrame(TEXT, message(sent.length, 1000 + 100 * i)));
          await yieldToSidecar();
        }
        // And a fragmented message whose frames came in reads while the queue was full.
        const late = message(sent.length, 20 * KiB);
        backendSocket!.write(backendFrame(TEXT, late.subarray(0, 7000), false));
        await yieldToSidecar();
        backendSocket!.write(backendFrame(CONT, late.subarray(7000), true));
        await yieldToSidecar();
        client.resume();
        await assertDelivered(sent.length, 'all messages, the queued ones too');
        assert.equal(client.closeReceived, null);
        client.destroy();
      } finally {
        await sidecar.stop(0);
        backend.close();
      }
    });
  }
});
