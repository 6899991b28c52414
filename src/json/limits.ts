/**
 * The limits Python's `json` has, and so kombu and Celery: how deep arrays and
 * objects nest, and how many digits an integer has (see the `json` module
 * documentation in ./index.ts).
 *
 * @module
 */

/**
 * The deepest nesting of arrays and objects `loads` accepts. Python's
 * `json` (3.11, default recursion limit 1000) refuses from 997 levels on, so
 * Celery decodes nothing deeper. JSON.parse reads any depth without
 * recursion; the walks after it recurse only within this limit, which is
 * checked first, so that the answer never depends on the stack.
 */
export const MAX_NESTING = 1000;

export function tooDeep(): RangeError {
  return new RangeError(`JSON nested deeper than ${MAX_NESTING} levels of arrays and objects`);
}

/**
 * The most digits of an integer Python converts to or from text by default
 * (`sys.get_int_max_str_digits()`, Python >= 3.11): `json.loads` raises
 * `ValueError` for a longer integer literal, `json.dumps` for a longer int.
 */
export const MAX_INT_DIGITS = 4300;

export function tooManyDigits(digits: number): RangeError {
  return new RangeError(
    `Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion: value has ${digits} digits`,
  );
}
