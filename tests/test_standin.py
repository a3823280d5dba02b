"""The stand-in: the pytest plugin's fixture, serve --stand-in, and the /_stand-in/ routes (reset, faults, journal)."""

import http.client
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from backup_api import create_app
from tests.helpers import SECRET, bearer, call_stand_in, make_token, valid_event
from tests.server import ROOT, Server


def post(backup_api, event, partner_id="casino_alpha", timeout=30, raw: bytes | None = None):
    """POST one event (or raw bytes) over a connection of its own; return (status, answer), or (None, the error)."""
    status, _, answer = call_stand_in(backup_api, "POST", "/player-events", event, partner_id=partner_id,
                                      timeout=timeout, raw=raw)
    return status, answer


# The fixture --------------------------------------------------------------------------------


def test_the_fixture_serves_the_real_routes(backup_api):
    assert backup_api.url.startswith("http://127.0.0.1:")
    assert post(backup_api, valid_event("bet", amount=5))[0] == 200
    assert post(backup_api, valid_event("bet", partner_id="casino_beta"))[0] == 403  # the token owns alpha only
    [stored] = backup_api.events("casino_alpha")
    assert set(stored) == {"id", "received_at", "event"}
    assert stored["event"] == valid_event("bet", amount=5)
    status, answer = backup_api.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": True},
                                        partner_id="casino_alpha")
    assert status == 200 and backup_api.vip("casino_alpha", "p1")["is_vip"] is True


def test_each_test_starts_empty(backup_api):
    # Runs after the test above, on the same server: what it stored is gone.
    assert backup_api.events("casino_alpha") == []
    assert backup_api.vip("casino_alpha", "p1")["is_vip"] is False
    assert backup_api.rejections("casino_alpha") == []


def test_events_follows_every_page(backup_api):
    batch = [valid_event("bet", n=n) for n in range(1000)]
    for _ in range(2):
        status, _ = backup_api.request("POST", "/player-events", batch, partner_id="casino_alpha")
        batch = [valid_event("bet", n=n) for n in range(1000, 1500)]
        assert status == 200
    assert [e["event"]["n"] for e in backup_api.events("casino_alpha")] == list(range(1500))


# Faults ---------------------------------------------------------------------------------------


def test_a_503_fault_answers_in_the_envelope_and_stores_nothing(backup_api):
    backup_api.fault("casino_alpha", "503", count=2)
    for n in range(2):
        status, answer = post(backup_api, valid_event("bet", n=n))
        assert status == 503 and answer["status"] == "error" and "nothing was stored" in answer["message"]
    assert post(backup_api, valid_event("bet", n=9))[0] == 200  # the count is used up
    assert [e["event"]["n"] for e in backup_api.events("casino_alpha")] == [9]
    assert post(backup_api, valid_event("bet", partner_id="casino_beta"), partner_id="casino_beta")[0] == 200


def test_drop_after_commit_stores_then_closes_unanswered_and_a_resend_is_safe(backup_api):
    backup_api.fault("casino_alpha", "drop-after-commit")
    event = valid_event("bet", event_id="e1")
    status, error = post(backup_api, event)
    assert status is None and isinstance(error, http.client.RemoteDisconnected), error
    assert [e["event"] for e in backup_api.events("casino_alpha")] == [event]  # committed all the same
    assert post(backup_api, event) == (200, {"status": "ok"})  # the resend
    assert len(backup_api.events("casino_alpha")) == 1


def test_a_delay_fault_answers_late(backup_api):
    backup_api.fault("casino_alpha", "delay", seconds=1.0)
    started = time.monotonic()
    status, error = post(backup_api, valid_event("bet", n=1), timeout=0.3)
    assert status is None and isinstance(error, TimeoutError)  # the client's time-out fired
    started = time.monotonic()
    backup_api.fault("casino_alpha", "delay", seconds=0.5)
    assert post(backup_api, valid_event("bet", n=2))[0] == 200
    assert time.monotonic() - started >= 0.5
    assert len(backup_api.events("casino_alpha")) == 2


def test_faults_are_cleared(backup_api):
    backup_api.fault("casino_alpha", "503", count=5)
    backup_api.clear_faults("casino_alpha")
    assert post(backup_api, valid_event("bet"))[0] == 200


@pytest.mark.parametrize("body", [
    {"fault": "404"}, {"fault": "503", "count": 0}, {"fault": "503", "count": "2"}, {"fault": "503", "count": 1.5},
    {"fault": "delay"}, {"fault": "delay", "seconds": 0}, {"fault": "delay", "seconds": 61},
    {"fault": "delay", "seconds": [2, 0]}, {"fault": "delay", "seconds": [1]}, {"fault": "delay", "seconds": "1"},
    {"fault": "503", "seconds": 1}, {"fault": "503", "extra": 1}, {}, [], {"fault": "503", "route": "admin"},
    {"fault": "503", "retry_after": -1}, {"fault": "500", "retry_after": 1}, {"fault": "503", "probability": 0},
    {"fault": "503", "probability": 1.5}, {"fault": "503", "seed": "x"}, {"fault": "503", "seed": 1.5},
])
def test_a_bad_fault_is_400(backup_api, body):
    status, answer = backup_api.request("POST", "/_stand-in/faults", body, partner_id="casino_alpha")
    assert status == 400 and answer["status"] == "error"
    assert post(backup_api, valid_event("bet"))[0] == 200  # and nothing was set


# The journal ---------------------------------------------------------------------------------


def test_the_journal_shows_refused_requests_oldest_first_or_newest(backup_api):
    bad = valid_event("bet")
    del bad["amount"]
    assert post(backup_api, bad)[0] == 400
    assert backup_api.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": "yes"},
                              partner_id="casino_alpha")[0] == 400
    assert backup_api.request("POST", "/player-events", valid_event("bet"), token="not-a-token")[0] == 401
    oldest, newest = backup_api.rejections("casino_alpha")
    assert backup_api.rejections("casino_alpha", newest_first=True) == [newest, oldest]
    assert (oldest["method"], oldest["path"], oldest["status"]) == ("POST", "/player-events", 400)
    assert oldest["answer"]["errors"] == {"amount": ["Missing data for required field."]}
    assert json.loads(oldest["body"]) == bad  # the body as sent
    assert (newest["method"], newest["path"], newest["status"]) == ("PUT", "/users/casino_alpha/player/p1/vip", 400)
    assert backup_api.rejections("casino_beta") == []
    # The token that did not verify: kept apart, without its body, never in a partner's journal.
    unverified = backup_api.unverified(newest_first=True)[0]  # the list is every test's: this one's is the newest
    assert backup_api.unverified()[-1] == unverified
    assert unverified["status"] == 401 and "body" not in unverified and unverified["body_bytes"] > 0


@pytest.mark.parametrize("raw", [
    b"[" * 10_000 + b"]" * 10_000, b"\xff\xfe", b'{"partner_id": "casino_alpha", "x": NaN}',
    b'{"partner_id": "casino_alpha", "partner_id": "casino_beta"}',
])
def test_a_hostile_body_is_400_never_a_500_with_the_journal_on(backup_api, raw):
    status, answer = post(backup_api, None, raw=raw)
    assert status == 400 and answer["status"] == "error"
    assert backup_api.request("GET", "/healthz")[0] == 200


def test_the_journal_keeps_the_newest_hundred(backup_api):
    for n in range(1, 106):
        event = valid_event("bet", amount=-n)
        assert backup_api.request("POST", "/player-events", event, partner_id="casino_alpha")[0] == 400
    kept = backup_api.rejections("casino_alpha")
    assert len(kept) == 100 and json.loads(kept[-1]["body"])["amount"] == -105
    assert json.loads(kept[0]["body"])["amount"] == -6  # the last hundred, oldest first


def test_the_journal_stays_bounded_whatever_is_sent(backup_api, monkeypatch):
    from backup_api import standin
    from backup_api.standin import journal

    monkeypatch.setattr(journal, "KEPT_PARTNERS", 5)
    partners = [f"p{n}" for n in range(8)]
    token = backup_api.token(*partners)
    for partner in partners:  # refused events of 8 partners, the token owning them all
        event = valid_event("bet", partner_id=partner, amount=-1)
        assert backup_api.request("POST", "/player-events", event, token=token)[0] == 400
    assert len(backup_api.app.extensions["stand_in"].journal._by_partner) == 5
    assert backup_api.rejections("p7") and backup_api.rejections("p0") == []  # the oldest went first
    big = valid_event("bet", metadata={"blob": "x" * 200_000})
    del big["amount"]
    assert backup_api.request("POST", "/player-events", big, partner_id="casino_alpha")[0] == 400
    [kept] = backup_api.rejections("casino_alpha")
    assert kept["body_bytes"] > 200_000 and len(kept["body"]) == standin.KEPT_BODY_BYTES


@pytest.mark.whole
def test_the_journal_holds_at_most_its_bytes_whatever_arrives(backup_api, monkeypatch):
    """The probe's flood: refused batches of 1,000 events; the oldest entries go, whoever's they are."""
    kept = backup_api.app.extensions["stand_in"].journal
    monkeypatch.setattr(kept, "max_bytes", 2 << 20)
    token = backup_api.token("casino_alpha", "casino_beta")
    batch = [valid_event("bet", amount=-1, player_login=f"player-{n}") for n in range(1000)]
    for n in range(40):
        partner = ("casino_alpha", "casino_beta")[n % 2]
        body = [{**event, "partner_id": partner} for event in batch]
        assert backup_api.request("POST", "/player-events", body, token=token)[0] == 400
        assert kept.bytes <= 2 << 20
    alpha = backup_api.requests("casino_alpha")
    assert 0 < len(alpha) < 20 and alpha[-1]["body_bytes"] > 60_000
    assert backup_api.requests("casino_beta")


def test_every_request_is_journaled_with_what_became_of_each_event_and_counted(backup_api):
    event = valid_event("bet", event_id="e-1")
    for _ in range(3):  # a client that sends everything three times
        assert post(backup_api, event)[0] == 200
    other = valid_event("win", player_login="p9")
    assert post(backup_api, other)[0] == 200
    assert post(backup_api, {**event, "amount": 99})[0] == 409
    assert len(backup_api.events("casino_alpha")) == 2  # deduplication hides the resends...
    posts = backup_api.requests("casino_alpha", method="POST", path="/player-events")
    assert len(posts) == 5  # ...the journal does not
    assert [entry["events"][0]["outcome"] for entry in posts] == [
        "stored", "duplicate", "duplicate", "stored", "conflict"]
    assert backup_api.requests("casino_alpha", method="POST", newest_first=True) == posts[::-1]
    assert len(backup_api.requests("casino_alpha", outcome="duplicate")) == 2
    assert len(backup_api.requests("casino_alpha", event_id="e-1", outcome="stored")) == 1
    assert len(backup_api.requests("casino_alpha", event_type="win")) == 1
    assert len(backup_api.requests("casino_alpha", player_login="p9")) == 1
    assert len(backup_api.requests("casino_alpha", status=409)) == 1
    assert backup_api.requests("casino_alpha", method="get") == []  # backup_api.events() is no code's read
    assert backup_api.requests("casino_alpha", method="POST", limit=2) == posts[:2]
    assert backup_api.requests("casino_alpha", method="POST", limit=2, newest_first=True) == posts[::-1][:2]
    status, page = backup_api.request("GET", "/_stand-in/requests?partner_id=casino_alpha&limit=2&order=newest",
                                      partner_id="casino_alpha")
    assert status == 200 and page["requests"] == posts[::-1][:2] and page["count"] == 5
    newest = posts[-1]
    assert newest["status"] == 409 and newest["answer"]["status"] == "error"
    assert json.loads(newest["body"])["amount"] == 99
    for query in ("outcome=lost", "status=abc", "limit=0", "colour=red", "partner_id=casino_alpha&partner_id=x",
                  "order=random", "order=oldest&order=newest"):
        status, answer = backup_api.request("GET", "/_stand-in/requests?partner_id=casino_alpha&" + query,
                                            partner_id="casino_alpha")
        assert status in (400, 403) and answer["status"] == "error", query


def test_a_batch_is_journaled_only_for_the_partners_the_token_owns_and_only_their_part(backup_api):
    """The probe: a batch naming alpha and beta, refused 403 for beta's token, once let beta read alpha's event."""
    secret_event = valid_event("deposit", partner_id="casino_alpha", player_login="whale", amount=250000,
                               metadata={"iban": "DE89370400440532013000"})
    beta_event = valid_event("bet", partner_id="casino_beta")
    beta = backup_api.token("casino_beta")
    assert backup_api.request("POST", "/player-events", [secret_event, beta_event], token=beta)[0] == 403
    [entry] = backup_api.requests("casino_beta")
    assert json.loads(entry["body"]) == [json.loads(json.dumps(beta_event))]
    assert "DE89" not in json.dumps(entry) and "whale" not in json.dumps(entry)
    assert backup_api.requests("casino_alpha") == []
    # Without a verified token, nobody's journal is filled, and one request cannot empty them.
    for _ in range(100):
        backup_api.request("POST", "/player-events", beta_event)
    naming_many = [valid_event("bet", partner_id=f"p{n}") for n in range(1000)]
    backup_api.request("POST", "/player-events", naming_many, token="forged")
    assert len(backup_api.requests("casino_beta")) == 1
    assert len(backup_api.unverified()) == 100


def test_a_503_fault_says_when_to_retry_and_is_no_error_in_the_log(backup_api, caplog):
    backup_api.fault("casino_alpha", "503")
    headers = {"Authorization": f"Bearer {backup_api.token('casino_alpha')}"}
    with caplog.at_level(logging.INFO, logger="backup_api"):
        answer = backup_api.app.test_client().post("/player-events", json=valid_event("bet"), headers=headers)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "nothing was stored" in answer.get_json()["message"]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "backup_api"]
    assert ("INFO", "stand-in fault 503: 503 answered, nothing stored") in logged
    assert not [message for level, message in logged if level in ("WARNING", "ERROR")], logged


def test_a_drop_after_commit_is_journaled_as_stored(backup_api):
    backup_api.fault("casino_alpha", "drop-after-commit")
    assert post(backup_api, valid_event("bet"))[0] is None  # the connection closed without an answer
    [entry] = backup_api.requests("casino_alpha", method="POST")
    assert entry["events"][0]["outcome"] == "stored"


def test_the_journal_needs_a_token_owning_the_partner(backup_api):
    status, _ = backup_api.request("GET", "/_stand-in/rejections?partner_id=casino_beta", partner_id="casino_alpha")
    assert status == 403
    assert backup_api.request("GET", "/_stand-in/rejections", partner_id="casino_alpha")[0] == 400


def test_a_reset_over_http_forgets_only_the_tokens_partners(backup_api):
    assert post(backup_api, valid_event("bet"))[0] == 200
    assert post(backup_api, valid_event("bet", partner_id="casino_beta"), partner_id="casino_beta")[0] == 200
    assert backup_api.request("POST", "/_stand-in/reset", partner_id="casino_alpha")[0] == 200
    assert backup_api.events("casino_alpha") == []
    assert len(backup_api.events("casino_beta")) == 1
    assert backup_api.request("POST", "/_stand-in/reset")[0] == 401


# The durable service has none of it -----------------------------------------------------------


def test_the_durable_service_has_no_stand_in_routes(app, client):
    assert not app.config["STAND_IN"]
    for method, path in (("POST", "/_stand-in/reset"), ("POST", "/_stand-in/faults"),
                         ("DELETE", "/_stand-in/faults"), ("GET", "/_stand-in/rejections?partner_id=casino_alpha")):
        response = client.open(path, method=method, json={"fault": "503"}, headers=bearer())
        assert response.status_code == 404, (method, path)
    assert "stand_in" not in app.extensions


# serve --stand-in ---------------------------------------------------------------------------


def _stand_in_command(tmp_path, command):
    """Start command (serve --stand-in) in an empty folder; return the Server, its stderr's path."""
    server = Server(tmp_path / "unused.db", SECRET)
    del server.env["BACKUP_API_DATABASE"]
    server.env["PYTHONPATH"] = str(ROOT)  # it runs from an empty folder, not from the checkout
    log = open(tmp_path / "stderr", "w")  # noqa: SIM115 (closed by the caller, after the server stops)
    server.stderr = log
    server.start(command=command, cwd=tmp_path / "work")
    return server, log


@pytest.mark.whole
@pytest.mark.parametrize("how", ["flask", "game-backup-api"])
def test_serve_stand_in_keeps_nothing_and_says_so(tmp_path, how):
    (tmp_path / "work").mkdir()
    command = ([sys.executable, "-m", "flask", "--app", "backup_api"] if how == "flask"
               else [sys.executable, "-c", "from backup_api.cli import main; main()"])
    server, log = _stand_in_command(tmp_path, [*command, "serve", "--stand-in", "--port", "0"])
    try:
        token = make_token()  # minted from BACKUP_API_JWT_SECRET, as test code in any language can
        assert server.request("POST", "/player-events", valid_event("bet"), token=token)[0] == 200
        assert server.request("POST", "/_stand-in/reset", token=token)[0] == 200
    finally:
        server.stop()
        log.close()
    assert server.proc.returncode == 0
    printed = (tmp_path / "stderr").read_text()
    assert "STAND-IN: this server keeps nothing" in printed
    assert list((tmp_path / "work").iterdir()) == []  # no instance/, no secret, no database
    folder = [w for w in printed.split() if "backup-api-stand-in-" in w]
    assert not any(Path(p).exists() for p in folder)


@pytest.mark.whole
def test_serve_stand_in_answers_within_half_a_second(tmp_path):
    (tmp_path / "work").mkdir()
    started = time.monotonic()
    server, log = _stand_in_command(tmp_path, [sys.executable, "-m", "flask", "--app", "backup_api", "serve",
                                               "--stand-in", "--port", "0"])
    try:
        assert server.request("GET", "/healthz")[0] == 200
        print(f"stand-in start to first answer: {time.monotonic() - started:.3f} s")  # measured in make bench
    finally:
        server.stop()
        log.close()


@pytest.mark.whole
def test_a_memory_database_is_refused_with_a_pointer_to_the_stand_in(tmp_path):
    from backup_api import ConfigError

    with pytest.raises(ConfigError, match="serve --stand-in"):
        create_app({"DATABASE": ":memory:", "JWT_SECRET": SECRET})
    env = {**os.environ, "BACKUP_API_DATABASE": ":memory:", "BACKUP_API_JWT_SECRET": SECRET}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--port", "0"],
                            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("Error: BACKUP_API_DATABASE=:memory:")
    assert not (tmp_path / ":memory:").exists()


@pytest.mark.whole
def test_token_issue_for_a_stand_in_with_its_secret_set_touches_no_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env.update(BACKUP_API_JWT_SECRET=SECRET, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "flask", "--app", "backup_api", "token", "issue", "casino_alpha", "--ns", "t1"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.split()[-1], SECRET, algorithms=["HS256"])["ns"] == "t1"
    assert list(tmp_path.iterdir()) == []


def test_the_stand_in_routes_take_any_scope_and_the_api_routes_keep_theirs(backup_api):
    reader = backup_api.token("casino_alpha", scopes=["vip:read"])
    assert backup_api.request("POST", "/_stand-in/faults", {"fault": "503"}, token=reader)[0] == 200
    assert backup_api.request("POST", "/_stand-in/reset", token=reader)[0] == 200
    status, answer = backup_api.request("POST", "/player-events", valid_event("bet"), token=reader)
    assert status == 403 and "events:write" in answer["message"]
    with pytest.raises(ValueError, match="events:delete"):
        backup_api.token("casino_alpha", scopes=["events:delete"])


@pytest.mark.whole
def test_a_killed_stand_ins_folder_is_removed_by_the_next_start(tmp_path):
    """Before: a SIGKILLed `serve --stand-in` left its temporary folder (and its worlds) forever."""
    import signal

    from tests.server import Server

    temporary = tmp_path / "tmp"
    temporary.mkdir()

    def stand_in() -> Server:
        server = Server(tmp_path / "unused.db", SECRET)
        server.env["TMPDIR"] = str(temporary)
        server.env.pop("BACKUP_API_DATABASE")
        return server.start(command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--stand-in",
                                     "--port", "0"])

    first = stand_in()
    assert first.request("POST", "/player-events", valid_event("bet"), token=make_token())[0] == 200
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    first.stop()
    [left] = list(temporary.iterdir())
    kept = temporary / "backup-api-stand-in-someone-elses"  # a live process's: never touched
    kept.mkdir()
    (kept / "owner-pid").write_text(str(os.getpid()))
    second = stand_in()
    try:
        assert not left.exists() and kept.exists()
        assert len(list(temporary.iterdir())) == 2  # the second's own, and the live one's
    finally:
        second.stop()


@pytest.mark.whole
def test_a_request_that_forgets_the_namespace_fails_its_test(tmp_path):
    """Before: a token without `ns` went silently to the shared default world; the test's events() stayed empty."""
    (tmp_path / "test_forgetful.py").write_text(
        "import time, jwt, json, urllib.request\n"
        "def test_code_that_mints_its_own_token(backup_api):\n"
        "    backup_api.token('casino_alpha')  # the test's own partner\n"
        "    now = int(time.time())\n"
        "    token = jwt.encode({'sub': 'casino_alpha', 'exp': now + 60}, backup_api.secret, algorithm='HS256')\n"
        "    body = json.dumps({'partner_id': 'casino_alpha', 'player_login': 'p', 'event_type': 'complaint'})\n"
        "    call = urllib.request.Request(backup_api.url + '/player-events', body.encode(),\n"
        "        {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token}, method='POST')\n"
        "    assert urllib.request.urlopen(call).status == 200\n"
        "def test_code_that_uses_the_namespace(backup_api):\n"
        "    assert backup_api.request('POST', '/player-events', {'partner_id': 'casino_alpha',\n"
        "        'player_login': 'p', 'event_type': 'complaint'}, partner_id='casino_alpha')[0] == 200\n")
    (tmp_path / "conftest.py").write_text("from tests.helpers import register_plugin as pytest_configure\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_forgetful.py"],
                            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120)
    assert "2 passed, 1 error" in result.stdout, result.stdout  # the forgetful test errs at its teardown
    assert "ERROR at teardown of test_code_that_mints_its_own_token" in result.stdout
    assert "reached the stand-in without its namespace" in result.stdout, result.stdout
    assert "POST /player-events (200)" in result.stdout
