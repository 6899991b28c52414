/**
 * `loads`: kombu JSON to values, on `JSON.parse` whenever it reads the text
 * exactly, on the exact parser (./exact.ts) when it would not, with kombu's
 * object hook (./hook.ts) where the text may hold a marker.
 *
 * @module
 */

import { Parser } from './exact.js';
import { revive } from './hook.js';
import { MAX_NESTING, tooDeep } from './limits.js';

const UTF8_FATAL = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
// A key spelled with escapes ("\u005f_type__") still names a marker in Python.
const ESCAPED_TYPE_CHAR = /\\u00(?:5[fF]|65|7[049])/;
// Sixteen digits in a row may be an integer JSON.parse would round.
const LONG_DIGITS = /\d{16}/;

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

function roundedNumber(x: number): boolean {
  return !Number.isSafeInteger(x) && (Number.isInteger(x) || x === Infinity || x === -Infinity);
}

/**
 * Looks at every value JSON.parse built (container `v` at nesting `depth`):
 * refuses nesting deeper than {@link MAX_NESTING} (the walk goes no deeper
 * than that), and tells whether a number may be a rounded integer literal
 * (integral but not safe, or infinite).
 */
export function inspect(v: unknown, depth: number): boolean {
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
