/**
 * The exact parser, the slow path of `loads`: strict JSON that also reads
 * `NaN`, `Infinity` and `-Infinity` and keeps integers exact (a bigint beyond
 * the safe integers), for the texts `JSON.parse` refuses or would round.
 *
 * @module
 */

import { objectHook } from './hook.js';
import { MAX_INT_DIGITS, MAX_NESTING, tooDeep, tooManyDigits } from './limits.js';

/**
 * The slow path: a strict JSON parser that also reads `NaN`, `Infinity`,
 * `-Infinity` (as Python does) and gives a bigint for an integer that is not
 * a safe integer.
 */
export class Parser {
  private i = 0;
  private depth = 0;

  constructor(
    private readonly s: string,
    private readonly hook: boolean,
  ) {}

  parseDocument(): unknown {
    this.ws();
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.fail('Unexpected data after JSON value');
    return v;
  }

  private fail(msg: string): never {
    throw new SyntaxError(`${msg} at position ${this.i}`);
  }

  private ws(): void {
    const s = this.s;
    let i = this.i;
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else break;
    }
    this.i = i;
  }

  private literal(word: string, value: unknown): unknown {
    if (!this.s.startsWith(word, this.i)) this.fail('Unexpected token');
    this.i += word.length;
    return value;
  }

  private value(): unknown {
    const c = this.s.charCodeAt(this.i);
    switch (c) {
      case 123: // {
        return this.object();
      case 91: // [
        return this.array();
      case 34: // "
        return this.string();
      case 116:
        return this.literal('true', true);
      case 102:
        return this.literal('false', false);
      case 110:
        return this.literal('null', null);
      case 78:
        return this.literal('NaN', NaN);
      case 73:
        return this.literal('Infinity', Infinity);
      default:
        if (c === 45 && this.s.charCodeAt(this.i + 1) === 73) {
          this.i++;
          return this.literal('Infinity', -Infinity);
        }
        return this.number();
    }
  }

  private number(): unknown {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m) this.fail('Unexpected token');
    const tok = m[0];
    this.i += tok.length;
    if (m[1] !== undefined || m[2] !== undefined) return Number(tok);
    const digits = tok.charCodeAt(0) === 45 ? tok.length - 1 : tok.length;
    if (digits > MAX_INT_DIGITS) throw tooManyDigits(digits);
    const n = Number(tok);
    return Number.isSafeInteger(n) ? n : BigInt(tok);
  }

  private string(): string {
    const s = this.s;
    const start = this.i;
    let from = start + 1;
    for (;;) {
      const q = s.indexOf('"', from);
      if (q < 0) this.fail('Unterminated string');
      let k = q - 1;
      while (s.charCodeAt(k) === 92) k--;
      if ((q - 1 - k) % 2 === 0) {
        this.i = q + 1;
        break;
      }
      from = q + 1;
    }
    // JSON.parse validates escapes and control characters exactly.
    return JSON.parse(s.slice(start, this.i)) as string;
  }

  private array(): unknown[] {
    this.i++;
    if (++this.depth > MAX_NESTING) throw tooDeep();
    const out: unknown[] = [];
    this.ws();
    if (this.s.charCodeAt(this.i) === 93) {
      this.i++;
      this.depth--;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value());
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 93) {
        this.depth--;
        return out;
      }
      if (c !== 44) {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }

  private object(): unknown {
    this.i++;
    if (++this.depth > MAX_NESTING) throw tooDeep();
    const out: Record<string, unknown> = {};
    this.ws();
    if (this.s.charCodeAt(this.i) === 125) {
      this.i++;
      this.depth--;
      return this.hook ? objectHook(out) : out;
    }
    for (;;) {
      this.ws();
      if (this.s.charCodeAt(this.i) !== 34) this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s.charCodeAt(this.i) !== 58) this.fail("Expecting ':' delimiter");
      this.i++;
      this.ws();
      const v = this.value();
      if (key === '__proto__') {
        Object.defineProperty(out, key, { value: v, writable: true, enumerable: true, configurable: true });
      } else {
        out[key] = v;
      }
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 125) {
        this.depth--;
        return this.hook ? objectHook(out) : out;
      }
      if (c !== 44) {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
