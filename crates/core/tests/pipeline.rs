//! Core behaviour: signing as Celery does, both wire formats, every refusal
//! with its code, and batches that keep every result in its place.

use celery_sign_core::batch::{self, Packed};
use celery_sign_core::envelope::{self, SEP};
use celery_sign_core::{
    CertStore, Certificate, Digest, ErrorCode, Opener, PrivateKey, Sealer, WireFormat,
};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::x509::{X509Builder, X509NameBuilder};
use std::sync::{Arc, OnceLock};

struct Identity {
    pkey: PKey<Private>,
    key: Arc<PrivateKey>,
    cert: Arc<Certificate>,
    cert_pem: Vec<u8>,
}

fn make_identity(bits: u32, cn: &str, serial: u32, days_from_now: (i64, i64)) -> Identity {
    let pkey = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    name.append_entry_by_text("O", "Celery Sign Tests").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pkey).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + days_from_now.0 * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + days_from_now.1 * 86400).unwrap())
        .unwrap();
    b.sign(&pkey, MessageDigest::sha256()).unwrap();
    let cert_pem = b.build().to_pem().unwrap();
    let key =
        Arc::new(PrivateKey::from_pem(&pkey.private_key_to_pem_pkcs8().unwrap(), None).unwrap());
    let cert = Arc::new(Certificate::from_pem(&cert_pem).unwrap());
    Identity {
        pkey,
        key,
        cert,
        cert_pem,
    }
}

fn alice() -> &'static Identity {
    static A: OnceLock<Identity> = OnceLock::new();
    A.get_or_init(|| make_identity(2048, "alice", 1001, (-1, 30)))
}

fn bob() -> &'static Identity {
    static B: OnceLock<Identity> = OnceLock::new();
    B.get_or_init(|| make_identity(2048, "bob", 1002, (-1, 30)))
}

fn store_of(ids: &[&Identity]) -> Arc<CertStore> {
    let mut s = CertStore::new();
    for id in ids {
        s.add(Arc::clone(&id.cert)).unwrap();
    }
    Arc::new(s)
}

/// Signs as `id` (the key of `key_of`, so a forgery is one line).
fn sealer_of(id: &Identity, key_of: &Identity, format: WireFormat, digest: Digest) -> Sealer {
    Sealer::new(
        Arc::clone(&key_of.key),
        Arc::clone(&id.cert),
        digest,
        format,
    )
}

fn seal(id: &Identity, format: WireFormat, digest: Digest, body: &[u8]) -> String {
    sealer_of(id, id, format, digest)
        .seal("application/json", "utf-8", body)
        .unwrap()
}

fn opener(store: &Arc<CertStore>, digest: Digest, max_payload: usize) -> Opener {
    Opener::new(Arc::clone(store), digest, max_payload)
}

fn open_code(store: &Arc<CertStore>, payload: &[u8]) -> ErrorCode {
    opener(store, Digest::Sha256, envelope::DEFAULT_MAX_PAYLOAD)
        .open(payload)
        .unwrap_err()
        .code
}

fn b64(data: &[u8]) -> String {
    openssl::base64::encode_block(data)
}

fn unb64(text: &str) -> Vec<u8> {
    openssl::base64::decode_block(text).unwrap()
}

#[test]
fn celery_id_is_issuer_values_then_serial() {
    assert_eq!(alice().cert.id(), "alice Celery Sign Tests 1001");
    assert_eq!(alice().cert.issuer(), "alice Celery Sign Tests");
    assert_eq!(alice().cert.serial(), "1001");
    assert_eq!(alice().cert.bits(), 2048);
}

#[test]
fn signs_with_maximum_salt_length() {
    let sig = alice().key.sign(b"body", Digest::Sha256).unwrap();
    let verify_with = |salt: i32| {
        let mut v = Verifier::new(MessageDigest::sha256(), &alice().pkey).unwrap();
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)).unwrap();
        v.verify_oneshot(&sig, b"body").unwrap_or(false)
    };
    // emLen - hLen - 2 = 256 - 32 - 2
    assert!(verify_with(222));
    assert!(!verify_with(32));
}

#[test]
fn verifies_any_salt_length() {
    for salt in [0, 20, 32, 222] {
        let mut s = Signer::new(MessageDigest::sha256(), &alice().pkey).unwrap();
        s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        s.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)).unwrap();
        let sig = s.sign_oneshot_to_vec(b"body").unwrap();
        alice().cert.verify(b"body", &sig, Digest::Sha256).unwrap();
    }
}

#[test]
fn refuses_pkcs1v15_signature() {
    let mut s = Signer::new(MessageDigest::sha256(), &alice().pkey).unwrap();
    s.set_rsa_padding(Padding::PKCS1).unwrap();
    let sig = s.sign_oneshot_to_vec(b"body").unwrap();
    let err = alice()
        .cert
        .verify(b"body", &sig, Digest::Sha256)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadSignature);
}

#[test]
fn round_trips_every_digest_and_format() {
    let store = store_of(&[alice(), bob()]);
    for digest in [
        Digest::Sha1,
        Digest::Sha224,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha512,
    ] {
        for format in [WireFormat::Celery55, WireFormat::Celery54] {
            let payload = seal(alice(), format, digest, br#"{"a": 1}"#);
            let (buf, o) = opener(&store, digest, 1 << 20)
                .open(payload.as_bytes())
                .unwrap();
            assert_eq!(&buf[o.body.clone()], br#"{"a": 1}"#);
            assert_eq!(&buf[o.content_type.clone()], b"application/json");
            assert_eq!(&buf[o.content_encoding.clone()], b"utf-8");
            assert_eq!(o.signer.id(), alice().cert.id());
            assert_eq!(o.format, format);
            // A wrong digest is a bad signature.
            let other = if digest == Digest::Sha256 {
                Digest::Sha512
            } else {
                Digest::Sha256
            };
            let err = opener(&store, other, 1 << 20)
                .open(payload.as_bytes())
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::BadSignature);
        }
    }
}

#[test]
fn wire_layout_matches_celery() {
    let p55 = unb64(&seal(
        alice(),
        WireFormat::Celery55,
        Digest::Sha256,
        b"BODY",
    ));
    let mut parts = Vec::new();
    let mut rest: &[u8] = &p55;
    for _ in 0..4 {
        let at = rest.windows(2).position(|w| w == SEP).unwrap();
        parts.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    parts.push(rest);
    assert_eq!(
        unb64(std::str::from_utf8(parts[0]).unwrap()),
        alice().cert.id().as_bytes()
    );
    assert_eq!(unb64(std::str::from_utf8(parts[1]).unwrap()).len(), 256);
    assert_eq!(parts[2], b"application/json");
    assert_eq!(parts[3], b"utf-8");
    assert_eq!(parts[4], b"BODY");

    let p54 = unb64(&seal(
        alice(),
        WireFormat::Celery54,
        Digest::Sha256,
        b"BODY",
    ));
    let id = alice().cert.id().as_bytes();
    assert_eq!(&p54[..id.len()], id);
    assert_eq!(&p54[id.len()..id.len() + 2], SEP);
    let after_sig = id.len() + 2 + 256;
    assert_eq!(
        &p54[after_sig..],
        b"\x00\x01application/json\x00\x01utf-8\x00\x01BODY"
    );
}

#[test]
fn body_may_contain_the_separator_in_the_new_format_only() {
    let store = store_of(&[alice()]);
    let body = b"a\x00\x01b\x00\x01c";
    let p = seal(alice(), WireFormat::Celery55, Digest::Sha256, body);
    let (buf, o) = opener(&store, Digest::Sha256, 1 << 20)
        .open(p.as_bytes())
        .unwrap();
    assert_eq!(&buf[o.body], body);
    let err = sealer_of(alice(), alice(), WireFormat::Celery54, Digest::Sha256)
        .seal("a", "b", body)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::MalformedPayload);
}

#[test]
fn empty_body_round_trips() {
    let store = store_of(&[alice()]);
    for format in [WireFormat::Celery55, WireFormat::Celery54] {
        let p = seal(alice(), format, Digest::Sha256, b"");
        let (_, o) = opener(&store, Digest::Sha256, 1 << 20)
            .open(p.as_bytes())
            .unwrap();
        assert!(o.body.is_empty());
    }
}

#[test]
fn refusals_have_their_codes() {
    let store = store_of(&[alice()]);
    let good = seal(alice(), WireFormat::Celery55, Digest::Sha256, b"{\"x\": 1}");
    let raw = unb64(&good);

    // flipped signature bit
    let mut flipped = raw.clone();
    let sig_b64_start = raw.windows(2).position(|w| w == SEP).unwrap() + 2;
    let sig_field_end = sig_b64_start
        + raw[sig_b64_start..]
            .windows(2)
            .position(|w| w == SEP)
            .unwrap();
    let mut sig = unb64(std::str::from_utf8(&raw[sig_b64_start..sig_field_end]).unwrap());
    sig[17] ^= 0x04;
    flipped.splice(sig_b64_start..sig_field_end, b64(&sig).into_bytes());
    assert_eq!(
        open_code(&store, b64(&flipped).as_bytes()),
        ErrorCode::BadSignature
    );

    // tampered body
    let mut tampered = raw.clone();
    *tampered.last_mut().unwrap() = b'}' ^ 1;
    assert_eq!(
        open_code(&store, b64(&tampered).as_bytes()),
        ErrorCode::BadSignature
    );

    // truncated body
    assert_eq!(
        open_code(&store, b64(&raw[..raw.len() - 3]).as_bytes()),
        ErrorCode::BadSignature
    );

    // unknown signer
    let bob_payload = seal(bob(), WireFormat::Celery55, Digest::Sha256, b"{}");
    assert_eq!(
        open_code(&store, bob_payload.as_bytes()),
        ErrorCode::UnknownCertificate
    );
    let bob54 = seal(bob(), WireFormat::Celery54, Digest::Sha256, b"{}");
    assert_eq!(
        open_code(&store, bob54.as_bytes()),
        ErrorCode::UnknownCertificate
    );

    // signed by bob, claiming to be alice
    let both = store_of(&[alice(), bob()]);
    let forged = sealer_of(alice(), bob(), WireFormat::Celery55, Digest::Sha256)
        .seal("application/json", "utf-8", b"{}")
        .unwrap();
    assert_eq!(open_code(&both, forged.as_bytes()), ErrorCode::BadSignature);

    // not base64, empty, too few fields
    assert_eq!(
        open_code(&store, b"not base64!"),
        ErrorCode::MalformedPayload
    );
    assert_eq!(open_code(&store, b""), ErrorCode::MalformedPayload);
    assert_eq!(
        open_code(&store, b64(b"no separators at all").as_bytes()),
        ErrorCode::MalformedPayload
    );
    let id = b64(alice().cert.id().as_bytes());
    let few = format!("{id}\x00\x01c2ln\x00\x01application/json");
    assert_eq!(
        open_code(&store, b64(few.as_bytes()).as_bytes()),
        ErrorCode::MalformedPayload
    );
    // the 5.4 layout cut short inside the signature
    let id54 = alice().cert.id().as_bytes();
    let short54 = [id54, SEP, &[7u8; 100]].concat();
    assert_eq!(
        open_code(&store, b64(&short54).as_bytes()),
        ErrorCode::MalformedPayload
    );

    // oversize
    let err = opener(&store, Digest::Sha256, good.len() - 1)
        .open(good.as_bytes())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);
}

#[test]
fn expired_certificate_refuses_at_verification() {
    let old = make_identity(1024, "old", 7, (-30, -1));
    assert!(old.cert.has_expired());
    let store = store_of(&[&old]);
    let p = seal(&old, WireFormat::Celery55, Digest::Sha256, b"{}");
    assert_eq!(
        open_code(&store, p.as_bytes()),
        ErrorCode::CertificateExpired
    );
    assert!(!Certificate::from_pem(&old.cert_pem)
        .unwrap()
        .has_expired_at(0));
}

#[test]
fn not_yet_valid_certificate_refuses_at_verification() {
    let soon = make_identity(1024, "soon", 8, (1, 30));
    let cert = Certificate::from_pem(&soon.cert_pem).unwrap();
    assert!(!cert.has_expired());
    assert!(cert.is_not_yet_valid_at(super_now_ms()));
    assert!(!cert.is_not_yet_valid_at(cert.not_before() * 1000));
    assert!(cert.is_not_yet_valid_at(cert.not_before() * 1000 - 1));
    assert!(cert.not_before() < cert.not_after());
    let store = store_of(&[&soon]);
    for format in [WireFormat::Celery55, WireFormat::Celery54] {
        let p = seal(&soon, format, Digest::Sha256, b"{}");
        let err = opener(&store, Digest::Sha256, 1 << 20)
            .open(p.as_bytes())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::CertificateExpired);
        assert!(
            err.message.starts_with("Certificate not yet valid: "),
            "{}",
            err.message
        );
        let packed = Packed::from_items(vec![p.as_bytes(); 3]);
        let out = opener(&store, Digest::Sha256, 1 << 20)
            .open_many(packed.items())
            .unwrap();
        assert_eq!(out.results.len(), 3);
        for r in out.results {
            assert_eq!(r.unwrap_err().code, ErrorCode::CertificateExpired);
        }
    }
    let sig = {
        let mut signer = Signer::new(MessageDigest::sha256(), &soon.pkey).unwrap();
        signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::MAXIMUM_LENGTH)
            .unwrap();
        signer.update(b"data").unwrap();
        signer.sign_to_vec().unwrap()
    };
    assert_eq!(
        cert.verify(b"data", &sig, Digest::Sha256).unwrap_err().code,
        ErrorCode::CertificateExpired
    );
    assert!(cert.verify_signature(b"data", &sig, Digest::Sha256).is_ok());
}

fn super_now_ms() -> i64 {
    celery_sign_core::cert::now_unix_ms()
}

#[test]
fn duplicate_certificates_refused() {
    let mut store = CertStore::new();
    store.add(Arc::clone(&alice().cert)).unwrap();
    let again = Arc::new(Certificate::from_pem(&alice().cert_pem).unwrap());
    assert_eq!(
        store.add(again).unwrap_err().code,
        ErrorCode::DuplicateCertificate
    );
}

#[test]
fn keys_refuse_wrong_type_and_bad_passwords() {
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let ec_pem = PKey::from_ec_key(ec)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    assert_eq!(
        PrivateKey::from_pem(&ec_pem, None).unwrap_err().code,
        ErrorCode::UnsupportedKeyType
    );

    let enc = alice()
        .pkey
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
        .unwrap();
    assert!(PrivateKey::from_pem(&enc, Some(b"s3cret")).is_ok());
    let wrong = PrivateKey::from_pem(&enc, Some(b"nope")).unwrap_err();
    assert_eq!(wrong.code, ErrorCode::InvalidKey);
    assert!(!wrong.message.contains("s3cret") && !wrong.message.contains("nope"));
    assert_eq!(
        PrivateKey::from_pem(&enc, None).unwrap_err().code,
        ErrorCode::InvalidKey
    );
    assert_eq!(
        PrivateKey::from_pem(b"garbage", None).unwrap_err().code,
        ErrorCode::InvalidKey
    );
    let plain = alice().pkey.private_key_to_pem_pkcs8().unwrap();
    assert_eq!(
        PrivateKey::from_pem(&plain, Some(b"x")).unwrap_err().code,
        ErrorCode::InvalidKey
    );
    let pkcs1 = alice().pkey.rsa().unwrap().private_key_to_pem().unwrap();
    assert!(PrivateKey::from_pem(&pkcs1, None).is_ok());
    let legacy = alice()
        .pkey
        .rsa()
        .unwrap()
        .private_key_to_pem_passphrase(openssl::symm::Cipher::des_ede3_cbc(), b"pw")
        .unwrap();
    assert!(String::from_utf8_lossy(&legacy).contains("Proc-Type: 4,ENCRYPTED"));
    assert!(PrivateKey::from_pem(&legacy, Some(b"pw")).is_ok());
    // the key's Debug never shows material
    assert_eq!(format!("{:?}", alice().key), "PrivateKey { bits: 2048 }");
}

#[test]
fn batch_keeps_every_result_in_place() {
    let store = store_of(&[alice()]);
    let good = seal(alice(), WireFormat::Celery55, Digest::Sha256, b"[1]");
    let old = seal(alice(), WireFormat::Celery54, Digest::Sha256, b"[2]");
    let bad = seal(bob(), WireFormat::Celery55, Digest::Sha256, b"[3]");
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut expect = Vec::new();
    for i in 0..2000 {
        match i % 5 {
            0 => {
                items.push(good.clone().into_bytes());
                expect.push(Ok(b"[1]".to_vec()));
            }
            1 => {
                items.push(old.clone().into_bytes());
                expect.push(Ok(b"[2]".to_vec()));
            }
            2 => {
                items.push(bad.clone().into_bytes());
                expect.push(Err(ErrorCode::UnknownCertificate));
            }
            3 => {
                items.push(format!("junk{i}").into_bytes());
                expect.push(Err(ErrorCode::MalformedPayload));
            }
            _ => {
                items.push(vec![b'A'; 5000]);
                expect.push(Err(ErrorCode::PayloadTooLarge));
            }
        }
    }
    let packed = Packed::from_items(&items);
    let out = opener(&store, Digest::Sha256, 4096)
        .open_many(packed.items())
        .unwrap();
    assert_eq!(out.results.len(), expect.len());
    for (r, e) in out.results.iter().zip(&expect) {
        match (r, e) {
            (Ok(o), Ok(body)) => assert_eq!(&out.buffer[o.body.clone()], &body[..]),
            (Err(err), Err(code)) => assert_eq!(err.code, *code),
            _ => panic!("mismatch"),
        }
    }
}

/// `open_batch` gives the same answers on the pool and on the calling thread,
/// and its pre-scan (same pass) matches `jsonscan::scan` on the same body:
/// only bodies of the asked-for types are scanned, and a lifted literal
/// shortens the body range.
#[test]
fn open_batch_is_the_same_here_and_on_the_pool_and_scans_in_the_same_pass() {
    use celery_sign_core::jsonscan;
    let store = store_of(&[alice()]);
    let long = format!("[\"{}\"]", "x".repeat(jsonscan::MIN_LITERAL + 10));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"[1, {\"a\": 2}]".to_vec()),
        ("application/json", long.clone().into_bytes()),
        ("application/data", b"[3]".to_vec()),
        ("application/json", vec![0xff, 0xfe]),
    ];
    let mut items: Vec<Vec<u8>> = Vec::new();
    for k in 0..37 {
        let (ct, body) = &bodies[k % bodies.len()];
        let payload = if k % 7 == 6 {
            format!("junk{k}")
        } else {
            sealer_of(alice(), alice(), WireFormat::Celery55, Digest::Sha256)
                .seal(ct, "utf-8", body)
                .unwrap()
        };
        items.push(payload.into_bytes());
    }
    let packed = Packed::from_items(&items);
    let scanning = opener(&store, Digest::Sha256, 1 << 20)
        .with_json_types(vec![b"application/json".to_vec()])
        .with_scan(&jsonscan::scan);
    let view = |out: &batch::OpenedBatch| -> Vec<_> {
        out.results
            .iter()
            .zip(&out.scanned)
            .map(|(r, s)| match r {
                Ok(o) => Ok((
                    out.buffer[o.content_type.clone()].to_vec(),
                    out.buffer[o.body.clone()].to_vec(),
                    s.as_ref().map(|s| (s.flags, s.literals.clone())),
                )),
                Err(e) => Err(e.code),
            })
            .collect()
    };
    let pool = scanning
        .open_batch(packed.items(), batch::Place::Pool)
        .unwrap();
    let here = scanning
        .open_batch(packed.items(), batch::Place::Here)
        .unwrap();
    assert_eq!(view(&pool), view(&here));
    for (k, r) in view(&here).into_iter().enumerate() {
        if k % 7 == 6 {
            assert_eq!(r, Err(ErrorCode::MalformedPayload), "item {k}");
            continue;
        }
        let (ct, body, scanned) = r.unwrap();
        let (want_ct, want_body) = &bodies[k % bodies.len()];
        assert_eq!(ct, want_ct.as_bytes(), "item {k}");
        let json = *want_ct == "application/json" && std::str::from_utf8(want_body).is_ok();
        assert_eq!(scanned.is_some(), json, "item {k}");
        if json {
            let mut copy = want_body.clone();
            let s = jsonscan::scan(&mut copy);
            assert_eq!(&body[..], &copy[..s.len], "item {k}");
            assert_eq!(scanned, Some((s.flags, s.literals)), "item {k}");
        } else {
            assert_eq!(&body, want_body, "item {k}");
        }
    }
    // Nothing asked for: no scan at all.
    let plain = opener(&store, Digest::Sha256, 1 << 20)
        .open_many(packed.items())
        .unwrap();
    assert!(plain.scanned.is_empty());
}

#[test]
fn seal_many_matches_single_seals() {
    let store = store_of(&[alice()]);
    let bodies: Vec<Vec<u8>> = (0..64).map(|i| format!("[{i}]").into_bytes()).collect();
    let sealed = sealer_of(alice(), alice(), WireFormat::Celery55, Digest::Sha256)
        .seal_many(
            "application/json",
            "utf-8",
            Packed::from_items(&bodies).items(),
        )
        .unwrap();
    for (i, p) in sealed.into_iter().enumerate() {
        let p = p.unwrap();
        let (buf, o) = opener(&store, Digest::Sha256, 1 << 20)
            .open(p.as_bytes())
            .unwrap();
        assert_eq!(&buf[o.body], format!("[{i}]").as_bytes());
    }
}

#[test]
fn cached_contexts_survive_failures() {
    // The same thread verifies good, bad, good... with one cached context.
    let sig = alice().key.sign(b"body", Digest::Sha256).unwrap();
    let mut bad = sig.clone();
    bad[0] ^= 1;
    for _ in 0..3 {
        alice().cert.verify(b"body", &sig, Digest::Sha256).unwrap();
        assert_eq!(
            alice()
                .cert
                .verify(b"body", &bad, Digest::Sha256)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
        assert_eq!(
            alice()
                .cert
                .verify(b"other", &sig, Digest::Sha256)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
        assert_eq!(
            alice()
                .cert
                .verify(b"body", &sig[..10], Digest::Sha256)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
        // bob's key never verifies alice's signature, though both are cached on this thread
        assert_eq!(
            bob()
                .cert
                .verify(b"body", &sig, Digest::Sha256)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
    }
}

#[test]
fn reads_base64_as_python_does_dropping_line_breaks() {
    let store = store_of(&[alice()]);
    let p = seal(alice(), WireFormat::Celery55, Digest::Sha256, b"[1]");
    let wrapped: String = p
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\n";
    let (buf, o) = opener(&store, Digest::Sha256, 1 << 20)
        .open(wrapped.as_bytes())
        .unwrap();
    assert_eq!(&buf[o.body], b"[1]");
}

#[test]
fn the_old_format_refuses_bodies_celery_54_cannot_verify() {
    let err = sealer_of(alice(), alice(), WireFormat::Celery54, Digest::Sha256)
        .seal("application/data", "binary", &[0xff, 0xfe])
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::MalformedPayload);
    assert!(err.message.starts_with("Unable to serialize"));
}

/// The batch verifies eight signatures at a time with AVX-512 IFMA or AVX2
/// where the CPU has it (`mb`); whatever the path, every result must be the one the
/// single-payload path (AWS-LC, one at a time) gives: key sizes mixed in one
/// batch, keys of one size sharing a call, signatures tampered with, out of
/// range (at or above the modulus), short, and bodies changed after signing.
#[test]
fn batch_agrees_with_one_by_one_verification() {
    // Without the kernels the batch uses AWS-LC alone: still checked, and said.
    let _ = celery_sign_core::mb::kernels_testable(
        "pipeline::batch_agrees_with_one_by_one_verification (its SIMD half)",
    )
    .unwrap();
    static OTHERS: OnceLock<Vec<Identity>> = OnceLock::new();
    let others = OTHERS.get_or_init(|| {
        vec![
            make_identity(3072, "carol", 1003, (-1, 30)),
            make_identity(4096, "dave", 1004, (-1, 30)),
            make_identity(1024, "erin", 1005, (-1, 30)),
        ]
    });
    let ids: Vec<&Identity> = [alice(), bob()].into_iter().chain(others).collect();
    let store = store_of(&ids);
    let mut items: Vec<Vec<u8>> = Vec::new();
    for round in 0..40u32 {
        for (k, id) in ids.iter().enumerate() {
            let body = format!("[{round}, {k}, \"body\"]").into_bytes();
            let digest = [Digest::Sha256, Digest::Sha512, Digest::Sha1][(round as usize) % 3];
            let sig = id.key.sign(&body, digest).unwrap();
            let len = sig.len();
            let pack = |format, sig: &[u8], body: &[u8]| {
                envelope::pack(format, id.cert.id(), sig, "application/json", "utf-8", body)
                    .unwrap()
                    .into_bytes()
            };
            let format = if round % 2 == 0 {
                WireFormat::Celery55
            } else {
                WireFormat::Celery54
            };
            match round % 8 {
                // Genuine, in both formats (most of the batch).
                0..=3 => items.push(pack(format, &sig, &body)),
                4 => {
                    let mut bad = sig.clone();
                    bad[len / 2] ^= 0x40;
                    items.push(pack(format, &bad, &body));
                }
                5 => items.push(pack(format, &vec![0xff; len], &body)),
                6 => items.push(pack(WireFormat::Celery55, &sig[..len - 1], &body)),
                _ => items.push(pack(format, &sig, b"[0, 0, \"other\"]")),
            }
        }
    }
    // Every digest appears, but a batch has one: the others must refuse.
    for digest in [Digest::Sha256, Digest::Sha512, Digest::Sha1] {
        for size in [1, 2, 7, 8, 9, 33, items.len()] {
            for start in [0, 3] {
                let slice: Vec<&Vec<u8>> = items.iter().skip(start).take(size).collect();
                let packed = Packed::from_items(&slice);
                let out = opener(&store, digest, envelope::DEFAULT_MAX_PAYLOAD)
                    .open_many(packed.items())
                    .unwrap();
                assert_eq!(out.results.len(), slice.len());
                let mut accepted = 0;
                for (item, got) in slice.iter().zip(&out.results) {
                    let want = opener(&store, digest, envelope::DEFAULT_MAX_PAYLOAD).open(item);
                    match (got, &want) {
                        (Ok(g), Ok((buf, w))) => {
                            assert_eq!(&out.buffer[g.body.clone()], &buf[w.body.clone()]);
                            assert_eq!(g.signer.id(), w.signer.id());
                            accepted += 1;
                        }
                        (Err(g), Err(w)) => assert_eq!(g.code, w.code),
                        _ => panic!("batch and single disagree ({digest:?}, batch of {size})"),
                    }
                }
                if size == items.len() {
                    assert!(accepted >= 25, "{digest:?}: {accepted} accepted");
                }
            }
        }
    }
}

/// The pool's threads run at nice 5 (`CELERY_SIGN_NICE`), below the thread
/// that runs the event loop.
#[cfg(target_os = "linux")]
#[test]
fn pool_threads_yield_to_the_event_loop() {
    // Every thread has started (and run its start handler) once this returns.
    batch::pool().unwrap().broadcast(|_| ());
    let mut seen = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("celery-sign-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after.split(' ').nth(16).unwrap().parse().unwrap();
        let want = std::env::var("CELERY_SIGN_NICE").map_or(5, |v| v.trim().parse().unwrap());
        assert_eq!(nice, want, "{}", comm.trim());
        seen += 1;
    }
    assert_eq!(seen, batch::threads().unwrap());
}
