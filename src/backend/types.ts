/**
 * The internal interface every backend implements: exactly the shape of the
 * napi binding (`native/binding.d.cts`, generated from `crates/node`). The
 * `node:crypto` fallback (`./js/`) is checked against it by the compiler.
 *
 * @internal
 * @module
 */
import type * as NativeBinding from '../../native/binding.cjs';

export type Binding = Omit<typeof NativeBinding, '__napiBindingTarget' | 'default'>;

export type {
  NativeCertificate,
  NativeCertStore,
  NativePrivateKey,
  NativeSerializer,
  Opened,
  OpenedBatch,
  SealedBatch,
} from '../../native/binding.cjs';

/** Which backend a process runs on. */
export type BackendName = 'native' | 'js';
