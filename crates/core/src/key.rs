//! RSA private keys from PEM: PKCS#1, PKCS#8, encrypted PKCS#8 (PBES2) and the
//! legacy `Proc-Type: 4,ENCRYPTED` form. Error messages never quote the key.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode, Result};
use crate::pem;
use openssl::pkey::{Id, PKey, Private};

/// Reads a PEM private key through AWS-LC (`PEM_read_bio_PrivateKey`) with
/// a password callback of its own. The `openssl` crate's callback is a
/// `FnOnce` that panics when AWS-LC asks again, and AWS-LC asks twice for an
/// `ENCRYPTED PRIVATE KEY` block that also has `Proc-Type: 4,ENCRYPTED`
/// headers (once for the legacy layer, once for PKCS#8): this callback hands
/// out the same password every time, so both layers are decrypted with it.
/// It never falls back to a terminal prompt.
#[allow(unsafe_code)]
fn read_pem(
    pem: &[u8],
    password: Option<&[u8]>,
) -> std::result::Result<PKey<Private>, openssl::error::ErrorStack> {
    use foreign_types::ForeignType;
    use std::os::raw::{c_char, c_int, c_void};

    struct Password<'a>(Option<&'a [u8]>);

    /// AWS-LC's `pem_password_cb`: copies the password into `buf`, or
    /// returns 0 (no password) when there is none or it does not fit.
    unsafe extern "C" fn callback(
        buf: *mut c_char,
        size: c_int,
        _rwflag: c_int,
        userdata: *mut c_void,
    ) -> c_int {
        if buf.is_null() || userdata.is_null() || size <= 0 {
            return 0;
        }
        // SAFETY: userdata is the `Password` below, alive for the whole read.
        let Some(pw) = (unsafe { &*(userdata as *const Password<'_>) }).0 else {
            return 0;
        };
        if pw.len() > size as usize {
            return 0;
        }
        // SAFETY: AWS-LC hands a buffer of `size` bytes, and pw fits in it.
        unsafe { std::ptr::copy_nonoverlapping(pw.as_ptr(), buf.cast::<u8>(), pw.len()) };
        pw.len() as c_int
    }

    openssl_sys::init();
    let state = Password(password);
    // SAFETY: a read-only memory BIO over `pem`, which outlives it (freed below).
    let bio = unsafe { openssl_sys::BIO_new_mem_buf(pem.as_ptr().cast(), pem.len() as _) };
    if bio.is_null() {
        return Err(openssl::error::ErrorStack::get());
    }
    // SAFETY: a live BIO; the callback and its state outlive the call, and
    // the callback cannot unwind (it does not panic).
    let pkey = unsafe {
        openssl_sys::PEM_read_bio_PrivateKey(
            bio,
            std::ptr::null_mut(),
            Some(callback),
            &state as *const Password<'_> as *mut c_void,
        )
    };
    // SAFETY: the BIO made above, no longer used.
    unsafe { openssl_sys::BIO_free(bio) };
    if pkey.is_null() {
        return Err(openssl::error::ErrorStack::get());
    }
    // SAFETY: a new EVP_PKEY whose one reference passes to the PKey.
    Ok(unsafe { PKey::from_ptr(pkey) })
}

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
        let pkey = read_pem(block.bytes, password).map_err(|_| {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;

    /// `body` under RFC 1421 headers, encrypted as OpenSSL's legacy PEM
    /// encryption does (EVP_BytesToKey with MD5, the IV's first 8 bytes as salt).
    fn legacy_wrap(label: &str, body: &[u8], password: &[u8]) -> Vec<u8> {
        let cipher = Cipher::aes_128_cbc();
        let iv = [7u8; 16];
        // EVP_BytesToKey(MD5, count 1) for a 16-byte key: MD5(password || salt).
        let salted: Vec<u8> = password.iter().chain(&iv[..8]).copied().collect();
        let key = openssl::hash::hash(openssl::hash::MessageDigest::md5(), &salted).unwrap();
        let sealed = openssl::symm::encrypt(cipher, &key, Some(&iv), body).unwrap();
        let b64 = openssl::base64::encode_block(&sealed);
        let mut out = format!(
            "-----BEGIN {label}-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,{}\n\n",
            iv.iter().map(|b| format!("{b:02X}")).collect::<String>()
        );
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    /// An encrypted PKCS#8 key encrypted again under legacy headers: AWS-LC
    /// asks for the password twice; both layers take the one password.
    #[test]
    fn both_layers_of_a_doubly_encrypted_key() {
        let pkey = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let pw = b"celery-sign";
        let pkcs8 = pkey
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pw)
            .unwrap();
        let der = pem::first_block(&pkcs8).unwrap().decode().unwrap();
        let doubled = legacy_wrap("ENCRYPTED PRIVATE KEY", &der, pw);
        let key = PrivateKey::from_pem(&doubled, Some(pw)).unwrap();
        assert_eq!(key.bits(), 1024);
        let err = PrivateKey::from_pem(&doubled, Some(b"wrong")).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidKey);
        let err = PrivateKey::from_pem(&doubled, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidKey);
        // A password with a NUL byte is the bytes given, not a C string.
        let nul = b"cel\0ery";
        let pkcs8 = pkey
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), nul)
            .unwrap();
        assert!(PrivateKey::from_pem(&pkcs8, Some(nul)).is_ok());
        assert!(PrivateKey::from_pem(&pkcs8, Some(b"cel")).is_err());
    }
}
