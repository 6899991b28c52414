/**
 * The auth payload, in both wire formats found in the field: a port of
 * `crates/core/src/envelope.rs` (and of the per-item part of
 * `crates/core/src/batch.rs`). Same results for every input, the same
 * refusals (codes and messages), the same order of checks.
 *
 * Celery >= 5.5: `b64( b64(signer) SEP b64(signature) SEP content_type SEP
 * content_encoding SEP body )`, split with maxsplit=4 so the body may contain SEP.
 *
 * Celery <= 5.4: `b64( signer SEP signature SEP content_type SEP content_encoding
 * SEP body )` with the signer id and the signature raw; the signature's end is
 * found from the signer's key size, and the body cannot contain SEP.
 *
 * Base64 is read the way the core's `base64_simd::STANDARD` reads it (padded,
 * canonical: no stray bits in the last character), falling back, for a
 * payload that fails that, to Python's non-validating `b64decode` (every byte
 * outside the alphabet dropped first). Node's own base64 decoder is lenient
 * in other ways (missing padding, stray bits), so it is used only where its
 * result is proven strict: see {@link decodeStrictFast}.
 *
 * @internal
 * @module
 */
import { isUtf8 } from 'node:buffer';
import { constants, sign as nodeSign, type KeyObject } from 'node:crypto';
import { CORE_ERROR_CODES, type CoreErrorCode } from '../codes.js';
import type { DigestName } from './digest.js';
import { displayBytes, fail } from './errors.js';

/** Celery's field separator, `\x00\x01`. */
export const SEP = Buffer.from([0, 1]);

/** The default payload size limit (64 MiB of base64), the core's `DEFAULT_MAX_PAYLOAD`. */
export const DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024;

export type WireFormat = 'celery-5.5' | 'celery-5.4';

export function wireFormatFromName(name: string): WireFormat | undefined {
  return name === 'celery-5.5' || name === 'celery-5.4' ? name : undefined;
}

/** What the envelope needs of a certificate (part 1's `JsCertificate`). */
export interface EnvelopeSigner {
  readonly id: string;
  readonly signatureLen: number;
  hasExpired(nowMs: number): boolean;
  isNotYetValid(nowMs: number): boolean;
  verifySignature(data: Uint8Array, signature: Uint8Array, digest: DigestName): boolean;
}

/** What the envelope needs of a store: the core's `CertStore::lookup`. */
export interface EnvelopeStore<C extends EnvelopeSigner = EnvelopeSigner> {
  lookup(id: Uint8Array): C | undefined;
}

/** What the envelope needs of a private key (part 1's `JsPrivateKey`). */
export interface EnvelopeKey {
  sign(data: Uint8Array, digestName: string): Buffer;
}

// ---------------------------------------------------------------------------------------------
// Base64, as the core reads it

const B64_VALUE = new Int8Array(256).fill(-1);
{
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < 64; i++) B64_VALUE[alphabet.charCodeAt(i)] = i;
}
const EQ = 0x3d;

/**
 * Whether `b[start..end]` holds the bytes of `a` (a loop: for the few bytes of
 * an id or a content type, cheaper than a view and a native compare).
 */
export function sameBytes(a: Uint8Array, b: Uint8Array, start: number, end: number): boolean {
  if (end - start !== a.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[start + i]) return false;
  return true;
}

/** The most bytes `len` base64 characters decode to (room to decode into). */
export function decodeCapacity(len: number): number {
  return Math.ceil(len / 4) * 3;
}

/**
 * `base64_simd::STANDARD.decode`: `src[start..end]` must be padded base64
 * (length a multiple of 4, at most two `=` at the end, nothing outside the
 * alphabet, the unused bits of the last character zero). Writes the bytes at
 * `out[at..]`; returns how many, or -1 when the text is refused.
 */
export function decodeStrict(src: Uint8Array, start: number, end: number, out: Uint8Array, at: number): number {
  const len = end - start;
  if (len === 0) return 0;
  if ((len & 3) !== 0) return -1;
  const pad = src[end - 1] === EQ ? (src[end - 2] === EQ ? 2 : 1) : 0;
  const n = len - pad;
  const full = start + (n & ~3);
  const V = B64_VALUE;
  let o = at;
  let i = start;
  for (; i < full; i += 4) {
    const a = V[src[i]!]!;
    const b = V[src[i + 1]!]!;
    const c = V[src[i + 2]!]!;
    const d = V[src[i + 3]!]!;
    if ((a | b | c | d) < 0) return -1;
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    out[o] = v >>> 16;
    out[o + 1] = (v >>> 8) & 0xff;
    out[o + 2] = v & 0xff;
    o += 3;
  }
  const rem = n & 3;
  if (rem === 2) {
    const a = V[src[i]!]!;
    const b = V[src[i + 1]!]!;
    if ((a | b) < 0 || (b & 0x0f) !== 0) return -1;
    out[o++] = ((a << 2) | (b >>> 4)) & 0xff;
  } else if (rem === 3) {
    const a = V[src[i]!]!;
    const b = V[src[i + 1]!]!;
    const c = V[src[i + 2]!]!;
    if ((a | b | c) < 0 || (c & 0x03) !== 0) return -1;
    out[o++] = ((a << 2) | (b >>> 4)) & 0xff;
    out[o++] = ((b << 4) | (c >>> 2)) & 0xff;
  }
  return o - at;
}

/** The `Buffer` methods behind `toString`/`write` of one encoding (Node's own, undocumented: looked for, not assumed). */
interface CodecMethods {
  latin1Slice(start: number, end: number): string;
  base64Slice(start: number, end: number): string;
  base64Write(text: string, offset: number, length?: number): number;
}
const hasCodecMethods = ((p: Partial<CodecMethods>) =>
  typeof p.latin1Slice === 'function' && typeof p.base64Slice === 'function' && typeof p.base64Write === 'function')(
  Buffer.prototype as unknown as Partial<CodecMethods>,
);
const latin1Text: (b: Buffer, start: number, end: number) => string = hasCodecMethods
  ? (b, start, end) => (b as unknown as CodecMethods).latin1Slice(start, end)
  : (b, start, end) => b.toString('latin1', start, end);
const base64Text: (b: Buffer, start: number, end: number) => string = hasCodecMethods
  ? (b, start, end) => (b as unknown as CodecMethods).base64Slice(start, end)
  : (b, start, end) => b.toString('base64', start, end);
const base64Into: (b: Buffer, text: string, at: number) => number = hasCodecMethods
  ? (b, text, at) => (b as unknown as CodecMethods).base64Write(text, at)
  : (b, text, at) => b.write(text, at, 'base64');

/** Characters of base64 decoded per step by {@link decodeStrictFast} (a multiple of 4: 1 MiB of text at most at a time). */
const FAST_STEP = 1 << 20;

/** A `Buffer` over the same bytes (no copy). */
function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * {@link decodeStrict} by Node's own (native) base64 decoder, or -1 where
 * that cannot be shown to give the same: the text is decoded, then encoded
 * again, and taken only if that gives the text back. The encoder writes only
 * canonical padded base64, and canonical padded base64 is exactly what
 * `decodeStrict` accepts, each text of one byte string only; so a text that
 * comes back is one `decodeStrict` accepts, and the bytes are the ones it
 * would give, whatever Node's decoder does with other text. Long text goes
 * in steps of {@link FAST_STEP} characters, each but the last without
 * padding (checked by its length). -1 says nothing about the text:
 * `decodeStrict` then decides.
 */
export function decodeStrictFast(src: Uint8Array, start: number, end: number, out: Buffer, at: number): number {
  const from = asBuffer(src);
  let o = at;
  for (let s = start; s < end; ) {
    const e = end - s > FAST_STEP ? s + FAST_STEP : end;
    const text = latin1Text(from, s, e);
    const n = base64Into(out, text, o);
    if (e < end && n !== ((e - s) >> 2) * 3) return -1;
    if (base64Text(out, o, o + n) !== text) return -1;
    o += n;
    s = e;
  }
  return o - at;
}

/** {@link decodeStrict}, by {@link decodeStrictFast} where that gives the answer. */
function decodeStrictAny(src: Uint8Array, start: number, end: number, out: Buffer, at: number): number {
  const n = decodeStrictFast(src, start, end, out, at);
  return n >= 0 ? n : decodeStrict(src, start, end, out, at);
}

/**
 * Python's non-validating `base64.b64decode`, as the core emulates it
 * (`alphabet_only`, then the strict decode): every byte outside the alphabet
 * and `=` is dropped first.
 */
function decodeLoose(src: Uint8Array, start: number, end: number, out: Uint8Array, at: number): number {
  const kept = new Uint8Array(end - start);
  let k = 0;
  for (let i = start; i < end; i++) {
    const c = src[i]!;
    if (B64_VALUE[c]! >= 0 || c === EQ) kept[k++] = c;
  }
  return decodeStrict(kept, 0, k, out, at);
}

/** Room for the usual signer id (the core decodes ids of up to 1364 characters on its stack too). */
const idScratch = Buffer.allocUnsafeSlow(1024);

/** The strict decode of `raw[0..end]` into a scratch buffer (valid until the next call), or null. */
function decodeSignerId(raw: Uint8Array, end: number): Buffer | null {
  const cap = decodeCapacity(end);
  if (cap > idScratch.length) return decodeToBuffer(raw, 0, end);
  const n = decodeStrict(raw, 0, end, idScratch, 0);
  return n < 0 ? null : idScratch.subarray(0, n);
}

/** `B64.decode_to_vec`: a fresh buffer, or null when the text is refused. */
function decodeToBuffer(src: Uint8Array, start: number, end: number): Buffer | null {
  const out = Buffer.allocUnsafe(decodeCapacity(end - start));
  const n = decodeStrictAny(src, start, end, out, 0);
  return n < 0 ? null : out.subarray(0, n);
}

// ---------------------------------------------------------------------------------------------
// Sealing

/** Whether `b[start..end]` is UTF-8: ASCII (the usual content type) checked here, the rest by `isUtf8`. */
function textAt(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (b[i]! >= 0x80) return isUtf8(b.subarray(start, end));
  return true;
}

/**
 * Position of the first `\x00\x01` in `hay[from..]`, or -1: the first zero
 * byte (a byte search), which is the separator but for a body that has zeros
 * of its own; then the two-byte search past it.
 */
function findSep(hay: Buffer, from = 0): number {
  const zero = hay.indexOf(0, from);
  if (zero < 0 || hay[zero + 1] === 1) return zero;
  return hay.indexOf(SEP, zero + 1);
}

function hasSep(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(SEP) >= 0;
}

/** The core's `check_writable`: refuses a body the chosen wire format cannot carry, before signing it. */
export function checkWritable(format: WireFormat, contentType: string, body: Uint8Array): void {
  if (format !== 'celery-5.4') return;
  // Celery 5.4 splits the fields on SEP without a limit...
  if (hasSep(body) || contentType.includes('\u0000\u0001')) {
    fail(
      'ERR_MALFORMED_PAYLOAD',
      'Unable to serialize: the body contains the separator \\x00\\x01, which the celery-5.4 wire format cannot carry',
    );
  }
  // ...and turns the body into text before checking the signature.
  if (!isUtf8(body)) {
    fail(
      'ERR_MALFORMED_PAYLOAD',
      'Unable to serialize: the body is not UTF-8, which the celery-5.4 wire format cannot carry (Celery 5.4 decodes it before verifying)',
    );
  }
}

/** The core's `pack_checked`: the payload text once {@link checkWritable} has passed. */
function packChecked(
  format: WireFormat,
  signerId: string,
  signature: Uint8Array,
  contentType: string,
  contentEncoding: string,
  body: Uint8Array,
): string {
  const signer = format === 'celery-5.5' ? Buffer.from(Buffer.from(signerId, 'utf8').toString('base64'), 'latin1') : Buffer.from(signerId, 'utf8');
  const sig =
    format === 'celery-5.5'
      ? Buffer.from(Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength).toString('base64'), 'latin1')
      : signature;
  const ct = Buffer.from(contentType, 'utf8');
  const enc = Buffer.from(contentEncoding, 'utf8');
  const fields = Buffer.allocUnsafe(signer.length + sig.length + ct.length + enc.length + body.length + 8);
  let at = 0;
  for (const part of [signer, sig, ct, enc, body]) {
    if (at > 0) {
      fields[at++] = 0;
      fields[at++] = 1;
    }
    fields.set(part, at);
    at += part.length;
  }
  return fields.toString('base64', 0, at);
}

/** The core's `pack`: builds the payload text for a signed body. */
export function pack(
  format: WireFormat,
  signerId: string,
  signature: Uint8Array,
  contentType: string,
  contentEncoding: string,
  body: Uint8Array,
): string {
  checkWritable(format, contentType, body);
  return packChecked(format, signerId, signature, contentType, contentEncoding, body);
}

/** Signs `body` and packs it: Celery's `SecureSerializer.serialize` after the inner dumps. */
export function seal(
  key: EnvelopeKey,
  signerId: string,
  digest: DigestName,
  format: WireFormat,
  contentType: string,
  contentEncoding: string,
  body: Uint8Array,
): string {
  checkWritable(format, contentType, body); // before the costly signature
  const signature = key.sign(body, digest);
  return packChecked(format, signerId, signature, contentType, contentEncoding, body);
}

/** {@link seal} with the signature made elsewhere (a worker, the threadpool): the packing half. */
export function packSigned(
  format: WireFormat,
  signerId: string,
  signature: Uint8Array,
  contentType: string,
  contentEncoding: string,
  body: Uint8Array,
): string {
  return packChecked(format, signerId, signature, contentType, contentEncoding, body);
}

// ---------------------------------------------------------------------------------------------
// Opening

/** A refusal as data (a batch keeps it in its result instead of throwing). */
export class Refusal {
  constructor(
    readonly code: CoreErrorCode,
    readonly message: string,
  ) {}
}

/**
 * The core's `ERR_INTERNAL` where its code list has it (not a refusal of the
 * input: the call could not be completed), else the refusal `fallback`.
 */
export function internalCode(fallback: CoreErrorCode): CoreErrorCode {
  return (CORE_ERROR_CODES as readonly string[]).includes('ERR_INTERNAL') ? ('ERR_INTERNAL' as CoreErrorCode) : fallback;
}

/** What an item gets that could not be processed at all (a worker that stopped, a bug). */
export function internalRefusal(what: string, fallback: CoreErrorCode): Refusal {
  return new Refusal(internalCode(fallback), `internal error in celery-sign's node:crypto fallback: ${what}`);
}

function malformed(msg: string): Refusal {
  return new Refusal('ERR_MALFORMED_PAYLOAD', `Unable to deserialize: ${msg}`);
}

const TOO_FEW = 'the payload has too few fields';

/** A payload decoded and unpacked, its signer found and in date: all that is left is the signature check. */
export interface Unverified<C extends EnvelopeSigner = EnvelopeSigner> {
  /** The decoded payload; the ranges below are into it. */
  raw: Buffer;
  contentTypeStart: number;
  contentTypeEnd: number;
  encodingStart: number;
  encodingEnd: number;
  bodyStart: number;
  bodyEnd: number;
  signer: C;
  format: WireFormat;
  signature: Uint8Array;
}

/** The core's `check_size`: refuses a payload over the limit before any decoding. */
export function checkSize(length: number, maxPayload: number): Refusal | null {
  if (length > maxPayload) {
    return new Refusal(
      'ERR_PAYLOAD_TOO_LARGE',
      `Unable to deserialize: the payload is ${length} bytes, over the limit of ${maxPayload}`,
    );
  }
  return null;
}

/**
 * The core's `open_unverified`: everything before the signature check, in
 * the same order. `payload` is `src[start..end]`; it is decoded into
 * `out[at..]` (at least {@link decodeCapacity} bytes of room). Returns a
 * {@link Refusal} rather than throwing.
 */
export function openUnverified<C extends EnvelopeSigner>(
  store: EnvelopeStore<C>,
  src: Uint8Array,
  start: number,
  end: number,
  maxPayload: number,
  out: Buffer,
  at: number,
  nowMs: number,
): Unverified<C> | Refusal {
  const tooLarge = checkSize(end - start, maxPayload);
  if (tooLarge !== null) return tooLarge;
  if (end === start) return malformed('the payload is empty');
  let len = decodeStrictAny(src, start, end, out, at);
  if (len < 0) {
    len = decodeLoose(src, start, end, out, at);
    if (len < 0) return malformed('the payload is not valid base64');
  }
  const raw = out.subarray(at, at + len);
  const first = findSep(raw);
  if (first < 0) return malformed(TOO_FEW);

  // 5.5: the first field is base64 of the signer id (decoded into a scratch
  // buffer: only looked up, or shown in the refusal right away).
  const id55 = decodeSignerId(raw, first);
  const v55 = id55 === null ? undefined : store.lookup(id55);

  let signer: C;
  let format: WireFormat;
  let restStart: number;
  let sigStart: number;
  let sigEnd: number;
  if (v55 !== undefined) {
    const after0 = first + 2;
    const sep1 = findSep(raw, after0);
    if (sep1 < 0) return malformed(TOO_FEW);
    signer = v55;
    format = 'celery-5.5';
    sigStart = after0;
    sigEnd = sep1;
    restStart = sep1 + 2;
  } else {
    const v54 = store.lookup(raw.subarray(0, first));
    if (v54 === undefined) {
      const shown = id55 ?? raw.subarray(0, first);
      return new Refusal('ERR_UNKNOWN_CERTIFICATE', `Unknown certificate: '${displayBytes(shown)}'`);
    }
    // 5.4: raw signer, then exactly key_size / 8 raw signature bytes.
    sigStart = first + 2;
    sigEnd = sigStart + v54.signatureLen;
    if (raw.length < sigEnd + 2 || raw[sigEnd] !== 0 || raw[sigEnd + 1] !== 1) return malformed(TOO_FEW);
    signer = v54;
    format = 'celery-5.4';
    restStart = sigEnd + 2;
  }

  // content_type SEP content_encoding SEP body
  const s1 = findSep(raw, restStart);
  if (s1 < 0) return malformed(TOO_FEW);
  const s2 = findSep(raw, s1 + 2);
  if (s2 < 0) return malformed(TOO_FEW);
  const bodyStart = s2 + 2;
  const bodyEnd = raw.length;
  if (format === 'celery-5.4' && findSep(raw, bodyStart) >= 0) {
    return malformed('the payload has too many fields for the celery-5.4 wire format');
  }
  if (!textAt(raw, restStart, s1) || !textAt(raw, s1 + 2, s2)) {
    return malformed('the content type or encoding is not UTF-8');
  }

  if (signer.hasExpired(nowMs)) {
    return new Refusal('ERR_CERTIFICATE_EXPIRED', `Expired certificate: '${signer.id}'`);
  }
  if (signer.isNotYetValid(nowMs)) {
    return new Refusal('ERR_CERTIFICATE_EXPIRED', `Certificate not yet valid: '${signer.id}'`);
  }
  let signature: Uint8Array;
  if (format === 'celery-5.4') signature = raw.subarray(sigStart, sigEnd);
  else {
    const decoded = decodeToBuffer(raw, sigStart, sigEnd);
    if (decoded === null) return new Refusal('ERR_BAD_SIGNATURE', 'Bad signature: the signature is not valid base64');
    signature = decoded;
  }
  return {
    raw,
    contentTypeStart: restStart,
    contentTypeEnd: s1,
    encodingStart: s1 + 2,
    encodingEnd: s2,
    bodyStart,
    bodyEnd,
    signer,
    format,
    signature,
  };
}

/** The refusal of a signature that does not verify (the core's `verify_signature`). */
export const BAD_SIGNATURE = new Refusal('ERR_BAD_SIGNATURE', 'Bad signature');

/**
 * The core's `open_into` on a fresh buffer (`envelope::open`): decodes,
 * unpacks and verifies one payload, or returns its refusal.
 */
export function openOne<C extends EnvelopeSigner>(
  store: EnvelopeStore<C>,
  digest: DigestName,
  payload: Uint8Array,
  maxPayload: number,
  nowMs: number,
): Unverified<C> | Refusal {
  const tooLarge = checkSize(payload.length, maxPayload);
  if (tooLarge !== null) return tooLarge; // before allocating
  const out = Buffer.allocUnsafe(decodeCapacity(payload.length));
  const u = openUnverified(store, payload, 0, payload.length, maxPayload, out, 0, nowMs);
  if (u instanceof Refusal) return u;
  if (!u.signer.verifySignature(u.raw.subarray(u.bodyStart, u.bodyEnd), u.signature, digest)) return BAD_SIGNATURE;
  return u;
}

/** Throws a refusal the way the binding does (`Error('ERR_X: message')`). */
export function throwRefusal(r: Refusal): never {
  return fail(r.code, r.message);
}

/**
 * A store as one batch sees it: certificates by id, the core's
 * `CertStore::lookup` (the id must be UTF-8 and match exactly).
 */
export class Snapshot<C extends EnvelopeSigner> implements EnvelopeStore<C> {
  readonly #byId = new Map<string, C>();
  /** The last id found, as bytes, and its certificate: a batch mostly has one signer. */
  #lastId: Buffer | null = null;
  #last: C | undefined;
  constructor(certs: Iterable<C>) {
    for (const c of certs) if (!this.#byId.has(c.id)) this.#byId.set(c.id, c);
  }
  lookup(id: Uint8Array): C | undefined {
    const last = this.#lastId;
    if (last !== null && sameBytes(last, id, 0, id.length)) return this.#last;
    if (this.#byId.size === 0 || !isUtf8(id)) return undefined;
    const found = this.#byId.get(Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('utf8'));
    if (found !== undefined) {
      this.#lastId = Buffer.from(id);
      this.#last = found;
    }
    return found;
  }
}

/**
 * RSA-PSS, MGF1(digest), maximum salt length with a `KeyObject`: what part
 * 1's `JsPrivateKey.sign` does, for a worker thread that holds only the key
 * object (the core's `rsa::sign_pss` and its refusal).
 */
export function signPss(key: KeyObject, data: Uint8Array, digest: string): Buffer {
  try {
    return nodeSign(digest, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN });
  } catch {
    return fail('ERR_INVALID_KEY', 'Unable to sign data: the key cannot sign with this digest');
  }
}
