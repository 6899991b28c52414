/**
 * `celery-sign bench`: the throughput demo (bench/run.ts of the repository).
 *
 * @internal
 * @module
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { CliError, EXIT, flag, int, str, UsageError, type Command } from './common.js';

/** The package's root: lib/cli/ -> ../.. */
export const PACKAGE_ROOT = resolve(__dirname, '..', '..');

export const benchCmd: Command = {
  summary: 'the throughput demo: celery-sign against its peers on this machine',
  help: `Usage: celery-sign bench [--quick] [options]

Runs the benchmark suite of a clone of the repository (bench/run.ts; the
benchmark is not in the published package): celery-sign's batch and async API,
node:crypto, WebCrypto, a worker_threads pool, openssl speed and, when found,
Python Celery, on the built-in keys. Shows a progress line on a terminal, then
the table and the path of the SVG chart.

Options:
  --quick        a short run (under a minute), the README's main job
  --json         the results as JSON on stdout
  --threads N    native threads, pool size and openssl -multi (default: the cores)
  --no-python    do not measure Python Celery
  --chart FILE   where to write the chart (default bench/results/quick.svg with
                 --quick; a full run writes bench/results/throughput.svg and BENCHMARKS.md)
  --write        with --quick, also rewrite BENCHMARKS.md and bench/results/
  --from FILE    measure nothing: show a saved --json result (its table and chart)
  -h, --help     this text

Example:
  npx celery-sign bench --quick`,
  options: {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    threads: { type: 'string' },
    'no-python': { type: 'boolean' },
    chart: { type: 'string' },
    write: { type: 'boolean' },
    from: { type: 'string' },
  },
  async run(p, io) {
    const script = join(PACKAGE_ROOT, 'bench', 'run.ts');
    if (!existsSync(script)) {
      throw new CliError('bench runs in a clone of the celery-sign repository (bench/ is not in the published package)');
    }
    let tsx: string;
    try {
      tsx = createRequire(join(PACKAGE_ROOT, 'package.json')).resolve('tsx');
    } catch {
      throw new CliError('bench needs the development dependencies: run npm ci (or bash scripts/setup.sh) first');
    }
    const args: string[] = [];
    if (flag(p, 'quick')) args.push('--quick');
    if (flag(p, 'json')) args.push('--json');
    if (flag(p, 'write')) args.push('--write');
    if (flag(p, 'no-python')) args.push('--no-python');
    const from = str(p, 'from');
    if (from !== undefined) args.push('--from', resolve(from));
    if (str(p, 'threads') !== undefined) {
      const threads = int(p, 'threads', 0);
      if (threads < 1) throw new UsageError('--threads must be at least 1');
      args.push('--threads', String(threads));
    }
    const chartOpt = str(p, 'chart');
    const chart = chartOpt !== undefined ? resolve(chartOpt) : (flag(p, 'quick') || from !== undefined) && !flag(p, 'write') ? join(PACKAGE_ROOT, 'bench', 'results', 'quick.svg') : undefined;
    if (chart !== undefined) args.push('--chart', chart);
    // The process's own streams go to the child as they are, so that its
    // progress line shows when stderr is a terminal (bench/measure.ts Progress).
    const own = io.stdout === process.stdout && io.stderr === process.stderr;
    const child = spawn(process.execPath, ['--import', tsx, script, ...args], {
      cwd: PACKAGE_ROOT,
      stdio: own ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
      env: io.env,
    });
    child.stdout?.pipe(io.stdout, { end: false });
    child.stderr?.pipe(io.stderr, { end: false });
    const code = await new Promise<number>((done) => child.on('close', (c, sig) => done(sig ? EXIT.RUNTIME : (c ?? EXIT.RUNTIME))));
    if (code === 2) return EXIT.USAGE;
    return code === 0 ? EXIT.OK : EXIT.RUNTIME;
  },
};
