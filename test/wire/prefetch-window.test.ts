/**
 * The Node worker's prefetch window over real redis-servers: it counts the
 * messages not yet run (Celery's reserved requests), so the worker fetches
 * the next batch while the last one's results are being stored; and it stays
 * bounded when the result backend stalls (four windows held at most, each
 * message still acknowledged only after its result is stored).
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { createClient, createWorker } from 'celery-sign';
import { until } from './helpers/amqp.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let broker: RedisServer;
let backend: RedisServer;
let pki: Pki;

test.before(async () => {
  [broker, backend] = await Promise.all([startRedis(), startRedis()]);
  pki = makePki();
});

test.after.always(async () => {
  await Promise.all([broker?.stop(), backend?.stop()]);
  pki?.cleanup();
});

test('a stalled result backend: the worker takes up to four windows, acknowledges none before its result is stored, then drains', async (t) => {
  t.timeout(120000);
  const queue = 'window';
  const b = new Redis(broker.url());
  const s = new Redis(backend.url());
  const pause = new Redis(backend.url());
  const client = createClient({ broker: broker.url(), backend: backend.url(), security: serializer(pki) });
  // concurrency 2 x prefetchMultiplier 2: a window of 4 messages.
  const worker = createWorker({
    broker: broker.url(),
    backend: backend.url(),
    security: serializer(pki),
    queues: [queue],
    concurrency: 2,
    prefetchMultiplier: 2,
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
    handleSignals: false,
  });
  try {
    const sent = await Promise.all(Array.from({ length: 60 }, (_, i) => client.sendTask('wire.add', [i, 1], {}, { queue })));
    // Every write to the backend waits until the pause ends.
    await pause.call('CLIENT', 'PAUSE', '4000', 'WRITE');
    await worker.start();
    let most = 0;
    const end = Date.now() + 2500;
    while (Date.now() < end) {
      most = Math.max(most, await b.hlen('unacked'));
      await new Promise((res) => setTimeout(res, 25));
    }
    t.true(most > 4, `the window counts only tasks not yet run: ${most} held while results wait`);
    t.true(most <= 16, `at most four windows held: ${most}`);
    t.is(await s.dbsize(), 0, 'nothing stored during the pause');
    t.is(await b.llen(queue), 60 - most, 'what is not held is still on the queue (none acknowledged)');
    const values = await Promise.all(sent.map((r) => r.get({ timeout: 60000 })));
    t.deepEqual(values, sent.map((_, i) => i + 1));
    // Each is acknowledged right after its result is stored: the last acks may trail the results.
    t.is(await until(() => b.hlen('unacked'), 0, 10000), 0);
  } finally {
    await worker.stop();
    await client.close();
    b.disconnect();
    s.disconnect();
    pause.disconnect();
  }
});
