//! The core's batch throughput without Node: `cargo run --release --example throughput -- [bits] [seconds]`.
//! RSA-PSS, SHA-256, batches of 4096 payloads with ~512-byte bodies, on the pool.

use celery_sign_core::batch::{self, Packed};
use celery_sign_core::{
    CertStore, Certificate, Digest, Opener, PrivateKey, Sealer, WireFormat, DEFAULT_MAX_PAYLOAD,
};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bits: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let secs: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let pkey = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "throughput").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pkey).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&pkey, MessageDigest::sha256()).unwrap();
    let cert = Arc::new(Certificate::from_pem(&b.build().to_pem().unwrap()).unwrap());
    let key = PrivateKey::from_pem(&pkey.private_key_to_pem_pkcs8().unwrap(), None).unwrap();
    let mut store = CertStore::new();
    store.add(Arc::clone(&cert)).unwrap();
    let sealer = Sealer::new(Arc::new(key), cert, Digest::Sha256, WireFormat::Celery55);
    let opener = Opener::new(Arc::new(store), Digest::Sha256, DEFAULT_MAX_PAYLOAD);

    let body = format!("[[\"{}\"], {{}}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}}]", "x".repeat(420));
    let bodies: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("{body}{i:08}").into_bytes())
        .collect();
    let bodies = Packed::from_items(&bodies);
    println!(
        "threads: {}, RSA-{bits}, body {} bytes",
        batch::threads().unwrap(),
        body.len() + 8
    );

    let t = Instant::now();
    let mut signed = 0usize;
    let mut payloads = Vec::new();
    while t.elapsed() < Duration::from_secs_f64(secs) {
        let out = sealer
            .seal_many("application/json", "utf-8", bodies.items())
            .unwrap();
        signed += out.len();
        if payloads.is_empty() {
            payloads = out.into_iter().map(|r| r.unwrap()).collect();
        }
    }
    println!(
        "seal_many:  {:>9.0} signs/s",
        signed as f64 / t.elapsed().as_secs_f64()
    );

    let packed = Packed::from_items(&payloads);
    let t = Instant::now();
    let mut verified = 0usize;
    while t.elapsed() < Duration::from_secs_f64(secs) {
        let out = opener.open_many(packed.items()).unwrap();
        assert!(out.results.iter().all(|r| r.is_ok()));
        verified += out.results.len();
    }
    println!(
        "open_many:  {:>9.0} verifies/s",
        verified as f64 / t.elapsed().as_secs_f64()
    );
}
