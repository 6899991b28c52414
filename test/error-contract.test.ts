/**
 * One error contract: the core's code list (Rust `ErrorCode`, generated into
 * src/backend/codes.ts) is what the binding reports and what the facade's
 * batch status numbers mean; a bad digest name is a configuration error
 * (ImproperlyConfigured) on every path, never a key refusal.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Certificate,
  ERROR_CODES,
  ImproperlyConfigured,
  PrivateKey,
  registerAuth,
  SecureSerializer,
  SecurityError,
  setupSecurity,
  type Digest,
} from 'celery-sign';
import nativeBinding from '../native/binding.cjs';
import { CORE_ERROR_CODES } from '../src/backend/codes.js';
import { jsBinding } from '../src/backend/js/index.js';
import * as fx from './helpers/fixtures.js';

const keyPem = Buffer.from(fx.pemOf(fx.key('rsa2048.pkcs8'))).toString('utf8');
const certPem = Buffer.from(fx.pemOf(fx.cert('rsa2048'))).toString('utf8');
const BAD: unknown[] = ['md5', 'sha3-256', '', 'sha256 ', 'SHA-256', 'ſha256', 42];

test('the binding, the fallback and the facade share the core list, ERR_INTERNAL last', (t) => {
  t.deepEqual(nativeBinding.errorCodes(), [...CORE_ERROR_CODES]);
  t.deepEqual(jsBinding.errorCodes(), [...CORE_ERROR_CODES]);
  t.is(CORE_ERROR_CODES.at(-1), 'ERR_INTERNAL');
  t.deepEqual(ERROR_CODES.slice(0, CORE_ERROR_CODES.length), [...CORE_ERROR_CODES]);
});

function isConfigError(t: { true(v: boolean, m?: string): void; is(a: unknown, b: unknown, m?: string): void }, f: () => unknown, label: string): void {
  try {
    f();
    t.true(false, `${label}: no error`);
  } catch (e) {
    t.true(e instanceof ImproperlyConfigured, `${label}: ${String(e)}`);
    t.is((e as ImproperlyConfigured).code, 'ERR_IMPROPERLY_CONFIGURED', label);
    t.true(!(e instanceof SecurityError), label);
  }
}

test('a bad digest name is ImproperlyConfigured: PrivateKey.sign, Certificate.verify, SecureSerializer, registerAuth, setupSecurity', (t) => {
  const key = new PrivateKey(keyPem);
  const cert = new Certificate(certPem);
  const sig = key.sign(Buffer.from('x'));
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-digest-'));
  try {
    writeFileSync(join(dir, 'key.pem'), keyPem);
    writeFileSync(join(dir, 'cert.pem'), certPem);
    mkdirSync(join(dir, 'store'));
    writeFileSync(join(dir, 'store', 'cert.pem'), certPem);
    for (const d of BAD) {
      const digest = d as Digest;
      const label = JSON.stringify(d);
      isConfigError(t, () => key.sign(Buffer.from('x'), digest), `sign ${label}`);
      isConfigError(t, () => cert.verify(Buffer.from('x'), sig, digest), `verify ${label}`);
      isConfigError(t, () => new SecureSerializer({ key, cert, digest }), `SecureSerializer ${label}`);
      isConfigError(t, () => registerAuth({ key: keyPem, cert: certPem, store: join(dir, 'store'), digest }), `registerAuth ${label}`);
      // (An empty security_digest is unset there, as Celery's `or` reads it.)
      if (d === '') continue;
      isConfigError(
        t,
        () =>
          setupSecurity(
            {
              task_serializer: 'auth',
              result_serializer: 'auth',
              accept_content: ['auth'],
              security_key: join(dir, 'key.pem'),
              security_certificate: join(dir, 'cert.pem'),
              security_cert_store: join(dir, 'store'),
              security_digest: d,
            },
            {},
          ),
        `setupSecurity ${label}`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Celery's names, any case, still work.
  t.is(key.sign(Buffer.from('x'), 'SHA512' as Digest).length, 256);
});

test('the binding itself throws a bad digest as a bad argument (InvalidArg), never ERR_INVALID_KEY', (t) => {
  for (const b of [nativeBinding, jsBinding]) {
    const key = new b.NativePrivateKey(Buffer.from(keyPem), null);
    const cert = new b.NativeCertificate(Buffer.from(certPem));
    const sig = key.sign(Buffer.from('x'), 'sha256');
    for (const f of [
      () => key.sign(Buffer.from('x'), 'md5'),
      () => cert.verify(Buffer.from('x'), sig, 'md5'),
      () => new b.NativeSerializer(key, cert, null, 'md5', 'celery-5.5', 1024),
    ]) {
      const e = t.throws(f) as Error & { code?: string };
      t.is(e.code, 'InvalidArg');
      t.is(e.message, 'unsupported digest "md5": use sha1, sha224, sha256, sha384 or sha512');
    }
  }
});

test('a binary whose code list is not this package’s is refused, not mapped by position', async (t) => {
  const { checkedCodes, STATUS_CODES } = await import('../src/native.js');
  t.deepEqual([...STATUS_CODES], [...CORE_ERROR_CODES]);
  t.deepEqual([...checkedCodes([...CORE_ERROR_CODES])], [...CORE_ERROR_CODES]);
  // One code fewer (a binary from before ERR_INTERNAL), or two swapped.
  t.throws(() => checkedCodes(CORE_ERROR_CODES.slice(0, -1)), { message: /out of step/ });
  const swapped = [...CORE_ERROR_CODES];
  [swapped[0], swapped[1]] = [swapped[1]!, swapped[0]!];
  t.throws(() => checkedCodes(swapped), { message: /out of step/ });
});

test('the wire layer adds its codes after the core’s, and the error table of the guide (EN, zh-CN) lists every code', async (t) => {
  t.deepEqual(ERROR_CODES.slice(CORE_ERROR_CODES.length), ['ERR_REPLAYED', 'ERR_HEADER_MISMATCH', 'ERR_NOT_AUTHORIZED', 'ERR_IMPROPERLY_CONFIGURED']);
  const { readFileSync } = await import('node:fs');
  for (const doc of ['docs/errors.md', 'docs/zh-CN/errors.md']) {
    const text = readFileSync(new URL(`../${doc}`, import.meta.url), 'utf8');
    for (const code of ERROR_CODES) t.true(text.includes(`| \`${code}\` |`), `${doc} lists ${code}`);
  }
});
