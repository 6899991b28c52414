/**
 * Thread counts are bounded (MAX_THREADS, 1024: libuv's bound for
 * UV_THREADPOOL_SIZE) and a pool the system refuses is an error of the call
 * that wanted it, never an abort. Each case runs in a fresh process (the
 * pool is built once per process). Once, setThreads(1e6) and
 * CELERY_SIGN_THREADS=1000000 were accepted and the first batch aborted the
 * process while building the pool (an `expect` inside a native task), and
 * setThreads(2 ** 32 + 1) wrapped to one thread.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_THREADS } from '../src/backend/limits.js';
import * as fx from './helpers/fixtures.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const keyPem = Buffer.from(fx.pemOf(fx.key('rsa2048.pkcs8'))).toString('utf8');
const certPem = Buffer.from(fx.pemOf(fx.cert('rsa2048'))).toString('utf8');

const preamble = `
import { Certificate, CertStore, PrivateKey, SecureSerializer, SecurityError, setThreads, threadCount } from 'celery-sign';
const cert = new Certificate(${JSON.stringify(certPem)});
const s = new SecureSerializer({ key: new PrivateKey(${JSON.stringify(keyPem)}), cert, store: new CertStore([cert]) });
const out = (x) => console.log(JSON.stringify(x));
const what = (e) => ({ name: e?.constructor?.name, code: e?.code, message: String(e?.message) });
const attempt = async (f) => { try { return { ok: await f() }; } catch (e) { return { err: what(e) }; } };
`;

interface Run {
  code: number | null;
  signal: string | null;
  lines: unknown[];
  stderr: string;
}

function run(body: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', preamble + body],
      { cwd: ROOT, timeout: 120_000, env: { ...process.env, CELERY_SIGN_BACKEND: 'native', RUST_BACKTRACE: '0', ...env } },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number; signal?: string }) | null;
        const lines = stdout
          .trim()
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as unknown);
        resolve({ code: e ? (e.code ?? null) : 0, signal: e?.signal ?? null, lines, stderr });
      },
    );
  });
}

test('the bound is 1024, from the core', (t) => {
  t.is(MAX_THREADS, 1024);
});

test('setThreads beyond the bound, not an integer or below 1: a RangeError, nothing changes', async (t) => {
  const r = await run(`
for (const n of [1e6, 2 ** 32 + 1, 1025, 0, -1, 1.5, NaN, Infinity]) out(await attempt(() => setThreads(n)));
out(await attempt(() => setThreads(3)));
out(await attempt(() => threadCount()));
out(await attempt(async () => (await s.deserializeMany([s.serialize([1])]))[0].value));
out(await attempt(() => setThreads(2)));
`);
  t.is(r.code, 0, r.stderr);
  const range = r.lines.slice(0, 8) as { err: { name: string; message: string } }[];
  for (const x of range) {
    t.is(x.err.name, 'RangeError');
    t.regex(x.err.message, /^threads must be an integer from 1 to 1024, not /);
  }
  t.deepEqual(r.lines.slice(8), [{ ok: true }, { ok: 3 }, { ok: [1] }, { ok: false }]);
});

test('setThreads(1024) is taken as it is', async (t) => {
  const r = await run(`out(await attempt(() => setThreads(1024))); out(await attempt(() => threadCount()));`);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.lines, [{ ok: true }, { ok: 1024 }]);
});

test('CELERY_SIGN_THREADS: digits only, clamped to the bound; anything else ignored (the cores)', async (t) => {
  const cores = Math.min(availableParallelism(), MAX_THREADS);
  const cases: [string, number][] = [
    ['1000000', 1024],
    ['99999999999999999999999', 1024],
    ['1025', 1024],
    [' 3 ', 3],
    ['0', cores],
    ['-2', cores],
    ['4abc', cores],
    ['1e6', cores],
    ['', cores],
  ];
  for (const [value, want] of cases) {
    const r = await run(
      `out(await attempt(() => threadCount())); out(await attempt(async () => (await s.deserializeMany([s.serialize('x')]))[0].value));`,
      { CELERY_SIGN_THREADS: value },
    );
    t.is(r.code, 0, `${JSON.stringify(value)}: ${r.stderr}`);
    t.deepEqual(r.lines, [{ ok: want }, { ok: 'x' }], JSON.stringify(value));
  }
});

test('a pool the system refuses (no room for thread stacks): ERR_INTERNAL of that call, no abort, tried again later', async (t) => {
  // RUST_MIN_STACK makes every native thread ask for 64 TiB of stack: the
  // system refuses them as a pids limit would (EAGAIN).
  const r = await run(
    `
out(await attempt(() => threadCount()));
out(await attempt(() => s.deserializeMany(Array.from({ length: 100 }, () => s.serialize([1])))));
out(await attempt(() => s.serializeMany([[1], [2]])));
out(await attempt(() => s.deserializeAsync(s.serialize([3]))));
out(await attempt(() => s.deserialize(s.serialize([4]))));
out(await attempt(() => threadCount()));
out(await attempt(async () => (await s.deserializeMany([s.serialize([5])]))[0]));
`,
    { RUST_MIN_STACK: String(2 ** 46) },
  );
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr);
  const [count, many, sealMany, queued, single, again, small] = r.lines as { ok?: unknown; err?: { name: string; code: string; message: string } }[];
  for (const x of [count, many, sealMany, again]) {
    t.is(x!.err?.name, 'SecurityError', JSON.stringify(x));
    t.is(x!.err?.code, 'ERR_INTERNAL');
    t.regex(x!.err!.message, /could not start the \d+ threads of the native pool/);
  }
  // The queue's own thread is refused too: the same code, its own message.
  t.is(queued!.err?.code, 'ERR_INTERNAL', JSON.stringify(queued));
  t.regex(queued!.err!.message, /could not start the native thread of deserializeAsync/);
  // A single call needs no thread; nor does a batch of one (opened on the calling thread).
  t.deepEqual(single, { ok: [4] });
  t.like(small, { ok: { ok: true, value: [5] } });
});

// Batches run on the native pool and hold no libuv thread while they do: an
// fs call made while a batch is signed or verified completes before it, even
// with a libuv threadpool of one thread. When serializeMany's chunks were napi
// AsyncTasks (each blocked a libuv thread until its chunk was signed), the fs
// call waited behind both chunks in flight: ['sealed', 'fs'].
test('serializeMany and deserializeMany hold no libuv thread (UV_THREADPOOL_SIZE=1: an fs call made meanwhile completes first)', async (t) => {
  const r = await run(
    `
import { stat } from 'node:fs';
const bodies = Array.from({ length: 512 }, (_, i) => ({ i, pad: 'x'.repeat(400) }));
await s.serializeMany(bodies.slice(0, 4)); // the pool started
const race = async (name, batch) => {
  const order = [];
  const done = batch().then(() => order.push(name));
  stat('.', () => order.push('fs'));
  await done;
  await new Promise((r) => setTimeout(r, 200));
  return order;
};
out(await race('sealed', () => s.serializeMany(bodies)));
const payloads = await s.serializeMany(bodies);
const many = Array.from({ length: 8 }, () => payloads).flat();
out(await race('opened', () => s.deserializeMany(many)));
`,
    { UV_THREADPOOL_SIZE: '1' },
  );
  t.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, r.stderr);
  t.deepEqual(r.lines, [
    ['fs', 'sealed'],
    ['fs', 'opened'],
  ]);
});
