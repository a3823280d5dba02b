"""The rows a store writes and reads, as records with names, and the times they carry.

typing.NamedTuple: a tuple's speed on the hot paths (a row goes straight into an INSERT's
parameters), and `row.event` where a bare tuple would say `row[6]`.
"""

import time
from datetime import datetime, timedelta
from typing import NamedTuple

from backup_api.storage.jsonform import content_key, dumps


class EventRow(NamedTuple):
    """An event's row, but its id: what the add and import calls write.

    An event with an event_id is keyed by (partner_id, event_id); one without, by content_key, the
    hash of its canonical form. Each key is UNIQUE in the database, over the events keyed by it.
    """

    partner_id: str
    event_id: str | None
    content_key: bytes | None
    player_login: str
    received_at: int  # microseconds since the epoch
    sub: str  # the token holder that sent it
    event: str  # the event's exact JSON text
    event_type: str  # a column of its own on PostgreSQL; SQLite reads it from the event


# The columns SQLite keeps: every one but event_type.
SQLITE_COLUMNS = len(EventRow._fields) - 1


class ImportedEvent(NamedTuple):
    """An exported event as an import stores it: its id in the export, and its row."""

    id: int
    row: EventRow


class StoredEvent(NamedTuple):
    """An event of a page: its id, when it was received, and its exact JSON text."""

    id: int
    received_at: int
    event: str


class FoundEvent(NamedTuple):
    """One event looked up by id: whose it is, when it was received, its exact JSON text."""

    partner_id: str
    received_at: int
    event: str


class ExportedEvent(NamedTuple):
    """An event as `events export` writes it: every column an import needs."""

    id: int
    received_at: int
    sub: str
    event: str


class VipFlag(NamedTuple):
    """A player's VIP flag, when it was set (RFC 3339) and by whom."""

    is_vip: bool
    updated_at: str
    updated_by: str


class PlayerRecord(NamedTuple):
    """A player's VIP flag with its keys: a row of the players table, and a line of `players export`."""

    partner_id: str
    player_login: str
    is_vip: bool
    updated_at: str
    updated_by: str


class Revocation(NamedTuple):
    """A revoked token (kind "jti": the one with that jti) or holder (kind "sub": its tokens issued up to revoked_at).

    revoked_at: microseconds since the epoch (UTC).
    """

    kind: str
    value: str
    revoked_at: int


_new_row = tuple.__new__  # EventRow(...) takes twice as long, through a __new__ written in Python


def event_row(event: dict, received_at: int, sub: str, text: str | None = None) -> EventRow:
    """The row of an event (text: its JSON text, when already written)."""
    return _new_row(EventRow, (
        event["partner_id"],
        event.get("event_id"),
        None if "event_id" in event else content_key(event),
        event["player_login"],
        received_at,
        sub,
        dumps(event) if text is None else text,
        event["event_type"],
    ))


def now_us() -> int:
    """Return the current time in microseconds since the epoch (how received_at is kept: 8 bytes)."""
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1)


def rfc3339_us(us: int) -> str:
    """Write microseconds since the epoch as an RFC 3339 UTC timestamp, the year in four digits (0001 too)."""
    # isoformat, not strftime: strftime's %Y writes the year 1 as "1", which no RFC 3339 reader takes.
    return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


_MICROSECOND = timedelta(microseconds=1)


def us_of_utc(text: str) -> int:
    """Read a UTC time written as rfc3339_us writes it, its Z cut off, as microseconds since the epoch.

    ValueError for a date or time that does not exist (a second 60 among them).
    """
    return (datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND
