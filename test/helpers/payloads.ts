/** Hand-made payloads for refusal tests (the layouts of Celery's `_pack`). */
import { constants, sign as nodeSign, type KeyObject } from 'node:crypto';

const SEP = Buffer.from([0, 1]);
const b64 = (b: Uint8Array | string): Buffer => Buffer.from(Buffer.from(b).toString('base64'));

/** Celery >= 5.5 layout. */
export function pack55(signer: string, signature: Uint8Array, contentType: string, encoding: string, body: Uint8Array | string): string {
  return Buffer.concat([b64(signer), SEP, b64(signature), SEP, Buffer.from(contentType), SEP, Buffer.from(encoding), SEP, Buffer.from(body)]).toString('base64');
}

/** Celery <= 5.4 layout. */
export function pack54(signer: string, signature: Uint8Array, contentType: string, encoding: string, body: Uint8Array | string): string {
  return Buffer.concat([Buffer.from(signer), SEP, Buffer.from(signature), SEP, Buffer.from(contentType), SEP, Buffer.from(encoding), SEP, Buffer.from(body)]).toString('base64');
}

/** Splits a 5.5 payload into its five fields (maxsplit=4). */
export function unpack55(payload: string): Buffer[] {
  const raw = Buffer.from(payload, 'base64');
  const out: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < 4; i++) {
    const next = raw.indexOf(SEP, at);
    out.push(raw.subarray(at, next));
    at = next + 2;
  }
  out.push(raw.subarray(at));
  return out;
}

/** RSA-PSS with node:crypto, any salt length. */
export function pssSign(key: KeyObject, data: Uint8Array | string, saltLength: number, digest = 'sha256'): Buffer {
  return nodeSign(digest, Buffer.from(data), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
}

/** PKCS#1 v1.5 with node:crypto. */
export function pkcs1Sign(key: KeyObject, data: Uint8Array | string, digest = 'sha256'): Buffer {
  return nodeSign(digest, Buffer.from(data), { key, padding: constants.RSA_PKCS1_PADDING });
}
