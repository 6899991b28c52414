#!/usr/bin/env python3
"""Stock Python Celery's SecureSerializer, timed inside Python, for bench/run.ts.

A line protocol on stdin/stdout, one JSON document a line each way, so that the
Node side can interleave Python's samples with its own contenders':

  {"op": "hello"}
      -> {"ok": true, "python": ..., "celery": ..., "kombu": ..., "cryptography": ..., "openssl": ...}
  {"op": "load", "id": str, "file": path, "sign_check": int}
      file: {"key_path", "cert_path", "store_paths": [...], "digest", "values": [...], "payloads": [...]}
      Builds SecureSerializer(PrivateKey, Certificate, CertStore, digest, 'json'),
      deserializes every payload (made by celery-sign) and compares it with its value,
      and serializes the first sign_check values.
      -> {"ok": true, "mismatches": int, "first_error": str | null, "signed": [str]}
  {"op": "run", "id": str, "kind": "deserialize" | "serialize", "n": int, "min_ms": float}
      Runs the first n items through Celery, whole passes, until at least min_ms.
      -> {"ok": true, "ops": int, "seconds": float}
  {"op": "quit"}

Everything Celery does is in the timed loop: base64, unpack, certificate lookup,
verification, kombu JSON decode (deserialize); kombu JSON encode, sign, pack,
base64 (serialize).
"""
import json
import sys
import time
import warnings

warnings.simplefilter('ignore')

import celery  # noqa: E402
import cryptography  # noqa: E402
import kombu  # noqa: E402
from celery.security.certificate import Certificate, CertStore  # noqa: E402
from celery.security.key import PrivateKey  # noqa: E402
from celery.security.serialization import SecureSerializer  # noqa: E402

LOADED = {}


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def ascii_text(payload):
    # Celery <= 5.5 returns bytes from serialize, 5.6+ a str.
    return payload.decode('ascii') if isinstance(payload, bytes) else payload


def op_hello(req):
    try:
        from cryptography.hazmat.backends.openssl.backend import backend
        openssl = backend.openssl_version_text()
    except Exception as exc:  # pragma: no cover - informational only
        openssl = f'unknown ({exc})'
    return {
        'python': sys.version.split()[0],
        'celery': celery.__version__,
        'kombu': kombu.__version__,
        'cryptography': cryptography.__version__,
        'openssl': openssl,
    }


def op_load(req):
    with open(req['file'], encoding='utf-8') as f:
        data = json.load(f)
    store = CertStore()
    for path in data['store_paths']:
        store.add_cert(Certificate(read(path)))
    ser = SecureSerializer(PrivateKey(read(data['key_path'])), Certificate(read(data['cert_path'])),
                           store, data['digest'], serializer='json')
    values = data['values']
    payloads = data['payloads']
    mismatches = 0
    first_error = None
    for i, (payload, value) in enumerate(zip(payloads, values)):
        try:
            got = ser.deserialize(payload)
        except Exception as exc:
            got = exc
        if got != value:
            mismatches += 1
            if first_error is None:
                first_error = f'item {i}: {got!r}'[:300]
    signed = [ascii_text(ser.serialize(v)) for v in values[:req.get('sign_check', 0)]]
    LOADED[req['id']] = (ser, values, payloads)
    return {'mismatches': mismatches, 'first_error': first_error, 'signed': signed}


def op_run(req):
    ser, values, payloads = LOADED[req['id']]
    n = req['n']
    min_s = req['min_ms'] / 1000.0
    if req['kind'] == 'deserialize':
        fn, items = ser.deserialize, payloads[:n]
    else:
        fn, items = ser.serialize, values[:n]
    ops = 0
    t0 = time.perf_counter()
    while True:
        for item in items:
            fn(item)
        ops += len(items)
        t = time.perf_counter()
        if t - t0 >= min_s:
            break
    return {'ops': ops, 'seconds': t - t0}


def op_unload(req):
    LOADED.pop(req['id'], None)
    return {}


OPS = {'hello': op_hello, 'load': op_load, 'run': op_run, 'unload': op_unload}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        if req.get('op') == 'quit':
            break
        try:
            res = dict(OPS[req['op']](req))
            res['ok'] = True
        except Exception as exc:
            res = {'ok': False, 'error': f'{type(exc).__name__}: {exc}'}
        sys.stdout.write(json.dumps(res) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
