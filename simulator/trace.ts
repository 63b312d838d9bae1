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

/** Accumulates trace lines and vector clocks. */
export class TraceWriter {
  readonly lines: string[] = [];
  private readonly clocks = new Map<string, Record<string, number>>();

  constructor(
    header: TraceHeader,
    private readonly c: CryptoProvider,
    /** Whether events carry vector clocks (full mode). */
    private readonly withClocks: boolean,
  ) {
    this.lines.push(canonicalJson(header));
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

  /** Writes one event at `node`, ticking its clock. */
  event(t: number, seq: number, node: string, kind: string, data: Readonly<Record<string, unknown>>): void {
    let vc: Readonly<Record<string, number>> = {};
    if (this.withClocks) {
      const own = this.clocks.get(node) ?? {};
      own[node] = (own[node] ?? 0) + 1;
      this.clocks.set(node, own);
      // Serialised right below and not kept, so no copy is needed.
      vc = own;
    }
    const event: TraceEvent = { type: 'event', t, seq, node, kind, vc, data };
    this.lines.push(canonicalJson(event, this.c));
  }
}
