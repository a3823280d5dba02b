"""Reading the backup over HTTP: pages of events, one event, a VIP flag."""

import json
import os
import threading
import time
from urllib.parse import quote

import pytest

from backup_api.schemas import MAX_PAGE
from tests.helpers import bearer, make_token, post_event, sqlite_only, valid_event

ALPHA = bearer()


def page(client, token_headers=ALPHA, **params):
    """GET /player-events with params (partner_id casino_alpha unless given); return the response."""
    params.setdefault("partner_id", "casino_alpha")
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items() if v is not None)
    return client.get(f"/player-events?{query}", headers=token_headers)


def walk(client, headers=ALPHA, **params) -> list[dict]:
    """Follow next from the first page to the last; return every event seen."""
    seen, after = [], None
    for _ in range(10_000):
        response = page(client, headers, after=after, **params)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        seen.extend(body["events"])
        after = body["next"]
        if after is None:
            return seen
    raise AssertionError("paging did not end")


def test_a_page_gives_back_each_event_exactly_as_sent(client):
    raw = ('{"partner_id":"casino_alpha","player_login":"p1","event_type":"bet","amount":1e-400,'
           '"metadata":{"big":' + "9" * 300 + ',"zero":-0,"text":"héllo \\u2028 中"}}')
    assert post_event(client, None, raw=raw).status_code == 200
    response = page(client)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_data(as_text=True)
    assert raw.replace("\\u2028", "\u2028") in body  # the text of the event, byte for byte
    [stored] = json.loads(body)["events"]
    assert list(stored) == ["id", "received_at", "event"]
    assert stored["received_at"].endswith("Z") and stored["id"] >= 1
    assert json.loads(body)["next"] is None


def test_pages_walk_every_event_once_oldest_first(client):
    for n in range(25):
        post_event(client, valid_event("bet", n=n))
    first = page(client, limit=10).get_json()
    assert len(first["events"]) == 10 and first["next"]
    seen = walk(client, limit=7)
    assert [e["event"]["n"] for e in seen] == list(range(25))
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == 25


def test_default_page_is_100_and_limit_is_capped(client):
    batch = [valid_event("bet", n=n) for n in range(MAX_PAGE + 5)]
    assert client.post("/player-events", json=batch[:1000], headers=ALPHA).status_code == 200
    assert client.post("/player-events", json=batch[1000:], headers=ALPHA).status_code == 200
    assert len(page(client).get_json()["events"]) == 100
    assert len(page(client, limit=MAX_PAGE).get_json()["events"]) == MAX_PAGE
    assert page(client, limit=MAX_PAGE + 1).status_code == 400


def test_filters_combine(client):
    token = make_token(partners=["casino_alpha", "casino_beta"])
    both = bearer(token)
    post_event(client, valid_event("bet", player_login="p1", event_id="a"), token=token)
    post_event(client, valid_event("win", player_login="p1"), token=token)
    post_event(client, valid_event("bet", player_login="p2"), token=token)
    post_event(client, valid_event("bet", partner_id="casino_beta", player_login="p1"), token=token)

    def types(**params):
        return [(e["event"]["event_type"], e["event"]["player_login"]) for e in walk(client, both, **params)]

    assert types() == [("bet", "p1"), ("win", "p1"), ("bet", "p2")]
    assert types(player_login="p1") == [("bet", "p1"), ("win", "p1")]
    assert types(event_type="bet") == [("bet", "p1"), ("bet", "p2")]
    assert types(player_login="p1", event_type="bet") == [("bet", "p1")]
    assert types(event_id="a") == [("bet", "p1")]
    assert types(event_id="b") == []
    assert types(partner_id="casino_beta") == [("bet", "p1")]


def test_received_after_and_before(client):
    post_event(client, valid_event("bet", n=1))
    time.sleep(0.01)
    middle = time.time()
    time.sleep(0.01)
    post_event(client, valid_event("bet", n=2))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1e6):06d}Z"
    assert [e["event"]["n"] for e in walk(client, received_after=stamp)] == [2]
    assert [e["event"]["n"] for e in walk(client, received_before=stamp)] == [1]
    # Another offset, the same moment.
    assert [e["event"]["n"] for e in walk(client, received_after="2000-01-01T01:00:00+01:00")] == [1, 2]
    assert walk(client, received_before="2000-01-01T00:00:00Z") == []


def test_a_selective_filter_gives_short_pages_with_a_next_never_a_long_scan(app, client, monkeypatch):
    monkeypatch.setattr("backup_api.storage.sqlstore.SCAN_WINDOW", 10)
    for n in range(35):
        post_event(client, valid_event("bet", n=n, player_login="rare" if n in (3, 31) else "common"))
    pages = []
    after = None
    while True:
        body = page(client, player_login="rare", after=after, limit=5).get_json()
        pages.append([e["event"]["n"] for e in body["events"]])
        after = body["next"]
        if after is None:
            break
    assert pages == [[3], [], [], [31]]


def test_a_page_stops_at_its_byte_limit(app, client, monkeypatch):
    monkeypatch.setattr("backup_api.storage.sqlstore.MAX_PAGE_BYTES", 300)
    for n in range(6):
        post_event(client, valid_event("bet", n=n, pad="x" * 100))
    first = page(client).get_json()
    assert 1 <= len(first["events"]) < 6 and first["next"]
    assert [e["event"]["n"] for e in walk(client)] == list(range(6))


def test_paging_while_writers_write_sees_each_event_once(app, client):
    for n in range(50):
        post_event(client, valid_event("bet", n=f"before-{n}"))
    stop = threading.Event()
    written = []

    def writer():
        writer_client = app.test_client()
        n = 0
        while not stop.is_set() and n < 2000:
            assert post_event(writer_client, valid_event("bet", n=f"during-{n}")).status_code == 200
            written.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen, after, pages = [], None, 0
        while pages < 1000:
            body = page(client, limit=3, after=after).get_json()
            pages += 1
            ids = [e["id"] for e in body["events"]]
            assert ids == sorted(ids)
            assert not seen or not ids or ids[0] > seen[-1]["id"]  # nothing new on a page already read
            seen.extend(body["events"])
            after = body["next"]
            if after is None:
                break
    finally:
        stop.set()
        thread.join(timeout=60)
    names = [e["event"]["n"] for e in seen]
    assert len(names) == len(set(names))
    assert names[:50] == [f"before-{n}" for n in range(50)]
    assert written  # the writer did write meanwhile
    # Everything stored since is on pages still to come, in order, each once.
    rest = [e["event"]["n"] for e in walk(client, after=after)] if after else []
    everything = names + rest
    assert everything == [f"before-{n}" for n in range(50)] + [f"during-{n}" for n in range(len(written))][
        : len(everything) - 50
    ]


def test_a_partner_not_owned_is_403_whatever_else_is_wrong(client):
    for params in ({"partner_id": "casino_beta"}, {"partner_id": "casino_beta", "limit": "-1", "bogus": "x"},
                   {"partner_id": "casino_beta", "after": "forged"}):
        response = client.get("/player-events", query_string=params, headers=ALPHA)
        assert response.status_code == 403, params
    twice = client.get("/player-events?partner_id=casino_alpha&partner_id=casino_beta", headers=ALPHA)
    assert twice.status_code == 403


@pytest.mark.parametrize(
    "params,field",
    [
        ({}, "partner_id"),
        ({"partner_id": ""}, "partner_id"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "9" * 500}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"limit": "５"}, "limit"),  # a full-width digit
        ({"event_type": "BET"}, "event_type"),
        ({"event_type": "bet' OR '1'='1"}, "event_type"),
        ({"player_login": "x\x00y"}, "player_login"),
        ({"player_login": "x" * 256}, "player_login"),
        ({"received_after": "yesterday"}, "received_after"),
        ({"received_after": "2026-02-30T00:00:00Z"}, "received_after"),
        ({"received_before": "2026-01-01T00:00:00"}, "received_before"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "A" * 32}, "after"),
        ({"after": "A" * 5000}, "after"),
        ({"sort": "id"}, "sort"),
        ({"limit": ["5", "6"]}, "limit"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(client, params, field):
    query = {"partner_id": "casino_alpha", **params}
    if "partner_id" in params and not params["partner_id"]:
        query["partner_id"] = ""
    if params == {}:
        del query["partner_id"]
    response = client.get("/player-events", query_string=query, headers=ALPHA)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["status"] == "error" and field in body["errors"]


def test_an_injection_attempt_in_a_filter_is_just_a_value(client):
    post_event(client, valid_event("bet", player_login="p1"))
    assert walk(client, player_login="p1' OR '1'='1") == []
    assert walk(client, player_login="p1\" OR 1=1 --") == []
    assert len(walk(client, player_login="p1")) == 1


def test_a_cursor_is_bound_to_its_query_and_cannot_be_altered(client):
    for n in range(3):
        post_event(client, valid_event("bet", n=n, player_login="p1"))
    cursor = page(client, limit=1).get_json()["next"]
    assert page(client, limit=2, after=cursor).status_code == 200  # the page size may change
    assert page(client, after=cursor, player_login="p1").status_code == 400  # another query
    for position in range(len(cursor)):
        changed = cursor[:position] + ("B" if cursor[position] != "B" else "C") + cursor[position + 1:]
        assert page(client, limit=1, after=changed).status_code == 400, position
    other_secret = make_token(partners=["casino_alpha"])
    assert page(client, bearer(other_secret), limit=1, after=cursor).status_code == 200  # any owner's token


def test_one_event_by_id(client):
    raw = '{"partner_id":"casino_alpha","player_login":"p1","event_type":"bet","amount":5.00}'
    post_event(client, None, raw=raw)
    [listed] = page(client).get_json()["events"]
    response = client.get(f"/player-events/{listed['id']}", headers=ALPHA)
    assert response.status_code == 200
    assert response.get_data(as_text=True).endswith('"event": ' + raw + "}")
    assert response.get_json() == listed


def test_another_partners_event_is_404_not_403(client):
    beta = make_token(sub="casino_beta")
    post_event(client, valid_event("bet", partner_id="casino_beta"), token=beta)
    [event] = walk(client, bearer(beta), partner_id="casino_beta")
    assert client.get(f"/player-events/{event['id']}", headers=bearer(beta)).status_code == 200
    theirs = client.get(f"/player-events/{event['id']}", headers=ALPHA)
    missing = client.get("/player-events/999999", headers=ALPHA)
    assert theirs.status_code == missing.status_code == 404
    # Nothing tells them apart but the id asked for.
    assert theirs.get_json()["message"].replace(str(event["id"]), "N") == missing.get_json()["message"].replace(
        "999999", "N"
    )


@pytest.mark.parametrize("path", ["0", "-1", "abc", "1.5", "9" * 30, "9223372036854775808", "%00"])
def test_odd_event_ids_are_404(client, path):
    response = client.get(f"/player-events/{path}", headers=ALPHA)
    assert response.status_code == 404
    assert response.get_json()["status"] == "error"


def test_reads_need_a_token(client):
    for path in ("/player-events?partner_id=casino_alpha", "/player-events/1",
                 "/users/casino_alpha/player/p1/vip"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        response = client.get(path, headers={"Authorization": f"bearer {make_token()}"})
        assert response.status_code in (200, 404)


def test_vip_flag_reads_back(client):
    response = client.get("/users/casino_alpha/player/p9/vip", headers=ALPHA)
    assert response.status_code == 200
    assert response.get_json() == {"is_vip": False, "updated_at": None, "updated_by": None}
    holder = bearer(make_token(sub="ops", partners=["casino_alpha"]))
    assert client.put("/users/casino_alpha/player/p9/vip", json={"is_vip": True}, headers=holder).status_code == 200
    flag = client.get("/users/casino_alpha/player/p9/vip", headers=ALPHA).get_json()
    assert flag["is_vip"] is True and flag["updated_by"] == "ops" and flag["updated_at"].endswith("Z")
    client.put("/users/casino_alpha/player/p9/vip", json={"is_vip": False}, headers=ALPHA)
    flag = client.get("/users/casino_alpha/player/p9/vip", headers=ALPHA).get_json()
    assert flag["is_vip"] is False and flag["updated_by"] == "casino_alpha"


def test_vip_read_of_a_partner_not_owned_is_403_and_bad_ids_400(client):
    assert client.get("/users/casino_beta/player/p9/vip", headers=ALPHA).status_code == 403
    response = client.get(f"/users/casino_alpha/player/{'x' * 256}/vip", headers=ALPHA)
    assert response.status_code == 400 and "player_id" in response.get_json()["errors"]


@pytest.mark.parametrize(
    "query",
    [
        "partner_id=casino_alpha&player_login=%FF%FE",
        "partner_id=casino_alpha&player_login=%C0%AF",
        "partner_id=casino_alpha&event_type=%00",
        "partner_id=casino_alpha&limit=%EF%BC%95",
        "partner_id=casino_alpha&received_after=2026-01-01T00%3A00%3A00%2B99%3A99",
        "partner_id=casino_alpha&after=%00%00",
        "partner_id=casino_alpha&&&=&player_login",
        "partner_id=%00",
        "partner_id=casino_alpha;player_login=x",
        "partner_id=casino_alpha&player_login=" + "%F0%9F%98%80" * 300,
    ],
)
def test_odd_encodings_in_the_query_never_give_a_500(client, query):
    post_event(client, valid_event("bet"))
    response = client.get(f"/player-events?{query}", headers=ALPHA)
    assert response.status_code in (200, 400, 403), response.get_data()
    assert response.is_json


@sqlite_only
def test_reads_are_503_when_the_database_is_gone(app, client):
    post_event(client, valid_event("bet"))
    assert page(client).status_code == 200  # a pooled reader is open on the file now
    os.remove(app.extensions["store"].path)
    for response in (page(client), client.get("/player-events/1", headers=ALPHA),
                     client.get("/users/casino_alpha/player/p1/vip", headers=ALPHA)):
        assert response.status_code == 503
        assert response.get_json()["status"] == "error"


def test_filters_read_events_holding_any_json_escape(client):
    # PostgreSQL's json functions refuse to turn \u0000 into text: filtering must not need to.
    raw = (
        b'{"partner_id": "casino_alpha", "player_login": "p1", "event_type": "bet", "amount": 5,'
        b' "session_id": "s", "metadata": {"note": "a\\u0000b\\ud83d\\ude00"}}'
    )
    assert post_event(client, None, raw=raw).status_code == 200
    for filters in ({}, {"event_type": "bet"}, {"player_login": "p1"}, {"received_after": "2000-01-01T00:00:00Z"}):
        response = page(client, **filters)
        assert response.status_code == 200, response.get_data(as_text=True)
        [event] = response.get_json()["events"]
        assert event["event"]["metadata"]["note"] == "a\u0000b\U0001f600"
