#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (crates/core/fuzz/corpus/*).

Usage, from the repository root, after `bash scripts/setup.sh` (the two Celery
environments) and `.venv/bin/python test/py/make_fixtures.py test/.fixtures`
(the certificates and keys of the test suite, fresh random keys each time):

    .venv/bin/python crates/core/fuzz/make_seeds.py

- envelope: real payloads of both wire formats, made by the real Celery
  (`SecureSerializer.serialize`, or its `_pack` for bodies `dumps` cannot
  make) of .venv (5.5 layout) and .venv-celery54 (5.4 layout), signed with the
  keys in fixtures/ for the certificates of the target's store; a few
  refusals. Each file is one flags byte (see fuzz_targets/envelope.rs) and
  the payload.
- certificate: DER of the test suite's certificates, a few as PEM text, and
  DER edge cases patched here (the signature is never checked): long and
  non-minimal serials, serials at the core's bound, a v1 certificate, times
  at the UTCTime limits, bytes after the end, an indefinite length; and bare
  issuer Names.
- key: the PEM keys of bench/keys and the test suite, each format and cipher,
  a few made here with the openssl CLI (scrypt, AES-192 legacy); each file is
  a password length byte (0: none, n: n - 1 bytes) and the password, then
  the PEM text.
- jsonscan: kombu JSON bodies (markers, escapes, long digits, long strings).
Existing files of the same name are overwritten; nothing else is removed.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CORPUS = HERE / 'corpus'
FIX = HERE / 'fixtures'
SUITE = ROOT / 'test' / '.fixtures'

DIGEST_FLAG = {'sha256': 0, 'sha1': 1, 'sha224': 2, 'sha384': 3, 'sha512': 4}
COMPARE = 16  # flags bit 4: also open() and open_many()
LATER = 8  # flags bit 3: the clock in 2200

# Run inside a Celery environment: one JSON list of requests on stdin, one
# JSON list of base64 payloads on stdout.
PACKER = r'''
import base64, json, sys
from celery.security.certificate import Certificate
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
out = []
for r in json.load(sys.stdin):
    key = PrivateKey(open(r['key']).read())
    cert = Certificate(open(r['cert']).read())
    s = SecureSerializer(key, cert, None, r['digest'], serializer='json')
    if 'body_b64' in r:
        body = base64.b64decode(r['body_b64'])
        sig = key.sign(body, s._digest)
        p = s._pack(body, r['content_type'], r['content_encoding'], signer=cert.get_id(), signature=sig)
    else:
        p = s.serialize(r['value'])
    out.append(p.decode('ascii') if isinstance(p, bytes) else p)
json.dump(out, sys.stdout)
'''


def celery_payloads(python: Path, requests: list[dict]) -> list[str]:
    proc = subprocess.run([str(python), '-c', PACKER], input=json.dumps(requests),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def envelope() -> None:
    demo = (FIX / 'demo-rsa2048.cert.pem', FIX / 'demo-rsa2048.key.pem')
    small = (FIX / 'rsa1024.cert.pem', FIX / 'rsa1024.key.pem')
    bmp = (FIX / 'bmp-astral.cert.pem', FIX / 'rsa2048.key.pem')
    expired = (FIX / 'expired.cert.pem', FIX / 'rsa2048.key.pem')
    task = {'task': 'proj.tasks.add', 'args': [2, 3], 'kwargs': {'debug': False},
            'id': '4f0d2a8e-7c1b-4b9e-9a57-0d6c1f9e2a11', 'eta': None,
            'embed': {'callbacks': None, 'errbacks': None, 'chain': None, 'chord': None}}
    unicode = {'text': 'Ünïcödé 例 🎉', 'n': 12345678901234567890, 'f': 1.5, 'none': None}
    sep_body = base64.b64encode(b'\xff\xfe binary \x00\x01 with the separator \x00\x01 twice').decode()
    big = {'blob': 'x' * 3000, 'list': list(range(200))}
    # (name, (cert, key), digest, extra flags, request fields); 5.4 cannot
    # carry the separator or non-UTF-8 bodies, so those are 5.5 only.
    common = [
        ('demo-sha256', demo, 'sha256', COMPARE, {'value': task}),
        ('rsa1024-sha1', small, 'sha1', 0, {'value': [1, 'two', {'three': 3.0}]}),
        ('bmp-astral-sha512', bmp, 'sha512', COMPARE, {'value': unicode}),
        ('expired-sha256', expired, 'sha256', 0, {'value': 'expired signer'}),
        ('demo-sha224-large', demo, 'sha224', 0, {'value': big}),
        ('demo-sha384-text', demo, 'sha384', 0,
         {'body_b64': base64.b64encode('plain text body ✓'.encode()).decode(),
          'content_type': 'text/plain', 'content_encoding': 'utf-8'}),
    ]
    only55 = [
        ('demo-sha256-sep-binary', demo, 'sha256', COMPARE,
         {'body_b64': sep_body, 'content_type': 'application/data', 'content_encoding': 'binary'}),
        ('rsa1024-sha256-empty-body', small, 'sha256', 0,
         {'body_b64': '', 'content_type': 'application/json', 'content_encoding': 'utf-8'}),
    ]
    for label, python, specs in [('v55', ROOT / '.venv/bin/python', common + only55),
                                 ('v54', ROOT / '.venv-celery54/bin/python', common)]:
        requests = [{'cert': str(c), 'key': str(k), 'digest': d, **fields}
                    for _, (c, k), d, _, fields in specs]
        for (name, _, digest, extra, _), payload in zip(specs, celery_payloads(python, requests)):
            write('envelope', f'{label}-{name}', bytes([DIGEST_FLAG[digest] | extra]) + payload.encode())
        if label == 'v55':
            first = celery_payloads(python, requests[:1])[0]
            # Line breaks (the non-validating decode), a wrong digest, a late clock.
            wrapped = '\n'.join(first[i:i + 76] for i in range(0, len(first), 76))
            write('envelope', 'v55-demo-sha256-wrapped', bytes([COMPARE]) + wrapped.encode())
            write('envelope', 'v55-demo-wrong-digest', bytes([DIGEST_FLAG['sha512']]) + first.encode())
            write('envelope', 'v55-demo-later-clock', bytes([LATER]) + first.encode())
    sep = b'\x00\x01'
    refusals = {
        'bad-empty': b'',
        'bad-not-base64': b'this is not base64 at all!',
        'bad-one-field': base64.b64encode(b'just one field'),
        'bad-unknown-signer': base64.b64encode(sep.join([base64.b64encode(b'CN nobody 1'), base64.b64encode(b'sig'),
                                                         b'application/json', b'utf-8', b'{}'])),
        'bad-54-short-signature': base64.b64encode(sep.join([b'celery-sign demo (NOT SECRET) bench-rsa2048 2048',
                                                             b'short', b'application/json', b'utf-8', b'{}'])),
    }
    for name, payload in refusals.items():
        write('envelope', name, bytes([COMPARE]) + payload)


# --- DER, for the certificate edge cases --------------------------------------

def read_tlv(b: bytes, i: int = 0) -> tuple[int, int, int, int]:
    """(tag, start of contents, end of contents, end of header) at b[i]."""
    tag = b[i]
    n = b[i + 1]
    j = i + 2
    if n & 0x80:
        k = n & 0x7f
        n = int.from_bytes(b[j:j + k], 'big')
        j += k
    return tag, j, j + n, j


def enc(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        lb = n.to_bytes((n.bit_length() + 7) // 8, 'big')
        head = bytes([0x80 | len(lb)]) + lb
    return bytes([tag]) + head + body


def children(b: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(b):
        _, s, e, _ = read_tlv(b, i)
        out.append(b[i:e])
        i = e
    return out


def split_cert(der: bytes) -> tuple[list[bytes], list[bytes]]:
    """([tbs fields], [tbs, algorithm, signature])."""
    _, s, e, _ = read_tlv(der)
    outer = children(der[s:e])
    _, ts, te, _ = read_tlv(outer[0])
    return children(outer[0][ts:te]), outer


def join_cert(fields: list[bytes], outer: list[bytes]) -> bytes:
    return enc(0x30, enc(0x30, b''.join(fields)) + outer[1] + outer[2])


def pem_to_der(pem: bytes) -> bytes:
    lines = pem.decode().split('-----BEGIN CERTIFICATE-----', 1)[1].split('-----END', 1)[0]
    return base64.b64decode(''.join(lines.split()))


def certificate() -> None:
    names = ['rsa1024', 'rsa2048', 'rsa4096', 'ca', 'expired', 'serial-0', 'serial-negative',
             'serial-160bit', 'name-utf8', 'name-bmp', 'name-bmp-astral', 'name-universal',
             'name-printable', 'name-teletex', 'name-mixed-types', 'name-multivalued-rdn',
             'name-special-chars', 'name-many-rdns', 'bad-bmp-lone-surrogate', 'bad-utf8string',
             'name-multivalued-rdn-unsorted', 'ec-p256', 'ed25519', 'dsa2048', 'rsa2048-by-ec']
    for n in names:
        write('certificate', f'der-{n}', pem_to_der((SUITE / 'certs' / f'{n}.pem').read_bytes()))
    for n in ['rsa2048.crlf', 'rsa2048.text-preamble']:
        write('certificate', f'pem-{n}', (SUITE / 'certs' / f'{n}.pem').read_bytes())
    write('certificate', 'pem-demo-rsa2048', (FIX / 'demo-rsa2048.cert.pem').read_bytes())

    base = pem_to_der((SUITE / 'certs' / 'rsa2048.pem').read_bytes())
    fields, outer = split_cert(base)
    assert fields[0][0] == 0xa0 and fields[1][0] == 0x02
    issuer_at = 3  # [0] version, serial, signature algorithm, issuer

    def patched(name: str, **at: bytes) -> None:
        f = list(fields)
        for k, v in at.items():
            f[int(k[1:])] = v
        write('certificate', f'edge-{name}', join_cert(f, outer))

    patched('serial-64-bytes', f1=enc(0x02, b'\x7f' + b'\xa5' * 63))
    patched('serial-300-bytes', f1=enc(0x02, b'\x01' + b'\x00' * 299))
    # The core's bound (MAX_SERIAL_BYTES, 4096) and one byte over it.
    patched('serial-4096-bytes', f1=enc(0x02, b'\x5a' * 4096))
    patched('serial-4097-bytes', f1=enc(0x02, b'\x5a' * 4097))
    patched('serial-non-minimal', f1=enc(0x02, b'\x00\x00\x01'))
    patched('serial-minus-one', f1=enc(0x02, b'\xff'))
    patched('serial-empty', f1=enc(0x02, b''))
    utc = lambda s: enc(0x17, s)
    gen = lambda s: enc(0x18, s)
    patched('time-utc-limits', f4=enc(0x30, utc(b'500101000000Z') + utc(b'491231235959Z')))
    patched('time-generalized-9999', f4=enc(0x30, gen(b'20000101000000Z') + gen(b'99991231235959Z')))
    patched('time-offset', f4=enc(0x30, utc(b'500101000000Z') + utc(b'491231235959+0100')))
    # Version 1: no [0] field.
    write('certificate', 'edge-v1-no-version', join_cert(fields[1:], outer))
    write('certificate', 'edge-trailing-byte', base + b'\x00')
    write('certificate', 'edge-indefinite-length', b'\x30\x80' + base[4:] + b'\x00\x00')
    write('certificate', 'edge-truncated', base[:len(base) // 2])
    for n in ['rsa2048', 'name-multivalued-rdn', 'name-bmp-astral']:
        f, _ = split_cert(pem_to_der((SUITE / 'certs' / f'{n}.pem').read_bytes()))
        write('certificate', f'name-{n}', f[issuer_at])


def key() -> None:
    def put(name: str, pem: bytes, password: str | bytes | None) -> None:
        if password is None:
            head = b'\x00'
        else:
            pw = password.encode() if isinstance(password, str) else password
            head = bytes([len(pw) + 1]) + pw
        write('key', name, head + pem)

    keys = SUITE / 'keys'
    manifest = {i['path']: i for i in json.loads((SUITE / 'manifest.json').read_text())['items']}
    for n in ['rsa1024.pkcs1', 'rsa1024.pkcs8', 'rsa1024.pkcs8-enc', 'rsa1024.legacy-aes256',
              'rsa1024.legacy-des3', 'rsa2048.pkcs8-enc', 'rsa2048.legacy-aes128',
              'rsa2048.pkcs8-enc-des3', 'rsa2048.pkcs8-pbes1', 'rsa2048.pkcs8.crlf',
              'rsa2048.pkcs1.preamble', 'rsa3072.pkcs8-enc', 'rsa-pss2048.pkcs8', 'ec-p256.pkcs8',
              'ec-p256.sec1', 'ed25519.pkcs8', 'dsa2048.traditional']:
        put(n, (keys / f'{n}.pem').read_bytes(), manifest[f'keys/{n}.pem']['password'])
    for bits in [2048, 3072]:
        put(f'bench-rsa{bits}', (ROOT / 'bench/keys' / f'rsa{bits}.key.pem').read_bytes(), None)
    clear = (keys / 'rsa1024.pkcs1.pem').read_bytes()
    enc8 = (keys / 'rsa1024.pkcs8-enc.pem').read_bytes()
    put('refuse-password-for-clear-key', clear, 'unexpected')
    put('refuse-no-password-for-encrypted', enc8, None)
    put('refuse-wrong-password', enc8, 'wrong')
    put('refuse-empty-password', enc8, b'')
    put('refuse-public-key', b'-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK\n-----END PUBLIC KEY-----\n', None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / 'k.pem'
        src.write_bytes(clear)
        runs = {
            'openssl-pkcs8-scrypt': ['pkcs8', '-topk8', '-scrypt', '-scrypt_N', '1024', '-passout', 'pass:scrypt-pw'],
            'openssl-pkcs8-aes128-sha1': ['pkcs8', '-topk8', '-v2', 'aes-128-cbc', '-v2prf', 'hmacWithSHA1', '-passout', 'pass:scrypt-pw'],
            'openssl-legacy-aes192': ['rsa', '-traditional', '-aes192', '-passout', 'pass:scrypt-pw'],
        }
        for name, args in runs.items():
            out = subprocess.run(['openssl', *args, '-in', str(src)], capture_output=True, check=True).stdout
            put(name, out, 'scrypt-pw')


def jsonscan() -> None:
    long = 'L' * 8200
    bodies = {
        'task': json.dumps({'task': 'proj.add', 'args': [1, 2], 'kwargs': {}}),
        'markers': '{"d": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}, '
                   '"u": {"\\u005f_type__": "uuid", "__value__": "00000000-0000-0000-0000-000000000000"}}',
        'long-digits': '[1234567890123456, 123456789012345, -0.12345678901234567e+300]',
        'non-ascii': json.dumps({'t': 'Ünïcödé 例 🎉'}, ensure_ascii=False),
        'escapes': r'["\"", "\\", "\u0041", "\ud83c\udf89", "\n\t"]',
        'literals': json.dumps([long, {'k': long, long: 1}, 'short', long + '"' + 'y' * 10]),
        'literal-nul-escape': json.dumps([long, '\u0000']),
        'literal-unterminated': '["' + long,
        'literal-escaped': json.dumps([long + '\n', long + 'é']),
    }
    for name, text in bodies.items():
        write('jsonscan', name, text.encode())


def main() -> None:
    if not (SUITE / 'manifest.json').exists():
        sys.exit('make_seeds: run `.venv/bin/python test/py/make_fixtures.py test/.fixtures` first')
    envelope()
    certificate()
    key()
    jsonscan()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f'{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes')


if __name__ == '__main__':
    main()
