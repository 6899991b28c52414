/**
 * Batches of the `node:crypto` fallback, off the event loop: a pool of
 * `worker_threads` (`./worker.ts`), the fallback's counterpart of the core's
 * rayon pool.
 *
 * Why worker threads and not the callback form of `crypto.verify` (the libuv
 * threadpool): measured on the 2-core development machine, 4096 x 512 B JSON
 * bodies, RSA-2048/SHA-256, the same envelope code in both, the bodies
 * decoded on the main thread as the facade does (a same-run prototype, three
 * rounds each, interleaved; the machine shared with other work, so the
 * quietest round is the telling one):
 *   - callback form, every item in flight (UV_THREADPOOL_SIZE 4): 54,600/s
 *     (17,800 and 22,200 in busier rounds)
 *   - worker_threads, one per core, chunks of 256 pipelined:      57,700/s
 *     (19,700 and 30,300)
 *   - worker_threads, the whole batch split once across them:     58,700/s
 * Beyond the small lead, the workers also take the envelope's base64 and
 * parsing off the event loop (the callback form can only move the RSA
 * operation), and they leave the libuv threadpool to fs and dns instead of
 * queueing 4096 jobs in front of them. Through the facade, `npm run bench --
 * --quick --only cs-many,cs-js,node-cb,node-pool`, 17 runs on the shared
 * machine: deserializeMany of 4096 on this fallback 25,300-60,400/s (median
 * 51,300), node:crypto's callback form 32,000-64,400/s (52,900), the bench's
 * pool 26,500-54,900/s (48,500), native 105,200-175,600/s (140,100); the
 * fallback vs the best of the two node:crypto peers of the same run
 * 0.72x-1.23x, median 0.88x. serializeMany 3,460-7,310/s (6,940), callback
 * form 7,010, pool 7,040, native 7,660 (medians).
 *
 * All three are bound by `crypto.verify` (23-25 us of CPU an item here), so
 * the fallback gets ahead only by spending less CPU on the rest. Session 6
 * cut it: base64 by Node's native decoder where that is proven strict
 * (`decodeStrictFast`; openUnverified 2.7 -> 1.9 us a payload in one thread),
 * signatures on an unrestricted id-RSASSA-PSS key (no padding/salt options
 * set per call: 24.5 -> 23.8 us), a part's strings made once, unzeroed part
 * buffers, and parts of up to 128 items (half the round trips: 4-5% of the
 * CPU). CPU an item, deserializeMany of 4096 x 512 B, this fallback, the
 * bench's pool and the callback form interleaved batch by batch in one
 * process (6 runs of 20-24 rounds, load 2.4-4.2): this fallback 38.0-48.4 us
 * (before: 40.5-52.0), the pool 41.8-48.2, the callback form 40.6-48.7; the
 * fallback's CPU against the best peer's of the same run 0.89x-1.03x, median
 * 0.90x (before 0.95x-1.08x, median 1.04x). Rates on that loaded machine
 * followed the CPU share each got more than the CPU an item: against the best
 * of the two peers of the same round, 0.89x-1.15x (median 0.98x over 10 runs),
 * a ratio to the larger of two noisy rates, which leans below 1 for equals.
 *
 * The pool is started lazily (no thread until the first batch), sized by
 * `setThreads` (default: `CELERY_SIGN_THREADS`, else the cores), and its
 * threads are `unref`'d while they have nothing to do, so a process with
 * nothing else to do exits. A store's certificates go to a worker by DER, once
 * per store version; a worker that dies is replaced, and each job it had gets
 * exactly one answer (a failure, which the caller turns into one refusal per
 * item).
 *
 * @internal
 * @module
 */
import type { KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { MAX_THREADS } from '../limits.js';
import type { WireFormat } from './envelope.js';
import { invalidArg } from './errors.js';

// ---------------------------------------------------------------------------------------------
// Messages

export interface OpenJob {
  op: 'open';
  id: number;
  storeId: number;
  version: number;
  /** The store's certificates (DER), when this worker does not have this version yet. */
  certs?: Uint8Array[];
  digest: string;
  maxPayload: number;
  nowMs: number;
  jsonTypes: string[];
  data: ArrayBuffer;
  lengths: Uint32Array;
}

export interface SealJob {
  op: 'seal';
  id: number;
  keyId: number;
  /** The signing key, when this worker does not have it yet. */
  key?: KeyObject;
  signerId: string;
  digest: string;
  /** Whether the key may sign with this digest (`JsPrivateKey.canSign`, checked on the main thread). */
  canSign: boolean;
  format: WireFormat;
  contentType: string;
  contentEncoding: string;
  data: ArrayBuffer;
  lengths: Uint32Array;
}

export type ToWorker =
  | OpenJob
  | SealJob
  | { op: 'drop-store'; storeId: number }
  | { op: 'drop-key'; keyId: number }
  | { op: 'exit'; code: number };

export interface OpenReply {
  id: number;
  op: 'open';
  /** 9 numbers an item, as `OpenedBatch.meta`; indices into `strings`, body ranges into `buffer`. */
  meta: Float64Array;
  strings: string[];
  buffer: ArrayBuffer;
  used: number;
}

export interface SealReply {
  id: number;
  op: 'seal';
  payloads: string[];
  /** `[index, status, messageIdx]` triples, as `SealedBatch.errors`. */
  errors: number[];
  messages: string[];
}

export type FromWorker = OpenReply | SealReply | { id: number; op: 'failed'; message: string } | { id: 0; op: 'ready' };

/** A job that got no reply: its worker failed it or died with it. */
export interface JobFailure {
  op: 'failed';
  message: string;
}

// ---------------------------------------------------------------------------------------------
// Size

let requested = 0;
let frozen = false;

/**
 * `CELERY_SIGN_THREADS` as the core reads it (`batch::threads_from_env`):
 * after trimming white space, a decimal integer from 1 up, taken as at most
 * {@link MAX_THREADS}; anything else is ignored (null).
 */
export function threadsFromEnv(value: string): number | null {
  const v = value.trim();
  if (!/^[0-9]+$/.test(v)) return null;
  const digits = v.replace(/^0+/, '');
  if (digits === '') return null;
  return digits.length > 4 ? MAX_THREADS : Math.min(Number(digits), MAX_THREADS);
}

/** Threads the pool will use: `setThreads`, else `CELERY_SIGN_THREADS`, else the cores (at most {@link MAX_THREADS}). */
function wantedThreads(): number {
  if (requested > 0) return requested;
  return threadsFromEnv(process.env.CELERY_SIGN_THREADS ?? '') ?? Math.min(MAX_THREADS, Math.max(1, availableParallelism()));
}

/** A number as Rust's `Display` for f64 shows it (the core's message quotes it so). */
function rustF64(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  if (Number.isInteger(n) && Math.abs(n) >= 1e21) return BigInt(n).toString();
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  return String(n);
}

/**
 * Sets the pool size; only before the pool is first used (returns whether it
 * took effect), as the core's `set_threads`: `n` must be an integer from 1
 * to {@link MAX_THREADS}, anything else is refused (napi's InvalidArg with
 * the binding's message), never wrapped or clamped.
 */
export function setThreads(n: number): boolean {
  if (typeof n !== 'number') {
    const err = new Error(`Failed to convert napi value ${n === null ? 'Null' : n === undefined ? 'Undefined' : (typeof n)[0]!.toUpperCase() + (typeof n).slice(1)} into rust type \`f64\``) as Error & { code: string };
    err.code = 'NumberExpected';
    throw err;
  }
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) invalidArg(`threads must be an integer from 1 to ${MAX_THREADS}, not ${rustF64(n)}`);
  if (frozen) return false;
  requested = n;
  return true;
}

/** The number of threads batches run on; fixes the size, as the core's `threads()` does. */
export function threadCount(): number {
  if (!frozen) {
    frozen = true;
    slots.length = 0;
    const nice = wantedNice();
    for (let i = 0, n = wantedThreads(); i < n; i++) slots.push(new Slot(nice));
  }
  return slots.length;
}

// ---------------------------------------------------------------------------------------------
// Workers

interface Pending {
  settle(reply: FromWorker | JobFailure): void;
}

/**
 * This module's directory: `__dirname` in the CommonJS build (lib/); in the
 * ESM sources run under tsx without its CommonJS shims (tests), found from
 * a stack frame of this module.
 */
function moduleDir(): string {
  if (typeof __dirname === 'string') return __dirname;
  const frame = /(file:\/\/[^\s)]+|\/[^\s)]+|[A-Za-z]:\\[^\s)]+)[\\/]pool\.[cm]?[tj]s(?::\d+)*/.exec(new Error().stack ?? '');
  if (frame === null) throw new Error('celery-sign: cannot tell where src/backend/js/pool is');
  const dir = frame[1]!;
  return dir.startsWith('file:') ? fileURLToPath(dir) : dir;
}

/** Starts a worker: the compiled entry next to this module (`lib/backend/js/worker.js`), or the source under tsx. */
function spawn(workerData: WorkerInit): Worker {
  const dir = moduleDir();
  const js = join(dir, 'worker.js');
  if (existsSync(js)) return new Worker(js, { workerData });
  const ts = join(dir, 'worker.ts');
  // Running from src/ under tsx: register it inside the thread before loading the source.
  const tsx = createRequire(join(dir, 'pool.ts')).resolve('tsx/cjs/api');
  const boot = `require(${JSON.stringify(tsx)}).register(); require(${JSON.stringify(ts)});`;
  return new Worker(boot, { eval: true, workerData });
}

/** What a worker is started with. */
export interface WorkerInit {
  /** The thread's nice value (Linux; 0 leaves it as it is). */
  nice: number;
}

/**
 * The batch threads' nice value: `CELERY_SIGN_NICE` (0 to 19), else 0. The
 * core runs its pool threads at 5 so that the event loop's thread preempts
 * them (a lower p99 event-loop delay); measured here, the same helps the
 * fallback's event loop a little (p99 3.2-3.6 ms instead of 4.6-5.5 ms,
 * batches of 4096 back to back) but costs it throughput wherever other
 * processes want the CPU, since its peers (the libuv threadpool, a user's own
 * worker_threads) run at 0: in the same-run quick bench on the shared 2-core
 * machine, deserializeMany of 4096 vs the best pure-Node peer, median of the
 * runs, 0.85x at nice 5 (10 runs) and 0.95x at nice 0 (7 runs). The fallback
 * is the slow path: throughput first. (CPU time an item, the same 4096 x
 * 512 B: this fallback 36-40 us, node:crypto's callback form 42 us, the
 * bench's worker_threads pool 34-40 us, native 11.7 us: the gap that remains
 * is the CPU share of 2 + 1 threads against the callback form's 4 + 1 when
 * other processes want the cores.)
 */
function wantedNice(): number {
  const n = Number.parseInt((process.env.CELERY_SIGN_NICE ?? '').trim(), 10);
  return Number.isSafeInteger(n) ? Math.min(19, Math.max(0, n)) : 0;
}

/** Jobs a worker is given at once: one it works on, one waiting in its port (no idle gap between them). */
const MAX_OUT = 2;

class Slot {
  worker: Worker | null = null;
  /** The thread's nice value (see `wantedNice`; the single calls' thread always 0). */
  readonly nice: number;
  readonly pending = new Map<number, Pending>();
  /** Store id -> the version this worker has. */
  readonly stores = new Map<number, number>();
  /** Key ids this worker has. */
  readonly keys = new Set<number>();
  /** Why the worker stopped, when it reported it before exiting. */
  #error: Error | null = null;
  /** The worker has loaded and reads its messages. */
  ready = false;

  constructor(nice: number) {
    this.nice = nice;
  }

  ensure(): Worker {
    if (this.worker !== null) return this.worker;
    const w = spawn({ nice: this.nice });
    w.on('message', (msg: FromWorker) => {
      if (msg.op !== 'ready') this.#settle(msg.id, msg);
      else if (this.worker === w) {
        this.ready = true;
        pump();
      }
    });
    w.on('error', (err) => {
      this.#error = err;
    });
    w.on('exit', (code) => {
      if (this.worker !== w) return;
      // Replaced at the next job; what it had gets one failure each.
      this.worker = null;
      this.ready = false;
      this.stores.clear();
      this.keys.clear();
      const why = this.#error?.message ?? `exit code ${code}`;
      this.#error = null;
      const failed: JobFailure = { op: 'failed', message: `the worker thread stopped (${why})` };
      const lost = [...this.pending.values()];
      this.pending.clear();
      for (const p of lost) p.settle(failed);
      pump();
    });
    // After the listeners: adding a 'message' listener refs the worker's port
    // again, and a thread started ahead of its first job (the single calls'
    // one) would then keep an idle process alive.
    w.unref();
    this.worker = w;
    return w;
  }

  #settle(id: number, reply: FromWorker | JobFailure): void {
    const p = this.pending.get(id);
    if (p === undefined) return; // answered already
    this.pending.delete(id);
    this.#hold();
    p.settle(reply);
    pump();
  }

  /** The thread keeps the process alive exactly while it has jobs. */
  #hold(): void {
    if (this.pending.size > 0) this.worker?.ref();
    else this.worker?.unref();
  }

  post(task: Task): void {
    let w: Worker;
    try {
      w = this.ensure();
    } catch (err) {
      // No thread to be had (resource limits): this job fails, the next ones try again.
      task.settle({ op: 'failed', message: `no worker thread could be started (${(err as Error).message})` });
      return;
    }
    const { msg, transfer } = task.make(this);
    this.pending.set(msg.id, { settle: task.settle });
    this.#hold();
    try {
      w.postMessage(msg, transfer);
    } catch (err) {
      this.#settle(msg.id, { op: 'failed', message: `could not send the job (${(err as Error).message})` });
    }
  }
}

const slots: Slot[] = [];
/**
 * The thread of single calls (`openAsync`, `sealAsync`), as the native side
 * has one per JavaScript thread (crates/node/src/queue.rs): a call made while
 * batches keep the pool busy does not wait for the pool's threads to get the
 * CPU back. Started at the first such call.
 */
const single = new Slot(0);
let nextJob = 1;

/** A job waiting for a worker: its message is made when it is sent (what that worker already has is not sent again). */
interface Task {
  make(slot: Slot): { msg: OpenJob | SealJob; transfer: ArrayBuffer[] };
  settle(reply: FromWorker | JobFailure): void;
}

/**
 * Jobs not yet given to a worker: single calls (`openAsync`, `sealAsync`)
 * first, then the parts of batches, each in order. A worker is given at most
 * {@link MAX_OUT} jobs, so a single call waits for at most one part of a
 * batch, not for the whole batch.
 */
const urgent: Task[] = [];
const batchParts: Task[] = [];
let pumping = false;

function pump(): void {
  if (pumping) return;
  pumping = true;
  try {
    threadCount();
    // Single calls: their own thread once it is up (started at the first
    // one), until then any pool thread that is up and has room.
    if (urgent.length > 0) {
      try {
        single.ensure();
      } catch {
        // Then on the pool's threads (post reports it if none starts either).
      }
    }
    while (urgent.length > 0) {
      const slot = single.ready && single.pending.size < MAX_OUT ? single : (roomiest(true) ?? (single.pending.size < MAX_OUT ? single : null));
      if (slot === null) break;
      slot.post(urgent.shift()!);
    }
    while (batchParts.length > 0) {
      const slot = roomiest();
      if (slot === null) break; // all busy: the next reply pumps again
      slot.post(batchParts.shift()!);
    }
  } finally {
    pumping = false;
  }
}

/** The pool thread with the fewest jobs, if one has room. */
function roomiest(readyOnly = false): Slot | null {
  let best: Slot | null = null;
  for (const s of slots) {
    if (readyOnly && !s.ready) continue;
    if (s.pending.size < MAX_OUT && (best === null || s.pending.size < best.pending.size)) best = s;
  }
  return best;
}

function submit(task: Task, isUrgent: boolean): void {
  (isUrgent ? urgent : batchParts).push(task);
  pump();
}

// ---------------------------------------------------------------------------------------------
// Stores and keys, by id

const storeIds = new WeakMap<object, number>();
const keyIds = new WeakMap<object, number>();
let nextId = 1;
const dropped = new FinalizationRegistry<{ op: 'drop-store' | 'drop-key'; id: number }>(({ op, id }) => {
  for (const s of [...slots, single]) {
    if (op === 'drop-store') {
      if (!s.stores.delete(id)) continue;
      s.worker?.postMessage({ op, storeId: id } satisfies ToWorker);
    } else {
      if (!s.keys.delete(id)) continue;
      s.worker?.postMessage({ op, keyId: id } satisfies ToWorker);
    }
  }
});

function idOf(map: WeakMap<object, number>, obj: object, op: 'drop-store' | 'drop-key'): number {
  let id = map.get(obj);
  if (id === undefined) {
    id = nextId++;
    map.set(obj, id);
    dropped.register(obj, { op, id });
  }
  return id;
}

// ---------------------------------------------------------------------------------------------
// Jobs

/** A store as a batch sees it: its identity, the version it started with, that version's certificates. */
export interface StoreView {
  store: object;
  version: number;
  /** DER of every certificate of that version (called only when a worker needs them). */
  ders(): Uint8Array[];
}

export interface OpenParams {
  digest: string;
  maxPayload: number;
  nowMs: number;
  jsonTypes: string[];
}

/**
 * Opens payloads (`data`, item `i` being `lengths[i]` bytes) on a worker;
 * resolves with its reply or, if it failed or died, a {@link JobFailure}.
 * `data` and `lengths` are transferred: the caller gives them up. `urgent`:
 * a single call, ahead of the parts of batches.
 */
export function openOnWorker(
  view: StoreView,
  params: OpenParams,
  data: ArrayBuffer,
  lengths: Uint32Array,
  isUrgent = false,
): Promise<OpenReply | JobFailure> {
  const storeId = idOf(storeIds, view.store, 'drop-store');
  return new Promise((resolve) => {
    submit(
      {
        make(slot) {
          const msg: OpenJob = {
            op: 'open',
            id: nextJob++,
            storeId,
            version: view.version,
            digest: params.digest,
            maxPayload: params.maxPayload,
            nowMs: params.nowMs,
            jsonTypes: params.jsonTypes,
            data,
            lengths,
          };
          if (slot.stores.get(storeId) !== view.version) {
            msg.certs = view.ders();
            slot.stores.set(storeId, view.version);
          }
          return { msg, transfer: [data, lengths.buffer as ArrayBuffer] };
        },
        settle: resolve as (r: FromWorker | JobFailure) => void,
      },
      isUrgent,
    );
  });
}

export interface SealParams {
  /** The key's identity (its wrapper) and its `KeyObject`. */
  keyOwner: object;
  key: KeyObject;
  signerId: string;
  digest: string;
  canSign: boolean;
  format: WireFormat;
  contentType: string;
  contentEncoding: string;
}

/** Seals bodies (`data`, body `i` being `lengths[i]` bytes) on a worker; `data` and `lengths` are transferred. */
export function sealOnWorker(params: SealParams, data: ArrayBuffer, lengths: Uint32Array, isUrgent = false): Promise<SealReply | JobFailure> {
  const keyId = idOf(keyIds, params.keyOwner, 'drop-key');
  return new Promise((resolve) => {
    submit(
      {
        make(slot) {
          const msg: SealJob = {
            op: 'seal',
            id: nextJob++,
            keyId,
            signerId: params.signerId,
            digest: params.digest,
            canSign: params.canSign,
            format: params.format,
            contentType: params.contentType,
            contentEncoding: params.contentEncoding,
            data,
            lengths,
          };
          if (!slot.keys.has(keyId)) {
            msg.key = params.key;
            slot.keys.add(keyId);
          }
          return { msg, transfer: [data, lengths.buffer as ArrayBuffer] };
        },
        settle: resolve as (r: FromWorker | JobFailure) => void,
      },
      isUrgent,
    );
  });
}

/**
 * How many parts a batch of `n` items is split into: every worker gets work,
 * each part big enough to be worth a message (`minPerPart`) and small enough
 * (`maxPerPart`) that a single call never waits long behind one.
 */
export function partsFor(n: number, minPerPart: number, maxPerPart: number): number {
  if (n === 0) return 0;
  return Math.max(1, Math.min(threadCount(), Math.ceil(n / minPerPart)), Math.ceil(n / maxPerPart));
}

/** Tests only: the pool as it is, and a way to make a busy worker die. */
export const poolForTests = {
  started(): number {
    return [...slots, single].filter((s) => s.worker !== null).length;
  },
  /** Stops every started worker now, mid-job (the jobs they have get failures). */
  killAll(): number {
    let n = 0;
    for (const s of [...slots, single]) {
      if (s.worker !== null) {
        void s.worker.terminate();
        n++;
      }
    }
    return n;
  },
  /** Makes every started worker exit once it has read this (jobs sent later get failures). */
  exitAll(code = 7): number {
    let n = 0;
    for (const s of [...slots, single]) {
      if (s.worker !== null) {
        s.worker.postMessage({ op: 'exit', code } satisfies ToWorker);
        n++;
      }
    }
    return n;
  },
};
