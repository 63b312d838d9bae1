import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { runSimulation } from './run.js';
import { TRACE_FORMAT_VERSION } from './trace.js';

describe('trace format', () => {
  const schema = JSON.parse(readFileSync(new URL('./trace.schema.json', import.meta.url), 'utf8')) as object;
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

  it(`every line of a full trace matches simulator/trace.schema.json (format version ${TRACE_FORMAT_VERSION})`, () => {
    const result = runSimulation(presetConfig('smoke', 31, { bugs: ['deliver-twice'] }), {
      crypto: nodeProvider,
    });
    for (const line of result.lines) {
      const ok = validate(JSON.parse(line));
      if (!ok) throw new Error(`${line.slice(0, 200)}\n${JSON.stringify(validate.errors)}`);
    }
    expect(result.lines.some((l) => l.includes('"kind":"check"'))).toBe(true);
  });

  it('a summary trace has the header, hourly summaries, checks and the end counters only', () => {
    const result = runSimulation(presetConfig('smoke', 32, { traceMode: 'summary' }), {
      crypto: nodeProvider,
    });
    const kinds = new Set(result.lines.slice(1).map((l) => (JSON.parse(l) as { kind: string }).kind));
    expect(
      [...kinds].every((k) =>
        [
          'setup',
          'summary',
          'faults-on',
          'heal',
          'converged',
          'stale-epoch',
          'end',
          'fault',
          'check',
        ].includes(k),
      ),
    ).toBe(true);
    for (const line of result.lines) expect(validate(JSON.parse(line))).toBe(true);
  });

  it('no key, plaintext or ciphertext bytes appear: bytes only as fingerprints, texts not at all', () => {
    const result = runSimulation(presetConfig('smoke', 33), { crypto: nodeProvider });
    const text = result.lines.slice(1).join('\n');
    expect(text).not.toMatch(/~mk[0-9a-f]{12}~/);
    expect(text).not.toMatch(/[0-9a-f]{66}/);
  });
});
