"""No lock held without a bound on PostgreSQL: a client stopped inside a transaction loses its locks within seconds,
and /healthz says 503 while writers are held out."""

import threading
import time

import pytest

from backup_api import health, storage
from backup_api.storage.postgres import PostgresStore, partner_lock
from backup_api.storage.sqlstore import SQLStore
from tests.helpers import valid_event
from tests.test_import_pieces import export_lines, stored
from tests.test_restore import new_app, run

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


# A write is accepted again within this long of the client holding its locks stopping.
RECOVERY_S = 20


class Stopped(threading.Thread):
    """A store's writing transaction that takes hold(conn), then does nothing until released: a stopped client."""

    def __init__(self, store: PostgresStore, hold):
        super().__init__()
        self.store, self.hold = store, hold
        self.holding, self.release = threading.Event(), threading.Event()
        self.error = None

    def run(self):
        try:
            with self.store._writing("the stopped client failed") as conn:
                self.hold(conn)
                self.holding.set()
                self.release.wait(60)
                conn.execute("SELECT 1")
        except storage.StorageError as exc:
            self.error = exc
        finally:
            self.holding.set()


def until_accepted(store) -> float:
    """Post an event until one is stored; return how long it took (RECOVERY_S at most), saying what /healthz said."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_S:
        try:
            store.add_events([valid_event("bet", event_id=f"after{time.monotonic()}")], "live")
            return time.monotonic() - started
        except storage.StorageError:
            time.sleep(0.2)
    pytest.fail(f"no write was accepted within {RECOVERY_S} s of the client stopping")


@pytest.mark.parametrize("hold", [
    pytest.param(lambda conn: conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"), id="import"),
    pytest.param(lambda conn: conn.execute("SELECT pg_advisory_xact_lock(%s)", (partner_lock("casino_alpha"),)),
                 id="partner-lock"),
])
def test_a_client_stopped_inside_a_transaction_holds_writers_out_for_seconds_and_health_says_so(postgres_url, hold):
    held = storage.open_store(postgres_url)
    service = storage.open_store(postgres_url)
    stopped = Stopped(held, hold)
    stopped.start()
    try:
        assert stopped.holding.wait(10)
        time.sleep(1.2)  # idle inside its transaction for over a second
        with pytest.raises(storage.StorageError, match="writes are held out"):
            service.ping(health.LOCK_WAIT_S)
        took = until_accepted(service)
        service.ping(health.LOCK_WAIT_S)  # healthy again, as soon as writers can go on
    finally:
        stopped.release.set()
        stopped.join(30)
        held.close()
        service.close()
    assert took < RECOVERY_S
    assert stopped.error is not None and "idle-in-transaction" in str(stopped.error), stopped.error


def test_an_import_stopped_midway_lets_writers_in_and_says_what_it_kept_when_it_resumes(postgres_url, monkeypatch):
    monkeypatch.setattr(SQLStore, "IMPORT_HOLD_S", 0.0)
    monkeypatch.setattr(PostgresStore, "IMPORT_CHUNK", 250)
    moved = PostgresStore._move_chunk
    calls, stopped, resume = [], threading.Event(), threading.Event()

    def stops_in_the_second_piece(self, *args):
        calls.append(1)
        if len(calls) == 2:  # as Ctrl-Z would: inside the piece's transaction, holding the table
            stopped.set()
            resume.wait(60)
        return moved(self, *args)

    monkeypatch.setattr(PostgresStore, "_move_chunk", stops_in_the_second_piece)
    app = new_app(postgres_url)
    outcome = []
    importer = threading.Thread(target=lambda: outcome.append(
        run(app, "events", "import", "-", stdin=("\n".join(export_lines(1000)) + "\n").encode())))
    importer.start()
    service = storage.open_store(postgres_url)
    try:
        assert stopped.wait(30)
        assert until_accepted(service) < RECOVERY_S
    finally:
        resume.set()
        importer.join(60)
        service.close()
    (result,) = outcome
    assert result.exit_code == 1, result.output
    assert "idle-in-transaction" in result.output and "lines 1 to 250 were imported before it" in result.output, (
        result.output)
    assert [event_id for event_id in stored(app) if event_id.startswith("e")] == [f"e{n}" for n in range(1, 251)]
    app.extensions["store"].close()


def test_an_events_import_stopped_with_sigstop_lets_writers_in_and_says_so_when_continued(postgres_url, tmp_path):
    """The probe's case, with a real process: `events import` stopped (Ctrl-Z), writes from another process."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import SECRET
    from tests.server import ROOT

    source = tmp_path / "export.jsonl"
    source.write_text("\n".join(export_lines(200_000)) + "\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")},
           "BACKUP_API_DATABASE": postgres_url, "BACKUP_API_JWT_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    importer = subprocess.Popen([sys.executable, "-m", "flask", "--app", "backup_api", "events", "import",
                                 str(source)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    service = storage.open_store(postgres_url)
    try:
        deadline = time.monotonic() + 120
        while not service.read_events("casino_alpha", event_id="e1")[0]:  # a piece is stored: it is storing
            assert time.monotonic() < deadline and importer.poll() is None, "the import never began to store"
            time.sleep(0.05)
        for _ in range(100):  # stopped where Ctrl-Z would most often stop it: inside a piece, the table held
            importer.send_signal(signal.SIGSTOP)
            if _holds_the_events_table(postgres_url):
                break
            importer.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        else:
            pytest.fail("the import was never stopped while holding the events table")
        assert until_accepted(service) < RECOVERY_S
    finally:
        importer.send_signal(signal.SIGCONT)
        output = importer.communicate(timeout=120)[0]
        service.close()
    assert importer.returncode == 1 and "were imported before it" in output, output
    assert "longer than BACKUP_API_PG_TIMEOUT_MS has its transaction ended by the database" in output, output


def _holds_the_events_table(url: str) -> bool:
    """Tell whether a session holds the lock a piece of an import takes on the events table (the import's: nothing
    else here takes it); read after a moment, so that a lock being let go is gone."""
    import psycopg

    time.sleep(0.05)
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE l.locktype = 'relation' AND l.mode = 'ShareRowExclusiveLock' AND l.granted"
            " AND l.relation = 'events'::regclass AND a.datname = current_database()"
        ).fetchone()[0] > 0
