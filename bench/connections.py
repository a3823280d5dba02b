"""make bench, connections: a new client's latency with thousands of idle and dripping connections open.

The real server (waitress, its own process; on SQLite, in stand-in mode, on PostgreSQL) answers a
new client's GET /healthz and single posts, one at a time over a fresh connection each, first
with nothing else open, then with IDLE connections that send nothing and DRIPPING ones sending a
request a byte a second. Medians and maxima; the descriptor limits beside them.
python -m bench.connections prints its rows alone.
"""

import http.client
import json
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests import postgres
from tests.helpers import SECRET, make_token
from tests.server import Server

IDLE, DRIPPING = 2000, 1000
REQUESTS = 50  # of each kind, per measurement
TOKEN = make_token(lifetime=86400)


def _once(port: int, method: str, path: str, body: bytes | None) -> float:
    """One request on a new connection; its time in ms (the connection's opening included)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status}")
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def _latencies(port: int, prefix: str) -> dict:
    """Medians and maxima of /healthz and of single posts, REQUESTS of each, taking turns."""
    health, posts = [], []
    for n in range(REQUESTS):
        health.append(_once(port, "GET", "/healthz", None))
        event = {"partner_id": "casino_alpha", "player_login": f"p{n}", "event_type": "bet", "amount": n,
                 "event_id": f"{prefix}-{n}"}
        posts.append(_once(port, "POST", "/player-events", json.dumps(event).encode()))
    return {"healthz": (statistics.median(health), max(health)), "post": (statistics.median(posts), max(posts))}


# Connections of the crowd from each of its addresses (127.0.1.x): within the server's bound per client.
PER_ADDRESS = 250


def crowd_connection(port: int, n: int) -> socket.socket:
    """The crowd's connection n to the server, from 127.0.1.(n // PER_ADDRESS): many clients, not one."""
    connection = socket.socket()
    connection.settimeout(5)
    connection.bind((f"127.0.1.{n // PER_ADDRESS + 1}", 0))
    connection.connect(("127.0.0.1", port))
    return connection


def crowded(server: Server) -> tuple[dict, dict, bool]:
    """A new client's latencies with nothing else open, then with IDLE and DRIPPING connections; alive after?"""
    _latencies(server.port, f"warm{time.time_ns()}")
    quiet = _latencies(server.port, f"quiet{time.time_ns()}")
    sockets, stop = [], threading.Event()
    try:
        for n in range(IDLE):
            sockets.append(crowd_connection(server.port, n))
        dripping = []
        for n in range(DRIPPING):
            s = crowd_connection(server.port, IDLE + n)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            dripping.append(s)
        sockets.extend(dripping)

        def drip():
            while not stop.wait(1):
                for s in dripping:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass  # closed by the server's deadline: as it should

        threading.Thread(target=drip, daemon=True).start()
        time.sleep(2)
        loaded = _latencies(server.port, f"loaded{time.time_ns()}")
    finally:
        stop.set()
        for s in sockets:
            s.close()
    return quiet, loaded, server.proc.poll() is None


def run() -> list[str]:
    """Measure on SQLite, in stand-in mode and on a throwaway PostgreSQL; return the benchmark table's rows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process opens IDLE + DRIPPING
    results = {}
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-connections-") as tmp:
        with Server(Path(tmp) / "b.db", SECRET) as server:
            results["SQLite"] = crowded(server)
        stand_in = Server(Path(tmp) / "unused.db", SECRET)
        stand_in.start(command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--stand-in",
                                "--port", "0"])
        try:
            results["stand-in"] = crowded(stand_in)
        finally:
            stand_in.stop()
        throwaway = postgres.Throwaway()
        try:
            with Server(postgres.Databases(throwaway.url).create(), SECRET) as server:
                results["PostgreSQL"] = crowded(server)
        finally:
            throwaway.stop()
    rows = []
    for mode, (quiet, loaded, alive) in results.items():
        rows.append(
            f"| {mode}: a new client's /healthz / single post, median (max), nothing else open; with {IDLE:,} idle"
            f" and {DRIPPING:,} dripping connections ({PER_ADDRESS} an address)"
            f" | {quiet['healthz'][0]:.1f} ({quiet['healthz'][1]:.1f}) /"
            f" {quiet['post'][0]:.1f} ({quiet['post'][1]:.1f}) ms; {loaded['healthz'][0]:.1f}"
            f" ({loaded['healthz'][1]:.1f}) / {loaded['post'][0]:.1f} ({loaded['post'][1]:.1f}) ms; the server"
            f" {'alive' if alive else 'DEAD'} (descriptors: soft {soft}, hard {hard}) | max within 1 s |")
    return rows


if __name__ == "__main__":
    print("\n".join(run()))
