/**
 * The CPU's SIMD features as /proc/cpuinfo lists them (what
 * crates/core/src/mb.rs probes), for tests that check the kernel the addon
 * reports; null where /proc/cpuinfo cannot be read.
 */
import { readFileSync } from 'node:fs';

/** The flags of the first processor in /proc/cpuinfo; null if it cannot be read. */
export function cpuFlags(): Set<string> | null {
  let info: string;
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
  return new Set((/^flags\s*:(.*)$/m.exec(info)?.[1] ?? '').trim().split(/\s+/));
}

/** Whether /proc/cpuinfo lists AVX-512F and AVX-512 IFMA (what crates/core/src/mb.rs probes); null if unknown. */
export function cpuHasIfma(): boolean | null {
  const flags = cpuFlags();
  return flags === null ? null : flags.has('avx512f') && flags.has('avx512ifma');
}

/** Whether /proc/cpuinfo lists AVX2 (the AVX2 kernel, crates/core/src/avx2.rs); null if unknown. */
export function cpuHasAvx2(): boolean | null {
  const flags = cpuFlags();
  return flags === null ? null : flags.has('avx2');
}
