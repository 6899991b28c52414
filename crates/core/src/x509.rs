//! The parts of an X.509 certificate Celery reads, taken from the DER
//! directly: issuer, serial, notBefore, notAfter and the public key.
//!
//! Python `cryptography` parses certificates with its own DER parser, which
//! accepts names that OpenSSL's X509 parser refuses while canonicalising them
//! (a BMPString holding a surrogate pair, for one). To read exactly the
//! certificates Celery reads, the outer structure is walked here and only the
//! SubjectPublicKeyInfo goes to OpenSSL.

use crate::name::read_tlv;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

pub struct Parts<'a> {
    /// The issuer Name, DER.
    pub issuer: &'a [u8],
    /// The serial number's INTEGER contents (two's complement, big-endian).
    pub serial: &'a [u8],
    /// notBefore as Unix seconds.
    pub not_before: i64,
    /// notAfter as Unix seconds.
    pub not_after: i64,
    /// SubjectPublicKeyInfo, DER.
    pub spki: &'a [u8],
}

/// Splits a DER certificate into the parts Celery uses; `None` if malformed.
pub fn parse(der: &[u8]) -> Option<Parts<'_>> {
    let (cert, rest) = read_tlv(der)?;
    if cert.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (tbs, after_tbs) = read_tlv(cert.body)?;
    let (alg, after_alg) = read_tlv(after_tbs)?;
    let (sig, tail) = read_tlv(after_alg)?;
    if tbs.tag != SEQUENCE || alg.tag != SEQUENCE || sig.tag != 0x03 || !tail.is_empty() {
        return None;
    }
    let mut fields = tbs.body;
    let (mut field, mut next) = read_tlv(fields)?;
    if field.tag == VERSION_TAG {
        fields = next;
        (field, next) = read_tlv(fields)?;
    }
    // The serial as Python `cryptography` reads it: a DER INTEGER, minimally
    // encoded (`00 7f` or `ff 80` make it refuse the whole certificate).
    if field.tag != INTEGER || !is_minimal_integer(field.body) {
        return None;
    }
    let serial = field.body;
    let (sig_alg, next) = read_tlv(next)?;
    let (issuer, next) = read_tlv(next)?;
    let (validity, next) = read_tlv(next)?;
    let (subject, next) = read_tlv(next)?;
    let (spki, _extensions) = read_tlv(next)?;
    if sig_alg.tag != SEQUENCE
        || issuer.tag != SEQUENCE
        || validity.tag != SEQUENCE
        || subject.tag != SEQUENCE
        || spki.tag != SEQUENCE
    {
        return None;
    }
    let (not_before, after) = read_tlv(validity.body)?;
    let (not_after, tail) = read_tlv(after)?;
    if !tail.is_empty() {
        return None;
    }
    Some(Parts {
        issuer: issuer.raw,
        serial,
        not_before: parse_time(not_before.tag, not_before.body)?,
        not_after: parse_time(not_after.tag, not_after.body)?,
        spki: spki.raw,
    })
}

/// A DER INTEGER's contents: not empty, and no leading byte that only
/// repeats the sign of the next one.
fn is_minimal_integer(body: &[u8]) -> bool {
    match body {
        [] => false,
        [0x00, next, ..] => next & 0x80 != 0,
        [0xff, next, ..] => next & 0x80 == 0,
        _ => true,
    }
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0')),
    )
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 13 => {
            let yy = digits(&s[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 15 => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The longest serial number read, in bytes of its INTEGER contents. RFC
/// 5280 allows 20; Python `cryptography` loads any length, but Celery's
/// `get_id()` formats the serial with `str()`, which Python (3.11+, and the
/// 3.8-3.10 security releases) refuses beyond 4,300 decimal digits
/// (`sys.get_int_max_str_digits()`): about 1,786 bytes, so no certificate
/// Celery can use is refused here. 4,096 bytes (9,865 digits) leaves room
/// for a raised Python limit, and converts in well under a millisecond.
/// Carried to TypeScript by `src/backend/limits.ts`.
pub const MAX_SERIAL_BYTES: usize = 4096;

/// A DER INTEGER's contents in decimal, sign included (as Python's `int`),
/// or `None` beyond [`MAX_SERIAL_BYTES`].
pub fn integer_to_decimal(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_SERIAL_BYTES {
        return None;
    }
    let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
    // Magnitude: the value itself, or its two's complement negation.
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    // Big-endian base-2^32 limbs, divided by 10^9 until nothing is left: nine
    // digits a pass (the work is quadratic in the length, which the bound keeps small).
    let pad = (4 - mag.len() % 4) % 4;
    let mut limbs: Vec<u32> = std::iter::repeat_n(0u8, pad)
        .chain(mag.iter().copied())
        .collect::<Vec<u8>>()
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    const BASE: u64 = 1_000_000_000;
    let mut start = limbs.iter().position(|&l| l != 0).unwrap_or(limbs.len());
    let mut groups: Vec<u32> = Vec::new();
    while start < limbs.len() {
        let mut rem = 0u64;
        for l in limbs[start..].iter_mut() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / BASE) as u32;
            rem = cur % BASE;
        }
        groups.push(rem as u32);
        while start < limbs.len() && limbs[start] == 0 {
            start += 1;
        }
    }
    let mut out = String::with_capacity(groups.len() * 9 + 1);
    if negative {
        out.push('-');
    }
    match groups.split_last() {
        None => out.push('0'),
        Some((first, rest)) => {
            out.push_str(&first.to_string());
            for g in rest.iter().rev() {
                out.push_str(&format!("{g:09}"));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> String {
        integer_to_decimal(bytes).unwrap()
    }

    /// The old conversion (one digit a pass), as the reference.
    fn slow(bytes: &[u8]) -> String {
        let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
        let mut mag: Vec<u8> = bytes.to_vec();
        if negative {
            for b in mag.iter_mut() {
                *b = !*b;
            }
            for b in mag.iter_mut().rev() {
                let (v, carry) = b.overflowing_add(1);
                *b = v;
                if !carry {
                    break;
                }
            }
        }
        let mut digits = Vec::new();
        while mag.iter().any(|&b| b != 0) {
            let mut rem = 0u32;
            for b in mag.iter_mut() {
                let cur = (rem << 8) | u32::from(*b);
                *b = (cur / 10) as u8;
                rem = cur % 10;
            }
            digits.push(b'0' + rem as u8);
        }
        if digits.is_empty() {
            digits.push(b'0');
        }
        if negative {
            digits.push(b'-');
        }
        digits.reverse();
        String::from_utf8(digits).unwrap()
    }

    #[test]
    fn decimal_matches_the_one_digit_conversion() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in (1..=70).chain([127, 128, 129, 500, 1000]) {
            for _ in 0..4 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    })
                    .collect();
                assert_eq!(dec(&bytes), slow(&bytes), "{bytes:02x?}");
            }
            let zeros = vec![0u8; len];
            assert_eq!(dec(&zeros), "0");
            let ones = vec![0xffu8; len];
            assert_eq!(dec(&ones), "-1");
            let mut min = vec![0u8; len];
            min[0] = 0x80;
            assert_eq!(dec(&min), slow(&min));
        }
    }

    #[test]
    fn serials_beyond_the_bound_are_refused_at_once() {
        let at = vec![0x7fu8; MAX_SERIAL_BYTES];
        let t = std::time::Instant::now();
        let digits = integer_to_decimal(&at).unwrap();
        // 2^32767 has 9,864 digits: the bound covers Python's default limit of 4,300.
        assert_eq!(digits.len(), 9864);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            integer_to_decimal(&vec![0x7fu8; MAX_SERIAL_BYTES + 1]),
            None
        );
        let t = std::time::Instant::now();
        assert_eq!(integer_to_decimal(&vec![0x7fu8; 65536]), None);
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn integers_in_decimal() {
        assert_eq!(dec(&[0x00]), "0");
        assert_eq!(dec(&[0x01]), "1");
        assert_eq!(dec(&[0x00, 0xff]), "255");
        assert_eq!(dec(&[0xfb]), "-5");
        assert_eq!(dec(&[0xff, 0x00]), "-256");
        assert_eq!(dec(&[0x80]), "-128");
        assert_eq!(
            dec(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "18446744073709551615"
        );
        let twenty = [0xffu8; 20];
        let mut positive = vec![0u8];
        positive.extend_from_slice(&twenty);
        assert_eq!(
            dec(&positive),
            "1461501637330902918203684832716283019655932542975"
        );
    }

    #[test]
    fn serials_are_minimal_integers() {
        for ok in [
            &[0x00][..],
            &[0xff],
            &[0x00, 0x80],
            &[0xff, 0x7f],
            &[0x01, 0x00],
            &[0x7f],
        ] {
            assert!(is_minimal_integer(ok), "{ok:02x?}");
        }
        for bad in [
            &[][..],
            &[0x00, 0x7f],
            &[0x00, 0x00, 0x01],
            &[0xff, 0x80],
            &[0xff, 0xff],
        ] {
            assert!(!is_minimal_integer(bad), "{bad:02x?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"99991231235959Z"),
            Some(253_402_300_799)
        );
        assert_eq!(parse_time(UTC_TIME, b"700101000000+0100"), None);
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
    }
}
