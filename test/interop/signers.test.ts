/**
 * Signer ids against the real Python Celery: unicode issuers (UTF8String,
 * BMPString with surrogate pairs, UniversalString, T61String, ...),
 * multi-valued RDNs, RFC 4514 special characters, and large (160-bit), zero
 * and negative serials. Each certificate of the fixtures whose key we hold
 * signs in Python and verifies in Node, and signs in Node and verifies in
 * Python, in both wire formats; both sides must name the same signer.
 */
import test from 'ava';
import { Certificate, FSCertStore, PrivateKey, SecureSerializer } from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import {
  canonical,
  canonicalOf,
  dv,
  OracleSession,
  pemText,
  plainKey,
  pythonValidStore,
  validStoreCerts,
  validStorePath,
  WIRES,
} from '../helpers/interop-oracle.js';

// Every usable certificate (distinct ids) plus PEM variants of rsa2048 (text
// before the block, CRLF line ends) as signing certificates.
const signingCerts: fx.CertItem[] = [...validStoreCerts(), fx.cert('rsa2048.text-preamble'), fx.cert('rsa2048.crlf')];
const valueFor = (c: fx.CertItem): unknown => ({ signed_by: c.name, id: c.expected_id });
// celery-sign checks notBefore (Celery does not): it neither signs with nor accepts such a signer.
const notYetValid = (c: fx.CertItem): boolean => c.tags.includes('not-yet-valid');

const nodeStore = new FSCertStore(validStorePath());
const reader = new SecureSerializer({ store: nodeStore });

test('the fixtures cover unicode and multi-valued issuers and large, zero and negative serials', (t) => {
  const names = new Set(signingCerts.map((c) => c.name));
  for (const n of ['name-utf8', 'name-bmp-astral', 'name-universal', 'name-teletex', 'name-multivalued-rdn', 'name-many-rdns',
    'name-special-chars', 'name-mixed-types', 'serial-160bit', 'serial-159bit', 'serial-0', 'serial-negative', 'serial-1']) {
    t.true(names.has(n), n);
  }
  t.is(BigInt(fx.cert('serial-160bit').serial!) >> 159n, 1n, 'a full 160-bit serial');
  for (const c of signingCerts) t.truthy(c.key_id && c.expected_id, c.name);
});

for (const wire of WIRES) {
  const session = new OracleSession(wire);

  const idsInPython = session.addItems({ op: 'cert_info', certs: signingCerts.map(pemText) });

  const pySigned = signingCerts.map((c) =>
    session.addItems({ op: 'serialize', key: pemText(plainKey(c.key_id!)), cert: pemText(c), items: [dv(valueFor(c))] }),
  );

  const nodeSigned = signingCerts.map((c) => {
    try {
      const s = new SecureSerializer({ key: new PrivateKey(pemText(plainKey(c.key_id!))), cert: new Certificate(pemText(c)), wireFormat: wire.wireFormat });
      return s.serialize(valueFor(c));
    } catch (err) {
      return err as Error;
    }
  });
  const pyRead = session.addItems({
    op: 'deserialize',
    ...pythonValidStore(wire),
    items: nodeSigned.map((p) => (typeof p === 'string' ? p : 'bm90IGEgcGF5bG9hZA==')),
  });

  test(`${wire.label}: Certificate.id equals this Celery's get_id() for every signing certificate`, async (t) => {
    const infos = await idsInPython();
    for (const [i, c] of signingCerts.entries()) {
      const info = infos[i]!;
      t.true(info.ok, `${c.name}: ${info.error}`);
      const cert = new Certificate(pemText(c));
      t.is<unknown, unknown>(cert.id, info.id, c.name);
      t.is<unknown, unknown>(cert.issuer, info.issuer, c.name);
      t.is<unknown, unknown>(cert.serialNumber.toString(), info.serial, c.name);
    }
  });

  test(`${wire.label}: Python-signed payloads verify in Node and name the same signer, every issuer and serial`, async (t) => {
    const payloads: string[] = [];
    for (const [i, c] of signingCerts.entries()) {
      const [item] = await pySigned[i]!();
      t.true(item!.ok, `${c.name}: Celery could not sign: ${item!.error}`);
      payloads.push(item!.payload as string);
      if (notYetValid(c)) {
        t.throws(() => reader.deserialize(item!.payload as string), { code: 'ERR_CERTIFICATE_EXPIRED', message: /not yet valid/ }, c.name);
        continue;
      }
      t.is(canonical(reader.deserialize(item!.payload as string)), canonical(valueFor(c)), c.name);
    }
    const results = await reader.deserializeMany(payloads);
    for (const [i, c] of signingCerts.entries()) {
      const r = results[i]!;
      if (notYetValid(c)) {
        t.false(r.ok, c.name);
        if (!r.ok) t.is(r.error.code, 'ERR_CERTIFICATE_EXPIRED', c.name);
        continue;
      }
      t.true(r.ok, c.name);
      if (r.ok) t.is<unknown, unknown>(r.signer, c.expected_id, c.name);
    }
  });

  test(`${wire.label}: Node-signed payloads verify in Python and name the same signer, every issuer and serial`, async (t) => {
    const results = await pyRead();
    for (const [i, c] of signingCerts.entries()) {
      const made = nodeSigned[i]!;
      if (notYetValid(c)) {
        t.is((made as { code?: string }).code, 'ERR_CERTIFICATE_EXPIRED', `${c.name}: Node signs only while its certificate is valid`);
        continue;
      }
      t.is(typeof made, 'string', `${c.name}: Node could not sign: ${String(made)}`);
      const item = results[i]!;
      t.true(item.ok, `${c.name}: Celery refused Node's payload: ${item.error}`);
      if (!item.ok) continue;
      t.is(item.signer, c.expected_id, c.name);
      t.is(canonicalOf(item), canonical(valueFor(c)), c.name);
    }
  });
}
