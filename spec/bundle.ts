/**
 * The prekey bundle a server hands to an initiator (WHITEPAPER.md, "PQXDH"): the responder's
 * identity key, signed prekey, at most one one-time prekey and one signed Kyber prekey. Shared by
 * impl/, model/ and the server rules.
 * @module
 */

/** The public half of a device's keys as a server hands it out (one OPK at most, one Kyber key). */
export interface PreKeyBundle {
  readonly registrationId: number;
  readonly deviceId: number;
  readonly identityKey: Uint8Array;
  readonly signedPreKeyId: number;
  readonly signedPreKey: Uint8Array;
  readonly signedPreKeySignature: Uint8Array;
  readonly preKeyId: number | null;
  readonly preKey: Uint8Array | null;
  readonly kyberPreKeyId: number | null;
  readonly kyberPreKey: Uint8Array | null;
  readonly kyberPreKeySignature: Uint8Array | null;
}
