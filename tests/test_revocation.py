"""Revocation: `token revoke` by jti or by holder, refused by every process within seconds, lifted by `token lift`,
kept in the store (both backends) and in its snapshots; an older database gains the table when opened."""

import sqlite3
import time

import pytest

from backup_api import create_app, revocations, storage, tokens
from tests.helpers import SECRET, bearer, make_token, post_event, valid_event
from tests.server import Server
from tests.test_storage import execute


@pytest.fixture
def fresh(monkeypatch):
    """Every request reads the revocations again, so that a test need not wait for the copy to go stale."""
    monkeypatch.setattr(revocations, "REFRESH_SECONDS", 0.0)


def _status(client, token, n):
    return post_event(client, valid_event("bet", n=n), token=token)


# The store ----------------------------------------------------------------------------------


def test_a_store_records_lists_and_lifts_revocations(database):
    store = storage.open_store(database)
    try:
        assert store.revocations() == []
        first = store.revoke("jti", "abc")
        held = store.revoke("sub", "casino_alpha")
        again = store.revoke("sub", "casino_alpha")  # moves the time on
        assert first <= held <= again
        assert store.revocations() == [("jti", "abc", first), ("sub", "casino_alpha", again)]
        assert store.lift("jti", "abc") is True
        assert store.lift("jti", "abc") is False
        assert store.revocations() == [("sub", "casino_alpha", again)]
    finally:
        store.close()


def _as_layout_2(database: str) -> None:
    """Make a database of this layout one of layout 2 (before revocations and the rest), as that version left it."""
    execute(database, "DROP TABLE revocations")
    for table in ("totals", "erasures", "erasure_salt", "counted"):
        execute(database, f"DROP TABLE {table}")
    if storage.is_url(database):
        execute(database, "UPDATE backup_api_layout SET version = 2")
    else:
        execute(database, "PRAGMA user_version = 2")


def test_a_database_of_layout_2_is_upgraded_when_opened_keeping_what_it_holds(database):
    store = storage.open_store(database)
    store.add_events([valid_event("bet", n=1)], "casino_alpha")
    store.close()
    _as_layout_2(database)
    store = storage.open_store(database)
    try:
        assert store.check() == (storage.SCHEMA_VERSION, ["ok"], 1, 0)
        store.revoke("jti", "abc")
        assert [r.value for r in store.revocations()] == ["abc"]
    finally:
        store.close()


def test_a_snapshot_keeps_revocations_and_one_of_layout_2_is_restored_and_upgraded(tmp_path):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "live.db"), "JWT_SECRET": SECRET})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["token", "revoke", "--jti", "kept"]).exit_code == 0
    assert runner.invoke(args=["db", "snapshot", str(tmp_path / "new.db")]).exit_code == 0
    old = tmp_path / "old.db"
    assert runner.invoke(args=["db", "snapshot", str(old)]).exit_code == 0
    _as_layout_2(str(old))
    result = runner.invoke(args=["db", "restore", str(old)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["token", "revocations"]).output == "no token is revoked\n"  # layout 2 had none
    check = runner.invoke(args=["db", "check"])
    assert check.exit_code == 0 and f"layout: {storage.SCHEMA_VERSION}" in check.output
    assert runner.invoke(args=["db", "restore", str(tmp_path / "new.db")]).exit_code == 0
    assert runner.invoke(args=["token", "revocations"]).output.startswith("jti\tkept\t")
    app.extensions["store"].close()


def test_a_snapshot_of_layout_1_is_still_refused(tmp_path):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "live.db"), "JWT_SECRET": SECRET})
    runner = app.test_cli_runner()
    old = tmp_path / "old.db"
    assert runner.invoke(args=["db", "snapshot", str(old)]).exit_code == 0
    _as_layout_2(str(old))
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA user_version = 1")
    result = runner.invoke(args=["db", "restore", str(old)])
    refused = f"layout 1; this version of the service reads layout {storage.SCHEMA_VERSION}"
    assert result.exit_code == 1 and refused in result.output
    app.extensions["store"].close()


# The service ---------------------------------------------------------------------------------


def test_a_revoked_jti_is_refused_even_once_verified_and_others_are_not(app, client, runner, fresh):
    leaked = make_token(jti="leaked-1")
    other = make_token(jti="other-1")
    assert _status(client, leaked, 1).status_code == 200  # verified, and remembered
    assert runner.invoke(args=["token", "revoke", "--jti", "leaked-1"]).exit_code == 0
    refused = _status(client, leaked, 2)
    assert refused.status_code == 401
    assert refused.get_json()["message"] == "the token has been revoked"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert _status(client, other, 3).status_code == 200
    assert client.get("/player-events?partner_id=casino_alpha", headers=bearer(leaked)).status_code == 401
    assert runner.invoke(args=["token", "lift", "--jti", "leaked-1"]).exit_code == 0
    assert _status(client, leaked, 4).status_code == 200


def test_a_revoked_token_never_seen_before_is_refused(app, client, runner, fresh):
    assert runner.invoke(args=["token", "revoke", "--jti", "never-seen"]).exit_code == 0
    assert _status(client, make_token(jti="never-seen"), 1).get_json()["message"] == "the token has been revoked"


def test_revoking_a_holder_refuses_its_tokens_issued_until_then_and_those_without_iat(app, client, runner, fresh):
    before = make_token(iat=int(time.time()) - 60)
    without_iat = make_token()
    with app.app_context():
        minted = tokens.issue(["casino_alpha"], 1)
    beta = make_token(sub="casino_beta")
    for n, token in enumerate((before, without_iat, minted, beta)):
        assert _status(client, token, n).status_code in (200, 403)
    result = runner.invoke(args=["token", "revoke", "--sub", "casino_alpha"])
    assert result.exit_code == 0 and "every token of 'casino_alpha' issued up to now" in result.output
    for n, token in enumerate((before, without_iat, minted), start=10):
        assert _status(client, token, n).get_json()["message"] == "the token has been revoked"
    assert client.get("/player-events?partner_id=casino_beta", headers=bearer(beta)).status_code == 200
    # A token issued once the command returned is not revoked.
    with app.app_context():
        replacement = tokens.issue(["casino_alpha"], 1)
    assert _status(client, replacement, 20).status_code == 200
    assert _status(client, make_token(iat=int(time.time())), 21).status_code == 200


def test_revoke_refuses_an_empty_or_missing_target_and_records_an_unknown_jti(runner):
    for args in (["--sub", ""], ["--jti", ""], [], ["--jti", "a", "--sub", "b"], ["--sub", "a\nb"]):
        result = runner.invoke(args=["token", "revoke", *args])
        assert result.exit_code == 1, args
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert runner.invoke(args=["token", "revoke", "--jti", "no-such-token"]).exit_code == 0
    listed = runner.invoke(args=["token", "revocations"]).output
    assert listed.startswith("jti\tno-such-token\t20") and listed.count("\n") == 1
    result = runner.invoke(args=["token", "lift", "--sub", "nobody"])
    assert result.exit_code == 1 and "no revocation of sub 'nobody'" in result.output


def test_a_copy_of_the_revocations_serves_until_stale(app, client, monkeypatch):
    """No query per request: a revocation is seen once the copy is REFRESH_SECONDS old, not before."""
    monkeypatch.setattr(revocations, "REFRESH_SECONDS", 0.5)
    token = make_token(jti="later")
    assert _status(client, token, 1).status_code == 200
    reads = []
    real = app.extensions["store"].revocations
    monkeypatch.setattr(app.extensions["store"], "revocations", lambda: reads.append(1) or real())
    app.extensions["store"].revoke("jti", "later")
    assert _status(client, token, 2).status_code == 200  # the copy is fresh
    assert reads == []
    deadline = time.monotonic() + 5
    while _status(client, token, 3).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(client, token, 4).status_code == 401
    assert len(reads) == 1  # read again once, then served from the copy


# Across processes ----------------------------------------------------------------------------


@pytest.mark.whole
def test_revoked_on_one_process_refused_by_the_others_on_postgresql_within_5_s(postgres_url):
    servers = [Server(postgres_url, SECRET).start() for _ in range(2)]
    try:
        leaked, kept = make_token(jti="leaked"), make_token(jti="kept")
        for server in servers:
            for n, token in enumerate((leaked, kept)):
                assert server.request("POST", "/player-events", valid_event("bet", n=n), token=token)[0] == 200
        app = create_app({"TESTING": True, "DATABASE": postgres_url, "JWT_SECRET": SECRET})
        assert app.test_cli_runner().invoke(args=["token", "revoke", "--jti", "leaked"]).exit_code == 0
        app.extensions["store"].close()
        revoked_at = time.monotonic()
        waits = []
        for server in servers:
            while time.monotonic() - revoked_at < 10:
                status, _, body = server.request("POST", "/player-events", valid_event("bet", n=9), token=leaked)
                if status == 401:
                    assert body["message"] == "the token has been revoked"
                    break
                time.sleep(0.05)
            waits.append(time.monotonic() - revoked_at)
            assert server.request("POST", "/player-events", valid_event("bet", n=9), token=kept)[0] == 200
    finally:
        for server in servers:
            server.stop()
    assert max(waits) < 5, waits
