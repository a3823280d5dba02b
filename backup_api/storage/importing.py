"""What an import needs besides a store: its events checked whole before the first is stored (Staging),
ids in order, chunks, VIP flags merged by time.

An import stores its events in pieces, each a transaction of its own, so that the service's own
writes get their turn between them rather than waiting out the whole import. Yet a bad file must
leave the database as it was: so every record goes first into a staging database, and its
event_ids are checked against each other and against the database. Only a file that passes every
check is moved, in pieces.

The staging database is SQLite's private temporary file (in SQLITE_TMPDIR or TMPDIR, else /var/tmp
or /tmp), deleted as soon as it is open: nothing is left behind, even by a killed import. It is
opened on a connection of its own, or attached to the SQLite store's writing connection, which then
moves a piece by INSERT ... SELECT.
"""

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import islice

from backup_api.storage.base import EventConflict, RecordError
from backup_api.storage.jsonform import parsed_content_key
from backup_api.storage.rows import SQLITE_COLUMNS, EventRow

# Records written to the staging database, and event_ids looked up in the database, at a time.
LOAD_ROWS = 2000
LOOKUP_KEYS = 500

_COLUMNS = ", ".join(EventRow._fields)
_SQLITE_COLUMNS = ", ".join(EventRow._fields[:SQLITE_COLUMNS])
_MARKS = ", ".join(["?"] * (len(EventRow._fields) + 2))


class Staging:
    """A staging table of an import's records: line (from 1), the record's id, and its EventRow's columns.

    In the database schema of conn (a connection's own, or one attached to it).
    """

    def __init__(self, conn: sqlite3.Connection, schema: str = "main"):
        self._conn = conn
        self.schema = schema
        conn.execute(f"PRAGMA {schema}.journal_mode = OFF")  # thrown away on any failure: nothing to roll back
        conn.execute(f"PRAGMA {schema}.synchronous = OFF")
        conn.execute(f"CREATE TABLE {schema}.staged (line INTEGER PRIMARY KEY, id INTEGER NOT NULL, {_COLUMNS})")
        self.count = 0

    def load(self, records: Iterable[tuple]) -> None:
        """Write records ((id, row) each, in the file's order) to the staging database."""
        insert = f"INSERT INTO {self.schema}.staged VALUES ({_MARKS})"
        batch = []
        for id_, row in records:
            self.count += 1
            batch.append((self.count, id_, *row))
            if len(batch) == LOAD_ROWS:
                self._conn.executemany(insert, batch)
                batch = []
        self._conn.executemany(insert, batch)

    def check(self, held_texts: Callable[[list[tuple[str, str]]], dict] | None) -> None:
        """Raise EventConflict (index: its line - 1) for the first line whose event_id is taken by other content.

        Taken by an earlier line of the file, or by an event the database holds: held_texts(keys)
        gives the text of each (partner_id, event_id) of keys the database holds (None: it holds
        no events, and only event_ids repeated in the file are read back).
        """
        staged = f"{self.schema}.staged"
        self._conn.execute(f"CREATE INDEX {self.schema}.staged_by_event_id ON staged (partner_id, event_id, line)"
                           " WHERE event_id IS NOT NULL")
        repeated = ("" if held_texts is not None else
                    f" AND (partner_id, event_id) IN (SELECT partner_id, event_id FROM {staged}"
                    " WHERE event_id IS NOT NULL GROUP BY partner_id, event_id HAVING count(*) > 1)")
        rows = self._conn.execute(f"SELECT line, partner_id, event_id, event FROM {staged}"
                                  f" WHERE event_id IS NOT NULL{repeated} ORDER BY partner_id, event_id, line")
        first_bad = key = None
        # The text that holds key's event_id (the database's, else the file's first), and its content key.
        known = known_key = None
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
                    known_key = parsed_content_key(known)
                if parsed_content_key(text) != known_key and (first_bad is None or line < first_bad[0]):
                    first_bad = (line, partner_id, event_id)
        if first_bad is not None:
            line, partner_id, event_id = first_bad
            conflict = EventConflict(partner_id, event_id)
            conflict.index = line - 1
            raise conflict

    def copy(self, keep_ids: bool) -> str:
        """The INSERT that copies the records of lines after + 1 to up (its two parameters) into the events.

        With their ids, or new ones. Held keys are skipped: each row copied is a change of the connection.
        """
        # WHERE before ON CONFLICT: else SQLite would read ON as a join's constraint.
        return (f"INSERT INTO main.events (id, {_SQLITE_COLUMNS}) SELECT {'id' if keep_ids else 'NULL'},"
                f" {_SQLITE_COLUMNS} FROM {self.schema}.staged WHERE line > ? AND line <= ? ORDER BY line"
                " ON CONFLICT DO NOTHING")

    def first_id(self, after: int) -> int:
        """The id of the record of line after + 1."""
        return self._conn.execute(f"SELECT id FROM {self.schema}.staged WHERE line = ?", (after + 1,)).fetchone()[0]

    def records(self, after: int, count: int) -> list[tuple[int, tuple]]:
        """The records of lines after + 1 to after + count, (id, row) each, in the file's order."""
        rows = self._conn.execute(f"SELECT id, {_COLUMNS} FROM {self.schema}.staged WHERE line > ? AND line <= ?"
                                  " ORDER BY line", (after, after + count))
        return [(record[0], record[1:]) for record in rows]


@contextmanager
def attached_staging(conn: sqlite3.Connection) -> Iterator[Staging]:
    """A staging database attached to conn, as "staging"; detached after."""
    conn.execute("ATTACH DATABASE '' AS staging")  # '': a private file, deleted once open
    try:
        yield Staging(conn, "staging")
    finally:
        with suppress(sqlite3.Error):  # the connection is gone (the store's file replaced meanwhile)
            conn.execute("DETACH DATABASE staging")


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


def chunks(records: Iterable, size: int) -> Iterator[list]:
    """Yield lists of up to size records, in order."""
    records = iter(records)
    while chunk := list(islice(records, size)):  # islice: no Python step per record
        yield chunk


# Records an import of VIP flags looks up and writes at a time.
PLAYERS_CHUNK = 1000


def merge_players(records: Iterable[tuple], held_at, write) -> tuple[int, int, int]:
    """Merge exported VIP flags by time; return (imported, updated, already held).

    A chunk of records at a time: held_at(keys) gives the updated_at of each (partner_id,
    player_login) of keys held, as a dict; write(records) stores those records' flags, in order. A
    player not held is added; one held with an older updated_at takes the record's flag; one held
    with the same or a newer updated_at keeps its own (a player twice in the file included).
    """
    imported = updated = held = 0
    for chunk in chunks(records, PLAYERS_CHUNK):
        known = held_at({(partner_id, player_login) for partner_id, player_login, _, _, _ in chunk})
        writes = []
        for record in chunk:
            partner_id, player_login, _, updated_at, _ = record
            key = (partner_id, player_login)
            existing = known.get(key)
            if existing is not None and existing >= updated_at:
                held += 1
                continue
            writes.append(record)
            known[key] = updated_at
            if existing is None:
                imported += 1
            else:
                updated += 1
        if writes:
            write(writes)
    return imported, updated, held
