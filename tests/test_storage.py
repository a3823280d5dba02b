"""The store, on both backends: exact JSON, the content key, the UNIQUE constraints, threads."""

import sqlite3
import threading
from decimal import Decimal

import psycopg
import pytest

from backup_api import storage
from backup_api.jsontext import parse_json
from backup_api.storage.base import WriteRequest
from tests.helpers import event_lines


@pytest.fixture
def store(database):
    s = storage.open_store(database)
    yield s
    s.close()


def execute(database: str, sql: str, params=()):
    """Run one statement on a connection of its own, outside the store; return its rows."""
    if storage.is_url(database):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.adapters.register_loader("json", psycopg.types.string.TextLoader)  # the text, as stored
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def event(**fields):
    return {"partner_id": "p", "player_login": "l", "event_type": "bet", "amount": Decimal("5"), **fields}


def test_dumps_keeps_numbers_exactly():
    value = parse_json(b'{"a": 1234567.891234567891, "b": [1E+3, -0, 5.00], "c": "\xc3\xa9\\n"}')
    assert storage.dumps(value) == '{"a":1234567.891234567891,"b":[1E+3,-0,5.00],"c":"\xe9\\n"}'


@pytest.mark.parametrize("a,b", [("5", "5.0"), ("5", "5.00"), ("5", "0.5e1"), ("0", "-0.0"), ("1200", "1.2e3")])
def test_equal_numbers_have_one_key(a, b):
    assert storage.content_key(event(amount=Decimal(a))) == storage.content_key(event(amount=Decimal(b)))


@pytest.mark.parametrize("a,b", [("5", "5.1"), ("5", "50"), ("1", "-1")])
def test_different_numbers_have_different_keys(a, b):
    assert storage.content_key(event(amount=Decimal(a))) != storage.content_key(event(amount=Decimal(b)))


def test_key_ignores_order_but_not_types():
    assert storage.content_key({"a": 1, "b": 2}) == storage.content_key({"b": 2, "a": 1})
    assert storage.content_key({"a": "5"}) != storage.content_key({"a": Decimal(5)})
    assert storage.content_key({"a": [1, 2]}) != storage.content_key({"a": [2, 1]})


def test_key_is_not_the_records_own_id():
    assert storage.content_key(event(id="1")) != storage.content_key(event(id="1", amount=Decimal(6)))


def test_add_events_tells_new_from_duplicate(store):
    assert store.add_events([event()], "s") == [True]
    assert store.add_events([event()], "s") == [False]
    assert store.add_events([event(), event(amount=Decimal(7)), event(amount=Decimal(7))], "s") == [False, True, False]


def test_event_id_conflict_rolls_back(store):
    store.add_events([event(event_id="e1")], "s")
    with pytest.raises(storage.EventConflict):
        store.add_events([event(amount=Decimal(9)), event(event_id="e1", amount=Decimal(6))], "s")
    assert len(event_lines(store)) == 1


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({}, "events.content_key|events_by_content"),
        ({"event_id": "e1"}, "events.partner_id, events.event_id|events_by_event_id"),
    ],
)
def test_unique_constraints_are_in_the_database(database, store, fields, constraint):
    # Another writer, not the store, inserts the same row again: the database itself refuses it.
    store.add_events([event(**fields)], "s")
    columns = "partner_id, event_id, content_key, player_login, received_at, sub, event"
    if storage.is_url(database):
        columns += ", event_type"
    (row,) = execute(database, f"SELECT {columns} FROM events")
    insert = f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(row))})"
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation), match=constraint):
        execute(database, insert, row)


def test_event_id_is_per_partner(store):
    assert store.add_events([event(event_id="e1"), event(event_id="e1", partner_id="q")], "s") == [True, True]


def test_resend_with_event_id_compares_content_not_text(store):
    store.add_events([event(event_id="e1", amount=Decimal("5.0"), metadata={"a": 1, "b": 2})], "s")
    resend = event(event_id="e1", amount=Decimal("5"), metadata={"b": 2, "a": 1})
    assert store.add_events([resend], "s") == [False]
    with pytest.raises(storage.EventConflict):
        store.add_events([event(event_id="e1", amount=Decimal("5"), metadata={"b": 2, "a": 2})], "s")


def test_a_database_of_another_layout_is_refused(database):
    if not storage.is_url(database):
        storage.create_private_file(database)
    execute(database, "CREATE TABLE events (id INTEGER PRIMARY KEY, dedup_key TEXT)")
    with pytest.raises(storage.StorageError, match="layout 0"):
        storage.open_store(database)


def test_a_database_of_a_newer_layout_is_refused(database):
    storage.open_store(database).close()
    if storage.is_url(database):
        execute(database, "UPDATE backup_api_layout SET version = version + 1")
    else:
        execute(database, f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    with pytest.raises(storage.StorageError, match="newer version of the service"):
        storage.open_store(database)


def test_a_new_database_is_stamped_with_the_layout(store):
    assert store.check() == (storage.SCHEMA_VERSION, ["ok"], 0, 0)


def test_sqlite_is_in_wal_mode_with_its_indexes(tmp_path):
    store = storage.open_store(str(tmp_path / "w.db"))
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[1] for row in store.db.execute("PRAGMA index_list(events)")}
    assert "idx_events_partner_id" in indexes
    store.close()


def run_in_threads(worker, arguments: list[tuple], timeout: float = 60) -> list[BaseException]:
    """Run worker(*args) for each args in a thread of its own, started together; return what they raised."""
    barrier = threading.Barrier(len(arguments))
    errors = []

    def run(args):
        barrier.wait(timeout=10)
        try:
            worker(*args)
        except Exception as exc:  # collected, then asserted on by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(args,)) for args in arguments]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return errors


def test_threads_writing_the_same_event_store_one_row(store):
    def worker():
        for i in range(50):
            store.add_events([event(amount=Decimal(i))], "s")

    assert run_in_threads(worker, [()] * 8) == []
    assert len(event_lines(store)) == 50


def test_two_stores_on_one_database_never_lock(database):
    # Two processes would each have a store; two stores in threads stand in for them.
    a, b = storage.open_store(database), storage.open_store(database)

    def worker(s, offset):
        for i in range(100):
            s.add_events([event(amount=Decimal(offset + i))], "s")

    assert run_in_threads(worker, [(a, 0), (b, 1000)]) == []
    assert len(event_lines(a)) == 200
    a.close()
    b.close()


def test_storage_error_is_named(database):
    s = storage.open_store(database)
    s.close()
    with pytest.raises(storage.StorageError):
        s.add_events([event()], "s")


def test_group_commit_keeps_each_callers_outcome(store):
    # Conflicting and valid writes race for the lock; a conflict undoes its own call only.
    store.add_events([event(event_id="taken", amount=Decimal(1))], "s")
    outcomes = {}

    def worker(n):
        amount = Decimal(2) if n % 3 == 0 else Decimal(100 + n)
        batch = [event(player_login=f"l{n}", amount=amount)]
        if n % 3 == 0:
            batch.append(event(event_id="taken", amount=amount))
        try:
            outcomes[n] = store.add_events(batch, "s")
        except storage.EventConflict:
            outcomes[n] = "conflict"

    assert run_in_threads(worker, [(n,) for n in range(12)]) == []
    assert {n: o for n, o in outcomes.items() if n % 3 == 0} == {n: "conflict" for n in range(0, 12, 3)}
    assert {n: o for n, o in outcomes.items() if n % 3} == {n: [True] for n in range(12) if n % 3}
    players = {line.split('"player_login":"')[1].split('"')[0] for line in event_lines(store)}
    assert players == {"l"} | {f"l{n}" for n in range(12) if n % 3}


def test_a_group_commit_sorts_new_held_twice_sent_and_conflicting_rows(store):
    # One group, as the lock gathers it: an event new, the same sent again in the group, a call
    # holding a conflict, a call with a new and a held event, and more rows than one statement.
    store.add_events([event(event_id="taken", amount=Decimal(1))], "s")
    calls = [
        [event(event_id="a")],
        [event(event_id="a")],
        [event(event_id="b"), event(event_id="taken", amount=Decimal(2))],
        [event(event_id="c"), event(event_id="a")],
        [event(event_id=f"many-{n}") for n in range(70)],
    ]
    group = [WriteRequest([storage.event_row(e, 1, "s") for e in call], call) for call in calls]
    store._commit_group(group)
    assert [request.new for request in group] == [[True], [False], [], [True, False], [True] * 70]
    assert [type(request.error) for request in group] == [type(None)] * 2 + [storage.EventConflict] + [type(None)] * 2
    held = {parse_json(line.encode())["event"]["event_id"] for line in event_lines(store)}
    assert held == {"taken", "a", "c"} | {f"many-{n}" for n in range(70)}
    assert store.check_totals() == []  # the new rows of the requests that stand, counted once


def test_received_at_is_written_as_rfc3339():
    assert storage.rfc3339_us(0) == "1970-01-01T00:00:00.000000Z"
    assert storage.rfc3339_us(1_795_497_199_416_659) == "2026-11-24T05:13:19.416659Z"


def test_processes_storing_and_counting_at_once_count_every_event_once(database):
    """Three stores on one database (as three processes: on PostgreSQL, three pools), each counting its events into
    the totals every few it stores, while the others store and count theirs: the counts never overlap."""
    stores = [storage.open_store(database) for _ in range(3)]
    for store in stores:
        store.COUNT_EVERY = 3
    failures = []

    def send(store, worker):
        try:
            for n in range(30):
                partner = ("casino_alpha", "casino_beta")[(worker + n) % 2]
                store.add_events([event(partner_id=partner, event_id=f"{worker}-{n}", amount=Decimal(n))], "s")
        except Exception as exc:  # noqa: BLE001 - any failure fails the test, below
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(store, 3 * n + t)) for n, store in enumerate(stores)
               for t in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert failures == [] and not any(thread.is_alive() for thread in threads)
        assert stores[0].check_totals() == []
        stores[0].count_pending(["casino_alpha", "casino_beta"])
        assert stores[0].check_totals() == []
        summary = stores[1].summary("casino_alpha", "0001-01-01", "9999-12-31")
        assert sum(row.events for row in summary) == 9 * 30 // 2
    finally:
        for store in stores:
            store.close()


def test_an_import_piece_finds_a_partners_last_event_without_reading_all_of_them(tmp_path):
    """The statement that moves a partner's `through` on after each piece of an import steps to the last event in
    the index: SQLite's steps counted (not timed), with 20,000 events held of the partner."""
    store = storage.open_store(str(tmp_path / "steps.db"), synchronous="OFF")
    try:
        conn = store._conn
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (partner_id, player_login, received_at, sub, event)"
                         " VALUES ('p', 'l', 1, 's', '{}')", [()] * 20_000)
        conn.execute("COMMIT")
        steps = []
        conn.set_progress_handler(lambda: steps.append(1), 100)  # called every 100 steps of SQLite's machine
        conn.execute(store.sql.through_last, ("p",))
        conn.set_progress_handler(None, 0)
        assert len(steps) < 10, len(steps)
        assert conn.execute("SELECT through FROM counted WHERE partner_id = 'p'").fetchone() == (20_000,)
    finally:
        store.close()
