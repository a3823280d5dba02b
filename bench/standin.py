"""The stand-in for test suites: the plugin's per-test reset, start-up, and sequential single events.

Against, in the same run: the durable service (the stand-in must be at least 5 times its rate),
the old way of a fixture per test (a `token issue` process, then a server), and Prism mocking our
own OpenAPI document (at least 3 times its rate), when npm can install it.

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
PRISM_FOLDER = ROOT / "bench" / "results" / "prism"  # npm installs it here (ignored by git)


def sequential(port: int, prefix: str, count: int = SEQUENTIAL) -> float:
    """Unique single events posted one after the other on one keep-alive connection; return events/s."""
    token = make_token()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for n in range(20):  # warm up
            conn.request("POST", "/player-events", json.dumps(valid_event("bet", event_id=f"{prefix}-w{n}")), headers)
            conn.getresponse().read()
        started = time.perf_counter()
        for n in range(count):
            conn.request("POST", "/player-events", json.dumps(valid_event("bet", event_id=f"{prefix}-{n}")), headers)
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


def resets() -> dict:
    """The plugin's per-test cost: its reset, after a test that stored 100 events and set a flag; and its start."""
    from backup_api import create_app
    from backup_api.pytest_plugin import StandIn
    from backup_api.server import InThread

    started = time.perf_counter()
    app = create_app({"STAND_IN": True, "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
    server = InThread(app)
    stand_in = StandIn(app, server.url)
    stand_in.request("GET", "/healthz")
    session_start = time.perf_counter() - started
    times = []
    try:
        for n in range(RESETS):
            batch = [valid_event("bet", n=n, i=i) for i in range(100)]
            assert stand_in.request("POST", "/player-events", batch, partner_id="casino_alpha")[0] == 200
            stand_in.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": True}, partner_id="casino_alpha")
            started = time.perf_counter()
            stand_in.reset()
            times.append(time.perf_counter() - started)
        assert stand_in.events("casino_alpha") == []
    finally:
        server.stop()
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000, "start_s": session_start}


def old_fixture(folder: Path, starts: int = 5) -> float:
    """The README's former fixture, per test: a `token issue` process, then a server to its first /healthz."""
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


def prism(folder: Path) -> tuple[Path | None, str]:
    """Prism's command, installed with npm into bench/results/prism once; or None and why not."""
    binary = PRISM_FOLDER / "node_modules" / ".bin" / "prism"
    if binary.exists():
        return binary, ""
    if shutil.which("npm") is None:
        return None, "npm is not on the PATH"
    PRISM_FOLDER.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--prefix", str(PRISM_FOLDER), "--no-audit", "--no-fund",
                           f"@stoplight/prism-cli@{PRISM_VERSION}"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not binary.exists():
        return None, "npm could not install @stoplight/prism-cli: " + done.stderr.strip().splitlines()[-1:][0]
    return binary, ""


def prism_rate(binary: Path, folder: Path) -> tuple[float, float]:
    """Prism mocking our own document: seconds to its first answer, and sequential single events/s."""
    from backup_api import create_app

    app = create_app({"DATABASE": str(folder / "doc.db"), "JWT_SECRET": SECRET})
    document = folder / "openapi.json"
    document.write_text(json.dumps(app.extensions["openapi"]))
    app.extensions["store"].close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.Popen([str(binary), "mock", str(document), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("prism did not start") from None
                time.sleep(0.02)
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
        rates = {"stand-in": [], "durable": []}
        for round_ in range(ROUNDS):
            for name in rates:
                server = stand_in_server(folder) if name == "stand-in" else Server(
                    folder / f"durable{round_}.db", SECRET).start()
                try:
                    rates[name].append(sequential(server.port, f"{name}{round_}{time.time_ns()}"))
                finally:
                    server.stop()
        ratios = [s / d for s, d in zip(rates["stand-in"], rates["durable"], strict=True)]
        plugin = resets()
        old = old_fixture(folder)
        started = start_up(folder, command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve",
                                            "--stand-in", "--port", "0"])
        frozen = start_up(folder, command=[str(EXECUTABLE), "serve", "--stand-in", "--port", "0"]) if (
            EXECUTABLE.exists()) else None
        binary, why = prism(folder)
        prism_first, prism_seq = prism_rate(binary, folder) if binary else (None, None)
    stand_in = statistics.median(rates["stand-in"])
    lines = [
        f"| stand-in: sequential single events, one keep-alive client / the durable service |"
        f" {stand_in:,.0f} / {statistics.median(rates['durable']):,.0f} events/s, {statistics.median(ratios):.1f}x"
        f" (rounds: {', '.join(f'{r:.1f}' for r in ratios)}) | >= 5x |",
        f"| stand-in: `serve --stand-in` start to its first answer | {started * 1000:.0f} ms"
        + (f"; the executable {frozen * 1000:.0f} ms" if frozen else "") + " | <= 500 ms |",
        f"| the `backup_api` fixture: its reset per test (after 100 events and a flag) | median"
        f" {plugin['median_ms']:.2f} ms, max {plugin['max_ms']:.2f} ms; once per session, start"
        f" {plugin['start_s'] * 1000:.0f} ms | < 50 ms |",
        f"| the former fixture per test (`token issue` process, then a server) | {old * 1000:.0f} ms |"
        f" {old * 1000 / plugin['median_ms']:,.0f}x the reset |",
    ]
    if binary:
        lines.append(f"| Prism {PRISM_VERSION} mocking our document: sequential single events, start |"
                     f" {prism_seq:,.0f} events/s (stand-in {stand_in / prism_seq:.1f}x), first answer"
                     f" {prism_first * 1000:.0f} ms | stand-in >= 3x |")
    else:
        lines.append(f"| Prism mocking our document | skipped: {why} | |")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
