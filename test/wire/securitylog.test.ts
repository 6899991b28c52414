/**
 * The security log (`securityLog`) of a Node worker and a client over a
 * real redis-server: each refusal is one JSON line with the fields an
 * operator ships (time, event, code, reason, signer and subject, task and
 * id, the broker without its password, the worker's name) and Celery's log
 * text; a flood of 1000 forged messages costs a bounded number of lines and
 * a `suppressed` count that adds up; no line holds key material, a payload
 * body or an argument; a store with `on` (a reloading FSCertStore) is
 * subscribed to.
 */
import test from 'ava';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import {
  Certificate,
  createClient,
  createWorker,
  FSCertStore,
  PrivateKey,
  SecureSerializer,
  type SecurityEvent,
  type SecurityLogEntry,
} from 'celery-sign';
import { bindHeaders } from '../../lib/wire/binding.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope } from '../../lib/wire/redis.js';
import { redactUrl, SecurityLog } from '../../lib/wire/securitylog.js';
import { certPath, makeCerts, nowSeconds } from '../helpers/certgen.js';
import * as fx from '../helpers/fixtures.js';
import { until } from './helpers/amqp.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const SECRET_ARG = 'SECRET-ARGUMENT-7f3a9c';
let redis: RedisServer;
let pki: Pki;
let r: Redis;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
});

test.after.always(async () => {
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

const FIELDS = ['time', 'event', 'code', 'reason', 'signer', 'subject', 'task', 'taskId', 'broker', 'hostname', 'source'];

function collect(): { stream: PassThrough; lines: () => string[] } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (b: Buffer) => (text += b.toString()));
  return { stream, lines: () => text.split('\n').filter((l) => l !== '') };
}

test('redactUrl: no password in broker URLs (one or several, user:password or :password, query parameters)', (t) => {
  t.is(redactUrl('redis://:hunter2@redis:6379/0'), 'redis://:********@redis:6379/0');
  t.is(redactUrl('amqps://guest:p%40ss@rabbit:5671//?ssl_keyfile=/k.pem'), 'amqps://guest:********@rabbit:5671//?ssl_keyfile=/k.pem');
  t.is(redactUrl('sentinel://:a@h1:26379;sentinel://:b@h2:26379'), 'sentinel://:********@h1:26379;sentinel://:********@h2:26379');
  t.is(redactUrl('redis://h:6379/0?password=x&db=1'), 'redis://h:6379/0?password=********&db=1');
  t.is(redactUrl('redis://user@h:6379/0'), 'redis://user@h:6379/0');
});

test('rate limiting per code: 1000 refusals of one code -> `rate` lines and one suppressed line; other codes keep their own budget', (t) => {
  const got: SecurityLogEntry[] = [];
  const log = new SecurityLog({ to: (e) => got.push(e), rate: 3 }, { broker: 'redis://:pw@h/0', hostname: 'w@h', source: 'worker' });
  for (let i = 0; i < 1000; i++) {
    log.refused({ code: 'ERR_BAD_SIGNATURE', reason: 'Bad signature', task: 't', taskId: String(i), queue: 'q', action: 'ack' });
  }
  log.refused({ code: 'ERR_UNKNOWN_CERTIFICATE', reason: 'Unknown certificate', task: 't', taskId: 'u', queue: 'q', action: 'ack' });
  log.close();
  const bad = got.filter((e) => e.code === 'ERR_BAD_SIGNATURE');
  const refused = bad.filter((e) => e.event === 'refused');
  const suppressed = bad.filter((e) => e.event === 'suppressed');
  // Unless this loop straddled a window edge (then twice the rate and two summaries).
  t.true(refused.length >= 3 && refused.length <= 6, String(refused.length));
  t.is(refused.length + suppressed.reduce((n, e) => n + e.suppressed!, 0), 1000);
  t.regex(suppressed[0]!.reason, /^suppressed: \d+ more ERR_BAD_SIGNATURE lines/);
  t.is(got.filter((e) => e.code === 'ERR_UNKNOWN_CERTIFICATE').length, 1);
  t.is(got[0]!.broker, 'redis://:********@h/0');
});

test('an FSCertStore that reloads: its expired skips, reloads and failed watch reloads become lines; unsubscribed at close', async (t) => {
  t.timeout(60000);
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-seclog-'));
  const now = nowSeconds();
  makeCerts(dir, ['a', 'b', 'c'], [
    { name: 'live', key: 'a', serial: 11, cn: 'live-signer', notBefore: now - 3600, notAfter: now + 86400 },
    { name: 'old', key: 'b', serial: 12, cn: 'old-signer', notBefore: now - 7200, notAfter: now - 3600 },
    { name: 'new', key: 'c', serial: 13, cn: 'new-signer', notBefore: now - 3600, notAfter: now + 86400 },
  ]);
  const storeDir = join(dir, 'store');
  mkdirSync(storeDir);
  copyFileSync(certPath(dir, 'live'), join(storeDir, 'live.pem'));
  copyFileSync(certPath(dir, 'old'), join(storeDir, 'old.pem'));
  const store = new FSCertStore(storeDir, { onExpired: 'skip', watch: { interval: 100, debounce: 20 } });
  const got: SecurityLogEntry[] = [];
  const log = new SecurityLog((e) => got.push(e), { broker: 'redis://h/0', hostname: 'w@h', source: 'worker' });
  try {
    await new Promise((res) => setImmediate(res));
    log.watchStore(store);
    const old = new Certificate(readFileSync(certPath(dir, 'old')));
    const fresh = new Certificate(readFileSync(certPath(dir, 'new')));
    t.like(got[0], { event: 'cert-expired', code: 'ERR_CERTIFICATE_EXPIRED', signer: old.id, subject: old.subject });
    t.regex(old.subject, /^CN=old-signer,/);
    copyFileSync(certPath(dir, 'new'), join(storeDir, 'new.pem'));
    const reload = await until(async () => got.some((e) => e.event === 'store-reload'), true, 20000);
    t.true(reload);
    const line = got.find((e) => e.event === 'store-reload')!;
    t.is(line.code, null);
    t.true(line.reason.includes(`added ${JSON.stringify(fresh.id)}`), line.reason);
    writeFileSync(join(storeDir, 'broken.pem'), 'not a certificate');
    t.true(await until(async () => got.some((e) => e.event === 'store-error'), true, 20000));
    t.like(got.find((e) => e.event === 'store-error'), { code: 'ERR_INVALID_CERTIFICATE' });
    t.true(store.has(fresh.id), 'the failed reload kept the store');
    t.false(JSON.stringify(got).includes('BEGIN'), 'no PEM in the lines');
    log.close();
    const before = got.length;
    rmSync(join(storeDir, 'broken.pem'));
    await new Promise((res) => setTimeout(res, 600));
    t.is(got.length, before, 'nothing logged after close');
  } finally {
    log.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('a worker under a flood of 1000 forged messages: bounded JSON lines with every field, suppressed counts adding up, no body or key material', async (t) => {
  t.timeout(120000);
  const QUEUE = 'seclog';
  const { stream, lines } = collect();
  const good = serializer(pki);
  const worker = createWorker({
    broker: redis.url(),
    security: good,
    queues: [QUEUE],
    requireHeaderBinding: true,
    authorize: [{ signer: { cn: 'worker rsa2048' }, tasks: ['wire.add'] }],
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y), 'wire.admin': () => 'no' },
    securityLog: { to: stream, rate: 5, authorized: true },
    hostname: 'seclog@test',
    remoteControl: false,
    handleSignals: false,
  });
  const events: SecurityEvent[] = [];
  worker.on('security', (e: SecurityEvent) => events.push(e));
  await worker.start();
  const bodies: string[] = [];
  try {
    // 1000 forged: signed with a key that is not the certificate's.
    const forged = await encodeTaskMessages(
      Array.from({ length: 1000 }, (_, i) =>
        bindHeaders(buildTaskMessage('wire.add', [SECRET_ARG, i], {}, { queue: QUEUE, id: `forged-${i}` })),
      ),
      serializer(pki, 'wrong-key'),
    );
    bodies.push(forged[0]!.body as string);
    const p = r.pipeline();
    for (const m of forged) p.lpush(QUEUE, redisEnvelope(m));
    await p.exec();
    // One authorized, one not, one unsigned.
    const [ok, denied] = await encodeTaskMessages(
      [
        bindHeaders(buildTaskMessage('wire.add', [1, 2], {}, { queue: QUEUE, id: 'ok-1' })),
        bindHeaders(buildTaskMessage('wire.admin', [SECRET_ARG], {}, { queue: QUEUE, id: 'denied-1' })),
      ],
      good,
    );
    bodies.push(ok!.body as string, denied!.body as string);
    await r.lpush(QUEUE, redisEnvelope(ok!), redisEnvelope(denied!));
    await r.lpush(QUEUE, redisEnvelope({ ...ok!, contentType: 'application/json', body: JSON.stringify([[SECRET_ARG], {}, {}]), headers: { ...ok!.headers, id: 'unsigned-1' } }));
    await until(async () => events.length, 1002, 60000);
    await until(async () => worker.stats.succeeded, 1);
  } finally {
    await worker.stop({ timeout: 5000 });
  }
  const all = lines();
  const entries = all.map((l) => JSON.parse(l) as SecurityLogEntry);
  for (const e of entries) {
    for (const f of FIELDS) t.true(f in e, `field ${f} in ${JSON.stringify(e).slice(0, 120)}`);
    t.false(Number.isNaN(Date.parse(e.time)));
    t.is(e.hostname, 'seclog@test');
    t.is(e.broker, redis.url());
    t.is(e.source, 'worker');
  }
  // Bounded: the flood is ERR_BAD_SIGNATURE; at most 5 lines per code per window, the rest counted.
  const bad = entries.filter((e) => e.code === 'ERR_BAD_SIGNATURE');
  const badLines = bad.filter((e) => e.event === 'refused');
  const suppressed = bad.filter((e) => e.event === 'suppressed').reduce((n, e) => n + e.suppressed!, 0);
  t.is(badLines.length + suppressed, 1000, 'every forged message is a line or counted');
  t.true(suppressed > 0);
  t.true(all.length < 100, `${all.length} lines for 1003 refusals`);
  // Within any second, at most two windows' worth (fixed windows).
  for (const e of badLines) {
    const t0 = Date.parse(e.time);
    t.true(badLines.filter((x) => Date.parse(x.time) >= t0 && Date.parse(x.time) < t0 + 1000).length <= 10);
  }
  t.like(badLines[0], {
    action: 'ack',
    queue: QUEUE,
    task: 'wire.add',
    signer: null,
    message: "Can't decode message body: SecurityError('Bad signature') [type:'application/data' encoding:'utf-8']",
  });
  t.regex(badLines[0]!.taskId!, /^forged-\d+$/);
  const denied = entries.find((e) => e.taskId === 'denied-1')!;
  t.like(denied, {
    event: 'refused',
    code: 'ERR_NOT_AUTHORIZED',
    check: 'authorization',
    action: 'reject',
    task: 'wire.admin',
    subject: 'CN=worker rsa2048,O=celery-sign tests',
  });
  t.is(denied.signer, new Certificate(readFileSync(fx.pathOf(fx.cert('rsa2048')))).id);
  t.regex(denied.message!, /^Received invalid task message: Signer .* is not authorized to call task "wire.admin"\nThe message has been ignored and discarded\.$/);
  t.like(entries.find((e) => e.taskId === 'ok-1'), { event: 'authorized', code: null, task: 'wire.add', subject: 'CN=worker rsa2048,O=celery-sign tests' });
  t.like(entries.find((e) => e.taskId === 'unsigned-1'), { code: 'ERR_CONTENT_DISALLOWED', action: 'reject' });
  // Never a body, an argument or key material.
  const text = all.join('\n');
  for (const b of bodies) t.false(text.includes(b.slice(0, 40)), 'no payload body');
  t.false(text.includes(SECRET_ARG), 'no argument');
  t.false(/PRIVATE KEY|BEGIN/.test(text), 'no key or certificate');
});

test.serial('a client: a stored result that does not verify is a `result-refused` line', async (t) => {
  t.timeout(60000);
  const got: SecurityLogEntry[] = [];
  const store = new FSCertStore(pki.storeDir);
  const client = createClient({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    resultSerializer: 'auth',
    securityLog: (e) => got.push(e),
  });
  try {
    // A result signed by a certificate the store does not have.
    const stranger = new SecureSerializer({
      key: new PrivateKey(readFileSync(pki.unknownKey)),
      cert: new Certificate(readFileSync(pki.unknownCert)),
      store,
    });
    const value = stranger.serialize({ status: 'SUCCESS', result: SECRET_ARG, traceback: null, children: [], date_done: null, task_id: 'res-1' });
    await r.set('celery-task-meta-res-1', value);
    const err = await t.throwsAsync(client.asyncResult('res-1').get({ timeout: 5000 }));
    t.is((err as { code?: string }).code, 'ERR_UNKNOWN_CERTIFICATE');
  } finally {
    await client.close();
  }
  t.like(got[0], { event: 'result-refused', code: 'ERR_UNKNOWN_CERTIFICATE', taskId: 'res-1', source: 'client' });
  t.false(JSON.stringify(got).includes(SECRET_ARG));
});
