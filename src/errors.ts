/**
 * Typed errors with stable codes, modelled on jose's `JOSEError`.
 *
 * Every refusal the library makes is a {@link SecurityError} whose `code` is one
 * of {@link SecurityErrorCode}; configuration mistakes are
 * {@link ImproperlyConfigured}. Messages never contain key material.
 */

export const ERROR_CODES = [
  'ERR_INVALID_KEY',
  'ERR_INVALID_CERTIFICATE',
  'ERR_UNSUPPORTED_KEY_TYPE',
  'ERR_CERTIFICATE_EXPIRED',
  'ERR_DUPLICATE_CERTIFICATE',
  'ERR_UNKNOWN_CERTIFICATE',
  'ERR_BAD_SIGNATURE',
  'ERR_MALFORMED_PAYLOAD',
  'ERR_PAYLOAD_TOO_LARGE',
  'ERR_CONTENT_DISALLOWED',
  'ERR_DECODE',
  'ERR_REPLAYED',
  'ERR_HEADER_MISMATCH',
  'ERR_IMPROPERLY_CONFIGURED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];
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
