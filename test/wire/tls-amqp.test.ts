/**
 * AMQP over TLS: a real rabbitmq-server with a TLS listener
 * (`listeners.ssl.default`, `ssl_options.verify = verify_peer`,
 * `fail_if_no_peer_cert = true`: mutual TLS), certificates made by the test
 * (test/wire/helpers/tls-pki.ts), a stock Python Celery 5.7 worker and
 * producer on the same listener with Celery's `broker_use_ssl` (py-amqp's
 * `ca_certs`, `certfile`, `keyfile`, `cert_reqs`, `server_hostname`), and
 * Node with the same setting (`brokerUseSsl`); results travel back over the
 * same TLS connection (`rpc://`). A server certificate that does not chain to
 * `ca_certs` or does not name `server_hostname`, and a missing or foreign
 * client certificate, are refused at connect with an error naming the reason.
 */
import test from 'ava';
import {
  createClient,
  createWorker,
  ImproperlyConfigured,
  WireError,
  type AmqpSslOptions,
  type CeleryClient,
  type Worker,
} from 'celery-sign';
import { makePki, runProducer, serializer, startCeleryWorker, type CeleryWorker, type Pki } from './helpers/celery.js';
import { startRabbit, type RabbitServer } from './helpers/rabbitmq-server.js';
import { makeTlsPki, type TlsPki } from './helpers/tls-pki.js';

let tls: TlsPki;
let pki: Pki;
let rabbit: RabbitServer;
let pyWorker: CeleryWorker;
let nodeWorker: Worker;
let amqps: string;

function mutual(): AmqpSslOptions {
  return { ca_certs: tls.ca, certfile: tls.clientCert, keyfile: tls.clientKey, cert_reqs: 'CERT_REQUIRED', server_hostname: 'localhost' };
}

/** Celery's broker_use_ssl for wire_app.py (cert_reqs becomes ssl.CERT_REQUIRED there). */
function pySsl(): Record<string, string> {
  return { WIRE_BROKER_USE_SSL: JSON.stringify(mutual()), WIRE_BACKEND: 'rpc://' };
}

test.before(async () => {
  tls = makeTlsPki();
  pki = makePki();
  rabbit = await startRabbit({ tls: { cacertfile: tls.ca, certfile: tls.serverCert, keyfile: tls.serverKey, verify: 'verify_peer', failIfNoPeerCert: true } });
  amqps = `amqps://guest:guest@localhost:${rabbit.tlsPort}//`;
  const [w] = await Promise.all([
    startCeleryWorker(pki, { broker: amqps, queues: ['py'], pool: 'solo', extraEnv: pySsl() }),
    (async () => {
      nodeWorker = createWorker({
        // an amqp:// URL: broker_use_ssl turns TLS on (as kombu)
        broker: `amqp://guest:guest@127.0.0.1:${rabbit.tlsPort}//`,
        brokerUseSsl: mutual(),
        backend: 'rpc://',
        security: serializer(pki),
        queues: ['node'],
        tasks: { 'wire.add': ([x, y]) => Number(x) + Number(y) },
      });
      await nodeWorker.start();
    })(),
  ]);
  pyWorker = w;
});

test.after.always(async () => {
  await nodeWorker?.stop({ timeout: 5000 });
  await pyWorker?.stop();
  await rabbit?.stop();
  pki?.cleanup();
  tls?.cleanup();
});

async function withClient<T>(o: Partial<Parameters<typeof createClient>[0]>, f: (c: CeleryClient) => Promise<T>): Promise<T> {
  const c = createClient({ broker: amqps, security: serializer(pki), connectTimeout: 5000, ...o });
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

test.serial('Node client -> Python worker over amqps:// with mutual TLS (broker_use_ssl); the rpc:// result comes back over TLS', async (t) => {
  t.timeout(60000);
  await withClient({ brokerUseSsl: mutual(), backend: 'rpc://' }, async (c) => {
    const res = await c.sendTask('wire.add', [2, 3], {}, { queue: 'py' });
    t.is(await res.get({ timeout: 30000 }), 5);
  });
});

test.serial("a Python producer's signed task over TLS runs on the Node worker; Python reads the rpc:// result", async (t) => {
  t.timeout(60000);
  const out = await runProducer<{ results: { ok: boolean; value?: unknown }[] }>(
    pki,
    amqps,
    { op: 'send', tasks: [{ name: 'wire.add', args: [40, 2], options: { queue: 'node' } }], wait: true, timeout: 30 },
    { extraEnv: pySsl() },
  );
  t.deepEqual(out.results, [{ ok: true, value: 42 }]);
});

test.serial('a server certificate that does not chain to ca_certs is refused at connect, naming the reason (client and worker)', async (t) => {
  t.timeout(30000);
  const wrongCa = { ...mutual(), ca_certs: tls.otherCa };
  const err = await withClient({ brokerUseSsl: wrongCa }, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.is(err!.code, 'ERR_BROKER');
  t.regex(err!.message, /over TLS .*does not chain to the trusted CA \(ca_certs\)/);
  t.notRegex(err!.message, /PRIVATE KEY|BEGIN/);
  // a bare amqps:// verifies against the system's CAs: refused too
  const bare = await withClient({}, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.regex(bare!.message, /does not chain to the trusted CA \(ca_certs\)/);
  const w = createWorker({ broker: amqps, brokerUseSsl: wrongCa, security: serializer(pki), queues: ['never'], tasks: {}, connectTimeout: 5000 });
  try {
    const werr = await t.throwsAsync(w.start(), { instanceOf: WireError });
    t.regex(werr!.message, /does not chain to the trusted CA/);
  } finally {
    await w.stop({ timeout: 1000 }).catch(() => undefined);
  }
});

test.serial('fail_if_no_peer_cert: no client certificate, or one from another CA, is refused, naming the reason', async (t) => {
  t.timeout(30000);
  const none = await withClient({ brokerUseSsl: { ca_certs: tls.ca } }, (c) => t.throwsAsync(c.connect(), { instanceOf: WireError }));
  t.regex(none!.message, /requires a client certificate, and none was given \(certfile, keyfile\)/);
  const stranger = await withClient({ brokerUseSsl: { ...mutual(), certfile: tls.strangerCert, keyfile: tls.strangerKey } }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: WireError }),
  );
  t.regex(stranger!.message, /refused this client's certificate \(certfile\)/);
});

test.serial('the host name is checked against server_hostname; check_hostname: false or CERT_NONE skip it', async (t) => {
  t.timeout(30000);
  const err = await withClient({ brokerUseSsl: { ...mutual(), server_hostname: 'other.example' } }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: WireError }),
  );
  t.regex(err!.message, /does not name the host connected to \(server_hostname\)/);
  await withClient({ brokerUseSsl: { ...mutual(), server_hostname: 'other.example', check_hostname: false } }, (c) => t.notThrowsAsync(c.connect()));
  await withClient({ brokerUseSsl: { certfile: tls.clientCert, keyfile: tls.clientKey, cert_reqs: 'CERT_NONE', ca_certs: tls.otherCa } }, (c) =>
    t.notThrowsAsync(c.connect()),
  );
});

test.serial("Redis's key names in an AMQP broker_use_ssl are ImproperlyConfigured", async (t) => {
  const err = await withClient({ brokerUseSsl: { ssl_ca_certs: tls.ca } as AmqpSslOptions }, (c) =>
    t.throwsAsync(c.connect(), { instanceOf: ImproperlyConfigured }),
  );
  t.regex(err!.message, /unknown key "ssl_ca_certs"; py-amqp \(an AMQP broker\) takes ca_certs, certfile/);
});
