"""Kill the real server with SIGKILL under load, again and again, and account for every event.

Used by tests/test_crash.py (a few kills, in `make test`) and by `make soak` (many).
"""

import http.client
import json
import random
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

from backup_api.storage import open_store
from tests.helpers import SECRET, event_lines, make_token
from tests.server import Server


class Ledger:
    """What each client was told about each event."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked: dict[str, list[str]] = {}  # client -> event_ids answered 200, in order
        self.refused: set[str] = set()  # answered with an error status: must not be stored
        self.unknown: set[str] = set()  # the connection died first: stored at most once


def _event(client: str, n: int) -> dict:
    return {
        "partner_id": "casino_alpha",
        "player_login": client,
        "event_type": "bet",
        "amount": n,
        "event_id": f"{client}-{n}",
    }


def _client(name: str, server_port: list, ledger: Ledger, stop: threading.Event, token: str) -> None:
    """Send unique events, and now and then resend an acknowledged one, until stopped."""
    rng = random.Random(name)
    n = 0
    acked = ledger.acked.setdefault(name, [])
    while not stop.is_set():
        if acked and rng.random() < 0.2:
            event = _event(name, int(rng.choice(acked).rsplit("-", 1)[1]))  # a resend
            resend = True
        else:
            n += 1
            event = _event(name, n)
            resend = False
        event_id = event["event_id"]
        conn = http.client.HTTPConnection("127.0.0.1", server_port[0], timeout=5)
        try:
            conn.request("POST", "/player-events", body=json.dumps(event),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):  # killed mid-request: no answer
            if not resend:
                with ledger.lock:
                    ledger.unknown.add(event_id)
            time.sleep(0.05)  # the server is down: wait for it to come back
            continue
        finally:
            conn.close()
        with ledger.lock:
            if status == 200 and not resend:
                acked.append(event_id)
                ledger.unknown.discard(event_id)
            elif status != 200:
                ledger.refused.add(event_id)


def run(kills: int, database: str, clients: int = 4, seed: int = 0, max_seconds: float = 600) -> dict:
    """Drive the server on database (a file or a PostgreSQL URL), kill it `kills` times, check; return the tallies."""
    rng = random.Random(seed)
    token = make_token(lifetime=86400)
    ledger = Ledger()
    stop = threading.Event()
    server = Server(database, SECRET).start()
    port = [server.port]
    threads = [threading.Thread(target=_client, args=(f"c{i}", port, ledger, stop, token)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.2))
            server.kill()
            server = Server(database, SECRET).start()
            port[0] = server.port
            if time.monotonic() > deadline:
                raise RuntimeError("the crash run took too long")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    return check(database, ledger, kills)


def check(database: str, ledger: Ledger, kills: int) -> dict:
    """Every 200 stored once and in order, no refused event stored, the database sound."""
    store = open_store(database)
    try:
        integrity = "; ".join(store.check()[1])
        stored = [json.loads(line)["event"]["event_id"] for line in event_lines(store)]
    finally:
        store.close()
    position = {event_id: i for i, event_id in enumerate(stored)}
    acked = [e for ids in ledger.acked.values() for e in ids]
    lost = [e for e in acked if e not in position]
    tallies = {
        "kills": kills,
        "acknowledged": len(acked),
        "lost": len(lost),
        "duplicated": len(stored) - len(set(stored)),
        "refused_but_stored": len(ledger.refused & set(stored)),
        "unknown": len(ledger.unknown),
        "integrity": integrity,
        # Each client waited for one answer before sending the next, so its events
        # must be stored in the order they were acknowledged.
        "out_of_order": sum(
            1 for ids in ledger.acked.values()
            for a, b in pairwise(ids) if a in position and b in position and position[a] > position[b]
        ),
    }
    return tallies


def main() -> int:
    """`make soak`: many kills, then a one-line summary."""
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory(prefix="backup-api-soak-") as folder:
        t = run(kills, str(Path(folder) / "crash.db"), seed=int(time.time()), max_seconds=3600)
    ok = t["lost"] == t["duplicated"] == t["refused_but_stored"] == t["out_of_order"] == 0 and t["integrity"] == "ok"
    print(
        f"soak: {t['kills']} kills, {t['acknowledged']} events acknowledged, {t['lost']} lost,"
        f" {t['duplicated']} duplicated, {t['refused_but_stored']} refused but stored,"
        f" {t['out_of_order']} out of order, {t['unknown']} unanswered; integrity {t['integrity']}"
        f" -> {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
