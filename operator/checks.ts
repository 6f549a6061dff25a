// Pre-promotion checks: a Prometheus query that must hold, and a webhook that must answer 2xx.
import type { ChecksSpec, WsBalancerSpec } from './api/wsbalancer.js';

export interface CheckResult {
  result: 'passed' | 'failed';
  message: string;
}

export interface CheckContext {
  namespace: string;
  name: string;
  activeRevision: string | undefined;
  previewRevision: string;
}

const PROMETHEUS_TIMEOUT_MS = 10_000;

/** Runs blue/green's pre-promotion checks. */
export function runChecks(spec: WsBalancerSpec, ctx: CheckContext): Promise<CheckResult> {
  return runCheckSet(spec.rollout.blueGreen.prePromotionChecks, ctx);
}

/** Runs every check of a set (pre-promotion checks, a canary step's analysis); the first failure is the result. */
export async function runCheckSet(checks: ChecksSpec | undefined, ctx: CheckContext): Promise<CheckResult> {
  const passed: string[] = [];
  if (checks?.prometheus) {
    const problem = await prometheusProblem(checks.prometheus.address, checks.prometheus.query);
    if (problem) return { result: 'failed', message: `prometheus: ${problem}` };
    passed.push('prometheus');
  }
  if (checks?.webhook) {
    const problem = await webhookProblem(checks.webhook.url, checks.webhook.timeoutSeconds * 1000, ctx);
    if (problem) return { result: 'failed', message: `webhook: ${problem}` };
    passed.push('webhook');
  }
  return { result: 'passed', message: passed.length ? `${passed.join(' and ')} passed` : 'no checks' };
}

interface PromResponse {
  status: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

/** A query holds when its result is non-empty and every value is non-zero (a comparison that kept its series). */
async function prometheusProblem(address: string, query: string): Promise<string | undefined> {
  let body: PromResponse;
  try {
    // Keep the address's path: Prometheus may sit under a prefix (--web.route-prefix, an ingress path).
    const url = new URL(address);
    url.pathname = `${url.pathname.replace(/\/+$/, '')}/api/v1/query`;
    url.searchParams.set('query', query);
    const res = await fetch(url, { signal: AbortSignal.timeout(PROMETHEUS_TIMEOUT_MS) });
    const text = await res.text();
    try {
      body = JSON.parse(text) as PromResponse;
    } catch {
      return `query failed: HTTP ${res.status}: ${text.slice(0, 200)}`;
    }
  } catch (err) {
    return `query failed: ${errorText(err)}`;
  }
  if (body.status !== 'success' || !body.data) return `query failed: ${body.error ?? body.status}`;
  const { resultType, result } = body.data;
  let values: string[];
  if (resultType === 'vector') values = (result as Array<{ value: [number, string] }>).map((s) => s.value[1]);
  else if (resultType === 'scalar') values = [(result as [number, string])[1]];
  else return `query must return a vector or a scalar, got ${resultType}`;
  if (values.length === 0) return `"${query}" returned no series (the condition does not hold)`;
  const zero = values.find((v) => sampleValue(v) === 0 || Number.isNaN(sampleValue(v)));
  return zero === undefined ? undefined : `"${query}" returned ${zero}`;
}

async function webhookProblem(url: string, timeoutMs: number, ctx: CheckContext): Promise<string | undefined> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...ctx, activeRevision: ctx.activeRevision ?? null }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.arrayBuffer();
    return res.ok ? undefined : `${url} answered ${res.status}`;
  } catch (err) {
    return `${url} failed: ${errorText(err)}`;
  }
}

/** Prometheus writes sample values as strings, infinities as "+Inf" / "-Inf". */
function sampleValue(v: string): number {
  return v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
}

/** fetch's message is just "fetch failed"; the reason (ECONNREFUSED, a timeout) is in its cause. */
function errorText(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause ? `${e.message} (${cause})` : e.message;
}
