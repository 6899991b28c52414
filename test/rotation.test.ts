/**
 * Key rotation without a restart (issue 12, item 3), on the backend of this
 * pass (run again with CELERY_SIGN_BACKEND=js for the node:crypto fallback):
 * FSCertStore.reload() swaps the store in one step (a batch in flight gets
 * all-old or all-new answers), a failed reload keeps the old certificates,
 * a watch picks up new files (fs.watch and its polling fallback), onExpired:
 * 'skip', the validity period (notAfter and notBefore) checked at verify
 * time on every path and both wire formats, and a producer whose own
 * certificate is outside its validity period refusing to sign. Keys and
 * certificates are made by the test with Python `cryptography`.
 */
import test from 'ava';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Certificate,
  FSCertStore,
  PrivateKey,
  SecureSerializer,
  SecurityError,
  type CertExpiredEvent,
  type CertStoreReload,
  type WireFormat,
} from 'celery-sign';
import { certPath, keyPath, makeCerts, nowSeconds } from './helpers/certgen.js';

const FORMATS: WireFormat[] = ['celery-5.5', 'celery-5.4'];
const DAY = 86400;
let root: string;
/** Made once: keys a, b, c and their certificates, valid now; one expired; one not valid for a long while. */
let pki: string;
const t0 = nowSeconds();

test.before(() => {
  root = mkdtempSync(join(tmpdir(), 'celery-sign-rotation-'));
  pki = join(root, 'pki');
  makeCerts(pki, ['a', 'b', 'c'], [
    { name: 'a', key: 'a', serial: 1, notBefore: t0 - DAY, notAfter: t0 + 30 * DAY },
    { name: 'b', key: 'b', serial: 2, notBefore: t0 - DAY, notAfter: t0 + 30 * DAY },
    { name: 'c', key: 'c', serial: 3, notBefore: t0 - DAY, notAfter: t0 + 30 * DAY },
    { name: 'a-dup', key: 'a', cn: 'a', serial: 1, notBefore: t0 - DAY, notAfter: t0 + 20 * DAY },
    { name: 'expired', key: 'c', serial: 4, notBefore: t0 - 30 * DAY, notAfter: t0 - DAY },
    { name: 'future', key: 'c', serial: 5, notBefore: t0 + 30 * DAY, notAfter: t0 + 60 * DAY },
  ]);
});

test.after.always(() => {
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh store directory holding the named certificates of `pki`. */
function storeDir(...names: string[]): string {
  const dir = join(root, `store-${n++}`);
  mkdirSync(dir);
  for (const name of names) copyFileSync(certPath(pki, name), join(dir, `${name}.pem`));
  return dir;
}

function signer(name: string, wireFormat: WireFormat = 'celery-5.5', dir = pki): SecureSerializer {
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(keyPath(dir, name.replace(/-.*/, '')))),
    cert: new Certificate(readFileSync(certPath(dir, name))),
    wireFormat,
  });
}

const cert = (name: string, dir = pki): Certificate => new Certificate(readFileSync(certPath(dir, name)));

/** Resolves once `check` holds (polled); throws after `ms`. Not a timed assertion: the wait for a file-system event or a clock. */
async function until(check: () => boolean, ms = 20000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as SecurityError).code;
  }
}

test('reload() adds and removes certificates, reports the change, and every path sees the new store', async (t) => {
  const dir = storeDir('a');
  const store = new FSCertStore(dir);
  const v = new SecureSerializer({ store });
  const pa = signer('a').serialize({ from: 'a' });
  const pb = signer('b').serialize({ from: 'b' });
  t.deepEqual(v.deserialize(pa), { from: 'a' });
  t.is(codeOf(() => v.deserialize(pb)), 'ERR_UNKNOWN_CERTIFICATE');

  const events: CertStoreReload[] = [];
  store.on('reload', (e) => events.push(e));
  // Nothing changed: no swap, no event.
  t.like(store.reload(), { added: [], removed: [], replaced: [], changed: false, source: 'call' });
  t.is(events.length, 0);

  copyFileSync(certPath(pki, 'b'), join(dir, 'b.pem'));
  unlinkSync(join(dir, 'a.pem'));
  const r = store.reload();
  t.deepEqual(r.added, [cert('b').id]);
  t.deepEqual(r.removed, [cert('a').id]);
  t.deepEqual(r.ids, [cert('b').id]);
  t.true(r.changed);
  t.deepEqual(events, [r]);
  t.is(store.size, 1);
  t.true(store.has(cert('b').id));
  t.false(store.has(cert('a').id));

  t.deepEqual(v.deserialize(pb), { from: 'b' });
  t.deepEqual(await v.deserializeAsync(pb), { from: 'b' });
  t.is(codeOf(() => v.deserialize(pa)), 'ERR_UNKNOWN_CERTIFICATE');
  await t.throwsAsync(v.deserializeAsync(pa), { code: 'ERR_UNKNOWN_CERTIFICATE' });
  for (const size of [1, 10, 600]) {
    const batch = await v.deserializeMany(Array.from({ length: size }, (_, i) => (i % 2 ? pa : pb)));
    t.true(batch.every((x, i) => (i % 2 ? !x.ok && x.error.code === 'ERR_UNKNOWN_CERTIFICATE' : x.ok)), `batch of ${size}`);
  }
  // Payloads carry no key material: the event neither.
  t.false(JSON.stringify(r).includes('PRIVATE'));
});

test('a batch in flight across a reload gets all-old answers; the next batch all-new', async (t) => {
  t.timeout(120000);
  const dir = storeDir('a');
  const store = new FSCertStore(dir);
  const v = new SecureSerializer({ store });
  // 1200 payloads: several chunks of the pool, two in flight, the later ones sent after awaits.
  const [fromA, fromB] = await Promise.all([
    signer('a').serializeMany(Array.from({ length: 600 }, (_, i) => i)),
    signer('b').serializeMany(Array.from({ length: 600 }, (_, i) => i)),
  ]);
  const mixed = fromA.flatMap((p, i) => [p, fromB[i]!]);
  // Replace a by b while the batch is out.
  copyFileSync(certPath(pki, 'b'), join(dir, 'b.pem'));
  unlinkSync(join(dir, 'a.pem'));
  const inFlight = v.deserializeMany(mixed);
  const asyncs = mixed.slice(0, 20).map((p) => v.deserializeAsync(p).then(() => 'ok', (e: SecurityError) => e.code));
  store.reload();
  const after = v.deserializeMany(mixed);
  const old = await inFlight;
  t.true(
    old.every((r, i) => (i % 2 === 0 ? r.ok : !r.ok && r.error.code === 'ERR_UNKNOWN_CERTIFICATE')),
    'every answer of the batch in flight is the old store\'s',
  );
  t.deepEqual(await Promise.all(asyncs), mixed.slice(0, 20).map((_, i) => (i % 2 === 0 ? 'ok' : 'ERR_UNKNOWN_CERTIFICATE')));
  const fresh = await after;
  t.true(
    fresh.every((r, i) => (i % 2 === 1 ? r.ok : !r.ok && r.error.code === 'ERR_UNKNOWN_CERTIFICATE')),
    'every answer of the batch made after is the new store\'s',
  );
});

test('a failed reload (invalid, unreadable, duplicate, expired) throws and keeps the old store', (t) => {
  const dir = storeDir('a');
  const store = new FSCertStore(dir);
  const v = new SecureSerializer({ store });
  const pa = signer('a').serialize(1);
  const events: unknown[] = [];
  store.on('reload', (e) => events.push(e));
  const cases: Array<[string, () => void, string]> = [
    ['invalid', () => writeFileSync(join(dir, 'junk.pem'), 'not a certificate'), 'ERR_INVALID_CERTIFICATE'],
    ['duplicate', () => copyFileSync(certPath(pki, 'a-dup'), join(dir, 'a-dup.pem')), 'ERR_DUPLICATE_CERTIFICATE'],
    ['expired', () => copyFileSync(certPath(pki, 'expired'), join(dir, 'expired.pem')), 'ERR_CERTIFICATE_EXPIRED'],
    ['unreadable', () => mkdirSync(join(dir, 'a-directory.pem')), 'ERR_INVALID_CERTIFICATE'],
  ];
  for (const [name, make, code] of cases) {
    copyFileSync(certPath(pki, 'b'), join(dir, 'b.pem')); // a good change alongside the bad one
    make();
    const err = t.throws(() => store.reload(), { instanceOf: SecurityError, code }, name);
    t.false(/PRIVATE|BEGIN/.test(err!.message), `${name}: no key material in the message`);
    t.deepEqual([...store].map((c) => c.id), [cert('a').id], `${name}: the old store stays`);
    t.is(v.deserialize(pa), 1, `${name}: the old certificates still verify`);
    rmSync(join(dir, 'junk.pem'), { force: true, recursive: true });
    rmSync(join(dir, 'a-dup.pem'), { force: true });
    rmSync(join(dir, 'expired.pem'), { force: true });
    rmSync(join(dir, 'a-directory.pem'), { force: true, recursive: true });
    rmSync(join(dir, 'b.pem'), { force: true });
  }
  t.is(events.length, 0);
});

test("onExpired: 'skip' leaves expired certificates out with an 'expired' event; the default refuses", async (t) => {
  const dir = storeDir('a', 'expired');
  t.throws(() => new FSCertStore(dir), { code: 'ERR_CERTIFICATE_EXPIRED' });
  t.throws(() => new FSCertStore(dir, { onExpired: 'throw' }), { code: 'ERR_CERTIFICATE_EXPIRED' });
  const store = new FSCertStore(dir, { onExpired: 'skip' });
  const seen: CertExpiredEvent[] = [];
  store.on('expired', (e) => seen.push(e));
  t.deepEqual([...store].map((c) => c.id), [cert('a').id]);
  t.deepEqual(store.skipped.map((e) => e.id), [cert('expired').id]);
  await new Promise((r) => setImmediate(r));
  t.is(seen.length, 1, 'the constructor\'s skip is reported on the next tick');
  const e = seen[0]!;
  t.is(e.id, cert('expired').id);
  t.is(e.issuer, cert('expired').issuer);
  t.regex(e.subject ?? '', /CN=expired/);
  t.is(e.notAfter.getTime(), cert('expired').notAfter.getTime());
  t.is(e.file, join(dir, 'expired.pem'));
  t.false(JSON.stringify(e).includes('BEGIN'), 'no PEM, no key material');
  // A reload skips again, and reports it again.
  const r = store.reload();
  t.deepEqual(r.skipped, [cert('expired').id]);
  t.is(seen.length, 2);
  // A payload of the skipped certificate's signer is refused as unknown.
  t.throws(() => new FSCertStore(dir, { onExpired: 'later' as never }), { instanceOf: TypeError });
});

test('watch: fs.watch picks up a new certificate file; close() stops it', async (t) => {
  t.timeout(60000);
  const dir = storeDir('a');
  const store = new FSCertStore(dir, { watch: { interval: 60000, debounce: 20 } });
  try {
    const reloads: CertStoreReload[] = [];
    store.on('reload', (e) => reloads.push(e));
    copyFileSync(certPath(pki, 'b'), join(dir, 'b.pem'));
    await until(() => reloads.length > 0, 20000, 'a reload by fs.watch');
    t.deepEqual(reloads[0]!.added, [cert('b').id]);
    t.is(reloads[0]!.source, 'watch');
    t.true(store.has(cert('b').id));
    const v = new SecureSerializer({ store });
    t.is(await v.deserializeAsync(signer('b').serialize(7)), 7);
  } finally {
    store.close();
  }
  copyFileSync(certPath(pki, 'c'), join(dir, 'c.pem'));
  await new Promise((r) => setTimeout(r, 300));
  t.false(store.has(cert('c').id), 'closed: no more reloads');
});

test('watch: the poll finds a change fs.watch does not report (a glob below a wildcard directory)', async (t) => {
  t.timeout(60000);
  const dir = storeDir();
  mkdirSync(join(dir, 'team1'));
  copyFileSync(certPath(pki, 'a'), join(dir, 'team1', 'a.pem'));
  // fs.watch watches `dir` (not recursive): a change in dir/team1 comes only from the poll.
  const store = new FSCertStore(join(dir, '*', '*.pem'));
  const w = store.watch({ interval: 100 });
  try {
    t.is(store.size, 1);
    const reloaded = new Promise<CertStoreReload>((resolve) => store.once('reload', resolve));
    copyFileSync(certPath(pki, 'b'), join(dir, 'team1', 'b.pem'));
    const r = await reloaded;
    t.deepEqual(r.added, [cert('b').id]);
    t.is(store.size, 2);
  } finally {
    w.close();
  }
  t.true(w.closed);
});

test("watch: a failed reload emits 'error', keeps the old store, and the next change loads", async (t) => {
  t.timeout(60000);
  const dir = storeDir('a');
  const store = new FSCertStore(dir, { watch: { interval: 100, debounce: 20 } });
  try {
    const errors: SecurityError[] = [];
    store.on('error', (e) => errors.push(e));
    writeFileSync(join(dir, 'b.pem'), 'half a certificate');
    await until(() => errors.length > 0, 20000, "an 'error' event");
    t.is(errors[0]!.code, 'ERR_INVALID_CERTIFICATE');
    t.deepEqual([...store].map((c) => c.id), [cert('a').id]);
    const reloaded = new Promise<CertStoreReload>((resolve) => store.once('reload', resolve));
    copyFileSync(certPath(pki, 'b'), join(dir, 'b.pem'));
    t.deepEqual((await reloaded).added, [cert('b').id]);
  } finally {
    store.close();
  }
});

test('a watch never keeps the process alive (its timers and watcher are unref-ed)', async (t) => {
  t.timeout(60000);
  const dir = storeDir('a');
  const { spawnSync } = await import('node:child_process');
  const script = `const { FSCertStore } = require('celery-sign'); const s = new FSCertStore(${JSON.stringify(dir)}, { watch: true }); s.watch({ interval: 50 }); console.log(s.size);`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000, env: process.env });
  t.is(res.status, 0, res.stderr);
  t.is(res.stdout.trim(), '1');
});

test('expiry at verify time: a certificate that expires while in the store refuses on every path, both formats', async (t) => {
  t.timeout(60000);
  const dir = join(root, 'short');
  // Valid for 5 s from the moment it is made (not from this call: Python's start-up may be slow).
  makeCerts(dir, ['s'], [{ name: 's', key: 's', serial: 10, notBefore: t0 - DAY, notAfter: { in: 5 } }]);
  const store = new FSCertStore(join(dir, '*.cert.pem'));
  const s = cert('s', dir);
  const end = s.notAfter.getTime() / 1000;
  const payloads = FORMATS.map((f) => signer('s', f, dir).serialize({ f }));
  const readers = FORMATS.map((wireFormat) => new SecureSerializer({ store, wireFormat }));
  for (let i = 0; i < 2; i++) t.deepEqual(readers[i]!.deserialize(payloads[i]!), { f: FORMATS[i] });
  const data = Buffer.from('data');
  const sig = new PrivateKey(readFileSync(keyPath(dir, 's'))).sign(data);
  s.verify(data, sig);
  await until(() => Date.now() >= end * 1000, 20000, 'notAfter');
  for (let i = 0; i < 2; i++) {
    const r = readers[i]!;
    const p = payloads[i]!;
    const f = FORMATS[i];
    t.is(codeOf(() => r.deserialize(p)), 'ERR_CERTIFICATE_EXPIRED', `${f} deserialize`);
    await t.throwsAsync(r.deserializeAsync(p), { code: 'ERR_CERTIFICATE_EXPIRED', message: /Expired certificate/ }, `${f} deserializeAsync`);
    for (const size of [1, 10, 600]) {
      const batch = await r.deserializeMany(Array.from({ length: size }, () => p));
      t.true(batch.every((x) => !x.ok && x.error.code === 'ERR_CERTIFICATE_EXPIRED'), `${f} deserializeMany of ${size}`);
    }
  }
  t.throws(() => s.verify(data, sig), { code: 'ERR_CERTIFICATE_EXPIRED' }, 'Certificate.verify');
  // ...and the producer refuses to sign with it.
  for (const f of FORMATS) {
    const p = signer('s', f, dir);
    const err = t.throws(() => p.serialize(1), { instanceOf: SecurityError, code: 'ERR_CERTIFICATE_EXPIRED' });
    t.true(err!.message.includes(s.id), 'the message names the certificate');
    t.regex(err!.message, /has expired/);
    t.false(/BEGIN|PRIVATE/.test(err!.message));
    await t.throwsAsync(p.serializeAsync(1), { code: 'ERR_CERTIFICATE_EXPIRED' });
    await t.throwsAsync(p.serializeMany([1, 2, 3]), { code: 'ERR_CERTIFICATE_EXPIRED' });
  }
  // A reload now refuses the expired file by default (and keeps the store), or skips it.
  t.throws(() => store.reload(), { code: 'ERR_CERTIFICATE_EXPIRED' });
  t.is(store.size, 1);
  t.is(new FSCertStore(join(dir, '*.cert.pem'), { onExpired: 'skip' }).size, 0);
});

test('not-before at verify time: a certificate not valid yet loads, refuses on every path, both formats, then verifies', async (t) => {
  t.timeout(60000);
  const dir = join(root, 'soon');
  // Valid from 12 s after the moment it is made: time for the refusals below on a busy machine.
  makeCerts(dir, ['f'], [{ name: 'f', key: 'f', serial: 11, notBefore: { in: 12 }, notAfter: { in: DAY } }]);
  // Celery does not check notBefore when it loads a store; neither does celery-sign (a new
  // certificate may be deployed ahead of its validity).
  const store = new FSCertStore(join(dir, '*.cert.pem'));
  const f = cert('f', dir);
  const start = f.notBefore.getTime() / 1000;
  t.true(f.isNotYetValid());
  // The producer refuses to sign with it until it is valid.
  const producers = FORMATS.map((wf) => signer('f', wf, dir));
  const err = t.throws(() => producers[0]!.serialize(1), { code: 'ERR_CERTIFICATE_EXPIRED' });
  t.regex(err!.message, /not valid yet/);
  t.true(err!.message.includes(f.id));
  await t.throwsAsync(producers[1]!.serializeAsync(1), { code: 'ERR_CERTIFICATE_EXPIRED' });
  await t.throwsAsync(producers[0]!.serializeMany([1]), { code: 'ERR_CERTIFICATE_EXPIRED' });
  // Payloads signed by its key, packed by hand (Celery's _pack) as a producer without the check would.
  const key = new PrivateKey(readFileSync(keyPath(dir, 'f')));
  const body = Buffer.from('{"ok": 1}');
  const sep = Buffer.from([0, 1]);
  const b64 = (b: Buffer | string): Buffer => Buffer.from(Buffer.from(b).toString('base64'));
  const fields = (f55: boolean): Buffer[] => [
    f55 ? b64(f.id) : Buffer.from(f.id),
    f55 ? b64(key.sign(body)) : key.sign(body),
    Buffer.from('application/json'),
    Buffer.from('utf-8'),
    body,
  ];
  const payloads = FORMATS.map((wf) =>
    Buffer.concat(fields(wf === 'celery-5.5').flatMap((x, i) => (i === 0 ? [x] : [sep, x]))).toString('base64'),
  );
  const readers = FORMATS.map((wireFormat) => new SecureSerializer({ store, wireFormat }));
  for (let i = 0; i < 2; i++) {
    const r = readers[i]!;
    const p = payloads[i]!;
    const wf = FORMATS[i];
    const e = t.throws(() => r.deserialize(p), { code: 'ERR_CERTIFICATE_EXPIRED' }, `${wf} deserialize`);
    t.regex(e!.message, /not yet valid/);
    await t.throwsAsync(r.deserializeAsync(p), { code: 'ERR_CERTIFICATE_EXPIRED' }, `${wf} deserializeAsync`);
    // 1: the calling thread; 10: split with the native queue thread; 100: the pool.
    for (const size of [1, 10, 100]) {
      const batch = await r.deserializeMany(Array.from({ length: size }, () => p));
      t.true(batch.every((x) => !x.ok && x.error.code === 'ERR_CERTIFICATE_EXPIRED'), `${wf} deserializeMany of ${size}`);
    }
  }
  t.throws(() => f.verify(body, key.sign(body)), { code: 'ERR_CERTIFICATE_EXPIRED', message: /not yet valid/ });
  t.true(Date.now() < start * 1000, 'the refusals above were seen before notBefore (else the machine was too slow to show them)');
  await until(() => Date.now() >= start * 1000, 20000, 'notBefore');
  t.false(f.isNotYetValid());
  for (let i = 0; i < 2; i++) {
    t.deepEqual(readers[i]!.deserialize(payloads[i]!), { ok: 1 });
    t.deepEqual(await readers[i]!.deserializeAsync(payloads[i]!), { ok: 1 });
    t.true((await readers[i]!.deserializeMany(Array.from({ length: 600 }, () => payloads[i]!))).every((x) => x.ok));
  }
  f.verify(body, key.sign(body));
  t.deepEqual(readers[0]!.deserialize(producers[0]!.serialize({ now: 'valid' })), { now: 'valid' });
});

test('a future certificate in the store: loaded, its payloads refused until valid (fixture far ahead)', (t) => {
  const store = new FSCertStore(storeDir('a', 'future'));
  t.is(store.size, 2);
  t.true(store.get(cert('future').id).isNotYetValid());
  t.false(cert('a').isNotYetValid());
});
