/**
 * The regression corpus (simulator/regressions/corpus.json): every seed that once broke a property
 * or made the engines diverge is replayed and must now pass every property. `npm test` runs each
 * entry on its recorded engine; `npm run test:full` also runs it on `both`.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import type { EngineChoice, FaultConfig } from './api.js';
import { drawSwarmFaults } from './faults.js';
import { isPresetName, presetBody, presetConfig } from './presets.js';
import { runSimulation } from './run.js';

interface CorpusEntry {
  readonly id: string;
  readonly preset: string;
  readonly seed: number;
  readonly engine: EngineChoice;
  readonly swarmFaults: boolean;
  readonly faults: Partial<FaultConfig>;
  readonly violated: string;
  readonly cause: string;
}

const corpus = JSON.parse(readFileSync(new URL('./regressions/corpus.json', import.meta.url), 'utf8')) as {
  readonly entries: readonly CorpusEntry[];
};

const FULL = process.env.LOCKSTEP_FULL === '1';

function configOf(entry: CorpusEntry, engine: EngineChoice) {
  if (!isPresetName(entry.preset)) throw new Error(`${entry.id}: unknown preset ${entry.preset}`);
  const base = presetBody(entry.preset).faults;
  const drawn = entry.swarmFaults ? drawSwarmFaults(entry.seed, base) : base;
  return presetConfig(entry.preset, entry.seed, { engine, faults: { ...drawn, ...entry.faults } });
}

describe('regression corpus', () => {
  it('has well-formed, uniquely named entries', () => {
    expect(corpus.entries.length).toBeGreaterThan(0);
    const ids = corpus.entries.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const entry of corpus.entries) {
      expect(isPresetName(entry.preset), entry.id).toBe(true);
      expect(Number.isSafeInteger(entry.seed), entry.id).toBe(true);
      expect(entry.cause.length, entry.id).toBeGreaterThan(20);
    }
  });

  for (const entry of corpus.entries) {
    const engines: EngineChoice[] = FULL && entry.engine !== 'both' ? [entry.engine, 'both'] : [entry.engine];
    for (const engine of engines) {
      it(`${entry.id} (once violated ${entry.violated}) passes on ${engine}`, { timeout: 120_000 }, () => {
        const result = runSimulation(configOf(entry, engine), { crypto: nodeProvider });
        const problems = result.violations.map((v) => `${v.property}: ${v.message}`);
        if (result.divergence !== null) problems.push(`divergence: ${JSON.stringify(result.divergence)}`);
        expect(problems, result.repro).toEqual([]);
      });
    }
  }
});
