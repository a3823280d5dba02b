"""POST /player-events: the catalog, field rules, exact amounts, deduplication."""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from backup_api.schemas import ALWAYS_REQUIRED, EVENT_RULES, MAX_AMOUNT
from tests.helpers import event_lines, make_token, post_event, stored_events, valid_event


@pytest.mark.parametrize("event_type", EVENT_RULES)
def test_each_catalog_type_is_accepted(app, client, event_type):
    response = post_event(client, valid_event(event_type))
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    [row] = stored_events(app)
    assert row["event"]["event_type"] == event_type


@pytest.mark.parametrize(
    "event_type,field",
    [(t, f) for t, extra in EVENT_RULES.items() for f in (*ALWAYS_REQUIRED, *extra)],
)
def test_each_missing_required_field_is_400(app, client, event_type, field):
    event = valid_event(event_type)
    del event[field]
    response = post_event(client, event)
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == "error"
    assert field in body["errors"]
    assert stored_events(app) == []


def test_only_the_catalog_fields_are_required(client):
    # big_win and complaint need nothing beyond the three common fields.
    for event_type in ("big_win", "complaint"):
        event = {"partner_id": "casino_alpha", "player_login": "p", "event_type": event_type}
        assert post_event(client, event).status_code == 200


@pytest.mark.parametrize(
    "field,value",
    [
        ("amount", "5"),
        ("amount", True),
        ("amount", None),
        ("amount", -1),
        ("amount", -0.0001),
        ("amount", [5]),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("currency", 978),
        ("metadata", []),
        ("metadata", "x"),
        ("metadata", None),
        ("occurred_at", "2026-01-31T12:00:00"),
        ("occurred_at", "2026-13-31T12:00:00Z"),
        ("occurred_at", "yesterday"),
        ("partner_id", ""),
        ("player_login", "x" * 256),
        ("player_login", None),
        ("player_login", 42),
        ("player_login", "bad\nlogin"),
        ("session_id", "sess\x00"),
        ("session_id", ""),
        ("game_id", None),
        ("event_id", ""),
        ("event_id", 7),
        ("event_type", "BET"),
        ("event_type", "jackpot"),
        ("event_type", None),
    ],
)
def test_bad_values_are_400_and_store_nothing(app, client, field, value):
    response = post_event(client, valid_event("bet", **{field: value}))
    assert response.status_code == 400, response.get_json()
    assert list(response.get_json()["errors"]) == [field]
    assert stored_events(app) == []


def test_amount_out_of_double_range_is_400(app, client):
    raw = json.dumps(valid_event("bet", amount=0)).replace('"amount": 0', '"amount": 1e400')
    response = post_event(client, None, raw=raw)
    assert response.status_code == 400
    assert "amount" in response.get_json()["errors"]


@pytest.mark.parametrize(
    ("amount", "status"),
    [
        ("1.7976931348623157e308", 200),  # the largest double, as JSON writes it: the document's maximum
        # One more, written out in full (309 digits): found by make fuzz, where rounding to 28 digits let it by.
        (f"17976931348623157{'0' * 291}1", 400),
    ],
)
def test_amount_limit_is_the_documents_maximum(app, client, amount, status):
    assert Decimal(amount) - Decimal("1.7976931348623157e308") in (0, 1)
    raw = json.dumps(valid_event("bet", amount=0)).replace('"amount": 0', f'"amount": {amount}')
    assert post_event(client, None, raw=raw).status_code == status
    amount_schema = app.extensions["openapi"]["components"]["schemas"]["bet_event"]["properties"]["amount"]
    assert Decimal(repr(amount_schema["maximum"])) == MAX_AMOUNT


def test_every_offending_field_is_named(client):
    event = {"partner_id": "casino_alpha", "event_type": "deposit", "amount": "ten", "currency": "eu"}
    errors = post_event(client, event).get_json()["errors"]
    assert set(errors) == {"player_login", "amount", "currency"}


def test_a_255_character_id_is_accepted(client):
    assert post_event(client, valid_event("bet", player_login="x" * 255)).status_code == 200


def test_optional_fields_are_accepted(app, client):
    event = valid_event(
        "win",
        currency="EUR",
        metadata={"table": 3, "nested": {"a": [1, 2.5, None, True]}},
        event_id="evt-1",
        occurred_at="2026-01-31T12:00:00.123+01:00",
    )
    assert post_event(client, event).status_code == 200
    assert stored_events(app)[0]["event"] == event


def test_unknown_fields_are_kept_verbatim(app, client):
    raw = (
        '{"partner_id": "casino_alpha", "player_login": "p", "event_type": "big_win",'
        ' "x_extra": {"deep": [1.50, "é", null]}, "note": null}'
    )
    assert post_event(client, None, raw=raw).status_code == 200
    [row] = event_lines(app.extensions["store"])
    assert '"x_extra":{"deep":[1.50,"é",null]},"note":null' in row


def test_amount_keeps_every_digit(app, client):
    raw = '{"partner_id":"casino_alpha","player_login":"p","event_type":"bet","amount":1234567.891234567891}'
    assert post_event(client, None, raw=raw).status_code == 200
    [line] = event_lines(app.extensions["store"])
    assert '"amount":1234567.891234567891' in line
    assert stored_events(app)[0]["event"]["amount"] == Decimal("1234567.891234567891")


def test_received_at_and_sub_are_kept(app, client):
    token = make_token(sub="ops-bot", partners=["casino_alpha"])
    assert post_event(client, valid_event("bet"), token=token).status_code == 200
    before = datetime.now(UTC)
    [exported] = stored_events(app)
    assert exported["sub"] == "ops-bot"
    received = datetime.fromisoformat(exported["received_at"].replace("Z", "+00:00"))
    assert abs((received - before).total_seconds()) < 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", exported["received_at"])


# Ownership -------------------------------------------------------------------------------


def test_foreign_partner_is_403_before_validation(app, client):
    # Everything else is wrong too, but ownership is answered first.
    event = {"partner_id": "casino_beta", "event_type": "nope", "amount": "x"}
    response = post_event(client, event)
    assert response.status_code == 403
    assert response.get_json()["status"] == "error"
    assert stored_events(app) == []


def test_token_with_partners_owns_exactly_those(app, client):
    token = make_token(sub="group-holding", partners=["casino_alpha", "casino_beta"])
    assert post_event(client, valid_event("bet", partner_id="casino_beta"), token=token).status_code == 200
    assert post_event(client, valid_event("bet", partner_id="group-holding"), token=token).status_code == 403
    assert post_event(client, valid_event("bet", partner_id="casino_gamma"), token=token).status_code == 403


def test_partner_id_of_wrong_type_is_400_not_403(client):
    assert post_event(client, valid_event("bet", partner_id=["casino_beta"])).status_code == 400


# Deduplication ---------------------------------------------------------------------------


def test_resend_with_other_key_order_whitespace_and_number_form_is_stored_once(app, client):
    bodies = [
        '{"partner_id":"casino_alpha","player_login":"p","event_type":"bet","amount":5}',
        '{ "amount" : 5.0 , "event_type" : "bet" , "player_login" : "p" , "partner_id" : "casino_alpha" }',
        '{"event_type":"bet","amount":5.00,"partner_id":"casino_alpha","player_login":"p"}',
        '{"event_type":"bet","amount":0.5e1,"partner_id":"casino_alpha","player_login":"p"}',
    ]
    for raw in bodies:
        assert post_event(client, None, raw=raw).status_code == 200
    assert len(stored_events(app)) == 1


def test_numbers_inside_metadata_are_compared_by_value(app, client):
    post_event(client, valid_event("bet", metadata={"odds": 2}))
    post_event(client, None, raw=json.dumps(valid_event("bet")).replace("}", ', "metadata": {"odds": 2.0}}'))
    assert len(stored_events(app)) == 1


def test_different_content_is_stored_twice(app, client):
    post_event(client, valid_event("bet", amount=5))
    post_event(client, valid_event("bet", amount=6))
    post_event(client, valid_event("bet", amount=5, note="second bet"))
    assert len(stored_events(app)) == 3


def test_event_id_resend_is_200_and_stored_once(app, client):
    event = valid_event("bet", event_id="evt-42")
    assert post_event(client, event).status_code == 200
    assert post_event(client, dict(reversed(list(event.items())))).status_code == 200
    assert len(stored_events(app)) == 1


def test_event_id_with_other_content_is_409_and_keeps_the_original(app, client):
    assert post_event(client, valid_event("bet", event_id="evt-42", amount=5)).status_code == 200
    response = post_event(client, valid_event("bet", event_id="evt-42", amount=6))
    assert response.status_code == 409
    assert response.get_json()["status"] == "error"
    [row] = stored_events(app)
    assert row["event"]["amount"] == 5


def test_same_event_id_for_two_partners_is_two_events(app, client):
    token = make_token(partners=["casino_alpha", "casino_beta"])
    for partner in ("casino_alpha", "casino_beta"):
        event = valid_event("bet", partner_id=partner, event_id="evt-1")
        assert post_event(client, event, token=token).status_code == 200
    assert len(stored_events(app)) == 2


@pytest.mark.parametrize("when", ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.25Z", "2016-12-31T18:59:60-05:00",
                                  "2017-01-01T05:29:60+05:30"])
def test_a_leap_second_is_kept_as_sent(app, client, when):
    raw = json.dumps(valid_event("bet", occurred_at=when))
    assert post_event(client, None, raw=raw).status_code == 200
    assert f'"occurred_at":"{when}"' in "".join(event_lines(app.extensions["store"]))


@pytest.mark.parametrize("when", ["2016-12-31T22:59:60Z", "2016-12-31T23:58:60Z", "9999-12-31T23:59:60Z",
                                  "2016-12-31T23:59:61Z"])
def test_second_60_anywhere_but_23_59_utc_is_400(app, client, when):
    response = post_event(client, valid_event("bet", occurred_at=when))
    assert response.status_code == 400 and "occurred_at" in response.get_json()["errors"]
    assert stored_events(app) == []


def test_a_leap_second_filter_counts_as_the_next_days_first_second(app, client):
    assert post_event(client, valid_event("bet")).status_code == 200
    headers = {"Authorization": f"Bearer {make_token()}"}
    before = client.get("/player-events?partner_id=casino_alpha&received_before=2016-12-31T23:59:60Z", headers=headers)
    after = client.get("/player-events?partner_id=casino_alpha&received_after=2016-12-31T23:59:60Z", headers=headers)
    assert before.status_code == after.status_code == 200
    assert (len(before.get_json()["events"]), len(after.get_json()["events"])) == (0, 1)
