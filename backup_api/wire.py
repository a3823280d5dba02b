"""The API's JSON on the wire, for every route module: reading a request's body, the ok answer, and
stored events and VIP flags written out as the API and the export lines give them.
"""

import json

from flask import Response
from werkzeug.exceptions import UnsupportedMediaType

from backup_api import record
from backup_api.jsontext import parse_json
from backup_api.storage import PlayerRecord, rfc3339_us

_encode_str = json.encoder.encode_basestring  # the C encoder, no ASCII escaping


def read_json():
    """Return the request body parsed strictly as JSON (kept in the request's record, for the stand-in's journal)."""
    req = record.this_request()
    if req.mimetype != "application/json":
        raise UnsupportedMediaType("the body must be JSON, sent as Content-Type: application/json")
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        # Not decoded: a small compressed body could expand far past the 1 MiB limit.
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send the JSON uncompressed")
    seen = record.current()
    seen.body = parse_json(req.get_data(cache=False))
    seen.body_read = True
    return seen.body


def ok_response() -> Response:
    """Answer {"status": "ok"}: a constant body, written once rather than serialised per request."""
    return Response(_OK_BODY, mimetype="application/json")


_OK_BODY = b'{"status":"ok"}\n'


def format_event(id_: int, received_at: int, event: str, sub: str | None = None) -> str:
    """Write a stored event as JSON, its exact text spliced in, never re-parsed (with sub: an export line)."""
    holder = "" if sub is None else f', "sub": {_encode_str(sub)}'
    return f'{{"id": {id_}, "received_at": "{rfc3339_us(received_at)}"{holder}, "event": {event}}}'


def format_player(record: PlayerRecord) -> str:
    """Write a player's VIP flag as an export line."""
    return json.dumps(record._asdict(), ensure_ascii=False)
