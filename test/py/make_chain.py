"""Makes a small PKI for the certificate chain tests (test/cert-chain.test.ts),
with the `cryptography` library Celery itself uses:

- ca: a root CA (basicConstraints CA:TRUE, keyUsage keyCertSign + cRLSign);
- inter: an intermediate CA issued by ca (pathLenConstraint 0);
- other: another root CA, not trusted by the tests;
- oldca: a root CA that has expired; notca: a certificate issued by ca with
  CA:FALSE; nosign: a CA:TRUE certificate issued by ca whose keyUsage lacks
  keyCertSign;
- leaves (RSA keys, usable as Celery signers): good and revoked (issued by
  ca), deep (by inter), stranger (by other), self (self-signed),
  under_notca, under_nosign, under_oldca (issued by those), forged (the
  issuer name of ca, signed with the key of other);
- CRLs: crl (by ca, revokes `revoked`, fresh), crl_der (the same, DER),
  crl_empty (by ca, revokes nothing), crl_stale (by ca, nextUpdate passed),
  crl_forged (the name of ca, signed with the key of other), crl_other (by
  other, revokes nothing), crl_inter (by inter, revokes nothing), crl_delta
  (by ca, a delta CRL: its DeltaCRLIndicator is critical).

Request (JSON on stdin): {"dir": "/tmp/x"}. Writes <name>.cert.pem,
<name>.key.pem and <crl>.crl.pem / crl_der.crl.der; prints {"ok": true}.
"""
import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'celery-sign chain'),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ku(cert_sign, crl_sign, digital=False):
    return x509.KeyUsage(digital_signature=digital, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def main():
    out = json.load(sys.stdin)['dir']
    os.makedirs(out, exist_ok=True)
    keys, certs = {}, {}

    def key(n):
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys[n] = k
        with open(os.path.join(out, f'{n}.key.pem'), 'wb') as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        return k

    def make(n, serial, issuer=None, ca=False, path_len=None, usage=None, before=NOW - DAY, after=NOW + 30 * DAY,
             signer=None):
        k = key(n)
        b = (x509.CertificateBuilder().subject_name(name(n))
             .issuer_name(certs[issuer].subject if issuer else name(n))
             .public_key(k.public_key()).serial_number(serial)
             .not_valid_before(before).not_valid_after(after)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True))
        if usage is not None:
            b = b.add_extension(usage, critical=True)
        c = b.sign(keys[signer or issuer] if (signer or issuer) else k, hashes.SHA256())
        certs[n] = c
        with open(os.path.join(out, f'{n}.cert.pem'), 'wb') as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))

    make('ca', 1, ca=True, usage=ku(True, True))
    make('other', 1, ca=True, usage=ku(True, True))
    make('oldca', 1, ca=True, usage=ku(True, True), before=NOW - 30 * DAY, after=NOW - DAY)
    make('inter', 2, 'ca', ca=True, path_len=0, usage=ku(True, True))
    make('notca', 3, 'ca')
    make('nosign', 4, 'ca', ca=True, usage=ku(False, True, True))
    make('good', 10, 'ca')
    make('revoked', 11, 'ca')
    make('deep', 12, 'inter')
    make('stranger', 13, 'other')
    make('self', 14)
    make('under_notca', 15, 'notca')
    make('under_nosign', 16, 'nosign')
    make('under_oldca', 17, 'oldca')
    make('forged', 18, 'ca', signer='other')

    def crl(n, issuer_name, signer, revoked=(), last=NOW - DAY, nxt=NOW + 7 * DAY, der=False, delta=False):
        b = x509.CertificateRevocationListBuilder().issuer_name(issuer_name).last_update(last).next_update(nxt)
        b = b.add_extension(x509.CRLNumber(2 if delta else 1), critical=False)
        if delta:
            b = b.add_extension(x509.DeltaCRLIndicator(1), critical=True)
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(NOW - DAY).build())
        c = b.sign(keys[signer], hashes.SHA256())
        enc = serialization.Encoding.DER if der else serialization.Encoding.PEM
        with open(os.path.join(out, f'{n}.crl.{"der" if der else "pem"}'), 'wb') as f:
            f.write(c.public_bytes(enc))

    ca = certs['ca'].subject
    crl('crl', ca, 'ca', revoked=[11])
    crl('crl_der', ca, 'ca', revoked=[11], der=True)
    crl('crl_empty', ca, 'ca')
    crl('crl_stale', ca, 'ca', last=NOW - 10 * DAY, nxt=NOW - DAY)
    crl('crl_forged', ca, 'other', revoked=[10])
    crl('crl_other', certs['other'].subject, 'other')
    crl('crl_inter', certs['inter'].subject, 'inter')
    crl('crl_delta', ca, 'ca', delta=True)
    print(json.dumps({'ok': True}))


main()
