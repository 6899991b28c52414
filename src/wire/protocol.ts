/**
 * Celery's task message protocol v2, exactly as `celery.app.amqp.AMQP.as_task_v2`
 * and `Celery.send_task` make it, and the reading side a worker needs.
 *
 * A task message is transport-independent: `headers`, `properties`, a body
 * `[args, kwargs, {callbacks, errbacks, chain, chord}]`, and where it goes
 * (`exchange`, `routingKey`). The body is serialized with the `auth`
 * serializer ({@link SecureSerializer}): content type `application/data`,
 * encoding `utf-8`. A transport (`./redis.ts`, `./amqp.ts`) puts the result on
 * the wire in its own framing.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { SecurityError } from '../errors.js';
import { SecureSerializer } from '../serializer.js';
import { saferepr } from './saferepr.js';
import type { OutgoingMessage } from './transport.js';

/** The content type of an `auth` body (kombu's registration of Celery's serializer). */
export const AUTH_CONTENT_TYPE = 'application/data';
/** The content encoding of an `auth` body. */
export const AUTH_CONTENT_ENCODING = 'utf-8';
/** Celery's `argsrepr_maxsize` and `kwargsrepr_maxsize`. */
export const REPR_MAXSIZE = 1024;
/** Celery's `task_repr_maxlevels` default. */
export const REPR_MAXLEVELS = 3;
/** Celery's default queue (`task_default_queue`). */
export const DEFAULT_QUEUE = 'celery';

/** Options of a task message: Celery's `send_task`/`apply_async` options, camelCased. */
export interface TaskOptions {
  /** Task id. Default: a fresh UUID4 (as Celery). */
  id?: string;
  /** Seconds from now until the task may run; becomes `eta`. */
  countdown?: number;
  /** Earliest run time: a `Date` or an ISO 8601 string (sent as is). */
  eta?: Date | string;
  /** Seconds from now, a `Date`, or an ISO 8601 string: after it the worker revokes the task. */
  expires?: number | Date | string;
  /** Queue name (routing key on the default direct exchange). Default `'celery'`. */
  queue?: string;
  /** Exchange; default `''` (Celery turns a direct exchange into the anonymous one). */
  exchange?: string;
  /** Routing key; default: the queue name. */
  routingKey?: string;
  /** Message priority 0-9 (on Redis 0 is consumed first, as kombu does). Default 0. */
  priority?: number;
  /** Extra message headers, merged over the protocol headers (as Celery's `headers=`). */
  headers?: Record<string, unknown>;
  /** Hard time limit in seconds (`timelimit[0]`). */
  timeLimit?: number | null;
  /** Soft time limit in seconds (`timelimit[1]`). */
  softTimeLimit?: number | null;
  /** Default 0. */
  retries?: number;
  rootId?: string | null;
  parentId?: string | null;
  groupId?: string | null;
  groupIndex?: number | null;
  /** Another name for the task in logs (`shadow`). */
  shadow?: string | null;
  /** Default `null` (Celery 5.5+'s `send_task` writes `None` unless told; 5.4 wrote `False`). */
  ignoreResult?: boolean | null;
  /** `reply_to` property; default: the client's id (Celery's `app.thread_oid`). */
  replyTo?: string;
  argsrepr?: string;
  kwargsrepr?: string;
  /** `origin` header; default `gen<pid>@<hostname>` (Celery's `anon_nodename()`). */
  origin?: string;
  callbacks?: unknown[] | null;
  errbacks?: unknown[] | null;
  chain?: unknown[] | null;
  chord?: unknown | null;
  stampedHeaders?: string[] | null;
  stamps?: Record<string, unknown>;
  replacedTaskNesting?: number;
  /** 2 (persistent, Celery's default) or 1. */
  deliveryMode?: 1 | 2;
}

/** Celery's task embed: the last element of the body. */
export interface TaskEmbed {
  callbacks: unknown[] | null;
  errbacks: unknown[] | null;
  chain: unknown[] | null;
  chord: unknown | null;
}

/** A task message before its body is serialized. */
export interface TaskMessage {
  headers: Record<string, unknown>;
  properties: {
    correlation_id: string;
    reply_to: string;
    delivery_mode: number;
    priority: number;
    expiration?: string;
  };
  body: [unknown[], Record<string, unknown> | Map<unknown, unknown>, TaskEmbed];
  exchange: string;
  routingKey: string;
  /** The queue it is declared on (`routingKey` on the anonymous exchange). */
  queue: string;
}

let cachedOrigin: string | undefined;

/** Celery's `anon_nodename()`: `gen<pid>@<hostname>`. */
export function anonNodename(): string {
  cachedOrigin ??= `gen${process.pid}@${hostname()}`;
  return cachedOrigin;
}

/** A fresh task id (UUID4, as Celery's `uuid()`). */
export function taskId(): string {
  return randomUUID();
}

/**
 * Python's `datetime.isoformat()` of an aware UTC datetime:
 * `2024-01-02T03:04:05.678000+00:00` (the fraction only when not zero).
 */
export function isoformat(date: Date): string {
  const t = date.getTime();
  // A worker stores many results within the same millisecond: the last one made serves.
  if (t === lastIsoTime) return lastIso;
  if (Number.isNaN(t)) throw new RangeError('invalid Date');
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const ms = date.getUTCMilliseconds();
  lastIso = iso.slice(0, 19) + (ms ? `.${String(ms).padStart(3, '0')}000` : '') + '+00:00';
  lastIsoTime = t;
  return lastIso;
}

let lastIsoTime = NaN;
let lastIso = '';

function checkSeconds(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${what} must be a finite number of seconds`);
  return value;
}

function optionalNumber(value: unknown, what: string): number | null {
  if (value === undefined || value === null) return null;
  return checkSeconds(value, what);
}

/**
 * Builds a task message as `Celery.send_task` + `as_task_v2` do: the same
 * headers in the same order, `eta`/`expires` as ISO 8601 strings, the
 * `expiration` property when `expires` is set, `timelimit` as
 * `[time_limit, soft_time_limit]`, `root_id` defaulting to the id.
 *
 * @param now The clock for `countdown` and `expires` in seconds (default: now).
 */
export function buildTaskMessage(
  name: string,
  args: readonly unknown[] = [],
  kwargs: Record<string, unknown> | Map<unknown, unknown> = {},
  options: TaskOptions = {},
  defaults: { replyTo?: string; ignoreResult?: boolean | null } = {},
  now: Date = new Date(),
): TaskMessage {
  if (typeof name !== 'string' || name === '') throw new TypeError('task name must be a non-empty string');
  if (!Array.isArray(args)) throw new TypeError('task args must be an array');
  if (kwargs === null || typeof kwargs !== 'object' || Array.isArray(kwargs)) {
    throw new TypeError('task keyword arguments must be an object or a Map');
  }
  const id = options.id ?? taskId();
  if (typeof id !== 'string' || id === '') throw new TypeError('task id must be a non-empty string');

  let eta: string | null = null;
  if (options.countdown) {
    eta = isoformat(new Date(now.getTime() + checkSeconds(options.countdown, 'countdown') * 1000));
  } else if (options.eta !== undefined && options.eta !== null) {
    eta = typeof options.eta === 'string' ? options.eta : isoformat(options.eta);
  }
  let expires: string | null = null;
  let expiration: string | undefined;
  if (options.expires !== undefined && options.expires !== null) {
    let expiresS: number;
    if (typeof options.expires === 'number') {
      expiresS = checkSeconds(options.expires, 'expires');
      expires = isoformat(new Date(now.getTime() + expiresS * 1000));
    } else {
      const when = typeof options.expires === 'string' ? new Date(options.expires) : options.expires;
      if (Number.isNaN(when.getTime())) throw new TypeError('expires is not a valid date');
      expires = typeof options.expires === 'string' ? options.expires : isoformat(when);
      expiresS = (when.getTime() - now.getTime()) / 1000;
    }
    // Celery.send_task: options['expiration'] = seconds (0 when in the past);
    // kombu's Producer.publish: properties['expiration'] = str(int(expiration * 1000)).
    expiration = String(Math.trunc(Math.max(expiresS, 0) * 1000));
  }

  const retries = options.retries ?? 0;
  const stampedHeaders = options.stampedHeaders ?? null;
  const stamps: Record<string, unknown> = {};
  for (const h of stampedHeaders ?? []) stamps[h] = options.stamps?.[h];

  const headers: Record<string, unknown> = {
    lang: 'py',
    task: name,
    id,
    shadow: options.shadow ?? null,
    eta,
    expires,
    group: options.groupId ?? null,
    group_index: options.groupIndex ?? null,
    retries,
    timelimit: [optionalNumber(options.timeLimit, 'timeLimit'), optionalNumber(options.softTimeLimit, 'softTimeLimit')],
    root_id: options.rootId || id,
    parent_id: options.parentId ?? null,
    // as_task_v2: `args = args or ()`, so no arguments print as a tuple.
    argsrepr: options.argsrepr ?? (args.length === 0 ? '()' : saferepr(args, REPR_MAXSIZE, REPR_MAXLEVELS)),
    kwargsrepr: options.kwargsrepr ?? saferepr(kwargs, REPR_MAXSIZE, REPR_MAXLEVELS),
    origin: options.origin ?? anonNodename(),
    ignore_result: options.ignoreResult !== undefined ? options.ignoreResult : defaults.ignoreResult ?? null,
    replaced_task_nesting: options.replacedTaskNesting ?? 0,
    stamped_headers: stampedHeaders,
    stamps,
  };
  if (options.headers) Object.assign(headers, options.headers);

  const priority = options.priority ?? 0;
  if (!Number.isInteger(priority)) throw new TypeError('priority must be an integer');
  const properties: TaskMessage['properties'] = {
    correlation_id: id,
    reply_to: options.replyTo ?? defaults.replyTo ?? '',
    delivery_mode: options.deliveryMode ?? 2,
    priority,
  };
  if (expiration !== undefined) properties.expiration = expiration;

  const queue = options.queue ?? DEFAULT_QUEUE;
  // Celery's send_task_message: a direct exchange without a routing key (the
  // default) becomes the anonymous exchange with the queue name as key.
  const exchange = options.exchange && options.routingKey ? options.exchange : '';
  const routingKey = exchange ? options.routingKey! : queue;

  return {
    headers,
    properties,
    body: [
      [...args],
      kwargs,
      {
        callbacks: options.callbacks ?? null,
        errbacks: options.errbacks ?? null,
        chain: options.chain ?? null,
        chord: options.chord ?? null,
      },
    ],
    exchange,
    routingKey,
    queue,
  };
}

/**
 * Serializes the bodies of task messages with the `auth` serializer, in one
 * native batch, and returns what a transport publishes.
 */
export async function encodeTaskMessages(
  messages: readonly TaskMessage[],
  security: SecureSerializer,
): Promise<OutgoingMessage[]> {
  const bodies = await security.serializeMany(messages.map((m) => m.body));
  return messages.map((m, i) => ({
    body: bodies[i]!,
    contentType: AUTH_CONTENT_TYPE,
    contentEncoding: AUTH_CONTENT_ENCODING,
    headers: m.headers,
    properties: m.properties,
    exchange: m.exchange,
    routingKey: m.routingKey,
    queue: m.queue,
  }));
}

/** A verified task body, taken apart. */
export interface TaskBody {
  args: unknown[];
  kwargs: Record<string, unknown>;
  embed: TaskEmbed;
  /** Keys of the embed dict other than Celery's four (e.g. celery-sign's `celery_sign_binding`). */
  extra?: Record<string, unknown>;
}

const EMBED_KEYS = new Set(['callbacks', 'errbacks', 'chain', 'chord']);

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/**
 * Checks a decoded body the way Celery's worker unpacks it (`args, kwargs,
 * embed = body`): a three-element list of a list, a dict and a dict.
 *
 * @throws SecurityError `ERR_MALFORMED_PAYLOAD` otherwise (Celery: `InvalidTaskError`).
 */
export function parseTaskBody(value: unknown): TaskBody {
  if (!Array.isArray(value) || value.length !== 3) {
    throw new SecurityError('ERR_MALFORMED_PAYLOAD', 'Task body is not [args, kwargs, embed]');
  }
  const [args, kwargs, embed] = value as [unknown, unknown, unknown];
  if (!Array.isArray(args)) throw new SecurityError('ERR_MALFORMED_PAYLOAD', 'Task args must be a list');
  const kw = kwargs instanceof Map ? Object.fromEntries(kwargs) : kwargs;
  if (!isRecord(kw)) throw new SecurityError('ERR_MALFORMED_PAYLOAD', 'Task kwargs must be a dict');
  const em = embed === null ? {} : embed instanceof Map ? Object.fromEntries(embed) : embed;
  if (!isRecord(em)) throw new SecurityError('ERR_MALFORMED_PAYLOAD', 'Task embed must be a dict');
  let extra: Record<string, unknown> | undefined;
  for (const k of Object.keys(em)) {
    if (!EMBED_KEYS.has(k)) (extra ??= {})[k] = em[k];
  }
  return {
    args,
    kwargs: kw,
    embed: {
      callbacks: (em.callbacks as unknown[] | null | undefined) ?? null,
      errbacks: (em.errbacks as unknown[] | null | undefined) ?? null,
      chain: (em.chain as unknown[] | null | undefined) ?? null,
      chord: em.chord ?? null,
    },
    ...(extra ? { extra } : {}),
  };
}

/** Parses an ISO 8601 `eta`/`expires` header; `null` when absent or unreadable. */
export function parseIsoDate(value: unknown): Date | null {
  if (typeof value !== 'string' || value === '') return null;
  // Python writes microseconds; Date reads at most milliseconds.
  const normalized = value.replace(/(\.\d{3})\d+/, '$1');
  const d = new Date(normalized);
  return Number.isNaN(d.getTime()) ? null : d;
}
