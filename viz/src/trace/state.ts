/**
 * A node's abstract state at any event, rebuilt from the trace's deltas (simulator/TRACE-FORMAT.md,
 * "Abstract state"): each step or request event lists the parts that changed since the node's
 * previous event (`null`: the part disappeared), so applying a node's deltas in order gives its
 * state after each of its events.
 *
 * Rebuilding from the start on every cursor move would re-read thousands of lines in a large trace,
 * so the index keeps a checkpoint (the part map) every {@link CHECKPOINT_EVERY} events of a node,
 * computed the first time a position past it is asked for. A query re-reads at most that many
 * lines. Parts are immutable values, so checkpoints share them.
 * @module
 */
import { deltaOf, type TraceModel } from './model.js';

/** Events of one node between two checkpoints. */
export const CHECKPOINT_EVERY = 64;

/** A node's abstract state: part name → part value. */
export type Parts = ReadonlyMap<string, unknown>;

interface NodeCache {
  /** Event indexes of the node, ascending. */
  readonly events: readonly number[];
  /** checkpoints[k] = state after the node's first `k * CHECKPOINT_EVERY` events. */
  readonly checkpoints: Map<string, unknown>[];
}

/** The abstract state of a node at an event, and what that event changed. */
export interface StateAt {
  /** The node's state after its last event at or before the cursor. */
  readonly parts: Parts;
  /** The node's state before that event. */
  readonly previous: Parts;
  /** The node's event the state belongs to (-1: the node has no event yet). */
  readonly event: number;
}

const EMPTY: Parts = new Map();

function apply(parts: Map<string, unknown>, delta: Readonly<Record<string, unknown>> | null): void {
  if (delta === null) return;
  for (const [key, value] of Object.entries(delta)) {
    if (value === null) parts.delete(key);
    else parts.set(key, value);
  }
}

/** Index of the last element of ascending `list` that is ≤ `value`, or -1. */
export function lastAtOrBefore(list: ArrayLike<number>, value: number): number {
  let lo = 0;
  let hi = list.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid] ?? Infinity) <= value) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** Rebuilds nodes' abstract states on demand. */
export class StateIndex {
  private readonly nodes = new Map<string, NodeCache>();

  constructor(private readonly model: TraceModel) {}

  private cache(node: string): NodeCache {
    let cache = this.nodes.get(node);
    if (cache === undefined) {
      cache = { events: this.model.byNode.get(node) ?? [], checkpoints: [new Map()] };
      this.nodes.set(node, cache);
    }
    return cache;
  }

  /** The state after the node's first `count` events. */
  private stateAfter(cache: NodeCache, count: number): Map<string, unknown> {
    const k = Math.floor(count / CHECKPOINT_EVERY);
    while (cache.checkpoints.length <= k) {
      const last = cache.checkpoints.length - 1;
      const next = new Map(cache.checkpoints[last]);
      for (
        let i = last * CHECKPOINT_EVERY;
        i < (last + 1) * CHECKPOINT_EVERY && i < cache.events.length;
        i++
      ) {
        apply(next, deltaOf(this.model, cache.events[i] ?? -1));
      }
      cache.checkpoints.push(next);
    }
    const parts = new Map(cache.checkpoints[k]);
    for (let i = k * CHECKPOINT_EVERY; i < count; i++)
      apply(parts, deltaOf(this.model, cache.events[i] ?? -1));
    return parts;
  }

  /** The state of `node` after the last of its events at or before event `cursor`. */
  at(node: string, cursor: number): StateAt {
    const cache = this.cache(node);
    const position = lastAtOrBefore(cache.events, cursor);
    if (position < 0) return { parts: EMPTY, previous: EMPTY, event: -1 };
    const previous = this.stateAfter(cache, position);
    const parts = new Map(previous);
    apply(parts, deltaOf(this.model, cache.events[position] ?? -1));
    return { parts, previous, event: cache.events[position] ?? -1 };
  }
}
