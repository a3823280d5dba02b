"""The pytest plugin: the `backup_api` fixture, the service as the aggregator's stand-in, a world of its own
for each test.

Installed with the package (the pytest11 entry point `backup_api`), so installing the wheel is all a
test suite needs. The server is the real one (waitress, the real routes) in stand-in mode, started
once per session on a free port of 127.0.0.1 in a thread of the test process; or, with
BACKUP_API_STAND_IN_URL and BACKUP_API_JWT_SECRET set, one already running (shared by pytest-xdist's
workers, say). Each test gets a namespace of its own (the tokens it mints carry it as their `ns`
claim), so it starts with an empty world whatever other tests do at the same time, on the same
partner_ids.
"""

import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime

import jwt
import pytest


class StandIn:
    """The running stand-in, as a test sees it: its URL, tokens for its namespace, and what it holds there."""

    def __init__(self, url: str, secret: str, namespace: str | None = None, app=None):
        #: The base URL, e.g. http://127.0.0.1:40123 (no trailing slash).
        self.url = url
        #: The secret tokens are signed with (HS256), for code that mints its own.
        self.secret = secret
        #: The test's namespace: the `ns` claim of the tokens minted here (None: the default world).
        self.namespace = namespace
        #: The app, when the stand-in runs in this process.
        self.app = app
        self._partners: set[str] = set()

    def token(self, *partner_ids: str, sub: str | None = None, days: int = 1, scopes: list[str] | None = None,
              _helper: bool = False) -> str:
        """A bearer token owning partner_ids (held by sub, default the first of them), in the test's namespace.

        scopes: what it may do, of events:write, events:read, vip:write, vip:read (default: all).
        """
        if not partner_ids or not all(partner_ids):
            raise ValueError("a token owns at least one partner_id, none of them empty")
        from backup_api.tokens import scope_claim  # here: a session that never mints one never loads it

        scope = None if scopes is None else scope_claim(scopes)
        self._partners.update(partner_ids)
        now = int(time.time())
        claims = {"sub": sub or partner_ids[0], "partners": list(partner_ids), "iat": now, "exp": now + days * 86400,
                  "jti": uuid.uuid4().hex}
        if scope is not None:
            claims["scope"] = scope
        if self.namespace is not None:
            claims["ns"] = self.namespace
        if _helper:  # this fixture's own reads: not journaled, met by no fault, counted by no limit
            claims["stand_in_helper"] = True
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def request(self, method: str, path: str, body=None, token: str | None = None, partner_id: str | None = None):
        """Send one request (body as JSON); return (status, parsed JSON answer). partner_id: a token owning it."""
        if token is None and partner_id is not None:
            token = self.token(partner_id)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        call = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(call, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    # Every helper that lists answers a list, the oldest first unless newest_first: a count is its len().

    def events(self, partner_id: str, newest_first: bool = False) -> list[dict]:
        """Every stored event of partner_id as GET /player-events gives them (each page followed), oldest first."""
        found, query = [], {"partner_id": partner_id, "limit": 1000}
        while True:
            page = self._get("/player-events?" + urllib.parse.urlencode(query), partner_id)
            found.extend(page["events"])
            if page["next"] is None:
                return found[::-1] if newest_first else found
            query["after"] = page["next"]

    def vip(self, partner_id: str, player_login: str) -> dict:
        """A player's VIP flag as GET /users/{id}/player/{player_id}/vip gives it."""
        quote = urllib.parse.quote
        return self._get(f"/users/{quote(partner_id, safe='')}/player/{quote(player_login, safe='')}/vip",
                         partner_id)

    def requests(self, partner_id: str, newest_first: bool = False, **filters) -> list[dict]:
        """The requests made for partner_id that match filters, oldest first: every one kept, or `limit` of them.

        filters: method, path, status, outcome (stored, duplicate, conflict, refused), event_type,
        player_login, event_id, limit. So a test verifies what its code sent:
        `assert len(backup_api.requests("casino_alpha", method="POST", outcome="stored")) == 1`.
        """
        from backup_api.standin.journal import KEPT_PER_PARTNER

        query = {"partner_id": partner_id, "limit": KEPT_PER_PARTNER, **filters, **self._order(newest_first)}
        return self._get("/_stand-in/requests?" + urllib.parse.urlencode(query), partner_id)["requests"]

    def unverified(self, newest_first: bool = False) -> list[dict]:
        """The last requests whose token did not verify (or that had none), oldest first, without bodies."""
        query = urllib.parse.urlencode(self._order(newest_first))
        return self._get("/_stand-in/unverified?" + query, "any-partner")["requests"]

    def rejections(self, partner_id: str, newest_first: bool = False) -> list[dict]:
        """The last refused requests naming partner_id, oldest first: method, path, status, answer and body."""
        query = urllib.parse.urlencode({"partner_id": partner_id, **self._order(newest_first)})
        return self._get("/_stand-in/rejections?" + query, partner_id)["rejections"]

    def fault(self, partner_id: str, fault: str | int, count: int = 1, seconds=None, **options) -> None:
        """Queue a fault for partner_id: 503, 429, 500 (as numbers or text, as requests(status=...) takes them),
        "reset-before-commit", "drop-after-commit" or "delay".

        seconds: the delay's, or a range [least, most]. options: route ("events", "vip", "reads"),
        retry_after, probability, seed, as POST /_stand-in/faults takes them.
        """
        body = {"fault": str(fault), "count": count, **({} if seconds is None else {"seconds": seconds}), **options}
        status, answer = self.request("POST", "/_stand-in/faults", body, partner_id=partner_id)
        if status != 200:
            raise ValueError(f"{answer['message']}: {answer.get('errors')}")

    def faults(self, partner_id: str) -> list[dict]:
        """The faults queued for partner_id, in the order they will play, each with what is left of its count."""
        return self._get("/_stand-in/faults", partner_id)["faults"]

    def clear_faults(self, partner_id: str) -> None:
        """Clear the faults queued for partner_id."""
        self.request("DELETE", "/_stand-in/faults", partner_id=partner_id)

    def outside_namespace(self, since: str) -> str | None:
        """What reached the default world (a token without `ns`) for this test's partners since `since`: a message
        saying how to mint in the test's namespace, or None."""
        if self.namespace is None or not self._partners:
            return None
        default = StandIn(self.url, self.secret, None, self.app)
        strays = [f"{entry['method']} {entry['path']} ({entry['status']})" for partner in sorted(self._partners)
                  for entry in default.requests(partner) if entry["at"] >= since]
        if not strays:
            return None
        return (f"{len(strays)} request(s) for this test's partners reached the stand-in without its namespace"
                f" {self.namespace!r}, in the world every such token shares: {', '.join(strays[:5])}. Mint tokens"
                " with backup_api.token(...), or add the claim \"ns\": backup_api.namespace to those you mint.")

    def done(self) -> None:
        """Say this namespace is done with (the fixture does, as its test ends): its world may make room at once."""
        try:
            self.request("POST", "/_stand-in/done", token=self.token("done", _helper=True))
        except OSError:
            pass  # a stand-in gone already (its session ended) has no world to give back

    def reset(self) -> None:
        """Forget the events, flags, faults and journal of every partner this test minted a token for."""
        if self._partners:
            self.request("POST", "/_stand-in/reset", token=self.token(*sorted(self._partners)))

    @staticmethod
    def _order(newest_first: bool) -> dict:
        return {"order": "newest"} if newest_first else {}

    def _get(self, path: str, partner_id: str) -> dict:
        """GET path with a token owning partner_id; its answer, which must be a 200."""
        status, answer = self.request("GET", path, token=self.token(partner_id, _helper=True))
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {answer}")
        return answer


@pytest.fixture(scope="session")
def backup_api_server():
    """The stand-in for the session: the one at BACKUP_API_STAND_IN_URL, or one started here."""
    url = os.environ.get("BACKUP_API_STAND_IN_URL")
    if url:
        secret = os.environ.get("BACKUP_API_JWT_SECRET")
        if not secret:
            raise pytest.UsageError("BACKUP_API_STAND_IN_URL needs BACKUP_API_JWT_SECRET, the stand-in's secret")
        yield StandIn(url.rstrip("/"), secret)
        return
    from backup_api import create_app
    from backup_api.server import InThread
    from backup_api.standin import StandInChannel

    secret = secrets.token_urlsafe(48)
    app = create_app({"STAND_IN": True, "JWT_SECRET": secret, "LOG_LEVEL": "WARNING"})
    server = InThread(app, channel=StandInChannel)
    try:
        yield StandIn(server.url, secret, app=app)
    finally:
        server.stop()


@pytest.fixture
def backup_api(backup_api_server):
    """The Game Backup API as the aggregator's stand-in: a namespace of the test's own, so an empty world."""
    server = backup_api_server
    stand_in = StandIn(server.url, server.secret, f"test-{uuid.uuid4().hex}", server.app)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    yield stand_in
    stand_in.done()
    strays = stand_in.outside_namespace(started)
    if strays:
        pytest.fail(strays, pytrace=False)
