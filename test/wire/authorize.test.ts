/**
 * Authorization per signer (`authorize`) on a Node worker over a real
 * redis-server, with Node producers signing with two different certificates
 * (`worker rsa2048`, `worker rsa1024`) and a real Python Celery 5.7 producer
 * (`app.send_task` under setup_security(), with and without the
 * celery_sign_binding hook from python/): an authorized task runs, an
 * unauthorized one is refused with ERR_NOT_AUTHORIZED (a security event,
 * rejected, no result stored, the handler not run), a bound body
 * re-published under another task name is refused by the binding, and an
 * unbound one because binding is required.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  Certificate,
  chain,
  createClient,
  createWorker,
  FSCertStore,
  ImproperlyConfigured,
  PrivateKey,
  SecureSerializer,
  type SecurityEvent,
  type Worker,
} from 'celery-sign';
import { bindHeaders } from '../../lib/wire/binding.js';
import { Authorizer, globRegExp } from '../../lib/wire/authorize.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope } from '../../lib/wire/redis.js';
import * as fx from '../helpers/fixtures.js';
import { pythonPath } from '../helpers/python.js';
import { until } from './helpers/amqp.js';
import { makePki, PY_DIR, runScript, wireEnv, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'authz';
const PYTHON_PKG = join(PY_DIR, '..', '..', 'python');
let redis: RedisServer;
let pki: Pki;
let r: Redis;
let worker: Worker;
const ran: string[] = [];
const events: SecurityEvent[] = [];

/** A serializer signing as one of the fixture certificates (both are in the worker's store). */
function signer(name: 'rsa2048' | 'rsa1024'): SecureSerializer {
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(fx.pathOf(fx.key(`${name}.pkcs8`)))),
    cert: new Certificate(readFileSync(fx.pathOf(fx.cert(name)))),
    store: new FSCertStore(pki.storeDir),
  });
}

const certA = (): Certificate => new Certificate(readFileSync(fx.pathOf(fx.cert('rsa2048'))));

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  const handler = (_a: unknown[], _k: unknown, ctx: { id: string; name: string }): string => {
    ran.push(ctx.id);
    return ctx.name;
  };
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: signer('rsa2048'),
    queues: [QUEUE],
    requireHeaderBinding: true,
    authorize: [
      // by Celery id: the Python producer's and the first Node client's certificate
      { signer: { id: certA().id }, tasks: ['wire.add', 'admin.*'] },
      // by subject common name
      { signer: { cn: 'worker rsa1024' }, tasks: ['billing.*'] },
    ],
    tasks: { 'wire.add': handler, 'admin.wipe': handler, 'billing.charge': handler },
    remoteControl: false,
    handleSignals: false,
  });
  worker.on('security', (e: SecurityEvent) => events.push(e));
  await worker.start();
});

test.after.always(async () => {
  await worker?.stop({ timeout: 5000 });
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

const meta = (id: string): Promise<string | null> => r.get(`celery-task-meta-${id}`);
/** The security event of a task id, once it came (or undefined after 45 s). */
async function refusalOf(id: string): Promise<SecurityEvent | undefined> {
  const deadline = Date.now() + 45000;
  for (;;) {
    const e = events.find((x) => x.taskId === id);
    if (e || Date.now() > deadline) return e;
    await new Promise((res) => setTimeout(res, 50));
  }
}

test('the certificate names the rules use: Celery id, common name, RFC 4514 subject (as Python cryptography reads it)', (t) => {
  const a = certA();
  t.is(a.commonName, 'worker rsa2048');
  t.is(a.subject, 'CN=worker rsa2048,O=celery-sign tests');
  t.regex(a.id, /^NO celery-sign tests celery-sign test CA \d+$/);
  // Escapes, multi-valued RDNs, unknown OIDs, BMPString: what Python's cryptography says.
  const names = ['rsa2048', 'rsa1024', 'name-special-chars', 'name-multivalued-rdn', 'name-unknown-oid', 'name-bmp', 'name-utf8', 'name-many-rdns'];
  const py = execFileSync(
    pythonPath('current'),
    [
      '-c',
      'import json,sys\nfrom cryptography import x509\nfrom cryptography.x509.oid import NameOID\nout=[]\nfor p in sys.argv[1:]:\n  s=x509.load_pem_x509_certificate(open(p,"rb").read()).subject\n  cn=s.get_attributes_for_oid(NameOID.COMMON_NAME)\n  out.append([s.rfc4514_string(), cn[0].value if cn else None])\nprint(json.dumps(out))',
      ...names.map((n) => fx.pathOf(fx.cert(n))),
    ],
    { encoding: 'utf8' },
  );
  const ours = names.map((n) => {
    const c = new Certificate(readFileSync(fx.pathOf(fx.cert(n))));
    return [c.subject, c.commonName];
  });
  t.deepEqual(ours, JSON.parse(py));
});

test('task patterns are fnmatch globs; rules deny by default; a throwing function denies', (t) => {
  t.true(globRegExp('billing.*').test('billing.charge'));
  t.true(globRegExp('billing.*').test('billing.a.b'));
  t.false(globRegExp('billing.*').test('billingXcharge'));
  t.false(globRegExp('billing.*').test('admin.billing.x'));
  t.true(globRegExp('t?sk.[ab]').test('task.a'));
  t.false(globRegExp('t?sk.[!ab]').test('task.a'));
  const store = new FSCertStore(pki.storeDir);
  const a = certA();
  const byMap = new Authorizer({ 'worker rsa1024': ['billing.*'], [a.id]: ['wire.add'] }, store);
  t.true(byMap.decide(a.id, 'wire.add').allowed);
  t.false(byMap.decide(a.id, 'billing.charge').allowed);
  const empty = new Authorizer([], store);
  const d = empty.decide(a.id, 'wire.add');
  t.false(d.allowed);
  t.is(d.error?.code, 'ERR_NOT_AUTHORIZED');
  t.regex(d.error!.message, /Signer "NO celery-sign tests .*" \(CN "worker rsa2048"\) is not authorized to call task "wire.add"/);
  const thrower = new Authorizer(() => {
    throw new Error('boom');
  }, store);
  t.false(thrower.decide(a.id, 'wire.add').allowed);
  const fn = new Authorizer((s, task) => s.commonName === 'worker rsa2048' && task === 'wire.add', store);
  t.true(fn.decide(a.id, 'wire.add').allowed);
  t.throws(() => new Authorizer([{ signer: { name: 'x' } } as never], store), { instanceOf: ImproperlyConfigured });
  t.throws(() => new Authorizer([{ signer: { cn: 'x' }, tasks: 'x' } as never], store), { instanceOf: ImproperlyConfigured });
});

test('of kind control (authorizeControl): rules name commands; the object and function forms; a throwing function denies, named as the option', (t) => {
  const store = new FSCertStore(pki.storeDir);
  const a = certA();
  const rules = new Authorizer([{ signer: { cn: 'worker rsa2048' }, commands: ['ping', 'dump_*'] }], store, 'control');
  t.true(rules.decide(a.id, 'ping').allowed);
  t.true(rules.decide(a.id, 'dump_conf').allowed);
  const d = rules.decide(a.id, 'shutdown');
  t.false(d.allowed);
  t.regex(d.error!.message, /\(CN "worker rsa2048"\) is not authorized to send remote control command "shutdown"$/);
  const byMap = new Authorizer({ 'worker rsa2048': ['stats'] }, store, 'control');
  t.true(byMap.decide(a.id, 'stats').allowed);
  t.false(byMap.decide(a.id, 'revoke').allowed);
  const thrower = new Authorizer(
    () => {
      throw new TypeError('boom');
    },
    store,
    'control',
  );
  const thrown = thrower.decide(a.id, 'ping');
  t.false(thrown.allowed);
  t.regex(thrown.error!.message, /\(the authorizeControl function threw: TypeError\)$/);
  t.false(thrown.error!.message.includes('boom'), 'the exception text stays out');
  const fn = new Authorizer((s, command) => s.commonName === 'worker rsa2048' && command === 'ping', store, 'control');
  t.true(fn.decide(a.id, 'ping').allowed);
  t.false(fn.decide(a.id, 'pong').allowed);
  // A task rule's field is not a command rule's.
  t.throws(() => new Authorizer([{ signer: { cn: 'x' }, tasks: ['ping'] } as never], store, 'control'), {
    instanceOf: ImproperlyConfigured,
    message: /authorizeControl: rule 0: commands must be an array/,
  });
});

test('authorize without requireHeaderBinding is refused at construction; an explicit false warns once', async (t) => {
  const base = { broker: redis.url(), security: signer('rsa2048'), tasks: { 'wire.add': () => 1 }, authorize: { x: ['*'] } };
  t.throws(() => createWorker(base), { instanceOf: ImproperlyConfigured, message: /requireHeaderBinding: true/ });
  const warnings: Error[] = [];
  const onWarning = (w: Error): number => warnings.push(w);
  process.on('warning', onWarning);
  try {
    createWorker({ ...base, requireHeaderBinding: false });
    await new Promise((res) => setImmediate(res));
  } finally {
    process.off('warning', onWarning);
  }
  t.is(warnings.filter((w) => w.name === 'CelerySignSecurityWarning').length, 1);
  t.regex(warnings[0]!.message, /unsigned headers/);
});

test.serial('Node producers with two certificates: each runs what it may; the rest is refused with ERR_NOT_AUTHORIZED, nothing stored', async (t) => {
  t.timeout(120000);
  const a = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa2048'), headerBinding: true });
  const b = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa1024'), headerBinding: true });
  try {
    const okA = await a.sendTask('admin.wipe', [], {}, { queue: QUEUE });
    const okB = await b.sendTask('billing.charge', [], {}, { queue: QUEUE });
    t.is(await okA.get({ timeout: 30000 }), 'admin.wipe');
    t.is(await okB.get({ timeout: 30000 }), 'billing.charge');
    const noB = await b.sendTask('admin.wipe', [], {}, { queue: QUEUE });
    const noA = await a.sendTask('billing.charge', [], {}, { queue: QUEUE });
    const eB = await refusalOf(noB.id);
    const eA = await refusalOf(noA.id);
    t.like(eB, { code: 'ERR_NOT_AUTHORIZED', check: 'authorization', action: 'reject', task: 'admin.wipe', signer: new Certificate(readFileSync(fx.pathOf(fx.cert('rsa1024')))).id });
    t.like(eA, { code: 'ERR_NOT_AUTHORIZED', check: 'authorization', action: 'reject', task: 'billing.charge', signer: certA().id });
    t.regex(eB!.reason, /\(CN "worker rsa1024"\) is not authorized to call task "admin.wipe"/);
    // Rejected, not run, no result: the queue and kombu's unacked hash are empty.
    t.false(ran.includes(noB.id));
    t.false(ran.includes(noA.id));
    t.is(await meta(noB.id), null);
    t.is(await meta(noA.id), null);
    t.is(await until(async () => (await r.llen(QUEUE)) + (await r.hlen('unacked')), 0), 0);
  } finally {
    await a.close();
    await b.close();
  }
});

test.serial('a bound body re-published under an authorized signer’s other task name is refused by the binding, first', async (t) => {
  t.timeout(120000);
  // rsa1024 may call billing.*: its signed billing.charge body, with the task header changed to
  // another billing task it may call, and to admin.wipe, which it may not.
  const sb = signer('rsa1024');
  const [m] = await encodeTaskMessages([bindHeaders(buildTaskMessage('billing.charge', [], {}, { queue: QUEUE, id: 'tamper-1' }))], sb);
  await r.lpush(QUEUE, redisEnvelope({ ...m!, headers: { ...m!.headers, task: 'billing.refund' } }));
  await r.lpush(QUEUE, redisEnvelope({ ...m!, headers: { ...m!.headers, task: 'admin.wipe', id: 'tamper-2' } }));
  // An unbound body (no headerBinding) from a signer that may call the task.
  const [u] = await encodeTaskMessages([buildTaskMessage('billing.charge', [], {}, { queue: QUEUE, id: 'unbound-1' })], sb);
  await r.lpush(QUEUE, redisEnvelope(u!));
  const e1 = await refusalOf('tamper-1');
  const e2 = await refusalOf('tamper-2');
  const e3 = await refusalOf('unbound-1');
  t.like(e1, { code: 'ERR_HEADER_MISMATCH', check: 'header-binding', task: 'billing.refund', action: 'reject' });
  t.like(e2, { code: 'ERR_HEADER_MISMATCH', check: 'header-binding', task: 'admin.wipe', action: 'reject' });
  t.like(e3, { code: 'ERR_HEADER_MISMATCH', check: 'header-binding', action: 'reject' });
  t.regex(e3!.reason, /Header binding required/);
  for (const id of ['tamper-1', 'tamper-2', 'unbound-1']) {
    t.false(ran.includes(id));
    t.is(await meta(id), null);
  }
  // The untouched message runs.
  await r.lpush(QUEUE, redisEnvelope(m!));
  await until(async () => ran.includes('tamper-1'), true);
  t.truthy(await until(async () => (await meta('tamper-1')) !== null, true));
});

interface Sent {
  ids: string[];
  results: { ok: boolean; value?: unknown }[];
}

test.serial('a Python Celery producer: with the celery_sign_binding hook, authorized runs, unauthorized is refused, a changed task header is refused; without the hook, refused as unbound', async (t) => {
  t.timeout(180000);
  const env = (bind: boolean): NodeJS.ProcessEnv =>
    wireEnv(pki, redis.url(), 'good', {
      PYTHONPATH: `${PY_DIR}:${PYTHON_PKG}`,
      ...(bind ? { WIRE_BIND_PRODUCER: '1' } : {}),
    });
  const bound = await runScript<Sent>(
    'wire_producer.py',
    {
      op: 'send',
      tasks: [
        { name: 'wire.add', args: [1, 2], options: { queue: QUEUE, expires: 600 } },
        { name: 'billing.charge', args: [], options: { queue: QUEUE } },
      ],
      wait: false,
    },
    { processEnv: env(true) },
  );
  const stock = await runScript<Sent>(
    'wire_producer.py',
    { op: 'send', tasks: [{ name: 'wire.add', args: [1, 2], options: { queue: QUEUE } }], wait: false },
    { processEnv: env(false) },
  );
  const [okId, noId] = bound.ids as [string, string];
  await until(async () => ran.includes(okId), true, 45000);
  t.true(ran.includes(okId), 'the bound, authorized task ran');
  t.is(JSON.parse((await meta(okId))!).result, 'wire.add');
  t.like(await refusalOf(noId), { code: 'ERR_NOT_AUTHORIZED', check: 'authorization', task: 'billing.charge', signer: certA().id });
  t.like(await refusalOf(stock.ids[0]!), { code: 'ERR_HEADER_MISMATCH', check: 'header-binding', task: 'wire.add' });
  t.false(ran.includes(noId));
  t.false(ran.includes(stock.ids[0]!));
  t.is(await meta(noId), null);
  // A message the hook bound, taken off the broker and re-published with another task name
  // (one its signer may call): refused by the binding; the untouched one runs.
  const captured = await runScript<Sent>(
    'wire_producer.py',
    { op: 'send', tasks: [{ name: 'wire.add', args: [5, 5], options: { queue: 'authz-capture' } }], wait: false },
    { processEnv: env(true) },
  );
  const raw = (await r.rpop('authz-capture'))!;
  const envelope = JSON.parse(raw) as { headers: Record<string, unknown> };
  t.is(envelope.headers.id, captured.ids[0]);
  await r.lpush(QUEUE, JSON.stringify({ ...envelope, headers: { ...envelope.headers, task: 'admin.wipe' } }));
  t.like(await refusalOf(captured.ids[0]!), { code: 'ERR_HEADER_MISMATCH', check: 'header-binding', task: 'admin.wipe', action: 'reject' });
  t.false(ran.includes(captured.ids[0]!));
  await r.lpush(QUEUE, raw);
  t.true(await until(async () => ran.includes(captured.ids[0]!), true, 45000), 'the untouched Python-bound message runs');
});

test.serial('a chain: the worker binds the next task it sends, so a worker requiring binding and authorizing runs it', async (t) => {
  t.timeout(120000);
  const a = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa2048'), headerBinding: true });
  try {
    const before = events.length;
    const res = await a.send(chain(a.signature('wire.add', [1, 2], {}, { queue: QUEUE }), a.signature('admin.wipe', [], {}, { queue: QUEUE })));
    t.is(await (res as { get(o: object): Promise<unknown> }).get({ timeout: 30000 }), 'admin.wipe');
    t.is(events.length, before, 'nothing refused');
  } finally {
    await a.close();
  }
});
