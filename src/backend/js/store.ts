/**
 * Celery's `CertStore`: certificates by id, duplicates refused. A port of
 * `crates/core/src/store.rs` and of `NativeCertStore`.
 *
 * @internal
 * @module
 */
import type { JsCertificate } from './cert.js';
import { displayBytes, fail, invalidArg } from './errors.js';

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The native `NativeCertStore`, on `node:crypto`. */
export class JsCertStore {
  readonly #byId = new Map<string, JsCertificate>();
  readonly #order: JsCertificate[] = [];
  #version = 0;

  /** Adds a certificate; one whose id is already present is refused. */
  add(cert: JsCertificate): void {
    // napi refuses anything that is not the binding's own class the same way.
    if (cert === null || typeof cert !== 'object' || typeof (cert as { id?: unknown }).id !== 'string') {
      invalidArg('Failed to recover `NativeCertificate` type from napi value');
    }
    const id = cert.id;
    if (this.#byId.has(id)) fail('ERR_DUPLICATE_CERTIFICATE', `Duplicate certificate: '${id}'`);
    this.#byId.set(id, cert);
    this.#order.push(cert);
    this.#version++;
  }

  /** Replaces this store's certificates by `other`'s in one step (a running batch keeps its snapshot). */
  replaceWith(other: JsCertStore): void {
    if (!(other instanceof JsCertStore)) invalidArg('Failed to recover `NativeCertStore` type from napi value');
    const byId = new Map(other.#byId);
    const order = [...other.#order];
    this.#byId.clear();
    for (const [k, v] of byId) this.#byId.set(k, v);
    this.#order.length = 0;
    this.#order.push(...order);
    this.#version++;
  }

  /** A new store holding this one's certificates as they are now. */
  copy(): JsCertStore {
    const c = new JsCertStore();
    for (const cert of this.#order) c.add(cert);
    return c;
  }

  get size(): number {
    return this.#order.length;
  }

  /** @internal Bumped by every add (a serializer's cached snapshot is stale when it changes). */
  get version(): number {
    return this.#version;
  }

  /** @internal The certificate with this id (UTF-8 bytes, as found in a payload). */
  lookup(id: Uint8Array): JsCertificate | undefined {
    if (this.#order.length === 0) return undefined;
    let s: string;
    try {
      s = fatalUtf8.decode(id);
    } catch {
      return undefined;
    }
    return this.#byId.get(s);
  }

  /** @internal Like `lookup`, refusing an unknown id as Celery does. */
  get(id: Uint8Array): JsCertificate {
    const cert = this.lookup(id);
    if (cert === undefined) fail('ERR_UNKNOWN_CERTIFICATE', `Unknown certificate: '${displayBytes(id)}'`);
    return cert;
  }

  /** @internal Insertion order. */
  certs(): readonly JsCertificate[] {
    return this.#order;
  }
}
