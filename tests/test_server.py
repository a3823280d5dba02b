"""End to end against a real waitress process on a free port."""

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backup_api import storage
from backup_api.version import __version__
from tests.helpers import SECRET, count_rows, event_lines, make_token, valid_event
from tests.server import ROOT, Server

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


def test_routes_end_to_end(database):
    with Server(database, SECRET) as server:
        token = make_token()
        status, _, body = server.request("POST", "/player-events", valid_event("win"), token)
        assert (status, body) == (200, {"status": "ok"})
        status, headers, body = server.request("POST", "/player-events", valid_event("win"))
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and body["status"] == "error"
        status, _, body = server.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": True}, token)
        assert (status, body) == (200, {"status": "ok"})
        status, _, body = server.request("GET", "/nowhere")
        assert status == 404 and body["status"] == "error"
        # As sent on the wire, not as an in-process client rewrites it: %ff is no UTF-8.
        status, _, body = server.request("PUT", "/users/casino_alpha/player/%ff/vip", {"is_vip": True}, token)
        assert status == 400 and "UTF-8" in body["message"]
        status, _, body = server.request("GET", "/player-events?partner_id=casino_alpha&player_login=%fe", token=token)
        assert status == 400 and "UTF-8" in body["message"]
    assert count_rows(database) == 1


def _raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send request bytes as they are; return the answer's head and its body (read until a JSON object ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"}" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip", b"chunked, gzip"])
def test_a_transfer_coding_other_than_chunked_is_501_in_json(tmp_path, coding):
    with Server(tmp_path / "te.db", SECRET) as server:
        head, body = _raw_exchange(server.port, (
            b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 501") and b"Content-Type: application/json" in head
    assert json.loads(body)["status"] == "error"


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "BACKUP_API_DATABASE": str(tmp_path / "p.db"), "BACKUP_API_JWT_SECRET": SECRET}
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_oversized_body_is_refused_in_json_before_it_is_sent(tmp_path):
    with Server(tmp_path / "b.db", SECRET) as server:
        # Announce 3 MiB and send only the headers: waitress answers without waiting for the body.
        head, body = _raw_exchange(server.port, (
            b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + make_token().encode() + b"\r\n"
            b"Content-Length: " + str(3 << 20).encode() + b"\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 413")
        assert b"Content-Type: application/json" in head
        assert json.loads(body)["status"] == "error"


def test_concurrent_identical_posts_store_one_row(database):
    with Server(database, SECRET, threads=8) as server:
        token = make_token()
        statuses = []
        barrier = threading.Barrier(16)

        def send():
            barrier.wait(timeout=10)
            for _ in range(5):
                statuses.append(server.request("POST", "/player-events", valid_event("bet", amount=7), token)[0])

        threads = [threading.Thread(target=send) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert statuses == [200] * 80
    assert count_rows(database) == 1


def test_acknowledged_events_survive_kill_9(database):
    server = Server(database, SECRET).start()
    try:
        token = make_token()
        for i in range(30):
            status, _, _ = server.request("POST", "/player-events", valid_event("bet", amount=i), token)
            assert status == 200
    finally:
        server.kill()
    assert count_rows(database) == 30


def test_out_of_the_box_token_works_against_the_server(tmp_path):
    # No secret configured: the server makes one, and the token command uses the same.
    with Server(tmp_path / "data" / "b.db") as server:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "backup_api", "token", "issue", "casino_alpha"],
            cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60, check=True,
        )
        token = result.stdout.strip().splitlines()[-1]
        status, _, body = server.request("POST", "/player-events", valid_event("complaint"), token)
        assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_answers_the_requests_under_way_then_exits_0(database, stop_signal):
    token = make_token()
    outcomes = []  # (event_id, monotonic time its request was fully sent, status or None if cut off)
    signalled = []

    def client(name):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        for n in range(100_000):
            if signalled and time.monotonic() > signalled[0] + 1:
                break
            event = valid_event("bet", event_id=f"{name}-{n}", batch_of=n)
            # Now and then a batch of two, which takes a little longer.
            body = json.dumps(event if n % 3 else [event, valid_event("win", event_id=f"{name}-{n}w")])
            try:
                conn.request("POST", "/player-events", body=body, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
                sent = time.monotonic()
            except OSError:
                break  # refused or closed before it was sent: never received
            try:
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = None
            outcomes.append((event["event_id"], sent, status))
            if status is None:
                break
            if n % 5 == 4:
                conn.close()  # a new connection now and then, as clients without keep-alive make
        conn.close()

    with Server(database, SECRET) as server:
        threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        signalled.append(time.monotonic())
        server.proc.send_signal(stop_signal)
        code = server.proc.wait(timeout=30)
        stopped_after = time.monotonic() - signalled[0]
        for thread in threads:
            thread.join(timeout=30)
    assert code == 0
    assert stopped_after < 5
    if not storage.is_url(database):
        assert not Path(f"{database}-wal").exists()  # the database was closed: its log folded in and removed
    sent_before = [o for o in outcomes if o[1] < signalled[0]]
    assert len(sent_before) > 20
    assert all(status == 200 for _, _, status in sent_before), [o for o in sent_before if o[2] != 200]
    store = storage.open_store(database)
    stored = {json.loads(line)["event"]["event_id"] for line in event_lines(store)}
    store.close()
    assert {event_id for event_id, _, status in outcomes if status == 200} <= stored


def test_a_stop_while_a_request_is_under_way_prints_no_traceback(tmp_path):
    """The request finishes after the listening socket closed: its worker's wake-up must find the loop still there."""
    database = tmp_path / "stop.db"
    token = make_token()
    with open(tmp_path / "stderr", "w") as log:
        server = Server(database, SECRET)
        server.stderr = log
        with server:
            assert server.request("POST", "/player-events", valid_event("bet", n=0), token)[0] == 200
            holder = sqlite3.connect(database, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the write lock: the next POST waits for it
            answers = []
            post = threading.Thread(target=lambda: answers.append(
                server.request("POST", "/player-events", valid_event("bet", n=1), token)[0]))
            post.start()
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            holder.execute("COMMIT")
            holder.close()
            post.join(timeout=20)
            assert server.proc.wait(timeout=20) == 0
    assert answers == [200]
    printed = (tmp_path / "stderr").read_text()
    assert "stopped cleanly" in printed and "Traceback" not in printed, printed
    # The first line says what ran: the version, the database, the settings given.
    assert printed.splitlines()[0].endswith(f"INFO game-backup-api {__version__} starting; database: {database};"
                                            " settings not at their default: BACKUP_API_JWT_SECRET=set"), printed


def test_a_request_half_read_when_the_stop_comes_is_answered_before_the_server_exits(tmp_path):
    """Its headers read in one turn, its body in the next: a request its client sent whole is not dropped."""
    body = json.dumps(valid_event("bet")).encode()
    with Server(tmp_path / "b.db", SECRET) as server:
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Authorization: Bearer " + make_token().encode() + b"\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.3)  # the headers are read: a request under way
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the stop has begun
        connection.sendall(body)
        answer = connection.recv(4096)
        connection.close()
        assert server.proc.wait(timeout=30) == 0
    assert answer.startswith(b"HTTP/1.1 200"), answer


def test_the_event_loop_sleeps_while_a_task_holds_its_output(tmp_path):
    """Before (issue 41): poll() said the connection was writable at once, again and again, while the task held
    the output lock, and the loop spun, taking the GIL from the task: 8 connections got a fifth of 1's rate."""
    from backup_api import create_app, server

    held = threading.Event()

    app = create_app({"DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"})

    @app.get("/_test/hold")
    def hold():
        # As a task sending its answer does: output waiting, the lock held (here for half a second).
        from flask import request

        channel = request.environ["waitress.client_disconnected"].__self__
        with channel.outbuf_lock:
            channel.total_outbufs_len += 1
            channel.server.pull_trigger()  # the loop looks again (other connections wake it all the time)
            held.set()
            time.sleep(0.5)
            channel.total_outbufs_len -= 1
        return {"status": "ok"}

    served = server.InThread(app)
    try:
        loop = next(thread for thread in threading.enumerate() if thread.name == "backup-api-server")

        def loop_cpu() -> float:
            fields = Path(f"/proc/self/task/{loop.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        conn = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=10)
        try:
            conn.request("GET", "/_test/hold")
            assert held.wait(5)
            before = loop_cpu()
            answer = conn.getresponse()
            spent = loop_cpu() - before
            assert answer.status == 200 and json.loads(answer.read()) == {"status": "ok"}
        finally:
            conn.close()
        assert spent < 0.1, f"the event loop spent {spent:.2f} s of CPU while the task held its output for 0.5 s"
    finally:
        served.stop()


def test_serve_leaves_the_heap_it_starts_with_out_of_collections(tmp_path, monkeypatch):
    """Before (issue 41): every full collection walked the modules, the app and its store again, about 50,000
    instructions a request. serve() freezes what exists once it listens (its own process only)."""
    import gc
    import logging

    from waitress import wasyncore

    from backup_api import create_app, server

    app = create_app({"DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
    frozen = []

    def run(app, served, stop):
        frozen.append(gc.get_freeze_count())
        served.task_dispatcher.shutdown()
        wasyncore.close_all(served._map)

    # serve() as a process of its own runs it, less what would change this test process for good.
    monkeypatch.setattr(server, "run", run)
    monkeypatch.setattr(server.signal, "signal", lambda *args: None)
    monkeypatch.setattr(server.logs, "lighten_records", lambda: None)
    monkeypatch.setattr(server, "raise_descriptor_limit", lambda: (1024, 1024))
    queue_level = logging.getLogger("waitress.queue").level
    gc.unfreeze()
    try:
        server.serve(app, port=0)
    finally:
        gc.unfreeze()
        logging.getLogger("waitress.queue").setLevel(queue_level)
        app.extensions["store"].close()
    assert frozen and frozen[0] > 10_000
