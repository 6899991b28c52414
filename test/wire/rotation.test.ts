/**
 * The key rotation procedure, end to end over a real redis-server with a
 * stock Python Celery 5.7 worker (`celery -A wire_app worker`, restarted to
 * reload: Celery has no reload) and a Node worker whose FSCertStore watches
 * the same certificate directory (reloaded without a restart), producers
 * signing with the old and the new key (Node clients and a stock Python
 * producer):
 *
 *   0. workers trust the old certificate; producers sign with the old key
 *   1. the new certificate goes into the workers' directory alongside the old;
 *      the workers reload (Node: its watch; Python: a restart)
 *   2. producers switch to the new key
 *   3. the old certificate is removed; the workers reload again
 *
 * At each step a task signed by each key is run or refused as the procedure
 * says. Keys and certificates are made by the test (Python `cryptography`).
 */
import test from 'ava';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  Certificate,
  createClient,
  createWorker,
  FSCertStore,
  PrivateKey,
  SecureSerializer,
  type CeleryClient,
  type CertStoreReload,
  type SecurityEvent,
  type Worker,
} from 'celery-sign';
import { certPath, keyPath, makeCerts, nowSeconds } from '../helpers/certgen.js';
import { runProducer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { startRedis, type RedisServer } from './helpers/redis-server.js';

const PY = 'rot-py';
const NODE = 'rot-node';
const DAY = 86400;

let root: string;
let pkiDir: string;
let storeDir: string;
let redis: RedisServer;
let r: Redis;
let store: FSCertStore;
let nodeWorker: Worker;
let python: CeleryWorker | undefined;
const clients: Record<'old' | 'new', CeleryClient | undefined> = { old: undefined, new: undefined };
const securityEvents: SecurityEvent[] = [];
const reloads: CertStoreReload[] = [];

/** The helpers' Pki shape for one signer: the Python side's key, certificate and the shared store. */
function pkiFor(signer: 'old' | 'new'): Pki {
  const key = keyPath(pkiDir, signer);
  const cert = certPath(pkiDir, signer);
  return { storeDir, key, cert, wrongKey: key, unknownKey: key, unknownCert: cert, cleanup: () => {} };
}

const idOf = (name: 'old' | 'new'): string => new Certificate(readFileSync(certPath(pkiDir, name))).id;

function signing(name: 'old' | 'new'): SecureSerializer {
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(keyPath(pkiDir, name))),
    cert: new Certificate(readFileSync(certPath(pkiDir, name))),
    store: new FSCertStore(storeDir), // results are JSON; the store is not used to read them
  });
}

async function client(name: 'old' | 'new'): Promise<CeleryClient> {
  let c = clients[name];
  if (c === undefined) {
    c = createClient({ broker: redis.url(), backend: redis.url(), security: signing(name) });
    await c.connect();
    clients[name] = c;
  }
  return c;
}

async function startPython(): Promise<CeleryWorker> {
  // The Python worker's own signing pair does not matter here (results are JSON): the new one.
  return startCeleryWorker(pkiFor('new'), { broker: redis.url(), queues: [PY], pool: 'solo' });
}

async function restartPython(): Promise<void> {
  await python?.stop();
  python = undefined;
  python = await startPython();
}

let seq = 0;

/** Runs wire.add signed by `signer` on `queue`; resolves to its result. */
async function runs(signer: 'old' | 'new', queue: string): Promise<unknown> {
  const c = await client(signer);
  const n = ++seq;
  const res = await c.sendTask('wire.add', [n, 1000], {}, { queue });
  return (await res.get({ timeout: 20000 })) === n + 1000;
}

/**
 * Sends wire.add signed by `signer` to `queue` and shows it refused as an
 * unknown signer: the Node worker's security event; the Python worker's
 * decode error in its log; then a task signed by `trusted` runs after it,
 * and the refused one has no result.
 */
async function refused(signer: 'old' | 'new', queue: string, trusted: 'old' | 'new'): Promise<boolean> {
  const c = await client(signer);
  const res = await c.sendTask('wire.add', [0, 0], {}, { queue });
  if (queue === NODE) {
    const end = Date.now() + 20000;
    while (!securityEvents.some((e) => e.taskId === res.id)) {
      if (Date.now() > end) throw new Error(`no security event for ${res.id}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const e = securityEvents.find((x) => x.taskId === res.id)!;
    if (e.code !== 'ERR_UNKNOWN_CERTIFICATE' || !e.reason.includes(idOf(signer))) return false;
  } else {
    const pattern = new RegExp(`Unknown certificate: b'${idOf(signer).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'`);
    await python!.waitForLog(pattern, 20000);
  }
  if (!(await runs(trusted, queue))) return false;
  return (await r.get(`celery-task-meta-${res.id}`)) === null;
}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'celery-sign-rotation-wire-'));
  pkiDir = join(root, 'pki');
  storeDir = join(root, 'store');
  mkdirSync(storeDir);
  const now = nowSeconds();
  makeCerts(pkiDir, ['old', 'new'], [
    { name: 'old', key: 'old', cn: 'producers', serial: 2024, notBefore: now - DAY, notAfter: now + 30 * DAY },
    { name: 'new', key: 'new', cn: 'producers', serial: 2025, notBefore: now - DAY, notAfter: now + 400 * DAY },
    { name: 'lapsed', key: 'old', cn: 'producers', serial: 2023, notBefore: now - 400 * DAY, notAfter: now - DAY },
  ]);
  copyFileSync(certPath(pkiDir, 'old'), join(storeDir, 'old.pem'));
  redis = await startRedis();
  r = new Redis(redis.url(), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  store = new FSCertStore(storeDir, { watch: { interval: 500, debounce: 50 } });
  store.on('reload', (e) => reloads.push(e));
  nodeWorker = createWorker({
    broker: redis.url(),
    backend: redis.url(),
    // Its own signing pair (what it publishes: canvas, retries, control replies): the new one, as Python's.
    security: new SecureSerializer({
      key: new PrivateKey(readFileSync(keyPath(pkiDir, 'new'))),
      cert: new Certificate(readFileSync(certPath(pkiDir, 'new'))),
      store,
    }),
    queues: [NODE],
    tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
  });
  nodeWorker.on('security', (e: SecurityEvent) => securityEvents.push(e));
  await nodeWorker.start();
  python = await startPython();
});

test.after.always(async () => {
  for (const c of Object.values(clients)) await c?.close();
  await nodeWorker?.stop({ timeout: 5000 });
  store?.close();
  await python?.stop();
  r?.disconnect();
  await redis?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

test.serial('step 0: the workers trust the old certificate only; the new key is refused', async (t) => {
  t.timeout(120000);
  for (const q of [NODE, PY]) {
    t.true(await runs('old', q), `${q}: old key runs`);
    t.true(await refused('new', q, 'old'), `${q}: new key refused`);
  }
});

test.serial('step 1: the new certificate alongside the old; the Node worker reloads by its watch, Python restarts; both keys run', async (t) => {
  t.timeout(120000);
  copyFileSync(certPath(pkiDir, 'new'), join(storeDir, 'new.pem'));
  const end = Date.now() + 20000;
  while (!reloads.some((e) => e.added.includes(idOf('new')))) {
    if (Date.now() > end) throw new Error('the watch did not reload');
    await new Promise((res) => setTimeout(res, 25));
  }
  t.like(reloads.at(-1), { added: [idOf('new')], removed: [], source: 'watch' });
  await restartPython();
  for (const q of [NODE, PY]) {
    t.true(await runs('old', q), `${q}: old key still runs`);
    t.true(await runs('new', q), `${q}: new key runs`);
  }
});

test.serial('step 2: producers switch to the new key (a stock Python producer too); the old key still runs until retired', async (t) => {
  t.timeout(120000);
  const out = await runProducer(pkiFor('new'), redis.url(), {
    op: 'send',
    tasks: [
      { name: 'wire.add', args: [40, 2], options: { queue: PY } },
      { name: 'wire.add', args: [20, 1], options: { queue: NODE } },
    ],
    wait: true,
    timeout: 20,
  });
  t.deepEqual(out.results.map((x) => x.value), [42, 21]);
  for (const q of [NODE, PY]) t.true(await runs('new', q), `${q}: new key runs`);
  t.true(await runs('old', NODE), 'a producer not switched yet still runs');
});

test.serial('step 3: the old certificate is retired; the Node worker reloads (reload()), Python restarts; the old key is refused, the new runs', async (t) => {
  t.timeout(120000);
  unlinkSync(join(storeDir, 'old.pem'));
  // The explicit call (the watch may get there first: then the call finds nothing left to change).
  const r3 = store.reload();
  const removed = [...reloads.flatMap((e) => e.removed)];
  t.true(removed.includes(idOf('old')) || r3.removed.includes(idOf('old')));
  t.deepEqual([...store].map((c) => c.id), [idOf('new')]);
  await restartPython();
  for (const q of [NODE, PY]) {
    t.true(await runs('new', q), `${q}: new key runs`);
    t.true(await refused('old', q, 'new'), `${q}: old key refused`);
  }
  // Every refusal was an unknown signer; no other security event.
  t.true(securityEvents.every((e) => e.code === 'ERR_UNKNOWN_CERTIFICATE'));
});

test.serial('a producer whose own certificate has expired refuses to send: ERR_CERTIFICATE_EXPIRED naming it, nothing reaches the broker', async (t) => {
  t.timeout(60000);
  const lapsed = new Certificate(readFileSync(certPath(pkiDir, 'lapsed')));
  const c = createClient({
    broker: redis.url(),
    backend: redis.url(),
    security: new SecureSerializer({ key: new PrivateKey(readFileSync(keyPath(pkiDir, 'old'))), cert: lapsed }),
  });
  await c.connect();
  try {
    const before = await r.llen(NODE);
    const err = await t.throwsAsync(c.sendTask('wire.add', [1, 2], {}, { queue: NODE }), { code: 'ERR_CERTIFICATE_EXPIRED' });
    t.true(err!.message.includes(lapsed.id), err!.message);
    t.false(/BEGIN|PRIVATE/.test(err!.message));
    t.is(await r.llen(NODE), before);
    t.false(securityEvents.some((e) => e.reason.includes(lapsed.id)), 'nothing signed by it reached a worker');
  } finally {
    await c.close();
  }
});
