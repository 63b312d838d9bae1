/**
 * The device machine alone (model/device.ts), driven with hand-made server responses: lifecycle
 * (WP-LIFE-01..04), transport (WP-XPORT-01/02), the receive pipeline's first checks (WP-SES-04,
 * WP-TRUST-05), and the rule index (every guard and action of the configuration is in RULES).
 * Agreement with impl/device.ts is the conformance suite's job (test/conformance/device-quick.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { signDeviceList } from '../spec/device-list.js';
import type { DeviceListEntry } from '../spec/device-list-types.js';
import { generateKeyPair } from '../spec/keys.js';
import { seededRng } from '../spec/rng.js';
import type { Envelope } from '../spec/server-api.js';
import {
  abstractDeviceOf,
  createDeviceMachine,
  createPrimaryDeviceModel,
  createProvisioningDeviceModel,
  resumeDeviceModel,
  RULES,
  type ModelDeviceOutput,
} from './device.js';

const NOW = 1_700_000_000_000;

function env(seed: string) {
  return { crypto: nodeProvider, rng: seededRng(seed) };
}

/** A registered primary device. */
function linkedPrimary(seed = 'device-model') {
  const e = env(seed);
  const start = createPrimaryDeviceModel(e, 'alice', NOW);
  const runner = start.runner;
  const register = start.outputs[0];
  if (register?.kind !== 'request') throw new Error('no registration request');
  const linked = runner.step(
    { kind: 'net.response', requestId: register.requestId, response: { kind: 'ok' } },
    NOW,
  );
  return { e, runner, start, linked };
}

function requests(outputs: readonly ModelDeviceOutput[]) {
  return outputs.flatMap((o) => (o.kind === 'request' ? [o] : []));
}

function envelope(
  envelopeId: number,
  sender: { userId: string; deviceId: number },
  type: Envelope['type'],
): Envelope {
  return {
    envelopeId,
    messageId: '00112233445566778899aabbccddeeff',
    sender,
    type,
    bytes: new Uint8Array(17).fill(1),
    serverTimestamp: NOW,
  };
}

/** Every named guard and action in the machine configuration, walked from its JSON definition. */
function namesInConfig(): Set<string> {
  const machine = createDeviceMachine(env('names'));
  const names = new Set<string>();
  const visitGuard = (guard: unknown): void => {
    if (typeof guard === 'string') names.add(guard);
    else if (guard !== null && typeof guard === 'object') {
      const g = guard as { type?: unknown; params?: unknown };
      if (typeof g.type === 'string' && !g.type.startsWith('xstate.')) names.add(g.type);
      const inner = (g.params as { guards?: unknown } | undefined)?.guards;
      if (Array.isArray(inner)) inner.forEach(visitGuard);
      const single = (g.params as { guard?: unknown } | undefined)?.guard;
      if (single !== undefined) visitGuard(single);
    }
  };
  const visit = (node: typeof machine.root): void => {
    for (const transitions of node.transitions.values())
      for (const t of transitions) {
        if (t.guard !== undefined) visitGuard(t.guard);
        for (const a of t.actions as readonly unknown[]) {
          if (typeof a === 'string') names.add(a);
          else if (a !== null && typeof a === 'object' && 'type' in a) names.add(String(a.type));
        }
      }
    for (const t of node.always ?? []) {
      if (t.guard !== undefined) visitGuard(t.guard);
      for (const a of t.actions as readonly unknown[]) {
        if (typeof a === 'string') names.add(a);
        else if (a !== null && typeof a === 'object' && 'type' in a) names.add(String(a.type));
      }
    }
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(machine.root);
  return names;
}

describe('device machine', () => {
  it('lists every guard and action of its configuration in RULES, with rule IDs, and nothing else', () => {
    const inConfig = namesInConfig();
    const machine = createDeviceMachine(env('names'));
    const implemented = new Set([
      ...Object.keys(machine.implementations.guards),
      ...Object.keys(machine.implementations.actions),
    ]);
    for (const name of inConfig) expect(Object.keys(RULES), `${name} missing from RULES`).toContain(name);
    for (const name of implemented) expect(Object.keys(RULES), `${name} missing from RULES`).toContain(name);
    for (const name of Object.keys(RULES))
      expect(implemented.has(name), `${name} in RULES but not implemented`).toBe(true);
    for (const ids of Object.values(RULES)) for (const id of ids) expect(id).toMatch(/^WP-[A-Z]+-\d{2}$/);
  });

  it('has the lifecycle states and the receive pipeline as transient states', () => {
    const machine = createDeviceMachine(env('shape'));
    const ids: string[] = [];
    let transitions = 0;
    const visit = (node: typeof machine.root): void => {
      ids.push(node.id);
      for (const list of node.transitions.values()) transitions += list.length;
      transitions += node.always?.length ?? 0;
      for (const child of Object.values(node.states)) visit(child);
    };
    visit(machine.root);
    for (const id of [
      'device.creatingAccount',
      'device.provisioning.waiting',
      'device.provisioning.verifying',
      'device.registering',
      'device.linked.idle',
      'device.linked.receiving.checkSender',
      'device.linked.receiving.decodePayload',
      'device.revoked',
    ])
      expect(ids).toContain(id);
    expect(ids.length).toBe(17);
    expect(transitions).toBeGreaterThan(60);
    console.log(`device machine: ${ids.length} state nodes, ${transitions} transitions`);
  });

  it('a primary registers with a proof and is linked once the server accepts [WP-LIFE-01]', () => {
    const { start, runner, linked } = linkedPrimary();
    expect(requests(start.outputs).map((r) => r.request.kind)).toEqual(['register-account']);
    expect(linked).toEqual([{ kind: 'linked', address: { userId: 'alice', deviceId: 1 } }]);
    expect(runner.stateValue()).toEqual({ linked: 'idle' });
    expect(abstractDeviceOf(nodeProvider, runner.context()).lifecycle).toBe('linked');
  });

  it('refuses user actions until linked, and a registration error keeps it registering [WP-LIFE-01]', () => {
    const start = createPrimaryDeviceModel(env('unlinked'), 'alice', NOW);
    const out = start.runner.step(
      { kind: 'user.send', recipients: ['bob'], content: { kind: 'text', text: 'x' } },
      NOW,
    );
    expect(out).toEqual([
      {
        kind: 'error',
        context: 'send',
        error: { code: 'LIFE_NOT_LINKED', rule: 'WP-LIFE-01', message: 'device is registering' },
      },
    ]);
    const failed = start.runner.step(
      {
        kind: 'net.response',
        requestId: 1,
        response: { kind: 'error', code: 'SERVER_USER_EXISTS', rule: 'WP-SRV-05', message: 'taken' },
      },
      NOW,
    );
    expect(failed[0]?.kind).toBe('error');
    expect(start.runner.stateValue()).toBe('registering');
  });

  it('resends an unanswered request unchanged, and ignores answers to nothing [WP-XPORT-01]', () => {
    const start = createPrimaryDeviceModel(env('resend'), 'alice', NOW);
    const again = start.runner.step({ kind: 'timer.resend' }, NOW);
    expect(again).toEqual(start.outputs);
    expect(start.runner.step({ kind: 'net.response', requestId: 99, response: { kind: 'ok' } }, NOW)).toEqual(
      [],
    );
  });

  it('fetches once at a time and acknowledges envelopes only after deciding them [WP-XPORT-02] [WP-SES-04]', () => {
    const { runner } = linkedPrimary('fetch');
    const first = requests(runner.step({ kind: 'net.fetch' }, NOW));
    expect(first.map((r) => r.request.kind)).toEqual(['fetch']);
    expect(runner.step({ kind: 'net.fetch' }, NOW)).toEqual([]);
    const fetchId = first[0]?.requestId ?? 0;
    const out = runner.step(
      {
        kind: 'net.response',
        requestId: fetchId,
        response: {
          kind: 'envelopes',
          envelopes: [envelope(1, { userId: 'alice', deviceId: 1 }, 'whisper')],
        },
      },
      NOW,
    );
    expect(out[0]).toMatchObject({
      kind: 'error',
      context: 'receive',
      error: { code: 'TRUST_UNKNOWN_SENDER_DEVICE' },
    });
    expect(requests(out).map((r) => r.request)).toContainEqual({
      kind: 'ack',
      device: { userId: 'alice', deviceId: 1 },
      envelopeIds: [1],
    });
    expect(runner.stateValue()).toEqual({ linked: 'idle' });
  });

  it('parks an envelope from an unlisted device until its list arrives, then rejects it [WP-TRUST-05]', () => {
    const { runner } = linkedPrimary('parked');
    const fetchId = requests(runner.step({ kind: 'net.fetch' }, NOW))[0]?.requestId ?? 0;
    const out = runner.step(
      {
        kind: 'net.response',
        requestId: fetchId,
        response: {
          kind: 'envelopes',
          envelopes: [envelope(7, { userId: 'mallory', deviceId: 3 }, 'whisper')],
        },
      },
      NOW,
    );
    const listRequest = requests(out).find((r) => r.request.kind === 'get-device-list');
    expect(listRequest?.request).toEqual({ kind: 'get-device-list', userId: 'mallory' });
    expect(requests(out).some((r) => r.request.kind === 'ack')).toBe(false);
    expect(abstractDeviceOf(nodeProvider, runner.context()).parkedEnvelopeIds).toEqual([7]);
    const decided = runner.step(
      {
        kind: 'net.response',
        requestId: listRequest?.requestId ?? 0,
        response: { kind: 'error', code: 'SERVER_UNKNOWN_USER', rule: 'WP-SRV-12', message: 'no such user' },
      },
      NOW,
    );
    expect(decided.map((o) => o.kind)).toEqual(['error', 'undecryptable', 'request']);
    expect(decided[1]).toMatchObject({ error: { code: 'TRUST_UNKNOWN_SENDER_DEVICE' } });
    expect(abstractDeviceOf(nodeProvider, runner.context()).parkedEnvelopeIds).toEqual([]);
  });

  it("asks again under a refusal's list that still names the sender device, and gives up when it does not [WP-XPORT-09]", () => {
    const { e, runner } = linkedPrimary('retry-stale');
    const accountKey = generateKeyPair(nodeProvider, e.rng);
    const entry = (deviceId: number, registrationId: number): DeviceListEntry => ({
      deviceId,
      identityKey: generateKeyPair(nodeProvider, e.rng).publicKey,
      registrationId,
    });
    const primary = entry(1, 77);
    const list = (version: number, devices: readonly DeviceListEntry[]) =>
      signDeviceList(
        nodeProvider,
        accountKey.privateKey,
        { userId: 'mallory', version, accountKey: accountKey.publicKey, devices },
        e.rng.randomBytes(64),
      );
    // An undecryptable envelope from mallory's device 3, once mallory's list is known.
    const fetchId = requests(runner.step({ kind: 'net.fetch' }, NOW))[0]?.requestId ?? 0;
    const parked = runner.step(
      {
        kind: 'net.response',
        requestId: fetchId,
        response: {
          kind: 'envelopes',
          envelopes: [envelope(5, { userId: 'mallory', deviceId: 3 }, 'whisper')],
        },
      },
      NOW,
    );
    const listId = requests(parked).find((r) => r.request.kind === 'get-device-list')?.requestId ?? 0;
    const decided = runner.step(
      {
        kind: 'net.response',
        requestId: listId,
        response: { kind: 'device-list', deviceList: list(1, [primary, entry(3, 111)]) },
      },
      NOW,
    );
    const retryOf = (outputs: readonly ModelDeviceOutput[]) =>
      requests(outputs).flatMap((r) => (r.request.kind === 'send' ? [r] : []));
    const first = retryOf(decided)[0];
    if (first?.request.kind !== 'send') throw new Error('no retry request');
    expect(first.request.messages.map((m) => [m.type, m.deviceId, m.registrationId])).toEqual([
      ['retry-request', 3, 111],
    ]);
    // Refused as stale: the refusal's list names device 3 under registration 222, so it goes again.
    const again = runner.step(
      {
        kind: 'net.response',
        requestId: first.requestId,
        response: {
          kind: 'refused',
          refusal: { kind: 'stale-devices', stale: [3], deviceList: list(2, [primary, entry(3, 222)]) },
        },
      },
      NOW,
    );
    const second = retryOf(again)[0];
    if (second?.request.kind !== 'send') throw new Error('not asked again');
    expect(second.request.messageId).toBe(first.request.messageId);
    expect(second.request.messages.map((m) => [m.type, m.deviceId, m.registrationId])).toEqual([
      ['retry-request', 3, 222],
    ]);
    // Refused again, under a list without device 3: given up.
    const gone = runner.step(
      {
        kind: 'net.response',
        requestId: second.requestId,
        response: {
          kind: 'refused',
          refusal: { kind: 'mismatched-devices', missing: [], extra: [3], deviceList: list(3, [primary]) },
        },
      },
      NOW,
    );
    expect(retryOf(gone)).toEqual([]);
    expect(gone.filter((o) => o.kind === 'send-failed')).toMatchObject([
      { messageId: first.request.messageId, error: { code: 'XPORT_SEND_ATTEMPTS_EXHAUSTED' } },
    ]);
  });

  it('learns its revocation from the server and refuses to act afterwards [WP-LIFE-04]', () => {
    const { runner } = linkedPrimary('revoked');
    const fetchId = requests(runner.step({ kind: 'net.fetch' }, NOW))[0]?.requestId ?? 0;
    const out = runner.step(
      {
        kind: 'net.response',
        requestId: fetchId,
        response: { kind: 'error', code: 'SERVER_UNKNOWN_DEVICE', rule: 'WP-SRV-12', message: 'gone' },
      },
      NOW,
    );
    expect(out).toEqual([{ kind: 'revoked' }]);
    expect(runner.stateValue()).toBe('revoked');
    const refused = runner.step(
      {
        kind: 'user.add-contact',
        link: { userId: 'bob', accountKeyFingerprint: new Uint8Array(32), inviteToken: null },
      },
      NOW,
    );
    expect(refused[0]).toMatchObject({ kind: 'error', error: { code: 'LIFE_REVOKED' } });
  });

  it('only the primary changes the device list [WP-LIFE-02]', () => {
    const { e, runner } = linkedPrimary('secondary');
    const secondary = resumeDeviceModel(
      e,
      { ...runner.context(), accountPrivateKey: null },
      runner.stateValue(),
    );
    const out = secondary.step({ kind: 'user.revoke-device', deviceId: 2 }, NOW);
    expect(out[0]).toMatchObject({
      kind: 'error',
      context: 'revoke-device',
      error: { code: 'LIFE_NOT_PRIMARY' },
    });
    const unknown = runner.step({ kind: 'user.revoke-device', deviceId: 5 }, NOW);
    expect(unknown[0]).toMatchObject({ kind: 'error', error: { code: 'LIFE_UNKNOWN_DEVICE' } });
  });

  it('a provisioning device polls its relay once at a time and refuses a garbage message [WP-LIFE-03]', () => {
    const created = createProvisioningDeviceModel(env('provisioning'), NOW);
    expect(created.outputs).toEqual([]);
    const poll = requests(created.runner.step({ kind: 'timer.poll-provisioning' }, NOW));
    expect(poll.map((r) => r.request)).toEqual([
      { kind: 'provision-get', address: created.code.relayAddress },
    ]);
    expect(created.runner.step({ kind: 'timer.poll-provisioning' }, NOW)).toEqual([]);
    const refused = created.runner.step(
      {
        kind: 'net.response',
        requestId: poll[0]?.requestId ?? 0,
        response: { kind: 'provision', bytes: new Uint8Array(200) },
      },
      NOW,
    );
    expect(refused[0]).toMatchObject({
      kind: 'error',
      context: 'provision',
      error: { code: 'LIFE_PROVISION_INVALID' },
    });
    expect(created.runner.stateValue()).toEqual({ provisioning: 'waiting' });
  });

  it('is deterministic: the same seed gives the same outputs', () => {
    const a = createPrimaryDeviceModel(env('same'), 'alice', NOW).outputs;
    const b = createPrimaryDeviceModel(env('same'), 'alice', NOW).outputs;
    expect(a).toEqual(b);
  });
});
