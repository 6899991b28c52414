import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, statSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { dirname, join } from 'node:path';
import { toBytes, type Bytes, type Digest } from './bytes.js';
import { decodeBlock, firstBlockLabelled } from './backend/js/pem.js';
import { CertChain, type CertChainOptions } from './chain.js';
import { SecurityError } from './errors.js';
import { call, native, type NativeCertificate, type NativeCertStore } from './native.js';
import { checkDigest } from './options.js';
import { subjectOf } from './subject.js';

/**
 * An X.509 certificate with an RSA public key (Celery's `Certificate`).
 * `id` and `issuer` are exactly Celery's `get_id()` and `get_issuer()`.
 */
export class Certificate {
  /** @internal */
  readonly native: NativeCertificate;
  /** Celery's `get_id()`: the issuer's attribute values, a space, the decimal serial. */
  readonly id: string;
  /** Celery's `get_issuer()`: the issuer's attribute values joined by spaces, unescaped, in DER order. */
  readonly issuer: string;
  readonly serialNumber: bigint;
  /** The end of the validity period: from this instant on the certificate has expired. */
  readonly notAfter: Date;
  /** The start of the validity period: before it the certificate is not valid yet. */
  readonly notBefore: Date;
  /** Public modulus size in bits. */
  readonly bits: number;
  /**
   * The subject's common name (OID 2.5.4.3; the first, when there are
   * several), as Python `cryptography` decodes it, or `null`. Not part of
   * Celery's id: `authorize` rules of a worker may name a signer by it.
   */
  readonly commonName: string | null;
  /** The subject as Python `cryptography`'s `Name.rfc4514_string()` writes it (`CN=billing-api,O=Acme`), or `''`. */
  readonly subject: string;
  /** @internal The certificate's DER (for chain verification, {@link CertChainOptions}). */
  readonly der: Uint8Array;

  constructor(pem: Bytes) {
    const bytes = toBytes(pem, 'pem');
    const n = call(() => new native.NativeCertificate(bytes));
    this.native = n;
    this.id = n.id;
    this.issuer = n.issuer;
    this.serialNumber = BigInt(n.serial);
    this.notAfter = new Date(n.notAfterMs);
    this.notBefore = new Date(n.notBeforeMs);
    this.bits = n.bits;
    const subject = subjectOf(bytes);
    this.commonName = subject?.commonName ?? null;
    this.subject = subject?.rfc4514 ?? '';
    const block = firstBlockLabelled(bytes, ['CERTIFICATE', 'X509 CERTIFICATE']);
    this.der = (block && decodeBlock(block)) ?? new Uint8Array(0);
  }

  /** Celery's `has_expired()`: `now >= notAfter`. */
  hasExpired(now: Date = new Date()): boolean {
    return this.native.hasExpired(now.getTime());
  }

  /**
   * `now < notBefore`: the certificate is not valid yet. Celery does not
   * check notBefore; celery-sign refuses such a certificate at verify time
   * (`ERR_CERTIFICATE_EXPIRED`, message "Certificate not yet valid").
   */
  isNotYetValid(now: Date = new Date()): boolean {
    return this.native.isNotYetValid(now.getTime());
  }

  /**
   * Celery's `Certificate.verify`: throws `SecurityError` (`ERR_CERTIFICATE_EXPIRED`
   * or `ERR_BAD_SIGNATURE`) unless `signature` is a valid RSA-PSS signature of
   * `data`, whatever its salt length. A certificate not valid yet (before its
   * notBefore) refuses with `ERR_CERTIFICATE_EXPIRED` too.
   */
  verify(data: Bytes, signature: Uint8Array, digest: Digest = 'sha256'): void {
    const d = checkDigest(digest);
    const bytes = toBytes(data, 'data');
    call(() => this.native.verify(bytes, signature, d));
  }

  /** Celery's name for {@link Certificate.id}. */
  getId(): string {
    return this.id;
  }

  /** Celery's name for {@link Certificate.issuer}. */
  getIssuer(): string {
    return this.issuer;
  }

  /** Celery's name for {@link Certificate.serialNumber}. */
  getSerialNumber(): bigint {
    return this.serialNumber;
  }
}

/**
 * Options of {@link CertStore}: opt-in chain verification (celery-sign's,
 * see {@link CertChainOptions}). Without `ca` the store takes any
 * certificate, as Celery's does.
 */
export interface CertStoreOptions extends Partial<CertChainOptions> {}

/** @internal The chain of a store's options, or null; `crl` or `intermediates` without `ca` is a mistake. */
export function chainOf(options: Partial<CertChainOptions>): CertChain | null {
  if (options.ca === undefined) {
    if (options.crl !== undefined || options.intermediates !== undefined) {
      throw new TypeError('crl and intermediates need ca (the trusted CA certificates)');
    }
    return null;
  }
  return CertChain.load(options as CertChainOptions);
}

/** The chain each store checks added certificates against (none: no check). */
const chains = new WeakMap<CertStore, CertChain>();

function setChain(store: CertStore, chain: CertChain | null): void {
  if (chain === null) chains.delete(store);
  else chains.set(store, chain);
}

/**
 * Certificates by Celery id (Celery's `CertStore`). With `ca` in the
 * options ({@link CertStoreOptions}) it takes only certificates issued by
 * those CAs (and, with `crl`, not revoked); else any.
 */
export class CertStore implements Iterable<Certificate> {
  /** @internal */
  readonly native: NativeCertStore = new native.NativeCertStore();
  #certs = new Map<string, Certificate>();
  #generation = 0;

  constructor(certs?: Iterable<Certificate>, options: CertStoreOptions = {}) {
    setChain(this, chainOf(options));
    if (certs) for (const cert of certs) this.add(cert);
  }

  /**
   * Adds a certificate; a second one with the same id throws
   * `ERR_DUPLICATE_CERTIFICATE`. A store with chain verification refuses a
   * certificate its CAs did not issue, or revoked, with `ERR_INVALID_CERTIFICATE`.
   */
  add(cert: Certificate): void {
    if (!(cert instanceof Certificate)) throw new TypeError('cert must be a Certificate');
    chains.get(this)?.check(cert);
    call(() => this.native.add(cert.native));
    this.#certs.set(cert.id, cert);
    this.#generation++;
  }

  /**
   * @internal Bumped by every change: a serializer's copy of the store for
   * a multi-chunk batch is stale when it changes.
   */
  get generation(): number {
    return this.#generation;
  }

  /**
   * @internal Replaces every certificate in one step: a batch already
   * running keeps the certificates it started with, one started after sees
   * only `certs`. A duplicate id throws and leaves the store as it was.
   */
  protected replaceAll(certs: readonly Certificate[]): void {
    const next = new native.NativeCertStore();
    const map = new Map<string, Certificate>();
    for (const cert of certs) {
      call(() => next.add(cert.native));
      map.set(cert.id, cert);
    }
    this.native.replaceWith(next);
    this.#certs = map;
    this.#generation++;
  }

  /** Celery's `add_cert`. */
  addCert(cert: Certificate): void {
    this.add(cert);
  }

  /** The certificate with this id; an unknown id throws `ERR_UNKNOWN_CERTIFICATE`. */
  get(id: Bytes): Certificate {
    const key = typeof id === 'string' ? id : Buffer.from(id).toString('utf8');
    const cert = this.#certs.get(key);
    if (!cert) throw new SecurityError('ERR_UNKNOWN_CERTIFICATE', `Unknown certificate: ${JSON.stringify(key)}`);
    return cert;
  }

  has(id: Bytes): boolean {
    const key = typeof id === 'string' ? id : Buffer.from(id).toString('utf8');
    return this.#certs.has(key);
  }

  get size(): number {
    return this.#certs.size;
  }

  /** Celery's `itercerts()`. */
  itercerts(): IterableIterator<Certificate> {
    return this.#certs.values();
  }

  [Symbol.iterator](): IterableIterator<Certificate> {
    return this.#certs.values();
  }
}

/** What an {@link FSCertStore} does with an expired certificate among its files. */
export type OnExpired = 'throw' | 'skip';

/** Options of {@link FSCertStore.watch}. */
export interface FSCertStoreWatchOptions {
  /**
   * Milliseconds between two polls of the files (size, mtime, inode of each
   * match), the fallback for changes `fs.watch` does not report. Default 2000.
   */
  interval?: number;
  /** Milliseconds of quiet after a file-system event before the store reloads. Default 100. */
  debounce?: number;
}

/**
 * Options of {@link FSCertStore}. `ca`, `intermediates` and `crl` turn on
 * chain verification ({@link CertChainOptions}): a certificate among the
 * files that its CAs did not issue, or revoked, throws `ERR_INVALID_CERTIFICATE`
 * from the constructor or {@link FSCertStore.reload} (a watch reload emits
 * `'error'`); the paths are read again at every load, so a reload with a
 * new CRL takes out the certificates it revokes.
 */
export interface FSCertStoreOptions extends Partial<CertChainOptions> {
  /**
   * An expired certificate among the files: `'throw'` (the default, Celery's
   * behaviour) throws `ERR_CERTIFICATE_EXPIRED` from the constructor or
   * {@link FSCertStore.reload} and loads nothing; `'skip'` leaves it out and
   * emits an `'expired'` event ({@link CertExpiredEvent}).
   */
  onExpired?: OnExpired;
  /**
   * Reload on change (see {@link FSCertStore.watch}): `true` for the default
   * timings, or the timings. Default: no watch. Stop it with
   * {@link FSCertStore.close}.
   */
  watch?: boolean | FSCertStoreWatchOptions;
}

/** What one {@link FSCertStore.reload} changed (certificate ids, Celery's `get_id()`). */
export interface CertStoreReload {
  /** Ids in the store now that were not before. */
  added: string[];
  /** Ids no longer in the store. */
  removed: string[];
  /** Ids still present whose file now holds a different certificate text. */
  replaced: string[];
  /** Every id in the store now. */
  ids: string[];
  /** Ids of the expired certificates left out (`onExpired: 'skip'`). */
  skipped: string[];
  /** Whether anything changed (when nothing did, the store was not swapped). */
  changed: boolean;
  /** Who reloaded: a {@link FSCertStore.reload} call, or a watch. */
  source: 'call' | 'watch';
}

/** An expired certificate left out of an {@link FSCertStore} (`onExpired: 'skip'`). No key material. */
export interface CertExpiredEvent {
  /** Celery's `get_id()`. */
  id: string;
  /** Celery's `get_issuer()`. */
  issuer: string;
  /** The subject name as node:crypto shows it (`CN=...` lines), or null when it cannot read it. */
  subject: string | null;
  /** The start of its validity period. */
  notBefore: Date;
  /** When it expired. */
  notAfter: Date;
  /** The file it was read from. */
  file: string;
}

/** The events of an {@link FSCertStore}, by name: the listener's arguments. */
export interface FSCertStoreEvents {
  /**
   * `'reload'`: a reload (a call or a watch) changed the store; the payload
   * says what changed. Not emitted when nothing changed.
   */
  reload: [CertStoreReload];
  /**
   * `'expired'`: an expired certificate was left out (`onExpired: 'skip'`),
   * once per certificate per load (for the constructor's load, on the next
   * tick, so that listeners added right after construction get it).
   */
  expired: [CertExpiredEvent];
  /**
   * `'error'`: a reload started by a watch failed (an unreadable file, an
   * invalid, duplicate or, by default, expired certificate); the store kept
   * its certificates. Without an `'error'` listener the error goes to
   * `process.emitWarning` instead of being thrown. A failed
   * {@link FSCertStore.reload} call throws instead.
   */
  error: [SecurityError];
}

/** A running watch of an {@link FSCertStore}'s files. */
export interface CertStoreWatch {
  /** Stops watching (idempotent). */
  close(): void;
  /** Whether {@link CertStoreWatch.close} was called. */
  readonly closed: boolean;
}

interface Loaded {
  certs: Certificate[];
  texts: Map<string, string>;
  skipped: CertExpiredEvent[];
}

/**
 * Celery's `FSCertStore`: every certificate matched by `path` — a directory
 * means `dir/*`, anything else is a glob pattern. An unreadable, invalid or
 * (unless `onExpired: 'skip'`) expired certificate throws `SecurityError`.
 *
 * celery-sign adds key rotation without a restart: {@link FSCertStore.reload}
 * reads the files again and swaps the store's certificates in one step (a
 * batch being verified sees the old certificates or the new, never a mix),
 * and {@link FSCertStore.watch} (or the `watch` option) reloads on change.
 *
 * Events ({@link FSCertStoreEvents}), for a security log: `'reload'`
 * ({@link CertStoreReload}), `'expired'` ({@link CertExpiredEvent}),
 * `'error'` (a failed watch reload, a `SecurityError`). None carries key material.
 */
export class FSCertStore extends CertStore {
  /** The directory or glob given to the constructor. */
  readonly path: string;
  /** What a load does with an expired certificate (see {@link FSCertStoreOptions.onExpired}). */
  readonly onExpired: OnExpired;
  readonly #events = new EventEmitter();
  readonly #watches = new Set<CertStoreWatch>();
  /** The certificate text of each id, as last loaded. */
  #texts = new Map<string, string>();
  #skipped: CertExpiredEvent[] = [];
  readonly #chainOptions: Partial<CertChainOptions>;

  constructor(path: string, options: FSCertStoreOptions = {}) {
    super();
    if (typeof path !== 'string') throw new TypeError('path must be a string');
    const onExpired = options.onExpired ?? 'throw';
    if (onExpired !== 'throw' && onExpired !== 'skip') throw new TypeError("onExpired must be 'throw' or 'skip'");
    this.path = path;
    this.onExpired = onExpired;
    this.#chainOptions = { ca: options.ca, intermediates: options.intermediates, crl: options.crl };
    const chain = chainOf(this.#chainOptions);
    const loaded = this.#load(chain);
    setChain(this, chain);
    this.replaceAll(loaded.certs);
    this.#texts = loaded.texts;
    this.#skipped = loaded.skipped;
    if (loaded.skipped.length > 0) {
      const skipped = loaded.skipped;
      process.nextTick(() => {
        for (const e of skipped) this.#events.emit('expired', e);
      });
    }
    if (options.watch) this.watch(options.watch === true ? {} : options.watch);
  }

  /** The expired certificates the last load left out (`onExpired: 'skip'`). */
  get skipped(): readonly CertExpiredEvent[] {
    return this.#skipped;
  }

  /**
   * Reads the files again and, when anything changed, replaces the store's
   * certificates in one step: a batch already being verified keeps the
   * certificates it started with, one started after sees only the new. A
   * failed load (an unreadable file, an invalid or duplicate certificate,
   * an expired one unless `onExpired: 'skip'`) throws `SecurityError` and
   * leaves the store as it was. Emits `'reload'` when something changed and
   * `'expired'` for each expired certificate left out.
   */
  reload(): CertStoreReload {
    return this.#reload('call');
  }

  #reload(source: CertStoreReload['source']): CertStoreReload {
    const chain = chainOf(this.#chainOptions);
    let loaded: Loaded;
    try {
      loaded = this.#load(chain);
    } catch (err) {
      if (chain !== null) this.#prune(chain, source);
      throw err;
    }
    setChain(this, chain);
    const before = this.#texts;
    const added: string[] = [];
    const replaced: string[] = [];
    const removed: string[] = [];
    for (const [id, text] of loaded.texts) {
      const old = before.get(id);
      if (old === undefined) added.push(id);
      else if (old !== text) replaced.push(id);
    }
    for (const id of before.keys()) if (!loaded.texts.has(id)) removed.push(id);
    const changed = added.length + removed.length + replaced.length > 0;
    if (changed) {
      this.replaceAll(loaded.certs);
      this.#texts = loaded.texts;
    }
    this.#skipped = loaded.skipped;
    const result: CertStoreReload = {
      added,
      removed,
      replaced,
      ids: loaded.certs.map((c) => c.id),
      skipped: loaded.skipped.map((e) => e.id),
      changed,
      source,
    };
    for (const e of loaded.skipped) this.#events.emit('expired', e);
    if (changed) this.#events.emit('reload', result);
    return result;
  }

  /**
   * After a failed load with chain verification: the certificates kept are
   * checked against the CAs and CRLs just read, and those refused now (a
   * newly revoked one) leave the store anyway, with a `'reload'` event.
   */
  #prune(chain: CertChain, source: CertStoreReload['source']): void {
    const kept: Certificate[] = [];
    const removed: string[] = [];
    for (const cert of this) {
      try {
        chain.check(cert);
        kept.push(cert);
      } catch {
        removed.push(cert.id);
      }
    }
    setChain(this, chain);
    if (removed.length === 0) return;
    this.replaceAll(kept);
    const texts = new Map(this.#texts);
    for (const id of removed) texts.delete(id);
    this.#texts = texts;
    this.#events.emit('reload', {
      added: [],
      removed,
      replaced: [],
      ids: kept.map((c) => c.id),
      skipped: [],
      changed: true,
      source,
    } satisfies CertStoreReload);
  }

  /**
   * Watches the files and reloads on change: `fs.watch` on the directory
   * (debounced), and a poll of the matched files' size, mtime and inode
   * every `interval` ms as the fallback. Neither keeps the process alive. A
   * failed reload emits `'error'` and keeps the old certificates; the next
   * change tries again. Returns the handle to stop it ({@link FSCertStore.close}
   * stops every watch of the store).
   */
  watch(options: FSCertStoreWatchOptions = {}): CertStoreWatch {
    const interval = options.interval ?? 2000;
    const debounce = options.debounce ?? 100;
    if (!(Number.isFinite(interval) && interval > 0)) throw new TypeError('interval must be a positive number');
    if (!(Number.isFinite(debounce) && debounce >= 0)) throw new TypeError('debounce must be a non-negative number');
    let closed = false;
    let last = this.#signature();
    let pending: ReturnType<typeof setTimeout> | null = null;
    let watcher: FSWatcher | null = null;
    const check = (force: boolean): void => {
      if (closed) return;
      const now = this.#signature();
      if (!force && now === last) return;
      last = now;
      try {
        this.#reload('watch');
      } catch (err) {
        const error =
          err instanceof SecurityError
            ? err
            : new SecurityError('ERR_INVALID_CERTIFICATE', 'The certificate store could not be reloaded', { cause: err });
        if (this.#events.listenerCount('error') > 0) this.#events.emit('error', error);
        else process.emitWarning(`celery-sign: FSCertStore ${JSON.stringify(this.path)} kept its certificates: ${error.message}`);
      }
    };
    const poll = setInterval(() => check(false), interval);
    poll.unref();
    try {
      watcher = fsWatch(watchedDirectory(this.path), { persistent: false }, () => {
        if (pending !== null) clearTimeout(pending);
        pending = setTimeout(() => {
          pending = null;
          check(true);
        }, debounce);
        pending.unref();
      });
      watcher.on('error', () => {
        // The poll carries on alone.
        watcher?.close();
        watcher = null;
      });
    } catch {
      watcher = null; // no fs.watch here (or no directory yet): the poll alone
    }
    const handle: CertStoreWatch = {
      close: () => {
        if (closed) return;
        closed = true;
        clearInterval(poll);
        if (pending !== null) clearTimeout(pending);
        watcher?.close();
        this.#watches.delete(handle);
      },
      get closed() {
        return closed;
      },
    };
    this.#watches.add(handle);
    return handle;
  }

  /** Stops every watch of this store (the `watch` option's and {@link FSCertStore.watch}'s). */
  close(): void {
    for (const w of [...this.#watches]) w.close();
  }

  /** Adds a listener of one of the {@link FSCertStoreEvents}. */
  on<E extends keyof FSCertStoreEvents>(event: E, listener: (...args: FSCertStoreEvents[E]) => void): this {
    this.#events.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Adds a listener called once. */
  once<E extends keyof FSCertStoreEvents>(event: E, listener: (...args: FSCertStoreEvents[E]) => void): this {
    this.#events.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Removes a listener. */
  off<E extends keyof FSCertStoreEvents>(event: E, listener: (...args: FSCertStoreEvents[E]) => void): this {
    this.#events.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  #pattern(): string {
    return isDirectory(this.path) ? join(this.path, '*') : this.path;
  }

  /** Size, mtime and inode of every match: changes when a file does. */
  #signature(): string {
    const parts: string[] = [];
    for (const file of [...glob(this.#pattern()), ...CertChain.paths(this.#chainOptions as CertChainOptions)]) {
      try {
        const st = statSync(file);
        parts.push(`${file}\0${st.size}\0${st.mtimeMs}\0${st.ino}`);
      } catch {
        parts.push(`${file}\0gone`);
      }
    }
    return parts.join('\n');
  }

  #load(chain: CertChain | null): Loaded {
    const certs: Certificate[] = [];
    const texts = new Map<string, string>();
    const skipped: CertExpiredEvent[] = [];
    const now = new Date();
    for (const file of glob(this.#pattern())) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new SecurityError('ERR_INVALID_CERTIFICATE', `Unreadable certificate file: ${JSON.stringify(file)}`, {
          cause: err,
        });
      }
      const cert = new Certificate(text);
      if (cert.hasExpired(now)) {
        if (this.onExpired !== 'skip') {
          throw new SecurityError('ERR_CERTIFICATE_EXPIRED', `Expired certificate: ${JSON.stringify(cert.id)}`);
        }
        skipped.push({
          id: cert.id,
          issuer: cert.issuer,
          subject: cert.subject || null,
          notBefore: cert.notBefore,
          notAfter: cert.notAfter,
          file,
        });
        continue;
      }
      if (texts.has(cert.id)) {
        throw new SecurityError('ERR_DUPLICATE_CERTIFICATE', `Duplicate certificate: '${cert.id}'`);
      }
      chain?.check(cert, now);
      certs.push(cert);
      texts.set(cert.id, text);
    }
    return { certs, texts, skipped };
  }
}

/** The directory to `fs.watch` for a store path: itself, or a glob's deepest directory without a wildcard. */
function watchedDirectory(path: string): string {
  if (isDirectory(path)) return path;
  let dir = dirname(path);
  while (MAGIC.test(dir) && dir !== dirname(dir)) dir = dirname(dir);
  return dir;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const MAGIC = /[*?[]/;

/** Python `fnmatch` translation of one path component. */
function componentRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, close);
      i = close;
      if (body.startsWith('!')) body = '^' + body.slice(1);
      re += '[' + body.replace(/\\/g, '\\\\') + ']';
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/** Python `glob.glob` (non-recursive): hidden names only match a pattern starting with a dot. Sorted. */
export function glob(pattern: string): string[] {
  const absolute = pattern.startsWith('/');
  const parts = pattern.split('/').filter((p, i) => p !== '' || i === 0);
  let current: string[] = [absolute ? '/' : ''];
  for (const part of parts) {
    if (part === '') continue;
    const next: string[] = [];
    for (const base of current) {
      if (!MAGIC.test(part)) {
        next.push(base === '' ? part : join(base, part));
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(base === '' ? '.' : base);
      } catch {
        continue;
      }
      const re = componentRegExp(part);
      for (const name of names) {
        if (name.startsWith('.') && !part.startsWith('.')) continue;
        if (re.test(name)) next.push(base === '' ? name : join(base, name));
      }
    }
    current = next;
  }
  return current.filter((p) => p !== '' && exists(p)).sort();
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
