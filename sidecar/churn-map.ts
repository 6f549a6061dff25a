// A string-keyed table for entries that come and go all the time: the sidecar's open sessions.
//
// Why not a Map: V8's Map is an ordered hash table that is replaced by a new one each time it
// fills with deleted entries, and the old table keeps a pointer to its successor (for iterators
// still walking it). Under a steady churn of sessions — a reconnect storm — a table that lived
// long enough to be promoted to the old generation is garbage that still points into the young
// one, so each scavenge keeps the newer tables and every session they hold alive, promotes them,
// and so on down the chain until a full GC. Measured on Node 26 (docs/performance.md), a Map of
// open connections raised the GC pause per handshake of a plain Node proxy from 1.4 to 6.6 µs.
// An object in dictionary mode has no such chain: a replaced backing store is plain garbage.

/** What readers of the table (the admin API, the split keeper) may do with it. */
export interface ReadonlyChurnMap<V> {
  readonly size: number;
  get(key: string): V | undefined;
  /** The entries present when called; one deleted before it is reached is skipped, as a Map does. */
  values(): IterableIterator<V>;
}

export class ChurnMap<V> implements ReadonlyChurnMap<V> {
  private readonly entries: Record<string, V> = Object.create(null) as Record<string, V>;
  size = 0;

  get(key: string): V | undefined {
    return this.entries[key];
  }

  /** `value` must not be undefined (undefined is what get() answers for a missing key). */
  set(key: string, value: V): void {
    if (this.entries[key] === undefined) this.size++;
    this.entries[key] = value;
  }

  delete(key: string): boolean {
    if (this.entries[key] === undefined) return false;
    delete this.entries[key];
    this.size--;
    return true;
  }

  *values(): IterableIterator<V> {
    for (const key of Object.keys(this.entries)) {
      const value = this.entries[key];
      if (value !== undefined) yield value;
    }
  }
}
