/**
 * Wycheproof's RSA-PSS and RSA PKCS#1 v1.5 signature vectors (vendored in
 * test/vectors/wycheproof/, see its README) run through celery-sign's public
 * API, with the REAL Celery's answer on each vector as the expectation.
 *
 * `defineWycheproofSuite(path)` declares the ava tests of one verification
 * path; test/wycheproof.test.ts (the path the environment gives: the IFMA
 * kernels where the CPU has them, else the AVX2 kernel for batches) and test/wycheproof-awslc.test.ts
 * (`CELERY_SIGN_SIMD=0`: AWS-LC) call it. Under `CELERY_SIGN_BACKEND=js` both
 * files run on the node:crypto fallback (the second one says it skips).
 *
 * Expectations, twice over:
 * - `classOf` puts each vector in a class from its file, flags and comment,
 *   and each class has a Celery answer argued from Celery's code (see
 *   CLASSES and test/vectors/wycheproof/README.md);
 * - test/py/wycheproof_oracle.py asks Celery 5.7 itself (`Certificate.verify`
 *   and `SecureSerializer.deserialize`, on cryptography/OpenSSL) in this run.
 * The two must agree (else the class argument is wrong and a test says where),
 * and celery-sign must give Celery's answer on every path.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  backend,
  Certificate,
  CertStore,
  ImproperlyConfigured,
  SecureSerializer,
  SecurityError,
  simdKernel,
  type DeserializeResult,
  type Digest,
} from 'celery-sign';
import { cpuHasAvx2, cpuHasIfma } from './cpu.js';
import { pack55 } from './payloads.js';
import { ROOT, runPython } from './python.js';

export const VECTOR_DIR = join(ROOT, 'test', 'vectors', 'wycheproof');
const ORACLE = join(ROOT, 'test', 'py', 'wycheproof_oracle.py');

/** The vendored files, each with what it is for. */
export const FILES: ReadonlyArray<{ name: string; kind: 'pss' | 'pkcs1' }> = [
  { name: 'rsa_pss_2048_sha1_mgf1_20_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha256_mgf1_0_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha256_mgf1_32_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha384_mgf1_48_test.json', kind: 'pss' },
  { name: 'rsa_pss_3072_sha256_mgf1_32_test.json', kind: 'pss' },
  { name: 'rsa_pss_4096_sha256_mgf1_32_test.json', kind: 'pss' },
  { name: 'rsa_pss_4096_sha384_mgf1_48_test.json', kind: 'pss' },
  { name: 'rsa_pss_4096_sha512_mgf1_32_test.json', kind: 'pss' },
  { name: 'rsa_pss_4096_sha512_mgf1_64_test.json', kind: 'pss' },
  { name: 'rsa_pss_misc_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha256_mgf1sha1_20_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha256_mgf1_32_params_test.json', kind: 'pss' },
  { name: 'rsa_pss_2048_sha512_256_mgf1_32_test.json', kind: 'pss' },
  { name: 'rsa_signature_2048_sha224_test.json', kind: 'pkcs1' },
  { name: 'rsa_signature_2048_sha256_test.json', kind: 'pkcs1' },
  { name: 'rsa_signature_2048_sha384_test.json', kind: 'pkcs1' },
  { name: 'rsa_signature_2048_sha512_test.json', kind: 'pkcs1' },
  { name: 'rsa_signature_3072_sha256_test.json', kind: 'pkcs1' },
  { name: 'rsa_signature_4096_sha512_test.json', kind: 'pkcs1' },
];

/** Wycheproof's hash names -> Celery's digest names (`get_digest_algorithm`). */
const DIGEST_NAMES: Record<string, string> = {
  'SHA-1': 'sha1',
  'SHA-224': 'sha224',
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
  'SHA-512/224': 'sha512_224',
  'SHA-512/256': 'sha512_256',
};

/** The digests celery-sign takes (src/bytes.ts DIGESTS; DESIGN.md: those met in the field). */
const SUPPORTED = new Set<string>(['sha1', 'sha224', 'sha256', 'sha384', 'sha512']);

export type ClassName =
  | 'pss-valid'
  | 'pss-other-salt-length'
  | 'pss-malformed'
  | 'pss-mgf1-other-digest'
  | 'pkcs1-v1.5'
  | 'pss-in-pkcs1-file';

/** Each class with Celery's answer and why. */
export const CLASSES: Record<ClassName, { verifies: boolean; why: string }> = {
  'pss-valid': {
    verifies: true,
    why: 'a well-formed PSS signature with MGF1 of the message digest (Normal, SpecialCaseHash, salt all 0/1)',
  },
  'pss-other-salt-length': {
    verifies: true,
    why:
      'Wycheproof calls it invalid only because its salt length differs from the declared sLen; Celery passes ' +
      'PSS.MAX_LENGTH to verify, which OpenSSL reads as "recover the salt length", so any salt length verifies',
  },
  'pss-malformed': {
    verifies: false,
    why: 'the encoded message breaks a rule of EMSA-PSS decoding, or the signature is not a number below n of the key length',
  },
  'pss-mgf1-other-digest': {
    verifies: false,
    why:
      'signed with MGF1 of another digest; Celery always verifies with MGF1 of the message digest ' +
      '(padding.MGF1(digest)), so the mask does not unmask: refused',
  },
  'pkcs1-v1.5': {
    verifies: false,
    why: 'a PKCS#1 v1.5 signature (valid or not as such): Celery verifies RSA-PSS only',
  },
  'pss-in-pkcs1-file': {
    verifies: true,
    why:
      "the PKCS#1 files' WrongPrimitive vectors 'RSASSA-PSS signature' are PSS signatures (MGF1 of the message " +
      'digest) of the message: wrong for a PKCS#1 v1.5 verifier, right for Celery',
  },
};

export interface Vector {
  /** Position in the list `loadVectors` returns (and in the oracle's answer). */
  index: number;
  file: string;
  tcId: number;
  comment: string;
  flags: string[];
  result: string;
  key: number;
  /** Celery's digest name. */
  digest: string;
  /** celery-sign takes this digest name. */
  supported: boolean;
  /** The key is an id-RSASSA-PSS SubjectPublicKeyInfo (a `_params` file). */
  pssKey: boolean;
  cls: ClassName;
  msg: Buffer;
  sig: Buffer;
}

interface WpGroup {
  publicKeyDer: string;
  sha: string;
  mgfSha?: string;
  sLen?: number;
  tests: Array<{ tcId: number; comment: string; flags: string[]; result: string; msg: string; sig: string }>;
}

export function classOf(kind: 'pss' | 'pkcs1', group: WpGroup, t: { comment: string; flags: string[]; result: string }): ClassName {
  if (kind === 'pkcs1') {
    return t.flags.includes('WrongPrimitive') && t.comment === 'RSASSA-PSS signature' ? 'pss-in-pkcs1-file' : 'pkcs1-v1.5';
  }
  if (group.mgfSha !== group.sha) return 'pss-mgf1-other-digest';
  if (t.result === 'valid') return 'pss-valid';
  if (/^s_len changed to \d+$/.test(t.comment)) return 'pss-other-salt-length';
  return 'pss-malformed';
}

export function loadVectors(): { keys: string[]; vectors: Vector[] } {
  const keys: string[] = [];
  const keyIndex = new Map<string, number>();
  const vectors: Vector[] = [];
  for (const { name, kind } of FILES) {
    const doc = JSON.parse(readFileSync(join(VECTOR_DIR, name), 'utf8')) as { testGroups: WpGroup[] };
    for (const g of doc.testGroups) {
      const digest = DIGEST_NAMES[g.sha];
      if (digest === undefined) throw new Error(`${name}: unexpected hash ${g.sha}`);
      let key = keyIndex.get(g.publicKeyDer);
      if (key === undefined) {
        key = keys.length;
        keys.push(g.publicKeyDer);
        keyIndex.set(g.publicKeyDer, key);
      }
      // id-RSASSA-PSS, 1.2.840.113549.1.1.10
      const pssKey = g.publicKeyDer.includes('06092a864886f70d01010a');
      for (const t of g.tests) {
        vectors.push({
          index: vectors.length,
          file: name,
          tcId: t.tcId,
          comment: t.comment,
          flags: t.flags,
          result: t.result,
          key,
          digest,
          supported: SUPPORTED.has(digest),
          pssKey,
          cls: classOf(kind, g, t),
          msg: Buffer.from(t.msg, 'hex'),
          sig: Buffer.from(t.sig, 'hex'),
        });
      }
    }
  }
  return { keys, vectors };
}

export interface Verdict {
  ok: boolean;
  error?: string;
  /** The innermost exception of Celery's refusal (see the oracle's `refusal`). */
  root?: string;
}

export interface OracleAnswer {
  versions: Record<string, string>;
  certs: Array<{ ok: boolean; pem?: string; id?: string; stage?: string; error?: string }>;
  vectors: Array<{ verify: Verdict; payload: string | null; deserialize: Verdict }>;
}

/** One Python call: a certificate per key and Celery's answers on every vector. */
export function askCelery(keys: string[], vectors: Vector[]): OracleAnswer {
  return runPython<OracleAnswer>(ORACLE, {
    keys,
    vectors: vectors.map((v) => ({ key: v.key, digest: v.digest, msg: v.msg.toString('hex'), sig: v.sig.toString('hex') })),
  });
}

export type PathName = 'environment' | 'aws-lc';

function describe(v: Vector): string {
  return `${v.file} tcId ${v.tcId} (${v.cls}: ${v.comment})`;
}

function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'verifies';
  } catch (err) {
    if (err instanceof SecurityError) return `refused ${err.code}`;
    if (err instanceof ImproperlyConfigured) return 'ImproperlyConfigured';
    return `threw ${String(err)}`;
  }
}

function bytesOf(value: unknown): Buffer | null {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (typeof value === 'string') return Buffer.from(value, 'latin1');
  return null;
}

function resultText(r: DeserializeResult, msg: Buffer): string {
  if (!r.ok) return `refused ${r.error.code}`;
  const b = bytesOf(r.value);
  return b !== null && b.equals(msg) ? 'verifies' : `verifies, wrong body ${String(r.value).slice(0, 40)}`;
}

/** A deterministic interleaving: round-robin over keys, so one batch mixes keys inside each group of lanes. */
function interleaved(items: number[], vectors: Vector[]): number[] {
  const byKey = new Map<number, number[]>();
  for (const i of items) {
    const list = byKey.get(vectors[i]!.key) ?? [];
    list.push(i);
    byKey.set(vectors[i]!.key, list);
  }
  const lists = [...byKey.values()];
  const out: number[] = [];
  for (let round = 0; out.length < items.length; round++) {
    for (const list of lists) if (round < list.length) out.push(list[round]!);
  }
  return out;
}

/**
 * Declares the tests of one verification path. `path` is 'environment' (the
 * path this process's environment gives) or 'aws-lc' (the caller has set
 * CELERY_SIGN_SIMD=0 before celery-sign loaded).
 */
export function defineWycheproofSuite(path: PathName): void {
  const simdOff = process.env.CELERY_SIGN_SIMD?.trim() === '0';
  // The kernel the addon reports (mb::kernel), checked against the CPU's flags.
  const kernel = backend === 'js' ? null : simdKernel();
  let label: string;
  if (backend === 'js') {
    label = 'node:crypto backend';
    if (path === 'aws-lc') {
      test.skip('[AWS-LC] skipped: this run uses the node:crypto backend (CELERY_SIGN_BACKEND=js), covered by wycheproof.test.ts', () => {});
      return;
    }
  } else if (path === 'aws-lc') {
    if (!simdOff) throw new Error('wycheproof-awslc.test.ts must set CELERY_SIGN_SIMD=0 before celery-sign loads');
    if (kernel !== null) throw new Error(`CELERY_SIGN_SIMD=0, yet the addon reports the ${kernel} kernel`);
    label = 'AWS-LC, CELERY_SIGN_SIMD=0';
  } else if (simdOff) {
    test.skip('[SIMD kernels] skipped: CELERY_SIGN_SIMD=0 in the environment (the vectors run on AWS-LC below)', () => {});
    label = 'AWS-LC, CELERY_SIGN_SIMD=0';
  } else {
    const ifma = cpuHasIfma();
    const avx2 = cpuHasAvx2();
    const forced = process.env.CELERY_SIGN_SIMD?.trim().toLowerCase() === 'avx2';
    // What mb::kernel must have chosen on this CPU.
    const want = ifma && !forced ? 'avx512-ifma' : avx2 ? 'avx2' : ifma === null ? kernel : null;
    if (kernel !== want) {
      test(`[SIMD kernels] the addon reports ${String(kernel)} on a CPU whose flags call for ${String(want)}`, (t) => {
        t.fail(`simdKernel() is ${String(kernel)}, /proc/cpuinfo calls for ${String(want)}`);
      });
    }
    if (kernel !== 'avx512-ifma') {
      const why = ifma === null ? 'cannot read /proc/cpuinfo to tell whether this CPU has AVX-512 IFMA' : forced ? 'CELERY_SIGN_SIMD=avx2' : 'this CPU has no AVX-512 IFMA';
      if (process.env.CELERY_SIGN_EXPECT_IFMA === '1' && !forced) {
        test(`[IFMA kernels] CELERY_SIGN_EXPECT_IFMA=1 but ${why}`, (t) => {
          t.fail(`the IFMA kernels are claimed for this run, but ${why}`);
        });
      } else {
        test.skip(`[IFMA kernels] skipped: ${why} (the vectors run on the path below)`, () => {});
      }
    }
    if (kernel === null && process.env.CELERY_SIGN_EXPECT_AVX2 === '1') {
      test('[AVX2 kernel] CELERY_SIGN_EXPECT_AVX2=1 but no SIMD kernel runs', (t) => {
        t.fail('the AVX2 kernel is claimed for this run, but the addon reports none');
      });
    }
    label =
      kernel === 'avx512-ifma'
        ? 'IFMA kernels'
        : kernel === 'avx2'
          ? 'AVX2 kernel for batches, AWS-LC for single payloads'
          : 'AWS-LC, no SIMD kernel on this CPU';
  }

  const { keys, vectors } = loadVectors();
  const count = (pred: (v: Vector) => boolean): number => vectors.filter(pred).length;
  const supported = vectors.filter((v) => v.supported);
  const unsupported = vectors.filter((v) => !v.supported);

  let answer: OracleAnswer | undefined;
  let certs: Array<Certificate | null> = [];
  const celery = (): OracleAnswer => {
    if (!answer) throw new Error('the Celery oracle did not run');
    return answer;
  };

  test.before(() => {
    answer = askCelery(keys, vectors);
    if (answer.certs.length !== keys.length || answer.vectors.length !== vectors.length) {
      throw new Error('the Celery oracle answered for a different set');
    }
  });

  test.serial(`[${label}] certificates for the ${keys.length} vector keys load as in Celery, with Celery's ids`, (t) => {
    const bad: string[] = [];
    certs = celery().certs.map((c, i) => {
      if (c.pem === undefined) {
        bad.push(`key ${i}: no certificate made (${c.error})`);
        return null;
      }
      let cert: Certificate | null = null;
      let got: string;
      try {
        cert = new Certificate(c.pem);
        got = 'loads';
      } catch (err) {
        got = `refused ${err instanceof SecurityError ? err.code : String(err)}`;
      }
      const want = c.ok ? 'loads' : `refused (Celery: ${c.error})`;
      if ((got === 'loads') !== c.ok) bad.push(`key ${i}: Celery ${want}, celery-sign ${got}`);
      else if (cert && cert.id !== c.id) bad.push(`key ${i}: id ${JSON.stringify(cert.id)}, Celery ${JSON.stringify(c.id)}`);
      return c.ok ? cert : null;
    });
    t.deepEqual(bad, []);
    t.true(certs.some((c) => c !== null));
    if (label === 'IFMA kernels') {
      t.log('IFMA inferred from /proc/cpuinfo (avx512f, avx512ifma) and CELERY_SIGN_SIMD unset: the binding does not report mb::available()');
    }
    // The one PSS-keyed file loads: cryptography reads id-RSASSA-PSS as an RSA key.
    t.true(vectors.filter((v) => v.pssKey).every((v) => certs[v.key] !== null));
  });

  test(`[${label}] Celery's answers are those of the vector classes (${Object.keys(CLASSES).length} classes, ${vectors.length} vectors)`, (t) => {
    const bad: string[] = [];
    celery().vectors.forEach((a, i) => {
      const v = vectors[i]!;
      const want = CLASSES[v.cls].verifies;
      if (a.verify.ok !== want) bad.push(`${describe(v)}: class says ${want}, Celery verify ${a.verify.ok} ${a.verify.error ?? ''}`);
      if (a.deserialize.ok !== want) {
        bad.push(`${describe(v)}: class says ${want}, Celery deserialize ${a.deserialize.ok} ${a.deserialize.error ?? ''}`);
      }
      // Every refusal is the signature check failing, not some other error on the way.
      for (const [what, r] of [['verify', a.verify], ['deserialize', a.deserialize]] as const) {
        if (!r.ok && r.root !== 'InvalidSignature') bad.push(`${describe(v)}: Celery ${what} refused with ${r.error} (root ${r.root})`);
      }
    });
    t.deepEqual(bad, []);
    for (const cls of Object.keys(CLASSES) as ClassName[]) t.true(count((v) => v.cls === cls) > 0, `class ${cls} has vectors`);
  });

  test.serial(`[${label}] Certificate.verify gives Celery's answer on ${supported.length} vectors`, (t) => {
    t.true(certs.length === keys.length, 'certificates loaded first');
    const bad: string[] = [];
    const codes = new Map<string, number>();
    const spent = new Map<string, number>();
    supported.forEach((v) => {
      const a = celery().vectors[v.index]!;
      const cert = certs[v.key];
      if (!cert) return void bad.push(`${describe(v)}: no certificate`);
      const t0 = process.hrtime.bigint();
      const got = outcome(() => cert.verify(v.msg, v.sig, v.digest as Digest));
      const bits = `${cert.bits} bits`;
      spent.set(bits, (spent.get(bits) ?? 0) + Number(process.hrtime.bigint() - t0) / 1e6);
      codes.set(got, (codes.get(got) ?? 0) + 1);
      const want = a.verify.ok ? 'verifies' : 'refused ERR_BAD_SIGNATURE';
      if (got !== want) bad.push(`${describe(v)}: expected ${want} (Celery), got ${got} [Certificate.verify, ${label}]`);
    });
    t.deepEqual(bad, []);
    t.log(`Certificate.verify: ${[...codes].map(([k, n]) => `${n} ${k}`).join(', ')}`);
    // Not an assertion (a shared machine), a hint of the path taken: the IFMA kernels are the faster.
    t.log(`time in Certificate.verify: ${[...spent].map(([k, ms]) => `${k} ${ms.toFixed(1)} ms`).join(', ')}`);
  });

  test.serial(`[${label}] payloads equal Celery's own _pack; deserialize, deserializeAsync and deserializeMany (file order and interleaved) give Celery's answer`, async (t) => {
    t.true(certs.length === keys.length, 'certificates loaded first');
    const store = new CertStore(certs.filter((c): c is Certificate => c !== null));
    const bad: string[] = [];
    const byDigest = new Map<string, number[]>();
    vectors.forEach((v, i) => {
      if (!v.supported || !certs[v.key]) return;
      const list = byDigest.get(v.digest) ?? [];
      list.push(i);
      byDigest.set(v.digest, list);
    });
    const payloads: string[] = vectors.map((v, i) => {
      const cert = certs[v.key];
      if (!cert) return '';
      const p = pack55(cert.id, v.sig, 'application/data', 'binary', v.msg);
      const theirs = celery().vectors[i]!.payload;
      if (theirs !== null && p !== theirs) bad.push(`${describe(v)}: payload differs from Celery's _pack`);
      return p;
    });
    let batched = 0;
    for (const [digest, items] of byDigest) {
      const s = new SecureSerializer({ store, digest: digest as Digest });
      const want = (i: number): string => (celery().vectors[i]!.deserialize.ok ? 'verifies' : 'refused ERR_BAD_SIGNATURE');
      for (const i of items) {
        const got = outcome(() => {
          const value = s.deserialize(payloads[i]!);
          const b = bytesOf(value);
          if (!b || !b.equals(vectors[i]!.msg)) throw new Error(`wrong body ${String(value).slice(0, 40)}`);
        });
        if (got !== want(i)) bad.push(`${describe(vectors[i]!)}: expected ${want(i)} (Celery), got ${got} [deserialize, ${label}]`);
      }
      const asyncGot = await Promise.all(
        items.map((i) =>
          s.deserializeAsync(payloads[i]!).then(
            (value) => {
              const b = bytesOf(value);
              return b && b.equals(vectors[i]!.msg) ? 'verifies' : `verifies, wrong body ${String(value).slice(0, 40)}`;
            },
            (err: unknown) => (err instanceof SecurityError ? `refused ${err.code}` : `threw ${String(err)}`),
          ),
        ),
      );
      items.forEach((i, k) => {
        if (asyncGot[k] !== want(i)) {
          bad.push(`${describe(vectors[i]!)}: expected ${want(i)} (Celery), got ${asyncGot[k]} [deserializeAsync, ${label}]`);
        }
      });
      for (const [order, name] of [
        [items, 'file order'],
        [interleaved(items, vectors), 'interleaved'],
      ] as const) {
        const results = await s.deserializeMany(order.map((i) => payloads[i]!));
        t.is(results.length, order.length);
        order.forEach((i, k) => {
          const got = resultText(results[k]!, vectors[i]!.msg);
          if (got !== want(i)) {
            bad.push(`${describe(vectors[i]!)}: expected ${want(i)} (Celery), got ${got} [deserializeMany ${digest} ${name}, ${label}]`);
          }
          if (results[k]!.ok && (results[k] as { signer: string }).signer !== certs[vectors[i]!.key]!.id) {
            bad.push(`${describe(vectors[i]!)}: wrong signer [deserializeMany, ${label}]`);
          }
        });
        batched += order.length;
      }
    }
    t.deepEqual(bad, []);
    t.is(batched, 2 * supported.length);
  });

  test(`[${label}] the ${unsupported.length} vectors of digests celery-sign does not take (sha512_256; Celery accepts the name) are a configuration error, never an answer`, (t) => {
    const bad: string[] = [];
    for (const v of unsupported) {
      const cert = certs[v.key];
      if (cert) {
        const got = outcome(() => cert.verify(v.msg, v.sig, v.digest as Digest));
        if (got !== 'ImproperlyConfigured') bad.push(`${describe(v)}: Certificate.verify ${got}`);
      }
    }
    for (const d of new Set(unsupported.map((v) => v.digest))) {
      t.throws(() => new SecureSerializer({ store: new CertStore(), digest: d as Digest }), { instanceOf: ImproperlyConfigured });
    }
    t.deepEqual(bad, []);
    const celeryVerifies = unsupported.filter((v) => celery().vectors[v.index]!.verify.ok).length;
    t.log(`Celery verifies ${celeryVerifies} of these ${unsupported.length} (it takes any name of cryptography.hazmat.primitives.hashes)`);
    t.true(unsupported.length > 0);
  });
}
