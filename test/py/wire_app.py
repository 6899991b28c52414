"""A stock Celery app for the wire suite (test/wire), signed with ``setup_security()``.

Started as a real worker by the tests::

    celery -A wire_app worker --pool=prefork -c 2 -Q <queue> ...

(with ``PYTHONPATH=test/py``), and imported by ``wire_producer.py``. Everything
comes from the environment, so that one module serves both venvs:

    WIRE_BROKER            redis://127.0.0.1:PORT/0 or pyamqp://guest:guest@127.0.0.1:PORT// (required)
    WIRE_BACKEND           result backend URL (default: WIRE_BROKER; Redis with an AMQP broker)
    WIRE_KEY               private key (PEM path)          -> security_key
    WIRE_KEY_PASSWORD      its password, if any            -> security_key_password
    WIRE_CERT              certificate (PEM path)          -> security_certificate
    WIRE_STORE             trusted certificates (dir/glob) -> security_cert_store
    WIRE_DIGEST            default sha256                  -> security_digest
    WIRE_VISIBILITY        broker visibility_timeout in seconds (default: kombu's 3600)
    WIRE_PREFETCH          worker_prefetch_multiplier (default 4, Celery's)
    WIRE_ACKS_LATE         "1": task_acks_late = True
    WIRE_RESULT_SERIALIZER result_serializer and result_accept_content (default json)
    WIRE_TRACK_STARTED     "1": task_track_started = True

Nothing else is changed from Celery's defaults: task_serializer 'auth',
accept_content ['auth'] (what setup_security demands), results in JSON (Celery's
default result_serializer; result_accept_content ['json'] so that a Python
producer can read them back).

Celery 5.4.0 cannot load any certificate store: its ``Certificate.has_expired``
compares an aware ``now`` with cryptography's naive ``not_valid_after`` and
raises TypeError (celery/celery#9037, fixed in 5.5). Under 5.4 this module
replaces that one method with the 5.5 fix, and nothing else; the 5.4 wire
format (raw signer and signature) is untouched.
"""
import datetime
import os

import celery
from celery import Celery
from celery.security import certificate as _certificate

CELERY54 = celery.VERSION[:2] < (5, 5)

if CELERY54:
    def _has_expired(self):
        not_after = getattr(self._cert, 'not_valid_after_utc', None)
        if not_after is None:
            not_after = self._cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
        return datetime.datetime.now(datetime.timezone.utc) >= not_after

    _certificate.Certificate.has_expired = _has_expired

BROKER = os.environ['WIRE_BROKER']
BACKEND = os.environ.get('WIRE_BACKEND') or BROKER

app = Celery('wire_app', broker=BROKER, backend=BACKEND)
conf = dict(
    task_serializer='auth',
    accept_content=['auth'],
    result_serializer=os.environ.get('WIRE_RESULT_SERIALIZER', 'json'),
    result_accept_content=[os.environ.get('WIRE_RESULT_SERIALIZER', 'json')],
    security_key=os.environ['WIRE_KEY'],
    security_key_password=(os.environ.get('WIRE_KEY_PASSWORD') or '').encode() or None,
    security_certificate=os.environ['WIRE_CERT'],
    security_cert_store=os.environ['WIRE_STORE'],
    security_digest=os.environ.get('WIRE_DIGEST', 'sha256'),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=int(os.environ.get('WIRE_PREFETCH', '4')),
    task_acks_late=os.environ.get('WIRE_ACKS_LATE') == '1',
    task_track_started=os.environ.get('WIRE_TRACK_STARTED') == '1',
)
if os.environ.get('WIRE_VISIBILITY'):
    conf['broker_transport_options'] = {'visibility_timeout': float(os.environ['WIRE_VISIBILITY'])}
app.conf.update(conf)
app.setup_security()


def _runs_client():
    return app.backend.client


@app.task(name='wire.add')
def add(x, y):
    return x + y


@app.task(name='wire.echo', bind=True)
def echo(self, *args, **kwargs):
    """Returns what it got and the request as the worker saw it."""
    r = self.request
    return {
        'args': list(args),
        'kwargs': kwargs,
        'request': {
            'id': r.id,
            'root_id': r.root_id,
            'parent_id': r.parent_id,
            'group': r.group,
            'group_index': r.group_index,
            'retries': r.retries,
            'eta': r.eta,
            'expires': r.expires,
            'timelimit': list(r.timelimit or [None, None]),
            'origin': r.origin,
            'ignore_result': r.ignore_result,
            'argsrepr': r.argsrepr,
            'kwargsrepr': r.kwargsrepr,
            'correlation_id': r.correlation_id,
            'reply_to': r.reply_to,
            'priority': (r.delivery_info or {}).get('priority'),
            'routing_key': (r.delivery_info or {}).get('routing_key'),
            'x_custom': getattr(r, 'x_custom', None),
            # celery-sign's header binding: an extra embed key Celery ignores (it lands on the request)
            'celery_sign_binding': getattr(r, 'celery_sign_binding', None),
        },
    }


@app.task(name='wire.fail')
def fail(message):
    raise ValueError(message)


@app.task(name='wire.count', bind=True)
def count(self, i):
    """Counts its runs per task id in the hash ``wire:runs`` (to find a task run twice)."""
    _runs_client().hincrby('wire:runs', self.request.id, 1)
    return i


@app.task(name='wire.sleep')
def sleep(seconds, value=None):
    import time
    time.sleep(seconds)
    return value


# --- canvas (test/wire/canvas.test.ts) ---

@app.task(name='wire.collect', bind=True)
def collect(self, results):
    """A chord body: counts its runs per task id in ``wire:runs`` and returns what it got."""
    _runs_client().hincrby('wire:runs', self.request.id, 1)
    return {'results': results, 'parent_id': self.request.parent_id, 'root_id': self.request.root_id,
            'group': self.request.group}


@app.task(name='wire.record', bind=True)
def record(self, *args):
    """An errback or callback: returns its arguments and where it came from."""
    return {'args': list(args), 'parent_id': self.request.parent_id, 'root_id': self.request.root_id,
            'group': self.request.group, 'group_index': self.request.group_index}


@app.task(name='wire.retry', bind=True)
def retry(self, *args, to=None, countdown=0, times=1, **kwargs):
    """Counts its runs per task id in ``wire:runs``; retries (``self.retry``)
    until ``request.retries`` reaches ``times``, to the queue ``to`` (``None``:
    the queue it came from), then returns who ran it and how often it was retried."""
    _runs_client().hincrby('wire:runs', self.request.id, 1)
    if self.request.retries < times:
        raise self.retry(countdown=countdown, queue=to, exc=ValueError('again'))
    return {'retries': self.request.retries, 'worker': 'py', 'args': list(args)}


# --- TLS (test/wire/tls-redis.test.ts, tls-amqp.test.ts) ---
#   WIRE_BROKER_USE_SSL    JSON object -> broker_use_ssl (cert_reqs / ssl_cert_reqs 'CERT_*' -> ssl.CERT_*)
#   WIRE_BACKEND_USE_SSL   JSON object -> redis_backend_use_ssl
def _ssl_setting(name):
    import json
    import ssl
    raw = os.environ.get(name)
    if not raw:
        return None
    d = json.loads(raw)
    for k in ('cert_reqs', 'ssl_cert_reqs'):
        if isinstance(d.get(k), str) and d[k].startswith('CERT_'):
            d[k] = getattr(ssl, d[k])
    return d


if _ssl_setting('WIRE_BROKER_USE_SSL') is not None:
    app.conf.broker_use_ssl = _ssl_setting('WIRE_BROKER_USE_SSL')
if _ssl_setting('WIRE_BACKEND_USE_SSL') is not None:
    app.conf.redis_backend_use_ssl = _ssl_setting('WIRE_BACKEND_USE_SSL')


# --- celery_sign_binding (python/; test/wire/binding-py.test.ts) ---
#   WIRE_BIND_PRODUCER  "1": bind the headers of every task this process sends (install_producer)
#   WIRE_BIND_WORKER    "check": check a binding that is present; "require": refuse unbound messages too
#   WIRE_AUTHORIZE      JSON rules for celery_sign_binding.Authorizer (implies "require")
#   WIRE_AUTHORIZE_CONTROL  JSON rules for remote control commands (install_worker's authorize_control)
if os.environ.get('WIRE_BIND_PRODUCER') == '1':
    import celery_sign_binding
    celery_sign_binding.install_producer()
if os.environ.get('WIRE_BIND_WORKER') or os.environ.get('WIRE_AUTHORIZE') or os.environ.get('WIRE_AUTHORIZE_CONTROL'):
    import json as _json

    import celery_sign_binding
    _rules = os.environ.get('WIRE_AUTHORIZE')
    celery_sign_binding.install_worker(app, require=os.environ.get('WIRE_BIND_WORKER') == 'require',
                                       authorize=_json.loads(_rules) if _rules else None,
                                       authorize_control=_json.loads(os.environ['WIRE_AUTHORIZE_CONTROL'])
                                       if os.environ.get('WIRE_AUTHORIZE_CONTROL') else None)


# --- Redis Sentinel (test/wire/sentinel.test.ts) ---
#   WIRE_BROKER_TRANSPORT_OPTIONS   JSON, merged into broker_transport_options (e.g. master_name, sentinel_kwargs)
#   WIRE_BACKEND_TRANSPORT_OPTIONS  JSON, result_backend_transport_options (the sentinel:// backend's master_name...)

def _json_env(name):
    import json
    raw = os.environ.get(name)
    return json.loads(raw) if raw else None


if _json_env('WIRE_BROKER_TRANSPORT_OPTIONS'):
    app.conf.broker_transport_options = {**(app.conf.broker_transport_options or {}),
                                         **_json_env('WIRE_BROKER_TRANSPORT_OPTIONS')}
if _json_env('WIRE_BACKEND_TRANSPORT_OPTIONS'):
    app.conf.result_backend_transport_options = _json_env('WIRE_BACKEND_TRANSPORT_OPTIONS')
