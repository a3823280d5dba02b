"""GET /metrics: the Prometheus text format, parsed by prometheus-client's own parser; counters that move."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backup_api import ConfigError, create_app
from backup_api.schemas import EVENT_RULES
from tests.helpers import SECRET, bearer, post_event, valid_event


def scrape(client) -> dict:
    """Every sample of /metrics, by (name, frozen labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_counters_move_as_events_are_posted(app, client):
    before = scrape(client)
    assert post_event(client, valid_event("bet", event_id="e1")).status_code == 200
    assert post_event(client, valid_event("bet", event_id="e1")).status_code == 200  # a duplicate
    assert post_event(client, valid_event("bet", event_id="e1", amount=7)).status_code == 409
    assert post_event(client, [valid_event("win", n=n) for n in range(7)]).status_code == 200
    assert post_event(client, [valid_event("deposit", n=1)]).status_code == 200  # a batch of one
    assert client.put("/users/casino_alpha/player/p1/vip", json={"is_vip": True}, headers=bearer()).status_code == 200
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("backup_api_events_stored_total", event_type="bet") == 1
    assert moved("backup_api_events_stored_total", event_type="win") == 7
    assert moved("backup_api_events_duplicate_total", event_type="bet") == 1
    assert moved("backup_api_event_conflicts_total", event_type="bet") == 1
    assert moved("backup_api_events_stored_total", event_type="deposit") == 1
    assert moved("backup_api_batch_events_count") == 2 and moved("backup_api_batch_events_sum") == 8
    assert moved("backup_api_commit_requests_count") >= 3
    assert moved("backup_api_commit_duration_seconds_count") >= 3
    assert moved("backup_api_requests_total", route="/player-events", method="POST", status="200") == 4
    assert moved("backup_api_requests_total", route="/player-events", method="POST", status="409") == 1
    route = "/users/<partner_id>/player/<player_login>/vip"
    assert moved("backup_api_requests_total", route=route, method="PUT", status="200") == 1
    assert moved("backup_api_request_duration_seconds_count", route="/player-events", method="POST") == 5
    assert value(after, "backup_api_info", version=__import__("backup_api").__version__) == 1
    assert value(after, "process_start_time_seconds") > 0


def test_no_label_holds_a_partner_or_player(app, client):
    for path in ("/users/casino_alpha/player/player_secret_42/vip", "/player-events?partner_id=casino_alpha",
                 "/nowhere/casino_alpha"):
        client.get(path, headers=bearer())
    client.open("/player-events", method="BREW", headers=bearer())  # any method token, counted as other
    text = client.get("/metrics").get_data(as_text=True)
    assert "casino_alpha" not in text and "player_secret_42" not in text and "BREW" not in text
    assert 'route="unmatched"' in text and 'method="other"' in text


def test_the_stores_gauges(app, client, database):
    assert post_event(client, valid_event("bet")).status_code == 200
    samples = scrape(client)
    if str(database).startswith("postgresql"):
        assert value(samples, "backup_api_pg_pool_connections") >= 1
        assert ("backup_api_pg_pool_requests_waiting", frozenset()) in samples
    else:
        assert value(samples, "backup_api_sqlite_database_bytes") > 0
        assert ("backup_api_sqlite_wal_bytes", frozenset()) in samples


def test_a_503_is_counted_by_cause(app, client, monkeypatch):
    from backup_api import storage

    def fail(*args, **kwargs):
        raise storage.StorageError("the disk is full")

    monkeypatch.setattr(app.extensions["store"], "add_events", fail)
    assert post_event(client, valid_event("bet")).status_code == 503
    assert value(scrape(client), "backup_api_unavailable_total", cause="database") == 1


@pytest.mark.parametrize("setting", ["0", "off", "false"])
def test_metrics_can_be_turned_off(tmp_path, setting):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "m.db"), "JWT_SECRET": SECRET, "METRICS": setting})
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 404
        assert post_event(client, valid_event("bet")).status_code == 200
        assert "metrics" not in app.extensions
    finally:
        app.extensions["store"].close()


def _present(samples: dict, name: str, **labels) -> bool:
    return (name, frozenset(labels.items())) in samples


def test_every_counter_is_there_at_zero_before_its_first_count(app, client):
    samples = scrape(client)  # the first thing the app answers
    for event_type in EVENT_RULES:
        for name in ("backup_api_events_stored_total", "backup_api_events_duplicate_total",
                     "backup_api_event_conflicts_total"):
            assert _present(samples, name, event_type=event_type), (name, event_type)
            assert value(samples, name, event_type=event_type) == 0
    for cause in ("database", "commit_unconfirmed"):
        assert _present(samples, "backup_api_unavailable_total", cause=cause)
    for status in ("200", "400", "401", "403", "409", "503"):
        assert _present(samples, "backup_api_requests_total", route="/player-events", method="POST", status=status)
        assert value(samples, "backup_api_requests_total", route="/player-events", method="POST", status=status) == 0
    # Each status its own: a wave of 401s is told from one of 400s.
    client.post("/player-events", json=valid_event("bet"))
    samples = scrape(client)
    assert value(samples, "backup_api_requests_total", route="/player-events", method="POST", status="401") == 1
    assert value(samples, "backup_api_requests_total", route="/player-events", method="POST", status="400") == 0


def test_a_metrics_token_keeps_the_metrics_private(tmp_path):
    token = "m" * 30
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "m.db"), "JWT_SECRET": SECRET,
                      "METRICS_TOKEN": token})
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer " + "x" * 30}, {"Authorization": f"Basic {token}"},
                        bearer()):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.get_json()["status"] == "error"
            assert refused.headers["WWW-Authenticate"].replace('"', "") == "Bearer realm=backup-api-metrics"
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "backup_api_requests_total" in scraped.get_data(as_text=True)
    finally:
        app.extensions["store"].close()


@pytest.mark.parametrize("token", ["short", "a token with spaces in it, long enough"])
def test_a_weak_metrics_token_stops_the_service(tmp_path, token):
    with pytest.raises(ConfigError, match="BACKUP_API_METRICS_TOKEN"):
        create_app({"TESTING": True, "DATABASE": str(tmp_path / "m.db"), "JWT_SECRET": SECRET,
                    "METRICS_TOKEN": token})
