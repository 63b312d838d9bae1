/**
 * The `multidevice-formats` family: Lockstep's own multi-device byte formats, each vector one
 * operation on explicit inputs (private keys, signature randomness and every random draw listed as
 * hex), so another implementation can reproduce them without Lockstep's seeded Rng.
 *
 * ```text
 * operation                    input                                         expected
 * sign_device_list             account key, list fields, XEdDSA Z            account_key, encoded_list, signature
 * verify_signed_device_list    list, signature, expected_user_id              decoded list | error       WP-DEV-03..05
 * registration_proof           device key, address, reg id, account key, Z    message, proof              WP-DEV-06
 * account_certificate          account key, device identity key, Z            signature                   WP-DEV-07
 * verify_account_certificate   account key, device key, signature             valid (boolean)             WP-DEV-01, -07
 * contact_link                 user id, account key, invite token             fingerprint, safety code, encoding, URL
 * decode_contact_link_url      url                                            link | error                WP-CONTACT-01..03
 * check_contact_link           url, served user id and account key            {} | error                  WP-CONTACT-04
 * provisioning_code            code fields                                    encoding, URL               WP-LINK-02
 * decode_provisioning_url      url                                            code | error                WP-LINK-01
 * provision_message            message fields                                 encoding                    WP-LINK-03
 * decode_provision_message     encoded                                        message | error             WP-LINK-01
 * encrypt_provision_envelope   recipient private key, plaintext, draws [e, iv] keys, envelope              WP-LINK-04
 * decrypt_provision_envelope   recipient private key, envelope                plaintext | error           WP-LINK-01, -05
 * encode_payload               payload                                        encoded (padded)            WP-PAY-01, -03
 * decode_payload               encoded                                        payload | error             WP-PAY-01..04
 * encrypt_attachment           plaintext, content type, draws [key, iv]       blob, pointer               WP-ATT-01
 * decrypt_attachment           pointer, blob                                  plaintext | error           WP-ATT-02..05
 * ```
 *
 * The checker recomputes every expected object from the input with spec/ and compares it field by
 * field; valid encodings are also decoded back and must round-trip.
 * @module
 */
import { decryptAttachment, encryptAttachment, type AttachmentPointer } from '../../spec/attachment.js';
import { concatBytes } from '../../spec/bytes.js';
import {
  checkContactLink,
  contactLinkFromUrl,
  contactLinkToUrl,
  decodeContactLink,
  encodeContactLink,
  toBase64Url,
  type ContactLink,
} from '../../spec/contact-link.js';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { xeddsaSign } from '../../spec/crypto/xeddsa.js';
import {
  accountKeyFingerprint,
  registrationProofMessage,
  safetyCode,
  SIGNATURE_PREFIX,
  signAccountCertificate,
  signDeviceList,
  signRegistrationProof,
  verifyAccountCertificate,
  verifyRegistrationProof,
  verifySignedDeviceList,
} from '../../spec/device-list.js';
import type { DeviceList, DeviceListEntry } from '../../spec/device-list-types.js';
import { ERROR_RULES, type ErrorCode, type Result } from '../../spec/errors.js';
import { fromHex } from '../../spec/hex.js';
import { dh, generateKeyPair, publicKeyFromPrivate } from '../../spec/keys.js';
import { decodePayload, encodePayload, type AppPayload, type PayloadContent } from '../../spec/payload.js';
import {
  decodeProvisioningCode,
  decodeProvisionMessage,
  decryptProvisionEnvelope,
  encodeProvisioningCode,
  encodeProvisionMessage,
  encryptProvisionEnvelope,
  provisioningCodeFromUrl,
  provisioningCodeToUrl,
  relayAddressFromBytes,
  type ProvisioningCode,
  type ProvisionMessage,
} from '../../spec/provisioning.js';
import { seededRng, type Rng } from '../../spec/rng.js';
import { encodeRawFields, type RawField } from '../../spec/wire-testing.js';
import { scriptedRng } from './draws.js';
import { seedLabel } from './fixtures.js';
import {
  arrayField,
  firstDifference,
  GENERATOR_SOURCE,
  hex,
  integerField,
  objectField,
  stringField,
  unhex,
  VECTOR_FORMAT_VERSION,
  VectorFormatError,
  type FamilyFile,
  type Json,
  type JsonObject,
  type VectorTest,
} from './format.js';
import { GeneratorExpectationError, type CheckFailure } from './script.js';

const FAMILY = 'multidevice-formats';

// ---------------------------------------------------------------------------------------------
// JSON ⇄ values
// ---------------------------------------------------------------------------------------------

function listJson(list: DeviceList): JsonObject {
  return {
    user_id: list.userId,
    version: list.version,
    account_key: hex(list.accountKey),
    devices: list.devices.map((d) => ({
      device_id: d.deviceId,
      identity_key: hex(d.identityKey),
      registration_id: d.registrationId,
    })),
  };
}

function listFrom(o: JsonObject, accountKey: Uint8Array): DeviceList {
  return {
    userId: stringField(o.user_id, 'list.user_id'),
    version: integerField(o.version, 'list.version'),
    accountKey,
    devices: arrayField(o.devices, 'list.devices').map((d, i) => {
      const entry = objectField(d, `list.devices[${i}]`);
      return {
        deviceId: integerField(entry.device_id, 'device_id'),
        identityKey: unhex(entry.identity_key, 'identity_key'),
        registrationId: integerField(entry.registration_id, 'registration_id'),
      };
    }),
  };
}

function pointerJson(p: AttachmentPointer): JsonObject {
  return {
    blob_id: p.blobId,
    key: hex(p.key),
    digest: hex(p.digest),
    size: p.size,
    content_type: p.contentType,
  };
}

function pointerFrom(o: JsonObject): AttachmentPointer {
  return {
    blobId: stringField(o.blob_id, 'pointer.blob_id'),
    key: unhex(o.key, 'pointer.key'),
    digest: unhex(o.digest, 'pointer.digest'),
    size: integerField(o.size, 'pointer.size'),
    contentType: stringField(o.content_type, 'pointer.content_type'),
  };
}

type Inner = Extract<PayloadContent, { kind: 'text' | 'attachment' }>;

function innerJson(content: Inner): JsonObject {
  return content.kind === 'text'
    ? { kind: 'text', text: content.text }
    : { kind: 'attachment', pointer: pointerJson(content.pointer), caption: content.caption };
}

function innerFrom(o: JsonObject): Inner {
  return o.kind === 'text'
    ? { kind: 'text', text: stringField(o.text, 'text') }
    : {
        kind: 'attachment',
        pointer: pointerFrom(objectField(o.pointer, 'pointer')),
        caption: stringField(o.caption, 'caption'),
      };
}

function payloadJson(p: AppPayload): JsonObject {
  const c = p.content;
  let content: JsonObject;
  if (c.kind === 'sync')
    content = { kind: 'sync', destination: c.destination, content: innerJson(c.content) };
  else if (c.kind === 'receipt') content = { kind: 'receipt', message_ids: [...c.messageIds] };
  else content = innerJson(c);
  return { message_id: p.messageId, sent_at: p.sentAt, content };
}

function payloadFrom(o: JsonObject): AppPayload {
  const c = objectField(o.content, 'payload.content');
  let content: PayloadContent;
  if (c.kind === 'sync') {
    content = {
      kind: 'sync',
      destination: stringField(c.destination, 'destination'),
      content: innerFrom(objectField(c.content, 'sync.content')),
    };
  } else if (c.kind === 'receipt') {
    content = {
      kind: 'receipt',
      messageIds: arrayField(c.message_ids, 'message_ids').map((id) => stringField(id, 'message_id')),
    };
  } else content = innerFrom(c);
  return {
    messageId: stringField(o.message_id, 'payload.message_id'),
    sentAt: integerField(o.sent_at, 'payload.sent_at'),
    content,
  };
}

function linkJson(link: ContactLink): JsonObject {
  return {
    user_id: link.userId,
    account_key_fingerprint: hex(link.accountKeyFingerprint),
    invite_token: link.inviteToken === null ? null : hex(link.inviteToken),
  };
}

function codeJson(code: ProvisioningCode): JsonObject {
  return {
    relay_address: code.relayAddress,
    ephemeral_public_key: hex(code.ephemeralPublicKey),
    identity_key: hex(code.identityKey),
    registration_id: code.registrationId,
  };
}

function codeFrom(o: JsonObject): ProvisioningCode {
  return {
    relayAddress: stringField(o.relay_address, 'relay_address'),
    ephemeralPublicKey: unhex(o.ephemeral_public_key, 'ephemeral_public_key'),
    identityKey: unhex(o.identity_key, 'identity_key'),
    registrationId: integerField(o.registration_id, 'registration_id'),
  };
}

function messageJson(m: ProvisionMessage): JsonObject {
  return {
    user_id: m.userId,
    device_id: m.deviceId,
    device_list: { list: hex(m.deviceList.list), signature: hex(m.deviceList.signature) },
    account_certificate: hex(m.accountCertificate),
  };
}

function messageFrom(o: JsonObject): ProvisionMessage {
  const signed = objectField(o.device_list, 'device_list');
  return {
    userId: stringField(o.user_id, 'user_id'),
    deviceId: integerField(o.device_id, 'device_id'),
    deviceList: {
      list: unhex(signed.list, 'device_list.list'),
      signature: unhex(signed.signature, 'signature'),
    },
    accountCertificate: unhex(o.account_certificate, 'account_certificate'),
  };
}

/** `{ error, rule }` of a rejection, or the value mapped to JSON. */
function outcome<T>(result: Result<T>, toJson: (value: T) => JsonObject): JsonObject {
  return result.ok ? toJson(result.value) : { error: result.error.code, rule: result.error.rule };
}

/** Throws unless decoding `bytes` returns a value that re-encodes to `bytes`. */
function requireRoundTrip<T>(
  what: string,
  bytes: Uint8Array,
  decoded: Result<T>,
  encode: (v: T) => Uint8Array,
): void {
  if (!decoded.ok || hex(encode(decoded.value)) !== hex(bytes)) {
    throw new VectorFormatError(`${what} does not round-trip`);
  }
}

// ---------------------------------------------------------------------------------------------
// Computing the expected object of a test from its input
// ---------------------------------------------------------------------------------------------

/** The expected object of a test, computed from its input with spec/. */
export function computeMultideviceExpected(c: CryptoProvider, input: JsonObject): JsonObject {
  const b = (key: string): Uint8Array => unhex(input[key], `input.${key}`);
  const s = (key: string): string => stringField(input[key], `input.${key}`);
  const n = (key: string): number => integerField(input[key], `input.${key}`);
  switch (input.operation) {
    case 'sign_device_list': {
      const accountPrivateKey = b('account_private_key');
      const accountKey = publicKeyFromPrivate(c, accountPrivateKey);
      const list = listFrom(objectField(input.list, 'input.list'), accountKey);
      const signed = signDeviceList(c, accountPrivateKey, list, b('signature_random'));
      const verified = verifySignedDeviceList(c, signed, list.userId);
      if (!verified.ok) throw new VectorFormatError('signed list does not verify');
      return {
        account_key: hex(accountKey),
        encoded_list: hex(signed.list),
        signature: hex(signed.signature),
      };
    }
    case 'verify_signed_device_list':
      return outcome(
        verifySignedDeviceList(c, { list: b('list'), signature: b('signature') }, s('expected_user_id')),
        listJson,
      );
    case 'registration_proof': {
      const identityKey = publicKeyFromPrivate(c, b('identity_private_key'));
      const message = registrationProofMessage(
        { userId: s('user_id'), deviceId: n('device_id') },
        identityKey,
        n('registration_id'),
        b('account_key'),
      );
      const proof = signRegistrationProof(c, b('identity_private_key'), message, b('signature_random'));
      if (!verifyRegistrationProof(c, identityKey, message, proof))
        throw new VectorFormatError('proof fails');
      return { identity_key: hex(identityKey), message: hex(message), proof: hex(proof) };
    }
    case 'account_certificate': {
      const signature = signAccountCertificate(
        c,
        b('account_private_key'),
        b('device_identity_key'),
        b('signature_random'),
      );
      return {
        account_key: hex(publicKeyFromPrivate(c, b('account_private_key'))),
        signature: hex(signature),
      };
    }
    case 'verify_account_certificate':
      return {
        valid: verifyAccountCertificate(c, b('account_key'), b('device_identity_key'), b('signature')),
      };
    case 'contact_link': {
      const accountKey = b('account_key');
      const fingerprint = accountKeyFingerprint(c, accountKey);
      const link: ContactLink = {
        userId: s('user_id'),
        accountKeyFingerprint: fingerprint,
        inviteToken: input.invite_token === null ? null : b('invite_token'),
      };
      const encoded = encodeContactLink(link);
      requireRoundTrip('contact link', encoded, decodeContactLink(encoded), encodeContactLink);
      return {
        fingerprint: hex(fingerprint),
        safety_code: safetyCode(fingerprint),
        encoded: hex(encoded),
        url: contactLinkToUrl(link),
      };
    }
    case 'decode_contact_link_url':
      return outcome(contactLinkFromUrl(s('url')), linkJson);
    case 'check_contact_link': {
      const link = contactLinkFromUrl(s('url'));
      if (!link.ok) throw new VectorFormatError('check_contact_link needs a valid URL');
      return outcome(
        checkContactLink(c, link.value, { userId: s('served_user_id'), accountKey: b('served_account_key') }),
        () => ({}),
      );
    }
    case 'provisioning_code': {
      const code = codeFrom(input);
      const encoded = encodeProvisioningCode(code);
      requireRoundTrip('provisioning code', encoded, decodeProvisioningCode(encoded), encodeProvisioningCode);
      return { encoded: hex(encoded), url: provisioningCodeToUrl(code) };
    }
    case 'decode_provisioning_url':
      return outcome(provisioningCodeFromUrl(s('url')), codeJson);
    case 'provision_message': {
      const encoded = encodeProvisionMessage(messageFrom(input));
      requireRoundTrip('provision message', encoded, decodeProvisionMessage(encoded), encodeProvisionMessage);
      return { encoded: hex(encoded) };
    }
    case 'decode_provision_message':
      return outcome(decodeProvisionMessage(b('encoded')), messageJson);
    case 'encrypt_provision_envelope': {
      const draws = arrayField(input.draws, 'input.draws').map((d, i) => unhex(d, `input.draws[${i}]`));
      const rng = scriptedRng(draws);
      const recipientPrivate = b('recipient_ephemeral_private_key');
      const recipient = publicKeyFromPrivate(c, recipientPrivate);
      const envelope = encryptProvisionEnvelope(c, rng, recipient, b('plaintext'));
      if (rng.remaining() !== 0) throw new VectorFormatError('encryptProvisionEnvelope left draws unused');
      const senderPrivate = draws[0] ?? new Uint8Array(0);
      const shared = dh(c, senderPrivate, recipient);
      if (!shared.ok) throw new VectorFormatError('DH rejected');
      const okm = c.hkdfSha256(
        shared.value,
        new Uint8Array(0),
        new TextEncoder().encode('Lockstep_Provisioning_v1'),
        64,
      );
      const opened = decryptProvisionEnvelope(c, recipientPrivate, envelope);
      if (!opened.ok || hex(opened.value) !== hex(b('plaintext')))
        throw new VectorFormatError('envelope does not open');
      return {
        recipient_ephemeral_public_key: hex(recipient),
        sender_ephemeral_public_key: hex(publicKeyFromPrivate(c, senderPrivate)),
        shared_secret: hex(shared.value),
        aes_key: hex(okm.subarray(0, 32)),
        mac_key: hex(okm.subarray(32)),
        envelope: hex(envelope),
      };
    }
    case 'decrypt_provision_envelope':
      return outcome(
        decryptProvisionEnvelope(c, b('recipient_ephemeral_private_key'), b('envelope')),
        (p) => ({
          plaintext: hex(p),
        }),
      );
    case 'encode_payload': {
      const encoded = encodePayload(payloadFrom(objectField(input.payload, 'input.payload')));
      requireRoundTrip('payload', encoded, decodePayload(encoded), encodePayload);
      return { encoded: hex(encoded) };
    }
    case 'decode_payload':
      return outcome(decodePayload(b('encoded')), payloadJson);
    case 'encrypt_attachment': {
      const draws = arrayField(input.draws, 'input.draws').map((d, i) => unhex(d, `input.draws[${i}]`));
      const rng = scriptedRng(draws);
      const { blob, pointer } = encryptAttachment(c, rng, b('plaintext'), s('content_type'));
      if (rng.remaining() !== 0) throw new VectorFormatError('encryptAttachment left draws unused');
      const opened = decryptAttachment(c, pointer, blob);
      if (!opened.ok || hex(opened.value) !== hex(b('plaintext')))
        throw new VectorFormatError('blob does not open');
      return { blob: hex(blob), pointer: pointerJson(pointer) };
    }
    case 'decrypt_attachment':
      return outcome(
        decryptAttachment(c, pointerFrom(objectField(input.pointer, 'input.pointer')), b('blob')),
        (p) => ({
          plaintext: hex(p),
        }),
      );
    default:
      throw new VectorFormatError(`unknown operation ${JSON.stringify(input.operation ?? null)}`);
  }
}

/** Checks one test of the family with provider `c`; `null` when it passes. */
export function checkMultideviceFormatsTest(c: CryptoProvider, test: VectorTest): CheckFailure | null {
  const expected = computeMultideviceExpected(c, test.input);
  const difference = firstDifference(expected as Json, test.expected as Json, '');
  if (difference !== null)
    return {
      path: `expected${difference === '(root)' ? '' : `.${difference}`}`,
      message: 'recomputed value differs',
    };
  const error = typeof expected.error === 'string' ? expected.error : undefined;
  if ((test.result === 'invalid') !== (error !== undefined || expected.valid === false)) {
    return { path: 'result', message: `result ${test.result} does not match the outcome` };
  }
  if (test.error !== error)
    return { path: 'error', message: `expected error ${test.error ?? 'none'}, got ${error ?? 'none'}` };
  return null;
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/** One case: its comment, rules, and input (built from a seeded stream). */
interface Case {
  readonly comment: string;
  readonly rules: readonly string[];
  readonly input: JsonObject;
  /** The error the case must produce, if any. */
  readonly error?: ErrorCode;
  /** A verification that must fail without an error code (boolean verifiers). */
  readonly invalidWithoutCode?: boolean;
}

function rewrite(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[at] = value;
  return out;
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  return rewrite(bytes, at, (bytes[at] ?? 0) ^ 0x01);
}

/** Builds every case from seeded key material; the seeds are recorded nowhere but here. */
function buildCases(c: CryptoProvider): Case[] {
  const rng: Rng = seededRng(seedLabel(FAMILY, 'keys'));
  const account = generateKeyPair(c, rng);
  const other = generateKeyPair(c, rng);
  const primary = generateKeyPair(c, rng);
  const laptop = generateKeyPair(c, rng);
  const ephemeral = generateKeyPair(c, rng);
  const z = (): Uint8Array => rng.randomBytes(64);
  const cases: Case[] = [];

  // Device lists (WP-DEV-01 … WP-DEV-05).
  const list: DeviceList = {
    userId: 'alice',
    version: 7,
    accountKey: account.publicKey,
    devices: [
      { deviceId: 1, identityKey: primary.publicKey, registrationId: 1234 },
      { deviceId: 3, identityKey: laptop.publicKey, registrationId: 16380 },
    ],
  };
  const listZ = z();
  cases.push({
    comment: 'A two-device list signed by the account key over 06 02 ‖ encoding.',
    rules: ['WP-DEV-01', 'WP-DEV-02', 'WP-DEV-04', 'WP-KEYS-07'],
    input: {
      operation: 'sign_device_list',
      account_private_key: hex(account.privateKey),
      list: listJson(list),
      signature_random: hex(listZ),
    },
  });
  const signed = signDeviceList(c, account.privateKey, list, listZ);
  const verify = (
    comment: string,
    rules: string[],
    listBytes: Uint8Array,
    signature: Uint8Array,
    user: string,
    error?: ErrorCode,
  ): void => {
    cases.push({
      comment,
      rules,
      input: {
        operation: 'verify_signed_device_list',
        list: hex(listBytes),
        signature: hex(signature),
        expected_user_id: user,
      },
      ...(error === undefined ? {} : { error }),
    });
  };
  verify(
    'The signed list verifies and decodes.',
    ['WP-DEV-03', 'WP-DEV-04', 'WP-DEV-05'],
    signed.list,
    signed.signature,
    'alice',
  );
  verify(
    'One flipped signature bit.',
    ['WP-DEV-04'],
    signed.list,
    flip(signed.signature, 5),
    'alice',
    'DEVICE_LIST_SIGNATURE_INVALID',
  );
  verify(
    'Signed by another key (a list naming the account key but signed by someone else).',
    ['WP-DEV-04'],
    signed.list,
    xeddsaSign(c, other.privateKey, concatBytes(SIGNATURE_PREFIX.deviceList, signed.list), z()),
    'alice',
    'DEVICE_LIST_SIGNATURE_INVALID',
  );
  verify(
    'Signed by the account key under the device prefix 06 01 instead of 06 02.',
    ['WP-DEV-01', 'WP-DEV-04'],
    signed.list,
    xeddsaSign(c, account.privateKey, concatBytes(SIGNATURE_PREFIX.device, signed.list), z()),
    'alice',
    'DEVICE_LIST_SIGNATURE_INVALID',
  );
  verify(
    "A valid list for alice presented as bob's.",
    ['WP-DEV-05'],
    signed.list,
    signed.signature,
    'bob',
    'DEVICE_LIST_WRONG_USER',
  );
  // Non-canonical: the two devices swapped, signed correctly (the signature cannot save it).
  const entry = (d: DeviceListEntry): RawField => ({
    kind: 'bytes',
    field: 4,
    value: encodeRawFields([
      { kind: 'varint', field: 1, value: d.deviceId },
      { kind: 'bytes', field: 2, value: d.identityKey },
      { kind: 'varint', field: 3, value: d.registrationId },
    ]),
  });
  const swapped = concatBytes(
    Uint8Array.of(1),
    encodeRawFields([
      { kind: 'bytes', field: 1, value: new TextEncoder().encode(list.userId) },
      { kind: 'varint', field: 2, value: list.version },
      { kind: 'bytes', field: 3, value: list.accountKey },
      ...[...list.devices].reverse().map(entry),
    ]),
  );
  verify(
    'Devices out of order (non-canonical), correctly signed.',
    ['WP-DEV-03'],
    swapped,
    xeddsaSign(c, account.privateKey, concatBytes(SIGNATURE_PREFIX.deviceList, swapped), z()),
    'alice',
    'DEVICE_LIST_MALFORMED',
  );
  const nonMinimal = concatBytes(
    signed.list.subarray(0, 8),
    Uint8Array.of(0x10, 0x87, 0x00),
    signed.list.subarray(10),
  );
  verify(
    'The version 7 written as a two-byte varint (non-canonical), correctly signed.',
    ['WP-DEV-03'],
    nonMinimal,
    xeddsaSign(c, account.privateKey, concatBytes(SIGNATURE_PREFIX.deviceList, nonMinimal), z()),
    'alice',
    'DEVICE_LIST_MALFORMED',
  );
  verify(
    'Format version byte 0x02.',
    ['WP-DEV-03'],
    rewrite(signed.list, 0, 2),
    signed.signature,
    'alice',
    'DEVICE_LIST_MALFORMED',
  );

  // Registration proof and account certificate (WP-DEV-06, WP-DEV-07).
  cases.push({
    comment: 'Device 3 proves possession of its identity key at registration (prefix 06 01).',
    rules: ['WP-DEV-01', 'WP-DEV-06'],
    input: {
      operation: 'registration_proof',
      user_id: 'alice',
      device_id: 3,
      identity_private_key: hex(laptop.privateKey),
      registration_id: 16380,
      account_key: hex(account.publicKey),
      signature_random: hex(z()),
    },
  });
  cases.push({
    comment: 'The account key certifies device identity key (prefix 06 00).',
    rules: ['WP-DEV-01', 'WP-DEV-07'],
    input: {
      operation: 'account_certificate',
      account_private_key: hex(account.privateKey),
      device_identity_key: hex(laptop.publicKey),
      signature_random: hex(z()),
    },
  });
  cases.push({
    comment: 'A certificate made with the device-list prefix 06 02 is not an account certificate.',
    rules: ['WP-DEV-01', 'WP-DEV-07'],
    invalidWithoutCode: true,
    input: {
      operation: 'verify_account_certificate',
      account_key: hex(account.publicKey),
      device_identity_key: hex(laptop.publicKey),
      signature: hex(
        xeddsaSign(c, account.privateKey, concatBytes(SIGNATURE_PREFIX.deviceList, laptop.publicKey), z()),
      ),
    },
  });

  // Contact links (WP-CONTACT-01 … WP-CONTACT-04, WP-DEV-08, WP-DEV-09).
  const token = rng.randomBytes(16);
  const link: ContactLink = {
    userId: 'alice',
    accountKeyFingerprint: accountKeyFingerprint(c, account.publicKey),
    inviteToken: token,
  };
  const url = contactLinkToUrl(link);
  cases.push({
    comment: 'A contact link with an invite token: fingerprint, safety code, encoding and URL.',
    rules: ['WP-CONTACT-01', 'WP-CONTACT-03', 'WP-DEV-08', 'WP-DEV-09'],
    input: {
      operation: 'contact_link',
      user_id: 'alice',
      account_key: hex(account.publicKey),
      invite_token: hex(token),
    },
  });
  cases.push({
    comment: 'A contact link without invite token (field 3 absent).',
    rules: ['WP-CONTACT-01', 'WP-CONTACT-03', 'WP-DEV-08', 'WP-DEV-09'],
    input: {
      operation: 'contact_link',
      user_id: 'carol-7',
      account_key: hex(other.publicKey),
      invite_token: null,
    },
  });
  const linkUrl = (comment: string, rules: string[], text: string, error?: ErrorCode): void => {
    cases.push({
      comment,
      rules,
      input: { operation: 'decode_contact_link_url', url: text },
      ...(error === undefined ? {} : { error }),
    });
  };
  const body64 = url.slice('lockstep://contact/'.length);
  linkUrl('The URL decodes to the link.', ['WP-CONTACT-01', 'WP-CONTACT-03'], url);
  linkUrl('Padding is not allowed.', ['WP-CONTACT-01', 'WP-CONTACT-03'], `${url}=`, 'CONTACT_LINK_MALFORMED');
  linkUrl(
    'Standard base64 alphabet is not allowed.',
    ['WP-CONTACT-01', 'WP-CONTACT-03'],
    `lockstep://contact/${body64.slice(0, -1)}+`,
    'CONTACT_LINK_MALFORMED',
  );
  linkUrl(
    'Another scheme.',
    ['WP-CONTACT-01', 'WP-CONTACT-03'],
    `https://contact/${body64}`,
    'CONTACT_LINK_MALFORMED',
  );
  const v2 = rewrite(encodeContactLink(link), 0, 2);
  linkUrl(
    'Format version 0x02.',
    ['WP-CONTACT-02'],
    `lockstep://contact/${toBase64Url(v2)}`,
    'CONTACT_LINK_VERSION_UNKNOWN',
  );
  const shortToken = concatBytes(
    encodeContactLink({ ...link, inviteToken: null }),
    Uint8Array.of(0x1a, 0x0f),
    token.subarray(1),
  );
  linkUrl(
    'A 15-byte invite token.',
    ['WP-CONTACT-01'],
    `lockstep://contact/${toBase64Url(shortToken)}`,
    'CONTACT_LINK_MALFORMED',
  );
  cases.push({
    comment: 'The server serves the account key the link fingerprints.',
    rules: ['WP-CONTACT-04'],
    input: {
      operation: 'check_contact_link',
      url,
      served_user_id: 'alice',
      served_account_key: hex(account.publicKey),
    },
  });
  cases.push({
    comment: 'The server substitutes another account key.',
    rules: ['WP-CONTACT-04'],
    error: 'CONTACT_LINK_MISMATCH',
    input: {
      operation: 'check_contact_link',
      url,
      served_user_id: 'alice',
      served_account_key: hex(other.publicKey),
    },
  });

  // Provisioning (WP-LINK-01 … WP-LINK-05).
  const code: ProvisioningCode = {
    relayAddress: relayAddressFromBytes(rng.randomBytes(16)),
    ephemeralPublicKey: ephemeral.publicKey,
    identityKey: laptop.publicKey,
    registrationId: 16380,
  };
  cases.push({
    comment: 'A provisioning code and its lockstep://link/ URL.',
    rules: ['WP-LINK-02'],
    input: { operation: 'provisioning_code', ...codeJson(code) },
  });
  const codeUrl = (comment: string, text: string, error?: ErrorCode): void => {
    cases.push({
      comment,
      rules: ['WP-LINK-01', 'WP-LINK-02'],
      input: { operation: 'decode_provisioning_url', url: text },
      ...(error === undefined ? {} : { error }),
    });
  };
  const codeBytes = encodeProvisioningCode(code);
  codeUrl('The URL decodes to the code.', provisioningCodeToUrl(code));
  const lowOrder = Uint8Array.from(codeBytes);
  lowOrder.set(new Uint8Array(32), 22); // the ephemeral key's u: version, relay (2 + 16), tag and length, type byte
  codeUrl('A low-order ephemeral key.', `lockstep://link/${toBase64Url(lowOrder)}`, 'PROVISIONING_MALFORMED');
  codeUrl(
    'A truncated code.',
    `lockstep://link/${toBase64Url(codeBytes.subarray(0, -1))}`,
    'PROVISIONING_MALFORMED',
  );

  const message: ProvisionMessage = {
    userId: 'alice',
    deviceId: 3,
    deviceList: signed,
    accountCertificate: signAccountCertificate(c, account.privateKey, laptop.publicKey, z()),
  };
  cases.push({
    comment: 'The message the primary sends the new device 3.',
    rules: ['WP-LINK-03'],
    input: { operation: 'provision_message', ...messageJson(message) },
  });
  const messageBytes = encodeProvisionMessage(message);
  cases.push({
    comment: 'The encoded provision message decodes.',
    rules: ['WP-LINK-01', 'WP-LINK-03'],
    input: { operation: 'decode_provision_message', encoded: hex(messageBytes) },
  });
  cases.push({
    comment: 'A provision message with a trailing unknown field.',
    rules: ['WP-LINK-01'],
    error: 'PROVISIONING_MALFORMED',
    input: {
      operation: 'decode_provision_message',
      encoded: hex(concatBytes(messageBytes, Uint8Array.of(0x28, 0x00))),
    },
  });

  const envelopeDraws = [rng.randomBytes(32), rng.randomBytes(16)];
  cases.push({
    comment: 'The provision message sealed to the ephemeral key; draws: sender ephemeral key, IV.',
    rules: ['WP-LINK-04', 'WP-KEYS-09'],
    input: {
      operation: 'encrypt_provision_envelope',
      recipient_ephemeral_private_key: hex(ephemeral.privateKey),
      plaintext: hex(messageBytes),
      draws: envelopeDraws.map(hex),
    },
  });
  const envelope = encryptProvisionEnvelope(c, scriptedRng(envelopeDraws), ephemeral.publicKey, messageBytes);
  const open = (
    comment: string,
    rules: string[],
    bytes: Uint8Array,
    error?: ErrorCode,
    key = ephemeral.privateKey,
  ): void => {
    cases.push({
      comment,
      rules,
      input: {
        operation: 'decrypt_provision_envelope',
        recipient_ephemeral_private_key: hex(key),
        envelope: hex(bytes),
      },
      ...(error === undefined ? {} : { error }),
    });
  };
  open('The envelope opens.', ['WP-LINK-05'], envelope);
  open(
    'One flipped MAC bit.',
    ['WP-LINK-05'],
    flip(envelope, envelope.length - 1),
    'PROVISIONING_MAC_INVALID',
  );
  open(
    'One flipped ciphertext bit (the MAC covers it).',
    ['WP-LINK-05'],
    flip(envelope, 60),
    'PROVISIONING_MAC_INVALID',
  );
  open(
    'Opened with the wrong private key.',
    ['WP-LINK-05'],
    envelope,
    'PROVISIONING_MAC_INVALID',
    laptop.privateKey,
  );
  open(
    'Truncated by one byte (ciphertext not whole blocks).',
    ['WP-LINK-01'],
    envelope.subarray(0, -1),
    'PROVISIONING_MALFORMED',
  );
  open('Version byte 0x02.', ['WP-LINK-01'], rewrite(envelope, 0, 2), 'PROVISIONING_MALFORMED');

  // Attachments (WP-ATT-01 … WP-ATT-05).
  const attachmentDraws = [rng.randomBytes(64), rng.randomBytes(16)];
  const picture = new TextEncoder().encode('not really a JPEG, but 48 bytes of plaintext....');
  cases.push({
    comment: 'An attachment encrypted under listed draws: key (64), then IV (16).',
    rules: ['WP-ATT-01', 'WP-KEYS-09'],
    input: {
      operation: 'encrypt_attachment',
      plaintext: hex(picture),
      content_type: 'image/jpeg',
      draws: attachmentDraws.map(hex),
    },
  });
  const { blob, pointer } = encryptAttachment(c, scriptedRng(attachmentDraws), picture, 'image/jpeg');
  const repointed = (bytes: Uint8Array): AttachmentPointer => {
    const digest = c.sha256(bytes);
    return { ...pointer, digest, blobId: hex(digest) };
  };
  const decrypt = (
    comment: string,
    rules: string[],
    p: AttachmentPointer,
    bytes: Uint8Array,
    error?: ErrorCode,
  ): void => {
    cases.push({
      comment,
      rules,
      input: { operation: 'decrypt_attachment', pointer: pointerJson(p), blob: hex(bytes) },
      ...(error === undefined ? {} : { error }),
    });
  };
  decrypt('The blob decrypts.', ['WP-ATT-02', 'WP-ATT-04', 'WP-ATT-05'], pointer, blob);
  decrypt(
    'One changed blob byte: the digest no longer matches.',
    ['WP-ATT-02'],
    pointer,
    flip(blob, 20),
    'ATTACHMENT_DIGEST_MISMATCH',
  );
  const tampered = flip(blob, 20);
  decrypt(
    'One changed ciphertext byte under a recomputed digest: the MAC fails.',
    ['WP-ATT-04'],
    repointed(tampered),
    tampered,
    'ATTACHMENT_MAC_INVALID',
  );
  const short = blob.subarray(0, 40);
  decrypt(
    'A 40-byte blob under a matching digest.',
    ['WP-ATT-03'],
    repointed(short),
    short,
    'ATTACHMENT_MALFORMED',
  );
  decrypt(
    'The pointer announces one byte more than the plaintext.',
    ['WP-ATT-05'],
    { ...pointer, size: pointer.size + 1 },
    blob,
    'ATTACHMENT_SIZE_MISMATCH',
  );

  // Payloads (WP-PAY-01 … WP-PAY-04).
  const messageId = hex(rng.randomBytes(16));
  const contents: Array<[string, PayloadContent]> = [
    ['A text payload.', { kind: 'text', text: 'Hello Bob 👋' }],
    ['An attachment payload with caption.', { kind: 'attachment', pointer, caption: 'holiday' }],
    [
      'A sync copy of a text sent to bob.',
      { kind: 'sync', destination: 'bob', content: { kind: 'text', text: 'see you' } },
    ],
    [
      'A sync copy of an attachment sent to bob.',
      { kind: 'sync', destination: 'bob', content: { kind: 'attachment', pointer, caption: '' } },
    ],
    ['A receipt for two messages.', { kind: 'receipt', messageIds: [messageId, hex(rng.randomBytes(16))] }],
    [
      'A 130-byte text: version and protobuf take 159 bytes, then the 0x80 marker and no zero (exactly 160).',
      { kind: 'text', text: 'x'.repeat(130) },
    ],
  ];
  for (const [comment, content] of contents) {
    const p: AppPayload = { messageId, sentAt: 1_700_000_000_000, content };
    cases.push({
      comment,
      rules: ['WP-PAY-01', 'WP-PAY-03'],
      input: { operation: 'encode_payload', payload: payloadJson(p) },
    });
  }
  const textPayload = encodePayload({
    messageId,
    sentAt: 1_700_000_000_000,
    content: { kind: 'text', text: 'hi' },
  });
  const decodeCase = (comment: string, rules: string[], bytes: Uint8Array, error?: ErrorCode): void => {
    cases.push({
      comment,
      rules,
      input: { operation: 'decode_payload', encoded: hex(bytes) },
      ...(error === undefined ? {} : { error }),
    });
  };
  decodeCase('A padded text payload decodes.', ['WP-PAY-01', 'WP-PAY-03'], textPayload);
  decodeCase('Version byte 0x02.', ['WP-PAY-02'], rewrite(textPayload, 0, 2), 'PAYLOAD_VERSION_UNKNOWN');
  decodeCase(
    'Padding marker 0x80 replaced by 0x00.',
    ['WP-PAY-01', 'WP-PAY-03'],
    rewrite(textPayload, textPayload.lastIndexOf(0x80), 0),
    'PAYLOAD_MALFORMED',
  );
  decodeCase(
    'A non-zero byte after the marker.',
    ['WP-PAY-01', 'WP-PAY-03'],
    rewrite(textPayload, textPayload.length - 1, 1),
    'PAYLOAD_MALFORMED',
  );
  decodeCase(
    'One whole extra block of zeros.',
    ['WP-PAY-01', 'WP-PAY-03'],
    concatBytes(textPayload, new Uint8Array(160)),
    'PAYLOAD_MALFORMED',
  );
  decodeCase(
    'Unpadded.',
    ['WP-PAY-01', 'WP-PAY-03'],
    textPayload.subarray(0, textPayload.lastIndexOf(0x80)),
    'PAYLOAD_MALFORMED',
  );
  const badUtf8 = Uint8Array.from(textPayload);
  badUtf8.set(fromHex('c0af'), textPayload.lastIndexOf(0x80) - 2); // the text "hi" becomes an overlong "/"
  decodeCase(
    'Text that is not UTF-8 (overlong encoding).',
    ['WP-PAY-01', 'WP-PAY-04'],
    badUtf8,
    'PAYLOAD_MALFORMED',
  );
  return cases;
}

/** Generates the multidevice-formats family. */
export function generateMultideviceFormatsFamily(c: CryptoProvider): FamilyFile {
  const tests = buildCases(c).map((k, i): VectorTest => {
    const id = `${FAMILY}-${String(i + 1).padStart(3, '0')}`;
    const expected = computeMultideviceExpected(c, k.input);
    const got = typeof expected.error === 'string' ? expected.error : undefined;
    if (got !== k.error)
      throw new GeneratorExpectationError(`${id}: expected ${k.error ?? 'success'}, got ${got ?? 'success'}`);
    if (k.invalidWithoutCode === true && expected.valid !== false) {
      throw new GeneratorExpectationError(`${id}: verification unexpectedly succeeded`);
    }
    if (k.error !== undefined && !k.rules.includes(ERROR_RULES[k.error])) {
      throw new GeneratorExpectationError(`${id}: rules must include ${ERROR_RULES[k.error]}`);
    }
    const invalid = k.error !== undefined || k.invalidWithoutCode === true;
    return {
      id,
      comment: k.comment,
      rules: k.rules,
      result: invalid ? 'invalid' : 'valid',
      ...(k.error === undefined ? {} : { error: k.error }),
      input: k.input,
      expected,
    };
  });
  return { family: FAMILY, version: VECTOR_FORMAT_VERSION, source: GENERATOR_SOURCE, tests };
}
