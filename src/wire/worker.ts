/**
 * The worker: consumes signed task messages, verifies them in batches, runs
 * the registered handlers, stores results in Celery's format and
 * acknowledges each message only once its outcome is settled (Celery's
 * `task_acks_late`).
 *
 * Refused messages, as a Celery worker refuses them (checked against Celery
 * 5.7's `celery/worker/consumer/consumer.py`):
 * - a body that does not verify or decode (bad signature, unknown signer,
 *   malformed payload, undecodable content): Celery's `on_decode_error` logs
 *   it as CRITICAL and **acks** it: the message is dropped, no result is stored;
 * - a content type other than `application/data` (e.g. unsigned JSON):
 *   Celery's `on_invalid_task` (kombu `ContentDisallowed`) logs an error and
 *   **rejects** it without requeueing: dropped, no result stored;
 * - a verified body that is not `[args, kwargs, embed]` (Celery:
 *   `InvalidTaskError`): rejected without requeueing;
 * - a task name with no handler (Celery's `on_unknown_task`): rejected and a
 *   `FAILURE` with `NotRegistered` stored. Unlike Celery this worker stores it
 *   only for a message whose signature verified.
 * On Redis acking and rejecting without requeue are the same operation (the
 * message leaves `unacked`); on AMQP a rejected message goes to the queue's
 * dead-letter exchange when it has one. Every refusal emits a `'security'`
 * event ({@link SecurityEvent}) and the worker goes on with the next message.
 *
 * Beyond Celery, opt-in: `replayWindow` (refuse a task id accepted within the
 * window, `./replay.ts`) and `requireHeaderBinding` (refuse a body that does
 * not bind the headers `task`, `id`, `eta`, `expires`, `./binding.ts`; a
 * binding that is present is always checked). Both refuse with code
 * `ERR_REPLAYED` or `ERR_HEADER_MISMATCH`, `action: 'reject'` and `check` naming the rule.
 *
 * With `events` the worker publishes Celery's worker and task events,
 * signed (`./events.ts`).
 *
 * A handler retries with `ctx.retry()` or a task's `autoretryFor`
 * (`./retry.ts`): the task is re-sent signed, `RETRY` stored, then the
 * message acked. By default `SIGTERM` and `SIGINT` shut the worker down warm
 * and a second signal cold, as `celery worker` does (`./shutdown.ts`).
 *
 * With `remoteControl` (on by default, as Celery's
 * `worker_enable_remote_control`) the worker joins Celery's pidbox and
 * answers `celery inspect` / `celery control` (`./control.ts`): only signed
 * commands are acted upon, a refused one is a `'security'` event (its `queue`
 * is the node's `<hostname>.celery.pidbox`), an executed one a `'control'`
 * event ({@link ControlEvent}); replies are signed. Revoked ids are kept as
 * Celery keeps them (a task revoked before it arrives is not run), and
 * `rateLimits` / `rate_limit` hold tasks back with token buckets
 * (`./ratelimit.ts`).
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname as osHostname } from 'node:os';
import { ImproperlyConfigured, SecurityError, type SecurityErrorCode } from '../errors.js';
import type { SecureSerializer } from '../serializer.js';
import { Authorizer, checkAuthorizeConfig, type AuthorizeOption, type ControlAuthorizeOption } from './authorize.js';
import { BINDING_KEY, bindHeaders, checkBinding } from './binding.js';
import { SecurityLog, subjectIn, type SecurityLogOption } from './securitylog.js';
import { censorUrl, ControlNode, RevokedSet, type ControlEvent, type ControlHost, type RemoteControlOptions, type RequestInfo } from './control.js';
import { RateLimits, type RateLimit } from './ratelimit.js';
import { CanvasError, CanvasRunner, hasCanvas, type CanvasRequest } from './canvas.js';
import type { CanvasSender } from './canvas-engine.js';
import { WireError, type SerializedException } from './errors.js';
import { EventDispatcher, type EventOptions } from './events.js';
import {
  AUTH_CONTENT_TYPE,
  DEFAULT_QUEUE,
  encodeTaskMessages,
  parseIsoDate,
  parseTaskBody,
  REPR_MAXSIZE,
  type TaskBody,
  type TaskEmbed,
  type TaskMessage,
} from './protocol.js';
import { ReplayGuard } from './replay.js';
import { redactTransportOptions } from './sentinel.js';
import {
  bindRetry,
  buildRetryMessage,
  policyOf,
  readTasks,
  Retry,
  retriedEventFields,
  retryMeta,
  type RetryOptions,
  type RetryPolicy,
  type TaskDefinition,
  type TaskRetriedEvent,
} from './retry.js';
import { saferepr } from './saferepr.js';
import { SignalHandlers } from './shutdown.js';
import {
  buildMeta,
  decodeMeta,
  encodeMetas,
  serializeException,
  tracebackOf,
  type MetaRequest,
  type ResultMeta,
  type ResultSerializer,
} from './results.js';
import { resolveSecurity, type SecurityOption } from './security.js';
import type { AmqpSslOptions, BrokerUseSsl, RedisSslOptions } from './tls.js';
import {
  checkBackend,
  openBackend,
  openTransport,
  type BrokerConsumer,
  type BrokerTransport,
  type Delivery,
  type OutgoingMessage,
  type ResultBackend,
  type StoredResult,
} from './transport.js';
import './redis.js';
import './amqp.js';
import './rpc.js';

/** What a handler gets besides `args` and `kwargs`. */
export interface TaskContext {
  /** Task id (`headers.id`). */
  readonly id: string;
  /** Task name (`headers.task`). */
  readonly name: string;
  /** The Celery id of the certificate whose key signed the body. */
  readonly signer: string;
  /** The message headers (not covered by the signature). */
  readonly headers: Readonly<Record<string, unknown>>;
  readonly retries: number;
  readonly eta: Date | null;
  readonly expires: Date | null;
  readonly rootId: string | null;
  readonly parentId: string | null;
  readonly group: string | null;
  /** The queue it came from. */
  readonly queue: string;
  readonly priority: number;
  /** The broker delivered it before (a restored or requeued message). */
  readonly redelivered: boolean;
  /** callbacks, errbacks, chain, chord (followed by the worker unless `canvas: false`). */
  readonly embed: TaskEmbed;
  /** This worker's name. */
  readonly hostname: string;
  /** Aborted at the soft or hard time limit, or when a stop gives up waiting. */
  readonly signal: AbortSignal;
  /**
   * Retries the task (Celery's `raise self.retry(...)`): always throws, a
   * {@link Retry} for the worker to act on, or, when the retries are spent,
   * `options.exc` or a `MaxRetriesExceededError`. See `./retry.ts`.
   */
  retry(options?: RetryOptions): never;
}

/** A task implementation. Its return value is stored as the result (kombu JSON). */
export type TaskHandler = (args: unknown[], kwargs: Record<string, unknown>, ctx: TaskContext) => unknown;

/** Emitted as `'security'` for every refused message. Contains no key material. */
export interface SecurityEvent {
  /** The refusal's code (`ERR_BAD_SIGNATURE`, `ERR_UNKNOWN_CERTIFICATE`, `ERR_CONTENT_DISALLOWED`...). */
  code: SecurityErrorCode;
  /** Why, in words. */
  reason: string;
  /** `headers.id` as the message claims it (not signed), or `null`. */
  taskId: string | null;
  /** `headers.task` as the message claims it, or `null`. */
  task: string | null;
  /** The verified signer, when the signature was good but the content was refused. */
  signer?: string;
  /** The queue it came from (a refused remote control command: the node's `<hostname>.celery.pidbox`). */
  queue: string;
  /** What happened to the message: `'ack'` (Celery's decode-error path) or `'reject'` (invalid task). */
  action: 'ack' | 'reject';
  error: SecurityError;
  /**
   * Set when one of celery-sign's own rules refused a verified message:
   * `'replay'` (the task id was accepted within `replayWindow`) or
   * `'header-binding'` (the headers do not match the signed binding, or a
   * binding is required and missing) or `'authorization'` (the signer may
   * not call this task, `authorize`, or send this remote control command,
   * `authorizeControl`).
   */
  check?: 'replay' | 'header-binding' | 'authorization';
}

/** Emitted as `'task-succeeded'`. */
export interface TaskSucceededEvent {
  id: string;
  name: string;
  result: unknown;
  /** Milliseconds. */
  runtime: number;
}

/** Emitted as `'task-failed'`. */
export interface TaskFailedEvent {
  id: string;
  name: string;
  error: unknown;
  runtime: number;
}

/** Emitted as `'task-revoked'` (expired) and `'task-unknown'` (no handler). */
export interface TaskRefusedEvent {
  id: string;
  name: string;
  reason: string;
}

/** Options of {@link createWorker}. */
export interface WorkerOptions {
  /** Broker URL, e.g. `redis://127.0.0.1:6379/0`. */
  broker: string;
  /**
   * Result backend URL (`redis://...`, or `rpc://`: each result sent to the
   * reply queue of the client that sent the task, with an AMQP broker);
   * without it no result is stored.
   */
  backend?: string;
  /** Verifies every body: a {@link SecureSerializer} with a store, or Celery's settings. */
  security: SecurityOption;
  /**
   * Tasks by name: a handler, or a {@link TaskDefinition} `{ run, ...options }`
   * with Celery's retry options (`autoretryFor`, `maxRetries`,
   * `defaultRetryDelay`, `retryBackoff`, `retryBackoffMax`, `retryJitter`).
   */
  tasks: Record<string, TaskHandler | TaskDefinition>;
  /** Handlers running at once. Default 16. */
  concurrency?: number;
  /** Queues, in order of preference. Default `['celery']`. */
  queues?: string[];
  /** Messages held per unit of concurrency (Celery's `worker_prefetch_multiplier`). Default 4. */
  prefetchMultiplier?: number;
  /** Most messages verified in one native batch. Default 256. */
  batchSize?: number;
  /** Seconds before an unacknowledged message is redelivered. Default: the transport's (kombu: 3600). */
  visibilityTimeout?: number;
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
  /** Celery's `result_backend_transport_options`. */
  backendTransportOptions?: Record<string, unknown>;
  /** Celery's `result_serializer`: `'json'` (default) or `'auth'`. */
  resultSerializer?: ResultSerializer;
  /** Seconds results are kept (Celery's `result_expires`). Default 86400; `null`: forever. */
  resultExpires?: number | null;
  /**
   * Celery's `result_backend_always_retry`: a failed store of results is
   * tried again, after an exponential wait with full jitter (as Celery's
   * `get_exponential_backoff_interval`), up to `resultBackendMaxRetries`
   * times (then Celery's defaults: no limit, 20 ms doubling up to 10 s), as
   * long as the error may pass (a lost connection, a timeout, a Redis
   * `LOADING`/`READONLY`/`BUSY`...; not an error reply such as `WRONGTYPE` or
   * `OOM`, as Celery's `exception_safe_to_retry`). The batch's messages stay
   * unacknowledged meanwhile, and later settlements wait behind it: the
   * worker takes no more once its held windows are full, and a message held
   * beyond the broker's own limit (Redis: `visibilityTimeout`, restored to
   * another worker; RabbitMQ: `consumer_timeout`, 30 minutes by default)
   * runs again elsewhere. `false`: no retry. Not given: celery-sign's
   * default, 4 retries 100 ms doubling up to 10 s. When the tries run out,
   * the messages go back to the broker to run again, after one more wait
   * (so that a backend that stays down does not loop them). A stopping
   * worker stops trying, and a message is acknowledged only once its result
   * is stored.
   */
  resultBackendAlwaysRetry?: boolean;
  /** Celery's `result_backend_max_retries`: how many times a failed store is tried again before its messages go back to the broker (`Infinity`: until it works or the worker stops). */
  resultBackendMaxRetries?: number;
  /** Celery's `result_backend_base_sleep_between_retries_ms`: the first wait, doubled with each consecutive failure. */
  resultBackendBaseSleepBetweenRetriesMs?: number;
  /** Celery's `result_backend_max_sleep_between_retries_ms`: the longest wait (default 10000). */
  resultBackendMaxSleepBetweenRetriesMs?: number;
  /** Celery's `result_persistent`: `rpc://` results sent as persistent messages. Default `false`. */
  resultPersistent?: boolean;
  /** This worker's name. Default `celery-sign@<hostname>`. */
  hostname?: string;
  /** Milliseconds to connect. Default 10000. */
  connectTimeout?: number;
  /**
   * Publish Celery's worker and task events (`worker-online`,
   * `worker-heartbeat`, `worker-offline`, `task-received`, `task-started`,
   * `task-succeeded`, `task-failed`, `task-revoked`) to the `celeryev`
   * exchange, signed with the `auth` serializer (Celery's
   * `event_serializer = 'auth'`): `security` then needs a key and a
   * certificate. Default `false`.
   */
  events?: boolean | EventOptions;
  /**
   * Beyond Celery: refuse a task whose id this worker accepted within the
   * last `replayWindow` milliseconds (a replayed or twice delivered message).
   * Default: off.
   */
  replayWindow?: number;
  /** Most task ids the replay guard remembers. Default 100000. */
  replayCacheSize?: number;
  /**
   * Beyond Celery: refuse a message whose signed body does not bind its
   * headers `task`, `id`, `eta` and `expires` (a producer with
   * `headerBinding: true`). A binding that is present is checked either way.
   * With it the worker also binds the messages it sends itself (the next
   * task of a chain, callbacks, chord bodies, retries). Default `false`.
   */
  requireHeaderBinding?: boolean;
  /**
   * Beyond Celery: which signer may call which tasks (`./authorize.ts`):
   * rules (a signer `{ id }` or `{ cn }` and task names or globs such as
   * `billing.*`), an object of signer id or common name to task patterns, or
   * a function of the signer and the task name. Once given, everything else
   * is refused (`ERR_NOT_AUTHORIZED`, check `'authorization'`, rejected, no
   * result stored). Task names are unsigned
   * headers, so this needs `requireHeaderBinding: true` (construction throws
   * `ImproperlyConfigured` when `requireHeaderBinding` is not given; an
   * explicit `false` is accepted with a warning, for a roll-out). The tasks
   * the worker sends itself (chains, callbacks, retries) are signed with its
   * own certificate: authorize it for them. Default: every verified signer
   * may call every task, as in Celery. Remote control commands are not
   * tasks: see `authorizeControl`.
   */
  authorize?: AuthorizeOption;
  /**
   * Beyond Celery: which signer may send which remote control commands
   * (`celery inspect` / `celery control`, Flower): rules
   * `{ signer: { cn: 'ops' }, commands: ['*'] }` (names or globs such as
   * `ping`, `stats`, `revoke`, `shutdown`), an object of signer id or common
   * name to command patterns, or a function of the signer and the command
   * name. Once given, every other command is refused (`ERR_NOT_AUTHORIZED`,
   * check `'authorization'`, neither run nor answered). The command is in the
   * signed body, so no header binding is needed. The worker's own replies are
   * not commands. Default: every verified signer may send every command, as
   * in Celery; with `authorize` given, give this too, or a signer allowed
   * one task may still `shutdown` every worker.
   */
  authorizeControl?: ControlAuthorizeOption;
  /**
   * Beyond Celery, opt-in: every refusal (and store reload, expiry skip,
   * authorization refusal) as one JSON line, to a stream
   * (`process.stderr`) or a callback; rate-limited per code
   * (`./securitylog.ts`). `{ to, rate, authorized: true }` also logs allowed
   * authorization decisions. Default: off (the `'security'` event only).
   */
  securityLog?: SecurityLogOption;
  /**
   * Act on the canvas a task message carries, as Celery's worker does: send
   * the next task of its `chain`, apply its `callbacks` (`link`) and
   * `errbacks` (`link_error`), count its chord part. The messages the worker
   * sends are signed, so `security` then needs a key and a certificate, as a
   * Celery worker under `setup_security()` has. Default `true`; `false` for a
   * worker that only verifies (its security has a store and no key): the
   * task still runs, and a canvas it carries is not followed but reported as
   * an `'error'` event.
   */
  canvas?: boolean;
  /**
   * Let tasks retry (`ctx.retry`, `autoretryFor`): the worker then re-sends
   * the task message, signed, so `security` needs a key and a certificate
   * (whatever `canvas` says). Default `true`; `false` for a worker that only
   * verifies: `ctx.retry` then fails the task with `ImproperlyConfigured`.
   */
  retries?: boolean;
  /**
   * Handle `SIGTERM`, `SIGINT` and `SIGQUIT` while running, as
   * `celery worker` does: the first `SIGTERM` or `SIGINT` is a warm shutdown (stop
   * consuming, give back what is held, let running tasks finish within
   * `shutdownTimeout`), a second one or `SIGQUIT` a cold shutdown (running
   * tasks go back to their queue unacknowledged); then the process exits
   * with Celery's code (0 after SIGTERM, 1 otherwise) unless the application
   * listens to that signal too. See `./shutdown.ts`. Default `true`; `false`
   * for an application that owns its signals (it calls `stop()`).
   */
  handleSignals?: boolean;
  /** Milliseconds a signal's warm shutdown waits for running tasks before it goes cold. Default 30000. */
  shutdownTimeout?: number;
  /**
   * Join Celery's remote control (the pidbox), as a Celery worker does
   * (`worker_enable_remote_control`): answer `celery inspect` and
   * `celery control` (`ping`, `active`, `stats`, `revoke`, `rate_limit`,
   * `shutdown`...; see `./control.ts`). Commands are accepted only signed
   * (verified against the store), replies are signed, so `security` then
   * needs a key and a certificate. Default `true`; `false` turns it off.
   */
  remoteControl?: boolean | RemoteControlOptions;
  /**
   * Per-task rate limits (Celery's task `rate_limit`: `'10/s'`, `'10/m'`,
   * `'10/h'`), by task name; the `rate_limit` control command changes them
   * at run time. Default: none.
   */
  rateLimits?: Record<string, RateLimit>;
}

/** Options of {@link Worker.stop}. */
export interface StopOptions {
  /**
   * Milliseconds the whole stop may wait for running tasks (and for a broker
   * that is down). Default 30000. Tasks still running then are given back to
   * their queue (they may run twice). A stop called during another with a
   * shorter timeout shortens it (`stop({ timeout: 0 })`: a cold shutdown).
   */
  timeout?: number;
}

interface Job {
  delivery: Delivery;
  id: string;
  name: string;
  handler: TaskHandler;
  args: unknown[];
  kwargs: Record<string, unknown>;
  embed: TaskEmbed;
  signer: string;
  eta: Date | null;
  expires: Date | null;
  /** The verified body carried a header binding (a retry then binds its own headers). */
  bound: boolean;
  abandoned: boolean;
  /** Aborts the task's `ctx.signal` (made only when the task reads it). */
  abort?: (reason: unknown) => void;
  timer?: NodeJS.Timeout;
  /** Seconds since the epoch when it started running. */
  started?: number;
  /** Aborts it as revoked with `terminate` (remote control). */
  terminate?: (signum: number) => void;
}

interface Settlement {
  delivery: Delivery;
  action: 'ack' | 'reject';
  meta: ResultMeta | null;
  emit?: () => void;
  /** Canvas steps (./canvas.ts): published before the result is stored; run after it, before the ack. */
  canvas?: {
    before?: CanvasSender;
    after?: () => Promise<void>;
    /** What `after` becomes when `before` cannot be encoded (the task is then a FAILURE, as Celery's tracer makes it). */
    failed?: (exc: SerializedException) => () => Promise<void>;
  };
}

/**
 * Held messages, in prefetch windows, that a worker may hold at most: the
 * window itself plus those settled and waiting to be stored and acknowledged.
 */
const MAX_HELD_WINDOWS = 4;

/**
 * @internal How many times the worker tries to store a batch of results
 * before it gives the batch's messages back to the broker (to run again),
 * waiting {@link STORE_RETRY_BASE_MS} doubled each time between tries,
 * when `resultBackendAlwaysRetry` and `resultBackendMaxRetries` are not given.
 */
export const STORE_ATTEMPTS = 5;
/** @internal The first wait between two tries to store results, in ms. */
export const STORE_RETRY_BASE_MS = 100;
/** @internal The longest wait between two tries to store results, in ms (Celery's `result_backend_max_sleep_between_retries_ms` default). */
export const STORE_RETRY_MAX_MS = 10000;

/** How a worker retries a failed store of results (see `resultBackendAlwaysRetry`). */
interface StoreRetryPolicy {
  /** Retries after the first try; `Infinity`: no limit. */
  retries: number;
  baseMs: number;
  maxMs: number;
  /**
   * Celery's `result_backend_always_retry` behaviour: full jitter (a wait
   * drawn from [0, base x 2^retries], the first retry's ceiling 2 x base), and
   * only errors that may pass (see {@link retrySafe}) are retried.
   */
  celery: boolean;
}

/**
 * Whether a failed store may succeed if tried again, as Celery's
 * `exception_safe_to_retry` asks it: anything but an error the server
 * answered (a Redis error reply such as `WRONGTYPE`, `NOAUTH`, `OOM`,
 * `MISCONF`), unless that reply says to wait (`LOADING`, `BUSY`,
 * `TRYAGAIN`, `MASTERDOWN`, `READONLY` during a fail-over, `CLUSTERDOWN`).
 */
function retrySafe(err: unknown): boolean {
  if (!(err instanceof Error) || err.name !== 'ReplyError') return true;
  return /^(?:LOADING|BUSY|TRYAGAIN|MASTERDOWN|READONLY|CLUSTERDOWN)\b/.test(err.message);
}

/** The longest delay `setTimeout` takes (2^31 - 1 ms); beyond it Node waits 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function storeRetryPolicy(o: WorkerOptions): StoreRetryPolicy {
  const num = (name: string, v: number | undefined, integral: boolean): number | undefined => {
    if (v === undefined) return undefined;
    const ok = integral
      ? typeof v === 'number' && v >= 0 && (v === Infinity || Number.isSafeInteger(v))
      : typeof v === 'number' && v >= 0 && v <= MAX_TIMER_MS;
    if (!ok) {
      const want = integral ? 'an integer >= 0, or Infinity' : `a number of milliseconds from 0 to ${MAX_TIMER_MS}`;
      throw new ImproperlyConfigured(`${name} must be ${want}, not ${String(v).slice(0, 40)}`);
    }
    return v;
  };
  const always = o.resultBackendAlwaysRetry;
  if (always !== undefined && typeof always !== 'boolean') throw new ImproperlyConfigured('resultBackendAlwaysRetry must be a boolean');
  const retries = num('resultBackendMaxRetries', o.resultBackendMaxRetries, true);
  const baseMs = num('resultBackendBaseSleepBetweenRetriesMs', o.resultBackendBaseSleepBetweenRetriesMs, false);
  const maxMs = num('resultBackendMaxSleepBetweenRetriesMs', o.resultBackendMaxSleepBetweenRetriesMs, false);
  if (always === true) return { retries: retries ?? Infinity, baseMs: baseMs ?? 10, maxMs: maxMs ?? STORE_RETRY_MAX_MS, celery: true };
  // No retry; the wait is still kept before the messages go back (see #store).
  const waits = { baseMs: baseMs ?? STORE_RETRY_BASE_MS, maxMs: maxMs ?? STORE_RETRY_MAX_MS, celery: false };
  if (always === false) return { retries: 0, ...waits };
  return { retries: retries ?? STORE_ATTEMPTS - 1, ...waits };
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

/**
 * Whether the canvas steps around a task's result do anything for it:
 * callbacks, errbacks or a chain (anything but an empty list or none), or a
 * chord. For any other task they are skipped.
 */
function carriesCanvas(embed: TaskEmbed): boolean {
  const some = (v: unknown): boolean => (Array.isArray(v) ? v.length > 0 : v !== null && v !== undefined);
  return some(embed.callbacks) || some(embed.errbacks) || some(embed.chain) || (embed.chord !== null && embed.chord !== undefined);
}

/** A Celery worker for signed tasks. See {@link createWorker}. */
export class Worker extends EventEmitter {
  /** The verifying serializer. */
  readonly security: SecureSerializer;
  /** This worker's name. */
  readonly hostname: string;
  readonly #options: WorkerOptions;
  readonly #tasks: ReadonlyMap<string, TaskHandler>;
  readonly #retryPolicies: ReadonlyMap<string, RetryPolicy>;
  readonly #retries: boolean;
  readonly #concurrency: number;
  readonly #prefetch: number;
  readonly #batchSize: number;
  readonly #queues: string[];
  readonly #resultSerializer: ResultSerializer;
  readonly #replay: ReplayGuard | undefined;
  readonly #requireBinding: boolean;
  readonly #authorizer: Authorizer | undefined;
  readonly #controlAuthorizer: Authorizer | undefined;
  readonly #storeRetry: StoreRetryPolicy;
  readonly #securityLog: SecurityLog | undefined;
  readonly #canvas: boolean;
  #canvasRunner: CanvasRunner | undefined;
  #events: EventDispatcher | undefined;
  #control: ControlNode | undefined;
  readonly #revoked = new RevokedSet();
  readonly #rateLimits: RateLimits;
  #rateTimer: NodeJS.Timeout | undefined;
  readonly #total = new Map<string, number>();
  readonly #timeLimits = new Map<string, { soft: number | null; hard: number | null }>();
  #startedAt = 0;
  #prefetchSent = 0;
  #prefetchSyncing = false;
  #transport: BrokerTransport | undefined;
  #backend: ResultBackend | undefined;
  #consumer: BrokerConsumer | undefined;
  #state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';
  #loop: Promise<void> | undefined;
  /** Messages taken from the broker and not yet acknowledged or given back. */
  #held = 0;
  /** Of those, ETA tasks waiting for their time (outside the prefetch window, as in Celery). */
  #etaHeld = 0;
  /** Of those, messages whose outcome is settled, waiting to be stored and acknowledged. */
  #settledHeld = 0;
  #room: (() => void) | undefined;
  readonly #batches = new Set<Promise<void>>();
  readonly #ready: Job[] = [];
  readonly #eta = new Set<Job>();
  readonly #running = new Set<Job>();
  #settleQueue: Settlement[] = [];
  #settling: Promise<void> | undefined;
  #idle: (() => void)[] = [];
  /** Counters since start. */
  readonly stats = { received: 0, succeeded: 0, failed: 0, refused: 0, revoked: 0, unknown: 0, retried: 0 };

  /** Use {@link createWorker}. */
  constructor(options: WorkerOptions) {
    super();
    if (!options || typeof options.broker !== 'string') throw new ImproperlyConfigured('createWorker needs a broker URL');
    if (!options.tasks || typeof options.tasks !== 'object') throw new ImproperlyConfigured('createWorker needs tasks');
    const { handlers, policies, autoretries } = readTasks(options.tasks);
    this.#retries = options.retries !== false;
    if (!this.#retries && autoretries.length > 0) {
      throw new ImproperlyConfigured(`retries: false, and tasks autoretry: ${autoretries.map((n) => JSON.stringify(n)).join(', ')}`);
    }
    this.#options = options;
    this.security = resolveSecurity(options.security);
    this.#tasks = handlers;
    this.#retryPolicies = policies;
    this.#concurrency = Math.max(1, Math.floor(options.concurrency ?? 16));
    this.#prefetch = Math.max(1, this.#concurrency * Math.max(1, Math.floor(options.prefetchMultiplier ?? 4)));
    this.#batchSize = Math.max(1, Math.floor(options.batchSize ?? 256));
    this.#queues = options.queues && options.queues.length > 0 ? [...options.queues] : [DEFAULT_QUEUE];
    this.#resultSerializer = options.resultSerializer ?? 'json';
    if (this.#resultSerializer !== 'json' && this.#resultSerializer !== 'auth') {
      throw new ImproperlyConfigured("resultSerializer must be 'json' or 'auth'");
    }
    this.hostname = options.hostname ?? `celery-sign@${osHostname()}`;
    if (options.securityLog) {
      try {
        this.#securityLog = new SecurityLog(options.securityLog, { broker: options.broker, hostname: this.hostname, source: 'worker' });
      } catch (err) {
        throw new ImproperlyConfigured((err as Error).message);
      }
    }
    if (options.replayWindow !== undefined && options.replayWindow !== null) {
      try {
        this.#replay = new ReplayGuard(options.replayWindow, options.replayCacheSize ?? 100_000);
      } catch (err) {
        throw new ImproperlyConfigured((err as Error).message);
      }
    }
    this.#requireBinding = options.requireHeaderBinding === true;
    if (options.authorize !== undefined && options.authorize !== null) {
      const warning = checkAuthorizeConfig(options.authorize, options.requireHeaderBinding);
      this.#authorizer = new Authorizer(options.authorize, this.security.store);
      if (warning !== null) process.emitWarning(warning, 'CelerySignSecurityWarning');
    }
    this.#storeRetry = storeRetryPolicy(options);
    if (options.authorizeControl !== undefined && options.authorizeControl !== null) {
      this.#controlAuthorizer = new Authorizer(options.authorizeControl, this.security.store, 'control');
    }
    this.#canvas = options.canvas !== false;
    try {
      this.#rateLimits = new RateLimits(options.rateLimits ?? {});
    } catch (err) {
      throw new ImproperlyConfigured(`Invalid rate limit: ${(err as Error).message}`);
    }
    if (options.backend) checkBackend(options.backend, options.broker);
    if (this.#canvas) {
      this.#canvasRunner = new CanvasRunner(randomUUID(), this.security, this.#resultSerializer, () => this.#backend, {
        publish: (sender) => this.#publish(sender.messages),
        error: (err) => this.#error(err),
      });
    }
  }

  /** The request as the canvas steps read it. */
  #canvasRequest(job: Job): CanvasRequest {
    const h = job.delivery.headers;
    return {
      id: job.id,
      rootId: str(h.root_id),
      group: str(h.group),
      groupIndex: Number.isInteger(h.group_index) ? (h.group_index as number) : null,
      embed: job.embed,
    };
  }

  /**
   * What this worker will publish, each signed: start() refuses a security
   * that cannot sign when the list is not empty.
   */
  #publishes(): string[] {
    const what: string[] = [];
    if (this.#canvas) what.push('the tasks of chains, callbacks and chords (canvas: false turns this off)');
    if (this.#retries) what.push('the messages of retries (retries: false turns this off)');
    if (this.#options.events) what.push("events (event_serializer = 'auth')");
    if (this.#options.remoteControl !== false) what.push('remote control replies (remoteControl: false turns this off)');
    if (this.#options.backend && this.#resultSerializer === 'auth') what.push("results (result_serializer = 'auth')");
    return what;
  }

  /** Whether the worker is consuming. */
  get running(): boolean {
    return this.#state === 'running';
  }

  #starting: Promise<void> | undefined;

  /** Connects and starts consuming. Resolves once consuming. */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new WireError('ERR_CLOSED', 'A worker starts once');
    this.#state = 'starting';
    this.#starting = this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#securityLog?.watchStore(this.security.store);
    try {
      // The serializer must be able to verify (throws ImproperlyConfigured without a store).
      await this.security.deserializeMany([]);
      // ...and to sign, when it publishes (signed) events.
      if (this.#options.events) await EventDispatcher.check(this.security);
      const publishes = this.#publishes();
      if (publishes.length > 0 && !(await canSign(this.security))) {
        throw new ImproperlyConfigured(
          `The worker signs what it publishes, and its security has no key and certificate: it would publish ${publishes.join('; ')}`,
        );
      }
    } catch (err) {
      this.#state = 'stopped';
      this.#securityLog?.close();
      throw err;
    }
    try {
      const connectTimeout = this.#options.connectTimeout;
      this.#transport = await openTransport(this.#options.broker, {
        ...(this.#options.transportOptions ? { transportOptions: this.#options.transportOptions } : {}),
        ...(connectTimeout !== undefined ? { connectTimeout } : {}),
        ...(this.#options.brokerUseSsl !== undefined ? { ssl: this.#options.brokerUseSsl } : {}),
      });
      if (this.#options.backend) {
        this.#backend = await openBackend(this.#options.backend, {
          resultExpires: this.#options.resultExpires === undefined ? 86400 : this.#options.resultExpires,
          broker: async () => this.#transport!,
          security: this.security,
          resultSerializer: this.#resultSerializer,
          ...(this.#options.resultPersistent !== undefined ? { persistent: this.#options.resultPersistent } : {}),
          ...(connectTimeout !== undefined ? { connectTimeout } : {}),
          ...(this.#options.backendTransportOptions ? { transportOptions: this.#options.backendTransportOptions } : {}),
          ...(this.#options.redisBackendUseSsl !== undefined ? { ssl: this.#options.redisBackendUseSsl } : {}),
        });
      }
      if (this.#options.events) {
        const o = this.#options.events === true ? {} : this.#options.events;
        this.#events = new EventDispatcher(this.#transport, this.security, this.hostname, o, (err) => this.#error(err));
      }
      this.#prefetchSent = this.#prefetch;
      this.#consumer = await this.#transport.consume(this.#queues, {
        prefetch: this.#prefetch,
        onError: (err) => this.#error(err),
        ...(this.#options.visibilityTimeout !== undefined ? { visibilityTimeout: this.#options.visibilityTimeout } : {}),
      });
    } catch (err) {
      this.#state = 'stopped';
      this.#securityLog?.close();
      await this.#transport?.close().catch(() => undefined);
      await this.#backend?.close().catch(() => undefined);
      throw err;
    }
    this.#state = 'running';
    this.#startedAt = Date.now();
    await this.#startControl();
    // Celery's heartbeat: `active` tasks now, `processed` tasks started so far.
    this.#events?.start(() => ({
      active: this.#running.size,
      processed: this.stats.succeeded + this.stats.failed + this.stats.retried + this.#running.size,
    }));
    this.#loop = this.#consume();
    if (this.#options.handleSignals !== false) {
      this.#signals = new SignalHandlers(this, Math.max(0, this.#options.shutdownTimeout ?? 30000));
      this.#signals.install();
    }
  }

  #signals: SignalHandlers | undefined;

  /**
   * Keeps the broker's prefetch count (AMQP `basic.qos`) at the worker's
   * prefetch plus the ETA tasks it holds, as Celery raises it for ETA tasks
   * (they wait unacknowledged and must not block the window).
   */
  #syncPrefetch(): void {
    const consumer = this.#consumer;
    if (!consumer?.setPrefetch || this.#prefetchSyncing) return;
    const want = this.#prefetch + this.#etaHeld;
    if (want === this.#prefetchSent) return;
    this.#prefetchSyncing = true;
    this.#prefetchSent = want;
    consumer
      .setPrefetch(want)
      .catch((err: unknown) => this.#error(err))
      .finally(() => {
        this.#prefetchSyncing = false;
        if (this.#state === 'running' && this.#prefetch + this.#etaHeld !== this.#prefetchSent) this.#syncPrefetch();
      });
  }

  #lastWarning = 0;

  /** Broker and backend trouble: an `'error'` event, or (without a listener) a rate-limited process warning. */
  #error(err: unknown): void {
    if (this.listenerCount('error') > 0) {
      this.emit('error', err);
      return;
    }
    const now = Date.now();
    if (now - this.#lastWarning < 5000) return;
    this.#lastWarning = now;
    process.emitWarning(`celery-sign worker: ${err instanceof Error ? err.message : String(err)}`, 'CelerySignWorkerWarning');
  }

  async #consume(): Promise<void> {
    let backoff = 0;
    while (this.#state === 'running') {
      const room = this.#roomLeft();
      if (room <= 0) {
        await new Promise<void>((r) => {
          this.#room = r;
        });
        continue;
      }
      let batch: Delivery[];
      try {
        batch = await this.#consumer!.receive(Math.min(room, this.#batchSize), 1000);
        backoff = 0;
      } catch (err) {
        if (this.#state !== 'running') break;
        this.#error(err);
        backoff = Math.min(backoff * 2 + 100, 2000);
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      if (batch.length === 0) continue;
      this.#held += batch.length;
      this.stats.received += batch.length;
      const p = this.#handleBatch(batch).catch((err: unknown) => this.#error(err));
      this.#batches.add(p);
      void p.finally(() => this.#batches.delete(p));
    }
  }

  /**
   * How many more messages the worker may take: the prefetch window counts
   * the messages not yet run (Celery's reserved requests), not those already
   * settled and waiting for their result to be stored and acknowledged, so
   * fetching the next batch overlaps storing the last one (Redis). All held
   * messages stay bounded by {@link MAX_HELD_WINDOWS} windows.
   */
  #roomLeft(): number {
    const active = this.#held - this.#etaHeld;
    // A broker that keeps its own window (AMQP's basic.qos, set by #syncPrefetch)
    // sends no more than it anyway: there the window is the broker's, unacked
    // messages included, as in Celery.
    if (this.#consumer?.setPrefetch) return this.#prefetch - active;
    return Math.min(this.#prefetch - (active - this.#settledHeld), MAX_HELD_WINDOWS * this.#prefetch - active);
  }

  #wakeIfRoom(): void {
    const r = this.#room;
    if (r && this.#roomLeft() > 0) {
      this.#room = undefined;
      r();
    }
  }

  /** `n` held messages are acknowledged or given back; `settled` of them had been settled. */
  #release(n: number, settled = 0): void {
    this.#held -= n;
    this.#settledHeld -= settled;
    this.#wakeIfRoom();
    this.#checkIdle();
  }

  async #handleBatch(batch: Delivery[]): Promise<void> {
    const verify: Delivery[] = [];
    for (const d of batch) {
      if (d.malformed) this.#refuse(d, d.malformed, 'ack');
      else if (d.contentType !== AUTH_CONTENT_TYPE) {
        this.#refuse(
          d,
          new SecurityError(
            'ERR_CONTENT_DISALLOWED',
            `Refusing to deserialize untrusted content of type ${JSON.stringify(String(d.contentType)).slice(0, 80)}: only signed (auth, application/data) messages are accepted`,
          ),
          'reject',
        );
      } else if (d.body === null) this.#refuse(d, new SecurityError('ERR_MALFORMED_PAYLOAD', 'Message has no body'), 'ack');
      else verify.push(d);
    }
    if (verify.length === 0) return;
    let results;
    try {
      results = await this.security.deserializeMany(verify.map((d) => d.body!));
    } catch (err) {
      // Not a refusal of the messages: give them back and report.
      this.#error(err);
      await this.#consumer!.recover(verify).catch((e: unknown) => this.#error(e));
      this.#release(verify.length);
      return;
    }
    // ERR_INTERNAL is a fault of celery-sign (a caught panic, a dead fallback
    // worker), not a verdict on the message: it goes back to the broker, as
    // when the whole call fails, and is reported.
    const faulted: Delivery[] = [];
    results.forEach((r, i) => {
      const d = verify[i]!;
      if (r.ok) this.#accept(d, r.value, r.signer);
      else if (r.error.code === 'ERR_INTERNAL') {
        this.#error(r.error);
        faulted.push(d);
      } else this.#refuse(d, r.error, 'ack');
    });
    if (faulted.length > 0) {
      await this.#consumer!.recover(faulted).catch((e: unknown) => this.#error(e));
      this.#release(faulted.length);
    }
    this.#pump();
  }

  #refuse(d: Delivery, error: SecurityError, action: 'ack' | 'reject', signer?: string, check?: SecurityEvent['check']): void {
    this.stats.refused++;
    const event: SecurityEvent = {
      code: error.code,
      reason: error.message,
      taskId: str(d.headers.id),
      task: str(d.headers.task),
      queue: d.queue,
      action,
      error,
      ...(signer !== undefined ? { signer } : {}),
      ...(check !== undefined ? { check } : {}),
    };
    const log = this.#securityLog;
    this.#settle({
      delivery: d,
      action,
      meta: null,
      emit: () => {
        log?.refused(event, d, subjectIn(this.security.store, signer));
        this.emit('security', event);
      },
    });
  }

  /** A verified message: its checks, then the task it becomes, held for its ETA or queued to run. */
  #accept(d: Delivery, value: unknown, signer: string): void {
    const h = d.headers;
    const id = str(h.id);
    const name = str(h.task);
    if (id === null || name === null) {
      this.#refuse(d, new SecurityError('ERR_MALFORMED_PAYLOAD', 'Message headers lack task or id (protocol v2)'), 'reject', signer);
      return;
    }
    const body = this.#taskBody(d, value, signer);
    if (body === null || !this.#admit(d, body, signer, id, name)) return;
    const handler = this.#tasks.get(name);
    if (!handler) {
      this.#settleUnknown(d, id, name);
      return;
    }
    const job = this.#newJob(d, id, name, handler, body, signer);
    if (this.#expired(job) || this.#revokedOnArrival(job)) return;
    this.#announceReceived(job);
    this.#enqueue(job);
  }

  /** The verified value taken apart as `[args, kwargs, embed]`, or null when it is refused. */
  #taskBody(d: Delivery, value: unknown, signer: string): TaskBody | null {
    try {
      return parseTaskBody(value);
    } catch (err) {
      this.#refuse(d, err as SecurityError, 'reject', signer);
      return null;
    }
  }

  /** The header binding, the authorization and the replay guard, in this order; false when one refused it. */
  #admit(d: Delivery, body: TaskBody, signer: string, id: string, name: string): boolean {
    const mismatch = checkBinding(d.headers, body.extra, this.#requireBinding);
    if (mismatch) {
      this.#refuse(d, mismatch, 'reject', signer, 'header-binding');
      return false;
    }
    // After the binding (which ties the task name to the signed body), before the
    // replay guard (a refused message must not take its id) and the registry.
    return this.#authorize(d, signer, id, name) && this.#notReplayed(d, signer, id);
  }

  /** `authorizeControl`'s decision for a verified command (logged when allowed, if asked): the refusal, or `null`. */
  #authorizeCommand(signer: string, command: string): SecurityError | null {
    const decision = this.#controlAuthorizer!.decide(signer, command);
    if (decision.error) return decision.error;
    if (this.#securityLog?.authorized) {
      this.#securityLog.log({
        event: 'authorized',
        code: null,
        reason: `Signer ${JSON.stringify(signer)} is authorized to send remote control command ${JSON.stringify(command).slice(0, 200)}`,
        signer,
        subject: decision.signer.subject,
        task: null,
        taskId: null,
        queue: this.#control?.spec.queue ?? '',
      });
    }
    return null;
  }

  /** The authorizer's decision for the signer and task name (logged when allowed, if asked); false when refused. */
  #authorize(d: Delivery, signer: string, id: string, name: string): boolean {
    if (!this.#authorizer) return true;
    const decision = this.#authorizer.decide(signer, name);
    if (decision.error) {
      this.#refuse(d, decision.error, 'reject', signer, 'authorization');
      return false;
    }
    if (this.#securityLog?.authorized) {
      this.#securityLog.log({
        event: 'authorized',
        code: null,
        reason: `Signer ${JSON.stringify(signer)} is authorized to call task ${JSON.stringify(name).slice(0, 200)}`,
        signer,
        subject: decision.signer.subject,
        task: name,
        taskId: id,
        queue: d.queue,
      });
    }
    return true;
  }

  /** The replay guard: false (and refused) when the id was accepted within the window. */
  #notReplayed(d: Delivery, signer: string, id: string): boolean {
    if (!this.#replay) return true;
    const ago = this.#replay.check(id);
    if (ago === null) return true;
    const err = new SecurityError(
      'ERR_REPLAYED',
      `Replayed task id: ${id} was accepted ${ago} ms ago (replay window ${this.#replay.windowMs} ms)`,
    );
    this.#refuse(d, err, 'reject', signer, 'replay');
    return false;
  }

  /** Celery's `on_unknown_task`: a task no handler is registered for fails (NotRegistered stored, message rejected). */
  #settleUnknown(d: Delivery, id: string, name: string): void {
    const h = d.headers;
    const request = { group: str(h.group), parentId: str(h.parent_id) };
    this.stats.unknown++;
    const reason = `Task of kind ${JSON.stringify(name)} is not registered`;
    const meta = buildMeta(id, 'FAILURE', { exc_type: 'NotRegistered', exc_message: [name], exc_module: 'celery.exceptions' }, null, request);
    this.#settle({
      delivery: d,
      action: 'reject',
      meta,
      emit: () => {
        // Celery's on_unknown_task.
        this.#events?.send('task-failed', { uuid: id, exception: `NotRegistered(${saferepr(name)})` });
        this.emit('task-unknown', { id, name, reason } satisfies TaskRefusedEvent);
      },
    });
  }

  /** The job an admitted message becomes, with its ETA and expiry from the headers. */
  #newJob(d: Delivery, id: string, name: string, handler: TaskHandler, body: TaskBody, signer: string): Job {
    const h = d.headers;
    return {
      delivery: d,
      id,
      name,
      handler,
      args: body.args,
      kwargs: body.kwargs,
      embed: body.embed,
      signer,
      eta: parseIsoDate(h.eta),
      expires: parseIsoDate(h.expires),
      bound: body.extra?.[BINDING_KEY] !== undefined,
      abandoned: false,
    };
  }

  /** Celery's strategy: task-received once the task is known and not revoked. */
  #announceReceived(job: Job): void {
    const h = job.delivery.headers;
    this.#events?.send('task-received', {
      uuid: job.id,
      name: job.name,
      args: typeof h.argsrepr === 'string' ? h.argsrepr : saferepr(job.args, REPR_MAXSIZE),
      kwargs: typeof h.kwargsrepr === 'string' ? h.kwargsrepr : saferepr(job.kwargs, REPR_MAXSIZE),
      root_id: str(h.root_id),
      parent_id: str(h.parent_id),
      retries: typeof h.retries === 'number' ? h.retries : 0,
      eta: str(h.eta),
      expires: str(h.expires),
    });
  }

  /** Into the run queue, or held (unacked, outside the prefetch, as Celery does) until its ETA. */
  #enqueue(job: Job): void {
    const wait = job.eta ? job.eta.getTime() - Date.now() : 0;
    if (wait > 0) {
      // Like Celery, an ETA task is held (unacked) and does not count against the prefetch.
      this.#eta.add(job);
      this.#etaHeld++;
      this.#syncPrefetch();
      job.timer = setTimeout(() => {
        this.#eta.delete(job);
        this.#etaHeld--;
        this.#syncPrefetch();
        this.#ready.push(job);
        this.#pump();
      }, Math.min(wait, 2 ** 31 - 1));
      this.#release(0);
      return;
    }
    this.#ready.push(job);
  }

  /** Celery's `Request.maybe_expire`: an expired task is revoked (REVOKED stored, message acked). */
  #expired(job: Job): boolean {
    if (!job.expires || job.expires.getTime() > Date.now()) return false;
    this.#settleRevoked(job, 'expired');
    return true;
  }

  /** Celery's `Request.revoked()` on arrival: a revoked id is not run (REVOKED stored, message acked). */
  #revokedOnArrival(job: Job): boolean {
    if (!this.#revoked.has(job.id)) return false;
    this.#settleRevoked(job);
    return true;
  }

  /**
   * Celery's `_announce_revoked` for a task it holds and has not started:
   * `'revoked'` (control revoke) or `'expired'` (`maybe_expire`).
   */
  #settleRevoked(job: Job, reason: 'revoked' | 'expired' = 'revoked'): void {
    this.stats.revoked++;
    const h = job.delivery.headers;
    const meta = buildMeta(
      job.id,
      'REVOKED',
      { exc_type: 'TaskRevokedError', exc_message: [reason], exc_module: 'celery.exceptions' },
      null,
      { group: str(h.group), parentId: str(h.parent_id) },
    );
    const runner = this.#canvasRunner;
    const req = this.#canvasRequest(job);
    this.#settle({
      delivery: job.delivery,
      action: 'ack',
      meta,
      // mark_as_revoked: a chord part counts (REVOKED); no errbacks, the chain's rest is not failed.
      ...(runner && job.embed.chord !== null
        ? { canvas: { after: () => runner.afterRevoked(req, meta.result as SerializedException) } }
        : {}),
      emit: () => {
        this.#events?.send('task-revoked', { uuid: job.id, terminated: false, signum: null, expired: reason === 'expired' });
        this.emit('task-revoked', { id: job.id, name: job.name, reason } satisfies TaskRefusedEvent);
      },
    });
  }

  /** Joins the pidbox (remote control); a failure is reported, the worker runs on without it. */
  async #startControl(): Promise<void> {
    const rc = this.#options.remoteControl;
    if (rc === false || !this.#transport || !ControlNode.supported(this.#transport)) return;
    const node = new ControlNode(this.#transport, this.security, this.#controlHost(), rc === true || rc === undefined ? {} : rc);
    try {
      await node.start();
      this.#control = node;
    } catch (err) {
      this.#error(err);
    }
  }

  /** Celery's `Request.info()`. */
  #info(job: Job): RequestInfo {
    const d = job.delivery;
    return {
      id: job.id,
      name: job.name,
      args: job.args,
      kwargs: job.kwargs,
      type: job.name,
      hostname: this.hostname,
      time_start: job.started ?? null,
      acknowledged: false,
      delivery_info: { exchange: d.exchange, routing_key: d.routingKey, priority: d.priority, redelivered: d.redelivered },
      worker_pid: job.started !== undefined ? process.pid : null,
    };
  }

  /** What the worker lends its pidbox node (`./control.ts`). */
  #controlHost(): ControlHost {
    return {
      hostname: this.hostname,
      rateLimits: this.#rateLimits,
      revoked: this.#revoked,
      active: () => [...this.#running].filter((j) => !j.abandoned).map((j) => this.#info(j)),
      reserved: () => this.#ready.map((j) => this.#info(j)),
      scheduled: () =>
        [...this.#eta].map((j) => ({ eta: str(j.delivery.headers.eta), priority: j.delivery.priority, request: this.#info(j) })),
      taskNames: () => [...this.#tasks.keys()],
      queues: () => [...this.#queues],
      stats: () => this.#controlStats(),
      conf: () => {
        const o = this.#options;
        const rc = typeof o.remoteControl === 'object' ? o.remoteControl : {};
        return {
          broker_url: censorUrl(o.broker),
          ...(o.backend ? { result_backend: censorUrl(o.backend) } : {}),
          task_serializer: 'auth',
          accept_content: ['auth'],
          result_serializer: this.#resultSerializer,
          result_expires: o.resultExpires === undefined ? 86400 : o.resultExpires,
          result_backend_always_retry: this.#storeRetry.retries > 0,
          result_backend_max_retries: this.#storeRetry.retries,
          result_backend_base_sleep_between_retries_ms: this.#storeRetry.baseMs,
          result_backend_max_sleep_between_retries_ms: this.#storeRetry.maxMs,
          task_acks_late: true,
          worker_concurrency: this.#concurrency,
          worker_prefetch_multiplier: Math.max(1, Math.floor(o.prefetchMultiplier ?? 4)),
          worker_enable_remote_control: true,
          worker_send_task_events: this.#events?.taskEvents ?? false,
          ...(this.#events ? { event_serializer: 'auth' } : {}),
          control_exchange: rc.exchange ?? 'celery',
          task_queues: [...this.#queues],
        };
      },
      revoke: (ids, terminate, sig) => this.#revoke(ids, terminate, sig),
      setTimeLimits: (name, soft, hard) => {
        if (!this.#tasks.has(name)) return false;
        this.#timeLimits.set(name, { soft, hard });
        return true;
      },
      rateLimitChanged: () => {
        clearTimeout(this.#rateTimer);
        this.#rateTimer = undefined;
        this.#pump();
      },
      taskEvents: (enable) => {
        const ev = this.#events;
        if (!ev) return null;
        if (ev.taskEvents === enable) return false;
        ev.taskEvents = enable;
        return true;
      },
      heartbeat: () => this.#events?.beat(),
      shutdown: () => {
        setImmediate(() => void this.stop().catch((err: unknown) => this.#error(err)));
      },
      ...(this.#controlAuthorizer ? { authorizeCommand: (signer: string, command: string) => this.#authorizeCommand(signer, command) } : {}),
      refused: (d, error, signer) => {
        this.stats.refused++;
        const event: SecurityEvent = {
          code: error.code,
          reason: error.message,
          taskId: null,
          task: null,
          queue: d.queue,
          action: 'ack',
          error,
          ...(signer !== undefined ? { signer, check: 'authorization' as const } : {}),
        };
        this.#securityLog?.refused(event, d, subjectIn(this.security.store, signer));
        this.emit('security', event);
      },
      executed: (e: ControlEvent) => this.emit('control', e),
      error: (err) => this.#error(err),
    };
  }

  /** Celery's `_revoke` for this worker: held tasks settled as REVOKED, running ones terminated, the rest marked in the backend. */
  async #revoke(ids: readonly string[], terminate: boolean, sig: number): Promise<string[]> {
    const want = new Set(ids);
    const known: string[] = [];
    for (const j of [...this.#eta]) {
      if (!want.has(j.id)) continue;
      clearTimeout(j.timer);
      this.#eta.delete(j);
      this.#etaHeld--;
      known.push(j.id);
      this.#settleRevoked(j);
    }
    if (known.length > 0) this.#syncPrefetch();
    for (let i = this.#ready.length - 1; i >= 0; i--) {
      const j = this.#ready[i]!;
      if (!want.has(j.id)) continue;
      this.#ready.splice(i, 1);
      known.push(j.id);
      this.#settleRevoked(j);
    }
    const running = new Set<string>();
    for (const j of this.#running) {
      if (!want.has(j.id) || j.abandoned) continue;
      running.add(j.id);
      if (terminate) {
        known.push(j.id);
        j.terminate?.(sig);
      }
    }
    // Celery 5.7: an id this worker does not hold is marked REVOKED when it has no result yet
    // (a key-value backend; rpc:// results go only to a task's reply_to: nothing to mark).
    const backend = this.#backend;
    if (backend && !/^rpc:/i.test(this.#options.backend ?? '')) {
      const others = ids.filter((id) => !running.has(id) && !known.includes(id));
      const marks: ResultMeta[] = [];
      for (const id of others) {
        try {
          const stored = await backend.get(id);
          if (stored !== null) {
            const meta = await decodeMeta(stored, this.#resultSerializer, this.security);
            if (!['PENDING', 'RECEIVED', 'RETRY', 'REJECTED'].includes(meta.status)) continue;
          }
          const meta = buildMeta(id, 'REVOKED', { exc_type: 'TaskRevokedError', exc_message: ['revoked'], exc_module: 'celery.exceptions' }, null);
          marks.push(meta);
        } catch (err) {
          this.#error(err);
        }
      }
      if (marks.length > 0) {
        try {
          const values = await encodeMetas(marks, this.#resultSerializer, this.security);
          await backend.store(marks.map((m, i) => ({ taskId: m.task_id, value: values[i]! })));
        } catch (err) {
          this.#error(err);
        }
      }
    }
    this.#pump();
    return [...new Set(known)];
  }

  /** `inspect stats`: the fields Celery's worker reports (see `./control.ts`). */
  #controlStats(): Record<string, unknown> {
    const total: Record<string, number> = {};
    for (const [k, v] of this.#total) total[k] = v;
    let rusage: Record<string, number> | string;
    try {
      const u = process.resourceUsage();
      rusage = {
        utime: u.userCPUTime / 1e6,
        stime: u.systemCPUTime / 1e6,
        maxrss: u.maxRSS,
        ixrss: u.sharedMemorySize,
        idrss: u.unsharedDataSize,
        isrss: u.unsharedStackSize,
        minflt: u.minorPageFault,
        majflt: u.majorPageFault,
        nswap: u.swappedOut,
        inblock: u.fsRead,
        oublock: u.fsWrite,
        msgsnd: u.ipcSent,
        msgrcv: u.ipcReceived,
        nsignals: u.signalsCount,
        nvcsw: u.voluntaryContextSwitches,
        nivcsw: u.involuntaryContextSwitches,
      };
    } catch {
      rusage = 'N/A';
    }
    return {
      total,
      pid: process.pid,
      uptime: Math.round((Date.now() - this.#startedAt) / 1000),
      pool: {
        implementation: 'celery_sign:EventLoop',
        'max-concurrency': this.#concurrency,
        processes: [process.pid],
        'max-tasks-per-child': null,
        'put-guarded-by-semaphore': false,
        timeouts: [],
      },
      broker: brokerInfo(this.#options.broker, this.#transport?.name ?? null, this.#options.connectTimeout ?? 10000, this.#options.transportOptions ?? {}, !!this.#options.brokerUseSsl),
      prefetch_count: this.#prefetchSent,
      rusage,
    };
  }

  #pump(): void {
    if (this.#rateLimits.size > 0) return this.#pumpLimited();
    while (this.#running.size < this.#concurrency && this.#ready.length > 0 && this.#state === 'running') {
      const job = this.#ready.shift()!;
      if (this.#expired(job)) continue;
      this.#running.add(job);
      void this.#run(job);
    }
  }

  /**
   * `#pump` with rate limits (Celery's token buckets, `./ratelimit.ts`): a
   * task whose bucket is empty stays held, the next ready task goes first,
   * and the worker looks again when the first bucket refills.
   */
  #pumpLimited(): void {
    let wait = Infinity;
    const skipped = new Set<string>();
    for (let i = 0; i < this.#ready.length && this.#running.size < this.#concurrency && this.#state === 'running'; ) {
      const job = this.#ready[i]!;
      if (skipped.has(job.name)) {
        i++;
        continue;
      }
      const ms = this.#rateLimits.take(job.name);
      if (ms > 0) {
        skipped.add(job.name);
        wait = Math.min(wait, ms);
        i++;
        continue;
      }
      this.#ready.splice(i, 1);
      if (this.#expired(job)) continue;
      this.#running.add(job);
      void this.#run(job);
    }
    if (wait !== Infinity && this.#state === 'running') {
      clearTimeout(this.#rateTimer);
      this.#rateTimer = setTimeout(() => {
        this.#rateTimer = undefined;
        this.#pump();
      }, Math.min(wait, 2 ** 31 - 1));
    }
  }

  async #run(job: Job): Promise<void> {
    const h = job.delivery.headers;
    // ctx.signal's controller is made when the task first reads it: most tasks never do.
    let controller: AbortController | undefined;
    let aborted: { reason: unknown } | undefined;
    const abort = (reason: unknown): void => {
      if (aborted) return;
      aborted = { reason };
      controller?.abort(reason);
    };
    const signal = (): AbortSignal => {
      if (!controller) {
        controller = new AbortController();
        if (aborted) controller.abort(aborted.reason);
      }
      return controller.signal;
    };
    job.abort = abort;
    const limits = Array.isArray(h.timelimit) ? (h.timelimit as unknown[]) : [];
    const hard = typeof limits[0] === 'number' && limits[0] > 0 ? limits[0] : (this.#timeLimits.get(job.name)?.hard ?? null);
    const soft = typeof limits[1] === 'number' && limits[1] > 0 ? limits[1] : (this.#timeLimits.get(job.name)?.soft ?? null);
    let timers: NodeJS.Timeout[] | undefined;
    // The outcome: the handler's, or the hard time limit's or a terminate's
    // rejection, whichever comes first (one promise for all three).
    let succeed!: (value: unknown) => void;
    let fail!: (err: unknown) => void;
    const outcome = new Promise<unknown>((resolve, reject) => {
      succeed = resolve;
      fail = reject;
    });
    let terminated: number | null = null;
    job.terminate = (sig: number) => {
      if (terminated !== null) return;
      terminated = sig;
      const err = Object.assign(new Error(`Terminated(${sig})`), { name: 'Terminated' });
      abort(err);
      fail(err);
    };
    job.started = Date.now() / 1000;
    this.#total.set(job.name, (this.#total.get(job.name) ?? 0) + 1);
    if (soft) (timers ??= []).push(setTimeout(() => abort(new Error(`SoftTimeLimitExceeded(${soft})`)), soft * 1000));
    if (hard) {
      (timers ??= []).push(
        setTimeout(() => {
          const err = Object.assign(new Error(`TimeLimitExceeded(${hard})`), { name: 'TimeLimitExceeded' });
          abort(err);
          fail(err);
        }, hard * 1000),
      );
    }
    const retries = typeof h.retries === 'number' ? h.retries : 0;
    // ctx.retry is made when the task first reads it (most tasks never do).
    let retry: ((options?: RetryOptions) => never) | undefined;
    const retryPolicies = this.#retryPolicies;
    const retriesOn = this.#retries;
    const ctx: TaskContext = {
      id: job.id,
      name: job.name,
      signer: job.signer,
      headers: h,
      retries,
      eta: job.eta,
      expires: job.expires,
      rootId: str(h.root_id),
      parentId: str(h.parent_id),
      group: str(h.group),
      queue: job.delivery.queue,
      priority: job.delivery.priority,
      redelivered: job.delivery.redelivered,
      embed: job.embed,
      hostname: this.hostname,
      get signal() {
        return signal();
      },
      get retry() {
        if (retry === undefined) {
          if (retriesOn) {
            const retrier = bindRetry({ id: job.id, name: job.name, retries, args: job.args, kwargs: job.kwargs }, policyOf(retryPolicies, job.name));
            retrier.attach(ctx);
            retry = retrier.retry;
          } else {
            retry = () => {
              throw new ImproperlyConfigured('This worker has retries: false: ctx.retry cannot re-send the task');
            };
          }
        }
        return retry;
      },
    };
    const request = { group: ctx.group, parentId: ctx.parentId };
    this.#events?.send('task-started', { uuid: job.id });
    const started = performance.now();
    let meta: ResultMeta;
    let emit: () => void;
    let canvas: Settlement['canvas'];
    // The canvas steps only for a task that carries a canvas: for any other they do nothing.
    const runner = this.#canvasRunner !== undefined && carriesCanvas(job.embed) ? this.#canvasRunner : undefined;
    const creq = runner ? this.#canvasRequest(job) : undefined;
    if (!this.#canvasRunner && hasCanvas(job.embed)) {
      this.#error(
        new CanvasError(
          `Task ${job.id} (${job.name}) carries a canvas (callbacks, errbacks, chain or chord) and this worker has canvas: false: it runs the task and does not follow the canvas`,
        ),
      );
    }
    // The handler runs in a microtask, as `Promise.resolve().then(handler)` would run it.
    queueMicrotask(() => {
      try {
        const r = job.handler(job.args, job.kwargs, ctx) as unknown;
        if (r !== null && (typeof r === 'object' || typeof r === 'function') && typeof (r as PromiseLike<unknown>).then === 'function') {
          // Always followed, even once the outcome is settled: its rejection is never left unhandled.
          (r as PromiseLike<unknown>).then(succeed, fail);
        } else {
          succeed(r);
        }
      } catch (err) {
        fail(err);
      }
    });
    try {
      const result = await outcome;
      const runtime = performance.now() - started;
      if (runner) {
        // Celery's tracer: callbacks and the chain's next task are sent before the result is stored.
        // A canvas it cannot follow is the tracer's internal error: the task is stored as a FAILURE.
        let before: CanvasSender | null;
        try {
          before = runner.onSuccess(creq!, result);
        } catch (err) {
          this.#error(err);
          throw err;
        }
        canvas = {
          ...(before ? { before } : {}),
          after: () => runner.afterSuccess(creq!, result),
          failed: (exc) => () => runner.afterFailure(creq!, exc, null),
        };
      }
      this.stats.succeeded++;
      meta = buildMeta(job.id, 'SUCCESS', result, null, request);
      emit = () => {
        this.#events?.send('task-succeeded', { uuid: job.id, result: safeResultRepr(result), runtime: runtime / 1000 });
        this.emit('task-succeeded', { id: job.id, name: job.name, result, runtime } satisfies TaskSucceededEvent);
      };
    } catch (caught) {
      const runtime = performance.now() - started;
      let err = caught;
      const retried = caught instanceof Retry && this.#retries ? await this.#retry(job, caught, runtime, request) : undefined;
      if (retried instanceof Error) err = retried; // the retry could not be built: a failure
      if (retried && !(retried instanceof Error)) {
        ({ meta, emit } = retried);
      } else {
        this.stats.failed++;
        let exc = serializeException(err);
        if (err instanceof Error && err.name === 'TimeLimitExceeded' && hard) {
          exc = { exc_type: 'TimeLimitExceeded', exc_message: [hard], exc_module: 'billiard.exceptions' };
        }
        const traceback = tracebackOf(err);
        meta = buildMeta(job.id, 'FAILURE', exc, traceback, request);
        if (runner) canvas = { after: () => runner.afterFailure(creq!, exc, traceback) };
        const excRepr = exceptionRepr(exc);
        emit = () => {
          this.#events?.send('task-failed', { uuid: job.id, exception: excRepr, traceback });
          this.emit('task-failed', { id: job.id, name: job.name, error: err, runtime } satisfies TaskFailedEvent);
        };
      }
    } finally {
      if (timers) for (const t of timers) clearTimeout(t);
      this.#running.delete(job);
    }
    if (terminated !== null) {
      // Revoked with terminate (remote control, Celery's Request.terminate): REVOKED, acknowledged.
      const sig: number = terminated;
      this.stats.failed--;
      this.stats.revoked++;
      meta = buildMeta(job.id, 'REVOKED', { exc_type: 'TaskRevokedError', exc_message: ['terminated'], exc_module: 'celery.exceptions' }, null, request);
      // _announce_revoked -> mark_as_revoked: the chord part counts as REVOKED; no errbacks.
      const revokedExc = meta.result as SerializedException;
      const all = this.#canvasRunner;
      canvas = all && job.embed.chord !== null ? { after: () => all.afterRevoked(creq ?? this.#canvasRequest(job), revokedExc) } : undefined;
      emit = () => {
        this.#events?.send('task-revoked', { uuid: job.id, terminated: true, signum: sig, expired: false });
        this.emit('task-revoked', { id: job.id, name: job.name, reason: 'terminated' } satisfies TaskRefusedEvent);
      };
    }
    if (!job.abandoned) {
      const ignore = h.ignore_result === true;
      this.#settle({ delivery: job.delivery, action: 'ack', meta: ignore ? null : meta, emit, ...(canvas ? { canvas } : {}) });
    }
    this.#pump();
    this.#checkIdle();
  }

  /**
   * Celery's retry (`Task.retry`'s `apply_async`, then `handle_retry`):
   * re-sends the task signed, then returns the `RETRY` meta to store before
   * the ack. A retry that cannot be published gives the message back to the
   * broker (the job is then abandoned: nothing is stored or acked). Returns
   * the error when the retry message cannot be built (the task fails).
   */
  async #retry(job: Job, retry: Retry, runtime: number, request: MetaRequest): Promise<{ meta: ResultMeta; emit: () => void } | Error> {
    let message: TaskMessage;
    try {
      message = buildRetryMessage(job, retry);
      if (job.bound) message = bindHeaders(message);
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
    if (!job.abandoned) {
      try {
        await this.#publish([message]);
      } catch (err) {
        this.#error(err);
        if (!job.abandoned) {
          job.abandoned = true;
          await this.#giveBack([job.delivery]);
        }
      }
    }
    this.stats.retried++;
    const event: TaskRetriedEvent = {
      id: job.id,
      name: job.name,
      error: retry.exc,
      when: retry.when,
      retries: message.headers.retries as number,
      runtime,
    };
    return {
      meta: retryMeta(job.id, retry, request),
      emit: () => {
        this.#events?.send('task-retried', retriedEventFields(job.id, retry));
        this.emit('task-retried', event);
      },
    };
  }

  /**
   * Signs (one native batch) and publishes task messages the worker sends
   * itself: the next task of a chain, callbacks, retries, chord bodies.
   * Resolves once the broker holds them all.
   */
  async #publish(messages: readonly TaskMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const transport = this.#transport;
    if (!transport) throw new WireError('ERR_CLOSED', 'The worker is not connected');
    await transport.publish(await encodeTaskMessages(this.#bound(messages), this.security));
  }

  /**
   * A worker that requires header binding binds what it sends itself (the
   * next task of a chain, callbacks, chord bodies), so that workers
   * requiring it (and authorizing by task name) accept them.
   */
  #bound(messages: readonly TaskMessage[]): readonly TaskMessage[] {
    if (this.#requireBinding) for (const m of messages) bindHeaders(m);
    return messages;
  }

  #settle(s: Settlement): void {
    this.#settleQueue.push(s);
    this.#settledHeld++;
    this.#wakeIfRoom();
    this.#kickSettle();
  }

  #kickSettle(): void {
    if (!this.#settling && this.#settleQueue.length > 0) {
      this.#settling = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.#flushSettled());
    }
  }

  async #flushSettled(): Promise<void> {
    try {
      while (this.#settleQueue.length > 0) {
        let batch = this.#settleQueue.splice(0, 512);
        let acked = false;
        // Whether a settlement has a canvas step between its store and its ack.
        let afterSteps = false;
        try {
          // The canvas first (Celery's tracer sends callbacks and the chain before storing).
          await this.#canvasBefore(batch);
          const results = await this.#encodeResults(batch);
          afterSteps = batch.some((s) => s.canvas?.after !== undefined);
          acked = await this.#store(results, afterSteps ? null : batch);
        } catch (err) {
          // Not stored, so not acknowledged: back to the broker, to run again.
          this.#error(err);
          await this.#giveBack(batch.map((s) => s.delivery), batch.length);
          continue;
        }
        if (!acked) {
          if (afterSteps) batch = await this.#canvasAfter(batch);
          const acks = batch.filter((s) => s.action === 'ack').map((s) => s.delivery);
          const rejects = batch.filter((s) => s.action === 'reject').map((s) => s.delivery);
          try {
            if (acks.length > 0) await this.#consumer!.ack(acks);
            if (rejects.length > 0) await this.#consumer!.reject(rejects, false);
          } catch (err) {
            this.#error(err);
          }
        }
        this.#release(batch.length, batch.length);
        for (const s of batch) {
          try {
            s.emit?.();
          } catch (err) {
            this.#error(err);
          }
        }
      }
    } finally {
      this.#settling = undefined;
      this.#kickSettle();
      this.#checkIdle();
    }
  }

  /** Consecutive failed tries to store results (any batch), for the wait before the next. */
  #storeFailures = 0;
  /** Ends the waits before the next try to store (stop() calls them). */
  readonly #storeWaits = new Set<() => void>();

  /**
   * Stores a batch's results; with `ackWith`, and where the backend can
   * (Redis: the broker's own server and database), acknowledges its
   * deliveries in the same step (a reject without requeue is an ack, as
   * kombu's). Resolves whether it acknowledged them.
   *
   * A failed try is reported and tried again as `resultBackendAlwaysRetry`
   * and its companions say (by default up to {@link STORE_ATTEMPTS} tries),
   * after a wait that doubles with each consecutive failure across batches
   * (by default from {@link STORE_RETRY_BASE_MS} up to
   * {@link STORE_RETRY_MAX_MS}), so that a backend that is down is not
   * hammered and a batch that can never be stored is given back no more
   * than once per longest wait. A stopping worker does not try again (stop()
   * ends the wait). The last failure is thrown.
   */
  async #store(results: readonly StoredResult[], ackWith: readonly Settlement[] | null): Promise<boolean> {
    const backend = this.#backend;
    for (let attempt = 1; ; attempt++) {
      try {
        let acked = false;
        if (ackWith && backend?.storeThenAck) {
          acked = await backend.storeThenAck(results, this.#consumer!, ackWith.map((s) => s.delivery));
        }
        if (!acked && results.length > 0) await backend!.store(results);
        this.#storeFailures = 0;
        return acked;
      } catch (err) {
        const policy = this.#storeRetry;
        const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** (this.#storeFailures + (policy.celery ? 1 : 0)));
        const wait = policy.celery ? Math.floor(Math.random() * (Math.floor(ceiling) + 1)) : ceiling;
        this.#storeFailures = Math.min(this.#storeFailures + 1, 30);
        // A stopping worker tries no more: the messages go back, to run on a worker that can store.
        if (this.#state !== 'running') throw err;
        const last = attempt > policy.retries || (policy.celery && !retrySafe(err));
        // The last failure is the caller's to report, with what it does about it.
        if (!last) this.#error(err);
        await new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(timer);
            this.#storeWaits.delete(done);
            resolve();
          };
          const timer = setTimeout(done, wait);
          this.#storeWaits.add(done);
        });
        // After the last try the wait still comes first: messages given back run again at once,
        // and a backend that stays down must not turn them into a loop of re-runs.
        if (last || this.#state !== 'running') throw err;
      }
    }
  }

  /**
   * Gives held messages back to the broker, unacknowledged (AMQP:
   * `basic.nack` with requeue; Redis: restored to the queue), to run again:
   * those not started at a stop, a retry that could not be published, and
   * settled ones whose outcome could not be recorded (not stored, or a
   * canvas step failed), which run again at least once, as `acks_late`
   * promises. `settled` of them had been settled. Where giving back fails
   * too, the broker redelivers them itself (AMQP: when the channel closes;
   * Redis: after the visibility timeout).
   */
  async #giveBack(deliveries: readonly Delivery[], settled = 0): Promise<void> {
    this.#forget(deliveries);
    await this.#consumer!.recover(deliveries).catch((err: unknown) => this.#error(err));
    this.#release(deliveries.length, settled);
  }

  /**
   * Publishes the messages the batch's successful tasks send (chord sizes
   * first), signed in one batch. A task whose messages kombu JSON cannot
   * encode (its result, prepended to a callback's args) becomes a FAILURE
   * with `EncodeError`, as Celery's tracer stores it.
   */
  async #canvasBefore(batch: Settlement[]): Promise<void> {
    const items = batch.filter((s) => s.canvas?.before !== undefined);
    if (items.length === 0) return;
    const transport = this.#transport;
    if (!transport) throw new WireError('ERR_CLOSED', 'The worker is not connected');
    let outgoing: OutgoingMessage[];
    let ok = items;
    try {
      outgoing = await encodeTaskMessages(
        this.#bound(items.flatMap((s) => s.canvas!.before!.messages)),
        this.security,
      );
    } catch {
      outgoing = [];
      ok = [];
      for (const s of items) {
        try {
          outgoing.push(...(await encodeTaskMessages(this.#bound(s.canvas!.before!.messages), this.security)));
          ok.push(s);
        } catch (err) {
          const exc: SerializedException = {
            exc_type: 'EncodeError',
            exc_message: [err instanceof Error ? err.message : String(err)],
            exc_module: 'kombu.exceptions',
          };
          if (s.meta) {
            s.meta = buildMeta(s.meta.task_id, 'FAILURE', exc, null, { group: s.meta.group_id ?? null, parentId: s.meta.parent_id ?? null });
          }
          const after = s.canvas!.failed?.(exc);
          s.canvas = after ? { after } : {};
        }
      }
    }
    const backend = this.#backend;
    for (const s of ok) for (const c of s.canvas!.before!.chordSizes) await backend!.setChordSize!(c.groupId, c.size);
    if (outgoing.length > 0) await transport.publish(outgoing);
  }

  /**
   * Runs the steps after the store (chord parts, the failed chain's rest,
   * errbacks). A settlement whose step failed is not acknowledged: it is
   * given back to the broker ({@link Worker.#giveBack}) and runs again.
   * Returns the settlements to acknowledge.
   */
  async #canvasAfter(batch: Settlement[]): Promise<Settlement[]> {
    const failed = new Set<Settlement>();
    await Promise.all(
      batch.map(async (s) => {
        if (!s.canvas?.after) return;
        try {
          await s.canvas.after();
        } catch (err) {
          this.#error(err);
          failed.add(s);
        }
      }),
    );
    if (failed.size === 0) return batch;
    await this.#giveBack([...failed].map((s) => s.delivery), failed.size);
    return batch.filter((s) => !failed.has(s));
  }

  /** The results of a batch's settlements that have one, encoded (none without a backend). */
  async #encodeResults(batch: Settlement[]): Promise<StoredResult[]> {
    if (!this.#backend) return [];
    const withMeta = batch.filter((s) => s.meta !== null);
    if (withMeta.length === 0) return [];
    let values: string[];
    try {
      values = await encodeMetas(
        withMeta.map((s) => s.meta!),
        this.#resultSerializer,
        this.security,
      );
    } catch {
      // One result kombu JSON cannot encode: encode one by one, as Celery stores an EncodeError.
      values = [];
      for (const s of withMeta) {
        try {
          values.push((await encodeMetas([s.meta!], this.#resultSerializer, this.security))[0]!);
        } catch (err) {
          const m = s.meta!;
          const failed = buildMeta(
            m.task_id,
            'FAILURE',
            { exc_type: 'EncodeError', exc_message: [err instanceof Error ? err.message : String(err)], exc_module: 'kombu.exceptions' },
            null,
            { group: m.group_id ?? null, parentId: m.parent_id ?? null },
          );
          values.push((await encodeMetas([failed], this.#resultSerializer, this.security))[0]!);
        }
      }
    }
    return withMeta.map((s, i) => {
      const p = s.delivery.properties;
      return {
        taskId: s.meta!.task_id,
        value: values[i]!,
        // For rpc://: the reply queue and correlation id, as Celery's destination_for reads them.
        ...(typeof p.reply_to === 'string' ? { replyTo: p.reply_to } : {}),
        ...(typeof p.correlation_id === 'string' ? { correlationId: p.correlation_id } : {}),
      };
    });
  }

  #checkIdle(): void {
    if (this.#running.size === 0 && this.#settleQueue.length === 0 && !this.#settling && this.#idle.length > 0) {
      const waiters = this.#idle;
      this.#idle = [];
      for (const w of waiters) w();
    }
  }

  #whenIdle(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#idle.push(resolve);
      this.#checkIdle();
    });
  }

  /**
   * Stops gracefully: stops consuming, gives back the messages it holds but
   * has not started (to the front of their queues), waits for running tasks
   * to finish and be acknowledged, then closes the connections.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (this.#state === 'starting') await this.#starting?.catch(() => undefined);
    if (this.#state === 'stopped' || this.#state === 'new') {
      this.#state = 'stopped';
      return;
    }
    if (this.#state === 'stopping') {
      if (options.timeout !== undefined) this.#hurry(options.timeout);
      return this.#whenStopped();
    }
    this.#state = 'stopping';
    for (const w of [...this.#storeWaits]) w();
    const began = Date.now();
    this.#stopDeadline = began + (options.timeout ?? 30000);
    clearTimeout(this.#rateTimer);
    await this.#control?.close(Math.min(5000, options.timeout ?? 30000)).catch(() => undefined);
    const within = (p: Promise<unknown>, atLeast = 0): Promise<boolean> => this.#within(p, began + atLeast);
    this.#room?.();
    this.#room = undefined;
    // A receive in flight ends within the broker's wait (1 s on Redis); a broker that
    // is down may hold it longer: then stop anyway (what it delivers later stays
    // unacknowledged and is restored after the visibility timeout).
    // Even a cold stop lets a receive end (Redis: within 1 s): what it takes is then given back,
    // not left unacknowledged behind a closed consumer.
    await within(this.#loop ?? Promise.resolve(), 2000);
    await within(Promise.all([...this.#batches]), 2000);
    // Not started: back to the queue.
    await this.#giveBackUnstarted();
    const timedOut = !(await within(this.#whenIdle()));
    if (timedOut) {
      const left = [...this.#running];
      for (const j of left) {
        j.abandoned = true;
        j.abort?.(new Error('worker stopped'));
      }
      await this.#giveBack(left.map((j) => j.delivery));
      await within(this.#settling ?? Promise.resolve());
    }
    // What a batch still verifying at a short deadline accepted since.
    await this.#giveBackUnstarted();
    await this.#events?.stop(Math.max(1000, this.#stopDeadline - Date.now())).catch(() => undefined);
    await this.#consumer!.close().catch(() => undefined);
    await this.#transport!.close().catch(() => undefined);
    await this.#backend?.close().catch(() => undefined);
    this.#state = 'stopped';
    this.#securityLog?.close();
    this.#signals?.remove();
    for (const w of this.#stopWaiters.splice(0)) w();
  }

  /** Gives back (to the front of their queues) the messages held but not started, ETA ones too. */
  async #giveBackUnstarted(): Promise<void> {
    const unstarted = [...this.#ready.splice(0), ...this.#eta];
    for (const j of this.#eta) clearTimeout(j.timer);
    this.#etaHeld -= this.#eta.size;
    this.#eta.clear();
    if (unstarted.length > 0) {
      await this.#giveBack(unstarted.map((j) => j.delivery));
    }
  }

  #stopDeadline = 0;
  readonly #wake = new Set<() => void>();

  /**
   * Waits for `p` until the stop's deadline (which a later stop may bring
   * closer), but not before `notBefore`; whether `p` settled.
   */
  async #within(p: Promise<unknown>, notBefore = 0): Promise<boolean> {
    let settled = false;
    const done = p.then(
      () => void (settled = true),
      () => void (settled = true),
    );
    while (!settled) {
      const left = Math.max(this.#stopDeadline, notBefore) - Date.now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      let wake: (() => void) | undefined;
      await Promise.race([
        done,
        new Promise<void>((r) => {
          wake = r;
          this.#wake.add(r);
          timer = setTimeout(r, left);
        }),
      ]);
      clearTimeout(timer);
      this.#wake.delete(wake!);
    }
    return true;
  }

  /** Brings the deadline of the stop under way to `timeout` ms from now, if that is sooner. */
  #hurry(timeout: number): void {
    const deadline = Date.now() + Math.max(0, timeout);
    if (deadline >= this.#stopDeadline) return;
    this.#stopDeadline = deadline;
    for (const w of [...this.#wake]) w();
  }

  /** The replay guard forgets messages given back to the broker, so that their redelivery runs. */
  #forget(deliveries: readonly Delivery[]): void {
    if (!this.#replay) return;
    for (const d of deliveries) {
      const id = str(d.headers.id);
      if (id !== null) this.#replay.forget(id);
    }
  }

  readonly #stopWaiters: (() => void)[] = [];
  #whenStopped(): Promise<void> {
    return new Promise((r) => this.#stopWaiters.push(r));
  }
}

/** kombu's `Connection.info()` of the broker URL, without the password (`inspect stats`). */
function brokerInfo(url: string, transport: string | null, connectTimeout: number, transportOptions: Record<string, unknown>, useSsl = false): Record<string, unknown> {
  let u: URL | undefined;
  // A sentinel:// list (`;`-joined): the first URL, as kombu's Connection keeps it (the rest are `alternates`).
  const chunks = url.split(';').filter((c) => c.trim() !== '');
  try {
    u = new URL(chunks[0] ?? url);
  } catch {
    u = undefined;
  }
  const scheme = u?.protocol.replace(/:$/, '').toLowerCase() ?? '';
  const amqp = scheme.includes('amqp');
  const path = u ? decodeURIComponent(u.pathname.replace(/^\//, '')) : '';
  return {
    hostname: u ? u.hostname.replace(/^\[|\]$/g, '') || 'localhost' : null,
    userid: u?.username ? decodeURIComponent(u.username) : amqp ? 'guest' : null,
    virtual_host: amqp ? path || '/' : path || '0',
    port: u?.port ? Number(u.port) : amqp ? (scheme.endsWith('s') ? 5671 : 5672) : scheme === 'sentinel' ? 26379 : 6379,
    insist: false,
    ssl: useSsl || scheme === 'rediss' || scheme === 'amqps' || scheme === 'pyamqps',
    transport: transport ?? scheme,
    connect_timeout: connectTimeout / 1000,
    transport_options: redactTransportOptions(transportOptions),
    login_method: amqp ? 'PLAIN' : null,
    uri_prefix: null,
    heartbeat: amqp ? 60 : null,
    failover_strategy: 'round-robin',
    alternates: chunks.length > 1 ? chunks.map((c) => c.trim().replace(/\/\/[^@/]*@/, '//')) : [],
    credential_provider: null,
  };
}

/** Whether the serializer has a key and a certificate (signs an empty batch). */
async function canSign(security: SecureSerializer): Promise<boolean> {
  try {
    await security.serializeMany([]);
    return true;
  } catch {
    return false;
  }
}

/** Celery's `saferepr(retval, resultrepr_maxsize)` of a result, for `task-succeeded`. */
function safeResultRepr(result: unknown): string {
  try {
    return saferepr(result, REPR_MAXSIZE);
  } catch {
    return '<unrepresentable>';
  }
}

/** Python's `repr` of the stored exception, as `task-failed` carries it: `ValueError('boom')`. */
function exceptionRepr(exc: SerializedException): string {
  const args = Array.isArray(exc.exc_message) ? exc.exc_message : [exc.exc_message];
  try {
    return `${exc.exc_type}(${args.map((a) => saferepr(a, REPR_MAXSIZE)).join(', ')})`;
  } catch {
    return `${exc.exc_type}(...)`;
  }
}

/**
 * Creates a worker for signed tasks; `await worker.start()` to consume.
 *
 * ```ts
 * const worker = createWorker({
 *   broker: 'redis://127.0.0.1:6379/0', backend: 'redis://127.0.0.1:6379/0', security,
 *   tasks: { 'tasks.add': async ([x, y]) => Number(x) + Number(y) },
 *   concurrency: 32,
 * });
 * worker.on('security', (e) => log.warn(e.code, e.reason, e.taskId, e.signer));
 * await worker.start();
 * // ...
 * await worker.stop();
 * ```
 */
export function createWorker(options: WorkerOptions): Worker {
  return new Worker(options);
}
