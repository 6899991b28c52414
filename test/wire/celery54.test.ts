/**
 * The older wire format (Celery <= 5.4: raw signer and signature) on Redis,
 * with a real Celery 5.4.0 (kombu 5.3.7): a Node producer writing
 * `wireFormat: 'celery-5.4'` feeds a 5.4 worker, and a Node worker runs what a
 * 5.4 producer sends (reading needs no setting: both formats are read).
 * A 5.5-format message is refused by the 5.4 worker, as Celery 5.4 refuses it.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { createClient, createWorker, type CeleryClient, type SecurityEvent, type Worker } from 'celery-sign';
import { makePki, runProducer, serializer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';

let redis: RedisServer;
let pki: Pki;
let pyWorker: CeleryWorker;
let client54: CeleryClient;
let client55: CeleryClient;
let r: Redis;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  pyWorker = await startCeleryWorker(pki, { env: 'celery54', broker: redis.url(), queues: ['py54'], pool: 'solo' });
  client54 = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki, 'good', 'celery-5.4') });
  client55 = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki, 'good', 'celery-5.5') });
});

test.after.always(async () => {
  await client54?.close();
  await client55?.close();
  await pyWorker?.stop();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

test.serial('Node producer (wire 5.4) -> Celery 5.4 worker: tasks run, results and failures come back', async (t) => {
  t.timeout(60000);
  const add = await client54.sendTask('wire.add', [20, 22], {}, { queue: 'py54' });
  const echo = await client54.sendTask('wire.echo', ['ünï', [1, 2]], { k: null }, { queue: 'py54', priority: 3 });
  const fail = await client54.sendTask('wire.fail', ['old'], {}, { queue: 'py54' });
  t.is(await add.get({ timeout: 20000 }), 42);
  const out = (await echo.get({ timeout: 20000 })) as { args: unknown[]; kwargs: unknown; request: Record<string, unknown> };
  t.deepEqual(out.args, ['ünï', [1, 2]]);
  t.deepEqual(out.kwargs, { k: null });
  t.is(out.request.id, echo.id);
  t.is(out.request.ignore_result, false); // what Celery 5.4's send_task writes
  const err = await t.throwsAsync(fail.get({ timeout: 20000 }));
  t.like(err, { name: 'TaskFailedError', excType: 'ValueError', excMessage: ['old'] });
});

test.serial('a 5.5-format message is refused by the Celery 5.4 worker; the next 5.4 one runs', async (t) => {
  t.timeout(60000);
  const new55 = await client55.sendTask('wire.add', [1, 1], {}, { queue: 'py54' });
  const next = await client54.sendTask('wire.add', [2, 2], {}, { queue: 'py54' });
  t.is(await next.get({ timeout: 20000 }), 4);
  t.is(await r.get(`celery-task-meta-${new55.id}`), null);
  t.regex(pyWorker.logs(), /Can't decode message body: DecodeError\(SecurityError\('Unable to deserialize/);
  // Celery acks the last message a moment after its result is stored.
  t.is(await eventually(() => r.hlen('unacked'), 0), 0);
});

test.serial('Celery 5.4 producer -> Node worker: runs, and Celery 5.4 reads the results', async (t) => {
  t.timeout(60000);
  const events: SecurityEvent[] = [];
  const worker: Worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki, 'good', 'celery-5.4'),
    queues: ['node54'],
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.echo': (args, kwargs, ctx) => ({ args, kwargs, signer: ctx.signer }),
    },
  });
  worker.on('security', (e: SecurityEvent) => events.push(e));
  await worker.start();
  try {
    const out = await runProducer<{ ids: string[]; results: { ok: boolean; value?: unknown }[] }>(
      pki,
      redis.url(),
      {
        op: 'send',
        wait: true,
        timeout: 20,
        tasks: [
          { name: 'wire.add', args: [20, 22], options: { queue: 'node54' } },
          { name: 'wire.echo', args: ['ünï'], kwargs: { b: [true] }, options: { queue: 'node54' } },
        ],
      },
      { env: 'celery54' },
    );
    t.deepEqual(out.results[0], { ok: true, value: 42 });
    const echo = out.results[1]!.value as { args: unknown[]; kwargs: unknown; signer: string };
    t.deepEqual(echo.args, ['ünï']);
    t.deepEqual(echo.kwargs, { b: [true] });
    t.regex(echo.signer, / \d+$/);
    t.deepEqual(events, []);
  } finally {
    await worker.stop({ timeout: 5000 });
  }
});
