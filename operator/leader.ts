// Leader election on a coordination.k8s.io/v1 Lease, as client-go's tools/leaderelection does it.
//
// Never is the holder's renewTime compared with the local clock (clocks may be set differently):
// a follower notes, on its own monotonic clock, when it first saw the record as it is, and takes
// over only once the record has not changed for the lease duration since. The leader renews every
// retry period and stops acting once it has not renewed for the renew deadline, counted from when
// it sent its last successful write: a follower cannot have seen that write before it was sent,
// so it waits at least the lease duration from then, and lease duration > renew deadline leaves a
// margin. The guarantee assumes clocks that run at the same rate, not synchronized ones.
// Writes carry the lease's resourceVersion, so two replicas never both win a round.
import { CoordinationV1Api, V1MicroTime, type ConfigurationOptions, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatDuration } from '../common/values.js';
import type { Logger } from '../common/logger.js';
import { requestTimeout } from './kube-client.js';

/** client-go's: a follower waits retryPeriod × (1 + random × this); the renew deadline must exceed retryPeriod × this. */
export const JITTER_FACTOR = 1.2;

export type LeaseAction = 'create' | 'renew' | 'takeover' | 'follow';

/** The lease record as this replica last saw it, and since when (local monotonic ms). */
export interface ObservedRecord {
  /** The record's fields that a holder writes; a change in any of them is a sign of life. */
  record: string;
  holder: string;
  leaseDurationMs: number;
  since: number;
}

/** Folds a read of the lease into what was observed: the time is kept while the record stays the same. */
export function observe(previous: ObservedRecord | null, lease: V1Lease, now: number): ObservedRecord {
  const spec = lease.spec ?? {};
  const record = JSON.stringify([spec.holderIdentity ?? '', spec.leaseDurationSeconds ?? 0, spec.acquireTime ?? null, spec.renewTime ?? null, spec.leaseTransitions ?? 0]);
  if (previous && previous.record === record) return previous;
  return { record, holder: spec.holderIdentity ?? '', leaseDurationMs: (spec.leaseDurationSeconds ?? 0) * 1000, since: now };
}

/**
 * What a replica does with the lease as observed (null: there is none): its own, renew; nobody's
 * (released), take it; someone else's, take it only once unchanged for the holder's lease duration.
 */
export function leaseAction(observed: ObservedRecord | null, identity: string, now: number): LeaseAction {
  if (!observed) return 'create';
  if (observed.holder === identity) return 'renew';
  if (!observed.holder) return 'takeover';
  return now >= observed.since + observed.leaseDurationMs ? 'takeover' : 'follow';
}

/** Whether a replica whose last successful write was sent at `renewedAt` still leads at `now`. */
export function leadsAt(renewedAt: number | null, renewDeadlineMs: number, now: number): boolean {
  return renewedAt !== null && now < renewedAt + renewDeadlineMs;
}

export interface LeaseDurations {
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

/** client-go's rule: lease duration > renew deadline > retry period × jitter factor; problems name the flags. */
export function leaseDurationProblems(d: LeaseDurations): string[] {
  const problems: string[] = [];
  if (!(d.leaseDurationMs > d.renewDeadlineMs)) {
    problems.push(`--lease-duration (${formatDuration(d.leaseDurationMs)}) must be longer than --lease-renew-deadline (${formatDuration(d.renewDeadlineMs)}): a standby must not take over while the leader may still act`);
  }
  if (!(d.renewDeadlineMs > d.retryPeriodMs * JITTER_FACTOR)) {
    problems.push(
      `--lease-renew-deadline (${formatDuration(d.renewDeadlineMs)}) must be longer than ${JITTER_FACTOR} × --lease-retry-period (${formatDuration(d.retryPeriodMs)}): the leader must get more than one try to renew`,
    );
  }
  return problems;
}

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  /** Written in the lease: how long followers wait for a sign of life before taking over. */
  leaseDurationSeconds: number;
  /** The leader stops acting when it has not renewed for this long. */
  renewDeadlineMs: number;
  /** How often the leader renews and a follower looks (the latter with jitter). */
  retryPeriodMs: number;
}

export class LeaderElector {
  private observed: ObservedRecord | null = null;
  /** When the last successful write of ours was sent (monotonic ms); null: we do not hold the lease. */
  private renewedAt: number | null = null;
  /** What onChange and the log last said. */
  private reported = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly api: CoordinationV1Api;
  /** Lease requests end by the renew deadline whatever --api-timeout says (as kube-controller-manager's election client). */
  private readonly leaseRequest: ConfigurationOptions;

  constructor(
    kc: KubeConfig,
    private readonly opts: LeaderElectionOptions,
    private readonly log: Logger,
    private readonly onChange: (leading: boolean) => void,
    private readonly clock: () => number = () => performance.now(),
  ) {
    const problems = leaseDurationProblems({ leaseDurationMs: opts.leaseDurationSeconds * 1000, renewDeadlineMs: opts.renewDeadlineMs, retryPeriodMs: opts.retryPeriodMs });
    if (problems.length) throw new Error(`leader election: ${problems.join('; ')}`);
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.leaseRequest = requestTimeout(opts.renewDeadlineMs);
  }

  /** Computed from time, so it turns false at the renew deadline even while a renew request hangs. */
  get isLeader(): boolean {
    return leadsAt(this.renewedAt, this.opts.renewDeadlineMs, this.clock());
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; a leader gives the lease up so a standby need not wait for it to expire. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    await this.loop;
    const held = this.renewedAt !== null;
    this.renewedAt = null;
    this.report();
    clearTimeout(this.deadlineTimer);
    if (!held) return;
    try {
      const { namespace, name } = this.opts;
      const lease = await this.api.readNamespacedLease({ namespace, name }, this.leaseRequest);
      if (lease.spec?.holderIdentity === this.opts.identity) {
        lease.spec.holderIdentity = '';
        await this.api.replaceNamespacedLease({ namespace, name, body: lease }, this.leaseRequest);
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not release the leader lease');
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.tryOnce();
      } catch (err) {
        this.log.warn({ err: (err as Error).message, lease: this.opts.name }, 'leader election round failed');
      }
      this.report();
      // The leader renews on the period; followers spread their looks (client-go's jitter).
      const wait = this.isLeader ? this.opts.retryPeriodMs : this.opts.retryPeriodMs * (1 + Math.random() * JITTER_FACTOR);
      await sleep(wait, undefined, { signal: this.stopping.signal }).catch(() => undefined);
    }
  }

  private async tryOnce(): Promise<void> {
    const { namespace, name, identity } = this.opts;
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name }, this.leaseRequest);
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    // Observed when the answer arrived: the record was current then, not necessarily when asked.
    this.observed = lease ? observe(this.observed, lease, this.clock()) : null;
    const action = leaseAction(this.observed, identity, this.clock());
    if (action === 'follow') {
      this.renewedAt = null;
      return;
    }
    const sentAt = this.clock();
    const stamp = new V1MicroTime(Date.now());
    let written: V1Lease;
    if (action === 'create') {
      written = await this.api.createNamespacedLease(
        {
          namespace,
          body: {
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds: this.opts.leaseDurationSeconds, acquireTime: stamp, renewTime: stamp, leaseTransitions: 0 },
          },
        },
        this.leaseRequest,
      );
    } else {
      const spec = { ...lease!.spec };
      if (action === 'takeover') {
        spec.acquireTime = stamp;
        spec.leaseTransitions = (spec.leaseTransitions ?? 0) + 1;
      }
      spec.holderIdentity = identity;
      spec.leaseDurationSeconds = this.opts.leaseDurationSeconds;
      spec.renewTime = stamp;
      // A conflict here (409) means another replica wrote first: this round is lost.
      written = await this.api.replaceNamespacedLease({ namespace, name, body: { ...lease!, spec } }, this.leaseRequest);
    }
    this.observed = observe(this.observed, written, this.clock());
    this.renewedAt = sentAt;
    this.armDeadline();
  }

  /** Reports the loss of the lease at the renew deadline, even if the loop is stuck in a request. */
  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    if (this.renewedAt === null) return;
    const left = this.renewedAt + this.opts.renewDeadlineMs - this.clock();
    if (left <= 0) return this.report();
    this.deadlineTimer = setTimeout(() => this.armDeadline(), Math.ceil(left));
    this.deadlineTimer.unref();
  }

  private report(): void {
    const leading = this.isLeader;
    if (leading === this.reported) return;
    this.reported = leading;
    this.log.info({ identity: this.opts.identity, lease: this.opts.name }, leading ? 'became the leader' : 'no longer the leader');
    this.onChange(leading);
  }
}
