/**
 * Certificate chain verification end to end (issue 12, item 7), over a real
 * redis-server with a real Python Celery 5.7 producer (`app.send_task`
 * under setup_security(), signing with a certificate issued by a test CA):
 * a Node worker configured with Celery's settings plus
 * `security_cert_store_ca` / `security_cert_store_crl` runs the tasks of
 * the CA-issued signers (issued by the CA, and by an intermediate of it), refuses (ERR_UNKNOWN_CERTIFICATE, a security event,
 * no run) those of a signer whose certificate the CA did not issue, and
 * does not start at all when its store directory holds such a certificate
 * or a revoked one: the operator sees the error naming the certificate.
 */
import test from 'ava';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWorker, SecurityError, type SecurityEvent, type Worker } from 'celery-sign';
import { certPath, crlPath, keyPath, makeChainPki } from '../helpers/certgen.js';
import { runProducer, type Pki } from './helpers/celery.js';
import { until } from './helpers/amqp.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'chain';
let root: string;
let ca: string;
let redis: RedisServer;
let pki: Pki;
let worker: Worker | undefined;
const events: SecurityEvent[] = [];
const ran: string[] = [];

function dirOf(names: string[]): string {
  const dir = mkdtempSync(join(root, 'store-'));
  for (const n of names) copyFileSync(certPath(ca, n), join(dir, `${n}.pem`));
  return dir;
}

function settings(store: string): Record<string, unknown> {
  return {
    task_serializer: 'auth',
    accept_content: ['auth'],
    result_serializer: 'json',
    result_accept_content: ['json'],
    security_key: keyPath(ca, 'good'),
    security_certificate: certPath(ca, 'good'),
    security_cert_store: store,
    security_cert_store_ca: certPath(ca, 'ca'),
    security_cert_store_crl: crlPath(ca, 'crl'),
  };
}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'celery-sign-wire-chain-'));
  ca = join(root, 'pki');
  makeChainPki(ca);
  mkdirSync(join(root, 'py-store'));
  // The Python producer's own store (Celery's: any certificate) and signers.
  copyFileSync(certPath(ca, 'good'), join(root, 'py-store', 'good.pem'));
  pki = {
    storeDir: join(root, 'py-store'),
    key: keyPath(ca, 'good'),
    cert: certPath(ca, 'good'),
    wrongKey: keyPath(ca, 'revoked'),
    unknownKey: keyPath(ca, 'stranger'),
    unknownCert: certPath(ca, 'stranger'),
    cleanup: () => undefined,
  };
  redis = await startRedis();
});

test.after.always(async () => {
  await worker?.stop({ timeout: 5000 });
  await redis?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

test.serial('the worker does not start on a store holding a certificate the CA did not issue, or a revoked one', (t) => {
  for (const [name, reason] of [
    ['stranger', /not issued by a trusted CA/],
    ['revoked', /it is revoked: serial 11 is listed in the CRL/],
  ] as const) {
    const err = t.throws(
      () => createWorker({ broker: redis.url(), backend: redis.url(), security: settings(dirOf(['good', name])), queues: [QUEUE], tasks: {} }),
      { instanceOf: SecurityError },
    );
    t.is(err?.code, 'ERR_INVALID_CERTIFICATE');
    t.regex(err!.message, new RegExp(`^Certificate "celery-sign chain (ca|other) \\d+" refused: `));
    t.regex(err!.message, reason);
  }
});

test.serial('a Python Celery producer signing with a CA-issued certificate is served; a stranger is refused', async (t) => {
  t.timeout(90000);
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: { ...settings(dirOf(['good', 'deep'])), security_cert_store_intermediates: [certPath(ca, 'inter')] },
    queues: [QUEUE],
    tasks: {
      'wire.add': ([x, y], _kw, ctx) => {
        ran.push(ctx.signer);
        return Number(x) + Number(y);
      },
    },
  });
  worker.on('security', (e: SecurityEvent) => events.push(e));
  await worker.start();
  const good = await runProducer<{ ids: string[]; results: { ok: boolean; value?: unknown }[] }>(
    pki,
    redis.url(),
    { op: 'send', tasks: [{ name: 'wire.add', args: [2, 3], options: { queue: QUEUE } }], wait: true, timeout: 20 },
  );
  t.deepEqual(good.results, [{ ok: true, value: 5 }]);
  t.deepEqual(ran, ['celery-sign chain ca 10']);
  // A signer whose certificate an intermediate of the CA issued.
  const deep = await runProducer<{ ids: string[]; results: { ok: boolean; value?: unknown }[] }>(
    pki,
    redis.url(),
    { op: 'send', tasks: [{ name: 'wire.add', args: [4, 5], options: { queue: QUEUE } }], wait: true, timeout: 20 },
    { extraEnv: { WIRE_KEY: keyPath(ca, 'deep'), WIRE_CERT: certPath(ca, 'deep') } },
  );
  t.deepEqual(deep.results, [{ ok: true, value: 9 }]);
  t.deepEqual(ran, ['celery-sign chain ca 10', 'celery-sign chain inter 12']);
  // The stranger's certificate (issued by another CA) is not in the store: refused, not run.
  const bad = await runProducer<{ ids: string[] }>(
    pki,
    redis.url(),
    { op: 'send', tasks: [{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE } }], wait: false },
    { signer: 'unknown' },
  );
  await until(async () => events.some((e) => e.taskId === bad.ids[0]), true, 20000);
  const e = events.find((x) => x.taskId === bad.ids[0])!;
  t.is(e.code, 'ERR_UNKNOWN_CERTIFICATE');
  t.is(e.task, 'wire.add');
  t.is(ran.length, 2);
});
