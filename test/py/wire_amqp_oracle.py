"""kombu's and Celery's own view of an AMQP broker for the wire suite
(test/wire/amqp-*.test.ts), over the pyamqp transport. Configured like
``wire_app.py`` (the WIRE_* environment; WIRE_BROKER is a pyamqp:// URL). One
JSON request on stdin, one line of JSON on stdout.

    {"op": "get", "queue", "ack": bool, "decode": bool}
        -> {"message": {"headers", "properties", "delivery_info", "content_type",
                        "content_encoding", "body", "decoded"?} | null}
        kombu's Queue.get (basic.get); without ack the message is rejected with
        requeue. With decode the body goes through Celery's registry under
        setup_security() (verified by the auth serializer).
    {"op": "declare", "queue", "max_priority"?}
        -> {"ok": true}   the queue as Celery declares it (app.amqp.Queues, with
                          task_queue_max_priority when given)
    {"op": "publish", "queue", "body", "content_type"?, "headers"?, "priority"?}
        -> {"ok": true}   kombu's Producer.publish of a raw body to the queue
"""
import json
import sys
import warnings

warnings.simplefilter('ignore')

from kombu import Producer, Queue  # noqa: E402

from wire_app import app  # noqa: E402


def plain(v):
    if isinstance(v, bytes):
        return {'$bytes': v.decode('latin1')}
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def main():
    req = json.load(sys.stdin)
    op = req['op']
    with app.connection_for_write() as conn:
        ch = conn.default_channel
        if op == 'get':
            q = Queue(req['queue'], channel=ch, no_declare=True)
            m = q.get(no_ack=False, accept=['auth', 'application/json', 'json'])
            if m is None:
                out = {'message': None}
            else:
                body = m.body
                msg = {
                    'headers': plain(m.headers),
                    'properties': plain({k: v for k, v in m.properties.items() if k != 'application_headers'}),
                    'delivery_info': plain({k: m.delivery_info.get(k) for k in ('exchange', 'routing_key', 'redelivered')}),
                    'content_type': m.content_type,
                    'content_encoding': m.content_encoding,
                    'body': body.decode('latin1') if isinstance(body, bytes) else body,
                }
                if req.get('decode'):
                    try:
                        msg['decoded'] = plain(m.decode())
                    except Exception as exc:  # noqa: BLE001 - the refusal is the answer
                        msg['decode_error'] = f'{type(exc).__name__}: {exc}'
                if req.get('ack'):
                    m.ack()
                else:
                    m.reject(requeue=True)
                out = {'message': msg}
        elif op == 'declare':
            qs = app.amqp.Queues({}, max_priority=req.get('max_priority'))
            q = qs[req['queue']]
            q(ch).declare()
            out = {'ok': True, 'queue_arguments': plain(q.queue_arguments)}
        elif op == 'publish':
            Producer(ch).publish(req['body'], routing_key=req['queue'], exchange='',
                                 content_type=req.get('content_type', 'application/data'),
                                 content_encoding='utf-8', priority=req.get('priority'),
                                 headers=req.get('headers') or {})
            out = {'ok': True}
        else:
            print(json.dumps({'error': f'unknown op {op!r}'}))
            sys.exit(2)
    print(json.dumps(out, default=str))


if __name__ == '__main__':
    main()
