/**
 * TLS certificates for the broker tests, made by the test with the openssl
 * CLI (scripts/setup.sh installs it) in a temporary directory: a CA, a server
 * certificate for localhost / 127.0.0.1, a client certificate (mutual TLS),
 * a server certificate naming another host, and a second, unrelated CA.
 * EC P-256 keys: quick to make. Nothing here is printed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TlsPki {
  readonly dir: string;
  /** The CA that signed the server and client certificates. */
  readonly ca: string;
  /** An unrelated CA: nothing here chains to it. */
  readonly otherCa: string;
  /** Server certificate (SAN `DNS:localhost`, `IP:127.0.0.1`) and key, signed by `ca`. */
  readonly serverCert: string;
  readonly serverKey: string;
  /** Server certificate for `other.example` only, signed by `ca`, with its key. */
  readonly wrongHostCert: string;
  readonly wrongHostKey: string;
  /** Client certificate (CN `celery-sign-client`) and key, signed by `ca`. */
  readonly clientCert: string;
  readonly clientKey: string;
  /** Client certificate and key signed by `otherCa` (the server must refuse it). */
  readonly strangerCert: string;
  readonly strangerKey: string;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('openssl not found: install it (apt-get install openssl; scripts/setup.sh does)');
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCa(dir: string, name: string, cn: string): void {
  openssl(
    ['req', '-x509', '-new', ...EC, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '3', '-subj', `/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
}

function makeLeaf(dir: string, name: string, ca: string, cn: string, ext: string): void {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['req', '-new', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '3', '-extfile', `${name}.ext`],
    dir,
  );
}

export function makeTlsPki(): TlsPki {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-tls-'));
  try {
    makeCa(dir, 'ca', 'celery-sign test CA');
    makeCa(dir, 'other-ca', 'an unrelated CA');
    const server = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n';
    makeLeaf(dir, 'server', 'ca', 'localhost', `${server}subjectAltName=DNS:localhost,IP:127.0.0.1\n`);
    makeLeaf(dir, 'wronghost', 'ca', 'other.example', `${server}subjectAltName=DNS:other.example\n`);
    const client = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
    makeLeaf(dir, 'client', 'ca', 'celery-sign-client', client);
    makeLeaf(dir, 'stranger', 'other-ca', 'stranger', client);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const p = (f: string): string => join(dir, f);
  return {
    dir,
    ca: p('ca.pem'),
    otherCa: p('other-ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    wrongHostCert: p('wronghost.pem'),
    wrongHostKey: p('wronghost.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.pem'),
    strangerKey: p('stranger.key'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** `redis-server` arguments for a TLS-only server on `port` with this PKI (`--tls-auth-clients yes` unless told). */
export function redisTlsArgs(pki: TlsPki, port: number, o: { authClients?: 'yes' | 'no' | 'optional'; cert?: 'server' | 'wronghost' } = {}): string[] {
  const which = o.cert ?? 'server';
  return [
    '--port', '0',
    '--tls-port', String(port),
    '--tls-cert-file', which === 'server' ? pki.serverCert : pki.wrongHostCert,
    '--tls-key-file', which === 'server' ? pki.serverKey : pki.wrongHostKey,
    '--tls-ca-cert-file', pki.ca,
    '--tls-auth-clients', o.authClients ?? 'yes',
  ];
}
