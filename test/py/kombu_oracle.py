"""The Python side of test/json.test.ts and test/registry.test.ts: real kombu.

Reads one JSON request on stdin and prints one JSON answer on stdout. Values
travel as *descriptions*, tagged lists that say exactly which Python value is
meant (plain JSON cannot: int vs float, bytes, datetimes, ...):

    ["none"]  ["bool", b]  ["int", "digits"]  ["float", "<16 hex digits: IEEE bits>"]
    ["str", s]  ["list", [desc...]]  ["dict", [[key_desc, value_desc], ...]]
    ["bytes", "<base64>"]  ["datetime", isoformat]  ["datetime_ms", epoch_ms (aware UTC)]
    ["date", isoformat]  ["time", isoformat]  ["decimal", str]  ["uuid", hex]

A described datetime comes back as ["datetime", isoformat, epoch_ms or None]
(epoch milliseconds, floored, when it is aware).

Requests ({"op": ...}):
  dumps        values: [desc]          -> results: [{"text", "loaded": desc} | {"error"}]
  loads        texts: [str]            -> results: [{"value": desc} | {"error"}]
  check_loads  items: [[text, desc]]   -> results: [{"same": bool, "got": desc} | {"error"}]
  parse        kind, inputs: [str]     -> results: [{"value": str} | {"error"}]
  registry     cases: [case]           -> results: [{"value", "state"} | {"error", "message", "state"}]
  module_state                         -> results: kombu's own module registry (names, disabled, default)

A registry case is {"steps": [...], "defaults": bool}: the steps run on a fresh
SerializerRegistry (with json registered and the default unless defaults is
false); see run_step for the step language.
"""

import base64
import json
import math
import struct
import sys
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from kombu import serialization
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import SerializerRegistry, prepare_accept_content
from kombu.utils import json as kjson

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def build(d):
    tag = d[0]
    if tag == "none":
        return None
    if tag == "bool":
        return bool(d[1])
    if tag == "int":
        return int(d[1])
    if tag == "float":
        return struct.unpack(">d", bytes.fromhex(d[1]))[0]
    if tag == "str":
        return d[1]
    if tag == "list":
        return [build(x) for x in d[1]]
    if tag == "dict":
        return {build(k): build(v) for k, v in d[1]}
    if tag == "bytes":
        return base64.b64decode(d[1])
    if tag == "datetime":
        return datetime.fromisoformat(d[1])
    if tag == "datetime_ms":
        return EPOCH + timedelta(milliseconds=d[1])
    if tag == "date":
        return date.fromisoformat(d[1])
    if tag == "time":
        return time.fromisoformat(d[1])
    if tag == "decimal":
        return Decimal(d[1])
    if tag == "uuid":
        return uuid.UUID(hex=d[1])
    raise ValueError(f"unknown description tag {tag!r}")


def describe(v):
    if v is None:
        return ["none"]
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["float", struct.pack(">d", v).hex()]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, (list, tuple)):
        return ["list", [describe(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[describe(k), describe(x)] for k, x in v.items()]]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["bytes", base64.b64encode(bytes(v)).decode()]
    if isinstance(v, datetime):
        ms = None
        if v.utcoffset() is not None:
            ms = (v - EPOCH) // timedelta(milliseconds=1)
        return ["datetime", v.isoformat(), ms]
    if isinstance(v, date):
        return ["date", v.isoformat()]
    if isinstance(v, time):
        return ["time", v.isoformat()]
    if isinstance(v, Decimal):
        return ["decimal", str(v)]
    if isinstance(v, uuid.UUID):
        return ["uuid", v.hex]
    raise TypeError(f"cannot describe {type(v).__name__}")


def same(a, b):
    """Equality that also checks types, float bits (NaN included) and dict order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (datetime, time)):
        return a == b and a.isoformat() == b.isoformat()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


def json_key(k):
    """A dict key as json.dumps writes it (and loads reads it back)."""
    if isinstance(k, str):
        return k
    return next(iter(json.loads(kjson.dumps({k: 0}))))


def jsonish(v):
    """What a value becomes through JSON: dict keys are strings, tuples lists."""
    if isinstance(v, (list, tuple)):
        return [jsonish(x) for x in v]
    if isinstance(v, dict):
        return {json_key(k): jsonish(x) for k, x in v.items()}
    return v


def err(e):
    return f"{type(e).__name__}: {e}"


def op_dumps(req):
    out = []
    for d in req["values"]:
        try:
            text = kjson.dumps(build(d))
            out.append({"text": text, "loaded": describe(kjson.loads(text))})
        except Exception as e:  # noqa: BLE001
            out.append({"error": err(e)})
    return out


def op_loads(req):
    out = []
    for text in req["texts"]:
        try:
            out.append({"value": describe(kjson.loads(text))})
        except Exception as e:  # noqa: BLE001
            out.append({"error": err(e)})
    return out


def op_check_loads(req):
    out = []
    for text, d in req["items"]:
        try:
            got = kjson.loads(text)
            out.append({"same": same(got, jsonish(build(d))), "got": describe(got)})
        except Exception as e:  # noqa: BLE001
            out.append({"error": err(e)})
    return out


PARSERS = {
    "datetime": lambda s: datetime.fromisoformat(s).isoformat(),
    "date_of_datetime": lambda s: datetime.fromisoformat(s).date().isoformat(),
    "time": lambda s: time.fromisoformat(s).isoformat(),
    "decimal": lambda s: str(Decimal(s)),
    "decimal_float": lambda s: str(Decimal(struct.unpack(">d", bytes.fromhex(s))[0])),
    "uuid": lambda s: uuid.UUID(hex=s).hex,
    "b64": lambda s: base64.b64encode(base64.b64decode(s.encode("utf-8"))).decode(),
    "float_repr": lambda s: repr(struct.unpack(">d", bytes.fromhex(s))[0]),
}


def op_parse(req):
    parse = PARSERS[req["kind"]]
    out = []
    for s in req["inputs"]:
        try:
            out.append({"value": parse(s)})
        except Exception as e:  # noqa: BLE001
            out.append({"error": err(e)})
    return out


# --- registry ---------------------------------------------------------------

def fresh_registry(defaults):
    r = SerializerRegistry()
    if defaults:
        # What kombu's module does on import, with json only (pickle and yaml
        # are registered by name; the tests check our refusal separately).
        r.register("json", kjson.dumps, kjson.loads, "application/json", "utf-8")
        r._set_default_serializer("json")
    return r


def describe_body(v):
    if isinstance(v, str):
        return ["str", v]
    return describe(v)


def state(r):
    return {
        "disabled": sorted(r._disabled_content_types),
        "name_to_type": sorted(r.name_to_type.items()),
        "type_to_name": sorted(r.type_to_name.items()),
        "encoders": sorted(r._encoders),
        "decoders": sorted(r._decoders),
    }


def run_step(r, step):
    kind = step[0]
    if kind == "register":
        _, name, ctype, enc, with_enc, with_dec = step
        r.register(name, kjson.dumps if with_enc else None, kjson.loads if with_dec else None, ctype, enc)
        return None
    if kind == "unregister":
        return r.unregister(step[1])
    if kind == "enable":
        return r.enable(step[1])
    if kind == "disable":
        return r.disable(step[1])
    if kind == "set_default":
        return r._set_default_serializer(step[1])
    if kind == "disable_insecure":
        allowed = step[1]
        for name in r._decoders:
            r.disable(name)
        if allowed is not None:
            for name in allowed:
                r.enable(name)
        return None
    if kind == "dumps":
        _, data, ser = step
        ct, ce, payload = r.dumps(build(data), serializer=ser)
        return [ct, ce, describe_body(payload)]
    if kind == "loads":
        _, data, ct, ce, accept, force = step
        if accept is not None:
            accept = prepare_accept_content(accept, r.name_to_type)
        return describe_body(r.loads(build(data), ct, ce, accept=accept, force=force))
    raise ValueError(f"unknown step {kind!r}")


def error_kind(e):
    if isinstance(e, ContentDisallowed):
        return "ContentDisallowed"
    if isinstance(e, DecodeError):
        return "DecodeError"
    return type(e).__name__


def op_registry(req):
    out = []
    for case in req["cases"]:
        r = fresh_registry(case.get("defaults", True))
        value = None
        try:
            for step in case["steps"]:
                value = run_step(r, step)
            out.append({"value": value, "state": state(r)})
        except Exception as e:  # noqa: BLE001
            out.append({"error": error_kind(e), "message": str(e), "state": state(r)})
    return out


def op_module_state(req):
    """The state of kombu's own module-level registry after import."""
    r = serialization.registry
    return {
        "disabled": sorted(r._disabled_content_types),
        "name_to_type": sorted(r.name_to_type.items()),
        "default": [r._default_content_type, r._default_content_encoding],
    }


OPS = {
    "dumps": op_dumps,
    "loads": op_loads,
    "check_loads": op_check_loads,
    "parse": op_parse,
    "registry": op_registry,
    "module_state": op_module_state,
}


def main():
    req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    result = OPS[req["op"]](req)
    # ensure_ascii keeps lone surrogates intact on the way back to JavaScript.
    sys.stdout.write(json.dumps({"results": result}, ensure_ascii=True))


if __name__ == "__main__":
    main()
