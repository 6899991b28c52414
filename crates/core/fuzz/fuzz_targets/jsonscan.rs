//! The kombu-JSON pre-scan: `jsonscan::scan` on one body.
//!
//! Input: the body (made valid UTF-8 first, lossily: the scan is only ever
//! handed UTF-8 bodies).
//!
//! Checks: nothing panics; the flags say what the text is (ASCII; a possible
//! marker key, `__type__` or a `\u00..` escape that could spell one; sixteen
//! digits in a row outside the lifted strings), each checked here by a plain
//! search; every lifted literal is at least `MIN_LITERAL` bytes of printable
//! ASCII without a quote or a backslash, and none is lifted from a text that
//! holds `\u0000`; putting the literals back in place of their placeholders
//! gives the body back byte for byte; and where the body is JSON, the
//! rewritten text is JSON too and, literals put back, the same value.
#![no_main]

use celery_sign_core::jsonscan::{
    scan, FLAG_ASCII, FLAG_HOOK, FLAG_LITERALS, FLAG_LONG_DIGITS, FLAG_SCANNED, FLAG_UTF8,
    MIN_LITERAL,
};
use libfuzzer_sys::fuzz_target;
use memchr::memmem;
use serde_json::Value;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memmem::find(hay, needle).is_some()
}

/// `s.includes('__type__') || /\\u00(?:5[fF]|65|7[049])/.test(s)`.
fn may_hold_marker(s: &[u8]) -> bool {
    contains(s, b"__type__")
        || memmem::find_iter(s, b"\\u00").any(|at| {
            matches!(
                s.get(at + 4..at + 6),
                Some(b"5f" | b"5F" | b"65" | b"70" | b"74" | b"79")
            )
        })
}

/// `/\d{16}/`.
fn has_long_digits(s: &[u8]) -> bool {
    s.split(|b| !b.is_ascii_digit()).any(|run| run.len() >= 16)
}

/// The rewritten text with each placeholder `"\u0000<k>"` replaced by its literal.
fn restore(skeleton: &[u8], literals: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(skeleton.len());
    let mut rest = skeleton;
    for (k, literal) in literals.iter().enumerate() {
        let placeholder = format!("\"\\u0000{k}\"");
        let at = memmem::find(rest, placeholder.as_bytes())
            .unwrap_or_else(|| panic!("placeholder {k} is missing"));
        out.extend_from_slice(&rest[..at + 1]);
        out.extend_from_slice(literal);
        out.push(b'"');
        rest = &rest[at + placeholder.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Replaces each placeholder string value by its literal.
fn put_back(value: &mut Value, literals: &[Vec<u8>]) {
    match value {
        Value::String(s) => {
            if let Some(k) = s
                .strip_prefix('\u{0}')
                .and_then(|k| k.parse::<usize>().ok())
            {
                let literal = literals.get(k).expect("a placeholder names a literal");
                *s = String::from_utf8(literal.clone()).expect("a literal is ASCII");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| put_back(v, literals)),
        Value::Object(map) => map.values_mut().for_each(|v| put_back(v, literals)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let original = String::from_utf8_lossy(data).into_owned().into_bytes();
    let mut body = original.clone();
    let scanned = scan(&mut body);
    let skeleton = &body[..scanned.len];
    let flags = scanned.flags;

    assert_eq!(flags & (FLAG_UTF8 | FLAG_SCANNED), FLAG_UTF8 | FLAG_SCANNED);
    assert_eq!(flags & FLAG_ASCII != 0, original.is_ascii());
    assert_eq!(flags & FLAG_HOOK != 0, may_hold_marker(&original));
    // Placeholders hold at most 4 + log10(k) digits in a row: the skeleton
    // has a long run exactly where the text outside the literals has one.
    assert_eq!(flags & FLAG_LONG_DIGITS != 0, has_long_digits(skeleton));
    assert_eq!(flags & FLAG_LITERALS != 0, !scanned.literals.is_empty());
    if contains(&original, b"\\u0000") || original.len() < MIN_LITERAL {
        assert!(scanned.literals.is_empty());
    }
    for literal in &scanned.literals {
        assert!(literal.len() >= MIN_LITERAL);
        assert!(literal
            .iter()
            .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'));
    }
    if scanned.literals.is_empty() {
        assert_eq!(skeleton, &original[..]);
        return;
    }
    assert_eq!(restore(skeleton, &scanned.literals), original);

    if let Ok(expected) = serde_json::from_slice::<Value>(&original) {
        let mut value: Value =
            serde_json::from_slice(skeleton).expect("the rewritten JSON text still parses");
        put_back(&mut value, &scanned.literals);
        assert_eq!(value, expected);
    }
});
