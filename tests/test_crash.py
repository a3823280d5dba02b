"""SIGKILL under load: every acknowledged event survives, once, in order (`make soak` runs more)."""

import pytest

from tests.crash import run

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


def test_kill_9_under_load_loses_nothing(database):
    tallies = run(kills=5, database=database, seed=1, max_seconds=120)
    assert tallies["acknowledged"] > 100
    assert tallies["lost"] == 0
    assert tallies["duplicated"] == 0
    assert tallies["refused_but_stored"] == 0
    assert tallies["out_of_order"] == 0
    assert tallies["integrity"] == "ok"
