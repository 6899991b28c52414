//! The `openssl` crate (0.10.82) over vendored OpenSSL, AWS-LC or the system OpenSSL.
//! This is exactly the API the product's `crates/core` would use.

use crate::common::{Backend, Dg, Res};
use openssl::hash::{hash, MessageDigest};
use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

pub struct Ossl;

/// First error's reason only (e.g. "bad signature"), to keep the tables readable.
fn e(x: openssl::error::ErrorStack) -> String {
    match x.errors().first() {
        Some(f) => f
            .reason()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("error code {:#x}", f.code())),
        None => "rejected, nothing on the error queue".into(),
    }
}

fn md(dg: Dg) -> MessageDigest {
    match dg {
        Dg::Sha256 => MessageDigest::sha256(),
        Dg::Sha512 => MessageDigest::sha512(),
    }
}

fn md_ref(dg: Dg) -> &'static MdRef {
    match dg {
        Dg::Sha256 => Md::sha256(),
        Dg::Sha512 => Md::sha512(),
    }
}

/// PSS parameters on an initialised EVP_PKEY_CTX (after `verify_init`/`sign_init`:
/// initialising resets them, so they must be set again after every init).
fn pss<T>(c: &mut PkeyCtx<T>, dg: Dg, salt: i32) -> Result<(), openssl::error::ErrorStack> {
    c.set_rsa_padding(Padding::PKCS1_PSS)?;
    c.set_signature_md(md_ref(dg))?;
    c.set_rsa_mgf1_md(md_ref(dg))?;
    c.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
}

impl Backend for Ossl {
    type Priv = PKey<Private>;
    type Pub = PKey<Public>;
    type VCtx = PkeyCtx<Public>;
    type SCtx = PkeyCtx<Private>;

    fn label(&self) -> &'static str {
        if cfg!(feature = "vendored") {
            "vendored"
        } else if cfg!(feature = "aws-lc") {
            "aws-lc"
        } else {
            "system"
        }
    }

    fn lib_version(&self) -> String {
        openssl::version::version().to_string()
    }

    fn generate(&self, bits: u32) -> Res<(Self::Priv, Vec<u8>)> {
        let k = PKey::from_rsa(Rsa::generate(bits).map_err(e)?).map_err(e)?;
        let der = k.public_key_to_der().map_err(e)?;
        Ok((k, der))
    }

    fn parse_public(&self, spki_der: &[u8]) -> Res<Self::Pub> {
        PKey::public_key_from_der(spki_der).map_err(e)
    }

    fn sign(&self, k: &Self::Priv, dg: Dg, salt: Option<i32>, msg: &[u8]) -> Res<Vec<u8>> {
        let mut s = Signer::new(md(dg), k).map_err(e)?;
        s.set_rsa_padding(Padding::PKCS1_PSS).map_err(e)?;
        s.set_rsa_mgf1_md(md(dg)).map_err(e)?;
        if let Some(salt) = salt {
            s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
                .map_err(e)?;
        }
        s.sign_oneshot_to_vec(msg).map_err(e)
    }

    fn verify(
        &self,
        k: &Self::Pub,
        dg: Dg,
        salt: Option<i32>,
        msg: &[u8],
        sig: &[u8],
    ) -> Res<bool> {
        let mut v = Verifier::new(md(dg), k).map_err(e)?;
        v.set_rsa_padding(Padding::PKCS1_PSS).map_err(e)?;
        v.set_rsa_mgf1_md(md(dg)).map_err(e)?;
        if let Some(salt) = salt {
            v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
                .map_err(e)?;
        }
        v.verify_oneshot(sig, msg).map_err(e)
    }

    fn load_private_pem(&self, pem: &[u8], pass: &[u8]) -> Res<(Self::Priv, u32)> {
        let k = PKey::private_key_from_pem_passphrase(pem, pass).map_err(e)?;
        if k.id() != openssl::pkey::Id::RSA {
            return Err(format!("not an RSA key ({:?})", k.id()));
        }
        let bits = k.bits();
        Ok((k, bits))
    }

    fn digest(&self, dg: Dg, msg: &[u8]) -> Vec<u8> {
        hash(md(dg), msg).expect("digest").to_vec()
    }

    fn public_raw(&self, k: &Self::Pub, sig: &[u8]) -> Res<Vec<u8>> {
        let rsa = k.rsa().map_err(e)?;
        let mut out = vec![0u8; rsa.size() as usize];
        let n = rsa
            .public_decrypt(sig, &mut out, Padding::NONE)
            .map_err(e)?;
        out.truncate(n);
        Ok(out)
    }

    fn verify_digest_new_ctx(
        &self,
        k: &Self::Pub,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool> {
        let mut c = PkeyCtx::new(k).map_err(e)?;
        c.verify_init().map_err(e)?;
        pss(&mut c, dg, salt).map_err(e)?;
        // Gotcha: PkeyCtx::verify reports a bad PSS signature as Err (errors on the
        // queue), not Ok(false); the check shows which. Treat Err as "invalid".
        c.verify(digest, sig).map_err(e)
    }

    fn vctx(&self, k: &Self::Pub) -> Res<Self::VCtx> {
        PkeyCtx::new(k).map_err(e)
    }

    fn verify_digest_reinit(
        &self,
        c: &mut Self::VCtx,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool> {
        c.verify_init().map_err(e)?;
        pss(c, dg, salt).map_err(e)?;
        c.verify(digest, sig).map_err(e)
    }

    fn vctx_setup(&self, c: &mut Self::VCtx, dg: Dg, salt: i32) -> Res<()> {
        c.verify_init().map_err(e)?;
        pss(c, dg, salt).map_err(e)
    }

    fn verify_digest_setup(&self, c: &mut Self::VCtx, digest: &[u8], sig: &[u8]) -> Res<bool> {
        c.verify(digest, sig).map_err(e)
    }

    fn sctx(&self, k: &Self::Priv, dg: Dg, salt: i32) -> Res<Self::SCtx> {
        let mut c = PkeyCtx::new(k).map_err(e)?;
        c.sign_init().map_err(e)?;
        pss(&mut c, dg, salt).map_err(e)?;
        Ok(c)
    }

    fn sign_digest_setup(&self, c: &mut Self::SCtx, digest: &[u8], out: &mut Vec<u8>) -> Res<()> {
        out.clear();
        c.sign_to_vec(digest, out).map(|_| ()).map_err(e)
    }
}
