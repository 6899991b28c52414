/** Tables for the terminal and for BENCHMARKS.md, from one abstract description. */
import type { CellResult } from './measure.js';
import { RSA_PATH_LABEL, RSA_PATH_SHORT } from './machine.js';
import { findCell, opensslStats, type BenchResults, type TargetResult } from './results.js';
import { spread, type Stats } from './stats.js';
import { CONTENDER_IDS, HOW, PAIR_LABEL, sizeLabel, type Bits, type ContenderId, type Op } from './workloads.js';

type Value =
  | string
  | { kind: 'rate'; stats: Stats; mbps?: number; limit?: boolean }
  | { kind: 'missing'; why: 'not-measured' | 'wrong-answer' | 'absent' };

interface Table {
  title: string;
  head: string[];
  /** Right-align these columns. */
  right: boolean[];
  rows: Value[][];
  notes: string[];
  /** On the terminal, one line per row instead of columns (for long text). */
  list?: boolean;
}

const OP_TITLE: Record<Op, string> = { verify: 'Verify (deserialize)', sign: 'Sign (serialize)' };
const DIGEST_LABEL: Record<string, string> = { sha256: 'SHA-256', sha512: 'SHA-512' };

function cellValue(c: CellResult | undefined, withMbps = false): Value {
  if (!c) return { kind: 'missing', why: 'absent' };
  if (c.status !== 'ok' || !c.stats) return { kind: 'missing', why: c.status === 'ok' ? 'not-measured' : c.status };
  return withMbps ? { kind: 'rate', stats: c.stats, mbps: (c.stats.median * c.meanBody) / 1e6 } : { kind: 'rate', stats: c.stats };
}

function contendersOf(r: BenchResults, section: string, op: Op): ContenderId[] {
  const present = new Set(r.cells.filter((c) => c.section === section && c.op === op).map((c) => c.contender));
  return CONTENDER_IDS.filter((id) => present.has(id));
}

function labelOf(r: BenchResults, op: Op, id: ContenderId): string {
  return r.contenders.find((c) => c.op === op && c.id === id)?.label ?? r.cells.find((c) => c.op === op && c.contender === id)?.label ?? id;
}

const ratioText = (num: number | null | undefined, den: number | null | undefined): string =>
  num != null && den != null && den > 0 ? `${(num / den).toFixed(2)}x` : '-';

function limitRows(r: BenchResults, op: Op, columns: number, bitsOf: (col: number) => Bits | null): Value[][] {
  const rows: Value[][] = [];
  if (r.openssl.status !== 'measured') return rows;
  for (const kind of ['single', 'multi'] as const) {
    const label =
      kind === 'single' ? 'openssl speed, 1 core (RSA only)' : `openssl speed -multi ${r.openssl.processes} (RSA only)`;
    const row: Value[] = [label];
    let any = false;
    for (let i = 0; i < columns; i++) {
      const bits = bitsOf(i);
      const s = bits === null ? null : opensslStats(r.openssl, kind, bits, op);
      if (s) any = true;
      row.push(s ? { kind: 'rate', stats: s, limit: true } : '');
    }
    if (any) rows.push(row);
  }
  return rows;
}

function headlineTable(r: BenchResults, op: Op): Table | null {
  const cells = r.cells.filter((c) => c.section === 'headline' && c.op === op);
  if (!cells.length) return null;
  const batches = [...new Set(cells.map((c) => c.batch))].sort((a, b) => a - b);
  const first = cells[0]!;
  const ref = findCell(r, { section: 'headline', op, contender: 'cs-many', batch: batches[batches.length - 1] });
  const refMedian = ref?.stats?.median;
  const big = batches[batches.length - 1]!;
  const rows: Value[][] = [];
  for (const id of contendersOf(r, 'headline', op)) {
    const row: Value[] = [labelOf(r, op, id)];
    for (const b of batches) row.push(cellValue(findCell(r, { section: 'headline', op, contender: id, batch: b })));
    const at = findCell(r, { section: 'headline', op, contender: id, batch: big });
    row.push(ratioText(refMedian, at?.status === 'ok' ? at.stats?.median : null));
    rows.push(row);
  }
  for (const row of limitRows(r, op, batches.length, () => 2048)) {
    const s = row[row.length - 1];
    row.push(ratioText(refMedian, typeof s === 'object' && s.kind === 'rate' ? s.stats.median : null));
    rows.push(row);
  }
  const many = op === 'verify' ? 'deserializeMany' : 'serializeMany';
  return {
    title: `${OP_TITLE[op]}: RSA-${first.bits}, ${DIGEST_LABEL[first.digest] ?? first.digest}, ${sizeLabel(first.bodySize)} JSON bodies (${Math.round(first.meanPayload)} B payloads), ${op === 'verify' ? 'payloads' : 'messages'}/s by batch size`,
    head: ['contender', ...batches.map((b) => `batch ${b}`), `${many} ÷ it @${big}`],
    right: [false, ...batches.map(() => true), true],
    rows,
    notes: [],
  };
}

function ratioTable(r: BenchResults, op: Op, ref: 'cs-many' | 'cs-nosimd' = 'cs-many'): Table | null {
  const cells = r.cells.filter((c) => c.section === 'headline' && c.op === op);
  if (!cells.length) return null;
  if (!cells.some((c) => c.contender === ref && c.status === 'ok')) return null;
  const batches = [...new Set(cells.map((c) => c.batch))].sort((a, b) => a - b);
  const many = `${op === 'verify' ? 'deserializeMany' : 'serializeMany'}${ref === 'cs-nosimd' ? ' with CELERY_SIGN_SIMD=0' : ''}`;
  const rows: Value[][] = [];
  const refAt = (b: number) => findCell(r, { section: 'headline', op, contender: ref, batch: b })?.stats?.median;
  for (const id of contendersOf(r, 'headline', op)) {
    if (id === ref) continue;
    rows.push([
      labelOf(r, op, id),
      ...batches.map((b) => {
        const c = findCell(r, { section: 'headline', op, contender: id, batch: b });
        return ratioText(refAt(b), c?.status === 'ok' ? c.stats?.median : null);
      }),
    ]);
  }
  for (const kind of ['single', 'multi'] as const) {
    const s = opensslStats(r.openssl, kind, 2048, op);
    if (!s) continue;
    rows.push([
      kind === 'single' ? 'openssl speed, 1 core' : `openssl speed -multi ${r.openssl.processes}`,
      ...batches.map((b) => ratioText(refAt(b), s.median)),
    ]);
  }
  return {
    title: `${many} ÷ each peer, same batch size (${op}, headline workload)`,
    head: ['peer', ...batches.map((b) => `batch ${b}`)],
    right: [false, ...batches.map(() => true)],
    rows,
    notes: [],
  };
}

function bodiesTable(r: BenchResults, op: Op): Table | null {
  const cells = r.cells.filter((c) => c.section === 'bodies' && c.op === op);
  if (!cells.length) return null;
  const cols = [...new Map(cells.map((c) => [`${c.bodySize}x${c.batch}`, c])).values()].sort((a, b) => a.bodySize - b.bodySize);
  const rows: Value[][] = [];
  for (const id of contendersOf(r, 'bodies', op)) {
    rows.push([
      labelOf(r, op, id),
      ...cols.map((col) => cellValue(findCell(r, { section: 'bodies', op, contender: id, bodySize: col.bodySize, batch: col.batch }), true)),
    ]);
  }
  return {
    title: `${OP_TITLE[op]}: body sizes, RSA-2048, SHA-256 (${op === 'verify' ? 'payloads' : 'messages'}/s, and MB/s of JSON body)`,
    head: ['contender', ...cols.map((c) => `${sizeLabel(c.bodySize)} x${c.batch}`)],
    right: [false, ...cols.map(() => true)],
    rows,
    notes: [],
  };
}

function keysTable(r: BenchResults, op: Op): Table | null {
  const cells = r.cells.filter((c) => c.section === 'keys' && c.op === op);
  if (!cells.length) return null;
  const cols = [...new Map(cells.map((c) => [`${c.bits}/${c.digest}`, c])).values()].sort(
    (a, b) => a.bits - b.bits || a.digest.localeCompare(b.digest),
  );
  const rows: Value[][] = [];
  for (const id of contendersOf(r, 'keys', op)) {
    rows.push([
      labelOf(r, op, id),
      ...cols.map((col) => cellValue(findCell(r, { section: 'keys', op, contender: id, bits: col.bits, digest: col.digest }))),
    ]);
  }
  rows.push(...limitRows(r, op, cols.length, (i) => cols[i]!.bits as Bits));
  const batch = cells[0]!.batch;
  return {
    title: `${OP_TITLE[op]}: key size and digest, ${sizeLabel(cells[0]!.bodySize)} bodies, batch ${batch} (${op === 'verify' ? 'payloads' : 'messages'}/s)`,
    head: ['contender', ...cols.map((c) => `RSA-${c.bits} ${DIGEST_LABEL[c.digest] ?? c.digest}`)],
    right: [false, ...cols.map(() => true)],
    rows,
    notes: [],
  };
}

function eventLoopTable(r: BenchResults): Table | null {
  if (!r.eventLoop.length) return null;
  return {
    title: 'Event-loop delay while batches run back to back (monitorEventLoopDelay, 1 ms resolution)',
    head: ['while running', 'batch', 'items/s', 'p50 ms', 'p99 ms', 'max ms'],
    right: [false, true, true, true, true, true],
    rows: r.eventLoop.map((e) => [
      e.label,
      String(e.batch),
      Math.round(e.opsPerSec).toLocaleString('en-US'),
      e.p50Ms.toFixed(2),
      e.p99Ms.toFixed(2),
      e.maxMs.toFixed(2),
    ]),
    notes: [],
  };
}

function memoryTable(r: BenchResults): Table | null {
  const m = r.memory;
  if (!m) return null;
  const runs = [
    { m, path: r.machine.rsaPath ? RSA_PATH_SHORT[r.machine.rsaPath] : 'celery-sign' },
    ...(r.memorySecond ? [{ m: r.memorySecond, path: RSA_PATH_SHORT['aws-lc-forced'] }] : []),
  ];
  return {
    title: `Resident memory, ${m.payloads.toLocaleString('en-US')} payloads through deserializeMany in chunks of ${m.chunk}${m.quick ? ' (quick mode: fewer than the 1,000,000 of the target)' : ''}`,
    head: ['RSA path', 'RSS, first eighth', 'RSS, last eighth', 'growth', 'peak - first', 'heap used', 'external', 'payloads/s'],
    right: [false, true, true, true, true, true, true, true],
    rows: runs.map(({ m, path }) => [
        path,
        `${m.baselineMiB.toFixed(1)} MiB`,
        `${m.finalMiB.toFixed(1)} MiB`,
        `${m.growthMiB >= 0 ? '+' : ''}${m.growthMiB.toFixed(1)} MiB`,
        `+${m.peakGrowthMiB.toFixed(1)} MiB`,
        `${m.heapUsedMiB.toFixed(1)} MiB`,
        `${m.externalMiB.toFixed(1)} MiB`,
        Math.round(m.opsPerSec).toLocaleString('en-US'),
      ]),
    notes: [`RSS samples after every chunk; first and last eighth are medians. Along the way: ${m.checkpoints.map((c) => `${shortRate(c.payloads)}: ${c.rssMiB.toFixed(0)} MiB`).join(', ')}`],
  };
}

export function targetMeasured(t: TargetResult): string {
  if (t.measured === null) return 'not measured';
  switch (t.unit) {
    case 'x':
      return `${t.measured.toFixed(2)}x`;
    case 'GB/s':
      return `${t.measured.toFixed(2)} GB/s (${t.measured.toFixed(2)}x)`;
    case 'ms':
      return `${t.measured.toFixed(2)} ms`;
    case 'MiB':
      return `${t.measured >= 0 ? '+' : ''}${t.measured.toFixed(1)} MiB`;
  }
}

export function targetStatus(t: TargetResult): string {
  return t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'MISS';
}

function targetsTable(r: BenchResults): Table {
  return {
    title: 'Targets (issues 3, 8 and 11), measured in this run',
    head: ['', 'target', 'required', 'measured', 'detail'],
    right: [false, false, true, true, false],
    rows: r.targets.map((t) => [targetStatus(t), t.title, t.required, targetMeasured(t), t.detail]),
    notes: [],
  };
}

function doesTable(r: BenchResults): Table {
  const rows: Value[][] = [];
  for (const id of CONTENDER_IDS) {
    const v = r.contenders.find((c) => c.id === id && c.op === 'verify');
    const s = r.contenders.find((c) => c.id === id && c.op === 'sign');
    if (!v && !s && !r.cells.some((c) => c.contender === id)) continue;
    const name = id === 'node-pool' ? (v?.label ?? PAIR_LABEL[id]) : PAIR_LABEL[id];
    rows.push([name, HOW[id], v?.does ?? '-', s?.does ?? '-']);
  }
  rows.push([
    'openssl speed rsaN, 1 core and -multi',
    'the machine\'s limit: `openssl speed -elapsed`',
    'RSA primitive only: a digest (no parsing, no body hashing, no JSON)',
    'RSA primitive only: a digest',
  ]);
  return {
    title: 'What each contender does',
    head: ['contender', 'how', 'verify', 'sign'],
    right: [false, false, false, false],
    rows,
    notes: [],
    list: true,
  };
}

export function tables(r: BenchResults): Table[] {
  const out: (Table | null)[] = [
    targetsTable(r),
    headlineTable(r, 'verify'),
    headlineTable(r, 'sign'),
    ratioTable(r, 'verify'),
    ratioTable(r, 'sign'),
    ratioTable(r, 'verify', 'cs-nosimd'),
    ratioTable(r, 'sign', 'cs-nosimd'),
    bodiesTable(r, 'verify'),
    bodiesTable(r, 'sign'),
    keysTable(r, 'verify'),
    keysTable(r, 'sign'),
    eventLoopTable(r),
    memoryTable(r),
    doesTable(r),
  ];
  return out.filter((t): t is Table => t !== null);
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** 3 significant digits with a k/M suffix: 52.1k, 4.18k, 812. */
export function shortRate(x: number): string {
  if (!Number.isFinite(x)) return '-';
  const [div, suffix] = x >= 1e6 ? [1e6, 'M'] : x >= 1e3 ? [1e3, 'k'] : [1, ''];
  const v = x / div;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${suffix}`;
}

const int = (x: number) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toPrecision(3));
const mb = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function terminalValue(v: Value): string {
  if (typeof v === 'string') return v;
  if (v.kind === 'missing') return v.why === 'not-measured' ? 'n/m' : v.why === 'wrong-answer' ? 'WRONG' : '';
  const sp = spread(v.stats);
  const s = `${shortRate(v.stats.median)}${v.limit || v.stats.n < 2 ? '' : ` ±${(sp * 100).toFixed(0)}%`}`;
  return v.mbps !== undefined ? `${s} ${mb(v.mbps)} MB/s` : s;
}

function markdownValue(v: Value): string {
  if (typeof v === 'string') return v.replace(/\|/g, '\\|');
  if (v.kind === 'missing') return v.why === 'not-measured' ? 'not measured' : v.why === 'wrong-answer' ? '**wrong answer**' : '';
  const s = v.stats;
  let text = int(s.median);
  if (s.n > 1) text += ` (${int(s.min)}–${int(s.max)})`;
  if (v.mbps !== undefined) text += `<br>${mb(v.mbps)} MB/s`;
  return text;
}

export function renderTerminal(t: Table): string {
  if (t.list) {
    const lines = t.rows.map((row) => {
      const [name, ...rest] = row.map(terminalValue);
      return `  ${name}: ${rest.map((x, i) => (i === 0 ? x : `${t.head[i + 1]}: ${x}`)).join('; ')}`;
    });
    return [t.title, ...lines, ...t.notes].join('\n');
  }
  const body = t.rows.map((row) => row.map(terminalValue));
  const widths = t.head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (t.right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [t.title, line(t.head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line), ...t.notes].join('\n');
}

export function renderMarkdown(t: Table, level = '###'): string {
  const head = `| ${t.head.map((h) => h || ' ').join(' | ')} |`;
  const sep = `| ${t.right.map((r) => (r ? '---:' : ':---')).join(' | ')} |`;
  const rows = t.rows.map((row) => `| ${row.map(markdownValue).join(' | ')} |`);
  return [`${level} ${t.title}`, '', head, sep, ...rows, ...(t.notes.length ? ['', ...t.notes] : [])].join('\n');
}

/** AVX-512 IFMA on the CPU, and which RSA path each celery-sign measurement took. */
export function simdLines(r: BenchResults): { ifma: string; paths: string } {
  const m = r.machine;
  const ifma = m.ifma === undefined ? 'not recorded' : m.ifma ? 'yes (avx512ifma in /proc/cpuinfo)' : 'no';
  if (!r.paths) return { ifma, paths: m.rsaPath ? RSA_PATH_LABEL[m.rsaPath] : 'not recorded' };
  const measured = r.paths.filter((p) => p.status === 'measured');
  const skipped = r.paths.filter((p) => p.status !== 'measured');
  const text = measured.map((p) => `${p.contender === 'cs-many' ? 'celery-sign' : 'cs-nosimd rows'}: ${RSA_PATH_LABEL[p.rsaPath]}, ${p.where}`).join('; ');
  const why = measured.length === 1 && skipped.length ? ` (one path only: ${skipped.map((p) => p.reason).join('; ')})` : '';
  return { ifma, paths: text + why };
}

export function header(r: BenchResults): string[] {
  const m = r.machine;
  const py =
    r.python.status === 'measured' && r.python.versions
      ? `Python ${r.python.versions.python}, Celery ${r.python.versions.celery}, cryptography ${r.python.versions.cryptography} (${r.python.versions.openssl})`
      : `Python Celery not measured: ${r.python.reason ?? 'unknown'}`;
  return [
    `celery-sign ${m.celerySign} benchmark, ${r.mode} mode, ${r.date}, ${r.durationSeconds.toFixed(0)} s`,
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os} (${m.kernel}), Node ${m.node} (OpenSSL ${m.nodeOpenssl})`,
    `Threads: celery-sign ${r.threads.celerySign}, worker_threads pool ${r.threads.workerPool}, libuv threadpool ${r.threads.uvThreadpool}; ` +
      `load average ${m.loadAverage.map((x) => x.toFixed(2)).join(' ')} at the start, ${r.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} at the end`,
    `AVX-512 IFMA: ${simdLines(r).ifma}; RSA path: ${simdLines(r).paths}`,
    `Limit: ${r.openssl.status === 'measured' ? `${r.openssl.version ?? 'openssl'}; ${r.openssl.how}` : `openssl not measured: ${r.openssl.note ?? ''}`}`,
    py,
  ];
}

function phaseText(r: BenchResults): string {
  return r.phases.map((p) => `${p.name} ${p.seconds.toFixed(1)} s`).join(', ');
}

export function renderTerminalReport(r: BenchResults): string {
  const parts = [header(r).join('\n'), ...tables(r).map(renderTerminal)];
  parts.push(
    [
      'Figures are medians over rounds; ± is the largest distance of the min or max from the median. n/m = not measured.',
      `Time: ${phaseText(r)}`,
      ...r.coverage.map((c) => `Coverage: ${c}`),
      ...r.notes.map((n) => `Note: ${n}`),
      ...r.problems.map((p) => `PROBLEM: ${p}`),
    ].join('\n'),
  );
  return parts.join('\n\n') + '\n';
}

export const BEGIN = '<!-- bench:begin: generated by `npm run bench` (bench/run.ts); edit outside these markers -->';
export const END = '<!-- bench:end -->';

export function renderMarkdownReport(r: BenchResults, chartPath: string): string {
  const m = r.machine;
  const ts = tables(r);
  const [targets, ...rest] = ts;
  const lines: string[] = [
    BEGIN,
    '',
    `## Latest run: ${r.mode} mode, ${r.date.slice(0, 10)}`,
    '',
    `\`npm run bench${r.argv.length ? ' -- ' + r.argv.join(' ') : ''}\`, ${r.durationSeconds.toFixed(0)} s. ` +
      'Every contender was checked to give the same answer before it was timed, then warmed up with one untimed sample of every cell; contenders and workloads were interleaved ' +
      'in a new random order each round. Figures are medians, with the min–max over the rounds in brackets.',
    '',
    '| machine | |',
    '| :--- | :--- |',
    `| CPU | ${m.cpu} |`,
    `| cores | ${m.cores} |`,
    `| memory | ${m.memoryGiB} GiB |`,
    `| OS | ${m.os} (${m.kernel}) |`,
    `| Node | ${m.node} (OpenSSL ${m.nodeOpenssl}) |`,
    `| AVX-512 IFMA | ${simdLines(r).ifma} |`,
    `| RSA path | ${simdLines(r).paths.replace(/\|/g, '\\|')} |`,
    `| system OpenSSL | ${r.openssl.version ?? 'not found'} |`,
    `| the limit | ${r.openssl.status === 'measured' ? r.openssl.how : `not measured: ${r.openssl.note ?? ''}`} |`,
    `| Python | ${r.python.status === 'measured' && r.python.versions ? `${r.python.versions.python}, Celery ${r.python.versions.celery}, kombu ${r.python.versions.kombu}, cryptography ${r.python.versions.cryptography} (${r.python.versions.openssl})` : `not measured: ${r.python.reason ?? ''}`} |`,
    `| threads | celery-sign ${r.threads.celerySign}, worker_threads pool ${r.threads.workerPool}, libuv threadpool ${r.threads.uvThreadpool}, openssl -multi ${r.openssl.processes} |`,
    `| load average | ${m.loadAverage.map((x) => x.toFixed(2)).join(' ')} at the start, ${r.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} at the end |`,
    `| date | ${r.date} |`,
    '',
  ];
  if (targets) lines.push(renderMarkdown(targets), '');
  lines.push(
    '### Throughput by batch size',
    '',
    `![Throughput by batch size, every contender](${chartPath})`,
    '',
    'The limit is `openssl speed -elapsed rsa2048`: the RSA primitive alone, on one core and on every core. ' +
      'Every other contender does the whole job (base64, unpack, certificate lookup, verification, JSON decode; ' +
      'or JSON encode, signature, pack, base64); Python is timed inside Python.',
    '',
  );
  for (const t of rest) lines.push(renderMarkdown(t), '');
  if (r.notes.length) lines.push('### Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  lines.push('### Coverage', '', ...r.coverage.map((c) => `- ${c}`), `- time: ${phaseText(r)}`, '');
  if (r.problems.length) lines.push('### Problems', '', ...r.problems.map((p) => `- ${p}`), '');
  lines.push(END);
  return lines.join('\n');
}

export const MARKDOWN_PREAMBLE = `# Benchmarks

\`npm run bench\` measures celery-sign against every peer a Node (or Python) user has, in one run on one
machine, and reports ratios: absolute figures move from day to day on a shared machine, ratios measured
side by side do not. \`npm run bench -- --quick\` takes under a minute; the full run (no flag) rewrites the
section below and \`bench/results/throughput.svg\`. Options: \`--json\` (machine-readable, on stdout),
\`--threads N\` (celery-sign's native threads, the worker_threads pool and \`openssl speed -multi\`; default:
the machine's cores), \`--write\` (update this file after a quick run too), \`--no-python\`.

Notes on targets that are missed (by how much, and what limits it, from a profile) go below the
generated section.

`;

/** Replaces the generated section of BENCHMARKS.md, keeping everything outside the markers. */
export function mergeMarkdown(existing: string | null, generated: string): string {
  if (existing === null) return MARKDOWN_PREAMBLE + generated + '\n';
  const b = existing.indexOf(BEGIN.slice(0, 20));
  const e = existing.indexOf(END);
  if (b >= 0 && e > b) return existing.slice(0, b) + generated + existing.slice(e + END.length);
  return existing.trimEnd() + '\n\n' + generated + '\n';
}
