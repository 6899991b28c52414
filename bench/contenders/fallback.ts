/**
 * celery-sign in a child process of its own (./fallback-child.ts):
 * deserializeMany and serializeMany, timed inside the child, as Python Celery
 * is. Two flavours, each fixed when the child loads celery-sign:
 *
 * - `js`: the node:crypto fallback backend (CELERY_SIGN_BACKEND=js; the
 *   facade picks its backend when it is imported), contender `cs-js`;
 * - `nosimd`: the native backend with CELERY_SIGN_SIMD=0 (the addon reads it
 *   once, at load), so AWS-LC does the RSA step as on a CPU without AVX-512
 *   IFMA: the second path of a run on a CPU that has IFMA, contender `cs-nosimd`.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, ROOT, type ContenderId, type Dataset, type Keys } from '../workloads.js';
import type { EventLoopResult } from '../extras.js';
import { LineChild } from './line-child.js';
import { SIGN_DOES, VERIFY_DOES, type Cell, type Contender, type Sample } from './types.js';

export type ChildFlavour = 'js' | 'nosimd';

const FLAVOURS: Record<ChildFlavour, { name: string; id: ContenderId; backend: string; env: NodeJS.ProcessEnv }> = {
  js: { name: 'the fallback child', id: 'cs-js', backend: 'js', env: { CELERY_SIGN_BACKEND: 'js' } },
  nosimd: { name: 'the CELERY_SIGN_SIMD=0 child', id: 'cs-nosimd', backend: 'native', env: { CELERY_SIGN_BACKEND: 'native', CELERY_SIGN_SIMD: '0' } },
};

export class FallbackProcess {
  readonly threads: number;
  readonly flavour: ChildFlavour;
  readonly #child: LineChild;
  readonly #loaded = new Set<string>();

  private constructor(threads: number, flavour: ChildFlavour) {
    this.threads = threads;
    this.flavour = flavour;
    const f = FLAVOURS[flavour];
    this.#child = new LineChild(f.name, process.execPath, ['--import=tsx', join(BENCH_DIR, 'contenders', 'fallback-child.ts')], {
      cwd: ROOT,
      env: { ...process.env, ...f.env },
    });
  }

  /**
   * Starts the child with `threads` threads; fails unless it runs on the
   * backend of its flavour (and, for `nosimd`, with the kernels off).
   */
  static async start(threads: number, flavour: ChildFlavour = 'js'): Promise<FallbackProcess> {
    const p = new FallbackProcess(threads, flavour);
    try {
      const hello = await p.request({ op: 'hello', threads });
      const want = FLAVOURS[flavour].backend;
      if (hello.backend !== want) throw new Error(`${FLAVOURS[flavour].name} runs on backend ${String(hello.backend)}, not ${want}`);
      if (flavour === 'nosimd' && hello.simd !== '0') throw new Error(`${FLAVOURS[flavour].name} sees CELERY_SIGN_SIMD=${String(hello.simd)}`);
    } catch (err) {
      await p.close().catch(() => undefined);
      throw err;
    }
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
    const id = FLAVOURS[this.flavour].id;
    const label =
      this.flavour === 'js'
        ? `celery-sign on its node:crypto fallback (CELERY_SIGN_BACKEND=js, ${this.threads} worker threads)`
        : `celery-sign without the IFMA kernels (CELERY_SIGN_SIMD=0: AWS-LC, ${this.threads} threads, own process)`;
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
      { id, op: 'verify', label: `${label}: deserializeMany`, does: VERIFY_DOES, prepare, answer, sample },
      { id, op: 'sign', label: `${label}: serializeMany`, does: SIGN_DOES, prepare, answer, sample },
    ];
  }

  /** Event-loop delay in the child while deserializeMany batches of `batch` run back to back for `seconds`. */
  async eventLoopDelay(dataset: Dataset, keys: Keys, batch: number, seconds: number): Promise<EventLoopResult> {
    await this.#load(dataset, keys);
    const res = await this.request({ op: 'eld', id: dataset.id, n: batch, seconds });
    return res.result as EventLoopResult;
  }

  close(): Promise<void> {
    return this.#child.close();
  }
}
