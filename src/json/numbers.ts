/**
 * Python's `repr` of numbers as `json` writes them: `int` exactly (within
 * {@link MAX_INT_DIGITS} digits) and `float` as its shortest round-trip repr,
 * with `NaN`, `Infinity` and `-Infinity`.
 *
 * @module
 */

import { MAX_INT_DIGITS, tooManyDigits } from './limits.js';

/** A bigint in decimal, as Python's `int.__repr__` (refused beyond {@link MAX_INT_DIGITS} digits). */
export function bigintString(v: bigint): string {
  const t = v.toString();
  const digits = v < 0n ? t.length - 1 : t.length;
  if (digits > MAX_INT_DIGITS) throw tooManyDigits(digits);
  return t;
}

export function integerString(n: number): string {
  return Number.isSafeInteger(n) ? String(n) : BigInt(n).toString();
}

export function formatNumber(n: number): string {
  if (Number.isInteger(n)) return integerString(n);
  return floatRepr(n);
}

/**
 * Python's `repr(float)` (the shortest string that reads back as the same
 * double, exponent form when the exponent is < -4 or >= 16), with `json`'s
 * `NaN`, `Infinity` and `-Infinity`.
 */
export function floatRepr(x: number): string {
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
