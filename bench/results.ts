/** The shape of a run's results (also what `--json` prints), and the targets of issues 3, 8 and 11. */
import type { CellResult } from './measure.js';
import type { EventLoopResult, MemoryResult } from './extras.js';
import { RSA_PATH_SHORT, type Machine, type RsaPath } from './machine.js';
import type { PythonVersions } from './contenders/python.js';
import { stats, type Stats } from './stats.js';
import type { Bits, ContenderId, Op } from './workloads.js';

export interface OpensslRates {
  sign: number[];
  verify: number[];
}

export interface OpensslSummary {
  status: 'measured' | 'not measured';
  note?: string;
  version: string | null;
  /** -multi processes. */
  processes: number;
  seconds: number;
  /** How and when it was measured, for the report. */
  how: string;
  /** Samples per key size (full mode measures RSA-2048 at the start and the end). */
  single: Partial<Record<Bits, OpensslRates>>;
  multi: Partial<Record<Bits, OpensslRates>>;
}

export interface ContenderInfo {
  op: Op;
  id: ContenderId;
  label: string;
  does: string;
}

export interface TargetResult {
  id: string;
  title: string;
  /** e.g. "0.80x", "1 GB/s", "5 ms". */
  required: string;
  /** The measured value in `unit`, and the ratio to the requirement's reference where there is one. */
  measured: number | null;
  unit: 'x' | 'GB/s' | 'ms' | 'MiB';
  pass: boolean | null;
  detail: string;
}

/** One RSA path celery-sign was (or was not) measured on in a run. */
export interface PathInfo {
  /** Its contender: `cs-many` (this process) or `cs-nosimd` (a child with CELERY_SIGN_SIMD=0). */
  contender: 'cs-many' | 'cs-nosimd';
  rsaPath: RsaPath;
  status: 'measured' | 'not measured';
  /** Where it ran, for the report. */
  where: string;
  reason?: string;
  /** A result saved before issue 11: the path was not recorded (targets take the bar of a CPU without IFMA). */
  unrecorded?: boolean;
}

export interface BenchResults {
  schema: 1;
  mode: 'quick' | 'full';
  argv: string[];
  date: string;
  durationSeconds: number;
  machine: Machine;
  loadAverageEnd: [number, number, number];
  threads: { celerySign: number; workerPool: number; uvThreadpool: string };
  python: { status: 'measured' | 'not measured'; path?: string; versions?: PythonVersions; reason?: string };
  openssl: OpensslSummary;
  coverage: string[];
  contenders: ContenderInfo[];
  cells: CellResult[];
  eventLoop: EventLoopResult[];
  memory: (MemoryResult & { quick: boolean }) | null;
  /** The memory run of the second RSA path (CELERY_SIGN_SIMD=0), where there is one. Absent before issue 11. */
  memorySecond?: (MemoryResult & { quick: boolean }) | null;
  /** The RSA paths of celery-sign in this run (absent before issue 11: one path, unrecorded). */
  paths?: PathInfo[];
  targets: TargetResult[];
  /** Observations the report should carry (derived from the figures). */
  notes: string[];
  problems: string[];
  /** Wall time of each phase of the run. */
  phases: { name: string; seconds: number }[];
}

export function opensslStats(o: OpensslSummary, kind: 'single' | 'multi', bits: Bits, op: Op): Stats | null {
  const r = o[kind][bits];
  if (!r) return null;
  const xs = op === 'verify' ? r.verify : r.sign;
  return xs.length ? stats(xs) : null;
}

export function findCell(
  r: Pick<BenchResults, 'cells'>,
  q: { section?: string; op: Op; contender: ContenderId; batch?: number; bits?: number; digest?: string; bodySize?: number },
): CellResult | undefined {
  return r.cells.find(
    (c) =>
      c.op === q.op &&
      c.contender === q.contender &&
      (q.section === undefined || c.section === q.section) &&
      (q.batch === undefined || c.batch === q.batch) &&
      (q.bits === undefined || c.bits === q.bits) &&
      (q.digest === undefined || c.digest === q.digest) &&
      (q.bodySize === undefined || c.bodySize === q.bodySize),
  );
}

const median = (c: CellResult | undefined): number | null => (c?.status === 'ok' && c.stats ? c.stats.median : null);

function ratioTarget(
  id: string,
  title: string,
  min: number,
  num: number | null,
  den: number | null,
  what: string,
): TargetResult {
  if (num === null || den === null || !(den > 0)) {
    return { id, title, required: `>= ${min}x`, measured: null, unit: 'x', pass: null, detail: `not measured (${what})` };
  }
  const ratio = num / den;
  return { id, title, required: `>= ${min}x`, measured: ratio, unit: 'x', pass: ratio >= min, detail: what };
}

const rate = (x: number) => `${Math.round(x).toLocaleString('en-US')}/s`;

/** The paths measured in `r`: those it recorded, or (an older result) the one of its process. */
export function measuredPaths(r: Pick<BenchResults, 'paths' | 'machine'>): PathInfo[] {
  if (r.paths) return r.paths.filter((p) => p.status === 'measured');
  return [
    { contender: 'cs-many', rsaPath: r.machine.rsaPath ?? 'aws-lc', status: 'measured', where: 'this process', ...(r.machine.rsaPath ? {} : { unrecorded: true }) },
  ];
}

/** The targets of one RSA path (issue 11): deserializeMany and serializeMany against their peers of the same run. */
function pathTargets(r: Omit<BenchResults, 'targets' | 'notes'>, path: PathInfo, tag: string, suffix: string): TargetResult[] {
  const head = { section: 'headline', bits: 2048, digest: 'sha256', batch: 4096 } as const;
  const id = path.contender;
  const many = median(findCell(r, { ...head, op: 'verify', contender: id }));
  const signMany = median(findCell(r, { ...head, op: 'sign', contender: id }));
  const wcAll = median(findCell(r, { ...head, op: 'verify', contender: 'wc-all' }));
  const nodePool = median(findCell(r, { ...head, op: 'verify', contender: 'node-pool' }));
  const multiV = opensslStats(r.openssl, 'multi', 2048, 'verify')?.median ?? null;
  const multiS = opensslStats(r.openssl, 'multi', 2048, 'sign')?.median ?? null;
  const n = r.openssl.processes;
  const vsOpenssl = path.rsaPath === 'ifma' ? 1.5 : 0.8;
  const pair = (a: number | null, b: number | null, missing: string) => (a !== null && b !== null ? `${rate(a)} vs ${rate(b)}` : missing);
  return [
    ratioTarget(
      `verify-vs-openssl${suffix}`,
      `${tag}deserializeMany vs openssl speed -multi ${n} verify/s (RSA-2048, batch 4096${path.unrecorded ? '; RSA path not recorded: the bar without IFMA' : path.rsaPath === 'ifma' ? ', with IFMA' : ', without IFMA'})`,
      vsOpenssl,
      many,
      multiV,
      pair(many, multiV, 'deserializeMany or openssl missing'),
    ),
    ratioTarget(
      `verify-vs-webcrypto${suffix}`,
      `${tag}deserializeMany vs WebCrypto Promise.all (batch 4096)`,
      3,
      many,
      wcAll,
      pair(many, wcAll, 'a contender missing'),
    ),
    ratioTarget(
      `verify-vs-pool${suffix}`,
      `${tag}deserializeMany vs the node:crypto worker_threads pool (batch 4096)`,
      1.5,
      many,
      nodePool,
      pair(many, nodePool, 'a contender missing'),
    ),
    ratioTarget(
      `sign-vs-openssl${suffix}`,
      `${tag}serializeMany vs openssl speed -multi ${n} sign/s (RSA-2048, batch 4096)`,
      0.95,
      signMany,
      multiS,
      pair(signMany, multiS, 'serializeMany or openssl missing'),
    ),
  ];
}

function bigBodiesTarget(r: Omit<BenchResults, 'targets' | 'notes'>, id: ContenderId, tag: string, suffix: string): TargetResult {
  const big = findCell(r, { op: 'verify', contender: id, bodySize: 1 << 20 });
  const bigRate = median(big);
  if (big && bigRate !== null) {
    const gbs = (bigRate * big.meanBody) / 1e9;
    const b64 = (bigRate * big.meanPayload) / 1e9;
    return {
      id: `big-bodies${suffix}`,
      title: `${tag}1 MiB bodies verified by deserializeMany (batch ${big.batch}, ${r.threads.celerySign} threads)`,
      required: '>= 1 GB/s',
      measured: gbs,
      unit: 'GB/s',
      pass: gbs >= 1,
      detail: `${gbs.toFixed(2)} GB/s of body (${b64.toFixed(2)} GB/s of base64 payload), ${bigRate.toFixed(0)} payloads/s`,
    };
  }
  return { id: `big-bodies${suffix}`, title: `${tag}1 MiB bodies verified by deserializeMany`, required: '>= 1 GB/s', measured: null, unit: 'GB/s', pass: null, detail: 'not measured' };
}

function eventLoopTarget(r: Omit<BenchResults, 'targets' | 'notes'>, id: string, tag: string, suffix: string): TargetResult {
  const eld = r.eventLoop.find((e) => e.id === id);
  return eld
    ? {
        id: `event-loop${suffix}`,
        title: `${tag}p99 event-loop delay, deserializeMany batches of 4096 back to back`,
        required: '<= 5 ms',
        measured: eld.p99Ms,
        unit: 'ms',
        pass: eld.p99Ms <= 5,
        detail: `p50 ${eld.p50Ms.toFixed(2)} ms, p99 ${eld.p99Ms.toFixed(2)} ms, max ${eld.maxMs.toFixed(2)} ms over ${eld.seconds.toFixed(1)} s`,
      }
    : { id: `event-loop${suffix}`, title: `${tag}p99 event-loop delay`, required: '<= 5 ms', measured: null, unit: 'ms', pass: null, detail: 'not measured' };
}

function memoryTarget(mem: BenchResults['memory'] | undefined, tag: string, suffix: string): TargetResult {
  return mem
    ? {
        id: `memory${suffix}`,
        title: `${tag}RSS growth over ${mem.payloads.toLocaleString('en-US')} payloads through deserializeMany${mem.quick ? ' (quick: not the 1,000,000 of the target)' : ''}`,
        required: '<= 32 MiB',
        measured: mem.growthMiB,
        unit: 'MiB',
        pass: mem.growthMiB <= 32,
        detail: `median RSS ${mem.baselineMiB.toFixed(1)} MiB over the first eighth -> ${mem.finalMiB.toFixed(1)} MiB over the last (peak +${mem.peakGrowthMiB.toFixed(1)} MiB)`,
      }
    : { id: `memory${suffix}`, title: `${tag}RSS growth over 1M payloads`, required: '<= 32 MiB', measured: null, unit: 'MiB', pass: null, detail: 'not measured' };
}

/**
 * The targets, as ratios measured in this run: issue 11's for each RSA path
 * measured (the second one's ids end in `:nosimd`), then issue 8's fallback
 * and issue 3's async one-at-a-time target.
 */
export function computeTargets(r: Omit<BenchResults, 'targets' | 'notes'>): TargetResult[] {
  const head = { section: 'headline', bits: 2048, digest: 'sha256', batch: 4096 } as const;
  const out: TargetResult[] = [];
  const paths = measuredPaths(r);
  const two = paths.length > 1;
  const tagOf = (p: PathInfo) => (two ? `[${RSA_PATH_SHORT[p.rsaPath]}] ` : '');
  const suffixOf = (p: PathInfo) => (p.contender === 'cs-nosimd' ? ':nosimd' : '');
  for (const p of paths) out.push(...pathTargets(r, p, tagOf(p), suffixOf(p)));
  // Issue 8: the fallback's deserializeMany at least matches the best pure-Node peer of the same run.
  const csJs = median(findCell(r, { ...head, op: 'verify', contender: 'cs-js' }));
  const nodePeers = (['node-cb', 'node-pool'] as const)
    .map((id) => [id, median(findCell(r, { ...head, op: 'verify', contender: id }))] as const)
    .filter((x): x is readonly ['node-cb' | 'node-pool', number] => x[1] !== null);
  const bestNode = nodePeers.length > 0 ? nodePeers.reduce((a, b) => (b[1] > a[1] ? b : a)) : null;
  out.push(
    ratioTarget(
      'fallback-vs-node',
      'deserializeMany on the node:crypto fallback vs the best pure-Node peer (callback form or worker_threads pool, batch 4096)',
      1,
      csJs,
      bestNode?.[1] ?? null,
      csJs !== null && bestNode !== null ? `${rate(csJs)} vs ${rate(bestNode[1])} (${bestNode[0]})` : 'a contender missing',
    ),
  );
  // One-at-a-time rates do not depend on the batch size: take the largest batch both ran.
  let asyncPair: [number, number, number] | null = null;
  for (const batch of [4096, 256, 16, 1]) {
    const a = median(findCell(r, { ...head, batch, op: 'verify', contender: 'cs-async' }));
    const w = median(findCell(r, { ...head, batch, op: 'verify', contender: 'wc-serial' }));
    if (a !== null && w !== null) {
      asyncPair = [a, w, batch];
      break;
    }
  }
  out.push(
    ratioTarget(
      'async-vs-webcrypto',
      'deserializeAsync one at a time vs WebCrypto one await at a time',
      2,
      asyncPair?.[0] ?? null,
      asyncPair?.[1] ?? null,
      asyncPair ? `${rate(asyncPair[0])} vs ${rate(asyncPair[1])} (batch ${asyncPair[2]})` : 'a contender missing',
    ),
  );
  for (const p of paths) {
    out.push(
      bigBodiesTarget(r, p.contender, tagOf(p), suffixOf(p)),
      eventLoopTarget(r, p.contender, tagOf(p), suffixOf(p)),
      memoryTarget(p.contender === 'cs-many' ? r.memory : r.memorySecond, tagOf(p), suffixOf(p)),
    );
  }
  return out;
}

/**
 * Where one celery-sign thread beats `openssl speed` on one core, the system
 * OpenSSL is not this machine's limit for that key size: say so.
 */
export function computeNotes(r: Omit<BenchResults, 'targets' | 'notes'>): string[] {
  const notes: string[] = [];
  for (const op of ['sign', 'verify'] as const) {
    const beaten: string[] = [];
    for (const bits of [2048, 3072, 4096] as const) {
      const limit = opensslStats(r.openssl, 'single', bits, op)?.median;
      if (!limit) continue;
      const best = Math.max(
        0,
        ...r.cells
          .filter((c) => c.op === op && c.bits === bits && c.contender === 'cs-sync' && c.status === 'ok' && c.stats)
          .map((c) => c.stats!.median),
      );
      if (best > 1.15 * limit) beaten.push(`RSA-${bits} (${(best / limit).toFixed(2)}x)`);
    }
    if (beaten.length) {
      const why =
        op === 'verify'
          ? "celery-sign verifies with its own AVX-512 IFMA kernels for the public-key step (crates/core/src/mb.rs: one number " +
            'across the vectors for a single signature, eight signatures at once in a batch) where the CPU has IFMA, while ' +
            "`openssl speed` times OpenSSL's scalar code"
          : `the system OpenSSL (${r.openssl.version ?? '?'}) is not the fastest RSA code on this machine for those key sizes ` +
            `(celery-sign's addon links AWS-LC statically; Node's is OpenSSL ${r.machine.nodeOpenssl})`;
      notes.push(
        `celery-sign's sync ${op === 'sign' ? 'serialize' : 'deserialize'}, on one thread and doing the whole job, beats ` +
          `\`openssl speed\` on one core at ${beaten.join(', ')}: ${why}, so ratios against that limit flatter celery-sign there.`,
      );
    }
  }
  return notes;
}
