"""The OpenAPI 3.1 document, built from the marshmallow schemas and the catalog table."""

from marshmallow import fields, validate

from backup_api import schemas

ERROR = {"$ref": "#/components/schemas/Error"}
OK = {"$ref": "#/components/schemas/Ok"}

_RESPONSES = {
    200: "Stored (or already held: resending is safe); a batch says how many of each.",
    400: "Malformed JSON, or a field is missing or invalid; `errors` names every offending field.",
    401: "No valid bearer token.",
    403: "The token does not own this partner, or lacks the scope the operation needs.",
    404: "No such event among the partners the token owns.",
    409: "This event_id is already stored with other content.",
    413: "The body is over 1 MiB.",
    415: "The body was not sent as application/json.",
    503: "The store cannot be written; nothing was stored.",
}
_READ_RESPONSES = {
    400: "A query parameter is unknown, repeated or invalid, or the cursor was not made for this query;"
    " `errors` names each.",
    503: "The store cannot be read.",
}


def _pattern(regexp: validate.Regexp) -> str:
    """Turn a marshmallow Regexp (anchored at the start, \\Z at the end) into a JSON Schema pattern."""
    return "^" + str(regexp.regex.pattern).replace("\\Z", "$")


def field_schema(field: fields.Field) -> dict:
    """Describe one marshmallow field as JSON Schema."""
    if hasattr(field, "json_schema"):  # a field of our own says what it is
        out = dict(field.json_schema)
    elif isinstance(field, fields.Dict):
        out = {"type": "object"}
    elif isinstance(field, fields.String):
        out = {"type": "string"}
    else:
        raise TypeError(f"no JSON Schema for {type(field).__name__}")
    for validator in field.validators:
        if isinstance(validator, validate.Length):
            out.update(minLength=validator.min, maxLength=validator.max)
        elif isinstance(validator, validate.OneOf):
            out["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Regexp):
            out["pattern"] = _pattern(validator)
    if "description" in field.metadata:
        out["description"] = field.metadata["description"]
    return out


def _event_variant(event_type: str, properties: dict) -> dict:
    """One row of the catalog as an object schema."""
    return {
        "type": "object",
        "title": event_type,
        "required": [*schemas.ALWAYS_REQUIRED, *schemas.EVENT_RULES[event_type]],
        "properties": {**properties, "event_type": {"type": "string", "const": event_type}},
        # Fields not declared here are accepted and kept verbatim.
        "additionalProperties": True,
    }


def _responses(*codes: int, descriptions: dict | None = None, ok: dict = OK) -> dict:
    """The documented responses of one operation: ok is the schema of its 200, descriptions override the usual."""
    descriptions = {**_RESPONSES, **(descriptions or {})}
    return {
        str(code): {
            "description": descriptions[code],
            "content": {"application/json": {"schema": ok if code == 200 else ERROR}},
        }
        for code in codes
    }


def _needs(scope: str) -> list[dict]:
    """The security of an operation: a bearer token whose scope includes scope (OpenAPI 3.1 names it a role)."""
    return [{"bearerAuth": [scope]}]


def _read(operation_id: str, summary: str, ok: str, ok_description: str, scope: str, *codes: int, **more) -> dict:
    """A GET operation that needs a token holding scope and answers the component named ok."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "security": _needs(scope),
        **more,
        "responses": _responses(
            200, *codes, ok={"$ref": f"#/components/schemas/{ok}"},
            descriptions={**_READ_RESPONSES, 200: ok_description},
        ),
    }


def _query_parameters(schema) -> list[dict]:
    """The query parameters of a GET, from the schema that checks them."""
    return [
        {
            "name": field.data_key or name,
            "in": "query",
            "required": field.required,
            "description": field.metadata.get("description", ""),
            "schema": field_schema(field),
        }
        for name, field in schema.fields.items()
    ]


def _path_parameter(name: str, description: str, schema: dict) -> dict:
    """One path parameter."""
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def document() -> dict:
    """Build the whole OpenAPI document: its paths and its components."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Aggregator Game Backup API",
            "version": "1.0.0",
            "description": "Push your players' activity and VIP flags; every event is kept once.",
        },
        "paths": _paths(),
        "components": _components(),
    }


def _paths() -> dict:
    """Each route, its parameters, its body and its answers."""
    # A path segment is an identifier that cannot hold "/".
    path_segment = {**field_schema(schemas.Identifier()), "pattern": "^[^/\\x00-\\x1f\\x7f-\\x9f]*$"}
    partner = _path_parameter("id", "partner_id; owned by your token.", path_segment)
    player = [partner, _path_parameter("player_id", "player_login within the partner.", path_segment)]
    return {
        "/player-events": {
            "post": {
                "operationId": "postPlayerEvent",
                "summary": "Ingest a player event",
                "security": _needs("events:write"),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/PlayerEvent"},
                                    {"$ref": "#/components/schemas/PlayerEventBatch"},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    **_responses(200, 400, 401, 403, 409, 413, 415, 503),
                    "200": {
                        "description": _RESPONSES[200],
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [OK, {"$ref": "#/components/schemas/BatchOk"}]}
                            }
                        },
                    },
                },
            },
            "get": _read(
                "listPlayerEvents", "List a partner's stored events, oldest first, a page at a time",
                "EventPage", "A page of events.", "events:read", 400, 401, 403, 503,
                description="Follow `next` until it is null: each matching event comes exactly once. A page"
                " may hold fewer than `limit` events, even none, and still have a `next`.",
                parameters=_query_parameters(schemas.EventQuerySchema()),
            ),
        },
        "/player-events/summary": {
            "get": _read(
                "summarisePlayerEvents", "Check the backup: events and exact amounts by day, type and currency",
                "Summary", "The partner's totals.", "events:read", 400, 401, 403, 503,
                description="Days are UTC days of received_at, from and to included. Amounts are exact decimal"
                " sums of the amounts as sent, written as strings; kept as events are stored, so as fast for"
                " years of events as for a day's.",
                parameters=_query_parameters(schemas.SummaryQuerySchema()),
            ),
        },
        "/player-events/missing": {
            "post": {
                "operationId": "findMissingPlayerEvents",
                "summary": "Check the backup: which of these event_ids are not held",
                "security": _needs("events:read"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MissingQuestion"}}},
                },
                "responses": _responses(200, 400, 401, 403, 413, 415, 503,
                                        ok={"$ref": "#/components/schemas/MissingAnswer"},
                                        descriptions={200: "The event_ids not held, in the order given."}),
            },
        },
        "/player-events/{id}": {
            "get": _read(
                "getPlayerEvent", "One stored event", "StoredEvent", "The stored event.", "events:read",
                401, 403, 404, 503,
                parameters=[
                    _path_parameter(
                        "id", "The event's id, as a page or an export gives it.",
                        {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ROW_ID},
                    )
                ],
            ),
        },
        "/users/{id}/player/{player_id}/vip": {
            "parameters": player,
            "put": {
                "operationId": "setPlayerVip",
                "summary": "Set VIP status for a player",
                "security": _needs("vip:write"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VipUpdate"}}},
                },
                "responses": _responses(200, 400, 401, 403, 413, 415, 503),
            },
            "get": _read(
                "getPlayerVip", "A player's VIP flag, when it was set and by whom", "VipStatus",
                "The flag; a player never flagged is false, with nulls.", "vip:read", 400, 401, 403, 503,
            ),
        },
        "/users/{id}/player/{player_id}": {
            "parameters": player,
            "delete": {
                "operationId": "erasePlayer",
                "summary": "Erase a player: every event of theirs and their VIP flag, with a receipt",
                "description": "One transaction. Needs a token whose scope names players:erase (a token without a"
                " scope claim does not have it). Nothing held is no error: zeros.",
                "security": _needs("players:erase"),
                "responses": _responses(200, 400, 401, 403, 503, ok={"$ref": "#/components/schemas/Erased"},
                                        descriptions={200: "What was erased, and the receipt's digest."}),
            },
        },
        "/users/{id}/erasures": {
            "get": _read(
                "listErasures", "The receipts of a partner's erasures, oldest first", "Erasures",
                "The receipts.", "players:erase", 400, 401, 403, 503,
                parameters=[partner],
            ),
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the service and its database answer",
                "security": [],
                "responses": {
                    "200": {"description": "Healthy.", "content": {"application/json": {"schema": OK}}},
                    "503": {"description": "The database does not answer, or cannot take writes; `message`"
                            " says why.",
                            "content": {"application/json": {"schema": ERROR}}},
                },
            }
        },
    }


def _components() -> dict:
    """The security scheme and the schemas the paths refer to, the event's variants read from the rule table."""
    event_fields = schemas.PlayerEventSchema().fields
    properties = {name: field_schema(field) for name, field in event_fields.items()}
    variants = {f"{t}_event": _event_variant(t, properties) for t in schemas.EVENT_RULES}
    return {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "HS256 JWT with sub, exp and optionally partners and scope (see the manual: Tokens)."
                " Scopes: events:write (POST /player-events), events:read (GET /player-events,"
                " /player-events/{id}), vip:write (PUT .../vip), vip:read (GET .../vip); a token without the"
                " scope claim holds all four. Lacking the one an operation needs: 403, WWW-Authenticate:"
                " Bearer error=\"insufficient_scope\".",
            }
        },
        "schemas": {
            "Ok": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "ok"}},
                # Nothing more: a batch's answer is a BatchOk, never also an Ok.
                "additionalProperties": False,
            },
            "Error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {"const": "error"},
                    "message": {"type": "string"},
                    "errors": {"type": "object", "description": "Offending fields and what is wrong with each."},
                },
            },
            "PlayerEvent": {
                "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in variants],
                "discriminator": {
                    "propertyName": "event_type",
                    "mapping": {t: f"#/components/schemas/{t}_event" for t in schemas.EVENT_RULES},
                },
            },
            "PlayerEventBatch": {
                "type": "array",
                "description": "A backfill: all events are stored, or none.",
                "items": {"$ref": "#/components/schemas/PlayerEvent"},
                "minItems": 1,
                "maxItems": schemas.MAX_BATCH,
            },
            "BatchOk": {
                "type": "object",
                "required": ["status", "accepted", "duplicates"],
                "properties": {
                    "status": {"const": "ok"},
                    "accepted": {"type": "integer", "minimum": 0, "description": "New events stored."},
                    "duplicates": {"type": "integer", "minimum": 0, "description": "Events already held."},
                },
                "additionalProperties": False,
            },
            **variants,
            "StoredEvent": {
                "type": "object",
                "required": ["id", "received_at", "event"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "description": "The store's id: ascending."},
                    "received_at": {"type": "string", "format": "date-time", "description": "UTC, to the µs."},
                    "event": {"type": "object", "description": "The event exactly as sent."},
                },
            },
            "EventPage": {
                "type": "object",
                "required": ["events", "next"],
                "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                    "next": {
                        "type": ["string", "null"],
                        "description": "Pass as `after` for the next page; null on the last page.",
                    },
                },
            },
            "Summary": {
                "type": "object",
                "required": ["partner_id", "from", "to", "rows"],
                "properties": {
                    "partner_id": {"type": "string"},
                    "from": {"type": ["string", "null"], "format": "date"},
                    "to": {"type": ["string", "null"], "format": "date"},
                    "rows": {"type": "array", "items": {"$ref": "#/components/schemas/SummaryRow"},
                             "description": "One row per (day, event_type, currency) holding events, in that order."},
                },
            },
            "SummaryRow": {
                "type": "object",
                "required": ["day", "event_type", "currency", "events", "amount"],
                "properties": {
                    "day": {"type": "string", "format": "date", "description": "A UTC day of received_at."},
                    "event_type": {"type": "string", "enum": list(schemas.EVENT_RULES)},
                    "currency": {"type": ["string", "null"], "description": "null: the events carry none."},
                    "events": {"type": "integer", "minimum": 1},
                    "amount": {"type": ["string", "null"], "pattern": "^[0-9]+(\\.[0-9]+)?$",
                               "description": "The exact sum of the amounts, in plain decimal notation; null"
                               " where none of the events carries one."},
                },
            },
            "MissingQuestion": {
                "type": "object",
                "required": ["partner_id", "event_ids"],
                "properties": {
                    "partner_id": field_schema(schemas.Identifier()),
                    "event_ids": {"type": "array", "items": field_schema(schemas.Identifier()), "minItems": 1,
                                  "maxItems": schemas.MAX_MISSING},
                },
                "additionalProperties": False,
            },
            "MissingAnswer": {
                "type": "object",
                "required": ["missing"],
                "properties": {"missing": {"type": "array", "items": {"type": "string"}}},
            },
            "Erased": {
                "type": "object",
                "required": ["status", "erased_events", "erased_vip", "player_digest"],
                "properties": {
                    "status": {"const": "ok"},
                    "erased_events": {"type": "integer", "minimum": 0},
                    "erased_vip": {"type": "boolean"},
                    "player_digest": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                      "description": "How the receipt names the player: a salted SHA-256."},
                },
            },
            "Erasures": {
                "type": "object",
                "required": ["erasures"],
                "properties": {"erasures": {"type": "array", "items": {
                    "type": "object",
                    "required": ["erased_at", "player_digest", "sub", "events", "vip"],
                    "properties": {
                        "erased_at": {"type": "string", "format": "date-time"},
                        "player_digest": {"type": "string"},
                        "sub": {"type": "string", "description": "Who asked: a token's sub, or command."},
                        "events": {"type": "integer", "minimum": 0},
                        "vip": {"type": "boolean"},
                    },
                }}},
            },
            "VipStatus": {
                "type": "object",
                "required": ["is_vip", "updated_at", "updated_by"],
                "properties": {
                    "is_vip": {"type": "boolean"},
                    "updated_at": {"type": ["string", "null"], "format": "date-time"},
                    "updated_by": {"type": ["string", "null"], "description": "The token sub that set it."},
                },
            },
            "VipUpdate": {
                "type": "object",
                "required": ["is_vip"],
                "properties": {name: field_schema(f) for name, f in schemas.VipSchema().fields.items()},
                "additionalProperties": False,
            },
        },
    }
