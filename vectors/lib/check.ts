/**
 * Verifies committed vectors against impl/ with a given provider: the pqxdh family by recomputing
 * every value, the script families by replaying each step with a scripted Rng (vectors/lib/script.ts).
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { FamilyFile, JsonObject, VectorTest } from './format.js';
import { checkMultideviceFormatsTest } from './multidevice-formats.js';
import { checkPqxdhTest } from './pqxdh.js';
import { replayScript, type CheckFailure } from './script.js';
import { resolveSetup } from './setup.js';

/** A failed vector: the test id, the JSON path (relative to the file) and the reason. */
export interface VectorFailure {
  readonly testId: string;
  readonly path: string;
  readonly message: string;
}

/** Checks one test of `file` with provider `c`; `null` when it passes. */
export function checkTest(c: CryptoProvider, file: FamilyFile, test: VectorTest): CheckFailure | null {
  const index = file.tests.indexOf(test);
  const testPath = `tests[${index}]`;
  if (file.family === 'pqxdh') {
    const failure = checkPqxdhTest(c, test);
    return failure === null ? null : { path: `${testPath}.${failure.path}`, message: failure.message };
  }
  if (file.family === 'multidevice-formats') {
    const failure = checkMultideviceFormatsTest(c, test);
    return failure === null ? null : { path: `${testPath}.${failure.path}`, message: failure.message };
  }
  const { setup, path } = resolveSetup(test.input.setup, file.setups, testPath);
  const failure = replayScript(c, setup, path, test as unknown as JsonObject, `${testPath}.input.steps`);
  if (failure === null) return null;
  const absolute =
    failure.path.startsWith('tests[') || failure.path.startsWith('setups.')
      ? failure.path
      : `${testPath}.${failure.path}`;
  return { path: absolute, message: failure.message };
}

/** Checks every test of `file` accepted by `include`; returns the failures (empty when all pass). */
export function checkFamily(
  c: CryptoProvider,
  file: FamilyFile,
  include: (test: VectorTest) => boolean = () => true,
): VectorFailure[] {
  const failures: VectorFailure[] = [];
  for (const test of file.tests) {
    if (!include(test)) continue;
    try {
      const failure = checkTest(c, file, test);
      if (failure !== null) failures.push({ testId: test.id, ...failure });
    } catch (error) {
      // A malformed vector or an exception inside impl/ is a failure of this vector, not of the run.
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      failures.push({ testId: test.id, path: `tests[${file.tests.indexOf(test)}]`, message });
    }
  }
  return failures;
}
