//! celery-sign core: Celery's `auth` serializer (celery.security) in Rust.
//!
//! Pure Rust with no Node.js in sight: PEM keys, X.509 certificates with
//! Celery's ids, RSA-PSS as Python `cryptography` does it, both wire formats
//! of the auth envelope, and a batch pipeline on a thread pool.
#![deny(clippy::all)]
// Unsafe code is refused everywhere but in `mb` (SIMD intrinsics, see there).
#![deny(unsafe_code)]

pub mod batch;
pub mod cert;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod key;
pub mod mb;
pub mod name;
mod pem;
mod rsa;
pub mod store;
mod x509;

pub use cert::Certificate;
pub use digest::Digest;
pub use envelope::{open, pack, seal, Opened, WireFormat, DEFAULT_MAX_PAYLOAD, SEP};
pub use error::{Error, ErrorCode, Result};
pub use key::PrivateKey;
pub use store::CertStore;
