"""Operations: health check, access log, snapshots while writing."""

import http.client
import json
import logging
import sqlite3
import threading
import time
from contextlib import closing
from decimal import Decimal

import pytest

from backup_api import ConfigError, create_app, logs
from backup_api.server import InThread
from tests.helpers import SECRET, event_lines, make_token, post_event, sqlite_only, valid_event
from tests.server import Server


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_is_503_when_the_database_does_not_answer(app, client):
    app.extensions["store"].close()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "error"


def test_openapi_needs_no_token(client):
    assert client.get("/openapi.json").status_code == 200


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "backup_api"]


def test_access_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="backup_api")
    token = make_token(sub="ops-bot", partners=["casino_alpha"])
    post_event(client, valid_event("bet", player_login="secret-player-name"), token=token)
    client.get("/nowhere")
    lines = _lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("POST /player-events 200 ")
    assert "ms client=127.0.0.1 partner=casino_alpha sub=ops-bot jti=" in lines[0]
    assert lines[1].startswith("GET /nowhere 404 ") and lines[1].endswith("client=127.0.0.1 partner=- sub=- jti=-")
    text = "\n".join(lines)
    assert token not in text and token.split(".")[1] not in text
    assert "secret-player-name" not in text  # the body is never logged


def test_a_refusal_is_logged_with_its_reason_and_the_token_holder_when_the_signature_verified(client, caplog):
    caplog.set_level(logging.INFO, logger="backup_api")
    expired = make_token(sub="leaky-bot", jti="jti-42", lifetime=-10)
    post_event(client, valid_event("bet"), token=expired)
    forged = make_token(sub="forger", jti="jti-forged", secret="another-secret-that-is-long-enough-for-hs256!")
    post_event(client, valid_event("bet"), token=forged)
    post_event(client, valid_event("bet", partner_id="casino_beta"), token=make_token(sub="ops-bot", jti="jti-7"))
    lines = _lines(caplog)
    assert lines[0].startswith("POST /player-events 401 ")
    assert lines[0].endswith('sub=leaky-bot jti=jti-42 reason="the token has expired"')
    assert lines[1].startswith("POST /player-events 401 ") and "sub=- jti=-" in lines[1]  # its claims unverified
    assert 'reason="invalid token: Signature verification failed"' in lines[1]
    assert lines[2].startswith("POST /player-events 403 ")
    assert lines[2].endswith("sub=ops-bot jti=jti-7 reason=\"this token does not own partner 'casino_beta'\"")


def test_access_log_escapes_control_characters(client, caplog):
    caplog.set_level(logging.INFO, logger="backup_api")
    client.get("/x%0Afake 200 line")
    [line] = _lines(caplog)
    assert "\n" not in line and "\\n" in line


def test_the_answer_is_sent_before_its_access_line_is_written(tmp_path):
    # The line and the request's metrics are done once the client has its answer (issue 41): a handler that
    # holds the line up must not hold the answer up.
    app = create_app({"DATABASE": str(tmp_path / "a.db"), "JWT_SECRET": SECRET})
    writing, let_go = threading.Event(), threading.Event()

    class Holding(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("POST /player-events 200 "):
                writing.set()
                let_go.wait(10)

    holding = Holding()
    logging.getLogger("backup_api").addHandler(holding)
    running = InThread(app)
    try:
        with closing(http.client.HTTPConnection(running.url.removeprefix("http://"), timeout=5)) as connection:
            connection.request("POST", "/player-events", json.dumps(valid_event("bet")),
                               {"Authorization": f"Bearer {make_token()}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            assert (answer.status, json.loads(answer.read())) == (200, {"status": "ok"})
        assert writing.wait(5)  # the line was being written all the while, the answer already out
    finally:
        let_go.set()
        running.stop()
        logging.getLogger("backup_api").removeHandler(holding)


@pytest.mark.parametrize("event_type,level", [("big_win", logging.WARNING), ("complaint", logging.WARNING)])
def test_notable_events_are_warnings(client, caplog, event_type, level):
    caplog.set_level(logging.INFO, logger="backup_api")
    post_event(client, valid_event(event_type, player_login="p7"))
    warnings = [r for r in caplog.records if r.levelno == level]
    assert [r.getMessage() for r in warnings] == [f"{event_type} event: partner=casino_alpha player=p7"]


def test_ordinary_events_are_not_warnings(client, caplog):
    caplog.set_level(logging.INFO, logger="backup_api")
    post_event(client, valid_event("bet"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_log_level_from_configuration(tmp_path, caplog):
    app = create_app({"DATABASE": str(tmp_path / "d.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "warning"})
    caplog.set_level(logging.DEBUG)
    app.test_client().get("/healthz")
    assert _lines(caplog) == []
    with pytest.raises(ConfigError):
        create_app({"DATABASE": str(tmp_path / "d.db"), "JWT_SECRET": SECRET, "LOG_LEVEL": "loud"})


@pytest.mark.parametrize("created", [0.0, 0.9995, 1764700000.001, 1764700000.999, 1764700001.0, time.time()])
def test_the_log_writes_its_time_as_logging_does(created):
    # The time is written once a second and reused: each line's must still be its own.
    ours, logging_own = logs._Formatter(FORMAT), logging.Formatter(FORMAT)
    for moment in (created, created + 0.25, created + 1, created):
        record = logging.makeLogRecord({"msg": "a line", "levelname": "INFO"})
        record.created, record.msecs = moment, (moment - int(moment)) * 1000 // 1
        assert ours.format(record) == logging_own.format(record)


FORMAT = "%(asctime)s %(levelname)s %(message)s"


@sqlite_only
def test_snapshot_while_writing_is_a_consistent_prefix(app, tmp_path):
    store = app.extensions["store"]
    stop = threading.Event()
    errors = []

    def writer(n):
        i = 0
        try:
            while not stop.is_set() and i < 5000:
                ev = {"partner_id": "p", "player_login": f"w{n}", "event_type": "bet", "amount": Decimal(i)}
                store.add_events([ev], "s")
                i += 1
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        while len(event_lines(store)) < 50:
            pass
        store.snapshot(str(tmp_path / "snap.db"))
        with closing(sqlite3.connect(tmp_path / "snap.db")) as conn:
            snapped = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        deadline = time.monotonic() + 10
        # Let the writers get past the snapshot, to show it was taken while they wrote.
        while len(event_lines(store)) <= snapped and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []

    copy = sqlite3.connect(tmp_path / "snap.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        copied = copy.execute("SELECT id, content_key, event FROM events ORDER BY id").fetchall()
    finally:
        copy.close()
    live = store.db.execute("SELECT id, content_key, event FROM events ORDER BY id").fetchall()
    assert 50 <= len(copied) < len(live)
    assert copied == live[: len(copied)]


@sqlite_only
def test_snapshot_command(app, client, runner, tmp_path):
    post_event(client, valid_event("bet"))
    target = tmp_path / "out" / "copy.db"
    result = runner.invoke(args=["db", "snapshot", str(target)])
    assert result.exit_code == 0, result.output
    copy = sqlite3.connect(target)
    assert copy.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    copy.close()
    again = runner.invoke(args=["db", "snapshot", str(target)])
    assert again.exit_code != 0 and "already exists" in again.output


@pytest.mark.whole
def test_the_client_address_is_the_forwarded_one_only_from_the_trusted_proxy(tmp_path):
    for trusted, expected in ((None, "127.0.0.1"), ("127.0.0.1", "203.0.113.7")):
        server = Server(tmp_path / "b.db", SECRET)
        if trusted:
            server.env["BACKUP_API_TRUSTED_PROXY"] = trusted
        log_path = tmp_path / f"log-{expected}"
        with open(log_path, "w") as log:
            server.stderr = log
            with server:
                assert server.request("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.7"})[0] == 200
        assert "GET /healthz 200 " in log_path.read_text()
        assert f"client={expected} " in log_path.read_text(), log_path.read_text()


@pytest.mark.whole
def test_a_forwarded_client_that_is_not_an_ip_address_gives_way_to_the_connections_own(tmp_path):
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_TRUSTED_PROXY"] = "127.0.0.1"
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        server.stderr = log
        with server:
            for forwarded in ("not-an-ip", "a" * 2000, "2001:db8::1"):
                assert server.request("GET", "/healthz", headers={"X-Forwarded-For": forwarded})[0] == 200
    lines = [line for line in log_path.read_text().splitlines() if "GET /healthz 200 " in line]
    assert len(lines) == 3, lines
    assert "client=127.0.0.1 " in lines[0] and "client_note=" in lines[0] and "'not-an-ip' is not an IP" in lines[0]
    assert "client=127.0.0.1 " in lines[1] and "a" * 100 not in lines[1]
    assert "client=2001:db8::1 " in lines[2] and "client_note" not in lines[2]


def test_a_trusted_proxy_must_be_an_address():
    with pytest.raises(ConfigError, match="BACKUP_API_TRUSTED_PROXY"):
        create_app({"TESTING": True, "TRUSTED_PROXY": "proxy.example", "JWT_SECRET": SECRET})


@pytest.mark.whole
def test_json_log_lines_carry_the_same_fields(tmp_path):
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_LOG_FORMAT"] = "json"
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        server.stderr = log
        with server:
            token = make_token(sub="ops-bot", jti="jti-9", partners=["casino_alpha"])
            assert server.request("POST", "/player-events", valid_event("big_win"), token)[0] == 200
            assert server.request("GET", "/player-events?partner_id=casino_beta", token=token)[0] == 403
            assert server.request("GET", "/x%0Afake")[0] == 404
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]  # every line is one object
    assert {"time", "level", "message"} <= set(lines[0])
    posted, refused, unknown = (line for line in lines if "status" in line)
    assert posted["level"] == "INFO" and posted["method"] == "POST" and posted["path"] == "/player-events"
    assert (posted["status"], posted["client"], posted["partner"], posted["sub"], posted["jti"]) == (
        200, "127.0.0.1", "casino_alpha", "ops-bot", "jti-9")
    assert isinstance(posted["duration_ms"], float) and "reason" not in posted
    assert refused["status"] == 403 and refused["reason"] == "this token does not own partner 'casino_beta'"
    assert unknown["path"] == "/x\nfake" and unknown["sub"] is None
    assert any(line["level"] == "WARNING" and line["message"].startswith("big_win event") for line in lines)


def test_an_unknown_log_format_stops_the_service():
    with pytest.raises(ConfigError, match="BACKUP_API_LOG_FORMAT"):
        create_app({"TESTING": True, "LOG_FORMAT": "xml", "JWT_SECRET": SECRET})


def test_making_the_app_or_the_stand_in_changes_no_other_logger(tmp_path):
    """A partner's test process is often a Flask app itself: the service's apps leave its logging as it was."""
    import logging

    from flask import Flask
    from flask.logging import default_handler

    from backup_api.server import InThread

    def state():
        loggers = [logging.getLogger(), logging.getLogger("flask.app"), logging.getLogger("waitress"),
                   logging.getLogger("waitress.queue"), logging.getLogger("werkzeug")]
        return ([(lg.level, list(lg.handlers), lg.propagate) for lg in loggers],
                default_handler.formatter, default_handler.stream, default_handler.level)

    Flask("partners_own_app").logger.info("the host's logger, made before")
    before = state()
    for settings in ({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}, {"STAND_IN": True}):
        app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "l.db"), "JWT_SECRET": SECRET, **settings})
        running = InThread(app)
        running.stop()
    assert state() == before
