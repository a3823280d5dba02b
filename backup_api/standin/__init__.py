"""The stand-in: the service as the aggregator's stand-in in integration tests, keeping nothing.

`serve --stand-in` (or BACKUP_API_STAND_IN=1) stores into a SQLite file in a private temporary
folder, without fsync, deleted when the server stops; the routes are the real ones. A token's `ns`
claim gives it a world of its own (state.py). Routes under /_stand-in/ exist in this mode only,
each for the partners its token owns: reset, faults and the journal of the requests made for them.

Everything of the mode is here: its worlds and their store (state.py), its faults (faults.py), its
journal (journal.py), its routes and hooks (routes.py), its waitress channel (channel.py), which
the server is handed as a parameter.
"""

import atexit
import os
import secrets
import shutil
import tempfile

from flask import Flask

from backup_api import server, storage
from backup_api.standin import document
from backup_api.standin.channel import DROP_CONNECTION, StandInChannel
from backup_api.standin.faults import DropConnection, InjectedFault
from backup_api.standin.journal import KEPT_BODY_BYTES, KEPT_PARTNERS, KEPT_PER_PARTNER, KEPT_UNVERIFIED
from backup_api.standin.routes import KEPT_REJECTIONS, bp, drop, injected, journal_request, keep_body
from backup_api.standin.state import StandInStore, State, Worlds
from backup_api.storage.sqlite import SQLiteStore

# Descriptors a world holds open, kept from the connections' share: its file, -wal and -shm for the
# writer, and the file and -wal of its one reader (a world's reads take turns), five; six are
# counted, for the worlds kept, the default one and the one opened ahead, and two for each server
# thread (a world's files opened again as it is forgotten).
READERS = 1
DESCRIPTORS_PER_WORLD = 6

__all__ = ["DROP_CONNECTION", "KEPT_BODY_BYTES", "KEPT_PARTNERS", "KEPT_PER_PARTNER", "KEPT_REJECTIONS",
           "KEPT_UNVERIFIED", "StandInChannel", "init_app"]


def init_app(app: Flask) -> None:
    """Make app the stand-in: an ephemeral store, a secret of its own unless one is set, its routes and hooks."""
    app.config["STAND_IN"] = True
    kept = int(app.config["STAND_IN_NAMESPACES"])
    app.config["RESERVED_DESCRIPTORS"] = DESCRIPTORS_PER_WORLD * (kept + 2) + 2 * server.THREADS
    configured = app.config["JWT_SECRET"]
    app.config["JWT_SECRET_KEY"] = configured or secrets.token_urlsafe(48)
    state = app.extensions["stand_in"] = State(int(app.config["STAND_IN_JOURNAL_BYTES"]),
                                               int(app.config["STAND_IN_FAULTS"]))
    storage.init_app(app, lambda app: _open_store(app, state))
    app.register_blueprint(bp)
    app.extensions["openapi"] = document.extend(app.extensions["openapi"])
    app.before_request(keep_body)
    app.after_request(journal_request)
    app.register_error_handler(DropConnection, drop)
    app.register_error_handler(InjectedFault, injected)
    if app.config["LOG_LEVEL"] is None:  # not set: a test suite's output wants no line per request
        app.logger.setLevel("WARNING")
    app.logger.warning(
        "STAND-IN: this server keeps nothing (a temporary database, deleted when it stops) and answers"
        " /_stand-in/ routes; never point real partners at it"
    )
    if app.extensions.get("settings", {}).get("DATABASE") == "environment":
        app.logger.warning("STAND-IN: BACKUP_API_DATABASE is set (%s), and a stand-in keeps nothing: it will not"
                           " touch that file", app.config["DATABASE"])
    if configured is None:
        app.logger.warning("STAND-IN: no BACKUP_API_JWT_SECRET set, so tokens are signed with a random secret"
                           " nobody else knows: set one to mint tokens for your tests")


FOLDER_PREFIX = "backup-api-stand-in-"
# In each stand-in's folder: the process that made it, so that a later start can tell it was left behind.
OWNER_FILE = "owner-pid"


def remove_left_behind(parent: str) -> list[str]:
    """Remove the stand-in folders in parent whose process is gone (killed with SIGKILL, which no atexit
    survives); return them. Only folders that name their process, and only this user's."""
    removed = []
    for name in os.listdir(parent):
        folder = os.path.join(parent, name)
        if not name.startswith(FOLDER_PREFIX) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            if os.stat(folder).st_uid != os.getuid():
                continue
            with open(os.path.join(folder, OWNER_FILE), encoding="ascii") as owner:
                pid = int(owner.read().strip())
            os.kill(pid, 0)  # alive (or another user's process of that number): kept
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (OSError, ValueError):  # no owner file (yet), unreadable, another user's: left alone
            continue
    return removed


def _open_store(app: Flask, state: State) -> StandInStore:
    """Open the worlds, in a private temporary folder deleted when the store closes."""
    for folder in remove_left_behind(tempfile.gettempdir()):
        app.logger.info("STAND-IN: removed %s, left behind by a stand-in that was killed", folder)
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # mode 0700
    atexit.register(shutil.rmtree, folder, True)  # should the server not stop cleanly
    with open(os.path.join(folder, OWNER_FILE), "w", encoding="ascii") as owner:
        owner.write(str(os.getpid()))
    busy_timeout_ms = int(app.config["BUSY_TIMEOUT_MS"])

    def open_world(path: str) -> SQLiteStore:
        return SQLiteStore(path, synchronous="OFF", busy_timeout_ms=busy_timeout_ms, readers=READERS)

    state.open(Worlds(folder, open_world, state.forget_namespace, int(app.config["STAND_IN_NAMESPACES"])))
    return StandInStore(state)
