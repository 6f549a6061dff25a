// Per-session bookkeeping of requests and answers, for sessions with a codec. Pure: no sockets,
// time passed in. It decides what to replay after a failover, which answers are duplicates, and
// what to do with a client's answer to a call from a backend that has died.

/** Counters per codec, summed over sessions (exported as metrics). */
export interface CodecStats {
  tracked: number;
  replayed: number;
  duplicateAnswers: number;
  timeouts: number;
  /** Dropped from tracking because the per-session count or byte limit was reached. */
  evicted: number;
  orphanAnswers: number;
  unknownAnswers: number;
  malformed: number;
  /** Protocol state replayed to a new backend (a resume started). */
  resumes: number;
  /** Resumes the new backend answered: the session went on there. */
  resumed: number;
  /** The new backends' answers to a replay, dropped (the client already had them). */
  swallowed: number;
  /** Resumes the new backend refused (the client got the protocol's refusal). */
  resumeRefusals: number;
  /** Sessions closed with 1012 at a backend change because their state could not move. */
  unresumable: number;
}

export function newCodecStats(): CodecStats {
  return {
    tracked: 0,
    replayed: 0,
    duplicateAnswers: 0,
    timeouts: 0,
    evicted: 0,
    orphanAnswers: 0,
    unknownAnswers: 0,
    malformed: 0,
    resumes: 0,
    resumed: 0,
    swallowed: 0,
    resumeRefusals: 0,
    unresumable: 0,
  };
}

export interface TrackerLimits {
  maxRequests: number;
  maxBytes: number;
  timeoutMs: number;
}

/** A request sent to a backend and not yet (fully) answered. A batch carries several ids. */
interface Pending {
  readonly ids: string[];
  readonly data: Buffer;
  readonly isBinary: boolean;
  readonly firstSentAt: number;
  open: number;
}

export type ClientAnswerVerdict = 'forward' | 'orphan' | 'unknown';

export class RequestTracker {
  /** id → its request; a batch appears under each of its ids. */
  private readonly byId = new Map<string, Pending>();
  /** Unanswered requests in the order they were first sent (a Set keeps insertion order). */
  private readonly inOrder = new Set<Pending>();
  /** Ids answered recently: a second answer to one of them is a duplicate. */
  private readonly answered = new Set<string>();
  private bytes = 0;
  /** Calls from backends to the client: id → the backend leg generation that sent it. */
  private readonly backendCalls = new Map<string, number>();

  constructor(
    private readonly limits: TrackerLimits,
    private readonly stats: CodecStats,
  ) {}

  get size(): number {
    return this.inOrder.size;
  }

  get trackedBytes(): number {
    return this.bytes;
  }

  /** A client request has gone to a backend. `data` is copied: socket buffers must not be pinned. */
  requestSent(ids: readonly string[], data: Buffer, isBinary: boolean, now: number): void {
    for (const id of ids) {
      // A reused id starts a new exchange: its next answer is not a duplicate.
      this.answered.delete(id);
      const previous = this.byId.get(id);
      if (previous) this.settle(previous, id);
    }
    const entry: Pending = { ids: ids.slice(), data: Buffer.from(data), isBinary, firstSentAt: now, open: ids.length };
    for (const id of ids) this.byId.set(id, entry);
    this.inOrder.add(entry);
    this.bytes += entry.data.length;
    this.stats.tracked++;
    while (this.inOrder.size > this.limits.maxRequests || (this.bytes > this.limits.maxBytes && this.inOrder.size > 1)) {
      this.forget(this.inOrder.values().next().value!);
      this.stats.evicted++;
    }
  }

  /** A backend answered: true = deliver it to the client; false = a duplicate, drop it. */
  answer(ids: readonly string[]): boolean {
    let fresh = false;
    for (const id of ids) {
      const entry = this.byId.get(id);
      if (entry) {
        this.settle(entry, id);
        this.remember(id);
        fresh = true;
      } else if (!this.answered.has(id)) {
        fresh = true; // not tracked (evicted, timed out, or never a request we saw): let it through
        this.remember(id);
      }
    }
    if (!fresh) this.stats.duplicateAnswers++;
    return fresh;
  }

  /** Unanswered requests, oldest first, for replay to a new backend. */
  replay(send: (data: Buffer, isBinary: boolean) => void): number {
    let n = 0;
    for (const entry of this.inOrder) {
      send(entry.data, entry.isBinary);
      n++;
    }
    this.stats.replayed += n;
    return n;
  }

  /** Forgets requests unanswered for longer than the timeout. */
  expire(now: number): void {
    for (const entry of this.inOrder) {
      if (now - entry.firstSentAt < this.limits.timeoutMs) break; // in send order: the rest are younger
      this.forget(entry);
      this.stats.timeouts++;
    }
  }

  /** A backend sent the client a call (OCPP: the central system calling the charger). */
  backendCalled(ids: readonly string[], legGeneration: number): void {
    for (const id of ids) this.backendCalls.set(id, legGeneration);
    // Bounded like the client side; the oldest calls are forgotten first.
    while (this.backendCalls.size > this.limits.maxRequests) {
      this.backendCalls.delete(this.backendCalls.keys().next().value!);
    }
  }

  /** The client answers a backend's call: from the current backend, an old one, or unknown. */
  clientAnswered(ids: readonly string[], legGeneration: number): ClientAnswerVerdict {
    let verdict: ClientAnswerVerdict = 'unknown';
    for (const id of ids) {
      const from = this.backendCalls.get(id);
      if (from === undefined) continue;
      this.backendCalls.delete(id);
      verdict = from === legGeneration ? 'forward' : 'orphan';
    }
    if (verdict === 'unknown') this.stats.unknownAnswers++;
    if (verdict === 'orphan') this.stats.orphanAnswers++;
    return verdict;
  }

  private settle(entry: Pending, id: string): void {
    this.byId.delete(id);
    if (--entry.open === 0 && this.inOrder.delete(entry)) this.bytes -= entry.data.length;
  }

  private forget(entry: Pending): void {
    for (const id of entry.ids) if (this.byId.get(id) === entry) this.byId.delete(id);
    if (this.inOrder.delete(entry)) this.bytes -= entry.data.length;
  }

  private remember(id: string): void {
    this.answered.add(id);
    if (this.answered.size > this.limits.maxRequests) this.answered.delete(this.answered.values().next().value!);
  }
}
