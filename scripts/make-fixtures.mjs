// Makes the test key and certificate material with the real Python Celery
// environment (.venv, or CELERY_SIGN_PYTHON). A missing Python fails the run.
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const python = process.env.CELERY_SIGN_PYTHON ?? join(root, '.venv', 'bin', 'python');
if (!existsSync(python)) {
  console.error(`make-fixtures: no Python at ${python}; run scripts/setup-python.sh`);
  process.exit(1);
}
const out = process.env.CELERY_SIGN_FIXTURES ?? join(root, 'test', '.fixtures');
rmSync(out, { recursive: true, force: true });
execFileSync(python, [join(root, 'test', 'py', 'make_fixtures.py'), out, '--quiet'], { stdio: 'inherit' });
console.log(`test fixtures made by Python cryptography and Celery in ${out}`);
