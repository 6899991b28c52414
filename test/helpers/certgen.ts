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
  /** Unix seconds. */
  notBefore: number;
  /** Unix seconds. */
  notAfter: number;
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
      not_before: Math.floor(c.notBefore),
      not_after: Math.floor(c.notAfter),
    })),
  });
}

/** Unix seconds now. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export const certPath = (dir: string, name: string): string => join(dir, `${name}.cert.pem`);
export const keyPath = (dir: string, key: string): string => join(dir, `${key}.key.pem`);
