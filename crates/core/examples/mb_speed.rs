//! Times the multi-buffer public operation against AWS-LC's raw one.
//! `cargo run --release --example mb_speed -p celery-sign-core`
use celery_sign_core::mb::{self, MbKey, LANES};
use openssl::rsa::{Padding, Rsa};
use std::time::Instant;

fn main() {
    for bits in [2048u32, 3072, 4096] {
        let rsa = Rsa::generate(bits).unwrap();
        let key = MbKey::new(rsa.n(), rsa.e()).unwrap();
        let len = key.len();
        let mut sig = vec![0u8; len];
        openssl::rand::rand_bytes(&mut sig).unwrap();
        sig[0] &= 0x7f;
        let n = 4000usize;
        let t = Instant::now();
        let mut out = vec![0u8; len];
        for _ in 0..n {
            rsa.public_decrypt(&sig, &mut out, Padding::NONE).unwrap();
        }
        let aws = n as f64 / t.elapsed().as_secs_f64();
        let mut outs = vec![vec![0u8; len]; LANES];
        let keys = [&key; LANES];
        let sigs = [sig.as_slice(); LANES];
        let t = Instant::now();
        for _ in 0..n / LANES {
            let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            mb::public_op(&keys, &sigs, &mut refs);
        }
        let x8 = (n / LANES * LANES) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n / LANES {
            let mut refs: Vec<&mut [u8]> =
                outs.iter_mut().take(1).map(|o| o.as_mut_slice()).collect();
            mb::public_op(&keys[..1], &sigs[..1], &mut refs);
        }
        let x1 = (n / LANES) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            mb::public_op_one(&key, &sig, &mut outs[1]);
        }
        let one = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(outs[1], out);
        assert_eq!(outs[0], out);
        println!(
            "RSA-{bits}: AWS-LC {aws:.0}/s, mb x8 {x8:.0}/s ({:.2}x), mb one lane {x1:.0}/s, one-number kernel {one:.0}/s ({:.2}x)",
            x8 / aws,
            one / aws
        );
    }
}
