/**
 * Focused A/B measurements for two targets of issue 3, quicker than the full
 * `npm run bench` and able to compare two builds of the package in one run:
 *
 *   big    1 MiB bodies through deserializeMany (batch of 16, RSA-2048/SHA-256),
 *          GB/s of JSON body
 *   async  deserializeAsync awaited one at a time (512 B bodies), payloads/s,
 *          next to WebCrypto one await at a time in the same process
 *   all    deserializeAsync, 2048 calls in flight (Promise.all), payloads/s
 *   bigone deserializeAsync of 1 MiB bodies, one at a time, GB/s of body
 *   many   deserializeMany of 4096 payloads of 512 B bodies (the headline), payloads/s
 *
 * Usage:
 *   node --import=tsx bench/latency.ts [big|async|all|bigone|many ...] [--rounds N] [--ms N] [--ab DIR] [--env K=V]
 *
 * Each measurement runs in a fresh child process; with `--ab DIR` (another
 * checkout, built: DIR/lib and DIR/native) every round runs both builds, in a
 * new random order, and the report gives medians and the ratio of medians.
 * `--env K=V` sets a variable in the children of this checkout only (B side
 * stays as is), to compare a switch within one build.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { webcrypto, X509Certificate } from 'node:crypto';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');

type What = 'big' | 'async' | 'all' | 'bigone' | 'many';
const WHATS: readonly What[] = ['big', 'async', 'all', 'bigone', 'many'];
interface Result {
  what: What;
  /** GB/s of body (big, bigone) or payloads/s (async, all, many). */
  rate: number;
  /** WebCrypto one await at a time, payloads/s (async only). */
  webcrypto?: number;
}

async function child(root: string, what: What, ms: number): Promise<Result> {
  const lib = (await import(pathToFileURL(join(root, 'lib', 'index.mjs')).href)) as typeof import('celery-sign');
  const { makeValues } = await import('./workloads.js');
  const keyPem = readFileSync(join(HERE, 'keys', 'rsa2048.key.pem'));
  const certPem = readFileSync(join(HERE, 'keys', 'rsa2048.cert.pem'));
  const cert = new lib.Certificate(certPem);
  const s = new lib.SecureSerializer({ key: new lib.PrivateKey(keyPem), cert, store: new lib.CertStore([cert]) });
  const time = async (run: () => Promise<number>): Promise<number> => {
    for (let w = performance.now(); performance.now() - w < ms / 4; ) await run(); // warm-up
    let units = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      units += await run();
      t = performance.now();
    }
    return units / ((t - t0) / 1000);
  };

  if (what === 'big') {
    const values = makeValues(1 << 20, 16);
    const payloads = await s.serializeMany(values);
    const bodyBytes = values.reduce<number>((n, v) => n + lib.registry.dumps(v, 'json').body.length, 0);
    const check = await s.deserializeMany(payloads);
    if (!check.every((r, i) => r.ok && JSON.stringify(r.value) === JSON.stringify(values[i]))) throw new Error('wrong answer');
    const rate = await time(async () => {
      const r = await s.deserializeMany(payloads);
      if (!r[0]!.ok) throw new Error('refused');
      return bodyBytes;
    });
    return { what, rate: rate / 1e9 };
  }

  if (what === 'bigone') {
    const values = makeValues(1 << 20, 4);
    const payloads = await s.serializeMany(values);
    const bodyBytes = values.reduce<number>((n, v) => n + lib.registry.dumps(v, 'json').body.length, 0);
    const rate = await time(async () => {
      for (const p of payloads) await s.deserializeAsync(p);
      return bodyBytes;
    });
    return { what, rate: rate / 1e9 };
  }

  const values = makeValues(512, 2048);
  const payloads = await s.serializeMany(values);
  if (what === 'many') {
    const batch = Array.from({ length: 4096 }, (_, i) => payloads[i % payloads.length]!);
    const rate = await time(async () => {
      const r = await s.deserializeMany(batch);
      if (!r[0]!.ok) throw new Error('refused');
      return batch.length;
    });
    return { what, rate };
  }
  if (what === 'all') {
    const rate = await time(async () => {
      await Promise.all(payloads.map((p) => s.deserializeAsync(p)));
      return payloads.length;
    });
    return { what, rate };
  }
  const rate = await time(async () => {
    for (const p of payloads) await s.deserializeAsync(p);
    return payloads.length;
  });
  // WebCrypto, one await at a time, doing the same job (unpack, verify, JSON.parse).
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  const key = await webcrypto.subtle.importKey('spki', spki, { name: 'RSA-PSS', hash: 'SHA-256' }, false, ['verify']);
  const { decodePayload, decodeBody, maxSaltLength } = await import('./wire.js');
  const saltLength = maxSaltLength(2048, 'sha256');
  const wc = await time(async () => {
    for (const p of payloads) {
      const u = decodePayload(p);
      if (!(await webcrypto.subtle.verify({ name: 'RSA-PSS', saltLength }, key, u.signature, u.body))) throw new Error('bad');
      decodeBody(u);
    }
    return payloads.length;
  });
  return { what, rate, webcrypto: wc };
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}

function main(): void {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    void child(argv[1]!, argv[2] as What, Number(argv[3])).then((r) => process.stdout.write(JSON.stringify(r)));
    return;
  }
  let rounds = 7;
  let ms = 1500;
  let other: string | null = null;
  const env: Record<string, string> = {};
  const whats: What[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--rounds') rounds = Number(argv[++i]);
    else if (a === '--ms') ms = Number(argv[++i]);
    else if (a === '--ab') other = resolve(argv[++i]!);
    else if (a === '--env') {
      const [k, ...v] = argv[++i]!.split('=');
      env[k!] = v.join('=');
    } else if ((WHATS as readonly string[]).includes(a)) whats.push(a as What);
    else throw new Error(`unknown argument ${a}`);
  }
  if (whats.length === 0) whats.push('big', 'async');
  const sides = other ? [{ name: 'this', root: ROOT, env }, { name: 'other', root: other, env: {} }] : [{ name: 'this', root: ROOT, env }];
  const results = new Map<string, Result[]>();
  for (let r = 0; r < rounds; r++) {
    const order = whats.flatMap((what) => sides.map((side) => ({ what, side })));
    // A new random order every round.
    order.sort(() => Math.random() - 0.5);
    for (const { what, side } of order) {
      const out = execFileSync(process.execPath, ['--import=tsx', fileURLToPath(import.meta.url), '--child', side.root, what, String(ms)], {
        cwd: ROOT,
        env: { ...process.env, ...side.env },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const key = `${what} ${side.name}`;
      const list = results.get(key) ?? [];
      list.push(JSON.parse(out) as Result);
      results.set(key, list);
      process.stderr.write('.');
    }
  }
  process.stderr.write('\n');
  const fmt = (x: number, what: What) => (what === 'big' || what === 'bigone' ? `${x.toFixed(3)} GB/s` : `${Math.round(x)}/s`);
  for (const what of whats) {
    const meds: number[] = [];
    for (const side of sides) {
      const list = results.get(`${what} ${side.name}`)!;
      const rates = list.map((x) => x.rate);
      const m = median(rates);
      meds.push(m);
      let line = `${what.padEnd(6)} ${side.name.padEnd(5)} median ${fmt(m, what)}  [${fmt(Math.min(...rates), what)} .. ${fmt(Math.max(...rates), what)}]`;
      if (what === 'async') {
        const wc = list.map((x) => x.webcrypto!);
        const ratios = list.map((x) => x.rate / x.webcrypto!);
        line += `  WebCrypto one-await ${fmt(median(wc), what)}  ratio to it (median of rounds) ${median(ratios).toFixed(2)}x`;
      }
      console.log(line);
    }
    if (meds.length === 2) console.log(`${what.padEnd(6)} this/other ${(meds[0]! / meds[1]!).toFixed(2)}x`);
  }
}

main();
