"""Page cursors: the id a page goes on after, bound to the query's partner and filters by an HMAC.

A client can neither forge a cursor nor carry one over to another query: either is a 400.
"""

import base64
import hashlib
import hmac
import json
import re

from flask import current_app
from marshmallow import ValidationError

from backup_api.keys import secret_key

_CURSOR = re.compile(r"[A-Za-z0-9_-]{32}")


def _cursor_key() -> bytes:
    """The key of the app's cursors: derived from its token secret, so that a new secret voids old cursors."""
    key = current_app.extensions.get("cursor_key")
    if key is None:
        key = current_app.extensions["cursor_key"] = hashlib.sha256(b"page cursors\0" + secret_key().encode()).digest()
    return key


def _cursor_mac(after: int, query: dict) -> bytes:
    """The MAC of a cursor: its id and the query's partner and filters, under the app's cursor key."""
    filters = json.dumps(sorted(query.items()), ensure_ascii=True).encode()
    message = after.to_bytes(8, "big") + filters
    return hmac.digest(_cursor_key(), message, "sha256")[:16]


def make_cursor(after: int, query: dict) -> str:
    """Write the cursor of the page that follows the event with id after."""
    return base64.urlsafe_b64encode(after.to_bytes(8, "big") + _cursor_mac(after, query)).decode().rstrip("=")


def read_cursor(cursor: str | None, query: dict) -> int:
    """Return the id a cursor goes on after (0 for none); a cursor not made for this query is a 400."""
    if cursor is None:
        return 0
    if _CURSOR.fullmatch(cursor):
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = int.from_bytes(raw[:8], "big")
        if hmac.compare_digest(raw[8:], _cursor_mac(after, query)):
            return after
    raise ValidationError({"after": ["Not a cursor this service gave for this query (same partner and filters)."]})
