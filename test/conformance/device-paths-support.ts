/**
 * Support for the device machine's transition coverage (test/conformance/device-paths.test.ts): a
 * twin world (test/conformance/device-twin.ts) that records which transitions of the model's
 * device machine fired, and a forger that builds authenticated envelopes with arbitrary plaintexts
 * (a hostile sender's client, or a server relabelling senders).
 *
 * Transitions are recorded from xstate's own `@xstate.microstep` inspection events (keys as
 * tools/model-diagrams.ts `listTransitions` names them), attached to every model actor the moment
 * the twin world adopts or restores it. The only microsteps that run before that moment are the
 * ones `actor.start()` takes: the eventless branch out of `creatingAccount`. That branch is read
 * off the state the actor started in (`registering` or `provisioning`, the machine's only two
 * branches there), the first time a device name appears.
 * @module
 */
import type { AnyTransitionDefinition } from 'xstate';
import { nodeProvider } from '../../spec/crypto/node.js';
import type { Env } from '../../spec/env.js';
import type { DeviceAddress, MessageId } from '../../spec/identity.js';
import { seededRng } from '../../spec/rng.js';
import type { Envelope } from '../../spec/server-api.js';
import { encryptForDevice, prepEncrypt } from '../../impl/sesame.js';
import type { DeviceModelRunner } from '../../model/device.js';
import { transitionKeyOf } from '../../tools/model-diagrams.js';
import { TwinWorld } from './device-twin.js';

/** The key of the `creatingAccount` branch a freshly started actor took, read off its state. */
function creationBranch(runner: DeviceModelRunner): string {
  const value = runner.stateValue();
  if (value === 'registering') return 'device.creatingAccount (always) #0';
  if (typeof value === 'object' && value !== null && 'provisioning' in value)
    return 'device.creatingAccount (always) #1';
  throw new Error(`a new device machine started in ${JSON.stringify(value)}`);
}

/** A twin world whose model actors report every transition that fires into `fired`. */
export class CoverageTwin extends TwinWorld {
  constructor(
    seed: string,
    readonly fired: Set<string>,
  ) {
    super(seed);
    const devices = this.model.devices;
    const set = devices.set.bind(devices);
    const seen = new Set<string>();
    const observed = new WeakSet<DeviceModelRunner>();
    devices.set = (name: string, runner: DeviceModelRunner) => {
      if (!seen.has(name)) {
        seen.add(name);
        fired.add(creationBranch(runner));
      }
      if (!observed.has(runner)) {
        observed.add(runner);
        runner.actor.system.inspect((event) => {
          if (event.type !== '@xstate.microstep') return;
          const transitions = (event as { _transitions?: AnyTransitionDefinition[] })._transitions ?? [];
          for (const t of transitions) fired.add(transitionKeyOf(t));
        });
      }
      return set(name, runner);
    };
  }
}

/** A plaintext to forge, and the address the server claims sent it (default: the real sender). */
export interface Forgery {
  readonly plaintext: Uint8Array;
  readonly claimedSender?: DeviceAddress;
}

/**
 * Forges envelopes from device `from` (its impl state, copied: the twin's devices are untouched)
 * to one device of another account: a new session from that device's bundle (taken from both
 * honest servers alike, so both worlds stay equal), then one message per plaintext on it, with
 * envelope ids from `firstEnvelopeId` on. The forger's random draws come from its own stream.
 */
export function forgeEnvelopes(
  w: TwinWorld,
  from: string,
  to: DeviceAddress,
  forgeries: readonly Forgery[],
  firstEnvelopeId: number,
): Envelope[] {
  const sender = w.implState(from);
  const env: Env = { crypto: nodeProvider, rng: seededRng(`forge/${from}/${firstEnvelopeId}`) };
  const answer = w.answerHonestly({ kind: 'get-bundles', userId: to.userId, deviceIds: [to.deviceId] });
  const bundle = answer.kind === 'bundles' ? answer.bundles[0] : undefined;
  if (bundle === undefined) throw new Error(`no bundle for ${to.userId}.${to.deviceId}`);
  const local = {
    identityKeyPair: sender.prekeys.identityKeyPair,
    registrationId: sender.prekeys.registrationId,
  };
  const prepared = prepEncrypt(env, sender.sesame, local, { ...bundle, userId: to.userId }, w.now);
  if (!prepared.ok) throw new Error(`forger's PrepEncrypt failed: ${prepared.error.code}`);
  let sesame = prepared.value.state;
  return forgeries.map((forgery, i) => {
    const sealed = encryptForDevice(env, sesame, to.userId, to.deviceId, forgery.plaintext, w.now);
    if (!sealed.ok) throw new Error(`forger's encryption failed: ${sealed.error.code}`);
    sesame = sealed.value.state;
    const messageId: MessageId = (firstEnvelopeId + i).toString(16).padStart(32, '0');
    return {
      envelopeId: firstEnvelopeId + i,
      messageId,
      sender: forgery.claimedSender ?? { userId: sender.userId, deviceId: sender.deviceId },
      type: sealed.value.message.type,
      bytes: sealed.value.message.bytes,
      serverTimestamp: w.now,
    };
  });
}

/**
 * Device `name` fetches; the honest servers answer, and the answer reaches the device with
 * `extra` envelopes appended (a hostile or buggy server). Then the network runs (unless `andRun` is false).
 */
export function fetchWith(w: TwinWorld, name: string, extra: readonly Envelope[], andRun = true): void {
  w.input(name, { kind: 'net.fetch' });
  const held = w.takeRequest(name, 'fetch');
  const honest = w.answerHonestly(held.request);
  if (honest.kind !== 'envelopes') throw new Error(`fetch of ${name} answered ${honest.kind}`);
  w.respond(name, held.requestId, { kind: 'envelopes', envelopes: [...honest.envelopes, ...extra] }, andRun);
}
