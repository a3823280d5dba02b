"""Metrics: GET /metrics in the Prometheus text format, through prometheus-client, for this process.

Requests by route template and status class, their latency, events stored, duplicates and
conflicts by event_type, batch sizes, the group commit (requests per commit, commit time with its
fsync), 503s by cause, the store's files or connection pool, the process's start time and the
version. No label ever holds a partner or player id: their number is unbounded, and they are
partners' data. BACKUP_API_METRICS=0 turns it all off (and /metrics is then a 404).
"""

import collections
import functools
import hmac
import time

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from backup_api import record, storage
from backup_api.schemas import EVENT_RULES
from backup_api.version import __version__

# Methods named as they are; any other (a client may send any token) is counted as "other".
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
# The statuses each route's request counter starts with, at 0, so that rate() sees the first of
# each after a start; any other status is counted too, from its first request.
USUAL_STATUSES = (200, 400, 401, 403, 404, 409, 413, 415, 429, 503)
# The causes of a 503 (errors.py counts them).
UNAVAILABLE_CAUSES = ("database", "commit_unconfirmed")

bp = Blueprint("metrics", __name__)


class Metrics:
    """The metrics of one app, in a registry of its own (not prometheus-client's global one)."""

    def __init__(self, app: Flask):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_start_time_seconds, memory, CPU, open files
        PlatformCollector(registry=registry)
        Gauge("backup_api_info", "The service's version.", ["version"], registry=registry).labels(__version__).set(1)
        self.requests = Counter("backup_api_requests", "Requests answered, by route template, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("backup_api_request_duration_seconds", "Time to answer a request, by route template.",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.stored = Counter("backup_api_events_stored", "Events stored (new), by event_type.", ["event_type"],
                              registry=registry)
        self.duplicates = Counter("backup_api_events_duplicate", "Events received again, already held, by"
                                  " event_type.", ["event_type"], registry=registry)
        self.conflicts = Counter("backup_api_event_conflicts", "Requests refused 409: an event_id already held with"
                                 " other content, by the event's event_type.", ["event_type"], registry=registry)
        self.batches = Histogram("backup_api_batch_events", "Events per batch request (a JSON array).",
                                 buckets=BATCH_BUCKETS, registry=registry)
        self.commit_requests = Histogram("backup_api_commit_requests", "Write requests sharing one commit (group"
                                         " commit).", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=registry)
        self.commit_seconds = Histogram("backup_api_commit_duration_seconds", "Time of one group commit, its fsync"
                                        " included.", buckets=LATENCY_BUCKETS, registry=registry)
        self.unavailable = Counter("backup_api_unavailable", "Requests answered 503, by cause.", ["cause"],
                                   registry=registry)
        self.erased = Counter("backup_api_events_erased", "Events erased with their player (DELETE"
                              " /users/{id}/player/{player_id}).", registry=registry)
        self.players_erased = Counter("backup_api_players_erased", "Players erased.", registry=registry)
        self.pruned = Counter("backup_api_events_pruned", "Events deleted by the retention window"
                              " (BACKUP_API_RETENTION_DAYS), by this process.", registry=registry)
        registry.register(_StoreCollector(app))
        # Label children by their labels, as labels() checks and locks each time. Bounded: routes x
        # methods x the statuses the app answers, and event types x new or not.
        # The children of the labelled metrics, by their labels: looked up once, then kept.
        self._by_request: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._by_event: dict[tuple[str, bool], Counter] = {}
        # Every counter present from the start at 0 for the labels it is known to take.
        for event_type in EVENT_RULES:
            for counter in (self.stored, self.duplicates, self.conflicts):
                counter.labels(event_type)
        for cause in UNAVAILABLE_CAUSES:
            self.unavailable.labels(cause)
        self._routes_started = False  # at the first scrape, when every route is registered

    def start_routes(self, app: Flask) -> None:
        """Start each route's request counter at 0 for its methods and the usual statuses (once)."""
        if self._routes_started:
            return
        self._routes_started = True
        for rule in app.url_map.iter_rules():
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                self.latency.labels(rule.rule, method)
                for status in USUAL_STATUSES:
                    self.requests.labels(rule.rule, method, str(status))

    def observe_request(self, response: Response) -> None:
        """Count a request and its time, once its answer is sent (the time counts the sending); the route is its
        template (/users/<partner_id>/...), never its values."""
        req = record.this_request()
        route = req.url_rule.rule if req.url_rule is not None else "unmatched"
        method = req.method if req.method in METHODS else "other"
        key = (route, method, response.status_code)
        children = self._by_request.get(key)
        if children is None:
            children = self._by_request[key] = (self.requests.labels(route, method, str(key[2])),
                                              self.latency.labels(route, method))
        response.call_on_close(functools.partial(_answered, *children, record.current().started))

    def event_counter(self, event_type: str, is_new: bool):
        """The counter of events stored (new) or duplicate of this event_type (a catalog row: bounded)."""
        key = (event_type, is_new)
        counter = self._by_event.get(key)
        if counter is None:
            counter = self._by_event[key] = (self.stored if is_new else self.duplicates).labels(event_type)
        return counter

    def observe_commit(self, requests: int, seconds: float) -> None:
        self.commit_requests.observe(requests)
        self.commit_seconds.observe(seconds)


class _StoreCollector:
    """The store's gauges, read at each scrape: whether it can take writes now (health.py), and its
    own: its files' sizes (SQLite) or its pool (PostgreSQL)."""

    def __init__(self, app: Flask):
        self._app = app

    def describe(self):
        return []  # read at scrape time only: the store may open after the registry is made

    def collect(self):
        problem = self._app.extensions["health"].problem()
        yield GaugeMetricFamily("backup_api_store_writable", "1 when the store can take writes now (what /healthz"
                                " checks, at each scrape), 0 when it cannot.", value=0.0 if problem else 1.0)
        store = self._app.extensions.get("store")
        if store is None:
            return
        for name, (help_text, value) in store.gauges().items():
            yield GaugeMetricFamily(f"backup_api_{name}", help_text, value=value)


def init_app(app: Flask) -> None:
    """Serve /metrics and count what the service does, unless BACKUP_API_METRICS turns it off."""
    if not app.config["METRICS"]:
        return
    app.extensions["metrics"] = metrics = Metrics(app)
    app.register_blueprint(bp)

    @app.after_request
    def count(response):
        metrics.observe_request(response)
        return response


@storage.store_opened.connect
def _observe_commits(app: Flask, store: storage.Store) -> None:
    """Count the group commits of an app's store once it is open (the store knows only a callable)."""
    metrics = app.extensions.get("metrics")
    if metrics is not None:
        store.observe_commit = metrics.observe_commit


def _answered(requests: Counter, latency: Histogram, started: float) -> None:
    requests.inc()
    latency.observe(time.perf_counter() - started)


def _current() -> Metrics | None:
    return record.this_app().extensions.get("metrics")


def events_stored(events: list[dict], new: list[bool], batch: bool) -> None:
    """Count events stored and duplicates by event_type, and a batch's size."""
    metrics = _current()
    if metrics is None:
        return
    if len(events) == 1:  # the common case, without counting by kind
        metrics.event_counter(events[0]["event_type"], new[0]).inc()
    else:
        counts = collections.Counter((event["event_type"], is_new) for event, is_new in zip(events, new, strict=True))
        for (event_type, is_new), count in counts.items():
            metrics.event_counter(event_type, is_new).inc(count)
    if batch:
        metrics.batches.observe(len(events))


def conflict(events: list[dict], partner_id: str, event_id: str) -> None:
    """Count a 409, by the event_type of the event that conflicted."""
    metrics = _current()
    if metrics is not None:
        found = [e for e in events if e["partner_id"] == partner_id and e.get("event_id") == event_id]
        metrics.conflicts.labels(found[0]["event_type"] if found else "unknown").inc()


def pruned(events: int) -> None:
    """Count events the retention window deleted."""
    metrics = _current()
    if metrics is not None:
        metrics.pruned.inc(events)


def erased(events: int) -> None:
    """Count a player erased, and their events."""
    metrics = _current()
    if metrics is not None:
        metrics.players_erased.inc()
        metrics.erased.inc(events)


def unavailable(cause: str) -> None:
    """Count a 503 by its cause."""
    metrics = _current()
    if metrics is not None:
        metrics.unavailable.labels(cause).inc()


@bp.get("/metrics")
def metrics_page():
    """The metrics of this process, in the Prometheus text format (the metrics token, when one is set)."""
    token = current_app.config["METRICS_TOKEN"]
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthorized("the metrics need their token: Authorization: Bearer <BACKUP_API_METRICS_TOKEN>",
                               www_authenticate=WWWAuthenticate("bearer", {"realm": "backup-api-metrics"}))
    metrics = _current()
    metrics.start_routes(current_app)
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
