/**
 * Scenarios of recovery after a device or its contact changed under it, built on a twin world
 * (test/conformance/device-twin.ts) so both engines run them step by step: a device restored from an
 * older copy of its state while the server still hands out prekeys a later state uploaded
 * (WP-LIFE-06, WP-SRV-09), and a contact link given out before the contact's account reset
 * (WP-TRUST-01). Each returns what the tests assert on; device-quick.test.ts checks the outcome,
 * device-paths.test.ts runs them for transition coverage.
 * @module
 */
import type { DeviceOutput } from '../../impl/device.js';
import type { TwinWorld } from './device-twin.js';

/** What {@link restockAfterRestore} observed. */
export interface RestockOutcome {
  /** Uploads bob made before the restore, and in all. */
  readonly uploadsBefore: number;
  readonly uploadsAfter: number;
  /** Error codes of bob's undecryptable reports after the restore. */
  readonly failures: readonly string[];
  /** True when every one-time Kyber key the server still stores for bob is one bob holds. */
  readonly serverHoldsOnlyUsableKeys: boolean;
  /** How often bob was shown the message sent after the restore. */
  readonly shownAfterRestore: number;
}

const uploadsOf = (w: TwinWorld, name: string): number =>
  w.outputsOf(name).impl.filter((o) => o.kind === 'request' && o.request.kind === 'upload-prekeys').length;

/**
 * bob is backed up right after registering; two senders use his two one-time Kyber keys, so he
 * makes and uploads the next two. Restored from the backup he holds neither, and the server hands the
 * first one to a third sender.
 */
export function restockAfterRestore(w: TwinWorld): RestockOutcome {
  w.createAccount('bob', 'bob');
  const backup = w.backup('bob');
  for (const name of ['s1', 's2']) {
    w.createAccount(name, name);
    w.addContact(name, 'bob');
    w.send(name, ['bob'], `before ${name}`);
  }
  w.sync();
  const uploadsBefore = uploadsOf(w, 'bob');
  if (w.implState('bob').nextKyberPreKeyId <= backup.impl.nextKyberPreKeyId)
    throw new Error('fixture: bob made no new Kyber keys');
  w.restore('bob', backup);
  const reported = w.outputsOf('bob').impl.length;
  w.createAccount('s3', 's3');
  w.addContact('s3', 'bob');
  w.send('s3', ['bob'], 'after the restore');
  w.sync();
  const since: readonly DeviceOutput[] = w.outputsOf('bob').impl.slice(reported);
  const held = new Set(w.implState('bob').prekeys.kyberPreKeys.map((k) => k.keyId));
  const stored = w.impl.server.accounts['bob']?.devices['1']?.preKeys.kyberPreKeys ?? [];
  return {
    uploadsBefore,
    uploadsAfter: uploadsOf(w, 'bob'),
    failures: since.flatMap((o) => (o.kind === 'undecryptable' ? [o.error.code] : [])),
    serverHoldsOnlyUsableKeys: stored.length > 0 && stored.every((k) => held.has(k.keyId)),
    shownAfterRestore: w.texts('bob').filter((t) => t === 'after the restore').length,
  };
}

/** What {@link linkBeforeReset} observed on alice-2. */
export interface LinkOutcome {
  /** Error codes alice-2 reported after adding bob from the old link. */
  readonly errors: readonly string[];
  /** Texts and undecryptable reports on alice-2 before the new link, and the users of parked envelopes. */
  readonly textsBeforeNewLink: readonly string[];
  readonly undecryptableBeforeNewLink: number;
  readonly parkedFrom: readonly string[];
  /** Texts alice-2 was shown in the end. */
  readonly textsAfterNewLink: readonly string[];
}

/**
 * alice and bob talk; bob loses his primary and resets his account; alice links alice-2, which adds
 * bob from the link alice was given before the reset. bob writes to alice; then alice-2's user adds
 * bob's current link.
 */
export function linkBeforeReset(w: TwinWorld): LinkOutcome {
  w.createAccount('alice', 'alice');
  w.createAccount('bob', 'bob');
  w.addContact('alice', 'bob');
  w.addContact('bob', 'alice');
  const oldLink = w.contactLinkOf('bob');
  const version = w.implState('bob').trust['bob']?.list?.version ?? 1;
  w.resetAccount('bob', 'bob', version);
  w.addContact('bob', 'alice');
  w.linkDevice('alice', 'alice-2');
  w.input('alice-2', { kind: 'user.add-contact', link: oldLink });
  w.run();
  const errors = w.outputsOf('alice-2').impl.flatMap((o) => (o.kind === 'error' ? [o.error.code] : []));
  w.send('bob', ['alice'], 'after my reset');
  w.sync();
  const textsBeforeNewLink = w.texts('alice-2');
  const undecryptableBeforeNewLink = w
    .outputsOf('alice-2')
    .impl.filter((o) => o.kind === 'undecryptable').length;
  const parkedFrom = w.implState('alice-2').parked.map((p) => p.envelope.sender.userId);
  w.input('alice-2', { kind: 'user.add-contact', link: w.contactLinkOf('bob') });
  w.run();
  w.sync();
  return {
    errors,
    textsBeforeNewLink,
    undecryptableBeforeNewLink,
    parkedFrom,
    textsAfterNewLink: w.texts('alice-2'),
  };
}
