/**
 * The real Python Celery the interop tests drive. `scripts/setup-python.sh`
 * creates two virtual environments:
 *   .venv           - the current Celery 5.x (wire format of Celery >= 5.5)
 *   .venv-celery54  - Celery 5.4.0 (the older wire format)
 * A missing interpreter is a test failure, never a skip.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export type PythonEnv = 'current' | 'celery54';

export function pythonPath(env: PythonEnv = 'current'): string {
  const override = env === 'current' ? process.env.CELERY_SIGN_PYTHON : process.env.CELERY_SIGN_PYTHON54;
  const path = override ?? join(ROOT, env === 'current' ? '.venv' : '.venv-celery54', 'bin', 'python');
  if (!existsSync(path)) {
    throw new Error(`Python for the interop suite not found at ${path}: run scripts/setup-python.sh`);
  }
  return path;
}

/** Runs a Python script with a JSON request on stdin and parses the JSON it prints. */
export function runPython<T = unknown>(script: string, request: unknown, env: PythonEnv = 'current', args: string[] = []): T {
  const res = spawnSync(pythonPath(env), [script, ...args], {
    input: JSON.stringify(request),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    // A Python that hangs fails the test in minutes, naming the script.
    timeout: 180_000,
    killSignal: 'SIGKILL',
  });
  if (res.error) throw new Error(`python ${script} (${env}): ${res.error.message}: ${res.stderr ?? ''}`);
  if (res.status !== 0) {
    throw new Error(`python ${script} exited with ${res.status}: ${res.stderr}`);
  }
  return JSON.parse(res.stdout) as T;
}
