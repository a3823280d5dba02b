"""Checking the backup: the summary of one partner's 200,000 events over 30 days among others' events, `missing`
of 10,000 ids (half held), and what keeping the totals costs a single event, on SQLite and PostgreSQL.

Run alone with `python -m bench.checking` (OTHERS=2000000 by default on SQLite; BENCH_PG_OTHERS on PostgreSQL).
"""

import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from unittest import mock

from backup_api import create_app, storage
from backup_api.storage import totals
from backup_api.storage.sqlstore import SQLStore
from tests import postgres
from tests.helpers import SECRET, bearer

PARTNER_EVENTS = 200_000
DAYS = 30
OTHERS = int(os.environ.get("BENCH_OTHERS", "2000000"))
PG_OTHERS = int(os.environ.get("BENCH_PG_OTHERS", "200000"))
ASKED = 10_000
DAY_US = 86_400 * 1_000_000
FIRST_DAY_US = 1_764_547_200_000_000  # 2025-12-01T00:00:00Z


def event(partner: str, n: int) -> dict:
    return {"partner_id": partner, "player_login": f"player{n % 1000}", "event_type": "bet",
            "amount": Decimal(f"{n % 500}.{n % 100:02d}"), "currency": ("EUR", "USD")[n % 2],
            "event_id": f"{partner}-{n}"}


def fill(database: str, others: int) -> None:
    """The partner's events spread over DAYS days (its clock set to each), and others' events beside them."""
    store = storage.open_store(database, **({"synchronous": "NORMAL"} if not storage.is_url(database) else {}))
    per_day = PARTNER_EVENTS // DAYS
    for day in range(DAYS):
        with mock.patch("backup_api.storage.base.now_us", return_value=FIRST_DAY_US + day * DAY_US + 1):
            last = PARTNER_EVENTS if day == DAYS - 1 else (day + 1) * per_day
            for start in range(day * per_day, last, 5000):
                store.add_events([event("casino_alpha", n) for n in range(start, min(last, start + 5000))], "bench")
    for start in range(0, others, 10_000):
        store.add_events([event("others", n) for n in range(start, min(others, start + 10_000))], "bench")
    store.close()


def timed(call, rounds: int = 20) -> float:
    """The median of rounds calls, in milliseconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(database: str) -> dict:
    """The summary and missing, in the store and over HTTP (a test client: the app's own work), and the recount
    the totals spare (the partner's events read and summed, as a summary without them would)."""
    app = create_app({"TESTING": True, "DATABASE": database, "JWT_SECRET": SECRET})
    store = app.extensions["store"]
    client = app.test_client()
    headers = bearer()
    asked = [f"casino_alpha-{n}" if n % 2 else f"absent-{n}" for n in range(ASKED)]
    rows = store.summary("casino_alpha", "0001-01-01", "9999-12-31")
    assert sum(row.events for row in rows) == PARTNER_EVENTS, rows
    assert len(store.missing("casino_alpha", asked)) == ASKED // 2
    result = {
        "summary_ms": timed(lambda: store.summary("casino_alpha", "0001-01-01", "9999-12-31")),
        "summary_http_ms": timed(lambda: client.get("/player-events/summary?partner_id=casino_alpha",
                                                     headers=headers)),
        "missing_ms": timed(lambda: store.missing("casino_alpha", asked), rounds=10),
        "missing_http_ms": timed(lambda: client.post("/player-events/missing", headers=headers,
                                                      json={"partner_id": "casino_alpha", "event_ids": asked}),
                                 rounds=10),
    }

    def recount():
        with store._reading() as conn:
            sql = store.sql.counted_events + f" WHERE partner_id = {store.sql.mark}"
            rows = conn.execute(sql, ("casino_alpha",)).fetchall()
            totals.tally((partner, at, totals.parsed(text)) for partner, at, text in rows)

    result["recount_ms"] = timed(recount, rounds=3)
    store.close()
    return result


def single_events(database: str, rounds: int = 5, events: int = 500) -> dict:
    """Single events stored one after another in the store, with the totals kept and without, rounds taking turns."""
    store = storage.open_store(database)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    n = 0
    for _ in range(rounds):
        for kind in ("with", "without"):
            # Without: the counting (every COUNT_EVERY events) skipped; with: a patch that changes nothing, so both
            # pay for one.
            patch = (mock.patch.object(SQLStore, "count_pending", lambda self, partner_ids: None)
                     if kind == "without" else mock.patch.object(SQLStore, "IMPORT_CHUNK", SQLStore.IMPORT_CHUNK))
            with patch:
                started = time.perf_counter()
                for _ in range(events):
                    n += 1
                    store.add_events([event("single", n)], "bench")
                rates[kind].append(events / (time.perf_counter() - started))
    store.close()
    ratios = [w / wo for w, wo in zip(rates["with"], rates["without"], strict=True)]
    return {"with": statistics.median(rates["with"]), "without": statistics.median(rates["without"]),
            "ratio": statistics.median(ratios), "ratios": ratios}


def run() -> dict:
    """Everything, on a SQLite file (with OTHERS others) and on a throwaway PostgreSQL (with PG_OTHERS)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-checking-") as folder:
        alone, crowded = str(Path(folder) / "alone.db"), str(Path(folder) / "crowded.db")
        fill(alone, 0)
        fill(crowded, OTHERS)
        results["sqlite_alone"] = measure(alone)
        results["sqlite"] = measure(crowded)
        results["sqlite_single"] = single_events(str(Path(folder) / "single.db"))
    url, server = postgres.start()
    try:
        databases = postgres.Databases(url)
        database = databases.create()
        fill(database, PG_OTHERS)
        results["postgres"] = measure(database)
        results["postgres_single"] = single_events(databases.create())
    finally:
        if server is not None:
            server.stop()
    return results


def rows(results: dict) -> list[str]:
    """The benchmark table's rows."""
    def pair(r):
        return (f"summary {r['summary_ms']:.1f} ms ({r['summary_http_ms']:.1f} over HTTP); missing"
                f" {r['missing_ms']:.0f} ms ({r['missing_http_ms']:.0f}); the recount the totals spare"
                f" {r['recount_ms']:.0f} ms")
    s, a, p = results["sqlite"], results["sqlite_alone"], results["postgres"]
    lines = [
        f"| SQLite: one partner's {PARTNER_EVENTS:,} events over {DAYS} days among {OTHERS:,} others; {ASKED:,}"
        f" ids, half held | {pair(s)} | summary and missing < 1 s |",
        f"| the same, the partner alone / among {OTHERS:,} others | summary {a['summary_ms']:.1f} /"
        f" {s['summary_ms']:.1f} ms, missing {a['missing_ms']:.0f} / {s['missing_ms']:.0f} ms | not slower |",
        f"| PostgreSQL: the same among {PG_OTHERS:,} others | {pair(p)} | < 1 s |",
    ]
    for name, key in (("SQLite", "sqlite_single"), ("PostgreSQL", "postgres_single")):
        r = results[key]
        lines.append(f"| {name}: single events in the store, totals kept / not kept (in turns) |"
                     f" {r['with']:,.0f} / {r['without']:,.0f} events/s: {r['ratio']:.2f}"
                     f" (rounds: {', '.join(f'{x:.2f}' for x in r['ratios'])}) | |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows(run())))
