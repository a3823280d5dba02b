"""The SQLite store: one file, written by one process (the default, embedded backend)."""

import functools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlite_utils

from backup_api.storage import sqlite_files
from backup_api.storage.base import (
    SCHEMA_VERSION,
    UPGRADES_FROM,
    EventConflict,
    StorageError,
    WriteRequest,
    layout_refused,
)
from backup_api.storage.files import create_private_file
from backup_api.storage.importing import PLAYER_SELECT, attached_staging, copy_events
from backup_api.storage.jsonform import parsed_content_key
from backup_api.storage.layouts import (
    create_sqlite_layout_4,
    create_sqlite_layout_5,
    create_sqlite_revocations,
    create_sqlite_tables,
)
from backup_api.storage.rows import SQLITE_COLUMNS, EventRow
from backup_api.storage.sqlstore import SQLStore
from backup_api.storage.statements import Dialect, Statements

# Raw SQL: the UNIQUE indexes decide, and the count of changes says whether they did. The columns
# of EventRow but event_type, which SQLite reads from the event itself.
_COLUMNS = ", ".join(EventRow._fields[:SQLITE_COLUMNS])
_INSERT_EVENT = f"INSERT INTO events (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Rows a group commit sends in one INSERT statement (seven values each).
GROUP_ROWS = 64
# How much shorter than a write's wait left its connection's busy timeout may be (set again only past it).
BUSY_SLACK_MS = 100
# Pooled read-only connections kept.
MAX_READERS = 8

DIALECT = Dialect(mark="?", event_text="event", event_type="json_extract(event, '$.event_type')", by_bytes="",
                  window="id, received_at, player_login, event")


class _Held(Exception):
    """A row to insert as new is held already."""


@functools.cache
def _insert_rows(count: int) -> str:
    """The INSERT of count new rows, their ids given by SQLite."""
    return f"INSERT INTO events ({_COLUMNS}) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * count)


class SQLiteStore(SQLStore):
    """One SQLite database, shared by all threads of the process."""

    sql = Statements(DIALECT)
    # After each piece of an import, longer than the 100 ms that SQLite's busy handler sleeps at
    # most between two tries: a writer waiting in another process gets the lock in that time.
    IMPORT_PAUSE_S = 0.15

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
                 wal_autocheckpoint: int = 1000, readers: int = MAX_READERS):
        """Open (and create when missing) the database at path; read on at most `readers` connections at once."""
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):  # OFF: the stand-in only
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}")
        super().__init__()
        self.path = self.name = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout_ms)
        self.write_wait_s = self._busy_timeout_ms / 1000
        # Pages of -wal after which a commit folds it into the file (SQLite's default, 1000); 0
        # never: a tool that replicates the -wal (Litestream) does it instead.
        self._wal_autocheckpoint = int(wal_autocheckpoint)
        # One connection behind the write lock: SQLite serialises writers anyway, and a single
        # writer never meets "database is locked" from its own threads. Reads use a pool of
        # read-only connections, which never wait for the write lock.
        self._readers_lock = threading.Lock()
        self._readers: list[tuple[sqlite3.Connection, tuple[int, int]]] = []
        # Readers past the bound wait for one: SQLite keeps the descriptor of a connection closed
        # while another holds a lock on the file open until the locks are gone, so readers opened
        # for a burst and closed would hold their descriptors on regardless.
        self._reader_slots = threading.BoundedSemaphore(readers)
        self._kept_readers = readers
        # The disk's free bytes when a write last failed for want of room, until one succeeds.
        self._full_at: int | None = None
        self._busy_set_ms: int | None = None  # the writing connection's busy timeout, as last set
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
            self._busy_set_ms = None
            self._wait_at_most(self._busy_timeout_ms)
            # A new file gives the space of deleted events back (a prune's incremental vacuum); an older
            # one keeps its mode until a VACUUM.
            self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self.db.enable_wal()
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            # What a delete (an erasure) removes is overwritten with zeros, not left in free space.
            self._conn.execute("PRAGMA secure_delete = ON")
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_autocheckpoint}")
            self._create_schema()
            version = self._layout()
            if version != SCHEMA_VERSION:
                raise layout_refused(self.path, version, "move it aside (it stays a readable SQLite file) and start"
                                     " a new one")
            self._identity = sqlite_files.file_identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc

    def _layout(self) -> int:
        """The layout stamped in the file."""
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def _check_file(self) -> None:
        """Make sure writes go to the file at self.path, not to one deleted or replaced.

        SQLite keeps writing to a deleted file's inode, and everything written there is lost
        at exit: so a missing file is a StorageError, and a file replaced (by a restored
        snapshot, say) is opened afresh.
        """
        try:
            identity = sqlite_files.file_identity(self.path)
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
        """Create the tables and indexes of a new database, or upgrade an older layout (one transaction each).

        An upgrade keeps a copy of the file as it was beside it first, and names it in kept_copy.
        """
        if self.db["events"].exists():
            if self._layout() not in UPGRADES_FROM:
                return
            # Before an upgrade, the file as it was is kept beside it (a copy, made while others may write).
            self.kept_copy = sqlite_files.keep_copy(self._conn, self.path, f"layout-{self._layout()}")
        self._conn.execute("BEGIN IMMEDIATE")  # sqlite-utils' statements nest in it as savepoints
        try:
            # Asked again under the lock: another process may have done it meanwhile.
            if not self.db["events"].exists():
                create_sqlite_tables(self.db)
                self._fill_layouts_after(self._conn, 0)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif (layout := self._layout()) in UPGRADES_FROM:
                if layout == 2:
                    create_sqlite_revocations(self.db)
                if layout < 4:
                    create_sqlite_layout_4(self.db)
                create_sqlite_layout_5(self.db)
                self._fill_layouts_after(self._conn, layout)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    # The hooks of SQLStore ------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Lend a read-only connection of the pool, so that reads never wait for the write lock.

        A connection opened on a file since replaced (a restored snapshot) is closed, not reused.
        """
        try:
            identity = sqlite_files.file_identity(self.path)
        except FileNotFoundError:
            raise StorageError(f"the database file {self.path} is missing") from None
        if identity != self._identity:
            # A file replaced: the writer opens it first, to check its layout and upgrade an older one.
            with self._connected("the database could not be opened"):
                pass
        if not self._reader_slots.acquire(timeout=self.write_wait_s):
            raise StorageError(f"the database could not be read: every reader stayed busy for {self.write_wait_s:g} s")
        try:
            with self._reader(identity) as conn:
                yield conn
        finally:
            self._reader_slots.release()

    @contextmanager
    def _reader(self, identity) -> Iterator[sqlite3.Connection]:
        """Lend a read-only connection of the pool on the file of identity (opened when none is idle)."""
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
                if len(self._readers) < self._kept_readers:
                    self._readers.append((conn, identity))
                    conn = None
            if conn is not None:
                conn.close()

    @contextmanager
    def _snapshot(self, conn):
        """One read transaction: the connection's release rolls it back."""
        conn.execute("BEGIN")
        yield

    @contextmanager
    def _stream(self, conn, sql, params, batch):
        """The rows of a query, as SQLite steps through them."""
        cursor = conn.execute(sql, params)
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def _connected(self, failure: str, wait_s: float | None = None) -> Iterator[sqlite3.Connection]:
        """Lend the writing connection, under the write lock, on the file at self.path."""
        with self._write_turn(wait_s), self._guarded(failure, begin=False, writes=False) as conn:
            yield conn

    @contextmanager
    def _writing(self, failure: str) -> Iterator[sqlite3.Connection]:
        """Lend the writing connection in a write transaction, under the write lock."""
        with self._write_turn(), self._guarded(failure) as conn:
            yield conn

    @contextmanager
    def _guarded(self, failure: str, begin: bool = True, writes: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a write transaction (the caller holds the lock); SQLite failures become StorageError.

        begin False: the caller runs one statement, which SQLite makes a transaction of its own.
        writes False: it writes nothing (a check), so its success says nothing of the disk.
        """
        try:
            self._check_file()
            self._wait_at_most(self._remaining_ms())
            if begin:
                self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn
            if begin:
                self._conn.execute("COMMIT")
            if writes:
                self._full_at = None  # a write went through: the disk took it
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    self._full_at = sqlite_files.free_bytes(self.path)  # until the disk has more room than this
                raise StorageError(f"{failure}: {exc}") from exc
            raise

    def _wait_at_most(self, wait_ms: int) -> None:
        """Have the writing connection wait for another process's lock wait_ms at most, and BUSY_SLACK_MS less at
        least: the PRAGMA is run again only when the wait left falls below the one set (or far above it), not
        for every write (a statement each write paid for, issue 41)."""
        if self._busy_set_ms is None or not wait_ms - BUSY_SLACK_MS <= self._busy_set_ms <= wait_ms:
            self._conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
            self._busy_set_ms = wait_ms

    def _check_writable(self, conn: sqlite3.Connection, wait_s: float) -> None:
        """Refuse (StorageError) while writes would fail: the disk full since a write failed, or the lock held.

        Cheap enough for a poll every second: a look at the disk's free space, and the write lock
        taken and let go (BEGIN IMMEDIATE, ROLLBACK: nothing written, no fsync). Another process
        holding that lock past wait_s (the turn's, set by _guarded) makes it fail as a write would.
        """
        if self._full_at is not None:
            if sqlite_files.free_bytes(self.path) <= self._full_at:
                raise StorageError("the disk is full: writes fail until room is made")
            self._full_at = None  # room was made: the next write will tell
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")

    def _rollback(self) -> None:
        """Roll back the open transaction, if the connection still can."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; its transaction was never committed

    # Writing ----------------------------------------------------------------------------

    def _commit_group(self, group: list[WriteRequest]) -> None:
        """Write every request of group in one transaction; undo a request that conflicts, alone."""
        if self._insert_new(group):
            for request in group:
                request.new = [True] * len(request.rows)
            return
        # Some row is held already: each request on its own, to tell which rows were new and
        # which request conflicts (a savepoint undoes that one alone).
        with self._guarded("the events could not be stored") as conn:
            for request in group:
                conn.execute("SAVEPOINT request")
                try:
                    request.new = [self._insert(conn, row) for row in request.rows]
                except EventConflict as exc:
                    conn.execute("ROLLBACK TO request")
                    request.error = exc
                conn.execute("RELEASE request")

    def _insert_new(self, group: list[WriteRequest]) -> bool:
        """Insert the rows of group all or nothing, if none is held already; tell whether they were.

        The common case, every event new, in as few statements as can be: each one gives the GIL
        up and waits to take it back while the group's other requests wait for the commit, and
        under load that wait, not SQLite, was most of a commit's time. Up to GROUP_ROWS rows are one
        INSERT, its own transaction (the totals count them later: SQLStore.count_pending); more,
        GROUP_ROWS to a statement in one transaction. A row held already (or twice in rows) fails
        its statement, and nothing is kept.
        """
        rows = [row for request in group for row in request.rows]
        try:
            with self._guarded("the events could not be stored", begin=len(rows) > GROUP_ROWS) as conn:
                for start in range(0, len(rows), GROUP_ROWS):
                    chunk = rows[start : start + GROUP_ROWS]
                    values = [value for row in chunk for value in row[:SQLITE_COLUMNS]]
                    try:
                        conn.execute(_insert_rows(len(chunk)), values)
                    except sqlite3.IntegrityError:
                        raise _Held from None
        except _Held:
            return False
        return True

    def _insert(self, conn: sqlite3.Connection, row: EventRow, id_: int | None = None) -> bool:
        """Insert one row (with id id_, when given); say whether it was new. Raise EventConflict."""
        # Raw SQL: the UNIQUE indexes decide, and rowcount says whether they did.
        if conn.execute(_INSERT_EVENT, (id_, *row[:SQLITE_COLUMNS])).rowcount == 1:
            return True
        if row.event_id is not None:
            # Only on a resend or a conflict, both rare: so no content key is kept for these events.
            (held,) = conn.execute(
                "SELECT event FROM events WHERE partner_id = ? AND event_id = ?", (row.partner_id, row.event_id)
            ).fetchone()
            if held != row.event and parsed_content_key(held) != parsed_content_key(row.event):
                raise EventConflict(row.partner_id, row.event_id)
        return False

    def _staging(self, columns):
        """The staging table, attached to the writing connection: a chunk then moves in one statement."""
        return attached_staging(self._conn, columns)

    def _move_chunk(self, conn, staged, after, keep_ids):
        """Copy a chunk of staged events by one INSERT ... SELECT; a chunk where some row is held goes row by row."""
        conn.execute("SAVEPOINT chunk")
        count = min(self.IMPORT_CHUNK, staged.count - after)
        if copy_events(conn, staged, after, self.IMPORT_CHUNK, keep_ids) == count:
            conn.execute("RELEASE chunk")
            return [True] * count
        conn.execute("ROLLBACK TO chunk")
        conn.execute("RELEASE chunk")
        new = []
        for position, (id_, *row) in enumerate(staged.records(after, self.IMPORT_CHUNK)):
            try:
                new.append(self._insert(conn, EventRow._make(row), id_ if keep_ids else None))
            except EventConflict as exc:
                exc.index = position
                raise
        return new

    def _flag_selects(self, conn, staged, after):
        """One SELECT from the staging table, attached to the writing connection: SQLite writes its rows one by one."""
        yield staged.select(PLAYER_SELECT), (after, after + self.IMPORT_CHUNK)

    def _held_texts(self, conn, keys):
        """Return the text of each event held of keys, (partner_id, event_id) pairs: a lookup in the index each."""
        rows = ", ".join(["(?, ?)"] * len(keys))
        return {(partner_id, event_id): text for partner_id, event_id, text in conn.execute(
            f"WITH k (p, e) AS (VALUES {rows})"
            " SELECT p, e, event FROM k JOIN events ON partner_id = p AND event_id = e",
            [value for key in keys for value in key])}

    def _after_prune(self):
        """Give the free pages back to the file system, in a file made with incremental auto-vacuum (layout 4's
        new files); then fold the -wal in, as after an erasure."""
        with self._connected("the vacuum after the prune failed") as conn:
            # executescript steps the pragma to its end: one step of execute() frees one page.
            conn.executescript("PRAGMA incremental_vacuum")
        self._after_erasure()

    def _after_erasure(self):
        """Fold the -wal into the file and empty it: the old copies of the erased pages go with it."""
        with self._connected("the checkpoint after the erasure failed") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def free_bytes(self):
        """The bytes free on the database's filesystem."""
        return sqlite_files.free_bytes(self.path)

    def gauges(self):
        """The sizes of the database file and of its write-ahead log."""
        return sqlite_files.file_gauges(self.path)

    # The file as a whole ----------------------------------------------------------------

    def check(self):
        """Return the layout, what integrity_check says (["ok"] when sound), and the events and players held."""
        with self._reading() as conn:
            layout, integrity = sqlite_files.inspect_database(conn)
            events, players = sqlite_files.counts(conn)
        return layout, integrity, events, players

    def snapshot(self, destination: str) -> None:
        """Write a consistent copy of the database to destination with SQLite's online backup API."""
        sqlite_files.snapshot(self.path, destination)

    def restore(self, snapshot: str) -> tuple[str | None, int, int]:
        """Close the store (its own connections must not count as users) and restore snapshot over its file."""
        self.close()
        return sqlite_files.restore(snapshot, self.path)

    def close(self) -> None:
        """Close the connections."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn, _ in readers:
            conn.close()
        self._conn.close()
