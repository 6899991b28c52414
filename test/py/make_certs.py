"""Makes RSA keys and self-signed certificates with chosen validity periods, for
the rotation tests (test/rotation.test.ts, test/wire/rotation.test.ts), with the
`cryptography` library Celery itself uses.

Request (JSON on stdin)::

    {"dir": "/tmp/x",
     "keys": {"old": 2048, "new": 2048},
     "certs": [{"name": "old", "key": "old", "cn": "producer", "serial": 1,
                "not_before": 1700000000, "not_after": 1800000000}]}

writes <dir>/<key>.key.pem (PKCS#8, unencrypted) and <dir>/<name>.cert.pem, and
prints {"ok": true}. Times are Unix seconds (X.509 keeps whole seconds);
"not_before_in" / "not_after_in" give them in seconds from the moment the
certificate is made instead.
"""
import datetime
import json
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def when(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def at(c, field):
    """The time of `field`: absolute, or `<field>_in` seconds from now (now taken
    as the certificate is made, so that a short validity starts from here)."""
    if f'{field}_in' in c:
        return int(time.time()) + int(c[f'{field}_in'])
    return c[field]


def main():
    req = json.load(sys.stdin)
    out = req['dir']
    os.makedirs(out, exist_ok=True)
    keys = {}
    for name, bits in req.get('keys', {}).items():
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        keys[name] = key
        with open(os.path.join(out, f'{name}.key.pem'), 'wb') as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    for c in req.get('certs', []):
        key = keys[c['key']]
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'celery-sign rotation'),
                          x509.NameAttribute(NameOID.COMMON_NAME, c.get('cn', c['name']))])
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(int(c['serial']))
                .not_valid_before(when(at(c, 'not_before')))
                .not_valid_after(when(at(c, 'not_after')))
                .sign(key, hashes.SHA256()))
        with open(os.path.join(out, f"{c['name']}.cert.pem"), 'wb') as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    print(json.dumps({'ok': True}))


if __name__ == '__main__':
    main()
