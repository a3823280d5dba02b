"""An import checks the whole file first, then stores it in pieces: the service's writes get their turn between them."""

import json
import os
import signal
import threading
import time

import pytest

from backup_api import loading, storage
from backup_api.storage.importing import Staging
from backup_api.storage.postgres import PostgresStore
from backup_api.storage.sqlite import SQLiteStore
from backup_api.storage.sqlstore import SQLStore
from tests.helpers import stored_events, stored_players, valid_event
from tests.test_restore import new_app, run

LINES = 3000
WHEN = "2026-11-24T05:12:03.120512Z"


def export_lines(count: int, step: int = 1) -> list[str]:
    """Lines as `events export` writes them, count of them, ids step apart, each event with an event_id."""
    return [json.dumps({"id": n * step, "received_at": WHEN, "sub": "x",
                        "event": valid_event("bet", event_id=f"e{n}", amount=n)})
            for n in range(1, count + 1)]


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of one chunk of 250 rows, lines checked in this process (no fork beside a writing thread)."""
    monkeypatch.setattr(SQLStore, "IMPORT_HOLD_S", 0.0)
    for store in (SQLiteStore, PostgresStore):
        monkeypatch.setattr(store, "IMPORT_CHUNK", 250)
    monkeypatch.setattr(loading, "worker_count", lambda: 1)


def until_imported(store) -> None:
    """Wait (5 s at most) until a piece of the import is stored."""
    deadline = time.monotonic() + 5
    while not store.read_events("casino_alpha", event_id="e1")[0] and time.monotonic() < deadline:
        time.sleep(0.002)


def conflicting(store) -> None:
    """Once a piece of the import is stored, send the last line's event_id with other content."""
    until_imported(store)
    store.add_events([valid_event("bet", event_id=f"e{LINES}", amount=-1)], "live")


class Writer(threading.Thread):
    """Posts an event to a store of its own every 10 ms until stopped, timing each; `first` runs before them."""

    def __init__(self, database, first=None):
        super().__init__()
        self.app = new_app(database)
        self.store = storage.get_store(self.app)
        self.first = first
        self.stop = threading.Event()
        self.sent, self.errors, self.longest = [], [], 0.0

    def run(self):
        try:
            if self.first is not None:
                self.first(self.store)
            while not self.stop.is_set():
                event_id = f"live{len(self.sent)}"
                started = time.monotonic()
                self.store.add_events([valid_event("bet", event_id=event_id)], "live")
                self.longest = max(self.longest, time.monotonic() - started)
                self.sent.append(event_id)
                time.sleep(0.01)
        except Exception as exc:  # noqa: BLE001 - the test says what failed
            self.errors.append(exc)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(30)
        self.store.close()


def stored(app) -> list[str]:
    """The event_id of every event held, by id."""
    return [line["event"]["event_id"] for line in stored_events(app)]


def import_while_writing(database, tmp_path, first):
    """Import LINES lines from a file while a Writer posts (first: what it does before); return what there is to see.

    The app, the writer, the import's result, and the file.
    """
    source = tmp_path / "export.jsonl"
    source.write_text("\n".join(export_lines(LINES)) + "\n")
    app = new_app(database)
    with Writer(database, first=first) as writer:
        result = run(app, "events", "import", str(source))
    return app, writer, result, source


def test_writes_go_in_between_the_pieces_of_an_import(database, small_pieces, tmp_path):
    # Into an empty database: its ids are kept until a write comes in, then new ones follow it.
    app, writer, result, _ = import_while_writing(database, tmp_path, until_imported)
    assert result.output == f"imported {LINES}, already held 0\n", result.output
    assert not writer.errors and writer.longest < 1, (writer.errors, writer.longest)
    held = stored(app)
    assert [event_id for event_id in held if event_id.startswith("e")] == [f"e{n}" for n in range(1, LINES + 1)]
    assert [event_id for event_id in held if event_id.startswith("live")] == writer.sent
    written_meanwhile = held[held.index("e1") : held.index(f"e{LINES}")]
    assert any(event_id.startswith("live") for event_id in written_meanwhile), "no write went in meanwhile"
    assert app.extensions["store"].check_totals() == []  # the pieces' totals and the writer's, both counted
    app.extensions["store"].close()


def test_ids_are_kept_across_pieces_when_nothing_else_writes(database, small_pieces, tmp_path):
    lines = export_lines(LINES, step=7)
    app = new_app(database)
    assert run(app, "events", "import", "-", stdin=("\n".join(lines) + "\n").encode()).exit_code == 0
    assert run(app, "events", "export").output == "\n".join(lines) + "\n"
    app.extensions["store"].close()


def test_a_write_that_conflicts_meanwhile_stops_the_import_at_its_line(database, small_pieces, tmp_path):
    app, writer, result, source = import_while_writing(database, tmp_path, conflicting)
    assert not writer.errors, writer.errors
    assert result.exit_code == 1 and result.output.startswith(f"Error: line {LINES}: "), result.output
    assert f"'e{LINES}'" in result.output and "were imported before it, the rest were not" in result.output
    kept = int(result.output.split("lines 1 to ")[1].split()[0])
    assert 0 < kept < LINES and kept % 250 == 0  # whole pieces
    imported = [event_id for event_id in stored(app) if event_id.startswith("e") and event_id != f"e{LINES}"]
    assert imported == [f"e{n}" for n in range(1, kept + 1)]
    # Again, the file as it is: checked whole, refused, nothing more stored. Without the line: the rest.
    again = run(app, "events", "import", str(source))
    assert again.exit_code == 1 and "nothing was imported" in again.output, again.output
    source.write_text("\n".join(export_lines(LINES - 1)) + "\n")
    finish = run(app, "events", "import", str(source))
    assert finish.output == f"imported {LINES - 1 - kept}, already held {kept}\n", finish.output
    app.extensions["store"].close()


def test_flags_are_set_in_between_the_pieces_of_a_players_import(database, small_pieces, tmp_path):
    source = tmp_path / "players.jsonl"
    source.write_text("".join(json.dumps({"partner_id": "casino_alpha", "player_login": f"p{n}", "is_vip": True,
                                          "updated_at": "2026-11-24T05:12:03.120512Z", "updated_by": "x"}) + "\n"
                              for n in range(1, LINES + 1)))
    seen = []

    def flag_meanwhile(store):
        """Once the first flag is held, set one: say whether the last was held by then."""
        deadline = time.monotonic() + 5
        while store.get_vip("casino_alpha", "p1") is None and time.monotonic() < deadline:
            time.sleep(0.002)
        store.set_vip("casino_alpha", "live", True, "live")
        seen.append(store.get_vip("casino_alpha", f"p{LINES}"))

    app = new_app(database)
    with Writer(database, first=flag_meanwhile) as writer:
        result = run(app, "players", "import", str(source))
    assert result.output == f"imported {LINES}, updated 0, already held 0\n", result.output
    assert not writer.errors, writer.errors
    assert seen == [None], "the flag was set only once the import had ended"
    flags = [flag["player_login"] for flag in stored_players(app)]
    assert len(flags) == LINES + 1 and "live" in flags
    app.extensions["store"].close()


def interrupt(self, *args):
    """Ctrl-C as a Python exception (KeyboardInterrupt at once)."""
    raise KeyboardInterrupt


def sigint(self, *args):
    """Ctrl-C as the signal: held until the piece under way is committed, then let in."""
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal, whatever this process inherited.

    A shell that starts a command in the background without job control (a CI script's `make test
    &`) makes it ignore SIGINT, and Python keeps that: a signal sent then would do nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("ctrl_c", "during"), [(interrupt, 3), (sigint, 2)])
def test_an_import_interrupted_while_it_stores_says_exactly_what_it_kept(database, small_pieces, monkeypatch,
                                                                          ctrl_c_raises, ctrl_c, during):
    store_class = SQLiteStore if database.endswith(".db") else PostgresStore
    moved = store_class._move_chunk
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == during:  # in the piece of lines 501 to 750, or in the one of 251 to 500
            ctrl_c(self, *args)
        return moved(self, *args)

    monkeypatch.setattr(store_class, "_move_chunk", interrupted)
    app = new_app(database)
    lines = "\n".join(export_lines(LINES)) + "\n"
    result = run(app, "events", "import", "-", stdin=lines.encode())
    assert result.exit_code == 1 and result.output.startswith("Error: interrupted; lines 1 to 500 were imported"), (
        result.output)
    assert stored(app) == [f"e{n}" for n in range(1, 501)]
    monkeypatch.setattr(store_class, "_move_chunk", moved)
    again = run(app, "events", "import", "-", stdin=lines.encode())
    assert again.output == f"imported {LINES - 500}, already held 500\n", again.output
    app.extensions["store"].close()


def interrupt_handler(raw: bytes):
    """What the process checking a line does with Ctrl-C, named (a loader's records are plain values)."""
    return repr(signal.getsignal(signal.SIGINT))


def test_the_workers_leave_ctrl_c_to_the_importing_process(monkeypatch):
    monkeypatch.setattr(loading, "worker_count", lambda: 2)
    handlers = set(loading.checked_lines([b"x\n"] * (2 * loading.BLOCK_LINES + 1), interrupt_handler))
    assert handlers == {repr(signal.SIG_IGN)}  # so a terminal's Ctrl-C prints no worker's traceback


def test_a_staging_table_out_of_room_is_a_clear_error(database, monkeypatch, tmp_path):
    opened = Staging.__init__

    def cramped(self, conn, columns, schema="main"):
        opened(self, conn, columns, schema)
        conn.execute(f"PRAGMA {schema}.max_page_count = 20")  # as a full temporary folder would

    monkeypatch.setattr(Staging, "__init__", cramped)
    app = new_app(database)
    result = run(app, "events", "import", "-", stdin=("\n".join(export_lines(LINES)) + "\n").encode())
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: the import's staging table failed: database or disk is full")
    assert "TMPDIR" in result.output and result.output.rstrip().endswith("nothing was imported")
    assert stored(app) == []
    app.extensions["store"].close()


BAD_CHARACTERS = ["\u0000", "\u001f", "\u007f", "\u0085"]


def event_line(n: int, **changes) -> str:
    """Line n of an events export, its holder or event fields changed."""
    line = {"id": n, "received_at": WHEN, "sub": "x", "event": valid_event("bet", event_id=f"e{n}", amount=n)}
    for key, value in changes.items():
        (line if key == "sub" else line["event"])[key] = value
    return json.dumps(line)


def player_line(n: int, **changes) -> str:
    """Line n of a players export, its fields changed."""
    return json.dumps({"partner_id": "casino_alpha", "player_login": f"p{n}", "is_vip": True, "updated_at": WHEN,
                       "updated_by": "x", **changes})


# Each identifier and holder of an import line: the event's fields, its sub; a flag's.
IMPORT_FIELDS = [("events", field) for field in ("sub", "partner_id", "player_login", "event_id", "session_id")] + [
    ("players", field) for field in ("partner_id", "player_login", "updated_by")]


@pytest.mark.parametrize(("kind", "field"), IMPORT_FIELDS, ids=[f"{kind}-{field}" for kind, field in IMPORT_FIELDS])
@pytest.mark.parametrize("character", BAD_CHARACTERS)
def test_a_control_character_in_an_import_line_is_refused_by_its_number_before_anything_is_stored(
        database, small_pieces, kind, field, character):
    bad = LINES - 500
    line = event_line if kind == "events" else player_line
    lines = [line(n, **({field: f"casino_alpha{character}evil"} if n == bad else {})) for n in range(1, LINES + 1)]
    app = new_app(database)
    result = run(app, kind, "import", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.exit_code == 1 and result.output.startswith(f"Error: line {bad}: "), result.output
    assert "control characters" in result.output and "nothing was imported" in result.output, result.output
    assert (stored(app) if kind == "events" else stored_players(app)) == []
    app.extensions["store"].close()


@pytest.mark.whole
def test_the_ctrl_c_test_holds_when_the_suite_inherits_sigint_ignored(tmp_path):
    """CI may start the suite in the background, where SIGINT comes ignored: the Ctrl-C test must not depend on it."""
    import subprocess
    import sys

    from tests.server import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "sqlite-sigint",
         "tests/test_import_pieces.py::test_an_import_interrupted_while_it_stores_says_exactly_what_it_kept"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert result.returncode == 0 and result.stdout.split()[0] == ".", result.stdout[-2000:]  # one, passed
