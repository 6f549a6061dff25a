import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig } from '../sidecar/config/load.js';
import { z } from 'zod';
import { valueAt } from '../common/config/paths.js';
import { SCHEMA, envName, key, keysOf, section, type SidecarConfig } from '../common/config/schema.js';
import { duration, formatValue, parseDuration, parseHostPort, parseSize, readValue } from '../common/values.js';
import { WSBALANCER_ALIASES } from '../sidecar/config/wsbalancer.js';
import { DOCS_PATH, keyTable, renderConfigDocs } from '../tools/gen-config-docs.js';

// --- helpers ---------------------------------------------------------------------------------

/** Runs fn, expects a ConfigError, returns its problems. */
function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.ok(err.problems.length > 0);
    assert.ok(err.message.includes(err.problems[0]!), 'message lists the problems');
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

/** The problems of parsing yaml + env. */
const bad = (yaml: string | undefined, env: NodeJS.ProcessEnv = {}) => problems(() => parseConfig(yaml, env, 'test.yaml'));

/** Asserts one problem contains every fragment; returns it. */
function hasProblem(list: string[], ...fragments: string[]): string {
  const hit = list.find((p) => fragments.every((f) => p.includes(f)));
  assert.ok(hit, `no problem containing ${JSON.stringify(fragments)} in:\n  ${list.join('\n  ')}`);
  return hit;
}

const cfg = (yaml?: string, env: NodeJS.ProcessEnv = {}) => parseConfig(yaml, env, 'test.yaml');

let dir: string;
let certFile: string;
let keyFile: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'baton-config-'));
  certFile = join(dir, 'cert.pem');
  keyFile = join(dir, 'key.pem');
  writeFileSync(certFile, 'cert');
  writeFileSync(keyFile, 'key');
});
after(() => rmSync(dir, { recursive: true, force: true }));

// --- defaults ----------------------------------------------------------------------------------

const DEFAULTS: SidecarConfig = {
  listen: {
    address: { host: '0.0.0.0', port: 8080 },
    tls: null,
    maxHeaderBytes: 16 * 1024,
    requestTimeout: 10_000,
    perMessageDeflate: { enabled: true, threshold: 1024 },
  },
  admin: { address: { host: '127.0.0.1', port: 9901 }, tokenFile: '', token: '', metricsRequireToken: false },
  logLevel: 'info',
  session: {
    maxMessageBytes: 16 * 1024 * 1024,
    highWaterMarkBytes: 1024 * 1024,
    pingInterval: 10_000,
    pongTimeout: 5_000,
    idleTimeout: 0,
    maxLifetime: 0,
    trustForwardedFor: true,
    passRequestHeaders: [],
    blockRequestHeaders: [],
    passResponseHeaders: [],
  },
  failover: {
    closeCodes: [1001, 1005, 1006, 1011, 1012, 1013],
    deadline: 30_000,
    bufferMaxBytes: 16 * 1024 * 1024,
    bufferMaxMessages: 4096,
    backoff: { initial: 50, max: 5_000, multiplier: 2, jitter: 0.2 },
    reconnectHeader: { name: 'X-Balancer-Reconnect', value: '1' },
    mode: 'resume',
    drainTimeout: 10_000,
  },
  migration: { quietPeriod: 300, maxQuietWait: 2_000 },
  balancer: { algorithm: 'least-sessions', hashKey: { source: 'path', name: '' }, slowStart: 0 },
  health: {
    breaker: { threshold: 5, openBase: 1_000, openMax: 30_000 },
    phi: { threshold: 16, windowSize: 100, minStdDev: 500, acceptablePause: 0 },
    maxEjectedPercent: 50,
    probe: { type: 'none', interval: 5_000, timeout: 2_000, path: '/' },
  },
  upstream: {
    connectTimeout: 5_000,
    maxConcurrentDials: 128,
    handshakeTimeout: 10_000,
    perMessageDeflate: false,
    tls: { caFile: '', certFile: '', keyFile: '', servername: '', rejectUnauthorized: true },
    keepAlive: { enabled: false, initialDelay: 30_000 },
    localAddress: '',
  },
  codec: { default: 'auto', paths: [], maxTrackedRequests: 1000, maxTrackedBytes: 1024 * 1024, maxStateFrames: 256, maxStateBytes: 256 * 1024, resumeTimeout: 5_000, requestTimeout: 60_000, orphanAnswers: 'forward' },
  shutdown: { grace: 30_000 },
  dns: { resolve: false, refresh: 30_000, minTtl: 1000, maxTtl: 60_000, servers: [], timeout: 5000 },
  backends: [],
};

describe('defaults', () => {
  test('no file and no env give a complete config with the documented defaults', () => {
    const loaded = parseConfig(undefined, {});
    assert.deepEqual(loaded.config, DEFAULTS);
    assert.deepEqual(loaded.warnings, []);
    assert.equal(loaded.source, 'defaults');
  });

  test('an empty file is the defaults too', () => {
    assert.deepEqual(cfg('').config, DEFAULTS);
    assert.deepEqual(cfg('# nothing\n').config, DEFAULTS);
  });

  test('results do not share objects with the schema defaults', () => {
    const a = cfg().config;
    a.failover.closeCodes.push(4000);
    a.listen.address.port = 1;
    assert.deepEqual(cfg().config, DEFAULTS);
  });

  test('`key:` with no value means the default', () => {
    assert.deepEqual(cfg('failover:\n  deadline:\n  closeCodes:\n').config, DEFAULTS);
  });
});

// --- schema, env names -------------------------------------------------------------------------

describe('schema', () => {
  test('env names are BATON_ + the path upper-snake-cased', () => {
    assert.equal(envName('failover.backoff.initial'), 'BATON_FAILOVER_BACKOFF_INITIAL');
    assert.equal(envName('listen.address'), 'BATON_LISTEN_ADDRESS');
    assert.equal(envName('session.pingInterval'), 'BATON_SESSION_PING_INTERVAL');
    assert.equal(envName('listen.perMessageDeflate.enabled'), 'BATON_LISTEN_PER_MESSAGE_DEFLATE_ENABLED');
    assert.equal(envName('logLevel'), 'BATON_LOG_LEVEL');
    const byPath = new Map(SCHEMA.map((k) => [k.path, k.env]));
    assert.equal(byPath.get('admin.token'), 'BATON_ADMIN_TOKEN');
    assert.equal(byPath.get('balancer.hashKey'), 'BATON_BALANCER_HASH_KEY');
    assert.equal(byPath.get('backends'), 'BATON_BACKENDS');
    assert.equal(new Set(SCHEMA.map((k) => k.env)).size, SCHEMA.length);
  });

  test('every key has a one-line doc, and its default passes its own validation', () => {
    for (const k of SCHEMA) {
      assert.ok(k.doc.length > 0 && !k.doc.includes('\n'), k.path);
      const p = readValue(k.type, k.default, 'yaml');
      assert.ok(p.ok, `${k.path} default ${JSON.stringify(k.default)}`);
    }
  });

  test('adding a key is one entry: its type, default, env name, docs and restart flag all come from it', () => {
    const tree = z.object({
      dns: section({ refreshInterval: key(duration({ min: 1 }), 30_000, 'How often backend names are resolved again.', { restart: true }) }, 'DNS backends.'),
    });
    const { keys, sections } = keysOf(tree);
    assert.deepEqual(sections, { dns: 'DNS backends.' });
    assert.equal(keys.length, 1);
    const k = keys[0]!;
    assert.deepEqual([k.path, k.env, k.default, k.restart], ['dns.refreshInterval', 'BATON_DNS_REFRESH_INTERVAL', 30_000, true]);
    assert.equal(
      keyTable(keys).split('\n')[2],
      '| `dns.refreshInterval` | `BATON_DNS_REFRESH_INTERVAL` | `30s` | How often backend names are resolved again. **(restart)** *duration ≥ 1ms* |',
    );
    // The tree fills the default and reads YAML spellings; the key's type reads env strings.
    assert.deepEqual(tree.parse({}), { dns: { refreshInterval: 30_000 } });
    assert.deepEqual(tree.parse({ dns: { refreshInterval: '1m' } }), { dns: { refreshInterval: 60_000 } });
    assert.deepEqual(readValue(k.type, '2s', 'env'), { ok: true, value: 2000 });
    assert.deepEqual(readValue(k.type, 'soon', 'env'), {
      ok: false,
      problems: [{ message: '"soon" is not a duration (use e.g. 250ms, 10s, 5m, 1m30s or a number of milliseconds)' }],
    });
  });

  test("the loader's defaults are the schema's: each key's default is what an empty config holds at its path", () => {
    const config = parseConfig(undefined, {}).config;
    for (const k of SCHEMA) {
      if (k.path.startsWith('listen.tls.')) continue; // listen.tls is null unless certFile and keyFile are set
      assert.deepEqual(valueAt(config, k.path), k.default, k.path);
    }
  });

  test('every key can be set through its env var (format → parse round trip)', () => {
    for (const k of SCHEMA) {
      if (k.path === 'backends' || k.path.endsWith('File')) continue;
      const text = formatValue(k.type, k.default);
      const raw = text.startsWith('"') ? JSON.parse(text) : text === '[]' ? '' : text;
      const p = readValue(k.type, raw, 'env');
      assert.ok(p.ok, `${k.env}=${raw}`);
      assert.deepEqual(p.value, k.default, k.env);
    }
  });
});

// --- value syntax ------------------------------------------------------------------------------

describe('value parsers', () => {
  test('durations, including Go compounds', () => {
    const cases: Array<[unknown, number | undefined]> = [
      ['250ms', 250], ['10s', 10_000], ['1.5s', 1_500], ['5m', 300_000], ['1h', 3_600_000],
      ['1m30s', 90_000], ['1h2m3s', 3_723_000], ['500ms', 500], ['10m', 600_000], ['2s500ms', 2_500],
      ['1500us', 2], ['100', 100], [100, 100], ['0', 0], [0, 0], [' 10s ', 10_000],
      ['-5s', undefined], [-1, undefined], ['30 parsecs', undefined], ['10 s', undefined], ['5d', undefined],
      ['', undefined], ['s', undefined], [true, undefined], [null, undefined], ['1m30', undefined],
    ];
    for (const [raw, want] of cases) assert.equal(parseDuration(raw), want, JSON.stringify(raw));
  });

  test('sizes', () => {
    const cases: Array<[unknown, number | undefined]> = [
      ['64KiB', 65_536], ['16MiB', 16_777_216], ['1GiB', 1_073_741_824], ['512B', 512], ['512', 512],
      [4096, 4096], ['1.5KiB', 1536], ['0', 0],
      ['64KB', undefined], ['1MB', undefined], ['-1', undefined], [-1, undefined], [1.5, undefined], ['big', undefined],
    ];
    for (const [raw, want] of cases) assert.equal(parseSize(raw), want, JSON.stringify(raw));
  });

  test('host:port addresses', () => {
    assert.deepEqual(parseHostPort(':8080'), { host: '0.0.0.0', port: 8080 });
    assert.deepEqual(parseHostPort('127.0.0.1:9901'), { host: '127.0.0.1', port: 9901 });
    assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(parseHostPort('localhost:0'), { host: 'localhost', port: 0 });
    assert.deepEqual(parseHostPort(':65535'), { host: '0.0.0.0', port: 65535 });
    for (const s of ['8080', ':65536', 'host:', '::1:80', '[nope]:80', 'a b:80', ':-1', '1.2.3.4:8o']) {
      assert.equal(parseHostPort(s), undefined, s);
    }
  });

  test('env booleans, lists, hash key strings', () => {
    const c = cfg(undefined, {
      BATON_UPSTREAM_PER_MESSAGE_DEFLATE: 'yes',
      BATON_SESSION_TRUST_FORWARDED_FOR: '0',
      BATON_LISTEN_PER_MESSAGE_DEFLATE_ENABLED: 'FALSE',
      BATON_SESSION_BLOCK_REQUEST_HEADERS: ' Cookie, ,Authorization,cookie ',
      BATON_FAILOVER_CLOSE_CODES: '1001,4000',
      BATON_BALANCER_HASH_KEY: 'header:X-User',
    }).config;
    assert.equal(c.upstream.perMessageDeflate, true);
    assert.equal(c.session.trustForwardedFor, false);
    assert.equal(c.listen.perMessageDeflate.enabled, false);
    assert.deepEqual(c.session.blockRequestHeaders, ['cookie', 'authorization']);
    assert.deepEqual(c.failover.closeCodes, [1001, 4000]);
    assert.deepEqual(c.balancer.hashKey, { source: 'header', name: 'x-user' });
    assert.deepEqual(cfg(undefined, { BATON_BALANCER_HASH_KEY: 'query:room' }).config.balancer.hashKey, { source: 'query', name: 'room' });
    assert.deepEqual(cfg('balancer: { hashKey: "query:room" }').config.balancer.hashKey, { source: 'query', name: 'room' });
    assert.deepEqual(cfg('balancer: { hashKey: { source: header, name: X-Tenant } }').config.balancer.hashKey, { source: 'header', name: 'x-tenant' });
    hasProblem(bad(undefined, { BATON_BALANCER_HASH_KEY: 'cookie:x' }), 'BATON_BALANCER_HASH_KEY (balancer.hashKey)', '"cookie:x"');
    hasProblem(bad('balancer: { hashKey: { source: header, nmae: x } }'), 'balancer.hashKey.nmae', 'unknown key');
  });

  test('YAML list values and port 0', () => {
    const c = cfg('listen: { address: "127.0.0.1:0" }\nsession:\n  passRequestHeaders: [X-A, x-b]\nfailover:\n  closeCodes: [1001, 4000]\n').config;
    assert.deepEqual(c.listen.address, { host: '127.0.0.1', port: 0 });
    assert.deepEqual(c.session.passRequestHeaders, ['x-a', 'x-b']);
    assert.deepEqual(c.failover.closeCodes, [1001, 4000]);
  });

  test('addresses may also be written in the config shape {host, port}', () => {
    assert.deepEqual(cfg('listen: { address: { host: "::1", port: 81 } }').config.listen.address, { host: '::1', port: 81 });
    assert.deepEqual(cfg('listen: { address: { port: 82 } }').config.listen.address, { host: '0.0.0.0', port: 82 });
    hasProblem(bad('listen: { address: { host: x, prot: 1 } }'), 'listen.address.prot', 'unknown key');
    hasProblem(bad('listen: { address: { host: x, port: 70000 } }'), 'listen.address', '70000', 'host:port');
  });
});

// --- validation errors -------------------------------------------------------------------------

describe('validation errors name the key, the value and what is expected', () => {
  test('bad duration', () => {
    const p = hasProblem(bad('failover:\n  deadline: 30 parsecs\n'), 'failover.deadline', '"30 parsecs"', 'is not a duration');
    assert.match(p, /^failover\.deadline: "30 parsecs" is not a duration \(use e\.g\. 250ms, 10s, 5m/);
    hasProblem(bad('session: { pingInterval: -5s }'), 'session.pingInterval', '"-5s"', 'negative');
    hasProblem(bad(undefined, { BATON_FAILOVER_DEADLINE: '30 parsecs' }), 'BATON_FAILOVER_DEADLINE (failover.deadline)', '"30 parsecs"', 'not a duration');
  });

  test('codec names and path routes', () => {
    hasProblem(bad('codec: { default: ocpp2 }'), 'codec.default', '"ocpp2"', 'module:');
    hasProblem(bad('codec: { paths: ["/ocpp=ocpp", "ocpp=ocpp", "/x=soap"] }'), 'codec.paths[1]', '"ocpp=ocpp"', 'prefix=codec');
    hasProblem(bad('codec: { paths: ["/ocpp=ocpp", "/x=soap"] }'), 'codec.paths[1]', '"/x=soap"');
    hasProblem(bad(undefined, { BATON_CODEC_ORPHAN_ANSWERS: 'keep' }), 'BATON_CODEC_ORPHAN_ANSWERS (codec.orphanAnswers)', '"keep"', 'forward, drop');
    const { config } = parseConfig('codec: { default: "module:/tmp/c.js", paths: ["/ocpp=ocpp", "/rpc=json-rpc"] }', {}, 't');
    assert.deepEqual(config.codec.paths, ['/ocpp=ocpp', '/rpc=json-rpc']);
    assert.equal(config.codec.default, 'module:/tmp/c.js');
    assert.deepEqual(parseConfig(undefined, { BATON_CODEC_PATHS: '/a=ocpp, /b=json-rpc' }, 't').config.codec.paths, ['/a=ocpp', '/b=json-rpc']);
  });

  test('durations that must be positive, and too long', () => {
    hasProblem(bad('session: { pingInterval: 0 }'), 'session.pingInterval', '0', 'at least 1ms');
    hasProblem(bad(undefined, { BATON_SESSION_PONG_TIMEOUT: '0s' }), 'BATON_SESSION_PONG_TIMEOUT (session.pongTimeout)', '"0s"', 'at least');
    hasProblem(bad('shutdown: { grace: 1000h }'), 'shutdown.grace', '"1000h"', 'too long');
  });

  test('bad size', () => {
    hasProblem(bad('session: { maxMessageBytes: 16MB }'), 'session.maxMessageBytes', '"16MB"', 'is not a size', 'KiB');
    hasProblem(bad(undefined, { BATON_LISTEN_MAX_HEADER_BYTES: 'lots' }), 'BATON_LISTEN_MAX_HEADER_BYTES (listen.maxHeaderBytes)', '"lots"', 'not a size');
    hasProblem(bad('listen: { maxHeaderBytes: 1GiB }'), 'listen.maxHeaderBytes', '"1GiB"', 'out of range');
  });

  test('out-of-range int and float', () => {
    hasProblem(bad('health: { maxEjectedPercent: 101 }'), 'health.maxEjectedPercent', '101', 'out of range', '0..100');
    hasProblem(bad('failover: { bufferMaxMessages: 1.5 }'), 'failover.bufferMaxMessages', '1.5', 'not an integer');
    hasProblem(bad(undefined, { BATON_FAILOVER_BACKOFF_JITTER: '2' }), 'BATON_FAILOVER_BACKOFF_JITTER (failover.backoff.jitter)', '"2"', '0..1');
    hasProblem(bad('failover: { backoff: { multiplier: fast } }'), 'failover.backoff.multiplier', '"fast"', 'not a number');
  });

  test('bad enum', () => {
    hasProblem(bad('logLevel: verbose'), 'logLevel', '"verbose"', 'trace, debug, info');
    hasProblem(bad(undefined, { BATON_BALANCER_ALGORITHM: 'random' }), 'BATON_BALANCER_ALGORITHM (balancer.algorithm)', '"random"', 'least-sessions');
  });

  test('bad bool in env', () => {
    hasProblem(bad(undefined, { BATON_SESSION_TRUST_FORWARDED_FOR: 'maybe' }), 'BATON_SESSION_TRUST_FORWARDED_FOR (session.trustForwardedFor)', '"maybe"', 'not a boolean');
  });

  test('bad address', () => {
    hasProblem(bad('listen: { address: "0.0.0.0:99999" }'), 'listen.address', '"0.0.0.0:99999"', 'host:port');
    hasProblem(bad(undefined, { BATON_ADMIN_ADDRESS: 'localhost' }), 'BATON_ADMIN_ADDRESS (admin.address)', '"localhost"', 'host:port');
  });

  test('bad header names', () => {
    hasProblem(bad('session: { blockRequestHeaders: [Cookie, "X Bad"] }'), 'session.blockRequestHeaders[1]', '"X Bad"', 'header name');
    hasProblem(bad(undefined, { BATON_FAILOVER_RECONNECT_HEADER_NAME: 'X:Y' }), 'BATON_FAILOVER_RECONNECT_HEADER_NAME (failover.reconnectHeader.name)', '"X:Y"');
  });

  test('close code out of range', () => {
    hasProblem(bad('failover: { closeCodes: [1001, 999, 5000] }'), 'failover.closeCodes[1]', '999', '1000..4999');
    hasProblem(bad(undefined, { BATON_FAILOVER_CLOSE_CODES: '1001,5000' }), 'BATON_FAILOVER_CLOSE_CODES (failover.closeCodes[1])', '"5000"', '1000..4999');
  });

  test('unknown YAML key names the full dotted key', () => {
    hasProblem(bad('failover:\n  backoff:\n    inital: 10ms\n'), 'failover.backoff.inital', 'unknown key', 'did you mean failover.backoff.initial');
    hasProblem(bad('sesion: {}\n'), 'sesion', 'unknown key', 'session');
    hasProblem(bad('listen: { tls: { cert: x } }'), 'listen.tls.cert', 'unknown key');
    hasProblem(bad('failover: 5'), 'failover', '5', 'not a mapping');
  });

  test('backend url scheme, fragment, id chars, duplicates, weight', () => {
    hasProblem(bad('backends:\n  - url: http://a:9000\n'), 'backends[0].url', '"http://a:9000"', 'ws://a:9000');
    hasProblem(bad('backends:\n  - url: https://a\n'), 'backends[0].url', 'wss://a');
    hasProblem(bad('backends:\n  - url: ftp://a\n'), 'backends[0].url', '"ftp://a"', 'ws:// or wss://');
    hasProblem(bad('backends:\n  - url: ws://a/x#frag\n'), 'backends[0].url', 'fragment');
    hasProblem(bad('backends:\n  - url: "not a url"\n'), 'backends[0].url', '"not a url"', 'not a valid URL');
    hasProblem(bad('backends:\n  - id: ok\n'), 'backends[0].url', 'required');
    hasProblem(bad('backends:\n  - { id: "bad id!", url: "ws://a" }\n'), 'backends[0].id', '"bad id!"', 'A-Z a-z 0-9 . _ : / [ ] -');
    hasProblem(bad(`backends:\n  - { id: "${'x'.repeat(129)}", url: "ws://a" }\n`), 'backends[0].id', 'not a valid backend id');
    hasProblem(bad('backends:\n  - { url: "ws://a", weight: 0 }\n'), 'backends[0].weight', '0', '1..1000');
    hasProblem(bad('backends:\n  - { url: "ws://a", weight: 1001 }\n'), 'backends[0].weight', '1001', '1..1000');
    hasProblem(bad('backends:\n  - { url: "ws://a", state: off }\n'), 'backends[0].state', '"off"', 'enabled, disabled, draining');
    hasProblem(bad('backends:\n  - { url: "ws://a", wieght: 2 }\n'), 'backends[0].wieght', 'unknown key');
    // default ids: host:port with the default port filled in
    const dup = hasProblem(bad('backends:\n  - url: ws://a/one\n  - url: ws://a:80/two\n'), 'backends[1]', '"a:80"', 'already used by backends[0]');
    assert.match(dup, /unique/);
    hasProblem(bad('backends:\n  - { id: x, url: "ws://a" }\n  - { id: x, url: "ws://b" }\n'), 'backends[1]', '"x"');
    hasProblem(bad(undefined, { BATON_BACKENDS: 'ws://a,http://b' }), 'BATON_BACKENDS (backends[1].url)', '"http://b"');
  });

  test('backend defaults and fields', () => {
    const c = cfg(
      'backends:\n' +
        '  - url: ws://10.0.0.5:9000/ws\n' +
        '  - { id: blue-2, url: "wss://blue.internal/ws", weight: 3, standby: true, labels: { color: blue, n: 2 }, state: draining }\n' +
        '  - wss://c.example\n' +
        '  - url: "ws://[::1]:7000"\n',
    ).config;
    assert.deepEqual(c.backends, [
      { id: '10.0.0.5:9000', url: 'ws://10.0.0.5:9000/ws', weight: 1, standby: false, labels: {}, state: 'enabled' },
      { id: 'blue-2', url: 'wss://blue.internal/ws', weight: 3, standby: true, labels: { color: 'blue', n: '2' }, state: 'draining' },
      { id: 'c.example:443', url: 'wss://c.example', weight: 1, standby: false, labels: {}, state: 'enabled' },
      { id: '::1:7000', url: 'ws://[::1]:7000', weight: 1, standby: false, labels: {}, state: 'enabled' },
    ]);
  });

  test('listen.tls half-configured names the missing key', () => {
    hasProblem(bad(`listen: { tls: { certFile: "${certFile}" } }`), 'listen.tls.keyFile', 'is not set', 'listen.tls.certFile');
    hasProblem(bad(undefined, { BATON_LISTEN_TLS_KEY_FILE: keyFile }), 'listen.tls.certFile', 'is not set', 'BATON_LISTEN_TLS_KEY_FILE (listen.tls.keyFile)');
    hasProblem(bad(`listen: { tls: { caFile: "${certFile}" } }`), 'listen.tls.caFile', 'needs TLS');
    hasProblem(bad(`upstream: { tls: { keyFile: "${keyFile}" } }`), 'upstream.tls.certFile', 'is not set', 'upstream.tls.keyFile');
  });

  test('listen.tls complete', () => {
    const c = cfg(`listen:\n  tls:\n    certFile: ${certFile}\n    keyFile: ${keyFile}\n`).config;
    assert.deepEqual(c.listen.tls, { certFile, keyFile, caFile: '' });
  });

  test('missing *File names the key and the path', () => {
    const missing = join(dir, 'nope.pem');
    hasProblem(bad(`listen: { tls: { certFile: "${missing}", keyFile: "${keyFile}" } }`), 'listen.tls.certFile', JSON.stringify(missing), 'does not exist');
    hasProblem(bad(undefined, { BATON_ADMIN_TOKEN_FILE: missing }), 'BATON_ADMIN_TOKEN_FILE (admin.tokenFile)', 'does not exist');
    hasProblem(bad(`upstream: { tls: { caFile: "${dir}" } }`), 'upstream.tls.caFile', 'directory');
  });

  test('admin on a non-loopback address needs a token', () => {
    const p = hasProblem(bad('admin: { address: ":9901" }'), 'admin.address', '"0.0.0.0:9901"', 'admin.token', 'admin.tokenFile', '127.0.0.1');
    assert.match(p, /set admin\.token \/ admin\.tokenFile/);
    hasProblem(bad(undefined, { BATON_ADMIN_ADDRESS: '10.1.2.3:9901' }), 'BATON_ADMIN_ADDRESS (admin.address)');
    assert.equal(cfg('admin: { address: ":9901", token: s3cret }').config.admin.token, 's3cret');
    assert.equal(cfg('admin: { address: ":9901" }', { BATON_ADMIN_TOKEN: 'x' }).config.admin.token, 'x');
    assert.equal(cfg(`admin: { address: ":9901", tokenFile: "${keyFile}" }`).config.admin.tokenFile, keyFile);
    for (const host of ['127.0.0.1', '127.1.2.3', '[::1]', 'localhost']) {
      assert.equal(cfg(`admin: { address: "${host}:9901" }`).config.admin.address.port, 9901, host);
    }
  });

  test('backoff initial > max, breaker openBase > openMax', () => {
    hasProblem(bad('failover: { backoff: { initial: 10s, max: 5s } }'), 'failover.backoff.initial', '10s', 'failover.backoff.max', '5s');
    hasProblem(bad(undefined, { BATON_FAILOVER_BACKOFF_INITIAL: '6s' }), 'BATON_FAILOVER_BACKOFF_INITIAL (failover.backoff.initial)', '6s');
    hasProblem(bad('health: { breaker: { openBase: 1m } }'), 'health.breaker.openBase', '1m', 'health.breaker.openMax', '30s');
  });

  test('YAML syntax error gives the file and line', () => {
    const p = bad('listen:\n  address: ":8080"\nfailover: [1,\n  deadline: 5s\nsession: {}\n');
    assert.equal(p.length, 1);
    assert.match(p[0]!, /^test\.yaml:\d+:\d+: YAML syntax error: /);
    hasProblem(bad('a: 1\na: 2\n'), 'test.yaml:2:', 'unique');
    hasProblem(bad('- 1\n- 2\n'), 'test.yaml', 'top level must be a mapping');
  });

  test('all problems are collected at once', () => {
    const p = bad(
      'failover:\n  deadline: 30 parsecs\n  backof: {}\nlogLevel: loud\nsession:\n  maxMessageBytes: huge\nbackends:\n  - url: http://a\n',
      { BATON_SESSION_PING_INTERVAL: 'often', BATON_HEALTH_MAX_EJECTED_PERCENT: '200' },
    );
    hasProblem(p, 'failover.deadline');
    hasProblem(p, 'failover.backof');
    hasProblem(p, 'logLevel');
    hasProblem(p, 'session.maxMessageBytes');
    hasProblem(p, 'backends[0].url');
    hasProblem(p, 'BATON_SESSION_PING_INTERVAL');
    hasProblem(p, 'BATON_HEALTH_MAX_EJECTED_PERCENT');
    assert.equal(p.length, 7);
  });
});

// --- precedence --------------------------------------------------------------------------------

describe('precedence: defaults < YAML < env', () => {
  test('env overrides YAML', () => {
    const c = cfg('failover: { deadline: 20s }\nlogLevel: debug\nlisten: { address: ":9000" }\n', {
      BATON_FAILOVER_DEADLINE: '1m',
      BATON_LISTEN_ADDRESS: '127.0.0.1:9100',
    }).config;
    assert.equal(c.failover.deadline, 60_000);
    assert.equal(c.logLevel, 'debug');
    assert.deepEqual(c.listen.address, { host: '127.0.0.1', port: 9100 });
  });

  test('BATON_BACKENDS (url and id=url) replaces the YAML list', () => {
    const c = cfg('backends:\n  - ws://yaml:1\n', { BATON_BACKENDS: ' ws://a:9000/x?y=1 , blue=wss://b/ws,, ' }).config;
    assert.deepEqual(
      c.backends.map((b) => [b.id, b.url]),
      [
        ['a:9000', 'ws://a:9000/x?y=1'],
        ['blue', 'wss://b/ws'],
      ],
    );
    assert.deepEqual(cfg('backends: [ws://yaml:1]', { BATON_BACKENDS: '' }).config.backends, []);
  });

  test('unknown BATON_ variables are warned about, not fatal', () => {
    const { warnings } = cfg(undefined, { BATON_FAILOVER_DEADLNE: '5s' });
    hasProblem(warnings, 'BATON_FAILOVER_DEADLNE', 'did you mean BATON_FAILOVER_DEADLINE');
  });
});

// --- wsbalancer --------------------------------------------------------------------------------

describe('wsbalancer compatibility', () => {
  const WSB_YAML = `
server:
  frontend:
    address: ":8090"
    read-timeout: 15s
    wite-timeout: 10s
    max-header-bytes: 524288
  admin:
    address: "127.0.0.1:8081"
    read-timeout: 10s
    write-timeout: 10s
    max-header-bytes: 524288
  read-buffer-size: 1024
  write-buffer-size: 1024
  trust-received-xff: false
  block-headers: [Cookie, X-Internal]
  reconnect-header: X-Reconnect
  enable-instrumentation: true
  logging-level: WARN
upstream:
  backends:
    - url: ws://localhost:9090
      ping-time: 10m
      breaker-threshold: 0
      handshake-timeout: 1m30s
      pass-headers: [X-Session]
      abnormal-close-codes: [1001, 1006]
      read-buffer-size: 4096
    - url: ws://localhost:9091/x
      id: second
      ping-time: 600s
      pass-headers: [x-session]
`;

  test('a wsbalancer-only YAML file loads and maps onto Baton keys', () => {
    const { config: c, warnings } = cfg(WSB_YAML);
    assert.deepEqual(c.listen.address, { host: '0.0.0.0', port: 8090 });
    assert.equal(c.listen.requestTimeout, 15_000);
    assert.equal(c.listen.maxHeaderBytes, 524_288);
    assert.deepEqual(c.admin.address, { host: '127.0.0.1', port: 8081 });
    assert.equal(c.session.trustForwardedFor, false);
    assert.deepEqual(c.session.blockRequestHeaders, ['cookie', 'x-internal']);
    assert.equal(c.failover.reconnectHeader.name, 'X-Reconnect');
    assert.equal(c.logLevel, 'warn');
    assert.equal(c.session.pingInterval, 600_000);
    assert.equal(c.health.breaker.threshold, 0);
    assert.equal(c.upstream.handshakeTimeout, 90_000);
    assert.deepEqual(c.session.passResponseHeaders, ['x-session']);
    assert.deepEqual(c.failover.closeCodes, [1001, 1006]);
    assert.deepEqual(
      c.backends.map((b) => [b.id, b.url]),
      [
        ['localhost:9090', 'ws://localhost:9090'],
        ['second', 'ws://localhost:9091/x'],
      ],
    );
    for (const key of [
      'server.frontend.wite-timeout',
      'server.admin.read-timeout',
      'server.admin.write-timeout',
      'server.admin.max-header-bytes',
      'server.read-buffer-size',
      'server.write-buffer-size',
      'upstream.backends[].read-buffer-size',
    ]) {
      hasProblem(warnings, key, 'no effect in Baton');
    }
    hasProblem(warnings, 'server.enable-instrumentation', 'metrics are always on');
  });

  test('the minimal wsbalancer example from its docs loads', () => {
    const c = cfg('upstream: { backends: [ { url: "ws://localhost:9090" }, { url: "ws://localhost:9091" } ] }').config;
    assert.deepEqual(c.backends.map((b) => b.id), ['localhost:9090', 'localhost:9091']);
  });

  test('wsbalancer env names map correctly', () => {
    const { config: c, warnings } = cfg('backends: [ { id: yaml, url: "ws://y:1" } ]', {
      FE_ADDR: ':7000',
      BE_URLS: 'ws://a:1, ws://b:2/p',
      BE_URL_IDS: 'a,b',
      RECONNECT_HDR: 'X-Again',
      BLOCK_HEADERS: 'Cookie,Authorization',
      BE_PASS_HEADERS: 'X-One,X-Two',
      LOG_LEVEL: 'panic',
      BE_ABNORMAL_CLOSE_CODES: '1001,1011',
      BE_PING_TIME: '1m30s',
      BE_BREAKER_THRESHOLD: '-1',
      BE_HANDSHAKE_TIMEOUT: '3s',
      FE_TRUST_XFF: 'false',
      FE_READ_TIMEOUT: '2s',
      FE_MAX_HDR_BYTES: '32768',
      ADM_ADDR: '127.0.0.1:7001',
      FE_RB_SIZE: '2048',
      ENABLE_INST: 'true',
    });
    assert.deepEqual(c.listen.address, { host: '0.0.0.0', port: 7000 });
    // BE_URLS is appended to the YAML list (wsbalancer semantics), ids by position
    assert.deepEqual(
      c.backends.map((b) => [b.id, b.url]),
      [
        ['yaml', 'ws://y:1'],
        ['a', 'ws://a:1'],
        ['b', 'ws://b:2/p'],
      ],
    );
    assert.equal(c.failover.reconnectHeader.name, 'X-Again');
    assert.deepEqual(c.session.blockRequestHeaders, ['cookie', 'authorization']);
    assert.deepEqual(c.session.passResponseHeaders, ['x-one', 'x-two']);
    assert.equal(c.logLevel, 'fatal');
    assert.deepEqual(c.failover.closeCodes, [1001, 1011]);
    assert.equal(c.session.pingInterval, 90_000);
    assert.equal(c.health.breaker.threshold, 0);
    assert.equal(c.upstream.handshakeTimeout, 3_000);
    assert.equal(c.session.trustForwardedFor, false);
    assert.equal(c.listen.requestTimeout, 2_000);
    assert.equal(c.listen.maxHeaderBytes, 32_768);
    assert.deepEqual(c.admin.address, { host: '127.0.0.1', port: 7001 });
    hasProblem(warnings, 'FE_RB_SIZE', 'no effect in Baton');
    hasProblem(warnings, 'ENABLE_INST');
  });

  test('LOG_LEVEL mapping is case-insensitive', () => {
    const want = { TRACE: 'trace', debug: 'debug', Info: 'info', WARN: 'warn', PANIC: 'fatal', fatal: 'fatal' } as const;
    for (const [raw, lvl] of Object.entries(want)) assert.equal(cfg(undefined, { LOG_LEVEL: raw }).config.logLevel, lvl, raw);
    hasProblem(bad(undefined, { LOG_LEVEL: 'LOUD' }), 'LOG_LEVEL (logLevel)', '"LOUD"', 'TRACE');
  });

  test('BE_URLS without ids gets default ids; BE_URL_IDS count mismatch is an error', () => {
    assert.deepEqual(cfg(undefined, { BE_URLS: 'ws://a,wss://b' }).config.backends.map((b) => b.id), ['a:80', 'b:443']);
    hasProblem(bad(undefined, { BE_URLS: 'ws://a,ws://b', BE_URL_IDS: 'x,y,z' }), 'BE_URL_IDS', '"x,y,z"', '3 ids', '2 URLs');
    hasProblem(bad(undefined, { BE_URL_IDS: 'x' }), 'BE_URL_IDS', '0 URLs');
    hasProblem(bad(undefined, { BE_URLS: 'http://a' }), 'BE_URLS[0]', '"http://a"');
    hasProblem(bad(undefined, { BE_URLS: 'ws://a', BE_URL_IDS: 'no way' }), 'BE_URL_IDS[0]', '"no way"');
    hasProblem(bad('backends: [ws://a]', { BE_URLS: 'ws://a:80' }), 'BE_URLS[0]', '"a:80"', 'already used by backends[0]');
  });

  test('conflicting per-backend settings are an error naming both keys', () => {
    const p = bad('upstream:\n  backends:\n    - { url: "ws://a", ping-time: 10m }\n    - { url: "ws://b", ping-time: 5s }\n');
    const msg = hasProblem(p, 'upstream.backends[1].ping-time', '"5s"', 'upstream.backends[0].ping-time', '"10m"');
    assert.match(msg, /Baton applies one value to every backend/);
    hasProblem(
      bad('upstream:\n  backends:\n    - { url: "ws://a", abnormal-close-codes: [1001] }\n    - { url: "ws://b", abnormal-close-codes: [1006] }\n'),
      'upstream.backends[1].abnormal-close-codes',
      'upstream.backends[0].abnormal-close-codes',
    );
    // same value written differently is not a conflict
    assert.equal(cfg('upstream:\n  backends:\n    - { url: "ws://a", ping-time: 1m }\n    - { url: "ws://b", ping-time: 60s }\n').config.session.pingInterval, 60_000);
  });

  test('wsbalancer value and key errors', () => {
    hasProblem(bad('server: { frontend: { read-timeout: soon } }'), 'server.frontend.read-timeout (listen.requestTimeout)', '"soon"', 'not a duration');
    hasProblem(bad(undefined, { FE_ADDR: 'nowhere' }), 'FE_ADDR (listen.address)', '"nowhere"');
    hasProblem(bad(undefined, { FE_WRITE_TIMEOUT: '10 years' }), 'FE_WRITE_TIMEOUT', '"10 years"');
    hasProblem(bad('server: { frontend: { adress: ":1" } }'), 'server.frontend.adress', 'unknown key');
    hasProblem(bad('upstream: { backends: [ { url: "ws://a", weight: 2 } ] }'), 'upstream.backends[0].weight', 'unknown key', 'top-level "backends"');
    hasProblem(bad('upstream: { backends: [ { url: "http://a" } ] }'), 'upstream.backends[0].url', '"http://a"');
  });

  test("Baton's own key wins over a wsbalancer key, with a warning; env beats both", () => {
    const yaml = 'server: { frontend: { address: ":8090" }, logging-level: DEBUG }\nlisten: { address: ":8091" }\n';
    const { config, warnings } = cfg(yaml);
    assert.equal(config.listen.address.port, 8091);
    assert.equal(config.logLevel, 'debug');
    hasProblem(warnings, 'server.frontend.address', 'listen.address', "Baton's own key wins");
    assert.equal(cfg(yaml, { FE_ADDR: ':8092' }).config.listen.address.port, 8092);
    const both = cfg(yaml, { FE_ADDR: ':8092', BATON_LISTEN_ADDRESS: ':8093' });
    assert.equal(both.config.listen.address.port, 8093);
    hasProblem(both.warnings, 'FE_ADDR', 'BATON_LISTEN_ADDRESS');
    // Baton's backends list beats upstream.backends
    const b = cfg('backends: [ws://baton]\nupstream: { backends: [ { url: "ws://wsb" } ] }\n');
    assert.deepEqual(b.config.backends.map((x) => x.id), ['baton:80']);
    hasProblem(b.warnings, 'upstream.backends', "Baton's own key wins");
    // BATON_BACKENDS replaces everything, BE_URLS is then ignored with a warning
    const e = cfg('backends: [ws://baton]', { BATON_BACKENDS: 'ws://env', BE_URLS: 'ws://wsb' });
    assert.deepEqual(e.config.backends.map((x) => x.id), ['env:80']);
    hasProblem(e.warnings, 'BE_URLS', 'BATON_BACKENDS');
  });

  test('every alias in the reference is present', () => {
    const envs = new Set(WSBALANCER_ALIASES.map((a) => a.env));
    for (const e of [
      'FE_ADDR', 'FE_READ_TIMEOUT', 'FE_WRITE_TIMEOUT', 'FE_MAX_HDR_BYTES', 'ADM_ADDR', 'ADM_READ_TIMEOUT', 'ADM_WRITE_TIMEOUT',
      'ADM_MAX_HDR_BYTES', 'FE_RB_SIZE', 'FE_WB_SIZE', 'FE_TRUST_XFF', 'BLOCK_HEADERS', 'RECONNECT_HDR', 'ENABLE_INST', 'LOG_LEVEL',
      'BE_URLS', 'BE_URL_IDS', 'BE_PING_TIME', 'BE_RB_SIZE', 'BE_WB_SIZE', 'BE_BREAKER_THRESHOLD', 'BE_HANDSHAKE_TIMEOUT',
      'BE_PASS_HEADERS', 'BE_ABNORMAL_CLOSE_CODES',
    ]) {
      assert.ok(envs.has(e), e);
    }
  });
});

// --- loadConfig, docs --------------------------------------------------------------------------

describe('loadConfig', () => {
  test('reads a real file and the env', () => {
    const file = join(dir, 'baton.yaml');
    writeFileSync(file, 'logLevel: debug\nbackends:\n  - { id: one, url: "ws://127.0.0.1:9000" }\n');
    const loaded = loadConfig({ file, env: { BATON_SESSION_PING_INTERVAL: '3s' } });
    assert.equal(loaded.source, file);
    assert.equal(loaded.config.logLevel, 'debug');
    assert.equal(loaded.config.session.pingInterval, 3_000);
    assert.deepEqual(loaded.config.backends.map((b) => b.id), ['one']);
  });

  test('syntax errors name the file and line', () => {
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'listen:\n  address: ":8080"\n  tls: {certFile: x\n');
    const p = problems(() => loadConfig({ file, env: {} }));
    assert.match(p[0]!, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: YAML syntax error`));
  });

  test('a missing file is a ConfigError naming it', () => {
    const file = join(dir, 'missing.yaml');
    hasProblem(problems(() => loadConfig({ file, env: {} })), file, 'ENOENT');
  });

  test('no file: defaults + env', () => {
    const loaded = loadConfig({ env: { BATON_LOG_LEVEL: 'warn' } });
    assert.equal(loaded.source, 'defaults');
    assert.equal(loaded.config.logLevel, 'warn');
  });
});

describe('docs/config.md', () => {
  test('is up to date with the schema (node dist/tools/gen-config-docs.js)', () => {
    assert.equal(readFileSync(DOCS_PATH, 'utf8'), renderConfigDocs());
  });

  test('lists every key, env var and alias', () => {
    const text = renderConfigDocs();
    for (const k of SCHEMA) {
      assert.ok(text.includes(`\`${k.path}\``), k.path);
      assert.ok(text.includes(`\`${k.env}\``), k.env);
    }
    for (const a of WSBALANCER_ALIASES) assert.ok(text.includes(`\`${a.env}\``), a.env);
    assert.ok(text.includes('SIGHUP or a change of the file reloads it'));
  });
});
