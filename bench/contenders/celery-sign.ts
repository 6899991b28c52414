/** celery-sign itself: the batch methods, the async methods awaited one at a time, the sync methods. */
import type { DeserializeResult } from 'celery-sign';
import type { Serializers } from '../workloads.js';
import { simpleContender, SIGN_DOES, VERIFY_DOES, type Cell, type Contender } from './types.js';

function unwrap(results: DeserializeResult[]): unknown[] {
  const out = new Array<unknown>(results.length);
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    if (!r.ok) throw r.error;
    out[i] = r.value;
  }
  return out;
}

export function celerySignContenders(serializers: Serializers): Contender[] {
  const ser = (cell: Cell) => serializers.get(cell.dataset.bits, cell.dataset.digest);
  const payloads = (cell: Cell) => cell.dataset.payloads.slice(0, cell.batch);
  const values = (cell: Cell) => cell.dataset.values.slice(0, cell.batch);
  // Buffers as a broker client hands them over: made once per dataset, outside the timing.
  const buffers = new WeakMap<object, Buffer[]>();
  const payloadBuffers = (cell: Cell) => {
    let b = buffers.get(cell.dataset);
    if (!b) {
      b = cell.dataset.payloads.map((p) => Buffer.from(p, 'latin1'));
      buffers.set(cell.dataset, b);
    }
    return b.slice(0, cell.batch);
  };
  return [
    simpleContender('cs-many-buf', 'verify', 'celery-sign deserializeMany, Buffer payloads', VERIFY_DOES, async (cell) =>
      unwrap(await ser(cell).deserializeMany(payloadBuffers(cell))),
    ),
    simpleContender('cs-many', 'verify', 'celery-sign deserializeMany', VERIFY_DOES, async (cell) =>
      unwrap(await ser(cell).deserializeMany(payloads(cell))),
    ),
    simpleContender('cs-async', 'verify', 'celery-sign deserializeAsync, one at a time', VERIFY_DOES, async (cell) => {
      const s = ser(cell);
      const out: unknown[] = [];
      for (const p of payloads(cell)) out.push(await s.deserializeAsync(p));
      return out;
    }),
    simpleContender('cs-sync', 'verify', 'celery-sign deserialize (sync)', VERIFY_DOES, async (cell) => {
      const s = ser(cell);
      return payloads(cell).map((p) => s.deserialize(p));
    }),
    simpleContender('cs-many', 'sign', 'celery-sign serializeMany', SIGN_DOES, async (cell) =>
      ser(cell).serializeMany(values(cell)),
    ),
    simpleContender('cs-async', 'sign', 'celery-sign serializeAsync, one at a time', SIGN_DOES, async (cell) => {
      const s = ser(cell);
      const out: string[] = [];
      for (const v of values(cell)) out.push(await s.serializeAsync(v));
      return out;
    }),
    simpleContender('cs-sync', 'sign', 'celery-sign serialize (sync)', SIGN_DOES, async (cell) => {
      const s = ser(cell);
      return values(cell).map((v) => s.serialize(v));
    }),
  ];
}
