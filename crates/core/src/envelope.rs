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

use crate::batch::Opener;
use crate::cert::Certificate;
use crate::error::{display_bytes, Error, ErrorCode, Result};
use crate::store::CertStore;
use base64_simd::{Out, STANDARD as B64};
use std::borrow::Cow;
use std::mem::MaybeUninit;
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
pub(crate) fn check_writable(format: WireFormat, content_type: &str, body: &[u8]) -> Result<()> {
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
pub(crate) fn pack_checked(
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

impl Opener {
    /// Decodes, unpacks and verifies one payload into a fresh buffer:
    /// `(buffer, opened)`, the ranges relative to the buffer.
    pub fn open(&self, payload: &[u8]) -> Result<(Vec<u8>, Opened)> {
        check_size(payload, self.max_payload)?; // before allocating
        let mut buf = vec![0u8; decode_capacity(payload.len())];
        let opened = self.open_into(payload, &mut buf, crate::cert::now_unix_ms())?;
        Ok((buf, opened))
    }

    /// Decodes, unpacks and verifies one payload into `out` (at least
    /// [`decode_capacity`] bytes), certificates dated at `now_unix_ms`.
    /// Ranges in the result are relative to `out`.
    pub fn open_into(&self, payload: &[u8], out: &mut [u8], now_unix_ms: i64) -> Result<Opened> {
        let pending = open_unverified(self, payload, out, now_unix_ms)?;
        let opened = pending.opened;
        opened.signer.verify_signature(
            &out[opened.body.clone()],
            &pending.signature,
            self.digest,
        )?;
        Ok(finish(out, opened))
    }
}

/// A payload decoded and unpacked, its signer found and in date: all that is
/// left is the signature check (then [`finish`]).
pub(crate) struct Unverified {
    pub opened: Opened,
    pub signature: Vec<u8>,
}

/// Everything [`Opener::open_into`] does before the signature check, step
/// by step: decode the base64, find the signer (which also tells the wire
/// format and where the signature lies), split and check the remaining
/// fields, check the signer's validity period, take the signature out.
pub(crate) fn open_unverified(
    opener: &Opener,
    payload: &[u8],
    out: &mut [u8],
    now_unix_ms: i64,
) -> Result<Unverified> {
    let raw = decode_payload(payload, opener.max_payload, out)?;
    let signed = find_signer(&opener.store, raw)?;
    let tail = split_tail(raw, signed.tail_start)?;
    check_tail(raw, &tail, signed.format)?;
    signed.signer.check_validity_at(now_unix_ms)?;
    let signature = signature_bytes(raw, signed.signature)?;
    Ok(Unverified {
        opened: Opened {
            content_type: tail.content_type,
            content_encoding: tail.content_encoding,
            body: tail.body,
            body_is_utf8: false,
            signer: Arc::clone(signed.signer),
            format: signed.format,
        },
        signature,
    })
}

/// The outer base64 of a payload within the size limit, decoded into the
/// start of `out`. Strict base64 decodes in one pass; only a payload that
/// fails it is filtered the way Python's non-validating b64decode reads it,
/// then decoded again.
fn decode_payload<'o>(payload: &[u8], max_payload: usize, out: &'o mut [u8]) -> Result<&'o [u8]> {
    check_size(payload, max_payload)?;
    if payload.is_empty() {
        return Err(malformed("the payload is empty"));
    }
    let strict = B64
        .decode(payload, Out::from_slice(out))
        .ok()
        .map(|r| r.len());
    match strict {
        Some(len) => Ok(&out[..len]),
        None => B64
            .decode(&alphabet_only(payload), Out::from_slice(out))
            .map(|r| &*r)
            .map_err(|_| malformed("the payload is not valid base64")),
    }
}

fn too_few_fields() -> Error {
    malformed("the payload has too few fields")
}

/// The signer of a decoded payload and the layout its wire format gives.
struct Signed<'s> {
    signer: &'s Arc<Certificate>,
    format: WireFormat,
    signature: SigField,
    /// Where the content type starts.
    tail_start: usize,
}

/// Finds the signer the first field names: read as 5.5 (base64 of the id),
/// else as 5.4 (the raw id). At most one reading finds a certificate (a raw
/// id has a space, base64 none).
fn find_signer<'s>(store: &'s CertStore, raw: &[u8]) -> Result<Signed<'s>> {
    let first = find_sep(raw).ok_or_else(too_few_fields)?;
    let field0 = &raw[..first];
    if let Some(cert) = lookup_base64_id(store, field0) {
        signed_55(cert, raw, first)
    } else if let Some(cert) = store.lookup(field0) {
        signed_54(cert, raw, first)
    } else {
        Err(unknown_signer(field0))
    }
}

/// The certificate whose id `field` is the base64 of (5.5), decoded on the
/// stack when it is short enough.
fn lookup_base64_id<'s>(store: &'s CertStore, field: &[u8]) -> Option<&'s Arc<Certificate>> {
    // Not zeroed: the decoder hands back exactly the bytes it wrote.
    let mut id_buf = [MaybeUninit::<u8>::uninit(); 1024];
    if field.len() <= 1364 {
        B64.decode(field, Out::from_uninit_slice(&mut id_buf[..]))
            .ok()
            .and_then(|id| store.lookup(id))
    } else {
        B64.decode_to_vec(field)
            .ok()
            .and_then(|id| store.lookup(&id))
    }
}

/// 5.5: the base64 signature runs to the next separator.
fn signed_55<'s>(cert: &'s Arc<Certificate>, raw: &[u8], first: usize) -> Result<Signed<'s>> {
    let after0 = first + SEP.len();
    let sep1 = find_sep(&raw[after0..]).ok_or_else(too_few_fields)?;
    Ok(Signed {
        signer: cert,
        format: WireFormat::Celery55,
        signature: SigField::Base64(after0..after0 + sep1),
        tail_start: after0 + sep1 + SEP.len(),
    })
}

/// 5.4: exactly key_size / 8 raw signature bytes, then a separator.
fn signed_54<'s>(cert: &'s Arc<Certificate>, raw: &[u8], first: usize) -> Result<Signed<'s>> {
    let sig_start = first + SEP.len();
    let sig_end = sig_start + cert.signature_len();
    if raw.len() < sig_end + SEP.len() || &raw[sig_end..sig_end + SEP.len()] != SEP {
        return Err(too_few_fields());
    }
    Ok(Signed {
        signer: cert,
        format: WireFormat::Celery54,
        signature: SigField::Raw(sig_start..sig_end),
        tail_start: sig_end + SEP.len(),
    })
}

/// No certificate in the store: the refusal names the id (base64-decoded
/// when it is base64).
fn unknown_signer(field0: &[u8]) -> Error {
    let shown = B64
        .decode_to_vec(field0)
        .unwrap_or_else(|_| field0.to_vec());
    Error::new(
        ErrorCode::UnknownCertificate,
        format!("Unknown certificate: '{}'", display_bytes(&shown)),
    )
}

/// The fields after the signature, as ranges of the decoded payload.
struct Tail {
    content_type: Range<usize>,
    content_encoding: Range<usize>,
    body: Range<usize>,
}

/// `content_type SEP content_encoding SEP body` from `start` (the body may
/// hold further separators).
fn split_tail(raw: &[u8], start: usize) -> Result<Tail> {
    let rest = &raw[start..];
    let s1 = find_sep(rest).ok_or_else(too_few_fields)?;
    let after1 = s1 + SEP.len();
    let s2 = find_sep(&rest[after1..]).ok_or_else(too_few_fields)?;
    Ok(Tail {
        content_type: start..start + s1,
        content_encoding: start + after1..start + after1 + s2,
        body: start + after1 + s2 + SEP.len()..raw.len(),
    })
}

/// Refuses a separator in a 5.4 body (Celery 5.4 splits without a limit)
/// and a content type or encoding that is not UTF-8.
fn check_tail(raw: &[u8], tail: &Tail, format: WireFormat) -> Result<()> {
    if format == WireFormat::Celery54 && find_sep(&raw[tail.body.clone()]).is_some() {
        return Err(malformed(
            "the payload has too many fields for the celery-5.4 wire format",
        ));
    }
    if std::str::from_utf8(&raw[tail.content_type.clone()]).is_err()
        || std::str::from_utf8(&raw[tail.content_encoding.clone()]).is_err()
    {
        return Err(malformed("the content type or encoding is not UTF-8"));
    }
    Ok(())
}

/// The signature's bytes (5.5: base64-decoded).
fn signature_bytes(raw: &[u8], field: SigField) -> Result<Vec<u8>> {
    match field {
        SigField::Raw(r) => Ok(raw[r].to_vec()),
        SigField::Base64(r) => B64.decode_to_vec(&raw[r]).map_err(|_| {
            Error::new(
                ErrorCode::BadSignature,
                "Bad signature: the signature is not valid base64",
            )
        }),
    }
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
