"""The SQLite store: one file, written by one process (the default, embedded backend)."""

import functools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlite_utils

from backup_api.storage.base import (
    SCHEMA_VERSION,
    EventConflict,
    StorageError,
    Store,
    WriteRequest,
    increasing_ids,
    merge_players,
    now_us,
    parsed_content_key,
    rfc3339_us,
)
from backup_api.storage.files import create_private_file
from backup_api.storage.sqlite_files import copy_database, restore
from backup_api.storage.sqlite_reads import SQLiteReads, file_identity

# Raw SQL: the UNIQUE indexes decide, and the count of changes says whether they did.
_COLUMNS = "partner_id, event_id, content_key, player_login, received_at, sub, event"  # event_row's
_INSERT_EVENT = f"INSERT INTO events (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Rows an import sends in one executemany.
IMPORT_CHUNK = 1000
# Rows a group commit sends in one INSERT statement (seven values each).
GROUP_ROWS = 64


class _Held(Exception):
    """A row to insert as new is held already."""


@functools.cache
def _insert_rows(count: int) -> str:
    """The INSERT of count new rows (event_row's columns), their ids given by SQLite."""
    return f"INSERT INTO events ({_COLUMNS}) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * count)

# A player's VIP flag, added or replaced. Plain SQL: sqlite-utils' upsert commits on its own,
# inside our transaction.
_UPSERT_PLAYER = (
    "INSERT INTO players (partner_id, player_login, is_vip, updated_at, updated_by)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (partner_id, player_login) DO UPDATE SET"
    " is_vip = excluded.is_vip, updated_at = excluded.updated_at, updated_by = excluded.updated_by"
)


class SQLiteStore(SQLiteReads, Store):
    """One SQLite database, shared by all threads of the process."""

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
                 wal_autocheckpoint: int = 1000):
        """Open (and create when missing) the database at path."""
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):  # OFF: the stand-in only
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}")
        super().__init__()
        self.path = self.name = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout_ms)
        # Pages of -wal after which a commit folds it into the file (SQLite's default, 1000); 0
        # never: a tool that replicates the -wal (Litestream) does it instead.
        self._wal_autocheckpoint = int(wal_autocheckpoint)
        # One connection behind the write lock: SQLite serialises writers anyway, and a single
        # writer never meets "database is locked" from its own threads.
        self._readers_lock = threading.Lock()
        self._readers: list[tuple[sqlite3.Connection, tuple[int, int]]] = []
        try:
            create_private_file(path)
        except OSError as exc:
            raise StorageError(f"cannot create the database {path}: {exc}") from exc
        self._open()

    def _open(self) -> None:
        """Connect to the file at self.path, creating the schema where it is missing."""
        self._identity = None  # until an open succeeds, every write tries again
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(self._conn)
            self._conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            self.db.enable_wal()
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_autocheckpoint}")
            self._create_schema()
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the database {self.path} has layout {version}, written by a newer version of the service;"
                    f" this one reads layout {SCHEMA_VERSION}: upgrade the service to use it"
                )
            if version != SCHEMA_VERSION:
                raise StorageError(
                    f"the database {self.path} has layout {version}; this version of the service reads layout"
                    f" {SCHEMA_VERSION} only: move it aside (it stays a readable SQLite file) and start a new one"
                )
            self._identity = file_identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc

    def _check_file(self) -> None:
        """Make sure writes go to the file at self.path, not to one deleted or replaced.

        SQLite keeps writing to a deleted file's inode, and everything written there is lost
        at exit: so a missing file is a StorageError, and a file replaced (by a restored
        snapshot, say) is opened afresh.
        """
        try:
            identity = file_identity(self.path)
        except FileNotFoundError:
            raise StorageError(f"the database file {self.path} is missing") from None
        if identity != self._identity:
            self._conn.close()
            if self._identity is not None:
                # The -wal and -shm beside the path belong to the file we had, now gone:
                # applied to the new one, they would corrupt it (or pass garbage off as a
                # database). Only then: after a failed reopen they may be the new file's own.
                for suffix in ("-wal", "-shm"):
                    with suppress(FileNotFoundError):
                        os.remove(self.path + suffix)
            self._open()

    def _create_schema(self) -> None:
        """Create the tables and indexes of a new database (one transaction, stamped with the layout)."""
        if self.db["events"].exists():
            return
        self._conn.execute("BEGIN IMMEDIATE")  # sqlite-utils' statements nest in it as savepoints
        try:
            if not self.db["events"].exists():  # else another process created them meanwhile
                self._create_tables()
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _create_tables(self) -> None:
        """Create the events and players tables and their indexes."""
        events = self.db["events"]
        events.create(
            {
                "id": int,
                "partner_id": str,
                # An event with an event_id is keyed by (partner_id, event_id); one without, by
                # content_key, the hash of its canonical form. Each key is UNIQUE in an index of
                # its own, holding only the events keyed by it.
                "event_id": str,
                "content_key": bytes,
                "player_login": str,
                "received_at": int,
                "sub": str,
                "event": str,
            },
            pk="id",
            not_null={"partner_id", "player_login", "received_at", "sub", "event"},
        )
        self._conn.execute(
            "CREATE UNIQUE INDEX events_by_event_id ON events (partner_id, event_id) WHERE event_id IS NOT NULL"
        )
        self._conn.execute(
            "CREATE UNIQUE INDEX events_by_content ON events (content_key) WHERE content_key IS NOT NULL"
        )
        # By partner only: each partner's new rows land at the end of its range, a few pages kept
        # hot; an index by player would put each insert on a page of its own once millions are stored.
        # Exporting one player's events reads the partner's rows.
        events.create_index(["partner_id"])
        self.db["players"].create(
            {"partner_id": str, "player_login": str, "is_vip": int, "updated_at": str, "updated_by": str},
            pk=("partner_id", "player_login"),
            not_null={"is_vip", "updated_at", "updated_by"},
        )

    @contextmanager
    def _transaction(self, failure: str, begin: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a write transaction (the caller holds the lock); SQLite failures become StorageError.

        begin False: the caller runs one statement, which SQLite makes a transaction of its own.
        """
        try:
            self._check_file()
            if begin:
                self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn
            if begin:
                self._conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"{failure}: {exc}") from exc
            raise

    def _rollback(self) -> None:
        """Roll back the open transaction, if the connection still can."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; its transaction was never committed

    def _commit_group(self, group: list[WriteRequest]) -> None:
        """Write every request of group in one transaction; undo a request that conflicts, alone."""
        if self._insert_new([row for request in group for row in request.rows]):
            for request in group:
                request.new = [True] * len(request.rows)
            return
        # Some row is held already: each request on its own, to tell which rows were new and
        # which request conflicts (a savepoint undoes that one alone).
        with self._transaction("the events could not be stored") as conn:
            for request in group:
                conn.execute("SAVEPOINT request")
                try:
                    request.new = self._insert(conn, request.rows)
                except EventConflict as exc:
                    conn.execute("ROLLBACK TO request")
                    request.error = exc
                conn.execute("RELEASE request")

    def _insert_new(self, rows: list[tuple]) -> bool:
        """Insert rows (event_row's columns) all or nothing, if none is held already; tell whether they were.

        The common case, every event new, in as few statements as can be: each one gives the GIL
        up and waits to take it back while the group's other requests wait for the commit, and
        under load that wait, not SQLite, was most of a commit's time. Up to GROUP_ROWS rows are
        one INSERT, its own transaction; more, GROUP_ROWS to a statement in one transaction. A
        row held already (or twice in rows) fails its statement, and nothing is kept.
        """
        try:
            with self._transaction("the events could not be stored", begin=len(rows) > GROUP_ROWS) as conn:
                for start in range(0, len(rows), GROUP_ROWS):
                    chunk = rows[start : start + GROUP_ROWS]
                    try:
                        conn.execute(_insert_rows(len(chunk)), [value for row in chunk for value in row])
                    except sqlite3.IntegrityError:
                        raise _Held from None
        except _Held:
            return False
        return True

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple], id_: int | None = None) -> list[bool]:
        """Insert rows (the first with id id_, when given); say of each whether it was new. Raise EventConflict."""
        new = []
        for row in rows:
            # Raw SQL: the UNIQUE indexes decide, and rowcount says whether they did.
            cursor = conn.execute(_INSERT_EVENT, (id_, *row))
            id_ = None
            new.append(cursor.rowcount == 1)
            if not cursor.rowcount and row[1] is not None:
                self._check_same_content(conn, row[0], row[1], row[6])
        return new

    @staticmethod
    def _check_same_content(conn: sqlite3.Connection, partner_id: str, event_id: str, event_json: str) -> None:
        """Raise EventConflict if the event stored under this event_id has other content."""
        # Only on a resend or a conflict, both rare: so no content key is kept for these events.
        (held,) = conn.execute(
            "SELECT event FROM events WHERE partner_id = ? AND event_id = ?", (partner_id, event_id)
        ).fetchone()
        if parsed_content_key(held) != parsed_content_key(event_json):
            raise EventConflict(partner_id, event_id)

    def set_vip(self, partner_id: str, player_login: str, is_vip: bool, sub: str) -> None:
        """Record a player's VIP flag, when it was set and by whom."""
        with self._lock, self._transaction("the VIP flag could not be stored") as conn:
            conn.execute(_UPSERT_PLAYER, (partner_id, player_login, int(is_vip), rfc3339_us(now_us()), sub))

    def gauges(self):
        """The sizes of the database file and of its write-ahead log."""
        sizes = {}
        for name, path, what in (("sqlite_database_bytes", self.path, "database file"),
                                 ("sqlite_wal_bytes", self.path + "-wal", "write-ahead log (-wal)")):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = 0
            sizes[name] = (f"Size of the SQLite {what}, bytes.", size)
        return sizes

    def forget(self, partners=None) -> None:
        """Delete every event and VIP flag of partners, or of everyone when None (the stand-in's reset)."""
        with self._lock, self._transaction("the reset failed") as conn:
            if partners is None:
                conn.execute("DELETE FROM events")
                conn.execute("DELETE FROM players")
                return
            chosen = sorted(partners)
            for start in range(0, len(chosen), 500):
                part = chosen[start : start + 500]
                marks = ", ".join("?" * len(part))
                conn.execute(f"DELETE FROM events WHERE partner_id IN ({marks})", part)
                conn.execute(f"DELETE FROM players WHERE partner_id IN ({marks})", part)

    def ping(self) -> None:
        """Run a query on the events table; raise StorageError if the database does not answer."""
        with self._lock:
            try:
                self._check_file()
                self._conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"the database does not answer: {exc}") from exc

    # Importing ------------------------------------------------------------------------

    def import_events(self, records):
        """Store exported events all or nothing; return (imported, already held).

        A chunk of rows at a time in one executemany; only a chunk in which some row was already
        held (or conflicts) is inserted again row by row, to tell which.
        """
        imported = held = 0
        with self._lock, self._transaction("the import failed") as conn:
            (empty,) = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM events)").fetchone()
            chunk: list[tuple] = []
            start = 0  # the position in records of the chunk's first row

            def flush():
                nonlocal imported, held, start
                new = self._insert_chunk(conn, chunk, start)
                imported += new
                held += len(chunk) - new
                start += len(chunk)
                chunk.clear()

            for id_, row in increasing_ids(records):
                chunk.append((id_ if empty else None, *row[:7]))  # typed_row's, but the event's type
                if len(chunk) == IMPORT_CHUNK:
                    flush()
            if chunk:
                flush()
        return imported, held

    def _insert_chunk(self, conn: sqlite3.Connection, rows: list[tuple], start: int) -> int:
        """Insert rows (id, then event_row's columns) of an import; return how many were new. Raise EventConflict."""
        conn.execute("SAVEPOINT chunk")
        before = conn.total_changes
        conn.executemany(_INSERT_EVENT, rows)
        if conn.total_changes - before == len(rows):
            conn.execute("RELEASE chunk")
            return len(rows)
        conn.execute("ROLLBACK TO chunk")
        conn.execute("RELEASE chunk")
        new = 0
        for position, (id_, *row) in enumerate(rows):
            try:
                new += self._insert(conn, [tuple(row)], id_)[0]
            except EventConflict as exc:
                exc.index = start + position
                raise
        return new

    def import_players(self, records):
        """Store exported VIP flags all or nothing; return (imported, updated, already held)."""
        with self._lock, self._transaction("the import failed") as conn:

            def held_at(keys):
                # By partner: `player_login IN (...)` walks the primary key, where a list of
                # (partner_id, player_login) pairs would be probed one by one.
                logins: dict[str, list[str]] = {}
                for partner_id, player_login in keys:
                    logins.setdefault(partner_id, []).append(player_login)
                found = {}
                for partner_id, names in logins.items():
                    marks = ", ".join("?" * len(names))
                    for player_login, updated_at in conn.execute(
                        "SELECT player_login, updated_at FROM players"
                        f" WHERE partner_id = ? AND player_login IN ({marks})",
                        [partner_id, *names],
                    ):
                        found[partner_id, player_login] = updated_at
                return found

            def write(records):
                conn.executemany(_UPSERT_PLAYER, [(p, login, int(vip), at, by) for p, login, vip, at, by in records])

            return merge_players(records, held_at, write)

    def snapshot(self, destination: str) -> None:
        """Write a consistent copy of the database to destination with SQLite's online backup API."""
        if os.path.exists(destination):
            raise FileExistsError(f"{destination} already exists; choose a new name")
        partial = destination + ".partial"
        source = sqlite3.connect(self.path)
        try:
            copy_database(source, partial)
        except sqlite3.Error as exc:
            raise StorageError(f"the snapshot failed: {exc}") from exc
        finally:
            source.close()
        os.replace(partial, destination)

    def restore(self, snapshot: str) -> tuple[str | None, int, int]:
        """Close the store (its own connections must not count as users) and restore snapshot over its file."""
        self.close()
        return restore(snapshot, self.path)

    def close(self) -> None:
        """Close the connections."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn, _ in readers:
            conn.close()
        self._conn.close()
