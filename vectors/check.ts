/**
 * `npm run vectors:check` (CI): two checks, either of which fails the run with exit status 1.
 *
 * 1. **Regeneration.** Every family is regenerated into a temporary directory and compared byte
 *    for byte with the committed `vectors/<family>.json`; the first difference is shown as the test
 *    id and the JSON path (for example `test invalid-004: input.steps[6].expected.error`).
 * 2. **Replay.** Every committed vector is verified with both providers (noble and node): pqxdh
 *    by recomputing each value, the script families by running each step with a scripted Rng that
 *    returns exactly the listed draws (vectors/lib/script.ts).
 * @module
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { generateFamilies, VECTORS_DIR, writeFamilies } from './generate.js';
import { checkFamily } from './lib/check.js';
import { FAMILIES } from './lib/families.js';
import { describeFamilyDifference, parseFamily } from './lib/format.js';

function main(): number {
  let failed = false;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'lockstep-vectors-'));
  try {
    const regenerated = generateFamilies();
    writeFamilies(regenerated, tmp, '');
    for (const { name } of FAMILIES) {
      const committedPath = path.join(VECTORS_DIR, `${name}.json`);
      if (!existsSync(committedPath)) {
        console.error(`FAIL ${name}: vectors/${name}.json is missing (run npm run vectors:gen -- --write)`);
        failed = true;
        continue;
      }
      const committedText = readFileSync(committedPath, 'utf8');
      const regeneratedText = readFileSync(path.join(tmp, `${name}.json`), 'utf8');
      if (committedText === regeneratedText) {
        console.log(`ok   ${name}: regenerated file is identical`);
        continue;
      }
      failed = true;
      const where = describeFamilyDifference(
        parseFamily(committedText, name),
        parseFamily(regeneratedText, name),
      );
      console.error(
        `FAIL ${name}: regenerated file differs at ${where ?? 'formatting only (whitespace or key order)'}`,
      );
    }
    for (const { name } of FAMILIES) {
      const committedPath = path.join(VECTORS_DIR, `${name}.json`);
      if (!existsSync(committedPath)) continue;
      const file = parseFamily(readFileSync(committedPath, 'utf8'), name);
      for (const provider of [nodeProvider, nobleProvider]) {
        const started = performance.now();
        const failures = checkFamily(provider, file);
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        if (failures.length === 0) {
          console.log(
            `ok   ${name}: ${file.tests.length} vectors replayed with ${provider.name} (${seconds} s)`,
          );
          continue;
        }
        failed = true;
        for (const f of failures)
          console.error(`FAIL ${name} ${f.testId} (${provider.name}): ${f.path}: ${f.message}`);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}

process.exitCode = main();
