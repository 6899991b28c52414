/**
 * TLS to Redis, broker and result backend: a real `redis-server` with only a
 * TLS port and `--tls-auth-clients yes` (mutual TLS), certificates made by
 * the test (test/wire/helpers/tls-pki.ts), a stock Python Celery 5.7 worker
 * and producer on the same broker configured the kombu way (a `rediss://`
 * URL with `ssl_*` parameters), and Node configured with Celery's
 * `broker_use_ssl` / `redis_backend_use_ssl` (`brokerUseSsl`,
 * `redisBackendUseSsl`). A server certificate that does not chain to the CA,
 * one that names another host, and a missing client certificate are refused
 * at connect with an error naming the reason; the result backend refuses a
 * `rediss://` URL without `ssl_cert_reqs`, as Celery does.
 */
import { spawnSync } from 'node:child_process';
import test from 'ava';
import {
  createClient,
  createWorker,
  ImproperlyConfigured,
  WireError,
  type CeleryClient,
  type RedisSslOptions,
  type Worker,
} from 'celery-sign';
import { makePki, runProducer, serializer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { freePort, startRedis, type RedisServer } from './helpers/redis-server.js';
import { startCliWorker } from './helpers/cli-worker.js';
import { makeTlsPki, redisTlsArgs, type TlsPki } from './helpers/tls-pki.js';
import { pythonPath } from '../helpers/python.js';

let tls: TlsPki;
let pki: Pki;
let redis: RedisServer;
let port: number;
let pyWorker: CeleryWorker;
let nodeWorker: Worker;

/** The Redis URL as kombu and Celery take TLS settings: `rediss://...?ssl_cert_reqs=required&ssl_ca_certs=...`. */
function kombuUrl(extra: Record<string, string> = {}): string {
  const q = new URLSearchParams({
    ssl_cert_reqs: 'required',
    ssl_ca_certs: tls.ca,
    ssl_certfile: tls.clientCert,
    ssl_keyfile: tls.clientKey,
    ...extra,
  });
  return `rediss://127.0.0.1:${port}/0?${q.toString()}`;
}

function mutual(): RedisSslOptions {
  return { ssl_cert_reqs: 'CERT_REQUIRED', ssl_ca_certs: tls.ca, ssl_certfile: tls.clientCert, ssl_keyfile: tls.clientKey };
}

test.before(async () => {
  tls = makeTlsPki();
  pki = makePki();
  port = await freePort();
  redis = await startRedis({ extraArgs: redisTlsArgs(tls, port, { authClients: 'yes' }) });
  pyWorker = await startCeleryWorker(pki, {
    broker: kombuUrl(),
    queues: ['py'],
    pool: 'solo',
    extraEnv: { WIRE_BACKEND: kombuUrl() },
  });
  nodeWorker = createWorker({
    broker: `rediss://127.0.0.1:${port}/0`,
    brokerUseSsl: mutual(),
    backend: `rediss://127.0.0.1:${port}/0`,
    redisBackendUseSsl: mutual(),
    security: serializer(pki),
    queues: ['node'],
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
  });
  await nodeWorker.start();
});

test.after.always(async () => {
  await nodeWorker?.stop({ timeout: 5000 });
  await pyWorker?.stop();
  await redis?.stop();
  pki?.cleanup();
  tls?.cleanup();
});

async function withClient<T>(o: Partial<Parameters<typeof createClient>[0]>, f: (c: CeleryClient) => Promise<T>): Promise<T> {
  const c = createClient({ broker: `rediss://127.0.0.1:${port}/0`, security: serializer(pki), connectTimeout: 5000, ...o });
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

test.serial('Node client -> Python worker over mutual TLS (broker_use_ssl, redis_backend_use_ssl): the result comes back over TLS', async (t) => {
  t.timeout(60000);
  await withClient(
    { brokerUseSsl: mutual(), backend: `rediss://127.0.0.1:${port}/0`, redisBackendUseSsl: mutual() },
    async (c) => {
      const res = await c.sendTask('wire.add', [2, 3], {}, { queue: 'py' });
      t.is(await res.get({ timeout: 30000 }), 5);
    },
  );
});

test.serial("Node client with kombu's URL form (rediss:// with ssl_* parameters) -> Python worker", async (t) => {
  t.timeout(60000);
  await withClient({ broker: kombuUrl(), backend: kombuUrl({ ssl_cert_reqs: 'CERT_REQUIRED' }) }, async (c) => {
    const res = await c.sendTask('wire.add', [20, 22], {}, { queue: 'py' });
    t.is(await res.get({ timeout: 30000 }), 42);
  });
});

test.serial("a Python producer's signed task over TLS runs on the Node worker; Python reads the result over TLS", async (t) => {
  t.timeout(60000);
  const out = await runProducer<{ ids: string[]; results: { ok: boolean; value?: unknown }[] }>(
    pki,
    kombuUrl(),
    { op: 'send', tasks: [{ name: 'wire.add', args: [40, 2], options: { queue: 'node' } }], wait: true, timeout: 30 },
    { extraEnv: { WIRE_BACKEND: kombuUrl() } },
  );
  t.deepEqual(out.results, [{ ok: true, value: 42 }]);
});

test.serial('Python with broker_use_ssl / redis_backend_use_ssl (Celery settings, plain rediss:// URL) -> Node worker', async (t) => {
  t.timeout(60000);
  const ssl = JSON.stringify({ ssl_cert_reqs: 'CERT_REQUIRED', ssl_ca_certs: tls.ca, ssl_certfile: tls.clientCert, ssl_keyfile: tls.clientKey });
  const url = `rediss://127.0.0.1:${port}/0`;
  const out = await runProducer<{ results: { ok: boolean; value?: unknown }[] }>(
    pki,
    url,
    { op: 'send', tasks: [{ name: 'wire.add', args: [1, 2], options: { queue: 'node' } }], wait: true, timeout: 30 },
    { extraEnv: { WIRE_BROKER_USE_SSL: ssl, WIRE_BACKEND_USE_SSL: ssl } },
  );
  t.deepEqual(out.results, [{ ok: true, value: 3 }]);
});

test.serial('a server certificate that does not chain to ssl_ca_certs is refused at connect, naming the reason (client and worker)', async (t) => {
  t.timeout(30000);
  const wrongCa: RedisSslOptions = { ...mutual(), ssl_ca_certs: tls.otherCa };
  const err = await withClient({ brokerUseSsl: wrongCa }, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.is(err!.code, 'ERR_BROKER');
  t.regex(err!.message, /over TLS .*does not chain to the trusted CA \(ssl_ca_certs\)/);
  t.notRegex(err!.message, /PRIVATE KEY|BEGIN/);
  // a bare rediss:// verifies against the system's CAs (kombu would not verify at all): refused too
  const bare = await withClient({}, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.regex(bare!.message, /does not chain to the trusted CA/);
  const w = createWorker({
    broker: `rediss://127.0.0.1:${port}/0`,
    brokerUseSsl: wrongCa,
    security: serializer(pki),
    queues: ['never'],
    tasks: {},
    connectTimeout: 5000,
  });
  try {
    const werr = await t.throwsAsync(w.start(), { instanceOf: WireError });
    t.regex(werr!.message, /does not chain to the trusted CA/);
  } finally {
    await w.stop({ timeout: 1000 }).catch(() => undefined);
  }
  // the result backend, as well
  const berr = await withClient(
    { brokerUseSsl: mutual(), backend: `rediss://127.0.0.1:${port}/0`, redisBackendUseSsl: wrongCa },
    (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }),
  );
  t.regex(berr!.message, /does not chain to the trusted CA/);
});

test.serial('--tls-auth-clients yes: no client certificate, or one from another CA, is refused, naming the reason', async (t) => {
  t.timeout(30000);
  const none = await withClient({ brokerUseSsl: { ssl_cert_reqs: 'required', ssl_ca_certs: tls.ca } }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: WireError }),
  );
  t.regex(none!.message, /requires a client certificate, and none was given \(ssl_certfile, ssl_keyfile\)/);
  const stranger = await withClient(
    { brokerUseSsl: { ssl_cert_reqs: 'required', ssl_ca_certs: tls.ca, ssl_certfile: tls.strangerCert, ssl_keyfile: tls.strangerKey } },
    (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }),
  );
  t.regex(stranger!.message, /refused this client's certificate/);
});

test.serial("a certificate for another host is refused; ssl_check_hostname=false or ssl_cert_reqs=none accept it", async (t) => {
  t.timeout(30000);
  const p2 = await freePort();
  const other = await startRedis({ extraArgs: redisTlsArgs(tls, p2, { authClients: 'yes', cert: 'wronghost' }) });
  try {
    const url = `rediss://127.0.0.1:${p2}/0`;
    const err = await withClient({ broker: url, brokerUseSsl: mutual() }, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
    t.regex(err!.message, /does not name the host connected to \(ssl_check_hostname\)/);
    await withClient({ broker: `${url}?${new URLSearchParams({ ...(mutual() as Record<string, string>), ssl_cert_reqs: 'required', ssl_check_hostname: 'false' })}` }, (c) =>
      t.notThrowsAsync(c.connect()),
    );
    await withClient({ broker: url, brokerUseSsl: { ...mutual(), ssl_cert_reqs: 'none', ssl_ca_certs: tls.otherCa } }, (c) =>
      t.notThrowsAsync(c.connect()),
    );
  } finally {
    await other.stop();
  }
});

/** What Python Celery's Redis result backend says about a backend URL. */
function celeryBackendError(url: string): string {
  const code = 'import sys\nfrom celery import Celery\napp = Celery(backend=sys.argv[1])\ntry:\n    app.backend\n    print("OK")\nexcept Exception as e:\n    print(type(e).__name__ + ": " + str(e).strip())\n';
  const r = spawnSync(pythonPath('current'), ['-c', code, url], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

test.serial('the result backend refuses rediss:// without ssl_cert_reqs and ssl_* parameters on redis://, as Celery does', async (t) => {
  t.timeout(30000);
  for (const url of [`rediss://127.0.0.1:${port}/0`, `redis://127.0.0.1:${port}/0?ssl_cert_reqs=required`, `rediss://127.0.0.1:${port}/0?ssl_cert_reqs=sometimes`]) {
    const py = celeryBackendError(url);
    t.regex(py, /^ValueError: /, url);
    const err = await withClient({ brokerUseSsl: mutual(), backend: url }, (c) => t.throwsAsync(c.connect(), { instanceOf: ImproperlyConfigured }));
    t.is(err!.message, py.replace(/^ValueError: /, ''), url);
  }
  // ssl_cert_reqs in redis_backend_use_ssl is enough (Celery: the same)
  t.is(celeryBackendError(`rediss://127.0.0.1:${port}/0?ssl_cert_reqs=none`), 'OK');
});

test.serial("the URL's ssl_* parameters replace broker_use_ssl, as kombu's do", async (t) => {
  t.timeout(30000);
  const code =
    'import json, sys\nfrom celery import Celery\napp = Celery(broker=sys.argv[1])\napp.conf.broker_use_ssl = json.loads(sys.argv[2])\nprint(json.dumps(sorted(app.connection_for_write().ssl)))\n';
  const url = `rediss://127.0.0.1:${port}/0?ssl_cert_reqs=required`;
  const r = spawnSync(pythonPath('current'), ['-c', code, url, JSON.stringify(mutual())], { encoding: 'utf8' });
  t.deepEqual(JSON.parse(r.stdout), ['ssl_cert_reqs'], r.stderr);
  // so the CA of broker_use_ssl is not used: the server is not trusted
  const err = await withClient({ broker: url, brokerUseSsl: mutual() }, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.regex(err!.message, /does not chain to the trusted CA/);
});

test.serial('a TLS file that cannot be read is ImproperlyConfigured naming the setting and the path', async (t) => {
  const err = await withClient({ brokerUseSsl: { ...mutual(), ssl_ca_certs: '/nonexistent/ca.pem' } }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: ImproperlyConfigured }),
  );
  t.is(err!.message, 'broker_use_ssl ssl_ca_certs: cannot read "/nonexistent/ca.pem" (ENOENT)');
  const bad = await withClient({ brokerUseSsl: { ...mutual(), ssl_ca_cert: tls.ca } as RedisSslOptions }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: ImproperlyConfigured }),
  );
  t.regex(bad!.message, /unknown key "ssl_ca_cert"/);
});

test.serial('the celery-sign worker command takes broker_use_ssl and redis_backend_use_ssl (CELERY_BROKER_USE_SSL, JSON) and runs a task over mutual TLS', async (t) => {
  t.timeout(90000);
  const url = `rediss://127.0.0.1:${port}/0`;
  const w = await startCliWorker(
    {
      CELERY_BROKER_URL: url,
      CELERY_RESULT_BACKEND: url,
      CELERY_BROKER_USE_SSL: JSON.stringify(mutual()),
      CELERY_REDIS_BACKEND_USE_SSL: JSON.stringify(mutual()),
      CELERY_TASK_SERIALIZER: 'auth',
      CELERY_ACCEPT_CONTENT: '["auth"]',
      CELERY_SECURITY_KEY: pki.key,
      CELERY_SECURITY_CERTIFICATE: pki.cert,
      CELERY_SECURITY_CERT_STORE: pki.storeDir,
    },
    "export const tasks = { 'cli.mul': ([x, y]) => x * y };\n",
    'cli-tls',
  );
  try {
    t.regex(w.output(), / ready: 1 task \(cli\.mul\), queues cli-tls/);
    await withClient({ brokerUseSsl: mutual(), backend: url, redisBackendUseSsl: mutual() }, async (c) => {
      const res = await c.sendTask('cli.mul', [6, 7], {}, { queue: 'cli-tls' });
      t.is(await res.get({ timeout: 20000 }), 42);
    });
  } finally {
    await w.stop();
  }
});

test.serial('the celery-sign worker command without the client certificate: it does not start, and says why', async (t) => {
  t.timeout(60000);
  const { spawnSync: run } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { ROOT } = await import('../helpers/python.js');
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-cli-tls-'));
  const mod = join(dir, 'tasks.mjs');
  writeFileSync(mod, "export const tasks = { 'cli.mul': ([x, y]) => x * y };\n");
  try {
    const r = run(process.execPath, [join(ROOT, 'lib', 'cli', 'main.js'), 'worker', mod, '-Q', 'cli-tls'], {
      env: {
        PATH: process.env.PATH,
        CELERY_BROKER_URL: `rediss://127.0.0.1:${port}/0`,
        CELERY_BROKER_USE_SSL: JSON.stringify({ ssl_cert_reqs: 'CERT_REQUIRED', ssl_ca_certs: tls.ca }),
        CELERY_TASK_SERIALIZER: 'auth',
        CELERY_ACCEPT_CONTENT: '["auth"]',
        CELERY_SECURITY_KEY: pki.key,
        CELERY_SECURITY_CERTIFICATE: pki.cert,
        CELERY_SECURITY_CERT_STORE: pki.storeDir,
      },
      encoding: 'utf8',
      timeout: 40000,
    });
    t.not(r.status, 0);
    t.regex(r.stderr, /cannot start the worker: .*client certificate/);
    t.false(r.stderr.includes('PRIVATE KEY'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
