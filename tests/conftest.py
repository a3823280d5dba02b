"""Fixtures: an app on a temporary database (SQLite, and PostgreSQL), its client and CLI runner, and tokens."""

import json
import sqlite3
import time
from decimal import Decimal

import jwt
import psycopg
import pytest

from backup_api import create_app, storage
from tests import postgres

SECRET = "test-secret-that-is-long-enough-for-hs256-and-even-hs512-0123456789abcdef"


def pytest_configure(config):
    """Register the plugin the wheel registers by its entry point, unless a build in this checkout made it visible."""
    register_plugin(config)


def register_plugin(config) -> None:
    """Register backup_api.pytest_plugin under its entry point's name, once."""
    if not config.pluginmanager.has_plugin("backup_api"):
        from backup_api import pytest_plugin

        config.pluginmanager.register(pytest_plugin, "backup_api")


@pytest.fixture(scope="session")
def postgres_server():
    """Start a throwaway PostgreSQL for the session (or use BACKUP_API_TEST_POSTGRES); yield its databases."""
    url, server = postgres.start()
    try:
        yield postgres.Databases(url), server
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """Return the URL of a fresh, empty PostgreSQL database, dropped after the test."""
    databases = postgres_server[0]
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Return the database setting of a fresh store: each test using it runs on both backends."""
    if request.param == "sqlite":
        return str(tmp_path / "backup.db")
    return request.getfixturevalue("postgres_url")


# For a test of what only the SQLite file has (its file, snapshots, locks): run it on SQLite alone.
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.fixture
def app(database):
    """Return an app on a fresh database."""
    app = create_app({"TESTING": True, "DATABASE": database, "JWT_SECRET": SECRET})
    yield app
    app.extensions["store"].close()


@pytest.fixture
def client(app):
    """Return a test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Return a CLI runner."""
    return app.test_cli_runner()


def make_token(sub="casino_alpha", secret=SECRET, algorithm="HS256", lifetime=3600, **claims):
    """Mint a token with PyJWT, as a partner with any standard library would."""
    payload = {"sub": sub}
    if lifetime is not None:
        payload["exp"] = int(time.time()) + lifetime
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer(token=None):
    """Return the Authorization header for token (a fresh casino_alpha token by default)."""
    return {"Authorization": f"Bearer {token or make_token()}"}


def post_event(client, event, token=None, raw=None, content_type="application/json"):
    """POST one event (or raw bytes) to /player-events."""
    data = raw if raw is not None else json.dumps(event)
    return client.post("/player-events", data=data, headers=bearer(token), content_type=content_type)


def stored_events(app, **filters):
    """Return the exported events, numbers parsed exactly."""
    store = app.extensions["store"]
    return [json.loads(line, parse_float=Decimal, parse_int=Decimal) for line in store.export_events(**filters)]


def count_rows(database) -> int:
    """Count the events in a database (a file, or a PostgreSQL URL), read on a connection of its own."""
    if storage.is_url(str(database)):
        with psycopg.connect(str(database)) as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn = sqlite3.connect(database)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def stored_players(app):
    """Return the exported VIP flags."""
    return [json.loads(line) for line in app.extensions["store"].export_players()]


def valid_event(kind="bet", **fields):
    """Return a minimal valid event of type kind, with fields overriding its values."""
    from backup_api.schemas import EVENT_RULES

    event = {"partner_id": "casino_alpha", "player_login": "player42", "event_type": kind}
    samples = {"amount": 5, "session_id": "sess_abc", "game_id": "game_7"}
    event.update({name: samples[name] for name in EVENT_RULES[kind]})
    event.update(fields)
    return event
