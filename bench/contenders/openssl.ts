/**
 * The machine's limit: `openssl speed -elapsed -seconds N rsaBITS`, on one
 * core and with `-multi <cores>`. This is the RSA primitive alone (a digest
 * signed or verified; no body hashing, no parsing, no base64, no JSON), so it
 * is a ceiling, not a contender doing the same work. `-elapsed` makes it wall
 * time like every other figure here (without it openssl divides by its CPU
 * time, which flatters it on a busy machine).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { Bits } from '../workloads.js';

export interface SpeedResult {
  /** sign/s and verify/s per key size. */
  rates: Map<Bits, { sign: number; verify: number }>;
  seconds: number;
}

export function opensslVersion(): string | null {
  const r = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  // "OpenSSL 3.0.19 27 Jan 2026 (Library: OpenSSL 3.0.19 27 Jan 2026)": the library part only when it differs.
  if (r.status !== 0) return null;
  const m = /^(.*?) \(Library: (.*)\)$/.exec(r.stdout.trim());
  return m && m[1] === m[2] ? m[1]! : r.stdout.trim();
}

/** Parses the summary table: a header with `sign/s` and `verify/s`, then `rsa 2048 bits ...` rows. */
export function parseSpeed(output: string): Map<Bits, { sign: number; verify: number }> {
  const rates = new Map<Bits, { sign: number; verify: number }>();
  let header: string[] | null = null;
  for (const line of output.split('\n')) {
    const t = line.trim().split(/\s+/);
    if (t.includes('sign/s') && t.includes('verify/s')) {
      header = t;
      continue;
    }
    const m = /^rsa\s+(\d+)\s+bits?\s+(.*)$/.exec(line.trim());
    if (m && header) {
      const values = m[2]!.trim().split(/\s+/);
      if (values.length !== header.length) continue;
      const sign = Number.parseFloat(values[header.indexOf('sign/s')]!);
      const verify = Number.parseFloat(values[header.indexOf('verify/s')]!);
      if (Number.isFinite(sign) && Number.isFinite(verify)) rates.set(Number(m[1]) as Bits, { sign, verify });
    }
  }
  return rates;
}

export async function opensslSpeed(bits: readonly Bits[], seconds: number, multi: number | null): Promise<SpeedResult> {
  const args = ['speed', '-elapsed', '-seconds', String(seconds)];
  if (multi !== null && multi > 1) args.push('-multi', String(multi));
  args.push(...bits.map((b) => `rsa${b}`));
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`openssl ${args.join(' ')} exited ${code}: ${text.slice(-500)}`))));
  });
  const rates = parseSpeed(out);
  for (const b of bits) if (!rates.has(b)) throw new Error(`could not parse openssl speed output for rsa${b}:\n${out.slice(-800)}`);
  return { rates, seconds };
}
