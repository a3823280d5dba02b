"""The request's record: one per request, made as it begins, gone once it ends, an outer request's kept."""

from backup_api import record
from tests.helpers import post_event, valid_event


def test_a_request_record_is_gone_once_the_request_ends(sqlite_app):
    seen = []

    @sqlite_app.after_request
    def keep(response):
        seen.append(record.current())
        return response

    client = sqlite_app.test_client()
    assert post_event(client, valid_event()).status_code == 200
    assert post_event(client, valid_event()).status_code == 200
    first, second = seen
    assert first is not second
    assert first.sub == "casino_alpha" and first.new == [True]
    assert second.new == [False]
    # Outside a request: a record of nothing, never the last request's.
    assert record.current() is not second and record.current().sub is None


def test_a_request_inside_another_leaves_the_outer_ones_record(sqlite_app):
    with sqlite_app.test_request_context("/outer"):
        outer = record.current()
        outer.sub = "outer"
        assert post_event(sqlite_app.test_client(), valid_event()).status_code == 200
        assert record.current() is outer
    assert record.current() is not outer
