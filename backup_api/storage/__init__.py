"""The stores, and the app's store from its opening to its closing.

base.py says what every store promises; sqlstore.py holds what both backends do alike, and
sqlite.py and postgres.py what each does its own way (layouts.py their tables, side by side);
rows.py names the rows, jsonform.py the stored JSON and its content key; sqlite_files.py checks,
copies and restores a SQLite file whole; files.py keeps files private.

As flaskr's db.py does for its database: init_app(app) says how the app's store is opened,
get_store() opens it on first use and hands it out, close_store(app) closes it.
"""

import os
import threading

from blinker import Namespace
from flask import Flask

from backup_api import record
from backup_api.config import ConfigError, is_url
from backup_api.storage.base import (
    MAX_PAGE_BYTES,
    SCAN_WINDOW,
    SCHEMA_VERSION,
    UPGRADES_FROM,
    EventConflict,
    ImportStopped,
    RecordError,
    StorageError,
    Store,
    WriteOutcomeUnknown,
)
from backup_api.storage.erasure import Receipt
from backup_api.storage.files import (
    PRIVATE_FILE,
    PRIVATE_FOLDER,
    create_private_file,
    loose_modes,
    make_private_folder,
    warn_of_loose_modes,
    write_private_file,
)
from backup_api.storage.jsonform import content_key, dumps
from backup_api.storage.rows import (
    EventRow,
    ExportedEvent,
    FoundEvent,
    ImportedEvent,
    PlayerRecord,
    Revocation,
    StoredEvent,
    VipFlag,
    event_row,
    now_us,
    rfc3339_us,
)

__all__ = [
    "MAX_PAGE_BYTES", "PRIVATE_FILE", "PRIVATE_FOLDER", "SCAN_WINDOW", "SCHEMA_VERSION", "UPGRADES_FROM",
    "EventConflict", "EventRow", "ExportedEvent", "FoundEvent", "ImportedEvent", "ImportStopped", "PlayerRecord",
    "Receipt", "RecordError",
    "Revocation", "StorageError", "Store", "StoredEvent", "VipFlag", "WriteOutcomeUnknown", "close_store",
    "content_key", "create_private_file", "dumps", "event_row", "get_store", "init_app", "is_url", "loose_modes",
    "make_private_folder", "now_us", "open_store", "rfc3339_us", "store_opened", "write_private_file",
]

# Sent with the app as sender and store=the store, once the app's store is open: what else
# watches the store (the metrics' commit observer) hooks itself on here.
store_opened = Namespace().signal("store-opened")


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


def init_app(app: Flask, opener=None) -> None:
    """Give app its store: opener(app) opens it (default: the durable store BACKUP_API_DATABASE names)."""
    app.extensions["backup_api.open_store"] = opener or open_configured


_opening = threading.Lock()


def get_store(app: Flask | None = None) -> Store:
    """Return the app's store (the current app's by default), opening it on first use."""
    if app is None:
        app = record.this_app()
    store = app.extensions.get("store")
    if store is None:
        with _opening:
            store = app.extensions.get("store")
            if store is None:
                store = app.extensions["backup_api.open_store"](app)
                app.extensions["store"] = store
                store_opened.send(app, store=store)
    return store


def close_store(app: Flask) -> None:
    """Close the app's store, if it was opened."""
    store = app.extensions.get("store")
    if store is not None:
        store.close()


def open_configured(app: Flask) -> Store:
    """Open the database BACKUP_API_DATABASE names, creating a SQLite file and its private folder."""
    database = str(app.config["DATABASE"])
    if is_url(database):
        timeout_ms = int(app.config["PG_TIMEOUT_MS"])
    else:
        database = os.path.abspath(database)
        try:
            make_private_folder(os.path.dirname(database))
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of the database {database}: {exc}") from None
        timeout_ms = int(app.config["BUSY_TIMEOUT_MS"])
    try:
        store = open_store(database, synchronous=str(app.config["SYNCHRONOUS"]), timeout_ms=timeout_ms,
                           wal_autocheckpoint=int(app.config["WAL_AUTOCHECKPOINT"]))
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    if not is_url(database):
        warn_of_loose_modes(app.logger, [database, database + "-wal", database + "-shm"])
    if store.kept_copy:
        app.logger.warning("the database %s was upgraded to layout %s; the file as it was is kept as %s",
                           store.name, SCHEMA_VERSION, store.kept_copy)
    return store
