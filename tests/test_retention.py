"""The retention window: `db prune` and BACKUP_API_RETENTION_DAYS delete old events in pieces, their totals
counted down, VIP flags kept, the space given back (SQLite); the server prunes by itself at start."""

import http.client
import json
import time

import pytest

from backup_api import ConfigError, create_app
from tests.helpers import SECRET, bearer, make_token, valid_event
from tests.server import Server

DAYS_OLD = {"2020-01-01T12:00:00.000000Z": 600, "2026-12-01T12:00:00.000000Z": 400}


def old_events(path, per_day=DAYS_OLD) -> None:
    """An export of events received long ago and lately (`events import` keeps received_at)."""
    lines, n = [], 0
    for received_at, count in per_day.items():
        for _ in range(count):
            n += 1
            event = valid_event("bet", event_id=f"e{n}", amount=1, metadata={"pad": "x" * 400})
            lines.append(json.dumps({"id": n, "received_at": received_at, "sub": "x", "event": event}))
    path.write_text("\n".join(lines) + "\n")


def test_db_prune_deletes_the_events_received_before_a_day_and_keeps_the_rest(app, client, tmp_path):
    old_events(tmp_path / "events.jsonl")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["events", "import", str(tmp_path / "events.jsonl")]).exit_code == 0
    assert client.put("/users/casino_alpha/player/player42/vip", json={"is_vip": True},
                      headers=bearer()).status_code == 200
    pruned = runner.invoke(args=["db", "prune", "--before", "2026-01-01"])
    assert pruned.output == "deleted 600 events received before 2026-01-01T00:00:00.000000Z\n", pruned.output
    rows = client.get("/player-events/summary?partner_id=casino_alpha", headers=bearer()).get_json()["rows"]
    assert [(r["day"], r["events"]) for r in rows] == [("2026-12-01", 400)]
    assert client.get("/users/casino_alpha/player/player42/vip", headers=bearer()).get_json()["is_vip"] is True
    assert app.extensions["store"].check_totals() == []
    assert runner.invoke(args=["db", "prune", "--before", "2026-01-01"]).output.startswith("deleted 0 events")


def test_a_prune_of_events_not_yet_counted_in_the_totals_leaves_them_right(app, client):
    for n in (1, 2):  # stored, not yet counted into the totals' table (every thousand events)
        assert client.post("/player-events", json=valid_event("bet", event_id=f"new{n}", amount=1),
                           headers=bearer()).status_code == 200
    pruned = app.test_cli_runner().invoke(args=["db", "prune", "--before", "2999-01-01"])
    assert pruned.output.startswith("deleted 2 events"), pruned.output
    assert client.get("/player-events/summary?partner_id=casino_alpha", headers=bearer()).get_json()["rows"] == []
    assert app.extensions["store"].check_totals() == []


def test_db_prune_reads_the_setting_and_refuses_without_either(tmp_path):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["db", "prune"])
    assert refused.exit_code == 2 and "give --before YYYY-MM-DD, or set BACKUP_API_RETENTION_DAYS" in refused.output
    assert runner.invoke(args=["db", "prune", "--before", "2026-02-30"]).exit_code == 2
    app.extensions["store"].close()
    old_events(tmp_path / "events.jsonl")
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET,
                      "RETENTION_DAYS": 30})
    runner = app.test_cli_runner()
    runner.invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    assert runner.invoke(args=["db", "prune"]).output.startswith("deleted 600 events received before ")  # 30 days
    app.extensions["store"].close()


@pytest.mark.parametrize("value", ["0", "-3", "thirty", "1e3", "²"])
def test_a_retention_the_service_cannot_run_with_stops_it(monkeypatch, tmp_path, value):
    monkeypatch.setenv("BACKUP_API_DATABASE", str(tmp_path / "b.db"))
    monkeypatch.setenv("BACKUP_API_JWT_SECRET", SECRET)
    monkeypatch.setenv("BACKUP_API_RETENTION_DAYS", value)
    with pytest.raises(ConfigError, match="BACKUP_API_RETENTION_DAYS must be a positive whole number of days"):
        create_app()


def test_a_prune_gives_the_space_back_to_a_new_sqlite_file(tmp_path):
    old_events(tmp_path / "events.jsonl", {"2020-01-01T12:00:00.000000Z": 5000})
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    runner = app.test_cli_runner()
    runner.invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    runner.invoke(args=["db", "prune", "--before", "2020-01-01"])  # nothing: a checkpoint, the file at its size
    before = (tmp_path / "b.db").stat().st_size
    assert runner.invoke(args=["db", "prune", "--before", "2021-01-01"]).output.startswith("deleted 5000 ")
    after = (tmp_path / "b.db").stat().st_size
    assert after < before / 4, (before, after)
    app.extensions["store"].close()


@pytest.mark.whole
def test_the_server_prunes_by_itself_at_start(tmp_path):
    old_events(tmp_path / "events.jsonl")
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    app.test_cli_runner().invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    app.extensions["store"].close()
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_RETENTION_DAYS"] = "30"
    with server:
        deadline = time.monotonic() + 30
        while True:
            status, _, body = server.request("GET", "/player-events/summary?partner_id=casino_alpha",
                                             token=make_token())
            if status == 200 and [r["day"] for r in body["rows"]] == ["2026-12-01"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        while True:  # counted once the prune has given the space back, a moment after the deletes
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/metrics")
            page = conn.getresponse().read().decode()
            conn.close()
            if "backup_api_events_pruned_total 600.0" in page:
                break
            assert time.monotonic() < deadline, [line for line in page.splitlines() if "pruned" in line]
            time.sleep(0.2)
