/**
 * A bounded map that drops its least recently used entry when full: the one shape of the memos
 * that spare repeated work on public data (spec/crypto: prepared Kyber keys, XEdDSA verdicts and
 * Edwards keys, node:crypto public-key objects). A memo only: callers give the same answer with or
 * without it. Pure and browser-safe.
 * @module
 */
export class BoundedLru<K, V> {
  private readonly entries = new Map<K, V>();

  /** `capacity` ≥ 1: the most entries kept. */
  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new RangeError('capacity must be a positive integer');
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value under `key`, which becomes the most recently used; undefined when absent. */
  get(key: K): V | undefined {
    const value = this.entries.get(key);
    if (value === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, value);
    return value;
  }

  /** Keeps `value` under `key` as the most recently used, dropping the least recently used if full. */
  set(key: K, value: V): void {
    this.entries.delete(key);
    if (this.entries.size >= this.capacity) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(key, value);
  }
}
