//! X.509 certificates with an RSA public key, identified the way Celery does.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode, Result};
use crate::name;
use openssl::asn1::Asn1Time;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509;

pub struct Certificate {
    pubkey: PKey<Public>,
    id: String,
    issuer: String,
    serial: String,
    not_after: i64,
    bits: u32,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
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
        let x509 = X509::from_pem(pem)
            .map_err(|_| invalid("could not parse the PEM X.509 certificate"))?;
        let pubkey = x509
            .public_key()
            .map_err(|_| invalid("could not read the certificate's public key"))?;
        if pubkey.id() != Id::RSA {
            return Err(Error::new(
                ErrorCode::UnsupportedKeyType,
                "Invalid certificate: Non-RSA certificates are not supported.",
            ));
        }
        let issuer_der = x509
            .issuer_name()
            .to_der()
            .map_err(|_| invalid("could not encode the issuer name"))?;
        let issuer = name::issuer_string(&issuer_der)
            .ok_or_else(|| invalid("the issuer name has a value that is not text"))?;
        let serial = x509
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_dec_str().map(|s| s.to_string()))
            .map_err(|_| invalid("could not read the serial number"))?;
        let not_after = Asn1Time::from_unix(0)
            .and_then(|epoch| epoch.diff(x509.not_after()))
            .map(|d| i64::from(d.days) * 86_400 + i64::from(d.secs))
            .map_err(|_| invalid("could not read notAfter"))?;
        let bits = pubkey.bits();
        let id = format!("{issuer} {serial}");
        Ok(Certificate {
            pubkey,
            id,
            issuer,
            serial,
            not_after,
            bits,
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

    pub fn bits(&self) -> u32 {
        self.bits
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

    /// Celery's `Certificate.verify`: refuses an expired certificate, then checks
    /// an RSA-PSS signature of any salt length.
    pub fn verify(&self, data: &[u8], signature: &[u8], digest: Digest) -> Result<()> {
        if self.has_expired() {
            return Err(Error::new(
                ErrorCode::CertificateExpired,
                format!("Expired certificate: '{}'", self.id),
            ));
        }
        self.verify_signature(data, signature, digest)
    }

    /// The signature check alone.
    pub fn verify_signature(&self, data: &[u8], signature: &[u8], digest: Digest) -> Result<()> {
        if crate::rsa::verify_pss(&self.pubkey, digest, data, signature) {
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
