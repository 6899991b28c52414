/**
 * Taking a payload apart and putting it back together (Celery's `_unpack` and
 * `_pack` layouts, both wire formats), to tamper with one field at a time.
 */
import type { WireFormat } from './interop-oracle.js';
import { pack54, pack55 } from './payloads.js';

const SEP = Buffer.from([0, 1]);

export interface Fields {
  signer: Buffer;
  signature: Buffer;
  contentType: string;
  contentEncoding: string;
  body: Buffer;
}

/** Splits a payload; the 5.4 format needs the signer's key size to find the end of the signature. */
export function unpack(payload: string, format: WireFormat, keyBits = 2048): Fields {
  const raw = Buffer.from(payload, 'base64');
  const fields: Buffer[] = [];
  if (format === 'celery-5.5') {
    let at = 0;
    for (let i = 0; i < 4; i++) {
      const next = raw.indexOf(SEP, at);
      if (next < 0) throw new Error('too few fields');
      fields.push(raw.subarray(at, next));
      at = next + 2;
    }
    fields.push(raw.subarray(at));
    return {
      signer: Buffer.from(fields[0]!.toString('latin1'), 'base64'),
      signature: Buffer.from(fields[1]!.toString('latin1'), 'base64'),
      contentType: fields[2]!.toString('utf8'),
      contentEncoding: fields[3]!.toString('utf8'),
      body: Buffer.from(fields[4]!),
    };
  }
  const first = raw.indexOf(SEP);
  const sigEnd = first + 2 + (keyBits >> 3);
  const rest = raw.subarray(sigEnd + 2);
  const a = rest.indexOf(SEP);
  const b = rest.indexOf(SEP, a + 2);
  return {
    signer: Buffer.from(raw.subarray(0, first)),
    signature: Buffer.from(raw.subarray(first + 2, sigEnd)),
    contentType: rest.subarray(0, a).toString('utf8'),
    contentEncoding: rest.subarray(a + 2, b).toString('utf8'),
    body: Buffer.from(rest.subarray(b + 2)),
  };
}

/** Packs the fields with Celery's layout. */
export function pack(f: Fields, format: WireFormat): string {
  const p = format === 'celery-5.5' ? pack55 : pack54;
  return p(f.signer.toString('utf8'), f.signature, f.contentType, f.contentEncoding, f.body);
}

/** The payload with one field changed. */
export function tamper(payload: string, format: WireFormat, change: (f: Fields) => Partial<Fields>, keyBits = 2048): string {
  const f = unpack(payload, format, keyBits);
  return pack({ ...f, ...change(f) }, format);
}

/** A copy with one bit flipped at `index` (negative: from the end). */
export function flipBit(b: Uint8Array, index: number, bit = 0): Buffer {
  const out = Buffer.from(b);
  const i = index < 0 ? out.length + index : index;
  out[i] = out[i]! ^ (1 << bit);
  return out;
}
