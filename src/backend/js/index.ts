/**
 * The `node:crypto` fallback backend: the napi binding's interface
 * ({@link Binding}) in TypeScript. Work in progress: filled in by
 * key.ts / cert.ts / store.ts and serializer.ts.
 *
 * @internal
 * @module
 */
import { CORE_ERROR_CODES } from '../codes.js';
import type { Binding } from '../types.js';

function unavailable(): never {
  throw new Error('celery-sign: the node:crypto fallback backend is not built yet');
}

class Unavailable {
  constructor() {
    unavailable();
  }
}

export const jsBinding: Binding = {
  NativeCertificate: Unavailable as unknown as Binding['NativeCertificate'],
  NativeCertStore: Unavailable as unknown as Binding['NativeCertStore'],
  NativePrivateKey: Unavailable as unknown as Binding['NativePrivateKey'],
  NativeSerializer: Unavailable as unknown as Binding['NativeSerializer'],
  errorCodes: () => [...CORE_ERROR_CODES],
  pollQueued: () => 0,
  setThreads: () => false,
  threadCount: () => 1,
};
