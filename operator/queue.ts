// A keyed work queue in the manner of client-go's: a key waits at most once however often it is
// added, is never processed by two workers at once (added while processing, it runs again after),
// can be added after a delay, and failed keys come back with per-key exponential backoff.
import { backoffDelay } from '../common/backoff.js';

export interface QueueOptions {
  /** Keys processed at the same time (different keys only). */
  concurrency: number;
  /** Backoff of a key that keeps failing: initial and max delay, ms. */
  retry: { initial: number; max: number };
  /** Called with the queue depth (waiting keys) whenever it changes. */
  onDepth?: (depth: number) => void;
}

export class WorkQueue {
  private readonly waiting = new Set<string>();
  private readonly processing = new Set<string>();
  /** Keys added while being processed: they run again when the current run ends. */
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private active = 0;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly opts: QueueOptions,
    private readonly work: (key: string) => Promise<void>,
  ) {}

  get depth(): number {
    return this.waiting.size;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.waiting.has(key)) return;
    this.waiting.add(key);
    this.opts.onDepth?.(this.waiting.size);
    this.pump();
  }

  /** Adds the key after `ms` unless an earlier delayed add is already pending. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const pending = this.timers.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Adds the key after its backoff, which grows with each call until forget(). */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.addAfter(key, backoffDelay(n, { ...this.opts.retry, multiplier: 2, jitter: 0.1 }));
  }

  /** The key succeeded: its next failure starts the backoff over. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Resolves when nothing waits or runs (for shutdown). */
  idle(): Promise<void> {
    if (this.active === 0 && this.waiting.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.waiting.clear();
    this.dirty.clear();
    this.opts.onDepth?.(0);
    if (this.active === 0) this.wakeIdle();
  }

  private pump(): void {
    while (!this.stopped && this.active < this.opts.concurrency) {
      const key = this.waiting.values().next().value;
      if (key === undefined) break;
      this.waiting.delete(key);
      this.opts.onDepth?.(this.waiting.size);
      this.processing.add(key);
      this.active++;
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    try {
      await this.work(key);
    } catch {
      // The worker reports its own failures; a throw still must not lose the key.
      this.addRateLimited(key);
    } finally {
      this.processing.delete(key);
      this.active--;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
      if (this.active === 0 && this.waiting.size === 0) this.wakeIdle();
    }
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
