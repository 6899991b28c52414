/**
 * A real Redis Sentinel set-up for the wire suite: one master, replicas
 * (`--replicaof`), and sentinels (`redis-server <conf> --sentinel`: the
 * Debian redis-server package's binary runs in sentinel mode, no separate
 * package needed), all on loopback, with small timings
 * (`down-after-milliseconds`, `failover-timeout`) so that a fail-over takes
 * a few seconds. Passwords on the data nodes (`requirepass`/`masterauth`,
 * `sentinel auth-pass`) and on the sentinels (`requirepass`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, REDIS_SERVER, startRedis, type RedisServer } from './redis-server.js';

export interface SentinelSetup {
  readonly masterName: string;
  /** The data nodes, the first started as master. */
  readonly nodes: RedisServer[];
  readonly sentinelPorts: number[];
  readonly masterPassword: string;
  readonly sentinelPassword: string;
  /** `sentinel://:<master password>@127.0.0.1:<p1>/<db>;sentinel://127.0.0.1:<p2>/<db>;...` */
  url(db?: number): string;
  /** The master's port as the first sentinel reports it. */
  masterPort(): Promise<number>;
  /** A plain connection to a data node. */
  node(port: number): Redis;
  /** Waits until every sentinel reports a master other than `port`, and that master has `replicas` replicas online. */
  waitForNewMaster(port: number, replicas: number, ms?: number): Promise<number>;
  stop(): Promise<void>;
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

async function until<T>(read: () => Promise<T | null>, what: string, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await read();
      if (v !== null) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`sentinel set-up: ${what} not within ${ms} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startSentinels(o: { replicas?: number; sentinels?: number; quorum?: number } = {}): Promise<SentinelSetup> {
  const masterName = 'mymaster';
  const masterPassword = 'm-secret';
  const sentinelPassword = 's-secret';
  const auth = ['--requirepass', masterPassword, '--masterauth', masterPassword];
  const nodes: RedisServer[] = [];
  const children: ChildProcess[] = [];
  const clients: Redis[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-sentinel-'));
  const stop = async (): Promise<void> => {
    for (const c of clients) c.disconnect();
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      if (!(await waitExit(c, 5000))) c.kill('SIGKILL');
    }
    for (const n of nodes) await n.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  const sentinel = (port: number): Redis => {
    const r = new Redis({ port, host: '127.0.0.1', password: sentinelPassword, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    r.on('error', () => {});
    clients.push(r);
    return r;
  };
  try {
    const master = await startRedis({ extraArgs: auth });
    nodes.push(master);
    for (let i = 0; i < (o.replicas ?? 2); i++) {
      nodes.push(await startRedis({ extraArgs: [...auth, '--replicaof', '127.0.0.1', String(master.port)] }));
    }
    // The replicas in sync (state=online) before anything relies on them (WAIT).
    const m = new Redis({ port: master.port, host: '127.0.0.1', password: masterPassword, lazyConnect: true, maxRetriesPerRequest: 1 });
    m.on('error', () => {});
    clients.push(m);
    await until(
      async () => ((await m.info('replication')).match(/^slave\d+:.*state=online/gm) ?? []).length === nodes.length - 1 ? true : null,
      'the replicas in sync',
      20000,
    );
    m.disconnect();
    const ports: number[] = [];
    const n = o.sentinels ?? 3;
    const quorum = o.quorum ?? Math.floor(n / 2) + 1;
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      ports.push(port);
      const conf = join(dir, `sentinel-${port}.conf`);
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `requirepass ${sentinelPassword}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${master.port} ${quorum}`,
          `sentinel auth-pass ${masterName} ${masterPassword}`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 3000`,
          `sentinel parallel-syncs ${masterName} ${o.replicas ?? 2}`,
          '',
        ].join('\n'),
      );
      const child = spawn(REDIS_SERVER, [conf, '--sentinel', '--logfile', ''], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let log = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`redis-server --sentinel did not start:\n${log.slice(-2000)}`)), 10000);
        const onData = (b: Buffer): void => {
          log += b.toString();
          if (/\+monitor master/.test(log)) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout!.on('data', onData);
        child.stderr!.on('data', onData);
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`redis-server --sentinel exited (${code}):\n${log.slice(-2000)}`));
        });
      });
      child.stdout!.resume();
      child.stderr!.resume();
    }
    const sentinels = ports.map(sentinel);
    // Every sentinel must know the replicas and the other sentinels before a fail-over can happen.
    for (const s of sentinels) {
      await until(
        async () => {
          const m = (await s.call('SENTINEL', 'MASTER', masterName)) as string[];
          const f: Record<string, string> = {};
          for (let i = 0; i + 1 < m.length; i += 2) f[m[i]!] = m[i + 1]!;
          return Number(f['num-slaves']) === nodes.length - 1 && Number(f['num-other-sentinels']) === n - 1 ? true : null;
        },
        'the sentinels know the replicas and each other',
        20000,
      );
    }
    const masterPort = async (): Promise<number> => {
      const [, port] = (await sentinels[0]!.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string];
      return Number(port);
    };
    return {
      masterName,
      nodes,
      sentinelPorts: ports,
      masterPassword,
      sentinelPassword,
      url: (db = 0) => ports.map((p, i) => `sentinel://${i === 0 ? `:${masterPassword}@` : ''}127.0.0.1:${p}/${db}`).join(';'),
      masterPort,
      node: (port: number) => {
        const r = new Redis({ port, host: '127.0.0.1', password: masterPassword, lazyConnect: true, maxRetriesPerRequest: 2 });
        r.on('error', () => {});
        clients.push(r);
        return r;
      },
      waitForNewMaster: (old: number, replicas: number, ms = 30000) =>
        until(
          async () => {
            const seen = await Promise.all(
              sentinels.map(async (s) => Number(((await s.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as string[])[1])),
            );
            const port = seen[0]!;
            if (port === old || seen.some((p) => p !== port)) return null;
            const r = new Redis({ port, host: '127.0.0.1', password: masterPassword, lazyConnect: true, maxRetriesPerRequest: 1 });
            r.on('error', () => {});
            try {
              await r.connect();
              const info = await r.info('replication');
              const role = /role:(\w+)/.exec(info)?.[1];
              const online = (info.match(/^slave\d+:.*state=online/gm) ?? []).length;
              return role === 'master' && online >= replicas ? port : null;
            } finally {
              r.disconnect();
            }
          },
          `a new master with ${replicas} replica(s)`,
          ms,
        ),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
