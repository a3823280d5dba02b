"""A SQLite file as a whole: its check, a consistent copy of it, and a restore over it.

No store is needed: these work on a path, so that a restore can run with the service stopped.
"""

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from backup_api.storage.base import SCHEMA_VERSION, UPGRADES_FROM, StorageError
from backup_api.storage.files import create_private_file

SQLITE_HEADER = b"SQLite format 3\x00"


def inspect_database(conn: sqlite3.Connection) -> tuple[int, list[str]]:
    """Return an open database's layout (0 without our tables) and what SQLite's integrity_check says (["ok"])."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not ({"events", "players"} | ({"revocations"} if version >= 3 else set())
            | ({"totals"} if version >= 4 else set())) <= tables:
        version = 0
    return version, [message for (message,) in conn.execute("PRAGMA integrity_check(20)")]


def check_database(conn: sqlite3.Connection) -> list[str]:
    """Say what is wrong with an open database, as the service would use it (empty when sound).

    An older layout that the store upgrades when it opens it is sound.
    """
    problems = []
    version, integrity = inspect_database(conn)
    if version != SCHEMA_VERSION and version not in UPGRADES_FROM:
        problems.append(f"layout {version}; this version of the service reads layout {SCHEMA_VERSION}"
                        f" (and upgrades layout {', '.join(map(str, UPGRADES_FROM))})")
    if integrity != ["ok"]:
        problems.append("integrity_check: " + "; ".join(integrity))
    return problems


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """Return how many events and how many flagged players an open database holds."""
    return conn.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM players)").fetchone()


def file_identity(path: str) -> tuple[int, int]:
    """Return the device and inode of the file at path."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def file_gauges(path: str) -> dict[str, tuple[str, float]]:
    """The sizes of a database file and of its write-ahead log, as a store's gauges."""
    sizes = {}
    for name, file, what in (("sqlite_database_bytes", path, "database file"),
                             ("sqlite_wal_bytes", path + "-wal", "write-ahead log (-wal)")):
        try:
            size = os.stat(file).st_size
        except OSError:
            size = 0
        sizes[name] = (f"Size of the SQLite {what}, bytes.", float(size))
    return sizes


def free_bytes(path: str) -> int:
    """The bytes free for this process on the filesystem that holds path."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return st.f_bavail * st.f_frsize


def snapshot(database: str, destination: str) -> None:
    """Write a consistent copy of the database to destination (a new file) with SQLite's online backup API."""
    if os.path.exists(destination):
        raise FileExistsError(f"{destination} already exists; choose a new name")
    partial = destination + ".partial"
    source = sqlite3.connect(database)
    try:
        copy_database(source, partial)
    except sqlite3.Error as exc:
        raise StorageError(f"the snapshot failed: {exc}") from exc
    finally:
        source.close()
    os.replace(partial, destination)


def copy_database(source: sqlite3.Connection, path: str) -> None:
    """Copy an open database into a new private file at path (replacing one an interrupted copy left), on disk.

    One step of SQLite's online backup API (pages=-1): the copy is one read transaction,
    consistent while writers go on. The copy is a single self-contained file, not a WAL database.
    """
    with suppress(FileNotFoundError):
        os.remove(path)
    create_private_file(path)
    target = sqlite3.connect(path)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()
    _fsync(path)


def keep_copy(source: sqlite3.Connection, database: str, label: str) -> str:
    """Copy an open database to a new private file beside it, named by label and the time; return its path."""
    kept = _free_name(f"{database}.{label}-{_stamp()}")
    copy_database(source, kept)
    return kept


def _stamp() -> str:
    """The time now, as the names of the files kept beside a database give it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _open_read_only(path: str) -> sqlite3.Connection:
    """Open an existing SQLite file for reading only; refuse a file that is not one."""
    with open(path, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StorageError(f"{path} is not a SQLite database")
    return sqlite3.connect(Path(os.path.abspath(path)).as_uri() + "?mode=ro", uri=True, isolation_level=None)


def restore(snapshot: str, database: str) -> tuple[str | None, int, int]:
    """Replace the database with a checked copy of snapshot; return (where the old file is kept, events, players).

    Refuses (StorageError) a snapshot that is not a sound database of this layout, and a database
    that another process has open. The file replaced is renamed, never deleted.
    """
    try:
        source = _open_read_only(snapshot)
    except OSError as exc:
        raise StorageError(f"cannot read the snapshot {snapshot}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"{snapshot} is not a SQLite database: {exc}") from exc
    try:
        problems = check_database(source)
        if problems:
            raise StorageError(f"the snapshot {snapshot} cannot be restored: " + "; ".join(problems))
        events, players = counts(source)
        incoming = database + ".restoring"
        with _exclusively(database):
            # A copy through SQLite, not of the bytes: it holds what a -wal beside the snapshot holds too.
            copy_database(source, incoming)
    except sqlite3.Error as exc:
        raise StorageError(f"the restore failed: {exc}") from exc
    finally:
        source.close()
    kept = None
    if os.path.exists(database):
        kept = _free_name(f"{database}.replaced-{_stamp()}")
        os.rename(database, kept)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(database + suffix):
                os.rename(database + suffix, kept + suffix)
    os.replace(incoming, database)
    _fsync(os.path.dirname(os.path.abspath(database)))
    return kept, events, players


@contextmanager
def _exclusively(database: str) -> Iterator[None]:
    """Hold the database so that no other process can use it; StorageError if one already does.

    In WAL mode every connection holds a shared lock while it is open: an exclusive locking
    mode set before the first read cannot be had while any other process has the file open.
    Its -wal is folded into the file on the way out.
    """
    if not os.path.exists(database):
        yield
        return
    conn = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StorageError(
            f"the database {database} is in use by another process (a running server?): stop it first ({exc})"
        ) from None
    try:
        yield
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _free_name(path: str) -> str:
    """Return path, or path with a number added, whichever no file has."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate


def _fsync(path: str) -> None:
    """Flush a file or folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
