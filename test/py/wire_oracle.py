"""Celery's and kombu's own answers for the wire suite (test/wire). One JSON
request on stdin, one line of JSON on stdout.

    {"op": "saferepr", "items": [value...]}  -> {"results": [str...]}
        celery.utils.saferepr.saferepr(v, 1024, maxlevels=3), as as_task_v2
        writes argsrepr/kwargsrepr. A value {"$bytes": b64} is bytes,
        {"$tuple": [...]} a tuple, {"$float": x} a float.
    {"op": "isoformat", "items": [epoch_ms...]} -> {"results": [str...]}
        (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).isoformat()
    (every kombu_* op also takes "transport_options": kombu's broker_transport_options)
    {"op": "kombu_get", "url", "queue", "ack": bool, "visibility_timeout"?}
        -> {"message": {"delivery_tag", "headers", "properties", "content_type", "body"} | null}
        kombu's Redis channel basic_get; without ack the message stays in
        kombu's unacked hash (the channel does not restore it at exit).
    {"op": "kombu_restore_visible", "url", "visibility_timeout"} -> {"ok": true}
        kombu's QoS.restore_visible, as a worker runs it.
    {"op": "kombu_publish", "url", "queue", "body", "priority"?, "headers"?} -> {"ok": true}
        kombu's Producer.publish of a raw body (content type application/data).
"""
import base64
import datetime
import json
import sys
import warnings

warnings.simplefilter('ignore')


def revive(v):
    if isinstance(v, dict):
        if set(v) == {'$bytes'}:
            return base64.b64decode(v['$bytes'])
        if set(v) == {'$tuple'}:
            return tuple(revive(x) for x in v['$tuple'])
        if set(v) == {'$float'}:
            return float(v['$float'])
        return {k: revive(x) for k, x in v.items()}
    if isinstance(v, list):
        return [revive(x) for x in v]
    return v


def main():
    req = json.load(sys.stdin)
    op = req['op']
    if op == 'saferepr':
        from celery.utils.saferepr import saferepr
        out = {'results': [saferepr(revive(v), 1024, maxlevels=3) for v in req['items']]}
    elif op == 'isoformat':
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        out = {'results': [(epoch + datetime.timedelta(milliseconds=ms)).isoformat() for ms in req['items']]}
    elif op in ('kombu_get', 'kombu_restore_visible', 'kombu_publish'):
        from kombu import Connection
        opts = dict(req.get('transport_options') or {})
        if req.get('visibility_timeout') is not None:
            opts['visibility_timeout'] = req['visibility_timeout']
        conn = Connection(req['url'], transport_options=opts)
        ch = conn.default_channel
        if op == 'kombu_get':
            m = ch.basic_get(req['queue'], no_ack=False)
            if m is None:
                out = {'message': None}
            else:
                if req.get('ack'):
                    m.ack()
                else:
                    ch.do_restore = False  # leave it in unacked, as a worker that died would
                body = m.body
                out = {'message': {
                    'delivery_tag': m.delivery_tag,
                    'headers': m.headers,
                    'properties': m.properties,
                    'content_type': m.content_type,
                    'body': body.decode() if isinstance(body, bytes) else body,
                }}
        elif op == 'kombu_restore_visible':
            ch.qos.restore_visible(num=100000, interval=1)
            out = {'ok': True}
        else:
            from kombu import Producer
            Producer(ch).publish(req['body'], routing_key=req['queue'], exchange='',
                                 content_type='application/data', content_encoding='utf-8',
                                 priority=req.get('priority'), headers=req.get('headers') or {})
            out = {'ok': True}
        if not (op == 'kombu_get' and not req.get('ack')):
            conn.release()
    else:
        print(json.dumps({'error': f'unknown op {op!r}'}))
        sys.exit(2)
    print(json.dumps(out, default=str))


if __name__ == '__main__':
    main()
