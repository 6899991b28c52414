/**
 * The worker end to end (issue 11): a real redis-server as broker and result
 * backend, a trivial `add` task, the queue pre-filled by each worker's own
 * producer; each worker is then started at its default settings and timed
 * from the first result it stores to the last. Every peer runs in this one
 * run, on the same redis-server:
 *
 * - celery-sign's worker with `auth` (RSA-2048/SHA-256, verified against the
 *   store), filled by celery-sign's client; where the CPU has AVX-512 IFMA,
 *   also once more with CELERY_SIGN_SIMD=0 (`celery-sign-nosimd`: AWS-LC, the
 *   RSA path of every CPU without IFMA);
 * - stock Python Celery's worker with `auth`, filled by Celery's own
 *   `send_task` under `setup_security()`: prefork (its default pool, `-c` the
 *   cores) and threads, the better of the two counting;
 * - celery-node's worker on unsigned JSON, logging off, filled by its client.
 *
 * Reported per peer: tasks/s (N-1 over the spread of the results' `date_done`),
 * and tasks per CPU-second (N over the CPU time of the worker's process tree,
 * children included, from its `ready` to its last result). Ratios are of the
 * same run.
 *
 *   npm run bench:worker [-- --n 20000 --python-n 4000 --rounds 3 --json out.json
 *                         --only celery-sign,celery-sign-nosimd,celery-node,python-prefork,python-threads
 *                         --one-path --write --from saved.json --chart out.svg]
 *
 * --json FILE writes the results (bench/worker/report.ts WorkerResults) to
 * FILE; --write also puts the "Worker end to end" section into BENCHMARKS.md
 * (between its own markers, apart from `npm run bench`'s), the chart into
 * bench/results/worker.svg and the results into bench/results/worker.json;
 * --from FILE measures nothing and reports a saved result (with --write,
 * rewrites those files from it).
 *
 * BENCH_CPU_PROF=DIR (a diagnostic): the Node workers run with `--cpu-prof`
 * and write their V8 CPU profiles into DIR when they stop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { makePki, runProducer, startCeleryWorker, type Pki } from '../../test/wire/helpers/celery.js';
import { doneSpread, median } from '../../test/wire/helpers/bench.js';
import { startRedis, type RedisServer } from '../../test/wire/helpers/redis-server.js';
import { machine, simdForcedOff } from '../machine.js';
import {
  computeWorkerTargets,
  mergeWorkerMarkdown,
  renderWorkerMarkdown,
  renderWorkerTerminal,
  workerSvg,
  type WorkerPeer,
  type WorkerResults,
  type WorkerRound,
} from './report.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHILD = join(HERE, 'child.ts');
const ROOT = join(HERE, '..', '..');

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Math.max(1, Number(process.argv[at + 1]) || fallback) : fallback;
}
const N = arg('n', 20000);
const PYTHON_N = arg('python-n', 4000);
const ROUNDS = arg('rounds', 3);
function strArg(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return undefined;
  const v = process.argv[at + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a file`);
  return v;
}
const JSON_OUT = strArg('json');
const FROM = strArg('from');
const CHART = strArg('chart');
const WRITE = process.argv.includes('--write');
const ONE_PATH = process.argv.includes('--one-path');
const ONLY = (() => {
  const at = process.argv.indexOf('--only');
  return at >= 0 ? new Set(process.argv[at + 1]!.split(',')) : null;
})();
const TICKS = 100; // USER_HZ on Linux

/** CPU seconds (user + system) of a process and every descendant alive now. */
function treeCpu(root: number): number {
  const parent = new Map<number, number>();
  const cpu = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(rest[1]));
      cpu.set(Number(name), (Number(rest[11]) + Number(rest[12])) / TICKS);
    } catch {
      // gone
    }
  }
  let total = 0;
  for (const [pid, c] of cpu) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        total += c;
        break;
      }
    }
  }
  return total;
}

function runChild(cfg: { mode: string; [k: string]: unknown }, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const profDir = process.env.BENCH_CPU_PROF;
  const prof = profDir && cfg.mode.endsWith('-work') ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  return spawn(process.execPath, [...prof, '--import=tsx', CHILD, JSON.stringify(cfg)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, ...env },
  });
}

function childDone(child: ChildProcess, what: string): Promise<void> {
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  return new Promise((resolve, reject) =>
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${what} exited ${code}: ${err.slice(-2000)}`)))),
  );
}

function childReady(child: ChildProcess, what: string): Promise<void> {
  let out = '';
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`${what} exited ${code} before ready: ${err.slice(-2000)}`)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(-child.pid!, 'SIGTERM');
  } catch {
    /* gone */
  }
  const t = setTimeout(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, 15000);
  await exited;
  clearTimeout(t);
}

/** Samples the tree's CPU while `done` is pending; returns CPU seconds from start to the last sample. */
async function cpuWhile(root: number, done: Promise<void>): Promise<number> {
  const start = treeCpu(root);
  let last = start;
  let finished = false;
  void done.then(
    () => (finished = true),
    () => (finished = true),
  );
  while (!finished) {
    last = treeCpu(root);
    await new Promise((res) => setTimeout(res, 20));
  }
  return Math.max(last, treeCpu(root)) - start;
}

type Round = WorkerRound;

interface Peer {
  name: string;
  what: string;
  n: number;
  run(db: number): Promise<Round>;
}

/**
 * Waits until every task has a result, cheaply: tasks finish roughly in queue
 * order, so only the first 500 ids still missing are read each time (a poll
 * of every id would load the redis-server the workers share).
 */
async function waitResults(r: Redis, ids: string[], ms = 900000): Promise<void> {
  const deadline = Date.now() + ms;
  let pending = ids;
  while (pending.length > 0) {
    const head = pending.slice(0, 500);
    const values = await r.mget(...head.map((id) => `celery-task-meta-${id}`));
    const missing = head.filter((_, i) => values[i] === null);
    pending = [...missing, ...pending.slice(head.length)];
    if (missing.length === head.length || missing.length > 0) {
      if (Date.now() > deadline) throw new Error(`${pending.length} results missing`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }
}

async function drain(r: Redis, ids: string[], root: number): Promise<Round> {
  const all = waitResults(r, ids);
  const cpu = await cpuWhile(root, all);
  await all;
  const spread = await doneSpread(r, ids);
  return { rate: (ids.length - 1) / spread, perCpu: ids.length / cpu };
}

function peers(redis: RedisServer, pki: Pki, tmp: string): Peer[] {
  const nodePeer = (name: string, what: string, fill: 'sign-fill' | 'cn-fill', work: 'sign-work' | 'cn-work', env: NodeJS.ProcessEnv = {}): Peer => ({
    name,
    what,
    n: N,
    async run(db) {
      const url = redis.url(db);
      const idsFile = join(tmp, `${name}-${db}.json`);
      const base = { url, key: pki.key, cert: pki.cert, storeDir: pki.storeDir };
      await childDone(runChild({ ...base, mode: fill, n: N, idsFile }), `${name} producer`);
      const ids = JSON.parse(readFileSync(idsFile, 'utf8')) as string[];
      const r = new Redis(url);
      const w = runChild({ ...base, mode: work }, env);
      try {
        await childReady(w, `${name} worker`);
        return await drain(r, ids, w.pid!);
      } finally {
        await stopChild(w);
        r.disconnect();
      }
    },
  });
  const pythonPeer = (pool: 'prefork' | 'threads', concurrency: number): Peer => ({
    name: `python-${pool}`,
    what: `Python Celery worker, auth, --pool=${pool} -c ${concurrency}`,
    n: PYTHON_N,
    async run(db) {
      const url = redis.url(db);
      const queue = 'celery';
      const filled = await runProducer<{ ids: string[] }>(pki, url, { op: 'bulk', name: 'wire.add', count: PYTHON_N, queue, kwargs: { y: 1 } }, { timeoutMs: 600000 });
      const r = new Redis(url);
      const w = await startCeleryWorker(pki, { broker: url, queues: [queue], pool, concurrency });
      try {
        return await drain(r, filled.ids, w.pid);
      } finally {
        await w.stop();
        r.disconnect();
      }
    },
  });
  const m = machine();
  const cores = m.cores;
  // The second RSA path where this CPU has one: the worker alone runs with the kernels off.
  const nosimd =
    !ONE_PATH && m.rsaPath === 'ifma'
      ? [
          nodePeer(
            'celery-sign-nosimd',
            'celery-sign worker, auth (default settings), CELERY_SIGN_SIMD=0',
            'sign-fill',
            'sign-work',
            { CELERY_SIGN_BACKEND: 'native', CELERY_SIGN_SIMD: '0' },
          ),
        ]
      : [];
  return [
    nodePeer('celery-sign', 'celery-sign worker, auth (default settings)', 'sign-fill', 'sign-work'),
    ...nosimd,
    pythonPeer('prefork', cores),
    pythonPeer('threads', Math.max(4, cores * 2)),
    nodePeer('celery-node', 'celery-node 0.5.9 worker, unsigned JSON, logging off', 'cn-fill', 'cn-work'),
  ];
}

function output(r: WorkerResults): void {
  process.stdout.write(renderWorkerTerminal(r));
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify(r, null, 2) + '\n');
  if (WRITE) {
    const dir = join(ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'worker.svg'), workerSvg(r));
    if (!FROM) writeFileSync(join(dir, 'worker.json'), JSON.stringify(r, null, 2) + '\n');
    const mdPath = join(ROOT, 'BENCHMARKS.md');
    const existing = existsSync(mdPath) ? readFileSync(mdPath, 'utf8') : null;
    writeFileSync(mdPath, mergeWorkerMarkdown(existing, renderWorkerMarkdown(r, 'bench/results/worker.svg')));
    process.stdout.write(`wrote BENCHMARKS.md (the worker section), bench/results/worker.svg${FROM ? '' : ' and bench/results/worker.json'}\n`);
  }
  if (CHART) {
    mkdirSync(dirname(resolve(CHART)), { recursive: true });
    writeFileSync(CHART, workerSvg(r));
    process.stdout.write(`chart: ${resolve(CHART)}\n`);
  }
}

async function main(): Promise<void> {
  if (FROM) {
    const saved = JSON.parse(readFileSync(FROM, 'utf8')) as WorkerResults;
    if (saved.schema !== 1 || !saved.results) throw new Error(`${FROM} is not a saved result of bench/worker/run.ts`);
    output({ ...saved, targets: computeWorkerTargets(saved.results, saved.rsaPath) });
    return;
  }
  const t0 = performance.now();
  const m = machine();
  const tmp = mkdtempSync(join(tmpdir(), 'celery-sign-bench-worker-'));
  const pki = makePki();
  const redis = await startRedis();
  const results: Record<string, WorkerPeer> = {};
  try {
    const list = peers(redis, pki, tmp).filter((p) => !ONLY || ONLY.has(p.name));
    let db = 0;
    // Rounds interleave the peers, so that a change of load hits them alike.
    for (let round = 0; round < ROUNDS; round++) {
      for (const p of list) {
        db = (db % 15) + 1;
        const admin = new Redis(redis.url(db));
        await admin.flushdb();
        admin.disconnect();
        const res = await p.run(db);
        (results[p.name] ??= { name: p.name, what: p.what, n: p.n, rounds: [], rate: 0, perCpu: 0 }).rounds.push(res);
        process.stderr.write(`round ${round + 1}/${ROUNDS} ${p.name}: ${res.rate.toFixed(0)} tasks/s, ${res.perCpu.toFixed(0)} tasks/CPU-s\n`);
      }
    }
  } finally {
    await redis.stop();
    pki.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
  for (const r of Object.values(results)) {
    r.rate = median(r.rounds.map((x) => x.rate));
    r.perCpu = median(r.rounds.map((x) => x.perCpu));
  }
  const ifma = m.ifma ?? false;
  const rsaPath = m.rsaPath ?? 'aws-lc';
  const simd = simdForcedOff() ? 'off (CELERY_SIGN_SIMD=0)' : ifma ? 'IFMA kernels' : 'AWS-LC (no IFMA on this CPU)';
  const end = loadavg() as [number, number, number];
  const problems: string[] = [];
  // The measured workers use about every core: more load than that at the end is other work.
  if (m.loadAverage[0] > 0.5 || end[0] > m.cores + 1) {
    problems.push(
      `the machine was busy: load average ${m.loadAverage[0].toFixed(2)} at the start, ${end[0].toFixed(2)} at the end (${m.cores} cores); figures are noisy`,
    );
  }
  output({
    schema: 1,
    date: new Date().toISOString(),
    // The command as it measures: output files and --write are not part of it.
    argv: process.argv.slice(2).filter((a, i, all) => a !== '--write' && !['--json', '--chart'].includes(a) && !['--json', '--chart'].includes(all[i - 1] ?? '')),
    durationSeconds: (performance.now() - t0) / 1000,
    machine: { ...m, ifma, simd },
    rsaPath,
    loadAverageEnd: end,
    n: N,
    pythonN: PYTHON_N,
    rounds: ROUNDS,
    results,
    targets: computeWorkerTargets(results, rsaPath),
    problems,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
