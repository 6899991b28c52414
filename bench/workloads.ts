/**
 * Keys, message bodies and the plan of what each mode measures.
 *
 * A dataset is `n` distinct task-like messages of one body size, signed by
 * celery-sign with one key and digest. A cell is (operation, dataset, batch
 * size, contenders); a batch of size b is the dataset's first b items.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Certificate, CertStore, PrivateKey, SecureSerializer, registry, type Digest } from 'celery-sign';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(BENCH_DIR, '..');

export type Bits = 2048 | 3072 | 4096;
export const ALL_BITS: readonly Bits[] = [2048, 3072, 4096];
export type Op = 'verify' | 'sign';

export interface KeyMaterial {
  bits: Bits;
  keyPath: string;
  certPath: string;
  keyPem: string;
  certPem: string;
  key: PrivateKey;
  cert: Certificate;
  /** Celery's signer id of the certificate. */
  id: string;
}

export interface Keys {
  byBits: ReadonlyMap<Bits, KeyMaterial>;
  /** A store with all three demo certificates, as a worker would have. */
  store: CertStore;
  get(bits: Bits): KeyMaterial;
}

export function loadKeys(): Keys {
  const byBits = new Map<Bits, KeyMaterial>();
  for (const bits of ALL_BITS) {
    const keyPath = join(BENCH_DIR, 'keys', `rsa${bits}.key.pem`);
    const certPath = join(BENCH_DIR, 'keys', `rsa${bits}.cert.pem`);
    const keyPem = readFileSync(keyPath, 'utf8');
    const certPem = readFileSync(certPath, 'utf8');
    const cert = new Certificate(certPem);
    byBits.set(bits, { bits, keyPath, certPath, keyPem, certPem, key: new PrivateKey(keyPem), cert, id: cert.id });
  }
  const store = new CertStore([...byBits.values()].map((k) => k.cert));
  return {
    byBits,
    store,
    get(bits) {
      const k = byBits.get(bits);
      if (!k) throw new Error(`no key for ${bits} bits`);
      return k;
    },
  };
}

/** One celery-sign serializer per key and digest (sign and verify), shared by the contenders. */
export class Serializers {
  readonly #cache = new Map<string, SecureSerializer>();
  constructor(readonly keys: Keys) {}
  get(bits: Bits, digest: Digest): SecureSerializer {
    const k = `${bits}/${digest}`;
    let s = this.#cache.get(k);
    if (!s) {
      const m = this.keys.get(bits);
      s = new SecureSerializer({ key: m.key, cert: m.cert, store: this.keys.store, digest });
      this.#cache.set(k, s);
    }
    return s;
  }
}

export interface DatasetSpec {
  bits: Bits;
  digest: Digest;
  /** Target size of the serialized JSON body, bytes. */
  bodySize: number;
  /** How many distinct messages (the largest batch that uses it). */
  n: number;
}

export interface Dataset extends DatasetSpec {
  id: string;
  values: unknown[];
  /** Celery 5.5 payloads (base64 text) of `values`, made by celery-sign. */
  payloads: string[];
  /** Mean body bytes (kombu JSON) and payload bytes (base64 text) per message. */
  meanBody: number;
  meanPayload: number;
}

export function datasetId(s: DatasetSpec): string {
  return `rsa${s.bits}-${s.digest}-${sizeLabel(s.bodySize).replace(' ', '')}-n${s.n}`;
}

export function sizeLabel(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes >> 20} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes >> 10} KiB`;
  return `${bytes} B`;
}

/** A pseudo-random printable pool to cut message padding from (not compressible, not repetitive per item). */
function padPool(size: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';
  let x = 0x9e3779b9;
  const out = new Array<string>(size);
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = alphabet[(x >>> 0) & 63]!;
  }
  return out.join('');
}

/** A Celery protocol-2 task body `[args, kwargs, embed]` whose kombu JSON is about `bodySize` bytes. */
export function makeValues(bodySize: number, n: number): unknown[] {
  const make = (i: number, pad: string): unknown => [
    [i, `bench-task-${i}`, pad],
    { n: i, tag: 'celery-sign bench' },
    { callbacks: null, errbacks: null, chain: null, chord: null },
  ];
  const fixed = registry.dumps(make(0, ''), 'json').body.length;
  const padLen = Math.max(0, bodySize - fixed);
  const pool = padPool(padLen + 4096);
  const values = new Array<unknown>(n);
  for (let i = 0; i < n; i++) {
    const off = (i * 131) % 4096;
    values[i] = make(i, pool.slice(off, off + padLen));
  }
  return values;
}

export async function makeDataset(spec: DatasetSpec, serializers: Serializers): Promise<Dataset> {
  const values = makeValues(spec.bodySize, spec.n);
  const payloads = await serializers.get(spec.bits, spec.digest).serializeMany(values);
  let body = 0;
  let payload = 0;
  for (let i = 0; i < values.length; i++) {
    body += registry.dumps(values[i], 'json').body.length;
    payload += payloads[i]!.length;
  }
  return { ...spec, id: datasetId(spec), values, payloads, meanBody: body / spec.n, meanPayload: payload / spec.n };
}

// ---------------------------------------------------------------------------------------------
// The plan

export type ContenderId =
  | 'cs-many'
  | 'cs-nosimd'
  | 'cs-many-buf'
  | 'cs-async'
  | 'cs-sync'
  | 'wc-all'
  | 'wc-serial'
  | 'node-sync'
  | 'node-cb'
  | 'node-pool'
  | 'cs-js'
  | 'python';

export const CONTENDER_IDS: readonly ContenderId[] = [
  'cs-many',
  'cs-nosimd',
  'cs-many-buf',
  'cs-async',
  'cs-sync',
  'wc-all',
  'wc-serial',
  'node-sync',
  'node-cb',
  'node-pool',
  'cs-js',
  'python',
];

/** One name for a contender's verify and sign forms (tables, chart legend). */
export const PAIR_LABEL: Record<ContenderId, string> = {
  'cs-many': 'celery-sign deserializeMany / serializeMany',
  'cs-nosimd': 'celery-sign deserializeMany / serializeMany, CELERY_SIGN_SIMD=0 (AWS-LC)',
  'cs-many-buf': 'celery-sign deserializeMany, Buffer payloads',
  'cs-async': 'celery-sign deserializeAsync / serializeAsync, one at a time',
  'cs-sync': 'celery-sign deserialize / serialize (sync)',
  'wc-all': 'WebCrypto, Promise.all',
  'wc-serial': 'WebCrypto, one await at a time',
  'node-sync': 'node:crypto verify / sign (sync)',
  'node-cb': 'node:crypto verify / sign (callback, threadpool)',
  'node-pool': 'node:crypto worker_threads pool',
  'cs-js': 'celery-sign deserializeMany / serializeMany on the node:crypto fallback',
  python: 'Python Celery SecureSerializer (1 process)',
};

/** How each contender runs. */
export const HOW: Record<ContenderId, string> = {
  'cs-many': 'one native call per batch, fanned out over the native thread pool; payloads as strings (as from Redis)',
  'cs-nosimd':
    'the same calls with CELERY_SIGN_SIMD=0 (AWS-LC does the RSA step, as on a CPU without the SIMD kernels, e.g. ARM), in a child process, timed there; ' +
    'measured only where the CPU has a SIMD kernel (AVX-512 IFMA or AVX2)',
  'cs-many-buf': 'the same, payloads as Buffers (as an AMQP consumer has them)',
  'cs-async': 'one native task per item, each awaited before the next',
  'cs-sync': 'on the event loop',
  'wc-all': 'crypto.subtle, every item of the batch in flight (Promise.all)',
  'wc-serial': 'crypto.subtle, each item awaited before the next',
  'node-sync': 'crypto.verify / crypto.sign on the event loop',
  'node-cb': 'their callback form on the libuv threadpool, every item in flight',
  'node-pool': 'worker_threads, one per core; the batch split evenly (one joined string each); values back by structured clone',
  'cs-js': 'the same calls with CELERY_SIGN_BACKEND=js (no native binary): worker_threads, one per core, in a child process, timed there',
  python: "Celery's own SecureSerializer in one Python process, timed inside Python",
};

/** Contenders that only verify. */
export const VERIFY_ONLY: ReadonlySet<ContenderId> = new Set(['cs-many-buf']);

/** Those of `ids` that do `op`. */
export function forOp(op: Op, ids: readonly ContenderId[]): ContenderId[] {
  return op === 'verify' ? [...ids] : ids.filter((id) => !VERIFY_ONLY.has(id));
}

/** Contenders whose rate does not depend on the batch size (one item at a time). */
export const ONE_AT_A_TIME: ReadonlySet<ContenderId> = new Set(['cs-async', 'cs-sync', 'wc-serial', 'node-sync', 'python']);

export type SectionId = 'headline' | 'bodies' | 'keys';

export interface CellSpec {
  op: Op;
  dataset: DatasetSpec;
  batch: number;
  contenders: readonly ContenderId[];
}

export interface SectionPlan {
  id: SectionId;
  title: string;
  rounds: number;
  /** A sample repeats its batch until at least this long. */
  minSampleMs: number;
  cells: CellSpec[];
}

export interface Plan {
  mode: 'quick' | 'full';
  sections: SectionPlan[];
  /**
   * openssl speed: key sizes measured once before the sections, and whether
   * RSA-2048 (1 core and -multi) is also measured once a round inside the
   * headline section, interleaved with the contenders.
   */
  openssl: { seconds: number; bits: Bits[]; interleave: boolean };
  eventLoop: { seconds: number; which: ('cs-many' | 'cs-nosimd' | 'cs-serialize-many' | 'node-pool' | 'wc-all')[] };
  memory: { payloads: number; chunk: number };
  /** Human-readable coverage notes for the report. */
  coverage: string[];
}

export const HEADLINE_BODY = 512;
export const BATCHES = [1, 16, 256, 4096] as const;
export const MIB = 1 << 20;

export function makePlan(mode: 'quick' | 'full'): Plan {
  const head: DatasetSpec = { bits: 2048, digest: 'sha256', bodySize: HEADLINE_BODY, n: 4096 };
  const all = CONTENDER_IDS;
  const batchOnly: ContenderId[] = all.filter((c) => !ONE_AT_A_TIME.has(c));
  if (mode === 'quick') {
    const headline: CellSpec[] = [];
    for (const op of ['verify', 'sign'] as const) {
      for (const batch of BATCHES) headline.push({ op, dataset: head, batch, contenders: forOp(op, batch === 4096 ? batchOnly : all) });
    }
    return {
      mode,
      sections: [
        { id: 'headline', title: 'RSA-2048, SHA-256, 512 B JSON bodies, by batch size', rounds: 3, minSampleMs: 40, cells: headline },
        {
          id: 'bodies',
          title: 'RSA-2048, SHA-256, 1 MiB bodies',
          rounds: 3,
          minSampleMs: 40,
          cells: [
            {
              op: 'verify',
              dataset: { bits: 2048, digest: 'sha256', bodySize: MIB, n: 16 },
              batch: 16,
              contenders: ['cs-many', 'cs-nosimd', 'cs-many-buf', 'cs-sync', 'wc-all', 'node-sync', 'node-pool'],
            },
          ],
        },
      ],
      // RSA-2048's limit once a round, as in full mode: on a shared machine whose
      // speed drifts by a quarter within minutes, one sample before the sections
      // made the ratios a measure of the drift.
      openssl: { seconds: 1, bits: [], interleave: true },
      eventLoop: { seconds: 2, which: ['cs-many', 'cs-nosimd'] },
      memory: { payloads: 16 * 4096, chunk: 4096 },
      coverage: [
        'quick mode: RSA-2048/SHA-256 with 512 B bodies at batch sizes 1, 16, 256 and 4096, every contender, verify and sign; ' +
          'at batch 4096 only the batch and all-in-flight contenders (a one-at-a-time rate does not depend on the batch size)',
        'quick mode: 1 MiB bodies, batch of 16, verify only, six contenders (seven with the CELERY_SIGN_SIMD=0 path); no 256 B/4 KiB bodies, no RSA-3072/4096, no SHA-512',
        '3 rounds of >= 40 ms samples; openssl speed: RSA-2048 (1 s per operation, 1 core and -multi) once in every headline round, interleaved with the contenders; event-loop delay over 2 s; ' +
          'memory over 65,536 payloads (not the million of the target)',
      ],
    };
  }
  const headline: CellSpec[] = [];
  for (const op of ['verify', 'sign'] as const) {
    for (const batch of BATCHES) headline.push({ op, dataset: head, batch, contenders: forOp(op, all) });
  }
  const bodies: CellSpec[] = [];
  for (const bodySize of [256, 4096]) {
    bodies.push({ op: 'verify', dataset: { bits: 2048, digest: 'sha256', bodySize, n: 4096 }, batch: 4096, contenders: all });
    bodies.push({ op: 'sign', dataset: { bits: 2048, digest: 'sha256', bodySize, n: 4096 }, batch: 256, contenders: forOp('sign', all) });
  }
  const big: DatasetSpec = { bits: 2048, digest: 'sha256', bodySize: MIB, n: 16 };
  bodies.push({ op: 'verify', dataset: big, batch: 16, contenders: all });
  bodies.push({ op: 'sign', dataset: big, batch: 16, contenders: forOp('sign', all) });
  const keys: CellSpec[] = [];
  for (const bits of [2048, 3072, 4096] as const) {
    for (const digest of ['sha256', 'sha512'] as const) {
      const ds: DatasetSpec = { bits, digest, bodySize: HEADLINE_BODY, n: 256 };
      const ids = all.filter((id) => id !== 'cs-many-buf');
      keys.push({ op: 'verify', dataset: ds, batch: 256, contenders: ids });
      keys.push({ op: 'sign', dataset: ds, batch: 256, contenders: forOp('sign', ids) });
    }
  }
  return {
    mode,
    sections: [
      { id: 'headline', title: 'RSA-2048, SHA-256, 512 B JSON bodies, by batch size', rounds: 7, minSampleMs: 150, cells: headline },
      { id: 'bodies', title: 'RSA-2048, SHA-256, by body size', rounds: 5, minSampleMs: 150, cells: bodies },
      { id: 'keys', title: 'key size and digest, 512 B bodies, batch of 256', rounds: 5, minSampleMs: 150, cells: keys },
    ],
    openssl: { seconds: 2, bits: [3072, 4096], interleave: true },
    eventLoop: { seconds: 4, which: ['cs-many', 'cs-nosimd', 'cs-serialize-many', 'node-pool', 'wc-all'] },
    memory: { payloads: 1_000_000, chunk: 4096 },
    coverage: [
      'headline: RSA-2048/SHA-256, 512 B bodies (the targets\' workload), batch sizes 1, 16, 256, 4096, every contender, verify and sign',
      'bodies: RSA-2048/SHA-256; 256 B and 4 KiB bodies verified in batches of 4096 and signed in batches of 256; ' +
        '1 MiB bodies verified and signed in batches of 16 (a batch of 4096 would be 5.6 GB of base64)',
      'keys: RSA-2048, 3072 and 4096 x SHA-256 and SHA-512, 512 B bodies, batches of 256, verify and sign',
      'not the full cartesian product (4 x 3 x 3 x 2 x 2 = 144 cells): the batch size is varied on the headline workload only, ' +
        'body size and key/digest one axis at a time around it',
      '7 rounds (headline) or 5 rounds of >= 150 ms samples, contenders and cells interleaved in a shuffled order each round; ' +
        'openssl speed: RSA-2048 (1 s per operation, 1 core and -multi) once in every headline round, interleaved with the contenders; ' +
          'RSA-3072/4096 (2 s per operation) once before the sections',
      'event-loop delay over 4 s of back-to-back batches of 4096; memory over 1,000,000 payloads in chunks of 4096',
    ],
  };
}
