/**
 * kombu's JSON serializer (`kombu.utils.json`), byte for byte.
 *
 * `dumps` writes exactly what `kombu.utils.json.dumps` writes for the
 * corresponding Python value: Python's default separators (`', '` and
 * `': '`), `ensure_ascii=True`, Python's float `repr`, `NaN`/`Infinity`, and
 * kombu's `{"__type__": ..., "__value__": ...}` markers. `loads` reads what
 * kombu writes (and what Python's `json.loads` accepts) and turns the markers
 * back into values.
 *
 * How JavaScript values map to Python values:
 *
 * | JavaScript                               | Python                         |
 * | ---------------------------------------- | ------------------------------ |
 * | `null`, `undefined` (in arrays, at top)  | `None`                         |
 * | `boolean`                                | `bool`                         |
 * | `number` with `Number.isInteger`, bigint | `int` (exact value; `-0` is 0) |
 * | any other `number`, {@link PyFloat}      | `float`                        |
 * | `string`                                 | `str` (UTF-16 code units; lone surrogates kept) |
 * | `Array`, `Set`                           | `list`                         |
 * | plain object, `Map`                      | `dict` (insertion order)       |
 * | `Date`                                   | aware UTC `datetime`           |
 * | `Uint8Array` / `Buffer`                  | `bytes`                        |
 * | {@link PyDateTime}, {@link PyDate}, {@link PyTime}, {@link PyDecimal}, {@link PyUUID} | `datetime`, `date`, `time`, `Decimal`, `UUID` |
 *
 * Map keys may be what Python's `json` allows as dict keys: strings, numbers,
 * bigints, booleans, `null` and {@link PyFloat}. A plain object's integer-like
 * keys come first in ascending order (JavaScript's own property order, as with
 * `JSON.stringify`); use a `Map` to write keys in any order.
 *
 * As with `JSON.stringify`: objects with a `toJSON()` method are replaced by
 * its result, and `undefined`, functions and symbols are left out of objects
 * and maps and written as `null` in arrays and sets. A function or symbol on
 * its own, an `ArrayBuffer`, a typed array other than `Uint8Array`, a map key
 * Python could not have, and a circular structure are refused with a
 * `TypeError`, as Python refuses what it cannot serialize.
 *
 * Going back, `loads` gives: `int` -> `number`, or `bigint` when the value is
 * not a safe integer (beyond +-(2^53 - 1)), so that large ids survive a round
 * trip; `float` -> `number`; aware `datetime` -> `Date` (microseconds are
 * truncated to milliseconds and the offset is applied: use {@link PyDateTime}
 * to keep them); naive `datetime` -> {@link PyDateTime}; `date` -> {@link PyDate};
 * `time` -> {@link PyTime}; `Decimal` -> {@link PyDecimal}; `UUID` -> {@link PyUUID};
 * `bytes` -> `Buffer`. An unknown marker throws, as kombu's `object_hook` does.
 *
 * Limits, as Python's `json` has them (and so kombu and Celery):
 * - integers are exact whatever their size (`[1` and 399 zeros `]` gives a
 *   bigint, not `Infinity`), up to Python's default limit of 4300 digits
 *   (`sys.get_int_max_str_digits()`): `loads`
 *   refuses a longer integer literal and `dumps` a longer bigint with a
 *   `RangeError`, as Python raises `ValueError` for both. A float literal out
 *   of double range is `Infinity`, as in Python (`1e400` is `inf`);
 * - `loads` refuses a text whose arrays and objects nest deeper than 1000
 *   levels with a `RangeError`, whatever the stack: Python
 *   3.11's decoder raises `RecursionError` from 997 levels on with its default
 *   recursion limit of 1000 (fewer inside a worker's call stack), so every
 *   text Celery decodes is within it.
 *
 * @module
 */

import { installHintedLoads, restoreText, restoreValues, type ScanHints } from './jsonhints.js';

// ---------------------------------------------------------------------------
// Small value classes for Python types JavaScript lacks.
// ---------------------------------------------------------------------------

/** A Python `float`, for the values JavaScript would otherwise write as `int` (`1.0`, `1e+16`, `-0.0`). */
export class PyFloat {
  /** The float value. */
  readonly value: number;

  constructor(value: number) {
    if (typeof value !== 'number') throw new TypeError('PyFloat: expected a number');
    this.value = value;
  }

  /** Python's `repr(float)` of the value (`NaN`, `Infinity`, `-Infinity` as `json` writes them). */
  toString(): string {
    return floatRepr(this.value);
  }

  /** The number itself. */
  valueOf(): number {
    return this.value;
  }

  /** For `JSON.stringify`: the number. */
  toJSON(): number {
    return this.value;
  }
}

/**
 * A Python `decimal.Decimal`, kept as its canonical string (`str(Decimal(x))`).
 * kombu writes it as `{"__type__": "decimal", "__value__": "<str>"}`.
 */
export class PyDecimal {
  /** `str(Decimal(...))` of the value, e.g. `'1.10'`, `'1E+3'`, `'-0'`, `'NaN'`. */
  readonly value: string;

  /**
   * @param value - A decimal literal as Python's `Decimal(str)` accepts it
   *   (surrounding whitespace and underscores are ignored, `Infinity`, `NaN`,
   *   `sNaN` included), a bigint, or a number. A number is taken by the
   *   shortest decimal that reads back as it, its `String()` form (so `0.1`
   *   gives `'0.1'` and `1e30` gives `'1E+30'`); for Python's exact
   *   `Decimal(float)` use `PyDecimal.fromFloatExact`.
   * @throws TypeError when the string is not a decimal literal.
   */
  constructor(value: string | number | bigint) {
    if (typeof value === 'string') {
      this.value = decimalCanonical(value);
    } else if (typeof value === 'bigint') {
      this.value = value.toString();
    } else if (typeof value === 'number') {
      this.value = decimalCanonical(Object.is(value, -0) ? '-0' : String(value));
    } else {
      throw new TypeError('PyDecimal: expected a string, number or bigint');
    }
  }

  /** Python's `Decimal(x)` for a float `x`: the exact binary value, e.g. `0.1000000000000000055511151231257827021181583404541015625`. */
  static fromFloatExact(x: number): PyDecimal {
    return new PyDecimal(exactDecimal(x));
  }

  /** The canonical string. */
  toString(): string {
    return this.value;
  }

  /** For `JSON.stringify`: the canonical string. */
  toJSON(): string {
    return this.value;
  }
}

const UUID_HEX = /^[0-9a-fA-F]{32}$/;

/**
 * A Python `uuid.UUID`. kombu writes it as
 * `{"__type__": "uuid", "__value__": {"hex": "<32 lowercase hex digits>"}}`.
 */
export class PyUUID {
  /** 32 lowercase hex digits (`UUID.hex`). */
  readonly hex: string;

  /**
   * @param value - Anything `uuid.UUID(hex)` accepts: hyphenated or not, braces,
   *   `urn:uuid:` prefix, either case.
   * @throws TypeError when it is not a UUID.
   */
  constructor(value: string) {
    if (typeof value !== 'string') throw new TypeError('PyUUID: expected a string');
    const hex = value.replaceAll('urn:', '').replaceAll('uuid:', '').replace(/^[{}]+|[{}]+$/g, '').replaceAll('-', '');
    if (!UUID_HEX.test(hex)) throw new TypeError('PyUUID: badly formed hexadecimal UUID string');
    this.hex = hex.toLowerCase();
  }

  /** The hyphenated form, `str(uuid)`. */
  toString(): string {
    const h = this.hex;
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** For `JSON.stringify`: the hyphenated form. */
  toJSON(): string {
    return this.toString();
  }
}

/** A Python `datetime.date`, written by kombu as `{"__type__": "date", "__value__": "YYYY-MM-DD"}`. */
export class PyDate {
  /** `date.isoformat()`: `YYYY-MM-DD`. */
  readonly value: string;
  readonly year: number;
  readonly month: number;
  readonly day: number;

  /**
   * @param value - `YYYY-MM-DD` (or the basic `YYYYMMDD`).
   * @throws TypeError/RangeError when it is not a valid date in 1..9999.
   */
  constructor(value: string) {
    if (typeof value !== 'string') throw new TypeError('PyDate: expected a string');
    const m = DATE_RE.exec(value);
    if (!m) throw new TypeError('PyDate: invalid isoformat string');
    const [year, month, day] = parseDateGroups(m, 1);
    this.year = year;
    this.month = month;
    this.day = day;
    this.value = formatDate(year, month, day);
  }

  /** The UTC calendar date of a JavaScript `Date`. */
  static fromDate(date: Date): PyDate {
    checkDate(date);
    return new PyDate(formatDate(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate()));
  }

  /** The isoformat string. */
  toString(): string {
    return this.value;
  }

  /** For `JSON.stringify`: the isoformat string. */
  toJSON(): string {
    return this.value;
  }
}

/**
 * A Python `datetime.time`, naive or with a UTC offset, written by kombu as
 * `{"__type__": "time", "__value__": "HH:MM:SS[.ffffff][+HH:MM]"}`.
 */
export class PyTime {
  /** `time.isoformat()`. */
  readonly value: string;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  readonly microsecond: number;
  /** The UTC offset in microseconds, or `null` for a naive time. */
  readonly utcOffset: number | null;

  /**
   * @param value - Anything `time.fromisoformat` accepts in ISO 8601 extended or
   *   basic form: `HH[:MM[:SS[.f...]]]`, optional `Z` or `+-HH[:MM[:SS[.f...]]]`.
   * @throws TypeError/RangeError when it is not a valid time.
   */
  constructor(value: string) {
    if (typeof value !== 'string') throw new TypeError('PyTime: expected a string');
    const t = parseIsoTime(value.startsWith('T') ? value.slice(1) : value);
    this.hour = t.hour;
    this.minute = t.minute;
    this.second = t.second;
    this.microsecond = t.microsecond;
    this.utcOffset = t.offset;
    this.value = formatTime(t);
  }

  /** The isoformat string. */
  toString(): string {
    return this.value;
  }

  /** For `JSON.stringify`: the isoformat string. */
  toJSON(): string {
    return this.value;
  }
}

/**
 * A Python `datetime.datetime` at full (microsecond) precision, naive or aware.
 * `loads` returns one for a naive datetime; an aware one comes back as a `Date`.
 * Written by kombu as `{"__type__": "datetime", "__value__": "<isoformat>"}`.
 */
export class PyDateTime {
  /** `datetime.isoformat()`: `YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM[:SS[.ffffff]]]`. */
  readonly value: string;
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  readonly microsecond: number;
  /** The UTC offset in microseconds, or `null` for a naive datetime. */
  readonly utcOffset: number | null;

  /**
   * @param value - Anything `datetime.fromisoformat` accepts in ISO 8601 extended
   *   or basic calendar form (`2024-01-02`, `2024-01-02T03:04:05.123456+01:00`,
   *   `20240102T030405Z`, any one non-digit separator); week dates are not read.
   * @throws TypeError/RangeError when it is not a valid datetime.
   */
  constructor(value: string) {
    if (typeof value !== 'string') throw new TypeError('PyDateTime: expected a string');
    const dt = parseIsoDateTime(value);
    this.year = dt.year;
    this.month = dt.month;
    this.day = dt.day;
    this.hour = dt.hour;
    this.minute = dt.minute;
    this.second = dt.second;
    this.microsecond = dt.microsecond;
    this.utcOffset = dt.offset;
    this.value = `${formatDate(dt.year, dt.month, dt.day)}T${formatTime(dt)}`;
  }

  /** An aware UTC datetime for a `Date` (what `dumps(date)` writes). */
  static fromDate(date: Date): PyDateTime {
    return new PyDateTime(dateIsoformat(date));
  }

  /** `true` when the datetime has no UTC offset. */
  get naive(): boolean {
    return this.utcOffset === null;
  }

  /**
   * The instant as a `Date`, microseconds truncated to milliseconds. A naive
   * datetime is read as UTC (Celery's convention for naive times).
   */
  toDate(): Date {
    return new Date(epochMs(this, this.utcOffset ?? 0));
  }

  /** The isoformat string. */
  toString(): string {
    return this.value;
  }

  /** For `JSON.stringify`: the isoformat string. */
  toJSON(): string {
    return this.value;
  }
}

// ---------------------------------------------------------------------------
// dumps
// ---------------------------------------------------------------------------

/**
 * Serializes a value to the exact text `kombu.utils.json.dumps` writes for the
 * corresponding Python value (see the module documentation for the mapping).
 *
 * @throws TypeError for a circular structure or a value Python could not
 *   serialize (functions, symbols, non-`Uint8Array` binary, bad dict keys).
 * @throws RangeError for a `Date` that is invalid or outside years 1..9999.
 */
export function dumps(value: unknown): string {
  return encodeValue(value, '', [], false);
}

const MARKER_OPEN = '{"__type__": "';
const MARKER_MID = '", "__value__": ';

function marker(type: string, encodedValue: string): string {
  return MARKER_OPEN + type + MARKER_MID + encodedValue + '}';
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object' || typeof v === 'function') {
    const ctor = (v as { constructor?: { name?: unknown } }).constructor;
    if (ctor && typeof ctor.name === 'string' && ctor.name !== '') return ctor.name;
  }
  return typeof v;
}

function notSerializable(v: unknown): TypeError {
  return new TypeError(`Object of type ${typeName(v)} is not JSON serializable`);
}

/**
 * The containers being written, outermost first. A cycle makes the stack grow
 * without end, so it is searched only past a depth no sane message reaches:
 * the common case pays a push and a pop, not a lookup.
 */
type Stack = object[];
const CYCLE_CHECK_DEPTH = 32;

function enter(o: object, stack: Stack): void {
  if (stack.length >= CYCLE_CHECK_DEPTH && stack.includes(o)) throw new TypeError('Circular reference detected');
  stack.push(o);
}

function encodeValue(v: unknown, key: string, stack: Stack, afterToJSON: boolean): string {
  switch (typeof v) {
    case 'string':
      return quote(v);
    case 'number':
      return formatNumber(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return bigintString(v);
    case 'undefined':
      return 'null';
    case 'function':
    case 'symbol':
      // Inside containers these are written as null or left out (see
      // `absent`), as JSON.stringify does; on their own they are an error.
      throw notSerializable(v);
    default:
      break;
  }
  if (v === null) return 'null';
  const o = v as object;

  if (Array.isArray(o)) {
    enter(o, stack);
    let out = '[';
    for (let i = 0; i < o.length; i++) {
      if (i > 0) out += ', ';
      const item: unknown = o[i];
      out += absent(item) ? 'null' : encodeValue(item, String(i), stack, false);
    }
    stack.pop();
    return out + ']';
  }

  const proto: unknown = Object.getPrototypeOf(o);
  if (proto !== Object.prototype && proto !== null) {
    // Everything that is not a plain object.
    if (o instanceof Date) return marker('datetime', '"' + dateIsoformat(o) + '"');
    if (o instanceof Uint8Array) return bytesMarker(o);
    if (o instanceof PyFloat) return floatRepr(o.value);
    if (o instanceof PyDecimal) return marker('decimal', quote(o.value));
    if (o instanceof PyUUID) return marker('uuid', '{"hex": "' + o.hex + '"}');
    if (o instanceof PyDateTime) return marker('datetime', quote(o.value));
    if (o instanceof PyDate) return marker('date', quote(o.value));
    if (o instanceof PyTime) return marker('time', quote(o.value));
  }

  if (!afterToJSON) {
    const toJSON = (o as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') {
      return encodeValue((toJSON as (k: string) => unknown).call(o, key), key, stack, true);
    }
  }

  if (proto !== Object.prototype && proto !== null) {
    if (o instanceof Map) {
      enter(o, stack);
      let out = '{';
      let first = true;
      for (const [k, item] of o as Map<unknown, unknown>) {
        if (absent(item)) continue;
        const name = mapKey(k);
        if (!first) out += ', ';
        first = false;
        out += quote(name) + ': ' + encodeValue(item, name, stack, false);
      }
      stack.pop();
      return out + '}';
    }
    if (o instanceof Set) {
      enter(o, stack);
      let out = '[';
      let i = 0;
      for (const item of o as Set<unknown>) {
        if (i > 0) out += ', ';
        out += absent(item) ? 'null' : encodeValue(item, String(i), stack, false);
        i++;
      }
      stack.pop();
      return out + ']';
    }
    if (o instanceof Number) return formatNumber(o.valueOf());
    if (o instanceof String) return quote(o.valueOf());
    if (o instanceof Boolean) return o.valueOf() ? 'true' : 'false';
    if (o instanceof BigInt) return bigintString((o as unknown as { valueOf(): bigint }).valueOf());
    if (ArrayBuffer.isView(o) || o instanceof ArrayBuffer || isSharedArrayBuffer(o)) throw notSerializable(o);
  }

  // A plain object, or any other object: its own enumerable string keys.
  enter(o, stack);
  const rec = o as Record<string, unknown>;
  let out = '{';
  let first = true;
  for (const k of Object.keys(rec)) {
    const item = rec[k];
    if (absent(item)) continue;
    if (!first) out += ', ';
    first = false;
    out += quote(k) + ': ' + encodeValue(item, k, stack, false);
  }
  stack.pop();
  return out + '}';
}

/** What JSON.stringify leaves out of objects and writes as null in arrays. */
function absent(v: unknown): boolean {
  return v === undefined || typeof v === 'function' || typeof v === 'symbol';
}

function isSharedArrayBuffer(o: object): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && o instanceof SharedArrayBuffer;
}

/** A dict key as Python's `json` writes it: str, int, float, bool or None. */
function mapKey(k: unknown): string {
  switch (typeof k) {
    case 'string':
      return k;
    case 'number':
      return formatNumber(k);
    case 'bigint':
      return bigintString(k);
    case 'boolean':
      return k ? 'true' : 'false';
    default:
      if (k === null) return 'null';
      if (k instanceof PyFloat) return floatRepr(k.value);
      throw new TypeError(`keys must be str, int, float, bool or None, not ${typeName(k)}`);
  }
}

const UTF8_FATAL = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function bytesMarker(b: Uint8Array): string {
  let text: string;
  try {
    text = UTF8_FATAL.decode(b);
  } catch {
    return marker('base64', '"' + toBuffer(b).toString('base64') + '"');
  }
  return marker('bytes', quote(text));
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function hasOwn(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

// --- strings ----------------------------------------------------------------

// Everything Python's ensure_ascii escapes: controls, '"', '\', DEL and beyond.
const NEEDS_ESCAPE = /[\u0000-\u001f"\\\u007f-\uffff]/;
const NEEDS_ESCAPE_G = /[\u0000-\u001f"\\\u007f-\uffff]/g;
const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

function escapeChar(c: string): string {
  const short = SHORT_ESCAPES[c];
  if (short !== undefined) return short;
  const code = c.charCodeAt(0);
  return (code < 0x10 ? '\\u000' : code < 0x100 ? '\\u00' : code < 0x1000 ? '\\u0' : '\\u') + code.toString(16);
}

/** A JSON string literal as Python writes it with `ensure_ascii=True`. */
function quote(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return '"' + s + '"';
  return '"' + s.replace(NEEDS_ESCAPE_G, escapeChar) + '"';
}

// --- numbers ----------------------------------------------------------------

/**
 * The most digits of an integer Python converts to or from text by default
 * (`sys.get_int_max_str_digits()`, Python >= 3.11): `json.loads` raises
 * `ValueError` for a longer integer literal, `json.dumps` for a longer int.
 */
const MAX_INT_DIGITS = 4300;

function tooManyDigits(digits: number): RangeError {
  return new RangeError(
    `Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion: value has ${digits} digits`,
  );
}

/** A bigint in decimal, as Python's `int.__repr__` (refused beyond {@link MAX_INT_DIGITS} digits). */
function bigintString(v: bigint): string {
  const t = v.toString();
  const digits = v < 0n ? t.length - 1 : t.length;
  if (digits > MAX_INT_DIGITS) throw tooManyDigits(digits);
  return t;
}

function integerString(n: number): string {
  return Number.isSafeInteger(n) ? String(n) : BigInt(n).toString();
}

function formatNumber(n: number): string {
  if (Number.isInteger(n)) return integerString(n);
  return floatRepr(n);
}

/**
 * Python's `repr(float)` (the shortest string that reads back as the same
 * double, exponent form when the exponent is < -4 or >= 16), with `json`'s
 * `NaN`, `Infinity` and `-Infinity`.
 */
function floatRepr(x: number): string {
  if (x !== x) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  let s = String(x);
  // ECMAScript's Number::toString picks the same shortest, closest digits as
  // Python's repr; only the layout differs.
  if (!Number.isInteger(x) && s.indexOf('e') < 0 && !s.startsWith('0.000') && !s.startsWith('-0.000')) return s;
  let sign = '';
  if (s.charCodeAt(0) === 45) {
    sign = '-';
    s = s.slice(1);
  }
  let mantissa = s;
  let exp = 0;
  const e = s.indexOf('e');
  if (e >= 0) {
    mantissa = s.slice(0, e);
    exp = Number(s.slice(e + 1));
  }
  const dot = mantissa.indexOf('.');
  let digits: string;
  let decpt: number; // value = 0.DIGITS * 10^decpt
  if (dot >= 0) {
    digits = mantissa.slice(0, dot) + mantissa.slice(dot + 1);
    decpt = dot + exp;
  } else {
    digits = mantissa;
    decpt = mantissa.length + exp;
  }
  let start = 0;
  while (start < digits.length - 1 && digits.charCodeAt(start) === 48) {
    start++;
    decpt--;
  }
  let end = digits.length;
  while (end > start + 1 && digits.charCodeAt(end - 1) === 48) end--;
  digits = digits.slice(start, end);

  if (decpt <= -4 || decpt > 16) {
    const e10 = decpt - 1;
    const m = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
    const abs = Math.abs(e10);
    return sign + m + (e10 < 0 ? 'e-' : 'e+') + (abs < 10 ? '0' : '') + abs;
  }
  if (decpt <= 0) return sign + '0.' + '0'.repeat(-decpt) + digits;
  if (decpt >= digits.length) return sign + digits + '0'.repeat(decpt - digits.length) + '.0';
  return sign + digits.slice(0, decpt) + '.' + digits.slice(decpt);
}

// --- decimals ---------------------------------------------------------------

const DECIMAL_FINITE = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/;
const DECIMAL_SPECIAL = /^([+-]?)(?:(inf|infinity)|(s?nan)(\d*))$/i;
// Beyond these Python's decimal raises InvalidOperation; keep well inside.
const MAX_DECIMAL_EXPONENT = 999999999999999999n;

/** `str(Decimal(s))`. */
function decimalCanonical(input: string): string {
  const s = input.trim().replace(/_/g, '');
  const special = DECIMAL_SPECIAL.exec(s);
  if (special) {
    const sign = special[1] === '-' ? '-' : '';
    if (special[2] !== undefined) return sign + 'Infinity';
    const kind = (special[3] ?? '').toLowerCase() === 'snan' ? 'sNaN' : 'NaN';
    const payload = (special[4] ?? '').replace(/^0+/, '');
    return sign + kind + payload;
  }
  const m = DECIMAL_FINITE.exec(s);
  if (!m) throw new TypeError('PyDecimal: invalid decimal literal');
  const sign = m[1] === '-' ? '-' : '';
  const intPart = m[2] ?? '';
  const fracPart = m[3] ?? m[4] ?? '';
  let exp = m[5] !== undefined ? BigInt(m[5]) : 0n;
  exp -= BigInt(fracPart.length);
  if (exp > MAX_DECIMAL_EXPONENT || exp < -MAX_DECIMAL_EXPONENT) throw new TypeError('PyDecimal: exponent out of range');
  const coefficient = (intPart + fracPart).replace(/^0+(?=\d)/, '');
  return sign + decimalToSci(coefficient, exp);
}

/** Python's `Decimal.__str__` (to-scientific-string) for a finite value. */
function decimalToSci(coefficient: string, exp: bigint): string {
  const len = BigInt(coefficient.length);
  const leftdigits = exp + len;
  const dotplace = exp <= 0n && leftdigits > -6n ? leftdigits : 1n;
  let intpart: string;
  let fracpart: string;
  if (dotplace <= 0n) {
    intpart = '0';
    fracpart = '.' + '0'.repeat(Number(-dotplace)) + coefficient;
  } else if (dotplace >= len) {
    intpart = coefficient + '0'.repeat(Number(dotplace - len));
    fracpart = '';
  } else {
    const d = Number(dotplace);
    intpart = coefficient.slice(0, d);
    fracpart = '.' + coefficient.slice(d);
  }
  const e = leftdigits - dotplace;
  const expStr = e === 0n ? '' : 'E' + (e > 0n ? '+' : '-') + (e < 0n ? -e : e).toString();
  return intpart + fracpart + expStr;
}

/** The exact decimal value of a double, as Python's `Decimal(float)` gives it. */
function exactDecimal(x: number): string {
  if (x !== x) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const biased = Number(bits >> 52n);
  let mant = bits & 0xfffffffffffffn;
  let e2: number;
  if (biased === 0) {
    e2 = -1074;
  } else {
    mant |= 1n << 52n;
    e2 = biased - 1075;
  }
  if (mant === 0n) return sign + '0';
  while ((mant & 1n) === 0n && e2 < 0) {
    mant >>= 1n;
    e2++;
  }
  if (e2 >= 0) return sign + (mant << BigInt(e2)).toString();
  const k = -e2;
  return sign + decimalToSci((mant * 5n ** BigInt(k)).toString(), BigInt(-k));
}

// --- dates and times --------------------------------------------------------

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

function checkDate(d: Date): void {
  const t = d.getTime();
  if (t !== t) throw new RangeError('Invalid Date is not JSON serializable');
  const y = d.getUTCFullYear();
  if (y < 1 || y > 9999) throw new RangeError(`year ${y} is out of range for a Python datetime`);
}

/** `datetime.isoformat()` of the aware UTC datetime a `Date` stands for. */
function dateIsoformat(d: Date): string {
  checkDate(d);
  const ms = d.getUTCMilliseconds();
  return (
    formatDate(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate()) +
    'T' +
    pad(d.getUTCHours(), 2) +
    ':' +
    pad(d.getUTCMinutes(), 2) +
    ':' +
    pad(d.getUTCSeconds(), 2) +
    (ms === 0 ? '' : '.' + pad(ms, 3) + '000') +
    '+00:00'
  );
}

function formatDate(y: number, m: number, d: number): string {
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}`;
}

interface TimeFields {
  hour: number;
  minute: number;
  second: number;
  microsecond: number;
  /** microseconds east of UTC, or null when naive */
  offset: number | null;
}

interface DateTimeFields extends TimeFields {
  year: number;
  month: number;
  day: number;
}

function formatOffset(offset: number | null): string {
  if (offset === null) return '';
  const sign = offset < 0 ? '-' : '+';
  let rest = Math.abs(offset);
  const us = rest % 1_000_000;
  rest = (rest - us) / 1_000_000;
  const ss = rest % 60;
  rest = (rest - ss) / 60;
  const mm = rest % 60;
  const hh = (rest - mm) / 60;
  let out = `${sign}${pad(hh, 2)}:${pad(mm, 2)}`;
  if (ss !== 0 || us !== 0) {
    out += ':' + pad(ss, 2);
    if (us !== 0) out += '.' + pad(us, 6);
  }
  return out;
}

/** `time.isoformat()` (also the time half of `datetime.isoformat()`). */
function formatTime(t: TimeFields): string {
  return (
    `${pad(t.hour, 2)}:${pad(t.minute, 2)}:${pad(t.second, 2)}` +
    (t.microsecond === 0 ? '' : '.' + pad(t.microsecond, 6)) +
    formatOffset(t.offset)
  );
}

const DATE_RE = /^(\d{4})(?:-(\d{2})-(\d{2})|(\d{2})(\d{2}))$/;
const DATETIME_RE = /^(\d{4})(?:-(\d{2})-(\d{2})|(\d{2})(\d{2}))(?:[^0-9](.+))?$/s;
const TIME_RE =
  /^(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?|(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?(Z|[+-].+)?$/s;
const OFFSET_RE = /^([+-])(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?|(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?$/;

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}

function parseDateGroups(m: RegExpExecArray, at: number): [number, number, number] {
  const year = Number(m[at]);
  const month = Number(m[at + 1] ?? m[at + 3]);
  const day = Number(m[at + 2] ?? m[at + 4]);
  if (year < 1 || year > 9999) throw new RangeError(`year ${year} is out of range`);
  if (month < 1 || month > 12) throw new RangeError('month must be in 1..12');
  if (day < 1 || day > daysInMonth(year, month)) throw new RangeError('day is out of range for month');
  return [year, month, day];
}

function fraction(digits: string | undefined): number {
  return digits === undefined ? 0 : Number((digits + '00000').slice(0, 6));
}

function parseOffset(s: string): number {
  if (s === 'Z') return 0;
  const m = OFFSET_RE.exec(s);
  if (!m) throw new TypeError('Invalid isoformat string');
  const hh = Number(m[2]);
  const mm = Number(m[3] ?? m[6] ?? 0);
  const ss = Number(m[4] ?? m[7] ?? 0);
  const us = fraction(m[5] ?? m[8]);
  if (mm > 59 || ss > 59) throw new RangeError('Invalid UTC offset');
  const total = ((hh * 60 + mm) * 60 + ss) * 1_000_000 + us;
  if (total >= 86_400_000_000) throw new RangeError('UTC offset must be strictly between -24 and 24 hours');
  return m[1] === '-' ? -total : total;
}

function parseIsoTime(s: string): TimeFields {
  const m = TIME_RE.exec(s);
  if (!m) throw new TypeError('Invalid isoformat string');
  const hour = Number(m[1]);
  const minute = Number(m[2] ?? m[5] ?? 0);
  const second = Number(m[3] ?? m[6] ?? 0);
  const microsecond = fraction(m[4] ?? m[7]);
  if (hour > 23) throw new RangeError('hour must be in 0..23');
  if (minute > 59) throw new RangeError('minute must be in 0..59');
  if (second > 59) throw new RangeError('second must be in 0..59');
  const offset = m[8] === undefined ? null : parseOffset(m[8]);
  // Python normalises a zero offset to +00:00; keep -0 out.
  return { hour, minute, second, microsecond, offset: offset === 0 ? 0 : offset };
}

function parseIsoDateTime(s: string): DateTimeFields {
  const m = DATETIME_RE.exec(s);
  if (!m) throw new TypeError('Invalid isoformat string');
  const [year, month, day] = parseDateGroups(m, 1);
  const time = m[6] === undefined ? { hour: 0, minute: 0, second: 0, microsecond: 0, offset: null } : parseIsoTime(m[6]);
  return { year, month, day, ...time };
}

/** Milliseconds since the epoch of local fields at a given offset (microseconds truncated, floored). */
function epochMs(f: Omit<DateTimeFields, 'offset'>, offset: number): number {
  const d = new Date(0);
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  const diff = f.microsecond - offset; // |diff| < 8.7e10: exact
  const rem = ((diff % 1000) + 1000) % 1000;
  return d.getTime() + (diff - rem) / 1000;
}

// ---------------------------------------------------------------------------
// loads
// ---------------------------------------------------------------------------

/**
 * Parses kombu JSON (what Python's `json.loads` accepts, `NaN`, `Infinity` and
 * `-Infinity` included) and turns kombu's markers back into values (see the
 * module documentation). Bytes are decoded as strict UTF-8, as kombu does.
 *
 * @throws SyntaxError when the text is not JSON.
 * @throws TypeError/RangeError for an unknown marker or a malformed marker value.
 */
export function loads(text: string | Uint8Array): unknown {
  const s = typeof text === 'string' ? text : UTF8_FATAL.decode(text);
  const hook = s.includes('__type__') || (s.includes('\\u00') && ESCAPED_TYPE_CHAR.test(s));
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch (err) {
    if (err instanceof SyntaxError && (s.includes('NaN') || s.includes('Infinity'))) {
      return new Parser(s, hook).parseDocument();
    }
    throw err;
  }
  // JSON.parse rounds an integer beyond 2^53, and makes Infinity of one beyond
  // double range; such a value comes out as a number that is integral but not
  // safe, or not finite. Either may also be a float literal (1e300, 1e400):
  // a long digit run tells the integers apart, and the exact parser then
  // reads floats as JSON.parse does. The look also checks the nesting.
  if (inspect(parsed, 1) && LONG_DIGITS.test(s)) return new Parser(s, hook).parseDocument();
  return hook ? revive(parsed) : parsed;
}

/**
 * `loads` with what the native threads found (see src/jsonhints.ts): the same
 * value, without reading the text again for markers and long digit runs, and
 * without `JSON.parse` reading long string values that were lifted out. Where
 * it fails, `loads` of the text as it came gives the exact error.
 */
function loadsHinted(s: string, h: ScanHints): unknown {
  try {
    return decodeHinted(s, h);
  } catch {
    return loads(h.literals !== null ? restoreText(s, h.literals, h.base) : s);
  }
}

function decodeHinted(s: string, h: ScanHints): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
    // A text nests at most half its length deep (lifting shortened only strings).
    if ((h.longDigits || s.length > 2 * MAX_NESTING) && inspect(parsed, 1) && h.longDigits) {
      parsed = new Parser(s, false).parseDocument();
    }
  } catch (err) {
    if (!(err instanceof SyntaxError) || !(s.includes('NaN') || s.includes('Infinity'))) throw err;
    parsed = new Parser(s, false).parseDocument();
  }
  if (h.literals !== null) parsed = restoreValues(parsed, h.literals, h.base);
  return h.hook ? revive(parsed) : parsed;
}

installHintedLoads(loadsHinted);

/**
 * The deepest nesting of arrays and objects {@link loads} accepts. Python's
 * `json` (3.11, default recursion limit 1000) refuses from 997 levels on, so
 * Celery decodes nothing deeper. JSON.parse reads any depth without
 * recursion; the walks after it recurse only within this limit, which is
 * checked first, so that the answer never depends on the stack.
 */
const MAX_NESTING = 1000;

function tooDeep(): RangeError {
  return new RangeError(`JSON nested deeper than ${MAX_NESTING} levels of arrays and objects`);
}

function roundedNumber(x: number): boolean {
  return !Number.isSafeInteger(x) && (Number.isInteger(x) || x === Infinity || x === -Infinity);
}

/**
 * Looks at every value JSON.parse built (container `v` at nesting `depth`):
 * refuses nesting deeper than {@link MAX_NESTING} (the walk goes no deeper
 * than that), and tells whether a number may be a rounded integer literal
 * (integral but not safe, or infinite).
 */
function inspect(v: unknown, depth: number): boolean {
  if (typeof v === 'number') return roundedNumber(v);
  if (v === null || typeof v !== 'object') return false;
  if (depth > MAX_NESTING) throw tooDeep();
  let rounded = false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const item: unknown = v[i];
      if (typeof item === 'number') {
        if (roundedNumber(item)) rounded = true;
      } else if (item !== null && typeof item === 'object' && inspect(item, depth + 1)) {
        rounded = true;
      }
    }
    return rounded;
  }
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const item = o[k];
    if (typeof item === 'number') {
      if (roundedNumber(item)) rounded = true;
    } else if (item !== null && typeof item === 'object' && inspect(item, depth + 1)) {
      rounded = true;
    }
  }
  return rounded;
}

// A key spelled with escapes ("\u005f_type__") still names a marker in Python.
const ESCAPED_TYPE_CHAR = /\\u00(?:5[fF]|65|7[049])/;
// Sixteen digits in a row may be an integer JSON.parse would round.
const LONG_DIGITS = /\d{16}/;

/**
 * Applies the object hook bottom-up, as Python's `object_hook` runs, in place
 * on what JSON.parse just built (much faster than a JSON.parse reviver).
 */
function revive(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const item: unknown = v[i];
      if (item !== null && typeof item === 'object') v[i] = revive(item);
    }
    return v;
  }
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const item = o[k];
    if (item !== null && typeof item === 'object') {
      const next = revive(item);
      if (next !== item) {
        if (k === '__proto__') Object.defineProperty(o, k, { value: next, writable: true, enumerable: true, configurable: true });
        else o[k] = next;
      }
    }
  }
  return objectHook(o);
}


/** kombu's `object_hook`: `{"__type__": t, "__value__": v}` with exactly these keys becomes a value. */
function objectHook(o: Record<string, unknown>): unknown {
  if (!hasOwn(o, '__type__') || !hasOwn(o, '__value__') || Object.keys(o).length !== 2) return o;
  const type = o.__type__;
  const value = o.__value__;
  switch (type) {
    case 'datetime': {
      const str = requireString(value, type);
      const dt = parseIsoDateTime(str);
      return dt.offset === null ? new PyDateTime(str) : new Date(epochMs(dt, dt.offset));
    }
    case 'date': {
      const dt = parseIsoDateTime(requireString(value, type));
      return new PyDate(formatDate(dt.year, dt.month, dt.day));
    }
    case 'time': {
      return new PyTime(requireString(value, type));
    }
    case 'decimal':
      return decodeDecimal(value);
    case 'uuid':
      return decodeUUID(value);
    case 'bytes': {
      const str = requireString(value, type);
      if (LONE_SURROGATE.test(str)) throw new TypeError("bytes marker: 'utf-8' codec can't encode a surrogate");
      return Buffer.from(str, 'utf8');
    }
    case 'base64':
      return pyB64Decode(requireString(value, type));
    default:
      throw new TypeError('Unsupported type in kombu JSON marker');
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function requireString(v: unknown, type: string): string {
  if (typeof v !== 'string') throw new TypeError(`${type} marker: expected a string value`);
  return v;
}

function decodeDecimal(v: unknown): PyDecimal {
  if (typeof v === 'string' || typeof v === 'bigint') return new PyDecimal(v);
  if (typeof v === 'number') return Number.isInteger(v) ? new PyDecimal(integerString(v)) : PyDecimal.fromFloatExact(v);
  throw new TypeError('decimal marker: expected a string or a number');
}

function decodeUUID(v: unknown): PyUUID {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError('uuid marker: expected an object');
  const keys = Object.keys(v);
  const o = v as Record<string, unknown>;
  if (keys.length === 1 && keys[0] === 'hex' && typeof o.hex === 'string') return new PyUUID(o.hex);
  if (keys.length === 1 && keys[0] === 'int' && (typeof o.int === 'number' || typeof o.int === 'bigint')) {
    const n = BigInt(o.int);
    if (n < 0n || n >= 1n << 128n) throw new RangeError('uuid marker: int is out of range');
    return new PyUUID(n.toString(16).padStart(32, '0'));
  }
  throw new TypeError('uuid marker: expected {"hex": ...} or {"int": ...}');
}

const B64_TABLE = (() => {
  const t = new Int8Array(128).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < 64; i++) t[alphabet.charCodeAt(i)] = i;
  return t;
})();

/** Python's `base64.b64decode(s.encode('utf-8'))` (non-validating: other characters are skipped). */
function pyB64Decode(s: string): Buffer {
  if (LONE_SURROGATE.test(s)) throw new TypeError("base64 marker: 'utf-8' codec can't encode a surrogate");
  const out = Buffer.allocUnsafe(Math.ceil((s.length * 3) / 4));
  let n = 0;
  let quad = 0;
  let left = 0;
  let pads = 0;
  let done = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 61) {
      if (quad >= 2 && quad + ++pads >= 4) {
        done = true;
        break;
      }
      continue;
    }
    const v = c < 128 ? (B64_TABLE[c] ?? -1) : -1;
    if (v < 0) continue;
    pads = 0;
    switch (quad) {
      case 0:
        quad = 1;
        left = v;
        break;
      case 1:
        quad = 2;
        out[n++] = (left << 2) | (v >> 4);
        left = v & 0x0f;
        break;
      case 2:
        quad = 3;
        out[n++] = ((left << 4) | (v >> 2)) & 0xff;
        left = v & 0x03;
        break;
      default:
        quad = 0;
        out[n++] = ((left << 6) | v) & 0xff;
        left = 0;
        break;
    }
  }
  if (!done && quad !== 0) {
    throw new TypeError(quad === 1 ? 'Invalid base64-encoded string' : 'Incorrect padding');
  }
  return out.subarray(0, n);
}

/**
 * The slow path: a strict JSON parser that also reads `NaN`, `Infinity`,
 * `-Infinity` (as Python does) and gives a bigint for an integer that is not
 * a safe integer.
 */
class Parser {
  private i = 0;
  private depth = 0;

  constructor(
    private readonly s: string,
    private readonly hook: boolean,
  ) {}

  parseDocument(): unknown {
    this.ws();
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.fail('Unexpected data after JSON value');
    return v;
  }

  private fail(msg: string): never {
    throw new SyntaxError(`${msg} at position ${this.i}`);
  }

  private ws(): void {
    const s = this.s;
    let i = this.i;
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else break;
    }
    this.i = i;
  }

  private literal(word: string, value: unknown): unknown {
    if (!this.s.startsWith(word, this.i)) this.fail('Unexpected token');
    this.i += word.length;
    return value;
  }

  private value(): unknown {
    const c = this.s.charCodeAt(this.i);
    switch (c) {
      case 123: // {
        return this.object();
      case 91: // [
        return this.array();
      case 34: // "
        return this.string();
      case 116:
        return this.literal('true', true);
      case 102:
        return this.literal('false', false);
      case 110:
        return this.literal('null', null);
      case 78:
        return this.literal('NaN', NaN);
      case 73:
        return this.literal('Infinity', Infinity);
      default:
        if (c === 45 && this.s.charCodeAt(this.i + 1) === 73) {
          this.i++;
          return this.literal('Infinity', -Infinity);
        }
        return this.number();
    }
  }

  private number(): unknown {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m) this.fail('Unexpected token');
    const tok = m[0];
    this.i += tok.length;
    if (m[1] !== undefined || m[2] !== undefined) return Number(tok);
    const digits = tok.charCodeAt(0) === 45 ? tok.length - 1 : tok.length;
    if (digits > MAX_INT_DIGITS) throw tooManyDigits(digits);
    const n = Number(tok);
    return Number.isSafeInteger(n) ? n : BigInt(tok);
  }

  private string(): string {
    const s = this.s;
    const start = this.i;
    let from = start + 1;
    for (;;) {
      const q = s.indexOf('"', from);
      if (q < 0) this.fail('Unterminated string');
      let k = q - 1;
      while (s.charCodeAt(k) === 92) k--;
      if ((q - 1 - k) % 2 === 0) {
        this.i = q + 1;
        break;
      }
      from = q + 1;
    }
    // JSON.parse validates escapes and control characters exactly.
    return JSON.parse(s.slice(start, this.i)) as string;
  }

  private array(): unknown[] {
    this.i++;
    if (++this.depth > MAX_NESTING) throw tooDeep();
    const out: unknown[] = [];
    this.ws();
    if (this.s.charCodeAt(this.i) === 93) {
      this.i++;
      this.depth--;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value());
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 93) {
        this.depth--;
        return out;
      }
      if (c !== 44) {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }

  private object(): unknown {
    this.i++;
    if (++this.depth > MAX_NESTING) throw tooDeep();
    const out: Record<string, unknown> = {};
    this.ws();
    if (this.s.charCodeAt(this.i) === 125) {
      this.i++;
      this.depth--;
      return this.hook ? objectHook(out) : out;
    }
    for (;;) {
      this.ws();
      if (this.s.charCodeAt(this.i) !== 34) this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s.charCodeAt(this.i) !== 58) this.fail("Expecting ':' delimiter");
      this.i++;
      this.ws();
      const v = this.value();
      if (key === '__proto__') {
        Object.defineProperty(out, key, { value: v, writable: true, enumerable: true, configurable: true });
      } else {
        out[key] = v;
      }
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 125) {
        this.depth--;
        return this.hook ? objectHook(out) : out;
      }
      if (c !== 44) {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
