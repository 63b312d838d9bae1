/**
 * impl/'s projection of the honest server's plain state (impl/server.ts `ServerState`) onto the
 * abstract server state of spec/server-abstract.ts, which the model's projection of its machine
 * context (model/server.ts `abstractServerOf`) must equal after every request (conformance suite).
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { InvariantError } from '../spec/errors.js';
import { addressKey } from '../spec/identity.js';
import { fingerprint } from '../spec/keys.js';
import {
  compareUserIds,
  type ServerAbstract,
  type ServerAccountAbstract,
  type ServerDroppedAbstract,
} from '../spec/server-abstract.js';
import type { ServerAccount, ServerState } from './server.js';

/** Envelopes dropped by rule per device of one account (keys of `droppedByRule` are `userId.deviceId`). */
function droppedOf(state: ServerState, userId: string): ServerDroppedAbstract[] {
  const out: ServerDroppedAbstract[] = [];
  for (const [key, count] of Object.entries(state.droppedByRule)) {
    const dot = key.lastIndexOf('.');
    if (key.slice(0, dot) !== userId || count === 0) continue;
    out.push({ deviceId: Number(key.slice(dot + 1)), count });
  }
  return out.sort((a, b) => a.deviceId - b.deviceId);
}

function abstractAccount(
  c: CryptoProvider,
  state: ServerState,
  userId: string,
  account: ServerAccount,
): ServerAccountAbstract {
  const devices = Object.entries(account.devices)
    .map(([key, device]) => {
      const deviceId = Number(key);
      return {
        deviceId,
        registrationId: device.registrationId,
        identityKeyFp: fingerprint(c, device.identityKey),
        mailboxDepth: device.mailbox.envelopes.length,
        nextEnvelopeId: device.mailbox.nextEnvelopeId,
        signedPreKeyId: device.preKeys.signedPreKey.keyId,
        oneTimePreKeys: device.preKeys.oneTimePreKeys.length,
        oneTimeKyberPreKeys: device.preKeys.kyberPreKeys.length,
        lastResortKyberPreKeyId: device.preKeys.lastResortKyberPreKey.keyId,
        oneTimePreKeyIdFloor: device.preKeys.oneTimePreKeyIdFloor,
        kyberPreKeyIdFloor: device.preKeys.kyberPreKeyIdFloor,
        droppedByRevocation: Object.hasOwn(state.droppedByRule, addressKey({ userId, deviceId }))
          ? (state.droppedByRule[addressKey({ userId, deviceId })] ?? 0)
          : 0,
      };
    })
    .sort((a, b) => a.deviceId - b.deviceId);
  return {
    userId,
    listVersion: account.deviceList.version,
    accountKeyFp: fingerprint(c, account.deviceList.accountKey),
    listedDeviceIds: account.deviceList.devices.map((entry) => entry.deviceId),
    devices,
    droppedByRevocation: droppedOf(state, userId),
    dedupEntries: account.recentSends.length,
  };
}

/** The abstract server state of impl/'s plain server state (spec/server-abstract.ts). */
export function abstractServer(c: CryptoProvider, state: ServerState): ServerAbstract {
  return {
    accounts: Object.keys(state.accounts)
      .sort(compareUserIds)
      .map((userId) => {
        const account = state.accounts[userId];
        if (account === undefined) throw new InvariantError('an own key of accounts has no value');
        return abstractAccount(c, state, userId, account);
      }),
    provisioningEntries: Object.keys(state.provisioning).length,
    blobs: Object.keys(state.blobs).length,
  };
}
