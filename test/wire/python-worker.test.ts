/**
 * Node producer -> real Python Celery 5.7 worker (prefork, 2 processes,
 * setup_security()) over a real redis-server: results and failures come back,
 * headers arrive as sent, refused messages are dropped the way Celery drops
 * them while the next good one runs, and 10,000 tasks run exactly once each.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { createClient, createWorker, json, TaskFailedError, type CeleryClient, type OutgoingMessage } from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope } from '../../lib/wire/redis.js';
import { makePki, serializer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'py';
let redis: RedisServer;
let pki: Pki;
let worker: CeleryWorker;
let client: CeleryClient;
let r: Redis;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  worker = await startCeleryWorker(pki, { broker: redis.url(), queues: [QUEUE], pool: 'prefork', concurrency: 2, extraEnv: { WIRE_PREFETCH: '16' } });
  client = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki) });
  await client.connect();
});

test.after.always(async () => {
  await client?.close();
  await worker?.stop();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

test.serial('a signed task runs on the Python worker and its result comes back', async (t) => {
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
  const out = (await res.get({ timeout: 20000 })) as {
    args: unknown[];
    kwargs: Record<string, unknown>;
    request: Record<string, unknown>;
  };
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
  t.regex(String(q.origin), /^gen\d+@/);
  t.is(q.argsrepr, "[1, 'two', {'three': [3, None]}]");
  t.is(q.kwargsrepr, "{'k': 1.5, 's': 'ünï'}");
});

test.serial('a Python exception comes back as TaskFailedError with the Python traceback', async (t) => {
  t.timeout(30000);
  const res = await client.sendTask('wire.fail', ['boom'], {}, { queue: QUEUE });
  const err = await t.throwsAsync(res.get({ timeout: 20000 }), { instanceOf: TaskFailedError });
  t.is(err!.code, 'ERR_TASK_FAILED');
  t.is(err!.status, 'FAILURE');
  t.is(err!.excType, 'ValueError');
  t.is(err!.excModule, 'builtins');
  t.deepEqual(err!.excMessage, ['boom']);
  t.regex(err!.traceback!, /^Traceback \(most recent call last\):/);
  t.regex(err!.traceback!, /raise ValueError\(message\)\nValueError: boom\n$/);
  // propagate: false resolves to the stored exception
  t.deepEqual(await res.get({ timeout: 1000, propagate: false }), { exc_type: 'ValueError', exc_message: ['boom'], exc_module: 'builtins' });
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
  const tampered = await good('bad-tampered');
  tampered.body = tamper(tampered.body);
  const unsigned: OutgoingMessage = {
    ...(await good('bad-unsigned')),
    contentType: 'application/json',
    body: json.dumps([[20, 22], {}, { callbacks: null, errbacks: null, chain: null, chord: null }]),
  };
  const [wrongKey] = await encodeTaskMessages([buildTaskMessage('wire.add', [20, 22], {}, { id: 'bad-wrong-key', queue: QUEUE })], serializer(pki, 'wrong-key'));
  const [unknown] = await encodeTaskMessages([buildTaskMessage('wire.add', [20, 22], {}, { id: 'bad-unknown', queue: QUEUE })], serializer(pki, 'unknown'));
  for (const m of [tampered, unsigned, wrongKey!, unknown!]) await r.lpush(QUEUE, redisEnvelope(m));
  const next = await client.sendTask('wire.add', [1, 1], {}, { queue: QUEUE });
  t.is(await next.get({ timeout: 20000 }), 2);
  for (const id of ['bad-tampered', 'bad-unsigned', 'bad-wrong-key', 'bad-unknown']) {
    t.is(await r.get(`celery-task-meta-${id}`), null, `${id}: no result`);
  }
  t.is(await r.llen(QUEUE), 0);
  t.is(await eventually(() => r.hlen('unacked'), 0), 0, 'all dropped: nothing left unacknowledged');
  // Celery: a body that fails to deserialize -> on_decode_error (CRITICAL, ack);
  // a content type not accepted -> on_invalid_task (ERROR, reject without requeue).
  await worker.waitForLog(/Received invalid task message: Refusing to deserialize untrusted content of type json/, 5000);
  const decodeErrors = worker.logs().match(/CRITICAL\/MainProcess\] Can't decode message body: DecodeError\(SecurityError/g) ?? [];
  t.is(decodeErrors.length, 3);
  t.regex(worker.logs(), /Unknown certificate/);
});

test.serial('10,000 tasks: none lost, none run twice', async (t) => {
  t.timeout(180000);
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
  t.is(await r.llen(QUEUE), 0);
  t.is(await eventually(() => r.hlen('unacked'), 0), 0);
  const rate = (N / ((t2 - t0) / 1000)).toFixed(0);
  t.log(`Node producer -> Python worker (prefork -c 2): sent ${N} in ${((t1 - t0) / 1000).toFixed(2)} s, all results in ${((t2 - t0) / 1000).toFixed(2)} s: ${rate} tasks/s end to end`);
});

test.serial('a Python and a Node worker share one queue (BRPOP and BLMOVE waits on the same lists): each task runs once', async (t) => {
  t.timeout(120000);
  const byNode = new Set<string>();
  const node = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: [QUEUE],
    concurrency: 2,
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        await r.hincrby('wire:runs', ctx.id, 1);
        byNode.add(ctx.id);
        return i;
      },
    },
  });
  await node.start();
  try {
    // Small groups with pauses: both workers are mostly waiting on the empty list when a task comes.
    const sent = [];
    for (let k = 0; k < 60; k++) {
      for (let j = 0; j < 1 + (k % 4); j++) sent.push(await client.sendTask('wire.count', [k], {}, { queue: QUEUE }));
      await new Promise((res) => setTimeout(res, 20 + (k % 5) * 10));
    }
    await Promise.all(sent.map((s) => s.get({ timeout: 60000 })));
    const runs = await r.hgetall('wire:runs');
    const counts = sent.map((s) => Number(runs[s.id] ?? 0));
    const nodeRan = sent.filter((s) => byNode.has(s.id)).length;
    t.log(`${sent.length} tasks: ${nodeRan} run by the Node worker, ${sent.length - nodeRan} by the Python worker`);
    t.is(counts.filter((c) => c === 0).length, 0, 'lost');
    t.is(counts.filter((c) => c > 1).length, 0, 'run twice');
    t.true(nodeRan > 0 && nodeRan < sent.length, 'both workers took tasks');
    t.is(await r.llen(QUEUE), 0);
  } finally {
    await node.stop({ timeout: 5000 });
  }
});
