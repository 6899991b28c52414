/**
 * Refusals on BOTH sides, against the real Python Celery, both wire formats.
 *
 * Round 1: payloads made (and tampered with) in Node go to Celery; Node
 * refuses each with its code and Celery refuses the same bytes.
 * Round 2: payloads made by Celery are tampered with in Node; Node refuses
 * them and a second Celery process refuses the same bytes.
 *
 * Where Celery legitimately accepts what Node refuses, the test says so and
 * asserts both behaviours:
 * - a body whose (signed) inner content type was swapped to pickle: Celery
 *   decodes it (loads(..., force=True)); Node never decodes pickle or YAML;
 * - an expired certificate in a store built without the expiry check:
 *   Celery 5.4's Certificate.verify does not check expiry, 5.5+ and Node do;
 * - a payload above Node's maxPayloadSize: Celery has no limit;
 * - a Celery 5.4 payload with a trailing extra field: Celery 5.4 splits
 *   without maxsplit and ignores it, Node refuses the malformed payload.
 * Celery reports a bad signature as "SecurityError: Unable to deserialize:
 * TypeError('catching classes that do not inherit from BaseException is not
 * allowed')" (its reraise_errors bug); only the SecurityError is asserted.
 */
import test from 'ava';
import { createPrivateKey } from 'node:crypto';
import { Certificate, CertStore, FSCertStore, json, PrivateKey, SecureSerializer, SecurityError } from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import {
  certOfKey,
  dv,
  OracleSession,
  pemText,
  plainKey,
  pythonStoreOf,
  pythonValidStore,
  runOracle,
  itemsOf,
  validStorePath,
  WIRES,
  type OracleItem,
  type Wire,
} from '../helpers/interop-oracle.js';
import { flipBit, pack, tamper, unpack } from '../helpers/interop-tamper.js';
import { pkcs1Sign, pssSign } from '../helpers/payloads.js';

const KEY = plainKey('rsa2048');
const CERT = certOfKey('rsa2048');
const VALUE = { task: 'proj.tasks.transfer', args: [100, 'acct-1'], kwargs: { note: 'ünï' } };

const nodeStore = new FSCertStore(validStorePath());
const reader = new SecureSerializer({ store: nodeStore });

type Code = SecurityError['code'];

interface Case {
  name: string;
  payload: string;
  /** Node's code(s): the first is the expected one; more are tolerated where the layout is ambiguous. */
  codes: Code[];
  /** Celery's verdict, when it is not a SecurityError refusal. */
  celery?: (item: OracleItem) => boolean;
  celeryNote?: string;
  /** Celery store (default: the valid store). */
  store?: fx.CertItem[];
  /** Node reader, when not the default one. */
  nodeReader?: SecureSerializer;
}

function refusedByCelery(item: OracleItem): boolean {
  return item.ok === false && item.error_type === 'SecurityError' && /^SecurityError: Unable to deserialize/.test(item.error ?? '');
}

function nodeCases(wire: Wire): Case[] {
  const f = wire.wireFormat;
  const key = new PrivateKey(pemText(KEY));
  const cert = new Certificate(pemText(CERT));
  const writer = new SecureSerializer({ key, cert, wireFormat: f });
  const good = writer.serialize(VALUE);
  const fields = unpack(good, f);
  const keyObject = createPrivateKey(pemText(KEY));
  const body = fields.body;

  const cases: Case[] = [
    { name: 'flipped signature bit', payload: tamper(good, f, (x) => ({ signature: flipBit(x.signature, 17, 3) })), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'flipped last signature bit', payload: tamper(good, f, (x) => ({ signature: flipBit(x.signature, -1, 0) })), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'tampered body', payload: tamper(good, f, (x) => ({ body: Buffer.from(x.body.toString().replace('100', '900')) })), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'body truncated by one byte', payload: tamper(good, f, (x) => ({ body: x.body.subarray(0, -1) })), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'body extended by one byte', payload: tamper(good, f, (x) => ({ body: Buffer.concat([x.body, Buffer.from(' ')]) })), codes: ['ERR_BAD_SIGNATURE'] },
    {
      name: 'payload truncated in the signature',
      payload: Buffer.from(good, 'base64').subarray(0, 200).toString('base64'),
      codes: ['ERR_MALFORMED_PAYLOAD'],
    },
    { name: 'unknown signer', payload: tamper(good, f, () => ({ signer: Buffer.from('CN nobody 1') })), codes: ['ERR_UNKNOWN_CERTIFICATE'] },
    {
      name: 'signed by the rsa2048 key under the id of the rsa4096 certificate',
      payload: pack({ ...fields, signer: Buffer.from(new Certificate(pemText(certOfKey('rsa4096'))).id) }, f),
      // 5.4 takes key_size >> 3 = 512 signature bytes for a 4096-bit signer: the layout is off.
      codes: f === 'celery-5.5' ? ['ERR_BAD_SIGNATURE'] : ['ERR_MALFORMED_PAYLOAD', 'ERR_BAD_SIGNATURE'],
    },
    {
      name: "signed by the rsa3072 key under rsa2048's id (Celery's test_unmatched_key_cert)",
      payload: new SecureSerializer({ key: new PrivateKey(pemText(plainKey('rsa3072'))), cert, wireFormat: f }).serialize(VALUE),
      codes: f === 'celery-5.5' ? ['ERR_BAD_SIGNATURE'] : ['ERR_MALFORMED_PAYLOAD', 'ERR_BAD_SIGNATURE'],
    },
    {
      name: 'wrong digest (signed sha512, read sha256)',
      payload: new SecureSerializer({ key, cert, digest: 'sha512', wireFormat: f }).serialize(VALUE),
      codes: ['ERR_BAD_SIGNATURE'],
    },
    { name: 'PKCS#1 v1.5 signature', payload: pack({ ...fields, signature: pkcs1Sign(keyObject, body) }, f), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'signature of zeros', payload: pack({ ...fields, signature: Buffer.alloc(256) }, f), codes: ['ERR_BAD_SIGNATURE'] },
    { name: 'not base64', payload: '!!! not base64 !!!', codes: ['ERR_MALFORMED_PAYLOAD'] },
    { name: 'empty payload', payload: '', codes: ['ERR_MALFORMED_PAYLOAD'] },
    { name: 'only a signer', payload: Buffer.from(f === 'celery-5.5' ? Buffer.from(cert.id).toString('base64') : cert.id).toString('base64'), codes: ['ERR_MALFORMED_PAYLOAD'] },
    {
      name: 'too few fields (no encoding, no body)',
      payload: Buffer.from(Buffer.from(good, 'base64').toString('latin1').split('\x00\x01').slice(0, 3).join('\x00\x01'), 'latin1').toString('base64'),
      codes: ['ERR_MALFORMED_PAYLOAD'],
    },
    {
      name: 'body signed, inner content type swapped to text/plain',
      payload: pack({ ...fields, contentType: 'text/plain' }, f),
      codes: ['ERR_CONTENT_DISALLOWED'],
      celery: (item) => item.ok === true,
      celeryNote: 'Celery decodes any inner content type (force=True); Node decodes allow-listed types only',
    },
  ];

  // A valid signature over a pickle body, labelled pickle: Celery unpickles it.
  const pickled = Buffer.from("S'pickled by an attacker'\n.", 'latin1');
  cases.push({
    name: 'inner content type swapped to pickle (validly signed)',
    payload: pack({ ...fields, contentType: 'application/x-python-serialize', contentEncoding: 'binary', body: pickled, signature: key.sign(pickled) }, f),
    codes: ['ERR_CONTENT_DISALLOWED'],
    celery: (item) => item.ok === true && item.value === 'pickled by an attacker' && item.content_type === 'application/x-python-serialize',
    celeryNote: 'Celery unpickles a validly signed body whose unsigned content type says pickle',
  });
  const yamlBody = Buffer.from('!!python/object/apply:os.system ["true"]\n');
  cases.push({
    name: 'inner content type swapped to yaml (validly signed)',
    payload: pack({ ...fields, contentType: 'application/x-yaml', body: yamlBody, signature: key.sign(yamlBody) }, f),
    codes: ['ERR_CONTENT_DISALLOWED'],
    // Without PyYAML installed, kombu has no YAML decoder: SerializerNotInstalled, outside SecurityError.
    celery: (item) => item.ok === false,
    celeryNote: 'kombu refuses only because PyYAML is not installed in the venv',
  });

  // An expired certificate, in stores that skip the load-time expiry check.
  const expired = fx.cert('expired');
  cases.push({
    name: 'signer certificate expired',
    // Signed by hand: celery-sign's producer refuses to sign with an expired certificate.
    payload: pack({ ...fields, signer: Buffer.from(new Certificate(pemText(expired)).id) }, f),
    codes: ['ERR_CERTIFICATE_EXPIRED'],
    store: [expired],
    nodeReader: new SecureSerializer({ store: new CertStore([new Certificate(pemText(expired))]) }),
    ...(f === 'celery-5.4'
      ? { celery: (item: OracleItem) => item.ok === true, celeryNote: "Celery 5.4's Certificate.verify does not check expiry (5.5+ does)" }
      : {
          celery: (item: OracleItem) => item.ok === false && /Expired certificate/.test(item.error ?? ''),
          celeryNote: 'Celery 5.5+ refuses an expired signer at verification',
        }),
  });

  cases.push({
    name: 'payload larger than maxPayloadSize',
    payload: writer.serialize({ blob: 'x'.repeat(4096) }),
    codes: ['ERR_PAYLOAD_TOO_LARGE'],
    nodeReader: new SecureSerializer({ store: nodeStore, maxPayloadSize: 4096 }),
    celery: (item) => item.ok === true,
    celeryNote: 'Celery has no payload size limit',
  });

  if (f === 'celery-5.4') {
    const raw = Buffer.concat([Buffer.from(good, 'base64'), Buffer.from('\x00\x01trailing')]).toString('base64');
    cases.push({
      name: 'trailing extra field after the body',
      payload: raw,
      codes: ['ERR_MALFORMED_PAYLOAD'],
      celery: (item) => item.ok === true,
      celeryNote: 'Celery 5.4 splits without maxsplit and ignores the extra field',
    });
    const sepBody = Buffer.from('{"a": 1}\x00\x01');
    cases.push({
      name: 'body containing the separator in the 5.4 format',
      payload: pack({ ...fields, body: sepBody, signature: key.sign(sepBody) }, f),
      codes: ['ERR_MALFORMED_PAYLOAD'],
    });
  } else {
    // 5.5: the same bytes after the last separator ARE the body: a tampered body.
    cases.push({
      name: 'trailing bytes appended to the body',
      payload: Buffer.concat([Buffer.from(good, 'base64'), Buffer.from('\x00\x01trailing')]).toString('base64'),
      codes: ['ERR_BAD_SIGNATURE'],
    });
  }

  // Control: any salt length verifies on both sides (Celery verifies with PSS.MAX_LENGTH = recover).
  cases.push({
    name: 'control: the same body signed with salt length 0 is accepted',
    payload: pack({ ...fields, signature: pssSign(keyObject, body, 0) }, f),
    codes: [],
    celery: (item) => item.ok === true,
  });
  return cases;
}

function nodeVerdict(t: import('ava').ExecutionContext, c: Case, what: string): void {
  const r = c.nodeReader ?? reader;
  if (c.codes.length === 0) {
    t.notThrows(() => r.deserialize(c.payload), what);
    return;
  }
  const err = t.throws(() => r.deserialize(c.payload), { instanceOf: SecurityError }, what);
  if (err) t.true(c.codes.includes(err.code), `${what}: Node said ${err.code} (${err.message}), expected ${c.codes.join(' or ')}`);
}

for (const wire of WIRES) {
  // --- round 1: tampered in Node, refused by Node and by Celery --------------
  const session = new OracleSession(wire);
  const cases = nodeCases(wire);
  const celeryVerdicts = cases.map((c) =>
    session.addItems({ op: 'deserialize', ...(c.store ? pythonStoreOf(c.store) : pythonValidStore(wire)), items: [c.payload] }),
  );

  test(`${wire.label}: payloads made or tampered in Node are refused by Node with their code, and by Celery`, async (t) => {
    for (const [i, c] of cases.entries()) {
      nodeVerdict(t, c, c.name);
      const [item] = await celeryVerdicts[i]!();
      if (c.celery) t.true(c.celery(item!), `${c.name}: Celery ${c.celeryNote ?? ''}: ${JSON.stringify(item)}`);
      else t.true(refusedByCelery(item!), `${c.name}: Celery did not refuse: ${JSON.stringify(item)}`);
    }
  });

  test(`${wire.label}: batch verdicts equal the single ones, positionally`, async (t) => {
    const plain = cases.filter((c) => !c.nodeReader);
    const results = await reader.deserializeMany(plain.map((c) => c.payload));
    for (const [i, c] of plain.entries()) {
      const r = results[i]!;
      if (c.codes.length === 0) t.true(r.ok, c.name);
      else t.true(!r.ok && c.codes.includes(r.error.code), `${c.name}: ${r.ok ? 'accepted' : r.error.code}`);
    }
  });

  // --- round 2: made by Celery, tampered in Node, refused by both ----------
  const pyMade = session.addItems({ op: 'serialize', key: pemText(KEY), cert: pemText(CERT), items: [dv(VALUE)] });

  test(`${wire.label}: Celery's payloads tampered in Node are refused by Node and by a second Celery`, async (t) => {
    const [made] = await pyMade();
    t.true(made!.ok, made!.error);
    const good = made!.payload as string;
    const f = wire.wireFormat;
    const bad: { name: string; payload: string; code: Code }[] = [
      { name: 'flipped signature bit', payload: tamper(good, f, (x) => ({ signature: flipBit(x.signature, 100, 7) })), code: 'ERR_BAD_SIGNATURE' },
      { name: 'tampered body', payload: tamper(good, f, (x) => ({ body: Buffer.from(x.body.toString().replace('acct-1', 'acct-2')) })), code: 'ERR_BAD_SIGNATURE' },
      { name: 'unknown signer', payload: tamper(good, f, () => ({ signer: Buffer.from('O evil 666') })), code: 'ERR_UNKNOWN_CERTIFICATE' },
      { name: 'signer id of another certificate', payload: tamper(good, f, () => ({ signer: Buffer.from(new Certificate(pemText(certOfKey('rsa4096'))).id) })), code: f === 'celery-5.5' ? 'ERR_BAD_SIGNATURE' : 'ERR_MALFORMED_PAYLOAD' },
      { name: 'content type swapped to pickle', payload: tamper(good, f, () => ({ contentType: 'application/x-python-serialize' })), code: 'ERR_CONTENT_DISALLOWED' },
    ];
    t.deepEqual(reader.deserialize(good), VALUE, 'the untampered payload verifies');
    for (const b of bad) {
      const err = t.throws(() => reader.deserialize(b.payload), { instanceOf: SecurityError }, b.name);
      if (err && b.name === 'signer id of another certificate' && f === 'celery-5.4') {
        t.true(['ERR_MALFORMED_PAYLOAD', 'ERR_BAD_SIGNATURE'].includes(err.code), `${b.name}: ${err.code}`);
      } else if (err) t.is(err.code, b.code, b.name);
    }
    const [resp] = await runOracle(wire.env, [{ op: 'deserialize', ...pythonValidStore(wire), items: [good, ...bad.map((b) => b.payload)] }]);
    const items = itemsOf(resp!);
    t.true(items[0]!.ok, `Celery reads its own payload: ${items[0]!.error}`);
    for (const [i, b] of bad.entries()) {
      const item = items[i + 1]!;
      if (b.code === 'ERR_CONTENT_DISALLOWED') {
        // Celery then tries to unpickle the JSON body: it fails, but only as a decode error.
        t.false(item.ok, `${b.name}: ${JSON.stringify(item)}`);
      } else t.true(refusedByCelery(item), `${b.name}: Celery did not refuse: ${JSON.stringify(item)}`);
    }
  });
}

// --- keys and certificates both sides refuse ---------------------------------
const session = new OracleSession(WIRES[0]!);
const nonRsaKeys = fx.keys().filter((k) => k.algorithm !== 'rsa' && k.algorithm !== 'rsa-pss');
const nonRsaCerts = ['ec-p256', 'ed25519', 'dsa2048'].map((n) => fx.cert(n));
const keyVerdicts = session.addItems({ op: 'key_check', items: nonRsaKeys.map((k) => ({ key: pemText(k), password: k.password })) });
const certVerdicts = session.addItems({ op: 'cert_info', certs: nonRsaCerts.map(pemText) });
const wrongPassword = fx.keys().filter((k) => k.password !== null && k.algorithm === 'rsa');
const passwordVerdicts = session.addItems({ op: 'key_check', items: wrongPassword.map((k) => ({ key: pemText(k), password: k.password + 'x' })) });

test('EC, Ed25519 and DSA keys and certificates are refused by Node (ERR_UNSUPPORTED_KEY_TYPE) and by Celery', async (t) => {
  t.true(nonRsaKeys.length >= 4);
  const kv = await keyVerdicts();
  for (const [i, k] of nonRsaKeys.entries()) {
    t.throws(() => new PrivateKey(pemText(k), k.password), { instanceOf: SecurityError, code: 'ERR_UNSUPPORTED_KEY_TYPE' }, k.name);
    t.false(kv[i]!.ok, `${k.name}: Celery loaded it`);
    t.regex(kv[i]!.error ?? '', /SecurityError/, k.name);
  }
  const cv = await certVerdicts();
  for (const [i, c] of nonRsaCerts.entries()) {
    t.throws(() => new Certificate(pemText(c)), { instanceOf: SecurityError, code: 'ERR_UNSUPPORTED_KEY_TYPE' }, c.name);
    t.false(cv[i]!.ok, `${c.name}: Celery loaded it`);
    t.regex(cv[i]!.error ?? '', /SecurityError: Invalid certificate.*Non-RSA/, c.name);
  }
});

test('a wrong password is refused by Node (ERR_INVALID_KEY) and by Celery, for every encrypted key', async (t) => {
  const verdicts = await passwordVerdicts();
  for (const [i, k] of wrongPassword.entries()) {
    t.throws(() => new PrivateKey(pemText(k), k.password + 'x'), { instanceOf: SecurityError, code: 'ERR_INVALID_KEY' }, k.name);
    t.false(verdicts[i]!.ok, k.name);
  }
});

test('pickle and YAML stay undecodable in Node whatever the accept list says', (t) => {
  const key = new PrivateKey(pemText(KEY));
  const cert = new Certificate(pemText(CERT));
  const s = new SecureSerializer({ key, cert, store: nodeStore, accept: ['json', 'pickle', 'yaml', 'application/x-python-serialize', 'application/x-yaml'] });
  t.false(s.accept.has('application/x-python-serialize'));
  t.false(s.accept.has('application/x-yaml'));
  const body = Buffer.from("S'x'\n.", 'latin1');
  for (const ct of ['application/x-python-serialize', 'APPLICATION/X-PYTHON-SERIALIZE', 'application/x-python-serialize; charset=binary', 'application/x-yaml', 'application/yaml', 'text/yaml']) {
    for (const f of ['celery-5.5', 'celery-5.4'] as const) {
      const p = pack({ signer: Buffer.from(cert.id), signature: key.sign(body), contentType: ct, contentEncoding: 'binary', body }, f);
      t.throws(() => s.deserialize(p), { instanceOf: SecurityError, code: 'ERR_CONTENT_DISALLOWED' }, `${f} ${ct}`);
    }
  }
  t.deepEqual(s.deserialize(s.serialize({ ok: json.dumps(1) })), { ok: '1' });
});
