/**
 * The task message, byte for byte against the real Celery: the envelope a
 * Node producer LPUSHes is the one Celery's `app.send_task` (kombu's Redis
 * transport) LPUSHes for the same task, header for header, in the same key
 * order and JSON formatting; argsrepr/kwargsrepr are Celery's saferepr; dates
 * are Python's isoformat.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { json, type TaskOptions } from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages, isoformat } from '../../lib/wire/protocol.js';
import { queueForPriority, redisEnvelope } from '../../lib/wire/redis.js';
import { saferepr } from '../../lib/wire/saferepr.js';
import { makePki, runOracle, runProducer, serializer, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

let redis: RedisServer;
let pki: Pki;
let r: Redis;

test.before(async () => {
  redis = await startRedis();
  pki = makePki();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
});

test.after.always(async () => {
  r?.disconnect();
  await redis?.stop();
  pki?.cleanup();
});

const REPR_VALUES: unknown[] = [
  [],
  [2, 3],
  [1, 'two', { three: 3 }],
  ["it's", 'say "hi"', 'both \' and "', 'tab\there', 'new\nline', 'ünïcödé ☃', '𝄞 astral'],
  [null, true, false, 0, -1, 12345678901234, 1.5, -0.25, 1e-7, 1.5e300],
  { a: 1, b: [1, 2, { c: [3, [4, [5, [6]]]] }] },
  [[[[['deep']]]]],
  [{ $bytes: Buffer.from('bytes').toString('base64') }],
  ['x'.repeat(2000)],
  ['word '.repeat(300)],
  Array.from({ length: 400 }, (_, i) => i * 1000),
  { long: 'y'.repeat(1100), after: 1 },
  Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key${i}`, [i, `v${i}`]])),
  [{}, [], ''],
];

function toJs(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(toJs);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.$bytes === 'string') return Buffer.from(o.$bytes, 'base64');
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, toJs(x)]));
  }
  return v;
}

test('argsrepr/kwargsrepr: Celery saferepr(v, 1024, maxlevels=3), exactly', async (t) => {
  t.timeout(60000);
  const py = await runOracle<{ results: string[] }>({ op: 'saferepr', items: REPR_VALUES });
  REPR_VALUES.forEach((v, i) => {
    t.is(saferepr(toJs(v), 1024, 3), py.results[i]!, `value ${i}`);
  });
});

test('eta/expires: Python isoformat of aware UTC datetimes', async (t) => {
  const ms = [0, 1, 999, 1700000000000, 1700000000123, 4102444800000, 253402300799999];
  const py = await runOracle<{ results: string[] }>({ op: 'isoformat', items: ms });
  ms.forEach((m, i) => t.is(isoformat(new Date(m)), py.results[i]!));
});

test('priority lists are named as kombu names them', (t) => {
  const sep = '\x06\x16';
  const want = ['q', 'q', 'q', `q${sep}3`, `q${sep}3`, `q${sep}3`, `q${sep}6`, `q${sep}6`, `q${sep}6`, `q${sep}9`];
  for (let p = 0; p <= 9; p++) t.is(queueForPriority('q', p), want[p]!);
});

interface Case {
  label: string;
  name: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  py: Record<string, unknown>;
  node: TaskOptions;
}

function cases(tag: string): Case[] {
  const id = (n: number): string => `00000000-0000-4000-8000-${tag}${String(n).padStart(12 - tag.length, '0')}`;
  const replyTo = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
  return [
    {
      label: 'defaults',
      name: 'wire.add',
      args: [2, 3],
      kwargs: {},
      py: { task_id: id(1), reply_to: replyTo, queue: `proto-${tag}-a` },
      node: { id: id(1), replyTo, queue: `proto-${tag}-a` },
    },
    {
      label: 'every option',
      name: 'wire.echo',
      args: [1, 'two', { three: [3, null] }],
      kwargs: { a: [1, { b: null }], c: "quote's", d: 'ünï' },
      py: {
        task_id: id(2),
        reply_to: replyTo,
        queue: `proto-${tag}-b`,
        eta: '2030-01-02T03:04:05.123456+00:00',
        expires: '2031-05-06T07:08:09+00:00',
        priority: 7,
        headers: { x_custom: 'v', x_num: 1 },
        time_limit: 30,
        soft_time_limit: 20,
        retries: 2,
        root_id: id(9),
        parent_id: id(8),
        group_id: id(7),
        group_index: 3,
        shadow: 'shadow-name',
        ignore_result: true,
      },
      node: {
        id: id(2),
        replyTo,
        queue: `proto-${tag}-b`,
        eta: '2030-01-02T03:04:05.123456+00:00',
        expires: '2031-05-06T07:08:09+00:00',
        priority: 7,
        headers: { x_custom: 'v', x_num: 1 },
        timeLimit: 30,
        softTimeLimit: 20,
        retries: 2,
        rootId: id(9),
        parentId: id(8),
        groupId: id(7),
        groupIndex: 3,
        shadow: 'shadow-name',
        ignoreResult: true,
      },
    },
    {
      label: 'priority 4, kwargs only',
      name: 'wire.echo',
      args: [],
      kwargs: { only: 'kwargs' },
      py: { task_id: id(3), reply_to: replyTo, queue: `proto-${tag}-c`, priority: 4 },
      node: { id: id(3), replyTo, queue: `proto-${tag}-c`, priority: 4 },
    },
  ];
}

function normalize(text: string): { norm: string; body: string; expiration: string | undefined; origin: string } {
  const env = JSON.parse(text) as {
    body: string;
    headers: Record<string, unknown>;
    properties: Record<string, unknown>;
  };
  const body = Buffer.from(env.body, 'base64').toString('latin1');
  const expiration = env.properties.expiration as string | undefined;
  const origin = env.headers.origin as string;
  env.body = 'BODY';
  env.properties.delivery_tag = 'TAG';
  env.headers.origin = 'ORIGIN';
  if (expiration !== undefined) env.properties.expiration = 'EXP';
  return { norm: json.dumps(env), body, expiration, origin };
}

for (const env of ['current', 'celery54'] as const) {
  test.serial(`the Redis envelope equals what Celery ${env === 'current' ? '5.7' : '5.4'}'s send_task LPUSHes`, async (t) => {
    t.timeout(60000);
    const cs = cases(env === 'current' ? 'a' : 'b');
    await runProducer(pki, redis.url(), { op: 'send', tasks: cs.map((c) => ({ name: c.name, args: c.args, kwargs: c.kwargs, options: c.py })) }, { env });
    const sec = serializer(pki, 'good', env === 'current' ? 'celery-5.5' : 'celery-5.4');
    const defaults = { ignoreResult: env === 'current' ? null : false }; // what the client does per wire format
    const messages = cs.map((c) => buildTaskMessage(c.name, c.args, c.kwargs, c.node, defaults));
    const encoded = await encodeTaskMessages(messages, sec);
    for (const [i, c] of cs.entries()) {
      const m = encoded[i]!;
      const list = queueForPriority(m.queue, m.properties.priority);
      const items = await r.lrange(list, 0, -1);
      t.is(items.length, 1, `${c.label}: Celery pushed one message to ${JSON.stringify(list)}`);
      const pyText = items[0]!;
      // kombu's JSON formatting is the package's json.dumps: a round trip keeps every byte.
      t.is(json.dumps(JSON.parse(pyText)), pyText, `${c.label}: kombu JSON formatting`);
      const py = normalize(pyText);
      const node = normalize(redisEnvelope(m, 'whatever'));
      t.is(node.norm, py.norm, `${c.label}: envelope`);
      t.regex(node.origin, /^gen\d+@.+$/);
      t.regex(py.origin, /^gen\d+@.+$/);
      if (py.expiration !== undefined || node.expiration !== undefined) {
        t.true(Math.abs(Number(py.expiration) - Number(node.expiration)) < 10000, `${c.label}: expiration ${py.expiration} ~ ${node.expiration}`);
      }
      // Both bodies verify and carry the same [args, kwargs, embed].
      const verify = serializer(pki, 'verify');
      t.deepEqual(verify.deserialize(node.body), verify.deserialize(py.body), `${c.label}: body`);
    }
  });
}
