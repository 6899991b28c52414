/**
 * kombu's Redis transport (`kombu.transport.redis`) and Celery's Redis result
 * backend (`celery.backends.redis`), on ioredis (an optional peer dependency,
 * loaded only when a `redis://` URL is used).
 *
 * Layout on the broker, as kombu keeps it:
 * - a queue is a list; messages are `LPUSH`ed and consumed from the right
 *   (`BRPOP`); priority steps `[0, 3, 6, 9]` live in the lists `queue`,
 *   `queue\x06\x163`, `queue\x06\x166`, `queue\x06\x169` (0 is consumed first);
 * - a message is the JSON envelope `{"body", "content-encoding",
 *   "content-type", "headers", "properties": {"correlation_id", "reply_to",
 *   "delivery_mode", ["expiration"], "delivery_info": {"exchange",
 *   "routing_key"}, "priority", "body_encoding": "base64", "delivery_tag"}}`
 *   with the body base64'd once more and a fresh UUID `delivery_tag`;
 * - a delivered message waits in the hash `unacked` (tag -> `[message,
 *   exchange, routing_key]`) and the sorted set `unacked_index` (tag -> time of
 *   delivery) until it is acknowledged; one older than the visibility timeout
 *   is put back on its queue (`restore_visible`, under the `unacked_mutex`
 *   lock), and a worker that stops puts back what it did not start;
 * - queue bindings are the sets `_kombu.binding.<exchange>` with members
 *   `routing_key\x06\x16pattern\x06\x16queue` (kombu 5.7 also
 *   `_kombu.binding_permanent.<exchange>`).
 *
 * One deliberate difference: a message leaves its list only inside a Lua
 * script that pops it and records it in `unacked`/`unacked_index` in the same
 * atomic step, so at no moment is a message in neither its queue nor the
 * unacked hash, whenever the consumer dies. kombu pops with `BRPOP` and
 * records in a second round trip: a worker killed between the two loses the
 * message. To wait on empty lists without popping, a consumer holds one
 * connection per list (priority steps x queues) blocked in
 * `BLMOVE list list RIGHT RIGHT` (Redis >= 6.2), which moves the last item
 * onto itself: the list is unchanged, nothing is taken, and the script runs
 * when one returns. A server without `BLMOVE` (Redis < 6.2, or the command
 * renamed or not permitted) is detected at the first wait: the consumer then
 * polls with the script every 100 ms (a process warning says so once).
 *
 * The restore sweep (`restore_visible`) holds `unacked_mutex` with a short
 * lease (5 s, or `unacked_mutex_expire` when smaller) that it renews while it
 * works, up to `unacked_mutex_expire` in all: a worker killed in a sweep
 * blocks the others' sweeps for seconds, not for the whole expiry. An entry
 * of `unacked` that is not kombu's `[message, exchange, routing_key]` is moved
 * to the hash `unacked_quarantine` (option `unacked_quarantine_key`; `''`
 * drops it), reported as an error, and the sweep goes on with the others.
 *
 * Results: `celery-task-meta-<id>`, written with `SETEX` (Celery's
 * `result_expires`, one day by default) and `PUBLISH`ed on the channel of the
 * same name; never written over a stored `SUCCESS`.
 *
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { Redis as RedisClient, RedisOptions } from 'ioredis';
import { ImproperlyConfigured, SecurityError } from '../errors.js';
import { dumps as kombuDumps } from '../json/dumps.js';
import { loads as kombuLoads } from '../json/loads.js';
import { WireError } from './errors.js';
import type { BroadcastListener, BroadcastSpec } from './control.js';
import { TASK_KEY_PREFIX } from './results.js';
import { diagnoseTls, mayHideAlert, redisTls, tlsFailure } from './tls.js';
import { isSentinelUrl, notReplicated, replicationWait, sentinelOptions, type ReplicationWait } from './sentinel.js';
import {
  registerBackend,
  registerTransport,
  type BackendOptions,
  type BrokerConsumer,
  type BrokerTransport,
  type ChordJoin,
  type ChordPart,
  type ConsumeOptions,
  type Delivery,
  type EventMessage,
  type OutgoingMessage,
  type ResultBackend,
  type StoredResult,
  type TransportOptions,
} from './transport.js';

/** kombu's `PRIORITY_STEPS`. */
export const PRIORITY_STEPS: readonly number[] = [0, 3, 6, 9];
/** kombu's separator in priority list names and binding members (`Channel.sep`). */
export const SEP = '\x06\x16';

type RedisCtor = new (options: RedisOptions) => RedisClient;
let ctorPromise: Promise<RedisCtor> | undefined;

/** Loads ioredis on first use. */
async function loadRedis(): Promise<RedisCtor> {
  ctorPromise ??= import('ioredis').then(
    (mod) => {
      const m = mod as unknown as { Redis?: RedisCtor; default?: RedisCtor | { Redis?: RedisCtor } };
      const ctor = m.Redis ?? (typeof m.default === 'function' ? m.default : m.default?.Redis);
      if (typeof ctor !== 'function') throw new Error('ioredis does not export Redis');
      return ctor;
    },
    (err: unknown) => {
      ctorPromise = undefined;
      throw new ImproperlyConfigured(
        "A redis:// broker or backend needs the 'ioredis' package (version 5): npm install ioredis",
        { cause: err },
      );
    },
  );
  return ctorPromise;
}

/** Connection options from a kombu/Celery Redis URL: `redis://[:password@]host[:port][/db]`, `rediss://`, `redis+socket:///path?virtual_host=db`. */
function redisOptionsFromUrl(url: string): RedisOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ImproperlyConfigured('Not a Redis URL', { cause: err });
  }
  const scheme = u.protocol.replace(/:$/, '').toLowerCase();
  const opts: RedisOptions = {};
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.password) opts.password = decodeURIComponent(u.password);
  if (scheme === 'redis+socket' || scheme === 'unix') {
    opts.path = decodeURIComponent(u.pathname);
    const vh = u.searchParams.get('virtual_host') ?? u.searchParams.get('db');
    if (vh) opts.db = Number(vh);
  } else if (scheme === 'redis' || scheme === 'rediss') {
    opts.host = u.hostname.replace(/^\[|\]$/g, '') || 'localhost';
    opts.port = u.port ? Number(u.port) : 6379;
    const db = u.pathname.replace(/^\//, '');
    if (db !== '') {
      if (!/^\d+$/.test(db)) throw new ImproperlyConfigured('The Redis database must be a number in the URL path');
      opts.db = Number(db);
    }
    if (scheme === 'rediss') opts.tls = {};
  } else {
    throw new ImproperlyConfigured(`Not a Redis URL scheme: ${scheme}`);
  }
  return opts;
}

/**
 * The connection options of a broker or backend URL: `sentinel://` (one or
 * several joined with `;`) through the sentinels named (`./sentinel.ts`),
 * with the `master_name` and `sentinel_kwargs` of its transport options.
 */
function connectionOptions(url: string, transportOptions: Record<string, unknown> | undefined, kind: 'broker' | 'backend'): RedisOptions {
  return isSentinelUrl(url) ? sentinelOptions(url, transportOptions, kind) : redisOptionsFromUrl(url);
}

/** The TLS options of a URL (`./tls.ts`); a `sentinel://` URL with TLS is refused (not supported yet). */
function tlsFor(url: string, target: RedisOptions, ssl: unknown, role: 'broker' | 'backend'): TlsOptions | undefined {
  if (!target.sentinels) return redisTls(url, ssl, role);
  if (ssl !== undefined && ssl !== null && ssl !== false) {
    throw new ImproperlyConfigured(`${role === 'broker' ? 'broker_use_ssl' : 'redis_backend_use_ssl'} with a sentinel:// URL: TLS under Sentinel is not supported yet`);
  }
  return undefined;
}

/** Opens an ioredis connection, failing after `connectTimeout` ms on the first attempt; over TLS with `tls` (see `./tls.ts`). */
async function connect(target: RedisOptions, connectTimeout: number, name: string, tls?: TlsOptions): Promise<RedisClient> {
  const Redis = await loadRedis();
  const client = new Redis({
    ...target,
    ...(tls ? { tls } : {}),
    lazyConnect: true,
    connectTimeout,
    connectionName: name,
    maxRetriesPerRequest: 20,
    enableAutoPipelining: false,
    retryStrategy: (times: number) => Math.min(50 * times, 1000),
  });
  // ioredis emits 'error' for every failed reconnect; the command promises carry the errors.
  // The first attempt's is kept: connect() itself rejects with a bare 'Connection is closed.';
  // the last too: a sentinel set-up retries behind the timeout (e.g. "All sentinels are unreachable ... WRONGPASS").
  let firstError: unknown;
  let last: unknown;
  const onError = (e: unknown): void => {
    firstError ??= e;
    last = e;
  };
  client.on('error', onError);
  client.on('connect', () => epochs.set(client, epochOf(client) + 1));
  try {
    await withTimeout(client.connect(), connectTimeout, `connecting to Redis (${name})`);
  } catch (err) {
    client.disconnect();
    let why = tls ? tlsFailure(firstError, 'redis') ?? tlsFailure(err, 'redis') : undefined;
    const o = tls && !why && mayHideAlert(firstError ?? err) ? target : undefined;
    const alert = o?.host ? await diagnoseTls(o.host, o.port ?? 6379, tls!) : undefined;
    why ??= tlsFailure(alert, 'redis');
    if (why) throw new WireError('ERR_BROKER', `Cannot connect to Redis over TLS (${name}): ${why}`, { cause: alert ?? firstError ?? err });
    if (target.sentinels && last !== undefined && last !== err) {
      throw new WireError('ERR_BROKER', `Cannot connect to Redis: ${errorText(err)} (${errorText(last)})`, { cause: last });
    }
    throw new WireError('ERR_BROKER', `Cannot connect to Redis: ${errorText(firstError ?? err)}`, { cause: firstError ?? err });
  }
  client.off('error', onError);
  client.on('error', () => {});
  return client;
}

/** How many times each connection has (re)connected: a `WAIT` after a reconnect speaks for the new connection's writes only. */
const epochs = new WeakMap<RedisClient, number>();
function epochOf(client: RedisClient): number {
  return epochs.get(client) ?? 0;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new WireError('ERR_BROKER', `Timed out ${what} after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function quit(client: RedisClient | undefined, ms = 2000): Promise<void> {
  if (!client) return;
  try {
    await withTimeout(client.quit(), ms, 'closing');
  } catch {
    client.disconnect();
  }
}

/** A Lua script run with EVALSHA, falling back to EVAL after a server restart flushed the cache. */
class Script {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(client: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!errorText(err).includes('NOSCRIPT')) throw err;
      return client.eval(this.source, keys.length, ...keys, ...args);
    }
  }

  /** Runs the script and `WAIT` in one round trip; returns the replicas `WAIT` heard from. */
  async runThenWait(client: RedisClient, keys: readonly string[], args: readonly (string | number)[], wait: ReplicationWait): Promise<unknown> {
    for (const full of [false, true]) {
      const pipe = client.pipeline();
      if (full) pipe.eval(this.source, keys.length, ...keys, ...args);
      else pipe.evalsha(this.sha, keys.length, ...keys, ...args);
      pipe.wait(wait.replicas, wait.timeoutMs);
      const res = (await pipe.exec()) ?? [];
      const err = res[0]?.[0];
      if (err) {
        if (!full && errorText(err).includes('NOSCRIPT')) continue;
        throw err;
      }
      if (res[1]?.[0]) throw res[1][0];
      return res[1]?.[1];
    }
    return undefined;
  }
}

// KEYS: unacked, unacked_index, list1..listN (in consumption order)
// ARGV: max, now
// Pops up to max messages and records each in unacked/unacked_index in the
// same atomic step. Returns a flat list: list index (1-based), item, tag ('' when
// the item is not a kombu envelope: it is then returned but not recorded),
// exchange, routing key (as recorded).
//
// The tag, exchange and routing key are read without decoding the envelope
// when each of "delivery_tag", "exchange" and "routing_key" occurs once, as a
// plain string (no escapes): decoding a whole envelope in Lua cost ~36 us a
// message, most of the script's time. The envelope is decoded otherwise. What
// was read the quick way is checked against the full parse in Node
// (parseEnvelope): a message that differs is refused as malformed, and acked
// under the tag it was recorded under.
const POP_BATCH = new Script(`
local max = tonumber(ARGV[1])
local now = ARGV[2]
local out = {}
local n = 0
local function once(item, key)
  local q = '"' .. key .. '"'
  local s, e = string.find(item, q, 1, true)
  if not s or string.find(item, q, e + 1, true) then return nil end
  local _, _, v = string.find(item, '^%s*:%s*"([^"\\\\]*)"', e + 1)
  return v
end
for i = 3, #KEYS do
  while n < max do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    n = n + 1
    local tag, ex, rk = once(item, 'delivery_tag'), once(item, 'exchange'), once(item, 'routing_key')
    if not (tag and tag ~= '' and ex and rk) then
      tag, ex, rk = '', '', ''
      local ok, msg = pcall(cjson.decode, item)
      if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
        local p = msg.properties
        local t = p.delivery_tag
        if type(t) == 'string' or type(t) == 'number' then
          tag = tostring(t)
          if type(p.delivery_info) == 'table' then
            if type(p.delivery_info.exchange) == 'string' then ex = p.delivery_info.exchange end
            if type(p.delivery_info.routing_key) == 'string' then rk = p.delivery_info.routing_key end
          end
        end
      end
    end
    if tag ~= '' then
      redis.call('ZADD', KEYS[2], now, tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    end
    out[#out + 1] = i - 2
    out[#out + 1] = item
    out[#out + 1] = tag
    out[#out + 1] = ex
    out[#out + 1] = rk
  end
  if n >= max then break end
end
return out
`);

// KEYS: unacked, unacked_index, dest1..destN ; ARGV: tag, payload, leftmost ('1' -> LPUSH)
// kombu's restore_by_tag as one atomic step: only a message still in unacked is pushed back.
const RESTORE = new Script(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 3, #KEYS do
  if ARGV[3] == '1' then
    redis.call('LPUSH', KEYS[i], ARGV[2])
  else
    redis.call('RPUSH', KEYS[i], ARGV[2])
  end
end
return 1
`);

// KEYS: unacked, unacked_index[, quarantine] ; ARGV: tag, raw entry
// Takes a malformed entry out of unacked (only if it is still the same text) and keeps it aside.
const QUARANTINE = new Script(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if #KEYS >= 3 then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
return 1
`);

/**
 * The Lua loop of Celery's _store_result + _set over result keys 1..count:
 * SET[EX] and PUBLISH each value (`ARGV[valueAt]`), never over a SUCCESS;
 * counts what it stored in `stored`. Reads `expires`.
 */
function storeLoop(count: string, valueAt: string): string {
  return `local stored = 0
for i = 1, ${count} do
  local cur = redis.call('GET', KEYS[i])
  local skip = false
  if cur then
    local ok, m = pcall(cjson.decode, cur)
    if ok and type(m) == 'table' and m.status == 'SUCCESS' then skip = true end
  end
  if not skip then
    local v = ARGV[${valueAt}]
    if expires > 0 then
      redis.call('SETEX', KEYS[i], expires, v)
    else
      redis.call('SET', KEYS[i], v)
    end
    redis.call('PUBLISH', KEYS[i], v)
    stored = stored + 1
  end
end
`;
}

// KEYS: result keys ; ARGV: expires (seconds, '0' = none), value1..valueN
// Celery's _store_result + _set: SET[EX] and PUBLISH, but never over a SUCCESS.
const STORE_RESULTS = new Script(`
local expires = tonumber(ARGV[1])
${storeLoop('#KEYS', 'i + 1')}return stored
`);

// KEYS: result key 1..n, unacked_index, unacked ; ARGV: expires, n, value 1..n, tag 1..m
// STORE_RESULTS, then kombu's QoS.ack (ZREM unacked_index + HDEL unacked) of
// the tags, in one atomic step: a store that fails (an error raised by a
// redis.call ends the script) acknowledges nothing.
const STORE_THEN_ACK = new Script(`
local expires = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
${storeLoop('n', 'i + 2')}local first = n + 3
while first <= #ARGV do
  local last = math.min(#ARGV, first + 199)
  redis.call('ZREM', KEYS[n + 1], unpack(ARGV, first, last))
  redis.call('HDEL', KEYS[n + 2], unpack(ARGV, first, last))
  first = last + 1
end
return stored
`);

// KEYS: mutex ; ARGV: token
const RELEASE_LOCK = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

// KEYS: mutex ; ARGV: token, milliseconds
const RENEW_LOCK = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

// kombu 5.7's REFRESH_BINDING. KEYS: binding table, _kombu.binding_deadlines ; ARGV: member, exchange, ttl ms
const REFRESH_BINDING = new Script(`
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
`);

/** Longest time the restore lock outlives a sweep that died (ms); renewed every third of it. */
const LOCK_LEASE_MS = 5000;
/** How often a consumer polls on a server without `BLMOVE` (ms). */
const POLL_MS = 100;

/** kombu's Redis transport options (`broker_transport_options`), the ones this transport reads. */
export interface RedisTransportOptions {
  /** Seconds before an unacknowledged message is restored. Default 3600 (kombu's). */
  visibility_timeout?: number;
  /** Default `[0, 3, 6, 9]`. */
  priority_steps?: number[];
  /** Default `'\x06\x16'`. */
  sep?: string;
  /** A prefix for every key (kombu's `global_keyprefix`). Default none. */
  global_keyprefix?: string;
  unacked_key?: string;
  unacked_index_key?: string;
  unacked_mutex_key?: string;
  /**
   * Seconds the restore lock is held at most. Default 300. The lock itself
   * lives 5 s (or this, when shorter) and is renewed while the sweep runs.
   */
  unacked_mutex_expire?: number;
  /**
   * Beyond kombu: the hash a malformed entry of `unacked` is moved to (tag to
   * the entry as it was). Default `'unacked_quarantine'`; `''` drops such
   * entries (what kombu does with an entry it cannot restore).
   */
  unacked_quarantine_key?: string;
  /** At most this many messages restored per sweep. Default: all. */
  unacked_restore_limit?: number | null;
  /** Seconds between restore sweeps of a consumer. Default 10. */
  unacked_restore_interval?: number;
  /** Seconds a blocking wait lasts before it is renewed. Default 1 (kombu's `brpop_timeout`). */
  brpop_timeout?: number;
  /** kombu's `fanout_prefix`: `true` (default) prefixes fanout topics with `/{db}.`, a string replaces it, `false` drops it. */
  fanout_prefix?: boolean | string;
  /** kombu's `fanout_patterns`: `true` (default) appends `/<routing_key>` to a fanout topic. */
  fanout_patterns?: boolean;
}

interface Settings {
  visibilityTimeout: number;
  steps: number[];
  sep: string;
  prefix: string;
  unackedKey: string;
  unackedIndexKey: string;
  mutexKey: string;
  mutexExpire: number;
  quarantineKey: string;
  restoreLimit: number | null;
  restoreInterval: number;
  brpopTimeout: number;
  fanoutPrefix: string;
  fanoutPatterns: boolean;
}

function positive(v: unknown, what: string, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ImproperlyConfigured(`${what} must be a non-negative number`);
  return v;
}

function settingsFrom(o: Record<string, unknown> = {}): Settings {
  const steps = (o.priority_steps as number[] | undefined) ?? [...PRIORITY_STEPS];
  if (!Array.isArray(steps) || steps.length === 0 || !steps.every((s) => Number.isInteger(s))) {
    throw new ImproperlyConfigured('priority_steps must be a list of integers');
  }
  const limit = o.unacked_restore_limit;
  return {
    visibilityTimeout: positive(o.visibility_timeout, 'visibility_timeout', 3600),
    steps: [...steps].sort((a, b) => a - b),
    sep: typeof o.sep === 'string' ? o.sep : SEP,
    prefix: typeof o.global_keyprefix === 'string' ? o.global_keyprefix : '',
    unackedKey: typeof o.unacked_key === 'string' ? o.unacked_key : 'unacked',
    unackedIndexKey: typeof o.unacked_index_key === 'string' ? o.unacked_index_key : 'unacked_index',
    mutexKey: typeof o.unacked_mutex_key === 'string' ? o.unacked_mutex_key : 'unacked_mutex',
    mutexExpire: positive(o.unacked_mutex_expire, 'unacked_mutex_expire', 300),
    quarantineKey: typeof o.unacked_quarantine_key === 'string' ? o.unacked_quarantine_key : 'unacked_quarantine',
    restoreLimit: limit === undefined || limit === null ? null : positive(limit, 'unacked_restore_limit', 0),
    restoreInterval: positive(o.unacked_restore_interval, 'unacked_restore_interval', 10),
    brpopTimeout: Math.max(1, Math.ceil(positive(o.brpop_timeout, 'brpop_timeout', 1))),
    fanoutPrefix: typeof o.fanout_prefix === 'string' ? o.fanout_prefix : o.fanout_prefix === false ? '' : '/{db}.',
    fanoutPatterns: o.fanout_patterns !== false,
  };
}

/** kombu's `Channel.priority(n)`: the priority step a priority falls into. */
export function priorityStep(steps: readonly number[], n: number): number {
  let step = steps[0]!;
  for (const s of steps) if (s <= n) step = s;
  return step;
}

/** kombu's `_get_message_priority`: the priority property clamped to 0..9 (0 when unreadable). */
export function messagePriority(properties: unknown): number {
  const p = (properties as { priority?: unknown } | null)?.priority;
  const n = typeof p === 'number' ? Math.trunc(p) : typeof p === 'string' && /^\s*-?\d+\s*$/.test(p) ? Number(p) : NaN;
  if (!Number.isFinite(n)) return 0;
  return Math.max(Math.min(n, 9), 0);
}

/** kombu's `_q_for_pri`: the list a message of this priority lives in. */
export function queueForPriority(queue: string, priority: number, steps: readonly number[] = PRIORITY_STEPS, sep = SEP): string {
  const step = priorityStep(steps, priority);
  return step ? `${queue}${sep}${step}` : queue;
}

/**
 * kombu's envelope for one message, as `kombu.utils.json.dumps` writes it
 * (Python's separators, key order of kombu's `prepare_message` and
 * `_inplace_augment_message`).
 */
export function redisEnvelope(m: OutgoingMessage, deliveryTag: string = randomUUID()): string {
  const p = m.properties;
  const properties: Record<string, unknown> = {
    correlation_id: p.correlation_id,
    reply_to: p.reply_to,
    delivery_mode: p.delivery_mode,
  };
  if (p.expiration !== undefined) properties.expiration = p.expiration;
  return envelope(m.body, m.contentEncoding, m.contentType, m.headers, properties, m.exchange, m.routingKey, p.priority, deliveryTag);
}

/**
 * kombu's envelope of an event published to a fanout exchange: what a
 * Celery `EventDispatcher` PUBLISHes (`properties`: `delivery_mode`, then
 * kombu's `delivery_info`, `priority`, `body_encoding`, `delivery_tag`).
 */
export function redisEventEnvelope(e: EventMessage, deliveryTag: string = randomUUID()): string {
  return envelope(e.body, e.contentEncoding, e.contentType, e.headers, { delivery_mode: e.deliveryMode }, e.exchange, e.routingKey, 0, deliveryTag);
}

function envelope(
  body: string,
  contentEncoding: string,
  contentType: string,
  headers: Record<string, unknown>,
  properties: Record<string, unknown>,
  exchange: string,
  routingKey: string,
  priority: number,
  deliveryTag: string,
): string {
  properties.delivery_info = { exchange, routing_key: routingKey };
  properties.priority = priority;
  properties.body_encoding = 'base64';
  properties.delivery_tag = deliveryTag;
  return kombuDumps({
    body: Buffer.from(body, 'utf8').toString('base64'),
    'content-encoding': contentEncoding,
    'content-type': contentType,
    headers,
    properties,
  });
}

/**
 * The parts of a connection's options that name its server and database (its
 * own type, not ioredis's: the declarations never name an optional peer).
 */
interface ServerAddress {
  host?: string | undefined;
  port?: number | undefined;
  path?: string | undefined;
  db?: number | undefined;
  sentinels?: unknown;
}

/** Where a consumer's acks go: its server and kombu's `unacked` keys (prefixed). */
interface AckTarget {
  server: ServerAddress;
  index: string;
  hash: string;
}

/** Whether two connections reach the same server and database (never under Sentinel). */
function sameServer(a: ServerAddress, b: ServerAddress): boolean {
  if (a.sentinels || b.sentinels) return false;
  if ((a.db ?? 0) !== (b.db ?? 0)) return false;
  if (a.path || b.path) return a.path === b.path;
  return (a.host ?? 'localhost') === (b.host ?? 'localhost') && (a.port ?? 6379) === (b.port ?? 6379);
}

/** Base64 text as a message body may hold it (padded or not). */
const BASE64_TEXT = /^[A-Za-z0-9+/]*={0,2}$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Reads one kombu envelope into a {@link Delivery}; a malformed one is marked,
 * never thrown. `tag`: the delivery tag it was recorded under in `unacked`
 * (`''`: not recorded), or `null` to take it from the envelope.
 */
export function parseEnvelope(
  item: string,
  queue: string,
  tag: string | null,
  recorded?: { exchange: string; routingKey: string },
): Delivery {
  let env: unknown;
  try {
    env = kombuLoads(item);
  } catch {
    try {
      env = JSON.parse(item);
    } catch {
      env = undefined;
    }
  }
  const malformed = (reason: string): Delivery => ({
    deliveryTag: tag ?? '',
    queue,
    body: null,
    contentType: null,
    contentEncoding: null,
    headers: {},
    properties: {},
    exchange: '',
    routingKey: queue,
    priority: 0,
    redelivered: false,
    malformed: new SecurityError('ERR_MALFORMED_PAYLOAD', reason),
  });
  if (!isRecord(env) || !isRecord(env.properties)) return malformed('Not a kombu message envelope');
  const props = env.properties;
  if (tag === null) {
    const t = props.delivery_tag;
    tag = typeof t === 'string' || typeof t === 'number' ? String(t) : '';
  }
  const headers = isRecord(env.headers) ? env.headers : {};
  const info = isRecord(props.delivery_info) ? props.delivery_info : {};
  let body: Buffer | string | null = null;
  const raw = env.body;
  if (typeof raw === 'string') {
    const enc = typeof props.body_encoding === 'string' ? props.body_encoding.toLowerCase() : null;
    if (enc === 'base64') {
      body = Buffer.from(raw, 'base64');
      // Canonical base64 (what kombu writes) encodes back to itself, which is
      // cheaper to see than a pattern; anything else is checked by the pattern.
      if (body.toString('base64') !== raw && !BASE64_TEXT.test(raw)) {
        return { ...malformed('Message body is not base64'), headers, properties: props };
      }
    } else if (enc === null || enc === 'utf-8') {
      body = raw;
    } else {
      return { ...malformed(`Unknown body encoding ${JSON.stringify(enc).slice(0, 40)}`), headers, properties: props };
    }
  } else if (raw === undefined || raw === null || raw === '') {
    body = '';
  } else {
    return { ...malformed('Message body is not text'), headers, properties: props };
  }
  if (!tag) return { ...malformed('Message has no delivery_tag'), headers, properties: props };
  if (recorded) {
    // What the pop script recorded in unacked, read without a decode, must be what the envelope says.
    const t = props.delivery_tag;
    const same =
      (typeof t === 'string' || typeof t === 'number') &&
      String(t) === tag &&
      (typeof info.exchange === 'string' ? info.exchange : '') === recorded.exchange &&
      (typeof info.routing_key === 'string' ? info.routing_key : '') === recorded.routingKey;
    if (!same) return { ...malformed('Message envelope is ambiguous (its delivery_tag, exchange or routing_key read two ways)'), headers, properties: props };
  }
  return {
    deliveryTag: tag,
    queue,
    body,
    contentType: typeof env['content-type'] === 'string' ? env['content-type'] : null,
    contentEncoding: typeof env['content-encoding'] === 'string' ? env['content-encoding'] : null,
    headers,
    properties: props,
    exchange: typeof info.exchange === 'string' ? info.exchange : '',
    routingKey: typeof info.routing_key === 'string' ? info.routing_key : queue,
    priority: messagePriority(props),
    redelivered: headers.redelivered === true || info.redelivered === true,
  };
}

/** Options of {@link RedisTransport.restoreVisible} and {@link RedisTransport.restoreByTag}. */
export interface RestoreOptions {
  /** Hears each malformed `unacked` entry met ({@link UnrestorableEntryError}). */
  onError?: (err: unknown) => void;
}

/**
 * An entry of kombu's `unacked` hash that is not `[message, exchange,
 * routing_key]`: a restore skipped it, took it out of `unacked` and
 * `unacked_index`, and moved it to `quarantinedIn` (or dropped it: `null`).
 */
export class UnrestorableEntryError extends WireError {
  /** Its field in `unacked` (the delivery tag). */
  readonly deliveryTag: string;
  /** The hash (with the key prefix) that now holds the entry as it was, or `null` when it was dropped. */
  readonly quarantinedIn: string | null;

  constructor(tag: string, size: number, reason: string, quarantinedIn: string | null, cause?: unknown) {
    super(
      'ERR_BROKER',
      `Cannot restore the unacked entry ${JSON.stringify(tag.slice(0, 200))} (${size} bytes, ${reason}): ` +
        (quarantinedIn === null ? 'dropped' : `moved to the hash ${JSON.stringify(quarantinedIn)}`),
      cause === undefined ? undefined : { cause },
    );
    this.deliveryTag = tag;
    this.quarantinedIn = quarantinedIn;
  }
}

/** kombu's Redis transport: publishing and consuming with kombu's layout. */
export class RedisTransport implements BrokerTransport {
  /** `'sentinel'` for a `sentinel://` URL (kombu's transport name), else `'redis'`. */
  readonly name: 'redis' | 'sentinel';
  readonly #url: RedisOptions;
  readonly #settings: Settings;
  readonly #connectTimeout: number;
  readonly #client: RedisClient;
  readonly #declared = new Set<string>();
  readonly #consumers = new Set<RedisConsumer>();
  readonly #db: number;
  readonly #tls: TlsOptions | undefined;
  readonly #wait: ReplicationWait | null;
  #closed = false;

  private constructor(url: RedisOptions, client: RedisClient, settings: Settings, connectTimeout: number, wait: ReplicationWait | null, tls?: TlsOptions) {
    this.name = url.sentinels ? 'sentinel' : 'redis';
    this.#url = url;
    this.#tls = tls;
    this.#client = client;
    this.#settings = settings;
    this.#connectTimeout = connectTimeout;
    this.#db = url.db ?? 0;
    this.#wait = wait;
  }

  /**
   * Connects to the broker at `url`: `redis://`, `rediss://`,
   * `redis+socket://`, or `sentinel://` (several joined with `;`, with
   * `master_name` in the transport options: `./sentinel.ts`).
   */
  static async open(url: string, options: TransportOptions = {}): Promise<RedisTransport> {
    const settings = settingsFrom(options.transportOptions);
    const target = connectionOptions(url, options.transportOptions, 'broker');
    const wait = replicationWait(options.transportOptions);
    const connectTimeout = options.connectTimeout ?? 10000;
    const tls = tlsFor(url, target, options.ssl, 'broker');
    const client = await connect(target, connectTimeout, 'celery-sign', tls);
    return new RedisTransport(target, client, settings, connectTimeout, wait, tls);
  }

  /** The settings in effect (kombu names). */
  get visibilityTimeout(): number {
    return this.#settings.visibilityTimeout;
  }

  /** A key with kombu's `global_keyprefix`. */
  key(name: string): string {
    return this.#settings.prefix + name;
  }

  /**
   * @internal Where this transport's acks go: its server and kombu's
   * `unacked` keys; `null` under Sentinel (the server may change) or with
   * `wait_replicas` (an ack waits for its replicas).
   */
  ackTarget(): AckTarget | null {
    if (this.#url.sentinels || this.#wait) return null;
    return { server: this.#url, index: this.key(this.#settings.unackedIndexKey), hash: this.key(this.#settings.unackedKey) };
  }

  /** The list a message of `priority` for `queue` goes to (without the key prefix). */
  listFor(queue: string, priority: number): string {
    return queueForPriority(queue, priority, this.#settings.steps, this.#settings.sep);
  }

  #check(): void {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The Redis transport is closed');
  }

  /** kombu's queue declaration + binding on the queue's own direct exchange (as Celery's default queues). */
  #declare(pipe: ReturnType<RedisClient['pipeline']>, queue: string, exchange: string, routingKey: string): void {
    const ex = exchange || queue;
    const rk = exchange ? routingKey : queue;
    const id = `${ex}${SEP}${rk}${SEP}${queue}`;
    if (this.#declared.has(id)) return;
    const member = [rk, '', queue].join(this.#settings.sep);
    pipe.sadd(this.key(`_kombu.binding.${ex}`), member);
    pipe.sadd(this.key(`_kombu.binding_permanent.${ex}`), member);
  }

  async #execDeclared(pipe: ReturnType<RedisClient['pipeline']>, ids: string[]): Promise<[Error | null, unknown][] | null> {
    const res = await pipe.exec();
    for (const [err] of res ?? []) if (err) throw err;
    for (const id of ids) this.#declared.add(id);
    return res;
  }

  /** Declares queues (their bindings), as a kombu consumer does at start. */
  async declareQueues(queues: readonly string[]): Promise<void> {
    this.#check();
    const pipe = this.#client.pipeline();
    const ids: string[] = [];
    for (const q of queues) {
      this.#declare(pipe, q, '', q);
      ids.push(`${q}${SEP}${q}${SEP}${q}`);
    }
    await this.#execDeclared(pipe, ids);
  }

  /** `LPUSH`es each message's envelope onto its priority list, in one pipeline. */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    this.#check();
    if (messages.length === 0) return;
    const pipe = this.#client.pipeline();
    const ids: string[] = [];
    for (const m of messages) {
      const ex = m.exchange || m.queue;
      const rk = m.exchange ? m.routingKey : m.queue;
      const id = `${ex}${SEP}${rk}${SEP}${m.queue}`;
      if (!this.#declared.has(id) && !ids.includes(id)) {
        this.#declare(pipe, m.queue, m.exchange, m.routingKey);
        ids.push(id);
      }
      // Anonymous exchange: the routing key is the queue (kombu's _lookup).
      const queue = m.exchange ? m.queue : m.routingKey;
      pipe.lpush(this.key(this.listFor(queue, messagePriority(m.properties))), redisEnvelope(m));
    }
    const wait = this.#wait;
    if (wait) pipe.wait(wait.replicas, wait.timeoutMs);
    const epoch = epochOf(this.#client);
    const res = await this.#execDeclared(pipe, ids);
    if (wait) {
      const got = res?.[res.length - 1]?.[1];
      if (typeof got !== 'number' || got < wait.replicas) throw notReplicated(`Published ${messages.length} message(s), which`, got, wait);
      // Reconnected meanwhile (a fail-over): part may have gone to the old master, which WAIT did not see.
      if (epochOf(this.#client) !== epoch) {
        throw new WireError(
          'ERR_BROKER',
          `Published ${messages.length} message(s) while the connection to the master was replaced: whether they survive a fail-over is unknown (sending again may run them twice)`,
        );
      }
    }
  }

  /**
   * kombu's topic of a fanout exchange (`_get_publish_topic`):
   * `/{db}.<exchange>/<routing_key>` with kombu's default `fanout_prefix` and
   * `fanout_patterns` (without the key prefix).
   */
  fanoutTopic(exchange: string, routingKey: string): string {
    const prefix = this.#settings.fanoutPrefix.replace('{db}', String(this.#db));
    return routingKey && this.#settings.fanoutPatterns ? `${prefix}${exchange}/${routingKey}` : `${prefix}${exchange}`;
  }

  /**
   * Publishes events as kombu delivers a message to a fanout exchange
   * (Celery makes `celeryev` a fanout exchange on Redis): `PUBLISH` of the
   * envelope on the exchange's topic, in one pipeline. Subscribers that are
   * not listening miss them, as with kombu.
   */
  async publishEvents(events: readonly EventMessage[]): Promise<void> {
    this.#check();
    if (events.length === 0) return;
    const pipe = this.#client.pipeline();
    for (const e of events) pipe.publish(this.key(this.fanoutTopic(e.exchange, e.routingKey)), redisEventEnvelope(e));
    const res = await pipe.exec();
    for (const [err] of res ?? []) if (err) throw err;
  }

  /**
   * Remote control (kombu's fanout over PUBLISH/SUBSCRIBE): PSUBSCRIBEs the
   * exchange's topic (`/{db}.celery.pidbox`) on a connection of its own and
   * hands each envelope to `onMessage`; records the queue's binding as kombu
   * 5.7 does for a queue with `x-expires` (`_kombu.binding.<exchange>` and a
   * deadline in `_kombu.binding_deadlines`, refreshed while it listens) and
   * removes it at close, as kombu deletes an auto-delete fanout queue.
   * ioredis subscribes again after a reconnect.
   */
  async listenBroadcast(
    spec: BroadcastSpec,
    onMessage: (d: Delivery) => void,
    onError: (err: unknown) => void,
  ): Promise<BroadcastListener> {
    this.#check();
    const sub = await connect(this.#url, this.#connectTimeout, 'celery-sign-pidbox', this.#tls);
    const topic = this.key(this.fanoutTopic(spec.exchange, ''));
    sub.on('pmessage', (_pattern: string, _channel: string, message: string) => {
      try {
        onMessage(parseEnvelope(message, spec.queue, null));
      } catch (err) {
        onError(err);
      }
    });
    const member = ['', '', spec.queue].join(this.#settings.sep);
    const table = this.key(`_kombu.binding.${spec.exchange}`);
    const bind = async (): Promise<void> => {
      // kombu's REFRESH_BINDING: the deadline is max(2 x x-expires, 1 h) from the server's clock.
      const ttl = Math.max((spec.expires ?? 0) * 2, 3600_000);
      await REFRESH_BINDING.run(this.#client, [table, this.key('_kombu.binding_deadlines')], [member, spec.exchange, ttl]);
    };
    // The binding is bookkeeping (kombu's fanout does not read it): its failure (a Redis < 6.2 has no ZADD GT) is reported, not fatal.
    await bind().catch(onError);
    try {
      await sub.psubscribe(topic);
    } catch (err) {
      sub.disconnect();
      throw new WireError('ERR_BROKER', `Cannot listen for remote control: ${errorText(err)}`, { cause: err });
    }
    const refresh = setInterval(() => void bind().catch(onError), 20 * 60_000);
    refresh.unref();
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        clearInterval(refresh);
        await quit(sub);
        if (!this.#closed) {
          await this.#client
            .pipeline()
            .srem(table, member)
            .srem(this.key(`_kombu.binding_permanent.${spec.exchange}`), member)
            .exec()
            .catch(() => undefined);
        }
      },
    };
  }

  /**
   * Remote control replies, as kombu delivers to a direct exchange: `LPUSH`
   * of the envelope on every queue bound in `_kombu.binding.<exchange>` with
   * the routing key (the requester's reply queue); none bound: dropped, as
   * kombu drops it.
   */
  async publishControlReplies(replies: readonly EventMessage[]): Promise<void> {
    this.#check();
    for (const m of replies) {
      const members = await this.#client.smembers(this.key(`_kombu.binding.${m.exchange}`));
      const sep = this.#settings.sep;
      const queues = new Set(
        members
          .map((x) => x.split(sep))
          .filter((p) => p.length === 3 && p[0] === m.routingKey)
          .map((p) => p[2]!),
      );
      if (queues.size === 0) continue;
      const pipe = this.#client.pipeline();
      for (const q of queues) pipe.lpush(this.key(this.listFor(q, 0)), redisEventEnvelope(m));
      const res = await pipe.exec();
      for (const [err] of res ?? []) if (err) throw err;
    }
  }

  /**
   * Starts consuming `queues`, with one blocking connection per list it waits
   * on (priority steps x queues); `options.onError` hears what goes wrong in
   * the background (restore sweeps, malformed `unacked` entries).
   */
  async consume(queues: readonly string[], options: ConsumeOptions = {}): Promise<BrokerConsumer> {
    this.#check();
    if (queues.length === 0) throw new ImproperlyConfigured('consume needs at least one queue');
    await this.declareQueues(queues);
    const settings = { ...this.#settings };
    if (options.visibilityTimeout !== undefined) settings.visibilityTimeout = positive(options.visibilityTimeout, 'visibilityTimeout', 3600);
    const lists = new Set<string>();
    for (const pri of settings.steps) for (const q of queues) lists.add(this.key(this.listFor(q, pri)));
    const opened = await Promise.allSettled(
      [...lists].map(async (list) => [list, await connect(this.#url, this.#connectTimeout, 'celery-sign-consumer', this.#tls)] as const),
    );
    const waiters = new Map<string, RedisClient>();
    for (const o of opened) if (o.status === 'fulfilled') waiters.set(o.value[0], o.value[1]);
    const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) {
      for (const c of waiters.values()) c.disconnect();
      throw failed.reason;
    }
    const consumer = new RedisConsumer(this, this.#client, waiters, queues, settings, options.onError, () =>
      this.#consumers.delete(consumer),
    );
    this.#consumers.add(consumer);
    consumer.startRestoring();
    return consumer;
  }

  #polling = false;

  /** @internal Whether consumers poll: the server has no usable `BLMOVE`. */
  get polling(): boolean {
    return this.#polling;
  }

  /** @internal A consumer met a server without `BLMOVE`: say so once. */
  noBlmove(err: unknown): void {
    if (this.#polling) return;
    this.#polling = true;
    process.emitWarning(
      `celery-sign: the Redis server refuses BLMOVE (${errorText(err).slice(0, 120)}): it is older than 6.2, or the command is ` +
        `renamed or not permitted. Consumers poll every ${POLL_MS} ms instead of blocking; no message is at risk, but waits cost more.`,
      'CelerySignRedisWarning',
    );
  }

  /**
   * kombu's `QoS.restore_visible`: under the `unacked_mutex` lock, puts every
   * message delivered more than `visibility_timeout` seconds ago back on its
   * queue (at the consuming end). Returns how many were restored.
   *
   * The lock lives {@link LOCK_LEASE_MS} (or `unacked_mutex_expire`, when
   * shorter) and is renewed while the sweep runs, for `unacked_mutex_expire`
   * at most (then it lapses, as kombu's does). An entry that is not kombu's
   * `[message, exchange, routing_key]` is moved aside and reported to
   * `options.onError` (without it: a process warning), and the sweep goes on.
   */
  async restoreVisible(visibilityTimeout = this.#settings.visibilityTimeout, options: RestoreOptions = {}): Promise<number> {
    this.#check();
    if (this.#closing) return 0;
    const p = this.#sweep(visibilityTimeout, options);
    this.#sweeps.add(p);
    try {
      return await p;
    } finally {
      this.#sweeps.delete(p);
    }
  }

  readonly #sweeps = new Set<Promise<number>>();
  #closing = false;

  async #sweep(visibilityTimeout: number, options: RestoreOptions): Promise<number> {
    const s = this.#settings;
    const token = randomUUID();
    const mutex = this.key(s.mutexKey);
    const most = Math.max(1, Math.round(s.mutexExpire * 1000));
    const lease = Math.min(most, LOCK_LEASE_MS);
    const got = await this.#client.set(mutex, token, 'PX', lease, 'NX');
    if (got !== 'OK') return 0; // MutexHeld: someone else is restoring
    // Renewed while the sweep runs, for unacked_mutex_expire in all; then (or once
    // lost) it lapses as kombu's does. Losing it is harmless: each restore is atomic.
    const since = Date.now();
    const renew = setInterval(() => {
      const left = most - (Date.now() - since);
      const stop = (): void => clearInterval(renew);
      if (left <= 0) return stop();
      RENEW_LOCK.run(this.#client, [mutex], [token, Math.min(lease, left)]).then(
        (r) => {
          if (r !== 1) stop();
        },
        () => undefined,
      );
    }, Math.max(10, Math.floor(lease / 3)));
    renew.unref();
    try {
      const ceil = Date.now() / 1000 - visibilityTimeout;
      const args: (string | number)[] = [this.key(s.unackedIndexKey), ceil, 0];
      if (s.restoreLimit) args.push('LIMIT', 0, s.restoreLimit);
      const tags = (await this.#client.call('ZREVRANGEBYSCORE', ...args)) as string[];
      let n = 0;
      for (const tag of tags) {
        if (this.#closing) break;
        if (await this.restoreByTag(tag, false, options)) n++;
      }
      return n;
    } finally {
      clearInterval(renew);
      await RELEASE_LOCK.run(this.#client, [mutex], [token]).catch(() => undefined);
    }
  }

  /**
   * kombu's `QoS.restore_by_tag`: takes the message out of `unacked`, marks it
   * `redelivered` and pushes it back on its queue: to the consuming end
   * (`RPUSH`, delivered next), or with `leftmost` to the far end (`LPUSH`, as
   * a requeueing reject does). Returns whether a message was restored.
   * A malformed entry is moved to `unacked_quarantine` (or dropped) and
   * reported to `options.onError` (without it: a process warning).
   */
  async restoreByTag(tag: string, leftmost: boolean, options: RestoreOptions = {}): Promise<boolean> {
    const s = this.#settings;
    const unacked = this.key(s.unackedKey);
    const index = this.key(s.unackedIndexKey);
    const raw = await this.#client.hget(unacked, tag);
    if (raw === null) {
      await this.#client.zrem(index, tag);
      return false;
    }
    let entry: unknown;
    let reviver: (v: unknown) => string = (v) => kombuDumps(v);
    let cause: unknown;
    try {
      entry = kombuLoads(raw);
    } catch (err) {
      cause = err;
      try {
        entry = JSON.parse(raw) as unknown;
        reviver = (v) => JSON.stringify(v);
      } catch {
        entry = undefined;
      }
    }
    const reason =
      entry === undefined
        ? 'not JSON'
        : !Array.isArray(entry)
          ? 'not a list'
          : entry.length !== 3
            ? `a list of ${entry.length}, not 3`
            : !isRecord(entry[0])
              ? 'its message is not an object'
              : null;
    if (reason !== null) {
      // kombu would raise out of its sweep (not JSON, not three items) or log and drop it.
      await this.#setAside(tag, raw, reason, cause, options);
      return false;
    }
    const [payload, exchange, routingKey] = entry as [Record<string, unknown>, unknown, unknown];
    // kombu's _do_restore_message: headers.redelivered, then delivery_info.redelivered.
    if (isRecord(payload.headers)) {
      payload.headers.redelivered = true;
      if (isRecord(payload.properties) && isRecord(payload.properties.delivery_info)) {
        payload.properties.delivery_info.redelivered = true;
      }
    }
    let text: string;
    try {
      text = reviver(payload);
    } catch (err) {
      await this.#setAside(tag, raw, 'its message cannot be written back', err, options);
      return false;
    }
    const queues = await this.#lookup(typeof exchange === 'string' ? exchange : '', typeof routingKey === 'string' ? routingKey : '');
    const pri = messagePriority(payload.properties);
    const dests = queues.map((q) => this.key(this.listFor(q, pri)));
    const res = await RESTORE.run(this.#client, [unacked, index, ...dests], [tag, text, leftmost ? '1' : '0']);
    return res === 1;
  }

  /** Moves a malformed `unacked` entry to the quarantine hash (or drops it) and reports it. */
  async #setAside(tag: string, raw: string, reason: string, cause: unknown, options: RestoreOptions): Promise<void> {
    const s = this.#settings;
    const keys = [this.key(s.unackedKey), this.key(s.unackedIndexKey)];
    const quarantine = s.quarantineKey ? this.key(s.quarantineKey) : null;
    if (quarantine !== null) keys.push(quarantine);
    const moved = (await QUARANTINE.run(this.#client, keys, [tag, raw])) === 1;
    if (!moved) return; // changed or gone meanwhile: the next sweep looks again
    const err = new UnrestorableEntryError(tag, raw.length, reason, quarantine, cause);
    if (options.onError) {
      try {
        options.onError(err);
      } catch {
        // a listener's failure is not the sweep's
      }
    } else {
      process.emitWarning(err.message, 'CelerySignRedisWarning');
    }
  }

  /** kombu's `_lookup` for the direct exchanges Celery uses; the anonymous exchange routes by key. */
  async #lookup(exchange: string, routingKey: string): Promise<string[]> {
    if (!exchange) return [routingKey || 'celery'];
    const members = await this.#client.smembers(this.key(`_kombu.binding.${exchange}`));
    const sep = this.#settings.sep;
    const queues = members
      .map((m) => m.split(sep))
      .filter((parts) => parts.length === 3 && parts[0] === routingKey)
      .map((parts) => parts[2]!);
    return queues.length > 0 ? [...new Set(queues)] : [routingKey || exchange];
  }

  /** Closes every consumer, stops a restore sweep in flight (it releases its lock), closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    for (const c of [...this.#consumers]) await c.close();
    // A sweep in flight stops at its next message and releases the restore lock.
    this.#closing = true;
    await Promise.allSettled([...this.#sweeps]);
    this.#closed = true;
    await quit(this.#client);
  }
}

/**
 * A consumer of some queues on the Redis transport. Every message it takes
 * leaves its list inside the `POP_BATCH` script, which records it in
 * `unacked` in the same atomic step, in kombu's order (each priority step,
 * then each queue, the queues rotated round-robin after each delivery). When
 * the lists are empty it waits without taking anything: one connection per
 * list blocked in `BLMOVE list list RIGHT RIGHT` (the list is unchanged),
 * then runs the script again; on a server without `BLMOVE` it polls.
 */
class RedisConsumer implements BrokerConsumer {
  readonly #transport: RedisTransport;
  readonly #client: RedisClient;
  /** One blocking connection per list (prefixed key), each blocked in at most one BLMOVE. */
  readonly #waiters: Map<string, RedisClient>;
  /** The lists whose BLMOVE is in flight. */
  readonly #armed = new Set<string>();
  readonly #settings: Settings;
  readonly #cycle: string[];
  readonly #onError: ((err: unknown) => void) | undefined;
  readonly #onClose: () => void;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #receiving: Promise<unknown> | undefined;
  /** Set when a list may have something (a BLMOVE returned) since the last pop. */
  #woken = false;
  #wake: (() => void) | undefined;
  #waitError: unknown;

  /** @internal */
  constructor(
    transport: RedisTransport,
    client: RedisClient,
    waiters: Map<string, RedisClient>,
    queues: readonly string[],
    settings: Settings,
    onError: ((err: unknown) => void) | undefined,
    onClose: () => void,
  ) {
    this.#transport = transport;
    this.#client = client;
    this.#waiters = waiters;
    this.#settings = settings;
    this.#cycle = [...new Set(queues)];
    this.#onError = onError;
    this.#onClose = onClose;
  }

  /** How this consumer waits on empty lists: `'blmove'`, or `'poll'` on a server without it. */
  get waitMode(): 'blmove' | 'poll' {
    return this.#transport.polling ? 'poll' : 'blmove';
  }

  #report(err: unknown): void {
    if (!this.#onError) return;
    try {
      this.#onError(err);
    } catch {
      // a listener's failure is not the consumer's
    }
  }

  /** @internal Restores visible messages now and every `unacked_restore_interval` seconds. */
  startRestoring(): void {
    const sweep = (): void => {
      if (this.#closed) return;
      const options = this.#onError ? { onError: (e: unknown) => this.#report(e) } : {};
      this.#transport.restoreVisible(this.#settings.visibilityTimeout, options).catch((err: unknown) => {
        if (!this.#closed) this.#report(err);
      });
    };
    sweep();
    if (this.#settings.restoreInterval > 0) {
      this.#timer = setInterval(sweep, this.#settings.restoreInterval * 1000);
      this.#timer.unref();
    }
  }

  /** The lists to pop, in kombu's order: for each priority step, each queue. */
  #keys(): string[] {
    const keys: string[] = [];
    for (const pri of this.#settings.steps) {
      for (const q of this.#cycle) keys.push(this.#transport.key(this.#transport.listFor(q, pri)));
    }
    return keys;
  }

  /** The queue of each list key met so far (a consumer pops from a few lists, many times). */
  readonly #queues = new Map<string, string>();

  #queueOf(key: string): string {
    let queue = this.#queues.get(key);
    if (queue === undefined) {
      queue = this.#queueOfKey(key);
      this.#queues.set(key, queue);
    }
    return queue;
  }

  #queueOfKey(key: string): string {
    const k = key.slice(this.#settings.prefix.length);
    const at = k.lastIndexOf(this.#settings.sep);
    if (at < 0) return k;
    const suffix = k.slice(at + this.#settings.sep.length);
    return /^\d+$/.test(suffix) ? k.slice(0, at) : k;
  }

  /** kombu's round-robin: the queue just consumed from goes last. */
  #rotate(queue: string): void {
    const i = this.#cycle.indexOf(queue);
    if (i >= 0 && this.#cycle.length > 1) {
      this.#cycle.splice(i, 1);
      this.#cycle.push(queue);
    }
  }

  async #popBatch(max: number, keys: string[]): Promise<Delivery[]> {
    const s = this.#settings;
    const res = (await POP_BATCH.run(
      this.#client,
      [this.#transport.key(s.unackedKey), this.#transport.key(s.unackedIndexKey), ...keys],
      [max, String(Date.now() / 1000)],
    )) as (number | string)[];
    const out: Delivery[] = [];
    for (let i = 0; i + 4 < res.length; i += 5) {
      const key = keys[Number(res[i]) - 1]!;
      const queue = this.#queueOf(key);
      out.push(parseEnvelope(String(res[i + 1]), queue, String(res[i + 2]), { exchange: String(res[i + 3]), routingKey: String(res[i + 4]) }));
    }
    return out;
  }

  #signal(): void {
    this.#woken = true;
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /**
   * Blocks the list's connection in `BLMOVE list list RIGHT RIGHT`: it returns
   * (the list unchanged) once the list has an item, or after `brpop_timeout`.
   */
  #arm(list: string): void {
    const conn = this.#waiters.get(list);
    if (!conn || this.#armed.has(list) || this.#closed || this.#transport.polling) return;
    this.#armed.add(list);
    conn.blmove(list, list, 'RIGHT', 'RIGHT', this.#settings.brpopTimeout).then(
      (item) => {
        this.#armed.delete(list);
        if (item !== null) this.#signal();
        else if (this.#wake) this.#arm(list); // timed out while someone waits: wait again
      },
      (err: unknown) => {
        this.#armed.delete(list);
        if (this.#closed) return;
        if (this.#transport.polling) {
          this.#signal(); // cut when the consumers turned to polling
          return;
        }
        if (/unknown command|NOPERM/i.test(errorText(err))) {
          this.#transport.noBlmove(err);
          for (const c of this.#waiters.values()) c.disconnect();
        } else {
          this.#waitError ??= err;
        }
        this.#signal();
      },
    );
  }

  /** Waits up to `ms` for a list to have something (or for close). */
  async #wait(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (!this.#transport.polling) for (const list of this.#waiters.keys()) this.#arm(list);
      if (this.#woken || this.#closed) {
        this.#wake = undefined;
        resolve();
        return;
      }
      timer = setTimeout(() => {
        if (this.#wake === resolve) this.#wake = undefined;
        resolve();
      }, this.#transport.polling ? Math.min(ms, POLL_MS) : ms);
    });
    clearTimeout(timer);
  }

  /**
   * Takes up to `max` messages at once, atomically recorded in `unacked`;
   * when there are none, waits up to `timeoutMs` for some (without taking
   * anything while it waits) and takes them then.
   */
  async receive(max: number, timeoutMs: number): Promise<Delivery[]> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The consumer is closed');
    if (this.#receiving) throw new Error('receive() is already in progress');
    const run = async (): Promise<Delivery[]> => {
      const n = Math.max(1, Math.floor(max));
      const deadline = Date.now() + Math.max(0, timeoutMs);
      for (;;) {
        this.#woken = false;
        const batch = await this.#popBatch(n, this.#keys());
        if (batch.length > 0) {
          this.#rotate(batch[batch.length - 1]!.queue);
          return batch;
        }
        const err = this.#waitError;
        if (err !== undefined) {
          this.#waitError = undefined;
          throw new WireError('ERR_BROKER', `Waiting on the Redis lists failed: ${errorText(err)}`, { cause: err });
        }
        const left = deadline - Date.now();
        if (left <= 0 || this.#closed) return [];
        await this.#wait(left);
        if (this.#closed) return [];
      }
    };
    const p = run();
    this.#receiving = p;
    try {
      return await p;
    } finally {
      this.#receiving = undefined;
    }
  }

  /** @internal Where this consumer's acks go (see {@link RedisTransport.ackTarget}); `null` once closed. */
  get ackTarget(): AckTarget | null {
    return this.#closed ? null : this.#transport.ackTarget();
  }

  /** kombu's `QoS.ack` for many: `ZREM unacked_index` + `HDEL unacked` in one transaction. */
  async ack(deliveries: readonly Delivery[]): Promise<void> {
    const tags = deliveries.map((d) => d.deliveryTag).filter((t) => t !== '');
    if (tags.length === 0) return;
    const s = this.#settings;
    const res = await this.#client
      .multi()
      .zrem(this.#transport.key(s.unackedIndexKey), ...tags)
      .hdel(this.#transport.key(s.unackedKey), ...tags)
      .exec();
    for (const [err] of res ?? []) if (err) throw err;
  }

  #restoreOptions(): RestoreOptions {
    return this.#onError ? { onError: (e: unknown) => this.#report(e) } : {};
  }

  /** kombu's `QoS.reject`: requeue to the far end (`LPUSH`), or drop. */
  async reject(deliveries: readonly Delivery[], requeue: boolean): Promise<void> {
    if (!requeue) return this.ack(deliveries);
    const o = this.#restoreOptions();
    for (const d of deliveries) if (d.deliveryTag) await this.#transport.restoreByTag(d.deliveryTag, true, o);
  }

  /** kombu's `QoS.restore_unacked` for these messages. */
  async recover(deliveries: readonly Delivery[]): Promise<void> {
    // kombu's restore_unacked at shutdown: back to the consuming end, delivered next.
    // In reverse, so that the first received is again the first delivered.
    const o = this.#restoreOptions();
    for (const d of [...deliveries].reverse()) if (d.deliveryTag) await this.#transport.restoreByTag(d.deliveryTag, false, o);
  }

  /**
   * Stops the restore sweeps, lets a pop in flight finish (what it took is in
   * `unacked`, for the caller to recover), and closes the waiting
   * connections (a BLMOVE in flight takes nothing: cutting it is harmless).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#signal();
    await this.#receiving?.catch(() => undefined);
    for (const c of this.#waiters.values()) c.disconnect();
    this.#onClose();
  }
}

// Celery 5.7's chord scripts (celery/backends/redis.py), verbatim, so that Node and
// Python workers count one chord together.
// KEYS: .j, .t, .s, .d, group key, .c ; ARGV: tid, value, ordered, score, expires, group_expires, claim_expires, token
const CHORD_PART_RETURN = new Script(`
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]

-- Prevent late duplicates from recreating chord state after successful cleanup.
local done_marker = redis.call('GET', ckey)
if done_marker == 'done' then
    return {-1, 0, 0, 0}
end

-- Key the check on the task id and header index, so it doesn't merge two
-- header entries that share the task id of a reused frozen signature.
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    end
end

return {readycount, totaldiff, size, claimed}
`);

const CHORD_CLEANUP = new Script(`
local ckey = KEYS[1]
local jkey = KEYS[2]
local tkey = KEYS[3]
local skey = KEYS[4]
local dkey = KEYS[5]
local token = ARGV[1]
local done_expires = tonumber(ARGV[2])

if redis.call('GET', ckey) == token then
    redis.call('DEL', jkey, tkey, skey, dkey)
    if done_expires and done_expires > 0 then
        redis.call('SET', ckey, 'done', 'EX', done_expires)
    end
    return 1
end
return 0
`);

const CHORD_CLAIM_EXTEND = new Script(`
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
`);

/** Celery's `group_keyprefix`. */
const GROUP_KEY_PREFIX = 'celery-taskset-meta-';
/**
 * Celery's defaults in `on_chord_part_return`: the claim lives
 * `max(5, int(result_chord_join_timeout * 2))` = 6 s, the done marker
 * `max(claim * 2, 300)` = 300 s, and the publish lease
 * (`_chord_publish_claim_expires` with `task_publish_retry_policy`'s 3 retries and
 * `broker_connection_timeout` 4 s) = 21 s.
 */
const CHORD_CLAIM_EXPIRES = 6;
const CHORD_DONE_EXPIRES = 300;
const CHORD_PUBLISH_EXPIRES = 21;

/** Celery's Redis result backend: `celery-task-meta-<id>` keys, announced with PUBLISH. */
export class RedisBackend implements ResultBackend {
  readonly #url: RedisOptions;
  readonly #client: RedisClient;
  readonly #expires: number;
  readonly #pollInterval: number;
  readonly #connectTimeout: number;
  readonly #prefix: string;
  #sub: Promise<RedisClient> | undefined;
  readonly #waiters = new Map<string, Set<Waiter>>();
  readonly #toSubscribe = new Set<string>();
  readonly #toUnsubscribe = new Set<string>();
  #flushScheduled = false;
  #poller: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #backendOptions: Record<string, unknown>;
  readonly #tls: TlsOptions | undefined;
  readonly #wait: ReplicationWait | null;

  private constructor(url: RedisOptions, client: RedisClient, options: BackendOptions, tls?: TlsOptions) {
    this.#url = url;
    this.#tls = tls;
    this.#wait = replicationWait(options.transportOptions);
    this.#client = client;
    this.#expires = options.resultExpires === undefined ? 86400 : options.resultExpires ?? 0;
    this.#pollInterval = options.pollInterval ?? 1000;
    this.#connectTimeout = options.connectTimeout ?? 10000;
    const p = options.transportOptions?.global_keyprefix;
    this.#prefix = typeof p === 'string' ? p : '';
    this.#backendOptions = options.transportOptions ?? {};
  }

  /**
   * Connects to the result backend at `url` (`sentinel://` too, with
   * `master_name` in `result_backend_transport_options`: `./sentinel.ts`).
   */
  static async open(url: string, options: BackendOptions = {}): Promise<RedisBackend> {
    const target = connectionOptions(url, options.transportOptions, 'backend');
    replicationWait(options.transportOptions); // refuse bad options before connecting
    const tls = tlsFor(url, target, options.ssl, 'backend');
    const client = await connect(target, options.connectTimeout ?? 10000, 'celery-sign-backend', tls);
    return new RedisBackend(target, client, options, tls);
  }

  /** The key of a task's meta. */
  keyFor(taskId: string): string {
    return this.#prefix + TASK_KEY_PREFIX + taskId;
  }

  /** `result_expires` as the store scripts take it: whole seconds, '0' for none. */
  #expiresArg(): string {
    return String(Math.max(0, Math.floor(this.#expires)));
  }

  /**
   * Celery's `_store_result` for many: `SETEX` + `PUBLISH` each, skipping a
   * stored `SUCCESS`, 500 per script call. With `wait_replicas`, each call
   * is followed by `WAIT` in the same round trip, and repeated (it is
   * idempotent) when the connection was replaced meanwhile.
   */
  async store(results: readonly StoredResult[]): Promise<void> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The result backend is closed');
    const wait = this.#wait;
    for (let i = 0; i < results.length; i += 500) {
      const chunk = results.slice(i, i + 500);
      const keys = chunk.map((r) => this.keyFor(r.taskId));
      const args = [this.#expiresArg(), ...chunk.map((r) => r.value)];
      if (!wait) {
        await STORE_RESULTS.run(this.#client, keys, args);
        continue;
      }
      for (let attempt = 1; ; attempt++) {
        const epoch = epochOf(this.#client);
        const got = await STORE_RESULTS.runThenWait(this.#client, keys, args, wait);
        const same = epochOf(this.#client) === epoch;
        if (same && typeof got === 'number' && got >= wait.replicas) break;
        // Reconnected meanwhile (a fail-over): the WAIT spoke for the new connection only: store again.
        if (same || attempt >= 3) throw notReplicated(`Storing ${chunk.length} result(s), which`, same ? got : null, wait);
      }
    }
  }

  /**
   * Stores `results` as {@link RedisBackend.store} does, and then
   * acknowledges `deliveries` (taken by `consumer`) in the same script call,
   * when the consumer's broker is this backend's own server and database
   * (the same host and port, or socket, and database; not under Sentinel,
   * not with `wait_replicas`): one round trip instead of two, and a store
   * that fails acknowledges nothing. Returns false, having done nothing,
   * when it cannot.
   */
  async storeThenAck(results: readonly StoredResult[], consumer: BrokerConsumer, deliveries: readonly Delivery[]): Promise<boolean> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The result backend is closed');
    if (this.#wait || !(consumer instanceof RedisConsumer)) return false;
    const target = consumer.ackTarget;
    if (target === null || !sameServer(target.server, this.#url)) return false;
    // All but the last chunk of 500 as `store` stores them; the last with the acks.
    const head = results.length > 500 ? 500 * Math.floor((results.length - 1) / 500) : 0;
    if (head > 0) await this.store(results.slice(0, head));
    const last = results.slice(head);
    const keys = last.map((r) => this.keyFor(r.taskId));
    keys.push(target.index, target.hash);
    const args = [this.#expiresArg(), String(last.length)];
    for (const r of last) args.push(r.value);
    for (const d of deliveries) if (d.deliveryTag !== '') args.push(d.deliveryTag);
    await STORE_THEN_ACK.run(this.#client, keys, args);
    return true;
  }

  /** The stored (encoded) meta, or `null`. */
  async get(taskId: string): Promise<string | null> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The result backend is closed');
    return this.#client.get(this.keyFor(taskId));
  }

  /**
   * Waits for a meta for which `isReady` holds, as Celery's `ResultConsumer`
   * does: subscribes to the key's channel (subscriptions are batched), then
   * reads the key, and re-reads pending keys every `pollInterval` ms in case
   * a message was missed (a reconnect). Resolves `null` on timeout.
   */
  wait(taskId: string, timeoutMs: number, isReady: (value: string) => boolean): Promise<string | null> {
    if (this.#closed) return Promise.reject(new WireError('ERR_CLOSED', 'The result backend is closed'));
    return new Promise<string | null>((resolve, reject) => {
      const waiter: Waiter = { isReady, resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs)) {
        waiter.timer = setTimeout(() => this.#settle(taskId, waiter, null), Math.max(0, timeoutMs));
      }
      let set = this.#waiters.get(taskId);
      if (!set) {
        set = new Set();
        this.#waiters.set(taskId, set);
        this.#toUnsubscribe.delete(taskId);
        this.#toSubscribe.add(taskId);
        this.#scheduleFlush();
      } else {
        // Already subscribed: read the current value for this new waiter.
        this.#client.get(this.keyFor(taskId)).then((v) => this.#deliver(taskId, v), () => undefined);
      }
      set.add(waiter);
      this.#startPolling();
    });
  }

  #settle(taskId: string, waiter: Waiter, value: string | null, error?: unknown): void {
    const set = this.#waiters.get(taskId);
    if (!set?.delete(waiter)) return;
    if (waiter.timer) clearTimeout(waiter.timer);
    if (set.size === 0) {
      this.#waiters.delete(taskId);
      if (this.#toSubscribe.delete(taskId)) {
        // never subscribed
      } else {
        this.#toUnsubscribe.add(taskId);
        this.#scheduleFlush();
      }
    }
    if (error !== undefined) waiter.reject(error);
    else waiter.resolve(value);
  }

  #deliver(taskId: string, value: string | null): void {
    if (value === null) return;
    const set = this.#waiters.get(taskId);
    if (!set) return;
    for (const w of [...set]) {
      let ready: boolean;
      try {
        ready = w.isReady(value);
      } catch (err) {
        this.#settle(taskId, w, null, err);
        continue;
      }
      if (ready) this.#settle(taskId, w, value);
    }
  }

  async #subscriber(): Promise<RedisClient> {
    this.#sub ??= (async () => {
      const sub = await connect(this.#url, this.#connectTimeout, 'celery-sign-results', this.#tls);
      sub.on('message', (channel: string, message: string) => {
        if (channel.startsWith(this.#prefix + TASK_KEY_PREFIX)) {
          this.#deliver(channel.slice(this.#prefix.length + TASK_KEY_PREFIX.length), message);
        }
      });
      return sub;
    })();
    return this.#sub;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush().catch(() => undefined);
    });
  }

  async #flush(): Promise<void> {
    if (this.#closed) return;
    const sub = [...this.#toSubscribe];
    const unsub = [...this.#toUnsubscribe];
    this.#toSubscribe.clear();
    this.#toUnsubscribe.clear();
    const client = await this.#subscriber();
    for (let i = 0; i < unsub.length; i += 1000) {
      await client.unsubscribe(...unsub.slice(i, i + 1000).map((id) => this.keyFor(id))).catch(() => undefined);
    }
    for (let i = 0; i < sub.length; i += 1000) {
      const ids = sub.slice(i, i + 1000);
      await client.subscribe(...ids.map((id) => this.keyFor(id)));
      // Subscribed first, read second: a result stored in between is not missed.
      await this.#readNow(ids);
    }
  }

  async #readNow(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 1000) {
      const chunk = ids.slice(i, i + 1000);
      const values = await this.#client.mget(...chunk.map((id) => this.keyFor(id)));
      chunk.forEach((id, j) => this.#deliver(id, values[j] ?? null));
    }
  }

  #startPolling(): void {
    if (this.#poller || this.#pollInterval <= 0) return;
    this.#poller = setInterval(() => {
      if (this.#waiters.size === 0) {
        clearInterval(this.#poller);
        this.#poller = undefined;
        return;
      }
      this.#readNow([...this.#waiters.keys()]).catch(() => undefined);
    }, this.#pollInterval);
    this.#poller.unref();
  }

  /** The key of a group's chord data (`get_key_for_group(gid, suffix)`). */
  groupKey(groupId: string, suffix = ''): string {
    return this.#prefix + GROUP_KEY_PREFIX + groupId + suffix;
  }

  /** Celery's `set_chord_size`: DEL `.c` (a new run of a frozen chord), SET `.s` size with `chord_expires`. */
  async setChordSize(groupId: string, size: number): Promise<void> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The result backend is closed');
    await this.#client.del(this.groupKey(groupId, '.c'));
    const expires = Math.max(0, Math.floor(this.#expires));
    if (expires > 0) await this.#client.set(this.groupKey(groupId, '.s'), String(size), 'EX', expires);
    else await this.#client.set(this.groupKey(groupId, '.s'), String(size));
  }

  /**
   * Celery's `on_chord_part_return` (the Redis backend's, without
   * `chord_unlock`): CHORD_PART_RETURN_LUA, and when this part completes the
   * chord and claims it, the parts (ZRANGE `.j`, or LRANGE with
   * `result_chord_ordered: false`) unless the header was saved as a GroupResult.
   */
  async chordPartReturn(part: ChordPart): Promise<ChordJoin | null> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The result backend is closed');
    const gid = part.groupId;
    const [jkey, tkey, skey, dkey, gkey, ckey] = ['.j', '.t', '.s', '.d', '', '.c'].map((x) => this.groupKey(gid, x)) as [
      string, string, string, string, string, string,
    ];
    const ordered = this.#backendOptions.result_chord_ordered !== false;
    const expires = Math.max(0, Math.floor(this.#expires));
    const token = randomUUID().replace(/-/g, '');
    const out = (await CHORD_PART_RETURN.run(
      this.#client,
      [jkey, tkey, skey, dkey, gkey, ckey],
      [part.taskId, part.value, ordered ? 1 : 0, part.groupIndex ?? '+inf', expires, expires, CHORD_CLAIM_EXPIRES, token],
    )) as [number, string | null, string | null, number];
    const [readycount, totaldiff, size, claimed] = out;
    if (readycount === -1 || !size) return null;
    const total = Number(size) + Number(totaldiff ?? 0);
    if (readycount !== total || !claimed) return null;
    let values: string[] | null = null;
    if ((await this.#client.exists(gkey)) === 0) {
      values = ordered ? await this.#client.zrange(jkey, 0, -1) : await this.#client.lrange(jkey, 0, total);
    }
    const client = this.#client;
    return {
      values,
      extendClaim: async () => Number(await CHORD_CLAIM_EXTEND.run(client, [ckey, skey], [token, CHORD_PUBLISH_EXPIRES])) === 1,
      cleanup: async () => Number(await CHORD_CLEANUP.run(client, [ckey, jkey, tkey, skey, dkey], [token, CHORD_DONE_EXPIRES])) === 1,
      dropSize: async () => {
        await client.del(skey);
      },
    };
  }

  /** Rejects pending waits with `WireError` `ERR_CLOSED` and closes both connections. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poller) clearInterval(this.#poller);
    const err = new WireError('ERR_CLOSED', 'The result backend was closed while waiting');
    for (const [id, set] of [...this.#waiters]) for (const w of [...set]) this.#settle(id, w, null, err);
    const sub = this.#sub;
    this.#sub = undefined;
    await quit(await sub?.catch(() => undefined));
    await quit(this.#client);
  }
}

interface Waiter {
  isReady: (value: string) => boolean;
  resolve: (value: string | null) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

registerTransport(['redis', 'rediss', 'redis+socket', 'sentinel'], (url, options) => RedisTransport.open(url, options));
registerBackend(['redis', 'rediss', 'redis+socket', 'sentinel'], (url, options) => RedisBackend.open(url, options));
