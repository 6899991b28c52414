/**
 * celery-sign's benchmark suite (issue 3): every peer measured in the same run.
 *
 *   npm run bench -- --quick          under a minute; the README's main-job command
 *   npm run bench                     the full suite (~10 min on 2 cores); rewrites BENCHMARKS.md and the chart
 *   options: --json  --threads N  --write  --no-python  --one-path  --help
 *
 * Where the CPU has a SIMD kernel (AVX-512 IFMA, or AVX2), celery-sign's batch
 * contenders are measured on two RSA paths in the same run: in this process
 * (the kernel) and in a child started with CELERY_SIGN_SIMD=0 (AWS-LC, the
 * path of a CPU without the kernels, e.g. ARM; contender cs-nosimd), and the
 * targets are computed for each. CELERY_SIGN_SIMD=avx2 runs the AVX2 kernel on
 * a CPU with IFMA (the path of an x86-64 CPU without IFMA).
 *   npm run bench:small               small batches (1, 16, 256) against the sync deserialize, both SIMD modes (bench/small.ts)
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { setThreads, threadCount } from 'celery-sign';
import { celerySignContenders } from './contenders/celery-sign.js';
import { nodeCryptoContenders } from './contenders/node-crypto.js';
import { opensslSpeed, opensslVersion } from './contenders/openssl.js';
import { FallbackProcess } from './contenders/fallback.js';
import { findPython, PythonCelery } from './contenders/python.js';
import type { Cell, Contender } from './contenders/types.js';
import { webCryptoContenders } from './contenders/webcrypto.js';
import { WorkerPool, workerPoolContenders } from './contenders/worker-pool.js';
import { eventLoopDelay, memoryGrowthInChild, type EventLoopResult } from './extras.js';
import { machine, RSA_PATH_LABEL, RSA_PATH_SHORT } from './machine.js';
import { contenderKey, Progress, runSection, type CellResult } from './measure.js';
import { mergeMarkdown, renderMarkdownReport, renderTerminalReport, targetMeasured, targetStatus } from './report.js';
import { computeNotes, computeTargets, type BenchResults, type OpensslSummary, type PathInfo } from './results.js';
import { throughputSvg } from './svg.js';
import {
  BENCH_DIR,
  CONTENDER_IDS,
  datasetId,
  HEADLINE_BODY,
  loadKeys,
  makeDataset,
  makePlan,
  ROOT,
  Serializers,
  type Bits,
  type ContenderId,
  type Dataset,
  type DatasetSpec,
} from './workloads.js';

const USAGE = `Usage: npm run bench -- [options]

  --quick        a short run (under a minute): the headline workload at every batch size,
                 1 MiB bodies, fewer rounds; BENCHMARKS.md is left alone unless --write
  (no --quick)   the full suite: batch sizes, body sizes, key sizes and digests, 1M payloads
                 of memory; always rewrites BENCHMARKS.md and bench/results/throughput.svg
  --json         print the results as JSON on stdout (no table)
  --threads N    celery-sign's native threads, the worker_threads pool and openssl -multi
                 (default: the machine's cores, ${availableParallelism()} here)
  --write        also update BENCHMARKS.md, the chart and bench/results/latest.json after --quick
  --no-python    do not measure Python Celery (a full run otherwise requires it)
  --no-fallback  do not measure celery-sign on its node:crypto fallback (CELERY_SIGN_BACKEND=js)
  --one-path     on a CPU with a SIMD kernel (IFMA or AVX2), do not also measure celery-sign
                 with CELERY_SIGN_SIMD=0 (AWS-LC, the path of CPUs without them) in a child
  --only IDS     measure only these contenders (comma-separated: ${CONTENDER_IDS.join(',')}),
                 e.g. --only cs-many,cs-js,node-cb,node-pool for the fallback against its peers
  --from FILE    measure nothing: report a saved --json result (with --write, rewrite the docs)
  --chart FILE   also write this run's SVG chart to FILE (and print its path)
  -h, --help     this text

Python Celery: $CELERY_SIGN_PYTHON if set, else .venv/bin/python, else /tmp/pyvenv/bin/python.`;

interface Options {
  fallback: boolean;
  secondPath: boolean;
  only: ReadonlySet<ContenderId> | null;
  quick: boolean;
  json: boolean;
  write: boolean;
  python: boolean;
  threads: number;
  from: string | null;
  chart: string | null;
  argv: string[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { fallback: true, secondPath: true, only: null, quick: false, json: false, write: false, python: true, threads: availableParallelism(), from: null, chart: null, argv };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = true;
    else if (a === '--write') o.write = true;
    else if (a === '--no-python') o.python = false;
    else if (a === '--no-fallback') o.fallback = false;
    else if (a === '--one-path') o.secondPath = false;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const ids = (v ?? '').split(',').filter((x) => x !== '');
      const unknown = ids.filter((x) => !(CONTENDER_IDS as readonly string[]).includes(x));
      if (ids.length === 0 || unknown.length > 0) throw new UsageError(`--only needs contender ids among ${CONTENDER_IDS.join(', ')}, not ${JSON.stringify(v)}`);
      o.only = new Set(ids as ContenderId[]);
    }
    else if (a === '--chart' || a.startsWith('--chart=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new UsageError('--chart needs a file');
      o.chart = v;
    }
    else if (a === '--from') {
      const v = argv[++i];
      if (!v) throw new UsageError('--from needs a file');
      o.from = v;
    }
    else if (a === '--threads' || a.startsWith('--threads=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--threads needs a positive integer, not ${JSON.stringify(v)}`);
      o.threads = n;
    } else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else throw new UsageError(`unknown option ${a}`);
  }
  return o;
}

class UsageError extends Error {}

function log(progress: Progress, json: boolean, text: string): void {
  progress.clear();
  // With --json, stdout is for the JSON alone.
  (json ? process.stderr : process.stdout).write(text + '\n');
}

function output(results: BenchResults, opts: Options, progress: Progress): void {
  if (opts.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
  else process.stdout.write(renderTerminalReport(results));
  if ((results.mode === 'full' && !opts.from) || opts.write) {
    const dir = join(BENCH_DIR, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'throughput.svg'), throughputSvg(results));
    if (!opts.from) writeFileSync(join(dir, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
    const mdPath = join(ROOT, 'BENCHMARKS.md');
    const existing = existsSync(mdPath) ? readFileSync(mdPath, 'utf8') : null;
    writeFileSync(mdPath, mergeMarkdown(existing, renderMarkdownReport(results, 'bench/results/throughput.svg')));
    log(progress, opts.json, `wrote BENCHMARKS.md, bench/results/throughput.svg${opts.from ? '' : ' and bench/results/latest.json'}`);
  }
  if (opts.chart) {
    mkdirSync(dirname(resolve(opts.chart)), { recursive: true });
    writeFileSync(opts.chart, throughputSvg(results));
    log(progress, opts.json, `chart: ${resolve(opts.chart)}`);
  }
  if (opts.json) {
    for (const t of results.targets) process.stderr.write(`${targetStatus(t)}  ${t.title}: ${targetMeasured(t)} (${t.required})\n`);
  }
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.from) {
    const saved = JSON.parse(readFileSync(opts.from, 'utf8')) as BenchResults;
    if (saved.schema !== 1) throw new UsageError(`${opts.from} is not a saved result of this benchmark`);
    output({ ...saved, targets: computeTargets(saved), notes: computeNotes(saved) }, opts, new Progress());
    return 0;
  }
  const mode = opts.quick ? 'quick' : 'full';
  const plan = makePlan(mode);
  const t0 = performance.now();
  const startMachine = machine();
  // The second RSA path (AWS-LC, CELERY_SIGN_SIMD=0): only where this
  // process runs a SIMD kernel (IFMA or AVX2).
  const mainPath = startMachine.rsaPath!;
  let secondWhy = '';
  if (mainPath !== 'ifma' && mainPath !== 'avx2') {
    secondWhy =
      mainPath === 'aws-lc'
        ? 'this CPU has neither AVX-512 IFMA nor AVX2: AWS-LC is the only RSA path'
        : mainPath === 'aws-lc-forced'
          ? 'CELERY_SIGN_SIMD=0 is set for the whole run: AWS-LC is the only RSA path measured'
          : 'the run is on the node:crypto fallback';
  } else if (!opts.secondPath) secondWhy = '--one-path';
  else if (opts.only && !opts.only.has('cs-nosimd')) secondWhy = 'not among --only';
  const keep = (id: ContenderId) => (!opts.only || opts.only.has(id)) && (id !== 'cs-nosimd' || secondWhy === '');
  for (const section of plan.sections) {
    section.cells = section.cells.map((c) => ({ ...c, contenders: c.contenders.filter(keep) })).filter((c) => c.contenders.length > 0);
  }
  plan.eventLoop.which = plan.eventLoop.which.filter((id) => id !== 'cs-nosimd' || secondWhy === '');
  const progress = new Progress();
  const problems: string[] = [];
  const phases: { name: string; seconds: number }[] = [];
  let phaseStart = performance.now();
  const endPhase = (name: string) => {
    const now = performance.now();
    phases.push({ name, seconds: (now - phaseStart) / 1000 });
    phaseStart = now;
  };

  // Python first: a full run without it is an error, found before any time is spent.
  let python: PythonCelery | null = null;
  let pythonInfo: BenchResults['python'];
  if (!opts.python) pythonInfo = { status: 'not measured', reason: '--no-python' };
  else {
    progress.phase('looking for Python Celery');
    const found = findPython();
    if (!found.found) {
      if (mode === 'full') {
        progress.clear();
        process.stderr.write(
          `bench: the full run measures Python Celery, but ${found.reason}.\n` +
            'Create the venv (scripts/setup-python.sh), set CELERY_SIGN_PYTHON, or pass --no-python.\n',
        );
        return 2;
      }
      pythonInfo = { status: 'not measured', reason: found.reason };
    } else {
      python = await PythonCelery.start(found.path);
      pythonInfo = { status: 'measured', path: relative(ROOT, found.path) || found.path, versions: python.versions! };
    }
  }

  // Threads: before the first batch.
  setThreads(opts.threads);
  if (threadCount() !== opts.threads) problems.push(`celery-sign runs ${threadCount()} threads, not the ${opts.threads} asked for`);

  const keys = loadKeys();
  const serializers = new Serializers(keys);
  const pool = new WorkerPool(opts.threads, keys);
  // The fallback runs in a child process of its own (the facade picks its backend at import).
  let fallback: FallbackProcess | null = null;
  let fallbackMissing = opts.fallback ? '' : '--no-fallback';
  if (opts.fallback && (!opts.only || opts.only.has('cs-js'))) {
    try {
      fallback = await FallbackProcess.start(opts.threads);
    } catch (err) {
      fallbackMissing = `the fallback child did not start: ${(err as Error).message}`;
      problems.push(fallbackMissing);
    }
  }
  // The other RSA path (CELERY_SIGN_SIMD=0) in a child of its own: the addon reads it at load.
  let second: FallbackProcess | null = null;
  if (secondWhy === '') {
    progress.phase('starting the CELERY_SIGN_SIMD=0 child');
    try {
      second = await FallbackProcess.start(opts.threads, 'nosimd');
    } catch (err) {
      secondWhy = `the CELERY_SIGN_SIMD=0 child did not start: ${(err as Error).message}`;
      problems.push(secondWhy);
    }
  }
  const paths: PathInfo[] = [
    { contender: 'cs-many', rsaPath: mainPath, status: 'measured', where: 'this process' },
    second
      ? { contender: 'cs-nosimd', rsaPath: 'aws-lc-forced', status: 'measured', where: 'a child process started with CELERY_SIGN_SIMD=0' }
      : { contender: 'cs-nosimd', rsaPath: 'aws-lc-forced', status: 'not measured', where: '', reason: secondWhy },
  ];
  const all: Contender[] = [
    ...celerySignContenders(serializers),
    ...webCryptoContenders(keys),
    ...nodeCryptoContenders(keys),
    ...workerPoolContenders(pool),
    ...(python ? python.contenders(keys) : []),
    ...(fallback ? fallback.contenders(keys) : []),
    ...(second ? second.contenders(keys) : []),
  ];
  const contenders = new Map(all.map((c) => [contenderKey(c.op, c.id), c]));
  const notMeasured = new Map<ContenderId, string>();
  if (!python) notMeasured.set('python', `Python Celery not measured: ${pythonInfo.reason ?? ''}`);
  if (!fallback) notMeasured.set('cs-js', `the node:crypto fallback not measured: ${fallbackMissing || 'not asked for'}`);
  if (!second) notMeasured.set('cs-nosimd', `CELERY_SIGN_SIMD=0 not measured: ${secondWhy}`);

  // The limit, at the start (and in full mode RSA-2048 again at the end).
  const version = opensslVersion();
  const openssl: OpensslSummary = {
    status: version ? 'measured' : 'not measured',
    version,
    processes: opts.threads,
    seconds: plan.openssl.seconds,
    how: plan.openssl.interleave
      ? `openssl speed -elapsed: rsa2048 for 1 s per operation, 1 core and -multi ${opts.threads}, once in every headline round among the contenders` +
        (plan.openssl.bits.length > 0 ? `; ${plan.openssl.bits.map((b) => `rsa${b}`).join(', ')} for ${plan.openssl.seconds} s per operation before the sections` : '')
      : `openssl speed -elapsed -seconds ${plan.openssl.seconds}: ${[2048, ...plan.openssl.bits.filter((b) => b !== 2048)].map((b) => `rsa${b}`).join(', ')}, 1 core and -multi ${opts.threads}, once before the sections`,
    single: {},
    multi: {},
  };
  const speedOne = async (kind: 'single' | 'multi', bits: Bits[], seconds: number) => {
    try {
      const r = await opensslSpeed(bits, seconds, kind === 'multi' ? opts.threads : null);
      for (const [b, v] of r.rates) {
        const slot = (openssl[kind][b] ??= { sign: [], verify: [] });
        slot.sign.push(v.sign);
        slot.verify.push(v.verify);
      }
    } catch (err) {
      problems.push(`openssl speed failed: ${(err as Error).message}`);
    }
  };
  const speedLabel = (kind: 'single' | 'multi', bits: Bits[]) =>
    `openssl speed${kind === 'multi' ? ` -multi ${opts.threads}` : ''} ${bits.map((b) => `rsa${b}`).join(' ')}`;
  if (!version) openssl.note = 'no openssl on PATH';
  endPhase('set-up (Python, keys, worker pool)');
  const first: Bits[] = plan.openssl.interleave ? plan.openssl.bits : [2048, ...plan.openssl.bits.filter((b) => b !== 2048)];
  if (version && first.length > 0) {
    for (const kind of ['single', 'multi'] as const) {
      progress.phase(speedLabel(kind, first));
      await speedOne(kind, first, plan.openssl.seconds);
    }
    endPhase('openssl speed');
  }
  // With `interleave` (both modes) RSA-2048's limit is sampled once a round among the headline's contenders.
  const interleave =
    version && plan.openssl.interleave
      ? (['single', 'multi'] as const).map((kind) => ({
          label: speedLabel(kind, [2048]),
          run: () => speedOne(kind, [2048], 1),
        }))
      : [];

  // The sections.
  const cells: CellResult[] = [];
  const headSpec: DatasetSpec = { bits: 2048, digest: 'sha256', bodySize: HEADLINE_BODY, n: 4096 };
  let head: Dataset | undefined;
  for (const section of plan.sections) {
    const datasets = new Map<string, Dataset>();
    if (head) datasets.set(head.id, head);
    const extra = section.id === 'headline' ? interleave : [];
    cells.push(...(await runSection(section, { keys, serializers, contenders, notMeasured, progress, seed: 20240601, datasets, interleave: extra })));
    head ??= datasets.get(datasetId(headSpec));
    endPhase(`section ${section.id}`);
  }
  for (const c of cells) {
    if (c.status === 'wrong-answer') problems.push(`${c.label} gave a wrong answer on ${c.op} ${c.dataset} x${c.batch}: ${c.note}`);
  }

  // Event-loop delay while batches of 4096 run back to back.
  head ??= await makeDataset(headSpec, serializers);
  const headCell = (op: 'verify' | 'sign'): Cell => ({ op, dataset: head!, batch: 4096 });
  const eventLoop: EventLoopResult[] = [];
  const s2048 = serializers.get(2048, 'sha256');
  const eld: Record<Exclude<(typeof plan.eventLoop.which)[number], 'cs-nosimd'>, [string, () => Promise<unknown>]> = {
    'cs-many': [`celery-sign deserializeMany (${RSA_PATH_SHORT[mainPath]})`, () => s2048.deserializeMany(head!.payloads)],
    'cs-serialize-many': ['celery-sign serializeMany', () => s2048.serializeMany(head!.values)],
    'node-pool': [`node:crypto worker_threads pool (${pool.size} workers), verify`, () => pool.verify(head!.payloads, 4096, 'sha256')],
    'wc-all': ['WebCrypto verify, Promise.all', () => contenders.get(contenderKey('verify', 'wc-all'))!.answer(headCell('verify'))],
  };
  for (const id of plan.eventLoop.which) {
    if (id === 'cs-nosimd') {
      if (!second) continue;
      progress.phase(`event-loop delay: celery-sign deserializeMany with CELERY_SIGN_SIMD=0 (in its process), batches of 4096 for ${plan.eventLoop.seconds} s`);
      try {
        eventLoop.push(await second.eventLoopDelay(head, keys, 4096, plan.eventLoop.seconds));
      } catch (err) {
        problems.push(`event-loop delay with CELERY_SIGN_SIMD=0 failed: ${(err as Error).message}`);
      }
      continue;
    }
    const [label, run] = eld[id];
    progress.phase(`event-loop delay: ${label}, batches of 4096 for ${plan.eventLoop.seconds} s`);
    eventLoop.push(await eventLoopDelay(id, label, 4096, plan.eventLoop.seconds, run));
  }
  endPhase('event-loop delay');

  // Resident memory over many payloads.
  progress.phase(`memory: ${plan.memory.payloads.toLocaleString('en-US')} payloads through deserializeMany`);
  const memory = await memoryGrowthInChild(plan.memory.payloads, plan.memory.chunk, opts.threads, (done) =>
    progress.show(`${done.toLocaleString('en-US')} payloads`, true),
  );

  let memorySecond: Awaited<ReturnType<typeof memoryGrowthInChild>> | null = null;
  if (second) {
    progress.phase(`memory with CELERY_SIGN_SIMD=0: ${plan.memory.payloads.toLocaleString('en-US')} payloads through deserializeMany`);
    try {
      memorySecond = await memoryGrowthInChild(
        plan.memory.payloads,
        plan.memory.chunk,
        opts.threads,
        (done) => progress.show(`${done.toLocaleString('en-US')} payloads`, true),
        { CELERY_SIGN_BACKEND: 'native', CELERY_SIGN_SIMD: '0' },
      );
    } catch (err) {
      problems.push(`memory with CELERY_SIGN_SIMD=0 failed: ${(err as Error).message}`);
    }
  }

  endPhase('memory');
  await pool.close();
  await python?.close();
  await fallback?.close();
  await second?.close();
  progress.clear();

  const partial: Omit<BenchResults, 'targets' | 'notes'> = {
    schema: 1,
    mode,
    argv: opts.argv,
    date: new Date().toISOString(),
    durationSeconds: (performance.now() - t0) / 1000,
    machine: startMachine,
    loadAverageEnd: loadavg() as [number, number, number],
    threads: { celerySign: threadCount(), workerPool: pool.size, uvThreadpool: process.env.UV_THREADPOOL_SIZE ?? '4 (default)' },
    python: pythonInfo,
    openssl,
    coverage: [
      ...plan.coverage,
      second
        ? `two RSA paths: celery-sign in this process (${RSA_PATH_SHORT[mainPath]}) and, as its own rows (cs-nosimd), deserializeMany/serializeMany in a child with CELERY_SIGN_SIMD=0 (AWS-LC), with event-loop delay and memory; targets for each`
        : `one RSA path (${RSA_PATH_LABEL[mainPath]}): ${secondWhy}`,
      ...(python ? [] : ['Python Celery: not measured']),
    ],
    contenders: all.map((c) => ({ op: c.op, id: c.id, label: c.label, does: c.does })),
    cells,
    eventLoop,
    memory: { ...memory, quick: mode === 'quick' },
    memorySecond: memorySecond ? { ...memorySecond, quick: mode === 'quick' } : null,
    paths,
    problems,
    phases,
  };
  const [startLoad] = startMachine.loadAverage;
  const [endLoad] = partial.loadAverageEnd;
  // The run itself keeps about `threads` cores busy: more than that at the end means other work.
  if (startLoad > 0.5 || endLoad > opts.threads + 1) {
    problems.push(
      `the machine was busy: load average ${startLoad.toFixed(2)} at the start, ${endLoad.toFixed(2)} at the end ` +
        `(${startMachine.cores} cores, the run itself adds about ${opts.threads}); figures are noisy`,
    );
  }
  const results: BenchResults = { ...partial, targets: computeTargets(partial), notes: computeNotes(partial) };

  output(results, opts, progress);
  return problems.some((p) => p.includes('wrong answer')) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write('\n');
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
