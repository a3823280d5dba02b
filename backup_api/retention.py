"""The retention window (BACKUP_API_RETENTION_DAYS): events older than it are deleted by the server itself, at
its start and then every day, in a thread of its own; `db prune` does the same on demand."""

import threading
import time
from datetime import UTC, datetime

from flask import Flask

from backup_api import metrics, storage

DAY_S = 86_400
# After a prune that failed (the database away), the next try comes sooner than a day.
RETRY_S = 3_600


def cutoff(days: int, now: float | None = None) -> int:
    """The time (microseconds since the epoch) before which events are older than `days` days."""
    return int(((time.time() if now is None else now) - days * DAY_S) * 1_000_000)


def day_start(day: str) -> int:
    """The start (microseconds since the epoch, UTC) of a day YYYY-MM-DD."""
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 1_000_000


def prune(app: Flask, before: int) -> int:
    """Prune the app's store of events received before `before`; count them in the metrics; return how many."""
    pruned = storage.get_store(app).prune(before)
    with app.app_context():
        metrics.pruned(pruned)
    return pruned


class Pruner:
    """The server's own pruning: at start, then every day, until stopped."""

    def __init__(self, app: Flask):
        self._app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-api-retention", daemon=True)

    def start(self) -> "Pruner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        days = self._app.config["RETENTION_DAYS"]
        while not self._stop.is_set():
            wait = DAY_S
            try:
                pruned = prune(self._app, cutoff(days))
                self._app.logger.info("retention: %d events received over %d days ago deleted", pruned, days)
            except storage.StorageError as exc:
                self._app.logger.warning("retention: the prune failed, tried again within the hour: %s", exc)
                wait = RETRY_S
            self._stop.wait(wait)
