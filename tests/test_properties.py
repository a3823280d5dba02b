"""Property-based tests (Hypothesis): round trips, mutations, key order, no 5xx."""

import json
import random
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from backup_api import create_app
from backup_api.jsontext import parse_json
from backup_api.schemas import ALWAYS_REQUIRED, EVENT_RULES, MAX_AMOUNT, _event_schema, _plainly_valid
from tests.helpers import SECRET, bearer, event_lines

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# Identifier text: anything but control characters and lone surrogates.
ident = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=255)
json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
amounts = st.one_of(
    st.integers(min_value=0, max_value=10**40).map(Decimal),
    st.decimals(min_value=0, max_value=Decimal("1e300"), allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=1, places=20),
)
json_values = st.recursive(
    st.none() | st.booleans() | json_text | st.integers(-(10**30), 10**30).map(Decimal)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(json_text, children, max_size=5),
    max_leaves=25,
)
timestamps = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
SAMPLES = {"amount": amounts, "session_id": ident, "game_id": ident}
OPTIONAL = {
    "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
    "metadata": st.dictionaries(json_text, json_values, max_size=6),
    "event_id": ident,
    "occurred_at": timestamps,
    "session_id": ident,
    "game_id": ident,
    "amount": amounts,
}
DECLARED = set(ALWAYS_REQUIRED) | set(OPTIONAL)


@st.composite
def events(draw):
    """A random valid event of any type, owned by casino_alpha."""
    event_type = draw(st.sampled_from(list(EVENT_RULES)))
    event = {"partner_id": "casino_alpha", "player_login": draw(ident), "event_type": event_type}
    for name in EVENT_RULES[event_type]:
        event[name] = draw(SAMPLES[name])
    for name, strategy in OPTIONAL.items():
        if name not in event and draw(st.booleans()):
            event[name] = draw(strategy)
    extras = draw(st.dictionaries(json_text.filter(lambda k: k not in DECLARED), json_values, max_size=3))
    event.update(extras)
    keys = list(event)
    draw(st.randoms()).shuffle(keys)
    return {key: event[key] for key in keys}


def to_json(value) -> str:
    """The test's own JSON writer (numbers written exactly), independent of the store's."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


@contextmanager
def fresh_app():
    """An app on a database of its own (Hypothesis runs many examples in one test)."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"TESTING": True, "DATABASE": str(Path(folder) / "p.db"), "JWT_SECRET": SECRET})
        try:
            yield app, app.test_client()
        finally:
            app.extensions["store"].close()


def post_raw(client, raw: str):
    return client.post("/player-events", data=raw, headers=bearer(), content_type="application/json")


def exported(app) -> list[str]:
    return event_lines(app.extensions["store"])


@pytest.mark.whole
@SETTINGS
@given(event=events())
def test_valid_events_round_trip_exactly(event):
    raw = to_json(event)
    with fresh_app() as (app, client):
        response = post_raw(client, raw)
        assert response.status_code == 200, response.get_json()
        [line] = exported(app)
        # Every field, every digit: the stored text is the event as sent.
        assert line.endswith(f'"event": {raw}}}')
        assert parse_json(line.encode())["event"] == parse_json(raw.encode())


@pytest.mark.whole
@SETTINGS
@given(event=events(), seed=st.integers())
def test_resending_with_permuted_keys_stores_one_row(event, seed):
    keys = list(event)
    random.Random(seed).shuffle(keys)
    with fresh_app() as (app, client):
        assert post_raw(client, to_json(event)).status_code == 200
        assert post_raw(client, to_json({k: event[k] for k in keys})).status_code == 200
        assert len(exported(app)) == 1


# Values of the wrong JSON type for each declared field (5 is a fine amount, "5" a fine id).
WRONG_TYPES = {name: [None, True, [], {"a": 1}, Decimal(5)] for name in DECLARED}
WRONG_TYPES["amount"] = [None, True, [], {"a": 1}, "5"]
WRONG_TYPES["metadata"] = [None, True, [], Decimal(5), "5"]


@st.composite
def mutated(draw):
    """A valid event with one thing broken, and the field the error should name."""
    event = draw(events())
    kind = draw(st.sampled_from(["drop", "wrong type", "out of range", "event_type"]))
    if kind == "drop":
        field = draw(st.sampled_from([*ALWAYS_REQUIRED, *EVENT_RULES[event["event_type"]]]))
        del event[field]
    elif kind == "wrong type":
        # Not partner_id: a non-string partner_id is 400 too, but is tested on its own.
        field = draw(st.sampled_from(sorted(DECLARED - {"partner_id"})))
        event[field] = draw(st.sampled_from(WRONG_TYPES[field]))
    elif kind == "out of range":
        field = draw(st.sampled_from(["amount", "currency", "occurred_at", "player_login"]))
        event[field] = {
            "amount": draw(st.decimals(max_value=Decimal("-1e-30"), allow_nan=False, allow_infinity=False)),
            "currency": draw(st.sampled_from(["eur", "EURO", "E1R", "€UR"])),
            "occurred_at": draw(st.sampled_from(["2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "yesterday"])),
            "player_login": "x" * draw(st.integers(256, 400)),
        }[field]
    else:
        field = "event_type"
        event[field] = draw(st.sampled_from(["BET", "Bet", "jackpot", "game-open", " bet"]))
    return event, field


@pytest.mark.whole
@SETTINGS
@given(case=mutated())
def test_mutations_are_400_and_store_nothing(case):
    event, field = case
    with fresh_app() as (app, client):
        response = post_raw(client, to_json(event))
        assert response.status_code == 400
        assert field in response.get_json()["errors"]
        assert exported(app) == []


@pytest.mark.whole
@settings(max_examples=300, deadline=None, database=None)
@given(body=st.one_of(st.binary(max_size=300), json_values.map(to_json), st.text(max_size=300)))
def test_no_body_ever_gives_a_5xx(body):
    with fresh_app() as (app, client):
        for path, method in (("/player-events", client.post), ("/users/casino_alpha/player/p/vip", client.put)):
            response = method(path, data=body, headers=bearer(), content_type="application/json")
            assert response.status_code < 500
            assert response.is_json


def _schema_accepts(event) -> bool:
    """Whether marshmallow's Schema.load takes the event."""
    try:
        _event_schema.load(event)
    except ValidationError:
        return False
    return True


# Anything at all under the declared names (and event types of every JSON type).
wild_events = st.dictionaries(
    st.sampled_from(sorted(DECLARED | {"event_type"})) | json_text,
    json_values | st.sampled_from(list(EVENT_RULES)) | ident | amounts | timestamps,
    max_size=8,
)


@pytest.mark.whole
@settings(max_examples=600, deadline=None, database=None)
@given(event=st.one_of(events(), mutated().map(lambda case: case[0]), wild_events))
def test_the_quick_check_decides_as_the_schema_does(event):
    assert _plainly_valid(event) == _schema_accepts(event)



# The edges of each quick check, where a check written out could drift from its field.
EDGES = {
    "player_login": ["", "a", "a" * 255, "a" * 256, "a\x00", "a\x1f", "a\x7f", "a\x9f", "a\xa0", "\n", 5, None],
    "amount": [Decimal("0"), Decimal("-0"), Decimal("-1"), Decimal("1e-400"), MAX_AMOUNT,
               MAX_AMOUNT + Decimal("1e290"), Decimal("1e400"), "5", True, None],
    "currency": ["EUR", "eur", "EURO", "EU", "EU1", "EUR\n", 978, None],
    "metadata": [{}, {"a": [1]}, [], "x", None],
    "occurred_at": ["2026-01-31T12:00:00Z", "2026-01-31t12:00:00+01:00", "2026-02-30T12:00:00Z",
                    "2026-01-31T12:00:00", "2026-01-31T24:00:00Z", "2026-01-31T12:00:00.123456789-23:59",
                    20260131, None],
    "event_type": ["bet", "BET", "", 7, None],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, values in EDGES.items() for v in values])
def test_the_quick_check_decides_as_the_schema_does_at_the_edges(field, value):
    event = {"partner_id": "casino_alpha", "player_login": "p1", "event_type": "bet", "amount": Decimal(5),
             field: value}
    assert _plainly_valid(event) == _schema_accepts(event)


# A JSON number as a client may write it: any case of exponent, any sign, zeros kept.
number_texts = st.from_regex(r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)


@settings(max_examples=500, deadline=None, database=None)
@given(fields=st.dictionaries(json_text, st.one_of(json_text.map(to_json), number_texts, json_values.map(to_json)),
                              max_size=8), seed=st.integers())
@pytest.mark.whole
def test_the_one_go_writer_of_flat_objects_is_the_general_writer(fields, seed):
    """Stored texts and content keys must not change: flat objects written in one go as the general writer does."""
    from backup_api.storage import jsonform

    items = list(fields.items())
    random.Random(seed).shuffle(items)  # in any order, as sent
    event = parse_json(("{" + ",".join(f"{to_json(key)}:{value}" for key, value in items) + "}").encode())
    for canonical in (False, True):
        parts = []
        jsonform._write(event, parts, canonical)
        assert jsonform.dumps(event, canonical) == "".join(parts)
