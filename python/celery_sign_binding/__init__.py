"""Header binding and authorization per signer for Celery's ``auth`` serializer.

Celery signs the message body only; the headers ``task``, ``id``, ``eta`` and
``expires`` travel unsigned. This package binds them into the signed body the
way celery-sign (Node.js) does, and checks the binding on a Celery worker:

* :func:`install_producer` connects a ``before_task_publish`` hook that adds
  ``celery_sign_binding`` to the embed (the body's third element). Celery's
  ``amqp.send_task_message`` sends that signal with the body still a Python
  tuple ``(args, kwargs, embed)`` and the headers final; the body is
  serialized (signed, with the ``auth`` serializer) afterwards, in
  ``producer.publish``: the binding is inside the signature.
* :func:`install_worker` makes the app's tasks use :class:`BindingRequest`, a
  ``celery.worker.request.Request`` whose constructor (run by the worker's
  strategy for every task message, after the body is verified and decoded
  and before anything is scheduled, reserved or run) checks the binding,
  and optionally who signed it. A refusal raises :class:`Refused`, an
  ``InvalidTaskError``: Celery's consumer then rejects the message without
  requeueing (``on_invalid_task``), logs it and sends ``task_rejected``; the
  task does not run and no result is stored.
* ``install_worker(app, authorize_control=rules)`` also checks who signed
  each remote control command (``celery inspect``, ``celery control``,
  Flower) addressed to the worker, as celery-sign's ``authorizeControl``: a
  command no rule allows is logged ("Refused remote control command: ...")
  and neither run nor answered.
"""
import fnmatch
import hashlib
import json
import re

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.worker.request import Request

__all__ = [
    'BINDING_KEY', 'BOUND_HEADERS', 'binding_digest', 'make_binding', 'bind',
    'install_producer', 'uninstall_producer', 'check_binding', 'Authorizer',
    'BindingRequest', 'install_worker', 'Refused', 'signer_of', 'AUTHORIZED_AS',
]

#: The embed key, as celery-sign's ``BINDING_KEY``.
BINDING_KEY = 'celery_sign_binding'
#: The bound headers, in digest order.
BOUND_HEADERS = ('task', 'id', 'eta', 'expires')

ERR_HEADER_MISMATCH = 'ERR_HEADER_MISMATCH'
ERR_NOT_AUTHORIZED = 'ERR_NOT_AUTHORIZED'


def binding_digest(headers):
    """SHA-256 hex of ``json.dumps([task, id, eta, expires])`` (compact, ``ensure_ascii=False``)."""
    values = [v if isinstance(v, str) else None for v in (headers.get(h) for h in BOUND_HEADERS)]
    text = json.dumps(values, separators=(',', ':'), ensure_ascii=False)
    return hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()


def make_binding(headers):
    """The value of :data:`BINDING_KEY` for these headers."""
    return {'v': 1, 'alg': 'sha256', 'digest': binding_digest(headers)}


def bind(body, headers):
    """Adds the binding of ``headers`` to a protocol 2 body ``(args, kwargs, embed)``; True if it did."""
    if not isinstance(headers, dict) or 'task' not in headers:
        return False  # protocol 1: no task headers to bind
    if not isinstance(body, (tuple, list)) or len(body) != 3 or not isinstance(body[2], dict):
        return False
    body[2][BINDING_KEY] = make_binding(headers)
    return True


def _on_before_task_publish(sender=None, body=None, headers=None, **kwargs):
    bind(body, headers)


_DISPATCH_UID = 'celery_sign_binding.before_task_publish'


def install_producer():
    """Binds the headers of every task message this process sends (idempotent)."""
    signals.before_task_publish.connect(_on_before_task_publish, weak=False, dispatch_uid=_DISPATCH_UID)


def uninstall_producer():
    signals.before_task_publish.disconnect(_on_before_task_publish, dispatch_uid=_DISPATCH_UID)


class Refused(InvalidTaskError):
    """A task message refused by the binding or the authorization check; ``code`` is celery-sign's."""

    def __init__(self, code, reason):
        super().__init__(f'{code}: {reason}')
        self.code = code
        self.reason = reason


def check_binding(headers, embed, require=False):
    """Raises :class:`Refused` unless the binding in ``embed`` matches ``headers``."""
    b = embed.get(BINDING_KEY) if isinstance(embed, dict) else None
    if b is None:
        if require:
            raise Refused(ERR_HEADER_MISMATCH, 'Header binding required: the signed body does not bind '
                                               'the headers task, id, eta and expires')
        return
    if not isinstance(b, dict) or b.get('v') != 1 or b.get('alg') != 'sha256' or not isinstance(b.get('digest'), str):
        raise Refused(ERR_HEADER_MISMATCH, 'Header binding of an unknown version or algorithm')
    if b['digest'].lower() != binding_digest(headers):
        raise Refused(ERR_HEADER_MISMATCH, 'Header binding mismatch: the headers task, id, eta or expires '
                                           'differ from what the signer bound')


# --- who signed ------------------------------------------------------------

def _auth_serializer():
    from kombu.serialization import registry
    decoder = registry._decoders.get('application/data')
    s = getattr(decoder, '__self__', None)
    return s if hasattr(s, '_unpack') and hasattr(s, '_cert_store') else None


def signer_of(raw_body):
    """``(celery_id, common_name)`` of the certificate that signed a (verified) ``auth`` body, or ``(None, None)``.

    Re-reads the signer field of the payload Celery's ``SecureSerializer``
    already verified (it does not keep it), and looks the certificate up in
    its store.
    """
    s = _auth_serializer()
    if s is None or raw_body is None:
        return None, None
    try:
        signer = s._unpack(raw_body)['signer']
        signer = signer.decode('utf-8') if isinstance(signer, bytes) else str(signer)
        cert = s._cert_store[signer]
    except Exception:  # noqa: BLE001 - unknown: no name
        return None, None
    cn = None
    try:
        from cryptography.x509.oid import NameOID
        attrs = cert._cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = attrs[0].value if attrs else None
    except Exception:  # noqa: BLE001
        cn = None
    return signer, cn


#: The name a control rule decides on, for commands that are another under a second name
#: (kombu's ``dump_*`` aliases; ``terminate`` is ``revoke`` with ``terminate=True``), as celery-sign's.
AUTHORIZED_AS = {
    'dump_active': 'active', 'dump_reserved': 'reserved', 'dump_schedule': 'scheduled',
    'dump_revoked': 'revoked', 'dump_tasks': 'registered', 'dump_conf': 'conf', 'terminate': 'revoke',
}


class Authorizer:
    """Which signer may call which tasks, as celery-sign's ``authorize``; deny by default.

    ``rules``: a list of ``{'signer': {'id': ...} | {'cn': ...} | [...], 'tasks': [...]}``,
    a dict ``{id_or_cn: [patterns]}``, or a callable ``(signer_id, common_name, task) -> bool``.
    Patterns are exact names, ``fnmatch`` globs (``billing.*``) or compiled regular expressions.
    With ``field='commands'`` (celery-sign's ``authorizeControl``) rules name remote control
    commands instead: ``{'signer': ..., 'commands': ['ping', 'stats']}``.
    """

    def __init__(self, rules, field='tasks'):
        self._field = field
        self._fn = rules if callable(rules) else None
        self._rules = []
        if self._fn is not None:
            return
        if isinstance(rules, dict):
            for key, tasks in rules.items():
                self._rules.append((set(), set(), {key}, self._patterns(tasks)))
            return
        if not isinstance(rules, (list, tuple)):
            raise TypeError('authorize: a list of rules, a dict or a callable')
        for rule in rules:
            sel = rule['signer']
            sel = sel if isinstance(sel, (list, tuple)) else [sel]
            ids = {s['id'] for s in sel if 'id' in s}
            cns = {s['cn'] for s in sel if 'cn' in s}
            if not ids and not cns:
                raise TypeError("authorize: a signer is {'id': ...} or {'cn': ...}")
            if not isinstance(rule.get(field), (list, tuple)):
                raise TypeError(f'authorize: a rule is {{signer, {field}}}')
            self._rules.append((ids, cns, set(), self._patterns(rule[field])))

    @staticmethod
    def _patterns(tasks):
        out = []
        for p in tasks:
            if isinstance(p, re.Pattern):
                out.append(p.fullmatch)
            elif isinstance(p, str) and p:
                rx = re.compile(fnmatch.translate(p))
                out.append(rx.match)
            else:
                raise TypeError('authorize: a task pattern is a non-empty string or a compiled regex')
        return out

    def allowed(self, signer_id, common_name, task):
        if signer_id is None:
            return False
        if self._fn is not None:
            try:
                return self._fn(signer_id, common_name, task) is True
            except Exception:  # noqa: BLE001 - an exception denies
                return False
        for ids, cns, either, patterns in self._rules:
            who = (signer_id in ids or (common_name is not None and common_name in cns)
                   or signer_id in either or (common_name is not None and common_name in either))
            if who and any(m(task) for m in patterns):
                return True
        return False

    def check_command(self, raw_body, command):
        """Raises :class:`Refused` unless the signer of ``raw_body`` may send ``command``."""
        signer_id, cn = signer_of(raw_body)
        name = AUTHORIZED_AS.get(command, command)
        if not self.allowed(signer_id, cn, name):
            who = json.dumps(signer_id) + (f' (CN {json.dumps(cn)})' if cn is not None else '')
            raise Refused(ERR_NOT_AUTHORIZED,
                          f'Signer {who} is not authorized to send remote control command {json.dumps(name)[:200]}')

    def check(self, raw_body, task):
        signer_id, cn = signer_of(raw_body)
        if not self.allowed(signer_id, cn, task):
            who = json.dumps(signer_id) + (f' (CN {json.dumps(cn)})' if cn is not None else '')
            raise Refused(ERR_NOT_AUTHORIZED, f'Signer {who} is not authorized to call task {json.dumps(task)[:200]}')


def _short(v):
    return json.dumps(v if isinstance(v, str) else None)[:200]


class BindingRequest(Request):
    """A worker ``Request`` that checks the header binding (and the signer) before the task is scheduled."""

    #: Refuse a message without a binding.
    require_binding = False
    #: An :class:`Authorizer`, or None.
    authorizer = None

    def __init__(self, message, *args, **kwargs):
        super().__init__(message, *args, **kwargs)
        headers = message.headers or {}
        if 'task' not in headers:  # protocol 1: nothing is bound
            if self.require_binding or self.authorizer is not None:
                raise Refused(ERR_HEADER_MISMATCH, 'Header binding required: a protocol 1 message has no bound headers')
            return
        payload = message.payload  # verified and decoded by Request.__init__ already (kombu caches it)
        embed = payload[2] if isinstance(payload, (tuple, list)) and len(payload) == 3 else None
        try:
            check_binding(headers, embed, self.require_binding or self.authorizer is not None)
            if self.authorizer is not None:
                self.authorizer.check(message.body, headers['task'])
        except Refused as exc:
            # Celery's "Received invalid task message" names no task: say which (as claimed).
            raise Refused(exc.code, f'{exc.reason} [task {_short(headers.get("task"))} id {_short(headers.get("id"))}]') from None


def _for_node(body, hostname):
    """Whether a control message is addressed to ``hostname``, as kombu's ``Node.handle_message`` decides."""
    from kombu.pidbox import match
    destination = body.get('destination')
    if destination:
        return hostname in destination
    pattern, matcher = body.get('pattern'), body.get('matcher')
    if pattern and matcher:
        return match(hostname, pattern, matcher)
    return True


_original_on_message = None


def _guard_pidbox():
    """Wraps ``celery.worker.pidbox.Pidbox.on_message`` once: the app's control authorizer decides first."""
    global _original_on_message
    from celery.worker import pidbox
    if _original_on_message is not None:
        return
    _original_on_message = pidbox.Pidbox.on_message

    def on_message(self, body, message):
        authorizer = getattr(self.c.app, '_celery_sign_control_authorizer', None)
        if authorizer is not None and isinstance(body, dict):
            try:
                mine = _for_node(body, self.node.hostname)
            except Exception:  # noqa: BLE001 - a bad pattern: kombu's own handling reports it
                mine = False
            if mine:
                try:
                    authorizer.check_command(message.body if message is not None else None, str(body.get('method')))
                except Refused as exc:
                    pidbox.error('Refused remote control command: %s', exc)
                    return None
        return _original_on_message(self, body, message)

    pidbox.Pidbox.on_message = on_message


def install_worker(app, require=False, authorize=None, authorize_control=None):
    """Makes every task of ``app`` check header binding on arrival (``Task.Request``).

    ``require``: refuse unbound messages (and bind what this process sends:
    :func:`install_producer`). ``authorize``: rules for :class:`Authorizer`;
    authorization implies ``require`` (the task name is an unsigned header,
    only the binding ties it to the signed body). ``authorize_control``: rules
    for remote control commands (:class:`Authorizer` with ``field='commands'``);
    the command is in the signed body, so it needs no binding.
    Call it before the worker starts. A task with its own ``Request`` keeps it.
    Returns the request class.
    """
    attrs = {'require_binding': bool(require) or authorize is not None,
             'authorizer': Authorizer(authorize) if authorize is not None else None}
    if attrs['require_binding']:
        # What this worker sends itself (retries, chains, callbacks, chord bodies) must
        # pass workers that require binding too: bind it, as celery-sign's Node worker does.
        install_producer()
    if authorize_control is not None:
        app._celery_sign_control_authorizer = Authorizer(authorize_control, field='commands')
        _guard_pidbox()
    cls = type('BindingRequest', (BindingRequest,), attrs)
    # Every task class of the app derives from app.Task, and the worker reads
    # task.Request when it starts: tasks defined before or after this call use it.
    app.Task.Request = cls
    return cls
