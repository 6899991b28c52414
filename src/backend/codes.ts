// Generated from crates/core/src/error.rs (ErrorCode::ALL) by its test
// `typescript_codes_are_generated`; do not edit. Regenerate with
// `CELERY_SIGN_BLESS=1 cargo test -p celery-sign-core typescript_codes`.

/** The core's stable error codes; a batch status is 1 + the index here. */
export const CORE_ERROR_CODES = [
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
  'ERR_INTERNAL',
] as const;

export type CoreErrorCode = (typeof CORE_ERROR_CODES)[number];
