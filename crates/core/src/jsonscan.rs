//! A pre-scan of kombu JSON bodies, done on the native threads so that the
//! event loop does not have to (see `loads` in src/json/loads.ts and src/json/hinted.ts, which consumes it;
//! crates/node runs it on the batch pool and hands its flags and literals
//! over). Pure and panic-free on any input (fuzzed: fuzz/fuzz_targets/jsonscan.rs).
//!
//! For one body it finds out, exactly as the JavaScript side would on the
//! same text:
//! - whether it is pure ASCII (then a Latin-1 decode, a plain copy, gives the
//!   same string as a UTF-8 decode);
//! - whether it may hold a kombu marker key (`__type__`, or a `\u00..` escape
//!   that could spell one), so that the marker pass can be skipped otherwise;
//! - whether it has sixteen digits in a row (the only way to an integer that
//!   `JSON.parse` would round), so that the search for one can be skipped.
//!
//! It also lifts long string values out of the text ("literals"): a string in
//! value position of at least [`MIN_LITERAL`] bytes, printable ASCII, with no
//! escape. Each is replaced in place by a placeholder string, `"\u0000<k>"`,
//! and handed over separately, so that `JSON.parse` only reads the small rest
//! and the long strings become JavaScript strings without being scanned again.
//! A placeholder cannot be confused with a real value: literals are lifted
//! only from a text that does not contain `\u0000` anywhere, and in JSON that
//! escape is the only way to put U+0000 into a string.
//!
//! A lifted literal's bytes are all in 0x20..=0x7f and contain neither `"` nor
//! `\`, so replacing it by another valid string body changes neither whether
//! the text is valid JSON (a parser reads both texts identically up to the
//! literal, and identically after it) nor anything but that one value.

use memchr::{memchr, memchr2, memmem};
use std::sync::OnceLock;

// The searchers of the needles looked for in every body, built once: building
// one costs about as much as searching a short body.
static TYPE_KEY: OnceLock<memmem::Finder<'static>> = OnceLock::new();
static ESCAPE: OnceLock<memmem::Finder<'static>> = OnceLock::new();
static NUL_ESCAPE: OnceLock<memmem::Finder<'static>> = OnceLock::new();

fn finder(
    cell: &'static OnceLock<memmem::Finder<'static>>,
    needle: &'static [u8],
) -> &'static memmem::Finder<'static> {
    cell.get_or_init(|| memmem::Finder::new(needle))
}

/// The shortest string value worth lifting out.
pub const MIN_LITERAL: usize = 8 * 1024;

pub const FLAG_UTF8: u32 = 1;
pub const FLAG_ASCII: u32 = 2;
pub const FLAG_SCANNED: u32 = 4;
pub const FLAG_HOOK: u32 = 8;
pub const FLAG_LONG_DIGITS: u32 = 16;
pub const FLAG_LITERALS: u32 = 32;

/// What the scan of one body found; the body may have been rewritten.
pub struct Scanned {
    pub flags: u32,
    /// The new length of the body (shorter when literals were lifted).
    pub len: usize,
    /// Lifted literals, in text order; placeholder `k` stands for `literals[k]`.
    pub literals: Vec<Vec<u8>>,
}

/// Whether `s` may hold a marker key: what `s.includes('__type__') ||
/// /\\u00(?:5[fF]|65|7[049])/.test(s)` says in src/json/loads.ts and src/json/hinted.ts.
fn may_hold_marker(s: &[u8]) -> bool {
    if finder(&TYPE_KEY, b"__type__").find(s).is_some() {
        return true;
    }
    finder(&ESCAPE, b"\\u00").find_iter(s).any(|at| {
        matches!(
            s.get(at + 4..at + 6),
            Some(b"5f" | b"5F" | b"65" | b"70" | b"74" | b"79")
        )
    })
}

/// Whether `s` has 16 ASCII digits in a row (`/\d{16}/`), 64 bytes at a time:
/// a mask of the digits, where bit `i` survives `m & m >> 1`, `>> 2`, `>> 4`,
/// `>> 8` only if bytes `i..i + 16` are all digits.
fn has_long_digits(s: &[u8]) -> bool {
    let mut carry = 0u32; // digits in a row at the end of the previous block
    let mut chunks = s.chunks_exact(64);
    for block in &mut chunks {
        let mut m = 0u64;
        for (i, &b) in block.iter().enumerate() {
            m |= u64::from(b.wrapping_sub(b'0') < 10) << i;
        }
        if m == 0 {
            carry = 0;
            continue;
        }
        if carry + m.trailing_ones() >= 16 {
            return true;
        }
        let mut r = m & (m >> 1);
        r &= r >> 2;
        r &= r >> 4;
        r &= r >> 8;
        if r != 0 {
            return true;
        }
        carry = m.leading_ones();
    }
    let mut run = carry;
    for &b in chunks.remainder() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 16 {
            return true;
        }
    }
    false
}

/// Whether every byte is in 0x20..=0x7f (what a lifted literal may hold).
fn is_plain(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(64);
    for block in &mut chunks {
        // No early exit inside a block: the loop vectorizes.
        let bad = block
            .iter()
            .fold(0u8, |acc, &b| acc | u8::from(b.wrapping_sub(0x20) >= 0x60));
        if bad != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b.wrapping_sub(0x20) < 0x60)
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The string bodies worth lifting: `(start, end)` of the bytes between the quotes.
fn find_literals(s: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    // Outside a string, a quote always opens one (in any text a JSON parser
    // accepts up to that point).
    while let Some(rel) = memchr(b'"', &s[i..]) {
        let start = i + rel + 1;
        let mut j = start;
        let mut escaped = false;
        let end = loop {
            match memchr2(b'"', b'\\', &s[j.min(s.len())..]) {
                None => return found, // unterminated: leave the rest alone
                Some(r) if s[j + r] == b'\\' => {
                    escaped = true;
                    j += r + 2;
                }
                Some(r) => break j + r,
            }
        };
        i = end + 1;
        if escaped || end - start < MIN_LITERAL {
            continue;
        }
        let key = s[i..]
            .iter()
            .find(|&&b| !is_json_space(b))
            .is_some_and(|&b| b == b':');
        if !key && is_plain(&s[start..end]) {
            found.push((start, end));
        }
    }
    found
}

/// Scans one UTF-8 body of a kombu JSON content type, lifting its long
/// literals (see the module documentation) and rewriting `body` in place.
pub fn scan(body: &mut [u8]) -> Scanned {
    let mut flags = FLAG_UTF8 | FLAG_SCANNED;
    if body.is_ascii() {
        flags |= FLAG_ASCII;
    }
    if may_hold_marker(body) {
        flags |= FLAG_HOOK;
    }
    let found = if body.len() >= MIN_LITERAL && finder(&NUL_ESCAPE, b"\\u0000").find(body).is_none()
    {
        find_literals(body)
    } else {
        Vec::new()
    };
    // Digits inside a string value never make an integer: the lifted ones
    // need no look (the text around each is looked at with its quotes).
    let mut from = 0;
    for &(start, end) in found
        .iter()
        .chain(std::iter::once(&(body.len(), body.len())))
    {
        if flags & FLAG_LONG_DIGITS == 0 && has_long_digits(&body[from..start]) {
            flags |= FLAG_LONG_DIGITS;
        }
        from = end;
    }
    let mut out = Scanned {
        flags,
        len: body.len(),
        literals: Vec::with_capacity(found.len()),
    };
    if found.is_empty() {
        return out;
    }
    // Compact in place: the placeholder is always shorter than the literal,
    // so the write position never passes the read position.
    let mut write = 0;
    let mut read = 0;
    for (k, &(start, end)) in found.iter().enumerate() {
        out.literals.push(body[start..end].to_vec());
        body.copy_within(read..start, write);
        write += start - read;
        let placeholder = format!("\\u0000{k}");
        body[write..write + placeholder.len()].copy_from_slice(placeholder.as_bytes());
        write += placeholder.len();
        read = end;
    }
    body.copy_within(read.., write);
    write += body.len() - read;
    out.len = write;
    out.flags |= FLAG_LITERALS;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(text: &str) -> (String, Scanned) {
        let mut b = text.as_bytes().to_vec();
        let s = scan(&mut b);
        (String::from_utf8(b[..s.len].to_vec()).unwrap(), s)
    }

    #[test]
    fn flags_match_the_javascript_tests() {
        assert_eq!(scanned("[1]").1.flags & FLAG_HOOK, 0);
        assert_ne!(scanned(r#"{"__type__": 1}"#).1.flags & FLAG_HOOK, 0);
        assert_ne!(scanned(r#"{"\u005f_type__": 1}"#).1.flags & FLAG_HOOK, 0);
        assert_ne!(scanned(r#"{"_\u005Ftype__": 1}"#).1.flags & FLAG_HOOK, 0);
        assert_eq!(scanned(r#"["\u00e9"]"#).1.flags & FLAG_HOOK, 0);
        assert_eq!(scanned("[123456789012345]").1.flags & FLAG_LONG_DIGITS, 0);
        for pad in 0..20 {
            let text = format!("[{}1234567890123456]", " ".repeat(pad));
            assert_ne!(scanned(&text).1.flags & FLAG_LONG_DIGITS, 0, "{text}");
            let text = format!("[{}123456789012345, 1]", " ".repeat(pad));
            assert_eq!(scanned(&text).1.flags & FLAG_LONG_DIGITS, 0, "{text}");
        }
        for at in 0..140 {
            for len in [15, 16, 17, 40] {
                let mut text = "[".to_owned() + &" ".repeat(at) + &"7".repeat(len) + "]";
                text += &" ".repeat(200 - at);
                let long = scanned(&text).1.flags & FLAG_LONG_DIGITS != 0;
                assert_eq!(long, len >= 16, "at {at}, {len} digits");
            }
        }
        assert_ne!(scanned("[\"é\"]").1.flags & FLAG_UTF8, 0);
        assert_eq!(scanned("[\"é\"]").1.flags & FLAG_ASCII, 0);
        assert_ne!(scanned("[1]").1.flags & FLAG_ASCII, 0);
    }

    #[test]
    fn lifts_long_values_only() {
        let big = "x".repeat(MIN_LITERAL);
        let text = format!(r#"[["{big}", "a"], {{"{big}": "{big}"}}, "{big}"]"#);
        let (skeleton, s) = scanned(&text);
        assert_eq!(
            skeleton,
            format!(r#"[["\u00000", "a"], {{"{big}": "\u00001"}}, "\u00002"]"#)
        );
        assert_eq!(s.literals.len(), 3);
        assert!(s.literals.iter().all(|l| l == big.as_bytes()));
        assert_ne!(s.flags & FLAG_LITERALS, 0);
    }

    #[test]
    fn leaves_escaped_short_and_non_ascii_values() {
        let big = "y".repeat(MIN_LITERAL);
        for text in [
            format!(r#"["{big}\n"]"#),
            format!(r#"["{}"]"#, &big[1..]),
            format!(r#"["{big}é"]"#),
            format!("[\"{big}\t\"]"),
            format!(r#"["{big}", "\u0000"]"#),
            format!(r#"["{big}"#),
        ] {
            let (skeleton, s) = scanned(&text);
            assert_eq!(skeleton, text);
            assert!(s.literals.is_empty());
            assert_eq!(s.flags & FLAG_LITERALS, 0);
        }
    }

    #[test]
    fn an_escaped_quote_does_not_end_a_string() {
        let big = "z".repeat(MIN_LITERAL);
        let text = format!(r#"["a\"b", "{big}", "c\\", "{big}"]"#);
        let (skeleton, s) = scanned(&text);
        assert_eq!(skeleton, r#"["a\"b", "\u00000", "c\\", "\u00001"]"#);
        assert_eq!(s.literals.len(), 2);
    }
}
