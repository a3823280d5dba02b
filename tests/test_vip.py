"""PUT /users/{id}/player/{player_id}/vip."""

import pytest

from tests.helpers import bearer, make_token, stored_players

PATH = "/users/casino_alpha/player/player42/vip"


def put(client, body=None, raw=None, path=PATH, token=None, content_type="application/json"):
    import json

    data = raw if raw is not None else json.dumps(body)
    return client.put(path, data=data, headers=bearer(token), content_type=content_type)


@pytest.mark.parametrize("flag", [True, False])
def test_set_flag(app, client, flag):
    response = put(client, {"is_vip": flag})
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    [player] = stored_players(app)
    assert player["partner_id"] == "casino_alpha"
    assert player["player_login"] == "player42"
    assert player["is_vip"] is flag
    assert player["updated_by"] == "casino_alpha"
    assert player["updated_at"].endswith("Z")


def test_idempotent_and_last_value_wins(app, client):
    for flag in (True, True, False, False, True):
        assert put(client, {"is_vip": flag}).status_code == 200
    [player] = stored_players(app)
    assert player["is_vip"] is True


def test_records_the_token_sub(app, client):
    put(client, {"is_vip": True}, token=make_token(sub="crm-sync", partners=["casino_alpha"]))
    assert stored_players(app)[0]["updated_by"] == "crm-sync"


@pytest.mark.parametrize(
    "raw",
    [
        '{"is_vip": "true"}',
        '{"is_vip": 1}',
        '{"is_vip": 0}',
        '{"is_vip": null}',
        '{"is_vip": "yes"}',
        "{}",
        '{"is_vip": true, "extra": 1}',
        '{"is_vip": true, "is_vip": false}',
        "[true]",
        "true",
        '"is_vip"',
        "{not json",
        "",
    ],
)
def test_strict_body(app, client, raw):
    response = put(client, raw=raw)
    assert response.status_code == 400
    assert response.get_json()["status"] == "error"
    assert stored_players(app) == []


def test_foreign_partner_is_403_and_changes_nothing(app, client):
    put(client, {"is_vip": True})
    response = put(client, {"is_vip": False}, token=make_token(sub="casino_beta"))
    assert response.status_code == 403
    assert stored_players(app)[0]["is_vip"] is True


def test_foreign_partner_is_403_even_with_bad_body(client):
    assert put(client, raw="{oops", path="/users/casino_beta/player/p/vip").status_code == 403


def test_wrong_content_type_is_415(client):
    assert put(client, raw='{"is_vip": true}', content_type="text/plain").status_code == 415


@pytest.mark.parametrize("player", ["a%0Ab", "x" * 256, "%7F"])
def test_player_id_in_the_path_follows_the_identifier_rule(app, client, player):
    response = put(client, {"is_vip": True}, path=f"/users/casino_alpha/player/{player}/vip")
    assert response.status_code == 400
    assert "player_id" in response.get_json()["errors"]
    assert stored_players(app) == []


def test_partner_id_in_the_path_follows_the_identifier_rule(app, client):
    partner = "c" * 256
    response = put(client, {"is_vip": True}, path=f"/users/{partner}/player/p/vip", token=make_token(sub=partner))
    assert response.status_code == 400
    assert "id" in response.get_json()["errors"]
    assert stored_players(app) == []
