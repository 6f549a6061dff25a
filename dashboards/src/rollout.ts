// "Baton rollouts": the operator's view of each WsBalancer (phase, sessions per revision during a
// cutover, sidecar sync) and its own health; migrations come from the sidecars.
import { dashboard, labelVariable, row, stat, stateTimeline, timeseries } from './panels.js';

const WSB = 'namespace=~"$namespace", wsbalancer=~"$wsbalancer"';
const PER_SECOND = 'suffix: /s';
const phaseIs = (phase: string) => `baton_operator_wsbalancer_phase{${WSB}, phase="${phase}"}`;
const durationQuantile = (q: number) => ({
  expr: `histogram_quantile(${q}, sum by (le) (rate(baton_operator_reconcile_duration_seconds_bucket[$__rate_interval])))`,
  legend: `p${Math.round(q * 100)}`,
});

export const rolloutDashboard = dashboard({
  uid: 'baton-rollout',
  title: 'Baton rollouts',
  description: 'Blue/green rollouts of WsBalancers and the health of the Baton operator.',
  tags: ['baton', 'operator'],
  variables: [
    labelVariable('namespace', 'Namespace', 'baton_operator_wsbalancer_phase', 'Namespaces with a WsBalancer.'),
    labelVariable('wsbalancer', 'WsBalancer', 'baton_operator_wsbalancer_phase{namespace=~"$namespace"}', 'WsBalancers of the selected namespaces.'),
  ],
  panels: [
    stat({ title: 'Rollouts in progress', description: 'WsBalancers in phase Progressing.', w: 6, h: 4, queries: [{ expr: `sum(${phaseIs('Progressing')})`, legend: 'progressing' }] }),
    stat({
      title: 'Degraded WsBalancers',
      description: 'WsBalancers in phase Degraded: no ready active endpoint, an aborted rollout, or unreachable sidecars.',
      w: 6,
      h: 4,
      queries: [{ expr: `sum(${phaseIs('Degraded')})`, legend: 'degraded' }],
    }),
    stat({
      title: 'Sidecars out of sync',
      description: 'Ready sidecars that do not hold their WsBalancer\'s backend set (unreachable included).',
      w: 6,
      h: 4,
      queries: [{ expr: `sum(baton_operator_sidecars_out_of_sync{${WSB}})`, legend: 'out of sync' }],
    }),
    stat({
      title: 'Operator leaders',
      description: 'Replicas holding the leader lease: 1 is right; 0 means nothing reconciles.',
      w: 6,
      h: 4,
      queries: [{ expr: 'sum(baton_operator_leader)', legend: 'leaders' }],
    }),

    row('Rollouts'),
    stateTimeline({
      title: 'Phase per WsBalancer',
      description: 'Healthy, Progressing (a preview or a promotion in motion), Paused (waiting for a person) or Degraded.',
      w: 24,
      h: 6,
      states: [
        { value: 0, text: 'Healthy', color: 'green' },
        { value: 1, text: 'Progressing', color: 'blue' },
        { value: 2, text: 'Paused', color: 'yellow' },
        { value: 3, text: 'Degraded', color: 'red' },
      ],
      queries: [
        {
          expr: `sum by (namespace, wsbalancer) (${phaseIs('Progressing')} or 2 * ${phaseIs('Paused')} or 3 * ${phaseIs('Degraded')})`,
          legend: '{{namespace}}/{{wsbalancer}}',
        },
      ],
    }),
    timeseries({
      title: 'Sessions by revision',
      description: 'Sessions on each backend revision, summed over the sidecars: during a cutover the old revision drains into the new one.',
      w: 8,
      h: 9,
      stacked: true,
      queries: [{ expr: `sum by (wsbalancer, revision) (baton_operator_revision_sessions{${WSB}})`, legend: '{{wsbalancer}} {{revision}}' }],
    }),
    timeseries({
      title: 'Canary steps: weight asked and share held',
      description:
        'Per WsBalancer in a canary: the weight its current step asks and the share of sessions the sidecars hold on the canary (status, from every sidecar). A step moves on once the held share reaches the asked weight (a setWeight step), its pause ends, or its analysis passes.',
      w: 12,
      h: 9,
      unit: 'percent',
      queries: [
        { expr: `max by (namespace, wsbalancer) (baton_operator_canary_weight_percent{${WSB}})`, legend: '{{wsbalancer}} asked' },
        { expr: `max by (namespace, wsbalancer) (baton_operator_canary_share_percent{${WSB}})`, legend: '{{wsbalancer}} held' },
      ],
    }),
    timeseries({
      title: 'Canary step',
      description: 'The index (from 1) of the current canary step per WsBalancer; the step count plus one while the promotion drains the stable revision.',
      w: 12,
      h: 9,
      stepped: true,
      queries: [{ expr: `1 + max by (namespace, wsbalancer) (baton_operator_canary_step{${WSB}})`, legend: '{{wsbalancer}}' }],
    }),
    timeseries({
      title: 'Canary share: held and asked (all sidecars)',
      description:
        "During a canary, each sidecar holds a share of its sessions per revision (PUT /v1/backends split): the share held, summed over the sidecars, against the weight asked. The held line follows the asked one at the step's migrationRate.",
      w: 8,
      h: 9,
      unit: 'percent',
      queries: [
        { expr: '100 * sum by (group) (baton_split_sessions) / on() group_left() sum(baton_split_sessions)', legend: '{{group}} held' },
        { expr: 'max by (group) (baton_split_weight_percent)', legend: '{{group}} asked' },
      ],
    }),
    timeseries({
      title: 'Session migrations (all sidecars)',
      description: 'Sessions moved off draining backends by the sidecars, by result; a promotion drains at migrationRate per sidecar.',
      w: 8,
      h: 9,
      unit: PER_SECOND,
      queries: [{ expr: 'sum by (result) (rate(baton_migrations_total[$__rate_interval]))', legend: '{{result}}' }],
    }),

    row('Operator'),
    timeseries({
      title: 'Sidecars out of sync',
      description: 'Per WsBalancer; the operator pushes the backend set again on every reconcile until they hold it.',
      w: 8,
      h: 8,
      queries: [{ expr: `sum by (namespace, wsbalancer) (baton_operator_sidecars_out_of_sync{${WSB}})`, legend: '{{namespace}}/{{wsbalancer}}' }],
    }),
    timeseries({
      title: 'Reconciles by result',
      description: 'error, invalid (spec) and conflict are retried; a steady error rate means sidecars or the API server cannot be reached.',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: 'sum by (result) (rate(baton_operator_reconciles_total[$__rate_interval]))', legend: '{{result}}' }],
    }),
    timeseries({
      title: 'Sidecar pushes',
      description: 'PUT /v1/backends calls to sidecars, by result.',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: 'sum by (result) (rate(baton_operator_sidecar_pushes_total[$__rate_interval]))', legend: '{{result}}' }],
    }),
    timeseries({
      title: 'Rollout steps taken',
      description:
        'Rollout events since the operator started, stacked by reason: each step up is one event: PreviewDetected, PromotionStarted, SessionsMigrated, Promoted or Aborted, and for a canary StepStarted, WeightReached, StepPromoted, AnalysisPassed or AnalysisFailed. (Totals, not increase(): a reason\'s series starts with its first event, which increase() cannot see.)',
      w: 8,
      h: 8,
      stacked: true,
      stepped: true,
      queries: [{ expr: `sum by (reason) (baton_operator_rollout_events_total{${WSB}})`, legend: '{{reason}}' }],
    }),
    timeseries({
      title: 'Reconcile duration',
      description: 'Time one reconcile takes, sidecar calls included.',
      w: 8,
      h: 8,
      unit: 's',
      queries: [durationQuantile(0.5), durationQuantile(0.99)],
    }),
    timeseries({
      title: 'Work queue and informer restarts',
      description: 'WsBalancers waiting to be reconciled, and list/watch failures recovered by a restart.',
      w: 8,
      h: 8,
      queries: [
        { expr: 'max(baton_operator_queue_depth)', legend: 'queue depth' },
        { expr: 'sum by (resource) (increase(baton_operator_informer_restarts_total[$__rate_interval]))', legend: 'restarts: {{resource}}' },
      ],
    }),
  ],
});
