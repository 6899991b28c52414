/**
 * A real `rabbitmq-server` for the wire suite: its own node name, a temporary
 * directory (database, logs, Erlang cookie), free loopback ports for AMQP and
 * Erlang distribution, and its own `epmd` on a free port (so nothing is left
 * behind and no system RabbitMQ or epmd is touched). Started once per test
 * file (5-15 s), stopped by the test. Should the test process die without
 * stopping it (a crash), a small shell watchdog stops the server and epmd and
 * removes the directory. A missing `rabbitmq-server` is a failure, never a
 * skip: `apt-get install rabbitmq-server` (scripts/setup.sh does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './redis-server.js';

/** The server script: Debian's, run directly (its /usr/sbin wrapper switches user and drops the environment). */
export const RABBITMQ_SERVER =
  process.env.CELERY_SIGN_RABBITMQ_SERVER ??
  (existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server') ? '/usr/lib/rabbitmq/bin/rabbitmq-server' : 'rabbitmq-server');
export const EPMD = process.env.CELERY_SIGN_EPMD ?? 'epmd';

export interface RabbitServer {
  readonly port: number;
  /** `amqp://guest:guest@127.0.0.1:<port>//` (the default vhost `/`). */
  readonly url: string;
  /** The same broker as Celery's pyamqp transport names it. */
  readonly pyUrl: string;
  /** Stops the server (SIGKILL when `hard`, else a clean shutdown) and starts it again with the same data. */
  restart(options?: { hard?: boolean; downMs?: number }): Promise<void>;
  /** What the server logged (the tail). */
  logs(): string;
  stop(): Promise<void>;
  /** The TLS listener's port, when started with {@link RabbitOptions.tls}. */
  readonly tlsPort?: number;
}

/** A TLS listener (`listeners.ssl.default`) besides the plain one, with RabbitMQ's `ssl_options`. */
export interface RabbitTlsOptions {
  cacertfile: string;
  certfile: string;
  keyfile: string;
  /** `ssl_options.verify`. Default `verify_peer`. */
  verify?: 'verify_peer' | 'verify_none';
  /** `ssl_options.fail_if_no_peer_cert`: refuse a client without a certificate. Default `true`. */
  failIfNoPeerCert?: boolean;
}

export interface RabbitOptions {
  tls?: RabbitTlsOptions;
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGroupExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (groupAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function notFound(what: string, err: NodeJS.ErrnoException): Error {
  return err.code === 'ENOENT'
    ? new Error(`${what} not found: install RabbitMQ (apt-get install rabbitmq-server; scripts/setup.sh does)`)
    : err;
}

/**
 * Starts a RabbitMQ node of its own (ports, directory, Erlang cookie). A
 * port taken between its choice and RabbitMQ's bind (eaddrinuse) gets new
 * ports and one more try, twice at most.
 */
export async function startRabbit(options: RabbitOptions = {}): Promise<RabbitServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRabbitOnce(options);
    } catch (err) {
      if (attempt < 3 && /eaddrinuse/i.test((err as Error).message)) continue;
      throw err;
    }
  }
}

async function startRabbitOnce(options: RabbitOptions): Promise<RabbitServer> {
  if (RABBITMQ_SERVER.startsWith('/') && !existsSync(RABBITMQ_SERVER)) {
    throw new Error(`${RABBITMQ_SERVER} not found: install RabbitMQ (apt-get install rabbitmq-server; scripts/setup.sh does)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-rabbit-'));
  mkdirSync(join(dir, 'log'));
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '');
  const [port, distPort, epmdPort] = [await freePort(), await freePort(), await freePort()];
  const tlsPort = options.tls ? await freePort() : undefined;
  if (options.tls) {
    const o = options.tls;
    writeFileSync(
      join(dir, 'rabbitmq.conf'),
      [
        `listeners.ssl.default = ${tlsPort}`,
        `ssl_options.cacertfile = ${o.cacertfile}`,
        `ssl_options.certfile = ${o.certfile}`,
        `ssl_options.keyfile = ${o.keyfile}`,
        `ssl_options.verify = ${o.verify ?? 'verify_peer'}`,
        `ssl_options.fail_if_no_peer_cert = ${o.failIfNoPeerCert ?? true}`,
        '',
      ].join('\n'),
    );
  }
  const node = `celerysign${process.pid}x${Math.random().toString(36).slice(2, 8)}@localhost`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir, // the Erlang cookie lives here
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_LOGS: '-',
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_PID_FILE: join(dir, 'rabbit.pid'),
  };

  let epmd: ChildProcess | undefined;
  let server: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  let log = '';

  /** Stops the server group (its id in `pgid`), epmd and the directory once this process is gone. */
  const startWatchdog = (): void => {
    const script = [
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done`,
      ...(epmd?.pid ? [`kill ${epmd.pid} 2>/dev/null`] : []),
      `g=$(cat "$1/pgid" 2>/dev/null)`,
      `if [ -n "$g" ]; then`,
      `  kill -TERM -"$g" 2>/dev/null; i=0`,
      `  while kill -0 -"$g" 2>/dev/null && [ $i -lt 40 ]; do sleep 0.5; i=$((i+1)); done`,
      `  kill -KILL -"$g" 2>/dev/null`,
      `fi`,
      `rm -rf "$1"`,
    ].join('\n');
    watchdog = spawn('/bin/sh', ['-c', script, 'watchdog', dir], { stdio: 'ignore', detached: true });
    watchdog.unref();
  };

  const startEpmd = async (): Promise<void> => {
    const c = spawn(EPMD, ['-port', String(epmdPort), '-address', '127.0.0.1'], { stdio: 'ignore', env });
    epmd = c;
    const failed = new Promise<never>((_, reject) => c.once('error', (err) => reject(notFound('epmd', err as NodeJS.ErrnoException))));
    failed.catch(() => undefined);
    const deadline = Date.now() + 10000;
    for (;;) {
      if (await Promise.race([portOpen(epmdPort), failed])) return;
      if (c.exitCode !== null) throw new Error(`epmd exited (${c.exitCode})`);
      if (Date.now() > deadline) throw new Error('epmd did not start within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const launch = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      log = '';
      const c = spawn(RABBITMQ_SERVER, [], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      server = c;
      if (c.pid) writeFileSync(join(dir, 'pgid'), String(c.pid));
      const timer = setTimeout(() => {
        try {
          process.kill(-c.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
        reject(new Error(`rabbitmq-server did not start within 60 s:\n${log.slice(-3000)}`));
      }, 60000);
      const onData = (b: Buffer): void => {
        log += b.toString();
        if (log.length > 200000) log = log.slice(-100000);
        if (/Server startup complete/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      };
      c.stdout!.on('data', onData);
      c.stderr!.on('data', onData);
      c.once('error', (err) => {
        clearTimeout(timer);
        reject(notFound(RABBITMQ_SERVER, err as NodeJS.ErrnoException));
      });
      c.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`rabbitmq-server exited (${code ?? signal}) before it was ready:\n${log.slice(-3000)}`));
      });
    });

  /** Ends the server's whole process group (the script, beam, its helpers). */
  const kill = async (hard: boolean): Promise<void> => {
    const c = server;
    if (!c?.pid || !groupAlive(c.pid)) return;
    try {
      process.kill(-c.pid, hard ? 'SIGKILL' : 'SIGTERM');
    } catch {
      /* gone */
    }
    if (!(await waitGroupExit(c.pid, hard ? 10000 : 30000))) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitGroupExit(c.pid, 10000);
    }
  };

  const stopEpmd = async (): Promise<void> => {
    const c = epmd;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    await new Promise<void>((r) => {
      const t = setTimeout(() => {
        c.kill('SIGKILL');
        r();
      }, 3000);
      c.once('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  };

  const stopWatchdog = (): void => {
    if (watchdog && watchdog.exitCode === null && watchdog.signalCode === null) watchdog.kill('SIGKILL');
  };

  try {
    await startEpmd();
    startWatchdog();
    await launch();
  } catch (err) {
    stopWatchdog();
    await kill(true);
    await stopEpmd();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  const url = `amqp://guest:guest@127.0.0.1:${port}//`;
  return {
    port,
    url,
    pyUrl: `pyamqp://guest:guest@127.0.0.1:${port}//`,
    ...(tlsPort !== undefined ? { tlsPort } : {}),
    logs: () => log,
    async restart({ hard = false, downMs = 500 } = {}) {
      await kill(hard);
      await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      stopWatchdog();
      await kill(false);
      await stopEpmd();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
