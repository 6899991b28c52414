"""Celery's remote control client (``app.control``) under ``setup_security()``, for the wire suite.

Configured like ``wire_app.py`` (the WIRE_* environment). One JSON request on
stdin, one line of JSON on stdout:

    {"command", "arguments"?, "destination"?: [node], "timeout"?: s, "reply"?: bool,
     "serializer"?: "json"}
        -> {"replies": [{node: reply}, ...]}

``serializer: "json"`` publishes the command UNSIGNED (kombu's mailbox with
another serializer than the app's ``task_serializer``): what a forger without
a key can send.
"""
import json
import sys
import warnings

warnings.simplefilter('ignore')

from wire_app import app  # noqa: E402


def main():
    req = json.load(sys.stdin)
    timeout = req.get('timeout', 10)
    reply = req.get('reply', True)
    with app.connection_for_write() as conn:
        mailbox = app.control.mailbox(conn)
        replies = mailbox._broadcast(
            req['command'], req.get('arguments') or {}, req.get('destination'),
            reply=reply, timeout=timeout, serializer=req.get('serializer'),
        )
    print(json.dumps({'replies': replies or []}))


if __name__ == '__main__':
    main()
