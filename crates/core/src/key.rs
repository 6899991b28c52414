//! RSA private keys from PEM: PKCS#1, PKCS#8, encrypted PKCS#8 (PBES2) and the
//! legacy `Proc-Type: 4,ENCRYPTED` form. Error messages never quote the key.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode, Result};
use crate::pem;
use openssl::pkey::{Id, PKey, Private};

pub struct PrivateKey {
    pkey: PKey<Private>,
    bits: u32,
    /// Identifies this key in the per-thread context caches.
    uid: u64,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "PrivateKey {{ bits: {} }}", self.bits)
    }
}

impl PrivateKey {
    /// Loads a PEM private key, decrypting it with `password` when it is encrypted.
    /// Like Python's `cryptography`, a password for an unencrypted key and a
    /// missing password for an encrypted key are both refused.
    pub fn from_pem(data: &[u8], password: Option<&[u8]>) -> Result<PrivateKey> {
        let invalid =
            |msg: &str| Error::new(ErrorCode::InvalidKey, format!("Invalid private key: {msg}"));
        let block = pem::first_block(data).ok_or_else(|| invalid("no PEM private key found"))?;
        if !block.label.ends_with("PRIVATE KEY") {
            return Err(invalid("the PEM block is not a private key"));
        }
        let encrypted = block.label == "ENCRYPTED PRIVATE KEY" || block.legacy_encrypted;
        match (encrypted, password) {
            (false, Some(_)) => {
                return Err(invalid(
                    "a password was given but the private key is not encrypted",
                ))
            }
            (true, None) => {
                return Err(invalid(
                    "the private key is encrypted but no password was given",
                ))
            }
            _ => {}
        }
        let pkey = match password {
            // The callback form never falls back to OpenSSL's terminal prompt.
            None => PKey::private_key_from_pem_callback(block.bytes, |_| Ok(0)),
            Some(pw) => PKey::private_key_from_pem_callback(block.bytes, |buf| {
                if pw.len() > buf.len() {
                    return Ok(0);
                }
                buf[..pw.len()].copy_from_slice(pw);
                Ok(pw.len())
            }),
        }
        .map_err(|_| {
            if encrypted {
                invalid("could not decrypt the private key (wrong password or unsupported cipher)")
            } else {
                invalid("could not parse the private key (expected PEM PKCS#1 or PKCS#8)")
            }
        })?;
        if !matches!(pkey.id(), Id::RSA | Id::RSA_PSS) {
            return Err(Error::new(
                ErrorCode::UnsupportedKeyType,
                "Invalid private key: Non-RSA keys are not supported.",
            ));
        }
        let bits = pkey.bits();
        Ok(PrivateKey {
            pkey,
            bits,
            uid: crate::rsa::new_key_id(),
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Signature length in bytes.
    pub fn size(&self) -> usize {
        self.pkey.size()
    }

    /// RSA-PSS, MGF1(digest), maximum salt length: what Celery's `PrivateKey.sign` writes.
    pub fn sign(&self, data: &[u8], digest: Digest) -> Result<Vec<u8>> {
        crate::rsa::sign_pss(self.uid, &self.pkey, digest, data).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidKey,
                "Unable to sign data: the key cannot sign with this digest",
            )
        })
    }
}
