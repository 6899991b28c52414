/**
 * Python's `decimal.Decimal` as text: `str(Decimal(s))` of a literal and the
 * exact value of a float (`Decimal(float)`), for {@link PyDecimal}.
 *
 * @module
 */

const DECIMAL_FINITE = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/;
const DECIMAL_SPECIAL = /^([+-]?)(?:(inf|infinity)|(s?nan)(\d*))$/i;
// Beyond these Python's decimal raises InvalidOperation; keep well inside.
const MAX_DECIMAL_EXPONENT = 999999999999999999n;

/** `str(Decimal(s))`. */
export function decimalCanonical(input: string): string {
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
export function exactDecimal(x: number): string {
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
