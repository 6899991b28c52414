/**
 * Tasks per second end to end through a real rabbitmq-server (results in a
 * real redis-server), in each direction between Node (celery-sign) and a
 * stock Python Celery 5.7 under setup_security() with broker `pyamqp://`.
 * The twin of bench-redis.ts. Not part of the test run:
 *
 *   npm run build:ts && node --import=tsx test/wire/bench-amqp.ts [N] [--rounds R]
 *
 * For each direction two figures:
 * - end to end: from the first send to the last result read back by the producer;
 * - worker only: the queue is filled first, then the worker drains it; the rate
 *   is taken from the `date_done` the worker wrote into the first and the last
 *   result (so interpreter and worker start-up are not counted).
 * Median of R rounds (default 3). Python -> Python is the stock Celery baseline. The Python worker is `celery worker --pool=prefork -c 2`
 * (the machine's cores), the Node worker runs in this process with concurrency 64.
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { createClient, createWorker, type CeleryClient } from 'celery-sign';
import { amqpProducer } from './helpers/amqp.js';
import { makePki, serializer, startCeleryWorker, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { benchArgs, doneSpread, median, waitAll } from './helpers/bench.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let rabbit: RabbitServer;
const runProducer = <T>(pki: Pki, backend: string, request: object, o: { timeoutMs?: number } = {}): Promise<T> =>
  amqpProducer<T>(pki, rabbit, backend, request, o);
const pyWorker = (pki: Pki, redis: RedisServer, queue: string) =>
  startCeleryWorker(pki, { broker: rabbit.pyUrl, queues: [queue], pool: 'prefork', concurrency: 2, extraEnv: { WIRE_BACKEND: redis.url(), WIRE_PREFETCH: '16' } });

const { n: N, rounds: ROUNDS } = benchArgs();

async function nodeToPython(redis: RedisServer, pki: Pki, r: Redis, client: CeleryClient): Promise<[number, number]> {
  const queue = `b-np-${Math.random().toString(36).slice(2)}`;
  // worker only: fill, then start the worker
  const filled = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
  const w = await pyWorker(pki, redis, queue);
  try {
    await waitAll(r, filled.map((s) => s.id));
    const drain = N / (await doneSpread(r, filled.map((s) => s.id)));
    // end to end, worker running
    const t0 = performance.now();
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
    await Promise.all(sent.map((s) => s.get({ timeout: 300000 })));
    const e2e = N / ((performance.now() - t0) / 1000);
    return [e2e, drain];
  } finally {
    await w.stop();
  }
}

async function pythonToNode(redis: RedisServer, pki: Pki, r: Redis): Promise<[number, number]> {
  const queue = `b-pn-${Math.random().toString(36).slice(2)}`;
  const make = () =>
    createWorker({
      broker: rabbit.url,
      backend: redis.url(),
      security: serializer(pki),
      queues: [queue],
      concurrency: 64,
      tasks: { 'wire.add': (a, kw) => Number(a[0]) + Number(a[1] ?? kw.y ?? 0) },
    });
  // worker only: a Python producer fills the queue, then the Node worker drains it
  const filled = await runProducer<{ ids: string[] }>(pki, redis.url(), { op: 'bulk', name: 'wire.add', count: N, queue, kwargs: { y: 1 } }, { timeoutMs: 300000 });
  let w = make();
  await w.start();
  await waitAll(r, filled.ids);
  await w.stop();
  const drain = N / (await doneSpread(r, filled.ids));
  // end to end: the Python producer sends while the Node worker runs
  w = make();
  await w.start();
  try {
    const t0 = performance.now();
    const sent = await runProducer<{ ids: string[] }>(pki, redis.url(), { op: 'bulk', name: 'wire.add', count: N, queue, kwargs: { y: 1 } }, { timeoutMs: 300000 });
    await waitAll(r, sent.ids);
    const e2e = N / ((performance.now() - t0) / 1000);
    return [e2e, drain];
  } finally {
    await w.stop();
  }
}

async function pythonToPython(redis: RedisServer, pki: Pki, r: Redis): Promise<[number, number]> {
  const queue = `b-pp-${Math.random().toString(36).slice(2)}`;
  const filled = await runProducer<{ ids: string[] }>(pki, redis.url(), { op: 'bulk', name: 'wire.add', count: N, queue, kwargs: { y: 1 } }, { timeoutMs: 300000 });
  const w = await pyWorker(pki, redis, queue);
  try {
    await waitAll(r, filled.ids);
    const drain = N / (await doneSpread(r, filled.ids));
    const t0 = performance.now();
    const sent = await runProducer<{ ids: string[] }>(pki, redis.url(), { op: 'bulk', name: 'wire.add', count: N, queue, kwargs: { y: 1 } }, { timeoutMs: 300000 });
    await waitAll(r, sent.ids);
    return [N / ((performance.now() - t0) / 1000), drain];
  } finally {
    await w.stop();
  }
}

async function nodeToNode(redis: RedisServer, pki: Pki, r: Redis, client: CeleryClient): Promise<[number, number]> {
  const queue = `b-nn-${Math.random().toString(36).slice(2)}`;
  const make = () =>
    createWorker({
      broker: rabbit.url,
      backend: redis.url(),
      security: serializer(pki),
      queues: [queue],
      concurrency: 64,
      tasks: { 'wire.add': (a, kw) => Number(a[0]) + Number(a[1] ?? kw.y ?? 0) },
    });
  const filled = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
  let w = make();
  await w.start();
  await waitAll(r, filled.map((s) => s.id));
  await w.stop();
  const drain = N / (await doneSpread(r, filled.map((s) => s.id)));
  w = make();
  await w.start();
  try {
    const t0 = performance.now();
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
    await Promise.all(sent.map((s) => s.get({ timeout: 300000 })));
    return [N / ((performance.now() - t0) / 1000), drain];
  } finally {
    await w.stop();
  }
}

async function publishOnly(r: Redis, client: CeleryClient): Promise<[number, number]> {
  const queue = `b-pub-${Math.random().toString(36).slice(2)}`;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
  const rate = N / ((performance.now() - t0) / 1000);
  return [rate, NaN];
}

async function main(): Promise<void> {
  let redis: RedisServer;
  [rabbit, redis] = await Promise.all([startRabbit(), startRedis()]);
  const pki = makePki();
  const r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki) });
  const rows: [string, (() => Promise<[number, number]>)][] = [
    ['Node producer, publish only (signed, confirmed)', () => publishOnly(r, client)],
    ['Node producer -> Python worker (prefork -c 2)', () => nodeToPython(redis, pki, r, client)],
    ['Python producer (send_task) -> Node worker', () => pythonToNode(redis, pki, r)],
    ['Node producer -> Node worker', () => nodeToNode(redis, pki, r, client)],
    ['Python producer -> Python worker (baseline)', () => pythonToPython(redis, pki, r)],
  ];
  console.log(`wire bench (RabbitMQ broker, Redis results): ${N} tasks per run, median of ${ROUNDS}; ${cpus()[0]?.model ?? '?'} x${availableParallelism()}, load ${loadavg()[0]!.toFixed(2)}`);
  try {
    for (const [label, fn] of rows) {
      const e2e: number[] = [];
      const drain: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const [a, b] = await fn();
        e2e.push(a);
        drain.push(b);
        await r.flushdb();
      }
      const fmt = (xs: number[]): string => (Number.isNaN(xs[0]!) ? '-' : `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`);
      console.log(`${label.padEnd(48)} end to end ${fmt(e2e).padEnd(22)} worker only ${fmt(drain)}  tasks/s`);
    }
  } finally {
    await client.close();
    r.disconnect();
    await redis.stop();
    await rabbit.stop();
    pki.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
