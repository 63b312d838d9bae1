/**
 * Security modes (WHITEPAPER.md "Hardened modes"): the switches that turn Lockstep's defences
 * against published attacks on Signal's session handling on or off, in both engines alike.
 *
 * - `spec` is the specification-faithful behaviour (Sesame rev 2, X3DH/PQXDH as written, device
 *   lists taken from the server): the simulator's attack scenarios show each attack succeeding here.
 * - `hardened` (the default of both engines) turns every defence on: signed device lists
 *   (WP-TRUST-*), sequential sessions (WP-SES-18/19; Cremers–Jacomme–Naska 2023), the
 *   initial-message replay cache (WP-PQXDH-13; Kobeissi–Bhargavan–Blanchet 2017) and clone
 *   detection (WP-SES-20; Cohn-Gordon et al. 2020).
 *
 * impl/device.ts `DeviceOptions` and model/device-data.ts `ModelDeviceOptions` are structurally
 * {@link SecurityOptions}, so one value configures either engine.
 * @module
 */

/** The two named configurations: specification-faithful, or every hardening on. */
export type SecurityMode = 'spec' | 'hardened';

/** The individual switches; see WHITEPAPER.md "Hardened modes" for each rule and its cost. */
export interface SecurityOptions {
  /**
   * WP-TRUST-02: `signed` — device lists must be signed by the pinned account key; `server` — the
   * server's word is taken (Sesame §3.3).
   */
  readonly deviceListAuth: 'signed' | 'server';
  /**
   * WP-SES-18/19, sequential sessions (CJN23 fix): a session superseded by a newer established one
   * can neither send, start a new receiving chain nor become active again.
   */
  readonly sequentialSessions: boolean;
  /**
   * WP-PQXDH-13, initial-message replay cache (KBB fix): a PreKey message made without a one-time
   * prekey is accepted at most once while the signed prekey it used is held.
   */
  readonly initialReplayCache: boolean;
  /**
   * WP-SES-20, clone detection: authenticated evidence that a peer device's ratchet state forked is
   * reported (`clone-detected`) and the message refused.
   */
  readonly cloneDetection: boolean;
}

/** Every defence on: the default of both engines. */
export const HARDENED_OPTIONS: SecurityOptions = Object.freeze({
  deviceListAuth: 'signed',
  sequentialSessions: true,
  initialReplayCache: true,
  cloneDetection: true,
});

/** Specification-faithful behaviour: every defence off, device lists from the server. */
export const SPEC_OPTIONS: SecurityOptions = Object.freeze({
  deviceListAuth: 'server',
  sequentialSessions: false,
  initialReplayCache: false,
  cloneDetection: false,
});

/** The options of a named mode. */
export function securityOptions(mode: SecurityMode): SecurityOptions {
  return mode === 'spec' ? SPEC_OPTIONS : HARDENED_OPTIONS;
}
