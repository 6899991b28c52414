/**
 * Worker events, signed, as Celery publishes them (`celery.events.dispatcher`
 * with `event_serializer = 'auth'`): each event is a dict
 * `{hostname, utcoffset, pid, clock, <fields>..., timestamp, type}` (the key
 * order of Celery's `Event()`), serialized with the `auth` serializer and
 * published to the `celeryev` exchange with the event type as routing key
 * (`task-succeeded` -> `task.succeeded`) and the header `{hostname}`, as a
 * transient message (`delivery_mode` 1).
 *
 * On AMQP `celeryev` is a topic exchange; on Redis kombu's fanout emulation
 * (`PUBLISH` on `/{db}.celeryev/<routing_key>`), as Celery's `get_exchange`
 * makes it. A Python `app.events.Receiver` with `setup_security()` and
 * `accept=['auth']` verifies and reads them.
 *
 * Like a Celery worker with an event loop (the prefork pool), task events
 * are buffered and sent as a list on the routing key `task.multi` (at most
 * `bufferLimit` per message, flushed at the end of each turn of the event
 * loop): one signature per batch instead of one per event. With
 * `batchTaskEvents: false` each task event is sent on its own routing key.
 * Worker events (`worker-online`, `worker-heartbeat` every `heartbeatInterval`
 * seconds, `worker-offline`) are always sent at once.
 *
 * @module
 */
import { loadavg, type as osType } from 'node:os';
import { ImproperlyConfigured } from '../errors.js';
import type { SecureSerializer } from '../serializer.js';
import { AUTH_CONTENT_ENCODING, AUTH_CONTENT_TYPE } from './protocol.js';
import type { BrokerTransport, EventMessage } from './transport.js';

/** What this worker calls itself in `sw_ident` (Celery: `py-celery`). */
export const SW_IDENT = 'celery-sign';
/** The package version, sent as `sw_ver`. */
export const SW_VERSION = '0.1.0';

/** Options of a worker's events (`createWorker({ events })`). */
export interface EventOptions {
  /** Seconds between `worker-heartbeat` events. Default 2 (Celery's). */
  heartbeatInterval?: number;
  /** Send task events (Celery's `-E` / `worker_send_task_events`). Default `true`; `false`: worker events only. */
  taskEvents?: boolean;
  /** Send task events in lists on `task.multi`, as Celery's worker does. Default `true`. */
  batchTaskEvents?: boolean;
  /** Most task events in one `task.multi` message. Default 24 (Celery's `buffer_limit`). */
  bufferLimit?: number;
  /** The exchange (Celery's `event_exchange`). Default `'celeryev'`. */
  exchange?: string;
}

/** A Celery event: a plain dict. */
export type CeleryEvent = Record<string, unknown>;

/** Celery's `utcoffset()`: hours WEST of UTC (the sign of `time.timezone`), now. */
export function utcoffset(now: Date = new Date()): number {
  return now.getTimezoneOffset() / 60;
}

/** Celery's `load_average()`: the three load averages rounded up to two decimals. */
export function loadAverage(): number[] {
  return loadavg().map((l) => Math.ceil(l * 100) / 100);
}

/** `platform.system()` as Python names it. */
function swSys(): string {
  const t = osType();
  return t === 'Windows_NT' ? 'Windows' : t;
}

/**
 * Publishes a worker's events. Not for direct use: `createWorker({ events:
 * true })` makes one. `send` never throws; a failure to publish is reported
 * through `onError` and the events are dropped (as Celery drops events it
 * cannot send).
 */
export class EventDispatcher {
  readonly hostname: string;
  readonly #transport: BrokerTransport;
  readonly #security: SecureSerializer;
  readonly #exchange: string;
  #taskEvents: boolean;
  readonly #batch: boolean;
  readonly #limit: number;
  readonly #interval: number;
  readonly #onError: (err: unknown) => void;
  readonly #pid = process.pid;
  #clock = 0;
  #buffer: CeleryEvent[] = [];
  #outbox: { body: unknown; routingKey: string }[] = [];
  #flushScheduled = false;
  #chain: Promise<void> = Promise.resolve();
  #heart: NodeJS.Timeout | undefined;
  #enabled = false;

  constructor(
    transport: BrokerTransport,
    security: SecureSerializer,
    hostname: string,
    options: EventOptions,
    onError: (err: unknown) => void,
  ) {
    if (typeof transport.publishEvents !== 'function') {
      throw new ImproperlyConfigured(`The ${transport.name} transport cannot publish events`);
    }
    this.#transport = transport;
    this.#security = security;
    this.hostname = hostname;
    this.#exchange = options.exchange ?? 'celeryev';
    this.#taskEvents = options.taskEvents !== false;
    this.#batch = options.batchTaskEvents !== false;
    this.#limit = Math.max(1, Math.floor(options.bufferLimit ?? 24));
    this.#interval = options.heartbeatInterval ?? 2;
    if (!(this.#interval > 0)) throw new ImproperlyConfigured('heartbeatInterval must be a positive number of seconds');
    this.#onError = onError;
  }

  /** Whether task events are sent. */
  get taskEvents(): boolean {
    return this.#taskEvents;
  }

  /** Turns task events on or off (the `enable_events` / `disable_events` control commands). */
  set taskEvents(on: boolean) {
    this.#taskEvents = on;
  }

  /** Sends a `worker-heartbeat` now (the `heartbeat` control command). */
  beat(): void {
    if (this.#enabled) this.#beat?.('worker-heartbeat');
  }

  /** Checks that the serializer can sign (events are signed with the worker's key). */
  static async check(security: SecureSerializer): Promise<void> {
    try {
      await security.serializeMany([]);
    } catch (err) {
      throw new ImproperlyConfigured(
        "Worker events are signed (event_serializer = 'auth'): the worker's security needs a key and a certificate",
        { cause: err },
      );
    }
  }

  /** Celery's `Event()` with the dispatcher's fields, in Celery's key order. */
  #event(type: string, fields: Record<string, unknown>): CeleryEvent {
    const ev: CeleryEvent = {
      hostname: this.hostname,
      utcoffset: utcoffset(),
      pid: this.#pid,
      clock: ++this.#clock,
      ...fields,
    };
    ev.timestamp = Date.now() / 1000;
    ev.type = type;
    return ev;
  }

  /**
   * Sends an event (`task-*` events only with task events on). Task events
   * are buffered (see the module notes); the rest go out at once.
   */
  send(type: string, fields: Record<string, unknown> = {}): void {
    if (!this.#enabled) return;
    const group = type.split('-', 1)[0];
    if (group === 'task') {
      if (!this.#taskEvents) return;
      const ev = this.#event(type, fields);
      if (this.#batch) {
        this.#buffer.push(ev);
        if (this.#buffer.length >= this.#limit) this.#moveBuffer();
      } else {
        this.#outbox.push({ body: ev, routingKey: type.replace(/-/g, '.') });
      }
    } else {
      this.#outbox.push({ body: this.#event(type, fields), routingKey: type.replace(/-/g, '.') });
    }
    this.#schedule();
  }

  #moveBuffer(): void {
    if (this.#buffer.length === 0) return;
    this.#outbox.push({ body: this.#buffer, routingKey: 'task.multi' });
    this.#buffer = [];
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.flush();
    });
  }

  /** Sends what is buffered; resolves when the broker has it (or the attempt failed). */
  flush(): Promise<void> {
    this.#moveBuffer();
    const batch = this.#outbox.splice(0);
    if (batch.length === 0) return this.#chain;
    this.#chain = this.#chain.then(async () => {
      try {
        const bodies = await this.#security.serializeMany(batch.map((b) => b.body));
        const messages: EventMessage[] = batch.map((b, i) => ({
          body: bodies[i]!,
          contentType: AUTH_CONTENT_TYPE,
          contentEncoding: AUTH_CONTENT_ENCODING,
          headers: { hostname: this.hostname },
          exchange: this.#exchange,
          routingKey: b.routingKey,
          deliveryMode: 1,
        }));
        await this.#transport.publishEvents!(messages);
      } catch (err) {
        this.#onError(err);
      }
    });
    return this.#chain;
  }

  /** `worker-online`, then a `worker-heartbeat` every `heartbeatInterval` seconds (Celery's `Heart`). */
  start(stats: () => { active: number; processed: number }): void {
    this.#enabled = true;
    const beat = (type: string): void => {
      const s = stats();
      this.send(type, {
        freq: this.#interval,
        active: s.active,
        processed: s.processed,
        loadavg: loadAverage(),
        sw_ident: SW_IDENT,
        sw_ver: SW_VERSION,
        sw_sys: swSys(),
      });
    };
    this.#beat = beat;
    beat('worker-online');
    this.#heart = setInterval(() => beat('worker-heartbeat'), this.#interval * 1000);
    this.#heart.unref();
  }

  #beat: ((type: string) => void) | undefined;

  /** Sends what is buffered and `worker-offline`; waits for them (at most `timeoutMs`). */
  async stop(timeoutMs = 5000): Promise<void> {
    if (!this.#enabled) return;
    if (this.#heart) clearInterval(this.#heart);
    this.#heart = undefined;
    this.#beat?.('worker-offline');
    this.#enabled = false;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }
}
