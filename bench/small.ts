/**
 * Small batches (issue 11): `deserializeMany` of 1, 16 and 256 payloads against
 * the sync `deserialize` of the same payloads, in the same process and the
 * same rounds, on the native backend; once with the IFMA kernels where the CPU
 * has them and once with `CELERY_SIGN_SIMD=0` (the path of every other CPU).
 *
 *   npm run bench:small                    both SIMD modes, 9 rounds each
 *   npm run bench:small -- --rounds 15 --ms 150 --simd off --json
 *   options: --rounds N  --ms M (min sample length)  --simd both|on|off  --json
 *            --binary PATH (a native binary to load instead of native/*.node,
 *            for before/after runs in one sitting: NAPI_RS_NATIVE_LIBRARY_PATH)
 *
 * Each round times every (batch size, contender) pair once, in a new shuffled
 * order; the ratio `deserializeMany ÷ deserialize` is taken within each round
 * (the two samples ran seconds apart, under the same load) and reported as the
 * median with the min–max over the rounds. RSA-2048, SHA-256, 512 B JSON
 * bodies, payloads as strings (as from Redis): the headline workload.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { prng, shuffle, stats, type Stats } from './stats.js';
import { HEADLINE_BODY, loadKeys, makeDataset, Serializers } from './workloads.js';

const BATCHES = [1, 16, 256] as const;
type Batch = (typeof BATCHES)[number];
type Who = 'many' | 'sync';

interface ModeResult {
  simd: 'on' | 'off';
  ifma: boolean;
  rounds: number;
  /** payloads/s by batch and contender, and the per-round ratio many ÷ sync. */
  cells: Record<string, { many: Stats; sync: Stats; ratio: Stats; ratios: number[] }>;
  load: [number, number];
}

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

function cpuHasIfma(): boolean {
  try {
    return /\bavx512ifma\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

async function child(rounds: number, minMs: number): Promise<ModeResult> {
  const keys = loadKeys();
  const serializers = new Serializers(keys);
  const ds = await makeDataset({ bits: 2048, digest: 'sha256', bodySize: HEADLINE_BODY, n: 256 }, serializers);
  const s = serializers.get(2048, 'sha256');
  const run: Record<Who, (p: string[]) => Promise<unknown[]>> = {
    sync: async (p) => p.map((x) => s.deserialize(x)),
    many: async (p) =>
      (await s.deserializeMany(p)).map((r) => {
        if (!r.ok) throw r.error;
        return r.value;
      }),
  };
  // Same answers first.
  for (const b of BATCHES) {
    for (const who of ['sync', 'many'] as const) {
      const got = await run[who](ds.payloads.slice(0, b));
      if (!isDeepStrictEqual(got, ds.values.slice(0, b))) throw new Error(`${who} x${b}: a different answer`);
    }
  }
  const samples = new Map<string, number[]>();
  const pairs = BATCHES.flatMap((b) => (['many', 'sync'] as const).map((who) => ({ b, who })));
  const random = prng(11);
  const sample = async (b: Batch, who: Who): Promise<number> => {
    const p = ds.payloads.slice(0, b);
    const f = run[who];
    let items = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < minMs) {
      await f(p);
      items += b;
      t = performance.now();
    }
    return (items / (t - t0)) * 1000;
  };
  // Warm-up: every path compiled, the pool and the queue started, buffers kept.
  for (const { b, who } of pairs) await sample(b, who);
  const load0 = loadavg()[0]!;
  for (let r = 0; r < rounds; r++) {
    for (const { b, who } of shuffle(pairs, random)) {
      const k = `${b}:${who}`;
      const list = samples.get(k) ?? [];
      list.push(await sample(b, who));
      samples.set(k, list);
    }
  }
  const cells: ModeResult['cells'] = {};
  for (const b of BATCHES) {
    const many = samples.get(`${b}:many`)!;
    const sync = samples.get(`${b}:sync`)!;
    const ratios = many.map((m, i) => m / sync[i]!);
    cells[String(b)] = { many: stats(many), sync: stats(sync), ratio: stats(ratios), ratios };
  }
  const off = process.env.CELERY_SIGN_SIMD?.trim() === '0';
  return { simd: off ? 'off' : 'on', ifma: !off && cpuHasIfma(), rounds, cells, load: [load0, loadavg()[0]!] };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const fx = (n: number) => `${n.toFixed(2)}x`;

function table(results: ModeResult[]): string {
  const lines = [
    '| kernels | batch | deserializeMany payloads/s | deserialize (sync) payloads/s | many ÷ sync, median (min–max over rounds) | required |',
    '| :--- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results) {
    const kernels = r.ifma ? 'IFMA' : r.simd === 'off' ? 'CELERY_SIGN_SIMD=0' : 'AVX2 kernel where the CPU has AVX2 (no IFMA)';
    for (const b of BATCHES) {
      const c = r.cells[String(b)]!;
      const need = b === 1 ? '>= 1x' : b === 16 ? '>= 1.5x' : '';
      lines.push(
        `| ${kernels} | ${b} | ${fmt(c.many.median)} (${fmt(c.many.min)}–${fmt(c.many.max)}) | ` +
          `${fmt(c.sync.median)} (${fmt(c.sync.min)}–${fmt(c.sync.max)}) | ` +
          `**${fx(c.ratio.median)}** (${fx(c.ratio.min)}–${fx(c.ratio.max)}) | ${need} |`,
      );
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const rounds = Number(arg(argv, '--rounds') ?? 9);
  const minMs = Number(arg(argv, '--ms') ?? 100);
  if (argv.includes('--child')) {
    process.stdout.write(JSON.stringify(await child(rounds, minMs)) + '\n');
    return;
  }
  const simd = arg(argv, '--simd') ?? 'both';
  const binary = arg(argv, '--binary');
  const modes = simd === 'both' ? (['on', 'off'] as const) : simd === 'off' ? (['off'] as const) : (['on'] as const);
  const results: ModeResult[] = [];
  for (const mode of modes) {
    const env: NodeJS.ProcessEnv = { ...process.env, CELERY_SIGN_BACKEND: 'native' };
    if (mode === 'off') env.CELERY_SIGN_SIMD = '0';
    else delete env.CELERY_SIGN_SIMD;
    if (binary !== undefined) env.NAPI_RS_NATIVE_LIBRARY_PATH = binary;
    const script = fileURLToPath(import.meta.url);
    const p = spawnSync(process.execPath, [...process.execArgv, script, '--child', '--rounds', String(rounds), '--ms', String(minMs)], {
      env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 24,
    });
    if (p.status !== 0) throw new Error(`the ${mode} run failed (status ${p.status})`);
    results.push(JSON.parse(p.stdout.trim().split('\n').pop()!) as ModeResult);
  }
  if (argv.includes('--json')) {
    process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    return;
  }
  process.stdout.write(
    `RSA-2048/SHA-256, 512 B JSON bodies, string payloads; ${rounds} rounds of >= ${minMs} ms samples` +
      (binary ? `; binary ${binary}` : '') +
      `; load ${results.map((r) => r.load.map((l) => l.toFixed(2)).join('->')).join(', ')}\n\n` +
      table(results) +
      '\n',
  );
}

await main();
