/**
 * A Node process for the crash tests (test/wire/redis-crash.test.ts), so that
 * a test can stop (SIGSTOP) and kill (SIGKILL) it at a chosen moment. Run as
 * `node --import=tsx node-child.ts '<json>'`; prints `ready` once it consumes
 * (or holds the transport), and `done` when a one-shot mode finishes.
 *
 * Modes:
 * - `worker`: a Node worker on `queues` whose task `wire.count` adds one to
 *   the field `<task id>` of the hash `runsKey` (HINCRBY) before it returns,
 *   so that the test counts the runs of every task across processes;
 * - `restore`: opens the transport and runs one `restoreVisible(0)` sweep.
 */
import { Redis } from 'ioredis';
import { createWorker, FSCertStore, SecureSerializer } from 'celery-sign';
import type { RedisTransport } from '../../../lib/wire/redis.js';
import { openTransport } from '../../../lib/wire/transport.js';

export interface ChildConfig {
  mode: 'worker' | 'restore';
  url: string;
  storeDir?: string;
  queues?: string[];
  concurrency?: number;
  visibilityTimeout?: number;
  transportOptions?: Record<string, unknown>;
  runsKey?: string;
  /** Milliseconds a task sleeps after it counted its run. */
  taskMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;

async function main(): Promise<void> {
  if (cfg.mode === 'restore') {
    const tr = (await openTransport(cfg.url, { transportOptions: cfg.transportOptions ?? {} })) as RedisTransport;
    process.stdout.write('ready\n');
    const n = await tr.restoreVisible(0);
    process.stdout.write(`done ${n}\n`);
    await tr.close();
    return;
  }
  const r = new Redis(cfg.url, { maxRetriesPerRequest: 5 });
  const runsKey = cfg.runsKey ?? 'runs';
  const worker = createWorker({
    broker: cfg.url,
    // A verify-only worker: a store, no key, so it publishes nothing.
    security: new SecureSerializer({ store: new FSCertStore(cfg.storeDir!) }),
    canvas: false,
    remoteControl: false,
    queues: cfg.queues ?? ['celery'],
    concurrency: cfg.concurrency ?? 4,
    ...(cfg.visibilityTimeout !== undefined ? { visibilityTimeout: cfg.visibilityTimeout } : {}),
    transportOptions: cfg.transportOptions ?? {},
    tasks: {
      'wire.count': async ([i], _kwargs, ctx) => {
        await r.hincrby(runsKey, ctx.id, 1);
        if (cfg.taskMs) await new Promise((res) => setTimeout(res, cfg.taskMs));
        return i;
      },
    },
  });
  worker.on('error', (err: unknown) => process.stderr.write(`worker error: ${String(err)}\n`));
  await worker.start();
  process.stdout.write('ready\n');
  const stop = (): void => {
    worker.stop({ timeout: 5000 }).finally(() => {
      r.disconnect();
      process.exit(0);
    });
  };
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`node-child: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
