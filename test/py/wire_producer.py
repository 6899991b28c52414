"""A stock Celery producer for the wire suite: ``app.send_task`` under ``setup_security()``.

Configured like ``wire_app.py`` (the WIRE_* environment). One JSON request on
stdin, one line of JSON on stdout.

    {"op": "send", "tasks": [{"name", "args", "kwargs", "options"}], "wait": bool, "timeout": s}
        -> {"ids": [...], "results": [{"ok": true, "value": ...} |
                                      {"ok": false, "type", "module", "message", "traceback"}]}
        (options are send_task keyword arguments: queue, priority, countdown,
        expires, headers, serializer ("json" sends an UNSIGNED message)...)
    {"op": "bulk", "name", "count", "queue", "kwargs"?}
        -> {"ids": [...], "elapsed": s}     task i gets args [i]; one producer connection
    {"op": "version"} -> {"celery", "kombu"}
    {"op": "rpc_declare", "oid"} -> {"ok": true, "name", "durable", "auto_delete", "exclusive", "expires"}
        declares the rpc:// reply queue of the client ``oid`` exactly as Celery's
        RPCBackend.binding declares it (PRECONDITION_FAILED if it exists otherwise)
"""
import json
import sys
import time
import warnings

warnings.simplefilter('ignore')

from wire_app import app  # noqa: E402


def describe(exc):
    return {
        'ok': False,
        'type': type(exc).__name__,
        'module': type(exc).__module__,
        'message': str(exc),
        'args': [repr(a) for a in getattr(exc, 'args', ())],
    }


def main():
    req = json.load(sys.stdin)
    op = req['op']
    if op == 'version':
        import celery
        import kombu
        out = {'celery': celery.__version__, 'kombu': kombu.__version__}
    elif op == 'send':
        results = []
        sent = []
        with app.producer_or_acquire() as producer:
            for t in req['tasks']:
                opts = dict(t.get('options') or {})
                r = app.send_task(t['name'], args=t.get('args') or [], kwargs=t.get('kwargs') or {},
                                  producer=producer, **opts)
                sent.append(r)
        if req.get('wait'):
            for r in sent:
                try:
                    value = r.get(timeout=req.get('timeout', 30), disable_sync_subtasks=False)
                    results.append({'ok': True, 'value': value})
                except Exception as exc:  # noqa: BLE001 - the failure is the answer
                    d = describe(exc)
                    d['traceback'] = r.traceback
                    d['status'] = r.state
                    results.append(d)
        out = {'ids': [r.id for r in sent], 'results': results}
    elif op == 'bulk':
        start = time.perf_counter()
        ids = []
        with app.producer_or_acquire() as producer:
            for i in range(req['count']):
                r = app.send_task(req['name'], args=[i], kwargs=req.get('kwargs') or {},
                                  queue=req['queue'], producer=producer, ignore_result=False)
                ids.append(r.id)
        out = {'ids': ids, 'elapsed': time.perf_counter() - start}
    elif op == 'rpc_declare':
        backend = app.backend
        backend.__dict__['oid'] = req['oid']  # RPCBackend.oid is a cached_property (app.thread_oid)
        with app.connection_for_write() as conn:
            queue = backend.binding(conn.default_channel)
            queue.declare()
            out = {'ok': True, 'name': queue.name, 'durable': queue.durable, 'auto_delete': queue.auto_delete,
                   'exclusive': queue.exclusive, 'expires': queue.expires}
    else:
        print(json.dumps({'error': f'unknown op {op!r}'}))
        sys.exit(2)
    print(json.dumps(out, default=str))


if __name__ == '__main__':
    main()
