// Prometheus metrics of the operator, served on its own /metrics. Names start baton_operator_.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../sidecar/metrics.js';
import type { Phase, WsBalancerStatus } from './api/wsbalancer.js';

export type ReconcileResult = 'success' | 'error' | 'invalid' | 'conflict';
export type PushResult = 'success' | 'failure';
const PHASES: readonly Phase[] = ['Healthy', 'Progressing', 'Paused', 'Degraded'];

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles: Counter<'result'>;
  readonly reconcileDuration: Histogram;
  readonly queueDepth: Gauge;
  readonly pushes: Counter<'result'>;
  readonly sidecarsOutOfSync: Gauge<'namespace' | 'wsbalancer'>;
  readonly informerRestarts: Counter<'resource'>;
  readonly leader: Gauge;
  readonly phase: Gauge<'namespace' | 'wsbalancer' | 'phase'>;
  readonly revisionSessions: Gauge<'namespace' | 'wsbalancer' | 'revision' | 'role'>;
  readonly rolloutEvents: Counter<'namespace' | 'wsbalancer' | 'reason'>;
  /** The revision series set per WsBalancer, so that stale ones can be removed. */
  private readonly revisionSeries = new Map<string, Array<{ revision: string; role: string }>>();

  constructor() {
    collectProcessMetrics(this.registry);
    const registers = [this.registry];
    this.reconciles = new Counter({ name: 'baton_operator_reconciles_total', help: 'Reconciles of a WsBalancer, by result.', labelNames: ['result'], registers });
    this.reconcileDuration = new Histogram({
      name: 'baton_operator_reconcile_duration_seconds',
      help: 'Time one reconcile took, sidecar calls included.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.queueDepth = new Gauge({ name: 'baton_operator_queue_depth', help: 'WsBalancers waiting to be reconciled.', registers });
    this.pushes = new Counter({ name: 'baton_operator_sidecar_pushes_total', help: 'PUT /v1/backends calls to sidecars, by result.', labelNames: ['result'], registers });
    this.sidecarsOutOfSync = new Gauge({
      name: 'baton_operator_sidecars_out_of_sync',
      help: 'Ready sidecars of a WsBalancer that do not hold its backend set (unreachable included).',
      labelNames: ['namespace', 'wsbalancer'],
      registers,
    });
    this.informerRestarts = new Counter({
      name: 'baton_operator_informer_restarts_total',
      help: 'Times a list/watch failed and was restarted after backoff, by resource.',
      labelNames: ['resource'],
      registers,
    });
    this.leader = new Gauge({ name: 'baton_operator_leader', help: '1 while this replica holds the leader lease.', registers });
    this.phase = new Gauge({ name: 'baton_operator_wsbalancer_phase', help: 'Phase of each WsBalancer (1 for the current phase).', labelNames: ['namespace', 'wsbalancer', 'phase'], registers });
    this.revisionSessions = new Gauge({
      name: 'baton_operator_revision_sessions',
      help: 'Sessions on each backend revision of a WsBalancer, summed over its sidecars.',
      labelNames: ['namespace', 'wsbalancer', 'revision', 'role'],
      registers,
    });
    this.rolloutEvents = new Counter({
      name: 'baton_operator_rollout_events_total',
      help: 'Rollout steps taken (PreviewDetected, PromotionStarted, SessionsMigrated, Promoted, Aborted).',
      labelNames: ['namespace', 'wsbalancer', 'reason'],
      registers,
    });
  }

  /** Per-WsBalancer gauges from the status just computed. */
  observeStatus(namespace: string, name: string, status: WsBalancerStatus): void {
    for (const p of PHASES) this.phase.set({ namespace, wsbalancer: name, phase: p }, status.phase === p ? 1 : 0);
    const sidecars = status.sidecars;
    if (sidecars) this.sidecarsOutOfSync.set({ namespace, wsbalancer: name }, sidecars.desired - sidecars.synced);
    this.removeRevisionSeries(namespace, name);
    const series = (status.revisions ?? []).map((r) => ({ revision: r.name, role: r.role }));
    this.revisionSeries.set(`${namespace}/${name}`, series);
    for (const r of status.revisions ?? []) this.revisionSessions.set({ namespace, wsbalancer: name, revision: r.name, role: r.role }, r.sessions);
  }

  private removeRevisionSeries(namespace: string, name: string): void {
    for (const s of this.revisionSeries.get(`${namespace}/${name}`) ?? []) this.revisionSessions.remove({ namespace, wsbalancer: name, ...s });
    this.revisionSeries.delete(`${namespace}/${name}`);
  }

  forget(namespace: string, name: string): void {
    for (const phase of PHASES) this.phase.remove({ namespace, wsbalancer: name, phase });
    this.sidecarsOutOfSync.remove({ namespace, wsbalancer: name });
    this.removeRevisionSeries(namespace, name);
  }
}
