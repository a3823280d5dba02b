"""The manual (README.md and docs/): its catalog is the rule table, its marked blocks run as written, and
the site builds strictly, its generated pages from the code."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backup_api.schemas import EVENT_RULES
from tests.helpers import command_in
from tests.server import ROOT

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


def test_the_manuals_catalog_matches_the_rule_table():
    table = marked("catalog")
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


MANUAL = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def marked(name: str) -> str:
    """What lies between <!-- name --> and <!-- /name --> in the one page of the manual that marks it."""
    found = [text for text in (page.read_text(encoding="utf-8") for page in MANUAL) if f"<!-- {name} -->" in text]
    assert len(found) == 1, f"{len(found)} pages of the manual mark the block {name}"
    return found[0].split(f"<!-- {name} -->")[1].split(f"<!-- /{name} -->")[0]


def docs_block(name: str) -> str:
    """The code of the manual's block marked name, without its fences."""
    return marked(name).strip().split("\n", 1)[1].removesuffix("```")


def test_the_readme_test_suite_example_runs_as_written(tmp_path):
    (tmp_path / "test_example.py").write_text(docs_block("test-suite-example"), encoding="utf-8")
    # This checkout is not installed, so its plugin is registered by hand; an installed wheel does it itself.
    (tmp_path / "conftest.py").write_text("from tests.helpers import register_plugin as pytest_configure\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def run_ci_recipe(tmp_path, *suite: str) -> tuple[subprocess.CompletedProcess, int | None]:
    """Run the README's CI recipe with suite, game-backup-api being this checkout's command; the port it served on."""
    (tmp_path / "ci-stand-in.sh").write_text(docs_block("ci-recipe"), encoding="utf-8")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    command_in(bin_folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env.update(PATH=f"{bin_folder}:{env['PATH']}", PYTHONPATH=str(ROOT))
    done = subprocess.run(["sh", "ci-stand-in.sh", *suite], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    served = re.search(r"^Serving on http://127\.0\.0\.1:(\d+)$", (tmp_path / "stand-in.log").read_text(), re.M)
    return done, served and int(served[1])


def test_the_ci_recipe_serves_a_stand_in_to_the_suite_and_stops_it(tmp_path):
    suite = 'curl -sf "$BACKUP_API_URL/healthz" && test ${#BACKUP_API_JWT_SECRET} -ge 32 && echo suite-ran'
    result, port = run_ci_recipe(tmp_path, "sh", "-c", suite)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "suite-ran" in result.stdout and port
    assert "STAND-IN" in (tmp_path / "stand-in.log").read_text()
    with pytest.raises(ConnectionRefusedError):  # the trap stopped it
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    failed, _ = run_ci_recipe(tmp_path / "bin", "false")  # a failing suite fails the script
    assert failed.returncode != 0


def test_two_copies_of_the_node_example_pass_at_once_against_one_stand_in(tmp_path):
    """Two files on the same partner_id at --test-concurrency=2: 7 of 14 failed when they shared one world."""
    if shutil.which("node") is None:
        pytest.skip("node is not on the PATH: the README's Node example was not run")
    for name in ("one", "two"):
        (tmp_path / f"{name}.test.mjs").write_text(docs_block("node-example"), encoding="utf-8")
    shutil.copy(ROOT / "clients" / "node" / "stand-in.mjs", tmp_path / "stand-in.mjs")  # as the page says
    result, _ = run_ci_recipe(tmp_path, "node", "--test", "--test-concurrency=2", "one.test.mjs", "two.test.mjs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 8" in result.stdout and "# fail 0" in result.stdout


def test_the_site_builds_strictly_with_its_generated_pages(tmp_path):
    """mkdocs build --strict, as make docs runs it: a broken link or anchor, a page left out, fails it."""
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    settings = (site / "operators" / "settings" / "index.html").read_text(encoding="utf-8")
    from backup_api import config

    for setting in config.SETTINGS:
        assert f"<code>{config.PREFIX}{setting.name}</code>" in settings
    commands = (site / "operators" / "commands" / "index.html").read_text(encoding="utf-8")
    for path in ("game-backup-api serve", "game-backup-api token issue", "game-backup-api events import",
                 "game-backup-api db restore", "game-backup-api players export"):
        assert f"<code>{path}</code>" in commands, path
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Two commands" in home and 'href="operators/install/"' in home  # the README, its links into the site


def test_the_install_pages_settings_file_and_minting_line_agree_with_the_service(tmp_path):
    """Before: `token issue` read none of the unit's EnvironmentFile, and signed with a secret of its own."""
    from tests.helpers import valid_event
    from tests.server import Server

    srv = tmp_path / "srv"
    env_file = tmp_path / "game-backup-api.env"
    env_file.write_text(docs_block("environment-file").replace("/var/lib/game-backup-api", str(srv)))
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")
    server = Server(Path(settings["BACKUP_API_DATABASE"]))
    server.env.update(settings)  # as systemd's EnvironmentFile gives them to the service
    command = command_in(tmp_path)
    mint = docs_block("mint").replace("runuser -u backup-api -- ", "").replace(
        "/opt/game-backup-api/game-backup-api", str(command)).replace("/etc/game-backup-api.env", str(env_file))
    elsewhere = tmp_path / "elsewhere"  # an operator's shell, in another folder
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env["PYTHONPATH"] = str(ROOT)
    with server:
        minted = subprocess.run(["sh", "-e", "-c", mint], cwd=elsewhere, env=env, capture_output=True, text=True,
                                timeout=60)
        assert minted.returncode == 0, minted.stderr
        status, _, body = server.request("POST", "/player-events", valid_event("bet"), token=minted.stdout.strip())
        assert status == 200, body
    assert not (elsewhere / "instance").exists()  # no database, no secret of its own


def test_the_changelog_describes_this_version_and_its_layout():
    from backup_api import storage
    from backup_api.version import __version__

    headings = re.findall(r"^## (\d+\.\d+\.\d+)(.*)$", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    version, rest = headings[0]
    assert version == __version__, "a new version without its entry in CHANGELOG.md"
    assert f"layout {storage.SCHEMA_VERSION}" in rest, "the newest entry must name the database layout it writes"


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: the manual's pages are in docs/"


def test_the_node_clients_own_tests_pass():
    """clients/node's `npm test` (node --test test/), its stand-in started from the PATH as the CI recipe does."""
    if shutil.which("node") is None:
        pytest.skip("node is not on the PATH: the Node client's tests were not run")
    with tempfile.TemporaryDirectory() as folder:
        command_in(Path(folder))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
        env.update(PATH=f"{folder}:{env['PATH']}", PYTHONPATH=str(ROOT))
        result = subprocess.run(["node", "--test", "test/"], cwd=ROOT / "clients" / "node", env=env,
                                capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "# fail 0" in result.stdout, result.stdout + result.stderr
