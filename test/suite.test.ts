/**
 * The test suite's own rules, checked like the rest.
 *
 * ava's inactivity timeout (package.json `ava.timeout`) is the only thing
 * that ends a run whose test process will not exit (a handle left open
 * after a failure). ava 6 does not re-arm it when it fires inside the window
 * of a longer `t.timeout(...)`, so one test allowed more than the global
 * timeout can turn a leaked handle into a run that never ends. No test may
 * ask for more than the global timeout.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from './helpers/python.js';

function ms(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`unreadable ava timeout ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

const SELF = join(ROOT, 'test', 'suite.test.ts');

function* testFiles(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* testFiles(p);
    else if (e.name.endsWith('.ts') && p !== SELF) yield p;
  }
}

test('no t.timeout() exceeds the global ava timeout', (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { ava: { timeout: string } };
  const global = ms(pkg.ava.timeout);
  const over: string[] = [];
  let seen = 0;
  for (const file of testFiles(join(ROOT, 'test'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\bt\.timeout\(([^)]*)\)/g)) {
      seen++;
      // Literal arithmetic only (60000, 5 * 60_000): evaluate it as such.
      const expr = m[1]!.replaceAll('_', '');
      if (!/^[\d\s*+]+$/.test(expr)) {
        over.push(`${relative(ROOT, file)}: t.timeout(${m[1]}) is not a literal`);
        continue;
      }
      const value = expr.split('+').reduce((sum, term) => sum + term.split('*').reduce((p, f) => p * Number(f.trim()), 1), 0);
      if (value > global) over.push(`${relative(ROOT, file)}: t.timeout(${m[1]}) > ${pkg.ava.timeout}`);
    }
  }
  t.true(seen > 50, `found only ${seen} t.timeout calls`);
  t.deepEqual(over, []);
});
