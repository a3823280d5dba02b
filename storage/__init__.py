"""The stores: base.py says what every store keeps and promises; sqlite.py and postgres.py each hold one backend's SQL.

open_store picks the backend from the database setting: a postgresql:// URL, else a file path.
"""

from storage.base import (
    MAX_PAGE_BYTES,
    PRIVATE_FILE,
    PRIVATE_FOLDER,
    SCAN_WINDOW,
    SCHEMA_VERSION,
    EventConflict,
    StorageError,
    Store,
    content_key,
    create_private_file,
    dumps,
    format_event,
    loose_modes,
    make_private_folder,
    now_us,
    rfc3339_us,
)

__all__ = [
    "MAX_PAGE_BYTES", "PRIVATE_FILE", "PRIVATE_FOLDER", "SCAN_WINDOW", "SCHEMA_VERSION", "EventConflict", "Store",
    "StorageError", "content_key", "create_private_file", "dumps", "format_event", "is_url", "loose_modes",
    "make_private_folder", "now_us", "open_store", "rfc3339_us",
]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: str) -> bool:
    """Tell whether the database setting names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(URL_SCHEMES)


def open_store(database: str, *, synchronous: str = "FULL", timeout_ms: int = 5000) -> Store:
    """Open the store the database setting names: a PostgreSQL URL, or the path of a SQLite file.

    timeout_ms bounds each wait on the database: SQLite's busy timeout; PostgreSQL's connection,
    pool and statement timeouts. synchronous is SQLite's (PostgreSQL commits are always flushed).
    """
    if is_url(database):
        from storage.postgres import PostgresStore  # psycopg is loaded only by those who use it

        return PostgresStore(database, timeout_ms=timeout_ms)
    from storage.sqlite import SQLiteStore

    return SQLiteStore(database, synchronous=synchronous, busy_timeout_ms=timeout_ms)
