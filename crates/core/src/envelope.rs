//! The auth payload, in both wire formats found in the field.
//!
//! Celery >= 5.5: `b64( b64(signer) SEP b64(signature) SEP content_type SEP
//! content_encoding SEP body )`, split with maxsplit=4 so the body may contain SEP.
//!
//! Celery <= 5.4: `b64( signer SEP signature SEP content_type SEP content_encoding
//! SEP body )` with the signer id and the signature raw; the signature's end is
//! found from the signer's key size, and the body cannot contain SEP.
//!
//! Reading never guesses: the first field names the signer either base64'd
//! (5.5) or raw (5.4). A raw Celery id always contains a space (issuer, space,
//! serial) and base64 never does, so at most one reading finds a certificate in
//! the store; that certificate's signature over the body then decides.

use crate::cert::Certificate;
use crate::digest::Digest;
use crate::error::{display_bytes, Error, ErrorCode, Result};
use crate::key::PrivateKey;
use crate::store::CertStore;
use base64_simd::{Out, STANDARD as B64};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

/// Celery's field separator.
pub const SEP: &[u8; 2] = b"\x00\x01";

/// The default payload size limit (64 MiB of base64).
pub const DEFAULT_MAX_PAYLOAD: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Celery >= 5.5 (base64'd signer and signature; body may contain SEP).
    #[default]
    Celery55,
    /// Celery <= 5.4 (raw signer and signature).
    Celery54,
}

impl WireFormat {
    pub fn from_name(name: &str) -> Option<WireFormat> {
        match name {
            "celery-5.5" => Some(WireFormat::Celery55),
            "celery-5.4" => Some(WireFormat::Celery54),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            WireFormat::Celery55 => "celery-5.5",
            WireFormat::Celery54 => "celery-5.4",
        }
    }
}

/// Refuses a body the chosen wire format cannot carry, before signing it.
fn check_writable(format: WireFormat, content_type: &str, body: &[u8]) -> Result<()> {
    if format != WireFormat::Celery54 {
        return Ok(());
    }
    let refuse = |msg: &str| {
        Err(Error::new(
            ErrorCode::MalformedPayload,
            format!("Unable to serialize: {msg}"),
        ))
    };
    // Celery 5.4 splits the fields on SEP without a limit...
    if find_sep(body).is_some() || find_sep(content_type.as_bytes()).is_some() {
        return refuse("the body contains the separator \\x00\\x01, which the celery-5.4 wire format cannot carry");
    }
    // ...and turns the body into text before checking the signature.
    if std::str::from_utf8(body).is_err() {
        return refuse("the body is not UTF-8, which the celery-5.4 wire format cannot carry (Celery 5.4 decodes it before verifying)");
    }
    Ok(())
}

/// Python's non-validating `base64.b64decode` drops every byte outside the
/// alphabet (line breaks, spaces) before decoding; this does the same.
fn alphabet_only(payload: &[u8]) -> Vec<u8> {
    payload
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect()
}

fn malformed(msg: &str) -> Error {
    Error::new(
        ErrorCode::MalformedPayload,
        format!("Unable to deserialize: {msg}"),
    )
}

/// Position of the first `\x00\x01` in `hay`.
fn find_sep(hay: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(rel) = hay[from..].iter().position(|&b| b == 0) {
        let at = from + rel;
        if hay.get(at + 1) == Some(&1) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Builds the payload text for a signed body.
pub fn pack(
    format: WireFormat,
    signer_id: &str,
    signature: &[u8],
    content_type: &str,
    content_encoding: &str,
    body: &[u8],
) -> Result<String> {
    check_writable(format, content_type, body)?;
    Ok(pack_checked(
        format,
        signer_id,
        signature,
        content_type,
        content_encoding,
        body,
    ))
}

/// [`pack`] once [`check_writable`] has passed.
fn pack_checked(
    format: WireFormat,
    signer_id: &str,
    signature: &[u8],
    content_type: &str,
    content_encoding: &str,
    body: &[u8],
) -> String {
    let (signer, sig): (Cow<'_, [u8]>, Cow<'_, [u8]>) = match format {
        WireFormat::Celery55 => (
            B64.encode_to_string(signer_id.as_bytes())
                .into_bytes()
                .into(),
            B64.encode_to_string(signature).into_bytes().into(),
        ),
        WireFormat::Celery54 => (signer_id.as_bytes().into(), signature.into()),
    };
    let parts: [&[u8]; 5] = [
        &signer,
        &sig,
        content_type.as_bytes(),
        content_encoding.as_bytes(),
        body,
    ];
    let mut fields =
        Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 4 * SEP.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            fields.extend_from_slice(SEP);
        }
        fields.extend_from_slice(part);
    }
    B64.encode_to_string(&fields)
}

/// Signs `body` and packs it: Celery's `SecureSerializer.serialize` after the inner dumps.
pub fn seal(
    key: &PrivateKey,
    signer_id: &str,
    digest: Digest,
    format: WireFormat,
    content_type: &str,
    content_encoding: &str,
    body: &[u8],
) -> Result<String> {
    check_writable(format, content_type, body)?; // before the costly signature
    let signature = key.sign(body, digest)?;
    Ok(pack_checked(
        format,
        signer_id,
        &signature,
        content_type,
        content_encoding,
        body,
    ))
}

/// A verified payload: ranges into the decoded buffer it was opened in.
#[derive(Debug, Clone)]
pub struct Opened {
    pub content_type: Range<usize>,
    pub content_encoding: Range<usize>,
    pub body: Range<usize>,
    pub signer: Arc<Certificate>,
    pub format: WireFormat,
    /// Whether the body is valid UTF-8 (checked here, off the event loop).
    pub body_is_utf8: bool,
}

/// Room needed to decode a payload of `len` base64 bytes.
pub fn decode_capacity(len: usize) -> usize {
    B64.estimated_decoded_length(len)
}

/// Decodes, unpacks and verifies one payload into `out` (at least
/// [`decode_capacity`] bytes). Ranges in the result are relative to `out`.
pub fn open_into(
    store: &CertStore,
    digest: Digest,
    payload: &[u8],
    max_payload: usize,
    out: &mut [u8],
    now_unix_ms: i64,
) -> Result<Opened> {
    let pending = open_unverified(store, payload, max_payload, out, now_unix_ms)?;
    let opened = pending.opened;
    opened
        .signer
        .verify_signature(&out[opened.body.clone()], &pending.signature, digest)?;
    Ok(finish(out, opened))
}

/// A payload decoded and unpacked, its signer found and in date: all that is
/// left is the signature check (then [`finish`]).
pub(crate) struct Unverified {
    pub opened: Opened,
    pub signature: Vec<u8>,
}

/// Everything [`open_into`] does before the signature check.
pub(crate) fn open_unverified(
    store: &CertStore,
    payload: &[u8],
    max_payload: usize,
    out: &mut [u8],
    now_unix_ms: i64,
) -> Result<Unverified> {
    check_size(payload, max_payload)?;
    if payload.is_empty() {
        return Err(malformed("the payload is empty"));
    }
    // Strict base64 decodes in one pass; only a payload that fails it is
    // filtered the way Python's non-validating b64decode reads it, then
    // decoded again.
    let strict = B64
        .decode(payload, Out::from_slice(out))
        .ok()
        .map(|r| r.len());
    let raw: &[u8] = match strict {
        Some(len) => &out[..len],
        None => B64
            .decode(&alphabet_only(payload), Out::from_slice(out))
            .map_err(|_| malformed("the payload is not valid base64"))?,
    };
    let first = find_sep(raw).ok_or_else(|| malformed("the payload has too few fields"))?;
    let field0 = &raw[..first];

    // 5.5: the first field is base64 of the signer id.
    let mut id_buf = [0u8; 1024];
    let v55_signer = if field0.len() <= 1364 {
        B64.decode(field0, Out::from_slice(&mut id_buf[..]))
            .ok()
            .and_then(|id| store.lookup(id))
    } else {
        B64.decode_to_vec(field0)
            .ok()
            .and_then(|id| store.lookup(&id))
    };

    let (signer, format, signature, rest_start): (&Arc<Certificate>, WireFormat, SigField, usize) =
        if let Some(cert) = v55_signer {
            let after0 = first + SEP.len();
            let sep1 = find_sep(&raw[after0..])
                .ok_or_else(|| malformed("the payload has too few fields"))?;
            (
                cert,
                WireFormat::Celery55,
                SigField::Base64(after0..after0 + sep1),
                after0 + sep1 + SEP.len(),
            )
        } else if let Some(cert) = store.lookup(field0) {
            // 5.4: raw signer, then exactly key_size / 8 raw signature bytes.
            let sig_start = first + SEP.len();
            let sig_end = sig_start + cert.signature_len();
            if raw.len() < sig_end + SEP.len() || &raw[sig_end..sig_end + SEP.len()] != SEP {
                return Err(malformed("the payload has too few fields"));
            }
            (
                cert,
                WireFormat::Celery54,
                SigField::Raw(sig_start..sig_end),
                sig_end + SEP.len(),
            )
        } else {
            let shown = B64
                .decode_to_vec(field0)
                .unwrap_or_else(|_| field0.to_vec());
            return Err(Error::new(
                ErrorCode::UnknownCertificate,
                format!("Unknown certificate: '{}'", display_bytes(&shown)),
            ));
        };

    // content_type SEP content_encoding SEP body
    let rest = &raw[rest_start..];
    let s1 = find_sep(rest).ok_or_else(|| malformed("the payload has too few fields"))?;
    let after1 = s1 + SEP.len();
    let s2 =
        find_sep(&rest[after1..]).ok_or_else(|| malformed("the payload has too few fields"))?;
    let content_type = rest_start..rest_start + s1;
    let content_encoding = rest_start + after1..rest_start + after1 + s2;
    let body = rest_start + after1 + s2 + SEP.len()..raw.len();
    if format == WireFormat::Celery54 && find_sep(&raw[body.clone()]).is_some() {
        return Err(malformed(
            "the payload has too many fields for the celery-5.4 wire format",
        ));
    }
    if std::str::from_utf8(&raw[content_type.clone()]).is_err()
        || std::str::from_utf8(&raw[content_encoding.clone()]).is_err()
    {
        return Err(malformed("the content type or encoding is not UTF-8"));
    }

    signer.check_validity_at(now_unix_ms)?;
    let signature: Vec<u8> = match signature {
        SigField::Raw(r) => raw[r].to_vec(),
        SigField::Base64(r) => B64.decode_to_vec(&raw[r]).map_err(|_| {
            Error::new(
                ErrorCode::BadSignature,
                "Bad signature: the signature is not valid base64",
            )
        })?,
    };
    Ok(Unverified {
        opened: Opened {
            content_type,
            content_encoding,
            body,
            body_is_utf8: false,
            signer: Arc::clone(signer),
            format,
        },
        signature,
    })
}

/// Completes a verified payload (the UTF-8 check of its body).
pub(crate) fn finish(out: &[u8], mut opened: Opened) -> Opened {
    opened.body_is_utf8 = std::str::from_utf8(&out[opened.body.clone()]).is_ok();
    opened
}

/// Refuses a payload over the size limit before any decoding.
pub fn check_size(payload: &[u8], max_payload: usize) -> Result<()> {
    if payload.len() > max_payload {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "Unable to deserialize: the payload is {} bytes, over the limit of {max_payload}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

enum SigField {
    Raw(Range<usize>),
    Base64(Range<usize>),
}

/// One payload, decoded into a fresh buffer: `(buffer, opened)`.
pub fn open(
    store: &CertStore,
    digest: Digest,
    payload: &[u8],
    max_payload: usize,
) -> Result<(Vec<u8>, Opened)> {
    check_size(payload, max_payload)?; // before allocating
    let mut buf = vec![0u8; decode_capacity(payload.len())];
    let opened = open_into(
        store,
        digest,
        payload,
        max_payload,
        &mut buf,
        crate::cert::now_unix_ms(),
    )?;
    Ok((buf, opened))
}
