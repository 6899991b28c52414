/**
 * TLS to the broker and the result backend, configured as Celery is:
 * `broker_use_ssl` and `redis_backend_use_ssl` (given to `createClient` and
 * `createWorker` as `brokerUseSsl` and `redisBackendUseSsl`, with Celery's
 * own keys and values), `rediss://` URLs with kombu's `ssl_*` query
 * parameters, and `amqps://`.
 *
 * What each side does, as Celery 5.7 / kombu 5.7 / redis-py / py-amqp do it:
 *
 * - Redis broker (kombu): TLS with `rediss://`, or with `broker_use_ssl` (or
 *   `ssl_*` URL parameters) on a `redis://` URL. The URL's `ssl_*` parameters,
 *   when there are any, replace `broker_use_ssl` (kombu's `parse_url`). Keys:
 *   `ssl_cert_reqs` (`required`, `optional`, `none` or `CERT_REQUIRED`...;
 *   default `required`, redis-py's), `ssl_ca_certs`, `ssl_certfile`,
 *   `ssl_keyfile`, `ssl_check_hostname` (default `true`, redis-py's).
 *   One difference, on the safe side: kombu connects to a bare `rediss://`
 *   with `CERT_NONE` (and a warning); celery-sign verifies the server against
 *   the system's CAs (write `ssl_cert_reqs=none` to have kombu's behaviour).
 * - Redis result backend (Celery's `RedisBackend`): TLS with `rediss://` or
 *   `redis_backend_use_ssl`; URL parameters override the dict's keys; and, as
 *   Celery, `ssl_cert_reqs` is REQUIRED (a `rediss://` URL without it is an
 *   `ImproperlyConfigured`, with Celery's message), and `ssl_*` parameters on
 *   a `redis://` URL are refused.
 * - AMQP (py-amqp's `SSLTransport`, kombu's pyamqp transport): TLS with
 *   `amqps://` or `broker_use_ssl` (port 5671 by default). Keys: `ca_certs`,
 *   `certfile`, `keyfile`, `cert_reqs` (default `CERT_REQUIRED`),
 *   `server_hostname`. One difference, on the safe side: py-amqp checks the
 *   host name only when `server_hostname` is given; celery-sign always checks
 *   it (against `server_hostname`, or the URL's host) unless `cert_reqs` is
 *   `CERT_NONE` or `check_hostname: false` (a celery-sign key) is given.
 *
 * With verification on, a server whose certificate does not chain to the
 * CA, does not name the host, or has expired is refused at connect with a
 * {@link WireError} (`ERR_BROKER`) whose message names the reason; so is a
 * server that demands a client certificate not given. Files are read once,
 * when the transport or backend opens (a missing or unreadable one is an
 * `ImproperlyConfigured` naming the setting and the path); their contents
 * never appear in an error or a log.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, rootCertificates, type ConnectionOptions } from 'node:tls';
import { ImproperlyConfigured } from '../errors.js';

/**
 * Celery's (Python `ssl`'s) certificate requirement: `ssl.CERT_NONE` (0),
 * `ssl.CERT_OPTIONAL` (1), `ssl.CERT_REQUIRED` (2), by name or, as kombu's and
 * Celery's URL parameters take it, `none` / `optional` / `required`. A client
 * treats `optional` as `required` (Python does: the server always sends a
 * certificate).
 */
export type CertReqs = 'CERT_NONE' | 'CERT_OPTIONAL' | 'CERT_REQUIRED' | 'none' | 'optional' | 'required' | 0 | 1 | 2;

/**
 * Celery's `broker_use_ssl` for a Redis broker and its `redis_backend_use_ssl`
 * (redis-py's `SSLConnection` arguments).
 */
export interface RedisSslOptions {
  /** Verify the server's certificate: default `'required'` (broker); REQUIRED for the result backend, as Celery. */
  ssl_cert_reqs?: CertReqs;
  /** PEM file of the CAs the server's certificate must chain to (added to the system's, as redis-py does). */
  ssl_ca_certs?: string;
  /** PEM file of this client's certificate (mutual TLS); it may hold the key too. */
  ssl_certfile?: string;
  /** PEM file of this client's private key. */
  ssl_keyfile?: string;
  /** Password of an encrypted `ssl_keyfile` (redis-py's `ssl_password`). */
  ssl_password?: string;
  /** Check that the certificate names the host (redis-py's default `true`; ignored with `none`). */
  ssl_check_hostname?: boolean;
}

/** Celery's `broker_use_ssl` for an AMQP broker (py-amqp's `SSLTransport` options). */
export interface AmqpSslOptions {
  /** PEM file of the CAs the server's certificate must chain to (only these; default: the system's). */
  ca_certs?: string;
  /** PEM file of this client's certificate (mutual TLS); it may hold the key too. */
  certfile?: string;
  /** PEM file of this client's private key. */
  keyfile?: string;
  /** Verify the server's certificate: default `CERT_REQUIRED`. */
  cert_reqs?: CertReqs;
  /** The name sent (SNI) and checked in the server's certificate; `null`: the URL's host (kombu). */
  server_hostname?: string | null;
  /** celery-sign's: `false` skips the host name check (the chain is still verified). Default `true`. */
  check_hostname?: boolean;
}

/** Celery's `broker_use_ssl`: `true` (TLS with the defaults) or the transport's options. */
export type BrokerUseSsl = boolean | RedisSslOptions | AmqpSslOptions;

type Reqs = 'none' | 'optional' | 'required';

const REQS: Record<string, Reqs> = {
  CERT_NONE: 'none',
  CERT_OPTIONAL: 'optional',
  CERT_REQUIRED: 'required',
  none: 'none',
  optional: 'optional',
  required: 'required',
  '0': 'none',
  '1': 'optional',
  '2': 'required',
};

function parseReqs(v: unknown, setting: string): Reqs | undefined {
  if (v === undefined || v === null) return undefined;
  const r = typeof v === 'string' || typeof v === 'number' ? REQS[String(v)] : undefined;
  if (!r) {
    throw new ImproperlyConfigured(`${setting} must be CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE (or required, optional, none), not ${JSON.stringify(v)}`);
  }
  return r;
}

function readPem(path: unknown, setting: string): Buffer | undefined {
  if (path === undefined || path === null || path === '') return undefined;
  if (typeof path !== 'string') throw new ImproperlyConfigured(`${setting} must be a file path`);
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ImproperlyConfigured(`${setting}: cannot read ${JSON.stringify(path)} (${code})`);
  }
}

function bool(v: unknown, setting: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'boolean') return v;
  // kombu's URL parameter: anything but 'false' is true.
  if (typeof v === 'string') return v.toLowerCase() !== 'false';
  throw new ImproperlyConfigured(`${setting} must be true or false`);
}

function asDict(v: unknown, setting: string): Record<string, unknown> | undefined {
  if (v === undefined || v === null || v === false) return undefined;
  if (v === true) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ImproperlyConfigured(`${setting} must be true, false or an object`);
  return v as Record<string, unknown>;
}

function checkKeys(d: Record<string, unknown>, allowed: readonly string[], setting: string, hint: string): void {
  for (const k of Object.keys(d)) {
    if (d[k] !== undefined && !allowed.includes(k)) {
      throw new ImproperlyConfigured(`${setting}: unknown key ${JSON.stringify(k)}; ${hint} takes ${allowed.join(', ')}`);
    }
  }
}

interface Material {
  reqs: Reqs;
  checkHostname: boolean;
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
  passphrase: string | undefined;
}

function nodeOptions(m: Material, systemRootsToo: boolean): ConnectionOptions {
  const o: ConnectionOptions = { rejectUnauthorized: m.reqs !== 'none' };
  if (m.ca) o.ca = systemRootsToo ? [...rootCertificates, m.ca.toString('latin1')] : m.ca;
  if (m.cert) {
    o.cert = m.cert;
    o.key = m.key ?? m.cert; // Python's load_cert_chain(certfile): the key may be in the certificate's file
  }
  if (m.passphrase !== undefined) o.passphrase = m.passphrase;
  if (m.reqs === 'none' || !m.checkHostname) o.checkServerIdentity = () => undefined;
  return o;
}

function material(d: Record<string, unknown>, names: { reqs: string; ca: string; cert: string; key: string }, setting: string, dflt: Reqs): Material {
  const cert = readPem(d[names.cert], `${setting} ${names.cert}`);
  const key = readPem(d[names.key], `${setting} ${names.key}`);
  if (key && !cert) throw new ImproperlyConfigured(`${setting}: ${names.key} without ${names.cert}`);
  const pw = d.ssl_password;
  if (pw !== undefined && pw !== null && typeof pw !== 'string') throw new ImproperlyConfigured(`${setting} ssl_password must be a string`);
  return {
    reqs: parseReqs(d[names.reqs], `${setting} ${names.reqs}`) ?? dflt,
    checkHostname: true,
    ca: readPem(d[names.ca], `${setting} ${names.ca}`),
    cert,
    key,
    passphrase: typeof pw === 'string' ? pw : undefined,
  };
}

const REDIS_URL_KEYS = ['ssl_cert_reqs', 'ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', 'ssl_check_hostname'] as const;
const REDIS_KEYS = [...REDIS_URL_KEYS, 'ssl_password'] as const;
const REDIS_NAMES = { reqs: 'ssl_cert_reqs', ca: 'ssl_ca_certs', cert: 'ssl_certfile', key: 'ssl_keyfile' };

/** Celery's `E_REDIS_SSL_CERT_REQS_MISSING_INVALID`. */
const E_CERT_REQS =
  'A rediss:// URL must have parameter ssl_cert_reqs and this must be set to CERT_REQUIRED, CERT_OPTIONAL, or CERT_NONE';
/** Celery's `E_REDIS_SSL_PARAMS_AND_SCHEME_MISMATCH`. */
const E_SCHEME =
  'SSL connection parameters have been provided but the specified URL scheme is redis://. A Redis SSL connection URL should use the scheme rediss://.';

/** The `ssl_*` query parameters of a Redis URL (decoded once, as kombu and Celery `unquote` them). */
function redisUrlSsl(u: URL): Record<string, unknown> | undefined {
  let d: Record<string, unknown> | undefined;
  for (const [k, v] of u.searchParams) {
    if (!k.startsWith('ssl_')) continue;
    if (!(REDIS_URL_KEYS as readonly string[]).includes(k)) {
      throw new ImproperlyConfigured(`Redis URL: unknown parameter ${JSON.stringify(k)}; TLS takes ${REDIS_URL_KEYS.join(', ')}`);
    }
    (d ??= {})[k] = v;
  }
  return d;
}

/**
 * The TLS options of a Redis connection (`tls.connect` options for ioredis),
 * or `undefined` for plain TCP. `role` chooses whose rules apply: kombu's
 * broker transport or Celery's result backend (see the module comment).
 * Reads the files now.
 *
 * @internal
 */
export function redisTls(url: string, useSsl: unknown, role: 'broker' | 'backend'): ConnectionOptions | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ImproperlyConfigured('Not a Redis URL', { cause: err });
  }
  const scheme = u.protocol.replace(/:$/, '').toLowerCase();
  const setting = role === 'broker' ? 'broker_use_ssl' : 'redis_backend_use_ssl';
  const given = asDict(useSsl, setting);
  if (given) checkKeys(given, REDIS_KEYS, setting, 'a Redis connection');
  const fromUrl = redisUrlSsl(u);
  let d: Record<string, unknown> | undefined;
  if (role === 'broker') {
    // kombu: the URL's ssl_* parameters, when any, are the `ssl` option.
    d = fromUrl ?? given;
    if (!d && scheme === 'rediss') d = {};
  } else {
    if (scheme !== 'rediss' && fromUrl) throw new ImproperlyConfigured(E_SCHEME);
    if (given || fromUrl || scheme === 'rediss') d = { ...given, ...fromUrl };
  }
  if (!d) return undefined;
  if (scheme === 'redis+socket' || scheme === 'unix') {
    throw new ImproperlyConfigured(`${setting}: TLS over a Unix socket is not supported`);
  }
  if (role === 'backend') {
    let reqs: Reqs | undefined;
    try {
      reqs = parseReqs(d.ssl_cert_reqs, 'ssl_cert_reqs');
    } catch {
      reqs = undefined;
    }
    if (!reqs) throw new ImproperlyConfigured(E_CERT_REQS);
    if (reqs === 'optional') {
      process.emitWarning(
        'Setting ssl_cert_reqs=CERT_OPTIONAL when connecting to redis means that celery might not validate the identity of the redis broker when connecting. This leaves you vulnerable to man in the middle attacks.',
        'CelerySignTlsWarning',
      );
    } else if (reqs === 'none') {
      process.emitWarning(
        'Setting ssl_cert_reqs=CERT_NONE when connecting to redis means that celery will not validate the identity of the redis broker when connecting. This leaves you vulnerable to man in the middle attacks.',
        'CelerySignTlsWarning',
      );
    }
  }
  const m = material(d, REDIS_NAMES, setting, 'required');
  m.checkHostname = bool(d.ssl_check_hostname, `${setting} ssl_check_hostname`) ?? true;
  return nodeOptions(m, true);
}

const AMQP_KEYS = ['ca_certs', 'certfile', 'keyfile', 'cert_reqs', 'server_hostname', 'check_hostname'] as const;

/** What {@link amqpTls} returns: the socket options for amqplib, and the port when the URL names none. */
export interface AmqpTls {
  /** `tls.connect` options (amqplib's socket options). */
  socket: ConnectionOptions;
  /** 5671 when TLS came from `broker_use_ssl` on an `amqp://` URL without a port (kombu's `default_ssl_port`). */
  port: number | undefined;
}

/**
 * The TLS options of an AMQP connection, or `undefined` for plain TCP: TLS
 * with `amqps://` / `pyamqps://` or `broker_use_ssl`. Reads the files now.
 *
 * @internal
 */
export function amqpTls(url: string, useSsl: unknown): AmqpTls | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ImproperlyConfigured('Not an AMQP URL', { cause: err });
  }
  const scheme = u.protocol.replace(/:$/, '').toLowerCase();
  const given = asDict(useSsl, 'broker_use_ssl');
  const secure = scheme === 'amqps' || scheme === 'pyamqps';
  if (!given && !secure) return undefined;
  const d = given ?? {};
  checkKeys(d, AMQP_KEYS, 'broker_use_ssl', 'py-amqp (an AMQP broker)');
  const m = material(d, { reqs: 'cert_reqs', ca: 'ca_certs', cert: 'certfile', key: 'keyfile' }, 'broker_use_ssl', 'required');
  m.checkHostname = bool(d.check_hostname, 'broker_use_ssl check_hostname') ?? true;
  const socket = nodeOptions(m, false);
  const sh = d.server_hostname;
  if (sh !== undefined && sh !== null) {
    if (typeof sh !== 'string' || sh === '') throw new ImproperlyConfigured('broker_use_ssl server_hostname must be a host name');
    if (isIP(sh) === 0) socket.servername = sh; // SNI, and the name Node checks
    // SNI carries no IP address (RFC 6066): check an IP against the certificate ourselves.
    else if (!socket.checkServerIdentity) socket.checkServerIdentity = (_host, cert) => checkServerIdentity(sh, cert);
  }
  return { socket, port: !secure && !u.port ? 5671 : undefined };
}

/**
 * The reason a TLS connection failed, in words naming the setting to look
 * at, with the OpenSSL/Node code; `undefined` when `err` is no TLS failure.
 *
 * @internal
 */
export function tlsFailure(err: unknown, kind: 'redis' | 'amqp'): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  const [ca, cert, key, host] =
    kind === 'redis' ? ['ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', 'ssl_check_hostname'] : ['ca_certs', 'certfile', 'keyfile', 'server_hostname'];
  if (NOT_CHAINED.has(code)) return `the server's certificate does not chain to the trusted CA (${ca}) (${code})`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the server's certificate does not name the host connected to (${host}) (${code})`;
  const reason = REASONS[code];
  if (reason) return `${reason} (${code})`;
  if (/^ERR_SSL_/.test(code)) {
    if (/CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|PEER_DID_NOT_RETURN_A_CERTIFICATE/.test(code)) {
      return `the server requires a client certificate, and none was given (${cert}, ${key}) (${code})`;
    }
    if (/ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|DECRYPT_ERROR|ACCESS_DENIED)/.test(code)) {
      return `the server refused this client's certificate (${cert}) (${code})`;
    }
    return `the TLS handshake failed (${code})`;
  }
  return undefined;
}

const NOT_CHAINED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);
const REASONS: Record<string, string> = {
  CERT_HAS_EXPIRED: "the server's certificate has expired",
  CERT_NOT_YET_VALID: "the server's certificate is not yet valid",
  CERT_REVOKED: "the server's certificate is revoked",
  INVALID_PURPOSE: "the server's certificate is not for a TLS server",
  EPROTO: 'the TLS handshake failed (is the port a TLS port?)',
};

/**
 * Why a TLS server dropped the connection right after the handshake. With
 * TLS 1.3 a server checks the client's certificate after the client has
 * finished its side of the handshake: a client that writes at once (ioredis,
 * amqplib) then often sees only `ECONNRESET`, the server's alert lost. This
 * connects once more, writes nothing, and waits (at most `ms`) for what the
 * server says: its alert (an error with the OpenSSL code), or a session
 * ticket (the server accepted the client: `undefined`). Only called after a
 * connection failed.
 *
 * @internal
 */
export function diagnoseTls(host: string, port: number, options: ConnectionOptions, ms = 2000): Promise<unknown> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const sock = tlsConnect({ ...options, host, port, ...(isIP(host) === 0 && !options.servername ? { servername: host } : {}) });
    const timer = setTimeout(() => finish(undefined), ms);
    sock.once('error', (err) => finish(err));
    sock.once('session', () => finish(undefined));
    sock.once('close', () => finish(undefined));
    sock.on('data', () => finish(undefined));
  });
}

/** Whether a failed connect may hide a TLS alert (see {@link diagnoseTls}). */
export function mayHideAlert(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE' || (err instanceof Error && /Connection is closed|socket hang up|Socket closed|closed abruptly/i.test(err.message));
}
