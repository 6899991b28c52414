/**
 * Opt-in certificate chain verification for the certificate stores (issue
 * 12, item 7: what Celery's PR #5091 proposed and dropped): a store given
 * `ca` accepts only certificates issued by one of those CAs (directly, or
 * through the `intermediates` given), and with `crl` refuses the serials
 * the CAs have revoked.
 *
 * Why one implementation in TypeScript over `node:crypto`, above the
 * backend, and not in the Rust core with a `node:crypto` twin: the check
 * runs only when a certificate enters a store (construction, `add()`,
 * `reload()`, a watch reload), never on the verify path, so it gains
 * nothing from native threads; one implementation gives the native and the
 * fallback backend the same answers and the same messages by construction
 * (two would have to be kept identical rule for rule); and the CA and CRL
 * signatures are checked by OpenSSL through `node:crypto`
 * (`X509Certificate.verify`, `crypto.verify`), so no signature code is
 * written here. The DER reading (names, validity, extensions, the CRL) is
 * done with the core's DER reader port (`backend/js/der.ts`), the same one
 * the subject names use.
 *
 * @internal
 * @module
 */
import { X509Certificate, verify as cryptoVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compareBytes, parseTime, readTlv, toBigInt, type Tlv } from './backend/js/der.js';
import { SecurityError } from './errors.js';

/**
 * A CA or intermediate certificate for {@link CertChainOptions}: a path of a
 * PEM file (one or more certificates, e.g. a bundle), PEM or DER bytes, or a
 * {@link Certificate}-like object carrying its DER (a `Certificate` of this
 * package). CAs may have any key type `node:crypto` reads (RSA, EC, Ed25519).
 */
export type CaSource = string | Uint8Array | { readonly der: Uint8Array };

/** A CRL for {@link CertChainOptions}: a path of a PEM or DER file, or PEM or DER bytes. */
export type CrlSource = string | Uint8Array;

/**
 * Opt-in chain verification of a {@link CertStore} or {@link FSCertStore}
 * (celery-sign's; Celery's stores have none). With `ca` set, a certificate
 * enters the store only if it is issued by one of those CAs, and is refused
 * with `ERR_INVALID_CERTIFICATE` otherwise, naming the certificate id and
 * the reason. An issuer is a CA (or intermediate) whose subject name is
 * the certificate's issuer name, byte for byte (as a CA writes both), and
 * whose key verifies the certificate's signature. Every issuer on the way must be valid now, have the
 * basicConstraints `cA` flag, and (where it has a keyUsage extension) allow
 * keyCertSign; a `pathLenConstraint` is honoured. An {@link FSCertStore}
 * reads the `ca`, `intermediates` and `crl` paths again at every load, so
 * a reload picks up a new CRL.
 */
export interface CertChainOptions {
  /** The trusted CAs (the roots of trust): one or several. */
  ca: CaSource | readonly CaSource[];
  /**
   * Intermediate CA certificates, not trusted themselves: a certificate
   * issued by one of them is accepted when the intermediate chains up to a
   * `ca` (at most 8 intermediates deep). Without them: direct issuance by a
   * `ca` only.
   */
  intermediates?: CaSource | readonly CaSource[];
  /**
   * Certificate revocation lists (PEM `X509 CRL` or DER), each issued by one
   * of the `ca` or `intermediates` (its signature is verified with that CA's
   * key, else the store does not load). A certificate whose issuer has a CRL
   * is refused when its serial is listed, and also when that CRL is stale
   * (its nextUpdate has passed): revocation data that is out of date is no
   * answer. Of several CRLs of one CA the latest (thisUpdate) decides. A
   * CA without a CRL here is not checked for revocation. Full CRLs only: a
   * CRL with a critical extension other than cRLNumber and
   * authorityKeyIdentifier (a delta CRL, an issuing distribution point) is
   * refused.
   * Supported CRL signatures: RSA PKCS#1 v1.5 (SHA-1/224/256/384/512), ECDSA
   * (SHA-256/384/512), Ed25519.
   */
  crl?: CrlSource | readonly CrlSource[];
}

const MAX_DEPTH = 8;

/** CRL extensions understood (may be critical): cRLNumber, authorityKeyIdentifier. */
const KNOWN_CRL_EXTENSIONS: ReadonlySet<string> = new Set(['551d14', '551d23']);

const OID_BASIC_CONSTRAINTS = Buffer.from([0x55, 0x1d, 0x13]);
const OID_KEY_USAGE = Buffer.from([0x55, 0x1d, 0x0f]);

/** CRL signature algorithms: OID (hex of the contents) to node:crypto's digest name (null: none, Ed25519). */
const CRL_SIG_ALGS: ReadonlyMap<string, string | null> = new Map([
  ['2a864886f70d010105', 'sha1'],
  ['2a864886f70d01010e', 'sha224'],
  ['2a864886f70d01010b', 'sha256'],
  ['2a864886f70d01010c', 'sha384'],
  ['2a864886f70d01010d', 'sha512'],
  ['2a8648ce3d040302', 'sha256'],
  ['2a8648ce3d040303', 'sha384'],
  ['2a8648ce3d040304', 'sha512'],
  ['2b6570', null],
]);

function refuse(msg: string, cause?: unknown): never {
  throw new SecurityError('ERR_INVALID_CERTIFICATE', msg, cause === undefined ? undefined : { cause });
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}

function must<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(what);
  return v;
}

/** The parts of a certificate this module uses, read from its DER. */
interface CertInfo {
  readonly x509: X509Certificate;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly serial: bigint;
  readonly notBefore: number;
  readonly notAfter: number;
  /** basicConstraints: null when absent. */
  readonly basic: { ca: boolean; pathLen: number | null } | null;
  /** keyUsage bit 5 (keyCertSign), bit 6 (cRLSign); null when absent. */
  readonly keyUsage: { certSign: boolean; crlSign: boolean } | null;
  /** The subject as node:crypto prints it, on one line. */
  readonly name: string;
}

/** A name for messages: node:crypto's subject, its lines joined. */
function printable(x: X509Certificate, field: 'subject' | 'issuer'): string {
  return x[field].split('\n').filter(Boolean).join(', ');
}

function bitAt(bits: Uint8Array, i: number): boolean {
  // bits[0] is the count of unused bits; bit 0 is the high bit of bits[1].
  const byte = bits[1 + (i >> 3)];
  return byte !== undefined && (byte & (0x80 >> (i & 7))) !== 0;
}

function parseExtensions(body: Uint8Array): Pick<CertInfo, 'basic' | 'keyUsage'> {
  let basic: CertInfo['basic'] = null;
  let keyUsage: CertInfo['keyUsage'] = null;
  let rest = body;
  while (rest.length > 0) {
    const ext = must(readTlv(rest), 'extension');
    rest = ext.rest;
    const oid = must(readTlv(ext.body), 'extension id');
    let next = oid.rest;
    let f = must(readTlv(next), 'extension value');
    if (f.tag === 0x01) {
      next = f.rest;
      f = must(readTlv(next), 'extension value');
    }
    if (f.tag !== 0x04) throw new Error('extension value');
    if (compareBytes(oid.body, OID_BASIC_CONSTRAINTS) === 0) {
      const seq = must(readTlv(f.body), 'basicConstraints');
      let ca = false;
      let pathLen: number | null = null;
      let r = seq.body;
      if (r.length > 0 && r[0] === 0x01) {
        const b = must(readTlv(r), 'cA');
        ca = b.body[0] === 0xff;
        r = b.rest;
      }
      if (r.length > 0 && r[0] === 0x02) {
        const n = must(readTlv(r), 'pathLenConstraint');
        pathLen = Number(toBigInt(n.body));
      }
      basic = { ca, pathLen };
    } else if (compareBytes(oid.body, OID_KEY_USAGE) === 0) {
      const bits = must(readTlv(f.body), 'keyUsage');
      if (bits.tag !== 0x03) throw new Error('keyUsage');
      keyUsage = { certSign: bitAt(bits.body, 5), crlSign: bitAt(bits.body, 6) };
    }
  }
  return { basic, keyUsage };
}

function certInfo(der: Uint8Array): CertInfo {
  const x509 = new X509Certificate(Buffer.from(der));
  const cert = must(readTlv(der), 'certificate');
  const tbs = must(readTlv(cert.body), 'tbsCertificate');
  let f = must(readTlv(tbs.body), 'field');
  if (f.tag === 0xa0) f = must(readTlv(f.rest), 'serial');
  const serial = f;
  const sigAlg = must(readTlv(serial.rest), 'signature');
  const issuer = must(readTlv(sigAlg.rest), 'issuer');
  const validity = must(readTlv(issuer.rest), 'validity');
  const subject = must(readTlv(validity.rest), 'subject');
  const spki = must(readTlv(subject.rest), 'subjectPublicKeyInfo');
  const nb = must(readTlv(validity.body), 'notBefore');
  const na = must(readTlv(nb.rest), 'notAfter');
  let ext: Pick<CertInfo, 'basic' | 'keyUsage'> = { basic: null, keyUsage: null };
  let r = spki.rest;
  while (r.length > 0) {
    const t = must(readTlv(r), 'field');
    r = t.rest;
    if (t.tag === 0xa3) ext = parseExtensions(must(readTlv(t.body), 'extensions').body);
  }
  return {
    x509,
    issuer: issuer.raw,
    subject: subject.raw,
    serial: toBigInt(serial.body),
    notBefore: must(parseTime(nb.tag, nb.body), 'notBefore'),
    notAfter: must(parseTime(na.tag, na.body), 'notAfter'),
    ...ext,
    name: printable(x509, 'subject'),
  };
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** The DER blocks of a PEM text with one of `labels`, or the bytes themselves when they are not PEM. */
function derBlocks(bytes: Uint8Array, labels: readonly string[]): Uint8Array[] {
  const text = Buffer.from(bytes).toString('latin1');
  if (!text.includes('-----BEGIN ')) return [bytes];
  const out: Uint8Array[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    if (labels.includes(m[1]!)) out.push(Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64'));
  }
  return out;
}

function describe(src: CaSource | CrlSource): string {
  return typeof src === 'string' ? JSON.stringify(src) : 'given as bytes';
}

function readSource(src: CaSource | CrlSource, what: string): Uint8Array {
  if (typeof src === 'string') {
    try {
      return readFileSync(src);
    } catch (err) {
      return refuse(`Unreadable ${what} file: ${JSON.stringify(src)}`, err);
    }
  }
  if (src instanceof Uint8Array) return src;
  if (src !== null && typeof src === 'object' && (src as { der?: unknown }).der instanceof Uint8Array) {
    return (src as { der: Uint8Array }).der;
  }
  throw new TypeError(`${what} must be a path, PEM or DER bytes, or a Certificate`);
}

function list<T>(v: T | readonly T[] | undefined): readonly T[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? (v as readonly T[]) : [v as T];
}

function loadCerts(sources: readonly CaSource[], what: string): CertInfo[] {
  const out: CertInfo[] = [];
  for (const src of sources) {
    const bytes = readSource(src, what);
    const blocks =
      typeof src === 'object' && !(src instanceof Uint8Array) ? [bytes] : derBlocks(bytes, ['CERTIFICATE', 'X509 CERTIFICATE']);
    if (blocks.length === 0) refuse(`No certificate in the ${what} ${describe(src)}`);
    for (const der of blocks) {
      try {
        out.push(certInfo(der));
      } catch (err) {
        refuse(`Invalid ${what} certificate ${describe(src)}: could not parse it`, err);
      }
    }
  }
  return out;
}

/** A CRL whose signature was verified by its CA. */
interface Crl {
  readonly source: string;
  readonly issuer: Uint8Array;
  readonly issuerName: string;
  readonly thisUpdate: number;
  readonly nextUpdate: number | null;
  /** Revoked serial to revocation time (Unix seconds). */
  readonly revoked: ReadonlyMap<bigint, number>;
}

function parseCrl(der: Uint8Array): {
  tbs: Uint8Array;
  sigAlg: Uint8Array;
  signature: Uint8Array;
  issuer: Uint8Array;
  thisUpdate: number;
  nextUpdate: number | null;
  revoked: Map<bigint, number>;
  unhandledCritical: boolean;
} {
  const outer = must(readTlv(der), 'CertificateList');
  if (outer.tag !== 0x30 || outer.rest.length !== 0) throw new Error('CertificateList');
  const tbs = must(readTlv(outer.body), 'tbsCertList');
  const alg = must(readTlv(tbs.rest), 'signatureAlgorithm');
  const sig = must(readTlv(alg.rest), 'signatureValue');
  if (tbs.tag !== 0x30 || alg.tag !== 0x30 || sig.tag !== 0x03 || sig.rest.length !== 0 || sig.body[0] !== 0) {
    throw new Error('CertificateList');
  }
  const algOid = must(readTlv(alg.body), 'algorithm');
  let f: Tlv = must(readTlv(tbs.body), 'field');
  if (f.tag === 0x02) f = must(readTlv(f.rest), 'signature'); // version
  const issuer = must(readTlv(f.rest), 'issuer');
  const thisUpdate = must(readTlv(issuer.rest), 'thisUpdate');
  const tu = must(parseTime(thisUpdate.tag, thisUpdate.body), 'thisUpdate');
  let rest = thisUpdate.rest;
  let nextUpdate: number | null = null;
  if (rest.length > 0 && (rest[0] === 0x17 || rest[0] === 0x18)) {
    const nu = must(readTlv(rest), 'nextUpdate');
    nextUpdate = must(parseTime(nu.tag, nu.body), 'nextUpdate');
    rest = nu.rest;
  }
  const revoked = new Map<bigint, number>();
  let unhandledCritical = false;
  if (rest.length > 0 && rest[0] === 0x30) {
    const entries = must(readTlv(rest), 'revokedCertificates');
    rest = entries.rest;
    let e = entries.body;
    while (e.length > 0) {
      const entry = must(readTlv(e), 'revoked entry');
      e = entry.rest;
      const serial = must(readTlv(entry.body), 'userCertificate');
      const date = must(readTlv(serial.rest), 'revocationDate');
      if (serial.tag !== 0x02) throw new Error('userCertificate');
      revoked.set(toBigInt(serial.body), must(parseTime(date.tag, date.body), 'revocationDate'));
    }
  }
  if (rest.length > 0 && rest[0] === 0xa0) {
    const wrapper = must(readTlv(rest), 'crlExtensions');
    rest = wrapper.rest;
    let e = must(readTlv(wrapper.body), 'crlExtensions').body;
    while (e.length > 0) {
      const ext = must(readTlv(e), 'extension');
      e = ext.rest;
      const oid = must(readTlv(ext.body), 'extension id');
      const next = oid.rest;
      const critical = next.length > 0 && next[0] === 0x01 && must(readTlv(next), 'critical').body[0] === 0xff;
      const known = KNOWN_CRL_EXTENSIONS.has(Buffer.from(oid.body).toString('hex'));
      if (critical && !known) unhandledCritical = true;
    }
  }
  if (rest.length !== 0) throw new Error('tbsCertList');
  return {
    unhandledCritical,
    tbs: tbs.raw,
    sigAlg: algOid.body,
    signature: sig.body.subarray(1),
    issuer: issuer.raw,
    thisUpdate: tu,
    nextUpdate,
    revoked,
  };
}

function loadCrls(sources: readonly CrlSource[], cas: readonly CertInfo[]): Crl[] {
  const out: Crl[] = [];
  for (const src of sources) {
    const bytes = readSource(src, 'CRL');
    const blocks = derBlocks(bytes, ['X509 CRL']);
    if (blocks.length === 0) refuse(`No CRL in ${describe(src)}`);
    for (const der of blocks) {
      let crl: ReturnType<typeof parseCrl>;
      try {
        crl = parseCrl(der);
      } catch (err) {
        return refuse(`Invalid CRL ${describe(src)}: could not parse it`, err);
      }
      if (crl.unhandledCritical) {
        refuse(
          `The CRL ${describe(src)} has a critical extension celery-sign does not handle (a delta CRL or an issuing distribution point): give a full CRL`,
        );
      }
      const issuers = cas.filter((c) => compareBytes(c.subject, crl.issuer) === 0);
      if (issuers.length === 0) {
        refuse(`The CRL ${describe(src)} is not issued by a trusted CA: no CA or intermediate given has its issuer's name`);
      }
      const digest = CRL_SIG_ALGS.get(Buffer.from(crl.sigAlg).toString('hex'));
      if (digest === undefined) refuse(`The CRL ${describe(src)} has an unsupported signature algorithm`);
      const ok = issuers.find((c) => {
        if (c.keyUsage !== null && !c.keyUsage.crlSign) return false;
        try {
          return cryptoVerify(digest, crl.tbs, c.x509.publicKey, crl.signature);
        } catch {
          return false;
        }
      });
      if (ok === undefined) {
        refuse(
          `The CRL ${describe(src)} is refused: its signature does not verify with the key of the CA ${JSON.stringify(issuers[0]!.name)} (or that CA's keyUsage does not allow cRLSign)`,
        );
      }
      out.push({
        source: describe(src),
        issuer: crl.issuer,
        issuerName: ok.name,
        thisUpdate: crl.thisUpdate,
        nextUpdate: crl.nextUpdate,
        revoked: crl.revoked,
      });
    }
  }
  return out;
}

/** The certificate a store is asked to take: its Celery id and DER. */
export interface ChainSubject {
  readonly id: string;
  readonly der: Uint8Array;
}

/**
 * The trust a store checks certificates against: the CAs, intermediates and
 * CRLs of one {@link CertChainOptions}, read and checked once.
 */
export class CertChain {
  readonly #roots: CertInfo[];
  readonly #intermediates: CertInfo[];
  readonly #crls: Crl[];

  private constructor(roots: CertInfo[], intermediates: CertInfo[], crls: Crl[]) {
    this.#roots = roots;
    this.#intermediates = intermediates;
    this.#crls = crls;
  }

  /** Reads the options (files are read now): a bad CA, intermediate or CRL throws `ERR_INVALID_CERTIFICATE`. */
  static load(options: CertChainOptions): CertChain {
    if (options === null || typeof options !== 'object') throw new TypeError('chain options must be an object');
    const roots = loadCerts(list(options.ca), 'CA');
    if (roots.length === 0) throw new TypeError('ca must name at least one CA certificate');
    const intermediates = loadCerts(list(options.intermediates), 'intermediate');
    const crls = loadCrls(list(options.crl), [...roots, ...intermediates]);
    return new CertChain(roots, intermediates, crls);
  }

  /** The paths the options read (for a store's watch). */
  static paths(options: CertChainOptions): string[] {
    return [...list(options.ca), ...list(options.intermediates), ...list(options.crl)].filter(
      (s): s is string => typeof s === 'string',
    );
  }

  /**
   * Throws `ERR_INVALID_CERTIFICATE` unless `cert` is issued by a trusted
   * CA (possibly through intermediates) and, where its issuers have CRLs,
   * not revoked. The message names the certificate id and the reason.
   */
  check(cert: ChainSubject, now: Date = new Date()): void {
    let info: CertInfo;
    try {
      info = certInfo(cert.der);
    } catch (err) {
      return refuse(`Certificate ${JSON.stringify(cert.id)} refused: it could not be read for chain verification`, err);
    }
    const reason = this.#path(info, Math.floor(now.getTime() / 1000), 0, new Set());
    if (reason !== null) refuse(`Certificate ${JSON.stringify(cert.id)} refused: ${reason}`);
  }

  /** null when `c` chains to a root; else why not. */
  #path(c: CertInfo, now: number, depth: number, seen: Set<CertInfo>): string | null {
    const revoked = this.#revocation(c, now);
    if (revoked !== null) return depth === 0 ? revoked : `its issuing intermediate ${JSON.stringify(c.name)} is refused: ${revoked}`;
    const named = [...this.#roots, ...this.#intermediates].filter(
      (ca) => !seen.has(ca) && compareBytes(ca.subject, c.issuer) === 0,
    );
    if (named.length === 0) {
      return `not issued by a trusted CA (its issuer ${JSON.stringify(printable(c.x509, 'issuer'))} is none of the trusted CAs${this.#intermediates.length > 0 ? ' or intermediates' : ''})`;
    }
    let firstReason: string | null = null;
    for (const ca of named) {
      const why = this.#issuedBy(c, ca, now, depth);
      if (why === null) {
        if (this.#roots.includes(ca)) return null;
        if (depth + 1 > MAX_DEPTH) {
          firstReason ??= `the chain is longer than ${MAX_DEPTH} intermediates`;
          continue;
        }
        const up = this.#path(ca, now, depth + 1, new Set([...seen, ca]));
        if (up === null) return null;
        firstReason ??= up;
      } else firstReason ??= why;
    }
    return firstReason;
  }

  /** null when `ca` may have issued `c` and did: CA flags, validity, signature. */
  #issuedBy(c: CertInfo, ca: CertInfo, now: number, depth: number): string | null {
    const who = `${this.#roots.includes(ca) ? 'the trusted CA' : 'the intermediate'} ${JSON.stringify(ca.name)}`;
    let good = false;
    try {
      good = c.x509.verify(ca.x509.publicKey);
    } catch {
      good = false;
    }
    if (!good) return `not issued by a trusted CA: its signature does not verify with the key of ${who}`;
    if (ca.basic === null || !ca.basic.ca) return `not issued by a trusted CA: ${who} is not a CA (no basicConstraints CA:TRUE)`;
    if (ca.keyUsage !== null && !ca.keyUsage.certSign) {
      return `not issued by a trusted CA: the keyUsage of ${who} does not allow keyCertSign`;
    }
    if (ca.basic.pathLen !== null && depth > ca.basic.pathLen) {
      return `not issued by a trusted CA: the chain is longer than the pathLenConstraint (${ca.basic.pathLen}) of ${who}`;
    }
    if (now >= ca.notAfter) return `${who} that issued it expired at ${iso(ca.notAfter)}`;
    if (now < ca.notBefore) return `${who} that issued it is not valid before ${iso(ca.notBefore)}`;
    return null;
  }

  /** null unless the CRL of `c`'s issuer (the latest, when several are given) revokes it or is stale. */
  #revocation(c: CertInfo, now: number): string | null {
    let crl: Crl | undefined;
    for (const x of this.#crls) {
      if (compareBytes(x.issuer, c.issuer) === 0 && (crl === undefined || x.thisUpdate > crl.thisUpdate)) crl = x;
    }
    if (crl !== undefined) {
      if (now < crl.thisUpdate) {
        return `the CRL of its issuer ${JSON.stringify(crl.issuerName)} (${crl.source}) is not valid before its thisUpdate ${iso(crl.thisUpdate)}`;
      }
      if (crl.nextUpdate !== null && now >= crl.nextUpdate) {
        return `the CRL of its issuer ${JSON.stringify(crl.issuerName)} (${crl.source}) is stale: its nextUpdate ${iso(crl.nextUpdate)} has passed, so its revocation status is unknown`;
      }
      const at = crl.revoked.get(c.serial);
      if (at !== undefined) {
        return `it is revoked: serial ${c.serial} is listed in the CRL of ${JSON.stringify(crl.issuerName)} (${crl.source}), revoked at ${iso(at)}`;
      }
    }
    return null;
  }
}
