import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runAttacksTable } from './attacks-table.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('attacks:table', () => {
  it('the outcome table in WHITEPAPER.md is what the attack scenarios show, and every outcome is the expected one', () => {
    const { exitCode, output } = runAttacksTable(REPO_ROOT, ['--check']);
    expect(output.join('\n'), 'run `npm run attacks:table` and commit the result').not.toMatch(
      /out of date|not the ones|lacks/,
    );
    expect(exitCode).toBe(0);
  });
});
