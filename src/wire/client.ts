/**
 * The producer: `createClient({ broker, backend, security })` and
 * `client.sendTask(name, args, kwargs, options)`, as Celery's
 * `app.send_task`, with signed task messages.
 *
 * Concurrent `sendTask` calls are batched: their bodies are signed in one
 * native call (`serializeMany`) and published in one pipeline, so throughput
 * grows with the number of tasks in flight.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
import { ImproperlyConfigured, SecurityError } from '../errors.js';
import type { SecureSerializer } from '../serializer.js';
import { ResultTimeoutError, TaskFailedError, WireError } from './errors.js';
import { bindHeaders } from './binding.js';
import { CanvasError, planCanvas, Signature, type Canvas, type SignatureOptions } from './canvas.js';
import type { Applied } from './canvas-engine.js';
import { buildTaskMessage, encodeTaskMessages, type TaskMessage, type TaskOptions } from './protocol.js';
import {
  decodeMeta,
  exceptionFromMeta,
  PROPAGATE_STATES,
  quickStatus,
  READY_STATES,
  type ResultMeta,
  type ResultSerializer,
  type TaskState,
} from './results.js';
import { resolveSecurity, type SecurityOption } from './security.js';
import { SecurityLog, type SecurityLogOption } from './securitylog.js';
import type { AmqpSslOptions, BrokerUseSsl, RedisSslOptions } from './tls.js';
import {
  backendTraits,
  checkBackend,
  openBackend,
  openTransport,
  type BrokerTransport,
  type OutgoingMessage,
  type ResultBackend,
} from './transport.js';
import './redis.js';
import './amqp.js';
import './rpc.js';

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** Broker URL, e.g. `redis://127.0.0.1:6379/0` or `amqp://guest:guest@127.0.0.1:5672//`. */
  broker: string;
  /**
   * Result backend URL: `redis://...`, or `rpc://` (results as messages to
   * this client's reply queue, with an AMQP broker); without it
   * `AsyncResult.get` is unavailable.
   */
  backend?: string;
  /** Signs every task body: a {@link SecureSerializer} with a key and cert, or Celery's settings. */
  security: SecurityOption;
  /** kombu's `broker_transport_options`. */
  transportOptions?: Record<string, unknown>;
  /**
   * Celery's `broker_use_ssl`: `true`, or an object with Celery's keys and
   * values: for Redis `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`,
   * `ssl_keyfile` ({@link RedisSslOptions}); for AMQP `ca_certs`,
   * `certfile`, `keyfile`, `cert_reqs`, `server_hostname`
   * ({@link AmqpSslOptions}). `rediss://` and `amqps://` URLs turn TLS on
   * too. The server's certificate is verified (chain and host name) unless
   * `CERT_NONE`.
   */
  brokerUseSsl?: BrokerUseSsl;
  /**
   * Celery's `redis_backend_use_ssl` for a Redis result backend: an object
   * with `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`
   * ({@link RedisSslOptions}). As in Celery, `ssl_cert_reqs` is required
   * (here or in the `rediss://` URL).
   */
  redisBackendUseSsl?: boolean | RedisSslOptions;
  /**
   * Celery's `result_backend_transport_options`. For `rpc://`:
   * `result_buffer_max`, the most results kept that arrived before anyone
   * asked for them (default 8192, Celery's).
   */
  backendTransportOptions?: Record<string, unknown>;
  /**
   * Seconds the `rpc://` reply queue lives unused (its `x-expires`, Celery's
   * `result_expires`). Default 86400; `null`: forever.
   */
  resultExpires?: number | null;
  /** Celery's `result_serializer` of the workers: `'json'` (Celery's default) or `'auth'`. */
  resultSerializer?: ResultSerializer;
  /** Milliseconds between re-reads of pending results under pub/sub. Default 1000. */
  pollInterval?: number;
  /** Milliseconds to connect. Default 10000. */
  connectTimeout?: number;
  /** Most messages signed and published in one batch. Default 1000. */
  maxBatch?: number;
  /**
   * Beyond Celery: bind the headers `task`, `id`, `eta` and `expires` into
   * the signed body (`celery_sign_binding` in the embed; see `./binding.ts`),
   * so that a Node worker with `requireHeaderBinding` refuses a message whose
   * headers were changed. Python workers ignore the extra key. Default `false`.
   */
  headerBinding?: boolean;
  /**
   * Beyond Celery, opt-in: refusals (a task this client cannot sign, a
   * stored result that does not verify) and store reloads as JSON lines, to
   * a stream or a callback, rate-limited per code (`./securitylog.ts`).
   */
  securityLog?: SecurityLogOption;
}

/** Options of {@link AsyncResult.get}. */
export interface GetOptions {
  /** Milliseconds to wait; default: no limit (as Celery's `timeout=None`). */
  timeout?: number;
  /** Throw {@link TaskFailedError} for a failed task (default `true`); else resolve to the stored exception. */
  propagate?: boolean;
}

/** A handle on a task's result (Celery's `AsyncResult`). */
export class AsyncResult {
  /** The task id. */
  readonly id: string;
  readonly #client: CeleryClient;

  /** @internal */
  constructor(id: string, client: CeleryClient) {
    this.id = id;
    this.#client = client;
  }

  /**
   * Waits for the task's result: resolves with the value the task returned;
   * rejects with {@link TaskFailedError} (carrying the worker's traceback)
   * when it failed or was revoked, or {@link ResultTimeoutError} on timeout.
   */
  async get(options: GetOptions = {}): Promise<unknown> {
    const meta = await this.#client.waitForResult(this.id, options.timeout ?? Infinity);
    if (meta.status === 'SUCCESS') return meta.result;
    if (PROPAGATE_STATES.has(meta.status) && options.propagate !== false) {
      throw new TaskFailedError(this.id, meta.status, exceptionFromMeta(meta.result), meta.traceback ?? null);
    }
    return meta.result;
  }

  /** The stored meta, or `null` while there is none (`PENDING`). */
  async getMeta(): Promise<ResultMeta | null> {
    return this.#client.readResult(this.id);
  }

  /** The task's state (`PENDING` when nothing is stored). */
  async status(): Promise<TaskState> {
    return ((await this.getMeta())?.status ?? 'PENDING') as TaskState;
  }

  /** Whether the task has finished (`SUCCESS`, `FAILURE` or `REVOKED`). */
  async ready(): Promise<boolean> {
    return READY_STATES.has(await this.status());
  }
}

/** A handle on the results of a group's tasks (Celery's `GroupResult`). */
export class GroupResult {
  /** The group id (the `group` header of its tasks). */
  readonly id: string;
  /** The tasks' results, in the group's order (a nested group's are a `GroupResult`). */
  readonly results: (AsyncResult | GroupResult)[];

  /** @internal */
  constructor(id: string, results: (AsyncResult | GroupResult)[]) {
    this.id = id;
    this.results = results;
  }

  /** Waits for every task; resolves with their results in order (Celery's `GroupResult.get()`). */
  async get(options: GetOptions = {}): Promise<unknown[]> {
    const deadline = Date.now() + (options.timeout ?? Infinity);
    const out: unknown[] = [];
    for (const r of this.results) {
      const left = deadline - Date.now();
      out.push(await r.get({ ...options, ...(Number.isFinite(left) ? { timeout: Math.max(1, left) } : {}) }));
    }
    return out;
  }

  /** Whether every task has finished. */
  async ready(): Promise<boolean> {
    for (const r of this.results) if (!(await r.ready())) return false;
    return true;
  }
}

interface Pending {
  message: TaskMessage;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A Celery producer: signs and sends task messages, reads results. */
export class CeleryClient {
  /** This client's id, sent as `reply_to` (Celery's `app.thread_oid`). */
  readonly oid: string = randomUUID();
  /** The signing serializer. */
  readonly security: SecureSerializer;
  readonly #options: ClientOptions;
  readonly #resultSerializer: ResultSerializer;
  readonly #maxBatch: number;
  #transport: Promise<BrokerTransport> | undefined;
  #backend: Promise<ResultBackend> | undefined;
  #pending: Pending[] = [];
  #flushing = false;
  #closed = false;
  readonly #securityLog: SecurityLog | undefined;

  /** Use {@link createClient}. */
  constructor(options: ClientOptions) {
    if (!options || typeof options.broker !== 'string') throw new ImproperlyConfigured('createClient needs a broker URL');
    this.#options = options;
    this.security = resolveSecurity(options.security);
    this.#resultSerializer = options.resultSerializer ?? 'json';
    if (this.#resultSerializer !== 'json' && this.#resultSerializer !== 'auth') {
      throw new ImproperlyConfigured("resultSerializer must be 'json' or 'auth'");
    }
    this.#maxBatch = Math.max(1, options.maxBatch ?? 1000);
    if (options.backend) checkBackend(options.backend, options.broker);
    if (options.securityLog) {
      try {
        this.#securityLog = new SecurityLog(options.securityLog, { broker: options.broker, hostname: osHostname(), source: 'client' });
      } catch (err) {
        throw new ImproperlyConfigured((err as Error).message);
      }
      this.#securityLog.watchStore(this.security.store);
    }
  }

  /** Logs a refusal of the client's own (signing, results) to the security log. */
  #logRefusal(event: 'sign-refused' | 'result-refused', err: unknown, task: unknown, id: unknown): void {
    if (!this.#securityLog || !(err instanceof SecurityError)) return;
    this.#securityLog.clientRefused(event, err, typeof task === 'string' ? task : null, typeof id === 'string' ? id : null);
  }

  #check(): void {
    if (this.#closed) throw new WireError('ERR_CLOSED', 'The client is closed');
  }

  #broker(): Promise<BrokerTransport> {
    this.#transport ??= openTransport(this.#options.broker, {
      ...(this.#options.transportOptions ? { transportOptions: this.#options.transportOptions } : {}),
      ...(this.#options.connectTimeout !== undefined ? { connectTimeout: this.#options.connectTimeout } : {}),
      ...(this.#options.brokerUseSsl !== undefined ? { ssl: this.#options.brokerUseSsl } : {}),
    }).catch((err: unknown) => {
      this.#transport = undefined;
      throw err;
    });
    return this.#transport;
  }

  #results(): Promise<ResultBackend> {
    const url = this.#options.backend;
    if (!url) return Promise.reject(new ImproperlyConfigured('No result backend configured: createClient({ backend })'));
    this.#backend ??= openBackend(url, {
      oid: this.oid,
      broker: () => this.#broker(),
      security: this.security,
      resultSerializer: this.#resultSerializer,
      ...(this.#options.resultExpires !== undefined ? { resultExpires: this.#options.resultExpires } : {}),
      ...(this.#options.pollInterval !== undefined ? { pollInterval: this.#options.pollInterval } : {}),
      ...(this.#options.connectTimeout !== undefined ? { connectTimeout: this.#options.connectTimeout } : {}),
      ...(this.#options.backendTransportOptions ? { transportOptions: this.#options.backendTransportOptions } : {}),
      ...(this.#options.redisBackendUseSsl !== undefined ? { ssl: this.#options.redisBackendUseSsl } : {}),
    }).catch((err: unknown) => {
      this.#backend = undefined;
      throw err;
    });
    return this.#backend;
  }

  /** Connects to the broker (and the backend) now rather than on first use. */
  async connect(): Promise<void> {
    this.#check();
    await this.#broker();
    if (this.#options.backend) await this.#results();
  }

  /**
   * Sends a signed task message, as Celery's
   * `app.send_task(name, args, kwargs, **options)`; resolves once the broker
   * has it.
   */
  async sendTask(
    name: string,
    args: readonly unknown[] = [],
    kwargs: Record<string, unknown> | Map<unknown, unknown> = {},
    options: TaskOptions = {},
  ): Promise<AsyncResult> {
    this.#check();
    const message = buildTaskMessage(name, args, kwargs, options, {
      replyTo: this.oid,
      // What each Celery's send_task writes when not told: 5.4 False, 5.5+ None.
      ignoreResult: this.security.wireFormat === 'celery-5.4' ? false : null,
    });
    if (this.#options.headerBinding) bindHeaders(message);
    await new Promise<void>((resolve, reject) => {
      this.#pending.push({ message, resolve, reject });
      this.#schedule();
    });
    return new AsyncResult(message.headers.id as string, this);
  }

  /**
   * A task signature bound to this client (Celery's
   * `signature(name, args, kwargs, options)`):
   * `client.signature('tasks.add', [2, 2]).applyAsync()`.
   * Options are Celery's `apply_async` options, as Celery names them.
   */
  signature(task: string, args?: readonly unknown[], kwargs?: Record<string, unknown>, options?: SignatureOptions): Signature {
    const sig = new Signature(task, args, kwargs, options);
    sig.host = this;
    return sig;
  }

  /**
   * Sends a canvas (a signature, `chain`, `group` or `chord`) as Celery's
   * `apply_async` does, every message signed; `options` are `apply_async`'s
   * (Celery's names: `queue`, `countdown`, `task_id`...). Resolves once the
   * broker has them all, with the result handle Celery returns: the last
   * task's `AsyncResult` for a chain, a {@link GroupResult} for a group, the
   * body's `AsyncResult` for a chord. A chord needs the Redis result backend
   * (its size is set there first).
   */
  async send(canvas: Canvas, options: SignatureOptions = {}): Promise<AsyncResult | GroupResult> {
    this.#check();
    const { sender, applied } = planCanvas(canvas, this.oid, options, this.security.wireFormat === 'celery-5.4' ? false : null);
    if (sender.chordSizes.length > 0) {
      const backend = await this.#results();
      if (!backend.setChordSize) throw new CanvasError('Starting chords requires a result backend that counts chords (Redis)');
      for (const c of sender.chordSizes) await backend.setChordSize(c.groupId, c.size);
    }
    await Promise.all(
      sender.messages.map((message) => {
        if (this.#options.headerBinding) bindHeaders(message);
        return new Promise<void>((resolve, reject) => {
          this.#pending.push({ message, resolve, reject });
          this.#schedule();
        });
      }),
    );
    const toResult = (a: Applied): AsyncResult | GroupResult =>
      a.kind === 'task' ? new AsyncResult(a.id, this) : new GroupResult(a.id, a.results.map(toResult));
    return toResult(applied);
  }

  /** A handle on the result of a task sent before. */
  asyncResult(id: string): AsyncResult {
    return new AsyncResult(id, this);
  }

  #schedule(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    setImmediate(() => void this.#flush());
  }

  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        let batch = this.#pending.splice(0, this.#maxBatch);
        try {
          const transport = await this.#broker();
          // Celery's on_task_call: the rpc:// reply queue exists before a task names it.
          if (this.#options.backend && backendTraits(this.#options.backend).onTaskCall) await (await this.#results()).onTaskCall?.();
          let outgoing: OutgoingMessage[];
          try {
            outgoing = await encodeTaskMessages(
              batch.map((p) => p.message),
              this.security,
            );
          } catch {
            // One value kombu JSON cannot encode must not fail its neighbours: one by one.
            const ok: Pending[] = [];
            outgoing = [];
            for (const p of batch) {
              try {
                outgoing.push(...(await encodeTaskMessages([p.message], this.security)));
                ok.push(p);
              } catch (err) {
                this.#logRefusal('sign-refused', err, p.message.headers.task, p.message.headers.id);
                p.reject(err);
              }
            }
            batch = ok;
          }
          await transport.publish(outgoing);
          for (const p of batch) p.resolve();
        } catch (err) {
          for (const p of batch) {
            this.#logRefusal('sign-refused', err, p.message.headers.task, p.message.headers.id);
            p.reject(err);
          }
        }
      }
    } finally {
      this.#flushing = false;
      if (this.#pending.length > 0) this.#schedule();
    }
  }

  /** @internal The stored meta of a task, decoded, or `null`. */
  async readResult(id: string): Promise<ResultMeta | null> {
    this.#check();
    const backend = await this.#results();
    try {
      if (backend.getMeta) return await backend.getMeta(id);
      const value = await backend.get(id);
      return value === null ? null : await decodeMeta(value, this.#resultSerializer, this.security);
    } catch (err) {
      this.#logRefusal('result-refused', err, null, id);
      throw err;
    }
  }

  /** @internal Waits for a ready meta. */
  async waitForResult(id: string, timeoutMs: number): Promise<ResultMeta> {
    try {
      return await this.#waitForResult(id, timeoutMs);
    } catch (err) {
      this.#logRefusal('result-refused', err, null, id);
      throw err;
    }
  }

  async #waitForResult(id: string, timeoutMs: number): Promise<ResultMeta> {
    this.#check();
    const backend = await this.#results();
    if (backend.waitMeta) {
      const meta = await backend.waitMeta(id, timeoutMs);
      if (meta === null) throw new ResultTimeoutError(id, timeoutMs);
      return meta;
    }
    const deadline = Date.now() + timeoutMs;
    const isReady = (v: string): boolean => {
      const s = quickStatus(v);
      return s === null || READY_STATES.has(s); // not plain JSON (auth): decode to know
    };
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new ResultTimeoutError(id, timeoutMs);
      const value = await backend.wait(id, left, isReady);
      if (value === null) throw new ResultTimeoutError(id, timeoutMs);
      const meta = await decodeMeta(value, this.#resultSerializer, this.security);
      if (READY_STATES.has(meta.status)) return meta;
      await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, deadline - Date.now()))));
    }
  }

  /**
   * Waits for pending sends (at most `timeout` ms, default 10000; sends still
   * pending then are rejected with `WireError` `ERR_CLOSED`), then closes the
   * broker and backend connections. Waiting `get()` calls are rejected.
   */
  async close(options: { timeout?: number } = {}): Promise<void> {
    if (this.#closed) return;
    const deadline = Date.now() + (options.timeout ?? 10000);
    while ((this.#flushing || this.#pending.length > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.#closed = true;
    for (const p of this.#pending.splice(0)) p.reject(new WireError('ERR_CLOSED', 'The client was closed before the task was sent'));
    const t = this.#transport;
    const b = this.#backend;
    this.#transport = undefined;
    this.#backend = undefined;
    await Promise.all([
      t?.then((x) => x.close()).catch(() => undefined),
      b?.then((x) => x.close()).catch(() => undefined),
    ]);
    this.#securityLog?.close();
  }
}

/**
 * Creates a Celery producer. Connects on first use (or `await client.connect()`).
 *
 * ```ts
 * const client = createClient({ broker: 'redis://127.0.0.1:6379/0', backend: 'redis://127.0.0.1:6379/0', security });
 * const r = await client.sendTask('tasks.add', [2, 2]);
 * console.log(await r.get({ timeout: 10_000 })); // 4
 * await client.close();
 * ```
 */
export function createClient(options: ClientOptions): CeleryClient {
  return new CeleryClient(options);
}
