// The Prometheus alert rules: promtool accepts them, their unit tests pass (each alert firing and
// staying silent), and every metric they read is one the sidecar or the operator exports.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { exportedMetricNames, metricNames } from '../dashboards/src/promql.js';
import { OperatorMetrics } from '../operator/metrics.js';
import { startSidecar } from './helpers.js';
import { ensurePrometheus } from './prometheus.js';

const monitoring = fileURLToPath(new URL('../../monitoring/', import.meta.url));
const RULES = `${monitoring}alerts.yaml`;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const promtool = (...args: string[]): string => execFileSync('promtool', args, { cwd: monitoring, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('alert rules', () => {
  before(ensurePrometheus);
  const groups = (parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups;
  const rules = groups.flatMap((g) => g.rules);

  test('promtool check rules accepts the file', () => {
    assert.match(promtool('check', 'rules', RULES), new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  test('promtool test rules: every alert is tested firing and silent, and the tests pass', () => {
    const tests = (parse(readFileSync(`${monitoring}alerts.test.yaml`, 'utf8')) as { tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }> }).tests;
    const cases = tests.flatMap((t) => t.alert_rule_test);
    for (const { alert } of rules) {
      assert.ok(cases.some((c) => c.alertname === alert && c.exp_alerts.length > 0), `${alert} has a test where it fires`);
      assert.ok(cases.some((c) => c.alertname === alert && c.exp_alerts.length === 0), `${alert} has a test where it stays silent`);
    }
    assert.match(promtool('test', 'rules', 'alerts.test.yaml'), /SUCCESS/);
  });

  test('every alert has a severity, a for:, a summary and a description', () => {
    for (const r of rules) {
      assert.match(r.labels?.severity ?? '', /^(warning|critical)$/, `${r.alert}: severity`);
      assert.ok(r.for !== undefined, `${r.alert}: for`);
      assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert}: summary and description`);
    }
  });

  test('every rule reads only metrics a live sidecar or the operator exports', async () => {
    const { sidecar } = await startSidecar('backends:\n  - { id: a, url: "ws://127.0.0.1:1" }\n');
    let text: string;
    try {
      text = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/metrics`).then((r) => r.text());
    } finally {
      await sidecar.stop(0);
    }
    const exported = new Set([...exportedMetricNames(text), ...exportedMetricNames(await new OperatorMetrics().registry.metrics())]);
    for (const r of rules) {
      const names = metricNames(r.expr);
      assert.ok(names.length > 0, `${r.alert}: no metric in its expr`);
      assert.deepEqual(names.filter((n) => !exported.has(n)), [], `${r.alert} reads metrics nothing exports`);
    }
  });
});
