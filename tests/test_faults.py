"""Storage faults: each is a 503 in the JSON envelope, leaves no partial rows, and passes."""

import shutil
import sqlite3

import psycopg
import pytest

from backup_api import create_app
from backup_api.storage import StorageError
from backup_api.storage.sqlite import GROUP_ROWS
from tests.helpers import SECRET, bearer, count_rows, mounted_tmpfs, post_event, valid_event


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {"TESTING": True, "DATABASE": str(tmp_path / "backup.db"), "JWT_SECRET": SECRET, "BUSY_TIMEOUT_MS": 200}
    )
    yield app
    app.extensions["store"].close()


def assert_503(response):
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and "nothing was stored" in body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


class FaultyConnection:
    """A connection that fails as a full disk does, on the statement named, while armed."""

    def __init__(self, conn, statement: str, error: str):
        self._conn, self.statement, self.error, self.armed = conn, statement, error, True

    def execute(self, sql, *args):
        if self.armed and sql.startswith(self.statement):
            raise sqlite3.OperationalError(self.error)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.mark.parametrize(
    "statement,error",
    [
        ("INSERT", "database or disk is full"),
        ("COMMIT", "database or disk is full"),
        ("BEGIN", "attempt to write a readonly database"),
        ("INSERT", "attempt to write a readonly database"),
        ("COMMIT", "disk I/O error"),
    ],
)
def test_write_faults_are_503_without_partial_rows(app, client, tmp_path, statement, error):
    # As root, a chmod cannot make the file read-only, so the errors SQLite gives for a full
    # disk, a read-only file and a failing disk are raised where SQLite raises them.
    store = app.extensions["store"]
    held = valid_event("bet", amount=1)
    assert post_event(client, held).status_code == 200
    faulty = FaultyConnection(store._conn, statement, error)
    store._conn = faulty
    # More rows than one statement takes: BEGIN, INSERTs, COMMIT.
    assert_503(post_event(client, [valid_event("bet", amount=n) for n in range(2, GROUP_ROWS + 3)]))
    # A row held already: the transaction that inserts one request at a time.
    assert_503(post_event(client, [valid_event("win"), held]))
    if statement == "INSERT":  # a new event alone is one INSERT, its own transaction
        assert_503(post_event(client, valid_event("win")))
    faulty.armed = False
    assert count_rows(tmp_path / "backup.db") == 1
    assert post_event(client, valid_event("win")).status_code == 200
    assert count_rows(tmp_path / "backup.db") == 2


def test_database_locked_by_another_process_is_503_then_recovers(app, client, tmp_path):
    other = sqlite3.connect(tmp_path / "backup.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        assert_503(post_event(client, valid_event("bet")))
        assert_503(client.put("/users/casino_alpha/player/p/vip", json={"is_vip": True}, headers=bearer()))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert post_event(client, valid_event("bet")).status_code == 200
    assert count_rows(tmp_path / "backup.db") == 1


def test_deleted_database_is_503_until_one_is_back(app, client, tmp_path):
    database = tmp_path / "backup.db"
    assert post_event(client, valid_event("bet", amount=1)).status_code == 200
    app.extensions["store"].snapshot(str(tmp_path / "saved.db"))
    database.unlink()
    assert_503(post_event(client, valid_event("bet", amount=2)))
    assert client.get("/healthz").status_code == 503
    shutil.copyfile(tmp_path / "saved.db", database)
    assert client.get("/healthz").status_code == 200
    assert post_event(client, valid_event("bet", amount=3)).status_code == 200
    assert count_rows(database) == 2


def test_database_replaced_by_garbage_is_503_until_a_database_is_back(app, client, tmp_path):
    database = tmp_path / "backup.db"
    assert post_event(client, valid_event("bet", amount=1)).status_code == 200
    app.extensions["store"].snapshot(str(tmp_path / "saved.db"))
    replacement = tmp_path / "garbage"
    replacement.write_bytes(b"this is not a database" * 100)
    replacement.replace(database)
    assert_503(post_event(client, valid_event("bet", amount=2)))
    (tmp_path / "saved.db").replace(database)
    assert post_event(client, valid_event("bet", amount=3)).status_code == 200
    assert count_rows(database) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB filesystem of its own (tmpfs), where a full disk is real."""
    with mounted_tmpfs(tmp_path / "small", "size=1m") as mountpoint:
        yield mountpoint


def test_a_really_full_disk_is_503_and_recovers(small_disk):
    app = create_app({"TESTING": True, "DATABASE": str(small_disk / "backup.db"), "JWT_SECRET": SECRET,
                      "MIN_FREE_MB": 0})
    client = app.test_client()
    try:
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (600 * 1024))
        answers = []
        for n in range(200):
            response = post_event(client, valid_event("bet", amount=n, metadata={"pad": "x" * 20000}))
            answers.append(response.status_code)
            if response.status_code != 200:
                assert_503(response)
                break
        assert answers[-1] == 503, answers
        assert count_rows(small_disk / "backup.db") == answers.count(200)
        # /healthz tells the truth: no write would go through until room is made.
        health = client.get("/healthz")
        assert health.status_code == 503 and "the disk is full" in health.get_json()["message"]
        filler.unlink()
        assert client.get("/healthz").status_code == 200
        assert post_event(client, valid_event("win")).status_code == 200
        assert count_rows(small_disk / "backup.db") == answers.count(200) + 1
    finally:
        app.extensions["store"].close()


def test_healthz_says_the_disk_is_nearly_full_before_a_write_fails(small_disk):
    """Before: 200 until a write had failed for want of room."""
    app = create_app({"TESTING": True, "DATABASE": str(small_disk / "backup.db"), "JWT_SECRET": SECRET,
                      "MIN_FREE_MB": 0})
    app.config["MIN_FREE_MB"] = 1  # the 1 MiB disk: less than that is free from the start
    client = app.test_client()
    try:
        health = client.get("/healthz")
        assert health.status_code == 503 and "the disk is nearly full" in health.get_json()["message"]
        assert "backup_api_store_writable 0.0" in client.get("/metrics").get_data(as_text=True)
        assert post_event(client, valid_event("bet")).status_code == 200  # writes go on until one fails
        app.config["MIN_FREE_MB"] = 0
        assert client.get("/healthz").status_code == 200
        assert "backup_api_store_writable 1.0" in client.get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["store"].close()


def test_healthz_answers_within_a_second_whatever_the_busy_timeout(tmp_path):
    """Before: 5.02 s under a lock held by another process, longer than a proxy's check waits."""
    import time

    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "backup.db"), "JWT_SECRET": SECRET,
                      "BUSY_TIMEOUT_MS": 5000})
    client = app.test_client()
    try:
        other = sqlite3.connect(tmp_path / "backup.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        try:
            for _ in range(3):
                started = time.monotonic()
                health = client.get("/healthz")
                assert time.monotonic() - started < 1.0
                assert health.status_code == 503 and "locked" in health.get_json()["message"]
            started = time.monotonic()
            assert "backup_api_store_writable 0.0" in client.get("/metrics").get_data(as_text=True)
            assert time.monotonic() - started < 1.0
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions["store"].close()


def test_healthz_is_503_while_another_process_holds_the_write_lock_then_200(tmp_path):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "backup.db"), "JWT_SECRET": SECRET,
                      "BUSY_TIMEOUT_MS": 200})
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
        other = sqlite3.connect(tmp_path / "backup.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing, past the busy timeout
        try:
            health = client.get("/healthz")
            assert health.status_code == 503 and "locked" in health.get_json()["message"]
            assert post_event(client, valid_event("bet")).status_code == 503  # as /healthz said
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert client.get("/healthz").status_code == 200
        assert post_event(client, valid_event("bet")).status_code == 200
    finally:
        app.extensions["store"].close()


def test_healthz_is_503_on_a_read_only_postgresql(postgres_url):
    app = create_app({"TESTING": True, "DATABASE": postgres_url, "JWT_SECRET": SECRET})
    app.extensions["store"].close()  # the tables made
    name = postgres_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    app = create_app({"TESTING": True, "DATABASE": postgres_url, "JWT_SECRET": SECRET})
    try:
        health = app.test_client().get("/healthz")
        assert health.status_code == 503 and "read-only" in health.get_json()["message"]
    finally:
        app.extensions["store"].close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_no_writer_waits_past_the_busy_timeout_behind_another(tmp_path):
    """An import held the lock: a writer queued behind another writer's wait waited both (9.61 s for 5 s)."""
    import threading
    import time

    from backup_api.storage.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "backup.db"), busy_timeout_ms=1000)
    other = sqlite3.connect(tmp_path / "backup.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's long write: an import
    waited = {}

    def write(name, call):
        started = time.monotonic()
        try:
            call()
        except StorageError as exc:
            waited[name] = (time.monotonic() - started, str(exc))

    calls = {
        "first event": lambda: store.add_events([valid_event("bet", n=1)], "casino_alpha"),
        "second event": lambda: store.add_events([valid_event("bet", n=2)], "casino_alpha"),
        "a flag": lambda: store.set_vip("casino_alpha", "p1", True, "casino_alpha"),
    }
    try:
        threads = []
        for name, call in calls.items():
            threads.append(threading.Thread(target=write, args=(name, call)))
            threads[-1].start()
            time.sleep(0.2)  # each arrives while the one before waits
        for thread in threads:
            thread.join(10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert set(waited) == set(calls)  # each refused: the lock was never free
    for name, (seconds, message) in waited.items():
        assert seconds < 1.0 + 0.3, (name, seconds)
        assert "busy" in message or "locked" in message, message
    store.add_events([valid_event("bet", n=3)], "casino_alpha")  # and it recovers
    store.close()
