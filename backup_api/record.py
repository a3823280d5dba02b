"""The record of one request: what the token check, the views, the stand-in's journal and the access log hand
each other, every field in one class (kept in flask.g, made at the request's start)."""

import time
from dataclasses import dataclass, field

from flask import g, has_request_context


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


def current() -> RequestRecord:
    """This request's record (made on first use); outside a request, a record of nothing that nobody keeps."""
    if not has_request_context():
        return RequestRecord()
    found = g.get("record")
    if found is None:
        found = g.record = RequestRecord()
    return found
