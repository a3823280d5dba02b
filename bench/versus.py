"""Release against release: this checkout and earlier releases (bench/release.py), served from one venv, the
same load in turns: single events at 1 and at 8 connections on SQLite and on a throwaway PostgreSQL, batches
of 500, and an import; throughput and the server's CPU per request.

For each load every release's server is up at once, each on an empty database of its own, and wrk
drives them in turns of TURN_SECONDS, TURNS times, the order rotating each turn. The machine's speed
moves over minutes (twofold in an afternoon here); releases measured a second apart meet the same
machine, and a ratio is the median of the turns' ratios. (Rounds of a new server for each release, 5 s
each, put 0.74 to 1.21 between the same two builds in five runs; turns of 1 s of the two alone, 0.92 to
0.945 in three.)

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

TURNS = int(os.environ.get("BENCH_VERSUS_TURNS", "12"))
TURN_SECONDS = int(os.environ.get("BENCH_VERSUS_TURN_SECONDS", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # of the import, a new database each
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


def rotated(labels: list[str], turn: int) -> list[str]:
    """The order of a turn: each label first once every len(labels) turns."""
    shift = turn % len(labels)
    return labels[shift:] + labels[:shift]


def http_turns(trees: dict[str, Path | None], databases: dict, connections: int, batch: int) -> dict[str, dict]:
    """Every release's server at once, each on its database: a second of warm-up each, then TURNS turns.

    Returns, per label, the requests per second of each turn and the server's CPU per request over all.
    """
    servers = {}
    try:
        for label, tree in trees.items():
            servers[label] = release.serve(tree, databases[label], SECRET)
        for server in servers.values():
            wrk(server.port, f"warm{time.time_ns()}", batch=batch, seconds=1, connections=connections)
        found = {label: {"rps": [], "requests": 0, "cpu": 0.0} for label in trees}
        for turn in range(TURNS):
            for label in rotated(list(trees), turn):
                pid = servers[label].proc.pid
                before = cpu_seconds(pid)
                load = wrk(servers[label].port, f"run{time.time_ns()}", batch=batch, seconds=TURN_SECONDS,
                           connections=connections)
                found[label]["cpu"] += cpu_seconds(pid) - before
                found[label]["requests"] += load["requests"]
                found[label]["rps"].append(load["rps"])
        return {label: {"rps": got["rps"], "cpu_us": got["cpu"] / got["requests"] * 1e6}
                for label, got in found.items()}
    finally:
        for server in servers.values():
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
        found: dict[tuple[str, str], dict] = {}
        server = postgres.Throwaway()
        databases = postgres.Databases(server.url)
        try:
            for load, connections, batch, on_postgres in LOADS:
                held = {label: databases.create() if on_postgres else folder / f"{index}-{time.time_ns()}.db"
                        for index, label in enumerate(trees)}
                try:
                    found.update({(label, load): got for label, got in
                                  http_turns(trees, held, connections, batch).items()})
                finally:
                    if on_postgres:
                        for database in held.values():
                            databases.drop(database)
            imports: dict[str, list[float]] = {label: [] for label in trees}
            for turn in range(ROUNDS):
                for label in rotated(list(trees), turn):
                    imports[label].append(import_rate(trees[label], folder, lines))
            found.update({(label, "import"): {"rps": rates, "cpu_us": None} for label, rates in imports.items()})
        finally:
            server.stop()
    rows = []
    for load in (*(load for load, *_ in LOADS), "import"):
        head = found["HEAD", load]
        for label in trees:
            if label == "HEAD":
                continue
            old = found[label, load]
            ratios = [new / was for new, was in zip(head["rps"], old["rps"], strict=True)]
            low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
            unit = "events/s" if load == "import" else "req/s"
            cpu = "" if load == "import" else f"; CPU per request {head['cpu_us']:,.0f} / {old['cpu_us']:,.0f} µs"
            turns = "rounds" if load == "import" else "turns"
            rows.append(f"| this build / {label}: {load} | {statistics.median(head['rps']):,.0f} /"
                        f" {statistics.median(old['rps']):,.0f} {unit}, {statistics.median(ratios):.2f}"
                        f" (quartiles of {len(ratios)} {turns}: {low:.2f}, {high:.2f}){cpu} | >= 1 |")
    return rows


if __name__ == "__main__":
    print("\n".join(run()))
