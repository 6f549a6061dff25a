// The DNS expansion decisions (sidecar/dns/plan.ts) on their own, with a fake clock: what a name's
// answers, failures and TTLs make of its backends and of when it is resolved next.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkBackendUrl } from '../common/values.js';
import type { BackendSpec } from '../common/config/schema.js';
import { ConfigError, parseConfig } from '../sidecar/config/load.js';
import { expandBackends, initialState, namesOf, stepName, type DnsSettings, type NameState, type Resolution } from '../sidecar/dns/plan.js';

const S = 1000;
const DNS: DnsSettings = { resolve: false, refresh: 30 * S, minTtl: 1 * S, maxTtl: 60 * S, servers: [], timeout: 5 * S };
/** random() = 0.5: backoff without jitter. */
const MID = () => 0.5;

/** A config entry as the loader makes it (default id: the URL's host:port). */
function spec(url: string, fields: Partial<BackendSpec> = {}): BackendSpec {
  const checked = checkBackendUrl(url);
  assert.ok('id' in checked);
  return { id: checked.id, url, weight: 1, standby: false, labels: {}, state: 'enabled', ...fields };
}

const ok = (...addresses: string[]): Resolution => ({ ok: true, records: addresses.map((address) => ({ address, ttl: 30 })) });
const fail: Resolution = { ok: false, reason: 'queryA ESERVFAIL chat.svc' };

describe('which names are resolved', () => {
  test('an entry resolves when it says so, or by the dns.resolve default; IP literals never', () => {
    const specs = [
      spec('ws://chat.svc:9000/ws', { resolve: true }),
      spec('ws://other.svc:9000', { resolve: false }),
      spec('ws://plain.svc:9000'),
      spec('ws://10.0.0.5:9000', { resolve: true }),
      spec('ws://[fd00::1]:9000', { resolve: true }),
    ];
    assert.deepEqual(namesOf(specs, false), ['chat.svc']);
    assert.deepEqual(namesOf(specs, true), ['chat.svc', 'plain.svc']);
  });
});

describe('expansion', () => {
  test('three addresses → three backends: ids name/address:port, the entry weight each, the URL keeps the name', () => {
    const entry = spec('wss://chat.svc/ws', { resolve: true, weight: 3, labels: { app: 'chat' } });
    const out = expandBackends([entry, spec('ws://10.0.0.9:9000')], new Map([['chat.svc', ['10.0.0.1', '10.0.0.2', 'fd00::3']]]), false);
    assert.deepEqual(
      out.map((b) => [b.id, b.address, b.url, b.weight, b.labels.app]),
      [
        ['chat.svc/10.0.0.1:443', '10.0.0.1', 'wss://chat.svc/ws', 3, 'chat'],
        ['chat.svc/10.0.0.2:443', '10.0.0.2', 'wss://chat.svc/ws', 3, 'chat'],
        ['chat.svc/[fd00::3]:443', 'fd00::3', 'wss://chat.svc/ws', 3, 'chat'],
        ['10.0.0.9:9000', undefined, 'ws://10.0.0.9:9000', 1, undefined],
      ],
    );
    assert.ok(out.every((b) => !('resolve' in b)), 'the pool never sees the config-only field');
  });

  test("an entry's own id names its backends", () => {
    const out = expandBackends([spec('ws://chat.svc:9000', { id: 'chat', resolve: true })], new Map([['chat.svc', ['10.0.0.1']]]), false);
    assert.deepEqual(
      out.map((b) => b.id),
      ['chat/10.0.0.1:9000'],
    );
  });

  test('a name never resolved has no backends', () => {
    assert.deepEqual(expandBackends([spec('ws://chat.svc:9000', { resolve: true })], new Map([['chat.svc', null]]), false), []);
  });
});

describe('a name over time', () => {
  test('first answer: changed; next resolution at its TTL', () => {
    const step = stepName(initialState(0), ok('10.0.0.2', '10.0.0.1'), 0, DNS);
    assert.deepEqual(step.state, { addresses: ['10.0.0.1', '10.0.0.2'], failures: 0, nextAt: 30 * S });
    assert.equal(step.changed, true);
  });

  test('the same addresses in another order: not changed; one removed or added: changed', () => {
    const s = stepName(initialState(0), ok('10.0.0.1', '10.0.0.2', '10.0.0.3'), 0, DNS).state;
    assert.equal(stepName(s, ok('10.0.0.3', '10.0.0.1', '10.0.0.2'), 30 * S, DNS).changed, false);
    const removed = stepName(s, ok('10.0.0.1', '10.0.0.3'), 30 * S, DNS);
    assert.deepEqual([removed.changed, removed.state.addresses], [true, ['10.0.0.1', '10.0.0.3']]);
    assert.equal(stepName(s, ok('10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'), 30 * S, DNS).changed, true);
  });

  test('TTL respected within [minTtl, maxTtl]; no TTL or TTL 0 → dns.refresh (also clamped)', () => {
    const next = (ttls: (number | undefined)[], dns = DNS) =>
      stepName(initialState(0), { ok: true, records: ttls.map((ttl, i) => ({ address: `10.0.0.${i + 1}`, ttl })) }, 1000, dns).state.nextAt - 1000;
    assert.equal(next([7]), 7 * S);
    assert.equal(next([20, 7, 45]), 7 * S, 'the smallest TTL of the answer');
    assert.equal(next([3600]), 60 * S, 'capped at maxTtl');
    assert.equal(next([0.2]), 1 * S, 'raised to minTtl');
    assert.equal(next([undefined]), 30 * S);
    assert.equal(next([0]), 30 * S);
    assert.equal(next([undefined], { ...DNS, maxTtl: 10 * S }), 10 * S);
  });

  test('failing for a minute: the backends stay, retries back off from minTtl to maxTtl, one log per streak', () => {
    const entry = spec('ws://chat.svc:9000', { resolve: true });
    let state: NameState = stepName(initialState(0), ok('10.0.0.1', '10.0.0.2', '10.0.0.3'), 0, DNS).state;
    let now = 30 * S; // the TTL ran out; from here every resolution fails
    const start = now;
    const waits: number[] = [];
    const logged: boolean[] = [];
    while (now - start < 60 * S) {
      const step = stepName(state, fail, now, DNS, MID);
      assert.equal(step.changed, false);
      logged.push(step.logFailure);
      waits.push(step.state.nextAt - now);
      state = step.state;
      now = state.nextAt;
      const backends = expandBackends([entry], new Map([['chat.svc', state.addresses]]), false);
      assert.equal(backends.length, 3, `at +${(now - start) / S}s the three backends are still there`);
    }
    assert.deepEqual(waits, [1 * S, 2 * S, 4 * S, 8 * S, 16 * S, 32 * S]);
    assert.deepEqual(logged, [true, false, false, false, false, false]);
    const later = stepName(state, fail, now, DNS, MID);
    assert.equal(later.state.nextAt - now, 60 * S, 'never waits longer than maxTtl');
    const back = stepName(later.state, ok('10.0.0.1', '10.0.0.2', '10.0.0.3'), later.state.nextAt, DNS);
    assert.deepEqual([back.recovered, back.changed, back.state.failures], [true, false, 0]);
  });

  test('an answer with no address keeps the last good one (counted like a failure)', () => {
    const s = stepName(initialState(0), ok('10.0.0.1'), 0, DNS).state;
    const step = stepName(s, { ok: true, records: [] }, 30 * S, DNS, MID);
    assert.deepEqual([step.state.addresses, step.state.failures, step.changed, step.logFailure], [['10.0.0.1'], 1, false, true]);
  });

  test('a name whose first resolution fails has no backends and is retried at minTtl', () => {
    const step = stepName(initialState(0), fail, 0, DNS, MID);
    assert.deepEqual(step.state, { addresses: null, failures: 1, nextAt: 1 * S });
    assert.equal(step.logFailure, true);
  });
});

describe('config keys', () => {
  const problems = (yaml: string, env: NodeJS.ProcessEnv = {}) => {
    try {
      parseConfig(yaml, env, 'test');
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
  };

  test('backends[].resolve overrides dns.resolve; wsbalancer BE_URLS entries follow the default', () => {
    const { config } = parseConfig(
      'dns: { resolve: true, servers: ["10.0.0.53", "127.0.0.1:5353"] }\nbackends:\n  - { url: "ws://chat.svc:9000", resolve: false }\n',
      { BE_URLS: 'ws://feed.svc:9000' },
      'test',
    );
    assert.deepEqual(config.dns.servers, ['10.0.0.53', '127.0.0.1:5353']);
    assert.deepEqual(namesOf(config.backends, config.dns.resolve), ['feed.svc']);
  });

  test('bad values name the key', () => {
    assert.match(problems('dns: { servers: ["dns.example"] }\n').join(), /dns\.servers\[0\].*ip address or ip:port/i);
    assert.match(problems('dns: { minTtl: 10s, maxTtl: 5s }\n').join(), /dns\.minTtl/);
    assert.match(problems('backends:\n  - { url: "ws://a", resolve: maybe }\n').join(), /backends\[0\]\.resolve/);
  });
});
