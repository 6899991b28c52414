/**
 * src/json/ against real kombu (test/py/kombu_oracle.py), both directions:
 * our `dumps` must write kombu's bytes exactly and kombu must read them back
 * to the same Python value; our `loads` must read what kombu writes to the
 * value kombu itself reads. A missing Python is a failure, never a skip.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { join } from 'node:path';

import { dumps, loads, PyDate, PyDateTime, PyDecimal, PyFloat, PyTime, PyUUID } from '../src/json/index.js';
import { ROOT, runPython } from './helpers/python.js';

const ORACLE = join(ROOT, 'test', 'py', 'kombu_oracle.py');

// --- descriptions of Python values (see kombu_oracle.py) ---------------------

type Desc = [string, ...unknown[]];

interface DumpsResult {
  text?: string;
  loaded?: Desc;
  error?: string;
}
interface CheckResult {
  same?: boolean;
  got?: Desc;
  error?: string;
}
interface LoadsResult {
  value?: Desc;
  error?: string;
}
interface ParseResult {
  value?: string;
  error?: string;
}

function oracle<T>(request: Record<string, unknown>): T[] {
  return runPython<{ results: T[] }>(ORACLE, request).results;
}

function hexBits(x: number): string {
  const v = new DataView(new ArrayBuffer(8));
  v.setFloat64(0, x);
  return v.getBigUint64(0).toString(16).padStart(16, '0');
}

function fromBits(hex: string): number {
  const v = new DataView(new ArrayBuffer(8));
  v.setBigUint64(0, BigInt('0x' + hex));
  return v.getFloat64(0);
}

function intDesc(n: number | bigint): Desc {
  return ['int', BigInt(n).toString()];
}

/** The Python value a JavaScript value stands for, as src/json/index.ts documents it. */
function toDesc(v: unknown): Desc {
  if (v === null || v === undefined) return ['none'];
  if (typeof v === 'boolean') return ['bool', v];
  if (typeof v === 'number') return Number.isInteger(v) ? intDesc(v) : ['float', hexBits(v)];
  if (typeof v === 'bigint') return intDesc(v);
  if (typeof v === 'string') return ['str', v];
  if (v instanceof PyFloat) return ['float', hexBits(v.value)];
  if (v instanceof Date) return ['datetime_ms', v.getTime()];
  if (v instanceof Uint8Array) return ['bytes', Buffer.from(v).toString('base64')];
  if (v instanceof PyDecimal) return ['decimal', v.value];
  if (v instanceof PyUUID) return ['uuid', v.hex];
  if (v instanceof PyDateTime) return ['datetime', v.value];
  if (v instanceof PyDate) return ['date', v.value];
  if (v instanceof PyTime) return ['time', v.value];
  if (Array.isArray(v)) return ['list', v.map(toDesc)];
  if (v instanceof Set) return ['list', [...v].map(toDesc)];
  if (v instanceof Map) {
    const pairs: unknown[] = [];
    for (const [k, x] of v) if (x !== undefined) pairs.push([keyDesc(k), toDesc(x)]);
    return ['dict', pairs];
  }
  const toJSON = (v as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') return toDesc((toJSON as () => unknown).call(v));
  const pairs: unknown[] = [];
  for (const [k, x] of Object.entries(v as object)) if (x !== undefined) pairs.push([['str', k], toDesc(x)]);
  return ['dict', pairs];
}

function keyDesc(k: unknown): Desc {
  if (k instanceof PyFloat) return ['float', hexBits(k.value)];
  return toDesc(k);
}

/** Checks that our loads result is the JavaScript form of a described Python value; returns the first mismatch. */
function mismatch(js: unknown, d: Desc, path = '$'): string | null {
  const [tag, a, b] = d;
  const bad = (what: string): string => `${path}: expected ${what}, got ${describe(js)}`;
  switch (tag) {
    case 'none':
      return js === null ? null : bad('null');
    case 'bool':
      return js === a ? null : bad(String(a));
    case 'int': {
      const n = BigInt(a as string);
      const safe = n >= -(2n ** 53n - 1n) && n <= 2n ** 53n - 1n;
      if (safe) return typeof js === 'number' && BigInt(js) === n ? null : bad(`number ${n}`);
      return typeof js === 'bigint' && js === n ? null : bad(`bigint ${n}`);
    }
    case 'float': {
      const x = fromBits(a as string);
      if (typeof js !== 'number') return bad(`float ${x}`);
      if (Number.isNaN(x)) return Number.isNaN(js) ? null : bad('NaN');
      return Object.is(js, x) ? null : bad(`float ${x}`);
    }
    case 'str':
      return js === a ? null : bad(JSON.stringify(a));
    case 'list': {
      const items = a as Desc[];
      if (!Array.isArray(js) || js.length !== items.length) return bad(`list of ${items.length}`);
      for (let i = 0; i < items.length; i++) {
        const m = mismatch(js[i], items[i] as Desc, `${path}[${i}]`);
        if (m) return m;
      }
      return null;
    }
    case 'dict': {
      const pairs = a as [Desc, Desc][];
      if (js === null || typeof js !== 'object' || Object.getPrototypeOf(js) !== Object.prototype) return bad('object');
      const rec = js as Record<string, unknown>;
      const keys = new Set(pairs.map(([k]) => k[1] as string));
      if (Object.keys(rec).length !== keys.size) return bad(`${keys.size} keys`);
      for (const [k, x] of pairs) {
        const key = k[1] as string;
        if (!Object.prototype.hasOwnProperty.call(rec, key)) return bad(`key ${JSON.stringify(key)}`);
        const m = mismatch(rec[key], x, `${path}[${JSON.stringify(key)}]`);
        if (m) return m;
      }
      return null;
    }
    case 'bytes':
      return Buffer.isBuffer(js) && js.toString('base64') === a ? null : bad(`bytes ${String(a)}`);
    case 'datetime':
      if (b === null || b === undefined) return js instanceof PyDateTime && js.value === a ? null : bad(`PyDateTime ${String(a)}`);
      return js instanceof Date && js.getTime() === b ? null : bad(`Date ${String(a)} (${String(b)})`);
    case 'date':
      return js instanceof PyDate && js.value === a ? null : bad(`PyDate ${String(a)}`);
    case 'time':
      return js instanceof PyTime && js.value === a ? null : bad(`PyTime ${String(a)}`);
    case 'decimal':
      return js instanceof PyDecimal && js.value === a ? null : bad(`PyDecimal ${String(a)}`);
    case 'uuid':
      return js instanceof PyUUID && js.hex === a ? null : bad(`PyUUID ${String(a)}`);
    default:
      return `${path}: unknown tag ${tag}`;
  }
}

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (v instanceof Date) return `Date(${v.getTime()})`;
  if (v !== null && typeof v === 'object') return `${(v as object).constructor?.name ?? 'Object'} ${safeStringify(v)}`;
  return String(v);
}

/** For messages: ASCII only (ensure_ascii), so that no lone surrogate reaches the reporter. */
function safeStringify(v: unknown): string {
  try {
    return dumps(v).slice(0, 300);
  } catch {
    return '?';
  }
}

/**
 * The heart of the suite: our dumps must equal kombu's dumps byte for byte,
 * and kombu's loads of our text must give back exactly the Python value.
 */
function checkDumps(t: ExecutionContext, values: readonly unknown[], label: (i: number) => string): void {
  const descs = values.map(toDesc);
  const ours = values.map((v) => dumps(v));
  const theirs = oracle<DumpsResult>({ op: 'dumps', values: descs });
  const back = oracle<CheckResult>({ op: 'check_loads', items: ours.map((text, i) => [text, descs[i]]) });
  let failures = 0;
  for (let i = 0; i < values.length; i++) {
    const want = theirs[i];
    if (want?.text !== ours[i]) {
      failures++;
      if (failures <= 10) t.is(ours[i], want?.text ?? want?.error, `dumps differs from kombu: ${label(i)}`);
    }
    const r = back[i];
    if (!r?.same) {
      failures++;
      if (failures <= 10) t.fail(`kombu reads our text back differently: ${label(i)}: ${r?.error ?? safeStringify(r?.got)}`);
    }
  }
  t.is(failures, 0, `${failures} mismatches in ${values.length} values`);
}

/** Our loads of kombu's text must be the JavaScript form of what kombu reads. */
function checkLoadsOfKombu(t: ExecutionContext, descs: readonly Desc[], label: (i: number) => string): void {
  const theirs = oracle<DumpsResult>({ op: 'dumps', values: descs });
  let failures = 0;
  for (let i = 0; i < descs.length; i++) {
    const r = theirs[i];
    if (r?.text === undefined || r.loaded === undefined) {
      failures++;
      t.fail(`kombu could not dump ${label(i)}: ${r?.error}`);
      continue;
    }
    let m: string | null;
    try {
      m = mismatch(loads(r.text), r.loaded);
    } catch (err) {
      m = `threw ${String(err)}`;
    }
    if (m !== null) {
      failures++;
      if (failures <= 10) t.fail(`${label(i)}: ${r.text.slice(0, 300)}: ${safeStringify(m)}`);
    }
  }
  t.is(failures, 0, `${failures} mismatches in ${descs.length} values`);
}

// --- a seeded PRNG and random values ------------------------------------------

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  readonly rnd: () => number;
  constructor(seed: number) {
    this.rnd = prng(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rnd() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)] as T;
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }
  randomDouble(): number {
    const v = new DataView(new ArrayBuffer(8));
    v.setUint32(0, Math.floor(this.rnd() * 2 ** 32));
    v.setUint32(4, Math.floor(this.rnd() * 2 ** 32));
    return v.getFloat64(0);
  }
  niceDouble(): number {
    const x = (this.rnd() - 0.5) * 10 ** this.int(-12, 20);
    return this.chance(0.5) ? x : Number(x.toPrecision(this.int(1, 17)));
  }
  char(): string {
    switch (this.int(0, 9)) {
      case 0:
        return String.fromCharCode(this.int(0, 0x1f));
      case 1:
        return this.pick(['"', '\\', '/', '\x7f', '\u2028', '\ufeff', '\uffff']);
      case 2:
        return String.fromCharCode(this.int(0x80, 0x7ff));
      case 3:
        return String.fromCharCode(this.int(0x800, 0xffff)); // lone surrogates included
      case 4:
        return String.fromCodePoint(this.int(0x10000, 0x10ffff));
      case 5:
        return this.pick(['😀', 'é', 'ß', '中', '\ud800', '\udfff']);
      default:
        return String.fromCharCode(this.int(0x20, 0x7e));
    }
  }
  string(max = 12): string {
    let s = '';
    const n = this.int(0, max);
    for (let i = 0; i < n; i++) s += this.char();
    return s;
  }
  bytes(): Uint8Array {
    if (this.chance(0.5)) return Buffer.from(this.string(8), 'utf8');
    const b = new Uint8Array(this.int(0, 12));
    for (let i = 0; i < b.length; i++) b[i] = this.int(0, 255);
    return b;
  }
  twoDigits(lo: number, hi: number): string {
    return String(this.int(lo, hi)).padStart(2, '0');
  }
  isoDate(): string {
    const y = this.chance(0.2) ? this.pick([1, 99, 999, 1970, 2000, 9999]) : this.int(1, 9999);
    const m = this.int(1, 12);
    const d = this.int(1, 28);
    return `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
  }
  isoOffset(): string {
    const kind = this.int(0, 5);
    if (kind === 0) return '+00:00';
    let s = `${this.pick(['+', '-'])}${this.twoDigits(0, 23)}:${this.twoDigits(0, 59)}`;
    if (kind === 1) s += `:${this.twoDigits(1, 59)}`;
    if (kind === 2) s += `:${this.twoDigits(0, 59)}.${String(this.int(1, 999999)).padStart(6, '0')}`;
    return s === '-00:00' ? '+00:00' : s;
  }
  isoTime(aware: boolean): string {
    let s = `${this.twoDigits(0, 23)}:${this.twoDigits(0, 59)}:${this.twoDigits(0, 59)}`;
    if (this.chance(0.5)) s += '.' + String(this.int(1, 999999)).padStart(6, '0');
    return aware ? s + this.isoOffset() : s;
  }
  date(): Date {
    // years 1..9999 in UTC
    return new Date(this.int(-62135596800000, 253402300799999));
  }
  uuidHex(): string {
    let h = '';
    for (let i = 0; i < 32; i++) h += '0123456789abcdef'[this.int(0, 15)];
    return h;
  }
  decimalLiteral(): string {
    if (this.chance(0.05)) return this.pick(['NaN', '-Infinity', 'Infinity', 'sNaN', '-0', '0E-7']);
    let s = this.pick(['', '-', '+']) + String(this.int(0, 10 ** this.int(0, 9)));
    if (this.chance(0.6)) s += '.' + String(this.int(0, 99999)).padStart(this.int(1, 5), '0');
    if (this.chance(0.3)) s += this.pick(['e', 'E']) + this.pick(['', '-', '+']) + String(this.int(0, 30));
    return s;
  }
  /** A JavaScript value in the documented mapping. */
  js(depth = 0): unknown {
    const leaf = depth >= 3 || this.chance(0.55);
    if (leaf) {
      switch (this.int(0, 17)) {
        case 0:
          return null;
        case 1:
          return this.chance(0.5);
        case 2:
          return this.int(-1000, 1000);
        case 3:
          return this.int(-(2 ** 31), 2 ** 31) * this.int(1, 2 ** 22) * this.pick([1, 2 ** 10, 2 ** 30]);
        case 4:
          return this.randomDouble();
        case 5:
          return this.niceDouble();
        case 6:
          return BigInt(this.int(0, 2 ** 30)) ** BigInt(this.int(1, 5)) * (this.chance(0.5) ? -1n : 1n);
        case 7:
        case 8:
          return this.string();
        case 9:
          return this.date();
        case 10:
          return this.bytes();
        case 11:
          return new PyDecimal(this.decimalLiteral());
        case 12:
          return new PyUUID(this.uuidHex());
        case 13:
          return new PyDate(this.isoDate());
        case 14:
          return new PyTime(this.isoTime(this.chance(0.4)));
        case 15:
          return new PyDateTime(`${this.isoDate()}T${this.isoTime(this.chance(0.5))}`);
        case 16:
          return new PyFloat(this.chance(0.5) ? this.randomDouble() : this.int(-1e6, 1e6) * 10 ** this.int(-3, 25));
        default:
          return this.pick([NaN, Infinity, -Infinity, -0, 0.1, 1e-7, 5e-324]);
      }
    }
    const n = this.int(0, 5);
    switch (this.int(0, 3)) {
      case 0: {
        const a: unknown[] = [];
        for (let i = 0; i < n; i++) a.push(this.chance(0.05) ? undefined : this.js(depth + 1));
        return a;
      }
      case 1: {
        const s = new Set<unknown>();
        for (let i = 0; i < n; i++) s.add(this.js(depth + 1));
        return s;
      }
      case 2: {
        const m = new Map<unknown, unknown>();
        const names = new Set<string>();
        for (let i = 0; i < n; i++) {
          const k = this.pick<unknown>([this.string(5), this.int(-50, 50), this.niceDouble(), true, false, null, 7n]);
          // Keys that are one key in Python (1 and true, 7n and '7') would merge there.
          const name = k === true ? '1' : k === false ? '0' : dumps(k);
          const alias = typeof k === 'string' ? dumps(k) : `"${name}"`;
          if (names.has(name) || names.has(alias)) continue;
          names.add(name).add(alias);
          m.set(k, this.js(depth + 1));
        }
        return m;
      }
      default: {
        const o: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) {
          const k = this.chance(0.2) ? String(this.int(0, 20)) : this.string(6);
          o[k] = this.chance(0.05) ? undefined : this.js(depth + 1);
        }
        return o;
      }
    }
  }
  /** A Python value, described. */
  py(depth = 0): Desc {
    const leaf = depth >= 3 || this.chance(0.55);
    if (leaf) {
      switch (this.int(0, 15)) {
        case 0:
          return ['none'];
        case 1:
          return ['bool', this.chance(0.5)];
        case 2:
          return intDesc(this.int(-1e9, 1e9));
        case 3:
          return intDesc(BigInt(this.int(0, 2 ** 31)) ** BigInt(this.int(1, 6)) * (this.chance(0.3) ? -1n : 1n));
        case 4:
          return ['float', hexBits(this.randomDouble())];
        case 5:
          return ['float', hexBits(this.chance(0.3) ? this.int(-1e6, 1e6) : this.niceDouble())];
        case 6:
        case 7:
          return ['str', this.string()];
        case 8:
          return ['bytes', Buffer.from(this.bytes()).toString('base64')];
        case 9:
          return ['datetime', `${this.isoDate()}T${this.isoTime(false)}`];
        case 10:
          return ['datetime', `${this.isoDate()}T${this.isoTime(true)}`];
        case 11:
          return ['date', this.isoDate()];
        case 12:
          return ['time', this.isoTime(this.chance(0.4))];
        case 13:
          return ['decimal', this.decimalLiteral()];
        case 14:
          return ['uuid', this.uuidHex()];
        default:
          return ['float', hexBits(this.pick([NaN, Infinity, -Infinity, -0, 1, 1e16, 1e22]))];
      }
    }
    const n = this.int(0, 5);
    const items: unknown[] = [];
    if (this.chance(0.5)) {
      for (let i = 0; i < n; i++) items.push(this.py(depth + 1));
      return ['list', items];
    }
    for (let i = 0; i < n; i++) {
      const k: Desc = this.chance(0.8) ? ['str', this.string(6)] : intDesc(this.int(-5, 100));
      items.push([k, this.py(depth + 1)]);
    }
    return ['dict', items];
  }
}

// --- dumps -------------------------------------------------------------------

const CORPUS: [string, unknown][] = [
  ['null', null],
  ['true', true],
  ['false', false],
  ['zero', 0],
  ['negative zero number', -0],
  ['int', 42],
  ['negative int', -7],
  ['max safe', Number.MAX_SAFE_INTEGER],
  ['2^53', 2 ** 53],
  ['2^60 as a number', 2 ** 60],
  ['1e21 as a number', 1e21],
  ['1e300 as a number', 1e300],
  ['bigint', 123456789012345678901234567890n],
  ['negative bigint', -(2n ** 200n)],
  ['0.1', 0.1],
  ['1/3', 1 / 3],
  ['1e-5', 1e-5],
  ['1e-4', 1e-4],
  ['0.00012345', 0.00012345],
  ['9.999999999999999e-5', 9.999999999999999e-5],
  ['1e-7', 1e-7],
  ['5e-324', 5e-324],
  ['-2.5e-300', -2.5e-300],
  ['1234567890123456.7', 1234567890123456.7],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['PyFloat 1', new PyFloat(1)],
  ['PyFloat -0', new PyFloat(-0)],
  ['PyFloat 1e16', new PyFloat(1e16)],
  ['PyFloat 1.5e16', new PyFloat(1.5e16)],
  ['PyFloat 1e15', new PyFloat(1e15)],
  ['PyFloat 2^60', new PyFloat(2 ** 60)],
  ['PyFloat max', new PyFloat(Number.MAX_VALUE)],
  ['empty string', ''],
  ['ascii', 'hello world'],
  ['quotes and slashes', 'a "quoted" \\ back/slash'],
  ['short escapes', '\b\f\n\r\t'],
  ['controls', '\u0000\u0001\u001f\u007f\u0080\u009f'],
  ['latin and bmp', 'héllo wörld — ß 中文 \u2028\u2029 \ufeff \uffff'],
  ['emoji', '😀 👍🏽 🇫🇷'],
  ['lone surrogates', '\ud800 \udfff x\ud83d'],
  ['reversed pair', '\ude00\ud83d'],
  ['empty list', []],
  ['empty object', {}],
  ['nested', { a: [1, { b: null, c: [true, false] }], 'd e': { f: {} }, g: [[[]]] }],
  ['key order', { z: 1, a: 2, m: 3 }],
  ['integer-like keys', { b: 1, 10: 2, 2: 3, a: 4 }],
  ['unicode keys', { 'ключ': 1, '😀': 2, '\n': 3 }],
  ['undefined skipped in objects', { a: undefined, b: 1 }],
  ['undefined in arrays', [undefined, 1]],
  ['Set', new Set([1, 'a', null])],
  // (no 1 with true nor 0 with false: Python's dict would merge them)
  ['Map with Python key types', new Map<unknown, unknown>([['s', 1], [2, 2], [1.5, 3], [true, 4], [false, 5], [null, 6], [7n, 7], [new PyFloat(3), 8], [NaN, 9], [-Infinity, 10]])],
  ['Map skips undefined', new Map<unknown, unknown>([['a', undefined], ['b', 2]])],
  ['toJSON', { toJSON: () => ({ x: 1 }) }],
  ['Date epoch', new Date(0)],
  ['Date with ms', new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 123))],
  ['Date year 1', new Date('0001-01-01T00:00:00.000Z')],
  ['Date year 9999', new Date('9999-12-31T23:59:59.999Z')],
  ['Date before epoch', new Date(-1)],
  ['Date year 50', new Date('0050-06-15T12:00:00.001Z')],
  ['bytes utf-8', Buffer.from('héllo', 'utf8')],
  ['bytes empty', new Uint8Array(0)],
  ['bytes invalid utf-8', new Uint8Array([0xff, 0xfe, 0x00, 0x80])],
  ['bytes BOM', new Uint8Array([0xef, 0xbb, 0xbf, 0x41])],
  ['bytes surrogate encoded', new Uint8Array([0xed, 0xa0, 0x80])],
  ['bytes overlong', new Uint8Array([0xc0, 0xaf])],
  ['bytes controls', new Uint8Array([0, 1, 10, 0x7f])],
  ['bytes subarray', new Uint8Array([0x41, 0x42, 0x43, 0x44]).subarray(1, 3)],
  ['decimal', new PyDecimal('1.10')],
  ['decimal exp', new PyDecimal('1e3')],
  ['decimal small', new PyDecimal('0.0000001')],
  ['decimal neg zero', new PyDecimal('-0')],
  ['decimal NaN', new PyDecimal('NaN')],
  ['decimal number', new PyDecimal(0.1)],
  ['decimal bigint', new PyDecimal(10n ** 30n)],
  ['uuid', new PyUUID('12345678-1234-5678-1234-567812345678')],
  ['uuid upper braces', new PyUUID('{ABCDEF01-2345-6789-ABCD-EF0123456789}')],
  ['date', new PyDate('2024-02-29')],
  ['time', new PyTime('03:04:05')],
  ['time micro', new PyTime('03:04:05.000001')],
  ['time aware', new PyTime('23:59:59.5-05:30')],
  ['datetime naive', new PyDateTime('2024-01-02T03:04:05')],
  ['datetime naive micro', new PyDateTime('2024-01-02T03:04:05.123456')],
  ['datetime aware offset seconds', new PyDateTime('2024-01-02T03:04:05+05:30:15.5')],
  ['datetime Z', new PyDateTime('2024-01-02T03:04:05Z')],
  ['everything at once', { args: [1, 'two', 3.5], kwargs: { when: new Date(1700000000000), id: new PyUUID('00000000-0000-0000-0000-000000000001'), blob: Buffer.from([1, 2, 3]) } }],
];

test('dumps writes exactly what kombu writes, and kombu reads it back (corpus)', (t) => {
  checkDumps(
    t,
    CORPUS.map(([, v]) => v),
    (i) => CORPUS[i]?.[0] ?? String(i),
  );
});

test('dumps: float repr of every magnitude and random bit patterns', (t) => {
  const g = new Gen(1);
  const floats: number[] = [
    0, -0, 1, -1, 0.5, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64, 2 ** 1023, Number.MAX_VALUE, Number.MIN_VALUE,
    2.2250738585072014e-308, 2.225073858507201e-308, 9.999999999999999e-5, 1e-4, 1.0000000000000001e-4,
    9999999999999998, 1e16, 1e17, 123456789012345680, 0.1 + 0.2, 1 / 3, 2 / 3, Math.PI, Math.E,
  ];
  for (let e = -324; e <= 308; e++) {
    for (const m of [1, 1.5, 2.5, 3.14159, 9.999999999999999, 1.2345678901234567]) {
      const x = Number(`${m}e${e}`);
      if (Number.isFinite(x)) floats.push(x, -x);
    }
  }
  for (let i = 0; i < 3000; i++) floats.push(g.randomDouble());
  for (let i = 0; i < 1000; i++) floats.push(g.niceDouble());
  const finite = floats.filter((x) => !Number.isNaN(x));
  // As Python floats (PyFloat) in one list per thousand, and as plain JS numbers.
  const values: unknown[] = [];
  for (let i = 0; i < finite.length; i += 1000) values.push(finite.slice(i, i + 1000).map((x) => new PyFloat(x)));
  for (let i = 0; i < finite.length; i += 1000) values.push(finite.slice(i, i + 1000));
  checkDumps(t, values, (i) => `chunk ${i}`);
  // and PyFloat's toString is Python's repr
  const reprs = oracle<ParseResult>({ op: 'parse', kind: 'float_repr', inputs: finite.map(hexBits) });
  const wrong = finite.filter((x, i) => new PyFloat(x).toString() !== reprs[i]?.value);
  t.deepEqual(wrong.slice(0, 10), [], `${wrong.length} floats whose repr differs`);
});

test('dumps: integers as Python ints, exactly', (t) => {
  const ints: unknown[] = [];
  for (let e = 0; e <= 308; e++) ints.push(10 ** e, -(10 ** e), 2 ** Math.min(e, 1023));
  for (let e = 0; e < 300; e += 7) ints.push(10n ** BigInt(e) + 1n, -(7n ** BigInt(e)));
  ints.push(Number.MAX_SAFE_INTEGER + 1, -Number.MAX_SAFE_INTEGER - 1, 2 ** 64, Number.MAX_VALUE, -Number.MAX_VALUE);
  checkDumps(t, [ints], () => 'integers');
});

test('dumps: every UTF-16 code unit and astral characters are escaped as Python ensure_ascii does', (t) => {
  const units: string[] = [];
  for (let c = 0; c < 0x10000; c++) units.push(String.fromCharCode(c));
  const astral: string[] = [];
  for (let cp = 0x10000; cp <= 0x10ffff; cp += 0x1fff) astral.push(String.fromCodePoint(cp));
  astral.push(String.fromCodePoint(0x10ffff), '\ud83d\ude00\ud83d', '\udc00\ud800');
  checkDumps(t, [units.slice(0, 0x8000), units.slice(0x8000), astral, units.join('')], (i) => `strings ${i}`);
});

test('dumps: random JavaScript values (property)', (t) => {
  const g = new Gen(42);
  const values: unknown[] = [];
  for (let i = 0; i < 400; i++) values.push(g.js());
  checkDumps(t, values, (i) => `random value ${i}: ${safeStringify(toDesc(values[i])).slice(0, 300)}`);
});

test('dumps honours toJSON with its key, as JSON.stringify does', (t) => {
  const keys: string[] = [];
  const v = {
    toJSON(key: string) {
      keys.push(key);
      return 'x';
    },
  };
  t.is(dumps({ a: v, b: [v] }), '{"a": "x", "b": ["x"]}');
  t.deepEqual(keys, ['a', '0']);
  t.is(dumps(v), '"x"');
  // a toJSON returning the object itself does not recurse
  const self = { a: 1, toJSON() { return this; } };
  t.is(dumps(self), '{"a": 1}');
  // a toJSON result that is a Date is a datetime
  t.is(dumps({ toJSON: () => new Date(0) }), '{"__type__": "datetime", "__value__": "1970-01-01T00:00:00+00:00"}');
  // boxed primitives
  t.is(dumps([Object(1.5), Object('s'), Object(true), Object(5n)]), '[1.5, "s", true, 5]');
  t.is(dumps(undefined), 'null');
});

test('dumps refuses what Python cannot serialize', (t) => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  t.throws(() => dumps(cyclic), { instanceOf: TypeError, message: /Circular/ });
  const arr: unknown[] = [];
  arr.push([arr]);
  t.throws(() => dumps(arr), { instanceOf: TypeError, message: /Circular/ });
  const m = new Map<string, unknown>();
  m.set('m', m);
  t.throws(() => dumps(m), { instanceOf: TypeError });
  t.throws(() => dumps(() => 1), { instanceOf: TypeError, message: /not JSON serializable/ });
  t.throws(() => dumps(Symbol('x')), { instanceOf: TypeError });
  // inside containers they are what JSON.stringify makes of them
  t.is(dumps({ f: Symbol('x'), g: () => 1, h: 1 }), '{"h": 1}');
  t.is(dumps([Symbol('x'), () => 1, undefined]), '[null, null, null]');
  t.is(dumps(new Map<string, unknown>([['f', () => 1]])), '{}');
  t.throws(() => dumps(new Uint16Array(2)), { instanceOf: TypeError });
  t.throws(() => dumps(new ArrayBuffer(2)), { instanceOf: TypeError });
  t.throws(() => dumps(new Map([[{}, 1]])), { instanceOf: TypeError, message: /keys must be/ });
  t.throws(() => dumps(new Map([[undefined, 1]])), { instanceOf: TypeError });
  t.throws(() => dumps(new Date(NaN)), { instanceOf: RangeError });
  t.throws(() => dumps(new Date('0000-12-31T00:00:00Z')), { instanceOf: RangeError });
  t.throws(() => dumps(new Date(Date.UTC(10000, 0, 1))), { instanceOf: RangeError });
  // a shared (non-cyclic) reference is fine, and so is deep nesting
  const shared = { x: 1 };
  t.is(dumps([shared, shared]), '[{"x": 1}, {"x": 1}]');
  let deep: unknown = shared;
  for (let i = 0; i < 500; i++) deep = i % 2 ? [deep, shared] : { d: deep, s: shared };
  t.is(loads(dumps(deep)) !== null, true);
  t.is(dumps(loads(dumps(deep))), dumps(deep));
  // a cycle found deep down
  const ring: Record<string, unknown> = {};
  let at = ring;
  for (let i = 0; i < 100; i++) {
    const next: Record<string, unknown> = {};
    at.n = next;
    at = next;
  }
  at.n = ring;
  t.throws(() => dumps(ring), { instanceOf: TypeError, message: /Circular/ });
  // objects without a prototype are dicts too
  const bare = Object.create(null) as Record<string, unknown>;
  bare.a = 1;
  t.is(dumps(bare), '{"a": 1}');
});

// --- loads -------------------------------------------------------------------

test('loads reads what kombu writes (corpus of Python values)', (t) => {
  const descs: Desc[] = [
    ['none'],
    ['float', hexBits(1)],
    ['float', hexBits(-0)],
    ['float', hexBits(NaN)],
    ['float', hexBits(Infinity)],
    ['float', hexBits(-Infinity)],
    ['list', [['float', hexBits(NaN)], ['float', hexBits(-Infinity)], ['int', '1']]],
    ['int', (2n ** 53n).toString()],
    ['int', (2n ** 53n - 1n).toString()],
    ['int', (-(2n ** 53n) + 1n).toString()],
    ['int', (-(2n ** 53n)).toString()],
    ['int', '123456789012345678901234567890'],
    ['str', 'h\u00e9\ud83d\ude00\ud800\u0000"\\'],
    ['dict', [[['str', 'b'], ['int', '1']], [['str', '10'], ['int', '2']], [['int', '3'], ['none']]]],
    ['dict', [[['str', '__proto__'], ['dict', [[['str', 'polluted'], ['bool', true]]]]]]],
    ['datetime', '2024-01-02T03:04:05.123456+00:00'],
    ['datetime', '2024-01-02T03:04:05.999999-05:30'],
    ['datetime', '0001-01-01T00:00:00+01:00'],
    ['datetime', '9999-12-31T23:59:59.999999-23:59:59.999999'],
    ['datetime', '2024-01-02T03:04:05'],
    ['datetime', '2024-01-02T03:04:05.000001'],
    ['date', '0001-01-01'],
    ['time', '00:00:00'],
    ['time', '12:34:56.789012+05:45'],
    ['decimal', '1.10'],
    ['decimal', '-1E-10'],
    ['decimal', 'sNaN'],
    ['uuid', 'ffffffffffffffffffffffffffffffff'],
    ['bytes', ''],
    ['bytes', Buffer.from([0xff, 0]).toString('base64')],
    ['bytes', Buffer.from('\ufeffbom').toString('base64')],
    // a dict with the two marker keys and more is just a dict
    ['dict', [[['str', '__type__'], ['str', 'bytes']], [['str', '__value__'], ['str', 'x']], [['str', 'extra'], ['int', '1']]]],
  ];
  checkLoadsOfKombu(t, descs, (i) => safeStringify(descs[i]));
  const proto = loads('{"__proto__": {"polluted": true}}') as Record<string, unknown>;
  t.is(Object.getPrototypeOf(proto), Object.prototype);
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test('loads reads what kombu writes (random Python values, property)', (t) => {
  const g = new Gen(7);
  const descs: Desc[] = [];
  for (let i = 0; i < 400; i++) descs.push(g.py());
  checkLoadsOfKombu(t, descs, (i) => safeStringify(descs[i]).slice(0, 300));
});

test('loads agrees with kombu on marker edge cases and invalid text', (t) => {
  const texts = [
    '{"__type__": "nope", "__value__": 1}',
    '{"__value__": 1, "__type__": "bytes"}',
    '{"__type__": "bytes", "__value__": 1}',
    '{"__type__": "bytes", "__value__": "\\ud800"}',
    '{"__type__": "base64", "__value__": "YQ"}',
    '{"__type__": "base64", "__value__": "Y"}',
    '{"__type__": "base64", "__value__": "Y Q=\\n="}',
    '{"__type__": "decimal", "__value__": 0.1}',
    '{"__type__": "decimal", "__value__": 12345678901234567890123}',
    '{"__type__": "decimal", "__value__": "garbage"}',
    '{"__type__": "uuid", "__value__": "12345678123456781234567812345678"}',
    '{"__type__": "uuid", "__value__": {"hex": "urn:uuid:12345678-1234-5678-1234-567812345678"}}',
    '{"__type__": "uuid", "__value__": {"int": 1}}',
    '{"__type__": "datetime", "__value__": "2024-01-02"}',
    '{"__type__": "datetime", "__value__": "20240102T030405Z"}',
    '{"__type__": "datetime", "__value__": "2024-01-02 03:04:05.5+0100"}',
    '{"__type__": "datetime", "__value__": "2024-02-30T00:00:00"}',
    '{"__type__": "datetime", "__value__": "2024-01-02T24:00:00"}',
    '{"__type__": "datetime", "__value__": 5}',
    '{"__type__": "date", "__value__": "2024-01-02T03:04:05+01:00"}',
    '{"__type__": "time", "__value__": "T03:04"}',
    '{"__type__": "time", "__value__": "03:04:05.1234567"}',
    '{"\\u005f_type__": "bytes", "__value__": "escaped key"}',
    '{"__type__": "bytes", "__value__": {"__type__": "decimal", "__value__": "1"}}',
    '[NaN, Infinity, -Infinity, 1e400, -0]',
    '[12345678901234567890, 1.2345678901234567890, 1e20, -9007199254740993]',
    '{"a": NaN}',
    '',
    'nan',
    '[-NaN]',
    '[1,]',
    '{"a" 1}',
    '[01]',
    '"\\x"',
    '"tab\there"',
    '\ufeff[]',
    '[1] x',
    '  {"a": [1, 2]}  \n',
  ];
  const theirs = oracle<LoadsResult>({ op: 'loads', texts });
  for (let i = 0; i < texts.length; i++) {
    const text = texts[i] as string;
    const want = theirs[i];
    let got: unknown;
    let error: unknown = null;
    try {
      got = loads(text);
    } catch (err) {
      error = err;
    }
    if (want?.error !== undefined) {
      t.truthy(error, `kombu refuses ${JSON.stringify(text)} (${want.error}) but we read ${describe(got)}`);
    } else {
      t.is(error, null, `kombu reads ${JSON.stringify(text)} but we threw ${String(error)}`);
      if (error === null) t.is(mismatch(got, want?.value as Desc), null, JSON.stringify(text));
    }
  }
});

test('loads: the fast path and the slow parser agree on random documents', (t) => {
  const g = new Gen(99);
  for (let i = 0; i < 300; i++) {
    const text = dumps(g.js());
    // An integer beyond 2^53 (or a NaN) sends the whole text to the slow parser.
    const fast = loads(`[${text}, "0000000000000000"]`) as unknown[];
    const slow = loads(`[${text}, 12345678901234567890]`) as unknown[];
    const slowNaN = loads(`[${text}, NaN]`) as unknown[];
    t.is(slow[1], 12345678901234567890n);
    t.deepEqual(slowNaN[0], fast[0], text);
    t.deepEqual(slow[0], fast[0], text);
    t.is(dumps(slow[0]), dumps(fast[0]));
  }
});

test('loads takes bytes as strict UTF-8, as kombu does', (t) => {
  t.deepEqual(loads(Buffer.from('{"a": "\u00e9"}', 'utf8')), { a: 'é' });
  t.deepEqual(loads(new Uint8Array(Buffer.from('[1, 2]'))), [1, 2]);
  t.throws(() => loads(new Uint8Array([0x5b, 0xff, 0x5d])));
  t.throws(() => loads(new Uint8Array([0xef, 0xbb, 0xbf, 0x5b, 0x5d])), { instanceOf: SyntaxError });
});

test('loads then dumps gives kombu\'s text back for values JavaScript holds exactly', (t) => {
  const g = new Gen(5);
  const descs: Desc[] = [];
  for (let i = 0; i < 300; i++) descs.push(g.py());
  // Exclude what JavaScript cannot hold exactly: aware datetimes (Date keeps ms
  // and UTC only), integral floats (1.0 reads as 1), int-like dict keys (JS
  // orders them first) and non-str dict keys (kombu reads them back as str).
  const exact = (d: Desc): boolean => {
    const [tag, a] = d;
    if (tag === 'datetime') return !/[+-]\d\d:\d\d|Z$/.test((a as string).slice(10));
    if (tag === 'float') return !Number.isInteger(fromBits(a as string));
    if (tag === 'list') return (a as Desc[]).every(exact);
    if (tag === 'dict') {
      return (a as [Desc, Desc][]).every(([k, v]) => k[0] === 'str' && !/^(0|[1-9]\d*)$/.test(k[1] as string) && exact(v));
    }
    return true;
  };
  const kept = descs.filter(exact);
  t.true(kept.length > 100);
  const theirs = oracle<DumpsResult>({ op: 'dumps', values: kept });
  let failures = 0;
  for (const r of theirs) {
    const text = r.text as string;
    const again = dumps(loads(text));
    if (again !== text && ++failures <= 10) t.is(again, text);
  }
  t.is(failures, 0);
});

// --- the value classes ---------------------------------------------------------

function checkParse(
  t: ExecutionContext,
  kind: string,
  inputs: string[],
  ours: (s: string) => string,
): void {
  const theirs = oracle<ParseResult>({ op: 'parse', kind, inputs });
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i] as string;
    const want = theirs[i];
    let got: string | null;
    try {
      got = ours(input);
    } catch {
      got = null;
    }
    if (want?.error !== undefined) t.is(got, null, `${kind} ${JSON.stringify(input)}: Python refuses (${want.error})`);
    else t.is(got, want?.value ?? null, `${kind} ${JSON.stringify(input)}`);
  }
}

test('PyDateTime and PyDate read isoformat strings as Python does', (t) => {
  const g = new Gen(3);
  const inputs = [
    '2024-01-02', '20240102', '2024-01-02T03:04:05', '2024-01-02 03:04', '2024-01-02T03',
    '2024-01-02T0304', '2024-01-02T030405.5', '2024-01-02T03:04:05,25', '2024-01-02T03:04:05.1234567',
    '2024-01-02T03:04:05Z', '20240102T030405Z', '2024-01-02T03:04:05+0530', '2024-01-02T03:04:05+05',
    '2024-01-02T03:04:05-00:00', '2024-01-02T03:04:05+05:30:15.5', '2024-01-02T03:04:05+23:59:59.999999',
    '2024-01-02X03:04:05', '0001-01-01T00:00:00-01:00', '2024-02-29', '2023-02-29', '2024-13-01',
    '2024-00-10', '0000-01-01', '2024-01-02T24:00:00', '2024-01-02T03:60', '2024-01-02T03:04:60',
    '2024-01-02T03:04:05+24:00', '2024-01-02T', '2024-01-02T03:04:05.', '2024-1-02', '2024-0102',
    '2024-01-02T03:0405', '2024-01-02T03:04:05z', '', 'x',
  ];
  for (let i = 0; i < 200; i++) inputs.push(`${g.isoDate()}${g.pick(['T', ' '])}${g.isoTime(g.chance(0.5))}`);
  checkParse(t, 'datetime', inputs, (s) => new PyDateTime(s).value);
  checkParse(t, 'date_of_datetime', inputs, (s) => {
    const dt = new PyDateTime(s);
    return new PyDate(dt.value.slice(0, 10)).value;
  });
});

test('PyTime reads isoformat strings as Python does', (t) => {
  const g = new Gen(4);
  const inputs = [
    '03', '03:04', '0304', '030405', '03:04:05', '03:04:05.1', '03:04:05,123', '03:04:05.1234567',
    '03:04:05Z', '03:04:05+05:30', '03:04:05+0530', '03:04:05-05', '03:04:05.123+05:30:10',
    '03:04:05+05:30:15.5', 'T03:04:05', '24:00', '03:0405', '03:04:05.', '3:04', '',
  ];
  for (let i = 0; i < 200; i++) inputs.push(g.isoTime(g.chance(0.5)));
  checkParse(t, 'time', inputs, (s) => new PyTime(s).value);
});

test('PyDecimal canonicalises as str(Decimal(s)) does', (t) => {
  const g = new Gen(5);
  const inputs = [
    '1.10', '1e3', '0001', '-0', '1_000', ' 1.5 ', '\t1\n', '0.0000001', '1E-7', '123e-10', 'inf', '-Infinity',
    'nan', 'sNaN', '-nan', 'NaN0012', 'nan0', '1.5e+3', '.5', '5.', '0e10', '0e-10', '100e-8', '+0.00e-3', '1__0',
    '_1', '1_.5', 'in_f', '1e1_0', '-.5e-3', '0.000001', '0.0000001', '1234567890123456789012345678901234567890',
    '1e-999999999999999999', '', '.', 'e5', '1e', '--1', '0x10', '1.2.3', 'infinit',
  ];
  for (let i = 0; i < 300; i++) inputs.push(g.decimalLiteral());
  checkParse(t, 'decimal', inputs, (s) => new PyDecimal(s).value);
  // Decimal(float) is exact; PyDecimal(number) is Decimal(repr(x))
  const floats = [0.1, 1e-7, 1e30, -0, 5e-324, Number.MAX_VALUE, 1.5, -2.5e-10, 123456.789];
  for (let i = 0; i < 200; i++) floats.push(g.randomDouble());
  const finite = floats.filter(Number.isFinite);
  checkParse(t, 'decimal_float', finite.map(hexBits), (h) => PyDecimal.fromFloatExact(fromBits(h)).value);
  const jsForms = finite.map((x) => (Object.is(x, -0) ? '-0' : String(x)));
  checkParse(t, 'decimal', jsForms, (s) => new PyDecimal(Number(s)).value);
  t.is(new PyDecimal(12345678901234567890n).value, '12345678901234567890');
  t.is(String(new PyDecimal('1.50')), '1.50');
  t.is(JSON.stringify({ d: new PyDecimal('2') }), '{"d":"2"}');
});

test('PyUUID reads what uuid.UUID(hex=...) reads', (t) => {
  checkParse(
    t,
    'uuid',
    [
      '12345678-1234-5678-1234-567812345678', '12345678123456781234567812345678',
      '{12345678-1234-5678-1234-567812345678}', 'urn:uuid:12345678123456781234567812345678',
      'ABCDEF01ABCDEF01ABCDEF01ABCDEF01', '{{abcdef01abcdef01abcdef01abcdef01}}',
      '12345678-1234-5678-1234-56781234567G', '1234', '', '1234567812345678123456781234567812',
    ],
    (s) => new PyUUID(s).hex,
  );
  const u = new PyUUID('12345678123456781234567812345678');
  t.is(u.toString(), '12345678-1234-5678-1234-567812345678');
  t.is(JSON.stringify(u), '"12345678-1234-5678-1234-567812345678"');
});

test('base64 markers decode as base64.b64decode does (non-validating)', (t) => {
  const g = new Gen(6);
  const inputs = ['YQ', 'YQ==', 'YQ===', 'YQ==YQ==', 'Y Q = =', 'YQ=', 'Y', 'YWJj', 'YW_j', 'YQ==x', 'YQ=x=', '', '====', 'é', 'YW-j'];
  for (let i = 0; i < 300; i++) {
    let s = Buffer.from(g.bytes()).toString('base64');
    const k = g.int(0, 4);
    for (let j = 0; j < k; j++) {
      const at = g.int(0, s.length);
      s = s.slice(0, at) + g.pick(['=', ' ', '\n', '!', 'A', '-', '_', 'é', '==']) + s.slice(at);
    }
    inputs.push(s);
  }
  checkParse(t, 'b64', inputs, (s) => {
    const v = loads(dumps({ __type__: 'base64', __value__: s }));
    if (!Buffer.isBuffer(v)) throw new Error('not bytes');
    return v.toString('base64');
  });
});

test('value classes validate and expose their fields', (t) => {
  const dt = new PyDateTime('2024-01-02T03:04:05.123456-01:30');
  t.false(dt.naive);
  t.is(dt.utcOffset, -5400 * 1e6);
  t.is(dt.toDate().toISOString(), '2024-01-02T04:34:05.123Z');
  const naive = new PyDateTime('0050-01-02T03:04:05.999999');
  t.true(naive.naive);
  t.is(naive.toDate().toISOString(), '0050-01-02T03:04:05.999Z');
  t.is(PyDateTime.fromDate(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6))).value, '2024-01-02T03:04:05.006000+00:00');
  t.is(PyDate.fromDate(new Date(Date.UTC(2024, 0, 2, 23))).value, '2024-01-02');
  t.is(new PyTime('03:04:05.5+05:30').utcOffset, 19800 * 1e6);
  t.is(String(new PyFloat(1)), '1.0');
  t.is(JSON.stringify([new PyFloat(1.5), new PyDate('2024-01-02'), new PyTime('03:04')]), '[1.5,"2024-01-02","03:04:00"]');
  t.throws(() => new PyDate('2024-01-02T03:04'));
  t.throws(() => new PyDecimal('1.2.3'), { instanceOf: TypeError });
  t.throws(() => new PyUUID('xyz'), { instanceOf: TypeError });
  t.throws(() => new PyTime('25:00'), { instanceOf: RangeError });
  t.throws(() => new PyDateTime('2024-02-30'), { instanceOf: RangeError });
  // loads gives a Date for an aware datetime, PyDateTime for a naive one
  t.true(loads('{"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}') instanceof Date);
  t.true(loads('{"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}') instanceof PyDateTime);
  t.throws(() => loads('{"__type__": "nope", "__value__": 1}'), { instanceOf: TypeError });
});
