/**
 * Keys and self-signed certificates with chosen validity periods, made by the
 * test with Python `cryptography` (test/py/make_certs.py), for the rotation,
 * expiry and not-before tests.
 */
import { join } from 'node:path';
import { runPython, ROOT } from './python.js';

export interface CertSpec {
  /** File name: <dir>/<name>.cert.pem. */
  name: string;
  /** Key name: <dir>/<key>.key.pem. */
  key: string;
  serial: number;
  cn?: string;
  /** Unix seconds, or `{ in: s }`: s seconds from the moment the certificate is made. */
  notBefore: number | { in: number };
  /** Unix seconds, or `{ in: s }`. */
  notAfter: number | { in: number };
}

function time(field: string, v: number | { in: number }): Record<string, number> {
  return typeof v === 'number' ? { [field]: Math.floor(v) } : { [`${field}_in`]: Math.floor(v.in) };
}

/** Writes the keys (2048-bit RSA) and certificates into `dir`. */
export function makeCerts(dir: string, keys: string[], certs: CertSpec[]): void {
  runPython(join(ROOT, 'test', 'py', 'make_certs.py'), {
    dir,
    keys: Object.fromEntries(keys.map((k) => [k, 2048])),
    certs: certs.map((c) => ({
      name: c.name,
      key: c.key,
      serial: c.serial,
      cn: c.cn ?? c.name,
      ...time('not_before', c.notBefore),
      ...time('not_after', c.notAfter),
    })),
  });
}

/** Unix seconds now. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export const certPath = (dir: string, name: string): string => join(dir, `${name}.cert.pem`);
export const keyPath = (dir: string, key: string): string => join(dir, `${key}.key.pem`);

/** Writes the chain tests' PKI into `dir` (test/py/make_chain.py says what is in it). */
export function makeChainPki(dir: string): void {
  runPython(join(ROOT, 'test', 'py', 'make_chain.py'), { dir });
}

export const crlPath = (dir: string, name: string): string => join(dir, `${name}.crl.pem`);
