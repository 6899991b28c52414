//! The auth payload parser, both wire formats: `Opener::open_into` (the
//! unverified split, then the signature check) against a fixed store of four
//! certificates, `Opener::open` and `Opener::open_many` beside it.
//!
//! Input: one flags byte, then the payload (the base64 text as found on the
//! broker). Flags: bits 0-2 the digest (0 sha256, 1 sha1, 2 sha224, 3 sha384,
//! 4 sha512, else sha256); bit 3 the clock (a fixed day in 2026, or 2200 when
//! every certificate has expired); bit 4 also run `open` on the real clock and
//! `open_many` on a batch of the payload twice, and compare.
//!
//! Checks: nothing panics; an error carries one of the codes a payload can
//! earn; an accepted payload's fields are where the wire format puts them in
//! the payload's decoded bytes (decoded here independently, as Python's
//! non-validating b64decode does), its signer is in the store and in date;
//! packing the opened fields again (5.5, and 5.4 where it can carry them)
//! opens to the same fields; `open` and `open_many` agree with `open_into`.
#![no_main]

use base64_simd::STANDARD as B64;
use celery_sign_core::batch::Packed;
use celery_sign_core::envelope::decode_capacity;
use celery_sign_core::{
    pack, CertStore, Certificate, Digest, ErrorCode, Opened, Opener, Result, WireFormat,
    DEFAULT_MAX_PAYLOAD, SEP,
};
use libfuzzer_sys::fuzz_target;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The store: the demo RSA-2048 certificate (bench/keys), an RSA-1024 one (a
/// second signature length for the 5.4 split), one whose id is non-ASCII
/// (BMPString with surrogate pairs), and one that expired on 2026-11-30.
const CERTS: [&[u8]; 4] = [
    include_bytes!("../fixtures/demo-rsa2048.cert.pem"),
    include_bytes!("../fixtures/rsa1024.cert.pem"),
    include_bytes!("../fixtures/bmp-astral.cert.pem"),
    include_bytes!("../fixtures/expired.cert.pem"),
];

/// 2026-12-01T00:00:00Z: the expired certificate has expired, the others not.
const NOW_MS: i64 = 1_796_083_200_000;
/// 2200-01-01T00:00:00Z: every certificate has expired.
const LATER_MS: i64 = 7_258_118_400_000;

const DIGESTS: [Digest; 5] = [
    Digest::Sha256,
    Digest::Sha1,
    Digest::Sha224,
    Digest::Sha384,
    Digest::Sha512,
];

fn store() -> &'static Arc<CertStore> {
    static STORE: OnceLock<Arc<CertStore>> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut store = CertStore::new();
        for pem in CERTS {
            let cert = Certificate::from_pem(pem).expect("a fixture certificate loads");
            store.add(Arc::new(cert)).expect("fixture ids are distinct");
        }
        Arc::new(store)
    })
}

fn find_sep(hay: &[u8]) -> Option<usize> {
    hay.windows(2).position(|w| w == SEP)
}

/// Python's `base64.b64decode(payload)` (non-validating: bytes outside the
/// alphabet are dropped), written apart from the core's.
fn reference_decode(payload: &[u8]) -> Option<Vec<u8>> {
    let kept: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    B64.decode_to_vec(&kept).ok()
}

fn opens(opener: &Opener, payload: &[u8], now: i64) -> (Vec<u8>, Result<Opened>) {
    // Not zeroed: a reader of bytes it did not write gets garbage.
    let mut out = vec![0xa5u8; decode_capacity(payload.len())];
    let result = opener.open_into(payload, &mut out, now);
    (out, result)
}

/// The fields of an accepted payload, as bytes.
fn fields<'a>(buf: &'a [u8], o: &Opened) -> (&'a [u8], &'a [u8], &'a [u8]) {
    (
        &buf[o.content_type.clone()],
        &buf[o.content_encoding.clone()],
        &buf[o.body.clone()],
    )
}

/// Checks an accepted payload against its independently decoded bytes and
/// returns its signature as the payload carries it.
fn check_opened(store: &CertStore, raw: &[u8], buf: &[u8], o: &Opened, now: i64) -> Vec<u8> {
    let (ct, ce, body): (Range<usize>, Range<usize>, Range<usize>) = (
        o.content_type.clone(),
        o.content_encoding.clone(),
        o.body.clone(),
    );
    assert!(buf.len() >= raw.len());
    assert_eq!(
        &buf[..raw.len()],
        raw,
        "the buffer holds the decoded payload"
    );
    assert!(ct.start <= ct.end && ce.start <= ce.end && body.start <= body.end);
    assert_eq!(body.end, raw.len(), "the body runs to the end");
    assert_eq!(ct.end + 2, ce.start);
    assert_eq!(ce.end + 2, body.start);
    assert_eq!(&raw[ct.end..ce.start], SEP);
    assert_eq!(&raw[ce.end..body.start], SEP);
    assert!(ct.start >= 3, "two fields precede the content type");
    assert_eq!(&raw[ct.start - 2..ct.start], SEP);
    for text in [&raw[ct.clone()], &raw[ce.clone()]] {
        assert!(find_sep(text).is_none(), "a separator inside a field");
        assert!(
            std::str::from_utf8(text).is_ok(),
            "a field that is not UTF-8"
        );
    }
    assert_eq!(
        o.body_is_utf8,
        std::str::from_utf8(&raw[body.clone()]).is_ok()
    );

    let signer = &o.signer;
    let known = store
        .lookup(signer.id().as_bytes())
        .expect("the signer is in the store");
    assert!(Arc::ptr_eq(known, signer));
    assert!(!signer.has_expired_at(now), "an expired signer accepted");

    let id = signer.id().as_bytes();
    let first = find_sep(raw).expect("a first separator");
    assert!(
        first + 2 <= ct.start - 2,
        "the signature field lies before the content type"
    );
    match o.format {
        WireFormat::Celery55 => {
            let signer_field = &raw[..first];
            assert_eq!(B64.decode_to_vec(signer_field).ok().as_deref(), Some(id));
            let sig_field = &raw[first + 2..ct.start - 2];
            assert!(find_sep(sig_field).is_none());
            B64.decode_to_vec(sig_field)
                .expect("an accepted 5.5 signature is base64")
        }
        WireFormat::Celery54 => {
            assert_eq!(&raw[..first], id, "5.4: the raw signer id comes first");
            // Read as 5.5, the first field names no certificate.
            assert!(B64
                .decode_to_vec(id)
                .ok()
                .and_then(|v| store.lookup(&v))
                .is_none());
            let sig_start = id.len() + 2;
            let sig_end = sig_start + signer.signature_len();
            assert_eq!(
                sig_end + 2,
                ct.start,
                "5.4: the signature has the key's size"
            );
            assert!(
                find_sep(&raw[body]).is_none(),
                "5.4: a separator in the body"
            );
            raw[sig_start..sig_end].to_vec()
        }
    }
}

/// Packs the opened fields again in `format` and opens the result.
fn round_trip(
    opener: &Opener,
    now: i64,
    format: WireFormat,
    buf: &[u8],
    o: &Opened,
    signature: &[u8],
) {
    let (ct, ce, body) = fields(buf, o);
    let (ct, ce) = (
        std::str::from_utf8(ct).expect("checked"),
        std::str::from_utf8(ce).expect("checked"),
    );
    let packed = match pack(format, o.signer.id(), signature, ct, ce, body) {
        Ok(p) => p,
        // Only 5.4 refuses, and only what it cannot carry.
        Err(e) => {
            assert_eq!(format, WireFormat::Celery54, "5.5 refused to pack: {e}");
            assert_eq!(e.code, ErrorCode::MalformedPayload);
            assert!(find_sep(body).is_some() || std::str::from_utf8(body).is_err());
            return;
        }
    };
    let (buf2, again) = opens(opener, packed.as_bytes(), now);
    let again = again.unwrap_or_else(|e| panic!("re-packed as {format:?}, refused: {e}"));
    assert_eq!(again.format, format);
    assert!(Arc::ptr_eq(&again.signer, &o.signer));
    assert_eq!(fields(&buf2, &again), fields(buf, o));
}

/// An `open`, `open_into` or `open_many` answer, comparable across them.
fn outcome(
    buf: &[u8],
    r: &Result<Opened>,
) -> std::result::Result<(String, WireFormat, Vec<u8>, Vec<u8>, Vec<u8>), ErrorCode> {
    match r {
        Ok(o) => {
            let (ct, ce, body) = fields(buf, o);
            Ok((
                o.signer.id().to_owned(),
                o.format,
                ct.to_vec(),
                ce.to_vec(),
                body.to_vec(),
            ))
        }
        Err(e) => Err(e.code),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let store = store();
    let digest = DIGESTS
        .get(usize::from(flags & 7))
        .copied()
        .unwrap_or_default();
    let now = if flags & 8 == 0 { NOW_MS } else { LATER_MS };
    let opener = Opener::new(Arc::clone(store), digest, DEFAULT_MAX_PAYLOAD);

    let (buf, result) = opens(&opener, payload, now);
    let raw = reference_decode(payload);
    match &result {
        Ok(o) => {
            let raw = raw.expect("an accepted payload is base64");
            let signature = check_opened(store, &raw, &buf, o, now);
            round_trip(
                &opener,
                now,
                WireFormat::Celery55,
                &buf,
                o,
                &signature,
            );
            if o.format == WireFormat::Celery54 {
                round_trip(
                    &opener,
                    now,
                    WireFormat::Celery54,
                    &buf,
                    o,
                    &signature,
                );
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::MalformedPayload
                        | ErrorCode::UnknownCertificate
                        | ErrorCode::CertificateExpired
                        | ErrorCode::BadSignature
                ),
                "unexpected code {:?}: {}",
                e.code,
                e.message
            );
            if payload.is_empty() || raw.is_none() {
                assert_eq!(e.code, ErrorCode::MalformedPayload, "{}", e.message);
            }
        }
    }

    // The real clock's answers match the fixed clock's while every
    // certificate has the same standing at both.
    let real = celery_sign_core::cert::now_unix_ms();
    if flags & 16 != 0
        && store
            .iter()
            .all(|c| c.has_expired_at(real) == c.has_expired_at(now))
    {
        let expected = outcome(&buf, &result);
        let (buf1, one) = match opener.open(payload) {
            Ok((b, o)) => (b, Ok(o)),
            Err(e) => (Vec::new(), Err(e)),
        };
        assert_eq!(
            outcome(&buf1, &one),
            expected,
            "open differs from open_into"
        );
        // Twice in one batch: the multi-buffer kernel takes a pair of lanes.
        let batch = Packed::from_items([payload, payload]);
        // (Err only when the pool cannot start: a fact of the machine.)
        if let Ok(many) = opener.open_many(batch.items()) {
            assert_eq!(many.results.len(), 2);
            for r in &many.results {
                assert_eq!(
                    outcome(&many.buffer, r),
                    expected,
                    "open_many differs from open_into"
                );
            }
        }
    }
});
