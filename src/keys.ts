import { toBytes, type Bytes, type Digest } from './bytes.js';
import { checkDigest } from './options.js';
import { call, native, type NativePrivateKey } from './native.js';

/**
 * An RSA private key (Celery's `PrivateKey`), from PEM: PKCS#1, PKCS#8,
 * encrypted PKCS#8 (PBES2) or legacy `Proc-Type: 4,ENCRYPTED`.
 * A non-RSA key throws `SecurityError` `ERR_UNSUPPORTED_KEY_TYPE`; garbage or a
 * wrong password `ERR_INVALID_KEY`.
 */
export class PrivateKey {
  /** @internal */
  readonly native: NativePrivateKey;

  constructor(pem: Bytes, password?: Bytes | null) {
    const pemBytes = toBytes(pem, 'pem');
    const pw = password == null ? null : toBytes(password, 'password');
    this.native = call(() => new native.NativePrivateKey(pemBytes, pw));
  }

  /** Modulus size in bits. */
  get bits(): number {
    return this.native.bits;
  }

  /** RSA-PSS signature with MGF1(digest) and the maximum salt length, as Celery signs. */
  sign(data: Bytes, digest: Digest = 'sha256'): Buffer {
    const d = checkDigest(digest);
    const bytes = toBytes(data, 'data');
    return call(() => this.native.sign(bytes, d));
  }

  /** Never reveals key material. */
  toJSON(): { type: 'PrivateKey'; bits: number } {
    return { type: 'PrivateKey', bits: this.bits };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `PrivateKey { bits: ${this.bits} }`;
  }
}
