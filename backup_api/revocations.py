"""Revoked tokens: this process's copy of the store's revocations, read again every few seconds.

`token revoke` writes a revocation to the store, which every server process on that database
reads: each keeps the whole list in memory and reads it again once REFRESH_SECONDS have passed,
in the request that finds it stale (the others meanwhile use the copy they have). So a revoked
token is refused everywhere within REFRESH_SECONDS and one query, without a query per request.

A revocation by jti refuses that token; one by holder (sub) refuses every token of the holder
issued up to the revocation, and those without an `iat` claim (whose age nobody knows).
"""

import threading
import time

from flask import Flask

from backup_api.storage import StorageError, get_store

# How old this process's copy may get before a request reads the list again.
REFRESH_SECONDS = 2.0
# After a failed read, how long the old copy serves before the next attempt.
RETRY_SECONDS = 1.0


class Revocations:
    """The revocations of one app's store, as last read."""

    def __init__(self, app: Flask):
        self._app = app
        self._jtis: frozenset[str] = frozenset()
        self._subs: dict[str, float] = {}  # holder: revoked at, in seconds
        self._read_at: float | None = None  # time.monotonic() of the last read, None before the first
        self._due = 0.0  # time.monotonic() from which the copy is stale
        self._lock = threading.Lock()  # held by the one thread reading the list again

    def revoked(self, claims: dict) -> bool:
        """Tell whether the token with these claims (its signature verified, the claims not yet checked) is revoked."""
        if time.monotonic() >= self._due:
            self._refresh()
        jti, sub = claims.get("jti"), claims.get("sub")
        if isinstance(jti, str) and jti in self._jtis:
            return True
        revoked_at = self._subs.get(sub) if isinstance(sub, str) else None
        if revoked_at is None:
            return False
        issued_at = claims.get("iat")
        return not isinstance(issued_at, (int, float)) or issued_at <= revoked_at

    def _refresh(self) -> None:
        """Read the list again: one thread reads, the others go on with the copy they have.

        Before the first read every thread waits for it, and a failure is a StorageError (the
        service answers 503): with no list, no token can be told apart.
        """
        first = self._read_at is None
        if not self._lock.acquire(blocking=first):
            return
        try:
            if time.monotonic() < self._due:
                return  # another thread read it while this one waited
            try:
                listed = get_store(self._app).revocations()
            except StorageError as exc:
                if self._read_at is None:  # the first read
                    raise
                self._app.logger.warning("the revocations could not be read again; the copy of %.0f s ago serves"
                                         " meanwhile: %s", time.monotonic() - self._read_at, exc)
                self._due = time.monotonic() + RETRY_SECONDS
                return
            self._jtis = frozenset(value for kind, value, _ in listed if kind == "jti")
            self._subs = {value: revoked_at / 1e6 for kind, value, revoked_at in listed if kind == "sub"}
            self._read_at = time.monotonic()
            self._due = self._read_at + REFRESH_SECONDS
        finally:
            self._lock.release()


def init_app(app: Flask) -> Revocations:
    """Give app its copy of the revocations (read on the first request that shows a token), and return it."""
    app.extensions["revocations"] = revoked = Revocations(app)
    return revoked
