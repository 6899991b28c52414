#!/usr/bin/env node
// `npm test`: every step in order, stopping at the first that fails (its exit
// code is ours), each timed, with a summary of the times at the end, so that a
// CI log says where its minutes went (CI has 45 of them; see .ci/run).
import { spawnSync } from 'node:child_process';
import { constants } from 'node:os';

const STEPS = [
  'build',
  'check',
  'test:rust',
  'build:probe',
  'test:fixtures',
  'test:js',
  'test:js:fallback',
  'test:installed',
];

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const times = [];
let rc = 0;
const t0 = performance.now();
for (const step of STEPS) {
  const t = performance.now();
  process.stderr.write(`test: ${step}: start\n`);
  const r = spawnSync(npm, ['run', '--silent', step], { stdio: 'inherit' });
  const s = (performance.now() - t) / 1000;
  times.push([step, s]);
  rc = r.status ?? 128 + (constants.signals[r.signal] ?? 0);
  process.stderr.write(`test: ${step}: exit ${r.status ?? r.signal} after ${s.toFixed(0)} s\n`);
  if (rc !== 0) break;
}
const total = (performance.now() - t0) / 1000;
process.stderr.write(`test: times (s): ${times.map(([n, s]) => `${n} ${s.toFixed(0)}`).join(', ')}; total ${total.toFixed(0)}\n`);
process.exit(rc);
