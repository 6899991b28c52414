/**
 * Remote control: the worker's node in Celery's pidbox (`kombu/pidbox.py`
 * `Node`, `celery/worker/pidbox.py`) and the commands a stock worker answers
 * (`celery/worker/control.py`), so that `celery inspect` / `celery control`
 * (and Flower) see a Node worker as they see a Python one.
 *
 * On the broker, as Celery's `app.control.mailbox` makes it
 * (`celery/app/control.py`): the broadcast exchange `<control_exchange>.pidbox`
 * (`celery.pidbox`, fanout, not durable), the node's queue
 * `<hostname>.celery.pidbox` (exclusive, auto-delete, not durable,
 * `x-message-ttl` 300000 ms and `x-expires` 10000 ms from Celery's
 * `control_queue_ttl` and `control_queue_expires`), consumed without
 * acknowledgement; replies go to the direct exchange `reply.celery.pidbox`
 * with the requester's `reply_to.routing_key`, the headers `{ticket, clock}`
 * and `delivery_mode` 1. On Redis the fanout is kombu's: the node
 * PSUBSCRIBEs `/{db}.celery.pidbox` and a reply is LPUSHed on the queues
 * bound in `_kombu.binding.reply.celery.pidbox` to its routing key.
 *
 * Serializer rules under `setup_security()`, as Celery builds the mailbox
 * (`Mailbox(accept=app.conf.accept_content, serializer=app.conf.task_serializer)`):
 * a command is accepted only when it is an `auth` (signed, `application/data`)
 * message whose signature verifies against the worker's store; anything else
 * (unsigned JSON, a bad signature, an unknown signer) is refused, reported as
 * a `'security'` event and never acted upon (Celery's `on_decode_error`).
 * Replies are signed with the worker's key, so that the `celery` CLI (which
 * accepts only `auth` replies) verifies them.
 *
 * Commands and their replies, as Celery 5.7's worker gives them:
 * `ping` `{ok: 'pong'}`; `active` (the running requests, `Request.info()`);
 * `reserved`; `scheduled`; `registered`; `stats`; `revoked`; `clock`;
 * `query_task`; `active_queues`; `conf`; `revoke` (by id or id list, `terminate`,
 * `signal`); `terminate`; `rate_limit`; `time_limit`; `enable_events` / `disable_events`;
 * `heartbeat`; `hello` (mingle: a starting Celery worker and this one
 * exchange their revoked ids); `shutdown` (a warm stop, no reply: Celery raises
 * `WorkerShutdown` before replying). An unknown command is answered
 * `{error: "KeyError('<name>')"}`, as kombu's `Node.dispatch` answers it.
 *
 * Beyond Celery, opt-in: `authorizeControl` (`./authorize.ts`) says which
 * signer may send which commands. Once given, a verified command its signer
 * may not send is refused (`ERR_NOT_AUTHORIZED`, a `'security'` event with
 * check `'authorization'`, the security log), neither run nor answered, as
 * a forged one. The command name is in the signed body, so no header binding
 * is needed.
 *
 * Where this worker differs from Celery's, and why:
 * - a revoked task the worker holds (an ETA task, or one waiting for a slot
 *   or a rate limit) is settled at once: `REVOKED` stored, message
 *   acknowledged, `task-revoked` sent. Celery stores `REVOKED` at once too but
 *   acknowledges when the ETA comes; the outcome is the same, the prefetch
 *   window is freed sooner;
 * - `terminate` cannot kill a JavaScript function: the task's `AbortSignal`
 *   is aborted (reason: an `Error` named `Terminated`), `REVOKED`
 *   (`terminated`) is stored and the message acknowledged at once, its slot
 *   freed; whatever the handler does afterwards is ignored. The signal name
 *   is checked as Celery checks it and reported in `task-revoked`;
 * - `stats`: every field Celery's worker reports (`total`, `pid`, `clock`,
 *   `uptime`, `pool`, `broker`, `prefetch_count`, `rusage` from
 *   `process.resourceUsage()`, all sixteen `getrusage` fields); `pool` is
 *   the event loop (`implementation: 'celery_sign:EventLoop'`, one process,
 *   `max-concurrency` the worker's `concurrency`); `broker` is read from the
 *   URL (never the password), its `heartbeat` is the AMQP heartbeat (60) or
 *   `null` on Redis;
 * - not implemented (answered `KeyError`, as an unknown command):
 *   `revoke_by_stamped_headers`, `report`,
 *   `memsample`, `memdump`, `objgraph`, `pool_grow`, `pool_shrink`,
 *   `pool_restart`, `autoscale`, `add_consumer`, `cancel_consumer`,
 *   `election`. `active_queues` describes each queue as Celery's default
 *   direct queue; `conf` lists the worker's settings under Celery's names
 *   (URLs with the password censored, as Celery censors them).
 *
 * @module
 */
import { constants as osConstants } from 'node:os';
import { ImproperlyConfigured, SecurityError } from '../errors.js';
import type { SecureSerializer } from '../serializer.js';
import { AUTH_CONTENT_ENCODING, AUTH_CONTENT_TYPE } from './protocol.js';
import { rate, type RateLimits } from './ratelimit.js';
import { saferepr } from './saferepr.js';
import type { BrokerTransport, Delivery, EventMessage } from './transport.js';

/** Options of a worker's remote control (`createWorker({ remoteControl })`). */
export interface RemoteControlOptions {
  /** Celery's `control_exchange`: the mailbox namespace. Default `'celery'` (exchange `celery.pidbox`). */
  exchange?: string;
  /** Celery's `control_queue_ttl`, seconds (`x-message-ttl` of the node's queue). Default 300; `null`: none. */
  queueTtl?: number | null;
  /** Celery's `control_queue_expires`, seconds (`x-expires` of the node's queue). Default 10; `null`: none. */
  queueExpires?: number | null;
}

/** The node's queue and the broadcast exchange, as a transport declares and consumes them. */
export interface BroadcastSpec {
  /** The fanout exchange, e.g. `celery.pidbox`. */
  exchange: string;
  /** The node's queue, e.g. `celery@host.celery.pidbox`. */
  queue: string;
  /** `x-message-ttl`, milliseconds, or `null`. */
  messageTtl: number | null;
  /** `x-expires`, milliseconds, or `null`. */
  expires: number | null;
}

/** A running subscription to a broadcast exchange. */
export interface BroadcastListener {
  /** Stops listening (and, on Redis, removes the queue's binding). */
  close(): Promise<void>;
}

/** What `inspect active` (and `reserved`) lists for a task: Celery's `Request.info()`. */
export interface RequestInfo {
  /** Task id. */
  id: string;
  /** Task name. */
  name: string;
  /** Positional arguments. */
  args: unknown[];
  /** Keyword arguments. */
  kwargs: Record<string, unknown>;
  /** The task name again (Celery's `Request.type`). */
  type: string;
  /** The worker's name. */
  hostname: string;
  /** Seconds since the epoch when it started, or `null`. */
  time_start: number | null;
  /** Always `false`: the worker acknowledges after the outcome is stored (Celery's `task_acks_late`). */
  acknowledged: boolean;
  /** Where the message came from. */
  delivery_info: { exchange: string; routing_key: string; priority: number; redelivered: boolean };
  /** The worker's process id once started (Celery: the pool process), else `null`. */
  worker_pid: number | null;
}

/** What a command did, emitted by the worker as `'control'`. */
export interface ControlEvent {
  /** The command (`method` of the message). */
  command: string;
  /** Its arguments (`arguments` of the message). */
  arguments: Record<string, unknown>;
  /** The Celery id of the certificate that signed it. */
  signer: string;
  /** What was replied (`undefined`: nothing, e.g. `shutdown` or a cast). */
  reply?: unknown;
}

/** What the worker lends its node. Not for direct use. */
/**
 * The name `authorizeControl` decides on, for the commands that are another
 * command under a second name: kombu's `dump_*` aliases are their `inspect`
 * command, and `terminate` is `revoke` with `terminate=True`. A rule that
 * allows or denies `revoke` so covers `terminate` too.
 */
export const AUTHORIZED_AS: ReadonlyMap<string, string> = new Map([
  ['dump_active', 'active'],
  ['dump_reserved', 'reserved'],
  ['dump_schedule', 'scheduled'],
  ['dump_revoked', 'revoked'],
  ['dump_tasks', 'registered'],
  ['dump_conf', 'conf'],
  ['terminate', 'revoke'],
]);

export interface ControlHost {
  readonly hostname: string;
  readonly rateLimits: RateLimits;
  readonly revoked: RevokedSet;
  /** The requests running now. */
  active(): RequestInfo[];
  /** Held and not started (not ETA). */
  reserved(): RequestInfo[];
  /** Held ETA tasks. */
  scheduled(): { eta: string | null; priority: number; request: RequestInfo }[];
  /** The registered task names. */
  taskNames(): string[];
  /** The queues consumed. */
  queues(): string[];
  /** `inspect stats` without `clock`. */
  stats(): Record<string, unknown>;
  /** `inspect conf`: the worker's settings under Celery's names, secrets censored. */
  conf(): Record<string, unknown>;
  /**
   * Acts on revoked ids: held ones are settled as `REVOKED` and acknowledged,
   * running ones aborted when `terminate`; unknown ones marked as revoked in
   * the result backend when they have no result. Returns the ids this worker
   * held or ran.
   */
  revoke(ids: string[], terminate: boolean, signum: number): Promise<string[]>;
  /** Celery's `time_limit` command: a task's default time limits (seconds; a message's own `timelimit` wins); `false`: unknown task. */
  setTimeLimits(name: string, soft: number | null, hard: number | null): boolean;
  /** A rate limit changed: start what may start now. */
  rateLimitChanged(): void;
  /** Task events on or off: `null` without an event dispatcher, else whether it changed. */
  taskEvents(enable: boolean): boolean | null;
  /** Sends a `worker-heartbeat` now (when events are on). */
  heartbeat(): void;
  /** A warm stop (`worker.stop()`), not awaited. */
  shutdown(): void;
  /**
   * Whether the signer may send the command (`authorizeControl`): `null`
   * allows, an `ERR_NOT_AUTHORIZED` error refuses. Absent: every verified
   * signer may send every command, as in Celery.
   */
  authorizeCommand?(signer: string, command: string): SecurityError | null;
  /** A refused control message: unsigned, forged, or (with `signer`) a verified one its signer may not send. */
  refused(d: Delivery, error: SecurityError, signer?: string): void;
  /** A command was executed. */
  executed(e: ControlEvent): void;
  /** Broker trouble, a command that threw. */
  error(err: unknown): void;
}

/**
 * Celery's `LimitedSet` of revoked ids (`worker_state.revoked`): at most
 * `maxlen` ids (Celery's `REVOKES_MAX`, 50000), each kept `expires` seconds
 * (`REVOKE_EXPIRES`, 10800); iterated oldest first.
 */
export class RevokedSet implements Iterable<string> {
  readonly #ids = new Map<string, number>();
  readonly maxlen: number;
  readonly expires: number;

  constructor(maxlen = 50000, expires = 10800) {
    this.maxlen = maxlen;
    this.expires = expires;
  }

  /** Adds (or refreshes) ids. */
  add(...ids: string[]): void {
    const now = Date.now();
    for (const id of ids) {
      this.#ids.delete(id);
      this.#ids.set(id, now);
    }
    this.purge(now);
  }

  has(id: string): boolean {
    const at = this.#ids.get(id);
    if (at === undefined) return false;
    if (this.expires > 0 && Date.now() - at > this.expires * 1000) {
      this.#ids.delete(id);
      return false;
    }
    return true;
  }

  /** Drops expired ids and the oldest beyond `maxlen`. */
  purge(now = Date.now()): void {
    for (const [id, at] of this.#ids) {
      if (this.#ids.size > this.maxlen || (this.expires > 0 && now - at > this.expires * 1000)) this.#ids.delete(id);
      else break;
    }
  }

  get size(): number {
    return this.#ids.size;
  }

  [Symbol.iterator](): Iterator<string> {
    this.purge();
    return this.#ids.keys();
  }
}

/** kombu's `LamportClock`. */
class LamportClock {
  value = 0;
  adjust(other: unknown): number {
    const o = typeof other === 'number' && Number.isFinite(other) ? Math.trunc(other) : 0;
    this.value = Math.max(this.value, o) + 1;
    return this.value;
  }
  forward(): number {
    return ++this.value;
  }
}

function ok(value: unknown): { ok: unknown } {
  return { ok: value };
}

function nok(value: unknown): { error: unknown } {
  return { error: value };
}

/** A Python exception as kombu's `Node.dispatch` replies it: `repr(exc)`. */
class PyException extends Error {
  readonly repr: string;
  constructor(repr: string) {
    super(repr);
    this.repr = repr;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function toPlain(v: unknown): unknown {
  return v instanceof Map ? Object.fromEntries(v) : v;
}

/** Celery's `maybe_list`: a list stays, `null` is `[]`, anything else one item. */
function maybeList(v: unknown): unknown[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** `fnmatch.fnmatch` (case-sensitive on POSIX). */
function fnmatch(name: string, pattern: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let cls = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (cls.startsWith('!')) cls = '^' + cls.slice(1);
        re += `[${cls}]`;
        i = end;
      }
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's').test(name);
}

/** kombu's `match(hostname, pattern, matcher)`: `glob` (default) or `pcre` (`re.match`). */
function matches(hostname: string, pattern: string, matcher: string): boolean {
  if (matcher === 'pcre') {
    try {
      return new RegExp(`^(?:${pattern})`).test(hostname);
    } catch {
      return false;
    }
  }
  if (matcher === 'glob' || matcher === '') return fnmatch(hostname, pattern);
  throw new PyException(`MatcherNotInstalled('No matcher installed for ${matcher}')`);
}

/** Python's `repr()` of a set of strings: `{'a', 'b'}`, `set()`. */
function pySetRepr(ids: readonly string[]): string {
  return ids.length === 0 ? 'set()' : `{${ids.map((id) => saferepr(id)).join(', ')}}`;
}

/** A URL with its password censored, as Celery's `conf` shows it (`redis://:********@host/0`). */
export function censorUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '********';
    return u.toString().replace('%2A%2A%2A%2A%2A%2A%2A%2A', '********');
  } catch {
    return '********';
  }
}

/** Celery's `signals.signum`: `'TERM'`, `'SIGTERM'`, `15`. */
export function signum(name: unknown): number {
  if (name === null || name === undefined || name === '') return osConstants.signals.SIGTERM;
  if (typeof name === 'number' && Number.isInteger(name)) return name;
  if (typeof name !== 'string' || name !== name.toUpperCase()) {
    throw new PyException("TypeError('signal name must be uppercase string.')");
  }
  const full = (name.startsWith('SIG') ? name : `SIG${name}`) as keyof typeof osConstants.signals;
  const n = osConstants.signals[full];
  if (typeof n !== 'number') throw new PyException(`AttributeError("module 'signal' has no attribute '${full}'")`);
  return n;
}

type Handler = (args: Record<string, unknown>) => unknown;

/**
 * The worker's pidbox node. Not for direct use: `createWorker()` makes one
 * unless `remoteControl: false`.
 */
export class ControlNode {
  readonly hostname: string;
  readonly spec: BroadcastSpec;
  readonly replyExchange: string;
  readonly #transport: BrokerTransport;
  readonly #security: SecureSerializer;
  readonly #host: ControlHost;
  readonly #clock = new LamportClock();
  readonly #handlers: Map<string, Handler>;
  #listener: BroadcastListener | undefined;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(transport: BrokerTransport, security: SecureSerializer, host: ControlHost, options: RemoteControlOptions = {}) {
    this.#transport = transport;
    this.#security = security;
    this.#host = host;
    this.hostname = host.hostname;
    const ns = options.exchange ?? 'celery';
    const ttl = options.queueTtl === undefined ? 300 : options.queueTtl;
    const expires = options.queueExpires === undefined ? 10 : options.queueExpires;
    this.spec = {
      exchange: `${ns}.pidbox`,
      queue: `${this.hostname}.${ns}.pidbox`,
      messageTtl: ttl === null ? null : Math.trunc(ttl * 1000),
      expires: expires === null ? null : Math.trunc(expires * 1000),
    };
    this.replyExchange = `reply.${ns}.pidbox`;
    this.#handlers = this.#panel();
  }

  /** Whether the transport can carry remote control. */
  static supported(transport: BrokerTransport): boolean {
    return typeof transport.listenBroadcast === 'function' && typeof transport.publishControlReplies === 'function';
  }

  /** The mailbox clock (`inspect clock`). */
  get clock(): number {
    return this.#clock.value;
  }

  /** Declares the node's queue and starts listening. */
  async start(): Promise<void> {
    if (!ControlNode.supported(this.#transport)) {
      throw new ImproperlyConfigured(`The ${this.#transport.name} transport cannot carry remote control`);
    }
    this.#listener = await this.#transport.listenBroadcast!(
      this.spec,
      (d) => {
        this.#chain = this.#chain.then(() => this.#onMessage(d)).catch((err: unknown) => this.#host.error(err));
      },
      (err) => this.#host.error(err),
    );
  }

  /** Stops listening; waits for the command in progress (at most `timeoutMs`). */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#listener?.close().catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#chain, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }

  async #onMessage(d: Delivery): Promise<void> {
    if (this.#closed) return;
    // Celery's Pidbox.on_message forwards the app clock; kombu's Node adjusts from the header.
    this.#clock.adjust(d.headers.clock);
    if (d.malformed) return this.#host.refused(d, d.malformed);
    if (d.contentType !== AUTH_CONTENT_TYPE) {
      return this.#host.refused(
        d,
        new SecurityError(
          'ERR_CONTENT_DISALLOWED',
          `Refusing to deserialize untrusted content of type ${JSON.stringify(String(d.contentType)).slice(0, 80)}: only signed (auth, application/data) control messages are accepted`,
        ),
      );
    }
    if (d.body === null) return this.#host.refused(d, new SecurityError('ERR_MALFORMED_PAYLOAD', 'Control message has no body'));
    const [r] = await this.#security.deserializeMany([d.body]);
    if (!r) return;
    if (!r.ok) {
      if (r.error.code === 'ERR_INTERNAL') return this.#host.error(r.error);
      return this.#host.refused(d, r.error);
    }
    const body = toPlain(r.value);
    if (!isRecord(body)) {
      this.#host.error(new SecurityError('ERR_DECODE', 'Control message body is not a mapping'));
      return;
    }
    await this.#dispatchMessage(d, body, r.signer);
  }

  /** kombu's `Node.handle_message` + `dispatch`. */
  async #dispatchMessage(d: Delivery, body: Record<string, unknown>, signer: string): Promise<void> {
    const destination = body.destination;
    const pattern = body.pattern;
    const matcher = body.matcher;
    let run: boolean;
    try {
      if (Array.isArray(destination) && destination.length > 0) run = destination.includes(this.hostname);
      else if (typeof destination === 'string' && destination !== '') run = destination.includes(this.hostname);
      else if (typeof pattern === 'string' && pattern !== '' && typeof matcher === 'string' && matcher !== '') {
        run = matches(this.hostname, pattern, matcher);
      } else run = true;
    } catch (err) {
      this.#host.error(err);
      return;
    }
    if (!run) return;
    const method = typeof body.method === 'string' ? body.method : String(body.method);
    // Authorized for this node only: a command for another node is no business of this one's.
    const denied = this.#host.authorizeCommand?.(signer, AUTHORIZED_AS.get(method) ?? method) ?? null;
    if (denied !== null) return this.#host.refused(d, denied, signer);
    const rawArgs = toPlain(body.arguments);
    const args = isRecord(rawArgs) ? rawArgs : {};
    const replyTo = toPlain(body.reply_to);
    let reply: unknown;
    let noReply = false;
    try {
      const handler = this.#handlers.get(method);
      if (!handler) throw new PyException(`KeyError(${saferepr(method)})`);
      if (method === 'shutdown') noReply = true;
      reply = await handler(args);
    } catch (err) {
      reply = { error: err instanceof PyException ? err.repr : pyRepr(err) };
      if (!(err instanceof PyException)) this.#host.error(err);
    }
    const event: ControlEvent = { command: method, arguments: args, signer };
    if (!noReply && isRecord(replyTo) && typeof replyTo.exchange === 'string' && typeof replyTo.routing_key === 'string') {
      event.reply = reply;
      try {
        await this.#reply({ [this.hostname]: reply }, replyTo.exchange, replyTo.routing_key, body.ticket);
      } catch (err) {
        this.#host.error(err);
      }
    }
    this.#host.executed(event);
  }

  async #reply(data: unknown, exchange: string, routingKey: string, ticket: unknown): Promise<void> {
    const [payload] = await this.#security.serializeMany([data]);
    const message: EventMessage = {
      body: payload!,
      contentType: AUTH_CONTENT_TYPE,
      contentEncoding: AUTH_CONTENT_ENCODING,
      headers: { ticket: ticket ?? null, clock: this.#clock.forward() },
      exchange,
      routingKey,
      deliveryMode: 1,
    };
    await this.#transport.publishControlReplies!([message]);
  }

  /** `celery/worker/control.py`'s Panel, for this worker. */
  #panel(): Map<string, Handler> {
    const h = this.#host;
    const panel = new Map<string, Handler>();
    const add = (names: string[], fn: Handler): void => {
      for (const n of names) panel.set(n, fn);
    };
    add(['ping'], () => ok('pong'));
    add(['clock'], () => ({ clock: this.#clock.value }));
    add(['active', 'dump_active'], () => h.active());
    add(['reserved', 'dump_reserved'], () => h.reserved());
    add(['scheduled', 'dump_schedule'], () => h.scheduled());
    add(['revoked', 'dump_revoked'], () => [...h.revoked]);
    add(['stats'], () => {
      const s = h.stats();
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(s)) {
        out[k] = v;
        if (k === 'pid') out.clock = String(this.#clock.value);
      }
      return out;
    });
    add(['registered', 'dump_tasks'], (a) => {
      const items = a.taskinfoitems === undefined || a.taskinfoitems === null || (Array.isArray(a.taskinfoitems) && a.taskinfoitems.length === 0)
        ? ['exchange', 'routing_key', 'rate_limit']
        : maybeList(a.taskinfoitems).filter((i): i is string => typeof i === 'string' && !i.startsWith('_'));
      const names = h.taskNames().filter((n) => a.builtins === true || !n.startsWith('celery.')).sort();
      return names.map((name) => {
        const limit = items.includes('rate_limit') ? h.rateLimits.get(name) : null;
        return limit !== null && limit !== undefined ? `${name} [rate_limit=${String(limit)}]` : name;
      });
    });
    add(['conf', 'dump_conf'], () => h.conf());
    add(['query_task'], (a) => {
      const ids = new Set(maybeList(a.ids).map(String));
      const out: Record<string, unknown> = {};
      for (const r of h.active()) if (ids.has(r.id)) out[r.id] = ['active', r];
      for (const r of h.reserved()) if (ids.has(r.id)) out[r.id] = ['reserved', r];
      for (const s of h.scheduled()) if (ids.has(s.request.id)) out[s.request.id] = ['scheduled', s.request];
      return out;
    });
    add(['active_queues'], () =>
      h.queues().map((q) => ({
        name: q,
        exchange: { name: q, type: 'direct', arguments: null, durable: true, passive: false, auto_delete: false, delivery_mode: null, no_declare: false },
        routing_key: q,
        queue_arguments: null,
        binding_arguments: null,
        consumer_arguments: null,
        durable: true,
        exclusive: false,
        auto_delete: false,
        no_ack: false,
        alias: null,
        bindings: [],
        no_declare: null,
        expires: null,
        message_ttl: null,
        max_length: null,
        max_length_bytes: null,
        max_priority: null,
      })),
    );
    const revoke = async (idsArg: unknown, terminate: boolean, signal: unknown): Promise<unknown> => {
      const list = isRecord(idsArg) ? Object.keys(idsArg) : maybeList(idsArg);
      const ids = [...new Set(list.filter((x): x is string | number => typeof x === 'string' || typeof x === 'number').map(String))];
      const sig = terminate ? signum(signal) : 0;
      h.revoked.add(...ids);
      const known = await h.revoke(ids, terminate, sig);
      if (terminate) return ok(known.length === 0 ? 'terminate: tasks unknown' : `terminate: ${known.join(', ')}`);
      return ok(`tasks ${pySetRepr(ids)} flagged as revoked`);
    };
    add(['revoke'], (a) => revoke(a.task_id, pyTruthy(a.terminate), a.signal));
    add(['terminate'], (a) => revoke(a.task_id, true, a.signal));
    add(['rate_limit'], (a) => {
      const name = typeof a.task_name === 'string' ? a.task_name : String(a.task_name);
      const limit = a.rate_limit as string | number | null | undefined;
      try {
        rate(limit);
      } catch (err) {
        const e = err as Error & { pyRepr?: string };
        if (e.name === 'ValueError') return nok(`Invalid rate limit string: ${e.pyRepr ?? e.message}`);
        throw new PyException(e.pyRepr ?? `${e.name}(${saferepr(e.message)})`);
      }
      if (!h.taskNames().includes(name)) return nok('unknown task');
      h.rateLimits.set(name, limit ?? null);
      h.rateLimitChanged();
      return rate(limit) ? ok('new rate limit set successfully') : ok('rate limit disabled successfully');
    });
    add(['time_limit'], (a) => {
      const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : typeof v === 'string' && Number(v) > 0 ? Number(v) : null);
      if (!h.setTimeLimits(String(a.task_name), num(a.soft), num(a.hard))) return nok('unknown task');
      return ok('time limits set successfully');
    });
    add(['enable_events'], () => {
      const changed = h.taskEvents(true);
      if (changed === null) return nok('event dispatcher unavailable');
      return ok(changed ? 'task events enabled' : 'task events already enabled');
    });
    add(['disable_events'], () => {
      const changed = h.taskEvents(false);
      if (changed === null) return nok('event dispatcher unavailable');
      return ok(changed ? 'task events disabled' : 'task events already disabled');
    });
    // mingle's sync (celery/worker/consumer/mingle.py): a starting worker sends its revoked ids, gets ours.
    add(['hello'], (a) => {
      if (a.from_node === this.hostname) return null;
      const theirs = toPlain(a.revoked);
      const ids = Array.isArray(theirs) ? theirs : isRecord(theirs) ? Object.keys(theirs) : [];
      h.revoked.add(...ids.filter((x): x is string => typeof x === 'string'));
      return { revoked: [...h.revoked], clock: this.#clock.forward() };
    });
    add(['heartbeat'], () => {
      h.heartbeat();
      return null;
    });
    add(['shutdown'], () => {
      h.shutdown();
      return null;
    });
    return panel;
  }
}

/** Python's truth of a decoded value. */
function pyTruthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (v instanceof Map) return v.size > 0;
  if (isRecord(v)) return Object.keys(v).length > 0;
  return true;
}

/** `repr()` of an error thrown by a command, as Python would show an exception. */
function pyRepr(err: unknown): string {
  if (err instanceof Error) return `${err.name || 'Exception'}(${saferepr(err.message)})`;
  return `Exception(${saferepr(String(err))})`;
}
