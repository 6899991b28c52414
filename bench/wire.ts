/**
 * Celery >= 5.5's `auth` wire format in plain Node, for the pure-Node peers
 * (WebCrypto, node:crypto, the worker_threads pool). It is what a Node user
 * without celery-sign would have to write, done as well as Node allows:
 *
 *   payload = b64( b64(signer) SEP b64(signature) SEP content_type SEP content_encoding SEP body )
 *
 * with SEP = b"\x00\x01", split with maxsplit=4 (the body may contain SEP).
 */
export const SEP = Buffer.from([0x00, 0x01]);

export interface Unpacked {
  signer: string;
  signature: Buffer;
  contentType: string;
  contentEncoding: string;
  body: Buffer;
}

/** Celery 5.5's `SecureSerializer._unpack` on an already base64-decoded payload. */
export function unpack(raw: Buffer): Unpacked {
  const a = raw.indexOf(SEP);
  const b = a < 0 ? -1 : raw.indexOf(SEP, a + 2);
  const c = b < 0 ? -1 : raw.indexOf(SEP, b + 2);
  const d = c < 0 ? -1 : raw.indexOf(SEP, c + 2);
  if (d < 0) throw new Error('malformed payload: fewer than 5 fields');
  return {
    signer: Buffer.from(raw.toString('latin1', 0, a), 'base64').toString('utf8'),
    signature: Buffer.from(raw.toString('latin1', a + 2, b), 'base64'),
    contentType: raw.toString('utf8', b + 2, c),
    contentEncoding: raw.toString('utf8', c + 2, d),
    body: raw.subarray(d + 2),
  };
}

/** Base64-decodes and unpacks one payload (text, as it comes off a broker). */
export function decodePayload(payload: string): Unpacked {
  return unpack(Buffer.from(payload, 'base64'));
}

/** After verification: the inner JSON body, decoded once; other content types are refused. */
export function decodeBody(u: Unpacked): unknown {
  if (u.contentType !== 'application/json') throw new Error(`content type ${u.contentType} not accepted`);
  return JSON.parse(u.body.toString('utf8'));
}

/** What a Node signer encodes: JSON.stringify (compact; kombu adds spaces, the receiver does not care). */
export function encodeBody(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Celery 5.5's `SecureSerializer._pack`: the payload as base64 text. */
export function pack(signerB64: string, signature: Uint8Array, body: Buffer): string {
  const sig = Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength).toString('base64');
  return Buffer.concat([
    Buffer.from(signerB64, 'latin1'),
    SEP,
    Buffer.from(sig, 'latin1'),
    SEP,
    CONTENT_TYPE,
    SEP,
    CONTENT_ENCODING,
    SEP,
    body,
  ]).toString('base64');
}

const CONTENT_TYPE = Buffer.from('application/json');
const CONTENT_ENCODING = Buffer.from('utf-8');

/** `b64(signer)`, computed once per certificate. */
export function signerB64(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64');
}

const HASH_LEN = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 } as const;
export type DigestName = keyof typeof HASH_LEN;

/** PSS maximum salt length, emLen - hLen - 2, as Celery signs (and WebCrypto needs it exactly). */
export function maxSaltLength(bits: number, digest: DigestName): number {
  return Math.ceil((bits - 1) / 8) - HASH_LEN[digest] - 2;
}
