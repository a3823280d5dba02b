"""Checking the backup: GET /player-events/summary (exact sums by day, type and currency, over the totals
kept with the events) and POST /player-events/missing, on both stores."""

import json

import psycopg
import pytest

from backup_api import create_app
from backup_api.storage import totals
from backup_api.storage.layouts import POSTGRES_REVOCATIONS, POSTGRES_TABLES
from tests.helpers import SECRET, bearer, make_token, post_event
from tests.test_storage import execute

ALPHA = {"partner_id": "casino_alpha", "player_login": "p1"}


def raw(event_type: str, event_id: str, extra: str = "") -> str:
    """An event's JSON text, its amount (in extra) written as a partner's code wrote it."""
    return (f'{{"partner_id":"casino_alpha","player_login":"p1","event_type":"{event_type}",'
            f'"event_id":"{event_id}"{extra}}}')


def summary(client, query="partner_id=casino_alpha", token=None):
    return client.get(f"/player-events/summary?{query}", headers=bearer(token))


def rows(client, query="partner_id=casino_alpha"):
    answer = summary(client, query)
    assert answer.status_code == 200, answer.get_json()
    return [(r["event_type"], r["currency"], r["events"], r["amount"]) for r in answer.get_json()["rows"]]


def export(n: int, received_at: str, extra: str) -> str:
    """A line of `events export` for casino_alpha, received at received_at."""
    return json.dumps({"id": n, "received_at": received_at, "sub": "x",
                       "event": json.loads(raw("bet", f"i{n}", extra))}) + "\n"


def test_sums_are_exact_decimals_where_floats_are_not(client):
    for n, amount in enumerate(["0.1", "0.1", "0.1", "12345678901234567890.01", "0.99", "1e2", "2.50E+1"]):
        currency = "EUR" if n < 3 else "USD"
        assert post_event(client, None, raw=raw("bet", f"e{n}", f',"amount":{amount},"currency":"{currency}"')
                          ).status_code == 200
    assert sum([0.1, 0.1, 0.1]) != 0.3  # what a float sum says
    assert post_event(client, None, raw=raw("win", "w1", ',"amount":7')).status_code == 200  # no currency
    assert post_event(client, None, raw=raw("complaint", "c1")).status_code == 200  # no amount
    assert rows(client) == [
        ("bet", "EUR", 3, "0.3"),
        ("bet", "USD", 4, "12345678901234568016.00"),  # 12345678901234567891.00 + 100 + 25.0
        ("complaint", None, 1, None),
        ("win", None, 1, "7"),
    ]
    answer = summary(client).get_json()
    assert (answer["partner_id"], answer["from"], answer["to"]) == ("casino_alpha", None, None)


def test_resends_duplicates_and_conflicts_are_not_counted(client):
    event = raw("bet", "once", ',"amount":1.25')
    for _ in range(3):
        assert post_event(client, None, raw=event).status_code == 200
    assert post_event(client, None, raw=raw("bet", "once", ',"amount":9')).status_code == 409
    batch = "[" + ",".join([event, raw("bet", "two", ',"amount":0.75')]) + "]"
    assert post_event(client, None, raw=batch).get_json() == {"status": "ok", "accepted": 1, "duplicates": 1}
    # A batch with a conflict is refused whole: nothing of it counted.
    bad = "[" + ",".join([raw("bet", "three", ',"amount":5'), raw("bet", "once", ',"amount":2')]) + "]"
    assert post_event(client, None, raw=bad).status_code == 409
    assert rows(client) == [("bet", None, 2, "2.00")]


def test_days_are_utc_days_of_received_at_and_from_to_include_both_ends(app, client, tmp_path):
    lines = [export(1, "2026-12-04T23:59:59.999999Z", ',"amount":1'),
             export(2, "2026-12-05T00:00:00.000000Z", ',"amount":2'),
             export(3, "2026-12-05T23:59:59.999999Z", ',"amount":3'),
             export(4, "2026-12-06T00:00:00.000000Z", ',"amount":4')]
    (tmp_path / "events.jsonl").write_text("".join(lines))
    imported = app.test_cli_runner().invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    assert imported.output == "imported 4, already held 0\n", imported.output
    by_day = summary(client).get_json()["rows"]
    assert [(r["day"], r["events"], r["amount"]) for r in by_day] == [
        ("2026-12-04", 1, "1"), ("2026-12-05", 2, "5"), ("2026-12-06", 1, "4")]
    assert [r["day"] for r in summary(client, "partner_id=casino_alpha&from=2026-12-05&to=2026-12-05")
            .get_json()["rows"]] == ["2026-12-05"]
    assert [r["day"] for r in summary(client, "partner_id=casino_alpha&from=2026-12-05").get_json()["rows"]] == [
        "2026-12-05", "2026-12-06"]
    assert [r["day"] for r in summary(client, "partner_id=casino_alpha&to=2026-12-04").get_json()["rows"]] == [
        "2026-12-04"]
    # Importing the same file again holds them all already: nothing counted twice.
    app.test_cli_runner().invoke(args=["events", "import", str(tmp_path / "events.jsonl")])
    assert [r["events"] for r in summary(client).get_json()["rows"]] == [1, 2, 1]
    out = app.test_cli_runner().invoke(args=["events", "summary", "--partner", "casino_alpha", "--from", "2026-12-05"])
    assert out.output == "2026-12-05\tbet\t-\t2\t5\n2026-12-06\tbet\t-\t1\t4\n"
    assert app.extensions["store"].check_totals() == []


@pytest.mark.parametrize("query, named", [
    ("partner_id=casino_alpha&from=2026-12-06&to=2026-12-05", "from"),
    ("partner_id=casino_alpha&from=2026-02-30", "from"),
    ("partner_id=casino_alpha&to=20261205", "to"),
    ("partner_id=casino_alpha&to=2026-1-05", "to"),
    ("partner_id=casino_alpha&from=%EF%BC%92026-12-05", "from"),  # a full-width digit
    ("partner_id=casino_alpha&from=2026-12-05&from=2026-12-06", "from"),
    ("partner_id=casino_alpha&day=2026-12-05", "day"),
    ("from=2026-12-05", "partner_id"),
])
def test_a_bad_summary_query_is_400_naming_it(client, query, named):
    answer = summary(client, query)
    assert answer.status_code == 400 and list(answer.get_json()["errors"]) == [named], answer.get_json()


def test_a_summary_is_the_owners_and_needs_events_read(client):
    assert summary(client, "partner_id=casino_beta").status_code == 403
    writer = make_token(scope="events:write")
    assert summary(client, token=writer).status_code == 403
    assert summary(client).get_json()["rows"] == []  # nothing held: no rows


def missing(client, body, token=None):
    return client.post("/player-events/missing", data=json.dumps(body), content_type="application/json",
                       headers=bearer(token))


def test_missing_gives_the_ids_not_held_in_the_order_given(client):
    held = [f"h{n}" for n in range(5_000)]
    events = [{**ALPHA, "event_type": "complaint", "event_id": event_id} for event_id in held]
    for start in range(0, len(events), 1000):
        assert client.post("/player-events", json=events[start:start + 1000], headers=bearer()).status_code == 200
    asked = [f"{kind}{n}" for n in range(5_000) for kind in ("m", "h")]  # 10,000, half held
    assert missing(client, {"partner_id": "casino_alpha", "event_ids": asked}).get_json() == {
        "missing": [f"m{n}" for n in range(5_000)]}
    # Another partner's event of the same id is not this partner's.
    beta = {**ALPHA, "partner_id": "casino_beta", "event_type": "complaint", "event_id": "b1"}
    assert client.post("/player-events", json=beta, headers=bearer(make_token(partners=["casino_beta"])))
    answer = missing(client, {"partner_id": "casino_alpha", "event_ids": ["b1", "h1", "b1"]})
    assert answer.get_json() == {"missing": ["b1", "b1"]}


@pytest.mark.parametrize("body, named", [
    ({"partner_id": "casino_alpha", "event_ids": ["x"] * 10_001}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": []}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": ["ok", "bad\u0007"]}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": ["x" * 256]}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": [1]}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": "e1"}, "event_ids"),
    ({"partner_id": "casino_alpha"}, "event_ids"),
    ({"partner_id": "casino_alpha", "event_ids": ["e1"], "more": 1}, "more"),
    (["casino_alpha", "e1"], "_body"),
])
def test_a_bad_missing_question_is_400_naming_it(client, body, named):
    answer = missing(client, body)
    assert answer.status_code == 400 and list(answer.get_json()["errors"]) == [named], answer.get_json()


def test_missing_is_the_owners_and_needs_events_read(client):
    assert missing(client, {"partner_id": "casino_beta", "event_ids": ["e1"]}).status_code == 403
    writer = make_token(scope="events:write")
    assert missing(client, {"partner_id": "casino_alpha", "event_ids": ["e1"]}, token=writer).status_code == 403


def test_db_check_recounts_the_totals_and_fails_when_they_disagree(app, client, database):
    assert post_event(client, None, raw=raw("bet", "e1", ',"amount":1.5')).status_code == 200
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "check"]).output.endswith("totals: ok\n")
    app.extensions["store"].count_pending(["casino_alpha"])  # the event into the table, to be changed there
    if database.startswith("postgresql"):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE totals SET amount = '1.4'")
    else:
        app.extensions["store"]._conn.execute("UPDATE totals SET amount = '1.4'")
    checked = runner.invoke(args=["db", "check"])
    assert checked.exit_code == 1 and "totals: the totals of ('casino_alpha'" in checked.output, checked.output


def test_a_layout_3_postgresql_database_gets_its_totals_from_its_events(postgres_url):
    """The upgrade reads each event in Python: PostgreSQL's json functions refuse one holding an escaped NUL."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(POSTGRES_TABLES + POSTGRES_REVOCATIONS)
        conn.execute("INSERT INTO backup_api_layout VALUES (3)")
        for n, (text, received_at) in enumerate([
            (raw("bet", "a", ',"amount":0.1,"metadata":{"k":"\\u0000"}'), 1764979199999999),  # 2025-12-05
            (raw("bet", "b", ',"amount":0.2'), 1764979200000000),  # 2025-12-06 00:00 UTC
            (raw("bet", "c", ',"amount":0.2'), 1764979200000001),
        ]):
            conn.execute("INSERT INTO events (partner_id, event_id, player_login, received_at, sub, event, event_type)"
                         " VALUES ('casino_alpha', %s, 'p1', %s, 'old', %s, 'bet')", (f"e{n}", received_at, text))
    app = create_app({"TESTING": True, "DATABASE": postgres_url, "JWT_SECRET": SECRET})
    try:
        answer = summary(app.test_client()).get_json()["rows"]
        assert [(r["day"], r["events"], r["amount"]) for r in answer] == [("2025-12-05", 1, "0.1"),
                                                                        ("2025-12-06", 2, "0.4")]
        assert app.extensions["store"].check_totals() == []
    finally:
        app.extensions["store"].close()


def test_an_import_counts_only_its_new_events_exactly_whatever_their_amounts(app, client, tmp_path):
    """An import's pieces count their events from the staged text (SQLite's JSON operators, grouped): the same
    totals as a recount of every event parsed, the amounts' digits kept, the events held already left out."""
    def line(n, extra, event_type="big_win"):  # an event_type that needs no amount
        return (f'{{"id": {n}, "received_at": "2026-12-0{1 + n % 3}T10:00:00.000000Z", "sub": "x", "event": '
                + raw(event_type, f"i{n}", extra) + "}\n")

    amounts = [',"amount":0.1000000000000000055511151231257827,"currency":"EUR"', ',"amount":1.7e308',
               ',"amount":12345678901234567890123', ',"amount":1E-7,"currency":"USD"', "", ',"currency":"EUR"']
    first = tmp_path / "first.jsonl"
    first.write_text("".join(line(n, amounts[n % len(amounts)]) for n in range(1, 5)))
    assert app.test_cli_runner().invoke(args=["events", "import", str(first)]).output == (
        "imported 4, already held 0\n")
    both = tmp_path / "both.jsonl"  # lines 3 and 4 held already, between new ones
    both.write_text("".join(line(n, amounts[n % len(amounts)], "complaint" if n > 6 else "big_win")
                            for n in range(1, 10)))
    assert app.test_cli_runner().invoke(args=["events", "import", str(both)]).output == (
        "imported 5, already held 4\n")
    assert app.extensions["store"].check_totals() == []
    held = {(r["day"], r["event_type"], r["currency"]): (r["events"], r["amount"])
            for r in summary(client).get_json()["rows"]}
    assert held[("2026-12-01", "big_win", "EUR")] == (1, "0.1000000000000000055511151231257827")
    assert sum(events for events, _ in held.values()) == 9


def counted(database) -> tuple[list, list]:
    """The totals table's rows and the `counted` table's, as stored."""
    return (execute(database, "SELECT event_type, events, amount FROM totals ORDER BY 1"),
            execute(database, "SELECT partner_id, through FROM counted ORDER BY 1"))


def test_events_are_counted_into_the_table_every_count_every_and_read_with_it_until_then(app, client, database):
    store = app.extensions["store"]
    store.COUNT_EVERY = 3
    for n in (1, 2):
        assert post_event(client, None, raw=raw("bet", f"e{n}", ',"amount":0.1')).status_code == 200
    assert counted(database) == ([], [])  # not counted yet: the summary counts them as it reads
    assert rows(client) == [("bet", None, 2, "0.2")]
    assert store.check_totals() == []
    assert post_event(client, None, raw=raw("win", "e3", ',"amount":1')).status_code == 200  # the third
    stored, through = counted(database)
    assert stored == [("bet", 2, "0.2"), ("win", 1, "1")]
    assert through == [("casino_alpha", store.read_events("casino_alpha")[0][-1].id)]
    assert post_event(client, None, raw=raw("bet", "e4", ',"amount":0.3')).status_code == 200  # past them
    assert rows(client) == [("bet", None, 3, "0.5"), ("win", None, 1, "1")]
    assert store.check_totals() == []


def test_after_the_last_event_is_erased_a_new_one_taking_its_id_is_still_counted(app, client, database):
    """SQLite hands the largest id out again once its row is deleted: an erasure moves `counted` back."""
    store = app.extensions["store"]
    assert post_event(client, None, raw=raw("bet", "e1", ',"amount":1')).status_code == 200
    last = {**ALPHA, "player_login": "p2", "event_type": "bet", "amount": 2, "event_id": "e2"}
    assert client.post("/player-events", json=last, headers=bearer()).status_code == 200
    store.count_pending(["casino_alpha"])
    store.erase_player("casino_alpha", "p2", "test")
    assert post_event(client, None, raw=raw("bet", "e3", ',"amount":4')).status_code == 200
    assert rows(client) == [("bet", None, 2, "5")]
    assert store.check_totals() == []


def test_an_import_after_events_not_yet_counted_counts_both(app, client, tmp_path):
    assert post_event(client, None, raw=raw("bet", "e1", ',"amount":1')).status_code == 200  # not counted yet
    lines = tmp_path / "more.jsonl"
    lines.write_text(export(7, "2026-12-01T10:00:00.000000Z", ',"amount":2'))
    assert app.test_cli_runner().invoke(args=["events", "import", str(lines)]).output == "imported 1, already held 0\n"
    assert app.extensions["store"].check_totals() == []
    assert sum(r["events"] for r in summary(client, "partner_id=casino_alpha&from=2000-01-01").get_json()["rows"]) == 2


def test_the_count_after_the_commit_parses_no_event_this_process_parsed_as_it_came_in(app, client, database,
                                                                                     monkeypatch):
    store = app.extensions["store"]
    store.COUNT_EVERY = 3
    parsed = []
    monkeypatch.setattr(totals, "parsed", lambda text, parse=totals.parsed: parsed.append(text) or parse(text))
    for n in range(3):
        assert post_event(client, None, raw=raw("bet", f"e{n}", ',"amount":0.5')).status_code == 200
    assert parsed == [] and counted(database)[0] == [("bet", 3, "1.5")]
    assert store.check_totals() == []
