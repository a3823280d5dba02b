"""Earlier releases, served beside this checkout from the same venv, so that `make bench` measures them
and HEAD under the same load in the same run.

A release is a commit: the newest tag before HEAD that serves other code than HEAD, and the commits
named in NAMED. Each is unpacked with `git archive` into a temporary folder and served from there (its
folder first on PYTHONPATH), with the packages of this checkout's venv: a release that needs a package
this venv lacks is skipped, and the bench says why.
"""

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.server import ROOT, Server

# Releases compared by name, beside the newest tag: the one issue 41 found the single-event
# regression against (2026-12-02), and the build that issue measured (that issue 38 was filed on).
NAMED = {"48d41c5": "2026-12-02", "d267d0b": "2026-12-03"}


# What a release serves: a tag whose package is HEAD's (the commits after it docs and measurements only) is
# this release, not a previous one.
SERVED = ("backup_api",)


def _git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def previous_tag(root: Path = ROOT) -> str | None:
    """The newest tag before HEAD that serves other code than HEAD: a tag on HEAD itself, or on a commit that only
    docs followed, is this release."""
    before = "HEAD"
    while True:
        try:
            tag = _git("describe", "--tags", "--abbrev=0", f"{before}^", root=root)
        except subprocess.CalledProcessError:  # no tag, or a shallow clone without the commit's parent
            return None
        if _git("diff", "--name-only", tag, "HEAD", "--", *SERVED, root=root):
            return tag
        before = tag


def releases(*named: str) -> list[tuple[str, str]]:
    """(label, commit) of the releases to compare with HEAD: the previous tag, then those of NAMED asked for
    (all of them by default) that this clone has."""
    found = []
    tag = previous_tag()
    if tag:
        found.append((tag, _git("rev-parse", "--short", f"{tag}^{{commit}}")))
    for commit in named or NAMED:
        try:
            short = _git("rev-parse", "--short", f"{commit}^{{commit}}")
        except subprocess.CalledProcessError:
            continue  # not in this clone
        if short not in {known for _, known in found}:
            found.append((f"{short} ({NAMED.get(commit, 'named')})", short))
    return found


def unpack(commit: str, folder: Path) -> Path:
    """The tree of commit, unpacked into a folder of folder's; return it."""
    tree = Path(tempfile.mkdtemp(prefix=f"release-{commit}-", dir=folder))
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def serve(tree: Path | None, database: Path, secret: str, *arguments: str) -> Server:
    """Start the release unpacked at tree (None: this checkout): `flask --app backup_api serve --port 0` with
    arguments."""
    served = Server(database, secret)
    if tree is not None:
        served.env["PYTHONPATH"] = str(tree)
    return served.start(command=[sys.executable, "-m", "flask", "--app", "backup_api", "serve", "--port", "0",
                                 *arguments], cwd=tree or ROOT)
