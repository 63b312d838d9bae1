/**
 * Contact links (WP-CONTACT-01 … WP-CONTACT-04): encoding, URL form, strict decoding, and the
 * check of the server's answer against the link, with both providers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from './bytes.js';
import {
  checkContactLink,
  contactLinkFromUrl,
  contactLinkToUrl,
  decodeContactLink,
  encodeContactLink,
  fromBase64Url,
  toBase64Url,
  type ContactLink,
} from './contact-link.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { accountKeyFingerprint } from './device-list.js';
import { ERROR_RULES, UsageError, type ErrorCode, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { generateKeyPair } from './keys.js';
import { seededRng } from './rng.js';
import { encodeRawFields, type RawField } from './wire-testing.js';

const providers = [nobleProvider, nodeProvider] as const;
const rng = seededRng('contact-link.test');
const account = generateKeyPair(nodeProvider, rng);
const other = generateKeyPair(nodeProvider, rng);
const FINGERPRINT = accountKeyFingerprint(nodeProvider, account.publicKey);
const TOKEN = fromHex('00112233445566778899aabbccddeeff');
const LINK: ContactLink = { userId: 'alice-42', accountKeyFingerprint: FINGERPRINT, inviteToken: TOKEN };
const LINK_NO_TOKEN: ContactLink = { ...LINK, inviteToken: null };

function expectCode<T>(result: Result<T>, code: ErrorCode): void {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
}

function mutate(bytes: Uint8Array, [kind, position, value]: readonly [number, number, number]): Uint8Array {
  if (bytes.length === 0) return Uint8Array.of(value);
  const at = position % bytes.length;
  switch (kind % 4) {
    case 0: {
      const out = Uint8Array.from(bytes);
      out[at] = (out[at] ?? 0) ^ (value === 0 ? 1 : value);
      return out;
    }
    case 1:
      return bytes.slice(0, at);
    case 2:
      return concatBytes(bytes.subarray(0, at), Uint8Array.of(value), bytes.subarray(at));
    default:
      return concatBytes(bytes.subarray(0, at), bytes.subarray(at + 1));
  }
}
const mutationArb = fc.tuple(fc.nat(3), fc.nat(10_000), fc.nat(255));

const linkArb: fc.Arbitrary<ContactLink> = fc.record({
  userId: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,63}$/),
  accountKeyFingerprint: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  inviteToken: fc.option(fc.uint8Array({ minLength: 16, maxLength: 16 }), { nil: null }),
});

const fields = (link: ContactLink = LINK): RawField[] => [
  { kind: 'bytes', field: 1, value: new TextEncoder().encode(link.userId) },
  { kind: 'bytes', field: 2, value: link.accountKeyFingerprint },
  ...(link.inviteToken === null ? [] : [{ kind: 'bytes' as const, field: 3, value: link.inviteToken }]),
];
const raw = (f: readonly RawField[], version = 0x01): Uint8Array =>
  concatBytes(Uint8Array.of(version), encodeRawFields(f));

describe('contact link encoding', () => {
  it('is 0x01 then user_id, fingerprint and the optional token, in tag order [WP-CONTACT-01]', () => {
    expect(toHex(encodeContactLink(LINK))).toBe(toHex(raw(fields())));
    expect(toHex(encodeContactLink(LINK_NO_TOKEN))).toBe(toHex(raw(fields(LINK_NO_TOKEN))));
  });

  it('round-trips every valid link, as bytes and as a URL [WP-CONTACT-01, WP-CONTACT-03]', () => {
    fc.assert(
      fc.property(linkArb, (link) => {
        expect(decodeContactLink(encodeContactLink(link))).toEqual({ ok: true, value: link });
        expect(contactLinkFromUrl(contactLinkToUrl(link))).toEqual({ ok: true, value: link });
      }),
      { numRuns: 200 },
    );
  });

  it('refuses to encode an invalid link [WP-CONTACT-01]', () => {
    for (const link of [
      { ...LINK, userId: 'Alice' },
      { ...LINK, accountKeyFingerprint: FINGERPRINT.subarray(1) },
      { ...LINK, inviteToken: TOKEN.subarray(1) },
    ]) {
      expect(() => encodeContactLink(link)).toThrow(UsageError);
    }
  });
});

describe('contact link decoding is strict', () => {
  const cases: Array<[string, Uint8Array]> = [
    ['an empty input', new Uint8Array(0)],
    ['an unknown field', raw([...fields(), { kind: 'varint', field: 4, value: 1 }])],
    ['fields out of order', raw([...fields().slice(1, 2), ...fields().slice(0, 1), ...fields().slice(2)])],
    ['a repeated token', raw([...fields(), { kind: 'bytes', field: 3, value: TOKEN }])],
    ['a missing fingerprint', raw(fields().filter((f) => f.kind !== 'bytes' || f.field !== 2))],
    [
      'a 31-byte fingerprint',
      raw([
        fields()[0] ?? fields()[1] ?? { kind: 'raw', bytes: new Uint8Array(0) },
        { kind: 'bytes', field: 2, value: FINGERPRINT.subarray(1) },
      ]),
    ],
    [
      'a 15-byte token',
      raw([...fields(LINK_NO_TOKEN), { kind: 'bytes', field: 3, value: TOKEN.subarray(1) }]),
    ],
    [
      'an empty token',
      raw([...fields(LINK_NO_TOKEN), { kind: 'bytes', field: 3, value: new Uint8Array(0) }]),
    ],
    [
      'an invalid user id',
      raw([{ kind: 'bytes', field: 1, value: new TextEncoder().encode('a b') }, ...fields().slice(1)]),
    ],
    [
      'a user id that is not UTF-8',
      raw([{ kind: 'bytes', field: 1, value: fromHex('c0af') }, ...fields().slice(1)]),
    ],
    ['a wrong wire type', raw([{ kind: 'varint', field: 1, value: 1 }, ...fields().slice(1)])],
    ['a truncated encoding', encodeContactLink(LINK).slice(0, -1)],
  ];
  for (const [name, bytes] of cases) {
    it(`rejects ${name} as CONTACT_LINK_MALFORMED [WP-CONTACT-01]`, () => {
      expectCode(decodeContactLink(bytes), 'CONTACT_LINK_MALFORMED');
    });
  }

  it('reports an unknown version byte as CONTACT_LINK_VERSION_UNKNOWN [WP-CONTACT-02]', () => {
    expectCode(decodeContactLink(raw(fields(), 0x02)), 'CONTACT_LINK_VERSION_UNKNOWN');
    expectCode(decodeContactLink(raw(fields(), 0x00)), 'CONTACT_LINK_VERSION_UNKNOWN');
  });

  it('never throws on random or mutated bytes, and accepts only canonical bytes [WP-CONTACT-01]', () => {
    const valid = encodeContactLink(LINK);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          mutationArb.map((m) => mutate(valid, m)),
        ),
        (bytes) => {
          const result = decodeContactLink(bytes);
          if (result.ok) expect(encodeContactLink(result.value)).toEqual(bytes);
          else
            expect(['CONTACT_LINK_MALFORMED', 'CONTACT_LINK_VERSION_UNKNOWN']).toContain(result.error.code);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('contact link URLs', () => {
  const url = contactLinkToUrl(LINK);

  it('are lockstep://contact/ and unpadded base64url of the encoding [WP-CONTACT-03]', () => {
    expect(url.startsWith('lockstep://contact/')).toBe(true);
    const body = url.slice('lockstep://contact/'.length);
    expect(body).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(body, 'base64url').toString('hex')).toBe(toHex(encodeContactLink(LINK)));
  });

  const body = url.slice('lockstep://contact/'.length);
  const bad: Array<[string, string]> = [
    ['another scheme', `https://contact/${body}`],
    ['an upper-case prefix', `LOCKSTEP://contact/${body}`],
    ['a leading space', ` ${url}`],
    ['a trailing newline', `${url}\n`],
    ['padding', `${url}${'='.repeat((4 - (body.length % 4)) % 4 || 4)}`],
    ['standard base64 characters', `lockstep://contact/${body.replace(/-/g, '+').replace(/_/g, '/')}+`],
    [
      'a length of 1 mod 4',
      `${url}${body.length % 4 === 0 ? 'A' : body.length % 4 === 1 ? '' : body.length % 4 === 2 ? 'AAA' : 'AA'}`,
    ],
    ['an empty body', 'lockstep://contact/'],
    ['an overlong URL', `lockstep://contact/${'A'.repeat(2000)}`],
  ];
  for (const [name, text] of bad) {
    it(`rejects ${name} as CONTACT_LINK_MALFORMED [WP-CONTACT-03]`, () => {
      const result = contactLinkFromUrl(text);
      expect(result.ok).toBe(false);
      if (!result.ok)
        expect(['CONTACT_LINK_MALFORMED', 'CONTACT_LINK_VERSION_UNKNOWN']).toContain(result.error.code);
    });
  }

  it('rejects non-canonical trailing bits [WP-CONTACT-03]', () => {
    // One byte encodes as two characters whose last carries 4 unused bits; set one of them.
    expect(toBase64Url(Uint8Array.of(0))).toBe('AA');
    expect(fromBase64Url('AA')).toEqual(Uint8Array.of(0));
    expect(fromBase64Url('AB')).toBeUndefined();
    expect(fromBase64Url('AA==')).toBeUndefined();
    expect(fromBase64Url('A')).toBeUndefined();
    // A 58-byte link (58 ≡ 1 mod 3): its last character carries 4 unused bits, all zero.
    const shortUrl = contactLinkToUrl({ ...LINK, userId: 'bob' });
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = alphabet.indexOf(shortUrl.slice(-1));
    expect(last % 16).toBe(0);
    expect(contactLinkFromUrl(shortUrl).ok).toBe(true);
    expectCode(
      contactLinkFromUrl(`${shortUrl.slice(0, -1)}${alphabet[last + 1] ?? ''}`),
      'CONTACT_LINK_MALFORMED',
    );
  });

  it('never throws on arbitrary strings [WP-CONTACT-03]', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string().map((s) => `lockstep://contact/${s}`),
        ),
        (text) => {
          const result = contactLinkFromUrl(text);
          if (result.ok) expect(contactLinkToUrl(result.value)).toBe(text);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("checking the server's answer", () => {
  for (const p of providers) {
    it(`accepts the account key the link fingerprints (${p.name}) [WP-CONTACT-04]`, () => {
      expect(checkContactLink(p, LINK, { userId: 'alice-42', accountKey: account.publicKey })).toEqual({
        ok: true,
        value: undefined,
      });
    });

    it(`rejects a substituted account key, another user, or an invalid key (${p.name}) [WP-CONTACT-04]`, () => {
      expectCode(
        checkContactLink(p, LINK, { userId: 'alice-42', accountKey: other.publicKey }),
        'CONTACT_LINK_MISMATCH',
      );
      expectCode(
        checkContactLink(p, LINK, { userId: 'alice-43', accountKey: account.publicKey }),
        'CONTACT_LINK_MISMATCH',
      );
      expectCode(
        checkContactLink(p, LINK, { userId: 'alice-42', accountKey: account.publicKey.subarray(1) }),
        'CONTACT_LINK_MISMATCH',
      );
      expectCode(
        checkContactLink(p, LINK, { userId: 'alice-42', accountKey: new Uint8Array(33).fill(5) }),
        'CONTACT_LINK_MISMATCH',
      );
    });
  }
});
