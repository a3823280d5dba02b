"""The JSON form of a stored event: its exact text as sent, its canonical form, and its content key.

An event is stored as the text it was sent in, every number as written; events without an
event_id are deduplicated by the hash of their canonical form (sorted keys, normalised numbers),
so that key order, whitespace and the form of a number never make a resend look new.
"""

import hashlib
import json
from decimal import Decimal

_encode_str = json.encoder.encode_basestring  # the C encoder, no ASCII escaping


def dumps(value, canonical: bool = False) -> str:
    """Write JSON with every number exactly as parsed; canonical sorts keys and normalises numbers."""
    if type(value) is dict:
        flat = _flat_object(value, canonical)
        if flat is not None:
            return flat
    parts: list[str] = []
    _write(value, parts, canonical)
    return "".join(parts)


def _flat_object(event: dict, canonical: bool) -> str | None:
    """An object of strings and numbers only (most events) written in one go, as _write would; else None."""
    parts = []
    for key, value in sorted(event.items()) if canonical else event.items():
        if type(value) is str:
            parts.append(f"{_encode_str(key)}:{_encode_str(value)}")
        elif isinstance(value, Decimal):
            # str(): a Number's own text as sent (a format() would write it afresh)
            parts.append(f"{_encode_str(key)}:{_canonical_number(value) if canonical else str(value)}")
        else:  # a bool, null, an object, an array: the general writer
            return None
    return "{" + ",".join(parts) + "}"


def _write(value, out: list[str], canonical: bool) -> None:
    """Append the JSON text of value to out."""
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif value is None:
        out.append("null")
    elif isinstance(value, (Decimal, int)):
        out.append(_canonical_number(value) if canonical else str(value))
    elif isinstance(value, dict):
        items = sorted(value.items()) if canonical else value.items()
        out.append("{")
        for i, (key, item) in enumerate(items):
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _write(item, out, canonical)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, canonical)
        out.append("]")
    else:
        raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _canonical_number(number: Decimal | int) -> str:
    """Write a number so that 5, 5.0, 5.00 and 0.5e1 give the same text."""
    number = Decimal(number)
    if number.is_zero():
        return "0"
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # a finite number's (no NaN nor Infinity is JSON)
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    exponent += len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


KEY_BYTES = 16


def content_key(event: dict) -> bytes:
    """Hash an event's content: key order, whitespace and number form do not change it."""
    # 128 bits of SHA-256: half the disk of the full digest, and forging another event's key
    # would still take a second preimage (2**128 work); chance collisions need ~2**64 events.
    return hashlib.sha256(dumps(event, canonical=True).encode("utf-8")).digest()[:KEY_BYTES]


def parsed_content_key(event_json: str) -> bytes:
    """The content key of an event stored as JSON text (read back with exact numbers)."""
    return content_key(json.loads(event_json, parse_float=Decimal, parse_int=Decimal))
