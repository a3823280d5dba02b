"""What every store keeps and promises: the canonical JSON form, the content key, the errors, each call's contract.

A store knows nothing of HTTP. The two backends, side by side in this package, differ only in
their SQL: sqlite.py (one file, one process) and postgres.py (a server, many processes).
"""

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal

_encode_str = json.encoder.encode_basestring  # the C encoder, no ASCII escaping


class StorageError(Exception):
    """The database could not be read or written."""


class WriteOutcomeUnknown(StorageError):
    """A write's commit was sent but never answered: it may or may not be stored (a resend is safe)."""


class EventConflict(Exception):
    """An event_id already names a stored event with other content."""

    def __init__(self, partner_id: str, event_id: str):
        super().__init__(f"event_id {event_id!r} of partner {partner_id!r} is already stored with other content")
        self.partner_id = partner_id
        self.event_id = event_id
        self.index: int | None = None  # in an import, the position of the record that conflicts


# The canonical form and the content key ---------------------------------------------------


def dumps(value, canonical: bool = False) -> str:
    """Write JSON with every number exactly as parsed; canonical sorts keys and normalises numbers."""
    parts: list[str] = []
    _write(value, parts, canonical)
    return "".join(parts)


def _write(value, out: list[str], canonical: bool) -> None:
    """Append the JSON text of value to out."""
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif value is None:
        out.append("null")
    elif isinstance(value, (Decimal, int)):
        out.append(_canonical_number(value) if canonical else str(value))
    elif isinstance(value, dict):
        items = sorted(value.items()) if canonical else value.items()
        out.append("{")
        for i, (key, item) in enumerate(items):
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _write(item, out, canonical)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, canonical)
        out.append("]")
    else:
        raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _canonical_number(number: Decimal | int) -> str:
    """Write a number so that 5, 5.0, 5.00 and 0.5e1 give the same text."""
    number = Decimal(number)
    if number.is_zero():
        return "0"
    sign, digits, exponent = number.as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    exponent += len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


KEY_BYTES = 16


def content_key(event: dict) -> bytes:
    """Hash an event's content: key order, whitespace and number form do not change it."""
    # 128 bits of SHA-256: half the disk of the full digest, and forging another event's key
    # would still take a second preimage (2**128 work); chance collisions need ~2**64 events.
    return hashlib.sha256(dumps(event, canonical=True).encode("utf-8")).digest()[:KEY_BYTES]


def parsed_content_key(event_json: str) -> bytes:
    """The content key of an event stored as JSON text (read back with exact numbers)."""
    return content_key(json.loads(event_json, parse_float=Decimal, parse_int=Decimal))


# Times ------------------------------------------------------------------------------------


def now_us() -> int:
    """Return the current time in microseconds since the epoch (how received_at is kept: 8 bytes)."""
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1)


def rfc3339_us(us: int) -> str:
    """Write microseconds since the epoch as an RFC 3339 UTC timestamp, the year in four digits (0001 too)."""
    # isoformat, not strftime: strftime's %Y writes the year 1 as "1", which no RFC 3339 reader takes.
    return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


# Rows and lines -----------------------------------------------------------------------------


def event_row(event: dict, received_at: int, sub: str, text: str | None = None) -> tuple:
    """The columns of an event's row, but its id; text is the event's JSON text, when already written.

    (partner_id, event_id, content_key, player_login, received_at, sub, event): an event with an
    event_id is keyed by (partner_id, event_id); one without, by content_key, the hash of its
    canonical form. Each key is UNIQUE in the database, over the events keyed by it.
    """
    return (
        event["partner_id"],
        event.get("event_id"),
        None if "event_id" in event else content_key(event),
        event["player_login"],
        received_at,
        sub,
        dumps(event) if text is None else text,
    )


def typed_row(event: dict, received_at: int, sub: str, text: str | None = None) -> tuple:
    """event_row's columns, and the event's type (which PostgreSQL keeps in a column of its own)."""
    return (*event_row(event, received_at, sub, text), event["event_type"])


def exported_row(record: tuple[int, int, str, dict, str | None]) -> tuple[int, tuple]:
    """An exported event (id, received_at, sub, event, its JSON text or None) as an import stores it.

    (id, typed_row's columns). Small, plain values: what the import's worker processes hand back
    (content key computed) to the one that writes.
    """
    id_, received_at, sub, event, text = record
    return id_, typed_row(event, received_at, sub, text)


def format_event(id_: int, received_at: int, event: str, sub: str | None = None) -> str:
    """Write a stored event as JSON, its exact text spliced in, never re-parsed (with sub: an export line)."""
    holder = "" if sub is None else f', "sub": {_encode_str(sub)}'
    return f'{{"id": {id_}, "received_at": "{rfc3339_us(received_at)}"{holder}, "event": {event}}}'


def format_player(partner_id: str, player_login: str, is_vip: bool, updated_at: str, updated_by: str) -> str:
    """Write a player's VIP flag as an export line."""
    return json.dumps(
        {
            "partner_id": partner_id,
            "player_login": player_login,
            "is_vip": bool(is_vip),
            "updated_at": updated_at,
            "updated_by": updated_by,
        },
        ensure_ascii=False,
    )


def conditions(clauses: Iterable[tuple[str, object]]) -> tuple[list[str], list]:
    """Keep the SQL clauses whose value is given; return them and their values, in order."""
    kept = [(clause, value) for clause, value in clauses if value is not None]
    return [clause for clause, _ in kept], [value for _, value in kept]


def fill_page(rows: Iterable[tuple[int, int, str]], limit: int) -> tuple[list[tuple[int, int, str]], bool]:
    """Take rows (id, received_at, text) into a page of at most limit events and MAX_PAGE_BYTES; say if any are left.

    A page holds at least one event, however large.
    """
    page, size = [], 0
    for row in rows:
        if len(page) == limit or (page and size + len(row[2]) > MAX_PAGE_BYTES):
            return page, True
        page.append(row)
        size += len(row[2])
    return page, False


# Records an import of VIP flags looks up and writes at a time.
PLAYERS_CHUNK = 1000


def merge_players(records: Iterable[tuple[str, str, bool, str, str]], held_at, write) -> tuple[int, int, int]:
    """Merge exported VIP flags by time; return (imported, updated, already held).

    A chunk of records at a time: held_at(keys) gives the updated_at of each (partner_id,
    player_login) of keys held, as a dict; write(records) stores those records' flags, in order. A
    player not held is added; one held with an older updated_at takes the record's flag; one held
    with the same or a newer updated_at keeps its own (a player twice in the file included).
    """
    imported = updated = held = 0
    chunk: list[tuple] = []

    def merge():
        nonlocal imported, updated, held
        known = held_at({(record[0], record[1]) for record in chunk})
        writes = []
        for record in chunk:
            key = (record[0], record[1])
            existing = known.get(key)
            if existing is not None and existing >= record[3]:
                held += 1
                continue
            writes.append(record)
            known[key] = record[3]
            if existing is None:
                imported += 1
            else:
                updated += 1
        if writes:
            write(writes)
        chunk.clear()

    for record in records:
        chunk.append(record)
        if len(chunk) == PLAYERS_CHUNK:
            merge()
    if chunk:
        merge()
    return imported, updated, held


def increasing_ids(records: Iterable[tuple]) -> Iterator[tuple]:
    """Pass exported event records on, refusing (ValueError) ids that do not increase."""
    last_id = 0
    for record in records:
        if record[0] <= last_id:
            raise ValueError(f"id {record[0]} does not follow id {last_id}: an export lists ids in increasing order")
        last_id = record[0]
        yield record


# The contract -------------------------------------------------------------------------------

# Reads: events one page query examines, bytes a page holds.
SCAN_WINDOW = 20_000
MAX_PAGE_BYTES = 4 << 20

# The layout both stores write, stamped in the database; a database of another layout is refused.
SCHEMA_VERSION = 2


class WriteRequest:
    """Rows that one call asked to store, and what became of them."""

    __slots__ = ("rows", "new", "error", "done")

    def __init__(self, rows: list[tuple]):
        self.rows = rows
        self.new: list[bool] = []
        self.error: BaseException | None = None
        self.done = False


class Store:
    """What every store does; a backend supplies the SQL.

    Every call raises StorageError when the database cannot be used (the service answers 503),
    and is safe to make from many threads at once.
    """

    #: Where the data is, as `db check` prints it (a file path, or a URL without its password).
    name: str
    #: Called after each group commit with (requests in it, seconds it took), when set (metrics).
    observe_commit = None

    def __init__(self):
        self._lock = threading.Lock()  # held by the one thread writing for this process
        self._queue_lock = threading.Lock()  # guards the queue of writes waiting for it
        self._queue: list[WriteRequest] = []

    def add_events(self, events: list[dict], sub: str) -> list[bool]:
        """Store events all or nothing; say of each whether it was new. Raise EventConflict.

        Returns only after the events are committed and on disk. Group commit: the calls waiting
        for the write lock share one transaction and one flush, and a conflict in one call undoes
        that call alone.
        """
        received_at = now_us()
        request = WriteRequest([self._row(e, received_at, sub) for e in events])
        with self._queue_lock:
            self._queue.append(request)
        with self._lock:
            if not request.done:  # else a previous holder of the lock committed it with its own
                with self._queue_lock:
                    group, self._queue = self._queue, []
                started = time.perf_counter()
                try:
                    self._commit_group(group)
                    if self.observe_commit is not None:
                        self.observe_commit(len(group), time.perf_counter() - started)
                except BaseException as exc:
                    # Nothing of the group was committed: every caller in it gets the failure.
                    for other in group:
                        other.error = exc
                finally:
                    for other in group:
                        other.done = True
        if request.error is not None:
            raise request.error
        return request.new

    #: The row of an event, as the backend stores it (event_row's columns, and any of its own).
    _row = staticmethod(event_row)

    def _commit_group(self, group: list[WriteRequest]) -> None:
        """Commit the rows of every request of group in one transaction, setting each one's new or error."""
        raise NotImplementedError

    def set_vip(self, partner_id: str, player_login: str, is_vip: bool, sub: str) -> None:
        """Record a player's VIP flag, when it was set and by whom; return once it is committed."""
        raise NotImplementedError

    def ping(self) -> None:
        """Run a query on the events table; raise StorageError if the database does not answer."""
        raise NotImplementedError

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The store's own gauges, by name: (what it measures, its value now). Never fails."""
        return {}

    def read_events(
        self,
        partner_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        player_login: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
        received_after: int | None = None,
        received_before: int | None = None,
    ) -> tuple[list[tuple[int, int, str]], int | None]:
        """Return a page of a partner's events with id > after, oldest first, and the id to go on after.

        Each event is (id, received_at in microseconds, exact JSON text). The id to go on after is
        None at the end. One query examines at most SCAN_WINDOW of the partner's events, so a
        selective filter over millions of events gives short (even empty) pages with a next id,
        never a long scan; a page stops short too once it holds MAX_PAGE_BYTES of events. An
        event_id is a key, not a filter: one index lookup. Ids appear in the order their events
        were committed, so a reader paging with `after` never misses one committed later.
        """
        raise NotImplementedError

    def get_event(self, event_row_id: int) -> tuple[str, int, str] | None:
        """Return (partner_id, received_at in microseconds, exact JSON text) of a stored event, or None."""
        raise NotImplementedError

    def get_vip(self, partner_id: str, player_login: str) -> tuple[bool, str, str] | None:
        """Return (is_vip, updated_at, updated_by) of a player ever flagged, or None."""
        raise NotImplementedError

    def export_events(self, partner_id: str | None = None, player_login: str | None = None) -> Iterator[str]:
        """Yield one JSON line per stored event (format_event with sub), oldest first: what an import takes."""
        raise NotImplementedError

    def export_players(self) -> Iterator[str]:
        """Yield one JSON line per player with a VIP flag (format_player), by partner and player."""
        raise NotImplementedError

    def import_events(self, records: Iterable[tuple[int, tuple]]) -> tuple[int, int]:
        """Store exported events all or nothing; return (imported, already held).

        Each record is exported_row's (id, typed_row's columns).

        Into an empty database every id is kept, so an export imported there exports again
        byte for byte. Into one that holds events, the new ones get new ids after the last (an
        id is never reused, and a reader paging through never misses one). An event already held
        is skipped; an event_id held with other content raises EventConflict, ids that do not
        increase from one record to the next raise ValueError, and so does any error raised by
        records: then nothing is kept.
        """
        raise NotImplementedError

    def import_players(self, records: Iterable[tuple[str, str, bool, str, str]]) -> tuple[int, int, int]:
        """Store exported VIP flags all or nothing; return (imported, updated, already held).

        A player not held is added; one held with an older updated_at takes the file's flag; one
        held with the same or a newer updated_at keeps its own.
        """
        raise NotImplementedError

    def check(self) -> tuple[int, list[str], int, int]:
        """Return the layout, what the database's own check says (["ok"] when sound), and the events and players."""
        raise NotImplementedError

    def snapshot(self, destination: str) -> None:
        """Write a consistent copy of the database to the file destination (StorageError where not possible)."""
        raise NotImplementedError

    def restore(self, snapshot: str) -> tuple[str | None, int, int]:
        """Close the store and replace its database with snapshot; return (where the old one is kept, events, players).

        Only for a database that is a file; others raise StorageError.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Close the connections."""
        raise NotImplementedError
