//! aws-lc-sys called directly (no openssl crate): the same EVP calls, to see whether
//! the openssl-crate layer costs anything.

use crate::common::{Backend, Dg, Res};
use aws_lc_sys as ffi;
use std::ptr::null_mut;

pub struct Raw;

/// An owned EVP_PKEY.
pub struct Key(*mut ffi::EVP_PKEY);
// SAFETY: an EVP_PKEY that is no longer mutated may be used from several threads at
// once (AWS-LC guards the lazily computed RSA Montgomery/blinding state with locks).
unsafe impl Send for Key {}
// SAFETY: see above; only `&self` read-only uses are shared.
unsafe impl Sync for Key {}
impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { ffi::EVP_PKEY_free(self.0) }
    }
}

/// An owned EVP_PKEY_CTX (per thread).
pub struct Ctx(*mut ffi::EVP_PKEY_CTX);
impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: we own the context.
        unsafe { ffi::EVP_PKEY_CTX_free(self.0) }
    }
}

fn err(what: &str) -> String {
    // SAFETY: reads and clears this thread's error queue.
    let code = unsafe { ffi::ERR_get_error() };
    // SAFETY: clears this thread's error queue.
    unsafe { ffi::ERR_clear_error() };
    if code == 0 {
        format!("{what} rejected, nothing on the error queue")
    } else {
        format!("{what} failed (error {code:#x})")
    }
}

fn md(dg: Dg) -> *const ffi::EVP_MD {
    // SAFETY: static digest tables.
    unsafe {
        match dg {
            Dg::Sha256 => ffi::EVP_sha256(),
            Dg::Sha512 => ffi::EVP_sha512(),
        }
    }
}

/// PSS parameters on an initialised context. `salt == None` leaves the default.
///
/// # Safety
/// `c` must be a valid, initialised (sign or verify) RSA context.
unsafe fn pss(c: *mut ffi::EVP_PKEY_CTX, dg: Dg, salt: Option<i32>, with_md: bool) -> Res<()> {
    if ffi::EVP_PKEY_CTX_set_rsa_padding(c, ffi::RSA_PKCS1_PSS_PADDING) != 1 {
        return Err(err("set_rsa_padding"));
    }
    if with_md && ffi::EVP_PKEY_CTX_set_signature_md(c, md(dg)) != 1 {
        return Err(err("set_signature_md"));
    }
    if ffi::EVP_PKEY_CTX_set_rsa_mgf1_md(c, md(dg)) != 1 {
        return Err(err("set_rsa_mgf1_md"));
    }
    if let Some(s) = salt {
        if ffi::EVP_PKEY_CTX_set_rsa_pss_saltlen(c, s) != 1 {
            return Err(err("set_rsa_pss_saltlen"));
        }
    }
    Ok(())
}

impl Backend for Raw {
    type Priv = Key;
    type Pub = Key;
    type VCtx = Ctx;
    type SCtx = Ctx;

    fn label(&self) -> &'static str {
        "raw-aws-lc"
    }

    fn lib_version(&self) -> String {
        format!(
            "AWS-LC {} (aws-lc-sys, direct)",
            String::from_utf8_lossy(
                &ffi::AWSLC_VERSION_NUMBER_STRING[..ffi::AWSLC_VERSION_NUMBER_STRING.len() - 1]
            )
        )
    }

    fn generate(&self, bits: u32) -> Res<(Key, Vec<u8>)> {
        // SAFETY: standard keygen sequence; every pointer is checked; the context is freed.
        unsafe {
            let c = Ctx(ffi::EVP_PKEY_CTX_new_id(ffi::EVP_PKEY_RSA, null_mut()));
            if c.0.is_null()
                || ffi::EVP_PKEY_keygen_init(c.0) != 1
                || ffi::EVP_PKEY_CTX_set_rsa_keygen_bits(c.0, bits as i32) != 1
            {
                return Err(err("keygen init"));
            }
            let mut k = null_mut();
            if ffi::EVP_PKEY_keygen(c.0, &mut k) != 1 {
                return Err(err("keygen"));
            }
            let k = Key(k);
            let n = ffi::i2d_PUBKEY(k.0, null_mut());
            if n <= 0 {
                return Err(err("i2d_PUBKEY"));
            }
            let mut der = vec![0u8; n as usize];
            let mut p = der.as_mut_ptr();
            if ffi::i2d_PUBKEY(k.0, &mut p) != n {
                return Err(err("i2d_PUBKEY"));
            }
            Ok((k, der))
        }
    }

    fn parse_public(&self, spki_der: &[u8]) -> Res<Key> {
        // SAFETY: d2i reads at most len bytes from a valid slice.
        unsafe {
            let mut p = spki_der.as_ptr();
            let k = ffi::d2i_PUBKEY(null_mut(), &mut p, spki_der.len() as _);
            if k.is_null() {
                return Err(err("d2i_PUBKEY"));
            }
            Ok(Key(k))
        }
    }

    fn sign(&self, k: &Key, dg: Dg, salt: Option<i32>, msg: &[u8]) -> Res<Vec<u8>> {
        // SAFETY: the md ctx owns the pkey ctx set up by DigestSignInit; both freed below.
        unsafe {
            let m = ffi::EVP_MD_CTX_new();
            let mut pc = null_mut();
            let r = (|| {
                if ffi::EVP_DigestSignInit(m, &mut pc, md(dg), null_mut(), k.0) != 1 {
                    return Err(err("DigestSignInit"));
                }
                pss(pc, dg, salt, false)?;
                let mut len = ffi::EVP_PKEY_size(k.0) as usize;
                let mut out = vec![0u8; len];
                if ffi::EVP_DigestSign(m, out.as_mut_ptr(), &mut len, msg.as_ptr(), msg.len()) != 1
                {
                    return Err(err("DigestSign"));
                }
                out.truncate(len);
                Ok(out)
            })();
            ffi::EVP_MD_CTX_free(m);
            r
        }
    }

    fn verify(&self, k: &Key, dg: Dg, salt: Option<i32>, msg: &[u8], sig: &[u8]) -> Res<bool> {
        // SAFETY: as in sign.
        unsafe {
            let m = ffi::EVP_MD_CTX_new();
            let mut pc = null_mut();
            let r = (|| {
                if ffi::EVP_DigestVerifyInit(m, &mut pc, md(dg), null_mut(), k.0) != 1 {
                    return Err(err("DigestVerifyInit"));
                }
                pss(pc, dg, salt, false)?;
                let ok =
                    ffi::EVP_DigestVerify(m, sig.as_ptr(), sig.len(), msg.as_ptr(), msg.len()) == 1;
                if !ok {
                    ffi::ERR_clear_error();
                }
                Ok(ok)
            })();
            ffi::EVP_MD_CTX_free(m);
            r
        }
    }

    fn load_private_pem(&self, pem: &[u8], pass: &[u8]) -> Res<(Key, u32)> {
        let mut pass = pass.to_vec();
        pass.push(0);
        // SAFETY: the BIO reads from `pem`, which outlives it; with no callback the
        // default PEM callback takes the NUL-terminated passphrase from `u`.
        unsafe {
            let bio = ffi::BIO_new_mem_buf(pem.as_ptr() as _, pem.len() as _);
            if bio.is_null() {
                return Err(err("BIO_new_mem_buf"));
            }
            let k = ffi::PEM_read_bio_PrivateKey(bio, null_mut(), None, pass.as_mut_ptr() as _);
            ffi::BIO_free(bio);
            if k.is_null() {
                return Err(err("PEM_read_bio_PrivateKey"));
            }
            let k = Key(k);
            if ffi::EVP_PKEY_id(k.0) != ffi::EVP_PKEY_RSA {
                return Err("not an RSA key".into());
            }
            let bits = ffi::EVP_PKEY_bits(k.0) as u32;
            Ok((k, bits))
        }
    }

    fn digest(&self, dg: Dg, msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        let mut n: u32 = 0;
        // SAFETY: out holds EVP_MAX_MD_SIZE bytes.
        let r = unsafe {
            ffi::EVP_Digest(
                msg.as_ptr() as _,
                msg.len(),
                out.as_mut_ptr(),
                &mut n,
                md(dg),
                null_mut(),
            )
        };
        assert_eq!(r, 1, "EVP_Digest");
        out.truncate(n as usize);
        out
    }

    fn public_raw(&self, k: &Key, sig: &[u8]) -> Res<Vec<u8>> {
        // SAFETY: get0 borrows the RSA inside the key; out has RSA_size bytes.
        unsafe {
            let rsa = ffi::EVP_PKEY_get0_RSA(k.0);
            let mut out = vec![0u8; ffi::RSA_size(rsa) as usize];
            let n = ffi::RSA_public_decrypt(
                sig.len(),
                sig.as_ptr(),
                out.as_mut_ptr(),
                rsa,
                ffi::RSA_NO_PADDING,
            );
            if n < 0 {
                return Err(err("RSA_public_decrypt"));
            }
            out.truncate(n as usize);
            Ok(out)
        }
    }

    fn verify_digest_new_ctx(
        &self,
        k: &Key,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool> {
        let mut c = self.vctx(k)?;
        self.verify_digest_reinit(&mut c, dg, salt, digest, sig)
    }

    fn vctx(&self, k: &Key) -> Res<Ctx> {
        // SAFETY: the ctx takes its own reference to the key.
        let c = unsafe { ffi::EVP_PKEY_CTX_new(k.0, null_mut()) };
        if c.is_null() {
            return Err(err("EVP_PKEY_CTX_new"));
        }
        Ok(Ctx(c))
    }

    fn verify_digest_reinit(
        &self,
        c: &mut Ctx,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool> {
        self.vctx_setup(c, dg, salt)?;
        self.verify_digest_setup(c, digest, sig)
    }

    fn vctx_setup(&self, c: &mut Ctx, dg: Dg, salt: i32) -> Res<()> {
        // SAFETY: valid ctx owned by the caller's thread.
        unsafe {
            if ffi::EVP_PKEY_verify_init(c.0) != 1 {
                return Err(err("verify_init"));
            }
            pss(c.0, dg, Some(salt), true)
        }
    }

    fn verify_digest_setup(&self, c: &mut Ctx, digest: &[u8], sig: &[u8]) -> Res<bool> {
        // SAFETY: valid, set-up ctx; slices valid for their lengths.
        unsafe {
            let ok =
                ffi::EVP_PKEY_verify(c.0, sig.as_ptr(), sig.len(), digest.as_ptr(), digest.len())
                    == 1;
            if !ok {
                ffi::ERR_clear_error();
            }
            Ok(ok)
        }
    }

    fn sctx(&self, k: &Key, dg: Dg, salt: i32) -> Res<Ctx> {
        let c = self.vctx(k)?;
        // SAFETY: valid ctx.
        unsafe {
            if ffi::EVP_PKEY_sign_init(c.0) != 1 {
                return Err(err("sign_init"));
            }
            pss(c.0, dg, Some(salt), true)?;
        }
        Ok(c)
    }

    fn sign_digest_setup(&self, c: &mut Ctx, digest: &[u8], out: &mut Vec<u8>) -> Res<()> {
        // SAFETY: out is sized to the key size before the call.
        unsafe {
            let mut len = 0usize;
            if ffi::EVP_PKEY_sign(c.0, null_mut(), &mut len, digest.as_ptr(), digest.len()) != 1 {
                return Err(err("EVP_PKEY_sign (size)"));
            }
            out.resize(len, 0);
            if ffi::EVP_PKEY_sign(
                c.0,
                out.as_mut_ptr(),
                &mut len,
                digest.as_ptr(),
                digest.len(),
            ) != 1
            {
                return Err(err("EVP_PKEY_sign"));
            }
            out.truncate(len);
            Ok(())
        }
    }
}
