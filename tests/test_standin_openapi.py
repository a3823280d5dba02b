"""The stand-in's /openapi.json: its /_stand-in/ routes documented and fuzzed, and the answers of a post unambiguous."""

import secrets

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from backup_api import create_app, openapi
from tests.helpers import make_token

# Schemathesis collects its cases at import time: a stand-in of the module's own.
STAND_IN_SECRET = secrets.token_urlsafe(48)
stand_in_app = create_app({"STAND_IN": True, "JWT_SECRET": STAND_IN_SECRET, "LOG_LEVEL": "WARNING"})
schema = schemathesis.openapi.from_wsgi("/openapi.json", stand_in_app).include(path_regex="^/_stand-in/")


@pytest.fixture(scope="module", autouse=True)
def _close_stand_in():
    yield
    stand_in_app.extensions["store"].close()


def test_the_stand_in_documents_its_routes_and_the_service_does_not():
    document = stand_in_app.test_client().get("/openapi.json").get_json()
    validate(document)
    stand_in_paths = {path for path in document["paths"] if path.startswith("/_stand-in/")}
    assert stand_in_paths == {"/_stand-in/reset", "/_stand-in/done", "/_stand-in/faults", "/_stand-in/requests",
                              "/_stand-in/rejections", "/_stand-in/unverified"}
    assert set(document["paths"]["/_stand-in/faults"]) == {"get", "post", "delete"}
    routes = {rule.rule for rule in stand_in_app.url_map.iter_rules() if rule.rule.startswith("/_stand-in/")}
    assert routes == stand_in_paths
    assert not [path for path in openapi.document()["paths"] if path.startswith("/_stand-in")]


@pytest.mark.parametrize("stand_in", [False, True])
def test_a_posts_answer_is_exactly_one_of_ok_and_batch_ok(stand_in):
    """Strict generated clients refused every batch answer: it fitted both branches of the oneOf."""
    document = stand_in_app.test_client().get("/openapi.json").get_json() if stand_in else openapi.document()
    components = document["components"]["schemas"]
    branches = [components[ref["$ref"].rsplit("/", 1)[1]] for ref in
                document["paths"]["/player-events"]["post"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["oneOf"]]
    answers = [{"status": "ok"}, {"status": "ok", "accepted": 1, "duplicates": 0}]
    for answer in answers:
        fits = [Draft202012Validator(branch).is_valid(answer) for branch in branches]
        assert fits.count(True) == 1, (answer, fits)


def _owner_token(case) -> str:
    """A token owning the partner the case names (or one of its own), in a namespace of the fuzzer's."""
    partner = (case.query or {}).get("partner_id")
    partners = [partner] if isinstance(partner, str) and partner else ["fuzz_partner"]
    return make_token(sub="fuzzer", partners=partners, ns="fuzz", secret=STAND_IN_SECRET)


@pytest.mark.whole
@schema.parametrize()
@seed(20261203)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_fuzz_stand_in_routes(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {_owner_token(case)}"})
