// A list-then-watch cache of one resource that survives everything a watch can do: the client's
// 30 s inactivity abort (client-node's Watch), a server closing the stream, a 410 Gone (relist),
// and the API server going away (retry with backoff, then resume or relist). client-node's own
// informer stops for good on the last of these, so the operator keeps its own loop.
import type { Watch } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '../common/backoff.js';
import type { Logger } from '../common/logger.js';

export type ChangeType = 'added' | 'modified' | 'deleted';
/** Told of every change; `old` is the cached copy a modification replaced. */
export type ChangeHandler<T> = (obj: T, type: ChangeType, old?: T) => void;

export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

/** Lists one page of at most `limit` objects from `continueToken` (undefined: the first page). */
export type ListPage<T> = (page: { limit: number; continueToken: string | undefined }) => Promise<ListResult<T>>;

export interface InformerOptions<T> {
  /** For logs and metrics, e.g. "pods". */
  resource: string;
  /** Collection path to watch, e.g. /api/v1/pods. */
  path: string;
  list: ListPage<unknown>;
  /**
   * What the cache keeps of each object (default: all of it). A projection of the few fields the
   * operator reads keeps memory proportional to what it needs, not to what the API serves.
   */
  project?: (raw: unknown) => T;
  /** Must match the one `list` uses. */
  labelSelector?: string;
  watch: Watch;
  log: Logger;
  /** Called each time the loop recovers from an error (a restart of the watch after backoff). */
  onRestart?: () => void;
}

/** Objects per list page: a relist of a large collection is never one huge response in memory. */
const PAGE_SIZE = 500;
const BACKOFF = { initial: 500, max: 30_000, multiplier: 2, jitter: 0.2 };
/**
 * Asked of the server so it ends each watch cleanly before client-node's 30 s inactivity abort; a
 * spread keeps the operator's watches from reconnecting in lockstep.
 */
const WATCH_SECONDS = { min: 15, max: 25 };
/** A watch that ends sooner than this without delivering anything counts as a failure (no hot loop). */
const MIN_HEALTHY_WATCH_MS = 1000;

class WatchExpired extends Error {}

/** What the cache reads of an object (custom resources arrive as plain JSON, so no client-node class). */
export interface ObjectWithMeta {
  metadata?: { namespace?: string; name?: string; resourceVersion?: string };
}

const keyOf = (obj: ObjectWithMeta): string => `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;

export class Informer<T extends ObjectWithMeta> {
  private objects = new Map<string, T>();
  private resourceVersion = '';
  private readonly handlers: Array<ChangeHandler<T>> = [];
  private stopped = false;
  private readonly stopping = new AbortController();
  private abort: AbortController | undefined;
  private running: Promise<void> | undefined;
  private syncedResolve!: () => void;
  /** Resolves after the first complete list. */
  readonly synced: Promise<void> = new Promise((resolve) => (this.syncedResolve = resolve));
  isSynced = false;

  constructor(private readonly opts: InformerOptions<T>) {}

  onChange(handler: ChangeHandler<T>): void {
    this.handlers.push(handler);
  }

  get(namespace: string, name: string): T | undefined {
    return this.objects.get(`${namespace}/${name}`);
  }

  list(namespace?: string): T[] {
    const all = [...this.objects.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.abort?.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.relist();
        const startedAt = Date.now();
        const delivered = await this.watchOnce();
        if (delivered || Date.now() - startedAt >= MIN_HEALTHY_WATCH_MS) {
          failures = 0;
          continue;
        }
        throw new Error('watch ended at once without events');
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof WatchExpired) {
          // 410 Gone: the resource version is too old (e.g. after an API server restart); relist.
          this.opts.log.info({ resource: this.opts.resource }, 'watch expired; relisting');
          this.resourceVersion = '';
          continue;
        }
        const delay = backoffDelay(failures++, BACKOFF);
        this.opts.log.warn({ resource: this.opts.resource, err: (err as Error).message, retryInMs: delay }, 'list/watch failed; retrying');
        this.opts.onRestart?.();
        await sleep(delay, undefined, { signal: this.stopping.signal }).catch(() => undefined);
      }
    }
  }

  /** Replaces the cache with a fresh list, telling handlers what changed meanwhile. */
  private async relist(): Promise<void> {
    const next = new Map<string, T>();
    let continueToken: string | undefined;
    let resourceVersion = '';
    do {
      // A continue token that expired (410) fails the relist: the loop starts it again from scratch.
      const page = await this.opts.list({ limit: PAGE_SIZE, continueToken });
      for (const raw of page.items) {
        const obj = this.project(raw);
        next.set(keyOf(obj), obj);
      }
      resourceVersion = page.metadata?.resourceVersion ?? '';
      continueToken = page.metadata?._continue || undefined;
    } while (continueToken);
    const previous = this.objects;
    this.objects = next;
    this.resourceVersion = resourceVersion;
    for (const [key, old] of previous) if (!next.has(key)) this.emit(old, 'deleted');
    for (const [key, obj] of next) {
      const old = previous.get(key);
      if (!old) this.emit(obj, 'added');
      else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.emit(obj, 'modified', old);
    }
    if (!this.isSynced) {
      this.isSynced = true;
      this.syncedResolve();
    }
  }

  /** One watch request, until the stream ends; resolves with whether any event arrived. */
  private watchOnce(): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      let delivered = false;
      let expired = false;
      let failure: Error | undefined;
      const timeoutSeconds = WATCH_SECONDS.min + Math.floor(Math.random() * (WATCH_SECONDS.max - WATCH_SECONDS.min + 1));
      const onEvent = (phase: string, obj: T & { code?: number; message?: string }): void => {
        if (phase === 'ERROR') {
          if (obj.code === 410) expired = true;
          else failure = new Error(`watch error ${obj.code ?? ''}: ${obj.message ?? 'unknown'}`);
          return;
        }
        delivered = true;
        const rv = obj.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (phase === 'BOOKMARK') return;
        const kept = this.project(obj);
        const key = keyOf(kept);
        if (phase === 'DELETED') {
          if (this.objects.delete(key)) this.emit(kept, 'deleted');
          return;
        }
        const old = this.objects.get(key);
        this.objects.set(key, kept);
        this.emit(kept, old ? 'modified' : 'added', old);
      };
      const onDone = (err: (Error & { statusCode?: number }) | null): void => {
        this.abort = undefined;
        if (expired || err?.statusCode === 410) reject(new WatchExpired());
        else if (err && err.name !== 'TimeoutError' && !this.stopped) reject(err);
        else if (failure) reject(failure);
        else resolve(delivered);
      };
      this.opts.watch
        .watch(this.opts.path, { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds, labelSelector: this.opts.labelSelector }, onEvent, onDone)
        .then((controller) => {
          this.abort = controller;
          if (this.stopped) controller.abort();
        })
        .catch((err: Error & { statusCode?: number }) => (err.statusCode === 410 ? reject(new WatchExpired()) : reject(err)));
    });
  }

  private project(raw: unknown): T {
    return this.opts.project ? this.opts.project(raw) : (raw as T);
  }

  private emit(obj: T, type: ChangeType, old?: T): void {
    for (const h of this.handlers) {
      try {
        h(obj, type, old);
      } catch (err) {
        this.opts.log.error({ resource: this.opts.resource, err: (err as Error).message }, 'informer handler failed');
      }
    }
  }
}
