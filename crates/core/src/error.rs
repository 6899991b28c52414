//! One error type with stable codes. The codes are the contract with the
//! TypeScript facade (`SecurityError.code`); messages never carry key material.

use std::fmt;

/// Stable error codes, shared with the JavaScript `SecurityError.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidKey,
    InvalidCertificate,
    UnsupportedKeyType,
    CertificateExpired,
    DuplicateCertificate,
    UnknownCertificate,
    BadSignature,
    MalformedPayload,
    PayloadTooLarge,
    ContentDisallowed,
    Decode,
}

impl ErrorCode {
    /// All codes, in a fixed order (the index is used on the batch wire).
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidKey,
        ErrorCode::InvalidCertificate,
        ErrorCode::UnsupportedKeyType,
        ErrorCode::CertificateExpired,
        ErrorCode::DuplicateCertificate,
        ErrorCode::UnknownCertificate,
        ErrorCode::BadSignature,
        ErrorCode::MalformedPayload,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ContentDisallowed,
        ErrorCode::Decode,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidKey => "ERR_INVALID_KEY",
            ErrorCode::InvalidCertificate => "ERR_INVALID_CERTIFICATE",
            ErrorCode::UnsupportedKeyType => "ERR_UNSUPPORTED_KEY_TYPE",
            ErrorCode::CertificateExpired => "ERR_CERTIFICATE_EXPIRED",
            ErrorCode::DuplicateCertificate => "ERR_DUPLICATE_CERTIFICATE",
            ErrorCode::UnknownCertificate => "ERR_UNKNOWN_CERTIFICATE",
            ErrorCode::BadSignature => "ERR_BAD_SIGNATURE",
            ErrorCode::MalformedPayload => "ERR_MALFORMED_PAYLOAD",
            ErrorCode::PayloadTooLarge => "ERR_PAYLOAD_TOO_LARGE",
            ErrorCode::ContentDisallowed => "ERR_CONTENT_DISALLOWED",
            ErrorCode::Decode => "ERR_DECODE",
        }
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
mod tests {
    use super::*;

    #[test]
    fn typescript_codes_are_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../src/backend/codes.ts");
        let want = typescript_codes_module();
        if std::env::var_os("CELERY_SIGN_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            have, want,
            "src/backend/codes.ts is out of step with ErrorCode::ALL; rerun with CELERY_SIGN_BLESS=1"
        );
    }
}
