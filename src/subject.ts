/**
 * A certificate's subject, as Python `cryptography` gives it: the common
 * name (`cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value`)
 * and `cert.subject.rfc4514_string()`. Used to name signers in `authorize`
 * rules and in the security log; not part of Celery's id.
 *
 * @internal
 * @module
 */
import { subjectAttributes, type NameAttribute } from './backend/js/der.js';
import { decodeBlock, firstBlockLabelled } from './backend/js/pem.js';

/** `cryptography`'s `_NAMEOID_TO_NAME`. */
const SHORT_NAMES: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.6': 'C',
  '2.5.4.9': 'STREET',
  '0.9.2342.19200300.100.1.25': 'DC',
  '0.9.2342.19200300.100.1.1': 'UID',
};

/** `cryptography`'s `_escape_dn_value`. */
function escapeValue(v: string): string {
  if (v === '') return '';
  let s = v
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\+/g, '\\+')
    .replace(/,/g, '\\,')
    .replace(/;/g, '\\;')
    .replace(/</g, '\\<')
    .replace(/>/g, '\\>')
    .replace(/\0/g, '\\00');
  if (s[0] === '#' || s[0] === ' ') s = '\\' + s;
  if (s.endsWith(' ')) s = s.slice(0, -1) + '\\ ';
  return s;
}

function attrString(a: NameAttribute): string {
  return `${SHORT_NAMES[a.oid] ?? a.oid}=${escapeValue(a.value)}`;
}

/** The subject of a PEM certificate (the block the core reads), or `null` where it cannot be read. */
export interface Subject {
  /** The first common name, or `null`. */
  readonly commonName: string | null;
  /** `Name.rfc4514_string()`: the RDNs in reverse order, `,`-separated, multi-valued ones `+`-joined. */
  readonly rfc4514: string;
}

export function subjectOf(pem: Uint8Array): Subject | null {
  const block = firstBlockLabelled(pem, ['CERTIFICATE', 'X509 CERTIFICATE']);
  const der = block && decodeBlock(block);
  const rdns = der ? subjectAttributes(der) : undefined;
  if (!rdns) return null;
  const cn = rdns.flat().find((a) => a.oid === '2.5.4.3');
  return {
    commonName: cn?.value ?? null,
    rfc4514: rdns
      .map((rdn) => rdn.map(attrString).join('+'))
      .reverse()
      .join(','),
  };
}
