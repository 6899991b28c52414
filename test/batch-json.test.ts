/**
 * deserializeMany pre-scans kombu JSON bodies on the native threads (ASCII,
 * marker keys, long digit runs) and lifts long string values out of the text
 * before `JSON.parse` sees it. None of that may change an answer: every body
 * here must decode exactly as `deserialize` (which takes none of these paths)
 * decodes it, errors included, whatever else is in the batch.
 */
import test from 'ava';
import { createPrivateKey } from 'node:crypto';
import {
  Certificate,
  CertStore,
  json,
  PrivateKey,
  SecureSerializer,
  SerializerRegistry,
  type DeserializeResult,
} from 'celery-sign';
import * as fx from './helpers/fixtures.js';
import { pack55, pssSign } from './helpers/payloads.js';

const keyPem = fx.pemOf(fx.key('rsa2048.pkcs8'));
const key = new PrivateKey(keyPem);
const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
const nodeKey = createPrivateKey(keyPem);
const store = new CertStore([cert]);
const s = new SecureSerializer({ key, cert, store });

/** The shortest string value the native side lifts (crates/core/src/jsonscan.rs). */
const MIN_LITERAL = 8 * 1024;

/** A payload carrying `body` as it is, signed: any text, valid JSON or not. */
function signed(body: string | Buffer, contentType = 'application/json'): string {
  return pack55(cert.id, pssSign(nodeKey, body, 222), contentType, 'utf-8', body);
}

/** Printable ASCII but `"` and `\\`: what kombu's dumps writes unescaped. */
function printable(n: number, seed: number): string {
  const alphabet = ' !#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~';
  let x = seed | 1;
  let out = '';
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out += alphabet[(x >>> 0) % alphabet.length];
  }
  return out;
}

const B = printable(MIN_LITERAL + 100, 7);
const C = printable(MIN_LITERAL * 3, 11);

/** What a result says, comparable: the value, or the error's code, message and cause. */
function outcome(r: DeserializeResult): unknown {
  if (r.ok) return { value: r.value, signer: r.signer };
  const cause = r.error.cause as Error | undefined;
  return { code: r.error.code, message: r.error.message, cause: cause ? `${cause.name}: ${cause.message}` : undefined };
}

function expected(payload: string): unknown {
  try {
    return { value: s.deserialize(payload), signer: cert.id };
  } catch (err) {
    const e = err as { code: string; message: string; cause?: Error };
    return { code: e.code, message: e.message, cause: e.cause ? `${e.cause.name}: ${e.cause.message}` : undefined };
  }
}

const BODIES: Array<[string, string]> = [
  ['a long value in an array', `["${B}"]`],
  ['a long value alone', `"${B}"`],
  ['a long value with a raw DEL', `["${B}\x7f${B}"]`],
  ['the Celery shape', `[[1, "tasks.add", "${B}"], {"n": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`],
  ['long values in objects and arrays', `{"a": "${B}", "b": ["${C}", 1, {"c": "${B}"}], "d": "short"}`],
  ['a long key stays a key', `{"${B}": "${C}"}`],
  ['a long key and value with spaces before the colon', `{"${B}"  \n : "${B}", "x": "${C}"  }`],
  ['__proto__ with a long value', `{"__proto__": "${B}", "a": 1}`],
  ['__proto__ holding an object', `{"__proto__": {"x": "${B}"}}`],
  ['duplicate keys, the long one first', `{"a": "${B}", "a": "short"}`],
  ['duplicate keys, the long one last', `{"a": "short", "a": "${C}"}`],
  ['a long value with a non-ASCII character', `["${B}é"]`],
  ['non-ASCII elsewhere', `["é✓", "${B}", "\\ud83d\\ude00"]`],
  ['a long value with an escape', `["${B}\\n"]`],
  ['a long value with a unicode escape', `["${B}\\u00e9"]`],
  ['a long value with a raw tab (invalid)', `["${B}\t"]`],
  ['a long value with a raw control character (invalid)', `["${B}\u0001"]`],
  ['a long value just under the size', `["${B.slice(0, MIN_LITERAL - 1)}", "${B.slice(0, MIN_LITERAL)}"]`],
  ['a \\u0000 escape elsewhere', `["${B}", "\\u0000"]`],
  ['a \\u0000 escape inside the long value', `["${B}\\u0000${B}"]`],
  ['an escaped backslash before a long value', `["\\\\", "${B}", "a\\"b"]`],
  ['a bytes marker with a long value', `{"__type__": "bytes", "__value__": "${B}"}`],
  ['a base64 marker with a long value', `{"__type__": "base64", "__value__": "${Buffer.from(B).toString('base64')}"}`],
  ['an escaped marker key with a long value', `{"\\u005f_type__": "bytes", "__value__": "${C}"}`],
  ['a marker beside a long value', `[{"__type__": "datetime", "__value__": "2024-01-02T03:04:05.123456"}, "${B}"]`],
  ['an unknown marker with a long value (refused)', `{"__type__": "pickle", "__value__": "${B}"}`],
  ['a marker key only inside a long value', `["${B}__type__${B}"]`],
  ['a big integer beside a long value', `[12345678901234567890, "${B}", -9007199254740993]`],
  ['a float that is an unsafe integer', `[1e300, "${B}", 123456789012345680000.0]`],
  ['digit runs only inside a long value', `["${B}12345678901234567890", 9007199254740991]`],
  ['NaN and Infinity beside a long value', `[NaN, "${B}", Infinity, -Infinity]`],
  ['NaN inside a long value of invalid JSON', `["${B}NaN",]`],
  ['invalid: no comma after a long value', `["${B}" "x"]`],
  ['invalid: a long value, then a stray bracket', `["${B}"]]`],
  ['invalid: a long key without a value', `{"${B}"}`],
  ['invalid: unterminated long value', `["${B}`],
  ['invalid: unterminated after NaN', `[NaN, "${B}"`],
  ['an empty body', ''],
  ['plain small JSON', '{"task": "tasks.add", "args": [1, 2]}'],
];

test('every body decodes as deserialize decodes it, alone and in one batch', async (t) => {
  const payloads = BODIES.map(([, body]) => signed(body));
  const want = payloads.map(expected);
  for (let i = 0; i < payloads.length; i++) {
    const [one] = await s.deserializeMany([payloads[i]!]);
    t.deepEqual(outcome(one!), want[i], BODIES[i]![0]);
  }
  // All together, twice over and reversed: the lifted values of each body stay its own.
  const mixed = [...payloads, ...[...payloads].reverse()];
  const got = (await s.deserializeMany(mixed)).map(outcome);
  t.deepEqual(got, [...want, ...[...want].reverse()]);
});

test('long values come back whole, as strings JavaScript can use', async (t) => {
  const values = Array.from({ length: 40 }, (_, i) => [[i, `task-${i}`, printable(MIN_LITERAL + i * 997, i + 1)], { i }, { chain: null }]);
  const results = await s.deserializeMany(await s.serializeMany(values));
  const got = results.map((r) => (r.ok ? r.value : r.error));
  t.deepEqual(got, values);
  const text = (got[3] as [[number, string, string]])[0][2];
  t.is(text.length, MIN_LITERAL + 3 * 997);
  t.is(text, (values[3] as [[number, string, string]])[0][2]);
  t.is(JSON.parse(JSON.stringify(text)), text);
  t.is(text.slice(100, 120) + text.at(-1), (values[3] as [[number, string, string]])[0][2].slice(100, 120) + text.at(-1));
});

test('random documents with long values decode as deserialize decodes them', async (t) => {
  let x = 0x2545f491;
  const rand = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const leaf = (): unknown => {
    switch (rand(9)) {
      case 0:
        return printable(MIN_LITERAL - 2 + rand(5), rand(1000) + 1);
      case 1:
        return printable(rand(3) * MIN_LITERAL, rand(1000) + 1);
      case 2:
        return printable(MIN_LITERAL + rand(50), rand(1000) + 1) + ['"', '\\', 'é', '\n', ''][rand(5)];
      case 3:
        return BigInt(rand(1 << 30)) * 1_000_000_000_000n;
      case 4:
        return rand(1000) / 7;
      case 5:
        return null;
      case 6:
        return Buffer.from(printable(rand(2) * MIN_LITERAL + 10, 3));
      default:
        return `s${rand(100)}`;
    }
  };
  const tree = (depth: number): unknown => {
    if (depth === 0 || rand(3) === 0) return leaf();
    if (rand(2) === 0) return Array.from({ length: rand(4) }, () => tree(depth - 1));
    const o: Record<string, unknown> = {};
    for (let i = rand(4); i > 0; i--) o[rand(3) === 0 ? printable(MIN_LITERAL + 1, i) : `k${rand(10)}`] = tree(depth - 1);
    return o;
  };
  const payloads = Array.from({ length: 60 }, () => signed(json.dumps(tree(4))));
  const want = payloads.map(expected);
  t.deepEqual((await s.deserializeMany(payloads)).map(outcome), want);
});

test('other content types and decoders get the body as it came', async (t) => {
  const text = signed(`["${B}"]`, 'application/text');
  const data = signed(`["${B}"]`, 'application/data');
  const [a, b] = await s.deserializeMany([text, data]);
  t.deepEqual(outcome(a!), expected(text));
  t.deepEqual(outcome(b!), expected(data));

  // A decoder replaced while a batch is out does not reach that batch (it
  // decodes with the decoders it started with); the next batch's decoder
  // sees the text as it was signed.
  const registry = new SerializerRegistry();
  registry.register('json', json.dumps, json.loads, 'application/json', 'utf-8');
  const own = new SecureSerializer({ key, cert, store, registry });
  const body = `[{"k": "${B}"}, "${C}", "\\u00e9"]`;
  const pending = own.deserializeMany([signed(body), signed(body)]);
  registry.register('json', json.dumps, (d) => ({ seen: typeof d === 'string' ? d : Buffer.from(d).toString() }), 'application/json', 'utf-8');
  const results = await pending;
  const value = [{ k: B }, C, '\u00e9'];
  t.deepEqual(
    results.map((r) => (r.ok ? r.value : r.error)),
    [value, value],
  );
  const next = await own.deserializeMany([signed(body), signed(body)]);
  t.deepEqual(
    next.map((r) => (r.ok ? r.value : r.error)),
    [{ seen: body }, { seen: body }],
  );
});

test('payload text that is not ASCII is read as UTF-8, as deserialize reads it', async (t) => {
  const base = s.serialize({ a: B });
  // Python's b64decode drops what is not in the alphabet: so does the reader.
  const withLatin1 = base.slice(0, 10) + 'é' + base.slice(10);
  const withWide = base.slice(0, 20) + '✓\ud83d\ude00' + base.slice(20);
  const payloads = [base, withLatin1, withWide, base, withWide];
  const got = (await s.deserializeMany(payloads)).map(outcome);
  t.deepEqual(got, payloads.map(expected));
  t.deepEqual(got[1], { value: { a: B }, signer: cert.id });
  // And as Buffers.
  t.deepEqual((await s.deserializeMany(payloads.map((p) => Buffer.from(p)))).map(outcome), got);
});

test('batches in a row reuse their buffers without mixing results', async (t) => {
  const values = Array.from({ length: 600 }, (_, i) => (i % 3 === 0 ? { i, pad: printable(MIN_LITERAL + i, i + 1) } : { i }));
  const payloads = await s.serializeMany(values);
  const runs = await Promise.all([s.deserializeMany(payloads), s.deserializeMany(payloads.slice(0, 17)), s.deserializeMany(payloads.slice(300))]);
  t.deepEqual(
    runs.map((rs) => rs.map((r) => (r.ok ? r.value : r.error))),
    [values, values.slice(0, 17), values.slice(300)],
  );
  for (let k = 0; k < 5; k++) {
    const again = await s.deserializeMany(payloads.slice(k * 50, k * 50 + 120));
    t.deepEqual(
      again.map((r) => (r.ok ? r.value : r.error)),
      values.slice(k * 50, k * 50 + 120),
    );
  }
});
