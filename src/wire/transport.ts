/**
 * The transport abstraction of the wire layer: what a broker must do for the
 * client and the worker, independent of how it frames a message. Redis
 * (kombu's virtual transport layout) is `./redis.ts`, AMQP 0-9-1 (RabbitMQ)
 * is `./amqp.ts`; each registers its URL schemes with {@link registerTransport}.
 *
 * The consumer is pull-based (`receive(max, timeout)`), which suits both
 * Redis (BRPOP plus a batch pop) and AMQP (a buffer of pushed deliveries
 * bounded by `basic.qos`), and lets the worker verify whole batches.
 *
 * @module
 */
import { ImproperlyConfigured } from '../errors.js';
import type { SecurityError } from '../errors.js';
import type { BroadcastListener, BroadcastSpec } from './control.js';
import type { SecureSerializer } from '../serializer.js';
import type { ResultMeta, ResultSerializer } from './results.js';
import type { BrokerUseSsl, RedisSslOptions } from './tls.js';

/** What the protocol layer hands a transport to publish. */
export interface OutgoingMessage {
  /** The serialized body (an `auth` payload: base64 text). */
  body: string;
  contentType: string;
  contentEncoding: string;
  /** Protocol v2 headers (AMQP: application headers). */
  headers: Record<string, unknown>;
  /** `correlation_id`, `reply_to`, `delivery_mode`, `priority`, maybe `expiration`. */
  properties: {
    correlation_id: string;
    reply_to: string;
    delivery_mode: number;
    priority: number;
    expiration?: string;
  };
  exchange: string;
  routingKey: string;
  /** The queue to declare (and bind to `exchange` with `routingKey` when not anonymous). */
  queue: string;
}

/** A message handed to the worker by a transport. */
export interface Delivery {
  /** Transport-level id used to ack/reject (kombu's `delivery_tag`). */
  readonly deliveryTag: string;
  /** The queue it came from. */
  readonly queue: string;
  /**
   * The body as the producer serialized it (for `auth`: the payload, base64
   * text), `null` if unreadable: a Buffer (the Redis transport hands the
   * bytes of kombu's base64 body, decoded once) or a string (read as UTF-8).
   */
  readonly body: Buffer | string | null;
  readonly contentType: string | null;
  readonly contentEncoding: string | null;
  readonly headers: Record<string, unknown>;
  readonly properties: Record<string, unknown>;
  readonly exchange: string;
  readonly routingKey: string;
  readonly priority: number;
  /** Set when the broker says it delivered this message before. */
  readonly redelivered: boolean;
  /** Set when the transport could not read the message at all (it is then dropped). */
  readonly malformed?: SecurityError;
}

/** Options a worker passes when it starts consuming. */
export interface ConsumeOptions {
  /** Seconds before an unacknowledged message is given back to its queue (Redis). */
  visibilityTimeout?: number;
  /**
   * Most unacknowledged messages the broker hands this consumer at once
   * (AMQP `basic.qos` prefetch count). Transports that pull (Redis) ignore it:
   * there the worker's own `receive(max)` bounds what it holds.
   */
  prefetch?: number;
  /**
   * Hears what goes wrong in the consumer's background work, where no caller
   * can catch it: a failed restore sweep, a malformed entry of Redis's
   * `unacked` hash (skipped and set aside). The worker turns these into
   * `'error'` events.
   */
  onError?: (err: unknown) => void;
}

/** One consumer of some queues. Not safe for two concurrent `receive` calls. */
export interface BrokerConsumer {
  /**
   * Waits up to `timeoutMs` for at least one message, then returns what is
   * available up to `max` (at least one element, or none on timeout). Every
   * returned delivery is held as unacknowledged until acked, rejected or
   * recovered.
   */
  receive(max: number, timeoutMs: number): Promise<Delivery[]>;
  /** Acknowledges: the messages are gone for good. */
  ack(deliveries: readonly Delivery[]): Promise<void>;
  /** Rejects; with `requeue` the messages go back to the end of their queue (kombu: leftmost). */
  reject(deliveries: readonly Delivery[], requeue: boolean): Promise<void>;
  /** Gives back messages that were received but not started, to the front of their queue. */
  recover(deliveries: readonly Delivery[]): Promise<void>;
  /**
   * Changes the prefetch count (AMQP `basic.qos`), as Celery raises it while
   * it holds ETA tasks. Optional: pull-based transports have no such limit.
   */
  setPrefetch?(count: number): Promise<void>;
  /** Stops receiving; the consumer cannot be used afterwards. */
  close(): Promise<void>;
}

/**
 * A monitoring event message, as Celery's `EventDispatcher` publishes it: to
 * the `celeryev` exchange (a topic exchange on AMQP, kombu's fanout over
 * PUBLISH on Redis) with a routing key such as `task.succeeded`,
 * `worker.heartbeat` or `task.multi` (a list of task events).
 */
export interface EventMessage {
  /** The serialized event (for `auth`: the signed payload text). */
  body: string;
  contentType: string;
  contentEncoding: string;
  /** Celery sends `{hostname}`. */
  headers: Record<string, unknown>;
  /** Default `'celeryev'` (Celery's `event_exchange`). */
  exchange: string;
  /** The event type with `-` turned into `.`: `task.succeeded`, `worker.heartbeat`, `task.multi`. */
  routingKey: string;
  /** 1 (transient, Celery's default for events) or 2. */
  deliveryMode: number;
}

/**
 * A message published as it is, declaring nothing: a result that Celery's
 * `rpc` backend sends to a client's reply queue (the default exchange `''`,
 * routing key = the queue named by the task's `reply_to`).
 */
export interface ReplyMessage {
  /** The encoded meta (JSON text, or an `auth` payload). */
  body: string;
  /** `application/json`, or `application/data` for `auth`. */
  contentType: string;
  /** `utf-8`. */
  contentEncoding: string;
  /** `''`: the default exchange, which routes to the queue named `routingKey`. */
  exchange: string;
  /** The reply queue (the task message's `reply_to`). */
  routingKey: string;
  /** The task id (the task message's `correlation_id`). */
  correlationId: string;
  /** 1 (transient, Celery's default for results) or 2 (`result_persistent`). */
  deliveryMode: number;
}

/** A connection to a broker. */
export interface BrokerTransport {
  /** `'redis'`, `'amqp'`... */
  readonly name: string;
  /** Publishes a batch, in order; resolves once the broker has them all. */
  publish(messages: readonly OutgoingMessage[]): Promise<void>;
  /**
   * Publishes monitoring events (fire and forget for the receivers: nobody
   * acknowledges an event); resolves once the broker has them.
   */
  publishEvents?(events: readonly EventMessage[]): Promise<void>;
  /**
   * Publishes messages as they are, declaring nothing (the `rpc://`
   * backend's replies); resolves once the broker has them all. A message
   * that no queue takes is dropped by the broker, as with Celery.
   */
  publishReplies?(messages: readonly ReplyMessage[]): Promise<void>;
  /** Starts consuming `queues` (in this order of preference). */
  consume(queues: readonly string[], options?: ConsumeOptions): Promise<BrokerConsumer>;
  close(): Promise<void>;
  /**
   * Remote control (`./control.ts`): declares the node's queue bound to a
   * fanout exchange and hands each message to `onMessage` (no
   * acknowledgement: kombu's pidbox consumes with `no_ack`). Reconnects by
   * itself; `onError` hears what goes wrong meanwhile.
   */
  listenBroadcast?(spec: BroadcastSpec, onMessage: (d: Delivery) => void, onError: (err: unknown) => void): Promise<BroadcastListener>;
  /** Remote control replies: each to its direct exchange and routing key (the requester's reply queue). */
  publishControlReplies?(replies: readonly EventMessage[]): Promise<void>;
}

/** A result to store, already encoded the way the backend's serializer writes it. */
export interface StoredResult {
  taskId: string;
  /** The encoded meta (JSON text, or an `auth` payload). */
  value: string;
  /** The task message's `reply_to` (the client's reply queue, for `rpc://`). */
  replyTo?: string;
  /** The task message's `correlation_id` (the task id, for `rpc://`). */
  correlationId?: string;
}

/** A result backend (Celery's `celery-task-meta-<id>` keys on Redis). */
export interface ResultBackend {
  /**
   * Stores results as Celery's `_store_result` does: never over a stored
   * `SUCCESS`. Resolves when all are stored and announced.
   */
  store(results: readonly StoredResult[]): Promise<void>;
  /**
   * Optional: stores `results` as {@link ResultBackend.store} does and then
   * acknowledges `deliveries` (taken by `consumer`) in one atomic step, where
   * the consumer's broker is this backend's own server (Redis: the same
   * server and database). Resolves false, having done nothing, where it
   * cannot; the caller then stores and acknowledges separately.
   */
  storeThenAck?(results: readonly StoredResult[], consumer: BrokerConsumer, deliveries: readonly Delivery[]): Promise<boolean>;
  /** The stored, still encoded meta of a task, or `null`. */
  get(taskId: string): Promise<string | null>;
  /** Waits until `isReady(value)` holds for the stored meta, or the timeout (then `null`). */
  wait(taskId: string, timeoutMs: number, isReady: (value: string) => boolean): Promise<string | null>;
  /**
   * Optional: called by the client before it sends tasks (Celery's
   * `on_task_call`), e.g. to declare and consume its reply queue first.
   */
  onTaskCall?(): Promise<void>;
  /** Optional: the latest meta, already decoded (a backend that decodes what it receives). */
  getMeta?(taskId: string): Promise<ResultMeta | null>;
  /** Optional: waits for a ready meta, already decoded, or the timeout (then `null`). */
  waitMeta?(taskId: string, timeoutMs: number): Promise<ResultMeta | null>;
  close(): Promise<void>;
  /**
   * Celery's `set_chord_size(group_id, chord_size)` (the chord-unlock-free
   * path of the Redis backend). Optional: a backend without it cannot run chords.
   */
  setChordSize?(groupId: string, size: number): Promise<void>;
  /**
   * The counting step of Celery's `on_chord_part_return`: records one header
   * part's encoded `[1, task_id, state, result]`; resolves `null` unless this
   * part completed the chord and claimed the right to publish its body.
   */
  chordPartReturn?(part: ChordPart): Promise<ChordJoin | null>;
}

/** One finished chord header task, as `on_chord_part_return` records it. */
export interface ChordPart {
  groupId: string;
  taskId: string;
  /** `request.group_index`; `null` is Celery's `'+inf'`. */
  groupIndex: number | null;
  /** `backend.encode([1, task_id, state, result])` in the result serializer. */
  value: string;
}

/** A completed chord, claimed by this worker: the header's parts and the claim's steps. */
export interface ChordJoin {
  /** The parts in header order (encoded as stored), or `null` when the header was saved as a GroupResult (nested groups). */
  values: string[] | null;
  /** Extends the claim for the time a publish may take; `false`: the claim was lost, do not publish. */
  extendClaim(): Promise<boolean>;
  /** After publishing the body: removes the chord's keys and marks it done (late duplicates are ignored). */
  cleanup(): Promise<boolean>;
  /** After a chord error: drops the chord size, so a late copy of a header task does not fail it again. */
  dropSize(): Promise<void>;
}

/** Options every transport factory receives. */
export interface TransportOptions {
  /** kombu's `broker_transport_options` (Redis: `visibility_timeout`, `priority_steps`, `sep`, `global_keyprefix`...). */
  transportOptions?: Record<string, unknown>;
  /** Milliseconds to connect before failing. Default 10000. */
  connectTimeout?: number;
  /** Celery's `broker_use_ssl` (see `./tls.ts`). */
  ssl?: BrokerUseSsl;
}

/** Opens a broker connection for a URL. */
export type TransportFactory = (url: string, options: TransportOptions) => Promise<BrokerTransport>;
/** Opens a result backend for a URL. */
export type BackendFactory = (url: string, options: BackendOptions) => Promise<ResultBackend>;

/** Options of a result backend. */
export interface BackendOptions {
  /** Seconds a result is kept (Celery's `result_expires`, default one day); 0 or null: forever. */
  resultExpires?: number | null;
  /** Milliseconds between re-reads of pending results while waiting (a safety net under pub/sub). */
  pollInterval?: number;
  /** Milliseconds to connect before failing. Default 10000. */
  connectTimeout?: number;
  /** kombu/Celery `result_backend_transport_options`: `global_keyprefix`. */
  transportOptions?: Record<string, unknown>;
  /** Celery's `redis_backend_use_ssl` (see `./tls.ts`). */
  ssl?: boolean | RedisSslOptions;
  /** The broker connection of the client or worker (for `rpc://`, whose results travel on the broker). */
  broker?: () => Promise<BrokerTransport>;
  /** The client's id: its reply queue (Celery's `app.thread_oid`). Only a client passes it. */
  oid?: string;
  /** Celery's `result_serializer`: how results are encoded (`'json'` or `'auth'`). */
  resultSerializer?: ResultSerializer;
  /** Verifies (and, for a worker, signs) `auth` results. */
  security?: SecureSerializer;
  /** Celery's `result_persistent`: results sent as persistent messages (`rpc://`). Default `false`. */
  persistent?: boolean;
}

/** What a result backend needs of its client or worker, declared with {@link registerBackend}. */
export interface BackendTraits {
  /**
   * Throws `ImproperlyConfigured` when the backend cannot work with this
   * broker; `createClient` and `createWorker` call it.
   */
  check?(backendUrl: string, brokerUrl: string): void;
  /** The client must open the backend before it sends a task (it calls {@link ResultBackend.onTaskCall}). */
  onTaskCall?: boolean;
}

const transports = new Map<string, TransportFactory>();
const backends = new Map<string, BackendFactory>();
const traits = new Map<string, BackendTraits>();

/**
 * Registers a broker transport for URL schemes (without the colon), e.g.
 * `registerTransport(['amqp', 'amqps', 'pyamqp'], openAmqp)`.
 */
export function registerTransport(schemes: readonly string[], factory: TransportFactory): void {
  for (const s of schemes) transports.set(s.toLowerCase(), factory);
}

/** Registers a result backend for URL schemes (without the colon). */
export function registerBackend(schemes: readonly string[], factory: BackendFactory, backendTraits: BackendTraits = {}): void {
  for (const s of schemes) {
    backends.set(s.toLowerCase(), factory);
    traits.set(s.toLowerCase(), backendTraits);
  }
}

/**
 * The traits registered for a backend URL's scheme (none for an unknown
 * scheme: {@link openBackend} reports that).
 */
export function backendTraits(url: string): BackendTraits {
  const m = typeof url === 'string' ? /^([a-z][a-z0-9+.-]*):/i.exec(url) : null;
  return (m && traits.get(m[1]!.toLowerCase())) || {};
}

/** Throws `ImproperlyConfigured` when the backend registered for `backendUrl` cannot work with `brokerUrl`. */
export function checkBackend(backendUrl: string, brokerUrl: string): void {
  backendTraits(backendUrl).check?.(backendUrl, brokerUrl);
}

function schemeOf(url: string, what: string): string {
  if (typeof url !== 'string') throw new ImproperlyConfigured(`${what} must be a URL string`);
  const m = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (!m) throw new ImproperlyConfigured(`${what} is not a URL: expected scheme://...`);
  return m[1]!.toLowerCase();
}

/** Opens the transport registered for the URL's scheme. */
export async function openTransport(url: string, options: TransportOptions = {}): Promise<BrokerTransport> {
  const scheme = schemeOf(url, 'broker');
  const factory = transports.get(scheme);
  if (!factory) {
    throw new ImproperlyConfigured(
      `No transport for ${JSON.stringify(scheme + '://')}: supported: ${[...transports.keys()].map((s) => s + '://').join(', ')}`,
    );
  }
  return factory(url, options);
}

/** Opens the result backend registered for the URL's scheme. */
export async function openBackend(url: string, options: BackendOptions = {}): Promise<ResultBackend> {
  const scheme = schemeOf(url, 'backend');
  const factory = backends.get(scheme);
  if (!factory) {
    throw new ImproperlyConfigured(
      `No result backend for ${JSON.stringify(scheme + '://')}: supported: ${[...backends.keys()].map((s) => s + '://').join(', ')}`,
    );
  }
  return factory(url, options);
}
