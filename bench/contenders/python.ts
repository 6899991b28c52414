/** Stock Python Celery's SecureSerializer in one process (bench/python_celery.py), timed inside Python. */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, ROOT, type Dataset, type Keys } from '../workloads.js';
import { LineChild } from './line-child.js';
import { SIGN_DOES, VERIFY_DOES, type Cell, type Contender, type Sample } from './types.js';

export type PythonLookup = { found: true; path: string } | { found: false; reason: string };

/** $CELERY_SIGN_PYTHON if set, else the repo's .venv, then /tmp/pyvenv: the first that imports celery.security. */
export function findPython(): PythonLookup {
  // CELERY_SIGN_PYTHON, when set, is the only one tried (as in the interop tests).
  const override = process.env.CELERY_SIGN_PYTHON;
  const candidates = override ? [override] : [join(ROOT, '.venv', 'bin', 'python'), '/tmp/pyvenv/bin/python'];
  const tried: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      tried.push(`${path} (missing)`);
      continue;
    }
    const r = spawnSync(path, ['-c', 'import celery.security, cryptography, kombu'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return { found: true, path };
    tried.push(`${path} (cannot import celery.security)`);
  }
  return { found: false, reason: `no Python with Celery: tried ${tried.join(', ')}` };
}

export interface PythonVersions {
  python: string;
  celery: string;
  kombu: string;
  cryptography: string;
  openssl: string;
}

interface Loaded {
  mismatches: number;
  firstError: string | null;
  signed: string[];
}

export class PythonCelery {
  readonly path: string;
  readonly #child: LineChild;
  readonly #loaded = new Map<string, Loaded>();
  versions: PythonVersions | undefined;

  private constructor(path: string) {
    this.path = path;
    this.#child = new LineChild('python', path, [join(BENCH_DIR, 'python_celery.py')]);
  }

  static async start(path: string): Promise<PythonCelery> {
    const py = new PythonCelery(path);
    const v = await py.request({ op: 'hello' });
    py.versions = v as unknown as PythonVersions;
    return py;
  }

  request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.#child.request(req);
  }

  async load(dataset: Dataset, keys: Keys, signCheck: number): Promise<void> {
    const k = keys.get(dataset.bits);
    const file = join(this.#child.tmp, `${dataset.id}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        key_path: k.keyPath,
        cert_path: k.certPath,
        store_paths: [...keys.byBits.values()].map((m) => m.certPath),
        digest: dataset.digest,
        values: dataset.values,
        payloads: dataset.payloads,
      }),
    );
    try {
      const res = await this.request({ op: 'load', id: dataset.id, file, sign_check: signCheck });
      this.#loaded.set(dataset.id, {
        mismatches: res.mismatches as number,
        firstError: res.first_error as string | null,
        signed: res.signed as string[],
      });
    } finally {
      rmSync(file, { force: true });
    }
  }

  #get(cell: Cell): Loaded {
    const l = this.#loaded.get(cell.dataset.id);
    if (!l) throw new Error(`dataset ${cell.dataset.id} not loaded into Python`);
    return l;
  }

  async run(cell: Cell, minMs: number): Promise<Sample> {
    const kind = cell.op === 'verify' ? 'deserialize' : 'serialize';
    const res = await this.request({ op: 'run', id: cell.dataset.id, kind, n: cell.batch, min_ms: minMs });
    return { ops: res.ops as number, seconds: res.seconds as number };
  }

  contenders(keys: Keys): Contender[] {
    const label = 'Python Celery SecureSerializer (1 process)';
    const prepare = async (dataset: Dataset, cells: readonly Cell[]) => {
      if (this.#loaded.has(dataset.id)) return;
      const signCheck = Math.max(0, ...cells.filter((c) => c.op === 'sign').map((c) => c.batch));
      await this.load(dataset, keys, signCheck);
    };
    return [
      {
        id: 'python',
        op: 'verify',
        label,
        does: VERIFY_DOES,
        prepare,
        answer: async (cell) => {
          const l = this.#get(cell);
          if (l.mismatches > 0) throw new Error(`Celery disagreed on ${l.mismatches} payloads: ${l.firstError}`);
          // Python compared every decoded value with the expected one itself.
          return cell.dataset.values.slice(0, cell.batch);
        },
        sample: (cell, minMs) => this.run(cell, minMs),
      },
      {
        id: 'python',
        op: 'sign',
        label,
        does: SIGN_DOES,
        prepare,
        answer: async (cell) => {
          const l = this.#get(cell);
          if (l.signed.length < cell.batch) throw new Error('Python signed too few items for the check');
          return l.signed.slice(0, cell.batch);
        },
        sample: (cell, minMs) => this.run(cell, minMs),
      },
    ];
  }

  close(): Promise<void> {
    return this.#child.close();
  }
}
