"""The stand-in for test suites: the plugin's cost per test, start-up, and sequential single events.

Against, in the same run: the stand-in's own sequential GET /healthz (the server's ceiling: at
least 0.8 of it), the durable service (at least 5 times its rate), the old way of a fixture per
test (a `token issue` process, then a server), earlier releases' stand-ins (a test's set-up and
first post), and, when npm can install them, WireMock stubbing POST /player-events (it needs java)
and Prism mocking our own OpenAPI document, each just started (cold) and after WARM_S seconds of
events (warm): events per second, and a test's set-up and first post (WireMock's reset and stub;
the goal: a test on the stand-in costs less than on WireMock, warm).

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

from bench import release
from bench.reads import EXECUTABLE, start_up
from tests.helpers import SECRET, make_token, valid_event
from tests.server import ROOT, Server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SEQUENTIAL = 300  # single events, one keep-alive client
RESETS = 100
TESTS = 50  # tests timed one after the other, warm
WARM_S = float(os.environ.get("BENCH_WARM_S", "15"))  # sequential events that warm a server (a JVM) first
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


def _send(conn: http.client.HTTPConnection, method: str, path: str, body=None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    response = conn.getresponse()
    response.read()
    return response.status


def stand_in_test(prefix: str):
    """A test's set-up and first post on the stand-in: a token of a namespace of its own, then one event."""
    def one_test(conn: http.client.HTTPConnection, n: int) -> None:
        token = make_token(ns=f"{prefix}-{n}")
        assert _send(conn, "POST", "/player-events", valid_event("bet"), token) == 200
    return one_test


WIREMOCK_STUB = {"request": {"method": "POST", "url": "/player-events"},
                 "response": {"status": 200, "jsonBody": {"status": "ok"},
                              "headers": {"Content-Type": "application/json"}}}


def wiremock_test(conn: http.client.HTTPConnection, n: int) -> None:
    """A test's set-up and first post on WireMock: a reset, the stub, then one event."""
    assert _send(conn, "POST", "/__admin/reset") == 200
    assert _send(conn, "POST", "/__admin/mappings", WIREMOCK_STUB) == 201
    assert _send(conn, "POST", "/player-events", valid_event("bet"), make_token()) == 200


def prism_test(conn: http.client.HTTPConnection, n: int) -> None:
    """A test on Prism: nothing to set up (it keeps nothing), one event."""
    assert _send(conn, "POST", "/player-events", valid_event("bet"), make_token()) == 200


def tests_ms(port: int, one_test, count: int = TESTS) -> list[float]:
    """count tests one after the other on one keep-alive connection; each one's milliseconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        times = []
        for n in range(count):
            started = time.perf_counter()
            one_test(conn, n)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        conn.close()


def cold_and_warm(port: int, one_test, prefix: str) -> dict:
    """A server just started (cold: its first test, its first SEQUENTIAL events), then after WARM_S seconds of
    sequential events (warm: the median of TESTS tests, SEQUENTIAL events)."""
    cold_test = tests_ms(port, one_test, count=1)[0]
    cold_rate = sequential(port, f"{prefix}-cold")
    deadline = time.monotonic() + WARM_S
    while time.monotonic() < deadline:
        sequential(port, f"{prefix}-warming{time.time_ns()}")
    return {"cold_test": cold_test, "cold_rate": cold_rate, "warm_rate": sequential(port, f"{prefix}-warm"),
            "warm_test": statistics.median(tests_ms(port, one_test))}


def _started(command: list[str], ready_path: str, what: str) -> tuple[subprocess.Popen, int, float]:
    """A server started with command (its port put in for {port}), its port and seconds to its first answer."""
    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([part.format(port=port) for part in command],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, ready_path, what)
    except RuntimeError:
        proc.kill()
        raise
    return proc, port, time.perf_counter() - started


def wiremock(jar: Path) -> dict:
    """WireMock answering POST /player-events from a stub, cold and warm; and seconds to its first answer."""
    proc, port, first = _started(["java", "-jar", str(jar), "--port", "{port}", "--bind-address", "127.0.0.1",
                                  "--disable-banner", "--disable-request-logging"], "/__admin/mappings", "wiremock")
    try:
        return {"first": first, **cold_and_warm(port, wiremock_test, "wiremock")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def prism(binary: Path, folder: Path) -> dict:
    """Prism mocking our own document, cold and warm; and seconds to its first answer."""
    from backup_api import create_app

    app = create_app({"DATABASE": str(folder / "doc.db"), "JWT_SECRET": SECRET})
    document = folder / "openapi.json"
    document.write_text(json.dumps(app.extensions["openapi"]))
    app.extensions["store"].close()
    proc, port, first = _started([str(binary), "mock", str(document), "--port", "{port}", "--host", "127.0.0.1"],
                                 "/healthz", "prism")
    try:
        return {"first": first, **cold_and_warm(port, prism_test, "prism")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def stand_in_cold_and_warm(folder: Path) -> dict:
    server = stand_in_server(folder)
    try:
        return cold_and_warm(server.port, stand_in_test(f"cw{time.time_ns()}"), f"stand-in{time.time_ns()}")
    finally:
        server.stop()


def per_test_by_release(folder: Path) -> dict:
    """A test's set-up and first post (warm), this checkout's stand-in against earlier releases' (those with
    namespaces), taking turns over ROUNDS rounds: {label: [median ms of each round]}."""
    trees = {label: release.unpack(commit, folder) for label, commit in release.releases("d267d0b")}
    trees["HEAD"] = None
    found: dict[str, list[float]] = {label: [] for label in trees}
    for round_ in range(ROUNDS):
        for label, tree in trees.items():
            server = release.serve(tree, folder / "unused.db", SECRET, "--stand-in")
            try:
                tests_ms(server.port, stand_in_test(f"warm{round_}"), count=20)
                found[label].append(statistics.median(tests_ms(server.port, stand_in_test(f"r{round_}"))))
            finally:
                server.stop()
    return found


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
        ours = stand_in_cold_and_warm(folder)
        by_release = per_test_by_release(folder)
        binary, why = npm_tool("@stoplight/prism-cli", PRISM_VERSION, ".bin/prism")
        prism_found = prism(binary, folder) if binary else None
        jar, wiremock_why = npm_tool("wiremock", WIREMOCK_VERSION,
                                     f"wiremock/build/wiremock-standalone-{WIREMOCK_VERSION}.jar")
        if jar and shutil.which("java") is None:
            jar, wiremock_why = None, "java is not on the PATH"
        wiremock_found = wiremock(jar) if jar else None
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
    def cold_warm(found: dict) -> str:
        return (f"cold {found['cold_rate']:,.0f} events/s, a test {found['cold_test']:.2f} ms; warm"
                f" {found['warm_rate']:,.0f} events/s, a test {found['warm_test']:.2f} ms")

    lines.append(f"| stand-in: sequential single events, and a test's set-up and first post (a token of a new"
                 f" namespace, one event), just started (cold) and after {WARM_S:.0f} s of events (warm) |"
                 f" {cold_warm(ours)} | |")
    if wiremock_found:
        lines.append(
            f"| WireMock {WIREMOCK_VERSION} (standalone jar), a stub for POST /player-events: sequential single"
            f" events, and a test's reset, stub and first post, cold and warm | {cold_warm(wiremock_found)};"
            f" first answer {wiremock_found['first'] * 1000:.0f} ms. Stand-in / WireMock: events"
            f" {ours['cold_rate'] / wiremock_found['cold_rate']:.2f}x cold,"
            f" {ours['warm_rate'] / wiremock_found['warm_rate']:.2f}x warm; a test costs"
            f" {ours['warm_test'] / wiremock_found['warm_test']:.2f} of WireMock's, warm | a test < 1 of"
            " WireMock's, warm |")
    else:
        lines.append(f"| WireMock stubbing POST /player-events | skipped: {wiremock_why} | |")
    if prism_found:
        lines.append(
            f"| Prism {PRISM_VERSION} mocking our document (it keeps nothing: a test is one post), cold and warm |"
            f" {cold_warm(prism_found)}; first answer {prism_found['first'] * 1000:.0f} ms. Stand-in / Prism:"
            f" events {ours['cold_rate'] / prism_found['cold_rate']:.2f}x cold,"
            f" {ours['warm_rate'] / prism_found['warm_rate']:.2f}x warm | |")
    else:
        lines.append(f"| Prism mocking our document | skipped: {why} | |")
    head = by_release.pop("HEAD")
    for label, medians in by_release.items():
        lines.append(
            f"| stand-in: a test's set-up and first post, warm, this build / {label} | {statistics.median(head):.2f}"
            f" / {statistics.median(medians):.2f} ms (rounds' medians: {', '.join(f'{m:.2f}' for m in head)} /"
            f" {', '.join(f'{m:.2f}' for m in medians)}) | |")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
