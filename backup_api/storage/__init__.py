"""The stores: base.py says what every store keeps and promises; sqlite.py and postgres.py each hold one
backend's SQL; sqlite_files.py checks, copies and restores a SQLite file whole; files.py keeps files private.

open_store picks the backend from the database setting: a postgresql:// URL, else a file path.
"""

from backup_api.storage.base import (
    MAX_PAGE_BYTES,
    SCAN_WINDOW,
    SCHEMA_VERSION,
    EventConflict,
    StorageError,
    Store,
    WriteOutcomeUnknown,
    content_key,
    dumps,
    format_event,
    now_us,
    rfc3339_us,
)
from backup_api.storage.files import PRIVATE_FILE, PRIVATE_FOLDER, create_private_file, loose_modes, make_private_folder

__all__ = [
    "MAX_PAGE_BYTES", "PRIVATE_FILE", "PRIVATE_FOLDER", "SCAN_WINDOW", "SCHEMA_VERSION", "EventConflict", "Store",
    "StorageError", "WriteOutcomeUnknown", "content_key", "create_private_file", "dumps", "format_event", "is_url",
    "loose_modes", "make_private_folder", "now_us", "open_store", "rfc3339_us",
]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: str) -> bool:
    """Tell whether the database setting names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(URL_SCHEMES)


def open_store(
    database: str, *, synchronous: str = "FULL", timeout_ms: int = 5000, wal_autocheckpoint: int = 1000
) -> Store:
    """Open the store the database setting names: a PostgreSQL URL, or the path of a SQLite file.

    timeout_ms bounds each wait on the database: SQLite's busy timeout; PostgreSQL's connection,
    pool and statement timeouts. synchronous and wal_autocheckpoint are SQLite's (PostgreSQL commits
    are always flushed).
    """
    if is_url(database):
        from backup_api.storage.postgres import PostgresStore  # psycopg is loaded only by those who use it

        return PostgresStore(database, timeout_ms=timeout_ms)
    from backup_api.storage.sqlite import SQLiteStore

    return SQLiteStore(database, synchronous=synchronous, busy_timeout_ms=timeout_ms,
                       wal_autocheckpoint=wal_autocheckpoint)
