"""make bench, connections: a new client's latency with thousands of idle and dripping connections open.

The real server (waitress, its own process, SQLite) answers a new client's GET /healthz and single
posts, one at a time over a fresh connection each, first with nothing else open, then with IDLE
connections that send nothing and DRIPPING ones sending a request a byte a second. Medians and
maxima; the descriptor limits beside them. python -m bench.connections prints its rows alone.
"""

import http.client
import json
import resource
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

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


def run() -> list[str]:
    """Measure; return the benchmark table's rows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process opens IDLE + DRIPPING
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-connections-") as tmp, \
            Server(Path(tmp) / "b.db", SECRET) as server:
        _latencies(server.port, "warm")
        quiet = _latencies(server.port, "quiet")
        sockets, stop = [], threading.Event()
        try:
            for _ in range(IDLE):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            dripping = []
            for _ in range(DRIPPING):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
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

            dripper = threading.Thread(target=drip, daemon=True)
            dripper.start()
            time.sleep(2)
            loaded = _latencies(server.port, "loaded")
            alive = server.proc.poll() is None
        finally:
            stop.set()
            for s in sockets:
                s.close()
    limits = f"descriptors here: soft {soft}, hard {hard}"
    return [
        f"| a new client, nothing else open: /healthz / single post, median (max) | {quiet['healthz'][0]:.1f}"
        f" ({quiet['healthz'][1]:.1f}) / {quiet['post'][0]:.1f} ({quiet['post'][1]:.1f}) ms | |",
        f"| the same with {IDLE:,} idle and {DRIPPING:,} dripping connections open ({limits}) |"
        f" {loaded['healthz'][0]:.1f} ({loaded['healthz'][1]:.1f}) / {loaded['post'][0]:.1f}"
        f" ({loaded['post'][1]:.1f}) ms; the server {'alive' if alive else 'DEAD'} | max within 1 s |",
    ]


if __name__ == "__main__":
    print("\n".join(run()))
