/**
 * Worker events signed with `event_serializer = 'auth'`, as Celery publishes
 * them, read by a stock Python Celery `EventReceiver` (setup_security(),
 * accept=['auth']) over a real redis-server (kombu's fanout over PUBLISH) and
 * a real rabbitmq-server (the `celeryev` topic exchange): worker-online,
 * heartbeats, task-received/started/succeeded/failed (batched on `task.multi`
 * as Celery's worker batches them, or one by one), task-retried, worker-offline; the Redis
 * envelope and channel are what Celery's own dispatcher publishes; events
 * signed by a key the receiver does not trust are refused by it.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { Redis } from 'ioredis';
import { createClient, createWorker, ImproperlyConfigured, json, TaskError, type Worker } from 'celery-sign';
import { SW_VERSION } from '../../lib/wire/events.js';
import { makePki, PY_DIR, runScript, serializer, wireEnv, type Pki } from './helpers/celery.js';
import { pythonPath, ROOT } from '../helpers/python.js';
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

type Ev = Record<string, unknown>;
interface Line {
  ready?: boolean;
  routing_key?: string;
  content_type?: string;
  headers?: Record<string, unknown>;
  events?: Ev[];
  decode_error?: string;
}

interface Receiver {
  lines: Line[];
  waitFor(pred: (lines: Line[]) => boolean, ms?: number): Promise<void>;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Starts test/py/wire_events.py (Celery's EventReceiver) and waits until it consumes. */
async function startReceiver(broker: string, hostname: string, backend = redis.url()): Promise<Receiver> {
  const child = spawn(pythonPath('current'), [join(PY_DIR, 'wire_events.py')], {
    cwd: PY_DIR,
    env: wireEnv(pki, broker, 'good', { WIRE_BACKEND: backend, WIRE_EVENTS_HOSTNAME: hostname, WIRE_EVENTS_SECONDS: '90' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Line[] = [];
  let err = '';
  let partial = '';
  const listeners = new Set<() => void>();
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p) as Line);
    for (const l of [...listeners]) l();
  });
  child.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = (pred: (lines: Line[]) => boolean, ms = 20000): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (pred(lines)) {
          done();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`event receiver: condition not met within ${ms} ms; ${lines.length} lines:\n${JSON.stringify(lines).slice(-2000)}\n${err.slice(-3000)}`));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      void exited.then(() => check());
      check();
    });
  await waitFor((ls) => ls.some((l) => l.ready));
  return {
    lines,
    waitFor,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Waits until someone listens on the Redis fanout patterns (kombu subscribes after it reports ready). */
async function subscribed(r: Redis): Promise<void> {
  const deadline = Date.now() + 10000;
  while (Number(await r.call('PUBSUB', 'NUMPAT')) < 1) {
    if (Date.now() > deadline) throw new Error('the receiver never subscribed');
    await sleep(50);
  }
}

const flat = (lines: Line[]): Ev[] => lines.flatMap((l) => l.events ?? []);

/** Runs add, fail and an unknown task through a worker with events on; stops it. */
async function exercise(broker: string, worker: Worker): Promise<{ add: string; fail: string; nope: string; t0: number; t1: number }> {
  const t0 = Date.now() / 1000;
  await worker.start();
  const client = createClient({ broker, backend: redis.url(), security: serializer(pki) });
  try {
    const add = await client.sendTask('wire.add', [2, 3], {}, { queue: 'ev' });
    await add.get({ timeout: 10000 });
    const fail = await client.sendTask('wire.fail', ['boom'], {}, { queue: 'ev' });
    await fail.get({ timeout: 10000 }).catch(() => undefined);
    const nope = await client.sendTask('wire.nope', [], {}, { queue: 'ev' });
    await nope.get({ timeout: 10000 }).catch(() => undefined);
    await sleep(1300); // a couple of heartbeats
    await worker.stop();
    return { add: add.id, fail: fail.id, nope: nope.id, t0, t1: Date.now() / 1000 };
  } finally {
    await client.close();
  }
}

function eventWorker(broker: string, hostname: string, extra: object = {}): Worker {
  return createWorker({
    broker,
    backend: redis.url(),
    security: serializer(pki),
    queues: ['ev'],
    hostname,
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.fail': ([m]) => {
        throw new TaskError('ValueError', [m]);
      },
    },
    events: { heartbeatInterval: 0.5, ...extra },
  });
}

function checkEvents(t: import('ava').ExecutionContext, lines: Line[], hostname: string, ids: Awaited<ReturnType<typeof exercise>>): void {
  const evs = flat(lines);
  t.deepEqual(lines.filter((l) => l.decode_error), [], 'every event verified');
  for (const l of lines.filter((x) => x.events)) {
    t.is(l.content_type, 'application/data');
    t.deepEqual(l.headers, { hostname });
  }
  const types = evs.map((e) => e.type);
  t.is(types[0], 'worker-online');
  t.is(types[types.length - 1], 'worker-offline');
  t.true(types.filter((x) => x === 'worker-heartbeat').length >= 2, 'heartbeats');
  for (const e of evs) {
    t.is(e.hostname, hostname);
    t.is(e.pid, process.pid);
    t.is(typeof e.utcoffset, 'number');
    t.true((e.timestamp as number) >= ids.t0 - 1 && (e.timestamp as number) <= ids.t1 + 1);
  }
  const clocks = evs.map((e) => e.clock as number);
  t.deepEqual(clocks, [...clocks].sort((a, b) => a - b), 'Lamport clock in order');
  t.is(new Set(clocks).size, clocks.length);
  const online = evs[0]!;
  t.like(online, { freq: 0.5, sw_ident: 'celery-sign', sw_ver: SW_VERSION, sw_sys: 'Linux', active: 0 });
  t.is((online.loadavg as number[]).length, 3);
  t.like(evs[evs.length - 1], { processed: 2 }); // add and fail ran; the unknown task never ran
  const of = (uuid: string) => evs.filter((e) => e.uuid === uuid);
  t.deepEqual(of(ids.add).map((e) => e.type), ['task-received', 'task-started', 'task-succeeded']);
  t.like(of(ids.add)[0], { name: 'wire.add', args: '[2, 3]', kwargs: '{}', root_id: ids.add, parent_id: null, retries: 0, eta: null, expires: null });
  t.like(of(ids.add)[2], { result: '5' });
  t.is(typeof of(ids.add)[2]!.runtime, 'number');
  t.deepEqual(of(ids.fail).map((e) => e.type), ['task-received', 'task-started', 'task-failed']);
  t.like(of(ids.fail)[2], { exception: "ValueError('boom')" });
  t.regex(String(of(ids.fail)[2]!.traceback), /ValueError/);
  t.deepEqual(of(ids.nope).map((e) => e.type), ['task-failed']);
  t.like(of(ids.nope)[0], { exception: "NotRegistered('wire.nope')" });
}

test.serial('Redis: a Python EventReceiver verifies and reads the Node worker events (task events batched on task.multi)', async (t) => {
  t.timeout(90000);
  const hostname = `node-ev-redis@${process.pid}`;
  const r = new Redis(redis.url(), { lazyConnect: true });
  await r.connect();
  try {
    const recv = await startReceiver(redis.url(), hostname);
    await subscribed(r);
    const ids = await exercise(redis.url(), eventWorker(redis.url(), hostname));
    t.is(await Promise.race([recv.exited, sleep(20000).then(() => 'timeout')]), 0, 'the receiver saw worker-offline and left');
    const keys = new Set(recv.lines.map((l) => l.routing_key).filter(Boolean));
    t.deepEqual([...keys].sort(), ['task.multi', 'worker.heartbeat', 'worker.offline', 'worker.online']);
    checkEvents(t, recv.lines, hostname, ids);
    t.log(`${flat(recv.lines).length} events in ${recv.lines.length - 1} messages`);
  } finally {
    r.disconnect();
  }
});

test.serial('AMQP: the celeryev topic exchange, one message per task event (routing keys task.succeeded...)', async (t) => {
  t.timeout(90000);
  const hostname = `node-ev-amqp@${process.pid}`;
  const recv = await startReceiver(rabbit.pyUrl, hostname);
  const ids = await exercise(rabbit.url, eventWorker(rabbit.url, hostname, { batchTaskEvents: false }));
  t.is(await Promise.race([recv.exited, sleep(20000).then(() => 'timeout')]), 0);
  const keys = new Set(recv.lines.map((l) => l.routing_key).filter(Boolean));
  t.deepEqual([...keys].sort(), ['task.failed', 'task.received', 'task.started', 'task.succeeded', 'worker.heartbeat', 'worker.offline', 'worker.online']);
  for (const l of recv.lines.filter((x) => x.events)) {
    t.is(l.events!.length, 1);
    t.is(l.routing_key, String(l.events![0]!.type).replace(/-/g, '.'));
  }
  checkEvents(t, recv.lines, hostname, ids);
});

test.serial("Redis: the channel and envelope are those of Celery's own EventDispatcher", async (t) => {
  t.timeout(60000);
  const sub = new Redis(redis.url(), { lazyConnect: true });
  await sub.connect();
  const got: { channel: string; message: string }[] = [];
  sub.on('pmessage', (_p: string, channel: string, message: string) => got.push({ channel, message }));
  await sub.psubscribe('/0.celeryev/*');
  try {
    const fields = { freq: 2, active: 0, processed: 0, loadavg: [0.1, 0.2, 0.3], sw_ident: 'py-celery', sw_ver: '5.7.0', sw_sys: 'Linux' };
    await runScript('wire_event_sender.py', {
      hostname: 'py@host',
      buffer_task_events: true,
      events: [
        { type: 'worker-online', fields },
        { type: 'task-started', fields: { uuid: 'u1' } },
        { type: 'task-started', fields: { uuid: 'u2' } },
      ],
    }, { processEnv: wireEnv(pki, redis.url()) });
    const w = eventWorker(redis.url(), 'node@host', { heartbeatInterval: 60 });
    await w.start();
    await w.stop();
    await sleep(200);
    const py = got.filter((g) => /"py@host"/.test(g.message));
    const node = got.filter((g) => /"node@host"/.test(g.message));
    t.deepEqual(py.map((g) => g.channel), ['/0.celeryev/worker.online', '/0.celeryev/task.multi']);
    t.deepEqual(node.map((g) => g.channel), ['/0.celeryev/worker.online', '/0.celeryev/worker.offline']);
    const shape = (m: string) => {
      const env = json.loads(m) as Record<string, unknown>;
      const props = env.properties as Record<string, unknown>;
      return {
        keys: Object.keys(env),
        contentType: env['content-type'],
        contentEncoding: env['content-encoding'],
        propertyKeys: Object.keys(props),
        properties: { ...props, delivery_tag: typeof props.delivery_tag },
        headerKeys: Object.keys(env.headers as object),
      };
    };
    const pyShape = shape(py[0]!.message);
    const nodeShape = shape(node[0]!.message);
    t.deepEqual(nodeShape, pyShape);
    t.deepEqual(pyShape.properties, {
      delivery_mode: 1,
      delivery_info: { exchange: 'celeryev', routing_key: 'worker.online' },
      priority: 0,
      body_encoding: 'base64',
      delivery_tag: 'string',
    });
    // The events, verified: the same keys in the same order.
    const verify = serializer(pki, 'verify');
    const body = (m: string) => verify.deserialize(Buffer.from((json.loads(m) as { body: string }).body, 'base64').toString()) as Record<string, unknown>;
    const pyEvent = body(py[0]!.message);
    const nodeEvent = body(node[0]!.message);
    t.deepEqual(Object.keys(nodeEvent), Object.keys(pyEvent));
    t.deepEqual(Object.keys(pyEvent), ['hostname', 'utcoffset', 'pid', 'clock', 'freq', 'active', 'processed', 'loadavg', 'sw_ident', 'sw_ver', 'sw_sys', 'timestamp', 'type']);
    const multi = body(py[1]!.message) as unknown as Ev[];
    t.deepEqual(multi.map((e) => [e.type, e.uuid]), [['task-started', 'u1'], ['task-started', 'u2']]);
  } finally {
    sub.disconnect();
  }
});

test.serial('events signed by a key the receiver does not trust are refused by Celery; a worker that cannot sign does not start', async (t) => {
  t.timeout(60000);
  const hostname = `node-ev-untrusted@${process.pid}`;
  const recv = await startReceiver(rabbit.pyUrl, hostname);
  try {
    const w = createWorker({
      broker: rabbit.url,
      security: serializer(pki, 'unknown'), // signs with a certificate that is not in the receiver's store
      queues: ['ev-untrusted'],
      hostname,
      tasks: {},
      events: { heartbeatInterval: 0.3 },
    });
    await w.start();
    await recv.waitFor((ls) => ls.filter((l) => l.decode_error).length >= 2);
    await w.stop();
    await recv.waitFor((ls) => ls.some((l) => l.routing_key === 'worker.offline'));
    t.deepEqual(recv.lines.filter((l) => l.events), [], 'nothing was accepted');
    for (const l of recv.lines.filter((x) => x.decode_error)) t.regex(l.decode_error!, /Unknown certificate|SecurityError/);
  } finally {
    await recv.stop();
  }
  const verifyOnly = createWorker({ broker: redis.url(), security: serializer(pki, 'verify'), tasks: {}, events: true });
  await t.throwsAsync(verifyOnly.start(), { instanceOf: ImproperlyConfigured, message: /needs a key and a certificate/ });
  // sw_ver is the package version.
  t.is(SW_VERSION, (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
});

test.serial('AMQP: a retry sends task-retried (the exception and the traceback, as Celery), the retried run its own events', async (t) => {
  t.timeout(90000);
  const hostname = `node-ev-retry@${process.pid}`;
  const recv = await startReceiver(rabbit.pyUrl, hostname);
  const worker = createWorker({
    broker: rabbit.url,
    backend: redis.url(),
    security: serializer(pki),
    queues: ['ev-retry'],
    hostname,
    handleSignals: false,
    tasks: {
      'wire.flaky': (_args, _kwargs, ctx) => (ctx.retries < 1 ? ctx.retry({ countdown: 0, exc: new TaskError('ValueError', ['again']) }) : ctx.retries),
    },
    events: { batchTaskEvents: false },
  });
  await worker.start();
  const client = createClient({ broker: rabbit.url, backend: redis.url(), security: serializer(pki) });
  let id: string;
  try {
    const res = await client.sendTask('wire.flaky', [], {}, { queue: 'ev-retry' });
    id = res.id;
    t.is(await res.get({ timeout: 20000 }), 1);
  } finally {
    await client.close();
    await worker.stop();
  }
  t.is(await Promise.race([recv.exited, sleep(20000).then(() => 'timeout')]), 0);
  const evs = flat(recv.lines).filter((e) => e.uuid === id);
  // The retry is sent before task-retried: its task-received may come first.
  t.deepEqual(evs.map((e) => e.type).sort(), ['task-received', 'task-received', 'task-retried', 'task-started', 'task-started', 'task-succeeded']);
  t.deepEqual(evs.filter((e) => e.type === 'task-received').map((e) => e.retries), [0, 1]);
  const retried = evs.find((e) => e.type === 'task-retried')!;
  t.is(retried.exception, "ValueError('again')");
  t.regex(String(retried.traceback), /^Retry: Retry in 0s: ValueError\('again'\)/);
});
