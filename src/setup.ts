import { readFileSync } from 'node:fs';
import { toBytes, type Bytes, type Digest } from './bytes.js';
import { Certificate, FSCertStore } from './certificate.js';
import type { CaSource, CrlSource } from './chain.js';
import { ImproperlyConfigured } from './errors.js';
import { PrivateKey } from './keys.js';
import { disableInsecureSerializers, registry } from './registry.js';
import { SecureSerializer } from './serializer.js';

/** Celery's own messages, word for word. */
export const SECURITY_SETTING_MISSING = `Sorry, but you have to configure the
    * security_key
    * security_certificate, and the
    * security_cert_store
configuration settings to use the auth serializer.

Please see the configuration reference for more information.
`;

export const SETTING_MISSING = `You have to configure a special task serializer
for signing and verifying tasks:
    * task_serializer = 'auth'

You have to accept only tasks which are serialized with 'auth'.
There is no point in signing messages if they are not verified.
    * accept_content = ['auth']
`;

/** Options of {@link registerAuth}, as Celery's `register_auth(key, key_password, cert, store, digest, serializer)` takes them. */
export interface RegisterAuthOptions {
  /** PEM text of the private key (not a path). */
  key?: Bytes;
  keyPassword?: Bytes | null;
  /** PEM text of the certificate (not a path). */
  cert?: Bytes;
  /** A directory or glob of trusted certificates. */
  store?: string;
  digest?: Digest;
  serializer?: string;
  /**
   * celery-sign's chain verification of the store (see {@link CertChainOptions}):
   * the trusted CA certificates; the store then takes only certificates they issued.
   */
  ca?: CaSource | readonly CaSource[];
  /** Intermediate CA certificates between `ca` and the signers (needs `ca`). */
  intermediates?: CaSource | readonly CaSource[];
  /** CRLs of the CAs (needs `ca`): revoked certificates are refused. */
  crl?: CrlSource | readonly CrlSource[];
}

/**
 * Celery's `register_auth`: builds a {@link SecureSerializer} and registers it
 * in the registry as `auth` (content type `application/data`, encoding `utf-8`).
 */
export function registerAuth(opts: RegisterAuthOptions = {}): SecureSerializer {
  const s = new SecureSerializer({
    ...(opts.key ? { key: new PrivateKey(opts.key, opts.keyPassword ?? null) } : {}),
    ...(opts.cert ? { cert: new Certificate(opts.cert) } : {}),
    ...(opts.store
      ? {
          store: new FSCertStore(opts.store, {
            ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
            ...(opts.intermediates !== undefined ? { intermediates: opts.intermediates } : {}),
            ...(opts.crl !== undefined ? { crl: opts.crl } : {}),
          }),
        }
      : {}),
    digest: opts.digest ?? 'sha256',
    serializer: opts.serializer ?? 'json',
  });
  registry.register(
    'auth',
    (data) => s.serialize(data),
    (payload) => s.deserialize(payload),
    'application/data',
    'utf-8',
  );
  return s;
}

/** The arguments of Celery's `app.setup_security()` that override the settings given to {@link setupSecurity}. */
export interface SetupSecurityOverrides {
  /** Serializer names or content types left enabled (Celery's `allowed_serializers`). */
  allowedSerializers?: string[] | null;
  /** Path of the private key; overrides `security_key`. */
  key?: string;
  keyPassword?: Bytes | null;
  /** Path of the certificate; overrides `security_certificate`. */
  cert?: string;
  /** Directory or glob; overrides `security_cert_store`. */
  store?: string;
  /** Path(s) of the trusted CA certificates; overrides `security_cert_store_ca`. */
  ca?: string | string[];
  /** Path(s) of intermediate CA certificates; overrides `security_cert_store_intermediates`. */
  intermediates?: string | string[];
  /** Path(s) of CRLs; overrides `security_cert_store_crl`. */
  crl?: string | string[];
  digest?: Digest;
  serializer?: string;
}

function setting(conf: Record<string, unknown>, name: string): unknown {
  return conf[name];
}

function optionalPaths(conf: Record<string, unknown>, name: string): string[] | undefined {
  const v = setting(conf, name);
  if (v == null || v === '' || (Array.isArray(v) && v.length === 0)) return undefined;
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((p) => typeof p === 'string' && p !== '')) return v as string[];
  throw new ImproperlyConfigured(`${name} must be a path or a list of paths`);
}

function optionalString(conf: Record<string, unknown>, name: string): string | undefined {
  const v = setting(conf, name);
  if (v == null || v === '') return undefined;
  if (typeof v !== 'string') throw new ImproperlyConfigured(`${name} must be a string`);
  return v;
}

/**
 * Celery's `setup_security`, reading Celery's own setting names:
 * `task_serializer`, `accept_content`, `security_key` (a path),
 * `security_key_password`, `security_certificate` (a path),
 * `security_cert_store` (a path or glob), `security_digest`; and
 * celery-sign's own chain verification settings (Celery has none; see
 * {@link CertChainOptions}): `security_cert_store_ca` (a path or a list of
 * paths of the trusted CA certificates: the store then takes only
 * certificates they issued), `security_cert_store_intermediates` and
 * `security_cert_store_crl` (paths; they need `security_cert_store_ca`,
 * else {@link ImproperlyConfigured}).
 *
 * Disables the untrusted serializers, checks that `task_serializer` is
 * `'auth'` and `accept_content` exactly `['auth']` and that key, certificate
 * and store are given (else {@link ImproperlyConfigured}), registers `auth`
 * and makes it the default serializer.
 */
export function setupSecurity(conf: Record<string, unknown>, overrides: SetupSecurityOverrides = {}): SecureSerializer {
  disableInsecureSerializers(overrides.allowedSerializers ?? null);

  const accept = setting(conf, 'accept_content');
  if (
    setting(conf, 'task_serializer') !== 'auth' ||
    !Array.isArray(accept) ||
    accept.length !== 1 ||
    accept[0] !== 'auth'
  ) {
    throw new ImproperlyConfigured(SETTING_MISSING);
  }

  const key = overrides.key ?? optionalString(conf, 'security_key');
  const password = overrides.keyPassword ?? (setting(conf, 'security_key_password') as Bytes | null | undefined);
  const cert = overrides.cert ?? optionalString(conf, 'security_certificate');
  const store = overrides.store ?? optionalString(conf, 'security_cert_store');
  const digest = overrides.digest ?? (optionalString(conf, 'security_digest') as Digest | undefined) ?? 'sha256';
  if (!(key && cert && store)) throw new ImproperlyConfigured(SECURITY_SETTING_MISSING);
  const ca = overrides.ca ?? optionalPaths(conf, 'security_cert_store_ca');
  const intermediates = overrides.intermediates ?? optionalPaths(conf, 'security_cert_store_intermediates');
  const crl = overrides.crl ?? optionalPaths(conf, 'security_cert_store_crl');
  if (ca === undefined && (intermediates !== undefined || crl !== undefined)) {
    throw new ImproperlyConfigured(
      'security_cert_store_crl and security_cert_store_intermediates need security_cert_store_ca (the trusted CA certificates)',
    );
  }

  const keyPem = readFileSync(key);
  const certPem = readFileSync(cert);
  const s = registerAuth({
    key: keyPem,
    keyPassword: password == null || password === '' ? null : toBytes(password, 'security_key_password'),
    cert: certPem,
    store,
    ...(ca !== undefined ? { ca } : {}),
    ...(intermediates !== undefined ? { intermediates } : {}),
    ...(crl !== undefined ? { crl } : {}),
    digest,
    serializer: overrides.serializer ?? 'json',
  });
  registry.setDefault('auth');
  return s;
}

/** Celery's `disable_untrusted_serializers`: disables every decoder but the allowed ones. */
export function disableUntrustedSerializers(allowed?: string[] | null): void {
  disableInsecureSerializers(allowed ?? null);
}
