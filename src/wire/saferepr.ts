/**
 * Celery's `celery.utils.saferepr.saferepr`, ported token for token: the
 * `argsrepr` and `kwargsrepr` headers of a task message are written with it
 * (`maxlen` 1024, `maxlevels` 3, Celery's defaults).
 *
 * It is not Python's `repr`: strings are always single-quoted with only `'`
 * escaped, numbers (bools included) are `str()`, nesting deeper than
 * `maxlevels` prints as `[...]`/`{...}`, and output beyond `maxlen` is cut
 * with `', ...'` and the open brackets closed.
 *
 * JavaScript values map as in the package's kombu JSON: arrays and sets are
 * lists, plain objects and maps are dicts, `Uint8Array` is bytes, `Date` an
 * aware UTC `datetime`.
 *
 * @module
 */
import { PyDate, PyDateTime, PyDecimal, PyFloat, PyTime, PyUUID } from '../json/values.js';

type Lit = { kind: 'lit'; value: string; truncate: boolean; direction: number };
type Key = { kind: 'key'; value: unknown };
type Quoted = { kind: 'quoted'; value: string | Uint8Array };
type Dirty = { kind: 'dirty'; obj: object };
type Token = Lit | Key | Quoted | string;
type Item = Token | Dirty | { kind: 'value'; value: unknown };

const lit = (value: string, truncate: boolean, direction: number): Lit => ({ kind: 'lit', value, truncate, direction });
const DICT_START = lit('{', false, +1);
const DICT_KVSEP = lit(': ', true, 0);
const DICT_END = lit('}', false, -1);
const LIST_START = lit('[', false, +1);
const LIST_END = lit(']', false, -1);
const LIST_SEP = lit(', ', true, 0);

/** Python `len()` of a string: code points. */
function pyLen(s: string): number {
  return /[\uD800-\uDFFF]/.test(s) ? Array.from(s).length : s.length;
}

function pySlice(s: string, end: number): string {
  return /[\uD800-\uDFFF]/.test(s) ? Array.from(s).slice(0, end).join('') : s.slice(0, end);
}

/** `celery.utils.text.truncate`. */
function truncate(s: string, maxlen: number | null): string {
  if (maxlen && pyLen(s) >= maxlen) {
    const cut = pySlice(s, maxlen);
    const sp = cut.lastIndexOf(' ');
    return (sp < 0 ? cut : cut.slice(0, sp)) + '...';
  }
  return s;
}

function formatChars(val: string | Uint8Array, maxlen: number | null): string {
  if (typeof val !== 'string') {
    let bytes = Buffer.from(val.buffer, val.byteOffset, val.byteLength);
    let ellipsis = '';
    if (maxlen && bytes.length > maxlen) {
      bytes = bytes.subarray(0, maxlen);
      ellipsis = '...';
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      text = bytes.toString('hex');
    }
    return `b'${text}${ellipsis}'`;
  }
  return `'${truncate(val, maxlen).replace(/'/g, "\\'")}'`;
}

/** Python's `str(float)`. */
function floatStr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  return new PyFloat(x).toString();
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, '0');
}

/** `repr()` of the values saferepr hands to Python's own `repr`. */
function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) return 'None';
    const parts = [v.getUTCFullYear(), v.getUTCMonth() + 1, v.getUTCDate(), v.getUTCHours(), v.getUTCMinutes()];
    const s = v.getUTCSeconds();
    const us = v.getUTCMilliseconds() * 1000;
    if (s || us) parts.push(s);
    if (us) parts.push(us);
    return `datetime.datetime(${parts.join(', ')}, tzinfo=datetime.timezone.utc)`;
  }
  if (v instanceof PyDecimal) return `Decimal('${v.value}')`;
  if (v instanceof PyUUID) {
    const h = v.hex;
    return `UUID('${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}')`;
  }
  if (v instanceof PyDate) return `datetime.date(${v.year}, ${v.month}, ${v.day})`;
  if (v instanceof PyTime || v instanceof PyDateTime) return `'${String(v.value)}'`;
  if (typeof v === 'function' || typeof v === 'symbol') return `<${typeof v}>`;
  return String(v);
}

function* chainList(values: Iterable<unknown>, size: number): Generator<Item> {
  let i = 0;
  for (const v of values) {
    yield { kind: 'value', value: v };
    if (i < size - 1) yield LIST_SEP;
    i++;
  }
}

function* chainDict(entries: Iterable<[unknown, unknown]>, size: number): Generator<Item> {
  let i = 0;
  for (const [k, v] of entries) {
    yield { kind: 'key', value: k };
    yield DICT_KVSEP;
    yield { kind: 'value', value: v };
    if (i < size - 1) yield LIST_SEP;
    i++;
  }
}

function* chain(...its: Iterable<Item>[]): Generator<Item> {
  for (const it of its) yield* it;
}

function isPlainObject(v: object): v is Record<string, unknown> {
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** `reprstream`: yields [token, the iterator it came from]. */
function* reprstream(stack: Iterator<Item>[], maxlevels: number): Generator<[Token, Iterator<Item>]> {
  const seen = new Set<object>();
  let level = 0;
  while (stack.length > 0) {
    const it = stack.shift()!;
    for (let r = it.next(); !r.done; r = it.next()) {
      const val = r.value;
      if (typeof val === 'string') {
        yield [val, it];
        continue;
      }
      if (val.kind === 'dirty') {
        seen.delete(val.obj);
        continue;
      }
      if (val.kind === 'lit') {
        level += val.direction;
        yield [val, it];
        continue;
      }
      if (val.kind === 'key' || val.kind === 'quoted') {
        yield [val, it];
        continue;
      }
      const v = val.value;
      if (typeof v === 'boolean') {
        yield [v ? 'True' : 'False', it];
        continue;
      }
      if (typeof v === 'bigint') {
        yield [v.toString(), it];
        continue;
      }
      if (typeof v === 'number') {
        yield [Number.isInteger(v) ? (Object.is(v, -0) ? '0' : String(v)) : floatStr(v), it];
        continue;
      }
      if (v instanceof PyFloat) {
        yield [floatStr(v.value), it];
        continue;
      }
      if (typeof v === 'string' || v instanceof Uint8Array) {
        yield [{ kind: 'quoted', value: v }, it];
        continue;
      }
      let start: Lit;
      let end: Lit;
      let inner: Iterable<Item>;
      if (Array.isArray(v)) {
        [start, end, inner] = [LIST_START, LIST_END, chainList(v, v.length)];
      } else if (v instanceof Set) {
        if (v.size === 0) {
          yield ['[]', it];
          continue;
        }
        [start, end, inner] = [LIST_START, LIST_END, chainList(v, v.size)];
      } else if (v instanceof Map) {
        [start, end, inner] = [DICT_START, DICT_END, chainDict(v.entries(), v.size)];
      } else if (v !== null && typeof v === 'object' && isPlainObject(v) && typeof (v as { toJSON?: unknown }).toJSON !== 'function') {
        const entries = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== 'function' && typeof x !== 'symbol');
        [start, end, inner] = [DICT_START, DICT_END, chainDict(entries, entries.length)];
      } else {
        yield [pyRepr(v), it];
        continue;
      }
      if (maxlevels && level >= maxlevels) {
        yield [lit(`${start.value}...${end.value}`, false, 0), it];
        continue;
      }
      if (seen.has(v)) {
        yield [`<Recursion on ${Array.isArray(v) || v instanceof Set ? 'list' : 'dict'} with id=0>`, it];
        continue;
      }
      seen.add(v);
      stack.push(chain([start], inner, [{ kind: 'dirty', obj: v }, end], { [Symbol.iterator]: () => it }));
      break;
    }
  }
}

/**
 * `celery.utils.saferepr.saferepr(o, maxlen, maxlevels)`.
 *
 * @param maxlen Stop after about this many characters (`null`: no limit).
 * @param maxlevels Containers nested deeper than this print as `[...]`.
 */
export function saferepr(o: unknown, maxlen: number | null = null, maxlevels = 3): string {
  const out: string[] = [];
  const stack: Iterator<Item>[] = [[{ kind: 'value', value: o } as Item][Symbol.iterator]()];
  let left = maxlen;
  for (const [token, it] of reprstream(stack, maxlevels)) {
    if (left !== null && left <= 0) {
      if (typeof token !== 'string' && token.kind === 'lit' && token.direction < 0) {
        out.push(token.value);
        continue;
      }
      out.push(', ...');
      stack.push(chain([token], { [Symbol.iterator]: () => it }));
      break;
    }
    let val: string;
    if (typeof token === 'string') val = truncate(token, left);
    else if (token.kind === 'lit') val = token.value;
    else if (token.kind === 'key') val = saferepr(token.value, left, maxlevels);
    else val = formatChars(token.value, left);
    out.push(val);
    if (left !== null) left -= pyLen(val);
  }
  let depth = 0;
  for (const rest of stack) {
    for (let r = rest.next(); !r.done; r = rest.next()) {
      const t = r.value;
      if (typeof t !== 'string' && t.kind === 'lit' && !t.truncate) {
        depth += t.direction;
        if (depth < 0) {
          depth = 0;
          out.push(t.value);
        }
      }
    }
  }
  return out.join('');
}
