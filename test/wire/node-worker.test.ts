/**
 * Real Python Celery 5.7 producer (`app.send_task` under setup_security()) ->
 * Node worker over a real redis-server: the Python side reads the results the
 * Node worker stores (values and re-raised exceptions); unsigned, wrongly
 * signed, unknown-signer and tampered messages are refused with a typed
 * SecurityError and a security event while the next good one runs; unknown
 * and expired tasks are stored as Celery stores them; 10,000 tasks run
 * exactly once each.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import {
  createWorker,
  json,
  SecurityError,
  TaskError,
  type SecurityEvent,
  type TaskContext,
  type Worker,
} from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope } from '../../lib/wire/redis.js';
import { until } from './helpers/amqp.js';
import { makePki, runProducer, serializer, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'node';
let redis: RedisServer;
let pki: Pki;
let worker: Worker;
let r: Redis;
const runs = new Map<string, number>();
const contexts = new Map<string, TaskContext>();
const events: SecurityEvent[] = [];

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: [QUEUE],
    concurrency: 64,
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.echo': (args, kwargs, ctx) => {
        contexts.set(ctx.id, ctx);
        return { args, kwargs, signer: ctx.signer };
      },
      'wire.fail': ([message]) => {
        throw new TaskError('ValueError', [message]);
      },
      'wire.type_error': () => {
        throw new TypeError('not a number');
      },
      'wire.count': async ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
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

interface PyResult {
  ok: boolean;
  value?: unknown;
  type?: string;
  module?: string;
  message?: string;
  traceback?: string | null;
  status?: string;
}

async function send(tasks: object[], o: { signer?: 'good' | 'wrong-key' | 'unknown'; wait?: boolean } = {}): Promise<{ ids: string[]; results: PyResult[] }> {
  return runProducer(pki, redis.url(), { op: 'send', tasks, wait: o.wait ?? true, timeout: 20 }, { ...(o.signer ? { signer: o.signer } : {}) });
}

test.serial('Python sends, the Node worker runs, Python reads the results', async (t) => {
  t.timeout(60000);
  const out = await send([
    { name: 'wire.add', args: [2, 3], options: { queue: QUEUE } },
    { name: 'wire.echo', args: [1, 'two'], kwargs: { k: [1.5, null] }, options: { queue: QUEUE, priority: 7, headers: { x_custom: 'v' } } },
    { name: 'wire.fail', args: ['boom'], options: { queue: QUEUE } },
    { name: 'wire.type_error', options: { queue: QUEUE } },
  ]);
  const [add, echo, fail, typeError] = out.results;
  t.deepEqual(add, { ok: true, value: 5 });
  t.true(echo!.ok);
  const signer = (echo!.value as { signer: string }).signer;
  t.deepEqual(echo!.value, { args: [1, 'two'], kwargs: { k: [1.5, null] }, signer });
  t.regex(signer, / \d+$/); // Celery's cert id: issuer then serial
  const ctx = contexts.get(out.ids[1]!)!;
  t.is(ctx.priority, 7);
  t.is(ctx.queue, QUEUE);
  t.is(ctx.headers.x_custom, 'v');
  t.is(ctx.rootId, out.ids[1]!);
  // Python re-raises what the Node worker stored.
  t.like(fail, { ok: false, type: 'ValueError', module: 'builtins', message: 'boom', status: 'FAILURE' });
  t.like(typeError, { ok: false, type: 'TypeError', module: 'builtins', message: 'not a number' });
  t.regex(typeError!.traceback!, /TypeError: not a number/);
  const meta = json.loads((await r.get(`celery-task-meta-${out.ids[0]}`))!) as Record<string, unknown>;
  t.deepEqual(Object.keys(meta), ['status', 'result', 'traceback', 'children', 'date_done', 'task_id']);
  t.regex(meta.date_done as string, /\+00:00$/);
  t.true((await r.ttl(`celery-task-meta-${out.ids[0]}`)) > 86000);
});

test.serial('unsigned, wrongly signed, unknown signer and tampered are refused with SecurityError; the next good one runs', async (t) => {
  t.timeout(60000);
  events.length = 0;
  const unsigned = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE, serializer: 'json' } }], { wait: false });
  const wrong = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE } }], { signer: 'wrong-key', wait: false });
  const unknown = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE } }], { signer: 'unknown', wait: false });
  // Tampered: a good Python message (sent to a queue nobody reads) whose body is changed on the broker.
  const held = await send([{ name: 'wire.add', args: [40, 2], options: { queue: 'hold' } }], { wait: false });
  const item = (await r.rpop('hold'))!;
  const env = JSON.parse(item) as { body: string };
  const payload = Buffer.from(Buffer.from(env.body, 'base64').toString(), 'base64');
  const at = payload.lastIndexOf('[[');
  payload[at + 2] = payload[at + 2]! ^ 1;
  env.body = Buffer.from(payload.toString('base64')).toString('base64');
  await r.lpush(QUEUE, JSON.stringify(env));
  // Not a kombu envelope at all; and a well signed body that is not [args, kwargs, embed].
  await r.lpush(QUEUE, 'garbage, not json');
  const [shapeless] = await encodeTaskMessages([buildTaskMessage('wire.add', [], {}, { id: 'shapeless', queue: QUEUE })], serializer(pki));
  shapeless!.body = serializer(pki).serialize({ not: 'a task' });
  await r.lpush(QUEUE, redisEnvelope(shapeless!));
  const next = await send([{ name: 'wire.add', args: [2, 2], options: { queue: QUEUE } }]);
  t.deepEqual(next.results[0], { ok: true, value: 4 });
  const byId = new Map(events.map((e) => [e.taskId, e]));
  t.is(events.length, 6);
  t.like(byId.get(null), { code: 'ERR_MALFORMED_PAYLOAD', task: null, action: 'ack' });
  t.like(byId.get('shapeless'), { code: 'ERR_MALFORMED_PAYLOAD', task: 'wire.add', action: 'reject' });
  t.regex(byId.get('shapeless')!.signer!, / \d+$/);
  t.like(byId.get(unsigned.ids[0]!), { code: 'ERR_CONTENT_DISALLOWED', task: 'wire.add', queue: QUEUE, action: 'reject' });
  t.like(byId.get(wrong.ids[0]!), { code: 'ERR_BAD_SIGNATURE', action: 'ack' });
  t.like(byId.get(unknown.ids[0]!), { code: 'ERR_UNKNOWN_CERTIFICATE', action: 'ack' });
  t.like(byId.get(held.ids[0]!), { code: 'ERR_BAD_SIGNATURE', action: 'ack' });
  for (const e of events) {
    t.true(e.error instanceof SecurityError);
    t.is(e.error.code, e.code);
    t.false(/PRIVATE KEY/.test(e.reason));
  }
  for (const id of [unsigned.ids[0], wrong.ids[0], unknown.ids[0], held.ids[0]]) {
    t.is(await r.get(`celery-task-meta-${id}`), null);
  }
  t.is(await r.hlen('unacked'), 0);
  t.is(await r.llen(QUEUE), 0);
});

test.serial('an unregistered task is stored as NotRegistered, an expired one as REVOKED (as Celery)', async (t) => {
  t.timeout(60000);
  const out = await send([
    { name: 'wire.nope', options: { queue: QUEUE } },
    { name: 'wire.add', args: [1, 2], options: { queue: QUEUE, expires: '2001-01-01T00:00:00+00:00' } },
  ]);
  t.like(out.results[0], { ok: false, type: 'NotRegistered', module: 'celery.exceptions', status: 'FAILURE' });
  t.like(out.results[1], { ok: false, type: 'TaskRevokedError', status: 'REVOKED', message: 'expired' });
});

test.serial('10,000 tasks from a Python producer: none lost, none run twice', async (t) => {
  t.timeout(360000); // the producer (150 s at most), the runs (120 s) and the last results (60 s)
  const N = 10000;
  await worker.stop();
  runs.clear();
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: [QUEUE],
    concurrency: 64,
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
  });
  await worker.start();
  const t0 = performance.now();
  const out = await runProducer<{ ids: string[]; elapsed: number }>(pki, redis.url(), { op: 'bulk', name: 'wire.count', count: N, queue: QUEUE }, { timeoutMs: 150000 });
  t.is(out.ids.length, N);
  // Wait for every result (the Python side would; reading them here is faster).
  const deadline = Date.now() + 120000;
  let done = 0;
  while (Date.now() < deadline) {
    done = runs.size;
    if (done >= N && worker.stats.succeeded >= N) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  // A result is stored after its task ran (in batches, then acknowledged): wait for the last ones.
  const read = () => r.mget(...out.ids.map((id) => `celery-task-meta-${id}`));
  let values = await read();
  while (Date.now() < deadline + 60000 && values.some((v) => v === null)) {
    await new Promise((res) => setTimeout(res, 100));
    values = await read();
  }
  const t1 = performance.now();
  const results = values.map((v) => (v === null ? null : (json.loads(v) as { status: string; result: unknown })));
  t.is(results.filter((m) => m === null).length, 0, 'results missing');
  t.true(results.every((m, i) => m!.status === 'SUCCESS' && m!.result === i));
  t.is(out.ids.filter((id) => (runs.get(id) ?? 0) === 0).length, 0, 'lost');
  t.is(out.ids.filter((id) => (runs.get(id) ?? 0) > 1).length, 0, 'run twice');
  t.is(await r.llen(QUEUE), 0);
  t.is(await until(() => r.hlen('unacked'), 0, 10000), 0, 'every message acknowledged');
  t.log(
    `Python producer (send_task, ${(N / out.elapsed).toFixed(0)} sends/s) -> Node worker: ${N} tasks in ${((t1 - t0) / 1000).toFixed(2)} s including interpreter start: ${(N / ((t1 - t0) / 1000)).toFixed(0)} tasks/s end to end`,
  );
});
