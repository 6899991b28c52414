/**
 * celery-sign: Python Celery's message signing (the `auth` serializer,
 * `celery.security`) for Node.js, byte-compatible with Celery, on a native
 * Rust core.
 *
 * @packageDocumentation
 */
export { SecurityError, ImproperlyConfigured, ERROR_CODES } from './errors.js';
export type { ErrorCode, SecurityErrorCode } from './errors.js';
export type { Bytes, Digest } from './bytes.js';
export type { WireFormat } from './options.js';
export { PrivateKey } from './keys.js';
export { Certificate, CertStore, FSCertStore } from './certificate.js';
export { SecureSerializer, DEFAULT_MAX_PAYLOAD_SIZE } from './serializer.js';
export type { SecureSerializerOptions, DeserializeResult } from './serializer.js';
export { registry, SerializerRegistry, disableInsecureSerializers, enableInsecureSerializers } from './registry.js';
export type { Encoder, Decoder, EncodedMessage, LoadsOptions } from './registry.js';
export { registerAuth, setupSecurity, disableUntrustedSerializers } from './setup.js';
export type { RegisterAuthOptions, SetupSecurityOverrides } from './setup.js';
export { setThreads, threadCount } from './native.js';
export * as json from './json.js';
