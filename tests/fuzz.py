"""Run the schemathesis campaign against a real waitress process and print a one-line summary."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import SECRET
from tests.server import Server


class _Outcomes:
    """Count passed and failed operations as pytest reports them."""

    def __init__(self):
        self.passed = self.failed = 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.passed += report.passed
            self.failed += report.failed


def main() -> int:
    """Start the server, fuzz it, stop it, summarise."""
    outcomes = _Outcomes()
    with tempfile.TemporaryDirectory(prefix="backup-api-fuzz-") as folder:
        with Server(Path(folder) / "fuzz.db", SECRET) as server:
            os.environ["FUZZ_URL"] = f"http://127.0.0.1:{server.port}"
            code = pytest.main(
                ["-p", "no:cacheprovider", str(Path(__file__).with_name("fuzz_live.py"))], plugins=[outcomes]
            )
    module = next((m for name, m in sys.modules.items() if name.endswith("fuzz_live")), None)
    cases = module.CASES["count"] if module else 0
    print(
        f"fuzz: {cases} cases over {outcomes.passed + outcomes.failed} operations against waitress;"
        f" {outcomes.failed} operations failing (seed {os.environ.get('FUZZ_SEED', '1')})"
    )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
