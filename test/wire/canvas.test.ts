/**
 * Celery's canvas across Node and Python, over a real redis-server, with a
 * stock Python Celery 5.7 worker (queue `py`, accepting only signed `auth`
 * messages: every message the Node side publishes is signed, or it would be
 * refused) and stock Python producers:
 * - a Python `chain(...)` run by the Node worker, its final result read by
 *   Python; a failing chain (the rest gets the failure, as `_fail_chain`);
 * - `link` / `link_error` on a task the Node worker runs;
 * - chords whose header runs partly on the Node worker and partly on the
 *   Python worker, counted through Celery's Redis `on_chord_part_return`: the
 *   body runs once with the results in order, whichever side completes it;
 *   a failed part gives the body a ChordError and runs its errback;
 * - a chain whose group the Node worker turns into a chord;
 * - a Node-built chain, group and chord run by the Python worker;
 * - over RabbitMQ with `rpc://` results, a Python chain on the Node worker;
 * - `canvas: false` reports a canvas it does not follow; a worker that would
 *   publish without a key is refused at start().
 */
import test from 'ava';
import { Redis } from 'ioredis';
import {
  chain,
  chord,
  createClient,
  createWorker,
  group,
  ImproperlyConfigured,
  signature,
  TaskError,
  GroupResult,
  type Canvas,
  type AsyncResult,
  type CeleryClient,
  type Worker,
} from 'celery-sign';
import { makePki, runProducer, runScript, serializer, startCeleryWorker, type CeleryWorker, type Pki, type ProducerResult } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';
import { startRabbit } from './helpers/rabbitmq-server.js';
import { amqpEnv } from './helpers/amqp.js';
import { randomUUID } from 'node:crypto';

const NODE = 'node';
const PY = 'py';
let redis: RedisServer;
let pki: Pki;
let worker: Worker;
let py: CeleryWorker;
let client: CeleryClient;
let r: Redis;
const nodeRuns = new Map<string, number>();
const workerErrors: unknown[] = [];

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  py = await startCeleryWorker(pki, { broker: redis.url(), queues: [PY], concurrency: 2 });
  worker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki), // key and certificate: it signs what it publishes
    queues: [NODE],
    concurrency: 8,
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.fail': ([message]) => {
        throw new TaskError('ValueError', [message]);
      },
      'wire.unencodable': () => new Float64Array(1),
      'wire.collect': ([results], _kw, ctx) => {
        nodeRuns.set(ctx.id, (nodeRuns.get(ctx.id) ?? 0) + 1);
        return { results, parent_id: ctx.parentId, root_id: ctx.rootId, group: ctx.group };
      },
    },
  });
  worker.on('error', (e: unknown) => workerErrors.push(e));
  await worker.start();
  client = createClient({ broker: redis.url(), backend: redis.url(), security: serializer(pki) });
});

test.after.always(async () => {
  await client?.close();
  await worker?.stop({ timeout: 5000 });
  await py?.stop();
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

interface CanvasOut {
  ids: Record<string, unknown>;
  results: Record<string, ProducerResult>;
  [k: string]: unknown;
}

function scenario(name: string, extra: object = {}): Promise<CanvasOut> {
  return runProducer<CanvasOut>(pki, redis.url(), { op: 'canvas', scenario: name, node: NODE, py: PY, timeout: 60, ...extra });
}

async function pyRuns(id: string): Promise<number> {
  return Number((await r.hget('wire:runs', id)) ?? 0);
}

test.serial("a Python chain(add.s(2, 2) | add.s(4) | add.s(8)) runs on the Node worker: Python's AsyncResult gets 16", async (t) => {
  t.timeout(120000);
  const out = await scenario('chain');
  t.deepEqual(out.results.first, { ok: true, value: 4 });
  t.deepEqual(out.results.middle, { ok: true, value: 8 });
  t.deepEqual(out.results.last, { ok: true, value: 16 });
  // Each step's parent is the step before, the root the first (Celery's trace).
  const meta = JSON.parse((await r.get(`celery-task-meta-${out.ids.last as string}`))!) as Record<string, unknown>;
  t.is(meta.parent_id, out.ids.middle);
});

test.serial('a failing task of a chain: the rest of the chain is not run and gets the failure stored (_fail_chain)', async (t) => {
  t.timeout(120000);
  const out = await scenario('chain_fail');
  t.like(out.results.first, { ok: false, type: 'ValueError', message: 'broken', status: 'FAILURE' });
  t.like(out.results.last, { ok: false, type: 'ValueError', message: 'broken', status: 'FAILURE' });
});

test.serial('link: the callbacks run with the result (several as a group); the errback does not run on success', async (t) => {
  t.timeout(120000);
  const out = await scenario('link');
  t.deepEqual(out.results.task, { ok: true, value: 3 });
  t.deepEqual(out.results.cb1, { ok: true, value: 13 }); // add.s(10) on the Node worker: (3, 10)
  const cb2 = out.results.cb2!.value as Record<string, unknown>; // record.s('second') on Python
  t.deepEqual(cb2.args, [3, 'second']);
  t.is(cb2.parent_id, out.ids.task);
  t.is(cb2.root_id, out.ids.task);
  t.is(typeof cb2.group, 'string'); // two callbacks go out as one group
  t.is(cb2.group_index, 1);
  t.is(out.eb_state, 'PENDING');
});

test.serial("link_error: the errback runs with the failed task's id (Celery's old-style errback); the callback does not", async (t) => {
  t.timeout(120000);
  const out = await scenario('link_error');
  t.like(out.results.task, { ok: false, type: 'ValueError', message: 'boom' });
  const eb = out.results.eb!.value as Record<string, unknown>;
  t.deepEqual(eb.args, [out.ids.task, 'errback']);
  t.is(eb.parent_id, out.ids.task);
  t.is(eb.root_id, out.ids.task);
  t.is(eb.group_index, 0); // _call_task_errbacks sends a group
  t.is(out.cb_state, 'PENDING');
});

test.serial('a chord whose header runs on the Node and the Python worker: the body runs once with all results in order', async (t) => {
  t.timeout(180000);
  for (const body of [PY, NODE]) {
    const out = await scenario('chord', { n: 6, body });
    const value = out.results.body!.value as Record<string, unknown>;
    t.truthy(value, JSON.stringify(out.results.body));
    t.deepEqual(value.results, [0, 2, 4, 6, 8, 10], `body on ${body}`);
    t.true((out.ids.header as string[]).includes(value.parent_id as string)); // sent by the part that completed it
    const bodyId = out.ids.body as string;
    t.is(body === PY ? await pyRuns(bodyId) : nodeRuns.get(bodyId), 1);
    // The chord's keys are cleaned up and the done marker set (CHORD_CLEANUP_LUA).
    const gid = out.ids.group as string;
    t.is(await r.exists(`celery-taskset-meta-${gid}.j`, `celery-taskset-meta-${gid}.s`, `celery-taskset-meta-${gid}.d`), 0);
    t.is(await r.get(`celery-taskset-meta-${gid}.c`), 'done');
  }
});

test.serial("a chord with a failing part on the Node worker: the body gets Celery's ChordError and its errback runs", async (t) => {
  t.timeout(120000);
  const out = await scenario('chord_fail');
  t.like(out.results.body, { ok: false, type: 'ChordError', status: 'FAILURE' });
  t.regex(out.results.body!.message!, /^Dependency [0-9a-f-]+ raised ValueError\('part'\)$/);
  const eb = out.results.eb!.value as Record<string, unknown>;
  t.deepEqual(eb.args, [out.ids.body, 'chord-errback']);
});

test.serial('a chain with a group in it: the Node worker applies the chord that Celery made of it', async (t) => {
  t.timeout(120000);
  const out = await scenario('chain_chord');
  const value = out.results.body!.value as Record<string, unknown>;
  t.truthy(value, JSON.stringify(out.results.body));
  t.deepEqual(value.results, [12, 22]);
});

test.serial('a Node-built chain, group and chord run on the Python worker; Node reads the results', async (t) => {
  t.timeout(120000);
  const at = (q: string) => ({ queue: q });
  const c = (await client.send(
    chain(signature('wire.add', [2, 2], {}, at(PY)), signature('wire.add', [4], {}, at(PY)), signature('wire.add', [8], {}, at(PY))),
  )) as AsyncResult;
  t.is(await c.get({ timeout: 60000 }), 16);

  const g = await client.send(group(signature('wire.add', [1, 1], {}, at(PY)), signature('wire.add', [2, 2], {}, at(PY)), signature('wire.add', [3, 3], {}, at(PY))));
  t.true(g instanceof GroupResult);
  t.deepEqual(await (g as GroupResult).get({ timeout: 60000 }), [2, 4, 6]);

  const ch = (await client.send(
    chord([signature('wire.add', [1, 2], {}, at(PY)), signature('wire.add', [3, 4], {}, at(PY))], signature('wire.collect', [], {}, at(PY))),
  )) as AsyncResult;
  const v = (await ch.get({ timeout: 60000 })) as Record<string, unknown>;
  t.deepEqual(v.results, [3, 7]);
  t.is(await pyRuns(ch.id), 1);

  // A bound signature: client.signature(...).applyAsync(); a chord across both workers, built in Node.
  const mixed = (await chord(
    [client.signature('wire.add', [1, 1], {}, at(NODE)), client.signature('wire.add', [2, 2], {}, at(PY)), client.signature('wire.add', [3, 3], {}, at(NODE))],
    client.signature('wire.collect', [], {}, at(PY)),
  ).applyAsync()) as AsyncResult;
  t.deepEqual(((await mixed.get({ timeout: 60000 })) as Record<string, unknown>).results, [2, 4, 6]);
  t.is(await pyRuns(mixed.id), 1);
});

/** The messages on a queue, their signed bodies verified and decoded, normalized where two producers must differ. */
/** Waits until `queue` holds at least `atLeast` messages and has not grown for 300 ms (at most 15 s). */
async function settled(queue: string, atLeast: number): Promise<void> {
  const deadline = Date.now() + 15000;
  let last = -1;
  let since = Date.now();
  while (Date.now() < deadline) {
    const n = await r.llen(queue);
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (n >= atLeast && Date.now() - since >= 300) return;
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function captured(queue: string): Promise<unknown[]> {
  const verify = serializer(pki, 'verify');
  const items = await r.lrange(queue, 0, -1);
  await r.del(queue);
  const out = items.map((item) => {
    const env = JSON.parse(item) as { headers: Record<string, unknown>; properties: Record<string, unknown>; body: string; 'content-type': string };
    const body = verify.deserialize(Buffer.from(env.body, 'base64').toString());
    const { delivery_tag: _tag, delivery_info: _info, ...properties } = env.properties;
    const replyTo = properties.reply_to as string;
    const text = JSON.stringify({ contentType: env['content-type'], headers: { ...env.headers, origin: '<origin>' }, properties, body });
    // reply_to is each producer's app.thread_oid; ignore_result is False from a
    // producer that has the task registered, None (null) from one that has not (celery-sign).
    return JSON.parse(text.split(JSON.stringify(replyTo)).join('"<oid>"').replace(/"ignore_result":(false|null)/, '"ignore_result":"<unset>"')) as unknown;
  });
  return sortById(out);
}

/** Names the given ids by position and the ids made on the way (uuid()) by first appearance, then sorts by task id. */
function renamed(messages: unknown[], ids: readonly string[]): unknown[] {
  let text = JSON.stringify(messages);
  ids.forEach((id, i) => (text = text.split(id).join(`<id${i}>`)));
  const fresh = [...new Set(text.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) ?? [])];
  fresh.forEach((id, i) => (text = text.split(id).join(`<new${i}>`)));
  return sortById(JSON.parse(text) as unknown[]);
}

function sortById(messages: unknown[]): unknown[] {
  const id = (m: unknown): string => String((m as { headers: { id: string } }).headers.id);
  return messages.sort((a, b) => id(a).localeCompare(id(b)));
}

test.serial("the Node client's chain, group and chord messages are what Python's canvas sends (signed bodies, headers, embed, chord size)", async (t) => {
  t.timeout(120000);
  const q = 'capture';
  const at = (id: string) => ({ queue: q, task_id: id });
  const cases: [string, number, (ids: string[]) => Canvas][] = [
    ['chain', 3, (ids) => chain(signature('wire.add', [2, 2], {}, at(ids[0]!)), signature('wire.add', [4], {}, at(ids[1]!)), signature('wire.add', [8], {}, at(ids[2]!)))],
    ['group', 3, (ids) => group(signature('wire.add', [1, 1], {}, at(ids[0]!)), signature('wire.add', [2, 2], {}, at(ids[1]!))).set({ task_id: ids[2] })],
    [
      'chord',
      4,
      (ids) => chord([signature('wire.add', [1, 1], {}, at(ids[0]!)), signature('wire.add', [2, 2], {}, at(ids[1]!))], signature('wire.collect', [], {}, at(ids[3]!))).set({ task_id: ids[2] }),
    ],
    [
      'chain_group',
      4,
      (ids) =>
        chain(
          signature('wire.add', [1, 1], {}, at(ids[0]!)),
          group(signature('wire.add', [10], {}, at(ids[1]!)), signature('wire.add', [20], {}, at(ids[2]!))),
          signature('wire.collect', [], {}, at(ids[3]!)),
        ),
    ],
  ];
  for (const [kind, n, build] of cases) {
    const ids = Array.from({ length: n }, () => randomUUID());
    await scenario('capture', { kind, queue: q, ids });
    const fromPython = await captured(q);
    const pySize = kind === 'chord' ? await r.get(`celery-taskset-meta-${ids[2]}.s`) : null;
    await r.del(`celery-taskset-meta-${ids[2]}.s`);
    await client.send(build(ids));
    const fromNode = await captured(q);
    t.true(fromPython.length > 0, kind);
    t.deepEqual(renamed(fromNode, ids), renamed(fromPython, ids), kind);
    if (kind === 'chord') {
      t.is(pySize, '2');
      t.is(await r.get(`celery-taskset-meta-${ids[2]}.s`), '2');
      t.true((await r.ttl(`celery-taskset-meta-${ids[2]}.s`)) > 86000);
      await r.del(`celery-taskset-meta-${ids[2]}.s`);
    }
  }
});

test.serial('what the Node worker sends after a task (chain step, callbacks, errbacks, chord body, a chain\'s chord) is what the Python worker sends', async (t) => {
  t.timeout(300000);
  const q = 'capture-worker';
  const cases: [string, number][] = [
    ['chain', 3],
    ['link', 3],
    ['link_error', 2],
    ['chord', 3],
    ['chain_group', 4],
    ['chain_end_group', 3],
    ['group_of_chains', 4],
  ];
  for (const [kind, n] of cases) {
    const got: Record<string, unknown[]> = {};
    const sizes: Record<string, string | null> = {};
    for (const first of [PY, NODE]) {
      const ids = Array.from({ length: n }, () => randomUUID());
      const out = await runProducer<{ first: ProducerResult }>(pki, redis.url(), { op: 'canvas', scenario: 'capture_worker', kind, queue: q, first, ids, timeout: 60 });
      t.truthy(out.first.status ?? out.first.ok, kind);
      // A chord's body is sent after the header's result is stored (by either
      // worker, as Celery's on_chord_part_return): wait for what the other
      // worker sent, and for the queue to stay still a moment.
      await settled(q, got[PY]?.length ?? 1);
      const raw = await captured(q);
      if (kind === 'chain_group') {
        // the chord the worker made of the group: its size, set by that worker
        const gid = (raw[0] as { headers: { group: string } }).headers.group;
        sizes[first] = await r.get(`celery-taskset-meta-${gid}.s`);
        await r.del(`celery-taskset-meta-${gid}.s`);
      }
      // Fresh ids each run: named by position; a group id made on the way (uuid()) by its first appearance.
      got[first] = renamed(raw, ids);
    }
    t.true(got[PY]!.length > 0, kind);
    t.deepEqual(got[NODE], got[PY], kind);
    if (kind === 'chain_group') t.deepEqual(sizes, { [PY]: '2', [NODE]: '2' });
  }
});

test.serial('a canvas the worker cannot follow (malformed, or a type it does not run) is stored as a FAILURE and reported; the worker goes on', async (t) => {
  t.timeout(60000);
  workerErrors.length = 0;
  const bad = [
    { chain: [42] },
    { callbacks: [{ task: 'wire.add', args: 'not a list' }] },
    { callbacks: [{ task: 'celery.starmap', args: [], kwargs: { task: {}, it: [] }, options: {}, subtask_type: 'xstarmap', immutable: false }] },
  ];
  const sent = await Promise.all(bad.map((o) => client.sendTask('wire.add', [1, 2], {}, { queue: NODE, ...o })));
  for (const res of sent) {
    const err = await t.throwsAsync(() => res.get({ timeout: 30000 }));
    t.like(err, { name: 'TaskFailedError', excType: 'CanvasError' });
  }
  const next = await client.sendTask('wire.add', [2, 2], {}, { queue: NODE });
  t.is(await next.get({ timeout: 30000 }), 4);
  t.true(workerErrors.length >= 3);
  t.true(workerErrors.every((e) => (e as { code?: string }).code === 'ERR_CANVAS'), String(workerErrors));
  workerErrors.length = 0;
});

test.serial('a result kombu JSON cannot encode for its callback: the task is stored as EncodeError and its errback runs, as the tracer does', async (t) => {
  t.timeout(60000);
  const ebId = randomUUID();
  const res = await client.sendTask('wire.unencodable', [], {}, {
    queue: NODE,
    callbacks: [signature('wire.add', [1], {}, { queue: PY }).toDict()],
    errbacks: [signature('wire.record', ['eb'], {}, { queue: PY, task_id: ebId }).toDict()],
  });
  const err = await t.throwsAsync(() => res.get({ timeout: 30000 }));
  t.like(err, { name: 'TaskFailedError', excType: 'EncodeError' });
  const eb = (await client.asyncResult(ebId).get({ timeout: 30000 })) as Record<string, unknown>;
  t.deepEqual(eb.args, [res.id, 'eb']);
});

test.serial('Celery 5.4 counts chords the same way: a chord across a 5.4 Python worker and a Node worker (signing in the 5.4 wire format)', async (t) => {
  t.timeout(180000);
  const node54 = 'node54';
  const queue54 = 'py54';
  const py54 = await startCeleryWorker(pki, { env: 'celery54', broker: redis.url(), queues: [queue54], pool: 'solo' });
  const runs54 = new Map<string, number>();
  const w54 = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki, 'good', 'celery-5.4'),
    queues: [node54],
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.collect': ([results], _kw, ctx) => {
        runs54.set(ctx.id, (runs54.get(ctx.id) ?? 0) + 1);
        return { results, parent_id: ctx.parentId, root_id: ctx.rootId, group: ctx.group };
      },
    },
  });
  try {
    await w54.start();
    for (const body of [queue54, node54]) {
      const out = await runProducer<CanvasOut>(
        pki,
        redis.url(),
        { op: 'canvas', scenario: 'chord', node: node54, py: queue54, body, n: 6, timeout: 60 },
        { env: 'celery54' },
      );
      const value = out.results.body!.value as Record<string, unknown>;
      t.truthy(value, JSON.stringify(out.results.body));
      t.deepEqual(value.results, [0, 2, 4, 6, 8, 10], `body on ${body}`);
      const bodyId = out.ids.body as string;
      t.is(body === queue54 ? await pyRuns(bodyId) : runs54.get(bodyId), 1);
    }
  } finally {
    await w54.stop({ timeout: 5000 });
    await py54.stop();
  }
});

test.serial('over RabbitMQ with rpc:// results: a Python chain runs on the Node worker; a failing one stores the failure for the rest at its reply_to', async (t) => {
  t.timeout(180000);
  const rabbit = await startRabbit();
  const queue = 'node-amqp';
  const w = createWorker({
    broker: rabbit.url,
    backend: 'rpc://',
    security: serializer(pki),
    queues: [queue],
    tasks: {
      'wire.add': ([x, y]) => Number(x) + Number(y),
      'wire.fail': ([message]) => {
        throw new TaskError('ValueError', [message]);
      },
    },
  });
  try {
    await w.start();
    const run = (name: string) =>
      runScript<CanvasOut>('wire_producer.py', { op: 'canvas', scenario: name, node: queue, timeout: 60 }, { processEnv: amqpEnv(pki, rabbit, 'rpc://') });
    const chainOut = await run('chain');
    t.deepEqual(chainOut.results.last, { ok: true, value: 16 });
    t.deepEqual(chainOut.results.first, { ok: true, value: 4 });
    const failOut = await run('chain_fail');
    t.like(failOut.results.first, { ok: false, type: 'ValueError', message: 'broken' });
    t.like(failOut.results.last, { ok: false, type: 'ValueError', message: 'broken', status: 'FAILURE' });
  } finally {
    await w.stop({ timeout: 5000 });
    await rabbit.stop();
  }
});

test.serial('canvas: false runs the task, reports the canvas it does not follow, and sends nothing', async (t) => {
  t.timeout(120000);
  const queue = 'node-nocanvas';
  const errors: unknown[] = [];
  const lax = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    security: serializer(pki, 'verify'),
    canvas: false,
    retries: false,
    remoteControl: false, // verify-only: it publishes nothing
    queues: [queue],
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
  });
  lax.on('error', (e: unknown) => errors.push(e));
  try {
    await lax.start();
    const link = { task: 'wire.add', args: [10], kwargs: {}, options: { queue: 'nowhere' }, subtask_type: null, immutable: false };
    const out = await runProducer(pki, redis.url(), { op: 'send', wait: true, timeout: 30, tasks: [{ name: 'wire.add', args: [1, 2], options: { queue, link } }] });
    t.deepEqual(out.results[0], { ok: true, value: 3 });
    t.is(errors.length, 1);
    t.like(errors[0], { name: 'CanvasError', code: 'ERR_CANVAS' });
    t.regex((errors[0] as Error).message, new RegExp(`${out.ids[0]}.*canvas: false`));
    t.is(await r.llen('nowhere'), 0); // a callback is published before the result is stored: none was
  } finally {
    await lax.stop({ timeout: 5000 });
  }
});

test.serial('a worker that follows the canvas and cannot sign is refused at start()', async (t) => {
  const w = createWorker({ broker: redis.url(), backend: redis.url(), security: serializer(pki, 'verify'), queues: ['unused'], tasks: {} });
  const err = await t.throwsAsync(() => w.start(), { instanceOf: ImproperlyConfigured });
  t.regex(err!.message, /chains, callbacks and chords/);
  await w.stop();
  t.deepEqual(workerErrors, []); // the shared Node worker reported no trouble in any test
});
