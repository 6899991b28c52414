/**
 * src/registry.ts against kombu's SerializerRegistry (test/py/kombu_oracle.py):
 * the same steps run on a fresh kombu registry and on ours must give the same
 * value or the same kind of error, and leave the same state. Then the
 * deliberate differences: pickle and YAML are never decodable.
 */
import test from 'ava';
import { join } from 'node:path';

import { ImproperlyConfigured, SecurityError } from '../src/errors.js';
import { dumps as jsonDumps, loads as jsonLoads } from '../src/json/index.js';
import {
  disableInsecureSerializers,
  disableUntrustedSerializers,
  enableInsecureSerializers,
  INSECURE_CONTENT_TYPES,
  registry,
  SerializerRegistry,
  SKIP_DECODE,
  TRUSTED_CONTENT,
} from '../src/registry.js';
import { ROOT, runPython } from './helpers/python.js';

const ORACLE = join(ROOT, 'test', 'py', 'kombu_oracle.py');

type Desc = [string, ...unknown[]];
type Step = unknown[];

interface State {
  disabled: string[];
  name_to_type: [string, string][];
  type_to_name: [string, string][];
  encoders: string[];
  decoders: string[];
}
interface Outcome {
  value?: unknown;
  error?: string;
  message?: string;
  state: State;
}

const str = (s: string): Desc => ['str', s];
const bytes = (b: Uint8Array | readonly number[] | string): Desc => [
  'bytes',
  (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b)).toString('base64'),
];
const json = (v: unknown): Desc => bytes(jsonDumps(v));

function build(d: Desc): unknown {
  switch (d[0]) {
    case 'str':
      return d[1];
    case 'bytes':
      return Buffer.from(d[1] as string, 'base64');
    case 'none':
      return null;
    case 'dict': {
      const o: Record<string, unknown> = {};
      for (const [k, v] of d[1] as [Desc, Desc][]) o[build(k) as string] = build(v);
      return o;
    }
    case 'list':
      return (d[1] as Desc[]).map(build);
    case 'int':
      return Number(d[1]);
    case 'bool':
      return d[1];
    default:
      throw new Error(`test cannot build ${d[0]}`);
  }
}

/** A fresh registry set up as the oracle sets kombu's up: json registered and the default. */
function fresh(defaults = true): SerializerRegistry {
  const r = new SerializerRegistry();
  if (defaults) {
    r.register('json', jsonDumps, jsonLoads, 'application/json', 'utf-8');
    r.setDefault('json');
  }
  return r;
}

function errorKind(err: unknown): string {
  if (err instanceof SecurityError && err.code === 'ERR_CONTENT_DISALLOWED') return 'ContentDisallowed';
  if (err instanceof SecurityError && err.code === 'ERR_DECODE') return 'DecodeError';
  if (err instanceof ImproperlyConfigured) return 'NotInstalled';
  return `unexpected ${String(err)}`;
}

/** kombu's SerializerNotInstalled and the KeyError of enable/disable are both "not installed" here. */
function kombuKind(kind: string): string {
  return kind === 'SerializerNotInstalled' || kind === 'KeyError' ? 'NotInstalled' : kind;
}

function describeValue(v: unknown): Desc {
  if (v === null || v === undefined) return ['none'];
  if (typeof v === 'string') return str(v);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return bytes(v);
  if (typeof v === 'boolean') return ['bool', v];
  if (typeof v === 'number' && Number.isInteger(v)) return ['int', String(v)];
  if (Array.isArray(v)) return ['list', v.map(describeValue)];
  if (typeof v === 'object') return ['dict', Object.entries(v).map(([k, x]) => [str(k), describeValue(x)])];
  throw new Error(`test cannot describe ${String(v)}`);
}

function runStep(r: SerializerRegistry, step: Step): unknown {
  const [kind] = step;
  switch (kind) {
    case 'register': {
      const [, name, ctype, enc, withEnc, withDec] = step as [string, string, string, string, boolean, boolean];
      r.register(name, withEnc ? jsonDumps : null, withDec ? jsonLoads : null, ctype, enc);
      return null;
    }
    case 'unregister':
      r.unregister(step[1] as string);
      return null;
    case 'enable':
      r.enable(step[1] as string);
      return null;
    case 'disable':
      r.disable(step[1] as string);
      return null;
    case 'set_default':
      r.setDefault(step[1] as string);
      return null;
    case 'disable_insecure':
      disableInsecureSerializers(step[1] as string[] | null, r);
      return null;
    case 'dumps': {
      const [, data, ser] = step as [Desc, Desc, string | null];
      const m = r.dumps(build(data), ser);
      return [m.contentType, m.contentEncoding, bytes(m.body)];
    }
    case 'loads': {
      const [, data, ct, ce, accept, force] = step as [string, Desc, string | null, string | null, string[] | null, boolean];
      return describeValue(r.loads(build(data) as Uint8Array | string, ct, ce, { accept, force }));
    }
    default:
      throw new Error(`unknown step ${String(kind)}`);
  }
}

function ourState(r: SerializerRegistry): State {
  return {
    disabled: [...r.disabledContentTypes].sort(),
    name_to_type: [...r.nameToType].sort(),
    type_to_name: [...r.typeToName].sort(),
    encoders: [...r.encoders.keys()].sort(),
    decoders: [...r.decoders.keys()].sort(),
  };
}

/** Python's dumps returns str bodies; ours are always bytes (UTF-8). */
function normaliseBody(v: unknown): unknown {
  if (Array.isArray(v) && v.length === 3 && Array.isArray(v[2]) && (v[2] as Desc)[0] === 'str') {
    return [v[0], v[1], bytes(Buffer.from((v[2] as Desc)[1] as string, 'utf8'))];
  }
  return v;
}

interface Case {
  name: string;
  steps: Step[];
  defaults?: boolean;
}

const ld = (data: Desc, ct: string | null, ce: string | null, accept: string[] | null = null, force = false): Step => [
  'loads',
  data,
  ct,
  ce,
  accept,
  force,
];

const CASES: Case[] = [
  // dumps
  { name: 'dumps str, no serializer: text/plain', steps: [['dumps', str('héllo'), null]] },
  { name: 'dumps str, empty serializer name', steps: [['dumps', str('x'), '']] },
  { name: 'dumps bytes, no serializer: application/data binary', steps: [['dumps', bytes([0xff, 0, 1]), null]] },
  { name: 'dumps str, raw', steps: [['dumps', str('héllo'), 'raw']] },
  { name: 'dumps bytes, raw', steps: [['dumps', bytes('abc'), 'raw']] },
  { name: 'dumps dict, default json', steps: [['dumps', ['dict', [[str('a'), ['int', '1']]]], null]] },
  { name: 'dumps dict, json', steps: [['dumps', ['list', [str('é'), ['none']]], 'json']] },
  { name: 'dumps str, json', steps: [['dumps', str('héllo'), 'json']] },
  { name: 'dumps bytes, json', steps: [['dumps', bytes([0xff]), 'json']] },
  { name: 'dumps, unknown serializer', steps: [['dumps', str('x'), 'nope']] },
  { name: 'dumps, decoder-only serializer', steps: [['register', 'dec', 'application/x-dec', 'utf-8', false, true], ['dumps', ['none'], 'dec']] },
  {
    name: 'dumps with a new default',
    steps: [['register', 'x', 'application/x-x', 'latin-1', true, false], ['set_default', 'x'], ['dumps', ['list', []], null]],
  },
  { name: 'set_default, unknown', steps: [['set_default', 'nope']] },
  { name: 'set_default, decoder only', steps: [['register', 'dec', 'application/x-dec', 'utf-8', false, true], ['set_default', 'dec']] },
  { name: 'the default outlives unregister', steps: [['unregister', 'json'], ['dumps', ['list', []], null]] },
  { name: 'no default at all', defaults: false, steps: [['dumps', ['list', []], null]] },
  // loads: the basics
  { name: 'loads json bytes', steps: [ld(json({ a: [1, 'é'] }), 'application/json', 'utf-8')] },
  { name: 'loads json str', steps: [ld(str('{"a": 1}'), 'application/json', 'utf-8')] },
  { name: 'loads invalid json', steps: [ld(bytes('{"a": '), 'application/json', 'utf-8')] },
  { name: 'loads json with an unknown marker', steps: [ld(bytes('{"__type__": "x", "__value__": 1}'), 'application/json', 'utf-8')] },
  { name: 'loads json, invalid utf-8', steps: [ld(bytes([0x22, 0xff, 0x22]), 'application/json', 'utf-8')] },
  { name: 'loads empty bytes', steps: [ld(bytes(''), 'application/json', 'utf-8')] },
  { name: 'loads empty str', steps: [ld(str(''), 'application/json', 'utf-8')] },
  // accept lists
  { name: 'accept by name', steps: [ld(json([1]), 'application/json', 'utf-8', ['json'])] },
  { name: 'accept by content type', steps: [ld(json([1]), 'application/json', 'utf-8', ['application/json'])] },
  { name: 'accept refuses', steps: [ld(json([1]), 'application/json', 'utf-8', [])] },
  { name: 'accept refuses other type', steps: [ld(json([1]), 'application/json', 'utf-8', ['application/x-other'])] },
  { name: 'accept with an unknown name', steps: [ld(json([1]), 'application/json', 'utf-8', ['nope'])] },
  { name: 'accept, trusted application/data binary', steps: [ld(bytes([0xff, 1]), 'application/data', 'binary', [])] },
  { name: 'accept, trusted application/data utf-8', steps: [ld(bytes('héllo'), 'application/data', 'utf-8', [])] },
  { name: 'accept, trusted application/text', steps: [ld(bytes('héllo'), 'application/text', 'utf-8', [])] },
  { name: 'no content type means application/data', steps: [ld(bytes('x'), null, null, [])] },
  { name: 'empty content type means application/data', steps: [ld(bytes('x'), '', 'binary', [])] },
  { name: 'accept overrides disabled', steps: [['disable', 'json'], ld(json([1]), 'application/json', 'utf-8', ['json'])] },
  { name: 'accept ignores force', steps: [ld(json([1]), 'application/json', 'utf-8', [], true)] },
  // disable / enable / force
  { name: 'disabled by name', steps: [['disable', 'json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'disabled by content type', steps: [['disable', 'application/json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'disabled, forced', steps: [['disable', 'json'], ld(json([1]), 'application/json', 'utf-8', null, true)] },
  { name: 'disabled, empty data', steps: [['disable', 'json'], ld(bytes(''), 'application/json', 'utf-8')] },
  { name: 'disable then enable', steps: [['disable', 'json'], ['enable', 'json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'enable by content type', steps: [['disable', 'json'], ['enable', 'application/json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'disable an unknown name', steps: [['disable', 'nope']] },
  { name: 'enable an unknown name', steps: [['enable', 'nope']] },
  { name: 'disable an unknown content type', steps: [['disable', 'application/x-nope'], ld(bytes('x'), 'application/x-nope', 'utf-8')] },
  { name: 'trusted content can be disabled when no accept', steps: [['disable', 'application/data'], ld(bytes('x'), 'application/data', 'binary')] },
  // no decoder: decode to text per content encoding
  { name: 'text/plain utf-8', steps: [ld(bytes('héllo'), 'text/plain', 'utf-8')] },
  { name: 'text/plain, no encoding', steps: [ld(bytes('héllo'), 'text/plain', null)] },
  { name: 'text/plain UTF-8 upper case', steps: [ld(bytes('héllo'), 'text/plain', 'UTF-8')] },
  { name: 'text/plain utf8', steps: [ld(bytes('héllo'), 'text/plain', 'utf8')] },
  { name: 'text/plain utf-8 BOM kept', steps: [ld(bytes('\ufeffx'), 'text/plain', 'utf-8')] },
  { name: 'text/plain utf-8-sig', steps: [ld(bytes('\ufeffx'), 'text/plain', 'utf-8-sig')] },
  { name: 'text/plain invalid utf-8', steps: [ld(bytes([0x61, 0xff]), 'text/plain', 'utf-8')] },
  { name: 'text/plain surrogate in utf-8', steps: [ld(bytes([0xed, 0xa0, 0x80]), 'text/plain', 'utf-8')] },
  { name: 'text/plain latin-1', steps: [ld(bytes([0x61, 0xe9, 0xff, 0x80]), 'text/plain', 'latin-1')] },
  { name: 'text/plain iso-8859-1', steps: [ld(bytes([0xe9]), 'text/plain', 'iso-8859-1')] },
  { name: 'text/plain ascii ok', steps: [ld(bytes('abc'), 'text/plain', 'ascii')] },
  { name: 'text/plain ascii refuses', steps: [ld(bytes([0x61, 0xe9]), 'text/plain', 'us-ascii')] },
  { name: 'text/plain utf-16 BOM LE', steps: [ld(bytes([0xff, 0xfe, 0x61, 0]), 'text/plain', 'utf-16')] },
  { name: 'text/plain utf-16 BOM BE', steps: [ld(bytes([0xfe, 0xff, 0, 0x61]), 'text/plain', 'utf-16')] },
  { name: 'text/plain utf-16-le', steps: [ld(bytes([0x61, 0, 0x3d, 0xd8, 0, 0xde]), 'text/plain', 'utf-16-le')] },
  { name: 'text/plain utf-16-be odd length', steps: [ld(bytes([0, 0x61, 0]), 'text/plain', 'utf-16-be')] },
  { name: 'text/plain unknown encoding', steps: [ld(bytes('x'), 'text/plain', 'x-unknown')] },
  { name: 'binary is not decoded', steps: [ld(bytes([0xff, 0]), 'application/x-thing', 'binary')] },
  { name: 'ascii-8bit is not decoded', steps: [ld(bytes([0xff, 0]), 'application/x-thing', 'ASCII-8BIT')] },
  { name: 'a str body with no decoder stays', steps: [ld(str('héllo'), 'text/plain', 'latin-1')] },
  { name: 'content type is matched exactly', steps: [ld(json([1]), 'Application/JSON', 'utf-8')] },
  // register / unregister
  {
    name: 'register a second serializer for a type',
    steps: [['register', 'json2', 'application/json', 'utf-8', true, true], ['dumps', ['list', []], 'json2'], ld(json([2]), 'application/json', 'utf-8', ['json2'])],
  },
  { name: 'register encoder only', steps: [['register', 'enc', 'application/x-enc', 'binary', true, false], ld(bytes('x'), 'application/x-enc', 'binary')] },
  { name: 'register keeps an earlier encoder', steps: [['register', 'json', 'application/json', 'utf-8', false, false], ['dumps', ['list', []], 'json']] },
  { name: 'unregister json', steps: [['unregister', 'json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'unregister keeps the disabled set', steps: [['disable', 'json'], ['unregister', 'json'], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'unregister unknown', steps: [['unregister', 'nope']] },
  // disable_insecure_serializers
  {
    name: 'disable_insecure default',
    steps: [['register', 'x', 'application/x-x', 'utf-8', true, true], ['disable_insecure', ['json']], ld(bytes('[1]'), 'application/x-x', 'utf-8')],
  },
  {
    name: 'disable_insecure keeps json',
    steps: [['register', 'x', 'application/x-x', 'utf-8', true, true], ['disable_insecure', ['json']], ld(json([1]), 'application/json', 'utf-8')],
  },
  { name: 'disable_insecure None disables all', steps: [['disable_insecure', null], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'disable_insecure None, forced', steps: [['disable_insecure', null], ld(json([1]), 'application/json', 'utf-8', null, true)] },
  { name: 'disable_insecure with a content type', steps: [['disable_insecure', ['application/json']], ld(json([1]), 'application/json', 'utf-8')] },
  { name: 'disable_insecure with an unknown name', steps: [['disable_insecure', ['json', 'nope']]] },
  {
    name: 'disable_insecure leaves types without a decoder',
    steps: [['register', 'enc', 'application/x-enc', 'utf-8', true, false], ['disable_insecure', []], ld(bytes('x'), 'application/x-enc', 'utf-8')],
  },
];

test('every registry semantic matches kombu step for step', (t) => {
  const theirs = runPython<{ results: Outcome[] }>(ORACLE, { op: 'registry', cases: CASES }).results;
  t.is(theirs.length, CASES.length);
  for (let i = 0; i < CASES.length; i++) {
    const c = CASES[i] as Case;
    const want = theirs[i] as Outcome;
    const r = fresh(c.defaults ?? true);
    let got: { value?: unknown; error?: string; message?: string };
    try {
      let value: unknown = null;
      for (const step of c.steps) value = runStep(r, step);
      got = { value };
    } catch (err) {
      got = { error: errorKind(err), message: (err as Error).message };
    }
    if (want.error !== undefined) {
      // kombu's "no default" is a TypeError from calling None: ours says so.
      const expected = c.defaults === false ? 'NotInstalled' : kombuKind(want.error);
      t.is(got.error, expected, `${c.name}: kombu raises ${want.error}: ${want.message}`);
      if (want.error === 'ContentDisallowed') t.is(got.message, want.message, `${c.name}: message`);
    } else {
      t.is(got.error, undefined, `${c.name}: kombu gives ${JSON.stringify(want.value)} but we threw ${got.message}`);
      t.deepEqual(got.value, normaliseBody(want.value), c.name);
    }
    t.deepEqual(ourState(r), want.state, `${c.name}: state`);
  }
});

test('the module registry is set up as kombu\'s', (t) => {
  const theirs = runPython<{ results: { disabled: string[]; name_to_type: [string, string][]; default: [string, string] } }>(ORACLE, {
    op: 'module_state',
  }).results;
  t.is(registry.defaultSerializer, 'json');
  const m = registry.dumps({ a: 1 });
  t.deepEqual([m.contentType, m.contentEncoding], theirs.default);
  t.is(m.body.toString(), '{"a": 1}');
  // Every name and disabled type we know, kombu knows the same way (kombu also has msgpack).
  const theirNames = new Map(theirs.name_to_type);
  for (const [name, type] of registry.nameToType) t.is(theirNames.get(name), type, name);
  for (const type of registry.disabledContentTypes) t.true(theirs.disabled.includes(type), type);
  t.deepEqual([...registry.disabledContentTypes].sort(), ['application/x-python-serialize', 'application/x-yaml']);
  t.deepEqual([...registry.decoders.keys()], ['application/json']);
  t.deepEqual(registry.loads(Buffer.from('{"a": [1, 2.5]}'), 'application/json', 'utf-8'), { a: [1, 2.5] });
  t.deepEqual(registry.loads(Buffer.from('[1]'), 'application/json', 'utf-8', { accept: ['json'] }), [1]);
});

// --- the required differences from kombu: pickle and YAML ----------------------

const INSECURE_VARIANTS = [
  'application/x-python-serialize',
  'application/x-yaml',
  'application/yaml',
  'text/yaml',
  'text/x-yaml',
  'APPLICATION/X-PYTHON-SERIALIZE',
  'application/x-yaml; charset=utf-8',
  ' application/x-python-serialize ',
];

test('no decoder can be registered for pickle or YAML', (t) => {
  const r = fresh();
  for (const ct of INSECURE_VARIANTS) {
    const err = t.throws(() => r.register('evil', jsonDumps, jsonLoads, ct), { instanceOf: SecurityError });
    t.is(err?.code, 'ERR_CONTENT_DISALLOWED');
  }
  for (const name of ['pickle', 'yaml', 'PICKLE']) {
    t.throws(() => r.register(name, null, jsonLoads, 'application/x-innocent'), { instanceOf: SecurityError });
  }
  t.false(r.decoders.has('application/x-python-serialize'));
  t.false(r.nameToType.has('evil'));
  // An encoder alone, or just the name, is allowed (kombu registers pickle by name too).
  r.register('pickle', null, null, 'application/x-python-serialize', 'binary');
  r.register('yaml', () => 'a: 1', null, 'application/x-yaml');
  t.is(r.nameToType.get('pickle'), 'application/x-python-serialize');
  t.is(r.dumps(null, 'yaml').contentType, 'application/x-yaml');
  t.true(INSECURE_CONTENT_TYPES.has('application/x-python-serialize'));
});

test('pickle and YAML are refused by loads whatever accept, enable or force say', (t) => {
  const r = fresh();
  r.register('pickle', null, null, 'application/x-python-serialize', 'binary');
  r.register('yaml', null, null, 'application/x-yaml', 'utf-8');
  r.enable('pickle');
  r.enable('yaml');
  const pickleBody = Buffer.from('80049505000000000000004b2a2e', 'hex'); // pickle.dumps(42)
  const attempts: [string, { accept?: string[] | null; force?: boolean }][] = [];
  for (const ct of INSECURE_VARIANTS) {
    attempts.push([ct, {}], [ct, { force: true }], [ct, { accept: [ct.trim()] }], [ct, { accept: ['pickle', 'yaml'] }]);
  }
  for (const [ct, opts] of attempts) {
    for (const data of [pickleBody, 'a: 1', new Uint8Array(0), '']) {
      const err = t.throws(() => r.loads(data, ct, 'binary', opts), { instanceOf: SecurityError }, `${ct} ${JSON.stringify(opts)}`);
      t.is(err?.code, 'ERR_CONTENT_DISALLOWED');
      t.notRegex(err?.message ?? '', /a: 1|\u0080/);
    }
  }
  // the module registry too, even after enableInsecureSerializers
  enableInsecureSerializers(['pickle', 'yaml', 'msgpack'], r);
  enableInsecureSerializers(undefined, r);
  t.throws(() => registry.loads(pickleBody, 'application/x-python-serialize', 'binary', { force: true }), { instanceOf: SecurityError });
  t.throws(() => registry.loads('a: 1', 'application/x-yaml', 'utf-8', { accept: ['yaml'] }), { instanceOf: SecurityError });
  const err = t.throws(() => registry.loads(pickleBody, 'application/x-python-serialize', 'binary'), { instanceOf: SecurityError });
  t.is(err?.message, 'Refusing to deserialize insecure content of type pickle (application/x-python-serialize)');
});

// --- the rest of the API ------------------------------------------------------

test('refusals and decode errors carry the codes and no payload', (t) => {
  const r = fresh();
  const secret = Buffer.from('{"password": "hunter2", ');
  const dec = t.throws(() => r.loads(secret, 'application/json', 'utf-8'), { instanceOf: SecurityError });
  t.is(dec?.code, 'ERR_DECODE');
  t.is(dec?.message, 'Unable to decode content of type application/json');
  t.true(dec?.cause instanceof SyntaxError);
  const text = t.throws(() => r.loads(Buffer.from([0x68, 0x75, 0xff]), 'text/plain', 'utf-8'), { instanceOf: SecurityError });
  t.is(text?.code, 'ERR_DECODE');
  t.notRegex(text?.message ?? '', /hu/);
  const refused = t.throws(() => r.loads(secret, 'application/x-\u0000evil' + 'x'.repeat(500), 'utf-8', { accept: ['json'] }), {
    instanceOf: SecurityError,
  });
  t.is(refused?.code, 'ERR_CONTENT_DISALLOWED');
  t.false(refused?.message.includes('\u0000'));
  t.true((refused?.message.length ?? 0) < 300);
  t.false(refused?.message.includes('hunter2'));
  // A SecurityError from a decoder (say, a bad signature in `auth`) passes through.
  r.register('auth', null, () => {
    throw new SecurityError('ERR_BAD_SIGNATURE', 'bad signature');
  }, 'application/data');
  const bad = t.throws(() => r.loads(Buffer.from('x'), 'application/data', 'utf-8'), { instanceOf: SecurityError });
  t.is(bad?.code, 'ERR_BAD_SIGNATURE');
  // unknown names are ImproperlyConfigured (kombu's SerializerNotInstalled)
  t.throws(() => r.dumps(1, 'nope'), { instanceOf: ImproperlyConfigured });
  t.throws(() => r.unregister('nope'), { instanceOf: ImproperlyConfigured });
  t.throws(() => r.enable('nope'), { instanceOf: ImproperlyConfigured });
  t.throws(() => r.setDefault('nope'), { instanceOf: ImproperlyConfigured });
  t.throws(() => r.prepareAccept(['json', 'nope']), { instanceOf: ImproperlyConfigured });
  // An encoder's own error passes through.
  const cyclic: unknown[] = [];
  cyclic.push(cyclic);
  t.throws(() => r.dumps(cyclic, 'json'), { instanceOf: TypeError, message: /Circular/ });
});

test('dumps always gives a Buffer body; raw takes only text or bytes', (t) => {
  const r = fresh();
  r.register('bin', () => new Uint8Array([1, 2, 3]), null, 'application/x-bin', 'binary');
  const m = r.dumps('ignored', 'bin');
  t.true(Buffer.isBuffer(m.body));
  t.deepEqual([...m.body], [1, 2, 3]);
  const u = new Uint8Array([9, 8, 7, 6]).subarray(1, 3);
  const raw = r.dumps(u, 'raw');
  t.true(Buffer.isBuffer(raw.body));
  t.deepEqual([...raw.body], [8, 7]);
  t.throws(() => r.dumps({ a: 1 }, 'raw'), { instanceOf: TypeError });
  const buf = Buffer.from('x');
  t.is(r.dumps(buf).body, buf);
});

test('accept takes any iterable of names and content types; content type may be bytes', (t) => {
  const r = fresh();
  const body = Buffer.from('[1]');
  t.deepEqual(r.loads(body, 'application/json', 'utf-8', { accept: new Set(['json']) }), [1]);
  function* names(): Generator<string> {
    yield 'application/json';
  }
  t.deepEqual(r.loads(body, 'application/json', 'utf-8', { accept: names() }), [1]);
  t.deepEqual(r.loads(body, Buffer.from('application/json'), 'utf-8'), [1]);
  t.deepEqual(r.prepareAccept(['json', 'application/x-other']), new Set(['application/json', 'application/x-other']));
  t.true(TRUSTED_CONTENT.has('application/data') && TRUSTED_CONTENT.has('application/text'));
  t.true(SKIP_DECODE.has('binary') && SKIP_DECODE.has('ascii-8bit'));
  // application/data comes back as the very bytes given
  const data = new Uint8Array([0xff]);
  t.is(r.loads(data, 'application/data', 'binary', { accept: [] }), data);
});

test('setDefault, defaultSerializer and the lookups', (t) => {
  const r = new SerializerRegistry();
  t.is(r.defaultSerializer, null);
  t.throws(() => r.dumps([1]), { instanceOf: ImproperlyConfigured });
  t.deepEqual(r.dumps('text').contentType, 'text/plain');
  r.register('json', jsonDumps, jsonLoads, 'application/json');
  t.is(r.encoders.get('json')?.contentEncoding, 'utf-8');
  r.setDefault('json');
  t.is(r.defaultSerializer, 'json');
  t.is(r.nameToType.get('json'), 'application/json');
  t.is(r.typeToName.get('application/json'), 'json');
  r.register('upper', (d) => String(d).toUpperCase(), (d) => String(d).toLowerCase(), 'text/x-upper', 'utf-8');
  r.setDefault('upper');
  t.deepEqual(r.dumps(['a']), { contentType: 'text/x-upper', contentEncoding: 'utf-8', body: Buffer.from('A') });
  t.is(r.loads('ABC', 'text/x-upper', 'utf-8'), 'abc');
  r.unregister('upper');
  t.false(r.nameToType.has('upper'));
  t.false(r.typeToName.has('text/x-upper'));
  t.is(r.defaultSerializer, 'upper'); // kombu keeps the captured default
  t.throws(() => r.register('', jsonDumps, null, 'a/b'), { instanceOf: TypeError });
  t.throws(() => r.register('x', jsonDumps, null, ''), { instanceOf: TypeError });
});

test('disableInsecureSerializers and its public alias', (t) => {
  t.is(disableUntrustedSerializers, disableInsecureSerializers);
  const r = fresh();
  r.register('x', jsonDumps, jsonLoads, 'application/x-x');
  disableUntrustedSerializers(undefined, r);
  t.deepEqual([...r.disabledContentTypes], ['application/x-x']);
  disableUntrustedSerializers(null, r);
  t.deepEqual([...r.disabledContentTypes].sort(), ['application/json', 'application/x-x']);
  disableUntrustedSerializers(['x'], r);
  t.deepEqual([...r.disabledContentTypes], ['application/json']);
  t.throws(() => disableUntrustedSerializers(['nope'], r), { instanceOf: ImproperlyConfigured });
  // the module registry by default, restored afterwards
  const before = [...registry.disabledContentTypes];
  try {
    disableUntrustedSerializers(null);
    t.true(registry.disabledContentTypes.has('application/json'));
    t.throws(() => registry.loads(Buffer.from('[1]'), 'application/json', 'utf-8'), { instanceOf: SecurityError });
    disableUntrustedSerializers();
    t.deepEqual(registry.loads(Buffer.from('[1]'), 'application/json', 'utf-8'), [1]);
  } finally {
    for (const ct of [...registry.disabledContentTypes]) registry.enable(ct);
    for (const ct of before) registry.disable(ct);
  }
  t.deepEqual([...registry.disabledContentTypes].sort(), [...before].sort());
});
