// At most upstream.maxConcurrentDials dials in flight to one backend; the others wait their turn,
// first come first served. Why: when a backend dies under thousands of sessions, they all fail over
// at once, and a connect each at the same moment overflows the survivor's listen queue (Node's
// default backlog is 511). The kernel drops what does not fit, and the dialling side sends its SYN
// again only after TCP's initial retransmission timeout, one second: the bench's mass failover
// measured 1.2–1.35 s instead of 0.6–0.7 s whenever that happened. Waiting here costs nothing of
// the kind: a slot frees as soon as a dial ends, successful or not. (A backend that times out every
// dial would hold its slots for a timeout each: the pool sends a waiter elsewhere once the
// backend's breaker has opened, backends.ts.)
import type { Cancel } from './dial.js';

export class DialSlots {
  private inFlight = 0;
  /** Dials waiting for a slot, oldest first; each is called with true when it gets one, false when cancelled. */
  private readonly waiting = new Set<(granted: boolean) => void>();

  /** Dials waiting for a slot now (the baton_backend_dials_waiting gauge). */
  get queued(): number {
    return this.waiting.size;
  }

  /**
   * Takes a slot: true at once when one is free (no promise on the common path), else a promise of
   * true once one frees, or false if `cancel` fires first. Every true must be given back with release().
   */
  acquire(limit: number, cancel?: Cancel): true | Promise<boolean> {
    if (this.inFlight < limit && this.waiting.size === 0) {
      this.inFlight++;
      return true;
    }
    return new Promise((resolve) => {
      const waiter = (granted: boolean) => {
        cancel?.off();
        resolve(granted);
      };
      this.waiting.add(waiter);
      cancel?.on(() => {
        this.waiting.delete(waiter);
        resolve(false);
      });
    });
  }

  /** Gives a slot back; the oldest waiters get the free slots (`limit` may have changed since). */
  release(limit: number): void {
    this.inFlight--;
    for (const next of this.waiting) {
      if (this.inFlight >= limit) break;
      this.waiting.delete(next);
      this.inFlight++;
      next(true);
    }
  }
}
