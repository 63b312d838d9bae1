/**
 * `npm run vectors:gen`: generates Lockstep's own vector families from fixed seeds and writes
 * `vectors/<family>.new.json` for human review (gitignored). With `--write` it overwrites the
 * committed `vectors/<family>.json` instead. `--family <name>` limits the run to one family.
 *
 * Generation uses the node provider (fast) and impl/; every vector lists the exact random draws
 * each operation consumes, so checking it needs neither the seeds nor Lockstep's seeded Rng.
 * `npm run vectors:check` regenerates into a temporary directory and diffs against the committed
 * files, then replays every vector with both providers.
 * @module
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { nodeProvider } from '../spec/crypto/node.js';
import { FAMILIES, type FamilyDefinition } from './lib/families.js';
import { serializeFamily } from './lib/format.js';

/** The directory holding the committed vectors. */
export const VECTORS_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Generates the families named (all when `only` is undefined) and returns their file texts. */
export function generateFamilies(only?: string): Map<string, string> {
  const selected: readonly FamilyDefinition[] =
    only === undefined ? FAMILIES : FAMILIES.filter((f) => f.name === only);
  if (selected.length === 0)
    throw new Error(`unknown family "${only ?? ''}"; known: ${FAMILIES.map((f) => f.name).join(', ')}`);
  const out = new Map<string, string>();
  for (const family of selected) out.set(family.name, serializeFamily(family.generate(nodeProvider)));
  return out;
}

/** Writes generated families into `dir` as `<family><suffix>.json`; returns the paths written. */
export function writeFamilies(texts: ReadonlyMap<string, string>, dir: string, suffix: string): string[] {
  const written: string[] = [];
  for (const [name, text] of texts) {
    const file = path.join(dir, `${name}${suffix}.json`);
    writeFileSync(file, text);
    written.push(file);
  }
  return written;
}

function main(): void {
  const { values } = parseArgs({
    options: { write: { type: 'boolean', default: false }, family: { type: 'string' } },
  });
  const texts = generateFamilies(values.family);
  const written = writeFamilies(texts, VECTORS_DIR, values.write ? '' : '.new');
  for (const file of written) {
    const name = path.basename(file);
    const bytes = new TextEncoder().encode(texts.get(name.replace(/(\.new)?\.json$/, '')) ?? '').length;
    console.log(`wrote ${path.relative(process.cwd(), file)} (${bytes} bytes)`);
  }
  if (!values.write)
    console.log('review the *.new.json files; run with --write to replace the committed vectors');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
