/**
 * Key material for the generators: each party's keys come from `seededRng` under a label naming the
 * family and setup, so regenerating writes the same bytes. The vectors then carry that material as
 * explicit hex: nothing downstream depends on how it was drawn.
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { seededRng } from '../../spec/rng.js';
import { generatePreKeyState, type PreKeyState, type PreKeyStateOptions } from '../../impl/index.js';
import type { PartyName } from './setup.js';

/** Prefix of every seed label the generators use; bump it only with a new vector format version. */
export const SEED_PREFIX = 'lockstep-vectors/v1';

/** The seed label of a named thing in a family (`lockstep-vectors/v1/<family>/<name>`). */
export function seedLabel(family: string, name: string): string {
  return `${SEED_PREFIX}/${family}/${name}`;
}

/** Generates both parties' key material for a setup. */
export function generateParties(
  c: CryptoProvider,
  family: string,
  setupName: string,
  options: Readonly<Record<PartyName, PreKeyStateOptions>>,
): Record<PartyName, PreKeyState> {
  const party = (name: PartyName): PreKeyState =>
    generatePreKeyState(
      { crypto: c, rng: seededRng(seedLabel(family, `${setupName}/${name}`)) },
      options[name],
    );
  return { alice: party('alice'), bob: party('bob') };
}
