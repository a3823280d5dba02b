"""Release against release: this checkout and earlier releases (bench/release.py), served from one venv, the
same load in turns: single events at 1 and at 8 connections on SQLite and on a throwaway PostgreSQL, batches
of 500, and an import; throughput and the server's CPU per request.

python -m bench.versus prints its rows alone; make bench prints them with the rest.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import release
from bench.reads import export_file
from bench.run import wrk
from tests import postgres
from tests.helpers import SECRET

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_VERSUS_SECONDS", "5"))
IMPORTED = int(os.environ.get("BENCH_VERSUS_IMPORTED", "50000"))
# (label, connections, events per request, on PostgreSQL)
LOADS = (("single events, 1 connection", 1, 1, False), ("single events, 8 connections", 8, 1, False),
         ("batches of 500, 8 connections", 8, 500, False),
         ("PostgreSQL, single events, 1 connection", 1, 1, True),
         ("PostgreSQL, single events, 8 connections", 8, 1, True))


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_load(tree: Path | None, database, connections: int, batch: int) -> dict:
    """A new server of the release at tree on an empty database: a second of warm-up, then SECONDS of wrk."""
    server = release.serve(tree, database, SECRET)
    try:
        wrk(server.port, f"warm{time.time_ns()}", batch=batch, seconds=1, connections=connections)
        before = cpu_seconds(server.proc.pid)
        found = wrk(server.port, f"run{time.time_ns()}", batch=batch, seconds=SECONDS, connections=connections)
        found["cpu_us"] = (cpu_seconds(server.proc.pid) - before) / found["requests"] * 1e6
        return found
    finally:
        server.stop()


def import_rate(tree: Path | None, folder: Path, lines: Path) -> float:
    """`events import` of the file into an empty database by the release at tree: events per second."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BACKUP_API_")}
    env.update(BACKUP_API_DATABASE=str(folder / f"import-{time.time_ns()}.db"), BACKUP_API_LOG_LEVEL="WARNING")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "events", "import", str(lines)],
                   cwd=tree or release.ROOT, env=env, capture_output=True, check=True, timeout=900)
    return IMPORTED / (time.perf_counter() - started)


def run() -> list[str]:
    """Measure; return the benchmark table's rows."""
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-versus-") as tmp:
        folder = Path(tmp)
        trees: dict[str, Path | None] = {"HEAD": None}
        trees.update({label: release.unpack(commit, folder) for label, commit in release.releases()})
        lines = folder / "events.jsonl"
        export_file(lines, IMPORTED)
        found = {(label, load): [] for label in trees for load, *_ in (*LOADS, ("import",))}
        server = postgres.Throwaway()
        databases = postgres.Databases(server.url)
        try:
            for _ in range(ROUNDS):
                for load, connections, batch, on_postgres in LOADS:
                    for label, tree in trees.items():
                        database = databases.create() if on_postgres else folder / f"{time.time_ns()}.db"
                        try:
                            found[label, load].append(http_load(tree, database, connections, batch))
                        finally:
                            if on_postgres:
                                databases.drop(database)
                for label, tree in trees.items():
                    found[label, "import"].append({"rps": import_rate(tree, folder, lines), "cpu_us": None})
        finally:
            server.stop()
    rows = []
    for load in (*(load for load, *_ in LOADS), "import"):
        head = found["HEAD", load]
        for label in trees:
            if label == "HEAD":
                continue
            old = found[label, load]
            ratios = [new["rps"] / was["rps"] for new, was in zip(head, old, strict=True)]
            unit = "events/s" if load == "import" else "req/s"
            cpu = ("" if load == "import" else
                   f"; CPU per request {statistics.median(r['cpu_us'] for r in head):,.0f} /"
                   f" {statistics.median(r['cpu_us'] for r in old):,.0f} µs")
            rows.append(f"| this build / {label}: {load} | {statistics.median(r['rps'] for r in head):,.0f} /"
                        f" {statistics.median(r['rps'] for r in old):,.0f} {unit}, {statistics.median(ratios):.2f}"
                        f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)}){cpu} | >= 1 |")
    return rows


if __name__ == "__main__":
    print("\n".join(run()))
