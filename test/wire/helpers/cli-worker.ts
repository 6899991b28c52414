/**
 * The `celery-sign worker` command in a child process, as an operator runs
 * it: a tasks module written to a temporary directory, the settings in
 * Celery's environment names.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../../helpers/python.js';

export interface CliWorker {
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM (a warm shutdown), then waits for it to exit and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Starts `celery-sign worker <module> -Q <queue>` with `env` (PATH is added)
 * and a module exporting `tasks` (its source); resolves once it says it is
 * ready, rejects with its output if it exits first or takes over `ms`.
 */
export async function startCliWorker(env: NodeJS.ProcessEnv, tasksSource: string, queue: string, ms = 30000): Promise<CliWorker> {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-cli-worker-'));
  const mod = join(dir, 'tasks.mjs');
  writeFileSync(mod, tasksSource);
  const child = spawn(process.execPath, [join(ROOT, 'lib', 'cli', 'main.js'), 'worker', mod, '-Q', queue], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const ready = new RegExp(` ready: .*queues ${queue.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`);
  const deadline = Date.now() + ms;
  while (!ready.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`celery-sign worker not ready: ${out}`);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  return { output: () => out, stop };
}
