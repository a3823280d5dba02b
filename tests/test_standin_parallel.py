"""Parallel suites on one stand-in: pytest-xdist's workers sharing one (BACKUP_API_STAND_IN_URL), every test on the
same partner_id, each in the namespace the plugin gives it."""

import os
import secrets
import subprocess
import sys

import pytest

from backup_api import create_app
from backup_api.server import InThread
from backup_api.standin import StandInChannel
from tests.server import ROOT

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole

# Each test resets, arms a fault, posts and counts, on the same partner as every other, with pauses
# so that the two workers' tests overlap: without a world per test, one's reset and fault hit the other.
SUITE = '''
import time

import pytest


@pytest.mark.parametrize("n", range(8))
def test_a_world_of_its_own(backup_api, n):
    backup_api.reset()
    backup_api.fault("casino_alpha", "503")
    event = {"partner_id": "casino_alpha", "player_login": f"p{n}", "event_type": "bet", "amount": n,
             "event_id": "same-id-in-every-test"}
    assert backup_api.request("POST", "/player-events", event, partner_id="casino_alpha")[0] == 503
    for _ in range(3):
        time.sleep(0.05)
        assert backup_api.request("POST", "/player-events", event, partner_id="casino_alpha")[0] == 200
    assert [stored["event"]["amount"] for stored in backup_api.events("casino_alpha")] == [n]
    assert len(backup_api.requests("casino_alpha", method="POST")) == 4
    assert len(backup_api.requests("casino_alpha", outcome="duplicate")) == 2
'''


def test_two_xdist_workers_share_one_stand_in_on_the_same_partner(tmp_path):
    secret = secrets.token_urlsafe(48)
    app = create_app({"STAND_IN": True, "JWT_SECRET": secret, "LOG_LEVEL": "WARNING"})
    server = InThread(app, channel=StandInChannel)
    try:
        (tmp_path / "test_parallel.py").write_text(SUITE, encoding="utf-8")
        # This checkout is not installed, so its plugin is registered by hand; an installed wheel does it itself.
        (tmp_path / "conftest.py").write_text("from tests.helpers import register_plugin as pytest_configure\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BACKUP_API_STAND_IN_URL": server.url,
               "BACKUP_API_JWT_SECRET": secret}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "test_parallel.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "8 passed" in result.stdout
        # They did share it: every test's posts are in its journals, across namespaces.
        journal = app.extensions["stand_in"].journal
        assert len({ns for ns, partner in journal.keys() if partner == "casino_alpha"}) == 8
    finally:
        server.stop()
