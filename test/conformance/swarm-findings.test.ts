/**
 * Stories distilled from simulator runs that broke a property (simulator/regressions/corpus.json),
 * each reduced to the steps that matter: a server-mode sender fetching bundles forever against an
 * outdated list (WP-TRUST-06). Every story runs in a twin world (test/conformance/device-twin.ts), so
 * after each device step impl and the model must also agree on outputs, random draws and abstract
 * state.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SEND_ATTEMPTS } from '../../spec/constants.js';
import { SPEC_OPTIONS } from '../../spec/security-mode.js';
import { TwinWorld } from './device-twin.js';
import { pair } from './hardened-scenarios.js';

describe('findings of the swarm, both engines step by step', () => {
  it('server mode: a bundle that disagrees with the held list makes the sender refresh the list, not fetch bundles forever [WP-TRUST-06]', () => {
    const w = new TwinWorld('findings/server-mode-bundle-list', SPEC_OPTIONS);
    pair(w);
    w.send('alice', ['bob'], 'before the reset');
    w.sync();
    // Bob loses his primary and resets the account: a new identity key at bob.1 and a newer list.
    const version = w.implState('bob').trust['bob']?.list?.version ?? 1;
    w.resetAccount('bob', 'bob', version);
    w.addContact('bob', 'alice');
    // Bob writes first: Alice's record of bob.1 takes the new identity key from his PreKey message,
    // while the list she holds still names the old one.
    w.send('bob', ['alice'], 'after the reset');
    w.sync();
    expect(w.texts('alice')).toContain('after the reset');
    const bundlesBefore = w
      .outputsOf('alice')
      .impl.filter((o) => o.kind === 'request' && o.request.kind === 'get-bundles').length;
    w.send('alice', ['bob'], 'answer');
    w.sync();
    const bundleRequests =
      w.outputsOf('alice').impl.filter((o) => o.kind === 'request' && o.request.kind === 'get-bundles')
        .length - bundlesBefore;
    expect(bundleRequests).toBeLessThanOrEqual(MAX_SEND_ATTEMPTS);
    expect(w.texts('bob')).toContain('answer');
    expect(w.implState('alice').trust['bob']?.list?.version).toBeGreaterThan(version);
    w.compareAll('after the answer');
  });
});
