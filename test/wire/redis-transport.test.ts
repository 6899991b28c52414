/**
 * kombu's Redis layout, checked on a real redis-server and against kombu's own
 * Redis channel: priority lists and their consumption order, the unacked
 * hash and index while a message is held, ack, reject with and without
 * requeue, recovery at stop, restore after the visibility timeout, and the
 * two directions of restore between kombu and this transport.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { createWorker, json, type BrokerConsumer } from 'celery-sign';
import { buildTaskMessage, encodeTaskMessages } from '../../lib/wire/protocol.js';
import { parseEnvelope, redisEnvelope, type RedisTransport } from '../../lib/wire/redis.js';
import { openTransport } from '../../lib/wire/transport.js';
import { makePki, runOracle, serializer, type Pki } from './helpers/celery.js';
import { eventually, startRedis, type RedisServer } from './helpers/redis-server.js';

const SEP = '\x06\x16';
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

let seq = 0;
async function publish(t: RedisTransport, queue: string, priorities: number[]): Promise<string[]> {
  const msgs = priorities.map((priority) => buildTaskMessage('wire.add', [seq++, 0], {}, { queue, priority }));
  await t.publish(await encodeTaskMessages(msgs, serializer(pki)));
  return msgs.map((m) => m.headers.id as string);
}

async function open(options: Record<string, unknown> = {}): Promise<RedisTransport> {
  return (await openTransport(redis.url(), { transportOptions: options })) as RedisTransport;
}

async function receiveAll(c: BrokerConsumer, n: number): Promise<Awaited<ReturnType<BrokerConsumer['receive']>>> {
  const out = [];
  const deadline = Date.now() + 10000;
  while (out.length < n && Date.now() < deadline) out.push(...(await c.receive(n - out.length, 1000)));
  return out;
}

test.serial('priority steps: the lists kombu uses, consumed 0 first, FIFO inside a step', async (t) => {
  const tr = await open();
  try {
    const ids = await publish(tr, 'prio', [9, 0, 5, 3, 1, 7]);
    t.deepEqual(await r.llen('prio'), 2); // 0 and 1
    t.deepEqual(await r.llen(`prio${SEP}3`), 2); // 5 and 3
    t.deepEqual(await r.llen(`prio${SEP}6`), 1); // 7
    t.deepEqual(await r.llen(`prio${SEP}9`), 1); // 9
    t.true((await r.smembers('_kombu.binding.prio')).includes(`prio${SEP}${SEP}prio`));
    const c = await tr.consume(['prio']);
    const got = await receiveAll(c, 6);
    t.deepEqual(
      got.map((d) => d.headers.id),
      [ids[1], ids[4], ids[2], ids[3], ids[5], ids[0]],
    );
    t.deepEqual(got.map((d) => d.priority), [0, 1, 5, 3, 7, 9]);
    await c.ack(got);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('a held message is in unacked and unacked_index until acked', async (t) => {
  const tr = await open();
  try {
    const [id] = await publish(tr, 'held', [0]);
    const c = await tr.consume(['held']);
    const before = Date.now() / 1000;
    const [d] = await receiveAll(c, 1);
    t.truthy(d);
    const tag = d!.deliveryTag;
    t.regex(tag, /^[0-9a-f-]{36}$/);
    const entry = JSON.parse((await r.hget('unacked', tag))!) as [Record<string, unknown>, string, string];
    t.is(entry.length, 3);
    t.is(entry[1], '');
    t.is(entry[2], 'held');
    t.is((entry[0].headers as Record<string, unknown>).id, id);
    const score = Number(await r.zscore('unacked_index', tag));
    t.true(score >= before - 1 && score <= Date.now() / 1000 + 1);
    await c.ack([d!]);
    t.is(await r.hexists('unacked', tag), 0);
    t.is(await r.zscore('unacked_index', tag), null);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('reject: requeue puts it at the far end, marked redelivered; without requeue it is gone', async (t) => {
  const tr = await open();
  try {
    const [a, b] = await publish(tr, 'rej', [0, 0]);
    const c = await tr.consume(['rej']);
    const [da] = await c.receive(1, 1000);
    t.is(da!.headers.id, a);
    await c.reject([da!], true);
    t.is(await r.hlen('unacked'), 0);
    const [db, da2] = await receiveAll(c, 2);
    t.is(db!.headers.id, b); // the requeued one went behind b
    t.is(da2!.headers.id, a);
    t.true(da2!.redelivered);
    t.is(da2!.deliveryTag, da!.deliveryTag); // kombu keeps the tag
    await c.reject([db!, da2!], false);
    t.is(await r.hlen('unacked'), 0);
    t.is(await r.llen('rej'), 0);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('recover (a stopping worker): back at the consuming end, in order', async (t) => {
  const tr = await open();
  try {
    const ids = await publish(tr, 'rec', [0, 0, 0]);
    const c = await tr.consume(['rec']);
    const two = await c.receive(2, 1000);
    t.deepEqual(two.map((d) => d.headers.id), ids.slice(0, 2));
    await c.recover(two);
    t.is(await r.hlen('unacked'), 0);
    const all = await receiveAll(c, 3);
    t.deepEqual(all.map((d) => d.headers.id), ids);
    t.deepEqual(all.map((d) => d.redelivered), [true, true, false]);
    await c.ack(all);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('visibility timeout: an unacked message older than it is restored', async (t) => {
  const tr = await open({ visibility_timeout: 1, unacked_restore_interval: 0 });
  try {
    const [id] = await publish(tr, 'vis', [5]);
    const c = await tr.consume(['vis']);
    const [d] = await c.receive(1, 1000);
    t.is(d!.headers.id, id);
    t.is(await tr.restoreVisible(), 0); // not yet
    await new Promise((res) => setTimeout(res, 1300));
    t.is(await tr.restoreVisible(), 1);
    t.is(await r.hlen('unacked'), 0);
    t.is(await r.llen(`vis${SEP}3`), 1); // back on its priority list
    const [again] = await c.receive(1, 1000);
    t.is(again!.headers.id, id);
    t.true(again!.redelivered);
    await c.ack([again!]);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('kombu restores what this transport holds, and reads what it restores back', async (t) => {
  t.timeout(60000);
  const tr = await open({ unacked_restore_interval: 0 });
  try {
    const [id] = await publish(tr, 'k1', [0]);
    const c = await tr.consume(['k1']);
    const [d] = await c.receive(1, 1000);
    t.is(d!.headers.id, id);
    // A Node worker died holding it: kombu's restore_visible (a Python worker) puts it back.
    await runOracle({ op: 'kombu_restore_visible', url: redis.url(), visibility_timeout: 0 });
    t.is(await r.hlen('unacked'), 0);
    const got = await runOracle<{ message: { headers: Record<string, unknown>; properties: Record<string, unknown>; body: string } }>({
      op: 'kombu_get',
      url: redis.url(),
      queue: 'k1',
      ack: true,
    });
    t.is(got.message.headers.id, id);
    t.is(got.message.headers.redelivered, true);
    t.deepEqual(serializer(pki, 'verify').deserialize(got.message.body), [[seq - 1, 0], {}, { callbacks: null, errbacks: null, chain: null, chord: null }]);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('this transport restores what kombu holds (a Python worker died)', async (t) => {
  t.timeout(60000);
  const tr = await open({ visibility_timeout: 0, unacked_restore_interval: 0 });
  try {
    await runOracle({ op: 'kombu_publish', url: redis.url(), queue: 'k2', body: 'opaque', priority: 6, headers: { task: 'x', id: 'k2-id' } });
    const held = await runOracle<{ message: { delivery_tag: string } }>({ op: 'kombu_get', url: redis.url(), queue: 'k2', ack: false });
    t.is(await r.hexists('unacked', held.message.delivery_tag), 1);
    t.is(await tr.restoreVisible(0), 1);
    t.is(await r.hlen('unacked'), 0);
    const c = await tr.consume(['k2']);
    const [d] = await c.receive(1, 1000);
    t.is(d!.headers.id, 'k2-id');
    t.is(d!.priority, 6);
    t.is(d!.body!.toString(), 'opaque');
    t.true(d!.redelivered);
    await c.ack([d!]);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('a wait takes nothing (BLMOVE of a list onto itself); the batch is popped and recorded atomically', async (t) => {
  const tr = await open();
  try {
    const c = await tr.consume(['wait']);
    const waiting = c.receive(50, 3000);
    await new Promise((res) => setTimeout(res, 200));
    // One blocked connection per priority list of the queue, each in BLMOVE.
    const blocked = ((await r.call('CLIENT', 'LIST')) as string)
      .split('\n')
      .filter((l) => /name=celery-sign-consumer/.test(l) && /flags=\S*b/.test(l));
    t.is(blocked.length, 4);
    t.true(blocked.every((l) => /cmd=blmove/.test(l)));
    await publish(tr, 'wait', [0]);
    const first = await waiting;
    t.is(first.length, 1);
    t.is(await r.hlen('unacked'), 1);
    await publish(tr, 'wait', Array.from({ length: 30 }, () => 0));
    const batch = await c.receive(50, 1000);
    t.is(batch.length, 30);
    t.is(await r.hlen('unacked'), 31);
    await c.ack([...first, ...batch]);
    t.is(await r.hlen('unacked'), 0);
    t.deepEqual(await c.receive(5, 1000), []); // times out empty
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('round robin over queues, and a malformed list item is handed over marked, not recorded', async (t) => {
  const tr = await open();
  try {
    await publish(tr, 'rr-a', [0, 0]);
    await publish(tr, 'rr-b', [0, 0]);
    const c = await tr.consume(['rr-a', 'rr-b']);
    const good = [];
    for (let i = 0; i < 4; i++) good.push(...(await c.receive(1, 1000)));
    t.deepEqual(good.map((d) => d.queue), ['rr-a', 'rr-b', 'rr-a', 'rr-b']);
    await r.lpush('rr-a', 'this is not json');
    await r.lpush('rr-a', json.dumps({ body: 'x', properties: {} }));
    const bad = await receiveAll(c, 2);
    t.is(bad.length, 2);
    t.true(bad.every((d) => d.malformed?.code === 'ERR_MALFORMED_PAYLOAD'));
    t.is(await r.hlen('unacked'), 4); // the four good ones, not the malformed
    await c.ack(good);
    await c.close();
  } finally {
    await tr.close();
  }
});

test.serial('the pop reads a plain envelope without decoding it; an ambiguous one is refused and removed, one with escapes or repeated keys is decoded', async (t) => {
  const tr = await open();
  try {
    const [id] = await publish(tr, 'amb', [0]);
    const item = (await r.lindex('amb', 0))!;
    await r.del('amb');
    const env = json.loads(item) as { headers: Record<string, unknown>; properties: { delivery_tag: string; delivery_info: Record<string, string> } };
    const tag = env.properties.delivery_tag;
    // 1. A decoy "delivery_tag" in the headers and the real key escaped:
    //    read without decoding, it would be recorded under the decoy.
    const decoy = item
      .replace('"delivery_tag": ', '"delivery\\u005ftag": ')
      .replace('"headers": {', '"headers": {"delivery_tag": "decoy-tag", ');
    // 2. An escaped character in the tag itself: decoded, recorded under the real tag.
    const escaped = item.replace(`"delivery_tag": "${tag}"`, `"delivery_tag": "${tag.slice(0, 8)}\\u002d${tag.slice(9)}"`);
    // 3. "routing_key" twice (a header of that name): decoded, recorded under the real tag.
    const repeated = item.replace('"headers": {', '"headers": {"routing_key": "elsewhere", ');
    await r.lpush('amb', decoy, escaped, repeated, item);
    const c = await tr.consume(['amb']);
    const got = await receiveAll(c, 4);
    t.is(got.length, 4);
    const [amb, esc, rep, plain] = got; // RPOP: the first pushed comes first
    t.is(plain!.malformed, undefined);
    t.is(plain!.headers.id, id);
    t.is(rep!.malformed, undefined);
    t.is(esc!.malformed, undefined);
    t.is(esc!.deliveryTag, tag, 'the escaped tag decoded');
    t.is(amb!.malformed?.code, 'ERR_MALFORMED_PAYLOAD');
    t.regex(amb!.malformed!.message, /ambiguous/);
    t.is(amb!.deliveryTag, 'decoy-tag', 'known by the tag it was recorded under');
    const recorded = await r.hgetall('unacked');
    // plain, repeated and escaped share the tag (one entry); the ambiguous one has its own.
    t.deepEqual(Object.keys(recorded).sort(), ['decoy-tag', tag].sort());
    t.deepEqual((json.loads(recorded[tag]!) as unknown[]).slice(1), [env.properties.delivery_info.exchange, env.properties.delivery_info.routing_key]);
    await c.ack([amb!]);
    t.deepEqual(Object.keys(await r.hgetall('unacked')), [tag], 'acking the refused one removes its record');
    await c.ack([plain!]);
    t.is(await r.hlen('unacked'), 0);
    await c.close();
  } finally {
    await tr.close();
    await r.del('unacked', 'unacked_index', 'amb'); // a failure here must not leave records for the next tests
  }
});

test.serial("global_keyprefix: every key prefixed as kombu prefixes it, both ways", async (t) => {
  t.timeout(60000);
  const prefix = 'pfx:';
  const tr = await open({ global_keyprefix: prefix });
  try {
    const [id] = await publish(tr, 'pq', [4]);
    t.is(await r.llen(`${prefix}pq${SEP}3`), 1);
    t.true((await r.smembers(`${prefix}_kombu.binding.pq`)).length > 0);
    const got = await runOracle<{ message: { headers: Record<string, unknown> } | null }>({
      op: 'kombu_get', url: redis.url(), queue: 'pq', ack: false, transport_options: { global_keyprefix: prefix },
    });
    t.is(got.message?.headers.id, id);
    t.is(await r.hlen(`${prefix}unacked`), 1); // kombu's unacked hash, prefixed
    t.is(await tr.restoreVisible(0), 1); // restored by this transport from the prefixed keys
    await runOracle({ op: 'kombu_publish', url: redis.url(), queue: 'pq', body: 'from-kombu', transport_options: { global_keyprefix: prefix } });
    const c = await tr.consume(['pq']);
    const ds = await receiveAll(c, 2);
    t.deepEqual(ds.map((d) => d.headers.id ?? d.body?.toString()).sort(), [id, 'from-kombu'].sort());
    t.is(await r.hlen(`${prefix}unacked`), 2);
    await c.ack(ds);
    t.is(await r.hlen(`${prefix}unacked`), 0);
    await c.close();
  } finally {
    await tr.close();
  }
});

test('a base64 body: canonical or otherwise in the alphabet is decoded; url-safe letters, spaces, a look-alike letter or padding inside are refused', (t) => {
  const envelope = (body: string): string =>
    JSON.stringify({
      body,
      'content-encoding': 'utf-8',
      'content-type': 'application/data',
      headers: { id: 'i', task: 't' },
      properties: { body_encoding: 'base64', delivery_tag: 'tag', delivery_info: { exchange: '', routing_key: 'celery' } },
    });
  const bytes = Buffer.from([0xfb, 0xff, 0x00, 0x41, 0x42]);
  const canonical = bytes.toString('base64'); // '+/8AQUI='
  // Unpadded, and with trailing bits set: not what kombu writes, read as before.
  for (const body of [canonical, canonical.replace(/=+$/, ''), canonical.replace('I=', 'J=')]) {
    const d = parseEnvelope(envelope(body), 'celery', 'tag');
    t.is(d.malformed, undefined, body);
    t.deepEqual(d.body, Buffer.from(body, 'base64'), body);
  }
  t.deepEqual(parseEnvelope(envelope(canonical), 'celery', 'tag').body, bytes);
  const refused = [bytes.toString('base64url'), `${canonical.slice(0, 4)} ${canonical.slice(4)}`, `\u0141${canonical.slice(1)}`, 'AA==AAAA', `${canonical}\n`];
  for (const body of refused) {
    const d = parseEnvelope(envelope(body), 'celery', 'tag');
    t.is(d.malformed?.code, 'ERR_MALFORMED_PAYLOAD', JSON.stringify(body));
    t.is(d.malformed?.message, 'Message body is not base64', JSON.stringify(body));
  }
});

/** Puts malformed entries into kombu's `unacked` hash, each indexed at `score` (newest first in a sweep). */
async function plantBadEntries(prefix: string, score: number): Promise<Map<string, string>> {
  const bad = new Map<string, string>([
    [`${prefix}-not-json`, 'this is not json {'],
    [`${prefix}-object`, '{"not": "a list"}'],
    [`${prefix}-short`, '[{"body": "x", "properties": {}}]'],
    [`${prefix}-payload`, '[1, "", "q"]'],
    [`${prefix}-deep`, '['.repeat(200000) + ']'.repeat(200000)],
  ]);
  for (const [tag, raw] of bad) {
    await r.hset('unacked', tag, raw);
    await r.zadd('unacked_index', score, tag);
  }
  return bad;
}

test.serial('restore sweep: each malformed unacked entry is reported and quarantined, every other one restored', async (t) => {
  const tr = await open({ unacked_restore_interval: 0 });
  try {
    const ids = await publish(tr, 'bad7', [0, 0, 6]);
    const c = await tr.consume(['bad7']);
    const held = await receiveAll(c, 3);
    t.is(held.length, 3);
    // Newer than the held ones: a sweep (newest first) meets them first.
    const bad = await plantBadEntries('bad7', Date.now() / 1000);
    const errors: unknown[] = [];
    const n = await tr.restoreVisible(0, { onError: (e) => errors.push(e) });
    t.is(n, 3);
    t.is(errors.length, bad.size);
    for (const e of errors as { code: string; deliveryTag: string; message: string }[]) {
      t.is(e.code, 'ERR_BROKER');
      t.true(bad.has(e.deliveryTag));
      t.true(e.message.includes(e.deliveryTag));
    }
    t.deepEqual((errors as { deliveryTag: string }[]).map((e) => e.deliveryTag).sort(), [...bad.keys()].sort());
    t.is(await r.hlen('unacked'), 0);
    t.is(await r.zcard('unacked_index'), 0);
    // Kept aside as they were, for whoever investigates.
    t.deepEqual(await r.hgetall('unacked_quarantine'), Object.fromEntries(bad));
    const again = await receiveAll(c, 3);
    t.deepEqual(again.map((d) => d.headers.id).sort(), [...ids].sort());
    t.true(again.every((d) => d.redelivered));
    await c.ack(again);
    t.is(await tr.restoreVisible(0, { onError: (e) => errors.push(e) }), 0);
    t.is(errors.length, bad.size); // reported once
    await c.close();
  } finally {
    await r.del('unacked_quarantine');
    await tr.close();
  }
});

test.serial("restore sweep of a worker: malformed entries become 'error' events, the dead worker's tasks run", async (t) => {
  t.timeout(30000);
  const tr = await open();
  const errors: unknown[] = [];
  const ran: number[] = [];
  let worker: ReturnType<typeof createWorker> | undefined;
  try {
    await publish(tr, 'bad7w', [0, 0]);
    // A worker died holding both: they sit in unacked, delivered 60 s ago.
    const dead = await tr.consume(['bad7w']);
    const held = await receiveAll(dead, 2);
    t.is(held.length, 2);
    await dead.close();
    for (const d of held) await r.zadd('unacked_index', Date.now() / 1000 - 60, d.deliveryTag);
    const bad = await plantBadEntries('bad7w', Date.now() / 1000 - 30);
    worker = createWorker({
      broker: redis.url(),
      security: serializer(pki),
      queues: ['bad7w'],
      visibilityTimeout: 10,
      tasks: { 'wire.add': ([x]) => void ran.push(Number(x)) },
    });
    worker.on('error', (e) => errors.push(e));
    await worker.start();
    const deadline = Date.now() + 10000;
    while ((ran.length < 2 || errors.length < bad.size) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    t.is(ran.length, 2);
    t.deepEqual((errors as { deliveryTag: string }[]).map((e) => e.deliveryTag).sort(), [...bad.keys()].sort());
    t.is(await r.hlen('unacked_quarantine'), bad.size);
  } finally {
    await worker?.stop({ timeout: 5000 });
    await r.del('unacked_quarantine');
    await tr.close();
  }
});

/** Records `n` opaque messages for `queue` in unacked, delivered at `score` (a dead worker's). */
async function plantEntries(queue: string, n: number, score: number): Promise<void> {
  const pipe = r.pipeline();
  for (let i = 0; i < n; i++) {
    const tag = `${queue}-${i}`;
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
    pipe.hset('unacked', tag, `[${env}, "", ${JSON.stringify(queue)}]`);
    pipe.zadd('unacked_index', score, tag);
  }
  await pipe.exec();
}

test.serial('a transport closed during a restore sweep stops it and releases the restore lock', async (t) => {
  const N = 3000;
  await plantEntries('closeq', N, Date.now() / 1000 - 100);
  const tr = await open({ unacked_restore_interval: 0 });
  const sweep = tr.restoreVisible(0);
  t.is(await eventually(() => r.exists('unacked_mutex'), 1), 1);
  await tr.close();
  const n = await sweep;
  t.is(await r.exists('unacked_mutex'), 0, 'released, not left to expire');
  t.true(n < N, `stopped early (${n} of ${N})`);
  const tr2 = await open({ unacked_restore_interval: 0 });
  try {
    t.is(n + (await tr2.restoreVisible(0)), N);
    t.is(await r.llen('closeq'), N);
    t.is(await r.hlen('unacked'), 0);
  } finally {
    await r.del('closeq');
    await tr2.close();
  }
});
