"""Idle and slow connections cannot starve real clients of a real server."""

import resource
import socket
import threading
import time

import pytest

from tests.helpers import SECRET, make_token, valid_event
from tests.server import Server

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


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
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_MAX_CONNECTIONS_PER_CLIENT"] = "5000"  # every connection here is 127.0.0.1's
    with server:
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


def _bounded_server(tmp_path, **settings):
    """A server in this process whose clients are bounded by settings; return it and its port."""
    from backup_api import create_app
    from backup_api import server as serving

    app = create_app({"DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING", **settings})
    running = serving.InThread(app)
    return running, int(running.url.rsplit(":", 1)[1])


def _connect_from(address: str, port: int) -> socket.socket:
    """A connection to the server from a source address of the loopback network (127.0.0.2, say)."""
    connection = socket.socket()
    connection.settimeout(5)
    connection.bind((address, 0))
    connection.connect(("127.0.0.1", port))
    return connection


def test_one_address_cannot_hold_more_than_its_connections_and_others_are_served(tmp_path):
    running, port = _bounded_server(tmp_path, MAX_CONNECTIONS_PER_CLIENT=20)
    held = [_connect_from("127.0.0.1", port) for _ in range(20)]
    try:
        assert _healthz_on(held[0]).startswith(b"HTTP/1.1 200")
        refused = _connect_from("127.0.0.1", port)
        answer = refused.recv(4096)
        refused.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"BACKUP_API_MAX_CONNECTIONS_PER_CLIENT" in answer, answer
        other = _connect_from("127.0.0.2", port)
        assert _healthz_on(other).startswith(b"HTTP/1.1 200")
        other.close()
        held.pop().close()
        time.sleep(0.3)  # the server sees the close at its next turn
        again = _connect_from("127.0.0.1", port)
        assert _healthz_on(again).startswith(b"HTTP/1.1 200")
        again.close()
    finally:
        for connection in held:
            connection.close()
        running.stop()


def _post_head(length: int) -> bytes:
    return (b"POST /player-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)


def test_one_address_cannot_hold_more_than_its_bytes_in_flight_and_they_are_freed_once_answered(tmp_path):
    budget = 1 << 20
    running, port = _bounded_server(tmp_path, MAX_BODY_BYTES_PER_CLIENT=budget)
    try:
        # Many requests, one after the other on one connection: far more than the budget in all.
        steady = _connect_from("127.0.0.1", port)
        for _ in range(12):
            steady.sendall(_post_head(200_000) + b" " * 200_000)
            assert _answer(steady).startswith(b"HTTP/1.1 401")
        steady.close()
        # Bodies sent and never finished, on several connections: past the budget, closed.
        uploads = [_connect_from("127.0.0.1", port) for _ in range(8)]
        closed = 0
        for upload in uploads:
            try:
                upload.sendall(_post_head(1_500_000) + b" " * 400_000)
            except OSError:
                closed += 1
        time.sleep(0.5)
        for upload in uploads:
            try:
                upload.settimeout(0.5)
                if upload.recv(1) == b"":
                    closed += 1
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        assert closed >= 8 - budget // 400_000, closed
        other = _connect_from("127.0.0.2", port)
        assert _healthz_on(other).startswith(b"HTTP/1.1 200")
        other.close()
        for upload in uploads:
            upload.close()
        time.sleep(0.3)
        again = _connect_from("127.0.0.1", port)
        again.sendall(_post_head(200_000) + b" " * 200_000)
        assert _answer(again).startswith(b"HTTP/1.1 401")  # its bytes were freed with its connections
        again.close()
    finally:
        running.stop()


def _answer(connection: socket.socket) -> bytes:
    """Read one JSON answer (its body ends the envelope) from a connection."""
    answer = b""
    while not answer.rstrip().endswith(b"}"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer
