"""Bearer tokens: every authentication failure is 401 on both routes."""

import base64
import json
import time

import jwt
import pytest

from backup_api import tokens
from backup_api.keys import key_id
from tests.helpers import SECRET, bearer, event_lines, make_token, player_lines, valid_event

ROUTES = [
    ("post", "/player-events", valid_event("bet")),
    ("put", "/users/casino_alpha/player/player42/vip", {"is_vip": True}),
]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(alg: str) -> str:
    """A token whose header names alg, with a made-up signature."""
    claims = {"sub": "casino_alpha", "exp": int(time.time()) + 3600}
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}." + ("" if alg == "none" else "c2lnbmF0dXJl")


now = int(time.time())
BAD_HEADERS = {
    "no header": None,
    "empty": "",
    "not bearer": "Basic dXNlcjpwYXNz",
    "bearer without token": "Bearer",
    "two tokens": f"Bearer {make_token()} {make_token()}",
    "malformed": "Bearer not.a.jwt",
    "garbage": "Bearer %%%",
    "bad signature": "Bearer " + make_token(secret="another-secret-that-is-also-long-enough-xx"),
    "alg none": "Bearer " + _unsigned("none"),
    "HS512": "Bearer " + make_token(algorithm="HS512"),
    "RS256 header": "Bearer " + _unsigned("RS256"),
    "expired": "Bearer " + make_token(lifetime=-10),
    "no exp": "Bearer " + make_token(lifetime=None),
    "string exp": "Bearer " + jwt.encode({"sub": "casino_alpha", "exp": str(now + 3600)}, SECRET),
    "not yet valid (nbf)": "Bearer " + make_token(nbf=now + 3600),
    "issued in the future (iat)": "Bearer " + make_token(iat=now + 3600),
    "no sub": "Bearer " + jwt.encode({"exp": now + 3600}, SECRET),
    "numeric sub": "Bearer " + jwt.encode({"sub": 7, "exp": now + 3600}, SECRET),
    "empty sub": "Bearer " + make_token(sub=""),
    "sub with NUL": "Bearer " + make_token(sub="ops\u0000bot"),
    "sub with a newline": "Bearer " + make_token(sub="ops\nbot"),
    "partners not a list": "Bearer " + make_token(partners="casino_alpha"),
    "partners with a number": "Bearer " + make_token(partners=["casino_alpha", 3]),
    "partners with empty string": "Bearer " + make_token(partners=[""]),
}


@pytest.mark.parametrize("method,path,body", ROUTES, ids=["events", "vip"])
@pytest.mark.parametrize("case", BAD_HEADERS)
def test_authentication_failures_are_401(app, client, method, path, body, case):
    header = BAD_HEADERS[case]
    headers = {} if header is None else {"Authorization": header}
    response = getattr(client, method)(path, json=body, headers=headers)
    assert response.status_code == 401, response.get_json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["status"] == "error"
    assert response.get_json()["message"]
    assert event_lines(app.extensions["store"]) == []
    assert player_lines(app.extensions["store"]) == []


@pytest.mark.parametrize("method,path,body", ROUTES, ids=["events", "vip"])
def test_authentication_comes_before_the_body(client, method, path, body):
    response = getattr(client, method)(path, data="{not json", content_type="text/plain")
    assert response.status_code == 401


@pytest.mark.parametrize("method,path,body", ROUTES, ids=["events", "vip"])
def test_minimal_standard_token_is_accepted(client, method, path, body):
    # Only sub and exp: no type, jti or fresh claim.
    token = jwt.encode({"sub": "casino_alpha", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    response = getattr(client, method)(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize("method,path,body", ROUTES, ids=["events", "vip"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_case_insensitive(client, method, path, body, scheme):
    response = getattr(client, method)(path, json=body, headers={"Authorization": f"{scheme} {make_token()}"})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize(
    "header",
    ["bearer", "bearerx {token}", "xbearer {token}", "bearer {token} {token}", "bearer {token}, BEARER {token}"],
)
def test_a_lower_case_scheme_is_as_strict_as_the_other(client, header):
    token = make_token()
    headers = {"Authorization": header.format(token=token)}
    response = client.post("/player-events", json=valid_event("bet"), headers=headers)
    assert response.status_code == 401


def test_nbf_and_iat_in_the_past_are_fine(client):
    token = make_token(nbf=now - 10, iat=now - 10)
    response = client.post("/player-events", json=valid_event("bet"), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_remembered_token_still_expires(client):
    token = make_token(lifetime=1)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/player-events", json=valid_event("bet"), headers=headers).status_code == 200
    deadline = time.time() + 5
    while time.time() < jwt.decode(token, options={"verify_signature": False})["exp"] + 0.05 and time.time() < deadline:
        time.sleep(0.05)
    response = client.post("/player-events", json=valid_event("win"), headers=headers)
    assert response.status_code == 401
    assert "expired" in response.get_json()["message"]


def test_remembered_token_with_another_signature_is_refused(client):
    token = make_token()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/player-events", json=valid_event("bet"), headers=headers).status_code == 200
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    response = client.post("/player-events", json=valid_event("win"), headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_remembered_tokens_are_bounded(app, client):
    verified = app.extensions["verified_tokens"]
    for n in range(verified.MAX_TOKENS + 10):
        token = make_token(sub=f"holder{n}", partners=["casino_alpha"])
        response = client.post("/player-events", json=valid_event("bet", n=n), headers=bearer(token))
        assert response.status_code == 200
    assert len(verified._claims) == verified.MAX_TOKENS


def test_a_token_is_decoded_once(app, client, monkeypatch):
    token = make_token()
    decodes = []
    original = tokens.decode_token
    monkeypatch.setattr(tokens, "decode_token", lambda *a, **k: decodes.append(1) or original(*a, **k))
    for n in range(3):
        assert client.post("/player-events", json=valid_event("bet", n=n), headers=bearer(token)).status_code == 200
    assert len(decodes) == 1


# Each route with the scope it needs, and what it answers a token holding that scope.
SCOPED = [
    ("events:write", "post", "/player-events", valid_event("bet")),
    ("events:read", "get", "/player-events?partner_id=casino_alpha", None),
    ("events:read", "get", "/player-events/1", None),
    ("vip:write", "put", "/users/casino_alpha/player/p1/vip", {"is_vip": True}),
    ("vip:read", "get", "/users/casino_alpha/player/p1/vip", None),
]


@pytest.mark.parametrize("needed,method,path,body", SCOPED, ids=[f"{m} {p}" for _, m, p, _ in SCOPED])
def test_each_route_needs_its_scope_and_a_token_without_the_claim_has_all(client, needed, method, path, body):
    assert client.post("/player-events", json=valid_event("bet"), headers=bearer()).status_code == 200  # event 1
    others = " ".join(scope for scope in tokens.SCOPES if scope != needed)
    refused = getattr(client, method)(path, json=body, headers=bearer(make_token(scope=others)))
    assert refused.status_code == 403 and refused.get_json()["status"] == "error"
    assert needed in refused.get_json()["message"]
    assert refused.headers["WWW-Authenticate"] == f'Bearer error="insufficient_scope", scope="{needed}"'
    for token in (make_token(scope=needed), make_token(scope=f"unknown:thing {needed}"), make_token()):
        assert getattr(client, method)(path, json=body, headers=bearer(token)).status_code == 200


def test_a_scope_claim_that_is_not_a_string_makes_the_token_invalid(client):
    response = client.post("/player-events", json=valid_event("bet"),
                           headers=bearer(make_token(scope=["events:write"])))
    assert response.status_code == 401 and "scope" in response.get_json()["message"]


def test_a_token_living_past_the_longest_allowed_is_refused_saying_why(client):
    for lifetime in (10**30 - int(time.time()), 401 * 86400):
        response = client.post("/player-events", json=valid_event("bet"), headers=bearer(make_token(lifetime=lifetime)))
        assert response.status_code == 401
        assert "BACKUP_API_MAX_TOKEN_DAYS" in response.get_json()["message"]
    assert client.post("/player-events", json=valid_event("bet"),
                       headers=bearer(make_token(lifetime=399 * 86400))).status_code == 200


def _signed_with_repeated_keys(header: str, payload: str) -> str:
    """An HS256 token, correctly signed, whose header and payload are the JSON texts given."""
    def part(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(payload)}"
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(signing_input.encode(), SECRET.encode())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize("header,payload,named", [
    ('{"alg":"HS256","typ":"JWT"}', '{{"sub":"casino_beta","sub":"casino_alpha","exp":{exp}}}', "payload"),
    ('{"alg":"HS256","alg":"HS256"}', '{{"sub":"casino_alpha","exp":{exp}}}', "header"),
])
def test_a_token_naming_a_key_twice_is_refused(client, header, payload, named):
    token = _signed_with_repeated_keys(header, payload.format(exp=int(time.time()) + 3600))
    response = client.post("/player-events", json=valid_event("bet"), headers=bearer(token))
    assert response.status_code == 401
    assert f"the token's {named} names the key" in response.get_json()["message"]
    sound = _signed_with_repeated_keys('{"alg":"HS256"}', f'{{"sub":"casino_alpha","exp":{int(time.time()) + 60}}}')
    assert client.post("/player-events", json=valid_event("bet"), headers=bearer(sound)).status_code == 200


# Spellings of the header's separator, each read the same way by every check.
SEPARATORS = [" ", "\t", "  ", " \t "]


@pytest.mark.parametrize("separator", SEPARATORS, ids=["space", "tab", "two-spaces", "space-tab-space"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_every_spelling_of_the_header_is_checked_whole(client, separator, scheme):
    # One reading of the header for every check: what is accepted is checked everywhere.
    repeated = _signed_with_repeated_keys('{"alg":"HS256","typ":"JWT"}',
                                          f'{{"sub":"casino_beta","sub":"casino_alpha","exp":{int(time.time()) + 60}}}')
    refused = client.post("/player-events", json=valid_event("bet"),
                          headers={"Authorization": f"{scheme}{separator}{repeated}"})
    assert refused.status_code == 401 and "names the key 'sub' twice" in refused.get_json()["message"]
    sound = client.post("/player-events", json=valid_event("bet"),
                        headers={"Authorization": f"{scheme}{separator}{make_token()}"})
    assert sound.status_code == 200, sound.get_json()


@pytest.mark.parametrize("separator", SEPARATORS, ids=["space", "tab", "two-spaces", "space-tab-space"])
def test_a_previous_secrets_token_without_a_kid_verifies_whatever_the_spelling(tmp_path, separator):
    app = _app(tmp_path, JWT_SECRET=SECRET, JWT_PREVIOUS_SECRETS=OLD_SECRET)
    answer = app.test_client().post("/player-events", json=valid_event("bet"),
                                    headers={"Authorization": f"Bearer{separator}{make_token(secret=OLD_SECRET)}"})
    assert answer.status_code == 200, answer.get_json()
    app.extensions["store"].close()


@pytest.mark.parametrize("header", ["Bearer{token}", "Bearer {token},", "Bearer {token}, x",
                                    "Bearer\x0b{token}", "Bearer\u00a0{token}"])
def test_other_spellings_are_refused_everywhere(client, header):
    answer = client.post("/player-events", json=valid_event("bet"),
                         headers={"Authorization": header.format(token=make_token())})
    assert answer.status_code == 401 and "malformed bearer token" in answer.get_json()["message"]


OLD_SECRET = "the-old-secret-that-signed-every-token-until-today-0123"


def _app(tmp_path, **settings):
    from backup_api import create_app

    return create_app({"TESTING": True, "DATABASE": str(tmp_path / "k.db"), **settings})


def _posts(app, token) -> int:
    return app.test_client().post("/player-events", json=valid_event("bet", n=time.time_ns()),
                                  headers=bearer(token)).status_code


def test_minted_tokens_name_their_key_and_previous_secrets_verify_but_never_sign(tmp_path):
    old_app = _app(tmp_path, JWT_SECRET=OLD_SECRET)
    with old_app.app_context():
        old_minted = tokens.issue(["casino_alpha"], 1)
    assert jwt.get_unverified_header(old_minted)["kid"] == key_id(OLD_SECRET)
    assert OLD_SECRET not in json.dumps(jwt.get_unverified_header(old_minted))
    old_elsewhere = make_token(secret=OLD_SECRET)  # no kid: tried against each key
    new_app = _app(tmp_path, JWT_SECRET=SECRET, JWT_PREVIOUS_SECRETS=f" {OLD_SECRET} ,")
    with new_app.app_context():
        new_minted = tokens.issue(["casino_alpha"], 1)
    assert jwt.get_unverified_header(new_minted)["kid"] == key_id(SECRET)  # the new one signs
    for token in (old_minted, old_elsewhere, new_minted, make_token()):
        assert _posts(new_app, token) == 200
    assert _posts(new_app, make_token(secret="a-third-secret-nobody-here-knows-0123456789")) == 401
    retired = _app(tmp_path, JWT_SECRET=SECRET)
    assert [_posts(retired, token) for token in (old_minted, old_elsewhere, new_minted)] == [401, 401, 200]
    for app in (old_app, new_app, retired):
        app.extensions["store"].close()


def test_a_short_previous_secret_stops_the_service(tmp_path):
    from backup_api import ConfigError

    with pytest.raises(ConfigError, match="BACKUP_API_JWT_PREVIOUS_SECRETS"):
        _app(tmp_path, JWT_SECRET=SECRET, JWT_PREVIOUS_SECRETS=f"{OLD_SECRET},short")


def test_the_secret_files_rotation_keeps_old_tokens_until_retired(tmp_path):
    before = _app(tmp_path)  # the secret generated into jwt-secret
    runner = before.test_cli_runner()
    old = runner.invoke(args=["token", "issue", "casino_alpha"]).output.strip()
    rotated = runner.invoke(args=["token", "rotate-secret"])
    assert rotated.exit_code == 0 and "still verifies" in rotated.output
    assert stat_mode(tmp_path / "jwt-secret.previous") == 0o600 and stat_mode(tmp_path / "jwt-secret") == 0o600
    after = _app(tmp_path)  # a restart
    new = after.test_cli_runner().invoke(args=["token", "issue", "casino_alpha"]).output.strip()
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    assert (_posts(after, old), _posts(after, new)) == (200, 200)
    retired = after.test_cli_runner().invoke(args=["token", "retire-secrets"])
    assert retired.exit_code == 0 and "1 previous secret retired" in retired.output
    restarted = _app(tmp_path)
    assert (_posts(restarted, old), _posts(restarted, new)) == (401, 200)
    with_setting = _app(tmp_path, JWT_SECRET=SECRET).test_cli_runner().invoke(args=["token", "rotate-secret"])
    assert with_setting.exit_code == 1 and "BACKUP_API_JWT_PREVIOUS_SECRETS" in with_setting.output
    for app in (before, after, restarted):
        app.extensions["store"].close()


def stat_mode(path) -> int:
    import os
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)


def _limited(tmp_path, limit="3/minute"):
    return _app(tmp_path, JWT_SECRET=SECRET, RATE_LIMIT=limit)


def test_a_token_holder_over_its_limit_is_429_and_others_are_not(tmp_path):
    app = _limited(tmp_path)
    client = app.test_client()
    greedy = make_token(sub="greedy", partners=["casino_alpha"])
    other = make_token(sub="calm", partners=["casino_alpha"])
    answers = [client.post("/player-events", json=valid_event("bet", n=n), headers=bearer(greedy)) for n in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "Retry-After" not in answers[0].headers
    refused = answers[3]
    assert refused.get_json()["status"] == "error" and "token holder" in refused.get_json()["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert (refused.headers["RateLimit-Limit"], refused.headers["RateLimit-Remaining"]) == ("3", "0")
    # Every route counts, reads too; another holder is not slowed.
    assert client.get("/player-events?partner_id=casino_alpha", headers=bearer(greedy)).status_code == 429
    assert client.post("/player-events", json=valid_event("win"), headers=bearer(other)).status_code == 200
    app.extensions["store"].close()


def test_tokens_that_do_not_verify_are_limited_by_address(tmp_path):
    app = _limited(tmp_path)
    client = app.test_client()
    forged = make_token(secret="a-guess-at-the-secret-that-is-long-enough-0123")
    assert [client.post("/player-events", json=valid_event("bet"), headers=bearer(forged)).status_code
            for _ in range(4)] == [401, 401, 401, 429]
    assert client.post("/player-events", json=valid_event("bet")).status_code == 429  # no token: the same address
    app.extensions["store"].close()


def test_addresses_with_bad_tokens_are_counted_under_a_bounded_number_of_keys(tmp_path):
    from backup_api.ratelimit import ADDRESS_KEYS

    app = _limited(tmp_path, "5/minute;100/hour")
    client = app.test_client()
    for n in range(3 * ADDRESS_KEYS):
        address = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        client.get("/player-events?partner_id=casino_alpha", environ_base={"REMOTE_ADDR": address})
    # The memory storage walks every key it holds, every 10 ms: their number is bounded, not one an address.
    counts = app.extensions["rate_limit"]._counter.storage.storage
    assert 0 < len(counts) <= 2 * ADDRESS_KEYS
    app.extensions["store"].close()


@pytest.mark.parametrize("limit", [None, "off", "OFF"])
def test_without_a_limit_nothing_is_counted(tmp_path, limit):
    app = _limited(tmp_path, limit)
    client = app.test_client()
    assert {client.post("/player-events", json=valid_event("bet", n=n), headers=bearer()).status_code
            for n in range(20)} == {200}
    assert "rate_limit" not in app.extensions
    app.extensions["store"].close()


def test_a_limit_flask_limiter_cannot_read_stops_the_service(tmp_path):
    from backup_api import ConfigError

    with pytest.raises(ConfigError, match="BACKUP_API_RATE_LIMIT"):
        _limited(tmp_path, "lots")
