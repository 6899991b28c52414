/**
 * kombu's `object_hook`: a `{"__type__": ..., "__value__": ...}` marker back
 * into its value, applied bottom-up to what `JSON.parse` built ({@link revive})
 * or by the exact parser as it closes each object ({@link objectHook}).
 *
 * @module
 */

import { epochMs, formatDate, parseIsoDateTime } from './datetime.js';
import { integerString } from './numbers.js';
import { PyDate, PyDateTime, PyDecimal, PyTime, PyUUID } from './values.js';

/**
 * Applies the object hook bottom-up, as Python's `object_hook` runs, in place
 * on what JSON.parse just built (much faster than a JSON.parse reviver).
 */
export function revive(v: unknown): unknown {
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
export function objectHook(o: Record<string, unknown>): unknown {
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

function hasOwn(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}
