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

// The package exports this module as the `json` namespace (src/index.ts). Each
// part lives in the file that does its job:
//   values.ts    the Python value classes (PyFloat, PyDecimal, PyUUID, PyDate, PyTime, PyDateTime)
//   dumps.ts     dumps: values to kombu's text, ensure_ascii escapes, markers
//   loads.ts     loads: JSON.parse, the look for rounded integers and nesting
//   exact.ts     the exact parser (NaN/Infinity, big integers), loads' slow path
//   hook.ts      kombu's object_hook: markers back into values
//   hinted.ts    the batch decode with the native pre-scan's hints (internal)
//   limits.ts    Python's nesting and integer-digit limits
//   numbers.ts, decimal.ts, datetime.ts   Python's repr/str/isoformat of those types
// Code inside the package imports from those files, not from here: a CommonJS
// re-export is a getter, one more call on every use.

export { dumps } from './dumps.js';
export { loads } from './loads.js';
export { PyFloat, PyDecimal, PyUUID, PyDate, PyTime, PyDateTime } from './values.js';
