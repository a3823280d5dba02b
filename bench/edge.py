"""make bench, the edge: what one client address can take of a real server, and what many bad tokens cost the others.

- Addresses with bad tokens: a partner's single events a second with the limit per holder on,
  after ADDRESSES addresses (sent as the trusted proxy's X-Forwarded-For) each sent a request with
  a bad token, against the same server without them; rounds taking turns, medians.
- One address opening CROWD connections: how many the server keeps, and a new client's /healthz
  from another address meanwhile.
- One address sending UPLOADS bodies of UPLOAD_BYTES that never finish (no token): how many bytes
  the server holds of them at most (its spooled temporary files, read from /proc), against what
  they sent.
python -m bench.edge prints its rows alone.
"""

import http.client
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.connections import crowd_connection
from bench.run import ROUNDS, wrk
from tests.helpers import SECRET, make_token
from tests.server import Server

ADDRESSES = int(os.environ.get("BENCH_BAD_ADDRESSES", "30000"))
LIMIT = "100000/second;10000000/hour"  # far above the load: what is measured is the counting
CROWD = 3000
UPLOADS, UPLOAD_BYTES = 200, 2_000_000
BAD_TOKEN = make_token(secret="a-guess-at-the-secret-that-is-long-enough-0123")


def _bad_tokens(port: int, count: int) -> None:
    """Send count requests with a bad token, each from its own forwarded address, on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for n in range(count):
            address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            conn.request("GET", "/player-events?partner_id=casino_alpha",
                         headers={"Authorization": f"Bearer {BAD_TOKEN}", "X-Forwarded-For": address})
            response = conn.getresponse()
            response.read()
            if response.status != 401:
                raise RuntimeError(f"a bad token was answered {response.status}")
    finally:
        conn.close()


def bad_token_crowd(folder: Path) -> dict:
    """A partner's single events a second after ADDRESSES addresses with bad tokens, and without; medians and ratios."""
    rates: dict[str, list[float]] = {"crowd": [], "none": []}
    for round_ in range(ROUNDS):
        for state in ("crowd", "none"):
            server = Server(folder / f"edge{round_}{state}.db", SECRET)
            server.env.update(BACKUP_API_RATE_LIMIT=LIMIT, BACKUP_API_TRUSTED_PROXY="127.0.0.1")
            with server:
                if state == "crowd":
                    _bad_tokens(server.port, ADDRESSES)
                wrk(server.port, f"edge-warm{round_}{state}{time.time_ns()}", seconds=2)
                rates[state].append(wrk(server.port, f"edge{round_}{state}{time.time_ns()}")["rps"])
    return {"crowd": statistics.median(rates["crowd"]), "none": statistics.median(rates["none"]),
            "ratios": [c / n for c, n in zip(rates["crowd"], rates["none"], strict=True)]}


def _healthz_ms(port: int) -> float:
    """A new client's GET /healthz from another address (127.0.2.1), in ms."""
    started = time.perf_counter()
    connection = socket.socket()
    connection.settimeout(30)
    try:
        connection.bind(("127.0.2.1", 0))
        connection.connect(("127.0.0.1", port))
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = connection.recv(4096)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/healthz: {answer[:40]!r}")
    finally:
        connection.close()
    return (time.perf_counter() - started) * 1000


def one_address_crowd(folder: Path) -> dict:
    """One address opening CROWD connections: those the server kept open, and a new client's /healthz meanwhile."""
    with Server(folder / "crowd.db", SECRET) as server:
        opened = []
        try:
            for _ in range(CROWD):
                opened.append(crowd_connection(server.port, 0))  # all from 127.0.1.1
            time.sleep(1)
            kept = 0
            for connection in opened:
                connection.setblocking(False)
                try:
                    kept += connection.recv(1) == b""  # closed by the server: not kept
                except BlockingIOError:
                    kept += 1  # still open, nothing to read
                except OSError:
                    pass
            new_client = statistics.median(_healthz_ms(server.port) for _ in range(20))
        finally:
            for connection in opened:
                connection.close()
    return {"kept": kept, "new_client_ms": new_client}


def _spooled_bytes(pid: int) -> int:
    """The bytes of the deleted temporary files the server process holds open (waitress's spooled bodies)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith("(deleted)"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return total


def unfinished_uploads(folder: Path) -> dict:
    """One address sending UPLOADS bodies that never finish: the most the server held of them on disk."""
    with Server(folder / "uploads.db", SECRET) as server:
        uploads, most = [], 0
        head = (b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (UPLOAD_BYTES + 1))
        try:
            for _ in range(UPLOADS):
                connection = crowd_connection(server.port, 0)
                uploads.append(connection)
                try:
                    connection.sendall(head + b" " * UPLOAD_BYTES)
                except OSError:
                    pass  # closed by the server: past what its client may hold
                most = max(most, _spooled_bytes(server.proc.pid))
            time.sleep(1)
            most = max(most, _spooled_bytes(server.proc.pid))
        finally:
            for connection in uploads:
                connection.close()
    return {"sent": UPLOADS * UPLOAD_BYTES, "held": most}


def run() -> list[str]:
    """Measure; return the benchmark table's rows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process opens CROWD
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-edge-") as tmp:
        folder = Path(tmp)
        crowd = bad_token_crowd(folder)
        one = one_address_crowd(folder)
        uploads = unfinished_uploads(folder)
    return [
        f"| a partner's single events with {ADDRESSES:,} addresses' bad tokens counted / without (limit per holder"
        f" on) | {crowd['crowd']:,.0f} / {crowd['none']:,.0f} req/s: {statistics.median(crowd['ratios']):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in crowd['ratios'])}) | >= 0.8 |",
        f"| one address opening {CROWD:,} connections: kept open; a new client's /healthz from another, median"
        f" | {one['kept']:,} kept; {one['new_client_ms']:.1f} ms | kept <= 500 (the bound); within 1 s |",
        f"| one address sending {UPLOADS} bodies of {UPLOAD_BYTES / 1e6:.0f} MB that never finish, no token: held"
        f" on disk at most / sent | {uploads['held'] / 2**20:.1f} / {uploads['sent'] / 2**20:,.0f} MiB"
        " | <= 32 MiB (the bound) |",
    ]


if __name__ == "__main__":
    print("\n".join(run()))
    sys.exit(0)
