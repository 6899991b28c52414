/**
 * Bodies from empty to 1 MiB against the real Python Celery, both directions
 * and both wire formats: unicode strings through the inner `json` serializer,
 * and strings and bytes through `raw` (kombu's application/data, encodings
 * utf-8 and binary).
 *
 * Celery 5.4 differs from 5.5+ on raw bodies, and the expectations below say
 * so: 5.4 calls bytes_to_str() on the value before dumping and on the body
 * before loading, so bytes travel as UTF-8 text (encoding utf-8) and come back
 * as str, and a body may not contain the separator \x00\x01 (Node refuses to
 * write one in the 5.4 format; see refusals.test.ts).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Certificate, FSCertStore, PrivateKey, SecureSerializer, SecurityError } from 'celery-sign';
import {
  canonical,
  canonicalOf,
  certOfKey,
  dv,
  OracleSession,
  pemText,
  plainKey,
  pythonValidStore,
  validStorePath,
  WIRES,
  type Wire,
} from '../helpers/interop-oracle.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Random bytes without the separator \x00\x01 (the 5.4 format cannot carry it). */
function bytesWithoutSep(n: number): Buffer {
  const b = randomBytes(n);
  for (let i = 1; i < b.length; i++) if (b[i - 1] === 0 && b[i] === 1) b[i] = 2;
  return b;
}

/** A string of `n` UTF-16 units, mostly ASCII, with unicode (BMP and astral) sprinkled in. */
function text(n: number): string {
  const unit = 'Celery signed body — ünïcödé 中文 🎉 ' + 'x'.repeat(60) + '\n';
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n).replace(/[\ud800-\udbff]$/, 'y');
}

interface BodyCase {
  name: string;
  serializer: 'json' | 'raw';
  value: string | Uint8Array | unknown;
  /** Celery 5.5+ only. */
  only55?: boolean;
  /**
   * Not UTF-8: Celery 5.4 verifies bytes_to_str(body) re-encoded, so it cannot
   * verify such a body whoever signed it (and never writes one itself).
   */
  notUtf8?: boolean;
}

const UNICODE = 'ünï 中文 Ω 🎉 𝄞 e\u0301 \u202eRTL\u202c \u0000\u0001\u0002 \t\n "quoted" \\ \u2028\u2029 \ufeff';

const CASES: BodyCase[] = [
  { name: 'json empty string', serializer: 'json', value: '' },
  { name: 'json one char', serializer: 'json', value: 'a' },
  { name: 'json unicode + control chars + separator chars', serializer: 'json', value: UNICODE },
  { name: 'json lone surrogate', serializer: 'json', value: 'lone \ud800 surrogate' },
  { name: 'json 1 KiB string', serializer: 'json', value: text(KiB) },
  { name: 'json 64 KiB string', serializer: 'json', value: text(64 * KiB) },
  { name: 'json 1 MiB string', serializer: 'json', value: text(MiB) },
  {
    name: 'json ~1 MiB structure',
    serializer: 'json',
    value: Array.from({ length: 9000 }, (_, i) => ({ i, s: `item ${i} ü`, f: i / 7, l: [true, false, null] })),
  },
  { name: 'raw empty string', serializer: 'raw', value: '' },
  { name: 'raw unicode string', serializer: 'raw', value: 'raw ünï 🎉 text' },
  { name: 'raw 1 MiB string', serializer: 'raw', value: text(MiB) },
  { name: 'raw empty bytes', serializer: 'raw', value: new Uint8Array(0) },
  { name: 'raw one zero byte', serializer: 'raw', value: Buffer.from([0]) },
  { name: 'raw utf-8 bytes', serializer: 'raw', value: Buffer.from('bytes ünï 🎉', 'utf8') },
  { name: 'raw invalid utf-8 bytes', serializer: 'raw', value: Buffer.from([0x61, 0xff, 0x62]), notUtf8: true },
  { name: 'raw 64 KiB random bytes', serializer: 'raw', value: bytesWithoutSep(64 * KiB), only55: true },
  { name: 'raw 1 MiB random bytes', serializer: 'raw', value: bytesWithoutSep(MiB), only55: true },
  { name: 'raw bytes 0..255', serializer: 'raw', value: Buffer.from(Array.from({ length: 256 }, (_, i) => i)), only55: true },
  {
    name: 'raw bytes containing the separator',
    serializer: 'raw',
    value: Buffer.concat([Buffer.from('a\x00\x01b'), Buffer.from([0, 1, 0, 1]), Buffer.from('\x00\x01')]),
    only55: true,
  },
];

const utf8 = (v: string | Uint8Array): string => (typeof v === 'string' ? v : Buffer.from(v).toString('utf8'));
const asBytes = (v: string | Uint8Array): Buffer => (typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v));

/** What Node must decode from the payload Celery made of this case. */
function nodeReadsPython(c: BodyCase, wire: Wire): unknown {
  if (c.serializer === 'json') return c.value;
  const v = c.value as string | Uint8Array;
  // 5.4 turned bytes into text (bytes_to_str) before dumping: body UTF-8, encoding utf-8.
  const body = wire.wireFormat === 'celery-5.4' ? Buffer.from(utf8(v), 'utf8') : asBytes(v);
  if (body.length === 0) return new Uint8Array(0); // kombu returns an empty body as it is
  const binary = wire.wireFormat === 'celery-5.5' && typeof v !== 'string';
  return binary ? body : body.toString('utf8');
}

/** What Celery must decode from the payload Node made of this case. */
function pythonReadsNode(c: BodyCase, wire: Wire): unknown {
  if (c.serializer === 'json') return c.value;
  const v = c.value as string | Uint8Array;
  if (wire.wireFormat === 'celery-5.4') return utf8(v); // bytes_to_str(body): always str, '' when empty
  if (asBytes(v).length === 0) return new Uint8Array(0);
  return typeof v === 'string' ? v : asBytes(v);
}

const nodeReader = new SecureSerializer({ store: new FSCertStore(validStorePath()) });
const KEY = plainKey('rsa2048');
const CERT = certOfKey('rsa2048');

for (const wire of WIRES) {
  const session = new OracleSession(wire);
  const cases = CASES.filter((c) => !c.only55 || wire.wireFormat === 'celery-5.5');
  const bySerializer = (s: 'json' | 'raw'): number[] => cases.flatMap((c, i) => (c.serializer === s ? [i] : []));

  // Python signs, one request per inner serializer.
  const pySigned = new Map(
    (['json', 'raw'] as const).map((s) => {
      const idx = bySerializer(s);
      const get = session.addItems({
        op: 'serialize',
        key: pemText(KEY),
        cert: pemText(CERT),
        serializer: s,
        items: idx.map((i) => dv(cases[i]!.value)),
      });
      return [s, { idx, get }];
    }),
  );

  // Node signs; Python reads everything in one request.
  const key = new PrivateKey(pemText(KEY));
  const cert = new Certificate(pemText(CERT));
  const writers = {
    json: new SecureSerializer({ key, cert, wireFormat: wire.wireFormat }),
    raw: new SecureSerializer({ key, cert, wireFormat: wire.wireFormat, serializer: 'raw' }),
  };
  const nodeSigned = cases.map((c) => {
    try {
      return writers[c.serializer].serialize(c.value);
    } catch (err) {
      return err as Error;
    }
  });
  const pyRead = session.addItems({
    op: 'deserialize',
    ...pythonValidStore(wire),
    items: nodeSigned.map((p) => (typeof p === 'string' ? p : 'bm90IGEgcGF5bG9hZA==')),
  });

  test(`${wire.label}: Python-signed bodies from empty to 1 MiB verify and decode in Node`, async (t) => {
    for (const s of ['json', 'raw'] as const) {
      const { idx, get } = pySigned.get(s)!;
      const items = await get();
      for (const [j, i] of idx.entries()) {
        const c = cases[i]!;
        const item = items[j]!;
        t.true(item.ok, `${c.name}: Celery could not sign: ${item.error}`);
        if (!item.ok) continue;
        let got: unknown;
        t.notThrows(() => {
          got = nodeReader.deserialize(item.payload as string);
        }, c.name);
        t.is(canonical(got), canonical(nodeReadsPython(c, wire)), c.name);
      }
    }
  });

  test(`${wire.label}: Node-signed bodies from empty to 1 MiB verify and decode in Python`, async (t) => {
    const items = await pyRead();
    for (const [i, c] of cases.entries()) {
      const made = nodeSigned[i]!;
      const item = items[i]!;
      if (c.notUtf8 && wire.wireFormat === 'celery-5.4') {
        // Celery 5.4 verifies bytes_to_str(body).encode(), which is not the
        // signed body when the body is not UTF-8, so it could never accept
        // such a payload: Node refuses to write it in the 5.4 format.
        t.true(made instanceof SecurityError, c.name);
        t.is((made as SecurityError).code, 'ERR_MALFORMED_PAYLOAD', c.name);
        t.regex((made as SecurityError).message, /^Unable to serialize/, c.name);
        continue;
      }
      t.is(typeof made, 'string', `${c.name}: Node could not sign: ${String(made)}`);
      t.true(item.ok, `${c.name}: Celery refused Node's payload: ${item.error}`);
      if (!item.ok) continue;
      t.is(canonicalOf(item), canonical(pythonReadsNode(c, wire)), c.name);
      if (c.serializer === 'raw') {
        const ct = 'application/data';
        t.is(item.content_type, ct, c.name);
        const binary = typeof c.value !== 'string';
        t.is(item.content_encoding, binary ? 'binary' : 'utf-8', c.name);
      }
    }
  });

  test(`${wire.label}: Node reads its own payloads of every body back`, (t) => {
    for (const [i, c] of cases.entries()) {
      const made = nodeSigned[i]!;
      if (c.notUtf8 && wire.wireFormat === 'celery-5.4') {
        t.true(made instanceof SecurityError, c.name); // refused at serialize, see above
        continue;
      }
      if (typeof made !== 'string') {
        t.fail(`${c.name}: ${String(made)}`);
        continue;
      }
      const expected = c.serializer === 'json' ? c.value : asBytes(c.value as string | Uint8Array).length === 0 ? new Uint8Array(0) : c.value;
      t.is(canonical(nodeReader.deserialize(made)), canonical(expected), c.name);
    }
  });
}
