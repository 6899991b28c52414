/**
 * `NativeSerializer` of the `node:crypto` fallback: the shape and behaviour
 * of `crates/node/src/lib.rs` (same arguments refused, same results, same
 * batch layouts), on `./envelope.ts` and the worker pool (`./pool.ts`).
 *
 * What the native side does and this does not: the kombu-JSON pre-scan of
 * `openPacked` (flag 4 never set, no literal lifted: the facade then decodes
 * on its plain path). Flags 1 (UTF-8) and 2 (ASCII, for a body of one of the
 * `jsonTypes` asked for) are set as the native side sets them.
 *
 * @internal
 * @module
 */
import { isUtf8 } from 'node:buffer';
import { CORE_ERROR_CODES, type CoreErrorCode } from '../codes.js';
import type { OpenedBatch, Opened, SealedBatch } from '../types.js';
import { JsCertificate } from './cert.js';
import { digestFromName, type DigestName } from './digest.js';
import {
  DEFAULT_MAX_PAYLOAD,
  checkSize,
  internalRefusal,
  openOne,
  Refusal,
  seal,
  throwRefusal,
  wireFormatFromName,
  type WireFormat,
} from './envelope.js';
import { invalidArg, refusal } from './errors.js';
import { JsPrivateKey } from './key.js';
import {
  openOnWorker,
  partsFor,
  sealOnWorker,
  type JobFailure,
  type OpenParams,
  type OpenReply,
  type SealReply,
  type StoreView,
} from './pool.js';
import { JsCertStore } from './store.js';

/** Numbers an item in `OpenedBatch.meta`. */
const STRIDE = 9;

// Arguments of the wrong type are refused as napi refuses them (its status as `code`).

function napiError(code: string, message: string): never {
  const err = new Error(message) as Error & { code: string };
  err.code = code;
  throw err;
}

function bytesArg(v: unknown): Uint8Array {
  return v instanceof Uint8Array ? v : invalidArg('Get TypedArray info failed');
}

function lengthsArg(v: unknown): Uint32Array {
  return v instanceof Uint32Array ? v : invalidArg('Get TypedArray info failed');
}

function arrayArg<T>(v: unknown): T[] {
  return Array.isArray(v) ? (v as T[]) : napiError('ArrayExpected', 'Failed to get Array length');
}

/** How napi shows a value in a conversion error. */
function napiShow(v: unknown): string {
  if (v === null) return 'Null';
  if (v === undefined) return 'Undefined';
  if (typeof v === 'symbol') return 'Symbol';
  if (typeof v === 'function') return 'function anonymous(..) ';
  if (typeof v === 'object') return `Object ${Array.isArray(v) ? '[]' : '{}'}`;
  const type = typeof v;
  return `${type === 'bigint' ? 'BigInt' : type[0]!.toUpperCase() + type.slice(1)} ${String(v)} `;
}

function stringArg(v: unknown): string {
  if (typeof v === 'string') return v;
  return napiError('StringExpected', `Failed to convert JavaScript value \`${napiShow(v)}\` into rust type \`String\``);
}

function statusOf(code: CoreErrorCode): number {
  return CORE_ERROR_CODES.indexOf(code) + 1;
}

/**
 * What a batch item gets when the worker that had it stopped: `ERR_INTERNAL`
 * (the core's code for a call that could not be completed), never verified
 * nor signed; where the core has no such code, a refusal.
 */
function notVerified(f: JobFailure): Refusal {
  return internalRefusal(`${f.message}; the payload was not verified`, 'ERR_BAD_SIGNATURE');
}

function notSigned(f: JobFailure): Refusal {
  return internalRefusal(`${f.message}; the body was not signed`, 'ERR_INVALID_KEY');
}

/** A store's current version and certificates, made once per version. */
const views = new WeakMap<JsCertStore, StoreView>();

function viewOf(store: JsCertStore): StoreView {
  const version = store.version;
  let view = views.get(store);
  if (view === undefined || view.version !== version) {
    const certs = [...store.certs()];
    view = { store, version, ders: () => certs.map((c) => c.der) };
    views.set(store, view);
  }
  return view;
}

interface Signing {
  key: JsPrivateKey;
  signerId: string;
  cert: JsCertificate;
}

/** One payload of a coalesced `openAsync`. */
interface QueuedOpen {
  payload: Uint8Array;
  view: StoreView;
  resolve(o: Opened): void;
  reject(e: Error): void;
}

export class JsSerializer {
  readonly #signing: Signing | null;
  readonly #store: JsCertStore | null;
  readonly #digest: DigestName;
  readonly #format: WireFormat;
  readonly #maxPayload: number;
  /** `openAsync` calls of this turn, sent to the pool together. */
  #queued: QueuedOpen[] = [];

  constructor(
    key: JsPrivateKey | undefined | null,
    cert: JsCertificate | undefined | null,
    store: JsCertStore | undefined | null,
    digestName: string,
    wireFormat: string,
    maxPayload: number,
  ) {
    // The arguments' types first, in order, as napi converts them before the call.
    if (key != null && !(key instanceof JsPrivateKey)) invalidArg('Failed to recover `NativePrivateKey` type from napi value');
    if (cert != null && !(cert instanceof JsCertificate)) invalidArg('Failed to recover `NativeCertificate` type from napi value');
    if (store != null && !(store instanceof JsCertStore)) invalidArg('Failed to recover `NativeCertStore` type from napi value');
    stringArg(digestName);
    const format = wireFormatFromName(stringArg(wireFormat));
    if (format === undefined) invalidArg("wireFormat must be 'celery-5.5' or 'celery-5.4'");
    this.#signing = key != null && cert != null ? { key, signerId: cert.id, cert } : null;
    this.#store = store ?? null;
    this.#digest = digestFromName(digestName);
    this.#format = format;
    this.#maxPayload = Number.isFinite(maxPayload) && maxPayload >= 0 ? Math.floor(maxPayload) : DEFAULT_MAX_PAYLOAD;
  }

  /** The native `Shared::signing`: refuses while the certificate is outside its validity period. */
  #needSigning(): Signing {
    const s = this.#signing ?? invalidArg('this serializer has no key and certificate to sign with');
    const now = Date.now();
    if (s.cert.hasExpired(now)) {
      throw refusal('ERR_CERTIFICATE_EXPIRED', `Cannot sign: this serializer's certificate has expired: '${s.signerId}'`);
    }
    if (s.cert.isNotYetValid(now)) {
      throw refusal('ERR_CERTIFICATE_EXPIRED', `Cannot sign: this serializer's certificate is not valid yet: '${s.signerId}'`);
    }
    return s;
  }

  #needStore(): JsCertStore {
    return this.#store ?? invalidArg('this serializer has no certificate store');
  }

  /** Signs and packs one body on the calling thread. */
  seal(contentType: string, contentEncoding: string, body: Uint8Array): string {
    const [ct, enc, b] = [stringArg(contentType), stringArg(contentEncoding), bytesArg(body)];
    const s = this.#needSigning();
    return seal(s.key, s.signerId, this.#digest, this.#format, ct, enc, b);
  }

  /** Signs and packs one body on a worker thread. */
  sealAsync(contentType: string, contentEncoding: string, body: Uint8Array): Promise<string> {
    const [ct, enc, b] = [stringArg(contentType), stringArg(contentEncoding), bytesArg(body)];
    const s = this.#needSigning();
    return this.#sealOn(s, ct, enc, [b], true).then((batch) => {
      if (batch.errors.length > 0) throw refusal(CORE_ERROR_CODES[batch.errors[1]! - 1]!, batch.messages[batch.errors[2]!]!);
      return batch.payloads[0]!;
    });
  }

  /** Signs and packs a batch of bodies over the worker threads; `errors` has `[index, status, messageIdx]` triples. */
  sealMany(contentType: string, contentEncoding: string, bodies: Uint8Array[]): Promise<SealedBatch> {
    const [ct, enc] = [stringArg(contentType), stringArg(contentEncoding)];
    const list = arrayArg<unknown>(bodies).map(bytesArg);
    const s = this.#needSigning();
    return this.#sealOn(s, ct, enc, list);
  }

  async #sealOn(s: Signing, contentType: string, contentEncoding: string, bodies: readonly Uint8Array[], isUrgent = false): Promise<SealedBatch> {
    const n = bodies.length;
    const out: SealedBatch = { payloads: new Array<string>(n).fill(''), errors: [], messages: [] };
    if (n === 0) return out;
    // A signature costs about 0.25 ms (RSA-2048): parts of at most 8 keep a single call's wait short.
    const parts = partsFor(n, 2, 8);
    const per = Math.ceil(n / parts);
    const params = {
      keyOwner: s.key,
      key: s.key.keyObject,
      signerId: s.signerId,
      digest: this.#digest,
      // An id-RSASSA-PSS key signs only with its own digests; node's key object does not check all of it.
      canSign: s.key.canSign(this.#digest),
      format: this.#format,
      contentType,
      contentEncoding,
    };
    const jobs: Promise<SealReply | JobFailure>[] = [];
    const starts: number[] = [];
    for (let start = 0; start < n; start += per) {
      const end = Math.min(n, start + per);
      const lengths = new Uint32Array(end - start);
      let total = 0;
      for (let i = start; i < end; i++) total += (lengths[i - start] = bodies[i]!.length);
      const data = Buffer.allocUnsafeSlow(total).buffer as ArrayBuffer;
      const view = new Uint8Array(data);
      for (let i = start, at = 0; i < end; i++) {
        view.set(bodies[i]!, at);
        at += bodies[i]!.length;
      }
      starts.push(start);
      jobs.push(sealOnWorker(params, data, lengths, isUrgent));
    }
    const replies = await Promise.all(jobs);
    for (let k = 0; k < replies.length; k++) {
      const r = replies[k]!;
      const start = starts[k]!;
      const end = Math.min(n, start + per);
      if (r.op === 'failed') {
        const why = notSigned(r);
        for (let i = start; i < end; i++) out.errors.push(i, statusOf(why.code), out.messages.push(why.message) - 1);
        continue;
      }
      for (let i = 0; i < r.payloads.length; i++) out.payloads[start + i] = r.payloads[i]!;
      for (let e = 0; e < r.errors.length; e += 3) {
        out.errors.push(start + r.errors[e]!, r.errors[e + 1]!, out.messages.push(r.messages[r.errors[e + 2]!]!) - 1);
      }
    }
    // Parts in order and items in order within each: the triples come by index, as natively.
    return out;
  }

  /** Verifies one payload on the calling thread. */
  open(payload: Uint8Array): Opened {
    const bytes = bytesArg(payload);
    const store = this.#needStore();
    const u = openOne(store, this.#digest, bytes, this.#maxPayload, Date.now());
    if (u instanceof Refusal) return throwRefusal(u);
    const body = u.raw.subarray(u.bodyStart, u.bodyEnd);
    return {
      contentType: u.raw.toString('utf8', u.contentTypeStart, u.contentTypeEnd),
      contentEncoding: u.raw.toString('utf8', u.encodingStart, u.encodingEnd),
      body: isUtf8(body) ? body.toString('utf8') : Buffer.from(body),
      signer: u.signer.id,
    };
  }

  /**
   * Verifies one payload on a worker thread. The calls made in one turn of
   * the event loop go to the pool together, as one batch.
   */
  openAsync(payload: Uint8Array): Promise<Opened> {
    bytesArg(payload);
    const store = this.#needStore();
    // Refused before it is copied.
    const tooLarge = checkSize(payload.length, this.#maxPayload);
    if (tooLarge !== null) return Promise.reject(refusal(tooLarge.code, tooLarge.message));
    const view = viewOf(store);
    return new Promise<Opened>((resolve, reject) => {
      // Copied now, as the native side does: the caller may reuse its buffer.
      this.#queued.push({ payload: Uint8Array.prototype.slice.call(payload), view, resolve, reject });
      if (this.#queued.length === 1) queueMicrotask(() => this.#flushQueued());
    });
  }

  #flushQueued(): void {
    const queued = this.#queued;
    this.#queued = [];
    // One batch per store version (a call sees the store as it was when made).
    const groups = new Map<StoreView, QueuedOpen[]>();
    for (const q of queued) {
      const g = groups.get(q.view);
      if (g === undefined) groups.set(q.view, [q]);
      else g.push(q);
    }
    for (const [view, items] of groups) {
      const lengths = new Uint32Array(items.length);
      let total = 0;
      for (let i = 0; i < items.length; i++) total += (lengths[i] = items[i]!.payload.length);
      const data = Buffer.allocUnsafe(total);
      for (let i = 0, at = 0; i < items.length; i++) {
        data.set(items[i]!.payload, at);
        at += items[i]!.payload.length;
      }
      this.#openBatch(view, data, lengths, [], true).then(
        (batch) => {
          const { meta, strings, buffer } = batch;
          for (let i = 0, m = 0; i < items.length; i++, m += STRIDE) {
            const q = items[i]!;
            const status = meta[m]!;
            if (status !== 0) {
              q.reject(refusal(CORE_ERROR_CODES[status - 1]!, strings[meta[m + 1]!]!));
              continue;
            }
            const from = meta[m + 4]!;
            const to = meta[m + 5]!;
            q.resolve({
              contentType: strings[meta[m + 1]!]!,
              contentEncoding: strings[meta[m + 2]!]!,
              body: (meta[m + 6]! & 1) !== 0 ? buffer.toString('utf8', from, to) : Buffer.from(buffer.subarray(from, to)),
              signer: strings[meta[m + 3]!]!,
            });
          }
        },
        (err: unknown) => {
          for (const q of items) q.reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    }
  }

  /**
   * Verifies a batch over the worker threads. The payloads are laid end to
   * end in `data`, item `i` being `lengths[i]` bytes long. Payloads over the
   * size limit are refused here, before anything is copied; the rest go to
   * the workers in contiguous parts, one per thread. `spread` is the native
   * pool's choice (fanned out or on one thread); the workers here always take
   * parts of a chunk each.
   */
  openPacked(data: Buffer, lengths: Uint32Array, jsonTypes: string[], _spread?: boolean | null): Promise<OpenedBatch> {
    if (!(data instanceof Uint8Array)) invalidArg('Failed to create reference from Buffer');
    lengthsArg(lengths);
    const types = arrayArg<unknown>(jsonTypes).map(stringArg);
    let total = 0;
    for (let i = 0; i < lengths.length; i++) total += lengths[i]!;
    if (total > data.length) invalidArg('lengths add up to more than the data');
    const store = this.#needStore();
    return this.#openBatch(viewOf(store), data, lengths, types);
  }

  /**
   * `openPacked` on the calling thread (the native side's small-batch path):
   * item by item, with `openOne`; the same layout, no pre-scan.
   */
  openPackedSync(data: Uint8Array, lengths: Uint32Array, jsonTypes: string[]): OpenedBatch {
    if (!(data instanceof Uint8Array)) invalidArg('Get TypedArray info failed');
    lengthsArg(lengths);
    const types = new Set(arrayArg<unknown>(jsonTypes).map(stringArg));
    let total = 0;
    for (let i = 0; i < lengths.length; i++) total += lengths[i]!;
    if (total > data.length) invalidArg('lengths add up to more than the data');
    const store = this.#needStore();
    const n = lengths.length;
    const meta = new Float64Array(n * STRIDE);
    const strings: string[] = [];
    const index = new Map<string, number>();
    const intern = (s: string): number => {
      let k = index.get(s);
      if (k === undefined) index.set(s, (k = strings.push(s) - 1));
      return k;
    };
    const bodies: Uint8Array[] = [];
    const now = Date.now();
    let out = 0;
    for (let i = 0, at = 0; i < n; at += lengths[i]!, i++) {
      const m = i * STRIDE;
      const u = openOne(store, this.#digest, data.subarray(at, at + lengths[i]!), this.#maxPayload, now);
      if (u instanceof Refusal) {
        meta[m] = statusOf(u.code);
        meta[m + 1] = strings.push(u.message) - 1;
        continue;
      }
      const body = u.raw.subarray(u.bodyStart, u.bodyEnd);
      const contentType = u.raw.toString('utf8', u.contentTypeStart, u.contentTypeEnd);
      const utf8 = isUtf8(body);
      let flags = utf8 ? 1 : 0;
      if (utf8 && types.has(contentType) && body.every((b) => b < 0x80)) flags |= 2;
      meta[m + 1] = intern(contentType);
      meta[m + 2] = intern(u.raw.toString('utf8', u.encodingStart, u.encodingEnd));
      meta[m + 3] = intern(u.signer.id);
      meta[m + 4] = out;
      meta[m + 5] = out + body.length;
      meta[m + 6] = flags;
      bodies.push(body);
      out += body.length;
    }
    return { buffer: Buffer.concat(bodies, out), meta, strings, literals: [] };
  }

  /** `openPacked` as the native side queues a small batch: here, the same as `openPacked`. */
  openPackedQueued(data: Buffer, lengths: Uint32Array, jsonTypes: string[]): Promise<OpenedBatch> {
    return this.openPacked(data, lengths, jsonTypes);
  }

  async #openBatch(view: StoreView, data: Uint8Array, lengths: Uint32Array, jsonTypes: string[], isUrgent = false): Promise<OpenedBatch> {
    const n = lengths.length;
    const meta = new Float64Array(n * STRIDE);
    const strings: string[] = [];
    const params: OpenParams = { digest: this.#digest, maxPayload: this.#maxPayload, nowMs: Date.now(), jsonTypes };
    // The items within the limit, by index, with their offsets in `data`.
    const offsets = new Float64Array(n + 1);
    const eligible: number[] = [];
    for (let i = 0, at = 0; i < n; i++) {
      offsets[i] = at;
      const len = lengths[i]!;
      const tooLarge = checkSize(len, this.#maxPayload);
      if (tooLarge === null) eligible.push(i);
      else {
        meta[i * STRIDE] = statusOf(tooLarge.code);
        meta[i * STRIDE + 1] = strings.push(tooLarge.message) - 1;
      }
      at += len;
      offsets[i + 1] = at;
    }
    // A verification costs about 0.025 ms (RSA-2048): parts of 8 to 128 items,
    // pulled by the workers as they get free, so that one the machine slows down
    // (other processes) takes fewer and the others do not wait for it at the end
    // of a facade chunk. Every part costs a round trip (a message each way, the
    // event loop woken): a facade chunk of 256 on 2 threads goes as 2 parts of
    // 128, which took 3.7-4.9% less CPU an item than 4 of 64 (and 256 in one
    // part 5.1-5.7% less, but with nothing left to balance within a chunk),
    // builds alternating batch by batch, 30-40 rounds each, load 3.4-3.9.
    const parts = partsFor(eligible.length, 8, 128);
    const per = Math.ceil(eligible.length / parts);
    const jobs: Promise<OpenReply | JobFailure>[] = [];
    const members: number[][] = [];
    for (let p = 0; p < eligible.length; p += per) {
      const idx = eligible.slice(p, p + per);
      const partLengths = new Uint32Array(idx.length);
      let bytes = 0;
      for (let k = 0; k < idx.length; k++) bytes += (partLengths[k] = lengths[idx[k]!]!);
      // Its own ArrayBuffer (transferred), not zero-filled: every byte is written below.
      const partData = Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
      const into = new Uint8Array(partData);
      const first = idx[0]!;
      const last = idx[idx.length - 1]!;
      if (last - first + 1 === idx.length) {
        // Contiguous (no oversize item among them): one copy.
        into.set(data.subarray(offsets[first]!, offsets[last + 1]!));
      } else {
        for (let k = 0, at = 0; k < idx.length; k++) {
          const i = idx[k]!;
          into.set(data.subarray(offsets[i]!, offsets[i + 1]!), at);
          at += lengths[i]!;
        }
      }
      members.push(idx);
      jobs.push(openOnWorker(view, params, partData, partLengths, isUrgent));
    }
    const replies = await Promise.all(jobs);
    let bodyBytes = 0;
    for (const r of replies) if (r.op === 'open') bodyBytes += r.used;
    const only = replies.length === 1 && replies[0]!.op === 'open' ? (replies[0] as OpenReply) : null;
    const buffer = only !== null ? Buffer.from(only.buffer, 0, only.used) : Buffer.allocUnsafe(bodyBytes);
    let w = 0;
    for (let k = 0; k < replies.length; k++) {
      const r = replies[k]!;
      const idx = members[k]!;
      if (r.op === 'failed') {
        const why = notVerified(r);
        const msg = strings.push(why.message) - 1;
        for (const i of idx) {
          meta[i * STRIDE] = statusOf(why.code);
          meta[i * STRIDE + 1] = msg;
        }
        continue;
      }
      const base = strings.length;
      for (const s of r.strings) strings.push(s);
      if (only === null) Buffer.from(r.buffer, 0, r.used).copy(buffer, w);
      const rm = r.meta;
      for (let j = 0; j < idx.length; j++) {
        const m = idx[j]! * STRIDE;
        const src = j * STRIDE;
        if (rm[src] !== 0) {
          meta[m] = rm[src]!;
          meta[m + 1] = rm[src + 1]! + base;
          continue;
        }
        meta[m + 1] = rm[src + 1]! + base;
        meta[m + 2] = rm[src + 2]! + base;
        meta[m + 3] = rm[src + 3]! + base;
        meta[m + 4] = rm[src + 4]! + w;
        meta[m + 5] = rm[src + 5]! + w;
        meta[m + 6] = rm[src + 6]!;
      }
      w += r.used;
    }
    return { buffer, meta, strings, literals: [] };
  }
}
