import { describe, expect, it } from 'vitest';
import { BEHAVIOUR_HASH } from '../simulator/behaviour-hash.js';
import { behaviourFiles, computeBehaviourHash, GENERATED, moduleSource } from './behaviour-hash.js';

describe('behaviour hash', () => {
  it('simulator/behaviour-hash.ts is current (run `npm run behaviour:hash` after changing spec/, impl/, model/ or simulator/)', () => {
    expect(BEHAVIOUR_HASH).toBe(computeBehaviourHash());
  });

  it('hashes the non-test sources of spec/, impl/, model/ and simulator/, not itself', () => {
    const files = behaviourFiles();
    expect(files).toContain('impl/device.ts');
    expect(files).toContain('simulator/run.ts');
    expect(files).not.toContain(GENERATED);
    expect(files.some((f) => f.endsWith('.test.ts'))).toBe(false);
    expect([...files].sort()).toEqual(files);
  });

  it('writes a module that exports the hash', () => {
    expect(moduleSource('ab'.repeat(32))).toContain(`export const BEHAVIOUR_HASH = '${'ab'.repeat(32)}';`);
  });
});
