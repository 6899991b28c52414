/**
 * A broker restart in the middle, over RabbitMQ: rabbitmq-server is killed
 * (SIGKILL) and started again on the same database while a Node producer
 * sends and a Node worker consumes. The queue is durable, the messages
 * persistent, and a send counts as acknowledged only when the broker
 * confirmed it (publisher confirms): every acknowledged task runs and its
 * result comes back. A task may run twice (an acknowledgement lost with the
 * connection: the broker redelivers it; at-least-once), none is lost.
 */
import test from 'ava';
import { createClient, createWorker, type AsyncResult } from 'celery-sign';
import { queueDepth, until } from './helpers/amqp.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let rabbit: RabbitServer;
let redis: RedisServer;
let pki: Pki;

test.before(async () => {
  [rabbit, redis] = await Promise.all([startRabbit(), startRedis()]);
  pki = makePki();
});

test.after.always(async () => {
  await rabbit?.stop();
  await redis?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

test('a broker crash and restart mid-stream loses no acknowledged task', async (t) => {
  t.timeout(150000);
  const N = 4000;
  const CHUNK = 100;
  const runs = new Map<string, number>();
  let redelivered = 0;
  const worker = createWorker({
    broker: rabbit.url,
    backend: redis.url(),
    security: serializer(pki),
    queues: ['restart'],
    concurrency: 32,
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        if (ctx.redelivered) redelivered++;
        await sleep(1);
        return i;
      },
    },
  });
  const errors: unknown[] = [];
  worker.on('error', (e: unknown) => errors.push(e));
  await worker.start();
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki), connectTimeout: 2000 });
  const acked: AsyncResult[] = [];
  let refused = 0;
  let restarted: Promise<void> | undefined;
  let restartedAt = 0;
  const downAt = { t: 0 };
  try {
    const deadline = Date.now() + 90000;
    let i = 0;
    while (acked.length < N && Date.now() < deadline) {
      if (!restarted && acked.length >= N / 4) {
        downAt.t = performance.now();
        restarted = rabbit.restart({ hard: true, downMs: 500 }).then(() => {
          restartedAt = performance.now();
        });
      }
      const settled = await Promise.allSettled(
        Array.from({ length: CHUNK }, () => client.sendTask('wire.count', [i++], {}, { queue: 'restart' })),
      );
      let failed = 0;
      for (const s of settled) {
        if (s.status === 'fulfilled') acked.push(s.value);
        else failed++;
      }
      refused += failed;
      if (failed > 0) await sleep(250); // the broker is down: try again a little later
    }
    await restarted;
    t.true(restartedAt > 0, 'the broker was restarted');
    const values = await Promise.all(acked.map((a) => a.get({ timeout: 90000 })));
    t.is(values.length, acked.length);
    const lost = acked.filter((a) => (runs.get(a.id) ?? 0) === 0);
    const twice = acked.filter((a) => (runs.get(a.id) ?? 0) > 1);
    t.deepEqual(lost.map((a) => a.id), [], 'acknowledged but never run');
    t.true(acked.length >= N, `the producer kept going after the restart (${acked.length} acknowledged)`);
    t.true(refused > 0, 'sends failed while the broker was down');
    t.is(await until(() => queueDepth(rabbit, 'restart'), 0), 0);
    t.log(
      `RabbitMQ killed after ${N / 4} confirmed sends, back ${((restartedAt - downAt.t) / 1000).toFixed(1)} s later: ${acked.length} acknowledged, ${refused} refused while down, ` +
        `${lost.length} lost, ${twice.length} run twice, ${redelivered} redelivered, ${errors.length} worker errors reported`,
    );
  } finally {
    await client.close();
    await worker.stop({ timeout: 5000 });
  }
});
