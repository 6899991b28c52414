/**
 * Micro-benchmarks of the per-call sync API with `benchmark` (issue 13, item 2):
 * `serialize`, `deserialize`, `Certificate.verify`, `PrivateKey.sign`, each
 * beside its node:crypto equivalent, as node-rs's packages time theirs. Every
 * contender's answer is checked first (the same value back, a signature that
 * verifies, a tampered one refused), so that no benchmark times a wrong answer.
 *
 *   npm run bench:micro                    RSA-2048, SHA-256, a 512-byte body
 *   npm run bench:micro -- --bits 3072     options: --bits 2048|3072|4096  --json  --quick  --help
 *
 * The throughput suite (npm run bench) stays the reference for batches; this
 * one times single calls on the event loop's thread.
 */
import assert from 'node:assert/strict';
import { constants, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Benchmark from 'benchmark';
import { backend, Certificate, CertStore, PrivateKey, SecureSerializer } from 'celery-sign';
import { BENCH_DIR } from './workloads.js';

const USAGE = `Usage: npm run bench:micro -- [--bits 2048|3072|4096] [--json] [--quick]

Times celery-sign's per-call sync API (serialize, deserialize, Certificate.verify,
PrivateKey.sign) with the benchmark package, each beside node:crypto, after
checking that every contender gives the right answer. --quick: about 0.3 s a
case (a check that it runs, not a measurement).`;

function args(argv: string[]): { bits: number; json: boolean; quick: boolean } {
  let bits = 2048;
  let json = false;
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--quick') quick = true;
    else if (a === '--bits') bits = Number(argv[++i]);
    else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else {
      process.stderr.write(`bench:micro: unknown option ${a}\n${USAGE}\n`);
      process.exit(2);
    }
  }
  if (![2048, 3072, 4096].includes(bits)) {
    process.stderr.write('bench:micro: --bits must be 2048, 3072 or 4096\n');
    process.exit(2);
  }
  return { bits, json, quick };
}

const opts = args(process.argv.slice(2));
const keyPem = readFileSync(join(BENCH_DIR, 'keys', `rsa${opts.bits}.key.pem`));
const certPem = readFileSync(join(BENCH_DIR, 'keys', `rsa${opts.bits}.cert.pem`));
const key = new PrivateKey(keyPem);
const cert = new Certificate(certPem);
const nodeKey = createPrivateKey(keyPem);
const nodePub = createPublicKey(certPem);
const s = new SecureSerializer({ key, cert, store: new CertStore([cert]) });

// The workload: a Celery task body of about 512 bytes of JSON.
const value = { task: 'app.process', args: ['x'.repeat(451)], kwargs: { n: 1, ok: true } };
const data = Buffer.from(JSON.stringify(value));
const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN };
const PSS_VERIFY = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO };

// ---------------------------------------------------------------- same answer first
const payload = s.serialize(value);
assert.deepEqual(s.deserialize(payload), value, 'serialize -> deserialize gives the value back');
const sig = key.sign(data, 'sha256');
assert.equal(sig.length, opts.bits / 8);
assert.ok(nodeVerify('sha256', data, { key: nodePub, ...PSS_VERIFY }, sig), "node:crypto verifies celery-sign's signature");
const nodeSig = nodeSign('sha256', data, { key: nodeKey, ...PSS });
cert.verify(data, nodeSig, 'sha256'); // celery-sign verifies node:crypto's
const tampered = Buffer.from(sig);
tampered[tampered.length - 1]! ^= 1;
assert.throws(() => cert.verify(data, tampered, 'sha256'), { name: 'SecurityError', code: 'ERR_BAD_SIGNATURE' });
assert.equal(nodeVerify('sha256', data, { key: nodePub, ...PSS_VERIFY }, tampered), false);
const tamperedPayload = s.serialize({ ...value, kwargs: { n: 2, ok: true } });
assert.notEqual(tamperedPayload, payload);

// ---------------------------------------------------------------- the suites
interface Row {
  suite: string;
  name: string;
  hz: number;
  rme: number;
  samples: number;
}
const rows: Row[] = [];
let sink: unknown;

function suite(name: string, cases: Record<string, () => void>): Promise<void> {
  return new Promise((resolve, reject) => {
    const sui = new Benchmark.Suite(name);
    for (const [n, fn] of Object.entries(cases)) sui.add(n, fn, opts.quick ? { maxTime: 0.3, minSamples: 5 } : {});
    sui
      .on('cycle', (ev: Benchmark.Event) => {
        const b = ev.target as unknown as Benchmark;
        rows.push({ suite: name, name: String(b.name), hz: b.hz, rme: b.stats.rme, samples: b.stats.sample.length });
        if (!opts.json) process.stdout.write(`  ${String(b)}\n`);
      })
      .on('complete', function (this: Benchmark.Suite) {
        if (!opts.json && Object.keys(cases).length > 1) process.stdout.write(`  fastest: ${this.filter('fastest').map('name').join(', ')}\n`);
        resolve();
      })
      .on('error', (ev: Benchmark.Event) => reject((ev.target as unknown as { error: Error }).error));
    if (!opts.json) process.stdout.write(`${name}\n`);
    sui.run({ async: false });
  });
}

async function main(): Promise<void> {
  if (!opts.json) process.stdout.write(`celery-sign micro-benchmarks: RSA-${opts.bits}, SHA-256, ${data.length}-byte JSON body, backend ${backend}, Node ${process.version}\n`);
  await suite('PrivateKey.sign (RSA-PSS)', {
    'celery-sign PrivateKey.sign': () => {
      sink = key.sign(data, 'sha256');
    },
    'node:crypto sign': () => {
      sink = nodeSign('sha256', data, { key: nodeKey, ...PSS });
    },
  });
  await suite('Certificate.verify (RSA-PSS)', {
    'celery-sign Certificate.verify': () => {
      cert.verify(data, sig, 'sha256');
    },
    'node:crypto verify': () => {
      if (!nodeVerify('sha256', data, { key: nodePub, ...PSS_VERIFY }, sig)) throw new Error('does not verify');
    },
  });
  await suite('SecureSerializer.serialize', {
    'celery-sign serialize': () => {
      sink = s.serialize(value);
    },
  });
  await suite('SecureSerializer.deserialize', {
    'celery-sign deserialize': () => {
      sink = s.deserialize(payload);
    },
  });
  void sink;
  if (opts.json) process.stdout.write(JSON.stringify({ bits: opts.bits, backend, node: process.version, bodyBytes: data.length, results: rows }, null, 2) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:micro: ${(e as Error).message}\n`);
  process.exit(1);
});
