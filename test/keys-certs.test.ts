/**
 * PrivateKey, Certificate, CertStore and FSCertStore against what the real
 * Celery said of the same files (the fixture manifest).
 */
import test from 'ava';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { Certificate, CertStore, FSCertStore, PrivateKey, SecurityError } from 'celery-sign';
import * as fx from './helpers/fixtures.js';

const rsaKeys = fx.keys().filter((k) => k.algorithm === 'rsa');

test('loads every RSA key format Celery loads, with string or byte passwords', (t) => {
  for (const k of rsaKeys.filter((k) => k.celery.ok)) {
    const pem = fx.pemOf(k);
    const key = new PrivateKey(pem, k.password);
    t.is(key.bits as number | null, k.bits, k.name);
    if (k.password !== null) {
      t.is(new PrivateKey(pem.toString('utf8'), Buffer.from(k.password, 'utf8')).bits, k.bits!, k.name);
    }
  }
});

test('every key format of the fixtures is refused where Celery refuses it', (t) => {
  for (const k of fx.keys().filter((k) => !k.celery.ok)) {
    const err = t.throws(() => new PrivateKey(fx.pemOf(k), k.password), { instanceOf: SecurityError }, k.name);
    t.true(['ERR_INVALID_KEY', 'ERR_UNSUPPORTED_KEY_TYPE'].includes(err!.code), `${k.name}: ${err!.code}`);
  }
});

test('an RSA-PSS (id-RSASSA-PSS) key loads and signs, as Celery accepts it', (t) => {
  const k = fx.key('rsa-pss2048.pkcs8');
  t.true(k.celery.ok);
  const key = new PrivateKey(fx.pemOf(k));
  t.is(key.bits, 2048);
  t.is(key.sign('data').length, 256);
});

test('non-RSA keys are ERR_UNSUPPORTED_KEY_TYPE', (t) => {
  for (const name of ['ec-p256.pkcs8', 'ec-p256.sec1', 'ed25519.pkcs8', 'dsa2048.pkcs8']) {
    const k = fx.key(name);
    t.throws(() => new PrivateKey(fx.pemOf(k), k.password), { instanceOf: SecurityError, code: 'ERR_UNSUPPORTED_KEY_TYPE' }, name);
  }
});

test('wrong or missing passwords and garbage are ERR_INVALID_KEY, and no secret is in the message', (t) => {
  const enc = rsaKeys.filter((k) => k.password !== null && k.celery.ok);
  t.true(enc.length >= 8);
  for (const k of enc) {
    const pem = fx.pemOf(k);
    const wrong = t.throws(() => new PrivateKey(pem, 'not the password'), { instanceOf: SecurityError, code: 'ERR_INVALID_KEY' });
    t.false(wrong!.message.includes('not the password'));
    t.false(wrong!.message.includes(k.password!));
    const longest = pem.toString('utf8').split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    t.true(longest.length > 40);
    t.false(wrong!.message.includes(longest));
    t.throws(() => new PrivateKey(pem), { instanceOf: SecurityError, code: 'ERR_INVALID_KEY' });
  }
  const plain = fx.pemOf(fx.key('rsa2048.pkcs8'));
  t.throws(() => new PrivateKey(plain, 'unexpected'), { instanceOf: SecurityError, code: 'ERR_INVALID_KEY' });
  t.throws(() => new PrivateKey('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'), { code: 'ERR_INVALID_KEY' });
  t.throws(() => new PrivateKey('garbage'), { code: 'ERR_INVALID_KEY' });
  t.throws(() => new PrivateKey(''), { code: 'ERR_INVALID_KEY' });
});

test('a key never shows its material when logged or serialized', (t) => {
  const key = new PrivateKey(fx.pemOf(fx.key('rsa2048.pkcs8')));
  t.is(JSON.stringify(key), '{"type":"PrivateKey","bits":2048}');
  t.is(inspect(key), 'PrivateKey { bits: 2048 }');
});

test('certificate ids and issuers are exactly Celery get_id() and get_issuer()', (t) => {
  const withIds = fx.certs().filter((c) => c.expected_id !== null);
  t.true(withIds.length >= 25);
  for (const c of withIds) {
    const cert = new Certificate(fx.pemOf(c));
    t.is(cert.id as string | null, c.expected_id, c.name);
    t.is(cert.issuer as string | null, c.expected_issuer, c.name);
    t.is(cert.getId() as string | null, c.expected_id);
    t.is(cert.serialNumber, BigInt(c.serial!), c.name);
    t.is(cert.bits as number | null, c.bits, c.name);
    t.is(cert.notAfter.toISOString().replace('.000Z', 'Z') as string | null, c.not_after, c.name);
    t.is(cert.hasExpired() as boolean | null, c.expired, c.name);
  }
});

test('certificates Celery cannot use are refused with a code', (t) => {
  for (const c of fx.certs().filter((c) => c.expected_id === null)) {
    const err = t.throws(() => new Certificate(fx.pemOf(c)), { instanceOf: SecurityError }, c.name);
    const expected = c.algorithm !== null && c.algorithm !== 'rsa' ? 'ERR_UNSUPPORTED_KEY_TYPE' : 'ERR_INVALID_CERTIFICATE';
    t.is(err!.code, expected, `${c.name}: ${err!.message}`);
  }
  t.throws(() => new Certificate('not a certificate'), { code: 'ERR_INVALID_CERTIFICATE' });
});

test('hasExpired takes a clock', (t) => {
  const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
  t.false(cert.hasExpired(new Date(cert.notAfter.getTime() - 1)));
  t.true(cert.hasExpired(cert.notAfter));
  t.true(new Certificate(fx.pemOf(fx.cert('expired'))).hasExpired());
});

test('CertStore: add, get, has, size, iteration; duplicates and unknown ids refused', (t) => {
  const a = new Certificate(fx.pemOf(fx.cert('rsa2048')));
  const b = new Certificate(fx.pemOf(fx.cert('rsa3072')));
  const store = new CertStore([a]);
  store.add(b);
  t.is(store.size, 2);
  t.is(store.get(a.id), a);
  t.is(store.get(Buffer.from(b.id)), b);
  t.true(store.has(a.id));
  t.false(store.has('nobody 1'));
  t.deepEqual([...store], [a, b]);
  t.throws(() => store.get('nobody 1'), { instanceOf: SecurityError, code: 'ERR_UNKNOWN_CERTIFICATE' });
  t.throws(() => store.add(new Certificate(fx.pemOf(fx.cert('rsa2048')))), { code: 'ERR_DUPLICATE_CERTIFICATE' });
  t.throws(() => new CertStore([new Certificate(fx.pemOf(fx.cert('dup-a'))), new Certificate(fx.pemOf(fx.cert('dup-b')))]), {
    code: 'ERR_DUPLICATE_CERTIFICATE',
  });
  t.is(store.size, 2);
});

test('FSCertStore loads what Celery loads, by directory or glob', (t) => {
  const valid = fx.store('store.valid');
  const byDir = new FSCertStore(fx.pathOf(valid));
  t.deepEqual([...byDir].map((c) => c.id).sort(), [...valid.celery.ids!].sort());
  const byGlob = new FSCertStore(join(fx.pathOf(valid), '*.pem'));
  t.is(byGlob.size, valid.celery.ids!.length);
  t.is(new FSCertStore(join(fx.pathOf(valid), 'no-such-*.pem')).size, 0);
});

test('FSCertStore refuses expired, duplicate and non-RSA certificates as Celery does', (t) => {
  t.throws(() => new FSCertStore(fx.pathOf(fx.store('store.with-expired'))), { instanceOf: SecurityError, code: 'ERR_CERTIFICATE_EXPIRED' });
  t.throws(() => new FSCertStore(fx.pathOf(fx.store('store.with-duplicate'))), { code: 'ERR_DUPLICATE_CERTIFICATE' });
  t.throws(() => new FSCertStore(fx.pathOf(fx.store('store.with-non-rsa'))), { code: 'ERR_UNSUPPORTED_KEY_TYPE' });
});

test('sign and verify at the Certificate level, all digests', (t) => {
  const key = new PrivateKey(fx.pemOf(fx.key('rsa2048.pkcs1')));
  const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
  for (const digest of ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as const) {
    const sig = key.sign('data', digest);
    t.is(sig.length, 256);
    t.notThrows(() => cert.verify('data', sig, digest));
    t.notThrows(() => cert.verify(Buffer.from('data'), sig, digest.toUpperCase() as typeof digest));
    t.throws(() => cert.verify('datA', sig, digest), { instanceOf: SecurityError, code: 'ERR_BAD_SIGNATURE' });
  }
  t.throws(() => cert.verify('data', key.sign('data', 'sha256'), 'sha512'), { code: 'ERR_BAD_SIGNATURE' });
  t.throws(() => key.sign('data', 'md5' as 'sha256'), { name: 'ImproperlyConfigured', code: 'ERR_IMPROPERLY_CONFIGURED' });
});
