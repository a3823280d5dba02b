"""The OpenAPI document: valid, true to the catalog, and fuzzed against the app with schemathesis."""

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backup_api import create_app
from backup_api.schemas import ALWAYS_REQUIRED, EVENT_RULES
from backup_api.tokens import SCOPES
from tests.helpers import SECRET, make_token
from tests.test_docs import REFERENCE_CATALOG, _reference_rows

# Schemathesis collects its cases at import time, so this app has a module-level database.
_folder = tempfile.TemporaryDirectory(prefix="backup-api-fuzz-")
fuzz_app = create_app({"TESTING": True, "DATABASE": str(Path(_folder.name) / "fuzz.db"), "JWT_SECRET": SECRET})
schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


def test_document_is_valid_openapi_3_1(client):
    document = client.get("/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_reference_catalog_row_is_a_variant_with_exactly_its_fields(client):
    components = client.get("/openapi.json").get_json()["components"]["schemas"]
    variants = [components[ref["$ref"].rsplit("/", 1)[1]] for ref in components["PlayerEvent"]["oneOf"]]
    by_type = {v["properties"]["event_type"]["const"]: set(v["required"]) for v in variants}
    expected = {t: {*ALWAYS_REQUIRED, *extra} for t, extra in _reference_rows(REFERENCE_CATALOG).items()}
    assert by_type == expected
    assert set(by_type) == set(EVENT_RULES)


def test_constraints_are_stated(client):
    document = client.get("/openapi.json").get_json()
    bet = document["components"]["schemas"]["bet_event"]["properties"]
    assert bet["amount"]["minimum"] == 0 and bet["amount"]["type"] == "number"
    assert bet["currency"]["pattern"] == "^[A-Z]{3}$"
    assert bet["partner_id"]["maxLength"] == 255 and bet["partner_id"]["minLength"] == 1
    assert bet["occurred_at"]["format"] == "date-time"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    codes = set(document["paths"]["/player-events"]["post"]["responses"])
    assert {"200", "400", "401", "403", "409", "413", "415"} <= codes


def _owner_token(case) -> str:
    """A valid token that owns the partner this case names, so that cases reach validation and storage."""
    partner = None
    if isinstance(case.body, dict):
        partner = case.body.get("partner_id")
    if case.path_parameters and isinstance(case.path_parameters.get("id"), str):
        partner = case.path_parameters["id"]
    if case.query:
        partner = case.query.get("partner_id")
    if isinstance(case.body, dict) and "event_ids" in case.body:
        partner = case.body.get("partner_id")
    partners = [partner] if isinstance(partner, str) and partner else []
    return make_token(sub="fuzzer", partners=partners, scope=" ".join(SCOPES))  # erasing too


def call_and_validate(case, **kwargs):
    """Send a case with a token owning its partner, and run every check on the answer.

    Every check but one for a case with a page cursor (after) or a summary's days (from, to): a
    cursor is a value the service signed, and a day must exist and a range be in order, which no
    schema can describe, so a made-up one is rightly refused with 400 even when it fits the
    document; what that 400 looks like is still checked.
    """
    beyond = {"after", "from", "to"} & set(case.query or {})
    excluded = [positive_data_acceptance] if beyond else []
    return case.call_and_validate(
        headers={"Authorization": f"Bearer {_owner_token(case)}"}, excluded_checks=excluded, **kwargs
    )


@pytest.mark.whole
@schema.parametrize()
@seed(20261124)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_fuzz_api(case):
    call_and_validate(case)


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_app():
    yield
    fuzz_app.extensions["store"].close()


def test_each_operation_names_the_scope_it_needs(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    needed = {(path, method): operation["security"] for path, item in paths.items()
              for method, operation in item.items() if method != "parameters"}
    assert needed == {
        ("/player-events", "post"): [{"bearerAuth": ["events:write"]}],
        ("/player-events", "get"): [{"bearerAuth": ["events:read"]}],
        ("/player-events/{id}", "get"): [{"bearerAuth": ["events:read"]}],
        ("/player-events/summary", "get"): [{"bearerAuth": ["events:read"]}],
        ("/player-events/missing", "post"): [{"bearerAuth": ["events:read"]}],
        ("/users/{id}/player/{player_id}/vip", "put"): [{"bearerAuth": ["vip:write"]}],
        ("/users/{id}/player/{player_id}/vip", "get"): [{"bearerAuth": ["vip:read"]}],
        ("/users/{id}/player/{player_id}", "delete"): [{"bearerAuth": ["players:erase"]}],
        ("/users/{id}/erasures", "get"): [{"bearerAuth": ["players:erase"]}],
        ("/healthz", "get"): [],
    }
