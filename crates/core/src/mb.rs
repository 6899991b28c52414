//! The RSA public operation `s^e mod n` for up to eight signatures at once,
//! with AVX-512 IFMA (multi-buffer, as Intel's `crypto_mb` does it).
//!
//! Verification is dominated by this one modular exponentiation, and for a
//! batch it is the same computation eight times over (usually with the same
//! key): each 512-bit register holds the same 52-bit limb of eight numbers, so
//! one `vpmadd52luq`/`vpmadd52huq` pair advances eight schoolbook
//! multiplications at once. No lane ever talks to another, so the arithmetic
//! is the textbook one (almost-Montgomery multiplication, CIOS order) written
//! with vectors, and each lane may have its own modulus.
//!
//! Only public data goes through here (signatures and public keys), so it is
//! written for speed, not constant time. It is checked against AWS-LC's raw
//! RSA operation (`tests` below and `tests/mb.rs`) on random and edge inputs
//! for every size it handles. Everything it does not handle (no IFMA, keys
//! over 4106 bits, even moduli, exponents over 64 bits) goes to AWS-LC.
#![allow(unsafe_code)]

use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const MASK52: u64 = (1 << 52) - 1;
/// Limb counts compiled: 52 * L >= bits + 2 (so R > 4n) for 2048, 3072, 4096-bit keys.
const SIZES: [usize; 3] = [40, 60, 79];
/// Room for the largest size, rounded up to whole vectors (one-number layout).
const MAX_L: usize = 80;
/// The longest modulus taken, in bytes (4106 bits).
pub const MAX_BYTES: usize = 514;
/// Lanes per vector.
pub const LANES: usize = 8;

/// A public key laid out for the kernel.
#[derive(Clone)]
pub struct MbKey {
    limbs: usize,
    n: [u64; MAX_L],
    /// R^2 mod n for R = 2^(52 L) (eight numbers) and for L rounded up to
    /// whole vectors (one number, see `public_op_one`).
    rr: [u64; MAX_L],
    rr_one: [u64; MAX_L],
    k0: u64,
    e: u64,
    /// The modulus, big-endian, `len` bytes (the signature length).
    n_be: Vec<u8>,
    bits: u32,
}

impl std::fmt::Debug for MbKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbKey")
            .field("limbs", &self.limbs)
            .field("bits", &self.bits)
            .finish()
    }
}

impl MbKey {
    /// Lays out `(n, e)`, or `None` when the kernel cannot take this key.
    pub fn new(n: &BigNumRef, e: &BigNumRef) -> Option<MbKey> {
        let bits = u32::try_from(n.num_bits()).ok()?;
        let limbs = *SIZES.iter().find(|&&l| 52 * l >= bits as usize + 2)?;
        if bits < 512 || !n.is_bit_set(0) || e.num_bits() > 64 || e.num_bits() < 2 {
            return None;
        }
        let e = u64::from_str_radix(&e.to_hex_str().ok()?, 16).ok()?;
        let n_be = n.to_vec();
        let mut key = MbKey {
            limbs,
            n: [0; MAX_L],
            rr: [0; MAX_L],
            rr_one: [0; MAX_L],
            k0: 0,
            e,
            n_be,
            bits,
        };
        to_limbs(&key.n_be, &mut key.n[..limbs]);
        let r2 = r_squared(n, limbs)?;
        to_limbs(&r2.to_vec_padded(key.n_be.len() as i32).ok()?, &mut key.rr);
        let r2 = r_squared(n, limbs.next_multiple_of(LANES))?;
        to_limbs(
            &r2.to_vec_padded(key.n_be.len() as i32).ok()?,
            &mut key.rr_one,
        );
        // k0 = -n^-1 mod 2^52, by Newton's iteration (n is odd).
        let n0 = key.n[0];
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        debug_assert_eq!(n0.wrapping_mul(inv) & MASK52, 1);
        key.k0 = inv.wrapping_neg() & MASK52;
        Some(key)
    }

    /// The signature length in bytes.
    pub fn len(&self) -> usize {
        self.n_be.len()
    }

    pub fn is_empty(&self) -> bool {
        self.n_be.is_empty()
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Keys that may share one kernel call (same limb count and exponent).
    pub fn group(&self) -> (usize, u64) {
        (self.limbs, self.e)
    }

    /// Whether `sig` is a number below the modulus, as RSA requires.
    fn accepts(&self, sig: &[u8]) -> bool {
        sig.len() == self.n_be.len() && sig < self.n_be.as_slice()
    }
}

/// R^2 mod n with R = 2^(52 limbs).
fn r_squared(n: &BigNumRef, limbs: usize) -> Option<BigNum> {
    let mut ctx = BigNumContext::new().ok()?;
    let one = BigNum::from_u32(1).ok()?;
    let mut shifted = BigNum::new().ok()?;
    shifted.lshift(&one, (2 * 52 * limbs) as i32).ok()?;
    let mut r2 = BigNum::new().ok()?;
    r2.nnmod(&shifted, n, &mut ctx).ok()?;
    Some(r2)
}

/// Room for the 64-bit words of the longest number here (`MAX_BYTES`).
const MAX_WORDS: usize = MAX_BYTES.div_ceil(8) + 1;

/// Big-endian bytes to 52-bit little-endian limbs (`out` zero-filled beyond;
/// bits beyond `out` dropped). Word by word: the bytes become 64-bit words,
/// each limb two shifts of them (byte by byte it cost 8% of a batch's
/// verification with the IFMA kernels).
fn to_limbs(be: &[u8], out: &mut [u64]) {
    let mut words = [0u64; MAX_WORDS];
    let mut n = 0;
    for (w, chunk) in words.iter_mut().zip(be.rchunks(8)) {
        *w = match <[u8; 8]>::try_from(chunk) {
            Ok(b) => u64::from_be_bytes(b),
            // The most significant, shorter chunk.
            Err(_) => chunk.iter().fold(0, |acc, &b| acc << 8 | u64::from(b)),
        };
        n += 1;
    }
    for (j, limb) in out.iter_mut().enumerate() {
        let (w, o) = ((52 * j) / 64, (52 * j) % 64);
        let lo = if w < n { words[w] >> o } else { 0 };
        // The limb's bits from the next word, when it straddles two.
        let hi = if o > 12 && w + 1 < n {
            words[w + 1] << (64 - o)
        } else {
            0
        };
        *limb = (lo | hi) & MASK52;
    }
}

/// 52-bit limbs (fully reduced, below the modulus) to `out.len()` big-endian
/// bytes, word by word (see [`to_limbs`]).
fn from_limbs(limbs: &[u64], out: &mut [u8]) {
    let mut words = [0u64; MAX_WORDS + 1];
    for (j, &l) in limbs.iter().enumerate() {
        let (w, o) = ((52 * j) / 64, (52 * j) % 64);
        if w >= MAX_WORDS {
            break;
        }
        words[w] |= l << o;
        if o > 12 {
            words[w + 1] |= l >> (64 - o);
        }
    }
    for (chunk, w) in out.rchunks_mut(8).zip(words) {
        let b = w.to_be_bytes();
        match <&mut [u8; 8]>::try_from(&mut *chunk) {
            Ok(full) => *full = b,
            // The most significant, shorter chunk.
            Err(_) => chunk.copy_from_slice(&b[8 - chunk.len()..]),
        }
    }
}

/// `a >= b` on little-endian limbs of equal length.
fn geq(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` on little-endian 52-bit limbs, `a >= b`.
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let t = x.wrapping_sub(y).wrapping_sub(borrow);
        borrow = t >> 63;
        *x = t & MASK52;
    }
}

/// For the kernels' tests: whether the kernels can be exercised here. Where
/// they cannot (no AVX-512 IFMA, or `CELERY_SIGN_SIMD=0`), says so on the
/// terminal — written to stderr directly, past the test harness's capture —
/// and returns `Ok(false)`: the caller skips visibly. Under
/// `CELERY_SIGN_EXPECT_IFMA=1` (CI on a CPU that has IFMA) that is an `Err`
/// instead, so a kernel test never passes without checking.
#[doc(hidden)]
pub fn kernels_testable(test: &str) -> std::result::Result<bool, String> {
    if available() {
        return Ok(true);
    }
    let why = if std::env::var("CELERY_SIGN_SIMD").is_ok_and(|v| v.trim() == "0") {
        "CELERY_SIGN_SIMD=0"
    } else {
        "this CPU has no AVX-512 IFMA"
    };
    if std::env::var("CELERY_SIGN_EXPECT_IFMA").is_ok_and(|v| v.trim() == "1") {
        return Err(format!(
            "{test}: CELERY_SIGN_EXPECT_IFMA=1 but the IFMA kernels are not available ({why})"
        ));
    }
    let line = format!("SKIPPED {test}: the IFMA kernels are not exercised ({why})\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    Ok(false)
}

const NOT_PROBED: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static AVAILABLE: AtomicU8 = AtomicU8::new(NOT_PROBED);

/// Whether this CPU has AVX-512 IFMA (and `CELERY_SIGN_SIMD` is not `0`).
pub fn available() -> bool {
    match AVAILABLE.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let off = std::env::var("CELERY_SIGN_SIMD").is_ok_and(|v| v.trim() == "0");
            let yes = !off && cpu_has_ifma();
            AVAILABLE.store(if yes { YES } else { NO }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_ifma() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_ifma() -> bool {
    false
}

/// Computes `sig^e mod n` for each lane into `out[i]` (big-endian, the key's
/// length). All keys must share [`MbKey::group`]; at most [`LANES`] lanes.
/// A lane whose signature is not a number below its modulus gets `false` and
/// its output is left alone. Panics (a programming error) on a misuse above
/// or when [`available`] is false.
pub fn public_op(keys: &[&MbKey], sigs: &[&[u8]], out: &mut [&mut [u8]]) -> [bool; LANES] {
    assert!(available());
    assert!(!keys.is_empty() && keys.len() <= LANES);
    assert!(keys.len() == sigs.len() && keys.len() == out.len());
    let group = keys[0].group();
    assert!(keys.iter().all(|k| k.group() == group));
    let mut ok = [false; LANES];
    // Lanes that fail the range check compute a dummy (zero) instead.
    let mut s = [[0u64; MAX_L]; LANES];
    let limbs = group.0;
    for (i, (key, sig)) in keys.iter().zip(sigs).enumerate() {
        if key.accepts(sig) {
            ok[i] = true;
            to_limbs(sig, &mut s[i][..limbs]);
        }
    }
    let mut res = [[0u64; MAX_L]; LANES];
    let lane_keys: [&MbKey; LANES] = std::array::from_fn(|i| keys[i.min(keys.len() - 1)]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked that the CPU has AVX-512F and IFMA.
    unsafe {
        match limbs {
            40 => kernel::<40>(&lane_keys, &s, &mut res),
            60 => kernel::<60>(&lane_keys, &s, &mut res),
            79 => kernel::<79>(&lane_keys, &s, &mut res),
            _ => unreachable!("MbKey::new only makes compiled sizes"),
        }
    }
    for (i, key) in keys.iter().enumerate() {
        if !ok[i] {
            continue;
        }
        let r = &mut res[i][..limbs];
        if geq(r, &key.n[..limbs]) {
            sub_in_place(r, &key.n[..limbs]);
        }
        from_limbs(r, out[i]);
    }
    ok
}

/// Computes `sig^e mod n` for one signature into `out` (big-endian, the
/// key's length); `false` when `sig` is not a number below the modulus.
/// Here the limbs of the one number lie across the vectors (eight per
/// register), as in OpenSSL's `rsaz_amm52` code: about three times AWS-LC's
/// speed for one RSA-2048 signature. Panics when [`available`] is false.
pub fn public_op_one(key: &MbKey, sig: &[u8], out: &mut [u8]) -> bool {
    assert!(available());
    if !key.accepts(sig) {
        return false;
    }
    let mut a = [0u64; MAX_L];
    to_limbs(sig, &mut a);
    let mut r = [0u64; MAX_L];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked that the CPU has AVX-512F and IFMA.
    unsafe {
        match key.limbs.div_ceil(LANES) {
            5 => one_kernel::<5>(key, &a, &mut r),
            8 => one_kernel::<8>(key, &a, &mut r),
            10 => one_kernel::<10>(key, &a, &mut r),
            _ => unreachable!("MbKey::new only makes compiled sizes"),
        }
    }
    let limbs = key.limbs.next_multiple_of(LANES);
    if geq(&r[..limbs], &key.n[..limbs]) {
        sub_in_place(&mut r[..limbs], &key.n[..limbs]);
    }
    from_limbs(&r[..limbs], out);
    true
}

/// The exponentiation for one number of `8 V` limbs (see `public_op_one`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
fn one_kernel<const V: usize>(key: &MbKey, a: &[u64; MAX_L], res: &mut [u64; MAX_L]) {
    // SAFETY (all loads): each reads 64 bytes inside an array of MAX_L >= 8 V u64.
    let n: [__m512i; V] =
        std::array::from_fn(|v| unsafe { _mm512_loadu_si512(key.n[8 * v..].as_ptr().cast()) });
    let k0 = _mm512_set1_epi64(key.k0 as i64);
    let mut am = [0u64; MAX_L];
    amm_one::<V>(a, &key.rr_one, &n, k0, &mut am);
    let mut x = am;
    let mut t = [0u64; MAX_L];
    let e = key.e;
    for bit in (0..63 - e.leading_zeros()).rev() {
        amm_one::<V>(&x, &x, &n, k0, &mut t);
        if (e >> bit) & 1 == 1 {
            amm_one::<V>(&t, &am, &n, k0, &mut x);
        } else {
            x = t;
        }
    }
    let mut one = [0u64; MAX_L];
    one[0] = 1;
    amm_one::<V>(&x, &one, &n, k0, res);
}

/// `r = a * b * R^-1 mod n` (up to `2n`) for one number of `8 V` limbs, with
/// `R = 2^(52 * 8 V)`: the same almost-Montgomery multiplication as
/// `mont_mul`, the accumulator shifted down one limb per step across the
/// vectors. Inputs and output are normalized limbs (below 2^52).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn amm_one<const V: usize>(
    a: &[u64; MAX_L],
    b: &[u64; MAX_L],
    n: &[__m512i; V],
    k0: __m512i,
    r: &mut [u64; MAX_L],
) {
    let zero = _mm512_setzero_si512();
    // SAFETY: reads 64 bytes inside an array of MAX_L >= 8 V u64.
    let av: [__m512i; V] =
        std::array::from_fn(|v| unsafe { _mm512_loadu_si512(a[8 * v..].as_ptr().cast()) });
    let mut acc = [zero; V];
    for &limb in &b[..8 * V] {
        let bi = _mm512_set1_epi64(limb as i64);
        for v in 0..V {
            acc[v] = _mm512_madd52lo_epu64(acc[v], av[v], bi);
        }
        // u = limb 0 of acc times k0, mod 2^52, in every lane.
        let u = _mm512_madd52lo_epu64(zero, _mm512_permutexvar_epi64(zero, acc[0]), k0);
        for v in 0..V {
            acc[v] = _mm512_madd52lo_epu64(acc[v], n[v], u);
        }
        // Limb 0 is now a multiple of 2^52: drop it, carrying its top bits.
        let carry = _mm512_srli_epi64::<52>(acc[0]);
        for v in 0..V - 1 {
            acc[v] = _mm512_alignr_epi64::<1>(acc[v + 1], acc[v]);
        }
        acc[V - 1] = _mm512_alignr_epi64::<1>(zero, acc[V - 1]);
        acc[0] = _mm512_mask_add_epi64(acc[0], 1, acc[0], carry);
        // The high halves belong one limb up: where the shift just put them.
        for v in 0..V {
            acc[v] = _mm512_madd52hi_epu64(acc[v], av[v], bi);
            acc[v] = _mm512_madd52hi_epu64(acc[v], n[v], u);
        }
    }
    let mut wide = [0u64; MAX_L];
    for (v, x) in acc.iter().enumerate() {
        // SAFETY: writes 64 bytes inside an array of MAX_L >= 8 V u64.
        unsafe { _mm512_storeu_si512(wide[8 * v..].as_mut_ptr().cast(), *x) };
    }
    let mut c = 0u64;
    for j in 0..8 * V {
        let t = wide[j] + c;
        r[j] = t & MASK52;
        c = t >> 52;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
fn transpose<const L: usize>(rows: [&[u64; MAX_L]; LANES]) -> [__m512i; L] {
    std::array::from_fn(|j| {
        let lane: [u64; LANES] = std::array::from_fn(|i| rows[i][j]);
        // SAFETY: reads 64 bytes from an array of eight u64.
        unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
fn kernel<const L: usize>(
    keys: &[&MbKey; LANES],
    s: &[[u64; MAX_L]; LANES],
    res: &mut [[u64; MAX_L]; LANES],
) {
    let n: [__m512i; L] = transpose(std::array::from_fn(|i| &keys[i].n));
    let rr: [__m512i; L] = transpose(std::array::from_fn(|i| &keys[i].rr));
    let a: [__m512i; L] = transpose(std::array::from_fn(|i| &s[i]));
    let k0_lanes: [u64; LANES] = std::array::from_fn(|i| keys[i].k0);
    // SAFETY: reads 64 bytes from an array of eight u64.
    let k0 = unsafe { _mm512_loadu_si512(k0_lanes.as_ptr().cast()) };
    let e = keys[0].e;

    // Into the Montgomery domain: a * R mod n.
    let mut am = [_mm512_setzero_si512(); L];
    mont_mul(&mut am, &a, &rr, &n, k0);
    // Left to right square-and-multiply over the bits of e below its top bit.
    let mut x = am;
    let mut t = [_mm512_setzero_si512(); L];
    for bit in (0..63 - e.leading_zeros()).rev() {
        mont_mul(&mut t, &x, &x, &n, k0);
        if (e >> bit) & 1 == 1 {
            mont_mul(&mut x, &t, &am, &n, k0);
        } else {
            x = t;
        }
    }
    // Out of the Montgomery domain: x * 1 * R^-1; at most n (then reduced by the caller).
    let mut one = [_mm512_setzero_si512(); L];
    one[0] = _mm512_set1_epi64(1);
    mont_mul(&mut t, &x, &one, &n, k0);
    for (j, v) in t.iter().enumerate() {
        let mut lane = [0u64; LANES];
        // SAFETY: writes 64 bytes into an array of eight u64.
        unsafe { _mm512_storeu_si512(lane.as_mut_ptr().cast(), *v) };
        for i in 0..LANES {
            res[i][j] = lane[i];
        }
    }
}

/// `r = a * b * R^-1 mod n`, up to `2n`, for inputs below `2n` and `R = 2^(52 L) > 4n`.
/// Each accumulator limb gathers at most 4(L + 1) products of 52 bits: below 2^61.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn mont_mul<const L: usize>(
    r: &mut [__m512i; L],
    a: &[__m512i; L],
    b: &[__m512i; L],
    n: &[__m512i; L],
    k0: __m512i,
) {
    let zero = _mm512_setzero_si512();
    let mut acc = [zero; 2 * MAX_L + 1];
    for i in 0..L {
        let bi = b[i];
        let t0 = _mm512_madd52lo_epu64(acc[i], a[0], bi);
        let u = _mm512_madd52lo_epu64(zero, t0, k0);
        // The low 52 bits of t0 + lo(n0 u) are zero; the rest carries up.
        let carry = _mm512_srli_epi64::<52>(_mm512_madd52lo_epu64(t0, n[0], u));
        let mut next = _mm512_add_epi64(acc[i + 1], carry);
        for j in 1..L {
            let mut t = if j == 1 { next } else { acc[i + j] };
            t = _mm512_madd52lo_epu64(t, a[j], bi);
            t = _mm512_madd52lo_epu64(t, n[j], u);
            t = _mm512_madd52hi_epu64(t, a[j - 1], bi);
            t = _mm512_madd52hi_epu64(t, n[j - 1], u);
            acc[i + j] = t;
        }
        next = _mm512_madd52hi_epu64(acc[i + L], a[L - 1], bi);
        acc[i + L] = _mm512_madd52hi_epu64(next, n[L - 1], u);
    }
    let mask = _mm512_set1_epi64(MASK52 as i64);
    let mut c = zero;
    for j in 0..L {
        let t = _mm512_add_epi64(acc[L + j], c);
        r[j] = _mm512_and_si512(t, mask);
        c = _mm512_srli_epi64::<52>(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::{Padding, Rsa};

    // The byte-by-byte conversions the word-wise ones replaced, as the reference.
    /// Big-endian bytes to 52-bit little-endian limbs (`out` zero-filled beyond).
    fn to_limbs_bytewise(be: &[u8], out: &mut [u64]) {
        out.fill(0);
        let mut acc: u128 = 0;
        let mut have = 0u32;
        let mut j = 0;
        for &byte in be.iter().rev() {
            acc |= (byte as u128) << have;
            have += 8;
            if have >= 52 {
                if j < out.len() {
                    out[j] = (acc as u64) & MASK52;
                }
                j += 1;
                acc >>= 52;
                have -= 52;
            }
        }
        if have > 0 && j < out.len() {
            out[j] = acc as u64 & MASK52;
        }
    }

    /// 52-bit limbs (fully reduced, below the modulus) to `out.len()` big-endian bytes.
    fn from_limbs_bytewise(limbs: &[u64], out: &mut [u8]) {
        let mut acc: u128 = 0;
        let mut have = 0u32;
        let mut limbs = limbs.iter();
        for byte in out.iter_mut().rev() {
            if have < 8 {
                if let Some(&l) = limbs.next() {
                    acc |= (l as u128) << have;
                    have += 52;
                } else {
                    have = 8; // zeros above the top limb
                }
            }
            *byte = acc as u8;
            acc >>= 8;
            have -= 8;
        }
    }

    /// The word-wise conversions give exactly what the byte-wise ones gave:
    /// every length up to MAX_BYTES, into every limb count the kernels use
    /// and into shorter and longer room.
    #[test]
    fn limb_conversions_match_the_bytewise_reference() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in (0..=MAX_BYTES)
            .filter(|l| *l < 20 || l % 7 == 0 || [255, 256, 257, 384, 512, 513, 514].contains(l))
        {
            for fill in [0u8, 0xff, 1] {
                let be: Vec<u8> = (0..len)
                    .map(|_| if fill == 1 { next() as u8 } else { fill })
                    .collect();
                for limbs in [1, 5, 39, 40, 41, 60, 79, 80] {
                    let mut a = [7u64; 80];
                    let mut b = [9u64; 80];
                    to_limbs(&be, &mut a[..limbs]);
                    to_limbs_bytewise(&be, &mut b[..limbs]);
                    assert_eq!(a[..limbs], b[..limbs], "to_limbs len {len} limbs {limbs}");
                    for out_len in [len, len.saturating_sub(1), len + 1, 256] {
                        if out_len > MAX_BYTES {
                            continue;
                        }
                        let mut o1 = vec![3u8; out_len];
                        let mut o2 = vec![5u8; out_len];
                        from_limbs(&a[..limbs], &mut o1);
                        from_limbs_bytewise(&a[..limbs], &mut o2);
                        assert_eq!(o1, o2, "from_limbs len {len} limbs {limbs} out {out_len}");
                    }
                }
            }
        }
    }

    #[test]
    fn limbs_round_trip() {
        let be: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
        let mut limbs = [0u64; 40];
        to_limbs(&be, &mut limbs);
        let mut back = vec![0u8; 256];
        from_limbs(&limbs, &mut back);
        assert_eq!(be, back);
    }

    fn raw_public(rsa: &Rsa<openssl::pkey::Public>, sig: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; rsa.size() as usize];
        rsa.public_decrypt(sig, &mut out, Padding::NONE).ok()?;
        Some(out)
    }

    /// Random signatures, and the edges, against AWS-LC's raw public operation.
    #[test]
    fn matches_the_raw_rsa_operation() {
        if !kernels_testable("mb::matches_the_raw_rsa_operation").unwrap() {
            return;
        }
        // Moduli made from primes, so odd sizes are covered too.
        for (pbits, qbits, e) in [
            (1024, 1024, 65537u32),
            (1536, 1536, 65537),
            (2048, 2048, 65537),
            (1024, 1023, 3),
            (1028, 1028, 65537),
            (512, 512, 17),
            (2052, 2052, 65537),
        ] {
            let mut p = BigNum::new().unwrap();
            let mut q = BigNum::new().unwrap();
            p.generate_prime(pbits, false, None, None).unwrap();
            q.generate_prime(qbits, false, None, None).unwrap();
            let mut nn = BigNum::new().unwrap();
            nn.checked_mul(&p, &q, &mut BigNumContext::new().unwrap())
                .unwrap();
            let bits = nn.num_bits();
            let rsa = Rsa::from_public_components(nn, BigNum::from_u32(e).unwrap()).unwrap();
            let key = MbKey::new(rsa.n(), rsa.e()).unwrap();
            let len = key.len();
            let mut sigs: Vec<Vec<u8>> = Vec::new();
            let n_minus_1 = {
                let mut v = rsa.n().to_vec();
                *v.last_mut().unwrap() -= 1;
                v
            };
            sigs.push(vec![0; len]);
            let mut one = vec![0; len];
            one[len - 1] = 1;
            sigs.push(one);
            sigs.push(n_minus_1);
            for _ in 0..61 {
                let mut s = vec![0u8; len];
                openssl::rand::rand_bytes(&mut s).unwrap();
                s[0] &= 0x7f >> ((8 - bits % 8) % 8);
                sigs.push(s);
            }
            for chunk in sigs.chunks(LANES) {
                let keys = vec![&key; chunk.len()];
                let ins: Vec<&[u8]> = chunk.iter().map(|s| s.as_slice()).collect();
                let mut outs = vec![vec![0u8; len]; chunk.len()];
                let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                let ok = public_op(&keys, &ins, &mut refs);
                for (i, s) in chunk.iter().enumerate() {
                    let want = raw_public(&rsa, s);
                    assert_eq!(ok[i], want.is_some(), "bits {bits}: range check");
                    let mut one = vec![0u8; len];
                    assert_eq!(public_op_one(&key, s, &mut one), want.is_some());
                    if let Some(want) = want {
                        assert_eq!(outs[i], want, "bits {bits}, e {e}");
                        assert_eq!(one, want, "one number: bits {bits}, e {e}");
                    }
                }
            }
        }
    }
}
