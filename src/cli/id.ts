/**
 * `celery-sign id`.
 *
 * @internal
 * @module
 */
import { Certificate } from '../certificate.js';
import { CliError, EXIT, flag, printJson, readInput, UsageError, type Command } from './common.js';

/** What `id` shows of a certificate. */
export function describeCert(path: string, cert: Certificate, now = new Date()) {
  return {
    path,
    id: cert.id,
    issuer: cert.issuer,
    serial: cert.serialNumber.toString(),
    notAfter: cert.notAfter.toISOString(),
    expired: cert.hasExpired(now),
    bits: cert.bits,
  };
}

/** Loads a certificate file, or fails with one line. */
export function loadCert(path: string, what = 'certificate'): Certificate {
  const pemBytes = readInput(path, what);
  try {
    return new Certificate(pemBytes);
  } catch (e) {
    throw new CliError(`${what} ${path} does not load: ${(e as Error).message.split('\n')[0]}`);
  }
}

export const id: Command = {
  summary: "show a certificate's Celery signer id, issuer, serial and expiry",
  help: `Usage: celery-sign id [--json] CERT.pem...

For each certificate: the Celery signer id (what Celery's Certificate.get_id()
returns: the issuer's attribute values and the decimal serial, the key of a
worker's certificate store), the issuer, the serial, the modulus size, notAfter
and whether it has expired. Exit status 1 if any has expired.

Options:
  --json     print an array of {"path", "id", "issuer", "serial", "notAfter", "expired", "bits"}
  -h, --help this text`,
  options: { json: { type: 'boolean' } },
  allowPositionals: true,
  run(p, io) {
    if (p.positionals.length === 0) throw new UsageError('give at least one certificate file');
    const rows = p.positionals.map((path) => describeCert(path, loadCert(path)));
    if (flag(p, 'json')) printJson(io, rows);
    else {
      for (const r of rows) {
        io.stdout.write(
          `${r.path}\n  signer id: ${r.id}\n  issuer:    ${r.issuer}\n  serial:    ${r.serial}\n` +
            `  key:       RSA ${r.bits} bits\n  not after: ${r.notAfter}\n  expired:   ${r.expired ? 'yes' : 'no'}\n`,
        );
      }
    }
    return rows.some((r) => r.expired) ? EXIT.VERDICT : EXIT.OK;
  },
};
