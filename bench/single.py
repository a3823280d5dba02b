"""make bench, single events one at a time: what one commit costs, from a bare sqlite3 commit up to the service.

One keep-alive client posts one event, waits for the answer, posts the next: the latency a
partner's loop of single posts sees. Beside it, in the same run and folder: fsync's own cost,
a bare sqlite3 commit of the same row into the same tables and indexes (our layout, WAL,
synchronous=FULL, one INSERT per commit), and the store's add_events called in-process (our
commit path without HTTP). Everything takes turns over ROUNDS rounds; medians.
"""

import http.client
import os
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from backup_api import storage
from backup_api.jsontext import parse_json
from backup_api.storage import event_row, now_us
from tests.helpers import SECRET, make_token
from tests.server import Server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
COUNT = 400  # posts or commits a measurement times, after WARM_UP untimed
WARM_UP = 50
# The pause between bare commits that stands for an HTTP round trip without a commit (the
# baseline's, about): the disk of a virtual machine answers an fsync more slowly after a pause.
PAUSE_S = 0.0004
TOKEN = make_token(lifetime=86400)
SERVERS = (("baseline", "bench.baseline"), ("floor", "bench.floor"), ("service", "backup_api"))
_INSERT = ("INSERT INTO events (partner_id, event_id, content_key, player_login, received_at, sub, event)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")


def body(n: int, prefix: str) -> bytes:
    """A single event's JSON body, as a partner posts it (the shape bench/events.lua sends)."""
    return (
        f'{{"partner_id":"casino_alpha","player_login":"player{n % 1000}","session_id":"sess_{n % 97}",'
        f'"event_type":"bet","amount":{n % 500}.{n % 100:02d},"currency":"EUR","event_id":"{prefix}-{n}",'
        f'"occurred_at":"2026-11-24T05:00:00.000Z"}}'
    ).encode()


def fsync_us(folder: Path, count: int = 300) -> float:
    """Median time of fdatasync after a 4 KiB write, back to back, in the benchmark's folder."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    times = []
    try:
        for n in range(count):
            os.pwrite(fd, b"x" * 4096, (n % 16) * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1e6


def bare_commits_us(path: Path, prefix: str, pause: float = 0.0) -> float:
    """Median time of one bare sqlite3 INSERT committing one event's row into our tables (autocommit, FULL)."""
    storage.open_store(str(path)).close()  # our tables and indexes, our WAL
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    rows = [event_row(parse_json(body(n, prefix)), now_us(), "bench")[:7]  # SQLite keeps all but event_type
            for n in range(WARM_UP + COUNT)]
    times = []
    for row in rows:
        started = time.perf_counter()
        conn.execute(_INSERT, row)
        times.append(time.perf_counter() - started)
        if pause:
            time.sleep(pause)
    conn.close()
    return statistics.median(times[WARM_UP:]) * 1e6


def store_calls_us(path: Path, prefix: str) -> float:
    """Median time of the store's add_events for one event, in-process: the commit path without HTTP."""
    store = storage.open_store(str(path))
    events = [parse_json(body(n, prefix)) for n in range(WARM_UP + COUNT)]
    times = []
    for item in events:
        started = time.perf_counter()
        store.add_events([item], "bench")
        times.append(time.perf_counter() - started)
    store.close()
    return statistics.median(times[WARM_UP:]) * 1e6


def posts_us(port: int, prefix: str) -> float:
    """Median round trip of one POST on a keep-alive connection, one at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    times = []
    try:
        for n in range(WARM_UP + COUNT):
            started = time.perf_counter()
            conn.request("POST", "/player-events", body=body(n, prefix), headers=headers)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"a post was answered {response.status}")
    finally:
        conn.close()
    return statistics.median(times[WARM_UP:]) * 1e6


def run() -> dict:
    """Every measurement, taking turns over ROUNDS rounds; medians, in µs."""
    results: dict[str, list[float]] = {name: [] for name in
                                       ("fsync", "bare", "bare_paused", "store", *(n for n, _ in SERVERS))}
    with tempfile.TemporaryDirectory(prefix="backup-api-single-", dir=Path(__file__).parent / "results") as tmp:
        folder = Path(tmp)
        for round_ in range(ROUNDS):
            prefix = f"s{round_}-{time.time_ns()}"
            results["fsync"].append(fsync_us(folder))
            results["bare"].append(bare_commits_us(folder / f"bare{round_}.db", prefix))
            results["bare_paused"].append(bare_commits_us(folder / f"paused{round_}.db", prefix, PAUSE_S))
            results["store"].append(store_calls_us(folder / f"store{round_}.db", prefix))
            for name, module in SERVERS:
                with Server(folder / f"{name}{round_}.db", SECRET, module=module) as server:
                    results[name].append(posts_us(server.port, prefix))
    return {name: statistics.median(values) for name, values in results.items()}


def table_lines(m: dict) -> list[str]:
    """The rows of the benchmark's table."""
    return [
        f"| fsync's own cost here (fdatasync of 4 KiB, back to back, median) | {m['fsync']:.0f} µs"
        f" | tells the disk's state |",
        f"| bare sqlite3 commit of one event's row, our tables and indexes (autocommit, FULL) | {m['bare']:.0f} µs;"
        f" with a {PAUSE_S * 1e3:.1f} ms pause between commits: {m['bare_paused']:.0f} µs | |",
        f"| the store's add_events of one event, in-process | {m['store']:.0f} µs:"
        f" {m['store'] / m['bare']:.2f} times the bare commit | |",
        f"| one keep-alive client, one post at a time: baseline / floor / service | {m['baseline']:.0f} /"
        f" {m['floor']:.0f} / {m['service']:.0f} µs | |",
        f"| floor's sequential latency / bare commit | {m['floor'] / m['bare']:.2f} (floor minus baseline:"
        f" {(m['floor'] - m['baseline']) / m['bare']:.2f}; against the paused commit:"
        f" {(m['floor'] - m['baseline']) / m['bare_paused']:.2f}) | <= 2 |",
    ]


if __name__ == "__main__":
    print("\n".join(table_lines(run())))
