/**
 * Replay (design: "Simulator shape"): re-run a trace from its header — the configuration, and the
 * explicit schedule when the header carries one — and prove the run reproduces the trace byte for
 * byte.
 *
 * A trace written by another format version, or by protocol sources with another behaviour hash,
 * is refused before anything runs, with a message naming both values: silently replaying it under
 * different rules would make a difference look like a bug (or hide one). The header's `commit` is
 * information only and never compared. Pure: no Node APIs, no clock.
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { SimResult, TraceHeader } from './api.js';
import { canonicalJson } from './canonical.js';
import { diffTraces } from './diff.js';
import { runSimulation } from './run.js';
import { BEHAVIOUR_HASH, TRACE_FORMAT_VERSION } from './trace.js';

/** Why a replay failed. */
export type ReplayFailureReason = 'malformed' | 'format-version' | 'behaviour-hash' | 'diverged';

/** The outcome of {@link replayTrace}. */
export type ReplayResult =
  | { readonly ok: true; readonly result: SimResult }
  | {
      readonly ok: false;
      readonly reason: ReplayFailureReason;
      /** A sentence for the user; for a refusal it names the trace's value and this build's. */
      readonly message: string;
      /** For `diverged`: the first differing line (1-based; line 1 is the header). */
      readonly firstDifference?: {
        readonly line: number;
        readonly expected: string;
        readonly actual: string;
        readonly fields: readonly string[];
      };
      /** The re-run, when one happened (`diverged`). */
      readonly result?: SimResult;
    };

/** The header of a trace, or a sentence saying why the first line is not one. */
export function parseTraceHeader(
  line: string | undefined,
): { ok: true; header: TraceHeader } | { ok: false; message: string } {
  if (line === undefined) return { ok: false, message: 'the trace is empty' };
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, message: 'the first line is not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, message: 'the first line is not a JSON object' };
  }
  const record = value as Record<string, unknown>;
  if (record.type !== 'header' || record.format !== 'lockstep-trace') {
    return { ok: false, message: 'the first line is not a lockstep-trace header' };
  }
  if (typeof record.formatVersion !== 'number' || typeof record.behaviourHash !== 'string') {
    return { ok: false, message: 'the header lacks formatVersion or behaviourHash' };
  }
  if (typeof record.config !== 'object' || record.config === null) {
    return { ok: false, message: 'the header lacks a config' };
  }
  if (record.schedule !== null && !Array.isArray(record.schedule)) {
    return { ok: false, message: 'the header schedule is neither null nor a list' };
  }
  // The fields the replay relies on are checked above; the rest of the header is compared
  // byte for byte with the re-run's, so a malformed config cannot replay as a success.
  return { ok: true, header: value as TraceHeader };
}

/** Options of {@link replayTrace}. */
export interface ReplayOptions {
  /**
   * The crypto provider of the re-run (default: the simulator's browser-safe noble provider). The
   * trace is the same with either provider, so a Node caller may pass the faster node:crypto one.
   */
  readonly crypto?: CryptoProvider;
}

/**
 * Re-run the trace given as its lines (header first, no trailing empty line) and compare. The
 * header line is compared without its `commit`; every event line must be identical.
 */
export function replayTrace(lines: readonly string[], options: ReplayOptions = {}): ReplayResult {
  const parsed = parseTraceHeader(lines[0]);
  if (!parsed.ok)
    return { ok: false, reason: 'malformed', message: `not a Lockstep trace: ${parsed.message}` };
  const header = parsed.header;
  if (header.formatVersion !== TRACE_FORMAT_VERSION) {
    return {
      ok: false,
      reason: 'format-version',
      message:
        `REFUSED: the trace has format version ${header.formatVersion} but this build reads and writes ` +
        `format version ${TRACE_FORMAT_VERSION}; replay it with the commit that wrote it` +
        (header.commit === null ? '' : ` (${header.commit})`),
    };
  }
  if (header.behaviourHash !== BEHAVIOUR_HASH) {
    return {
      ok: false,
      reason: 'behaviour-hash',
      message:
        `REFUSED: the trace was recorded with behaviour hash ${header.behaviourHash} but this build's ` +
        `protocol sources hash to ${BEHAVIOUR_HASH}; the rules changed, so the run cannot be expected to ` +
        `reproduce. Replay it with the commit that wrote it` +
        (header.commit === null ? '' : ` (${header.commit})`),
    };
  }
  const crypto = options.crypto === undefined ? {} : { crypto: options.crypto };
  const result =
    header.schedule === null
      ? runSimulation(header.config, crypto)
      : runSimulation(header.config, { ...crypto, schedule: header.schedule });
  // The commit is information only: a trace annotated with another commit still replays.
  const expectedHeader =
    header.commit === result.header.commit
      ? (lines[0] ?? '')
      : canonicalJson({ ...header, commit: result.header.commit });
  const expected = [expectedHeader, ...lines.slice(1)];
  const actual = result.lines;
  const diff = diffTraces(expected, actual);
  if (diff.identical) return { ok: true, result };
  const expectedLine = lineAt(lines, diff.line);
  const actualLine = lineAt(result.lines, diff.line);
  return {
    ok: false,
    reason: 'diverged',
    message:
      `the re-run diverged from the trace at line ${diff.line}` +
      (diff.fields.length > 0 ? ` (fields: ${diff.fields.join(', ')})` : ''),
    firstDifference: { line: diff.line, expected: expectedLine, actual: actualLine, fields: diff.fields },
    result,
  };
}

/** Line `line` (1-based) of a trace, or a marker when the trace ends before it. */
function lineAt(lines: readonly string[], line: number): string {
  return lines[line - 1] ?? '<end of trace>';
}
