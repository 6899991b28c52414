/**
 * Issue 9, items 3 to 6: the same answer on every path (deserialize,
 * deserializeAsync, deserializeMany) and on both backends for the size limit,
 * big integers, deep nesting and registry changes under a batch in flight;
 * and no status the facade turns into a plausible code by default.
 *
 * Imports the sources (not the built package) for the internal batch limits.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import {
  Certificate,
  CertStore,
  json,
  PrivateKey,
  SecureSerializer,
  SecurityError,
  SerializerRegistry,
  type DeserializeResult,
} from 'celery-sign';
import * as fx from './helpers/fixtures.js';
import { pack55, pssSign } from './helpers/payloads.js';
import { pythonPath } from './helpers/python.js';

const keyPem = fx.pemOf(fx.key('rsa2048.pkcs8'));
const key = new PrivateKey(keyPem);
const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
const nodeKey = createPrivateKey(keyPem);
const store = new CertStore([cert]);
const s = new SecureSerializer({ key, cert, store });

/** A payload carrying `body` as it is, signed. */
function signed(body: string | Buffer, contentType = 'application/json'): string {
  return pack55(cert.id, pssSign(nodeKey, body, 222), contentType, 'utf-8', body);
}

type Outcome = { value: unknown } | { code: string; cause?: string };

function fromError(err: unknown): Outcome {
  if (!(err instanceof SecurityError)) throw err;
  const cause = err.cause as Error | undefined;
  return { code: err.code, cause: cause ? cause.name : undefined };
}

/** What each path answers for one payload: [deserialize, deserializeAsync, deserializeMany]. */
async function everyPath(ser: SecureSerializer, payload: string | Buffer): Promise<Outcome[]> {
  const out: Outcome[] = [];
  try {
    out.push({ value: ser.deserialize(payload) });
  } catch (err) {
    out.push(fromError(err));
  }
  try {
    out.push({ value: await ser.deserializeAsync(payload) });
  } catch (err) {
    out.push(fromError(err));
  }
  const [r] = await ser.deserializeMany([payload]);
  out.push(r!.ok ? { value: r!.value } : fromError(r!.error));
  return out;
}

// --- item 4: integers of any size, floats as Python reads them ---------------

test('an integer beyond double range is exact on every path', async (t) => {
  const big = '1' + '0'.repeat(399);
  const want = { value: [10n ** 399n] };
  t.deepEqual(await everyPath(s, signed(`[${big}]`)), [want, want, want]);
  // Also among other values, negative, in objects, and beside a long string the batch lifts.
  const long = 'x'.repeat(9000);
  const body = `{"a": -${big}, "b": [1.5, ${big}7, 12345678901234567890], "c": "${long}"}`;
  const v = { value: { a: -(10n ** 399n), b: [1.5, 10n ** 400n + 7n, 12345678901234567890n], c: long } };
  t.deepEqual(await everyPath(s, signed(body)), [v, v, v]);
  t.deepEqual(json.loads(`[${big}]`), [10n ** 399n]);
});

test('floats out of double range are infinite, as Python reads them', async (t) => {
  // python -c 'import json; print(json.loads("[1e400, -1e400, 1.0e999, 123456789012345678901e400]"))'
  // [inf, -inf, inf, inf]
  const want = { value: [Infinity, -Infinity, Infinity, Infinity] };
  t.deepEqual(await everyPath(s, signed('[1e400, -1e400, 1.0e999, 123456789012345678901e400]')), [want, want, want]);
  t.deepEqual(json.loads('[1e400, 9007199254740993]'), [Infinity, 9007199254740993n]);
});

test('integers over Python\u2019s 4300 digits are refused, as Python refuses them', async (t) => {
  // ValueError: Exceeds the limit (4300 digits) for integer string conversion
  const ok = '9'.repeat(4300);
  t.deepEqual(json.loads(`[-${ok}]`), [-(10n ** 4300n - 1n)]);
  const e = t.throws(() => json.loads(`[${ok}9]`), { instanceOf: RangeError });
  t.regex(e.message, /4300 digits/);
  const refused = { code: 'ERR_DECODE', cause: 'RangeError' };
  t.deepEqual(await everyPath(s, signed(`[${ok}9]`)), [refused, refused, refused]);
  // dumps writes a bigint exactly, and refuses what Python could not read back.
  t.is(json.dumps([10n ** 399n, -(2n ** 64n)]), `[1${'0'.repeat(399)}, -18446744073709551616]`);
  t.is(json.dumps(new Map([[10n ** 20n, 1]])), '{"100000000000000000000": 1}');
  t.throws(() => json.dumps(10n ** 4300n), { instanceOf: RangeError, message: /4300 digits/ });
  t.is(json.dumps(-(10n ** 4300n - 1n)), '-' + ok);
});

// --- item 5: one nesting limit ----------------------------------------------

function nested(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a": '.repeat(depth) + '1' + '}'.repeat(depth);
}

test('nesting up to 1000 levels decodes on every path, deeper is ERR_DECODE on every path', async (t) => {
  for (const kind of ['array', 'object'] as const) {
    const okBody = nested(1000, kind);
    const okValue = { value: JSON.parse(okBody) as unknown };
    t.deepEqual(await everyPath(s, signed(okBody)), [okValue, okValue, okValue], `${kind} 1000`);
    const refused = { code: 'ERR_DECODE', cause: 'RangeError' };
    for (const depth of [1001, 5000, 100_000]) {
      t.deepEqual(await everyPath(s, signed(nested(depth, kind))), [refused, refused, refused], `${kind} ${depth}`);
    }
  }
  // With a long string the batch lifts out, markers, big integers and NaN: the same.
  const long = 'y'.repeat(9000);
  const deep = '['.repeat(1001) + `"${long}", {"__type__": "bytes", "__value__": "x"}, 12345678901234567890, NaN` + ']'.repeat(1001);
  const refused = { code: 'ERR_DECODE', cause: 'RangeError' };
  t.deepEqual(await everyPath(s, signed(deep)), [refused, refused, refused]);
  // Brackets inside strings are not nesting.
  const inString = `["${'['.repeat(5000)}", "\\"${'{'.repeat(5000)}\\\\"]`;
  const v = { value: ['['.repeat(5000), '"' + '{'.repeat(5000) + '\\'] };
  t.deepEqual(await everyPath(s, signed(inString)), [v, v, v]);
});

test('json.loads has one nesting limit on each of its paths (JSON.parse, the exact parser, markers)', (t) => {
  for (const inner of ['[]', '[NaN]', '[12345678901234567890]', '{"__type__": "bytes", "__value__": "x"}', '{"a": -Infinity}']) {
    const ok = '['.repeat(999) + inner + ']'.repeat(999);
    t.notThrows(() => json.loads(ok), inner);
    t.notThrows(() => json.loads(Buffer.from(ok)), inner);
    const deep = '['.repeat(1000) + inner + ']'.repeat(1000);
    t.throws(() => json.loads(deep), { instanceOf: RangeError, message: /nested deeper than 1000/ }, inner);
  }
  // Invalid text stays a SyntaxError, however deep.
  t.throws(() => json.loads('['.repeat(5000) + '}'), { instanceOf: SyntaxError });
});

test('the nesting limit does not depend on the stack left to the caller', async (t) => {
  const body = nested(1000, 'array');
  const payload = signed(body);
  // Use up most of the stack first, then decode.
  const deepCall = (n: number): unknown => (n === 0 ? s.deserialize(payload) : deepCall(n - 1));
  let v: unknown;
  for (const n of [0, 1000, 3000]) {
    v = deepCall(n);
    t.deepEqual(v, JSON.parse(body), `after ${n} frames`);
  }
});

// --- item 3: the size limit before any copy -----------------------------------

const MiB = 1024 * 1024;

function grown(before: NodeJS.MemoryUsage): number {
  const now = process.memoryUsage();
  return Math.max(now.rss - before.rss, now.arrayBuffers - before.arrayBuffers, now.external - before.external);
}

test('an oversize payload is refused on every path without a copy of it', async (t) => {
  const small = new SecureSerializer({ key, cert, store, maxPayloadSize: MiB });
  const huge = 'A'.repeat(400 * MiB); // a flat one-byte string: 400 MiB
  const hugeBuffer = Buffer.alloc(300 * MiB, 0x41);
  const fits = small.serialize([1, 2]);
  for (const [what, payload, size] of [
    ['string', huge, huge.length],
    ['Buffer', hugeBuffer, hugeBuffer.length],
  ] as const) {
    global.gc?.();
    const before = process.memoryUsage();
    let peak = 0;
    const e1 = t.throws(() => small.deserialize(payload), { instanceOf: SecurityError });
    t.is(e1.code, 'ERR_PAYLOAD_TOO_LARGE', what);
    peak = Math.max(peak, grown(before));
    const e2 = await t.throwsAsync(small.deserializeAsync(payload), { instanceOf: SecurityError });
    t.is(e2.code, 'ERR_PAYLOAD_TOO_LARGE', what);
    peak = Math.max(peak, grown(before));
    const rs = await small.deserializeMany([fits, payload, fits, payload, payload, fits]);
    peak = Math.max(peak, grown(before));
    t.deepEqual(
      rs.map((r) => (r.ok ? r.value : r.error.code)),
      [[1, 2], 'ERR_PAYLOAD_TOO_LARGE', [1, 2], 'ERR_PAYLOAD_TOO_LARGE', 'ERR_PAYLOAD_TOO_LARGE', [1, 2]],
      what,
    );
    t.regex((rs[1] as { error: SecurityError }).error.message, /over the limit of 1048576/);
    t.true(peak < size / 4, `${what}: memory grew by ${(peak / MiB).toFixed(1)} MiB for a ${(size / MiB).toFixed(0)} MiB payload`);
  }
  // A string whose UTF-16 length is within the limit and its UTF-8 is not: measured, refused.
  const wide = '\u00e9'.repeat(MiB / 2 + 1);
  const e = t.throws(() => small.deserialize(wide), { instanceOf: SecurityError });
  t.is(e.code, 'ERR_PAYLOAD_TOO_LARGE');
  t.regex(e.message, /the payload is 1048578 bytes/);
  const [r] = await small.deserializeMany([wide]);
  t.is((r as { error: SecurityError }).error.code, 'ERR_PAYLOAD_TOO_LARGE');
});

// --- item 6: registry changes do not reach a batch in flight -------------------

test('a batch decodes with the decoders it started with, lifted values put back', async (t) => {
  const reg = new SerializerRegistry();
  reg.register('json', json.dumps, json.loads, 'application/json', 'utf-8');
  const ser = new SecureSerializer({ key, cert, store, registry: reg });
  const long = 'z'.repeat(9000);
  const payload = ser.serialize([long]);
  t.is(json.dumps([long]).length, 9004);
  const batch = Array.from({ length: 700 }, () => payload); // three chunks
  const pending = ser.deserializeMany(batch);
  // The batch is out (its first chunks are with the backend): change the registry under it.
  reg.unregister('json');
  const results = await pending;
  t.true(results.every((r) => r.ok && (r.value as string[])[0] === long));
  // The next batch sees the change: no decoder, so the body comes back as text, whole.
  const [after] = await ser.deserializeMany([payload]);
  t.deepEqual(after, { ok: true, value: json.dumps([long]), signer: cert.id });
  t.is((after as { value: string }).value.length, 9004);

  // A decoder replaced between batches gets the text as it came.
  reg.register('json', null, (d) => ['custom', typeof d === 'string' ? d.length : d.length], 'application/json');
  const [custom] = await ser.deserializeMany([payload]);
  t.deepEqual((custom as { value: unknown }).value, ['custom', 9004]);
  // And replaced while a batch is out: that batch keeps its decoder.
  const pending2 = ser.deserializeMany(batch);
  reg.register('json', json.dumps, json.loads, 'application/json', 'utf-8');
  const r2 = await pending2;
  t.true(r2.every((r) => r.ok && (r.value as unknown[])[0] === 'custom' && (r.value as unknown[])[1] === 9004));
  const [back] = await ser.deserializeMany([payload]);
  t.deepEqual((back as { value: unknown }).value, [long]);
});

test('hints of one body never reach the decode of another', async (t) => {
  // A decoder that calls kombu's loads on a different text than it was given.
  const reg = new SerializerRegistry();
  reg.register('json', json.dumps, json.loads, 'application/json', 'utf-8');
  reg.register('x', null, (d) => json.loads(`{"inner": ${typeof d === 'string' ? d : Buffer.from(d).toString()}}`), 'application/x');
  const ser = new SecureSerializer({ key, cert, store, registry: reg, accept: ['application/json', 'application/x'] });
  const long = 'q'.repeat(9000);
  const body = `["${long}", 12345678901234567890]`;
  const results: DeserializeResult[] = await ser.deserializeMany([signed(body), signed(body, 'application/x'), signed(body)]);
  t.deepEqual(
    results.map((r) => (r.ok ? r.value : r.error.code)),
    [[long, 12345678901234567890n], { inner: [long, 12345678901234567890n] }, [long, 12345678901234567890n]],
  );
});

// --- against kombu itself ------------------------------------------------------

const KOMBU_LOADS = `
import json, sys
from kombu.utils.json import loads, dumps
out = []
for text in json.load(sys.stdin):
    try:
        v = loads(text)
    except Exception as e:
        out.append({"ok": False, "error": type(e).__name__})
        continue
    try:
        out.append({"ok": True, "text": dumps(v)})
    except Exception as e:
        out.append({"ok": True, "text": None})
print(json.dumps(out))
`;

test('everything kombu decodes decodes alike; what celery-sign refuses, kombu refuses', async (t) => {
  const texts = [
    `[1${'0'.repeat(399)}]`,
    `{"a": -${'7'.repeat(400)}, "b": 1e400, "c": -1e400, "d": 12345678901234567890}`,
    `[${'9'.repeat(4300)}]`,
    `[-${'9'.repeat(4300)}]`,
    `[${'9'.repeat(4301)}]`,
    '[1.5e308, 2e308, 123456789012345678901234567890.5]', // floats: inf beyond range, as Python
    ...[990, 996, 997, 1000, 1001, 5000].map((d) => nested(d, 'array')),
    ...[996, 1001].map((d) => nested(d, 'object')),
  ];
  const res = spawnSync(pythonPath(), ['-c', KOMBU_LOADS], { input: JSON.stringify(texts), encoding: 'utf8', maxBuffer: 1 << 28 });
  t.is(res.status, 0, res.stderr);
  const kombu = JSON.parse(res.stdout) as Array<{ ok: boolean; text?: string | null; error?: string }>;
  for (let i = 0; i < texts.length; i++) {
    const what = texts[i]!.slice(0, 40);
    const ours = (await everyPath(s, signed(texts[i]!)))!;
    t.deepEqual(ours[1], ours[0], what);
    t.deepEqual(ours[2], ours[0], what);
    const k = kombu[i]!;
    if (k.ok) {
      t.true('value' in ours[0]!, `kombu decodes ${what}: so does celery-sign`);
      // (A float that is integral, 1.5e308, is a JavaScript number that dumps writes as an int: compare integers only.)
      if (typeof k.text === 'string' && !/[.eE]/.test(texts[i]!)) t.is(json.dumps((ours[0] as { value: unknown }).value), k.text, what);
    } else if (!('value' in ours[0]!)) {
      t.is((ours[0] as { code: string }).code, 'ERR_DECODE', what);
    } else {
      // Only the nesting limit is more generous than Python 3.11's recursion limit.
      t.is(k.error, 'RecursionError', what);
    }
  }
});
