/**
 * The only door to the native binding. Native refusals arrive as errors whose
 * message starts with a stable code (`ERR_...: `); they leave here as
 * {@link SecurityError}s.
 */
import { backend, binding } from './backend/index.js';
import { CORE_ERROR_CODES } from './backend/codes.js';
import { MAX_THREADS } from './backend/limits.js';
import { ERROR_CODES, ImproperlyConfigured, SecurityError, type SecurityErrorCode } from './errors.js';

export { MAX_THREADS };

export const native = binding;
export { backend };
export type {
  NativeCertificate,
  NativeCertStore,
  NativePrivateKey,
  NativeSerializer,
  Opened,
  OpenedBatch,
  SealedBatch,
} from './backend/types.js';

const CODE_PREFIX = /^(ERR_[A-Z_]+): /;

/**
 * Native batch status numbers: 1 + the index in the core's code list
 * (`CORE_ERROR_CODES`, generated from the Rust enum). The binding reports its
 * own list; a binary built from other sources than this TypeScript (a stale
 * build) would give statuses another meaning, so it is refused here.
 */
export const STATUS_CODES: readonly SecurityErrorCode[] = checkedCodes(binding.errorCodes());

/** @internal (exported for its test) */
export function checkedCodes(reported: readonly string[]): readonly SecurityErrorCode[] {
  if (reported.length !== CORE_ERROR_CODES.length || reported.some((c, i) => c !== CORE_ERROR_CODES[i])) {
    throw new Error(
      `celery-sign: the ${backend} backend's error codes (${reported.join(', ')}) are not this package's ` +
        `(${CORE_ERROR_CODES.join(', ')}): the binary is out of step with the JavaScript; rebuild or reinstall`,
    );
  }
  return CORE_ERROR_CODES;
}

function isSecurityCode(code: string): code is SecurityErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code) && code !== 'ERR_IMPROPERLY_CONFIGURED';
}

/**
 * Turns an error thrown by the binding into the library's own error types:
 * - a message starting with a known code (`ERR_...: `) is a {@link SecurityError}
 *   with that code (`ERR_IMPROPERLY_CONFIGURED`: an {@link ImproperlyConfigured});
 * - napi's `InvalidArg` (a bad setting: digest name, wire format, thread
 *   count) is an {@link ImproperlyConfigured};
 * - anything else (no code: napi's own failures, a panic napi caught before
 *   the core could label it, a value that is not an Error) was not a decision
 *   about the input: a {@link SecurityError} with `ERR_INTERNAL`, the original
 *   as its `cause`. Never passed on untyped.
 */
export function translate(err: unknown): Error {
  if (err instanceof SecurityError || err instanceof ImproperlyConfigured) return err;
  const message = err instanceof Error ? err.message : String(err);
  const m = CODE_PREFIX.exec(message);
  if (m) {
    const rest = message.slice(m[0].length);
    if (m[1] === 'ERR_IMPROPERLY_CONFIGURED') return new ImproperlyConfigured(rest, { cause: err });
    if (isSecurityCode(m[1]!)) return new SecurityError(m[1], rest);
  }
  if (err instanceof Error && (err as { code?: unknown }).code === 'InvalidArg') {
    return new ImproperlyConfigured(message);
  }
  return new SecurityError('ERR_INTERNAL', `internal error in celery-sign: ${message}`, { cause: err });
}

/** Runs a native call, translating what it throws. */
export function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw translate(err);
  }
}

/** Awaits a native promise, translating its rejection. */
export async function callAsync<T>(promise: () => Promise<T>): Promise<T> {
  try {
    return await promise();
  } catch (err) {
    throw translate(err);
  }
}

/** How long the event loop polls for a native result without one coming in: ms, and polls at least. */
const POLL_BUDGET_MS = 0.1;
const POLL_BUDGET_TICKS = 32;
/**
 * How long polling stays off after it found nothing within its budget (ms);
 * doubled while that goes on (as the native thread's spinning does, see
 * crates/node/src/queue.rs).
 */
const POLL_BACKOFF_MIN_MS = 10;
const POLL_BACKOFF_MAX_MS = 500;

let polling = false;
let pollOffUntil = 0;
let pollBackoff = POLL_BACKOFF_MIN_MS;

/**
 * Call after starting a native call that settles through the queue
 * (`openAsync`, see crates/node/src/queue.rs): while results are out, the
 * event loop polls for them once a turn (setImmediate) instead of sleeping
 * until the native thread wakes it. Waking a sleeping thread costs tens of
 * microseconds on a small virtual machine, more than the verification. The
 * loop keeps running everything else meanwhile; it stops polling when nothing
 * is out, and for a while when a result takes longer than the budget (a long
 * job, or a machine too busy to spare the CPU), settling by wake-up then.
 */
export function expectResult(): void {
  if (polling) return;
  const start = performance.now();
  if (start < pollOffUntil) return;
  polling = true;
  let progress = start;
  let ticks = 0;
  let out = Infinity;
  const tick = (): void => {
    const r = binding.pollQueued(true);
    const left = r >>> 1;
    // The native side yields the CPU while nothing is in: when that took long,
    // another process had it, and polling only slows the native thread down.
    const busy = (r & 1) !== 0;
    if (left === 0 && !busy) {
      polling = false;
      pollBackoff = POLL_BACKOFF_MIN_MS;
      return;
    }
    const now = performance.now();
    if (left < out) {
      progress = now;
      ticks = 0;
    }
    out = left;
    if (busy || (++ticks > POLL_BUDGET_TICKS && now - progress > POLL_BUDGET_MS)) {
      polling = false;
      pollOffUntil = now + pollBackoff;
      pollBackoff = Math.min(POLL_BACKOFF_MAX_MS, pollBackoff * 2);
      binding.pollQueued(false);
      return;
    }
    setImmediate(tick);
  };
  setImmediate(tick);
}

/**
 * Sets the number of threads batches run on, before the first batch (returns
 * whether it took effect). `n` must be an integer from 1 to
 * `MAX_THREADS` (1024, libuv's bound for `UV_THREADPOOL_SIZE`): a
 * RangeError otherwise. Without it, `CELERY_SIGN_THREADS` decides (digits
 * only; above the bound it counts as the bound; anything else is ignored),
 * else the number of cores.
 */
export function setThreads(n: number): boolean {
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new RangeError(`threads must be an integer from 1 to ${MAX_THREADS}, not ${String(n)}`);
  }
  return call(() => binding.setThreads(n));
}

/**
 * The SIMD kernel celery-sign's batch verification runs in this process:
 * `'avx512-ifma'` (a CPU with AVX-512 IFMA), `'avx2'` (another x86-64 CPU,
 * or `CELERY_SIGN_SIMD=avx2`), or `null`: AWS-LC alone (a CPU with neither,
 * e.g. ARM, or `CELERY_SIGN_SIMD=0`), or node:crypto on the fallback
 * backend. Chosen once, when the native backend loads.
 */
export function simdKernel(): 'avx512-ifma' | 'avx2' | null {
  return call(() => binding.simdKernel());
}

/**
 * The number of threads batches run on; starts them. When the system refuses
 * them (a pids or memory limit), a {@link SecurityError} with `ERR_INTERNAL`.
 */
export function threadCount(): number {
  return call(() => binding.threadCount());
}
