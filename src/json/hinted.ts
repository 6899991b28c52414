/**
 * The hinted decode a batch uses: what the native threads found out about a
 * kombu JSON body before it reaches `loads` (see crates/core/src/jsonscan.rs),
 * so that the event loop does not read the text again for it. Internal: not
 * part of the package API (./index.ts does not export it).
 *
 * The hints go to the decode as an argument, never through module state: a
 * batch picks its decoders once, when it starts (src/registry.ts `loadsFrom`),
 * and hands each body's hints to {@link hintedLoads} with that body.
 *
 * @internal
 * @module
 */

import { Parser } from './exact.js';
import { revive } from './hook.js';
import { MAX_NESTING } from './limits.js';
import { inspect, loads } from './loads.js';

export interface ScanHints {
  /** The text may hold a kombu marker key (`__type__`, or a `\u00..` escape of it). */
  hook: boolean;
  /** The text has 16 digits in a row: an integer `JSON.parse` rounds may be in it. */
  longDigits: boolean;
  /**
   * Long string values lifted out of the text, or null: the text holds, in
   * their place, the placeholder strings `"\u0000<k>"` for `literals[base + k]`.
   */
  literals: readonly string[] | null;
  base: number;
}

/**
 * kombu's JSON `loads` of `text` with the hints the native pre-scan gave for
 * exactly that text: the same value, or the same error, as `loads` of the
 * text with its lifted literals put back; without reading the text again for
 * markers and long digit runs, and without `JSON.parse` reading long string
 * values that were lifted out. Where it fails, `loads` of the text as it came
 * gives the exact error.
 */
export function hintedLoads(s: string, h: ScanHints): unknown {
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

const PLACEHOLDER_G = /\\u0000(\d+)/g;

/** The text as it was before its long values were lifted out. */
export function restoreText(text: string, literals: readonly string[], base: number): string {
  return text.replace(PLACEHOLDER_G, (_, k: string) => literals[base + Number(k)]!);
}

/** Puts the lifted values back in place of their placeholder strings, in place. */
export function restoreValues(v: unknown, literals: readonly string[], base: number): unknown {
  if (typeof v === 'string') return v.charCodeAt(0) === 0 ? literals[base + Number(v.slice(1))] : v;
  if (v !== null && typeof v === 'object') restoreIn(v, literals, base);
  return v;
}

function restoreIn(o: object, literals: readonly string[], base: number): void {
  if (Array.isArray(o)) {
    for (let i = 0; i < o.length; i++) {
      const item: unknown = o[i];
      if (typeof item === 'string') {
        if (item.charCodeAt(0) === 0) o[i] = literals[base + Number(item.slice(1))];
      } else if (item !== null && typeof item === 'object') {
        restoreIn(item, literals, base);
      }
    }
    return;
  }
  const r = o as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    const item = r[k];
    if (typeof item === 'string') {
      if (item.charCodeAt(0) !== 0) continue;
      const value = literals[base + Number(item.slice(1))];
      if (k === '__proto__') Object.defineProperty(r, k, { value, writable: true, enumerable: true, configurable: true });
      else r[k] = value;
    } else if (item !== null && typeof item === 'object') {
      restoreIn(item, literals, base);
    }
  }
}
