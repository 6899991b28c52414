/**
 * Opt-in certificate chain verification of the stores (issue 12, item 7),
 * on the backend of this pass (run again with CELERY_SIGN_BACKEND=js for the
 * node:crypto fallback; the check itself is one implementation above the
 * backend, so both give the same answers and messages): a store given `ca`
 * takes only certificates that CA issued (signature, issuer name, the CA
 * valid, CA:TRUE, keyCertSign), through intermediates when given, and with
 * `crl` refuses revoked serials, a stale CRL and a CRL not signed by the CA.
 * The PKI is made by the test with Python `cryptography` (test/py/make_chain.py).
 */
import test from 'ava';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Certificate,
  CertStore,
  FSCertStore,
  ImproperlyConfigured,
  PrivateKey,
  SecureSerializer,
  SecurityError,
  setupSecurity,
  type CertStoreReload,
} from 'celery-sign';
import { certPath, crlPath, keyPath, makeChainPki } from './helpers/certgen.js';

let root: string;
let pki: string;
const cert = (name: string): Certificate => new Certificate(readFileSync(certPath(pki, name)));
const id = (name: string): string => cert(name).id;
const CA = (): string => certPath(pki, 'ca');

test.before(() => {
  root = mkdtempSync(join(tmpdir(), 'celery-sign-chain-'));
  pki = join(root, 'pki');
  makeChainPki(pki);
});

test.after.always(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A directory holding copies of these certificates. */
function storeDir(names: string[]): string {
  const dir = mkdtempSync(join(root, 'store-'));
  for (const n of names) copyFileSync(certPath(pki, n), join(dir, `${n}.pem`));
  return dir;
}

function refused(t: import('ava').ExecutionContext, fn: () => unknown, name: string, reason: RegExp): void {
  const err = t.throws(fn, { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
  t.true(err!.message.startsWith(`Certificate ${JSON.stringify(id(name))} refused: `), err!.message);
  t.regex(err!.message, reason);
}

test('a store with ca takes the certificates that CA issued and refuses the others, naming id and reason', (t) => {
  const store = new CertStore([cert('good')], { ca: CA() });
  t.true(store.has(id('good')));
  store.add(cert('revoked')); // no CRL: issued by the CA, so accepted
  t.is(store.size, 2);
  refused(t, () => store.add(cert('stranger')), 'stranger', /not issued by a trusted CA \(its issuer "O=celery-sign chain, CN=other" is none of the trusted CAs\)/);
  refused(t, () => store.add(cert('self')), 'self', /not issued by a trusted CA/);
  // The issuer name is the CA's, the signature is not.
  refused(t, () => store.add(cert('forged')), 'forged', /its signature does not verify with the key of the trusted CA "O=celery-sign chain, CN=ca"/);
  refused(t, () => new CertStore([cert('good'), cert('stranger')], { ca: CA() }), 'stranger', /not issued by a trusted CA/);
  t.is(store.size, 2);
  // Without ca: any certificate, as Celery's store.
  t.notThrows(() => new CertStore([cert('stranger'), cert('self'), cert('forged')]));
});

test('ca takes a Certificate, PEM bytes, a bundle file and several CAs', (t) => {
  t.notThrows(() => new CertStore([cert('good')], { ca: cert('ca') }));
  t.notThrows(() => new CertStore([cert('good')], { ca: readFileSync(CA()) }));
  const bundle = join(root, 'bundle.pem');
  writeFileSync(bundle, Buffer.concat([readFileSync(certPath(pki, 'other')), readFileSync(CA())]));
  t.notThrows(() => new CertStore([cert('good'), cert('stranger')], { ca: bundle }));
  t.notThrows(() => new CertStore([cert('good'), cert('stranger')], { ca: [CA(), certPath(pki, 'other')] }));
  t.throws(() => new CertStore([], { crl: crlPath(pki, 'crl') }), { instanceOf: TypeError, message: /need ca/ });
  const err = t.throws(() => new CertStore([], { ca: join(root, 'missing.pem') }), { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
  t.regex(err!.message, /Unreadable CA file/);
});

test('the issuing CA must be valid, CA:TRUE and allowed keyCertSign', (t) => {
  refused(t, () => new CertStore([cert('under_oldca')], { ca: [CA(), certPath(pki, 'oldca')] }), 'under_oldca', /the trusted CA "O=celery-sign chain, CN=oldca" that issued it expired at /);
  const ca = CA();
  const intermediates = [certPath(pki, 'notca'), certPath(pki, 'nosign')];
  refused(t, () => new CertStore([cert('under_notca')], { ca, intermediates }), 'under_notca', /the intermediate "O=celery-sign chain, CN=notca" is not a CA \(no basicConstraints CA:TRUE\)/);
  refused(t, () => new CertStore([cert('under_nosign')], { ca, intermediates }), 'under_nosign', /the keyUsage of the intermediate "O=celery-sign chain, CN=nosign" does not allow keyCertSign/);
});

test('intermediates: a certificate issued by an intermediate chains up to the root', (t) => {
  refused(t, () => new CertStore([cert('deep')], { ca: CA() }), 'deep', /its issuer "O=celery-sign chain, CN=inter" is none of the trusted CAs/);
  const store = new CertStore([cert('deep'), cert('good')], { ca: CA(), intermediates: certPath(pki, 'inter') });
  t.is(store.size, 2);
  // The intermediate alone is not a root of trust.
  refused(t, () => new CertStore([cert('good')], { ca: certPath(pki, 'other'), intermediates: certPath(pki, 'inter') }), 'good', /not issued by a trusted CA/);
  refused(t, () => new CertStore([cert('deep')], { ca: certPath(pki, 'other'), intermediates: certPath(pki, 'inter') }), 'deep', /not issued by a trusted CA/);
  // A CRL of the intermediate is checked with the intermediate's key.
  t.notThrows(() => new CertStore([cert('deep')], { ca: CA(), intermediates: certPath(pki, 'inter'), crl: crlPath(pki, 'crl_inter') }));
});

test('crl: a revoked serial is refused, PEM or DER; the others pass', (t) => {
  for (const crl of [crlPath(pki, 'crl'), join(pki, 'crl_der.crl.der'), readFileSync(crlPath(pki, 'crl'))]) {
    const store = new CertStore([cert('good')], { ca: CA(), crl });
    refused(t, () => store.add(cert('revoked')), 'revoked', /it is revoked: serial 11 is listed in the CRL of "O=celery-sign chain, CN=ca" \(.*\), revoked at \d{4}-/);
    t.deepEqual([...store].map((c) => c.id), [id('good')]);
  }
  t.notThrows(() => new CertStore([cert('good'), cert('revoked')], { ca: CA(), crl: crlPath(pki, 'crl_empty') }));
  // Several CRLs of one CA: the latest (thisUpdate) decides, so an old stale one does not matter.
  const both = new CertStore([cert('good')], { ca: CA(), crl: [crlPath(pki, 'crl_stale'), crlPath(pki, 'crl')] });
  refused(t, () => both.add(cert('revoked')), 'revoked', /it is revoked/);
  // A delta CRL (a critical extension not handled) is refused rather than misread as a full one.
  const err = t.throws(() => new CertStore([], { ca: CA(), crl: crlPath(pki, 'crl_delta') }), { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
  t.regex(err!.message, /has a critical extension celery-sign does not handle/);
});

test('crl: a stale CRL refuses the certificates of its CA and says so; the CA of another stays unaffected', (t) => {
  const opts = { ca: [CA(), certPath(pki, 'other')], crl: crlPath(pki, 'crl_stale') };
  refused(t, () => new CertStore([cert('good')], opts), 'good', /the CRL of its issuer "O=celery-sign chain, CN=ca" \(.*crl_stale.crl.pem"\) is stale: its nextUpdate \d{4}-.* has passed, so its revocation status is unknown/);
  t.notThrows(() => new CertStore([cert('stranger')], opts));
});

test('crl: a CRL not signed by the CA, or by no trusted CA, refuses the store', (t) => {
  let err = t.throws(() => new CertStore([cert('good')], { ca: CA(), crl: crlPath(pki, 'crl_forged') }), { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
  t.regex(err!.message, /The CRL ".*crl_forged.crl.pem" is refused: its signature does not verify with the key of the CA "O=celery-sign chain, CN=ca"/);
  err = t.throws(() => new CertStore([cert('good')], { ca: CA(), crl: crlPath(pki, 'crl_other') }), { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
  t.regex(err!.message, /The CRL ".*crl_other.crl.pem" is not issued by a trusted CA/);
  err = t.throws(() => new CertStore([], { ca: CA(), crl: certPath(pki, 'good') }), { instanceOf: SecurityError });
  t.regex(err!.message, /No CRL in/);
  // Garbage and truncated CRLs: a typed refusal, never a crash.
  const der = readFileSync(join(pki, 'crl_der.crl.der'));
  for (const bad of [Buffer.from('garbage'), der.subarray(0, der.length - 10), Buffer.concat([der, Buffer.from([0])])]) {
    err = t.throws(() => new CertStore([], { ca: CA(), crl: bad }), { instanceOf: SecurityError });
    t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
    t.regex(err!.message, /Invalid CRL given as bytes: could not parse it/);
  }
  err = t.throws(() => new CertStore([], { ca: Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n') }), { instanceOf: SecurityError });
  t.regex(err!.message, /Invalid CA certificate given as bytes: could not parse it/);
});

test('FSCertStore: the constructor refuses a directory with a certificate the CA did not issue', (t) => {
  const dir = storeDir(['good', 'stranger']);
  refused(t, () => new FSCertStore(dir, { ca: CA() }), 'stranger', /not issued by a trusted CA/);
  const ok = new FSCertStore(storeDir(['good', 'deep']), { ca: CA(), intermediates: certPath(pki, 'inter') });
  t.is(ok.size, 2);
  // add() on an FSCertStore checks too.
  refused(t, () => ok.add(cert('self')), 'self', /not issued by a trusted CA/);
});

test('FSCertStore: a reload with a new CRL takes the revoked certificate out, though the reload fails', (t) => {
  const dir = storeDir(['good', 'revoked']);
  const crl = join(root, 'current.crl.pem');
  copyFileSync(crlPath(pki, 'crl_empty'), crl);
  const store = new FSCertStore(dir, { ca: CA(), crl });
  t.is(store.size, 2);
  const reloads: CertStoreReload[] = [];
  store.on('reload', (r) => reloads.push(r));
  // The CA publishes a CRL revoking serial 11.
  copyFileSync(crlPath(pki, 'crl'), crl);
  refused(t, () => store.reload(), 'revoked', /it is revoked/);
  t.deepEqual([...store].map((c) => c.id), [id('good')]);
  t.false(store.has(id('revoked')));
  t.is(reloads.length, 1);
  t.deepEqual(reloads[0]!.removed, [id('revoked')]);
  // The operator removes the revoked certificate's file: the reload succeeds.
  rmSync(join(dir, 'revoked.pem'));
  const r = store.reload();
  t.deepEqual(r.ids, [id('good')]);
  // A stranger's certificate dropped into the directory is refused, the store kept.
  copyFileSync(certPath(pki, 'stranger'), join(dir, 'stranger.pem'));
  refused(t, () => store.reload(), 'stranger', /not issued by a trusted CA/);
  t.deepEqual([...store].map((c) => c.id), [id('good')]);
});

test('FSCertStore: a watch reload picks up a new CRL and takes the revoked certificate out', async (t) => {
  t.timeout(30000);
  const dir = storeDir(['good', 'revoked']);
  const crl = join(root, 'watched.crl.pem');
  copyFileSync(crlPath(pki, 'crl_empty'), crl);
  const store = new FSCertStore(dir, { ca: CA(), crl, watch: { interval: 50, debounce: 10 } });
  try {
    const failed = new Promise<SecurityError>((resolve) => store.once('error', resolve));
    copyFileSync(crlPath(pki, 'crl'), crl);
    const err = await failed;
    t.is(err.code, 'ERR_INVALID_CERTIFICATE');
    t.regex(err.message, /refused: it is revoked/);
    t.false(store.has(id('revoked')));
    t.true(store.has(id('good')));
  } finally {
    store.close();
  }
});

test('setupSecurity: security_cert_store_ca / _crl; the error an operator sees at start; good messages verify', (t) => {
  const conf = (store: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    task_serializer: 'auth',
    accept_content: ['auth'],
    security_key: keyPath(pki, 'good'),
    security_certificate: certPath(pki, 'good'),
    security_cert_store: store,
    security_cert_store_ca: CA(),
    ...extra,
  });
  // A store directory holding a certificate the CA did not issue: start fails.
  const bad = storeDir(['good', 'stranger']);
  refused(t, () => setupSecurity(conf(bad)), 'stranger', /not issued by a trusted CA/);
  // A revoked one, with the CRL setting.
  refused(t, () => setupSecurity(conf(storeDir(['good', 'revoked']), { security_cert_store_crl: [crlPath(pki, 'crl')] })), 'revoked', /revoked/);
  t.throws(() => setupSecurity(conf(bad, { security_cert_store_ca: null, security_cert_store_crl: crlPath(pki, 'crl') })), {
    instanceOf: ImproperlyConfigured,
  });
  // A store of CA-issued certificates: the signer's messages verify, a stranger's do not.
  const s = setupSecurity(conf(storeDir(['good', 'deep']), { security_cert_store_intermediates: certPath(pki, 'inter'), security_cert_store_crl: crlPath(pki, 'crl') }));
  t.deepEqual(s.deserialize(s.serialize({ hello: 'world' })), { hello: 'world' });
  const deep = new SecureSerializer({ key: new PrivateKey(readFileSync(keyPath(pki, 'deep'))), cert: cert('deep'), store: s.store });
  t.deepEqual(s.deserialize(deep.serialize([1, 2])), [1, 2]);
  const stranger = new SecureSerializer({
    key: new PrivateKey(readFileSync(keyPath(pki, 'stranger'))),
    cert: cert('stranger'),
    store: new CertStore([cert('stranger')]),
  });
  const err = t.throws(() => s.deserialize(stranger.serialize({ hello: 'world' })), { instanceOf: SecurityError });
  t.is(err?.code, 'ERR_UNKNOWN_CERTIFICATE');
});

test('FSCertStore with a glob: the CA file may sit beside the certificates under another name', (t) => {
  const dir = join(root, 'globbed');
  mkdirSync(dir);
  copyFileSync(certPath(pki, 'good'), join(dir, 'good.cert.pem'));
  copyFileSync(certPath(pki, 'ca'), join(dir, 'ca.ca.pem'));
  const store = new FSCertStore(join(dir, '*.cert.pem'), { ca: join(dir, 'ca.ca.pem') });
  t.deepEqual([...store].map((c) => c.id), [id('good')]);
});
