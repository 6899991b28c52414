/**
 * The interop suite's door to the REAL Python Celery: test/py/celery_oracle.py
 * run by the interpreter of `.venv` (Celery 5.7, wire format >= 5.5) or
 * `.venv-celery54` (Celery 5.4, wire format <= 5.4).
 *
 * One Python process answers many requests (an array of requests on stdin),
 * so a test file collects its requests in an {@link OracleSession} while the
 * module loads and runs them all in one process when the first test awaits
 * them. Every session first asks for the version and fails if the venv does
 * not run the expected wire format. A missing interpreter throws (through
 * `pythonPath`): a failure, never a skip.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { json } from 'celery-sign';
import * as fx from './fixtures.js';
import { pythonPath, ROOT, type PythonEnv } from './python.js';

export const ORACLE = join(ROOT, 'test', 'py', 'celery_oracle.py');

export type WireFormat = 'celery-5.5' | 'celery-5.4';

/** A Python Celery and the wire format it speaks. */
export interface Wire {
  env: PythonEnv;
  wireFormat: WireFormat;
  /** For test titles. */
  label: string;
}

export const CURRENT: Wire = { env: 'current', wireFormat: 'celery-5.5', label: 'Celery 5.7 / wire 5.5' };
export const CELERY54: Wire = { env: 'celery54', wireFormat: 'celery-5.4', label: 'Celery 5.4 / wire 5.4' };
export const WIRES: readonly Wire[] = [CURRENT, CELERY54];

/** One per-item result of a batch op. */
export interface OracleItem {
  ok: boolean;
  error?: string;
  error_type?: string;
  [field: string]: unknown;
}

/** One response of the oracle. */
export interface OracleResponse {
  ok: boolean;
  op: string;
  results?: OracleItem[];
  error?: string;
  stage?: string;
  [field: string]: unknown;
}

/**
 * How long one oracle run may take (a session answers in seconds): past it
 * the Python process is killed and the run fails naming the venv, so a hang
 * costs minutes of CI, not ava's whole inactivity timeout.
 */
export const ORACLE_TIMEOUT_MS = 180_000;

/** Runs the oracle once, asynchronously, with an array of requests; one response per request. */
export function runOracle(env: PythonEnv, requests: readonly object[]): Promise<OracleResponse[]> {
  const python = pythonPath(env); // throws when the venv is missing: the test fails
  return new Promise((resolve, reject) => {
    const child = spawn(python, [ORACLE], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, ORACLE_TIMEOUT_MS);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      if (timedOut) {
        reject(new Error(`celery_oracle.py (${env}) did not answer ${requests.length} request(s) within ${ORACLE_TIMEOUT_MS} ms, killed: ${Buffer.concat(err).toString('utf8')}`));
        return;
      }
      if (code !== 0) {
        reject(new Error(`celery_oracle.py (${env}) exited with ${code}: ${Buffer.concat(err).toString('utf8')} ${stdout.slice(0, 2000)}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout) as OracleResponse[]);
      } catch (e) {
        reject(new Error(`celery_oracle.py (${env}) printed no JSON: ${String(e)}: ${stdout.slice(0, 2000)}`));
      }
    });
    // A Python that dies early closes stdin (EPIPE): the exit status tells why.
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify(requests));
  });
}

/**
 * Requests collected while a test module loads, answered by one Python
 * process when first awaited. `add` returns a function that resolves to that
 * request's response.
 */
export class OracleSession {
  readonly wire: Wire;
  readonly #requests: object[] = [];
  #answer: Promise<OracleResponse[]> | undefined;

  constructor(wire: Wire) {
    this.wire = wire;
    this.#requests.push({ op: 'version' });
  }

  /** Queues a request; the returned function gives its response (running the session if needed). */
  add(request: object): () => Promise<OracleResponse> {
    if (this.#answer) throw new Error('OracleSession: add() after the session ran');
    const index = this.#requests.push(request) - 1;
    return async () => (await this.run())[index]!;
  }

  /** Queues a batch request and gives its per-item results; an op-level failure throws. */
  addItems(request: object): () => Promise<OracleItem[]> {
    const get = this.add(request);
    return async () => itemsOf(await get());
  }

  run(): Promise<OracleResponse[]> {
    this.#answer ??= runOracle(this.wire.env, this.#requests).then((answers) => {
      const version = answers[0]!;
      if (!version.ok || version.wire_format !== this.wire.wireFormat) {
        throw new Error(`the ${this.wire.env} venv does not run Celery with wire format ${this.wire.wireFormat}: ${JSON.stringify(version)}`);
      }
      return answers;
    });
    return this.#answer;
  }

  /** What the venv runs (celery, kombu, cryptography versions). */
  async version(): Promise<OracleResponse> {
    return (await this.run())[0]!;
  }
}

/** The per-item results of a batch response; an op that could not run throws with Celery's error. */
export function itemsOf(resp: OracleResponse): OracleItem[] {
  if (!resp.ok || !Array.isArray(resp.results)) {
    throw new Error(`oracle op ${resp.op} failed at ${resp.stage ?? '?'}: ${resp.error ?? JSON.stringify(resp)}`);
  }
  return resp.results;
}

// ---------------------------------------------------------------------------
// Described values ("dv", see celery_oracle.py): JavaScript value -> the
// Python value the package's json module says it stands for.
// ---------------------------------------------------------------------------

/** The oracle's description of the Python value `v` stands for (the mapping src/json/index.ts documents). */
export function dv(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (typeof v === 'bigint') return { $type: 'int', value: v.toString() };
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return { $type: 'float', value: 'nan' };
    if (!Number.isFinite(v)) return { $type: 'float', value: v > 0 ? 'inf' : '-inf' };
    if (Number.isInteger(v) && !Number.isSafeInteger(v)) return { $type: 'int', value: BigInt(v).toString() };
    return v;
  }
  if (v instanceof json.PyFloat) return { $type: 'float', value: json.dumps(v) };
  if (v instanceof Uint8Array) return { $type: 'bytes', value: Buffer.from(v).toString('base64') };
  if (v instanceof Date) return { $type: 'datetime', value: v.toISOString().replace('Z', '+00:00') };
  if (v instanceof json.PyDateTime) return { $type: 'datetime', value: v.value };
  if (v instanceof json.PyDate) return { $type: 'date', value: v.value };
  if (v instanceof json.PyTime) return { $type: 'time', value: v.value };
  if (v instanceof json.PyDecimal) return { $type: 'decimal', value: v.value };
  if (v instanceof json.PyUUID) return { $type: 'uuid', value: v.hex };
  if (Array.isArray(v) || v instanceof Set) return [...v].map(dv);
  const entries: [string, unknown][] = v instanceof Map ? [...v.entries()].map(([k, x]) => [String(k), x]) : Object.entries(v as object);
  const out: Record<string, unknown> = {};
  for (const [k, x] of entries) out[k] = dv(x);
  const keys = Object.keys(out);
  if (keys.length === 2 && keys.includes('$type') && keys.includes('value')) return { $type: 'object', value: out };
  return out;
}

/** A description of bytes. */
export function dvBytes(b: Uint8Array | string): { $type: 'bytes'; value: string } {
  return { $type: 'bytes', value: Buffer.from(b).toString('base64') };
}

/**
 * The canonical text of a decoded value, comparable with the oracle's
 * `value_json`/`value_b64`: kombu's JSON (the package's `json.dumps`, byte-
 * identical to kombu's, see test/json.test.ts) or `b64:` + base64 for bytes.
 */
export function canonical(v: unknown): string {
  if (v instanceof Uint8Array) return 'b64:' + Buffer.from(v).toString('base64');
  return json.dumps(v);
}

/** The same canonical text for a value Python decoded. */
export function canonicalOf(item: OracleItem): string {
  if (typeof item.value_b64 === 'string') return 'b64:' + item.value_b64;
  if (typeof item.value_json === 'string') return item.value_json;
  throw new Error(`oracle item has no value: ${JSON.stringify(item).slice(0, 500)}`);
}

// ---------------------------------------------------------------------------
// Fixtures the interop files share.
// ---------------------------------------------------------------------------

/** PEM text of a fixture. */
export function pemText(item: fx.KeyItem | fx.CertItem): string {
  return readFileSync(fx.pathOf(item), 'utf8');
}

/** Every RSA key format of the fixtures that Celery loads and that has a certificate. */
export function rsaKeyItems(): fx.KeyItem[] {
  const withCert = new Set(fx.certs().map((c) => c.key_id));
  return fx.keys().filter((k) => k.algorithm === 'rsa' && k.celery.ok && withCert.has(k.key_id));
}

/** The plain (unencrypted PKCS#1) key with this key_id. */
export function plainKey(keyId: string): fx.KeyItem {
  const k = fx.keys().find((i) => i.key_id === keyId && i.format === 'pkcs1' && i.password === null);
  if (!k) throw new Error(`no PKCS#1 key for ${keyId}`);
  return k;
}

/** The certificate issued for the key `keyId` (fixture named after it: rsa2048 -> certs/rsa2048). */
export function certOfKey(keyId: string): fx.CertItem {
  return fx.cert(keyId);
}

/** The certificates of store.valid (every usable RSA certificate with a distinct id). */
export function validStoreCerts(): fx.CertItem[] {
  return fx.store('store.valid').members.map((name) => fx.cert(name));
}

export function validStorePath(): string {
  return fx.pathOf(fx.store('store.valid'));
}

/**
 * How to give Python the trusted certificates of store.valid: Celery 5.7
 * reads the store directory with its own FSCertStore; Celery 5.4.0's
 * FSCertStore cannot work (its has_expired always raises, celery/celery#9037),
 * so 5.4 gets the PEMs added one by one to a CertStore.
 */
export function pythonValidStore(wire: Wire): object {
  if (wire.env === 'current') return { store_path: validStorePath() };
  return { store: validStoreCerts().map(pemText) };
}

/** A Python CertStore of exactly these certificates (added one by one, no expiry check at load). */
export function pythonStoreOf(certs: readonly fx.CertItem[]): object {
  return { store: certs.map(pemText) };
}
