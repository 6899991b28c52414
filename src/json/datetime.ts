/**
 * Python's `datetime`, `date` and `time` as ISO 8601 text: what
 * `isoformat()` writes and `fromisoformat()` reads, and the instant a `Date`
 * stands for, for the value classes and kombu's date markers.
 *
 * @module
 */

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

export function checkDate(d: Date): void {
  const t = d.getTime();
  if (t !== t) throw new RangeError('Invalid Date is not JSON serializable');
  const y = d.getUTCFullYear();
  if (y < 1 || y > 9999) throw new RangeError(`year ${y} is out of range for a Python datetime`);
}

/** `datetime.isoformat()` of the aware UTC datetime a `Date` stands for. */
export function dateIsoformat(d: Date): string {
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

export function formatDate(y: number, m: number, d: number): string {
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}`;
}

export interface TimeFields {
  hour: number;
  minute: number;
  second: number;
  microsecond: number;
  /** microseconds east of UTC, or null when naive */
  offset: number | null;
}

export interface DateTimeFields extends TimeFields {
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
export function formatTime(t: TimeFields): string {
  return (
    `${pad(t.hour, 2)}:${pad(t.minute, 2)}:${pad(t.second, 2)}` +
    (t.microsecond === 0 ? '' : '.' + pad(t.microsecond, 6)) +
    formatOffset(t.offset)
  );
}

export const DATE_RE = /^(\d{4})(?:-(\d{2})-(\d{2})|(\d{2})(\d{2}))$/;
const DATETIME_RE = /^(\d{4})(?:-(\d{2})-(\d{2})|(\d{2})(\d{2}))(?:[^0-9](.+))?$/s;
const TIME_RE =
  /^(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?|(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?(Z|[+-].+)?$/s;
const OFFSET_RE = /^([+-])(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?|(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?$/;

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}

export function parseDateGroups(m: RegExpExecArray, at: number): [number, number, number] {
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

export function parseIsoTime(s: string): TimeFields {
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

export function parseIsoDateTime(s: string): DateTimeFields {
  const m = DATETIME_RE.exec(s);
  if (!m) throw new TypeError('Invalid isoformat string');
  const [year, month, day] = parseDateGroups(m, 1);
  const time = m[6] === undefined ? { hour: 0, minute: 0, second: 0, microsecond: 0, offset: null } : parseIsoTime(m[6]);
  return { year, month, day, ...time };
}

/** Milliseconds since the epoch of local fields at a given offset (microseconds truncated, floored). */
export function epochMs(f: Omit<DateTimeFields, 'offset'>, offset: number): number {
  const d = new Date(0);
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  const diff = f.microsecond - offset; // |diff| < 8.7e10: exact
  const rem = ((diff % 1000) + 1000) % 1000;
  return d.getTime() + (diff - rem) / 1000;
}
