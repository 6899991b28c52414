"""A stock Celery event receiver for the wire suite (test/wire/events.test.ts):
``celery.events.receiver.EventReceiver`` under ``setup_security()`` with
``event_serializer = 'auth'`` and ``accept=['auth']``, on the broker of
``wire_app.py`` (the WIRE_* environment; Redis or pyamqp).

Prints one JSON line per message, as it comes:

    {"ready": true}                                   consuming
    {"routing_key", "content_type", "events": [...]}  a verified message (one event, or a task.multi list)
    {"routing_key", "decode_error": "..."}            a message the auth serializer refused

and exits after the ``worker-offline`` event of WIRE_EVENTS_HOSTNAME (or after
WIRE_EVENTS_SECONDS, default 60).
"""
import json
import os
import signal
import sys
import warnings

warnings.simplefilter('ignore')

from celery.events.receiver import EventReceiver  # noqa: E402

from wire_app import app  # noqa: E402

app.conf.event_serializer = 'auth'
STOP_ON = os.environ.get('WIRE_EVENTS_HOSTNAME')


def out(obj):
    sys.stdout.write(json.dumps(obj, default=repr) + '\n')
    sys.stdout.flush()


class Receiver(EventReceiver):
    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[self.queue], callbacks=[self._on_message], no_ack=True,
                         accept=self.accept, on_decode_error=self._on_decode_error)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        out({'ready': True})

    def _on_message(self, body, message):
        events = body if isinstance(body, list) else [body]
        out({'routing_key': message.delivery_info.get('routing_key'),
             'content_type': message.content_type,
             'headers': message.headers,
             'events': events})
        self._receive(body, message)
        for ev in events:
            if ev.get('type') == 'worker-offline' and ev.get('hostname') == STOP_ON:
                self.should_stop = True

    def _on_decode_error(self, message, exc):
        out({'routing_key': message.delivery_info.get('routing_key'),
             'decode_error': f'{type(exc).__name__}: {exc}'})


def main():
    signal.signal(signal.SIGALRM, lambda *a: sys.exit(3))
    signal.alarm(int(os.environ.get('WIRE_EVENTS_SECONDS', '60')))
    with app.connection_for_read() as conn:
        recv = Receiver(conn, handlers={}, app=app, accept=['auth'])
        recv.capture(limit=None, timeout=None, wakeup=False)


if __name__ == '__main__':
    main()
