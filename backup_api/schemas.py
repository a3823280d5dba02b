"""Validation: the event catalog (the rule table), the marshmallow schemas, the read query, the export lines."""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

# The event catalog: each event_type and the fields it requires beyond the three
# that every event carries. The manual, the tests and the validation read it from here.
EVENT_RULES: dict[str, tuple[str, ...]] = {
    "game_open": ("game_id",),
    "game_close": ("game_id",),
    "bet": ("amount",),
    "win": ("amount",),
    "deposit": ("amount",),
    "bonus_started": ("session_id",),
    "bonus_finished": ("session_id",),
    "tournament_started": ("session_id",),
    "tournament_finished": ("session_id",),
    "big_win": (),
    "complaint": (),
    "session_start": ("session_id",),
    "session_end": ("session_id",),
}
ALWAYS_REQUIRED = ("partner_id", "player_login", "event_type")

MAX_ID_LENGTH = 255
MAX_BATCH = 1000
# The largest finite IEEE 754 double, as JSON writes it (the reference types amount as
# "number <double>"). Its shortest form, the one the OpenAPI document's maximum carries, not its
# exact value, which is a little larger: so that the document and the check agree to the digit.
MAX_AMOUNT = Decimal(repr(float.fromhex("0x1.fffffffffffffp+1023")))

RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def microseconds(timestamp: str, leap_second: bool = True) -> int:
    """Turn an RFC 3339 timestamp into microseconds since the epoch; ValueError if it names no moment.

    A leap second (second 60, which RFC 3339 allows, at 23:59 UTC only) counts as the first second
    of the next day, so that a filter of that form orders sensibly; leap_second=False refuses one.
    """
    text = timestamp.upper().replace("Z", "+00:00")
    leap = text[17:19] == "60"
    if leap:
        text = text[:17] + "59" + text[19:]
    moment = datetime.fromisoformat(text)
    if leap:
        try:
            at = moment.astimezone(UTC)
            moment += timedelta(seconds=1)
        except OverflowError:  # at the very edge of the years 1 to 9999
            raise ValueError("date out of range") from None
        if not leap_second or (at.hour, at.minute) != (23, 59):
            raise ValueError("a leap second comes only at 23:59:60 UTC")
    return (moment - EPOCH) // timedelta(microseconds=1)


class Excludes(validate.Regexp):
    """A Regexp that refuses any character of a class: the whole string matches [^class]*.

    Its quick check searches for one such character instead, which takes a third less time than
    matching the whole string (identifiers are checked several times per event).
    """

    def __init__(self, characters: str, error: str):
        # A full match (marshmallow's Regexp anchors only at the start); the OpenAPI document reuses it.
        super().__init__(f"[^{characters}]*\\Z", error=error)
        self.search = re.compile(f"[{characters}]").search


NO_CONTROL_CHARACTERS = Excludes(r"\x00-\x1f\x7f-\x9f", error="Must not contain control characters.")


def Identifier(**kwargs) -> fields.String:
    """A non-empty string of at most 255 characters with no control characters."""
    return fields.String(
        validate=[validate.Length(min=1, max=MAX_ID_LENGTH), NO_CONTROL_CHARACTERS], **kwargs
    )


class Amount(fields.Field):
    """A JSON number, finite and at least 0, kept exactly as sent."""

    json_schema = {"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT)}

    @staticmethod
    def accepts(value) -> bool:
        """Tell whether value is an amount (quick_check reads the rule from here)."""
        # parse_json turns every JSON number into a Decimal; anything else was not a number.
        # copy_abs, not abs(): abs() rounds to 28 digits, which let 1.7976931348623157e308 + 1 by.
        return isinstance(value, Decimal) and value.is_finite() and value.copy_abs() <= MAX_AMOUNT and value >= 0

    def _deserialize(self, value, attr, data, **kwargs):
        if self.accepts(value):
            return value
        if not isinstance(value, Decimal):
            raise ValidationError("Must be a JSON number.")
        if not value.is_finite() or value.copy_abs() > MAX_AMOUNT:
            raise ValidationError("Must be a finite number.")
        raise ValidationError("Must be greater than or equal to 0.")


class Timestamp(fields.String):
    """An RFC 3339 date-time with a UTC offset, kept as the string sent."""

    json_schema = {"type": "string", "format": "date-time", "pattern": "^" + RFC3339.pattern + "$"}

    @staticmethod
    def accepts(value) -> bool:
        """Tell whether value is an RFC 3339 date-time with an offset, of a real date and time."""
        if not (isinstance(value, str) and RFC3339.fullmatch(value)):
            return False
        try:
            microseconds(value)
        except ValueError:
            return False
        return True

    def _deserialize(self, value, attr, data, **kwargs):
        if self.accepts(value):
            return value
        value = super()._deserialize(value, attr, data, **kwargs)
        if not RFC3339.fullmatch(value):
            raise ValidationError("Must be an RFC 3339 timestamp with an offset, e.g. 2026-01-31T12:00:00Z.")
        raise ValidationError("Not a valid date and time.")


class StrictBoolean(fields.Field):
    """JSON true or false and nothing else (marshmallow's Boolean takes "yes", 1 and 0)."""

    json_schema = {"type": "boolean"}

    @staticmethod
    def accepts(value) -> bool:
        return isinstance(value, bool)

    def _deserialize(self, value, attr, data, **kwargs):
        if not self.accepts(value):
            raise ValidationError("Must be true or false.")
        return value


def quick_check(field: fields.Field) -> Callable[[object], bool]:
    """The field's rule as one predicate: what its load accepts, at a fraction of the cost of calling it.

    Read from the field itself, its type and its validators, so that a rule is declared once:
    schema.load still words what is wrong, and only when this says no. test_properties holds the
    two to each other over generated events.
    """
    if hasattr(field, "accepts"):
        kind = field.accepts
    elif isinstance(field, fields.String):
        kind = str
    elif isinstance(field, fields.Dict):
        kind = dict
    else:
        raise TypeError(f"no quick check for {type(field).__name__}")
    lowest, highest, match, search, choices = 0, float("inf"), None, None, None
    for validator in field.validators:
        if isinstance(validator, validate.Length):
            lowest, highest = validator.min or 0, validator.max if validator.max is not None else highest
        elif isinstance(validator, Excludes) and search is None:
            search = validator.search
        elif isinstance(validator, validate.Regexp) and match is None:
            match = validator.regex.match
        elif isinstance(validator, validate.OneOf):
            choices = frozenset(validator.choices)
        else:
            raise TypeError(f"no quick check for the validator {type(validator).__name__}")
    if isinstance(kind, type):
        if not field.validators:
            return lambda value: isinstance(value, kind)
        # One function for the usual string: its type, its length, its patterns, its choices.
        def check(value: Any) -> bool:
            if not isinstance(value, kind):
                return False
            text: Any = value  # a str (the only kind with validators)
            return (lowest <= len(text) <= highest and (search is None or search(text) is None)
                    and (match is None or match(text) is not None) and (choices is None or text in choices))

        return check
    if field.validators:
        raise TypeError(f"no quick check for validators on {type(field).__name__}")
    return kind


class PlayerEventSchema(Schema):
    """One player event; fields not declared here are kept as sent."""

    partner_id = Identifier(required=True, metadata={"description": "Partner / casino; owned by your token."})
    player_login = Identifier(required=True, metadata={"description": "Player within the partner."})
    event_type = fields.String(
        required=True,
        validate=validate.OneOf(list(EVENT_RULES)),
        metadata={"description": "What happened; selects the extra required fields (see the catalog)."},
    )
    session_id = Identifier(metadata={"description": "Player session."})
    game_id = Identifier(metadata={"description": "Game."})
    amount = Amount(metadata={"description": "A JSON number, kept exactly as sent."})
    currency = fields.String(
        validate=validate.Regexp(r"[A-Z]{3}\Z", error="Must be an ISO 4217 code: three upper-case letters."),
        metadata={"description": "ISO 4217 currency code."},
    )
    metadata = fields.Dict(metadata={"description": "Free-form JSON object."})
    event_id = Identifier(metadata={"description": "Your id for the event: the deduplication key with partner_id."})
    occurred_at = Timestamp(metadata={"description": "When it happened: RFC 3339 with an offset."})

    class Meta:
        # Undeclared fields are validated by nothing and kept verbatim by the caller.
        unknown = EXCLUDE

    @validates_schema
    def require_catalog_fields(self, data, **kwargs):
        """Apply the catalog row of the event's type."""
        required = EVENT_RULES.get(data.get("event_type"), ())
        missing = {name: ["Missing data for required field."] for name in required if name not in data}
        if missing:
            raise ValidationError(missing)


class VipSchema(Schema):
    """The body of PUT /users/{id}/player/{player_id}/vip."""

    is_vip = StrictBoolean(required=True)

    class Meta:
        unknown = RAISE


_event_schema = PlayerEventSchema()
_vip_schema = VipSchema()
_path_field = Identifier(required=True)


def require_object(payload) -> None:
    """Refuse a body that is not a JSON object."""
    if not isinstance(payload, dict):
        raise ValidationError({"_body": ["Must be a JSON object."]})


# Each declared field's rule as a predicate, read from the field.
_QUICK_CHECKS = {name: quick_check(field) for name, field in _event_schema.fields.items()}

# An identifier's rule, for the export lines' quick checks.
is_identifier = quick_check(Identifier())

# Who wrote an event or a flag (a token's sub, recorded with it): one rule for every way in, the
# token's claim and an import line alike. No control characters, as for an identifier (and
# PostgreSQL's text holds no NUL); no length cap, since a token's sub has none.
_holder_field = fields.String(required=True, validate=[validate.Length(min=1), NO_CONTROL_CHARACTERS])
is_holder = quick_check(_holder_field)


def holder_errors(value) -> list[str]:
    """Say what is wrong with a holder (a token's sub), or [] when it may be recorded."""
    try:
        _holder_field.deserialize(value)
    except ValidationError as exc:
        return list(exc.messages)  # a field's messages: a list
    return []


# Every field an event of each type needs, as a set.
_REQUIRED = {event_type: frozenset((*ALWAYS_REQUIRED, *rules)) for event_type, rules in EVENT_RULES.items()}


def _plainly_valid(event: dict) -> bool:
    """Tell whether an event passes the schema, by quick checks of its fields and the catalog, or may not.

    The same rules as the schema's load (the fields' checks written out, the same rule table): a
    fraction of the cost of Schema.load, whose error messages are needed only when this says no.
    """
    event_type = event.get("event_type")
    required = _REQUIRED.get(event_type) if type(event_type) is str else None
    if required is None or not required <= event.keys():
        return False
    for name, value in event.items():
        check = _QUICK_CHECKS.get(name)
        if check is not None and not check(value):
            return False
    return True


def validate_event(payload) -> dict:
    """Check one event against the catalog and return it unchanged, as sent."""
    require_object(payload)
    if not _plainly_valid(payload):
        _event_schema.load(payload)  # says what is wrong (or, should it find nothing, accepts it)
    return payload


def validate_batch(payload: list) -> list[dict]:
    """Check a batch of 1 to MAX_BATCH events; errors are keyed by each event's index."""
    if not 1 <= len(payload) <= MAX_BATCH:
        raise ValidationError({"_body": [f"A batch holds 1 to {MAX_BATCH} events, not {len(payload)}."]})
    errors = {}
    for index, item in enumerate(payload):
        try:
            validate_event(item)
        except ValidationError as exc:
            errors[str(index)] = exc.messages
    if errors:
        raise ValidationError(errors)
    return payload


def identifier_errors(values: dict[str, object]) -> dict:
    """Check identifiers, keyed by the names to report them under; return what is wrong with each."""
    errors = {}
    for name, value in values.items():
        try:
            _path_field.deserialize(value)
        except ValidationError as exc:
            errors[name] = exc.messages
    return errors


def _path_errors(partner_id: str, player_login: str) -> dict:
    """Check the identifiers of a player's path (its id and player_id); return what is wrong."""
    return identifier_errors({"id": partner_id, "player_id": player_login})


def validate_partner_path(partner_id: str) -> None:
    """Check the partner's identifier of a path (its id)."""
    errors = identifier_errors({"id": partner_id})
    if errors:
        raise ValidationError(errors)


def validate_player_path(partner_id: str, player_login: str) -> None:
    """Check the identifiers of a player's path."""
    errors = _path_errors(partner_id, player_login)
    if errors:
        raise ValidationError(errors)


def flag_errors(is_vip) -> dict:
    """Check a VIP flag; return what is wrong with it (keyed is_vip)."""
    try:
        _vip_schema.load({"is_vip": is_vip})
    except ValidationError as exc:
        return exc.messages_dict
    return {}


def validate_vip(payload, partner_id: str, player_login: str) -> bool:
    """Check a VIP body and the identifiers from its path; return the flag."""
    require_object(payload)
    errors = _path_errors(partner_id, player_login)
    try:
        is_vip = _vip_schema.load(payload)["is_vip"]
    except ValidationError as exc:
        errors.update(exc.messages_dict)
    if errors:
        raise ValidationError(errors)
    return is_vip


# Reading ---------------------------------------------------------------------------------

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class PageSize(fields.Field):
    """A whole number of events from 1 to MAX_PAGE, written in decimal digits and nothing else."""

    json_schema = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}

    def _deserialize(self, value, attr, data, **kwargs):
        if not (isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value) and 1 <= int(value) <= MAX_PAGE):
            raise ValidationError(f"Must be a whole number from 1 to {MAX_PAGE}.")
        return int(value)


class EventQuerySchema(Schema):
    """The query of GET /player-events: the partner, the optional filters, the page."""

    partner_id = Identifier(required=True, metadata={"description": "Partner whose events to list; yours."})
    player_login = Identifier(metadata={"description": "Only this player's events."})
    event_type = fields.String(validate=validate.OneOf(list(EVENT_RULES)), metadata={"description": "Only this type."})
    event_id = Identifier(metadata={"description": "Only the event with this event_id."})
    received_after = Timestamp(metadata={"description": "Only events received after this time (RFC 3339)."})
    received_before = Timestamp(metadata={"description": "Only events received before this time (RFC 3339)."})
    limit = PageSize(
        load_default=DEFAULT_PAGE,
        metadata={"description": f"Events per page, 1 to {MAX_PAGE} (default {DEFAULT_PAGE})."},
    )
    after = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "The `next` cursor of the previous page."},
    )

    class Meta:
        unknown = RAISE


_query_schema = EventQuerySchema()


def _once(args: dict[str, list[str]]) -> dict[str, str]:
    """The query parameters, each given at most once (ValidationError naming those given twice)."""
    repeated = {name: ["Given more than once."] for name, values in args.items() if len(values) > 1}
    if repeated:
        raise ValidationError(repeated)
    return {name: values[0] for name, values in args.items()}


def validate_event_query(args: dict[str, list[str]]) -> dict:
    """Check the query parameters of a page read (each given at most once); return them loaded."""
    query = _query_schema.load(_once(args))
    for name in ("received_after", "received_before"):
        if name in query:
            query[name] = microseconds(query[name])
    return query


# The largest id a stored event can have (SQLite's and PostgreSQL's bigint).
MAX_ROW_ID = 2**63 - 1


# Checking the backup ---------------------------------------------------------------------

# The first and the last day a summary can name.
FIRST_DAY, LAST_DAY = "0001-01-01", "9999-12-31"
MAX_MISSING = 10_000


class Day(fields.String):
    """A UTC day of the calendar, YYYY-MM-DD."""

    json_schema = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
                return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValidationError("Must be a day of the calendar, YYYY-MM-DD.") from None
        raise ValidationError("Must be a day, YYYY-MM-DD.")


class SummaryQuerySchema(Schema):
    """The query of GET /player-events/summary: the partner, and the days (UTC, of received_at), both included."""

    partner_id = Identifier(required=True, metadata={"description": "Partner whose totals to give; yours."})
    first = Day(data_key="from", metadata={"description": "The first day (UTC), YYYY-MM-DD; none: the first held."})
    last = Day(data_key="to", metadata={"description": "The last day (UTC), YYYY-MM-DD; none: the last held."})

    class Meta:
        unknown = RAISE

    @validates_schema
    def _ordered(self, data, **kwargs):
        if "first" in data and "last" in data and data["first"] > data["last"]:
            raise ValidationError("Must not be after to.", "from")


_summary_schema = SummaryQuerySchema()


def validate_summary_query(args: dict[str, list[str]]) -> dict:
    """Check the query of a summary (each parameter at most once); return partner_id, first and last (None: open)."""
    query = _summary_schema.load(_once(args))
    return {"partner_id": query["partner_id"], "first": query.get("first"), "last": query.get("last")}


class MissingSchema(Schema):
    """The body of POST /player-events/missing."""

    partner_id = Identifier(required=True, metadata={"description": "Partner whose events to look for; yours."})
    event_ids = fields.List(
        Identifier(), required=True, validate=validate.Length(min=1, max=MAX_MISSING),
        metadata={"description": f"1 to {MAX_MISSING:,} event_ids to look for."},
    )

    class Meta:
        unknown = RAISE


_missing_schema = MissingSchema()


def validate_missing(payload) -> dict:
    """Check the body of a missing-events question; return it loaded."""
    require_object(payload)
    return _missing_schema.load(payload)
