// Per-backend health status from φ (phi.ts) and the circuit breaker (breaker.ts), with an
// Envoy-style cap on how many backends may be ejected at once: when many backends look bad
// simultaneously the likelier culprit is us or the network, and ejecting them all would turn a
// partial degradation into a full outage.

import type { HealthStatus } from '../../common/vocabulary.js';

export type { HealthStatus };

export interface HealthInput {
  id: string;
  phi: number;
  /** Breaker open or half-open. */
  breakerOpen: boolean;
  consecutiveFailures: number;
}

/**
 * - breakerOpen → 'tripped' (counts toward the ejection cap).
 * - φ >= phiThreshold → 'ejected', highest φ first, while fewer than
 *   max(1, floor(n × maxEjectedPercent / 100)) backends are tripped or ejected; the rest → 'suspect'.
 * - otherwise consecutiveFailures > 0 or φ >= phiThreshold / 2 → 'suspect', else 'healthy'.
 * A phiThreshold that is not a positive number disables φ-based ejection (φ is 0 before a backend
 * has any heartbeat history, so threshold 0 would otherwise eject everything).
 */
export function healthStatuses(
  backends: readonly HealthInput[],
  phiThreshold: number,
  maxEjectedPercent: number,
): Map<string, HealthStatus> {
  const out = new Map<string, HealthStatus>();
  const phiOn = phiThreshold > 0;
  const cap = Math.max(1, Math.floor((backends.length * maxEjectedPercent) / 100) || 0);
  let ejected = 0;
  const over: HealthInput[] = [];
  for (const b of backends) {
    if (b.breakerOpen) {
      out.set(b.id, 'tripped');
      ejected++;
    } else if (phiOn && b.phi >= phiThreshold) {
      over.push(b);
    } else {
      const suspect = b.consecutiveFailures > 0 || (phiOn && b.phi >= phiThreshold / 2);
      out.set(b.id, suspect ? 'suspect' : 'healthy');
    }
  }
  // Stable sort: equal φ keeps input order, so the result is deterministic.
  over.sort((a, b) => b.phi - a.phi);
  for (const b of over) {
    if (ejected < cap) {
      out.set(b.id, 'ejected');
      ejected++;
    } else {
      out.set(b.id, 'suspect');
    }
  }
  return out;
}
