/**
 * A worker thread of the `node:crypto` fallback's pool (see `./pool.ts`):
 * opens and seals the parts of batches it is sent, with the same envelope
 * code as the main thread (`./envelope.ts`), and posts back flat results.
 *
 * Certificates come by DER, once per store version; a job names the store
 * version it was started with, so a batch sees the snapshot it started with.
 * Signing keys come as `KeyObject`s (structured-cloned by Node), once per key.
 *
 * @internal
 * @module
 */
import { isAscii, isUtf8 } from 'node:buffer';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { CoreErrorCode } from '../codes.js';
import { CORE_ERROR_CODES } from '../codes.js';
import { JsCertificate } from './cert.js';
import { fail } from './errors.js';
import type { DigestName } from './digest.js';
import { BAD_SIGNATURE, decodeCapacity, internalRefusal, openUnverified, Refusal, sameBytes, seal, signPss, Snapshot } from './envelope.js';
import type { FromWorker, OpenJob, SealJob, ToWorker, WorkerInit } from './pool.js';

const port = parentPort;
if (port === null) throw new Error('celery-sign: src/backend/js/worker is a worker thread entry');

// Lower this thread's priority (Linux, where nice is per thread; best effort:
// a failure leaves it as it was) when asked to (CELERY_SIGN_NICE, see pool.ts).
{
  const nice = (workerData as WorkerInit | undefined)?.nice ?? 0;
  if (nice > 0 && process.platform === 'linux') {
    try {
      setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), nice);
    } catch {
      // harmless
    }
  }
}

/** Store snapshots by store id: the latest version sent. */
const stores = new Map<number, { version: number; snapshot: Snapshot<JsCertificate> }>();
/** Signing keys by key id. */
const keys = new Map<number, import('node:crypto').KeyObject>();

function statusOf(code: CoreErrorCode): number {
  return CORE_ERROR_CODES.indexOf(code) + 1;
}

const CODE_PREFIX = /^(ERR_[A-Z_]+): ([\s\S]*)$/;

/** A refusal thrown by part 1's code (`Error('ERR_X: message')`), as data. */
function asRefusal(err: unknown): Refusal {
  if (err instanceof Refusal) return err;
  const m = err instanceof Error ? CODE_PREFIX.exec(err.message) : null;
  if (m !== null && (CORE_ERROR_CODES as readonly string[]).includes(m[1]!)) return new Refusal(m[1] as CoreErrorCode, m[2]!);
  return internalRefusal(err instanceof Error ? err.message : String(err), 'ERR_MALFORMED_PAYLOAD');
}

/** Scratch room to decode one payload into, grown as needed (and shrunk back after a job). */
const SCRATCH_KEEP = 64 * 1024;
let scratch = Buffer.allocUnsafe(SCRATCH_KEEP);

function open(job: OpenJob): void {
  let entry = stores.get(job.storeId);
  if (job.certs !== undefined) {
    entry = { version: job.version, snapshot: new Snapshot(job.certs.map((der) => JsCertificate.fromDer(der))) };
    stores.set(job.storeId, entry);
  }
  if (entry === undefined || entry.version !== job.version) {
    throw new Error(`store ${job.storeId} version ${job.version} was never sent to this worker`);
  }
  const snapshot = entry.snapshot;
  const digest = job.digest as DigestName;
  const data = Buffer.from(job.data);
  const lengths = job.lengths;
  const n = lengths.length;
  const jsonTypes = job.jsonTypes.length === 0 ? null : new Set(job.jsonTypes);
  const meta = new Float64Array(n * 9);
  const strings: string[] = [];
  const interned = new Map<string, number>();
  const intern = (s: string): number => {
    let i = interned.get(s);
    if (i === undefined) {
      i = strings.push(s) - 1;
      interned.set(s, i);
    }
    return i;
  };
  // A part mostly has one content type, one encoding and one signer: the
  // last of each is kept (its bytes, its string's index), so that an item
  // like the one before makes no strings and no lookups.
  let typeBytes: Buffer | null = null;
  let typeIdx = 0;
  let typeJson = false;
  let encBytes: Buffer | null = null;
  let encIdx = 0;
  let lastSigner: JsCertificate | null = null;
  let signerIdx = 0;
  // Bodies are copied here one after the other; never more than the payloads' decoded size.
  const bodies = Buffer.allocUnsafeSlow(decodeCapacity(data.length) + 3 * n);
  let w = 0;
  let at = 0;
  for (let i = 0, m = 0; i < n; i++, m += 9) {
    const len = lengths[i]!;
    const end = at + len;
    let r: Refusal;
    try {
      const cap = decodeCapacity(len);
      if (scratch.length < cap) scratch = Buffer.allocUnsafe(Math.max(cap, scratch.length * 2));
      const u = openUnverified(snapshot, data, at, end, job.maxPayload, scratch, 0, job.nowMs);
      if (u instanceof Refusal) r = u;
      else {
        const body = u.raw.subarray(u.bodyStart, u.bodyEnd);
        if (!u.signer.verifySignature(body, u.signature, digest)) r = BAD_SIGNATURE;
        else {
          const raw = u.raw;
          if (typeBytes === null || !sameBytes(typeBytes, raw, u.contentTypeStart, u.contentTypeEnd)) {
            const contentType = raw.toString('utf8', u.contentTypeStart, u.contentTypeEnd);
            typeBytes = Buffer.from(raw.subarray(u.contentTypeStart, u.contentTypeEnd));
            typeIdx = intern(contentType);
            typeJson = jsonTypes !== null && jsonTypes.has(contentType);
          }
          if (encBytes === null || !sameBytes(encBytes, raw, u.encodingStart, u.encodingEnd)) {
            encBytes = Buffer.from(raw.subarray(u.encodingStart, u.encodingEnd));
            encIdx = intern(raw.toString('utf8', u.encodingStart, u.encodingEnd));
          }
          if (u.signer !== lastSigner) {
            lastSigner = u.signer;
            signerIdx = intern(u.signer.id);
          }
          // ASCII is UTF-8: one check for the usual JSON body.
          const flags = typeJson && isAscii(body) ? 3 : isUtf8(body) ? 1 : 0;
          meta[m + 1] = typeIdx;
          meta[m + 2] = encIdx;
          meta[m + 3] = signerIdx;
          meta[m + 4] = w;
          bodies.set(body, w);
          w += body.length;
          meta[m + 5] = w;
          meta[m + 6] = flags;
          at = end;
          continue;
        }
      }
    } catch (err) {
      r = asRefusal(err);
    }
    meta[m] = statusOf(r.code);
    meta[m + 1] = strings.push(r.message) - 1;
    at = end;
  }
  // A large payload's room is not kept for the next job.
  if (scratch.length > SCRATCH_KEEP) scratch = Buffer.allocUnsafe(SCRATCH_KEEP);
  // An own ArrayBuffer (allocUnsafeSlow), so it can be transferred.
  const reply: FromWorker = { id: job.id, op: 'open', meta, strings, buffer: bodies.buffer as ArrayBuffer, used: w };
  port!.postMessage(reply, [meta.buffer, bodies.buffer as ArrayBuffer]);
}

function sealPart(job: SealJob): void {
  if (job.key !== undefined) keys.set(job.keyId, job.key);
  const key = keys.get(job.keyId);
  if (key === undefined) throw new Error(`key ${job.keyId} was never sent to this worker`);
  // What JsPrivateKey.signWith does: the key's restriction (checked on the main thread), then the signature.
  const signer = {
    sign: (data: Uint8Array, digestName: string) =>
      job.canSign ? signPss(key, data, digestName) : fail('ERR_INVALID_KEY', 'Unable to sign data: the key cannot sign with this digest'),
  };
  const data = Buffer.from(job.data);
  const payloads: string[] = [];
  const errors: number[] = [];
  const messages: string[] = [];
  let at = 0;
  for (let i = 0; i < job.lengths.length; i++) {
    const end = at + job.lengths[i]!;
    try {
      payloads.push(seal(signer, job.signerId, job.digest as DigestName, job.format, job.contentType, job.contentEncoding, data.subarray(at, end)));
    } catch (err) {
      const r = asRefusal(err);
      payloads.push('');
      errors.push(i, statusOf(r.code), messages.push(r.message) - 1);
    }
    at = end;
  }
  const reply: FromWorker = { id: job.id, op: 'seal', payloads, errors, messages };
  port!.postMessage(reply);
}

port.on('message', (msg: ToWorker) => {
  switch (msg.op) {
    case 'open':
    case 'seal':
      try {
        if (msg.op === 'open') open(msg);
        else sealPart(msg);
      } catch (err) {
        const reply: FromWorker = { id: msg.id, op: 'failed', message: err instanceof Error ? err.message : String(err) };
        port!.postMessage(reply);
      }
      break;
    case 'drop-store':
      stores.delete(msg.storeId);
      break;
    case 'drop-key':
      keys.delete(msg.keyId);
      break;
    case 'exit':
      // Tests: a worker that dies with jobs queued behind this message.
      process.exit(msg.code);
  }
});

port.postMessage({ id: 0, op: 'ready' } satisfies FromWorker);
