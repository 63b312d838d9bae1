/**
 * The performance {@link CryptoProvider}: `node:crypto` (OpenSSL) for every primitive. Node only;
 * browser bundles never import this file (spec/crypto/index.ts exports the noble provider only).
 *
 * - X25519: RFC 7748 §5 via `diffieHellman` on raw keys imported as JWK (RFC 8037).
 * - SHA-256 / SHA-512 (FIPS 180-4, one-shot `hash`), HMAC-SHA256 (RFC 2104), HKDF-SHA256
 *   (RFC 5869, `hkdfSync`).
 * - AES-256-CBC with PKCS#7 padding (NIST SP 800-38A) via `createCipheriv` / `createDecipheriv`.
 * - Ed25519 verification (RFC 8032 §5.1.7) via `crypto.verify(null, …)`, after the prechecks of
 *   `./ed25519-strict.ts` (WP-KEYS-07). OpenSSL itself rejects `S ≥ L` and compares the re-encoded
 *   `[S]B − [k]A` with `R` byte-for-byte (cofactorless), which the noble provider reproduces.
 *
 * Edge case: OpenSSL refuses to return an all-zero X25519 output (it fails the derivation, and
 * Node throws `ERR_OSSL_FAILED_DURING_DERIVATION`). Lockstep's providers return the raw output and
 * leave the decision to spec/keys.ts (WP-KEYS-04), so {@link nodeProvider}.x25519 maps that
 * exception to 32 zero bytes. Arguments are length-checked first and only an OpenSSL error from the
 * derivation itself is mapped; anything else is rethrown.
 *
 * Key objects are cached, because importing a key costs more than using it (in Node 20 an X25519
 * private-key import derives the public key, about 1.5 DH operations; a public-key import about
 * half of one) and a run uses the same keys again and again (an identity key in every session, a
 * ratchet key for a whole chain):
 * - a private key's object is kept in a `WeakMap` under the caller's own array, with a copy of the
 *   bytes it was made from, and used only while the array still holds those bytes. It lives no
 *   longer than the caller's array, so the module holds no secret the caller does not hold, and
 *   only the last {@link PRIVATE_KEY_CACHE_MAX} keys made are kept (a busy simulation holds a
 *   million private keys; most reuse comes within one operation or the next);
 * - public keys (X25519 and Ed25519) are kept by their bytes in a bounded map
 *   ({@link PUBLIC_KEY_CACHE_MAX} entries, least recently used dropped first): public data only.
 *
 * Results are plain `Uint8Array`s (never `Buffer`), so callers see the same type from both
 * providers: copies, except that AES-256-CBC decryption views the fresh, exactly sized output of
 * `update()` directly, since copying a large plaintext costs time and garbage. `Buffer` is
 * otherwise used only for base64url inside this module.
 *
 * AES-256-CBC decryption runs with OpenSSL's padding off and checks PKCS#7 here (RFC 5652 §6.3,
 * the same rule OpenSSL and noble apply; spec/crypto/providers.test.ts compares all three on every
 * padding pattern), so that the plaintext comes out of one `update()` call instead of being joined
 * from `update()` and `final()`.
 * @module
 */
import { Buffer } from 'node:buffer';
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hash,
  hkdfSync,
  verify,
  type KeyObject,
} from 'node:crypto';
import { concatBytes, copyBytes, equalBytes } from '../bytes.js';
import { X25519_KEY_LENGTH } from '../constants.js';
import { InvariantError } from '../errors.js';
import { BoundedLru } from '../lru.js';
import { requireByteParts, requireBytes, requireHkdfArguments } from './checks.js';
import { passesStrictPrechecks } from './ed25519-strict.js';
import { createMlKem1024, type Sha3Functions } from './ml-kem.js';
import type { CryptoProvider } from './provider.js';

/** AES-256 key length (FIPS 197). */
const AES_256_KEY_LENGTH = 32;
/** AES block and CBC IV length (NIST SP 800-38A). */
const AES_BLOCK_LENGTH = 16;

/**
 * Keys are imported as JWK (RFC 8037 §2, `kty: "OKP"`), not DER: in Node 20 a JWK import skips
 * OpenSSL's generic decoder and is about 10× faster than PKCS#8 / SPKI DER, which made DER-based
 * X25519 slower than noble (measured: DH 18 000 vs 1 000 ops/s).
 *
 * A private OKP JWK must carry `x`, but Node builds the key from `d` alone and only checks that `x`
 * is a string (lib/internal/crypto/keys.js, `getKeyObjectHandleFromJwk`); we pass this placeholder
 * (32 zero bytes) instead of computing the public key. The RFC 7748 §6.1 vectors (public keys and
 * shared secret) and the noble-vs-node property tests pin that behaviour: should a later Node
 * validate `x`, the import throws and the tests fail loudly; nothing is silently miscomputed.
 */
const JWK_PLACEHOLDER_X = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

/** Copies a Node result (a `Buffer` or an `ArrayBuffer`) into a plain `Uint8Array`. */
function plain(bytes: Uint8Array | ArrayBuffer): Uint8Array {
  // new Uint8Array(Buffer) copies; hkdfSync's ArrayBuffer is fresh, so viewing it is enough.
  return bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes);
}

/**
 * The first `length` bytes of a fresh node:crypto result as a plain `Uint8Array`, without a copy
 * when the `Buffer` is the sole view of its own memory (node:crypto allocates each output exactly;
 * only pooled `Buffer`s share memory, and those are copied).
 */
function plainPrefix(bytes: Buffer, length: number): Uint8Array {
  if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) {
    return new Uint8Array(bytes.buffer, 0, length);
  }
  return new Uint8Array(bytes.subarray(0, length));
}

/** `bytes` as a plain `Uint8Array` of the same length (see {@link plainPrefix}). */
function plainView(bytes: Buffer): Uint8Array {
  return plainPrefix(bytes, bytes.length);
}

/**
 * Length of the plaintext under PKCS#7 padding (RFC 5652 §6.3), or `null` when the padding is
 * invalid: the last byte `n` must be 1..16 and the last `n` bytes must all equal `n`, which is what
 * OpenSSL checks. The loop does not exit early inside the padding. Every caller in spec/ checks a
 * MAC over the ciphertext first (messages WP-DR-05, attachments, provisioning envelopes), so a
 * padding verdict is only ever given on bytes the key holder wrote: no padding oracle.
 */
function pkcs7UnpaddedLength(padded: Uint8Array): number | null {
  const n = padded[padded.length - 1] ?? 0;
  if (n < 1 || n > AES_BLOCK_LENGTH || n > padded.length) return null;
  let diff = 0;
  for (let i = padded.length - n; i < padded.length; i++) diff |= (padded[i] ?? 0) ^ n;
  return diff === 0 ? padded.length - n : null;
}

/** True for an error raised by OpenSSL inside node:crypto (its `code` starts with `ERR_OSSL`). */
function isOpenSslError(error: unknown): boolean {
  return (
    error instanceof Error &&
    'code' in error &&
    typeof error.code === 'string' &&
    error.code.startsWith('ERR_OSSL')
  );
}

/** Unpadded base64url (RFC 4648 §5) of raw key bytes, for a JWK. */
function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

/** A private key object with the bytes it was made from (module doc: the private-key cache). */
interface CachedPrivateKey {
  readonly bytes: Uint8Array;
  readonly key: KeyObject;
  /** Its place in {@link recentPrivateKeys}. */
  slot: number;
}

/** X25519 private key objects by the caller's array (module doc). */
const privateKeyObjects = new WeakMap<Uint8Array, CachedPrivateKey>();

/** Bound of the private-key cache: the keys of the last few hundred operations. */
export const PRIVATE_KEY_CACHE_MAX = 1024;

/**
 * The arrays of the last {@link PRIVATE_KEY_CACHE_MAX} cached or reused private keys, oldest
 * overwritten first. Weak, so the ring keeps no key alive; it only says which entry to drop when a
 * new one comes.
 */
const recentPrivateKeys: (WeakRef<Uint8Array> | undefined)[] = [];
let nextRecentPrivateKey = 0;

/**
 * Gives `entry` (cached under `privateKey`) the newest place in the ring, dropping the entry whose
 * place it takes, unless that entry has moved to a newer place since.
 */
function placePrivateKey(privateKey: Uint8Array, entry: CachedPrivateKey): void {
  const slot = nextRecentPrivateKey;
  const evicted = recentPrivateKeys[slot]?.deref();
  if (evicted !== undefined && privateKeyObjects.get(evicted)?.slot === slot)
    privateKeyObjects.delete(evicted);
  recentPrivateKeys[slot] = new WeakRef(privateKey);
  nextRecentPrivateKey = (slot + 1) % PRIVATE_KEY_CACHE_MAX;
  entry.slot = slot;
}

/** True when `entry` is in the older half of the ring (a hit then moves it to the newest place). */
function agingPrivateKey(entry: CachedPrivateKey): boolean {
  const age = (nextRecentPrivateKey - entry.slot + PRIVATE_KEY_CACHE_MAX) % PRIVATE_KEY_CACHE_MAX;
  return age > PRIVATE_KEY_CACHE_MAX / 2;
}

/**
 * Bound of the public-key cache: a few thousand keys cover every peer key a busy simulated device
 * uses while its sessions are active, at about 1 KiB per entry.
 */
export const PUBLIC_KEY_CACHE_MAX = 4096;

/** Public key objects by curve and base64url bytes (module doc). */
const publicKeyObjects = new BoundedLru<string, KeyObject>(PUBLIC_KEY_CACHE_MAX);

/** Wraps a raw X25519 private key as a Node key object (OpenSSL clamps it on use). */
function x25519PrivateKeyObject(privateKey: Uint8Array): KeyObject {
  const cached = privateKeyObjects.get(privateKey);
  // The array may have been overwritten since (zeroised, reused): then it is another key.
  if (cached !== undefined && equalBytes(cached.bytes, privateKey)) {
    // A key in use (an identity key) stays cached: the ring drops the least recently used.
    if (agingPrivateKey(cached)) placePrivateKey(privateKey, cached);
    return cached.key;
  }
  const key = createPrivateKey({
    key: { kty: 'OKP', crv: 'X25519', d: base64url(privateKey), x: JWK_PLACEHOLDER_X },
    format: 'jwk',
  });
  const entry: CachedPrivateKey = { bytes: copyBytes(privateKey), key, slot: 0 };
  placePrivateKey(privateKey, entry);
  privateKeyObjects.set(privateKey, entry);
  return key;
}

/** Wraps a raw public key (X25519 u or Ed25519 encoding) as a Node key object. */
function publicKeyObject(crv: 'X25519' | 'Ed25519', publicKey: Uint8Array): KeyObject {
  const x = base64url(publicKey);
  const name = crv === 'X25519' ? `x${x}` : `e${x}`;
  const known = publicKeyObjects.get(name);
  if (known !== undefined) return known;
  const key = createPublicKey({ key: { kty: 'OKP', crv, x }, format: 'jwk' });
  publicKeyObjects.set(name, key);
  return key;
}

/**
 * node:crypto's native SHA-3 family (OpenSSL). Outputs are views of the digest's own buffer when it
 * is exactly that size (no copy), plain `Uint8Array`s either way.
 */
export const nodeSha3: Sha3Functions = Object.freeze({
  sha3_256: (data: Uint8Array) => plainView(hash('sha3-256', data, 'buffer')),
  sha3_512: (a: Uint8Array, b: Uint8Array) => plainView(createHash('sha3-512').update(a).update(b).digest()),
  shake128: (data: Uint8Array, length: number) =>
    plainView(createHash('shake128', { outputLength: length }).update(data).digest()),
  shake256: (data: Uint8Array, length: number) =>
    plainView(createHash('shake256', { outputLength: length }).update(data).digest()),
});

/** Node provider on `node:crypto`. */
export const nodeProvider: CryptoProvider = Object.freeze({
  name: 'node',
  sha3: nodeSha3,
  // ML-KEM-1024 over native SHA-3: about 3× noble's on this machine (bench/), byte-identical.
  mlKem1024: createMlKem1024(nodeSha3),

  x25519PublicKey(privateKey: Uint8Array): Uint8Array {
    requireBytes('privateKey', privateKey, X25519_KEY_LENGTH);
    // Node derives the public key when it imports the private one; the JWK export carries it as x.
    const jwk = x25519PrivateKeyObject(privateKey).export({ format: 'jwk' });
    if (typeof jwk.x !== 'string') throw new InvariantError('node:crypto exported an X25519 JWK without x');
    const u = plain(Buffer.from(jwk.x, 'base64url'));
    if (u.length !== X25519_KEY_LENGTH)
      throw new InvariantError('node:crypto exported a malformed X25519 key');
    return u;
  },

  x25519(privateKey: Uint8Array, publicKeyU: Uint8Array): Uint8Array {
    requireBytes('privateKey', privateKey, X25519_KEY_LENGTH);
    requireBytes('publicKeyU', publicKeyU, X25519_KEY_LENGTH);
    const ourKey = x25519PrivateKeyObject(privateKey);
    const theirKey = publicKeyObject('X25519', publicKeyU);
    try {
      return plain(diffieHellman({ privateKey: ourKey, publicKey: theirKey }));
    } catch (error) {
      // OpenSSL fails the derivation exactly when the output is all zero (module doc); anything
      // else is not ours to hide. WP-KEYS-04 is decided by spec/keys.ts, not here.
      if (isOpenSslError(error)) return new Uint8Array(X25519_KEY_LENGTH);
      throw error;
    }
  },

  // One-shot `hash` (Node ≥ 20.12) skips the Hash object `createHash` builds: most inputs here are
  // short (fingerprints, XEdDSA), where that object costs as much as the digest.
  sha256(data: Uint8Array): Uint8Array {
    requireBytes('data', data);
    return plain(hash('sha256', data, 'buffer'));
  },

  sha512(data: Uint8Array): Uint8Array {
    requireBytes('data', data);
    return plain(hash('sha512', data, 'buffer'));
  },

  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
    requireBytes('key', key);
    requireBytes('data', data);
    return plain(createHmac('sha256', key).update(data).digest());
  },

  hmacSha256Parts(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
    requireBytes('key', key);
    requireByteParts('parts', parts);
    const mac = createHmac('sha256', key);
    for (const part of parts) mac.update(part);
    return plain(mac.digest());
  },

  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
    requireHkdfArguments(ikm, salt, info, length);
    // RFC 5869 §2.2: an empty salt acts as HashLen zero bytes; OpenSSL's HMAC pads an empty key to
    // the same block, and the RFC 5869 A.3 vector (empty salt) pins this for both providers.
    return plain(hkdfSync('sha256', ikm, salt, info, length));
  },

  aes256CbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Uint8Array {
    requireBytes('key', key, AES_256_KEY_LENGTH);
    requireBytes('iv', iv, AES_BLOCK_LENGTH);
    requireBytes('plaintext', plaintext);
    const cipher = createCipheriv('aes-256-cbc', key, iv);
    return concatBytes(cipher.update(plaintext), cipher.final());
  },

  aes256CbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null {
    requireBytes('key', key, AES_256_KEY_LENGTH);
    requireBytes('iv', iv, AES_BLOCK_LENGTH);
    requireBytes('ciphertext', ciphertext);
    // NIST SP 800-38A §6.2: CBC needs a positive whole number of blocks (PKCS#7 adds at least one).
    if (ciphertext.length === 0 || ciphertext.length % AES_BLOCK_LENGTH !== 0) return null;
    // OpenSSL's own padding check holds the last block back and returns it from final(), which
    // costs a copy of the whole plaintext to join the two; with padding off, update() decrypts
    // every block into one fresh buffer and the padding is checked and stripped here instead.
    const decipher = createDecipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
    const padded = decipher.update(ciphertext);
    decipher.final(); // nothing is buffered: the length is a whole number of blocks
    const plaintextLength = pkcs7UnpaddedLength(padded);
    if (plaintextLength === null) return null;
    return plainPrefix(padded, plaintextLength);
  },

  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!(message instanceof Uint8Array)) return false;
    if (!passesStrictPrechecks(publicKey, signature)) return false;
    try {
      return verify(null, message, publicKeyObject('Ed25519', publicKey), signature);
    } catch {
      return false;
    }
  },
} satisfies CryptoProvider);
