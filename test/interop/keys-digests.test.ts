/**
 * Signing parity with the real Python Celery, both directions and both wire
 * formats, for every RSA key format of the fixtures (PKCS#1, PKCS#8,
 * encrypted PKCS#8, legacy AES/DES3, non-ASCII passwords), every digest and
 * key sizes 2048/3072/4096.
 *
 *   Python signs -> Node verifies: Celery's SecureSerializer.serialize in the
 *   venv, then one Node SecureSerializer (default wire format) reads the
 *   payloads of BOTH venvs.
 *   Node signs -> Python verifies: a Node SecureSerializer with the venv's
 *   wire format, then Celery's SecureSerializer.deserialize in the venv.
 */
import test from 'ava';
import { constants, createPrivateKey, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { Certificate, FSCertStore, PrivateKey, SecureSerializer, type Digest } from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import {
  canonical,
  canonicalOf,
  certOfKey,
  dv,
  OracleSession,
  plainKey,
  pemText,
  pythonValidStore,
  rsaKeyItems,
  validStorePath,
  WIRES,
  type OracleItem,
} from '../helpers/interop-oracle.js';

const DIGESTS: readonly Digest[] = ['sha1', 'sha224', 'sha256', 'sha384', 'sha512'];
const SIZES = [2048, 3072, 4096] as const;

const valueFor = (tag: string): Record<string, unknown> => ({
  task: 'proj.tasks.add',
  id: tag,
  args: [2, 3.5, 'ünï 🎉'],
  kwargs: { nested: { tag, ok: true, none: null } },
});

type Made = { ok: true; payload: string } | { ok: false; error: unknown };
function attempt(fn: () => string): Made {
  try {
    return { ok: true, payload: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}
function payloadOf(m: Made): string {
  if (!m.ok) throw m.error;
  return m.payload;
}
const sendable = (m: Made): string => (m.ok ? m.payload : 'bm90IGEgcGF5bG9hZA==');

// One Node reader for every payload of both venvs: deserialize reads both formats.
const nodeStore = new FSCertStore(validStorePath());
const readers = new Map<Digest, SecureSerializer>(DIGESTS.map((d) => [d, new SecureSerializer({ store: nodeStore, digest: d })]));
const reader = (d: Digest = 'sha256'): SecureSerializer => readers.get(d)!;

const keyItems = rsaKeyItems();

for (const wire of WIRES) {
  const session = new OracleSession(wire);
  const pyStore = pythonValidStore(wire);

  // --- every key format ----------------------------------------------------
  const pySignedByFormat = keyItems.map((k) =>
    session.addItems({
      op: 'serialize',
      key: pemText(k),
      key_password: k.password,
      cert: pemText(certOfKey(k.key_id)),
      items: [dv(valueFor(k.name))],
    }),
  );

  const nodeSignedByFormat = keyItems.map((k) =>
    attempt(() => {
      const key = new PrivateKey(pemText(k), k.password);
      const cert = new Certificate(pemText(certOfKey(k.key_id)));
      return new SecureSerializer({ key, cert, wireFormat: wire.wireFormat }).serialize(valueFor(k.name));
    }),
  );
  const pyReadByFormat = session.addItems({ op: 'deserialize', ...pyStore, items: nodeSignedByFormat.map(sendable) });

  test(`${wire.label}: Python-signed payloads verify in Node, every RSA key format`, async (t) => {
    t.true(keyItems.length >= 20, 'the fixtures hold every key format');
    for (const [i, k] of keyItems.entries()) {
      const [item] = await pySignedByFormat[i]!();
      t.true(item!.ok, `${k.name}: Celery could not sign: ${item!.error}`);
      const value = reader().deserialize(item!.payload as string);
      t.is(canonical(value), canonical(valueFor(k.name)), k.name);
    }
  });

  test(`${wire.label}: Node-signed payloads verify in Python, every RSA key format`, async (t) => {
    const results = await pyReadByFormat();
    for (const [i, k] of keyItems.entries()) {
      const made = nodeSignedByFormat[i]!;
      t.notThrows(() => payloadOf(made), k.name);
      const item = results[i]!;
      t.true(item.ok, `${k.name}: Celery refused Node's payload: ${item.error}`);
      if (!item.ok) continue;
      t.is(canonicalOf(item), canonical(valueFor(k.name)), k.name);
      t.is(item.signer, new Certificate(pemText(certOfKey(k.key_id))).id, k.name);
    }
  });

  // --- every digest x key size ---------------------------------------------
  const combos = SIZES.flatMap((bits) => DIGESTS.map((digest) => ({ bits, digest, tag: `rsa${bits}/${digest}` })));

  const pySignedByCombo = combos.map(({ bits, digest, tag }) =>
    session.addItems({
      op: 'serialize',
      key: pemText(plainKey(`rsa${bits}`)),
      cert: pemText(certOfKey(`rsa${bits}`)),
      digest,
      items: [dv(valueFor(tag)), dv('plain string ' + tag)],
    }),
  );

  const nodeSignedByCombo = combos.map(({ bits, digest, tag }) =>
    attempt(() => {
      const key = new PrivateKey(pemText(plainKey(`rsa${bits}`)));
      const cert = new Certificate(pemText(certOfKey(`rsa${bits}`)));
      return new SecureSerializer({ key, cert, digest, wireFormat: wire.wireFormat }).serialize(valueFor(tag));
    }),
  );
  // A digest is a property of the reader: one deserialize request per digest.
  const pyReadByDigest = new Map(
    DIGESTS.map((digest) => {
      const idx = combos.map((c, i) => (c.digest === digest ? i : -1)).filter((i) => i >= 0);
      return [digest, { idx, get: session.addItems({ op: 'deserialize', ...pyStore, digest, items: idx.map((i) => sendable(nodeSignedByCombo[i]!)) }) }];
    }),
  );

  // Raw signatures: PrivateKey.sign / Certificate.verify against Celery's own
  // (every digest on 2048 bits, one on the larger keys: loading a 4096-bit key
  // costs Celery ~0.2 s per request).
  const DATA = 'raw data ü \u0000\u0001 end';
  const rawCombos = combos.filter((c) => c.bits === 2048 || c.digest === 'sha384');
  const pyRawSigs = rawCombos.map(({ bits, digest }) =>
    session.addItems({ op: 'sign', key: pemText(plainKey(`rsa${bits}`)), digest, items: [DATA] }),
  );
  const nodeRawSigs = rawCombos.map(({ bits, digest }) => new PrivateKey(pemText(plainKey(`rsa${bits}`))).sign(DATA, digest));
  const pyVerifyRaw = rawCombos.map(({ bits, digest }, i) =>
    session.addItems({
      op: 'verify_raw',
      cert: pemText(certOfKey(`rsa${bits}`)),
      digest,
      items: [{ data: DATA, signature_b64: nodeRawSigs[i]!.toString('base64') }],
    }),
  );

  test(`${wire.label}: Python-signed payloads verify in Node, every digest x 2048/3072/4096`, async (t) => {
    for (const [i, { digest, tag }] of combos.entries()) {
      const items: OracleItem[] = await pySignedByCombo[i]!();
      t.true(items.every((it) => it.ok), `${tag}: ${JSON.stringify(items.map((it) => it.error))}`);
      t.is(canonical(reader(digest).deserialize(items[0]!.payload as string)), canonical(valueFor(tag)), tag);
      t.is(reader(digest).deserialize(items[1]!.payload as string), 'plain string ' + tag, tag);
      // A reader configured with another digest refuses it (the digest is not on the wire).
      const other = digest === 'sha256' ? 'sha512' : 'sha256';
      t.throws(() => reader(other).deserialize(items[0]!.payload as string), { code: 'ERR_BAD_SIGNATURE' }, tag);
    }
  });

  test(`${wire.label}: Node-signed payloads verify in Python, every digest x 2048/3072/4096`, async (t) => {
    for (const digest of DIGESTS) {
      const { idx, get } = pyReadByDigest.get(digest)!;
      const results = await get();
      for (const [j, i] of idx.entries()) {
        const { bits, tag } = combos[i]!;
        t.notThrows(() => payloadOf(nodeSignedByCombo[i]!), tag);
        const item = results[j]!;
        t.true(item.ok, `${tag}: Celery refused Node's payload: ${item.error}`);
        if (!item.ok) continue;
        t.is(canonicalOf(item), canonical(valueFor(tag)), tag);
        t.is(item.signer, new Certificate(pemText(certOfKey(`rsa${bits}`))).id, tag);
      }
    }
  });

  test(`${wire.label}: raw RSA-PSS signatures cross both ways (PrivateKey.sign / Certificate.verify)`, async (t) => {
    for (const [i, { bits, digest, tag }] of rawCombos.entries()) {
      const cert = new Certificate(pemText(certOfKey(`rsa${bits}`)));
      const [py] = await pyRawSigs[i]!();
      t.true(py!.ok, tag);
      const sig = Buffer.from(py!.signature_b64 as string, 'base64');
      t.is(sig.length, bits / 8, tag);
      t.notThrows(() => cert.verify(DATA, sig, digest), tag);
      const [verdict] = await pyVerifyRaw[i]!();
      t.true(verdict!.ok, `${tag}: Celery refused Node's signature: ${verdict!.error}`);
      t.is(nodeRawSigs[i]!.length, bits / 8, tag);
    }
  });

  // --- the RSA-PSS-OID key (id-RSASSA-PSS instead of rsaEncryption) ------
  // Celery 5.4 and 5.7 both load it; no fixture certificate carries it, so its
  // signatures are checked with node:crypto and its public half.
  const pssKey = fx.key('rsa-pss2048.pkcs8');
  const PSS_DIGESTS: Digest[] = ['sha256', 'sha512'];
  const pyPssSigs = PSS_DIGESTS.map((digest) => session.addItems({ op: 'sign', key: pemText(pssKey), digest, items: [DATA] }));

  test(`${wire.label}: the RSA-PSS-OID key signs the same way in Celery and in Node (maximum salt)`, async (t) => {
    const node = new PrivateKey(pemText(pssKey));
    t.is(node.bits, 2048);
    const pub = createPublicKey(createPrivateKey(pemText(pssKey)));
    const check = (sig: Uint8Array, digest: Digest): boolean =>
      nodeVerify(digest, Buffer.from(DATA), { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 256 - (digest === 'sha256' ? 32 : 64) - 2 }, sig);
    for (const [i, digest] of PSS_DIGESTS.entries()) {
      const [item] = await pyPssSigs[i]!();
      t.true(item!.ok, `Celery could not sign with it: ${item!.error}`);
      t.true(check(Buffer.from(item!.signature_b64 as string, 'base64'), digest), `Celery ${digest}`);
      t.true(check(node.sign(DATA, digest), digest), `Node ${digest}`);
    }
  });
}
