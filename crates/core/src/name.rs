//! Celery's issuer string: `' '.join(attr.value for attr in cert.issuer)`.
//!
//! Python `cryptography` walks the Name's RDNs in DER order and, inside a
//! multi-valued RDN, its attributes in DER order; it decodes BMPString as
//! UTF-16BE, UniversalString as UTF-32BE and every other string type as UTF-8
//! (strictly). Values are not escaped. OpenSSL's one-line forms escape and
//! re-order, so the DER is walked here directly.

/// A DER element: tag byte, contents and the whole encoding.
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads one DER element off the front of `input`; returns it and the rest.
/// Only definite, minimal lengths are accepted (DER).
pub(crate) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let whole = input;
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers never occur in a Name
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        if len < 0x80 {
            return None; // not minimal
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = whole.len() - rest.len();
    Some((
        Tlv {
            tag,
            body: &rest[..len],
            raw: &whole[..header + len],
        },
        &rest[len..],
    ))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BMP_STRING: u8 = 0x1e;
const UNIVERSAL_STRING: u8 = 0x1c;
const BIT_STRING: u8 = 0x03;
const PRINTABLE_STRING: u8 = 0x13;

/// PrintableString's alphabet (X.680), which Python's parser enforces.
fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)
}

/// Decodes one attribute value as `cryptography` does; `None` where Python
/// would fail (invalid text, or a value that is not a string).
fn decode_value(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        BMP_STRING => {
            if !body.len().is_multiple_of(2) {
                return None;
            }
            let units = body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        UNIVERSAL_STRING => {
            if !body.len().is_multiple_of(4) {
                return None;
            }
            body.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        // x500UniqueIdentifier: Python gives bytes, and ' '.join fails.
        BIT_STRING => None,
        PRINTABLE_STRING if !body.iter().all(|&b| is_printable(b)) => None,
        _ => std::str::from_utf8(body).ok().map(str::to_owned),
    }
}

/// The attribute values of a DER `Name`, in the order Python yields them.
pub fn name_values(der: &[u8]) -> Option<Vec<String>> {
    let (name, rest) = read_tlv(der)?;
    if name.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut values = Vec::new();
    let mut rdns = name.body;
    while !rdns.is_empty() {
        let (rdn, next) = read_tlv(rdns)?;
        if rdn.tag != SET {
            return None;
        }
        rdns = next;
        let mut attrs = rdn.body;
        let mut previous: Option<&[u8]> = None;
        while !attrs.is_empty() {
            let (attr, next) = read_tlv(attrs)?;
            if attr.tag != SEQUENCE {
                return None;
            }
            // DER sorts a SET OF by encoding; Python's parser refuses any other order.
            if previous.is_some_and(|p| p > attr.raw) {
                return None;
            }
            previous = Some(attr.raw);
            attrs = next;
            let (oid, after_oid) = read_tlv(attr.body)?;
            if oid.tag != OID {
                return None;
            }
            let (value, tail) = read_tlv(after_oid)?;
            if !tail.is_empty() {
                return None;
            }
            values.push(decode_value(value.tag, value.body)?);
        }
    }
    Some(values)
}

/// `' '.join(values)`: Celery's `get_issuer()`.
pub fn issuer_string(der: &[u8]) -> Option<String> {
    name_values(der).map(|v| v.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    fn attr(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut body = tlv(OID, oid);
        body.extend(tlv(tag, value));
        tlv(SEQUENCE, &body)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn joins_values_in_der_order_with_multivalued_rdns() {
        let rdn1 = tlv(
            SET,
            &[attr(CN, 0x13, b"a"), attr(O, 0x0c, "Ünïcode 例".as_bytes())].concat(),
        );
        let rdn2 = tlv(SET, &attr(CN, 0x16, b"x y"));
        let name = tlv(SEQUENCE, &[rdn1, rdn2].concat());
        assert_eq!(issuer_string(&name).unwrap(), "a Ünïcode 例 x y");
    }

    #[test]
    fn decodes_bmp_and_universal_strings() {
        let bmp: Vec<u8> = "Ωmega😀"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let uni: Vec<u8> = "Ωx😀"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        let name = tlv(
            SEQUENCE,
            &[
                tlv(SET, &attr(CN, BMP_STRING, &bmp)),
                tlv(SET, &attr(O, UNIVERSAL_STRING, &uni)),
            ]
            .concat(),
        );
        assert_eq!(issuer_string(&name).unwrap(), "Ωmega😀 Ωx😀");
    }

    #[test]
    fn refuses_what_python_cannot_decode() {
        let bad_utf8 = tlv(SEQUENCE, &tlv(SET, &attr(CN, 0x0c, &[0xff, 0xfe])));
        assert!(issuer_string(&bad_utf8).is_none());
        let bits = tlv(SEQUENCE, &tlv(SET, &attr(CN, BIT_STRING, &[0x00, 0x01])));
        assert!(issuer_string(&bits).is_none());
        let odd_bmp = tlv(SEQUENCE, &tlv(SET, &attr(CN, BMP_STRING, &[0x00])));
        assert!(issuer_string(&odd_bmp).is_none());
        assert!(issuer_string(&[0x30, 0x05, 0x31]).is_none());
        let bad_printable = tlv(SEQUENCE, &tlv(SET, &attr(CN, PRINTABLE_STRING, b"a@b")));
        assert!(issuer_string(&bad_printable).is_none());
        let unsorted = tlv(
            SEQUENCE,
            &tlv(SET, &[attr(O, 0x0c, b"b"), attr(CN, 0x0c, b"a")].concat()),
        );
        assert!(issuer_string(&unsorted).is_none());
        let lone = tlv(SEQUENCE, &tlv(SET, &attr(CN, BMP_STRING, &[0xd8, 0x00])));
        assert!(issuer_string(&lone).is_none());
        assert!(issuer_string(&[]).is_none());
    }

    #[test]
    fn long_lengths() {
        let long = "v".repeat(300);
        let name = tlv(SEQUENCE, &tlv(SET, &attr(CN, 0x0c, long.as_bytes())));
        assert_eq!(issuer_string(&name).unwrap(), long);
    }
}
