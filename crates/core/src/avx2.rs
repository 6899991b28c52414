//! The RSA public operation `s^e mod n` for eight signatures at once with
//! AVX2 (multi-buffer, 28-bit limbs): the path of CPUs without AVX-512 IFMA.
//!
//! The same almost-Montgomery multiplication as the IFMA kernels (`mb`), with
//! `vpmuludq` (four 32 x 32 -> 64-bit products per instruction) in place of
//! `vpmadd52`: each 256-bit register holds one 28-bit limb of four numbers,
//! and two registers per limb make the eight lanes. 28-bit limbs leave room
//! in each 64-bit accumulator for every product of a column without a carry
//! pass (see `mont_mul`). Public data only (signatures and public keys), so
//! written for speed, not constant time; checked against AWS-LC's raw RSA
//! operation by `mb`'s tests. `mb` lays the keys out and dispatches here.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub(crate) const BITS: u32 = 28;
pub(crate) const MASK: u64 = (1 << BITS) - 1;
/// Limb counts compiled: 28 L >= bits + 2 (R > 4n) for 2048 and 3072-bit keys.
/// Larger L would overflow the accumulators (L 2^57 < 2^64 needs L <= 127).
pub(crate) const SIZES: [usize; 2] = [74, 110];
pub(crate) const MAX_L: usize = 110;
/// Lanes per call: two vectors of four.
pub const LANES: usize = 8;

/// A key's numbers in 28-bit limbs.
#[derive(Clone)]
pub(crate) struct Limbs28 {
    pub(crate) limbs: usize,
    pub(crate) n: [u64; MAX_L],
    pub(crate) rr: [u64; MAX_L],
    pub(crate) k0: u64,
}

/// Whether the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) fn cpu_has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn cpu_has_avx2() -> bool {
    false
}

/// `res[i] = s[i]^e mod n_i`, below `2 n_i` (reduced by the caller), for
/// the eight lanes. # Safety: the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn exp(
    keys: &[&Limbs28; LANES],
    e: u64,
    s: &[[u64; MAX_L]; LANES],
    res: &mut [[u64; MAX_L]; LANES],
) {
    // SAFETY: the caller checked AVX2.
    unsafe {
        match keys[0].limbs {
            74 => kernel::<74, 149>(keys, e, s, res),
            110 => kernel::<110, 221>(keys, e, s, res),
            _ => unreachable!("only compiled sizes are laid out"),
        }
    }
}

/// One limb of the eight lanes.
#[cfg(target_arch = "x86_64")]
type V2 = [__m256i; 2];

#[cfg(target_arch = "x86_64")]
macro_rules! mul {
    ($x:expr, $y:expr) => {
        _mm256_mul_epu32($x, $y)
    };
}
#[cfg(target_arch = "x86_64")]
macro_rules! add {
    ($x:expr, $y:expr) => {
        _mm256_add_epi64($x, $y)
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose<const L: usize>(rows: [&[u64; MAX_L]; LANES]) -> [V2; L] {
    std::array::from_fn(|j| {
        let lane: [u64; LANES] = std::array::from_fn(|i| rows[i][j]);
        // SAFETY: reads 32 bytes twice from an array of eight u64.
        unsafe {
            [
                _mm256_loadu_si256(lane.as_ptr().cast()),
                _mm256_loadu_si256(lane[4..].as_ptr().cast()),
            ]
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn kernel<const L: usize, const A: usize>(
    keys: &[&Limbs28; LANES],
    e: u64,
    s: &[[u64; MAX_L]; LANES],
    res: &mut [[u64; MAX_L]; LANES],
) {
    let n: [V2; L] = transpose(std::array::from_fn(|i| &keys[i].n));
    let rr: [V2; L] = transpose(std::array::from_fn(|i| &keys[i].rr));
    let a: [V2; L] = transpose(std::array::from_fn(|i| &s[i]));
    let k0_lanes: [u64; LANES] = std::array::from_fn(|i| keys[i].k0);
    // SAFETY: reads 32 bytes twice from an array of eight u64.
    let k0 = unsafe {
        [
            _mm256_loadu_si256(k0_lanes.as_ptr().cast()),
            _mm256_loadu_si256(k0_lanes[4..].as_ptr().cast()),
        ]
    };
    let zero = [_mm256_setzero_si256(); 2];
    let mut am = [zero; L];
    mont_mul::<L, A>(&mut am, &a, &rr, &n, k0);
    let mut x = am;
    let mut t = [zero; L];
    // e is odd (`MbKey::new`): bit 0 is left for the last step below.
    for bit in (1..63 - e.leading_zeros()).rev() {
        mont_mul::<L, A>(&mut t, &x, &x, &n, k0);
        if (e >> bit) & 1 == 1 {
            mont_mul::<L, A>(&mut x, &t, &am, &n, k0);
        } else {
            x = t;
        }
    }
    // The last multiplication takes the signature itself, not its Montgomery
    // form: (s^(e-1) R) s R^-1 = s^e, out of the domain without a
    // multiplication by 1 (18 multiplications for e = 65537, not 19).
    mont_mul::<L, A>(&mut t, &x, &x, &n, k0);
    mont_mul::<L, A>(&mut x, &t, &a, &n, k0);
    let t = x;
    for (j, v) in t.iter().enumerate() {
        let mut lane = [0u64; LANES];
        // SAFETY: writes 32 bytes twice into an array of eight u64.
        unsafe {
            _mm256_storeu_si256(lane.as_mut_ptr().cast(), v[0]);
            _mm256_storeu_si256(lane[4..].as_mut_ptr().cast(), v[1]);
        }
        for i in 0..LANES {
            res[i][j] = lane[i];
        }
    }
}

/// `r = a b R^-1 mod n`, up to `2n`, for normalized inputs below `2n`, with
/// `R = 2^(28 L) > 4n`. Column `p` of the accumulator gathers the products of
/// at most `L` steps, two of them (below 2^56 each) per step, plus a carry:
/// below `L 2^57 + 2^37 < 2^64` for `L <= 127`. Steps go in blocks of three
/// (`steps`): six products per load and store of a column.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn mont_mul<const L: usize, const A: usize>(
    r: &mut [V2; L],
    a: &[V2; L],
    b: &[V2; L],
    n: &[V2; L],
    k0: V2,
) {
    const { assert!(A == 2 * L + 1) };
    let zero = _mm256_setzero_si256();
    let mut acc = [[zero; 2]; A];
    let mut i = 0;
    while i + 3 <= L {
        steps::<L, A, 3>(&mut acc, i, a, b, n, k0);
        i += 3;
    }
    while i + 2 <= L {
        steps::<L, A, 2>(&mut acc, i, a, b, n, k0);
        i += 2;
    }
    if i < L {
        steps::<L, A, 1>(&mut acc, i, a, b, n, k0);
    }
    let mask = _mm256_set1_epi64x(MASK as i64);
    let mut c = [zero; 2];
    for j in 0..L {
        for h in 0..2 {
            let t = add!(acc[L + j][h], c[h]);
            r[j][h] = _mm256_and_si256(t, mask);
            c[h] = _mm256_srli_epi64::<28>(t);
        }
    }
}

/// Steps `i .. i + S` of `mont_mul`: first the columns `i .. i + S`, where
/// each step's `u` is found in turn, then one pass over the columns above
/// adding all `S` steps' products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn steps<const L: usize, const A: usize, const S: usize>(
    acc: &mut [V2; A],
    i: usize,
    a: &[V2; L],
    b: &[V2; L],
    n: &[V2; L],
    k0: V2,
) {
    let zero = _mm256_setzero_si256();
    let mask = _mm256_set1_epi64x(MASK as i64);
    let bs: [V2; S] = std::array::from_fn(|s| b[i + s]);
    let mut us = [[zero; 2]; S];
    for s in 0..S {
        for h in 0..2 {
            let mut t = add!(acc[i + s][h], mul!(a[0][h], bs[s][h]));
            for q in 0..s {
                t = add!(
                    t,
                    add!(mul!(a[s - q][h], bs[q][h]), mul!(n[s - q][h], us[q][h]))
                );
            }
            us[s][h] = _mm256_and_si256(mul!(t, k0[h]), mask);
            let c = _mm256_srli_epi64::<28>(add!(t, mul!(n[0][h], us[s][h])));
            acc[i + s + 1][h] = add!(acc[i + s + 1][h], c);
        }
    }
    for h in 0..2 {
        // The limbs of a and n this column meets, a[j - q] and n[j - q], kept
        // in registers as j moves up (one new limb of each per column).
        let bq: [__m256i; S] = std::array::from_fn(|q| bs[q][h]);
        let uq: [__m256i; S] = std::array::from_fn(|q| us[q][h]);
        let mut aw: [__m256i; S] = std::array::from_fn(|q| a[S - 1 - q][h]);
        let mut nw: [__m256i; S] = std::array::from_fn(|q| n[S - 1 - q][h]);
        for j in S..L {
            for q in (1..S).rev() {
                aw[q] = aw[q - 1];
                nw[q] = nw[q - 1];
            }
            aw[0] = a[j][h];
            nw[0] = n[j][h];
            let mut t = acc[i + j][h];
            for q in 0..S {
                t = add!(t, add!(mul!(aw[q], bq[q]), mul!(nw[q], uq[q])));
            }
            acc[i + j][h] = t;
        }
    }
    // The columns past the top limb that the later steps still reach.
    for t in 0..S - 1 {
        for h in 0..2 {
            let mut x = acc[i + L + t][h];
            for q in t + 1..S {
                x = add!(
                    x,
                    add!(
                        mul!(a[L + t - q][h], bs[q][h]),
                        mul!(n[L + t - q][h], us[q][h])
                    )
                );
            }
            acc[i + L + t][h] = x;
        }
    }
}
