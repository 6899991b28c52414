/**
 * The AMQP 0-9-1 transport against a real rabbitmq-server and kombu's own
 * pyamqp transport: URLs read as kombu reads them; a published task is what
 * kombu reads (properties, application headers, body that Celery verifies);
 * what kombu publishes reaches the Node consumer as kombu wrote it; queues
 * declared as Celery declares them, so that either side can declare first
 * (priority queues too); basic.qos prefetch; ack, reject with and without
 * requeue, recover and close; publisher confirms; a header amqplib cannot read
 * does not stop the consumer.
 */
import test from 'ava';
import {
  ImproperlyConfigured,
  WireError,
  type BrokerConsumer,
  type BrokerTransport,
  type Delivery,
  type OutgoingMessage,
} from 'celery-sign';
import { amqpOptionsFromUrl } from '../../lib/wire/amqp.js';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { openTransport } from '../../lib/wire/transport.js';
import { amqpOracle, amqpProducer, queueDepth, until } from './helpers/amqp.js';
import { makePki, serializer, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let rabbit: RabbitServer;
let redis: RedisServer;
let pki: Pki;
let transport: BrokerTransport;

test.before(async () => {
  [rabbit, redis] = await Promise.all([startRabbit(), startRedis()]);
  pki = makePki();
  transport = await openTransport(rabbit.url);
});

test.after.always(async () => {
  await transport?.close();
  await rabbit?.stop();
  await redis?.stop();
  pki?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

async function messages(queue: string, n: number, extra: Parameters<typeof buildTaskMessage>[3] = {}): Promise<OutgoingMessage[]> {
  return encodeTaskMessages(
    Array.from({ length: n }, (_, i) => buildTaskMessage('wire.add', [i, 1], {}, { queue, id: `${queue}-${i}`, ...extra })),
    serializer(pki),
  );
}

/** Everything a consumer is handed within `ms`. */
async function drain(c: BrokerConsumer, ms = 500, max = 1000): Promise<Delivery[]> {
  const out: Delivery[] = [];
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) out.push(...(await c.receive(max, Math.max(1, deadline - Date.now()))));
  return out;
}

interface PyMessage {
  headers: Record<string, unknown>;
  properties: Record<string, unknown>;
  delivery_info: Record<string, unknown>;
  content_type: string;
  content_encoding: string;
  body: string;
  decoded?: unknown;
  decode_error?: string;
}

test('URLs are read as kombu reads them', (t) => {
  t.like(amqpOptionsFromUrl('amqp://rabbit'), { protocol: 'amqp', hostname: 'rabbit', port: 5672, username: 'guest', password: 'guest', vhost: '/' });
  t.like(amqpOptionsFromUrl('pyamqp://u:p%40ss@h:1234//'), { hostname: 'h', port: 1234, username: 'u', password: 'p@ss', vhost: '/' });
  t.like(amqpOptionsFromUrl('amqp://h/'), { vhost: '/' });
  t.like(amqpOptionsFromUrl('amqp://h/prod'), { vhost: 'prod' });
  t.like(amqpOptionsFromUrl('amqp://h/%2Fprod'), { vhost: '/prod' });
  t.like(amqpOptionsFromUrl('amqp://h/50%25'), { vhost: '50%25' }); // the vhost '50%', escaped: amqplib unescapes it once more
  t.like(amqpOptionsFromUrl('amqps://h'), { protocol: 'amqps', port: 5671 });
  t.like(amqpOptionsFromUrl('amqp://h?heartbeat=10'), { heartbeat: 10 });
  t.throws(() => amqpOptionsFromUrl('redis://h'), { instanceOf: ImproperlyConfigured });
});

test.serial('a published task is what kombu reads: properties, application headers, a body Celery verifies', async (t) => {
  t.timeout(60000);
  const [m] = await encodeTaskMessages(
    [
      buildTaskMessage('wire.echo', [1, 'two', { three: [3, null] }], { k: 1.5, s: 'ünï', big: 2 ** 40 }, {
        queue: 'props',
        countdown: 10,
        expires: 60,
        priority: 3,
        timeLimit: 30,
        softTimeLimit: 20.5,
        rootId: 'root',
        headers: { x_custom: 'v', x_float: 1.5, x_big: 2 ** 40, x_neg: -70000, x_list: [1, 'a', null, true], x_dict: { a: { b: [] } } },
      }, { replyTo: 'reply-oid' }),
    ],
    serializer(pki),
  );
  await transport.publish([m!]);
  const { message } = await amqpOracle<{ message: PyMessage }>(pki, rabbit, redis.url(), { op: 'get', queue: 'props', ack: true, decode: true });
  t.is(message.content_type, 'application/data');
  t.is(message.content_encoding, 'utf-8');
  t.is(message.body, m!.body);
  t.deepEqual(message.headers, JSON.parse(JSON.stringify(m!.headers)));
  t.like(message.properties, {
    delivery_mode: 2,
    priority: 3,
    correlation_id: m!.headers.id,
    reply_to: 'reply-oid',
    expiration: '60000',
  });
  t.deepEqual(message.delivery_info, { exchange: '', routing_key: 'props', redelivered: false });
  t.deepEqual(message.decoded, [
    [1, 'two', { three: [3, null] }],
    { k: 1.5, s: 'ünï', big: 2 ** 40 },
    { callbacks: null, errbacks: null, chain: null, chord: null },
  ]);
});

test.serial('what Celery publishes reaches the Node consumer as kombu wrote it, and verifies', async (t) => {
  t.timeout(60000);
  const sent = await amqpProducer(pki, rabbit, redis.url(), {
    op: 'send',
    tasks: [{ name: 'wire.echo', args: [1, 'ü'], kwargs: { k: [1.5] }, options: { queue: 'fromkombu', priority: 4, countdown: 5, expires: 30, headers: { x_custom: 'v', x_big: 2 ** 40 } } }],
  });
  await amqpOracle(pki, rabbit, redis.url(), { op: 'publish', queue: 'fromkombu', body: 'next', headers: { id: 'after' } });
  const c = await transport.consume(['fromkombu'], { prefetch: 10 });
  try {
    const got = await drain(c, 800);
    t.is(got.length, 2, 'the 64-bit header did not stop the consumer');
    const d = got[0]!;
    t.is(d.contentType, 'application/data');
    t.is(d.contentEncoding, 'utf-8');
    t.is(d.queue, 'fromkombu');
    t.is(d.routingKey, 'fromkombu');
    t.is(d.priority, 4);
    t.false(d.redelivered);
    const h = d.headers;
    t.like(h, { lang: 'py', task: 'wire.echo', id: sent.ids[0], root_id: sent.ids[0], parent_id: null, group: null, retries: 0, x_custom: 'v', x_big: 2 ** 40 });
    t.deepEqual(h.timelimit, [null, null]);
    t.regex(String(h.eta), /\+00:00$/);
    t.regex(String(h.expires), /\+00:00$/);
    t.like(d.properties, { correlation_id: sent.ids[0], delivery_mode: 2, priority: 4 });
    t.deepEqual(serializer(pki, 'verify').deserialize(d.body!), [[1, 'ü'], { k: [1.5] }, { callbacks: null, errbacks: null, chain: null, chord: null }]);
    t.like(got[1]!.headers, { id: 'after' });
    await c.ack(got);
  } finally {
    await c.close();
  }
  t.is(await queueDepth(rabbit, 'fromkombu'), 0);
});

test.serial('queues are declared as Celery declares them: either side may declare first, priority queues too', async (t) => {
  t.timeout(90000);
  const env = (req: object) => amqpOracle<{ ok: boolean; queue_arguments: unknown }>(pki, rabbit, redis.url(), req);
  // Celery first, then Node consumes and publishes.
  await env({ op: 'declare', queue: 'shared-a' });
  const a = await transport.consume(['shared-a'], { prefetch: 4 });
  await transport.publish(await messages('shared-a', 2));
  const gotA = await drain(a, 500);
  t.is(gotA.length, 2);
  await a.ack(gotA);
  await a.close();
  // Node first, then Celery's declaration (same properties, no PRECONDITION_FAILED).
  await transport.publish(await messages('shared-b', 1));
  t.deepEqual(await env({ op: 'declare', queue: 'shared-b' }), { ok: true, queue_arguments: null });
  t.is(await queueDepth(rabbit, 'shared-b'), 1);
  // A priority queue declared by Celery (task_queue_max_priority = 10) is used as it is by a default transport.
  t.deepEqual(await env({ op: 'declare', queue: 'prio-py', max_priority: 10 }), { ok: true, queue_arguments: { 'x-max-priority': 10 } });
  const plain = await openTransport(rabbit.url);
  try {
    await plain.publish(await messages('prio-py', 1));
    const c = await plain.consume(['prio-py'], { prefetch: 4 });
    const got = await drain(c, 500);
    t.is(got.length, 1);
    await c.ack(got);
    await c.close();
  } finally {
    await plain.close();
  }
  // queue_arguments: declare as Celery with task_queue_max_priority does; RabbitMQ then orders by priority.
  const prio = await openTransport(rabbit.url, { transportOptions: { queue_arguments: { 'x-max-priority': 10 } } });
  try {
    const ms = await encodeTaskMessages(
      [1, 9, 5].map((p) => buildTaskMessage('wire.add', [p], {}, { queue: 'prio-node', priority: p, id: `p${p}` })),
      serializer(pki),
    );
    await prio.publish(ms);
    t.deepEqual(await env({ op: 'declare', queue: 'prio-node', max_priority: 10 }), { ok: true, queue_arguments: { 'x-max-priority': 10 } });
    const c = await prio.consume(['prio-node'], { prefetch: 10 });
    const got = await drain(c, 500);
    t.deepEqual(got.map((d) => d.headers.id), ['p9', 'p5', 'p1']);
    await c.ack(got);
    await c.close();
  } finally {
    await prio.close();
  }
});

test.serial('basic.qos: at most the prefetch count is held until acknowledged; setPrefetch raises it', async (t) => {
  t.timeout(60000);
  await transport.publish(await messages('qos', 30));
  const c = await transport.consume(['qos'], { prefetch: 10 });
  try {
    const first = await drain(c, 600);
    t.is(first.length, 10);
    await c.ack(first.slice(0, 5));
    const second = await drain(c, 600);
    t.is(second.length, 5);
    await c.setPrefetch!(20);
    const third = await drain(c, 600);
    t.is(third.length, 10, 'the window grew by 10');
    const all = [...first.slice(5), ...second, ...third];
    await c.ack(all);
    const rest = await drain(c, 600);
    t.is(rest.length, 5);
    await c.ack(rest);
    t.deepEqual(new Set([...first, ...second, ...third, ...rest].map((d) => d.headers.id)).size, 30);
  } finally {
    await c.close();
  }
});

test.serial('ack, reject (requeue or not), recover, close: each message ends where kombu would put it', async (t) => {
  t.timeout(60000);
  await transport.publish(await messages('acks', 4));
  const c = await transport.consume(['acks'], { prefetch: 10 });
  const byId = (ds: Delivery[]) => new Map(ds.map((d) => [d.headers.id as string, d]));
  let got = byId(await drain(c, 500));
  t.is(got.size, 4);
  await c.ack([got.get('acks-0')!]);
  await c.reject([got.get('acks-1')!], true);
  await c.reject([got.get('acks-2')!], false);
  await c.recover([got.get('acks-3')!]);
  got = byId(await drain(c, 500));
  t.deepEqual([...got.keys()].sort(), ['acks-1', 'acks-3']);
  t.true(got.get('acks-1')!.redelivered, 'requeued: marked redelivered');
  t.true(got.get('acks-3')!.redelivered);
  // Closing gives back what is held but not acknowledged.
  await c.close();
  t.is(await until(() => queueDepth(rabbit, 'acks'), 2), 2);
  // Close while deliveries wait in the buffer, never handed out: they go back too.
  const c2 = await transport.consume(['acks'], { prefetch: 10 });
  await sleep(300);
  await c2.close();
  t.is(await until(() => queueDepth(rabbit, 'acks'), 2), 2);
  const c3 = await transport.consume(['acks'], { prefetch: 10 });
  const last = await drain(c3, 500);
  t.deepEqual(last.map((d) => d.headers.id).sort(), ['acks-1', 'acks-3']);
  await c3.ack(last);
  await c3.close();
  t.is(await queueDepth(rabbit, 'acks'), 0);
});

test.serial('publisher confirms: publish resolves once the broker holds every message; a closed transport refuses', async (t) => {
  t.timeout(60000);
  const t2 = await openTransport(rabbit.url);
  await t2.publish(await messages('confirms', 2000));
  t.is(await queueDepth(rabbit, 'confirms'), 2000, 'all confirmed messages are in the queue');
  await t2.close();
  const err = await t.throwsAsync(t2.publish(await messages('confirms', 1)), { instanceOf: WireError });
  t.is(err!.code, 'ERR_CLOSED');
  const bad = await t.throwsAsync(openTransport('amqp://guest:guest@127.0.0.1:1//', { connectTimeout: 2000 }), { instanceOf: WireError });
  t.is(bad!.code, 'ERR_BROKER');
});

test.serial('a header table amqplib cannot read is read by the tolerant codec, or marks the message malformed', async (t) => {
  // amqplib's frame reader, as the transport left it (the prototype is shared by every connection).
  const mod = (await import('amqplib/lib/connection.js' as string)) as {
    default: { Connection: { prototype: { recvFrame(this: object): { fields: { headers: Record<string | symbol, unknown> } } } } };
  };
  const recvFrame = mod.default.Connection.prototype.recvFrame;
  const frame = (table: Buffer): Buffer => {
    const payload = Buffer.alloc(18 + table.length);
    payload.writeUInt16BE(60, 0); // class basic
    payload.writeUInt16BE(0x2000, 12); // property flags: headers only
    payload.writeUInt32BE(table.length, 14);
    table.copy(payload, 18);
    const f = Buffer.alloc(8 + payload.length);
    f.writeUInt8(2, 0); // content header frame
    f.writeUInt16BE(1, 1);
    f.writeUInt32BE(payload.length, 3);
    payload.copy(f, 7);
    f.writeUInt8(0xce, 7 + payload.length);
    return f;
  };
  const read = (table: Buffer) => recvFrame.call({ rest: frame(table), stream: { read: () => null }, recvSinceLastCheck: false }).fields.headers;
  const big = Buffer.concat([Buffer.from([1]), Buffer.from('xL'), Buffer.alloc(8), Buffer.from([1]), Buffer.from('yS'), Buffer.from([0, 0, 0, 2]), Buffer.from('ok')]);
  big.writeBigInt64BE(-(2n ** 62n), 3);
  t.deepEqual(read(big), { x: -(2n ** 62n), y: 'ok' });
  const unknown = Buffer.concat([Buffer.from([1]), Buffer.from('xZ'), Buffer.alloc(4)]);
  t.regex(String(read(unknown)[Symbol.for('celery-sign.undecodableHeaders')]), /unknown field type tag "Z"/);
});
