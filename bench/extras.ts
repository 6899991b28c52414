/** Event-loop delay while batches run back to back, and resident memory over many payloads. */
import { spawn } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import type { SecureSerializer } from 'celery-sign';
import { stats } from './stats.js';

export interface EventLoopResult {
  id: string;
  label: string;
  batch: number;
  seconds: number;
  batches: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/** Runs `batch`-sized batches back to back for `seconds` under monitorEventLoopDelay (1 ms resolution). */
export async function eventLoopDelay(
  id: string,
  label: string,
  batch: number,
  seconds: number,
  run: () => Promise<unknown>,
): Promise<EventLoopResult> {
  await run(); // warm
  const h = monitorEventLoopDelay({ resolution: 1 });
  let batches = 0;
  h.enable();
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < seconds * 1000) {
    await run();
    batches++;
    t = performance.now();
  }
  h.disable();
  const ms = (ns: number) => ns / 1e6;
  return {
    id,
    label,
    batch,
    seconds: (t - t0) / 1000,
    batches,
    opsPerSec: (batches * batch) / ((t - t0) / 1000),
    p50Ms: ms(h.percentile(50)),
    p99Ms: ms(h.percentile(99)),
    maxMs: ms(h.max),
    meanMs: ms(h.mean),
  };
}

export interface MemoryResult {
  payloads: number;
  chunk: number;
  seconds: number;
  opsPerSec: number;
  /** Median RSS over the first eighth of the run (after a warm-up of 4 chunks). */
  baselineMiB: number;
  /** Median RSS over the last eighth of the run. */
  finalMiB: number;
  peakMiB: number;
  /** final - baseline: what the target is checked on (medians, so one GC's sawtooth does not decide it). */
  growthMiB: number;
  /** peak - baseline. */
  peakGrowthMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
  /** RSS along the way (8 checkpoints): a plateau is a working set, a slope a leak. */
  checkpoints: { payloads: number; rssMiB: number }[];
}

/**
 * Sends `total` payloads through deserializeMany in chunks (the same `chunk`
 * distinct payloads over and over) and samples RSS after every chunk. Growth
 * is the median RSS of the last eighth of the run minus that of the first
 * eighth (after a warm-up of 4 chunks). No forced GC: what a service would
 * see. Run it in a fresh process (bench/memory-child.ts), so that nothing
 * else lives in the heap.
 */
export async function memoryGrowth(
  serializer: SecureSerializer,
  payloads: readonly string[],
  total: number,
  onProgress: (done: number) => void,
): Promise<MemoryResult> {
  const chunk = payloads.length;
  const check = (results: Awaited<ReturnType<SecureSerializer['deserializeMany']>>) => {
    for (const r of results) if (!r.ok) throw r.error;
  };
  for (let i = 0; i < 4; i++) check(await serializer.deserializeMany(payloads));
  const mib = (b: number) => b / 2 ** 20;
  const rss: number[] = [];
  const t0 = performance.now();
  let done = 0;
  let lastReport = 0;
  const checkpoints: { payloads: number; rssMiB: number }[] = [];
  let nextCheckpoint = total / 8;
  while (done < total) {
    const n = Math.min(chunk, total - done);
    check(await serializer.deserializeMany(n === chunk ? payloads : payloads.slice(0, n)));
    done += n;
    const now = process.memoryUsage.rss();
    rss.push(now);
    if (done >= nextCheckpoint || done === total) {
      checkpoints.push({ payloads: done, rssMiB: mib(now) });
      nextCheckpoint += total / 8;
    }
    if (done - lastReport >= 65536 || done === total) {
      onProgress(done);
      lastReport = done;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const mem = process.memoryUsage();
  const eighth = Math.max(1, Math.floor(rss.length / 8));
  const baseline = stats(rss.slice(0, eighth)).median;
  const final = stats(rss.slice(-eighth)).median;
  const peak = Math.max(...rss);
  return {
    payloads: total,
    chunk,
    seconds,
    opsPerSec: total / seconds,
    baselineMiB: mib(baseline),
    finalMiB: mib(final),
    peakMiB: mib(peak),
    growthMiB: mib(final - baseline),
    peakGrowthMiB: mib(peak - baseline),
    heapUsedMiB: mib(mem.heapUsed),
    externalMiB: mib(mem.external),
    checkpoints,
  };
}

/**
 * Runs {@link memoryGrowth} in a fresh Node process (bench/memory-child.ts),
 * with `env` over this process's environment (CELERY_SIGN_SIMD=0 for the
 * second RSA path).
 */
export async function memoryGrowthInChild(
  total: number,
  chunk: number,
  threads: number,
  onProgress: (done: number) => void,
  env: NodeJS.ProcessEnv = {},
): Promise<MemoryResult> {
  const tsx = import.meta.resolve('tsx');
  const child = spawn(
    process.execPath,
    ['--import', tsx, fileURLToPath(new URL('./memory-child.ts', import.meta.url)), String(total), String(chunk), String(threads)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  let result: MemoryResult | null = null;
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith('progress ')) onProgress(Number(line.slice(9)));
    else if (line.startsWith('result ')) result = JSON.parse(line.slice(7)) as MemoryResult;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0 || result === null) throw new Error(`the memory run failed (exit ${code}): ${stderr}`);
  return result;
}
