// PromQL helpers shared by the dashboards test, the alert rules test and the render script: which
// metric names an expression reads, which names a /metrics exposition exports, and a Grafana
// expression made concrete for Prometheus itself.

// A string, a label matcher block, a range or subquery, a number or duration, a name, or one character.
const TOKEN = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|\{[^}]*\}|\[[^\]]*\]|\d[\w.]*|[A-Za-z_:][\w:]*|\S/g;
// Followed by a parenthesised list of label names, not an expression.
const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set([...LABEL_LIST_KEYWORDS, 'and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan', 'start', 'end']);

/** The metric names an expression selects, e.g. ["baton_failovers_total"] for `sum by (reason) (rate(baton_failovers_total[5m]))`. */
export function metricNames(expr: string): string[] {
  const tokens = expr.match(TOKEN) ?? [];
  const names = new Set<string>();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const next = tokens[i + 1];
    if (LABEL_LIST_KEYWORDS.has(t.toLowerCase()) && next === '(') {
      while (i < tokens.length && tokens[i] !== ')') i++;
      continue;
    }
    if (!/^[A-Za-z_:]/.test(t) || KEYWORDS.has(t.toLowerCase())) continue;
    // A function call, or an aggregation written `sum by (x) (...)`.
    if (next === '(' || (next !== undefined && /^(by|without)$/i.test(next))) continue;
    names.add(t);
  }
  return [...names];
}

/**
 * Every metric name an exposition exports: each family's HELP/TYPE name (present even for a labelled
 * family with no series yet), the sample names, and a histogram's or summary's series suffixes.
 */
export function exportedMetricNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const type = /^# TYPE (\S+) (\w+)/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      names.add(name);
      if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
      if (kind === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
    } else if (line && !line.startsWith('#')) {
      names.add(/^[A-Za-z_:][\w:]*/.exec(line)![0]);
    }
  }
  return names;
}

/**
 * A dashboard expression as Prometheus itself takes it: Grafana's $__rate_interval becomes `window`,
 * a multi-value variable in a regex matcher matches everything.
 */
export function concreteExpr(expr: string, window: string): string {
  return expr.replace(/\$__rate_interval/g, window).replace(/=~"\$\w+"/g, '=~".*"');
}
