// Prometheus metrics of the sidecar. Per-message and per-session figures (message counts, bytes,
// sizes, sessions closed, dials, failovers) are kept in plain numbers on the hot path and turned
// into samples when scraped; prom-client's own label lookups hash and allocate, so they are used
// only for rarer events (migrations, admin, DNS).
import { Counter, Gauge, Registry, type Metric } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { CodecStats } from './codecs/tracker.js';
import type { SplitView } from '../common/admin/contract.js';
import {
  BACKEND_STATES,
  CUT_DRAIN_ENDS,
  DIAL_FAILURE_REASONS,
  DIAL_RESULTS,
  DRAIN_ENDS,
  HEALTH_STATUSES,
  MIGRATION_RESULTS,
  SESSION_END_REASONS,
  SESSION_STATES,
  SWITCH_REASONS,
  SWITCH_RESULTS,
  type BackendState,
  type DialFailureReason,
  type DialResultLabel,
  type HealthStatus,
  type SessionEndReason,
  type SessionStateName,
  type SwitchReason,
  type SwitchResult,
  zeroCounts,
} from '../common/vocabulary.js';

/** in = client → backend, out = backend → client. */
export const DIRECTION_IN = 0;
export const DIRECTION_OUT = 1;
const DIRECTIONS = ['in', 'out'] as const;
export const DNS_RESULTS = ['success', 'empty', 'failure'] as const;
export type DnsResult = (typeof DNS_RESULTS)[number];

/** A session's counters, as the collectors and the end-of-session fold read them. */
export interface SessionCounters {
  readonly backend: { readonly id: string } | null;
  readonly state: SessionStateName;
  readonly messagesIn: number;
  readonly messagesOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly bufferedBytes: number;
  readonly bufferedMessages: number;
}

/** A backend's live figures, as the collectors read them. */
export interface BackendGauges {
  readonly id: string;
  readonly sessions: number;
  readonly state: BackendState;
  readonly health: HealthStatus;
  readonly phiValue: number;
  /** Dials waiting for one of its upstream.maxConcurrentDials slots. */
  readonly dialsWaiting: number;
}

/** What the collectors read at scrape time. */
export interface MetricsSource {
  sessions(): Iterable<SessionCounters>;
  backends(): Iterable<BackendGauges>;
  frontendPaused(): boolean;
  codecs(): ReadonlyMap<string, { stats: CodecStats }>;
  /** The split in force (sidecar/balancing/split.ts), if any. */
  split(): SplitView | undefined;
}

/**
 * A histogram with one label whose values are known up front (a vocabulary list), updated with no
 * allocation or label hashing (prom-client's labelled observe costs more than a session's failover
 * step); exported as a Prometheus histogram with every label value present from the start.
 */
class FixedHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly counts: Float64Array[];
  private readonly sums: Float64Array;
  private readonly index: ReadonlyMap<L, number>;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelName: string,
    private readonly labelValues: readonly L[],
    private readonly bounds: readonly number[],
  ) {
    this.counts = labelValues.map(() => new Float64Array(bounds.length + 1));
    this.sums = new Float64Array(labelValues.length);
    this.index = new Map(labelValues.map((v, i) => [v, i]));
  }

  observe(label: L, value: number): void {
    this.observeAt(this.index.get(label)!, value);
  }

  /** With the label value's position in the list (the data path's constants). */
  observeAt(labelIndex: number, value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[labelIndex]![i]!++;
    this.sums[labelIndex]! += value;
  }

  get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    this.labelValues.forEach((labelValue, l) => {
      const counts = this.counts[l]!;
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += counts[i]!;
        values.push({ labels: { [this.labelName]: labelValue, le }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      cumulative += counts[this.bounds.length]!;
      values.push({ labels: { [this.labelName]: labelValue, le: '+Inf' }, value: cumulative, metricName: `${this.name}_bucket` });
      values.push({ labels: { [this.labelName]: labelValue }, value: this.sums[l]!, metricName: `${this.name}_sum` });
      values.push({ labels: { [this.labelName]: labelValue }, value: cumulative, metricName: `${this.name}_count` });
    });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator } as never;
  }

  reset(): void {
    for (const c of this.counts) c.fill(0);
    this.sums.fill(0);
  }
}

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly messageSize = new FixedHistogram(
    'baton_message_size_bytes',
    'Size of proxied messages in bytes, by direction (in = client to backend).',
    'direction',
    DIRECTIONS,
    [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216],
  );
  readonly switchGap = new FixedHistogram(
    'baton_failover_gap_seconds',
    'Time from losing (or starting to leave) a backend to the session running on the next one, by reason.',
    'reason',
    SWITCH_REASONS,
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  readonly migrationDrain = new FixedHistogram(
    'baton_migration_drain_seconds',
    "Time a planned migration held the client's messages while the old backend finished, by how that ended (quiet, settled, old-closed, feed-bound, drain-timeout).",
    'ended',
    DRAIN_ENDS,
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  /** Totals of sessions that have ended (live sessions are summed at scrape time). */
  private readonly ended = { messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0 };
  private readonly closedBy = zeroCounts(SESSION_END_REASONS);
  private readonly switchesBy = Object.fromEntries(SWITCH_REASONS.map((r) => [r, zeroCounts(SWITCH_RESULTS)])) as Record<SwitchReason, Record<SwitchResult, number>>;
  /** Per backend: dials by result, failed dials by reason. */
  private readonly dialsBy = new Map<string, { results: Record<DialResultLabel, number>; failures: Record<DialFailureReason, number> }>();

  readonly sessionsOpened: Counter;
  readonly migrations: Counter<'result'>;
  readonly migrationCutoffs: Counter<'ended'>;
  readonly replayed: Counter;
  readonly adminRequests: Counter<'route' | 'status'>;
  /** Names are few and configured (dns.resolve backends): fine as labels. */
  readonly dnsResolutions: Counter<'name' | 'result'>;
  readonly dnsAddresses: Gauge<'name'>;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectProcessMetrics(this.registry);
    for (const h of [this.messageSize, this.switchGap, this.migrationDrain]) this.registry.registerMetric(h as unknown as Metric);
    this.sessionsOpened = new Counter({ name: 'baton_sessions_opened_total', help: 'Client sessions opened.', registers });
    const { closedBy, dialsBy } = this;
    new Counter({
      name: 'baton_sessions_closed_total',
      help: 'Client sessions ended, by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const reason of SESSION_END_REASONS) this.inc({ reason }, closedBy[reason]);
      },
    });
    const switchesBy = this.switchesBy;
    new Counter({
      name: 'baton_failovers_total',
      help: 'Sessions leaving a backend, by reason (error, close-code, pong-timeout unplanned; drain, admin, lifetime, reload, dns, split planned) and result.',
      labelNames: ['reason', 'result'],
      registers,
      collect() {
        this.reset();
        for (const reason of SWITCH_REASONS) for (const result of SWITCH_RESULTS) this.inc({ reason, result }, switchesBy[reason][result]);
      },
    });
    new Counter({
      name: 'baton_backend_dials_total',
      help: 'Backend connection attempts, by backend and result (success, failure, refused = answered with 3xx/4xx).',
      labelNames: ['backend', 'result'],
      registers,
      collect() {
        this.reset();
        for (const [backend, { results }] of dialsBy) for (const result of DIAL_RESULTS) this.inc({ backend, result }, results[result]);
      },
    });
    new Counter({
      name: 'baton_backend_dial_failures_total',
      help: 'Failed backend connection attempts, by backend and reason.',
      labelNames: ['backend', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const [backend, { failures }] of dialsBy) for (const reason of DIAL_FAILURE_REASONS) this.inc({ backend, reason }, failures[reason]);
      },
    });
    this.migrations = new Counter({
      name: 'baton_migrations_total',
      help: 'Planned migrations, by result (migrated, failed, busy, closed).',
      labelNames: ['result'],
      registers,
    });
    this.migrationCutoffs = new Counter({
      name: 'baton_migration_cutoffs_total',
      help:
        'Planned migrations that let the old backend go at a bound (feed-bound, drain-timeout) with no codec to replay what it still owed: answers it had not yet sent are lost.',
      labelNames: ['ended'],
      registers,
    });
    this.replayed = new Counter({
      name: 'baton_replayed_messages_total',
      help: 'Client messages held during a failover or migration and then delivered to the new backend.',
      registers,
    });
    this.adminRequests = new Counter({
      name: 'baton_admin_requests_total',
      help: 'Admin API requests, by route and HTTP status.',
      labelNames: ['route', 'status'],
      registers,
    });
    this.dnsResolutions = new Counter({
      name: 'baton_dns_resolutions_total',
      help: 'Resolutions of backend names (dns.resolve), by result: success, empty (no address: the last good answer is kept), failure (likewise).',
      labelNames: ['name', 'result'],
      registers,
    });
    this.dnsAddresses = new Gauge({
      name: 'baton_dns_addresses',
      help: "Addresses in a backend name's last good answer (one backend each).",
      labelNames: ['name'],
      registers,
    });

    // Every known label value starts at 0, so that rate() and increase() see the first event too
    // (a series born at its first increment has no earlier sample to rise from).
    for (const result of MIGRATION_RESULTS) this.migrations.inc({ result }, 0);
    for (const ended of CUT_DRAIN_ENDS) this.migrationCutoffs.inc({ ended }, 0);

    const ended = this.ended;
    new Gauge({
      name: 'baton_sessions_active',
      help: 'Open client sessions, by the backend serving them ("none" while failing over).',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const b of source.backends()) this.set({ backend: b.id }, b.sessions);
        let none = 0;
        for (const s of source.sessions()) if (!s.backend) none++;
        this.set({ backend: 'none' }, none);
      },
    });
    new Gauge({
      name: 'baton_sessions',
      help: 'Open client sessions, by state.',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = new Map<SessionStateName, number>();
        for (const state of SESSION_STATES) if (state !== 'closed') counts.set(state, 0);
        for (const s of source.sessions()) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'baton_backend_state',
      help: 'Administrative state of each backend (1 for its current state).',
      labelNames: ['backend', 'state'],
      registers,
      collect() {
        this.reset();
        for (const b of source.backends()) {
          for (const state of BACKEND_STATES) this.set({ backend: b.id, state }, b.state === state ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'baton_backend_health',
      help: 'Health of each backend (1 for its current status: healthy, suspect, ejected, tripped).',
      labelNames: ['backend', 'status'],
      registers,
      collect() {
        this.reset();
        for (const b of source.backends()) {
          for (const status of HEALTH_STATUSES) this.set({ backend: b.id, status }, b.health === status ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'baton_backend_phi',
      help: 'φ-accrual suspicion level of each backend (0 = no evidence of trouble).',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const b of source.backends()) this.set({ backend: b.id }, b.phiValue);
      },
    });
    new Gauge({
      name: 'baton_backend_dials_waiting',
      help: 'Dials to each backend waiting for a slot (upstream.maxConcurrentDials): above 0 while many sessions fail over or arrive at once.',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const b of source.backends()) this.set({ backend: b.id }, b.dialsWaiting);
      },
    });
    new Counter({
      name: 'baton_messages_total',
      help: 'Messages proxied, by direction (in = client to backend).',
      labelNames: ['direction'],
      registers,
      collect() {
        let i = ended.messagesIn;
        let o = ended.messagesOut;
        for (const s of source.sessions()) {
          i += s.messagesIn;
          o += s.messagesOut;
        }
        this.reset();
        this.inc({ direction: 'in' }, i);
        this.inc({ direction: 'out' }, o);
      },
    });
    new Counter({
      name: 'baton_bytes_total',
      help: 'Message payload bytes proxied, by direction (in = client to backend).',
      labelNames: ['direction'],
      registers,
      collect() {
        let i = ended.bytesIn;
        let o = ended.bytesOut;
        for (const s of source.sessions()) {
          i += s.bytesIn;
          o += s.bytesOut;
        }
        this.reset();
        this.inc({ direction: 'in' }, i);
        this.inc({ direction: 'out' }, o);
      },
    });
    new Gauge({
      name: 'baton_buffered_bytes',
      help: 'Client message bytes held while sessions fail over or migrate.',
      registers,
      collect() {
        let n = 0;
        for (const s of source.sessions()) n += s.bufferedBytes;
        this.set(n);
      },
    });
    new Gauge({
      name: 'baton_buffered_messages',
      help: 'Client messages held while sessions fail over or migrate.',
      registers,
      collect() {
        let n = 0;
        for (const s of source.sessions()) n += s.bufferedMessages;
        this.set(n);
      },
    });
    // Codec figures are plain counters on the data path; each becomes a labelled counter here.
    const codecCounter = (name: string, help: string, field: keyof CodecStats) =>
      new Counter({
        name,
        help,
        labelNames: ['codec'],
        registers,
        collect() {
          this.reset();
          for (const [codec, { stats }] of source.codecs()) this.inc({ codec }, stats[field]);
        },
      });
    codecCounter('baton_codec_requests_tracked_total', 'Client requests tracked until answered, by codec.', 'tracked');
    codecCounter('baton_codec_requests_replayed_total', 'Unanswered requests replayed to a new backend after a failover, by codec.', 'replayed');
    codecCounter('baton_codec_duplicate_answers_dropped_total', 'Answers dropped because the client already had one for that id, by codec.', 'duplicateAnswers');
    codecCounter('baton_codec_unanswered_timeouts_total', 'Requests no answer came for within codec.requestTimeout, by codec.', 'timeouts');
    codecCounter('baton_codec_tracking_evicted_total', 'Requests dropped from tracking at the per-session count or byte limit, by codec.', 'evicted');
    codecCounter('baton_codec_orphan_answers_total', "Client answers to calls from a backend that has died since, by codec.", 'orphanAnswers');
    codecCounter('baton_codec_unknown_answers_total', 'Client answers to call ids the sidecar did not see, by codec.', 'unknownAnswers');
    codecCounter('baton_codec_malformed_frames_total', 'Frames the codec could not read (forwarded untouched), by codec.', 'malformed');
    codecCounter('baton_codec_resumes_total', "Sessions whose protocol state was replayed to a new backend, by codec.", 'resumes');
    codecCounter('baton_codec_resumed_total', 'Resumes the new backend answered (the session went on there), by codec.', 'resumed');
    codecCounter('baton_codec_resume_answers_swallowed_total', "A new backend's answers to a replay, dropped because the client already had them, by codec.", 'swallowed');
    codecCounter('baton_codec_resume_refusals_total', "Resumes the new backend refused (the client got the protocol's refusal), by codec.", 'resumeRefusals');
    codecCounter('baton_codec_unresumable_sessions_total', 'Sessions closed with 1012 at a backend change because their state could not move, by codec.', 'unresumable');
    // The split's share: what is asked and what the sidecar holds, per group (label value).
    const splitGauge = (name: string, help: string, of: (g: SplitView['groups'][number]) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['group'],
        registers,
        collect() {
          this.reset();
          for (const g of source.split()?.groups ?? []) this.set({ group: g.value }, of(g));
        },
      });
    };
    splitGauge('baton_split_weight_percent', 'The share of sessions asked of each split group (PUT /v1/backends split), in percent.', (g) => g.weight);
    splitGauge('baton_split_sessions', "Sessions on each split group's backends.", (g) => g.sessions);
    new Gauge({
      name: 'baton_frontend_paused',
      help: '1 while new client sessions are refused (admin pause).',
      registers,
      collect() {
        this.set(source.frontendPaused() ? 1 : 0);
      },
    });
  }

  /** A session left a backend (failover or planned move), with this result. */
  switched(reason: SwitchReason, result: SwitchResult): void {
    this.switchesBy[reason][result]++;
  }

  /** Folds an ended session's counters into the totals. */
  sessionEnded(s: SessionCounters, reason: SessionEndReason): void {
    this.closedBy[reason]++;
    this.ended.messagesIn += s.messagesIn;
    this.ended.messagesOut += s.messagesOut;
    this.ended.bytesIn += s.bytesIn;
    this.ended.bytesOut += s.bytesOut;
  }

  dialed(backend: string, outcome: 'success' | 'refused' | DialFailureReason): void {
    let counts = this.dialsBy.get(backend);
    if (counts === undefined) this.dialsBy.set(backend, (counts = { results: zeroCounts(DIAL_RESULTS), failures: zeroCounts(DIAL_FAILURE_REASONS) }));
    if (outcome === 'success' || outcome === 'refused') {
      counts.results[outcome]++;
      return;
    }
    counts.results.failure++;
    counts.failures[outcome]++;
  }

  /** A name to resolve: its series start at 0. */
  dnsNameAdded(name: string): void {
    for (const result of DNS_RESULTS) this.dnsResolutions.inc({ name, result }, 0);
  }

  resolved(name: string, result: DnsResult, addresses: number | null): void {
    this.dnsResolutions.inc({ name, result });
    if (addresses !== null) this.dnsAddresses.set({ name }, addresses);
  }

  /** A name no longer configured: its series go. */
  forgetDnsName(name: string): void {
    for (const result of DNS_RESULTS) this.dnsResolutions.remove({ name, result });
    this.dnsAddresses.remove({ name });
  }

  /** Drops a removed backend's label values so label sets stay bounded as backends come and go. */
  forgetBackend(backend: string): void {
    this.dialsBy.delete(backend);
  }
}
