//! What every backend must offer, the correctness checks, and the timed cases.
//!
//! All calls follow the shape Celery needs: RSA-PSS, MGF1 with the message digest,
//! salt length = maximum when signing, salt length recovered when verifying.

use crate::harness::{measure, Sample};
use std::io::Write;

/// OpenSSL / BoringSSL / AWS-LC special salt-length values.
pub const SALT_DIGEST: i32 = -1;
/// `-2`: OpenSSL `RSA_PSS_SALTLEN_AUTO` = openssl crate `RsaPssSaltlen::MAXIMUM_LENGTH`:
/// maximum when signing, recovered from the signature when verifying (OpenSSL and AWS-LC).
pub const SALT_AUTO: i32 = -2;
/// `-3`: OpenSSL 3 `RSA_PSS_SALTLEN_MAX` (maximum on sign, and verify insists on maximum).
pub const SALT_MAX_OSSL3: i32 = -3;

/// Length of the signed message in every case (a small Celery task body).
pub const MSG_LEN: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dg {
    Sha256,
    Sha512,
}

impl Dg {
    pub fn name(self) -> &'static str {
        match self {
            Dg::Sha256 => "sha256",
            Dg::Sha512 => "sha512",
        }
    }
    pub fn len(self) -> usize {
        match self {
            Dg::Sha256 => 32,
            Dg::Sha512 => 64,
        }
    }
}

pub type Res<T> = Result<T, String>;

/// One crypto backend. `Priv`, `Pub` are parsed keys shared by all threads;
/// `VCtx`/`SCtx` are per-thread reusable `EVP_PKEY_CTX`s.
pub trait Backend: Sync {
    type Priv: Send + Sync;
    type Pub: Send + Sync;
    type VCtx;
    type SCtx;

    /// Short backend label (`vendored`, `aws-lc`, `system`, `raw-aws-lc`).
    fn label(&self) -> &'static str;
    /// Library version string as the library reports it.
    fn lib_version(&self) -> String;

    /// New RSA key (e = 65537); returns the private key and its SubjectPublicKeyInfo DER.
    fn generate(&self, bits: u32) -> Res<(Self::Priv, Vec<u8>)>;
    /// Parses a SubjectPublicKeyInfo DER (done once; every verify reuses it).
    fn parse_public(&self, spki_der: &[u8]) -> Res<Self::Pub>;

    /// EVP_DigestSign one-shot, new context. `salt == None`: leave the backend default.
    fn sign(&self, k: &Self::Priv, dg: Dg, salt: Option<i32>, msg: &[u8]) -> Res<Vec<u8>>;
    /// EVP_DigestVerify one-shot, new context. Ok(false) = bad signature.
    fn verify(&self, k: &Self::Pub, dg: Dg, salt: Option<i32>, msg: &[u8], sig: &[u8])
        -> Res<bool>;

    /// Loads a PEM private key (PKCS#1, PKCS#8, encrypted PKCS#8, legacy `Proc-Type: 4,ENCRYPTED`)
    /// with a passphrase; returns the key and its size in bits (RSA only, else Err).
    fn load_private_pem(&self, pem: &[u8], pass: &[u8]) -> Res<(Self::Priv, u32)>;

    /// Message digest by itself.
    fn digest(&self, dg: Dg, msg: &[u8]) -> Vec<u8>;
    /// Raw RSA public operation (no padding): returns EM, for recovering the salt length.
    fn public_raw(&self, k: &Self::Pub, sig: &[u8]) -> Res<Vec<u8>>;

    /// New EVP_PKEY_CTX for this verify, on a precomputed digest.
    fn verify_digest_new_ctx(
        &self,
        k: &Self::Pub,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool>;
    /// A per-thread context (not initialised for any operation yet).
    fn vctx(&self, k: &Self::Pub) -> Res<Self::VCtx>;
    /// `verify_init` + padding/md/mgf1/salt every time, then verify.
    fn verify_digest_reinit(
        &self,
        c: &mut Self::VCtx,
        dg: Dg,
        salt: i32,
        digest: &[u8],
        sig: &[u8],
    ) -> Res<bool>;
    /// Initialise + set the PSS parameters once ...
    fn vctx_setup(&self, c: &mut Self::VCtx, dg: Dg, salt: i32) -> Res<()>;
    /// ... then verify again and again without re-initialising.
    fn verify_digest_setup(&self, c: &mut Self::VCtx, digest: &[u8], sig: &[u8]) -> Res<bool>;

    /// A per-thread signing context, initialised and set up once (PSS, md, mgf1, salt).
    fn sctx(&self, k: &Self::Priv, dg: Dg, salt: i32) -> Res<Self::SCtx>;
    /// EVP_PKEY_sign on a precomputed digest with the set-up context.
    fn sign_digest_setup(&self, c: &mut Self::SCtx, digest: &[u8], out: &mut Vec<u8>) -> Res<()>;
}

/// Deterministic 512-byte "task body".
pub fn message(seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..MSG_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Recovers the PSS salt length from a signature by hand (RFC 8017, EMSA-PSS-VERIFY
/// steps on the raw public-key output), independently of the backend's PSS code.
pub fn recovered_salt_len<B: Backend>(
    b: &B,
    k: &B::Pub,
    bits: u32,
    dg: Dg,
    sig: &[u8],
) -> Res<usize> {
    let raw = b.public_raw(k, sig)?;
    let em_bits = bits as usize - 1;
    let em_len = em_bits.div_ceil(8);
    let em = &raw[raw.len() - em_len..];
    let h_len = dg.len();
    if em[em_len - 1] != 0xbc {
        return Err("EM does not end in 0xbc".into());
    }
    let db_len = em_len - h_len - 1;
    let h = &em[db_len..db_len + h_len];
    // MGF1(H, db_len)
    let mut mask = Vec::with_capacity(db_len + h_len);
    let mut counter: u32 = 0;
    while mask.len() < db_len {
        let mut seed = h.to_vec();
        seed.extend_from_slice(&counter.to_be_bytes());
        mask.extend_from_slice(&b.digest(dg, &seed));
        counter += 1;
    }
    let mut db: Vec<u8> = em[..db_len].iter().zip(&mask).map(|(a, m)| a ^ m).collect();
    let top_bits = 8 * em_len - em_bits;
    db[0] &= 0xffu8 >> top_bits;
    let one = db.iter().position(|&x| x != 0).ok_or("DB is all zero")?;
    if db[one] != 0x01 {
        return Err("DB separator is not 0x01".into());
    }
    Ok(db_len - one - 1)
}

fn fmt_res(r: &Res<bool>) -> String {
    match r {
        Ok(true) => "true".into(),
        Ok(false) => "false".into(),
        Err(e) => format!("error({})", e.lines().next().unwrap_or("")),
    }
}

/// Correctness checks for one (bits, digest). Writes TSV lines
/// `check <backend> <bits> <md> <item> <result> <ok|FAIL|info>` and returns the number of failures.
pub fn check<B: Backend>(b: &B, bits: u32, dg: Dg, out: &mut impl Write) -> Res<usize> {
    let (k, spki) = b.generate(bits)?;
    let p = b.parse_public(&spki)?;
    let msg = message(1);
    let mut bad = message(1);
    bad[100] ^= 1;
    let em_len = (bits as usize - 1).div_ceil(8);
    let max = em_len - dg.len() - 2;
    let h = dg.len() as i32;
    let mut fails = 0;
    let mut line = |item: &str, result: String, verdict: &str| {
        if verdict == "FAIL" {
            fails += 1;
        }
        let _ = writeln!(
            out,
            "check\t{}\t{}\t{}\t{}\t{}\t{}",
            b.label(),
            bits,
            dg.name(),
            item,
            result,
            verdict
        );
    };
    let expect = |ok: bool| if ok { "ok" } else { "FAIL" };

    // Which salt length does each signing setting produce?
    let settings: [(&str, Option<i32>); 7] = [
        ("unset", None),
        ("-1", Some(SALT_DIGEST)),
        ("-2", Some(SALT_AUTO)),
        ("-3", Some(SALT_MAX_OSSL3)),
        ("0", Some(0)),
        ("hLen", Some(h)),
        ("max", Some(max as i32)),
    ];
    for (name, s) in settings {
        let r = b
            .sign(&k, dg, s, &msg)
            .and_then(|sig| recovered_salt_len(b, &p, bits, dg, &sig));
        let (res, verdict) = match (&r, name) {
            (Ok(n), "-2") => (n.to_string(), expect(*n == max)),
            (Ok(n), "0") => (n.to_string(), expect(*n == 0)),
            (Ok(n), "hLen") => (n.to_string(), expect(*n == dg.len())),
            (Ok(n), "max") => (n.to_string(), expect(*n == max)),
            (Ok(n), _) => (n.to_string(), "info"),
            (Err(e), "-2" | "0" | "hLen" | "max") => (format!("error({e})"), "FAIL"),
            (Err(e), _) => (format!("error({})", e.lines().next().unwrap_or("")), "info"),
        };
        line(&format!("sign salt={name} -> salt len"), res, verdict);
    }

    let sig_max = b.sign(&k, dg, Some(SALT_AUTO), &msg)?;
    let sig_h = b.sign(&k, dg, Some(h), &msg)?;
    let sig_0 = b.sign(&k, dg, Some(0), &msg)?;
    // One-shot verify (EVP_DigestVerify) under each salt setting.
    // (name, signature, message, salt setting, expected result; None = observation only)
    type VerifyCase<'a> = (&'a str, &'a [u8], &'a [u8], Option<i32>, Option<bool>);
    let cases: [VerifyCase; 11] = [
        (
            "verify sig(max) salt=-2 (auto)",
            &sig_max,
            &msg,
            Some(SALT_AUTO),
            Some(true),
        ),
        (
            "verify sig(max) salt=max explicit",
            &sig_max,
            &msg,
            Some(max as i32),
            Some(true),
        ),
        (
            "verify sig(max) salt=hLen explicit",
            &sig_max,
            &msg,
            Some(h),
            Some(false),
        ),
        (
            "verify sig(max) salt=-1 (digest)",
            &sig_max,
            &msg,
            Some(SALT_DIGEST),
            Some(false),
        ),
        (
            "verify sig(max) salt=-3",
            &sig_max,
            &msg,
            Some(SALT_MAX_OSSL3),
            None,
        ),
        ("verify sig(max) salt unset", &sig_max, &msg, None, None),
        (
            "verify sig(hLen) salt=-2 (auto)",
            &sig_h,
            &msg,
            Some(SALT_AUTO),
            Some(true),
        ),
        (
            "verify sig(hLen) salt=max explicit",
            &sig_h,
            &msg,
            Some(max as i32),
            Some(false),
        ),
        (
            "verify sig(hLen) salt=-3",
            &sig_h,
            &msg,
            Some(SALT_MAX_OSSL3),
            None,
        ),
        (
            "verify sig(0) salt=-2 (auto)",
            &sig_0,
            &msg,
            Some(SALT_AUTO),
            Some(true),
        ),
        (
            "verify sig(max) tampered msg salt=-2",
            &sig_max,
            &bad,
            Some(SALT_AUTO),
            Some(false),
        ),
    ];
    for (name, sig, m, salt, want) in cases {
        let r = b.verify(&p, dg, salt, m, sig);
        let verdict = match want {
            Some(w) => expect(r == Ok(w) || (!w && r.is_err())),
            None => "info",
        };
        line(name, fmt_res(&r), verdict);
    }

    // The EVP_PKEY_CTX paths used by the variants must give the same answers.
    let d = b.digest(dg, &msg);
    let d_bad = b.digest(dg, &bad);
    let nb = |r: Res<bool>| r.unwrap_or(false);
    line(
        "pkeyctx new ctx: good/bad",
        format!(
            "{}/{}",
            fmt_res(&b.verify_digest_new_ctx(&p, dg, SALT_AUTO, &d, &sig_max)),
            fmt_res(&b.verify_digest_new_ctx(&p, dg, SALT_AUTO, &d_bad, &sig_max))
        ),
        expect(
            nb(b.verify_digest_new_ctx(&p, dg, SALT_AUTO, &d, &sig_max))
                && !nb(b.verify_digest_new_ctx(&p, dg, SALT_AUTO, &d_bad, &sig_max))
                && nb(b.verify_digest_new_ctx(&p, dg, SALT_AUTO, &d, &sig_h)),
        ),
    );
    let mut c = b.vctx(&p)?;
    let seq = [
        b.verify_digest_reinit(&mut c, dg, SALT_AUTO, &d, &sig_max),
        b.verify_digest_reinit(&mut c, dg, SALT_AUTO, &d_bad, &sig_max),
        b.verify_digest_reinit(&mut c, dg, SALT_AUTO, &d, &sig_h),
        b.verify_digest_reinit(&mut c, dg, SALT_AUTO, &d, &sig_max),
    ];
    line(
        "pkeyctx reused+reinit: good/bad/good(hLen)/good",
        seq.iter().map(fmt_res).collect::<Vec<_>>().join("/"),
        expect(matches!(
            seq,
            [Ok(true), Ok(false) | Err(_), Ok(true), Ok(true)]
        )),
    );
    let mut c = b.vctx(&p)?;
    b.vctx_setup(&mut c, dg, SALT_AUTO)?;
    let seq = [
        b.verify_digest_setup(&mut c, &d, &sig_max),
        b.verify_digest_setup(&mut c, &d_bad, &sig_max),
        b.verify_digest_setup(&mut c, &d, &sig_h),
        b.verify_digest_setup(&mut c, &d, &sig_max),
    ];
    line(
        "pkeyctx reused, set up once: good/bad/good(hLen)/good",
        seq.iter().map(fmt_res).collect::<Vec<_>>().join("/"),
        expect(matches!(
            seq,
            [Ok(true), Ok(false) | Err(_), Ok(true), Ok(true)]
        )),
    );
    let mut s = b.sctx(&k, dg, SALT_AUTO)?;
    let mut sig2 = Vec::new();
    b.sign_digest_setup(&mut s, &d, &mut sig2)?;
    let n2 = recovered_salt_len(b, &p, bits, dg, &sig2)?;
    b.sign_digest_setup(&mut s, &d, &mut sig2)?;
    let ok2 = b.verify(&p, dg, Some(SALT_AUTO), &msg, &sig2);
    line(
        "pkeyctx sign set up once salt=-2: salt len, 2nd sig verifies",
        format!("{n2}, {}", fmt_res(&ok2)),
        expect(n2 == max && ok2 == Ok(true)),
    );
    Ok(fails)
}

/// Exports a 2048/sha256 key, message and signatures (salt max and salt hLen)
/// for the cross-checks done by run.sh (other backends, openssl CLI, Python `cryptography`).
pub fn export<B: Backend>(b: &B, dir: &std::path::Path) -> Res<()> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (k, spki) = b.generate(2048)?;
    let msg = message(7);
    let w = |n: &str, d: &[u8]| std::fs::write(dir.join(n), d).map_err(|e| e.to_string());
    w("spki.der", &spki)?;
    w("msg.bin", &msg)?;
    w(
        "sig-max.bin",
        &b.sign(&k, Dg::Sha256, Some(SALT_AUTO), &msg)?,
    )?;
    w("sig-32.bin", &b.sign(&k, Dg::Sha256, Some(32), &msg)?)?;
    Ok(())
}

/// Verifies every `<dir>/*/sig-*.bin` (salt auto, sha256) made by the other backends/tools.
pub fn import<B: Backend>(b: &B, dir: &std::path::Path, out: &mut impl Write) -> Res<usize> {
    let mut fails = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let d = e.path();
        let (Ok(spki), Ok(msg)) = (
            std::fs::read(d.join("spki.der")),
            std::fs::read(d.join("msg.bin")),
        ) else {
            continue;
        };
        let p = b.parse_public(&spki)?;
        for s in ["sig-max.bin", "sig-32.bin"] {
            let Ok(sig) = std::fs::read(d.join(s)) else {
                continue;
            };
            let r = b.verify(&p, Dg::Sha256, Some(SALT_AUTO), &msg, &sig);
            let salt = recovered_salt_len(b, &p, 2048, Dg::Sha256, &sig)
                .map(|n| n.to_string())
                .unwrap_or_else(|e| e);
            let ok = r == Ok(true);
            if !ok {
                fails += 1;
            }
            let from = e.file_name().to_string_lossy().into_owned();
            let _ = writeln!(
                out,
                "import\t{}\t2048\tsha256\t{from}/{s} (salt {salt}) salt=-2\t{}\t{}",
                b.label(),
                fmt_res(&r),
                if ok { "ok" } else { "FAIL" }
            );
        }
    }
    Ok(fails)
}

/// Loads every `<dir>/*.pem` private key (passphrase `secret` where encrypted), signs with it
/// (salt max) and verifies against `<dir>/<name>.spki.der` exported by the tool that made the key.
pub fn keys<B: Backend>(b: &B, dir: &std::path::Path, out: &mut impl Write) -> Res<usize> {
    let mut fails = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    let msg = message(9);
    for f in files {
        let name = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let r = (|| -> Res<String> {
            let pem = std::fs::read(&f).map_err(|e| e.to_string())?;
            let (k, bits) = b.load_private_pem(&pem, b"secret")?;
            let spki =
                std::fs::read(dir.join(format!("{name}.spki.der"))).map_err(|e| e.to_string())?;
            let p = b.parse_public(&spki)?;
            let sig = b.sign(&k, Dg::Sha256, Some(SALT_AUTO), &msg)?;
            match b.verify(&p, Dg::Sha256, Some(SALT_AUTO), &msg, &sig)? {
                true => Ok(format!("loaded, RSA-{bits}, signs")),
                false => Err("loaded, but its signature does not verify".into()),
            }
        })();
        let want_ok = !name.starts_with("refuse-");
        let ok = r.is_ok() == want_ok;
        if !ok {
            fails += 1;
        }
        let res = match r {
            Ok(s) => s,
            Err(e) => format!("refused: {e}"),
        };
        let _ = writeln!(
            out,
            "keycheck\t{}\t{name}\t{res}\t{}",
            b.label(),
            if ok { "ok" } else { "FAIL" }
        );
    }
    Ok(fails)
}

/// One timed case.
pub struct Case {
    pub name: &'static str,
    pub bits: u32,
    pub dg: Dg,
}

/// The timed cases, in the order they run.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (bits, dg) in [
        (2048, Dg::Sha256),
        (2048, Dg::Sha512),
        (3072, Dg::Sha256),
        (4096, Dg::Sha256),
    ] {
        v.push(Case {
            name: "sign",
            bits,
            dg,
        });
        v.push(Case {
            name: "verify",
            bits,
            dg,
        });
    }
    for name in [
        "verify.own-key",
        "verify.hash+newctx",
        "verify.hash+reinit",
        "verify.hash+setup-once",
        "verify.digest-only",
        "sign.digest-only",
    ] {
        v.push(Case {
            name,
            bits: 2048,
            dg: Dg::Sha256,
        });
    }
    v
}

pub struct Keys<B: Backend> {
    pub bits: u32,
    pub k: B::Priv,
    pub p: B::Pub,
    /// SubjectPublicKeyInfo DER, for the per-thread-key case.
    pub der: Vec<u8>,
}

/// Runs one case on `threads` threads for `secs` seconds; every operation's result is asserted.
pub fn run_case<B: Backend>(
    b: &B,
    keys: &Keys<B>,
    c: &Case,
    threads: usize,
    secs: f64,
) -> Res<Sample> {
    let dg = c.dg;
    let msg_v = message(3);
    let sig_v = b.sign(&keys.k, dg, Some(SALT_AUTO), &msg_v)?;
    let digest_v = b.digest(dg, &msg_v);
    let (msg, sig, digest) = (&msg_v[..], &sig_v[..], &digest_v[..]);
    let (k, p) = (&keys.k, &keys.p);
    let s = match c.name {
        "sign" => measure(threads, secs, || {
            move || b.sign(k, dg, Some(SALT_AUTO), msg).map(|s| !s.is_empty()) == Ok(true)
        }),
        "verify" => measure(threads, secs, || {
            move || b.verify(p, dg, Some(SALT_AUTO), msg, sig) == Ok(true)
        }),
        "verify.own-key" => measure(threads, secs, || {
            let own = b.parse_public(&keys.der).expect("parse");
            move || b.verify(&own, dg, Some(SALT_AUTO), msg, sig) == Ok(true)
        }),
        "verify.hash+newctx" => measure(threads, secs, || {
            move || {
                let d = b.digest(dg, msg);
                b.verify_digest_new_ctx(p, dg, SALT_AUTO, &d, sig) == Ok(true)
            }
        }),
        "verify.hash+reinit" => measure(threads, secs, || {
            let mut ctx = b.vctx(p).expect("ctx");
            move || {
                let d = b.digest(dg, msg);
                b.verify_digest_reinit(&mut ctx, dg, SALT_AUTO, &d, sig) == Ok(true)
            }
        }),
        "verify.hash+setup-once" => measure(threads, secs, || {
            let mut ctx = b.vctx(p).expect("ctx");
            b.vctx_setup(&mut ctx, dg, SALT_AUTO).expect("setup");
            move || {
                let d = b.digest(dg, msg);
                b.verify_digest_setup(&mut ctx, &d, sig) == Ok(true)
            }
        }),
        "verify.digest-only" => measure(threads, secs, || {
            let mut ctx = b.vctx(p).expect("ctx");
            b.vctx_setup(&mut ctx, dg, SALT_AUTO).expect("setup");
            move || b.verify_digest_setup(&mut ctx, digest, sig) == Ok(true)
        }),
        "sign.digest-only" => measure(threads, secs, || {
            let mut ctx = b.sctx(k, dg, SALT_AUTO).expect("ctx");
            let mut out = Vec::new();
            move || b.sign_digest_setup(&mut ctx, digest, &mut out).is_ok()
        }),
        other => return Err(format!("unknown case {other}")),
    };
    s.ok_or_else(|| format!("case {} returned a wrong answer during timing", c.name))
}
