"""The long schemathesis campaign against a live waitress server (run by `make fuzz`, not by `make test`)."""

import os

import schemathesis
from hypothesis import HealthCheck, seed, settings

from tests.test_openapi import call_and_validate

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
    call_and_validate(case, timeout=10)
