"""What the tests share beside their fixtures: tokens, events, posting them, and what a store holds."""

import http.client
import json
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import jwt
import psycopg
import pytest

from backup_api import export_lines, storage

SECRET = "test-secret-that-is-long-enough-for-hs256-and-even-hs512-0123456789abcdef"

# For a test of what only the SQLite file has (its file, snapshots, locks): run it on SQLite alone.
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def register_plugin(config) -> None:
    """Register backup_api.pytest_plugin under its entry point's name, once."""
    if not config.pluginmanager.has_plugin("backup_api"):
        from backup_api import pytest_plugin

        config.pluginmanager.register(pytest_plugin, "backup_api")


def event_lines(store, **filters) -> list[str]:
    """The lines `events export` writes of what store holds."""
    return list(export_lines.event_lines(store.export_events(**filters)))


def player_lines(store) -> list[str]:
    """The lines `players export` writes of what store holds."""
    return list(export_lines.player_lines(store.export_players()))


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


def call_stand_in(stand_in, method, path, body=None, token=None, partner_id="casino_alpha", timeout=30,
                  raw: bytes | None = None):
    """One request to a running stand-in (body as JSON, or raw bytes) on a connection of its own; token: a token
    owning partner_id by default. Return (status, headers, parsed answer), or (None, None, the error)."""
    token = token or stand_in.token(partner_id)
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(stand_in.url).netloc, timeout=timeout)
    try:
        conn.request(method, path, body=raw if raw is not None else None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    except (OSError, http.client.HTTPException) as exc:
        return None, None, exc
    finally:
        conn.close()


def post_event(client, event, token=None, raw=None, content_type="application/json"):
    """POST one event (or raw bytes) to /player-events."""
    data = raw if raw is not None else json.dumps(event)
    return client.post("/player-events", data=data, headers=bearer(token), content_type=content_type)


def stored_events(app, **filters):
    """Return the exported events, numbers parsed exactly."""
    store = app.extensions["store"]
    return [json.loads(line, parse_float=Decimal, parse_int=Decimal) for line in event_lines(store, **filters)]


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
    return [json.loads(line) for line in player_lines(app.extensions["store"])]


def valid_event(kind="bet", **fields):
    """Return a minimal valid event of type kind, with fields overriding its values."""
    from backup_api.schemas import EVENT_RULES

    event = {"partner_id": "casino_alpha", "player_login": "player42", "event_type": kind}
    samples = {"amount": 5, "session_id": "sess_abc", "game_id": "game_7"}
    event.update({name: samples[name] for name in EVENT_RULES[kind]})
    event.update(fields)
    return event


def export_line(n: int, extra: str = "") -> bytes:
    """A line of `events export`: event n of casino_alpha (event_id e{n}), extra added to its event's fields."""
    fields = f'"event_type":"bet","amount":{n}.5,"event_id":"e{n}"' + extra
    return (f'{{"id": {n}, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x", "event": {{"partner_id":'
            f'"casino_alpha","player_login":"p",{fields}}}}}\n').encode()


def file_with_a_long_line(path, megabytes: int = 100) -> None:
    """Write an export of three events whose second line holds megabytes of numbers in its metadata (line 2)."""
    with open(path, "wb") as f:
        f.write(export_line(1))
        f.write(export_line(2, ', "metadata": {"n": [0').rstrip(b"}\n"))
        f.writelines([b",0" * 500_000] * megabytes)
        f.write(b"]}}}\n")
        f.write(export_line(3))


def command_in(folder: Path) -> Path:
    """Write, in folder, a `game-backup-api` that is this checkout's command (the wheel's, not installed here)."""
    command = Path(folder) / "game-backup-api"
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from backup_api.cli import main; main()" "$@"\n')
    command.chmod(0o755)
    return command


@contextmanager
def mounted_tmpfs(mountpoint: Path, options: str) -> Iterator[Path]:
    """A tmpfs of its own at mountpoint (made), with mount's options; skip the test where none can be mounted."""
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
