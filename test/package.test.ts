/** The package as users import it: ESM and CommonJS, one copy of every class. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as esm from 'celery-sign';
import { ROOT } from './helpers/python.js';

const require = createRequire(import.meta.url);

const API = [
  'PrivateKey',
  'Certificate',
  'CertStore',
  'FSCertStore',
  'SecureSerializer',
  'registry',
  'registerAuth',
  'setupSecurity',
  'disableUntrustedSerializers',
  'SecurityError',
  'ImproperlyConfigured',
] as const;

test('ESM import has every name of the API contract', (t) => {
  for (const name of API) t.truthy((esm as Record<string, unknown>)[name], name);
});

test('CommonJS require gives the very same objects', (t) => {
  const cjs = require('celery-sign') as Record<string, unknown>;
  for (const name of API) t.is(cjs[name], (esm as Record<string, unknown>)[name], name);
});

test('a plain CommonJS program and a plain ESM program both load it', (t) => {
  const cjsOut = execFileSync(process.execPath, ['-e', "const c = require('celery-sign'); console.log(typeof c.SecureSerializer, new c.SecurityError('ERR_DECODE', 'x').code)"], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  t.is(cjsOut.trim(), 'function ERR_DECODE');
  const esmOut = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "import { SecureSerializer, SecurityError } from 'celery-sign'; console.log(typeof SecureSerializer, new SecurityError('ERR_DECODE', 'x') instanceof Error)"],
    { cwd: ROOT, encoding: 'utf8' },
  );
  t.is(esmOut.trim(), 'function true');
});

test('errors carry their name and a stable code', (t) => {
  const e = new esm.SecurityError('ERR_BAD_SIGNATURE', 'Bad signature');
  t.is(e.name, 'SecurityError');
  t.is(e.code, 'ERR_BAD_SIGNATURE');
  t.true(e instanceof Error);
  const c = new esm.ImproperlyConfigured('no');
  t.is(c.name, 'ImproperlyConfigured');
  t.is(c.code, 'ERR_IMPROPERLY_CONFIGURED');
  t.deepEqual([...esm.ERROR_CODES].sort(), [
    'ERR_BAD_SIGNATURE',
    'ERR_CERTIFICATE_EXPIRED',
    'ERR_CONTENT_DISALLOWED',
    'ERR_DECODE',
    'ERR_DUPLICATE_CERTIFICATE',
    'ERR_HEADER_MISMATCH',
    'ERR_IMPROPERLY_CONFIGURED',
    'ERR_INVALID_CERTIFICATE',
    'ERR_INVALID_KEY',
    'ERR_MALFORMED_PAYLOAD',
    'ERR_PAYLOAD_TOO_LARGE',
    'ERR_REPLAYED',
    'ERR_UNKNOWN_CERTIFICATE',
    'ERR_UNSUPPORTED_KEY_TYPE',
  ]);
});

test('the native thread pool has a size', (t) => {
  t.true(esm.threadCount() >= 1);
  t.false(esm.setThreads(3), 'the pool is fixed once a batch ran');
  t.throws(() => esm.setThreads(0), { instanceOf: RangeError });
});
