"""An import racing the service's writes: what the service acknowledged is what stays held, on both stores."""

import json
import random
import threading

import pytest

from backup_api import loading, storage
from tests.test_restore import new_app, run

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


PLAYERS = 200_000
OLD = "2020-01-01T00:00:00.000000Z"


def name(n: int) -> str:
    """The login of player n: zero-padded, so that the file's order is the players' order too."""
    return f"p{n:06d}"


class FlagSetter(threading.Thread):
    """Sets VIP flags just ahead of a players import until stopped; keeps the players it was told were flagged."""

    def __init__(self, database, seed: int, stop: threading.Event):
        super().__init__()
        self.app = new_app(database)
        self.store = storage.get_store(self.app)
        self.random = random.Random(seed)
        self.stop = stop
        self.flagged, self.errors = [], []

    def ahead(self, at: int) -> int:
        """The first player from at that the import has not committed yet (by steps of 500)."""
        while at < PLAYERS:
            flag = self.store.get_vip("casino_alpha", name(at))
            if flag is None or flag.updated_by != "file":
                return at
            at += 500
        return at

    def run(self):
        at = 1
        try:
            while not self.stop.is_set() and at < PLAYERS:
                at = self.ahead(at)
                player = name(min(PLAYERS, at + self.random.randrange(30_000)))
                self.store.set_vip("casino_alpha", player, True, "live")
                self.flagged.append(player)
        except Exception as exc:  # noqa: BLE001 - the test says what failed
            self.errors.append(exc)
        finally:
            self.store.close()


def test_a_players_import_never_replaces_a_flag_set_meanwhile(database, tmp_path, monkeypatch):
    # The file's flags are older than any the service sets: each player flagged while the import
    # runs keeps the service's flag, whichever of the two wrote first.
    monkeypatch.setattr(loading, "worker_count", lambda: 1)  # no fork beside the writing threads
    source = tmp_path / "players.jsonl"
    with source.open("w") as out:
        for n in range(1, PLAYERS + 1):
            out.write(json.dumps({"partner_id": "casino_alpha", "player_login": name(n), "is_vip": False,
                                  "updated_at": OLD, "updated_by": "file"}) + "\n")
    app = new_app(database)
    stop = threading.Event()
    setters = [FlagSetter(database, seed, stop) for seed in range(3)]
    for setter in setters:
        setter.start()
    try:
        result = run(app, "players", "import", str(source))
    finally:
        stop.set()
        for setter in setters:
            setter.join(60)
    assert result.exit_code == 0, result.output
    assert not any(setter.errors for setter in setters), [setter.errors for setter in setters]
    flagged = {player for setter in setters for player in setter.flagged}
    assert len(flagged) > 100, "too few flags were set while the import ran to tell anything"
    store = storage.get_store(app)
    overwritten = sorted(player for player in flagged if store.get_vip("casino_alpha", player).updated_by != "live")
    assert not overwritten, f"{len(overwritten)} of {len(flagged)} flags set meanwhile were overwritten"
    imported, updated, held = (int(part.split()[-1]) for part in result.output.split(","))
    # Counted by what the statements changed: a player the service flagged first is held.
    assert imported + held == PLAYERS and updated == 0 and held <= len(flagged), result.output
    app.extensions["store"].close()
