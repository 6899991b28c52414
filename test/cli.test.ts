/**
 * The `celery-sign` command (issue 13, item 1), run as a user runs it: the
 * built lib/cli/main.js in a child process, its exit status, stdout and stderr.
 * Keys and certificates it makes are checked by Python's cryptography and by
 * stock Celery; payloads go both ways between it and Celery 5.x and 5.4; the
 * worker runs a task a Python producer sends over a real redis-server.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, copyFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { Redis } from 'ioredis';
import { Certificate, PrivateKey } from 'celery-sign';
import * as fx from './helpers/fixtures.js';
import { ROOT, pythonPath, type PythonEnv } from './helpers/python.js';
import { makePki, runProducer } from './wire/helpers/celery.js';
import { startRedis } from './wire/helpers/redis-server.js';
import { fromEnv } from '../src/cli/settings.js';
import { moduleOptions, tasksOf } from '../src/cli/worker.js';

const MAIN = join(ROOT, 'lib', 'cli', 'main.js');
const PY = join(ROOT, 'test', 'py', 'cli_celery.py');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], o: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: o.cwd ?? ROOT,
      env: o.env ?? cleanEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(o.input ?? '');
  });
}

/** The environment without any Celery setting (CELERY_*) of the machine running the tests; CELERY_SIGN_* stays. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CELERY_') || k.startsWith('CELERY_SIGN_')) env[k] = v;
  return { ...env, ...extra };
}

function py<T>(request: object, env: PythonEnv = 'current'): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(pythonPath(env), [PY], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`cli_celery.py ${JSON.stringify(request)} exited ${code}: ${err.slice(-2000)}`));
      else resolve(JSON.parse(out) as T);
    });
    child.stdin.end(JSON.stringify(request));
  });
}

/** A failure as the command must report it: the exit status, one line on stderr, no stack. */
function assertOneLineError(t: import('ava').ExecutionContext, r: Run, code: number, pattern: RegExp): void {
  t.is(r.code, code, `exit status (stderr: ${r.stderr})`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  t.is(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
  t.regex(r.stderr, /^celery-sign( [a-z-]+)?: /);
  t.regex(r.stderr, pattern);
  t.notRegex(r.stderr, /\n\s+at |Error: /);
}

function tmp(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-cli-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

const COMMANDS = ['keygen', 'certgen', 'id', 'sign', 'verify', 'inspect', 'check-config', 'bench', 'worker'];

test('--help at the top lists every command and the exit codes; every command has --help', async (t) => {
  const top = await cli(['--help']);
  t.is(top.code, 0);
  for (const c of COMMANDS) t.regex(top.stdout, new RegExp(`^  ${c} `, 'm'));
  t.regex(top.stdout, /Exit codes:[\s\S]*2 +usage error/);
  for (const c of COMMANDS) {
    const r = await cli([c, '--help']);
    t.is(r.code, 0, c);
    t.regex(r.stdout, new RegExp(`^Usage: celery-sign ${c}`), c);
    t.regex(r.stdout, /Exit codes:/, c);
  }
  // Executable, with a shebang: npx and a linked checkout run it directly.
  t.is(statSync(MAIN).mode & 0o111, 0o111);
  t.true(readFileSync(MAIN, 'utf8').startsWith('#!/usr/bin/env node\n'));
  const v = await cli(['--version']);
  t.is(v.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
});

test('usage errors exit 2 with one line: no command, unknown command, unknown option, a missing argument', async (t) => {
  const none = await cli([]);
  t.is(none.code, 2);
  t.regex(none.stderr, /Usage: celery-sign COMMAND/);
  assertOneLineError(t, await cli(['frobnicate']), 2, /unknown command "frobnicate"/);
  assertOneLineError(t, await cli(['keygen', '--bogus']), 2, /Unknown option '--bogus'/);
  assertOneLineError(t, await cli(['keygen']), 2, /--out is required/);
  assertOneLineError(t, await cli(['keygen', '--out', '/nonexistent/x', '--bits', '1024']), 2, /--bits must be 2048, 3072 or 4096/);
  assertOneLineError(t, await cli(['id']), 2, /give at least one certificate/);
  assertOneLineError(t, await cli(['verify', 'x']), 2, /--store is required/);
  assertOneLineError(t, await cli(['worker']), 2, /give the module/);
});

test('keygen -> certgen -> id -> sign -> verify -> inspect round trip; the key is 0600 and Python reads it all', async (t) => {
  const { dir, cleanup } = tmp();
  try {
    const key = join(dir, 'worker.key');
    const cert = join(dir, 'worker.pem');
    const kg = await cli(['keygen', '--bits', '2048', '--out', key, '--json']);
    t.is(kg.code, 0, kg.stderr);
    t.deepEqual(JSON.parse(kg.stdout), { path: key, bits: 2048, encrypted: false });
    t.is(statSync(key).mode & 0o777, 0o600);
    t.regex(readFileSync(key, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    t.deepEqual(await py({ op: 'key', path: key }), { bits: 2048, pkcs8: true, encrypted: false });

    // Never replaced without --force.
    const before = readFileSync(key, 'utf8');
    assertOneLineError(t, await cli(['keygen', '--bits', '2048', '--out', key]), 3, /exists: pass --force/);
    t.is(readFileSync(key, 'utf8'), before);
    t.is((await cli(['keygen', '--bits', '2048', '--out', key, '--force'])).code, 0);
    t.not(readFileSync(key, 'utf8'), before);
    t.is(statSync(key).mode & 0o777, 0o600);

    const cg = await cli(['certgen', '--key', key, '--cn', 'worker-1', '--org', 'Acme', '--days', '30', '--out', cert]);
    t.is(cg.code, 0, cg.stderr);
    const certObj = new Certificate(readFileSync(cert));
    t.regex(cg.stdout, new RegExp(`^signer id: ${certObj.id}$`, 'm'));
    t.is(certObj.issuer, 'Acme worker-1');
    const now = Date.now();
    t.true(Math.abs(certObj.notAfter.getTime() - (now + 30 * 86400_000)) < 120_000);

    // Python's cryptography parses it and verifies its self-signature; Celery's id is the CLI's.
    const pyCert = await py<Record<string, unknown>>({ op: 'cert', path: cert });
    t.like(pyCert, { version: 'v3', subject: 'CN=worker-1,O=Acme', issuer: 'CN=worker-1,O=Acme', ca: true, signature_hash: 'sha256', bits: 2048, celery_id: certObj.id, celery_issuer: 'Acme worker-1', serial: certObj.serialNumber.toString() });

    const id = await cli(['id', '--json', cert]);
    t.is(id.code, 0);
    t.deepEqual(JSON.parse(id.stdout), [
      { path: cert, id: certObj.id, issuer: 'Acme worker-1', serial: certObj.serialNumber.toString(), notAfter: certObj.notAfter.toISOString(), expired: false, bits: 2048 },
    ]);
    const idText = await cli(['id', cert]);
    t.regex(idText.stdout, /expired: +no/);

    const store = join(dir, 'store');
    mkdirSync(store);
    copyFileSync(cert, join(store, 'worker.pem'));
    const value = { task: 'app.add', args: [2, 3], s: 'h\u00e9llo' };
    const signed = await cli(['sign', '--key', key, '--cert', cert], { input: JSON.stringify(value) });
    t.is(signed.code, 0, signed.stderr);
    const payload = signed.stdout.trim();
    writeFileSync(join(dir, 'payload.txt'), payload);

    const verified = await cli(['verify', '--store', store, '--json', join(dir, 'payload.txt')]);
    t.is(verified.code, 0, verified.stderr);
    t.deepEqual(JSON.parse(verified.stdout), { ok: true, signer: certObj.id, value });
    const verifiedText = await cli(['verify', '--store', store], { input: payload });
    t.regex(verifiedText.stdout, new RegExp(`^verified: signed by ${certObj.id}`));

    const inspected = await cli(['inspect', '--store', join(store, '*.pem'), '--json'], { input: payload });
    t.is(inspected.code, 0, inspected.stderr);
    t.like(JSON.parse(inspected.stdout), {
      wireFormat: 'celery-5.5',
      signer: certObj.id,
      signatureBytes: 256,
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      bodyBytes: Buffer.byteLength('{"task": "app.add", "args": [2, 3], "s": "h\\u00e9llo"}'),
      preview: '{"task": "app.add", "args": [2, 3], "s": "h\\u00e9llo"}',
      verified: true,
    });
    // Without a store: everything but the verdict, and no key needed.
    const bare = await cli(['inspect', join(dir, 'payload.txt')]);
    t.is(bare.code, 0);
    t.regex(bare.stdout, /wire format: +Celery 5\.5/);
    t.regex(bare.stdout, /verifies: +\(not checked: give --store\)/);

    // Stock Celery verifies what the CLI signed.
    t.deepEqual(await py({ op: 'verify', store, payload }), { ok: true, value });

    // --binary: the bytes as they are, application/data.
    const bin = await cli(['sign', '--key', key, '--cert', cert, '--binary'], { input: '\u0000\u0001raw' });
    const binInfo = JSON.parse((await cli(['inspect', '--json', '--store', store], { input: bin.stdout })).stdout);
    t.like(binInfo, { contentType: 'application/data', contentEncoding: 'binary', bodyBytes: 5, previewEncoding: 'hex', preview: '0001726177', verified: true });
  } finally {
    cleanup();
  }
});

test('verify and inspect report a tampered payload, an unknown signer and garbage with the error code, exit 1', async (t) => {
  const { dir, cleanup } = tmp();
  const pki = makePki();
  try {
    const signed = await cli(['sign', '--key', pki.key, '--cert', pki.cert], { input: '{"a": 1}' });
    const raw = Buffer.from(signed.stdout.trim(), 'base64');
    raw[raw.length - 2]! ^= 1; // the body
    const tampered = raw.toString('base64');
    const v = await cli(['verify', '--store', pki.storeDir], { input: tampered });
    assertOneLineError(t, v, 1, /does not verify: ERR_BAD_SIGNATURE/);
    const vj = await cli(['verify', '--store', pki.storeDir, '--json'], { input: tampered });
    t.is(vj.code, 1);
    t.like(JSON.parse(vj.stdout), { ok: false, code: 'ERR_BAD_SIGNATURE' });
    const i = await cli(['inspect', '--store', pki.storeDir, '--json'], { input: tampered });
    t.is(i.code, 1);
    t.like(JSON.parse(i.stdout), { wireFormat: 'celery-5.5', verified: false, code: 'ERR_BAD_SIGNATURE' });

    const unknown = await cli(['sign', '--key', pki.unknownKey, '--cert', pki.unknownCert], { input: '[1]' });
    const iu = await cli(['inspect', '--store', pki.storeDir], { input: unknown.stdout });
    t.is(iu.code, 1);
    t.regex(iu.stdout, /verifies: +no: ERR_UNKNOWN_CERTIFICATE/);
    t.regex(iu.stdout, new RegExp(`signer id: +${new Certificate(readFileSync(pki.unknownCert)).id}`));

    assertOneLineError(t, await cli(['inspect'], { input: 'not base64 at all!' }), 3, /not a Celery auth payload: not base64/);
    const vg = await cli(['verify', '--store', pki.storeDir, '--json'], { input: Buffer.from('no separator in it').toString('base64') });
    t.is(vg.code, 1);
    t.like(JSON.parse(vg.stdout), { ok: false, code: 'ERR_MALFORMED_PAYLOAD' });
    assertOneLineError(t, await cli(['verify', '--store', pki.storeDir, join(dir, 'missing.txt')]), 3, /cannot read payload .*missing\.txt: no such file/);
  } finally {
    pki.cleanup();
    cleanup();
  }
});

for (const env of ['current', 'celery54'] as const) {
  test(`a payload signed by stock Python Celery (${env === 'current' ? '5.x, wire 5.5' : '5.4.0, wire 5.4'}) is inspected and verified`, async (t) => {
    const pki = makePki();
    try {
      const value = { task: 'wire.add', args: [1, 2], kwargs: { k: 'v' } };
      const { payload } = await py<{ payload: string }>({ op: 'sign', key: pki.key, cert: pki.cert, value }, env);
      const id = new Certificate(readFileSync(pki.cert)).id;
      const i = await cli(['inspect', '--store', pki.storeDir, '--json'], { input: payload });
      t.is(i.code, 0, i.stderr);
      t.like(JSON.parse(i.stdout), {
        wireFormat: env === 'current' ? 'celery-5.5' : 'celery-5.4',
        signer: id,
        signatureBytes: 256,
        contentType: 'application/json',
        contentEncoding: 'utf-8',
        preview: '{"task": "wire.add", "args": [1, 2], "kwargs": {"k": "v"}}',
        verified: true,
      });
      // Without the store too (the 5.4 signature length is found from the fields).
      t.like(JSON.parse((await cli(['inspect', '--json'], { input: payload })).stdout), { wireFormat: env === 'current' ? 'celery-5.5' : 'celery-5.4', signer: id, verified: null });
      const v = await cli(['verify', '--store', pki.storeDir, '--json'], { input: payload });
      t.deepEqual(JSON.parse(v.stdout), { ok: true, signer: id, value });
      // And the other way: Celery 5.4 reads what the CLI signs with --wire-format 5.4.
      if (env === 'celery54') {
        const s = await cli(['sign', '--key', pki.key, '--cert', pki.cert, '--wire-format', '5.4'], { input: JSON.stringify(value) });
        t.deepEqual(await py({ op: 'verify', store: pki.storeDir, payload: s.stdout.trim() }, env), { ok: true, value });
      }
    } finally {
      pki.cleanup();
    }
  });
}

test('keygen encrypts with --password-file; certgen needs the password and never prints it', async (t) => {
  const { dir, cleanup } = tmp();
  try {
    const password = 'correct horse battery staple';
    const pwFile = join(dir, 'pw');
    writeFileSync(pwFile, password + '\n');
    const key = join(dir, 'enc.key');
    const kg = await cli(['keygen', '--bits', '3072', '--password-file', pwFile, '--out', key]);
    t.is(kg.code, 0, kg.stderr);
    t.is(statSync(key).mode & 0o777, 0o600);
    t.regex(readFileSync(key, 'utf8'), /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    t.is(new PrivateKey(readFileSync(key), password).bits, 3072);
    t.deepEqual(await py({ op: 'key', path: key, password }), { bits: 3072, pkcs8: true, encrypted: true });

    const cert = join(dir, 'c.pem');
    assertOneLineError(t, await cli(['certgen', '--key', key, '--cn', 'x', '--out', cert]), 3, /is encrypted: give its password file/);
    const wrong = join(dir, 'wrong');
    writeFileSync(wrong, 'not it\n');
    const w = await cli(['certgen', '--key', key, '--key-password-file', wrong, '--cn', 'x', '--out', cert]);
    assertOneLineError(t, w, 3, /cannot decrypt key .*: wrong password/);
    t.false(w.stderr.includes('not it'));
    t.false(existsSync(cert));
    const ok = await cli(['certgen', '--key', key, '--key-password-file', pwFile, '--cn', 'x', '--out', cert]);
    t.is(ok.code, 0, ok.stderr);
    t.false(ok.stdout.includes(password) || ok.stderr.includes(password));
    // A password prompt needs a terminal: without one, a usage error, not a hang.
    assertOneLineError(t, await cli(['keygen', '--encrypt', '--out', join(dir, 'k2')]), 2, /needs a terminal: use --password-file/);
  } finally {
    cleanup();
  }
});

test('keygen --encrypt asks for the password on a terminal without echoing it', async (t) => {
  const { dir, cleanup } = tmp();
  try {
    const key = join(dir, 'tty.key');
    const password = 'typed-on-a-tty-0x2a';
    const ptyRun = (argv: string[], answers: string[]) => new Promise<{ status: number; output: string }>((resolve, reject) => {
      const child = spawn(pythonPath('current'), [join(ROOT, 'test', 'py', 'cli_pty.py')], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`cli_pty.py exited ${code}: ${err}`))));
      child.stdin.end(JSON.stringify({ argv: [process.execPath, MAIN, ...argv], answers, timeout: 60 }));
    });
    const r = await ptyRun(['keygen', '--bits', '2048', '--encrypt', '--out', key], [password, password]);
    t.is(r.status, 0, r.output);
    t.regex(r.output, /^Password for the new key: \r?\nAgain: \r?\nwrote /);
    t.false(r.output.includes(password), 'the password is not echoed');
    t.is(new PrivateKey(readFileSync(key), password).bits, 2048);
    t.throws(() => new PrivateKey(readFileSync(key), 'other'), { code: 'ERR_INVALID_KEY' });
    const mismatch = await ptyRun(['keygen', '--bits', '2048', '--encrypt', '--out', join(dir, 'no.key')], ['one-secret', 'two-secret']);
    t.is(mismatch.status, 3);
    t.regex(mismatch.output, /celery-sign keygen: the passwords do not match/);
    t.false(mismatch.output.includes('one-secret') || mismatch.output.includes('two-secret'));
    t.false(existsSync(join(dir, 'no.key')));
  } finally {
    cleanup();
  }
});

test('certgen issues a certificate with a CA key and certificate, and writes a CSR that cryptography verifies', async (t) => {
  const { dir, cleanup } = tmp();
  try {
    const caKey = join(dir, 'ca.key');
    const caCert = join(dir, 'ca.pem');
    const leafKey = join(dir, 'leaf.key');
    const leafCert = join(dir, 'leaf.pem');
    t.is((await cli(['keygen', '--bits', '2048', '--out', caKey])).code, 0);
    t.is((await cli(['keygen', '--bits', '2048', '--out', leafKey])).code, 0);
    t.is((await cli(['certgen', '--key', caKey, '--cn', 'Test CA', '--org', 'Acme', '--country', 'DE', '--days', '3650', '--out', caCert])).code, 0);
    const r = await cli(['certgen', '--key', leafKey, '--cn', 'worker-2', '--ca-cert', caCert, '--ca-key', caKey, '--serial', '4242', '--out', leafCert, '--json']);
    t.is(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    t.like(out, { id: 'DE Acme Test CA 4242', issuer: 'DE Acme Test CA', serial: '4242' });
    t.like(await py({ op: 'cert', path: leafCert, ca: caCert }), { subject: 'CN=worker-2', issuer: 'CN=Test CA,O=Acme,C=DE', ca: false, celery_id: 'DE Acme Test CA 4242', serial: '4242' });
    // The leaf signs; a store holding it verifies.
    const store = join(dir, 'store');
    mkdirSync(store);
    copyFileSync(leafCert, join(store, 'leaf.pem'));
    const s = await cli(['sign', '--key', leafKey, '--cert', leafCert], { input: '"x"' });
    t.is((await cli(['verify', '--store', store], { input: s.stdout })).code, 0);
    // A CA key that is not the CA certificate's: refused.
    assertOneLineError(t, await cli(['certgen', '--key', leafKey, '--cn', 'w', '--ca-cert', caCert, '--ca-key', leafKey, '--out', join(dir, 'bad.pem')]), 3, /CA key does not match/);

    const csr = join(dir, 'leaf.csr');
    const c = await cli(['certgen', '--key', leafKey, '--cn', 'worker-3', '--org', 'Acme', '--csr', '--out', csr]);
    t.is(c.code, 0, c.stderr);
    t.regex(readFileSync(csr, 'utf8'), /^-----BEGIN CERTIFICATE REQUEST-----/);
    t.deepEqual(await py({ op: 'csr', path: csr }), { subject: 'CN=worker-3,O=Acme', valid: true, bits: 2048 });
  } finally {
    cleanup();
  }
});

test('id shows an expired certificate and exits 1; an unreadable file exits 3', async (t) => {
  const expired = fx.pathOf(fx.cert('expired'));
  const good = fx.pathOf(fx.cert('rsa2048'));
  const r = await cli(['id', '--json', good, expired]);
  t.is(r.code, 1);
  const rows = JSON.parse(r.stdout);
  t.is(rows[0].expired, false);
  t.is(rows[1].expired, true);
  t.is(rows[1].id, fx.cert('expired').expected_id);
  t.is(rows[0].id, fx.cert('rsa2048').expected_id);
  assertOneLineError(t, await cli(['id', '/nonexistent.pem']), 3, /cannot read certificate \/nonexistent\.pem: no such file/);
  assertOneLineError(t, await cli(['id', fx.pathOf(fx.key('rsa2048.pkcs8'))]), 3, /does not load/);
  // No key material from the file in the error.
  const keyErr = await cli(['id', fx.pathOf(fx.key('rsa2048.pkcs8'))]);
  t.false(keyErr.stderr.includes('PRIVATE KEY'));
});

test('check-config: a good configuration from the environment, a JSON file and a .env file; a key/cert mismatch and a missing store are problems', async (t) => {
  const { dir, cleanup } = tmp();
  const pki = makePki();
  try {
    const good = {
      CELERY_TASK_SERIALIZER: 'auth',
      CELERY_ACCEPT_CONTENT: 'auth',
      CELERY_SECURITY_KEY: pki.key,
      CELERY_SECURITY_CERTIFICATE: pki.cert,
      CELERY_SECURITY_CERT_STORE: pki.storeDir,
    };
    const r = await cli(['check-config'], { env: cleanEnv(good) });
    t.is(r.code, 0, r.stdout);
    t.regex(r.stdout, /ok +key matches certificate/);
    t.regex(r.stdout, /ok +certificate in store/);
    t.regex(r.stdout, /setupSecurity accepts this configuration/);

    const json = join(dir, 'celeryconfig.json');
    writeFileSync(json, JSON.stringify({ task_serializer: 'auth', accept_content: ['auth'], security_key: pki.wrongKey, security_certificate: pki.cert, security_cert_store: join(dir, 'no-such-store') }));
    const bad = await cli(['check-config', '--config', json, '--json']);
    t.is(bad.code, 1);
    const report = JSON.parse(bad.stdout);
    t.false(report.ok);
    const problem = (name: string) => report.checks.find((c: { check: string; status: string }) => c.check === name && c.status === 'problem');
    t.truthy(problem('key matches certificate'));
    t.regex(problem('security_cert_store').detail, /no such file or directory/);

    // The .env: Celery's settings under CELERY_ names; what setupSecurity refuses, with its reason.
    const password = 'pw-that-must-not-show';
    const envFile = join(dir, '.env');
    writeFileSync(envFile, `# celery\nCELERY_TASK_SERIALIZER=json\nexport CELERY_SECURITY_KEY=${pki.key}\nCELERY_SECURITY_KEY_PASSWORD="${password}"\n`);
    const e = await cli(['check-config', '--env-file', envFile]);
    t.is(e.code, 1);
    t.regex(e.stdout, /PROBLEM +task_serializer: must be 'auth', is "json"/);
    t.regex(e.stdout, /PROBLEM +accept_content: must be exactly \['auth'\], is not set/);
    t.regex(e.stdout, /PROBLEM +security_certificate: not set/);
    t.regex(e.stdout, /PROBLEM +security_cert_store: not set/);
    t.false(e.stdout.includes(password) || e.stderr.includes(password));
    assertOneLineError(t, await cli(['check-config', '--config', join(dir, 'missing.json')]), 3, /cannot read settings file/);
  } finally {
    pki.cleanup();
    cleanup();
  }
});

test('bench: shows a saved result (table and chart path) through bench/run.ts; its usage errors exit 2', async (t) => {
  const { dir, cleanup } = tmp();
  try {
    const chart = join(dir, 'chart.svg');
    const r = await cli(['bench', '--from', join(ROOT, 'bench', 'results', 'latest.json'), '--chart', chart]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /celery-sign/);
    t.true(r.stdout.includes(`chart: ${chart}`));
    t.regex(readFileSync(chart, 'utf8'), /^<svg/);
    assertOneLineError(t, await cli(['bench', '--quick', '--threads', 'x']), 2, /--threads must be a whole number/);
    assertOneLineError(t, await cli(['bench', '--quick', '--threads', '0']), 2, /--threads must be at least 1/);
  } finally {
    cleanup();
  }
});

test('inspect and verify read a whole kombu message as a Python producer left it in a Redis queue', async (t) => {
  t.timeout(120000);
  const redis = await startRedis();
  const pki = makePki();
  const client = new Redis(redis.url(0), { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    const sent = await runProducer(pki, redis.url(0), { op: 'send', tasks: [{ name: 'wire.add', args: [4, 5], kwargs: {}, options: { queue: 'held' } }], wait: false });
    await client.connect();
    const raw = await client.lindex('held', 0);
    t.truthy(raw);
    const message = JSON.parse(raw!);
    t.is(message['content-type'], 'application/data');
    const i = await cli(['inspect', '--store', pki.storeDir, '--json'], { input: raw! });
    t.is(i.code, 0, i.stderr);
    const info = JSON.parse(i.stdout);
    t.like(info, { wireFormat: 'celery-5.5', signer: new Certificate(readFileSync(pki.cert)).id, contentType: 'application/json', verified: true });
    t.regex(info.preview, /^\[\[4, 5\], \{\}, \{/); // protocol 2: [args, kwargs, embed]
    const v = await cli(['verify', '--store', pki.storeDir, '--json'], { input: raw! });
    t.is(v.code, 0, v.stderr);
    t.deepEqual(JSON.parse(v.stdout).value[0], [4, 5]);
    t.is(message.headers.id, sent.ids[0]);
    // An unsigned message is named as such.
    assertOneLineError(t, await cli(['inspect'], { input: JSON.stringify({ ...message, 'content-type': 'application/json' }) }), 3, /not application\/data: it is not signed/);
  } finally {
    client.disconnect();
    pki.cleanup();
    await redis.stop();
  }
});

test("worker settings: Celery's result-store retries from the environment, a module's authorize options never taken for tasks", (t) => {
  t.deepEqual(
    fromEnv({
      CELERY_RESULT_BACKEND_ALWAYS_RETRY: 'yes',
      CELERY_RESULT_BACKEND_MAX_RETRIES: '7',
      CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS: '20',
      CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS: '1000',
    }),
    {
      result_backend_always_retry: true,
      result_backend_max_retries: 7,
      result_backend_base_sleep_between_retries_ms: 20,
      result_backend_max_sleep_between_retries_ms: 1000,
    },
  );
  t.deepEqual(fromEnv({ CELERY_RESULT_BACKEND_ALWAYS_RETRY: 'off' }), { result_backend_always_retry: false });
  t.throws(() => fromEnv({ CELERY_RESULT_BACKEND_MAX_RETRIES: 'many' }), { message: 'CELERY_RESULT_BACKEND_MAX_RETRIES must be a whole number' });
  t.throws(() => fromEnv({ CELERY_RESULT_BACKEND_MAX_RETRIES: '-1' }), { message: 'CELERY_RESULT_BACKEND_MAX_RETRIES must be a whole number' });
  t.throws(() => fromEnv({ CELERY_RESULT_BACKEND_ALWAYS_RETRY: 'maybe' }), { message: 'CELERY_RESULT_BACKEND_ALWAYS_RETRY must be true or false' });
  const authorize = (): boolean => true;
  const authorizeControl = [{ signer: { cn: 'ops' }, commands: ['ping'] }];
  const mod = { authorize, authorizeControl, add: () => 1 };
  t.deepEqual(Object.keys(tasksOf(mod)), ['add']);
  t.deepEqual(moduleOptions(mod), { authorize, authorizeControl });
  t.deepEqual(moduleOptions({ default: { tasks: { add: () => 1 }, authorizeControl } }), { authorizeControl });
  t.deepEqual(moduleOptions({ tasks: {} }), {});
});

test('worker runs the tasks a module exports, sent by a stock Python producer over redis-server; SIGTERM is a warm shutdown', async (t) => {
  t.timeout(120000);
  const redis = await startRedis();
  const pki = makePki();
  const { dir, cleanup } = tmp();
  let child: ReturnType<typeof spawn> | null = null;
  try {
    const mod = join(dir, 'tasks.mjs');
    // The module's signer may call every task but cli.secret (authorize, beside the tasks).
    const signer = new Certificate(readFileSync(pki.cert)).id;
    // The producer binds its headers (celery_sign_binding), as authorize requires.
    const bind = { extraEnv: { WIRE_BIND_PRODUCER: '1' } };
    writeFileSync(
      mod,
      `export const tasks = {\n  'wire.add': ([x, y]) => x + y,\n  'cli.hello': (args, kwargs, ctx) => ({ hello: kwargs.name, id: ctx.id }),\n` +
        `  'cli.slow': async ([ms]) => { console.log('cli.slow started'); await new Promise((r) => setTimeout(r, ms)); return 'finished'; },\n` +
        `  'cli.secret': () => { console.log('cli.secret RAN'); return 1; },\n};\n` +
        `export const authorize = [{ signer: { id: ${JSON.stringify(signer)} }, tasks: ['wire.add', 'cli.hello', 'cli.slow'] }];\n` +
        'export const requireHeaderBinding = true;\n',
    );
    const env = cleanEnv({
      CELERY_BROKER_URL: redis.url(0),
      CELERY_RESULT_BACKEND: redis.url(0),
      CELERY_TASK_SERIALIZER: 'auth',
      CELERY_ACCEPT_CONTENT: '["auth"]',
      CELERY_SECURITY_KEY: pki.key,
      CELERY_SECURITY_CERTIFICATE: pki.cert,
      CELERY_SECURITY_CERT_STORE: pki.storeDir,
      CELERY_RESULT_BACKEND_ALWAYS_RETRY: 'true',
      CELERY_RESULT_BACKEND_MAX_RETRIES: '3',
    });
    child = spawn(process.execPath, [MAIN, 'worker', mod, '-Q', 'cli'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((resolve) => child!.once('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const tm = setTimeout(() => reject(new Error(`worker not ready: ${out} ${err}`)), 30000);
      const check = () => {
        if (/ ready: 4 tasks \(wire\.add, cli\.hello, cli\.slow, cli\.secret\), queues cli/.test(out)) {
          clearTimeout(tm);
          resolve();
        }
      };
      child!.stdout!.on('data', check);
      child!.once('close', () => reject(new Error(`worker exited: ${out} ${err}`)));
      check();
    });
    const res = await runProducer(pki, redis.url(0), {
      op: 'send',
      tasks: [
        { name: 'wire.add', args: [20, 22], kwargs: {}, options: { queue: 'cli' } },
        { name: 'cli.hello', args: [], kwargs: { name: 'celery' }, options: { queue: 'cli' } },
      ],
      wait: true,
      timeout: 30,
    }, bind);
    t.deepEqual(res.results[0], { ok: true, value: 42 });
    t.deepEqual(res.results[1], { ok: true, value: { hello: 'celery', id: res.ids[1] } });
    // A message from a signer not in the store: refused, one line on stderr with the code.
    await runProducer(pki, redis.url(0), { op: 'send', tasks: [{ name: 'wire.add', args: [1, 1], kwargs: {}, options: { queue: 'cli' } }], wait: false }, { ...bind, signer: 'unknown' });
    await new Promise<void>((resolve) => {
      const check = () => {
        if (err.includes('\n')) {
          child!.stderr!.off('data', check);
          resolve();
        }
      };
      child!.stderr!.on('data', check);
      check();
    });
    t.regex(err, /^celery-sign worker: refused [0-9a-f-]{36}: ERR_UNKNOWN_CERTIFICATE: .*\n$/);
    t.false(err.includes('PRIVATE KEY'));
    // A task the module's authorize does not give this signer: refused, not run.
    const [secretId] = (await runProducer(pki, redis.url(0), { op: 'send', tasks: [{ name: 'cli.secret', args: [], kwargs: {}, options: { queue: 'cli' } }], wait: false }, bind)).ids;
    await new Promise<void>((resolve) => {
      const check = () => {
        if (err.split('\n').length >= 3) {
          child!.stderr!.off('data', check);
          resolve();
        }
      };
      child!.stderr!.on('data', check);
      check();
    });
    t.regex(err.split('\n')[1]!, new RegExp(`^celery-sign worker: refused ${secretId}: ERR_NOT_AUTHORIZED: `));
    t.false(out.includes('cli.secret RAN'));

    // Warm shutdown: a task running when SIGTERM comes finishes, and its result is stored.
    const slow = runProducer(pki, redis.url(0), { op: 'send', tasks: [{ name: 'cli.slow', args: [1500], kwargs: {}, options: { queue: 'cli' } }], wait: true, timeout: 30 }, bind);
    await new Promise<void>((resolve) => {
      const check = () => {
        if (out.includes('cli.slow started')) {
          child!.stdout!.off('data', check);
          resolve();
        }
      };
      child!.stdout!.on('data', check);
      check();
    });
    child.kill('SIGTERM');
    t.deepEqual((await slow).results[0], { ok: true, value: 'finished' });
    t.is(await exited, 0, err);
    t.regex(out, /SIGTERM: warm shutdown/);
    t.regex(out, / stopped\n$/);
    t.is(err.split('\n').length, 3, err); // the two refusals, nothing else

    // Settings with a problem: refused before connecting, one line.
    const badEnv = { ...env, CELERY_ACCEPT_CONTENT: 'json' };
    assertOneLineError(t, await cli(['worker', mod], { env: badEnv }), 3, /security settings: accept_content: must be exactly \['auth'\]/);
    assertOneLineError(t, await cli(['worker', join(dir, 'nope.mjs')], { env }), 3, /cannot load .*nope\.mjs/);
    // A CommonJS module; a broker that cannot be reached: exit 4, one line.
    const cjs = join(dir, 'tasks.cjs');
    writeFileSync(cjs, "module.exports = { tasks: { 'c.one': () => 1 } };\n");
    assertOneLineError(t, await cli(['worker', cjs, '--broker', 'redis://127.0.0.1:1/0'], { env }), 4, /cannot start the worker: Cannot connect to Redis/);
    const none = join(dir, 'none.cjs');
    writeFileSync(none, 'module.exports = { version: 1 };\n');
    assertOneLineError(t, await cli(['worker', none], { env }), 3, /exports no task/);
  } finally {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    cleanup();
    pki.cleanup();
    await redis.stop();
  }
});
