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
from contextlib import contextmanager

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


@contextmanager
def own_producer():
    """A producer on a connection of its own, closed with the protocol's handshake at the end.

    ``app.producer_or_acquire()`` leaves its pooled connection open until the
    interpreter exits. Over AMQP (no publisher confirms, as Celery sends) the
    last publishes may then still sit unread in RabbitMQ's socket when the exit
    resets the connection (a reset, not a FIN, when a frame from the broker is
    unread, e.g. a heartbeat), and RabbitMQ drops them. ``Connection.close``
    sends ``connection.close`` and waits for ``close-ok``, which RabbitMQ
    sends only after it has handled every frame before it.
    """
    with app.connection_for_write() as conn:
        yield app.amqp.Producer(conn)


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
        with own_producer() as producer:
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
        with own_producer() as producer:
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
    elif op == 'canvas':
        out = canvas(req)
    else:
        print(json.dumps({'error': f'unknown op {op!r}'}))
        sys.exit(2)
    print(json.dumps(out, default=str))



# --- canvas (test/wire/canvas.test.ts) ---
#   {"op": "canvas", "scenario": ..., "node": queue, "py": queue, "timeout": s} -> {"ids": {...}, "results": {...}}

def _get(r, timeout):
    try:
        return {'ok': True, 'value': r.get(timeout=timeout, disable_sync_subtasks=False)}
    except Exception as exc:  # noqa: BLE001 - the failure is the answer
        d = describe(exc)
        d['status'] = r.state
        return d


def canvas(req):
    from celery import chain, chord, group  # noqa: F401
    from kombu.utils.uuid import uuid
    from wire_app import add, collect, fail, record
    node, py, timeout = req.get('node'), req.get('py'), req.get('timeout', 60)
    scenario = req['scenario']
    if scenario == 'chain':
        r = chain(add.s(2, 2).set(queue=node), add.s(4).set(queue=node), add.s(8).set(queue=node)).apply_async()
        return {'ids': {'last': r.id, 'middle': r.parent.id, 'first': r.parent.parent.id},
                'results': {'last': _get(r, timeout), 'middle': _get(r.parent, timeout), 'first': _get(r.parent.parent, timeout)}}
    if scenario == 'chain_fail':
        r = chain(fail.s('broken').set(queue=node), add.s(4).set(queue=node)).apply_async()
        return {'ids': {'last': r.id, 'first': r.parent.id},
                # a fresh AsyncResult: r.get() would re-raise the parent's error (follow_parents)
                'results': {'last': _get(app.AsyncResult(r.id), timeout), 'first': _get(r.parent, timeout)}}
    if scenario == 'link':
        cb1, cb2, eb = uuid(), uuid(), uuid()
        r = add.apply_async((1, 2), queue=node,
                            link=[add.s(10).set(queue=node, task_id=cb1), record.s('second').set(queue=py, task_id=cb2)],
                            link_error=record.s('errback').set(queue=py, task_id=eb))
        res = {'task': _get(r, timeout), 'cb1': _get(app.AsyncResult(cb1), timeout),
               'cb2': _get(app.AsyncResult(cb2), timeout)}
        return {'ids': {'task': r.id, 'cb1': cb1, 'cb2': cb2, 'eb': eb}, 'results': res,
                'eb_state': app.AsyncResult(eb).state}
    if scenario == 'link_error':
        cb, eb = uuid(), uuid()
        r = fail.apply_async(('boom',), queue=node, link=record.s('callback').set(queue=py, task_id=cb),
                             link_error=record.s('errback').set(queue=py, task_id=eb))
        res = {'task': _get(r, timeout), 'eb': _get(app.AsyncResult(eb), timeout)}
        return {'ids': {'task': r.id, 'cb': cb, 'eb': eb}, 'results': res, 'cb_state': app.AsyncResult(cb).state}
    if scenario == 'chord':
        n = req.get('n', 6)
        header = [add.s(i, i).set(queue=node if i % 2 else py) for i in range(n)]
        r = chord(header, collect.s().set(queue=req.get('body', py))).apply_async()
        return {'ids': {'body': r.id, 'header': [x.id for x in r.parent.results], 'group': r.parent.id},
                'results': {'body': _get(r, timeout)}}
    if scenario == 'chord_fail':
        header = [add.s(1, 1).set(queue=node), fail.s('part').set(queue=node), add.s(2, 2).set(queue=py)]
        eb = uuid()
        body = collect.s().set(queue=py, link_error=[record.s('chord-errback').set(queue=py, task_id=eb)])
        r = chord(header, body).apply_async()
        return {'ids': {'body': r.id, 'eb': eb},
                'results': {'body': _get(app.AsyncResult(r.id), timeout), 'eb': _get(app.AsyncResult(eb), timeout)}}
    if scenario == 'chain_chord':
        # a group in a chain becomes a chord; the Node worker applies it after the first task
        r = (add.s(1, 1).set(queue=node) | group(add.s(10).set(queue=node), add.s(20).set(queue=py))
             | collect.s().set(queue=py)).apply_async()
        return {'ids': {'body': r.id}, 'results': {'body': _get(r, timeout)}}
    if scenario == 'capture':
        # sends without waiting (nobody consumes req['queue']), every id fixed, to compare with Node's
        q, ids, kind = req['queue'], req['ids'], req['kind']
        if kind == 'chain':
            chain(add.s(2, 2).set(queue=q, task_id=ids[0]), add.s(4).set(queue=q, task_id=ids[1]),
                  add.s(8).set(queue=q, task_id=ids[2])).apply_async()
        elif kind == 'group':
            group([add.s(1, 1).set(queue=q, task_id=ids[0]), add.s(2, 2).set(queue=q, task_id=ids[1])],
                  task_id=ids[2]).apply_async()
        elif kind == 'chord':
            chord([add.s(1, 1).set(queue=q, task_id=ids[0]), add.s(2, 2).set(queue=q, task_id=ids[1])],
                  collect.s().set(queue=q, task_id=ids[3]), task_id=ids[2]).apply_async()
        elif kind == 'chain_group':
            (add.s(1, 1).set(queue=q, task_id=ids[0])
             | group(add.s(10).set(queue=q, task_id=ids[1]), add.s(20).set(queue=q, task_id=ids[2]))
             | collect.s().set(queue=q, task_id=ids[3])).apply_async()
        return {}
    if scenario == 'capture_worker':
        # the first task runs on req['first'] (the Node or the Python worker); what that worker
        # then sends goes to req['queue'], which nobody consumes, to compare the two workers
        q, ids, kind, first = req['queue'], req['ids'], req['kind'], req['first']
        if kind == 'chain':
            r = chain(add.s(2, 2).set(queue=first, task_id=ids[0]), add.s(4).set(queue=q, task_id=ids[1]),
                      add.s(8).set(queue=q, task_id=ids[2])).apply_async()
            r = r.parent.parent
        elif kind == 'link':
            r = add.apply_async((1, 2), queue=first, task_id=ids[0],
                                link=[add.s(10).set(queue=q, task_id=ids[1]), record.si('x').set(queue=q, task_id=ids[2])])
        elif kind == 'link_error':
            r = fail.apply_async(('boom',), queue=first, task_id=ids[0],
                                 link_error=record.s('errback').set(queue=q, task_id=ids[1]))
        elif kind == 'chord':
            r = chord([add.s(1, 1).set(queue=first, task_id=ids[0])], collect.s().set(queue=q, task_id=ids[1]),
                      task_id=ids[2]).apply_async()
            r = r.parent.results[0]
        elif kind == 'chain_group':
            r = (add.s(1, 1).set(queue=first, task_id=ids[0])
                 | group(add.s(10).set(queue=q, task_id=ids[1]), add.s(20).set(queue=q, task_id=ids[2]))
                 | collect.s().set(queue=q, task_id=ids[3])).apply_async()
            while r.parent is not None:
                r = r.parent
        elif kind == 'chain_end_group':
            r = (add.s(1, 1).set(queue=first, task_id=ids[0])
                 | group(add.s(10).set(queue=q, task_id=ids[1]), add.s(20).set(queue=q, task_id=ids[2]))).apply_async()
            r = app.AsyncResult(ids[0])
        elif kind == 'group_of_chains':
            r = (add.s(1, 1).set(queue=first, task_id=ids[0])
                 | group(chain(add.s(10).set(queue=q, task_id=ids[1]), add.s(20).set(queue=q, task_id=ids[2])),
                         add.s(30).set(queue=q, task_id=ids[3]))).apply_async()
            r = app.AsyncResult(ids[0])
        return {'first': _get(app.AsyncResult(r.id), timeout)}
    if scenario == 'get':
        return {'results': {i: _get(app.AsyncResult(i), timeout) for i in req['ids']}}
    raise ValueError(f'unknown scenario {scenario!r}')


if __name__ == '__main__':
    main()
