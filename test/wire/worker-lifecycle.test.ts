/**
 * The Node worker's own guarantees, Node producer -> Node worker on a real
 * redis-server: verification in batches, acknowledgement only after the
 * result is stored, a graceful stop that finishes running tasks and gives
 * back the rest, ETA, time limits, ignore_result, signed (auth) results, and
 * the concurrency limit.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import {
  createClient,
  createWorker,
  FSCertStore,
  SecureSerializer,
  SecurityError,
  TaskFailedError,
  type Bytes,
  type CeleryClient,
  type DeserializeResult,
  type TaskHandler,
  type WorkerOptions,
} from 'celery-sign';
import { STORE_ATTEMPTS } from '../../lib/wire/worker.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';

let redis: RedisServer;
let pki: Pki;
let r: Redis;
let client: CeleryClient;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  client = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki) });
});

test.after.always(async () => {
  await client?.close();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

function worker(queue: string, tasks: Record<string, TaskHandler>, extra: Partial<WorkerOptions> = {}) {
  return createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki),
    queues: [queue],
    tasks,
    ...extra,
  });
}

/** A verifying serializer that records the size of every batch it is given. */
class CountingSerializer extends SecureSerializer {
  readonly batches: number[] = [];
  override async deserializeMany(payloads: readonly Bytes[]): Promise<DeserializeResult[]> {
    if (payloads.length > 0) this.batches.push(payloads.length);
    return super.deserializeMany(payloads);
  }
}

test.serial('messages are verified in batches (one native call per batch)', async (t) => {
  t.timeout(60000);
  const sent = await Promise.all(Array.from({ length: 600 }, (_, i) => client.sendTask('t.echo', [i], {}, { queue: 'batch' })));
  const security = new CountingSerializer({ store: new FSCertStore(pki.storeDir) });
  const w = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security,
    queues: ['batch'],
    concurrency: 64,
    batchSize: 256,
    canvas: false, // verify-only (a store, no key)
    retries: false,
    remoteControl: false,
    tasks: { 't.echo': ([i]) => i },
  });
  await w.start();
  try {
    const values = await Promise.all(sent.map((s) => s.get({ timeout: 30000 })));
    t.deepEqual(values, Array.from({ length: 600 }, (_, i) => i));
    t.is(security.batches.reduce((a, b) => a + b, 0), 600);
    t.true(Math.max(...security.batches) >= 64, `batch sizes ${security.batches.join(',')}`);
    t.true(security.batches.length <= 20);
  } finally {
    await w.stop();
  }
});

/** A verifying serializer whose first batch reports an internal fault for its first item (as a caught panic would). */
class FaultingSerializer extends SecureSerializer {
  faults = 0;
  override async deserializeMany(payloads: readonly Bytes[]): Promise<DeserializeResult[]> {
    const results = await super.deserializeMany(payloads);
    if (this.faults === 0 && results.length > 0) {
      this.faults++;
      results[0] = { ok: false, error: new SecurityError('ERR_INTERNAL', 'internal error (test)') };
    }
    return results;
  }
}

test.serial('an item with ERR_INTERNAL is not a refusal: it goes back to the queue and runs once', async (t) => {
  t.timeout(30000);
  const runs: number[] = [];
  const security = new FaultingSerializer({ store: new FSCertStore(pki.storeDir) });
  const w = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security,
    queues: ['fault'],
    canvas: false, // verify-only (a store, no key)
    retries: false,
    remoteControl: false,
    tasks: { 't.record': ([i]) => (runs.push(Number(i)), i) },
  });
  const errors: unknown[] = [];
  const refusals: unknown[] = [];
  w.on('error', (e) => errors.push(e));
  w.on('security', (e) => refusals.push(e));
  const sent = await Promise.all([1, 2, 3].map((i) => client.sendTask('t.record', [i], {}, { queue: 'fault' })));
  await w.start();
  try {
    t.deepEqual(await Promise.all(sent.map((s) => s.get({ timeout: 20000 }))), [1, 2, 3]);
    t.deepEqual([...runs].sort(), [1, 2, 3]);
    t.is(security.faults, 1);
    t.deepEqual(refusals, []);
    t.is(errors.length, 1);
    t.is((errors[0] as SecurityError).code, 'ERR_INTERNAL');
    t.is(await eventually(() => r.hlen('unacked'), 0), 0);
  } finally {
    await w.stop();
  }
});

test.serial('a message is acknowledged only after its result is stored', async (t) => {
  t.timeout(30000);
  let unackedWhileRunning = -1;
  const w = worker('late', {
    't.slow': async () => {
      unackedWhileRunning = await r.hlen('unacked');
      await sleep(100);
      return 'done';
    },
  });
  await w.start();
  try {
    const res = await client.sendTask('t.slow', [], {}, { queue: 'late' });
    t.is(await res.get({ timeout: 10000 }), 'done');
    t.is(unackedWhileRunning, 1);
    t.is(await eventually(() => r.hlen('unacked'), 0), 0);
  } finally {
    await w.stop();
  }
});

test.serial('broker and backend on one Redis database: results and their acks go in one script call (no MULTI); on another database, stored and acked apart', async (t) => {
  t.timeout(60000);
  const add: TaskHandler = ([a, b]) => Number(a) + Number(b);
  const run = async (w: ReturnType<typeof worker>, c: CeleryClient, queue: string): Promise<string> => {
    await r.config('RESETSTAT');
    await w.start();
    try {
      const sent = await Promise.all(Array.from({ length: 40 }, (_, i) => c.sendTask('t.add', [i, 1], {}, { queue })));
      for (const [i, s] of sent.entries()) t.is(await s.get({ timeout: 10000 }), i + 1);
      t.is(await eventually(() => r.hlen('unacked'), 0), 0, 'every message acked');
      return await r.info('commandstats');
    } finally {
      await w.stop();
    }
  };
  const together = await run(worker('one', { 't.add': add }), client, 'one');
  t.notRegex(together, /cmdstat_exec:/, 'no MULTI/EXEC: the acks went with the stores');
  // The backend on database 1, the broker on 0: the acks are kombu's MULTI/EXEC, after the store.
  const apart = createClient({ broker: redis.url(), backend: redis.url(1), security: serializer(pki) });
  try {
    const stats = await run(worker('two', { 't.add': add }, { backend: redis.url(1) }), apart, 'two');
    t.regex(stats, /cmdstat_exec:calls=[1-9]/);
  } finally {
    await apart.close();
  }
});

test.serial(`broker and backend on one Redis database: a store that fails acknowledges nothing; after ${STORE_ATTEMPTS} tries the message goes back to the queue and runs again`, async (t) => {
  t.timeout(30000);
  const id = `store-fails-${process.pid}`;
  // The result key holds a list: the store script's GET fails (WRONGTYPE) and ends the script before its ack.
  await r.rpush(`celery-task-meta-${id}`, 'not a result');
  const errors: unknown[] = [];
  const w = worker('sfail', { 't.one': () => 1 });
  w.on('error', (e: unknown) => errors.push(e));
  await w.start();
  try {
    await client.sendTask('t.one', [], {}, { queue: 'sfail', id });
    await eventually(async () => errors.length >= 1, true);
    t.regex(String((errors[0] as Error).message), /WRONGTYPE/);
    t.is(w.stats.succeeded, 1);
    t.is(await r.hlen('unacked'), 1, 'the message is still unacknowledged');
    // The tries run out: the message is given back and runs again (the store fails again, and so on).
    await eventually(async () => w.stats.succeeded >= 2, true, 15000);
    t.true(errors.length >= STORE_ATTEMPTS);
    t.true(errors.every((e) => /WRONGTYPE/.test(String((e as Error).message))));
    t.is(await r.type(`celery-task-meta-${id}`), 'list');
  } finally {
    await w.stop();
  }
  try {
    t.is((await r.llen('sfail')) + (await r.hlen('unacked')), 1, 'never acknowledged, never lost');
  } finally {
    await r.del(`celery-task-meta-${id}`, 'unacked', 'unacked_index', 'sfail');
  }
});

test.serial('stop(): running tasks finish and are acked; held but unstarted ones go back to the queue', async (t) => {
  t.timeout(60000);
  const runs = new Map<number, number>();
  const started: number[] = [];
  const slow: TaskHandler = async ([i]) => {
    started.push(Number(i));
    runs.set(Number(i), (runs.get(Number(i)) ?? 0) + 1);
    await sleep(400);
    return i;
  };
  const sent = await Promise.all(Array.from({ length: 20 }, (_, i) => client.sendTask('t.slow', [i], {}, { queue: 'stop' })));
  const w1 = worker('stop', { 't.slow': slow }, { concurrency: 2, prefetchMultiplier: 4 });
  await w1.start();
  while (started.length < 2) await sleep(10);
  await w1.stop();
  t.is(started.length, 2, 'only the two running tasks ran');
  t.is(w1.stats.received, 8, 'it held concurrency x prefetchMultiplier messages');
  for (const i of started) t.is((await client.asyncResult(sent[i]!.id).getMeta())?.status, 'SUCCESS');
  t.is(await r.hlen('unacked'), 0);
  t.is(await r.llen('stop'), 18);
  // the six given back are first in line again, in their order
  const w2 = worker('stop', { 't.slow': slow }, { concurrency: 20 });
  await w2.start();
  try {
    const values = await Promise.all(sent.map((s) => s.get({ timeout: 20000 })));
    t.deepEqual(values, Array.from({ length: 20 }, (_, i) => i));
    t.deepEqual([...runs.values()].filter((n) => n !== 1), [], 'each ran once');
    t.deepEqual(started.slice(2, 8), [2, 3, 4, 5, 6, 7]);
  } finally {
    await w2.stop();
  }
});

test.serial('eta, hard time limit (TimeLimitExceeded, signal aborted), unencodable result, ignore_result, concurrency limit', async (t) => {
  t.timeout(60000);
  let aborted = false;
  let running = 0;
  let maxRunning = 0;
  const w = worker(
    'misc',
    {
      't.at': () => Date.now(),
      't.hang': async (_a, _k, ctx) => {
        ctx.signal.addEventListener('abort', () => {
          aborted = true;
        });
        await sleep(3000);
        return 'too late';
      },
      't.quiet': () => 'not stored',
      't.unencodable': () => new Float64Array(1),
      't.par': async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await sleep(50);
        running--;
        return true;
      },
    },
    { concurrency: 3 },
  );
  await w.start();
  try {
    const sentAt = Date.now();
    const eta = await client.sendTask('t.at', [], {}, { queue: 'misc', countdown: 1 });
    const hang = await client.sendTask('t.hang', [], {}, { queue: 'misc', timeLimit: 0.3 });
    const quiet = await client.sendTask('t.quiet', [], {}, { queue: 'misc', ignoreResult: true });
    const par = await Promise.all(Array.from({ length: 12 }, () => client.sendTask('t.par', [], {}, { queue: 'misc' })));
    const unencodable = await client.sendTask('t.unencodable', [], {}, { queue: 'misc' });
    const encErr = await t.throwsAsync(unencodable.get({ timeout: 10000 }), { instanceOf: TaskFailedError });
    t.is(encErr!.excType, 'EncodeError'); // as Celery stores a result its serializer cannot encode
    const err = await t.throwsAsync(hang.get({ timeout: 10000 }), { instanceOf: TaskFailedError });
    t.is(err!.excType, 'TimeLimitExceeded');
    t.is(err!.excModule, 'billiard.exceptions');
    t.true(aborted);
    t.true(Number(await eta.get({ timeout: 10000 })) >= sentAt + 950);
    await Promise.all(par.map((p) => p.get({ timeout: 10000 })));
    t.true(maxRunning <= 3 && maxRunning >= 2, `max ${maxRunning} at once`);
    await eventually(async () => w.stats.succeeded >= 15, true);
    t.is(await r.get(`celery-task-meta-${quiet.id}`), null);
  } finally {
    await w.stop();
  }
});

test.serial("results signed with result_serializer='auth' verify on the way back", async (t) => {
  t.timeout(30000);
  const signing = serializer(pki);
  const w = worker('authres', { 't.v': () => ({ ok: [1, 2] }) }, { resultSerializer: 'auth', security: signing });
  const c = createClient({ broker: redis.url(), backend: redis.url(), security: signing, resultSerializer: 'auth' });
  await w.start();
  try {
    const res = await c.sendTask('t.v', [], {}, { queue: 'authres' });
    t.deepEqual(await res.get({ timeout: 10000 }), { ok: [1, 2] });
    const stored = (await r.get(`celery-task-meta-${res.id}`))!;
    t.false(stored.startsWith('{'), 'stored as an auth payload');
    t.like(serializer(pki, 'verify').deserialize(stored) as Record<string, unknown>, { status: 'SUCCESS', task_id: res.id });
  } finally {
    await c.close();
    await w.stop();
  }
});

test.serial("security from Celery's settings (setupSecurity), as a Celery user has them", async (t) => {
  t.timeout(30000);
  const conf = {
    task_serializer: 'auth',
    accept_content: ['auth'],
    security_key: pki.key,
    security_certificate: pki.cert,
    security_cert_store: `${pki.storeDir}/*.pem`,
    security_digest: 'sha256',
  };
  const w = createWorker({ broker: redis.url(), backend: redis.url(), security: conf, queues: ['conf'], tasks: { 't.ok': () => 'ok' } });
  const c = createClient({ broker: redis.url(), backend: redis.url(), security: conf });
  await w.start();
  try {
    t.is(await (await c.sendTask('t.ok', [], {}, { queue: 'conf' })).get({ timeout: 10000 }), 'ok');
    // A value kombu JSON cannot encode fails its own send only, not the batch it was in.
    const [bad, good] = await Promise.allSettled([
      c.sendTask('t.ok', [new Float64Array(1)], {}, { queue: 'conf' }),
      c.sendTask('t.ok', [], {}, { queue: 'conf' }),
    ]);
    t.is(bad.status, 'rejected');
    t.is(good.status, 'fulfilled');
    if (good.status === 'fulfilled') t.is(await good.value.get({ timeout: 10000 }), 'ok');
    t.throws(() => createClient({ broker: redis.url(), security: { ...conf, accept_content: ['auth', 'json'] } }), {
      name: 'ImproperlyConfigured',
    });
  } finally {
    await c.close();
    await w.stop();
  }
});

test.serial('a worker that would publish and cannot sign fails at start(); a verify-only one says canvas: false', async (t) => {
  t.timeout(30000);
  const verifyOnly = serializer(pki, 'verify');
  const w = worker('verify-only', { 't.ok': () => 'ok' }, { security: verifyOnly });
  const err = await t.throwsAsync(w.start(), { name: 'ImproperlyConfigured' });
  t.regex(err!.message, /signs what it publishes.*no key and certificate.*chains, callbacks and chords \(canvas: false/);
  t.false(w.running);
  const lax = worker('verify-only', { 't.ok': () => 'ok' }, { security: verifyOnly, canvas: false, retries: false, remoteControl: false });
  await lax.start();
  try {
    t.is(await (await client.sendTask('t.ok', [], {}, { queue: 'verify-only' })).get({ timeout: 10000 }), 'ok');
  } finally {
    await lax.stop();
  }
});

test.serial('Node producer -> Node worker: 10,000 tasks, none lost, none run twice', async (t) => {
  t.timeout(120000);
  const N = 10000;
  const runs = new Map<string, number>();
  const w = worker(
    'n2n',
    {
      'wire.count': ([i], _k, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
    { concurrency: 64 },
  );
  await w.start();
  try {
    const t0 = performance.now();
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => client.sendTask('wire.count', [i], {}, { queue: 'n2n' })));
    const values = await Promise.all(sent.map((s) => s.get({ timeout: 60000 })));
    const t1 = performance.now();
    t.deepEqual(values, Array.from({ length: N }, (_, i) => i));
    t.is(sent.filter((s) => runs.get(s.id) !== 1).length, 0);
    t.log(`Node producer -> Node worker (one process): ${(N / ((t1 - t0) / 1000)).toFixed(0)} tasks/s end to end`);
  } finally {
    await w.stop();
  }
});
