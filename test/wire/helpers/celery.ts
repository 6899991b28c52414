/**
 * The real Python Celery side of the wire suite: a `celery worker` process
 * running test/py/wire_app.py under setup_security(), and the stock producer
 * test/py/wire_producer.py. Keys, certificates and a store come from the
 * fixtures (test/.fixtures).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Certificate, FSCertStore, PrivateKey, SecureSerializer, type WireFormat } from 'celery-sign';
import * as fx from '../../helpers/fixtures.js';
import { pythonPath, ROOT, type PythonEnv } from '../../helpers/python.js';

export const PY_DIR = join(ROOT, 'test', 'py');

/** Key/certificate material for the wire tests, in a temporary directory. */
export interface Pki {
  /** A store trusting rsa2048 and rsa1024 only. */
  storeDir: string;
  /** The good signer: key rsa2048.pkcs8, certificate rsa2048 (in the store). */
  key: string;
  cert: string;
  /** Wrong key: rsa3072's key with rsa2048's certificate (signatures do not verify). */
  wrongKey: string;
  /** Unknown signer: rsa4096 key and certificate (not in the store). */
  unknownKey: string;
  unknownCert: string;
  cleanup(): void;
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-pki-'));
  const storeDir = join(dir, 'store');
  mkdirSync(storeDir);
  for (const name of ['rsa2048', 'rsa1024']) copyFileSync(fx.pathOf(fx.cert(name)), join(storeDir, `${name}.pem`));
  return {
    storeDir,
    key: fx.pathOf(fx.key('rsa2048.pkcs8')),
    cert: fx.pathOf(fx.cert('rsa2048')),
    wrongKey: fx.pathOf(fx.key('rsa3072.pkcs8')),
    unknownKey: fx.pathOf(fx.key('rsa4096.pkcs8')),
    unknownCert: fx.pathOf(fx.cert('rsa4096')),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A SecureSerializer from fixture paths. */
export function serializer(
  pki: Pki,
  which: 'good' | 'wrong-key' | 'unknown' | 'verify' = 'good',
  wireFormat: WireFormat = 'celery-5.5',
): SecureSerializer {
  const store = new FSCertStore(pki.storeDir);
  if (which === 'verify') return new SecureSerializer({ store, wireFormat });
  const keyPath = which === 'good' ? pki.key : which === 'wrong-key' ? pki.wrongKey : pki.unknownKey;
  const certPath = which === 'unknown' ? pki.unknownCert : pki.cert;
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(keyPath)),
    cert: new Certificate(readFileSync(certPath)),
    store,
    wireFormat,
  });
}

/** The WIRE_* environment of wire_app.py. */
export function wireEnv(
  pki: Pki,
  broker: string,
  which: 'good' | 'wrong-key' | 'unknown' = 'good',
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PYTHONPATH: PY_DIR,
    PYTHONWARNINGS: 'ignore',
    PYTHONUNBUFFERED: '1',
    WIRE_BROKER: broker,
    WIRE_BACKEND: broker,
    WIRE_KEY: which === 'good' ? pki.key : which === 'wrong-key' ? pki.wrongKey : pki.unknownKey,
    WIRE_CERT: which === 'unknown' ? pki.unknownCert : pki.cert,
    WIRE_STORE: pki.storeDir,
    ...extra,
  };
}

function celeryBin(env: PythonEnv): string {
  const bin = join(dirname(pythonPath(env)), 'celery');
  if (!existsSync(bin)) throw new Error(`celery not found at ${bin}: run scripts/setup-python.sh`);
  return bin;
}

export interface CeleryWorker {
  readonly pid: number;
  /** Everything the worker logged so far. */
  logs(): string;
  /** Waits until `pattern` appears in the log (or throws after `ms`). */
  waitForLog(pattern: RegExp, ms?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface CeleryWorkerOptions {
  env?: PythonEnv;
  broker: string;
  queues: string[];
  pool?: 'solo' | 'prefork' | 'threads';
  concurrency?: number;
  extraEnv?: Record<string, string>;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Starts `celery -A wire_app worker` and waits until it is ready. */
export async function startCeleryWorker(pki: Pki, o: CeleryWorkerOptions): Promise<CeleryWorker> {
  const env = o.env ?? 'current';
  const args = [
    '-A', 'wire_app', 'worker',
    `--pool=${o.pool ?? 'prefork'}`,
    '-c', String(o.concurrency ?? 2),
    '-Q', o.queues.join(','),
    '-n', `wire-${process.pid}-${Math.random().toString(36).slice(2, 8)}@%h`,
    '-l', 'INFO',
    '--without-gossip', '--without-mingle', '--without-heartbeat',
  ];
  const child = spawn(celeryBin(env), args, {
    cwd: PY_DIR,
    env: wireEnv(pki, o.broker, 'good', o.extraEnv),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: stop() ends the pool children too
  });
  let log = '';
  const listeners = new Set<() => void>();
  const onData = (b: Buffer): void => {
    log += b.toString();
    for (const l of [...listeners]) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const waitForLog = (pattern: RegExp, ms = 30000): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (pattern.test(log)) {
          done();
          resolve();
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done();
          reject(new Error(`celery worker exited (${child.exitCode ?? child.signalCode}):\n${log.slice(-4000)}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`celery worker: no ${pattern} within ${ms} ms:\n${log.slice(-4000)}`));
      }, ms);
      const onExit = (): void => check();
      const done = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', onExit);
      };
      listeners.add(check);
      child.once('exit', onExit);
      check();
    });

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const pid = child.pid!;
    try {
      process.kill(-pid, 'SIGTERM'); // warm shutdown of the whole group
    } catch {
      /* gone */
    }
    if (!(await waitExit(child, 15000))) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitExit(child, 5000);
    }
    await exited;
  };

  try {
    await waitForLog(/ ready\./, 60000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, logs: () => log, waitForLog, stop };
}

export interface ProducerResult {
  ok: boolean;
  value?: unknown;
  type?: string;
  module?: string;
  message?: string;
  traceback?: string | null;
  status?: string;
}

/** Runs a test/py script with one JSON request on stdin; parses the JSON it prints. */
export function runScript<T>(
  script: string,
  request: object,
  o: { env?: PythonEnv; processEnv?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<T> {
  const python = pythonPath(o.env ?? 'current');
  return new Promise<T>((resolve, reject) => {
    const child = spawn(python, [join(PY_DIR, script)], {
      cwd: PY_DIR,
      env: o.processEnv ?? { ...process.env, PYTHONPATH: PY_DIR, PYTHONWARNINGS: 'ignore' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} timed out:\n${Buffer.concat(err).toString().slice(-3000)}`));
    }, o.timeoutMs ?? 120000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`${script} exited with ${code}:\n${Buffer.concat(err).toString().slice(-3000)}`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(out).toString()) as T);
      } catch (e) {
        reject(new Error(`${script} printed no JSON: ${String(e)}\n${Buffer.concat(err).toString().slice(-3000)}`));
      }
    });
    child.stdin.end(JSON.stringify(request));
  });
}

/** Runs test/py/wire_producer.py (Celery's send_task under setup_security) once. */
export function runProducer<T = { ids: string[]; results: ProducerResult[]; elapsed?: number }>(
  pki: Pki,
  broker: string,
  request: object,
  o: { env?: PythonEnv; signer?: 'good' | 'wrong-key' | 'unknown'; timeoutMs?: number; extraEnv?: Record<string, string> } = {},
): Promise<T> {
  return runScript<T>('wire_producer.py', request, {
    env: o.env ?? 'current',
    processEnv: wireEnv(pki, broker, o.signer ?? 'good', o.extraEnv),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}

/** Runs test/py/wire_oracle.py (Celery's saferepr, kombu's Redis channel) once. */
export function runOracle<T>(request: object, env: PythonEnv = 'current'): Promise<T> {
  return runScript<T>('wire_oracle.py', request, { env });
}
