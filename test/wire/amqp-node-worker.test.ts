/**
 * Real Python Celery 5.7 producer (`app.send_task` under setup_security(),
 * broker `pyamqp://`) -> Node worker over a real rabbitmq-server, results in
 * Redis: Python reads the results the Node worker stores; unsigned, wrongly
 * signed, unknown-signer, tampered and shapeless messages are refused with a
 * typed SecurityError and a security event while the next good one runs;
 * unknown and expired tasks are stored as Celery stores them; ETA tasks do
 * not block the prefetch window; the replay guard and header binding
 * (beyond Celery, opt-in); 10,000 tasks run exactly once each.
 */
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import {
  createClient,
  createWorker,
  json,
  SecurityError,
  TaskError,
  type BrokerTransport,
  registerBackend,
  chord,
  signature,
  type AsyncResult,
  type OutgoingMessage,
  type SecurityEvent,
  type TaskContext,
  type TaskHandler,
  type Worker,
  type WorkerOptions,
} from 'celery-sign';
import { bindHeaders } from '../../lib/wire/binding.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { ReplayGuard } from '../../lib/wire/replay.js';
import { openBackend, openTransport, type ResultBackend } from '../../lib/wire/transport.js';
import { STORE_ATTEMPTS } from '../../lib/wire/worker.js';
import { amqpProducer, queueDepth, rawConnection, until } from './helpers/amqp.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const QUEUE = 'node';
let rabbit: RabbitServer;
let redis: RedisServer;
let pki: Pki;
let worker: Worker;
let transport: BrokerTransport;
let r: Redis;
const contexts = new Map<string, TaskContext>();
const events: SecurityEvent[] = [];

function nodeWorker(queue: string, tasks: Record<string, TaskHandler>, extra: Partial<WorkerOptions> = {}): Worker {
  return createWorker({ broker: rabbit.url, backend: redis.url(), security: serializer(pki), queues: [queue], tasks, ...extra });
}

test.before(async () => {
  [rabbit, redis] = await Promise.all([startRabbit(), startRedis()]);
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  transport = await openTransport(rabbit.url);
  worker = nodeWorker(
    QUEUE,
    {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.echo': (args, kwargs, ctx) => {
        contexts.set(ctx.id, ctx);
        return { args, kwargs, signer: ctx.signer };
      },
      'wire.fail': ([message]) => {
        throw new TaskError('ValueError', [message]);
      },
    },
    { concurrency: 64 },
  );
  worker.on('security', (e: SecurityEvent) => events.push(e));
  await worker.start();
});

test.after.always(async () => {
  await worker?.stop({ timeout: 5000 });
  await transport?.close();
  r?.disconnect();
  await rabbit?.stop();
  await redis?.stop();
  pki?.cleanup();
});

const send = (tasks: object[], o: { signer?: 'good' | 'wrong-key' | 'unknown'; wait?: boolean } = {}) =>
  amqpProducer(pki, rabbit, redis.url(), { op: 'send', tasks, wait: o.wait ?? true, timeout: 20 }, o.signer ? { signer: o.signer } : {});

test.serial('Python sends over pyamqp, the Node worker runs, Python reads the results', async (t) => {
  t.timeout(60000);
  const out = await send([
    { name: 'wire.add', args: [2, 3], options: { queue: QUEUE } },
    { name: 'wire.echo', args: [1, 'two'], kwargs: { k: [1.5, null] }, options: { queue: QUEUE, priority: 7, headers: { x_custom: 'v', x_big: 2 ** 40 } } },
    { name: 'wire.fail', args: ['boom'], options: { queue: QUEUE } },
  ]);
  const [add, echo, fail] = out.results;
  t.deepEqual(add, { ok: true, value: 5 });
  const signer = (echo!.value as { signer: string }).signer;
  t.deepEqual(echo!.value, { args: [1, 'two'], kwargs: { k: [1.5, null] }, signer });
  t.regex(signer, / \d+$/);
  const ctx = contexts.get(out.ids[1]!)!;
  t.is(ctx.priority, 7);
  t.is(ctx.queue, QUEUE);
  t.is(ctx.headers.x_custom, 'v');
  t.is(ctx.headers.x_big, 2 ** 40, 'a 64-bit header from py-amqp is read');
  t.false(ctx.redelivered);
  t.like(fail, { ok: false, type: 'ValueError', module: 'builtins', message: 'boom', status: 'FAILURE' });
});

test.serial('unsigned, wrongly signed, unknown signer, tampered and shapeless are refused with SecurityError; the next good one runs', async (t) => {
  t.timeout(60000);
  events.length = 0;
  const unsigned = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE, serializer: 'json' } }], { wait: false });
  const wrong = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE } }], { signer: 'wrong-key', wait: false });
  const unknown = await send([{ name: 'wire.add', args: [1, 1], options: { queue: QUEUE } }], { signer: 'unknown', wait: false });
  // Tampered: a good Python message (sent to a queue nobody reads) whose body is changed on its way.
  const held = await send([{ name: 'wire.add', args: [40, 2], options: { queue: 'hold' } }], { wait: false });
  const conn = await rawConnection(rabbit);
  try {
    const ch = await conn.createChannel();
    const msg = await ch.get('hold', { noAck: true });
    if (!msg) throw new Error('no held message');
    const payload = Buffer.from(msg.content.toString(), 'base64');
    const at = payload.lastIndexOf('[[');
    payload[at + 2] = payload[at + 2]! ^ 1;
    const p = msg.properties;
    ch.sendToQueue(QUEUE, Buffer.from(payload.toString('base64')), {
      contentType: p.contentType,
      contentEncoding: p.contentEncoding,
      headers: p.headers,
      correlationId: p.correlationId,
      replyTo: p.replyTo,
      deliveryMode: 2,
    });
    await ch.close();
  } finally {
    await conn.close();
  }
  // A well signed body that is not [args, kwargs, embed].
  const [shapeless] = await encodeTaskMessages([buildTaskMessage('wire.add', [], {}, { id: 'shapeless', queue: QUEUE })], serializer(pki));
  shapeless!.body = serializer(pki).serialize({ not: 'a task' });
  await transport.publish([shapeless!]);
  const next = await send([{ name: 'wire.add', args: [2, 2], options: { queue: QUEUE } }]);
  t.deepEqual(next.results[0], { ok: true, value: 4 });
  const byId = new Map(events.map((e) => [e.taskId, e]));
  t.is(events.length, 5);
  t.like(byId.get('shapeless'), { code: 'ERR_MALFORMED_PAYLOAD', task: 'wire.add', action: 'reject' });
  t.like(byId.get(unsigned.ids[0]!), { code: 'ERR_CONTENT_DISALLOWED', task: 'wire.add', queue: QUEUE, action: 'reject' });
  t.like(byId.get(wrong.ids[0]!), { code: 'ERR_BAD_SIGNATURE', action: 'ack' });
  t.like(byId.get(unknown.ids[0]!), { code: 'ERR_UNKNOWN_CERTIFICATE', action: 'ack' });
  t.like(byId.get(held.ids[0]!), { code: 'ERR_BAD_SIGNATURE', action: 'ack' });
  for (const e of events) {
    t.true(e.error instanceof SecurityError);
    t.is(e.check, undefined);
  }
  for (const id of [unsigned.ids[0], wrong.ids[0], unknown.ids[0], held.ids[0]]) t.is(await r.get(`celery-task-meta-${id}`), null);
  t.is(await until(() => queueDepth(rabbit, QUEUE), 0), 0);
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

test.serial('held ETA tasks raise the prefetch window (basic.qos), as Celery does: a ready task still runs at once', async (t) => {
  t.timeout(60000);
  const order: string[] = [];
  const w = nodeWorker('eta', { 'wire.mark': ([tag]) => void order.push(String(tag)) }, { concurrency: 1, prefetchMultiplier: 1 });
  await w.start();
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki) });
  try {
    const later = await Promise.all([1, 2, 3].map((i) => client.sendTask('wire.mark', [`eta${i}`], {}, { queue: 'eta', countdown: 2 })));
    await new Promise((res) => setTimeout(res, 300));
    const now = await client.sendTask('wire.mark', ['now'], {}, { queue: 'eta' });
    await now.get({ timeout: 1500 });
    t.deepEqual(order, ['now'], 'ran while three ETA tasks were held with a prefetch of 1');
    await Promise.all(later.map((l) => l.get({ timeout: 10000 })));
    t.deepEqual(order.slice(1).sort(), ['eta1', 'eta2', 'eta3']);
  } finally {
    await client.close();
    await w.stop();
  }
});

test('the replay guard remembers ids for a window, in bounded memory', (t) => {
  const g = new ReplayGuard(1000, 3);
  t.is(g.check('a', 0), null);
  t.is(g.check('a', 400), 400);
  t.is(g.check('a', 1001), null, 'out of the window: accepted again');
  g.forget('a');
  t.is(g.check('a', 1100), null, 'forgotten: accepted again');
  for (const id of ['b', 'c', 'd']) t.is(g.check(id, 1200), null);
  t.is(g.size, 3, 'bounded: the oldest went first');
  t.is(g.check('a', 1300), null);
  t.throws(() => new ReplayGuard(0));
});

test.serial('replay guard: the same message published again is refused (check: replay); a fresh id runs', async (t) => {
  t.timeout(60000);
  const ran: string[] = [];
  const refused: SecurityEvent[] = [];
  const w = nodeWorker('replay', { 'wire.add': ([x, y], _kw, ctx) => (ran.push(ctx.id), Number(x) + Number(y)) }, { replayWindow: 60000 });
  w.on('security', (e: SecurityEvent) => refused.push(e));
  await w.start();
  try {
    const [m] = await encodeTaskMessages([buildTaskMessage('wire.add', [1, 2], {}, { queue: 'replay', id: 'once' })], serializer(pki));
    await transport.publish([m!]);
    await until(async () => ran.length, 1);
    await transport.publish([m!]); // captured and published again, byte for byte
    const [fresh] = await encodeTaskMessages([buildTaskMessage('wire.add', [1, 2], {}, { queue: 'replay', id: 'fresh' })], serializer(pki));
    await transport.publish([fresh!]);
    await until(async () => ran.length, 2);
    await until(async () => refused.length, 1);
    t.deepEqual(ran, ['once', 'fresh']);
    t.is(refused.length, 1);
    t.like(refused[0], { code: 'ERR_REPLAYED', check: 'replay', taskId: 'once', action: 'reject' });
    t.regex(refused[0]!.reason, /Replayed task id: once was accepted \d+ ms ago/);
    t.is(await until(() => queueDepth(rabbit, 'replay'), 0), 0);
  } finally {
    await w.stop();
  }
});

test.serial('header binding: bound messages run; changed task, id or eta headers are refused; unbound ones only when required', async (t) => {
  t.timeout(120000);
  const ran: string[] = [];
  const refused: SecurityEvent[] = [];
  const tasks: Record<string, TaskHandler> = {
    'wire.add': ([x, y], _kw, ctx) => (ran.push(ctx.id), Number(x) + Number(y)),
    'wire.other': (_a, _kw, ctx) => void ran.push(`other:${ctx.id}`),
  };
  const strict = nodeWorker('bound', tasks, { requireHeaderBinding: true });
  strict.on('security', (e: SecurityEvent) => refused.push(e));
  await strict.start();
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki), headerBinding: true });
  try {
    try {
      // A bound message from the client runs.
      const ok = await client.sendTask('wire.add', [20, 22], {}, { queue: 'bound', expires: 60 });
      t.is(await ok.get({ timeout: 30000 }), 42);
      // The same signed body under changed headers: another id, another task, an eta added.
      const base = bindHeaders(buildTaskMessage('wire.add', [1, 1], {}, { queue: 'bound', id: 'bound-1' }));
      const [signed] = await encodeTaskMessages([base], serializer(pki));
      const variant = (id: string, h: Record<string, unknown>): OutgoingMessage => ({ ...signed!, headers: { ...signed!.headers, ...h, id } });
      await transport.publish([
        variant('bound-id-changed', {}),
        { ...signed!, headers: { ...signed!.headers, task: 'wire.other' } },
        variant('bound-1', { eta: '2099-01-01T00:00:00+00:00' }),
      ]);
      // Unbound: a Python producer's message.
      const py = await send([{ name: 'wire.add', args: [1, 1], options: { queue: 'bound' } }], { wait: false });
      // The Python producer starts an interpreter: on a loaded machine that
      // alone can take many seconds.
      await until(async () => refused.length, 4, 45000);
      t.deepEqual(ran, [ok.id]);
      // Batches are verified concurrently, so refusals of messages in
      // different batches may come in either order.
      const key = (e: SecurityEvent): string => JSON.stringify([e.taskId, e.task, e.check, e.code, e.action]);
      t.deepEqual(
        refused.map(key).sort(),
        [
          ['bound-id-changed', 'wire.add', 'header-binding', 'ERR_HEADER_MISMATCH', 'reject'],
          ['bound-1', 'wire.other', 'header-binding', 'ERR_HEADER_MISMATCH', 'reject'],
          ['bound-1', 'wire.add', 'header-binding', 'ERR_HEADER_MISMATCH', 'reject'],
          [py.ids[0], 'wire.add', 'header-binding', 'ERR_HEADER_MISMATCH', 'reject'],
        ]
          .map((x) => JSON.stringify(x))
          .sort(),
      );
      t.regex(refused.find((e) => e.taskId === 'bound-id-changed')!.reason, /Header binding mismatch/);
      t.regex(refused.find((e) => e.taskId === py.ids[0])!.reason, /Header binding required/);
      // The untouched message still runs.
      await transport.publish([signed!]);
      await until(async () => ran.length, 2);
      t.deepEqual(ran, [ok.id, 'bound-1']);
    } finally {
      await strict.stop();
    }
    // Without requireHeaderBinding an unbound message runs, a bound one is still checked.
    const lax = nodeWorker('lax', tasks);
    const laxRefused: SecurityEvent[] = [];
    lax.on('security', (e: SecurityEvent) => laxRefused.push(e));
    await lax.start();
    try {
      const py = await send([{ name: 'wire.add', args: [3, 4], options: { queue: 'lax' } }]);
      t.deepEqual(py.results[0], { ok: true, value: 7 });
      const [m] = await encodeTaskMessages([bindHeaders(buildTaskMessage('wire.add', [1, 1], {}, { queue: 'lax', id: 'lax-1' }))], serializer(pki));
      await transport.publish([{ ...m!, headers: { ...m!.headers, id: 'lax-2' } }]);
      await until(async () => laxRefused.length, 1);
      t.like(laxRefused[0], { taskId: 'lax-2', check: 'header-binding' });
    } finally {
      await lax.stop();
    }
  } finally {
    await client.close();
  }
});

test.serial('10,000 tasks from a Python producer over RabbitMQ: none lost, none run twice', async (t) => {
  t.timeout(360000); // the producer (150 s at most), the runs (120 s) and the last results (60 s)
  const N = 10000;
  const runs = new Map<string, number>();
  const w = nodeWorker(
    'bulk',
    {
      'wire.count': async ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
    { concurrency: 64 },
  );
  const errors: string[] = [];
  w.on('error', (err: unknown) => errors.push(err instanceof Error ? err.message : String(err)));
  await w.start();
  try {
    const t0 = performance.now();
    const out = await amqpProducer<{ ids: string[]; elapsed: number }>(pki, rabbit, redis.url(), { op: 'bulk', name: 'wire.count', count: N, queue: 'bulk' }, { timeoutMs: 150000 });
    t.is(out.ids.length, N);
    const deadline = Date.now() + 120000;
    while (Date.now() < deadline && !(runs.size >= N && w.stats.succeeded >= N)) await new Promise((res) => setTimeout(res, 50));
    // A result is stored after its task ran (in batches, then acknowledged): wait for the last ones.
    const read = () => r.mget(...out.ids.map((id) => `celery-task-meta-${id}`));
    let values = await read();
    while (Date.now() < deadline + 60000 && values.some((v) => v === null)) {
      await new Promise((res) => setTimeout(res, 100));
      values = await read();
    }
    const t1 = performance.now();
    const results = values.map((v) => (v === null ? null : (json.loads(v) as { status: string; result: unknown })));
    const missing = out.ids.filter((_, i) => results[i] === null);
    if (missing.length > 0) {
      // What the worker saw, so that a failure says where the results went.
      t.log(`after ${((t1 - t0) / 1000).toFixed(1)} s: ran ${runs.size}, stats ${JSON.stringify(w.stats)}, queue depth ${await queueDepth(rabbit, 'bulk')}`);
      const first = out.ids.findIndex((_, i) => results[i] === null);
      t.log(`missing results: ${missing.length} (the first is task ${first} of ${N}); of them never ran: ${missing.filter((id) => !runs.has(id)).length}`);
      for (const e of [...new Set(errors)].slice(0, 10)) t.log(`worker error (${errors.filter((x) => x === e).length}x): ${e}`);
    }
    t.is(missing.length, 0, 'results missing');
    t.true(results.every((m, i) => m!.status === 'SUCCESS' && m!.result === i));
    t.is(out.ids.filter((id) => (runs.get(id) ?? 0) === 0).length, 0, 'lost');
    t.is(out.ids.filter((id) => (runs.get(id) ?? 0) > 1).length, 0, 'run twice');
    t.is(await until(() => queueDepth(rabbit, 'bulk'), 0), 0);
    t.log(
      `Python producer (send_task over pyamqp, ${(N / out.elapsed).toFixed(0)} sends/s) -> RabbitMQ -> Node worker: ${N} tasks in ${((t1 - t0) / 1000).toFixed(2)} s including interpreter start: ${(N / ((t1 - t0) / 1000)).toFixed(0)} tasks/s end to end`,
    );
  } finally {
    await w.stop();
  }
});

/**
 * A result backend on the test's Redis whose `store` (or `chordPartReturn`)
 * fails while `failing(method)` says so (a backend blip), counting the
 * failures.
 */
function flakyBackend(
  failing: (method: 'store' | 'chordPartReturn') => boolean,
  failure: () => Error = () => new Error('the result backend is down (test)'),
): { scheme: string; failures: () => number } {
  const scheme = `flaky${++flakyCount}`;
  let failures = 0;
  const check = (method: 'store' | 'chordPartReturn'): void => {
    if (failing(method)) {
      failures++;
      throw failure();
    }
  };
  registerBackend([scheme], async (url, options) => {
    const inner = await openBackend(url.replace(/^[a-z0-9]+:/, 'redis:'), options);
    return {
      store: async (results) => {
        check('store');
        return inner.store(results);
      },
      get: (id) => inner.get(id),
      wait: (id, ms, ready) => inner.wait(id, ms, ready),
      close: () => inner.close(),
      setChordSize: (groupId, size) => inner.setChordSize!(groupId, size),
      chordPartReturn: async (part) => {
        check('chordPartReturn');
        return inner.chordPartReturn!(part);
      },
    } satisfies ResultBackend;
  });
  return { scheme, failures: () => failures };
}
let flakyCount = 0;

/** A worker of `queue` (its own hostname) whose result backend is the flaky one of `scheme`. */
function flakyWorker(queue: string, scheme: string, tasks: Record<string, TaskHandler>, extra: Partial<WorkerOptions> = {}): Worker {
  return nodeWorker(queue, tasks, { backend: redis.url().replace(/^redis:/, `${scheme}:`), hostname: `celery-sign@${queue}`, ...extra });
}

async function runAgainstFlakyBackend(
  t: ExecutionContext,
  queue: string,
  failCalls: number,
  extra: Partial<WorkerOptions> = {},
  failure?: () => Error,
): Promise<{ runs: Map<string, number>; failures: number; errors: string[] }> {
  let calls = 0;
  const flaky = flakyBackend((method) => method === 'store' && ++calls <= failCalls, failure);
  const runs = new Map<string, number>();
  const w = flakyWorker(
    queue,
    flaky.scheme,
    {
      'wire.count': ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
    extra,
  );
  const errors: string[] = [];
  w.on('error', (err: unknown) => errors.push(err instanceof Error ? err.message : String(err)));
  await w.start();
  const ids = Array.from({ length: 50 }, (_, i) => `${queue}-${i}`);
  try {
    const messages = await encodeTaskMessages(
      ids.map((id, i) => buildTaskMessage('wire.count', [i], {}, { queue, id })),
      serializer(pki),
    );
    await transport.publish(messages);
    const stored = () => r.mget(...ids.map((id) => `celery-task-meta-${id}`));
    let values = await stored();
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline && values.some((v) => v === null)) {
      await new Promise((res) => setTimeout(res, 50));
      values = await stored();
    }
    t.is(values.filter((v) => v === null).length, 0, 'results missing');
    t.true(values.every((v, i) => (json.loads(v!) as { status: string; result: unknown }).result === i));
    t.deepEqual(ids.filter((id) => !runs.has(id)), [], 'never ran');
  } finally {
    await w.stop();
  }
  // Nothing stayed unacknowledged behind the stopped worker: closing its channel would have put it back.
  t.is(await until(() => queueDepth(rabbit, queue), 0, 1000), 0, 'messages left unacknowledged');
  return { runs, failures: flaky.failures(), errors };
}

test.serial('a result store that fails for a moment is retried: every result is stored, every task ran once, nothing is left unacknowledged', async (t) => {
  const { runs, failures, errors } = await runAgainstFlakyBackend(t, 'flaky-blip', 2);
  t.is(failures, 2);
  t.deepEqual([...runs.values()].filter((n) => n > 1), [], 'run twice');
  t.true(errors.filter((e) => /backend is down/.test(e)).length >= 1, 'the failure is reported');
});

test.serial(`a result store that keeps failing (${STORE_ATTEMPTS} attempts) gives the messages back to the broker: they run again and their results are stored`, async (t) => {
  const { runs, failures } = await runAgainstFlakyBackend(t, 'flaky-down', STORE_ATTEMPTS);
  t.is(failures, STORE_ATTEMPTS);
  t.true([...runs.values()].some((n) => n > 1), 'the given-back tasks ran again');
});

test.serial(`resultBackendAlwaysRetry (Celery's result_backend_always_retry): a store failing ${STORE_ATTEMPTS + 3} times in a row is retried, not given back: every task ran once`, async (t) => {
  const { runs, failures } = await runAgainstFlakyBackend(t, 'flaky-always', STORE_ATTEMPTS + 3, {
    resultBackendAlwaysRetry: true,
    resultBackendBaseSleepBetweenRetriesMs: 5,
    resultBackendMaxSleepBetweenRetriesMs: 50,
  });
  t.is(failures, STORE_ATTEMPTS + 3);
  t.deepEqual([...runs.values()].filter((n) => n > 1), [], 'run twice');
});

test.serial('resultBackendAlwaysRetry: an error reply that cannot pass (WRONGTYPE) is not retried, as Celery: the messages go back after one failure and run again', async (t) => {
  const wrongType = (): Error => Object.assign(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'), { name: 'ReplyError' });
  const { runs, failures } = await runAgainstFlakyBackend(
    t,
    'flaky-wrongtype',
    1,
    { resultBackendAlwaysRetry: true, resultBackendBaseSleepBetweenRetriesMs: 5 },
    wrongType,
  );
  t.is(failures, 1);
  t.true([...runs.values()].some((n) => n > 1), 'given back and run again');
});

test.serial('resultBackendMaxRetries: 1: the second failure in a row gives the messages back; they run again and their results are stored', async (t) => {
  const { runs, failures } = await runAgainstFlakyBackend(t, 'flaky-max1', 2, { resultBackendMaxRetries: 1, resultBackendBaseSleepBetweenRetriesMs: 1 });
  t.is(failures, 2);
  t.true([...runs.values()].some((n) => n > 1), 'the given-back tasks ran again');
});

test('the result_backend retry settings are checked at construction (ImproperlyConfigured)', (t) => {
  const bad: Partial<WorkerOptions>[] = [
    { resultBackendMaxRetries: -1 },
    { resultBackendMaxRetries: 1.5 },
    { resultBackendBaseSleepBetweenRetriesMs: Number.NaN },
    { resultBackendMaxSleepBetweenRetriesMs: Infinity },
    { resultBackendAlwaysRetry: 'yes' as unknown as boolean },
  ];
  for (const extra of bad) t.throws(() => nodeWorker('conf-check', {}, extra), { name: 'ImproperlyConfigured' }, JSON.stringify(extra));
  t.notThrows(() => nodeWorker('conf-check', {}, { resultBackendAlwaysRetry: true, resultBackendMaxRetries: Infinity }));
});

test.serial('a chord part whose count fails (a step after the store) is given back: it runs again, is counted, and the body runs once', async (t) => {
  const queue = 'flaky-chord';
  let failed = 0;
  const flaky = flakyBackend((method) => method === 'chordPartReturn' && failed++ === 0);
  const runs = new Map<string, number>();
  const bodies: unknown[] = [];
  const w = flakyWorker(queue, flaky.scheme, {
    'wire.count': ([i], _kwargs, ctx) => {
      runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
      return i;
    },
    'wire.collect': ([results]) => {
      bodies.push(results);
      return results;
    },
  });
  w.on('error', () => undefined);
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki) });
  await w.start();
  try {
    const at = { queue };
    const body = (await client.send(
      chord([signature('wire.count', [1], {}, at), signature('wire.count', [2], {}, at), signature('wire.count', [3], {}, at)], signature('wire.collect', [], {}, at)),
    )) as AsyncResult;
    t.deepEqual(await body.get({ timeout: 20000 }), [1, 2, 3]);
    t.is(flaky.failures(), 1);
    t.deepEqual([...runs.values()].sort(), [1, 1, 2], 'the part whose count failed ran again');
    t.deepEqual(bodies, [[1, 2, 3]], 'the body ran once');
  } finally {
    await w.stop();
    await client.close();
  }
  t.is(await until(() => queueDepth(rabbit, queue), 0, 1000), 0, 'messages left unacknowledged');
});
