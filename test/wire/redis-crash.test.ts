/**
 * Node workers killed at the worst moments, on a real redis-server: no
 * message is ever in neither its queue nor kombu's `unacked` hash.
 *
 * - A worker stopped (SIGSTOP) while it waits on an empty queue, a task
 *   pushed, the worker killed (SIGKILL), another started: the task runs once.
 *   On a server with BLMOVE (the consumer waits without popping) and on one
 *   without it (Redis < 6.2, stood for by `--rename-command BLMOVE ""`: the
 *   consumer polls).
 * - A busy worker killed 20 times, each time right after a task was pushed:
 *   every task runs (duplicates, at least once, are counted and allowed).
 * - A worker killed in the middle of a restore sweep leaves the restore lock
 *   (`unacked_mutex`) held for a few seconds at most, not for its 300 s
 *   expiry; the next sweep restores the rest, each message exactly once.
 *
 * Workers run in child processes (test/wire/helpers/node-child.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { Redis } from 'ioredis';
import { createWorker } from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { redisEnvelope, type RedisTransport } from '../../lib/wire/redis.js';
import { openTransport } from '../../lib/wire/transport.js';
import { ROOT } from '../helpers/python.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import type { ChildConfig } from './helpers/node-child.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const CHILD = join(ROOT, 'test', 'wire', 'helpers', 'node-child.ts');
let modern: RedisServer;
let noBlmove: RedisServer;
let pki: Pki;
const children = new Set<ChildProcess>();

test.before(async () => {
  [modern, noBlmove] = await Promise.all([startRedis(), startRedis({ extraArgs: ['--rename-command', 'BLMOVE', ''] })]);
  pki = makePki();
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await modern?.stop();
  await noBlmove?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

interface Child {
  readonly proc: ChildProcess;
  readonly ready: Promise<void>;
  output(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

function startChild(cfg: ChildConfig): Child {
  const proc = spawn(process.execPath, ['--import=tsx', CHILD, JSON.stringify(cfg)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  void exited.then(() => children.delete(proc));
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child not ready in 30 s:\n${out.slice(-3000)}`)), 30000);
    const check = (): void => {
      if (/^ready$/m.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on('data', check);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`child exited before it was ready:\n${out.slice(-3000)}`));
    });
  });
  ready.catch(() => undefined);
  return {
    proc,
    ready,
    output: () => out,
    async kill(signal) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      if (signal === 'SIGKILL') await exited;
    },
  };
}

async function client(server: RedisServer): Promise<Redis> {
  const c = new Redis(server.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await c.connect();
  return c;
}

/** Waits until `n` connections named celery-sign-consumer* are blocked in a command (CLIENT LIST flags `b`). */
async function waitBlocked(r: Redis, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const list = (await r.call('CLIENT', 'LIST')) as string;
    if (list.split('\n').some((l) => /name=celery-sign-consumer/.test(l) && /flags=\S*b/.test(l))) return;
    await sleep(20);
  }
  throw new Error('no blocked consumer connection');
}

let seq = 0;
async function pushTasks(tr: RedisTransport, queue: string, n: number): Promise<string[]> {
  const msgs = Array.from({ length: n }, () => buildTaskMessage('wire.count', [seq++], {}, { queue }));
  await tr.publish(await encodeTaskMessages(msgs, serializer(pki)));
  return msgs.map((m) => m.headers.id as string);
}

/** A worker in this process that counts runs in the same hash as the children. */
function countingWorker(server: RedisServer, queue: string, r: Redis, runsKey: string, extra: { visibilityTimeout?: number; transportOptions?: Record<string, unknown> } = {}) {
  return createWorker({
    broker: server.url(),
    security: serializer(pki),
    queues: [queue],
    concurrency: 8,
    ...extra,
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        await r.hincrby(runsKey, ctx.id, 1);
        return i;
      },
    },
  });
}

for (const [name, server] of [['BLMOVE', () => modern], ['no BLMOVE (polling)', () => noBlmove]] as const) {
  test.serial(`a worker frozen while it waits, then killed after a task is pushed, loses nothing (${name})`, async (t) => {
    t.timeout(60000);
    const srv = server();
    const r = await client(srv);
    const queue = `frozen-${seq}`;
    const tr = (await openTransport(srv.url())) as RedisTransport;
    const child = startChild({ mode: 'worker', url: srv.url(), storeDir: pki.storeDir, queues: [queue], runsKey: 'runs-frozen' });
    let worker: ReturnType<typeof countingWorker> | undefined;
    try {
      await child.ready;
      if (name === 'BLMOVE') await waitBlocked(r);
      else await sleep(300);
      await child.kill('SIGSTOP');
      const [id] = await pushTasks(tr, queue, 1);
      await sleep(500); // the server serves the frozen worker's wait now
      const inQueue = await r.llen(queue);
      const inUnacked = await r.hlen('unacked');
      t.log(`task pushed to a frozen worker: ${inQueue} in the queue, ${inUnacked} in unacked`);
      t.is(inQueue + inUnacked, 1, 'the message is in the queue or in unacked');
      await child.kill('SIGKILL');
      worker = countingWorker(srv, queue, r, 'runs-frozen', { visibilityTimeout: 1, transportOptions: { unacked_restore_interval: 1 } });
      await worker.start();
      const deadline = Date.now() + 15000;
      while ((await r.hget('runs-frozen', id!)) === null && Date.now() < deadline) await sleep(50);
      await sleep(1500); // a second run, if any, would show now
      t.is(await r.hget('runs-frozen', id!), '1', 'run exactly once');
      t.is(await r.llen(queue), 0);
      t.is(await r.hlen('unacked'), 0);
    } finally {
      await child.kill('SIGKILL');
      await worker?.stop({ timeout: 5000 });
      await tr.close();
      await r.del('runs-frozen');
      r.disconnect();
    }
  });
}

test.serial('without BLMOVE the consumer says so once and polls: a wait still ends as soon as a message comes', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  process.on('warning', onWarning);
  const tr = (await openTransport(noBlmove.url())) as RedisTransport;
  try {
    const c = await tr.consume(['polled']);
    const first = await c.receive(10, 500); // meets the missing command
    t.deepEqual(first, []);
    t.is((c as unknown as { waitMode: string }).waitMode, 'poll');
    const start = Date.now();
    const waiting = c.receive(10, 5000);
    await sleep(300);
    const [id] = await pushTasks(tr, 'polled', 1);
    const got = await waiting;
    const took = Date.now() - start;
    t.is(got.length, 1);
    t.is(got[0]!.headers.id, id);
    t.true(took < 1000, `${took} ms`);
    await c.ack(got);
    await c.close();
    await sleep(10);
    t.is(warnings.filter((w) => /BLMOVE/.test(w)).length, 1);
  } finally {
    process.off('warning', onWarning);
    await tr.close();
  }
});

test.serial('a busy worker killed 20 times, each time right after a push, loses no task', async (t) => {
  t.timeout(240000);
  const KILLS = 20;
  const queue = 'busy';
  const r = await client(modern);
  const tr = (await openTransport(modern.url())) as RedisTransport;
  const ids: string[] = [];
  let worker: ReturnType<typeof countingWorker> | undefined;
  try {
    for (let k = 0; k < KILLS; k++) {
      const child = startChild({
        mode: 'worker',
        url: modern.url(),
        storeDir: pki.storeDir,
        queues: [queue],
        concurrency: 4,
        taskMs: 2,
        visibilityTimeout: 2,
        transportOptions: { unacked_restore_interval: 1 },
        runsKey: 'runs-busy',
      });
      await child.ready;
      // A trickle (the worker mostly waits on an empty queue), then one more and the kill.
      const until = Date.now() + 150 + Math.random() * 350;
      while (Date.now() < until) {
        ids.push(...(await pushTasks(tr, queue, 1 + Math.floor(Math.random() * 3))));
        await sleep(5 + Math.random() * 15);
      }
      ids.push(...(await pushTasks(tr, queue, 1)));
      await child.kill('SIGKILL');
    }
    // The survivors: a worker that restores what the killed ones held (visibility 2 s).
    worker = countingWorker(modern, queue, r, 'runs-busy', { visibilityTimeout: 2, transportOptions: { unacked_restore_interval: 1 } });
    await worker.start();
    const deadline = Date.now() + 60000;
    let runs: Record<string, string> = {};
    for (;;) {
      runs = await r.hgetall('runs-busy');
      if (ids.every((id) => runs[id] !== undefined) || Date.now() > deadline) break;
      await sleep(200);
    }
    const lost = ids.filter((id) => runs[id] === undefined);
    const duplicated = ids.filter((id) => Number(runs[id] ?? 0) > 1).length;
    t.log(`${KILLS} kills, ${ids.length} tasks: ${lost.length} lost, ${duplicated} run more than once`);
    t.deepEqual(lost, []);
    t.true(ids.length >= 200);
    t.is(Object.keys(runs).length, ids.length);
  } finally {
    await worker?.stop({ timeout: 5000 });
    await tr.close();
    await r.del('runs-busy');
    r.disconnect();
  }
});

test.serial('a worker killed during a restore sweep leaves the restore lock for seconds, not its 300 s expiry', async (t) => {
  t.timeout(120000);
  const N = 6000;
  const queue = 'lockq';
  const r = await client(modern);
  const tr = (await openTransport(modern.url(), { transportOptions: { unacked_restore_interval: 0 } })) as RedisTransport;
  try {
    const old = Date.now() / 1000 - 100;
    const pipe = r.pipeline();
    for (let i = 0; i < N; i++) {
      const tag = `lock-${i}`;
      const env = redisEnvelope(
        {
          body: `b${i}`,
          contentType: 'application/data',
          contentEncoding: 'utf-8',
          headers: { id: tag },
          properties: { correlation_id: tag, reply_to: '', delivery_mode: 2, priority: 0 },
          exchange: '',
          routingKey: queue,
          queue,
        },
        tag,
      );
      pipe.hset('unacked', tag, `[${env}, "", "${queue}"]`);
      pipe.zadd('unacked_index', old, tag);
    }
    await pipe.exec();
    const child = startChild({ mode: 'restore', url: modern.url() });
    await child.ready;
    const seen = Date.now() + 20000;
    // Killed once it holds the lock and has put some messages back.
    while (((await r.exists('unacked_mutex')) === 0 || (await r.llen(queue)) < 100) && Date.now() < seen) {
      await new Promise((res) => setImmediate(res));
    }
    t.is(await r.exists('unacked_mutex'), 1, 'the child holds the lock');
    await child.kill('SIGKILL');
    t.false(/^done/m.test(child.output()), 'killed in the middle of its sweep');
    const pttl = await r.pttl('unacked_mutex');
    const restoredByChild = await r.llen(queue);
    t.log(`killed after restoring ${restoredByChild} of ${N}; lock left with ${pttl} ms to live`);
    t.true(restoredByChild < N);
    t.true(pttl > 0 && pttl <= 5000, `lock expires in ${pttl} ms`);
    const start = Date.now();
    while ((await r.exists('unacked_mutex')) === 1 && Date.now() - start < 30000) await sleep(20);
    const freed = Date.now() - start;
    t.log(`the lock was free ${freed} ms after the kill`);
    t.true(freed <= 6000);
    while ((await r.hlen('unacked')) > 0 && Date.now() - start < 60000) {
      await tr.restoreVisible(0);
      await sleep(100);
    }
    t.is(await r.hlen('unacked'), 0);
    t.is(await r.zcard('unacked_index'), 0);
    const items = await r.lrange(queue, 0, -1);
    t.is(items.length, N);
    t.is(new Set(items.map((s) => (JSON.parse(s) as { headers: { id: string } }).headers.id)).size, N, 'each restored once');
  } finally {
    await r.del(queue, 'unacked', 'unacked_index', 'unacked_mutex');
    await tr.close();
    r.disconnect();
  }
});
