"""The manual's secret rotation for several processes on PostgreSQL, followed under load: nothing refused
until the old secret is retired, the old tokens refused after."""

import threading
import time

import pytest

from backup_api import create_app, tokens
from tests.helpers import make_token, valid_event
from tests.server import Server

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


OLD = "the-secret-every-process-signs-with-before-the-rotation-0123"
NEW = "the-secret-every-process-signs-with-after-the-rotation-45678"


def _minted(secret: str) -> str:
    """A token as `token issue` mints it under BACKUP_API_JWT_SECRET=secret (its kid names the key)."""
    app = create_app({"TESTING": True, "DATABASE": "unused.db", "JWT_SECRET": secret})
    with app.app_context():
        return tokens.issue(["casino_alpha"], 1)


class Fleet:
    """Server processes on one database, restarted one at a time, and a client posting to them meanwhile."""

    def __init__(self, url: str, names=("a", "b")):
        self.url = url
        self.servers = {name: self._start(OLD, None) for name in names}
        self.tokens = [_minted(OLD), make_token(secret=OLD)]  # by `token issue`, and minted elsewhere
        self.answers: list[tuple[int, int]] = []  # (status, index of the token sent)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = threading.Thread(target=self._post, daemon=True)
        self._client.start()

    def _start(self, secret: str, previous: str | None) -> Server:
        server = Server(self.url, secret)  # type: ignore[arg-type]
        if previous:
            server.env["BACKUP_API_JWT_PREVIOUS_SECRETS"] = previous
        return server.start()

    def restart(self, name: str, secret: str, previous: str | None) -> None:
        """Stop one process cleanly and start it with new settings (its siblings serve meanwhile)."""
        with self._lock:
            server = self.servers.pop(name)
        server.stop()
        started = self._start(secret, previous)
        with self._lock:
            self.servers[name] = started

    def _post(self) -> None:
        n = 0
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                servers = list(self.servers.values())
                index = n % len(self.tokens)
                token = self.tokens[index]
            server = servers[n % len(servers)]
            n += 1
            try:
                status = server.request("POST", "/player-events", valid_event("bet", n=n), token=token, timeout=10)[0]
            except OSError:  # that process stopped meanwhile: a load balancer sends the client elsewhere
                continue
            self.answers.append((status, index))

    def stop(self) -> None:
        self._stop.set()
        self._client.join(timeout=30)
        for server in self.servers.values():
            server.stop()


def test_rotating_the_secret_across_processes_refuses_nothing_until_the_old_one_is_retired(postgres_url):
    fleet = Fleet(postgres_url)
    try:
        # 1. Every process, in turn, verifies the new secret too; none signs with it yet.
        for name in ("a", "b"):
            fleet.restart(name, OLD, NEW)
        # 2. Every process, in turn, signs with the new one; the old one still verifies.
        for name in ("a", "b"):
            fleet.restart(name, NEW, OLD)
        with fleet._lock:
            fleet.tokens.append(_minted(NEW))  # the partners' new tokens
        time.sleep(1)
        before_retiring = list(fleet.answers)
        # 3. Once the old tokens are replaced: every process, in turn, without the old secret.
        for name in ("a", "b"):
            fleet.restart(name, NEW, None)
    finally:
        fleet.stop()
    assert len(before_retiring) > 50 and {status for status, _ in before_retiring} == {200}, before_retiring
    assert {index for _, index in before_retiring} == {0, 1, 2}  # every token was used
    server = Server(postgres_url, NEW).start()  # a process as step 3 left them
    try:
        statuses = [server.request("POST", "/player-events", valid_event("bet", n=f"after{i}"), token=token)[0]
                    for i, token in enumerate(fleet.tokens)]
    finally:
        server.stop()
    assert statuses == [401, 401, 200]  # the old tokens refused, the new one taken
