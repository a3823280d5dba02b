"""Restoring: export and import round trips, all or nothing, db restore and db check."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backup_api import create_app, storage
from tests.helpers import SECRET, make_token, post_event, sqlite_only, valid_event
from tests.server import ROOT, Server

ODD_EVENTS = [
    '{"partner_id":"casino_alpha","player_login":"p1","event_type":"bet","amount":1e-400}',
    '{"partner_id":"casino_alpha","player_login":"p1","event_type":"win","amount":-0,"event_id":"w1"}',
    '{"partner_id":"casino_alpha","player_login":"p2","event_type":"big_win","metadata":{"n":' + "7" * 300 + "}}",
    '{"partner_id":"casino_alpha","player_login":"jörg","event_type":"complaint","text":"中文 ✓ \\u2028","x":1.50E+3}',
    '{"partner_id":"casino_beta","player_login":"p1","event_type":"deposit","amount":123456.789012345678901234}',
]


def new_app(path: Path):
    """An app on the database at path (made when missing)."""
    return create_app({"TESTING": True, "DATABASE": str(path), "JWT_SECRET": SECRET})


def run(app, *args, stdin: bytes | None = None):
    """Run a CLI command of app; return the click result."""
    return app.test_cli_runner().invoke(args=list(args), input=stdin)


def filled(path: Path):
    """An app whose database holds ODD_EVENTS, sent by two token holders, and two VIP flags."""
    app = new_app(path)
    client = app.test_client()
    token = make_token(sub="holder-1", partners=["casino_alpha", "casino_beta"])
    for raw in ODD_EVENTS[:3]:
        assert post_event(client, None, raw=raw, token=token).status_code == 200
    other = make_token(sub="holder-2", partners=["casino_alpha", "casino_beta"])
    for raw in ODD_EVENTS[3:]:
        assert post_event(client, None, raw=raw, token=other).status_code == 200
    for player, flag in (("p1", True), ("jörg", False)):
        headers = {"Authorization": f"Bearer {token}"}
        assert client.put(f"/users/casino_alpha/player/{player}/vip", json={"is_vip": flag},
                          headers=headers).status_code == 200
    return app


@pytest.fixture
def source(tmp_path):
    app = filled(tmp_path / "source.db")
    yield app
    app.extensions["store"].close()


@pytest.fixture
def empty(database):
    """An app on an empty database: imports are tested into each store."""
    app = new_app(database)
    yield app
    app.extensions["store"].close()


def test_export_import_export_is_byte_identical(source, empty):
    exported = run(source, "events", "export").output
    # JSON Lines are split at "\n" only: str.splitlines would split at the U+2028 in an event too.
    assert exported.count("\n") == len(ODD_EVENTS)
    for raw in ODD_EVENTS:
        assert raw.replace("\\u2028", "\u2028") in exported  # every digit, every character as sent
    assert '"sub": "holder-1"' in exported and '"sub": "holder-2"' in exported
    result = run(empty, "events", "import", "-", stdin=exported.encode())
    assert result.exit_code == 0, result.output
    assert result.output == f"imported {len(ODD_EVENTS)}, already held 0\n"
    assert run(empty, "events", "export").output == exported

    players = run(source, "players", "export").output
    result = run(empty, "players", "import", "-", stdin=players.encode())
    assert result.output == "imported 2, updated 0, already held 0\n", result.output
    assert run(empty, "players", "export").output == players


def test_import_from_a_file(source, empty, tmp_path):
    (tmp_path / "events.jsonl").write_text(run(source, "events", "export").output, encoding="utf-8")
    result = run(empty, "events", "import", str(tmp_path / "events.jsonl"))
    assert result.exit_code == 0 and "imported 5" in result.output


def test_import_merges_into_a_database_that_holds_events(source, tmp_path):
    exported = run(source, "events", "export").output
    target = new_app(tmp_path / "busy.db")
    client = target.test_client()
    post_event(client, valid_event("bet", n="already here"))
    assert post_event(client, None, raw=ODD_EVENTS[0]).status_code == 200  # one of them is held already
    result = run(target, "events", "import", "-", stdin=exported.encode())
    assert result.output == f"imported {len(ODD_EVENTS) - 1}, already held 1\n", result.output
    lines = [json.loads(line) for line in run(target, "events", "export").output.split("\n")[:-1]]
    ids = [line["id"] for line in lines]
    assert ids == list(range(1, len(ODD_EVENTS) + 2))  # ids 1 and 2 were taken: the imported ones follow
    again = run(target, "events", "import", "-", stdin=exported.encode())
    assert again.output == f"imported 0, already held {len(ODD_EVENTS)}\n"
    target.extensions["store"].close()


def test_a_conflicting_event_id_stops_the_import(source, database):
    target = new_app(database)  # the line named, on both stores, though the rows go in chunks
    client = target.test_client()
    post_event(client, valid_event("win", event_id="w1", amount=7))  # the same event_id as ODD_EVENTS[1]
    before = run(target, "events", "export").output
    result = run(target, "events", "import", "-", stdin=run(source, "events", "export").output.encode())
    assert result.exit_code == 1
    assert "line 2:" in result.output and "w1" in result.output and "nothing was imported" in result.output
    assert run(target, "events", "export").output == before
    target.extensions["store"].close()


BAD_LINES = {
    "not JSON": b"{nope",
    "not UTF-8": b"\xff\xfe",
    "an array": b"[]",
    "a missing key": b'{"id": 9, "received_at": WHEN, "event": {}}',
    "an unknown key": b'{"id": 9, "received_at": WHEN, "sub": "x", "event": {}, "y": 1}',
    "an id of 0": b'{"id": 0, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "an id of 1.5": b'{"id": 1.5, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "a huge id": b'{"id": 99999999999999999999, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "the top id": b'{"id": 9223372036854775807, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "an id past 2**53 - 1": b'{"id": 9007199254740992, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "a leap second": b'{"id": 90, "received_at": "2016-12-31T23:59:60.000000Z", "sub": "x", "event": EVENT}',
    "an id going back": b'{"id": 1, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "a bad time": b'{"id": 90, "received_at": "2026-11-24 05:12", "sub": "x", "event": EVENT}',
    "an empty sub": b'{"id": 90, "received_at": WHEN, "sub": "", "event": EVENT}',
    "an invalid event": b'{"id": 90, "received_at": WHEN, "sub": "x", "event": {"a": 1}}',
    "a duplicate key": b'{"id": 90, "id": 91, "received_at": WHEN, "sub": "x", "event": EVENT}',
    "an empty line": b"",
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_line_is_named_and_nothing_is_kept(source, empty, case):
    good = run(source, "events", "export").output.encode().split(b"\n")[:-1]
    bad = BAD_LINES[case].replace(b"EVENT", ODD_EVENTS[0].replace("1e-400", "2").encode())
    bad = bad.replace(b"WHEN", b'"2026-11-24T05:12:03.120512Z"')
    lines = [*good[:3], bad, *good[3:]]
    result = run(empty, "events", "import", "-", stdin=b"\n".join(lines) + b"\n")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: line 4: ") and "nothing was imported" in result.output
    assert run(empty, "events", "export").output == ""


def test_a_bad_players_line_is_named_and_nothing_is_kept(source, empty):
    good = run(source, "players", "export").output.encode().splitlines()
    for bad in (b'{"partner_id": "a", "player_login": "b", "is_vip": 1, "updated_at": "2026-11-24T05:12:03.120512Z",'
                b' "updated_by": "x"}', b'{"partner_id": "a"}'):
        result = run(empty, "players", "import", "-", stdin=b"\n".join([good[0], bad]) + b"\n")
        assert result.exit_code == 1 and result.output.startswith("Error: line 2: "), result.output
        assert run(empty, "players", "export").output == ""


def test_players_import_keeps_the_newer_flag(empty):
    line = ('{"partner_id": "casino_alpha", "player_login": "p1", "is_vip": %s, "updated_at": "%s",'
            ' "updated_by": "ops"}')
    run(empty, "players", "import", "-", stdin=(line % ("true", "2026-01-01T00:00:00.000000Z")).encode())
    older = (line % ("false", "2025-01-01T00:00:00.000000Z")).encode()
    assert run(empty, "players", "import", "-", stdin=older).output == "imported 0, updated 0, already held 1\n"
    same_time = (line % ("false", "2026-01-01T00:00:00.000000Z")).encode()
    assert run(empty, "players", "import", "-", stdin=same_time).output == "imported 0, updated 0, already held 1\n"
    newer = (line % ("false", "2026-06-01T00:00:00.000000Z")).encode()
    assert run(empty, "players", "import", "-", stdin=newer).output == "imported 0, updated 1, already held 0\n"
    [flag] = [json.loads(x) for x in run(empty, "players", "export").output.splitlines()]
    assert flag["is_vip"] is False and flag["updated_at"] == "2026-06-01T00:00:00.000000Z"


def test_players_import_merges_by_time_across_chunks_and_repeats(empty):
    def line(player, vip, month):
        return (f'{{"partner_id": "casino_alpha", "player_login": "{player}", "is_vip": {vip},'
                f' "updated_at": "2026-{month:02d}-01T00:00:00.000000Z", "updated_by": "ops"}}')

    held = "\n".join(line(f"p{n}", "true", 6) for n in range(0, 3000, 2)) + "\n"  # even players, June
    result = run(empty, "players", "import", "-", stdin=held.encode())
    assert result.output == "imported 1500, updated 0, already held 0\n"
    lines = []
    for n in range(3000):
        lines.append(line(f"p{n}", "false", 3 if n % 4 == 0 else 9))  # older for every 4th, newer otherwise
    lines.insert(1500, line("p1", "true", 10))  # p1 again, in another chunk: newer than its first line
    lines.insert(10, line("p3", "true", 1))  # p3 again, in the same chunk as its first line: older
    result = run(empty, "players", "import", "-", stdin=("\n".join(lines) + "\n").encode())
    # odd players are new (1500, p1 and p3 each once, their second line an update and a hold); even
    # players held in June: every 4th older (held), the rest newer (updated).
    assert result.output == "imported 1500, updated 751, already held 751\n", result.output
    flags = {f["player_login"]: f for f in map(json.loads, run(empty, "players", "export").output.splitlines())}
    assert len(flags) == 3000
    assert flags["p0"]["is_vip"] is True and flags["p2"]["is_vip"] is False
    assert flags["p1"]["is_vip"] is True and flags["p1"]["updated_at"].startswith("2026-10")
    assert flags["p3"]["is_vip"] is False and flags["p3"]["updated_at"].startswith("2026-09")


@pytest.mark.whole
def test_an_import_killed_midway_keeps_whole_pieces_and_the_same_import_again_finishes_it(tmp_path):
    database = tmp_path / "killed.db"
    app = new_app(database)
    post_event(app.test_client(), valid_event("bet", n="before"))
    app.extensions["store"].close()
    count = 100_000
    lines = [
        json.dumps({"id": n, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x",
                    "event": valid_event("bet", n=n)})
        for n in range(1, count + 1)
    ]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "BACKUP_API_DATABASE": str(database), "BACKUP_API_JWT_SECRET": SECRET}
    # Pieces of 50 ms: many of them, whatever the machine's speed.
    code = ("import sys; from backup_api.storage.sqlstore import SQLStore; SQLStore.IMPORT_HOLD_S = 0.05;"
            " from flask.cli import main; sys.argv[0] = 'flask'; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, "--app", "backup_api", "events", "import",
                             str(tmp_path / "big.jsonl")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Kill it once a piece is stored, not before.
        deadline = time.monotonic() + 60
        reader = sqlite3.connect(database.as_uri() + "?mode=ro", uri=True)
        while time.monotonic() < deadline and reader.execute("SELECT count(*) FROM events").fetchone()[0] < 2:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        reader.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    app = new_app(database)
    check = run(app, "db", "check")
    assert check.exit_code == 0, check.output
    kept = [json.loads(line)["event"]["n"] for line in run(app, "events", "export").output.splitlines()]
    assert kept[0] == "before" and 0 < len(kept) - 1 < count
    assert kept[1:] == list(range(1, len(kept)))  # the file's first lines, whole
    again = run(app, "events", "import", str(tmp_path / "big.jsonl"))
    assert again.output == f"imported {count - len(kept) + 1}, already held {len(kept) - 1}\n", again.output
    assert [json.loads(line)["event"]["n"] for line in run(app, "events", "export").output.splitlines()] == [
        "before", *range(1, count + 1)]
    app.extensions["store"].close()


def test_db_check_reports_and_fails_on_a_damaged_file(source, tmp_path):
    result = run(source, "db", "check")
    assert result.exit_code == 0
    assert f"layout: {storage.SCHEMA_VERSION}" in result.output and "integrity_check: ok" in result.output
    assert "events: 5" in result.output and "players: 2" in result.output
    source.extensions["store"].close()
    # Damage an index page: the file still opens, integrity_check finds it.
    path = tmp_path / "source.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_events_partner_id'").fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\x00\x07" * 8)
    damaged = new_app(path)
    result = run(damaged, "db", "check")
    assert result.exit_code == 1, result.output
    assert "integrity_check: ok" not in result.output and "integrity_check: " in result.output
    damaged.extensions["store"].close()


def test_db_restore_replaces_the_database_and_keeps_the_old_one(source, tmp_path):
    snapshot = tmp_path / "snap.db"
    assert run(source, "db", "snapshot", str(snapshot)).exit_code == 0
    expected = run(source, "events", "export").output
    source.extensions["store"].close()
    target = new_app(tmp_path / "live.db")
    post_event(target.test_client(), valid_event("bet", n="lost after the snapshot"))
    result = run(target, "db", "restore", str(snapshot))
    assert result.exit_code == 0, result.output
    assert "restored" in result.output and "5 events, 2 players" in result.output
    kept = [p for p in os.listdir(tmp_path) if p.startswith("live.db.replaced-")]
    assert len(kept) == 1 and f"kept as {tmp_path / kept[0]}" in result.output
    assert oct(os.stat(tmp_path / "live.db").st_mode & 0o777) == "0o600"
    restored = new_app(tmp_path / "live.db")
    assert run(restored, "events", "export").output == expected
    assert run(restored, "db", "check").exit_code == 0
    restored.extensions["store"].close()
    old = new_app(tmp_path / kept[0])
    assert "lost after the snapshot" in run(old, "events", "export").output
    old.extensions["store"].close()


@sqlite_only
def test_db_restore_refuses_a_bad_snapshot_and_changes_nothing(empty, tmp_path):
    post_event(empty.test_client(), valid_event("bet"))
    before = run(empty, "events", "export").output
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    other_layout = tmp_path / "old.db"
    conn = sqlite3.connect(other_layout)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    conn.close()
    for snapshot, message in ((not_sqlite, "not a SQLite database"), (other_layout, "layout 0")):
        result = run(empty, "db", "restore", str(snapshot))
        assert result.exit_code == 1 and message in result.output, result.output
    assert run(empty, "db", "restore", str(tmp_path / "missing.db")).exit_code == 2
    database = Path(empty.extensions["store"].path)
    assert [p for p in os.listdir(database.parent) if ".replaced-" in p] == []
    again = new_app(database)
    assert run(again, "events", "export").output == before
    again.extensions["store"].close()


@pytest.mark.whole
def test_db_restore_refuses_while_a_server_uses_the_database(source, tmp_path):
    snapshot = tmp_path / "snap.db"
    run(source, "db", "snapshot", str(snapshot))
    database = tmp_path / "served.db"
    with Server(database, SECRET) as server:
        token = make_token()
        assert server.request("POST", "/player-events", valid_event("bet"), token=token)[0] == 200
        env = {**os.environ, "BACKUP_API_DATABASE": str(database), "BACKUP_API_JWT_SECRET": SECRET}
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "db", "restore",
                                 str(snapshot)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "in use by another process" in result.stderr
        assert server.request("GET", "/healthz")[0] == 200
        status, _, body = server.request("GET", "/player-events?partner_id=casino_alpha", token=token)
        assert status == 200 and len(body["events"]) == 1


@pytest.mark.whole
def test_the_restore_procedure_end_to_end(tmp_path):
    """Serve, write, snapshot, write more, stop, restore, serve: the snapshot's events come back over HTTP."""
    database = tmp_path / "live" / "backup.db"
    env = {**os.environ, "BACKUP_API_DATABASE": str(database), "BACKUP_API_JWT_SECRET": SECRET}
    token = make_token()

    def command(*args):
        return subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    def read_all(server):
        status, _, body = server.request("GET", "/player-events?partner_id=casino_alpha&limit=1000", token=token)
        assert status == 200 and body["next"] is None
        return body["events"]

    with Server(database, SECRET) as server:
        for n in range(20):
            assert server.request("POST", "/player-events", valid_event("bet", n=n), token=token)[0] == 200
        snapshot = tmp_path / "backups" / "snap.db"
        assert command("db", "snapshot", str(snapshot)).returncode == 0
        held = read_all(server)
        for n in range(20, 30):
            assert server.request("POST", "/player-events", valid_event("bet", n=n), token=token)[0] == 200
        assert len(read_all(server)) == 30
    result = command("db", "restore", str(snapshot))
    assert result.returncode == 0, result.stderr
    assert command("db", "check").returncode == 0
    with Server(database, SECRET) as server:
        assert read_all(server) == held
        assert server.request("POST", "/player-events", valid_event("bet", n=99), token=token)[0] == 200
        assert len(read_all(server)) == 21


def test_storage_restore_refuses_a_database_in_use(tmp_path):
    store = storage.open_store(str(tmp_path / "open.db"))
    snapshot = tmp_path / "snap.db"
    store.snapshot(str(snapshot))
    with pytest.raises(storage.StorageError, match="in use"):
        storage.sqlite_files.restore(str(snapshot), store.path)
    kept, events, players = store.restore(str(snapshot))
    assert kept and (events, players) == (0, 0)


def test_the_highest_id_an_import_keeps_leaves_new_events_above_it(empty):
    line = ('{"id": 9007199254740991, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x", "event": '
            + ODD_EVENTS[0] + "}\n")
    assert run(empty, "events", "import", "-", stdin=line.encode()).exit_code == 0
    top = line.replace("9007199254740991", "9223372036854775807")
    refused = run(empty, "events", "import", "-", stdin=top.encode())
    assert refused.exit_code == 1 and "9007199254740991" in refused.output  # says what the limit is
    client = empty.test_client()
    assert post_event(client, valid_event("bet", n=1)).status_code == 200
    page = client.get("/player-events?partner_id=casino_alpha", headers={"Authorization": f"Bearer {make_token()}"})
    assert [e["id"] for e in page.get_json()["events"]] == [9007199254740991, 9007199254740992]
    assert client.get("/healthz").status_code == 200


def test_times_before_the_year_1000_go_out_and_back_byte_identical(empty, tmp_path):
    lines = "".join(
        f'{{"id": {n}, "received_at": "{when}", "sub": "x", "event": {ODD_EVENTS[n - 1]}}}\n'
        for n, when in enumerate(["0001-01-01T00:00:00.000000Z", "0999-05-01T10:00:00.500000Z",
                                  "1969-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"], 1)
    )
    result = run(empty, "events", "import", "-", stdin=lines.encode())
    assert result.exit_code == 0, result.output
    exported = run(empty, "events", "export").output
    assert exported == lines
    again = new_app(tmp_path / "again.db")
    try:
        assert run(again, "events", "import", "-", stdin=exported.encode()).exit_code == 0
        assert run(again, "events", "export").output == exported
    finally:
        again.extensions["store"].close()


def test_an_import_past_one_chunk_names_the_conflicting_line_and_counts_the_held(empty):
    def line(n, event):
        return f'{{"id": {n}, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x", "event": {event}}}'

    def event(n, amount=1):
        return ('{"partner_id":"casino_alpha","player_login":"p","event_type":"bet",'
                f'"amount":{amount},"event_id":"e{n}"}}')

    lines = [line(n, event(n)) for n in range(1, 2501)]
    lines[1799] = line(1800, event(5))  # line 1800 resends line 5's event: held, not a conflict
    result = run(empty, "events", "import", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.output == "imported 2499, already held 1\n", result.output
    more = [line(n, event(n)) for n in range(3001, 4501)]
    more[1199] = line(4200, event(7, amount=9))  # line 1200 reuses event_id e7 with other content
    result = run(empty, "events", "import", "-", stdin=("\n".join(more) + "\n").encode())
    assert result.exit_code == 1 and result.output.startswith("Error: line 1200: "), result.output
    assert "'e7'" in result.output and "nothing was imported" in result.output


def _export_lines(count: int) -> list[str]:
    event = '{{"partner_id":"casino_alpha","player_login":"p","event_type":"bet","amount":{n}.5,"event_id":"e{n}"}}'
    return [f'{{"id": {n}, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x", "event": {event.format(n=n)}}}'
            for n in range(1, count + 1)]


@pytest.mark.parametrize("workers", [1, 2])
def test_lines_checked_by_workers_come_back_in_order_as_checked_here(workers, monkeypatch):
    from backup_api import export_lines, loading

    monkeypatch.setattr(loading, "worker_count", lambda: workers)
    lines = [(text + "\n").encode() for text in _export_lines(3 * loading.BLOCK_LINES + 7)]
    got = list(loading.checked_lines(lines, export_lines.load_exported_row))
    assert got == [export_lines.load_exported_row(raw.rstrip(b"\n")) for raw in lines]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_line_in_a_later_block_is_named_by_its_number(workers, monkeypatch):
    from backup_api import export_lines, loading

    monkeypatch.setattr(loading, "worker_count", lambda: workers)
    lines = [(text + "\n").encode() for text in _export_lines(2 * loading.BLOCK_LINES + 500)]
    bad = loading.BLOCK_LINES + 321
    lines[bad - 1] = lines[bad - 1].replace(b'"amount":', b'"amount":-')
    seen = []
    with pytest.raises(loading.LineError) as raised:
        for record in loading.checked_lines(lines, export_lines.load_exported_row):
            seen.append(record[0])
    assert isinstance(raised.value.__cause__, export_lines.ValidationError) and "amount" in str(raised.value)
    assert raised.value.line == bad and seen == list(range(1, bad))


def test_an_import_past_one_block_names_a_bad_line_and_ids_out_of_order(empty):
    lines = _export_lines(5000)
    lines[4320] = lines[4320].replace('"amount":4321.5', '"amount":"4321.5"')  # a string, not a number
    result = run(empty, "events", "import", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.exit_code == 1 and result.output.startswith("Error: line 4321: "), result.output
    assert "amount" in result.output and "nothing was imported" in result.output
    lines = _export_lines(5000)
    lines[4499] = lines[4499].replace('"id": 4500,', '"id": 12,')  # checked by the store, not the line
    result = run(empty, "events", "import", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.exit_code == 1 and result.output.startswith("Error: line 4500: id 12 does not follow"), result.output
    result = run(empty, "events", "export")
    assert result.output == ""


_PARENT = os.getpid()


def _load_that_hangs_in_a_worker(raw: bytes):
    if os.getpid() != _PARENT:
        time.sleep(30)
    return raw


def test_a_worker_that_never_answers_stops_the_import_in_bounded_time(monkeypatch):
    from backup_api import loading

    monkeypatch.setattr(loading, "worker_count", lambda: 2)
    monkeypatch.setattr(loading, "BLOCK_TIMEOUT_S", 1)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="lines 1 to 2000 gave no answer"):
        list(loading.checked_lines([b"x\n"] * 5000, _load_that_hangs_in_a_worker))
    assert time.monotonic() - started < 10


@pytest.mark.whole
def test_an_import_into_a_new_database_leaves_no_secret_beside_it(source, tmp_path):
    """Commands that need no token open no secret: a stray jwt-secret would sign tokens nobody meant."""
    exported = run(source, "events", "export").output.encode()
    target = tmp_path / "elsewhere" / "new.db"
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "events", "import", "-"],
                            input=exported, cwd=ROOT, capture_output=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")},
                                 "BACKUP_API_DATABASE": str(target)})
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in target.parent.iterdir()) == ["new.db"]
