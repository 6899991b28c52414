/**
 * SecureSerializer: every method, every refusal with its code, and batches
 * that keep each result in its place.
 */
import test from 'ava';
import { createPrivateKey } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import {
  Certificate,
  CertStore,
  ImproperlyConfigured,
  PrivateKey,
  SecureSerializer,
  SecurityError,
  type DeserializeResult,
  type SecurityErrorCode,
} from 'celery-sign';
import * as fx from './helpers/fixtures.js';
import { pack54, pack55, pkcs1Sign, pssSign, unpack55 } from './helpers/payloads.js';

const keyPem = fx.pemOf(fx.key('rsa2048.pkcs8'));
const key = new PrivateKey(keyPem);
const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
const other = new Certificate(fx.pemOf(fx.cert('rsa3072')));
const otherKey = new PrivateKey(fx.pemOf(fx.key('rsa3072.pkcs8')));
const nodeKey = createPrivateKey(keyPem);
const store = new CertStore([cert, other]);
const s = new SecureSerializer({ key, cert, store });
const s54 = new SecureSerializer({ key, cert, store, wireFormat: 'celery-5.4' });

const value = { task: 'tasks.add', args: [1, 2.5, 'ü✓'], kwargs: { nested: [null, true] } };

test('round trips through every method', async (t) => {
  const p = s.serialize(value);
  t.regex(p, /^[A-Za-z0-9+/]+=*$/);
  t.deepEqual(s.deserialize(p), value);
  t.deepEqual(s.deserialize(Buffer.from(p)), value);
  t.deepEqual(await s.deserializeAsync(p), value);
  t.deepEqual(s.deserialize(await s.serializeAsync(value)), value);
  const many = await s.serializeMany([value, 1, 'two', [3]]);
  t.is(many.length, 4);
  const back = await s.deserializeMany(many);
  t.deepEqual(
    back.map((r) => (r.ok ? r.value : r.error)),
    [value, 1, 'two', [3]],
  );
  t.true(back.every((r) => r.ok && r.signer === cert.id));
  t.deepEqual(await s.deserializeMany(many.map((m) => Buffer.from(m))), back);
  t.deepEqual(await s.serializeMany([]), []);
  t.deepEqual(await s.deserializeMany([]), []);
});

test('serializeMany: a large batch goes in chunks, in order, a chunk of mixed content types one by one, a bad item failing the call', async (t) => {
  const raw = new SecureSerializer({ key, cert, store, serializer: 'raw' });
  // 1000 items: four chunks; the third holds the one Buffer (content encoding binary, not utf-8).
  const items: Array<string | Buffer> = Array.from({ length: 1000 }, (_, i) => `item ${i}`);
  items[700] = Buffer.from([0xff, 0x00, 0x01]);
  const payloads = await raw.serializeMany(items);
  t.is(payloads.length, 1000);
  const back = await raw.deserializeMany(payloads);
  t.true(back.every((r) => r.ok));
  t.deepEqual(
    back.map((r) => (r.ok ? Buffer.from(r.value as string | Buffer).toString('latin1') : '')),
    items.map((v) => Buffer.from(v).toString('latin1')),
  );
  t.true(Buffer.isBuffer((back[700] as { value: unknown }).value));
  // An item that cannot be encoded fails the whole call, with nothing left unobserved.
  const bad: unknown[] = [...items];
  bad[900] = 42;
  await t.throwsAsync(raw.serializeMany(bad), { instanceOf: TypeError, message: /raw serializer takes a string or bytes/ });
});

test('reads both wire formats whatever it writes, and writes the one asked for', async (t) => {
  const p54 = s54.serialize(value);
  const p55 = s.serialize(value);
  t.deepEqual(s.deserialize(p54), value);
  t.deepEqual(s54.deserialize(p55), value);
  const raw54 = Buffer.from(p54, 'base64');
  t.true(raw54.subarray(0, cert.id.length).equals(Buffer.from(cert.id)));
  t.deepEqual(unpack55(p55)[0]!.toString(), Buffer.from(cert.id).toString('base64'));
  const mixed = await s.deserializeMany([p54, p55, ...(await s54.serializeMany([1, 2]))]);
  t.deepEqual(
    mixed.map((r) => r.ok && r.value),
    [value, value, 1, 2],
  );
});

test('the signature has the maximum salt length, and any salt length verifies', (t) => {
  const [, sigB64] = unpack55(s.serialize('x'));
  const sig = Buffer.from(sigB64!.toString(), 'base64');
  const body = Buffer.from('"x"');
  t.notThrows(() => cert.verify(body, sig));
  for (const salt of [0, 20, 32, 222]) {
    const p = pack55(cert.id, pssSign(nodeKey, body, salt), 'application/json', 'utf-8', body);
    t.is(s.deserialize(p), 'x', `salt ${salt}`);
  }
});

const good = (): string => s.serialize({ ok: 1 });

function mutate(payload: string, fn: (raw: Buffer) => Buffer): string {
  return fn(Buffer.from(payload, 'base64')).toString('base64');
}

const refusals: Array<[string, () => string | Buffer, SecurityErrorCode]> = [
  [
    'flipped signature bit',
    () => {
      const f = unpack55(good());
      const sig = Buffer.from(f[1]!.toString(), 'base64');
      sig[100] = sig[100]! ^ 0x10;
      return pack55(cert.id, sig, 'application/json', 'utf-8', f[4]!);
    },
    'ERR_BAD_SIGNATURE',
  ],
  ['tampered body', () => mutate(good(), (r) => Buffer.concat([r.subarray(0, -2), Buffer.from('2}')])), 'ERR_BAD_SIGNATURE'],
  ['truncated body', () => mutate(good(), (r) => r.subarray(0, -1)), 'ERR_BAD_SIGNATURE'],
  ['body cut inside the fields', () => mutate(good(), (r) => r.subarray(0, 300)), 'ERR_MALFORMED_PAYLOAD'],
  ['unknown signer', () => new SecureSerializer({ key, cert: new Certificate(fx.pemOf(fx.cert('serial-1'))) }).serialize(1), 'ERR_UNKNOWN_CERTIFICATE'],
  ['signer id of another certificate', () => new SecureSerializer({ key: otherKey, cert }).serialize(1), 'ERR_BAD_SIGNATURE'],
  ['wrong digest', () => new SecureSerializer({ key, cert, digest: 'sha512' }).serialize(1), 'ERR_BAD_SIGNATURE'],
  ['not base64', () => 'this is not base64!', 'ERR_MALFORMED_PAYLOAD'],
  ['non-ASCII text', () => good().slice(0, 20) + 'é' + good().slice(21), 'ERR_MALFORMED_PAYLOAD'],
  ['empty', () => '', 'ERR_MALFORMED_PAYLOAD'],
  ['too few fields', () => Buffer.from(`${Buffer.from(cert.id).toString('base64')}\x00\x01abc`).toString('base64'), 'ERR_MALFORMED_PAYLOAD'],
  ['no separator', () => Buffer.from('just some text').toString('base64'), 'ERR_MALFORMED_PAYLOAD'],
  ['PKCS#1 v1.5 signature', () => pack55(cert.id, pkcs1Sign(nodeKey, '{}'), 'application/json', 'utf-8', '{}'), 'ERR_BAD_SIGNATURE'],
  ['signature of the wrong length', () => pack55(cert.id, Buffer.alloc(100, 7), 'application/json', 'utf-8', '{}'), 'ERR_BAD_SIGNATURE'],
  ['old format, signature cut short', () => pack54(cert.id, Buffer.alloc(10, 7), 'application/json', 'utf-8', '{}'), 'ERR_MALFORMED_PAYLOAD'],
  [
    'inner type swapped to pickle',
    () => pack55(cert.id, pssSign(nodeKey, 'x', 32), 'application/x-python-serialize', 'binary', 'x'),
    'ERR_CONTENT_DISALLOWED',
  ],
  ['inner type swapped to yaml', () => pack55(cert.id, pssSign(nodeKey, 'x', 32), 'application/x-yaml', 'utf-8', 'x'), 'ERR_CONTENT_DISALLOWED'],
  ['inner type not accepted', () => pack55(cert.id, pssSign(nodeKey, 'x', 32), 'text/html', 'utf-8', 'x'), 'ERR_CONTENT_DISALLOWED'],
  ['body that is not JSON', () => pack55(cert.id, pssSign(nodeKey, '{nope', 32), 'application/json', 'utf-8', '{nope'), 'ERR_DECODE'],
];

for (const [name, make, code] of refusals) {
  test(`refuses: ${name} -> ${code}`, async (t) => {
    const payload = make();
    t.throws(() => s.deserialize(payload), { instanceOf: SecurityError, code });
    await t.throwsAsync(s.deserializeAsync(payload), { instanceOf: SecurityError, code });
    const [r] = await s.deserializeMany([payload]);
    t.false(r!.ok);
    if (!r!.ok) {
      t.true(r!.error instanceof SecurityError);
      t.is(r!.error.code, code);
      t.is(r!.error.name, 'SecurityError');
    }
  });
}

test('pickle and yaml stay refused even when listed in accept', (t) => {
  const lenient = new SecureSerializer({ store, accept: ['json', 'pickle', 'yaml', 'application/x-python-serialize'] });
  const p = pack55(cert.id, pssSign(nodeKey, 'x', 32), 'application/x-python-serialize', 'binary', 'x');
  t.throws(() => lenient.deserialize(p), { code: 'ERR_CONTENT_DISALLOWED' });
  t.false(lenient.accept.has('application/x-python-serialize'));
  t.true(lenient.accept.has('application/json'));
});

test('raw bodies come back as kombu returns them', async (t) => {
  const raw = new SecureSerializer({ key, cert, store, serializer: 'raw' });
  const bytes = Buffer.from([0, 1, 2, 0xff, 0, 1]);
  const p = raw.serialize(bytes);
  const back = s.deserialize(p);
  t.true(back instanceof Uint8Array);
  t.deepEqual(Buffer.from(back as Uint8Array), bytes);
  const [r] = await s.deserializeMany([p]);
  t.true(r!.ok && Buffer.from(r!.value as Uint8Array).equals(bytes));
  // A text body with encoding utf-8 is decoded to a string, as kombu does.
  t.is(s.deserialize(raw.serialize('plain ✓')), 'plain ✓');
  // The separator inside a body: fine in the 5.5 format, refused when writing 5.4.
  const sep = Buffer.from('a\x00\x01b');
  t.deepEqual(Buffer.from(s.deserialize(raw.serialize(sep)) as Uint8Array), sep);
  const raw54 = new SecureSerializer({ key, cert, serializer: 'raw', wireFormat: 'celery-5.4' });
  t.throws(() => raw54.serialize(sep), { code: 'ERR_MALFORMED_PAYLOAD' });
});

test('oversize payloads are refused before decoding', async (t) => {
  const small = new SecureSerializer({ key, cert, store, maxPayloadSize: 1000 });
  const big = small.serialize('y'.repeat(2000));
  t.throws(() => small.deserialize(big), { code: 'ERR_PAYLOAD_TOO_LARGE' });
  const [r] = await small.deserializeMany([big]);
  t.is(!r!.ok && r!.error.code, 'ERR_PAYLOAD_TOO_LARGE');
  t.is(small.deserialize(small.serialize('ok')), 'ok');
});

test('an expired certificate in the store refuses at verification', (t) => {
  const expired = new Certificate(fx.pemOf(fx.cert('expired')));
  const withExpired = new SecureSerializer({ store: new CertStore([expired]) });
  // A producer refuses to sign with it: the payload is packed by hand, as Celery's _pack.
  t.throws(() => new SecureSerializer({ key, cert: expired }).serialize(1), { code: 'ERR_CERTIFICATE_EXPIRED' });
  const body = Buffer.from('1');
  const sep = Buffer.from('\x00\x01');
  const b64 = (b: Buffer | string): Buffer => Buffer.from(Buffer.from(b).toString('base64'));
  const fields = [b64(expired.id), b64(key.sign(body)), Buffer.from('application/json'), Buffer.from('utf-8'), body];
  const p = Buffer.concat(fields.flatMap((f, i) => (i === 0 ? [f] : [sep, f]))).toString('base64');
  t.throws(() => withExpired.deserialize(p), { code: 'ERR_CERTIFICATE_EXPIRED' });
});

test('a certificate added to the store later is seen by the serializer', (t) => {
  const growing = new CertStore();
  const v = new SecureSerializer({ store: growing });
  const p = s.serialize(1);
  t.throws(() => v.deserialize(p), { code: 'ERR_UNKNOWN_CERTIFICATE' });
  growing.add(cert);
  t.is(v.deserialize(p), 1);
});

test('a batch of 10,000 mixed payloads: exactly the bad ones fail, in order', async (t) => {
  const goods = await s.serializeMany(Array.from({ length: 50 }, (_, i) => ({ i })));
  const olds = await s54.serializeMany(Array.from({ length: 50 }, (_, i) => ({ old: i })));
  const forged = new SecureSerializer({ key: otherKey, cert }).serialize({ forged: true });
  const unknown = new SecureSerializer({ key, cert: new Certificate(fx.pemOf(fx.cert('serial-1'))) }).serialize(0);
  const payloads: string[] = [];
  const expected: Array<unknown | string> = [];
  for (let i = 0; i < 10_000; i++) {
    const r = (i * 7919) % 10;
    if (r < 5) {
      payloads.push(goods[i % 50]!);
      expected.push({ i: i % 50 });
    } else if (r < 7) {
      payloads.push(olds[i % 50]!);
      expected.push({ old: i % 50 });
    } else if (r === 7) {
      payloads.push(forged);
      expected.push('ERR_BAD_SIGNATURE');
    } else if (r === 8) {
      payloads.push(unknown);
      expected.push('ERR_UNKNOWN_CERTIFICATE');
    } else {
      payloads.push(`garbage-${i}`);
      expected.push('ERR_MALFORMED_PAYLOAD');
    }
  }
  const results: DeserializeResult[] = await s.deserializeMany(payloads);
  t.is(results.length, payloads.length);
  const got = results.map((r) => (r.ok ? r.value : r.error.code));
  t.deepEqual(got, expected);
  // Buffers give the same answers.
  const asBuffers = await s.deserializeMany(payloads.slice(0, 500).map((p) => Buffer.from(p)));
  t.deepEqual(
    asBuffers.map((r) => (r.ok ? r.value : r.error.code)),
    expected.slice(0, 500),
  );
});

test('batches run off the event loop', async (t) => {
  const payloads = await s.serializeMany(Array.from({ length: 64 }, (_, i) => i));
  const batch = Array.from({ length: 4096 }, (_, i) => payloads[i % 64]!);
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const results = await s.deserializeMany(batch);
  clearInterval(timer);
  h.disable();
  t.true(results.every((r) => r.ok));
  t.true(ticks > 5, `the event loop ran ${ticks} timers while the batch verified`);
});

test('configuration mistakes are ImproperlyConfigured', (t) => {
  t.throws(() => new SecureSerializer({ store, digest: 'md5' as 'sha256' }), { instanceOf: ImproperlyConfigured, code: 'ERR_IMPROPERLY_CONFIGURED' });
  t.throws(() => new SecureSerializer({ store, wireFormat: 'celery-4' as 'celery-5.5' }), { instanceOf: ImproperlyConfigured });
  t.throws(() => new SecureSerializer({ store, serializer: 'nope' }), { instanceOf: ImproperlyConfigured });
  t.throws(() => new SecureSerializer({ store }).serialize(1), { instanceOf: ImproperlyConfigured });
  t.throws(() => new SecureSerializer({ key, cert }).deserialize('x'), { instanceOf: ImproperlyConfigured });
  t.is(new SecureSerializer({ store, digest: 'SHA256' as 'sha256' }).digest, 'sha256');
});
