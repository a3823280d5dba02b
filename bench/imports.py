"""Restores at the speed of the database: `events import`, `players import` and batches, each against its floor.

The floor of an import is the very rows it stored, read back and inserted again with executemany in
one transaction into a database made by the service's own DDL (WAL, its indexes): what the
database alone needs. Measured in the same run, in turns; ratios of medians.

python -m bench.imports prints its rows alone (BENCH_IMPORT_FULL=0 skips the 2-million-event case);
make bench prints them with the rest.
"""

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backup_api import storage
from backup_api.wire import format_player
from bench.reads import export_file
from tests.helpers import SECRET, file_with_a_long_line
from tests.server import ROOT, Server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EVENTS = 200_000
PLAYERS = 100_000
MEMORY_LINES = (200_000, 2_000_000)
FULL = int(os.environ.get("BENCH_IMPORT_FULL", "1"))
DURING_LINES = int(os.environ.get("BENCH_DURING_LINES", "1000000"))

_COLUMNS = "id, partner_id, event_id, content_key, player_login, received_at, sub, event"


def cli(database: Path, *args: str) -> tuple[str, float, float]:
    """Run one command of the service in a process of its own; return its output, seconds, peak MiB.

    The peak is the larger of the process's own and its largest worker's (an import checks its
    lines in worker processes).
    """
    code = (
        "import resource, sys, time\n"
        "from backup_api import create_app\n"
        f"app = create_app({{'DATABASE': {str(database)!r}, 'JWT_SECRET': {SECRET!r}}})\n"
        "started = time.perf_counter()\n"
        f"result = app.test_cli_runner().invoke(args={list(args)!r})\n"
        "elapsed = time.perf_counter() - started\n"
        "peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "print(result.output.strip().replace(' ', '_'), elapsed, peak)\n"
    )
    printed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=7200).stdout.split()
    return printed[0].replace("_", " "), float(printed[1]), int(printed[2]) / 1024


def floor(rows_from: Path, into: Path, table: str, columns: str, where: str = "", read: Path | None = None) -> float:
    """Seconds to insert again the rows of table in rows_from (those the import stored) into into, in one go.

    read: a file whose every line is read and parsed as JSON (json.loads) first, in the time: the floor of
    an import that reads its lines (issue 41's), not only the database's.
    """
    source = sqlite3.connect(rows_from)
    rows = source.execute(f"SELECT {columns} FROM {table} {where}").fetchall()
    source.close()
    store = storage.open_store(str(into))  # the service's own DDL, WAL
    store.close()
    conn = sqlite3.connect(into, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    marks = ", ".join("?" * len(columns.split(",")))
    started = time.perf_counter()
    if read is not None:
        with read.open("rb") as lines:
            for line in lines:
                json.loads(line)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def sqlite_utils_insert(source: Path, database: Path) -> float:
    """Seconds `sqlite-utils insert --nl` takes to load the file's lines, as they are, into a new table: what a
    user might run instead of an import."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "sqlite-utils"), "insert", str(database), "events",
                    str(source), "--nl"], check=True, capture_output=True, timeout=3600)
    elapsed = time.perf_counter() - started
    remove(database)
    return elapsed


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def players_file(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(format_player(storage.PlayerRecord("casino_alpha", f"player{i}", bool(i % 2),
                                                       "2026-11-24T05:12:03.120512Z", "bench")) + "\n")


def filled(folder: Path, count: int) -> Path:
    """A database holding count events (kept in bench/results between runs), written fast: rows straight in."""
    kept = ROOT / "bench" / "results" / f"import-base-{count}-layout{storage.SCHEMA_VERSION}.db"
    if kept.exists():
        return kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    source = folder / "base.jsonl"
    export_file(source, count)
    partial = Path(f"{kept}.partial")
    remove(partial)
    cli(partial, "events", "import", str(source))
    source.unlink()
    conn = sqlite3.connect(partial)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    partial.rename(kept)
    return kept


def shifted_export(path: Path, count: int, offset: int) -> None:
    """An export of count new events whose ids start after offset (for a database that holds offset events)."""
    with open(path, "w", encoding="utf-8") as out:
        tmp = path.with_suffix(".all")
        export_file(tmp, count)
        with open(tmp, encoding="utf-8") as f:
            for line in f:
                number = int(line[7:line.index(",")])
                out.write(line.replace(f'"id": {number},', f'"id": {number + offset},', 1)
                          .replace('"import-', '"more-').replace('"sess_', '"more_sess_'))
        tmp.unlink()


def batches(folder: Path) -> float:
    """Events a second posted over HTTP as batches of 500 by one client (wrk, one connection)."""
    from bench.run import wrk

    with Server(folder / "batches.db", SECRET) as server:
        wrk(server.port, f"bw{time.time_ns()}", batch=500, seconds=2, connections=1)
        return wrk(server.port, f"b{time.time_ns()}", batch=500, connections=1)["rps"] * 500


def writes_during_import(folder: Path, lines: int = DURING_LINES, clients: int = 4) -> dict:
    """The longest single post while `events import` of lines runs on the server's database, clients posting.

    The server is the service as operators run it (its busy timeout 5 s); the import, a process of
    its own. Returns the longest post's seconds, the statuses counted, and the import's seconds.
    """
    import http.client
    import json
    import threading

    from tests.helpers import make_token, valid_event

    source = folder / "during.jsonl"
    export_file(source, lines)
    database = folder / "during.db"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {make_token()}"}
    longest, statuses, done = [0.0], {}, threading.Event()

    def client(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        sent = 0
        while not done.is_set():
            started = time.perf_counter()
            conn.request("POST", "/player-events", json.dumps(valid_event("bet", event_id=f"d{number}-{sent}")),
                         headers)
            response = conn.getresponse()
            response.read()
            longest[0] = max(longest[0], time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            sent += 1
        conn.close()

    with Server(database, SECRET) as server:
        posting = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in posting:
            thread.start()
        try:
            output, seconds, _ = cli(database, "events", "import", str(source))
        finally:
            done.set()
            for thread in posting:
                thread.join(120)
    assert output == f"imported {lines}, already held 0", output
    return {"longest": longest[0], "statuses": statuses, "import_s": seconds}


def ratio_row(measure: str, new: list[float], old: list[float], unit: str, target: str) -> str:
    """A table row: the medians of new and old (rates, a round each), the median of the rounds' ratios, each one."""
    ratio = [n / o for n, o in zip(new, old, strict=True)]
    return (f"| {measure} | {statistics.median(new):,.0f} / {statistics.median(old):,.0f} {unit}:"
            f" {statistics.median(ratio):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratio)}) | {target} |")


def run() -> list[str]:
    """Measure; return the benchmark table's rows."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-imports-") as tmp:
        folder = Path(tmp)
        source = folder / "events.jsonl"
        export_file(source, EVENTS)
        empty = {"import": [], "floor": [], "peak": [], "sqlite-utils": [], "parse floor": []}
        for round_ in range(ROUNDS):
            database = folder / f"empty{round_}.db"
            output, seconds, peak = cli(database, "events", "import", str(source))
            assert output == f"imported {EVENTS}, already held 0", output
            empty["import"].append(EVENTS / seconds)
            empty["peak"].append(peak)
            empty["sqlite-utils"].append(EVENTS / sqlite_utils_insert(source, folder / f"su{round_}.db"))
            empty["floor"].append(EVENTS / floor(database, folder / f"floor{round_}.db", "events", _COLUMNS))
            empty["parse floor"].append(EVENTS / floor(database, folder / f"pfl{round_}.db", "events", _COLUMNS,
                                                       read=source))
            remove(database)
            remove(folder / f"floor{round_}.db")
            remove(folder / f"pfl{round_}.db")
        lines.append(ratio_row(f"`events import` of {EVENTS:,} events into an empty database / its floor",
                               empty["import"], empty["floor"], "events/s", ">= 0.5"))
        lines.append(ratio_row("`events import` / the same floor with every line read and parsed first (json.loads)",
                               empty["import"], empty["parse floor"], "events/s", ">= 0.6"))
        lines.append(ratio_row("`events import` / `sqlite-utils insert --nl` of the same file (which checks nothing),"
                               " each a process of its own", empty["import"], empty["sqlite-utils"], "events/s",
                               ">= 1.2"))

        if FULL:
            base = filled(folder, 2_000_000)
            more = folder / "more.jsonl"
            shifted_export(more, EVENTS, 2_000_000)
            full = {"import": [], "floor": []}
            for round_ in range(max(1, ROUNDS - 1)):
                database = folder / f"full{round_}.db"
                shutil.copyfile(base, database)
                output, seconds, _ = cli(database, "events", "import", str(more))
                assert output == f"imported {EVENTS}, already held 0", output
                full["import"].append(EVENTS / seconds)
                target = folder / f"fullfloor{round_}.db"
                shutil.copyfile(base, target)
                full["floor"].append(EVENTS / floor(database, target, "events", _COLUMNS, "WHERE id > 2000000"))
                remove(database)
                remove(target)
            lines.append(ratio_row("the same into a database holding 2,000,000 events / its floor", full["import"],
                                   full["floor"], "events/s", ">= 0.35"))

        players = folder / "players.jsonl"
        players_file(players, PLAYERS)
        result = {"import": [], "floor": []}
        for round_ in range(ROUNDS):
            database = folder / f"players{round_}.db"
            output, seconds, _ = cli(database, "players", "import", str(players))
            result["import"].append(PLAYERS / seconds)
            result["floor"].append(PLAYERS / floor(database, folder / f"pfloor{round_}.db", "players",
                                                   "partner_id, player_login, is_vip, updated_at, updated_by"))
            remove(database)
            remove(folder / f"pfloor{round_}.db")
        lines.append(ratio_row(f"`players import` of {PLAYERS:,} flags / its floor", result["import"], result["floor"],
                               "flags/s", ">= 0.5"))

        if shutil.which("wrk"):
            rate = batches(folder)
            lines.append(f"| HTTP batches of 500, one client / the import's floor | {rate:,.0f} /"
                         f" {statistics.median(empty['floor']):,.0f} events/s:"
                         f" {rate / statistics.median(empty['floor']):.2f} | >= 0.35 |")

        during = writes_during_import(folder)
        counted = ", ".join(f"{count:,} {status}" for status, count in sorted(during["statuses"].items()))
        lines.append(f"| the longest single post, 4 clients posting during `events import` of {DURING_LINES:,} lines"
                     f" ({during['import_s']:.0f} s) | {during['longest']:.2f} s ({counted}) | <= the busy timeout"
                     " (5 s) |")

        long_line = folder / "long-line.jsonl"
        file_with_a_long_line(long_line, 100)
        output, seconds, peak = cli(folder / "long-line.db", "events", "import", str(long_line))
        assert output.startswith("Error: line 2: the line is longer than"), output
        lines.append(f"| `events import` of a file whose line 2 is 100 MB (numbers): refused, in / peak memory |"
                     f" {seconds:.2f} s / {peak:.0f} MiB | < 5 s / < 300 MiB |")

        if FULL:
            big = folder / "big.jsonl"
            export_file(big, MEMORY_LINES[1])
            _, _, peak = cli(folder / "big.db", "events", "import", str(big))
            lines.append(f"| `events import` peak memory, {MEMORY_LINES[0]:,} / {MEMORY_LINES[1]:,} lines |"
                         f" {statistics.median(empty['peak']):.1f} / {peak:.1f} MiB"
                         f" ({peak / statistics.median(empty['peak']):.2f}) | <= 1.2 |")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
