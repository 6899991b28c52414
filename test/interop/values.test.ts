/**
 * Values round-trip with kombu's JSON markers (datetime, date, time, decimal,
 * uuid, bytes) and Python's big ints and special floats, both ways, through
 * signed payloads of both wire formats:
 *   Node serializes -> Celery deserializes to the Python value the package's
 *   json module says the JavaScript value stands for;
 *   Celery serializes -> Node deserializes to the documented JavaScript type.
 */
import test from 'ava';
import { Certificate, FSCertStore, json, PrivateKey, SecureSerializer } from 'celery-sign';
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

const { PyDate, PyDateTime, PyDecimal, PyFloat, PyTime, PyUUID } = json;

interface ValueCase {
  name: string;
  value: unknown;
  /** type(value).__name__ of what Celery decodes. */
  pyType: string;
  /** What Node decodes from Celery's payload, when it is not `value` itself. */
  nodeExpect?: (wire: Wire) => unknown;
  /** A check of the JavaScript type Node decodes. */
  nodeType?: (v: unknown) => boolean;
}

const isInstance =
  (cls: abstract new (...args: never[]) => unknown) =>
  (v: unknown): boolean =>
    v instanceof cls;

const CASES: ValueCase[] = [
  { name: 'aware UTC datetime (Date)', value: new Date('2024-05-06T07:08:09.123Z'), pyType: 'datetime', nodeType: isInstance(Date) },
  {
    name: 'aware datetime, microseconds, +05:30',
    value: new PyDateTime('2024-05-06T07:08:09.123456+05:30'),
    pyType: 'datetime',
    // Documented: an aware datetime comes back as a Date (offset applied, microseconds truncated).
    nodeExpect: () => new Date('2024-05-06T01:38:09.123Z'),
    nodeType: isInstance(Date),
  },
  { name: 'naive datetime', value: new PyDateTime('2024-05-06T07:08:09.000001'), pyType: 'datetime', nodeType: isInstance(PyDateTime) },
  { name: 'date', value: new PyDate('2024-02-29'), pyType: 'date', nodeType: isInstance(PyDate) },
  { name: 'date min', value: new PyDate('0001-01-01'), pyType: 'date', nodeType: isInstance(PyDate) },
  { name: 'date max', value: new PyDate('9999-12-31'), pyType: 'date', nodeType: isInstance(PyDate) },
  { name: 'time', value: new PyTime('23:59:59.999999'), pyType: 'time', nodeType: isInstance(PyTime) },
  { name: 'time midnight', value: new PyTime('00:00:00'), pyType: 'time', nodeType: isInstance(PyTime) },
  { name: 'aware time', value: new PyTime('12:34:56+02:00'), pyType: 'time', nodeType: isInstance(PyTime) },
  { name: 'decimal', value: new PyDecimal('1.10'), pyType: 'Decimal', nodeType: isInstance(PyDecimal) },
  { name: 'decimal exponent', value: new PyDecimal('1E+3'), pyType: 'Decimal', nodeType: isInstance(PyDecimal) },
  { name: 'decimal negative zero', value: new PyDecimal('-0'), pyType: 'Decimal', nodeType: isInstance(PyDecimal) },
  { name: 'decimal NaN', value: new PyDecimal('NaN'), pyType: 'Decimal', nodeType: isInstance(PyDecimal) },
  { name: 'decimal -Infinity', value: new PyDecimal('-Infinity'), pyType: 'Decimal', nodeType: isInstance(PyDecimal) },
  {
    name: 'decimal, 39 digits',
    value: new PyDecimal('123456789012345678901234567890.123456789'),
    pyType: 'Decimal',
    nodeType: isInstance(PyDecimal),
  },
  { name: 'uuid', value: new PyUUID('2f8e2a5e-1c1b-4c3a-9f0e-3b7d4a1e6c55'), pyType: 'UUID', nodeType: isInstance(PyUUID) },
  {
    name: 'utf-8 bytes',
    value: Buffer.from('bytes ünï'),
    pyType: 'bytes',
    // Celery 5.4 passes the value through bytes_to_str() before dumping: bytes leave as str.
    nodeExpect: (w) => (w.wireFormat === 'celery-5.4' ? 'bytes ünï' : Buffer.from('bytes ünï')),
    nodeType: (v) => v instanceof Uint8Array || typeof v === 'string',
  },
  {
    name: 'non-utf-8 bytes (kombu base64 marker)',
    value: Buffer.from([0xff, 0x00, 0x80, 0x41]),
    pyType: 'bytes',
    nodeExpect: (w) => (w.wireFormat === 'celery-5.4' ? '\ufffd\u0000\ufffdA' : Buffer.from([0xff, 0x00, 0x80, 0x41])),
  },
  { name: 'empty bytes', value: new Uint8Array(0), pyType: 'bytes', nodeExpect: (w) => (w.wireFormat === 'celery-5.4' ? '' : new Uint8Array(0)) },
  { name: 'bytes inside a dict', value: { b: Buffer.from('inner'), x: Buffer.from([0xfe]) }, pyType: 'dict' },
  { name: 'int beyond 2**64', value: 2n ** 64n + 1n, pyType: 'int', nodeType: (v) => typeof v === 'bigint' },
  { name: 'negative big int', value: -(2n ** 100n), pyType: 'int', nodeType: (v) => typeof v === 'bigint' },
  { name: 'max safe int', value: Number.MAX_SAFE_INTEGER, pyType: 'int', nodeType: (v) => v === Number.MAX_SAFE_INTEGER },
  { name: 'float', value: 0.1, pyType: 'float' },
  { name: 'float 1e300 (PyFloat)', value: new PyFloat(1e300), pyType: 'float', nodeExpect: () => 1e300 },
  // Documented mapping: an integer-valued number is an int, with its exact value.
  { name: 'integer-valued 1e300 is an exact int', value: 1e300, pyType: 'int', nodeExpect: () => BigInt(1e300) },
  { name: 'float 1.0 (PyFloat)', value: new PyFloat(1), pyType: 'float', nodeExpect: () => 1 },
  { name: 'NaN', value: NaN, pyType: 'float', nodeType: (v) => Number.isNaN(v) },
  { name: '-Infinity', value: -Infinity, pyType: 'float' },
  { name: 'dict shaped like a marker is a marker on both sides', value: { __type__: 'date', __value__: '2020-01-02' }, pyType: 'date', nodeExpect: () => new PyDate('2020-01-02') },
  {
    name: 'a task message with every marker',
    value: {
      id: new PyUUID('urn:uuid:12345678-1234-5678-1234-567812345678'),
      eta: new Date('2030-01-01T00:00:00.000Z'),
      args: [new PyDecimal('9.99'), new PyDate('2024-01-31'), new PyTime('08:00:00'), Buffer.from('b')],
      kwargs: { nested: [{ deep: [new PyDateTime('2001-02-03T04:05:06')] }], big: 10n ** 30n, u: 'ünï 🎉' },
    },
    pyType: 'dict',
  },
];

const expectedInNode = (c: ValueCase, wire: Wire): unknown => (c.nodeExpect ? c.nodeExpect(wire) : c.value);

const nodeReader = new SecureSerializer({ store: new FSCertStore(validStorePath()) });
const KEY = plainKey('rsa2048');
const CERT = certOfKey('rsa2048');

for (const wire of WIRES) {
  const session = new OracleSession(wire);
  const writer = new SecureSerializer({ key: new PrivateKey(pemText(KEY)), cert: new Certificate(pemText(CERT)), wireFormat: wire.wireFormat });

  const nodeSigned = CASES.map((c) => {
    try {
      return writer.serialize(c.value);
    } catch (err) {
      return err as Error;
    }
  });
  const pyRead = session.addItems({
    op: 'deserialize',
    ...pythonValidStore(wire),
    items: nodeSigned.map((p) => (typeof p === 'string' ? p : 'bm90IGEgcGF5bG9hZA==')),
  });
  const pySigned = session.addItems({ op: 'serialize', key: pemText(KEY), cert: pemText(CERT), items: CASES.map((c) => dv(c.value)) });

  test(`${wire.label}: Node-serialized values decode in Celery to the Python values they stand for`, async (t) => {
    const items = await pyRead();
    for (const [i, c] of CASES.entries()) {
      const made = nodeSigned[i]!;
      t.is(typeof made, 'string', `${c.name}: Node could not serialize: ${String(made)}`);
      const item = items[i]!;
      t.true(item.ok, `${c.name}: ${item.error}`);
      if (!item.ok) continue;
      t.is(item.python_type, c.pyType, c.name);
      t.is(canonicalOf(item), canonical(c.value), c.name);
    }
  });

  test(`${wire.label}: Celery-serialized values decode in Node to the documented JavaScript types`, async (t) => {
    const items = await pySigned();
    for (const [i, c] of CASES.entries()) {
      const item = items[i]!;
      t.true(item.ok, `${c.name}: Celery could not serialize: ${item.error}`);
      if (!item.ok) continue;
      let got: unknown;
      t.notThrows(() => {
        got = nodeReader.deserialize(item.payload as string);
      }, c.name);
      t.is(canonical(got), canonical(expectedInNode(c, wire)), c.name);
      if (c.nodeType && !c.nodeExpect) t.true(c.nodeType(got), `${c.name}: got ${String(got)}`);
    }
  });
}

test('the task message decodes in Node to the documented classes, deep inside', async (t) => {
  const c = CASES.at(-1)!;
  const writer = new SecureSerializer({ key: new PrivateKey(pemText(KEY)), cert: new Certificate(pemText(CERT)) });
  const v = nodeReader.deserialize(writer.serialize(c.value)) as {
    id: unknown;
    eta: unknown;
    args: unknown[];
    kwargs: { nested: { deep: unknown[] }[]; big: unknown };
  };
  t.true(v.id instanceof PyUUID);
  t.true(v.eta instanceof Date);
  t.true(v.args[0] instanceof PyDecimal);
  t.true(v.args[1] instanceof PyDate);
  t.true(v.args[2] instanceof PyTime);
  t.true(v.args[3] instanceof Uint8Array);
  t.true(v.kwargs.nested[0]!.deep[0] instanceof PyDateTime);
  t.is(v.kwargs.big, 10n ** 30n);
});
