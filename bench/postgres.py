"""The PostgreSQL store beside SQLite: single events and batches with 1 and 2 server processes, imports.

A throwaway PostgreSQL 16 (pgserver, as the tests use) on this same machine: its 2 cores are shared
by wrk, the server processes and PostgreSQL. Run alone with `python -m bench.postgres`.
"""

import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import reads
from bench.run import CONNECTIONS, ROUNDS, wrk
from tests import postgres
from tests.helpers import SECRET
from tests.server import Server


def wrk_split(ports: list[int], prefix: str, batch: int = 1) -> dict:
    """Drive several server processes at once, the connections shared out (as a load balancer would)."""
    results: list[dict] = [{}] * len(ports)

    def drive(i: int) -> None:
        results[i] = wrk(ports[i], f"{prefix}p{i}", batch=batch, connections=CONNECTIONS // len(ports))

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "rps": sum(r["rps"] for r in results),
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
    }


def measure(folder: Path, databases: postgres.Databases) -> dict:
    """Take turns over ROUNDS rounds: SQLite, PostgreSQL with 1 and 2 processes, the PostgreSQL floor, batches."""
    runs: dict[str, list[dict]] = {
        "sqlite": [], "pg1": [], "pg2": [], "pg_floor": [], "sqlite_batch": [], "pg_batch": [], "pg2_batch": [],
    }
    for round_ in range(ROUNDS):
        stamp = f"{round_}{time.time_ns()}"
        for name, processes, module, batch in (
            ("sqlite", 1, "backup_api", 1),
            ("pg1", 1, "backup_api", 1),
            ("pg2", 2, "backup_api", 1),
            ("pg_floor", 1, "bench.floor", 1),
            ("sqlite_batch", 1, "backup_api", 500),
            ("pg_batch", 1, "backup_api", 500),
            ("pg2_batch", 2, "backup_api", 500),
        ):
            url = None if name.startswith("sqlite") else databases.create()
            database = folder / f"{name}{stamp}.db" if url is None else url
            servers = [Server(database, SECRET, module=module).start() for _ in range(processes)]
            try:
                ports = [server.port for server in servers]
                wrk_split(ports, f"warm{name}{stamp}", batch=batch) if batch == 1 else None
                result = wrk_split(ports, f"{name}{stamp}", batch=batch)
                if batch > 1:
                    result["rps"] *= batch  # events a second
                runs[name].append(result)
            finally:
                for server in servers:
                    server.stop()
                if url is not None:
                    databases.drop(url)
    return {name: {k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")}
            for name, results in runs.items()} | {"rounds": runs}


def run() -> tuple[dict, dict]:
    """Start a throwaway PostgreSQL; return the HTTP measurements and the import rates into it."""
    server = postgres.Throwaway()
    databases = postgres.Databases(server.url)
    try:
        with tempfile.TemporaryDirectory(prefix="backup-api-bench-pg-") as tmp:
            folder = Path(tmp)
            http = measure(folder, databases)
            made = []

            def database_for(count):
                made.append(databases.create())
                return made[-1]

            imports = reads.import_rates(folder, database_for=database_for, floor=False)
            for url in made:
                databases.drop(url)
    finally:
        server.stop()
    return http, imports


def table_lines(http: dict, imports: dict) -> list[str]:
    """The table's PostgreSQL rows."""
    small, large = reads.IMPORT_EVENTS

    def single(name):
        m = http[name]
        return f"{m['rps']:,.0f} req/s, p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms"

    pg_ratios = [p["rps"] / s["rps"] for p, s in zip(http["rounds"]["pg1"], http["rounds"]["sqlite"], strict=True)]
    pg2_ratios = [p["rps"] / s["rps"] for p, s in zip(http["rounds"]["pg2"], http["rounds"]["sqlite"], strict=True)]
    return [
        f"| SQLite service, single events (this section's own rounds) | {single('sqlite')} | |",
        f"| PostgreSQL service, 1 process, single events | {single('pg1')} | |",
        f"| PostgreSQL, 1 process / SQLite (median of rounds) | {statistics.median(pg_ratios):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in pg_ratios)}) | >= 0.6 |",
        f"| PostgreSQL service, 2 processes (4 connections each), single events | {single('pg2')};"
        f" / SQLite {statistics.median(pg2_ratios):.2f} | |",
        f"| PostgreSQL floor: bare Flask and the store, 1 process | {single('pg_floor')} | |",
        f"| batches of 500: SQLite / PostgreSQL, 1 process / PostgreSQL, 2 processes"
        f" | {http['sqlite_batch']['rps']:,.0f} / {http['pg_batch']['rps']:,.0f} /"
        f" {http['pg2_batch']['rps']:,.0f} events/s | PostgreSQL >= 20,000 |",
        f"| `events import` into PostgreSQL, {small:,} / {large:,} events | {imports[small]['rate']:,.0f} /"
        f" {imports[large]['rate']:,.0f} events/s | |",
    ]


def main() -> None:
    """Measure and print the PostgreSQL rows alone."""
    http, imports = run()
    print("\n".join(table_lines(http, imports)))


if __name__ == "__main__":
    main()
