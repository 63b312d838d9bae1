/**
 * Scenario stories: fan-out to every device of both users (Sesame §3.3; WP-SES-05) and simultaneous
 * session initiation (Sesame §3.4; libsignal's `simultaneous_initiate`).
 */
import { describe, expect, it } from 'vitest';
import { addContact, createWorld, device, run, send, sendQueued, sync, texts } from '../support/world.js';
import {
  createUser,
  expectFannedOut,
  expectNoUndecryptable,
  expectNothingShownTwice,
  outputsOfKind,
  talkingPair,
} from './stories.js';

describe('fan-out across three devices per user', () => {
  it('every device of both users sees every message exactly once, own messages as sync copies [WP-SES-05] [WP-XPORT-02]', () => {
    const w = createWorld('fan-out-3x3');
    const { alice, bob } = talkingPair(w, 2, 2);
    expect(alice).toEqual(['alice', 'alice-2', 'alice-3']);
    expect(bob).toEqual(['bob', 'bob-2', 'bob-3']);
    const sent: { from: string; to: string; text: string }[] = [];
    // Every device sends; some messages cross in flight (two sends before anyone fetches).
    const rounds: [string, string][][] = [
      [['alice-2', 'bob']],
      [
        ['bob-3', 'alice'],
        ['alice-3', 'bob'],
      ],
      [['bob-2', 'alice']],
      [
        ['alice', 'bob'],
        ['bob', 'alice'],
        ['alice-2', 'bob'],
      ],
    ];
    for (const [r, round] of rounds.entries()) {
      for (const [from, to] of round) {
        const text = `round ${r}: ${from} to ${to}`;
        send(w, from, [to], text);
        sent.push({ from, to, text });
      }
      sync(w);
    }
    for (const { from, to, text } of sent) expectFannedOut(w, from, to, text);
    for (const name of [...alice, ...bob]) expectNothingShownTwice(w, name);
    expectNoUndecryptable(w);
    // Each of the six devices saw the two greetings and the eight round messages, minus its own.
    for (const name of [...alice, ...bob]) {
      const own = sent.filter((s) => s.from === name).length + (name === 'alice' || name === 'bob' ? 1 : 0);
      expect(texts(w, name).length, name).toBe(sent.length + 2 - own);
    }
  });

  it('a send to both users and oneself fans out once per device, one sync copy per destination [WP-SES-05]', () => {
    const w = createWorld('fan-out-multi');
    const alice = createUser(w, 'alice', 1);
    const bob = createUser(w, 'bob', 1);
    const carol = createUser(w, 'carol', 1);
    addContact(w, 'alice', 'bob');
    addContact(w, 'alice', 'carol');
    send(w, 'alice', ['bob', 'carol', 'bob'], 'to both');
    sync(w);
    for (const name of [...bob, ...carol]) expect(texts(w, name), name).toEqual(['to both']);
    expect(texts(w, 'alice-2')).toEqual(['→bob: to both', '→carol: to both']);
    expect(texts(w, alice[0] ?? 'alice')).toEqual([]);
    expectNoUndecryptable(w);
  });
});

describe('simultaneous initiation', () => {
  it('two devices that both send first, before either fetches, converge on one conversation [WP-SES-10]', () => {
    const w = createWorld('simultaneous-1x1');
    createUser(w, 'alice');
    createUser(w, 'bob');
    addContact(w, 'alice', 'bob');
    addContact(w, 'bob', 'alice');
    // Both fetch the other's bundle and send a PreKey message before either reads its mailbox.
    sendQueued(w, 'alice', ['bob'], 'alice first');
    sendQueued(w, 'bob', ['alice'], 'bob first');
    run(w);
    expect(outputsOfKind(w, 'alice', 'sent')).toHaveLength(1);
    expect(outputsOfKind(w, 'bob', 'sent')).toHaveLength(1);
    sync(w);
    expect(texts(w, 'alice')).toEqual(['bob first']);
    expect(texts(w, 'bob')).toEqual(['alice first']);
    for (let i = 0; i < 4; i++) {
      send(w, 'alice', ['bob'], `a${i}`);
      send(w, 'bob', ['alice'], `b${i}`);
      sync(w);
    }
    // Both sides settled on sessions each can decrypt; nothing was lost or asked for again.
    expect(texts(w, 'alice')).toEqual(['bob first', 'b0', 'b1', 'b2', 'b3']);
    expect(texts(w, 'bob')).toEqual(['alice first', 'a0', 'a1', 'a2', 'a3']);
    expectNoUndecryptable(w);
    for (const name of ['alice', 'bob']) expect(outputsOfKind(w, name, 'resent'), name).toEqual([]);
  });

  it('four devices of two users all sending first converge, no message undecryptable [WP-SES-10] [WP-SES-05]', () => {
    const w = createWorld('simultaneous-2x2');
    const alice = createUser(w, 'alice', 1);
    const bob = createUser(w, 'bob', 1);
    for (const a of alice) addContact(w, a, 'bob');
    for (const b of bob) addContact(w, b, 'alice');
    for (const name of [...alice, ...bob]) {
      const to = device(w, name).userId === 'alice' ? 'bob' : 'alice';
      sendQueued(w, name, [to], `${name} first`);
    }
    run(w);
    sync(w);
    for (const name of [...alice, ...bob]) {
      const to = device(w, name).userId === 'alice' ? 'bob' : 'alice';
      expectFannedOut(w, name, to, `${name} first`);
    }
    for (let i = 0; i < 3; i++) {
      for (const name of [...alice, ...bob]) {
        const to = device(w, name).userId === 'alice' ? 'bob' : 'alice';
        send(w, name, [to], `${name} ${i}`);
      }
      sync(w);
    }
    for (let i = 0; i < 3; i++) {
      for (const name of [...alice, ...bob]) {
        const to = device(w, name).userId === 'alice' ? 'bob' : 'alice';
        expectFannedOut(w, name, to, `${name} ${i}`);
      }
    }
    for (const name of [...alice, ...bob]) expectNothingShownTwice(w, name);
    expectNoUndecryptable(w);
  });
});
