/**
 * A real `redis-server` for the wire suite, on a free loopback port, in a
 * temporary directory, stopped by the test. A missing `redis-server` binary is
 * a failure (never a skip): install it with `apt-get install redis-server`
 * (scripts/setup.sh does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>/<db>` */
  url(db?: number): string;
  /** Kills the server (SIGKILL when `hard`, else SIGTERM) and starts it again on the same port and directory. */
  restart(options?: { hard?: boolean; downMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisServerOptions {
  /** Persist with an append-only file (fsync on every write), to survive restarts. Default false. */
  appendonly?: boolean;
  /** More `redis-server` arguments, e.g. `['--rename-command', 'BLMOVE', '']` to stand for a Redis < 6.2. */
  extraArgs?: string[];
}

export const REDIS_SERVER = process.env.CELERY_SIGN_REDIS_SERVER ?? 'redis-server';

/** Whether `port` (0: any) can be listened on at 127.0.0.1 now; the port it got, or null. */
function tryListen(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(null));
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      const got = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(got));
    });
  });
}

/** The kernel's range of ephemeral ports (those outgoing connections get). */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo !== undefined && hi !== undefined && Number.isInteger(lo) && Number.isInteger(hi)) return [lo, hi];
  } catch {
    // not Linux
  }
  return [32768, 60999];
}

/**
 * A port free at 127.0.0.1 for a server the test starts, chosen below the
 * ephemeral range: a port the kernel picks for `listen(0)` is one an outgoing
 * connection (a client of another test, Python's) may take before a slow
 * server binds it (RabbitMQ takes seconds: it failed with eaddrinuse so).
 */
export async function freePort(): Promise<number> {
  const [lo] = ephemeralRange();
  const base = 10000;
  if (lo - base >= 1000) {
    for (let i = 0; i < 50; i++) {
      const port = base + Math.floor(Math.random() * (lo - base));
      if ((await tryListen(port)) !== null) return port;
    }
  }
  const port = await tryListen(0);
  if (port === null) throw new Error('no free port at 127.0.0.1');
  return port;
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

export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-redis-'));
  const port = await freePort();
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--protected-mode', 'yes',
    '--dir', dir,
    '--save', '',
    '--daemonize', 'no',
    '--loglevel', 'notice',
    '--logfile', '',
    ...(options.appendonly
      ? ['--appendonly', 'yes', '--appendfsync', 'always']
      : ['--appendonly', 'no']),
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  let log = '';

  const launch = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const c = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      const timer = setTimeout(() => {
        c.kill('SIGKILL');
        reject(new Error(`redis-server did not start within 10 s:\n${log.slice(-2000)}`));
      }, 10000);
      const onData = (b: Buffer): void => {
        log += b.toString();
        if (log.length > 100000) log = log.slice(-50000);
        if (/Ready to accept connections/.test(log)) {
          clearTimeout(timer);
          log = '';
          resolve();
        }
      };
      c.stdout!.on('data', onData);
      c.stderr!.on('data', onData);
      c.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          err.code === 'ENOENT'
            ? new Error(`${REDIS_SERVER} not found: install it (apt-get install redis-server; scripts/setup.sh does)`)
            : err,
        );
      });
      c.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${log.slice(-2000)}`));
      });
    });

  const kill = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    if (!(await waitExit(c, 10000))) {
      c.kill('SIGKILL');
      await waitExit(c, 5000);
    }
  };

  try {
    await launch();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    port,
    url: (db = 0) => `redis://127.0.0.1:${port}/${db}`,
    async restart({ hard = false, downMs = 500 } = {}) {
      await kill(hard ? 'SIGKILL' : 'SIGTERM');
      await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `read` until it returns `want` or `ms` pass; returns the last value read. */
export async function eventually<T>(read: () => Promise<T>, want: T, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await read();
  while (v !== want && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 50));
    v = await read();
  }
  return v;
}
