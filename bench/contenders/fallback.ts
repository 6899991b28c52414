/**
 * celery-sign on its node:crypto fallback backend (CELERY_SIGN_BACKEND=js):
 * deserializeMany and serializeMany, in a child process (./fallback-child.ts),
 * since the facade picks its backend when it is imported. Timed inside the
 * child, as Python Celery is.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BENCH_DIR, ROOT, type Dataset, type Keys } from '../workloads.js';
import { SIGN_DOES, VERIFY_DOES, type Cell, type Contender, type Sample } from './types.js';

export class FallbackProcess {
  readonly threads: number;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #waiting: { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  readonly #tmp: string;
  readonly #loaded = new Set<string>();
  #stderr = '';
  #closed = false;

  private constructor(threads: number) {
    this.threads = threads;
    this.#tmp = mkdtempSync(join(tmpdir(), 'celery-sign-bench-js-'));
    this.#child = spawn(process.execPath, ['--import=tsx', join(BENCH_DIR, 'contenders', 'fallback-child.ts')], {
      cwd: ROOT,
      env: { ...process.env, CELERY_SIGN_BACKEND: 'js' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.#child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.#stderr = (this.#stderr + d).slice(-4000);
    });
    createInterface({ input: this.#child.stdout }).on('line', (line) => {
      const w = this.#waiting.shift();
      if (!w) return;
      try {
        w.resolve(JSON.parse(line) as Record<string, unknown>);
      } catch (err) {
        w.reject(err as Error);
      }
    });
    this.#child.on('exit', (code) => {
      this.#closed = true;
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`the fallback child exited (${code}): ${this.#stderr}`));
    });
  }

  /** Starts the child with `threads` worker threads; fails unless it runs on the fallback. */
  static async start(threads: number): Promise<FallbackProcess> {
    const p = new FallbackProcess(threads);
    const hello = await p.request({ op: 'hello', threads });
    if (hello.backend !== 'js') throw new Error(`the fallback child runs on backend ${String(hello.backend)}`);
    return p;
  }

  async request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.#closed) throw new Error(`the fallback child is not running: ${this.#stderr}`);
    const p = new Promise<Record<string, unknown>>((resolve, reject) => this.#waiting.push({ resolve, reject }));
    this.#child.stdin.write(JSON.stringify(req) + '\n');
    const res = await p;
    if (res.ok !== true) throw new Error(`fallback ${String(req.op)}: ${String(res.error)}`);
    return res;
  }

  async #load(dataset: Dataset, keys: Keys): Promise<void> {
    if (this.#loaded.has(dataset.id)) return;
    const k = keys.get(dataset.bits);
    const file = join(this.#tmp, `${dataset.id}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        keyPath: k.keyPath,
        certPath: k.certPath,
        storePaths: [...keys.byBits.values()].map((m) => m.certPath),
        digest: dataset.digest,
        values: dataset.values,
        payloads: dataset.payloads,
      }),
    );
    try {
      await this.request({ op: 'load', id: dataset.id, file });
      this.#loaded.add(dataset.id);
    } finally {
      rmSync(file, { force: true });
    }
  }

  contenders(keys: Keys): Contender[] {
    const label = `celery-sign on its node:crypto fallback (CELERY_SIGN_BACKEND=js, ${this.threads} worker threads)`;
    const prepare = (dataset: Dataset) => this.#load(dataset, keys);
    const answer = async (cell: Cell): Promise<unknown[]> => {
      await this.#load(cell.dataset, keys);
      const res = await this.request({ op: 'answer', id: cell.dataset.id, kind: cell.op, n: cell.batch });
      return res.result as unknown[];
    };
    const sample = async (cell: Cell, minMs: number): Promise<Sample> => {
      const res = await this.request({ op: 'run', id: cell.dataset.id, kind: cell.op, n: cell.batch, minMs });
      return { ops: res.ops as number, seconds: res.seconds as number };
    };
    return [
      { id: 'cs-js', op: 'verify', label: `${label}: deserializeMany`, does: VERIFY_DOES, prepare, answer, sample },
      { id: 'cs-js', op: 'sign', label: `${label}: serializeMany`, does: SIGN_DOES, prepare, answer, sample },
    ];
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
      this.#child.stdin.end(JSON.stringify({ op: 'quit' }) + '\n');
      await exited;
    }
    rmSync(this.#tmp, { recursive: true, force: true });
  }
}
