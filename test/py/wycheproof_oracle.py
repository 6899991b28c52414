#!/usr/bin/env python3
"""Certificates for Wycheproof's public keys, and the REAL Celery's answer on each vector.

Usage (test/wycheproof.test.ts drives it, one call for the whole file):
    .venv/bin/python test/py/wycheproof_oracle.py < request.json > response.json

Request (one JSON document on stdin):
    {"keys":    ["<hex of a SubjectPublicKeyInfo DER>", ...],
     "vectors": [{"key": <index into keys>, "digest": "<Celery digest name>",
                  "msg": "<hex>", "sig": "<hex>"}, ...]}

Response (one JSON document on stdout):
    {"versions": {...},
     "certs":    [{"ok": true, "pem": str, "id": str} | {"ok": false, "stage": str, "error": str}],
     "vectors":  [{"verify":      {"ok": bool, "error": str?, "root": str?},
                   "payload":     str | null,
                   "deserialize": {"ok": bool, "error": str?, "root": str?}}]}
    ("root": the innermost exception of a refusal's chain, see ``refusal``.)

Nothing here decides an answer by itself. Each certificate is made by a
throw-away CA (an RSA-2048 key made for this run) for the vector's public key
*exactly as Wycheproof encodes it*: the TBSCertificate is built with
``cryptography`` around a placeholder key, its SubjectPublicKeyInfo is replaced
by the vector's DER, and the CA signs the result. Then:

- ``certs[i]`` says whether Celery's own ``celery.security.certificate.Certificate``
  loads that certificate (and gives its ``get_id()``);
- ``verify`` is Celery's ``Certificate.verify(msg, sig, get_digest_algorithm(digest))``
  (RSA-PSS, MGF1 with the message digest, ``PSS.MAX_LENGTH``: OpenSSL recovers the
  salt length);
- ``payload`` is the Celery >= 5.5 payload ``SecureSerializer._pack`` makes around
  the vector's message (the body, content type ``application/data``, encoding
  ``binary``) and signature, signed by that certificate's id;
- ``deserialize`` is Celery's ``SecureSerializer.deserialize(payload)`` against a
  ``CertStore`` holding every certificate that loaded; ``ok`` only when it gave the
  message bytes back.

A digest name Celery's ``get_digest_algorithm`` cannot make (``shake128``
needs a length) makes every verdict an error of that name, as in Celery.
"""
from __future__ import annotations

import datetime as dt
import json
import sys

import celery
import cryptography
import kombu
from celery.security.certificate import Certificate, CertStore
from celery.security.serialization import SecureSerializer
from celery.security.utils import get_digest_algorithm
from cryptography import x509
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CA_NAME = x509.Name([
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'celery-sign tests'),
    x509.NameAttribute(NameOID.COMMON_NAME, 'Wycheproof vectors CA'),
])
FIRST_SERIAL = 1000


def exc_text(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'


def refusal(exc: BaseException) -> dict:
    """Celery's refusal, with the innermost exception of its chain as ``root``.

    Celery 5.7's ``reraise_errors()`` catches ``(cryptography.exceptions,)``, a
    module, so a failed ``verify`` surfaces as ``TypeError: catching classes
    that do not inherit from BaseException...`` raised while handling
    cryptography's ``InvalidSignature``: ``root`` says what really failed.
    """
    root = exc
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    return {'ok': False, 'error': exc_text(exc), 'root': type(root).__name__}


# ------------------------------------------------------------ a little DER

def der_item(buf: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of the element) of the element at ``at``."""
    tag = buf[at]
    n = buf[at + 1]
    if n < 0x80:
        return tag, at + 2, at + 2 + n
    k = n & 0x7F
    length = int.from_bytes(buf[at + 2:at + 2 + k], 'big')
    return tag, at + 2 + k, at + 2 + k + length


def der_children(buf: bytes) -> list[bytes]:
    """The encoded elements inside the SEQUENCE ``buf``."""
    tag, start, end = der_item(buf, 0)
    assert tag == 0x30 and end == len(buf), 'not one SEQUENCE'
    out = []
    at = start
    while at < end:
        _, _, stop = der_item(buf, at)
        out.append(buf[at:stop])
        at = stop
    return out


def der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, 'big')
    return bytes([0x80 | len(b)]) + b


def der_seq(parts: list[bytes]) -> bytes:
    body = b''.join(parts)
    return b'\x30' + der_len(len(body)) + body


def cert_for_spki(ca_key: rsa.RSAPrivateKey, spki_der: bytes, serial: int, now: dt.datetime) -> bytes:
    """A certificate (PEM) whose SubjectPublicKeyInfo is exactly ``spki_der``, signed by ``ca_key``."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'celery-sign tests'),
        x509.NameAttribute(NameOID.COMMON_NAME, f'wycheproof key {serial - FIRST_SERIAL}'),
    ])
    placeholder = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(CA_NAME)
                   .public_key(ca_key.public_key())
                   .serial_number(serial)
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=3650))
                   .sign(ca_key, hashes.SHA256()))
    tbs_old, sig_alg, _ = der_children(placeholder.public_bytes(serialization.Encoding.DER))
    fields = der_children(tbs_old)
    # version [0], serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    assert fields[0][0] == 0xA0 and len(fields) == 7, 'unexpected TBSCertificate layout'
    fields[6] = spki_der
    tbs = der_seq(fields)
    sig = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    bit_string = b'\x03' + der_len(len(sig) + 1) + b'\x00' + sig
    der = der_seq([tbs, sig_alg, bit_string])
    cert = x509.load_der_x509_certificate(der)  # a parse error here is the test's bug
    return cert.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------ the run

def main() -> None:
    req = json.load(sys.stdin)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    certs_out: list[dict] = []
    celery_certs: list[Certificate | None] = []
    store = CertStore()
    for i, spki_hex in enumerate(req['keys']):
        try:
            pem = cert_for_spki(ca_key, bytes.fromhex(spki_hex), FIRST_SERIAL + i, now)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            certs_out.append({'ok': False, 'stage': 'make', 'error': exc_text(exc)})
            celery_certs.append(None)
            continue
        try:
            c = Certificate(pem.decode('ascii'))
            cid = c.get_id()
            store.add_cert(c)
        except Exception as exc:  # noqa: BLE001 - Celery's verdict on the certificate
            certs_out.append({'ok': False, 'stage': 'celery', 'error': exc_text(exc), 'pem': pem.decode('ascii')})
            celery_certs.append(None)
            continue
        certs_out.append({'ok': True, 'pem': pem.decode('ascii'), 'id': cid})
        celery_certs.append(c)

    serializers: dict[str, SecureSerializer | Exception] = {}
    digests: dict[str, object] = {}

    def serializer_for(name: str) -> SecureSerializer | Exception:
        if name not in serializers:
            try:
                serializers[name] = SecureSerializer(cert_store=store, digest=name)
            except Exception as exc:  # noqa: BLE001
                serializers[name] = exc
        return serializers[name]

    def digest_for(name: str):
        if name not in digests:
            try:
                digests[name] = get_digest_algorithm(name)
            except Exception as exc:  # noqa: BLE001
                digests[name] = exc
        return digests[name]

    out = []
    for v in req['vectors']:
        msg = bytes.fromhex(v['msg'])
        sig = bytes.fromhex(v['sig'])
        cert = celery_certs[v['key']]
        item: dict = {}
        h = digest_for(v['digest'])
        if cert is None:
            item['verify'] = {'ok': False, 'error': 'certificate: ' + certs_out[v['key']]['error']}
        elif isinstance(h, Exception):
            item['verify'] = {'ok': False, 'error': 'digest: ' + exc_text(h)}
        else:
            try:
                cert.verify(msg, sig, h)
                item['verify'] = {'ok': True}
            except Exception as exc:  # noqa: BLE001 - Celery's verdict
                item['verify'] = refusal(exc)
        s = serializer_for(v['digest'])
        if cert is None:
            item['payload'] = None
            item['deserialize'] = {'ok': False, 'error': 'certificate: ' + certs_out[v['key']]['error']}
        elif isinstance(s, Exception):
            item['payload'] = None
            item['deserialize'] = {'ok': False, 'error': 'serializer: ' + exc_text(s)}
        else:
            payload = s._pack(msg, 'application/data', 'binary', cert.get_id(), sig)
            item['payload'] = payload
            try:
                body = s.deserialize(payload)
                if body == msg:
                    item['deserialize'] = {'ok': True}
                else:
                    item['deserialize'] = {'ok': False, 'error': f'body differs: {body!r:.80}'}
            except Exception as exc:  # noqa: BLE001 - Celery's verdict
                item['deserialize'] = refusal(exc)
        out.append(item)

    json.dump({
        'versions': {
            'python': sys.version.split()[0],
            'celery': celery.__version__,
            'kombu': kombu.__version__,
            'cryptography': cryptography.__version__,
            'openssl': openssl_backend.openssl_version_text(),
        },
        'certs': certs_out,
        'vectors': out,
    }, sys.stdout)


if __name__ == '__main__':
    main()
