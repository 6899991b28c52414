/**
 * The runner: builds a section's datasets, checks every contender's answer on
 * every cell before timing it, warms every one up with an untimed sample, then
 * takes samples in rounds, each round in a new shuffled order of (cell,
 * contender), so that drift on a noisy machine falls on every contender alike.
 */
import { constants, verify as nodeVerify, X509Certificate } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { Contender, Cell } from './contenders/types.js';
import { stats, prng, shuffle, type Stats } from './stats.js';
import { decodeBody, decodePayload } from './wire.js';
import {
  makeDataset,
  sizeLabel,
  datasetId,
  type ContenderId,
  type Dataset,
  type Keys,
  type Op,
  type SectionId,
  type SectionPlan,
  type Serializers,
} from './workloads.js';

export interface CellResult {
  section: SectionId;
  op: Op;
  dataset: string;
  bits: number;
  digest: string;
  bodySize: number;
  meanBody: number;
  meanPayload: number;
  batch: number;
  contender: ContenderId;
  label: string;
  status: 'ok' | 'wrong-answer' | 'not-measured';
  note?: string;
  /** ops/s of each sample, in the order taken. */
  samples: number[];
  stats?: Stats;
}

export function cellLabel(c: { op: Op; bits: number; digest: string; bodySize: number; batch: number }): string {
  return `${c.op} rsa${c.bits}/${c.digest} ${sizeLabel(c.bodySize)} x${c.batch}`;
}

/** A one-line progress indicator on stderr, only when stderr is a terminal. */
export class Progress {
  readonly enabled: boolean;
  readonly #t0 = performance.now();
  #phase = '';
  #detail = '';
  #last = 0;
  constructor(enabled = process.stderr.isTTY === true) {
    this.enabled = enabled;
    // Keeps the clock moving through long steps (openssl speed, a slow batch).
    if (enabled) setInterval(() => this.show(this.#detail), 1000).unref();
  }
  phase(name: string, detail = ''): void {
    this.#phase = name;
    this.show(detail, true);
  }
  show(detail: string, force = false): void {
    if (!this.enabled) return;
    const now = performance.now();
    this.#detail = detail;
    if (!force && now - this.#last < 50) return;
    this.#last = now;
    const secs = ((now - this.#t0) / 1000).toFixed(0).padStart(4);
    const cols = process.stderr.columns || 100;
    const line = `${secs}s  ${this.#phase}${detail ? '  ' + detail : ''}`;
    process.stderr.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
  }
  clear(): void {
    if (this.enabled) process.stderr.write('\r\x1b[K');
  }
}

export interface RunContext {
  keys: Keys;
  serializers: Serializers;
  /** op:id -> contender; a missing one is reported as not measured. */
  contenders: ReadonlyMap<string, Contender>;
  notMeasured: ReadonlyMap<ContenderId, string>;
  progress: Progress;
  seed: number;
  /** Datasets by id: reused when present, added when built. */
  datasets: Map<string, Dataset>;
  /** Other measurements to shuffle into every round (openssl speed), by label. */
  interleave?: { label: string; run: () => Promise<void> }[];
}

export const contenderKey = (op: Op, id: ContenderId) => `${op}:${id}`;

/**
 * The referees of a signer's answer: celery-sign's deserializeMany and
 * node:crypto (salt length recovered) must both accept every payload, find the
 * right signer, and decode the expected value.
 */
async function checkSigned(cell: Cell, payloads: unknown[], ctx: RunContext): Promise<string | null> {
  const { dataset, batch } = cell;
  if (payloads.length !== batch) return `returned ${payloads.length} payloads for ${batch} values`;
  if (!payloads.every((p): p is string => typeof p === 'string')) return 'returned a payload that is not a string';
  const key = ctx.keys.get(dataset.bits);
  const results = await ctx.serializers.get(dataset.bits, dataset.digest).deserializeMany(payloads);
  const publicKey = new X509Certificate(key.certPem).publicKey;
  for (let i = 0; i < batch; i++) {
    const r = results[i]!;
    if (!r.ok) return `item ${i}: celery-sign refused it: ${r.error.code} ${r.error.message}`;
    if (r.signer !== key.id) return `item ${i}: signer ${r.signer}`;
    if (!isDeepStrictEqual(r.value, dataset.values[i])) return `item ${i}: celery-sign decoded a different value`;
    const u = decodePayload(payloads[i]!);
    const opts = { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO };
    if (!nodeVerify(dataset.digest, u.body, opts, u.signature)) return `item ${i}: node:crypto refused the signature`;
    if (!isDeepStrictEqual(decodeBody(u), dataset.values[i])) return `item ${i}: node:crypto peer decoded a different value`;
  }
  return null;
}

function checkVerified(cell: Cell, values: unknown[]): string | null {
  if (values.length !== cell.batch) return `returned ${values.length} values for ${cell.batch} payloads`;
  for (let i = 0; i < cell.batch; i++) {
    if (!isDeepStrictEqual(values[i], cell.dataset.values[i])) return `item ${i}: a different value`;
  }
  return null;
}

export async function runSection(section: SectionPlan, ctx: RunContext): Promise<CellResult[]> {
  const { progress } = ctx;
  // Datasets, each built once.
  const { datasets } = ctx;
  for (const spec of section.cells.map((c) => c.dataset)) {
    const id = datasetId(spec);
    if (datasets.has(id)) continue;
    progress.phase(`[${section.id}] signing ${spec.n} x ${sizeLabel(spec.bodySize)} messages (rsa${spec.bits}/${spec.digest})`);
    datasets.set(id, await makeDataset(spec, ctx.serializers));
  }

  interface Entry {
    cell: Cell;
    contender: Contender;
    result: CellResult;
  }
  const results: CellResult[] = [];
  const entries: Entry[] = [];
  for (const spec of section.cells) {
    const dataset = datasets.get(datasetId(spec.dataset))!;
    const cell: Cell = { op: spec.op, dataset, batch: spec.batch };
    for (const id of spec.contenders) {
      const contender = ctx.contenders.get(contenderKey(spec.op, id));
      const result: CellResult = {
        section: section.id,
        op: spec.op,
        dataset: dataset.id,
        bits: dataset.bits,
        digest: dataset.digest,
        bodySize: dataset.bodySize,
        meanBody: dataset.meanBody,
        meanPayload: dataset.meanPayload,
        batch: spec.batch,
        contender: id,
        label: contender?.label ?? id,
        status: 'not-measured',
        samples: [],
      };
      results.push(result);
      if (!contender) {
        result.note = ctx.notMeasured.get(id) ?? 'not available';
        continue;
      }
      entries.push({ cell, contender, result });
    }
  }

  // Per-dataset preparation (Python loads and checks its copy here).
  const prepared = new Set<string>();
  for (const e of entries) {
    if (!e.contender.prepare) continue;
    const k = `${e.contender.op}:${e.contender.id}:${e.cell.dataset.id}`;
    if (prepared.has(k)) continue;
    prepared.add(k);
    progress.phase(`[${section.id}] preparing ${e.contender.label} on ${e.cell.dataset.id}`);
    const cells = entries.filter((x) => x.contender.id === e.contender.id && x.cell.dataset === e.cell.dataset).map((x) => x.cell);
    try {
      await e.contender.prepare(e.cell.dataset, cells);
    } catch (err) {
      for (const x of entries) {
        if (x.contender.id === e.contender.id && x.cell.dataset === e.cell.dataset) {
          x.result.status = 'wrong-answer';
          x.result.note = `failed to prepare: ${(err as Error).message}`;
        }
      }
    }
  }

  // The answer check, which is also the warm-up.
  const timed: Entry[] = [];
  let n = 0;
  for (const e of entries) {
    n++;
    if (e.result.status === 'wrong-answer') continue;
    progress.phase(`[${section.id}] checking ${n}/${entries.length}`, `${cellLabel(e.result)} · ${e.contender.label}`);
    let problem: string | null;
    try {
      const answer = await e.contender.answer(e.cell);
      problem = e.cell.op === 'verify' ? checkVerified(e.cell, answer) : await checkSigned(e.cell, answer, ctx);
    } catch (err) {
      problem = `threw: ${(err as Error).message}`;
    }
    if (problem) {
      e.result.status = 'wrong-answer';
      e.result.note = problem;
    } else {
      e.result.status = 'ok';
      timed.push(e);
    }
  }

  // A warm-up round, untimed: one sample of every timed cell, shuffled like a
  // round. The answer check is one batch, which left some
  // contenders short of their steady state: the first timed sample of the
  // fallback child (its worker threads' and decoder's code not yet optimized)
  // came out 15-30% below its later ones in every run (quick runs, 2026-12-02,
  // 44.8-51.8k/s against 60.8-65.9k/s at batch 4096), and a sample in 3 or 7
  // is enough to move a median.
  for (const e of shuffle(timed, prng(ctx.seed))) {
    progress.phase(`[${section.id}] warm-up`, `${cellLabel(e.result)} · ${e.contender.label}`);
    await e.contender.sample(e.cell, section.minSampleMs);
  }

  // The rounds.
  type Job = { entry: Entry } | { extra: { label: string; run: () => Promise<void> } };
  const jobs: Job[] = [...timed.map((entry) => ({ entry })), ...(ctx.interleave ?? []).map((extra) => ({ extra }))];
  const total = jobs.length * section.rounds;
  let done = 0;
  for (let round = 0; round < section.rounds; round++) {
    for (const job of shuffle(jobs, prng(ctx.seed + round * 7919))) {
      const where = `[${section.id}] round ${round + 1}/${section.rounds}, ${done}/${total}`;
      if ('extra' in job) {
        progress.phase(where, job.extra.label);
        await job.extra.run();
      } else {
        const e = job.entry;
        progress.phase(where, `${cellLabel(e.result)} · ${e.contender.label}`);
        const s = await e.contender.sample(e.cell, section.minSampleMs);
        e.result.samples.push(s.ops / s.seconds);
      }
      done++;
    }
  }
  for (const e of timed) e.result.stats = stats(e.result.samples);
  return results;
}
