/**
 * Issue 9, "no silent defaults" (TypeScript side): a batch status is mapped
 * to its code through the list generated from the Rust enum, totally; a
 * status outside it is an internal error, never a plausible refusal such as
 * ERR_MALFORMED_PAYLOAD.
 *
 * Imports the sources to reach the backend's class (patched, serially).
 */
import test from 'ava';
import { Certificate, CertStore, PrivateKey, SecureSerializer, SecurityError } from '../src/index.js';
import { native, STATUS_CODES, type OpenedBatch, type SealedBatch } from '../src/native.js';
import * as fx from './helpers/fixtures.js';

const key = new PrivateKey(fx.pemOf(fx.key('rsa2048.pkcs8')));
const cert = new Certificate(fx.pemOf(fx.cert('rsa2048')));
const s = new SecureSerializer({ key, cert, store: new CertStore([cert]) });

type Proto = {
  openPacked(data: Buffer, lengths: Uint32Array, jsonTypes: string[]): Promise<OpenedBatch>;
  // Small batches (src/serializer.ts SMALL_SPLIT): on the calling thread and on the async queue's.
  openPackedSync(data: Buffer, lengths: Uint32Array, jsonTypes: string[]): OpenedBatch;
  openPackedQueued(data: Buffer, lengths: Uint32Array, jsonTypes: string[]): Promise<OpenedBatch>;
  sealMany(ct: string, enc: string, bodies: Uint8Array[]): Promise<SealedBatch>;
};
const proto = native.NativeSerializer.prototype as unknown as Proto;

/** Every item of the next batches comes back with `status`. */
async function withStatus<T>(status: number, run: () => Promise<T>): Promise<T> {
  const { openPacked, openPackedSync, openPackedQueued, sealMany } = proto;
  const opened = (lengths: Uint32Array): OpenedBatch => {
    const meta = new Float64Array(lengths.length * 9);
    for (let i = 0; i < lengths.length; i++) {
      meta[i * 9] = status;
      meta[i * 9 + 1] = 0;
    }
    return { buffer: Buffer.alloc(0), meta, strings: ['a message'], literals: [] } as unknown as OpenedBatch;
  };
  // Every way a batch reaches the backend: the pool, and the two small-batch paths.
  proto.openPacked = async (_data, lengths) => opened(lengths);
  proto.openPackedSync = (_data, lengths) => opened(lengths);
  proto.openPackedQueued = async (_data, lengths) => opened(lengths);
  proto.sealMany = async function (this: unknown, _ct, _enc, bodies) {
    return { payloads: bodies.map(() => ''), errors: [0, status, 0], messages: ['a message'] } as unknown as SealedBatch;
  };
  try {
    return await run();
  } finally {
    proto.openPacked = openPacked;
    proto.openPackedSync = openPackedSync;
    proto.openPackedQueued = openPackedQueued;
    proto.sealMany = sealMany;
  }
}

test.serial('every status the backend can give maps to its own code', async (t) => {
  const payload = s.serialize([1]);
  for (let status = 1; status <= STATUS_CODES.length; status++) {
    // A small batch (split between the calling thread and the async queue)
    // and one for the pool. (A batch of one is the sync open call, whose
    // errors are thrown, not given as statuses: translate(), src/native.ts.)
    for (const n of [2, 64]) {
      const rs = await withStatus(status, () => s.deserializeMany(Array.from({ length: n }, () => payload)));
      t.is(rs.length, n);
      for (const r of rs) {
        t.true(r.ok === false && r.error instanceof SecurityError);
        t.is((r as { error: SecurityError }).error.code, STATUS_CODES[status - 1]!);
      }
    }
    const e = await withStatus(status, () => t.throwsAsync(s.serializeMany([1])));
    t.is((e as SecurityError).code, STATUS_CODES[status - 1]!);
  }
});

test.serial('a status outside the list is ERR_INTERNAL, not a plausible refusal', async (t) => {
  t.true(STATUS_CODES.includes('ERR_INTERNAL'));
  const payload = s.serialize([1]);
  for (const status of [STATUS_CODES.length + 1, 255, -1, 1.5, NaN]) {
    // Two payloads (a small batch, split) and 64 (the pool).
    const rs = [
      ...(await withStatus(status, () => s.deserializeMany([payload, payload]))),
      ...(await withStatus(status, () => s.deserializeMany(Array.from({ length: 64 }, () => payload)))),
    ];
    t.is(rs.length, 66);
    for (const r of rs) {
      t.true(r.ok === false && r.error instanceof SecurityError, `status ${status}`);
      const e = (r as { error: SecurityError }).error;
      t.is(e.code, 'ERR_INTERNAL', `status ${status}`);
      t.regex(e.message, /internal error: the backend gave status .*\(a message\)/);
    }
    const e2 = await withStatus(status, () => t.throwsAsync(s.serializeMany([1, 2]), { instanceOf: SecurityError }));
    t.is((e2 as SecurityError).code, 'ERR_INTERNAL', `status ${status}`);
    t.regex(e2!.message, /internal error/);
  }
  // And the batches after it are as before.
  const [r] = await s.deserializeMany([payload]);
  t.deepEqual(r, { ok: true, value: [1], signer: cert.id });
});
