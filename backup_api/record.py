"""The record of one request: what the token check, the views, the stand-in's journal and the access log hand
each other, every field in one class, made as the request begins and forgotten as it ends.

It is kept in a context variable of its own, not in flask.g: a request reads it about seven times, and
each read through g's proxy cost about 12,000 instructions, 7% of a single event's (issue 41).
"""

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from flask import Flask, Request, current_app, has_request_context, request


@dataclass(slots=True)
class RequestRecord:
    """What is known of a request as it goes: set by whoever learns it, read by whoever needs it."""

    #: time.perf_counter() when the request began (the access line's and the metrics' duration).
    started: float = field(default_factory=time.perf_counter)
    #: The bearer token, as tokens.bearer_token read it from the Authorization header (None: none read).
    token: str | None = None
    #: The claims of the token, once it verified.
    claims: dict | None = None
    #: The token's holder and id, once its signature verified (a refused token's too, for the log).
    sub: str | None = None
    jti: str | None = None
    #: The partners the request acted on, or asked to.
    partners: set[str] = field(default_factory=set)
    #: The body as the route parsed it; body_read says whether it did (a body may be JSON null).
    body: object = None
    body_read: bool = False
    #: What became of each event posted (new or already held), and the (partner_id, event_id) that conflicted.
    new: list[bool] | None = None
    conflict: tuple[str, str | None] | None = None
    #: The stand-in's fault that fell on the request.
    fault: str | None = None
    #: Why the client address is not the one a trusted proxy forwarded.
    client_note: str | None = None
    #: What restores the variable as the request ends (a request's inside another's: the outer one's record).
    kept: Token | None = field(default=None, repr=False)


_RECORD: ContextVar[RequestRecord | None] = ContextVar("backup_api.record", default=None)


def init_app(app: Flask) -> None:
    """Give each request its record before every other hook runs (its clock starts then), and forget it after."""
    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.teardown_request(end)


def begin() -> None:
    """Make the request's record (a hook: returns None, or Flask would answer with what it returned)."""
    _made()


def _made() -> RequestRecord:
    found = RequestRecord()
    found.kept = _RECORD.set(found)
    return found


def end(exc: BaseException | None = None) -> None:
    """Forget the request's record."""
    found = _RECORD.get()
    if found is not None and found.kept is not None:
        try:
            _RECORD.reset(found.kept)
        except ValueError:  # set in another context than this one: nothing of it to restore here
            _RECORD.set(None)


def this_app() -> Flask:
    """The app of the request (or app context) under way: flask.current_app looked through once.

    Each attribute read through Flask's proxies (current_app, request) looks the object up again, about
    15,000 instructions a read: a function that reads several takes the object once (issue 41).
    """
    return current_app._get_current_object()  # type: ignore[attr-defined]  # a proxy; Flask types it the app


def this_request() -> Request:
    """The request under way: flask.request looked through once (see this_app)."""
    return request._get_current_object()  # type: ignore[attr-defined]  # a proxy; Flask types it the request


def current() -> RequestRecord:
    """This request's record; outside a request, a record of nothing that nobody keeps."""
    found = _RECORD.get()
    if found is not None:
        return found
    if not has_request_context():
        return RequestRecord()
    return _made()  # a request its hooks did not see begin (a test's request context, say)
