/**
 * Celery's canvas (`celery/canvas.py`, Celery 5.7) on the signature dicts
 * that travel in task messages: what `Signature.apply_async`, `freeze`,
 * `_merge` and `clone`, `group.apply_async` (`_freeze_gid`, `_prepared`,
 * `_apply_tasks`), `_chain.run` (`prepare_steps`,
 * `_prepare_chain_from_options`) and `_chord.apply_async`/`_chord.run`
 * (`_freeze_group_tasks`, `_descend`, `_strip_chord_header_links`) do, turned
 * into task messages (`Celery.send_task` -> `./protocol.ts`) and the chord
 * sizes to set (`RedisBackend.set_chord_size`) before they are published.
 *
 * Shared by the client (`./canvas.ts`) and the worker. Supported signature
 * types: plain task signatures, `group`, `chain` and `chord`; anything else
 * (`xmap`, `xstarmap`, `chunks`, custom types) throws {@link CanvasError}.
 *
 * Where this differs from Celery, by necessity: a Python process sends a
 * signature of a task it has registered through `Task.apply_async`, which
 * adds the task's own defaults (`ignore_result`, routes, time limits...);
 * celery-sign knows no Python task, so it always takes Celery's path for an
 * unregistered task (`app.send_task(name, ...)`), as a Python process
 * without that task does: `ignore_result` is then `null` unless the
 * signature's options say otherwise. Options Celery would pass through to
 * the message properties (`properties.update(kwargs)`) are dropped.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { buildTaskMessage, REPR_MAXLEVELS, REPR_MAXSIZE, type TaskMessage, type TaskOptions } from './protocol.js';
import { saferepr } from './saferepr.js';

/**
 * `saferepr(args)` of a signature's args, which Celery holds as a tuple:
 * `(2, 2)`, `(4,)`, `()` (the list's repr with the tuple's brackets).
 */
function tupleRepr(args: readonly unknown[]): string {
  if (args.length === 0) return '()';
  const r = saferepr(args, REPR_MAXSIZE, REPR_MAXLEVELS);
  return '(' + r.slice(1, -1) + (args.length === 1 ? ',)' : ')');
}

/** A canvas that celery-sign cannot follow (malformed or unsupported signature). Code `ERR_CANVAS`. */
export class CanvasError extends Error {
  override readonly name = 'CanvasError';
  readonly code = 'ERR_CANVAS' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A Celery signature as it travels in a message (a `celery.canvas.Signature` dict). */
export interface SignatureDict {
  task: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  options: Record<string, unknown>;
  subtask_type: string | null;
  immutable: boolean;
  [extra: string]: unknown;
}

/** What applying a signature gives back: a task id, or a group of them. */
export type Applied = { kind: 'task'; id: string } | { kind: 'group'; id: string; results: Applied[] };

/** The task running now (Celery's `current_worker_task`): the default parent of what is sent. */
export interface ParentTask {
  id: string;
  rootId: string | null;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Map);
}

function plain(v: unknown): unknown {
  return v instanceof Map ? Object.fromEntries(v) : v;
}

/** A deep copy of plain objects, arrays and Maps (Celery's `deepcopy(options)`); other values are shared. */
export function copyTree<T>(v: T): T {
  if (Array.isArray(v)) return v.map((x) => copyTree(x)) as T;
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, copyTree(x)])) as T;
  if (isRecord(v) && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = copyTree(x);
    return out as T;
  }
  return v;
}

/**
 * Reads a signature dict (Celery's `Signature.from_dict`), checking its
 * shape: hostile input gives a {@link CanvasError}, never a crash.
 */
export function toSignature(value: unknown, where = 'signature'): SignatureDict {
  const d = plain(value);
  if (!isRecord(d)) throw new CanvasError(`${where} is not a signature dict`);
  const task = d.task;
  if (typeof task !== 'string' || task === '') throw new CanvasError(`${where} has no task name`);
  const args = d.args === undefined || d.args === null ? [] : d.args;
  if (!Array.isArray(args)) throw new CanvasError(`${where}: args must be a list`);
  const kwargs = d.kwargs === undefined || d.kwargs === null ? {} : plain(d.kwargs);
  if (!isRecord(kwargs)) throw new CanvasError(`${where}: kwargs must be a dict`);
  const options = d.options === undefined || d.options === null ? {} : plain(d.options);
  if (!isRecord(options)) throw new CanvasError(`${where}: options must be a dict`);
  const st = d.subtask_type ?? null;
  if (st !== null && typeof st !== 'string') throw new CanvasError(`${where}: subtask_type must be a string`);
  const sig: SignatureDict = { ...d, task, args, kwargs, options, subtask_type: st, immutable: d.immutable === true };
  if (st === 'group' || st === 'chain') {
    const tasks = plain(kwargs.tasks);
    if (!Array.isArray(tasks)) throw new CanvasError(`${where}: a ${st} needs kwargs.tasks (a list)`);
    sig.kwargs = { ...kwargs, tasks: tasks.map((t, i) => toSignature(t, `${where}.tasks[${i}]`)) };
  } else if (st === 'chord') {
    // _chord.__init__ keeps the header's tasks as a list (_maybe_group); freeze makes it a group.
    const header = plain(kwargs.header);
    let headerSig: SignatureDict | SignatureDict[];
    if (Array.isArray(header)) headerSig = header.map((t, i) => toSignature(t, `${where}.header[${i}]`));
    else {
      headerSig = toSignature(header, `${where}.header`);
      if (headerSig.subtask_type !== 'group') throw new CanvasError(`${where}: a chord header must be a group or a list`);
    }
    const body = kwargs.body === undefined || kwargs.body === null ? null : toSignature(kwargs.body, `${where}.body`);
    const inner = plain(kwargs.kwargs ?? {});
    sig.kwargs = { ...kwargs, kwargs: isRecord(inner) ? inner : {}, header: headerSig, body };
  } else if (st !== null) {
    throw new CanvasError(`${where}: celery-sign does not run ${JSON.stringify(st)} signatures (only tasks, group, chain, chord)`);
  }
  return sig;
}

/** A `celery.group` signature dict. */
export function groupDict(tasks: SignatureDict[], options: Record<string, unknown> = {}): SignatureDict {
  return { task: 'celery.group', args: [], kwargs: { tasks }, options, subtask_type: 'group', immutable: false };
}

/** A `celery.chain` signature dict. */
export function chainDict(tasks: SignatureDict[], options: Record<string, unknown> = {}): SignatureDict {
  return { task: 'celery.chain', args: [], kwargs: { tasks }, options, subtask_type: 'chain', immutable: false };
}

/** A `celery.chord` signature dict (`_chord.__init__`). */
export function chordDict(header: SignatureDict | SignatureDict[], body: SignatureDict | null, options: Record<string, unknown> = {}): SignatureDict {
  return {
    task: 'celery.chord',
    args: [],
    kwargs: { kwargs: {}, header, body },
    options,
    subtask_type: 'chord',
    immutable: false,
  };
}

function tasksOf(sig: SignatureDict): SignatureDict[] {
  return sig.kwargs.tasks as SignatureDict[];
}

/** The chord's header as a group: `if not isinstance(self.tasks, group): self.tasks = group(self.tasks)` (in place). */
function headerOf(sig: SignatureDict): SignatureDict {
  const h = sig.kwargs.header as SignatureDict | SignatureDict[];
  if (Array.isArray(h)) {
    const g = groupDict(h);
    sig.kwargs.header = g;
    return g;
  }
  return h;
}

function bodyOf(sig: SignatureDict): SignatureDict | null {
  return (sig.kwargs.body as SignatureDict | null) ?? null;
}

/** `maybe_list`. */
export function maybeList(v: unknown): unknown[] | null {
  if (v === undefined || v === null) return null;
  return Array.isArray(v) ? v : [v];
}

function dropNone(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null) out[k] = v;
  return out;
}

/** `Signature._merge`: partial args prepended, kwargs and options merged (not `group_id`, stamped headers). */
function merge(
  sig: SignatureDict,
  args: readonly unknown[],
  kwargs: Record<string, unknown>,
  options: Record<string, unknown> | null,
): [unknown[], Record<string, unknown>, Record<string, unknown>] {
  let newOptions = sig.options;
  if (options !== null) {
    const immutable = new Set(['group_id', 'stamped_headers']);
    const stamped = sig.options.stamped_headers;
    if (Array.isArray(stamped)) for (const s of stamped) if (typeof s === 'string') immutable.add(s);
    newOptions = { ...sig.options };
    for (const [k, v] of Object.entries(options)) if (!immutable.has(k) || !(k in sig.options)) newOptions[k] = v;
  }
  if (sig.immutable) return [sig.args, sig.kwargs, newOptions];
  return [
    args.length > 0 ? [...args, ...sig.args] : sig.args,
    Object.keys(kwargs).length > 0 ? { ...sig.kwargs, ...kwargs } : sig.kwargs,
    newOptions,
  ];
}

/** `Signature.clone` (and `chord.clone`, which copies the body too). */
export function cloneSig(
  sig: SignatureDict,
  args: readonly unknown[] = [],
  kwargs: Record<string, unknown> = {},
  opts: Record<string, unknown> = {},
): SignatureDict {
  const [a, k, o] =
    args.length > 0 || Object.keys(kwargs).length > 0 || Object.keys(opts).length > 0
      ? merge(sig, args, kwargs, opts)
      : [sig.args, sig.kwargs, sig.options];
  const out: SignatureDict = {
    task: sig.task,
    args: [...a],
    kwargs: { ...k },
    options: copyTree(o),
    subtask_type: sig.subtask_type,
    immutable: sig.immutable,
  };
  if (sig.subtask_type === 'chord') {
    const body = bodyOf(out);
    out.kwargs.body = body ? cloneSig(body) : null;
  }
  return out;
}

interface FreezeArgs {
  id?: string | null;
  groupId?: string | null;
  chord?: SignatureDict | null;
  rootId?: string | null;
  parentId?: string | null;
  groupIndex?: number | null;
}

/** `_chord._descend`: how many completions a signature contributes to a chord. */
function descend(sig: SignatureDict): number {
  if (sig.subtask_type === 'group') return tasksOf(sig).reduce((n, t) => n + descend(t), 0);
  if (sig.subtask_type === 'chain') {
    const ts = tasksOf(sig);
    for (let i = ts.length - 1; i >= 0; i--) {
      const n = descend(ts[i]!);
      if (n > 0) return n;
    }
    return 0;
  }
  if (sig.subtask_type === 'chord') {
    const b = bodyOf(sig);
    return b ? descend(b) : 0;
  }
  return 1;
}

/** `maybe_unroll_group`. */
function maybeUnrollGroup(sig: SignatureDict): SignatureDict {
  if (sig.subtask_type === 'group' && tasksOf(sig).length === 1) return tasksOf(sig)[0]!;
  return sig;
}

function isEmptyGroup(sig: SignatureDict): boolean {
  return sig.subtask_type === 'group' && tasksOf(sig).length === 0;
}

/** `_clear_chord_option`. */
function clearChordOption(sig: SignatureDict): void {
  delete sig.options.chord;
  if (sig.subtask_type === 'group') for (const t of tasksOf(sig)) clearChordOption(t);
  else if (sig.subtask_type === 'chain' && tasksOf(sig).length > 0) clearChordOption(tasksOf(sig).at(-1)!);
  else if (sig.subtask_type === 'chord' && bodyOf(sig)) clearChordOption(bodyOf(sig)!);
}

/** `_strip_chord_header_links`. */
function stripChordHeaderLinks(sig: SignatureDict): void {
  if (sig.subtask_type === 'chord') {
    clearChordOption(headerOf(sig));
    stripChordHeaderLinks(headerOf(sig));
    const b = bodyOf(sig);
    if (b) stripChordHeaderLinks(b);
  } else if (sig.subtask_type === 'group' || sig.subtask_type === 'chain') {
    for (const t of tasksOf(sig)) stripChordHeaderLinks(t);
  }
}

function appendToListOption(sig: SignatureDict, key: string, value: unknown): void {
  const cur = maybeList(sig.options[key]);
  sig.options[key] = cur ? [...cur, value] : [value];
}

/** `Signature.link_error` / `group.link_error` / `chord.link_error` (default: body only). */
function linkError(sig: SignatureDict, errback: SignatureDict): void {
  if (sig.subtask_type === 'group') for (const t of tasksOf(sig)) linkError(t, cloneSig(errback));
  else if (sig.subtask_type === 'chord') {
    const b = bodyOf(sig);
    if (b) linkError(b, errback);
  } else appendToListOption(sig, 'link_error', errback);
}

/** `Signature.link` / `group.link` (first task, immutable) / `chord.link` (body). */
function link(sig: SignatureDict, callback: SignatureDict): void {
  if (sig.subtask_type === 'group') {
    const first = tasksOf(sig)[0];
    if (first) link(first, { ...cloneSig(callback), immutable: true });
  } else if (sig.subtask_type === 'chord') {
    const b = bodyOf(sig);
    if (b) link(b, callback);
  } else if (sig.subtask_type === 'chain') {
    const last = tasksOf(sig).at(-1);
    if (last) link(last, callback);
  } else appendToListOption(sig, 'link', callback);
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/**
 * Applies signatures as Celery's canvas does and collects what that sends:
 * the task messages (not yet signed) and the chord sizes to set first.
 */
export class CanvasSender {
  /** The task messages, in Celery's publishing order. */
  readonly messages: TaskMessage[] = [];
  /** `set_chord_size(group_id, size)` calls, to make before the messages are published. */
  readonly chordSizes: { groupId: string; size: number }[] = [];
  readonly #replyTo: string;
  readonly #ignoreResult: boolean | null;
  readonly #parent: ParentTask | null;

  /**
   * @param replyTo The sender's `app.thread_oid` (`reply_to` of what it sends unless frozen with one).
   * @param parent The task running now, if any (Celery's `current_worker_task`).
   */
  constructor(replyTo: string, parent: ParentTask | null = null, ignoreResult: boolean | null = null) {
    this.#replyTo = replyTo;
    this.#parent = parent;
    this.#ignoreResult = ignoreResult;
  }

  /** `signature(d).apply_async(args, kwargs, **options)` for any supported type. */
  apply(sig: SignatureDict, args: readonly unknown[] = [], kwargs: Record<string, unknown> = {}, options: Record<string, unknown> = {}): Applied {
    switch (sig.subtask_type) {
      case null:
        return this.#applySignature(sig, args, kwargs, options);
      case 'group':
        return this.#applyGroup(sig, args, kwargs, options);
      case 'chain':
        return this.#applyChain(sig, args, kwargs, options);
      case 'chord':
        return this.#applyChord(sig, args, kwargs, options);
      default:
        throw new CanvasError(`celery-sign does not run ${JSON.stringify(sig.subtask_type)} signatures`);
    }
  }

  /** `Signature.freeze` and its subclasses' versions: ids assigned in place. */
  freeze(sig: SignatureDict, f: FreezeArgs = {}): Applied {
    if (sig.subtask_type === 'group') return this.#freezeGroup(sig, f);
    if (sig.subtask_type === 'chain') {
      const [, results] = this.#prepareSteps(sig.args, sig.kwargs, tasksOf(sig), f.rootId ?? null, f.parentId ?? null, null, f.id ?? null, f.groupId ?? null, f.chord ?? null, false, f.groupIndex ?? null);
      return results[0] ?? { kind: 'task', id: f.id ?? randomUUID() };
    }
    if (sig.subtask_type === 'chord') {
      const header = headerOf(sig);
      const body = bodyOf(sig);
      const headerRes = this.#freezeGroup(header, { parentId: f.parentId ?? null, rootId: f.rootId ?? null, chord: body });
      sig.options.task_id = headerRes.id;
      if (!body) return headerRes;
      return this.freeze(body, { id: f.id ?? null, rootId: f.rootId ?? null, chord: f.chord ?? null, groupId: f.groupId ?? null, groupIndex: f.groupIndex ?? null });
    }
    const opts = sig.options;
    let tid = str(opts.task_id);
    if (tid === null) {
      tid = f.id || randomUUID();
      opts.task_id = tid;
    }
    if (f.rootId) opts.root_id = f.rootId;
    if (f.parentId) opts.parent_id = f.parentId;
    if (!('reply_to' in opts)) opts.reply_to = this.#replyTo;
    if (f.groupId && !('group_id' in opts)) opts.group_id = f.groupId;
    if (f.chord) opts.chord = f.chord;
    if (f.groupIndex !== undefined && f.groupIndex !== null) opts.group_index = f.groupIndex;
    return { kind: 'task', id: tid };
  }

  #applySignature(sig: SignatureDict, args: readonly unknown[], kwargs: Record<string, unknown>, options: Record<string, unknown>): Applied {
    const opts = dropNone(options);
    const [a, k, o] =
      args.length > 0 || Object.keys(kwargs).length > 0 || Object.keys(opts).length > 0
        ? merge(sig, args, kwargs, opts)
        : [sig.args, sig.kwargs, sig.options];
    return { kind: 'task', id: this.sendTask(sig.task, a, k, o) };
  }

  /** `Celery.send_task(name, args, kwargs, **options)`: one message. Returns the task id. */
  sendTask(name: string, args: readonly unknown[], kwargs: Record<string, unknown>, o: Record<string, unknown>): string {
    let rootId = str(o.root_id);
    let parentId = str(o.parent_id);
    if ((!rootId || !parentId) && this.#parent) {
      rootId ??= this.#parent.rootId || this.#parent.id;
      parentId ??= this.#parent.id;
    }
    const exchange = isRecord(o.exchange) ? str(o.exchange.name) : str(o.exchange);
    const queue = isRecord(o.queue) ? str(o.queue.name) : str(o.queue);
    const t: TaskOptions = {
      ...(str(o.task_id) ? { id: o.task_id as string } : {}),
      ...(num(o.countdown) ? { countdown: o.countdown as number } : {}),
      ...(o.eta instanceof Date || typeof o.eta === 'string' ? { eta: o.eta } : {}),
      ...(o.expires instanceof Date || typeof o.expires === 'string' || num(o.expires) !== undefined ? { expires: o.expires as number | Date | string } : {}),
      ...(queue ? { queue } : {}),
      ...(exchange ? { exchange } : {}),
      ...(str(o.routing_key) ? { routingKey: o.routing_key as string } : {}),
      ...(Number.isInteger(o.priority) ? { priority: o.priority as number } : {}),
      ...(isRecord(o.headers) ? { headers: o.headers } : {}),
      ...(num(o.time_limit) !== undefined ? { timeLimit: o.time_limit as number } : {}),
      ...(num(o.soft_time_limit) !== undefined ? { softTimeLimit: o.soft_time_limit as number } : {}),
      ...(Number.isInteger(o.retries) ? { retries: o.retries as number } : {}),
      rootId,
      parentId,
      groupId: str(o.group_id),
      groupIndex: Number.isInteger(o.group_index) ? (o.group_index as number) : null,
      shadow: str(o.shadow),
      ignoreResult: typeof o.ignore_result === 'boolean' ? o.ignore_result : this.#ignoreResult,
      replyTo: str(o.reply_to) ?? this.#replyTo,
      argsrepr: typeof o.argsrepr === 'string' ? o.argsrepr : tupleRepr(args),
      ...(typeof o.kwargsrepr === 'string' ? { kwargsrepr: o.kwargsrepr } : {}),
      callbacks: maybeList(o.link),
      errbacks: maybeList(o.link_error),
      chain: Array.isArray(o.chain) ? o.chain : null,
      chord: o.chord ?? null,
      ...(Array.isArray(o.stamped_headers) ? { stampedHeaders: o.stamped_headers as string[], stamps: o } : {}),
      ...(Number.isInteger(o.replaced_task_nesting) ? { replacedTaskNesting: o.replaced_task_nesting as number } : {}),
      ...(o.delivery_mode === 1 || o.delivery_mode === 2 ? { deliveryMode: o.delivery_mode } : {}),
    };
    let message: TaskMessage;
    try {
      message = buildTaskMessage(name, args, kwargs, t);
    } catch (err) {
      throw new CanvasError(`cannot send ${JSON.stringify(name)}: ${(err as Error).message}`, { cause: err });
    }
    this.messages.push(message);
    return message.headers.id as string;
  }

  /** `group._freeze_group_tasks` (what `group.freeze` does). */
  #freezeGroup(sig: SignatureDict, f: FreezeArgs): Applied & { kind: 'group' } {
    const opts = sig.options;
    let gid = str(opts.task_id);
    if (gid === null) {
      gid = randomUUID();
      opts.task_id = gid;
    }
    if (f.groupId) opts.group_id = f.groupId;
    if (f.chord) opts.chord = f.chord;
    if (f.groupIndex !== undefined && f.groupIndex !== null) opts.group_index = f.groupIndex;
    if (!('root_id' in opts)) opts.root_id = f.rootId ?? null;
    if (!('parent_id' in opts)) opts.parent_id = f.parentId ?? null;
    const rootId = str(opts.root_id);
    const parentId = str(opts.parent_id);
    // _freeze_unroll: flatten nested groups (extendleft, as Celery), freeze each clone.
    const stack = [...tasksOf(sig)];
    const newTasks: SignatureDict[] = [];
    const results: Applied[] = [];
    let index = 0;
    while (stack.length > 0) {
      const task = cloneSig(stack.shift()!);
      if (task.subtask_type === 'group') {
        for (const t of tasksOf(task)) stack.unshift(t);
      } else if (task.subtask_type === 'chain' && tasksOf(task).length === 0) {
        continue;
      } else {
        newTasks.push(task);
        results.push(this.freeze(task, { groupId: f.groupId ?? null, chord: f.chord ?? null, rootId, parentId, groupIndex: index }));
        index++;
      }
    }
    sig.kwargs.tasks = newTasks;
    return { kind: 'group', id: gid, results };
  }

  /** `group.apply_async`. */
  #applyGroup(sig: SignatureDict, args: readonly unknown[], kwargs: Record<string, unknown>, options: Record<string, unknown>): Applied {
    if (options.link !== undefined && options.link !== null) throw new CanvasError('Cannot add link to group: use a chord');
    if (options.link_error !== undefined && options.link_error !== null) {
      throw new CanvasError('Cannot add link to group: do that on individual tasks');
    }
    if (tasksOf(sig).length === 0) return this.freeze(sig);
    // _freeze_gid
    const opts: Record<string, unknown> = { ...sig.options };
    for (const [k, v] of Object.entries(options)) if ((k !== 'group_id' && k !== 'stamped_headers') || !(k in sig.options)) opts[k] = v;
    const gid = str(opts.task_id) ?? randomUUID();
    delete opts.task_id;
    opts.group_id = gid;
    const rootId = str(opts.root_id);
    // _prepared
    const prepared: SignatureDict[] = [];
    const results: Applied[] = [];
    const prepare = (tasks: SignatureDict[]): void => {
      tasks.forEach((t, index) => {
        const task = cloneSig(t);
        if (task.subtask_type === 'group') prepare(tasksOf(task));
        else if (task.subtask_type === 'chain' && tasksOf(task).length === 0) return;
        else {
          results.push(this.freeze(task, { groupId: gid, rootId, groupIndex: index }));
          prepared.push(task);
        }
      });
    };
    prepare(tasksOf(sig));
    // _apply_tasks: chord is a parameter of its own; the rest goes to each task.
    const chordParam = (opts.chord as SignatureDict | null | undefined) ?? null;
    delete opts.chord;
    delete opts.add_to_parent;
    delete opts.group_index; // a parameter of _apply_tasks too: not passed on to the tasks
    let chordSize = 0;
    prepared.forEach((task, i) => {
      const chordObj = chordParam ?? (task.options.chord as SignatureDict | null | undefined) ?? null;
      chordSize += descend(task);
      if (chordObj !== null && i === prepared.length - 1) this.chordSizes.push({ groupId: gid, size: chordSize });
      this.apply(task, args, kwargs, { ...opts, chord: chordObj });
    });
    return { kind: 'group', id: gid, results };
  }

  /** `_chain.apply_async` -> `_chain.run`. */
  #applyChain(sig: SignatureDict, args: readonly unknown[], kwargs: Record<string, unknown>, options: Record<string, unknown>): Applied {
    const o: Record<string, unknown> = { ...sig.options, ...options };
    const take = (k: string): unknown => {
      const v = o[k];
      delete o[k];
      return v;
    };
    const groupId = str(take('group_id'));
    const chord = (take('chord') as SignatureDict | null | undefined) ?? null;
    const taskId = str(take('task_id'));
    const linkOpt = take('link');
    const linkErrorOpt = take('link_error');
    const rootId = str(take('root_id'));
    const parentId = str(take('parent_id'));
    const groupIndex = Number.isInteger(o.group_index) ? (o.group_index as number) : null;
    delete o.group_index;
    delete o.publisher;
    delete o.producer;
    const fullArgs = args.length > 0 && !sig.immutable ? [...args, ...sig.args] : sig.args;
    const [tasks, results] = this.#prepareSteps(fullArgs, kwargs, tasksOf(sig), rootId, parentId, linkErrorOpt, taskId, groupId, chord, true, groupIndex);
    if (results.length === 0) throw new CanvasError('an empty chain has nothing to run');
    const links = maybeList(linkOpt);
    if (links) for (const l of links) appendToListOption(tasks[0]!, 'link', l);
    const first = tasks.pop()!;
    // _prepare_chain_from_options (use_link is False under protocol 2)
    const chainOpts = { ...o, chain: Array.isArray(o.chain) ? [...(o.chain as unknown[]), ...tasks] : tasks };
    const r = this.apply(first, [], {}, chainOpts);
    return tasks.length === 0 ? r : results[0]!;
  }

  /** `_chain.prepare_steps`: the tasks, frozen, in REVERSE order (the next one is `pop()`), and their results. */
  #prepareSteps(
    args: readonly unknown[],
    kwargs: Record<string, unknown>,
    input: readonly SignatureDict[],
    rootId: string | null,
    parentId: string | null,
    linkErrorOpt: unknown,
    lastTaskId: string | null,
    groupId: string | null,
    chordBody: SignatureDict | null,
    clone: boolean,
    groupIndex: number | null,
  ): [SignatureDict[], Applied[]] {
    void parentId; // Celery takes it and does not use it here either
    const steps: SignatureDict[] = [...input];
    // Normalise the head (Issue #9772): splice nested chains, strip leading empty groups.
    let stripped: SignatureDict | null = null;
    while (steps.length > 0) {
      let head = steps[0]!;
      if (head.subtask_type === 'chain') {
        steps.shift();
        if (clone) head = cloneSig(head);
        steps.unshift(...tasksOf(head));
        continue;
      }
      if (head.subtask_type === 'group') {
        head = steps[0] = maybeUnrollGroup(head);
        if (steps.length > 1 && isEmptyGroup(head)) {
          stripped = steps.shift()!;
          continue;
        }
      }
      break;
    }
    if (stripped !== null && steps.length === 0) steps.push(stripped);

    const tasks: SignatureDict[] = [];
    const results: Applied[] = [];
    let prevTask: SignatureDict | null = null;
    let prevRes: Applied | null = null;
    let i = 0;
    while (steps.length > 0) {
      let task = steps.pop()!;
      const isFirst = steps.length === 0;
      const isLast = i === 0;
      if (task.subtask_type === 'group') {
        task = maybeUnrollGroup(task);
        if (isEmptyGroup(task) && (steps.length > 0 || prevTask)) continue;
      }
      if (clone && task.subtask_type === 'chord') {
        const b = bodyOf(task);
        if (b && b.subtask_type === 'chain' && tasksOf(b).length > 0 && tasksOf(b)[0]!.subtask_type !== 'group') {
          throw new CanvasError('celery-sign does not run a chord whose body is a chain inside a chain');
        }
      }
      if (clone) task = isFirst ? cloneSig(task, args, kwargs) : cloneSig(task);
      else if (isFirst) task.args = [...args, ...task.args];
      if (task.subtask_type === 'chain') {
        steps.push(...tasksOf(task));
        continue;
      }
      if (task.subtask_type === 'group' && prevTask) {
        // group(...) | s -> chord(group, s)
        tasks.pop();
        const bodyRes = results.pop()!;
        const opts: Record<string, unknown> = bodyRes.kind === 'task' ? { task_id: bodyRes.id } : {};
        if (rootId) opts.root_id = rootId;
        task = chordDict(tasksOf(task), prevTask, opts); // _maybe_group: the group's tasks
        prevTask = tasks.at(-1) ?? null;
        prevRes = results.at(-1) ?? null;
      }
      const res = isLast
        ? this.freeze(task, { id: lastTaskId, rootId, groupId, chord: chordBody, groupIndex })
        : this.freeze(task, { rootId });
      i++;
      const errbacks = maybeList(linkErrorOpt);
      if (errbacks) {
        for (const eb of errbacks) {
          const e = toSignature(eb, 'link_error');
          linkError(task, e);
          if (task.subtask_type === 'chord' && bodyOf(task)) linkError(bodyOf(task)!, e);
        }
      }
      tasks.push(task);
      results.push(res);
      prevTask = task;
      prevRes = res;
    }
    void prevRes;
    if (clone) for (const t of tasks) stripChordHeaderLinks(t);
    return [tasks, results];
  }

  /** `_chord.apply_async` -> `_chord.run`. */
  #applyChord(sig: SignatureDict, args: readonly unknown[], kwargs: Record<string, unknown>, options: Record<string, unknown>): Applied {
    const partialArgs = args.length > 0 && !sig.immutable ? [...args, ...sig.args] : sig.args;
    let body = (kwargs.body as SignatureDict | undefined) ?? bodyOf(sig);
    if (!body) throw new CanvasError('a chord needs a body');
    const innerKwargs = { ...((sig.kwargs.kwargs as Record<string, unknown>) ?? {}), ...kwargs };
    delete innerKwargs.body;
    const opts = { ...options };
    const headerDelay: Record<string, unknown> = {};
    for (const k of ['countdown', 'eta']) {
      if (opts[k] !== undefined && opts[k] !== null) headerDelay[k] = opts[k];
      delete opts[k];
    }
    const callbacks: Record<string, unknown> = {};
    for (const k of ['link', 'link_error']) {
      if (k in opts) {
        callbacks[k] = opts[k];
        delete opts[k];
      }
    }
    const bodyOptions = { ...opts };
    delete bodyOptions.parent_id;
    body = cloneSig(body, [], {}, bodyOptions);
    // tasks = self.tasks: a group is cloned; a list becomes group(tasks, task_id=self.options['task_id'] or uuid())
    const rawHeader = sig.kwargs.header as SignatureDict | SignatureDict[];
    const header = Array.isArray(rawHeader)
      ? groupDict([...rawHeader], { task_id: str(sig.options.task_id) ?? randomUUID() })
      : cloneSig(rawHeader);
    const merged: Record<string, unknown> = { ...sig.options, ...opts, ...callbacks };
    delete merged.countdown;
    delete merged.eta;
    const optionTaskId = str(merged.task_id);
    delete merged.task_id;
    const taskId = optionTaskId;
    // run()
    const groupId = str(header.options.task_id) ?? randomUUID();
    const rootId = str(body.options.root_id);
    const runOptions: Record<string, unknown> = { ...sig.options, ...merged };
    for (const k of ['countdown', 'eta']) {
      if (!(k in headerDelay) && runOptions[k] !== undefined && runOptions[k] !== null) headerDelay[k] = runOptions[k];
      delete runOptions[k];
    }
    if (Object.keys(runOptions).length > 0) {
      delete runOptions.task_id;
      // _add_body_callbacks
      const cbs = maybeList(runOptions.link) ?? [];
      const ebs = maybeList(runOptions.link_error) ?? [];
      delete runOptions.link;
      delete runOptions.link_error;
      for (const c of cbs) link(body, toSignature(c, 'link'));
      for (const e of ebs) {
        if (body.subtask_type === 'group') linkError(body, toSignature(e, 'link_error'));
        else appendToListOption(body, 'link_error', e);
      }
      for (const [k, v] of Object.entries(runOptions)) if (k !== 'parent_id') body.options[k] = v;
    }
    if (body.subtask_type === 'chain') throw new CanvasError('celery-sign does not run a chord whose body is a chain');
    const bodyRes = this.freeze(body, { id: taskId ?? randomUUID(), groupId, rootId });
    stripChordHeaderLinks(body);
    delete runOptions.chain;
    delete runOptions.chord;
    delete runOptions.task_id;
    header.options.task_id = groupId;
    this.#freezeGroup(header, { groupId, chord: body, rootId });
    if (tasksOf(header).length > 0) {
      this.#applyGroup(header, partialArgs, innerKwargs, { ...runOptions, ...headerDelay, task_id: groupId });
    } else {
      this.apply(body, [[]]);
    }
    return bodyRes;
  }
}
