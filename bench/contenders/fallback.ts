/**
 * celery-sign on its node:crypto fallback backend (CELERY_SIGN_BACKEND=js):
 * deserializeMany and serializeMany, in a child process (./fallback-child.ts),
 * since the facade picks its backend when it is imported. Timed inside the
 * child, as Python Celery is.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, ROOT, type Dataset, type Keys } from '../workloads.js';
import { LineChild } from './line-child.js';
import { SIGN_DOES, VERIFY_DOES, type Cell, type Contender, type Sample } from './types.js';

export class FallbackProcess {
  readonly threads: number;
  readonly #child: LineChild;
  readonly #loaded = new Set<string>();

  private constructor(threads: number) {
    this.threads = threads;
    this.#child = new LineChild('the fallback child', process.execPath, ['--import=tsx', join(BENCH_DIR, 'contenders', 'fallback-child.ts')], {
      cwd: ROOT,
      env: { ...process.env, CELERY_SIGN_BACKEND: 'js' },
    });
  }

  /** Starts the child with `threads` worker threads; fails unless it runs on the fallback. */
  static async start(threads: number): Promise<FallbackProcess> {
    const p = new FallbackProcess(threads);
    const hello = await p.request({ op: 'hello', threads });
    if (hello.backend !== 'js') throw new Error(`the fallback child runs on backend ${String(hello.backend)}`);
    return p;
  }

  request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.#child.request(req);
  }

  async #load(dataset: Dataset, keys: Keys): Promise<void> {
    if (this.#loaded.has(dataset.id)) return;
    const k = keys.get(dataset.bits);
    const file = join(this.#child.tmp, `${dataset.id}.json`);
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

  close(): Promise<void> {
    return this.#child.close();
  }
}
