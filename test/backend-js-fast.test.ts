/**
 * The node:crypto fallback's fast paths against the ways they replace (both
 * of which test/backend-js-serializer.test.ts checks end to end against the
 * native binding):
 *
 * - base64 (`decodeStrictFast`: Node's native decoder, kept only when
 *   encoding the result gives the text back) against the fallback's own
 *   strict decoder (`decodeStrict`, the port of the core's
 *   `base64_simd::STANDARD`): on canonical text it must take the fast path
 *   and give the same bytes, and on every other text it must step aside
 *   (-1), so that the strict-then-loose order of the envelope is kept.
 *   Seeded random and hostile text, short and across the 1 MiB steps.
 * - signatures (`JsCertificate.verifySignature` on an unrestricted
 *   id-RSASSA-PSS key, no per-call options) against `crypto.verify` with the
 *   RSA key, PSS padding and the salt "auto": the same answer for every
 *   digest, salt length, PKCS#1 v1.5 signatures, changed messages and
 *   signatures.
 */
import test from 'ava';
import { constants, createPrivateKey, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { JsCertificate, pssKeysVerifyAnySalt } from '../src/backend/js/cert.js';
import { DIGEST_SIZE, type DigestName } from '../src/backend/js/digest.js';
import { decodeCapacity, decodeStrict, decodeStrictFast } from '../src/backend/js/envelope.js';
import * as fx from './helpers/fixtures.js';
import { rng } from './helpers/rng.js';

const R = rng(20261201);
const STEP = 1 << 20;

interface Outcome {
  n: number;
  bytes: Buffer | null;
}

/** One decoder on `text[start..end]` (inside a larger buffer, as in a batch), into room at an offset. */
function run(
  decode: (src: Uint8Array, start: number, end: number, out: Buffer, at: number) => number,
  src: Uint8Array,
  start: number,
  end: number,
): Outcome {
  const at = 3;
  const out = Buffer.alloc(at + decodeCapacity(end - start) + 3, 0xaa);
  const n = decode(src, start, end, out, at);
  return { n, bytes: n < 0 ? null : Buffer.from(out.subarray(at, at + n)) };
}

/** Compares the two on one text; returns what differed, or null. */
function compare(text: Uint8Array, what: string): string | null {
  // The text alone, and framed by other bytes (a payload in a packed batch).
  const framed = new Uint8Array(text.length + 7);
  framed.set([0x41, 0x3d, 0x00], 0);
  framed.set(text, 3);
  framed.set([0x3d, 0x3d, 0xff, 0x0a], 3 + text.length);
  for (const [src, start, end] of [
    [text, 0, text.length],
    [framed, 3, 3 + text.length],
    [Buffer.from(framed.buffer, framed.byteOffset, framed.byteLength), 3, 3 + text.length],
  ] as const) {
    const strict = run(decodeStrict, src, start, end);
    const fast = run(decodeStrictFast, src, start, end);
    if (fast.n >= 0 && (strict.n !== fast.n || !strict.bytes!.equals(fast.bytes!))) {
      return `${what}: the fast path gave ${fast.n} bytes where decodeStrict gives ${strict.n}`;
    }
    // Canonical text: the fast path must be taken (the speed of the fallback rests on it).
    if (strict.n >= 0 && fast.n < 0) return `${what}: canonical text (${strict.n} bytes) not taken by the fast path`;
  }
  return null;
}

const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

test('decodeStrictFast: the bytes of decodeStrict on canonical text, -1 on every other text (random and hostile, short)', (t) => {
  const texts: Array<[Buffer, string]> = [];
  for (const s of ['', 'QQ==', 'QUI=', 'QUJD', 'QR==', 'QUJ=', 'QQ', 'QQ=', 'QQ===', '====', '=', 'Q===', 'QQ==QQ==', 'QUJD=', ' QUJD', 'QUJD ', 'QU JD', 'QUJD\n', 'QU-_', 'QU\u00e9D', '\u00ff\u00ff\u00ff\u00ff']) {
    texts.push([ascii(s), JSON.stringify(s)]);
  }
  for (let k = 0; k < 400; k++) {
    const bytes = R.bytes(R.int(300));
    const canonical = ascii(bytes.toString('base64'));
    texts.push([canonical, `canonical of ${bytes.length} bytes`]);
    if (canonical.length === 0) continue;
    // One byte changed to any value (alphabet, '=', white space, '-', '_', NUL, high bytes).
    for (let j = 0; j < 4; j++) {
      const q = Buffer.from(canonical);
      const at = R.int(q.length);
      q[at] = R.int(256);
      texts.push([q, `canonical of ${bytes.length} bytes, byte ${at} set to ${q[at]}`]);
    }
    // Stray bits in the last data character, padding changed, text cut, url-safe, MIME lines.
    const s = canonical.toString('latin1');
    const m = /([A-Za-z0-9+/])(=+)$/.exec(s);
    if (m) {
      const v = ALPHABET.indexOf(m[1]!);
      texts.push([ascii(s.slice(0, m.index) + ALPHABET[v ^ 1]! + m[2]), 'stray bits']);
      texts.push([ascii(s.replace(/=+$/, '')), 'padding stripped']);
    }
    texts.push([ascii(s + '='), "'=' appended"]);
    texts.push([ascii(s.slice(0, R.int(s.length))), 'cut']);
    texts.push([ascii(s.replace(/\+/g, '-').replace(/\//g, '_')), 'url-safe alphabet']);
    texts.push([ascii(s.replace(/(.{76})/g, '$1\n')), 'MIME line breaks']);
    texts.push([ascii(s + s), 'two canonical texts end to end']);
  }
  const problems = texts.map(([text, what]) => compare(text, what)).filter((p) => p !== null);
  t.deepEqual(problems, []);
  t.log(`${texts.length} texts`);
});

test('decodeStrictFast: long text in 1 MiB steps, padding or a bad byte at the step boundaries', (t) => {
  const bytes = R.bytes(((2 * STEP) / 4) * 3 + 1000); // 2 MiB of text and some
  const canonical = ascii(bytes.toString('base64'));
  t.true(canonical.length > 2 * STEP);
  const problems: Array<string | null> = [compare(canonical, 'canonical, two steps and a short one')];
  const exact = ascii(R.bytes((STEP / 4) * 3).toString('base64'));
  t.is(exact.length, STEP);
  problems.push(compare(exact, 'canonical, exactly one step'));
  problems.push(compare(ascii(exact.toString('latin1') + exact.toString('latin1')), 'canonical, exactly two steps'));
  for (const at of [STEP - 2, STEP - 1, STEP, STEP + 1, 2 * STEP - 1, 2 * STEP, canonical.length - 1]) {
    for (const c of [0x3d, 0x20, 0x0a, 0x2d, 0xe9]) {
      const q = Buffer.from(canonical);
      q[at] = c;
      problems.push(compare(q, `byte ${at} set to ${c}`));
    }
  }
  // A step that ends in padding: a short first text, then more, across the boundary.
  const padded = ascii(Buffer.from('ab').toString('base64'));
  const q = Buffer.from(canonical);
  padded.copy(q, STEP - 4);
  problems.push(compare(q, "'=' just before the first step's end"));
  t.deepEqual(
    problems.filter((p) => p !== null),
    [],
  );
});

test('verifySignature: on the unrestricted RSA-PSS key, the answers of crypto.verify with the RSA key, PSS and the salt "auto"', (t) => {
  t.true(pssKeysVerifyAnySalt(), 'this node:crypto recovers the salt on an id-RSASSA-PSS key: the fast route is the one in use');
  const problems: string[] = [];
  let checked = 0;
  for (const name of ['rsa2048', 'rsa3072']) {
    const item = fx.cert(name);
    const cert = new JsCertificate(fx.pemOf(item));
    const key = createPrivateKey(fx.pemOf(fx.key(`${item.key_id}.pkcs8`)));
    const emLen = cert.signatureLen;
    for (const digest of ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as DigestName[]) {
      const hLen = DIGEST_SIZE[digest];
      const body = R.bytes(R.int(600));
      const sigs: Array<[string, Buffer]> = [];
      for (const salt of [0, 1, 20, hLen, emLen - hLen - 2]) {
        sigs.push([`salt ${salt}`, nodeSign(digest, body, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: salt })]);
      }
      sigs.push(['PKCS#1 v1.5', nodeSign(digest, body, { key, padding: constants.RSA_PKCS1_PADDING })]);
      const changed = Buffer.from(sigs[4]![1]);
      const at = R.int(changed.length);
      changed[at] = changed[at]! ^ (1 << R.int(8));
      sigs.push(['a bit changed', changed]);
      sigs.push(['all zero', Buffer.alloc(emLen)]);
      sigs.push(['all 0xff (over the modulus)', Buffer.alloc(emLen, 0xff)]);
      for (const [what, sig] of sigs) {
        for (const [m, data] of [
          ['the message', body],
          ['another message', Buffer.concat([body, Buffer.from('.')])],
        ] as const) {
          const want = nodeVerify(digest, data, { key: cert.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig);
          const got = cert.verifySignature(data, sig, digest);
          checked++;
          if (got !== want) problems.push(`${name} ${digest} ${what}, ${m}: ${got}, crypto.verify says ${want}`);
          if (what.startsWith('salt') && m === 'the message' && !got) problems.push(`${name} ${digest} ${what}: does not verify`);
        }
      }
    }
  }
  t.deepEqual(problems, []);
  t.log(`${checked} checks`);
});
