/**
 * The `pqxdh` family: PQXDH derivations from explicit key material (WP-PQXDH-03, -04, -08,
 * WP-DR-01..03, WP-KEYS-08), each intermediate value listed, ending in the first
 * PreKeySignalMessage and its message keys.
 *
 * ```text
 * draws (WP-PQXDH-04)  alice_base_private_key, alice_ratchet_private_key, kem_encapsulation_seed
 * IKM                  0xFF×32 ‖ DH(IK_A, SPK_B) ‖ DH(EK_A, IK_B) ‖ DH(EK_A, SPK_B) ‖ [DH(EK_A, OPK_B)] ‖ SS
 * RK ‖ CK ‖ PQR        HKDF-SHA256(salt none, IKM, "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024", 96)
 * sending RK', CKs     KDF_RK(RK, DH(ratchet_A, SPK_B))                                (WP-PQXDH-08)
 * message keys         HKDF(HMAC(CKs, 0x01), "WhisperMessageKeys", 80) → cipher ‖ mac ‖ iv
 * ```
 *
 * Every value is computed twice: from spec/'s named functions, and through impl/'s session API with
 * a scripted Rng holding exactly the three draws; the checker also has Bob decrypt the message.
 * @module
 */
import { equalBytes } from '../../spec/bytes.js';
import { computeMessageMac, encryptBody } from '../../spec/cipher.js';
import { kemEncapsulate } from '../../spec/crypto/kyber.js';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { xeddsaVerify } from '../../spec/crypto/xeddsa.js';
import { deriveMessageKeys, kdfCk, kdfRk, pqxdhSecret } from '../../spec/kdf.js';
import { dh, generateKeyPair, publicKeyFromPrivate } from '../../spec/keys.js';
import { seededRng } from '../../spec/rng.js';
import { encodePreKeySignalMessage, encodeSignalMessageBody, frameSignalMessage } from '../../spec/wire.js';
import {
  decryptPreKeySignalMessage,
  EMPTY_SESSION_RECORD,
  encryptMessage,
  generateKyberPreKey,
  generateOneTimePreKey,
  generateRegistrationId,
  generateSignedPreKey,
  processPreKeyBundle,
  type PreKeyBundle,
  type PreKeyState,
} from '../../impl/index.js';
import { scriptedRng } from './draws.js';
import { seedLabel } from './fixtures.js';
import {
  firstDifference,
  GENERATOR_SOURCE,
  hex,
  integerField,
  unhex,
  utf8Bytes,
  VECTOR_FORMAT_VERSION,
  type FamilyFile,
  type Json,
  type JsonObject,
  type VectorTest,
} from './format.js';
import { GeneratorExpectationError, type CheckFailure } from './script.js';

const FAMILY = 'pqxdh';

/** The rules every pqxdh vector pins. */
const PQXDH_RULES = [
  'WP-PQXDH-01',
  'WP-PQXDH-03',
  'WP-PQXDH-04',
  'WP-PQXDH-08',
  'WP-PQXDH-09',
  'WP-DR-01',
  'WP-DR-02',
  'WP-DR-03',
  'WP-DR-04',
  'WP-DR-05',
  'WP-KEYS-06',
  'WP-KEYS-07',
  'WP-KEYS-08',
  'WP-WIRE-02',
  'WP-WIRE-03',
  'WP-WIRE-05',
];

/** A test's input decoded. */
interface PqxdhInput {
  readonly aliceIdentityPrivateKey: Uint8Array;
  readonly aliceRegistrationId: number;
  readonly aliceBasePrivateKey: Uint8Array;
  readonly aliceRatchetPrivateKey: Uint8Array;
  readonly kemEncapsulationSeed: Uint8Array;
  readonly bobIdentityPrivateKey: Uint8Array;
  readonly bobRegistrationId: number;
  readonly bobSignedPreKeyId: number;
  readonly bobSignedPreKeyPrivateKey: Uint8Array;
  readonly bobSignedPreKeySignature: Uint8Array;
  readonly bobOneTimePreKeyId: number | null;
  readonly bobOneTimePreKeyPrivateKey: Uint8Array | null;
  readonly bobKyberPreKeyId: number;
  readonly bobKyberPublicKey: Uint8Array;
  readonly bobKyberSecretKey: Uint8Array;
  readonly bobKyberPreKeySignature: Uint8Array;
  readonly plaintext: Uint8Array;
}

function inputJson(i: PqxdhInput): JsonObject {
  return {
    alice_identity_private_key: hex(i.aliceIdentityPrivateKey),
    alice_registration_id: i.aliceRegistrationId,
    alice_base_private_key: hex(i.aliceBasePrivateKey),
    alice_ratchet_private_key: hex(i.aliceRatchetPrivateKey),
    kem_encapsulation_seed: hex(i.kemEncapsulationSeed),
    bob_identity_private_key: hex(i.bobIdentityPrivateKey),
    bob_registration_id: i.bobRegistrationId,
    bob_signed_pre_key_id: i.bobSignedPreKeyId,
    bob_signed_pre_key_private_key: hex(i.bobSignedPreKeyPrivateKey),
    bob_signed_pre_key_signature: hex(i.bobSignedPreKeySignature),
    bob_one_time_pre_key_id: i.bobOneTimePreKeyId,
    bob_one_time_pre_key_private_key:
      i.bobOneTimePreKeyPrivateKey === null ? null : hex(i.bobOneTimePreKeyPrivateKey),
    bob_kyber_pre_key_id: i.bobKyberPreKeyId,
    bob_kyber_public_key: hex(i.bobKyberPublicKey),
    bob_kyber_secret_key: hex(i.bobKyberSecretKey),
    bob_kyber_pre_key_signature: hex(i.bobKyberPreKeySignature),
    plaintext: hex(i.plaintext),
  };
}

function inputFrom(o: JsonObject): PqxdhInput {
  const b = (key: string): Uint8Array => unhex(o[key], `input.${key}`);
  const n = (key: string): number => integerField(o[key], `input.${key}`);
  return {
    aliceIdentityPrivateKey: b('alice_identity_private_key'),
    aliceRegistrationId: n('alice_registration_id'),
    aliceBasePrivateKey: b('alice_base_private_key'),
    aliceRatchetPrivateKey: b('alice_ratchet_private_key'),
    kemEncapsulationSeed: b('kem_encapsulation_seed'),
    bobIdentityPrivateKey: b('bob_identity_private_key'),
    bobRegistrationId: n('bob_registration_id'),
    bobSignedPreKeyId: n('bob_signed_pre_key_id'),
    bobSignedPreKeyPrivateKey: b('bob_signed_pre_key_private_key'),
    bobSignedPreKeySignature: b('bob_signed_pre_key_signature'),
    bobOneTimePreKeyId: o.bob_one_time_pre_key_id === null ? null : n('bob_one_time_pre_key_id'),
    bobOneTimePreKeyPrivateKey:
      o.bob_one_time_pre_key_private_key === null ? null : b('bob_one_time_pre_key_private_key'),
    bobKyberPreKeyId: n('bob_kyber_pre_key_id'),
    bobKyberPublicKey: b('bob_kyber_public_key'),
    bobKyberSecretKey: b('bob_kyber_secret_key'),
    bobKyberPreKeySignature: b('bob_kyber_pre_key_signature'),
    plaintext: b('plaintext'),
  };
}

function mustDh(c: CryptoProvider, ours: Uint8Array, theirs: Uint8Array): Uint8Array {
  const out = dh(c, ours, theirs);
  if (!out.ok) throw new GeneratorExpectationError(`DH rejected: ${out.error.code}`);
  return out.value;
}

/** Every expected value, computed from spec/'s named functions only. */
function computeExpected(c: CryptoProvider, i: PqxdhInput): JsonObject {
  const aliceIdentity = publicKeyFromPrivate(c, i.aliceIdentityPrivateKey);
  const base = publicKeyFromPrivate(c, i.aliceBasePrivateKey);
  const ratchet = publicKeyFromPrivate(c, i.aliceRatchetPrivateKey);
  const bobIdentity = publicKeyFromPrivate(c, i.bobIdentityPrivateKey);
  const signedPreKey = publicKeyFromPrivate(c, i.bobSignedPreKeyPrivateKey);
  const oneTime =
    i.bobOneTimePreKeyPrivateKey === null ? null : publicKeyFromPrivate(c, i.bobOneTimePreKeyPrivateKey);
  // WP-PQXDH-03: the DHs in the rule's order.
  const dh1 = mustDh(c, i.aliceIdentityPrivateKey, signedPreKey);
  const dh2 = mustDh(c, i.aliceBasePrivateKey, bobIdentity);
  const dh3 = mustDh(c, i.aliceBasePrivateKey, signedPreKey);
  const dh4 = oneTime === null ? null : mustDh(c, i.aliceBasePrivateKey, oneTime);
  // WP-KEYS-08: the encapsulation draws exactly the listed 32-byte seed.
  const kem = kemEncapsulate(c, i.bobKyberPublicKey, scriptedRng([i.kemEncapsulationSeed]));
  const secret = pqxdhSecret(c, dh4 === null ? [dh1, dh2, dh3] : [dh1, dh2, dh3, dh4], kem.sharedSecret);
  // WP-PQXDH-08: Alice ratchets at once against SPK_B.
  const ratchetDh = mustDh(c, i.aliceRatchetPrivateKey, signedPreKey);
  const sending = kdfRk(c, secret.rootKey, ratchetDh);
  const keys = deriveMessageKeys(c, kdfCk(c, sending.chainKey).messageKeySeed);
  const body = encodeSignalMessageBody({
    ratchetKey: ratchet,
    counter: 0,
    previousCounter: 0,
    ciphertext: encryptBody(c, keys, i.plaintext),
  });
  const signalMessage = frameSignalMessage(
    body,
    computeMessageMac(c, keys.macKey, aliceIdentity, bobIdentity, body),
  );
  const preKeyMessage = encodePreKeySignalMessage({
    registrationId: i.aliceRegistrationId,
    ...(i.bobOneTimePreKeyId === null ? {} : { preKeyId: i.bobOneTimePreKeyId }),
    signedPreKeyId: i.bobSignedPreKeyId,
    kyberPreKeyId: i.bobKyberPreKeyId,
    kyberCiphertext: kem.ciphertext,
    baseKey: base,
    identityKey: aliceIdentity,
    message: signalMessage,
  });
  return {
    alice_identity_public_key: hex(aliceIdentity),
    alice_base_public_key: hex(base),
    alice_ratchet_public_key: hex(ratchet),
    bob_identity_public_key: hex(bobIdentity),
    bob_signed_pre_key_public_key: hex(signedPreKey),
    bob_one_time_pre_key_public_key: oneTime === null ? null : hex(oneTime),
    dh_ik_a_spk_b: hex(dh1),
    dh_ek_a_ik_b: hex(dh2),
    dh_ek_a_spk_b: hex(dh3),
    dh_ek_a_opk_b: dh4 === null ? null : hex(dh4),
    kyber_ciphertext: hex(kem.ciphertext),
    kyber_shared_secret: hex(kem.sharedSecret),
    root_key: hex(secret.rootKey),
    chain_key: hex(secret.chainKey),
    pqr_key: hex(secret.pqrKey),
    ratchet_dh: hex(ratchetDh),
    sending_root_key: hex(sending.rootKey),
    sending_chain_key: hex(sending.chainKey),
    message_keys: { cipher_key: hex(keys.cipherKey), mac_key: hex(keys.macKey), iv: hex(keys.iv) },
    signal_message: hex(signalMessage),
    prekey_message: hex(preKeyMessage),
  };
}

/** Bob's prekey store as the input describes it (for the responder half of the check). */
function bobState(c: CryptoProvider, i: PqxdhInput): PreKeyState {
  const identityKeyPair = {
    publicKey: publicKeyFromPrivate(c, i.bobIdentityPrivateKey),
    privateKey: i.bobIdentityPrivateKey,
  };
  const signed = {
    publicKey: publicKeyFromPrivate(c, i.bobSignedPreKeyPrivateKey),
    privateKey: i.bobSignedPreKeyPrivateKey,
  };
  return {
    identityKeyPair,
    registrationId: i.bobRegistrationId,
    signedPreKeys: [{ keyId: i.bobSignedPreKeyId, keyPair: signed, signature: i.bobSignedPreKeySignature }],
    oneTimePreKeys:
      i.bobOneTimePreKeyId === null || i.bobOneTimePreKeyPrivateKey === null
        ? []
        : [
            {
              keyId: i.bobOneTimePreKeyId,
              keyPair: {
                publicKey: publicKeyFromPrivate(c, i.bobOneTimePreKeyPrivateKey),
                privateKey: i.bobOneTimePreKeyPrivateKey,
              },
            },
          ],
    kyberPreKeys: [
      {
        keyId: i.bobKyberPreKeyId,
        publicKey: i.bobKyberPublicKey,
        secretKey: i.bobKyberSecretKey,
        signature: i.bobKyberPreKeySignature,
        lastResort: false,
      },
    ],
  };
}

/**
 * The impl/ half of the check: both signatures verify (WP-PQXDH-01); Alice's session, built by
 * `processPreKeyBundle` from exactly the three listed draws (WP-PQXDH-04), holds the expected keys
 * and encrypts the expected PreKey message; Bob's `decryptPreKeySignalMessage` recovers the
 * plaintext (his DH-step draw is a fixed filler: it does not affect this message).
 */
function checkThroughImpl(c: CryptoProvider, i: PqxdhInput, expected: JsonObject): CheckFailure | null {
  const bob = bobState(c, i);
  if (
    !xeddsaVerify(
      c,
      bob.identityKeyPair.publicKey,
      publicKeyFromPrivate(c, i.bobSignedPreKeyPrivateKey),
      i.bobSignedPreKeySignature,
    )
  ) {
    return { path: 'input.bob_signed_pre_key_signature', message: 'signature does not verify' };
  }
  if (!xeddsaVerify(c, bob.identityKeyPair.publicKey, i.bobKyberPublicKey, i.bobKyberPreKeySignature)) {
    return { path: 'input.bob_kyber_pre_key_signature', message: 'signature does not verify' };
  }
  const oneTime = bob.oneTimePreKeys[0];
  const signed = bob.signedPreKeys[0];
  if (signed === undefined) return { path: 'input', message: 'no signed prekey' };
  const bundle: PreKeyBundle = {
    registrationId: i.bobRegistrationId,
    deviceId: 1,
    identityKey: bob.identityKeyPair.publicKey,
    signedPreKeyId: i.bobSignedPreKeyId,
    signedPreKey: signed.keyPair.publicKey,
    signedPreKeySignature: i.bobSignedPreKeySignature,
    preKeyId: oneTime === undefined ? null : oneTime.keyId,
    preKey: oneTime === undefined ? null : oneTime.keyPair.publicKey,
    kyberPreKeyId: i.bobKyberPreKeyId,
    kyberPreKey: i.bobKyberPublicKey,
    kyberPreKeySignature: i.bobKyberPreKeySignature,
  };
  const draws = scriptedRng([i.aliceBasePrivateKey, i.aliceRatchetPrivateKey, i.kemEncapsulationSeed]);
  const alice = {
    identityKeyPair: {
      publicKey: publicKeyFromPrivate(c, i.aliceIdentityPrivateKey),
      privateKey: i.aliceIdentityPrivateKey,
    },
    registrationId: i.aliceRegistrationId,
  };
  const started = processPreKeyBundle({ crypto: c, rng: draws }, EMPTY_SESSION_RECORD, alice, bundle, 0);
  if (!started.ok) return { path: 'input', message: `processPreKeyBundle rejected: ${started.error.code}` };
  if (draws.remaining() !== 0)
    return { path: 'input', message: 'processPreKeyBundle drew fewer than three values' };
  const session = started.value.current;
  const stateChecks: Array<[string, Uint8Array | undefined]> = [
    ['sending_root_key', session?.rootKey],
    ['sending_chain_key', session?.senderChainKey.key],
    ['chain_key', session?.receiverChains[0]?.chainKey.key],
    ['alice_base_public_key', session?.aliceBaseKey],
  ];
  for (const [key, actual] of stateChecks) {
    if (actual === undefined || !equalBytes(actual, unhex(expected[key], `expected.${key}`))) {
      return { path: `expected.${key}`, message: 'impl/ session state differs' };
    }
  }
  const sent = encryptMessage({ crypto: c, rng: scriptedRng([]) }, started.value, i.plaintext, 0);
  if (!sent.ok) return { path: 'input', message: `encryptMessage rejected: ${sent.error.code}` };
  if (sent.value.message.type !== 'prekey' || hex(sent.value.message.bytes) !== expected.prekey_message) {
    return { path: 'expected.prekey_message', message: 'impl/ encrypted different bytes' };
  }
  const filler = scriptedRng([new Uint8Array(32).fill(0x42)]);
  const received = decryptPreKeySignalMessage(
    { crypto: c, rng: filler },
    EMPTY_SESSION_RECORD,
    bob,
    sent.value.message.bytes,
  );
  if (!received.ok)
    return { path: 'expected.prekey_message', message: `Bob rejected it: ${received.error.code}` };
  if (!equalBytes(received.value.plaintext, i.plaintext))
    return { path: 'input.plaintext', message: 'Bob decrypted other bytes' };
  return null;
}

/** Checks one pqxdh test with one provider. */
export function checkPqxdhTest(c: CryptoProvider, test: VectorTest): CheckFailure | null {
  const input = inputFrom(test.input);
  const difference = firstDifference(computeExpected(c, input), test.expected as Json, '');
  if (difference !== null) return { path: `expected.${difference}`, message: 'derived value differs' };
  return checkThroughImpl(c, input, test.expected);
}

/** One case of the family. */
interface PqxdhCase {
  readonly id: string;
  readonly comment: string;
  readonly oneTimePreKey: boolean;
  readonly lastResortKyber: boolean;
  readonly plaintext: string;
}

const CASES: readonly PqxdhCase[] = [
  {
    id: 'pqxdh-001',
    comment:
      'PQXDH with a one-time prekey (four DHs) and a one-time Kyber prekey; first PreKeySignalMessage.',
    oneTimePreKey: true,
    lastResortKyber: false,
    plaintext: 'Hello Bob, this is Alice.',
  },
  {
    id: 'pqxdh-002',
    comment:
      'PQXDH without a one-time prekey (three DHs, pre_key_id absent on the wire) and a last-resort Kyber prekey.',
    oneTimePreKey: false,
    lastResortKyber: true,
    plaintext: 'No one-time prekey left: three DHs and the KEM.',
  },
  {
    id: 'pqxdh-003',
    comment: 'PQXDH with a one-time prekey; empty plaintext (the body is one block of PKCS#7 padding).',
    oneTimePreKey: true,
    lastResortKyber: true,
    plaintext: '',
  },
  {
    id: 'pqxdh-004',
    comment: 'PQXDH without a one-time prekey; a 32-byte plaintext (a whole extra padding block).',
    oneTimePreKey: false,
    lastResortKyber: false,
    plaintext: '0123456789abcdef0123456789abcdef',
  },
];

function generateCase(c: CryptoProvider, k: PqxdhCase): VectorTest {
  const env = { crypto: c, rng: seededRng(seedLabel(FAMILY, k.id)) };
  const aliceIdentity = generateKeyPair(c, env.rng);
  const aliceRegistrationId = generateRegistrationId(env);
  const bobIdentity = generateKeyPair(c, env.rng);
  const bobRegistrationId = generateRegistrationId(env);
  const signed = generateSignedPreKey(env, bobIdentity, 1);
  const oneTime = k.oneTimePreKey ? generateOneTimePreKey(env, 7) : null;
  const kyber = generateKyberPreKey(env, bobIdentity, k.lastResortKyber ? 100 : 3, k.lastResortKyber);
  // WP-PQXDH-04: the initiator's three draws, in order.
  const aliceBasePrivateKey = env.rng.randomBytes(32);
  const aliceRatchetPrivateKey = env.rng.randomBytes(32);
  const kemEncapsulationSeed = env.rng.randomBytes(32);
  const input: PqxdhInput = {
    aliceIdentityPrivateKey: aliceIdentity.privateKey,
    aliceRegistrationId,
    aliceBasePrivateKey,
    aliceRatchetPrivateKey,
    kemEncapsulationSeed,
    bobIdentityPrivateKey: bobIdentity.privateKey,
    bobRegistrationId,
    bobSignedPreKeyId: signed.keyId,
    bobSignedPreKeyPrivateKey: signed.keyPair.privateKey,
    bobSignedPreKeySignature: signed.signature,
    bobOneTimePreKeyId: oneTime?.keyId ?? null,
    bobOneTimePreKeyPrivateKey: oneTime?.keyPair.privateKey ?? null,
    bobKyberPreKeyId: kyber.keyId,
    bobKyberPublicKey: kyber.publicKey,
    bobKyberSecretKey: kyber.secretKey,
    bobKyberPreKeySignature: kyber.signature,
    plaintext: utf8Bytes(k.plaintext),
  };
  const expected = computeExpected(c, input);
  const test: VectorTest = {
    id: k.id,
    comment: k.comment,
    rules: PQXDH_RULES,
    result: 'valid',
    input: inputJson(input),
    expected,
  };
  const failure = checkThroughImpl(c, input, expected);
  if (failure !== null) throw new GeneratorExpectationError(`${k.id}: ${failure.path}: ${failure.message}`);
  return test;
}

/** Generates the pqxdh family. */
export function generatePqxdhFamily(c: CryptoProvider): FamilyFile {
  return {
    family: FAMILY,
    version: VECTOR_FORMAT_VERSION,
    source: GENERATOR_SOURCE,
    tests: CASES.map((k) => generateCase(c, k)),
  };
}
