"""The stand-in: the service as the aggregator's stand-in in integration tests, keeping nothing.

`serve --stand-in` (or BACKUP_API_STAND_IN=1) stores into a SQLite file in a private temporary
folder, without fsync, deleted when the server stops; the routes are the real ones. Routes under
/_stand-in/ exist in this mode only, each for the partners its token owns: reset, faults (503,
drop-after-commit, delay) and the journal of refused requests.
"""

import atexit
import base64
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from decimal import Decimal

from flask import Blueprint, Flask, Response, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from backup_api import storage
from backup_api.config import store
from backup_api.jsontext import BodyError, parse_json
from backup_api.routes import ok_response, read_json
from backup_api.server import DROP_CONNECTION
from backup_api.storage.sqlite import SQLiteStore
from backup_api.tokens import authenticate, authorise, owned_partners

# Refused requests kept per partner, newest first; for at most so many partners (the oldest
# partner's journal goes first), each body up to so many bytes: memory stays bounded whatever is sent.
KEPT_REJECTIONS = 100
KEPT_PARTNERS = 1000
KEPT_BODY_BYTES = 64 * 1024
FAULTS = ("503", "drop-after-commit", "delay")
MAX_FAULT_COUNT = 10_000
MAX_DELAY_SECONDS = 60

bp = Blueprint("stand_in", __name__, url_prefix="/_stand-in")


def open_data(app: Flask) -> None:
    """Open an ephemeral store in a private temporary folder, and add the stand-in's routes and hooks."""
    folder = tempfile.mkdtemp(prefix="backup-api-stand-in-")  # mode 0700
    atexit.register(shutil.rmtree, folder, True)  # should the server not stop cleanly
    configured = app.config["JWT_SECRET"]
    app.config["JWT_SECRET_KEY"] = configured or secrets.token_urlsafe(48)
    state = State()
    real = SQLiteStore(os.path.join(folder, "stand-in.db"), synchronous="OFF",
                       busy_timeout_ms=int(app.config["BUSY_TIMEOUT_MS"]))
    app.extensions["stand_in"] = state
    app.extensions["store"] = FaultyStore(real, state, folder)
    app.register_blueprint(bp)
    app.before_request(_keep_body)
    app.after_request(_journal)
    app.register_error_handler(DropConnection, _drop)
    if app.config["LOG_LEVEL"] is None:  # not set: a test suite's output wants no line per request
        app.logger.setLevel("WARNING")
    app.logger.warning(
        "STAND-IN: this server keeps nothing (a temporary database, deleted when it stops) and answers"
        " /_stand-in/ routes; never point real partners at it"
    )
    if configured is None:
        app.logger.warning("STAND-IN: no BACKUP_API_JWT_SECRET set, so tokens are signed with a random secret"
                           " nobody else knows: set one to mint tokens for your tests")


class DropConnection(Exception):
    """The events were committed; close the connection without an answer."""


class State:
    """What the stand-in's routes set and read: faults and refused requests, by partner."""

    def __init__(self):
        self._lock = threading.Lock()
        self._faults: dict[str, dict] = {}
        self._journal: dict[str, deque] = {}

    def set_fault(self, partners, fault: dict) -> None:
        with self._lock:
            for partner in partners:
                self._faults[partner] = dict(fault)

    def clear(self, partners, journal: bool = False) -> None:
        """Clear the faults of partners (and their journals, when asked)."""
        with self._lock:
            for partner in partners:
                self._faults.pop(partner, None)
                if journal:
                    self._journal.pop(partner, None)

    def clear_all(self) -> None:
        with self._lock:
            self._faults.clear()
            self._journal.clear()

    def take_fault(self, partners) -> dict | None:
        """Use up one of the faults set for any of partners (the first in sorted order); return it, or None."""
        with self._lock:
            for partner in sorted(partners):
                fault = self._faults.get(partner)
                if fault is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        del self._faults[partner]
                    return fault
        return None

    def record(self, partners, entry: dict) -> None:
        with self._lock:
            for partner in partners:
                if partner not in self._journal and len(self._journal) >= KEPT_PARTNERS:
                    del self._journal[next(iter(self._journal))]
                self._journal.setdefault(partner, deque(maxlen=KEPT_REJECTIONS)).appendleft(entry)

    def rejections(self, partner: str) -> list[dict]:
        with self._lock:
            return list(self._journal.get(partner, ()))


class FaultyStore:
    """The stand-in's store: the real SQLite store, with the faults a test set in front of add_events."""

    def __init__(self, real: SQLiteStore, state: State, folder: str):
        self._real = real
        self._state = state
        self._folder = folder

    def __getattr__(self, name):
        return getattr(self._real, name)

    @property
    def observe_commit(self):
        return self._real.observe_commit

    @observe_commit.setter
    def observe_commit(self, observe) -> None:
        self._real.observe_commit = observe

    def add_events(self, events: list[dict], sub: str) -> list[bool]:
        fault = self._state.take_fault({event["partner_id"] for event in events})
        if fault is None:
            return self._real.add_events(events, sub)
        if fault["fault"] == "503":
            raise storage.StorageError("a 503 fault set on the stand-in")
        new = self._real.add_events(events, sub)  # committed, then the answer is late or never comes
        if fault["fault"] == "delay":
            time.sleep(fault["seconds"])
            return new
        raise DropConnection()

    def forget(self, partners=None) -> None:
        """Delete every event and flag of partners (of everyone, when None)."""
        self._real.forget(partners)

    def close(self) -> None:
        self._real.close()
        shutil.rmtree(self._folder, ignore_errors=True)


# Hooks --------------------------------------------------------------------------------------


def _keep_body():
    """Keep the body as sent, for the journal (the routes read it without keeping it)."""
    request.get_data(cache=True)


def _named_partners(status: int) -> set[str]:
    """The partner_ids a request names: in its path, its query, its body and what its token was checked for."""
    named = set(g.get("partners", ()))
    if request.view_args and isinstance(request.view_args.get("partner_id"), str):
        named.add(request.view_args["partner_id"])
    named.update(request.args.getlist("partner_id"))
    if status != 413:
        try:
            body = parse_json(request.get_data(cache=True))
        except BodyError:  # not JSON, not UTF-8, nested too deep: no partner named in it
            body = None
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and isinstance(item.get("partner_id"), str):
                named.add(item["partner_id"])
    return {partner for partner in named if partner}


def _journal(response: Response) -> Response:
    """Keep each refused request (4xx, 5xx) in the journal of every partner it names."""
    if response.status_code < 400:
        return response
    entry = {
        "at": storage.rfc3339_us(storage.now_us()),
        "method": request.method,
        "path": request.full_path.rstrip("?"),
        "status": response.status_code,
        "answer": response.get_json(silent=True),
    }
    raw = b"" if response.status_code == 413 else request.get_data(cache=True)
    if len(raw) > KEPT_BODY_BYTES:
        entry["body_bytes"] = len(raw)  # what was sent; the body below is its beginning
        raw = raw[:KEPT_BODY_BYTES]
    try:
        entry["body"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["body_base64"] = base64.b64encode(raw).decode()
    current_app.extensions["stand_in"].record(_named_partners(response.status_code), entry)
    return response


def _drop(exc: DropConnection) -> Response:
    """Ask the server to close the connection without writing this answer."""
    request.environ[DROP_CONNECTION] = True
    current_app.logger.info("stand-in fault: the connection is closed without an answer")
    return Response(status=200)


# Routes -------------------------------------------------------------------------------------


class JSONNumber(fields.Field):
    """A JSON number (never a string nor a boolean), as a float, or an int when whole is True."""

    def __init__(self, whole: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.whole = whole

    def _deserialize(self, value, attr, data, **kwargs):
        # The strict reader turns every JSON number into a Decimal, and nothing else into one.
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValidationError("Must be a JSON number.")
        if self.whole:
            if value != value.to_integral_value():
                raise ValidationError("Must be a whole number.")
            return int(value)
        return float(value)


class FaultSchema(Schema):
    """The body of POST /_stand-in/faults."""

    fault = fields.String(required=True, validate=validate.OneOf(FAULTS))
    count = JSONNumber(whole=True, load_default=1, validate=validate.Range(min=1, max=MAX_FAULT_COUNT))
    seconds = JSONNumber(validate=validate.Range(min=0, max=MAX_DELAY_SECONDS, min_inclusive=False))

    class Meta:
        unknown = RAISE

    @validates_schema
    def seconds_with_delay_only(self, data, **kwargs):
        if (data.get("fault") == "delay") != ("seconds" in data):
            raise ValidationError({"seconds": ["Required with the delay fault, and with it only."]})


_fault_schema = FaultSchema()


@bp.post("/reset")
def reset():
    """Forget every event, flag, fault and journal entry of the token's partners."""
    partners = owned_partners(authenticate())
    store().forget(partners)
    current_app.extensions["stand_in"].clear(partners, journal=True)
    return ok_response()


@bp.post("/faults")
def set_faults():
    """Make the next `count` POST /player-events of the token's partners fail as `fault` says."""
    partners = owned_partners(authenticate())
    payload = read_json()
    if not isinstance(payload, dict):
        raise ValidationError({"_body": ["Must be a JSON object."]})
    fault = _fault_schema.load(payload)
    current_app.extensions["stand_in"].set_fault(partners, fault)
    return ok_response()


@bp.delete("/faults")
def clear_faults():
    """Clear the faults of the token's partners."""
    current_app.extensions["stand_in"].clear(owned_partners(authenticate()))
    return ok_response()


@bp.get("/rejections")
def rejections():
    """The most recent refused requests naming a partner, newest first."""
    claims = authenticate()
    partner_ids = request.args.getlist("partner_id")
    unknown = sorted(set(request.args) - {"partner_id"})
    if unknown or len(partner_ids) != 1 or not partner_ids[0]:
        raise ValidationError({name: ["Unknown field."] for name in unknown} or
                              {"partner_id": ["One partner_id is required."]})
    authorise(claims, partner_ids[0])
    found = current_app.extensions["stand_in"].rejections(partner_ids[0])
    return {"rejections": found, "kept": KEPT_REJECTIONS}
