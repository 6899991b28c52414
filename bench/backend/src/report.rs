//! Turns the TSV files written by run.sh into the Markdown tables of RESULTS.md.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

fn lines(dir: &Path, file: &str, tag: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.first().map(String::as_str) == Some(tag))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{}", x.round() as i64);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    let m = median(&mut s);
    format!(
        "**{}** ({}–{})",
        thousands(m),
        thousands(s[0]),
        thousands(s[s.len() - 1])
    )
}

/// A sample during which other processes used less than this (% of one core) counts as quiet.
const QUIET_PCT: f64 = crate::harness::QUIET_PCT;

const ORDER: [&str; 4] = ["vendored", "aws-lc", "raw-aws-lc", "system"];

const CASE_DOC: [(&str, &str); 8] = [
    ("sign", "`Signer` (EVP_DigestSign one-shot over 512 B), new ctx per op, salt = max (-2)"),
    ("verify", "`Verifier` (EVP_DigestVerify one-shot over 512 B), new ctx per op, salt auto (-2)"),
    ("verify.own-key", "as `verify`, but each thread parses its own copy of the public key (is sharing one `PKey` across threads contended?)"),
    ("verify.hash+newctx", "hash 512 B separately, then a new `PkeyCtx` per verify (init + PSS params + verify)"),
    ("verify.hash+reinit", "hash 512 B separately, one `PkeyCtx` per thread, `verify_init` + PSS params before every verify"),
    ("verify.hash+setup-once", "hash 512 B separately, one `PkeyCtx` per thread set up once, then only `verify`"),
    ("verify.digest-only", "precomputed digest, ctx set up once: the bare RSA-PSS verify (≈ what `openssl speed` times)"),
    ("sign.digest-only", "precomputed digest, ctx set up once: the bare RSA-PSS sign (≈ what `openssl speed` times)"),
];

pub fn report(dir: &Path) -> Result<String, String> {
    let samples = lines(dir, "samples.tsv", "sample");
    if samples.is_empty() {
        return Err(format!(
            "no samples in {}",
            dir.join("samples.tsv").display()
        ));
    }
    let mut o = String::new();
    let mut labels: Vec<String> = Vec::new();
    for l in ORDER {
        if samples.iter().any(|f| f[1] == l) {
            labels.push(l.to_owned());
        }
    }

    // backend -> (case,bits,md,threads) -> ops
    type Key = (usize, u32, String, u32);
    let mut data: BTreeMap<String, BTreeMap<Key, Vec<f64>>> = BTreeMap::new();
    let mut order: Vec<(String, u32, String, u32)> = Vec::new();
    let mut quiet: BTreeMap<String, BTreeMap<Key, Vec<f64>>> = BTreeMap::new();
    let mut noise: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut retakes: BTreeMap<String, u32> = BTreeMap::new();
    let mut rounds = std::collections::BTreeSet::new();
    for f in &samples {
        let (label, case, bits, md, thr) = (
            &f[1],
            &f[3],
            f[4].parse::<u32>().unwrap_or(0),
            &f[5],
            f[6].parse::<u32>().unwrap_or(0),
        );
        rounds.insert(f[2].clone());
        let ops: f64 = f[7].parse().unwrap_or(f64::NAN);
        let k = (case.clone(), bits, md.clone(), thr);
        let idx = match order.iter().position(|x| *x == k) {
            Some(i) => i,
            None => {
                order.push(k.clone());
                order.len() - 1
            }
        };
        data.entry(label.clone())
            .or_default()
            .entry((idx, bits, md.clone(), thr))
            .or_default()
            .push(ops);
        let foreign: f64 = f[8].parse().unwrap_or(f64::NAN);
        if foreign < QUIET_PCT {
            quiet
                .entry(label.clone())
                .or_default()
                .entry((idx, bits, md.clone(), thr))
                .or_default()
                .push(ops);
        }
        *retakes.entry(label.clone()).or_default() += f
            .get(11)
            .and_then(|a| a.parse::<u32>().ok())
            .unwrap_or(1)
            .saturating_sub(1);
        let n = noise.entry(label.clone()).or_default();
        n.0.push(foreign);
        n.1.push(f[9].parse().unwrap_or(f64::NAN));
    }

    // Library versions, build time, size.
    let info = lines(dir, "info.tsv", "info");
    let builds = lines(dir, "builds.tsv", "build");
    let _ = writeln!(o, "## Backends\n");
    let _ = writeln!(
        o,
        "| backend | library | build from clean target dir | release binary (stripped) | links |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- |");
    for l in &labels {
        let lib = info
            .iter()
            .find(|f| f[1] == *l)
            .map(|f| f[2].clone())
            .unwrap_or_default();
        // The latest clean build if there is one (run.sh --clean), else the latest build.
        let b = builds
            .iter()
            .rev()
            .find(|f| f[1] == *l && f.get(4).map(String::as_str) == Some("clean"))
            .or_else(|| builds.iter().rev().find(|f| f[1] == *l));
        let (t, size, links) = match b {
            Some(f) => {
                let t: f64 = f[2].parse().unwrap_or(f64::NAN);
                let clean = f.get(4).map(|s| s == "clean").unwrap_or(false);
                let tl = f
                    .get(5)
                    .map(|s| format!(", load {s} at start"))
                    .unwrap_or_default();
                (
                    format!(
                        "{:.0} s{}{}",
                        t,
                        if clean { "" } else { " (incremental!)" },
                        tl
                    ),
                    format!("{:.2} MiB", f[3].parse::<f64>().unwrap_or(0.0) / 1048576.0),
                    f.get(6).cloned().unwrap_or_default(),
                )
            }
            None => ("-".into(), "-".into(), String::new()),
        };
        let _ = writeln!(o, "| {l} | {lib} | {t} | {size} | {links} |");
    }

    // The main table.
    let _ = writeln!(
        o,
        "\n## Throughput (ops/s, median of {} runs of ~1 s each, (min–max))\n",
        rounds.len()
    );
    let _ = write!(o, "| case | key | digest | threads |");
    for l in &labels {
        let _ = write!(o, " {l} |");
    }
    let _ = write!(o, "\n| --- | --- | --- | --- |");
    for _ in &labels {
        let _ = write!(o, " --- |");
    }
    let _ = writeln!(o);
    for (i, (case, bits, md, thr)) in order.iter().enumerate() {
        let _ = write!(o, "| {case} | RSA-{bits} | {md} | {thr} |");
        for l in &labels {
            let v = data
                .get(l)
                .and_then(|m| m.get(&(i, *bits, md.clone(), *thr)))
                .cloned()
                .unwrap_or_default();
            let _ = write!(o, " {} |", cell(&v));
        }
        let _ = writeln!(o);
    }

    // The same, from quiet samples only.
    let _ = writeln!(
        o,
        "\n### Quiet samples only (other processes used < {QUIET_PCT:.0}% of a core during the sample): median [n samples]\n"
    );
    let _ = write!(o, "| case | key | digest | threads |");
    for l in &labels {
        let _ = write!(o, " {l} |");
    }
    let _ = write!(o, "\n| --- | --- | --- | --- |");
    for _ in &labels {
        let _ = write!(o, " --- |");
    }
    let _ = writeln!(o);
    for (i, (case, bits, md, thr)) in order.iter().enumerate() {
        let _ = write!(o, "| {case} | RSA-{bits} | {md} | {thr} |");
        for l in &labels {
            let mut v = quiet
                .get(l)
                .and_then(|m| m.get(&(i, *bits, md.clone(), *thr)))
                .cloned()
                .unwrap_or_default();
            if v.is_empty() {
                let _ = write!(o, " - |");
            } else {
                let _ = write!(o, " {} [{}] |", thousands(median(&mut v)), v.len());
            }
        }
        let _ = writeln!(o);
    }

    // openssl speed reference.
    let speed = lines(dir, "speed.tsv", "speed");
    let mut sp: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for f in &speed {
        let e = sp.entry(f[1].clone()).or_default();
        e.0.push(f[2].parse().unwrap_or(f64::NAN));
        e.1.push(f[3].parse().unwrap_or(f64::NAN));
    }
    if !sp.is_empty() {
        let _ = writeln!(o, "\n## `openssl speed rsa2048` (system OpenSSL CLI, PKCS#1 v1.5, measured in the same run)\n");
        let _ = writeln!(o, "| command | runs | sign/s | verify/s |");
        let _ = writeln!(o, "| --- | --- | --- | --- |");
        for (k, (s, v)) in &sp {
            let _ = writeln!(o, "| `{k}` | {} | {} | {} |", s.len(), cell(s), cell(v));
        }
        // Ratios against openssl speed, 2048/sha256.
        let single = sp
            .iter()
            .find(|(k, _)| !k.contains("multi"))
            .map(|(_, v)| v.clone());
        let multi = sp
            .iter()
            .find(|(k, _)| k.contains("multi"))
            .map(|(_, v)| v.clone());
        let _ = writeln!(o, "\n### Ratio to `openssl speed` (RSA-2048, sha256; medians; 1 thread vs one core, 2 threads vs `-multi 2`)\n");
        let _ = writeln!(o, "| backend | sign 1t | verify 1t | sign 2t | verify 2t | bare sign 1t | bare verify 1t |");
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
        for l in &labels {
            let get = |case: &str, thr: u32| -> f64 {
                order
                    .iter()
                    .position(|k| k.0 == case && k.1 == 2048 && k.2 == "sha256" && k.3 == thr)
                    .and_then(|i| {
                        data.get(l)
                            .and_then(|m| m.get(&(i, 2048, "sha256".to_owned(), thr)))
                    })
                    .map(|v| median(&mut v.clone()))
                    .unwrap_or(f64::NAN)
            };
            let r = |x: f64, base: &Option<(Vec<f64>, Vec<f64>)>, sign: bool| -> String {
                match base {
                    Some((s, v)) => {
                        let b = if sign {
                            median(&mut s.clone())
                        } else {
                            median(&mut v.clone())
                        };
                        format!("{:.2}", x / b)
                    }
                    None => "-".into(),
                }
            };
            let _ = writeln!(
                o,
                "| {l} | {} | {} | {} | {} | {} | {} |",
                r(get("sign", 1), &single, true),
                r(get("verify", 1), &single, false),
                r(get("sign", 2), &multi, true),
                r(get("verify", 2), &multi, false),
                r(get("sign.digest-only", 1), &single, true),
                r(get("verify.digest-only", 1), &single, false),
            );
        }
    }

    let _ = writeln!(o, "\n### Cases\n");
    for (c, d) in CASE_DOC {
        let _ = writeln!(o, "- `{c}`: {d}");
    }
    let _ = writeln!(
        o,
        "- threads: N `std::thread`s, each with its own contexts, one parsed public/private key shared; \
         ops/s summed over threads. Every timed operation's result is asserted."
    );

    // Noise.
    let gates = lines(dir, "gate.tsv", "gate");
    let _ = writeln!(o, "\n## Noise\n");
    let _ = writeln!(
        o,
        "foreign CPU = CPU time used by other processes during each ~1 s sample (from /proc/stat minus this process), \
         in % of one core; steal = hypervisor steal. Load = 1-min load average when the sample started (it includes \
         this benchmark's own recent work). A sample with foreign CPU >= {QUIET_PCT:.0}% is re-taken (up to `run.sh --retries` times, \
         default 3; see the header), 3 s apart, and the quietest attempt kept.\n"
    );
    let _ = writeln!(
        o,
        "| backend | samples | foreign CPU median / max | steal median / max | samples kept with foreign >= {QUIET_PCT:.0}% | re-takes |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
    for l in &labels {
        if let Some((f, s)) = noise.get(l) {
            let busy = f.iter().filter(|x| **x >= QUIET_PCT).count();
            let (mut f2, mut s2) = (f.clone(), s.clone());
            let fm = median(&mut f2);
            let sm = median(&mut s2);
            let _ = writeln!(
                o,
                "| {l} | {} | {:.1}% / {:.1}% | {:.1}% / {:.1}% | {} | {} |",
                f.len(),
                fm,
                f2.last().copied().unwrap_or(f64::NAN),
                sm,
                s2.last().copied().unwrap_or(f64::NAN),
                busy,
                retakes.get(l).copied().unwrap_or(0)
            );
        }
    }
    if !gates.is_empty() {
        let _ = writeln!(o, "\nBefore each run (`uptime` load, seconds waited for quiet, other processes' CPU in the 3 s before start):\n");
        let _ = writeln!(
            o,
            "| round | run | load 1/5/15 min | waited | foreign CPU before |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- |");
        for g in &gates {
            let _ = writeln!(o, "| {} |", g[1..].join(" | "));
        }
    }

    // Correctness.
    let checks = lines(dir, "checks.tsv", "check");
    if !checks.is_empty() {
        let fails = checks
            .iter()
            .filter(|f| f.last().map(String::as_str) == Some("FAIL"))
            .count();
        let _ = writeln!(
            o,
            "\n## Correctness ({} checks over RSA-2048/sha256, 2048/sha512, 3072/sha256, 4096/sha256; {} failed)\n",
            checks.len(),
            fails
        );
        let _ = writeln!(
            o,
            "Salt lengths are recovered by hand (raw RSA public op + EMSA-PSS decoding), independently of the backend's PSS code. \
             `info` rows are observations, not requirements. RSA-2048/sha256 shown:\n"
        );
        let mut items: Vec<String> = Vec::new();
        for f in &checks {
            if f[2] == "2048" && f[3] == "sha256" && !items.contains(&f[4]) {
                items.push(f[4].clone());
            }
        }
        let _ = write!(o, "| check |");
        for l in &labels {
            let _ = write!(o, " {l} |");
        }
        let _ = write!(o, "\n| --- |");
        for _ in &labels {
            let _ = write!(o, " --- |");
        }
        let _ = writeln!(o);
        for it in &items {
            let _ = write!(o, "| {it} |");
            for l in &labels {
                let c = checks
                    .iter()
                    .find(|f| f[1] == *l && f[2] == "2048" && f[3] == "sha256" && f[4] == *it)
                    .map(|f| {
                        let v = if f[6] == "info" {
                            String::new()
                        } else {
                            format!(" {}", f[6])
                        };
                        format!("{}{}", f[5].replace('|', "\\|"), v)
                    })
                    .unwrap_or_else(|| "-".into());
                let _ = write!(o, " {c} |");
            }
            let _ = writeln!(o);
        }
        for f in checks
            .iter()
            .filter(|f| f.last().map(String::as_str) == Some("FAIL"))
        {
            let _ = writeln!(o, "\nFAILED: {}", f.join(" "));
        }
    }
    // Key formats.
    let kc = lines(dir, "checks.tsv", "keycheck");
    if !kc.is_empty() {
        let _ = writeln!(
            o,
            "\n### Private-key formats (loaded with the passphrase `secret` where encrypted, then used to sign; EC must be refused)\n"
        );
        let mut files: Vec<String> = Vec::new();
        for f in &kc {
            if f.len() >= 5 && !files.contains(&f[2]) {
                files.push(f[2].clone());
            }
        }
        let _ = write!(o, "| key file |");
        for l in &labels {
            let _ = write!(o, " {l} |");
        }
        let _ = write!(o, "\n| --- |");
        for _ in &labels {
            let _ = write!(o, " --- |");
        }
        let _ = writeln!(o);
        for file in &files {
            let _ = write!(o, "| {file} |");
            for l in &labels {
                let c = kc
                    .iter()
                    .find(|f| f.len() >= 5 && f[1] == *l && f[2] == *file)
                    .map(|f| format!("{}{}", f[3], if f[4] == "FAIL" { " **FAIL**" } else { "" }))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(o, " {c} |");
            }
            let _ = writeln!(o);
        }
    }

    // Cross-checks as a matrix: who verifies (rows) x who signed (columns).
    let mut cross: Vec<(String, String, String, String)> = Vec::new(); // verifier, signer, sig, cell
    for f in lines(dir, "checks.tsv", "import") {
        if f.len() < 7 {
            continue;
        }
        let (signer, rest) = f[4].split_once('/').unwrap_or((&f[4], ""));
        let sig = if rest.starts_with("sig-max") {
            "max"
        } else {
            "32"
        };
        let bad = if f[6] == "FAIL" { " **FAIL**" } else { "" };
        cross.push((
            format!("{} (salt -2)", f[1]),
            signer.to_owned(),
            sig.to_owned(),
            format!("{}{bad}", f[5]),
        ));
    }
    for f in lines(dir, "checks.tsv", "extcheck") {
        if f.len() < 4 {
            continue;
        }
        let (signer, rest) = f[2].split_once('/').unwrap_or((&f[2], ""));
        let sig = if rest.starts_with("sig-max") {
            "max"
        } else {
            "32"
        };
        let r = f[3]
            .replace("(want ok) ok", "")
            .replace("(want fail) ok", "(as wanted)")
            .replace(" ok", "");
        let r = r.replace("FAIL", "**FAIL**");
        cross.push((
            f[1].clone(),
            signer.to_owned(),
            sig.to_owned(),
            r.trim().to_owned(),
        ));
    }
    if !cross.is_empty() {
        let mut verifiers: Vec<String> = Vec::new();
        let mut signers: Vec<String> = Vec::new();
        for (v, sg, _, _) in &cross {
            if !verifiers.contains(v) {
                verifiers.push(v.clone());
            }
            if !signers.contains(sg) {
                signers.push(sg.clone());
            }
        }
        let _ = writeln!(
            o,
            "\n### Cross-checks (RSA-2048/sha256, 512-byte message; each signer made one signature with salt max and one with salt 32)\n"
        );
        let _ = write!(o, "| verifier \\ signer |");
        for sg in &signers {
            let _ = write!(o, " {sg} |");
        }
        let _ = write!(o, "\n| --- |");
        for _ in &signers {
            let _ = write!(o, " --- |");
        }
        let _ = writeln!(o);
        for v in &verifiers {
            let _ = write!(o, "| {v} |");
            for sg in &signers {
                let cells: Vec<String> = cross
                    .iter()
                    .filter(|c| c.0 == *v && c.1 == *sg)
                    .map(|c| format!("{}: {}", c.2, c.3))
                    .collect();
                let _ = write!(
                    o,
                    " {} |",
                    if cells.is_empty() {
                        "-".into()
                    } else {
                        cells.join(", ")
                    }
                );
            }
            let _ = writeln!(o);
        }
    }
    Ok(o)
}
