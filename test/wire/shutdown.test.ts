/**
 * Warm and cold shutdown on signals, as `celery worker` does them, with Node
 * workers in child processes (test/wire/helpers/shutdown-child.ts) on a real
 * redis-server and a real rabbitmq-server. Every task counts its starts and its completions per task id
 * in Redis, and another worker drains the queue afterwards:
 *
 * - SIGTERM in the middle of a batch of long-ish tasks: the running ones
 *   finish and are acked, the held and the ETA ones go back to the queue, the
 *   process exits 0; nothing is lost and nothing runs twice;
 * - a second SIGTERM during the warm shutdown is a cold one: the running
 *   tasks go back unacknowledged and the process exits 1 at once; they run
 *   again (only they), nothing is lost;
 * - a warm shutdown whose `shutdownTimeout` runs out gives the running
 *   tasks back, as a cold one does;
 * - two workers in one process both stop, then the process exits;
 * - SIGINT is a warm shutdown that exits 1 (Celery's code for it);
 * - `handleSignals: false` leaves the signals to the application; an
 *   application that listens itself decides when the process ends;
 * - the handlers exist only while the worker runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { Redis } from 'ioredis';
import { createWorker, type Worker } from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { openTransport, type BrokerTransport } from '../../lib/wire/transport.js';
import { ROOT } from '../helpers/python.js';
import { queueDepth } from './helpers/amqp.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';
import type { ShutdownChildConfig } from './helpers/shutdown-child.js';

const CHILD = join(ROOT, 'test', 'wire', 'helpers', 'shutdown-child.ts');
let redis: RedisServer;
let pki: Pki;
let r: Redis;
let rabbit: RabbitServer;
const producers = new Map<string, BrokerTransport>();
const children = new Set<ChildProcess>();

/** A broker the tests run on, and how to look at what it holds. */
interface Broker {
  name: string;
  url(): string;
  /** Messages ready in a queue. */
  depth(queue: string): Promise<number>;
  /** Messages delivered and not acknowledged (Redis: kombu's `unacked` hash; AMQP: none once the consumer is gone). */
  unacked(): Promise<number>;
}

const BROKERS: Broker[] = [
  { name: 'Redis', url: () => redis.url(), depth: (q) => r.llen(q), unacked: () => r.hlen('unacked') },
  {
    name: 'AMQP',
    url: () => rabbit.url,
    depth: (q) => queueDepth(rabbit, q),
    // A closed channel gives its unacknowledged deliveries back to their queues: count them there.
    unacked: async () => 0,
  },
];

test.before(async () => {
  [redis, rabbit] = await Promise.all([startRedis(), startRabbit()]);
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  for (const b of BROKERS) producers.set(b.name, await openTransport(b.url()));
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const p of producers.values()) await p.close().catch(() => undefined);
  r?.disconnect();
  await redis?.stop();
  await rabbit?.stop();
  pki?.cleanup();
});

interface Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
  /** Waits for a line matching `pattern`. */
  line(pattern: RegExp, ms?: number): Promise<string>;
}

function startChild(cfg: Partial<ShutdownChildConfig> & { queue: string; runsKey: string }, broker: Broker = BROKERS[0]!): Child {
  const full: ShutdownChildConfig = { broker: broker.url(), redis: redis.url(), storeDir: pki.storeDir, taskMs: 1000, ...cfg };
  const proc = spawn(process.execPath, ['--import=tsx', CHILD, JSON.stringify(full)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    proc.once('exit', (code, signal) => {
      children.delete(proc);
      res({ code, signal });
    }),
  );
  const listeners = new Set<() => void>();
  const onData = (b: Buffer): void => {
    out += b.toString();
    for (const l of [...listeners]) l();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const line = (pattern: RegExp, ms = 30000): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const check = (): void => {
        const m = out.split('\n').find((l) => pattern.test(l));
        if (m !== undefined) {
          done();
          resolve(m);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`child: no ${pattern} within ${ms} ms:\n${out.slice(-3000)}`));
      }, ms);
      void exited.then(() => setImmediate(() => {
        if (listeners.has(check)) {
          done();
          reject(new Error(`child exited without ${pattern}:\n${out.slice(-3000)}`));
        }
      }));
      const done = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return { proc, exited, output: () => out, line };
}

let seq = 0;
/** Publishes signed `wire.slow` tasks (a countdown makes them ETA tasks); returns their ids. */
async function push(broker: Broker, queue: string, n: number, countdown?: number): Promise<string[]> {
  const msgs = Array.from({ length: n }, () => buildTaskMessage('wire.slow', [seq++], {}, { queue, ...(countdown ? { countdown } : {}) }));
  await producers.get(broker.name)!.publish(await encodeTaskMessages(msgs, serializer(pki)));
  return msgs.map((m) => m.headers.id as string);
}

async function counts(runsKey: string): Promise<{ runs: Record<string, string>; done: Record<string, string> }> {
  return { runs: await r.hgetall(`${runsKey}:runs`), done: await r.hgetall(`${runsKey}:done`) };
}

/** A worker in this process that runs what is left, counting in the same hashes. */
async function drain(broker: Broker, queue: string, runsKey: string, total: number): Promise<void> {
  const w: Worker = createWorker({
    broker: broker.url(),
    security: serializer(pki, 'verify'),
    canvas: false,
    retries: false,
    remoteControl: false,
    handleSignals: false,
    queues: [queue],
    concurrency: 16,
    tasks: {
      'wire.slow': async ([i], _kwargs, ctx) => {
        await r.hincrby(`${runsKey}:runs`, ctx.id, 1);
        await r.hincrby(`${runsKey}:done`, ctx.id, 1);
        return i;
      },
    },
  });
  await w.start();
  try {
    const got = await eventually(() => r.hlen(`${runsKey}:done`), total, 60000);
    if (got !== total) throw new Error(`drained ${got} of ${total}`);
  } finally {
    await w.stop();
  }
}

for (const broker of BROKERS) {
  test.serial(`SIGTERM in the middle of a batch: running tasks finish, the rest go back, exit 0; nothing lost, nothing run twice (${broker.name})`, async (t) => {
    t.timeout(120000);
    const queue = `warm-${broker.name}`;
    const key = queue;
    const child = startChild({ queue, runsKey: key, concurrency: 4, taskMs: 1500 }, broker);
    await child.line(/^ready/);
    const ids = [...(await push(broker, queue, 30)), ...(await push(broker, queue, 3, 3))];
    // Some are running, more are held (prefetch 16), the ETA ones are held too.
    await eventually(async () => (await r.hlen(`${key}:runs`)) >= 4, true, 30000);
    child.proc.kill('SIGTERM');
    t.regex(await child.line(/^shutdown/), /^shutdown SIGTERM warm 0$/);
    t.deepEqual(await child.exited, { code: 0, signal: null });
    const after = await counts(key);
    const started = Object.keys(after.runs);
    t.true(started.length >= 4 && started.length < ids.length, `${started.length} started`);
    for (const id of started) {
      t.is(after.runs[id], '1');
      t.is(after.done[id], '1', `${id} finished before the exit`);
    }
    t.is(await broker.unacked(), 0, 'nothing left unacknowledged');
    t.is(await broker.depth(queue), ids.length - started.length, 'the held ones are back in the queue');
    await drain(broker, queue, key, ids.length);
    const end = await counts(key);
    t.deepEqual(Object.keys(end.done).sort(), [...ids].sort());
    t.true(Object.values(end.runs).every((n) => n === '1'), 'nothing ran twice');
    t.true(Object.values(end.done).every((n) => n === '1'));
  });

  test.serial(`a second SIGTERM is a cold shutdown: running tasks go back unacknowledged, exit 1; they run again, nothing lost (${broker.name})`, async (t) => {
    t.timeout(120000);
    const queue = `cold-${broker.name}`;
    const key = queue;
    const child = startChild({ queue, runsKey: key, concurrency: 4, taskMs: 60000, shutdownTimeout: 120000 }, broker);
    await child.line(/^ready/);
    const ids = await push(broker, queue, 10);
    await eventually(async () => (await r.hlen(`${key}:runs`)) >= 4, true, 30000);
    child.proc.kill('SIGTERM');
    await child.line(/^shutdown SIGTERM warm 0$/);
    // The warm shutdown waits for the running tasks (60 s each)...
    t.is(child.proc.exitCode, null);
    child.proc.kill('SIGTERM');
    t.regex(await child.line(/cold/), /^shutdown SIGTERM cold 1$/);
    t.deepEqual(await child.exited, { code: 1, signal: null });
    const after = await counts(key);
    const started = Object.keys(after.runs);
    t.is(started.length, 4);
    t.deepEqual(after.done, {}, 'none finished');
    t.is(await broker.unacked(), 0, 'given back, not left in unacked');
    t.is(await broker.depth(queue), ids.length);
    await drain(broker, queue, key, ids.length);
    const end = await counts(key);
    t.deepEqual(Object.keys(end.done).sort(), [...ids].sort());
    t.true(Object.values(end.done).every((n) => n === '1'), 'each finished once');
    for (const id of ids) t.is(end.runs[id], started.includes(id) ? '2' : '1', id);
  });
}

test.serial('a warm shutdown gives the running tasks back when shutdownTimeout runs out, and exits 0', async (t) => {
  t.timeout(60000);
  const queue = 'grace';
  const child = startChild({ queue, runsKey: queue, concurrency: 2, taskMs: 60000, shutdownTimeout: 1000 });
  await child.line(/^ready/);
  const ids = await push(BROKERS[0]!, queue, 5);
  await eventually(async () => (await r.hlen(`${queue}:runs`)) >= 2, true, 30000);
  child.proc.kill('SIGTERM');
  t.deepEqual(await child.exited, { code: 0, signal: null });
  t.deepEqual((await counts(queue)).done, {});
  t.is(await r.hlen('unacked'), 0);
  t.is(await r.llen(queue), ids.length, 'all back in the queue');
});

test.serial('two workers in one process: SIGTERM stops both, then the process exits', async (t) => {
  t.timeout(60000);
  const child = startChild({ queue: 'two', runsKey: 'two', workers: 2 });
  t.is(await child.line(/^ready/), 'ready 2');
  child.proc.kill('SIGTERM');
  t.deepEqual(await child.exited, { code: 0, signal: null });
  t.is(child.output().match(/^shutdown SIGTERM warm 0$/gm)?.length, 2);
});

test.serial('SIGINT is a warm shutdown that exits 1 (Celery: EX_FAILURE)', async (t) => {
  t.timeout(60000);
  const child = startChild({ queue: 'int', runsKey: 'int' });
  await child.line(/^ready/);
  child.proc.kill('SIGINT');
  t.regex(await child.line(/^shutdown/), /^shutdown SIGINT warm 1$/);
  t.deepEqual(await child.exited, { code: 1, signal: null });
});

test.serial('handleSignals: false leaves SIGTERM to the application; the worker goes on', async (t) => {
  t.timeout(60000);
  const queue = 'own';
  const key = 'own';
  const child = startChild({ queue, runsKey: key, handleSignals: false, appHandlesSignals: true, taskMs: 10 });
  t.is(await child.line(/^ready/), 'ready 1', "only the application's listener");
  child.proc.kill('SIGTERM');
  await child.line(/^app SIGTERM$/);
  const [id] = await push(BROKERS[0]!, queue, 1);
  t.is(await eventually(async () => (await counts(key)).done[id!], '1', 30000), '1', 'still consuming');
  t.false(/^shutdown/m.test(child.output()));
  t.is(child.proc.exitCode, null);
  child.proc.kill('SIGKILL');
  await child.exited;
});

test.serial('an application that listens to SIGTERM too: the worker shuts down warm and does not end the process', async (t) => {
  t.timeout(60000);
  const child = startChild({ queue: 'both', runsKey: 'both', appHandlesSignals: true });
  t.is(await child.line(/^ready/), 'ready 2');
  child.proc.kill('SIGTERM');
  await child.line(/^shutdown SIGTERM warm 0$/);
  await child.line(/^app SIGTERM$/);
  // The worker stops; the process lives on (the application's Redis connection keeps it).
  await new Promise((res) => setTimeout(res, 2000));
  t.is(child.proc.exitCode, null);
  child.proc.kill('SIGKILL');
  await child.exited;
});

test.serial('the handlers exist while the worker runs, and not with handleSignals: false', async (t) => {
  t.timeout(30000);
  const before = SIGNALS.map((s) => process.listenerCount(s));
  const make = (handleSignals?: boolean): Worker =>
    createWorker({
      broker: redis.url(),
      security: serializer(pki, 'verify'),
      canvas: false,
      retries: false,
      remoteControl: false,
      queues: ['listeners'],
      tasks: {},
      ...(handleSignals !== undefined ? { handleSignals } : {}),
    });
  const w = make();
  t.deepEqual(SIGNALS.map((s) => process.listenerCount(s)), before, 'none before start');
  await w.start();
  t.deepEqual(SIGNALS.map((s) => process.listenerCount(s)), before.map((n) => n + 1));
  await w.stop();
  t.deepEqual(SIGNALS.map((s) => process.listenerCount(s)), before);
  const off = make(false);
  await off.start();
  t.deepEqual(SIGNALS.map((s) => process.listenerCount(s)), before);
  await off.stop();
});

const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGQUIT'];
