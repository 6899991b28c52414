//! RSA-PSS the way Celery (Python `cryptography`) does it: MGF1 with the message
//! digest; the maximum salt length when signing; the salt length recovered from
//! the signature when verifying (`PSS.MAX_LENGTH` is OpenSSL's -2, which means
//! "maximum" to a signer and "auto" to a verifier).

use crate::digest::Digest;
use openssl::pkey::{HasPublic, PKeyRef, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;

/// -2: maximum salt length when signing, auto-detected when verifying.
const SALTLEN_MAX_OR_AUTO: RsaPssSaltlen = RsaPssSaltlen::MAXIMUM_LENGTH;

fn prehash(digest: Digest, data: &[u8]) -> Option<openssl::hash::DigestBytes> {
    openssl::hash::hash(digest.md(), data).ok()
}

/// Signs `data` with RSA-PSS, MGF1(digest), maximum salt length.
pub fn sign_pss(key: &PKeyRef<Private>, digest: Digest, data: &[u8]) -> Option<Vec<u8>> {
    let hashed = prehash(digest, data)?;
    let md = digest.evp();
    let mut ctx = PkeyCtx::new(key).ok()?;
    ctx.sign_init().ok()?;
    ctx.set_rsa_padding(Padding::PKCS1_PSS).ok()?;
    ctx.set_signature_md(md).ok()?;
    ctx.set_rsa_mgf1_md(md).ok()?;
    ctx.set_rsa_pss_saltlen(SALTLEN_MAX_OR_AUTO).ok()?;
    let mut sig = Vec::with_capacity(key.size());
    ctx.sign_to_vec(&hashed, &mut sig).ok()?;
    Some(sig)
}

/// Verifies an RSA-PSS signature over `data` whatever its salt length.
/// Any failure (wrong length, wrong padding, wrong digest) is `false`.
pub fn verify_pss<T: HasPublic>(key: &PKeyRef<T>, digest: Digest, data: &[u8], sig: &[u8]) -> bool {
    if sig.len() != key.size() {
        return false;
    }
    let Some(hashed) = prehash(digest, data) else {
        return false;
    };
    let md = digest.evp();
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut ctx = PkeyCtx::new(key)?;
        ctx.verify_init()?;
        ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
        ctx.set_signature_md(md)?;
        ctx.set_rsa_mgf1_md(md)?;
        ctx.set_rsa_pss_saltlen(SALTLEN_MAX_OR_AUTO)?;
        ctx.verify(&hashed, sig)
    };
    // An Err drains OpenSSL's error queue for this thread (ErrorStack::get).
    matches!(run(), Ok(true))
}
