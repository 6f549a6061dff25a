// Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: the holder renews the
// lease every retry period; another replica takes it over once it has gone unrenewed for its whole
// duration. Writes carry the lease's resourceVersion, so two replicas can never both win a round.
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../sidecar/logger.js';

export type LeaseAction = 'create' | 'renew' | 'takeover' | 'follow';

/** What a replica does with the lease as it finds it (pure). */
export function leaseAction(lease: V1Lease | undefined, identity: string, now: number): LeaseAction {
  if (!lease) return 'create';
  const spec = lease.spec ?? {};
  if (spec.holderIdentity === identity) return 'renew';
  if (!spec.holderIdentity) return 'takeover';
  const renewed = spec.renewTime ? new Date(spec.renewTime as unknown as string).getTime() : 0;
  const expiresAt = renewed + (spec.leaseDurationSeconds ?? 0) * 1000;
  return now >= expiresAt ? 'takeover' : 'follow';
}

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds: number;
  /** How often the lease is read and renewed or tried. */
  retryPeriodMs: number;
}

export class LeaderElector {
  private leading = false;
  private stopped = false;
  private readonly stopping = new AbortController();
  private lastRenewed = 0;
  private loop: Promise<void> | undefined;
  private readonly api: CoordinationV1Api;

  constructor(
    kc: KubeConfig,
    private readonly opts: LeaderElectionOptions,
    private readonly log: Logger,
    private readonly onChange: (leading: boolean) => void,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; a leader gives the lease up so a standby need not wait for it to expire. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    await this.loop;
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const lease = await this.api.readNamespacedLease({ namespace: this.opts.namespace, name: this.opts.name });
      if (lease.spec?.holderIdentity === this.opts.identity) {
        lease.spec.holderIdentity = '';
        await this.api.replaceNamespacedLease({ namespace: this.opts.namespace, name: this.opts.name, body: lease });
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
      // A leader that could not renew for a whole lease duration must assume another has taken over.
      if (this.leading && Date.now() - this.lastRenewed >= this.opts.leaseDurationSeconds * 1000) this.setLeading(false);
      await sleep(this.opts.retryPeriodMs, undefined, { signal: this.stopping.signal }).catch(() => undefined);
    }
  }

  private async tryOnce(): Promise<void> {
    const { namespace, name, identity } = this.opts;
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    const now = Date.now();
    const action = leaseAction(lease, identity, now);
    if (action === 'follow') {
      this.setLeading(false);
      return;
    }
    const stamp = new V1MicroTime(now);
    if (action === 'create') {
      await this.api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace },
          spec: { holderIdentity: identity, leaseDurationSeconds: this.opts.leaseDurationSeconds, acquireTime: stamp, renewTime: stamp, leaseTransitions: 0 },
        },
      });
    } else {
      const spec = lease!.spec ?? {};
      if (action === 'takeover') {
        spec.acquireTime = stamp;
        spec.leaseTransitions = (spec.leaseTransitions ?? 0) + 1;
      }
      spec.holderIdentity = identity;
      spec.leaseDurationSeconds = this.opts.leaseDurationSeconds;
      spec.renewTime = stamp;
      // A conflict here (409) means another replica wrote first: this round is lost.
      await this.api.replaceNamespacedLease({ namespace, name, body: { ...lease!, spec } });
    }
    this.lastRenewed = now;
    this.setLeading(true);
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.log.info({ identity: this.opts.identity, lease: this.opts.name }, leading ? 'became the leader' : 'no longer the leader');
    this.onChange(leading);
  }
}
