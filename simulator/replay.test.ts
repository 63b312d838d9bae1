import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { replayTrace } from './replay.js';
import { runSimulation } from './run.js';

const config = presetConfig('smoke', 3, { engine: 'impl' });
const fresh = runSimulation(config);

/** The trace with its header's field `key` replaced. */
function withHeader(lines: readonly string[], key: string, value: unknown): readonly string[] {
  const header = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
  return [JSON.stringify({ ...header, [key]: value }), ...lines.slice(1)];
}

describe('replayTrace', () => {
  it('reproduces a fresh trace byte for byte', () => {
    expect(fresh.lines.length).toBeGreaterThan(10);
    const replay = replayTrace(fresh.lines);
    expect(replay.ok).toBe(true);
    if (replay.ok) expect(replay.result.lines).toEqual(fresh.lines);
  });

  it('reproduces the same bytes with the node:crypto provider', () => {
    expect(replayTrace(fresh.lines, { crypto: nodeProvider }).ok).toBe(true);
  });

  it('reports a tampered event at its line, with both versions', () => {
    const line = Math.min(7, fresh.lines.length);
    const tampered = [...fresh.lines];
    tampered[line - 1] = (tampered[line - 1] ?? '').replace(
      /"seq":(\d+)/,
      (_, seq: string) => `"seq":${Number(seq) + 1000}`,
    );
    expect(tampered[line - 1]).not.toBe(fresh.lines[line - 1]);
    const replay = replayTrace(tampered);
    expect(replay).toMatchObject({ ok: false, reason: 'diverged', firstDifference: { line } });
    if (!replay.ok) {
      expect(replay.firstDifference?.expected).toBe(tampered[line - 1]);
      expect(replay.firstDifference?.actual).toBe(fresh.lines[line - 1]);
      expect(replay.firstDifference?.fields).toEqual(['seq']);
    }
  });

  it('reports a truncated trace at the first missing line', () => {
    const replay = replayTrace(fresh.lines.slice(0, 5));
    expect(replay).toMatchObject({
      ok: false,
      reason: 'diverged',
      firstDifference: { line: 6, expected: '<end of trace>' },
    });
  });

  it('refuses another behaviour hash loudly, naming both hashes', () => {
    const replay = replayTrace(withHeader(fresh.lines, 'behaviourHash', 'f'.repeat(64)));
    expect(replay).toMatchObject({ ok: false, reason: 'behaviour-hash' });
    if (!replay.ok) {
      expect(replay.message).toContain('REFUSED');
      expect(replay.message).toContain('f'.repeat(64));
      expect(replay.message).toContain(fresh.header.behaviourHash);
    }
  });

  it('refuses another format version loudly, naming both versions', () => {
    const replay = replayTrace(withHeader(fresh.lines, 'formatVersion', fresh.header.formatVersion + 1));
    expect(replay).toMatchObject({ ok: false, reason: 'format-version' });
    if (!replay.ok) {
      expect(replay.message).toContain(`format version ${fresh.header.formatVersion + 1}`);
      expect(replay.message).toContain(`format version ${fresh.header.formatVersion}`);
    }
  });

  it('ignores the informational commit but nothing else in the header', () => {
    expect(replayTrace(withHeader(fresh.lines, 'commit', 'abc123')).ok).toBe(true);
    const otherSeed = withHeader(fresh.lines, 'config', { ...fresh.header.config, seed: 4 });
    expect(replayTrace(otherSeed)).toMatchObject({ ok: false, reason: 'diverged' });
  });

  it('replays a run with an explicit schedule from the schedule its header carries', () => {
    const schedule = fresh.schedule.slice(0, Math.ceil(fresh.schedule.length / 2));
    const explicit = runSimulation(config, { schedule });
    expect(explicit.header.schedule).toEqual(schedule);
    expect(replayTrace(explicit.lines).ok).toBe(true);
  });

  it('rejects a file that is not a trace', () => {
    expect(replayTrace(['not json'])).toMatchObject({ ok: false, reason: 'malformed' });
    expect(replayTrace([])).toMatchObject({ ok: false, reason: 'malformed' });
    expect(replayTrace(['{"type":"event"}'])).toMatchObject({ ok: false, reason: 'malformed' });
  });
});
