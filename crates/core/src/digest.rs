//! Digest names as Celery takes them (`security_digest`).

use crate::error::{Error, ErrorCode, Result};
use openssl::md::{Md, MdRef};

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
    /// so `sha256` and `SHA256` are the same; anything else is refused.
    pub fn from_name(name: &str) -> Result<Digest> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Digest::Sha1),
            "sha224" => Ok(Digest::Sha224),
            "sha256" => Ok(Digest::Sha256),
            "sha384" => Ok(Digest::Sha384),
            "sha512" => Ok(Digest::Sha512),
            _ => Err(Error::new(
                ErrorCode::InvalidKey,
                format!(
                    "unsupported digest {:?}: use sha1, sha224, sha256, sha384 or sha512",
                    crate::error::display_bytes(name.as_bytes())
                ),
            )),
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
