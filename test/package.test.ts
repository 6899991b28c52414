/** The package as users import it: ESM and CommonJS, one copy of every class. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as esm from 'celery-sign';
import { ROOT } from './helpers/python.js';

const require = createRequire(import.meta.url);

/** The names of the API contract (/work/shared/API.md's first block). */
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

/**
 * Every value the package exports, and nothing else: a name added or removed
 * here is a change of the public API (the types are pinned by the API report,
 * etc/celery-sign.api.md, `npm run api:check`).
 */
const EXPORTS = [
  // signing and verifying
  'Certificate',
  'CertStore',
  'DEFAULT_MAX_PAYLOAD_SIZE',
  'ERROR_CODES',
  'FSCertStore',
  'ImproperlyConfigured',
  'PrivateKey',
  'SecureSerializer',
  'SecurityError',
  // kombu's registry and JSON values, Celery's setup
  'SerializerRegistry',
  'disableInsecureSerializers',
  'disableUntrustedSerializers',
  'enableInsecureSerializers',
  'json',
  'registerAuth',
  'registry',
  'setupSecurity',
  // the backend, its SIMD kernel and its thread pool
  'backend',
  'setThreads',
  'simdKernel',
  'threadCount',
  // the wire layer: client, worker, errors, registration points
  'AsyncResult',
  'CeleryClient',
  'ResultTimeoutError',
  'TaskError',
  'TaskFailedError',
  'WireError',
  'Worker',
  // retries
  'MaxRetriesExceededError',
  'Retry',
  'createClient',
  'createWorker',
  'registerBackend',
  'registerTransport',
  // the canvas: signatures, chain, group, chord
  'Canvas',
  'CanvasError',
  'Chain',
  'Chord',
  'Group',
  'GroupResult',
  'Signature',
  'chain',
  'chord',
  'group',
  'signature',
].sort();

/** kombu's JSON: its value types and dumps/loads. */
const JSON_EXPORTS = ['PyDate', 'PyDateTime', 'PyDecimal', 'PyFloat', 'PyTime', 'PyUUID', 'dumps', 'loads'];

test('ESM import has every name of the API contract', (t) => {
  for (const name of API) t.truthy((esm as Record<string, unknown>)[name], name);
});

test('ESM exports exactly the public names (and the CommonJS module as default)', (t) => {
  t.deepEqual(
    Object.keys(esm)
      .filter((n) => n !== 'default')
      .sort(),
    EXPORTS,
  );
  t.is((esm as { default?: unknown }).default, require('celery-sign'));
  t.deepEqual(Object.keys(esm.json).sort(), JSON_EXPORTS);
});

test('CommonJS exports exactly the public names, the very same objects', (t) => {
  const cjs = require('celery-sign') as Record<string, unknown>;
  t.deepEqual(
    Object.keys(cjs)
      .filter((n) => n !== '__esModule')
      .sort(),
    EXPORTS,
  );
  for (const name of EXPORTS) t.is(cjs[name], (esm as Record<string, unknown>)[name], name);
  t.deepEqual(Object.keys(cjs.json as object).sort(), JSON_EXPORTS);
});

test('the shipped declarations never name an optional peer (ioredis, amqplib)', (t) => {
  // A TypeScript user with skipLibCheck: false and neither peer installed
  // must be able to compile against lib/*.d.ts.
  const lib = join(ROOT, 'lib');
  const files = (readdirSync(lib, { recursive: true }) as string[]).filter((f) => /\.d\.[cm]?ts$/.test(f));
  t.true(files.length > 10);
  const peer = /(?:from\s*|import\s*\(\s*|require\s*\(\s*|reference\s+types\s*=\s*)['"](?:ioredis|amqplib|@types\/amqplib)(?:\/[^'"]*)?['"]/;
  for (const f of files) t.false(peer.test(readFileSync(join(lib, f), 'utf8')), f);
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
    'ERR_INTERNAL',
    'ERR_INVALID_CERTIFICATE',
    'ERR_INVALID_KEY',
    'ERR_MALFORMED_PAYLOAD',
    'ERR_NOT_AUTHORIZED',
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
