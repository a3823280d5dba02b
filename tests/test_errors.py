"""Every failure is the JSON error envelope: body parsing, HTTP errors, crashes."""

import json

import pytest
from werkzeug.exceptions import default_exceptions

from backup_api import create_app
from tests.helpers import SECRET, post_event, stored_events, valid_event


@pytest.mark.parametrize(
    "raw,content_type,status",
    [
        ("{not json", "application/json", 400),
        ('{"partner_id": "casino_alpha", "amount": NaN}', "application/json", 400),
        ('{"partner_id": "casino_alpha", "amount": Infinity}', "application/json", 400),
        ('{"partner_id": "casino_alpha", "partner_id": "casino_beta"}', "application/json", 400),
        ("[" * 5000 + "]" * 5000, "application/json", 400),
        ('{"m":' * 5000 + "1" + "}" * 5000, "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        ('"\\ud800"', "application/json", 400),
        ("", "application/json", 400),
        ("null", "application/json", 400),
        ('{"a": 1}', "text/plain", 415),
        ('{"a": 1}', "application/x-www-form-urlencoded", 415),
    ],
)
def test_bad_bodies(app, client, raw, content_type, status):
    response = post_event(client, None, raw=raw, content_type=content_type)
    assert response.status_code == status
    body = response.get_json()
    assert body["status"] == "error" and body["message"]
    assert stored_events(app) == []


def test_body_over_one_mebibyte_is_413(app, client):
    event = valid_event("bet", metadata={"blob": "x" * (1 << 20)})
    response = post_event(client, event)
    assert response.status_code == 413
    assert response.get_json()["status"] == "error"
    assert stored_events(app) == []


def test_body_just_under_the_limit_is_accepted(app, client):
    event = valid_event("bet", metadata={"blob": ""})
    size = len(json.dumps(event))
    event["metadata"]["blob"] = "x" * ((1 << 20) - size)
    assert len(json.dumps(event)) == 1 << 20
    assert post_event(client, event).status_code == 200


def test_charset_parameter_is_fine(client):
    raw = json.dumps(valid_event("bet"))
    response = post_event(client, None, raw=raw, content_type="application/json; charset=utf-8")
    assert response.status_code == 200


@pytest.mark.parametrize("code", sorted(c for c in default_exceptions if c >= 400))
def test_every_http_error_is_json(tmp_path, code):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "db"), "JWT_SECRET": SECRET})

    @app.get("/fail")
    def fail():
        from flask import abort

        abort(code)

    response = app.test_client().get("/fail")
    assert response.status_code == code
    assert response.is_json
    assert response.get_json()["status"] == "error"


def test_unexpected_exception_is_json_500(tmp_path):
    app = create_app({"DATABASE": str(tmp_path / "db"), "JWT_SECRET": SECRET})

    @app.get("/crash")
    def crash():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/crash")
    assert response.status_code == 500
    assert response.get_json() == {"status": "error", "message": "internal error"}


def test_404_and_405_are_json(client):
    assert client.get("/nope").get_json()["status"] == "error"
    response = client.delete("/player-events")
    assert response.status_code == 405
    assert response.get_json()["status"] == "error"
    assert {"GET", "POST"} <= set(response.headers["Allow"].split(", "))


def _nested(levels: int) -> str:
    """An event whose JSON is exactly `levels` containers deep (the event object is level 1)."""
    inner = "{}" if levels == 2 else '{"m":' * (levels - 2) + "{}" + "}" * (levels - 2)
    return '{"partner_id":"casino_alpha","player_login":"p","event_type":"big_win","metadata":' + inner + "}"


def test_nesting_limit_is_64_levels(app, client):
    assert post_event(client, None, raw=_nested(64)).status_code == 200
    response = post_event(client, None, raw=_nested(65))
    assert response.status_code == 400
    assert "64" in response.get_json()["message"]
