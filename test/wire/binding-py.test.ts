/**
 * python/celery_sign_binding on a real Python Celery 5.7 worker
 * (`celery -A wire_app worker`, prefork, under setup_security(), with
 * `install_worker(app, require=True, authorize=...)`) over a real
 * redis-server, fed by Node clients signing with two certificates and by a
 * Python producer with the `before_task_publish` hook: what the Node client
 * binds (`headerBinding: true`) runs; a changed task header on the same
 * signed body, an unbound message and a signer calling a task it may not
 * are rejected before they run (Celery's on_invalid_task: the message
 * leaves the queue, no result, the task never ran), with celery-sign's codes
 * in Celery's log line.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import { Certificate, chain, createClient, FSCertStore, PrivateKey, SecureSerializer } from 'celery-sign';
import { bindHeaders } from '../../lib/wire/binding.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope } from '../../lib/wire/redis.js';
import * as fx from '../helpers/fixtures.js';
import { pythonPath } from '../helpers/python.js';
import { until } from './helpers/amqp.js';
import { makePki, PY_DIR, runScript, startCeleryWorker, wireEnv, type CeleryWorker, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'pybind';
const PYTHON_PKG = join(PY_DIR, '..', '..', 'python');
let redis: RedisServer;
let pki: Pki;
let r: Redis;
let py: CeleryWorker;

function signer(name: 'rsa2048' | 'rsa1024'): SecureSerializer {
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(fx.pathOf(fx.key(`${name}.pkcs8`)))),
    cert: new Certificate(readFileSync(fx.pathOf(fx.cert(name)))),
    store: new FSCertStore(pki.storeDir),
  });
}
const idOf = (name: string): string => new Certificate(readFileSync(fx.pathOf(fx.cert(name)))).id;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  py = await startCeleryWorker(pki, {
    broker: redis.url(),
    queues: [QUEUE],
    extraEnv: {
      PYTHONPATH: `${PY_DIR}:${PYTHON_PKG}`,
      WIRE_BIND_WORKER: 'require',
      WIRE_AUTHORIZE: JSON.stringify([
        { signer: { id: idOf('rsa2048') }, tasks: ['wire.*'] },
        { signer: { cn: 'worker rsa1024' }, tasks: ['wire.add'] },
      ]),
      // The celery CLI signs as 'worker rsa2048': it may ping, nothing else.
      WIRE_AUTHORIZE_CONTROL: JSON.stringify([{ signer: { cn: 'worker rsa2048' }, commands: ['ping'] }]),
    },
  });
});

test.after.always(async () => {
  await py?.stop();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

const meta = (id: string): Promise<string | null> => r.get(`celery-task-meta-${id}`);
const drained = async (): Promise<number> => (await r.llen(QUEUE)) + (await r.hlen('unacked'));
const refusedLine = (code: string, id: string): RegExp => new RegExp(`Received invalid task message: ${code}: .*\\[task "[^"]*" id "${id}"\\]`);

test.serial('Node clients with headerBinding: bound messages run on the Python worker; the binding reaches the task', async (t) => {
  t.timeout(120000);
  const a = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa2048'), headerBinding: true });
  const b = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa1024'), headerBinding: true });
  try {
    const echo = await a.sendTask('wire.echo', [1], {}, { queue: QUEUE, expires: 600 });
    const add = await b.sendTask('wire.add', [2, 3], {}, { queue: QUEUE });
    const got = (await echo.get({ timeout: 60000 })) as { request: { celery_sign_binding: { v: number; alg: string; digest: string } } };
    t.like(got.request.celery_sign_binding, { v: 1, alg: 'sha256' });
    t.regex(got.request.celery_sign_binding.digest, /^[0-9a-f]{64}$/);
    t.is(await add.get({ timeout: 60000 }), 5);
  } finally {
    await a.close();
    await b.close();
  }
});

test.serial('refused before running: a changed task header on a bound body, an unbound message, a signer calling a task it may not', async (t) => {
  t.timeout(120000);
  const sa = signer('rsa2048');
  // rsa2048's bound wire.add body, re-published with the task header changed (to a task it may call).
  const [m] = await encodeTaskMessages([bindHeaders(buildTaskMessage('wire.add', [1, 1], {}, { queue: QUEUE, id: 'py-tamper' }))], sa);
  await r.lpush(QUEUE, redisEnvelope({ ...m!, headers: { ...m!.headers, task: 'wire.count' } }));
  // Unbound (no headerBinding), from a signer that may call it.
  const [u] = await encodeTaskMessages([buildTaskMessage('wire.count', [7], {}, { queue: QUEUE, id: 'py-unbound' })], sa);
  await r.lpush(QUEUE, redisEnvelope(u!));
  // rsa1024 may call wire.add only.
  const b = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa1024'), headerBinding: true });
  let denied: string;
  try {
    denied = (await b.sendTask('wire.count', [8], {}, { queue: QUEUE })).id;
  } finally {
    await b.close();
  }
  await py.waitForLog(refusedLine('ERR_HEADER_MISMATCH', 'py-tamper'), 60000);
  await py.waitForLog(refusedLine('ERR_HEADER_MISMATCH', 'py-unbound'), 60000);
  await py.waitForLog(refusedLine('ERR_NOT_AUTHORIZED', denied), 60000);
  t.regex(py.logs(), /Header binding mismatch.*\[task "wire.count" id "py-tamper"\]/);
  t.regex(py.logs(), /Header binding required.*\[task "wire.count" id "py-unbound"\]/);
  t.regex(py.logs(), new RegExp(`Signer "[^"]+" \\(CN "worker rsa1024"\\) is not authorized to call task "wire.count" \\[task "wire.count" id "${denied}"\\]`));
  t.is(await until(drained, 0), 0, 'rejected: nothing left in the queue or unacked');
  for (const id of ['py-tamper', 'py-unbound', denied]) {
    t.is(await meta(id), null, `no result for ${id}`);
    t.is(await r.hget('wire:runs', id), null, `${id} never ran`);
  }
  // The untouched bound message runs.
  await r.lpush(QUEUE, redisEnvelope(m!));
  t.true(await until(async () => (await meta('py-tamper')) !== null, true, 60000));
  t.is(JSON.parse((await meta('py-tamper'))!).result, 2);
});

test.serial('a Python producer with the hook -> the Python worker with the check: runs', async (t) => {
  t.timeout(120000);
  const out = await runScript<{ results: { ok: boolean; value?: unknown }[] }>(
    'wire_producer.py',
    { op: 'send', tasks: [{ name: 'wire.add', args: [20, 22], options: { queue: QUEUE, countdown: 0 } }], wait: true, timeout: 60 },
    { processEnv: wireEnv(pki, redis.url(), 'good', { PYTHONPATH: `${PY_DIR}:${PYTHON_PKG}`, WIRE_BIND_PRODUCER: '1' }) },
  );
  t.deepEqual(out.results, [{ ok: true, value: 42 }]);
});

test('the Python digest is the Node digest: non-ASCII task names, ids, eta and expires, missing headers', async (t) => {
  const { bindingDigest } = await import('../../lib/wire/binding.js');
  const { execFileSync } = await import('node:child_process');
  const { pythonPath } = await import('../helpers/python.js');
  const cases: Record<string, unknown>[] = [
    { task: 'wire.add', id: 'a', eta: null, expires: null },
    { task: 'tâche.ünïcode.中文', id: 'ø-😀', eta: '2026-12-01T15:00:00.123456+00:00', expires: '2026-12-02T00:00:00+01:00' },
    { task: 'a"b\\c\n\t\u0001\u007f\u2028', id: '' },
    { id: 'no-task', eta: 5 },
  ];
  const py = execFileSync(
    pythonPath('current'),
    ['-c', 'import json,sys\nfrom celery_sign_binding import binding_digest\nprint(json.dumps([binding_digest(h) for h in json.load(sys.stdin)]))'],
    { input: JSON.stringify(cases), encoding: 'utf8', env: { ...process.env, PYTHONPATH: PYTHON_PKG } },
  );
  t.deepEqual(JSON.parse(py), cases.map((h) => bindingDigest(h)));
});

test.serial('a chain through the Python worker: the worker binds the next task it sends, so it passes its own check', async (t) => {
  t.timeout(120000);
  const a = createClient({ broker: redis.url(), backend: redis.url(), security: signer('rsa2048'), headerBinding: true });
  try {
    const res = await a.send(chain(a.signature('wire.add', [1, 2], {}, { queue: QUEUE }), a.signature('wire.add', [10], {}, { queue: QUEUE })));
    t.is(await (res as { get(o: object): Promise<unknown> }).get({ timeout: 60000 }), 13);
  } finally {
    await a.close();
  }
});

test.serial('authorize_control on the Python worker: the CLI signer may ping; inspect active and control shutdown are refused, logged, unanswered', async (t) => {
  t.timeout(120000);
  const cli = (...args: string[]): { code: number | null; out: string } => {
    const res = spawnSync(join(dirname(pythonPath('current')), 'celery'), ['-A', 'wire_app', ...args, '--json', '-t', '5'], {
      cwd: PY_DIR,
      env: wireEnv(pki, redis.url()),
      encoding: 'utf8',
      timeout: 60000,
    });
    return { code: res.status, out: res.stdout };
  };
  const ping = cli('inspect', 'ping');
  t.is(ping.code, 0, ping.out);
  t.deepEqual(Object.values(JSON.parse(ping.out.trim().split('\n').pop()!) as Record<string, unknown>), [{ ok: 'pong' }]);
  t.is(cli('inspect', 'active').code, 69, 'no reply to a refused command');
  t.is(cli('control', 'shutdown').code, 69);
  await py.waitForLog(/Refused remote control command: ERR_NOT_AUTHORIZED: Signer "[^"]+" \(CN "worker rsa2048"\) is not authorized to send remote control command "active"/);
  await py.waitForLog(/is not authorized to send remote control command "shutdown"/);
  t.pass('both refusals logged');
  // Still up: the refused shutdown did not stop it.
  t.is(cli('inspect', 'ping').code, 0);
});

test('the Python Authorizer of commands: rules name commands, aliases decide under the main name', (t) => {
  const script = [
    'import json',
    'from celery_sign_binding import Authorizer, AUTHORIZED_AS',
    "a = Authorizer([{'signer': {'cn': 'ops'}, 'commands': ['revoke', 'dump_*', 'active']}], field='commands')",
    "out = [a.allowed('id', 'ops', AUTHORIZED_AS.get(c, c)) for c in ['revoke', 'terminate', 'dump_active', 'shutdown']]",
    'try:',
    "    Authorizer([{'signer': {'cn': 'ops'}, 'tasks': ['ping']}], field='commands'); out.append('accepted')",
    'except TypeError as e:',
    '    out.append(str(e))',
    'print(json.dumps(out))',
  ].join('\n');
  const res = spawnSync(pythonPath('current'), ['-c', script], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: PYTHON_PKG } });
  t.is(res.status, 0, res.stderr);
  t.deepEqual(JSON.parse(res.stdout), [true, true, true, false, 'authorize: a rule is {signer, commands}']);
});
