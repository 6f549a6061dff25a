// The operator's options: flags over environment over defaults, every problem named, all documented.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { LOG_LEVELS } from '../common/logger.js';
import { OPTIONS, parseOptions } from '../operator/options.js';

describe('operator options', () => {
  test('defaults, then environment variables, then flags', () => {
    const d = parseOptions({}, { POD_NAME: 'op-0', POD_NAMESPACE: 'baton-system' });
    assert.ok(d.ok);
    assert.equal(d.options.identity, 'op-0');
    assert.equal(d.options.leaseNamespace, 'baton-system');
    assert.equal(d.options.leaseDuration, 15_000);
    assert.deepEqual(d.options.metricsAddress, { host: '0.0.0.0', port: 8080 });

    const e = parseOptions({ 'lease-duration': '16s' }, { BATON_OPERATOR_LEASE_DURATION: '19s', BATON_OPERATOR_RESYNC: '1m' });
    assert.ok(e.ok);
    assert.equal(e.options.leaseDuration, 16_000);
    assert.equal(e.options.resync, 60_000);
  });

  test('every bad value and unknown flag is reported, naming where it came from', () => {
    const r = parseOptions({ 'lease-duration': 'soon', bogus: 'x' }, { BATON_OPERATOR_CONCURRENCY: '0' });
    assert.ok(!r.ok);
    assert.equal(r.problems.length, 3);
    assert.ok(r.problems.some((p) => p.startsWith('--bogus: unknown option')));
    assert.ok(r.problems.some((p) => p.startsWith('--lease-duration: "soon" is not a duration')));
    assert.ok(r.problems.some((p) => p.startsWith('BATON_OPERATOR_CONCURRENCY: ')));
  });

  test('a sidecar push must end before a standby can take over: sidecar timeout ≤ lease duration − renew deadline', () => {
    const r = parseOptions({ 'lease-duration': '14s', 'sidecar-timeout': '5s' }, {});
    assert.ok(!r.ok);
    assert.match(r.problems.join(), /--sidecar-timeout \(5s\) must be at most --lease-duration minus --lease-renew-deadline \(4s\)/);
    assert.ok(parseOptions({ 'lease-duration': '14s', 'sidecar-timeout': '4s' }, {}).ok);
    assert.ok(parseOptions({ 'lease-duration': '14s', 'sidecar-timeout': '5s', 'leader-elect': 'false' }, {}).ok);
  });

  test('the operator takes the log levels the sidecar takes, silent included', () => {
    for (const level of LOG_LEVELS) {
      const r = parseOptions({ 'log-level': level.toUpperCase() }, {});
      assert.ok(r.ok && r.options.logLevel === level, level);
    }
    assert.deepEqual(parseOptions({ 'log-level': 'loud' }, {}), { ok: false, problems: [`--log-level: "loud" is not one of ${LOG_LEVELS.join(', ')}`] });
  });

  test('docs/operator.md lists every flag with its environment variable', () => {
    const doc = readFileSync(new URL('../../docs/operator.md', import.meta.url), 'utf8');
    for (const o of OPTIONS) assert.ok(doc.includes(`| \`--${o.flag}\` | \`${o.env}\` |`), `--${o.flag} / ${o.env} in docs/operator.md`);
  });
});
