//! Certificates and names: `Certificate::from_der`, `Certificate::from_pem`
//! and the issuer-name reader (`name::name_values`, `name::issuer_string`).
//!
//! Input: bytes read as a DER certificate, as a DER `Name`, as PEM text, and
//! wrapped here in a PEM block.
//!
//! Checks: nothing panics; a refusal carries `ERR_INVALID_CERTIFICATE` or
//! `ERR_UNSUPPORTED_KEY_TYPE`; an accepted certificate's id is issuer + " " +
//! serial, its issuer is what the name reader makes of the issuer field, its
//! serial is the serial field in decimal (both fields found and the decimal
//! computed here independently), which is a minimal DER INTEGER; the PEM
//! wrapping of some DER reads exactly as the DER does; `issuer_string` is
//! `name_values` joined by spaces.
#![no_main]

use base64_simd::STANDARD as B64;
use celery_sign_core::name::{issuer_string, name_values};
use celery_sign_core::{Certificate, ErrorCode, Result};
use libfuzzer_sys::fuzz_target;

/// One BER/DER element, leniently (the core's reader decides what is DER):
/// `(tag, contents, rest)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `(issuer Name DER, serial INTEGER contents)` of a certificate.
fn issuer_and_serial(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let (mut tag, mut body, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        (tag, body, rest) = tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let serial = body;
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (_, _, after) = tlv(rest)?; // the issuer, whole
    Some((&rest[..rest.len() - after.len()], serial))
}

/// A two's complement big-endian integer in decimal, through base-10^9 limbs
/// (the core divides a base-256 number by ten instead).
fn decimal(bytes: &[u8]) -> String {
    let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
    let mut limbs: Vec<u64> = vec![0]; // little-endian, base 10^9
    for &b in bytes {
        mul_add(&mut limbs, 256, u64::from(if negative { !b } else { b }));
    }
    if negative {
        mul_add(&mut limbs, 1, 1); // the magnitude is ~x + 1
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let mut iter = limbs.iter().rev();
    out += &iter.next().map_or_else(String::new, u64::to_string);
    for limb in iter {
        out += &format!("{limb:09}");
    }
    out
}

/// `limbs = limbs * mul + add`.
fn mul_add(limbs: &mut Vec<u64>, mul: u64, add: u64) {
    let mut carry = add;
    for limb in limbs.iter_mut() {
        let v = *limb * mul + carry;
        *limb = v % 1_000_000_000;
        carry = v / 1_000_000_000;
    }
    if carry > 0 {
        limbs.push(carry);
    }
}

fn pem_of(der: &[u8]) -> Vec<u8> {
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in B64.encode_to_string(der).as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    pem
}

fn check(result: &Result<Certificate>, der: Option<&[u8]>) {
    match result {
        Ok(cert) => {
            assert_eq!(cert.id(), format!("{} {}", cert.issuer(), cert.serial()));
            let serial = cert.serial();
            let digits = serial.strip_prefix('-').unwrap_or(serial);
            assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
            assert!(digits == "0" || !digits.starts_with('0'), "serial {serial}");
            assert_ne!(serial, "-0");
            assert!(cert.bits() > 0);
            assert_eq!(cert.signature_len(), (cert.bits() as usize).div_ceil(8));
            if let Some(der) = der {
                let (issuer, serial) = issuer_and_serial(der).expect("an accepted certificate");
                assert_eq!(issuer_string(issuer).as_deref(), Some(cert.issuer()));
                assert_eq!(cert.serial(), decimal(serial));
                // DER: a minimal INTEGER (Python's parser refuses any other).
                if let [first, second, ..] = serial {
                    assert!(
                        !(*first == 0x00 && second & 0x80 == 0)
                            && !(*first == 0xff && second & 0x80 != 0),
                        "a non-minimal serial accepted"
                    );
                }
            }
        }
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::InvalidCertificate | ErrorCode::UnsupportedKeyType
            ),
            "unexpected code {:?}: {}",
            e.code,
            e.message
        ),
    }
}

/// What a certificate answer says, comparable between two reads.
fn outcome(
    r: &Result<Certificate>,
) -> std::result::Result<(String, String, String, i64, u32), ErrorCode> {
    r.as_ref()
        .map(|c| {
            (
                c.id().to_owned(),
                c.issuer().to_owned(),
                c.serial().to_owned(),
                c.not_after(),
                c.bits(),
            )
        })
        .map_err(|e| e.code)
}

fuzz_target!(|data: &[u8]| {
    match name_values(data) {
        Some(values) => assert_eq!(issuer_string(data), Some(values.join(" "))),
        None => assert_eq!(issuer_string(data), None),
    }

    let der = Certificate::from_der(data);
    check(&der, Some(data));
    let wrapped = Certificate::from_pem(&pem_of(data));
    check(&wrapped, None);
    assert_eq!(outcome(&wrapped), outcome(&der), "PEM and DER reads differ");

    check(&Certificate::from_pem(data), None);
});
