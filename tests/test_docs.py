"""The README's catalog is the rule table."""

import os
import re
import subprocess
import sys

import pytest

from backup_api.schemas import EVENT_RULES
from tests.server import ROOT


def test_readme_catalog_matches_the_rule_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- catalog -->")[1].split("<!-- /catalog -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = tuple(re.findall(r"`(\w+)`", cells[1]))
    assert rows == EVENT_RULES


# The catalog as the partner reference (1.0.0) prints it, so this check runs in any checkout.
REFERENCE_CATALOG = """
game_open game_id
game_close game_id
bet amount (≥ 0)
win amount (≥ 0)
deposit amount (≥ 0)
bonus_started session_id
bonus_finished session_id
tournament_started session_id
tournament_finished session_id
big_win
complaint
session_start session_id
session_end session_id
"""


def _reference_rows(catalog: str) -> dict:
    rows = {}
    for line in catalog.strip().splitlines():
        name, *extra = line.split()
        rows[name] = tuple(word for word in extra if re.fullmatch(r"[a-z_]+", word))
    return rows


def test_reference_catalog_matches_the_rule_table():
    assert _reference_rows(REFERENCE_CATALOG) == EVENT_RULES


def test_copy_of_the_reference_catalog_is_current():
    reference = ROOT.parent / "shared" / "spec" / "game-backup-api-reference.txt"
    if not reference.exists():
        pytest.skip("the partner reference is not beside this checkout")
    text = reference.read_text(encoding="utf-8")
    catalog = text.split("event_type Extra required fields")[1].split("A missing required field")[0]
    assert catalog.strip() == REFERENCE_CATALOG.strip()


def test_the_readme_test_suite_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- test-suite-example -->")[1].split("<!-- /test-suite-example -->")[0]
    code = block.strip().removeprefix("```python").removesuffix("```")
    (tmp_path / "test_example.py").write_text(code, encoding="utf-8")
    (tmp_path / "service").symlink_to(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        # A relative path, as a user would give one: the example must not depend on the folder it runs in.
        cwd=tmp_path, env={**os.environ, "BACKUP_API_DIR": "service"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
