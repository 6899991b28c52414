import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { toBytes, type Bytes, type Digest } from './bytes.js';
import { SecurityError } from './errors.js';
import { call, native, type NativeCertificate, type NativeCertStore } from './native.js';
import { checkDigest } from './options.js';
import { subjectOf } from './subject.js';

/**
 * An X.509 certificate with an RSA public key (Celery's `Certificate`).
 * `id` and `issuer` are exactly Celery's `get_id()` and `get_issuer()`.
 */
export class Certificate {
  /** @internal */
  readonly native: NativeCertificate;
  /** Celery's `get_id()`: the issuer's attribute values, a space, the decimal serial. */
  readonly id: string;
  /** Celery's `get_issuer()`: the issuer's attribute values joined by spaces, unescaped, in DER order. */
  readonly issuer: string;
  readonly serialNumber: bigint;
  readonly notAfter: Date;
  /** Public modulus size in bits. */
  readonly bits: number;
  /**
   * The subject's common name (OID 2.5.4.3; the first, when there are
   * several), as Python `cryptography` decodes it, or `null`. Not part of
   * Celery's id: `authorize` rules of a worker may name a signer by it.
   */
  readonly commonName: string | null;
  /** The subject as Python `cryptography`'s `Name.rfc4514_string()` writes it (`CN=billing-api,O=Acme`), or `''`. */
  readonly subject: string;

  constructor(pem: Bytes) {
    const bytes = toBytes(pem, 'pem');
    const n = call(() => new native.NativeCertificate(bytes));
    this.native = n;
    this.id = n.id;
    this.issuer = n.issuer;
    this.serialNumber = BigInt(n.serial);
    this.notAfter = new Date(n.notAfterMs);
    this.bits = n.bits;
    const subject = subjectOf(bytes);
    this.commonName = subject?.commonName ?? null;
    this.subject = subject?.rfc4514 ?? '';
  }

  /** Celery's `has_expired()`: `now >= notAfter`. */
  hasExpired(now: Date = new Date()): boolean {
    return this.native.hasExpired(now.getTime());
  }

  /**
   * Celery's `Certificate.verify`: throws `SecurityError` (`ERR_CERTIFICATE_EXPIRED`
   * or `ERR_BAD_SIGNATURE`) unless `signature` is a valid RSA-PSS signature of
   * `data`, whatever its salt length.
   */
  verify(data: Bytes, signature: Uint8Array, digest: Digest = 'sha256'): void {
    const d = checkDigest(digest);
    const bytes = toBytes(data, 'data');
    call(() => this.native.verify(bytes, signature, d));
  }

  /** Celery's name for {@link Certificate.id}. */
  getId(): string {
    return this.id;
  }

  /** Celery's name for {@link Certificate.issuer}. */
  getIssuer(): string {
    return this.issuer;
  }

  /** Celery's name for {@link Certificate.serialNumber}. */
  getSerialNumber(): bigint {
    return this.serialNumber;
  }
}

/** Certificates by Celery id (Celery's `CertStore`). */
export class CertStore implements Iterable<Certificate> {
  /** @internal */
  readonly native: NativeCertStore = new native.NativeCertStore();
  readonly #certs = new Map<string, Certificate>();

  constructor(certs?: Iterable<Certificate>) {
    if (certs) for (const cert of certs) this.add(cert);
  }

  /** Adds a certificate; a second one with the same id throws `ERR_DUPLICATE_CERTIFICATE`. */
  add(cert: Certificate): void {
    if (!(cert instanceof Certificate)) throw new TypeError('cert must be a Certificate');
    call(() => this.native.add(cert.native));
    this.#certs.set(cert.id, cert);
  }

  /** Celery's `add_cert`. */
  addCert(cert: Certificate): void {
    this.add(cert);
  }

  /** The certificate with this id; an unknown id throws `ERR_UNKNOWN_CERTIFICATE`. */
  get(id: Bytes): Certificate {
    const key = typeof id === 'string' ? id : Buffer.from(id).toString('utf8');
    const cert = this.#certs.get(key);
    if (!cert) throw new SecurityError('ERR_UNKNOWN_CERTIFICATE', `Unknown certificate: ${JSON.stringify(key)}`);
    return cert;
  }

  has(id: Bytes): boolean {
    const key = typeof id === 'string' ? id : Buffer.from(id).toString('utf8');
    return this.#certs.has(key);
  }

  get size(): number {
    return this.#certs.size;
  }

  /** Celery's `itercerts()`. */
  itercerts(): IterableIterator<Certificate> {
    return this.#certs.values();
  }

  [Symbol.iterator](): IterableIterator<Certificate> {
    return this.#certs.values();
  }
}

/**
 * Celery's `FSCertStore`: every certificate matched by `path` — a directory
 * means `dir/*`, anything else is a glob pattern. An unreadable, invalid or
 * expired certificate throws `SecurityError`.
 */
export class FSCertStore extends CertStore {
  constructor(path: string) {
    super();
    let pattern = path;
    if (isDirectory(path)) pattern = join(path, '*');
    for (const file of glob(pattern)) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new SecurityError('ERR_INVALID_CERTIFICATE', `Unreadable certificate file: ${JSON.stringify(file)}`, {
          cause: err,
        });
      }
      const cert = new Certificate(text);
      if (cert.hasExpired()) {
        throw new SecurityError('ERR_CERTIFICATE_EXPIRED', `Expired certificate: ${JSON.stringify(cert.id)}`);
      }
      this.add(cert);
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const MAGIC = /[*?[]/;

/** Python `fnmatch` translation of one path component. */
function componentRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, close);
      i = close;
      if (body.startsWith('!')) body = '^' + body.slice(1);
      re += '[' + body.replace(/\\/g, '\\\\') + ']';
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/** Python `glob.glob` (non-recursive): hidden names only match a pattern starting with a dot. Sorted. */
export function glob(pattern: string): string[] {
  const absolute = pattern.startsWith('/');
  const parts = pattern.split('/').filter((p, i) => p !== '' || i === 0);
  let current: string[] = [absolute ? '/' : ''];
  for (const part of parts) {
    if (part === '') continue;
    const next: string[] = [];
    for (const base of current) {
      if (!MAGIC.test(part)) {
        next.push(base === '' ? part : join(base, part));
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(base === '' ? '.' : base);
      } catch {
        continue;
      }
      const re = componentRegExp(part);
      for (const name of names) {
        if (name.startsWith('.') && !part.startsWith('.')) continue;
        if (re.test(name)) next.push(base === '' ? name : join(base, name));
      }
    }
    current = next;
  }
  return current.filter((p) => p !== '' && exists(p)).sort();
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
