/**
 * Celery's canvas, both ways.
 *
 * **Client**: {@link signature}, {@link chain}, {@link group} and
 * {@link chord} build the signature dicts of `celery/canvas.py`;
 * `client.send(canvas)` (or `canvas.applyAsync()` on a signature made with
 * `client.signature(...)`) sends the messages Celery's canvas sends: ids
 * frozen into `options.task_id`, the rest of a chain in the first task's
 * embed `chain` (in reverse order), `group`/`group_index` headers, the chord
 * body in each header task's embed `chord`, and the chord size set in Redis
 * first (`set_chord_size`, the chord-unlock-free path).
 *
 * **Worker** ({@link CanvasRunner}, used by `./worker.ts`), after a task ran:
 * - on success, Celery's `build_tracer` -> `_dispatch_callbacks_and_chain`
 *   (`celery/app/trace.py`): each callback (`link`) applied with the result
 *   prepended to its args (one callback alone; several as one
 *   `group(callbacks)`, groups among them each on their own), then
 *   `signature(chain[-1]).apply_async((retval,), chain=chain[:-1])`, all with
 *   `parent_id` = this task and `root_id` carried on; published (signed)
 *   before the result is stored; then `mark_as_done` ->
 *   `on_chord_part_return` when the task is a chord part;
 * - on failure, `BaseBackend.mark_as_failure` (`celery/backends/base.py`):
 *   result stored, `on_chord_part_return`, `_fail_chain` (every task of the
 *   rest of the chain that has an id gets the same FAILURE stored, chord
 *   members among them count their part), then `_call_task_errbacks`.
 *   Celery calls an errback in-process with `(request, exc, traceback)` when
 *   its task is registered in that worker and takes more than one argument
 *   (a "new-style" errback); every other errback (and any errback whose task
 *   the worker does not have: `NotRegistered`) is sent as a task, in
 *   `group(errbacks).apply_async((task_id,), parent_id=task_id, root_id=...)`.
 *   A Node worker has no Python task functions, so it always takes the second
 *   path: every errback is sent as a task with the failed task's id as its
 *   first argument (a Python worker with a new-style errback task
 *   registered would have called it in-process instead);
 * - chords: `RedisBackend.on_chord_part_return` (`celery/backends/redis.py`,
 *   Celery 5.7): the part recorded by the same Lua script (`.j` zset, or list
 *   with `result_chord_ordered: false`, `.t`, `.s`, `.d`, `.c` claim), and
 *   the worker that completes the chord and wins the claim joins the parts in
 *   header order, extends the claim, sends the body with the list of results
 *   (`callback.delay(resl)`, whose parent is the finishing task) and cleans
 *   up. A failed part makes a `ChordError("Dependency <id> raised <repr>")`
 *   stored for the body and its errbacks sent (`chord_error_from_stack`).
 *
 * Not followed (reported as {@link CanvasError}, the task then stored as a
 * FAILURE as Celery stores an internal error of its tracer): signature
 * types other than task, group, chain and chord; a chord body that is a
 * chain; a chord header saved as a GroupResult (nested groups in a header).
 * A chord whose body is a group gets the ChordError stored for each of its
 * tasks, without their errbacks (Celery's `_handle_group_chord_error` sends those too).
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { dumps as kombuDumps } from '../json/dumps.js';
import { loads as kombuLoads } from '../json/loads.js';
import type { SecureSerializer } from '../serializer.js';
import {
  CanvasError,
  CanvasSender,
  chainDict,
  chordDict,
  groupDict,
  toSignature,
  type Applied,
  type SignatureDict,
} from './canvas-engine.js';
import type { TaskEmbed } from './protocol.js';
import { buildMeta, encodeMetas, PROPAGATE_STATES, type ResultMeta, type ResultSerializer } from './results.js';
import { saferepr } from './saferepr.js';
import type { SerializedException } from './errors.js';
import type { ResultBackend } from './transport.js';
import type { AsyncResult, GroupResult } from './client.js';

export { CanvasError };
export type { SignatureDict };

/** Celery's `apply_async` options, as Celery names them (`task_id`, `queue`, `countdown`, `link`...). */
export type SignatureOptions = Record<string, unknown>;

/** What can send a canvas: a client (see `CeleryClient.send`). */
export interface CanvasSenderHost {
  /** Sends a canvas; resolves with its result handle. */
  send(canvas: Canvas, options?: SignatureOptions): Promise<AsyncResult | GroupResult>;
}

/** The common shape of {@link Signature}, {@link Chain}, {@link Group}, {@link Chord}: a Celery signature. */
export abstract class Canvas {
  /** @internal */
  host: CanvasSenderHost | undefined;
  /** The options of this signature (Celery's `sig.options`), snake_case as Celery's. */
  abstract readonly options: SignatureOptions;
  /** The signature dict as Celery serializes it (what goes into messages). */
  abstract toDict(): SignatureDict;
  /** `JSON.stringify` gives the dict. */
  toJSON(): SignatureDict {
    return this.toDict();
  }
  /** Sets options (Celery's `sig.set(**options)`, `immutable` included); returns `this`. */
  set(options: SignatureOptions): this {
    const { immutable, ...rest } = options;
    if (typeof immutable === 'boolean' && this instanceof Signature) this.immutable = immutable;
    Object.assign(this.options, rest);
    return this;
  }
  /**
   * Sends it with the client it was made with (`client.signature(...)`, or a
   * chain/group/chord of such signatures), as Celery's `apply_async`.
   */
  async applyAsync(options?: SignatureOptions): Promise<AsyncResult | GroupResult> {
    const host = this.host;
    if (!host) throw new CanvasError('This signature has no client: use client.send(canvas) or client.signature(...)');
    return host.send(this, options);
  }
}

/** Options as they travel: a {@link Canvas} in them (`link`, `link_error`...) becomes its dict. */
export function optionsDict(options: SignatureOptions): Record<string, unknown> {
  const conv = (v: unknown): unknown => (v instanceof Canvas ? v.toDict() : Array.isArray(v) ? v.map(conv) : v);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) out[k] = conv(v);
  return out;
}

function hostOf(items: readonly Canvas[]): CanvasSenderHost | undefined {
  for (const c of items) if (c.host) return c.host;
  return undefined;
}

/** A task signature (Celery's `signature(name, args, kwargs, options)`, `add.s(...)`). */
export class Signature extends Canvas {
  readonly task: string;
  readonly args: unknown[];
  readonly kwargs: Record<string, unknown>;
  readonly options: SignatureOptions;
  /** An immutable signature (`add.si(...)`) does not take the parent's result. */
  immutable: boolean;

  constructor(task: string, args: readonly unknown[] = [], kwargs: Record<string, unknown> = {}, options: SignatureOptions = {}, immutable = false) {
    super();
    if (typeof task !== 'string' || task === '') throw new TypeError('task name must be a non-empty string');
    if (!Array.isArray(args)) throw new TypeError('args must be an array');
    this.task = task;
    this.args = [...args];
    this.kwargs = { ...kwargs };
    this.options = { ...options };
    this.immutable = immutable;
  }

  toDict(): SignatureDict {
    return { task: this.task, args: [...this.args], kwargs: { ...this.kwargs }, options: optionsDict(this.options), subtask_type: null, immutable: this.immutable };
  }

  /** Celery's `sig.link(callback)`: applied with this task's result when it succeeds. */
  link(callback: Canvas): this {
    appendOption(this.options, 'link', callback.toDict());
    return this;
  }

  /** Celery's `sig.link_error(errback)`: sent with this task's id when it fails. */
  linkError(errback: Canvas): this {
    appendOption(this.options, 'link_error', errback.toDict());
    return this;
  }
}

function appendOption(options: SignatureOptions, key: string, value: unknown): void {
  const cur = options[key];
  options[key] = cur === undefined || cur === null ? [value] : Array.isArray(cur) ? [...cur, value] : [cur, value];
}

/** Celery's `chain(...)`: each task gets the previous one's result. */
export class Chain extends Canvas {
  readonly tasks: Canvas[];
  readonly options: SignatureOptions = {};
  constructor(tasks: readonly Canvas[], options: SignatureOptions = {}) {
    super();
    this.tasks = [...tasks];
    Object.assign(this.options, options);
    this.host = hostOf(this.tasks);
  }
  toDict(): SignatureDict {
    return chainDict(this.tasks.map((t) => t.toDict()), optionsDict(this.options));
  }
}

/** Celery's `group(...)`: tasks run in parallel. */
export class Group extends Canvas {
  readonly tasks: Canvas[];
  readonly options: SignatureOptions = {};
  constructor(tasks: readonly Canvas[], options: SignatureOptions = {}) {
    super();
    this.tasks = [...tasks];
    Object.assign(this.options, options);
    this.host = hostOf(this.tasks);
  }
  toDict(): SignatureDict {
    return groupDict(this.tasks.map((t) => t.toDict()), optionsDict(this.options));
  }
}

/** Celery's `chord(header, body)`: the body gets the list of the header's results, in order. */
export class Chord extends Canvas {
  /** The header (a group; the chord's `task_id` option names the group, as in Celery). */
  readonly header: Group;
  readonly body: Canvas;
  readonly options: SignatureOptions = {};
  constructor(header: readonly Canvas[] | Group, body: Canvas, options: SignatureOptions = {}) {
    super();
    this.header = header instanceof Group ? header : new Group(header);
    this.body = body;
    Object.assign(this.options, options);
    this.host = hostOf([...this.header.tasks, body]);
  }
  /** As `_chord.__init__` keeps it: the header as a list of its tasks (a header group's own options are dropped, as Celery drops them). */
  toDict(): SignatureDict {
    return chordDict(this.header.toDict().kwargs.tasks as SignatureDict[], this.body.toDict(), optionsDict(this.options));
  }
}

/** A task signature: `signature('tasks.add', [2, 2])` is Celery's `signature('tasks.add', args=(2, 2))`. */
export function signature(task: string, args?: readonly unknown[], kwargs?: Record<string, unknown>, options?: SignatureOptions): Signature {
  return new Signature(task, args, kwargs, options);
}

/** Celery's `chain(a, b, c)` (`a | b | c`). */
export function chain(...tasks: Canvas[]): Chain {
  return new Chain(tasks);
}

/** Celery's `group(a, b, c)`. */
export function group(...tasks: Canvas[]): Group {
  return new Group(tasks);
}

/** Celery's `chord(header, body)`; the header a list or a {@link Group}. */
export function chord(header: readonly Canvas[] | Group, body: Canvas): Chord {
  return new Chord(header, body);
}

/**
 * Turns a canvas into the messages Celery's `apply_async` sends.
 * @internal
 */
export function planCanvas(canvas: Canvas, replyTo: string, options: SignatureOptions = {}, ignoreResult: boolean | null = null): { sender: CanvasSender; applied: Applied } {
  const sig = toSignature(canvas.toDict());
  const sender = new CanvasSender(replyTo, null, ignoreResult);
  const applied = sender.apply(sig, [], {}, optionsDict(options));
  return { sender, applied };
}

// ---------------------------------------------------------------------------
// Worker side

/** The request fields the worker's canvas steps read (Celery's `task.request`). */
export interface CanvasRequest {
  id: string;
  rootId: string | null;
  group: string | null;
  groupIndex: number | null;
  embed: TaskEmbed;
}

/** Whether a message carries a canvas (callbacks, errbacks, chain or chord). */
export function hasCanvas(embed: TaskEmbed): boolean {
  const nonEmpty = (v: unknown): boolean => Array.isArray(v) ? v.length > 0 : v !== null && v !== undefined;
  return nonEmpty(embed.callbacks) || nonEmpty(embed.errbacks) || nonEmpty(embed.chain) || nonEmpty(embed.chord);
}

function signedList(v: unknown, what: string): SignatureDict[] {
  if (v === null || v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x, i) => toSignature(x, `${what}[${i}]`));
}

/** What the worker does around storing a result. */
export interface CanvasHooks {
  /** Signs and publishes task messages. */
  publish(sender: CanvasSender): Promise<void>;
  /** Reports trouble that is not the task's (an `'error'` event). */
  error(err: unknown): void;
}

/** Python's `repr` of a stored exception: `ValueError('boom')`. */
function excRepr(exc: unknown): string {
  const e = exc as Partial<SerializedException> | null;
  const type = e && typeof e.exc_type === 'string' ? e.exc_type : 'Exception';
  const raw = e?.exc_message;
  const args = Array.isArray(raw) ? raw : [raw];
  try {
    return `${type}(${args.map((a) => saferepr(a, 1024)).join(', ')})`;
  } catch {
    return `${type}(...)`;
  }
}

function chordError(message: string): SerializedException {
  return { exc_type: 'ChordError', exc_message: [message], exc_module: 'celery.exceptions' };
}

/**
 * The worker's canvas steps (Celery's tracer and backend, see the module
 * comment). One per worker.
 */
export class CanvasRunner {
  readonly #replyTo: string;
  readonly #security: SecureSerializer;
  readonly #serializer: ResultSerializer;
  readonly #backend: () => ResultBackend | undefined;
  readonly #hooks: CanvasHooks;

  /**
   * @param replyTo The worker's `thread_oid` (`reply_to` of what it sends unfrozen).
   * @param backend The worker's result backend (after start), or `undefined`.
   */
  constructor(replyTo: string, security: SecureSerializer, serializer: ResultSerializer, backend: () => ResultBackend | undefined, hooks: CanvasHooks) {
    this.#replyTo = replyTo;
    this.#security = security;
    this.#serializer = serializer;
    this.#backend = backend;
    this.#hooks = hooks;
  }

  #sender(req: CanvasRequest): CanvasSender {
    return new CanvasSender(this.#replyTo, { id: req.id, rootId: req.rootId });
  }

  /**
   * `_dispatch_callbacks_and_chain(retval, callbacks, chain, parent_id=id, root_id=...)`:
   * the messages to publish before the result is stored.
   * @throws CanvasError for a canvas that cannot be followed.
   */
  onSuccess(req: CanvasRequest, retval: unknown): CanvasSender | null {
    const callbacks = signedList(req.embed.callbacks, 'callbacks');
    const chainList = req.embed.chain;
    if (chainList !== null && !Array.isArray(chainList)) throw new CanvasError('chain must be a list');
    if (callbacks.length === 0 && (!chainList || chainList.length === 0)) return null;
    const sender = this.#sender(req);
    const rootId = req.rootId || req.id;
    // priority=None: task_inherit_parent_priority is off by default (a chord keeps the None in its body's options).
    const opts = { parent_id: req.id, root_id: rootId, priority: null };
    if (callbacks.length > 1) {
      const sigs: SignatureDict[] = [];
      for (const s of callbacks) {
        if (s.subtask_type === 'group') sender.apply(s, [retval], {}, opts);
        else sigs.push(s);
      }
      if (sigs.length > 0) sender.apply(groupDict(sigs), [retval], {}, opts);
    } else if (callbacks.length === 1) {
      sender.apply(callbacks[0]!, [retval], {}, opts);
    }
    if (chainList && chainList.length > 0) {
      const next = toSignature(chainList.at(-1), 'chain[-1]');
      sender.apply(next, [retval], {}, { ...opts, chain: chainList.slice(0, -1) });
    }
    this.#checkChords(sender);
    return sender;
  }

  #checkChords(sender: CanvasSender): void {
    if (sender.chordSizes.length > 0 && !this.#backend()?.setChordSize) {
      throw new CanvasError('Starting chords requires a result backend that counts chords (Redis)');
    }
  }

  /** `mark_as_revoked`'s `on_chord_part_return(request, REVOKED, exc)` (an expired task). */
  async afterRevoked(req: CanvasRequest, exc: SerializedException): Promise<void> {
    if (req.embed.chord !== null && req.embed.chord !== undefined) await this.#chordPart(req, 'REVOKED', exc);
  }

  /** `mark_as_done`'s `on_chord_part_return(request, SUCCESS, retval)`. */
  async afterSuccess(req: CanvasRequest, retval: unknown): Promise<void> {
    if (req.embed.chord !== null && req.embed.chord !== undefined) await this.#chordPart(req, 'SUCCESS', retval);
  }

  /**
   * `mark_as_failure` after the store: `on_chord_part_return`, `_fail_chain`,
   * `_call_task_errbacks`.
   */
  async afterFailure(req: CanvasRequest, exc: SerializedException, traceback: string | null): Promise<void> {
    if (req.embed.chord !== null && req.embed.chord !== undefined) await this.#chordPart(req, 'FAILURE', exc);
    await this.#failChain(req.embed.chain, exc, traceback);
    const errbacks = signedList(req.embed.errbacks, 'errbacks');
    if (errbacks.length > 0) await this.#callErrbacks(req.id, req.rootId, errbacks);
  }

  /** `_call_task_errbacks`, old-style: `group(errbacks).apply_async((task_id,), parent_id=task_id, root_id=root_id)`. */
  async #callErrbacks(taskId: string, rootId: string | null, errbacks: SignatureDict[]): Promise<void> {
    const sender = new CanvasSender(this.#replyTo, { id: taskId, rootId });
    sender.apply(groupDict(errbacks), [taskId], {}, { parent_id: taskId, root_id: rootId || taskId });
    this.#checkChords(sender);
    await this.#publishWithSizes(sender);
  }

  async #publishWithSizes(sender: CanvasSender): Promise<void> {
    const backend = this.#backend();
    for (const { groupId, size } of sender.chordSizes) await backend!.setChordSize!(groupId, size);
    await this.#hooks.publish(sender);
  }

  /** Publishes what {@link onSuccess} planned: chord sizes first, then the messages. */
  publishPlanned(sender: CanvasSender): Promise<void> {
    return this.#publishWithSizes(sender);
  }

  /** `store_result`; `replyTo`: the request's `reply_to` (where `rpc://` sends it; the correlation id is the task id). */
  async #store(metas: ResultMeta[], replyTo: string | null = null): Promise<void> {
    const backend = this.#backend();
    if (!backend || metas.length === 0) return;
    const values = await encodeMetas(metas, this.#serializer, this.#security);
    await backend.store(
      metas.map((m, i) => ({ taskId: m.task_id, value: values[i]!, ...(replyTo ? { replyTo, correlationId: m.task_id } : {}) })),
    );
  }

  async #state(id: string): Promise<string | null> {
    const backend = this.#backend();
    if (!backend) return null;
    const v = await backend.get(id);
    if (v === null) return null;
    try {
      const m = (await this.#decode(v)) as Record<string, unknown> | null;
      return m && typeof m.status === 'string' ? m.status : null;
    } catch {
      return null;
    }
  }

  async #encode(value: unknown): Promise<string> {
    if (this.#serializer === 'auth') return this.#security.serializeAsync(value);
    return kombuDumps(value);
  }

  async #decode(value: string): Promise<unknown> {
    const v = this.#serializer === 'auth' ? await this.#security.deserializeAsync(value) : kombuLoads(value);
    return v instanceof Map ? Object.fromEntries(v) : v;
  }

  /** `_fail_chain`: the rest of a failed chain gets the failure stored (and chord parts counted). */
  async #failChain(chainList: unknown, exc: SerializedException, traceback: string | null): Promise<void> {
    if (!Array.isArray(chainList)) return;
    const elems: unknown[] = [...chainList];
    while (elems.length > 0) {
      let sig: SignatureDict;
      try {
        sig = toSignature(elems.shift(), 'chain element');
      } catch (err) {
        this.#hooks.error(err);
        continue;
      }
      const o = sig.options;
      const id = typeof o.task_id === 'string' ? o.task_id : null;
      const group = typeof o.group_id === 'string' ? o.group_id : null;
      const parentId = typeof o.parent_id === 'string' ? o.parent_id : null;
      const alreadyFailed = 'chord' in o && id !== null && PROPAGATE_STATES.has((await this.#state(id)) ?? '');
      if (id !== null) {
        await this.#store([buildMeta(id, 'FAILURE', exc, traceback, { group, parentId })], typeof o.reply_to === 'string' ? o.reply_to : null);
      }
      if ('chord' in o && !alreadyFailed && id !== null) {
        await this.#chordPart(
          {
            id,
            rootId: typeof o.root_id === 'string' ? o.root_id : null,
            group,
            groupIndex: Number.isInteger(o.group_index) ? (o.group_index as number) : null,
            embed: { callbacks: null, errbacks: null, chain: null, chord: o.chord },
          },
          'FAILURE',
          exc,
        );
      }
      if (sig.subtask_type === 'chord') {
        const body = (sig.kwargs as { body?: unknown }).body;
        if (body !== null && body !== undefined) elems.push(body);
      }
    }
  }

  /** `RedisBackend.on_chord_part_return(request, state, result)`. */
  async #chordPart(req: CanvasRequest, state: 'SUCCESS' | 'FAILURE' | 'REVOKED', result: unknown): Promise<void> {
    const gid = req.group;
    if (!gid || !req.id) return;
    const backend = this.#backend();
    if (!backend?.chordPartReturn) {
      this.#hooks.error(new CanvasError(`Task ${req.id} is a part of chord ${gid}, and the worker has no result backend that counts chords (Redis)`));
      return;
    }
    const value = await this.#encode([1, req.id, state, result]);
    const join = await backend.chordPartReturn({ groupId: gid, taskId: req.id, groupIndex: req.groupIndex, value });
    if (!join) return;
    let callback: SignatureDict;
    try {
      callback = toSignature(req.embed.chord, 'chord');
    } catch (err) {
      this.#hooks.error(err);
      await join.dropSize();
      return;
    }
    let resl: unknown[];
    try {
      if (join.values === null) {
        throw new CanvasErrorWithExc(chordError(`Join error: celery-sign does not join chord ${gid}: its header was saved as a GroupResult (nested groups)`));
      }
      resl = [];
      for (const v of join.values) {
        const tup = await this.#decode(v);
        if (!Array.isArray(tup) || tup.length < 4) throw new CanvasErrorWithExc(chordError(`Join error: malformed chord part in ${gid}`));
        const [, tid, st, retval] = tup as [unknown, unknown, unknown, unknown];
        if (PROPAGATE_STATES.has(String(st))) {
          throw new CanvasErrorWithExc(chordError(`Dependency ${String(tid)} raised ${excRepr(retval)}`));
        }
        resl.push(retval);
      }
    } catch (err) {
      const exc = err instanceof CanvasErrorWithExc ? err.exc : chordError(`Join error: ${String((err as Error)?.message ?? err)}`);
      try {
        await this.#chordErrorFromStack(callback, exc);
      } finally {
        await join.dropSize();
      }
      return;
    }
    if (!(await join.extendClaim())) {
      this.#hooks.error(new CanvasError(`Chord callback for ${JSON.stringify(gid)} not published: dispatch claim is no longer owned by this worker`));
      return;
    }
    try {
      // callback.delay(resl): sent from within the finishing task (its parent).
      const sender = this.#sender(req);
      sender.apply(callback, [resl]);
      this.#checkChords(sender);
      await this.#publishWithSizes(sender);
    } catch (err) {
      this.#hooks.error(err);
      await this.#chordErrorFromStack(callback, chordError(`Callback error: ${String((err as Error)?.message ?? err)}`));
    } finally {
      const cleaned = await join.cleanup();
      if (!cleaned) this.#hooks.error(new CanvasError(`Chord callback claim for ${JSON.stringify(gid)} was lost before cleanup; chord data was left for expiry`));
    }
  }

  /** `chord_error_from_stack(callback, exc)`. */
  async #chordErrorFromStack(callback: SignatureDict, exc: SerializedException): Promise<void> {
    if (callback.subtask_type === 'group') {
      const tasks = (callback.kwargs as { tasks?: SignatureDict[] }).tasks ?? [];
      const metas = tasks
        .map((t) => t.options.task_id)
        .filter((id): id is string => typeof id === 'string')
        .map((id) => buildMeta(id, 'FAILURE', exc, null, {}));
      await this.#store(metas);
      await this.#failChain(callback.options.chain, exc, null);
      return;
    }
    let callbackId = typeof callback.options.task_id === 'string' ? callback.options.task_id : null;
    if (!callbackId) callbackId = callback.options.task_id = randomUUID();
    const errbacks = signedList(callback.options.link_error, 'link_error');
    if (errbacks.length > 0) {
      try {
        await this.#callErrbacks(callbackId, null, errbacks);
      } catch (err) {
        this.#hooks.error(err);
      }
    }
    await this.#store([buildMeta(callbackId, 'FAILURE', exc, null, {})]);
    await this.#failChain(callback.options.chain, exc, null);
  }
}

class CanvasErrorWithExc extends Error {
  constructor(readonly exc: SerializedException) {
    super(String((exc.exc_message as unknown[])[0]));
  }
}

