//! celery-sign core: Celery's `auth` serializer (celery.security) in Rust.
//!
//! Pure Rust with no Node.js in sight: PEM keys, X.509 certificates with
//! Celery's ids, RSA-PSS as Python `cryptography` does it, both wire formats
//! of the auth envelope, and a batch pipeline on a thread pool.
#![deny(clippy::all)]
// Nothing here may panic on any input: errors are values. Tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Unsafe code is refused everywhere but in `mb` and `avx2` (SIMD intrinsics, see there).
#![deny(unsafe_code)]

mod avx2;
pub mod batch;
pub mod cert;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod jsonscan;
pub mod key;
pub mod mb;
pub mod name;
mod pem;
mod rsa;
pub mod sealer;
pub mod store;
mod x509;

pub use batch::Opener;
pub use cert::Certificate;
pub use digest::Digest;
pub use envelope::{pack, Opened, WireFormat, DEFAULT_MAX_PAYLOAD, SEP};
pub use error::{Error, ErrorCode, Result};
pub use key::PrivateKey;
pub use sealer::Sealer;
pub use store::CertStore;
pub use x509::MAX_SERIAL_BYTES;

/// The TypeScript module that carries the core's bounds to the facade and to
/// the `node:crypto` fallback (`src/backend/limits.ts`), rendered from the
/// constants here (checked, and regenerated, with `src/backend/codes.ts` by
/// `error::tests::typescript_codes_are_generated`).
pub fn typescript_limits_module() -> String {
    format!(
        "// Generated from crates/core/src (batch::MAX_THREADS, x509::MAX_SERIAL_BYTES) by\n\
         // the test `typescript_codes_are_generated`; do not edit. Regenerate with\n\
         // `CELERY_SIGN_BLESS=1 cargo test -p celery-sign-core typescript_codes`.\n\n\
         /**\n * The most threads a batch pool may have (`setThreads`, `CELERY_SIGN_THREADS`):\n\
         \x20* libuv's bound for `UV_THREADPOOL_SIZE`. A larger `setThreads` is a RangeError; a\n\
         \x20* larger `CELERY_SIGN_THREADS` is taken as this.\n */\n\
         export const MAX_THREADS = {};\n\n\
         /** The longest certificate serial number read, in bytes (RFC 5280 allows 20). */\n\
         export const MAX_SERIAL_BYTES = {};\n",
        batch::MAX_THREADS,
        x509::MAX_SERIAL_BYTES
    )
}
