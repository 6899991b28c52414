/**
 * Typed errors with stable codes, modelled on jose's `JOSEError`.
 *
 * Every refusal the library makes is a {@link SecurityError} whose `code` is one
 * of {@link SecurityErrorCode}; configuration mistakes are
 * {@link ImproperlyConfigured}. Messages never contain key material.
 */
import { CORE_ERROR_CODES } from './backend/codes.js';

/** Every stable code: the core's (generated from the Rust enum), then the wire layer's. */
export const ERROR_CODES = [
  ...CORE_ERROR_CODES,
  // Refusals of the wire layer (src/wire/).
  'ERR_REPLAYED',
  'ERR_HEADER_MISMATCH',
  'ERR_NOT_AUTHORIZED',
  'ERR_IMPROPERLY_CONFIGURED',
] as const;

/** One of the stable error codes in {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];
/** The code of a {@link SecurityError}: every code but `ERR_IMPROPERLY_CONFIGURED`, which is {@link ImproperlyConfigured}'s. */
export type SecurityErrorCode = Exclude<ErrorCode, 'ERR_IMPROPERLY_CONFIGURED'>;

/** Raised for every signature, key, certificate, payload or content refusal. */
export class SecurityError extends Error {
  override readonly name = 'SecurityError';
  readonly code: SecurityErrorCode;

  constructor(code: SecurityErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Raised when the configuration cannot give a secure setup (Celery's ImproperlyConfigured). */
export class ImproperlyConfigured extends Error {
  override readonly name = 'ImproperlyConfigured';
  readonly code = 'ERR_IMPROPERLY_CONFIGURED' as const;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
