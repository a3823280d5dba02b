"""The stand-in's routes under /_stand-in/ (reset, faults, rejections) and its hooks: the body kept for
the journal, refused requests journaled by partner, a dropped connection.
"""

import base64
from decimal import Decimal

from flask import Blueprint, Response, current_app, g, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from backup_api import storage
from backup_api.jsontext import BodyError, parse_json
from backup_api.standin.channel import DROP_CONNECTION
from backup_api.standin.state import KEPT_BODY_BYTES, KEPT_REJECTIONS, DropConnection
from backup_api.storage import get_store
from backup_api.tokens import authenticate, authorise, owned_partners
from backup_api.wire import ok_response, read_json

FAULTS = ("503", "drop-after-commit", "delay")
MAX_FAULT_COUNT = 10_000
MAX_DELAY_SECONDS = 60

bp = Blueprint("stand_in", __name__, url_prefix="/_stand-in")


# Hooks --------------------------------------------------------------------------------------


def keep_body():
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


def journal(response: Response) -> Response:
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


def drop(exc: DropConnection) -> Response:
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
    get_store().forget(partners)
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
