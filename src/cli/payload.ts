/**
 * `celery-sign sign`, `verify` and `inspect`: a payload of Celery's `auth`
 * serializer, from a file or stdin.
 *
 * @internal
 * @module
 */
import { FSCertStore, type CertStore } from '../certificate.js';
import { SecurityError } from '../errors.js';
import { SecureSerializer } from '../serializer.js';
import type { Digest } from '../bytes.js';
import type { WireFormat } from '../options.js';
import { PrivateKey } from '../keys.js';
import { loadCert } from './id.js';
import { CliError, EXIT, flag, need, printJson, readInput, readPasswordFile, readPayload, str, UsageError, type Command, type Parsed } from './common.js';

const DIGESTS = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'];

function digestOf(p: Parsed): Digest {
  const d = str(p, 'digest') ?? 'sha256';
  if (!DIGESTS.includes(d)) throw new UsageError(`--digest must be one of ${DIGESTS.join(', ')}`);
  return d as Digest;
}

function wireFormatOf(p: Parsed): WireFormat {
  const f = str(p, 'wire-format') ?? '5.5';
  if (f === '5.5' || f === 'celery-5.5') return 'celery-5.5';
  if (f === '5.4' || f === 'celery-5.4') return 'celery-5.4';
  throw new UsageError('--wire-format must be 5.5 or 5.4');
}

/** Loads a store (a directory or a glob), or fails with one line. */
export function loadStore(path: string): CertStore {
  try {
    return new FSCertStore(path);
  } catch (e) {
    throw new CliError(`the store ${path} does not load: ${(e as Error).message.split('\n')[0]}`);
  }
}

export const signCmd: Command = {
  summary: 'sign a message body as Celery\'s auth serializer does',
  help: `Usage: celery-sign sign --key FILE --cert FILE [options] [INPUT]

Signs INPUT (a file, or stdin when absent or -) as Celery's auth serializer
does and prints the payload (base64, one line). INPUT is a JSON document,
serialized with kombu's json (content type application/json); with --binary
its bytes are signed as they are (application/data, binary).

Options:
  -k, --key FILE               the signer's private key
      --key-password-file FILE its password (first line)
  -c, --cert FILE              the signer's certificate
      --digest NAME            sha256 (default), sha1, sha224, sha384, sha512
      --wire-format V          5.5 (default, Celery >= 5.5) or 5.4 (Celery <= 5.4)
      --binary                 sign INPUT's bytes as application/data
  -h, --help                   this text

Example:
  echo '{"hello": "world"}' | celery-sign sign --key worker.key --cert worker.pem > payload.txt`,
  options: {
    key: { type: 'string', short: 'k' },
    'key-password-file': { type: 'string' },
    cert: { type: 'string', short: 'c' },
    digest: { type: 'string' },
    'wire-format': { type: 'string' },
    binary: { type: 'boolean' },
  },
  allowPositionals: true,
  async run(p, io) {
    if (p.positionals.length > 1) throw new UsageError('give at most one input');
    const keyPath = need(p, 'key');
    const certPath = need(p, 'cert');
    const digest = digestOf(p);
    const wireFormat = wireFormatOf(p);
    const pwFile = str(p, 'key-password-file');
    const password = pwFile === undefined ? null : readPasswordFile(pwFile);
    const keyPem = readInput(keyPath, 'key');
    let key: PrivateKey;
    try {
      key = new PrivateKey(keyPem, password);
    } catch (e) {
      const msg = (e as Error).message.split('\n')[0]!;
      throw new CliError(`key ${keyPath} does not load${password === null && /encrypt|password/i.test(msg) ? ' (encrypted? give --key-password-file)' : ''}: ${msg}`);
    }
    const cert = loadCert(certPath);
    const input = await readPayload(p.positionals[0], io);
    let data: unknown = input;
    if (!flag(p, 'binary')) {
      try {
        data = JSON.parse(input.toString('utf8'));
      } catch {
        throw new CliError('the input is not JSON (pass --binary to sign its bytes)');
      }
    }
    const s = new SecureSerializer({ key, cert, digest, wireFormat, ...(flag(p, 'binary') ? { serializer: 'raw' } : {}) });
    let payload: string;
    try {
      payload = s.serialize(data);
    } catch (e) {
      throw new CliError(`cannot sign: ${(e as Error).message.split('\n')[0]}`);
    }
    io.stdout.write(payload + '\n');
    return EXIT.OK;
  },
};

/** The fields of a payload, read without the key or the store (as far as they can be). */
export interface Unpacked {
  format: WireFormat;
  signer: string;
  signatureBytes: number;
  contentType: string;
  contentEncoding: string;
  body: Buffer;
}

const SEP = Buffer.from([0, 1]);
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function fieldsAfter(raw: Buffer, at: number): { contentType: string; contentEncoding: string; body: Buffer } | null {
  const s1 = raw.indexOf(SEP, at);
  if (s1 < 0) return null;
  const s2 = raw.indexOf(SEP, s1 + 2);
  if (s2 < 0) return null;
  return { contentType: raw.subarray(at, s1).toString('utf8'), contentEncoding: raw.subarray(s1 + 2, s2).toString('utf8'), body: raw.subarray(s2 + 2) };
}

/**
 * The auth payload of the input: the payload itself, or, for a whole kombu
 * message as a broker holds it (the JSON of a Redis list element: `body`,
 * `content-type`, `properties.body_encoding`), its body.
 */
export function payloadText(input: Buffer): string {
  const text = input.toString('utf8').trim();
  if (!text.startsWith('{')) return text;
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new CliError('not a Celery auth payload, nor a kombu message (JSON that does not parse)');
  }
  const m = msg as { body?: unknown; 'content-type'?: unknown; properties?: { body_encoding?: unknown } };
  if (typeof m.body !== 'string') throw new CliError('a JSON input must be a kombu message with a string body');
  if (m['content-type'] !== undefined && m['content-type'] !== 'application/data') {
    throw new CliError(`the message's content type is ${JSON.stringify(m['content-type'])}, not application/data: it is not signed by the auth serializer`);
  }
  return m.properties?.body_encoding === 'base64' ? Buffer.from(m.body, 'base64').toString('latin1').trim() : m.body.trim();
}

/**
 * Splits a payload into its fields. Celery 5.5 writes
 * `b64(b64(signer) SEP b64(signature) SEP type SEP encoding SEP body)`; 5.4
 * the signer and the signature raw, the signature `bits / 8` bytes long
 * (taken from the store when the signer is in it, else the usual sizes tried).
 */
export function unpack(payload: Buffer, store: CertStore | null): Unpacked {
  const text = payloadText(payload);
  if (text === '' || !/^[A-Za-z0-9+/=\s]*$/.test(text)) throw new CliError('not a Celery auth payload: not base64');
  const raw = Buffer.from(text.replace(/\s+/g, ''), 'base64');
  const first = raw.indexOf(SEP);
  if (first < 0) throw new CliError('not a Celery auth payload: no field separator');
  const f0 = raw.subarray(0, first).toString('latin1');
  const s1 = raw.indexOf(SEP, first + 2);
  if (B64.test(f0) && s1 > 0 && B64.test(raw.subarray(first + 2, s1).toString('latin1'))) {
    const rest = fieldsAfter(raw, s1 + 2);
    if (rest) {
      return {
        format: 'celery-5.5',
        signer: Buffer.from(f0, 'base64').toString('utf8'),
        signatureBytes: Buffer.from(raw.subarray(first + 2, s1).toString('latin1'), 'base64').length,
        ...rest,
      };
    }
  }
  const signer = raw.subarray(0, first).toString('utf8');
  const sizes = store && store.has(signer) ? [store.get(signer).bits / 8] : [256, 384, 512, 128];
  for (const n of sizes) {
    const end = first + 2 + n;
    if (raw.length >= end + 2 && raw[end] === 0 && raw[end + 1] === 1) {
      const rest = fieldsAfter(raw, end + 2);
      if (rest) return { format: 'celery-5.4', signer, signatureBytes: n, ...rest };
    }
  }
  throw new CliError('not a Celery auth payload: too few fields');
}

function verifyWith(store: CertStore, payload: Buffer, digest: Digest, contentType: string | null) {
  const s = new SecureSerializer({ store, digest, ...(contentType ? { accept: [contentType] } : {}) });
  try {
    payloadText(payload);
  } catch (e) {
    if (e instanceof CliError) return { ok: false as const, code: 'ERR_MALFORMED_PAYLOAD', message: e.message };
    throw e;
  }
  try {
    const value = s.deserialize(payloadText(payload));
    return { ok: true as const, value };
  } catch (e) {
    if (e instanceof SecurityError) return { ok: false as const, code: e.code, message: e.message.split('\n')[0]! };
    throw e;
  }
}

function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: v.length, base64: Buffer.from(v).toString('base64') };
  return v;
}

export const verifyCmd: Command = {
  summary: 'verify a payload against a certificate store and print its body',
  help: `Usage: celery-sign verify --store DIR-OR-GLOB [options] [PAYLOAD]

Verifies PAYLOAD (a file, or stdin when absent or -; a payload or a whole kombu
message as a Redis queue holds it) as a Celery worker does:
the signer's certificate from the store, the signature, then the body decoded.
Prints the signer and the body; exit status 1 with the error code
(ERR_BAD_SIGNATURE, ERR_UNKNOWN_CERTIFICATE, ...) if it does not verify.

Options:
  -s, --store DIR-OR-GLOB  the trusted certificates (Celery's security_cert_store)
      --digest NAME        sha256 (default), sha1, sha224, sha384, sha512
      --json               print {"ok", "signer", "value"} or {"ok": false, "code", "message"}
  -h, --help               this text`,
  options: { store: { type: 'string', short: 's' }, digest: { type: 'string' }, json: { type: 'boolean' } },
  allowPositionals: true,
  async run(p, io) {
    if (p.positionals.length > 1) throw new UsageError('give at most one payload');
    const store = loadStore(need(p, 'store'));
    const digest = digestOf(p);
    const payload = await readPayload(p.positionals[0], io);
    let signer: string | null = null;
    let contentType: string | null = null;
    try {
      const u = unpack(payload, store);
      signer = u.signer;
      contentType = u.contentType;
    } catch {
      // verifyWith reports ERR_MALFORMED_PAYLOAD as the worker would.
    }
    const r = verifyWith(store, payload, digest, contentType);
    if (flag(p, 'json')) printJson(io, r.ok ? { ok: true, signer, value: plain(r.value) } : r);
    else if (r.ok) io.stdout.write(`verified: signed by ${signer}\n${JSON.stringify(plain(r.value))}\n`);
    else io.stderr.write(`celery-sign verify: does not verify: ${r.code}: ${r.message}\n`);
    return r.ok ? EXIT.OK : EXIT.VERDICT;
  },
};

const PREVIEW = 200;

export const inspectCmd: Command = {
  summary: 'show what a payload is: wire format, signer, content type, body',
  help: `Usage: celery-sign inspect [--store DIR-OR-GLOB] [options] [PAYLOAD]

Shows PAYLOAD (a file, or stdin when absent or -) without needing any key (a
payload, or a whole kombu message as a Redis queue holds it: its body is read):
its wire format (Celery 5.5 or 5.4), the signer id, the signature size, the
content type and encoding, the body size and a preview. With --store, also
whether it verifies against those certificates and, if not, the error code;
exit status 1 when it does not.

Options:
  -s, --store DIR-OR-GLOB  check the signature against these certificates
      --digest NAME        sha256 (default), sha1, sha224, sha384, sha512
      --json               print the fields as JSON
  -h, --help               this text`,
  options: { store: { type: 'string', short: 's' }, digest: { type: 'string' }, json: { type: 'boolean' } },
  allowPositionals: true,
  async run(p, io) {
    if (p.positionals.length > 1) throw new UsageError('give at most one payload');
    const storePath = str(p, 'store');
    const store = storePath === undefined ? null : loadStore(storePath);
    const digest = digestOf(p);
    const payload = await readPayload(p.positionals[0], io);
    const u = unpack(payload, store);
    const bodyText = u.body.toString('utf8');
    const printable = !bodyText.includes('\ufffd') && !/[\x00-\x08\x0e-\x1f]/.test(bodyText);
    const preview = printable
      ? bodyText.length > PREVIEW ? bodyText.slice(0, PREVIEW) + '...' : bodyText
      : u.body.subarray(0, 48).toString('hex') + (u.body.length > 48 ? '...' : '');
    const verification = store ? verifyWith(store, payload, digest, u.contentType) : null;
    const info = {
      wireFormat: u.format,
      signer: u.signer,
      signatureBytes: u.signatureBytes,
      contentType: u.contentType,
      contentEncoding: u.contentEncoding,
      bodyBytes: u.body.length,
      preview,
      previewEncoding: printable ? 'text' : 'hex',
      verified: verification === null ? null : verification.ok,
      ...(verification && !verification.ok ? { code: verification.code, message: verification.message } : {}),
    };
    if (flag(p, 'json')) printJson(io, info);
    else {
      io.stdout.write(
        `wire format:      ${u.format === 'celery-5.5' ? 'Celery 5.5 (base64 signer and signature)' : 'Celery 5.4 (raw signer and signature)'}\n` +
          `signer id:        ${u.signer}\n` +
          `signature:        ${u.signatureBytes} bytes (RSA ${u.signatureBytes * 8})\n` +
          `content type:     ${u.contentType}\n` +
          `content encoding: ${u.contentEncoding}\n` +
          `body:             ${u.body.length} bytes\n` +
          `preview:          ${printable ? preview : '(hex) ' + preview}\n` +
          `verifies:         ${verification === null ? '(not checked: give --store)' : verification.ok ? `yes, against ${storePath}` : `no: ${verification.code}: ${verification.message}`}\n`,
      );
    }
    return verification && !verification.ok ? EXIT.VERDICT : EXIT.OK;
  },
};
