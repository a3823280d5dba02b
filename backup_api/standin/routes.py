"""The stand-in's routes under /_stand-in/ (reset, faults, rejections) and its hooks: the body kept for
the journal, refused requests journaled by partner, a dropped connection.
"""

import base64
import json

from flask import Blueprint, Request, Response, current_app, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from backup_api import record, storage
from backup_api.errors import error_response
from backup_api.jsontext import BodyError, parse_json
from backup_api.record import RequestRecord
from backup_api.schemas import require_object
from backup_api.standin.channel import DROP_CONNECTION
from backup_api.standin.faults import DropConnection, FaultSchema, InjectedFault
from backup_api.standin.hints import headers_kept, route_hint
from backup_api.standin.journal import KEPT_PER_PARTNER, KEPT_UNVERIFIED, cut
from backup_api.standin.state import namespace, owned_keys
from backup_api.storage import dumps
from backup_api.tokens import authenticate, authorise, is_helper, owned_partners, verified_claims
from backup_api.wire import ok_response, read_json

OUTCOMES = ("stored", "duplicate", "conflict", "refused")
# Refused requests GET /_stand-in/rejections answers at most.
KEPT_REJECTIONS = 100
# The orders the journal's routes list entries in: the oldest first (by default), or the newest first.
ORDERS = ("oldest", "newest")

bp = Blueprint("stand_in", __name__, url_prefix="/_stand-in")


# Hooks --------------------------------------------------------------------------------------


def keep_body():
    """Keep the body as sent, for the journal (the routes read it without keeping it)."""
    request.get_data(cache=True)


def _body_items(req: Request, seen: RequestRecord, status: int | None) -> list | None:
    """The request's body as a list of its items (one for an object), or None when it is not JSON."""
    if status == 413:
        return None
    body = seen.body  # as the route read it
    if not seen.body_read:
        try:
            body = parse_json(req.get_data(cache=True))
        except BodyError:  # not JSON, not UTF-8, nested too deep: no partner named in it
            return None
    return body if isinstance(body, list) else [body]


def _named_partners(req: Request, seen: RequestRecord, items: list | None) -> set[str]:
    """The partner_ids a request names: in its path, its query, its body and what its token was checked for."""
    named = set(seen.partners)
    if req.view_args and isinstance(req.view_args.get("partner_id"), str):
        named.add(req.view_args["partner_id"])
    if req.query_string:
        named.update(req.args.getlist("partner_id"))
    for item in items or ():
        if isinstance(item, dict) and isinstance(item.get("partner_id"), str):
            named.add(item["partner_id"])
    return {partner for partner in named if partner}


def _outcome(seen: RequestRecord, index: int, item, status: int | None) -> str:
    """What became of the index-th event of a POST /player-events: stored, duplicate, conflict or refused."""
    if seen.new is not None:
        return "stored" if seen.new[index] else "duplicate"
    held = seen.conflict  # (partner_id, event_id) held with other content
    if status == 409 and isinstance(item, dict) and (item.get("partner_id"), item.get("event_id")) == held:
        return "conflict"
    return "refused"


# What the client of a request whose connection a fault closed saw, by fault.
CONNECTION_OUTCOMES = {"reset-before-commit": "connection reset",
                       "drop-after-commit": "connection dropped after commit"}

# What the journal keeps of each event, beside its outcome.
EVENT_KEYS = ("event_type", "player_login", "event_id")


def _events_of(seen: RequestRecord, partner: str, items: list, status: int | None) -> list[tuple]:
    """The events of a POST /player-events naming partner: what became of each, and its keys (None where missing)."""
    return [
        (_outcome(seen, index, item, status), *(item.get(name) if isinstance(item.get(name), str) else None
                                                for name in EVENT_KEYS))
        for index, item in enumerate(items) if isinstance(item, dict) and item.get("partner_id") == partner
    ]


def journal_request(response: Response) -> Response:
    """Keep the request in the journal of each partner it names that its token owns (a token that did not verify:
    in the list of such requests, without its body). The stand-in's own routes are not kept."""
    # Looked up once, not per use (a proxy; Flask types it the request).
    req, seen = request._get_current_object(), record.current()  # type: ignore[attr-defined]
    if req.blueprint == "stand_in":
        return response
    # A connection fault: the client got no answer, so none is its status; the outcome says what it saw.
    dropped = bool(req.environ.get(DROP_CONNECTION))
    status = None if dropped else response.status_code
    entry = {"at": storage.now_us(), "method": req.method, "path": req.full_path.rstrip("?"), "status": status}
    if dropped:
        entry["outcome"] = CONNECTION_OUTCOMES.get(seen.fault or "", "connection closed")
    entry["answer"], entry["answer_chars"] = cut("" if response.is_streamed else response.get_data(as_text=True))
    raw = b"" if status == 413 else req.get_data(cache=True)
    entry["body_bytes"] = len(raw)
    entry["fault"] = seen.fault
    claims = seen.claims
    missed = req.url_rule is None or status == 405  # no route (or not this method): no view read the token
    if claims is None and missed:
        claims = verified_claims()
    state = current_app.extensions["stand_in"]
    if claims is None:
        state.journal.add_unverified({**entry, "events": None})
        return response
    if is_helper(claims):
        return response  # the test's own reads: not what the code under test did
    entry["headers"] = headers_kept(req, claims)
    if missed:
        entry["hint"] = route_hint(req)
    try:
        text, form = raw.decode("utf-8"), "body"
    except UnicodeDecodeError:
        text, form = base64.b64encode(raw).decode(), "body_base64"
    items = _body_items(req, seen, status)
    posted = req.method == "POST" and req.url_rule is not None and req.url_rule.rule == "/player-events"
    # A request no route took names no partner the service read: it goes to every partner its token owns.
    named = owned_partners(claims) if missed else _named_partners(req, seen, items)
    for key in sorted(key for key in owned_keys(claims) if key[1] in named):
        partner = key[1]
        mine = [item for item in items or () if isinstance(item, dict) and item.get("partner_id") == partner]
        # A batch naming other partners too: only this partner's part of it.
        body = text if items is None or len(mine) == len(items) else dumps(mine)
        kept, chars = cut(body)
        state.journal.add(key, {**entry, form: kept, "body_chars": chars,
                                "events": _events_of(seen, partner, items, status)
                                if posted and items is not None else None})
    return response


def drop(exc: DropConnection) -> Response:
    """Ask the server to close the connection without writing an answer (after a commit, or before anything)."""
    seen = record.current()
    seen.new, seen.fault = exc.new, exc.fault
    request.environ[DROP_CONNECTION] = True
    current_app.logger.info("stand-in fault %s: the connection is closed without an answer", exc.fault)
    return Response(status=200)


def injected(exc: InjectedFault) -> Response:
    """A fault answered with a status (and Retry-After, for 503 and 429), logged as a fault, not a storage failure."""
    record.current().fault = exc.fault
    current_app.logger.info("stand-in fault %s: %d answered, nothing stored", exc.fault, exc.status)
    response = error_response(exc.status, str(exc))
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# Routes -------------------------------------------------------------------------------------


_fault_schema = FaultSchema()


@bp.post("/reset")
def reset():
    """Forget every event, flag, fault and journal entry of the token's partners (in its namespace)."""
    current_app.extensions["stand_in"].reset(owned_keys(authenticate()))
    return ok_response()


@bp.post("/done")
def done():
    """The token's namespace is done with (its test ended): its world may go at once when room is needed."""
    claims = authenticate()
    current_app.extensions["stand_in"].worlds.release(claims.get("ns", ""))
    return ok_response()


@bp.post("/faults")
def arm_fault():
    """Queue a fault for the token's partners: it falls on the next `count` requests of its route naming one."""
    keys = owned_keys(authenticate())
    payload = read_json()
    require_object(payload)
    current_app.extensions["stand_in"].faults.arm(keys, _fault_schema.load(payload))
    return ok_response()


@bp.get("/faults")
def armed_faults():
    """The faults armed for the token's partners, in the order they will play, with what is left of each count."""
    return {"faults": current_app.extensions["stand_in"].faults.armed(owned_keys(authenticate()))}


@bp.delete("/faults")
def clear_faults():
    """Clear the faults of the token's partners."""
    current_app.extensions["stand_in"].faults.clear(owned_keys(authenticate()))
    return ok_response()


def _shown(entry: dict) -> dict:
    """An entry as the journal's routes answer it: the answer parsed (unless it was cut), the body as text."""
    shown = {"at": storage.rfc3339_us(entry["at"]), **{name: entry[name] for name in ("method", "path", "status")}}
    if "outcome" in entry:
        shown["outcome"] = entry["outcome"]
    if entry["events"] is not None:
        shown["events"] = [{"outcome": outcome, **{name: value for name, value in zip(EVENT_KEYS, keys, strict=True)
                                                   if value is not None}}
                           for outcome, *keys in entry["events"]]
    if entry["answer_chars"] is None:
        try:
            shown["answer"] = json.loads(entry["answer"]) if entry["answer"] else None
        except ValueError:
            shown["answer_text"] = entry["answer"]
    else:
        shown["answer_text"], shown["answer_chars"] = entry["answer"], entry["answer_chars"]
    for name in ("fault", "body", "body_base64", "body_chars", "headers", "hint"):
        if entry.get(name) is not None:
            shown[name] = entry[name]
    shown["body_bytes"] = entry["body_bytes"]
    return shown


class OrderQuery(Schema):
    """The query of GET /_stand-in/unverified, and what every journal route's query takes: the order."""

    order = fields.String(load_default="oldest", validate=validate.OneOf(ORDERS))

    class Meta:
        unknown = RAISE


class RequestsQuery(OrderQuery):
    """The query of GET /_stand-in/requests: a partner and filters."""

    partner_id = fields.String(required=True, validate=validate.Length(min=1))
    method = fields.String()
    path = fields.String()
    status = fields.Integer(validate=validate.Range(min=100, max=599))
    outcome = fields.String(validate=validate.OneOf(OUTCOMES))
    event_type = fields.String()
    player_login = fields.String()
    event_id = fields.String()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=KEPT_PER_PARTNER))


_requests_query = RequestsQuery()


def _read_query(schema: Schema) -> dict:
    """The query, checked by schema, with a token owning its partner_id (ownership first: 403 before 400)."""
    claims = authenticate()
    for partner_id in sorted(set(request.args.getlist("partner_id"))):
        if partner_id:
            authorise(claims, partner_id)
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise ValidationError({name: ["Given more than once."] for name in repeated})
    return schema.load(request.args.to_dict())


def _matches(query: dict):
    """A test of an entry against the query's filters: the request's own, and its events' (any one event)."""
    def match(entry: dict) -> bool:
        if ("method" in query and entry["method"] != query["method"].upper()
                or "path" in query and entry["path"].partition("?")[0] != query["path"]
                or "status" in query and entry["status"] != query["status"]):
            return False
        wanted = [(position, query[name]) for position, name in enumerate(("outcome", *EVENT_KEYS)) if name in query]
        return not wanted or any(all(event[position] == value for position, value in wanted)
                                 for event in entry["events"] or ())
    return match


def _ordered(entries: list[dict], order: str, kept: int) -> list[dict]:
    """The first `kept` of entries (oldest first) in the order asked for: the oldest first or the newest first."""
    return entries[:kept] if order == "oldest" else entries[::-1][:kept]


@bp.get("/requests")
def requests_made():
    """A partner's requests as filtered, oldest first (or newest); count: every match, not only those on this page."""
    query = _read_query(_requests_query)
    found = current_app.extensions["stand_in"].journal.find((namespace(), query["partner_id"]), _matches(query))
    return {"requests": [_shown(entry) for entry in _ordered(found, query["order"], query["limit"])],
            "count": len(found)}


class RejectionsQuery(OrderQuery):
    """The query of GET /_stand-in/rejections: one partner."""

    partner_id = fields.String(required=True, validate=validate.Length(min=1))


_rejections_query = RejectionsQuery()
_unverified_query = OrderQuery()


@bp.get("/rejections")
def rejections():
    """A partner's last KEPT_REJECTIONS refused requests (status 400 and above, or none), oldest first (or newest)."""
    query = _read_query(_rejections_query)
    found = current_app.extensions["stand_in"].journal.find(
        (namespace(), query["partner_id"]), lambda entry: entry["status"] is None or entry["status"] >= 400)
    last = found[-KEPT_REJECTIONS:]
    return {"rejections": [_shown(entry) for entry in _ordered(last, query["order"], KEPT_REJECTIONS)],
            "kept": KEPT_REJECTIONS}


@bp.get("/unverified")
def unverified():
    """The last requests whose token did not verify (or that had none), oldest first (or newest), without bodies."""
    query = _read_query(_unverified_query)
    found = current_app.extensions["stand_in"].journal.unverified()
    return {"requests": [_shown(entry) for entry in _ordered(found, query["order"], KEPT_UNVERIFIED)],
            "kept": KEPT_UNVERIFIED}
