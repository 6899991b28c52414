/**
 * The node:crypto fallback's keys, certificates and store against the native
 * binding, in the same process: every fixture and a seeded corpus of
 * malformed inputs give the same outcome (value, or code and message), and
 * signatures cross between the two backends.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as cryptoMod from 'node:crypto';
import { constants, createPrivateKey, sign as nodeSign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nativeBinding from '../native/binding.cjs';
import { JsCertificate } from '../src/backend/js/cert.js';
import { digestFromName } from '../src/backend/js/digest.js';
import { displayBytes } from '../src/backend/js/errors.js';
import { JsPrivateKey } from '../src/backend/js/key.js';
import { JsCertStore } from '../src/backend/js/store.js';
import { MAX_SERIAL_BYTES } from '../src/backend/limits.js';
import * as fx from './helpers/fixtures.js';

const N = nativeBinding;
const DIGESTS = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as const;

/** What a call gave: its value, or the error's message and whether napi called it InvalidArg. */
function outcome(f: () => unknown): string {
  try {
    return `ok ${JSON.stringify(f())}`;
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    if (!(err instanceof Error)) return `threw non-Error ${String(err)}`;
    if (e.code === 'InvalidArg') return `invalid-arg ${String(e.message)}`;
    // Native refusals carry napi's GenericFailure status; the message is the contract.
    if (e.code !== undefined && e.code !== 'GenericFailure') return `other-code ${String(e.code)} ${String(e.message)}`;
    return `error ${String(e.message)}`;
  }
}

type AnyCert = { id: string; issuer: string; serial: string; notAfterMs: number; bits: number; hasExpired(n: number): boolean };
const certView = (c: AnyCert) => [c.id, c.issuer, c.serial, c.notAfterMs, c.bits, c.hasExpired(Date.now()), c.hasExpired(0)];

const nativeCert = (pem: Uint8Array) => certView(new N.NativeCertificate(pem));
const jsCert = (pem: Uint8Array) => certView(new JsCertificate(pem));
const nativeKey = (pem: Uint8Array, pw?: Uint8Array | null) => new N.NativePrivateKey(pem, pw).bits;
const jsKey = (pem: Uint8Array, pw?: Uint8Array | null) => new JsPrivateKey(pem, pw).bits;

function sameCert(t: { is(a: unknown, b: unknown, m?: string): void }, pem: Uint8Array, label: string): void {
  t.is(outcome(() => jsCert(pem)), outcome(() => nativeCert(pem)), label);
}
function sameKey(t: { is(a: unknown, b: unknown, m?: string): void }, pem: Uint8Array, pw: Uint8Array | null, label: string): void {
  t.is(outcome(() => jsKey(pem, pw)), outcome(() => nativeKey(pem, pw)), label);
}

/** A small seeded PRNG (mulberry32), so every run sees the same corpus. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pwOf = (k: fx.KeyItem) => (k.password === null ? null : Buffer.from(k.password, 'utf8'));

function derOfPem(pem: Buffer): { label: string; der: Buffer } {
  const text = pem.toString('latin1');
  const m = /-----BEGIN ([^-]+)-----\r?\n((?:[A-Za-z0-9+/=]+\r?\n)+)-----END /.exec(text);
  if (!m) throw new Error('no PEM');
  return { label: m[1]!, der: Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64') };
}

function toPem(label: string, der: Uint8Array, headers = ''): Buffer {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return Buffer.from(`-----BEGIN ${label}-----\n${headers}${b64}\n-----END ${label}-----\n`);
}

// ---------------------------------------------------------------------------

test('every fixture certificate: same id, issuer, serial, notAfterMs, bits, or the same refusal', (t) => {
  const certs = fx.certs();
  t.true(certs.length >= 33);
  for (const c of certs) sameCert(t, fx.pemOf(c), c.name);
  // And through fromDer.
  for (const c of certs) {
    const pem = fx.pemOf(c);
    let der: Buffer;
    try {
      der = derOfPem(pem).der;
    } catch {
      continue;
    }
    t.is(outcome(() => certView(JsCertificate.fromDer(der))), outcome(() => nativeCert(pem)), `${c.name} fromDer`);
  }
});

test('every fixture key: same bits or the same refusal, with right, wrong, missing and unexpected passwords', (t) => {
  const keys = fx.keys();
  t.true(keys.length >= 30);
  for (const k of keys) {
    const pem = fx.pemOf(k);
    sameKey(t, pem, pwOf(k), k.name);
    sameKey(t, pem, null, `${k.name} no password`);
    sameKey(t, pem, Buffer.from('wrong password'), `${k.name} wrong password`);
    sameKey(t, pem, Buffer.alloc(0), `${k.name} empty password`);
    sameKey(t, pem, Buffer.alloc(1500, 0x61), `${k.name} 1500-byte password`);
    if (k.password !== null) {
      const wrong = outcome(() => jsKey(pem, Buffer.from('wrong password')));
      t.false(wrong.includes(k.password), 'no password in the message');
    }
  }
});

test('digest names: the same parse and the same InvalidArg message as the binding', (t) => {
  const key = fx.key('rsa2048.pkcs8');
  const nk = new N.NativePrivateKey(fx.pemOf(key));
  for (const name of ['sha256', 'SHA256', 'Sha1', 'sha3-256', 'md5', '', 'sha256 ', 'ſha256', 'sha\u0000', 'x'.repeat(300), 'a"b\\c\'d', '\u{1f600}']) {
    t.is(
      outcome(() => digestFromName(name)),
      outcome(() => {
        nk.sign(Buffer.from('x'), name);
        return DIGESTS.find((d) => d === name.replace(/[A-Z]/g, (c) => c.toLowerCase()));
      }),
      JSON.stringify(name),
    );
  }
});

test('displayBytes matches the core (through an unknown-certificate message)', (t) => {
  const store = new JsCertStore();
  for (const id of [Buffer.from('plain id 1'), Buffer.from([0, 1, 0x7f, 0x80, 0xff, 0x5c, 0x27, 0x22]), Buffer.alloc(250, 0x41), Buffer.from('é')]) {
    t.is(displayBytes(id).length <= 203 + 3 * 200, true);
    t.throws(() => store.get(id), { message: `ERR_UNKNOWN_CERTIFICATE: Unknown certificate: '${displayBytes(id)}'` });
  }
  t.is(displayBytes(Buffer.from([0x5c, 0x27, 0x0a, 0x41])), "\\\\\\'\\x0aA");
  t.is(displayBytes(Buffer.alloc(201, 0x41)), 'A'.repeat(200) + '...');
});

/** RSA fixture keys with the certificate of the same key. */
function pairs(): { key: fx.KeyItem; cert: fx.CertItem }[] {
  const out: { key: fx.KeyItem; cert: fx.CertItem }[] = [];
  const seen = new Set<string>();
  for (const key of fx.keys()) {
    if (!key.celery.ok || seen.has(key.key_id)) continue;
    const cert = fx.certs().find((c) => c.key_id === key.key_id && c.celery_error === null && !c.expired);
    if (!cert) continue;
    seen.add(key.key_id);
    out.push({ key, cert });
  }
  return out;
}

test('cross-signatures: JS signs, native verifies, and back, every digest; tampered ones fail on both', (t) => {
  const ps = pairs();
  t.true(ps.filter((p) => [2048, 3072, 4096].includes(p.key.bits!)).length >= 3, 'RSA-2048/3072/4096 pairs');
  const data = Buffer.from('{"task": "celery.ping", "args": [1, 2, 3]}');
  for (const { key, cert } of ps) {
    const kp = fx.pemOf(key);
    const cp = fx.pemOf(cert);
    const jk = new JsPrivateKey(kp, pwOf(key));
    const nk = new N.NativePrivateKey(kp, pwOf(key));
    const jc = new JsCertificate(cp);
    const nc = new N.NativeCertificate(cp);
    t.is(jk.size, jc.signatureLen);
    for (const d of DIGESTS) {
      const label = `${key.name} ${d}`;
      const js = outcome(() => jk.sign(data, d).toString('hex'));
      const nat = outcome(() => nk.sign(data, d).toString('hex'));
      t.is(js.startsWith('ok'), nat.startsWith('ok'), `${label}: ${js.slice(0, 80)} / ${nat.slice(0, 80)}`);
      if (!js.startsWith('ok')) {
        t.is(js, nat, label);
        continue;
      }
      const sj = jk.sign(data, d);
      const sn = nk.sign(data, d);
      t.is(sj.length, jk.size, label);
      t.is(outcome(() => nc.verify(data, sj, d)), 'ok undefined', `${label} js->native`);
      t.is(outcome(() => jc.verify(data, sn, d)), 'ok undefined', `${label} native->js`);
      t.is(outcome(() => jc.verify(data, sj, d)), 'ok undefined', `${label} js->js`);
      for (const bad of [
        Buffer.concat([sj.subarray(0, 10), Buffer.from([sj[10]! ^ 1]), sj.subarray(11)]),
        sj.subarray(1),
        Buffer.concat([sj, Buffer.from([0])]),
        Buffer.alloc(sj.length),
      ]) {
        t.is(outcome(() => jc.verify(data, bad, d)), outcome(() => nc.verify(data, bad, d)), `${label} tampered sig`);
        t.regex(outcome(() => jc.verify(data, bad, d)), /ERR_BAD_SIGNATURE/);
      }
      const other = Buffer.from(data);
      other[0] = other[0]! ^ 0x20;
      t.regex(outcome(() => jc.verify(other, sn, d)), /ERR_BAD_SIGNATURE/, `${label} tampered data`);
      t.is(outcome(() => jc.verify(other, sn, d)), outcome(() => nc.verify(other, sn, d)));
      const wrongDigest = d === 'sha256' ? 'sha384' : 'sha256';
      t.is(outcome(() => jc.verify(data, sn, wrongDigest)), outcome(() => nc.verify(data, sn, wrongDigest)));
    }
  }
});

test('any salt length verifies on both, PKCS#1 v1.5 fails on both, PSS max salt is what both write', (t) => {
  const { key, cert } = pairs().find((p) => p.key.bits === 2048 && p.key.password === null)!;
  const ko = createPrivateKey(fx.pemOf(key));
  const jc = new JsCertificate(fx.pemOf(cert));
  const nc = new N.NativeCertificate(fx.pemOf(cert));
  const data = Buffer.from('body');
  for (const d of DIGESTS) {
    for (const saltLength of [0, 1, 20, 32, 64, constants.RSA_PSS_SALTLEN_DIGEST, constants.RSA_PSS_SALTLEN_MAX_SIGN]) {
      let sig: Buffer;
      try {
        sig = nodeSign(d, data, { key: ko, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
      } catch {
        continue;
      }
      t.is(outcome(() => jc.verify(data, sig, d)), 'ok undefined', `${d} salt ${saltLength}`);
      t.is(outcome(() => nc.verify(data, sig, d)), 'ok undefined', `${d} salt ${saltLength} native`);
    }
    const v15 = nodeSign(d, data, { key: ko, padding: constants.RSA_PKCS1_PADDING });
    t.regex(outcome(() => jc.verify(data, v15, d)), /ERR_BAD_SIGNATURE/);
    t.is(outcome(() => jc.verify(data, v15, d)), outcome(() => nc.verify(data, v15, d)));
    // The JS signature carries the maximum salt: it verifies with that exact salt length.
    const jk = new JsPrivateKey(fx.pemOf(key));
    const hLen = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 }[d];
    const maxSalt = 256 - hLen - 2;
    t.true(cryptoMod.verify(d, data, { key: ko, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: maxSalt }, jk.sign(data, d)));
  }
});


test('the RSA-PSS (id-RSASSA-PSS) key: same bits, same sign outcome per digest, verifies on both', (t) => {
  const k = fx.key('rsa-pss2048.pkcs8');
  const pem = fx.pemOf(k);
  const jk = new JsPrivateKey(pem);
  const nk = new N.NativePrivateKey(pem);
  t.is(jk.bits, nk.bits);
  const cert = fx.certs().find((c) => c.key_id === k.key_id && c.celery_error === null);
  for (const d of DIGESTS) {
    const js = outcome(() => jk.sign(Buffer.from('x'), d).length);
    const nat = outcome(() => nk.sign(Buffer.from('x'), d).length);
    t.is(js, nat, d);
    if (cert && js.startsWith('ok')) {
      const jc = new JsCertificate(fx.pemOf(cert));
      const nc = new N.NativeCertificate(fx.pemOf(cert));
      const sn = nk.sign(Buffer.from('x'), d);
      const sj = jk.sign(Buffer.from('x'), d);
      t.is(outcome(() => jc.verify(Buffer.from('x'), sn, d)), outcome(() => nc.verify(Buffer.from('x'), sn, d)));
      t.is(outcome(() => nc.verify(Buffer.from('x'), sj, d)), outcome(() => jc.verify(Buffer.from('x'), sj, d)));
    }
  }
});

test('expiry: verify refuses an expired certificate before checking the signature, as native', (t) => {
  const pem = fx.pemOf(fx.cert('expired'));
  const jc = new JsCertificate(pem);
  const nc = new N.NativeCertificate(pem);
  t.is(outcome(() => jc.verify(Buffer.from('x'), Buffer.alloc(256), 'sha256')), outcome(() => nc.verify(Buffer.from('x'), Buffer.alloc(256), 'sha256')));
  t.regex(outcome(() => jc.verify(Buffer.from('x'), Buffer.alloc(256), 'sha256')), /ERR_CERTIFICATE_EXPIRED/);
  t.is(outcome(() => jc.verify(Buffer.from('x'), Buffer.alloc(256), 'nope')), outcome(() => nc.verify(Buffer.from('x'), Buffer.alloc(256), 'nope')));
  for (const now of [0, -1, -0.5, 0.5, NaN, Infinity, -Infinity, jc.notAfterMs, jc.notAfterMs - 1, jc.notAfterMs - 0.5, jc.notAfterMs + 0.5, 1e300]) {
    t.is(jc.hasExpired(now), nc.hasExpired(now), String(now));
  }
});

test('the store: duplicates, lookups, version, insertion order, as the core', (t) => {
  const js = new JsCertStore();
  const nat = new N.NativeCertStore();
  const v0 = js.version;
  for (const c of fx.certs()) {
    const pem = fx.pemOf(c);
    let jc: JsCertificate, nc: InstanceType<typeof N.NativeCertificate>;
    try {
      jc = new JsCertificate(pem);
      nc = new N.NativeCertificate(pem);
    } catch {
      continue;
    }
    t.is(outcome(() => js.add(jc)), outcome(() => nat.add(nc)), c.name);
    t.is(js.size, nat.size);
  }
  t.true(js.version > v0);
  t.is(js.certs().length, js.size);
  const first = js.certs()[0]!;
  t.is(js.lookup(Buffer.from(first.id)), first);
  t.is(js.get(Buffer.from(first.id)), first);
  t.is(js.lookup(Buffer.from([0xff, 0xfe])), undefined);
  t.throws(() => js.get(Buffer.from('no such id \u00e9')), { message: /^ERR_UNKNOWN_CERTIFICATE: Unknown certificate: 'no such id \\xc3\\xa9'$/ });
  const dup = js.certs()[0]!;
  t.throws(() => js.add(dup), { message: `ERR_DUPLICATE_CERTIFICATE: Duplicate certificate: '${dup.id}'` });
  t.is(outcome(() => js.add({} as JsCertificate)), outcome(() => nat.add({} as InstanceType<typeof N.NativeCertificate>)));
});

// ---------------------------------------------------------------------------
// Malformed inputs

function mutations(seed: number, input: Buffer, count: number): Buffer[] {
  const r = rng(seed);
  const out: Buffer[] = [];
  const int = (n: number) => Math.floor(r() * n);
  for (let i = 0; i < count; i++) {
    const b = Buffer.from(input);
    switch (i % 6) {
      case 0: // truncate
        out.push(b.subarray(0, int(b.length)));
        break;
      case 1: {
        // flip a bit
        const p = int(b.length);
        b[p] = b[p]! ^ (1 << int(8));
        out.push(b);
        break;
      }
      case 2: {
        // flip several bits
        for (let k = 0; k < 1 + int(4); k++) {
          const p = int(b.length);
          b[p] = b[p]! ^ (1 << int(8));
        }
        out.push(b);
        break;
      }
      case 3: {
        // overwrite a byte with a random one
        b[int(b.length)] = int(256);
        out.push(b);
        break;
      }
      case 4: {
        // delete or duplicate a range
        const p = int(b.length);
        const n = 1 + int(8);
        out.push(r() < 0.5 ? Buffer.concat([b.subarray(0, p), b.subarray(p + n)]) : Buffer.concat([b.subarray(0, p + n), b.subarray(p)]));
        break;
      }
      default: {
        // insert a random byte
        const p = int(b.length);
        out.push(Buffer.concat([b.subarray(0, p), Buffer.from([int(256)]), b.subarray(p)]));
      }
    }
  }
  return out;
}

test('malformed certificates (DER mutations re-wrapped, PEM text mutations, garbage): the same outcome', (t) => {
  t.timeout(120_000);
  let n = 0;
  const sources = fx.certs().filter((c) => ['rsa2048', 'rsa1024', 'name-mixed-types', 'name-multivalued-rdn', 'serial-negative', 'ec-p256', 'dsa2048', 'ed25519', 'ca'].includes(c.name));
  let seed = 1;
  for (const c of sources) {
    const pem = fx.pemOf(c);
    const { der } = derOfPem(pem);
    for (const m of mutations(seed++, der, 300)) {
      sameCert(t, toPem('CERTIFICATE', m), `${c.name} der mutation`);
      n++;
    }
    for (const m of mutations(seed++, pem, 120)) {
      sameCert(t, m, `${c.name} pem mutation`);
      n++;
    }
    for (const m of mutations(seed++, der, 40)) {
      t.is(outcome(() => certView(JsCertificate.fromDer(m))), outcome(() => nativeCert(toPem('CERTIFICATE', m))), `${c.name} fromDer`);
      n++;
    }
  }
  const r = rng(99);
  for (let i = 0; i < 200; i++) {
    const len = Math.floor(r() * 600);
    const bytes = Buffer.alloc(len);
    for (let j = 0; j < len; j++) bytes[j] = Math.floor(r() * 256);
    sameCert(t, bytes, 'random bytes');
    sameCert(t, toPem('CERTIFICATE', bytes), 'random DER');
    n += 2;
  }
  const cpem = fx.pemOf(fx.cert('rsa2048'));
  const { der } = derOfPem(cpem);
  for (const label of ['X509 CERTIFICATE', 'TRUSTED CERTIFICATE', 'CERTIFICATE REQUEST', 'PUBLIC KEY', 'certificate']) {
    sameCert(t, toPem(label, der), label);
    n++;
  }
  for (const text of ['', 'garbage', '-----BEGIN CERTIFICATE-----', '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----', '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----', 'x-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----']) {
    sameCert(t, Buffer.from(text), JSON.stringify(text));
    n++;
  }
  // Two blocks: the first certificate is read; a key block first is skipped.
  sameCert(t, Buffer.concat([fx.pemOf(fx.key('rsa2048.pkcs8')), cpem]), 'key then cert');
  sameCert(t, Buffer.concat([cpem, fx.pemOf(fx.cert('rsa1024'))]), 'two certs');
  t.log(`${n} malformed certificates`);
  t.true(n > 2500);
});

test('malformed keys (PEM text and DER mutations, wrong labels, garbage): the same outcome', (t) => {
  t.timeout(300_000);
  let n = 0;
  let seed = 1000;
  const plain = ['rsa1024.pkcs1', 'rsa1024.pkcs8', 'ec-p256.sec1', 'ed25519.pkcs8', 'rsa-pss2048.pkcs8'];
  for (const name of plain) {
    const k = fx.key(name);
    const pem = fx.pemOf(k);
    const { label, der } = derOfPem(pem);
    for (const m of mutations(seed++, der, 250)) {
      sameKey(t, toPem(label, m), null, `${name} der mutation`);
      n++;
    }
    for (const m of mutations(seed++, pem, 100)) {
      sameKey(t, m, null, `${name} pem mutation`);
      n++;
    }
  }
  // Encrypted keys: fewer (every attempt runs the KDF).
  for (const name of ['rsa1024.pkcs8-enc', 'rsa1024.legacy-aes256', 'rsa1024.legacy-des3', 'rsa2048.pkcs8-pbes1', 'rsa2048.pkcs8-enc-des3']) {
    const k = fx.key(name);
    const pem = fx.pemOf(k);
    for (const m of mutations(seed++, pem, 60)) {
      sameKey(t, m, pwOf(k), `${name} pem mutation`);
      n++;
    }
    if (k.format === 'pkcs8-encrypted') {
      const { label, der } = derOfPem(pem);
      for (const m of mutations(seed++, der.subarray(0, 120), 60)) {
        sameKey(t, toPem(label, Buffer.concat([m, der.subarray(120)])), pwOf(k), `${name} header mutation`);
        n++;
      }
    }
  }
  const { der } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs1')));
  const { der: der8 } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs8')));
  for (const label of ['RSA PRIVATE KEY', 'PRIVATE KEY', 'EC PRIVATE KEY', 'DSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'OPENSSH PRIVATE KEY', 'ANY PRIVATE KEY', 'PUBLIC KEY', 'CERTIFICATE', 'rsa private key']) {
    sameKey(t, toPem(label, der), null, `pkcs1 as ${label}`);
    sameKey(t, toPem(label, der8), null, `pkcs8 as ${label}`);
    sameKey(t, toPem(label, der8), Buffer.from('pw'), `pkcs8 as ${label} with a password`);
    n += 3;
  }
  const r = rng(7);
  for (let i = 0; i < 200; i++) {
    const len = Math.floor(r() * 400);
    const bytes = Buffer.alloc(len);
    for (let j = 0; j < len; j++) bytes[j] = Math.floor(r() * 256);
    sameKey(t, bytes, null, 'random bytes');
    sameKey(t, toPem('PRIVATE KEY', bytes), null, 'random PKCS#8');
    sameKey(t, toPem('RSA PRIVATE KEY', bytes), null, 'random PKCS#1');
    n += 3;
  }
  for (const text of ['', 'garbage', '-----BEGIN PRIVATE KEY-----', '-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----', '-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----']) {
    sameKey(t, Buffer.from(text), null, JSON.stringify(text));
    sameKey(t, Buffer.from(text), Buffer.from('pw'), `${JSON.stringify(text)} with a password`);
    n += 2;
  }
  // Lines of other lengths, CRLF, headers, a comment before.
  const pem = fx.pemOf(fx.key('rsa1024.pkcs8')).toString('latin1');
  const b64 = pem.split('\n').filter((l) => !l.startsWith('-----') && l).join('');
  for (const width of [76, 63, 65, 1, 1000]) {
    const body = b64.replace(new RegExp(`.{${width}}`, 'g'), '$&\n').replace(/\n$/, '');
    sameKey(t, Buffer.from(`-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`), null, `width ${width}`);
    sameKey(t, Buffer.from(`-----BEGIN PRIVATE KEY-----\nComment: x\n\n${body}\n-----END PRIVATE KEY-----\n`), null, `width ${width} with a header`);
    n += 2;
  }
  sameKey(t, Buffer.from(pem.replace(/\n/g, '\r\n')), null, 'crlf');
  sameKey(t, Buffer.from('junk\n' + pem), null, 'preamble');
  sameKey(t, Buffer.from(pem.replace('-----BEGIN PRIVATE KEY-----', '-----BEGIN PRIVATE KEY----- ')), null, 'space after BEGIN');
  sameKey(t, Buffer.from(pem.replace('-----BEGIN PRIVATE KEY-----', '-----BEGIN PRIVATE KEY-----x')), null, 'junk after BEGIN');
  sameKey(t, Buffer.from('  ' + pem), null, 'indented BEGIN');
  t.log(`${n} malformed keys`);
  t.true(n > 2500);
});

// ---------------------------------------------------------------------------
// Formats the fixtures do not cover, made here with the openssl CLI (PBES1
// with RC2/RC4/3DES, PBES2 with each cipher and PRF, legacy DES/AES-192).

function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

test('encrypted key formats beyond the fixtures: PBES1 (PKCS#12 KDF), PBES2 ciphers and PRFs, legacy ciphers', (t) => {
  t.timeout(300_000);
  if (!opensslAvailable()) {
    t.pass('no openssl CLI');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cs-keys-'));
  try {
    const clear = join(dir, 'k.pem');
    execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024', '-out', clear], { stdio: 'pipe' });
    const pass = 'pässwörd';
    const variants: [string, string[]][] = [
      ['pbes1 sha1-3des', ['-v1', 'PBE-SHA1-3DES']],
      ['pbes1 sha1-2des', ['-v1', 'PBE-SHA1-2DES']],
      ['pbes1 sha1-rc2-40', ['-v1', 'PBE-SHA1-RC2-40']],
      ['pbes1 sha1-rc2-128', ['-v1', 'PBE-SHA1-RC2-128']],
      ['pbes1 sha1-rc4-128', ['-v1', 'PBE-SHA1-RC4-128']],
      ['pbes1 sha1-rc4-40', ['-v1', 'PBE-SHA1-RC4-40']],
      ['pbes1 md5-des', ['-v1', 'PBE-MD5-DES']],
      ['pbes1 sha1-des', ['-v1', 'PBE-SHA1-DES']],
      ['pbes2 aes-128 sha1', ['-v2', 'aes-128-cbc', '-v2prf', 'hmacWithSHA1']],
      ['pbes2 aes-192 sha256', ['-v2', 'aes-192-cbc', '-v2prf', 'hmacWithSHA256']],
      ['pbes2 aes-256 sha512', ['-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA512']],
      ['pbes2 aes-256 sha384', ['-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA384']],
      ['pbes2 des3 sha1', ['-v2', 'des-ede3-cbc', '-v2prf', 'hmacWithSHA1']],
      ['pbes2 rc2 sha1', ['-v2', 'rc2-cbc', '-v2prf', 'hmacWithSHA1']],
      ['pbes2 des sha256', ['-v2', 'des-cbc']],
      ['pbes2 aes-256-ctr', ['-v2', 'aes-256-ctr']],
      ['pbes2 scrypt', ['-v2', 'aes-256-cbc', '-scrypt']],
      ['pbes2 iter 1', ['-v2', 'aes-128-cbc', '-iter', '1']],
    ];
    const providers = ['-provider', 'legacy', '-provider', 'default'];
    let made = 0;
    for (const [name, args] of variants) {
      const out = join(dir, `${made}.pem`);
      try {
        execFileSync('openssl', ['pkcs8', '-topk8', '-in', clear, '-out', out, '-passout', `pass:${pass}`, ...args, ...providers], { stdio: 'pipe' });
      } catch {
        t.log(`openssl cannot make ${name}`);
        continue;
      }
      made++;
      const pem = readFileSync(out);
      sameKey(t, pem, Buffer.from(pass), name);
      sameKey(t, pem, Buffer.from('wrong'), `${name} wrong password`);
      t.log(`${name}: ${outcome(() => jsKey(pem, Buffer.from(pass)))}`);
    }
    for (const cipher of ['-des', '-des3', '-aes128', '-aes192', '-aes256', '-camellia128', '-seed']) {
      const out = join(dir, `legacy${cipher}.pem`);
      try {
        execFileSync('openssl', ['rsa', '-in', clear, '-out', out, '-traditional', cipher, '-passout', `pass:${pass}`, ...providers], { stdio: 'pipe' });
      } catch {
        t.log(`openssl cannot make legacy ${cipher}`);
        continue;
      }
      made++;
      const pem = readFileSync(out);
      sameKey(t, pem, Buffer.from(pass), `legacy ${cipher}`);
      sameKey(t, pem, Buffer.from('wrong'), `legacy ${cipher} wrong password`);
      t.log(`legacy ${cipher}: ${outcome(() => jsKey(pem, Buffer.from(pass)))}`);
    }
    t.true(made >= 10);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad argument types never crash with a raw TypeError', (t) => {
  for (const bad of [undefined, null, 'string', 42, {}, [], new ArrayBuffer(4)]) {
    const jsk = outcome(() => new JsPrivateKey(bad as unknown as Uint8Array));
    const jsc = outcome(() => new JsCertificate(bad as unknown as Uint8Array));
    t.notRegex(jsk, /TypeError|Cannot read/);
    t.notRegex(jsc, /TypeError|Cannot read/);
  }
});

test('id-RSASSA-PSS keys and certificates with parameters: the restrictions AWS-LC applies, any salt to verify', (t) => {
  t.timeout(300_000);
  if (!opensslAvailable()) {
    t.pass('no openssl CLI');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cs-pss-'));
  try {
    const kinds: [string, string[]][] = [
      ['unrestricted', []],
      ['sha256/mgf1-sha256/salt 32', ['-pkeyopt', 'rsa_pss_keygen_md:sha256', '-pkeyopt', 'rsa_pss_keygen_mgf1_md:sha256', '-pkeyopt', 'rsa_pss_keygen_saltlen:32']],
      ['sha256/mgf1-sha1/salt 20', ['-pkeyopt', 'rsa_pss_keygen_md:sha256', '-pkeyopt', 'rsa_pss_keygen_mgf1_md:sha1', '-pkeyopt', 'rsa_pss_keygen_saltlen:20']],
      ['sha512/salt 64', ['-pkeyopt', 'rsa_pss_keygen_md:sha512', '-pkeyopt', 'rsa_pss_keygen_mgf1_md:sha512', '-pkeyopt', 'rsa_pss_keygen_saltlen:64']],
    ];
    let i = 0;
    for (const [name, opts] of kinds) {
      const kf = join(dir, `${i}.key`);
      const cf = join(dir, `${i++}.crt`);
      try {
        execFileSync('openssl', ['genpkey', '-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048', ...opts, '-out', kf], { stdio: 'pipe' });
        execFileSync('openssl', ['req', '-x509', '-key', kf, '-subj', `/CN=${name}`, '-days', '30', '-out', cf, '-sigopt', 'rsa_padding_mode:pss'], { stdio: 'pipe' });
      } catch {
        t.log(`openssl cannot make ${name}`);
        continue;
      }
      const kp = readFileSync(kf);
      const cp = readFileSync(cf);
      sameKey(t, kp, null, name);
      sameCert(t, cp, name);
      // The parameters' DER rules: mutated certificates and keys refuse alike.
      for (const m of mutations(500 + i, derOfPem(cp).der, 150)) sameCert(t, toPem('CERTIFICATE', m), `${name} cert mutation`);
      for (const m of mutations(600 + i, derOfPem(kp).der, 150)) sameKey(t, toPem('PRIVATE KEY', m), null, `${name} key mutation`);
      const jk = new JsPrivateKey(kp);
      const nk = new N.NativePrivateKey(kp);
      const jc = new JsCertificate(cp);
      const nc = new N.NativeCertificate(cp);
      // Signatures of every salt length, made with the same RSA key unrestricted.
      const der = jk.keyObject.export({ type: 'pkcs8', format: 'der' });
      const plain = createPrivateKey({ key: Buffer.from(readTlvs(der)), format: 'der', type: 'pkcs1' });
      const data = Buffer.from('pss body');
      for (const d of DIGESTS) {
        t.is(outcome(() => jk.sign(data, d).length), outcome(() => nk.sign(data, d).length), `${name} sign ${d}`);
        for (const saltLength of [0, 20, 32, 64, constants.RSA_PSS_SALTLEN_MAX_SIGN]) {
          let sig: Buffer;
          try {
            sig = nodeSign(d, data, { key: plain, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
          } catch {
            continue;
          }
          t.is(outcome(() => jc.verify(data, sig, d)), outcome(() => nc.verify(data, sig, d)), `${name} verify ${d} salt ${saltLength}`);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo. */
function readTlvs(pkcs8: Buffer): Buffer {
  const len = (at: number): [number, number] => {
    const first = pkcs8[at]!;
    if (first < 0x80) return [first, at + 1];
    const n = first & 0x7f;
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + pkcs8[at + 1 + i]!;
    return [v, at + 1 + n];
  };
  let [, at] = len(1); // into the outer SEQUENCE
  for (let skip = 0; skip < 2; skip++) {
    const [l, body] = len(at + 1);
    at = body + l; // version, then AlgorithmIdentifier
  }
  const [l, body] = len(at + 1); // the OCTET STRING
  return pkcs8.subarray(body, body + l);
}

/** DER TLV with a definite minimal length. */
function tlv(tag: number, body: Uint8Array): Buffer {
  const n = body.length;
  const h =
    n < 0x80 ? [tag, n] : n < 0x100 ? [tag, 0x81, n] : n < 0x10000 ? [tag, 0x82, n >> 8, n & 255] : [tag, 0x83, n >> 16, (n >> 8) & 255, n & 255];
  return Buffer.concat([Buffer.from(h), body]);
}

/** The elements of a DER SEQUENCE's contents. */
function elements(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < body.length) {
    const first = body[at + 1]!;
    let len = first;
    let hdr = 2;
    if (first >= 0x80) {
      hdr = 2 + (first & 0x7f);
      len = 0;
      for (let i = 2; i < hdr; i++) len = len * 256 + body[at + i]!;
    }
    out.push(body.subarray(at, at + hdr + len));
    at += hdr + len;
  }
  return out;
}

/** A DER element's contents. */
function contents(el: Buffer): Buffer {
  const first = el[1]!;
  if (first < 0x80) return el.subarray(2, 2 + first);
  const n = first & 0x7f;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + el[2 + i]!;
  return el.subarray(2 + n, 2 + n + len);
}

test('SubjectPublicKeyInfo variants: the RSA OIDs AWS-LC reads, RSA-PSS parameters, ML-DSA/ML-KEM keys', (t) => {
  const { der } = derOfPem(fx.pemOf(fx.cert('rsa2048')));
  const [tbs, ...rest] = elements(contents(der));
  const fields = elements(contents(tbs!));
  const spkiAt = fields[0]![0] === 0xa0 ? 6 : 5;
  const [, bitString] = elements(contents(fields[spkiAt]!));
  const withSpki = (spki: Buffer): Buffer => {
    const f = [...fields];
    f[spkiAt] = spki;
    return toPem('CERTIFICATE', tlv(0x30, Buffer.concat([tlv(0x30, Buffer.concat(f)), ...rest])));
  };
  const oid = (b: number[]) => tlv(0x06, Buffer.from(b));
  const NULL = Buffer.from([5, 0]);
  const RSA = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 1];
  const PSS = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 10];
  const spki = (alg: Buffer[], key: Buffer = bitString!) => tlv(0x30, Buffer.concat([tlv(0x30, Buffer.concat(alg)), key]));
  const cases: Record<string, Buffer> = {
    'rsaEncryption': spki([oid(RSA), NULL]),
    'rsaEncryption, no parameters': spki([oid(RSA)]),
    'rsaEncryption, odd parameters': spki([oid(RSA), tlv(0x04, Buffer.from('xx'))]),
    'X.500 rsa (2.5.8.1.1)': spki([oid([0x55, 8, 1, 1]), NULL]),
    'rsaesOaep': spki([oid([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 7])]),
    'RSA-PSS, no parameters': spki([oid(PSS)]),
    'RSA-PSS, empty SEQUENCE': spki([oid(PSS), tlv(0x30, Buffer.alloc(0))]),
    'RSA-PSS, NULL': spki([oid(PSS), NULL]),
    'RSA-PSS, trailer 2': spki([oid(PSS), tlv(0x30, tlv(0xa3, tlv(0x02, Buffer.from([2]))))]),
    'RSA-PSS, negative salt': spki([oid(PSS), tlv(0x30, tlv(0xa2, tlv(0x02, Buffer.from([0xff]))))]),
    'RSA-PSS, md5': spki([oid(PSS), tlv(0x30, tlv(0xa0, tlv(0x30, Buffer.concat([oid([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 2, 5]), NULL]))))]),
    'unknown OID': spki([oid([0x2a, 3, 4])]),
    'unused bits 1': spki([oid(RSA), NULL], tlv(0x03, Buffer.concat([Buffer.from([1]), contents(bitString!).subarray(1)]))),
  };
  for (const [name, n, len] of [
    ['ML-DSA-44', [3, 0x11], 1312],
    ['ML-DSA-87', [3, 0x13], 2592],
    ['ML-KEM-768', [4, 0x02], 1184],
  ] as const) {
    const o = [0x60, 0x86, 0x48, 1, 0x65, 3, 4, ...n];
    cases[name] = spki([oid(o)], tlv(0x03, Buffer.concat([Buffer.from([0]), Buffer.alloc(len, 7)])));
    cases[`${name}, short`] = spki([oid(o)], tlv(0x03, Buffer.concat([Buffer.from([0]), Buffer.alloc(len - 1, 7)])));
    cases[`${name}, parameters`] = spki([oid(o), NULL], tlv(0x03, Buffer.concat([Buffer.from([0]), Buffer.alloc(len, 7)])));
  }
  for (const [name, s] of Object.entries(cases)) sameCert(t, withSpki(s), name);
  t.regex(outcome(() => jsCert(withSpki(cases['X.500 rsa (2.5.8.1.1)']!))), /^ok /);
  t.regex(outcome(() => jsCert(withSpki(cases['ML-DSA-44']!))), /ERR_UNSUPPORTED_KEY_TYPE/);
});

/** `EVP_BytesToKey(MD5, count 1)`, for hand-made legacy PEM encryption. */
function bytesToKey(keyLen: number, pass: Buffer, salt: Buffer): Buffer {
  let out = Buffer.alloc(0);
  let prev = Buffer.alloc(0);
  while (out.length < keyLen) {
    prev = cryptoMod.createHash('md5').update(prev).update(pass).update(salt).digest();
    out = Buffer.concat([out, prev]);
  }
  return out.subarray(0, keyLen);
}

test('legacy Proc-Type encryption, hand-made: every label, DEK-Info spellings, IVs, double encryption', (t) => {
  const pass = Buffer.from('legacy pass');
  const { der: pkcs1 } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs1')));
  const { der: pkcs8 } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs8')));
  const { der: enc8 } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs8-enc')));
  const encPass = pwOf(fx.key('rsa1024.pkcs8-enc'))!;
  const ciphers: Record<string, [string, number, number]> = {
    'AES-128-CBC': ['aes-128-cbc', 16, 16],
    'AES-192-CBC': ['aes-192-cbc', 24, 16],
    'AES-256-CBC': ['aes-256-cbc', 32, 16],
    'DES-EDE3-CBC': ['des-ede3-cbc', 24, 8],
  };
  const encrypt = (name: string, der: Buffer, pw: Buffer, iv: Buffer): Buffer => {
    const [alg, keyLen] = ciphers[name]!;
    const c = cryptoMod.createCipheriv(alg, bytesToKey(keyLen, pw, iv.subarray(0, 8)), iv);
    return Buffer.concat([c.update(der), c.final()]);
  };
  let n = 0;
  for (const [name, [, , ivLen]] of Object.entries(ciphers)) {
    const iv = cryptoMod.randomBytes(ivLen);
    const hex = iv.toString('hex').toUpperCase();
    for (const [label, der] of [
      ['RSA PRIVATE KEY', pkcs1],
      ['PRIVATE KEY', pkcs8],
      ['RSA PRIVATE KEY', pkcs8],
      ['EC PRIVATE KEY', pkcs1],
      ['FOO PRIVATE KEY', pkcs1],
    ] as const) {
      const ct = encrypt(name, der, pass, iv);
      const headers = [
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex}\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex.toLowerCase()}\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex}EXTRA\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex.slice(0, -2)}\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name.toLowerCase()},${hex}\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name} ${hex}\n\n`,
        `Proc-Type: 4,ENCRYPTED\r\nDEK-Info: ${name},${hex}\r\n\r\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex}\n`,
        `Proc-Type: 4,ENCRYPTED\nComment: x\nDEK-Info: ${name},${hex}\n\n`,
        `Comment: x\nProc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex}\n\n`,
        `Proc-Type: 3,ENCRYPTED\nDEK-Info: ${name},${hex}\n\n`,
        `Proc-Type:  4,ENCRYPTED\nDEK-Info: ${name},${hex}\n\n`,
        `Proc-Type: 4,ENCRYPTED\nDEK-Info:${name},${hex}\n\n`,
      ];
      for (const h of headers) {
        const pem = toPem(label, ct, h);
        for (const pw of [pass, Buffer.from('wrong'), null]) {
          sameKey(t, pem, pw, `${label} ${name} ${JSON.stringify(h)} ${pw === null ? 'none' : pw.toString()}`);
          n++;
        }
      }
    }
    // Legacy encryption over an already PBES2-encrypted PKCS#8: AWS-LC asks for the
    // password twice; both backends decrypt both layers with the one password (the
    // native key reader's callback can be called again: see
    // test/key-double-encryption.test.ts, which runs it in a child process).
    const both = toPem('ENCRYPTED PRIVATE KEY', encrypt(name, enc8, encPass, iv), `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${hex}\n\n`);
    t.regex(outcome(() => jsKey(both, encPass)), /^ok 1024$/);
    t.regex(outcome(() => jsKey(both, Buffer.from('wrong'))), /could not decrypt/);
    for (const pw of [encPass, Buffer.from('wrong'), null]) sameKey(t, both, pw, `doubly encrypted ${name} ${pw === null ? 'none' : pw.toString()}`);
    n++;
  }
  // The right key loads through the hand-made path too.
  const iv = Buffer.alloc(16, 3);
  t.is(outcome(() => jsKey(toPem('RSA PRIVATE KEY', encrypt('AES-128-CBC', pkcs1, pass, iv), `Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,${iv.toString('hex')}\n\n`), pass)), 'ok 1024');
  t.log(`${n} legacy variants`);
});

test('PKCS#8 structure variants: versions, attributes, a v2 public key, the RSA OIDs, trailing data', (t) => {
  const { der: pkcs1 } = derOfPem(fx.pemOf(fx.key('rsa1024.pkcs1')));
  const RSA = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 1];
  const PSS = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 10];
  const oid = (b: number[]) => tlv(0x06, Buffer.from(b));
  const NULL = Buffer.from([5, 0]);
  const int = (v: number) => tlv(0x02, Buffer.from([v]));
  const p8 = (parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
  const alg = (o: number[], params?: Buffer) => tlv(0x30, Buffer.concat(params ? [oid(o), params] : [oid(o)]));
  const key = tlv(0x04, pkcs1);
  const cases: Record<string, Buffer> = {
    v0: p8([int(0), alg(RSA, NULL), key]),
    v1: p8([int(1), alg(RSA, NULL), key]),
    v2: p8([int(2), alg(RSA, NULL), key]),
    'no NULL': p8([int(0), alg(RSA), key]),
    'attributes': p8([int(0), alg(RSA, NULL), key, tlv(0xa0, Buffer.alloc(0))]),
    'v1 public key': p8([int(1), alg(RSA, NULL), key, tlv(0x81, Buffer.from([0, 1, 2]))]),
    'v0 public key': p8([int(0), alg(RSA, NULL), key, tlv(0x81, Buffer.from([0, 1, 2]))]),
    'trailing element': p8([int(0), alg(RSA, NULL), key, tlv(0x04, Buffer.alloc(1))]),
    'X.500 rsa OID': p8([int(0), alg([0x55, 8, 1, 1], NULL), key]),
    'rsaesOaep OID': p8([int(0), alg([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 7], NULL), key]),
    'RSA-PSS no params': p8([int(0), alg(PSS), key]),
    'RSA-PSS empty params': p8([int(0), alg(PSS, tlv(0x30, Buffer.alloc(0))), key]),
    'RSA-PSS NULL': p8([int(0), alg(PSS, NULL), key]),
    'inner trailing': p8([int(0), alg(RSA, NULL), tlv(0x04, Buffer.concat([pkcs1, Buffer.from([0])]))]),
    'an attribute': p8([int(0), alg(RSA, NULL), key, tlv(0xa0, tlv(0x30, Buffer.concat([oid([0x2a, 3]), tlv(0x31, tlv(0x0c, Buffer.from('v')))])))]),
    'a bad attribute': p8([int(0), alg(RSA, NULL), key, tlv(0xa0, tlv(0x30, oid([0x2a, 3])))]),
    'attributes then public key': p8([int(1), alg(RSA, NULL), key, tlv(0xa0, Buffer.alloc(0)), tlv(0x81, Buffer.from([0]))]),
    'bad OID encoding': p8([int(0), alg([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x81], NULL), key]),
    'OID with 0x80 lead': p8([int(0), alg([0x2a, 0x80, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 1], NULL), key]),
    'two parameters': p8([int(0), tlv(0x30, Buffer.concat([oid(RSA), NULL, NULL])), key]),
    'version 256': p8([tlv(0x02, Buffer.from([1, 0])), alg(RSA, NULL), key]),
    'version -1': p8([tlv(0x02, Buffer.from([0xff])), alg(RSA, NULL), key]),
    'version non-minimal': p8([tlv(0x02, Buffer.from([0, 0])), alg(RSA, NULL), key]),
  };
  for (const [name, der] of Object.entries(cases)) {
    sameKey(t, toPem('PRIVATE KEY', der), null, name);
    sameKey(t, toPem('PRIVATE KEY', Buffer.concat([der, Buffer.from([0, 0])])), null, `${name} + trailing bytes`);
    sameKey(t, toPem('RSA PRIVATE KEY', der), null, `${name} as RSA PRIVATE KEY`);
  }
  sameKey(t, toPem('RSA PRIVATE KEY', Buffer.concat([pkcs1, Buffer.from([5, 0])])), null, 'PKCS#1 + trailing bytes');
  // The same plaintexts inside PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA256): decrypted
  // PKCS#8 goes through EVP_parse_private_key only.
  const pw = Buffer.from('p8 pass');
  const salt = Buffer.alloc(16, 9);
  const iv = Buffer.alloc(16, 4);
  const kdfKey = cryptoMod.pbkdf2Sync(pw, salt, 1000, 32, 'sha256');
  const pbes2 = tlv(0x30, Buffer.concat([
    oid([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 5, 13]),
    tlv(0x30, Buffer.concat([
      tlv(0x30, Buffer.concat([
        oid([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 5, 12]),
        tlv(0x30, Buffer.concat([tlv(0x04, salt), tlv(0x02, Buffer.from([0x03, 0xe8])), tlv(0x30, Buffer.concat([oid([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 2, 9]), NULL]))])),
      ])),
      tlv(0x30, Buffer.concat([oid([0x60, 0x86, 0x48, 1, 0x65, 3, 4, 1, 0x2a]), tlv(0x04, iv)])),
    ])),
  ]));
  for (const other of ['ec-p256.pkcs8', 'ed25519.pkcs8', 'dsa2048.pkcs8', 'rsa-pss2048.pkcs8']) {
    cases[`fixture ${other}`] = derOfPem(fx.pemOf(fx.key(other))).der;
  }
  for (const [name, der] of Object.entries(cases)) {
    const c = cryptoMod.createCipheriv('aes-256-cbc', kdfKey, iv);
    const ct = Buffer.concat([c.update(der), c.final()]);
    const pem = toPem('ENCRYPTED PRIVATE KEY', tlv(0x30, Buffer.concat([pbes2, tlv(0x04, ct)])));
    sameKey(t, pem, pw, `encrypted ${name}`);
  }
  {
    const c = cryptoMod.createCipheriv('aes-256-cbc', kdfKey, iv);
    const ct = Buffer.concat([c.update(cases.v0!), c.final()]);
    t.is(outcome(() => jsKey(toPem('ENCRYPTED PRIVATE KEY', tlv(0x30, Buffer.concat([pbes2, tlv(0x04, ct)]))), pw)), 'ok 1024');
  }
  t.regex(outcome(() => jsKey(toPem('PRIVATE KEY', cases['X.500 rsa OID']!))), /^ok 1024$/);
});

test('public exponents: AWS-LC limits e to 33 bits, odd; keys and certificates alike', (t) => {
  t.timeout(120_000);
  if (!opensslAvailable()) {
    t.pass('no openssl CLI');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cs-exp-'));
  try {
    for (const e of ['3', '65535', '4294967297', '8589934591', '8589934593']) {
      const kf = join(dir, `${e}.key`);
      const cf = join(dir, `${e}.crt`);
      try {
        execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024', '-pkeyopt', `rsa_keygen_pubexp:${e}`, '-out', kf], { stdio: 'pipe' });
        execFileSync('openssl', ['req', '-x509', '-key', kf, '-subj', `/CN=e ${e}`, '-days', '30', '-out', cf], { stdio: 'pipe' });
      } catch {
        t.log(`openssl cannot make e=${e}`);
        continue;
      }
      sameKey(t, readFileSync(kf), null, `key e=${e}`);
      sameCert(t, readFileSync(cf), `cert e=${e}`);
    }
    t.regex(outcome(() => jsKey(readFileSync(join(dir, '8589934593.key')))), /could not parse/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A certificate DER with its serial INTEGER's contents replaced (the signature no longer matches; nothing here checks it). */
function withSerial(der: Buffer, serial: Uint8Array): Buffer {
  const [tbs, alg, sig] = elements(contents(der));
  const fields = elements(contents(tbs!));
  const at = fields[0]![0] === 0xa0 ? 1 : 0;
  fields[at] = tlv(0x02, serial);
  return tlv(0x30, Buffer.concat([tlv(0x30, Buffer.concat(fields)), alg!, sig!]));
}

/** Python's `int.from_bytes(b, 'big', signed=True)`, in decimal. */
function pythonInt(bytes: Uint8Array): string {
  let v = BigInt('0x' + Buffer.from(bytes).toString('hex'));
  if (bytes[0]! & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return v.toString();
}

test('certificate serials: the same decimal up to MAX_SERIAL_BYTES, the same quick refusal beyond it', (t) => {
  t.is(MAX_SERIAL_BYTES, 4096);
  const { der } = derOfPem(fx.pemOf(fx.cert('rsa2048')));
  const random = rng(8);
  const serials: Uint8Array[] = [];
  for (const n of [1, 2, 19, 20, 21, 64, 127, 128, 129, 1000, 1786, 1787, 4095, 4096]) {
    const b = Buffer.alloc(n, 0).map(() => Math.floor(random() * 256));
    b[0] = b[0]! & 0x7f || 1;
    serials.push(b);
    const neg = Buffer.from(b);
    neg[0] = (neg[0]! | 0x80) & 0xfe; // not 0xff: minimal whatever follows
    serials.push(neg);
  }
  serials.push(Buffer.alloc(4096, 0x7f), Buffer.from([0x00]), Buffer.from([0xff]), Buffer.from([0x80, 0, 0]));
  for (const serial of serials) {
    const pem = toPem('CERTIFICATE', withSerial(der, serial));
    const label = `${serial.length} bytes, ${serial[0]! & 0x80 ? 'negative' : 'positive'}`;
    const native = new N.NativeCertificate(pem);
    t.is(native.serial, pythonInt(serial), label);
    t.is(native.id.endsWith(` ${native.serial}`), true);
    sameCert(t, pem, label);
  }
  for (const n of [4097, 8192, 65536, 1 << 20]) {
    const pem = toPem('CERTIFICATE', withSerial(der, Buffer.alloc(n, 0x7f)));
    const t0 = performance.now();
    const got = outcome(() => nativeCert(pem));
    const ms = performance.now() - t0;
    t.is(got, `error ERR_INVALID_CERTIFICATE: Invalid certificate: the serial number is ${n} bytes long, over the limit of 4096`);
    // The conversion once took 36 s for 64 KiB, on the event loop.
    t.true(ms < 200, `${n} bytes: ${ms.toFixed(1)} ms`);
    sameCert(t, pem, `${n} bytes`);
  }
  // Not minimally encoded: Python `cryptography` refuses the certificate (checked
  // with .venv's cryptography 50: `00 7f`, `00 00 01`, `ff 80`, `ff ff` fail to load;
  // `00 80`, `ff 7f`, `00`, `ff` load).
  for (const serial of [[0x00, 0x7f], [0x00, 0x00, 0x01], [0xff, 0x80], [0xff, 0xff], [0x00, ...Buffer.alloc(30, 0x11)]]) {
    const pem = toPem('CERTIFICATE', withSerial(der, Buffer.from(serial)));
    t.is(outcome(() => nativeCert(pem)), 'error ERR_INVALID_CERTIFICATE: Invalid certificate: could not parse the X.509 certificate', Buffer.from(serial).toString('hex'));
    sameCert(t, pem, `non-minimal ${Buffer.from(serial).toString('hex')}`);
  }
  for (const serial of [[0x00, 0x80], [0xff, 0x7f], [0x00], [0xff]]) {
    const pem = toPem('CERTIFICATE', withSerial(der, Buffer.from(serial)));
    t.is(new N.NativeCertificate(pem).serial, pythonInt(Buffer.from(serial)));
    sameCert(t, pem, `minimal ${Buffer.from(serial).toString('hex')}`);
  }
  // The longest accepted serial converts in well under a frame.
  const pem = toPem('CERTIFICATE', withSerial(der, Buffer.alloc(4096, 0xff).fill(0x7f, 0, 1)));
  const t0 = performance.now();
  for (let i = 0; i < 10; i++) nativeCert(pem);
  t.log(`a ${MAX_SERIAL_BYTES}-byte serial: ${((performance.now() - t0) / 10).toFixed(2)} ms a certificate (native)`);
});
