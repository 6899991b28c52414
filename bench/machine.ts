/** The machine a run happened on, for the report. */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem, type } from 'node:os';
import { join } from 'node:path';
import { backend } from 'celery-sign';
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
  /** The RSA path celery-sign's native backend takes in this process (see {@link rsaPath}). */
  rsaPath?: RsaPath;
}

/**
 * How celery-sign does RSA in a process: its own AVX-512 IFMA kernels for the
 * public-key step of verification (signing stays on AWS-LC), AWS-LC alone
 * (a CPU without IFMA, or CELERY_SIGN_SIMD=0 read by the addon at load), or
 * node:crypto (the fallback backend, CELERY_SIGN_BACKEND=js).
 */
export type RsaPath = 'ifma' | 'aws-lc' | 'aws-lc-forced' | 'node-crypto';

export const RSA_PATH_LABEL: Record<RsaPath, string> = {
  ifma: "celery-sign's AVX-512 IFMA kernels (verification's public-key step; signing on AWS-LC)",
  'aws-lc': 'AWS-LC (no AVX-512 IFMA on this CPU)',
  'aws-lc-forced': 'AWS-LC (CELERY_SIGN_SIMD=0: the path of a CPU without IFMA)',
  'node-crypto': 'node:crypto (the fallback backend, CELERY_SIGN_BACKEND=js)',
};

/** A short name of the path, for table rows and target titles. */
export const RSA_PATH_SHORT: Record<RsaPath, string> = {
  ifma: 'IFMA kernels',
  'aws-lc': 'AWS-LC, no IFMA',
  'aws-lc-forced': 'AWS-LC, CELERY_SIGN_SIMD=0',
  'node-crypto': 'node:crypto fallback',
};

/** Whether this CPU has AVX-512 IFMA, as the addon probes it (avx512f and avx512ifma). */
export function cpuHasIfma(): boolean {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    return /\bavx512f\b/.test(flags) && /\bavx512ifma\b/.test(flags);
  } catch {
    return false; // not Linux: the report says no
  }
}

/** Whether `env` turns the IFMA kernels off (the addon reads CELERY_SIGN_SIMD once, at load). */
export const simdForcedOff = (env: NodeJS.ProcessEnv = process.env): boolean => env.CELERY_SIGN_SIMD?.trim() === '0';

/**
 * The RSA path of a process started with `env` on this CPU; `loaded` is the
 * backend it runs on where known (this process: celery-sign's `backend`).
 */
export function rsaPath(env: NodeJS.ProcessEnv = process.env, ifma = cpuHasIfma(), loaded?: string): RsaPath {
  if (loaded === 'js' || (loaded === undefined && env.CELERY_SIGN_BACKEND?.trim() === 'js')) return 'node-crypto';
  if (!ifma) return 'aws-lc';
  return simdForcedOff(env) ? 'aws-lc-forced' : 'ifma';
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
    rsaPath: rsaPath(process.env, cpuHasIfma(), backend),
  };
}
