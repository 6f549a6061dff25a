// The codec section's traffic: for each protocol, small frames (about 64 B) as its clients and
// servers send them. The client sends a connection's opening frames once, then the steady ones;
// the echo backend (--answer-frames) answers the k-th message of a connection with the k-th
// answer, so every frame crosses the sidecar's codec in its own direction. An entry whose codec
// is not built in (MQTT, STOMP until they land) is skipped, so adding a protocol is one entry.
import { BUILTIN_CODECS, type BuiltinCodec } from '../common/vocabulary.js';

/** One exchange: [client → backend, backend → client]. */
export type Exchange = readonly [Buffer, Buffer];

export interface CodecTraffic {
  /** The codec's config name (codec.default). */
  codec: string;
  /** What the frames are, for the report. */
  what: string;
  binary: boolean;
  /** Exchanged once per connection, first (a session's handshake, its subscriptions). */
  open: readonly Exchange[];
  /** The i-th steady exchange (i < STEADY_FRAMES: ids stay distinct over that many). */
  steady(i: number): Exchange;
}

/** Distinct steady exchanges per entry, cycled per connection. */
export const STEADY_FRAMES = 1024;

/** head + 'x' padding + tail, `size` bytes in all (a padded string field). */
function fill(head: string, tail: string, size = 64): string {
  const pad = size - Buffer.byteLength(head) - Buffer.byteLength(tail);
  if (pad < 0) throw new Error(`codec traffic: "${head}…${tail}" is longer than ${size} bytes`);
  return `${head}${'x'.repeat(pad)}${tail}`;
}

function text(client: string, backend: string): Exchange {
  return [Buffer.from(client), Buffer.from(backend)];
}

/** An 8-character id, distinct for each i. */
function id8(i: number): string {
  return i.toString(36).padStart(8, '0');
}

/** An MQTT 3.1.1 packet: fixed header byte, remaining length (one byte: < 128), body. */
function mqtt(first: number, ...body: (Buffer | number[])[]): Buffer {
  const rest = Buffer.concat(body.map((b) => (Buffer.isBuffer(b) ? b : Buffer.from(b))));
  if (rest.length > 127) throw new Error('codec traffic: MQTT packet too long for a one-byte remaining length');
  return Buffer.concat([Buffer.from([first, rest.length]), rest]);
}

/** An MQTT UTF-8 string: two-byte length, then the bytes. */
function mqttString(s: string): Buffer {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
}

/** A QoS 0 PUBLISH of `size` bytes in all: topic, then a JSON payload padded to fit. */
function mqttPublish(topic: string, n: number, size = 64): Buffer {
  const head = 2 + 2 + Buffer.byteLength(topic);
  return mqtt(0x30, mqttString(topic), Buffer.from(fill(`{"n":${n},"v":"`, '"}', size - head)));
}

/** A STOMP frame: command, headers, blank line, body, NUL. */
function stomp(command: string, headers: Record<string, string>, body = ''): string {
  return `${command}\n${Object.entries(headers)
    .map(([k, v]) => `${k}:${v}\n`)
    .join('')}\n${body}\0`;
}

/** A STOMP frame of `size` bytes whose JSON body is padded to fit. */
function stompPadded(command: string, headers: Record<string, string>, n: number, size = 64): string {
  const empty = Buffer.byteLength(stomp(command, headers));
  return stomp(command, headers, fill(`{"n":${n},"v":"`, '"}', size - empty));
}

export const CODEC_TRAFFIC: readonly CodecTraffic[] = [
  {
    codec: 'ocpp',
    what: 'DataTransfer CALL → CALLRESULT (distinct ids)',
    binary: false,
    open: [],
    steady: (i) => text(fill(`[2,"${id8(i)}","DataTransfer",{"vendorId":"bench","data":"`, '"}]'), fill(`[3,"${id8(i)}",{"status":"Accepted","data":"`, '"}]')),
  },
  {
    codec: 'json-rpc',
    what: 'request → result (distinct ids)',
    binary: false,
    open: [],
    steady: (i) => text(fill(`{"jsonrpc":"2.0","id":${i},"method":"tick","params":{"p":"`, '"}}'), fill(`{"jsonrpc":"2.0","id":${i},"result":{"p":"`, '"}}')),
  },
  {
    codec: 'socket.io',
    what: 'join /chat, then events both ways (no acks)',
    binary: false,
    open: [text('40/chat,{"token":"secret"}', '40/chat,{"sid":"Xh8dK2pQaZ0b1c2d3e4f"}')],
    steady: (i) => text(fill(`42/chat,["say",{"n":${i},"text":"`, '"}]'), fill(`42/chat,["said",{"n":${i},"from":"u1","text":"`, '"}]')),
  },
  {
    codec: 'graphql-ws',
    what: 'init, one subscription, then `next` frames both ways (a client sends subscribe/complete in reality)',
    binary: false,
    open: [
      text('{"type":"connection_init","payload":{"token":"secret"}}', '{"type":"connection_ack"}'),
      text('{"id":"1","type":"subscribe","payload":{"query":"subscription { ticks(topic: \\"a\\") { n } }"}}', '{"id":"1","type":"next","payload":{"data":{"ticks":{"n":0}}}}'),
    ],
    steady: (i) => {
      const next = `{"id":"1","type":"next","payload":{"data":{"ticks":{"n":${i}}}}}`;
      return text(next, next);
    },
  },
  {
    codec: 'mqtt',
    what: 'MQTT 3.1.1 CONNECT, SUBSCRIBE, then QoS 0 PUBLISH both ways',
    binary: true,
    open: [
      // CONNECT: "MQTT", level 4, clean session, keep-alive 60 s, client id "bench" → CONNACK accepted.
      [mqtt(0x10, mqttString('MQTT'), [4, 0x02, 0, 60], mqttString('bench')), mqtt(0x20, [0, 0])],
      // SUBSCRIBE packet id 1, "ticks/#" QoS 0 → SUBACK granted QoS 0.
      [mqtt(0x82, [0, 1], mqttString('ticks/#'), [0]), mqtt(0x90, [0, 1, 0])],
    ],
    steady: (i) => [mqttPublish('sensors/1', i), mqttPublish('ticks/a', i)],
  },
  {
    codec: 'stomp',
    what: 'STOMP 1.2 CONNECT, SUBSCRIBE, then SEND → MESSAGE',
    binary: false,
    open: [
      text(stomp('CONNECT', { 'accept-version': '1.2', host: '/', 'heart-beat': '0,0' }), stomp('CONNECTED', { version: '1.2', 'heart-beat': '0,0' })),
      text(stomp('SUBSCRIBE', { id: '0', destination: '/topic/t' }), stomp('MESSAGE', { subscription: '0', 'message-id': 'm-0', destination: '/topic/t' }, '{}')),
    ],
    steady: (i) => text(stompPadded('SEND', { destination: '/topic/t' }, i), stompPadded('MESSAGE', { subscription: '0', 'message-id': `m${i}`, destination: '/topic/t' }, i, 80)),
  },
];

export function isBuiltinCodec(name: string): name is BuiltinCodec {
  return (BUILTIN_CODECS as readonly string[]).includes(name);
}
