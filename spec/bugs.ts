/**
 * Planted bugs (WHITEPAPER.md, "Simulator", WP-SIM rules): deliberate defects that BOTH engines
 * (impl/ and model/) read from the environment, so that under `--engine both` an invariant — not a
 * divergence — must catch them. The test suite proves every invariant catches its planted bug; a
 * checker that cannot fail is a defect. Production code never sets these.
 * @module
 */

/** Every planted bug, with the invariant that must catch it. */
export const PLANTED_BUGS = Object.freeze({
  'skip-mac-check': 'a forged or corrupted message is accepted (plaintext-integrity invariant)',
  'accept-past-forward-jump': 'a counter beyond MAX_FORWARD_JUMPS is accepted (session-bounds invariant)',
  'reuse-message-key': 'two messages are encrypted under one message key (no-key-reuse invariant)',
  'deliver-twice': 'a payload already shown is shown again (no-duplicate-delivery invariant)',
  'ignore-device-removal': 'senders keep encrypting to a revoked device (post-revocation invariant)',
  'never-clean-stale': 'stale records are never deleted (stale-cleanup liveness property)',
  'server-drops-message': 'the server loses an accepted message (exactly-once delivery invariant)',
  'server-keeps-plaintext': 'the server stores a plaintext copy (server-sees-no-plaintext invariant)',
  'server-rehands-prekey':
    'the server hands out one-time prekeys without deleting them (one-time-prekey-once invariant)',
  'history-to-new-device':
    'a newly linked device receives messages sent before it was linked (no-history invariant)',
} as const);

/** A planted bug's name. */
export type BugName = keyof typeof PLANTED_BUGS;

/** True for a known planted bug name. */
export function isBugName(name: string): name is BugName {
  return Object.hasOwn(PLANTED_BUGS, name);
}

/** Whether `bug` is planted in this environment. */
export function planted(bugs: readonly BugName[] | undefined, bug: BugName): boolean {
  return bugs !== undefined && bugs.includes(bug);
}
