/**
 * Session-layer benchmark: our implementation (noble and node:crypto providers) against
 * @signalapp/libsignal-client 0.90.0 (Rust behind N-API, async store callbacks), in one process.
 *
 * Paths (one "op" each):
 * - `setup`: initiator processes a bundle (one-time EC prekey, last-resort Kyber key), encrypts
 *   the first message, responder decrypts it (PQXDH on both sides). Prekey generation is untimed.
 * - `steady-100B` / `steady-1KiB` / `steady-64KiB`: encrypt + decrypt one message in the same
 *   direction on an established session (no DH step).
 * - `ping-pong-100B`: encrypt + decrypt one 100-byte message, alternating direction, so every
 *   message causes a DH ratchet step at the receiver and a new sending chain.
 *
 * Method: per (path, provider) row, warm-up, then K paired samples; each sample times one batch of
 * ours and one batch of libsignal (order alternating per sample to cancel drift) with
 * process.hrtime.bigint. Batch sizes are calibrated so a batch takes about `--target-ms`. Reported:
 * median ops/s of each side and the median of the per-sample ratios ours/libsignal (ops/s).
 *
 * Usage: `npm run bench [-- --json FILE] [--samples K] [--target-ms T] [--paths a,b] [--no-floors]`
 * @module
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
} from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  EMPTY_SESSION_RECORD,
  bundleFromPreKeyState,
  decryptMessage,
  encryptMessage,
  generatePreKeyState,
  processPreKeyBundle,
  type PreKeyBundle,
  type PreKeyState,
  type SessionRecord,
} from '../impl/index.js';
import { csprng } from '../spec/csprng.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { Env } from '../spec/env.js';
import { LibsignalParty, type PlainBundle } from '../test/interop/libsignal-party.js';
import { OursParty } from '../test/interop/ours-party.js';

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    json: { type: 'string' },
    samples: { type: 'string', default: '21' },
    'target-ms': { type: 'string', default: '30' },
    paths: { type: 'string' },
    'no-floors': { type: 'boolean', default: false },
  },
  strict: true,
});
const SAMPLES = Math.max(3, Number.parseInt(args.samples, 10));
const TARGET_NS = BigInt(Math.max(1, Math.round(Number.parseFloat(args['target-ms']) * 1e6)));
const WARMUP_NS = 300_000_000n;

// No forced GC between batches: a full collection shrinks the young generation and makes the
// next batch of ours (allocation-heavy) 3-4x slower, which would bias the comparison.

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/**
 * A benchmark subject: `run(n)` performs n ops (sync for ours, async for libsignal); `prepare(n)`,
 * if present, sets up untimed what the next `run(n)` consumes (e.g. fresh prekey bundles).
 */
interface Fixture {
  run(n: number): Promise<void> | void;
  prepare?(n: number): void;
}

async function time(f: Fixture, n: number): Promise<bigint> {
  f.prepare?.(n);
  const t0 = process.hrtime.bigint();
  await f.run(n);
  return process.hrtime.bigint() - t0;
}

/** Warms up for ~WARMUP_NS and returns a batch size taking about TARGET_NS. */
async function calibrate(batch: Fixture): Promise<number> {
  let n = 1;
  const start = process.hrtime.bigint();
  for (;;) {
    const t = await time(batch, n);
    const warm = process.hrtime.bigint() - start >= WARMUP_NS;
    if (t >= TARGET_NS && warm) return n;
    if (t < TARGET_NS) n = Math.min(n * 2, 1 << 20);
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

/** Interquartile range of the paired ratios per row, for the console only. */
const spread = new Map<string, [number, number]>();

interface Row {
  readonly path: string;
  readonly provider: string;
  readonly ours_per_s: number;
  readonly libsignal_per_s: number;
  readonly ratio: number;
}

async function measure(path: string, provider: string, ours: Fixture, libsignal: Fixture): Promise<Row> {
  const nOurs = await calibrate(ours);
  const nLib = await calibrate(libsignal);
  const oursNs: number[] = [];
  const libNs: number[] = [];
  const ratios: number[] = [];
  for (let k = 0; k < SAMPLES; k++) {
    let o: bigint;
    let l: bigint;
    if (k % 2 === 0) {
      o = await time(ours, nOurs);
      l = await time(libsignal, nLib);
    } else {
      l = await time(libsignal, nLib);
      o = await time(ours, nOurs);
    }
    const oPer = Number(o) / nOurs;
    const lPer = Number(l) / nLib;
    oursNs.push(oPer);
    libNs.push(lPer);
    ratios.push(lPer / oPer); // (ours ops/s) / (libsignal ops/s)
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  spread.set(`${path}/${provider}`, [
    sorted[Math.floor(sorted.length / 4)] ?? NaN,
    sorted[Math.floor((3 * sorted.length) / 4)] ?? NaN,
  ]);
  return {
    path,
    provider,
    ours_per_s: 1e9 / median(oursNs),
    libsignal_per_s: 1e9 / median(libNs),
    ratio: median(ratios),
  };
}

// ---------------------------------------------------------------------------------------------
// Fixtures: ours
// ---------------------------------------------------------------------------------------------

const PAYLOAD = { '100B': 100, '1KiB': 1024, '64KiB': 65536 } as const;
function payload(size: number): Uint8Array {
  const p = new Uint8Array(size);
  for (let i = 0; i < size; i++) p[i] = (i * 31 + 7) & 0xff;
  return p;
}

function check<T>(r: { ok: true; value: T } | { ok: false; error: { code: string } }): T {
  if (!r.ok) throw new Error(`ours rejected: ${r.error.code}`);
  return r.value;
}

/** Ours, PQXDH setup: the responder's prekeys for the next batch are generated untimed. */
function oursSetup(crypto: CryptoProvider): Fixture {
  const env: Env = { crypto, rng: csprng };
  const initiator = generatePreKeyState(env, { oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 });
  const local = { identityKeyPair: initiator.identityKeyPair, registrationId: initiator.registrationId };
  const body = payload(100);
  let responder: PreKeyState = initiator;
  let prepared: PreKeyBundle[] = [];
  return {
    prepare(n) {
      responder = generatePreKeyState(env, { oneTimePreKeys: n, oneTimeKyberPreKeys: 0 });
      const lastResort = responder.kyberPreKeys.find((k) => k.lastResort)?.keyId ?? 0;
      prepared = responder.oneTimePreKeys.map((k) =>
        bundleFromPreKeyState(responder, { deviceId: 1, preKeyId: k.keyId, kyberPreKeyId: lastResort }),
      );
    },
    run(n) {
      for (let i = 0; i < n; i++) {
        const bundle = prepared[i];
        if (bundle === undefined) throw new Error('bench: bundles not prepared');
        const record: SessionRecord = check(processPreKeyBundle(env, EMPTY_SESSION_RECORD, local, bundle, 0));
        const { message } = check(encryptMessage(env, record, body, 0));
        const out = check(decryptMessage(env, EMPTY_SESSION_RECORD, responder, message));
        responder = out.prekeys;
      }
    },
  };
}

function oursPair(crypto: CryptoProvider): { a: OursParty; b: OursParty } {
  const a = OursParty.create('alice', 1, crypto, csprng, { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 });
  const b = OursParty.create('bob', 2, crypto, csprng, { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 });
  check(a.processBundle({ name: 'bob', deviceId: 2 }, b.bundle()));
  b.decryptOrThrow('alice', 1, a.encryptOrThrow('bob', 2, payload(10)));
  a.decryptOrThrow('bob', 2, b.encryptOrThrow('alice', 1, payload(10)));
  return { a, b };
}

function oursSteady(crypto: CryptoProvider, size: number): Fixture {
  const { a, b } = oursPair(crypto);
  const body = payload(size);
  return {
    run(n) {
      for (let i = 0; i < n; i++) b.decryptOrThrow('alice', 1, a.encryptOrThrow('bob', 2, body));
    },
  };
}

function oursPingPong(crypto: CryptoProvider, size: number): Fixture {
  const { a, b } = oursPair(crypto);
  const body = payload(size);
  let turn = 0;
  return {
    run(n) {
      for (let i = 0; i < n; i++, turn++) {
        if (turn % 2 === 0) b.decryptOrThrow('alice', 1, a.encryptOrThrow('bob', 2, body));
        else a.decryptOrThrow('bob', 2, b.encryptOrThrow('alice', 1, body));
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Fixtures: libsignal
// ---------------------------------------------------------------------------------------------

let peerCounter = 0;

function libsignalSetup(): Fixture {
  const initiator = LibsignalParty.create('init', 1, { oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 });
  const responder = LibsignalParty.create('resp', 1, { oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 });
  const body = payload(100);
  let prepared: PlainBundle[] = [];
  return {
    prepare(n) {
      responder.addOneTimePreKeys(n);
      prepared = [];
      for (let i = 0; i < n; i++)
        prepared.push(responder.bundle({ withOneTimePreKey: true, kyber: 'last-resort' }));
    },
    async run(n) {
      for (let i = 0; i < n; i++) {
        const bundle = prepared[i];
        if (bundle === undefined) throw new Error('bench: bundles not prepared');
        // Fresh addresses per op so no record accumulates archived sessions.
        const id = peerCounter++;
        await initiator.processBundle({ name: `r${id}`, deviceId: 1 }, bundle);
        const m = await initiator.encrypt(`r${id}`, 1, body);
        await responder.decrypt(`i${id}`, 1, m);
      }
    },
  };
}

async function libsignalPair(): Promise<{ a: LibsignalParty; b: LibsignalParty }> {
  const a = LibsignalParty.create('alice', 1, { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 });
  const b = LibsignalParty.create('bob', 2, { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 });
  await a.processBundle({ name: 'bob', deviceId: 2 }, b.bundle());
  await b.decrypt('alice', 1, await a.encrypt('bob', 2, payload(10)));
  await a.decrypt('bob', 2, await b.encrypt('alice', 1, payload(10)));
  return { a, b };
}

async function libsignalSteady(size: number): Promise<Fixture> {
  const { a, b } = await libsignalPair();
  const body = payload(size);
  return {
    async run(n) {
      for (let i = 0; i < n; i++) await b.decrypt('alice', 1, await a.encrypt('bob', 2, body));
    },
  };
}

async function libsignalPingPong(size: number): Promise<Fixture> {
  const { a, b } = await libsignalPair();
  const body = payload(size);
  let turn = 0;
  return {
    async run(n) {
      for (let i = 0; i < n; i++, turn++) {
        if (turn % 2 === 0) await b.decrypt('alice', 1, await a.encrypt('bob', 2, body));
        else await a.decrypt('bob', 2, await b.encrypt('alice', 1, body));
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Floors: node:crypto primitives in the same call pattern, no protocol logic (optional)
// ---------------------------------------------------------------------------------------------

function floorMessage(size: number): () => void {
  const key = new Uint8Array(32).fill(7);
  const body = payload(size);
  const ids = new Uint8Array(66).fill(5);
  const info = new TextEncoder().encode('WhisperMessageKeys');
  return () => {
    // One message: sender and receiver each derive chain step, message keys, MAC; AES both ways.
    let ct: Buffer = Buffer.alloc(0);
    for (const side of [0, 1]) {
      const seed = createHmac('sha256', key).update(Uint8Array.of(1)).digest();
      createHmac('sha256', key).update(Uint8Array.of(2)).digest();
      const mk = new Uint8Array(hkdfSync('sha256', seed, new Uint8Array(0), info, 80));
      const aesKey = mk.subarray(0, 32);
      const iv = mk.subarray(64, 80);
      if (side === 0) {
        const c = createCipheriv('aes-256-cbc', aesKey, iv);
        ct = Buffer.concat([c.update(body), c.final()]);
      } else {
        const d = createDecipheriv('aes-256-cbc', aesKey, iv);
        Buffer.concat([d.update(ct), d.final()]);
      }
      createHmac('sha256', mk.subarray(32, 64)).update(ids).update(ct).digest();
    }
  };
}

function floorDhStep(): () => void {
  const rk = new Uint8Array(32).fill(3);
  const info = new TextEncoder().encode('WhisperRatchet');
  const peer = generateKeyPairSync('x25519');
  const message = floorMessage(100);
  return () => {
    // A receiving DH step: DH with the current key, a new key pair, DH with it, two root KDFs.
    const ours = generateKeyPairSync('x25519');
    const dh1 = diffieHellman({ privateKey: ours.privateKey, publicKey: peer.publicKey });
    const r1 = new Uint8Array(hkdfSync('sha256', dh1, rk, info, 64));
    const next = generateKeyPairSync('x25519');
    const dh2 = diffieHellman({ privateKey: next.privateKey, publicKey: peer.publicKey });
    hkdfSync('sha256', dh2, r1.subarray(0, 32), info, 64);
    message();
  };
}

function floorRate(op: () => void): number {
  const run = (n: number) => {
    for (let i = 0; i < n; i++) op();
  };
  let n = 1;
  while (Number(plainTimeSync(run, n)) < Number(TARGET_NS)) n *= 2;
  const samples: number[] = [];
  for (let k = 0; k < SAMPLES; k++) samples.push(Number(plainTimeSync(run, n)) / n);
  return 1e9 / median(samples);
}

function plainTimeSync(run: (n: number) => void, n: number): bigint {
  const t0 = process.hrtime.bigint();
  run(n);
  return process.hrtime.bigint() - t0;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

interface PathDef {
  readonly name: string;
  readonly ours: (c: CryptoProvider) => Fixture;
  readonly libsignal: () => Promise<Fixture>;
}

const PATHS: readonly PathDef[] = [
  {
    name: 'setup',
    ours: (c) => oursSetup(c),
    libsignal: async () => libsignalSetup(),
  },
  {
    name: 'steady-100B',
    ours: (c) => oursSteady(c, PAYLOAD['100B']),
    libsignal: () => libsignalSteady(PAYLOAD['100B']),
  },
  {
    name: 'ping-pong-100B',
    ours: (c) => oursPingPong(c, PAYLOAD['100B']),
    libsignal: () => libsignalPingPong(PAYLOAD['100B']),
  },
  {
    name: 'steady-1KiB',
    ours: (c) => oursSteady(c, PAYLOAD['1KiB']),
    libsignal: () => libsignalSteady(PAYLOAD['1KiB']),
  },
  {
    name: 'steady-64KiB',
    ours: (c) => oursSteady(c, PAYLOAD['64KiB']),
    libsignal: () => libsignalSteady(PAYLOAD['64KiB']),
  },
];

function fmt(n: number): string {
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n.toPrecision(3);
}

async function main(): Promise<void> {
  const wanted = args.paths === undefined ? undefined : new Set(args.paths.split(','));
  const started = process.hrtime.bigint();
  const rows: Row[] = [];
  console.log(
    `Lockstep session benchmark — node ${process.version}, ${SAMPLES} paired samples per row, ` +
      `batches of ~${Number(TARGET_NS) / 1e6} ms, medians`,
  );
  for (const path of PATHS) {
    if (wanted !== undefined && !wanted.has(path.name)) continue;
    for (const provider of [nobleProvider, nodeProvider]) {
      const row = await measure(path.name, provider.name, path.ours(provider), await path.libsignal());
      rows.push(row);
      console.log(
        `  ${row.path.padEnd(15)} ${row.provider.padEnd(6)} ours ${fmt(row.ours_per_s).padStart(9)}/s  ` +
          `libsignal ${fmt(row.libsignal_per_s).padStart(9)}/s  ratio ${row.ratio.toFixed(3)}`,
      );
    }
  }

  console.log('');
  const header = ['path', 'provider', 'ours ops/s', 'libsignal ops/s', 'ratio (ours/libsignal)', 'ratio IQR'];
  const table = rows.map((r) => {
    const [q1, q3] = spread.get(`${r.path}/${r.provider}`) ?? [NaN, NaN];
    return [
      r.path,
      r.provider,
      fmt(r.ours_per_s),
      fmt(r.libsignal_per_s),
      r.ratio.toFixed(3),
      `${q1.toFixed(2)}-${q3.toFixed(2)}`,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => (t[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    '| ' +
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ') +
    ' |';
  console.log(line(header));
  console.log(
    '|' + widths.map((w, i) => (i < 2 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|',
  );
  for (const t of table) console.log(line(t));

  if (!args['no-floors']) {
    console.log('');
    console.log('node:crypto floors (primitives only, same call pattern, no protocol logic or encoding):');
    for (const [name, op] of [
      ['steady-100B', floorMessage(100)],
      ['steady-1KiB', floorMessage(1024)],
      ['steady-64KiB', floorMessage(65536)],
      ['ping-pong-100B', floorDhStep()],
    ] as const) {
      console.log(`  ${name.padEnd(15)} ${fmt(floorRate(op)).padStart(9)}/s`);
    }
  }

  if (args.json !== undefined) {
    writeFileSync(args.json, JSON.stringify(rows, null, 2) + '\n');
    console.log(`\nwrote ${args.json}`);
  }
  console.log(`\ntotal ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(1)} s`);
}

await main();
