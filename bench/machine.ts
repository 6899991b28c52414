/** The machine a run happened on, for the report. */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem, type } from 'node:os';
import { join } from 'node:path';
import { backend, simdKernel } from 'celery-sign';
import { ROOT } from './workloads.js';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  kernel: string;
  node: string;
  nodeOpenssl: string;
  celerySign: string;
  loadAverage: [number, number, number];
  /** Whether the CPU has AVX-512 IFMA (avx512f and avx512ifma in /proc/cpuinfo). Absent in results saved before issue 11. */
  ifma?: boolean;
  /** Whether the CPU has AVX2 (avx2 in /proc/cpuinfo). Absent in results saved before the AVX2 kernel. */
  avx2?: boolean;
  /** The RSA path celery-sign's native backend takes in this process (see {@link rsaPath}). */
  rsaPath?: RsaPath;
}

/**
 * How celery-sign does RSA in a process: its own SIMD kernels for the
 * public-key step of verification (signing stays on AWS-LC) — AVX-512 IFMA,
 * or AVX2 on an x86-64 CPU without IFMA (or with CELERY_SIGN_SIMD=avx2) —,
 * AWS-LC alone (a CPU with neither, or CELERY_SIGN_SIMD=0 read by the addon
 * at load), or node:crypto (the fallback backend, CELERY_SIGN_BACKEND=js).
 * The addon reports its choice (`simdKernel()`, crates/core/src/mb.rs `kernel`).
 */
export type RsaPath = 'ifma' | 'avx2' | 'aws-lc' | 'aws-lc-forced' | 'node-crypto';

export const RSA_PATH_LABEL: Record<RsaPath, string> = {
  ifma: "celery-sign's AVX-512 IFMA kernels (verification's public-key step; signing on AWS-LC)",
  avx2: "celery-sign's AVX2 kernel (verification's public-key step, eight signatures at once; signing on AWS-LC): the path of an x86-64 CPU without IFMA",
  'aws-lc': 'AWS-LC (neither AVX-512 IFMA nor AVX2 on this CPU)',
  'aws-lc-forced': 'AWS-LC (CELERY_SIGN_SIMD=0: the path of a CPU without the SIMD kernels, e.g. ARM)',
  'node-crypto': 'node:crypto (the fallback backend, CELERY_SIGN_BACKEND=js)',
};

/** A short name of the path, for table rows and target titles. */
export const RSA_PATH_SHORT: Record<RsaPath, string> = {
  ifma: 'IFMA kernels',
  avx2: 'AVX2 kernel',
  'aws-lc': 'AWS-LC, no SIMD kernel',
  'aws-lc-forced': 'AWS-LC, CELERY_SIGN_SIMD=0',
  'node-crypto': 'node:crypto fallback',
};

function cpuFlags(): string {
  try {
    return /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    return ''; // not Linux: the report says no
  }
}

/** Whether this CPU has AVX-512 IFMA, as the addon probes it (avx512f and avx512ifma). */
export function cpuHasIfma(): boolean {
  const flags = cpuFlags();
  return /\bavx512f\b/.test(flags) && /\bavx512ifma\b/.test(flags);
}

/** Whether this CPU has AVX2, as the addon probes it. */
export function cpuHasAvx2(): boolean {
  return /\bavx2\b/.test(cpuFlags());
}

/** Whether `env` turns the SIMD kernels off (the addon reads CELERY_SIGN_SIMD once, at load). */
export const simdForcedOff = (env: NodeJS.ProcessEnv = process.env): boolean => env.CELERY_SIGN_SIMD?.trim() === '0';

/**
 * The RSA path of this process, from the kernel the addon reports
 * (`simdKernel()`, crates/core/src/mb.rs `kernel`) and the backend loaded.
 */
export function rsaPath(loaded: string = backend, kernel: string | null = loaded === 'js' ? null : simdKernel(), env: NodeJS.ProcessEnv = process.env): RsaPath {
  if (loaded === 'js') return 'node-crypto';
  if (kernel === 'avx512-ifma') return 'ifma';
  if (kernel === 'avx2') return 'avx2';
  return simdForcedOff(env) && (cpuHasIfma() || cpuHasAvx2()) ? 'aws-lc-forced' : 'aws-lc';
}

function osName(): string {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text);
    if (m) return m[1]!;
  } catch {
    // not Linux
  }
  return type();
}

export function machine(): Machine {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: string };
  const la = loadavg();
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: osName(),
    kernel: `${type()} ${release()}`,
    node: process.version,
    nodeOpenssl: process.versions.openssl ?? 'unknown',
    celerySign: pkg.version ?? 'unknown',
    loadAverage: [la[0] ?? 0, la[1] ?? 0, la[2] ?? 0],
    ifma: cpuHasIfma(),
    avx2: cpuHasAvx2(),
    rsaPath: rsaPath(),
  };
}
