// "Baton sidecar": sessions, failovers, backends and traffic of the sidecars chosen by $instance.
import { dashboard, labelVariable, row, stat, stateTimeline, timeseries } from './panels.js';

const I = 'instance=~"$instance"';
const UNPLANNED = 'reason=~"error|close-code|pong-timeout"';
const PER_SECOND = 'suffix: /s';
const gapQuantile = (q: number) => ({
  expr: `histogram_quantile(${q}, sum by (le) (rate(baton_failover_gap_seconds_bucket{${I}}[$__rate_interval])))`,
  legend: `p${Math.round(q * 100)}`,
});

export const sidecarDashboard = dashboard({
  uid: 'baton-sidecar',
  title: 'Baton sidecar',
  description: 'Sessions, failovers, backend health and traffic of Baton sidecars (admin port /metrics).',
  tags: ['baton', 'websocket'],
  variables: [labelVariable('instance', 'Sidecar', 'baton_sessions_active', 'Sidecar scrape targets (pod IP:admin port).')],
  panels: [
    stat({ title: 'Open sessions', description: 'Client sessions open on the selected sidecars.', w: 6, h: 4, queries: [{ expr: `sum(baton_sessions_active{${I}})`, legend: 'sessions' }] }),
    stat({
      title: 'Sessions failing over',
      description: 'Sessions whose backend is gone and that are being reconnected to another one right now.',
      w: 6,
      h: 4,
      queries: [{ expr: `sum(baton_sessions{${I}, state="failing-over"})`, legend: 'failing over' }],
    }),
    stat({
      title: 'Unplanned failovers per minute',
      description: 'Sessions that lost their backend (error, close code, pong timeout), per minute.',
      w: 6,
      h: 4,
      decimals: 1,
      queries: [{ expr: `sum(rate(baton_failovers_total{${I}, ${UNPLANNED}}[$__rate_interval])) * 60`, legend: 'failovers/min' }],
    }),
    stat({
      title: 'Usable backends',
      description: 'Backends that no selected sidecar has ejected or tripped (healthy or suspect).',
      w: 6,
      h: 4,
      queries: [{ expr: `count(max by (backend) (baton_backend_health{${I}, status=~"ejected|tripped"}) == 0) or vector(0)`, legend: 'backends' }],
    }),

    row('Sessions'),
    timeseries({
      title: 'Sessions by backend',
      description: 'Open sessions by the backend serving them; "none" is sessions between backends (failing over).',
      w: 12,
      h: 8,
      stacked: true,
      queries: [{ expr: `sum by (backend) (baton_sessions_active{${I}})`, legend: '{{backend}}' }],
    }),
    timeseries({
      title: 'Sessions opened and closed',
      description: 'New client sessions, and ended ones by reason (client-closed is normal; buffer-full, failover-deadline and protocol-error are not).',
      w: 12,
      h: 8,
      unit: PER_SECOND,
      queries: [
        { expr: `sum(rate(baton_sessions_opened_total{${I}}[$__rate_interval]))`, legend: 'opened' },
        { expr: `sum by (reason) (rate(baton_sessions_closed_total{${I}}[$__rate_interval]))`, legend: 'closed: {{reason}}' },
      ],
    }),

    row('Failover'),
    timeseries({
      title: 'Failovers by reason',
      description: 'Sessions leaving a backend: error, close-code and pong-timeout are unplanned; drain, admin, lifetime, reload, dns and split are planned.',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: `sum by (reason) (rate(baton_failovers_total{${I}}[$__rate_interval]))`, legend: '{{reason}}' }],
    }),
    timeseries({
      title: 'Failover gap percentiles',
      description: 'Time from losing (or starting to leave) a backend to the session running on the next one.',
      w: 8,
      h: 8,
      unit: 's',
      queries: [gapQuantile(0.5), gapQuantile(0.9), gapQuantile(0.99)],
    }),
    timeseries({
      title: 'Failover results',
      description: 'resumed is the goal; deadline, buffer-full, client-gone and failed sessions were lost or closed.',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: `sum by (result) (rate(baton_failovers_total{${I}}[$__rate_interval]))`, legend: '{{result}}' }],
    }),
    timeseries({
      title: 'Backend dial errors',
      description: 'Failed backend connection attempts, by backend and reason (connect, refused, timeout, tls, ...).',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: `sum by (backend, reason) (rate(baton_backend_dial_failures_total{${I}}[$__rate_interval]))`, legend: '{{backend}} {{reason}}' }],
    }),
    timeseries({
      title: 'Planned migrations',
      description: 'Sessions moved off a draining backend, by result (migrated, failed, busy, closed).',
      w: 8,
      h: 8,
      unit: PER_SECOND,
      queries: [{ expr: `sum by (result) (rate(baton_migrations_total{${I}}[$__rate_interval]))`, legend: '{{result}}' }],
    }),
    timeseries({
      title: 'Buffered during failover',
      description: 'Client message bytes held while sessions fail over or migrate (each session is capped by failover.bufferMaxBytes).',
      w: 8,
      h: 8,
      unit: 'bytes',
      queries: [{ expr: `sum(baton_buffered_bytes{${I}})`, legend: 'buffered' }],
    }),

    row('Backends'),
    stateTimeline({
      title: 'Backend health',
      description: 'Worst health any selected sidecar sees for each backend.',
      w: 6,
      h: 8,
      states: [
        { value: 0, text: 'healthy', color: 'green' },
        { value: 1, text: 'suspect', color: 'yellow' },
        { value: 2, text: 'ejected', color: 'red' },
        { value: 3, text: 'tripped', color: 'purple' },
      ],
      queries: [
        {
          expr: `max by (backend) (baton_backend_health{${I}, status="suspect"} or 2 * baton_backend_health{${I}, status="ejected"} or 3 * baton_backend_health{${I}, status="tripped"})`,
          legend: '{{backend}}',
        },
      ],
    }),
    timeseries({
      title: 'Backend φ (suspicion)',
      description: 'φ-accrual suspicion of each backend (highest over the selected sidecars); health.phi.threshold (default 16) marks it failed.',
      w: 6,
      h: 8,
      queries: [{ expr: `max by (backend) (baton_backend_phi{${I}})`, legend: '{{backend}}' }],
    }),
    stateTimeline({
      title: 'Backend state',
      description: 'Administrative state of each backend: enabled, disabled (no new sessions) or draining (sessions migrating off).',
      w: 6,
      h: 8,
      states: [
        { value: 0, text: 'enabled', color: 'green' },
        { value: 1, text: 'disabled', color: 'yellow' },
        { value: 2, text: 'draining', color: 'blue' },
      ],
      queries: [{ expr: `max by (backend) (baton_backend_state{${I}, state="disabled"} or 2 * baton_backend_state{${I}, state="draining"})`, legend: '{{backend}}' }],
    }),
    timeseries({
      title: 'Dials waiting for a slot',
      description: 'Dials to each backend waiting for one of its upstream.maxConcurrentDials slots (most over the selected sidecars): a burst when many sessions fail over or arrive at once. Often above 0 in quiet times: raise the limit, or the backend\'s capacity.',
      w: 6,
      h: 8,
      queries: [{ expr: `max by (backend) (baton_backend_dials_waiting{${I}})`, legend: '{{backend}}' }],
    }),

    row('Traffic'),
    timeseries({
      title: 'Messages',
      description: 'Messages proxied: in = client to backend, out = backend to client.',
      w: 12,
      h: 8,
      unit: 'suffix: msg/s',
      queries: [{ expr: `sum by (direction) (rate(baton_messages_total{${I}}[$__rate_interval]))`, legend: '{{direction}}' }],
    }),
    timeseries({
      title: 'Payload bytes',
      description: 'Message payload bytes proxied per second: in = client to backend, out = backend to client.',
      w: 12,
      h: 8,
      unit: 'Bps',
      queries: [{ expr: `sum by (direction) (rate(baton_bytes_total{${I}}[$__rate_interval]))`, legend: '{{direction}}' }],
    }),
  ],
});
