//! Signing as a serializer does it: a [`Sealer`] holds what a serializer fixes
//! once (its key, its certificate and so its Celery signer id, the digest, the
//! wire format); a call adds the inner content type, encoding and body.

use crate::batch::{self, Items};
use crate::cert::Certificate;
use crate::digest::Digest;
use crate::envelope::{self, WireFormat};
use crate::error::{Error, ErrorCode, Result};
use crate::key::PrivateKey;
use rayon::prelude::*;
use std::sync::Arc;

/// Signs and packs bodies: Celery's `SecureSerializer.serialize` after the
/// inner dumps, one body ([`Sealer::seal`]) or a batch on the pool
/// ([`Sealer::seal_many`]).
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Arc<PrivateKey>,
    cert: Arc<Certificate>,
    digest: Digest,
    format: WireFormat,
}

impl Sealer {
    /// Signs with `key` as the signer `cert` names (its Celery id). The two
    /// are not checked against each other: a worker that holds `cert` refuses
    /// what another key signed.
    pub fn new(
        key: Arc<PrivateKey>,
        cert: Arc<Certificate>,
        digest: Digest,
        format: WireFormat,
    ) -> Sealer {
        Sealer {
            key,
            cert,
            digest,
            format,
        }
    }

    /// The signer id written into every payload (the certificate's Celery id).
    pub fn signer_id(&self) -> &str {
        self.cert.id()
    }

    pub fn certificate(&self) -> &Arc<Certificate> {
        &self.cert
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// Refuses (`ERR_CERTIFICATE_EXPIRED`) while the certificate is outside
    /// its validity period at `now_unix_ms`, as a worker would refuse what it
    /// signs. [`Sealer::seal`] and [`Sealer::seal_many`] do not check: the
    /// caller does, once, when the call is made.
    pub fn check_validity_at(&self, now_unix_ms: i64) -> Result<()> {
        let id = self.cert.id();
        let refusal = if self.cert.has_expired_at(now_unix_ms) {
            format!("Cannot sign: this serializer's certificate has expired: '{id}'")
        } else if self.cert.is_not_yet_valid_at(now_unix_ms) {
            format!("Cannot sign: this serializer's certificate is not valid yet: '{id}'")
        } else {
            return Ok(());
        };
        Err(Error::new(ErrorCode::CertificateExpired, refusal))
    }

    /// Signs `body` and packs it on the calling thread.
    pub fn seal(&self, content_type: &str, content_encoding: &str, body: &[u8]) -> Result<String> {
        // Before the costly signature.
        envelope::check_writable(self.format, content_type, body)?;
        let signature = self.key.sign(body, self.digest)?;
        Ok(envelope::pack_checked(
            self.format,
            self.cert.id(),
            &signature,
            content_type,
            content_encoding,
            body,
        ))
    }

    /// Signs and packs every body on the pool. Fails as a whole only when the
    /// pool cannot be built; a body whose signing panics (a bug) gets
    /// `ERR_INTERNAL` in its own slot.
    pub fn seal_many(
        &self,
        content_type: &str,
        content_encoding: &str,
        bodies: Items<'_>,
    ) -> Result<Vec<Result<String>>> {
        Ok(batch::pool()?.install(|| {
            (0..bodies.len())
                .into_par_iter()
                .map(|i| {
                    crate::error::catch(|| {
                        #[cfg(test)]
                        if bodies.item(i) == tests::PANIC_BODY {
                            panic!("test: a panic sealing one item");
                        }
                        self.seal(content_type, content_encoding, bodies.item(i))
                    })
                })
                .collect()
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::Packed;
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};

    /// A body whose sealing panics (test builds only, see `seal_many`).
    pub(crate) const PANIC_BODY: &[u8] = b"celery-sign-test-panic";

    /// An RSA-1024 key and a self-signed certificate for it, valid from
    /// `from` to `to` days from now.
    fn identity(from: i64, to: i64) -> (Arc<PrivateKey>, Arc<Certificate>) {
        let pkey = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "x").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&pkey).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = |d: i64| Asn1Time::from_unix(now + d * 86400).unwrap();
        b.set_not_before(&day(from)).unwrap();
        b.set_not_after(&day(to)).unwrap();
        b.sign(&pkey, MessageDigest::sha256()).unwrap();
        let cert = Certificate::from_pem(&b.build().to_pem().unwrap()).unwrap();
        let key = PrivateKey::from_pem(&pkey.private_key_to_pem_pkcs8().unwrap(), None).unwrap();
        (Arc::new(key), Arc::new(cert))
    }

    fn sealer(key: Arc<PrivateKey>, cert: Arc<Certificate>) -> Sealer {
        Sealer::new(key, cert, Digest::Sha256, WireFormat::Celery55)
    }

    #[test]
    fn a_body_whose_sealing_panics_fails_alone() {
        let (key, cert) = identity(-1, 30);
        let bodies: Vec<&[u8]> = vec![b"[1]", PANIC_BODY, b"[3]"];
        let out = sealer(key, cert)
            .seal_many(
                "application/json",
                "utf-8",
                Packed::from_items(&bodies).items(),
            )
            .unwrap();
        assert!(out[0].is_ok() && out[2].is_ok());
        assert_eq!(out[1].as_ref().unwrap_err().code, ErrorCode::Internal);
    }

    #[test]
    fn refuses_to_sign_outside_the_validity_period() {
        let now = crate::cert::now_unix_ms();
        let (key, cert) = identity(1, 30);
        let id = cert.id().to_owned();
        let soon = sealer(key, cert).check_validity_at(now).unwrap_err();
        assert_eq!(soon.code, ErrorCode::CertificateExpired);
        assert_eq!(
            soon.message,
            format!("Cannot sign: this serializer's certificate is not valid yet: '{id}'")
        );
        let (key, cert) = identity(-30, -1);
        let id = cert.id().to_owned();
        let old = sealer(key, cert).check_validity_at(now).unwrap_err();
        assert_eq!(old.code, ErrorCode::CertificateExpired);
        assert_eq!(
            old.message,
            format!("Cannot sign: this serializer's certificate has expired: '{id}'")
        );
        let (key, cert) = identity(-1, 30);
        assert!(sealer(key, cert).check_validity_at(now).is_ok());
    }
}
