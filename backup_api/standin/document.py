"""The stand-in's part of /openapi.json: its /_stand-in/ routes and what they take and answer, from the
same constants that check them."""

from backup_api.openapi import ERROR, OK
from backup_api.standin import faults
from backup_api.standin.journal import KEPT_BODY_BYTES, KEPT_PER_PARTNER, KEPT_UNVERIFIED
from backup_api.standin.routes import CONNECTION_OUTCOMES, ORDERS, OUTCOMES


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(operation_id: str, summary: str, ok: dict, *codes: int, **more) -> dict:
    """An operation of the stand-in: any valid token, whatever its scope, acting on the partners it owns."""
    errors = {400: "A bad body or query; `errors` names each offending field.", 401: "No valid bearer token.",
              403: "The token does not own this partner_id.", 413: "The body is over 1 MiB.",
              415: "The body was not sent as application/json.",
              429: "The faults armed at once would pass the stand-in's bound (BACKUP_API_STAND_IN_FAULTS)."}
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["stand-in"],
        "security": [{"bearerAuth": []}],
        **more,
        "responses": {
            "200": {"description": "Done.", "content": {"application/json": {"schema": ok}}},
            **{str(code): {"description": errors[code], "content": {"application/json": {"schema": ERROR}}}
               for code in codes},
        },
    }


def _query(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _partner_query() -> dict:
    return _query("partner_id", {"type": "string", "minLength": 1}, "A partner the token owns.", required=True)


def _order_query() -> dict:
    return _query("order", {"type": "string", "enum": list(ORDERS), "default": ORDERS[0]},
                  "The oldest entries first, or the newest first.")


def paths() -> dict:
    """The /_stand-in/ paths."""
    text = {"type": "string"}
    return {
        "/_stand-in/reset": {"post": _operation(
            "standInReset", "Forget every event, VIP flag, fault and journal entry of the token's partners"
            " (in its namespace)", OK, 401)},
        "/_stand-in/done": {"post": _operation(
            "standInDone", "Say the token's namespace is done with (a test ended): its world may be forgotten at once"
            " to make room, instead of a minute after its last use", OK, 401)},
        "/_stand-in/faults": {
            "post": _operation(
                "standInArmFault", "Queue a fault for the token's partners, behind those armed already", OK,
                400, 401, 413, 415, 429,
                requestBody={"required": True, "content": {"application/json": {"schema": _ref("StandInFault")}}}),
            "get": _operation("standInFaults", "The faults armed for the token's partners, in the order they play",
                              _ref("StandInFaultList"), 401),
            "delete": _operation("standInClearFaults", "Clear the faults of the token's partners", OK, 401),
        },
        "/_stand-in/requests": {"get": _operation(
            "standInRequests", "The requests made for a partner, as filtered, oldest first (or newest)",
            _ref("StandInRequestPage"), 400, 401, 403,
            parameters=[
                _partner_query(),
                _query("method", text, "An HTTP method, in any case."),
                _query("path", text, "The path, without its query."),
                _query("status", {"type": "integer", "minimum": 100, "maximum": 599}, "The status answered."),
                _query("outcome", {"type": "string", "enum": list(OUTCOMES)}, "An event's outcome."),
                _query("event_type", text, "An event's event_type."),
                _query("player_login", text, "An event's player_login."),
                _query("event_id", text, "An event's event_id."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": KEPT_PER_PARTNER, "default": 100},
                       "Entries on this page at most (count is every match)."),
                _order_query(),
            ])},
        "/_stand-in/rejections": {"get": _operation(
            "standInRejections", "The last refused requests made for a partner, oldest first (or newest)",
            _ref("StandInRejections"), 400, 401, 403, parameters=[_partner_query(), _order_query()])},
        "/_stand-in/unverified": {"get": _operation(
            "standInUnverified", "The last requests whose token did not verify, without their bodies, oldest first"
            " (or newest)", _ref("StandInUnverified"), 400, 401, parameters=[_order_query()])},
    }


def components() -> dict:
    """The schemas the /_stand-in/ paths name."""
    number = {"type": "number", "exclusiveMinimum": 0, "maximum": faults.MAX_DELAY_SECONDS}
    common = {
        "count": {"type": "integer", "minimum": 1, "maximum": faults.MAX_FAULT_COUNT, "default": 1},
        "route": {"type": "string", "enum": list(faults.ROUTES), "default": "events"},
        "probability": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    }
    seconds = {"oneOf": [number, {"type": "array", "items": number, "minItems": 2, "maxItems": 2}],
               "description": "Seconds, or a range of two, [least, most] (either order)."}
    retry_after = {"type": "integer", "minimum": 0, "maximum": faults.MAX_RETRY_AFTER,
                   "description": "The Retry-After header's seconds; default 1."}
    others = [name for name in faults.FAULTS if name not in faults.RETRIED and name != "delay"]
    # Each kind of fault with the fields it takes, and no other.
    kinds: list[tuple[dict, dict, list[str]]] = [
        ({"type": "string", "enum": list(faults.RETRIED)}, {"retry_after": retry_after}, []),
        ({"type": "string", "enum": others}, {}, []),
        ({"const": "delay"}, {"seconds": seconds}, ["seconds"])]
    fault_properties = {"fault": {"type": "string", "enum": list(faults.FAULTS)}, **common, "seconds": seconds,
                        "retry_after": retry_after}
    entry = {
        "type": "object",
        "required": ["at", "method", "path", "status", "body_bytes"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "method": {"type": "string"},
            "path": {"type": "string", "description": "With its query."},
            "status": {"type": ["integer", "null"], "description": "null: a fault closed the connection unanswered."},
            "outcome": {"type": "string", "enum": list(CONNECTION_OUTCOMES.values()),
                        "description": "What the client saw of a connection a fault closed."},
            "fault": {"type": "string", "enum": list(faults.FAULTS), "description": "The fault it met, if any."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "The request's headers; Authorization as its token's sub, jti and ns."},
            "hint": {"type": "string", "description": "A request no route took: the route it most likely meant."},
            "events": {"type": "array", "description": "A POST /player-events' events naming the partner.",
                       "items": {"type": "object", "required": ["outcome"], "properties": {
                           "outcome": {"type": "string", "enum": list(OUTCOMES)}, "event_type": {"type": "string"},
                           "player_login": {"type": "string"}, "event_id": {"type": "string"}}}},
            "answer": {"description": "The JSON answered."},
            "answer_text": {"type": "string", "description": f"The answer, cut past {KEPT_BODY_BYTES} characters."},
            "answer_chars": {"type": "integer"},
            "body": {"type": "string", "description": f"The body as sent, cut past {KEPT_BODY_BYTES} characters."},
            "body_base64": {"type": "string", "description": "The body, when it was not UTF-8."},
            "body_chars": {"type": "integer"},
            "body_bytes": {"type": "integer"},
        },
    }
    return {
        "StandInFault": {"oneOf": [{"type": "object", "required": ["fault", *required],
                                    "properties": {"fault": fault, **common, **only}, "additionalProperties": False}
                                   for fault, only, required in kinds]},
        "StandInFaultList": {"type": "object", "required": ["faults"], "properties": {"faults": {
            "type": "array", "items": {"type": "object", "required": ["partner_id", "fault", "count", "route"],
                                       "properties": {"partner_id": {"type": "string"}, **fault_properties}}}}},
        "StandInRequest": entry,
        "StandInRequestPage": {"type": "object", "required": ["requests", "count"], "properties": {
            "requests": {"type": "array", "items": _ref("StandInRequest")},
            "count": {"type": "integer", "description": "Every match, not only this page's."}}},
        "StandInRejections": {"type": "object", "required": ["rejections", "kept"], "properties": {
            "rejections": {"type": "array", "items": _ref("StandInRequest")}, "kept": {"type": "integer"}}},
        "StandInUnverified": {"type": "object", "required": ["requests", "kept"], "properties": {
            "requests": {"type": "array", "items": _ref("StandInRequest"), "maxItems": KEPT_UNVERIFIED},
            "kept": {"type": "integer"}}},
    }


def extend(document: dict) -> dict:
    """The service's document with the stand-in's routes added."""
    return {**document,
            "paths": {**document["paths"], **paths()},
            "components": {**document["components"],
                           "schemas": {**document["components"]["schemas"], **components()}}}
