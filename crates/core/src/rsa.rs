//! RSA-PSS the way Celery (Python `cryptography`) does it: MGF1 with the message
//! digest; the maximum salt length when signing; the salt length recovered from
//! the signature when verifying (`PSS.MAX_LENGTH` is OpenSSL's -2, which means
//! "maximum" to a signer and "auto" to a verifier).
//!
//! Speed: an initialised `EVP_PKEY_CTX` is kept per thread, per key and per
//! digest, so the hot path is one hash and one `EVP_PKEY_verify` (or `_sign`):
//! OpenSSL 3 looks up the provider's implementation at every `*_init`, under a
//! lock, and that lookup costs more than the public-key operation's overhead.
//! Digests use the low-level SHA functions, which need no lookup at all.

use crate::digest::Digest;
use crate::mb::MbKey;
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
pub(crate) fn prehash(digest: Digest, data: &[u8], out: &mut [u8; 64]) -> usize {
    hash_parts(digest, &[data], out)
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

/// Hashes the concatenation of `parts` into `out`, returning the digest's length.
fn hash_parts(digest: Digest, parts: &[&[u8]], out: &mut [u8; 64]) -> usize {
    use openssl::sha::{Sha1, Sha224, Sha256, Sha384, Sha512};
    macro_rules! run {
        ($h:ty, $n:expr) => {{
            let mut h = <$h>::new();
            for p in parts {
                h.update(p);
            }
            out[..$n].copy_from_slice(&h.finish());
        }};
    }
    match digest {
        Digest::Sha1 => run!(Sha1, 20),
        Digest::Sha224 => run!(Sha224, 28),
        Digest::Sha256 => run!(Sha256, 32),
        Digest::Sha384 => run!(Sha384, 48),
        Digest::Sha512 => run!(Sha512, 64),
    }
    digest.size()
}

/// The longest encoded message [`pss_verify_encoded`] reads (keys up to 8192 bits).
const MAX_EM: usize = 1024;

/// EMSA-PSS-VERIFY (RFC 8017, 9.1.2) with MGF1(digest) and the salt length
/// recovered from the message, as OpenSSL and AWS-LC do for salt length -2:
/// `em` is the output of the RSA public operation (the modulus' length,
/// big-endian), `mhash` the digest of the data, `mod_bits` the modulus' size.
/// Used after the multi-buffer public operation (`mb`); it follows
/// `RSA_verify_PKCS1_PSS_mgf1` step for step, and is checked against it.
pub(crate) fn pss_verify_encoded(digest: Digest, mhash: &[u8], em: &[u8], mod_bits: u32) -> bool {
    let h_len = digest.size();
    if mod_bits == 0 || em.is_empty() || mhash.len() != h_len {
        return false;
    }
    // Bits of the first byte above emBits = modBits - 1 must be zero.
    let ms_bits = (mod_bits - 1) & 7;
    if em[0] & ((0xffu32 << ms_bits) as u8) != 0 {
        return false;
    }
    let em = if ms_bits == 0 { &em[1..] } else { em };
    let em_len = em.len();
    if em_len < h_len + 2 || em_len > MAX_EM || em[em_len - 1] != 0xbc {
        return false;
    }
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = &rest[..h_len];
    // DB = maskedDB xor MGF1(H, dbLen)
    let mut db = [0u8; MAX_EM];
    let db = &mut db[..db_len];
    db.copy_from_slice(masked_db);
    let mut block = [0u8; 64];
    for (counter, chunk) in db.chunks_mut(h_len).enumerate() {
        hash_parts(digest, &[h, &(counter as u32).to_be_bytes()], &mut block);
        for (d, m) in chunk.iter_mut().zip(&block) {
            *d ^= m;
        }
    }
    if ms_bits != 0 {
        db[0] &= 0xff >> (8 - ms_bits);
    }
    // DB = PS (zeros) || 0x01 || salt
    let Some(one) = db[..db_len - 1]
        .iter()
        .position(|&b| b != 0)
        .or(Some(db_len - 1))
    else {
        return false;
    };
    if db[one] != 0x01 {
        return false;
    }
    let salt = &db[one + 1..];
    let mut expected = [0u8; 64];
    hash_parts(digest, &[&[0u8; 8], mhash, salt], &mut expected);
    expected[..h_len] == *h
}

/// Verifies an RSA-PSS signature with the one-number IFMA kernel (`mb`);
/// `key` comes from `Certificate::simd_one_key_for(sig)`.
pub(crate) fn verify_pss_simd(key: &MbKey, digest: Digest, data: &[u8], sig: &[u8]) -> bool {
    let mut em = [0u8; crate::mb::MAX_BYTES];
    let em = &mut em[..key.len()];
    crate::mb::public_op_one(key, sig, em) && pss_verify_digest(digest, data, em, key.bits())
}

/// [`pss_verify_encoded`] of the digest of `data`.
pub(crate) fn pss_verify_digest(digest: Digest, data: &[u8], em: &[u8], mod_bits: u32) -> bool {
    let mut mhash = [0u8; 64];
    let h = prehash(digest, data, &mut mhash);
    pss_verify_encoded(digest, &mhash[..h], em, mod_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::rsa::Rsa;

    const DIGESTS: [Digest; 5] = [
        Digest::Sha1,
        Digest::Sha224,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha512,
    ];

    /// An RSA key with primes of the given sizes (odd modulus sizes too).
    fn key_from_primes(pbits: i32, qbits: i32) -> PKey<Private> {
        let mut ctx = BigNumContext::new().unwrap();
        let e = BigNum::from_u32(65537).unwrap();
        let mut p = BigNum::new().unwrap();
        let mut q = BigNum::new().unwrap();
        p.generate_prime(pbits, false, None, None).unwrap();
        q.generate_prime(qbits, false, None, None).unwrap();
        let one = BigNum::from_u32(1).unwrap();
        let mut p1 = BigNum::new().unwrap();
        let mut q1 = BigNum::new().unwrap();
        p1.checked_sub(&p, &one).unwrap();
        q1.checked_sub(&q, &one).unwrap();
        let mut phi = BigNum::new().unwrap();
        phi.checked_mul(&p1, &q1, &mut ctx).unwrap();
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&p, &q, &mut ctx).unwrap();
        let mut d = BigNum::new().unwrap();
        d.mod_inverse(&e, &phi, &mut ctx).unwrap();
        let mut dmp1 = BigNum::new().unwrap();
        dmp1.nnmod(&d, &p1, &mut ctx).unwrap();
        let mut dmq1 = BigNum::new().unwrap();
        dmq1.nnmod(&d, &q1, &mut ctx).unwrap();
        let mut iqmp = BigNum::new().unwrap();
        iqmp.mod_inverse(&q, &p, &mut ctx).unwrap();
        let rsa = Rsa::from_private_components(n, e, d, p, q, dmp1, dmq1, iqmp).unwrap();
        PKey::from_rsa(rsa).unwrap()
    }

    fn key_with_bits(bits: u32) -> PKey<Private> {
        let p = (bits / 2) as i32;
        loop {
            let key = key_from_primes(p, bits as i32 - p);
            if key.bits() == bits {
                return key;
            }
        }
    }

    /// The raw public operation (what `mb` computes), by AWS-LC.
    fn raw_public(key: &PKey<Private>, sig: &[u8]) -> Option<Vec<u8>> {
        let rsa = key.rsa().unwrap();
        let mut out = vec![0u8; rsa.size() as usize];
        rsa.public_decrypt(sig, &mut out, Padding::NONE).ok()?;
        Some(out)
    }

    fn sign_with_salt(key: &PKey<Private>, digest: Digest, data: &[u8], salt: i32) -> Vec<u8> {
        let mut hashed = [0u8; 64];
        let n = prehash(digest, data, &mut hashed);
        let mut ctx = PkeyCtx::new(key).unwrap();
        ctx.sign_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        ctx.set_signature_md(digest.evp()).unwrap();
        ctx.set_rsa_mgf1_md(digest.evp()).unwrap();
        ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
            .unwrap();
        let mut sig = Vec::new();
        ctx.sign_to_vec(&hashed[..n], &mut sig).unwrap();
        sig
    }

    /// Our EMSA-PSS decoding agrees with AWS-LC's verification on genuine
    /// signatures (every salt length and digest, odd modulus sizes) and on
    /// every single-byte corruption of the signature and of the data.
    #[test]
    fn pss_decoding_agrees_with_aws_lc() {
        let simd = crate::mb::kernel_testable(
            crate::mb::Kernel::Ifma,
            "rsa::pss_decoding_agrees_with_aws_lc (its IFMA half)",
        )
        .unwrap();
        let mut checked = 0;
        // 2049 bits: emBits is a multiple of 8, so the EM is one byte shorter.
        for bits in [2048, 2047, 2049, 2046, 3072] {
            let key = key_with_bits(bits);
            let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
            let uid = new_key_id();
            let rsa = key.rsa().unwrap();
            let mb = MbKey::new(rsa.n(), rsa.e());
            assert!(mb.is_some());
            let bits = key.bits();
            let em_len = key.size() - usize::from((bits - 1).is_multiple_of(8));
            for digest in DIGESTS {
                let h = digest.size();
                let max_salt = (em_len - h - 2) as i32;
                for salt in [0, 1, 20, h as i32, max_salt - 1, max_salt] {
                    let data = format!("celery-sign {bits} {salt}").into_bytes();
                    let sig = sign_with_salt(&key, digest, &data, salt);
                    let mut cases: Vec<(Vec<u8>, Vec<u8>)> = vec![(data.clone(), sig.clone())];
                    cases.push((b"other data".to_vec(), sig.clone()));
                    for at in [0, 1, sig.len() / 2, sig.len() - 2, sig.len() - 1] {
                        let mut bad = sig.clone();
                        bad[at] ^= 0x01;
                        cases.push((data.clone(), bad));
                    }
                    for (data, sig) in cases {
                        let want = verify_pss(uid, &public, digest, &data, &sig);
                        let mut mhash = [0u8; 64];
                        prehash(digest, &data, &mut mhash);
                        let got = raw_public(&key, &sig)
                            .is_some_and(|em| pss_verify_encoded(digest, &mhash[..h], &em, bits));
                        assert_eq!(got, want, "{bits} bits, {digest:?}, salt {salt}");
                        if let Some(key) = mb.as_ref().filter(|_| simd) {
                            let simd = verify_pss_simd(key, digest, &data, &sig);
                            assert_eq!(simd, want, "IFMA: {bits} bits, {digest:?}, salt {salt}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500);
    }

    /// Encoded messages built by hand around each rule of the decoding.
    #[test]
    fn pss_decoding_refuses_each_broken_rule() {
        let digest = Digest::Sha256;
        let mhash = sha256_of(b"body");
        // A well-formed EM for a 2048-bit modulus with a 32-byte salt.
        let build = |salt: &[u8], trailer: u8, tweak: &dyn Fn(&mut Vec<u8>)| -> Vec<u8> {
            let em_len = 256;
            let mut mp = [0u8; 64];
            hash_parts(digest, &[&[0u8; 8], &mhash, salt], &mut mp);
            let h = mp[..32].to_vec();
            let db_len = em_len - 33;
            let mut db = vec![0u8; db_len];
            db[db_len - salt.len() - 1] = 1;
            db[db_len - salt.len()..].copy_from_slice(salt);
            tweak(&mut db);
            let mut block = [0u8; 64];
            for (c, chunk) in db.chunks_mut(32).enumerate() {
                hash_parts(digest, &[&h, &(c as u32).to_be_bytes()], &mut block);
                for (d, m) in chunk.iter_mut().zip(&block) {
                    *d ^= m;
                }
            }
            db[0] &= 0x7f;
            let mut em = db;
            em.extend_from_slice(&h);
            em.push(trailer);
            em
        };
        let salt = [7u8; 32];
        let good = build(&salt, 0xbc, &|_| {});
        assert!(pss_verify_encoded(digest, &mhash, &good, 2048));
        assert!(pss_verify_encoded(
            digest,
            &mhash,
            &build(&[], 0xbc, &|_| {}),
            2048
        ));
        assert!(!pss_verify_encoded(
            digest,
            &mhash,
            &build(&salt, 0xbb, &|_| {}),
            2048
        ));
        // The separator byte is not 0x01.
        let no_one = build(&salt, 0xbc, &|db: &mut Vec<u8>| {
            let at = db.len() - 33;
            db[at] = 2;
        });
        assert!(!pss_verify_encoded(digest, &mhash, &no_one, 2048));
        // A non-zero byte in the padding string.
        let dirty_ps = build(&salt, 0xbc, &|db: &mut Vec<u8>| db[5] = 1);
        assert!(!pss_verify_encoded(digest, &mhash, &dirty_ps, 2048));
        // The top bit (above emBits) set.
        let mut top = good.clone();
        top[0] |= 0x80;
        assert!(!pss_verify_encoded(digest, &mhash, &top, 2048));
        // Too short for the digest, wrong digest length, empty.
        assert!(!pss_verify_encoded(digest, &mhash, &good[..33], 2048));
        assert!(!pss_verify_encoded(digest, &mhash[..20], &good, 2048));
        assert!(!pss_verify_encoded(digest, &mhash, &[], 2048));
        assert!(!pss_verify_encoded(
            digest,
            &sha256_of(b"other"),
            &good,
            2048
        ));
    }

    fn sha256_of(data: &[u8]) -> Vec<u8> {
        openssl::sha::sha256(data).to_vec()
    }
}
