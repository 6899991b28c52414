/**
 * Small value classes for the Python types JavaScript lacks: `float` (where
 * JavaScript would write an `int`), `Decimal`, `UUID`, `date`, `time` and
 * `datetime` at microsecond precision.
 *
 * @module
 */

import {
  checkDate,
  dateIsoformat,
  DATE_RE,
  epochMs,
  formatDate,
  formatTime,
  parseDateGroups,
  parseIsoDateTime,
  parseIsoTime,
} from './datetime.js';
import { decimalCanonical, exactDecimal } from './decimal.js';
import { floatRepr } from './numbers.js';

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
