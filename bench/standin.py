"""The stand-in for test suites: the plugin's cost per test, start-up, and sequential single events.

Against, in the same run: the stand-in's own sequential GET /healthz (the server's ceiling: at
least 0.8 of it), the durable service (at least 5 times its rate), the old way of a fixture per
test (a `token issue` process, then a server), and, when npm can install them, WireMock stubbing
POST /player-events (at least 2 times its rate; it needs java) and Prism mocking our own OpenAPI
document (at least 3 times its rate).

python -m bench.standin prints its rows alone; make bench prints them with the rest.
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.reads import EXECUTABLE, start_up
from tests.helpers import SECRET, make_token, valid_event
from tests.server import ROOT, Server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SEQUENTIAL = 300  # single events, one keep-alive client
RESETS = 100
PRISM_VERSION = "5.16.0"
WIREMOCK_VERSION = "3.13.2"
NPM_FOLDER = ROOT / "bench" / "results"  # npm installs the peers here (ignored by git)


def sequential(port: int, prefix: str, count: int = SEQUENTIAL, healthz: bool = False) -> float:
    """Unique single events posted one after the other on one keep-alive connection; return events/s.

    healthz: GET /healthz instead, the same way (the server's ceiling for one client).
    """
    token = make_token()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(event_id: str) -> None:
        if healthz:
            conn.request("GET", "/healthz")
        else:
            conn.request("POST", "/player-events", json.dumps(valid_event("bet", event_id=event_id)), headers)

    try:
        for n in range(20):  # warm up
            send(f"{prefix}-w{n}")
            conn.getresponse().read()
        started = time.perf_counter()
        for n in range(count):
            send(f"{prefix}-{n}")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status} from port {port}")
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


def stand_in_server(folder: Path) -> Server:
    """serve --stand-in, started as a user would from the checkout."""
    server = Server(folder / "unused.db", SECRET)
    return server.start(command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--stand-in",
                                 "--port", "0"])


def per_test() -> dict:
    """The plugin's cost per test: a new namespace's first request (its world opened) beside a request in a world
    already open, after a test that stored 100 events and set a flag; and the session's start."""
    from backup_api import create_app
    from backup_api.pytest_plugin import StandIn
    from backup_api.server import InThread
    from backup_api.standin import StandInChannel

    started = time.perf_counter()
    app = create_app({"STAND_IN": True, "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
    server = InThread(app, channel=StandInChannel)
    StandIn(server.url, SECRET).request("GET", "/healthz")
    session_start = time.perf_counter() - started
    extra = []
    try:
        for n in range(RESETS):
            test = StandIn(server.url, SECRET, f"bench-{n}", app)
            timed = []
            for vip in (True, False):  # the first opens the test's world; the second finds it open
                started = time.perf_counter()
                test.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": vip}, partner_id="casino_alpha")
                timed.append(time.perf_counter() - started)
            extra.append(timed[0] - timed[1])
            batch = [valid_event("bet", n=n, i=i) for i in range(100)]
            assert test.request("POST", "/player-events", batch, partner_id="casino_alpha")[0] == 200
    finally:
        server.stop()
    return {"median_ms": statistics.median(extra) * 1000, "max_ms": max(extra) * 1000, "start_s": session_start}


def old_fixture(folder: Path, starts: int = 5) -> float:
    """The former fixture, per test: a `token issue` process, then a server to its first /healthz."""
    times = []
    for _ in range(starts):
        workdir = Path(tempfile.mkdtemp(prefix="old", dir=folder))
        env = {**os.environ, "BACKUP_API_DATABASE": str(workdir / "backup.db"), "BACKUP_API_LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "token", "issue", "casino_alpha"],
                       cwd=ROOT, env=env, capture_output=True, check=True, timeout=60)
        server = Server(workdir / "backup.db")
        server.start()
        try:
            while server.request("GET", "/healthz")[0] != 200:
                time.sleep(0.005)
            times.append(time.perf_counter() - started)
        finally:
            server.stop()
    return statistics.median(times)


def npm_tool(package: str, version: str, path: str) -> tuple[Path | None, str]:
    """A file of an npm package (installed into bench/results/<package> once); or None and why not."""
    folder = NPM_FOLDER / package.rsplit("/", 1)[-1]
    wanted = folder / "node_modules" / path
    if wanted.exists():
        return wanted, ""
    if shutil.which("npm") is None:
        return None, "npm is not on the PATH"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                           f"{package}@{version}"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not wanted.exists():
        return None, f"npm could not install {package}: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return wanted, ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, path: str, what: str) -> None:
    """Wait (at most 60 s) until GET path on port answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


def wiremock_rate(jar: Path) -> tuple[float, float]:
    """WireMock answering POST /player-events from a stub: seconds to its first answer, and sequential events/s."""
    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(["java", "-jar", str(jar), "--port", str(port), "--bind-address", "127.0.0.1",
                             "--disable-banner", "--disable-request-logging"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, "/__admin/mappings", "wiremock")
        first = time.perf_counter() - started
        stub = {"request": {"method": "POST", "url": "/player-events"},
                "response": {"status": 200, "jsonBody": {"status": "ok"},
                             "headers": {"Content-Type": "application/json"}}}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/__admin/mappings", json.dumps(stub), {"Content-Type": "application/json"})
        assert conn.getresponse().status == 201
        conn.close()
        return first, sequential(port, "wiremock")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def prism_rate(binary: Path, folder: Path) -> tuple[float, float]:
    """Prism mocking our own document: seconds to its first answer, and sequential single events/s."""
    from backup_api import create_app

    app = create_app({"DATABASE": str(folder / "doc.db"), "JWT_SECRET": SECRET})
    document = folder / "openapi.json"
    document.write_text(json.dumps(app.extensions["openapi"]))
    app.extensions["store"].close()
    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([str(binary), "mock", str(document), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, "/healthz", "prism")
        first = time.perf_counter() - started
        return first, sequential(port, "prism")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run() -> list[str]:
    """Measure; return the benchmark table's rows."""
    # The stand-in starts from empty folders, as a user's would: the checkout on the path.
    os.environ["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-stand-in-") as tmp:
        folder = Path(tmp)
        rates = {"stand-in": [], "healthz": [], "durable": []}
        for round_ in range(ROUNDS):
            server = stand_in_server(folder)
            try:  # the stand-in's events and its own /healthz, on one server, taking turns
                rates["stand-in"].append(sequential(server.port, f"stand-in{round_}{time.time_ns()}"))
                rates["healthz"].append(sequential(server.port, "", healthz=True))
            finally:
                server.stop()
            server = Server(folder / f"durable{round_}.db", SECRET).start()
            try:
                rates["durable"].append(sequential(server.port, f"durable{round_}{time.time_ns()}"))
            finally:
                server.stop()
        ratios = [s / d for s, d in zip(rates["stand-in"], rates["durable"], strict=True)]
        ceiling = [s / h for s, h in zip(rates["stand-in"], rates["healthz"], strict=True)]
        plugin = per_test()
        old = old_fixture(folder)
        started = start_up(folder, command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve",
                                            "--stand-in", "--port", "0"])
        frozen = start_up(folder, command=[str(EXECUTABLE), "serve", "--stand-in", "--port", "0"]) if (
            EXECUTABLE.exists()) else None
        binary, why = npm_tool("@stoplight/prism-cli", PRISM_VERSION, ".bin/prism")
        prism_first, prism_seq = prism_rate(binary, folder) if binary else (None, None)
        jar, wiremock_why = npm_tool("wiremock", WIREMOCK_VERSION,
                                     f"wiremock/build/wiremock-standalone-{WIREMOCK_VERSION}.jar")
        if jar and shutil.which("java") is None:
            jar, wiremock_why = None, "java is not on the PATH"
        wiremock_first, wiremock_seq = wiremock_rate(jar) if jar else (None, None)
    stand_in = statistics.median(rates["stand-in"])
    lines = [
        f"| stand-in: sequential single events, one keep-alive client / its own sequential `GET /healthz` |"
        f" {stand_in:,.0f} / {statistics.median(rates['healthz']):,.0f} per s, {statistics.median(ceiling):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in ceiling)}) | >= 0.8 |",
        f"| stand-in: sequential single events / the durable service |"
        f" {stand_in:,.0f} / {statistics.median(rates['durable']):,.0f} events/s, {statistics.median(ratios):.1f}x"
        f" (rounds: {', '.join(f'{r:.1f}' for r in ratios)}) | >= 5x |",
        f"| stand-in: `serve --stand-in` start to its first answer | {started * 1000:.0f} ms"
        + (f"; the executable {frozen * 1000:.0f} ms" if frozen else "") + " | <= 500 ms |",
        f"| the `backup_api` fixture per test: a new namespace's world opened at its first request (beyond a"
        f" request's own time) | median {plugin['median_ms']:.2f} ms, max {plugin['max_ms']:.2f} ms; once per"
        f" session, start {plugin['start_s'] * 1000:.0f} ms | < 50 ms |",
        f"| the former fixture per test (`token issue` process, then a server) | {old * 1000:.0f} ms |"
        f" {old * 1000 / plugin['median_ms']:,.0f}x the fixture's |",
    ]
    if jar:
        lines.append(f"| WireMock {WIREMOCK_VERSION} (standalone jar) with a stub for POST /player-events: sequential"
                     f" single events, start | {wiremock_seq:,.0f} events/s (stand-in {stand_in / wiremock_seq:.1f}x),"
                     f" first answer {wiremock_first * 1000:.0f} ms | stand-in >= 2x |")
    else:
        lines.append(f"| WireMock stubbing POST /player-events | skipped: {wiremock_why} | |")
    if binary:
        lines.append(f"| Prism {PRISM_VERSION} mocking our document: sequential single events, start |"
                     f" {prism_seq:,.0f} events/s (stand-in {stand_in / prism_seq:.1f}x), first answer"
                     f" {prism_first * 1000:.0f} ms | stand-in >= 3x |")
    else:
        lines.append(f"| Prism mocking our document | skipped: {why} | |")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
