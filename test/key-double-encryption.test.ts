/**
 * An `ENCRYPTED PRIVATE KEY` block that also has `Proc-Type: 4,ENCRYPTED` /
 * `DEK-Info` headers: AWS-LC asks for the password twice (legacy layer, then
 * PKCS#8). The native key reader once handed it the `openssl` crate's
 * one-shot callback, which panicked inside C on the second call: SIGABRT.
 * Both layers take the one password, on both backends; run in a child
 * process, so that an abort fails this test instead of killing ava.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as fx from './helpers/fixtures.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** `EVP_BytesToKey(MD5, count 1)`, as OpenSSL's legacy PEM encryption derives its key. */
function bytesToKey(keyLen: number, pass: Buffer, salt: Buffer): Buffer {
  let out = Buffer.alloc(0);
  let prev = Buffer.alloc(0);
  while (out.length < keyLen) {
    prev = crypto.createHash('md5').update(prev).update(pass).update(salt).digest();
    out = Buffer.concat([out, prev]);
  }
  return out.subarray(0, keyLen);
}

const item = fx.key('rsa1024.pkcs8-enc');
const password = item.password!;
const inner = Buffer.from(fx.pemOf(item)).toString('latin1');
const der = Buffer.from(/-----BEGIN ENCRYPTED PRIVATE KEY-----([^-]+)-----END/.exec(inner)![1]!.replace(/\s+/g, ''), 'base64');

function doubled(cipher: 'aes-128-cbc' | 'aes-256-cbc' | 'des-ede3-cbc', name: string): string {
  const [keyLen, ivLen] = cipher === 'aes-128-cbc' ? [16, 16] : cipher === 'aes-256-cbc' ? [32, 16] : [24, 8];
  const iv = crypto.randomBytes(ivLen);
  const c = crypto.createCipheriv(cipher, bytesToKey(keyLen, Buffer.from(password), iv.subarray(0, 8)), iv);
  const body = Buffer.concat([c.update(der), c.final()]).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return (
    '-----BEGIN ENCRYPTED PRIVATE KEY-----\n' +
    `Proc-Type: 4,ENCRYPTED\nDEK-Info: ${name},${iv.toString('hex').toUpperCase()}\n\n${body}\n` +
    '-----END ENCRYPTED PRIVATE KEY-----\n'
  );
}

/** Loads `pem` with each password in a fresh process on `backend`: what each gave, one line each. */
function load(backend: 'native' | 'js', pem: string, passwords: (string | null)[]): Promise<{ code: number | null; signal: string | null; out: string[] }> {
  const code = `
import { PrivateKey, SecurityError } from 'celery-sign';
const pem = ${JSON.stringify(pem)};
for (const pw of ${JSON.stringify(passwords)}) {
  try {
    const k = new PrivateKey(pem, pw);
    console.log('ok ' + k.bits + ' ' + k.sign(Buffer.from('x')).length);
  } catch (e) {
    console.log((e instanceof SecurityError ? e.code : 'untyped ' + e.name) + ' ' + e.message);
  }
}`;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', code],
      { cwd: ROOT, timeout: 60_000, env: { ...process.env, CELERY_SIGN_BACKEND: backend } },
      (err, stdout) => {
        const e = err as (Error & { code?: number; signal?: string }) | null;
        resolve({ code: e ? (e.code ?? null) : 0, signal: e?.signal ?? null, out: stdout.trim().split('\n') });
      },
    );
  });
}

for (const [cipher, name] of [
  ['aes-128-cbc', 'AES-128-CBC'],
  ['aes-256-cbc', 'AES-256-CBC'],
  ['des-ede3-cbc', 'DES-EDE3-CBC'],
] as const) {
  test(`${name} over PBES2: both layers decrypt with the one password, no abort, both backends alike`, async (t) => {
    const pem = doubled(cipher, name);
    const [native, js] = await Promise.all([
      load('native', pem, [password, 'wrong', null]),
      load('js', pem, [password, 'wrong', null]),
    ]);
    t.deepEqual({ code: native.code, signal: native.signal }, { code: 0, signal: null }, native.out.join('\n'));
    t.is(native.out[0], 'ok 1024 128');
    t.regex(native.out[1]!, /^ERR_INVALID_KEY Invalid private key: could not decrypt/);
    t.regex(native.out[2]!, /^ERR_INVALID_KEY Invalid private key: the private key is encrypted but no password was given/);
    t.deepEqual(js, native);
  });
}
