// Prometheus metrics of the operator, served on its own /metrics. Names start baton_operator_.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { Phase, WsBalancerStatus } from './api/wsbalancer.js';
import { ROLLOUT_REASONS } from './rollout.js';

const RECONCILE_RESULTS = ['success', 'error', 'invalid', 'conflict', 'waiting'] as const;
const PUSH_RESULTS = ['success', 'failure'] as const;
export type AdmissionResult = 'injected' | 'skipped' | 'rejected' | 'error';
const PHASES: readonly Phase[] = ['Healthy', 'Progressing', 'Paused', 'Degraded'];

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles: Counter<'result'>;
  /** WsBalancers whose rollout counters exist (at 0) already. */
  private readonly known = new Set<string>();
  readonly reconcileDuration: Histogram;
  readonly queueDepth: Gauge;
  readonly pushes: Counter<'result'>;
  readonly sidecarsOutOfSync: Gauge<'namespace' | 'wsbalancer'>;
  readonly informerRestarts: Counter<'resource'>;
  readonly leader: Gauge;
  readonly phase: Gauge<'namespace' | 'wsbalancer' | 'phase'>;
  readonly revisionSessions: Gauge<'namespace' | 'wsbalancer' | 'revision' | 'role'>;
  readonly rolloutEvents: Counter<'namespace' | 'wsbalancer' | 'reason'>;
  readonly canaryStep: Gauge<'namespace' | 'wsbalancer'>;
  readonly canaryWeight: Gauge<'namespace' | 'wsbalancer'>;
  readonly canaryShare: Gauge<'namespace' | 'wsbalancer'>;
  readonly webhookAdmissions: Counter<'result'>;
  readonly webhookCertificateExpiry: Gauge;
  readonly podsWithoutSidecar: Gauge<'namespace'>;
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
      help: `Rollout steps taken (${ROLLOUT_REASONS.join(', ')}).`,
      labelNames: ['namespace', 'wsbalancer', 'reason'],
      registers,
    });
    this.canaryStep = new Gauge({
      name: 'baton_operator_canary_step',
      help: 'Index (from 0) of the current canary step of a WsBalancer; the step count while promoting; absent without a canary.',
      labelNames: ['namespace', 'wsbalancer'],
      registers,
    });
    this.canaryWeight = new Gauge({
      name: 'baton_operator_canary_weight_percent',
      help: 'Percent of the sessions the current canary step asks on the canary revision; absent without a canary.',
      labelNames: ['namespace', 'wsbalancer'],
      registers,
    });
    this.canaryShare = new Gauge({
      name: 'baton_operator_canary_share_percent',
      help: "Percent of the sidecars' sessions measured on the canary revision (all sidecars together); absent without a canary.",
      labelNames: ['namespace', 'wsbalancer'],
      registers,
    });
    this.webhookAdmissions = new Counter({
      name: 'baton_operator_webhook_admissions_total',
      help: 'Pod admission requests answered by the sidecar injection webhook, by result (injected, skipped, rejected, error).',
      labelNames: ['result'],
      registers,
    });
    this.webhookCertificateExpiry = new Gauge({
      name: 'baton_operator_webhook_certificate_expiry_timestamp_seconds',
      help: 'When the certificate the webhook serves with expires (Unix time).',
      registers,
    });
    this.podsWithoutSidecar = new Gauge({
      name: 'baton_operator_pods_without_sidecar',
      help: 'Pods labelled baton.dev/inject=true that run without the Baton sidecar (created while the webhook did not answer), per namespace holding WsBalancers.',
      labelNames: ['namespace'],
      registers,
    });
    // Known label values start at 0, so that rate() and increase() see the first event too.
    for (const result of RECONCILE_RESULTS) this.reconciles.inc({ result }, 0);
    for (const result of PUSH_RESULTS) this.pushes.inc({ result }, 0);
  }

  /** Per-WsBalancer gauges from the status just computed. */
  observeStatus(namespace: string, name: string, status: WsBalancerStatus): void {
    if (!this.known.has(`${namespace}/${name}`)) {
      this.known.add(`${namespace}/${name}`);
      for (const reason of ROLLOUT_REASONS) this.rolloutEvents.inc({ namespace, wsbalancer: name, reason }, 0);
    }
    for (const p of PHASES) this.phase.set({ namespace, wsbalancer: name, phase: p }, status.phase === p ? 1 : 0);
    const sidecars = status.sidecars;
    if (sidecars) this.sidecarsOutOfSync.set({ namespace, wsbalancer: name }, sidecars.desired - sidecars.synced);
    this.removeRevisionSeries(namespace, name);
    const series = (status.revisions ?? []).map((r) => ({ revision: r.name, role: r.role }));
    this.revisionSeries.set(`${namespace}/${name}`, series);
    for (const r of status.revisions ?? []) this.revisionSessions.set({ namespace, wsbalancer: name, revision: r.name, role: r.role }, r.sessions);
    const canary = status.previewRevision !== undefined ? status.rollout?.canary : undefined;
    if (!canary) this.removeCanarySeries(namespace, name);
    else {
      this.canaryStep.set({ namespace, wsbalancer: name }, canary.step);
      this.canaryWeight.set({ namespace, wsbalancer: name }, canary.weight);
      const shares = canary.sidecars ?? [];
      const onCanary = shares.reduce((n, s) => n + s.canary, 0);
      const total = shares.reduce((n, s) => n + s.canary + s.stable, 0);
      this.canaryShare.set({ namespace, wsbalancer: name }, total === 0 ? 0 : (100 * onCanary) / total);
    }
  }

  private removeCanarySeries(namespace: string, name: string): void {
    for (const g of [this.canaryStep, this.canaryWeight, this.canaryShare]) g.remove({ namespace, wsbalancer: name });
  }

  private removeRevisionSeries(namespace: string, name: string): void {
    for (const s of this.revisionSeries.get(`${namespace}/${name}`) ?? []) this.revisionSessions.remove({ namespace, wsbalancer: name, ...s });
    this.revisionSeries.delete(`${namespace}/${name}`);
  }

  forget(namespace: string, name: string): void {
    this.known.delete(`${namespace}/${name}`);
    for (const reason of ROLLOUT_REASONS) this.rolloutEvents.remove({ namespace, wsbalancer: name, reason });
    for (const phase of PHASES) this.phase.remove({ namespace, wsbalancer: name, phase });
    this.sidecarsOutOfSync.remove({ namespace, wsbalancer: name });
    this.removeRevisionSeries(namespace, name);
    this.removeCanarySeries(namespace, name);
  }
}
