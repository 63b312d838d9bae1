/**
 * The trace format (simulator/TRACE-FORMAT.md, simulator/trace.schema.json): NDJSON, a header line
 * then one line per event, every line canonical JSON (simulator/canonical.ts: sorted keys, no
 * whitespace, bytes only as fingerprints).
 *
 * ```text
 * {"behaviourHash":…,"commit":null,"config":{…},"format":"lockstep-trace","formatVersion":3,"schedule":…,"type":"header"}
 * {"data":{…},"kind":"step","node":"u0/1","seq":17,"t":1203,"type":"event","vc":{"server":9,"u0/1":5}}
 * ```
 *
 * Events carry simulated time `t`, the queue sequence number `seq` of the event that caused them,
 * the node, a kind, a vector clock (node → count, ShiViz style; empty in summary mode) and
 * kind-specific data: message ids, sizes, counters, fingerprints, the rule ID of every error and
 * check, and (full mode) the node's abstract state.
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { ScheduleEntry, SimConfig, TraceEvent, TraceHeader } from './api.js';
import { BEHAVIOUR_HASH } from './behaviour-hash.js';
import { canonicalJson } from './canonical.js';

export { BEHAVIOUR_HASH };

/** The trace format version this build writes and replays. */
export const TRACE_FORMAT_VERSION = 3;

/** The header line of a run. */
export function traceHeader(config: SimConfig, schedule: readonly ScheduleEntry[] | null): TraceHeader {
  return {
    type: 'header',
    format: 'lockstep-trace',
    formatVersion: TRACE_FORMAT_VERSION,
    behaviourHash: BEHAVIOUR_HASH,
    config,
    schedule,
    commit: null,
  };
}

/** An event's data, or a function that computes it when the line is written (see {@link TraceWriter}). */
export type EventData = Readonly<Record<string, unknown>> | (() => Readonly<Record<string, unknown>>);

/** An event recorded but not serialised yet. */
interface PendingEvent {
  readonly t: number;
  readonly seq: number;
  readonly node: string;
  readonly kind: string;
  readonly vc: Readonly<Record<string, number>>;
  readonly data: EventData;
}

/**
 * Accumulates trace lines and vector clocks. Events are recorded as they happen (vector clocks
 * included) and serialised the first time {@link TraceWriter.lines} is read, in order; an event
 * whose data is a function has it computed then. A run whose trace nobody reads (a passing swarm
 * seed) never pays for serialisation or for what such functions compute (abstract-state deltas).
 */
export class TraceWriter {
  private readonly written: string[] = [];
  private readonly pending: PendingEvent[] = [];
  private readonly clocks = new Map<string, Record<string, number>>();

  constructor(
    header: TraceHeader,
    private readonly c: CryptoProvider,
    /** Whether events carry vector clocks (full mode). */
    private readonly withClocks: boolean,
  ) {
    this.written.push(canonicalJson(header));
  }

  /** Every line so far, the header first. */
  get lines(): readonly string[] {
    for (const e of this.pending) {
      const data = typeof e.data === 'function' ? e.data() : e.data;
      const event: TraceEvent = {
        type: 'event',
        t: e.t,
        seq: e.seq,
        node: e.node,
        kind: e.kind,
        vc: e.vc,
        data,
      };
      this.written.push(canonicalJson(event, this.c));
    }
    this.pending.length = 0;
    return this.written;
  }

  /** The node's current vector clock (a copy), for a packet it sends. */
  clockOf(node: string): Readonly<Record<string, number>> {
    return { ...(this.clocks.get(node) ?? {}) };
  }

  /** Merges a received clock into the node's clock (happened-before edge). */
  receive(node: string, clock: Readonly<Record<string, number>> | undefined): void {
    if (!this.withClocks || clock === undefined) return;
    const own = this.clocks.get(node) ?? {};
    for (const [k, v] of Object.entries(clock)) if ((own[k] ?? 0) < v) own[k] = v;
    this.clocks.set(node, own);
  }

  /**
   * Records one event at `node`, ticking its clock. Its data must not change afterwards (it is
   * serialised later); a function is called once, when the lines are read, in event order.
   */
  event(t: number, seq: number, node: string, kind: string, data: EventData): void {
    let vc: Readonly<Record<string, number>> = {};
    if (this.withClocks) {
      const own = this.clocks.get(node) ?? {};
      own[node] = (own[node] ?? 0) + 1;
      this.clocks.set(node, own);
      // The clock keeps ticking: the line gets a copy of it as it is now.
      vc = { ...own };
    }
    this.pending.push({ t, seq, node, kind, vc, data });
  }
}
