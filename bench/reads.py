"""make bench, the way out: reading pages from a big store, importing an export, starting for a test suite."""

import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from backup_api import create_app, storage
from backup_api.cursors import make_cursor
from backup_api.wire import format_event
from tests.helpers import SECRET, make_token
from tests.server import ROOT, Server

PAGE = 1000
IMPORT_EVENTS = (100_000, 400_000)


def page_reads(filled: Path, reads: int = 50) -> dict:
    """Median time to read a page of PAGE events at random places of the filled store: in the store, over HTTP."""
    conn = sqlite3.connect(filled)
    (last,) = conn.execute("SELECT max(id) FROM events").fetchone()
    conn.close()
    places = [random.Random(n).randrange(last - PAGE) for n in range(reads)]
    store = storage.open_store(str(filled))
    direct = []
    for after in places:
        started = time.perf_counter()
        events, _ = store.read_events("casino_alpha", after=after, limit=PAGE)
        direct.append(time.perf_counter() - started)
        assert len(events) == PAGE
    filtered = []
    for after in places[:10]:
        started = time.perf_counter()
        store.read_events("casino_alpha", after=after, limit=PAGE, player_login="player7")
        filtered.append(time.perf_counter() - started)
    store.close()
    token = make_token(lifetime=86400)
    # Cursors for those places, made as the server makes them (same secret, same query).
    app = create_app({"DATABASE": str(filled), "JWT_SECRET": SECRET})
    with app.test_request_context():
        cursors = [make_cursor(after, {"partner_id": "casino_alpha"}) for after in places]
    app.extensions["store"].close()
    over_http = []
    with Server(filled, SECRET) as server:
        for cursor in cursors:
            started = time.perf_counter()
            status, _, body = server.request(
                "GET", f"/player-events?partner_id=casino_alpha&limit={PAGE}&after={cursor}", token=token
            )
            over_http.append(time.perf_counter() - started)
            assert status == 200 and len(body["events"]) == PAGE
    return {
        "direct_ms": statistics.median(direct) * 1000,
        "filtered_ms": statistics.median(filtered) * 1000,
        "http_ms": statistics.median(over_http) * 1000,
    }


def export_file(path: Path, count: int) -> None:
    """Write count events as `events export` writes them, half with an event_id."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(1, count + 1):
            event = {
                "partner_id": "casino_alpha",
                "player_login": f"player{i % 1000}",
                "session_id": f"sess_{i}",
                "event_type": "bet",
                "amount": Decimal(f"{i % 500}.{i % 100:02d}"),
                "currency": "EUR",
                "occurred_at": "2026-11-24T05:00:00.000Z",
            }
            if i % 2:
                event["event_id"] = f"import-{i}"
            f.write(format_event(i, 1764000000000000 + i, storage.dumps(event), "bench") + "\n")


def import_rates(folder: Path, database_for=None, floor: bool = True) -> dict:
    """Events a second imported by `events import` (a process of its own), and its peak memory by file size.

    database_for(count) names the database to import into (default: a new SQLite file in folder).
    """
    out = {}
    for count in IMPORT_EVENTS:
        source = folder / f"export-{count}.jsonl"
        export_file(source, count)
        database = folder / f"import-{count}.db" if database_for is None else database_for(count)
        code = (
            "import resource, sys, time\n"
            "from backup_api import create_app\n"
            f"app = create_app({{'DATABASE': {str(database)!r}, 'JWT_SECRET': {SECRET!r}}})\n"
            "started = time.perf_counter()\n"
            f"result = app.test_cli_runner().invoke(args=['events', 'import', {str(source)!r}])\n"
            "elapsed = time.perf_counter() - started\n"
            "print(result.output.strip(), elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        printed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                 check=True, timeout=3600).stdout.split()
        assert printed[:2] == ["imported", f"{count},"], printed
        out[count] = {"rate": count / float(printed[-2]), "peak_mib": int(printed[-1]) / 1024}
        source.unlink()
    if floor:
        out["floor"] = _import_floor(folder, IMPORT_EVENTS[0])
    return out


def _import_floor(folder: Path, count: int) -> float:
    """Events a second for the least an import can do: json.loads each line, insert it, one transaction."""
    source = folder / "floor.jsonl"
    export_file(source, count)
    store = storage.open_store(str(folder / "floor.db"))
    conn = store._conn
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    with open(source, "rb") as f:
        for raw in f:
            line = json.loads(raw)
            event = line["event"]
            conn.execute(
                "INSERT INTO events (id, partner_id, event_id, player_login, received_at, sub, event)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (line["id"], event["partner_id"], event.get("event_id"), event["player_login"], 0, line["sub"],
                 json.dumps(event)),
            )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    store.close()
    return count / elapsed


EXECUTABLE = ROOT / "dist" / "game-backup-api"


def start_up(folder: Path, starts: int = 5, command: list[str] | None = None) -> float:
    """Median seconds from starting the server process (flask serve, or command) to its first 200 on /healthz."""
    times = []
    for _ in range(starts):
        started = time.perf_counter()
        # A new database each time; the executable keeps its data under its working directory.
        workdir = Path(tempfile.mkdtemp(prefix="start", dir=folder))
        server = Server(workdir / "start.db", SECRET)
        server.start(command=command, cwd=workdir) if command else server.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if server.request("GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.005)
            times.append(time.perf_counter() - started)
        finally:
            server.stop()
    return statistics.median(times)
