/**
 * The application payload (WP-PAY-01 … WP-PAY-04, WP-ATT-06): every content kind, the padding,
 * strict decoding, limits and UTF-8.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encryptAttachment, type AttachmentPointer } from './attachment.js';
import { concatBytes } from './bytes.js';
import { MAX_RECEIPT_IDS, MAX_TEXT_LENGTH, PAYLOAD_PADDING_BLOCK } from './constants.js';
import { nodeProvider } from './crypto/node.js';
import { ERROR_RULES, UsageError, type ErrorCode, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { decodePayload, encodePayload, type AppPayload, type PayloadContent } from './payload.js';
import { seededRng } from './rng.js';
import { encodeRawFields, type RawField } from './wire-testing.js';

const POINTER: AttachmentPointer = encryptAttachment(
  nodeProvider,
  seededRng('payload.test'),
  new Uint8Array(100),
  'image/jpeg',
).pointer;
const MESSAGE_ID = '000102030405060708090a0b0c0d0e0f';
const OTHER_ID = 'ffeeddccbbaa99887766554433221100';

const payload = (content: PayloadContent, sentAt = 1_700_000_000_000): AppPayload => ({
  messageId: MESSAGE_ID,
  sentAt,
  content,
});
const TEXT = payload({ kind: 'text', text: 'hello, Bob 👋' });
const ATTACHMENT = payload({ kind: 'attachment', pointer: POINTER, caption: 'a cat' });
const SYNC_TEXT = payload({ kind: 'sync', destination: 'bob', content: { kind: 'text', text: 'hi' } });
const SYNC_ATTACHMENT = payload({
  kind: 'sync',
  destination: 'bob',
  content: { kind: 'attachment', pointer: POINTER, caption: '' },
});
const RECEIPT = payload({ kind: 'receipt', messageIds: [MESSAGE_ID, OTHER_ID] });
const ALL = [TEXT, ATTACHMENT, SYNC_TEXT, SYNC_ATTACHMENT, RECEIPT];

function expectCode<T>(result: Result<T>, code: ErrorCode): void {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
}

/** `0x01 ‖ fields ‖ 0x80 ‖ zeros` padded exactly as the encoder pads. */
function padded(fields: readonly RawField[], version = 0x01): Uint8Array {
  const body = concatBytes(Uint8Array.of(version), encodeRawFields(fields), Uint8Array.of(0x80));
  return concatBytes(
    body,
    new Uint8Array((PAYLOAD_PADDING_BLOCK - (body.length % PAYLOAD_PADDING_BLOCK)) % PAYLOAD_PADDING_BLOCK),
  );
}

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const head: RawField[] = [
  { kind: 'bytes', field: 1, value: fromHex(MESSAGE_ID) },
  { kind: 'varint', field: 2, value: 1_700_000_000_000 },
];

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

const messageIdArb = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(toHex);
const innerArb: fc.Arbitrary<Extract<PayloadContent, { kind: 'text' | 'attachment' }>> = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 50 }).map((text) => ({ kind: 'text' as const, text })),
  fc.string({ maxLength: 20 }).map((caption) => ({ kind: 'attachment' as const, pointer: POINTER, caption })),
);
const contentArb: fc.Arbitrary<PayloadContent> = fc.oneof(
  innerArb,
  fc.record({
    kind: fc.constant('sync' as const),
    destination: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,63}$/),
    content: innerArb,
  }),
  fc.record({
    kind: fc.constant('receipt' as const),
    messageIds: fc.array(messageIdArb, { minLength: 1, maxLength: MAX_RECEIPT_IDS }),
  }),
);
const payloadArb: fc.Arbitrary<AppPayload> = fc.record({
  messageId: messageIdArb,
  sentAt: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  content: contentArb,
});

describe('payload encoding', () => {
  it('writes 0x01, message_id, sent_at, the one content field, 0x80 and zeros to a multiple of 160 [WP-PAY-01, WP-PAY-03]', () => {
    const bytes = encodePayload(TEXT);
    expect(toHex(bytes)).toBe(
      toHex(padded([...head, { kind: 'bytes', field: 3, value: utf8('hello, Bob 👋') }])),
    );
    expect(bytes.length).toBe(PAYLOAD_PADDING_BLOCK);
  });

  it('encodes each kind with its nested fields [WP-PAY-01]', () => {
    const attachment = encodeRawFields([
      { kind: 'bytes', field: 1, value: POINTER.key },
      { kind: 'bytes', field: 2, value: POINTER.digest },
      { kind: 'varint', field: 3, value: POINTER.size },
      { kind: 'bytes', field: 4, value: utf8(POINTER.contentType) },
      { kind: 'bytes', field: 5, value: utf8('a cat') },
    ]);
    expect(encodePayload(ATTACHMENT)).toEqual(
      padded([...head, { kind: 'bytes', field: 4, value: attachment }]),
    );
    const sync = encodeRawFields([
      { kind: 'bytes', field: 1, value: utf8('bob') },
      { kind: 'bytes', field: 2, value: utf8('hi') },
    ]);
    expect(encodePayload(SYNC_TEXT)).toEqual(padded([...head, { kind: 'bytes', field: 5, value: sync }]));
    const receipt = encodeRawFields([
      { kind: 'bytes', field: 1, value: fromHex(MESSAGE_ID) },
      { kind: 'bytes', field: 1, value: fromHex(OTHER_ID) },
    ]);
    expect(encodePayload(RECEIPT)).toEqual(padded([...head, { kind: 'bytes', field: 6, value: receipt }]));
  });

  it('round-trips every kind and any valid payload [WP-PAY-01]', () => {
    for (const p of ALL) expect(decodePayload(encodePayload(p))).toEqual({ ok: true, value: p });
    fc.assert(
      fc.property(payloadArb, (p) => {
        const bytes = encodePayload(p);
        expect(bytes.length % PAYLOAD_PADDING_BLOCK).toBe(0);
        expect(decodePayload(bytes)).toEqual({ ok: true, value: p });
      }),
      { numRuns: 200 },
    );
  });

  it('pads a body of 159 bytes to 160 and one of 160 bytes to 320 [WP-PAY-03]', () => {
    // version + message_id (18) + sent_at (2) + text tag and length (3) = 24 bytes before the text.
    const fixed = (textLength: number) =>
      encodePayload(payload({ kind: 'text', text: 'x'.repeat(textLength) }, 1)).length;
    const overhead = 1 + 18 + 2 + 3;
    expect(fixed(159 - overhead)).toBe(160);
    expect(fixed(160 - overhead)).toBe(320);
  });

  it('refuses invalid payloads with UsageError [WP-PAY-04]', () => {
    const bad: AppPayload[] = [
      { ...TEXT, messageId: MESSAGE_ID.toUpperCase() },
      { ...TEXT, sentAt: -1 },
      { ...TEXT, sentAt: 2 ** 53 },
      payload({ kind: 'text', text: 'x'.repeat(MAX_TEXT_LENGTH + 1) }),
      payload({ kind: 'text', text: '\ud800' }),
      payload({ kind: 'attachment', pointer: { ...POINTER, blobId: '0'.repeat(64) }, caption: '' }),
      payload({ kind: 'sync', destination: 'Bob', content: { kind: 'text', text: '' } }),
      payload({ kind: 'receipt', messageIds: [] }),
      payload({ kind: 'receipt', messageIds: Array(MAX_RECEIPT_IDS + 1).fill(MESSAGE_ID) }),
    ];
    for (const p of bad) expect(() => encodePayload(p)).toThrow(UsageError);
    expect(
      encodePayload(payload({ kind: 'text', text: 'x'.repeat(MAX_TEXT_LENGTH) })).length,
    ).toBeGreaterThan(MAX_TEXT_LENGTH);
  });
});

describe('payload decoding is strict', () => {
  it('reports an unknown version byte as PAYLOAD_VERSION_UNKNOWN [WP-PAY-02]', () => {
    expectCode(
      decodePayload(padded([...head, { kind: 'bytes', field: 3, value: utf8('hi') }], 0x02)),
      'PAYLOAD_VERSION_UNKNOWN',
    );
    expectCode(decodePayload(Uint8Array.of(0x44)), 'PAYLOAD_VERSION_UNKNOWN');
  });

  const good = encodePayload(TEXT);
  const paddingCases: Array<[string, Uint8Array]> = [
    ['an empty input', new Uint8Array(0)],
    ['a length that is not a multiple of 160', good.subarray(0, good.length - 1)],
    ['an extra block of zeros', concatBytes(good, new Uint8Array(160))],
    [
      'no 0x80 marker',
      (() => {
        const b = Uint8Array.from(good);
        b[b.lastIndexOf(0x80)] = 0;
        return b;
      })(),
    ],
    [
      'a marker other than 0x80',
      (() => {
        const b = Uint8Array.from(good);
        b[b.lastIndexOf(0x80)] = 0x81;
        return b;
      })(),
    ],
    [
      'a non-zero byte after the marker',
      (() => {
        const b = Uint8Array.from(good);
        b[b.length - 1] = 1;
        return b;
      })(),
    ],
  ];
  for (const [name, bytes] of paddingCases) {
    it(`rejects ${name} as PAYLOAD_MALFORMED [WP-PAY-03]`, () => {
      expectCode(decodePayload(bytes), 'PAYLOAD_MALFORMED');
    });
  }

  const text = (value: Uint8Array): RawField => ({ kind: 'bytes', field: 3, value });
  const fieldCases: Array<[string, readonly RawField[]]> = [
    ['no content', head],
    [
      'two contents',
      [
        ...head,
        text(utf8('a')),
        {
          kind: 'bytes',
          field: 6,
          value: encodeRawFields([{ kind: 'bytes', field: 1, value: fromHex(MESSAGE_ID) }]),
        },
      ],
    ],
    [
      'a 15-byte message id',
      [{ kind: 'bytes', field: 1, value: new Uint8Array(15) }, ...head.slice(1), text(utf8('a'))],
    ],
    ['a missing sent_at', [...head.slice(0, 1), text(utf8('a'))]],
    [
      'sent_at above 2^53 - 1',
      [...head.slice(0, 1), { kind: 'varint', field: 2, value: 2n ** 53n }, text(utf8('a'))],
    ],
    ['fields out of order', [...head.slice(1), ...head.slice(0, 1), text(utf8('a'))]],
    ['an unknown field', [...head, text(utf8('a')), { kind: 'varint', field: 7, value: 0 }]],
    [
      'a sent_at with the wrong wire type',
      [...head.slice(0, 1), { kind: 'bytes', field: 2, value: new Uint8Array(1) }, text(utf8('a'))],
    ],
    ['an empty receipt', [...head, { kind: 'bytes', field: 6, value: new Uint8Array(0) }]],
    [
      'a receipt id of 17 bytes',
      [
        ...head,
        {
          kind: 'bytes',
          field: 6,
          value: encodeRawFields([{ kind: 'bytes', field: 1, value: new Uint8Array(17) }]),
        },
      ],
    ],
    [
      'a sync without destination',
      [
        ...head,
        { kind: 'bytes', field: 5, value: encodeRawFields([{ kind: 'bytes', field: 2, value: utf8('hi') }]) },
      ],
    ],
    [
      'a sync with an invalid destination',
      [
        ...head,
        {
          kind: 'bytes',
          field: 5,
          value: encodeRawFields([
            { kind: 'bytes', field: 1, value: utf8('B') },
            { kind: 'bytes', field: 2, value: utf8('hi') },
          ]),
        },
      ],
    ],
    [
      'a sync with two contents',
      [
        ...head,
        {
          kind: 'bytes',
          field: 5,
          value: encodeRawFields([
            { kind: 'bytes', field: 1, value: utf8('bob') },
            { kind: 'bytes', field: 2, value: utf8('hi') },
            { kind: 'bytes', field: 2, value: utf8('hi') },
          ]),
        },
      ],
    ],
    [
      'an attachment with a 63-byte key',
      [
        ...head,
        {
          kind: 'bytes',
          field: 4,
          value: encodeRawFields([
            { kind: 'bytes', field: 1, value: POINTER.key.subarray(1) },
            { kind: 'bytes', field: 2, value: POINTER.digest },
            { kind: 'varint', field: 3, value: 1 },
            { kind: 'bytes', field: 4, value: utf8('a/b') },
            { kind: 'bytes', field: 5, value: new Uint8Array(0) },
          ]),
        },
      ],
    ],
    [
      'an attachment without caption',
      [
        ...head,
        {
          kind: 'bytes',
          field: 4,
          value: encodeRawFields([
            { kind: 'bytes', field: 1, value: POINTER.key },
            { kind: 'bytes', field: 2, value: POINTER.digest },
            { kind: 'varint', field: 3, value: 1 },
            { kind: 'bytes', field: 4, value: utf8('a/b') },
          ]),
        },
      ],
    ],
    [
      'an attachment with an empty content type',
      [
        ...head,
        {
          kind: 'bytes',
          field: 4,
          value: encodeRawFields([
            { kind: 'bytes', field: 1, value: POINTER.key },
            { kind: 'bytes', field: 2, value: POINTER.digest },
            { kind: 'varint', field: 3, value: 1 },
            { kind: 'bytes', field: 4, value: new Uint8Array(0) },
            { kind: 'bytes', field: 5, value: new Uint8Array(0) },
          ]),
        },
      ],
    ],
  ];
  for (const [name, fields] of fieldCases) {
    it(`rejects ${name} as PAYLOAD_MALFORMED [WP-PAY-01]`, () => {
      expectCode(decodePayload(padded(fields)), 'PAYLOAD_MALFORMED');
    });
  }

  const utf8Cases: Array<[string, Uint8Array]> = [
    ['a lone continuation byte', fromHex('80')],
    ['an overlong encoding of "/"', fromHex('c0af')],
    ['an encoded surrogate', fromHex('eda080')],
    ['a truncated sequence', fromHex('e282')],
    ['a code point above U+10FFFF', fromHex('f4908080')],
  ];
  for (const [name, bytes] of utf8Cases) {
    it(`rejects text with ${name} [WP-PAY-04]`, () => {
      expectCode(decodePayload(padded([...head, text(bytes)])), 'PAYLOAD_MALFORMED');
    });
  }

  it('keeps a leading byte-order mark and rejects text above MAX_TEXT_LENGTH [WP-PAY-04]', () => {
    const bom = decodePayload(padded([...head, text(fromHex('efbbbf41'))]));
    expect(bom.ok && bom.value.content).toEqual({ kind: 'text', text: '\ufeffA' });
    expectCode(
      decodePayload(padded([...head, text(new Uint8Array(MAX_TEXT_LENGTH + 1).fill(0x41))])),
      'PAYLOAD_MALFORMED',
    );
    expect(decodePayload(padded([...head, text(new Uint8Array(MAX_TEXT_LENGTH).fill(0x41))])).ok).toBe(true);
  });

  it('accepts MAX_RECEIPT_IDS ids and rejects one more [WP-PAY-04]', () => {
    const ids = (n: number): RawField => ({
      kind: 'bytes',
      field: 6,
      value: encodeRawFields(
        Array.from({ length: n }, () => ({ kind: 'bytes' as const, field: 1, value: fromHex(MESSAGE_ID) })),
      ),
    });
    expect(decodePayload(padded([...head, ids(MAX_RECEIPT_IDS)])).ok).toBe(true);
    expectCode(decodePayload(padded([...head, ids(MAX_RECEIPT_IDS + 1)])), 'PAYLOAD_MALFORMED');
  });

  it('never throws on random or mutated payloads, and accepts only canonical bytes [WP-PAY-01, WP-PAY-03]', () => {
    const valid = ALL.map(encodePayload);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 480 }),
          fc
            .tuple(fc.nat(valid.length - 1), mutationArb)
            .map(([i, m]) => mutate(valid[i] ?? new Uint8Array(0), m)),
        ),
        (bytes) => {
          const result = decodePayload(bytes);
          if (result.ok) expect(encodePayload(result.value)).toEqual(bytes);
          else expect(['PAYLOAD_MALFORMED', 'PAYLOAD_VERSION_UNKNOWN']).toContain(result.error.code);
        },
      ),
      { numRuns: 800 },
    );
  });
});
