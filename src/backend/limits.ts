// Generated from crates/core/src (batch::MAX_THREADS, x509::MAX_SERIAL_BYTES) by
// the test `typescript_codes_are_generated`; do not edit. Regenerate with
// `CELERY_SIGN_BLESS=1 cargo test -p celery-sign-core typescript_codes`.

/**
 * The most threads a batch pool may have (`setThreads`, `CELERY_SIGN_THREADS`):
 * libuv's bound for `UV_THREADPOOL_SIZE`. A larger `setThreads` is a RangeError; a
 * larger `CELERY_SIGN_THREADS` is taken as this.
 */
export const MAX_THREADS = 1024;

/** The longest certificate serial number read, in bytes (RFC 5280 allows 20). */
export const MAX_SERIAL_BYTES = 4096;
