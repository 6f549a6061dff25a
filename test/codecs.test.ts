import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MessageKind, SessionCodec, Sender } from '../sidecar/codecs/codec.js';
import { createOcppCodec } from '../sidecar/codecs/ocpp.js';
import { createJsonRpcCodec } from '../sidecar/codecs/json-rpc.js';
import { mulberry32 } from './prng.js';

const ocpp = createOcppCodec();
const rpc = createJsonRpcCodec();
const KINDS: readonly MessageKind[] = ['request', 'response', 'other', 'malformed'];

type Result = [MessageKind, string[]];

function classify(codec: SessionCodec, msg: string | Buffer, isBinary = false, from: Sender = 'client'): Result {
  const ids: string[] = [];
  const kind = codec.classify(typeof msg === 'string' ? Buffer.from(msg, 'utf8') : msg, isBinary, from, ids);
  return [kind, ids];
}

/** Classifies and checks the result is well-formed: ids only for requests and responses. */
function checked(codec: SessionCodec, msg: string | Buffer): Result {
  const r = classify(codec, msg);
  assert.ok(KINDS.includes(r[0]), `unknown kind ${r[0]}`);
  if (r[0] === 'request' || r[0] === 'response') assert.ok(r[1].length > 0, 'a request/response carries ids');
  else assert.deepEqual(r[1], [], `no ids left for ${r[0]}`);
  return r;
}

/** Every proper prefix: never throws, and (for the frames given) is malformed. */
function assertPrefixesMalformed(codec: SessionCodec, msg: string): void {
  const buf = Buffer.from(msg, 'utf8');
  for (let i = 0; i < buf.length; i++) {
    assert.deepEqual(checked(codec, buf.subarray(0, i)), ['malformed', []], `prefix ${i}: ${buf.subarray(0, i).toString()}`);
  }
}

// ---------------------------------------------------------------- OCPP

test('ocpp: name and every frame type', () => {
  assert.equal(ocpp.name, 'ocpp');
  assert.deepEqual(classify(ocpp, '[2,"19223201","BootNotification",{"chargePointVendor":"x"}]'), ['request', ['19223201']]);
  assert.deepEqual(classify(ocpp, '[3,"19223201",{"status":"Accepted","interval":300}]'), ['response', ['19223201']]);
  assert.deepEqual(
    classify(ocpp, '[4,"162376037","NotSupported","SetDisplayMessageRequest not implemented",{}]'),
    ['response', ['162376037']],
  );
  assert.deepEqual(classify(ocpp, '[5,"abc","InternalError","oops",{}]'), ['response', ['abc']]);
  assert.deepEqual(classify(ocpp, '[6,"abc","NotifyPeriodicEventStream",{"data":[]}]'), ['other', []]);
});

test('ocpp: the sender does not change the classification; binary frames are other', () => {
  const call = '[2,"a1","Reset",{"type":"Hard"}]';
  assert.deepEqual(classify(ocpp, call, false, 'backend'), ['request', ['a1']]);
  assert.deepEqual(classify(ocpp, call, false, 'client'), ['request', ['a1']]);
  assert.deepEqual(classify(ocpp, '[3,"a1",{}]', false, 'backend'), ['response', ['a1']]);
  assert.deepEqual(classify(ocpp, call, true), ['other', []]);
  assert.deepEqual(classify(ocpp, Buffer.from([0, 1, 2, 0xff]), true), ['other', []]);
});

test('ocpp: whitespace between tokens', () => {
  assert.deepEqual(classify(ocpp, ' \r\n\t[ 2 , "id-1" , "Heartbeat" , { } ] \n'), ['request', ['id-1']]);
  assert.deepEqual(classify(ocpp, '[\n  3,\n  "id-1",\n  {}\n]'), ['response', ['id-1']]);
  assert.deepEqual(classify(ocpp, '[4\t,\t"x"\t,"GenericError","",{}]'), ['response', ['x']]);
});

test('ocpp: escaped and non-ASCII ids are decoded', () => {
  assert.deepEqual(classify(ocpp, String.raw`[2,"a\"b\\c\/d","X",{}]`), ['request', ['a"b\\c/d']]);
  assert.deepEqual(classify(ocpp, String.raw`[3,"\u0041\u00e9\u00E9",{}]`), ['response', ['Aéé']]);
  assert.deepEqual(classify(ocpp, String.raw`[3,"\ud83d\ude00-\n\t\r\b\f",{}]`), ['response', ['😀-\n\t\r\b\f']]);
  assert.deepEqual(classify(ocpp, '[2,"idé😀","X",{}]'), ['request', ['idé😀']]);
  // A request written with escapes matches its response written without.
  assert.deepEqual(classify(ocpp, String.raw`[2,"\u0061bc","X",{}]`)[1], classify(ocpp, '[3,"abc",{}]')[1]);
});

test('ocpp: id length limits', () => {
  const uuid = '0b7e6f8e-3c1f-4b8a-9a47-3c8c2b0a9d11';
  assert.deepEqual(classify(ocpp, `[2,"${uuid}","X",{}]`), ['request', [uuid]]);
  const id128 = 'x'.repeat(128);
  assert.deepEqual(classify(ocpp, `[2,"${id128}","X",{}]`), ['request', [id128]]);
  assert.deepEqual(classify(ocpp, `[2,"${id128}y","X",{}]`), ['malformed', []]);
  assert.deepEqual(classify(ocpp, `[6,"${id128}y","X",{}]`), ['malformed', []]);
  // 128 characters written as \uXXXX (768 bytes) are fine; 129 are not.
  const esc = '\\u0041'.repeat(128);
  assert.deepEqual(classify(ocpp, `[2,"${esc}","X",{}]`), ['request', ['A'.repeat(128)]]);
  assert.deepEqual(classify(ocpp, `[2,"${esc}\\u0041","X",{}]`), ['malformed', []]);
  // 128 multi-byte characters (384 bytes) are 128 characters.
  assert.deepEqual(classify(ocpp, `[3,"${'é'.repeat(128)}",{}]`), ['response', ['é'.repeat(128)]]);
  assert.deepEqual(classify(ocpp, `[3,"${'é'.repeat(129)}",{}]`), ['malformed', []]);
  // A bogus unterminated id in a large frame is malformed (and not scanned to the end).
  assert.deepEqual(classify(ocpp, `[2,"${'z'.repeat(1 << 20)}]`), ['malformed', []]);
});

test('ocpp: the payload is not inspected', () => {
  assert.deepEqual(classify(ocpp, '[2,"a","X",{this is not json]'), ['request', ['a']]);
  assert.deepEqual(classify(ocpp, '[3,"a",{"id":"b","x":[2,"c"]}]'), ['response', ['a']]);
});

test('ocpp: malformed frames', () => {
  const bad = [
    '', ' ', '\n\t', '[', ']', '[]', '{}', 'null', '"[2,\\"a\\",\\"X\\",{}]"', '2',
    '[0,"a","X",{}]', '[1,"a","X",{}]', '[7,"a","X",{}]', '[9,"a",{}]', '[20,"a","X",{}]',
    '[2.0,"a","X",{}]', '[2e0,"a","X",{}]', '[02,"a","X",{}]', '[-2,"a","X",{}]', '["2","a","X",{}]',
    '[null,"a","X",{}]', '[2,1,"X",{}]', '[2,null,"X",{}]', '[2,{"id":"a"},"X",{}]', "[2,'a','X',{}]",
    '[2,"","X",{}]', '[2]', '[2,]', '[2,"a"]', '[2,"a" ]', '[2 "a","X",{}]', '[2,"a" "X",{}]', '[2,,"a","X",{}]',
    '[2,"a","X",{}', '[2,"a","X",{}]x', '[2,"a","X",{}],', 'x[2,"a","X",{}]', '\ufeff[2,"a","X",{}]',
    '[2,"a\u0001b","X",{}]', '[2,"a\nb","X",{}]', String.raw`[2,"a\xb","X",{}]`, String.raw`[2,"a\u12","X",{}]`,
    String.raw`[2,"a\u12g4","X",{}]`, String.raw`[2,"a\","X",{}]`, '[2,"a]',
    '{"2":"a"}]', '[[2,"a","X",{}]]',
  ];
  for (const m of bad) assert.deepEqual(checked(ocpp, m), ['malformed', []], JSON.stringify(m));
});

test('ocpp: every prefix of a valid frame is malformed and never throws', () => {
  for (const m of [
    '[2,"19223201","BootNotification",{"chargePointVendor":"x","chargePointModel":"y"}]',
    ' [ 3 , "\\u0041bc" , { "status" : "Accepted" } ] ',
    '[4,"a","GenericError","x",{}]',
    '[6,"a","X",{}]',
  ]) {
    assertPrefixesMalformed(ocpp, m.trimEnd());
  }
  // A prefix may end in a ']' inside the payload: it must still not throw.
  const nested = Buffer.from('[2,"a","X",{"l":[1,[2]],"m":"]"}]');
  for (let i = 0; i <= nested.length; i++) checked(ocpp, nested.subarray(0, i));
});

test('ocpp: large payload', () => {
  const big = `[2,"big-1","DataTransfer",{"vendorId":"v","data":"${'a'.repeat(1 << 20)}"}]`;
  assert.deepEqual(classify(ocpp, big), ['request', ['big-1']]);
  assert.deepEqual(classify(ocpp, `[3,"big-1",{"data":"${'a'.repeat(1 << 20)}"}]`), ['response', ['big-1']]);
});

/** What an OCPP frame is, by JSON.parse (reference for the fuzz test). */
function ocppReference(text: string): Result | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null; // the codec may still classify it: it does not read the payload
  }
  if (!/^[ \t\n\r]*\[[ \t\n\r]*[2-6][ \t\n\r]*,/.test(text)) return ['malformed', []];
  if (!Array.isArray(v) || v.length < 3) return ['malformed', []];
  const [type, id] = v as [number, unknown];
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) return ['malformed', []];
  if (type === 6) return ['other', []];
  return [type === 2 ? 'request' : 'response', [id]];
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

const JSON_ALPHABET = Buffer.from('{}[]",:\\ \n0123456789-+.eEtrufalsn/bdiu2346"');

test('ocpp: random bytes and mutated frames never throw and agree with JSON.parse', () => {
  const rnd = mulberry32(0x0cc9);
  for (let i = 0; i < 5000; i++) {
    const len = Math.floor(rnd() * 64);
    const buf = Buffer.alloc(len);
    for (let j = 0; j < len; j++) buf[j] = Math.floor(rnd() * 256);
    checked(ocpp, buf);
  }
  const seeds = [
    '[2,"19223201","BootNotification",{"chargePointVendor":"x"}]',
    '[3,"a\\u0041",{"status":"Accepted"}]',
    '[4,"162376037","NotSupported","",{}]',
    '[6,"x","Y",[1,2]]',
  ].map((s) => Buffer.from(s));
  let agreed = 0;
  for (let i = 0; i < 20000; i++) {
    const m = mutate(rnd, seeds[i % seeds.length]!, JSON_ALPHABET);
    const got = checked(ocpp, m);
    const want = ocppReference(m.toString('utf8'));
    if (want !== null) {
      assert.deepEqual(got, want, m.toString('utf8'));
      agreed++;
    }
  }
  assert.ok(agreed > 2000, `enough mutated frames were valid JSON (${agreed})`);
});

// ---------------------------------------------------------------- JSON-RPC

test('json-rpc: name, requests, responses and notifications', () => {
  assert.equal(rpc.name, 'json-rpc');
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}'), ['request', ['n:1']]);
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":"1"}'), ['request', ['s:1']]);
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","result":19,"id":1}'), ['response', ['n:1']]);
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","result":null,"id":"1"}'), ['response', ['s:1']]);
  assert.deepEqual(
    classify(rpc, '{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"1"}'),
    ['response', ['s:1']],
  );
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","method":"update","params":[1,2,3]}'), ['other', []]);
  assert.deepEqual(classify(rpc, '{"method":"update"}'), ['other', []], 'jsonrpc member not required');
  assert.deepEqual(classify(rpc, '{"method":"x","id":1}', true), ['other', []], 'binary frames are other');
  assert.deepEqual(classify(rpc, '{"method":"x","id":1}', false, 'backend'), ['request', ['n:1']]);
});

test('json-rpc: string and number ids never collide; a response matches its request', () => {
  const [, s] = classify(rpc, '{"method":"a","id":"1"}');
  const [, n] = classify(rpc, '{"method":"a","id":1}');
  assert.notDeepEqual(s, n);
  assert.deepEqual(classify(rpc, '{"id":"1","result":true}')[1], s);
  assert.deepEqual(classify(rpc, '{"id":1,"result":true}')[1], n);
  // Number ids are kept as written.
  for (const num of ['0', '-5', '1.5', '1.0', '1e3', '-0.25E-2', '12345678901234567890123']) {
    const [kind, ids] = classify(rpc, `{"method":"a","id":${num}}`);
    assert.deepEqual([kind, ids], ['request', [`n:${num}`]]);
    assert.deepEqual(classify(rpc, `{"result":{},"id": ${num} }`)[1], ids);
  }
  assert.notDeepEqual(classify(rpc, '{"method":"a","id":1.0}')[1], n);
  // String ids are decoded, so escapes match their plain form.
  assert.deepEqual(classify(rpc, String.raw`{"method":"a","id":"\u0061\"b"}`), ['request', ['s:a"b']]);
  assert.deepEqual(classify(rpc, '{"result":1,"id":"a\\"b"}'), ['response', ['s:a"b']]);
  assert.deepEqual(classify(rpc, '{"method":"a","id":""}'), ['request', ['s:']]);
  assert.deepEqual(classify(rpc, '{"method":"a","id":"n:1"}'), ['request', ['s:n:1']]);
});

test('json-rpc: key order and whitespace do not matter', () => {
  assert.deepEqual(classify(rpc, '{"id":7,"params":{},"method":"m","jsonrpc":"2.0"}'), ['request', ['n:7']]);
  assert.deepEqual(classify(rpc, ' \n{ "id" : "x" ,\t"result" :\r\n[ 1 , 2 ] }\n '), ['response', ['s:x']]);
  assert.deepEqual(classify(rpc, '{\n  "error": { "code": 1 },\n  "id": 3\n}'), ['response', ['n:3']]);
});

test('json-rpc: null ids', () => {
  assert.deepEqual(classify(rpc, '{"method":"x","id":null}'), ['other', []]);
  assert.deepEqual(classify(rpc, '{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}'), ['other', []]);
  assert.deepEqual(classify(rpc, '{"result":1,"id":null}'), ['malformed', []]);
});

test('json-rpc: id, method, result and error are only read at the top level', () => {
  assert.deepEqual(classify(rpc, '{"method":"x","params":{"id":9},"id":1}'), ['request', ['n:1']]);
  assert.deepEqual(classify(rpc, String.raw`{"method":"x","params":"\"id\":3","id":"a"}`), ['request', ['s:a']]);
  assert.deepEqual(classify(rpc, '{"method":"x","params":[{"id":2},["id",3]]}'), ['other', []]);
  assert.deepEqual(classify(rpc, '{"result":{"method":"x","id":5},"id":6}'), ['response', ['n:6']]);
  assert.deepEqual(classify(rpc, '{"method":"x","params":{"result":1,"error":2},"id":1}'), ['request', ['n:1']]);
  assert.deepEqual(classify(rpc, '{"idx":1,"i":2,"method":"x","Id":3,"id":4}'), ['request', ['n:4']]);
  // An escaped key is the key it decodes to.
  assert.deepEqual(classify(rpc, String.raw`{"\u006dethod":"x","\u0069d":2}`), ['request', ['n:2']]);
  assert.deepEqual(classify(rpc, String.raw`{"method":"x","i\u0064x":2}`), ['other', []]);
  // Duplicate keys: the last id wins, as with JSON.parse.
  assert.deepEqual(classify(rpc, '{"id":1,"method":"x","id":2}'), ['request', ['n:2']]);
});

test('json-rpc: batches', () => {
  assert.deepEqual(
    classify(rpc, '[{"method":"a","id":1},{"method":"n"},{"method":"b","id":"2"},{"method":"c","id":null}]'),
    ['request', ['n:1', 's:2']],
  );
  assert.deepEqual(
    classify(rpc, ' [ {"result":1,"id":1} , {"error":{"code":1},"id":"2"} ,{"error":{},"id":null}] '),
    ['response', ['n:1', 's:2']],
  );
  assert.deepEqual(classify(rpc, '[{"method":"n1"},{"method":"n2","params":[]}]'), ['other', []]);
  assert.deepEqual(classify(rpc, '[{"error":{},"id":null}]'), ['other', []]);
  assert.deepEqual(classify(rpc, '[{"method":"a","id":1}]'), ['request', ['n:1']]);
  for (const bad of [
    '[]', ' [ ] ', '[', '[{"method":"a","id":1}', '[{"method":"a","id":1},]', '[,{"method":"a","id":1}]',
    '[{"method":"a","id":1},{"result":1,"id":2}]', '[{"result":1,"id":2},{"method":"a","id":1}]',
    '[{"method":"a","id":1},1]', '[1,2,3]', '[[{"method":"a","id":1}]]', '[{"method":"a","id":1},{}]',
    '[{"method":"a","id":1},{"method":"b","id":true}]', '[{"method":"a","id":1}]]', '[{"method":"a","id":1}] x',
    '[{"method":"a","id":1} {"method":"b","id":2}]', '[null]',
  ]) {
    assert.deepEqual(checked(rpc, bad), ['malformed', []], bad);
  }
  // Ids pushed before a batch turns out malformed are taken back; earlier ids on the list stay.
  const ids = ['keep'];
  assert.equal(rpc.classify(Buffer.from('[{"method":"a","id":1},{"result":1,"id":2}]'), false, 'client', ids), 'malformed');
  assert.deepEqual(ids, ['keep']);
});

test('json-rpc: malformed messages', () => {
  const bad = [
    '', '  ', '1', '"x"', 'null', 'true', '{', '}', '{}', '{"jsonrpc":"2.0"}', '{"id":1}', '{"params":[],"id":1}',
    '{"method":"a","result":1,"id":1}', '{"method":"a","error":{},"id":1}', '{"result":1,"error":{},"id":1}',
    '{"result":1}', '{"error":{}}', '{"method":1,"id":1}', '{"method":null}', '{"method":["a"],"id":1}',
    '{"method":"a","id":true}', '{"method":"a","id":{}}', '{"method":"a","id":[1]}', '{"result":1,"id":false}',
    // not JSON
    "{'method':'a','id':1}", '{method:"a","id":1}', '{"method":"a","id":1,}', '{,"method":"a","id":1}',
    '{"method" "a","id":1}', '{"method":"a" "id":1}', '{"method":"a","id":01}', '{"method":"a","id":1.}',
    '{"method":"a","id":.5}', '{"method":"a","id":+1}', '{"method":"a","id":-}', '{"method":"a","id":1e}',
    '{"method":"a","id":1e+}', '{"method":"a","id":0x1}', '{"method":"a","id":NaN}', '{"method":"a","id":Infinity}',
    '{"method":"a","id":1,"p":tru}', '{"method":"a","id":1,"p":nul}', '{"method":"a","id":1,"p":falsy}',
    '{"method":"a","id":1,"p":True}', '{"method":"a\u0001","id":1}', '{"method":"a","id":"x\ty"}',
    String.raw`{"method":"a","id":"\x"}`, String.raw`{"method":"a","id":"\u00"}`, String.raw`{"method":"a","id":"\uZZZZ"}`,
    String.raw`{"method":"a","id":"abc\"}`, '{"method":"a","id":"abc',
    '{"method":"a","params":[1},"id":1}', '{"method":"a","params":{1],"id":1}', '{"method":"a","params":{"a"},"id":1}',
    '{"method":"a","params":{"a":},"id":1}', '{"method":"a","params":[1,],"id":1}', '{"method":"a","params":[,1],"id":1}',
    '{"method":"a","params":{"a":1,},"id":1}', '{"method":"a","params":{"a":1 "b":2},"id":1}', '{"method":"a","params":{1:2},"id":1}',
    '{"method":"a","params":[1 2],"id":1}', '{"method":"a","id":1}}', '{"method":"a","id":1}{}', '{"method":"a","id":1} x',
    '\ufeff{"method":"a","id":1}', '{"method":"a","id":1}\u00a0', '{"method":"a","id":1,"p":"\ud800"}x',
  ];
  for (const m of bad) assert.deepEqual(checked(rpc, m), ['malformed', []], JSON.stringify(m));
  // Invalid UTF-8 bytes outside strings are malformed; inside strings they are not checked.
  assert.deepEqual(classify(rpc, Buffer.from([0x7b, 0xff, 0x7d])), ['malformed', []]);
  const inString = Buffer.concat([Buffer.from('{"method":"a","params":"'), Buffer.from([0xff, 0xfe]), Buffer.from('","id":1}')]);
  assert.deepEqual(classify(rpc, inString), ['request', ['n:1']]);
});

test('json-rpc: id length limit', () => {
  const id = 'x'.repeat(512);
  assert.deepEqual(classify(rpc, `{"method":"a","id":"${id}"}`), ['request', [`s:${id}`]]);
  assert.deepEqual(classify(rpc, `{"method":"a","id":"${id}x"}`), ['malformed', []]);
  assert.deepEqual(classify(rpc, `{"method":"a","id":${'9'.repeat(513)}}`), ['malformed', []]);
  assert.deepEqual(classify(rpc, `{"method":"a","id":"${id}x","params":[]}`), ['malformed', []]);
});

test('json-rpc: nesting depth', () => {
  const nest = (n: number): string => '['.repeat(n) + ']'.repeat(n);
  assert.deepEqual(classify(rpc, `{"method":"a","params":${nest(1000)},"id":1}`), ['request', ['n:1']]);
  assert.deepEqual(classify(rpc, `{"method":"a","params":${'{"a":'.repeat(1000)}1${'}'.repeat(1000)},"id":1}`), ['request', ['n:1']]);
  assert.deepEqual(classify(rpc, `{"method":"a","params":${nest(5000)},"id":1}`), ['malformed', []]);
  // A huge nesting (no recursion, no stack overflow) is just malformed.
  assert.deepEqual(classify(rpc, `{"method":"a","params":${'['.repeat(1 << 20)}`), ['malformed', []]);
  assert.deepEqual(classify(rpc, '['.repeat(1 << 20)), ['malformed', []]);
});

test('json-rpc: every prefix of a valid message is malformed and never throws', () => {
  for (const m of [
    '{"jsonrpc":"2.0","method":"sum","params":[1,2.5e-3,{"a":[true,false,null]}],"id":"r-\\u00e9\\"1"}',
    '{"id":-12.5E+3,"result":{"x":"y","z":[]}}',
    '{"error":{"code":-32600,"message":"Invalid"},"id":null}',
    '[{"method":"a","id":1},{"method":"n"},{"method":"b","id":"2"}]',
    '[ {"result":1,"id":1} , {"error":{},"id":"2"} ]',
  ]) {
    assertPrefixesMalformed(rpc, m);
  }
});

test('json-rpc: large payload', () => {
  const s = 'a'.repeat(1 << 20);
  assert.deepEqual(classify(rpc, `{"jsonrpc":"2.0","method":"put","params":{"blob":"${s}"},"id":42}`), ['request', ['n:42']]);
  assert.deepEqual(classify(rpc, `{"result":"${s}","jsonrpc":"2.0","id":"big"}`), ['response', ['s:big']]);
  const arr = JSON.stringify({ method: 'put', params: Array.from({ length: 100_000 }, (_, i) => ({ i, v: [i, 'x'] })), id: 'arr' });
  assert.ok(arr.length > 1 << 20);
  assert.deepEqual(classify(rpc, arr), ['request', ['s:arr']]);
});

/** What a JSON-RPC message is, by JSON.parse (reference for the fuzz test). Number ids as Number. */
function rpcReference(text: string): Result {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return ['malformed', []];
  }
  const one = (o: unknown): [MessageKind, string | null] => {
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return ['malformed', null];
    const r = o as Record<string, unknown>;
    const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(r, k);
    const id = r['id'];
    const key = typeof id === 'string' ? `s:${id}` : typeof id === 'number' ? `n:${id}` : null;
    const idOk = key !== null; // the fuzzed ids stay far below the length limit
    if (has('method')) {
      if (typeof r['method'] !== 'string' || has('result') || has('error')) return ['malformed', null];
      if (!has('id') || id === null) return ['other', null];
      return idOk ? ['request', key] : ['malformed', null];
    }
    if (has('result') === has('error')) return ['malformed', null];
    if (id === null) return has('error') ? ['other', null] : ['malformed', null];
    return idOk ? ['response', key] : ['malformed', null];
  };
  if (!Array.isArray(v)) {
    const [k, id] = one(v);
    return [k, id === null ? [] : [id]];
  }
  if (v.length === 0) return ['malformed', []];
  let mode: MessageKind = 'other';
  const ids: string[] = [];
  for (const el of v) {
    const [k, id] = one(el);
    if (k === 'malformed') return ['malformed', []];
    if (k === 'other') continue;
    if (mode !== 'other' && mode !== k) return ['malformed', []];
    mode = k;
    ids.push(id!);
  }
  return [mode, ids];
}

const normaliseNumberIds = (ids: string[]): string[] => ids.map((id) => (id.startsWith('n:') ? `n:${Number(id.slice(2))}` : id));

test('json-rpc: random bytes and mutated messages never throw and agree with JSON.parse', () => {
  const rnd = mulberry32(0x2012);
  for (let i = 0; i < 5000; i++) {
    const len = Math.floor(rnd() * 64);
    const buf = Buffer.alloc(len);
    for (let j = 0; j < len; j++) buf[j] = Math.floor(rnd() * 256);
    checked(rpc, buf);
  }
  const seeds = [
    '{"jsonrpc":"2.0","method":"sum","params":[1,-2.5e-3,{"a":[true,false,null]}],"id":"r\\u00e91"}',
    '{"id":12,"result":{"x":"y","z":[]}}',
    '{"error":{"code":-32600,"message":"Invalid"},"id":null}',
    '{"method":"n","params":{"id":1}}',
    '[{"method":"a","id":1},{"method":"n"},{"method":"b","id":"2"}]',
    '[{"result":1,"id":1},{"error":{},"id":"2"}]',
  ].map((s) => Buffer.from(s));
  const seen = new Set<MessageKind>();
  for (let i = 0; i < 30000; i++) {
    const m = mutate(rnd, seeds[i % seeds.length]!, JSON_ALPHABET);
    const [kind, ids] = checked(rpc, m);
    const [wantKind, wantIds] = rpcReference(m.toString('utf8'));
    assert.deepEqual([kind, normaliseNumberIds(ids)], [wantKind, wantIds], m.toString('utf8'));
    seen.add(kind);
  }
  assert.deepEqual([...seen].sort(), [...KINDS].sort(), 'the mutations reach every kind');
});
