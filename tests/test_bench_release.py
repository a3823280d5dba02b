"""The bench's release against release: which earlier release it serves beside this build."""

import subprocess

from bench import release


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
