/**
 * A hand-written SVG line chart of throughput by batch size, one panel for
 * verify and one for sign, every contender a line (median, with min–max
 * whiskers), the openssl limits as dashed horizontal lines. Log-scale x.
 */
import { findCell, opensslStats, type BenchResults } from './results.js';
import { CONTENDER_IDS, PAIR_LABEL, sizeLabel, type ContenderId, type Op } from './workloads.js';

const COLORS: Record<ContenderId, string> = {
  'cs-many': '#d62728',
  'cs-nosimd': '#8b0000',
  'cs-many-buf': '#e377c2',
  'cs-async': '#ff7f0e',
  'cs-sync': '#8c564b',
  'wc-all': '#1f77b4',
  'wc-serial': '#17becf',
  'node-sync': '#2ca02c',
  'node-cb': '#98a120',
  'node-pool': '#9467bd',
  'cs-js': '#ff9896',
  python: '#7f7f7f',
};
const DASH: Partial<Record<ContenderId, string>> = { 'cs-nosimd': '9 3', 'cs-js': '4 2', 'cs-many-buf': '7 3', 'cs-sync': '2 3', 'wc-serial': '6 3', 'node-sync': '2 3', python: '6 3' };


const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

const tick = (v: number) => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : String(v));

interface Series {
  id: ContenderId;
  label: string;
  points: { batch: number; median: number; q1: number; q3: number }[];
}

function series(r: BenchResults, op: Op): Series[] {
  const out: Series[] = [];
  for (const id of CONTENDER_IDS) {
    const cells = r.cells
      .filter((c) => c.section === 'headline' && c.op === op && c.contender === id && c.status === 'ok' && c.stats)
      .sort((a, b) => a.batch - b.batch);
    if (!cells.length) continue;
    out.push({
      id,
      label: cells[0]!.label,
      points: cells.map((c) => ({ batch: c.batch, median: c.stats!.median, q1: c.stats!.q1, q3: c.stats!.q3 })),
    });
  }
  return out;
}

function panel(r: BenchResults, op: Op, x0: number, y0: number, w: number, h: number): string[] {
  const s = series(r, op);
  const limits: { label: string; value: number; dash: string }[] = [];
  const single = opensslStats(r.openssl, 'single', 2048, op);
  const multi = opensslStats(r.openssl, 'multi', 2048, op);
  if (multi) limits.push({ label: `openssl -multi ${r.openssl.processes} (RSA only)`, value: multi.median, dash: '8 4' });
  if (single) limits.push({ label: 'openssl, 1 core (RSA only)', value: single.median, dash: '3 3' });
  const batches = [...new Set(s.flatMap((x) => x.points.map((p) => p.batch)))];
  // A little room either side of 1 and 4096 for the markers.
  const xMin = 0.7;
  const xMax = Math.max(4096, ...batches) * 1.45;
  const yTop = Math.max(1, ...s.flatMap((x) => x.points.map((p) => p.q3)), ...limits.map((l) => l.value)) * 1.08;
  const step = niceStep(yTop / 6);
  const yMax = Math.ceil(yTop / step) * step;
  const X = (b: number) => x0 + ((Math.log2(b) - Math.log2(xMin)) / (Math.log2(xMax) - Math.log2(xMin))) * w;
  const Y = (v: number) => y0 + h - (v / yMax) * h;
  const out: string[] = [];
  const title = op === 'verify' ? 'Verify (deserialize): payloads/s' : 'Sign (serialize): messages/s';
  out.push(`<text x="${x0}" y="${y0 - 14}" class="panel">${esc(title)}</text>`);
  out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fff" stroke="#bbb"/>`);
  for (let v = 0; v <= yMax + step / 2; v += step) {
    const y = Y(v).toFixed(1);
    out.push(`<line x1="${x0}" x2="${x0 + w}" y1="${y}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${x0 - 8}" y="${y}" class="ytick" dy="4">${tick(Math.round(v))}</text>`);
  }
  for (let b = 1; b <= xMax; b *= 4) {
    const x = X(b).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${y0}" y2="${y0 + h}" stroke="#eeeeee"/>`);
    out.push(`<text x="${x}" y="${y0 + h + 18}" class="xtick">${b}</text>`);
  }
  out.push(`<text x="${x0 + w / 2}" y="${y0 + h + 40}" class="axis">batch size (log scale)</text>`);
  out.push(
    `<text transform="translate(${x0 - 52},${y0 + h / 2}) rotate(-90)" class="axis">${op === 'verify' ? 'verified payloads per second' : 'signed messages per second'}</text>`,
  );
  for (const l of limits) {
    const y = Y(l.value).toFixed(1);
    out.push(`<line x1="${x0}" x2="${x0 + w}" y1="${y}" y2="${y}" stroke="#000" stroke-width="1.3" stroke-dasharray="${l.dash}"/>`);
    out.push(`<text x="${x0 + w - 4}" y="${y}" dy="-4" class="limit">${esc(l.label)}: ${tick(Math.round(l.value / 100) * 100)}</text>`);
  }
  s.forEach((x, k) => {
    // A few pixels apart, so that the whiskers of neighbours do not hide each other.
    const dx = (k - (s.length - 1) / 2) * 2.5;
    const color = COLORS[x.id];
    const width = x.id === 'cs-many' || x.id === 'cs-nosimd' ? 3.2 : 2;
    const dash = DASH[x.id] ? ` stroke-dasharray="${DASH[x.id]}"` : '';
    const d = x.points.map((p, i) => `${i ? 'L' : 'M'}${(X(p.batch) + dx).toFixed(1)},${Y(p.median).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="${width}"${dash}><title>${esc(x.label)}</title></path>`);
    for (const p of x.points) {
      const px = (X(p.batch) + dx).toFixed(1);
      out.push(`<line x1="${px}" x2="${px}" y1="${Y(p.q1).toFixed(1)}" y2="${Y(p.q3).toFixed(1)}" stroke="${color}" stroke-width="1.4" opacity="0.8"/>`);
      out.push(
        `<circle cx="${px}" cy="${Y(p.median).toFixed(1)}" r="${x.id === 'cs-many' ? 4.5 : 3.2}" fill="${color}"><title>${esc(
          `${x.label}, batch ${p.batch}: ${Math.round(p.median).toLocaleString('en-US')}/s (IQR ${Math.round(p.q1).toLocaleString('en-US')}–${Math.round(p.q3).toLocaleString('en-US')})`,
        )}</title></circle>`,
      );
    }
  });
  return out;
}

export function throughputSvg(r: BenchResults): string {
  const W = 1200;
  const pw = 470;
  const ph = 330;
  const top = 88;
  const left1 = 90;
  const left2 = left1 + pw + 130;
  const ops: Op[] = ['verify', 'sign'];
  const ids = CONTENDER_IDS.filter((id) => r.cells.some((c) => c.section === 'headline' && c.contender === id && c.status === 'ok'));
  const legendTop = top + ph + 70;
  const perRow = 2;
  const rows = Math.ceil((ids.length + 2) / perRow);
  const H = legendTop + rows * 22 + 20;
  const m = r.machine;
  const head = r.cells.find((c) => c.section === 'headline');
  const body: string[] = [];
  body.push(`<rect width="${W}" height="${H}" fill="#fafafa"/>`);
  body.push(
    `<text x="${W / 2}" y="28" class="title">celery-sign: throughput by batch size, RSA-2048, SHA-256, ${head ? sizeLabel(head.bodySize) : '512 B'} JSON bodies, end to end</text>`,
  );
  body.push(
    `<text x="${W / 2}" y="50" class="sub">${esc(`${m.cpu}, ${m.cores} cores, Node ${m.node}, ${r.date.slice(0, 10)}, ${r.mode} mode; median of each contender, whiskers the interquartile range`)}</text>`,
  );
  body.push(...panel(r, ops[0]!, left1, top, pw, ph));
  body.push(...panel(r, ops[1]!, left2, top, pw, ph));
  const colW = (W - 2 * left1) / perRow;
  const items: { text: string; draw: (x: number, y: number) => string }[] = ids.map((id) => ({
    text: id === 'node-pool' ? (r.cells.find((c) => c.contender === id)?.label ?? PAIR_LABEL[id]) : PAIR_LABEL[id],
    draw: (x, y) =>
      `<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="${COLORS[id]}" stroke-width="${id === 'cs-many' ? 3.2 : 2}"${
        DASH[id] ? ` stroke-dasharray="${DASH[id]}"` : ''
      }/><circle cx="${x + 14}" cy="${y}" r="3.2" fill="${COLORS[id]}"/>`,
  }));
  items.push({
    text: `openssl speed -multi ${r.openssl.processes}: RSA primitive only, all cores`,
    draw: (x, y) => `<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="#000" stroke-width="1.3" stroke-dasharray="8 4"/>`,
  });
  items.push({
    text: 'openssl speed: RSA primitive only, one core',
    draw: (x, y) => `<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="#000" stroke-width="1.3" stroke-dasharray="3 3"/>`,
  });
  items.forEach((it, i) => {
    const x = left1 + (i % perRow) * colW;
    const y = legendTop + Math.floor(i / perRow) * 22;
    body.push(it.draw(x, y), `<text x="${x + 36}" y="${y}" dy="4" class="legend">${esc(it.text)}</text>`);
  });
  const style = `
    text { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; fill: #222; }
    .title { font-size: 18px; font-weight: 600; text-anchor: middle; }
    .sub { font-size: 13px; fill: #555; text-anchor: middle; }
    .panel { font-size: 15px; font-weight: 600; }
    .xtick { font-size: 12px; text-anchor: middle; fill: #444; }
    .ytick { font-size: 12px; text-anchor: end; fill: #444; }
    .axis { font-size: 13px; text-anchor: middle; fill: #333; }
    .limit { font-size: 11.5px; text-anchor: end; fill: #000; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
    .legend { font-size: 13px; }`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="celery-sign throughput by batch size">`,
    `<style>${style}\n  </style>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
