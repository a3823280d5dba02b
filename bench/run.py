"""make bench: the service against a bare Flask baseline, ingest as the store grows, memory, disk, reads, imports.

Everything is measured in this one run on this machine; what counts is each ratio against a
baseline measured beside it, and medians over rounds, because the machine is shared and noisy.
"""

import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from backup_api import storage
from bench import reads
from tests.helpers import SECRET, make_token
from tests.server import Server

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # what the runs keep between them (a filled database), never committed
# Each run's table, a page of its own in the manual's benchmarks section (never committed either).
RUNS = HERE.parent / "docs" / "benchmarks" / "runs"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 8
WRK_THREADS = 2
FILL = int(os.environ.get("BENCH_FILL", "2000000"))
MEMORY_FIRST, MEMORY_TOTAL = 10000, int(os.environ.get("BENCH_MEMORY_REQUESTS", "200000"))
TOKEN = make_token(lifetime=7 * 86400)


def wrk(port: int, prefix: str, batch: int = 1, seconds: int = SECONDS, connections: int = CONNECTIONS) -> dict:
    """Drive a server with unique events; return requests/s and latency percentiles (ms)."""
    threads = min(WRK_THREADS, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(HERE / "events.lua"), f"http://127.0.0.1:{port}", "--", prefix, TOKEN, str(batch)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 600, check=True).stdout
    match = re.search(r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
                      r"bad_status=(\d+) socket_errors=(\d+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, duration, p50, p99, bad, socket_errors = map(int, match.groups())
    if bad or socket_errors:
        raise RuntimeError(f"wrk saw {bad} non-2xx answers and {socket_errors} socket errors")
    return {"requests": requests, "rps": requests / (duration / 1e6), "p50": p50 / 1000, "p99": p99 / 1000}


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def sample_event(i: int, prefix: str = "fill") -> dict:
    """An event shaped like the ones wrk sends."""
    return {
        "partner_id": "casino_alpha",
        "player_login": f"player{i % 1000}",
        "session_id": f"sess_{prefix}_{i % 97}",
        "event_type": "bet",
        "amount": Decimal(f"{i % 500}.{i % 100:02d}"),
        "currency": "EUR",
        "event_id": f"{prefix}-{i}",
        "occurred_at": "2026-11-24T05:00:00.000Z",
    }


def store_ingest(path: Path, count: int = 20000) -> float:
    """Events per second stored straight into the store, one event per call (as one request does).

    20,000 events: enough that a run on the 2-million-event database measures its steady state,
    not only the first reads of its pages.
    """
    store = storage.open_store(str(path))
    prefix = f"direct{time.time_ns()}"
    events = [sample_event(i, prefix) for i in range(count)]
    started = time.perf_counter()
    for event in events:
        store.add_events([event], "bench")
    elapsed = time.perf_counter() - started
    store.close()
    return count / elapsed


def fill(path: Path, total: int) -> None:
    """Store total events in batches (the 2-million-event database, kept between runs)."""
    store = storage.open_store(str(path), synchronous="NORMAL")
    for start in range(0, total, 10000):
        store.add_events([sample_event(i) for i in range(start, min(total, start + 10000))], "bench")
    store.close()


def disk_per_event(path: Path) -> tuple[float, float]:
    """Bytes on disk per stored event, and the mean size of an event's JSON."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    count, json_bytes = conn.execute("SELECT count(*), sum(length(CAST(event AS BLOB))) FROM events").fetchone()
    conn.close()
    size = path.stat().st_size + sum(
        Path(str(path) + suffix).stat().st_size for suffix in ("-wal", "-shm") if Path(str(path) + suffix).exists()
    )
    return size / count, json_bytes / count


# The peer is not a Flask app: it starts with a command of its own.
PEER = [sys.executable, "-m", "bench.peer", "--port", "0"]


def start(folder: Path, name: str, module: str) -> Server:
    """Start one of the servers compared: the service, the baseline, the floor (Flask modules) or the peer."""
    server = Server(folder / f"{name}.db", SECRET, module=module)
    return server.start(command=PEER) if module == "bench.peer" else server.start()


def http_rounds(folder: Path) -> dict:
    """The service, the bare Flask baseline, the floor and the peer, in turn over ROUNDS rounds."""
    servers = (("service", "backup_api"), ("baseline", "bench.baseline"), ("floor", "bench.floor"),
               ("peer", "bench.peer"))
    results = {name: [] for name, _ in servers}
    for round_ in range(ROUNDS):
        for name, module in servers:
            server = start(folder, f"round{round_}-{name}", module)
            try:
                wrk(server.port, f"warm{round_}{name}", seconds=2)
                results[name].append(wrk(server.port, f"r{round_}{name}{time.time_ns()}"))
            finally:
                server.stop()
    return results


def ingest_growth(folder: Path, filled: Path) -> dict:
    """Ingest with an empty database and with FILL events stored: straight into the store and over HTTP."""
    out = {"direct_empty": [], "direct_full": [], "http_empty": [], "http_full": []}
    for round_ in range(max(2, ROUNDS - 1)):
        empty = folder / f"empty{round_}.db"
        full = folder / f"full{round_}.db"
        shutil.copyfile(filled, full)
        out["direct_empty"].append(store_ingest(empty))
        out["direct_full"].append(store_ingest(full))
        for key, path in (("http_empty", empty), ("http_full", full)):
            with Server(path, SECRET) as server:
                out[key].append(wrk(server.port, f"g{round_}{key}{time.time_ns()}")["rps"])
        full.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(full) + suffix).unlink(missing_ok=True)
    return {key: statistics.median(values) for key, values in out.items()}


def memory(folder: Path) -> tuple[tuple[int, float], tuple[int, float]]:
    """Resident memory of the server after MEMORY_FIRST and after MEMORY_TOTAL requests (about)."""
    readings = []
    with Server(folder / "memory.db", SECRET) as server:
        done = 0
        for target in (MEMORY_FIRST, MEMORY_TOTAL):
            # wrk runs for a time, not a count: run short spans until the count is reached.
            while done < target:
                done += wrk(server.port, f"m{time.time_ns()}", seconds=2 if target - done < 20000 else 10)["requests"]
            readings.append((done, rss_mib(server.proc.pid)))
    return readings[0], readings[1]


def batch_ingest(folder: Path) -> dict:
    """Events per second posted as batches of 500, to the service and to the peer, taking turns."""
    rates = {"service": [], "peer": []}
    for round_ in range(max(2, ROUNDS - 1)):
        for name, module in (("service", "backup_api"), ("peer", "bench.peer")):
            server = start(folder, f"batch{round_}{name}", module)
            try:
                rates[name].append(wrk(server.port, f"b{round_}{name}{time.time_ns()}", batch=500)["rps"] * 500)
            finally:
                server.stop()
    return {name: statistics.median(values) for name, values in rates.items()}


def on_off(folder: Path, setting: str, on: str, off: str, batches=(1, 500), modules=("backup_api", "backup_api"),
           prepare=None) -> dict:
    """The service with BACKUP_API_<setting> on and off, taking turns over ROUNDS rounds; events/s by batch size.

    modules: the Flask module served on and off; prepare(database): run on each database before its server starts.
    """
    rates = {(state, batch): [] for state in ("on", "off") for batch in batches}
    for round_ in range(ROUNDS):
        for state, module in zip(("on", "off"), modules, strict=True):
            database = folder / f"{setting.lower()}{round_}{state}.db"
            if prepare is not None:
                prepare(database)
            server = Server(database, SECRET, module=module)
            server.env[f"BACKUP_API_{setting}"] = on if state == "on" else off
            with server:
                wrk(server.port, f"w{setting}{round_}{state}{time.time_ns()}", seconds=2)
                for batch in batches:
                    result = wrk(server.port, f"{setting}{round_}{state}{batch}{time.time_ns()}", batch=batch)
                    rates[state, batch].append(result["rps"] * batch)
    return {
        batch: {"on": statistics.median(rates["on", batch]), "off": statistics.median(rates["off", batch]),
                "ratios": [on / off for on, off in zip(rates["on", batch], rates["off", batch], strict=True)]}
        for batch in batches
    }


def metrics_cost(folder: Path) -> dict:
    """The service with metrics on and off (BACKUP_API_METRICS=0): single events and batches of 500."""
    return on_off(folder, "METRICS", "1", "0")


# A limit far above what wrk sends: what is measured is the counting, never a 429 (wrk would fail on one).
LIMIT_ABOVE_LOAD = "1000000/second"


# Revocations held while the token checks are measured: none of them the benchmark's token's.
REVOCATIONS = 1000


def _revoke_others(database: Path) -> None:
    store = storage.open_store(str(database))
    try:
        for n in range(REVOCATIONS):
            store.revoke("jti" if n % 2 else "sub", f"someone-else-{n}")
    finally:
        store.close()


def token_checks_cost(folder: Path) -> dict:
    """Single events with the revocation check (REVOCATIONS held) and the limit on, beside both off."""
    return on_off(folder, "RATE_LIMIT", LIMIT_ABOVE_LOAD, "off", batches=(1,),
                  modules=("backup_api", "bench.unchecked"), prepare=_revoke_others)


def main() -> int:
    """Run every measurement and print the table."""
    RESULTS.mkdir(exist_ok=True)
    filled = RESULTS / f"filled-{FILL}-layout{storage.SCHEMA_VERSION}.db"
    if not filled.exists():
        print(f"filling a database with {FILL:,} events (kept in {filled} for later runs) ...", flush=True)
        started = time.perf_counter()
        fill(Path(str(filled) + ".partial"), FILL)
        Path(str(filled) + ".partial").rename(filled)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-") as tmp:
        folder = Path(tmp)
        print("HTTP rounds ...", flush=True)
        rounds = http_rounds(folder)
        print("ingest as the store grows ...", flush=True)
        growth = ingest_growth(folder, filled)
        print("batches ...", flush=True)
        batch_rate = batch_ingest(folder)
        print("metrics on and off ...", flush=True)
        metrics = metrics_cost(folder)
        print("the token checks (revocations, the limit per holder) on and off ...", flush=True)
        limiter = token_checks_cost(folder)[1]
        print("memory ...", flush=True)
        (count_first, mem_first), (count_total, mem_total) = memory(folder)
        print("reading pages, importing, starting ...", flush=True)
        pages = reads.page_reads(filled)
        imports = reads.import_rates(folder)
        start_up = reads.start_up(folder)
        # The executable, when `make dist` has built it.
        frozen = reads.start_up(folder, command=[str(reads.EXECUTABLE), "serve", "--port", "0"]) if (
            reads.EXECUTABLE.exists()) else None
    print("single events one at a time ...", flush=True)
    from bench import single

    one_at_a_time = single.table_lines(single.run())
    print("this build against earlier releases ...", flush=True)
    from bench import versus

    against_releases = versus.run()
    print("imports against their floor ...", flush=True)
    from bench import imports as floors

    against_floor = floors.run()
    print("the stand-in ...", flush=True)
    from bench import standin

    stand_in = standin.run()
    print("idle and dripping connections ...", flush=True)
    from bench import connections

    crowded = connections.run()
    print("the edge: one address's connections and bodies, many addresses' bad tokens ...", flush=True)
    from bench import edge

    at_the_edge = edge.run()
    print("PostgreSQL ...", flush=True)
    from bench import postgres  # it imports this module's wrk

    on_postgres = postgres.table_lines(*postgres.run())
    print("checking the backup: the summary and missing ...", flush=True)
    from bench import checking

    checks = checking.rows(checking.run())
    print("erasure and retention under load ...", flush=True)
    from bench import erasure

    checks += erasure.rows(erasure.run())
    per_event, json_size = disk_per_event(filled)
    small, large = reads.IMPORT_EVENTS

    ratios = [s["rps"] / b["rps"] for s, b in zip(rounds["service"], rounds["baseline"], strict=True)]
    floor_ratios = [f["rps"] / b["rps"] for f, b in zip(rounds["floor"], rounds["baseline"], strict=True)]
    over_floor = [s["rps"] / f["rps"] for s, f in zip(rounds["service"], rounds["floor"], strict=True)]
    over_peer = [s["rps"] / p["rps"] for s, p in zip(rounds["service"], rounds["peer"], strict=True)]
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
           for name, runs in rounds.items()}
    lines = [
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {time.strftime('%Y-%m-%d', time.gmtime())}; wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{SECONDS}s,"
        f" {ROUNDS} rounds taking turns, medians.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| baseline (bare Flask, same waitress) | {med['baseline']['rps']:,.0f} req/s,"
        f" p50 {med['baseline']['p50']:.1f} ms, p99 {med['baseline']['p99']:.1f} ms | |",
        f"| service, unique single events | {med['service']['rps']:,.0f} req/s,"
        f" p50 {med['service']['p50']:.1f} ms, p99 {med['service']['p99']:.1f} ms | p99 <= 10 ms |",
        f"| service / baseline (median of rounds) | {statistics.median(ratios):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)}) | |",
        f"| floor: bare Flask that stores each event (same store, same fsync) | {med['floor']['rps']:,.0f} req/s,"
        f" p99 {med['floor']['p99']:.1f} ms; floor / baseline {statistics.median(floor_ratios):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in floor_ratios)}) | |",
        f"| service / floor (median of rounds) | {statistics.median(over_floor):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in over_floor)}) | >= 0.9 |",
        f"| peer: FastAPI + pydantic v2 on uvicorn, same store rules and fsync | {med['peer']['rps']:,.0f} req/s,"
        f" p50 {med['peer']['p50']:.1f} ms, p99 {med['peer']['p99']:.1f} ms | |",
        f"| service / peer (median of rounds) | {statistics.median(over_peer):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in over_peer)}) | >= 1.2 |",
        f"| ingest straight into the store, empty / {FILL:,} stored | {growth['direct_empty']:,.0f} /"
        f" {growth['direct_full']:,.0f} events/s ({growth['direct_full'] / growth['direct_empty']:.2f}) | >= 0.8 |",
        f"| ingest over HTTP, empty / {FILL:,} stored | {growth['http_empty']:,.0f} /"
        f" {growth['http_full']:,.0f} events/s ({growth['http_full'] / growth['http_empty']:.2f}) | >= 0.8 |",
        f"| batch ingest, batches of 500: service / peer | {batch_rate['service']:,.0f} /"
        f" {batch_rate['peer']:,.0f} events/s | service >= 50,000 |",
        f"| resident memory after {count_first:,} / {count_total:,} requests | {mem_first:.1f} / {mem_total:.1f} MiB"
        f" ({mem_total / mem_first - 1:+.1%}) | within 10% |",
        f"| disk per event / event JSON | {per_event:.0f} / {json_size:.0f} bytes"
        f" ({per_event / json_size:.2f} bytes per byte) | <= 2 |",
        f"| a page of {reads.PAGE:,} events at a random place of {FILL:,}: in the store / over HTTP"
        f" | {pages['direct_ms']:.1f} / {pages['http_ms']:.1f} ms | milliseconds, not a scan |",
        f"| the same, filtered by a player (1 event in 1,000) | {pages['filtered_ms']:.1f} ms | |",
        f"| `events import`, {small:,} / {large:,} events | {imports[small]['rate']:,.0f} /"
        f" {imports[large]['rate']:,.0f} events/s | >= 100,000 |",
        f"| import floor: json.loads and a bare insert, no checks | {imports['floor']:,.0f} events/s | |",
        f"| `events import` peak memory, {small:,} / {large:,} events | {imports[small]['peak_mib']:.1f} /"
        f" {imports[large]['peak_mib']:.1f} MiB | flat |",
        f"| start-up: process start to the first 200 on /healthz | {start_up * 1000:.0f} ms | |",
        "| the same, the single executable (`make dist`) | "
        + (f"{frozen * 1000:.0f} ms" if frozen else "not built: run `make dist` first") + " | |",
        *[f"| metrics on / off, {'single events' if batch == 1 else 'batches of 500'} |"
          f" {m['on']:,.0f} / {m['off']:,.0f} events/s: {statistics.median(m['ratios']):.3f}"
          f" (rounds: {', '.join(f'{r:.2f}' for r in m['ratios'])}) | {'>= 0.95' if batch == 1 else ''} |"
          for batch, m in metrics.items()],
        f"| the revocation check ({REVOCATIONS:,} held) and a limit per token holder ({LIMIT_ABOVE_LOAD}, above"
        " the load) on / both off, single events |"
        f" {limiter['on']:,.0f} / {limiter['off']:,.0f} events/s: {statistics.median(limiter['ratios']):.3f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in limiter['ratios'])}) | >= 0.95 |",
        *one_at_a_time,
        *against_releases,
        *against_floor,
        *stand_in,
        *crowded,
        *at_the_edge,
        *on_postgres,
        *checks,
    ]
    table = "\n".join(lines)
    RUNS.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    page = RUNS / f"{when}.md"
    page.write_text(f"# Run of {when}\n\n`make bench` at commit `{commit}`, on {platform.machine()}"
                    f" ({os.cpu_count()} cores), Python {platform.python_version()}.\n\n{table}\n")
    print()
    print(table)
    print(f"\nwritten to {page.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
