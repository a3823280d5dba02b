"""The strict JSON reader: UTF-8, no repeated key, no NaN, bounded depth, every number kept exactly as sent."""

import json
from decimal import Decimal, InvalidOperation

# Deeper than any real event needs, far below what would exhaust the interpreter's stack.
MAX_DEPTH = 64

# The exponents a number may have (its adjusted exponent: 1.5e7 has 7): those of decimal's default
# context, in which every operation on it is defined. Past them Decimal cannot hold a number at all
# (1e9999999999999999999), or some operations on it raise.
MAX_EXPONENT = 999_999


class Number(Decimal):
    """A JSON number: its exact value, and written back (str) exactly as it was sent, 1e-400 not 1E-400."""

    __slots__ = ("_text",)
    _text: str

    def __new__(cls, text: str):
        try:
            number = super().__new__(cls, text)
        except InvalidOperation:  # an exponent past what Decimal holds
            number = None
        # Only a number written with an exponent, or of a million digits, can be out of range.
        if number is None or ((len(text) > MAX_EXPONENT or "e" in text or "E" in text)
                              and not -MAX_EXPONENT <= number.adjusted() <= MAX_EXPONENT):
            shown = text if len(text) <= 40 else text[:20] + "..." + text[-10:]
            raise BodyError(f"the number {shown} is out of range: a number's exponent must lie between"
                            f" -{MAX_EXPONENT:,} and {MAX_EXPONENT:,}")
        number._text = text
        return number

    def __str__(self) -> str:
        return self._text


class BodyError(ValueError):
    """The request body is not acceptable JSON."""


class RepeatedKey(BodyError):
    """A JSON object names a key twice; key is that key."""

    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r} in a JSON object")
        self.key = key


def no_duplicates(pairs: list) -> dict:
    """Build an object, refusing (RepeatedKey) a key that appears twice: an object_pairs_hook."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str):
    """Refuse NaN and Infinity, which are not JSON."""
    raise BodyError(f"{name} is not a valid JSON value")


def _check_text(text: str) -> None:
    """Refuse a string that is not valid Unicode (a lone UTF-16 surrogate)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError("a string holds an unpaired UTF-16 surrogate") from None


def _check_depth(value) -> None:
    """Refuse nesting deeper than MAX_DEPTH."""
    # Iterative, and only containers go on the stack: this runs on every event of a batch.
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def _check_strings(value) -> None:
    """Refuse strings (keys too) that are not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


# One decoder for every parse: json.loads with these arguments builds a new one per call.
_DECODER = json.JSONDecoder(
    # Every number becomes a Number: exact, free of int()'s digit limit, kept as written.
    parse_float=Number,
    parse_int=Number,
    parse_constant=_no_constant,
    object_pairs_hook=no_duplicates,
)


def parse_json(raw: bytes):
    """Parse a request body strictly: UTF-8, no duplicate keys, numbers kept as Number (a Decimal)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_json_text(text)


def parse_json_text(text: str):
    """Parse JSON text already decoded from UTF-8, as strictly as parse_json."""
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before it decodes
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BodyError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    # Each walk only where it can find something: a lone surrogate only where an escape wrote
    # it (text decoded from UTF-8 holds none), nesting past MAX_DEPTH only with more brackets.
    if "\\u" in text:
        _check_strings(value)
    if text.count("{") + text.count("[") > MAX_DEPTH:
        _check_depth(value)
    return value
