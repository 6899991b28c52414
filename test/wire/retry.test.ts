/**
 * Retries on a real redis-server, with a stock Python Celery 5.7 worker
 * (prefork, setup_security()) and producer beside a Node worker:
 *
 * - `ctx.retry()` re-sends the task signed, with `retries + 1`, the same id,
 *   root, parent, embed, expires and time limits, to the queue it came from;
 *   `RETRY` is stored as a Python worker stores it (compared with one), and
 *   the re-sent message has the headers a Python worker's retry has;
 * - a task sent by Python and retried by the Node worker runs again (and
 *   succeeds) on a Python worker, and a Python worker's retry runs again on
 *   the Node worker (runs counted per task id);
 * - a retried task keeps its chain: the next task runs after the retry succeeds;
 * - spent retries: `MaxRetriesExceededError` (celery.exceptions), or `exc`;
 * - `autoretryFor`, `dontAutoretryFor`, `retryBackoff`, `retryJitter`;
 * - `retries: false` makes no key necessary and `ctx.retry` fail the task;
 * - over AMQP (rabbitmq-server, results in Redis): the same retries, both
 *   ways; with `rpc://` results, the retry answers the client's reply queue.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import {
  createWorker,
  ImproperlyConfigured,
  json,
  MaxRetriesExceededError,
  Retry,
  TaskError,
  type TaskContext,
  type TaskRetriedEvent,
  type Worker,
} from 'celery-sign';
import { makePki, runProducer, serializer, startCeleryWorker, type CeleryWorker, type Pki, type ProducerResult } from './helpers/celery.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { queueForPriority } from '../../lib/wire/redis.js';
import { openTransport } from '../../lib/wire/transport.js';
import { amqpProducer, queueDepth, until } from './helpers/amqp.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';

const NODE_Q = 'node-retry';
const PY_Q = 'py-retry';
let redis: RedisServer;
let pki: Pki;
let r: Redis;
let py: CeleryWorker;
let worker: Worker;
let rabbit: RabbitServer;
let pyAmqp: CeleryWorker;
let amqpWorker: Worker;
const NODE_AQ = 'node-retry-amqp';
const PY_AQ = 'py-retry-amqp';
const retried: TaskRetriedEvent[] = [];
const contexts = new Map<string, TaskContext[]>();

/** The Node twin of wire_app.py's `wire.retry`. */
async function nodeRetry(args: unknown[], kwargs: Record<string, unknown>, ctx: TaskContext): Promise<unknown> {
  await r.hincrby('wire:runs', ctx.id, 1);
  contexts.set(ctx.id, [...(contexts.get(ctx.id) ?? []), ctx]);
  const times = typeof kwargs.times === 'number' ? kwargs.times : 1;
  if (ctx.retries < times) {
    ctx.retry({
      countdown: typeof kwargs.countdown === 'number' ? kwargs.countdown : 0,
      ...(typeof kwargs.to === 'string' ? { queue: kwargs.to } : {}),
      exc: new TaskError('ValueError', ['again']),
      ...(typeof kwargs.maxRetries === 'number' ? { maxRetries: kwargs.maxRetries } : {}),
    });
  }
  return { retries: ctx.retries, worker: 'node', args };
}

test.before(async () => {
  [redis, rabbit] = await Promise.all([startRedis(), startRabbit()]);
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  [py, pyAmqp] = await Promise.all([
    startCeleryWorker(pki, { broker: redis.url(), queues: [PY_Q], pool: 'prefork', concurrency: 2 }),
    startCeleryWorker(pki, { broker: rabbit.pyUrl, queues: [PY_AQ], pool: 'prefork', concurrency: 2, extraEnv: { WIRE_BACKEND: redis.url() } }),
  ]);
  amqpWorker = createWorker({
    broker: rabbit.url,
    backend: redis.url(),
    security: serializer(pki),
    queues: [NODE_AQ],
    handleSignals: false,
    tasks: { 'wire.retry': nodeRetry },
  });
  await amqpWorker.start();
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: [NODE_Q],
    concurrency: 8,
    tasks: {
      'wire.retry': nodeRetry,
      'wire.spent': (_args, kwargs, ctx) =>
        ctx.retry({ countdown: 0, maxRetries: 2, ...(kwargs.exc ? { exc: new TaskError('KeyError', ['k']) } : {}) }),
      'wire.catches': (_args, _kwargs, ctx) => {
        try {
          return ctx.retry({ countdown: 0, maxRetries: 0 });
        } catch (err) {
          if (err instanceof MaxRetriesExceededError) return `gave up: ${err.message}`;
          throw err;
        }
      },
      'wire.auto': {
        run: async (_args, kwargs, ctx) => {
          await r.hincrby('wire:runs', ctx.id, 1);
          if (ctx.retries < Number(kwargs.fail ?? 0)) throw new TypeError(`attempt ${ctx.retries}`);
          if (kwargs.range) throw new RangeError('never retried');
          return ctx.retries;
        },
        autoretryFor: [TypeError, 'RangeError'],
        dontAutoretryFor: [RangeError],
        retryKwargs: { countdown: 0 },
        maxRetries: 3,
      },
      'wire.backoff': {
        run: (_args, _kwargs, ctx) => {
          throw new TaskError('ConnectionError', [`attempt ${ctx.retries}`]);
        },
        autoretryFor: ['ConnectionError'],
        retryKwargs: { queue: 'parked-backoff' },
        retryBackoff: 4,
        retryJitter: false,
      },
      'wire.default_delay': {
        run: (_args, _kwargs, ctx) => ctx.retry({ queue: 'parked-delay' }),
        defaultRetryDelay: 45,
      },
    },
  });
  worker.on('task-retried', (e: TaskRetriedEvent) => retried.push(e));
  await worker.start();
});

test.after.always(async () => {
  await worker?.stop({ timeout: 5000 });
  await amqpWorker?.stop({ timeout: 5000 });
  await py?.stop();
  await pyAmqp?.stop();
  await rabbit?.stop();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

async function send(tasks: object[], wait = true): Promise<{ ids: string[]; results: ProducerResult[] }> {
  return runProducer(pki, redis.url(), { op: 'send', tasks, wait, timeout: 40 });
}

async function runsOf(id: string): Promise<number> {
  return Number((await r.hget('wire:runs', id)) ?? 0);
}

interface Envelope {
  body: string;
  headers: Record<string, unknown>;
  properties: Record<string, unknown> & { delivery_info: { exchange: string; routing_key: string } };
}

/** The one message in `queue` (kombu's list for its priority). */
async function parked(queue: string, priority = 0): Promise<Envelope> {
  const list = queueForPriority(queue, priority);
  if ((await eventually(() => r.llen(list), 1, 30000)) !== 1) throw new Error(`nothing in ${JSON.stringify(list)}`);
  return JSON.parse((await r.lindex(list, 0))!) as Envelope;
}

function bodyOf(env: Envelope): unknown {
  // kombu's Redis envelope base64s the auth payload once more.
  return serializer(pki, 'verify').deserialize(Buffer.from(env.body, 'base64').toString());
}

async function metaOf(id: string): Promise<Record<string, unknown>> {
  return json.loads((await r.get(`celery-task-meta-${id}`))!) as Record<string, unknown>;
}

test.serial('a retry runs again on the same queue, with retries + 1, the same id, root and parent', async (t) => {
  t.timeout(60000);
  const out = await send([{ name: 'wire.retry', args: [7], kwargs: { times: 2 }, options: { queue: NODE_Q, root_id: 'root-r', parent_id: 'parent-r' } }]);
  const id = out.ids[0]!;
  t.deepEqual(out.results[0], { ok: true, value: { retries: 2, worker: 'node', args: [7] } });
  t.is(await runsOf(id), 3);
  const seen = contexts.get(id)!;
  t.deepEqual(
    seen.map((c) => [c.retries, c.rootId, c.parentId, c.queue]),
    [0, 1, 2].map((n) => [n, 'root-r', 'parent-r', NODE_Q]),
  );
  t.deepEqual(
    retried.filter((e) => e.id === id).map((e) => [e.retries, e.when]),
    [
      [1, 0],
      [2, 0],
    ],
  );
  t.is((await metaOf(id)).status, 'SUCCESS');
});

test.serial('a task sent by Python and retried by the Node worker runs again, and succeeds, on a Python worker', async (t) => {
  t.timeout(60000);
  const out = await send([{ name: 'wire.retry', args: ['n2p'], kwargs: { to: PY_Q }, options: { queue: NODE_Q } }]);
  const id = out.ids[0]!;
  t.deepEqual(out.results[0], { ok: true, value: { retries: 1, worker: 'py', args: ['n2p'] } });
  t.is(await runsOf(id), 2);
  t.is(contexts.get(id)!.length, 1, 'the Node worker ran it once');
});

test.serial("a Python worker's retry runs again on the Node worker", async (t) => {
  t.timeout(60000);
  const out = await send([{ name: 'wire.retry', args: ['p2n'], kwargs: { to: NODE_Q }, options: { queue: PY_Q } }]);
  const id = out.ids[0]!;
  t.deepEqual(out.results[0], { ok: true, value: { retries: 1, worker: 'node', args: ['p2n'] } });
  t.is(await runsOf(id), 2);
  const [ctx] = contexts.get(id)!;
  t.is(ctx!.retries, 1);
  t.regex(ctx!.signer, / \d+$/); // the Python worker signed its retry
});

test.serial('RETRY is stored as a Python worker stores it, and the re-sent message is what its retry sends', async (t) => {
  t.timeout(60000);
  const options = {
    root_id: 'root-x',
    parent_id: 'parent-x',
    expires: 600,
    time_limit: 30,
    soft_time_limit: 20,
    priority: 3,
    link: { task: 'wire.add', args: [1], kwargs: {}, options: {}, subtask_type: null, immutable: false },
    chain: [{ task: 'wire.add', args: [2], kwargs: {}, options: {}, subtask_type: null, immutable: false }],
  };
  const out = await send(
    [
      { name: 'wire.retry', args: [1, 'a'], kwargs: { to: 'parked-py', countdown: 60 }, options: { ...options, queue: PY_Q } },
      { name: 'wire.retry', args: [1, 'a'], kwargs: { to: 'parked-node', countdown: 60 }, options: { ...options, queue: NODE_Q } },
    ],
    false,
  );
  const [pyId, nodeId] = out.ids as [string, string];
  const [pyEnv, nodeEnv] = await Promise.all([parked('parked-py', 3), parked('parked-node', 3)]);
  await eventually(async () => (await r.get(`celery-task-meta-${pyId}`)) !== null, true, 30000);
  await eventually(async () => (await r.get(`celery-task-meta-${nodeId}`)) !== null, true, 30000);
  const [pyMeta, nodeMeta] = await Promise.all([metaOf(pyId), metaOf(nodeId)]);
  // The stored RETRY: same keys, the exception as Celery serializes it, a traceback, no date_done.
  t.deepEqual(Object.keys(nodeMeta), Object.keys(pyMeta));
  t.is(pyMeta.status, 'RETRY');
  t.is(nodeMeta.status, 'RETRY');
  t.deepEqual(nodeMeta.result, pyMeta.result);
  t.deepEqual(nodeMeta.result, { exc_type: 'ValueError', exc_message: ['again'], exc_module: 'builtins' });
  t.is(nodeMeta.date_done, pyMeta.date_done);
  t.is(nodeMeta.parent_id, 'parent-x');
  t.regex(String(pyMeta.traceback), /Retry in 60s: ValueError\('again'\)/);
  t.regex(String(nodeMeta.traceback), /Retry in 60s: ValueError\('again'\)/);

  // The re-sent messages: the same headers, but for the id, eta and the queue.
  // (expires and kwargsrepr differ in what the producer sent: each send_task computed its own expires.)
  const differ = new Set(['id', 'eta', 'expires', 'kwargsrepr']);
  const pick = (h: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(h).filter(([k]) => !differ.has(k)));
  t.deepEqual(Object.keys(nodeEnv.headers), Object.keys(pyEnv.headers));
  t.deepEqual(pick(nodeEnv.headers), pick(pyEnv.headers));
  t.is(nodeEnv.headers.argsrepr, "(1, 'a')");
  t.is(nodeEnv.headers.expires, contexts.get(nodeId)![0]!.headers.expires);
  t.is(nodeEnv.headers.kwargsrepr, "{'to': 'parked-node', 'countdown': 60}");
  t.like(nodeEnv.headers, { id: nodeId, retries: 1, root_id: 'root-x', parent_id: 'parent-x', timelimit: [30, 20] });
  const eta = (h: Record<string, unknown>): number => new Date(String(h.eta).replace(/(\.\d{3})\d+/, '$1')).getTime();
  t.true(Math.abs(eta(nodeEnv.headers) - eta(pyEnv.headers)) < 30000, `${String(nodeEnv.headers.eta)} vs ${String(pyEnv.headers.eta)}`);
  t.is(nodeEnv.properties.correlation_id, nodeId);
  t.is(nodeEnv.properties.reply_to, pyEnv.properties.reply_to);
  t.is(nodeEnv.properties.priority, pyEnv.properties.priority);
  t.is(nodeEnv.properties.delivery_mode, pyEnv.properties.delivery_mode);
  t.deepEqual(nodeEnv.properties.delivery_info, { exchange: '', routing_key: 'parked-node' });
  t.deepEqual(pyEnv.properties.delivery_info, { exchange: '', routing_key: 'parked-py' });
  // The body: signed, the same args, kwargs and embed (the link stays with it).
  const [pyBody, nodeBody] = [bodyOf(pyEnv), bodyOf(nodeEnv)] as [unknown[], unknown[]];
  t.deepEqual(nodeBody[0], pyBody[0]);
  t.deepEqual(nodeBody[2], pyBody[2]);
  t.like(nodeBody[2], { callbacks: [{ task: 'wire.add' }], chain: [{ task: 'wire.add', args: [2] }] });
  // RETRY was stored, then the original acknowledged.
  t.is(await eventually(() => r.hlen('unacked'), 0), 0);
  await r.del(queueForPriority('parked-py', 3), queueForPriority('parked-node', 3));
});

test.serial('spent retries: MaxRetriesExceededError, or the exc given; a handler may catch it', async (t) => {
  t.timeout(60000);
  const out = await send([
    { name: 'wire.spent', options: { queue: NODE_Q } },
    { name: 'wire.spent', kwargs: { exc: true }, options: { queue: NODE_Q } },
    { name: 'wire.catches', args: [5], options: { queue: NODE_Q } },
  ]);
  t.like(out.results[0], { ok: false, type: 'MaxRetriesExceededError', module: 'celery.exceptions', status: 'FAILURE' });
  t.is(out.results[0]!.message, `Can't retry wire.spent[${out.ids[0]}] args:() kwargs:{}`);
  t.like(out.results[1], { ok: false, type: 'KeyError', module: 'builtins', status: 'FAILURE' });
  t.deepEqual(out.results[2], { ok: true, value: `gave up: MaxRetriesExceededError("Can't retry wire.catches[${out.ids[2]}] args:(5,) kwargs:{}")` });
  t.deepEqual(
    retried.filter((e) => e.id === out.ids[0]).map((e) => e.retries),
    [1, 2],
  );
});

test.serial('autoretryFor retries matching errors; dontAutoretryFor and others fail at once; spent, the error is stored', async (t) => {
  t.timeout(60000);
  const out = await send([
    { name: 'wire.auto', kwargs: { fail: 2 }, options: { queue: NODE_Q } },
    { name: 'wire.auto', kwargs: { fail: 10 }, options: { queue: NODE_Q } },
    { name: 'wire.auto', kwargs: { range: true }, options: { queue: NODE_Q } },
  ]);
  const [ok, spent, range] = out.ids as [string, string, string];
  t.deepEqual(out.results[0], { ok: true, value: 2 });
  t.is(await runsOf(ok), 3);
  // maxRetries 3: four runs, then the TypeError itself (Celery re-raises exc).
  t.like(out.results[1], { ok: false, type: 'TypeError', message: 'attempt 3', status: 'FAILURE' });
  t.is(await runsOf(spent), 4);
  t.like(out.results[2], { ok: false, type: 'RangeError', status: 'FAILURE' });
  t.is(await runsOf(range), 1);
});

test.serial('retryBackoff sets the countdown (factor * 2 ** retries, no jitter); defaultRetryDelay without one', async (t) => {
  t.timeout(60000);
  const before = Date.now();
  const out = await send(
    [
      { name: 'wire.backoff', options: { queue: NODE_Q } },
      { name: 'wire.default_delay', options: { queue: NODE_Q } },
    ],
    false,
  );
  const [backoff, delay] = await Promise.all([parked('parked-backoff'), parked('parked-delay')]);
  const after = Date.now();
  const eta = (h: Record<string, unknown>): number => new Date(String(h.eta)).getTime();
  t.is(backoff.headers.id, out.ids[0]);
  t.true(eta(backoff.headers) >= before + 4000 && eta(backoff.headers) <= after + 4000, String(backoff.headers.eta));
  t.true(eta(delay.headers) >= before + 45000 && eta(delay.headers) <= after + 45000, String(delay.headers.eta));
  t.like(await metaOf(out.ids[0]!), { status: 'RETRY', result: { exc_type: 'ConnectionError', exc_message: ['attempt 0'], exc_module: 'builtins' } });
  t.like(await metaOf(out.ids[1]!), { status: 'RETRY', result: null });
  await r.del('parked-backoff', 'parked-delay');
});

test.serial('retries: false: a verify-only worker starts; ctx.retry fails the task; autoretry is refused', async (t) => {
  t.timeout(60000);
  t.throws(
    () =>
      createWorker({
        broker: redis.url(),
        security: serializer(pki, 'verify'),
        retries: false,
        tasks: { 'x.auto': { run: () => 1, autoretryFor: [Error] } },
      }),
    { instanceOf: ImproperlyConfigured, message: /retries: false.*x\.auto/ },
  );
  const needsKey = createWorker({ broker: redis.url(), security: serializer(pki, 'verify'), canvas: false, remoteControl: false, tasks: {} });
  const err = await t.throwsAsync(needsKey.start(), { instanceOf: ImproperlyConfigured });
  t.regex(err!.message, /retries \(retries: false turns this off\)/);
  const w = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki, 'verify'),
    canvas: false,
    retries: false,
    remoteControl: false,
    queues: ['verify-only'],
    tasks: { 'wire.retry': (_a, _k, ctx) => ctx.retry({ countdown: 0 }) },
  });
  await w.start();
  try {
    const out = await send([{ name: 'wire.retry', options: { queue: 'verify-only' } }]);
    t.like(out.results[0], { ok: false, status: 'FAILURE', type: 'ImproperlyConfigured' });
    t.regex(out.results[0]!.message!, /retries: false/);
  } finally {
    await w.stop();
  }
});

test('Retry carries Celery message text', (t) => {
  const retry = new Retry('id-1', { countdown: 5, exc: new TaskError('ValueError', ['boom']) });
  t.is(retry.message, "Retry in 5s: ValueError('boom')");
  t.is(new Retry('id-2', { eta: '2030-01-01T00:00:00+00:00' }).message, 'Retry at 2030-01-01T00:00:00+00:00');
});

test.serial('over AMQP: retries on the same queue, Node to Python and Python to Node', async (t) => {
  t.timeout(90000);
  const out = await amqpProducer<{ ids: string[]; results: ProducerResult[] }>(pki, rabbit, redis.url(), {
    op: 'send',
    wait: true,
    timeout: 40,
    tasks: [
      { name: 'wire.retry', args: ['same'], kwargs: { times: 2 }, options: { queue: NODE_AQ } },
      { name: 'wire.retry', args: ['n2p'], kwargs: { to: PY_AQ }, options: { queue: NODE_AQ } },
      { name: 'wire.retry', args: ['p2n'], kwargs: { to: NODE_AQ }, options: { queue: PY_AQ } },
    ],
  });
  t.deepEqual(out.results, [
    { ok: true, value: { retries: 2, worker: 'node', args: ['same'] } },
    { ok: true, value: { retries: 1, worker: 'py', args: ['n2p'] } },
    { ok: true, value: { retries: 1, worker: 'node', args: ['p2n'] } },
  ]);
  t.deepEqual(await Promise.all(out.ids.map(runsOf)), [3, 2, 2]);
  t.deepEqual(
    out.ids.map((id) => contexts.get(id)!.map((c) => c.retries)),
    [[0, 1, 2], [0], [1]],
  );
});

test.serial('over AMQP: a message delivered through a named exchange is retried through it (Celery: the delivery_info)', async (t) => {
  t.timeout(60000);
  const tr = await openTransport(rabbit.url);
  try {
    // A second queue bound to the exchange with the same key sees what goes through the exchange.
    const route = { exchange: 'retry-ex', routingKey: 'retry-rk' };
    const dummy = buildTaskMessage('wire.noop', [], {}, { queue: 'ex-copy', ...route });
    await tr.publish(await encodeTaskMessages([dummy], serializer(pki)));
    const m = buildTaskMessage('wire.retry', ['ex'], { times: 1 }, { queue: NODE_AQ, ...route });
    await tr.publish(await encodeTaskMessages([m], serializer(pki)));
    const id = m.headers.id as string;
    t.is(await eventually(() => runsOf(id), 2, 30000), 2);
    t.deepEqual(
      contexts.get(id)!.map((c) => [c.retries, c.queue]),
      [
        [0, NODE_AQ],
        [1, NODE_AQ],
      ],
    );
    // The dummy, the original and its retry: the retry went through the exchange.
    t.is(await until(() => queueDepth(rabbit, 'ex-copy'), 3), 3);
  } finally {
    await tr.close();
  }
});

test.serial('over AMQP with rpc:// results: a Python client waiting on a task the Node worker retries gets the result of the retry', async (t) => {
  t.timeout(60000);
  const w = createWorker({
    broker: rabbit.url,
    backend: 'rpc://',
    security: serializer(pki),
    queues: ['node-retry-rpc'],
    handleSignals: false,
    tasks: { 'wire.retry': nodeRetry },
  });
  await w.start();
  try {
    const out = await amqpProducer<{ ids: string[]; results: ProducerResult[] }>(pki, rabbit, 'rpc://', {
      op: 'send',
      wait: true,
      timeout: 40,
      tasks: [{ name: 'wire.retry', args: ['rpc'], kwargs: { times: 2 }, options: { queue: 'node-retry-rpc' } }],
    });
    t.deepEqual(out.results, [{ ok: true, value: { retries: 2, worker: 'node', args: ['rpc'] } }]);
    t.is(await runsOf(out.ids[0]!), 3);
  } finally {
    await w.stop();
  }
});

test.serial('a retried task keeps its chain: after the retry succeeds, the next task runs (on a Python worker) with its result', async (t) => {
  t.timeout(60000);
  const nextId = `chain-next-${Date.now()}`;
  const next = { task: 'wire.echo', args: ['next'], kwargs: {}, options: { queue: PY_Q, task_id: nextId }, subtask_type: null, immutable: false };
  const out = await send([{ name: 'wire.retry', args: ['chained'], kwargs: { times: 1 }, options: { queue: NODE_Q, chain: [next] } }]);
  t.deepEqual(out.results[0], { ok: true, value: { retries: 1, worker: 'node', args: ['chained'] } });
  t.is(await eventually(async () => (await r.get(`celery-task-meta-${nextId}`)) !== null && (await metaOf(nextId)).status === 'SUCCESS', true, 30000), true);
  const meta = await metaOf(nextId);
  t.like(meta.result, { args: [{ retries: 1, worker: 'node', args: ['chained'] }, 'next'], request: { parent_id: out.ids[0], retries: 0 } });
  t.is(contexts.get(out.ids[0]!)!.length, 2);
});
