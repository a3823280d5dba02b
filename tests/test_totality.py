"""Every number and every claim a client can send gets a 400 or a 401 naming it: never a 500, never a traceback."""

import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_api.jsontext import MAX_EXPONENT, BodyError, parse_json
from tests.helpers import SECRET, bearer, call_stand_in, make_token, stored_events, stored_players, valid_event
from tests.test_restore import run

OUT_OF_RANGE = ["1e9999999999999999999", "0e9999999999999999999", "-1e-99999999999999999999",
                "1e999999999999999999", f"1e{MAX_EXPONENT + 1}", f"2.5E-{MAX_EXPONENT + 2}"]


def _bet_with(raw: str, where: str) -> str:
    """A bet whose amount, or a metadata value, is the number written raw."""
    event = json.dumps(valid_event("bet", amount=1))
    if where == "amount":
        return event.replace('"amount": 1', f'"amount": {raw}')
    return event[:-1] + f', "metadata": {{"n": [1, {{"deep": {raw}}}]}}}}'


@pytest.mark.parametrize("raw", OUT_OF_RANGE)
def test_a_number_out_of_range_is_a_400_naming_it_on_every_body(app, client, raw):
    answers = {
        "amount": client.post("/player-events", data=_bet_with(raw, "amount"), headers=bearer(),
                              content_type="application/json"),
        "metadata": client.post("/player-events", data=_bet_with(raw, "metadata"), headers=bearer(),
                                content_type="application/json"),
        "batch": client.post("/player-events", data=f"[{_bet_with(raw, 'metadata')}]", headers=bearer(),
                             content_type="application/json"),
        "vip": client.put("/users/casino_alpha/player/p1/vip", data=f'{{"is_vip": true, "n": {raw}}}',
                          headers=bearer(), content_type="application/json"),
    }
    for where, answer in answers.items():
        assert answer.status_code == 400, (where, answer.status_code, answer.get_data(as_text=True))
        assert "out of range" in answer.get_json()["message"] and raw[:20] in answer.get_json()["message"], where
    assert stored_events(app) == [] and stored_players(app) == []


@pytest.mark.parametrize("raw", OUT_OF_RANGE[:3])
def test_a_number_out_of_range_in_the_stand_ins_fault_body_is_a_400(backup_api, raw):
    raw_body = f'{{"partner_id": "casino_alpha", "fault": "503", "count": {raw}}}'.encode()
    status, _, answer = call_stand_in(backup_api, "POST", "/_stand-in/faults", raw=raw_body)
    assert status == 400 and "out of range" in answer["message"], (status, answer)


@pytest.mark.parametrize("kind", ["events", "players"])
@pytest.mark.parametrize("raw", OUT_OF_RANGE[:3])
def test_a_number_out_of_range_in_an_import_line_is_refused_by_its_number(app, kind, raw):
    if kind == "events":
        good = json.dumps({"id": 1, "received_at": "2026-11-24T05:12:03.120512Z", "sub": "x",
                           "event": valid_event("bet", event_id="e1")})
        bad = good.replace('"id": 1', '"id": 2').replace('"e1"', '"e2"').replace('"amount": 5', f'"amount": {raw}')
    else:
        good = json.dumps({"partner_id": "casino_alpha", "player_login": "p1", "is_vip": True,
                           "updated_at": "2026-11-24T05:12:03.120512Z", "updated_by": "x"})
        bad = good.replace('"p1"', '"p2"').replace('"is_vip": true', f'"is_vip": {raw}')
    assert bad != good.replace('"p1"', '"p2"')
    result = run(app, kind, "import", "-", stdin=(good + "\n" + bad + "\n").encode())
    assert result.exit_code == 1 and result.output.startswith("Error: line 2: "), result.output
    assert "out of range" in result.output and "nothing was imported" in result.output, result.output
    assert "Traceback" not in result.output


@settings(max_examples=300, deadline=None)
@given(mantissa=st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,5})?", fullmatch=True),
       exponent=st.from_regex(r"[eE][+-]?[0-9]{1,25}", fullmatch=True))
def test_any_exponent_parses_or_is_a_body_error(mantissa, exponent):
    text = mantissa + exponent
    try:
        value = parse_json(f'{{"n": {text}}}'.encode())["n"]
    except BodyError as exc:
        assert "out of range" in str(exc)
        return
    assert str(value) == text and -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT
    value.normalize(), value.is_finite(), value >= 0, float(value)  # every use made of it is defined


HUGE = 10**400


@pytest.mark.parametrize("claims", [
    {"exp": HUGE}, {"exp": -HUGE}, {"iat": -HUGE}, {"nbf": -HUGE}, {"iat": HUGE}, {"nbf": HUGE},
    {"exp": 1e308}, {"iat": -1e308},
], ids=["exp-huge", "exp-negative", "iat-negative", "nbf-negative", "iat-huge", "nbf-huge", "exp-float",
        "iat-float"])
def test_a_time_claim_past_any_time_is_a_401_naming_it(client, claims):
    token = make_token(lifetime=None if "exp" in claims else 3600, **claims)
    answer = client.get("/player-events?partner_id=casino_alpha", headers=bearer(token))
    assert answer.status_code == 401, (answer.status_code, answer.get_data(as_text=True))
    (name,) = claims
    assert repr(name) in answer.get_json()["message"] or name in answer.get_json()["message"], answer.get_json()


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_a_time_claim_that_is_not_json_is_a_401(client, constant, name):
    header = jwt.utils.base64url_encode(b'{"alg": "HS256", "typ": "JWT"}')
    claims = {"sub": "casino_alpha", "exp": 4102444800}
    text = json.dumps(claims)[:-1] + f', "{name}": {constant}}}' if name != "exp" else (
        '{"sub": "casino_alpha", "exp": ' + constant + "}")
    payload = jwt.utils.base64url_encode(text.encode())
    signing_input = header + b"." + payload
    signature = jwt.utils.base64url_encode(jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, SECRET.encode()))
    token = (signing_input + b"." + signature).decode()
    answer = client.get("/player-events?partner_id=casino_alpha", headers=bearer(token))
    assert answer.status_code == 401, (answer.status_code, answer.get_data(as_text=True))
