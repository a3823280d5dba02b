"""End to end against a real waitress process on a free port."""

import json
import socket
import subprocess
import sys
import threading

from tests.conftest import SECRET, count_rows, make_token, valid_event
from tests.server import ROOT, Server


def test_routes_end_to_end(tmp_path):
    with Server(tmp_path / "b.db", SECRET) as server:
        token = make_token()
        status, _, body = server.request("POST", "/player-events", valid_event("win"), token)
        assert (status, body) == (200, {"status": "ok"})
        status, headers, body = server.request("POST", "/player-events", valid_event("win"))
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and body["status"] == "error"
        status, _, body = server.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": True}, token)
        assert (status, body) == (200, {"status": "ok"})
        status, _, body = server.request("GET", "/nowhere")
        assert status == 404 and body["status"] == "error"
    assert count_rows(tmp_path / "b.db") == 1


def test_oversized_body_is_refused_in_json_before_it_is_sent(tmp_path):
    with Server(tmp_path / "b.db", SECRET) as server:
        # Announce 3 MiB and send only the headers: waitress answers without waiting for the body.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + make_token().encode() + b"\r\n"
                b"Content-Length: " + str(3 << 20).encode() + b"\r\n\r\n"
            )
            reply = b""
            while b"}" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        assert b"Content-Type: application/json" in head
        assert json.loads(body)["status"] == "error"


def test_concurrent_identical_posts_store_one_row(tmp_path):
    with Server(tmp_path / "b.db", SECRET, threads=8) as server:
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
    assert count_rows(tmp_path / "b.db") == 1


def test_acknowledged_events_survive_kill_9(tmp_path):
    server = Server(tmp_path / "b.db", SECRET).start()
    try:
        token = make_token()
        for i in range(30):
            status, _, _ = server.request("POST", "/player-events", valid_event("bet", amount=i), token)
            assert status == 200
    finally:
        server.kill()
    assert count_rows(tmp_path / "b.db") == 30


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
