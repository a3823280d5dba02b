"""The benchmark's own machinery: the apps it serves beside the service, and the earlier release it compares."""

import subprocess

import pytest

from bench import release
from tests.helpers import SECRET, valid_event
from tests.server import Server


def _commit(repo, path: str, text: str, tag: str | None = None) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", f"{path}: {text}"], check=True, capture_output=True)
    if tag:
        subprocess.run([*git, "tag", tag], check=True, capture_output=True)


def test_the_previous_release_is_the_newest_tag_serving_other_code(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _commit(tmp_path, "backup_api/app.py", "1")
    assert release.previous_tag(tmp_path) is None  # no tag yet
    _commit(tmp_path, "backup_api/app.py", "2", tag="v1")
    _commit(tmp_path, "backup_api/app.py", "3", tag="v2")
    assert release.previous_tag(tmp_path) == "v1"  # a tag on HEAD is this release
    _commit(tmp_path, "README.md", "the release's numbers")
    _commit(tmp_path, "docs/measurements.md", "how they were measured")
    assert release.previous_tag(tmp_path) == "v1"  # docs after v2: v2 is still this release
    _commit(tmp_path, "backup_api/app.py", "4")
    assert release.previous_tag(tmp_path) == "v2"


@pytest.mark.parametrize("module", ["bench.baseline", "bench.floor"])
def test_the_bare_apps_are_served_as_the_service_is(tmp_path, module):
    # `make bench` serves them with the service's serve command, its waitress settings and bounds per client.
    server = Server(tmp_path / "bench.db", SECRET, module=module).start()
    try:
        status, _, answer = server.request("POST", "/player-events", valid_event("bet"))
        assert (status, answer) == (200, {"status": "ok"})
    finally:
        server.stop()
