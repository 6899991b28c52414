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

/**
 * Renders untrusted bytes (a signer id from a payload) for an error message:
 * printable ASCII as is, everything else escaped, cut to 200 bytes (the
 * core's `error::display_bytes`).
 */
export function displayBytes(bytes: Uint8Array): string {
  const MAX = 200;
  let out = '';
  const n = Math.min(bytes.length, MAX);
  for (let i = 0; i < n; i++) {
    const b = bytes[i]!;
    if (b === 0x5c) out += '\\\\';
    else if (b === 0x27) out += "\\'";
    else if (b >= 0x20 && b <= 0x7e) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  if (bytes.length > MAX) out += '...';
  return out;
}
