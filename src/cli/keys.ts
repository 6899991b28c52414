/**
 * `celery-sign keygen` and `celery-sign certgen`.
 *
 * @internal
 * @module
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { Certificate } from '../certificate.js';
import { PrivateKey } from '../keys.js';
import {
  CliError,
  EXIT,
  flag,
  int,
  need,
  printJson,
  promptPassword,
  readInput,
  readPasswordFile,
  str,
  UsageError,
  writeNew,
  type Command,
  type Io,
  type Parsed,
} from './common.js';
import { buildCertificate, buildCsr, pem, type NameAttribute } from './x509.js';

const BITS = [2048, 3072, 4096];

async function newPassword(p: Parsed, io: Io): Promise<string | null> {
  const file = str(p, 'password-file');
  if (file !== undefined) return readPasswordFile(file);
  if (flag(p, 'encrypt')) return promptPassword(io, 'Password for the new key: ', true);
  return null;
}

export const keygen: Command = {
  summary: 'make an RSA private key (PKCS#8 PEM, file mode 0600)',
  help: `Usage: celery-sign keygen --out FILE [options]

Makes an RSA private key, PKCS#8 PEM, written with mode 0600. With a password
(--encrypt prompts for one on the terminal, without echo; --password-file reads
the first line of a file) the key is encrypted (PBES2, AES-256-CBC), as Celery's
security_key_password expects.

Options:
  -o, --out FILE           the key file to write (required)
  -b, --bits N             2048, 3072 or 4096 (default 3072)
  -e, --encrypt            encrypt with a password asked on the terminal
      --password-file FILE encrypt with the password in FILE (its first line)
  -f, --force              overwrite FILE if it exists
      --json               print {"path", "bits", "encrypted"} as JSON
  -h, --help               this text

Example:
  celery-sign keygen --bits 3072 --out worker.key`,
  options: {
    out: { type: 'string', short: 'o' },
    bits: { type: 'string', short: 'b' },
    encrypt: { type: 'boolean', short: 'e' },
    'password-file': { type: 'string' },
    force: { type: 'boolean', short: 'f' },
    json: { type: 'boolean' },
  },
  async run(p, io) {
    const out = need(p, 'out');
    const bits = int(p, 'bits', 3072);
    if (!BITS.includes(bits)) throw new UsageError(`--bits must be 2048, 3072 or 4096, not ${bits}`);
    const password = await newPassword(p, io);
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits, publicExponent: 0x10001 });
    const pemText = password
      ? privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: password })
      : privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeNew(out, pemText as string, 0o600, flag(p, 'force'));
    if (flag(p, 'json')) printJson(io, { path: out, bits, encrypted: password !== null });
    else io.stdout.write(`wrote ${out}: RSA ${bits}-bit private key, PKCS#8${password ? ', encrypted' : ''}, mode 0600\n`);
    return EXIT.OK;
  },
};

/** Loads a PEM private key with node:crypto (and checks it as celery-sign's PrivateKey would load it). */
export function loadKey(path: string, password: string | null, what = 'key'): KeyObject {
  const pemBytes = readInput(path, what);
  const text = pemBytes.toString('latin1');
  const encrypted = text.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----') || /Proc-Type:\s*4,ENCRYPTED/.test(text);
  if (encrypted && !password) throw new CliError(`${what} ${path} is encrypted: give its password file (--${what === 'key' ? '' : 'ca-'}key-password-file)`);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pemBytes, format: 'pem', ...(password ? { passphrase: password } : {}) });
  } catch (e) {
    const msg = (e as Error).message;
    if (/passphrase|password|decrypt|bad decrypt/i.test(msg) || (e as { code?: string }).code === 'ERR_MISSING_PASSPHRASE') {
      throw new CliError(password ? `cannot decrypt ${what} ${path}: wrong password` : `${what} ${path} is encrypted: give --key-password-file`);
    }
    throw new CliError(`${what} ${path} is not a PEM private key`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new CliError(`${what} ${path} is not an RSA key (Celery signs with RSA)`);
  // The same bytes must load in celery-sign (what the worker and client will do).
  try {
    new PrivateKey(pemBytes, password);
  } catch (e) {
    throw new CliError(`${what} ${path} does not load in celery-sign: ${(e as Error).message.split('\n')[0]}`);
  }
  return key;
}

function keyPassword(p: Parsed, option = 'key-password-file'): string | null {
  const f = str(p, option);
  return f === undefined ? null : readPasswordFile(f);
}

function subjectOf(p: Parsed): NameAttribute[] {
  const cn = need(p, 'cn');
  const attrs: NameAttribute[] = [];
  const c = str(p, 'country');
  if (c !== undefined) {
    if (!/^[A-Z]{2}$/.test(c)) throw new UsageError('--country must be two capital letters (ISO 3166), e.g. DE');
    attrs.push({ type: 'C', value: c });
  }
  const o = str(p, 'org');
  if (o !== undefined && o !== '') attrs.push({ type: 'O', value: o });
  const ou = str(p, 'unit');
  if (ou !== undefined && ou !== '') attrs.push({ type: 'OU', value: ou });
  attrs.push({ type: 'CN', value: cn });
  return attrs;
}

export const certgen: Command = {
  summary: 'make a certificate for a key (self-signed or issued by a CA), or a CSR',
  help: `Usage: celery-sign certgen --key FILE --cn NAME --out FILE [options]

Makes an X.509 v3 certificate for the RSA key FILE (sha256WithRSAEncryption),
self-signed or, with --ca-cert and --ca-key, issued by that CA; or, with --csr,
a PKCS#10 certificate signing request to send to an existing CA. Prints the
Celery signer id of the certificate (the issuer's attribute values and the
serial: what a worker's store is keyed by).

Options:
  -k, --key FILE               the subject's private key (required)
      --key-password-file FILE its password (first line), if it is encrypted
      --cn NAME                the subject's common name (required)
      --org NAME               the subject's organization (O)
      --unit NAME              the subject's organizational unit (OU)
      --country CC             the subject's country (C), two letters
  -d, --days N                 validity in days (default 365)
      --serial N               the serial number, decimal (default: 16 random bytes)
      --ca-cert FILE           issue the certificate with this CA certificate...
      --ca-key FILE            ...and this CA key (else self-signed)
      --ca-key-password-file FILE  the CA key's password
      --csr                    write a certificate signing request instead
  -o, --out FILE               the PEM file to write (required)
  -f, --force                  overwrite FILE if it exists
      --json                   print {"path", "id", "issuer", "serial", "notAfter"} as JSON
  -h, --help                   this text

Example:
  celery-sign certgen --key worker.key --cn worker-1 --days 365 --out worker.pem`,
  options: {
    key: { type: 'string', short: 'k' },
    'key-password-file': { type: 'string' },
    cn: { type: 'string' },
    org: { type: 'string' },
    unit: { type: 'string' },
    country: { type: 'string' },
    days: { type: 'string', short: 'd' },
    serial: { type: 'string' },
    'ca-cert': { type: 'string' },
    'ca-key': { type: 'string' },
    'ca-key-password-file': { type: 'string' },
    csr: { type: 'boolean' },
    out: { type: 'string', short: 'o' },
    force: { type: 'boolean', short: 'f' },
    json: { type: 'boolean' },
  },
  run(p, io) {
    const keyPath = need(p, 'key');
    const out = need(p, 'out');
    const subject = subjectOf(p);
    const days = int(p, 'days', 365);
    if (days < 1) throw new UsageError('--days must be at least 1');
    const key = loadKey(keyPath, keyPassword(p));
    if (flag(p, 'csr')) {
      for (const o of ['ca-cert', 'ca-key', 'serial']) if (str(p, o) !== undefined) throw new UsageError(`--csr takes no --${o}`);
      writeNew(out, pem('CERTIFICATE REQUEST', buildCsr(key, subject)), 0o644, flag(p, 'force'));
      if (flag(p, 'json')) printJson(io, { path: out, csr: true });
      else io.stdout.write(`wrote ${out}: certificate signing request for CN=${need(p, 'cn')}; the signer id is set by the CA that signs it\n`);
      return EXIT.OK;
    }
    const caCertPath = str(p, 'ca-cert');
    const caKeyPath = str(p, 'ca-key');
    if ((caCertPath === undefined) !== (caKeyPath === undefined)) throw new UsageError('--ca-cert and --ca-key go together');
    const serialText = str(p, 'serial');
    if (serialText !== undefined && !/^[1-9]\d*$/.test(serialText)) throw new UsageError('--serial must be a positive decimal number');
    let issuerCert: Buffer | undefined;
    let signingKey = key;
    if (caCertPath !== undefined && caKeyPath !== undefined) {
      const caPem = readInput(caCertPath, 'CA certificate');
      try {
        new Certificate(caPem);
      } catch (e) {
        throw new CliError(`CA certificate ${caCertPath} does not load: ${(e as Error).message.split('\n')[0]}`);
      }
      issuerCert = pemToDer(caPem.toString('latin1'), 'CERTIFICATE', caCertPath);
      signingKey = loadKey(caKeyPath, keyPassword(p, 'ca-key-password-file'), 'CA key');
    }
    let der: Buffer;
    try {
      der = buildCertificate({
        publicKey: createPublicKey(key),
        subject,
        days,
        signingKey,
        ...(issuerCert ? { issuerCert } : {}),
        ...(serialText !== undefined ? { serial: BigInt(serialText) } : {}),
      });
    } catch (e) {
      throw new CliError((e as Error).message);
    }
    const text = pem('CERTIFICATE', der);
    const cert = new Certificate(text);
    writeNew(out, text, 0o644, flag(p, 'force'));
    if (flag(p, 'json')) printJson(io, { path: out, id: cert.id, issuer: cert.issuer, serial: cert.serialNumber.toString(), notAfter: cert.notAfter.toISOString() });
    else {
      io.stdout.write(`wrote ${out}: ${issuerCert ? 'issued by ' + cert.issuer : 'self-signed'}, valid until ${cert.notAfter.toISOString()}\n`);
      io.stdout.write(`signer id: ${cert.id}\n`);
    }
    return EXIT.OK;
  },
};

/** The DER of the first PEM block labelled `label`. */
export function pemToDer(text: string, label: string, path: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
  if (!m) throw new CliError(`${path} has no ${label} PEM block`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
