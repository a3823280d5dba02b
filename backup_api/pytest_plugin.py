"""The pytest plugin: the `backup_api` fixture, the service as the aggregator's stand-in, empty for each test.

Installed with the package (the pytest11 entry point `backup_api`), so `pip install game-backup-api`
is all a test suite needs. The server is the real one (waitress, the real routes) in stand-in mode,
started once per session on a free port of 127.0.0.1 in a thread of the test process; each test
starts with it empty, which costs a reset, not a start.
"""

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request

import pytest


class StandIn:
    """The running stand-in, as a test sees it: its URL, tokens for it, and what it holds."""

    def __init__(self, app, url: str):
        self.app = app
        #: The base URL, e.g. http://127.0.0.1:40123 (no trailing slash).
        self.url = url

    def token(self, *partner_ids: str, sub: str | None = None, days: int = 1, scopes: list[str] | None = None) -> str:
        """A bearer token owning partner_ids (held by sub, default the first of them), minted in-process.

        scopes: what it may do, of events:write, events:read, vip:write, vip:read (default: all).
        """
        if not partner_ids or not all(partner_ids):
            raise ValueError("a token owns at least one partner_id, none of them empty")
        from backup_api import tokens

        with self.app.app_context():
            return tokens.issue(list(partner_ids), days, sub, scopes)

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

    def events(self, partner_id: str) -> list[dict]:
        """Every stored event of partner_id, oldest first, as GET /player-events gives them (each page followed)."""
        found, query = [], {"partner_id": partner_id, "limit": 1000}
        while True:
            page = self._get("/player-events?" + urllib.parse.urlencode(query), partner_id)
            found.extend(page["events"])
            if page["next"] is None:
                return found
            query["after"] = page["next"]

    def vip(self, partner_id: str, player_login: str) -> dict:
        """A player's VIP flag as GET /users/{id}/player/{player_id}/vip gives it."""
        quote = urllib.parse.quote
        return self._get(f"/users/{quote(partner_id, safe='')}/player/{quote(player_login, safe='')}/vip",
                         partner_id)

    def requests(self, partner_id: str, **filters) -> dict:
        """The requests made for partner_id, newest first: {"requests": [...], "count": every match}.

        filters: method, path, status, outcome (stored, duplicate, conflict, refused), event_type,
        player_login, event_id, limit (default 100). So a test verifies what its code sent:
        `assert backup_api.requests("casino_alpha", method="POST", outcome="stored")["count"] == 1`.
        """
        query = urllib.parse.urlencode({"partner_id": partner_id, **filters})
        return self._get("/_stand-in/requests?" + query, partner_id)

    def unverified(self) -> list[dict]:
        """The latest requests whose token did not verify (or that had none), newest first, without bodies."""
        return self._get("/_stand-in/unverified", "any-partner")["requests"]

    def rejections(self, partner_id: str) -> list[dict]:
        """The refused requests naming partner_id, newest first: method, path, status, answer and body."""
        return self._get("/_stand-in/rejections?" + urllib.parse.urlencode({"partner_id": partner_id}),
                         partner_id)["rejections"]

    def fault(self, partner_id: str, fault: str, count: int = 1, seconds: float | None = None) -> None:
        """Make the next count POST /player-events of partner_id fail: "503", "drop-after-commit" or "delay"."""
        body = {"fault": fault, "count": count, **({} if seconds is None else {"seconds": seconds})}
        status, answer = self.request("POST", "/_stand-in/faults", body, partner_id=partner_id)
        if status != 200:
            raise ValueError(answer["message"])

    def clear_faults(self, partner_id: str) -> None:
        """Clear the faults set for partner_id."""
        self.request("DELETE", "/_stand-in/faults", partner_id=partner_id)

    def reset(self) -> None:
        """Forget everything: events, flags, faults and journal, of every partner."""
        from backup_api.storage import get_store

        get_store(self.app).forget(None)
        self.app.extensions["stand_in"].clear_all()

    def _get(self, path: str, partner_id: str) -> dict:
        """GET path with a token owning partner_id; its answer, which must be a 200."""
        status, answer = self.request("GET", path, partner_id=partner_id)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {answer}")
        return answer


@pytest.fixture(scope="session")
def backup_api_server():
    """The stand-in, started once for the session (the `backup_api` fixture empties it for each test)."""
    from backup_api import create_app
    from backup_api.server import InThread
    from backup_api.standin import StandInChannel

    app = create_app({"STAND_IN": True, "JWT_SECRET": secrets.token_urlsafe(48), "LOG_LEVEL": "WARNING"})
    server = InThread(app, channel=StandInChannel)
    try:
        yield StandIn(app, server.url)
    finally:
        server.stop()


@pytest.fixture
def backup_api(backup_api_server):
    """The Game Backup API as the aggregator's stand-in, empty at the start of the test."""
    backup_api_server.reset()
    return backup_api_server
