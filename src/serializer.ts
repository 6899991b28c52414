import { toBytes, type Bytes, type Digest } from './bytes.js';
import { Certificate, CertStore } from './certificate.js';
import { ImproperlyConfigured, SecurityError } from './errors.js';
import { PrivateKey } from './keys.js';
import { call, callAsync, expectResult, native, STATUS_CODES, type NativeSerializer, type Opened, type OpenedBatch } from './native.js';
import { checkDigest, checkWireFormat, type WireFormat } from './options.js';
import { INSECURE_CONTENT_TYPES, registry as defaultRegistry, type SerializerRegistry } from './registry.js';
import { loads as jsonLoads } from './json.js';
import { clearHints, primeLoads, restoreText } from './jsonhints.js';

/** Default limit on one payload's size (bytes of base64), like the Rust core's. */
export const DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024 * 1024;

/** Items per native call when a large batch is pipelined. */
const PIPELINE_CHUNK = 256;

/** Largest buffer of packed payloads kept for reuse (see `#spare`). */
const MAX_SPARE_BYTES = 32 * 1024 * 1024;

/** How long spare buffers are kept after the last batch (ms). */
const SPARE_IDLE_MS = 2000;

/** Numbers per item in a native batch's `meta` (see crates/node: OpenedBatch). */
const META_STRIDE = 9;

/** Bits of an item's flags in a native batch's `meta` (see crates/node: OpenedBatch). */
const UTF8 = 1;
const ASCII = 2;
const SCANNED = 4;
const HOOK = 8;
const LONG_DIGITS = 16;
const LITERALS = 32;

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

export type DeserializeResult =
  | { ok: true; value: unknown; signer: string }
  | { ok: false; error: SecurityError };

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
  /**
   * Buffers of packed payloads whose native call has settled, kept for the
   * next batches: a fresh large buffer costs page faults to fill and, as
   * external memory, brings V8's next collection nearer.
   */
  readonly #spare: Buffer[] = [];
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

  /** Serializes and signs `data`; returns the payload (base64 text). Blocks for one signature. */
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

  /** Serializes and signs a batch in one native call over the thread pool; results in order. */
  async serializeMany(items: readonly unknown[]): Promise<string[]> {
    this.#needKey();
    if (items.length === 0) return [];
    const encoded = items.map((item) => this.#registry.dumps(item, this.serializer));
    const first = encoded[0]!;
    const uniform = encoded.every(
      (m) => m.contentType === first.contentType && m.contentEncoding === first.contentEncoding,
    );
    if (!uniform) return Promise.all(items.map((item) => this.serializeAsync(item)));
    const sealed = await callAsync(() =>
      this.#native.sealMany(
        first.contentType,
        first.contentEncoding,
        encoded.map((m) => m.body),
      ),
    );
    if (sealed.errors.length > 0) {
      const [index, status, msg] = sealed.errors;
      throw new SecurityError(
        STATUS_CODES[status! - 1] ?? 'ERR_MALFORMED_PAYLOAD',
        `item ${index}: ${sealed.messages[msg!]}`,
      );
    }
    return sealed.payloads;
  }

  /** Verifies and decodes one payload; throws `SecurityError`. Blocks for one verification. */
  deserialize(payload: Bytes): unknown {
    this.#needStore();
    const bytes = toBytes(payload, 'payload');
    return this.#decodeOpened(call(() => this.#native.open(bytes)));
  }

  /** Like {@link SecureSerializer.deserialize}, with the verification made on a native thread. */
  async deserializeAsync(payload: Bytes): Promise<unknown> {
    this.#needStore();
    const bytes = toBytes(payload, 'payload');
    const opened = callAsync(() => this.#native.openAsync(bytes));
    expectResult();
    return this.#decodeOpened(await opened);
  }

  /**
   * Verifies and decodes a batch in one native call over the thread pool.
   * Results are positional; a bad payload gives `{ ok: false, error }` and
   * never affects its neighbours.
   */
  async deserializeMany(payloads: readonly Bytes[]): Promise<DeserializeResult[]> {
    this.#needStore();
    const n = payloads.length;
    const out: DeserializeResult[] = new Array(n);
    if (n === 0) return out;
    // Large batches go down in chunks, two in flight: the native threads
    // verify one chunk while this thread decodes the bodies of the previous.
    const chunk = n <= PIPELINE_CHUNK * 1.5 ? n : PIPELINE_CHUNK;
    const open = (start: number): Promise<OpenedBatch> =>
      this.#openChunk(payloads, start, Math.min(n, start + chunk));
    const inflight: Array<Promise<OpenedBatch> | undefined> = [open(0)];
    if (chunk < n) inflight.push(open(chunk));
    for (let k = 0, start = 0; start < n; k++, start += chunk) {
      const batch = await inflight[k]!;
      inflight[k] = undefined;
      if (start + 2 * chunk < n) inflight.push(open(start + 2 * chunk));
      this.#collect(batch, out, start, Math.min(n, start + chunk));
    }
    return out;
  }

  #openChunk(payloads: readonly Bytes[], start: number, end: number): Promise<OpenedBatch> {
    // Lay the payloads end to end in one buffer (text as UTF-8, as Celery's
    // ensure_bytes does); the native threads read it in place.
    const n = end - start;
    const lengths = new Uint32Array(n);
    // A payload is ASCII (base64) but for a broken one: room for a string's
    // UTF-16 length is room for its UTF-8 almost always, and a write that
    // stops short shows. So the text is encoded once, not measured first.
    let room = 4;
    for (let i = start; i < end; i++) {
      const p = payloads[i];
      room += typeof p === 'string' ? p.length : toBytes(p!, 'payload').length;
    }
    const data = this.#takeBuffer(room);
    let at = 0;
    for (let i = start; i < end; i++) {
      const p = payloads[i]!;
      let len: number;
      if (typeof p === 'string') {
        len = data.write(p, at, 'utf8');
        // Fewer than 4 bytes left after the write: it may have stopped short.
        if (data.length - at - len < 4) {
          this.#giveBuffer(data);
          return this.#openChunkMeasured(payloads, start, end);
        }
      } else {
        data.set(p, at);
        len = p.length;
      }
      lengths[i - start] = len;
      at += len;
    }
    const opened = callAsync(() => this.#native.openPacked(data, lengths, this.#jsonTypes()));
    // Once the call has settled the native threads no longer read the buffer.
    opened.then(
      () => this.#giveBuffer(data),
      () => this.#giveBuffer(data),
    );
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

  /** {@link #openChunk} with every payload measured first (one has non-ASCII text). */
  #openChunkMeasured(payloads: readonly Bytes[], start: number, end: number): Promise<OpenedBatch> {
    const lengths = new Uint32Array(end - start);
    let total = 0;
    for (let i = start; i < end; i++) {
      const p = payloads[i]!;
      const len = typeof p === 'string' ? Buffer.byteLength(p, 'utf8') : p.length;
      lengths[i - start] = len;
      total += len;
    }
    const data = Buffer.allocUnsafe(total);
    let at = 0;
    for (let i = start; i < end; i++) {
      const p = payloads[i]!;
      if (typeof p === 'string') at += data.write(p, at, 'utf8');
      else {
        data.set(p, at);
        at += p.length;
      }
    }
    return callAsync(() => this.#native.openPacked(data, lengths, this.#jsonTypes()));
  }

  /** The accepted content types that kombu's JSON decodes: their bodies are pre-scanned natively. */
  #jsonTypes(): string[] {
    const out: string[] = [];
    for (const [contentType, decoder] of this.#registry.decoders) {
      if (decoder === jsonLoads && this.#accept.has(contentType)) out.push(contentType);
    }
    return out;
  }

  #collect(batch: OpenedBatch, out: DeserializeResult[], start: number, end: number): void {
    const { buffer, meta, strings, literals } = batch;
    const decoders = this.#registry.decoders;
    for (let i = start, m = 0; i < end; i++, m += META_STRIDE) {
      const status = meta[m]!;
      if (status !== 0) {
        const code = STATUS_CODES[status - 1] ?? 'ERR_MALFORMED_PAYLOAD';
        out[i] = { ok: false, error: new SecurityError(code, strings[meta[m + 1]!]!) };
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
      let body: Buffer | string =
        (flags & UTF8) === 0 || decoder === undefined
          ? buffer.subarray(from, to)
          : buffer.toString((flags & ASCII) !== 0 ? 'latin1' : 'utf8', from, to);
      if ((flags & SCANNED) !== 0 && typeof body === 'string') {
        const lifted = (flags & LITERALS) !== 0 ? literals : null;
        const base = meta[m + 7]!;
        if (decoder === jsonLoads) {
          primeLoads(body, { hook: (flags & HOOK) !== 0, longDigits: (flags & LONG_DIGITS) !== 0, literals: lifted, base });
        } else if (lifted !== null) {
          // The decoder was replaced while the batch was out: give it the text as it came.
          body = restoreText(body, lifted, base);
        }
      }
      try {
        const value = this.#decode(contentType, strings[meta[m + 2]!]!, body, true);
        out[i] = { ok: true, value, signer: strings[meta[m + 3]!]! };
      } catch (err) {
        out[i] = { ok: false, error: asSecurityError(err) };
      } finally {
        clearHints();
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

  #decode(contentType: string, contentEncoding: string, body: Buffer | string, shared = false): unknown {
    if (!this.#accept.has(contentType)) {
      throw new SecurityError(
        'ERR_CONTENT_DISALLOWED',
        `Refusing to decode content of type ${JSON.stringify(contentType)}: it is not in the accept list`,
      );
    }
    const value = this.#registry.loads(body, contentType, contentEncoding, { force: true });
    // Bytes handed back as they are must not pin a whole batch's buffer.
    return shared && value === body && typeof body !== 'string' ? Buffer.from(body) : value;
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


function asSecurityError(err: unknown): SecurityError {
  if (err instanceof SecurityError) return err;
  return new SecurityError('ERR_DECODE', 'Unable to decode the body', { cause: err });
}
