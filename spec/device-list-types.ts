/**
 * Types of the signed device list (WHITEPAPER.md, "Device lists"): the account key, held by the
 * primary device, signs a versioned list of the account's devices and their identity keys. The
 * codec and signature functions live in spec/device-list.ts.
 * @module
 */
import type { DeviceId, UserId } from './identity.js';

/** One device in a list. */
export interface DeviceListEntry {
  readonly deviceId: DeviceId;
  /** The device's own identity key, `0x05 ‖ u`. */
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
}

/** A device list: strictly increasing `version`, devices sorted by id, no duplicates. */
export interface DeviceList {
  readonly userId: UserId;
  readonly version: number;
  /** The account key that signs this list, `0x05 ‖ u`. */
  readonly accountKey: Uint8Array;
  readonly devices: readonly DeviceListEntry[];
}

/** The encoded list as signed, and the account key's XEdDSA signature over `prefix ‖ list`. */
export interface SignedDeviceList {
  readonly list: Uint8Array;
  readonly signature: Uint8Array;
}
