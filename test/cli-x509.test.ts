/**
 * The DER writer of `celery-sign certgen` (src/cli/x509.ts), against Node's
 * X509Certificate and celery-sign's Certificate; test/cli.test.ts checks its
 * certificates and CSRs against Python's cryptography and Celery.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import test from 'ava';
import { Certificate } from 'celery-sign';
import { buildCertificate, buildCsr, integer, name, oid, pem, randomSerial, subjectOf, time, tlv } from '../lib/cli/x509.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

test('INTEGER: minimal two\'s complement, a 0 byte before a set top bit', (t) => {
  t.is(hex(integer(0)), '020100');
  t.is(hex(integer(127)), '02017f');
  t.is(hex(integer(128)), '02020080');
  t.is(hex(integer(256)), '02020100');
  t.is(hex(integer(2n ** 64n)), '0209010000000000000000');
  t.throws(() => integer(-1n));
});

test('lengths: short form below 128, long form above', (t) => {
  t.is(hex(tlv(0x04, Buffer.alloc(127))).slice(0, 4), '047f');
  t.is(hex(tlv(0x04, Buffer.alloc(128))).slice(0, 6), '048180');
  t.is(hex(tlv(0x04, Buffer.alloc(300))).slice(0, 8), '0482012c');
  t.is(tlv(0x04, Buffer.alloc(70000)).length, 70000 + 5);
});

test('OBJECT IDENTIFIER: base-128 arcs', (t) => {
  t.is(hex(oid('2.5.4.3')), '0603550403');
  t.is(hex(oid('1.2.840.113549.1.1.11')), '06092a864886f70d01010b');
});

test('Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280)', (t) => {
  t.is(time(new Date('2049-12-31T23:59:59Z')).toString('latin1', 2), '491231235959Z');
  t.is(time(new Date('2049-12-31T23:59:59Z'))[0], 0x17);
  t.is(time(new Date('2050-01-01T00:00:00Z')).toString('latin1', 2), '20500101000000Z');
  t.is(time(new Date('2050-01-01T00:00:00Z'))[0], 0x18);
});

test('a self-signed certificate: Node parses and verifies it, celery-sign gives Celery\'s id', (t) => {
  const serial = 0x7fn << 120n;
  const der = buildCertificate({ publicKey, signingKey: privateKey, subject: [{ type: 'C', value: 'DE' }, { type: 'O', value: 'Ä Corp' }, { type: 'CN', value: 'w1' }], days: 10, serial, notBefore: new Date('2026-01-01T00:00:00Z') });
  const x = new X509Certificate(der);
  t.true(x.verify(publicKey));
  t.true(x.ca);
  t.is(x.subject, 'C=DE\nO=Ä Corp\nCN=w1');
  t.is(x.issuer, x.subject);
  t.is(BigInt('0x' + x.serialNumber), serial);
  t.is(new Date(x.validFrom).toISOString(), '2026-01-01T00:00:00.000Z');
  t.is(new Date(x.validTo).toISOString(), '2026-01-11T00:00:00.000Z');
  const c = new Certificate(pem('CERTIFICATE', der));
  t.is(c.id, `DE Ä Corp w1 ${serial}`);
  t.is(c.bits, 2048);
  t.deepEqual(subjectOf(der).subject, name([{ type: 'C', value: 'DE' }, { type: 'O', value: 'Ä Corp' }, { type: 'CN', value: 'w1' }]));
});

test('a certificate issued by a CA: verifies with the CA key, the issuer is the CA subject; a wrong CA key is refused', (t) => {
  const ca = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const caDer = buildCertificate({ publicKey: ca.publicKey, signingKey: ca.privateKey, subject: [{ type: 'CN', value: 'CA' }], days: 100 });
  const leaf = buildCertificate({ publicKey, signingKey: ca.privateKey, issuerCert: caDer, subject: [{ type: 'CN', value: 'leaf' }], days: 5, serial: 7n });
  const x = new X509Certificate(leaf);
  t.true(x.verify(ca.publicKey));
  t.false(x.verify(publicKey));
  t.false(x.ca);
  t.true(x.checkIssued(new X509Certificate(caDer)));
  t.is(new Certificate(pem('CERTIFICATE', leaf)).id, 'CA 7');
  t.throws(() => buildCertificate({ publicKey, signingKey: privateKey, issuerCert: caDer, subject: [{ type: 'CN', value: 'x' }], days: 5 }), { message: /CA key does not match/ });
});

test('serials are positive, 16 bytes at most; bad specs throw', (t) => {
  for (let i = 0; i < 50; i++) {
    const s = randomSerial();
    t.true(s > 0n && s < 2n ** 127n);
  }
  t.throws(() => buildCertificate({ publicKey, signingKey: privateKey, subject: [{ type: 'CN', value: 'x' }], days: 0 }));
  t.throws(() => name([{ type: 'CN', value: '' }]));
  t.throws(() => name([{ type: 'XX', value: 'a' }]));
});

test('a CSR: PEM-armoured PKCS#10 with the subject and the public key', (t) => {
  const der = buildCsr(privateKey, [{ type: 'CN', value: 'req' }]);
  t.is(der[0], 0x30);
  const text = pem('CERTIFICATE REQUEST', der);
  t.regex(text, /^-----BEGIN CERTIFICATE REQUEST-----\n([A-Za-z0-9+/=]{64}\n)*[A-Za-z0-9+/=]{1,64}\n-----END CERTIFICATE REQUEST-----\n$/);
  t.true(der.includes(publicKey.export({ type: 'spki', format: 'der' })));
  t.true(der.includes(name([{ type: 'CN', value: 'req' }])));
});
