/**
 * The worker of the node:crypto worker_threads pool: the strongest pure-Node
 * design. Each worker gets a slice of a batch (one joined string plus lengths,
 * cheap to post), and does the whole job itself: base64 decode, Celery 5.5
 * unpack, certificate lookup, RSA-PSS verification (node:crypto, salt length
 * recovered) and JSON.parse; the values go back by structured clone. It signs
 * the same way: JSON encode, sign (maximum salt), pack, base64.
 */
import { constants, createPrivateKey, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { decodeBody, decodePayload, encodeBody, pack, signerB64 } from './wire.js';

export interface WorkerKey {
  bits: number;
  id: string;
  keyPem: string;
  certPem: string;
}
export interface WorkerInit {
  keys: WorkerKey[];
}
export type WorkerRequest =
  | { seq: number; op: 'verify'; digest: string; joined: string; lengths: Uint32Array }
  | { seq: number; op: 'sign'; bits: number; digest: string; values: unknown[] };
export type WorkerResponse =
  | { seq: number; ok: true; result: unknown[] }
  | { seq: number; ok: false; error: string };

const PSS = constants.RSA_PKCS1_PSS_PADDING;
const port = parentPort;
if (port) {
  const init = workerData as WorkerInit;
  const publicKeys = new Map<string, KeyObject>();
  const privateKeys = new Map<number, { key: KeyObject; signer: string }>();
  for (const k of init.keys) {
    publicKeys.set(k.id, new X509Certificate(k.certPem).publicKey);
    privateKeys.set(k.bits, { key: createPrivateKey(k.keyPem), signer: signerB64(k.id) });
  }

  const verifyBatch = (digest: string, joined: string, lengths: Uint32Array): unknown[] => {
    const out = new Array<unknown>(lengths.length);
    let pos = 0;
    for (let i = 0; i < lengths.length; i++) {
      const end = pos + lengths[i]!;
      const u = decodePayload(joined.slice(pos, end));
      pos = end;
      const key = publicKeys.get(u.signer);
      if (!key) throw new Error(`unknown signer ${u.signer}`);
      const opts = { key, padding: PSS, saltLength: constants.RSA_PSS_SALTLEN_AUTO };
      if (!verify(digest, u.body, opts, u.signature)) throw new Error(`item ${i}: bad signature`);
      out[i] = decodeBody(u);
    }
    return out;
  };
  const signBatch = (bits: number, digest: string, values: unknown[]): string[] => {
    const k = privateKeys.get(bits);
    if (!k) throw new Error(`no key for ${bits} bits`);
    const opts = { key: k.key, padding: PSS, saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN };
    return values.map((v) => {
      const body = encodeBody(v);
      return pack(k.signer, sign(digest, body, opts), body);
    });
  };

  port.on('message', (req: WorkerRequest) => {
    let res: WorkerResponse;
    try {
      const result =
        req.op === 'verify' ? verifyBatch(req.digest, req.joined, req.lengths) : signBatch(req.bits, req.digest, req.values);
      res = { seq: req.seq, ok: true, result };
    } catch (err) {
      res = { seq: req.seq, ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    port.postMessage(res);
  });
}
