//! X.509 certificates with an RSA public key, identified the way Celery does.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode, Result};
use crate::mb::MbKey;
use crate::name;
use crate::{pem, x509};
use openssl::pkey::{Id, PKey, Public};

pub struct Certificate {
    pubkey: PKey<Public>,
    id: String,
    issuer: String,
    serial: String,
    not_before: i64,
    not_after: i64,
    bits: u32,
    /// Identifies this key in the per-thread context caches.
    uid: u64,
    /// The key laid out for the multi-buffer public operation, when it fits.
    mb: Option<MbKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("bits", &self.bits)
            .finish()
    }
}

fn invalid(msg: &str) -> Error {
    Error::new(
        ErrorCode::InvalidCertificate,
        format!("Invalid certificate: {msg}"),
    )
}

impl Certificate {
    /// Loads the first certificate of a PEM text. Only RSA public keys are accepted.
    pub fn from_pem(pem: &[u8]) -> Result<Certificate> {
        let block = pem::first_block_labelled(pem, &["CERTIFICATE", "X509 CERTIFICATE"])
            .ok_or_else(|| invalid("no PEM certificate found"))?;
        let der = block
            .decode()
            .ok_or_else(|| invalid("the PEM certificate is not valid base64"))?;
        Self::from_der(&der)
    }

    /// Loads a DER certificate. Only RSA public keys are accepted.
    pub fn from_der(der: &[u8]) -> Result<Certificate> {
        let parts =
            x509::parse(der).ok_or_else(|| invalid("could not parse the X.509 certificate"))?;
        let pubkey = PKey::public_key_from_der(parts.spki)
            .map_err(|_| invalid("could not read the certificate's public key"))?;
        if !matches!(pubkey.id(), Id::RSA | Id::RSA_PSS) {
            return Err(Error::new(
                ErrorCode::UnsupportedKeyType,
                "Invalid certificate: Non-RSA certificates are not supported.",
            ));
        }
        let issuer = name::issuer_string(parts.issuer)
            .ok_or_else(|| invalid("the issuer name is not valid DER text (unsorted RDN, invalid string, or a value that is not a string)"))?;
        let serial = x509::integer_to_decimal(parts.serial).ok_or_else(|| {
            invalid(&format!(
                "the serial number is {} bytes long, over the limit of {}",
                parts.serial.len(),
                x509::MAX_SERIAL_BYTES
            ))
        })?;
        let bits = pubkey.bits();
        let id = format!("{issuer} {serial}");
        // RSA-PSS keys (id-RSASSA-PSS) may restrict their parameters: AWS-LC
        // enforces those, so they never take the multi-buffer path.
        let mb = match pubkey.id() {
            Id::RSA => pubkey.rsa().ok().and_then(|r| MbKey::new(r.n(), r.e())),
            _ => None,
        };
        Ok(Certificate {
            mb,
            pubkey,
            id,
            issuer,
            serial,
            not_before: parts.not_before,
            not_after: parts.not_after,
            bits,
            uid: crate::rsa::new_key_id(),
        })
    }

    /// Celery's `get_id()`: issuer values joined by spaces, a space, the decimal serial.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Celery's `get_issuer()`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number in decimal (may be negative, as Python reads it).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// notAfter as Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// notBefore as Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The key laid out for the batch kernel in use (`mb::kernel`), when it
    /// can check `signature` (the key fits, the signature has its length).
    pub(crate) fn simd_key_for(&self, signature: &[u8]) -> Option<&MbKey> {
        self.mb
            .as_ref()
            .filter(|k| k.len() == signature.len() && k.usable())
    }

    /// The key for the one-number kernel (IFMA only, `mb::public_op_one`).
    fn simd_one_key_for(&self, signature: &[u8]) -> Option<&MbKey> {
        self.mb
            .as_ref()
            .filter(|k| k.len() == signature.len() && crate::mb::one_available())
    }

    /// Signature length in bytes for this key.
    pub fn signature_len(&self) -> usize {
        self.pubkey.size()
    }

    /// Celery's `has_expired()`: `now >= notAfter`.
    pub fn has_expired_at(&self, now_unix_ms: i64) -> bool {
        now_unix_ms >= self.not_after.saturating_mul(1000)
    }

    pub fn has_expired(&self) -> bool {
        self.has_expired_at(now_unix_ms())
    }

    /// Not valid yet: `now < notBefore` (Celery does not check notBefore).
    pub fn is_not_yet_valid_at(&self, now_unix_ms: i64) -> bool {
        now_unix_ms < self.not_before.saturating_mul(1000)
    }

    /// Refuses a certificate outside its validity period at `now_unix_ms`:
    /// expired (Celery's check, its message) or not valid yet (celery-sign's
    /// addition; the same code, `ERR_CERTIFICATE_EXPIRED`).
    pub fn check_validity_at(&self, now_unix_ms: i64) -> Result<()> {
        if self.has_expired_at(now_unix_ms) {
            return Err(Error::new(
                ErrorCode::CertificateExpired,
                format!("Expired certificate: '{}'", self.id),
            ));
        }
        if self.is_not_yet_valid_at(now_unix_ms) {
            return Err(Error::new(
                ErrorCode::CertificateExpired,
                format!("Certificate not yet valid: '{}'", self.id),
            ));
        }
        Ok(())
    }

    /// Celery's `Certificate.verify`: refuses an expired certificate (and one
    /// not valid yet), then checks an RSA-PSS signature of any salt length.
    pub fn verify(&self, data: &[u8], signature: &[u8], digest: Digest) -> Result<()> {
        self.check_validity_at(now_unix_ms())?;
        self.verify_signature(data, signature, digest)
    }

    /// The signature check alone.
    pub fn verify_signature(&self, data: &[u8], signature: &[u8], digest: Digest) -> Result<()> {
        let ok = match self.simd_one_key_for(signature) {
            Some(key) => crate::rsa::verify_pss_simd(key, digest, data, signature),
            None => crate::rsa::verify_pss(self.uid, &self.pubkey, digest, data, signature),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::BadSignature, "Bad signature"))
        }
    }
}

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
