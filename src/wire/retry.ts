/**
 * Retries, as Celery's worker does them (checked against Celery 5.7's
 * `celery/app/task.py` `Task.retry` and `signature_from_request`,
 * `celery/app/autoretry.py`, `celery/utils/time.py`
 * `get_exponential_backoff_interval` and `celery/app/trace.py`
 * `handle_retry`):
 *
 * - `ctx.retry({ countdown, eta, maxRetries, exc, args, kwargs, ... })` in a
 *   handler throws a {@link Retry} (Celery's `raise self.retry(...)`), or,
 *   when the retries are spent, `exc` itself when one was given, else a
 *   {@link MaxRetriesExceededError} (which the handler may catch, as in Celery).
 *   Without `countdown` and `eta` the retry waits the task's
 *   `defaultRetryDelay` (Celery: 180 s).
 * - A Retry thrown out of the handler makes the worker re-send the task,
 *   signed: the same id, args and kwargs (unless given), root and parent,
 *   group, embed (chain, callbacks, errbacks, chord), `expires`, time limits,
 *   `reply_to`, `origin`, `priority` and stamps, with `retries + 1` and an
 *   `eta` from the countdown, to the queue it came from (Celery: the anonymous
 *   exchange's routing key, or the exchange and routing key it was delivered
 *   with). Then the worker stores `RETRY` (the result is the serialized `exc`,
 *   or `null`; the traceback is the Retry's stack) and only then acknowledges
 *   the original message.
 * - Per task, `autoretryFor` turns matching errors into `ctx.retry({ exc })`
 *   with `retryKwargs`, and with `retryBackoff` a countdown of
 *   `min(retryBackoffMax, factor * 2 ** retries)`, drawn at random in
 *   `[0, countdown]` under `retryJitter` (Celery's defaults: backoff off,
 *   maximum 600 s, jitter on).
 *
 * Unlike Celery, the message is sent when the Retry reaches the worker, not
 * inside `retry()`: a Retry that the handler catches and swallows sends
 * nothing (Celery has sent it already). And a retry message that cannot be
 * published gives the original back to the broker (it runs again) where
 * Celery rejects it (`Reject(requeue=False)`: dropped).
 *
 * @module
 */
import { ImproperlyConfigured } from '../errors.js';
import { TaskError } from './errors.js';
import { buildTaskMessage, isoformat, REPR_MAXLEVELS, REPR_MAXSIZE, type TaskEmbed, type TaskMessage } from './protocol.js';
import { buildMeta, serializeException, tracebackOf, type MetaRequest, type ResultMeta } from './results.js';
import { saferepr } from './saferepr.js';
import type { Delivery } from './transport.js';
import type { TaskHandler } from './worker.js';

/** Celery's `Task.max_retries` default. */
export const DEFAULT_MAX_RETRIES = 3;
/** Celery's `Task.default_retry_delay` default, in seconds. */
export const DEFAULT_RETRY_DELAY = 180;
/** Celery's `retry_backoff_max` default, in seconds. */
export const DEFAULT_RETRY_BACKOFF_MAX = 600;

/** What `ctx.retry()` takes: Celery's `Task.retry` arguments, camelCased. */
export interface RetryOptions {
  /** Seconds until the retry may run. Default: the task's `defaultRetryDelay` (Celery: 180), unless `eta` is given. */
  countdown?: number;
  /** When the retry may run: a `Date` or an ISO 8601 string. */
  eta?: Date | string;
  /** Overrides the task's `maxRetries` for this execution. */
  maxRetries?: number;
  /**
   * The error that caused the retry: stored as the `RETRY` result, and
   * thrown instead of {@link MaxRetriesExceededError} when the retries are spent.
   */
  exc?: unknown;
  /** Positional arguments of the retry. Default: the task's. */
  args?: unknown[];
  /** Keyword arguments of the retry. Default: the task's. */
  kwargs?: Record<string, unknown>;
  /** Send the retry to this queue (on the anonymous exchange) instead of the one it came from. */
  queue?: string;
  /** Message priority of the retry. Default: the delivered message's. */
  priority?: number;
  /** Seconds, a `Date` or an ISO 8601 string. Default: the task's `expires`. */
  expires?: number | Date | string;
  /** Hard time limit in seconds. Default: the task's. */
  timeLimit?: number | null;
  /** Soft time limit in seconds. Default: the task's. */
  softTimeLimit?: number | null;
}

/**
 * An error class (matched with `instanceof`) or a name (matched against
 * `err.name`, and a {@link TaskError}'s `excType`).
 */
export type ErrorMatcher = string | (abstract new (...args: never[]) => unknown);

/** The retry options of a task (Celery's task attributes, camelCased). */
export interface TaskRetryOptions {
  /** Errors that retry the task (Celery's `autoretry_for`). Default: none. */
  autoretryFor?: readonly ErrorMatcher[];
  /** Errors that never autoretry, even when `autoretryFor` matches (Celery's `dont_autoretry_for`). */
  dontAutoretryFor?: readonly ErrorMatcher[];
  /** What an autoretry passes to `ctx.retry` (Celery's `retry_kwargs`), e.g. `{ countdown: 5 }`. */
  retryKwargs?: Omit<RetryOptions, 'exc'>;
  /** Most retries; `null`: retry forever. Default 3 (Celery's). */
  maxRetries?: number | null;
  /** Seconds a retry waits when given no `countdown` or `eta`. Default 180 (Celery's). */
  defaultRetryDelay?: number;
  /**
   * Autoretry with exponential backoff: `true` (factor 1) or a factor in
   * seconds; the countdown is `min(retryBackoffMax, factor * 2 ** retries)`.
   * Default `false`.
   */
  retryBackoff?: boolean | number;
  /** Longest backoff in seconds. Default 600 (Celery's). */
  retryBackoffMax?: number;
  /** Draw the backoff countdown at random between 0 and itself (full jitter). Default `true` (Celery's). */
  retryJitter?: boolean;
}

/**
 * A task with options, for {@link WorkerOptions.tasks}:
 *
 * ```ts
 * tasks: {
 *   'tasks.fetch': {
 *     run: async ([url]) => (await fetch(String(url))).status,
 *     autoretryFor: [TypeError],
 *     retryBackoff: true,
 *     maxRetries: 5,
 *   },
 * }
 * ```
 */
export interface TaskDefinition extends TaskRetryOptions {
  /** The handler (Celery's `Task.run`). */
  run: TaskHandler;
}

/**
 * Thrown by `ctx.retry()` (Celery's `celery.exceptions.Retry`): tells the
 * worker to re-send the task. Its message is Celery's, e.g.
 * `Retry in 5s: ValueError('boom')`.
 */
export class Retry extends Error {
  override readonly name = 'Retry';
  readonly code = 'ERR_RETRY' as const;
  /** The error that caused the retry, if one was given. */
  readonly exc: unknown;
  /** The countdown in seconds, or the `eta`. */
  readonly when: number | Date | string | null;
  /** The task id being retried. */
  readonly taskId: string;
  /** The options the retry is sent with (countdown resolved). */
  readonly options: Readonly<RetryOptions>;

  /** Made by `ctx.retry()`. */
  constructor(taskId: string, options: RetryOptions) {
    const when = options.eta ?? options.countdown ?? null;
    const humanized = typeof when === 'number' ? `in ${when}s` : `at ${when instanceof Date ? isoformat(when) : String(when)}`;
    const excs = options.exc !== undefined && options.exc !== null ? errorRepr(options.exc) : null;
    super(excs !== null ? `Retry ${humanized}: ${excs}` : `Retry ${humanized}`);
    this.exc = options.exc;
    this.when = when;
    this.taskId = taskId;
    this.options = options;
  }
}

/**
 * The retries of a task are spent (Celery's
 * `celery.exceptions.MaxRetriesExceededError`); stored as a `FAILURE` that a
 * Python client re-raises as that class.
 */
export class MaxRetriesExceededError extends TaskError {
  override readonly name = 'MaxRetriesExceededError';
  /** The arguments the retry would have had. */
  readonly taskArgs: unknown[];
  /** The keyword arguments the retry would have had. */
  readonly taskKwargs: Record<string, unknown>;

  constructor(message: string, taskArgs: unknown[] = [], taskKwargs: Record<string, unknown> = {}) {
    super('MaxRetriesExceededError', [message], 'celery.exceptions');
    this.taskArgs = taskArgs;
    this.taskKwargs = taskKwargs;
  }
}

/** Emitted as `'task-retried'` once the retry is sent and `RETRY` stored. */
export interface TaskRetriedEvent {
  id: string;
  name: string;
  /** The error that caused the retry (`exc`), if one was given. */
  error: unknown;
  /** The countdown in seconds, or the `eta`. */
  when: number | Date | string | null;
  /** The `retries` of the message sent. */
  retries: number;
  /** Milliseconds the attempt ran. */
  runtime: number;
}

/** A task's retry options with Celery's defaults filled in. */
export interface RetryPolicy {
  readonly maxRetries: number | null;
  readonly defaultRetryDelay: number;
}

const DEFAULT_POLICY: RetryPolicy = { maxRetries: DEFAULT_MAX_RETRIES, defaultRetryDelay: DEFAULT_RETRY_DELAY };

function nonNegative(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ImproperlyConfigured(`${what} must be a number >= 0`);
  return v;
}

function checkMatchers(v: unknown, what: string): readonly ErrorMatcher[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((m) => typeof m === 'string' || typeof m === 'function')) {
    throw new ImproperlyConfigured(`${what} must be a list of error classes or names`);
  }
  return v as ErrorMatcher[];
}

/**
 * Reads the `tasks` option: a handler, or a {@link TaskDefinition}. Returns
 * each task's handler (wrapped with autoretry when it has `autoretryFor`)
 * and its retry policy.
 *
 * @throws ImproperlyConfigured on a task that is neither, or a bad option.
 */
export function readTasks(tasks: Record<string, TaskHandler | TaskDefinition>): {
  handlers: Map<string, TaskHandler>;
  policies: Map<string, RetryPolicy>;
  /** The names of the tasks with `autoretryFor`. */
  autoretries: string[];
} {
  const handlers = new Map<string, TaskHandler>();
  const policies = new Map<string, RetryPolicy>();
  const autoretries: string[] = [];
  if (tasks === null || typeof tasks !== 'object') throw new ImproperlyConfigured('createWorker needs tasks');
  for (const [name, t] of Object.entries(tasks)) {
    if (typeof t === 'function') {
      handlers.set(name, t);
      continue;
    }
    if (t === null || typeof t !== 'object' || typeof t.run !== 'function') {
      throw new ImproperlyConfigured(`task ${JSON.stringify(name)} is not a function or a { run } definition`);
    }
    const where = `task ${JSON.stringify(name)}:`;
    const maxRetries =
      t.maxRetries === undefined ? DEFAULT_MAX_RETRIES : t.maxRetries === null ? null : Math.floor(nonNegative(t.maxRetries, `${where} maxRetries`));
    const defaultRetryDelay = t.defaultRetryDelay === undefined ? DEFAULT_RETRY_DELAY : nonNegative(t.defaultRetryDelay, `${where} defaultRetryDelay`);
    policies.set(name, { maxRetries, defaultRetryDelay });
    const autoretryFor = checkMatchers(t.autoretryFor, `${where} autoretryFor`);
    const dontAutoretryFor = checkMatchers(t.dontAutoretryFor, `${where} dontAutoretryFor`);
    if (t.retryBackoff !== undefined && typeof t.retryBackoff !== 'boolean') nonNegative(t.retryBackoff, `${where} retryBackoff`);
    if (t.retryBackoffMax !== undefined) nonNegative(t.retryBackoffMax, `${where} retryBackoffMax`);
    if (t.retryKwargs !== undefined && (t.retryKwargs === null || typeof t.retryKwargs !== 'object')) {
      throw new ImproperlyConfigured(`${where} retryKwargs must be an object`);
    }
    if (autoretryFor.length > 0) autoretries.push(name);
    handlers.set(name, autoretryFor.length > 0 ? autoretry(t, autoretryFor, dontAutoretryFor) : t.run);
  }
  return { handlers, policies, autoretries };
}

/** The retry policy of a task registered as a plain handler: Celery's defaults. */
export function policyOf(policies: ReadonlyMap<string, RetryPolicy>, name: string): RetryPolicy {
  return policies.get(name) ?? DEFAULT_POLICY;
}

function matches(matchers: readonly ErrorMatcher[], err: unknown): boolean {
  for (const m of matchers) {
    if (typeof m === 'string') {
      if (err instanceof TaskError && err.excType === m) return true;
      if (err !== null && typeof err === 'object' && (err as { name?: unknown }).name === m) return true;
    } else {
      try {
        if (err instanceof (m as unknown as abstract new () => unknown)) return true;
      } catch {
        /* not a class */
      }
    }
  }
  return false;
}

/**
 * Celery's `get_exponential_backoff_interval`: `min(maximum, factor * 2 **
 * retries)`, with full jitter a whole number drawn in `[0, countdown]`; never negative.
 */
export function exponentialBackoff(factor: number, retries: number, maximum: number, fullJitter = false): number {
  let countdown = Math.min(maximum, factor * 2 ** retries);
  if (fullJitter) countdown = Math.floor(Math.random() * (Math.floor(countdown) + 1));
  return Math.max(0, countdown);
}

/** What one execution remembers between `ctx.retry` calls (Celery's `override_max_retries`). */
interface RetryRun {
  overrideMaxRetries?: number;
}

const runs = new WeakMap<object, RetryRun>();

/** Celery's `add_autoretry_behaviour`: wraps `run` so that matching errors retry. */
function autoretry(t: TaskDefinition, autoretryFor: readonly ErrorMatcher[], dontAutoretryFor: readonly ErrorMatcher[]): TaskHandler {
  const kwargs = { ...(t.retryKwargs ?? {}) };
  const backoff = t.retryBackoff === true ? 1 : t.retryBackoff === false || t.retryBackoff === undefined ? 0 : t.retryBackoff;
  const backoffMax = Math.floor(t.retryBackoffMax ?? DEFAULT_RETRY_BACKOFF_MAX);
  const jitter = t.retryJitter ?? true;
  const run = t.run;
  return async (args, kw, ctx) => {
    try {
      return await run(args, kw, ctx);
    } catch (err) {
      if (err instanceof Retry || matches(dontAutoretryFor, err) || !matches(autoretryFor, err)) throw err;
      const options: RetryOptions = { ...kwargs };
      if (backoff) options.countdown = exponentialBackoff(Math.floor(Math.max(1, backoff)), ctx.retries, backoffMax, jitter);
      const override = runs.get(ctx)?.overrideMaxRetries;
      if (override !== undefined) options.maxRetries = override;
      return ctx.retry({ ...options, exc: err });
    }
  };
}

/** Python's `repr` of a tuple of arguments, as `str(S.args)` prints it: `(2, 2)`, `(1,)`. */
function tupleRepr(args: readonly unknown[]): string {
  try {
    const items = args.map((a) => saferepr(a));
    return `(${items.join(', ')}${items.length === 1 ? ',' : ''})`;
  } catch {
    return '(...)';
  }
}

/**
 * The `argsrepr` of a retry: a signature's args are a tuple, so Celery
 * prints them `(1, 'a')` (`saferepr(tuple(args), 1024, 3)`).
 */
function argsTupleRepr(args: readonly unknown[]): string {
  const list = saferepr(args, REPR_MAXSIZE, REPR_MAXLEVELS);
  if (!list.startsWith('[') || !list.endsWith(']')) return list;
  return `(${list.slice(1, -1)}${args.length === 1 ? ',' : ''})`;
}

/** A short Python-like repr of an error: `ValueError('boom')`. */
function errorRepr(err: unknown): string {
  const e = serializeException(err);
  const args = Array.isArray(e.exc_message) ? e.exc_message : [e.exc_message];
  try {
    return `${e.exc_type}(${args.map((a) => saferepr(a)).join(', ')})`;
  } catch {
    return `${e.exc_type}(...)`;
  }
}

/** The request fields `ctx.retry` needs. */
export interface RetryRequest {
  id: string;
  name: string;
  retries: number;
  args: unknown[];
  kwargs: Record<string, unknown>;
}

/**
 * Makes `ctx.retry` for one execution: Celery's `Task.retry` up to the
 * point where it sends the message (the worker sends it when the Retry
 * reaches it). Always throws.
 */
export function bindRetry(req: RetryRequest, policy: RetryPolicy): { retry: (options?: RetryOptions) => never; attach(ctx: object): void } {
  const run: RetryRun = {};
  const retry = (options: RetryOptions = {}): never => {
    if (options === null || typeof options !== 'object') throw new TypeError('ctx.retry takes an options object');
    const retries = req.retries + 1;
    if (options.maxRetries !== undefined && options.maxRetries !== null) run.overrideMaxRetries = options.maxRetries;
    const maxRetries = options.maxRetries ?? policy.maxRetries;
    const resolved: RetryOptions = { ...options };
    delete resolved.maxRetries;
    if (!options.eta && (options.countdown === undefined || options.countdown === null)) resolved.countdown = policy.defaultRetryDelay;
    const args = options.args ?? req.args;
    const kwargs = options.kwargs ?? req.kwargs;
    if (maxRetries !== null && retries > maxRetries) {
      if (options.exc !== undefined && options.exc !== null) throw options.exc;
      throw new MaxRetriesExceededError(`Can't retry ${req.name}[${req.id}] args:${tupleRepr(args)} kwargs:${saferepr(kwargs)}`, args, kwargs);
    }
    throw new Retry(req.id, resolved);
  };
  return { retry, attach: (ctx) => runs.set(ctx, run) };
}

/** What the worker knows of the task being retried. */
export interface RetriedTask {
  id: string;
  name: string;
  delivery: Delivery;
  args: unknown[];
  kwargs: Record<string, unknown>;
  embed: TaskEmbed;
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/**
 * The message a retry re-sends: Celery's `signature_from_request(...)
 * .apply_async()` for a request delivered as `task.delivery`.
 */
export function buildRetryMessage(task: RetriedTask, retry: Retry, now: Date = new Date()): TaskMessage {
  const d = task.delivery;
  const h = d.headers;
  const o = retry.options;
  const limits = Array.isArray(h.timelimit) ? (h.timelimit as unknown[]) : [];
  const stampedHeaders = Array.isArray(h.stamped_headers) ? (h.stamped_headers as string[]) : null;
  const stamps = h.stamps !== null && typeof h.stamps === 'object' ? (h.stamps as Record<string, unknown>) : {};
  // signature_from_request: the anonymous exchange's routing key is the queue;
  // otherwise the exchange and routing key it was delivered with.
  let route: { queue: string; exchange?: string; routingKey?: string };
  if (o.queue !== undefined) route = { queue: o.queue };
  else if (d.exchange === '' && d.routingKey) route = { queue: d.routingKey };
  else route = { queue: d.queue, exchange: d.exchange, routingKey: d.routingKey };
  const replyTo = d.properties.reply_to;
  const expires = o.expires ?? str(h.expires);
  const args = o.args ?? task.args;
  return buildTaskMessage(
    task.name,
    args,
    o.kwargs ?? task.kwargs,
    {
      id: task.id,
      argsrepr: argsTupleRepr(args),
      // as_task_v2: a countdown wins over an eta.
      ...(o.countdown ? { countdown: o.countdown } : {}),
      ...(o.eta !== undefined && o.eta !== null ? { eta: o.eta } : {}),
      ...(expires !== null ? { expires } : {}),
      ...route,
      priority: o.priority ?? (Number.isInteger(d.priority) ? d.priority : 0),
      retries: (num(h.retries) ?? 0) + 1,
      timeLimit: o.timeLimit !== undefined ? o.timeLimit : num(limits[0]),
      softTimeLimit: o.softTimeLimit !== undefined ? o.softTimeLimit : num(limits[1]),
      rootId: str(h.root_id),
      parentId: str(h.parent_id),
      groupId: str(h.group),
      groupIndex: num(h.group_index),
      shadow: str(h.shadow),
      // get_actual_ignore_result: the request's, else the task's (false).
      ignoreResult: typeof h.ignore_result === 'boolean' ? h.ignore_result : false,
      replyTo: typeof replyTo === 'string' ? replyTo : '',
      ...(str(h.origin) !== null ? { origin: str(h.origin)! } : {}),
      callbacks: task.embed.callbacks,
      errbacks: task.embed.errbacks,
      chain: task.embed.chain,
      chord: task.embed.chord,
      stampedHeaders,
      stamps,
      replacedTaskNesting: num(h.replaced_task_nesting) ?? 0,
    },
    {},
    now,
  );
}

/** Celery's `mark_as_retry`: `RETRY` with the serialized `exc` (or `null`) and the traceback. */
export function retryMeta(taskId: string, retry: Retry, request: MetaRequest): ResultMeta {
  const exc = retry.exc !== undefined && retry.exc !== null ? serializeException(retry.exc) : null;
  return buildMeta(taskId, 'RETRY', exc, tracebackOf(retry), request);
}

/** The fields of Celery's `task-retried` event: `safe_repr(exc)` and the traceback. */
export function retriedEventFields(taskId: string, retry: Retry): Record<string, unknown> {
  return {
    uuid: taskId,
    exception: retry.exc !== undefined && retry.exc !== null ? errorRepr(retry.exc) : 'None',
    traceback: tracebackOf(retry) ?? '',
  };
}

