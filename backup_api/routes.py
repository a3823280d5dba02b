"""The routes: every HTTP endpoint of the service, each a thin view over schemas, tokens and the store."""

from urllib.parse import unquote_to_bytes

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, NotFound

from backup_api import health, logs, metrics, record, schemas, storage
from backup_api.cursors import make_cursor, read_cursor
from backup_api.errors import error_response
from backup_api.storage import get_store, rfc3339_us
from backup_api.storage.totals import amount_text
from backup_api.tokens import authenticate, authorise, owned_partners
from backup_api.wire import format_event, ok_response, read_json

bp = Blueprint("api", __name__)


@bp.before_app_request
def refuse_urls_that_are_not_utf8():
    """Refuse a URL that is not UTF-8 once unescaped (%ff), rather than let it become U+FFFD."""
    environ = record.this_request().environ
    # The request target as sent, where the server gives it (waitress does); else WSGI's unescaped
    # path and escaped query. Each is bytes carried in latin-1.
    raw = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")
    if raw.isascii() and "%" not in raw:
        return  # nothing escaped, nothing but ASCII: UTF-8 already (every request to the routes)
    try:
        unquote_to_bytes(raw.encode("latin-1", "replace")).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the URL is not valid UTF-8 once %-escapes are undone ({exc.reason})") from None


@bp.post("/player-events")
def post_player_events():
    """Store one player event, or a batch of them (a JSON array), all or nothing."""
    claims = authenticate("events:write")
    payload = read_json()
    batch = isinstance(payload, list)
    # Ownership first: a partner_id the token does not own is 403 whatever else is wrong.
    named = [item.get("partner_id") for item in (payload if batch else [payload]) if isinstance(item, dict)]
    for partner_id in sorted({p for p in named if isinstance(p, str) and p}):
        authorise(claims, partner_id)
    events = schemas.validate_batch(payload) if batch else [schemas.validate_event(payload)]
    try:
        new = get_store().add_events(events, claims["sub"])
    except storage.EventConflict as exc:
        metrics.conflict(events, exc.partner_id, exc.event_id)
        record.current().conflict = (exc.partner_id, exc.event_id)
        raise
    record.current().new = new  # what became of each event, for the stand-in's journal
    logs.notice_stored(events, new)
    metrics.events_stored(events, new, batch)
    if batch:
        accepted = sum(new)
        return {"status": "ok", "accepted": accepted, "duplicates": len(new) - accepted}
    return ok_response()


def authorise_queried(claims: dict) -> None:
    """Ownership first: a partner_id of the query the token does not own is 403 whatever else is wrong."""
    for partner_id in sorted(set(request.args.getlist("partner_id"))):
        if partner_id:
            authorise(claims, partner_id)


@bp.get("/player-events")
def list_player_events():
    """List a partner's stored events, oldest first, a page at a time."""
    authorise_queried(authenticate("events:read"))
    query = schemas.validate_event_query(request.args.to_dict(flat=False))
    limit = query.pop("limit")
    after = read_cursor(query.pop("after", None), query)
    events, next_after = get_store().read_events(after=after, limit=limit, **query)
    # The stored JSON text of each event is spliced in as it is: every digit as it was sent.
    cursor = "null" if next_after is None else f'"{make_cursor(next_after, query)}"'
    body = '{"events": [' + ", ".join(format_event(*e) for e in events) + f'], "next": {cursor}}}'
    return Response(body, mimetype="application/json")


@bp.get("/player-events/summary")
def summarise_player_events():
    """Count a partner's events and sum their amounts exactly, by day (UTC), event_type and currency."""
    authorise_queried(authenticate("events:read"))
    query = schemas.validate_summary_query(request.args.to_dict(flat=False))
    first, last = query["first"], query["last"]
    rows = get_store().summary(query["partner_id"], first or schemas.FIRST_DAY, last or schemas.LAST_DAY)
    return {"partner_id": query["partner_id"], "from": first, "to": last, "rows": [
        {"day": row.day, "event_type": row.event_type, "currency": row.currency, "events": row.events,
         "amount": None if row.amount is None else amount_text(row.amount)} for row in rows]}


@bp.post("/player-events/missing")
def missing_player_events():
    """Say which of the event_ids given the partner holds no event of, in the order given."""
    claims = authenticate("events:read")
    payload = read_json()
    if isinstance(payload, dict) and isinstance(payload.get("partner_id"), str) and payload["partner_id"]:
        authorise(claims, payload["partner_id"])  # ownership first, as everywhere
    question = schemas.validate_missing(payload)
    return {"missing": get_store().missing(question["partner_id"], question["event_ids"])}


@bp.get(f"/player-events/<int(max={schemas.MAX_ROW_ID}):event_row_id>")
def get_player_event(event_row_id):
    """Return one stored event; 404 also when it belongs to a partner the token does not own."""
    claims = authenticate("events:read")
    found = get_store().get_event(event_row_id)
    if found is None or found.partner_id not in owned_partners(claims):
        raise NotFound(f"no stored event {event_row_id} among the partners this token owns")
    record.current().partners = {found.partner_id}
    return Response(format_event(event_row_id, found.received_at, found.event), mimetype="application/json")


@bp.get("/openapi.json")
def openapi_document():
    """Serve the OpenAPI document (no token needed)."""
    return current_app.extensions["openapi"]


@bp.get("/healthz")
def healthz():
    """Answer 200 when the database answers and can take writes, else 503 saying why (no token needed).

    Within a second, whatever the database does (health.py); 503 "stopping" while a stop drains.
    """
    checks = health.current()
    if checks.stopping.is_set():
        return error_response(503, "stopping: this process is about to stop; send to another")
    problem = checks.problem()
    if problem is not None:
        # Answered here, not by the storage error handler: a monitor polls this every second,
        # and each failed poll would log an ERROR line.
        return error_response(503, problem)
    return {"status": "ok"}


@bp.put("/users/<partner_id>/player/<player_login>/vip")
def put_vip(partner_id, player_login):
    """Set or clear a player's VIP flag."""
    claims = authenticate("vip:write")
    authorise(claims, partner_id)
    is_vip = schemas.validate_vip(read_json(), partner_id, player_login)
    get_store().set_vip(partner_id, player_login, is_vip, claims["sub"])
    return ok_response()


@bp.get("/users/<partner_id>/player/<player_login>/vip")
def get_vip(partner_id, player_login):
    """Return a player's VIP flag, when it was set and by whom (false and nulls if never set)."""
    claims = authenticate("vip:read")
    authorise(claims, partner_id)
    schemas.validate_player_path(partner_id, player_login)
    is_vip, updated_at, updated_by = get_store().get_vip(partner_id, player_login) or (False, None, None)
    return {"is_vip": is_vip, "updated_at": updated_at, "updated_by": updated_by}


@bp.delete("/users/<partner_id>/player/<player_login>")
def erase_player(partner_id, player_login):
    """Erase a player: every event of theirs and their VIP flag, in one transaction, with a receipt."""
    claims = authenticate("players:erase")
    authorise(claims, partner_id)
    schemas.validate_player_path(partner_id, player_login)
    receipt = get_store().erase_player(partner_id, player_login, claims["sub"])
    metrics.erased(receipt.events)
    return {"status": "ok", "erased_events": receipt.events, "erased_vip": receipt.vip,
            "player_digest": receipt.player_digest}


@bp.get("/users/<partner_id>/erasures")
def list_erasures(partner_id):
    """The receipts of the erasures of a partner's players, oldest first."""
    claims = authenticate("players:erase")
    authorise(claims, partner_id)
    schemas.validate_partner_path(partner_id)
    return {"erasures": [
        {"erased_at": rfc3339_us(r.erased_at), "player_digest": r.player_digest, "sub": r.sub, "events": r.events,
         "vip": r.vip} for r in get_store().erasures(partner_id)]}
