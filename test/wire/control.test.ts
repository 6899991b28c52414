/**
 * Remote control: the real `celery` CLI (`celery -A wire_app inspect ...`,
 * `celery -A wire_app control ...`, Celery 5.7 under setup_security()) against
 * a Node worker, over Redis and over RabbitMQ (results in Redis): inspect
 * ping/active/registered/stats/revoked, control revoke of a held ETA task
 * (never runs, REVOKED stored, acknowledged), terminate of a running task
 * (its AbortSignal), rate_limit (counted, not timed), shutdown (a warm stop:
 * held tasks go back to the queue), and control messages that are unsigned,
 * wrongly signed or from an unknown signer refused as 'security' events.
 * On Redis, the Node worker's replies are compared with a stock Python
 * worker's.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import {
  Certificate,
  createWorker,
  FSCertStore,
  PrivateKey,
  SecureSerializer,
  type ControlEvent,
  type SecurityEvent,
  type TaskHandler,
  type Worker,
  type WorkerOptions,
} from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import { pythonPath } from '../helpers/python.js';
import { amqpEnv, queueDepth, until } from './helpers/amqp.js';
import { makePki, PY_DIR, runScript, serializer, startCeleryWorker, wireEnv, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

type Broker = 'redis' | 'amqp';

let redis: RedisServer;
let rabbit: RabbitServer;
let pki: Pki;
let r: Redis;

test.before(async () => {
  [redis, rabbit] = await Promise.all([startRedis(), startRabbit()]);
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
});

test.after.always(async () => {
  r?.disconnect();
  await rabbit?.stop();
  await redis?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));
let seq = 0;

function brokerUrl(b: Broker): string {
  return b === 'redis' ? redis.url() : rabbit.url;
}

function env(b: Broker, which: 'good' | 'wrong-key' | 'unknown' = 'good'): NodeJS.ProcessEnv {
  return b === 'redis' ? wireEnv(pki, redis.url(), which) : amqpEnv(pki, rabbit, redis.url(), which);
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json: unknown;
}

/** Runs the real `celery -A wire_app <args...>` (with `--json`) and parses what it prints. */
function celery(b: Broker, args: string[], timeoutMs = 60000): Promise<CliResult> {
  const bin = join(dirname(pythonPath('current')), 'celery');
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['-A', 'wire_app', ...args, '--json'], { cwd: PY_DIR, env: env(b), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`celery ${args.join(' ')} timed out: ${Buffer.concat(err).toString().slice(-2000)}`));
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      let json: unknown;
      try {
        json = JSON.parse(stdout.trim().split('\n').pop() ?? '');
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr: Buffer.concat(err).toString(), json });
    });
  });
}

/** `celery inspect <command> -d <node>`: the node's reply (the CLI prints `{node: reply}`). */
async function inspect(t: ExecutionContext, b: Broker, node: string, command: string, ...args: string[]): Promise<unknown> {
  const res = await celery(b, ['inspect', command, ...args, '-d', node, '-t', '10']);
  t.is(res.code, 0, `celery inspect ${command}: ${res.stdout} ${res.stderr.slice(-2000)}`);
  const replies = res.json as Record<string, unknown>;
  t.deepEqual(Object.keys(replies ?? {}), [node]);
  return replies[node];
}

/** `celery control <command> -d <node>`: the node's reply (the CLI prints `[{node: reply}]`). */
async function control(t: ExecutionContext, b: Broker, node: string, command: string, ...args: string[]): Promise<unknown> {
  const res = await celery(b, ['control', command, ...args, '-d', node, '-t', '10']);
  t.is(res.code, 0, `celery control ${command}: ${res.stdout} ${res.stderr.slice(-2000)}`);
  const replies = res.json as Record<string, unknown>[];
  t.is(replies.length, 1);
  return replies[0]![node];
}

/** Celery's `app.control` mailbox from Python (test/py/wire_control.py). */
function broadcast(
  b: Broker,
  request: { command: string; arguments?: object; destination?: string[]; timeout?: number; serializer?: string; reply?: boolean },
  which: 'good' | 'wrong-key' | 'unknown' = 'good',
): Promise<{ replies: Record<string, unknown>[] }> {
  return runScript('wire_control.py', request, { processEnv: env(b, which) });
}

/** Sends tasks with the stock Python producer (test/py/wire_producer.py). */
function send(b: Broker, tasks: { name: string; args?: unknown[]; options?: object }[]): Promise<{ ids: string[] }> {
  return runScript('wire_producer.py', { op: 'send', tasks }, { processEnv: env(b) });
}

function nodeWorker(b: Broker, node: string, queue: string, tasks: Record<string, TaskHandler>, extra: Partial<WorkerOptions> = {}): Worker {
  return createWorker({
    broker: brokerUrl(b),
    backend: redis.url(),
    security: serializer(pki),
    hostname: node,
    queues: [queue],
    tasks,
    ...extra,
  });
}

async function storedMeta(id: string): Promise<Record<string, unknown> | null> {
  const v = await r.get(`celery-task-meta-${id}`);
  return v === null ? null : (JSON.parse(v) as Record<string, unknown>);
}

async function storedStatus(id: string): Promise<string | null> {
  return ((await storedMeta(id))?.status as string | undefined) ?? null;
}

/** Messages waiting in a queue (not held by a consumer). */
async function waiting(b: Broker, queue: string): Promise<number> {
  return b === 'redis' ? r.llen(queue) : queueDepth(rabbit, queue);
}

/** The worker's 'security' and 'control' events, as they come. */
function recorded(w: Worker): { refused: SecurityEvent[]; commands: ControlEvent[] } {
  const refused: SecurityEvent[] = [];
  const commands: ControlEvent[] = [];
  w.on('security', (e: SecurityEvent) => refused.push(e));
  w.on('control', (e: ControlEvent) => commands.push(e));
  return { refused, commands };
}

function names(b: Broker): { node: string; queue: string } {
  seq++;
  return { node: `node${seq}-${b}@celery-sign-test`, queue: `ctl-${b}-${seq}` };
}

for (const b of ['redis', 'amqp'] as const) {
  test.serial(`${b}: inspect ping, registered, stats, revoked, clock answer as a stock worker does`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const w = nodeWorker(b, node, queue, { 'n.add': ([x, y]) => Number(x) + Number(y), 'n.echo': (a) => a }, { rateLimits: { 'n.echo': '100/m' } });
    const commands: ControlEvent[] = [];
    w.on('control', (e: ControlEvent) => commands.push(e));
    await w.start();
    try {
      t.deepEqual(await inspect(t, b, node, 'ping'), { ok: 'pong' });
      t.deepEqual(await inspect(t, b, node, 'registered'), ['n.add', 'n.echo [rate_limit=100/m]']);
      t.deepEqual(await inspect(t, b, node, 'revoked'), []);
      const conf = await inspect(t, b, node, 'conf');
      t.like(conf, {
        task_serializer: 'auth',
        accept_content: ['auth'],
        worker_concurrency: 16,
        task_queues: [queue],
        result_backend_always_retry: true, // celery-sign retries by default (4 times)
        result_backend_max_retries: 4,
        result_backend_base_sleep_between_retries_ms: 100,
        result_backend_max_sleep_between_retries_ms: 10000,
      });
      if (b === 'amqp') t.regex((conf as { broker_url: string }).broker_url, /^amqp:\/\/guest:\*{8}@127\.0\.0\.1:/);
      const clock = (await inspect(t, b, node, 'clock')) as { clock: number };
      t.true(Number.isInteger(clock.clock) && clock.clock > 0);
      // a task run shows in stats.total
      const { ids } = await send(b, [{ name: 'n.add', args: [2, 3], options: { queue } }]);
      t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
      const stats = (await inspect(t, b, node, 'stats')) as Record<string, unknown>;
      t.deepEqual(Object.keys(stats), ['total', 'pid', 'clock', 'uptime', 'pool', 'broker', 'prefetch_count', 'rusage']);
      t.deepEqual(stats.total, { 'n.add': 1 });
      t.is(stats.pid, process.pid);
      t.regex(stats.clock as string, /^\d+$/);
      t.true(Number.isInteger(stats.uptime));
      t.like(stats.pool, { 'max-concurrency': 16, processes: [process.pid] });
      const broker = stats.broker as Record<string, unknown>;
      t.like(broker, { hostname: '127.0.0.1', transport: b, insist: false, ssl: false });
      t.false('password' in broker);
      t.false(JSON.stringify(stats).includes('guest:guest'));
      t.true(typeof stats.prefetch_count === 'number');
      const rusage = stats.rusage as Record<string, number>;
      t.true(rusage.utime! > 0 && rusage.maxrss! > 0);
      // every command came signed by the CLI's key
      t.true(commands.length >= 5);
      const cliSigner = new Certificate(readFileSync(pki.cert)).id;
      for (const c of commands) t.is(c.signer, cliSigner);
    } finally {
      await w.stop();
    }
  });

  test.serial(`${b}: inspect active lists the running task as Request.info() gives it; an unknown command is KeyError`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    let started!: () => void;
    const running = new Promise<void>((res) => (started = res));
    const w = nodeWorker(b, node, queue, {
      'n.block': async () => {
        started();
        await gate;
        return 'released';
      },
    });
    await w.start();
    try {
      const { ids } = await send(b, [{ name: 'n.block', args: [1, 'two'], options: { queue } }]);
      await running;
      const active = (await inspect(t, b, node, 'active')) as Record<string, unknown>[];
      t.is(active.length, 1);
      const info = active[0]!;
      t.deepEqual(Object.keys(info), ['id', 'name', 'args', 'kwargs', 'type', 'hostname', 'time_start', 'acknowledged', 'delivery_info', 'worker_pid']);
      t.like(info, { id: ids[0], name: 'n.block', args: [1, 'two'], kwargs: {}, type: 'n.block', hostname: node, acknowledged: false, worker_pid: process.pid });
      t.true(Math.abs((info.time_start as number) - Date.now() / 1000) < 600);
      t.like(info.delivery_info, { routing_key: queue, redelivered: false });
      // kombu's Node.dispatch: a command with no handler answers repr(KeyError)
      const { replies } = await broadcast(b, { command: 'no_such_command', destination: [node] });
      t.deepEqual(replies, [{ [node]: { error: "KeyError('no_such_command')" } }]);
      release();
      t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
      t.deepEqual(await inspect(t, b, node, 'active'), []);
    } finally {
      release();
      await w.stop();
    }
  });

  test.serial(`${b}: control revoke of held ETA tasks (by id list): never run, REVOKED stored, acknowledged`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const runs: string[] = [];
    const revokedEvents: unknown[] = [];
    const w = nodeWorker(b, node, queue, { 'n.later': (_a, _k, ctx) => void runs.push(ctx.id) });
    w.on('task-revoked', (e) => revokedEvents.push(e));
    await w.start();
    let stopped = false;
    try {
      const { ids } = await send(b, [
        { name: 'n.later', options: { queue, countdown: 3600 } },
        { name: 'n.later', options: { queue, countdown: 3600 } },
        { name: 'n.later', options: { queue, countdown: 3600 } },
      ]);
      const [a, c, keep] = ids as [string, string, string];
      // held by the worker: inspect scheduled lists them
      const deadline = Date.now() + 30000;
      let scheduled: { request: { id: string } }[] = [];
      while (Date.now() < deadline) {
        scheduled = (await inspect(t, b, node, 'scheduled')) as typeof scheduled;
        if (scheduled.length === 3) break;
        await sleep(200);
      }
      t.deepEqual(scheduled.map((s) => s.request.id).sort(), [...ids].sort());
      const reply = (await control(t, b, node, 'revoke', a, c)) as { ok: string };
      t.regex(reply.ok, /^tasks \{'[0-9a-f-]+', '[0-9a-f-]+'\} flagged as revoked$/);
      t.true(reply.ok.includes(`'${a}'`) && reply.ok.includes(`'${c}'`));
      // REVOKED is stored as Celery stores it
      for (const id of [a, c]) {
        t.is(await until(() => storedStatus(id), 'REVOKED'), 'REVOKED');
        t.like(await storedMeta(id), { status: 'REVOKED', result: { exc_type: 'TaskRevokedError', exc_message: ['revoked'], exc_module: 'celery.exceptions' } });
      }
      t.is(await storedStatus(keep), null);
      const listed = (await inspect(t, b, node, 'revoked')) as string[];
      t.deepEqual([...listed].sort(), [a, c].sort());
      const left = (await inspect(t, b, node, 'scheduled')) as { request: { id: string } }[];
      t.deepEqual(left.map((s) => s.request.id), [keep]);
      t.is(revokedEvents.length, 2);
      // acknowledged: after a stop only the kept one goes back to the queue
      await w.stop();
      stopped = true;
      t.is(await until(() => waiting(b, queue), 1), 1);
      if (b === 'redis') t.is(await r.hlen('unacked'), 0);
      t.deepEqual(runs, []);
    } finally {
      if (!stopped) await w.stop();
    }
  });

  test.serial(`${b}: a revoked id that arrives later is not run; control terminate aborts a running task through its AbortSignal`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const runs: string[] = [];
    let aborted: unknown;
    let started!: () => void;
    const running = new Promise<void>((res) => (started = res));
    const w = nodeWorker(b, node, queue, {
      'n.count': (_a, _k, ctx) => void runs.push(ctx.id),
      'n.forever': (_a, _k, ctx) =>
        new Promise((_res, rej) => {
          started();
          ctx.signal.addEventListener('abort', () => {
            aborted = ctx.signal.reason;
            rej(ctx.signal.reason);
          });
        }),
    });
    await w.start();
    try {
      // revoked before it is sent (Celery's revoked set): REVOKED, never run
      const early = '5b0c0a8e-0000-4000-8000-00000000c0de';
      const reply = (await control(t, b, node, 'revoke', early)) as { ok: string };
      t.is(reply.ok, `tasks {'${early}'} flagged as revoked`);
      // Celery 5.7: an id without a result is marked REVOKED at once
      t.is(await until(() => storedStatus(early), 'REVOKED'), 'REVOKED');
      await r.del(`celery-task-meta-${early}`);
      await send(b, [{ name: 'n.count', options: { queue, task_id: early } }]);
      t.is(await until(() => storedStatus(early), 'REVOKED'), 'REVOKED');
      // terminate
      const { ids } = await send(b, [{ name: 'n.forever', options: { queue } }]);
      await running;
      const term = (await control(t, b, node, 'terminate', 'SIGTERM', ids[0]!)) as { ok: string };
      t.is(term.ok, `terminate: ${ids[0]}`);
      t.is(await until(() => storedStatus(ids[0]!), 'REVOKED'), 'REVOKED');
      t.like(await storedMeta(ids[0]!), { result: { exc_type: 'TaskRevokedError', exc_message: ['terminated'] } });
      t.is((aborted as Error).name, 'Terminated');
      t.deepEqual(await inspect(t, b, node, 'active'), []);
      t.deepEqual(runs, []);
      // terminate of an id it does not run
      t.deepEqual(await control(t, b, node, 'terminate', 'SIGTERM', 'not-here'), { ok: 'terminate: tasks unknown' });
    } finally {
      await w.stop();
    }
  });

  test.serial(`${b}: control rate_limit takes effect (counted, not timed) and is lifted`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const runs = new Map<string, number>();
    const count = (name: string) => () => void runs.set(name, (runs.get(name) ?? 0) + 1);
    const w = nodeWorker(b, node, queue, { 'n.limited': count('limited'), 'n.plain': count('plain') });
    await w.start();
    try {
      t.deepEqual(await control(t, b, node, 'rate_limit', 'n.limited', '1/h'), { ok: 'new rate limit set successfully' });
      t.deepEqual(await control(t, b, node, 'rate_limit', 'n.nope', '1/h'), { error: 'unknown task' });
      t.deepEqual(await inspect(t, b, node, 'registered'), ['n.limited [rate_limit=1/h]', 'n.plain']);
      const { ids } = await send(b, [
        { name: 'n.limited', options: { queue } },
        { name: 'n.limited', options: { queue } },
        { name: 'n.limited', options: { queue } },
        { name: 'n.plain', options: { queue } },
      ]);
      // the plain task goes past the limited ones
      t.is(await until(() => storedStatus(ids[3]!), 'SUCCESS'), 'SUCCESS');
      const done = async (): Promise<number> => (await Promise.all(ids.slice(0, 3).map(storedStatus))).filter((s) => s === 'SUCCESS').length;
      t.is(await until(done, 1), 1);
      // one token an hour: the other two wait, held (reserved) by the worker
      const reserved = (await inspect(t, b, node, 'reserved')) as { name: string }[];
      t.deepEqual(reserved.map((x) => x.name), ['n.limited', 'n.limited']);
      t.is(runs.get('limited'), 1);
      t.is(await done(), 1);
      // lifted: the held ones run
      t.deepEqual(await control(t, b, node, 'rate_limit', 'n.limited', '0'), { ok: 'rate limit disabled successfully' });
      t.is(await until(done, 3), 3);
      t.is(runs.get('limited'), 3);
      t.is(runs.get('plain'), 1);
    } finally {
      await w.stop();
    }
  });

  test.serial(`${b}: control shutdown stops the worker warmly (no reply, as Celery's WorkerShutdown); held tasks go back`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const runs: string[] = [];
    const w = nodeWorker(b, node, queue, { 'n.later': (_a, _k, ctx) => void runs.push(ctx.id) });
    await w.start();
    try {
      await send(b, [{ name: 'n.later', options: { queue, countdown: 3600 } }]);
      t.is(await until(async () => ((await inspect(t, b, node, 'scheduled')) as unknown[]).length, 1), 1);
      const res = await celery(b, ['control', 'shutdown', '-d', node, '-t', '3']);
      // a stock worker raises WorkerShutdown before it replies: the CLI says no node replied
      t.is(res.code, 69);
      t.regex(res.stderr, /No nodes replied/);
      t.is(await until(async () => w.running, false), false);
      await w.stop(); // resolves once the remote stop is done
      t.is(await until(() => waiting(b, queue), 1), 1);
      if (b === 'redis') t.is(await r.hlen('unacked'), 0);
      t.deepEqual(runs, []);
      const gone = await celery(b, ['inspect', 'ping', '-d', node, '-t', '2']);
      t.is(gone.code, 69);
    } finally {
      await w.stop();
    }
  });

  test.serial(`${b}: unsigned, wrongly signed and unknown-signer control messages are refused ('security' events); the worker goes on`, async (t) => {
    t.timeout(120000);
    const { node, queue } = names(b);
    const w = nodeWorker(b, node, queue, { 'n.add': ([x, y]) => Number(x) + Number(y) });
    const { refused, commands } = recorded(w);
    await w.start();
    try {
      // a forged, unsigned shutdown (kombu's mailbox with the json serializer)
      const unsigned = await broadcast(b, { command: 'shutdown', destination: [node], serializer: 'json', timeout: 3 });
      t.deepEqual(unsigned.replies, []);
      const wrong = await broadcast(b, { command: 'shutdown', destination: [node], timeout: 3 }, 'wrong-key');
      t.deepEqual(wrong.replies, []);
      const unknown = await broadcast(b, { command: 'shutdown', destination: [node], timeout: 3 }, 'unknown');
      t.deepEqual(unknown.replies, []);
      t.is(await until(async () => refused.length, 3), 3);
      t.deepEqual(
        refused.map((e) => e.code),
        ['ERR_CONTENT_DISALLOWED', 'ERR_BAD_SIGNATURE', 'ERR_UNKNOWN_CERTIFICATE'],
      );
      for (const e of refused) t.like(e, { queue: `${node}.celery.pidbox`, action: 'ack', taskId: null });
      t.deepEqual(commands, []);
      t.true(w.running);
      t.deepEqual(await inspect(t, b, node, 'ping'), { ok: 'pong' });
      const { ids } = await send(b, [{ name: 'n.add', args: [1, 1], options: { queue } }]);
      t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
    } finally {
      await w.stop();
    }
  });
}

test.serial('amqp: a second node of the same name reports the mailbox in use once, runs its tasks, and takes the mailbox over when the first stops', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('amqp');
  const first = nodeWorker('amqp', node, queue, { 'n.who': () => 'first' });
  const second = nodeWorker('amqp', node, `${queue}-2`, { 'n.who': () => 'second' });
  const errors: unknown[] = [];
  second.on('error', (e) => errors.push(e));
  await first.start();
  let firstStopped = false;
  try {
    await second.start();
    t.is(await until(async () => errors.length, 1), 1);
    t.regex(String((errors[0] as Error).message), /already using this process mailbox/);
    const { ids } = await send('amqp', [{ name: 'n.who', options: { queue: `${queue}-2` } }]);
    t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
    t.deepEqual(await inspect(t, 'amqp', node, 'ping'), { ok: 'pong' });
    await first.stop();
    firstStopped = true;
    // the second node answers now (it retries the mailbox in the background)
    const deadline = Date.now() + 60000;
    let queues: unknown;
    while (Date.now() < deadline) {
      const res = await celery('amqp', ['inspect', 'active_queues', '-d', node, '-t', '3']);
      queues = res.code === 0 ? (res.json as Record<string, { name: string }[]>)[node]?.map((q) => q.name) : undefined;
      if (queues !== undefined) break;
      await sleep(500);
    }
    t.deepEqual(queues, [`${queue}-2`]);
    t.is(errors.length, 1);
  } finally {
    if (!firstStopped) await first.stop();
    await second.stop();
  }
});

test.serial('redis: enable_events / disable_events turn task events on and off; the pidbox binding is kept as kombu keeps it and removed at stop', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('redis');
  const w = nodeWorker('redis', node, queue, { 'n.add': () => 1 }, { events: true });
  const member = `\x06\x16\x06\x16${node}.celery.pidbox`;
  await w.start();
  try {
    t.true((await r.smembers('_kombu.binding.celery.pidbox')).includes(member));
    t.true((await r.zscore('_kombu.binding_deadlines', 'celery.pidbox')) !== null);
    t.deepEqual(await control(t, 'redis', node, 'enable_events'), { ok: 'task events already enabled' });
    t.deepEqual(await control(t, 'redis', node, 'disable_events'), { ok: 'task events disabled' });
    t.deepEqual(await control(t, 'redis', node, 'disable_events'), { ok: 'task events already disabled' });
    t.deepEqual(await control(t, 'redis', node, 'enable_events'), { ok: 'task events enabled' });
    t.deepEqual(await control(t, 'redis', node, 'heartbeat'), null);
  } finally {
    await w.stop();
  }
  t.false((await r.smembers('_kombu.binding.celery.pidbox')).includes(member));
});

test.serial('redis: hostile pidbox input (not an envelope, not base64, signed non-mappings, odd fields) never crashes the worker', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('redis');
  const w = nodeWorker('redis', node, queue, { 'n.add': () => 1 });
  const refused: SecurityEvent[] = [];
  const errors: unknown[] = [];
  const commands: ControlEvent[] = [];
  w.on('security', (e: SecurityEvent) => refused.push(e));
  w.on('error', (e) => errors.push(e));
  w.on('control', (e: ControlEvent) => commands.push(e));
  await w.start();
  try {
    const signer = serializer(pki);
    const envelope = (body: string, contentType = 'application/data'): string =>
      JSON.stringify({
        body: Buffer.from(body).toString('base64'),
        'content-encoding': 'utf-8',
        'content-type': contentType,
        headers: { clock: 'not a number' },
        properties: { delivery_mode: 2, delivery_info: { exchange: 'celery.pidbox', routing_key: '' }, priority: 0, body_encoding: 'base64', delivery_tag: 'x' },
      });
    const topic = '/0.celery.pidbox';
    await r.publish(topic, 'not json at all');
    await r.publish(topic, JSON.stringify({ body: '%%%', properties: { body_encoding: 'base64', delivery_tag: 't' }, 'content-type': 'application/data' }));
    await r.publish(topic, envelope('not a signed payload'));
    await r.publish(topic, envelope(signer.serialize([1, 2])));
    await r.publish(topic, envelope(signer.serialize({ method: 'ping', arguments: 'x', destination: 7, reply_to: 5 })));
    await r.publish(topic, envelope(signer.serialize({ method: 123, destination: [node], reply_to: { exchange: 1 } })));
    await r.publish(topic, envelope(signer.serialize({ method: 'revoke', arguments: { task_id: { a: 1 }, terminate: 'yes', signal: 'lowercase' }, destination: [node] })));
    await r.publish(topic, envelope(signer.serialize({ method: 'revoke', arguments: { task_id: 'x', terminate: true, signal: 'lowercase' }, destination: [node] })));
    await r.publish(topic, envelope(signer.serialize({ method: 'ping', pattern: '[', matcher: 'pcre' })));
    await r.publish(topic, envelope(signer.serialize({ method: 'ping', pattern: 'node*', matcher: 'nosuch' })));
    t.deepEqual(await inspect(t, 'redis', node, 'ping'), { ok: 'pong' });
    t.true(w.running);
    t.true(refused.length >= 2, JSON.stringify(refused.map((e) => e.code)));
    t.true(refused.every((e) => e.queue === `${node}.celery.pidbox`));
    // the signed ones were read; the ones for this node ran (or replied an error) without a crash
    t.true(commands.some((c) => c.command === 'revoke'));
    t.true(errors.length >= 1);
    t.log(refused.map((e) => e.code).join(', '), '|', commands.map((c) => `${c.command}:${JSON.stringify(c.reply)}`).join(', '), '|', errors.map(String).join(' / '));
    const { ids } = await send('redis', [{ name: 'n.add', options: { queue } }]);
    t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
  } finally {
    await w.stop();
  }
});

test.serial('redis: control time_limit gives a task a hard time limit (TimeLimitExceeded, its signal aborted)', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('redis');
  let reason: unknown;
  const w = nodeWorker('redis', node, queue, {
    'n.forever': (_a, _k, ctx) =>
      new Promise(() => {
        ctx.signal.addEventListener('abort', () => (reason = ctx.signal.reason));
      }),
  });
  await w.start();
  try {
    t.deepEqual(await control(t, 'redis', node, 'time_limit', 'n.nope', '1', '2'), { error: 'unknown task' });
    t.deepEqual(await control(t, 'redis', node, 'time_limit', 'n.forever', '0.5', '1'), { ok: 'time limits set successfully' });
    const { ids } = await send('redis', [{ name: 'n.forever', options: { queue } }]);
    t.is(await until(() => storedStatus(ids[0]!), 'FAILURE'), 'FAILURE');
    t.like(await storedMeta(ids[0]!), { result: { exc_type: 'TimeLimitExceeded', exc_message: [1] } });
    t.true(reason instanceof Error);
  } finally {
    await w.stop();
  }
});

test.serial('redis: authorizeControl: a signer runs only the commands its rules name; others are refused unanswered (ERR_NOT_AUTHORIZED, security event and log), stock celery CLI and a second signer', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('redis');
  const lines: Record<string, unknown>[] = [];
  const w = nodeWorker(
    'redis',
    node,
    queue,
    { 'n.add': ([x, y]) => Number(x) + Number(y) },
    {
      // The celery CLI signs as 'worker rsa2048' (wire_app.py), the second signer as 'worker rsa1024'.
      authorizeControl: [
        { signer: { cn: 'worker rsa2048' }, commands: ['ping', 'stat?'] },
        { signer: { cn: 'worker rsa1024' }, commands: [/^ping$/] },
      ],
      securityLog: { to: (e) => lines.push(e as unknown as Record<string, unknown>), authorized: true },
    },
  );
  const { refused, commands } = recorded(w);
  await w.start();
  try {
    t.deepEqual(await inspect(t, 'redis', node, 'ping'), { ok: 'pong' });
    t.is(((await inspect(t, 'redis', node, 'stats')) as { pid: number }).pid, process.pid);
    // Not in the rules: neither run nor answered (the CLI's "no nodes replied", 69).
    t.is((await celery('redis', ['inspect', 'active', '-d', node, '-t', '2'])).code, 69);
    t.is((await celery('redis', ['control', 'shutdown', '-d', node, '-t', '2'])).code, 69);
    t.true(w.running, 'a refused shutdown does not stop the worker');
    const cli = new Certificate(readFileSync(pki.cert));
    const byCli = refused.filter((e) => e.signer === cli.id);
    t.deepEqual(
      byCli.map((e) => [e.code, e.check, e.task, e.queue]),
      [
        ['ERR_NOT_AUTHORIZED', 'authorization', null, `${node}.celery.pidbox`],
        ['ERR_NOT_AUTHORIZED', 'authorization', null, `${node}.celery.pidbox`],
      ],
    );
    t.regex(byCli[0]!.reason, /\(CN "worker rsa2048"\) is not authorized to send remote control command "active"/);
    t.regex(byCli[1]!.reason, /"shutdown"/);

    // A second certificate of the store, straight onto the pidbox topic: ping runs, shutdown does not.
    const second = new SecureSerializer({
      key: new PrivateKey(readFileSync(fx.pathOf(fx.key('rsa1024.pkcs8')))),
      cert: new Certificate(readFileSync(fx.pathOf(fx.cert('rsa1024')))),
      store: new FSCertStore(pki.storeDir),
    });
    const envelope = (body: string): string =>
      JSON.stringify({
        body: Buffer.from(body).toString('base64'),
        'content-encoding': 'utf-8',
        'content-type': 'application/data',
        headers: { clock: 1 },
        properties: { delivery_mode: 2, delivery_info: { exchange: 'celery.pidbox', routing_key: '' }, priority: 0, body_encoding: 'base64', delivery_tag: 'x' },
      });
    const secondId = new Certificate(readFileSync(fx.pathOf(fx.cert('rsa1024')))).id;
    // For another node: not this node's business, so not refused here either.
    await r.publish('/0.celery.pidbox', envelope(second.serialize({ method: 'shutdown', arguments: {}, destination: ['other@nowhere'] })));
    await r.publish('/0.celery.pidbox', envelope(second.serialize({ method: 'shutdown', arguments: {}, destination: [node] })));
    // terminate is revoke under another name: the rule on its main name decides (none allows it).
    await r.publish('/0.celery.pidbox', envelope(second.serialize({ method: 'terminate', arguments: { task_id: 'x' }, destination: [node] })));
    await r.publish('/0.celery.pidbox', envelope(second.serialize({ method: 'ping', arguments: {}, destination: [node] })));
    await until(async () => commands.some((c) => c.command === 'ping' && c.signer === secondId), true);
    await until(async () => refused.filter((e) => e.signer === secondId).length, 2);
    t.true(w.running);
    t.false(commands.some((c) => c.command === 'shutdown' || c.command === 'active' || c.command === 'terminate'));
    t.deepEqual(
      refused.filter((e) => e.signer === secondId).map((e) => /remote control command "(\w+)"/.exec(e.reason)?.[1]),
      ['shutdown', 'revoke'],
    );

    // The security log: the refusals with the signer's subject, the allowed commands as 'authorized'.
    const denied = lines.filter((l) => l.event === 'refused');
    t.is(denied.length, 4);
    t.true(denied.every((l) => l.code === 'ERR_NOT_AUTHORIZED' && l.check === 'authorization' && typeof l.subject === 'string'));
    t.true(denied.every((l) => String(l.message).startsWith('Refused remote control command: Signer ')));
    t.true(lines.some((l) => l.event === 'authorized' && /remote control command "ping"/.test(String(l.reason)) && l.signer === secondId));
    // Tasks are not commands: authorizeControl leaves them alone.
    const { ids } = await send('redis', [{ name: 'n.add', args: [2, 3], options: { queue } }]);
    t.is(await until(() => storedStatus(ids[0]!), 'SUCCESS'), 'SUCCESS');
  } finally {
    await w.stop();
  }
});

test('authorizeControl: a bad option is ImproperlyConfigured at construction, named as the option', (t) => {
  const make = (authorizeControl: unknown): Worker =>
    nodeWorker('redis', 'x@y', 'q', {}, { authorizeControl: authorizeControl as WorkerOptions['authorizeControl'] });
  t.throws(() => make([{ signer: { cn: 'ops' }, tasks: ['ping'] }]), { name: 'ImproperlyConfigured', message: /authorizeControl: rule 0: commands must be an array/ });
  t.throws(() => make([{ signer: { cn: 'ops' }, commands: [''] }]), { name: 'ImproperlyConfigured', message: /authorizeControl: rule 0: a command pattern must be/ });
  t.throws(() => make(42), { name: 'ImproperlyConfigured', message: /authorizeControl must be an array of rules, an object of signer -> command patterns/ });
});

test.serial('remoteControl: false: the worker does not answer; a verify-only worker is refused at start unless remoteControl: false', async (t) => {
  t.timeout(120000);
  const { node, queue } = names('redis');
  const off = nodeWorker('redis', node, queue, { 'n.add': () => 1 }, { remoteControl: false });
  await off.start();
  try {
    const res = await celery('redis', ['inspect', 'ping', '-d', node, '-t', '2']);
    t.is(res.code, 69);
  } finally {
    await off.stop();
  }
  const verifyOnly = nodeWorker('redis', node, queue, { 'n.add': () => 1 }, { security: serializer(pki, 'verify'), canvas: false });
  const err = await t.throwsAsync(verifyOnly.start(), { name: 'ImproperlyConfigured' });
  t.regex(err!.message, /remote control replies \(remoteControl: false turns this off\)/);
});

test.serial('redis: the Node worker replies in the shapes of a stock Python worker (ping, registered, stats, revoked, revoke, unknown command, rate_limit, enable_events, hello)', async (t) => {
  t.timeout(180000);
  const { node, queue } = names('redis');
  const py = await startCeleryWorker(pki, { broker: redis.url(), queues: [`${queue}-py`], pool: 'solo' });
  const w = nodeWorker('redis', node, queue, { 'wire.add': ([x, y]) => Number(x) + Number(y) });
  await w.start();
  try {
    const pyNode = /(wire-\d+-\w+@\S+) ready\./.exec(py.logs())![1]!;
    const both = async (command: string, args: object = {}): Promise<[unknown, unknown]> => {
      const { replies } = await broadcast('redis', { command, arguments: args, destination: [node, pyNode] });
      const by: Record<string, unknown> = Object.assign({}, ...replies);
      t.deepEqual(Object.keys(by).sort(), [node, pyNode].sort(), command);
      return [by[node], by[pyNode]];
    };
    const [nPing, pPing] = await both('ping');
    t.deepEqual(nPing, pPing);
    const [nStats, pStats] = (await both('stats')) as [Record<string, unknown>, Record<string, unknown>];
    t.deepEqual(Object.keys(nStats), Object.keys(pStats));
    t.deepEqual(Object.keys(nStats.pool as object).sort(), Object.keys(pStats.pool as object).sort());
    for (const k of Object.keys(pStats.broker as object)) if (k !== 'credential_provider') t.true(k in (nStats.broker as object), `broker.${k}`);
    t.deepEqual(Object.keys(nStats.rusage as object), Object.keys(pStats.rusage as object));
    const [nReg, pReg] = (await both('registered')) as [string[], string[]];
    t.true(pReg.includes('wire.add'));
    t.deepEqual(nReg, ['wire.add']);
    const [nRev, pRev] = await both('revoke', { task_id: ['x-1'] });
    t.deepEqual(nRev, pRev);
    const [nList, pList] = await both('revoked');
    t.deepEqual(nList, pList);
    const [nUnknown, pUnknown] = await both('no_such_command');
    t.deepEqual(nUnknown, pUnknown);
    const [nBad, pBad] = await both('rate_limit', { task_name: 'wire.add', rate_limit: 'x/m' });
    t.deepEqual(nBad, pBad);
    const [nEv, pEv] = await both('enable_events');
    t.deepEqual(nEv, pEv);
    // mingle: a starting worker's hello merges its revoked ids and gets the node's
    const [nHello, pHello] = (await both('hello', { from_node: 'starting@elsewhere', revoked: ['x-2'] })) as [Record<string, unknown>, Record<string, unknown>];
    t.deepEqual(Object.keys(nHello), Object.keys(pHello));
    t.deepEqual(nHello.revoked, pHello.revoked);
    t.deepEqual(nHello.revoked, ['x-1', 'x-2']);
    t.true(Number.isInteger(nHello.clock));
  } finally {
    await w.stop();
    await py.stop();
  }
});
