"""The lines of `events export` and `players export`: written, and checked as an import reads them back.

Each line is checked as strictly as a request: the event against the catalog, the times and the
holder as the store writes them. A line exactly as the export writes it is cut apart rather than
parsed whole (the import's fast path); any other is parsed, and refused with what is wrong.
"""

import json
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal

from marshmallow import ValidationError

from backup_api.jsontext import BodyError, Number, parse_json, parse_json_text
from backup_api.schemas import (
    flag_errors,
    holder_errors,
    identifier_errors,
    is_holder,
    is_identifier,
    require_object,
    validate_event,
)
from backup_api.storage import ExportedEvent, PlayerRecord, event_row
from backup_api.storage.rows import rfc3339_us, us_of_utc
from backup_api.wire import format_event, format_player

EXPORTED_EVENT_KEYS = ("id", "received_at", "sub", "event")
EXPORTED_PLAYER_KEYS = ("partner_id", "player_login", "is_vip", "updated_at", "updated_by")
# The largest id an import keeps: the largest integer that every JSON reader holds exactly
# (JavaScript's included), and far below MAX_ROW_ID, so that new events always get higher ids.
MAX_IMPORTED_ID = 2**53 - 1
# received_at and updated_at as the store writes them: UTC, to the microsecond.
STORED_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def _keys_exactly(line: dict, keys: tuple[str, ...]) -> None:
    """Refuse a line that lacks one of keys or has another."""
    errors = {name: ["Missing data for required field."] for name in keys if name not in line}
    errors.update({name: ["Unknown field."] for name in line if name not in keys})
    if errors:
        raise ValidationError(errors)


def _stored_time(value, name: str) -> int:
    """Check a time written as the store writes it; return it in microseconds since the epoch."""
    if not isinstance(value, str) or not STORED_TIME.fullmatch(value):
        raise ValidationError({name: ["Must be a UTC time to the microsecond, e.g. 2026-11-24T05:12:03.120512Z."]})
    try:
        # Its form known, UTC: read as a naive time (no leap second: the store writes none, and
        # datetime refuses second 60 as it refuses a day that does not exist).
        return us_of_utc(value[:-1])
    except ValueError:
        raise ValidationError({name: ["Not a valid date and time."]}) from None


def _holder(value, name: str) -> str:
    """Check a token holder (sub) by the rule a token's sub meets."""
    if not is_holder(value):
        raise ValidationError({name: holder_errors(value)})
    return value


# A line exactly as `events export` writes it: the event's text can be cut out, not parsed twice.
_ESCAPE_OR_CONTROL = re.compile(rb"[\x00-\x1f\\]")
_EXPORT_LINE = re.compile(
    rb'\{"id": ([0-9]{1,19}), "received_at": "([^"]*)", "sub": ("[^"\\]*(?:\\.[^"\\]*)*"), "event": '
)


def load_exported_event(raw: bytes) -> tuple[int, int, str, dict, str | None]:
    """Check one line of `events export`; return (id, received_at in microseconds, sub, event, the event's text)."""
    match = _EXPORT_LINE.match(raw)
    if match and raw.endswith(b"}"):
        try:
            text = raw[match.end() : -1].decode("utf-8")
            sub = match[3]
            # A sub with neither an escape nor a control character is its own text (JSON would
            # refuse the control character); any other is read as JSON.
            sub = parse_json(sub) if _ESCAPE_OR_CONTROL.search(sub) else sub[1:-1].decode("utf-8")
            line = {"id": Number(match[1].decode()), "received_at": match[2].decode("utf-8"),
                    "sub": sub, "event": parse_json_text(text)}
        except (BodyError, UnicodeDecodeError):
            pass  # not the export's own form after all: the full parse below says what is wrong
        else:
            return _exported_event(line, text)
    line = parse_json(raw)
    require_object(line)
    _keys_exactly(line, EXPORTED_EVENT_KEYS)
    return _exported_event(line, None)


def load_exported_row(raw: bytes) -> tuple:
    """Check one line of `events export`; return it as an import stores it: its id and its row (content key made).

    ImportedEvent's fields as plain tuples: what the import's worker processes hand back to the one
    that writes, marshalled (marshal takes plain tuples only; pickling a NamedTuple took five times as
    long as a plain one, a tenth of an import's time).
    """
    id_, received_at, sub, event, text = load_exported_event(raw)
    return id_, tuple(event_row(event, received_at, sub, text))


def _exported_event(line: dict, text: str | None) -> tuple[int, int, str, dict, str | None]:
    """Check the fields of an exported event's line; text is the event's JSON text, written afresh when None."""
    id_ = line["id"]
    if not (isinstance(id_, Decimal) and id_ == id_.to_integral_value() and 1 <= id_ <= MAX_IMPORTED_ID):
        raise ValidationError({"id": [
            f"Must be a whole number from 1 to {MAX_IMPORTED_ID} (2**53 - 1), leaving room for new events' ids."
        ]})
    received_at = _stored_time(line["received_at"], "received_at")
    sub = _holder(line["sub"], "sub")
    try:
        event = validate_event(line["event"])
    except ValidationError as exc:
        raise ValidationError({"event": exc.messages}) from None
    return int(id_), received_at, sub, event, text


def load_exported_player(raw: bytes) -> tuple:
    """Check one line of `players export`; return PlayerRecord's fields as a plain tuple (as load_exported_row)."""
    line = parse_json(raw)
    require_object(line)
    _keys_exactly(line, EXPORTED_PLAYER_KEYS)
    # The fields' checks written out, as for events; the schemas only to word what is wrong.
    if not (is_identifier(line["partner_id"]) and is_identifier(line["player_login"])
            and type(line["is_vip"]) is bool):
        _player_errors(line)
    _stored_time(line["updated_at"], "updated_at")
    return (
        line["partner_id"],
        line["player_login"],
        line["is_vip"],
        line["updated_at"],
        _holder(line["updated_by"], "updated_by"),
    )


def _player_errors(line: dict) -> None:
    """Raise what is wrong with an exported player's identifiers and flag, as the schemas word it."""
    errors = identifier_errors({name: line[name] for name in ("partner_id", "player_login")})
    errors.update(flag_errors(line["is_vip"]))
    if errors:
        raise ValidationError(errors)


def event_lines(events: Iterable[ExportedEvent]) -> Iterator[str]:
    """Write exported events as the lines of `events export`."""
    for event in events:
        yield format_event(event.id, event.received_at, event.event, event.sub)


def player_lines(players: Iterable[PlayerRecord]) -> Iterator[str]:
    """Write VIP flags as the lines of `players export`."""
    for player in players:
        yield format_player(player)


RECEIPT_KEYS = ("erased_at", "partner_id", "player_digest", "sub", "events", "vip")


def receipt_lines(receipts: Iterable) -> Iterator[str]:
    """Write erasure receipts as the lines of `players erasures` (erased_at in the store's time form)."""
    for receipt in receipts:
        yield json.dumps({"erased_at": rfc3339_us(receipt.erased_at), "partner_id": receipt.partner_id,
                          "player_digest": receipt.player_digest, "sub": receipt.sub, "events": receipt.events,
                          "vip": receipt.vip})


def load_receipt(text: str) -> tuple:
    """Read a line of `players erasures`: (erased_at in microseconds, partner_id, digest, sub, events, vip).

    ValueError naming what is wrong, as a file of receipts is refused whole."""
    line = json.loads(text)
    if not isinstance(line, dict) or set(line) != set(RECEIPT_KEYS):
        raise ValueError(f"a receipt has exactly the keys {', '.join(RECEIPT_KEYS)}")
    try:
        erased_at = _stored_time(line["erased_at"], "erased_at")
    except ValidationError as exc:
        raise ValueError(f"erased_at: {exc.messages}") from None
    if not (isinstance(line["partner_id"], str) and line["partner_id"] and isinstance(line["sub"], str)
            and isinstance(line["player_digest"], str) and re.fullmatch("[0-9a-f]{64}", line["player_digest"])
            and type(line["events"]) is int and line["events"] >= 0 and type(line["vip"]) is bool):
        raise ValueError("a receipt's partner_id, player_digest (64 hex digits), sub, events and vip are not as"
                         " `players erasures` writes them")
    return erased_at, line["partner_id"], line["player_digest"], line["sub"], line["events"], line["vip"]
