/**
 * The DER reader of the native core, ported rule for rule:
 * `crates/core/src/name.rs` (Celery's issuer string) and
 * `crates/core/src/x509.rs` (issuer, serial, notBefore, notAfter and the public key,
 * taken from the certificate DER directly), plus the strict (CBS-style)
 * readers the key and public-key parsers need.
 *
 * @internal
 * @module
 */
import { MAX_SERIAL_BYTES } from '../limits.js';
import { fail } from './errors.js';

/** A DER element: tag byte, contents and the whole encoding (offsets into `buf`). */
export interface Tlv {
  readonly tag: number;
  /** Contents. */
  readonly body: Uint8Array;
  /** The whole element, header included. */
  readonly raw: Uint8Array;
  /** What follows the element. */
  readonly rest: Uint8Array;
}

/**
 * Reads one DER element off the front of `input` (the core's `read_tlv`).
 * Only definite, minimal lengths (at most 4 length bytes); no high tag numbers.
 */
export function readTlv(input: Uint8Array): Tlv | undefined {
  const n = input.length;
  if (n < 2) return undefined;
  const tag = input[0]!;
  if ((tag & 0x1f) === 0x1f) return undefined;
  const first = input[1]!;
  let pos = 2;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const k = first & 0x7f;
    if (k === 0 || k > 4 || n - pos < k || input[pos] === 0) return undefined;
    len = 0;
    for (let i = 0; i < k; i++) len = len * 256 + input[pos + i]!;
    if (len < 0x80) return undefined;
    pos += k;
  }
  if (n - pos < len) return undefined;
  return {
    tag,
    body: input.subarray(pos, pos + len),
    raw: input.subarray(0, pos + len),
    rest: input.subarray(pos + len),
  };
}

const SEQUENCE = 0x30;
const SET = 0x31;
const INTEGER = 0x02;
const OID = 0x06;
const BIT_STRING = 0x03;
const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;
const PRINTABLE_STRING = 0x13;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const VERSION_TAG = 0xa0;

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isPrintable(b: number): boolean {
  return (
    (b >= 0x30 && b <= 0x39) ||
    (b >= 0x41 && b <= 0x5a) ||
    (b >= 0x61 && b <= 0x7a) ||
    b === 0x20 || // ' '
    b === 0x27 || // '
    b === 0x28 ||
    b === 0x29 ||
    b === 0x2b ||
    b === 0x2c ||
    b === 0x2d ||
    b === 0x2e ||
    b === 0x2f ||
    b === 0x3a ||
    b === 0x3d ||
    b === 0x3f
  );
}

/** Decodes one attribute value as Python `cryptography` does; undefined where Python fails. */
function decodeValue(tag: number, body: Uint8Array): string | undefined {
  switch (tag) {
    case BMP_STRING: {
      if (body.length % 2 !== 0) return undefined;
      let out = '';
      for (let i = 0; i < body.length; i += 2) {
        const u = (body[i]! << 8) | body[i + 1]!;
        if (u >= 0xd800 && u <= 0xdbff) {
          // A high surrogate needs a low one next.
          if (i + 2 >= body.length) return undefined;
          const v = (body[i + 2]! << 8) | body[i + 3]!;
          if (!(v >= 0xdc00 && v <= 0xdfff)) return undefined;
          out += String.fromCharCode(u, v);
          i += 2;
        } else if (u >= 0xdc00 && u <= 0xdfff) {
          return undefined;
        } else {
          out += String.fromCharCode(u);
        }
      }
      return out;
    }
    case UNIVERSAL_STRING: {
      if (body.length % 4 !== 0) return undefined;
      let out = '';
      for (let i = 0; i < body.length; i += 4) {
        const c = ((body[i]! << 24) >>> 0) + ((body[i + 1]! << 16) | (body[i + 2]! << 8) | body[i + 3]!);
        if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return undefined;
        out += String.fromCodePoint(c);
      }
      return out;
    }
    case BIT_STRING:
      return undefined;
    case PRINTABLE_STRING:
      for (let i = 0; i < body.length; i++) if (!isPrintable(body[i]!)) return undefined;
      return fatalUtf8.decode(body);
    default:
      try {
        return fatalUtf8.decode(body);
      } catch {
        return undefined;
      }
  }
}

/** Lexicographic byte order (Rust's `<[u8] as Ord>`). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** The attribute values of a DER `Name`, in the order Python yields them. */
export function nameValues(der: Uint8Array): string[] | undefined {
  const name = readTlv(der);
  if (name === undefined || name.tag !== SEQUENCE || name.rest.length !== 0) return undefined;
  const values: string[] = [];
  let rdns = name.body;
  while (rdns.length !== 0) {
    const rdn = readTlv(rdns);
    if (rdn === undefined || rdn.tag !== SET) return undefined;
    rdns = rdn.rest;
    let attrs = rdn.body;
    let previous: Uint8Array | undefined;
    while (attrs.length !== 0) {
      const attr = readTlv(attrs);
      if (attr === undefined || attr.tag !== SEQUENCE) return undefined;
      // DER sorts a SET OF by encoding; Python's parser refuses any other order.
      if (previous !== undefined && compareBytes(previous, attr.raw) > 0) return undefined;
      previous = attr.raw;
      attrs = attr.rest;
      const oid = readTlv(attr.body);
      if (oid === undefined || oid.tag !== OID) return undefined;
      const value = readTlv(oid.rest);
      if (value === undefined || value.rest.length !== 0) return undefined;
      const text = decodeValue(value.tag, value.body);
      if (text === undefined) return undefined;
      values.push(text);
    }
  }
  return values;
}

/** `' '.join(values)`: Celery's `get_issuer()`. */
export function issuerString(der: Uint8Array): string | undefined {
  return nameValues(der)?.join(' ');
}

/** A dotted OID from its DER contents, or undefined. */
function dottedOid(body: Uint8Array): string | undefined {
  if (body.length === 0 || (body[body.length - 1]! & 0x80) !== 0) return undefined;
  const arcs: bigint[] = [];
  let acc = 0n;
  for (const b of body) {
    acc = (acc << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(acc);
      acc = 0n;
    }
  }
  const first = arcs[0]!;
  const head = first < 40n ? [0n, first] : first < 80n ? [1n, first - 40n] : [2n, first - 80n];
  return [...head, ...arcs.slice(1)].join('.');
}

/** One subject attribute: its dotted OID and its value as Python `cryptography` decodes it. */
export interface NameAttribute {
  readonly oid: string;
  readonly value: string;
}

/**
 * The subject Name of a DER certificate, RDN by RDN in DER order; undefined
 * when the certificate or its subject cannot be read.
 */
export function subjectAttributes(der: Uint8Array): NameAttribute[][] | undefined {
  const cert = readTlv(der);
  if (cert === undefined || cert.tag !== SEQUENCE) return undefined;
  const tbs = readTlv(cert.body);
  if (tbs === undefined || tbs.tag !== SEQUENCE) return undefined;
  let field = readTlv(tbs.body);
  if (field !== undefined && field.tag === VERSION_TAG) field = readTlv(field.rest);
  // serial, signature algorithm, issuer, validity, then the subject
  for (let i = 0; i < 4 && field !== undefined; i++) field = readTlv(field.rest);
  if (field === undefined || field.tag !== SEQUENCE) return undefined;
  const out: NameAttribute[][] = [];
  let rdns = field.body;
  while (rdns.length !== 0) {
    const rdn = readTlv(rdns);
    if (rdn === undefined || rdn.tag !== SET) return undefined;
    rdns = rdn.rest;
    const attrsOut: NameAttribute[] = [];
    let attrs = rdn.body;
    while (attrs.length !== 0) {
      const attr = readTlv(attrs);
      if (attr === undefined || attr.tag !== SEQUENCE) return undefined;
      attrs = attr.rest;
      const oid = readTlv(attr.body);
      if (oid === undefined || oid.tag !== OID) return undefined;
      const dotted = dottedOid(oid.body);
      const value = readTlv(oid.rest);
      if (dotted === undefined || value === undefined) return undefined;
      const text = decodeValue(value.tag, value.body);
      if (text === undefined) return undefined;
      attrsOut.push({ oid: dotted, value: text });
    }
    out.push(attrsOut);
  }
  return out;
}

export interface Parts {
  /** The issuer Name, DER. */
  readonly issuer: Uint8Array;
  /** The serial number's INTEGER contents (two's complement, big-endian). */
  readonly serial: Uint8Array;
  /** notBefore as Unix seconds. */
  readonly notBefore: number;
  /** notAfter as Unix seconds. */
  readonly notAfter: number;
  /** SubjectPublicKeyInfo, DER. */
  readonly spki: Uint8Array;
}

/** Splits a DER certificate into the parts Celery uses (the core's `x509::parse`). */
export function parseCertificate(der: Uint8Array): Parts | undefined {
  const cert = readTlv(der);
  if (cert === undefined || cert.tag !== SEQUENCE || cert.rest.length !== 0) return undefined;
  const tbs = readTlv(cert.body);
  if (tbs === undefined) return undefined;
  const alg = readTlv(tbs.rest);
  if (alg === undefined) return undefined;
  const sig = readTlv(alg.rest);
  if (sig === undefined) return undefined;
  if (tbs.tag !== SEQUENCE || alg.tag !== SEQUENCE || sig.tag !== BIT_STRING || sig.rest.length !== 0) {
    return undefined;
  }
  let field = readTlv(tbs.body);
  if (field === undefined) return undefined;
  if (field.tag === VERSION_TAG) {
    field = readTlv(field.rest);
    if (field === undefined) return undefined;
  }
  // The serial as Python `cryptography` reads it: a minimal DER INTEGER.
  if (field.tag !== INTEGER || !isValidInteger(field.body)) return undefined;
  const serial = field.body;
  const sigAlg = readTlv(field.rest);
  if (sigAlg === undefined) return undefined;
  const issuer = readTlv(sigAlg.rest);
  if (issuer === undefined) return undefined;
  const validity = readTlv(issuer.rest);
  if (validity === undefined) return undefined;
  const subject = readTlv(validity.rest);
  if (subject === undefined) return undefined;
  const spki = readTlv(subject.rest);
  if (spki === undefined) return undefined;
  if (
    sigAlg.tag !== SEQUENCE ||
    issuer.tag !== SEQUENCE ||
    validity.tag !== SEQUENCE ||
    subject.tag !== SEQUENCE ||
    spki.tag !== SEQUENCE
  ) {
    return undefined;
  }
  const notBefore = readTlv(validity.body);
  if (notBefore === undefined) return undefined;
  const notAfter = readTlv(notBefore.rest);
  if (notAfter === undefined || notAfter.rest.length !== 0) return undefined;
  const before = parseTime(notBefore.tag, notBefore.body);
  if (before === undefined) return undefined;
  const seconds = parseTime(notAfter.tag, notAfter.body);
  if (seconds === undefined) return undefined;
  return { issuer: issuer.raw, serial, notBefore: before, notAfter: seconds, spki: spki.raw };
}

function digits(s: Uint8Array, from: number, to: number): number | undefined {
  if (to <= from) return undefined;
  let acc = 0;
  for (let i = from; i < to; i++) {
    const d = s[i]! - 0x30;
    if (d < 0 || d > 9) return undefined;
    acc = acc * 10 + d;
  }
  return acc;
}

/** UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`. */
export function parseTime(tag: number, s: Uint8Array): number | undefined {
  let year: number;
  let off: number;
  if (tag === UTC_TIME && s.length === 13) {
    const yy = digits(s, 0, 2);
    if (yy === undefined) return undefined;
    year = yy < 50 ? 2000 + yy : 1900 + yy;
    off = 2;
  } else if (tag === GENERALIZED_TIME && s.length === 15) {
    const y = digits(s, 0, 4);
    if (y === undefined) return undefined;
    year = y;
    off = 4;
  } else {
    return undefined;
  }
  if (s[off + 10] !== 0x5a) return undefined;
  const month = digits(s, off, off + 2);
  const day = digits(s, off + 2, off + 4);
  const hour = digits(s, off + 4, off + 6);
  const minute = digits(s, off + 6, off + 8);
  const second = digits(s, off + 8, off + 10);
  if (month === undefined || day === undefined || hour === undefined || minute === undefined || second === undefined) {
    return undefined;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return undefined;
  return daysFromCivil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
}

function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
function daysFromCivil(y0: number, m: number, d: number): number {
  const y = m <= 2 ? y0 - 1 : y0;
  const era = floorDiv(y, 400);
  const yoe = y - era * 400;
  const mp = (m + 9) % 12;
  const doy = Math.trunc((153 * mp + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.trunc(yoe / 4) - Math.trunc(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/**
 * A DER INTEGER's contents in decimal, sign included (as Python's `int`): the
 * core's `x509::integer_to_decimal`. Beyond {@link MAX_SERIAL_BYTES} (the
 * core's bound, generated into ../limits.ts) it throws the refusal the core's
 * `Certificate::from_der` makes of such a serial.
 */
export function integerToDecimal(bytes: Uint8Array): string {
  if (bytes.length > MAX_SERIAL_BYTES) {
    fail(
      'ERR_INVALID_CERTIFICATE',
      `Invalid certificate: the serial number is ${bytes.length} bytes long, over the limit of ${MAX_SERIAL_BYTES}`,
    );
  }
  if (bytes.length === 0) return '0';
  let v = BigInt('0x' + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex'));
  if (bytes[0]! & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return v.toString();
}

/** Big-endian unsigned bytes as a BigInt. */
export function toBigInt(bytes: Uint8Array): bigint {
  if (bytes.length === 0) return 0n;
  return BigInt('0x' + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex'));
}

// ---------------------------------------------------------------------------
// CBS-style strict reading (BoringSSL/AWS-LC `CBS_get_asn1` and friends), for
// the public- and private-key structures the native path hands to AWS-LC.

/** A cursor over DER input. */
export class Cbs {
  constructor(public data: Uint8Array) {}
  get length(): number {
    return this.data.length;
  }
  /** CBS_get_asn1: one element with this tag (low tag numbers only), its contents. */
  get(tag: number): Uint8Array | undefined {
    const t = readTlv(this.data);
    if (t === undefined || t.tag !== tag) return undefined;
    this.data = t.rest;
    return t.body;
  }
  /** CBS_get_asn1_element: the whole element. */
  getElement(tag: number): Uint8Array | undefined {
    const t = readTlv(this.data);
    if (t === undefined || t.tag !== tag) return undefined;
    this.data = t.rest;
    return t.raw;
  }
  /** CBS_get_any_asn1_element */
  getAny(): Tlv | undefined {
    const t = readTlv(this.data);
    if (t === undefined) return undefined;
    this.data = t.rest;
    return t;
  }
  peekTag(tag: number): boolean {
    return this.data.length > 0 && this.data[0] === tag;
  }
  /** CBS_get_asn1_uint64: a minimal non-negative INTEGER below 2^64. */
  getUint64(): bigint | undefined {
    const body = this.get(INTEGER);
    if (body === undefined || !isValidInteger(body) || body[0]! & 0x80) return undefined;
    const start = body[0] === 0 && body.length > 1 ? 1 : 0;
    if (body.length - start > 8) return undefined;
    return toBigInt(body.subarray(start));
  }
  /** BN_parse_asn1_unsigned: a minimal non-negative INTEGER. */
  getUnsigned(): bigint | undefined {
    const body = this.get(INTEGER);
    if (body === undefined || !isValidInteger(body) || body[0]! & 0x80) return undefined;
    return toBigInt(body);
  }
}

/** CBS_is_valid_asn1_integer: non-empty, minimally encoded. */
export function isValidInteger(body: Uint8Array): boolean {
  if (body.length === 0) return false;
  if (body.length > 1) {
    if (body[0] === 0x00 && (body[1]! & 0x80) === 0) return false;
    if (body[0] === 0xff && (body[1]! & 0x80) !== 0) return false;
  }
  return true;
}

export function bitLength(v: bigint): number {
  return v === 0n ? 0 : v.toString(2).length;
}

export function equalBytes(a: Uint8Array, b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
