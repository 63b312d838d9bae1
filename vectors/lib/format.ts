/**
 * The JSON shape of Lockstep's own vector families (`vectors/<family>.json`, house style rule 10)
 * and the helpers every generator and checker shares: hex edges, canonical serialization, and a
 * structural diff that names the first differing test id and JSON path.
 *
 * Serialization is `JSON.stringify(value, null, 2)` plus a trailing newline. Key order is the
 * insertion order of the objects the generators build, which is fixed by the code, so the same
 * generator always writes the same bytes.
 * @module
 */
import { fromHex, toHex } from '../../spec/hex.js';

/** A JSON value as the vector files hold it. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json };

/** A JSON object. */
export type JsonObject = { readonly [key: string]: Json };

/** Version of the vector file format written by vectors/generate.ts. */
export const VECTOR_FORMAT_VERSION = 1;

/** The provenance line every generated family carries. */
export const GENERATOR_SOURCE = 'Lockstep generator vectors/generate.ts (seeded; draws listed explicitly)';

/** One known-answer test (house style rule 10). */
export interface VectorTest {
  readonly id: string;
  readonly comment: string;
  readonly rules: readonly string[];
  readonly result: 'valid' | 'invalid';
  readonly error?: string;
  readonly input: JsonObject;
  readonly expected: JsonObject;
}

/** A family file: `vectors/<family>.json`. */
export interface FamilyFile {
  readonly family: string;
  readonly version: number;
  readonly source: string;
  /** Shared setups referenced by id from `input.setup` (script families only). */
  readonly setups?: JsonObject;
  readonly tests: readonly VectorTest[];
}

/** Lowercase hex of bytes (the only place bytes become text). */
export function hex(bytes: Uint8Array): string {
  return toHex(bytes);
}

/** Bytes of a lowercase hex string found in a vector; throws on anything else. */
export function unhex(text: Json | undefined, what: string): Uint8Array {
  if (typeof text !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(text)) {
    throw new VectorFormatError(`${what} must be a lowercase hex string`);
  }
  return fromHex(text);
}

/** UTF-8 bytes of a label or plaintext written by a generator. */
export function utf8Bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Thrown when a vector file does not have the documented shape (a broken file, not a failed check). */
export class VectorFormatError extends Error {
  override readonly name = 'VectorFormatError';
}

/** Reads an object field, throwing {@link VectorFormatError} when it is not an object. */
export function objectField(value: Json | undefined, what: string): JsonObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new VectorFormatError(`${what} must be an object`);
  }
  return value as JsonObject;
}

/** Reads an array field. */
export function arrayField(value: Json | undefined, what: string): readonly Json[] {
  if (!Array.isArray(value)) throw new VectorFormatError(`${what} must be an array`);
  return value;
}

/** Reads a string field. */
export function stringField(value: Json | undefined, what: string): string {
  if (typeof value !== 'string') throw new VectorFormatError(`${what} must be a string`);
  return value;
}

/** Reads a non-negative safe integer field. */
export function integerField(value: Json | undefined, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new VectorFormatError(`${what} must be a non-negative integer`);
  }
  return value;
}

/** Reads a boolean field. */
export function booleanField(value: Json | undefined, what: string): boolean {
  if (typeof value !== 'boolean') throw new VectorFormatError(`${what} must be a boolean`);
  return value;
}

/** The canonical text of a family file: 2-space indentation and a trailing newline. */
export function serializeFamily(file: FamilyFile): string {
  return `${JSON.stringify(file, null, 2)}\n`;
}

/** Parses a family file and checks its outer shape (not the contents of each test). */
export function parseFamily(text: string, what: string): FamilyFile {
  const value = objectField(JSON.parse(text) as Json, what);
  stringField(value.family, `${what}: family`);
  integerField(value.version, `${what}: version`);
  stringField(value.source, `${what}: source`);
  if (value.setups !== undefined) objectField(value.setups, `${what}: setups`);
  for (const [i, test] of arrayField(value.tests, `${what}: tests`).entries()) {
    const t = objectField(test, `${what}: tests[${i}]`);
    stringField(t.id, `${what}: tests[${i}].id`);
    stringField(t.comment, `${what}: tests[${i}].comment`);
    arrayField(t.rules, `${what}: tests[${i}].rules`);
    if (t.result !== 'valid' && t.result !== 'invalid') {
      throw new VectorFormatError(`${what}: tests[${i}].result must be "valid" or "invalid"`);
    }
    objectField(t.input, `${what}: tests[${i}].input`);
    objectField(t.expected, `${what}: tests[${i}].expected`);
  }
  return value as unknown as FamilyFile;
}

/** Appends a key to a JSON path (`a.b`, `a[3]`). */
export function joinPath(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

/**
 * The first path at which two JSON values differ (key order included, since the files are
 * compared byte for byte), or `null` when they are identical.
 */
export function firstDifference(a: Json | undefined, b: Json | undefined, path = ''): string | null {
  if (a === b) return null;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null)
    return path === '' ? '(root)' : path;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return path;
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const d = firstDifference(a[i], b[i], joinPath(path, i));
      if (d !== null) return d;
    }
    return null;
  }
  const ao = a as JsonObject;
  const bo = b as JsonObject;
  const aKeys = Object.keys(ao);
  const bKeys = Object.keys(bo);
  const n = Math.max(aKeys.length, bKeys.length);
  for (let i = 0; i < n; i++) {
    const ak = aKeys[i];
    const bk = bKeys[i];
    if (ak !== bk) return joinPath(path, ak ?? bk ?? '?');
    if (ak === undefined) continue;
    const d = firstDifference(ao[ak], bo[ak], joinPath(path, ak));
    if (d !== null) return d;
  }
  return null;
}

/**
 * Locates the first difference between a committed family and a regenerated one as
 * `test <id>: <path>` (or a top-level path), or `null` when they are identical.
 */
export function describeFamilyDifference(committed: FamilyFile, regenerated: FamilyFile): string | null {
  const c = committed as unknown as JsonObject;
  const r = regenerated as unknown as JsonObject;
  for (const key of ['family', 'version', 'source', 'setups']) {
    const d = firstDifference(c[key], r[key], key);
    if (d !== null) return d;
  }
  const n = Math.max(committed.tests.length, regenerated.tests.length);
  for (let i = 0; i < n; i++) {
    const ct = committed.tests[i] as unknown as Json | undefined;
    const rt = regenerated.tests[i] as unknown as Json | undefined;
    const d = firstDifference(ct, rt, '');
    if (d !== null) {
      const id = committed.tests[i]?.id ?? regenerated.tests[i]?.id ?? `#${i}`;
      return `test ${id}: ${d}`;
    }
  }
  const d = firstDifference(c, r, '');
  return d === null ? null : `top level: ${d}`;
}
