/**
 * The worker end to end's results (bench/worker/run.ts): their JSON shape,
 * the targets of issue 11, the text for the terminal, the generated section
 * of BENCHMARKS.md (between its own markers, apart from the headline's) and
 * the chart bench/results/worker.svg.
 */
import type { Machine, RsaPath } from '../machine.js';
import { RSA_PATH_LABEL, RSA_PATH_SHORT } from '../machine.js';

export interface WorkerRound {
  /** Tasks/s: N-1 over the spread of the results' `date_done`. */
  rate: number;
  /** Tasks per CPU-second of the worker's process tree. */
  perCpu: number;
}

export interface WorkerPeer {
  name: string;
  what: string;
  n: number;
  rounds: WorkerRound[];
  /** Medians over the rounds. */
  rate: number;
  perCpu: number;
}

export interface WorkerTarget {
  id: string;
  title: string;
  required: number;
  /** celery-sign ÷ the reference, tasks/s and per CPU-second; null where a peer is missing. */
  rate: number | null;
  perCpu: number | null;
  /** Both ratios at least `required`. */
  pass: boolean | null;
  detail: string;
}

export interface WorkerResults {
  schema: 1;
  date: string;
  argv: string[];
  durationSeconds: number;
  machine: Machine & { ifma: boolean; simd: string };
  /** The RSA path of the `celery-sign` peer (the `celery-sign-nosimd` peer's is AWS-LC with CELERY_SIGN_SIMD=0). */
  rsaPath: RsaPath;
  loadAverageEnd: [number, number, number];
  n: number;
  pythonN: number;
  rounds: number;
  results: Record<string, WorkerPeer>;
  targets: WorkerTarget[];
  problems: string[];
}

const fx = (x: number | null) => (x === null || !Number.isFinite(x) ? '-' : `${x.toFixed(2)}x`);
const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '-');

/** The best of these peers by one measure. */
function best(peers: (WorkerPeer | undefined)[], by: 'rate' | 'perCpu'): WorkerPeer | null {
  const ok = peers.filter((p): p is WorkerPeer => p !== undefined && Number.isFinite(p[by]) && p[by] > 0);
  return ok.length ? ok.reduce((a, b) => (b[by] > a[by] ? b : a)) : null;
}

/**
 * Issue 11's worker targets, for each celery-sign peer measured: ≥ 20x stock
 * Python Celery's best pool (the best of prefork and threads, taken for each
 * measure on its own) and ≥ 2.5x celery-node, in tasks/s and per CPU-second.
 */
export function computeWorkerTargets(results: Record<string, WorkerPeer>, rsaPath: RsaPath): WorkerTarget[] {
  const out: WorkerTarget[] = [];
  const pythons = [results['python-prefork'], results['python-threads']];
  const cn = results['celery-node'];
  const signers: [string, RsaPath][] = [
    ['celery-sign', rsaPath],
    ['celery-sign-nosimd', 'aws-lc-forced'],
  ];
  const two = results['celery-sign'] !== undefined && results['celery-sign-nosimd'] !== undefined;
  for (const [name, path] of signers) {
    const s = results[name];
    if (!s) continue;
    const tag = two ? `[${RSA_PATH_SHORT[path]}] ` : '';
    const suffix = name === 'celery-sign-nosimd' ? ':nosimd' : '';
    const pyRate = best(pythons, 'rate');
    const pyCpu = best(pythons, 'perCpu');
    const ratio = (a: number, b: number | undefined) => (b !== undefined && b > 0 && Number.isFinite(a) ? a / b : null);
    const mk = (id: string, title: string, required: number, rate: number | null, perCpu: number | null, detail: string): WorkerTarget => ({
      id: id + suffix,
      title: tag + title,
      required,
      rate,
      perCpu,
      pass: rate === null || perCpu === null ? null : rate >= required && perCpu >= required,
      detail,
    });
    out.push(
      mk(
        'worker-vs-python',
        "celery-sign's worker vs stock Python Celery's worker, best pool (both auth)",
        20,
        ratio(s.rate, pyRate?.rate),
        ratio(s.perCpu, pyCpu?.perCpu),
        pyRate && pyCpu
          ? `${int(s.rate)} vs ${int(pyRate.rate)} tasks/s (${pyRate.name}); ${int(s.perCpu)} vs ${int(pyCpu.perCpu)} per CPU-s (${pyCpu.name})`
          : 'Python Celery not measured',
      ),
      mk(
        'worker-vs-celery-node',
        "celery-sign's worker (auth) vs celery-node's (unsigned JSON, logging off)",
        2.5,
        ratio(s.rate, cn?.rate),
        ratio(s.perCpu, cn?.perCpu),
        cn ? `${int(s.rate)} vs ${int(cn.rate)} tasks/s; ${int(s.perCpu)} vs ${int(cn.perCpu)} per CPU-s` : 'celery-node not measured',
      ),
    );
  }
  return out;
}

const status = (t: WorkerTarget) => (t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'MISS');

function machineLine(r: WorkerResults): string {
  const m = r.machine;
  const paths = r.results['celery-sign-nosimd']
    ? `${RSA_PATH_LABEL[r.rsaPath]} for the celery-sign worker; ${RSA_PATH_LABEL['aws-lc-forced']} for its CELERY_SIGN_SIMD=0 row`
    : RSA_PATH_LABEL[r.rsaPath];
  return (
    `${m.cpu}, ${m.cores} cores, AVX-512 IFMA: ${r.machine.ifma ? 'yes' : 'no'}, RSA path: ${paths}, Node ${m.node}, ` +
    `load average ${m.loadAverage.map((x) => x.toFixed(2)).join(' ')} at the start, ${r.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} at the end`
  );
}

function peerRows(r: WorkerResults): string[][] {
  const sign = r.results['celery-sign'];
  return Object.values(r.results).map((p) => {
    const range = (k: 'rate' | 'perCpu') =>
      p.rounds.length > 1 ? ` (${int(Math.min(...p.rounds.map((x) => x[k])))}–${int(Math.max(...p.rounds.map((x) => x[k])))})` : '';
    return [
      p.what,
      String(p.n),
      int(p.rate) + range('rate'),
      int(p.perCpu) + range('perCpu'),
      sign ? fx(sign.rate / p.rate) : '-',
      sign ? fx(sign.perCpu / p.perCpu) : '-',
    ];
  });
}

const HEAD = ['worker', 'tasks', 'tasks/s', 'tasks per CPU-second', 'celery-sign ÷ it, tasks/s', 'celery-sign ÷ it, per CPU-s'];
const TARGET_HEAD = ['', 'target', 'required', 'tasks/s', 'per CPU-s', 'detail'];
const targetRow = (t: WorkerTarget) => [status(t), t.title, `>= ${t.required}x`, fx(t.rate), fx(t.perCpu), t.detail];

/** The terminal's text. */
export function renderWorkerTerminal(r: WorkerResults): string {
  const table = (head: string[], rows: string[][], right: boolean[]) => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => (x[i] ?? '').length)));
    const line = (cells: string[]) =>
      cells
        .map((c, i) => (right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd();
    return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
  };
  return [
    `Machine: ${machineLine(r)}`,
    `Median of ${r.rounds} round(s); celery-sign and celery-node drain ${r.n} tasks, Python ${r.pythonN}; ${r.durationSeconds.toFixed(0)} s.`,
    '',
    table(HEAD, peerRows(r), [false, true, true, true, true, true]),
    '',
    'Targets (issue 11), both ratios must hold:',
    table(TARGET_HEAD, r.targets.map(targetRow), [false, false, true, true, true, false]),
    ...r.problems.map((p) => `PROBLEM: ${p}`),
    '',
  ].join('\n');
}

export const WORKER_BEGIN = '<!-- worker-bench:begin: generated by `npm run bench:worker -- --write` (bench/worker/run.ts); edit outside these markers -->';
export const WORKER_END = '<!-- worker-bench:end -->';

const md = (s: string) => s.replace(/\|/g, '\\|');
const mdTable = (head: string[], rows: string[][], right: boolean[]) =>
  [
    `| ${head.map((h) => h || ' ').join(' | ')} |`,
    `| ${right.map((x) => (x ? '---:' : ':---')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.map(md).join(' | ')} |`),
  ].join('\n');

/** The generated "Worker end to end" section of BENCHMARKS.md, markers included. */
export function renderWorkerMarkdown(r: WorkerResults, chartPath: string): string {
  return [
    WORKER_BEGIN,
    '',
    `## Worker end to end: ${r.date.slice(0, 10)}`,
    '',
    `\`npm run bench:worker${r.argv.length ? ' -- ' + r.argv.join(' ') : ''}\`, ${r.durationSeconds.toFixed(0)} s. ` +
      'A real redis-server as broker and result backend, a trivial `add` task, the queue pre-filled by each worker\'s own ' +
      'producer; each worker at its default settings, timed from its first stored result to its last (tasks/s), and its ' +
      'process tree\'s CPU time from ready to the last result (tasks per CPU-second). Peers interleaved round by round, ' +
      'on the same redis-server; figures are medians, the min–max over the rounds in brackets.',
    '',
    `Machine: ${machineLine(r)}.`,
    '',
    `![Worker end to end: tasks/s and tasks per CPU-second of each worker](${chartPath})`,
    '',
    mdTable(HEAD, peerRows(r), [false, true, true, true, true, true]),
    '',
    '### Worker targets (issue 11), measured in this run',
    '',
    mdTable(TARGET_HEAD, r.targets.map(targetRow), [false, false, true, true, true, false]),
    '',
    ...(r.problems.length ? ['### Problems', '', ...r.problems.map((p) => `- ${p}`), ''] : []),
    WORKER_END,
  ].join('\n');
}

/**
 * Replaces the worker section of BENCHMARKS.md, keeping everything outside
 * its markers (the headline's section among them: its markers differ). A
 * first section goes right after the headline's end marker, else at the end.
 */
export function mergeWorkerMarkdown(existing: string | null, generated: string, headlineEnd = '<!-- bench:end -->'): string {
  if (existing === null) return `# Benchmarks\n\n${generated}\n`;
  const b = existing.indexOf(WORKER_BEGIN.slice(0, 26));
  const e = existing.indexOf(WORKER_END);
  if (b >= 0 && e > b) return existing.slice(0, b) + generated + existing.slice(e + WORKER_END.length);
  const h = existing.indexOf(headlineEnd);
  if (h >= 0) {
    const at = h + headlineEnd.length;
    return existing.slice(0, at) + '\n\n' + generated + existing.slice(at);
  }
  return existing.trimEnd() + '\n\n' + generated + '\n';
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const COLOR: Record<string, string> = {
  'celery-sign': '#d62728',
  'celery-sign-nosimd': '#8b0000',
  'python-prefork': '#7f7f7f',
  'python-threads': '#b0b0b0',
  'celery-node': '#1f77b4',
};

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
  for (const f of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}

/** Horizontal bars: tasks/s and tasks per CPU-second of every worker peer, medians with min–max whiskers. */
export function workerSvg(r: WorkerResults): string {
  const peers = Object.entries(r.results);
  const W = 1200;
  const labelW = 390;
  const panelW = (W - labelW - 60) / 2 - 30;
  const barH = 26;
  const gap = 12;
  const top = 96;
  const H = top + peers.length * (barH + gap) + 60 + r.targets.length * 17;
  const out: string[] = [];
  out.push(`<rect width="${W}" height="${H}" fill="#fafafa"/>`);
  out.push(`<text x="${W / 2}" y="28" class="title">celery-sign: the worker end to end (Redis broker and backend, a trivial task, default settings)</text>`);
  const m = r.machine;
  const paths = r.results['celery-sign-nosimd'] ? `${RSA_PATH_SHORT[r.rsaPath]} and ${RSA_PATH_SHORT['aws-lc-forced']}` : RSA_PATH_SHORT[r.rsaPath];
  const sub =
    `${m.cpu}, ${m.cores} cores, AVX-512 IFMA: ${m.ifma ? 'yes' : 'no'}, RSA path: ${paths}, Node ${m.node}, ` +
    `load ${m.loadAverage[0].toFixed(2)}, ${r.date.slice(0, 10)}; median of ${r.rounds} round(s), whiskers min–max`;
  out.push(`<text x="${W / 2}" y="50" class="sub">${esc(sub)}</text>`);
  const short = (p: WorkerPeer) => p.what.replace(/ \(default settings\)/, '');
  peers.forEach(([, p], i) => {
    const y = top + i * (barH + gap);
    out.push(`<text x="${labelW - 10}" y="${y + barH / 2}" dy="4" class="label">${esc(short(p))}</text>`);
  });
  (['rate', 'perCpu'] as const).forEach((k, j) => {
    const x0 = labelW + j * (panelW + 60);
    const max = niceMax(Math.max(1, ...peers.flatMap(([, p]) => [p[k], ...p.rounds.map((x) => x[k])]).filter(Number.isFinite)) * 1.12);
    const X = (v: number) => x0 + (v / max) * panelW;
    const y1 = top + peers.length * (barH + gap) - gap;
    out.push(`<text x="${x0}" y="${top - 14}" class="panel">${k === 'rate' ? 'tasks/s' : 'tasks per CPU-second'}</text>`);
    for (let t = 0; t <= 4; t++) {
      const v = (max * t) / 4;
      out.push(`<line x1="${X(v).toFixed(1)}" x2="${X(v).toFixed(1)}" y1="${top - 4}" y2="${y1}" stroke="#e6e6e6"/>`);
      out.push(`<text x="${X(v).toFixed(1)}" y="${y1 + 18}" class="tick">${int(v)}</text>`);
    }
    peers.forEach(([name, p], i) => {
      const y = top + i * (barH + gap);
      const v = Number.isFinite(p[k]) ? p[k] : 0;
      const color = COLOR[name] ?? '#2ca02c';
      out.push(
        `<rect x="${x0}" y="${y}" width="${(X(v) - x0).toFixed(1)}" height="${barH}" fill="${color}"><title>${esc(`${p.what}: ${int(v)} ${k === 'rate' ? 'tasks/s' : 'tasks per CPU-second'}`)}</title></rect>`,
      );
      if (p.rounds.length > 1) {
        const lo = Math.min(...p.rounds.map((x) => x[k]));
        const hi = Math.max(...p.rounds.map((x) => x[k]));
        out.push(`<line x1="${X(lo).toFixed(1)}" x2="${X(hi).toFixed(1)}" y1="${y + barH / 2}" y2="${y + barH / 2}" stroke="#000" stroke-width="1.4"/>`);
      }
      out.push(`<text x="${(X(v) + 6).toFixed(1)}" y="${y + barH / 2}" dy="4" class="value">${int(v)}</text>`);
    });
  });
  const foot = top + peers.length * (barH + gap) + 44;
  r.targets.forEach((x, i) => {
    const line = `${status(x)}  ${x.title.replace(/ \([^()]*\)$/, '')}: ${fx(x.rate)} tasks/s, ${fx(x.perCpu)} per CPU-second (required >= ${x.required}x both)`;
    out.push(`<text x="${labelW}" y="${foot + i * 17}" class="foot">${esc(line)}</text>`);
  });
  const style = `
    text { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; fill: #222; }
    .title { font-size: 18px; font-weight: 600; text-anchor: middle; }
    .sub { font-size: 12px; fill: #555; text-anchor: middle; }
    .panel { font-size: 15px; font-weight: 600; }
    .label { font-size: 13px; text-anchor: end; }
    .tick { font-size: 12px; text-anchor: middle; fill: #444; }
    .value { font-size: 12.5px; fill: #111; }
    .foot { font-size: 11.5px; fill: #333; }`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="celery-sign worker end to end">`,
    `<style>${style}\n  </style>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}
