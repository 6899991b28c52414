/**
 * Errors of the `node:crypto` fallback, thrown exactly as the napi binding
 * throws them: a refusal is an `Error` whose message starts with its stable
 * code (`ERR_...: `), a bad argument an `Error` with `code: 'InvalidArg'`
 * (napi's status). `src/native.ts` translates both the same way for either
 * backend.
 *
 * @internal
 * @module
 */
import type { CoreErrorCode } from '../codes.js';

/** Throws a refusal with its stable code, as the core's `Error` displays. */
export function fail(code: CoreErrorCode, message: string): never {
  throw refusal(code, message);
}

export function refusal(code: CoreErrorCode, message: string): Error {
  return new Error(`${code}: ${message}`);
}

/** Throws what napi throws for `Status::InvalidArg`. */
export function invalidArg(message: string): never {
  const err = new Error(message) as Error & { code: string };
  err.code = 'InvalidArg';
  throw err;
}
