import type { ContenderId, Dataset, Op } from '../workloads.js';

/** One measured cell: an operation over the first `batch` items of a dataset. */
export interface Cell {
  op: Op;
  dataset: Dataset;
  batch: number;
}

/** A timing sample: `ops` items done in `seconds` of wall time. */
export interface Sample {
  ops: number;
  seconds: number;
}

export interface Contender {
  readonly id: ContenderId;
  readonly op: Op;
  readonly label: string;
  /** What it does end to end, for the report. */
  readonly does: string;
  /**
   * Does the cell once, untimed, and returns the answer: the decoded values
   * (verify) or the payloads (sign), in order. Also the warm-up.
   */
  answer(cell: Cell): Promise<unknown[]>;
  /** Times the cell: repeats whole batches until at least `minMs` have passed. */
  sample(cell: Cell, minMs: number): Promise<Sample>;
  /** Called once per dataset before its cells are checked, with the cells this contender will run. */
  prepare?(dataset: Dataset, cells: readonly Cell[]): Promise<void>;
}

/** Builds `sample` from a function that does one batch. */
export async function timeBatches(run: () => Promise<unknown>, batch: number, minMs: number): Promise<Sample> {
  let ops = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    await run();
    ops += batch;
    t = performance.now();
  } while (t - t0 < minMs);
  return { ops, seconds: (t - t0) / 1000 };
}

export const VERIFY_DOES = 'b64 + unpack + cert lookup + verify + JSON decode';
export const SIGN_DOES = 'JSON encode + sign + pack + b64';

/** A contender built from a batch function. */
export function simpleContender(
  id: ContenderId,
  op: Op,
  label: string,
  does: string,
  run: (cell: Cell) => Promise<unknown[]>,
): Contender {
  return {
    id,
    op,
    label,
    does,
    answer: run,
    sample: (cell, minMs) => timeBatches(() => run(cell), cell.batch, minMs),
  };
}
