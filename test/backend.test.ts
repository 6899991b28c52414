/**
 * Which backend runs, and what a user sees when the native binary is missing.
 *
 * `npm test` runs the whole suite twice: on the native binding, then with
 * `CELERY_SIGN_BACKEND=js` on the node:crypto fallback. The first test here
 * keeps the native pass honest: were the binary broken, the package would
 * quietly fall back and every other test would still pass.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend } from 'celery-sign';
import { cpuHasAvx2, cpuHasIfma } from './helpers/cpu.js';
import { ROOT } from './helpers/python.js';

const expected = process.env.CELERY_SIGN_BACKEND === 'js' ? 'js' : 'native';

test(`this pass runs on the ${expected} backend`, (t) => {
  t.is(backend, expected);
});

/** A copy of the package as npm would install it without its platform package: lib/ and the loader, no .node. */
function packageWithoutBinary(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-nobin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pkg = join(dir, 'node_modules', 'celery-sign');
  mkdirSync(join(pkg, 'native'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  cpSync(join(ROOT, 'lib'), join(pkg, 'lib'), { recursive: true });
  for (const f of readdirSync(join(ROOT, 'native'))) {
    if (!f.endsWith('.node')) cpSync(join(ROOT, 'native', f), join(pkg, 'native', f));
  }
  return dir;
}

/** A directory whose node_modules/celery-sign is this checkout. */
function packageAsBuilt(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-built-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'celery-sign'), 'dir');
  return dir;
}

const PROGRAM = `
const c = require('celery-sign');
const { readFileSync } = require('node:fs');
const key = new c.PrivateKey(readFileSync(process.argv[2]));
const cert = new c.Certificate(readFileSync(process.argv[3]));
const s = new c.SecureSerializer({ key, cert, store: new c.CertStore([cert]) });
console.log(JSON.stringify({ backend: c.backend, value: s.deserialize(s.serialize({ a: [1, 'two'] })) }));
`;

function run(dir: string, env: Record<string, string | undefined>) {
  const file = join(dir, 'program.cjs');
  writeFileSync(file, PROGRAM);
  const res = spawnSync(
    process.execPath,
    [file, join(ROOT, 'bench/keys/rsa2048.key.pem'), join(ROOT, 'bench/keys/rsa2048.cert.pem')],
    { cwd: dir, encoding: 'utf8', env: { ...process.env, CELERY_SIGN_BACKEND: undefined, NODE_OPTIONS: undefined, ...env } },
  );
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

test('without its binary the package falls back to node:crypto with one clear warning', (t) => {
  const dir = packageWithoutBinary(t);
  const r = run(dir, {});
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { backend: 'js', value: { a: [1, 'two'] } });
  const warnings = r.stderr.split('\n').filter((l) => l.includes('CELERY_SIGN_FALLBACK'));
  t.is(warnings.length, 1, r.stderr);
  t.regex(warnings[0]!, /linux-x64 \(glibc\)/);
  t.regex(warnings[0]!, /celery-sign-linux-x64-gnu/);
  t.regex(warnings[0]!, /node:crypto fallback/);
  t.notRegex(r.stderr, /npm has a bug/);
});

test('CELERY_SIGN_BACKEND=native without the binary fails with that message, not npm\'s', (t) => {
  const dir = packageWithoutBinary(t);
  const r = run(dir, { CELERY_SIGN_BACKEND: 'native' });
  t.not(r.status, 0);
  t.regex(r.stderr, /celery-sign: the native binary did not load on linux-x64 \(glibc\)/);
  t.regex(r.stderr, /npm install celery-sign-linux-x64-gnu/);
  t.notRegex(r.stderr, /npm has a bug/);
  t.notRegex(r.stderr, /CELERY_SIGN_FALLBACK/);
});

test('CELERY_SIGN_BACKEND=js forces the fallback, silently', (t) => {
  const r = run(packageAsBuilt(t), { CELERY_SIGN_BACKEND: 'js' });
  t.is(r.status, 0, r.stderr);
  t.is(JSON.parse(r.stdout).backend, 'js');
  t.notRegex(r.stderr, /CELERY_SIGN_FALLBACK/);
});

test('an unknown CELERY_SIGN_BACKEND is a configuration error', (t) => {
  const r = run(packageAsBuilt(t), { CELERY_SIGN_BACKEND: 'wasm' });
  t.not(r.status, 0);
  t.regex(r.stderr, /ImproperlyConfigured: CELERY_SIGN_BACKEND must be 'native', 'js' or unset, not "wasm"/);
});

test('simdKernel() names the kernel CELERY_SIGN_SIMD and the CPU choose, and is null on the fallback', (t) => {
  const dir = packageAsBuilt(t);
  const file = join(dir, 'kernel.cjs');
  writeFileSync(file, "const c = require('celery-sign'); console.log(JSON.stringify({ backend: c.backend, kernel: c.simdKernel() }));");
  const kernelWith = (env: Record<string, string | undefined>) => {
    const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', env: { ...process.env, CELERY_SIGN_BACKEND: undefined, NODE_OPTIONS: undefined, ...env } });
    t.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { backend: string; kernel: string | null };
  };
  t.deepEqual(kernelWith({ CELERY_SIGN_BACKEND: 'js' }), { backend: 'js', kernel: null });
  t.deepEqual(kernelWith({ CELERY_SIGN_SIMD: '0' }), { backend: 'native', kernel: null });
  const ifma = cpuHasIfma();
  const avx2 = cpuHasAvx2();
  if (ifma === null || avx2 === null) {
    t.log('cannot read /proc/cpuinfo: the kernel the CPU calls for is not checked');
    return;
  }
  t.is(kernelWith({ CELERY_SIGN_SIMD: undefined }).kernel, ifma ? 'avx512-ifma' : avx2 ? 'avx2' : null);
  t.is(kernelWith({ CELERY_SIGN_SIMD: 'avx2' }).kernel, avx2 ? 'avx2' : null);
  t.log(`this CPU: IFMA ${ifma ? 'yes' : 'no'}, AVX2 ${avx2 ? 'yes' : 'no'}`);
});
