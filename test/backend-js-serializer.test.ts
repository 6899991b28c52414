/**
 * The node:crypto fallback's serializer against the native binding, in one
 * process: a seeded corpus of payloads (valid 5.5 and 5.4 from both sides,
 * every digest, bodies with SEP, non-UTF-8 bodies, tampered bytes,
 * truncations, bad base64, empty, oversize, unknown and expired signers,
 * both formats' edge cases) must give the same result on both, through
 * `open`, `openAsync` and `openPacked`: the same refusal (code and message)
 * or the same content type, encoding, signer, body bytes and flags 1/2.
 * Then the batch machinery of the fallback itself: positional results, the
 * store snapshot a batch started with, a worker that dies, an idle process
 * that exits.
 */
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nativeBinding from '../native/binding.cjs';
import { jsBinding } from '../src/backend/js/index.js';
import { poolForTests, threadsFromEnv } from '../src/backend/js/pool.js';
import type { Binding, NativeCertificate, NativeCertStore, NativePrivateKey, NativeSerializer, OpenedBatch } from '../src/backend/types.js';
import { restoreText } from '../src/json/hinted.js';
import * as fx from './helpers/fixtures.js';
import { rng } from './helpers/rng.js';
import { pkcs1Sign, pssSign } from './helpers/payloads.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const native = nativeBinding as unknown as Binding;
const js = jsBinding;
const DIGESTS = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as const;
type Digest = (typeof DIGESTS)[number];
const FORMATS = ['celery-5.5', 'celery-5.4'] as const;
const SEP = Buffer.from([0, 1]);

// ---------------------------------------------------------------------------------------------
// Material: the same keys, certificates and store on both sides

/** Certificates in the store, by fixture name; `rsa4096` signs but is not in it (unknown signer). */
const IN_STORE = ['rsa2048', 'rsa1024', 'rsa3072', 'name-utf8', 'name-bmp-astral', 'serial-negative', 'expired'];
const SIGNERS = [...IN_STORE, 'rsa4096'];

interface Side {
  b: Binding;
  keys: Map<string, NativePrivateKey>;
  certs: Map<string, NativeCertificate>;
  store: NativeCertStore;
}

function keyNameOf(certName: string): string {
  return `${fx.cert(certName).key_id}.pkcs8`;
}

function makeSide(b: Binding): Side {
  const keys = new Map<string, NativePrivateKey>();
  const certs = new Map<string, NativeCertificate>();
  const store = new b.NativeCertStore();
  for (const name of SIGNERS) {
    certs.set(name, new b.NativeCertificate(fx.pemOf(fx.cert(name))));
    keys.set(name, new b.NativePrivateKey(fx.pemOf(fx.key(keyNameOf(name)))));
    if (IN_STORE.includes(name)) store.add(certs.get(name)!);
  }
  return { b, keys, certs, store };
}

const N = makeSide(native);
const J = makeSide(js);
const nodeKeys = new Map<string, KeyObject>(SIGNERS.map((n) => [n, createPrivateKey(fx.pemOf(fx.key(keyNameOf(n))))]));
const ids = new Map<string, string>(SIGNERS.map((n) => [n, N.certs.get(n)!.id]));

test('both sides see the same certificates', (t) => {
  for (const name of SIGNERS) {
    const a = N.certs.get(name)!;
    const b = J.certs.get(name)!;
    t.deepEqual([b.id, b.issuer, b.serial, b.notAfterMs, b.bits], [a.id, a.issuer, a.serial, a.notAfterMs, a.bits], name);
  }
  t.is(J.store.size, N.store.size);
  t.is(js.pollQueued(false), 0);
});

test('errorCodes: the list of the built binary (both read the core\'s ErrorCode::ALL; a binary older than the sources differs)', (t) => {
  t.deepEqual(js.errorCodes(), native.errorCodes());
});

// ---------------------------------------------------------------------------------------------
// The corpus

const R = rng(20261201);

function printable(n: number): string {
  const alphabet = ' !#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~';
  let out = '';
  for (let i = 0; i < n; i++) out += alphabet[R.int(alphabet.length)];
  return out;
}

/** Bodies of every kind a payload carries. */
function bodies(): Buffer[] {
  return [
    Buffer.from(JSON.stringify({ id: `t-${R.int(1e6)}`, args: [R.int(100), 'x'], kwargs: { a: null } })),
    Buffer.from(JSON.stringify([{ s: printable(400) }, R.int(1e9)])), // ASCII, 512 B-ish
    Buffer.from(JSON.stringify({ text: 'héllo ✓ 𝄞 ünïcode' })), // UTF-8, not ASCII
    Buffer.from(JSON.stringify({ long: printable(9000), n: 12345678901234567 })), // a literal the native scan lifts
    Buffer.concat([Buffer.from('{"a": "'), SEP, Buffer.from('"}')]), // SEP inside the body
    Buffer.concat([SEP, SEP, Buffer.from('tail')]),
    R.bytes(64 + R.int(200)), // not UTF-8 (almost surely)
    Buffer.from([0xc3, 0x28, 0x7b, 0x7d]), // invalid UTF-8
    Buffer.from([0xed, 0xa0, 0x80]), // a UTF-8-encoded surrogate: not UTF-8
    Buffer.alloc(0),
    Buffer.from('plain text, no JSON at all'),
  ];
}

const CONTENT = [
  ['application/json', 'utf-8'],
  ['application/data', 'binary'],
  ['application/x-python-serialize', 'binary'],
  ['text/plain', ''],
  ['', ''],
  ['applicatión/jsön', 'ütf-8'],
] as const;

interface Item {
  payload: Buffer;
  what: string;
  /** Must verify on both sides (with this digest). */
  valid?: Digest;
}

const corpus: Item[] = [];
const sealRefusals: { what: string; native: string; js: string }[] = [];

function sealWith(side: Side, signer: string, digest: Digest, format: (typeof FORMATS)[number]): NativeSerializer {
  return new side.b.NativeSerializer(side.keys.get(signer)!, side.certs.get(signer)!, null, digest, format, -1);
}

function tryIt<T>(f: () => T): { ok: true; value: T } | { ok: false; message: string } {
  try {
    return { ok: true, value: f() };
  } catch (err) {
    // napi's own status, when it is InvalidArg (a refusal's GenericFailure is not part of the interface).
    const status = (err as { code?: string }).code;
    const code = status !== undefined && status !== 'GenericFailure' && !status.startsWith('ERR_') ? `${status}|` : '';
    return { ok: false, message: `${code}${(err as Error).message}` };
  }
}

// Sealed by each side, with every signer, digest and format.
for (const signer of SIGNERS) {
  for (const digest of DIGESTS) {
    for (const format of FORMATS) {
      const ns = sealWith(N, signer, digest, format);
      const jsS = sealWith(J, signer, digest, format);
      const all = bodies();
      // Not every body with every key (RSA-3072/4096 signatures cost): a seeded few.
      const chosen = signer === 'rsa2048' || signer === 'rsa1024' ? all : all.filter(() => R.int(3) === 0);
      for (const body of chosen) {
        const [ct, enc] = R.pick(CONTENT);
        const what = `sealed ${signer} ${digest} ${format} ${ct} ${body.length} B`;
        const a = tryIt(() => ns.seal(ct, enc, body));
        const b = tryIt(() => jsS.seal(ct, enc, body));
        if (a.ok !== b.ok || (!a.ok && !b.ok && a.message !== b.message)) {
          sealRefusals.push({ what, native: a.ok ? 'ok' : a.message, js: b.ok ? 'ok' : b.message });
        }
        const valid = signer !== 'rsa4096' && signer !== 'expired' ? digest : undefined;
        if (a.ok) corpus.push({ payload: Buffer.from(a.value, 'latin1'), what: `${what}, by native`, ...(valid ? { valid } : {}) });
        if (b.ok) corpus.push({ payload: Buffer.from(b.value, 'latin1'), what: `${what}, by js`, ...(valid ? { valid } : {}) });
      }
    }
  }
}
const sealedCount = corpus.length;

/** Fields joined by SEP, base64'd: any layout, any bytes. */
function packFields(fields: Uint8Array[]): Buffer {
  const parts: Uint8Array[] = [];
  fields.forEach((f, i) => {
    if (i > 0) parts.push(SEP);
    parts.push(f);
  });
  return Buffer.from(Buffer.concat(parts).toString('base64'), 'latin1');
}
const b64 = (b: Uint8Array | string): Buffer => Buffer.from(Buffer.from(b).toString('base64'), 'latin1');
const u = (s: string): Buffer => Buffer.from(s, 'utf8');

// Hand-made payloads: every branch of the core's open.
{
  const key = nodeKeys.get('rsa2048')!;
  const id = ids.get('rsa2048')!;
  const body = u('{"hand": "made"}');
  const good = pssSign(key, body, 222);
  const add = (what: string, payload: Buffer, valid?: Digest): void => {
    corpus.push({ payload, what, ...(valid ? { valid } : {}) });
  };
  for (const salt of [0, 1, 20, 32, 100, 222]) {
    add(`5.5 salt ${salt}`, packFields([b64(id), b64(pssSign(key, body, salt)), u('application/json'), u('utf-8'), body]), 'sha256');
    add(`5.4 salt ${salt}`, packFields([u(id), pssSign(key, body, salt), u('application/json'), u('utf-8'), body]), 'sha256');
  }
  add('5.5 pkcs1 v1.5 signature', packFields([b64(id), b64(pkcs1Sign(key, body)), u('application/json'), u('utf-8'), body]));
  add('5.4 pkcs1 v1.5 signature', packFields([u(id), pkcs1Sign(key, body), u('application/json'), u('utf-8'), body]));
  add('5.5 signature one byte short', packFields([b64(id), b64(good.subarray(1)), u('a'), u('b'), body]));
  add('5.5 signature one byte long', packFields([b64(id), b64(Buffer.concat([good, Buffer.from([0])])), u('a'), u('b'), body]));
  add('5.5 signature empty', packFields([b64(id), u(''), u('a'), u('b'), body]));
  add('5.5 signature not base64', packFields([b64(id), u('!!!!'), u('a'), u('b'), body]));
  add('5.5 signature base64, no padding', packFields([b64(id), u(good.toString('base64').replace(/=+$/, '')), u('a'), u('b'), body]));
  add('5.5 signature base64 with stray bits', packFields([b64(id), u('QR=='), u('a'), u('b'), body]));
  add('5.5 signature base64 with a line break', packFields([b64(id), u(good.toString('base64').replace(/(.{64})/, '$1\n')), u('a'), u('b'), body]));
  add('5.5 signer base64 with stray bits', packFields([u(b64(id).toString().replace(/=*$/, '').slice(0, -1) + 'B='), b64(good), u('a'), u('b'), body]));
  add('5.5 signer unknown', packFields([b64('nobody 42'), b64(good), u('a'), u('b'), body]));
  add('5.5 signer unknown, odd bytes', packFields([b64(Buffer.from([0x27, 0x5c, 0x00, 0xff, 0x41, 0x0a])), b64(good), u('a'), u('b'), body]));
  add('5.5 signer unknown, long', packFields([b64('x'.repeat(1500)), b64(good), u('a'), u('b'), body]));
  add('5.5 signer unknown, very long', packFields([b64('y'.repeat(3000)), b64(good), u('a'), u('b'), body]));
  add('5.5 signer not UTF-8', packFields([b64(Buffer.from([0xff, 0xfe])), b64(good), u('a'), u('b'), body]));
  add('5.4 signer unknown, raw', packFields([u('nobody 42'), good, u('a'), u('b'), body]));
  add('5.4 signer raw but 5.5 signature', packFields([u(id), b64(good), u('application/json'), u('utf-8'), body]));
  add('5.5 signer b64 but raw signature', packFields([b64(id), good, u('application/json'), u('utf-8'), body]));
  add('5.4 body with SEP', packFields([u(id), pssSign(key, u('a\u0000\u0001b'), 222), u('application/json'), u('utf-8'), u('a\u0000\u0001b')]));
  add('5.4 signature short (no SEP at its end)', packFields([u(id), good.subarray(0, 200), u('application/json'), u('utf-8'), body]));
  add('5.4 payload ends with the signature', Buffer.from(Buffer.concat([u(id), SEP, good]).toString('base64'), 'latin1'));
  add('5.4 signature then SEP, nothing else', Buffer.from(Buffer.concat([u(id), SEP, good, SEP]).toString('base64'), 'latin1'));
  add('5.5 content type not UTF-8', packFields([b64(id), b64(good), Buffer.from([0xff]), u('utf-8'), body]));
  add('5.5 encoding not UTF-8', packFields([b64(id), b64(good), u('application/json'), Buffer.from([0xc0, 0x80]), body]));
  add('5.4 content type not UTF-8', packFields([u(id), good, Buffer.from([0xfe]), u('utf-8'), body]));
  for (let k = 1; k <= 4; k++) {
    add(`5.5 only ${k} fields`, packFields([b64(id), b64(good), u('application/json'), u('utf-8'), body].slice(0, k)));
    add(`5.4 only ${k} fields`, packFields([u(id), good, u('application/json'), u('utf-8'), body].slice(0, k)));
  }
  add('no SEP at all', b64('just some bytes'));
  add('empty', Buffer.alloc(0));
  add('one space', u(' '));
  add('only padding', u('===='));
  add('one char', u('Q'));
  add('two chars', u('QQ'));
  add('not ASCII', Buffer.from([0xff, 0xfe, 0x41, 0x41, 0x41, 0x41]));
  add('UTF-8 text', u('é'.repeat(8)));
  add('expired signer, 5.5', packFields([b64(ids.get('expired')!), b64(good), u('a'), u('b'), body]));
  add('expired signer, 5.4', packFields([u(ids.get('expired')!), good, u('a'), u('b'), body]));
  add('expired signer, 5.5, bad signature base64', packFields([b64(ids.get('expired')!), u('!'), u('a'), u('b'), body]));
  add('non-ASCII signer id, 5.4 raw', packFields([u(ids.get('name-utf8')!), pssSign(nodeKeys.get('name-utf8')!, body, 222), u('a'), u('b'), body]), 'sha256');
  for (let k = 0; k < 60; k++) add(`random bytes ${k}`, b64(R.bytes(R.int(400))));
  for (let k = 0; k < 60; k++) {
    const junk = [R.bytes(R.int(20)), R.bytes(R.int(300)), R.bytes(R.int(10)), R.bytes(R.int(10)), R.bytes(R.int(50))];
    add(`random fields ${k}`, packFields(junk.slice(0, 1 + R.int(5))));
  }
}

// Mutations of the sealed payloads.
{
  const sealed = corpus.slice(0, sealedCount);
  const mutate = (what: string, payload: Buffer): void => {
    corpus.push({ payload, what });
  };
  for (let k = 0; k < 3000; k++) {
    const src = R.pick(sealed);
    const p = src.payload;
    const kind = R.int(12);
    const at = R.int(Math.max(1, p.length));
    switch (kind) {
      case 0: {
        const q = Buffer.from(p);
        q[at] = R.pick([0x41, 0x2b, 0x2f, 0x3d, 0x20, 0x0a, 0x00, 0xff, q[at]! ^ 1]);
        mutate(`${src.what}: char ${at} changed`, q);
        break;
      }
      case 1:
        mutate(`${src.what}: base64 cut at ${at}`, p.subarray(0, at));
        break;
      case 2: {
        const raw = Buffer.from(p.toString('latin1'), 'base64');
        mutate(`${src.what}: decoded cut at`, b64(raw.subarray(0, R.int(raw.length + 1))));
        break;
      }
      case 3: {
        const raw = Buffer.from(p.toString('latin1'), 'base64');
        if (raw.length > 0) {
          const k = R.int(raw.length);
          raw[k] = raw[k]! ^ (1 << R.int(8));
        }
        mutate(`${src.what}: decoded byte flipped`, b64(raw));
        break;
      }
      case 4:
        mutate(`${src.what}: MIME line breaks`, Buffer.from(p.toString('latin1').replace(/(.{76})/g, '$1\n'), 'latin1'));
        break;
      case 5:
        mutate(`${src.what}: padding stripped`, Buffer.from(p.toString('latin1').replace(/=+$/, ''), 'latin1'));
        break;
      case 6:
        mutate(`${src.what}: '=' appended`, Buffer.concat([p, u('=')]));
        break;
      case 7:
        mutate(`${src.what}: 'AAAA' appended`, Buffer.concat([p, u('AAAA')]));
        break;
      case 8:
        mutate(`${src.what}: space inserted`, Buffer.concat([p.subarray(0, at), u(' '), p.subarray(at)]));
        break;
      case 9:
        mutate(`${src.what}: non-ASCII byte inserted`, Buffer.concat([p.subarray(0, at), Buffer.from([0xe9]), p.subarray(at)]));
        break;
      case 10: {
        // The last data character before the padding gets stray low bits.
        const s = p.toString('latin1');
        const m = /([A-Za-z0-9+/])(=+)$/.exec(s);
        if (m) mutate(`${src.what}: stray bits`, Buffer.from(s.slice(0, m.index) + (m[1] === 'A' ? 'B' : 'A') + m[2], 'latin1'));
        break;
      }
      case 11: {
        const raw = Buffer.from(p.toString('latin1'), 'base64');
        mutate(`${src.what}: SEP appended`, b64(Buffer.concat([raw, SEP, u('more')])));
        break;
      }
    }
  }
}

test('the corpus is as large and as varied as it claims', (t) => {
  t.true(corpus.length >= 3000, `${corpus.length} payloads`);
  t.true(sealedCount >= 600, `${sealedCount} sealed`);
  t.true(corpus.some((c) => c.valid !== undefined));
});

test('seal: the same refusals on both sides (5.4 with SEP or non-UTF-8 bodies)', (t) => {
  t.deepEqual(sealRefusals, []);
  // And there were refusals to compare.
  const ns = sealWith(N, 'rsa2048', 'sha256', 'celery-5.4');
  const jsS = sealWith(J, 'rsa2048', 'sha256', 'celery-5.4');
  for (const [ct, body] of [
    ['application/json', Buffer.from('a\u0000\u0001b')],
    ['a\u0000\u0001b', Buffer.from('x')],
    ['application/json', Buffer.from([0xff])],
  ] as const) {
    const a = tryIt(() => ns.seal(ct, 'utf-8', body));
    t.false(a.ok);
    t.deepEqual(tryIt(() => jsS.seal(ct, 'utf-8', body)), a);
  }
});

// ---------------------------------------------------------------------------------------------
// Opening, one by one and in batches

type Outcome =
  | { ok: true; contentType: string; contentEncoding: string; signer: string; body: string; text: boolean; flags?: number }
  | { ok: false; error: string };

function fromOpened(o: { contentType: string; contentEncoding: string; body: string | Buffer; signer: string }): Outcome {
  const text = typeof o.body === 'string';
  return {
    ok: true,
    contentType: o.contentType,
    contentEncoding: o.contentEncoding,
    signer: o.signer,
    body: (text ? Buffer.from(o.body as string, 'utf8') : (o.body as Buffer)).toString('hex'),
    text,
  };
}

function errorOf(err: unknown): Outcome {
  const e = err as Error & { code?: string };
  return { ok: false, error: `${e.code === 'InvalidArg' ? 'InvalidArg|' : ''}${e.message}` };
}

function openOne(s: NativeSerializer, p: Buffer): Outcome {
  try {
    return fromOpened(s.open(p));
  } catch (err) {
    return errorOf(err);
  }
}

function fromBatch(batch: OpenedBatch, i: number, errorCodes: string[]): Outcome {
  const m = batch.meta.subarray(i * 9, i * 9 + 9);
  if (m[0] !== 0) return { ok: false, error: `${errorCodes[m[0]! - 1]}: ${batch.strings[m[1]!]}` };
  let body = batch.buffer.subarray(m[4], m[5]);
  if ((m[6]! & 32) !== 0) body = Buffer.from(restoreText(body.toString('utf8'), batch.literals, m[7]!), 'utf8');
  return {
    ok: true,
    contentType: batch.strings[m[1]!]!,
    contentEncoding: batch.strings[m[2]!]!,
    signer: batch.strings[m[3]!]!,
    body: body.toString('hex'),
    text: (m[6]! & 1) !== 0,
    flags: m[6]! & 3,
  };
}

async function openPacked(s: NativeSerializer, payloads: Buffer[], jsonTypes: string[], codes: string[], spread?: boolean): Promise<Outcome[]> {
  const lengths = Uint32Array.from(payloads.map((p) => p.length));
  const batch = await s.openPacked(Buffer.concat(payloads), lengths, jsonTypes, spread);
  t0check(batch, payloads.length);
  return payloads.map((_, i) => fromBatch(batch, i, codes));
}

function t0check(batch: OpenedBatch, n: number): void {
  if (batch.meta.length !== n * 9) throw new Error(`meta has ${batch.meta.length} numbers for ${n} items`);
}

/** Verifying serializers: every digest, the default limit and two small ones. */
const CONFIGS: { digest: Digest; max: number }[] = [
  ...DIGESTS.map((digest) => ({ digest, max: -1 })),
  { digest: 'sha256', max: 2500 },
  { digest: 'sha256', max: 0 },
];

function verifier(side: Side, c: { digest: Digest; max: number }): NativeSerializer {
  return new side.b.NativeSerializer(null, null, side.store, c.digest, 'celery-5.5', c.max);
}

interface Mismatch {
  what: string;
  config: string;
  native: Outcome;
  js: Outcome;
}

function report(mismatches: Mismatch[]): string {
  return JSON.stringify(mismatches.slice(0, 5), null, 1).slice(0, 6000);
}

test('open: the same result for every payload, every digest and limit', (t) => {
  const mismatches: Mismatch[] = [];
  let ok = 0;
  const seen = new Set<string>();
  for (const c of CONFIGS) {
    const ns = verifier(N, c);
    const jsS = verifier(J, c);
    for (const item of corpus) {
      const a = openOne(ns, item.payload);
      const b = openOne(jsS, item.payload);
      if (JSON.stringify(a) !== JSON.stringify(b)) mismatches.push({ what: item.what, config: JSON.stringify(c), native: a, js: b });
      if (a.ok) ok++;
      else seen.add(a.error.replace(/'.*'/, "'...'").replace(/\d+ bytes, over the limit of \d+/, 'N bytes'));
      if (item.valid === c.digest && c.max === -1 && (!a.ok || !b.ok)) {
        mismatches.push({ what: `${item.what} (must verify)`, config: JSON.stringify(c), native: a, js: b });
      }
    }
  }
  t.deepEqual(mismatches.length, 0, report(mismatches));
  t.true(ok > 1000);
  t.log(`${corpus.length} payloads x ${CONFIGS.length} serializers: ${ok} verified, ${seen.size} distinct refusals`);
  // Every refusal of the core's open was met.
  for (const want of [
    'ERR_PAYLOAD_TOO_LARGE',
    'the payload is empty',
    'not valid base64',
    'too few fields',
    'too many fields for the celery-5.4',
    'content type or encoding is not UTF-8',
    'ERR_UNKNOWN_CERTIFICATE',
    'ERR_CERTIFICATE_EXPIRED',
    'Bad signature: the signature is not valid base64',
    'ERR_BAD_SIGNATURE: Bad signature',
  ]) {
    t.true([...seen].some((s) => s.includes(want)), want);
  }
});

test('openPacked: the same results, flags 1 and 2 included, in batches of every size, fanned out over the pool or not', async (t) => {
  const codes = native.errorCodes();
  const mismatches: Mismatch[] = [];
  for (const c of CONFIGS) {
    const ns = verifier(N, c);
    const jsS = verifier(J, c);
    for (const jsonTypes of [[], ['application/json', 'application/data', 'text/plain']]) {
      let at = 0;
      while (at < corpus.length) {
        const n = R.pick([1, 2, 7, 64, 255, 600]);
        const items = corpus.slice(at, at + n);
        at += n;
        const payloads = items.map((i) => i.payload);
        // The native side opens a chunk fanned out over its pool, or on one pool thread item after item.
        const spread = R.pick([true, false, undefined]);
        const [a, b] = await Promise.all([openPacked(ns, payloads, jsonTypes, codes, spread), openPacked(jsS, payloads, jsonTypes, codes)]);
        for (let i = 0; i < items.length; i++) {
          if (JSON.stringify(a[i]) !== JSON.stringify(b[i])) {
            mismatches.push({ what: items[i]!.what, config: `${JSON.stringify(c)} ${jsonTypes.join(',')} spread ${String(spread)}`, native: a[i]!, js: b[i]! });
          }
        }
      }
    }
  }
  t.is(mismatches.length, 0, report(mismatches));
});

test('openPacked: lengths past the data and a missing store are refused as natively', (t) => {
  for (const side of [N, J]) {
    const s = verifier(side, { digest: 'sha256', max: -1 });
    const e = t.throws(() => s.openPacked(Buffer.alloc(3), Uint32Array.from([2, 2]), []));
    t.is((e as Error & { code?: string }).code, 'InvalidArg');
    t.is(e!.message, 'lengths add up to more than the data');
  }
  const outcomes = [N, J].map((side) => {
    const s = new side.b.NativeSerializer(null, null, null, 'sha256', 'celery-5.5', -1);
    return [
      tryIt(() => s.open(Buffer.from('x'))),
      tryIt(() => s.openPacked(Buffer.alloc(0), new Uint32Array(0), [])),
      tryIt(() => s.openAsync(Buffer.from('x'))),
      tryIt(() => s.seal('a', 'b', Buffer.from('x'))),
      tryIt(() => s.sealAsync('a', 'b', Buffer.from('x'))),
      tryIt(() => s.sealMany('a', 'b', [Buffer.from('x')])),
    ];
  });
  t.deepEqual(outcomes[1], outcomes[0]);
  t.true(outcomes[0]!.every((o) => !o.ok && o.message.startsWith('InvalidArg|')));
});

test('arguments of the wrong type are refused as napi refuses them', (t) => {
  const outcomes = [N, J].map((side) => {
    const v = verifier(side, { digest: 'sha256', max: -1 });
    const s = sealWith(side, 'rsa2048', 'sha256', 'celery-5.5');
    const any = (x: unknown) => x as never;
    return [
      tryIt(() => v.open(any('x'))),
      tryIt(() => v.open(any(null))),
      tryIt(() => v.openAsync(any(5))),
      tryIt(() => v.openPacked(any('x'), new Uint32Array(0), [])),
      tryIt(() => v.openPacked(Buffer.alloc(0), any([1]), [])),
      tryIt(() => v.openPacked(Buffer.alloc(0), new Uint32Array(0), any('x'))),
      tryIt(() => s.seal(any(1), 'b', Buffer.alloc(1))),
      tryIt(() => s.seal('a', 'b', any('x'))),
      tryIt(() => s.sealMany('a', 'b', any(['x']))),
      tryIt(() => s.sealMany('a', 'b', any('x'))),
      tryIt(() => new side.b.NativeSerializer(any({}), null, null, 'sha256', 'celery-5.5', -1)),
      tryIt(() => new side.b.NativeSerializer(any({}), null, null, 'sha256', 'nope', -1)),
      tryIt(() => new side.b.NativeSerializer(null, null, null, any(1), 'celery-5.5', -1)),
      tryIt(() => new side.b.NativeSerializer(null, null, null, 'sha256', any(undefined), -1)),
      ...[null, true, {}, [], 1.5, 10n, Symbol('x'), () => 1].map((v) => tryIt(() => s.seal(any(v), 'b', Buffer.alloc(1)))),
    ].map((o) => (o.ok ? 'ok' : o.message));
  });
  t.deepEqual(outcomes[1], outcomes[0]);
});

test('the constructor refuses what the native one refuses, with the same messages', (t) => {
  const cases: [string, string, number][] = [
    ['sha256', 'celery-5.3', -1],
    ['md5', 'celery-5.5', -1],
    ['md5', 'celery-5.3', -1],
    ['SHA512', 'celery-5.4', 1.5],
    ['Sha1', 'celery-5.5', Number.NaN],
    ['sha256', 'celery-5.5', Number.POSITIVE_INFINITY],
    ['sha256\u0000', 'celery-5.5', 0],
    ['', '', 0],
  ];
  for (const [digest, format, max] of cases) {
    const make = (side: Side) => tryIt(() => new side.b.NativeSerializer(null, null, side.store, digest, format, max) && 'made');
    t.deepEqual(make(J), make(N), `${digest} ${format}`);
  }
});

test('openAsync: the same result as open, all in flight together', async (t) => {
  const sample = corpus.filter((_, i) => i % 5 === 0);
  const c = { digest: 'sha256' as const, max: 2500 };
  const ns = verifier(N, c);
  const jsS = verifier(J, c);
  const settle = (s: NativeSerializer, p: Buffer): Promise<Outcome> => s.openAsync(p).then(fromOpened, errorOf);
  const [a, b] = await Promise.all([Promise.all(sample.map((i) => settle(ns, i.payload))), Promise.all(sample.map((i) => settle(jsS, i.payload)))]);
  const mismatches: Mismatch[] = [];
  for (let i = 0; i < sample.length; i++) {
    if (JSON.stringify(a[i]) !== JSON.stringify(b[i])) mismatches.push({ what: sample[i]!.what, config: 'async', native: a[i]!, js: b[i]! });
    if (JSON.stringify(b[i]) !== JSON.stringify(openOne(jsS, sample[i]!.payload))) {
      mismatches.push({ what: sample[i]!.what, config: 'async vs sync', native: openOne(jsS, sample[i]!.payload), js: b[i]! });
    }
  }
  t.is(mismatches.length, 0, report(mismatches));
});

// ---------------------------------------------------------------------------------------------
// Sealing in batches

test('sealMany and sealAsync: what one side seals the other opens; refusals by index as natively', async (t) => {
  for (const format of FORMATS) {
    for (const digest of ['sha256', 'sha512'] as const) {
      const list = bodies();
      const [na, ja] = await Promise.all([
        sealWith(N, 'rsa2048', digest, format).sealMany('application/json', 'utf-8', list),
        sealWith(J, 'rsa2048', digest, format).sealMany('application/json', 'utf-8', list),
      ]);
      t.deepEqual(ja.errors, na.errors);
      t.deepEqual(ja.messages, na.messages);
      t.is(ja.payloads.length, list.length);
      const nv = verifier(N, { digest, max: -1 });
      const jv = verifier(J, { digest, max: -1 });
      for (let i = 0; i < list.length; i++) {
        if (na.payloads[i] === '') {
          t.is(ja.payloads[i], '');
          continue;
        }
        for (const [v, p] of [
          [nv, ja.payloads[i]!],
          [jv, na.payloads[i]!],
          [jv, ja.payloads[i]!],
        ] as const) {
          const o = openOne(v, Buffer.from(p, 'latin1'));
          t.true(o.ok && o.body === list[i]!.toString('hex'), `${format} ${digest} item ${i}`);
        }
      }
      // One at a time, off the event loop.
      const one = await sealWith(J, 'rsa3072', digest, format).sealAsync('application/json', 'utf-8', list[0]!);
      t.true(openOne(nv, Buffer.from(one, 'latin1')).ok);
      const refusedN = await sealWith(N, 'rsa3072', digest, 'celery-5.4').sealAsync('a', 'b', SEP).then(String, (e: Error) => e.message);
      const refusedJ = await sealWith(J, 'rsa3072', digest, 'celery-5.4').sealAsync('a', 'b', SEP).then(String, (e: Error) => e.message);
      t.is(refusedJ, refusedN);
    }
  }
  t.deepEqual(await sealWith(J, 'rsa2048', 'sha256', 'celery-5.5').sealMany('a', 'b', []), { payloads: [], errors: [], messages: [] });
});

// ---------------------------------------------------------------------------------------------
// The fallback's batch machinery

test('a batch works on the store as it was when the batch started', async (t) => {
  const store = new js.NativeCertStore();
  store.add(J.certs.get('rsa2048')!);
  const v = new js.NativeSerializer(null, null, store, 'sha256', 'celery-5.5', -1);
  const by3072 = Buffer.from(sealWith(J, 'rsa3072', 'sha256', 'celery-5.5').seal('application/json', 'utf-8', u('[1]')), 'latin1');
  const by2048 = Buffer.from(sealWith(J, 'rsa2048', 'sha256', 'celery-5.5').seal('application/json', 'utf-8', u('[2]')), 'latin1');
  const codes = js.errorCodes();
  const before = openPacked(v, [by3072, by2048], [], codes);
  const beforeAsync = v.openAsync(by3072).then(fromOpened, errorOf);
  store.add(J.certs.get('rsa3072')!); // while the batch is out
  const after = openPacked(v, [by3072, by2048], [], codes);
  const [b, a, ba] = await Promise.all([before, after, beforeAsync]);
  t.like(b[0], { ok: false });
  t.regex((b[0] as { error: string }).error, /^ERR_UNKNOWN_CERTIFICATE/);
  t.like(ba, { ok: false });
  t.like(b[1], { ok: true });
  t.like(a[0], { ok: true, body: u('[1]').toString('hex') });
  t.like(a[1], { ok: true });
});

test('every payload gets exactly one result, in order, whatever its neighbours are', async (t) => {
  const v = verifier(J, { digest: 'sha256', max: 3000 });
  const codes = js.errorCodes();
  const good = corpus.filter((c) => c.valid === 'sha256').map((c) => c.payload);
  const huge = Buffer.alloc(10_000, 0x41); // over the limit: refused before it is copied
  const payloads: Buffer[] = [];
  for (let i = 0; i < 900; i++) payloads.push(i % 9 === 4 ? huge : i % 11 === 3 ? Buffer.from('!!') : good[i % good.length]!);
  const out = await openPacked(v, payloads, ['application/json'], codes);
  t.is(out.length, payloads.length);
  for (let i = 0; i < payloads.length; i++) {
    const { flags: _, ...got } = out[i] as Outcome & { flags?: number };
    t.deepEqual(got, openOne(v, payloads[i]!), `item ${i}`);
  }
  t.regex((out[4] as { error: string }).error, /^ERR_PAYLOAD_TOO_LARGE: Unable to deserialize: the payload is 10000 bytes, over the limit of 3000$/);
  const empty = await v.openPacked(Buffer.alloc(0), new Uint32Array(0), []);
  t.is(empty.meta.length, 0);
});

test.serial('a worker that dies mid-batch: its items are refused once each, the others answered, and it is replaced', async (t) => {
  const v = verifier(J, { digest: 'sha256', max: -1 });
  const codes = js.errorCodes();
  const good = corpus.filter((c) => c.valid === 'sha256').map((c) => c.payload);
  const payloads = Array.from({ length: 3000 }, (_, i) => good[i % good.length]!);
  await openPacked(v, payloads.slice(0, 8), [], codes); // the pool is up
  t.true(poolForTests.started() >= 1);
  const out = openPacked(v, payloads, [], codes);
  await new Promise((r) => setTimeout(r, 5));
  t.true(poolForTests.killAll() >= 1);
  const results = await out;
  t.is(results.length, payloads.length);
  let refused = 0;
  for (const r of results) {
    if (r.ok) continue;
    refused++;
    t.regex(r.error, /^ERR_(INTERNAL|BAD_SIGNATURE): internal error in celery-sign's node:crypto fallback: the worker thread stopped .*; the payload was not verified$/);
  }
  t.true(refused > 0, 'the kill came while the batch was out');
  // Replaced: the next batch is whole.
  const again = await openPacked(v, payloads.slice(0, 100), [], codes);
  t.true(again.every((r) => r.ok));
  // A seal batch whose worker dies gets one refusal per body.
  const s = sealWith(J, 'rsa2048', 'sha256', 'celery-5.5');
  const sealing = s.sealMany('a', 'b', Array.from({ length: 64 }, () => u('x')));
  await new Promise((r) => setTimeout(r, 5));
  poolForTests.killAll();
  const sealed = await sealing;
  t.is(sealed.payloads.length, 64);
  for (let e = 0; e < sealed.errors.length; e += 3) {
    t.is(sealed.payloads[sealed.errors[e]!], '');
    t.regex(sealed.messages[sealed.errors[e + 2]!]!, /^internal error in celery-sign's node:crypto fallback: the worker thread stopped .*; the body was not signed$/);
  }
  t.is(new Set(sealed.errors.filter((_, k) => k % 3 === 0)).size, sealed.errors.length / 3);
});

test('setThreads refuses what the native one refuses, with its messages; CELERY_SIGN_THREADS read as the core reads it', (t) => {
  for (const v of [0, 1.5, -1, 1025, 2000, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e21, 'x', null]) {
    const run = (b: Binding) => tryIt(() => b.setThreads(v as never));
    t.deepEqual(run(js), run(native), String(v));
  }
  const cases: [string, number | null][] = [
    ['3', 3],
    [' 3\n', 3],
    ['007', 7],
    ['1024', 1024],
    ['1025', 1024],
    ['99999999999999999999999', 1024],
    ['0', null],
    ['000', null],
    ['', null],
    ['+3', null],
    ['-3', null],
    ['3x', null],
    ['3 4', null],
    ['٣', null],
  ];
  for (const [v, want] of cases) t.is(threadsFromEnv(v), want, JSON.stringify(v));
});

test('threadCount: the cores by default, fixed once used', (t) => {
  const n = js.threadCount();
  t.true(n >= 1);
  t.false(js.setThreads(n + 1));
  t.is(js.threadCount(), n);
});

test('the process exits when nothing is out (the pool does not keep it alive), and waits for what is', async (t) => {
  const script = `
    import { readFileSync } from 'node:fs';
    import { backend, Certificate, CertStore, PrivateKey, SecureSerializer } from 'celery-sign';
    const cert = new Certificate(readFileSync(${JSON.stringify(fx.pathOf(fx.cert('rsa2048')))}));
    const s = new SecureSerializer({ key: new PrivateKey(readFileSync(${JSON.stringify(fx.pathOf(fx.key('rsa2048.pkcs8')))})), cert, store: new CertStore([cert]) });
    const many = await s.serializeMany([1, 2, 3]);
    s.deserializeMany(many).then((r) => console.log(backend, r.map((x) => x.value).join(',')));
  `;
  const started = Date.now();
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, CELERY_SIGN_BACKEND: 'js' }, timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
  t.is(out.trim(), 'js 1,2,3');
  t.true(Date.now() - started < 20_000);
});

test('a single async call after a batch leaves nothing that keeps the process alive (the single calls\' thread is unref\'d)', async (t) => {
  const script = `
    import { readFileSync } from 'node:fs';
    import { backend, Certificate, CertStore, PrivateKey, SecureSerializer } from 'celery-sign';
    const cert = new Certificate(readFileSync(${JSON.stringify(fx.pathOf(fx.cert('rsa2048')))}));
    const s = new SecureSerializer({ key: new PrivateKey(readFileSync(${JSON.stringify(fx.pathOf(fx.key('rsa2048.pkcs8')))})), cert, store: new CertStore([cert]) });
    const [r] = await s.deserializeMany([s.serialize([1])]);
    await s.serializeAsync([2]);
    console.log(backend, r.ok);
  `;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, CELERY_SIGN_BACKEND: 'js' }, timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
  t.is(out.trim(), 'js true');
});

test('id-RSASSA-PSS keys with parameters: seal, sealAsync and sealMany refuse the digests the native side refuses, and what they sign opens alike', async (t) => {
  t.timeout(300_000);
  // The openssl CLI makes the keys (scripts/setup.sh installs it): missing, this fails.
  execFileSync('openssl', ['version'], { stdio: 'pipe' });
  const dir = mkdtempSync(join(tmpdir(), 'cs-pss-ser-'));
  try {
    // [name, genpkey options, req options for the self-signature the key allows]
    const kinds: [string, string[], string[]][] = [
      ['unrestricted', [], []],
      [
        'sha256/mgf1-sha1/salt 20',
        ['-pkeyopt', 'rsa_pss_keygen_md:sha256', '-pkeyopt', 'rsa_pss_keygen_mgf1_md:sha1', '-pkeyopt', 'rsa_pss_keygen_saltlen:20'],
        ['-sha256', '-sigopt', 'rsa_mgf1_md:sha1', '-sigopt', 'rsa_pss_saltlen:20'],
      ],
      [
        'sha512/salt 64',
        ['-pkeyopt', 'rsa_pss_keygen_md:sha512', '-pkeyopt', 'rsa_pss_keygen_mgf1_md:sha512', '-pkeyopt', 'rsa_pss_keygen_saltlen:64'],
        ['-sha512', '-sigopt', 'rsa_pss_saltlen:64'],
      ],
    ];
    let made = 0;
    for (const [i, [name, opts, reqOpts]] of kinds.entries()) {
      const kf = join(dir, `${i}.key`);
      const cf = join(dir, `${i}.crt`);
      try {
        execFileSync('openssl', ['genpkey', '-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048', ...opts, '-out', kf], { stdio: 'pipe' });
        execFileSync('openssl', ['req', '-x509', '-key', kf, '-subj', `/CN=pss ${name.replace(/\//g, ' ')}`, '-days', '30', '-out', cf, '-sigopt', 'rsa_padding_mode:pss', ...reqOpts], {
          stdio: 'pipe',
        });
      } catch {
        t.log(`openssl cannot make ${name}`);
        continue;
      }
      made++;
      const kp = readFileSync(kf);
      const cp = readFileSync(cf);
      const sides = [native, js].map((b) => {
        const key = new b.NativePrivateKey(kp);
        const cert = new b.NativeCertificate(cp);
        const store = new b.NativeCertStore();
        store.add(cert);
        return { b, key, cert, store };
      });
      for (const digest of DIGESTS) {
        for (const format of FORMATS) {
          const [ns, jsS] = sides.map((s) => new s.b.NativeSerializer(s.key, s.cert, s.store, digest, format, -1));
          const bodies = [u('{"a": 1}'), Buffer.concat([u('x'), SEP]), u('[2]')];
          const what = `${name} ${digest} ${format}`;
          const a = tryIt(() => ns!.seal('application/json', 'utf-8', bodies[0]!));
          const b = tryIt(() => jsS!.seal('application/json', 'utf-8', bodies[0]!));
          t.is(b.ok, a.ok, `${what} seal`);
          if (!a.ok && !b.ok) t.is(b.message, a.message, `${what} seal`);
          const [am, bm] = await Promise.all([ns!.sealMany('application/json', 'utf-8', bodies), jsS!.sealMany('application/json', 'utf-8', bodies)]);
          t.deepEqual([bm.errors, bm.messages], [am.errors, am.messages], `${what} sealMany`);
          const settle = (s: NativeSerializer) => s.sealAsync('application/json', 'utf-8', bodies[2]!).then(() => 'ok', (e: Error) => e.message);
          t.is(await settle(jsS!), await settle(ns!), `${what} sealAsync`);
          for (let k = 0; k < bodies.length; k++) {
            if (bm.payloads[k] === '') continue;
            const p = Buffer.from(bm.payloads[k]!, 'latin1');
            t.deepEqual(openOne(jsS!, p), openOne(ns!, p), `${what} open ${k}`);
            t.like(openOne(ns!, p), { ok: true }, `${what} open ${k} natively`);
          }
        }
      }
    }
    t.is(made, kinds.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
