/**
 * The only door to the native binding. Native refusals arrive as errors whose
 * message starts with a stable code (`ERR_...: `); they leave here as
 * {@link SecurityError}s.
 */
import binding from '../native/binding.cjs';
import { ERROR_CODES, ImproperlyConfigured, SecurityError, type SecurityErrorCode } from './errors.js';

export const native = binding;
export type {
  NativeCertificate,
  NativeCertStore,
  NativePrivateKey,
  NativeSerializer,
  Opened,
  OpenedBatch,
  SealedBatch,
} from '../native/binding.cjs';

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

/** Sets the number of native threads (before the first batch). */
export function setThreads(n: number): boolean {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('threads must be a positive integer');
  return binding.setThreads(n);
}

/** The number of native threads batches run on. */
export function threadCount(): number {
  return binding.threadCount();
}
