//! One error type with stable codes. The codes are the contract with the
//! TypeScript facade (`SecurityError.code`); messages never carry key material.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;

/// Declares [`ErrorCode`], its list [`ErrorCode::ALL`] and its names from one
/// table, so that the three cannot drift apart: a variant has its name and
/// its place in the list by construction, and its index is its discriminant.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Stable error codes, shared with the JavaScript `SecurityError.code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// All codes, in a fixed order (the index is used on the batch
            /// wire). A new code goes at the end, so that the status numbers
            /// already out keep their meaning.
            pub const ALL: [ErrorCode; [$(ErrorCode::$variant),*].len()] =
                [$(ErrorCode::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $name, )*
                }
            }
        }
    };
}

error_codes! {
    InvalidKey => "ERR_INVALID_KEY",
    InvalidCertificate => "ERR_INVALID_CERTIFICATE",
    UnsupportedKeyType => "ERR_UNSUPPORTED_KEY_TYPE",
    CertificateExpired => "ERR_CERTIFICATE_EXPIRED",
    DuplicateCertificate => "ERR_DUPLICATE_CERTIFICATE",
    UnknownCertificate => "ERR_UNKNOWN_CERTIFICATE",
    BadSignature => "ERR_BAD_SIGNATURE",
    MalformedPayload => "ERR_MALFORMED_PAYLOAD",
    PayloadTooLarge => "ERR_PAYLOAD_TOO_LARGE",
    ContentDisallowed => "ERR_CONTENT_DISALLOWED",
    Decode => "ERR_DECODE",
    /// Not a refusal of the input: the call could not be completed (a panic
    /// in native code, caught before it reached JavaScript, or the system
    /// refusing the threads of the pool).
    Internal => "ERR_INTERNAL",
}

impl ErrorCode {
    /// The position of this code in [`ErrorCode::ALL`]: its discriminant,
    /// since both follow the one table above.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The batch status number of this code: 1 + its index (0 is success).
    pub const fn status(self) -> u32 {
        self.index() as u32 + 1
    }
}

/// A refusal: a stable code and a human-readable message without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}

impl Error {
    /// A panic caught before it reached the caller, as an `ERR_INTERNAL`
    /// error: its message (cut and escaped as untrusted text) says where.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Error {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        forget_panic(payload);
        Error::new(
            ErrorCode::Internal,
            format!(
                "internal error in celery-sign's native code (a bug, please report it): {}",
                display_bytes(what.as_bytes())
            ),
        )
    }
}

/// Drops a caught panic's payload without running its `Drop`, which could
/// panic again (where no one would catch it).
pub fn forget_panic(payload: Box<dyn Any + Send>) {
    std::mem::forget(payload);
}

/// Runs `f`, turning a panic into an `ERR_INTERNAL` error.
pub fn catch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Error::from_panic(p)))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Renders untrusted bytes (a signer id from a payload) for an error message:
/// printable ASCII as is, everything else escaped, and cut to a sane length.
pub fn display_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut out = String::with_capacity(bytes.len().min(MAX) + 8);
    for &b in bytes.iter().take(MAX) {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}

/// The TypeScript module that carries [`ErrorCode::ALL`] to the facade and to
/// the `node:crypto` fallback (`src/backend/codes.ts`), rendered from the enum:
/// the one source of the list on both sides of the FFI.
pub fn typescript_codes_module() -> String {
    let mut out = String::from(
        "// Generated from crates/core/src/error.rs (ErrorCode::ALL) by its test\n\
         // `typescript_codes_are_generated`; do not edit. Regenerate with\n\
         // `CELERY_SIGN_BLESS=1 cargo test -p celery-sign-core typescript_codes`.\n\n\
         /** The core's stable error codes; a batch status is 1 + the index here. */\n\
         export const CORE_ERROR_CODES = [\n",
    );
    for code in ErrorCode::ALL {
        out.push_str(&format!("  '{}',\n", code.as_str()));
    }
    out.push_str("] as const;\n\nexport type CoreErrorCode = (typeof CORE_ERROR_CODES)[number];\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
            assert_eq!(code.status() as usize, i + 1);
        }
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "codes are distinct");
    }

    /// src/backend/codes.ts and src/backend/limits.ts, the core's contract
    /// with TypeScript, are what the enum and the constants render.
    #[test]
    fn typescript_codes_are_generated() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../src/backend/");
        for (file, want) in [
            ("codes.ts", typescript_codes_module()),
            ("limits.ts", crate::typescript_limits_module()),
        ] {
            let path = format!("{root}{file}");
            if std::env::var_os("CELERY_SIGN_BLESS").is_some() {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                have, want,
                "src/backend/{file} is out of step with the core; rerun with CELERY_SIGN_BLESS=1"
            );
        }
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = catch::<()>(|| panic!("boom at {}", 7)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.ends_with("boom at 7"), "{}", err.message);
        let err = catch::<()>(|| std::panic::panic_any(42u8)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert_eq!(catch(|| Ok(5)), Ok(5));
    }
}
