"""Erasing a player: its events and VIP flag gone in one transaction, a receipt kept without the login, the bytes
out of the files (SQLite), never brought back by an import, and erased again after a restore of an older copy."""

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import bearer, make_token, post_event, valid_event

IBAN = "DE89370400440532013000"
ERASER = {"scope": "players:erase"}


def hold_ivan(client, events: int = 3) -> None:
    """Events of ivan (an IBAN in their metadata), his VIP flag, and an event of another player."""
    for n in range(events):
        event = valid_event("bet", player_login="ivan", event_id=f"i{n}", amount=n + 0.5, metadata={"iban": IBAN})
        assert post_event(client, event).status_code == 200
    assert post_event(client, valid_event("win", player_login="olga", event_id="o1", amount=7)).status_code == 200
    assert client.put("/users/casino_alpha/player/ivan/vip", json={"is_vip": True}, headers=bearer()).status_code == 200


def erase(client, player="ivan", partner="casino_alpha", token=None):
    return client.delete(f"/users/{partner}/player/{player}", headers=bearer(token or make_token(**ERASER)))


def test_erasing_a_player_deletes_events_and_flag_and_keeps_a_receipt(client, app):
    hold_ivan(client)
    answer = erase(client)
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["status"], body["erased_events"], body["erased_vip"]) == ("ok", 3, True)
    page = client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_json()["events"]
    assert [e["event"]["player_login"] for e in page] == ["olga"]
    assert client.get("/users/casino_alpha/player/ivan/vip", headers=bearer()).get_json()["is_vip"] is False
    # The totals lost ivan's bets and kept olga's win.
    rows = client.get("/player-events/summary?partner_id=casino_alpha", headers=bearer()).get_json()["rows"]
    assert [(r["event_type"], r["events"], r["amount"]) for r in rows] == [("win", 1, "7")]
    assert app.extensions["store"].check_totals() == []
    # The receipt: no login, a digest that is not the login's plain hash either.
    receipts = client.get("/users/casino_alpha/erasures", headers=bearer(make_token(**ERASER))).get_json()
    [receipt] = receipts["erasures"]
    assert (receipt["events"], receipt["vip"], receipt["sub"]) == (3, True, "casino_alpha")
    assert receipt["player_digest"] == body["player_digest"] and "ivan" not in json.dumps(receipts)
    # Nothing to erase is no error: zeros, and a receipt all the same.
    assert erase(client).get_json()["erased_events"] == 0
    assert erase(client, player="nobody").get_json()["erased_vip"] is False


def test_erasing_needs_the_scope_named_and_the_partner_owned(client):
    hold_ivan(client, events=1)
    assert erase(client, token=make_token()).status_code == 403  # no scope claim: the four, not this one
    assert erase(client, token=make_token(scope="events:write events:read vip:write vip:read")).status_code == 403
    assert erase(client, partner="casino_beta").status_code == 403
    assert client.get("/users/casino_alpha/erasures", headers=bearer()).status_code == 403
    assert erase(client, player="bad%07").status_code == 400
    assert erase(client).status_code == 200


def test_the_erased_bytes_leave_the_sqlite_files(tmp_path):
    from backup_api import create_app
    from tests.helpers import SECRET

    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    client = app.test_client()
    try:
        for n in range(100):  # ivan's events between olga's: pages that stay in use after the erasure
            assert post_event(client, valid_event("bet", player_login="ivan", event_id=f"i{n}",
                                                  metadata={"iban": IBAN})).status_code == 200
            assert post_event(client, valid_event("bet", player_login="olga", event_id=f"o{n}")).status_code == 200
        files = [Path(f"{tmp_path / 'b.db'}{suffix}") for suffix in ("", "-wal", "-shm")]
        other = sqlite3.connect(tmp_path / "b.db")
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # in the file itself, not only in the -wal
        other.close()
        assert IBAN.encode() in files[0].read_bytes()
        for n in range(5):  # and some only in the -wal
            assert post_event(client, valid_event("bet", player_login="ivan", event_id=f"w{n}",
                                                  metadata={"iban": IBAN})).status_code == 200
        assert IBAN.encode() in files[1].read_bytes()
        assert erase(client).status_code == 200
        for path in files:
            if path.exists():  # read while the store is open, as it returned
                data = path.read_bytes()
                assert IBAN.encode() not in data and b'"ivan"' not in data, path
    finally:
        app.extensions["store"].close()


def test_an_import_skips_the_lines_of_a_player_erased_since(client, app, tmp_path):
    hold_ivan(client)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["events", "export", "--output", str(tmp_path / "events.jsonl")]).exit_code == 0
    assert runner.invoke(args=["players", "export", "--output", str(tmp_path / "players.jsonl")]).exit_code == 0
    assert erase(client).status_code == 200
    imported = runner.invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    assert imported.output == ("imported 0, already held 1, skipped 3 of players erased since (players erasures"
                               " lists them)\n"), imported.output
    flags = runner.invoke(args=["players", "import", str(tmp_path / "players.jsonl")])
    assert flags.output.endswith(", skipped 1 of players erased since (players erasures lists them)\n"), flags.output
    assert client.get("/users/casino_alpha/player/ivan/vip", headers=bearer()).get_json()["is_vip"] is False
    # What ivan sends after the erasure is his again, and an export of it imports.
    assert post_event(client, valid_event("bet", player_login="ivan", event_id="later")).status_code == 200
    assert app.extensions["store"].check_totals() == []


def test_an_error_after_skipped_lines_names_the_files_line(client, app, tmp_path):
    hold_ivan(client)
    runner = app.test_cli_runner()
    runner.invoke(args=["events", "export", "--output", str(tmp_path / "events.jsonl")])
    assert erase(client).status_code == 200
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    bad = json.loads(lines[3])  # olga's, after ivan's three: its event_id now with other content
    bad["event"]["amount"] = 8
    lines[3] = json.dumps(bad)
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    refused = runner.invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    assert refused.exit_code == 1 and "line 4:" in refused.output, refused.output


def test_a_restored_older_snapshot_is_erased_again_from_the_receipts(tmp_path):
    from backup_api import create_app
    from tests.helpers import SECRET

    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    client, runner = app.test_client(), app.test_cli_runner()
    hold_ivan(client)
    assert runner.invoke(args=["db", "snapshot", str(tmp_path / "before.db")]).exit_code == 0
    assert erase(client).status_code == 200
    receipts = tmp_path / "receipts.jsonl"
    assert runner.invoke(args=["players", "erasures", "--output", str(receipts)]).exit_code == 0
    restored = runner.invoke(args=["db", "restore", str(tmp_path / "before.db")])
    assert restored.exit_code == 0, restored.output
    assert len(client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_json()["events"]) == 4
    applied = runner.invoke(args=["players", "erase", "--from-receipts", str(receipts)])
    assert applied.output == "applied 1 receipts: erased 1 players (3 events)\n", applied.output
    page = client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_json()["events"]
    assert [e["event"]["player_login"] for e in page] == ["olga"]
    assert runner.invoke(args=["players", "erasures"]).output.count("\n") == 1  # the receipt is back, once
    again = runner.invoke(args=["players", "erase", "--from-receipts", str(receipts)])
    assert again.output == "applied 1 receipts: erased 0 players (0 events)\n"
    assert runner.invoke(args=["db", "check"]).output.endswith("totals: ok\n")
    app.extensions["store"].close()


def test_the_command_erases_a_login_no_path_can_carry(client, app):
    assert post_event(client, valid_event("bet", player_login="a/b", event_id="slash")).status_code == 200
    erased = app.test_cli_runner().invoke(args=["players", "erase", "casino_alpha", "a/b"])
    assert erased.output.startswith("erased 1 events and no VIP flag of 'a/b' (casino_alpha)"), erased.output
    [receipt] = app.extensions["store"].erasures("casino_alpha")
    assert receipt.sub == "command" and receipt.events == 1


@pytest.mark.parametrize("line", ['{"erased_at": "2026-12-06T06:20:12.064705Z"}', "not json",
                                  '{"erased_at": "x", "partner_id": "p", "player_digest": "00", "sub": "s",'
                                  ' "events": 1, "vip": true}'])
def test_a_file_that_is_not_receipts_is_refused_whole(app, tmp_path, line):
    (tmp_path / "r.jsonl").write_text(line + "\n")
    refused = app.test_cli_runner().invoke(args=["players", "erase", "--from-receipts", str(tmp_path / "r.jsonl")])
    assert refused.exit_code == 1 and "is not a file of receipts" in refused.output, refused.output


def test_an_erasure_the_store_cannot_take_is_one_line(tmp_path):
    """Before: the command printed a traceback when the database was locked past the busy timeout."""
    from backup_api import create_app
    from tests.helpers import SECRET

    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET,
                      "BUSY_TIMEOUT_MS": 100})
    other = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        result = app.test_cli_runner().invoke(args=["players", "erase", "casino_alpha", "ivan"])
    finally:
        other.execute("ROLLBACK")
        other.close()
        app.extensions["store"].close()
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1, (
        result.output)
