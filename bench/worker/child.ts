/**
 * One process of the worker benchmark (bench/worker/run.ts): a producer that
 * fills a queue, or a worker that drains it, for celery-sign or celery-node.
 * Run as `node --import=tsx child.ts '<json>'`.
 *
 * - `sign-fill` / `cn-fill`: sends `n` tasks `wire.add(i, 1)` and writes their
 *   ids (one JSON array) to `idsFile`, then exits;
 * - `sign-work` / `cn-work`: starts a worker at its default settings, prints
 *   `ready` when it consumes, and stops on SIGTERM.
 *
 * celery-sign signs with `auth` (the fixture key, RSA-2048/SHA-256) and its
 * worker verifies against the store; celery-node sends and takes unsigned
 * JSON, with its logging (a console.info per task) off.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Certificate, createClient, createWorker, FSCertStore, PrivateKey, SecureSerializer } from 'celery-sign';

interface Config {
  mode: 'sign-fill' | 'sign-work' | 'cn-fill' | 'cn-work';
  url: string;
  n?: number;
  idsFile?: string;
  key?: string;
  cert?: string;
  storeDir?: string;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;

function security(): SecureSerializer {
  return new SecureSerializer({
    key: new PrivateKey(readFileSync(cfg.key!)),
    cert: new Certificate(readFileSync(cfg.cert!)),
    store: new FSCertStore(cfg.storeDir!),
  });
}

const add = (a: unknown, b: unknown): number => Number(a) + Number(b);

async function main(): Promise<void> {
  switch (cfg.mode) {
    case 'sign-fill': {
      const client = createClient({ broker: cfg.url, backend: cfg.url, security: security() });
      const ids: string[] = [];
      const step = 1000;
      for (let i = 0; i < cfg.n!; i += step) {
        const sent = await Promise.all(
          Array.from({ length: Math.min(step, cfg.n! - i) }, (_, j) => client.sendTask('wire.add', [i + j, 1])),
        );
        for (const s of sent) ids.push(s.id);
      }
      writeFileSync(cfg.idsFile!, JSON.stringify(ids));
      await client.close();
      return;
    }
    case 'sign-work': {
      const worker = createWorker({
        broker: cfg.url,
        backend: cfg.url,
        security: security(),
        tasks: { 'wire.add': (args, kwargs) => add(args[0], args[1] ?? kwargs.y) },
        handleSignals: false,
      });
      await worker.start();
      process.stdout.write('ready\n');
      process.once('SIGTERM', () => void worker.stop().then(() => process.exit(0)));
      return;
    }
    case 'cn-fill':
    case 'cn-work': {
      console.info = () => {};
      const celery = await import('celery-node');
      if (cfg.mode === 'cn-fill') {
        const client = celery.createClient(cfg.url, cfg.url);
        const ids: string[] = [];
        const step = 1000;
        for (let i = 0; i < cfg.n!; i += step) {
          const sent = Array.from({ length: Math.min(step, cfg.n! - i) }, (_, j) => client.sendTask('wire.add', [i + j, 1]));
          for (const s of sent) ids.push(s.taskId);
          await client.isReady();
          await new Promise((res) => setImmediate(res));
        }
        // applyAsync does not wait for the push: wait until every message is on the queue.
        const { Redis } = await import('ioredis');
        const r = new Redis(cfg.url);
        for (;;) {
          if ((await r.llen('celery')) >= cfg.n!) break;
          await new Promise((res) => setTimeout(res, 50));
        }
        r.disconnect();
        writeFileSync(cfg.idsFile!, JSON.stringify(ids));
        await client.disconnect();
        return;
      }
      const worker = celery.createWorker(cfg.url, cfg.url);
      worker.register('wire.add', add);
      void worker.start();
      await worker.isReady();
      process.stdout.write('ready\n');
      process.once('SIGTERM', () => process.exit(0));
      return;
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
