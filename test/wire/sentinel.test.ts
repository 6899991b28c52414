/**
 * Redis Sentinel: `sentinel://` broker and result backend URLs with
 * `master_name` / `sentinel_kwargs` as kombu and Celery take them, against
 * real redis-server processes (a master with a password, two replicas, three
 * sentinels with a password of their own: test/wire/helpers/sentinel.ts).
 *
 * - a stock Python Celery 5.7 producer sends through the same sentinel://
 *   URL and options to the Node worker and reads the results back through
 *   Celery's SentinelBackend;
 * - the master is killed (SIGKILL) in the middle of a run of signed tasks
 *   from a Node client to the Node worker, then a planned switch
 *   (`SENTINEL FAILOVER`) follows: the client and the worker follow the
 *   sentinels to each new master, the worker keeps consuming, and every
 *   task runs and has its result. Redis replicates asynchronously, so what
 *   is asserted is at-least-once: every task ran at least once, every task
 *   has its stored SUCCESS, nothing is left in `unacked`; a task runs twice
 *   only when an acknowledgement (or a pop) had not reached the replica
 *   that was promoted (logged, not asserted). Publishes and result stores
 *   wait for one replica (`wait_replicas: 1`): a publish that resolved is on
 *   a replica, and a task is acknowledged only once its result is.
 */
import { randomUUID } from 'node:crypto';
import test from 'ava';
import { createClient, createWorker, ImproperlyConfigured, type CeleryClient, type Worker } from 'celery-sign';
import { replicationWait, sentinelOptions } from '../../lib/wire/sentinel.js';
import { makePki, runScript, serializer, wireEnv, type Pki } from './helpers/celery.js';
import { startCliWorker } from './helpers/cli-worker.js';
import { startSentinels, type SentinelSetup } from './helpers/sentinel.js';

const QUEUE = 'sentinel';
let s: SentinelSetup;
let pki: Pki;
let worker: Worker;
let client: CeleryClient;
const runs = new Map<string, number>();
const workerErrors: unknown[] = [];

function brokerOptions(): Record<string, unknown> {
  return {
    master_name: s.masterName,
    sentinel_kwargs: { password: s.sentinelPassword },
    visibility_timeout: 5,
    unacked_restore_interval: 1,
    wait_replicas: 1,
    wait_timeout: 2,
  };
}
function backendOptions(): Record<string, unknown> {
  return { master_name: s.masterName, sentinel_kwargs: { password: s.sentinelPassword }, wait_replicas: 1, wait_timeout: 2 };
}

test.before(async () => {
  s = await startSentinels({ replicas: 2, sentinels: 3 });
  pki = makePki();
  worker = createWorker({
    broker: s.url(),
    backend: s.url(),
    transportOptions: brokerOptions(),
    backendTransportOptions: backendOptions(),
    security: serializer(pki),
    queues: [QUEUE],
    concurrency: 32,
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'sent.count': ([i], _kwargs, ctx) => {
        runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
        return i;
      },
    },
  });
  worker.on('error', (err: unknown) => workerErrors.push(err));
  await worker.start();
  client = createClient({
    broker: s.url(),
    backend: s.url(),
    transportOptions: brokerOptions(),
    backendTransportOptions: backendOptions(),
    security: serializer(pki),
    pollInterval: 250,
  });
  await client.connect();
});

test.after.always(async () => {
  await client?.close().catch(() => undefined);
  await worker?.stop({ timeout: 5000 }).catch(() => undefined);
  await s?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('sentinel:// URLs and options read as kombu (broker) and Celery (backend) read them', (t) => {
  const url = 'sentinel://user:p%40ss@10.0.0.1:26380/3;sentinel://10.0.0.2;sentinel://[::1]:26381/9';
  const b = sentinelOptions(url, { master_name: 'mymaster', sentinel_kwargs: { password: 'sp', username: 'su', socket_timeout: 0.5 } }, 'broker');
  t.deepEqual(b.sentinels, [
    { host: '10.0.0.1', port: 26380 },
    { host: '10.0.0.2', port: 26379 }, // kombu's SentinelTransport.default_port
    { host: '::1', port: 26381 },
  ]);
  // The first URL gives the master's credentials and database; the sentinels theirs from sentinel_kwargs.
  t.like(b, { name: 'mymaster', role: 'master', username: 'user', password: 'p@ss', db: 3, sentinelPassword: 'sp', sentinelUsername: 'su', sentinelCommandTimeout: 500 });
  // Celery's SentinelBackend gives a URL without a port its redis_port default, 6379.
  t.deepEqual(sentinelOptions(url, { master_name: 'm' }, 'backend').sentinels![1], { host: '10.0.0.2', port: 6379 });
  const noName = t.throws(() => sentinelOptions(url, {}, 'broker'), { instanceOf: ImproperlyConfigured });
  t.regex(noName!.message, /'master_name' transport option must be specified/);
  t.throws(() => sentinelOptions(url, { master_name: 'm', min_other_sentinels: 1 }), { instanceOf: ImproperlyConfigured, message: /min_other_sentinels/ });
  t.throws(() => sentinelOptions(url, { master_name: 'm', sentinel_kwargs: { ssl: true } }), { message: /TLS to the sentinels/ });
  t.throws(() => sentinelOptions(url, { master_name: 'm', sentinel_kwargs: { bogus: 1 } }), { message: /sentinel_kwargs\.bogus/ });
  const bad = t.throws(() => sentinelOptions('sentinel://:secret@h:1;redis://:secret@h:2', { master_name: 'm' }));
  t.false(bad!.message.includes('secret'));
  t.deepEqual(replicationWait({ wait_replicas: 1 }), { replicas: 1, timeoutMs: 1000 });
  t.is(replicationWait({}), null);
  t.throws(() => replicationWait({ wait_replicas: 1, wait_timeout: 0 }), { instanceOf: ImproperlyConfigured });
});

function pyEnv(): NodeJS.ProcessEnv {
  return wireEnv(pki, s.url(), 'good', {
    WIRE_BROKER_TRANSPORT_OPTIONS: JSON.stringify({ master_name: s.masterName, sentinel_kwargs: { password: s.sentinelPassword } }),
    WIRE_BACKEND_TRANSPORT_OPTIONS: JSON.stringify({ master_name: s.masterName, sentinel_kwargs: { password: s.sentinelPassword } }),
  });
}

async function pythonSends(t: import('ava').ExecutionContext, base: number): Promise<void> {
  const tasks = [0, 1, 2, 3, 4].map((i) => ({ name: 'wire.add', args: [base, i], options: { queue: QUEUE } }));
  const out = await runScript<{ ids: string[]; results: { ok: boolean; value?: unknown }[] }>(
    'wire_producer.py',
    { op: 'send', tasks, wait: true, timeout: 30 },
    { processEnv: pyEnv(), timeoutMs: 90000 },
  );
  t.deepEqual(out.results, [0, 1, 2, 3, 4].map((i) => ({ ok: true, value: base + i })));
  // And the Node client reads the same results through its own sentinel:// backend.
  for (const [i, id] of out.ids.entries()) t.is(await client.asyncResult(id).get({ timeout: 10000 }), base + i);
}

test.serial('a stock Python Celery producer with the same sentinel:// URL and master_name: the Node worker runs, Python reads the results', async (t) => {
  t.timeout(120000);
  await pythonSends(t, 100);
});

/** Sends `sent.count` tasks in small batches while `failover` runs; a send that fails is sent again (same id). */
async function runThroughFailover(
  t: import('ava').ExecutionContext,
  failover: () => Promise<void>,
): Promise<void> {
  runs.clear();
  const BATCH = 20;
  const sent: { id: string; i: number }[] = [];
  let resent = 0;
  const why = new Set<string>();
  let done = false;
  let failing: Promise<void> | undefined;
  let failed: unknown;
  let after = 0;
  const sendOne = async (id: string, i: number): Promise<void> => {
    const deadline = Date.now() + 60000;
    for (;;) {
      try {
        await client.sendTask('sent.count', [i], {}, { queue: QUEUE, id });
        return;
      } catch (err) {
        // Not known to be on a replica (or not sent): send again, the same task. At-least-once.
        if (Date.now() > deadline) throw err;
        resent++;
        why.add(String((err as Error).message).slice(0, 160));
        await sleep(200);
      }
    }
  };
  for (let b = 0; !(done && after >= 5) && failed === undefined; b++) {
    const chunk = Array.from({ length: BATCH }, (_, k) => ({ id: randomUUID(), i: b * BATCH + k }));
    sent.push(...chunk);
    await Promise.all(chunk.map((c) => sendOne(c.id, c.i)));
    if (b === 3) {
      failing = failover().then(
        () => void (done = true),
        (err: unknown) => void (failed = err),
      );
    }
    else if (done) after++;
    await sleep(25);
  }
  await failing;
  if (failed !== undefined) throw failed;
  // Every task has its result, through the client's sentinel:// backend.
  const values = await Promise.all(sent.map((c) => client.asyncResult(c.id).get({ timeout: 60000 })));
  t.deepEqual(values, sent.map((c) => c.i));
  const missing = sent.filter((c) => !runs.has(c.id));
  t.deepEqual(missing, [], 'every task ran at least once');
  const twice = sent.filter((c) => (runs.get(c.id) ?? 0) > 1).length;
  t.log(`${sent.length} tasks; sent again after an error: ${resent}; ran more than once: ${twice}; worker errors: ${workerErrors.length}`);
  for (const w of why) t.log(`send error: ${w}`);
  for (const e of new Set(workerErrors.map((e) => String((e as Error).message).slice(0, 160)))) t.log(`worker error: ${e}`);
  workerErrors.length = 0;
  // Nothing left behind on the new master: no queued task, nothing in unacked (a stranded batch was restored and run).
  const port = await s.masterPort();
  const m = s.node(port);
  await m.connect();
  const deadline = Date.now() + 30000;
  let left = -1;
  while (Date.now() < deadline) {
    left = (await m.hlen('unacked')) + (await m.llen(QUEUE));
    if (left === 0) break;
    await sleep(250);
  }
  t.is(left, 0);
  t.true(worker.running);
}

test.serial('the master is killed mid-run (SIGKILL): client and worker follow the sentinels; every task runs and has its result', async (t) => {
  t.timeout(180000);
  const old = await s.masterPort();
  await runThroughFailover(t, async () => {
    const m = s.node(old);
    await m.connect();
    const pid = Number(/process_id:(\d+)/.exec(await m.info('server'))![1]);
    m.disconnect();
    process.kill(pid, 'SIGKILL');
    await s.waitForNewMaster(old, 1);
  });
  t.not(await s.masterPort(), old);
});

test.serial('a planned switch (SENTINEL FAILOVER) mid-run: the old master turns replica, nothing is lost', async (t) => {
  t.timeout(180000);
  const old = await s.masterPort();
  await runThroughFailover(t, async () => {
    const { Redis } = await import('ioredis');
    const sen = new Redis({ host: '127.0.0.1', port: s.sentinelPorts[1]!, password: s.sentinelPassword, lazyConnect: true });
    sen.on('error', () => {});
    try {
      await sen.connect();
      // The sentinels may still be finishing the previous fail-over (INPROG) or waiting for a good replica.
      const deadline = Date.now() + 30000;
      for (;;) {
        try {
          await sen.call('SENTINEL', 'FAILOVER', s.masterName);
          break;
        } catch (err) {
          if (Date.now() > deadline || !/INPROG|NOGOODSLAVE/.test(String(err))) throw err;
          await sleep(250);
        }
      }
    } finally {
      sen.disconnect();
    }
    await s.waitForNewMaster(old, 1);
  });
  t.not(await s.masterPort(), old);
});

test.serial('after the fail-overs, the Python producer finds the new master through the same URL', async (t) => {
  t.timeout(120000);
  await pythonSends(t, 200);
});

test.serial('a wrong sentinel password: a clear connection error that shows no password', async (t) => {
  t.timeout(60000);
  const bad = createClient({
    broker: s.url(),
    transportOptions: { master_name: s.masterName, sentinel_kwargs: { password: 'not-the-password' } },
    security: serializer(pki),
    connectTimeout: 3000,
  });
  try {
    const err = await t.throwsAsync(bad.connect());
    t.false(err!.message.includes('not-the-password'));
    t.false(err!.message.includes(s.masterPassword));
    t.log(err!.message);
  } finally {
    await bad.close().catch(() => undefined);
  }
});

test.serial('wait_replicas on a master without replicas: the publish rejects (ERR_BROKER); the worker stores but does not acknowledge', async (t) => {
  t.timeout(60000);
  const { startRedis } = await import('./helpers/redis-server.js');
  const { Redis } = await import('ioredis');
  const redis = await startRedis();
  const r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  const waiting = { wait_replicas: 1, wait_timeout: 0.2 };
  const c1 = createClient({ broker: redis.url(), transportOptions: waiting, security: serializer(pki) });
  const c2 = createClient({ broker: redis.url(), security: serializer(pki) });
  const errors: unknown[] = [];
  const w = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    backendTransportOptions: waiting,
    security: serializer(pki),
    queues: ['nowait'],
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
  });
  w.on('error', (err: unknown) => errors.push(err));
  try {
    await r.connect();
    const err = await t.throwsAsync(c1.sendTask('wire.add', [1, 2], {}, { queue: 'nowait' }));
    t.is((err as { code?: string }).code, 'ERR_BROKER');
    t.regex(err!.message, /reached 0 of 1 replica/);
    await w.start();
    const res = await c2.sendTask('wire.add', [2, 3], {}, { queue: 'nowait' });
    // The refused publish is on the master all the same (WAIT says where it is, not what to undo): it runs too.
    const deadline = Date.now() + 20000;
    while ((await r.keys('celery-task-meta-*')).length < 2 && Date.now() < deadline) await sleep(50);
    await sleep(300);
    t.is((await r.keys('celery-task-meta-*')).length, 2);
    t.not(await r.get(`celery-task-meta-${res.id}`), null);
    t.true(errors.length > 0);
    for (const e of errors) t.regex(String((e as Error).message), /Storing \d+ result\(s\), which reached 0 of 1 replica/);
    // Stored on the master, not acknowledged: both stay in unacked while the worker stores again (then it gives them back).
    t.is(await r.hlen('unacked'), 2);
  } finally {
    await w.stop({ timeout: 2000 }).catch(() => undefined);
    await c1.close().catch(() => undefined);
    await c2.close().catch(() => undefined);
    r.disconnect();
    await redis.stop();
  }
});

test.serial('the celery-sign worker command over sentinel://, with CELERY_BROKER_TRANSPORT_OPTIONS / CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS', async (t) => {
  t.timeout(90000);
  const opts = JSON.stringify({ master_name: s.masterName, sentinel_kwargs: { password: s.sentinelPassword } });
  const w = await startCliWorker(
    {
      CELERY_BROKER_URL: s.url(),
      CELERY_RESULT_BACKEND: s.url(),
      CELERY_BROKER_TRANSPORT_OPTIONS: opts,
      CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS: opts,
      CELERY_TASK_SERIALIZER: 'auth',
      CELERY_ACCEPT_CONTENT: '["auth"]',
      CELERY_SECURITY_KEY: pki.key,
      CELERY_SECURITY_CERTIFICATE: pki.cert,
      CELERY_SECURITY_CERT_STORE: pki.storeDir,
    },
    "export const tasks = { 'cli.mul': ([x, y]) => x * y };\n",
    'cli-sentinel',
  );
  try {
    t.regex(w.output(), / ready: 1 task \(cli\.mul\), queues cli-sentinel/);
    const res = await client.sendTask('cli.mul', [6, 7], {}, { queue: 'cli-sentinel' });
    t.is(await res.get({ timeout: 20000 }), 42);
    t.false(w.output().includes(s.sentinelPassword));
    t.false(w.output().includes(s.masterPassword));
  } finally {
    await w.stop();
  }
});
