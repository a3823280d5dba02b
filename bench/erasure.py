"""Erasure and retention under load: erasing a player with 10,000 events among OTHERS (HTTP), and `db prune` of PRUNED
old events (another process), each while four clients post single events to the server; how long it took and the
longest post meanwhile.

Run alone with `python -m bench.erasure` (BENCH_OTHERS, BENCH_PRUNED to change the sizes).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

from backup_api import storage
from bench.checking import event
from tests.helpers import SECRET, make_token, valid_event
from tests.server import ROOT, Server

OTHERS = int(os.environ.get("BENCH_OTHERS", "2000000"))
PRUNED = int(os.environ.get("BENCH_PRUNED", "1000000"))
PLAYER_EVENTS = 10_000
CLIENTS = 4
OLD_US = 1_577_880_000_000_000  # 2020-01-01T12:00:00Z


def fill(database: str, player_events: int, others: int, old: int) -> None:
    """The events of the player to be erased, others' events, and old events (received in 2020)."""
    store = storage.open_store(database, synchronous="NORMAL")
    store.add_events([{**event("casino_alpha", n), "player_login": "to-be-erased", "event_id": f"p-{n}"}
                      for n in range(player_events)], "bench")
    for start in range(0, others, 10_000):
        store.add_events([event("casino_alpha", n) for n in range(start, min(others, start + 10_000))], "bench")
    with mock.patch("backup_api.storage.base.now_us", return_value=OLD_US):
        for start in range(0, old, 10_000):
            store.add_events([event("old", n) for n in range(start, min(old, start + 10_000))], "bench")
    store.close()


def under_load(server: Server, work) -> dict:
    """Run work() while CLIENTS post single events; its time, the posts' longest time, and their statuses."""
    stop = threading.Event()
    statuses: list[int] = []
    longest = [0.0]
    token = make_token(lifetime=86400)

    def post(client: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            status = server.request("POST", "/player-events", valid_event("bet", event_id=f"load-{client}-{n}"),
                                    token=token, timeout=60)[0]
            longest[0] = max(longest[0], time.perf_counter() - started)
            statuses.append(status)

    threads = [threading.Thread(target=post, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(timeout=70)
    return {"seconds": took, "longest_post": longest[0], "posts": len(statuses),
            "all_200": all(status == 200 for status in statuses), "result": result}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-erasure-") as folder:
        database = Path(folder) / "b.db"
        fill(str(database), PLAYER_EVENTS, OTHERS, PRUNED)
        eraser = make_token(scope="players:erase", lifetime=86400)
        with Server(database, SECRET) as server:
            erased = under_load(server, lambda: server.request(
                "DELETE", "/users/casino_alpha/player/to-be-erased", token=eraser, timeout=120)[2]["erased_events"])
            # `db prune`, another process on the same file, while the server takes posts.
            env = {**os.environ, "BACKUP_API_DATABASE": str(database), "BACKUP_API_JWT_SECRET": SECRET,
                   "PYTHONPATH": str(ROOT)}
            prune = under_load(server, lambda: subprocess.run(
                [sys.executable, "-m", "flask", "--app", "backup_api", "db", "prune", "--before", "2021-01-01"],
                env=env, capture_output=True, text=True, timeout=1800, check=True).stdout.split()[1])
    return {"erase": erased, "prune": prune}


def rows(results: dict) -> list[str]:
    e, p = results["erase"], results["prune"]
    return [
        f"| erasing a player's {PLAYER_EVENTS:,} events among {OTHERS:,} (HTTP), {CLIENTS} clients posting |"
        f" {e['seconds']:.2f} s ({e['result']:,} erased); longest post {e['longest_post']:.2f} s, {e['posts']:,}"
        f" posts {'all 200' if e['all_200'] else 'NOT all 200'} | posts within the busy timeout |",
        f"| `db prune` of {PRUNED:,} old events (another process), {CLIENTS} clients posting to the server |"
        f" {p['seconds']:.1f} s; longest post {p['longest_post']:.2f} s, {p['posts']:,} posts"
        f" {'all 200' if p['all_200'] else 'NOT all 200'} | all 200 |",
    ]


if __name__ == "__main__":
    print("\n".join(rows(run())))
