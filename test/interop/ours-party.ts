/**
 * Our implementation (impl/) wrapped in the same shape as {@link LibsignalParty}: one device with its
 * prekey state and a session record per peer, plain-byte bundles and wire messages. Used by the
 * interop tests and the benchmark; keeps every impl/ result (`Result`) instead of throwing.
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { Env } from '../../spec/env.js';
import type { ProtocolError, Result } from '../../spec/errors.js';
import type { Rng } from '../../spec/rng.js';
import {
  EMPTY_SESSION_RECORD,
  bundleFromPreKeyState,
  decryptMessage,
  encryptMessage,
  generatePreKeyState,
  processPreKeyBundle,
  type PreKeyBundle,
  type PreKeyState,
  type SessionRecord,
} from '../../impl/index.js';
import type { BundleOptions, PeerAddress, PlainBundle, WireMessage } from './libsignal-party.js';

/** Our bundle type → plain bytes (the shape LibsignalParty consumes). */
export function plainFromOurBundle(b: PreKeyBundle): PlainBundle {
  if (b.kyberPreKeyId === null || b.kyberPreKey === null || b.kyberPreKeySignature === null) {
    throw new Error('bundle without a Kyber prekey');
  }
  const base = {
    registrationId: b.registrationId,
    deviceId: b.deviceId,
    identityKey: b.identityKey,
    signedPreKeyId: b.signedPreKeyId,
    signedPreKey: b.signedPreKey,
    signedPreKeySignature: b.signedPreKeySignature,
    kyberPreKeyId: b.kyberPreKeyId,
    kyberPreKey: b.kyberPreKey,
    kyberPreKeySignature: b.kyberPreKeySignature,
  };
  return b.preKeyId !== null && b.preKey !== null
    ? { ...base, preKeyId: b.preKeyId, preKey: b.preKey }
    : base;
}

/** Plain bytes (e.g. libsignal's bundle) → our bundle type. */
export function ourBundleFromPlain(p: PlainBundle): PreKeyBundle {
  return {
    registrationId: p.registrationId,
    deviceId: p.deviceId,
    identityKey: p.identityKey,
    signedPreKeyId: p.signedPreKeyId,
    signedPreKey: p.signedPreKey,
    signedPreKeySignature: p.signedPreKeySignature,
    preKeyId: p.preKeyId ?? null,
    preKey: p.preKey ?? null,
    kyberPreKeyId: p.kyberPreKeyId,
    kyberPreKey: p.kyberPreKey,
    kyberPreKeySignature: p.kyberPreKeySignature,
  };
}

export interface OursPartyOptions {
  readonly oneTimePreKeys?: number;
  readonly oneTimeKyberPreKeys?: number;
  /** Injected clock in ms (default: Date.now). */
  readonly now?: () => number;
}

/** A failed step of ours, with its error code and rule. */
export class OursError extends Error {
  constructor(readonly error: ProtocolError) {
    super(`${error.code} [${error.rule}]: ${error.message}`);
  }
}

/** One device running our implementation. */
export class OursParty {
  readonly env: Env;
  prekeys: PreKeyState;
  readonly records = new Map<string, SessionRecord>();
  /** One-time EC / Kyber prekey ids already handed out in a bundle. */
  private readonly handedOut = new Set<number>();
  private readonly handedOutKyber = new Set<number>();
  private readonly now: () => number;

  private constructor(
    readonly name: string,
    readonly deviceId: number,
    crypto: CryptoProvider,
    rng: Rng,
    opts: OursPartyOptions,
  ) {
    this.env = { crypto, rng };
    this.now = opts.now ?? (() => Date.now());
    this.prekeys = generatePreKeyState(this.env, {
      ...(opts.oneTimePreKeys === undefined ? {} : { oneTimePreKeys: opts.oneTimePreKeys }),
      ...(opts.oneTimeKyberPreKeys === undefined ? {} : { oneTimeKyberPreKeys: opts.oneTimeKyberPreKeys }),
    });
  }

  static create(
    name: string,
    deviceId: number,
    crypto: CryptoProvider,
    rng: Rng,
    opts: OursPartyOptions = {},
  ): OursParty {
    return new OursParty(name, deviceId, crypto, rng, opts);
  }

  get identityKey(): Uint8Array {
    return this.prekeys.identityKeyPair.publicKey;
  }
  get registrationId(): number {
    return this.prekeys.registrationId;
  }
  get lastResortKyberId(): number {
    const k = this.prekeys.kyberPreKeys.find((x) => x.lastResort);
    if (k === undefined) throw new Error('no last-resort Kyber prekey');
    return k.keyId;
  }

  /** A plain bundle; one-time keys are not handed out twice. */
  bundle(opts: BundleOptions = {}): PlainBundle {
    let preKeyId: number | null = null;
    if (opts.withOneTimePreKey ?? true) {
      const k = this.prekeys.oneTimePreKeys.find((x) => !this.handedOut.has(x.keyId));
      if (k === undefined) throw new Error('one-time prekeys exhausted');
      this.handedOut.add(k.keyId);
      preKeyId = k.keyId;
    }
    let kyberPreKeyId = this.lastResortKyberId;
    if ((opts.kyber ?? 'one-time') === 'one-time') {
      const k = this.prekeys.kyberPreKeys.find((x) => !x.lastResort && !this.handedOutKyber.has(x.keyId));
      if (k === undefined) throw new Error('one-time Kyber prekeys exhausted');
      this.handedOutKyber.add(k.keyId);
      kyberPreKeyId = k.keyId;
    }
    return plainFromOurBundle(
      bundleFromPreKeyState(this.prekeys, { deviceId: this.deviceId, preKeyId, kyberPreKeyId }),
    );
  }

  record(peerName: string, peerDeviceId: number): SessionRecord {
    return this.records.get(`${peerName}.${peerDeviceId}`) ?? EMPTY_SESSION_RECORD;
  }

  setRecord(peerName: string, peerDeviceId: number, record: SessionRecord): void {
    this.records.set(`${peerName}.${peerDeviceId}`, record);
  }

  processBundle(peer: PeerAddress, plain: PlainBundle): Result<void> {
    const r = processPreKeyBundle(
      this.env,
      this.record(peer.name, peer.deviceId),
      { identityKeyPair: this.prekeys.identityKeyPair, registrationId: this.prekeys.registrationId },
      ourBundleFromPlain(plain),
      this.now(),
    );
    if (!r.ok) return r;
    this.setRecord(peer.name, peer.deviceId, r.value);
    return { ok: true, value: undefined };
  }

  encrypt(peerName: string, peerDeviceId: number, plaintext: Uint8Array): Result<WireMessage> {
    const r = encryptMessage(this.env, this.record(peerName, peerDeviceId), plaintext, this.now());
    if (!r.ok) return r;
    this.setRecord(peerName, peerDeviceId, r.value.record);
    return { ok: true, value: r.value.message };
  }

  decrypt(peerName: string, peerDeviceId: number, msg: WireMessage): Result<Uint8Array> {
    const r = decryptMessage(this.env, this.record(peerName, peerDeviceId), this.prekeys, msg);
    if (!r.ok) return r;
    this.setRecord(peerName, peerDeviceId, r.value.record);
    this.prekeys = r.value.prekeys;
    return { ok: true, value: r.value.plaintext };
  }

  /** Like {@link encrypt} but throws {@link OursError} on a rejection. */
  encryptOrThrow(peerName: string, peerDeviceId: number, plaintext: Uint8Array): WireMessage {
    const r = this.encrypt(peerName, peerDeviceId, plaintext);
    if (!r.ok) throw new OursError(r.error);
    return r.value;
  }

  /** Like {@link decrypt} but throws {@link OursError} on a rejection. */
  decryptOrThrow(peerName: string, peerDeviceId: number, msg: WireMessage): Uint8Array {
    const r = this.decrypt(peerName, peerDeviceId, msg);
    if (!r.ok) throw new OursError(r.error);
    return r.value;
  }
}
