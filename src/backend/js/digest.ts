/**
 * Digest names as Celery takes them (`security_digest`): a port of
 * `crates/core/src/digest.rs`.
 *
 * @internal
 * @module
 */
import { displayBytes, invalidArg } from './errors.js';

export type DigestName = 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';

const NAMES: ReadonlyMap<string, DigestName> = new Map([
  ['sha1', 'sha1'],
  ['sha224', 'sha224'],
  ['sha256', 'sha256'],
  ['sha384', 'sha384'],
  ['sha512', 'sha512'],
]);

/** Output length in bytes. */
export const DIGEST_SIZE: Readonly<Record<DigestName, number>> = {
  sha1: 20,
  sha224: 28,
  sha256: 32,
  sha384: 48,
  sha512: 64,
};

/** Rust's `to_ascii_lowercase`: only A-Z change. */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/**
 * The core's `Digest::from_name` (`sha256` and `SHA256` alike); anything else
 * throws what the binding throws: napi's `InvalidArg` with the core's message.
 */
export function digestFromName(name: string): DigestName {
  const hit = NAMES.get(name) ?? NAMES.get(asciiLower(String(name)));
  if (hit !== undefined) return hit;
  return invalidArg(
    `unsupported digest ${JSON.stringify(displayBytes(Buffer.from(String(name), 'utf8')))}: use sha1, sha224, sha256, sha384 or sha512`,
  );
}
