/**
 * Replays Lockstep's own committed vectors (vectors/<family>.json) against impl/ with both
 * providers: pqxdh by recomputing every value, the script families step by step with a scripted Rng
 * holding exactly the listed draws (vectors/lib/script.ts). Each test title carries the vector's
 * rule IDs. The last block proves the checker can fail: tampering with one expected byte, one draw,
 * or the number of draws is caught. Regeneration (the byte-for-byte diff) is `npm run vectors:check`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { ERROR_RULES, type ErrorCode } from '../spec/errors.js';
import { checkTest } from './lib/check.js';
import { FAMILIES } from './lib/families.js';
import {
  parseFamily,
  serializeFamily,
  type FamilyFile,
  type Json,
  type JsonObject,
  type VectorTest,
} from './lib/format.js';

const VECTORS_DIR = path.dirname(fileURLToPath(import.meta.url));
const PROVIDERS: readonly CryptoProvider[] = [nodeProvider, nobleProvider];

function load(name: string): { readonly file: FamilyFile; readonly text: string } {
  const text = readFileSync(path.join(VECTORS_DIR, `${name}.json`), 'utf8');
  return { file: parseFamily(text, name), text };
}

const loaded = FAMILIES.map(({ name }) => ({ name, ...load(name) }));

function title(test: VectorTest): string {
  const error = test.error === undefined ? '' : ` ${test.error}`;
  return `${test.id}${error} [${test.rules.join(', ')}]`;
}

for (const { name, file, text } of loaded) {
  describe(`vectors/${name}.json`, () => {
    it('is in canonical form (2-space JSON, trailing newline) with unique ids', () => {
      expect(serializeFamily(file)).toBe(text);
      expect(new Set(file.tests.map((t) => t.id)).size).toBe(file.tests.length);
      for (const test of file.tests) expect(test.id.startsWith(`${name}-`)).toBe(true);
    });

    it('pairs every expected error with the rule spec/errors.ts maps it to', () => {
      const pairs: Array<[string, string]> = [];
      const visit = (value: Json | undefined): void => {
        if (Array.isArray(value)) value.forEach(visit);
        else if (typeof value === 'object' && value !== null) {
          const o = value as JsonObject;
          if (typeof o.error === 'string' && typeof o.rule === 'string') pairs.push([o.error, o.rule]);
          Object.values(o).forEach(visit);
        }
      };
      visit(file as unknown as Json);
      for (const [code, rule] of pairs) expect(ERROR_RULES[code as ErrorCode]).toBe(rule);
      for (const test of file.tests)
        if (test.error !== undefined) expect(test.rules).toContain(ERROR_RULES[test.error as ErrorCode]);
    });

    for (const provider of PROVIDERS) {
      describe(`replayed with the ${provider.name} provider`, () => {
        for (const test of file.tests) {
          it(title(test), () => {
            expect(checkTest(provider, file, test)).toBeNull();
          });
        }
      });
    }
  });
}

/** A deep copy of a family with one test replaced by `edit(copy of that test)`. */
function tampered(
  file: FamilyFile,
  id: string,
  edit: (test: { -readonly [K in keyof VectorTest]: VectorTest[K] }) => void,
): {
  readonly file: FamilyFile;
  readonly test: VectorTest;
} {
  const copy = JSON.parse(JSON.stringify(file)) as FamilyFile;
  const test = copy.tests.find((t) => t.id === id);
  if (test === undefined) throw new Error(`no test ${id}`);
  edit(test);
  return { file: copy, test };
}

/** Flips the lowest bit of the hex byte at `byteIndex` of a hex string. */
function flipHexByte(hexText: string, byteIndex: number): string {
  const byte = Number.parseInt(hexText.slice(2 * byteIndex, 2 * byteIndex + 2), 16) ^ 1;
  return `${hexText.slice(0, 2 * byteIndex)}${byte.toString(16).padStart(2, '0')}${hexText.slice(2 * byteIndex + 2)}`;
}

type MutableStep = { [key: string]: Json };

function stepOf(test: VectorTest, index: number): MutableStep {
  const steps = (test.input as { readonly steps: readonly MutableStep[] }).steps;
  const step = steps[index];
  if (step === undefined) throw new Error(`no step ${index}`);
  return step;
}

describe('the checker fails on tampered vectors', () => {
  const transcript = loaded.find((f) => f.name === 'transcript')?.file;
  const pqxdh = loaded.find((f) => f.name === 'pqxdh')?.file;
  const invalid = loaded.find((f) => f.name === 'invalid')?.file;
  if (transcript === undefined || pqxdh === undefined || invalid === undefined)
    throw new Error('families missing');

  it('one flipped byte of an expected message is reported at its path [WP-DR-05]', () => {
    const { file, test } = tampered(transcript, 'transcript-001', (t) => {
      const step = stepOf(t, 1);
      const expected = step.expected as { message: string };
      step.expected = { ...expected, message: flipHexByte(expected.message, 40) };
    });
    expect(checkTest(nodeProvider, file, test)).toMatchObject({
      path: 'tests[0].input.steps[1].expected.message',
    });
  });

  it('one flipped byte of an expected plaintext is reported [WP-DR-04]', () => {
    const { file, test } = tampered(transcript, 'transcript-001', (t) => {
      const step = stepOf(t, 4);
      step.expected = { plaintext: flipHexByte((step.expected as { plaintext: string }).plaintext, 0) };
    });
    expect(checkTest(nodeProvider, file, test)).toMatchObject({
      path: 'tests[0].input.steps[4].expected.plaintext',
    });
  });

  it('a changed draw changes the outcome [WP-KEYS-09]', () => {
    const { file, test } = tampered(transcript, 'transcript-001', (t) => {
      const step = stepOf(t, 0);
      const draws = step.draws as string[];
      step.draws = [flipHexByte(draws[0] ?? '', 3), ...draws.slice(1)];
    });
    expect(checkTest(nodeProvider, file, test)).toMatchObject({
      path: 'tests[0].input.steps[0].expected.base_key',
    });
  });

  it('a missing draw and a left-over draw are both reported [WP-KEYS-09, WP-PQXDH-04, WP-DR-06]', () => {
    const fewer = tampered(transcript, 'transcript-001', (t) => {
      const step = stepOf(t, 0);
      step.draws = (step.draws as string[]).slice(0, 2);
    });
    expect(checkTest(nodeProvider, fewer.file, fewer.test)).toMatchObject({
      path: 'tests[0].input.steps[0].draws',
    });
    const more = tampered(transcript, 'transcript-001', (t) => {
      const step = stepOf(t, 4);
      step.draws = [...(step.draws as string[]), '00'.repeat(32)];
    });
    expect(checkTest(nodeProvider, more.file, more.test)).toMatchObject({
      path: 'tests[0].input.steps[4].draws',
      message: '1 listed draw(s) were not consumed',
    });
  });

  it('a changed expected error code is reported [WP-KEYS-02]', () => {
    const { file, test } = tampered(invalid, 'invalid-004', (t) => {
      const steps = (t.input as { readonly steps: readonly MutableStep[] }).steps;
      const last = steps[steps.length - 1];
      if (last === undefined) throw new Error('no steps');
      last.expected = { error: 'KEY_LOW_ORDER', rule: 'WP-KEYS-03' };
    });
    expect(checkTest(nodeProvider, file, test)?.path).toMatch(
      /^tests\[3\]\.input\.steps\[\d+\]\.expected\.error$/,
    );
  });

  it('one flipped byte of a PQXDH root key is reported [WP-PQXDH-03]', () => {
    const { file, test } = tampered(pqxdh, 'pqxdh-001', (t) => {
      const expected = t.expected as { root_key: string };
      t.expected = { ...t.expected, root_key: flipHexByte(expected.root_key, 0) };
    });
    expect(checkTest(nobleProvider, file, test)).toMatchObject({ path: 'tests[0].expected.root_key' });
  });
});
