/**
 * A small DER writer for the two things `celery-sign certgen` makes: an X.509
 * v3 certificate (self-signed, or issued by a CA's key and certificate) and a
 * PKCS#10 certificate signing request, both signed sha256WithRSAEncryption
 * through node:crypto. The public key goes in as node:crypto exports it
 * (SubjectPublicKeyInfo DER), so only the envelope is built here.
 *
 * @internal
 * @module
 */
import { createHash, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';

// ---------------------------------------------------------------- DER writing

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV: `tag`, the DER length, the contents. */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const seq = (...items: Uint8Array[]): Buffer => tlv(0x30, ...items);
const set = (...items: Uint8Array[]): Buffer => tlv(0x31, ...items);
const nullDer = (): Buffer => Buffer.from([0x05, 0x00]);
const bool = (v: boolean): Buffer => Buffer.from([0x01, 0x01, v ? 0xff : 0x00]);
const octets = (b: Uint8Array): Buffer => tlv(0x04, b);
const bitString = (b: Uint8Array): Buffer => tlv(0x03, Buffer.from([0]), b);
const explicit = (n: number, inner: Uint8Array): Buffer => tlv(0xa0 | n, inner);

/** A non-negative INTEGER from its big-endian magnitude. */
export function integer(value: bigint | number): Buffer {
  let v = BigInt(value);
  if (v < 0n) throw new RangeError('negative INTEGER');
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}

/** An OBJECT IDENTIFIER from its dotted form. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => Number(a));
  const out: number[] = [arcs[0]! * 40 + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [];
    let v = arc;
    do {
      chunk.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime for 1950..2049, GeneralizedTime after (RFC 5280 4.1.2.5), to the second, UTC. */
export function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 4) + iso.slice(5, 7) + iso.slice(8, 10) + iso.slice(11, 13) + iso.slice(14, 16) + iso.slice(17, 19);
  const year = d.getUTCFullYear();
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(digits.slice(2) + 'Z', 'ascii'));
  return tlv(0x18, Buffer.from(digits + 'Z', 'ascii'));
}

// ---------------------------------------------------------------- names

const NAME_OIDS: Record<string, string> = {
  CN: '2.5.4.3',
  O: '2.5.4.10',
  OU: '2.5.4.11',
  C: '2.5.4.6',
  L: '2.5.4.7',
  ST: '2.5.4.8',
};

/** An attribute of a distinguished name, in the order it is written. */
export interface NameAttribute {
  /** CN, O, OU, C, L or ST. */
  type: keyof typeof NAME_OIDS | string;
  value: string;
}

/** A Name: one RDN (a SET of one attribute) per attribute, in order; UTF8String values (PrintableString for C). */
export function name(attrs: readonly NameAttribute[]): Buffer {
  return seq(
    ...attrs.map((a) => {
      const id = NAME_OIDS[a.type];
      if (id === undefined) throw new RangeError(`unknown name attribute ${a.type}`);
      if (a.value === '') throw new RangeError(`empty ${a.type}`);
      const value = a.type === 'C' ? tlv(0x13, Buffer.from(a.value, 'ascii')) : tlv(0x0c, Buffer.from(a.value, 'utf8'));
      return set(seq(oid(id), value));
    }),
  );
}

// ---------------------------------------------------------------- reading (a CA's subject)

interface Read {
  tag: number;
  /** The whole TLV. */
  all: Buffer;
  body: Buffer;
  rest: Buffer;
}

function read(input: Buffer): Read {
  if (input.length < 2) throw new RangeError('truncated DER');
  const tag = input[0]!;
  let len = input[1]!;
  let at = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || input.length < 2 + n) throw new RangeError('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + input[2 + i]!;
    at = 2 + n;
  }
  if (input.length < at + len) throw new RangeError('truncated DER');
  return { tag, all: input.subarray(0, at + len), body: input.subarray(at, at + len), rest: input.subarray(at + len) };
}

/** The subject Name (DER) and SubjectPublicKeyInfo of a DER certificate. */
export function subjectOf(certDer: Buffer): { subject: Buffer; spki: Buffer } {
  const tbs = read(read(certDer).body);
  let f = read(tbs.body);
  if (f.tag === 0xa0) f = read(f.rest); // version
  // f: serial; then signature alg, issuer, validity, subject, spki
  const alg = read(f.rest);
  const issuer = read(alg.rest);
  const validity = read(issuer.rest);
  const subject = read(validity.rest);
  const spki = read(subject.rest);
  return { subject: subject.all, spki: spki.all };
}

// ---------------------------------------------------------------- certificates

const SHA256_WITH_RSA = seq(oid('1.2.840.113549.1.1.11'), nullDer());

function keyIdentifier(spkiDer: Buffer): Buffer {
  // RFC 5280 4.2.1.2 (1): SHA-1 of the subjectPublicKey BIT STRING's value.
  const spki = read(spkiDer);
  const alg = read(spki.body);
  const bits = read(alg.rest);
  return createHash('sha1').update(bits.body.subarray(1)).digest();
}

/** What {@link buildCertificate} makes. */
export interface CertificateSpec {
  /** The subject's public key. */
  publicKey: KeyObject;
  subject: readonly NameAttribute[];
  /** Days from `notBefore`. */
  days: number;
  /** Default: now. */
  notBefore?: Date;
  /** Default: 16 random bytes, positive. */
  serial?: bigint;
  /** Signs the certificate: the subject's own key (self-signed) or the CA's. */
  signingKey: KeyObject;
  /** The CA's certificate (DER); without it the certificate is self-signed. */
  issuerCert?: Buffer;
  /** basicConstraints cA. Default: true when self-signed. */
  ca?: boolean;
}

/** A random positive serial of 16 bytes (RFC 5280: at most 20 octets). */
export function randomSerial(): bigint {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return BigInt('0x' + b.toString('hex'));
}

/** An X.509 v3 certificate, DER, signed sha256WithRSAEncryption. */
export function buildCertificate(spec: CertificateSpec): Buffer {
  if (!Number.isInteger(spec.days) || spec.days < 1) throw new RangeError('days must be a positive integer');
  const notBefore = spec.notBefore ?? new Date(Math.floor(Date.now() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + spec.days * 86400_000);
  const spki = spec.publicKey.export({ type: 'spki', format: 'der' });
  const subject = name(spec.subject);
  let issuer = subject;
  let authorityKeyId = keyIdentifier(spki);
  if (spec.issuerCert) {
    const ca = subjectOf(spec.issuerCert);
    issuer = ca.subject;
    authorityKeyId = keyIdentifier(ca.spki);
    // The CA's key must be the one its certificate names.
    const caPub = createPublicKey({ key: ca.spki, format: 'der', type: 'spki' });
    const signerPub = createPublicKey(spec.signingKey).export({ type: 'spki', format: 'der' });
    if (!caPub.export({ type: 'spki', format: 'der' }).equals(signerPub)) {
      throw new RangeError("the CA key does not match the CA certificate's public key");
    }
  }
  const ca = spec.ca ?? !spec.issuerCert;
  const extensions = seq(
    seq(oid('2.5.29.19'), bool(true), octets(ca ? seq(bool(true)) : seq())), // basicConstraints, critical
    seq(oid('2.5.29.15'), bool(true), octets(keyUsage(ca))), // keyUsage, critical
    seq(oid('2.5.29.14'), octets(octets(keyIdentifier(spki)))), // subjectKeyIdentifier
    seq(oid('2.5.29.35'), octets(seq(tlv(0x80, authorityKeyId)))), // authorityKeyIdentifier
  );
  const tbs = seq(
    explicit(0, integer(2)),
    integer(spec.serial ?? randomSerial()),
    SHA256_WITH_RSA,
    issuer,
    seq(time(notBefore), time(notAfter)),
    subject,
    spki,
    explicit(3, extensions),
  );
  const signature = sign('sha256', tbs, spec.signingKey);
  return seq(tbs, SHA256_WITH_RSA, bitString(signature));
}

function keyUsage(ca: boolean): Buffer {
  // digitalSignature (bit 0); with keyCertSign (bit 5) for a CA.
  return ca ? Buffer.from([0x03, 0x02, 0x02, 0x84]) : Buffer.from([0x03, 0x02, 0x07, 0x80]);
}

/** A PKCS#10 certificate signing request, DER, signed by the subject's key. */
export function buildCsr(privateKey: KeyObject, subject: readonly NameAttribute[]): Buffer {
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const info = seq(integer(0), name(subject), spki, tlv(0xa0));
  return seq(info, SHA256_WITH_RSA, bitString(sign('sha256', info, privateKey)));
}

/** PEM armour, 64 columns. */
export function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}
