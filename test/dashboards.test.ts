// The Grafana dashboards: the committed JSON is what dashboards/src produces, every expression is
// valid PromQL, and every metric it reads is one a live sidecar or the operator really exports.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { DASHBOARDS, dashboardJson } from '../dashboards/src/index.js';
import { dashboardExprs } from '../dashboards/src/panels.js';
import { concreteExpr, exportedMetricNames, metricNames } from '../dashboards/src/promql.js';
import { OperatorMetrics } from '../operator/metrics.js';
import { BackendProcess, killAllBackends, startSidecar, TestClient, waitFor } from './helpers.js';
import { ensurePrometheus } from './prometheus.js';

/** The metric names a sidecar exports after traffic and a failover, and the operator's. */
async function liveMetricNames(): Promise<Set<string>> {
  const a = await BackendProcess.start('a');
  const b = await BackendProcess.start('b');
  const { sidecar, url } = await startSidecar(`backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}", standby: true }\n`);
  try {
    const c = await TestClient.connect(`${url}/d`);
    c.ws.send('before');
    await c.waitForCount(1);
    await a.signal('SIGKILL');
    await waitFor(() => [...sidecar.sessions.values()][0]?.backend?.id === 'b', 'session failed over to b');
    c.ws.send('after');
    await c.waitForCount(2);
    const text = await fetch(`http://127.0.0.1:${sidecar.adminAddress!.port}/metrics`).then((r) => r.text());
    assert.match(text, /^baton_failover_gap_seconds_count\{reason="error"\} 1$/m, 'the scrape saw the failover');
    c.close();
    return new Set([...exportedMetricNames(text), ...exportedMetricNames(await new OperatorMetrics().registry.metrics())]);
  } finally {
    await sidecar.stop(0);
  }
}

describe('dashboards', () => {
  before(ensurePrometheus);
  after(killAllBackends);

  test('the committed JSON files are what dashboards/src generates', () => {
    for (const { path, dashboard } of DASHBOARDS) {
      assert.equal(readFileSync(path, 'utf8'), dashboardJson(dashboard), `${path} is stale: run node dist/dashboards/src/generate.js`);
    }
  });

  test('metric names are read from PromQL: not functions, keywords, label names, durations or strings', () => {
    const expr =
      'histogram_quantile(0.99, sum by (le, reason) (rate(baton_failover_gap_seconds_bucket{instance=~"$instance", reason!="drain"}[5m] offset 1m)))' +
      ' / on (instance) group_left (pod) max without (backend) (baton_backend_phi) or vector(0) > bool 2 * up';
    assert.deepEqual(metricNames(expr).sort(), ['baton_backend_phi', 'baton_failover_gap_seconds_bucket', 'up']);
    assert.deepEqual(metricNames('label_replace(x_total, "dst", "$1", "src", "(.*)")'), ['x_total']);
  });

  test('every panel and variable reads only metrics a live sidecar or the operator exports', async () => {
    const exported = await liveMetricNames();
    for (const { name, dashboard } of DASHBOARDS) {
      for (const expr of dashboardExprs(dashboard)) {
        const names = metricNames(expr);
        assert.ok(names.length > 0, `${name}: no metric in ${expr}`);
        const unknown = names.filter((n) => !exported.has(n));
        assert.deepEqual(unknown, [], `${name}: ${expr} reads metrics nothing exports`);
      }
    }
  });

  test('every expression is valid PromQL (promtool parses it as a recording rule)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'baton-dashboards-'));
    try {
      const exprs = DASHBOARDS.flatMap(({ dashboard }) => dashboardExprs(dashboard));
      const rules = exprs.map((expr, i) => ({ record: `dashboard_expr_${i}`, expr: concreteExpr(expr, '1m') }));
      writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: [{ name: 'dashboards', rules }] }));
      const out = execFileSync('promtool', ['check', 'rules', join(dir, 'rules.yaml')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.match(out, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
