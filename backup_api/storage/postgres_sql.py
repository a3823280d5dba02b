"""The PostgreSQL store's own statements (its tables are in layouts.py), and the helpers that fill them in."""

import hashlib
import json

from backup_api.storage.rows import EventRow

# Any constant of our own: the lock that one process holds while it creates the tables.
LAYOUT_LOCK = 0x6761_6D65_6261_636B

COLUMNS = ", ".join(EventRow._fields)
# The rows travel as one JSON text, a record per row, unpacked by the server: one parameter, however
# many rows, written by the C JSON encoder (arrays of seven columns took psycopg three times longer
# to send). The event travels as a string holding its exact text, made json again by the server.
RECORDS = (
    "ROWS FROM (json_to_recordset(%s::json)"
    " AS (i bigint, p text, e text, k text, l text, r bigint, s text, v text, t text))"
    " WITH ORDINALITY AS rows (i, p, e, k, l, r, s, v, t, n)"
)
# One statement for any number of rows: the database says which were new (ON CONFLICT DO NOTHING
# skips those whose key is held, by either UNIQUE index), and ids are drawn in the rows' order.
INSERT = (
    f"INSERT INTO events ({COLUMNS}) SELECT p, e, decode(k, 'hex'), l, r, s, v::json, t FROM {RECORDS}"
    " ORDER BY n ON CONFLICT DO NOTHING RETURNING partner_id, event_id, content_key"
)
# The same with the ids given (an import into an empty database).
INSERT_WITH_IDS = INSERT.replace(f"({COLUMNS}) SELECT p,", f"(id, {COLUMNS}) SELECT i, p,")

# VIP flags as five arrays, one a column, unpacked by the server row by row.
FLAGS = "SELECT * FROM unnest(%s::text[], %s::text[], %s::boolean[], %s::text[], %s::text[])"

_encode_str = json.encoder.encode_basestring


def records(rows: list[EventRow], ids: list[int] | None = None) -> str:
    """Write rows (and their ids, when given) as the JSON text that RECORDS unpacks."""
    parts = []
    for n, (partner_id, event_id, key, player_login, received_at, sub, text, event_type) in enumerate(rows):
        id_ = "null" if ids is None else int(ids[n])
        event_id = "null" if event_id is None else _encode_str(event_id)
        key = "null" if key is None else f'"{key.hex()}"'
        parts.append(
            f'{{"i":{id_},"p":{_encode_str(partner_id)},"e":{event_id},"k":{key},"l":{_encode_str(player_login)},'
            f'"r":{int(received_at)},"s":{_encode_str(sub)},"v":{_encode_str(text)},"t":{_encode_str(event_type)}}}'
        )
    return "[" + ",".join(parts) + "]"


def dedupe_key(partner_id: str, event_id: str | None, key: bytes | None):
    """The key that deduplicates an event: (partner_id, event_id), else its content key."""
    return (partner_id, event_id) if event_id is not None else bytes(key)


def partner_lock(partner_id: str) -> int:
    """The advisory lock that orders one partner's writes (a signed 64-bit number)."""
    return int.from_bytes(hashlib.sha256(b"partner\0" + partner_id.encode()).digest()[:8], "big", signed=True)
