/**
 * The child process of the contenders in ./fallback.ts: celery-sign on its
 * node:crypto backend (started with CELERY_SIGN_BACKEND=js) or on the native
 * one with the IFMA kernels off (CELERY_SIGN_SIMD=0). Both are read when
 * celery-sign loads, so each runs in a process of its own.
 * One JSON request a line on stdin, one JSON reply a line on stdout; batches
 * are timed here, as Python times its own.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { eventLoopDelay } from '../extras.js';
import { backend, Certificate, CertStore, PrivateKey, SecureSerializer, setThreads, threadCount } from 'celery-sign';

interface Loaded {
  serializer: SecureSerializer;
  values: unknown[];
  payloads: string[];
}

const loaded = new Map<string, Loaded>();

function get(id: string): Loaded {
  const l = loaded.get(id);
  if (!l) throw new Error(`dataset ${id} not loaded`);
  return l;
}

async function verify(l: Loaded, n: number): Promise<unknown[]> {
  const results = await l.serializer.deserializeMany(l.payloads.slice(0, n));
  return results.map((r, i) => {
    if (!r.ok) throw new Error(`item ${i}: ${r.error.code} ${r.error.message}`);
    return r.value;
  });
}

const sign = (l: Loaded, n: number): Promise<string[]> => l.serializer.serializeMany(l.values.slice(0, n));

async function handle(req: Record<string, unknown>): Promise<Record<string, unknown>> {
  switch (req.op) {
    case 'hello': {
      const asked = req.threads as number;
      setThreads(asked);
      return { backend, threads: threadCount(), simd: process.env.CELERY_SIGN_SIMD ?? null };
    }
    case 'load': {
      const d = JSON.parse(readFileSync(req.file as string, 'utf8')) as {
        keyPath: string;
        certPath: string;
        storePaths: string[];
        digest: 'sha256';
        values: unknown[];
        payloads: string[];
      };
      const cert = new Certificate(readFileSync(d.certPath));
      const store = new CertStore(d.storePaths.map((p) => new Certificate(readFileSync(p))));
      const serializer = new SecureSerializer({ key: new PrivateKey(readFileSync(d.keyPath)), cert, store, digest: d.digest });
      loaded.set(req.id as string, { serializer, values: d.values, payloads: d.payloads });
      return {};
    }
    case 'answer': {
      const l = get(req.id as string);
      const n = req.n as number;
      return { result: req.kind === 'verify' ? await verify(l, n) : await sign(l, n) };
    }
    case 'run': {
      const l = get(req.id as string);
      const n = req.n as number;
      const minMs = req.minMs as number;
      const run = req.kind === 'verify' ? () => verify(l, n) : () => sign(l, n);
      let ops = 0;
      const t0 = performance.now();
      let t = t0;
      do {
        await run();
        ops += n;
        t = performance.now();
      } while (t - t0 < minMs);
      return { ops, seconds: (t - t0) / 1000 };
    }
    case 'eld': {
      const l = get(req.id as string);
      const n = req.n as number;
      const label = `celery-sign deserializeMany (${backend === 'js' ? 'node:crypto fallback' : 'AWS-LC, CELERY_SIGN_SIMD=0'})`;
      return { result: await eventLoopDelay(backend === 'js' ? 'cs-js' : 'cs-nosimd', label, n, req.seconds as number, () => verify(l, n)) };
    }
    case 'quit':
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown op ${String(req.op)}`);
  }
}

// One request at a time, in order.
let chain = Promise.resolve();
createInterface({ input: process.stdin }).on('line', (line) => {
  chain = chain.then(async () => {
    let reply: Record<string, unknown>;
    try {
      reply = { ok: true, ...(await handle(JSON.parse(line) as Record<string, unknown>)) };
    } catch (err) {
      reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  });
});
