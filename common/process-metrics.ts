// Process and Node.js metrics, the same for both roles (the sidecar's and the operator's /metrics).
import { collectDefaultMetrics, type Registry } from 'prom-client';

/** prom-client's process and Node.js metrics, minus the ones Prometheus's lint rejects. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  // prom-client also exports these totals as gauges named *_total, which promtool rejects; the
  // same figures remain, by type, in nodejs_active_{handles,requests,resources}.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}
