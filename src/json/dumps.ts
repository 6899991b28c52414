/**
 * `dumps`: a JavaScript value to the exact text `kombu.utils.json.dumps`
 * writes for the Python value it stands for (see ./index.ts for the mapping),
 * with Python's `ensure_ascii` string escapes and kombu's markers.
 *
 * @module
 */

import { dateIsoformat } from './datetime.js';
import { bigintString, floatRepr, formatNumber } from './numbers.js';
import { PyDate, PyDateTime, PyDecimal, PyFloat, PyTime, PyUUID } from './values.js';

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
