/**
 * The regression corpus (simulator/regressions/corpus.json): every seed that once broke a property
 * or made the engines diverge is replayed and must now pass every property. `npm test` runs each
 * entry on its recorded engine; `npm run test:full` also runs it on `both`. An entry may name a
 * security mode (`spec` runs every hardening off) and a number of random adversary actions; a run
 * with an adversary must keep every security oracle and the property it once broke (the attack may
 * break other honest-run properties, as `lockstep sim --adversary` reports).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { securityOptions, type SecurityMode } from '../spec/security-mode.js';
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
  /** The devices' security switches; absent: the preset's (hardened). */
  readonly mode?: SecurityMode;
  /** Random adversary actions drawn from the seed; absent: an honest run. */
  readonly adversary?: number;
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
  const config = presetConfig(entry.preset, entry.seed, {
    engine,
    faults: { ...drawn, ...entry.faults },
    ...(entry.mode === undefined ? {} : { security: securityOptions(entry.mode) }),
  });
  const actions = entry.adversary ?? 0;
  return actions === 0
    ? config
    : { ...config, adversary: { name: 'swarm', steps: [], randomActions: actions } };
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
        const security = result.security;
        const problems = result.violations
          .filter((v) => security === null || v.property === entry.violated)
          .map((v) => `${v.property}: ${v.message}`);
        for (const v of security?.violations ?? []) problems.push(`oracle ${v.oracle}: ${v.message}`);
        if (result.divergence !== null) problems.push(`divergence: ${JSON.stringify(result.divergence)}`);
        expect(problems, result.repro).toEqual([]);
      });
    }
  }
});
