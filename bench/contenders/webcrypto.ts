/** WebCrypto RSA-PSS (crypto.subtle): all in flight with Promise.all, and one await at a time. */
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import type { Digest } from 'celery-sign';
import { decodeBody, decodePayload, encodeBody, maxSaltLength, pack, signerB64, type Unpacked } from '../wire.js';
import type { Bits, Keys } from '../workloads.js';
import { simpleContender, SIGN_DOES, VERIFY_DOES, type Cell, type Contender } from './types.js';

const subtle = webcrypto.subtle;
type CryptoKey = webcrypto.CryptoKey;
const HASH: Record<Digest, string> = { sha1: 'SHA-1', sha224: 'SHA-224', sha256: 'SHA-256', sha384: 'SHA-384', sha512: 'SHA-512' };

interface VerifyKey {
  key: CryptoKey;
  saltLength: number;
}

export function webCryptoContenders(keys: Keys): Contender[] {
  // WebCrypto binds the hash to the key: one import per certificate and digest.
  const verifyKeys = new Map<Digest, Promise<Map<string, VerifyKey>>>();
  const signKeys = new Map<string, Promise<{ key: CryptoKey; saltLength: number; signer: string }>>();

  const verifyKeyMap = (digest: Digest) => {
    let p = verifyKeys.get(digest);
    if (!p) {
      p = (async () => {
        const m = new Map<string, VerifyKey>();
        for (const k of keys.byBits.values()) {
          const spki = new X509Certificate(k.certPem).publicKey.export({ type: 'spki', format: 'der' });
          const key = await subtle.importKey('spki', spki, { name: 'RSA-PSS', hash: HASH[digest] }, false, ['verify']);
          // WebCrypto needs the exact salt length: Celery signs with the maximum.
          m.set(k.id, { key, saltLength: maxSaltLength(k.bits, digest) });
        }
        return m;
      })();
      verifyKeys.set(digest, p);
    }
    return p;
  };
  const signKey = (bits: Bits, digest: Digest) => {
    const id = `${bits}/${digest}`;
    let p = signKeys.get(id);
    if (!p) {
      p = (async () => {
        const k = keys.get(bits);
        const pkcs8 = createPrivateKey(k.keyPem).export({ type: 'pkcs8', format: 'der' });
        const key = await subtle.importKey('pkcs8', pkcs8, { name: 'RSA-PSS', hash: HASH[digest] }, false, ['sign']);
        return { key, saltLength: maxSaltLength(bits, digest), signer: signerB64(k.id) };
      })();
      signKeys.set(id, p);
    }
    return p;
  };

  const verifyOne = async (m: Map<string, VerifyKey>, u: Unpacked): Promise<unknown> => {
    const k = m.get(u.signer);
    if (!k) throw new Error(`unknown signer ${u.signer}`);
    const ok = await subtle.verify({ name: 'RSA-PSS', saltLength: k.saltLength }, k.key, u.signature, u.body);
    if (!ok) throw new Error('bad signature');
    return decodeBody(u);
  };
  const signOne = async (k: { key: CryptoKey; saltLength: number; signer: string }, value: unknown): Promise<string> => {
    const body = encodeBody(value);
    const sig = await subtle.sign({ name: 'RSA-PSS', saltLength: k.saltLength }, k.key, body);
    return pack(k.signer, new Uint8Array(sig), body);
  };

  const verifyAll = async (cell: Cell) => {
    const m = await verifyKeyMap(cell.dataset.digest);
    const { payloads } = cell.dataset;
    const jobs = new Array<Promise<unknown>>(cell.batch);
    for (let i = 0; i < cell.batch; i++) jobs[i] = verifyOne(m, decodePayload(payloads[i]!));
    return Promise.all(jobs);
  };
  const verifySerial = async (cell: Cell) => {
    const m = await verifyKeyMap(cell.dataset.digest);
    const { payloads } = cell.dataset;
    const out = new Array<unknown>(cell.batch);
    for (let i = 0; i < cell.batch; i++) out[i] = await verifyOne(m, decodePayload(payloads[i]!));
    return out;
  };
  const signAll = async (cell: Cell) => {
    const k = await signKey(cell.dataset.bits, cell.dataset.digest);
    const { values } = cell.dataset;
    const jobs = new Array<Promise<string>>(cell.batch);
    for (let i = 0; i < cell.batch; i++) jobs[i] = signOne(k, values[i]);
    return Promise.all(jobs);
  };
  const signSerial = async (cell: Cell) => {
    const k = await signKey(cell.dataset.bits, cell.dataset.digest);
    const { values } = cell.dataset;
    const out = new Array<string>(cell.batch);
    for (let i = 0; i < cell.batch; i++) out[i] = await signOne(k, values[i]);
    return out;
  };

  return [
    simpleContender('wc-all', 'verify', 'WebCrypto, Promise.all', VERIFY_DOES, verifyAll),
    simpleContender('wc-serial', 'verify', 'WebCrypto, one await at a time', VERIFY_DOES, verifySerial),
    simpleContender('wc-all', 'sign', 'WebCrypto, Promise.all', SIGN_DOES, signAll),
    simpleContender('wc-serial', 'sign', 'WebCrypto, one await at a time', SIGN_DOES, signSerial),
  ];
}
