"""CLI commands: token issue, events export, players export; secret handling."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time

import jwt
import pytest

from backup_api import ConfigError, create_app
from tests.helpers import SECRET, post_event, valid_event
from tests.server import ROOT


def test_token_issue_is_accepted_by_the_app(app, client, runner):
    result = runner.invoke(args=["token", "issue", "casino_alpha", "casino_beta"])
    assert result.exit_code == 0
    token = result.output.strip().splitlines()[-1]
    for partner in ("casino_alpha", "casino_beta"):
        assert post_event(client, valid_event("bet", partner_id=partner), token=token).status_code == 200
    assert post_event(client, valid_event("bet", partner_id="casino_gamma"), token=token).status_code == 403


def test_token_issue_claims_and_days(runner):
    result = runner.invoke(args=["token", "issue", "casino_alpha", "--days", "3", "--sub", "ops"])
    claims = jwt.decode(result.output.strip().splitlines()[-1], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops"
    assert claims["partners"] == ["casino_alpha"]
    assert abs(claims["exp"] - (time.time() + 3 * 86400)) < 60


def test_token_issue_defaults_to_ninety_days_and_every_scope(runner):
    result = runner.invoke(args=["token", "issue", "casino_alpha"])
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert abs(claims["exp"] - (time.time() + 90 * 86400)) < 60
    assert claims["sub"] == "casino_alpha" and "scope" not in claims


def test_token_issue_scopes(runner):
    result = runner.invoke(args=["token", "issue", "casino_alpha", "--scope", "vip:read", "--scope",
                                 "events:read,events:write"])
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["scope"] == "events:write events:read vip:read"


@pytest.mark.parametrize("args,says", [
    (["--scope", "events:delete"], "events:delete"),
    (["--scope", ""], "nothing"),
    (["--days", "401"], "BACKUP_API_MAX_TOKEN_DAYS"),
])
def test_token_issue_refuses_an_unknown_scope_and_too_long_a_life_in_one_line(runner, args, says):
    result = runner.invoke(args=["token", "issue", "casino_alpha", *args])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and says in result.output
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("args", [["token", "issue"], ["token", "issue", ""], ["token", "issue", "a", "--days", "0"]])
def test_token_issue_refuses_bad_arguments(runner, args):
    assert runner.invoke(args=args).exit_code != 0


def test_events_export(app, client, runner):
    token = jwt.encode({"sub": "x", "partners": ["casino_alpha", "casino_beta"], "exp": time.time() + 60}, SECRET)
    raw = '{"partner_id":"casino_alpha","player_login":"p1","event_type":"bet","amount":1234567.891234567891}'
    post_event(client, None, raw=raw, token=token)
    post_event(client, valid_event("win", player_login="p2"), token=token)
    post_event(client, valid_event("deposit", partner_id="casino_beta", player_login="p1"), token=token)

    lines = runner.invoke(args=["events", "export"]).output.splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == ["id", "received_at", "sub", "event"]
    assert first["sub"] == "x"
    assert first["received_at"].endswith("Z")
    assert '"amount":1234567.891234567891' in lines[0]
    assert [json.loads(line)["id"] for line in lines] == sorted(json.loads(line)["id"] for line in lines)

    only_alpha = runner.invoke(args=["events", "export", "--partner", "casino_alpha"]).output.splitlines()
    assert [json.loads(line)["event"]["player_login"] for line in only_alpha] == ["p1", "p2"]
    only_p1 = runner.invoke(args=["events", "export", "--partner", "casino_alpha", "--player", "p1"]).output
    assert len(only_p1.splitlines()) == 1
    assert len(runner.invoke(args=["events", "export", "--player", "p1"]).output.splitlines()) == 2


def test_players_export(client, runner):
    token = jwt.encode({"sub": "casino_alpha", "exp": time.time() + 60}, SECRET)
    client.put("/users/casino_alpha/player/p9/vip", json={"is_vip": True}, headers={"Authorization": f"Bearer {token}"})
    [line] = runner.invoke(args=["players", "export"]).output.splitlines()
    player = json.loads(line)
    assert player["partner_id"] == "casino_alpha" and player["player_login"] == "p9" and player["is_vip"] is True
    assert "updated_at" in player


def test_short_secret_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="at least 32"):
        create_app({"DATABASE": str(tmp_path / "db"), "JWT_SECRET": "x" * 31})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"BUSY_TIMEOUT_MS": "soon"}, "BACKUP_API_BUSY_TIMEOUT_MS must be a positive whole number"),
        ({"SYNCHRONOUS": "sometimes"}, "BACKUP_API_SYNCHRONOUS: synchronous must be FULL"),
        ({"DATABASE": "old.db"}, "has layout 0"),
    ],
)
def test_bad_settings_refuse_to_start(tmp_path, monkeypatch, setting, message):
    monkeypatch.chdir(tmp_path)  # the database paths are relative to it
    old = sqlite3.connect("old.db")
    old.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, dedup_key BLOB)")
    old.close()
    with pytest.raises(ConfigError, match=message):
        create_app({"DATABASE": "new.db", "JWT_SECRET": SECRET, **setting})


def test_a_database_of_a_newer_layout_asks_for_an_upgrade(tmp_path):
    database = tmp_path / "newer.db"
    create_app({"DATABASE": str(database), "JWT_SECRET": SECRET}).extensions["store"].close()
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA user_version = 6")
    conn.close()
    with pytest.raises(ConfigError, match="has layout 6, written by a newer version of the service;"
                                          " this one reads layout 5: upgrade the service to use it"):
        create_app({"DATABASE": str(database), "JWT_SECRET": SECRET})


@pytest.mark.whole
def test_the_command_prints_a_start_up_error_as_one_line(tmp_path):
    env = {**os.environ, "BACKUP_API_DATABASE": str(tmp_path / "d.db"), "BACKUP_API_JWT_SECRET": "short"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the JWT secret in BACKUP_API_JWT_SECRET is 5 bytes long")
    assert "Traceback" not in result.stderr


def test_secret_is_generated_once_with_mode_0600(tmp_path):
    database = tmp_path / "data" / "backup.db"
    first = create_app({"DATABASE": str(database)})
    secret_file = tmp_path / "data" / "jwt-secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    second = create_app({"DATABASE": str(database)})
    assert first.config["JWT_SECRET_KEY"] == second.config["JWT_SECRET_KEY"]
    assert len(first.config["JWT_SECRET_KEY"]) >= 32


def test_environment_configures_the_app(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKUP_API_DATABASE", str(tmp_path / "env.db"))
    monkeypatch.setenv("BACKUP_API_JWT_SECRET", "1" * 40)  # digits: must stay a string
    app = create_app()
    assert app.config["JWT_SECRET_KEY"] == "1" * 40
    assert (tmp_path / "env.db").exists()
