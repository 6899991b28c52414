/** The node:crypto worker_threads pool (main side): one worker per core, a batch split evenly across them. */
import { Worker } from 'node:worker_threads';
import type { Keys } from '../workloads.js';
import type { WorkerInit, WorkerRequest, WorkerResponse } from '../verify-worker.js';
import { simpleContender, SIGN_DOES, VERIFY_DOES, type Cell, type Contender } from './types.js';

type Pending = { resolve: (v: unknown[]) => void; reject: (e: Error) => void };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class WorkerPool {
  readonly size: number;
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #seq = 0;

  constructor(size: number, keys: Keys) {
    this.size = size;
    const init: WorkerInit = {
      keys: [...keys.byBits.values()].map((k) => ({ bits: k.bits, id: k.id, keyPem: k.keyPem, certPem: k.certPem })),
    };
    // The worker is TypeScript: register tsx inside it before importing it.
    const tsx = import.meta.resolve('tsx/esm/api');
    const url = new URL('../verify-worker.ts', import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => m.register()).then(() => import(${JSON.stringify(url)}))`;
    for (let i = 0; i < size; i++) {
      const w = new Worker(boot, { eval: true, workerData: init });
      w.on('message', (res: WorkerResponse) => {
        const p = this.#pending.get(res.seq);
        if (!p) return;
        this.#pending.delete(res.seq);
        if (res.ok) p.resolve(res.result);
        else p.reject(new Error(res.error));
      });
      w.on('error', (err) => {
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      });
      this.#workers.push(w);
    }
  }

  #send(i: number, req: DistributiveOmit<WorkerRequest, 'seq'>, transfer: ArrayBuffer[] = []): Promise<unknown[]> {
    const seq = this.#seq++;
    return new Promise((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject });
      this.#workers[i]!.postMessage({ ...req, seq }, transfer);
    });
  }

  /** Splits `n` items into at most `size` contiguous non-empty slices. */
  #slices(n: number): [number, number][] {
    const parts = Math.min(this.size, n);
    const per = Math.ceil(n / parts);
    const out: [number, number][] = [];
    for (let s = 0; s < n; s += per) out.push([s, Math.min(n, s + per)]);
    return out;
  }

  async verify(payloads: readonly string[], n: number, digest: string): Promise<unknown[]> {
    const parts = this.#slices(n).map(([s, e], i) => {
      const lengths = new Uint32Array(e - s);
      for (let j = s; j < e; j++) lengths[j - s] = payloads[j]!.length;
      const joined = payloads.slice(s, e).join('');
      return this.#send(i, { op: 'verify', digest, joined, lengths }, [lengths.buffer]);
    });
    return (await Promise.all(parts)).flat();
  }

  async sign(values: readonly unknown[], n: number, bits: number, digest: string): Promise<unknown[]> {
    const parts = this.#slices(n).map(([s, e], i) => this.#send(i, { op: 'sign', bits, digest, values: values.slice(s, e) }));
    return (await Promise.all(parts)).flat();
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}

export function workerPoolContenders(pool: WorkerPool): Contender[] {
  const label = `node:crypto worker_threads pool (${pool.size} workers)`;
  return [
    simpleContender('node-pool', 'verify', label, VERIFY_DOES, (cell: Cell) =>
      pool.verify(cell.dataset.payloads, cell.batch, cell.dataset.digest),
    ),
    simpleContender('node-pool', 'sign', label, SIGN_DOES, (cell: Cell) =>
      pool.sign(cell.dataset.values, cell.batch, cell.dataset.bits, cell.dataset.digest),
    ),
  ];
}
