// Starting many planned migrations without a storm: the one pacing loop that a drain and a split
// share (sidecar.ts, split-keeper.ts).
import { setTimeout as sleep } from 'node:timers/promises';
import type { DrainPace } from './backends.js';
import { nextStartAt } from './balancing/split.js';

/**
 * Migrations under way at once when a backend is drained or removed: bounds the dials (no
 * reconnect storm) while letting many sessions wait out their old backend's quiet period together.
 */
const MIGRATION_CONCURRENCY = 128;

/**
 * Starts `start` on each item `next` gives: at most MIGRATION_CONCURRENCY under way, one every
 * 1/rate s when `pace` has a rate (read each time: a later request may change it mid-way), all at
 * once past its deadline. A schedule rather than a sleep per item, so time lost to a busy event
 * loop is made up (at most one second's worth at once) and the rate asked is the rate achieved.
 */
export async function runPaced<T>(next: () => T | undefined, start: (item: T) => Promise<void>, pace: () => DrainPace): Promise<void> {
  const running = new Set<Promise<void>>();
  let nextAt = Date.now();
  for (;;) {
    while (running.size >= MIGRATION_CONCURRENCY) await Promise.race(running);
    const item = next();
    if (item === undefined) break;
    const p: Promise<void> = start(item).then(() => void running.delete(p));
    running.add(p);
    const { rate, deadlineAt = Infinity } = pace();
    if (!rate) continue;
    nextAt = nextStartAt(nextAt, Date.now(), rate);
    const wait = Math.min(nextAt, deadlineAt) - Date.now();
    if (wait > 0) await sleep(wait);
  }
  await Promise.all(running);
}
