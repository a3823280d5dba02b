"""The alerting rules the manual recommends (packaging/prometheus/alerts.yml): valid, and each firing on
what it should, for as long as it should, by promtool's own unit tests (alerts.test.yml)."""

import shutil
import subprocess

import pytest

from tests.server import ROOT

RULES = ROOT / "packaging" / "prometheus"

# make test only: an external binary (promtool, from Debian's prometheus package; .ci/run installs it).
pytestmark = [pytest.mark.whole, pytest.mark.skipif(shutil.which("promtool") is None,
                                                    reason="promtool is not on the PATH (apt-get install"
                                                    " prometheus gives it; .ci/run installs it)")]


@pytest.mark.parametrize("command", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]])
def test_promtool(command):
    done = subprocess.run(["promtool", *command], cwd=RULES, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_is_exercised_by_the_unit_tests():
    rules = (RULES / "alerts.yml").read_text()
    tests = (RULES / "alerts.test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(names) == 5 and all(f"alertname: {name}" in tests for name in names), names
