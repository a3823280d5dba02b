"""What an import needs beside a store: its records checked whole before the first is stored (Staging),
copied from there on SQLite, ids in order.

An import stores its records in pieces, each a transaction of its own, so that the service's own
writes get their turn between them rather than waiting out the whole import. Yet a bad file must
leave the database as it was: so every record goes first into a staging table, and the events'
event_ids are checked against each other and against the database. Only a file that passes every
check is moved, in pieces.

The staging database is SQLite's private temporary file (in SQLITE_TMPDIR or TMPDIR, else /var/tmp
or /tmp), deleted as soon as it is open: nothing is left behind, even by a killed import. It is
opened on a connection of its own, or attached to the SQLite store's writing connection, which then
moves a piece by INSERT ... SELECT.
"""

import json
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

from backup_api.storage import totals
from backup_api.storage.base import EventConflict, ImportStopped, RecordError, StorageError
from backup_api.storage.jsonform import parsed_content_key
from backup_api.storage.rows import SQLITE_COLUMNS, EventRow, PlayerRecord

# Records written to the staging database, and event_ids looked up in the database, at a time.
LOAD_ROWS = 2000
LOOKUP_KEYS = 500

# The columns staged of an event (its id, then its row's) and of a VIP flag.
EVENT_COLUMNS = ("id", *EventRow._fields)
PLAYER_COLUMNS = PlayerRecord._fields


class Staging:
    """A staging table of an import's records: line (from 1), then the record's columns, in a schema of conn.

    The schema is a connection's own ("main"), or one attached to it.
    """

    def __init__(self, conn: sqlite3.Connection, columns: tuple[str, ...], schema: str = "main"):
        self._conn = conn
        self.schema = schema
        self.table = f"{schema}.staged"
        self._columns = ", ".join(columns)
        self._first = columns[0]
        with _staging_errors():
            conn.execute(f"PRAGMA {schema}.journal_mode = OFF")  # thrown away on any failure: nothing to roll back
            conn.execute(f"PRAGMA {schema}.synchronous = OFF")
            conn.execute(f"CREATE TABLE {self.table} (line INTEGER PRIMARY KEY, {self._columns})")
        self._insert = f"INSERT INTO {self.table} VALUES ({', '.join(['?'] * (len(columns) + 1))})"
        self.count = 0

    def load(self, records: Iterable[tuple]) -> None:
        """Write records (tuples of the columns, in the file's order) to the staging table."""
        batch = []
        with _staging_errors():
            for record in records:
                self.count += 1
                batch.append((self.count, *record))
                if len(batch) == LOAD_ROWS:
                    self._conn.executemany(self._insert, batch)
                    batch = []
            self._conn.executemany(self._insert, batch)

    def check(self, held_texts: Callable[[list[tuple[str, str]]], dict] | None) -> None:
        """Raise EventConflict (index: its line - 1) for the first line whose event_id is taken by other content.

        Taken by an earlier line of the file, or by an event the database holds: held_texts(keys)
        gives the text of each (partner_id, event_id) of keys the database holds (None: it holds
        no events, and only event_ids repeated in the file are read back).
        """
        staged = self.table
        self._conn.execute(f"CREATE INDEX {self.schema}.staged_by_event_id ON staged (partner_id, event_id, line)"
                           " WHERE event_id IS NOT NULL")
        repeated = ("" if held_texts is not None else
                    f" AND (partner_id, event_id) IN (SELECT partner_id, event_id FROM {staged}"
                    " WHERE event_id IS NOT NULL GROUP BY partner_id, event_id HAVING count(*) > 1)")
        rows = self._conn.execute(f"SELECT line, partner_id, event_id, event FROM {staged}"
                                  f" WHERE event_id IS NOT NULL{repeated} ORDER BY partner_id, event_id, line")
        first_bad = key = None
        # The text that holds key's event_id (the database's, else the file's first), and its content key.
        known: str | None = None
        known_key = None
        while chunk := rows.fetchmany(LOOKUP_KEYS):
            held = {} if held_texts is None else held_texts([(partner_id, event_id) for _, partner_id, event_id, _
                                                             in chunk])
            for line, partner_id, event_id, text in chunk:
                if (partner_id, event_id) != key:
                    key, known_key = (partner_id, event_id), None
                    known = held.get(key)
                    if known is None:
                        known = text
                        continue
                if text == known:
                    continue
                if known_key is None:
                    assert known is not None  # set with the key
                    known_key = parsed_content_key(known)
                if parsed_content_key(text) != known_key and (first_bad is None or line < first_bad[0]):
                    first_bad = (line, partner_id, event_id)
        if first_bad is not None:
            line, partner_id, event_id = first_bad
            conflict = EventConflict(partner_id, event_id)
            conflict.index = line - 1
            raise conflict

    def select(self, columns: str) -> str:
        """The SELECT of columns of the records of lines after + 1 to up (its two parameters), in order."""
        return f"SELECT {columns} FROM {self.table} WHERE line > ? AND line <= ? ORDER BY line"

    def first(self, after: int) -> object:
        """The first column of the record of line after + 1."""
        return self._conn.execute(f"SELECT {self._first} FROM {self.table} WHERE line = ?", (after + 1,)).fetchone()[0]

    def records(self, after: int, count: int) -> list[tuple]:
        """The records of lines after + 1 to after + count, in the file's order."""
        return self._conn.execute(self.select(self._columns), (after, after + count)).fetchall()

    def partners(self, after: int, count: int) -> set[str]:
        """The partner_ids of the records of lines after + 1 to after + count (an import's events)."""
        return {partner_id for (partner_id,) in self._conn.execute(
            f"SELECT DISTINCT partner_id FROM {self.table} WHERE line > ? AND line <= ?", (after, after + count))}

    def totals(self, after: int, new: list[bool]) -> dict:
        """The totals' counts of the events of lines after + 1 on, those new (as new says of each) only."""
        held = json.dumps([after + 1 + position for position, is_new in enumerate(new) if not is_new])
        return totals.grouped(self._conn.execute(totals.STAGED_GROUPS.format(table=self.table),
                                                 (after, after + len(new), held)))


@contextmanager
def _staging_errors() -> Iterator[None]:
    """Make the staging database's failures (its disk full, say) StorageError, saying where it is."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"the import's staging table failed: {exc} (it takes about the events' size, in"
                           " SQLITE_TMPDIR or TMPDIR, else /var/tmp or /tmp)") from exc


@contextmanager
def attached_staging(conn: sqlite3.Connection, columns: tuple[str, ...]) -> Iterator[Staging]:
    """A staging table of columns in a database attached to conn, as "staging"; detached after."""
    conn.execute("ATTACH DATABASE '' AS staging")  # '': a private file, deleted once open
    try:
        yield Staging(conn, columns, "staging")
    finally:
        with suppress(sqlite3.Error):  # the connection is gone (the store's file replaced meanwhile)
            conn.execute("DETACH DATABASE staging")


# The SQLite store's columns of an event but its id (it reads event_type from the event), and of a flag.
_SQLITE_EVENT = ", ".join(EventRow._fields[:SQLITE_COLUMNS])
PLAYER_SELECT = ", ".join(PLAYER_COLUMNS)


def copy_events(conn: sqlite3.Connection, staged: Staging, after: int, count: int, keep_ids: bool) -> int:
    """Copy the count events staged after the first `after` into a SQLite store's events, in one statement.

    With their ids, or new ones; an event whose key is held is skipped. Return the events copied.
    """
    before = conn.total_changes
    # WHERE before ON CONFLICT: else SQLite would read ON as a join's constraint.
    select = staged.select(("id, " if keep_ids else "NULL, ") + _SQLITE_EVENT)
    conn.execute(f"INSERT INTO main.events (id, {_SQLITE_EVENT}) {select} ON CONFLICT DO NOTHING",
                 (after, after + count))
    return conn.total_changes - before


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then let it in, to the handler there was.

    So an import's transaction and its count of what it stored end together: interrupted, the
    import says exactly which lines it kept (a KeyboardInterrupt between a COMMIT and its count
    would leave them unsaid). Only Python's main thread receives signals: elsewhere, nothing to do.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)


def increasing_ids(records: Iterable[tuple]) -> Iterator[tuple]:
    """Pass exported event records on, refusing (RecordError) ids that do not increase."""
    last_id = 0
    for index, record in enumerate(records):
        id_, _ = record
        if id_ <= last_id:
            error = RecordError(f"id {id_} does not follow id {last_id}: an export lists ids in increasing order")
            error.index = index
            raise error
        last_id = id_
        yield record


class Skipped:
    """The records of an import that skip(record) says to leave out (an erased player's), and the line numbers
    of the rest told as the file's: an error about the n-th record kept names its line in the file."""

    def __init__(self, skip):
        self._skip = skip
        self._positions: list[int] = []  # the file's indexes of the records left out, in order
        self.count = 0

    def passed(self, records: Iterable) -> Iterator:
        for index, record in enumerate(records):
            if self._skip(record):
                self._positions.append(index)
                self.count += 1
            else:
                yield record

    def line_index(self, index: int) -> int:
        """The file's index of the index-th record kept."""
        for position in self._positions:
            if position <= index:
                index += 1
        return index

    @contextmanager
    def lines_told(self) -> Iterator[None]:
        """Make a RecordError's index, and an ImportStopped's count of records kept, the file's."""
        try:
            yield
        except ImportStopped as exc:
            if exc.committed:
                exc.committed = self.line_index(exc.committed - 1) + 1
            if isinstance(exc.__cause__, RecordError):
                exc.__cause__.index = self.line_index(exc.__cause__.index)
            raise
        except RecordError as exc:
            exc.index = self.line_index(exc.index)
            raise
