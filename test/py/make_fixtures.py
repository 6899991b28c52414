#!/usr/bin/env python3
"""Generate the key and certificate material of the test suites.

Usage:
    .venv/bin/python test/py/make_fixtures.py OUTDIR [--rsa-8192] [--quiet]

Everything is made fresh (random keys) with Python ``cryptography``; the
``openssl`` CLI (OpenSSL 3) is used only for what cryptography cannot write:
legacy DES-EDE3/AES-128 ``Proc-Type`` keys, PKCS#8 with 3DES or PBES1, an
RSA-PSS key, and certificates with a serial of 0, a negative serial or a
160-bit serial. A few certificates are patched byte-wise after signing to carry
attribute values that are not valid in their string type (their signature is
then broken, which Celery never checks).

Every ``expected_id`` / ``expected_issuer`` in ``OUTDIR/manifest.json`` is what
the real ``celery.security.certificate.Certificate(pem).get_id()`` /
``get_issuer()`` of the running interpreter returned; every ``celery`` verdict
on a key is what ``celery.security.key.PrivateKey(pem, password)`` did.
Nothing here re-implements Celery. See test/py/README.md for the manifest's
schema.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery
import cryptography
from celery.security.certificate import Certificate as CeleryCertificate
from celery.security.certificate import FSCertStore
from celery.security.key import PrivateKey as CeleryPrivateKey
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

SCHEMA_VERSION = 1
OPENSSL = os.environ.get('OPENSSL', '/usr/bin/openssl' if os.path.exists('/usr/bin/openssl') else 'openssl')

# Passwords, some with non-ASCII characters (used as their UTF-8 bytes).
PASSWORDS: dict[int, str] = {
    1024: 'celery-sign',
    2048: 'pässwörd €',
    3072: '秘密のパスワード🔑',
    4096: 'ascii-password-4096',
    8192: 'Ünïcödé 8192',
}

PrivateKeyTypes = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | dsa.DSAPrivateKey


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def exc_text(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'


@dataclass
class Ctx:
    out: Path
    now: dt.datetime
    items: list[dict[str, Any]]
    quiet: bool

    def write(self, rel: str, data: bytes) -> str:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr)


def openssl(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    res = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, env=full_env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f'openssl {" ".join(args)} failed: {res.stderr.decode(errors="replace")}')
    return res.stdout


# ---------------------------------------------------------------- keys

def celery_key_verdict(pem: bytes, password: str | None) -> dict[str, Any]:
    try:
        CeleryPrivateKey(pem, password=password.encode('utf-8') if password is not None else None)
    except Exception as exc:  # noqa: BLE001 - the verdict is the exception
        return {'ok': False, 'error': exc_text(exc)}
    return {'ok': True, 'error': None}


def pem_label(pem: bytes) -> str:
    first = pem.split(b'\n', 1)[0].strip()
    return first.removeprefix(b'-----BEGIN ').removesuffix(b'-----').decode('ascii')


def add_key(ctx: Ctx, *, name: str, key_id: str, algorithm: str, bits: int | None, fmt: str,
            pem: bytes, password: str | None, encryption: dict[str, str] | None,
            generated_by: str, tags: list[str] | None = None, description: str = '') -> None:
    rel = ctx.write(f'keys/{name}.pem', pem)
    ctx.items.append({
        'name': name,
        'kind': 'private_key',
        'path': rel,
        'key_id': key_id,
        'algorithm': algorithm,
        'bits': bits,
        'format': fmt,
        'pem_label': pem_label(pem),
        'encryption': encryption,
        'password': password,
        'generated_by': generated_by,
        'celery': celery_key_verdict(pem, password),
        'tags': tags or [],
        'description': description,
    })


def rsa_key_set(ctx: Ctx, bits: int) -> rsa.RSAPrivateKey:
    t0 = time.monotonic()
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    ctx.log(f'rsa{bits}: keygen {time.monotonic() - t0:.2f}s')
    kid = f'rsa{bits}'
    pw = PASSWORDS[bits]
    pwb = pw.encode('utf-8')
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    add_key(ctx, name=f'{kid}.pkcs1', key_id=kid, algorithm='rsa', bits=bits, fmt='pkcs1', pem=pkcs1,
            password=None, encryption=None, generated_by='cryptography')
    add_key(ctx, name=f'{kid}.pkcs8', key_id=kid, algorithm='rsa', bits=bits, fmt='pkcs8',
            pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            password=None, encryption=None, generated_by='cryptography')
    add_key(ctx, name=f'{kid}.pkcs8-enc', key_id=kid, algorithm='rsa', bits=bits, fmt='pkcs8-encrypted',
            pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(pwb)),
            password=pw, encryption={'scheme': 'pbes2', 'kdf': 'pbkdf2-hmac-sha256', 'cipher': 'aes-256-cbc'},
            generated_by='cryptography',
            tags=['non-ascii-password'] if not pw.isascii() else [])
    add_key(ctx, name=f'{kid}.legacy-aes256', key_id=kid, algorithm='rsa', bits=bits, fmt='legacy-encrypted',
            pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.BestAvailableEncryption(pwb)),
            password=pw, encryption={'scheme': 'legacy-pem', 'kdf': 'evp-bytestokey-md5', 'cipher': 'aes-256-cbc'},
            generated_by='cryptography',
            tags=['non-ascii-password'] if not pw.isascii() else [])
    # cryptography cannot write 3DES: the openssl CLI can (password via the environment).
    des3 = openssl('rsa', '-des3', '-traditional', '-passout', 'env:CS_PASS', stdin=pkcs1,
                   env={'CS_PASS': pw})
    add_key(ctx, name=f'{kid}.legacy-des3', key_id=kid, algorithm='rsa', bits=bits, fmt='legacy-encrypted',
            pem=des3, password=pw,
            encryption={'scheme': 'legacy-pem', 'kdf': 'evp-bytestokey-md5', 'cipher': 'des-ede3-cbc'},
            generated_by='openssl',
            tags=['non-ascii-password'] if not pw.isascii() else [])
    return key


def rsa_key_extras(ctx: Ctx, key: rsa.RSAPrivateKey) -> None:
    """More encodings of the 2048-bit key, for parser coverage."""
    kid = 'rsa2048'
    pw = PASSWORDS[2048]
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    add_key(ctx, name=f'{kid}.legacy-aes128', key_id=kid, algorithm='rsa', bits=2048, fmt='legacy-encrypted',
            pem=openssl('rsa', '-aes128', '-traditional', '-passout', 'env:CS_PASS', stdin=pkcs1,
                        env={'CS_PASS': pw}),
            password=pw, encryption={'scheme': 'legacy-pem', 'kdf': 'evp-bytestokey-md5', 'cipher': 'aes-128-cbc'},
            generated_by='openssl', tags=['non-ascii-password'])
    add_key(ctx, name=f'{kid}.pkcs8-enc-des3', key_id=kid, algorithm='rsa', bits=2048, fmt='pkcs8-encrypted',
            pem=openssl('pkcs8', '-topk8', '-v2', 'des3', '-v2prf', 'hmacWithSHA1', '-passout', 'env:CS_PASS',
                        stdin=pkcs8, env={'CS_PASS': pw}),
            password=pw, encryption={'scheme': 'pbes2', 'kdf': 'pbkdf2-hmac-sha1', 'cipher': 'des-ede3-cbc'},
            generated_by='openssl', tags=['non-ascii-password'])
    add_key(ctx, name=f'{kid}.pkcs8-pbes1', key_id=kid, algorithm='rsa', bits=2048, fmt='pkcs8-encrypted',
            pem=openssl('pkcs8', '-topk8', '-v1', 'PBE-SHA1-3DES', '-passout', 'env:CS_PASS',
                        stdin=pkcs8, env={'CS_PASS': 'ascii-pbes1'}),
            password='ascii-pbes1',
            encryption={'scheme': 'pkcs12-pbe', 'kdf': 'pkcs12-sha1', 'cipher': 'des-ede3-cbc'},
            generated_by='openssl', description='PKCS#12-style PBE (pbeWithSHAAnd3-KeyTripleDES-CBC)')
    add_key(ctx, name=f'{kid}.pkcs8.crlf', key_id=kid, algorithm='rsa', bits=2048, fmt='pkcs8',
            pem=pkcs8.replace(b'\n', b'\r\n'), password=None, encryption=None, generated_by='cryptography',
            tags=['crlf'], description='PKCS#8 with CRLF line endings')
    add_key(ctx, name=f'{kid}.pkcs1.preamble', key_id=kid, algorithm='rsa', bits=2048, fmt='pkcs1',
            pem=b'Some text before the key\n' + pkcs1, password=None, encryption=None,
            generated_by='cryptography', tags=['preamble'], description='text before the PEM block')


def other_keys(ctx: Ctx) -> dict[str, PrivateKeyTypes]:
    keys: dict[str, PrivateKeyTypes] = {}
    eck = ec.generate_private_key(ec.SECP256R1())
    keys['ec-p256'] = eck
    for fmt, pf in (('pkcs8', serialization.PrivateFormat.PKCS8),
                    ('sec1', serialization.PrivateFormat.TraditionalOpenSSL)):
        add_key(ctx, name=f'ec-p256.{fmt}', key_id='ec-p256', algorithm='ec', bits=256, fmt=fmt,
                pem=eck.private_bytes(serialization.Encoding.PEM, pf, serialization.NoEncryption()),
                password=None, encryption=None, generated_by='cryptography', tags=['non-rsa'])
    edk = ed25519.Ed25519PrivateKey.generate()
    keys['ed25519'] = edk
    add_key(ctx, name='ed25519.pkcs8', key_id='ed25519', algorithm='ed25519', bits=None, fmt='pkcs8',
            pem=edk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            password=None, encryption=None, generated_by='cryptography', tags=['non-rsa'])
    dk = dsa.generate_private_key(2048)
    keys['dsa2048'] = dk
    for fmt, pf in (('pkcs8', serialization.PrivateFormat.PKCS8),
                    ('traditional', serialization.PrivateFormat.TraditionalOpenSSL)):
        add_key(ctx, name=f'dsa2048.{fmt}', key_id='dsa2048', algorithm='dsa', bits=2048, fmt=fmt,
                pem=dk.private_bytes(serialization.Encoding.PEM, pf, serialization.NoEncryption()),
                password=None, encryption=None, generated_by='cryptography', tags=['non-rsa'])
    # An RSASSA-PSS key (id-RSASSA-PSS OID): cryptography cannot generate one.
    pss = openssl('genpkey', '-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048', '-quiet')
    add_key(ctx, name='rsa-pss2048.pkcs8', key_id='rsa-pss2048', algorithm='rsa-pss', bits=2048, fmt='pkcs8',
            pem=pss, password=None, encryption=None, generated_by='openssl', tags=['rsa-pss-oid'],
            description='PKCS#8 with the id-RSASSA-PSS algorithm OID instead of rsaEncryption')
    return keys


# ---------------------------------------------------------------- certificates

def issuer_attributes(cert: x509.Certificate) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, rdn in enumerate(cert.issuer.rdns):
        for attr in rdn:
            out.append({
                'rdn': i,
                'oid': attr.oid.dotted_string,
                'oid_name': attr.oid._name,
                'asn1_type': attr._type.name,
                'value': attr.value,
            })
    return out


def add_cert(ctx: Ctx, *, name: str, pem: bytes, key_id: str | None, signed_by: str,
             generated_by: str, tags: list[str] | None = None, description: str = '',
             signature_valid: bool = True) -> dict[str, Any]:
    rel = ctx.write(f'certs/{name}.pem', pem)
    item: dict[str, Any] = {
        'name': name,
        'kind': 'certificate',
        'path': rel,
        'format': 'pem',
        'algorithm': None,
        'bits': None,
        'key_id': key_id,
        'signed_by': signed_by,
        'serial': None,
        'serial_hex': None,
        'not_before': None,
        'not_after': None,
        'expired': None,
        'not_yet_valid': None,
        'expected_id': None,
        'expected_issuer': None,
        'celery_error': None,
        'celery_error_stage': None,
        'celery_has_expired_error': None,
        'warnings': [],
        'issuer_attributes': None,
        'parse_error': None,
        'sha256_fingerprint': None,
        'signature_valid': signature_valid,
        'generated_by': generated_by,
        'tags': tags or [],
        'description': description,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            parsed = x509.load_pem_x509_certificate(pem)
    except Exception as exc:  # noqa: BLE001 - cryptography refuses some patched certificates
        item['parse_error'] = exc_text(exc)
        parsed = None
    if parsed is not None:
        pub = parsed.public_key()
        checked_at = dt.datetime.now(dt.timezone.utc)
        algorithms = {rsa.RSAPublicKey: 'rsa', ec.EllipticCurvePublicKey: 'ec',
                      ed25519.Ed25519PublicKey: 'ed25519', dsa.DSAPublicKey: 'dsa'}
        serial = parsed.serial_number
        item.update({
            'algorithm': next((v for k, v in algorithms.items() if isinstance(pub, k)), type(pub).__name__),
            'bits': getattr(pub, 'key_size', None),
            'serial': str(serial),
            'serial_hex': format(serial, 'x') if serial >= 0 else '-' + format(-serial, 'x'),
            'not_before': iso(parsed.not_valid_before_utc),
            'not_after': iso(parsed.not_valid_after_utc),
            'expired': parsed.not_valid_after_utc <= checked_at,
            'not_yet_valid': parsed.not_valid_before_utc > checked_at,
            'sha256_fingerprint': hashlib.sha256(parsed.public_bytes(serialization.Encoding.DER)).hexdigest(),
        })
        try:
            item['issuer_attributes'] = issuer_attributes(parsed)
        except Exception as exc:  # noqa: BLE001
            item['parse_error'] = exc_text(exc)
    # The expectations come from Celery itself, step by step as Celery does them.
    stage = 'load'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            cc = CeleryCertificate(pem)
            stage = 'get_issuer'
            item['expected_issuer'] = cc.get_issuer()
            stage = 'get_id'
            item['expected_id'] = cc.get_id()
            assert item['serial'] == str(cc.get_serial_number())
        except Exception as exc:  # noqa: BLE001 - the verdict is the exception
            item['celery_error'] = exc_text(exc)
            item['celery_error_stage'] = stage
        else:
            try:
                expired = cc.has_expired()
                assert expired == item['expired'], (name, expired)
            except Exception as exc:  # noqa: BLE001 - Celery 5.4.0's has_expired raises TypeError
                item['celery_has_expired_error'] = exc_text(exc)
    item['warnings'] = sorted({f'{w.category.__name__}: {w.message}' for w in caught})
    ctx.items.append(item)
    return item


@dataclass
class Signer:
    name: str
    key: PrivateKeyTypes
    subject: x509.Name


def build_cert(*, subject: x509.Name, issuer: x509.Name, public_key: Any, signer_key: PrivateKeyTypes,
               serial: int, not_before: dt.datetime, not_after: dt.datetime, ca: bool = False) -> bytes:
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer)
         .public_key(public_key)
         .serial_number(serial)
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    algo = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = b.sign(signer_key, algo)
    return cert.public_bytes(serialization.Encoding.PEM)


def patch_pem(pem: bytes, old: bytes, new: bytes) -> bytes:
    """Replace bytes inside the DER of a PEM certificate (same length, no re-signing)."""
    assert len(old) == len(new)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert old in der, old
    der = der.replace(old, new)
    b64 = base64.b64encode(der).decode('ascii')
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ('-----BEGIN CERTIFICATE-----\n' + '\n'.join(lines) + '\n-----END CERTIFICATE-----\n').encode('ascii')


def attr(oid: x509.ObjectIdentifier, value: str, t: _ASN1Type | None = None) -> x509.NameAttribute[str]:
    return x509.NameAttribute(oid, value, _type=t) if t is not None else x509.NameAttribute(oid, value)


def name(*attrs: x509.NameAttribute[str]) -> x509.Name:
    return x509.Name(list(attrs))


def certificates(ctx: Ctx, rsa_keys: dict[int, rsa.RSAPrivateKey], others: dict[str, PrivateKeyTypes]) -> None:
    now = ctx.now
    day = dt.timedelta(days=1)
    valid_from = now - day
    valid_to = now + 3650 * day

    # The test CA: self-signed, valid until 2060 (GeneralizedTime).
    ca_key = rsa_keys[2048]
    ca_name = name(attr(NameOID.COUNTRY_NAME, 'NO'), attr(NameOID.ORGANIZATION_NAME, 'celery-sign tests'),
                   attr(NameOID.COMMON_NAME, 'celery-sign test CA'))
    add_cert(ctx, name='ca', pem=build_cert(subject=ca_name, issuer=ca_name, public_key=ca_key.public_key(),
                                            signer_key=ca_key, serial=x509.random_serial_number(),
                                            not_before=valid_from,
                                            not_after=dt.datetime(2060, 1, 1, tzinfo=dt.timezone.utc), ca=True),
             key_id='rsa2048', signed_by='self', generated_by='cryptography', tags=['ca', 'generalized-time'],
             description='test CA, self-signed, not_after in 2060 (GeneralizedTime)')

    def leaf(cert_name: str, key_id: str, pub: Any, *, subject_cn: str, serial: int | None = None,
             nb: dt.datetime = valid_from, na: dt.datetime = valid_to, tags: list[str] | None = None,
             description: str = '') -> None:
        subj = name(attr(NameOID.ORGANIZATION_NAME, 'celery-sign tests'), attr(NameOID.COMMON_NAME, subject_cn))
        pem = build_cert(subject=subj, issuer=ca_name, public_key=pub, signer_key=ca_key,
                         serial=serial if serial is not None else x509.random_serial_number(),
                         not_before=nb, not_after=na)
        add_cert(ctx, name=cert_name, pem=pem, key_id=key_id, signed_by='ca', generated_by='cryptography',
                 tags=tags, description=description)

    for bits, key in rsa_keys.items():
        leaf(f'rsa{bits}', f'rsa{bits}', key.public_key(), subject_cn=f'worker rsa{bits}',
             description=f'leaf for the rsa{bits} key, signed by the CA')

    k2 = rsa_keys[2048]
    leaf('serial-159bit', 'rsa2048', k2.public_key(), subject_cn='serial 159 bit',
         serial=(1 << 158) | int.from_bytes(os.urandom(20), 'big') % (1 << 158),
         tags=['serial'], description='159-bit positive serial (20 DER bytes)')
    leaf('serial-1', 'rsa2048', k2.public_key(), subject_cn='serial one', serial=1, tags=['serial'])
    leaf('expired', 'rsa2048', k2.public_key(), subject_cn='expired', nb=now - 60 * day, na=now - day,
         tags=['expired'], description='not_valid_after is yesterday')
    leaf('not-yet-valid', 'rsa2048', k2.public_key(), subject_cn='not yet valid', nb=now + 30 * day,
         na=now + 400 * day, tags=['not-yet-valid'],
         description='not_valid_before is in 30 days; Celery only checks not_after')
    dup_serial = x509.random_serial_number()
    leaf('dup-a', 'rsa2048', k2.public_key(), subject_cn='duplicate a', serial=dup_serial, tags=['duplicate'],
         description='same issuer and serial (so the same Celery id) as dup-b')
    leaf('dup-b', 'rsa1024', rsa_keys[1024].public_key(), subject_cn='duplicate b', serial=dup_serial,
         tags=['duplicate'], description='same Celery id as dup-a, another key')

    # Certificates whose issuer name exercises Celery's id: self-issued with the
    # rsa2048 key (so they can all sign with keys/rsa2048.*), issuer == subject.
    def named(cert_name: str, nm: x509.Name, *, tags: list[str], description: str = '',
              serial: int | None = None) -> bytes:
        pem = build_cert(subject=nm, issuer=nm, public_key=k2.public_key(), signer_key=k2,
                         serial=serial if serial is not None else x509.random_serial_number(),
                         not_before=valid_from, not_after=valid_to)
        add_cert(ctx, name=cert_name, pem=pem, key_id='rsa2048', signed_by='self', generated_by='cryptography',
                 tags=tags, description=description)
        return pem

    named('name-utf8', name(attr(NameOID.COUNTRY_NAME, 'CH'), attr(NameOID.LOCALITY_NAME, 'Zürich'),
                            attr(NameOID.ORGANIZATION_NAME, 'Société Générale Æøå'),
                            attr(NameOID.ORGANIZATIONAL_UNIT_NAME, '証明書 部門'),
                            attr(NameOID.COMMON_NAME, 'Ünïcödé 🔐 emoji 🎉')),
          tags=['utf8string', 'non-ascii', 'emoji'], description='UTF8String values: accents, CJK, emoji')
    named('name-bmp', name(attr(NameOID.ORGANIZATION_NAME, 'BMP Ünï 中文 Ω', _ASN1Type.BMPString),
                           attr(NameOID.COMMON_NAME, 'bmp-cn', _ASN1Type.BMPString)),
          tags=['bmpstring'], description='BMPString values (UTF-16BE)')
    named('name-bmp-astral', name(attr(NameOID.COMMON_NAME, 'BMP astral 🎉𝄞', _ASN1Type.BMPString)),
          tags=['bmpstring', 'surrogates'],
          description='BMPString holding surrogate pairs (not UCS-2); Python decodes it as UTF-16BE')
    named('name-universal', name(attr(NameOID.ORGANIZATION_NAME, 'Universal ü 中 🎉', _ASN1Type.UniversalString),
                                 attr(NameOID.COMMON_NAME, 'universal-cn', _ASN1Type.UniversalString)),
          tags=['universalstring'], description='UniversalString values (UTF-32BE)')
    named('name-printable', name(attr(NameOID.COUNTRY_NAME, 'US'),
                                 attr(NameOID.ORGANIZATION_NAME, "Printable Org (x) +,-./:=?'",
                                      _ASN1Type.PrintableString),
                                 attr(NameOID.COMMON_NAME, 'printable cn', _ASN1Type.PrintableString)),
          tags=['printablestring'])
    named('name-ia5-email', name(attr(NameOID.ORGANIZATION_NAME, 'mail org'),
                                 attr(NameOID.EMAIL_ADDRESS, 'worker@example.org'),
                                 attr(NameOID.COMMON_NAME, 'ia5 cn', _ASN1Type.IA5String)),
          tags=['ia5string'], description='emailAddress (IA5String by default) and an IA5String CN')
    named('name-teletex', name(attr(NameOID.ORGANIZATION_NAME, 'Teletex Org', _ASN1Type.T61String),
                               attr(NameOID.COMMON_NAME, 'T61 café', _ASN1Type.T61String)),
          tags=['teletexstring'],
          description='T61String values; cryptography writes (and reads back) UTF-8 bytes in them')
    named('name-visible-numeric', name(attr(NameOID.ORGANIZATION_NAME, 'Visible Org', _ASN1Type.VisibleString),
                                       attr(NameOID.SERIAL_NUMBER, '0123456789', _ASN1Type.NumericString),
                                       attr(NameOID.COMMON_NAME, 'visible cn', _ASN1Type.VisibleString)),
          tags=['visiblestring', 'numericstring'])
    named('name-mixed-types', name(attr(NameOID.COUNTRY_NAME, 'DE'),
                                   attr(NameOID.ORGANIZATION_NAME, 'Grüße BMP', _ASN1Type.BMPString),
                                   attr(NameOID.ORGANIZATIONAL_UNIT_NAME, 'Univ 🎉', _ASN1Type.UniversalString),
                                   attr(NameOID.LOCALITY_NAME, 'T61 place', _ASN1Type.T61String),
                                   attr(NameOID.EMAIL_ADDRESS, 'a@b.example'),
                                   attr(NameOID.COMMON_NAME, 'UTF8 ☃')),
          tags=['bmpstring', 'universalstring', 'teletexstring', 'ia5string', 'utf8string'])
    multi = x509.Name([
        x509.RelativeDistinguishedName([attr(NameOID.COUNTRY_NAME, 'FR')]),
        x509.RelativeDistinguishedName([
            attr(NameOID.ORGANIZATIONAL_UNIT_NAME, 'zz ou (longest, written first)'),
            attr(NameOID.COMMON_NAME, 'cn multi'),
            attr(NameOID.ORGANIZATION_NAME, 'o'),
        ]),
        x509.RelativeDistinguishedName([
            attr(NameOID.DOMAIN_COMPONENT, 'example'),
            attr(NameOID.USER_ID, 'uid-1'),
        ]),
        x509.RelativeDistinguishedName([attr(NameOID.LOCALITY_NAME, 'Paris')]),
    ])
    named('name-multivalued-rdn', multi, tags=['multi-valued-rdn'],
          description='multi-valued RDNs; DER sorts each SET OF by encoding, so the id follows the '
                      'sorted (DER) order, not the order the RDN was built in')
    many = [attr(NameOID.COUNTRY_NAME, 'SE')]
    many += [attr(NameOID.DOMAIN_COMPONENT, f'dc{i}') for i in range(12)]
    many += [attr(NameOID.ORGANIZATIONAL_UNIT_NAME, f'unit {i}') for i in range(24)]
    many += [attr(NameOID.COMMON_NAME, 'many rdns')]
    named('name-many-rdns', x509.Name(many), tags=['many-rdns'], description=f'{len(many)} single-valued RDNs')
    named('name-special-chars', name(attr(NameOID.ORGANIZATION_NAME, '  leading and trailing spaces  '),
                                     attr(NameOID.ORGANIZATIONAL_UNIT_NAME, '#hash first'),
                                     attr(NameOID.COMMON_NAME, 'a,b+c=d "q" \\ <x> ;z')),
          tags=['rfc4514-specials'],
          description='characters RFC 4514 (and Node) escape; Celery joins the raw values')
    named('name-unknown-oid', name(attr(x509.ObjectIdentifier('1.3.6.1.4.1.55555.1.1'), 'private attr'),
                                   attr(NameOID.COMMON_NAME, 'with unknown oid')),
          tags=['unknown-oid'])
    named('name-duplicate-attrs', name(attr(NameOID.COMMON_NAME, 'same'), attr(NameOID.COMMON_NAME, 'same')),
          tags=['repeated-attribute'], description='the same CN twice as two RDNs')

    # Byte-patched: values not valid in their string type (signature broken).
    base = build_cert(subject=name(attr(NameOID.COMMON_NAME, 'T61 cafXs', _ASN1Type.T61String)),
                      issuer=name(attr(NameOID.COMMON_NAME, 'T61 cafXs', _ASN1Type.T61String)),
                      public_key=k2.public_key(), signer_key=k2, serial=x509.random_serial_number(),
                      not_before=valid_from, not_after=valid_to)
    add_cert(ctx, name='bad-teletex-latin1', pem=patch_pem(base, b'T61 cafXs', b'T61 caf\xe9s'),
             key_id='rsa2048', signed_by='self', generated_by='cryptography+patch', signature_valid=False,
             tags=['teletexstring', 'invalid-utf8'],
             description='T61String holding Latin-1 0xE9: real legacy encoding, not UTF-8')
    base = build_cert(subject=name(attr(NameOID.COMMON_NAME, 'bad utf8 XX')),
                      issuer=name(attr(NameOID.COMMON_NAME, 'bad utf8 XX')),
                      public_key=k2.public_key(), signer_key=k2, serial=x509.random_serial_number(),
                      not_before=valid_from, not_after=valid_to)
    add_cert(ctx, name='bad-utf8string', pem=patch_pem(base, b'bad utf8 XX', b'bad utf8 \xff\xfe'),
             key_id='rsa2048', signed_by='self', generated_by='cryptography+patch', signature_valid=False,
             tags=['utf8string', 'invalid-utf8'], description='UTF8String holding bytes FF FE')
    base = build_cert(subject=name(attr(NameOID.COMMON_NAME, 'lone QR', _ASN1Type.BMPString)),
                      issuer=name(attr(NameOID.COMMON_NAME, 'lone QR', _ASN1Type.BMPString)),
                      public_key=k2.public_key(), signer_key=k2, serial=x509.random_serial_number(),
                      not_before=valid_from, not_after=valid_to)
    add_cert(ctx, name='bad-bmp-lone-surrogate', pem=patch_pem(base, b'\x00Q\x00R', b'\xd8\x00\x00R'),
             key_id='rsa2048', signed_by='self', generated_by='cryptography+patch', signature_valid=False,
             tags=['bmpstring', 'invalid-utf16'], description='BMPString holding an unpaired high surrogate')

    # A multi-valued RDN whose SET OF is not in DER order (two same-length AVAs swapped).
    rdn = x509.RelativeDistinguishedName([attr(NameOID.COMMON_NAME, 'cnAA'), attr(NameOID.ORGANIZATION_NAME, 'orgB')])
    nm = x509.Name([x509.RelativeDistinguishedName([attr(NameOID.COUNTRY_NAME, 'IT')]), rdn])
    base = build_cert(subject=nm, issuer=nm, public_key=k2.public_key(), signer_key=k2,
                      serial=x509.random_serial_number(), not_before=valid_from, not_after=valid_to)
    cn_ava = b'\x30\x0b\x06\x03\x55\x04\x03\x0c\x04cnAA'
    o_ava = b'\x30\x0b\x06\x03\x55\x04\x0a\x0c\x04orgB'
    add_cert(ctx, name='name-multivalued-rdn-unsorted', pem=patch_pem(base, cn_ava + o_ava, o_ava + cn_ava),
             key_id='rsa2048', signed_by='self', generated_by='cryptography+patch', signature_valid=False,
             tags=['multi-valued-rdn', 'non-der'],
             description='multi-valued RDN (O, CN) in the wire order O then CN, which is not DER-sorted')

    # Serials cryptography refuses to write: the openssl CLI does.
    k2_pem = k2.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as td:
        kp = Path(td) / 'k.pem'
        kp.write_bytes(k2_pem)
        for cert_name, serial, desc in (
                ('serial-0', '0', 'serial 0'),
                ('serial-negative', '-5', 'negative serial -5 (invalid per RFC 5280, yet parsed)'),
                ('serial-160bit', '0x' + 'ff' * 20, '160-bit serial: 21 DER bytes with a leading zero')):
            pem = openssl('req', '-new', '-x509', '-key', str(kp), '-subj', f'/O=openssl serials/CN={cert_name}',
                          '-set_serial', serial, '-days', '3650', '-sha256')
            add_cert(ctx, name=cert_name, pem=pem, key_id='rsa2048', signed_by='self', generated_by='openssl',
                     tags=['serial'], description=desc)
    cert_pem = (ctx.out / 'certs' / 'rsa2048.pem').read_bytes()
    text = openssl('x509', '-text', stdin=cert_pem)
    add_cert(ctx, name='rsa2048.text-preamble', pem=text, key_id='rsa2048', signed_by='ca',
             generated_by='openssl', tags=['preamble'],
             description='the rsa2048 certificate after `openssl x509 -text` output')
    add_cert(ctx, name='rsa2048.crlf', pem=cert_pem.replace(b'\n', b'\r\n'), key_id='rsa2048', signed_by='ca',
             generated_by='cryptography', tags=['crlf'], description='the rsa2048 certificate with CRLF')

    # Non-RSA certificates: Celery refuses them.
    for kid in ('ec-p256', 'ed25519', 'dsa2048'):
        k = others[kid]
        nm = name(attr(NameOID.ORGANIZATION_NAME, 'celery-sign tests'), attr(NameOID.COMMON_NAME, f'{kid} self'))
        add_cert(ctx, name=kid, pem=build_cert(subject=nm, issuer=nm, public_key=k.public_key(), signer_key=k,
                                               serial=x509.random_serial_number(), not_before=valid_from,
                                               not_after=valid_to),
                 key_id=kid, signed_by='self', generated_by='cryptography', tags=['non-rsa'])
    # An RSA certificate signed by the EC key (Celery looks only at the public key).
    ec_name = name(attr(NameOID.COMMON_NAME, 'ec-p256 self'))
    add_cert(ctx, name='rsa2048-by-ec', pem=build_cert(
        subject=name(attr(NameOID.COMMON_NAME, 'rsa leaf under an EC issuer')), issuer=ec_name,
        public_key=k2.public_key(), signer_key=others['ec-p256'], serial=x509.random_serial_number(),
        not_before=valid_from, not_after=valid_to),
        key_id='rsa2048', signed_by='ec-p256', generated_by='cryptography', tags=['ecdsa-signature'])


# ---------------------------------------------------------------- stores

def stores(ctx: Ctx) -> None:
    certs = {i['name']: i for i in ctx.items if i['kind'] == 'certificate'}

    def usable(i: dict[str, Any]) -> bool:
        return i['expected_id'] is not None and not i['expired']

    seen: set[str] = set()
    valid: list[str] = []
    for n, i in certs.items():
        if usable(i) and i['expected_id'] not in seen and n not in ('dup-b',):
            seen.add(i['expected_id'])
            valid.append(n)
    specs: list[tuple[str, list[str], str]] = [
        ('valid', valid, 'every usable RSA certificate with a distinct Celery id'),
        ('with-expired', ['ca', 'rsa2048', 'expired'], 'holds an expired certificate: FSCertStore refuses it'),
        ('with-duplicate', ['ca', 'dup-a', 'dup-b'], 'two certificates with one Celery id'),
        ('with-non-rsa', ['ca', 'ec-p256'], 'holds an EC certificate'),
    ]
    for store_name, members, desc in specs:
        rel = f'stores/{store_name}'
        d = ctx.out / rel
        d.mkdir(parents=True, exist_ok=True)
        for m in members:
            shutil.copyfile(ctx.out / certs[m]['path'], d / f'{m}.pem')
        try:
            st = FSCertStore(str(d))
            verdict: dict[str, Any] = {'ok': True, 'error': None,
                                       'ids': sorted(c.get_id() for c in st.itercerts())}
        except Exception as exc:  # noqa: BLE001
            verdict = {'ok': False, 'error': exc_text(exc), 'ids': None}
        ctx.items.append({'name': f'store.{store_name}', 'kind': 'cert_store', 'path': rel,
                          'members': members, 'celery': verdict, 'description': desc})


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('outdir', type=Path)
    ap.add_argument('--rsa-8192', action='store_true', help='also make an RSA-8192 key set (slow keygen)')
    ap.add_argument('--quiet', action='store_true')
    args = ap.parse_args(argv)

    # Recorded per certificate (item['warnings']), not printed.
    warnings.simplefilter('ignore', CryptographyDeprecationWarning)
    t0 = time.monotonic()
    out: Path = args.outdir
    for sub in ('keys', 'certs', 'stores'):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(out=out, now=utc_now(), items=[], quiet=args.quiet)

    sizes = [1024, 2048, 3072, 4096] + ([8192] if args.rsa_8192 else [])
    rsa_keys = {bits: rsa_key_set(ctx, bits) for bits in sizes}
    rsa_key_extras(ctx, rsa_keys[2048])
    others = other_keys(ctx)
    certificates(ctx, rsa_keys, others)
    stores(ctx)

    names = [i['name'] for i in ctx.items]
    assert len(names) == len(set(names)), 'duplicate item names'
    manifest = {
        'schema': SCHEMA_VERSION,
        'generated_at': iso(ctx.now),
        'generator': {
            'python': sys.version.split()[0],
            'celery': celery.__version__,
            'cryptography': cryptography.__version__,
            'openssl_cli': openssl('version').decode().strip(),
        },
        'items': ctx.items,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    ctx.log(f'{len(ctx.items)} items in {out} ({time.monotonic() - t0:.1f}s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
