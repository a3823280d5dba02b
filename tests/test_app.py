"""The app's Flask: what it does once rather than at every request, and the request helpers' lookups."""

import flask.app

from backup_api import record
from tests.helpers import post_event, valid_event


def test_each_hook_is_asked_once_whether_it_is_a_coroutine_function(sqlite_app, monkeypatch):
    asked = []

    def counting(func):
        asked.append(func)
        return False

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    client = sqlite_app.test_client()
    assert post_event(client, valid_event()).status_code == 200
    first = len(asked)
    assert first >= 5  # the hooks and the view, asked the first time
    for _ in range(3):
        assert post_event(client, valid_event()).status_code == 200
    assert len(asked) == first


def test_a_coroutine_function_is_never_taken_for_a_plain_one(sqlite_app):
    async def view():
        return "never run here"

    for _ in range(2):  # asked again the second time: never remembered as plain
        try:
            synced = sqlite_app.ensure_sync(view)
        except RuntimeError as exc:  # Flask's own answer without asgiref installed
            assert "async" in str(exc)
        else:
            assert synced is not view


def test_the_body_limit_is_the_apps_and_a_larger_body_is_refused(sqlite_app):
    client = sqlite_app.test_client()
    with sqlite_app.test_request_context("/"):
        assert flask.request.max_content_length == sqlite_app.config["MAX_CONTENT_LENGTH"] == 1 << 20
    answer = post_event(client, None, raw=b" " * ((1 << 20) + 1))
    assert answer.status_code == 413 and answer.is_json


def test_this_app_and_this_request_are_the_objects_behind_flasks_proxies(sqlite_app):
    with sqlite_app.test_request_context("/x?y=1"):
        assert record.this_app() is sqlite_app
        assert record.this_request() is flask.request._get_current_object()
        assert record.this_request().args["y"] == "1"
