"""Whether the service can take writes now: what /healthz answers, `backup_api_store_writable`
reports and a stop's drain says.

The check is the store's ping (the database answers and would take a write) and the free space
of a database on this machine; it runs in a thread of its own, one at a time, and is waited for
ANSWER_WAIT_S at most, so that /healthz answers within a second whatever the database does (a
lock held, a stalled server): a monitor's check times out after a few seconds.
"""

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Flask, current_app

from backup_api import storage

# The longest a check waits for the locks a write takes (a piece of an import holds them less).
LOCK_WAIT_S = 0.8
# The longest /healthz, or a scrape, waits for the check's answer.
ANSWER_WAIT_S = 0.95


class Health:
    """The app's check of its store, one at a time; and whether the server is stopping."""

    def __init__(self, app: Flask):
        self._app = app
        self._lock = threading.Lock()
        self._running: Future | None = None
        #: Set on SIGTERM while the server drains (BACKUP_API_DRAIN_SECONDS): /healthz says 503.
        self.stopping = threading.Event()

    def problem(self) -> str | None:
        """Why the store cannot take writes now, or None when it can."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(target=self._check, args=(self._running,), name="backup-api-health",
                                 daemon=True).start()
            running = self._running
        try:
            return running.result(timeout=ANSWER_WAIT_S)
        except FutureTimeout:
            return f"the database did not answer within {ANSWER_WAIT_S} s"

    def _check(self, answer: Future) -> None:
        try:
            store = storage.get_store(self._app)
            store.ping(LOCK_WAIT_S)
            free, least = store.free_bytes(), self._app.config["MIN_FREE_MB"] * 1024 * 1024
            if free is not None and free < least:
                answer.set_result(f"the disk is nearly full: {free / 1048576:.1f} MiB free, less than"
                                  f" BACKUP_API_MIN_FREE_MB ({self._app.config['MIN_FREE_MB']} MiB); writes will"
                                  " fail once it is full")
                return
            answer.set_result(None)
        except storage.StorageError as exc:
            answer.set_result(f"the backup store cannot take writes: {exc}")
        except Exception as exc:  # noqa: BLE001 (any failure of the check is an answer, never a hang)
            answer.set_result(f"the backup store's check failed: {exc!r}")


def init_app(app: Flask) -> None:
    app.extensions["health"] = Health(app)


def current() -> Health:
    """The current app's Health."""
    return current_app.extensions["health"]
