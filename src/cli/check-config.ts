/**
 * `celery-sign check-config`: what `setupSecurity` (Celery's
 * `app.setup_security()`) would refuse in a configuration, and why.
 *
 * @internal
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { Certificate, FSCertStore, type CertStore } from '../certificate.js';
import { PrivateKey } from '../keys.js';
import { EXIT, flag, printJson, str, type Command } from './common.js';
import { loadSettings } from './settings.js';

/** One finding. */
export interface Check {
  /** ok, or a problem that makes setupSecurity (or every message) fail; warn: works but should change. */
  status: 'ok' | 'problem' | 'warn';
  check: string;
  detail: string;
}

const DIGESTS = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'];

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

function readable(path: string): string | null {
  try {
    readFileSync(path);
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (code ?? 'unreadable');
  }
}

/** Every check of a configuration (Celery's setting names). */
export function checkConfig(conf: Record<string, unknown>, now = new Date()): Check[] {
  const out: Check[] = [];
  const add = (status: Check['status'], check: string, detail: string) => out.push({ status, check, detail });

  const ser = conf.task_serializer;
  if (ser === 'auth') add('ok', 'task_serializer', "'auth'");
  else add('problem', 'task_serializer', `must be 'auth', is ${ser === undefined ? 'not set' : JSON.stringify(ser)} (setupSecurity: ImproperlyConfigured)`);
  const accept = conf.accept_content;
  if (Array.isArray(accept) && accept.length === 1 && accept[0] === 'auth') add('ok', 'accept_content', "['auth']");
  else add('problem', 'accept_content', `must be exactly ['auth'], is ${accept === undefined ? 'not set' : JSON.stringify(accept)} (setupSecurity: ImproperlyConfigured)`);

  const path = (name: string): string | null => {
    const v = conf[name];
    if (v === undefined || v === null || v === '') {
      add('problem', name, 'not set (setupSecurity: ImproperlyConfigured: security_key, security_certificate and security_cert_store are all required)');
      return null;
    }
    if (typeof v !== 'string') {
      add('problem', name, 'must be a path (a string)');
      return null;
    }
    return v;
  };
  const keyPath = path('security_key');
  const certPath = path('security_certificate');
  const storePath = path('security_cert_store');

  const digest = conf.security_digest ?? 'sha256';
  if (typeof digest === 'string' && DIGESTS.includes(digest.toLowerCase())) {
    add(digest.toLowerCase() === 'sha1' ? 'warn' : 'ok', 'security_digest', digest.toLowerCase() === 'sha1' ? "'sha1' works but is weak: use 'sha256'" : JSON.stringify(digest));
  } else add('problem', 'security_digest', `${JSON.stringify(digest)} is not one of ${DIGESTS.join(', ')}`);

  const password = conf.security_key_password;
  let key: PrivateKey | null = null;
  if (keyPath !== null) {
    const why = readable(keyPath);
    if (why !== null) add('problem', 'security_key', `${keyPath}: ${why}`);
    else {
      try {
        key = new PrivateKey(readFileSync(keyPath), typeof password === 'string' && password !== '' ? password : null);
        add('ok', 'security_key', `${keyPath}: RSA ${key.bits} bits${password ? ', decrypted with security_key_password' : ''}`);
        if (key.bits < 2048) add('warn', 'security_key', `${key.bits}-bit RSA is weak: use 3072 or more`);
      } catch (e) {
        add('problem', 'security_key', `${keyPath}: ${firstLine(e)}${password ? '' : ' (if it is encrypted, set security_key_password)'}`);
      }
    }
  }
  let cert: Certificate | null = null;
  if (certPath !== null) {
    const why = readable(certPath);
    if (why !== null) add('problem', 'security_certificate', `${certPath}: ${why}`);
    else {
      try {
        cert = new Certificate(readFileSync(certPath));
        if (cert.hasExpired(now)) add('problem', 'security_certificate', `${certPath}: expired on ${cert.notAfter.toISOString()} (signer id ${cert.id})`);
        else if (cert.isNotYetValid(now)) add('problem', 'security_certificate', `${certPath}: not valid before ${cert.notBefore.toISOString()} (signer id ${cert.id}): nothing can be signed with it until then`);
        else add('ok', 'security_certificate', `${certPath}: signer id ${cert.id}, valid until ${cert.notAfter.toISOString()}`);
      } catch (e) {
        add('problem', 'security_certificate', `${certPath}: ${firstLine(e)}`);
      }
    }
  }
  let store: CertStore | null = null;
  if (storePath !== null) {
    try {
      store = new FSCertStore(storePath);
      if (store.size === 0) {
        const missing = !/[*?[]/.test(storePath) && !existsSync(storePath);
        add('problem', 'security_cert_store', `${storePath}: ${missing ? 'no such file or directory' : 'no certificate'} (every message would be refused)`);
      }
      else add('ok', 'security_cert_store', `${storePath}: ${store.size} certificate${store.size === 1 ? '' : 's'}`);
    } catch (e) {
      add('problem', 'security_cert_store', `${storePath}: ${firstLine(e)}`);
    }
  }
  if (key && cert) {
    const probe = Buffer.from('celery-sign check-config');
    let matches = false;
    try {
      cert.verify(probe, key.sign(probe, 'sha256'), 'sha256');
      matches = true;
    } catch {
      matches = false;
    }
    if (matches) add('ok', 'key matches certificate', 'a signature by security_key verifies with security_certificate');
    else add('problem', 'key matches certificate', "security_key is not the key of security_certificate: every message this side signs would be refused (ERR_BAD_SIGNATURE)");
  }
  if (cert && store && store.size > 0) {
    if (store.has(cert.id)) add('ok', 'certificate in store', `${cert.id} is in security_cert_store`);
    else add('warn', 'certificate in store', `${cert.id} is not in security_cert_store: the workers that use this store refuse what this side signs (ERR_UNKNOWN_CERTIFICATE)`);
  }
  return out;
}

export const checkConfigCmd: Command = {
  summary: "report what setupSecurity would refuse in Celery's settings, and why",
  help: `Usage: celery-sign check-config [--config FILE.json | --env-file FILE] [--json]

Reads Celery's security settings and reports, one line each, what Celery's
setup_security() (and celery-sign's setupSecurity) would refuse and why, whether
the key loads (with security_key_password) and matches the certificate, whether
the certificate has expired, and whether it is in the store. Exit status 1 if
there is a problem (warnings alone exit 0).

Where the settings come from:
  --config FILE.json  an object with Celery's setting names:
                      {"task_serializer": "auth", "accept_content": ["auth"],
                       "security_key": "worker.key", "security_certificate": "worker.pem",
                       "security_cert_store": "certs/*.pem", "security_digest": "sha256"}
  --env-file FILE     a .env file of CELERY_ variables (below)
  (neither)           the environment: CELERY_ and the setting's name in capitals, as
                      Celery's config_from_object(..., namespace='CELERY') maps them:
                      CELERY_TASK_SERIALIZER=auth  CELERY_ACCEPT_CONTENT=auth (or ["auth"])
                      CELERY_SECURITY_KEY  CELERY_SECURITY_KEY_PASSWORD
                      CELERY_SECURITY_CERTIFICATE  CELERY_SECURITY_CERT_STORE
                      CELERY_SECURITY_DIGEST

Options:
      --json     print [{"status": "ok"|"problem"|"warn", "check", "detail"}] as JSON
  -h, --help     this text`,
  options: { config: { type: 'string' }, 'env-file': { type: 'string' }, json: { type: 'boolean' } },
  run(p, io) {
    const { conf, source } = loadSettings({ config: str(p, 'config'), envFile: str(p, 'env-file') }, io.env);
    const checks = checkConfig(conf);
    const problems = checks.filter((c) => c.status === 'problem').length;
    if (flag(p, 'json')) printJson(io, { source, ok: problems === 0, checks });
    else {
      io.stdout.write(`settings from ${source}\n`);
      for (const c of checks) io.stdout.write(`${c.status === 'ok' ? 'ok     ' : c.status === 'warn' ? 'warn   ' : 'PROBLEM'}  ${c.check}: ${c.detail}\n`);
      io.stdout.write(problems === 0 ? 'setupSecurity accepts this configuration\n' : `${problems} problem${problems === 1 ? '' : 's'}: setupSecurity would refuse this configuration, or its messages would be refused\n`);
    }
    return problems === 0 ? EXIT.OK : EXIT.VERDICT;
  },
};
