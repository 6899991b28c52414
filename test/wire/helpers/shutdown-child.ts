/**
 * A Node worker in a child process for the shutdown tests
 * (test/wire/shutdown.test.ts), so that a test can send it real signals.
 * Run as `node --import=tsx shutdown-child.ts '<json>'`. Prints `ready
 * <listeners>` once it consumes (the number of SIGTERM listeners then),
 * `shutdown <signal> <how> <exitCode>` for each `'shutdown'` event, and
 * `app <signal>` when `appHandlesSignals` and the application's own listener
 * hears one.
 *
 * Its task `wire.slow` adds one to the field `<task id>` of the hash
 * `<runsKey>:runs` (HINCRBY) when it starts and of `<runsKey>:done` when it
 * has slept `taskMs`, so that the test counts starts and completions per task
 * id across processes.
 */
import { Redis } from 'ioredis';
import { createWorker, FSCertStore, SecureSerializer, type ShutdownEvent } from 'celery-sign';

export interface ShutdownChildConfig {
  broker: string;
  /** The Redis holding the counters. */
  redis: string;
  storeDir: string;
  queue: string;
  concurrency?: number;
  runsKey: string;
  taskMs: number;
  handleSignals?: boolean;
  shutdownTimeout?: number;
  /** The application listens to SIGTERM itself (and prints `app SIGTERM`). */
  appHandlesSignals?: boolean;
  /** Workers in the process (on the same queue). Default 1. */
  workers?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ShutdownChildConfig;

async function main(): Promise<void> {
  const r = new Redis(cfg.redis, { maxRetriesPerRequest: 5 });
  const make = () => createWorker({
    broker: cfg.broker,
    // A verify-only worker: a store, no key, so it publishes nothing.
    security: new SecureSerializer({ store: new FSCertStore(cfg.storeDir) }),
    canvas: false,
    retries: false,
    remoteControl: false,
    queues: [cfg.queue],
    concurrency: cfg.concurrency ?? 4,
    ...(cfg.handleSignals !== undefined ? { handleSignals: cfg.handleSignals } : {}),
    ...(cfg.shutdownTimeout !== undefined ? { shutdownTimeout: cfg.shutdownTimeout } : {}),
    tasks: {
      'wire.slow': async ([i], _kwargs, ctx) => {
        await r.hincrby(`${cfg.runsKey}:runs`, ctx.id, 1);
        await new Promise((res) => setTimeout(res, cfg.taskMs));
        await r.hincrby(`${cfg.runsKey}:done`, ctx.id, 1);
        return i;
      },
    },
  });
  if (cfg.appHandlesSignals) process.on('SIGTERM', () => process.stdout.write('app SIGTERM\n'));
  for (let i = 0; i < (cfg.workers ?? 1); i++) {
    const worker = make();
    worker.on('error', (err: unknown) => process.stderr.write(`worker error: ${String(err)}\n`));
    worker.on('shutdown', (e: ShutdownEvent) => process.stdout.write(`shutdown ${e.signal} ${e.how} ${e.exitCode}\n`));
    await worker.start();
  }
  process.stdout.write(`ready ${process.listenerCount('SIGTERM')}\n`);
  process.on('exit', () => r.disconnect());
}

main().catch((err: unknown) => {
  process.stderr.write(`shutdown-child: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(2);
});
