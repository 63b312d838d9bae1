/**
 * The order and size of every random draw each operation makes (WP-KEYS-09). Two engines fed the
 * same `Rng` stream (spec/rng.ts) produce the same bytes only if they draw identically; this table is the
 * contract, and tests record the draws an engine makes and compare them with it.
 * @module
 */

/** One random draw: what it is for and how many bytes it takes. */
export interface Draw {
  readonly purpose: string;
  readonly bytes: number;
}

/** Draw schedules by operation name. */
export const DRAWS = Object.freeze({
  /** An X25519 key pair (identity, signed prekey, one-time prekey, base key, ratchet key). */
  generateKeyPair: [{ purpose: 'X25519 private key', bytes: 32 }],
  /** An XEdDSA signature: the 64-byte random `Z`. */
  xeddsaSign: [{ purpose: 'XEdDSA nonce Z', bytes: 64 }],
  /** A Kyber-1024 key pair: ML-KEM seed `d ‖ z`. */
  kemGenerateKeyPair: [{ purpose: 'Kyber-1024 keygen seed d‖z', bytes: 64 }],
  /** A Kyber-1024 encapsulation: the round-3 message seed (hashed with SHA3-256 before use). */
  kemEncapsulate: [{ purpose: 'Kyber-1024 encapsulation seed', bytes: 32 }],
  /** WP-PQXDH-04: the initiator's PQXDH: base key, first ratchet key, then the KEM encapsulation. */
  pqxdhInitiate: [
    { purpose: 'base key EK_A', bytes: 32 },
    { purpose: 'first sending ratchet key', bytes: 32 },
    { purpose: 'Kyber-1024 encapsulation seed', bytes: 32 },
  ],
  /** The responder's PQXDH draws nothing: its first ratchet key is the signed prekey. */
  pqxdhAccept: [],
  /** WP-DR-06: a receiving DH ratchet step draws the new sending ratchet key. */
  dhRatchetStep: [{ purpose: 'new sending ratchet key', bytes: 32 }],
  /** A registration id: two bytes, reduced to 1..16380 (libsignal's range). */
  generateRegistrationId: [{ purpose: 'registration id', bytes: 2 }],
  /** A signed prekey: its key pair, then the XEdDSA nonce of its signature. */
  generateSignedPreKey: [
    { purpose: 'X25519 private key', bytes: 32 },
    { purpose: 'XEdDSA nonce Z', bytes: 64 },
  ],
  /** WP-LIFE-07: a signed prekey rotation draws exactly what a new signed prekey draws. */
  rotateSignedPreKey: [
    { purpose: 'X25519 private key', bytes: 32 },
    { purpose: 'XEdDSA nonce Z', bytes: 64 },
  ],
  /** A Kyber prekey: its key pair seed, then the XEdDSA nonce of its signature. */
  generateKyberPreKey: [
    { purpose: 'Kyber-1024 keygen seed d‖z', bytes: 64 },
    { purpose: 'XEdDSA nonce Z', bytes: 64 },
  ],
  /** Encrypting a message draws nothing (the IV comes from the message-key KDF). */
  ratchetEncrypt: [],
  /** WP-LINK-04: a provisioning envelope draws the sender's ephemeral X25519 key, then the CBC IV. */
  provisionEnvelope: [
    { purpose: 'X25519 private key', bytes: 32 },
    { purpose: 'AES-CBC IV', bytes: 16 },
  ],
  /** WP-ATT-01: an attachment draws its 64-byte key (AES ‖ HMAC), then the CBC IV. */
  encryptAttachment: [
    { purpose: 'attachment key (AES-256 ‖ HMAC-SHA256)', bytes: 64 },
    { purpose: 'AES-CBC IV', bytes: 16 },
  ],
} satisfies Record<string, readonly Draw[]>);
