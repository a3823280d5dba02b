"""POST /player-events with a JSON array: all or nothing, deduplicated, one commit."""

import json

import pytest

from tests.helpers import make_token, post_event, stored_events, valid_event


def post_batch(client, events, token=None):
    return post_event(client, None, raw=json.dumps(events), token=token)


def batch_of(n, **fields):
    return [valid_event("bet", amount=i, **fields) for i in range(n)]


def test_batch_is_stored_and_counted(app, client):
    events = [valid_event(t) for t in ("bet", "win", "game_open", "session_start", "big_win")]
    response = post_batch(client, events)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "accepted": 5, "duplicates": 0}
    assert [row["event"] for row in stored_events(app)] == events


def test_resent_batch_is_all_duplicates(app, client):
    post_batch(client, batch_of(3))
    assert post_batch(client, batch_of(4)).get_json() == {"status": "ok", "accepted": 1, "duplicates": 3}
    assert len(stored_events(app)) == 4


def test_duplicates_within_a_batch(app, client):
    same = valid_event("bet")
    assert post_batch(client, [same, dict(reversed(list(same.items())))]).get_json()["duplicates"] == 1
    assert len(stored_events(app)) == 1


def test_single_event_is_still_answered_as_before(client):
    assert post_event(client, valid_event("bet")).get_json() == {"status": "ok"}


def test_one_invalid_event_rejects_the_batch_with_indexed_errors(app, client):
    events = batch_of(4)
    del events[2]["amount"]
    events[3]["currency"] = "eur"
    response = post_batch(client, events)
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert set(errors) == {"2", "3"}
    assert errors["2"] == {"amount": ["Missing data for required field."]}
    assert list(errors["3"]) == ["currency"]
    assert stored_events(app) == []


def test_non_object_items_are_400(app, client):
    response = post_batch(client, [valid_event("bet"), "bet", None])
    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {"1", "2"}
    assert stored_events(app) == []


def test_a_foreign_partner_anywhere_is_403_and_stores_nothing(app, client):
    events = batch_of(3)
    events[1]["partner_id"] = "casino_beta"
    assert post_batch(client, events).status_code == 403
    assert stored_events(app) == []


def test_batch_across_owned_partners(app, client):
    token = make_token(partners=["casino_alpha", "casino_beta"])
    events = [valid_event("bet"), valid_event("bet", partner_id="casino_beta")]
    assert post_batch(client, events, token=token).get_json()["accepted"] == 2


def test_event_id_conflict_within_the_batch_is_409(app, client):
    events = [valid_event("bet", event_id="e1", amount=1), valid_event("bet", event_id="e1", amount=2)]
    assert post_batch(client, events).status_code == 409
    assert stored_events(app) == []


def test_event_id_conflict_with_stored_is_409_and_stores_nothing(app, client):
    post_event(client, valid_event("bet", event_id="e1", amount=1))
    events = [valid_event("win"), valid_event("bet", event_id="e1", amount=2)]
    assert post_batch(client, events).status_code == 409
    assert len(stored_events(app)) == 1


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_limits(app, client, size):
    response = post_batch(client, batch_of(size))
    assert response.status_code == 400
    assert "1 to 1000" in response.get_json()["errors"]["_body"][0]
    assert stored_events(app) == []


def test_a_batch_of_1000(app, client):
    assert post_batch(client, batch_of(1000)).get_json()["accepted"] == 1000


def test_batch_over_one_mebibyte_is_413(app, client):
    events = batch_of(2, metadata={"pad": "x" * (600 * 1024)})
    assert post_batch(client, events).status_code == 413
    assert stored_events(app) == []


def test_odd_partner_ids_in_a_batch_are_400_not_500(app, client):
    events = [valid_event("bet", partner_id=odd) for odd in ({}, [1], None)]
    response = post_batch(client, events)
    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {"0", "1", "2"}
