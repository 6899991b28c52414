/**
 * A broker restart in the middle: redis-server with an append-only file
 * (fsync on every write) is killed (SIGKILL) and started again while a Node
 * producer sends and a Node worker consumes. Every task the broker
 * acknowledged (its `sendTask` resolved) runs and its result comes back.
 * A task may run twice (a reply lost in the crash means a resent command or
 * a redelivery after the visibility timeout: at-least-once); none is lost.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { createClient, createWorker, type AsyncResult } from 'celery-sign';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let redis: RedisServer;
let pki: Pki;

test.before(async () => {
  redis = await startRedis({ appendonly: true });
  pki = makePki();
});

test.after.always(async () => {
  await redis?.stop();
  pki?.cleanup();
});

test('a broker crash and restart mid-stream loses no acknowledged task', async (t) => {
  t.timeout(150000);
  const N = 4000;
  const CHUNK = 100;
  const runs = new Map<string, number>();
  let redelivered = 0;
  const worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: ['restart'],
    concurrency: 32,
    // A message whose ack was lost in the crash comes back after 5 s.
    visibilityTimeout: 5,
    transportOptions: { unacked_restore_interval: 1 },
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        if (ctx.redelivered) redelivered++;
        await new Promise((res) => setTimeout(res, 1));
        return i;
      },
    },
  });
  const runId = async (): Promise<string> => {
    const c = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
    await c.connect();
    try {
      return /run_id:(\w+)/.exec(await c.info('server'))![1]!;
    } finally {
      c.disconnect();
    }
  };
  const before = await runId();
  const errors: unknown[] = [];
  worker.on('error', (e: unknown) => errors.push(e));
  await worker.start();
  const client = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki), pollInterval: 500 });
  const acked: AsyncResult[] = [];
  let refused = 0;
  let restarted: Promise<void> | undefined;
  let downAt = 0;
  try {
    for (let start = 0; start < N; start += CHUNK) {
      if (start === N / 4) {
        downAt = performance.now();
        restarted = redis.restart({ hard: true, downMs: 1000 });
      }
      const settled = await Promise.allSettled(
        Array.from({ length: CHUNK }, (_, j) => client.sendTask('wire.count', [start + j], {}, { queue: 'restart' })),
      );
      for (const s of settled) {
        if (s.status === 'fulfilled') acked.push(s.value);
        else refused++;
      }
    }
    await restarted;
    t.not(await runId(), before, 'the server really restarted');
    const values = await Promise.all(acked.map((a) => a.get({ timeout: 90000 })));
    t.is(values.length, acked.length);
    const lost = acked.filter((a) => (runs.get(a.id) ?? 0) === 0);
    const twice = acked.filter((a) => (runs.get(a.id) ?? 0) > 1);
    t.deepEqual(lost.map((a) => a.id), [], 'acknowledged but never run');
    t.true(acked.length >= N - 2 * CHUNK, `the producer kept going after the restart (${acked.length} acknowledged)`);
    t.log(
      `restart at ${N / 4} sends (${((performance.now() - downAt) / 1000).toFixed(1)} s ago): ${acked.length} acknowledged, ${refused} refused by the broker while down, ` +
        `${lost.length} lost, ${twice.length} run twice, ${redelivered} redelivered after the visibility timeout, ${errors.length} worker errors reported`,
    );
    const r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
    await r.connect();
    try {
      t.is(await r.llen('restart'), 0);
    } finally {
      r.disconnect();
    }
  } finally {
    await client.close();
    await worker.stop({ timeout: 5000 });
  }
});
