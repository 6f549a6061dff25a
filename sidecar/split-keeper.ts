// The I/O of a split (PUT /v1/backends `split`: a share of the sessions per group of backends, by a
// label). The decisions are balancing/split.ts's; this keeps the split in force, places new
// sessions, fences dials to a group, and works through the planned moves at the split's rate by
// the sessions' planned migration (codec replay included). See docs/sessions.md.
import type { z } from 'zod';
import type { SplitSchema, SplitView } from '../common/admin/contract.js';
import type { Logger } from '../common/logger.js';
import type { Backend } from './backends.js';
import { keyRank } from './balancing/choose.js';
import type { ReadonlyChurnMap } from './churn-map.js';
import { groupForNewSession, planMoves, splitTargets, type SplitMember } from './balancing/split.js';
import { runPaced } from './paced.js';
import type { Session } from './session.js';

/** How stale the count of sessions per group may be when a new session is placed. */
const RECOUNT_MS = 100;

/** What the keeper reads of the sidecar. */
export interface SplitHost {
  readonly sessions: ReadonlyChurnMap<Session>;
  backends(): Iterable<Backend>;
  backend(id: string): Backend | undefined;
  stopping(): boolean;
  readonly log: Logger;
}

/** A dial's fence: the backends outside the session's group; strict = fail rather than use them. */
export interface Fence {
  outside: ReadonlySet<string>;
  strict: boolean;
}

interface InForce {
  spec: z.output<typeof SplitSchema>;
  weights: number[];
  /** Group index by label value. */
  index: Map<string, number>;
}

export class SplitKeeper {
  /** The split in force, or null: every backend serves every session. */
  private split: InForce | null = null;
  /** Sessions per group, as counts() last counted them plus the sessions placed since. */
  private counted: { at: number; counts: number[] } | null = null;
  /** New sessions whose backend is being dialled, by the group chosen for them. */
  private readonly arriving = new Map<string, number>();
  /** Sessions the split moves to another group (index), until they are there. */
  private readonly planned = new Map<string, number>();
  /** Planned moves not yet started, in plan order; `deferred` failed or found the session busy. */
  private waiting: string[] = [];
  private deferred: string[] = [];
  /** Planned moves under way (session.migrate called). */
  private readonly migrating = new Set<string>();
  private running = false;

  constructor(private readonly host: SplitHost) {}

  /**
   * Puts a split in force (or ends it, when omitted). Only a change of the groups or weights moves
   * live sessions: the fewest moves that reach the new share, started at the split's rate.
   */
  apply(spec: z.output<typeof SplitSchema> | undefined): void {
    const before = this.split;
    this.counted = null;
    if (spec === undefined) {
      if (before) this.host.log.info({ label: before.spec.label }, 'split ended');
      this.split = null;
      this.waiting = [];
      this.deferred = [];
      this.planned.clear();
      return;
    }
    const weights = spec.groups.map((g) => g.weight);
    const sameShare = before !== null && before.spec.label === spec.label && JSON.stringify(before.spec.groups) === JSON.stringify(spec.groups);
    this.split = { spec, weights, index: new Map(spec.groups.map((g, i) => [g.value, i])) };
    if (sameShare) return;
    // Re-planned from where sessions are (or are moving to): moves not yet started are dropped.
    for (const id of [...this.waiting, ...this.deferred]) this.planned.delete(id);
    this.waiting = [];
    this.deferred = [];
    const members: SplitMember[] = [];
    for (const s of this.host.sessions.values()) {
      const group = this.groupOf(s);
      // Sessions of one hash key share a rank, so a split moves them together.
      if (group >= 0) members.push({ id: s.id, rank: keyRank(s.hashKey ?? s.id), group });
    }
    const moves = planMoves(weights, members);
    for (const m of moves) {
      this.planned.set(m.id, m.to);
      this.waiting.push(m.id);
    }
    this.host.log.info({ label: spec.label, groups: spec.groups, sessions: members.length, moves: moves.length, rate: spec.rate }, 'split in force');
    void this.runMoves();
  }

  /** A new session is about to dial: its group, chosen so the share holds (none without a split). */
  arrive(id: string, hashKey: string | undefined): void {
    if (!this.split) return;
    const counts = this.counts();
    const group = groupForNewSession(this.split.weights, counts, keyRank(hashKey ?? id));
    counts[group]!++;
    this.arriving.set(id, group);
  }

  /** The new session's dial is over (it has a backend, or failed). */
  arrived(id: string): void {
    this.arriving.delete(id);
  }

  closed(id: string): void {
    this.planned.delete(id);
  }

  /**
   * The pool's fence: a new or moving session dials only its group's backends (strictly when the
   * split moves it), and a session leaving a backend (failover, drain) stays in that backend's group
   * while the group has a backend for it, so a failover does not change the share.
   */
  fence(session: string, leaving: string | null): Fence | null {
    if (!this.split) return null;
    const left = leaving === null ? -1 : this.backendGroup(this.host.backend(leaving) ?? null);
    const group = this.arriving.get(session) ?? this.planned.get(session) ?? (left >= 0 ? left : undefined);
    if (group === undefined) return null;
    const outside = new Set<string>();
    for (const b of this.host.backends()) if (this.backendGroup(b) !== group) outside.add(b.id);
    return { outside, strict: this.migrating.has(session) };
  }

  /** Moves that failed (no backend in the group yet) or found the session busy: tried again (each DRAIN_RETRY_MS). */
  retryDeferred(): void {
    if (this.deferred.length === 0) return;
    this.waiting.push(...this.deferred);
    this.deferred = [];
    void this.runMoves();
  }

  /** GET /v1/backends: the split in force, with the sessions each group's backends hold. */
  view(): SplitView | undefined {
    const split = this.split;
    if (!split) return undefined;
    const sessions = split.weights.map(() => 0);
    for (const s of this.host.sessions.values()) {
      const g = this.backendGroup(s.backend);
      if (g >= 0) sessions[g]!++;
    }
    const targets = splitTargets(split.weights, sessions.reduce((a, n) => a + n, 0));
    return {
      label: split.spec.label,
      ...(split.spec.rate !== undefined ? { rate: split.spec.rate } : {}),
      groups: split.spec.groups.map((g, i) => ({ value: g.value, weight: g.weight, target: targets[i]!, sessions: sessions[i]! })),
      moving: this.planned.size,
    };
  }

  /** The group a session is in: where it is moving, else its backend's (−1 = none). */
  private groupOf(s: Session): number {
    return this.planned.get(s.id) ?? this.backendGroup(s.backend);
  }

  private backendGroup(backend: Backend | null): number {
    const split = this.split;
    const value = split && backend?.spec.labels[split.spec.label];
    return value === undefined || value === null ? -1 : (split!.index.get(value) ?? -1);
  }

  private groupServes(group: number): boolean {
    for (const b of this.host.backends()) if (b.state === 'enabled' && this.backendGroup(b) === group) return true;
    return false;
  }

  /**
   * Sessions per group, counting new sessions being dialled and planned moves at their destination.
   * A count walks every session, so it is redone at most every RECOUNT_MS (not per handshake in a
   * reconnect storm); the sessions placed in between are added by arrive(), and the ones that left
   * meanwhile are seen at the next count.
   */
  private counts(): number[] {
    const now = Date.now();
    if (this.counted && now - this.counted.at < RECOUNT_MS) return this.counted.counts;
    const counts = this.split!.weights.map(() => 0);
    for (const s of this.host.sessions.values()) {
      const g = this.groupOf(s);
      if (g >= 0) counts[g]!++;
    }
    for (const g of this.arriving.values()) counts[g]!++;
    this.counted = { at: now, counts };
    return counts;
  }

  /** Works through the planned moves at the split's rate; failed or busy ones wait for retryDeferred(). */
  private async runMoves(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const next = (): Session | undefined => {
      while (!this.host.stopping() && this.waiting.length > 0) {
        const id = this.waiting.shift()!;
        const session = this.host.sessions.get(id);
        const to = this.planned.get(id);
        if (!session || to === undefined) continue;
        if (this.backendGroup(session.backend) === to) {
          this.planned.delete(id); // there already (a failover took it)
          continue;
        }
        // Busy, or its group has no backend yet (the canary's pods not ready): not dialled in vain.
        if (this.migrating.has(id) || !this.groupServes(to)) this.deferred.push(id);
        else return session;
      }
      return undefined;
    };
    const move = async (session: Session): Promise<void> => {
      const to = this.planned.get(session.id)!;
      this.migrating.add(session.id);
      const result = await session.migrate('split');
      this.migrating.delete(session.id);
      if (this.planned.get(session.id) !== to) return; // re-planned meanwhile
      if (result === 'failed' || result === 'busy') this.deferred.push(session.id);
      else this.planned.delete(session.id);
    };
    try {
      await runPaced(next, move, () => ({ rate: this.split?.spec.rate }));
    } finally {
      this.running = false;
    }
    if (this.waiting.length > 0) void this.runMoves();
  }
}
