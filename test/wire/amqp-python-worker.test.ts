/**
 * Node producer -> real Python Celery 5.7 worker (prefork, 2 processes,
 * setup_security(), broker `pyamqp://`) over a real rabbitmq-server, results
 * in Redis: results and failures come back, headers arrive as sent, refused
 * messages are dropped the way Celery drops them while the next good one
 * runs, a header-bound message runs on the Python worker (which ignores the
 * binding), a Python and a Node worker share one queue, and 10,000 tasks run
 * exactly once each.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import {
  createClient,
  createWorker,
  json,
  TaskFailedError,
  type BrokerTransport,
  type CeleryClient,
  type OutgoingMessage,
} from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { openTransport } from '../../lib/wire/transport.js';
import { queueDepth, until } from './helpers/amqp.js';
import { makePki, serializer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'py';
let rabbit: RabbitServer;
let redis: RedisServer;
let pki: Pki;
let worker: CeleryWorker;
let client: CeleryClient;
let transport: BrokerTransport;
let r: Redis;

test.before(async () => {
  [rabbit, redis] = await Promise.all([startRabbit(), startRedis()]);
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  worker = await startCeleryWorker(pki, {
    broker: rabbit.pyUrl,
    queues: [QUEUE],
    pool: 'prefork',
    concurrency: 2,
    extraEnv: { WIRE_BACKEND: redis.url(), WIRE_PREFETCH: '16' },
  });
  client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki) });
  await client.connect();
  transport = await openTransport(rabbit.url);
});

test.after.always(async () => {
  await client?.close();
  await transport?.close();
  await worker?.stop();
  r?.disconnect();
  await rabbit?.stop();
  await redis?.stop();
  pki?.cleanup();
});

test.serial('a signed task runs on the Python worker (pyamqp) and its result comes back', async (t) => {
  t.timeout(30000);
  const res = await client.sendTask('wire.add', [2, 3], {}, { queue: QUEUE });
  t.is(await res.get({ timeout: 20000 }), 5);
  t.is(await res.status(), 'SUCCESS');
});

test.serial('the Python worker sees the headers and properties as sent', async (t) => {
  t.timeout(30000);
  const res = await client.sendTask('wire.echo', [1, 'two', { three: [3, null] }], { k: 1.5, s: 'ünï' }, {
    queue: QUEUE,
    countdown: 0.5,
    expires: 120,
    priority: 5,
    timeLimit: 30,
    softTimeLimit: 20,
    rootId: 'root-1',
    parentId: 'parent-1',
    headers: { x_custom: 'hello' },
  });
  const out = (await res.get({ timeout: 20000 })) as { args: unknown[]; kwargs: Record<string, unknown>; request: Record<string, unknown> };
  t.deepEqual(out.args, [1, 'two', { three: [3, null] }]);
  t.deepEqual(out.kwargs, { k: 1.5, s: 'ünï' });
  const q = out.request;
  t.is(q.id, res.id);
  t.is(q.correlation_id, res.id);
  t.is(q.reply_to, client.oid);
  t.is(q.root_id, 'root-1');
  t.is(q.parent_id, 'parent-1');
  t.deepEqual(q.timelimit, [30, 20]);
  t.is(q.priority, 5);
  t.is(q.routing_key, QUEUE);
  t.is(q.x_custom, 'hello');
  t.regex(String(q.eta), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/);
  t.is(q.argsrepr, "[1, 'two', {'three': [3, None]}]");
  t.is(q.kwargsrepr, "{'k': 1.5, 's': 'ünï'}");
  t.is(q.celery_sign_binding, null);
});

test.serial('a Python exception comes back as TaskFailedError with the Python traceback', async (t) => {
  t.timeout(30000);
  const res = await client.sendTask('wire.fail', ['boom'], {}, { queue: QUEUE });
  const err = await t.throwsAsync(res.get({ timeout: 20000 }), { instanceOf: TaskFailedError });
  t.is(err!.excType, 'ValueError');
  t.deepEqual(err!.excMessage, ['boom']);
  t.regex(err!.traceback!, /raise ValueError\(message\)\nValueError: boom\n$/);
});

test.serial('header binding: the Python worker runs a bound task and ignores the binding', async (t) => {
  t.timeout(30000);
  const bound = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki), headerBinding: true });
  try {
    const res = await bound.sendTask('wire.echo', [7], { k: 'v' }, { queue: QUEUE, countdown: 0.2, expires: 60 });
    const out = (await res.get({ timeout: 20000 })) as { args: unknown[]; kwargs: Record<string, unknown>; request: Record<string, unknown> };
    t.deepEqual(out.args, [7]);
    t.deepEqual(out.kwargs, { k: 'v' });
    // The binding reached the Python worker inside the verified body, and Celery let it be.
    const b = out.request.celery_sign_binding as { v: number; alg: string; digest: string };
    t.like(b, { v: 1, alg: 'sha256' });
    t.regex(b.digest, /^[0-9a-f]{64}$/);
    const add = await bound.sendTask('wire.add', [40, 2], {}, { queue: QUEUE });
    t.is(await add.get({ timeout: 20000 }), 42);
  } finally {
    await bound.close();
  }
});

function tamper(payload: string): string {
  const raw = Buffer.from(payload, 'base64');
  const at = raw.lastIndexOf('[[');
  raw[at + 2] = raw[at + 2]! ^ 1; // a digit of args
  return raw.toString('base64');
}

async function good(id: string): Promise<OutgoingMessage> {
  const [m] = await encodeTaskMessages([buildTaskMessage('wire.add', [20, 22], {}, { id, queue: QUEUE })], serializer(pki));
  return m!;
}

test.serial('tampered, unsigned, wrongly signed and unknown-signer messages are refused; the next good one runs', async (t) => {
  t.timeout(60000);
  const before = worker.logs().length;
  const tampered = await good('amqp-bad-tampered');
  tampered.body = tamper(tampered.body);
  const unsigned: OutgoingMessage = {
    ...(await good('amqp-bad-unsigned')),
    contentType: 'application/json',
    body: json.dumps([[20, 22], {}, { callbacks: null, errbacks: null, chain: null, chord: null }]),
  };
  const [wrongKey] = await encodeTaskMessages([buildTaskMessage('wire.add', [20, 22], {}, { id: 'amqp-bad-wrong-key', queue: QUEUE })], serializer(pki, 'wrong-key'));
  const [unknown] = await encodeTaskMessages([buildTaskMessage('wire.add', [20, 22], {}, { id: 'amqp-bad-unknown', queue: QUEUE })], serializer(pki, 'unknown'));
  await transport.publish([tampered, unsigned, wrongKey!, unknown!]);
  const next = await client.sendTask('wire.add', [1, 1], {}, { queue: QUEUE });
  t.is(await next.get({ timeout: 20000 }), 2);
  for (const id of ['amqp-bad-tampered', 'amqp-bad-unsigned', 'amqp-bad-wrong-key', 'amqp-bad-unknown']) {
    t.is(await r.get(`celery-task-meta-${id}`), null, `${id}: no result`);
  }
  t.is(await until(() => queueDepth(rabbit, QUEUE), 0), 0, 'all dropped: nothing left in the queue');
  // Celery: a body that fails to deserialize -> on_decode_error (CRITICAL, ack);
  // a content type not accepted -> on_invalid_task (ERROR, reject without requeue).
  await worker.waitForLog(/Received invalid task message: Refusing to deserialize untrusted content of type json/, 5000);
  const logs = worker.logs().slice(before);
  t.is((logs.match(/CRITICAL\/MainProcess\] Can't decode message body: DecodeError\(SecurityError/g) ?? []).length, 3);
  t.regex(logs, /Unknown certificate/);
});

test.serial('a Python worker and a Node worker share one queue (declared alike): every task runs once', async (t) => {
  t.timeout(60000);
  const N = 300;
  const nodeRuns = new Map<string, number>();
  const node = createWorker({
    broker: rabbit.url,
    backend: redis.url(),
    security: serializer(pki),
    queues: [QUEUE],
    concurrency: 8,
    tasks: {
      'wire.count': async ([i], _kw, ctx) => {
        nodeRuns.set(ctx.id, (nodeRuns.get(ctx.id) ?? 0) + 1);
        await r.hincrby('wire:runs', ctx.id, 1);
        await new Promise((res) => setTimeout(res, 2));
        return i;
      },
    },
  });
  await node.start();
  try {
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.count', [i], {}, { queue: QUEUE })));
    t.deepEqual(await Promise.all(sent.map((s) => s.get({ timeout: 40000 }))), Array.from({ length: N }, (_, i) => i));
    const runs = await r.hgetall('wire:runs');
    t.is(sent.filter((s) => Number(runs[s.id] ?? 0) !== 1).length, 0, 'each ran exactly once');
    const byNode = sent.filter((s) => nodeRuns.has(s.id)).length;
    t.true(byNode > 0 && byNode < N, `both workers took tasks (Node ${byNode}, Python ${N - byNode})`);
    t.log(`shared queue: Node worker ran ${byNode}, Python worker ${N - byNode}`);
  } finally {
    await node.stop();
  }
});

test.serial('10,000 tasks: none lost, none run twice', async (t) => {
  t.timeout(180000);
  await r.del('wire:runs');
  const N = 10000;
  const t0 = performance.now();
  const sent = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.count', [i], {}, { queue: QUEUE })));
  const t1 = performance.now();
  const values = await Promise.all(sent.map((s) => s.get({ timeout: 150000 })));
  const t2 = performance.now();
  t.deepEqual(values, Array.from({ length: N }, (_, i) => i));
  const runs = await r.hgetall('wire:runs');
  const counts = sent.map((s) => Number(runs[s.id] ?? 0));
  t.is(counts.filter((c) => c === 0).length, 0, 'lost');
  t.is(counts.filter((c) => c > 1).length, 0, 'run twice');
  t.is(await until(() => queueDepth(rabbit, QUEUE), 0), 0);
  const rate = (N / ((t2 - t0) / 1000)).toFixed(0);
  t.log(
    `Node producer -> RabbitMQ -> Python worker (prefork -c 2): sent ${N} in ${((t1 - t0) / 1000).toFixed(2)} s (confirmed), all results in ${((t2 - t0) / 1000).toFixed(2)} s: ${rate} tasks/s end to end`,
  );
});
