//! Just enough PEM framing to tell what a block is before OpenSSL parses it.

pub struct Block<'a> {
    /// The label between `-----BEGIN ` and `-----`.
    pub label: &'a str,
    /// Whether RFC 1421 headers say `Proc-Type: 4,ENCRYPTED`.
    pub legacy_encrypted: bool,
    /// The whole block, BEGIN to END line, for OpenSSL.
    pub bytes: &'a [u8],
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first PEM block in `data`.
pub fn first_block(data: &[u8]) -> Option<Block<'_>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = find(data, BEGIN)?;
    let label_start = start + BEGIN.len();
    let label_len = find(&data[label_start..], b"-----")?;
    let label = std::str::from_utf8(&data[label_start..label_start + label_len]).ok()?;
    let end_marker = format!("-----END {label}-----");
    let body_start = label_start + label_len + 5;
    let end_rel = find(&data[body_start..], end_marker.as_bytes())?;
    let end = body_start + end_rel + end_marker.len();
    let body = &data[body_start..body_start + end_rel];
    let legacy_encrypted =
        find(body, b"Proc-Type:").is_some() && find(body, b"ENCRYPTED").is_some();
    Some(Block {
        label,
        legacy_encrypted,
        bytes: &data[start..end],
    })
}

impl Block<'_> {
    /// The base64 body between the BEGIN and END lines, decoded; RFC 1421
    /// header lines (`Name: value`) and white space are skipped.
    pub fn decode(&self) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(self.bytes).ok()?;
        let mut b64 = Vec::with_capacity(self.bytes.len());
        for line in text.lines().skip(1) {
            let line = line.trim();
            if line.starts_with("-----END ") {
                break;
            }
            if line.contains(':') {
                continue;
            }
            b64.extend(line.bytes().filter(|b| !b.is_ascii_whitespace()));
        }
        base64_simd::STANDARD.decode_to_vec(&b64).ok()
    }
}

/// The first PEM block whose label is one of `labels`.
pub fn first_block_labelled<'a>(mut data: &'a [u8], labels: &[&str]) -> Option<Block<'a>> {
    loop {
        let block = first_block(data)?;
        if labels.contains(&block.label) {
            return Some(block);
        }
        let consumed = block.bytes.as_ptr() as usize - data.as_ptr() as usize + block.bytes.len();
        data = &data[consumed..];
    }
}
