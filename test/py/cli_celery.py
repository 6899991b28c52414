"""Stock Celery and cryptography for test/cli.test.ts: one JSON request on stdin, JSON on stdout.

    {"op": "sign", "key", "password"?, "cert", "value"}     -> {"payload"}   Celery's SecureSerializer.serialize
    {"op": "verify", "store", "payload"}                    -> {"ok", "value"} | {"ok": false, "error"}
    {"op": "cert", "path", "ca"?}                           -> what cryptography and Celery read of a certificate
    {"op": "csr", "path"}                                   -> what cryptography reads of a CSR
    {"op": "key", "path", "password"?}                      -> {"bits", "pkcs8", "encrypted"}
"""
import glob
import json
import os
import sys
import warnings

warnings.simplefilter('ignore')

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
import celery  # noqa: E402
from celery.security.certificate import Certificate, CertStore, FSCertStore  # noqa: E402
from celery.security.key import PrivateKey  # noqa: E402
from celery.security.serialization import SecureSerializer  # noqa: E402


CELERY_54 = celery.VERSION[:2] <= (5, 4)


def main():
    req = json.load(sys.stdin)
    op = req['op']
    if op == 'sign':
        key = PrivateKey(open(req['key']).read(), password=req.get('password'))
        cert = Certificate(open(req['cert']).read())
        s = SecureSerializer(key, cert, None, 'sha256', serializer='json')
        out = s.serialize(req['value'])
        print(json.dumps({'payload': out.decode() if isinstance(out, bytes) else out}))
    elif op == 'verify':
        # Celery 5.4's FSCertStore compares a naive notAfter with an aware now
        # under cryptography >= 42 (it raises TypeError), so the certificates
        # go through CertStore.add_cert, as the interop oracle does; FSCertStore
        # on Celery 5.x.
        if CELERY_54:
            store = CertStore()
            for path in sorted(glob.glob(os.path.join(req['store'], '*'))):
                store.add_cert(Certificate(open(path).read()))
        else:
            store = FSCertStore(req['store'])
        s = SecureSerializer(None, None, store, 'sha256', serializer='json')
        try:
            print(json.dumps({'ok': True, 'value': s.deserialize(req['payload'])}))
        except Exception as e:  # noqa: BLE001
            print(json.dumps({'ok': False, 'error': f'{type(e).__name__}: {e}'}))
    elif op == 'cert':
        pem = open(req['path'], 'rb').read()
        c = x509.load_pem_x509_certificate(pem)
        issuer_key = c.public_key()
        if req.get('ca'):
            issuer_key = x509.load_pem_x509_certificate(open(req['ca'], 'rb').read()).public_key()
        issuer_key.verify(c.signature, c.tbs_certificate_bytes, padding.PKCS1v15(), c.signature_hash_algorithm)
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
        celery_cert = Certificate(pem.decode())
        print(json.dumps({
            'version': c.version.name,
            'subject': c.subject.rfc4514_string(),
            'issuer': c.issuer.rfc4514_string(),
            'serial': str(c.serial_number),
            'not_after': c.not_valid_after_utc.isoformat(),
            'not_before': c.not_valid_before_utc.isoformat(),
            'ca': bc.value.ca,
            'signature_hash': c.signature_hash_algorithm.name,
            'bits': c.public_key().key_size,
            'celery_id': celery_cert.get_id(),
            'celery_issuer': celery_cert.get_issuer(),
        }))
    elif op == 'csr':
        csr = x509.load_pem_x509_csr(open(req['path'], 'rb').read())
        print(json.dumps({'subject': csr.subject.rfc4514_string(), 'valid': csr.is_signature_valid,
                          'bits': csr.public_key().key_size}))
    elif op == 'key':
        data = open(req['path'], 'rb').read()
        pw = req.get('password')
        k = serialization.load_pem_private_key(data, password=pw.encode() if pw else None)
        PrivateKey(data.decode(), password=pw)  # Celery loads it too
        print(json.dumps({'bits': k.key_size, 'pkcs8': b'BEGIN PRIVATE KEY' in data or b'BEGIN ENCRYPTED PRIVATE KEY' in data,
                          'encrypted': b'ENCRYPTED' in data}))
    else:
        raise SystemExit(f'unknown op {op}')


if __name__ == '__main__':
    main()
