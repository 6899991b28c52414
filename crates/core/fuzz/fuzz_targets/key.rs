//! PEM private keys: `PrivateKey::from_pem`, with and without a password
//! (PKCS#1, PKCS#8, encrypted PKCS#8, legacy `Proc-Type: 4,ENCRYPTED`, all
//! through AWS-LC).
//!
//! Input: a first byte `n`, then the data. `n = 0`: no password, the rest is
//! the PEM text; otherwise the next `n - 1` bytes (or what there is) are the
//! password, and the rest is the PEM text.
//!
//! Checks: nothing panics or aborts; a refusal carries `ERR_INVALID_KEY` or
//! `ERR_UNSUPPORTED_KEY_TYPE` and quotes neither the password nor a line of
//! the key; an accepted key has a size that matches its bits and signs (RSA-PSS,
//! SHA-256) a signature of that size.
#![no_main]

use celery_sign_core::{Digest, ErrorCode, PrivateKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (password, pem) = match n {
        0 => (None, rest),
        _ => {
            let len = usize::from(n - 1).min(rest.len());
            (Some(&rest[..len]), &rest[len..])
        }
    };
    match PrivateKey::from_pem(pem, password) {
        Ok(key) => {
            assert!(key.bits() > 0);
            assert_eq!(key.size(), (key.bits() as usize).div_ceil(8));
            // Signing costs a private-key operation: keep to keys of usual sizes.
            if key.bits() <= 4096 {
                match key.sign(b"celery-sign fuzz", Digest::Sha256) {
                    Ok(sig) => assert_eq!(sig.len(), key.size()),
                    Err(e) => assert_eq!(e.code, ErrorCode::InvalidKey, "{}", e.message),
                }
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::InvalidKey | ErrorCode::UnsupportedKeyType
                ),
                "unexpected code {:?}: {}",
                e.code,
                e.message
            );
            // Only secrets no fixed wording can contain: 20 bytes or more
            // without white space (a message's words are shorter).
            let message = e.message.as_bytes();
            let quotes = |secret: &[u8]| {
                secret.len() >= 20
                    && !secret.iter().any(u8::is_ascii_whitespace)
                    && message.windows(secret.len()).any(|w| w == secret)
            };
            if let Some(pw) = password {
                assert!(
                    !quotes(pw),
                    "the message quotes the password: {}",
                    e.message
                );
            }
            for line in pem.split(|&b| b == b'\n').map(<[u8]>::trim_ascii) {
                if !line.starts_with(b"-----") {
                    assert!(!quotes(line), "the message quotes the key: {}", e.message);
                }
            }
        }
    }
});
