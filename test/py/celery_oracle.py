#!/usr/bin/env python3
"""A JSON-over-stdio oracle around the REAL celery.security of the running venv.

Run it with the interpreter of the Celery you want to ask:
    .venv/bin/python test/py/celery_oracle.py           < request.json   (Celery 5.7)
    .venv-celery54/bin/python test/py/celery_oracle.py  < request.json   (Celery 5.4)

It reads ONE JSON document on stdin and writes ONE JSON document (one line,
ASCII-only JSON: non-ASCII characters as \\u escapes) on stdout. Celery, kombu and cryptography are
imported once; every operation loops over a list of items, so one process
answers a whole batch. A JSON *array* of requests is also accepted: the answer
is then an array of responses, in order.

Exit status: 0 whenever a response was written, including Celery failures
(``"ok": false``); 2 for a request the oracle cannot understand (bad JSON,
unknown op, missing or mistyped field), with ``{"ok": false, "error":
"BadRequest: ..."}`` on stdout and the message on stderr.

Described values ("dv")
-----------------------
Values cross JSON with one escape: an object that has exactly the two keys
``"$type"`` and ``"value"`` is a tagged Python value:

    {"$type": "bytes",    "value": "<base64>"}       -> bytes
    {"$type": "datetime", "value": "2024-01-02T03:04:05.000006+00:00"}
    {"$type": "date",     "value": "2024-01-02"}
    {"$type": "time",     "value": "03:04:05"}
    {"$type": "decimal",  "value": "1.10"}
    {"$type": "uuid",     "value": "<any form uuid.UUID accepts>"}
    {"$type": "int",      "value": "123456789012345678901234567890"}
    {"$type": "float",    "value": "nan" | "inf" | "-inf" | "1e308"}
    {"$type": "tuple",    "value": [dv, ...]}
    {"$type": "object",   "value": {"k": dv, ...}}   -> a dict taken literally
                                                        (escape for dicts with "$type")
Every other object, array and scalar is itself (members decoded recursively).
Results are encoded the same way (tuples come back as lists; ints beyond
+-2**53 as {"$type": "int"}; non-finite floats as {"$type": "float"}; dicts
that would look tagged as {"$type": "object"}).

Requests and responses (fields marked ? are optional)
-----------------------------------------------------
Common request fields: "op" (below), "digest"? (default "sha256", Celery's
get_digest_algorithm names: sha1, sha224, sha256, sha384, sha512, ...).
Key material: "key" PEM string, "key_password"? (string, used as UTF-8, or a
dv bytes; null or absent = none), "cert" PEM string.
Stores: "store" = list of certificate PEM strings, added one by one with
CertStore.add_cert (no expiry check, like Celery's base CertStore), or
"store_path" = a path or glob handed to FSCertStore (which checks expiry;
raises TypeError on Celery 5.4.0).

Every response: {"ok": bool, "op": str, ...}. "ok": false with "error"
("<ExceptionClass>: <message>") and "stage" when the op could not run at all
(for example the key did not load). Per-item failures never fail the op:
results are positional, one per input item, each {"ok": true, ...} or
{"ok": false, "error": "<ExceptionClass>: <message>", "error_type": "<ExceptionClass>"}.

op "version": {} -> {"python", "celery", "kombu", "cryptography", "openssl",
    "wire_format": "celery-5.5" | "celery-5.4"}
op "serialize": {key, key_password?, cert, digest?, serializer? ("json"),
    items: [dv]} -> {"results": [{"ok": true, "payload": str}]}
    payload = SecureSerializer(PrivateKey(key, key_password), Certificate(cert),
    None, digest, serializer).serialize(item), decoded as ASCII.
op "deserialize": {store | store_path, digest?, items: [str | dv bytes]}
    -> {"results": [{"ok": true, "value": dv, "value_json": str | null,
        "value_b64": str | null, "python_type": str, "content_type": str,
        "content_encoding": str, "signer": str}]}
    value_json = kombu.utils.json.dumps(value) (markers kept) unless value is
    bytes; value_b64 = base64 when it is. content_type, content_encoding and
    signer come from the same SecureSerializer's _unpack of the payload.
op "unpack": {store?, store_path?, items: [str | dv bytes]}
    -> {"results": [{"ok": true, "signer": str, "signer_b64": str,
        "signature_b64": str, "content_type": str, "content_encoding": str,
        "body_b64": str}]}   (SecureSerializer._unpack; Celery 5.4 needs the store)
op "sign": {key, key_password?, digest?, items: [str | dv bytes]}
    -> {"results": [{"ok": true, "signature_b64": str}]}   (PrivateKey.sign)
op "verify_raw": {cert, digest?, items: [{"data": str | dv bytes, "signature_b64": str}]}
    -> {"results": [{"ok": true}]}                          (Certificate.verify)
op "cert_info": {certs: [PEM str]} -> {"results": [{"ok": true, "id": str,
    "issuer": str, "serial": str (decimal), "has_expired": bool | null,
    "has_expired_error": str | null, "bits": int}]}; a failure carries
    "stage": "load" | "get_issuer" | "get_id" | "get_serial_number".
op "key_check": {items: [{"key": PEM str, "password"?: str | dv bytes | null}]}
    -> {"results": [{"ok": true, "bits": int}]}
op "store_check": {store | store_path} -> {"ids": [str]}   (op-level ok/error)
op "kombu_dumps": {serializer? ("json"), items: [dv]} -> {"results": [{"ok": true,
    "content_type": str, "content_encoding": str, "body": str | null,
    "body_b64": str | null}]}   (kombu.serialization.dumps; body is str unless bytes)
op "kombu_loads": {items: [{"body": str | dv bytes, "content_type": str,
    "content_encoding": str, "force"?: bool (true)}]}
    -> {"results": [{"ok": true, "value": dv, "value_json": str | null,
        "value_b64": str | null, "python_type": str}]}   (kombu.serialization.loads)
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import sys
import uuid
import warnings
from typing import Any, Callable

# Deprecation chatter (e.g. serial numbers <= 0) must not reach stdout/stderr noise.
warnings.simplefilter('ignore')

import celery  # noqa: E402
import cryptography  # noqa: E402
import kombu  # noqa: E402
from celery.security.certificate import Certificate, CertStore, FSCertStore  # noqa: E402
from celery.security.key import PrivateKey  # noqa: E402
from celery.security.serialization import SecureSerializer  # noqa: E402
from celery.security.utils import get_digest_algorithm  # noqa: E402
from kombu.serialization import dumps as kombu_dumps  # noqa: E402
from kombu.serialization import loads as kombu_loads  # noqa: E402
from kombu.utils import json as kombu_json  # noqa: E402

JSONValue = Any
MAX_SAFE_INT = 2 ** 53


class BadRequest(Exception):
    """The request itself is wrong (not a Celery failure)."""


class OpFailed(Exception):
    """The op could not run at all; carries the stage and the original exception."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f'{stage}: {exc}')
        self.stage = stage
        self.exc = exc


def exc_text(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'


def item_error(exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {'ok': False, 'error': exc_text(exc), 'error_type': type(exc).__name__, **extra}


# ---------------------------------------------------------------- described values

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii')


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f'{what}: expected a base64 string')
    try:
        return base64.b64decode(text.encode('ascii'), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadRequest(f'{what}: bad base64: {exc}') from exc


def is_tagged(obj: dict[str, Any]) -> bool:
    return obj.keys() == {'$type', 'value'}


def decode_dv(v: JSONValue, where: str = 'value') -> Any:
    if isinstance(v, list):
        return [decode_dv(x, where) for x in v]
    if not isinstance(v, dict):
        return v
    if not is_tagged(v):
        return {k: decode_dv(x, where) for k, x in v.items()}
    t, val = v['$type'], v['value']
    try:
        if t == 'bytes':
            return unb64(val, where)
        if t == 'datetime':
            return dt.datetime.fromisoformat(val)
        if t == 'date':
            return dt.date.fromisoformat(val)
        if t == 'time':
            return dt.time.fromisoformat(val)
        if t == 'decimal':
            return decimal.Decimal(val)
        if t == 'uuid':
            return uuid.UUID(val)
        if t == 'int':
            return int(val)
        if t == 'float':
            return float(val)
        if t == 'tuple':
            return tuple(decode_dv(x, where) for x in val)
        if t == 'object':
            if not isinstance(val, dict):
                raise BadRequest(f'{where}: $type object needs an object value')
            return {k: decode_dv(x, where) for k, x in val.items()}
    except (TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise BadRequest(f'{where}: bad {t!r} value {val!r}: {exc}') from exc
    raise BadRequest(f'{where}: unknown $type {t!r}')


def encode_dv(v: Any) -> JSONValue:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else {'$type': 'int', 'value': str(v)}
    if isinstance(v, float):
        return v if math.isfinite(v) else {'$type': 'float', 'value': repr(v)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {'$type': 'bytes', 'value': b64(bytes(v))}
    if isinstance(v, dt.datetime):
        return {'$type': 'datetime', 'value': v.isoformat()}
    if isinstance(v, dt.date):
        return {'$type': 'date', 'value': v.isoformat()}
    if isinstance(v, dt.time):
        return {'$type': 'time', 'value': v.isoformat()}
    if isinstance(v, decimal.Decimal):
        return {'$type': 'decimal', 'value': str(v)}
    if isinstance(v, uuid.UUID):
        return {'$type': 'uuid', 'value': str(v)}
    if isinstance(v, tuple):
        return {'$type': 'tuple', 'value': [encode_dv(x) for x in v]}
    if isinstance(v, list):
        return [encode_dv(x) for x in v]
    if isinstance(v, dict):
        out = {str(k): encode_dv(x) for k, x in v.items()}
        return {'$type': 'object', 'value': out} if is_tagged(out) else out
    return {'$type': 'repr', 'value': repr(v)}


def value_fields(value: Any) -> dict[str, Any]:
    """A decoded value, as a dv and as kombu's own JSON (or base64 for bytes)."""
    fields: dict[str, Any] = {'value': encode_dv(value), 'python_type': type(value).__name__,
                              'value_json': None, 'value_b64': None}
    if isinstance(value, (bytes, bytearray, memoryview)):
        fields['value_b64'] = b64(bytes(value))
    else:
        try:
            fields['value_json'] = kombu_json.dumps(value)
        except Exception as exc:  # noqa: BLE001 - not every decoded value is JSON-able
            fields['value_json_error'] = exc_text(exc)
    return fields


# ---------------------------------------------------------------- request helpers

def field(req: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in req or req[name] is None:
        if default is ...:
            raise BadRequest(f'missing field {name!r}')
        return default
    v = req[name]
    if not isinstance(v, kind):
        raise BadRequest(f'field {name!r} has the wrong type ({type(v).__name__})')
    return v


def items_of(req: dict[str, Any]) -> list[Any]:
    items: list[Any] = field(req, 'items', list)
    return items


def password_of(v: Any, where: str) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode('utf-8')
    decoded = decode_dv(v, where)
    if isinstance(decoded, bytes):
        return decoded
    raise BadRequest(f'{where}: a password is a string or a dv bytes')


def data_of(v: Any, where: str) -> bytes | str:
    decoded = decode_dv(v, where)
    if isinstance(decoded, (bytes, str)):
        return decoded
    raise BadRequest(f'{where}: expected a string or a dv bytes')


def digest_of(req: dict[str, Any]) -> Any:
    name = field(req, 'digest', str, 'sha256')
    try:
        return get_digest_algorithm(name)
    except AttributeError as exc:
        raise BadRequest(f'unknown digest {name!r}') from exc


def load_key(req: dict[str, Any]) -> PrivateKey:
    pem = field(req, 'key', str)
    pw = password_of(req.get('key_password'), 'key_password')
    try:
        return PrivateKey(pem, password=pw)
    except Exception as exc:  # noqa: BLE001
        raise OpFailed('key', exc) from exc


def load_cert(req: dict[str, Any]) -> Certificate:
    try:
        return Certificate(field(req, 'cert', str))
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001
        raise OpFailed('cert', exc) from exc


def load_store(req: dict[str, Any], required: bool = True) -> CertStore | None:
    certs = req.get('store')
    path = req.get('store_path')
    if certs is not None and path is not None:
        raise BadRequest('give either store or store_path')
    if path is not None:
        if not isinstance(path, str):
            raise BadRequest('store_path must be a string')
        try:
            return FSCertStore(path)
        except Exception as exc:  # noqa: BLE001
            raise OpFailed('store', exc) from exc
    if certs is None:
        if required:
            raise BadRequest('missing field store (or store_path)')
        return None
    if not isinstance(certs, list) or not all(isinstance(c, str) for c in certs):
        raise BadRequest('store must be a list of PEM strings')
    store = CertStore()
    try:
        for pem in certs:
            store.add_cert(Certificate(pem))
    except Exception as exc:  # noqa: BLE001
        raise OpFailed('store', exc) from exc
    return store


def payload_of(v: Any, i: int) -> bytes | str:
    return data_of(v, f'items[{i}]')


# ---------------------------------------------------------------- ops

def op_version(req: dict[str, Any]) -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl.backend import backend

    major_minor = tuple(int(p) for p in celery.__version__.split('.')[:2])
    return {
        'python': sys.version.split()[0],
        'celery': celery.__version__,
        'kombu': kombu.__version__,
        'cryptography': cryptography.__version__,
        'openssl': backend.openssl_version_text(),
        'wire_format': 'celery-5.5' if major_minor >= (5, 5) else 'celery-5.4',
        'executable': sys.executable,
    }


def op_serialize(req: dict[str, Any]) -> dict[str, Any]:
    values = [decode_dv(v, f'items[{i}]') for i, v in enumerate(items_of(req))]
    digest_name = field(req, 'digest', str, 'sha256')
    digest_of(req)
    serializer_name = field(req, 'serializer', str, 'json')
    s = SecureSerializer(load_key(req), load_cert(req), None, digest_name, serializer=serializer_name)
    results: list[dict[str, Any]] = []
    for value in values:
        try:
            out = s.serialize(value)
            results.append({'ok': True, 'payload': out.decode('ascii') if isinstance(out, bytes) else out})
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
    return {'results': results}


def op_deserialize(req: dict[str, Any]) -> dict[str, Any]:
    payloads = [payload_of(v, i) for i, v in enumerate(items_of(req))]
    digest_name = field(req, 'digest', str, 'sha256')
    digest_of(req)
    s = SecureSerializer(None, None, load_store(req), digest_name)
    results: list[dict[str, Any]] = []
    for payload in payloads:
        try:
            value = s.deserialize(payload)
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
            continue
        res: dict[str, Any] = {'ok': True, **value_fields(value)}
        unpacked = s._unpack(payload)
        res['content_type'] = unpacked['content_type']
        res['content_encoding'] = unpacked['content_encoding']
        signer = unpacked['signer']
        res['signer'] = signer.decode('utf-8', 'replace') if isinstance(signer, bytes) else signer
        results.append(res)
    return {'results': results}


def op_unpack(req: dict[str, Any]) -> dict[str, Any]:
    payloads = [payload_of(v, i) for i, v in enumerate(items_of(req))]
    s = SecureSerializer(None, None, load_store(req, required=False))
    results: list[dict[str, Any]] = []
    for payload in payloads:
        try:
            u = s._unpack(payload)
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
            continue

        def as_bytes(x: bytes | str) -> bytes:
            return x if isinstance(x, bytes) else x.encode('utf-8')

        signer = as_bytes(u['signer'])
        results.append({
            'ok': True,
            'signer': signer.decode('utf-8', 'replace'),
            'signer_b64': b64(signer),
            'signature_b64': b64(as_bytes(u['signature'])),
            'content_type': u['content_type'],
            'content_encoding': u['content_encoding'],
            'body_b64': b64(as_bytes(u['body'])),
        })
    return {'results': results}


def op_sign(req: dict[str, Any]) -> dict[str, Any]:
    data = [data_of(v, f'items[{i}]') for i, v in enumerate(items_of(req))]
    digest = digest_of(req)
    key = load_key(req)
    results: list[dict[str, Any]] = []
    for d in data:
        try:
            results.append({'ok': True, 'signature_b64': b64(key.sign(d, digest))})
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
    return {'results': results}


def op_verify_raw(req: dict[str, Any]) -> dict[str, Any]:
    items: list[tuple[bytes | str, bytes]] = []
    for i, it in enumerate(items_of(req)):
        if not isinstance(it, dict):
            raise BadRequest(f'items[{i}] must be an object')
        items.append((data_of(it.get('data'), f'items[{i}].data'),
                      unb64(it.get('signature_b64'), f'items[{i}].signature_b64')))
    digest = digest_of(req)
    cert = load_cert(req)
    results: list[dict[str, Any]] = []
    for d, sig in items:
        try:
            cert.verify(d, sig, digest)
            results.append({'ok': True})
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
    return {'results': results}


def op_cert_info(req: dict[str, Any]) -> dict[str, Any]:
    pems = field(req, 'certs', list)
    results: list[dict[str, Any]] = []
    for i, pem in enumerate(pems):
        if not isinstance(pem, str):
            raise BadRequest(f'certs[{i}] must be a PEM string')
        stage = 'load'
        try:
            c = Certificate(pem)
            stage = 'get_issuer'
            issuer = c.get_issuer()
            stage = 'get_id'
            cid = c.get_id()
            stage = 'get_serial_number'
            serial = c.get_serial_number()
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc, stage=stage))
            continue
        res: dict[str, Any] = {'ok': True, 'id': cid, 'issuer': issuer, 'serial': str(serial),
                               'has_expired': None, 'has_expired_error': None,
                               'bits': getattr(c.get_pubkey(), 'key_size', None)}
        try:
            res['has_expired'] = c.has_expired()
        except Exception as exc:  # noqa: BLE001 - Celery 5.4.0 raises TypeError here
            res['has_expired_error'] = exc_text(exc)
        results.append(res)
    return {'results': results}


def op_key_check(req: dict[str, Any]) -> dict[str, Any]:
    items: list[tuple[str, bytes | None]] = []
    for i, it in enumerate(items_of(req)):
        if not isinstance(it, dict) or not isinstance(it.get('key'), str):
            raise BadRequest(f'items[{i}] must be {{"key": PEM, "password"?: ...}}')
        items.append((it['key'], password_of(it.get('password'), f'items[{i}].password')))
    results: list[dict[str, Any]] = []
    for pem, pw in items:
        try:
            k = PrivateKey(pem, password=pw)
            results.append({'ok': True, 'bits': k._key.key_size})
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
    return {'results': results}


def op_store_check(req: dict[str, Any]) -> dict[str, Any]:
    store = load_store(req)
    assert store is not None
    return {'ids': sorted(c.get_id() for c in store.itercerts())}


def op_kombu_dumps(req: dict[str, Any]) -> dict[str, Any]:
    values = [decode_dv(v, f'items[{i}]') for i, v in enumerate(items_of(req))]
    serializer = field(req, 'serializer', str, 'json')
    results: list[dict[str, Any]] = []
    for value in values:
        try:
            ctype, cenc, body = kombu_dumps(value, serializer=serializer)
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
            continue
        is_bytes = isinstance(body, (bytes, bytearray, memoryview))
        results.append({'ok': True, 'content_type': ctype, 'content_encoding': cenc,
                        'body': None if is_bytes else body,
                        'body_b64': b64(bytes(body)) if is_bytes else None})
    return {'results': results}


def op_kombu_loads(req: dict[str, Any]) -> dict[str, Any]:
    items: list[tuple[bytes | str, str, str, bool]] = []
    for i, it in enumerate(items_of(req)):
        if not isinstance(it, dict):
            raise BadRequest(f'items[{i}] must be an object')
        items.append((data_of(it.get('body'), f'items[{i}].body'),
                      field(it, 'content_type', str), field(it, 'content_encoding', str),
                      bool(it.get('force', True))))
    results: list[dict[str, Any]] = []
    for body, ctype, cenc, force in items:
        try:
            value = kombu_loads(body, ctype, cenc, force=force)
        except Exception as exc:  # noqa: BLE001
            results.append(item_error(exc))
            continue
        results.append({'ok': True, **value_fields(value)})
    return {'results': results}


OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    'version': op_version,
    'serialize': op_serialize,
    'deserialize': op_deserialize,
    'unpack': op_unpack,
    'sign': op_sign,
    'verify_raw': op_verify_raw,
    'cert_info': op_cert_info,
    'key_check': op_key_check,
    'store_check': op_store_check,
    'kombu_dumps': op_kombu_dumps,
    'kombu_loads': op_kombu_loads,
}


def handle(req: Any) -> dict[str, Any]:
    if not isinstance(req, dict):
        raise BadRequest('a request is a JSON object')
    op = req.get('op')
    fn = OPS.get(op) if isinstance(op, str) else None
    if fn is None:
        raise BadRequest(f'unknown op {op!r}; known: {", ".join(sorted(OPS))}')
    try:
        return {'ok': True, 'op': op, **fn(req)}
    except OpFailed as exc:
        return {'ok': False, 'op': op, 'stage': exc.stage, 'error': exc_text(exc.exc),
                'error_type': type(exc.exc).__name__}


def write(resp: Any) -> None:
    # ASCII-only JSON: safe whatever the locale, and lone surrogates survive as escapes.
    sys.stdout.buffer.write(json.dumps(resp, ensure_ascii=True, separators=(',', ':')).encode('ascii') + b'\n')
    sys.stdout.flush()


def main() -> int:
    raw = sys.stdin.buffer.read()
    try:
        try:
            req = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f'stdin is not JSON: {exc}') from exc
        resp: Any = [handle(r) for r in req] if isinstance(req, list) else handle(req)
    except BadRequest as exc:
        print(f'celery_oracle: {exc}', file=sys.stderr)
        write({'ok': False, 'error': f'BadRequest: {exc}'})
        return 2
    write(resp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
