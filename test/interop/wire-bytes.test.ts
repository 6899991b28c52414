/**
 * Byte-level parity with the real Python Celery:
 * - Node's payload unpacks (Celery's own SecureSerializer._unpack) to exactly
 *   the fields Celery writes: signer id, content type, encoding, body; and
 *   re-packing those fields with Celery's layout gives Node's payload back,
 *   byte for byte, in both wire formats;
 * - the inner JSON body is byte-identical to kombu's dumps of the same value;
 * - signatures use the maximum PSS salt length (emLen - hLen - 2), checked
 *   by node:crypto with that exact salt length, and Celery verifies them
 *   (cryptography PSS.MAX_LENGTH); both sides accept any salt length;
 * - Celery 5.4 payloads whose signature contains the separator bytes.
 */
import test from 'ava';
import { constants, createPrivateKey, X509Certificate, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { Certificate, FSCertStore, json, PrivateKey, SecureSerializer, type Digest } from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import {
  canonical,
  canonicalOf,
  certOfKey,
  dv,
  dvBytes,
  OracleSession,
  pemText,
  plainKey,
  pythonValidStore,
  validStorePath,
  WIRES,
  type Wire,
} from '../helpers/interop-oracle.js';
import { pack54, pack55, pssSign, unpack55 } from '../helpers/payloads.js';

const SEP = Buffer.from([0, 1]);
type SecurityErrorLike = Error & { code?: string };
const DIGESTS: readonly Digest[] = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'];
const H_LEN: Record<Digest, number> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 };

/** The maximum PSS salt length: emLen - hLen - 2, emLen = ceil((modBits - 1) / 8). */
const maxSalt = (bits: number, digest: Digest): number => Math.ceil((bits - 1) / 8) - H_LEN[digest] - 2;

function pssVerify(pub: KeyObject, data: Uint8Array, sig: Uint8Array, digest: Digest, saltLength: number): boolean {
  return nodeVerify(digest, data, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, sig);
}

/** Celery 5.4's _unpack: raw signer up to the first separator, then key_size >> 3 signature bytes. */
function unpack54(payload: string, keyBits: number): Buffer[] {
  const raw = Buffer.from(payload, 'base64');
  const first = raw.indexOf(SEP);
  const sigStart = first + 2;
  const sigEnd = sigStart + (keyBits >> 3);
  const rest = raw.subarray(sigEnd + 2);
  const a = rest.indexOf(SEP);
  const b = rest.indexOf(SEP, a + 2);
  return [raw.subarray(0, first), raw.subarray(sigStart, sigEnd), rest.subarray(0, a), rest.subarray(a + 2, b), rest.subarray(b + 2)];
}

/** Values whose kombu JSON the payload body must equal. */
const VALUES: unknown[] = [
  null,
  0,
  -1.5,
  'text ünï 🎉 \u0000\u0001',
  [1, 'two', [3.25, null, true]],
  { task: 'proj.add', id: new json.PyUUID('2f8e2a5e-1c1b-4c3a-9f0e-3b7d4a1e6c55'), args: [1, 2], kwargs: {} },
  { eta: new json.PyDateTime('2024-05-06T07:08:09.123456+00:00'), d: new json.PyDate('2024-02-29'), t: new json.PyTime('23:59:59.000001') },
  { money: new json.PyDecimal('12345.6789'), blob: Buffer.from('bytes ü'), big: 2n ** 70n },
];

// Signing certificates: a plain one, a unicode issuer, a negative serial.
const SIGNERS: fx.CertItem[] = [certOfKey('rsa2048'), fx.cert('name-utf8'), fx.cert('serial-negative')];
const nodeStore = new FSCertStore(validStorePath());

interface Made {
  signer: fx.CertItem;
  value: unknown;
  payload: string;
}

for (const wire of WIRES) {
  const session = new OracleSession(wire);

  // --- Node payloads, unpacked by Celery ------------------------------------
  const made: Made[] = [];
  for (const signer of SIGNERS) {
    const s = new SecureSerializer({
      key: new PrivateKey(pemText(plainKey(signer.key_id!))),
      cert: new Certificate(pemText(signer)),
      wireFormat: wire.wireFormat,
    });
    for (const value of VALUES) made.push({ signer, value, payload: s.serialize(value) });
  }
  const rawWriter = new SecureSerializer({
    key: new PrivateKey(pemText(plainKey('rsa2048'))),
    cert: new Certificate(pemText(certOfKey('rsa2048'))),
    wireFormat: wire.wireFormat,
    serializer: 'raw',
  });
  const rawValues: (string | Uint8Array)[] = ['raw text ü', Buffer.from('raw bytes ü'), ''];
  const rawMade = rawValues.map((value) => ({ value, payload: rawWriter.serialize(value) }));

  const unpacked = session.addItems({ op: 'unpack', ...pythonValidStore(wire), items: made.map((m) => m.payload) });
  const rawUnpacked = session.addItems({ op: 'unpack', ...pythonValidStore(wire), items: rawMade.map((m) => m.payload) });
  const kombuJson = session.addItems({ op: 'kombu_dumps', items: VALUES.map(dv) });
  const kombuRaw = session.addItems({ op: 'kombu_dumps', serializer: 'raw', items: rawValues.map(dv) });

  test(`${wire.label}: Node's payload unpacks in Celery to exactly the fields Celery writes, and re-packs to the same bytes`, async (t) => {
    const fields = await unpacked();
    const kombu = await kombuJson();
    for (const [i, m] of made.entries()) {
      const f = fields[i]!;
      const k = kombu[i % VALUES.length]!;
      const what = `${m.signer.name} / ${canonical(m.value).slice(0, 40)}`;
      t.true(f.ok, `${what}: ${f.error}`);
      t.true(k.ok, `${what}: kombu could not dump: ${k.error}`);
      if (!f.ok || !k.ok) continue;
      t.is(f.signer, m.signer.expected_id, what);
      t.is(f.content_type, k.content_type, what);
      t.is(f.content_encoding, k.content_encoding, what);
      t.is(f.content_type, 'application/json', what);
      t.is(f.content_encoding, 'utf-8', what);
      // The body is kombu's JSON, byte for byte.
      t.is<unknown, unknown>(Buffer.from(f.body_b64 as string, 'base64').toString('utf8'), k.body, what);
      // Celery's layout, rebuilt from Celery's view of the fields, is Node's payload.
      const sig = Buffer.from(f.signature_b64 as string, 'base64');
      const body = Buffer.from(f.body_b64 as string, 'base64');
      const pack = wire.wireFormat === 'celery-5.5' ? pack55 : pack54;
      t.is(pack(m.signer.expected_id!, sig, f.content_type as string, f.content_encoding as string, body), m.payload, what);
      // And Node's own reading of the layout agrees with Celery's.
      const own = wire.wireFormat === 'celery-5.5' ? unpack55(m.payload).map((b, j) => (j < 2 ? Buffer.from(b.toString(), 'base64') : b)) : unpack54(m.payload, 2048);
      t.deepEqual(own.map((b) => b.toString('base64')), [f.signer_b64, f.signature_b64, Buffer.from(f.content_type as string).toString('base64'), Buffer.from(f.content_encoding as string).toString('base64'), f.body_b64], what);
    }
  });

  test(`${wire.label}: raw bodies carry kombu's raw content type, encoding and bytes`, async (t) => {
    const fields = await rawUnpacked();
    const kombu = await kombuRaw();
    for (const [i, m] of rawMade.entries()) {
      const f = fields[i]!;
      const k = kombu[i]!;
      t.true(f.ok && k.ok, `${String(m.value)}: ${f.error ?? k.error}`);
      t.is(f.content_type, 'application/data');
      t.is(f.content_type, k.content_type);
      // Node labels bytes 'binary' and text 'utf-8' in both formats, as kombu's raw
      // serializer does. (Celery 5.4 itself would send bytes as 'utf-8' text, having
      // passed them through bytes_to_str; its reader ignores the label for raw bodies.)
      t.is(f.content_encoding, k.content_encoding);
      t.is(f.content_encoding, typeof m.value === 'string' ? 'utf-8' : 'binary');
      const kombuBody = k.body_b64 !== null ? (k.body_b64 as string) : Buffer.from(k.body as string, 'utf8').toString('base64');
      t.is(f.body_b64, kombuBody);
    }
  });

  // --- salt length ----------------------------------------------------------
  const saltKeys = [1024, 2048, 3072, 4096];
  const DATA = Buffer.from('signed body \u0000\u0001 ü', 'utf8');
  const nodeSigs = saltKeys.flatMap((bits) =>
    DIGESTS.map((digest) => ({ bits, digest, sig: new PrivateKey(pemText(plainKey(`rsa${bits}`))).sign(DATA, digest) })),
  );
  const celeryVerifies = nodeSigs.map(({ bits, digest, sig }) =>
    session.addItems({ op: 'verify_raw', cert: pemText(certOfKey(`rsa${bits}`)), digest, items: [{ data: dvBytes(DATA), signature_b64: sig.toString('base64') }] }),
  );
  const celerySigns = DIGESTS.map((digest) => session.addItems({ op: 'sign', key: pemText(plainKey('rsa2048')), digest, items: [dvBytes(DATA)] }));

  test(`${wire.label}: Node signs with the maximum salt length (emLen - hLen - 2) and Celery verifies it`, async (t) => {
    for (const [i, { bits, digest, sig }] of nodeSigs.entries()) {
      const pub = new X509Certificate(pemText(certOfKey(`rsa${bits}`))).publicKey;
      const salt = maxSalt(bits, digest);
      t.true(pssVerify(pub, DATA, sig, digest, salt), `rsa${bits}/${digest}: salt ${salt}`);
      t.false(pssVerify(pub, DATA, sig, digest, H_LEN[digest]), `rsa${bits}/${digest}: not hLen`);
      const [verdict] = await celeryVerifies[i]!();
      t.true(verdict!.ok, `rsa${bits}/${digest}: ${verdict!.error}`);
    }
    t.is(maxSalt(2048, 'sha256'), 222);
  });

  test(`${wire.label}: Celery signs with the maximum salt length too, and Node verifies it`, async (t) => {
    const pub = new X509Certificate(pemText(certOfKey('rsa2048'))).publicKey;
    const cert = new Certificate(pemText(certOfKey('rsa2048')));
    for (const [i, digest] of DIGESTS.entries()) {
      const [item] = await celerySigns[i]!();
      const sig = Buffer.from(item!.signature_b64 as string, 'base64');
      t.true(pssVerify(pub, DATA, sig, digest, maxSalt(2048, digest)), digest);
      t.notThrows(() => cert.verify(DATA, sig, digest), digest);
    }
  });

  // Any salt length verifies on both sides (Celery: PSS.MAX_LENGTH = recover).
  const saltKey = createPrivateKey(pemText(plainKey('rsa2048')));
  const saltCert = fx.cert('rsa2048');
  const salts = [0, 1, 20, 32, 100, 222];
  const body = Buffer.from(json.dumps({ salt: 'any' }));
  const pack = wire.wireFormat === 'celery-5.5' ? pack55 : pack54;
  const anySalt = salts.map((n) => pack(saltCert.expected_id!, pssSign(saltKey, body, n), 'application/json', 'utf-8', body));
  const celeryAnySalt = session.addItems({ op: 'deserialize', ...pythonValidStore(wire), items: anySalt });

  test(`${wire.label}: any salt length verifies, in Node and in Celery`, async (t) => {
    const reader = new SecureSerializer({ store: nodeStore });
    const results = await celeryAnySalt();
    for (const [i, n] of salts.entries()) {
      t.deepEqual(reader.deserialize(anySalt[i]!), { salt: 'any' }, `salt ${n}`);
      t.true(results[i]!.ok, `salt ${n}: ${results[i]!.error}`);
    }
  });

  // --- outer base64 with whitespace -----------------------------------------
  // Celery decodes the payload with base64.b64decode(), which is not
  // validating: it drops characters outside the alphabet, so line-wrapped
  // base64 (encodebytes/MIME style, a trailing newline) verifies in Celery.
  const wrapped = new SecureSerializer({
    key: new PrivateKey(pemText(plainKey('rsa2048'))),
    cert: new Certificate(pemText(certOfKey('rsa2048'))),
    wireFormat: wire.wireFormat,
  }).serialize({ wrapped: true });
  const whitespaceVariants: [string, string][] = [
    ['wrapped at 76 columns with \\n', wrapped.replace(/(.{76})/g, '$1\n')],
    ['wrapped at 76 columns with \\r\\n', wrapped.replace(/(.{76})/g, '$1\r\n')],
    ['a trailing newline', wrapped + '\n'],
  ];
  const celeryWhitespace = session.addItems({ op: 'deserialize', ...pythonValidStore(wire), items: whitespaceVariants.map(([, p]) => p) });

  test(`${wire.label}: a payload whose base64 is line-wrapped verifies in Celery and in Node`, async (t) => {
    const results = await celeryWhitespace();
    const reader = new SecureSerializer({ store: nodeStore });
    for (const [i, [name, payload]] of whitespaceVariants.entries()) {
      t.true(results[i]!.ok, `${name}: Celery: ${results[i]!.error}`);
      let got: unknown;
      try {
        got = reader.deserialize(payload);
      } catch (err) {
        got = err;
      }
      t.deepEqual(got, { wrapped: true }, `${name}: Node: ${got instanceof Error ? `${(got as SecurityErrorLike).code} ${got.message}` : ''}`);
    }
  });

  // --- 5.4 signatures containing the separator ---------------------------
  if (wire.wireFormat === 'celery-5.4') addSeparatorInSignatureTests(wire, session);
}

function addSeparatorInSignatureTests(wire: Wire, session: OracleSession): void {
  const key = new PrivateKey(pemText(plainKey('rsa2048')));
  const cert = new Certificate(pemText(certOfKey('rsa2048')));
  const writer = new SecureSerializer({ key, cert, wireFormat: 'celery-5.4' });
  // A 256-byte signature contains \x00\x01 with probability ~0.4%: sign until a few do.
  const withSep: string[] = [];
  for (let i = 0; i < 20000 && withSep.length < 4; i++) {
    const p = writer.serialize({ n: i });
    if (unpack54(p, 2048)[1]!.includes(SEP)) withSep.push(p);
  }
  const celeryReads = session.addItems({ op: 'deserialize', ...pythonValidStore(wire), items: withSep });
  const COUNT = 3500;
  const celeryWrites = session.addItems({
    op: 'serialize',
    key: pemText(plainKey('rsa2048')),
    cert: pemText(certOfKey('rsa2048')),
    items: Array.from({ length: COUNT }, (_, n) => ({ n })),
  });

  test(`${wire.label}: signatures containing the separator bytes cross both ways`, async (t) => {
    t.true(withSep.length >= 1, 'Node made 5.4 payloads whose signature holds \\x00\\x01');
    const read = await celeryReads();
    for (const [i, r] of read.entries()) {
      t.true(r.ok, `Node payload ${i}: ${r.error}`);
      t.is(canonicalOf(r), canonical(new SecureSerializer({ store: nodeStore }).deserialize(withSep[i]!)));
    }
    const written = await celeryWrites();
    const payloads = written.map((w) => w.payload as string);
    const sepIdx = payloads.flatMap((p, i) => (unpack54(p, 2048)[1]!.includes(SEP) ? [i] : []));
    t.log(`Celery 5.4 made ${sepIdx.length} of ${COUNT} signatures holding the separator`);
    t.true(sepIdx.length >= 1, 'Celery made 5.4 payloads whose signature holds \\x00\\x01');
    const results = await new SecureSerializer({ store: nodeStore }).deserializeMany(payloads);
    for (const [i, r] of results.entries()) {
      if (!r.ok) t.fail(`Celery payload ${i}${sepIdx.includes(i) ? ' (separator in signature)' : ''}: ${r.error.code} ${r.error.message}`);
      else if (canonical(r.value) !== canonical({ n: i })) t.fail(`payload ${i}: ${canonical(r.value)}`);
    }
    t.pass();
  });
}
