/**
 * The AMQP 0-9-1 transport (RabbitMQ) on amqplib (an optional peer
 * dependency, loaded only when an `amqp://` URL is used), as kombu's
 * `pyamqp` transport and Celery use it.
 *
 * On the wire, as `kombu.transport.pyamqp` publishes a Celery task:
 * - the body is the message content (for `auth`: the signed payload text,
 *   not base64'd again), `content_type` and `content_encoding` are message
 *   properties, Celery's protocol v2 headers are the application headers
 *   (an AMQP field table), and `correlation_id`, `reply_to`,
 *   `delivery_mode` (2, persistent), `priority` and `expiration` are
 *   properties;
 * - a task queue is declared as Celery declares its queues: the queue
 *   (durable, not exclusive, not auto-delete, no arguments unless
 *   `queue_arguments` says so: match Celery's `task_queue_max_priority` /
 *   `x-queue-type` there), a direct exchange of the same name (durable) and
 *   the binding queue <- exchange with the queue name as routing key. The
 *   default queue is `celery` on the exchange `celery`. A Python worker and a
 *   Node worker can therefore share a queue. Should the broker already hold
 *   an entity declared otherwise (`PRECONDITION_FAILED`), the transport falls
 *   back to a passive declaration and uses it as it is;
 * - events go to the topic exchange `celeryev` (durable), as Celery's
 *   `EventDispatcher` sends them.
 *
 * Publishing waits for publisher confirms (kombu's `confirm_publish`, on by
 * default here): `publish` resolves once the broker has taken responsibility
 * for every message (persisted, for a durable queue and a persistent message).
 *
 * Consuming: one connection and channel per consumer, `basic.qos` prefetch
 * (for the channel, as Celery sets it on RabbitMQ), manual acknowledgement. The pushed deliveries are buffered and handed out
 * by `receive(max, timeout)` in batches. A message is acknowledged only when
 * the worker says so; a lost connection is re-established in the background,
 * and the messages it held are redelivered by the broker (marked
 * `redelivered`), so a task whose acknowledgement was lost may run twice
 * (at-least-once, as with Celery's `task_acks_late`), none is lost.
 *
 * @module
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { ImproperlyConfigured, SecurityError } from '../errors.js';
import { makeFramesTolerant, UNDECODABLE_HEADERS, type ConnectionModule, type FrameModule } from './amqp-codec.js';
import type { BroadcastListener, BroadcastSpec } from './control.js';
import { WireError } from './errors.js';
import { amqpTls, diagnoseTls, mayHideAlert, tlsFailure, type AmqpTls } from './tls.js';
import {
  registerTransport,
  type BrokerConsumer,
  type BrokerTransport,
  type ConsumeOptions,
  type Delivery,
  type EventMessage,
  type OutgoingMessage,
  type ReplyMessage,
  type TransportOptions,
} from './transport.js';

type Amqplib = { connect(url: string | Options.Connect, socketOptions?: unknown): Promise<ChannelModel> };
let libPromise: Promise<Amqplib> | undefined;

/** The CommonJS module object behind a dynamic import (the namespace's `default`, when it has `key`). */
function cjs<T>(ns: unknown, key: string): T {
  const d = (ns as { default?: unknown }).default;
  return (d !== null && typeof d === 'object' && key in d ? d : ns) as T;
}

/**
 * Loads amqplib on first use, and makes its frame reader tolerant of header
 * values it cannot read (`./amqp-codec.ts`): one header must not drop the
 * connection.
 */
async function loadAmqplib(): Promise<Amqplib> {
  libPromise ??= (async () => {
    let lib: Amqplib;
    let tolerant: boolean;
    try {
      lib = cjs(await import('amqplib'), 'connect');
      // Non-literal specifiers: amqplib's internals have no type declarations.
      const connectionPath = 'amqplib/lib/connection.js';
      const framePath = 'amqplib/lib/frame.js';
      tolerant = makeFramesTolerant(
        cjs<ConnectionModule>(await import(connectionPath), 'Connection'),
        cjs<FrameModule>(await import(framePath), 'parseFrame'),
      );
    } catch (err) {
      libPromise = undefined;
      throw new ImproperlyConfigured(
        "An amqp:// broker needs the 'amqplib' package (version 0.10): npm install amqplib",
        { cause: err },
      );
    }
    if (typeof lib.connect !== 'function') throw new ImproperlyConfigured('amqplib does not export connect');
    if (!tolerant) {
      process.emitWarning(
        'celery-sign could not make this amqplib version read every header type: a message header it cannot read (a 64-bit integer from py-amqp) drops the connection',
        'CelerySignWarning',
      );
    }
    return lib;
  })();
  return libPromise;
}

/** The transport options (`broker_transport_options`) this transport reads. */
export interface AmqpTransportOptions {
  /**
   * Arguments of every task queue it declares, e.g. `{ 'x-max-priority': 10 }`
   * when the Celery side has `task_queue_max_priority = 10`, or
   * `{ 'x-queue-type': 'quorum' }`. Default none, as Celery's defaults.
   */
  queue_arguments?: Record<string, unknown>;
  /** Type of the exchange declared with each task queue. Default `'direct'` (Celery's `task_default_exchange_type`). */
  exchange_type?: string;
  /** Wait for publisher confirms (kombu's `confirm_publish`). Default `true`. */
  confirm_publish?: boolean;
  /**
   * Seconds to wait for the confirms of a publish before failing it (kombu's
   * `confirm_timeout`), e.g. while RabbitMQ blocks publishers under a memory
   * or disk alarm. Default: no limit.
   */
  confirm_timeout?: number;
  /** Seconds of the AMQP heartbeat. Default 60 (or the URL's `?heartbeat=`). */
  heartbeat?: number;
  /** Most seconds between two attempts to reconnect a consumer. Default 2. */
  max_retry_interval?: number;
  /**
   * `basic.qos` with `global` set: on RabbitMQ one limit for the consumer's
   * channel, which (unlike a per-consumer limit) can be raised while
   * consuming, as Celery does for ETA tasks. Celery sets it too on RabbitMQ.
   * Default `true`, `false` for quorum queues (they do not support it).
   */
  qos_global?: boolean;
}

interface Settings {
  queueArguments: Record<string, unknown> | undefined;
  exchangeType: string;
  confirm: boolean;
  confirmTimeout: number | undefined;
  heartbeat: number | undefined;
  maxRetryInterval: number;
  qosGlobal: boolean;
  /** TLS (`amqps://`, `broker_use_ssl`): read once when the transport opens (`./tls.ts`). */
  tls?: AmqpTls | undefined;
}

function settingsFrom(o: Record<string, unknown> = {}): Settings {
  const args = o.queue_arguments;
  if (args !== undefined && args !== null && (typeof args !== 'object' || Array.isArray(args))) {
    throw new ImproperlyConfigured('queue_arguments must be an object');
  }
  const num = (v: unknown, what: string): number | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ImproperlyConfigured(`${what} must be a non-negative number`);
    return v;
  };
  return {
    queueArguments: (args as Record<string, unknown> | null | undefined) ?? undefined,
    exchangeType: typeof o.exchange_type === 'string' && o.exchange_type ? o.exchange_type : 'direct',
    confirm: o.confirm_publish !== false,
    confirmTimeout: num(o.confirm_timeout, 'confirm_timeout'),
    heartbeat: num(o.heartbeat, 'heartbeat'),
    maxRetryInterval: num(o.max_retry_interval, 'max_retry_interval') ?? 2,
    qosGlobal:
      typeof o.qos_global === 'boolean'
        ? o.qos_global
        : (args as Record<string, unknown> | null | undefined)?.['x-queue-type'] !== 'quorum',
  };
}

/**
 * What {@link amqpOptionsFromUrl} returns: the fields of amqplib's
 * `Options.Connect` it sets, declared here so that the emitted declarations
 * never import `amqplib` (an optional peer a TypeScript user may not have).
 * `openConnection` hands it to `amqplib.connect`, which checks it against the
 * real type inside this project.
 */
export interface AmqpConnectOptions {
  protocol: 'amqp' | 'amqps';
  hostname: string;
  port: number;
  username: string;
  password: string;
  vhost: string;
  frameMax: number;
  heartbeat?: number;
}

/**
 * Connection options from a kombu/Celery AMQP URL:
 * `amqp://[user[:password]@]host[:port][/vhost][?heartbeat=N]` (also
 * `pyamqp://`, `amqps://`, `pyamqps://`). As kombu reads it: user and
 * password default to `guest`, the port to 5672 (5671 with TLS), and the
 * virtual host is the path without its first `/` (`amqp://h//` and `amqp://h`
 * are both the vhost `/`).
 */
export function amqpOptionsFromUrl(url: string): AmqpConnectOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ImproperlyConfigured('Not an AMQP URL', { cause: err });
  }
  const scheme = u.protocol.replace(/:$/, '').toLowerCase();
  let tls: boolean;
  if (scheme === 'amqp' || scheme === 'pyamqp') tls = false;
  else if (scheme === 'amqps' || scheme === 'pyamqps') tls = true;
  else throw new ImproperlyConfigured(`Not an AMQP URL scheme: ${scheme}`);
  const path = u.pathname.startsWith('/') ? u.pathname.slice(1) : u.pathname;
  const vhost = path === '' ? '/' : decodeURIComponent(path);
  const opts: AmqpConnectOptions = {
    protocol: tls ? 'amqps' : 'amqp',
    hostname: u.hostname.replace(/^\[|\]$/g, '') || 'localhost',
    port: u.port ? Number(u.port) : tls ? 5671 : 5672,
    username: u.username ? decodeURIComponent(u.username) : 'guest',
    password: u.password ? decodeURIComponent(u.password) : 'guest',
    // amqplib unescapes the vhost once more.
    vhost: vhost.replace(/%/g, '%25'),
    frameMax: 131072,
  };
  const hb = u.searchParams.get('heartbeat');
  if (hb !== null && /^\d+$/.test(hb)) opts.heartbeat = Number(hb);
  return opts;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function brokerError(what: string, err: unknown): WireError {
  return err instanceof WireError ? err : new WireError('ERR_BROKER', `${what}: ${errorText(err)}`, { cause: err });
}

/** AMQP reply code 406: an entity exists with other properties. */
function isPreconditionFailed(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === 406 || (typeof e?.message === 'string' && e.message.includes('PRECONDITION_FAILED'));
}

async function closeQuietly(x: { close(): Promise<void> } | undefined): Promise<void> {
  if (!x) return;
  try {
    await x.close();
  } catch {
    /* already closed */
  }
}

/** Opens a connection, failing after `connectTimeout` ms. */
async function openConnection(
  url: string,
  settings: Settings,
  connectTimeout: number,
  name: string,
): Promise<ChannelModel> {
  const lib = await loadAmqplib();
  const opts = amqpOptionsFromUrl(url);
  if (opts.heartbeat === undefined) opts.heartbeat = settings.heartbeat ?? 60;
  const tls = settings.tls;
  if (tls) {
    opts.protocol = 'amqps';
    if (tls.port !== undefined) opts.port = tls.port;
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const model = await Promise.race([
      lib.connect(opts, { ...tls?.socket, timeout: connectTimeout, clientProperties: { connection_name: name, product: 'celery-sign' } }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${connectTimeout} ms`)), connectTimeout);
      }),
    ]);
    // amqplib emits 'error' before 'close' on a connection error: observed by the owners, never unhandled.
    model.on('error', () => undefined);
    return model;
  } catch (err) {
    let why = tls ? tlsFailure(err, 'amqp') : undefined;
    const alert = tls && !why && mayHideAlert(err) ? await diagnoseTls(opts.hostname, opts.port, tls.socket) : undefined;
    why ??= tlsFailure(alert, 'amqp');
    if (why) throw new WireError('ERR_BROKER', `Cannot connect to the AMQP broker over TLS (${name}): ${why}`, { cause: alert ?? err });
    throw new WireError('ERR_BROKER', `Cannot connect to AMQP broker: ${errorText(err)}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/** An entity to declare, as kombu's `maybe_declare` declares a Celery queue or the events exchange. */
type Entity =
  | { kind: 'queue'; queue: string; exchange: string; exchangeType: string; routingKey: string; arguments: Record<string, unknown> | undefined }
  | { kind: 'exchange'; exchange: string; exchangeType: string; durable?: boolean };

function entityId(e: Entity): string {
  return e.kind === 'queue' ? `q\x00${e.queue}\x00${e.exchange}\x00${e.routingKey}` : `x\x00${e.exchange}\x00${e.durable ?? true}`;
}

/**
 * Declares entities on a channel of their own (an error closes only that
 * channel). A declaration the broker refuses with `PRECONDITION_FAILED` (the
 * entity exists with other properties: another durability, priority
 * arguments, a quorum queue...) is retried passively: the entity is used as
 * it is.
 */
async function declareEntities(model: ChannelModel, entities: readonly Entity[]): Promise<void> {
  if (entities.length === 0) return;
  let ch: Channel | undefined = await model.createChannel();
  ch.on('error', () => undefined);
  const fresh = async (): Promise<Channel> => {
    await closeQuietly(ch);
    ch = await model.createChannel();
    ch.on('error', () => undefined);
    return ch;
  };
  const attempt = async (active: () => Promise<unknown>, passive: () => Promise<unknown>): Promise<void> => {
    try {
      await active();
    } catch (err) {
      if (!isPreconditionFailed(err)) throw err;
      await fresh();
      await passive();
    }
  };
  try {
    for (const e of entities) {
      if (e.exchange !== '') {
        await attempt(
          () =>
            ch!.assertExchange(e.exchange, e.exchangeType, {
              durable: e.kind === 'exchange' ? e.durable ?? true : true,
              autoDelete: false,
              internal: false,
            }),
          () => ch!.checkExchange(e.exchange),
        );
      }
      if (e.kind === 'queue') {
        await attempt(
          () =>
            ch!.assertQueue(e.queue, {
              durable: true,
              exclusive: false,
              autoDelete: false,
              ...(e.arguments ? { arguments: e.arguments } : {}),
            }),
          () => ch!.checkQueue(e.queue),
        );
        if (e.exchange !== '') await ch.bindQueue(e.queue, e.exchange, e.routingKey);
      }
    }
  } finally {
    await closeQuietly(ch);
  }
}

/** The publishing side of the transport: one connection, one (confirm) channel. */
interface Publisher {
  model: ChannelModel;
  channel: ConfirmChannel | Channel;
  confirm: boolean;
  declared: Set<string>;
  closed: boolean;
}

/** Waits for a channel's 'drain' (its write buffer emptied) or its end. */
function drained(ch: Channel): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      ch.off('drain', done);
      ch.off('close', done);
      resolve();
    };
    ch.once('drain', done);
    ch.once('close', done);
  });
}

/** The AMQP options of a task message, as kombu's pyamqp `prepare_message` makes them. */
function publishOptions(m: OutgoingMessage): Options.Publish {
  const p = m.properties;
  const o: Options.Publish = {
    contentType: m.contentType,
    contentEncoding: m.contentEncoding,
    headers: m.headers,
    deliveryMode: p.delivery_mode,
    priority: p.priority,
    correlationId: p.correlation_id,
  };
  if (p.reply_to) o.replyTo = p.reply_to;
  if (p.expiration !== undefined) o.expiration = p.expiration;
  return o;
}

/** kombu's AMQP transport: publishing and consuming over RabbitMQ. */
export class AmqpTransport implements BrokerTransport {
  readonly name = 'amqp';
  readonly #url: string;
  readonly #settings: Settings;
  readonly #connectTimeout: number;
  readonly #consumers = new Set<AmqpConsumer>();
  #publisher: Promise<Publisher> | undefined;
  #closed = false;

  private constructor(url: string, settings: Settings, connectTimeout: number) {
    this.#url = url;
    this.#settings = settings;
    this.#connectTimeout = connectTimeout;
  }

  /** Connects to the broker at `url` (the publishing connection). */
  static async open(url: string, options: TransportOptions = {}): Promise<AmqpTransport> {
    amqpOptionsFromUrl(url); // a bad URL fails here, not at first use
    const settings = settingsFrom(options.transportOptions);
    settings.tls = amqpTls(url, options.ssl);
    const t = new AmqpTransport(url, settings, options.connectTimeout ?? 10000);
    await t.#getPublisher();
    return t;
  }

  #check(): void {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The AMQP transport is closed');
  }

  /** @internal */
  taskQueue(queue: string, exchange = queue, routingKey = queue): Entity {
    return {
      kind: 'queue',
      queue,
      exchange,
      exchangeType: this.#settings.exchangeType,
      routingKey,
      arguments: this.#settings.queueArguments,
    };
  }

  /** The publishing connection, opened (again) on demand. */
  #getPublisher(): Promise<Publisher> {
    if (this.#publisher) return this.#publisher;
    const current: Promise<Publisher> = (async () => {
      const model = await openConnection(this.#url, this.#settings, this.#connectTimeout, 'celery-sign');
      try {
        const confirm = this.#settings.confirm;
        const channel = confirm ? await model.createConfirmChannel() : await model.createChannel();
        const pub: Publisher = { model, channel, confirm, declared: new Set(), closed: false };
        const lost = (): void => {
          if (pub.closed) return;
          pub.closed = true;
          if (this.#publisher === current) this.#publisher = undefined;
          void closeQuietly(model);
        };
        channel.on('error', () => undefined);
        channel.on('close', lost);
        model.on('close', lost);
        return pub;
      } catch (err) {
        await closeQuietly(model);
        throw brokerError('Cannot open an AMQP channel', err);
      }
    })();
    this.#publisher = current;
    // A failed connection is not kept: the next publish tries again.
    current.catch(() => {
      if (this.#publisher === current) this.#publisher = undefined;
    });
    return current;
  }

  async #declare(pub: Publisher, entities: readonly Entity[]): Promise<void> {
    const todo = new Map<string, Entity>();
    for (const e of entities) {
      const id = entityId(e);
      if (!pub.declared.has(id)) todo.set(id, e);
    }
    if (todo.size === 0) return;
    await declareEntities(pub.model, [...todo.values()]);
    for (const id of todo.keys()) pub.declared.add(id);
  }

  /** Declares task queues (queue, exchange of the same name, binding), as a Celery worker does at start. */
  async declareQueues(queues: readonly string[]): Promise<void> {
    this.#check();
    const pub = await this.#getPublisher();
    await this.#declare(pub, queues.map((q) => this.taskQueue(q)));
  }

  async #send(
    items: readonly { exchange: string; routingKey: string; content: Buffer; options: Options.Publish }[],
    entities: readonly Entity[],
  ): Promise<void> {
    this.#check();
    if (items.length === 0) return;
    let pub: Publisher;
    try {
      pub = await this.#getPublisher();
      await this.#declare(pub, entities);
    } catch (err) {
      throw brokerError('AMQP publish failed', err);
    }
    const ch = pub.channel;
    const confirms: Promise<void>[] = [];
    for (const it of items) {
      if (pub.closed) throw new WireError('ERR_BROKER', 'AMQP publish failed: the connection was lost');
      let ok: boolean;
      try {
        if (pub.confirm) {
          let settle!: (err: unknown) => void;
          const confirmed = new Promise<void>((resolve, reject) => {
            settle = (err: unknown) => (err ? reject(brokerError('AMQP publish not confirmed', err)) : resolve());
          });
          confirmed.catch(() => undefined); // read below; never an unhandled rejection when we leave early
          confirms.push(confirmed);
          ok = (ch as ConfirmChannel).publish(it.exchange, it.routingKey, it.content, it.options, (err: unknown) => settle(err));
        } else {
          ok = ch.publish(it.exchange, it.routingKey, it.content, it.options);
        }
      } catch (err) {
        // The channel closed under us: the messages not confirmed fail with it.
        throw brokerError('AMQP publish failed', err);
      }
      // A full write buffer: wait until it drains (or the channel ends; checked above and by 'close').
      if (!ok && !pub.closed) await drained(ch);
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = this.#settings.confirmTimeout;
    const settled = await Promise.race([
      Promise.allSettled(confirms),
      ...(timeout !== undefined
        ? [
            new Promise<never>((_, reject) => {
              timer = setTimeout(
                () => reject(new WireError('ERR_BROKER', `AMQP publish not confirmed within ${timeout} s`)),
                timeout * 1000,
              );
            }),
          ]
        : []),
    ]).finally(() => clearTimeout(timer));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Publishes task messages (declaring their queues first, once per
   * connection) and resolves once the broker confirmed every one.
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    const entities: Entity[] = [];
    for (const m of messages) {
      // Celery: the anonymous exchange routes by key; the queue is declared with its own exchange.
      entities.push(m.exchange ? this.taskQueue(m.queue, m.exchange, m.routingKey) : this.taskQueue(m.routingKey));
    }
    await this.#send(
      messages.map((m) => ({
        exchange: m.exchange,
        routingKey: m.routingKey,
        content: Buffer.from(m.body, 'utf8'),
        options: publishOptions(m),
      })),
      entities,
    );
  }

  /** Publishes events to their (topic) exchange, declared once per connection as Celery's dispatcher declares it. */
  async publishEvents(events: readonly EventMessage[]): Promise<void> {
    await this.#publishToExchanges(events, { exchangeType: 'topic' });
  }

  /**
   * Remote control replies: to the requester's direct exchange (declared as
   * kombu's pidbox declares it: direct, not durable), transient
   * (`delivery_mode` 1), with the `{ticket, clock}` headers.
   */
  async publishControlReplies(replies: readonly EventMessage[]): Promise<void> {
    await this.#publishToExchanges(replies, { exchangeType: 'direct', durable: false });
  }

  /** Events and control replies: each to its exchange, declared once per connection as `declare` says. */
  async #publishToExchanges(messages: readonly EventMessage[], declare: { exchangeType: string; durable?: boolean }): Promise<void> {
    const exchanges = [...new Set(messages.map((e) => e.exchange))];
    await this.#send(
      messages.map((e) => ({
        exchange: e.exchange,
        routingKey: e.routingKey,
        content: Buffer.from(e.body, 'utf8'),
        options: {
          contentType: e.contentType,
          contentEncoding: e.contentEncoding,
          headers: e.headers,
          deliveryMode: e.deliveryMode,
          priority: 0,
        },
      })),
      exchanges.map((x) => ({ kind: 'exchange', exchange: x, ...declare })),
    );
  }

  /**
   * Publishes messages as they are, declaring nothing: the results Celery's
   * `rpc` backend sends to a client's reply queue (default exchange, routing
   * key = the queue). Resolves once the broker confirmed every one; one that
   * no queue takes (the client is gone) is confirmed and dropped, as with Celery.
   */
  async publishReplies(messages: readonly ReplyMessage[]): Promise<void> {
    await this.#send(
      messages.map((m) => ({
        exchange: m.exchange,
        routingKey: m.routingKey,
        content: Buffer.from(m.body, 'utf8'),
        options: {
          contentType: m.contentType,
          contentEncoding: m.contentEncoding,
          headers: {},
          deliveryMode: m.deliveryMode,
          priority: 0,
          correlationId: m.correlationId,
        },
      })),
      [],
    );
  }

  /**
   * Remote control: on a connection of its own, declares the fanout exchange
   * (not durable) and the node's queue as kombu's pidbox declares them
   * (exclusive, auto-delete, not durable, `x-message-ttl` and `x-expires`),
   * binds it, consumes it without acknowledgement and hands each message to
   * `onMessage`. A lost connection is re-established in the background
   * (`onError` hears why); a queue held by another connection (a node of
   * the same name: `RESOURCE_LOCKED`) is reported and retried.
   */
  async listenBroadcast(
    spec: BroadcastSpec,
    onMessage: (d: Delivery) => void,
    onError: (err: unknown) => void,
  ): Promise<BroadcastListener> {
    this.#check();
    let closed = false;
    let model: ChannelModel | undefined;
    let gen = 0;
    const open = async (): Promise<void> => {
      const m = await openConnection(this.#url, this.#settings, this.#connectTimeout, 'celery-sign-pidbox');
      try {
        const ch = await m.createChannel();
        ch.on('error', () => undefined);
        await ch.assertExchange(spec.exchange, 'fanout', { durable: false, autoDelete: false, internal: false });
        const args: Record<string, unknown> = {};
        if (spec.messageTtl !== null) args['x-message-ttl'] = spec.messageTtl;
        if (spec.expires !== null) args['x-expires'] = spec.expires;
        await ch.assertQueue(spec.queue, { durable: false, exclusive: true, autoDelete: true, arguments: args });
        await ch.bindQueue(spec.queue, spec.exchange, '');
        const g = ++gen;
        await ch.consume(spec.queue, (msg) => {
          if (msg === null) {
            void closeQuietly(m);
            return;
          }
          try {
            onMessage(toDelivery(g, spec.queue, msg));
          } catch (err) {
            onError(err);
          }
        }, { noAck: true });
      } catch (err) {
        await closeQuietly(m);
        if (/RESOURCE.LOCKED/.test(errorText(err))) {
          // kombu's W_PIDBOX_IN_USE
          throw new WireError(
            'ERR_BROKER',
            `A node named ${JSON.stringify(spec.queue.slice(0, -spec.exchange.length - 1))} is already using this process mailbox (${spec.queue}): give each worker a unique hostname; remote control waits for the mailbox`,
            { cause: err },
          );
        }
        throw brokerError(`Cannot listen for remote control on ${spec.queue}`, err);
      }
      model = m;
      m.on('close', () => {
        if (model === m) model = undefined;
        if (!closed) reconnect();
      });
      if (closed) await closeQuietly(m);
    };
    let reconnecting: Promise<void> | undefined;
    let lastError = '';
    // The same failure again (a node of the same name holds the queue) is reported once.
    const report = (err: unknown): void => {
      const text = errorText(err);
      if (text !== lastError) onError(err);
      lastError = text;
    };
    const reconnect = (): void => {
      if (reconnecting || closed) return;
      reconnecting = (async () => {
        let wait = 100;
        while (!closed && !model) {
          await new Promise((r) => setTimeout(r, wait));
          wait = Math.min(wait * 2, 10000);
          if (closed) break;
          try {
            await open();
            lastError = '';
          } catch (err) {
            report(err);
          }
        }
      })().finally(() => {
        reconnecting = undefined;
      });
    };
    try {
      await open();
    } catch (err) {
      // A queue held by another node of this name: reported, retried in the background.
      if (!/already using this process mailbox/.test(errorText(err))) throw err;
      report(err);
      reconnect();
    }
    return {
      close: async () => {
        closed = true;
        const m = model;
        model = undefined;
        await closeQuietly(m);
        await reconnecting?.catch(() => undefined);
      },
    };
  }

  /**
   * @internal A new connection (an amqplib `ChannelModel`, typed `unknown`
   * so that the declarations never import amqplib) with this transport's
   * URL and settings, for a consumer of its own (`./rpc.ts`); the caller closes it.
   */
  openConnection(name: string): Promise<unknown> {
    this.#check();
    return openConnection(this.#url, this.#settings, this.#connectTimeout, name);
  }

  /** Starts consuming `queues` on a connection of its own. */
  async consume(queues: readonly string[], options: ConsumeOptions = {}): Promise<BrokerConsumer> {
    this.#check();
    if (queues.length === 0) throw new ImproperlyConfigured('consume needs at least one queue');
    const consumer = new AmqpConsumer(
      this.#url,
      this.#settings,
      this.#connectTimeout,
      [...new Set(queues)].map((q) => this.taskQueue(q)),
      Math.max(0, Math.floor(options.prefetch ?? 64)),
      () => this.#consumers.delete(consumer),
    );
    this.#consumers.add(consumer);
    try {
      await consumer.start();
    } catch (err) {
      this.#consumers.delete(consumer);
      throw err;
    }
    return consumer;
  }

  /** Closes every consumer and the publishing connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    for (const c of [...this.#consumers]) await c.close();
    this.#closed = true;
    const p = this.#publisher;
    this.#publisher = undefined;
    const pub = await p?.catch(() => undefined);
    if (pub) {
      pub.closed = true;
      await closeQuietly(pub.model);
    }
  }
}

interface Session {
  gen: number;
  model: ChannelModel;
  channel: Channel;
  tags: string[];
}

/** What an AMQP delivery looks like to the worker (kombu's property names). */
function toDelivery(gen: number, queue: string, msg: ConsumeMessage): Delivery {
  const p = msg.properties;
  const f = msg.fields;
  const properties: Record<string, unknown> = {};
  if (p.correlationId !== undefined) properties.correlation_id = p.correlationId;
  if (p.replyTo !== undefined) properties.reply_to = p.replyTo;
  if (p.deliveryMode !== undefined) properties.delivery_mode = p.deliveryMode;
  if (p.priority !== undefined) properties.priority = p.priority;
  if (p.expiration !== undefined) properties.expiration = p.expiration;
  if (p.messageId !== undefined) properties.message_id = p.messageId;
  if (p.timestamp !== undefined) properties.timestamp = p.timestamp;
  if (p.type !== undefined) properties.type = p.type;
  if (p.userId !== undefined) properties.user_id = p.userId;
  if (p.appId !== undefined) properties.app_id = p.appId;
  properties.delivery_info = {
    exchange: f.exchange,
    routing_key: f.routingKey,
    redelivered: f.redelivered,
    consumer_tag: f.consumerTag,
    delivery_tag: f.deliveryTag,
  };
  const raw = p.headers !== null && typeof p.headers === 'object' ? (p.headers as Record<string | symbol, unknown>) : {};
  const undecodable = raw[UNDECODABLE_HEADERS];
  const headers = (undecodable === undefined ? raw : {}) as Record<string, unknown>;
  const pri = typeof p.priority === 'number' ? p.priority : 0;
  return {
    ...(undecodable !== undefined
      ? { malformed: new SecurityError('ERR_MALFORMED_PAYLOAD', `Message headers are not a readable AMQP field table: ${String(undecodable)}`) }
      : {}),
    deliveryTag: `${gen}.${f.deliveryTag}`,
    queue,
    body: msg.content.toString('latin1'),
    contentType: typeof p.contentType === 'string' ? p.contentType : null,
    contentEncoding: typeof p.contentEncoding === 'string' ? p.contentEncoding : null,
    headers,
    properties,
    exchange: f.exchange,
    routingKey: f.routingKey,
    priority: pri,
    redelivered: f.redelivered === true,
  };
}

/**
 * A consumer of some queues: `basic.consume` on each, with manual
 * acknowledgement and a prefetch count; pushed deliveries wait in a buffer
 * for `receive`. The connection is re-established in the background when it
 * is lost; delivery tags are tied to the connection they came on, and
 * acknowledging one from a lost connection does nothing (the broker has
 * already put that message back).
 */
class AmqpConsumer implements BrokerConsumer {
  readonly #url: string;
  readonly #settings: Settings;
  readonly #connectTimeout: number;
  readonly #queues: readonly Entity[];
  readonly #onClose: () => void;
  #prefetch: number;
  #session: Session | undefined;
  #gen = 0;
  #buffer: Delivery[] = [];
  readonly #raw = new Map<string, { gen: number; msg: ConsumeMessage }>();
  #wake: (() => void) | undefined;
  #closed = false;
  #reconnecting: Promise<void> | undefined;
  #lastError: unknown;
  #receiving = false;

  /** @internal */
  constructor(
    url: string,
    settings: Settings,
    connectTimeout: number,
    queues: readonly Entity[],
    prefetch: number,
    onClose: () => void,
  ) {
    this.#url = url;
    this.#settings = settings;
    this.#connectTimeout = connectTimeout;
    this.#queues = queues;
    this.#prefetch = prefetch;
    this.#onClose = onClose;
  }

  /** @internal Connects, declares the queues and starts consuming. */
  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const model = await openConnection(this.#url, this.#settings, this.#connectTimeout, 'celery-sign-consumer');
    const gen = ++this.#gen;
    try {
      await declareEntities(model, this.#queues);
      const channel = await model.createChannel();
      const session: Session = { gen, model, channel, tags: [] };
      channel.on('error', (err: unknown) => {
        this.#lastError = err;
      });
      channel.on('close', () => this.#lost(gen, new Error('the AMQP channel was closed')));
      model.on('error', (err: unknown) => {
        this.#lastError = err;
      });
      model.on('close', (err: unknown) => this.#lost(gen, err ?? new Error('the AMQP connection was closed')));
      if (this.#prefetch > 0) await channel.prefetch(this.#prefetch, this.#settings.qosGlobal);
      this.#session = session;
      for (const q of this.#queues) {
        const queue = q.kind === 'queue' ? q.queue : q.exchange;
        const ok = await channel.consume(queue, (msg) => this.#onMessage(gen, queue, msg), { noAck: false });
        session.tags.push(ok.consumerTag);
      }
      if (this.#closed) {
        this.#session = undefined;
        await this.#end(session);
      }
    } catch (err) {
      if (this.#session?.gen === gen) this.#session = undefined;
      await closeQuietly(model);
      throw brokerError('Cannot consume from the AMQP broker', err);
    }
  }

  #onMessage(gen: number, queue: string, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (queue deleted...): start over.
      this.#lost(gen, new Error(`the broker cancelled the consumer of ${queue}`));
      return;
    }
    if (gen !== this.#gen) return;
    const d = toDelivery(gen, queue, msg);
    this.#raw.set(d.deliveryTag, { gen, msg });
    this.#buffer.push(d);
    const w = this.#wake;
    if (w) {
      this.#wake = undefined;
      w();
    }
  }

  /** The connection is gone: drop what it delivered (the broker redelivers it), reconnect in the background. */
  #lost(gen: number, err: unknown): void {
    const s = this.#session;
    if (!s || s.gen !== gen) return;
    this.#session = undefined;
    this.#lastError = err;
    this.#buffer = this.#buffer.filter((d) => this.#raw.get(d.deliveryTag)?.gen !== gen);
    for (const [tag, r] of this.#raw) if (r.gen === gen) this.#raw.delete(tag);
    void closeQuietly(s.model);
    if (!this.#closed) this.#reconnect();
  }

  #reconnect(): void {
    if (this.#reconnecting) return;
    this.#reconnecting = (async () => {
      let wait = 100;
      while (!this.#closed && !this.#session) {
        try {
          await this.#connect();
        } catch (err) {
          this.#lastError = err;
          await new Promise((r) => setTimeout(r, wait));
          wait = Math.min(wait * 2, this.#settings.maxRetryInterval * 1000);
        }
      }
    })().finally(() => {
      this.#reconnecting = undefined;
    });
  }

  /** Waits up to `timeoutMs` for a delivery, then hands out up to `max` buffered ones. */
  async receive(max: number, timeoutMs: number): Promise<Delivery[]> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The consumer is closed');
    if (this.#receiving) throw new Error('receive() is already in progress');
    this.#receiving = true;
    try {
      if (this.#buffer.length === 0) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          timer = setTimeout(resolve, Math.max(0, timeoutMs));
        });
        clearTimeout(timer);
        this.#wake = undefined;
      }
      if (this.#buffer.length === 0 && !this.#session && !this.#closed) {
        throw brokerError('Not connected to the AMQP broker', this.#lastError ?? new Error('reconnecting'));
      }
      return this.#buffer.splice(0, Math.max(1, Math.floor(max)));
    } finally {
      this.#receiving = false;
    }
  }

  /** Runs `fn` on the live channel for each delivery still held on it; stale ones are skipped. */
  #each(deliveries: readonly Delivery[], fn: (ch: Channel, msg: ConsumeMessage) => void): void {
    const s = this.#session;
    for (const d of deliveries) {
      const r = this.#raw.get(d.deliveryTag);
      if (!r) continue;
      this.#raw.delete(d.deliveryTag);
      if (!s || r.gen !== s.gen) continue;
      try {
        fn(s.channel, r.msg);
      } catch {
        // The channel closed meanwhile: the broker puts the message back itself.
      }
    }
  }

  /** `basic.ack` for each. */
  async ack(deliveries: readonly Delivery[]): Promise<void> {
    this.#each(deliveries, (ch, msg) => ch.ack(msg));
  }

  /** `basic.reject`: with `requeue` back to the queue (marked redelivered), else dropped (or dead-lettered). */
  async reject(deliveries: readonly Delivery[], requeue: boolean): Promise<void> {
    this.#each(deliveries, (ch, msg) => ch.reject(msg, requeue));
  }

  /** Gives unstarted messages back (`basic.nack` with requeue: RabbitMQ puts them back in their place). */
  async recover(deliveries: readonly Delivery[]): Promise<void> {
    this.#buffer = this.#buffer.filter((d) => !deliveries.includes(d));
    this.#each(deliveries, (ch, msg) => ch.nack(msg, false, true));
  }

  /** `basic.qos` with a new prefetch count. */
  async setPrefetch(count: number): Promise<void> {
    const n = Math.max(0, Math.floor(count));
    if (n === this.#prefetch) return;
    this.#prefetch = n;
    const s = this.#session;
    if (s) await s.channel.prefetch(n, this.#settings.qosGlobal);
  }

  async #end(s: Session): Promise<void> {
    for (const tag of s.tags) {
      try {
        await s.channel.cancel(tag);
      } catch {
        break;
      }
    }
    // What is still buffered was never handed out: back to the queue now.
    const buffered = this.#buffer.splice(0);
    for (const d of buffered) {
      const r = this.#raw.get(d.deliveryTag);
      this.#raw.delete(d.deliveryTag);
      if (r && r.gen === s.gen) {
        try {
          s.channel.nack(r.msg, false, true);
        } catch {
          break;
        }
      }
    }
    await closeQuietly(s.channel);
    await closeQuietly(s.model);
  }

  /** Cancels the consumers, gives back what was never handed out, closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    const s = this.#session;
    this.#session = undefined;
    if (s) await this.#end(s);
    await this.#reconnecting?.catch(() => undefined);
    this.#raw.clear();
    this.#onClose();
  }
}

registerTransport(['amqp', 'amqps', 'pyamqp', 'pyamqps'], (url, options) => AmqpTransport.open(url, options));
