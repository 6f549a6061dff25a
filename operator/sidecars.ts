// Talking to the sidecars: read each one's backend set, push the desired one where it differs.
// Bounded concurrency, a timeout per request and a few retries with backoff per sidecar; a sidecar
// that still fails is reported unreachable and tried again on the next reconcile.
import { setTimeout as sleep } from 'node:timers/promises';
import { AdminApiError, AdminClient } from '../common/admin/client.js';
import type { BackendsResponse, PutBackendsRequest } from '../common/admin/contract.js';
import { backoffDelay } from '../common/backoff.js';
import type { SidecarTarget } from './plan.js';

export interface SidecarIo {
  token: string | undefined;
  timeoutMs: number;
  /** Sidecars talked to at the same time. */
  concurrency: number;
  /** Attempts per request (1 = no retry). */
  attempts: number;
  /** Asked before each push: false (leadership lost) stops pushing at once. */
  proceed?: () => boolean;
}

export interface Observed {
  target: SidecarTarget;
  /** Its backend set, or undefined when it did not answer. */
  view?: BackendsResponse;
  error?: string;
}

export type PushResult = { target: SidecarTarget; ok: true } | { target: SidecarTarget; ok: false; error: string };

const RETRY = { initial: 200, max: 2000, multiplier: 2, jitter: 0.2 };

export function observeSidecars(targets: readonly SidecarTarget[], io: SidecarIo): Promise<Observed[]> {
  return mapLimit(targets, io.concurrency, async (target) => {
    try {
      return { target, view: await withRetries(io.attempts, () => client(target, io).backends()) };
    } catch (err) {
      return { target, error: describe(err) };
    }
  });
}

export function pushSidecars(targets: readonly SidecarTarget[], body: PutBackendsRequest, io: SidecarIo): Promise<PushResult[]> {
  return mapLimit(targets, io.concurrency, async (target): Promise<PushResult> => {
    try {
      await withRetries(io.attempts, () => {
        if (io.proceed && !io.proceed()) throw new Error('no longer the leader');
        return client(target, io).putBackends(body);
      });
      return { target, ok: true };
    } catch (err) {
      return { target, ok: false, error: describe(err) };
    }
  });
}

const client = (target: SidecarTarget, io: SidecarIo): AdminClient =>
  new AdminClient({ baseUrl: target.adminUrl, timeoutMs: io.timeoutMs, ...(io.token ? { token: io.token } : {}) });

async function withRetries<T>(attempts: number, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      // A 4xx will not change by asking again (bad token, stale generation, invalid body).
      const final = err instanceof AdminApiError && err.status < 500;
      if (final || attempt + 1 >= attempts) throw err;
      await sleep(backoffDelay(attempt, RETRY));
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof AdminApiError) return err.message;
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

/** Runs fn over items with at most `limit` at once; results in input order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
