/**
 * X.509 certificates with an RSA public key, identified the way Celery does:
 * a port of `crates/core/src/cert.rs` and of `NativeCertificate`. The DER is
 * walked by `der.ts` (the core's reader, rule for rule); the public key is
 * read with AWS-LC's rules (`EVP_parse_public_key`, `RSA_parse_public_key`,
 * `RSA_check_key`) and handed to node:crypto once.
 *
 * @internal
 * @module
 */
import { constants, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { Cbs, bitLength, equalBytes, integerToDecimal, issuerString, parseCertificate } from './der.js';
import { digestFromName, type DigestName } from './digest.js';
import { fail } from './errors.js';
import {
  OID_RSA,
  OID_RSAES_OAEP,
  OID_RSA_PSS,
  OID_RSA_X500,
  OTHER_KEY_OIDS,
  dsaParamsOk,
  parsePssParams,
  pssAllows,
  publicGood,
  type PssRestriction,
} from './key.js';
import { decodeBlock, firstBlockLabelled } from './pem.js';

function invalid(msg: string): never {
  return fail('ERR_INVALID_CERTIFICATE', `Invalid certificate: ${msg}`);
}

function b64url(v: bigint): string {
  let hex = v.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  return Buffer.from(hex, 'hex').toString('base64url');
}

/** ML-DSA and ML-KEM public keys: AWS-LC reads them (raw, exact length, no parameters). */
const PQ_PUBLIC_KEYS: ReadonlyArray<readonly [readonly number[], number]> = [
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x11], 1312], // ML-DSA-44
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12], 1952], // ML-DSA-65
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x13], 2592], // ML-DSA-87
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x01], 800], // ML-KEM-512
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x02], 1184], // ML-KEM-768
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x03], 1568], // ML-KEM-1024
];

type PublicRead = { kind: 'rsa'; key: KeyObject; bits: number; pss: PssRestriction | null } | { kind: 'other' } | { kind: 'bad' };

/** `EVP_parse_public_key` on a SubjectPublicKeyInfo, AWS-LC's rules. */
function readPublicKey(spki: Uint8Array): PublicRead {
  const outer = new Cbs(spki);
  const body = outer.get(0x30);
  if (body === undefined) return { kind: 'bad' };
  const s = new Cbs(body);
  const algBytes = s.get(0x30);
  const bits = algBytes === undefined ? undefined : s.get(0x03);
  if (algBytes === undefined || bits === undefined || s.length !== 0) return { kind: 'bad' };
  const alg = new Cbs(algBytes);
  const oid = alg.get(0x06);
  if (oid === undefined) return { kind: 'bad' };
  const isRsa = equalBytes(oid, OID_RSA) || equalBytes(oid, OID_RSA_X500) || equalBytes(oid, OID_RSAES_OAEP);
  const isPss = equalBytes(oid, OID_RSA_PSS);
  const pq = PQ_PUBLIC_KEYS.find(([o]) => equalBytes(oid, o));
  if (pq !== undefined) {
    if (alg.length !== 0 || bits.length === 0 || bits[0] !== 0) return { kind: 'bad' };
    return bits.length - 1 === pq[1] ? { kind: 'other' } : { kind: 'bad' };
  }
  if (!isRsa && !isPss && !OTHER_KEY_OIDS.some((o) => equalBytes(oid, o))) return { kind: 'bad' };
  if (bits.length === 0 || bits[0] !== 0) return { kind: 'bad' };
  const keyBytes = bits.subarray(1);
  if (equalBytes(oid, OTHER_KEY_OIDS[1]!)) {
    // dsa_pub_decode: DSA_parse_parameters (with dsa_check_key), then the INTEGER.
    const seq = alg.get(0x30);
    if (seq === undefined || alg.length !== 0) return { kind: 'bad' };
    const c = new Cbs(seq);
    const p = c.getUnsigned();
    const q = p === undefined ? undefined : c.getUnsigned();
    const g = q === undefined ? undefined : c.getUnsigned();
    if (p === undefined || q === undefined || g === undefined || c.length !== 0 || !dsaParamsOk(p, q, g)) {
      return { kind: 'bad' };
    }
    const k = new Cbs(keyBytes);
    return k.getUnsigned() === undefined || k.length !== 0 ? { kind: 'bad' } : { kind: 'other' };
  }
  if (!isRsa && !isPss) {
    try {
      createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
      return { kind: 'other' };
    } catch {
      return { kind: 'bad' };
    }
  }
  const pss = isPss ? parsePssParams(alg.data) : null;
  if (pss === undefined) return { kind: 'bad' };
  // RSA_parse_public_key + RSA_check_key; nothing may follow.
  const k = new Cbs(keyBytes);
  const seq = k.get(0x30);
  if (seq === undefined || k.length !== 0) return { kind: 'bad' };
  const c = new Cbs(seq);
  const n = c.getUnsigned();
  const e = n === undefined ? undefined : c.getUnsigned();
  if (n === undefined || e === undefined || c.length !== 0 || !publicGood(n, e)) return { kind: 'bad' };
  try {
    // A plain RSA key for RSA-PSS certificates too: OpenSSL 3 refuses the salt
    // "auto" on a restricted key, AWS-LC does not; the restriction is applied
    // here as AWS-LC applies it (pssAllows).
    const key = createPublicKey({ key: { kty: 'RSA', n: b64url(n), e: b64url(e) }, format: 'jwk' });
    return { kind: 'rsa', key, bits: bitLength(n), pss };
  } catch {
    return { kind: 'bad' };
  }
}

/** SEQUENCE { OID id-RSASSA-PSS }: an RSA-PSS public key with no parameters (RFC 4055). */
const PSS_ALGORITHM = Buffer.from('300b06092a864886f70d01010a', 'hex');

function derTlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}

/** The same (n, e) as an id-RSASSA-PSS key without parameters, or null if node:crypto will not make one. */
function unrestrictedPssKey(rsa: KeyObject): KeyObject | null {
  try {
    const pkcs1 = rsa.export({ format: 'der', type: 'pkcs1' });
    const spki = derTlv(0x30, Buffer.concat([PSS_ALGORITHM, derTlv(0x03, Buffer.concat([Buffer.from([0]), pkcs1]))]));
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    return key.asymmetricKeyType === 'rsa-pss' ? key : null;
  } catch {
    return null;
  }
}

/** A known answer: an RSA-1024 key and RSA-PSS/SHA-256 signatures of one message with salts of 0, 32 and 94 bytes (the maximum). */
const KNOWN = {
  n: '0u4HhcJu7ya1cHrWdaWyz0pQVZo6GalAjDJmWpEW6GcnotOEqjdvYvfMeZVbh0xoAdNbS5x4Di22iWv-4qUMZcJQOwKl60X-KNPaqGaxLSTPwy555DMa2lfiUtQtGRd2lG5-2kG3fr9B-wvpEC-8DyQF20_0gN3iLmB5KP9lZIM',
  message: 'celery-sign: the salt length is recovered',
  signatures: [
    'olCFDHnkK+lFMPXUw7rnaKG0tPt/oXkOcJ/W5eyJxH2/Xwgp1shFSLA89dQiXBwZTAfGal6J1nkfH5O+e5/vdh8asAvAWg0ePTSNPTNlQ2CuoiAFKQoCVW9I4gG0IPQpMaS2/LjtSEAzpXLNBa1YScN4mMKwhtoLQTg/G45U4oE=',
    'nxXjNaoPR3nyOZdj6V6XkblsiNXOlPoeb6BPc21TzsGg0ZB86nQYUh1zjznWe8UOwsapPCP3dMFNQdQSEPzviHkQ1di6eJQVZ5RoVYndqy7kZjKa+60rr1+AAwI8/gO6/TjqNmDLN7ZOjA0GNfUGX0841cTBfCk/OHgLiPxPdW4=',
    'AVhH9SbmQD1AYXxxX0SfmqNv9cgJd9eGzTz4aEzyyFk9uqt8wkw7Qbt40z4HelaDjLhZCft66ar+bHVdoZXgLCOnffYDH1eRdSwK6tZqnQiERyxXBomAuDCg4kDXgfYQ+dF2dbPc0riPPYOZ9dBCTdKxjL0TFRwRdsm+s4TttXk=',
  ],
};

let pssKeysRecoverSalt: boolean | undefined;

/**
 * Whether an id-RSASSA-PSS key without parameters, given to `crypto.verify`
 * alone, verifies as RSA-PSS with MGF1 of the digest and the salt length
 * recovered: OpenSSL's defaults for such a key (padding PSS; salt "auto" to
 * verify), checked once on a known answer (each salt verifies, a changed
 * message or signature does not) rather than assumed of the OpenSSL that
 * node:crypto was built with.
 */
export function pssKeysVerifyAnySalt(): boolean {
  if (pssKeysRecoverSalt === undefined) {
    pssKeysRecoverSalt = false;
    try {
      const key = unrestrictedPssKey(createPublicKey({ key: { kty: 'RSA', n: KNOWN.n, e: 'AQAB' }, format: 'jwk' }));
      if (key !== null) {
        const message = Buffer.from(KNOWN.message);
        const sigs = KNOWN.signatures.map((s) => Buffer.from(s, 'base64'));
        const changed = Buffer.from(sigs[1]!);
        changed[77] = changed[77]! ^ 0x10;
        pssKeysRecoverSalt =
          sigs.every((sig) => cryptoVerify('sha256', message, key, sig)) &&
          !cryptoVerify('sha256', message, key, changed) &&
          !cryptoVerify('sha256', Buffer.from(`${KNOWN.message}.`), key, sigs[2]!);
      }
    } catch {
      pssKeysRecoverSalt = false;
    }
  }
  return pssKeysRecoverSalt;
}

/** Set by `fromDer` for the constructor it calls (private fields need the constructor). */
let fromDerInput: Uint8Array | undefined;
const EMPTY = new Uint8Array(0);

function nowMs(): number {
  return Date.now();
}

/** Rust's `f64 as i64` (NaN is 0, saturating); exact below 2^53. */
function asI64(x: number): number {
  if (Number.isNaN(x)) return 0;
  return Math.trunc(x);
}

/** The native `NativeCertificate`, on `node:crypto`. */
export class JsCertificate {
  /** @internal the certificate DER (shipped to worker threads). */
  readonly der: Uint8Array;
  /** @internal node:crypto public key, made once. */
  readonly publicKey: KeyObject;
  /** @internal signature length in bytes. */
  readonly signatureLen: number;
  readonly #id: string;
  readonly #issuer: string;
  readonly #serial: string;
  readonly #notBefore: number;
  readonly #notAfter: number;
  readonly #bits: number;
  readonly #pss: PssRestriction | null;
  /**
   * What `crypto.verify` is given for this key, made once: the same key as an
   * unrestricted id-RSASSA-PSS key where that verifies with the salt
   * recovered (see `pssKeysVerifyAnySalt`: no per-call options for node:crypto
   * to set on the context, about 3% of a verification here), else the RSA key
   * with PSS padding and the salt "auto".
   */
  readonly #verifyKey: KeyObject | { key: KeyObject; padding: number; saltLength: number };

  constructor(pem: Uint8Array) {
    let der: Uint8Array;
    if (fromDerInput !== undefined) {
      der = fromDerInput;
      fromDerInput = undefined;
    } else {
      if (!(pem instanceof Uint8Array)) invalid('no PEM certificate found');
      const block = firstBlockLabelled(pem, ['CERTIFICATE', 'X509 CERTIFICATE']);
      if (block === undefined) invalid('no PEM certificate found');
      const decoded = decodeBlock(block);
      if (decoded === undefined) invalid('the PEM certificate is not valid base64');
      der = decoded;
    }
    const parsed = JsCertificate.#parse(der);
    this.der = der;
    this.publicKey = parsed.key;
    this.signatureLen = (parsed.bits + 7) >> 3;
    this.#id = parsed.id;
    this.#issuer = parsed.issuer;
    this.#serial = parsed.serial;
    this.#notBefore = parsed.notBefore;
    this.#notAfter = parsed.notAfter;
    this.#bits = parsed.bits;
    this.#pss = parsed.pss;
    this.#verifyKey = (pssKeysVerifyAnySalt() ? unrestrictedPssKey(parsed.key) : null) ?? {
      key: parsed.key,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_AUTO,
    };
  }

  /** Loads a DER certificate (the core's `Certificate::from_der`); the bytes are copied. */
  static fromDer(der: Uint8Array): JsCertificate {
    if (!(der instanceof Uint8Array)) invalid('could not parse the X.509 certificate');
    fromDerInput = Buffer.from(der);
    try {
      return new JsCertificate(EMPTY);
    } finally {
      fromDerInput = undefined;
    }
  }

  static #parse(der: Uint8Array): {
    key: KeyObject;
    bits: number;
    id: string;
    issuer: string;
    serial: string;
    notBefore: number;
    notAfter: number;
    pss: PssRestriction | null;
  } {
    const parts = parseCertificate(der);
    if (parts === undefined) invalid('could not parse the X.509 certificate');
    const pub = readPublicKey(parts.spki);
    if (pub.kind === 'bad') invalid("could not read the certificate's public key");
    if (pub.kind === 'other') {
      fail('ERR_UNSUPPORTED_KEY_TYPE', 'Invalid certificate: Non-RSA certificates are not supported.');
    }
    const issuer = issuerString(parts.issuer);
    if (issuer === undefined) {
      invalid(
        'the issuer name is not valid DER text (unsorted RDN, invalid string, or a value that is not a string)',
      );
    }
    const serial = integerToDecimal(parts.serial);
    return {
      key: pub.key,
      bits: pub.bits,
      id: `${issuer} ${serial}`,
      issuer,
      serial,
      notBefore: parts.notBefore,
      notAfter: parts.notAfter,
      pss: pub.pss,
    };
  }

  /** Celery's `get_id()`: issuer values joined by spaces, a space, the decimal serial. */
  get id(): string {
    return this.#id;
  }

  /** Celery's `get_issuer()`. */
  get issuer(): string {
    return this.#issuer;
  }

  /** The serial number in decimal (may be negative, as Python reads it). */
  get serial(): string {
    return this.#serial;
  }

  /** notAfter in milliseconds since the epoch. */
  get notAfterMs(): number {
    return this.#notAfter * 1000;
  }

  /** notBefore in milliseconds since the epoch. */
  get notBeforeMs(): number {
    return this.#notBefore * 1000;
  }

  get bits(): number {
    return this.#bits;
  }

  /** Celery's `has_expired()`: `now >= notAfter`. */
  hasExpired(nowMs: number): boolean {
    return asI64(nowMs) >= this.#notAfter * 1000;
  }

  /** `now < notBefore`. */
  isNotYetValid(nowMs: number): boolean {
    return asI64(nowMs) < this.#notBefore * 1000;
  }

  /** Celery's `Certificate.verify`: expired certificates (and ones not valid yet) refuse, any salt length. */
  verify(data: Uint8Array, signature: Uint8Array, digestName: string): void {
    const digest = digestFromName(digestName);
    const now = nowMs();
    if (this.hasExpired(now)) fail('ERR_CERTIFICATE_EXPIRED', `Expired certificate: '${this.#id}'`);
    if (this.isNotYetValid(now)) fail('ERR_CERTIFICATE_EXPIRED', `Certificate not yet valid: '${this.#id}'`);
    if (!this.verifySignature(data, signature, digest)) fail('ERR_BAD_SIGNATURE', 'Bad signature');
  }

  /** @internal The signature check alone (no expiry check): RSA-PSS, MGF1(digest), any salt. */
  verifySignature(data: Uint8Array, signature: Uint8Array, digest: DigestName): boolean {
    if (signature.length !== this.signatureLen) return false;
    if (this.#pss !== null && !pssAllows(this.#pss, this.#bits, digest)) return false;
    try {
      return cryptoVerify(digest, data, this.#verifyKey, signature);
    } catch {
      return false;
    }
  }
}
