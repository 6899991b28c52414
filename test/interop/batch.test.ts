/**
 * Batches against the real Python Celery:
 * - deserializeMany of a mix of payloads made by Celery 5.7 AND Celery 5.4
 *   (both wire formats in one call, one SecureSerializer), with bad payloads
 *   scattered among them: results are positional, exactly the bad ones fail,
 *   each with its code, nothing is lost;
 * - serializeMany in Node, in both wire formats, read back by Celery in order.
 */
import test from 'ava';
import { Certificate, FSCertStore, PrivateKey, SecureSerializer, type DeserializeResult } from 'celery-sign';
import * as fx from '../helpers/fixtures.js';
import {
  canonical,
  canonicalOf,
  CELERY54,
  certOfKey,
  CURRENT,
  dv,
  itemsOf,
  OracleSession,
  pemText,
  plainKey,
  pythonValidStore,
  runOracle,
  validStorePath,
  WIRES,
  type Wire,
} from '../helpers/interop-oracle.js';
import { flipBit, tamper } from '../helpers/interop-tamper.js';

type Code = Extract<DeserializeResult, { ok: false }>['error']['code'];

const SIGNERS: fx.CertItem[] = [certOfKey('rsa2048'), fx.cert('name-bmp-astral'), fx.cert('serial-160bit'), fx.cert('name-multivalued-rdn')];
const PER_SIGNER = 100;
const valueOf = (wire: Wire, signer: number, i: number): unknown => ({ wire: wire.wireFormat, signer, i, s: `ünï ${i}` });

interface Made {
  wire: Wire;
  signer: fx.CertItem;
  value: unknown;
  payload: string;
}

const sessions = new Map<Wire, OracleSession>(WIRES.map((w) => [w, new OracleSession(w)]));
const pyMade = new Map(
  WIRES.map((wire) => [
    wire,
    SIGNERS.map((signer, s) =>
      sessions.get(wire)!.addItems({
        op: 'serialize',
        key: pemText(plainKey(signer.key_id!)),
        cert: pemText(signer),
        items: Array.from({ length: PER_SIGNER }, (_, i) => dv(valueOf(wire, s, i))),
      }),
    ),
  ]),
);

async function celeryPayloads(): Promise<Made[]> {
  const out: Made[][] = [];
  for (const wire of WIRES) {
    const made: Made[] = [];
    for (const [s, signer] of SIGNERS.entries()) {
      const items = await pyMade.get(wire)![s]!();
      for (const [i, item] of items.entries()) {
        if (!item.ok) throw new Error(`Celery (${wire.label}) could not sign: ${item.error}`);
        made.push({ wire, signer, value: valueOf(wire, s, i), payload: item.payload as string });
      }
    }
    out.push(made);
  }
  // Interleave the two formats: 5.5, 5.4, 5.5, 5.4, ...
  const [a, b] = out as [Made[], Made[]];
  return a.flatMap((m, i) => [m, b[i]!]);
}

type Bad = { kind: string; payload: string; codes: Code[] };

/** Makes item `n` bad in one of several ways (deterministic). */
function spoil(m: Made, n: number): Bad {
  const f = m.wire.wireFormat;
  switch (n % 8) {
    case 0:
      return { kind: 'flipped signature bit', payload: tamper(m.payload, f, (x) => ({ signature: flipBit(x.signature, n % 256, n % 8) })), codes: ['ERR_BAD_SIGNATURE'] };
    case 1:
      return { kind: 'tampered body', payload: tamper(m.payload, f, (x) => ({ body: Buffer.from(x.body.toString().replace('"i": ', '"i": 1')) })), codes: ['ERR_BAD_SIGNATURE'] };
    case 2:
      return { kind: 'unknown signer', payload: tamper(m.payload, f, () => ({ signer: Buffer.from(`CN stranger ${n}`) })), codes: ['ERR_UNKNOWN_CERTIFICATE'] };
    case 3:
      return { kind: 'not base64', payload: `*** ${n} ***`, codes: ['ERR_MALFORMED_PAYLOAD'] };
    case 4:
      return { kind: 'empty', payload: '', codes: ['ERR_MALFORMED_PAYLOAD'] };
    case 5:
      return { kind: 'pickle content type', payload: tamper(m.payload, f, () => ({ contentType: 'application/x-python-serialize' })), codes: ['ERR_CONTENT_DISALLOWED'] };
    case 6:
      return { kind: 'truncated', payload: Buffer.from(m.payload, 'base64').subarray(0, 150).toString('base64'), codes: ['ERR_MALFORMED_PAYLOAD'] };
    default:
      return { kind: 'body cut short', payload: tamper(m.payload, f, (x) => ({ body: x.body.subarray(0, x.body.length - 2) })), codes: ['ERR_BAD_SIGNATURE'] };
  }
}

const store = new FSCertStore(validStorePath());

test('deserializeMany of 10,000 Celery 5.7 and 5.4 payloads with bad ones scattered: positional, exactly the bad ones fail', async (t) => {
  const made = await celeryPayloads();
  t.is(made.length, 2 * SIGNERS.length * PER_SIGNER);
  const TOTAL = 10_000;
  const items: { payload: string; good?: Made; bad?: Bad }[] = [];
  for (let n = 0; n < TOTAL; n++) {
    const m = made[n % made.length]!;
    // About one in seven is bad, at irregular places.
    if ((n * 2654435761) % 7 === 3) {
      const bad = spoil(m, n);
      items.push({ payload: bad.payload, bad });
    } else items.push({ payload: m.payload, good: m });
  }
  const badCount = items.filter((i) => i.bad).length;
  t.true(badCount > 1000 && badCount < 2000, `${badCount} bad`);

  // One serializer reads both formats, whatever wireFormat it writes.
  for (const reader of [new SecureSerializer({ store }), new SecureSerializer({ store, wireFormat: 'celery-5.4' })]) {
    for (const asBytes of [false, true]) {
      const input = asBytes ? items.map((i, n) => (n % 2 ? Buffer.from(i.payload) : i.payload)) : items.map((i) => i.payload);
      const results = await reader.deserializeMany(input);
      t.is(results.length, TOTAL);
      let wrong = 0;
      for (const [n, it] of items.entries()) {
        const r = results[n]!;
        if (it.good) {
          if (!r.ok || canonical(r.value) !== canonical(it.good.value) || r.signer !== it.good.signer.expected_id) {
            if (wrong++ < 5) t.fail(`#${n} (${it.good.wire.label}, ${it.good.signer.name}): ${r.ok ? canonical(r.value) + ' / ' + r.signer : r.error.code + ' ' + r.error.message}`);
          }
        } else if (r.ok || !it.bad!.codes.includes(r.error.code)) {
          if (wrong++ < 5) t.fail(`#${n} ${it.bad!.kind} (${(items[n]!.bad && made[n % made.length]!.wire.label) ?? ''}): ${r.ok ? 'accepted' : r.error.code}`);
        }
      }
      t.is(wrong, 0, `${reader.wireFormat} reader, ${asBytes ? 'strings and buffers' : 'strings'}`);
    }
  }
});

test('deserializeMany agrees with deserialize on every Celery payload, and with Celery on the signer', async (t) => {
  const made = await celeryPayloads();
  const reader = new SecureSerializer({ store });
  const results = await reader.deserializeMany(made.map((m) => m.payload));
  for (const [i, m] of made.entries()) {
    const r = results[i]!;
    t.true(r.ok, `${m.wire.label} ${m.signer.name}`);
    if (!r.ok) continue;
    t.is(canonical(r.value), canonical(reader.deserialize(m.payload)));
    t.is<unknown, unknown>(r.signer, m.signer.expected_id);
  }
  // Async single calls agree too.
  const some = made.filter((_, i) => i % 37 === 0);
  const values = await Promise.all(some.map((m) => reader.deserializeAsync(m.payload)));
  t.deepEqual(values.map(canonical), some.map((m) => canonical(m.value)));
});

// --- Node serializeMany -> Celery, in order ---------------------------------
const key = new PrivateKey(pemText(plainKey('rsa2048')));
const cert = new Certificate(pemText(fx.cert('name-utf8')));
const MANY = 300;
const manyValues = Array.from({ length: MANY }, (_, i) => ({ n: i, tag: `#${i} 🎉`, pad: 'x'.repeat(i % 50) }));
// serializeMany is async: its payloads go to their own Celery process once they exist.
const serializedMany = new Map<Wire, Promise<string[]>>(
  [CURRENT, CELERY54].map((wire) => [wire, new SecureSerializer({ key, cert, wireFormat: wire.wireFormat }).serializeMany(manyValues)]),
);

for (const wire of [CURRENT, CELERY54]) {
  test(`${wire.label}: serializeMany payloads are read by Celery in order`, async (t) => {
    const payloads = await serializedMany.get(wire)!;
    t.is(payloads.length, MANY);
    const [resp] = await runOracle(wire.env, [{ op: 'deserialize', ...pythonValidStore(wire), items: payloads }]);
    const items = itemsOf(resp!);
    for (const [i, item] of items.entries()) {
      t.true(item.ok, `#${i}: ${item.error}`);
      if (!item.ok) continue;
      t.is(canonicalOf(item), canonical(manyValues[i]), `#${i}`);
      t.is(item.signer, fx.cert('name-utf8').expected_id);
    }
  });
}
