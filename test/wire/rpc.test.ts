/**
 * The `rpc://` result backend (Celery's `RPCBackend`) over a real
 * rabbitmq-server, both directions with stock Python Celery 5.7 under
 * setup_security(): Node client -> Python worker, Python client
 * (`AsyncResult.get` on `rpc://`) -> Node worker, Node -> Node with many
 * tasks in flight; the reply queue declared as Celery declares it; the reply
 * messages of a Node worker equal a Python worker's; `auth`-serialized results
 * both ways; hostile messages on the reply queue dropped while the real
 * result still arrives.
 */
import test from 'ava';
import {
  createClient,
  createWorker,
  ImproperlyConfigured,
  TaskError,
  TaskFailedError,
  ResultTimeoutError,
  type CeleryClient,
  type TaskHandler,
  type Worker,
  type WorkerOptions,
} from 'celery-sign';
import { amqpEnv, amqpProducer, rawConnection, until } from './helpers/amqp.js';
import { makePki, runScript, serializer, startCeleryWorker, type CeleryWorker, type Pki, type ProducerResult } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';

let rabbit: RabbitServer;
let pki: Pki;
let pyJson: CeleryWorker;
let pyAuth: CeleryWorker;
let nodeJson: Worker;
let nodeAuth: Worker;
const runs = new Map<string, number>();

const tasks: Record<string, TaskHandler> = {
  'wire.add': ([x, y]) => Number(x) + Number(y),
  'wire.fail': ([message]) => {
    throw new TaskError('ValueError', [message]);
  },
  'wire.count': ([i], _kw, ctx) => {
    runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1);
    return i;
  },
};

function nodeWorker(queue: string, extra: Partial<WorkerOptions> = {}): Worker {
  return createWorker({ broker: rabbit.url, backend: 'rpc://', security: serializer(pki), queues: [queue], tasks, concurrency: 64, ...extra });
}

function client(extra: Partial<Parameters<typeof createClient>[0]> = {}): CeleryClient {
  return createClient({ broker: rabbit.url, backend: 'rpc://', security: serializer(pki), ...extra });
}

/** A raw amqplib channel for the duration of `fn`. */
async function withChannel<T>(fn: (ch: import('amqplib').Channel) => Promise<T>): Promise<T> {
  const c = await rawConnection(rabbit);
  try {
    const ch = await c.createChannel();
    ch.on('error', () => undefined);
    return await fn(ch);
  } finally {
    await c.close().catch(() => undefined);
  }
}

/** Whether the queue exists (a passive declare on a channel of its own). */
const queueExists = (name: string): Promise<boolean> =>
  withChannel(async (ch) => {
    try {
      await ch.checkQueue(name);
      return true;
    } catch {
      return false;
    }
  });

/** The Python producer on rpc:// (Celery's send_task + AsyncResult.get), results in `serializerName`. */
function pySend(taskList: object[], resultSerializer: 'json' | 'auth' = 'json', wait = true) {
  return runScript<{ ids: string[]; results: ProducerResult[] }>(
    'wire_producer.py',
    { op: 'send', tasks: taskList, wait, timeout: 30 },
    { processEnv: amqpEnv(pki, rabbit, 'rpc://', 'good', { WIRE_RESULT_SERIALIZER: resultSerializer }) },
  );
}

test.before(async () => {
  rabbit = await startRabbit();
  pki = makePki();
  [pyJson, pyAuth] = await Promise.all([
    startCeleryWorker(pki, {
      broker: rabbit.pyUrl,
      queues: ['py'],
      pool: 'prefork',
      concurrency: 2,
      extraEnv: { WIRE_BACKEND: 'rpc://', WIRE_TRACK_STARTED: '1' },
    }),
    startCeleryWorker(pki, {
      broker: rabbit.pyUrl,
      queues: ['pyauth'],
      pool: 'solo',
      extraEnv: { WIRE_BACKEND: 'rpc://', WIRE_RESULT_SERIALIZER: 'auth' },
    }),
  ]);
  nodeJson = nodeWorker('node');
  nodeAuth = nodeWorker('nodeauth', { resultSerializer: 'auth' });
  await Promise.all([nodeJson.start(), nodeAuth.start()]);
});

test.after.always(async () => {
  await nodeJson?.stop({ timeout: 5000 });
  await nodeAuth?.stop({ timeout: 5000 });
  await pyJson?.stop();
  await pyAuth?.stop();
  await rabbit?.stop();
  pki?.cleanup();
});

test.serial('rpc:// with a Redis broker is refused with ImproperlyConfigured by createClient and createWorker', (t) => {
  const security = serializer(pki);
  const e1 = t.throws(() => createClient({ broker: 'redis://127.0.0.1:6379/0', backend: 'rpc://', security }), {
    instanceOf: ImproperlyConfigured,
  });
  t.regex(e1!.message, /rpc:\/\/ result backend needs an AMQP broker/);
  t.throws(() => createWorker({ broker: 'redis://127.0.0.1:6379/0', backend: 'rpc://', security, tasks }), {
    instanceOf: ImproperlyConfigured,
  });
  // With an AMQP broker both are accepted.
  t.notThrows(() => createClient({ broker: rabbit.url, backend: 'rpc://', security }));
  t.notThrows(() => createWorker({ broker: rabbit.pyUrl, backend: 'rpc://', security, tasks }));
});

test.serial('Node client -> Python worker: success, failure with the Python traceback, NotRegistered, status and ready', async (t) => {
  t.timeout(60000);
  const c = client();
  try {
    const add = await c.sendTask('wire.add', [2, 3], {}, { queue: 'py' });
    const fail = await c.sendTask('wire.fail', ['boom'], {}, { queue: 'py' });
    const unknown = await c.sendTask('wire.nope', [], {}, { queue: 'py' });
    t.is(await add.get({ timeout: 20000 }), 5);
    t.is(await add.status(), 'SUCCESS');
    t.true(await add.ready());
    const err = await t.throwsAsync(fail.get({ timeout: 20000 }), { instanceOf: TaskFailedError });
    t.is(err!.excType, 'ValueError');
    t.is(err!.excModule, 'builtins');
    t.deepEqual(err!.excMessage, ['boom']);
    t.regex(err!.traceback!, /^Traceback \(most recent call last\):\n[\s\S]*raise ValueError\(message\)\nValueError: boom\n$/);
    t.is(await fail.status(), 'FAILURE');
    const nr = await t.throwsAsync(unknown.get({ timeout: 20000 }), { instanceOf: TaskFailedError });
    t.is(nr!.excType, 'NotRegistered');
    // Nothing for an id nobody sent: PENDING, and get() times out.
    const none = c.asyncResult('no-such-task');
    t.is(await none.status(), 'PENDING');
    t.false(await none.ready());
    await t.throwsAsync(none.get({ timeout: 300 }), { instanceOf: ResultTimeoutError });
  } finally {
    await c.close();
  }
});

test.serial('a STARTED state (task_track_started) shows in status(); get() waits past it for the result', async (t) => {
  t.timeout(60000);
  const c = client();
  try {
    const r = await c.sendTask('wire.sleep', [1.5, 'slept'], {}, { queue: 'py' });
    t.is(await until(() => r.status(), 'STARTED', 20000), 'STARTED');
    t.false(await r.ready());
    t.like(await r.getMeta(), { status: 'STARTED', task_id: r.id });
    t.is(await r.get({ timeout: 20000 }), 'slept');
    t.is(await r.status(), 'SUCCESS');
  } finally {
    await c.close();
  }
});

test.serial('Python client (send_task + AsyncResult.get on rpc://) -> Node worker: results and re-raised failures', async (t) => {
  t.timeout(60000);
  const out = await pySend([
    { name: 'wire.add', args: [20, 22], options: { queue: 'node' } },
    { name: 'wire.fail', args: ['from node'], options: { queue: 'node' } },
    { name: 'wire.nope', args: [], options: { queue: 'node' } },
    { name: 'wire.add', args: [1, 2], options: { queue: 'node' } },
    { name: 'wire.add', args: [1, 2], options: { queue: 'node', expires: '2001-01-01T00:00:00+00:00' } },
  ]);
  const [add, fail, unknown, add2, expired] = out.results;
  t.deepEqual(add, { ok: true, value: 42 });
  t.like(fail, { ok: false, type: 'ValueError', module: 'builtins', message: 'from node', status: 'FAILURE' });
  t.regex(String(fail!.traceback), /TaskError|ValueError/);
  t.like(unknown, { ok: false, type: 'NotRegistered', status: 'FAILURE' });
  t.deepEqual(add2, { ok: true, value: 3 });
  t.like(expired, { ok: false, type: 'TaskRevokedError', status: 'REVOKED', message: 'expired' });
});

test.serial('the reply queue is declared as Celery declares it, and close() removes it', async (t) => {
  t.timeout(60000);
  const c = client();
  let closed = false;
  try {
    t.is(await c.asyncResult('x').status(), 'PENDING'); // declares and consumes the reply queue
    t.true(await queueExists(c.oid));
    // Celery's own RPCBackend.binding for this oid declares the same queue: no PRECONDITION_FAILED.
    const same = await runScript<{ ok: boolean; durable: boolean; auto_delete: boolean; exclusive: boolean; expires: number }>(
      'wire_producer.py',
      { op: 'rpc_declare', oid: c.oid },
      { processEnv: amqpEnv(pki, rabbit, 'rpc://') },
    );
    t.like(same, { ok: true, durable: true, auto_delete: true, exclusive: false, expires: 86400 });
    // The check is sensitive: a queue with another x-expires is refused by the broker.
    await withChannel((ch) => ch.assertQueue('other-expires', { durable: true, autoDelete: false, arguments: { 'x-expires': 5000 } }));
    await t.throwsAsync(
      runScript('wire_producer.py', { op: 'rpc_declare', oid: 'other-expires' }, { processEnv: amqpEnv(pki, rabbit, 'rpc://') }),
      { message: /PRECONDITION_FAILED|inequivalent/ },
    );
    await c.close();
    closed = true;
    // auto-delete: the last consumer gone, the broker deletes it.
    t.false(await until(() => queueExists(c.oid), false, 10000));
  } finally {
    if (!closed) await c.close();
  }
});

test.serial('a Node worker sends the same reply message as a Python worker (default exchange, properties, body keys)', async (t) => {
  t.timeout(60000);
  const replyQueue = 'raw-replies';
  await withChannel((ch) => ch.assertQueue(replyQueue, { durable: true, autoDelete: false }));
  const out = await pySend(
    [
      { name: 'wire.add', args: [1, 1], options: { queue: 'py', reply_to: replyQueue } },
      { name: 'wire.add', args: [1, 1], options: { queue: 'node', reply_to: replyQueue } },
    ],
    'json',
    false,
  );
  const [pyId, nodeId] = out.ids as [string, string];
  // The final replies (the Python worker, under task_track_started, sends a STARTED one first).
  const got = await withChannel(async (ch) => {
    const msgs: import('amqplib').GetMessage[] = [];
    const deadline = Date.now() + 20000;
    while (msgs.length < 2 && Date.now() < deadline) {
      const m = await ch.get(replyQueue, { noAck: true });
      if (m && (JSON.parse(m.content.toString()) as { status: string }).status === 'SUCCESS') msgs.push(m);
      else if (!m) await new Promise((r) => setTimeout(r, 50));
    }
    return msgs;
  });
  t.is(got.length, 2);
  const byId = new Map(got.map((m) => [m.properties.correlationId as string, m]));
  const py = byId.get(pyId)!;
  const node = byId.get(nodeId)!;
  t.truthy(py && node);
  const view = (m: import('amqplib').GetMessage) => ({
    exchange: m.fields.exchange,
    routingKey: m.fields.routingKey,
    contentType: m.properties.contentType,
    contentEncoding: m.properties.contentEncoding,
    deliveryMode: m.properties.deliveryMode,
    priority: m.properties.priority,
    replyTo: m.properties.replyTo,
    headers: m.properties.headers,
  });
  t.deepEqual(view(node), view(py));
  t.like(view(node), { exchange: '', routingKey: replyQueue, contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 1 });
  const pyBody = JSON.parse(py.content.toString()) as Record<string, unknown>;
  const nodeBody = JSON.parse(node.content.toString()) as Record<string, unknown>;
  t.deepEqual(Object.keys(nodeBody), Object.keys(pyBody));
  t.like(nodeBody, { status: 'SUCCESS', result: 2, traceback: null, children: [], task_id: nodeId });
  t.like(pyBody, { status: 'SUCCESS', result: 2, task_id: pyId });
});

test.serial('resultPersistent (Celery\'s result_persistent) sends results with delivery mode 2', async (t) => {
  t.timeout(60000);
  const replyQueue = 'raw-persistent';
  await withChannel((ch) => ch.assertQueue(replyQueue, { durable: true, autoDelete: false }));
  const w = nodeWorker('nodepersist', { resultPersistent: true });
  try {
    await w.start();
    const out = await pySend([{ name: 'wire.add', args: [1, 1], options: { queue: 'nodepersist', reply_to: replyQueue } }], 'json', false);
    const msg = await withChannel(async (ch) => {
      const deadline = Date.now() + 20000;
      for (;;) {
        const m = await ch.get(replyQueue, { noAck: true });
        if (m || Date.now() > deadline) return m;
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    t.truthy(msg);
    if (!msg) return;
    t.is(msg.properties.correlationId, out.ids[0]);
    t.is(msg.properties.deliveryMode, 2);
  } finally {
    await w.stop({ timeout: 5000 });
  }
});

test.serial('results nobody asked for are kept up to result_buffer_max; beyond it the oldest are dropped (as Celery\'s buffer)', async (t) => {
  t.timeout(60000);
  const c = client({ backendTransportOptions: { result_buffer_max: 10 } });
  try {
    runs.clear();
    const sent: Awaited<ReturnType<CeleryClient['sendTask']>>[] = [];
    // One at a time, so that the results arrive in order.
    for (let i = 0; i < 30; i++) {
      const r = await c.sendTask('wire.count', [i], {}, { queue: 'node' });
      await until(async () => runs.has(r.id), true, 10000);
      sent.push(r);
    }
    await new Promise((r) => setTimeout(r, 300));
    const metas = [];
    for (const r of sent) metas.push(await r.getMeta());
    t.is(metas.filter((m) => m !== null).length, 10, 'ten kept');
    t.true(metas.slice(0, 10).every((m) => m === null), 'the oldest were dropped');
    t.deepEqual(await Promise.all(sent.slice(25).map((r) => r.get({ timeout: 5000 }))), [25, 26, 27, 28, 29]);
    await t.throwsAsync(sent[0]!.get({ timeout: 200 }), { instanceOf: ResultTimeoutError });
  } finally {
    await c.close();
  }
});

test.serial('Node client -> Node worker over rpc://: 3000 tasks in flight, each result once; results that arrived before get() are kept', async (t) => {
  t.timeout(120000);
  const c = client();
  try {
    const N = 3000;
    runs.clear();
    const sent = await Promise.all(Array.from({ length: N }, (_, i) => c.sendTask('wire.count', [i], {}, { queue: 'node' })));
    // Let every result arrive before anyone asks for it.
    t.is(await until(async () => runs.size, N, 60000), N);
    await new Promise((r) => setTimeout(r, 500));
    const values = await Promise.all(sent.map((r) => r.get({ timeout: 30000 })));
    t.deepEqual(values, Array.from({ length: N }, (_, i) => i));
    t.true([...runs.values()].every((n) => n === 1), 'each task ran once');
    // Asked again: still there.
    t.is(await sent[0]!.get({ timeout: 1000 }), 0);
    t.is(await sent[N - 1]!.status(), 'SUCCESS');
    // And with get() waiting first.
    const more = await Promise.all(Array.from({ length: 500 }, (_, i) => c.sendTask('wire.add', [i, 1], {}, { queue: 'node' })));
    t.deepEqual(await Promise.all(more.map((r) => r.get({ timeout: 30000 }))), Array.from({ length: 500 }, (_, i) => i + 1));
  } finally {
    await c.close();
  }
});

test.serial('a reply queue deleted under the client is declared again before the next task; its result arrives', async (t) => {
  t.timeout(60000);
  const c = client();
  try {
    const first = await c.sendTask('wire.add', [1, 1], {}, { queue: 'node' });
    t.is(await first.get({ timeout: 20000 }), 2);
    await withChannel((ch) => ch.deleteQueue(c.oid));
    // At once: the client declares the queue again before it sends (Celery's on_task_call), and consumes it again.
    const second = await c.sendTask('wire.add', [2, 1], {}, { queue: 'node' });
    t.is(await second.get({ timeout: 20000 }), 3);
    const third = await c.sendTask('wire.add', [3, 1], {}, { queue: 'py' });
    t.is(await third.get({ timeout: 20000 }), 4);
  } finally {
    await c.close();
  }
});

test.serial('auth-serialized results: Node client <- Python worker (result_serializer auth), verified', async (t) => {
  t.timeout(60000);
  const c = client({ resultSerializer: 'auth' });
  try {
    const add = await c.sendTask('wire.add', [5, 6], {}, { queue: 'pyauth' });
    const fail = await c.sendTask('wire.fail', ['signed boom'], {}, { queue: 'pyauth' });
    t.is(await add.get({ timeout: 20000 }), 11);
    const err = await t.throwsAsync(fail.get({ timeout: 20000 }), { instanceOf: TaskFailedError });
    t.is(err!.excType, 'ValueError');
    t.regex(err!.traceback!, /ValueError: signed boom\n$/);
  } finally {
    await c.close();
  }
});

test.serial('auth-serialized results: Python client (result_serializer auth) <- Node worker, and Node -> Node', async (t) => {
  t.timeout(60000);
  const out = await pySend(
    [
      { name: 'wire.add', args: [7, 8], options: { queue: 'nodeauth' } },
      { name: 'wire.fail', args: ['signed'], options: { queue: 'nodeauth' } },
    ],
    'auth',
  );
  t.deepEqual(out.results[0], { ok: true, value: 15 });
  t.like(out.results[1], { ok: false, type: 'ValueError', message: 'signed', status: 'FAILURE' });
  const c = client({ resultSerializer: 'auth' });
  try {
    const r = await c.sendTask('wire.add', [1, 2], {}, { queue: 'nodeauth' });
    t.is(await r.get({ timeout: 20000 }), 3);
  } finally {
    await c.close();
  }
});

test.serial('hostile messages on the reply queue are dropped with a warning; the real result still arrives', async (t) => {
  t.timeout(60000);
  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    if (w.name === 'CelerySignRpcWarning') warnings.push(w.message);
  };
  process.on('warning', onWarning);
  const c = client({ resultSerializer: 'auth' });
  try {
    t.is(await c.asyncResult('x').status(), 'PENDING');
    const id = 'forged-task-id';
    const forged = JSON.stringify({ status: 'SUCCESS', result: 666, traceback: null, children: [], date_done: null, task_id: id });
    const signedOther = serializer(pki, 'wrong-key').serialize(JSON.parse(forged));
    const conn = await rawConnection(rabbit);
    try {
      const ch = await conn.createConfirmChannel();
      const put = (body: string, contentType: string): void => {
        ch.sendToQueue(c.oid, Buffer.from(body), { contentType, contentEncoding: 'utf-8', correlationId: id });
      };
      put(forged, 'application/json'); // unsigned, while results are auth
      put('not base64 at all', 'application/data');
      put(signedOther, 'application/data'); // signed by a key whose certificate does not match
      put(serializer(pki).serialize([1, 2, 3]), 'application/data'); // verifies, but is not a meta
      await ch.waitForConfirms();
    } finally {
      await conn.close().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 500));
    t.is(await c.asyncResult(id).status(), 'PENDING', 'no forged result was taken');
    // Then the genuine one, signed by the worker's key, is.
    const real = await c.sendTask('wire.add', [2, 2], {}, { queue: 'nodeauth' });
    t.is(await real.get({ timeout: 20000 }), 4);
    t.true(warnings.length >= 1, 'dropped replies are reported');
  } finally {
    process.off('warning', onWarning);
    await c.close();
  }
});

test.serial('close() rejects a get() that is waiting', async (t) => {
  t.timeout(30000);
  const c = client();
  const r = await c.sendTask('wire.add', [1, 1], {}, { queue: 'nobody-consumes-this' });
  const waiting = r.get();
  await new Promise((res) => setTimeout(res, 200));
  await c.close();
  await t.throwsAsync(waiting, { code: 'ERR_CLOSED' });
});

// Last: restarts the broker under everything above.
test.serial('rabbitmq-server restarted: the client consumes its reply queue again; tasks that ran afterwards answer get() calls that were waiting', async (t) => {
  t.timeout(120000);
  const c = client();
  let w: Worker | undefined;
  try {
    // Tasks for a queue nobody consumes yet (persistent, in a durable queue: they survive the restart).
    const sent = await Promise.all(Array.from({ length: 50 }, (_, i) => c.sendTask('wire.add', [i, 100], {}, { queue: 'after-restart' })));
    const waiting = Promise.all(sent.map((r) => r.get({ timeout: 100000 })));
    waiting.catch(() => undefined);
    await rabbit.restart();
    // The client reconnects by itself and consumes (and declares, should the auto-delete queue be gone) its reply queue again.
    t.true(await until(() => queueExists(c.oid), true, 60000));
    w = nodeWorker('after-restart');
    await w.start();
    t.deepEqual(await waiting, Array.from({ length: 50 }, (_, i) => i + 100));
    // And new tasks go on as usual.
    const again = await c.sendTask('wire.add', [1, 2], {}, { queue: 'after-restart' });
    t.is(await again.get({ timeout: 30000 }), 3);
  } finally {
    await w?.stop({ timeout: 5000 });
    await c.close();
  }
});
