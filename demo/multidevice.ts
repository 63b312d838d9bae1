/**
 * `npm run demo`, part 2: two users with several devices each, over the honest server. Alice starts
 * the chat from Bob's contact link (no lookup by name), messages fan out to every device (and to the
 * sender's own other devices as sync copies), Bob links a tablet by QR provisioning mid-conversation,
 * Alice revokes her old laptop, and the revoked laptop reads nothing afterwards. Deterministic
 * (`--seed`).
 */
import { parseArgs } from 'node:util';
import { nodeProvider } from '../spec/crypto/node.js';
import { accountKeyFingerprint, safetyCode } from '../spec/device-list.js';
import { contactLinkToUrl } from '../spec/contact-link.js';
import type { Env } from '../spec/env.js';
import { provisioningCodeToUrl } from '../spec/provisioning.js';
import { seededRng } from '../spec/rng.js';
import type { ServerRequest, ServerResponse } from '../spec/server-api.js';
import {
  createPrimaryDevice,
  createProvisioningDevice,
  deviceStep,
  type DeviceInput,
  type DeviceOutput,
  type DeviceState,
} from '../impl/device.js';
import { droppedByRevocation, emptyServerState, handleRequest, mailboxDepth } from '../impl/server.js';

const { values } = parseArgs({ options: { seed: { type: 'string', default: 'lockstep-demo' } } });
const env: Env = { crypto: nodeProvider, rng: seededRng(`${values.seed}/multidevice`) };
let now = 1_700_000_000_000;
let server = emptyServerState();
const devices = new Map<string, DeviceState>();
const queue: { device: string; requestId: number; request: ServerRequest }[] = [];
let step = 0;
const say = (line: string): void => console.log(`${String(++step).padStart(2, '0')}  ${line}`);

function label(name: string): string {
  const d = devices.get(name);
  return d === undefined ? name : `${name} (${d.userId}.${d.deviceId})`;
}

function describeOutput(name: string, output: DeviceOutput): string | null {
  switch (output.kind) {
    case 'delivered': {
      const c = output.payload.content;
      const text =
        c.kind === 'text'
          ? `"${c.text}"`
          : c.kind === 'sync' && c.content.kind === 'text'
            ? `sync copy of "${c.content.text}" sent to ${c.destination}`
            : c.kind;
      return `${label(name)} shows ${text} from ${output.from.userId}.${output.from.deviceId}`;
    }
    case 'device-list-changed':
      return (
        `${label(name)} accepts ${output.userId}'s signed device list v${output.version}` +
        (output.added.length > 0 ? `, added ${output.added.join(',')}` : '') +
        (output.removed.length > 0 ? `, removed ${output.removed.join(',')}` : '')
      );
    case 'key-change':
      return `${label(name)} sees a key change for ${output.userId}${output.deviceId === null ? ' (account key)' : `.${output.deviceId}`}`;
    case 'linked':
      return `${name} is linked as ${output.address.userId}.${output.address.deviceId}`;
    case 'device-linked':
      return `${label(name)} signed a new device list with ${output.address.userId}.${output.address.deviceId} and sent it the provisioning message`;
    case 'revoked':
      return `${name} learns it was revoked`;
    case 'send-failed':
      return `${label(name)} could not send to ${output.recipient}: ${output.error.code} (${output.error.rule})`;
    case 'undecryptable':
      return `${label(name)} cannot decrypt a message from ${output.from.userId}.${output.from.deviceId}: ${output.error.code}`;
    case 'error':
      return `${label(name)} error in ${output.context}: ${output.error.code} (${output.error.rule})`;
    default:
      return null;
  }
}

function apply(name: string, outputs: readonly DeviceOutput[]): void {
  for (const output of outputs) {
    if (output.kind === 'request')
      queue.push({ device: name, requestId: output.requestId, request: output.request });
    const line = describeOutput(name, output);
    if (line !== null) say(line);
  }
}

function input(name: string, deviceInput: DeviceInput): void {
  const state = devices.get(name);
  if (state === undefined) throw new Error(`no device ${name}`);
  const result = deviceStep(env, state, deviceInput, now);
  devices.set(name, result.state);
  apply(name, result.outputs);
}

function describeRequest(request: ServerRequest, response: ServerResponse): string | null {
  if (request.kind === 'send') {
    const verdict =
      response.kind === 'accepted'
        ? 'accepted'
        : response.kind === 'refused'
          ? `refused: ${response.refusal.kind}`
          : response.kind;
    const sizes = request.messages.map((m) => `${m.deviceId}:${m.type}/${m.bytes.length}B`).join(' ');
    return `server ← send ${request.sender.userId}.${request.sender.deviceId} → ${request.recipient} [${sizes}] ${verdict}`;
  }
  if (request.kind === 'update-device-list')
    return `server ← new signed device list for ${request.device.userId}: ${response.kind}`;
  if (request.kind === 'blob-put')
    return `server ← attachment blob ${request.blobId.slice(0, 12)}… (${request.bytes.length} B, stored once)`;
  return null;
}

function run(): void {
  while (queue.length > 0) {
    const next = queue.shift();
    if (next === undefined) break;
    const result = handleRequest({ crypto: env.crypto }, server, next.request, now);
    server = result.state;
    const line = describeRequest(next.request, result.response);
    if (line !== null) say(line);
    if (devices.has(next.device))
      input(next.device, { kind: 'net.response', requestId: next.requestId, response: result.response });
  }
}

function sync(): void {
  for (let round = 0; round < 4; round++) {
    for (const name of devices.keys())
      if (devices.get(name)?.lifecycle.kind === 'linked') input(name, { kind: 'net.fetch' });
    run();
  }
}

function createAccount(name: string, userId: string): void {
  const result = createPrimaryDevice(env, userId, now);
  devices.set(name, result.state);
  apply(name, result.outputs);
  run();
}

function link(primary: string, name: string): void {
  const created = createProvisioningDevice(env, now);
  devices.set(name, created.state);
  say(`${name} shows a QR code: ${provisioningCodeToUrl(created.code).slice(0, 48)}…`);
  input(primary, { kind: 'user.link-device', code: created.code });
  run();
  input(name, { kind: 'timer.poll-provisioning' });
  run();
}

function send(name: string, to: string, text: string): void {
  now += 1000;
  say(`${label(name)} sends "${text}" to ${to}`);
  input(name, { kind: 'user.send', recipients: [to], content: { kind: 'text', text } });
  run();
  sync();
}

console.log(`\nLockstep demo, part 2: two users with several devices (seed "${values.seed}")\n`);
createAccount('alice-phone', 'alice');
link('alice-phone', 'alice-laptop');
createAccount('bob-phone', 'bob');
link('bob-phone', 'bob-desktop');

const bobAccountKey = devices.get('bob-phone')?.trust['bob']?.accountKey;
if (bobAccountKey === null || bobAccountKey === undefined) throw new Error('bob has no account key');
const fingerprint = accountKeyFingerprint(env.crypto, bobAccountKey);
const link0 = { userId: 'bob', accountKeyFingerprint: fingerprint, inviteToken: null };
say(
  `bob shares his contact link ${contactLinkToUrl(link0).slice(0, 40)}… (safety code ${safetyCode(fingerprint).slice(0, 17)}…)`,
);
input('alice-phone', { kind: 'user.add-contact', link: link0 });
run();

send('alice-phone', 'bob', 'hi bob, from my phone');
send('bob-desktop', 'alice', 'hello alice, from my desktop');

say('bob links a tablet mid-conversation');
link('bob-phone', 'bob-tablet');
send('alice-laptop', 'bob', 'the tablet sees this, not what came before');

say('alice revokes her laptop');
const laptopId = devices.get('alice-laptop')?.deviceId ?? 0;
input('alice-phone', { kind: 'user.revoke-device', deviceId: laptopId });
run();
send('bob-phone', 'alice', 'after the revocation');
sync();

console.log('\nWhat the server holds');
for (const name of devices.keys()) {
  const d = devices.get(name);
  if (d === undefined) continue;
  const address = { userId: d.userId, deviceId: d.deviceId };
  console.log(
    `  ${label(name).padEnd(26)} ${d.lifecycle.kind.padEnd(8)} mailbox ${mailboxDepth(server, address)}, dropped by revocation ${droppedByRevocation(server, address)}`,
  );
}
