/**
 * A contender that runs in a child process and answers one JSON line per
 * request line (Python Celery, the node:crypto fallback): requests queue in
 * order, a reply without `ok: true` is an error, the child's last stderr is
 * kept for the messages, and a scratch directory lives as long as it does.
 */
import { spawn, type ChildProcessWithoutNullStreams, type SpawnOptionsWithoutStdio } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export class LineChild {
  /** A scratch directory for files handed to the child (removed by {@link close}). */
  readonly tmp: string;
  readonly #name: string;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #waiting: { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  #stderr = '';
  #closed = false;

  /** `name` as the messages say it ('python', 'fallback'). */
  constructor(name: string, command: string, args: string[], options: SpawnOptionsWithoutStdio = {}) {
    this.#name = name;
    this.tmp = mkdtempSync(join(tmpdir(), `celery-sign-bench-${name}-`));
    this.#child = spawn(command, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] });
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
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`${this.#name} exited (${code}): ${this.#stderr}`));
    });
  }

  async request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.#closed) throw new Error(`${this.#name} is not running: ${this.#stderr}`);
    const p = new Promise<Record<string, unknown>>((resolve, reject) => this.#waiting.push({ resolve, reject }));
    this.#child.stdin.write(JSON.stringify(req) + '\n');
    const res = await p;
    if (res.ok !== true) throw new Error(`${this.#name} ${String(req.op)}: ${String(res.error)}`);
    return res;
  }

  /** Asks the child to quit, waits for it, removes the scratch directory. */
  async close(): Promise<void> {
    if (!this.#closed) {
      const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
      this.#child.stdin.end(JSON.stringify({ op: 'quit' }) + '\n');
      await exited;
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
