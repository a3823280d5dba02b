"""Idle and slow connections cannot starve real clients of a real server."""

import socket
import threading
import time

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
