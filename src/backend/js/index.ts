/**
 * The `node:crypto` fallback backend: the napi binding's interface
 * ({@link Binding}) in TypeScript, checked against it by the compiler.
 * Keys, certificates and stores in key.ts / cert.ts / store.ts; the
 * serializer and its batches in serializer.ts, envelope.ts and the
 * worker_threads pool (pool.ts, worker.ts).
 *
 * @internal
 * @module
 */
import { CORE_ERROR_CODES } from '../codes.js';
import type { Binding } from '../types.js';
import { JsCertificate } from './cert.js';
import { JsPrivateKey } from './key.js';
import { setThreads, threadCount } from './pool.js';
import { JsSerializer } from './serializer.js';
import { JsCertStore } from './store.js';

export const jsBinding: Binding = {
  NativeCertificate: JsCertificate,
  NativeCertStore: JsCertStore,
  NativePrivateKey: JsPrivateKey,
  NativeSerializer: JsSerializer,
  errorCodes: () => [...CORE_ERROR_CODES],
  // Nothing is ever queued: openAsync settles through the pool's messages.
  pollQueued: () => 0,
  setThreads,
  // node:crypto does the RSA: no kernel of ours.
  simdKernel: () => null,
  threadCount,
};
