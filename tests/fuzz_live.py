"""The long schemathesis campaign against a live waitress server (run by `make fuzz`, not by `make test`)."""

import os

import schemathesis
from hypothesis import HealthCheck, seed, settings

from tests.test_openapi import _owner_token

schema = schemathesis.openapi.from_url(os.environ["FUZZ_URL"] + "/openapi.json")
CASES = {"count": 0}


@schema.parametrize()
@seed(int(os.environ.get("FUZZ_SEED", "1")))
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "4000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_fuzz_live(case):
    CASES["count"] += 1
    case.call_and_validate(headers={"Authorization": f"Bearer {_owner_token(case)}"}, timeout=10)
