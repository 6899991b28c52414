//! Digest names as Celery takes them (`security_digest`).

use openssl::md::{Md, MdRef};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Digest {
    Sha1,
    Sha224,
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    /// Parses a digest name the way Celery does (`getattr(hashes, name.upper())`),
    /// so `sha256` and `SHA256` are the same; anything else is refused. The
    /// refusal is a configuration mistake (Celery raises `AttributeError`
    /// from its setup, before any key is touched), not a refusal of a key or
    /// a payload: it has no [`crate::ErrorCode`], and the binding throws it as
    /// a bad argument (`ImproperlyConfigured` in the facade).
    pub fn from_name(name: &str) -> Result<Digest, UnknownDigest> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Digest::Sha1),
            "sha224" => Ok(Digest::Sha224),
            "sha256" => Ok(Digest::Sha256),
            "sha384" => Ok(Digest::Sha384),
            "sha512" => Ok(Digest::Sha512),
            _ => Err(UnknownDigest(crate::error::display_bytes(name.as_bytes()))),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha224 => "sha224",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
        }
    }

    /// The EVP digest, for context-level calls.
    pub fn evp(self) -> &'static MdRef {
        match self {
            Digest::Sha1 => Md::sha1(),
            Digest::Sha224 => Md::sha224(),
            Digest::Sha256 => Md::sha256(),
            Digest::Sha384 => Md::sha384(),
            Digest::Sha512 => Md::sha512(),
        }
    }

    /// Output length in bytes.
    pub const fn size(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha224 => 28,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
            Digest::Sha512 => 64,
        }
    }
}

/// A digest name that is not one of Celery's (the name, escaped for display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDigest(String);

impl fmt::Display for UnknownDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported digest {:?}: use sha1, sha224, sha256, sha384 or sha512",
            self.0
        )
    }
}

impl std::error::Error for UnknownDigest {}
