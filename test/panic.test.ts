/**
 * No panic crosses into JavaScript: a panic in an export, in a task's
 * compute, in a job of the deserializeAsync queue or while its promise
 * settles becomes an `ERR_INTERNAL` error of that call, and everything else
 * carries on (the queue's other jobs settle, its thread keeps serving; a
 * batch item that panics fails alone).
 *
 * The panics come from exports that exist only in a build with the
 * `panic-probe` feature of crates/node (never in a package: `npm run
 * build:native` does not enable it). This test builds that addon itself,
 * with the command of `npm run build:probe` (package.json: a release build
 * in target/release, where `cargo test --release` has already built its
 * dependencies, apart from the packaged binary in target/<triple>), and
 * drives it in a child process, so that an abort fails the test rather than
 * killing ava. `npm test` builds it beforehand, so that here cargo finds it
 * fresh and the tests' timeouts stay within ava's own.
 *
 * Also here: `translate()` (src/native.ts) never passes a native error on
 * untyped.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImproperlyConfigured, SecurityError } from '../src/errors.js';
import { translate } from '../src/native.js';
import * as fx from './helpers/fixtures.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

function exec(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeout: number }): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: ROOT, maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number; signal?: string }) | null;
      resolve({ code: e ? (e.code ?? null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

/** `npm run build:probe`'s command, the one source of how the probe is built. */
const PROBE_BUILD = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts['build:probe']!.split(' ');

/** Builds the addon with the probe exports; returns a copy loadable as a .node file. */
async function buildProbe(): Promise<string> {
  const [cargo, ...args] = PROBE_BUILD;
  const r = await exec(cargo!, [...args, '--message-format=json'], {
    timeout: 15 * 60_000,
  });
  if (r.code !== 0) throw new Error(`${PROBE_BUILD.join(' ')} failed:\n${r.stderr.slice(-4000)}`);
  let lib: string | undefined;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const m = JSON.parse(line) as { reason?: string; target?: { name?: string }; filenames?: string[] };
    if (m.reason === 'compiler-artifact' && m.target?.name === 'celery_sign_node') {
      lib = m.filenames?.find((f) => /\.(so|dylib|dll)$/.test(f));
    }
  }
  if (lib === undefined) throw new Error('cargo built no celery_sign_node library');
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-probe-'));
  const node = join(dir, 'probe.node');
  copyFileSync(lib, node);
  return node;
}

const probe = buildProbe();
test.after.always(async () => {
  try {
    rmSync(dirname(await probe), { recursive: true, force: true });
  } catch {
    // nothing was built
  }
});

const keyPem = Buffer.from(fx.pemOf(fx.key('rsa2048.pkcs8'))).toString('utf8');
const certPem = Buffer.from(fx.pemOf(fx.cert('rsa2048'))).toString('utf8');

/** Runs `body` (CommonJS, `b` the probe binding, `out` prints a JSON line) in a child. */
async function inChild(body: string): Promise<{ code: number | null; signal: string | null; lines: unknown[]; stderr: string }> {
  const file = await probe;
  const code = `
const m = { exports: {} };
process.dlopen(m, ${JSON.stringify(file)});
const b = m.exports;
const out = (x) => console.log(JSON.stringify(x));
const what = (e) => ({ message: String(e && e.message), code: e && e.code });
const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: what(e) }));
const key = new b.NativePrivateKey(Buffer.from(${JSON.stringify(keyPem)}), null);
const cert = new b.NativeCertificate(Buffer.from(${JSON.stringify(certPem)}));
const store = new b.NativeCertStore();
store.add(cert);
const s = new b.NativeSerializer(key, cert, store, 'sha256', 'celery-5.5', 1 << 24);
(async () => {
${body}
})().catch((e) => { console.error(e); process.exit(3); });
`;
  const r = await exec(process.execPath, ['-e', code], { timeout: 120_000, env: { ...process.env, RUST_BACKTRACE: '0' } });
  const lines = r.stdout
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as unknown);
  return { code: r.code, signal: r.signal, lines, stderr: r.stderr };
}

const INTERNAL = /^ERR_INTERNAL: internal error in celery-sign's native code \(a bug, please report it\): probe: /;

test('a panic in a synchronous export: a thrown ERR_INTERNAL error, the process lives on', async (t) => {
  t.timeout(5 * 60_000);
  const r = await inChild(`
try { b.panicProbeSync(); out('no throw'); } catch (e) { out(what(e)); }
try { b.panicProbeUnguarded(); out('no throw'); } catch (e) { out(what(e)); }
out(s.open(Buffer.from(s.seal('application/json', 'utf-8', Buffer.from('[1]')))).body);
`);
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr);
  const [sync, unguarded, after] = r.lines as [{ message: string; code: string }, { message: string; code: string }, string];
  t.regex(sync.message, INTERNAL);
  t.is(sync.code, 'GenericFailure');
  // Outside the core's guard, napi's catch_unwind gives the panic's bare text...
  t.is(unguarded.message, 'probe: a panic outside the guard');
  // ...which the facade still types as ERR_INTERNAL.
  const translated = translate(Object.assign(new Error(unguarded.message), { code: unguarded.code }));
  t.true(translated instanceof SecurityError);
  t.is((translated as SecurityError).code, 'ERR_INTERNAL');
  t.is(after, '[1]');
  const s = translate(Object.assign(new Error(sync.message), { code: sync.code }));
  t.true(s instanceof SecurityError);
  t.is((s as SecurityError).code, 'ERR_INTERNAL');
});

test("a panic in a task's compute (libuv thread): a rejected ERR_INTERNAL promise", async (t) => {
  t.timeout(5 * 60_000);
  const r = await inChild(`
out(await settle(b.panicProbeTask()));
out(await settle(s.sealAsync('application/json', 'utf-8', Buffer.from('[2]'))).then((x) => typeof x.ok));
`);
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr);
  const [task, after] = r.lines as [{ err: { message: string } }, string];
  t.regex(task.err.message, INTERNAL);
  t.is(after, 'string');
});

test('a panicking job on the deserializeAsync queue rejects its own promise; the others settle, the thread keeps serving', async (t) => {
  t.timeout(5 * 60_000);
  const r = await inChild(`
const p = s.seal('application/json', 'utf-8', Buffer.from('[3]'));
// One at a time (the queue thread runs them itself) and many at once (over the pool).
for (const at of ['work', 'settle']) out(await settle(b.panicProbeQueued(at)));
const together = ['a', 'work', 'b', 'settle', 'c'].map((at) => settle(b.panicProbeQueued(at)));
const real = Array.from({ length: 8 }, () => settle(s.openAsync(Buffer.from(p)).then((o) => o.body)));
out(await Promise.all(together));
out(await Promise.all(real));
out(await settle(s.openAsync(Buffer.from(p)).then((o) => o.body)));
`);
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr);
  const [work, settleOne, together, real, after] = r.lines as [
    { err: { message: string } },
    { err: { message: string } },
    { ok?: string; err?: { message: string } }[],
    { ok: string }[],
    { ok: string },
  ];
  t.regex(work.err.message, INTERNAL);
  t.regex(work.err.message, /a panic in a queued job$/);
  t.regex(settleOne.err.message, /a panic settling a queued job$/);
  t.deepEqual(
    together.map((x) => x.ok ?? (x.err!.message.match(INTERNAL) ? 'ERR_INTERNAL' : x.err!.message)),
    ['a', 'ERR_INTERNAL', 'b', 'ERR_INTERNAL', 'c'],
  );
  t.deepEqual(real, Array.from({ length: 8 }, () => ({ ok: '[3]' })));
  t.deepEqual(after, { ok: '[3]' });
});

test('an external string Node refuses is copied instead, once (no recursion until the stack overflows)', async (t) => {
  t.timeout(5 * 60_000);
  const long = 'y'.repeat(100_000);
  const r = await inChild(`
b.probeFailExternalStrings(true);
const p = Buffer.from(s.seal('application/json', 'utf-8', Buffer.from(JSON.stringify([${JSON.stringify(long)}, 'z'.repeat(5000)]))));
const batch = await s.openPacked(p, new Uint32Array([p.length]), ['application/json']);
out({ literals: batch.literals.map((l) => [l.length, l.slice(0, 3)]), flags: batch.meta[6] });
`);
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr.slice(-2000));
  const [got] = r.lines as [{ literals: [number, string][]; flags: number }];
  t.true(got.literals.length >= 1, JSON.stringify(got));
  t.deepEqual(got.literals[0], [100_000, 'yyy']);
  t.truthy(got.flags & 32);
});

test('a batch item whose pre-scan panics gets ERR_INTERNAL in its own slot; its neighbours their own results', async (t) => {
  t.timeout(5 * 60_000);
  const r = await inChild(`
b.probePanicInScan(true);
const bodies = ['[1]', '["celery-sign-probe-panic"]', '[3]'];
const ps = bodies.map((x) => Buffer.from(s.seal('application/json', 'utf-8', Buffer.from(x))));
const data = Buffer.concat(ps);
const lengths = new Uint32Array(ps.map((p) => p.length));
const codes = b.errorCodes();
// On the pool, on the calling thread (small batches), on the queue thread.
for (const batch of [
  await s.openPacked(data, lengths, ['application/json']),
  s.openPackedSync(data, lengths, ['application/json']),
  await s.openPackedQueued(data, lengths, ['application/json']),
]) {
  const rows = [];
  for (let i = 0; i < ps.length; i++) {
    const m = batch.meta.subarray(i * 9, i * 9 + 9);
    rows.push(m[0] === 0 ? batch.buffer.subarray(m[4], m[5]).toString() : codes[m[0] - 1] + ' ' + batch.strings[m[1]]);
  }
  out(rows);
}
`);
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr.slice(-2000));
  t.is(r.lines.length, 3);
  for (const rows of r.lines as string[][]) {
    t.is(rows[0], '[1]');
    t.regex(rows[1]!, /^ERR_INTERNAL internal error in celery-sign's native code \(a bug, please report it\): probe: a panic in the pre-scan of one body$/);
    t.is(rows[2], '[3]');
  }
});

test('translate(): every native error gets a type; one without a known code is ERR_INTERNAL, never an untyped Error', (t) => {
  const coded = translate(new Error('ERR_BAD_SIGNATURE: Bad signature'));
  t.true(coded instanceof SecurityError);
  t.is((coded as SecurityError).code, 'ERR_BAD_SIGNATURE');
  t.is(coded.message, 'Bad signature');
  const config = translate(Object.assign(new Error('unsupported digest "md5"'), { code: 'InvalidArg' }));
  t.true(config instanceof ImproperlyConfigured);
  const prefixed = translate(new Error('ERR_IMPROPERLY_CONFIGURED: no'));
  t.true(prefixed instanceof ImproperlyConfigured);
  t.is(prefixed.message, 'no');
  for (const raw of [
    new Error('something napi said'),
    Object.assign(new Error('Failed to create reference'), { code: 'GenericFailure' }),
    Object.assign(new Error('x'), { code: 'StringExpected' }),
    new Error('ERR_NOT_A_CODE: made up'),
    'a string',
    undefined,
  ]) {
    const e = translate(raw);
    t.true(e instanceof SecurityError, String(raw));
    t.is((e as SecurityError).code, 'ERR_INTERNAL');
    t.is(e.cause, raw);
  }
  const already = new SecurityError('ERR_DECODE', 'x');
  t.is(translate(already), already);
});
