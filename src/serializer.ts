import { toBytes, type Bytes, type Digest } from './bytes.js';
import { Certificate, CertStore, type FSCertStore } from './certificate.js';
import { ImproperlyConfigured, SecurityError } from './errors.js';
import { PrivateKey } from './keys.js';
import type { SecurityErrorCode } from './errors.js';
import { backend, call, callAsync, expectResult, native, STATUS_CODES, type NativeSerializer, type Opened, type OpenedBatch } from './native.js';
import { checkDigest, checkWireFormat, type WireFormat } from './options.js';
import {
  INSECURE_CONTENT_TYPES,
  loadsFrom,
  registry as defaultRegistry,
  type Decoder,
  type EncodedMessage,
  type SerializerRegistry,
} from './registry.js';
import { loads as jsonLoads } from './json/loads.js';
import type { ScanHints } from './json/hinted.js';

/** Default limit on one payload's size (bytes of base64), like the Rust core's. */
export const DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024 * 1024;

/**
 * Items per native call when a large batch is pipelined. The event loop
 * decodes one chunk's bodies in one turn: 128 on the native backend keeps
 * that turn near 0.5 ms, and the p99 event-loop delay of batches of 4096 back
 * to back went from 4.5-5.5 ms (chunks of 256) to 3.3-3.7 ms with the IFMA
 * kernels and 3.3-4.4 ms with CELERY_SIGN_SIMD=0, for 1.5-2% more CPU an item
 * and the same rate within the noise (alternating 128 and 256 in one process,
 * 8 rounds each, quiet 2-core machine). The fallback keeps 256: it splits a
 * chunk into parts for its worker threads, and each part is a round trip
 * whose cost shows (see `backend/js/serializer.ts`).
 */
const PIPELINE_CHUNK = backend === 'native' ? 128 : 256;

/**
 * Chunks of a large batch in flight at once (within two byte budgets, see
 * {@link PIPELINE_BYTES}). With two, the pool's threads ran out of work
 * whenever a chunk settled while this thread was still decoding the one
 * before: the next chunk only goes down once this thread sees the settled
 * one. The native chunks run on the pool itself and hold no libuv thread
 * (`openPacked`, crates/node/src/queue.rs), so more cost nothing there.
 * Measured on the 2-core IFMA machine (Intel, 2026-12-02; 4096 x 512 B,
 * RSA-2048, one process a setting, 4 s of batches back to back each, with
 * the turn limit below): 2 in flight 167k-183k/s (cores busy 1.58-1.69 of
 * 2), 4 in flight 187k-203k/s (1.79), 6 198k-203k/s, 8 202k-204k/s; the p99
 * event-loop delay 3.0-3.5 ms at 2, 3.1-3.4 ms at 4 (one series of three
 * at 4.1-4.2 ms), 3.8-3.9 ms at 6, 4.6 ms at 8; with
 * CELERY_SIGN_SIMD=0 (the pool is slower, and seldom waits) 98k-103k/s at
 * every depth, p99 3.1-3.3 ms at 2 to 4 and 4.7-4.9 ms at 6. So 4. The
 * fallback keeps 2: its worker threads pull parts of chunks themselves
 * (see `backend/js/pool.ts`).
 */
const PIPELINE_DEPTH = backend === 'native' ? 4 : 2;

/**
 * Decoding chunks that settled together runs in turns of the event loop of
 * about this many milliseconds: with several chunks in flight, several
 * settle at once, and decoding them all in one go held the loop for longer
 * (p99 delay 5.3-5.6 ms at 6 in flight without it, 3.8-3.9 ms with it).
 */
const TURN_MS = 1;

/**
 * Items per native call when a large batch is signed: about 40 ms of work on
 * 2 threads (RSA-2048), two calls in flight.
 */
const SEAL_CHUNK = 256;

/**
 * Most bytes of packed payloads per native call. A batch goes down in chunks
 * of at most {@link PIPELINE_CHUNK} items and this many bytes, up to
 * {@link PIPELINE_DEPTH} in flight while they hold no more than this many
 * bytes together (a further chunk goes down only then, or when fewer than
 * two are out): its pack buffers hold at most twice this, whatever the batch
 * adds up to (a single payload larger than this goes alone).
 * Payloads over `maxPayloadSize` are never packed.
 *
 * 4 MiB on the native backend: a batch of large bodies then goes down in
 * several chunks, so this thread decodes the bodies of one while the pool
 * verifies the next, and each chunk's bytes stay in the caches. 16 bodies
 * of 1 MiB (2-core Intel IFMA machine, 2026-12-02, 40 batches a setting):
 * 0.79-0.81 GB/s in one chunk (the 64 MiB this was before), 1.04-1.13 GB/s
 * at 4 MiB (3 bodies a chunk) on both RSA paths, 1.03-1.06 GB/s at 2 MiB;
 * CPU a body 2.05-2.13 ms before, 1.55-1.67 ms at 4 MiB. The fallback keeps
 * 64 MiB: it splits chunks into parts for its worker threads itself.
 */
const PIPELINE_BYTES = (backend === 'native' ? 4 : 64) * 1024 * 1024;

/**
 * The batch limits above, for tests of the chunking only (a lower byte budget
 * shows chunking by bytes with small figures).
 *
 * @internal
 */
export const batchLimits: { items: number; bytes: number } = { items: PIPELINE_CHUNK, bytes: PIPELINE_BYTES };

/** Largest buffer of packed payloads kept for reuse (see `#spare`). */
const MAX_SPARE_BYTES = 32 * 1024 * 1024;

/** How long spare buffers are kept after the last batch (ms). */
const SPARE_IDLE_MS = 2000;

/**
 * Small batches (issue 11): a round through the native pool (a libuv thread,
 * the pool's threads, the event loop woken) costs several verifications'
 * worth of time, and the pool's lowered priority makes it wait longest on a
 * busy machine. So on the native backend a batch of at most `SMALL_HERE`
 * payloads is opened on the calling thread, by `deserialize`'s own native
 * call (`#deserializeOne`: cheaper for one payload than a batch layout); one of at
 * most `SMALL_SPLIT` is split with the native thread of `deserializeAsync`
 * (see crates/node/src/queue.rs), which opens the first half while this
 * thread opens the rest. Either only while the payloads add up to at most
 * `SMALL_BYTES`, so that the event loop is never held for long; anything
 * larger goes through the pool.
 */
const SMALL_HERE = 1;
const SMALL_SPLIT = 48;
const SMALL_BYTES = 64 * 1024;

/** The size of the small batches' pack buffer (`#scratch`). */
const SCRATCH_BYTES = SMALL_BYTES + 4;

/** Where a chunk is opened: the native pool, the calling thread, the native queue thread. */
type Place = 'pool' | 'here' | 'queue';

/** Numbers per item in a native batch's `meta` (see crates/node: OpenedBatch). */
const META_STRIDE = 9;

/** Bits of an item's flags in a native batch's `meta` (see crates/node: OpenedBatch). */
const UTF8 = 1;
const ASCII = 2;
const SCANNED = 4;
const HOOK = 8;
const LONG_DIGITS = 16;
const LITERALS = 32;

/** Options of {@link SecureSerializer}: Celery's `SecureSerializer(key, cert, store, digest, serializer)`, and what celery-sign adds. */
export interface SecureSerializerOptions {
  /** Signs; needed by the serialize methods. */
  key?: PrivateKey;
  /** Whose id goes into each payload as the signer; needed by the serialize methods. */
  cert?: Certificate;
  /** Certificates that may sign; needed by the deserialize methods. */
  store?: CertStore;
  /** Default `'sha256'`. */
  digest?: Digest;
  /** The inner serializer, a name in the registry. Default `'json'`. */
  serializer?: string;
  /**
   * Inner content types (or serializer names) decoded after verification.
   * Default: the inner serializer's own type plus `application/data` and
   * `application/text`. Pickle and YAML are never decoded.
   */
  accept?: string[];
  /** What the serialize methods write. Default `'celery-5.5'`; deserialize reads both. */
  wireFormat?: WireFormat;
  /** Payloads longer than this (bytes of base64) are refused before decoding. Default 64 MiB. */
  maxPayloadSize?: number;
  /** The registry the inner serializer comes from. Default: the package's `registry`. */
  registry?: SerializerRegistry;
}

/** One slot of a `deserializeMany` batch, in the order of the payloads: the value and its signer, or the error of that payload alone. */
export type DeserializeResult =
  | { ok: true; value: unknown; signer: string }
  | { ok: false; error: SecurityError };

/** What one `deserializeMany` decodes with, fixed when it starts. */
interface BatchContext {
  /** A copy of the registry's decoders: a change to the registry while the batch is out does not reach it. */
  decoders: ReadonlyMap<string, Decoder>;
  /** The accepted content types the snapshot decodes with kombu's JSON: pre-scanned natively. */
  jsonTypes: string[];
  /**
   * The native serializer the batch's chunks go to: for a batch that may take
   * several chunks, one over a copy of the store as it was when the batch
   * started, so that a store reloaded meanwhile (FSCertStore.reload) does not
   * reach the later chunks: the whole batch sees the old store or the new.
   */
  native: NativeSerializer;
}

/** Items `start..end` of a batch, gone down in one native call (`opened`, null when none needed it). */
interface Chunk {
  start: number;
  end: number;
  /** Items refused for their size before anything was copied, by index from `start`; null if none. */
  tooLarge: Array<SecurityError | undefined> | null;
  /** Bytes of payloads packed for the native call (about). */
  bytes: number;
  /** Pending for the pool and the queue; already there when opened on the calling thread. */
  opened: Promise<OpenedBatch> | OpenedBatch | null;
}

/**
 * Whether a chunk ending at `end` of `n` items is fanned out over the pool's
 * threads: only the last (or only) chunk of a batch. The others run each on
 * one pool thread, item after item: fanned out, a thread waiting for the
 * rest of its chunk ran the next chunk's job meanwhile, so the chunks in
 * flight finished together (done-to-done p50 0.01 ms, p90 4.2 ms) and the
 * pool's threads slept while this thread decoded them (15% of their time,
 * from `perf sched`). Measured on the 2-core IFMA machine (2026-12-02,
 * 4096 x 512 B, RSA-2048, batches back to back, cores busy of 2): every
 * chunk fanned out, IFMA 238k/s (1.80), CELERY_SIGN_SIMD=avx2 113k-118k/s
 * (1.75-1.82), CELERY_SIGN_SIMD=0 107k/s (1.80); only the last fanned out,
 * 253k-257k/s (1.91), 127k-128k/s (1.97), 118k-120k/s (1.97), the p99
 * event-loop delay 2.6-2.8 ms, and 16 bodies of 1 MiB 1.30-1.32 GB/s
 * (were 1.04-1.13).
 */
function spreads(end: number, n: number): boolean {
  return end >= n;
}

/** Bytes of payloads the chunks in flight hold. */
function inflightBytes(chunks: readonly Chunk[]): number {
  let b = 0;
  for (const c of chunks) b += c.bytes;
  return b;
}

const FORCE = { force: true } as const;

/**
 * Celery's `SecureSerializer` (`celery.security.serialization`): signs the
 * serialized body with RSA-PSS and packs it the way Celery does; verifies a
 * payload against a certificate store and decodes the body.
 *
 * The sync methods block the event loop for one RSA operation: keep them for
 * small call sites. The async and batch methods run on native threads.
 */
export class SecureSerializer {
  readonly digest: Digest;
  readonly serializer: string;
  readonly wireFormat: WireFormat;
  readonly maxPayloadSize: number;
  readonly #native: NativeSerializer;
  readonly #registry: SerializerRegistry;
  readonly #accept: ReadonlySet<string>;
  readonly #canSign: boolean;
  readonly #canVerify: boolean;
  readonly #store: CertStore | undefined;
  /** The pinned serializer of multi-chunk batches, for one generation of the store. */
  #pinned: { generation: number; native: NativeSerializer } | null = null;
  /**
   * Buffers of packed payloads whose native call has settled, kept for the
   * next batches: a fresh large buffer costs page faults to fill and, as
   * external memory, brings V8's next collection nearer.
   */
  readonly #spare: Buffer[] = [];
  /** The pack buffer of small batches (opened on this thread, or copied by the queue before the call returns). */
  #scratch: Buffer | null = null;
  /** Drops the spare buffers once batches stop coming. */
  #spareTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: SecureSerializerOptions = {}) {
    const { key, cert, store } = options;
    if (key !== undefined && !(key instanceof PrivateKey)) throw new TypeError('key must be a PrivateKey');
    if (cert !== undefined && !(cert instanceof Certificate)) throw new TypeError('cert must be a Certificate');
    if (store !== undefined && !(store instanceof CertStore)) throw new TypeError('store must be a CertStore');
    this.digest = checkDigest(options.digest ?? 'sha256');
    this.wireFormat = checkWireFormat(options.wireFormat ?? 'celery-5.5');
    this.serializer = options.serializer ?? 'json';
    this.#registry = options.registry ?? defaultRegistry;
    const innerType = this.#registry.nameToType.get(this.serializer);
    if (innerType === undefined && this.serializer !== 'raw') {
      throw new ImproperlyConfigured(`No encoder installed for ${JSON.stringify(this.serializer)}`);
    }
    const maxPayloadSize = options.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD_SIZE;
    if (!Number.isSafeInteger(maxPayloadSize) || maxPayloadSize < 0) {
      throw new ImproperlyConfigured('maxPayloadSize must be a non-negative integer');
    }
    this.maxPayloadSize = maxPayloadSize;
    const accept = options.accept ?? [innerType ?? 'application/data', 'application/data', 'application/text'];
    this.#accept = new Set(
      [...this.#registry.prepareAccept(accept)].filter((ct) => !INSECURE_CONTENT_TYPES.has(ct)),
    );
    this.#canSign = key !== undefined && cert !== undefined;
    this.#canVerify = store !== undefined;
    this.#store = store;
    this.#native = call(
      () =>
        new native.NativeSerializer(
          key?.native ?? null,
          cert?.native ?? null,
          store?.native ?? null,
          this.digest,
          this.wireFormat,
          maxPayloadSize,
        ),
    );
  }

  /**
   * The store this serializer verifies against (an {@link FSCertStore} emits
   * `'reload'`, `'expired'` and `'error'` events), or undefined.
   */
  get store(): CertStore | undefined {
    return this.#store;
  }

  /**
   * Serializes and signs `data`; returns the payload (base64 text). Blocks for
   * one signature. Throws `ERR_CERTIFICATE_EXPIRED` while the certificate
   * signed with is expired or not valid yet (as every signing method does).
   */
  serialize(data: unknown): string {
    this.#needKey();
    const m = this.#registry.dumps(data, this.serializer);
    return call(() => this.#native.seal(m.contentType, m.contentEncoding, m.body));
  }

  /** Like {@link SecureSerializer.serialize}, with the signature made on a native thread. */
  async serializeAsync(data: unknown): Promise<string> {
    this.#needKey();
    const m = this.#registry.dumps(data, this.serializer);
    return callAsync(() => this.#native.sealAsync(m.contentType, m.contentEncoding, m.body));
  }

  /**
   * Serializes and signs a batch over the thread pool; results in order.
   * Throws (`SecurityError`, naming the item) if any item cannot be signed.
   */
  async serializeMany(items: readonly unknown[]): Promise<string[]> {
    this.#needKey();
    const n = items.length;
    if (n === 0) return [];
    // A large batch goes down in chunks, two in flight: while the native
    // threads sign one, this thread encodes the next and makes the strings of
    // the one before, so the threads do not stand idle between batches.
    const size = n <= SEAL_CHUNK * 1.5 ? n : SEAL_CHUNK;
    const out: string[] = new Array(n);
    const inflight: Array<{ start: number; sealed: Promise<string[]> }> = [];
    let next = 0;
    const seal = (): void => {
      const start = next;
      next = Math.min(n, start + size);
      inflight.push({ start, sealed: this.#sealChunk(items, start, next) });
    };
    try {
      seal();
      if (next < n) seal();
      while (inflight.length > 0) {
        const { start, sealed } = inflight[0]!;
        const payloads = await sealed;
        inflight.shift();
        if (next < n) seal();
        for (let k = 0; k < payloads.length; k++) out[start + k] = payloads[k]!;
      }
    } catch (err) {
      // Nothing left out unobserved.
      for (const c of inflight) c.sealed.catch(() => {});
      throw err;
    }
    return out;
  }

  /** Items `start` to `end` of a batch, signed in one native call (or one by one if their content types differ). */
  async #sealChunk(items: readonly unknown[], start: number, end: number): Promise<string[]> {
    const encoded = new Array<EncodedMessage>(end - start);
    for (let i = start; i < end; i++) encoded[i - start] = this.#registry.dumps(items[i], this.serializer);
    const first = encoded[0]!;
    const uniform = encoded.every(
      (m) => m.contentType === first.contentType && m.contentEncoding === first.contentEncoding,
    );
    if (!uniform) {
      return Promise.all(
        encoded.map((m) => callAsync(() => this.#native.sealAsync(m.contentType, m.contentEncoding, m.body))),
      );
    }
    const sealed = await callAsync(() =>
      this.#native.sealMany(
        first.contentType,
        first.contentEncoding,
        encoded.map((m) => m.body),
      ),
    );
    if (sealed.errors.length > 0) {
      const [index, status, msg] = sealed.errors;
      throw statusError(status!, `item ${start + index!}: ${sealed.messages[msg!]}`);
    }
    return sealed.payloads;
  }

  /** Verifies and decodes one payload; throws `SecurityError`. Blocks for one verification. */
  deserialize(payload: Bytes): unknown {
    this.#needStore();
    const tooLarge = sizeRefusal(payload, this.maxPayloadSize);
    if (tooLarge !== null) throw tooLarge;
    const bytes = toBytes(payload, 'payload');
    return this.#decodeOpened(call(() => this.#native.open(bytes)));
  }

  /** Like {@link SecureSerializer.deserialize}, with the verification made on a native thread. */
  async deserializeAsync(payload: Bytes): Promise<unknown> {
    this.#needStore();
    const tooLarge = sizeRefusal(payload, this.maxPayloadSize);
    if (tooLarge !== null) throw tooLarge;
    const bytes = toBytes(payload, 'payload');
    const opened = callAsync(() => this.#native.openAsync(bytes));
    expectResult();
    return this.#decodeOpened(await opened);
  }

  /**
   * Verifies and decodes a batch in one native call over the thread pool.
   * Results are positional; a bad payload gives `{ ok: false, error }` and
   * never affects its neighbours.
   *
   * A small batch skips the pool, whose round trip costs more than a few
   * verifications: one payload is verified on the calling thread (as by
   * {@link SecureSerializer.deserialize}), and up to 48 (of at most 64 KiB in
   * all) are shared between the calling thread and the native thread of
   * {@link SecureSerializer.deserializeAsync}.
   */
  async deserializeMany(payloads: readonly Bytes[]): Promise<DeserializeResult[]> {
    this.#needStore();
    const n = payloads.length;
    const out: DeserializeResult[] = new Array(n);
    if (n === 0) return out;
    if (n <= SMALL_SPLIT && backend === 'native' && smallBytes(payloads) <= SMALL_BYTES) {
      if (n === 1) {
        out[0] = this.#deserializeOne(payloads[0]!);
        return out;
      }
      return this.#deserializeSmall(payloads, out, this.#batchContext(this.#native));
    }
    const ctx = this.#batchContext(this.#pinnedNative());
    // Large batches go down in chunks (by count and by bytes), several in
    // flight (PIPELINE_DEPTH): the native threads verify the next ones while
    // this thread decodes the bodies of the first.
    const items = n <= batchLimits.items * 1.5 ? n : batchLimits.items;
    const inflight: Chunk[] = [];
    let next = 0;
    const open = (): void => {
      const c = this.#openChunk(payloads, next, items, ctx);
      next = c.end;
      inflight.push(c);
    };
    try {
      const fill = (): void => {
        while (next < n && inflight.length < PIPELINE_DEPTH && (inflight.length < 2 || inflightBytes(inflight) <= batchLimits.bytes)) open();
      };
      fill();
      let turn = performance.now();
      while (inflight.length > 0) {
        const c = inflight[0]!;
        const batch = c.opened === null ? null : await c.opened;
        inflight.shift();
        fill();
        this.#collect(batch, out, c, ctx);
        if (inflight.length > 0 && performance.now() - turn > TURN_MS) {
          // Chunks settled together are decoded in separate turns of the event loop.
          await new Promise<void>((r) => setImmediate(r));
          turn = performance.now();
        }
      }
    } catch (err) {
      // Nothing left out unobserved.
      for (const c of inflight) if (c.opened instanceof Promise) c.opened.catch(() => {});
      throw err;
    }
    return out;
  }

  /**
   * A batch of one: `deserialize`'s own path on the calling thread (the
   * cheapest there is for one payload: no batch layout to build and read
   * back), its refusal in the result rather than thrown.
   */
  #deserializeOne(payload: Bytes): DeserializeResult {
    const refused = sizeRefusal(payload, this.maxPayloadSize);
    if (refused !== null) return { ok: false, error: refused };
    const bytes = toBytes(payload, 'payload');
    let opened: Opened;
    try {
      opened = call(() => this.#native.open(bytes));
    } catch (err) {
      // A refusal of this payload is its result; anything else fails the call, as in a larger batch.
      if (err instanceof SecurityError) return { ok: false, error: err };
      throw err;
    }
    try {
      return { ok: true, value: this.#decodeOpened(opened), signer: opened.signer };
    } catch (err) {
      return { ok: false, error: asSecurityError(err) };
    }
  }

  /**
   * A small batch (see `SMALL_HERE`): the first half goes to the native
   * queue thread, the rest is opened and decoded here meanwhile.
   */
  async #deserializeSmall(payloads: readonly Bytes[], out: DeserializeResult[], ctx: BatchContext): Promise<DeserializeResult[]> {
    const n = payloads.length;
    const first = n > SMALL_HERE ? this.#openChunk(payloads, 0, n >> 1, ctx, 'queue') : null;
    try {
      for (let next = first?.end ?? 0; next < n; ) {
        const c = this.#openChunk(payloads, next, n - next, ctx, 'here');
        next = c.end;
        this.#collect(c.opened as OpenedBatch | null, out, c, ctx);
      }
      if (first !== null) this.#collect(first.opened === null ? null : await first.opened, out, first, ctx);
    } catch (err) {
      // Nothing left out unobserved.
      if (first?.opened instanceof Promise) first.opened.catch(() => {});
      throw err;
    }
    return out;
  }

  /**
   * A native serializer verifying against a copy of the store as it is now
   * (made once per generation of the store), for a batch whose chunks go
   * down over several turns of the event loop.
   */
  #pinnedNative(): NativeSerializer {
    const store = this.#store!;
    const generation = store.generation;
    if (this.#pinned === null || this.#pinned.generation !== generation) {
      const copy = call(() => store.native.copy());
      const pinned = call(
        () => new native.NativeSerializer(null, null, copy, this.digest, this.wireFormat, this.maxPayloadSize),
      );
      this.#pinned = { generation, native: pinned };
    }
    return this.#pinned.native;
  }

  #batchContext(nativeSerializer: NativeSerializer): BatchContext {
    const decoders = new Map(this.#registry.decoders);
    const jsonTypes: string[] = [];
    for (const [contentType, decoder] of decoders) {
      if (decoder === jsonLoads && this.#accept.has(contentType)) jsonTypes.push(contentType);
    }
    return { decoders, jsonTypes, native: nativeSerializer };
  }

  /**
   * Opens the items from `start`: at most `items` of them and (but for a
   * single larger one) at most the byte budget of packed payloads. Those over
   * `maxPayloadSize` are refused here, measured without a copy, and go down
   * as empty items.
   */
  #openChunk(payloads: readonly Bytes[], start: number, items: number, ctx: BatchContext, place: Place = 'pool'): Chunk {
    const max = this.maxPayloadSize;
    const budget = batchLimits.bytes;
    const stop = Math.min(payloads.length, start + items);
    let tooLarge: Array<SecurityError | undefined> | null = null;
    // A payload is ASCII (base64) but for a broken one: room for a string's
    // UTF-16 length is room for its UTF-8 almost always, and a write that
    // stops short shows. So the text is encoded once, not measured first.
    let room = 0;
    let packed = 0;
    let end = start;
    for (; end < stop; end++) {
      const p = payloads[end]!;
      const size = typeof p === 'string' ? p.length : toBytes(p, 'payload').length;
      const refusal = sizeRefusal(p, max);
      if (refusal !== null) {
        (tooLarge ??= [])[end - start] = refusal;
        continue;
      }
      if (packed > 0 && room + size > budget) break;
      room += size;
      packed++;
    }
    const chunk: Chunk = { start, end, tooLarge, bytes: room, opened: null };
    if (packed === 0) return chunk;
    const lengths = new Uint32Array(end - start);
    // Off the pool the buffer is done with when the call returns: one scratch buffer serves.
    const scratch = place !== 'pool' && room + 4 <= SCRATCH_BYTES;
    const data = scratch ? (this.#scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES)) : this.#takeBuffer(room + 4);
    let at = 0;
    for (let i = start; i < end; i++) {
      if (tooLarge?.[i - start] !== undefined) continue;
      const p = payloads[i]!;
      let len: number;
      if (typeof p === 'string') {
        len = data.write(p, at, 'utf8');
        // Fewer than 4 bytes left after the write: it may have stopped short.
        if (data.length - at - len < 4) {
          if (!scratch) this.#giveBuffer(data);
          return this.#openChunkMeasured(payloads, chunk, ctx, place);
        }
      } else {
        data.set(p, at);
        len = p.length;
      }
      lengths[i - start] = len;
      at += len;
    }
    if (place !== 'pool') {
      // Read in place (here) or copied before the call returns (queue).
      try {
        chunk.opened = this.#openElsewhere(data, lengths, ctx, place);
      } finally {
        if (!scratch) this.#giveBuffer(data);
      }
      return chunk;
    }
    const opened = callAsync(() => ctx.native.openPacked(data, lengths, ctx.jsonTypes, spreads(end, payloads.length)));
    // Once the call has settled the native threads no longer read the buffer.
    opened.then(
      () => this.#giveBuffer(data),
      () => this.#giveBuffer(data),
    );
    chunk.opened = opened;
    return chunk;
  }

  /** A small chunk's native call: on this thread, or queued for the native queue thread (polled for). */
  #openElsewhere(data: Buffer, lengths: Uint32Array, ctx: BatchContext, place: 'here' | 'queue'): Promise<OpenedBatch> | OpenedBatch {
    if (place === 'here') return call(() => ctx.native.openPackedSync(data, lengths, ctx.jsonTypes));
    const opened = callAsync(() => ctx.native.openPackedQueued(data, lengths, ctx.jsonTypes));
    expectResult();
    return opened;
  }

  #takeBuffer(size: number): Buffer {
    const spare = this.#spare;
    for (let i = 0; i < spare.length; i++) {
      if (spare[i]!.length >= size) return spare.splice(i, 1)[0]!;
    }
    // Some room to grow, so that the next batch, a little larger, fits too.
    return Buffer.allocUnsafe(size <= MAX_SPARE_BYTES ? Math.min(MAX_SPARE_BYTES, size + (size >> 3)) : size);
  }

  #giveBuffer(data: Buffer): void {
    if (data.length > MAX_SPARE_BYTES) return;
    const spare = this.#spare;
    if (spare.length < 2) spare.push(data);
    else {
      // Keep the two largest.
      const k = spare[0]!.length < spare[1]!.length ? 0 : 1;
      if (spare[k]!.length < data.length) spare[k] = data;
    }
    if (this.#spareTimer === null) {
      this.#spareTimer = setTimeout(() => {
        this.#spare.length = 0;
        this.#spareTimer = null;
      }, SPARE_IDLE_MS);
      this.#spareTimer.unref();
    } else {
      this.#spareTimer.refresh();
    }
  }

  /**
   * {@link #openChunk} with every payload measured first (one has non-ASCII
   * text): the chunk may end sooner, to keep within the byte budget.
   */
  #openChunkMeasured(payloads: readonly Bytes[], chunk: Chunk, ctx: BatchContext, place: Place): Chunk {
    const { start, tooLarge } = chunk;
    const budget = batchLimits.bytes;
    const all = new Uint32Array(chunk.end - start);
    let total = 0;
    let end = start;
    for (; end < chunk.end; end++) {
      if (tooLarge?.[end - start] !== undefined) continue;
      const p = payloads[end]!;
      const len = typeof p === 'string' ? Buffer.byteLength(p, 'utf8') : p.length;
      if (total > 0 && total + len > budget) break;
      all[end - start] = len;
      total += len;
    }
    const lengths = all.subarray(0, end - start);
    const data = Buffer.allocUnsafe(total);
    let at = 0;
    for (let i = start; i < end; i++) {
      if (tooLarge?.[i - start] !== undefined) continue;
      const p = payloads[i]!;
      if (typeof p === 'string') at += data.write(p, at, 'utf8');
      else {
        data.set(p, at);
        at += p.length;
      }
    }
    chunk.end = end;
    chunk.opened =
      place === 'pool'
        ? callAsync(() => ctx.native.openPacked(data, lengths, ctx.jsonTypes, spreads(end, payloads.length)))
        : this.#openElsewhere(data, lengths, ctx, place);
    return chunk;
  }

  #collect(batch: OpenedBatch | null, out: DeserializeResult[], chunk: Chunk, ctx: BatchContext): void {
    const { start, end, tooLarge } = chunk;
    const decoders = ctx.decoders;
    for (let i = start, m = 0; i < end; i++, m += META_STRIDE) {
      const refused = tooLarge?.[i - start];
      if (refused !== undefined) {
        out[i] = { ok: false, error: refused };
        continue;
      }
      const { buffer, meta, strings, literals } = batch!;
      const status = meta[m]!;
      if (status !== 0) {
        out[i] = { ok: false, error: statusError(status, strings[meta[m + 1]!]!) };
        continue;
      }
      const contentType = strings[meta[m + 1]!]!;
      const from = meta[m + 4]!;
      const to = meta[m + 5]!;
      const flags = meta[m + 6]!;
      const decoder = decoders.get(contentType);
      // A body the native threads found to be UTF-8 goes to a decoder as text,
      // saving a second validation here (an ASCII one is copied, not decoded);
      // anything else stays bytes.
      const body: Buffer | string =
        (flags & UTF8) === 0 || decoder === undefined
          ? buffer.subarray(from, to)
          : buffer.toString((flags & ASCII) !== 0 ? 'latin1' : 'utf8', from, to);
      const hints: ScanHints | null =
        (flags & SCANNED) !== 0 && typeof body === 'string'
          ? {
              hook: (flags & HOOK) !== 0,
              longDigits: (flags & LONG_DIGITS) !== 0,
              literals: (flags & LITERALS) !== 0 ? literals : null,
              base: meta[m + 7]!,
            }
          : null;
      try {
        const value = this.#decodeFrom(decoders, contentType, strings[meta[m + 2]!]!, body, hints);
        out[i] = { ok: true, value, signer: strings[meta[m + 3]!]! };
      } catch (err) {
        out[i] = { ok: false, error: asSecurityError(err) };
      }
    }
  }

  /** The inner content types decoded after verification. */
  get accept(): ReadonlySet<string> {
    return this.#accept;
  }

  /** A body that came back as text goes to a decoder as text; without one, as bytes. */
  #decodeOpened(opened: Opened): unknown {
    const { contentType, contentEncoding, body } = opened;
    const data = typeof body === 'string' && !this.#registry.decoders.has(contentType) ? Buffer.from(body, 'utf8') : body;
    return this.#decode(contentType, contentEncoding, data);
  }

  #decode(contentType: string, contentEncoding: string, body: Buffer | string): unknown {
    this.#checkAccepted(contentType);
    return this.#registry.loads(body, contentType, contentEncoding, FORCE);
  }

  /** {@link #decode} of a batch's body: with the batch's decoders and the body's hints. */
  #decodeFrom(
    decoders: ReadonlyMap<string, Decoder>,
    contentType: string,
    contentEncoding: string,
    body: Buffer | string,
    hints: ScanHints | null,
  ): unknown {
    this.#checkAccepted(contentType);
    const value = loadsFrom(this.#registry, decoders, body, contentType, contentEncoding, FORCE, hints);
    // Bytes handed back as they are must not pin a whole batch's buffer.
    return value === body && typeof body !== 'string' ? Buffer.from(body) : value;
  }

  #checkAccepted(contentType: string): void {
    if (!this.#accept.has(contentType)) {
      throw new SecurityError(
        'ERR_CONTENT_DISALLOWED',
        `Refusing to decode content of type ${JSON.stringify(contentType)}: it is not in the accept list`,
      );
    }
  }

  #needKey(): void {
    if (!this.#canSign) {
      throw new ImproperlyConfigured('SecureSerializer needs a key and a cert to serialize');
    }
  }

  #needStore(): void {
    if (!this.#canVerify) {
      throw new ImproperlyConfigured('SecureSerializer needs a store to deserialize');
    }
  }
}


/**
 * The error of a backend status (1 + its index in the core's code list,
 * generated from the Rust enum), with its message. A status outside the list
 * is a bug of celery-sign: `ERR_INTERNAL`, never a plausible refusal.
 */
function statusError(status: number, message: string): SecurityError {
  const code: SecurityErrorCode | undefined = Number.isInteger(status) ? STATUS_CODES[status - 1] : undefined;
  if (code === undefined) {
    return new SecurityError(
      'ERR_INTERNAL',
      `celery-sign internal error: the backend gave status ${status}, which names no error code (${message})`,
    );
  }
  return new SecurityError(code, message);
}

/**
 * The refusal of a payload over `max` bytes, found without copying or
 * encoding it (UTF-8 takes at least one byte and at most three per UTF-16
 * unit of a string); null when it is within the limit (or not bytes at all:
 * `toBytes` refuses that).
 */
function sizeRefusal(payload: Bytes, max: number): SecurityError | null {
  let len: number;
  if (typeof payload === 'string') {
    if (payload.length > max) return tooLarge(`at least ${payload.length}`, max);
    if (payload.length * 3 <= max) return null;
    len = Buffer.byteLength(payload, 'utf8');
  } else if (payload instanceof Uint8Array) {
    len = payload.length;
  } else {
    return null;
  }
  return len > max ? tooLarge(String(len), max) : null;
}

/**
 * The size of a small batch's payloads for the `SMALL_BYTES` bound: a string
 * counts its UTF-16 length (its UTF-8 length for the ASCII of base64), a
 * Buffer its bytes; anything else counts nothing here (`toBytes` refuses it).
 */
function smallBytes(payloads: readonly Bytes[]): number {
  let total = 0;
  for (let i = 0; i < payloads.length; i++) {
    const p = payloads[i];
    if (typeof p === 'string') total += p.length;
    else if (p instanceof Uint8Array) total += p.length;
  }
  return total;
}

function tooLarge(bytes: string, max: number): SecurityError {
  return new SecurityError(
    'ERR_PAYLOAD_TOO_LARGE',
    `Unable to deserialize: the payload is ${bytes} bytes, over the limit of ${max}`,
  );
}

function asSecurityError(err: unknown): SecurityError {
  if (err instanceof SecurityError) return err;
  return new SecurityError('ERR_DECODE', 'Unable to decode the body', { cause: err });
}
