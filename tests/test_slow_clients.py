"""Idle and slow connections cannot starve real clients of a real server."""

import resource
import socket
import threading
import time

import pytest

from tests.helpers import SECRET, make_token, valid_event
from tests.server import Server


def test_idle_and_dripping_connections_do_not_starve_a_normal_request(tmp_path):
    with Server(tmp_path / "b.db", SECRET) as server:
        sockets = []
        stop = threading.Event()
        try:
            for _ in range(50):  # connected, sending nothing
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            dripping = []
            for _ in range(50):  # sending a request one byte a second
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(b"POST /player-events HTTP/1.1\r\nHost: x\r\n")
                dripping.append(s)
            sockets.extend(dripping)

            def drip():
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    for s in dripping:
                        try:
                            s.send(b"X")
                        except OSError:
                            pass
                    stop.wait(1)

            dripper = threading.Thread(target=drip)
            dripper.start()
            time.sleep(1.5)
            started = time.monotonic()
            for _ in range(5):
                status, _, body = server.request("POST", "/player-events", valid_event("bet"), make_token(), timeout=5)
                assert (status, body) == (200, {"status": "ok"})
            assert time.monotonic() - started < 3
        finally:
            stop.set()
            for s in sockets:
                s.close()
        dripper.join(timeout=10)


def _allow_descriptors(count: int) -> None:
    """Let this test process open count more descriptors, or skip saying why it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 1024:
        pytest.skip(f"the hard limit on open descriptors here is {hard}: too few to open {count} connections")
    if soft != resource.RLIM_INFINITY and soft < count + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_thousands_of_idle_connections_leave_the_server_up_and_a_new_client_answered_within_a_second(tmp_path):
    """Past descriptor 1023, waitress's select() raised and the process died (issue 27, reproduced 2 of 2)."""
    _allow_descriptors(3000)
    token = make_token()
    with Server(tmp_path / "b.db", SECRET) as server:
        # Reads first: the store's reader connections hold descriptors too, as in the report.
        for n in range(40):
            assert server.request("POST", "/player-events", valid_event("bet", n=n), token)[0] == 200
            assert server.request("GET", "/player-events?partner_id=casino_alpha&limit=1000", token=token)[0] == 200
        idle = []
        try:
            for _ in range(3000):  # connected, sending nothing
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            # At once: the server accepts the waiting connections many a turn, not one (each turn
            # of its loop asks every open connection whether it has something to do).
            started = time.monotonic()
            status, _, body = server.request("POST", "/player-events", valid_event("win"), token, timeout=5)
            assert (status, body) == (200, {"status": "ok"})
            assert server.request("GET", "/healthz", timeout=5)[0] == 200
            assert time.monotonic() - started < 1
            assert server.proc.poll() is None
        finally:
            for s in idle:
                s.close()
        assert server.request("GET", "/healthz", timeout=5)[0] == 200


def test_a_request_dripping_past_its_deadline_is_closed_and_a_slow_keep_alive_is_not(tmp_path, monkeypatch):
    from backup_api import create_app
    from backup_api import server as serving

    monkeypatch.setattr(serving, "REQUEST_DEADLINE_SECONDS", 2)
    monkeypatch.setitem(serving.WAITRESS, "cleanup_interval", 0.5)
    app = create_app({"DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
    running = serving.InThread(app)
    port = int(running.url.rsplit(":", 1)[1])
    dripping = socket.create_connection(("127.0.0.1", port), timeout=0.2)
    # A keep-alive connection that finished its request, then waits longer than the deadline.
    patient = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        dripping.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert _healthz_on(patient).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed_after = None
        while time.monotonic() - started < 10:  # a byte every 0.2 s: waitress's own timeout never fires
            try:
                dripping.sendall(b"X")
                if dripping.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:  # reset: closed too
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and closed_after < 5, closed_after
        assert _healthz_on(patient).startswith(b"HTTP/1.1 200")
    finally:
        dripping.close()
        patient.close()
        running.stop()


def _healthz_on(connection: socket.socket) -> bytes:
    """Send GET /healthz on an open connection; return the whole answer (its body ends the JSON)."""
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"}\n"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer
