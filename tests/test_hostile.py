"""Named hostile inputs, each with the answer the manual's table promises (docs/partners/events.md)."""

import gzip
import json

import pytest

from tests.helpers import bearer, event_lines, player_lines, post_event, stored_events, valid_event

MIB = 1 << 20


def _event_json(**fields) -> str:
    return json.dumps(valid_event("big_win", **fields))


def _with_raw(field: str, raw_value: str) -> str:
    """A valid event with one field written as raw JSON text."""
    return _event_json()[:-1] + f', "{field}": {raw_value}}}'


CASES = {
    "1 MiB string": (_event_json(note="x" * MIB), 413),
    "string just under the limit": (_event_json(note="x" * (MIB - 200)), 200),
    "metadata with 100,000 elements": (_event_json(metadata={"list": list(range(100_000))}), 200),
    "metadata with 50,000 keys": (_event_json(metadata={f"k{i}": i for i in range(50_000)}), 200),
    "deep nesting (10,000 levels)": ("[" * 10_000 + "]" * 10_000, 400),
    "NUL in player_login": (_event_json(player_login="p\u0000"), 400),
    "escape sequence in session_id": (_event_json(session_id="s\u001b[31m"), 400),
    "control character in an unowned partner_id": (_event_json(partner_id="casino_alpha\u001b[31m"), 403),
    "unpaired surrogate escape": (_with_raw("note", '"\\ud800"'), 400),
    "unpaired surrogate in a key": (_with_raw("metadata", '{"\\udc00": 1}'), 400),
    "surrogate pair (valid)": (_with_raw("note", '"\\ud83d\\ude00"'), 200),
    "lists nested 70 deep in metadata": (_with_raw("metadata", '{"m": ' + "[" * 70 + "]" * 70 + "}"), 400),
    "lists nested 60 deep in metadata": (_with_raw("metadata", '{"m": ' + "[" * 60 + "]" * 60 + "}"), 200),
    "duplicate key": (_event_json()[:-1] + ', "player_login": "other"}', 400),
    "integer with 5,000 digits as amount": (_with_raw("amount", "9" * 5000).replace('"big_win"', '"bet"'), 400),
    "integer with 5,000 digits in metadata": (_with_raw("metadata", '{"n": ' + "9" * 5000 + "}"), 200),
    "amount -0": (_with_raw("amount", "-0").replace('"big_win"', '"bet"'), 200),
    "amount 1e-400": (_with_raw("amount", "1e-400").replace('"big_win"', '"bet"'), 200),
    "NaN": (_with_raw("amount", "NaN").replace('"big_win"', '"bet"'), 400),
    "trailing garbage": (_event_json() + "x", 400),
    "two JSON documents": (_event_json() + _event_json(), 400),
}


@pytest.mark.parametrize("case", CASES)
def test_named_hostile_input(app, client, case):
    raw, status = CASES[case]
    response = post_event(client, None, raw=raw)
    assert response.status_code == status
    body = response.get_json()
    if status == 200:
        assert len(stored_events(app)) == 1
    else:
        assert body["status"] == "error" and body["message"]
        assert stored_events(app) == []


def test_long_integer_in_metadata_is_kept_exactly(app, client):
    post_event(client, None, raw=_with_raw("metadata", '{"n": ' + "9" * 5000 + "}"))
    [line] = event_lines(app.extensions["store"])
    assert '"n":' + "9" * 5000 + "}" in line


def test_minus_zero_is_kept_and_deduplicated_with_zero(app, client):
    bet = _event_json().replace('"big_win"', '"bet"')[:-1]
    assert post_event(client, None, raw=bet + ', "amount": -0}').status_code == 200
    assert post_event(client, None, raw=bet + ', "amount": 0.0}').status_code == 200
    [line] = event_lines(app.extensions["store"])
    assert '"amount":-0}' in line


@pytest.mark.parametrize("raw,status", [
    (b"\xef\xbb\xbf" + _event_json().encode(), 400),  # UTF-8 byte order mark
    (b'{"partner_id": "casino_alpha", "player_login": "\xe9", "event_type": "big_win"}', 400),  # Latin-1
    (_event_json().encode("utf-16"), 400),
])
def test_encodings(app, client, raw, status):
    response = post_event(client, None, raw=raw)
    assert response.status_code == status
    assert stored_events(app) == []


def test_gzip_body_is_refused(app, client):
    response = client.post(
        "/player-events",
        data=gzip.compress(_event_json().encode()),
        headers={"Content-Encoding": "gzip", **bearer()},
        content_type="application/json",
    )
    assert response.status_code == 415
    assert "Content-Encoding" in response.get_json()["message"]
    assert stored_events(app) == []


@pytest.mark.parametrize("url", [
    "/users/casino_alpha/player/%ff/vip",
    "/users/casino_alpha/player/%fe/vip",
    "/users/casino_alpha/player/%C3/vip",  # a sequence cut short
    "/users/casino_alpha/player/%ED%A0%80/vip",  # a UTF-16 surrogate, written in UTF-8
])
def test_a_url_that_is_not_utf8_is_400_and_stores_nothing(app, client, url):
    response = client.put(url, json={"is_vip": True}, headers=bearer())
    assert response.status_code == 400 and "UTF-8" in response.get_json()["message"]
    assert client.get(url.replace("/vip", "/vip?x=1"), headers=bearer()).status_code == 400
    assert player_lines(app.extensions["store"]) == []


def test_a_query_that_is_not_utf8_is_400(client):
    response = client.get("/player-events?partner_id=casino_alpha&player_login=%ff", headers=bearer())
    assert response.status_code == 400 and "UTF-8" in response.get_json()["message"]


def test_the_replacement_character_itself_is_a_player_like_any_other(app, client):
    assert client.put("/users/casino_alpha/player/%EF%BF%BD/vip", json={"is_vip": True},
                      headers=bearer()).status_code == 200
    assert client.get("/users/casino_alpha/player/%EF%BF%BD/vip", headers=bearer()).get_json()["is_vip"] is True
