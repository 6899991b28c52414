//! Times the multi-buffer public operation, with each kernel this CPU has,
//! against AWS-LC's raw one: rounds interleaved, medians reported.
//! `cargo run --release --example mb_speed -p celery-sign-core`
use celery_sign_core::mb::{self, Kernel, MbKey, LANES};
use openssl::rsa::{Padding, Rsa};
use std::time::Instant;

const ROUNDS: usize = 11;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    for bits in [2048u32, 3072, 4096] {
        let rsa = Rsa::generate(bits).unwrap();
        let key = MbKey::new(rsa.n(), rsa.e()).unwrap();
        let len = key.len();
        let mut sig = vec![0u8; len];
        openssl::rand::rand_bytes(&mut sig).unwrap();
        sig[0] &= 0x7f;
        let mut want = vec![0u8; len];
        rsa.public_decrypt(&sig, &mut want, Padding::NONE).unwrap();
        let n = 800usize;
        let kernels: Vec<Kernel> = [Kernel::Ifma, Kernel::Avx2]
            .into_iter()
            .filter(|&k| mb::cpu_has(k))
            .filter(|&k| k == Kernel::Ifma || bits <= 3072)
            .collect();
        let mut aws = Vec::new();
        let mut x8: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
        let mut one = Vec::new();
        let mut outs = vec![vec![0u8; len]; LANES];
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let mut out = vec![0u8; len];
            for _ in 0..n {
                rsa.public_decrypt(&sig, &mut out, Padding::NONE).unwrap();
            }
            aws.push(n as f64 / t.elapsed().as_secs_f64());
            for (r, &k) in x8.iter_mut().zip(&kernels) {
                let keys = [&key; LANES];
                let sigs = [sig.as_slice(); LANES];
                let t = Instant::now();
                for _ in 0..n / LANES {
                    let mut refs: Vec<&mut [u8]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    mb::public_op_with(k, &keys, &sigs, &mut refs);
                }
                r.push((n / LANES * LANES) as f64 / t.elapsed().as_secs_f64());
                assert!(outs.iter().all(|o| *o == want), "{k:?}");
            }
            if mb::cpu_has(Kernel::Ifma) {
                let t = Instant::now();
                for _ in 0..n {
                    mb::public_op_one(&key, &sig, &mut outs[1]);
                }
                one.push(n as f64 / t.elapsed().as_secs_f64());
                assert_eq!(outs[1], want);
            }
        }
        let aws = median(aws);
        let mut line = format!("RSA-{bits}: AWS-LC {aws:.0}/s");
        for (r, k) in x8.into_iter().zip(&kernels) {
            let r = median(r);
            line += &format!(", {} x8 {r:.0}/s ({:.2}x)", k.name(), r / aws);
        }
        if !one.is_empty() {
            let r = median(one);
            line += &format!(", IFMA one-number {r:.0}/s ({:.2}x)", r / aws);
        }
        println!("{line}");
    }
}
