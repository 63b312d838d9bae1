/**
 * A Lockstep trace (simulator/TRACE-FORMAT.md) as the visualiser holds it: the header, one compact
 * record per event line, the lanes (the server and every device install), and indexes the views
 * need (events per node, faults, checks, summaries).
 *
 * Abstract-state deltas are the bulk of a full trace (about nine tenths of its bytes), so loading
 * keeps them only as the event's raw line; {@link StateIndex} (trace/state.ts) re-reads the lines of
 * one node when the inspector needs its state. That keeps a 100 000-event trace to a few hundred
 * megabytes of memory at most.
 * @module
 */
import type { TraceHeader } from '../../../simulator/api.js';
import { TRACE_FORMAT_VERSION } from '../../../simulator/trace.js';

/** One trace event, without its abstract-state delta. */
export interface VizEvent {
  /** Position among the events (0-based; the trace line is `index + 2`). */
  readonly index: number;
  readonly t: number;
  readonly seq: number;
  readonly node: string;
  readonly kind: string;
  /** The event's data with `abstractDelta` removed. */
  readonly data: Readonly<Record<string, unknown>>;
  /** The vector clock (node → count); empty in summary mode. */
  readonly vc: Readonly<Record<string, number>>;
  /** Names of the abstract-state parts this event changed (empty: none, or no abstract state). */
  readonly changedParts: readonly string[];
}

/** What a lane stands for: the server, a device install (a clone included), or the attacker. */
export type LaneKind = 'server' | 'device' | 'attacker';

/** One lane of the space-time diagram. */
export interface Lane {
  readonly node: string;
  readonly kind: LaneKind;
  /** The user of a device lane (`u0`), null for the server. */
  readonly user: string | null;
  /** The device number of a device lane (`u0/2` → 2). */
  readonly device: number | null;
  /** Reinstall generation: 0 for the first install, 1 for `u0/2r`, … */
  readonly generation: number;
  /** An attacker-run copy of a device (`u0/1c`): its steps are `attacker-step` events. */
  readonly clone?: boolean;
}

/** A parsed trace. */
export interface TraceModel {
  readonly header: TraceHeader;
  /** The raw event lines (header excluded), for re-reading deltas. */
  readonly lines: readonly string[];
  readonly events: readonly VizEvent[];
  /** Server first, then devices by user, device number and generation, then the attacker. */
  readonly lanes: readonly Lane[];
  /** Event indexes per node, ascending. */
  readonly byNode: ReadonlyMap<string, readonly number[]>;
  /** Indexes of `fault` events and `net` tamper events, ascending. */
  readonly faults: readonly number[];
  /** Indexes of `check` events (failed properties) and `security-violation` events, ascending. */
  readonly checks: readonly number[];
  /** True for a summary-mode trace (peak-day): no per-event state, hourly `summary` events. */
  readonly summaryMode: boolean;
  /** Whether any step or request event carries `data.model` (the model engine ran). */
  readonly hasModelState: boolean;
}

/** A trace that could not be read. */
export class TraceFormatError extends Error {
  override readonly name = 'TraceFormatError';
}

const DEVICE_NODE = /^(u\d+)\/(\d+)(r*)(c?)$/;

/**
 * The node of the attacker's lane. Adversarial runs (simulator/adversary.ts, `lockstep attack`)
 * record the attacker's actions on it; the security oracles' findings (node `oracle`) are drawn
 * on it too, so the attacker's knowledge has one lane.
 */
export const ATTACKER_LANE = 'attacker';

/** The lane a node name stands for, or null for `net`, `sim`, `checker`, `oracle`. */
export function laneOf(node: string): Lane | null {
  if (node === 'server') return { node, kind: 'server', user: null, device: null, generation: 0 };
  if (node === ATTACKER_LANE) return { node, kind: 'attacker', user: null, device: null, generation: 0 };
  const match = DEVICE_NODE.exec(node);
  if (match === null) return null;
  return {
    node,
    kind: 'device',
    user: match[1] ?? '',
    device: Number(match[2]),
    generation: (match[3] ?? '').length,
    ...(match[4] === 'c' ? { clone: true } : {}),
  };
}

const LANE_RANK: Readonly<Record<LaneKind, number>> = { server: 0, device: 1, attacker: 2 };

/**
 * Lane order: the server, then devices by user number, device number and generation (a clone
 * right after the device it copies), then the attacker.
 */
export function compareLanes(a: Lane, b: Lane): number {
  if (a.kind !== b.kind) return LANE_RANK[a.kind] - LANE_RANK[b.kind];
  const userA = Number((a.user ?? 'u0').slice(1));
  const userB = Number((b.user ?? 'u0').slice(1));
  return (
    userA - userB ||
    (a.device ?? 0) - (b.device ?? 0) ||
    a.generation - b.generation ||
    Number(a.clone === true) - Number(b.clone === true)
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Splits trace text into lines; a final newline does not make an empty line. */
export function splitLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Reads and checks the header line. */
export function parseHeader(line: string | undefined): TraceHeader {
  if (line === undefined || line.trim() === '') throw new TraceFormatError('the trace is empty');
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new TraceFormatError('line 1 is not JSON: this is not a Lockstep trace');
  }
  if (!isRecord(value) || value.type !== 'header' || value.format !== 'lockstep-trace') {
    throw new TraceFormatError('line 1 is not a Lockstep trace header (format "lockstep-trace")');
  }
  const version = value.formatVersion;
  if (
    typeof version !== 'number' ||
    !Number.isInteger(version) ||
    version < 1 ||
    version > TRACE_FORMAT_VERSION
  ) {
    throw new TraceFormatError(
      `trace format version ${String(value.formatVersion)} is not supported (this viewer reads versions 1 to ${TRACE_FORMAT_VERSION})`,
    );
  }
  if (!isRecord(value.config)) throw new TraceFormatError('the header has no config');
  return value as unknown as TraceHeader;
}

/** Parses one event line. */
function parseEvent(line: string, index: number): { event: VizEvent; hasModel: boolean } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new TraceFormatError(`line ${index + 2} is not JSON`);
  }
  if (!isRecord(value) || value.type !== 'event') {
    throw new TraceFormatError(`line ${index + 2} is not a trace event`);
  }
  const { t, seq, node, kind } = value;
  if (
    typeof t !== 'number' ||
    typeof seq !== 'number' ||
    typeof node !== 'string' ||
    typeof kind !== 'string'
  ) {
    throw new TraceFormatError(`line ${index + 2} lacks t, seq, node or kind`);
  }
  const data: Record<string, unknown> = isRecord(value.data) ? { ...value.data } : {};
  let changedParts: readonly string[] = [];
  if (isRecord(data.abstractDelta)) changedParts = Object.keys(data.abstractDelta);
  delete data.abstractDelta;
  const vc = isRecord(value.vc) ? (value.vc as Record<string, number>) : {};
  return {
    event: { index, t, seq, node, kind, data, vc, changedParts },
    hasModel: isRecord(data.model),
  };
}

/** Progress callback of {@link parseTraceAsync}: lines read so far of the total. */
export type ParseProgress = (done: number, total: number) => void;

/** Builds the model from parsed events. */
function assemble(
  header: TraceHeader,
  lines: readonly string[],
  events: VizEvent[],
  hasModel: boolean,
): TraceModel {
  const lanes = new Map<string, Lane>();
  const byNode = new Map<string, number[]>();
  const faults: number[] = [];
  const checks: number[] = [];
  for (const event of events) {
    const lane = laneOf(event.node);
    if (lane !== null && !lanes.has(event.node)) lanes.set(event.node, lane);
    let list = byNode.get(event.node);
    if (list === undefined) byNode.set(event.node, (list = []));
    list.push(event.index);
    if (event.kind === 'fault' || (event.kind === 'net' && event.data.action === 'tamper'))
      faults.push(event.index);
    if (event.kind === 'attack') faults.push(event.index);
    if (
      event.kind === 'check' ||
      event.kind === 'divergence' ||
      event.kind === 'not-converged' ||
      event.kind === 'security-violation'
    ) {
      checks.push(event.index);
    }
  }
  // The oracle's findings are the attacker's knowledge: they go on the attacker's lane.
  if (!lanes.has(ATTACKER_LANE) && byNode.has('oracle')) {
    const attacker = laneOf(ATTACKER_LANE);
    if (attacker !== null) lanes.set(ATTACKER_LANE, attacker);
  }
  // A trace always has a server; summary traces name it only in faults, so add it when missing.
  if (!lanes.has('server'))
    lanes.set('server', { node: 'server', kind: 'server', user: null, device: null, generation: 0 });
  return {
    header,
    lines,
    events,
    lanes: [...lanes.values()].sort(compareLanes),
    byNode,
    faults,
    checks,
    summaryMode: header.config.traceMode === 'summary',
    hasModelState: hasModel,
  };
}

/** Parses a whole trace synchronously (tests, small traces). */
export function parseTrace(text: string): TraceModel {
  const all = splitLines(text);
  const header = parseHeader(all[0]);
  const lines = all.slice(1);
  const events: VizEvent[] = [];
  let hasModel = false;
  for (let i = 0; i < lines.length; i++) {
    const parsed = parseEvent(lines[i] ?? '', i);
    events.push(parsed.event);
    hasModel ||= parsed.hasModel;
  }
  return assemble(header, lines, events, hasModel);
}

/**
 * Parses a trace in slices, yielding to the browser between them so a large trace shows progress
 * instead of freezing the page.
 */
export async function parseTraceAsync(text: string, progress?: ParseProgress): Promise<TraceModel> {
  const all = splitLines(text);
  const header = parseHeader(all[0]);
  const lines = all.slice(1);
  const events: VizEvent[] = [];
  let hasModel = false;
  const slice = 5_000;
  for (let start = 0; start < lines.length; start += slice) {
    const end = Math.min(lines.length, start + slice);
    for (let i = start; i < end; i++) {
      const parsed = parseEvent(lines[i] ?? '', i);
      events.push(parsed.event);
      hasModel ||= parsed.hasModel;
    }
    progress?.(end, lines.length);
    if (end < lines.length) await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
  return assemble(header, lines, events, hasModel);
}

/** Re-reads the abstract-state delta of one event from its raw line. */
export function deltaOf(model: TraceModel, index: number): Readonly<Record<string, unknown>> | null {
  const line = model.lines[index];
  if (line === undefined || !line.includes('"abstractDelta"')) return null;
  const value: unknown = JSON.parse(line);
  if (!isRecord(value) || !isRecord(value.data) || !isRecord(value.data.abstractDelta)) return null;
  return value.data.abstractDelta;
}

/** `data.model` of a step or request event when the model engine ran. */
export interface ModelStep {
  /** States during the step: the state before, then after each microstep; ends with `state`. */
  readonly path: readonly string[];
  /** The machine's state after the step, dotted, relative to the machine root. */
  readonly state: string;
}

/** The model state an event records, if any. */
export function modelStepOf(event: VizEvent): ModelStep | null {
  const model = event.data.model;
  if (!isRecord(model)) return null;
  const { path, state } = model;
  if (typeof state !== 'string' || !Array.isArray(path) || !path.every((p) => typeof p === 'string'))
    return null;
  return { path: path as string[], state };
}

/** Simulated time as text: `1.234 s`, `12 min 3.4 s`, `2 h 05 min`. */
export function formatTicks(t: number): string {
  if (t < 60_000) return `${(t / 1000).toFixed(3)} s`;
  if (t < 3_600_000) {
    const minutes = Math.floor(t / 60_000);
    return `${minutes} min ${((t - minutes * 60_000) / 1000).toFixed(1)} s`;
  }
  const hours = Math.floor(t / 3_600_000);
  const minutes = Math.floor((t - hours * 3_600_000) / 60_000);
  return `${hours} h ${String(minutes).padStart(2, '0')} min`;
}

/** Simulated time in a narrow column: `12.345s`, `12:03.4` (min:s), `9360:26:03` (h:min:s). */
export function formatTicksShort(t: number): string {
  if (t < 60_000) return `${(t / 1000).toFixed(3)}s`;
  const seconds = (t % 60_000) / 1000;
  const minutes = Math.floor(t / 60_000);
  if (t < 3_600_000) return `${minutes}:${seconds.toFixed(1).padStart(4, '0')}`;
  const hours = Math.floor(t / 3_600_000);
  return `${hours}:${String(minutes % 60).padStart(2, '0')}:${String(Math.floor(seconds)).padStart(2, '0')}`;
}

/** Whether `value` is a plain object (not an array, not null). */
export function isPlainRecord(value: unknown): value is Record<string, unknown> {
  return isRecord(value);
}
