/**
 * The `rpc://` result backend, as Celery's `celery.backends.rpc.RPCBackend`
 * (checked against Celery 5.7's `celery/backends/rpc.py` and
 * `asynchronous.py`): results travel as messages on the AMQP broker, to the
 * reply queue of the client that sent the task.
 *
 * On the wire, as Celery does it:
 * - the client's reply queue is named by its id (Celery's `app.thread_oid`,
 *   here the client's `oid`), which every task message carries as its
 *   `reply_to` property. It is declared before the first task is sent
 *   (Celery's `on_task_call`) as Celery's `RPCBackend.binding` declares it:
 *   durable, auto-delete, not exclusive, with `x-expires` = `result_expires`
 *   in milliseconds (one day by default: `86400000`), and no binding (it is
 *   reached through the default exchange);
 * - the worker publishes each result to the default exchange `''` (Celery's
 *   `Exchange(None)`: `result_exchange` is not used by the rpc backend) with
 *   the task's `reply_to` as routing key and its `correlation_id` (the task
 *   id) as `correlation_id`; content type `application/json` (or
 *   `application/data` for `result_serializer = 'auth'`), encoding `utf-8`,
 *   no headers, priority 0, delivery mode 1 (transient) or 2 with
 *   `result_persistent`. The body is the result meta (`{"status", "result",
 *   "traceback", "children", "date_done", "task_id"...}`). A task without
 *   `reply_to` gets no result; one whose reply queue is gone is dropped by
 *   the broker, as with Celery;
 * - the states are the ones the worker stores: `SUCCESS`, `FAILURE`
 *   (including `NotRegistered`), `REVOKED`, `RETRY`; a Python worker also
 *   sends `STARTED` under `task_track_started`.
 *
 * The client consumes its reply queue (with acknowledgements after each batch
 * is decoded, so that a lost connection redelivers what it had not read) and
 * matches each result to its task by the meta's `task_id`, as Celery's
 * `ResultConsumer.on_state_change` does: for `auth` results that id is
 * covered by the signature, unlike the `correlation_id` property. Results that
 * arrive before anyone waits for them are kept, as Celery's `_pending_messages`
 * buffer keeps them, up to `result_buffer_max` (a key of
 * `backendTransportOptions`, default 8192, Celery's `MESSAGE_BUFFER_MAX`):
 * beyond that the oldest unclaimed result is dropped (with a warning). A
 * message on the reply queue that does not decode or verify, or has another
 * content type than the result serializer's, is dropped with a warning
 * (`CelerySignRpcWarning`), never a crash.
 *
 * Only an AMQP broker is supported: Celery's rpc backend also runs over
 * kombu's virtual transports (Redis), which celery-sign does not implement;
 * `createClient` and `createWorker` refuse that with `ImproperlyConfigured`.
 * Like Celery's, this backend does not support chords.
 *
 * @module
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { ImproperlyConfigured } from '../errors.js';
import { loads as kombuLoads } from '../json/loads.js';
import type { SecureSerializer } from '../serializer.js';
import { AmqpTransport } from './amqp.js';
import { WireError } from './errors.js';
import { READY_STATES, type ResultMeta, type ResultSerializer } from './results.js';
import {
  registerBackend,
  type BackendOptions,
  type ReplyMessage,
  type ResultBackend,
  type StoredResult,
} from './transport.js';

/** Broker URL schemes the rpc backend works with. */
const AMQP_SCHEMES = new Set(['amqp', 'amqps', 'pyamqp', 'pyamqps']);

/** Celery's `MESSAGE_BUFFER_MAX`: results kept for nobody yet. */
const DEFAULT_BUFFER_MAX = 8192;

/** Unacknowledged replies the broker hands the client at once. */
const REPLY_PREFETCH = 1024;

/** Longest `setTimeout` delay; a longer wait has no timer (no limit). */
const MAX_TIMER = 2 ** 31 - 1;

/** Marks a reply that did not decode. */
const BAD: unique symbol = Symbol('bad reply');

/** Content types of the result serializers (kombu's registry). */
const CONTENT_TYPES: Readonly<Record<ResultSerializer, string>> = {
  json: 'application/json',
  auth: 'application/data',
};

/** Refuses a broker the rpc backend cannot use (`createClient`, `createWorker`). */
function checkRpc(_backendUrl: string, brokerUrl: string): void {
  const m = typeof brokerUrl === 'string' ? /^([a-z][a-z0-9+.-]*):/i.exec(brokerUrl) : null;
  const scheme = m ? m[1]!.toLowerCase() : String(brokerUrl);
  if (!AMQP_SCHEMES.has(scheme)) {
    throw new ImproperlyConfigured(
      `The rpc:// result backend needs an AMQP broker (amqp://, amqps://, pyamqp://, pyamqps://), not ${JSON.stringify(scheme + '://')}: ` +
        "celery-sign does not implement Celery's rpc backend over kombu's virtual transports (Redis); use a redis:// result backend there",
    );
  }
}

/** Process warnings, at most one every 5 s (what goes wrong on the reply queue, where no caller can catch it). */
function warner(): (message: string) => void {
  let last = 0;
  return (message) => {
    const now = Date.now();
    if (now - last < 5000) return;
    last = now;
    process.emitWarning(`celery-sign rpc:// backend: ${message}`, 'CelerySignRpcWarning');
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function closeQuietly(x: { close(): Promise<void> } | undefined): Promise<void> {
  if (!x) return;
  try {
    await x.close();
  } catch {
    /* already closed */
  }
}

/** AMQP reply code 406: the queue exists with other properties. */
function isPreconditionFailed(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === 406 || (typeof e?.message === 'string' && e.message.includes('PRECONDITION_FAILED'));
}

/** A decoded value that is a Celery result meta, or `null`. */
function asMeta(value: unknown): ResultMeta | null {
  let v = value;
  if (v instanceof Map) v = Object.fromEntries(v);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const m = v as ResultMeta;
  return typeof m.status === 'string' && typeof m.task_id === 'string' && m.task_id !== '' ? m : null;
}

/** A reply as it came off the queue. */
interface RawReply {
  contentType: string | null;
  body: string;
}

interface Session {
  gen: number;
  model: ChannelModel;
  channel: Channel;
  tag: string | undefined;
}

/**
 * Consumes the client's reply queue on a connection of its own: declares it
 * as Celery does, hands the deliveries in batches to `onBatch` (one batch at
 * a time) and acknowledges each batch once handled. A lost connection is
 * re-established in the background (the queue declared again), and what was
 * not acknowledged is redelivered.
 */
class ReplyConsumer {
  readonly #transport: AmqpTransport;
  readonly #queue: string;
  readonly #arguments: Record<string, unknown>;
  readonly #onBatch: (batch: RawReply[]) => Promise<void>;
  readonly #warn: (message: string) => void;
  #session: Session | undefined;
  #gen = 0;
  #pending: { gen: number; msg: ConsumeMessage }[] = [];
  #draining = false;
  #closed = false;
  #reconnecting: Promise<void> | undefined;
  #lastError: unknown;
  /** The queue was declared otherwise before us: used as it is, never declared again. */
  #passive = false;

  constructor(
    transport: AmqpTransport,
    queue: string,
    expiresMs: number | null,
    onBatch: (batch: RawReply[]) => Promise<void>,
    warn: (message: string) => void,
  ) {
    this.#transport = transport;
    this.#warn = warn;
    this.#queue = queue;
    this.#arguments = expiresMs !== null ? { 'x-expires': expiresMs } : {};
    this.#onBatch = onBatch;
  }

  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const model = (await this.#transport.openConnection('celery-sign-rpc')) as ChannelModel;
    const gen = ++this.#gen;
    try {
      let ch = await model.createChannel();
      ch.on('error', () => undefined);
      try {
        // Celery's RPCBackend.binding: Queue(oid, Exchange(None), oid, durable=True, auto_delete=True, expires=result_expires).
        await ch.assertQueue(this.#queue, { durable: true, autoDelete: true, exclusive: false, arguments: this.#arguments });
      } catch (err) {
        if (!isPreconditionFailed(err)) throw err;
        // Declared otherwise already (another result_expires): use it as it is.
        await closeQuietly(ch);
        ch = await model.createChannel();
        ch.on('error', () => undefined);
        await ch.checkQueue(this.#queue);
        this.#passive = true;
      }
      await ch.prefetch(REPLY_PREFETCH, false);
      const session: Session = { gen, model, channel: ch, tag: undefined };
      ch.on('close', () => this.#lost(gen, new Error('the AMQP channel was closed')));
      model.on('close', (err: unknown) => this.#lost(gen, err ?? new Error('the AMQP connection was closed')));
      this.#session = session;
      const ok = await ch.consume(this.#queue, (msg) => this.#onMessage(gen, msg), { noAck: false });
      session.tag = ok.consumerTag;
      if (this.#closed) {
        this.#session = undefined;
        await this.#end(session);
      }
    } catch (err) {
      if (this.#session?.gen === gen) this.#session = undefined;
      await closeQuietly(model);
      throw new WireError('ERR_BROKER', `Cannot consume the rpc:// reply queue: ${errorText(err)}`, { cause: err });
    }
  }

  #onMessage(gen: number, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (the queue was deleted): declare it again.
      this.#lost(gen, new Error('the broker cancelled the reply consumer'));
      return;
    }
    if (gen !== this.#gen) return;
    this.#pending.push({ gen, msg });
    if (!this.#draining) {
      this.#draining = true;
      setImmediate(() => void this.#drain());
    }
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0 && !this.#closed) {
        const batch = this.#pending.splice(0, REPLY_PREFETCH);
        try {
          await this.#onBatch(
            batch.map(({ msg }) => ({
              contentType: typeof msg.properties.contentType === 'string' ? msg.properties.contentType : null,
              body: msg.content.toString('utf8'),
            })),
          );
        } catch (err) {
          this.#warn(`a batch of replies could not be handled: ${errorText(err)}`);
        }
        // Acknowledge everything up to the last reply of the live channel (older ones are redelivered anyway).
        const s = this.#session;
        const last = s ? batch.filter((b) => b.gen === s.gen).pop() : undefined;
        if (s && last) {
          try {
            s.channel.ack(last.msg, true);
          } catch {
            /* the channel closed meanwhile: the broker redelivers */
          }
        }
      }
    } finally {
      this.#draining = false;
      if (this.#pending.length > 0 && !this.#closed) {
        this.#draining = true;
        setImmediate(() => void this.#drain());
      }
    }
  }

  #lost(gen: number, err: unknown): void {
    const s = this.#session;
    if (!s || s.gen !== gen) return;
    this.#session = undefined;
    this.#lastError = err;
    this.#pending = this.#pending.filter((p) => p.gen !== gen);
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
          wait = Math.min(wait * 2, 2000);
        }
      }
    })().finally(() => {
      this.#reconnecting = undefined;
    });
  }

  /**
   * Resolves once the queue is consumed (waiting for a reconnection up to
   * `ms`) and, with `declare`, declared once more: Celery's `on_task_call`
   * declares it before every task it sends (its `Queue.can_cache_declaration`
   * is off), so that a reply queue deleted meanwhile (auto-delete after a lost
   * connection, or by hand) exists again before a task names it.
   */
  async ready(ms: number, declare: boolean): Promise<void> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The rpc:// backend is closed');
    const deadline = Date.now() + ms;
    while (!this.#session && !this.#closed && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const s = this.#session;
    if (!s) {
      throw new WireError('ERR_BROKER', `The rpc:// reply queue is not consumed (reconnecting): ${errorText(this.#lastError)}`);
    }
    if (declare && !this.#passive) {
      try {
        await s.channel.assertQueue(this.#queue, { durable: true, autoDelete: true, exclusive: false, arguments: this.#arguments });
      } catch (err) {
        // The channel is gone with the error: the consumer reconnects (and declares) by itself.
        throw new WireError('ERR_BROKER', `Cannot declare the rpc:// reply queue: ${errorText(err)}`, { cause: err });
      }
    }
  }

  async #end(s: Session): Promise<void> {
    if (s.tag !== undefined) {
      try {
        await s.channel.cancel(s.tag); // the last consumer gone: the broker deletes the (auto-delete) queue
      } catch {
        /* closed */
      }
    }
    await closeQuietly(s.channel);
    await closeQuietly(s.model);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    const s = this.#session;
    this.#session = undefined;
    if (s) await this.#end(s);
    await this.#reconnecting?.catch(() => undefined);
  }
}

interface Entry {
  meta: ResultMeta;
  value: string;
}

interface Waiter {
  resolve: (e: Entry | null) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Celery's `RPCBackend`: on a worker, `store` publishes each result to the
 * task's reply queue; on a client, the reply queue is consumed and results
 * are matched to their tasks.
 */
class RpcBackend implements ResultBackend {
  readonly #transport: AmqpTransport;
  readonly #serializer: ResultSerializer;
  readonly #security: SecureSerializer | undefined;
  readonly #deliveryMode: number;
  readonly #oid: string | undefined;
  readonly #expiresMs: number | null;
  readonly #bufferMax: number;
  readonly #connectTimeout: number;
  #consumer: ReplyConsumer | undefined;
  #starting: Promise<void> | undefined;
  #closed = false;
  /** Results nobody asked for yet, oldest first (evicted beyond the bound). */
  readonly #unclaimed = new Map<string, Entry>();
  /** Results handed out, kept for another look, oldest first (evicted beyond the bound). */
  readonly #claimed = new Map<string, Entry>();
  readonly #waiters = new Map<string, Set<Waiter>>();
  #dropped = 0;
  readonly #warn = warner();

  private constructor(transport: AmqpTransport, options: BackendOptions) {
    this.#transport = transport;
    this.#serializer = options.resultSerializer ?? 'json';
    this.#security = options.security;
    this.#deliveryMode = options.persistent ? 2 : 1;
    this.#oid = options.oid;
    const expires = options.resultExpires === undefined ? 86400 : options.resultExpires;
    this.#expiresMs = expires ? Math.round(expires * 1000) : null;
    const max = options.transportOptions?.result_buffer_max;
    if (max !== undefined && (typeof max !== 'number' || !Number.isInteger(max) || max < 1)) {
      throw new ImproperlyConfigured('result_buffer_max must be a positive integer');
    }
    this.#bufferMax = (max as number | undefined) ?? DEFAULT_BUFFER_MAX;
    this.#connectTimeout = options.connectTimeout ?? 10000;
  }

  /** Opens the backend on the client's or worker's AMQP broker connection. */
  static async open(url: string, options: BackendOptions): Promise<RpcBackend> {
    if (!/^rpc:/i.test(url)) throw new ImproperlyConfigured('Not an rpc:// URL');
    if (options.resultSerializer !== undefined && !(options.resultSerializer in CONTENT_TYPES)) {
      throw new ImproperlyConfigured("resultSerializer must be 'json' or 'auth'");
    }
    if (options.resultSerializer === 'auth' && !options.security) {
      throw new ImproperlyConfigured("The auth result serializer needs the client's or worker's security");
    }
    if (!options.broker) throw new ImproperlyConfigured('The rpc:// result backend needs the broker connection');
    const transport = await options.broker();
    if (!(transport instanceof AmqpTransport)) {
      throw new ImproperlyConfigured(`The rpc:// result backend needs an AMQP broker; this one is ${JSON.stringify(transport.name)}`);
    }
    return new RpcBackend(transport, options);
  }

  /** Publishes each result that has a reply queue (Celery's `store_result`); resolves once confirmed. */
  async store(results: readonly StoredResult[]): Promise<void> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The rpc:// backend is closed');
    const replies: ReplyMessage[] = [];
    for (const r of results) {
      if (!r.replyTo) continue; // Celery: no reply_to, no result
      replies.push({
        body: r.value,
        contentType: CONTENT_TYPES[this.#serializer],
        contentEncoding: 'utf-8',
        exchange: '',
        routingKey: r.replyTo,
        correlationId: r.correlationId || r.taskId,
        deliveryMode: this.#deliveryMode,
      });
    }
    if (replies.length > 0) await this.#transport.publishReplies(replies);
  }

  /** Declares the reply queue and consumes it (from the first call on), as Celery's `on_task_call` declares it before a task is sent. */
  async onTaskCall(): Promise<void> {
    await this.#ready(true);
  }

  async #ready(declare: boolean): Promise<void> {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The rpc:// backend is closed');
    if (this.#oid === undefined) throw new ImproperlyConfigured('The rpc:// backend of a worker has no reply queue');
    this.#starting ??= (async () => {
      const c = new ReplyConsumer(this.#transport, this.#oid!, this.#expiresMs, (batch) => this.#handle(batch), this.#warn);
      await c.start();
      if (this.#closed) {
        await c.close();
        throw new WireError('ERR_CLOSED', 'The rpc:// backend is closed');
      }
      this.#consumer = c;
    })().catch((err: unknown) => {
      this.#starting = undefined;
      throw err;
    });
    const first = this.#consumer === undefined;
    await this.#starting;
    await this.#consumer!.ready(this.#connectTimeout, declare && !first);
  }

  async #handle(batch: RawReply[]): Promise<void> {
    if (this.#closed) return;
    const want = CONTENT_TYPES[this.#serializer];
    const bodies: string[] = [];
    for (const r of batch) {
      if (r.contentType !== want) {
        this.#warn(
          `refused a reply of content type ${JSON.stringify(String(r.contentType)).slice(0, 80)} (ERR_CONTENT_DISALLOWED): the result serializer is ${this.#serializer}`,
        );
        continue;
      }
      bodies.push(r.body);
    }
    if (bodies.length === 0) return;
    const decoded: unknown[] = [];
    if (this.#serializer === 'auth') {
      const results = await this.#security!.deserializeMany(bodies);
      for (const r of results) {
        if (r.ok) decoded.push(r.value);
        else {
          this.#warn(`refused a reply that does not verify (${r.error.code}): ${r.error.message}`);
          decoded.push(BAD);
        }
      }
    } else {
      for (const b of bodies) {
        try {
          decoded.push(kombuLoads(b));
        } catch {
          this.#warn('refused a reply that is not kombu JSON (ERR_DECODE)');
          decoded.push(BAD);
        }
      }
    }
    decoded.forEach((v, i) => {
      if (v === BAD) return;
      const meta = asMeta(v);
      if (!meta) {
        this.#warn('refused a reply that is not a Celery result meta, with a status and a task_id (ERR_DECODE)');
        return;
      }
      this.#deliver({ meta, value: bodies[i]! });
    });
  }

  #deliver(e: Entry): void {
    if (this.#closed) return;
    const id = e.meta.task_id;
    const old = this.#claimed.get(id) ?? this.#unclaimed.get(id);
    // As Celery's _store_result: never over a SUCCESS (a redelivered task run again).
    if (old && old.meta.status === 'SUCCESS' && e.meta.status !== 'SUCCESS') return;
    const ready = READY_STATES.has(e.meta.status);
    const waiters = ready ? this.#waiters.get(id) : undefined;
    if (waiters) {
      this.#waiters.delete(id);
      for (const w of waiters) {
        clearTimeout(w.timer);
        w.resolve(e);
      }
    }
    if (waiters || this.#claimed.has(id)) {
      this.#unclaimed.delete(id);
      this.#put(this.#claimed, id, e, false);
    } else {
      this.#put(this.#unclaimed, id, e, true);
    }
  }

  #put(map: Map<string, Entry>, id: string, e: Entry, unclaimed: boolean): void {
    map.delete(id);
    map.set(id, e);
    while (map.size > this.#bufferMax) {
      const oldest = map.keys().next().value as string;
      map.delete(oldest);
      if (unclaimed) {
        this.#dropped++;
        this.#warn(
          `dropped the result of task ${oldest}, which nobody asked for (more than result_buffer_max = ${this.#bufferMax} unclaimed results; ${this.#dropped} dropped so far)`,
        );
      }
    }
  }

  /** The latest state of a task, claimed when ready. */
  #lookup(id: string): Entry | undefined {
    const c = this.#claimed.get(id);
    if (c) return c;
    const u = this.#unclaimed.get(id);
    if (u && READY_STATES.has(u.meta.status)) {
      this.#unclaimed.delete(id);
      this.#put(this.#claimed, id, u, false);
    }
    return u;
  }

  /** The latest meta the reply queue brought for the task, or `null` (`PENDING`). */
  async getMeta(taskId: string): Promise<ResultMeta | null> {
    await this.#ready(false);
    return this.#lookup(taskId)?.meta ?? null;
  }

  async get(taskId: string): Promise<string | null> {
    await this.#ready(false);
    return this.#lookup(taskId)?.value ?? null;
  }

  /** Waits for a ready meta of the task, or `timeoutMs` (then `null`); `Infinity`: no limit. */
  async waitMeta(taskId: string, timeoutMs: number): Promise<ResultMeta | null> {
    return (await this.#waitEntry(taskId, timeoutMs))?.meta ?? null;
  }

  async wait(taskId: string, timeoutMs: number): Promise<string | null> {
    return (await this.#waitEntry(taskId, timeoutMs))?.value ?? null;
  }

  async #waitEntry(taskId: string, timeoutMs: number): Promise<Entry | null> {
    await this.#ready(false);
    const e = this.#lookup(taskId);
    if (e && READY_STATES.has(e.meta.status)) return e;
    if (!(timeoutMs > 0)) return null;
    return new Promise<Entry | null>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: undefined };
      let set = this.#waiters.get(taskId);
      if (!set) this.#waiters.set(taskId, (set = new Set()));
      set.add(w);
      if (timeoutMs <= MAX_TIMER) {
        w.timer = setTimeout(() => {
          const s = this.#waiters.get(taskId);
          s?.delete(w);
          if (s?.size === 0) this.#waiters.delete(taskId);
          resolve(null);
        }, timeoutMs);
      }
    });
  }

  /** Stops consuming (the broker then deletes the auto-delete reply queue); waiting calls are rejected. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const err = new WireError('ERR_CLOSED', 'The client was closed while waiting for the result');
    for (const set of this.#waiters.values()) {
      for (const w of set) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    this.#waiters.clear();
    await this.#starting?.catch(() => undefined);
    await this.#consumer?.close();
    this.#unclaimed.clear();
    this.#claimed.clear();
  }
}

registerBackend(['rpc'], (url, options) => RpcBackend.open(url, options), { check: checkRpc, onTaskCall: true });
