/**
 * The benchmark's reporting (bench/): the worker section of BENCHMARKS.md and
 * the headline's live between their own markers and neither clobbers the
 * other; the targets of issue 11 are computed for each RSA path and for the
 * worker. Pure functions over made-up figures: nothing here is timed.
 */
import test from 'ava';
import { BEGIN, END, mergeMarkdown } from '../bench/report.js';
import { computeTargets, type BenchResults } from '../bench/results.js';
import type { CellResult } from '../bench/measure.js';
import { stats } from '../bench/stats.js';
import { computeWorkerTargets, mergeWorkerMarkdown, WORKER_BEGIN, WORKER_END, type WorkerPeer } from '../bench/worker/report.js';

const headline = (text: string) => `${BEGIN}\n${text}\n${END}`;
const worker = (text: string) => `${WORKER_BEGIN}\n${text}\n${WORKER_END}`;

test('bench: the worker and headline sections of BENCHMARKS.md are replaced in place, each within its own markers', (t) => {
  const start = `# Benchmarks\n\nintro\n\n${headline('old headline')}\n\n## Notes\n\nhand-written\n`;
  // A first worker section goes right after the headline's.
  const one = mergeWorkerMarkdown(start, worker('worker 1'));
  t.true(one.indexOf(END) < one.indexOf(WORKER_BEGIN));
  t.true(one.indexOf(WORKER_END) < one.indexOf('## Notes'));
  // Rewriting either leaves the other and the hand-written text alone.
  const two = mergeWorkerMarkdown(one, worker('worker 2'));
  const three = mergeMarkdown(two, headline('new headline'));
  t.is(three.split(WORKER_BEGIN).length, 2);
  t.is(three.split(BEGIN).length, 2);
  t.true(three.includes('worker 2') && !three.includes('worker 1'));
  t.true(three.includes('new headline') && !three.includes('old headline'));
  t.true(three.includes('intro') && three.includes('hand-written'));
  t.is(mergeWorkerMarkdown(three, worker('worker 2')), three);
});

function cell(contender: CellResult['contender'], op: 'verify' | 'sign', median: number): CellResult {
  return {
    section: 'headline',
    op,
    dataset: 'd',
    bits: 2048,
    digest: 'sha256',
    bodySize: 512,
    meanBody: 512,
    meanPayload: 1279,
    batch: 4096,
    contender,
    label: contender,
    status: 'ok',
    samples: [median],
    stats: stats([median]),
  };
}

test('bench: issue 11 targets are computed for each RSA path, with the IFMA bar where the kernels ran', (t) => {
  const r = {
    machine: { rsaPath: 'ifma' },
    paths: [
      { contender: 'cs-many', rsaPath: 'ifma', status: 'measured', where: 'this process' },
      { contender: 'cs-nosimd', rsaPath: 'aws-lc-forced', status: 'measured', where: 'a child' },
    ],
    openssl: { processes: 2, single: {}, multi: { 2048: { sign: [1000], verify: [100000] } } },
    threads: { celerySign: 2 },
    cells: [
      cell('cs-many', 'verify', 160000),
      cell('cs-nosimd', 'verify', 70000),
      cell('wc-all', 'verify', 20000),
      cell('node-pool', 'verify', 50000),
      cell('cs-many', 'sign', 960),
      cell('cs-nosimd', 'sign', 940),
    ],
    eventLoop: [],
    memory: null,
    memorySecond: null,
  } as unknown as Omit<BenchResults, 'targets' | 'notes'>;
  const targets = new Map(computeTargets(r).map((x) => [x.id, x]));
  t.like(targets.get('verify-vs-openssl'), { required: '>= 1.5x', measured: 1.6, pass: true });
  t.like(targets.get('verify-vs-openssl:nosimd'), { required: '>= 0.8x', measured: 0.7, pass: false });
  t.like(targets.get('verify-vs-webcrypto:nosimd'), { required: '>= 3x', measured: 3.5, pass: true });
  t.like(targets.get('verify-vs-pool:nosimd'), { required: '>= 1.5x', measured: 1.4, pass: false });
  t.like(targets.get('sign-vs-openssl'), { required: '>= 0.95x', pass: true });
  t.like(targets.get('sign-vs-openssl:nosimd'), { required: '>= 0.95x', measured: 0.94, pass: false });
  t.regex(targets.get('verify-vs-openssl:nosimd')!.title, /CELERY_SIGN_SIMD=0/);
});

test("bench: the worker targets take Python's best pool for each measure and need both ratios", (t) => {
  const peer = (name: string, rate: number, perCpu: number): WorkerPeer => ({ name, what: name, n: 1, rounds: [{ rate, perCpu }], rate, perCpu });
  const results = {
    'celery-sign': peer('celery-sign', 12000, 10000),
    'python-prefork': peer('python-prefork', 500, 400),
    'python-threads': peer('python-threads', 400, 500),
    'celery-node': peer('celery-node', 4000, 5000),
  };
  const targets = new Map(computeWorkerTargets(results, 'aws-lc').map((x) => [x.id, x]));
  t.like(targets.get('worker-vs-python'), { required: 20, rate: 24, perCpu: 20, pass: true });
  t.like(targets.get('worker-vs-celery-node'), { required: 2.5, rate: 3, perCpu: 2, pass: false });
  t.false(targets.has('worker-vs-python:nosimd'));
});
