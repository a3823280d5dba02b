"""The SQLite store's reads: pages, single events, flags, exports and the check, on pooled read-only
connections that never wait for the write lock.
"""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backup_api.storage import base
from backup_api.storage.base import (
    StorageError,
    conditions,
    fill_page,
    format_event,
    format_player,
)
from backup_api.storage.sqlite_files import counts, inspect_database

# Pooled read-only connections kept.
MAX_READERS = 8


def file_identity(path: str) -> tuple[int, int]:
    """Return the device and inode of the file at path."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class SQLiteReads:
    """The reads of SQLiteStore, a part of it (a mixin): they use its connections."""

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """Lend a read-only connection of the pool, so that reads never wait for the write lock.

        A connection opened on a file since replaced (a restored snapshot) is closed, not reused.
        """
        try:
            identity = file_identity(self.path)
        except FileNotFoundError:
            raise StorageError(f"the database file {self.path} is missing") from None
        conn = None
        with self._readers_lock:
            while self._readers and conn is None:
                candidate, opened_on = self._readers.pop()
                if opened_on == identity:
                    conn = candidate
                else:
                    candidate.close()
        try:
            if conn is None:
                # mode=ro: a reader never creates the file, nor writes to it.
                conn = sqlite3.connect(
                    Path(self.path).as_uri() + "?mode=ro", uri=True, check_same_thread=False, isolation_level=None
                )
                conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            yield conn
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StorageError(f"the database could not be read: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        else:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._readers_lock:
                if len(self._readers) < MAX_READERS:
                    self._readers.append((conn, identity))
                    conn = None
            if conn is not None:
                conn.close()

    def read_events(
        self,
        partner_id,
        *,
        after=0,
        limit=100,
        player_login=None,
        event_type=None,
        event_id=None,
        received_after=None,
        received_before=None,
    ):
        """Return a page of a partner's events with id > after, oldest first, and the id to go on after."""
        # Ids are committed in order: one process writes, one transaction at a time.
        filters, params = conditions((
            ("player_login = ?", player_login),
            ("json_extract(event, '$.event_type') = ?", event_type),
            ("received_at > ?", received_after),
            ("received_at < ?", received_before),
        ))
        where = "".join(" AND " + clause for clause in filters)
        with self._reader() as conn:
            if event_id is not None:
                # A key, not a filter: one lookup in the UNIQUE index, whatever the store's size.
                rows = conn.execute(
                    "SELECT id, received_at, event FROM events WHERE partner_id = ? AND event_id = ? AND id > ?"
                    + where,
                    [partner_id, event_id, after, *params],
                ).fetchall()
                return rows, None
            conn.execute("BEGIN")  # one snapshot for the page and for where its window ended
            window = "SELECT id, received_at, player_login, event FROM events WHERE partner_id = ? AND id > ?"
            window += f" ORDER BY id LIMIT {base.SCAN_WINDOW}"
            cursor = conn.execute(
                f"SELECT id, received_at, event FROM ({window}) WHERE 1{where} ORDER BY id",
                [partner_id, after, *params],
            )
            page, more = fill_page(cursor, limit)
            cursor.close()
            if more:
                return page, page[-1][0]
            scanned, last = conn.execute(
                f"SELECT count(*), max(id) FROM (SELECT id FROM events WHERE partner_id = ? AND id > ?"
                f" ORDER BY id LIMIT {base.SCAN_WINDOW})",
                [partner_id, after],
            ).fetchone()
            return page, (last if scanned == base.SCAN_WINDOW else None)

    def get_event(self, event_row_id: int) -> tuple[str, int, str] | None:
        """Return (partner_id, received_at in microseconds, exact JSON text) of a stored event, or None."""
        with self._reader() as conn:
            return conn.execute(
                "SELECT partner_id, received_at, event FROM events WHERE id = ?", (event_row_id,)
            ).fetchone()

    def get_vip(self, partner_id: str, player_login: str) -> tuple[bool, str, str] | None:
        """Return (is_vip, updated_at, updated_by) of a player ever flagged, or None."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT is_vip, updated_at, updated_by FROM players WHERE partner_id = ? AND player_login = ?",
                (partner_id, player_login),
            ).fetchone()
        return None if row is None else (bool(row[0]), row[1], row[2])

    def export_events(self, partner_id=None, player_login=None):
        """Yield one JSON line per stored event, oldest first, with every column: what an import takes."""
        where, params = conditions((("partner_id = ?", partner_id), ("player_login = ?", player_login)))
        sql = "SELECT id, received_at, sub, event FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._reader() as conn:
            for id_, received_at, sub, event in conn.execute(sql + " ORDER BY id", params):
                yield format_event(id_, received_at, event, sub)

    def export_players(self) -> Iterator[str]:
        """Yield one JSON line per player with a VIP flag, with every column: what an import takes."""
        sql = "SELECT partner_id, player_login, is_vip, updated_at, updated_by FROM players ORDER BY 1, 2"
        with self._reader() as conn:
            for row in conn.execute(sql):
                yield format_player(*row)

    def check(self):
        """Return the layout, what integrity_check says (["ok"] when sound), and the events and players held."""
        with self._reader() as conn:
            layout, integrity = inspect_database(conn)
            events, players = counts(conn)
        return layout, integrity, events, players
