/** `string | Uint8Array`; a string is taken as UTF-8. */
export type Bytes = string | Uint8Array;

/** Bytes as a Uint8Array, without copying a Uint8Array. */
export function toBytes(value: Bytes, what = 'value'): Uint8Array {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`${what} must be a string or a Uint8Array`);
}

/** A digest name Celery accepts in `security_digest`; any other is `ERR_IMPROPERLY_CONFIGURED`. */
export type Digest = 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';
export const DIGESTS: readonly Digest[] = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'];
