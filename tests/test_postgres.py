"""What only the PostgreSQL store has: several server processes on one database, a server that stops, settings."""

import contextlib
import json
import random
import threading
import time
from collections import defaultdict

import psutil
import psycopg
import pytest

from backup_api import ConfigError, create_app, storage
from backup_api.storage import open_store
from backup_api.storage.jsonform import parsed_content_key
from tests import postgres
from tests.helpers import SECRET, bearer, make_token, post_event, valid_event
from tests.server import Server

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


# Settings ---------------------------------------------------------------------------------


def test_a_postgresql_database_needs_the_secret_set(postgres_url):
    with pytest.raises(ConfigError, match="set BACKUP_API_JWT_SECRET"):
        create_app({"DATABASE": postgres_url})


def test_an_unreachable_server_is_one_line_at_start_and_within_the_timeout(tmp_path):
    started = time.monotonic()
    url = f"postgresql://nobody@/nothing?host={tmp_path}"  # no server listens on a socket there
    with pytest.raises(ConfigError, match="cannot open the database") as failure:
        create_app({"DATABASE": url, "JWT_SECRET": SECRET, "PG_TIMEOUT_MS": 500})
    assert time.monotonic() - started < 10
    assert "\n" not in str(failure.value).strip()


@pytest.mark.parametrize("timeout", ["0", "soon", "-5"])
def test_a_bad_timeout_refuses_to_start(postgres_url, timeout):
    with pytest.raises(ConfigError, match="BACKUP_API_PG_TIMEOUT_MS must be a positive whole number"):
        create_app({"DATABASE": postgres_url, "JWT_SECRET": SECRET, "PG_TIMEOUT_MS": timeout})


def test_the_password_is_never_printed(postgres_url):
    from backup_api.storage.postgres import _without_password

    assert _without_password("postgresql://app:s3cret@db.example:5432/backup") == (
        "postgresql://app:***@db.example:5432/backup"
    )
    app = create_app({"DATABASE": postgres_url, "JWT_SECRET": SECRET})
    result = app.test_cli_runner().invoke(args=["db", "check"])
    app.extensions["store"].close()
    assert result.exit_code == 0, result.output
    assert f"layout: {storage.SCHEMA_VERSION}" in result.output and "events: 0" in result.output


@pytest.mark.parametrize(
    ("command", "tool"), [(["db", "snapshot", "x.db"], "pg_dump"), (["db", "restore"], "pg_restore")]
)
def test_file_commands_point_to_postgresqls_own_tools(postgres_url, tmp_path, command, tool):
    app = create_app({"DATABASE": postgres_url, "JWT_SECRET": SECRET})
    if command[1] == "restore":
        snapshot = tmp_path / "snap.db"
        snapshot.write_bytes(b"")
        command = [*command, str(snapshot)]
    result = app.test_cli_runner().invoke(args=command)
    app.extensions["store"].close()
    assert result.exit_code == 1 and tool in result.output


# Moving between the stores ----------------------------------------------------------------


def test_export_and_import_move_a_store_both_ways_byte_identical(tmp_path, postgres_url):
    def app_on(database):
        return create_app({"TESTING": True, "DATABASE": database, "JWT_SECRET": SECRET})

    def export(app):
        runner = app.test_cli_runner()
        events, players = runner.invoke(args=["events", "export"]), runner.invoke(args=["players", "export"])
        assert events.exit_code == 0 and players.exit_code == 0
        return events.output, players.output

    def load(app, exported):
        runner = app.test_cli_runner()
        for kind, text in zip(("events", "players"), exported, strict=True):
            (tmp_path / kind).write_text(text, encoding="utf-8")
            result = runner.invoke(args=[kind, "import", str(tmp_path / kind)])
            assert result.exit_code == 0, result.output

    first = app_on(str(tmp_path / "first.db"))
    client = first.test_client()
    beta = make_token(sub="ops", partners=["casino_alpha", "casino_beta"])
    raw = (
        b'{"partner_id": "casino_alpha", "player_login": "p\xc3\xa9", "event_type": "deposit",'
        b' "amount": 1.10e+2, "metadata": {"z": [0.000001, -0, 1E400], "a": "\\u00e9\\u0000"}}'
    )
    assert post_event(client, None, raw=raw).status_code == 200
    for n in range(30):
        event = valid_event("bet", partner_id=["casino_alpha", "casino_beta"][n % 2], amount=n + 0.5)
        if n % 3:
            event["event_id"] = f"e{n}"
        assert post_event(client, event, token=beta).status_code == 200
    for login in ("zed", "Ann", "émile"):
        response = client.put(f"/users/casino_beta/player/{login}/vip", json={"is_vip": True}, headers=bearer(beta))
        assert response.status_code == 200
    original = export(first)
    first.extensions["store"].close()

    on_server = app_on(postgres_url)
    load(on_server, original)
    assert export(on_server) == original
    on_server.extensions["store"].close()

    back = app_on(str(tmp_path / "back.db"))
    load(back, original)
    assert export(back) == original
    # The ids went on after the imported ones, on the server too.
    back.extensions["store"].close()
    on_server = app_on(postgres_url)
    assert post_event(on_server.test_client(), valid_event("bet", amount=99)).status_code == 200
    last = json.loads(export(on_server)[0].splitlines()[-1])
    assert last["id"] == 32
    on_server.extensions["store"].close()


# A server that stops ----------------------------------------------------------------------


@pytest.fixture
def throwaway():
    """A PostgreSQL server of the test's own, to stop and start."""
    server = postgres.Throwaway()
    yield server
    server.stop()


def test_postgresql_stopped_is_503_within_the_timeout_and_the_service_recovers_alone(throwaway):
    app = create_app({"TESTING": True, "DATABASE": throwaway.url, "JWT_SECRET": SECRET, "PG_TIMEOUT_MS": 1000})
    client = app.test_client()
    try:
        assert post_event(client, valid_event("bet", amount=1)).status_code == 200
        assert client.get("/player-events?partner_id=casino_alpha", headers=bearer()).status_code == 200
        throwaway.stop_server()
        calls = [
            lambda: post_event(client, valid_event("bet", amount=2)),
            lambda: post_event(client, [valid_event("bet", amount=3)]),
            lambda: client.get("/player-events?partner_id=casino_alpha", headers=bearer()),
            lambda: client.get("/player-events/1", headers=bearer()),
            lambda: client.put("/users/casino_alpha/player/p1/vip", json={"is_vip": True}, headers=bearer()),
            lambda: client.get("/users/casino_alpha/player/p1/vip", headers=bearer()),
            lambda: client.get("/healthz"),
        ]
        for call in calls * 2:  # the second time round, no connection is left from before
            started = time.monotonic()
            response = call()
            assert time.monotonic() - started < 5  # the 1 s timeout, and a reconnection attempt
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.get_json()["status"] == "error"
        throwaway.start_server()
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover by itself"
            time.sleep(0.2)
        assert post_event(client, valid_event("bet", amount=4)).status_code == 200
        body = client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_json()
        assert [e["event"]["amount"] for e in body["events"]] == [1, 4]
    finally:
        app.extensions["store"].close()


def frozen(server: postgres.Throwaway) -> list[psutil.Process]:
    """Stop every process of a PostgreSQL server with SIGSTOP: its kernel still accepts and acknowledges."""
    postmaster = psutil.Process(int((server.pgdata / "postmaster.pid").read_text().split()[0]))
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.suspend()
    return processes


def thawed(processes: list[psutil.Process]) -> None:
    """Let frozen processes go on (SIGCONT)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.resume()


STALL_TIMEOUT_MS = 1000
# What "a small multiple of the timeout" means here: each wait on the database is bounded, a
# request makes a few, and a request may first wait for a connection of the pool.
STALL_ANSWER_SECONDS = 8 * STALL_TIMEOUT_MS / 1000


def test_a_stalled_postgresql_is_503_in_bounded_time_and_nothing_is_misreported(throwaway, tmp_path):
    """SIGSTOP the server under load: every request is answered, none is called stored that was not."""
    server = Server(throwaway.url, SECRET)
    server.env["BACKUP_API_PG_TIMEOUT_MS"] = str(STALL_TIMEOUT_MS)
    token = make_token()
    answers = {}  # event_id -> (status, message, seconds to answer)
    lock = threading.Lock()

    def post(event_id: str) -> None:
        started = time.monotonic()
        try:
            status, _, body = server.request("POST", "/player-events", valid_event("bet", event_id=event_id),
                                             token=token, timeout=60)
        except OSError as exc:
            status, body = None, {"message": repr(exc)}
        with lock:
            answers[event_id] = (status, (body or {}).get("message", ""), time.monotonic() - started)

    def at_once(names: list[str]) -> None:
        threads = [threading.Thread(target=post, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    with server:
        at_once([f"before-{n}" for n in range(10)])
        processes = frozen(throwaway)
        try:
            # Ten writes at once, then the health check and a read while they wait.
            writers = threading.Thread(target=at_once, args=([f"stalled-{n}" for n in range(10)],))
            writers.start()
            time.sleep(0.3)
            for path in ("/healthz", "/player-events?partner_id=casino_alpha"):
                started = time.monotonic()
                status, _, body = server.request("GET", path, token=token, timeout=60)
                assert status == 503 and body["status"] == "error", (path, status, body)
                assert time.monotonic() - started < STALL_ANSWER_SECONDS, path
            writers.join(timeout=120)
        finally:
            thawed(processes)
        deadline = time.monotonic() + 30
        while server.request("GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "the service did not recover by itself"
            time.sleep(0.2)
        at_once([f"after-{n}" for n in range(10)])

        stalled = {name: answer for name, answer in answers.items() if name.startswith("stalled-")}
        assert len(stalled) == 10 and all(status == 503 for status, _, _ in stalled.values()), stalled
        assert max(seconds for _, _, seconds in stalled.values()) < STALL_ANSWER_SECONDS, stalled
        assert all(answers[f"{phase}-{n}"][0] == 200 for phase in ("before", "after") for n in range(10))
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha&limit=1000", token=token)
        stored = [e["event"]["event_id"] for e in page["events"]]
        for name, (status, message, _) in answers.items():
            if status == 200:
                assert name in stored  # a 200 is stored
            elif "nothing was stored" in message:
                assert name not in stored, message  # and what was said not stored is not
            else:
                assert "may have been stored" in message, message
        # A resend of every write is safe: each event is then stored exactly once.
        at_once(list(answers))
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha&limit=1000", token=token)
        stored = sorted(e["event"]["event_id"] for e in page["events"])
        assert stored == sorted(answers)


def test_a_commit_sent_and_never_answered_is_reported_as_maybe_stored(throwaway, monkeypatch):
    """The server stalls after the rows are written, before COMMIT is answered: the outcome is unknown."""
    app = create_app({"TESTING": True, "DATABASE": throwaway.url, "JWT_SECRET": SECRET,
                      "PG_TIMEOUT_MS": STALL_TIMEOUT_MS})
    client = app.test_client()
    store = app.extensions["store"]
    new = store._new
    processes = []

    def read_then_stall(*args, **kwargs):  # the INSERT's answer read: COMMIT is next
        found = new(*args, **kwargs)
        processes.extend(frozen(throwaway))  # the COMMIT that follows goes to a stalled server
        return found

    try:
        monkeypatch.setattr(store, "_new", read_then_stall)
        response = post_event(client, valid_event("bet", event_id="e1"))
        thawed(processes)
        monkeypatch.undo()
        assert response.status_code == 503, response.get_data(as_text=True)
        assert "may have been stored" in response.get_json()["message"]
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover by itself"
            time.sleep(0.2)
        assert post_event(client, valid_event("bet", event_id="e1")).status_code == 200  # the resend
        body = client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_json()
        assert [e["event"]["event_id"] for e in body["events"]] == ["e1"]
    finally:
        thawed(processes)
        store.close()


# Several server processes on one database -------------------------------------------------

PROCESSES = 3
ROUNDS = 60
KILL_AT, RESTART_AT = 20, 30


def test_several_processes_store_each_acknowledged_event_once_and_one_writer_wins_each_conflict(postgres_url):
    """Three servers; the same events to each at once, conflicting events at once, one server killed and restarted."""
    servers = [Server(postgres_url, SECRET).start() for _ in range(PROCESSES)]
    # A reader pages on after the last id it saw, as the writes go on: it must never step over an id
    # that commits later (ids are drawn before the commit, in three processes at once).
    reader = open_store(postgres_url)
    seen: list[int] = []
    writing = threading.Event()
    writing.set()

    def follow():
        after = 0
        while writing.is_set():
            page, _ = reader.read_events("casino_alpha", after=after, limit=1000)
            seen.extend(row[0] for row in page)
            after = seen[-1] if seen else 0

    follower = threading.Thread(target=follow)
    follower.start()
    token = make_token(partners=["casino_alpha"])
    sent: dict[tuple, set[str]] = defaultdict(set)  # key -> the canonical contents sent under it
    answers: list[tuple[tuple, str, int | None]] = []  # (key, content, status or None: no answer)
    lock = threading.Lock()
    rng = random.Random(11)

    def key_of(event):
        return ("id", event["event_id"]) if "event_id" in event else ("content", content_of(event))

    def content_of(event):
        return parsed_content_key(json.dumps(event)).hex()

    def send(server, event):
        with lock:
            sent[key_of(event)].add(content_of(event))
        try:
            status = server.request("POST", "/player-events", event, token=token, timeout=20)[0]
        except OSError:  # the server was killed under this request, or is down
            status = None
        with lock:
            answers.append((key_of(event), content_of(event), status))

    try:
        for n in range(ROUNDS):
            # The same event to every server; an event_id with two contents to two servers; all at the same moment.
            same = valid_event("bet", amount=n, player_login=f"p{n % 7}")
            if n % 2:
                same["event_id"] = f"same-{n}"
            rival_a = valid_event("deposit", event_id=f"rival-{n}", amount=n + 0.25)
            rival_b = valid_event("deposit", event_id=f"rival-{n}", amount=n + 0.75)
            jobs = [(servers[i], same) for i in range(PROCESSES)]
            jobs += [(servers[n % PROCESSES], rival_a), (servers[(n + 1) % PROCESSES], rival_b)]
            barrier = threading.Barrier(len(jobs))

            def run(server, event, barrier=barrier):
                barrier.wait(timeout=10)
                send(server, event)

            threads = [threading.Thread(target=run, args=job) for job in jobs]
            for thread in threads:
                thread.start()
            if n == KILL_AT:
                time.sleep(rng.uniform(0.001, 0.01))  # requests in flight
                servers[1].kill()
            if n == RESTART_AT:
                servers[1].start()
            for thread in threads:
                thread.join(timeout=30)
                assert not thread.is_alive()
    finally:
        writing.clear()
        follower.join(timeout=30)
        for server in servers:
            server.stop()
        reader.close()

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT event_id, content_key, event::text FROM events").fetchall()
        ids = [id_ for (id_,) in conn.execute("SELECT id FROM events ORDER BY id")]
    assert seen == ids[: len(seen)] and len(seen) > len(ids) // 2, "the reader missed an id"
    stored: dict[tuple, list[str]] = defaultdict(list)
    for event_id, _, text in rows:
        stored[("id", event_id) if event_id else ("content", parsed_content_key(text).hex())].append(
            parsed_content_key(text).hex()
        )

    # Nothing but what was sent, and each key once; the totals, kept by three processes, those of the events.
    assert all(len(contents) == 1 for contents in stored.values())
    checker = open_store(postgres_url)
    try:
        assert checker.check_totals() == []
    finally:
        checker.close()
    assert all(contents[0] in sent[key] for key, contents in stored.items())
    statuses = defaultdict(list)
    for key, content, status in answers:
        statuses[key, content].append(status)
    for (key, content), got in statuses.items():
        assert set(got) <= {200, 409, None}, got
        if 200 in got:  # acknowledged: stored, with this content
            assert stored[key] == [content]
        if 409 in got:  # refused: another content holds the key
            assert stored[key] and stored[key] != [content]
    # Each conflict: at most one content acknowledged, and, where both writers were answered, one 409.
    rivals = [key for key in sent if key[1].startswith("rival-")]
    assert len(rivals) == ROUNDS
    decided = 0
    for key in rivals:
        results = {content: statuses[key, content] for content in sent[key]}
        winners = [content for content, got in results.items() if 200 in got]
        assert len(winners) <= 1
        if all(None not in got for got in results.values()):
            assert sorted(got[0] for got in results.values()) == [200, 409]
            decided += 1
    assert decided >= ROUNDS - (RESTART_AT - KILL_AT) - 1  # all but those a dead server was sent
    assert any(None in got for got in statuses.values()), "no request met the killed server"
