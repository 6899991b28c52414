"""Celery's own event publisher for the wire suite (test/wire/events.test.ts):
``app.events.Dispatcher`` with ``event_serializer = 'auth'`` under
``setup_security()``, on the broker of ``wire_app.py`` (the WIRE_* environment).
One JSON request on stdin, one line of JSON on stdout.

    {"hostname", "events": [{"type", "fields"}...], "buffer_task_events": bool}
        -> {"ok": true}
    Sends the events as a worker does: with buffer_task_events the task events
    are buffered (buffer_group=['task']) and flushed as one 'task.multi' list.
"""
import json
import sys
import warnings

warnings.simplefilter('ignore')

from wire_app import app  # noqa: E402

app.conf.event_serializer = 'auth'


def main():
    req = json.load(sys.stdin)
    buffered = req.get('buffer_task_events')
    with app.connection_for_write() as conn:
        d = app.events.Dispatcher(conn, hostname=req['hostname'], enabled=True,
                                  buffer_group=['task'] if buffered else None,
                                  buffer_limit=1000)
        for ev in req['events']:
            d.send(ev['type'], **(ev.get('fields') or {}))
        d.flush()
        d.close()
    print(json.dumps({'ok': True}))


if __name__ == '__main__':
    main()
