/**
 * Just enough PEM framing to tell what a block is: a port of
 * `crates/core/src/pem.rs` (byte offsets, not text, so any input is safe).
 *
 * @internal
 * @module
 */

export interface Block {
  /** The label between `-----BEGIN ` and `-----`. */
  readonly label: string;
  /** Whether RFC 1421 headers say `Proc-Type: 4,ENCRYPTED`. */
  readonly legacyEncrypted: boolean;
  /** The whole block, BEGIN to END line. */
  readonly bytes: Uint8Array;
  /** Offset of `bytes` in the input. */
  readonly start: number;
}

const BEGIN = Buffer.from('-----BEGIN ');
const DASHES = Buffer.from('-----');
const PROC_TYPE = Buffer.from('Proc-Type:');
const ENCRYPTED = Buffer.from('ENCRYPTED');
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function buf(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Strict UTF-8 (Rust's `str::from_utf8`), or undefined. */
export function utf8(bytes: Uint8Array): string | undefined {
  try {
    return fatalUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The first PEM block in `data`. */
export function firstBlock(data: Uint8Array): Block | undefined {
  const b = buf(data);
  const start = b.indexOf(BEGIN);
  if (start < 0) return undefined;
  const labelStart = start + BEGIN.length;
  const labelLen = b.subarray(labelStart).indexOf(DASHES);
  if (labelLen < 0) return undefined;
  const label = utf8(b.subarray(labelStart, labelStart + labelLen));
  if (label === undefined) return undefined;
  const endMarker = Buffer.concat([Buffer.from('-----END '), b.subarray(labelStart, labelStart + labelLen), DASHES]);
  const bodyStart = labelStart + labelLen + 5;
  const endRel = b.subarray(bodyStart).indexOf(endMarker);
  if (endRel < 0) return undefined;
  const end = bodyStart + endRel + endMarker.length;
  const body = b.subarray(bodyStart, bodyStart + endRel);
  const legacyEncrypted = body.indexOf(PROC_TYPE) >= 0 && body.indexOf(ENCRYPTED) >= 0;
  return { label, legacyEncrypted, bytes: b.subarray(start, end), start };
}

/** The first PEM block whose label is one of `labels`. */
export function firstBlockLabelled(data: Uint8Array, labels: readonly string[]): Block | undefined {
  let rest = buf(data);
  for (;;) {
    const block = firstBlock(rest);
    if (block === undefined) return undefined;
    if (labels.includes(block.label)) return block;
    rest = rest.subarray(block.start + block.bytes.length);
  }
}

/** Rust's `char::is_whitespace`-free `str::trim`: Unicode White_Space at both ends. */
const TRIM = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;

const B64 = /^[A-Za-z0-9+/]*$/;

/**
 * Strict standard base64 with padding (base64_simd::STANDARD): length a
 * multiple of 4, `=` only at the end, zero trailing bits.
 */
export function decodeStrictBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0) return undefined;
  let body = s;
  let pad = 0;
  if (body.endsWith('==')) pad = 2;
  else if (body.endsWith('=')) pad = 1;
  body = body.slice(0, body.length - pad);
  if (!B64.test(body)) return undefined;
  const out = Buffer.from(s, 'base64');
  // Canonical: re-encoding gives the same text (rejects non-zero trailing bits).
  if (out.toString('base64') !== s) return undefined;
  return out;
}

/**
 * The base64 body between the BEGIN and END lines, decoded (the core's
 * `Block::decode`); RFC 1421 header lines (`Name: value`) and white space
 * are skipped.
 */
export function decodeBlock(block: Block): Buffer | undefined {
  const text = utf8(block.bytes);
  if (text === undefined) return undefined;
  // Rust's str::lines: split on \n, strip one trailing \r; no final empty line.
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  let b64 = '';
  for (let i = 1; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    line = line.replace(TRIM, '');
    if (line.startsWith('-----END ')) break;
    if (line.includes(':')) continue;
    b64 += line.replace(/[\t\n\f\r ]/g, '');
  }
  return decodeStrictBase64(b64);
}
