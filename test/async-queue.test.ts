/**
 * deserializeAsync runs on a dedicated native thread per JavaScript thread,
 * fed through a queue, and settles while the event loop polls for it (see
 * crates/node/src/queue.rs and expectResult in src/native.ts). These tests
 * hold it to what the libuv-pool version did: right answers in place, typed
 * errors with stable codes, a responsive event loop, a process that exits
 * when nothing is out and stays while something is, and worker threads.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { backend, Certificate, CertStore, PrivateKey, SecureSerializer, SecurityError } from 'celery-sign';
import * as fx from './helpers/fixtures.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const keyPem = Buffer.from(fx.pemOf(fx.key('rsa2048.pkcs8'))).toString('utf8');
const certPem = Buffer.from(fx.pemOf(fx.cert('rsa2048'))).toString('utf8');
const key = new PrivateKey(keyPem);
const cert = new Certificate(certPem);
const store = new CertStore([cert]);
const s = new SecureSerializer({ key, cert, store });
const forged = new SecureSerializer({ key: new PrivateKey(fx.pemOf(fx.key('rsa3072.pkcs8'))), cert });

test('one at a time and all at once, each call gets its own answer', async (t) => {
  const values = Array.from({ length: 300 }, (_, i) => ({ i, s: 'x'.repeat(i) }));
  const payloads = await s.serializeMany(values);
  const bad = forged.serialize({ forged: true });
  const one: unknown[] = [];
  for (const p of payloads.slice(0, 100)) one.push(await s.deserializeAsync(p));
  t.deepEqual(one, values.slice(0, 100));

  const mixed = payloads.flatMap((p, i) => (i % 7 === 0 ? [p, bad, `garbage-${i}`] : [p]));
  const settled = await Promise.allSettled(mixed.map((p) => s.deserializeAsync(p)));
  let k = 0;
  for (let i = 0; i < payloads.length; i++) {
    const good = settled[k++]!;
    t.deepEqual(good.status === 'fulfilled' ? good.value : good.reason, values[i]);
    if (i % 7 === 0) {
      const forgedResult = settled[k++]!;
      const garbage = settled[k++]!;
      t.true(forgedResult.status === 'rejected' && forgedResult.reason instanceof SecurityError);
      t.is((forgedResult as PromiseRejectedResult).reason.code, 'ERR_BAD_SIGNATURE');
      t.is((garbage as PromiseRejectedResult).reason.code, 'ERR_MALFORMED_PAYLOAD');
    }
  }
  t.is(k, settled.length);
});

test('a refusal is a SecurityError with its code, one at a time too', async (t) => {
  const good = s.serialize([1, 2]);
  for (let i = 0; i < 20; i++) {
    await t.throwsAsync(s.deserializeAsync(forged.serialize(i)), { instanceOf: SecurityError, code: 'ERR_BAD_SIGNATURE' });
    t.deepEqual(await s.deserializeAsync(good), [1, 2]);
  }
  await t.throwsAsync(s.deserializeAsync(''), { instanceOf: SecurityError, code: 'ERR_MALFORMED_PAYLOAD' });
  await t.throwsAsync(new SecureSerializer({ key, cert }).deserializeAsync(good), { code: 'ERR_IMPROPERLY_CONFIGURED' });
});

// The node:crypto fallback (backend 'js') has no native queue thread: its single
// calls go to a worker thread of its own, which is started, like the pool's, as
// a JavaScript thread (tens of ms of CPU). Measured alone there, before the tests
// below start a dozen such threads at once; the same bounds on both backends.
(backend === 'js' ? test.serial : test)('the event loop keeps running while calls are awaited one after another', async (t) => {
  const payloads = await s.serializeMany(Array.from({ length: 64 }, (_, i) => i));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < 300) {
    await s.deserializeAsync(payloads[n++ % 64]!);
  }
  clearInterval(timer);
  t.true(n > 100, `${n} calls`);
  t.true(ticks > 50, `the 1 ms timer ran ${ticks} times in 300 ms of back-to-back calls`);
});

function runNode(code: string, timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, timeout: timeoutMs }, (err, stdout) => {
      if (err && err.killed) reject(new Error(`timed out: ${stdout}`));
      else resolve({ code: err ? (err.code as number) : 0, stdout, ms: performance.now() - t0 });
    });
    child.stdin?.end();
  });
}

const preamble = `
import { Certificate, CertStore, PrivateKey, SecureSerializer } from 'celery-sign';
const cert = new Certificate(${JSON.stringify(certPem)});
const s = new SecureSerializer({ key: new PrivateKey(${JSON.stringify(keyPem)}), cert, store: new CertStore([cert]) });
const p = s.serialize({ ok: 1 });
`;

test('the process exits when nothing is out, and waits for what is', async (t) => {
  // Awaited, then nothing left: exits at once (the native thread does not hold the loop).
  const done = await runNode(`${preamble} console.log(JSON.stringify(await s.deserializeAsync(p)));`);
  t.is(done.code, 0);
  t.is(done.stdout.trim(), '{"ok":1}');
  // Not awaited by anything: the call still keeps the process alive until it settles.
  const floating = await runNode(`${preamble} s.deserializeAsync(p).then((v) => console.log('settled', JSON.stringify(v)));`);
  t.is(floating.code, 0);
  t.is(floating.stdout.trim(), 'settled {"ok":1}');
  // Many out at the end of the script.
  const many = await runNode(`${preamble} let n = 0; for (let i = 0; i < 500; i++) s.deserializeAsync(p).then(() => { if (++n === 500) console.log('all', n); });`);
  t.is(many.stdout.trim(), 'all 500');
});

test('worker threads have their own native thread, and may end with calls out', async (t) => {
  const code = `
    import { parentPort, workerData } from 'node:worker_threads';
    import { Certificate, CertStore, PrivateKey, SecureSerializer } from 'celery-sign';
    const cert = new Certificate(workerData.certPem);
    const s = new SecureSerializer({ key: new PrivateKey(workerData.keyPem), cert, store: new CertStore([cert]) });
    const ps = await s.serializeMany(Array.from({ length: 50 }, (_, i) => i));
    let sum = 0;
    for (const p of ps) sum += await s.deserializeAsync(p);
    for (const p of ps) s.deserializeAsync(p); // left out on purpose
    parentPort.postMessage(sum);
  `;
  const run = () =>
    new Promise<number>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { certPem, keyPem } });
      w.once('message', (m: number) => {
        resolve(m);
        void w.terminate();
      });
      w.once('error', reject);
    });
  const sums = await Promise.all([run(), run(), run()]);
  t.deepEqual(sums, [1225, 1225, 1225]);
  // And this thread still works.
  t.deepEqual(await s.deserializeAsync(s.serialize('after')), 'after');
});
