/**
 * RSA private keys from PEM, on `node:crypto`: a port of
 * `crates/core/src/key.rs` and of what the native path's AWS-LC does under it
 * (`PEM_read_bio_PrivateKey`: the PEM reader, the legacy `Proc-Type`
 * decryption, PKCS#8 and its PBES2 / PKCS#12 PBES1 decryption, the strict
 * RSA key parser and `RSA_check_key`), so that the same inputs load and the
 * same ones are refused, with the same codes and messages.
 *
 * node's OpenSSL 3 lacks RC2, RC4 and single DES in its default provider:
 * those are done here (RC2 and RC4 in JS, DES as 3DES with one key thrice).
 * Error messages never carry key bytes or passwords.
 *
 * @internal
 * @module
 */
import {
  createDecipheriv,
  createECDH,
  ECDH,
  createHash,
  createPrivateKey,
  constants,
  pbkdf2Sync,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import { Cbs, bitLength, equalBytes, isValidInteger } from './der.js';
import { digestFromName, type DigestName } from './digest.js';
import { fail } from './errors.js';
import { firstBlock } from './pem.js';

// ---------------------------------------------------------------------------
// OIDs (contents bytes)

export const OID_RSA = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/** `NID_rsa` (X.509's 2.5.8.1.1) and `NID_rsaesOaep`: AWS-LC reads both as RSA. */
export const OID_RSA_X500 = [0x55, 0x08, 0x01, 0x01];
export const OID_RSAES_OAEP = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/** The other key types AWS-LC parses (then refused as non-RSA). */
export const OTHER_KEY_OIDS: readonly (readonly number[])[] = [
  [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01], // id-ecPublicKey
  [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01], // id-dsa
  [0x2b, 0x65, 0x70], // Ed25519
  [0x2b, 0x65, 0x6e], // X25519
  [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x03, 0x01], // dhKeyAgreement
];
export const OID_RSA_PSS = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_PBES2 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBKDF2 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const OID_HMAC_SHA1 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
const OID_HMAC_SHA256 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const OID_PBE_SHA1_RC2_40 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
const OID_PBE_SHA1_RC4_128 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x01];
const OID_PBE_SHA1_3DES = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];

/** Ciphers the native path decrypts with. */
interface Cipher {
  readonly name: 'rc2-cbc' | 'rc2-40-cbc' | 'rc4' | 'des-cbc' | 'des-ede3-cbc' | 'aes-128-cbc' | 'aes-192-cbc' | 'aes-256-cbc';
  readonly keyLen: number;
  readonly ivLen: number;
}
const RC2_CBC: Cipher = { name: 'rc2-cbc', keyLen: 16, ivLen: 8 };
const RC2_40_CBC: Cipher = { name: 'rc2-40-cbc', keyLen: 5, ivLen: 8 };
const RC4: Cipher = { name: 'rc4', keyLen: 16, ivLen: 0 };
const DES_CBC: Cipher = { name: 'des-cbc', keyLen: 8, ivLen: 8 };
const DES_EDE3_CBC: Cipher = { name: 'des-ede3-cbc', keyLen: 24, ivLen: 8 };
const AES_128_CBC: Cipher = { name: 'aes-128-cbc', keyLen: 16, ivLen: 16 };
const AES_192_CBC: Cipher = { name: 'aes-192-cbc', keyLen: 24, ivLen: 16 };
const AES_256_CBC: Cipher = { name: 'aes-256-cbc', keyLen: 32, ivLen: 16 };

/** PBES2 encryption schemes (AWS-LC's `kCipherOIDs`). */
const PBES2_CIPHERS: ReadonlyArray<readonly [readonly number[], Cipher]> = [
  [[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x02], RC2_CBC],
  [[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07], DES_EDE3_CBC],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02], AES_128_CBC],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16], AES_192_CBC],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a], AES_256_CBC],
];

/** Legacy `DEK-Info` names (AWS-LC's `cipher_by_name`). */
const PEM_CIPHERS: ReadonlyMap<string, Cipher> = new Map([
  ['DES-CBC', DES_CBC],
  ['DES-EDE3-CBC', DES_EDE3_CBC],
  ['AES-128-CBC', AES_128_CBC],
  ['AES-192-CBC', AES_192_CBC],
  ['AES-256-CBC', AES_256_CBC],
]);

/** A decryption or parse failure inside the loader; mapped to the core's message. */
class Refused extends Error {}
function refuse(): never {
  throw new Refused('refused');
}

// ---------------------------------------------------------------------------
// RC2 (RFC 2268) and RC4: not in node's default OpenSSL 3 provider.

const RC2_TABLE = Uint8Array.from([
  0xd9, 0x78, 0xf9, 0xc4, 0x19, 0xdd, 0xb5, 0xed, 0x28, 0xe9, 0xfd, 0x79, 0x4a, 0xa0, 0xd8, 0x9d, 0xc6, 0x7e, 0x37,
  0x83, 0x2b, 0x76, 0x53, 0x8e, 0x62, 0x4c, 0x64, 0x88, 0x44, 0x8b, 0xfb, 0xa2, 0x17, 0x9a, 0x59, 0xf5, 0x87, 0xb3,
  0x4f, 0x13, 0x61, 0x45, 0x6d, 0x8d, 0x09, 0x81, 0x7d, 0x32, 0xbd, 0x8f, 0x40, 0xeb, 0x86, 0xb7, 0x7b, 0x0b, 0xf0,
  0x95, 0x21, 0x22, 0x5c, 0x6b, 0x4e, 0x82, 0x54, 0xd6, 0x65, 0x93, 0xce, 0x60, 0xb2, 0x1c, 0x73, 0x56, 0xc0, 0x14,
  0xa7, 0x8c, 0xf1, 0xdc, 0x12, 0x75, 0xca, 0x1f, 0x3b, 0xbe, 0xe4, 0xd1, 0x42, 0x3d, 0xd4, 0x30, 0xa3, 0x3c, 0xb6,
  0x26, 0x6f, 0xbf, 0x0e, 0xda, 0x46, 0x69, 0x07, 0x57, 0x27, 0xf2, 0x1d, 0x9b, 0xbc, 0x94, 0x43, 0x03, 0xf8, 0x11,
  0xc7, 0xf6, 0x90, 0xef, 0x3e, 0xe7, 0x06, 0xc3, 0xd5, 0x2f, 0xc8, 0x66, 0x1e, 0xd7, 0x08, 0xe8, 0xea, 0xde, 0x80,
  0x52, 0xee, 0xf7, 0x84, 0xaa, 0x72, 0xac, 0x35, 0x4d, 0x6a, 0x2a, 0x96, 0x1a, 0xd2, 0x71, 0x5a, 0x15, 0x49, 0x74,
  0x4b, 0x9f, 0xd0, 0x5e, 0x04, 0x18, 0xa4, 0xec, 0xc2, 0xe0, 0x41, 0x6e, 0x0f, 0x51, 0xcb, 0xcc, 0x24, 0x91, 0xaf,
  0x50, 0xa1, 0xf4, 0x70, 0x39, 0x99, 0x7c, 0x3a, 0x85, 0x23, 0xb8, 0xb4, 0x7a, 0xfc, 0x02, 0x36, 0x5b, 0x25, 0x55,
  0x97, 0x31, 0x2d, 0x5d, 0xfa, 0x98, 0xe3, 0x8a, 0x92, 0xae, 0x05, 0xdf, 0x29, 0x10, 0x67, 0x6c, 0xba, 0xc9, 0xd3,
  0x00, 0xe6, 0xcf, 0xe1, 0x9e, 0xa8, 0x2c, 0x63, 0x16, 0x01, 0x3f, 0x58, 0xe2, 0x89, 0xa9, 0x0d, 0x38, 0x34, 0x1b,
  0xab, 0x33, 0xff, 0xb0, 0xbb, 0x48, 0x0c, 0x5f, 0xb9, 0xb1, 0xcd, 0x2e, 0xc5, 0xf3, 0xdb, 0x47, 0xe5, 0xa5, 0x9c,
  0x77, 0x0a, 0xa6, 0x20, 0x68, 0xfe, 0x7f, 0xc1, 0xad,
]);

function rc2Schedule(key: Uint8Array, bits: number): Uint16Array {
  const k = new Uint8Array(128);
  const len = Math.min(key.length, 128);
  k.set(key.subarray(0, len));
  let d = k[len - 1]!;
  for (let i = len, j = 0; i < 128; i++, j++) {
    d = RC2_TABLE[(k[j]! + d) & 0xff]!;
    k[i] = d;
  }
  const j = (bits + 7) >> 3;
  let i = 128 - j;
  const c = 0xff >> (-bits & 0x07);
  d = RC2_TABLE[k[i]! & c]!;
  k[i] = d;
  while (i--) {
    d = RC2_TABLE[k[i + j]! ^ d]!;
    k[i] = d;
  }
  const ks = new Uint16Array(64);
  for (let n = 0; n < 64; n++) ks[n] = k[2 * n]! | (k[2 * n + 1]! << 8);
  return ks;
}

function rc2DecryptBlock(ks: Uint16Array, b: Uint8Array, off: number, out: Uint8Array): void {
  let x0 = b[off]! | (b[off + 1]! << 8);
  let x1 = b[off + 2]! | (b[off + 3]! << 8);
  let x2 = b[off + 4]! | (b[off + 5]! << 8);
  let x3 = b[off + 6]! | (b[off + 7]! << 8);
  let n = 3;
  let i = 5;
  let p = 63;
  for (;;) {
    x3 = ((x3 << 11) | (x3 >> 5)) & 0xffff;
    x3 = (x3 - ((x0 & ~x2) + (x1 & x2) + ks[p--]!)) & 0xffff;
    x2 = ((x2 << 13) | (x2 >> 3)) & 0xffff;
    x2 = (x2 - ((x3 & ~x1) + (x0 & x1) + ks[p--]!)) & 0xffff;
    x1 = ((x1 << 14) | (x1 >> 2)) & 0xffff;
    x1 = (x1 - ((x2 & ~x0) + (x3 & x0) + ks[p--]!)) & 0xffff;
    x0 = ((x0 << 15) | (x0 >> 1)) & 0xffff;
    x0 = (x0 - ((x1 & ~x3) + (x2 & x3) + ks[p--]!)) & 0xffff;
    if (--i === 0) {
      if (--n === 0) break;
      i = n === 2 ? 6 : 5;
      x3 = (x3 - ks[x2 & 0x3f]!) & 0xffff;
      x2 = (x2 - ks[x1 & 0x3f]!) & 0xffff;
      x1 = (x1 - ks[x0 & 0x3f]!) & 0xffff;
      x0 = (x0 - ks[x3 & 0x3f]!) & 0xffff;
    }
  }
  out[0] = x0 & 0xff;
  out[1] = x0 >> 8;
  out[2] = x1 & 0xff;
  out[3] = x1 >> 8;
  out[4] = x2 & 0xff;
  out[5] = x2 >> 8;
  out[6] = x3 & 0xff;
  out[7] = x3 >> 8;
}

/** PKCS#7 unpadding as `EVP_DecryptFinal_ex` checks it. */
function unpad(plain: Uint8Array, block: number): Buffer {
  if (plain.length === 0 || plain.length % block !== 0) refuse();
  const n = plain[plain.length - 1]!;
  if (n === 0 || n > block) refuse();
  for (let i = plain.length - n; i < plain.length; i++) if (plain[i] !== n) refuse();
  return Buffer.from(plain.subarray(0, plain.length - n));
}

function rc2CbcDecrypt(key: Uint8Array, bits: number, iv: Uint8Array, data: Uint8Array): Buffer {
  if (data.length === 0 || data.length % 8 !== 0) refuse();
  const ks = rc2Schedule(key, bits);
  const out = new Uint8Array(data.length);
  const blk = new Uint8Array(8);
  let prev = iv;
  for (let off = 0; off < data.length; off += 8) {
    rc2DecryptBlock(ks, data, off, blk);
    for (let i = 0; i < 8; i++) out[off + i] = blk[i]! ^ prev[i]!;
    prev = data.subarray(off, off + 8);
  }
  return unpad(out, 8);
}

function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  const s = new Uint8Array(256);
  for (let i = 0; i < 256; i++) s[i] = i;
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i]! + key[i % key.length]!) & 0xff;
    const t = s[i]!;
    s[i] = s[j]!;
    s[j] = t;
  }
  const out = Buffer.alloc(data.length);
  for (let n = 0, i = 0, j = 0; n < data.length; n++) {
    i = (i + 1) & 0xff;
    j = (j + s[i]!) & 0xff;
    const t = s[i]!;
    s[i] = s[j]!;
    s[j] = t;
    out[n] = data[n]! ^ s[(s[i]! + s[j]!) & 0xff]!;
  }
  return out;
}

/** Decrypts `data` as `EVP_DecryptUpdate` + `EVP_DecryptFinal_ex` would. */
function decrypt(cipher: Cipher, key: Uint8Array, iv: Uint8Array, data: Uint8Array): Buffer {
  switch (cipher.name) {
    case 'rc4':
      return rc4(key, data);
    case 'rc2-cbc':
      return rc2CbcDecrypt(key, 128, iv, data);
    case 'rc2-40-cbc':
      return rc2CbcDecrypt(key, 40, iv, data);
    default: {
      // Single DES is 3DES with the one key thrice (not in OpenSSL 3's default provider).
      const [name, k] =
        cipher.name === 'des-cbc' ? (['des-ede3-cbc', Buffer.concat([key, key, key])] as const) : ([cipher.name, key] as const);
      try {
        const d = createDecipheriv(name, k, iv);
        return Buffer.concat([d.update(data), d.final()]);
      } catch {
        return refuse();
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Key derivation

/** `EVP_BytesToKey(cipher, MD5, salt = iv[0..8], pass, count = 1)`: the key only. */
function bytesToKey(keyLen: number, pass: Uint8Array, salt: Uint8Array): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  let prev: Buffer | undefined;
  while (have < keyLen) {
    const h = createHash('md5');
    if (prev) h.update(prev);
    h.update(pass);
    h.update(salt);
    prev = h.digest();
    out.push(prev);
    have += prev.length;
  }
  return Buffer.concat(out).subarray(0, keyLen);
}

/** Strict UTF-8 to UCS-2 BE plus a NUL (AWS-LC's `pkcs12_encode_password`). */
function pkcs12Password(pass: Uint8Array): Buffer {
  const out: number[] = [];
  const n = pass.length;
  let i = 0;
  while (i < n) {
    const b = pass[i]!;
    let c: number;
    let need: number;
    let min: number;
    if (b < 0x80) {
      c = b;
      need = 0;
      min = 0;
    } else if ((b & 0xe0) === 0xc0) {
      c = b & 0x1f;
      need = 1;
      min = 0x80;
    } else if ((b & 0xf0) === 0xe0) {
      c = b & 0x0f;
      need = 2;
      min = 0x800;
    } else if ((b & 0xf8) === 0xf0) {
      c = b & 0x07;
      need = 3;
      min = 0x10000;
    } else {
      return refuse();
    }
    if (need > 0 && i + need >= n) return refuse();
    for (let k = 1; k <= need; k++) {
      const cc = pass[i + k]!;
      if ((cc & 0xc0) !== 0x80) return refuse();
      c = (c << 6) | (cc & 0x3f);
    }
    if (c < min) refuse();
    if (c > 0x10ffff || (c & 0xfffe) === 0xfffe || (c >= 0xfdd0 && c <= 0xfdef) || (c >= 0xd800 && c <= 0xdfff)) {
      refuse();
    }
    if (c > 0xffff) refuse();
    out.push(c >> 8, c & 0xff);
    i += need + 1;
  }
  out.push(0, 0);
  return Buffer.from(out);
}

/** RFC 7292 appendix B with SHA-1 (AWS-LC's `pkcs12_key_gen`). */
function pkcs12KeyGen(pass: Buffer, salt: Uint8Array, id: number, iterations: number, outLen: number): Buffer {
  const v = 64;
  const D = Buffer.alloc(v, id);
  const sLen = v * Math.ceil(salt.length / v);
  const pLen = v * Math.ceil(pass.length / v);
  const I = Buffer.alloc(sLen + pLen);
  for (let i = 0; i < sLen; i++) I[i] = salt[i % salt.length]!;
  for (let i = 0; i < pLen; i++) I[sLen + i] = pass[i % pass.length]!;
  const out = Buffer.alloc(outLen);
  let done = 0;
  const B = Buffer.alloc(v);
  while (done < outLen) {
    let A = createHash('sha1').update(D).update(I).digest();
    for (let r = 1; r < iterations; r++) A = createHash('sha1').update(A).digest();
    const todo = Math.min(outLen - done, A.length);
    A.copy(out, done, 0, todo);
    done += todo;
    if (done === outLen) break;
    for (let i = 0; i < v; i++) B[i] = A[i % A.length]!;
    for (let i = 0; i < I.length; i += v) {
      let carry = 1;
      for (let j = v - 1; j >= 0; j--) {
        carry += I[i + j]! + B[j]!;
        I[i + j] = carry & 0xff;
        carry >>= 8;
      }
    }
  }
  return out;
}

const ITERATIONS_LIMIT = 100_000_000n;

function iterationsOk(it: bigint | undefined): it is bigint {
  return it !== undefined && it > 0n && it <= ITERATIONS_LIMIT;
}

/** AWS-LC's `pkcs8_pbe_decrypt`: `algorithm` is the AlgorithmIdentifier's contents. */
function pbeDecrypt(algorithm: Uint8Array, pass: Uint8Array, ciphertext: Uint8Array): Buffer {
  const alg = new Cbs(algorithm);
  const oid = alg.get(0x06);
  if (oid === undefined) refuse();
  let cipher: Cipher;
  if (equalBytes(oid, OID_PBES2)) {
    const pbe = alg.get(0x30);
    if (pbe === undefined || alg.length !== 0) refuse();
    const p = new Cbs(pbe);
    const kdfBytes = p.get(0x30);
    const encBytes = kdfBytes === undefined ? undefined : p.get(0x30);
    if (kdfBytes === undefined || encBytes === undefined || p.length !== 0) refuse();
    const kdf = new Cbs(kdfBytes);
    const enc = new Cbs(encBytes);
    const kdfOid = kdf.get(0x06);
    const encOid = enc.get(0x06);
    if (kdfOid === undefined || encOid === undefined) refuse();
    if (!equalBytes(kdfOid, OID_PBKDF2)) refuse();
    const found = PBES2_CIPHERS.find(([o]) => equalBytes(encOid, o));
    if (found === undefined) refuse();
    cipher = found[1];
    const paramsBytes = kdf.get(0x30);
    if (paramsBytes === undefined || kdf.length !== 0) refuse();
    const params = new Cbs(paramsBytes);
    const salt = params.get(0x04);
    if (salt === undefined) refuse();
    const iterations = params.getUint64();
    if (iterations === undefined) refuse();
    if (!iterationsOk(iterations)) refuse();
    if (params.peekTag(0x02)) {
      const keyLen = params.getUint64();
      if (keyLen === undefined || keyLen !== BigInt(cipher.keyLen)) refuse();
    }
    let prf: 'sha1' | 'sha256' = 'sha1';
    if (params.length !== 0) {
      const algId = params.get(0x30);
      if (algId === undefined) refuse();
      const a = new Cbs(algId);
      const prfOid = a.get(0x06);
      if (prfOid === undefined || params.length !== 0) refuse();
      if (equalBytes(prfOid, OID_HMAC_SHA1)) prf = 'sha1';
      else if (equalBytes(prfOid, OID_HMAC_SHA256)) prf = 'sha256';
      else refuse();
      const nul = a.get(0x05);
      if (nul === undefined || nul.length !== 0 || a.length !== 0) refuse();
    }
    const iv = enc.get(0x04);
    if (iv === undefined || enc.length !== 0) refuse();
    if (iv.length !== cipher.ivLen) refuse();
    const key = pbkdf2Sync(pass, salt, Number(iterations), cipher.keyLen, prf);
    return decrypt(cipher, key, iv, ciphertext);
  }
  if (equalBytes(oid, OID_PBE_SHA1_RC2_40)) cipher = RC2_40_CBC;
  else if (equalBytes(oid, OID_PBE_SHA1_RC4_128)) cipher = RC4;
  else if (equalBytes(oid, OID_PBE_SHA1_3DES)) cipher = DES_EDE3_CBC;
  else return refuse();
  const pbe = alg.get(0x30);
  if (pbe === undefined) refuse();
  const p = new Cbs(pbe);
  const salt = p.get(0x04);
  if (salt === undefined) refuse();
  const iterations = p.getUint64();
  if (iterations === undefined || p.length !== 0 || alg.length !== 0) refuse();
  if (!iterationsOk(iterations)) refuse();
  const pw = pkcs12Password(pass);
  const it = Number(iterations);
  const key = pkcs12KeyGen(pw, salt, 1, it, cipher.keyLen);
  const iv = pkcs12KeyGen(pw, salt, 2, it, cipher.ivLen);
  return decrypt(cipher, key, iv, ciphertext);
}

// ---------------------------------------------------------------------------
// The PEM reader of AWS-LC (`PEM_read_bio`, `PEM_get_EVP_CIPHER_INFO`,
// `PEM_do_header`), on the bytes of the block the core found.

const END_PREFIX = Buffer.from('-----END ');

interface PemRead {
  name: string;
  header: Buffer;
  data: Buffer;
}

/** `BIO_gets(bp, buf, 254)` then the trailing trim `buf[i] <= ' '` (signed char) and `\n`. */
class Lines {
  private pos = 0;
  constructor(private readonly b: Uint8Array) {}
  next(): Buffer | undefined {
    const b = this.b;
    if (this.pos >= b.length) return undefined;
    const start = this.pos;
    let end = start;
    while (end < b.length && end - start < 253) {
      if (b[end++] === 0x0a) break;
    }
    this.pos = end;
    let i = end;
    while (i > start && (b[i - 1]! <= 0x20 || b[i - 1]! >= 0x80)) i--;
    // C string semantics: a NUL ends the line for strcmp/strlen but not for memcpy;
    // the base64 decoder then refuses it, as AWS-LC does.
    return Buffer.concat([b.subarray(start, i), Buffer.from('\n')]);
  }
}

function cstr(b: Buffer, from = 0): Buffer {
  const z = b.indexOf(0, from);
  return z < 0 ? b.subarray(from) : b.subarray(from, z);
}

function pemReadBio(bytes: Uint8Array): PemRead | undefined {
  const lines = new Lines(bytes);
  let buf: Buffer | undefined;
  let name: Buffer;
  for (;;) {
    buf = lines.next();
    if (buf === undefined) return undefined;
    if (buf.subarray(0, 11).toString('latin1') === '-----BEGIN ') {
      const rest = cstr(buf, 11);
      const i = rest.length;
      if (i < 6 || rest.subarray(i - 6).toString('latin1') !== '-----\n') continue;
      name = rest.subarray(0, i - 6);
      break;
    }
  }
  const headerParts: Buffer[] = [];
  let nohead = false;
  for (;;) {
    const line = lines.next();
    if (line === undefined) break;
    buf = line;
    if (buf[0] === 0x0a) break;
    if (buf.subarray(0, 9).equals(END_PREFIX)) {
      nohead = true;
      break;
    }
    headerParts.push(buf);
  }
  let header: Buffer;
  let data: Buffer;
  if (!nohead) {
    header = Buffer.concat(headerParts);
    const dataParts: Buffer[] = [];
    for (;;) {
      const line = lines.next();
      if (line === undefined) break;
      buf = line;
      const i = buf.length;
      const end = i !== 65;
      if (buf.subarray(0, 9).equals(END_PREFIX)) break;
      if (i > 65) break;
      dataParts.push(buf);
      if (end) {
        const after = lines.next();
        buf = after ?? Buffer.alloc(0);
        break;
      }
    }
    data = Buffer.concat(dataParts);
  } else {
    header = Buffer.alloc(0);
    data = Buffer.concat(headerParts);
  }
  const nm = cstr(name);
  if (
    !buf.subarray(0, 9).equals(END_PREFIX) ||
    !buf.subarray(9, 9 + nm.length).equals(nm) ||
    buf.subarray(9 + nm.length, 9 + nm.length + 6).toString('latin1') !== '-----\n'
  ) {
    return undefined;
  }
  const decoded = evpDecode(data);
  if (decoded === undefined || decoded.length === 0) return undefined;
  return { name: nm.toString('latin1'), header: cstr(header), data: decoded };
}

/** `EVP_DecodeUpdate` + `EVP_DecodeFinal`: skips space, tab, CR, LF; nothing after padding. */
function evpDecode(text: Buffer): Buffer | undefined {
  const out: number[] = [];
  const quad = [0, 0, 0, 0];
  let used = 0;
  let eof = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a) continue;
    if (eof) return undefined;
    quad[used++] = c;
    if (used === 4) {
      used = 0;
      const v = quad.map(b64val);
      if (v.some((x) => x < 0)) return undefined;
      const pad = (quad[0] === 0x3d ? 8 : 0) | (quad[1] === 0x3d ? 4 : 0) | (quad[2] === 0x3d ? 2 : 0) | (quad[3] === 0x3d ? 1 : 0);
      const n = (v[0]! << 18) | (v[1]! << 12) | (v[2]! << 6) | v[3]!;
      if (pad === 0) out.push((n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
      else if (pad === 1) out.push((n >> 16) & 0xff, (n >> 8) & 0xff);
      else if (pad === 3) out.push((n >> 16) & 0xff);
      else return undefined;
      if (pad !== 0) eof = true;
    }
  }
  if (used !== 0) return undefined;
  return Buffer.from(out);
}

function b64val(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  if (c === 0x2b) return 62;
  if (c === 0x2f) return 63;
  if (c === 0x3d) return 0;
  return -1;
}

function isHex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** `PEM_get_EVP_CIPHER_INFO`: undefined = refused; null = not encrypted. */
function cipherInfo(header: Buffer): { cipher: Cipher; iv: Buffer } | null | undefined {
  if (header.length === 0 || header[0] === 0x0a) return null;
  const s = header.toString('latin1');
  if (!s.startsWith('Proc-Type: ')) return undefined;
  let p = 11;
  if (s[p] !== '4') return undefined;
  p++;
  if (s[p] !== ',') return undefined;
  p++;
  if (!s.startsWith('ENCRYPTED', p)) return undefined;
  while (p < s.length && s[p] !== '\n') p++;
  if (p >= s.length) return undefined;
  p++;
  if (!s.startsWith('DEK-Info: ', p)) return undefined;
  p += 10;
  const nameStart = p;
  while (p < s.length && /[A-Z0-9-]/.test(s[p]!)) p++;
  const cipher = PEM_CIPHERS.get(s.slice(nameStart, p));
  p++;
  if (cipher === undefined) return undefined;
  const iv = Buffer.alloc(cipher.ivLen);
  for (let i = 0; i < cipher.ivLen * 2; i++) {
    const v = p + i < header.length ? isHex(header[p + i]!) : -1;
    if (v < 0) return undefined;
    iv[i >> 1]! |= v << ((i & 1) === 0 ? 4 : 0);
  }
  return { cipher, iv };
}

// ---------------------------------------------------------------------------
// Key structures (AWS-LC's EVP_parse_private_key, RSA_parse_private_key,
// RSA_check_key, RSASSA_PSS_parse_params)

interface RsaParsed {
  /** The RSAPrivateKey element, DER. */
  readonly der: Uint8Array;
  readonly bits: number;
}

function mod(a: bigint, m: bigint): bigint {
  return a % m;
}

/** `RSA_parse_private_key` + `RSA_check_key`; `cbs` advances past the element. */
function parseRsaPrivateKey(cbs: Cbs): RsaParsed | undefined {
  const before = cbs.data;
  const seq = cbs.get(0x30);
  if (seq === undefined) return undefined;
  const der = before.subarray(0, before.length - cbs.length);
  const c = new Cbs(seq);
  const version = c.getUint64();
  if (version !== 0n) return undefined;
  const v: bigint[] = [];
  for (let i = 0; i < 8; i++) {
    const x = c.getUnsigned();
    if (x === undefined) return undefined;
    v.push(x);
  }
  if (c.length !== 0) return undefined;
  const [n, e, d, p, q, dmp1, dmq1, iqmp] = v as [bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint];
  // A JCA "stripped" key (n, d): AWS-LC accepts it, node:crypto cannot use it.
  if (d !== 0n && n !== 0n && e === 0n && iqmp === 0n && p === 0n && q === 0n && dmp1 === 0n && dmq1 === 0n) {
    return undefined;
  }
  if (!publicGood(n, e)) return undefined;
  if (p >= n || q >= n) return undefined;
  if (p * q !== n) return undefined;
  const pm1 = p - 1n;
  const qm1 = q - 1n;
  if (pm1 <= 0n || qm1 <= 0n) return undefined;
  const de = d * e;
  if (mod(de, pm1) !== 1n || mod(de, qm1) !== 1n) return undefined;
  if (mod(d, pm1) !== dmp1 || mod(d, qm1) !== dmq1) return undefined;
  if (iqmp >= p) return undefined;
  if (mod(q * iqmp, p) !== 1n) return undefined;
  return { der, bits: bitLength(n) };
}

/** `is_public_component_of_rsa_key_good` + the exponent checks. */
export function publicGood(n: bigint, e: bigint): boolean {
  if (bitLength(n) > 16 * 1024) return false;
  if ((n & 1n) === 0n) return false;
  const eBits = bitLength(e);
  if ((e & 1n) === 0n || eBits < 2) return false;
  if (eBits > 33) return false;
  return true;
}

/**
 * The restrictions of an id-RSASSA-PSS key as AWS-LC applies them
 * (`RSASSA_PSS_PARAMS_get`, `pkey_pss_init`): absent fields default to
 * SHA-1, MGF1-SHA-1 and a 20-byte minimum salt.
 */
export interface PssRestriction {
  readonly md: DigestName;
  readonly mgf1: DigestName;
  readonly saltMin: number;
}

const PSS_HASHES: ReadonlyArray<readonly [readonly number[], DigestName]> = [
  [[0x2b, 0x0e, 0x03, 0x02, 0x1a], 'sha1'],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04], 'sha224'],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01], 'sha256'],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02], 'sha384'],
  [[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03], 'sha512'],
];
const MGF1 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const HASH_LEN: Readonly<Record<DigestName, number>> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 };

/**
 * `RSASSA_PSS_parse_params` on the AlgorithmIdentifier's remainder:
 * `null` when there are no parameters (no restriction), undefined when
 * they do not parse (the key is refused).
 */
export function parsePssParams(params: Uint8Array): PssRestriction | null | undefined {
  if (params.length === 0) return null;
  const outer = new Cbs(params);
  const seqBytes = outer.get(0x30);
  if (seqBytes === undefined || outer.length !== 0) return undefined;
  const seq = new Cbs(seqBytes);
  const absentOrNull = (c: Cbs): boolean => {
    if (c.length === 0) return true;
    const nul = c.get(0x05);
    return nul !== undefined && nul.length === 0 && c.length === 0;
  };
  const hashAlg = (c: Cbs): DigestName | undefined => {
    const s = c.get(0x30);
    if (s === undefined || c.length !== 0) return undefined;
    const sc = new Cbs(s);
    const oid = sc.get(0x06);
    if (oid === undefined || !absentOrNull(sc)) return undefined;
    return PSS_HASHES.find(([o]) => equalBytes(oid, o))?.[1];
  };
  let md: DigestName = 'sha1';
  let mgf1: DigestName = 'sha1';
  let saltMin = 20;
  const h = seq.get(0xa0);
  if (h !== undefined) {
    const d = hashAlg(new Cbs(h));
    if (d === undefined) return undefined;
    md = d;
  }
  const m = seq.get(0xa1);
  if (m !== undefined) {
    const c = new Cbs(m);
    const s = c.get(0x30);
    if (s === undefined || c.length !== 0) return undefined;
    const sc = new Cbs(s);
    const oid = sc.get(0x06);
    if (oid === undefined || !equalBytes(oid, MGF1)) return undefined;
    const d = hashAlg(sc);
    if (d === undefined) return undefined;
    mgf1 = d;
  }
  const int64 = (bytes: Uint8Array): bigint | undefined => {
    const c = new Cbs(bytes);
    const body = c.get(0x02);
    if (body === undefined || c.length !== 0 || body.length === 0 || body.length > 8) return undefined;
    if (body.length > 1 && ((body[0] === 0 && !(body[1]! & 0x80)) || (body[0] === 0xff && body[1]! & 0x80))) {
      return undefined;
    }
    let x = 0n;
    for (const b of body) x = (x << 8n) | BigInt(b);
    if (body[0]! & 0x80) x -= 1n << BigInt(body.length * 8);
    return x;
  };
  const sl = seq.get(0xa2);
  if (sl !== undefined) {
    const x = int64(sl);
    if (x === undefined || x < 0n) return undefined;
    // AWS-LC keeps it in an int: larger values make pkey_pss_init fail.
    saltMin = x > 0x7fffffffn ? Number.MAX_SAFE_INTEGER : Number(x);
  }
  const tf = seq.get(0xa3);
  if (tf !== undefined && int64(tf) !== 1n) return undefined;
  if (seq.length !== 0) return undefined;
  return { md, mgf1, saltMin };
}

/** `RSASSA_PSS_parse_params` succeeds. */
export function pssParamsOk(params: Uint8Array): boolean {
  return parsePssParams(params) !== undefined;
}

/**
 * Whether AWS-LC lets a context for a key with this restriction sign or
 * verify with `digest` (MGF1 = digest, salt -2): `pkey_pss_init` needs the
 * minimum salt to fit, the digest and MGF1 digest must be the key's.
 */
export function pssAllows(r: PssRestriction | null, bits: number, digest: DigestName): boolean {
  if (r === null) return true;
  let max = ((bits + 7) >> 3) - HASH_LEN[r.md] - 2;
  if ((bits & 7) === 1) max--;
  if (r.saltMin > max) return false;
  return digest === r.md && digest === r.mgf1;
}

// --- the non-RSA keys AWS-LC parses (then refused as non-RSA): EC and DSA checks

const CURVES: ReadonlyArray<readonly [readonly number[], string]> = [
  [[0x2b, 0x81, 0x04, 0x00, 0x21], 'secp224r1'],
  [[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], 'prime256v1'],
  [[0x2b, 0x81, 0x04, 0x00, 0x22], 'secp384r1'],
  [[0x2b, 0x81, 0x04, 0x00, 0x23], 'secp521r1'],
  [[0x2b, 0x81, 0x04, 0x00, 0x0a], 'secp256k1'],
];

/** `EC_KEY_parse_parameters` for a named curve: the curve, or undefined. */
function curveOf(c: Cbs): string | undefined {
  const oid = c.get(0x06);
  if (oid === undefined) return undefined;
  return CURVES.find(([o]) => equalBytes(oid, o))?.[1];
}

/** `EC_KEY_parse_private_key` + `EC_KEY_check_key` (RFC 5915 ECPrivateKey). */
function ecKeyOk(cbs: Cbs, group: string | undefined): boolean {
  const body = cbs.get(0x30);
  if (body === undefined) return false;
  const c = new Cbs(body);
  if (c.getUint64() !== 1n) return false;
  const d = c.get(0x04);
  if (d === undefined) return false;
  let curve = group;
  if (c.peekTag(0xa0)) {
    const child = c.get(0xa0);
    if (child === undefined) return false;
    const cc = new Cbs(child);
    const inner = curveOf(cc);
    if (inner === undefined || (curve !== undefined && curve !== inner) || cc.length !== 0) return false;
    curve = inner;
  }
  if (curve === undefined) return false;
  let ecdh;
  try {
    ecdh = createECDH(curve);
    ecdh.setPrivateKey(Buffer.from(d));
  } catch {
    return false;
  }
  if (c.peekTag(0xa1)) {
    const child = c.get(0xa1);
    if (child === undefined) return false;
    const cc = new Cbs(child);
    const bits = cc.get(0x03);
    if (bits === undefined || bits.length < 2 || bits[0] !== 0 || cc.length !== 0) return false;
    let given: Buffer;
    try {
      // Validates the point (on the curve) and normalises compressed forms.
      given = ECDH.convertKey(Buffer.from(bits.subarray(1)), curve, undefined, undefined, 'uncompressed') as Buffer;
    } catch {
      return false;
    }
    if (!given.equals(ecdh.getPublicKey(null, 'uncompressed'))) return false;
  }
  return c.length === 0;
}

/** `DSA_parse_private_key` / `dsa_priv_decode` with `dsa_check_key`. */
export function dsaParamsOk(p: bigint, q: bigint, g: bigint): boolean {
  if (p === 0n || q === 0n || (p & 1n) === 0n || (q & 1n) === 0n || q >= p || g === 0n || g >= p) return false;
  const qb = bitLength(q);
  if (qb !== 160 && qb !== 224 && qb !== 256) return false;
  return bitLength(p) <= 10000;
}

function dsaTraditionalOk(cbs: Cbs): boolean {
  const body = cbs.get(0x30);
  if (body === undefined) return false;
  const c = new Cbs(body);
  if (c.getUint64() !== 0n) return false;
  const v: bigint[] = [];
  for (let i = 0; i < 5; i++) {
    const x = c.getUnsigned();
    if (x === undefined) return false;
    v.push(x);
  }
  if (c.length !== 0) return false;
  const [p, q, g, pub, priv] = v as [bigint, bigint, bigint, bigint, bigint];
  if (!dsaParamsOk(p, q, g)) return false;
  if (pub === 0n || pub >= p) return false;
  return priv !== 0n && priv < q;
}

function dsaPkcs8Ok(params: Cbs, key: Uint8Array): boolean {
  const seq = params.get(0x30);
  if (seq === undefined || params.length !== 0) return false;
  const c = new Cbs(seq);
  const p = c.getUnsigned();
  const q = p === undefined ? undefined : c.getUnsigned();
  const g = q === undefined ? undefined : c.getUnsigned();
  if (p === undefined || q === undefined || g === undefined || c.length !== 0) return false;
  const k = new Cbs(key);
  const x = k.getUnsigned();
  if (x === undefined || k.length !== 0) return false;
  return dsaParamsOk(p, q, g) && x !== 0n && x < q;
}

type Loaded =
  | { kind: 'rsa'; key: KeyObject; pss: PssRestriction | null }
  | { kind: 'other' }
  | { kind: 'bad' };

function nodeKey(der: Uint8Array, type: 'pkcs1' | 'pkcs8' | 'sec1'): KeyObject | undefined {
  try {
    return createPrivateKey({ key: Buffer.from(der), format: 'der', type });
  } catch {
    return undefined;
  }
}

/** `EVP_parse_private_key` (PKCS#8 PrivateKeyInfo, trailing data ignored). */
function parsePkcs8(der: Uint8Array): Loaded {
  const outer = new Cbs(der);
  const start = outer.data;
  const body = outer.get(0x30);
  if (body === undefined) return { kind: 'bad' };
  const element = start.subarray(0, start.length - outer.length);
  const p = new Cbs(body);
  const version = p.getUint64();
  if (version === undefined || version > 1n) return { kind: 'bad' };
  const algBytes = p.get(0x30);
  if (algBytes === undefined) return { kind: 'bad' };
  const keyBytes = p.get(0x04);
  if (keyBytes === undefined) return { kind: 'bad' };
  const alg = new Cbs(algBytes);
  const oid = alg.get(0x06);
  if (oid === undefined) return { kind: 'bad' };
  const isRsa = equalBytes(oid, OID_RSA) || equalBytes(oid, OID_RSA_X500) || equalBytes(oid, OID_RSAES_OAEP);
  const isPss = equalBytes(oid, OID_RSA_PSS);
  if (p.peekTag(0xa0) && p.get(0xa0) === undefined) return { kind: 'bad' };
  let hasPub = false;
  if (p.peekTag(0x81)) {
    if (version !== 1n || p.get(0x81) === undefined) return { kind: 'bad' };
    hasPub = true;
  }
  if (isRsa || isPss) {
    if (isRsa) {
      if (hasPub) return { kind: 'bad' };
      const nul = alg.get(0x05);
      if (nul === undefined || nul.length !== 0 || alg.length !== 0) return { kind: 'bad' };
    }
    const pss = isRsa ? null : parsePssParams(alg.data);
    if (pss === undefined) return { kind: 'bad' };
    const k = new Cbs(keyBytes);
    const rsa = parseRsaPrivateKey(k);
    if (rsa === undefined || k.length !== 0) return { kind: 'bad' };
    // node gets the RSA-PSS PrivateKeyInfo whole (its parameters restrict the key);
    // a plain RSA key as PKCS#1.
    const key = isRsa ? nodeKey(rsa.der, 'pkcs1') : nodeKey(element, 'pkcs8');
    return key === undefined ? { kind: 'bad' } : { kind: 'rsa', key, pss };
  }
  // Another algorithm AWS-LC knows: refused as non-RSA when it parses at all.
  // (DH has no private-key decoder in AWS-LC.)
  if (!OTHER_KEY_OIDS.some((o) => equalBytes(oid, o)) || equalBytes(oid, OTHER_KEY_OIDS[4]!)) return { kind: 'bad' };
  if (equalBytes(oid, OTHER_KEY_OIDS[0]!)) {
    if (hasPub) return { kind: 'bad' };
    const curve = alg.peekTag(0x06) ? curveOf(alg) : undefined;
    if (curve === undefined || alg.length !== 0) return { kind: 'bad' };
    const k = new Cbs(keyBytes);
    if (!ecKeyOk(k, curve) || k.length !== 0) return { kind: 'bad' };
    return { kind: 'other' };
  }
  if (equalBytes(oid, OTHER_KEY_OIDS[1]!)) {
    if (hasPub || !dsaPkcs8Ok(alg, keyBytes)) return { kind: 'bad' };
    return { kind: 'other' };
  }
  const key = nodeKey(element, 'pkcs8');
  return key === undefined ? { kind: 'bad' } : { kind: 'other' };
}

/** `c2i_ASN1_OBJECT`'s checks: non-empty, no 0x80-led sub-identifier, the last one ended. */
function validOid(b: Uint8Array): boolean {
  if (b.length === 0 || b[b.length - 1]! & 0x80) return false;
  for (let i = 0; i < b.length; i++) if (b[i] === 0x80 && (i === 0 || !(b[i - 1]! & 0x80))) return false;
  return true;
}

/** `X509_ALGOR`: SEQUENCE { OBJECT, ANY OPTIONAL }. */
function templateAlgorOk(c: Cbs): boolean {
  const body = c.get(0x30);
  if (body === undefined) return false;
  const a = new Cbs(body);
  const oid = a.get(0x06);
  if (oid === undefined || !validOid(oid)) return false;
  if (a.length !== 0 && a.getAny() === undefined) return false;
  return a.length === 0;
}

/**
 * `d2i_PKCS8_PRIV_KEY_INFO`, the template the clear `PRIVATE KEY` label goes
 * through before `EVP_parse_private_key`: version, algorithm, key,
 * `[0] IMPLICIT SET OF Attribute` optional, nothing else (no v2 public key).
 */
function templatePkcs8Ok(der: Uint8Array): boolean {
  const outer = new Cbs(der);
  const body = outer.get(0x30);
  if (body === undefined) return false;
  const p = new Cbs(body);
  const version = p.get(0x02);
  if (version === undefined || !isValidInteger(version)) return false;
  if (!templateAlgorOk(p)) return false;
  if (p.get(0x04) === undefined) return false;
  if (p.peekTag(0xa0)) {
    const attrBytes = p.get(0xa0);
    if (attrBytes === undefined) return false;
    const attrs = new Cbs(attrBytes);
    while (attrs.length !== 0) {
      const attr = attrs.get(0x30);
      if (attr === undefined) return false;
      const a = new Cbs(attr);
      const oid = a.get(0x06);
      if (oid === undefined || !validOid(oid)) return false;
      const set = a.get(0x31);
      if (set === undefined || a.length !== 0) return false;
      const values = new Cbs(set);
      while (values.length !== 0) if (values.getAny() === undefined) return false;
    }
  }
  return p.length === 0;
}

/** `PEM_read_bio_PrivateKey` on the block, with the core's password callback. */
function loadPem(block: Uint8Array, password: Uint8Array | null): Loaded {
  // The callback copies at most PEM_BUFSIZE (1024) bytes; longer gives length 0.
  const pass = password === null ? new Uint8Array(0) : password.length > 1024 ? new Uint8Array(0) : password;
  const read = pemReadBio(block);
  if (read === undefined) return { kind: 'bad' };
  const allowed = ['ENCRYPTED PRIVATE KEY', 'PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'DSA PRIVATE KEY'];
  if (!allowed.includes(read.name)) return { kind: 'bad' };
  const info = cipherInfo(read.header);
  if (info === undefined) return { kind: 'bad' };
  let data: Uint8Array = read.data;
  if (info !== null) {
    data = decrypt(info.cipher, bytesToKey(info.cipher.keyLen, pass, info.iv.subarray(0, 8)), info.iv, data);
  }
  switch (read.name) {
    case 'PRIVATE KEY':
      return templatePkcs8Ok(data) ? parsePkcs8(data) : { kind: 'bad' };
    case 'ENCRYPTED PRIVATE KEY': {
      // X509_SIG: SEQUENCE { AlgorithmIdentifier, OCTET STRING }
      const outer = new Cbs(data);
      const sig = outer.get(0x30);
      if (sig === undefined) return { kind: 'bad' };
      const s = new Cbs(sig);
      const alg = s.get(0x30);
      const ct = alg === undefined ? undefined : s.get(0x04);
      if (alg === undefined || ct === undefined || s.length !== 0) return { kind: 'bad' };
      // PKCS8_decrypt re-encodes the key (EVP_PKEY2PKCS8): AWS-LC has no
      // encoder for RSA-PSS keys, so an encrypted id-RSASSA-PSS key fails.
      const loaded = parsePkcs8(pbeDecrypt(alg, pass, ct));
      return loaded.kind === 'rsa' && loaded.key.asymmetricKeyType === 'rsa-pss' ? { kind: 'bad' } : loaded;
    }
    case 'RSA PRIVATE KEY': {
      const rsa = parseRsaPrivateKey(new Cbs(data));
      if (rsa !== undefined) {
        const key = nodeKey(rsa.der, 'pkcs1');
        return key === undefined ? { kind: 'bad' } : { kind: 'rsa', key, pss: null };
      }
      const p8 = parsePkcs8(data);
      if (p8.kind !== 'rsa') return { kind: 'bad' };
      // EVP_PKEY_RSA only: an RSA-PSS key under this label is a different type.
      return p8.key.asymmetricKeyType === 'rsa' ? p8 : { kind: 'bad' };
    }
    default: {
      // EC or DSA: the traditional form, else PKCS#8 of the same type.
      const ok = read.name === 'EC PRIVATE KEY' ? ecKeyOk(new Cbs(data), undefined) : dsaTraditionalOk(new Cbs(data));
      if (ok) return { kind: 'other' };
      const outer = new Cbs(data);
      const body = outer.get(0x30);
      if (body === undefined) return { kind: 'bad' };
      const p = new Cbs(body);
      p.getUint64();
      const algBytes = p.get(0x30);
      const oid = algBytes === undefined ? undefined : new Cbs(algBytes).get(0x06);
      const want = read.name === 'EC PRIVATE KEY' ? OTHER_KEY_OIDS[0]! : OTHER_KEY_OIDS[1]!;
      if (oid === undefined || !equalBytes(oid, want)) return { kind: 'bad' };
      return parsePkcs8(data).kind === 'other' ? { kind: 'other' } : { kind: 'bad' };
    }
  }
}

function invalid(msg: string): never {
  return fail('ERR_INVALID_KEY', `Invalid private key: ${msg}`);
}

function bytesArg(x: unknown): Uint8Array {
  if (x instanceof Uint8Array) return x;
  return invalid('no PEM private key found');
}

/** The native `NativePrivateKey`, on `node:crypto`. */
export class JsPrivateKey {
  /** @internal node:crypto private key, made once. */
  readonly keyObject: KeyObject;
  /** @internal signature length in bytes. */
  readonly size: number;
  readonly #bits: number;
  readonly #pss: boolean;
  readonly #restriction: PssRestriction | null;

  constructor(pem: Uint8Array, password?: Uint8Array | null) {
    const data = bytesArg(pem);
    const pw = password === undefined || password === null ? null : bytesArg(password);
    const block = firstBlock(data);
    if (block === undefined) invalid('no PEM private key found');
    if (!block.label.endsWith('PRIVATE KEY')) invalid('the PEM block is not a private key');
    const encrypted = block.label === 'ENCRYPTED PRIVATE KEY' || block.legacyEncrypted;
    if (!encrypted && pw !== null) invalid('a password was given but the private key is not encrypted');
    if (encrypted && pw === null) invalid('the private key is encrypted but no password was given');
    let loaded: Loaded;
    try {
      loaded = loadPem(block.bytes, pw);
    } catch {
      loaded = { kind: 'bad' };
    }
    if (loaded.kind === 'bad') {
      if (encrypted) invalid('could not decrypt the private key (wrong password or unsupported cipher)');
      invalid('could not parse the private key (expected PEM PKCS#1 or PKCS#8)');
    }
    if (loaded.kind === 'other') {
      fail('ERR_UNSUPPORTED_KEY_TYPE', 'Invalid private key: Non-RSA keys are not supported.');
    }
    this.keyObject = loaded.key;
    this.#pss = loaded.key.asymmetricKeyType === 'rsa-pss';
    this.#restriction = loaded.pss;
    this.#bits = loaded.key.asymmetricKeyDetails?.modulusLength ?? 0;
    this.size = (this.#bits + 7) >> 3;
  }

  get bits(): number {
    return this.#bits;
  }

  /** RSA-PSS, MGF1(digest), maximum salt length. */
  sign(data: Uint8Array, digestName: string): Buffer {
    return this.signWith(data, digestFromName(digestName));
  }

  /** @internal `sign` with the digest already parsed. */
  signWith(data: Uint8Array, digest: DigestName): Buffer {
    if (!this.canSign(digest)) return fail('ERR_INVALID_KEY', 'Unable to sign data: the key cannot sign with this digest');
    try {
      return cryptoSign(digest, data, {
        key: this.keyObject,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN,
      });
    } catch {
      return fail('ERR_INVALID_KEY', 'Unable to sign data: the key cannot sign with this digest');
    }
  }

  /**
   * @internal Whether the native path would sign with this digest: an
   * id-RSASSA-PSS key with parameters signs only with its own digest and
   * MGF1 digest. (For the worker pool: `keyObject` is node's RSA-PSS key,
   * which enforces the digest itself but not an MGF1 digest that differs
   * from it; check `canSign` on the main thread before shipping a batch.)
   */
  canSign(digest: DigestName): boolean {
    return pssAllows(this.#restriction, this.#bits, digest);
  }

  /** @internal whether the key is an RSA-PSS (id-RSASSA-PSS) key. */
  get isPss(): boolean {
    return this.#pss;
  }
}
