//! The RSA public operation `s^e mod n` for up to eight signatures at once,
//! with SIMD (multi-buffer, as Intel's `crypto_mb` does it): AVX-512 IFMA
//! where the CPU has it, AVX2 (`avx2`) on other x86-64 CPUs.
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
//! RSA operation (`tests` below; `tests/pipeline.rs` runs the batch path
//! through it) on random and edge inputs for every size it handles, with each
//! kernel the CPU has. Everything it does not handle (neither kernel, keys
//! over 4106 bits with IFMA or over 3078 with AVX2, even moduli, exponents
//! that are even or over 64 bits) goes to AWS-LC.
//!
//! `CELERY_SIGN_SIMD` (read once): `0` turns the kernels off (AWS-LC alone,
//! the path of a CPU with neither, e.g. ARM), `avx2` takes the AVX2 kernel
//! even where IFMA exists (the path of an x86-64 CPU without IFMA).
#![allow(unsafe_code)]

use crate::avx2::{self, Limbs28};
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
    /// The layout of the AVX2 kernel (28-bit limbs), when the key fits it.
    l28: Option<Box<Limbs28>>,
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
    /// Lays out `(n, e)`, or `None` when no kernel can take this key.
    pub fn new(n: &BigNumRef, e: &BigNumRef) -> Option<MbKey> {
        let bits = u32::try_from(n.num_bits()).ok()?;
        let limbs = *SIZES.iter().find(|&&l| 52 * l >= bits as usize + 2)?;
        // An even e is no RSA key (e must be prime to p - 1 and q - 1); the
        // AVX2 kernel ends on bit 0 of an odd one (see `avx2::kernel`).
        if bits < 512
            || !n.is_bit_set(0)
            || e.num_bits() > 64
            || e.num_bits() < 2
            || !e.is_bit_set(0)
        {
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
            l28: None,
        };
        to_limbs::<52>(&key.n_be, &mut key.n[..limbs]);
        let r2 = r_squared(n, 52 * limbs)?;
        to_limbs::<52>(&r2.to_vec_padded(key.n_be.len() as i32).ok()?, &mut key.rr);
        let r2 = r_squared(n, 52 * limbs.next_multiple_of(LANES))?;
        to_limbs::<52>(
            &r2.to_vec_padded(key.n_be.len() as i32).ok()?,
            &mut key.rr_one,
        );
        key.k0 = neg_inverse(key.n[0], 52);
        key.l28 = Self::layout28(n, &key.n_be);
        Some(key)
    }

    /// The AVX2 kernel's layout of `n`, when a compiled size fits it.
    fn layout28(n: &BigNumRef, n_be: &[u8]) -> Option<Box<Limbs28>> {
        let bits = n.num_bits() as usize;
        let limbs = *avx2::SIZES
            .iter()
            .find(|&&l| avx2::BITS as usize * l >= bits + 2)?;
        let mut l = Box::new(Limbs28 {
            limbs,
            n: [0; avx2::MAX_L],
            rr: [0; avx2::MAX_L],
            k0: 0,
        });
        to_limbs::<28>(n_be, &mut l.n[..limbs]);
        let r2 = r_squared(n, avx2::BITS as usize * limbs)?;
        to_limbs::<28>(
            &r2.to_vec_padded(n_be.len() as i32).ok()?,
            &mut l.rr[..limbs],
        );
        l.k0 = neg_inverse(l.n[0], avx2::BITS);
        Some(l)
    }

    /// Whether the batch kernel of this CPU ([`kernel`]) takes this key.
    pub fn usable(&self) -> bool {
        match kernel() {
            Some(Kernel::Ifma) => true,
            Some(Kernel::Avx2) => self.l28.is_some(),
            None => false,
        }
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
        match (kernel(), &self.l28) {
            (Some(Kernel::Avx2), Some(l)) => (l.limbs, self.e),
            _ => (self.limbs, self.e),
        }
    }

    /// Whether `sig` is a number below the modulus, as RSA requires.
    fn accepts(&self, sig: &[u8]) -> bool {
        sig.len() == self.n_be.len() && sig < self.n_be.as_slice()
    }
}

/// R^2 mod n with R = 2^r_bits.
fn r_squared(n: &BigNumRef, r_bits: usize) -> Option<BigNum> {
    let mut ctx = BigNumContext::new().ok()?;
    let one = BigNum::from_u32(1).ok()?;
    let mut shifted = BigNum::new().ok()?;
    shifted.lshift(&one, (2 * r_bits) as i32).ok()?;
    let mut r2 = BigNum::new().ok()?;
    r2.nnmod(&shifted, n, &mut ctx).ok()?;
    Some(r2)
}

/// `-n0^-1 mod 2^bits` for odd `n0`, by Newton's iteration.
fn neg_inverse(n0: u64, bits: u32) -> u64 {
    let mut inv: u64 = 1;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
    }
    debug_assert_eq!(n0.wrapping_mul(inv) & ((1 << bits) - 1), 1);
    inv.wrapping_neg() & ((1 << bits) - 1)
}

/// Room for the 64-bit words of the longest number here (`MAX_BYTES`).
const MAX_WORDS: usize = MAX_BYTES.div_ceil(8) + 1;

/// Big-endian bytes to `B`-bit little-endian limbs (`out` zero-filled beyond;
/// bits beyond `out` dropped). Word by word: the bytes become 64-bit words,
/// each limb two shifts of them (byte by byte it cost 8% of a batch's
/// verification with the IFMA kernels).
fn to_limbs<const B: usize>(be: &[u8], out: &mut [u64]) {
    let mask = (1u64 << B) - 1;
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
        let (w, o) = ((B * j) / 64, (B * j) % 64);
        let lo = if w < n { words[w] >> o } else { 0 };
        // The limb's bits from the next word, when it straddles two.
        let hi = if o > 64 - B && w + 1 < n {
            words[w + 1] << (64 - o)
        } else {
            0
        };
        *limb = (lo | hi) & mask;
    }
}

/// `B`-bit limbs (fully reduced, below the modulus) to `out.len()` big-endian
/// bytes, word by word (see [`to_limbs`]).
fn from_limbs<const B: usize>(limbs: &[u64], out: &mut [u8]) {
    let mut words = [0u64; MAX_WORDS + 1];
    for (j, &l) in limbs.iter().enumerate() {
        let (w, o) = ((B * j) / 64, (B * j) % 64);
        if w >= MAX_WORDS {
            break;
        }
        words[w] |= l << o;
        if o > 64 - B {
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

/// A kernel's result `r` (below `2n`, `B`-bit limbs) reduced below `n` and
/// written to `out` as big-endian bytes.
fn reduce_into<const B: usize>(r: &mut [u64], n: &[u64], out: &mut [u8]) {
    if geq(r, n) {
        sub_in_place::<B>(r, n);
    }
    from_limbs::<B>(r, out);
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

/// `a -= b` on little-endian `B`-bit limbs, `a >= b`.
fn sub_in_place<const B: usize>(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let t = x.wrapping_sub(y).wrapping_sub(borrow);
        borrow = t >> 63;
        *x = t & ((1 << B) - 1);
    }
}

/// The SIMD kernels of the batch path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kernel {
    /// AVX-512 IFMA: 52-bit limbs, eight lanes per register (and the
    /// one-number kernel, [`public_op_one`]).
    Ifma,
    /// AVX2: 28-bit limbs, four lanes per register, two registers a limb.
    Avx2,
}

impl Kernel {
    /// The id the binding reports (`simdKernel()` in JavaScript).
    pub fn id(self) -> &'static str {
        match self {
            Kernel::Ifma => "avx512-ifma",
            Kernel::Avx2 => "avx2",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Ifma => "AVX-512 IFMA",
            Kernel::Avx2 => "AVX2",
        }
    }
}

/// For the kernels' tests: whether kernel `k` can be exercised here. Where it
/// cannot (the CPU lacks it), says so on the terminal — written to stderr
/// directly, past the test harness's capture — and returns `Ok(false)`: the
/// caller skips visibly. Under `CELERY_SIGN_EXPECT_IFMA=1` (CI on a CPU that
/// has IFMA) or `CELERY_SIGN_EXPECT_AVX2=1` that is an `Err` instead, so a
/// kernel test never passes without checking.
#[doc(hidden)]
pub fn kernel_testable(k: Kernel, test: &str) -> std::result::Result<bool, String> {
    if cpu_has(k) {
        return Ok(true);
    }
    let expect = match k {
        Kernel::Ifma => "CELERY_SIGN_EXPECT_IFMA",
        Kernel::Avx2 => "CELERY_SIGN_EXPECT_AVX2",
    };
    if std::env::var(expect).is_ok_and(|v| v.trim() == "1") {
        return Err(format!(
            "{test}: {expect}=1 but this CPU has no {}",
            k.name()
        ));
    }
    let line = format!(
        "SKIPPED {test}: the {} kernel is not exercised (this CPU has no {})\n",
        k.name(),
        k.name()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    Ok(false)
}

/// For the pipeline's tests: whether the batch path runs a SIMD kernel here.
/// Where it does not (`CELERY_SIGN_SIMD=0`, or the CPU has neither), says so
/// on stderr and returns `Ok(false)`; under `CELERY_SIGN_EXPECT_IFMA=1` or
/// `CELERY_SIGN_EXPECT_AVX2=1` a path without the expected kernel is an `Err`.
#[doc(hidden)]
pub fn kernels_testable(test: &str) -> std::result::Result<bool, String> {
    let k = kernel();
    let expected = |var: &str| std::env::var(var).is_ok_and(|v| v.trim() == "1");
    let off = simd_env().as_deref() == Some("0");
    if !off {
        if expected("CELERY_SIGN_EXPECT_IFMA") && k != Some(Kernel::Ifma) && simd_env().is_none() {
            return Err(format!(
                "{test}: CELERY_SIGN_EXPECT_IFMA=1 but the IFMA kernel is not in use"
            ));
        }
        if expected("CELERY_SIGN_EXPECT_AVX2") && k.is_none() {
            return Err(format!(
                "{test}: CELERY_SIGN_EXPECT_AVX2=1 but no SIMD kernel is in use"
            ));
        }
    }
    if let Some(k) = k {
        let line = format!("{test}: the batch path runs the {} kernel\n", k.name());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return Ok(true);
    }
    let why = if off {
        "CELERY_SIGN_SIMD=0"
    } else {
        "this CPU has neither AVX-512 IFMA nor AVX2"
    };
    let line = format!("SKIPPED {test}: the SIMD kernels are not exercised ({why})\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    Ok(false)
}

/// `CELERY_SIGN_SIMD`, trimmed and lower-cased, when set.
fn simd_env() -> Option<String> {
    std::env::var("CELERY_SIGN_SIMD")
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
}

const NOT_PROBED: u8 = 0;
const NONE: u8 = 1;
const IFMA: u8 = 2;
const AVX2: u8 = 3;
static KERNEL: AtomicU8 = AtomicU8::new(NOT_PROBED);

/// The kernel the batch path uses, chosen once: the best the CPU has, unless
/// `CELERY_SIGN_SIMD` says `0` (none) or `avx2` (AVX2 even where IFMA is).
pub fn kernel() -> Option<Kernel> {
    match KERNEL.load(Ordering::Relaxed) {
        IFMA => Some(Kernel::Ifma),
        AVX2 => Some(Kernel::Avx2),
        NONE => None,
        _ => {
            let k = match simd_env().as_deref() {
                Some("0") => None,
                Some("avx2") => Some(Kernel::Avx2).filter(|&k| cpu_has(k)),
                _ => [Kernel::Ifma, Kernel::Avx2]
                    .into_iter()
                    .find(|&k| cpu_has(k)),
            };
            let v = match k {
                Some(Kernel::Ifma) => IFMA,
                Some(Kernel::Avx2) => AVX2,
                None => NONE,
            };
            KERNEL.store(v, Ordering::Relaxed);
            k
        }
    }
}

/// Whether the batch path has a SIMD kernel ([`kernel`]).
pub fn available() -> bool {
    kernel().is_some()
}

/// Whether the one-number kernel ([`public_op_one`], IFMA) is in use.
pub fn one_available() -> bool {
    kernel() == Some(Kernel::Ifma)
}

/// Whether this CPU can run kernel `k`.
pub fn cpu_has(k: Kernel) -> bool {
    match k {
        Kernel::Ifma => cpu_has_ifma(),
        Kernel::Avx2 => avx2::cpu_has_avx2(),
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
/// length) with the kernel in use ([`kernel`]). All keys must share
/// [`MbKey::group`] and be [`MbKey::usable`]; at most [`LANES`] lanes. A lane
/// whose signature is not a number below its modulus gets `false` and its
/// output is left alone. Panics (a programming error) on a misuse above or
/// when [`available`] is false.
pub fn public_op(keys: &[&MbKey], sigs: &[&[u8]], out: &mut [&mut [u8]]) -> [bool; LANES] {
    let Some(k) = kernel() else {
        unreachable!("mb::public_op without a kernel (see mb::available)")
    };
    public_op_with(k, keys, sigs, out)
}

/// [`public_op`] with kernel `k` (which the CPU must have), whichever is in use.
#[doc(hidden)]
pub fn public_op_with(
    k: Kernel,
    keys: &[&MbKey],
    sigs: &[&[u8]],
    out: &mut [&mut [u8]],
) -> [bool; LANES] {
    assert!(cpu_has(k));
    assert!(!keys.is_empty() && keys.len() <= LANES);
    assert!(keys.len() == sigs.len() && keys.len() == out.len());
    let mut ok = [false; LANES];
    for (i, (key, sig)) in keys.iter().zip(sigs).enumerate() {
        ok[i] = key.accepts(sig);
    }
    match k {
        Kernel::Ifma => ifma_op(keys, sigs, out, &ok),
        Kernel::Avx2 => avx2_op(keys, sigs, out, &ok),
    }
    ok
}

/// The IFMA kernel over the lanes `ok` accepts.
fn ifma_op(keys: &[&MbKey], sigs: &[&[u8]], out: &mut [&mut [u8]], ok: &[bool; LANES]) {
    let group = (keys[0].limbs, keys[0].e);
    assert!(keys.iter().all(|k| (k.limbs, k.e) == group));
    // Lanes that fail the range check compute a dummy (zero) instead.
    let mut s = [[0u64; MAX_L]; LANES];
    let limbs = group.0;
    for (i, sig) in sigs.iter().enumerate() {
        if ok[i] {
            to_limbs::<52>(sig, &mut s[i][..limbs]);
        }
    }
    let mut res = [[0u64; MAX_L]; LANES];
    let lane_keys: [&MbKey; LANES] = std::array::from_fn(|i| keys[i.min(keys.len() - 1)]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller checked that the CPU has AVX-512F and IFMA.
    unsafe {
        match limbs {
            40 => ifma_kernel::<40>(&lane_keys, &s, &mut res),
            60 => ifma_kernel::<60>(&lane_keys, &s, &mut res),
            79 => ifma_kernel::<79>(&lane_keys, &s, &mut res),
            _ => unreachable!("MbKey::new only makes compiled sizes"),
        }
    }
    for (i, key) in keys.iter().enumerate() {
        if !ok[i] {
            continue;
        }
        reduce_into::<52>(&mut res[i][..limbs], &key.n[..limbs], out[i]);
    }
}

/// The AVX2 kernel over the lanes `ok` accepts.
fn avx2_op(keys: &[&MbKey], sigs: &[&[u8]], out: &mut [&mut [u8]], ok: &[bool; LANES]) {
    let l28: Vec<&Limbs28> = keys
        .iter()
        .map(|k| k.l28.as_deref())
        .collect::<Option<_>>()
        .unwrap_or_else(|| unreachable!("the AVX2 kernel takes only keys laid out for it"));
    let group = (l28[0].limbs, keys[0].e);
    assert!(l28.iter().zip(keys).all(|(l, k)| (l.limbs, k.e) == group));
    let limbs = group.0;
    let mut s = [[0u64; avx2::MAX_L]; LANES];
    for (i, sig) in sigs.iter().enumerate() {
        if ok[i] {
            to_limbs::<28>(sig, &mut s[i][..limbs]);
        }
    }
    let mut res = [[0u64; avx2::MAX_L]; LANES];
    let lane_keys: [&Limbs28; LANES] = std::array::from_fn(|i| l28[i.min(l28.len() - 1)]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller checked that the CPU has AVX2.
    unsafe {
        avx2::exp(&lane_keys, group.1, &s, &mut res)
    };
    for (i, l) in l28.iter().enumerate() {
        if !ok[i] {
            continue;
        }
        reduce_into::<28>(&mut res[i][..limbs], &l.n[..limbs], out[i]);
    }
}

/// Computes `sig^e mod n` for one signature into `out` (big-endian, the
/// key's length); `false` when `sig` is not a number below the modulus.
/// Here the limbs of the one number lie across the vectors (eight per
/// register), as in OpenSSL's `rsaz_amm52` code: about three times AWS-LC's
/// speed for one RSA-2048 signature. Panics when the CPU has no IFMA.
pub fn public_op_one(key: &MbKey, sig: &[u8], out: &mut [u8]) -> bool {
    assert!(cpu_has(Kernel::Ifma));
    if !key.accepts(sig) {
        return false;
    }
    let mut a = [0u64; MAX_L];
    to_limbs::<52>(sig, &mut a);
    let mut r = [0u64; MAX_L];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: checked above: the CPU has AVX-512F and IFMA.
    unsafe {
        match key.limbs.div_ceil(LANES) {
            5 => one_kernel::<5>(key, &a, &mut r),
            8 => one_kernel::<8>(key, &a, &mut r),
            10 => one_kernel::<10>(key, &a, &mut r),
            _ => unreachable!("MbKey::new only makes compiled sizes"),
        }
    }
    let limbs = key.limbs.next_multiple_of(LANES);
    reduce_into::<52>(&mut r[..limbs], &key.n[..limbs], out);
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
fn ifma_kernel<const L: usize>(
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
    /// Big-endian bytes to `b`-bit little-endian limbs (`out` zero-filled beyond).
    fn to_limbs_bytewise(b: u32, be: &[u8], out: &mut [u64]) {
        let mask = (1u64 << b) - 1;
        out.fill(0);
        let mut acc: u128 = 0;
        let mut have = 0u32;
        let mut j = 0;
        for &byte in be.iter().rev() {
            acc |= (byte as u128) << have;
            have += 8;
            if have >= b {
                if j < out.len() {
                    out[j] = (acc as u64) & mask;
                }
                j += 1;
                acc >>= b;
                have -= b;
            }
        }
        if have > 0 && j < out.len() {
            out[j] = acc as u64 & mask;
        }
    }

    /// `b`-bit limbs (fully reduced, below the modulus) to `out.len()` big-endian bytes.
    fn from_limbs_bytewise(b: u32, limbs: &[u64], out: &mut [u8]) {
        let mut acc: u128 = 0;
        let mut have = 0u32;
        let mut limbs = limbs.iter();
        for byte in out.iter_mut().rev() {
            if have < 8 {
                if let Some(&l) = limbs.next() {
                    acc |= (l as u128) << have;
                    have += b;
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
                    check_conversions::<52>(&be, limbs);
                }
                for limbs in [1, 5, 73, 74, 75, 110, 111] {
                    check_conversions::<28>(&be, limbs);
                }
            }
        }
    }

    fn check_conversions<const B: usize>(be: &[u8], limbs: usize) {
        let len = be.len();
        let mut a = [7u64; 111];
        let mut b = [9u64; 111];
        to_limbs::<B>(be, &mut a[..limbs]);
        to_limbs_bytewise(B as u32, be, &mut b[..limbs]);
        assert_eq!(
            a[..limbs],
            b[..limbs],
            "to_limbs::<{B}> len {len} limbs {limbs}"
        );
        for out_len in [len, len.saturating_sub(1), len + 1, 256] {
            if out_len > MAX_BYTES {
                continue;
            }
            let mut o1 = vec![3u8; out_len];
            let mut o2 = vec![5u8; out_len];
            from_limbs::<B>(&a[..limbs], &mut o1);
            from_limbs_bytewise(B as u32, &a[..limbs], &mut o2);
            assert_eq!(
                o1, o2,
                "from_limbs::<{B}> len {len} limbs {limbs} out {out_len}"
            );
        }
    }

    #[test]
    fn limbs_round_trip() {
        let be: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
        let mut limbs = [0u64; 40];
        to_limbs::<52>(&be, &mut limbs);
        let mut back = vec![0u8; 256];
        from_limbs::<52>(&limbs, &mut back);
        assert_eq!(be, back);
    }

    fn raw_public(rsa: &Rsa<openssl::pkey::Public>, sig: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; rsa.size() as usize];
        rsa.public_decrypt(sig, &mut out, Padding::NONE).ok()?;
        Some(out)
    }

    /// Keys no kernel takes go to AWS-LC: an even exponent (the AVX2 kernel ends on
    /// bit 0 of e as a multiplication), e = 1, an even modulus.
    #[test]
    fn declines_what_the_kernels_do_not_compute() {
        let mut p = BigNum::new().unwrap();
        let mut q = BigNum::new().unwrap();
        p.generate_prime(1024, false, None, None).unwrap();
        q.generate_prime(1024, false, None, None).unwrap();
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&p, &q, &mut BigNumContext::new().unwrap())
            .unwrap();
        let e = |v: u32| BigNum::from_u32(v).unwrap();
        assert!(MbKey::new(&n, &e(65537)).is_some());
        assert!(MbKey::new(&n, &e(3)).is_some());
        for even in [2, 4, 65536, 65538] {
            assert!(MbKey::new(&n, &e(even)).is_none(), "e = {even}");
        }
        assert!(MbKey::new(&n, &e(1)).is_none());
        let mut even_n = BigNum::new().unwrap();
        even_n.checked_add(&n, &e(1)).unwrap();
        assert!(MbKey::new(&even_n, &e(65537)).is_none());
    }

    /// Random signatures, and the edges, against AWS-LC's raw public operation.
    #[test]
    fn matches_the_raw_rsa_operation() {
        let run_ifma =
            kernel_testable(Kernel::Ifma, "mb::matches_the_raw_rsa_operation (IFMA)").unwrap();
        let run_avx2 =
            kernel_testable(Kernel::Avx2, "mb::matches_the_raw_rsa_operation (AVX2)").unwrap();
        if !run_ifma && !run_avx2 {
            return;
        }
        let mut checked = [0usize; 2];
        // Moduli made from primes, so odd sizes are covered too (3078 bits:
        // the AVX2 kernel's largest; 4104: the IFMA kernel's).
        for (pbits, qbits, e) in [
            (1024, 1024, 65537u32),
            (1536, 1536, 65537),
            (2048, 2048, 65537),
            (1024, 1023, 3),
            (1028, 1028, 65537),
            (512, 512, 17),
            (1539, 1539, 65537),
            (1540, 1540, 65537),
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
            // Out of range: the modulus itself, and all ones.
            sigs.push(rsa.n().to_vec());
            sigs.push(vec![0xff; len]);
            for (k, on) in [(Kernel::Ifma, run_ifma), (Kernel::Avx2, run_avx2)] {
                let usable = match k {
                    Kernel::Ifma => true,
                    Kernel::Avx2 => key.l28.is_some(),
                };
                assert_eq!(
                    usable,
                    k == Kernel::Ifma || bits <= 3078,
                    "{k:?} takes {bits} bits"
                );
                if !on || !usable {
                    continue;
                }
                for chunk in sigs.chunks(LANES) {
                    let keys = vec![&key; chunk.len()];
                    let ins: Vec<&[u8]> = chunk.iter().map(|s| s.as_slice()).collect();
                    let mut outs = vec![vec![0u8; len]; chunk.len()];
                    let mut refs: Vec<&mut [u8]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    let ok = public_op_with(k, &keys, &ins, &mut refs);
                    for (i, s) in chunk.iter().enumerate() {
                        let want = raw_public(&rsa, s);
                        assert_eq!(ok[i], want.is_some(), "{k:?} bits {bits}: range check");
                        if let Some(want) = &want {
                            assert_eq!(&outs[i], want, "{k:?} bits {bits}, e {e}");
                        }
                        if k == Kernel::Ifma {
                            let mut one = vec![0u8; len];
                            assert_eq!(public_op_one(&key, s, &mut one), want.is_some());
                            if let Some(want) = &want {
                                assert_eq!(&one, want, "one number: bits {bits}, e {e}");
                            }
                        }
                        checked[k as usize] += 1;
                    }
                }
            }
        }
        assert!(
            !run_ifma || checked[0] > 500,
            "IFMA lanes checked: {}",
            checked[0]
        );
        assert!(
            !run_avx2 || checked[1] > 350,
            "AVX2 lanes checked: {}",
            checked[1]
        );
    }
}
