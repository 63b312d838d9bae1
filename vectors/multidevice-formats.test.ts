/**
 * The multidevice-formats checker can fail: a flipped expected byte, a changed draw, a changed
 * expected error, and a flipped result are each reported at their path. (Replay of the committed
 * file with both providers is in vectors/own.test.ts.)
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { checkTest } from './lib/check.js';
import { parseFamily, type FamilyFile, type Json, type VectorTest } from './lib/format.js';

const VECTORS_DIR = path.dirname(fileURLToPath(import.meta.url));
const file = parseFamily(
  readFileSync(path.join(VECTORS_DIR, 'multidevice-formats.json'), 'utf8'),
  'multidevice-formats',
);

type Mutable = { -readonly [K in keyof VectorTest]: VectorTest[K] };

function tampered(operation: string, edit: (test: Mutable) => void): { file: FamilyFile; test: VectorTest } {
  const copy = JSON.parse(JSON.stringify(file)) as FamilyFile;
  const test = copy.tests.find((t) => t.input.operation === operation);
  if (test === undefined) throw new Error(`no ${operation} vector`);
  edit(test);
  return { file: copy, test };
}

function flipHex(text: Json | undefined, byteIndex: number): string {
  if (typeof text !== 'string') throw new Error('not hex');
  const byte = Number.parseInt(text.slice(2 * byteIndex, 2 * byteIndex + 2), 16) ^ 1;
  return `${text.slice(0, 2 * byteIndex)}${byte.toString(16).padStart(2, '0')}${text.slice(2 * byteIndex + 2)}`;
}

describe('the multidevice-formats checker fails on tampered vectors', () => {
  it('a flipped byte of an expected signature [WP-DEV-04]', () => {
    const { file: f, test } = tampered('sign_device_list', (t) => {
      t.expected = { ...t.expected, signature: flipHex(t.expected.signature, 3) };
    });
    expect(checkTest(nodeProvider, f, test)?.path).toMatch(/\.expected\.signature$/);
  });

  it('a changed envelope draw (a bit that clamping keeps) [WP-LINK-04]', () => {
    const { file: f, test } = tampered('encrypt_provision_envelope', (t) => {
      const draws = t.input.draws as readonly Json[];
      t.input = { ...t.input, draws: [flipHex(draws[0], 1), ...draws.slice(1)] };
    });
    expect(checkTest(nodeProvider, f, test)?.path).toMatch(/\.expected\.sender_ephemeral_public_key$/);
  });

  it('a changed expected error code [WP-ATT-02]', () => {
    const { file: f, test } = tampered('decrypt_attachment', (t) => {
      if (t.error === undefined) {
        t.expected = { error: 'ATTACHMENT_MAC_INVALID', rule: 'WP-ATT-04' };
      }
    });
    expect(checkTest(nodeProvider, f, test)).not.toBeNull();
  });

  it('a result marked valid for a rejected input [WP-PAY-02]', () => {
    const copy = JSON.parse(JSON.stringify(file)) as FamilyFile;
    const test = copy.tests.find((t) => t.error === 'PAYLOAD_VERSION_UNKNOWN') as Mutable | undefined;
    if (test === undefined) throw new Error('no payload version vector');
    test.result = 'valid';
    expect(checkTest(nodeProvider, copy, test)?.path).toMatch(/\.result$/);
  });
});
