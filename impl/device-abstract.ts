/**
 * impl/'s projection of a device (impl/device.ts `DeviceState`) onto spec/device-abstract.ts: what
 * traces record and what the device conformance suite compares with model/device.ts's projection.
 * Fingerprints only, never keys.
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { DeviceAbstract } from '../spec/device-abstract.js';
import { fingerprint } from '../spec/keys.js';
import type { DeviceState } from './device.js';
import { abstractSesame } from './sesame.js';

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Projects a device state. */
export function abstractDevice(c: CryptoProvider, state: DeviceState): DeviceAbstract {
  return {
    lifecycle: state.lifecycle.kind,
    address: { userId: state.userId, deviceId: state.deviceId },
    sesame: abstractSesame(c, state.sesame),
    trust: Object.values(state.trust)
      .sort((a, b) => byText(a.userId, b.userId))
      .map((t) => ({
        userId: t.userId,
        accountKeyFp: t.accountKey === null ? null : fingerprint(c, t.accountKey),
        pendingAccountKeyChange: t.pendingAccountKey !== null,
        listVersion: t.list?.version ?? null,
      })),
    outbox: state.outbox
      .map((i) => ({
        messageId: i.messageId,
        recipient: i.recipient,
        kind: i.kind,
        stage: i.stage,
        attempts: i.attempts,
      }))
      .sort((a, b) => byText(a.messageId, b.messageId) || byText(a.recipient, b.recipient)),
    pending: state.pending
      .map((p) => ({ requestId: p.requestId, kind: p.request.kind }))
      .sort((a, b) => a.requestId - b.requestId),
    seenCount: state.seen.length,
    parkedEnvelopeIds: state.parked.map((p) => p.envelope.envelopeId),
    oneTimePreKeyIds: state.prekeys.oneTimePreKeys.map((k) => k.keyId),
    kyberPreKeyIds: state.prekeys.kyberPreKeys.map((k) => k.keyId),
    signedPreKeyIds: state.prekeys.signedPreKeys.map((k) => k.keyId),
    retiredSignedPreKeyIds: state.retiredSignedPreKeys.map((r) => r.keyId),
    initialMessages: state.initialMessages.length,
    chainSightings: state.chainSightings.length,
  };
}
