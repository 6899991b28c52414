/**
 * The only door to the native binding. Native refusals arrive as errors whose
 * message starts with a stable code (`ERR_...: `); they leave here as
 * {@link SecurityError}s.
 */
import { backend, binding } from './backend/index.js';
import { ERROR_CODES, ImproperlyConfigured, SecurityError, type SecurityErrorCode } from './errors.js';

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

/** Native batch status numbers: 1 + the index in the core's code list. */
export const STATUS_CODES: readonly SecurityErrorCode[] = binding.errorCodes() as SecurityErrorCode[];

function isSecurityCode(code: string): code is SecurityErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code) && code !== 'ERR_IMPROPERLY_CONFIGURED';
}

/** Turns an error thrown by the binding into the library's own error types. */
export function translate(err: unknown): Error {
  if (err instanceof Error) {
    const m = CODE_PREFIX.exec(err.message);
    if (m && isSecurityCode(m[1]!)) {
      return new SecurityError(m[1], err.message.slice(m[0].length));
    }
    if ((err as { code?: unknown }).code === 'InvalidArg') {
      return new ImproperlyConfigured(err.message);
    }
    return err;
  }
  return new Error(String(err));
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

/** Sets the number of native threads (before the first batch). */
export function setThreads(n: number): boolean {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('threads must be a positive integer');
  return binding.setThreads(n);
}

/** The number of native threads batches run on. */
export function threadCount(): number {
  return binding.threadCount();
}
