/** node:crypto: the sync one-shot functions, and their callback form (libuv threadpool), all in flight. */
import { constants, createPrivateKey, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import type { Digest } from 'celery-sign';
import { decodeBody, decodePayload, encodeBody, pack, signerB64, type Unpacked } from '../wire.js';
import type { Bits, Keys } from '../workloads.js';
import { simpleContender, SIGN_DOES, VERIFY_DOES, type Cell, type Contender } from './types.js';

const PSS = constants.RSA_PKCS1_PSS_PADDING;
/** Verify: recover the salt length from the signature, as Celery (PSS.MAX_LENGTH) does. */
const SALT_AUTO = constants.RSA_PSS_SALTLEN_AUTO;
/** Sign: the maximum salt length, as Celery does. */
const SALT_MAX = constants.RSA_PSS_SALTLEN_MAX_SIGN;

export function nodeCryptoContenders(keys: Keys): Contender[] {
  const publicKeys = new Map<string, KeyObject>();
  for (const k of keys.byBits.values()) publicKeys.set(k.id, new X509Certificate(k.certPem).publicKey);
  const privateKeys = new Map<Bits, { key: KeyObject; signer: string }>();
  for (const k of keys.byBits.values()) privateKeys.set(k.bits, { key: createPrivateKey(k.keyPem), signer: signerB64(k.id) });

  const lookup = (u: Unpacked): KeyObject => {
    const key = publicKeys.get(u.signer);
    if (!key) throw new Error(`unknown signer ${u.signer}`);
    return key;
  };
  const verifySync = (payload: string, digest: Digest): unknown => {
    const u = decodePayload(payload);
    const key = lookup(u);
    if (!verify(digest, u.body, { key, padding: PSS, saltLength: SALT_AUTO }, u.signature)) throw new Error('bad signature');
    return decodeBody(u);
  };
  const verifyCb = (payload: string, digest: Digest): Promise<unknown> => {
    const u = decodePayload(payload);
    const key = lookup(u);
    return new Promise((resolve, reject) => {
      verify(digest, u.body, { key, padding: PSS, saltLength: SALT_AUTO }, u.signature, (err, ok) => {
        if (err) reject(err);
        else if (!ok) reject(new Error('bad signature'));
        else {
          try {
            resolve(decodeBody(u));
          } catch (e) {
            reject(e);
          }
        }
      });
    });
  };
  const signer = (bits: Bits) => {
    const k = privateKeys.get(bits);
    if (!k) throw new Error(`no key for ${bits}`);
    return k;
  };
  const signSync = (value: unknown, bits: Bits, digest: Digest): string => {
    const k = signer(bits);
    const body = encodeBody(value);
    return pack(k.signer, sign(digest, body, { key: k.key, padding: PSS, saltLength: SALT_MAX }), body);
  };
  const signCb = (value: unknown, bits: Bits, digest: Digest): Promise<string> => {
    const k = signer(bits);
    const body = encodeBody(value);
    return new Promise((resolve, reject) => {
      sign(digest, body, { key: k.key, padding: PSS, saltLength: SALT_MAX }, (err, sig) => {
        if (err) reject(err);
        else resolve(pack(k.signer, sig, body));
      });
    });
  };

  return [
    simpleContender('node-sync', 'verify', 'node:crypto verify (sync)', VERIFY_DOES, async (cell: Cell) => {
      const { payloads, digest } = cell.dataset;
      const out = new Array<unknown>(cell.batch);
      for (let i = 0; i < cell.batch; i++) out[i] = verifySync(payloads[i]!, digest);
      return out;
    }),
    simpleContender('node-cb', 'verify', 'node:crypto verify (callback, threadpool)', VERIFY_DOES, async (cell: Cell) => {
      const { payloads, digest } = cell.dataset;
      const jobs = new Array<Promise<unknown>>(cell.batch);
      for (let i = 0; i < cell.batch; i++) jobs[i] = verifyCb(payloads[i]!, digest);
      return Promise.all(jobs);
    }),
    simpleContender('node-sync', 'sign', 'node:crypto sign (sync)', SIGN_DOES, async (cell: Cell) => {
      const { values, bits, digest } = cell.dataset;
      const out = new Array<string>(cell.batch);
      for (let i = 0; i < cell.batch; i++) out[i] = signSync(values[i], bits, digest);
      return out;
    }),
    simpleContender('node-cb', 'sign', 'node:crypto sign (callback, threadpool)', SIGN_DOES, async (cell: Cell) => {
      const { values, bits, digest } = cell.dataset;
      const jobs = new Array<Promise<string>>(cell.batch);
      for (let i = 0; i < cell.batch; i++) jobs[i] = signCb(values[i], bits, digest);
      return Promise.all(jobs);
    }),
  ];
}
