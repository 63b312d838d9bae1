/**
 * Runs every external known-answer vector in vectors/external/ against both crypto providers.
 *
 * The expected values come from the standards (RFC 7748, RFC 5869, RFC 4231, RFC 8032,
 * NIST SP 800-38A) and from libsignal's own tests, each file naming its provenance; nothing here is
 * produced by Lockstep's code. The file format is checked too (house style rule 10).
 */
import { createCipheriv } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../spec/bytes.js';
import { decryptBody } from '../spec/cipher.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { xeddsaVerify } from '../spec/crypto/xeddsa.js';
import { ERROR_RULES, type ErrorCode } from '../spec/errors.js';
import { fromHex, toHex } from '../spec/hex.js';
import { deriveMessageKeys, kdfCk } from '../spec/kdf.js';
import { dh, encodeEcPublicKey, publicKeyFromPrivate } from '../spec/keys.js';

type Scalar = string | number | boolean;

interface VectorTest {
  readonly id: string;
  readonly comment: string;
  readonly rules: readonly string[];
  readonly result: 'valid' | 'invalid';
  readonly error?: string;
  readonly input: Readonly<Record<string, Scalar>>;
  readonly expected: Readonly<Record<string, Scalar>>;
}

interface VectorFile {
  readonly fileName: string;
  readonly family: string;
  readonly version: number;
  readonly source: string;
  readonly provenance: string;
  readonly tests: readonly VectorTest[];
}

const directory = new URL('./external/', import.meta.url);
const whitepaper = readFileSync(new URL('../WHITEPAPER.md', import.meta.url), 'utf8');
const knownRules = new Set(
  whitepaper.match(/\*\*WP-[A-Z]+-\d\d\*\*/g)?.map((rule) => rule.slice(2, -2)) ?? [],
);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function scalarRecord(value: unknown, where: string): Record<string, Scalar> {
  if (!isRecord(value)) throw new Error(`${where} is not an object`);
  const out: Record<string, Scalar> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string' && typeof entry !== 'number' && typeof entry !== 'boolean') {
      throw new Error(`${where}.${key} is not a string, number or boolean`);
    }
    out[key] = entry;
  }
  return out;
}

function str(value: unknown, where: string): string {
  if (typeof value !== 'string') throw new Error(`${where} is not a string`);
  return value;
}

/** Parses one vector file, checking the format of house style rule 10 as it goes. */
function loadVectorFile(fileName: string): VectorFile {
  const raw: unknown = JSON.parse(readFileSync(new URL(fileName, directory), 'utf8'));
  if (!isRecord(raw) || !Array.isArray(raw['tests'])) throw new Error(`${fileName}: not a vector file`);
  const tests = raw['tests'].map((entry: unknown, index): VectorTest => {
    const where = `${fileName} tests[${index}]`;
    if (!isRecord(entry)) throw new Error(`${where} is not an object`);
    const rules = entry['rules'];
    if (!Array.isArray(rules) || !rules.every((rule) => typeof rule === 'string')) {
      throw new Error(`${where}.rules is not a string array`);
    }
    const result = entry['result'];
    if (result !== 'valid' && result !== 'invalid') throw new Error(`${where}.result is not valid|invalid`);
    const test: VectorTest = {
      id: str(entry['id'], `${where}.id`),
      comment: str(entry['comment'], `${where}.comment`),
      rules: rules.map(String),
      result,
      input: scalarRecord(entry['input'], `${where}.input`),
      expected: scalarRecord(entry['expected'], `${where}.expected`),
    };
    return entry['error'] === undefined ? test : { ...test, error: str(entry['error'], `${where}.error`) };
  });
  const version = raw['version'];
  if (typeof version !== 'number') throw new Error(`${fileName}: version is not a number`);
  return {
    fileName,
    family: str(raw['family'], `${fileName}.family`),
    version,
    source: str(raw['source'], `${fileName}.source`),
    provenance: str(raw['provenance'], `${fileName}.provenance`),
    tests,
  };
}

const files = readdirSync(directory)
  .filter((name) => name.endsWith('.json'))
  .sort()
  .map(loadVectorFile);

/** Hex input or expected field `name` of a test, decoded. */
function hexField(record: Readonly<Record<string, Scalar>>, name: string): Uint8Array {
  const value = record[name];
  if (typeof value !== 'string') throw new Error(`field ${name} is missing or not hex`);
  return fromHex(value);
}

function numberField(record: Readonly<Record<string, Scalar>>, name: string): number {
  const value = record[name];
  if (typeof value !== 'number') throw new Error(`field ${name} is missing or not a number`);
  return value;
}

/** AES-256 of one block, via node:crypto ECB: used only to build the PKCS#7 block NIST omits. */
function aesEcbBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-256-ecb', key, null);
  cipher.setAutoPadding(false);
  return new Uint8Array(concatBytes(cipher.update(block), cipher.final()));
}

/** The single-bit flips of libsignal's test_signature: byte i XOR 0x01, for every i. */
function singleBitFlips(signature: Uint8Array): Uint8Array[] {
  return Array.from(signature, (_, i) => {
    const copy = Uint8Array.from(signature);
    copy[i] = (copy[i] ?? 0) ^ 0x01;
    return copy;
  });
}

/** Checks one vector against one provider; every family's semantics are spelled out here. */
function runVector(c: CryptoProvider, family: string, test: VectorTest): void {
  const { input, expected } = test;
  switch (family) {
    case 'x25519': {
      const privateKey = hexField(input, 'private_key');
      if (expected['public_u'] !== undefined) {
        expect(toHex(c.x25519PublicKey(privateKey))).toBe(expected['public_u']);
        expect(toHex(publicKeyFromPrivate(c, privateKey))).toBe(`05${String(expected['public_u'])}`);
      }
      if (expected['shared_secret'] !== undefined) {
        const u = hexField(input, 'public_u');
        expect(toHex(c.x25519(privateKey, u))).toBe(expected['shared_secret']);
        const result = dh(c, privateKey, encodeEcPublicKey(u));
        if (test.result === 'valid') {
          expect(result.ok && toHex(result.value)).toBe(expected['shared_secret']);
        } else {
          expect(result.ok ? 'accepted' : result.error.code).toBe(test.error);
        }
      }
      return;
    }
    case 'hkdf-sha256': {
      const ikm = hexField(input, 'ikm');
      const salt = hexField(input, 'salt');
      const okm = c.hkdfSha256(ikm, salt, hexField(input, 'info'), numberField(input, 'length'));
      expect(toHex(okm)).toBe(expected['okm']);
      // RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM), where a missing salt is HashLen zero bytes.
      const extractKey = salt.length === 0 ? new Uint8Array(32) : salt;
      expect(toHex(c.hmacSha256(extractKey, ikm))).toBe(expected['prk']);
      return;
    }
    case 'hmac-sha256': {
      const mac = hexField(expected, 'mac');
      const full = c.hmacSha256(hexField(input, 'key'), hexField(input, 'data'));
      expect(full.length).toBe(32);
      // RFC 4231 test case 5 publishes a 128-bit truncation; the others are full length.
      expect(toHex(full.subarray(0, mac.length))).toBe(toHex(mac));
      return;
    }
    case 'aes-256-cbc': {
      const key = hexField(input, 'key');
      const iv = hexField(input, 'iv');
      const keys = { cipherKey: key, macKey: new Uint8Array(32), iv };
      if (input['plaintext'] !== undefined) {
        const plaintext = hexField(input, 'plaintext');
        const prefix = hexField(expected, 'ciphertext_prefix');
        const ciphertext = c.aes256CbcEncrypt(key, iv, plaintext);
        // PKCS#7 adds a whole block to a block-aligned plaintext.
        expect(ciphertext.length).toBe(plaintext.length + 16);
        expect(toHex(ciphertext.subarray(0, prefix.length))).toBe(toHex(prefix));
      } else if (input['ciphertext_unpadded'] !== undefined) {
        const unpadded = hexField(input, 'ciphertext_unpadded');
        const lastBlock = unpadded.subarray(unpadded.length - 16);
        const paddingBlock = aesEcbBlock(
          key,
          lastBlock.map((byte) => byte ^ 0x10),
        );
        const padded = concatBytes(unpadded, paddingBlock);
        const plaintext = c.aes256CbcDecrypt(key, iv, padded);
        expect(plaintext && toHex(plaintext)).toBe(expected['plaintext']);
        const body = decryptBody(c, keys, padded);
        expect(body.ok && toHex(body.value)).toBe(expected['plaintext']);
      } else {
        const ciphertext = hexField(input, 'ciphertext');
        expect(c.aes256CbcDecrypt(key, iv, ciphertext)).toBeNull();
        const body = decryptBody(c, keys, ciphertext);
        expect(body.ok ? 'accepted' : body.error.code).toBe(test.error);
      }
      return;
    }
    case 'ed25519-verify': {
      const verdict = c.ed25519Verify(
        hexField(input, 'public_key'),
        hexField(input, 'message'),
        hexField(input, 'signature'),
      );
      expect(verdict).toBe(expected['verifies']);
      return;
    }
    case 'xeddsa': {
      if (input['private_key'] !== undefined) {
        expect(toHex(publicKeyFromPrivate(c, hexField(input, 'private_key')))).toBe(expected['public_key']);
        return;
      }
      const publicKey = hexField(input, 'public_key');
      const message = hexField(input, 'message');
      const signature = hexField(input, 'signature');
      expect(xeddsaVerify(c, publicKey, message, signature)).toBe(expected['verifies']);
      if (test.result === 'valid') {
        for (const flipped of singleBitFlips(signature))
          expect(xeddsaVerify(c, publicKey, message, flipped)).toBe(false);
      }
      return;
    }
    case 'chain-key': {
      const { messageKeySeed, nextChainKey } = kdfCk(c, hexField(input, 'chain_key'));
      const keys = deriveMessageKeys(c, messageKeySeed);
      expect(toHex(keys.cipherKey)).toBe(expected['cipher_key']);
      expect(toHex(keys.macKey)).toBe(expected['mac_key']);
      expect(toHex(nextChainKey)).toBe(expected['next_chain_key']);
      return;
    }
    default:
      throw new Error(`no runner for vector family ${family}`);
  }
}

/** Test title: the vector id and comment, then its rule IDs in brackets. */
function title(test: VectorTest): string {
  return `${test.id}: ${test.comment} ${test.rules.map((rule) => `[${rule}]`).join(' ')}`;
}

describe('external vector files', () => {
  it('are present and well formed', () => {
    expect(files.map((file) => file.fileName)).toEqual(
      expect.arrayContaining([
        'aes-256-cbc.json',
        'chain-key-libsignal.json',
        'hkdf-sha256.json',
        'hmac-sha256.json',
        'x25519.json',
        'xeddsa-libsignal.json',
      ]),
    );
    const ids = new Set<string>();
    for (const file of files) {
      expect(file.version).toBe(1);
      expect(file.source.length).toBeGreaterThan(0);
      expect(file.provenance.length).toBeGreaterThan(0);
      expect(file.tests.length).toBeGreaterThan(0);
      for (const test of file.tests) {
        expect(ids.has(test.id), `duplicate id ${test.id}`).toBe(false);
        ids.add(test.id);
        for (const rule of test.rules)
          expect(knownRules.has(rule), `${test.id}: unknown rule ${rule}`).toBe(true);
        if (test.result === 'invalid') {
          expect(test.error !== undefined && test.error in ERROR_RULES, `${test.id}: error code`).toBe(true);
          expect(test.rules).toContain(ERROR_RULES[test.error as ErrorCode]);
        }
        for (const [key, value] of [...Object.entries(test.input), ...Object.entries(test.expected)]) {
          expect(key, `${test.id}: snake_case key`).toMatch(/^[a-z][a-z0-9_]*$/);
          if (typeof value === 'string')
            expect(value, `${test.id}.${key}: lowercase hex`).toMatch(/^([0-9a-f]{2})*$/);
        }
      }
    }
  });
});

for (const provider of [nobleProvider, nodeProvider]) {
  describe(`external vectors with the ${provider.name} provider`, () => {
    for (const file of files) {
      describe(`${file.fileName} (${file.source})`, () => {
        for (const test of file.tests) {
          it(title(test), () => runVector(provider, file.family, test));
        }
      });
    }
  });
}
