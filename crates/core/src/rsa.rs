//! RSA-PSS the way Celery (Python `cryptography`) does it: MGF1 with the message
//! digest; the maximum salt length when signing; the salt length recovered from
//! the signature when verifying (`PSS.MAX_LENGTH` is OpenSSL's -2, which means
//! "maximum" to a signer and "auto" to a verifier).
//!
//! Speed: an initialised `EVP_PKEY_CTX` is kept per thread, per key and per
//! digest, so the hot path is one hash and one `EVP_PKEY_verify` (or `_sign`):
//! OpenSSL 3 looks up the provider's implementation at every `*_init`, under a
//! lock, and that lookup costs more than the public-key operation's overhead.
//! Digests use the one-shot SHA functions, which need no lookup at all.

use crate::digest::Digest;
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// -2: maximum salt length when signing, auto-detected when verifying.
const SALTLEN_MAX_OR_AUTO: RsaPssSaltlen = RsaPssSaltlen::MAXIMUM_LENGTH;

/// Contexts kept per thread before the cache is emptied (keys come and go).
const CACHE_LIMIT: usize = 64;

static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a key, so a cached context can never be used with
/// another key that happens to live at the same address later.
pub fn new_key_id() -> u64 {
    NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed)
}

/// Initialised contexts of one thread, by key id and digest.
type CtxCache<T> = RefCell<HashMap<(u64, Digest), PkeyCtx<T>>>;

thread_local! {
    static VERIFIERS: CtxCache<Public> = RefCell::new(HashMap::new());
    static SIGNERS: CtxCache<Private> = RefCell::new(HashMap::new());
}

/// Hashes `data` into `out`, returning the digest's length.
fn prehash(digest: Digest, data: &[u8], out: &mut [u8; 64]) -> usize {
    use openssl::sha;
    match digest {
        Digest::Sha1 => out[..20].copy_from_slice(&sha::sha1(data)),
        Digest::Sha224 => out[..28].copy_from_slice(&sha::sha224(data)),
        Digest::Sha256 => out[..32].copy_from_slice(&sha::sha256(data)),
        Digest::Sha384 => out[..48].copy_from_slice(&sha::sha384(data)),
        Digest::Sha512 => out.copy_from_slice(&sha::sha512(data)),
    }
    digest.size()
}

/// Sets PSS, MGF1(digest) and salt length -2 on an initialised context.
fn set_pss<T>(
    mut ctx: PkeyCtx<T>,
    digest: Digest,
) -> Result<PkeyCtx<T>, openssl::error::ErrorStack> {
    let md = digest.evp();
    ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
    ctx.set_signature_md(md)?;
    ctx.set_rsa_mgf1_md(md)?;
    ctx.set_rsa_pss_saltlen(SALTLEN_MAX_OR_AUTO)?;
    Ok(ctx)
}

fn with_cached<T, R>(
    cache: &'static std::thread::LocalKey<CtxCache<T>>,
    id: (u64, Digest),
    make: impl FnOnce() -> Option<PkeyCtx<T>>,
    run: impl FnOnce(&mut PkeyCtx<T>) -> R,
) -> Option<R> {
    cache.with(|cell| {
        let mut map = cell.borrow_mut();
        if !map.contains_key(&id) {
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            map.insert(id, make()?);
        }
        map.get_mut(&id).map(run)
    })
}

/// Signs `data` with RSA-PSS, MGF1(digest), maximum salt length.
pub fn sign_pss(key_id: u64, key: &PKey<Private>, digest: Digest, data: &[u8]) -> Option<Vec<u8>> {
    let mut hashed = [0u8; 64];
    let n = prehash(digest, data, &mut hashed);
    with_cached(
        &SIGNERS,
        (key_id, digest),
        || {
            let mut ctx = PkeyCtx::new(key).ok()?;
            ctx.sign_init().ok()?;
            set_pss(ctx, digest).ok()
        },
        |ctx| {
            let mut sig = Vec::with_capacity(key.size());
            ctx.sign_to_vec(&hashed[..n], &mut sig).ok().map(|_| sig)
        },
    )
    .flatten()
}

/// Verifies an RSA-PSS signature over `data` whatever its salt length.
/// Any failure (wrong length, wrong padding, wrong digest) is `false`.
pub fn verify_pss(
    key_id: u64,
    key: &PKey<Public>,
    digest: Digest,
    data: &[u8],
    sig: &[u8],
) -> bool {
    if sig.len() != key.size() {
        return false;
    }
    let mut hashed = [0u8; 64];
    let n = prehash(digest, data, &mut hashed);
    // An Err from OpenSSL drains its error queue for this thread (ErrorStack::get).
    with_cached(
        &VERIFIERS,
        (key_id, digest),
        || {
            let mut ctx = PkeyCtx::new(key).ok()?;
            ctx.verify_init().ok()?;
            set_pss(ctx, digest).ok()
        },
        |ctx| matches!(ctx.verify(&hashed[..n], sig), Ok(true)),
    )
    .unwrap_or(false)
}
