"""What the stand-in keeps: a world per namespace, the faults (faults.py), the journal (journal.py), and
the store the routes use, which sends each call to the world of the request's token and plays the
faults armed for it.

A token's `ns` claim names its namespace; tokens without one share the default world. Each world is a
SQLite database of its own in the stand-in's temporary folder, opened on first use: its events and
VIP flags are nobody else's, and the faults and the journal are kept by (namespace, partner) too.
Past BACKUP_API_STAND_IN_NAMESPACES, the world used least recently is forgotten (the default world
never is), unless it was used within IN_USE_S: then the new namespace is refused (503), never a
running test's world taken. A new world is a copy of an empty database made at the start, and one
is kept opened ahead, in a thread of its own, so that a new namespace's first request finds it ready.
"""

import itertools
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from flask import current_app
from werkzeug.exceptions import ServiceUnavailable

from backup_api import record
from backup_api.standin.faults import DelaySlots, Faults, play
from backup_api.standin.journal import Journal
from backup_api.storage import get_store
from backup_api.storage.sqlite import SQLiteStore
from backup_api.tokens import is_helper, owned_partners

# A world used this recently (seconds) is in use: never forgotten to make room for another.
IN_USE_S = 60.0


class WorldsFull(ServiceUnavailable):
    """503: every world is in use, and a new namespace would take one of them."""
# The namespace of tokens without an `ns` claim (an `ns` claim is never empty).
DEFAULT = ""


def namespace() -> str:
    """The namespace of the request's verified token: its `ns` claim, or the default."""
    return (record.current().claims or {}).get("ns", DEFAULT)


def owned_keys(claims: dict) -> set[tuple[str, str]]:
    """The (namespace, partner) pairs a token owns: its partners in its namespace."""
    ns = claims.get("ns", DEFAULT)
    return {(ns, partner) for partner in owned_partners(claims)}


class Worlds:
    """The stores by namespace, least recently used first: opened on first use, the oldest forgotten past the bound."""

    def __init__(self, folder: str, open_store: Callable[[str], SQLiteStore], forgotten: Callable[[str], None],
                 kept: int = 100):
        self._folder = folder
        self._kept = kept  # namespaces whose worlds are kept, beside the default world
        self._used: dict[str, float] = {}  # when each world was last used (time.monotonic())
        self._open_store = open_store
        self._forgotten = forgotten
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._stores: OrderedDict[str, SQLiteStore] = OrderedDict()
        self._observe_commit = None  # handed to every world, those opened later included
        self._template = os.path.join(folder, "empty-world.template")  # an empty database: each new world a copy
        open_store(self._template).close()
        self._spare: SQLiteStore | None = None  # the next new namespace's world, opened ahead
        self._filling: threading.Thread | None = None
        self._closed = False
        self.get(DEFAULT)

    def observe_commits(self, observe) -> None:
        """Have every world, open now or opened later, call observe after each group commit (metrics)."""
        with self._lock:
            self._observe_commit = observe
            for store in self._stores.values():
                store.observe_commit = observe

    def get(self, ns: str) -> SQLiteStore:
        """The world of ns, opened now when it has none."""
        gone = []
        with self._lock:
            now = self._used[ns] = time.monotonic()
            store = self._stores.get(ns)
            if store is not None:
                self._stores.move_to_end(ns)
                return store
            while len(self._stores) >= self._kept + 1:
                oldest = next(name for name in self._stores if name != DEFAULT)
                if now - self._used[oldest] < IN_USE_S:
                    del self._used[ns]
                    raise WorldsFull(f"the stand-in keeps {self._kept} namespaces, each used within the last"
                                     f" {IN_USE_S:.0f} s: a new one would take a running test's world. Set"
                                     " BACKUP_API_STAND_IN_NAMESPACES higher, or run fewer tests at once")
                del self._used[oldest]
                gone.append((oldest, self._stores.pop(oldest)))
            store, self._spare = self._spare or self._new_world(), None
            self._stores[ns] = store
            store.observe_commit = self._observe_commit
            if self._filling is None:
                self._filling = threading.Thread(target=self._open_spare, name="stand-in-spare-world", daemon=True)
                self._filling.start()
        for oldest, old in gone:
            self._forgotten(oldest)
            self._remove(old)
        return store

    def _new_world(self) -> SQLiteStore:
        """A new, empty world: a copy of the empty database made at the start (creating the tables again for
        each world took five times longer)."""
        path = os.path.join(self._folder, f"world-{next(self._numbers)}.db")
        shutil.copyfile(self._template, path)
        return self._open_store(path)

    def _open_spare(self) -> None:
        """Open the next new namespace's world (in a thread of its own, started as the last spare is taken)."""
        spare = None
        try:  # should it fail, the next new namespace opens its own world, and meets the error itself
            spare = self._new_world()
        finally:
            with self._lock:
                self._filling = None
                if not self._closed:
                    self._spare, spare = spare, None
        if spare is not None:  # closed meanwhile
            self._remove(spare)

    def release(self, ns: str) -> None:
        """ns is done with: its world is no longer in use (the next new namespace may take its place at once)."""
        with self._lock:
            if ns in self._used and ns != DEFAULT:
                self._used[ns] = float("-inf")

    def close(self) -> None:
        """Close every world and remove the folder."""
        with self._lock:
            self._closed = True
            filling, spare, self._spare = self._filling, self._spare, None
        if filling is not None:
            filling.join()
        for store in self.each() + ([spare] if spare else []):
            store.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def each(self) -> list[SQLiteStore]:
        with self._lock:
            return list(self._stores.values())

    def forget_all(self) -> None:
        """Forget every world but the default one, and empty that one."""
        with self._lock:
            gone = [self._stores.pop(ns) for ns in list(self._stores) if ns != DEFAULT]
            default = self._stores[DEFAULT]
        for store in gone:
            self._remove(store)
        default.forget(None)

    @staticmethod
    def _remove(store: SQLiteStore) -> None:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(store.path + suffix)
            except FileNotFoundError:
                pass


class State:
    """What the stand-in's routes set and read: the worlds, the faults and the journal."""

    def __init__(self, journal_bytes: int, faults: int = 10_000):
        self.journal = Journal(journal_bytes)
        self.faults = Faults(faults)
        self._worlds: Worlds | None = None
        self._delays: DelaySlots | None = None

    def open(self, worlds: Worlds) -> None:
        """Take the worlds the store opened."""
        self._worlds = worlds

    @property
    def worlds(self) -> Worlds:
        """The worlds, opened (with the app's store) on first use."""
        if self._worlds is None:
            get_store()  # opens them
        assert self._worlds is not None
        return self._worlds

    @property
    def delays(self) -> DelaySlots:
        """The delay slots: half the server's threads (read when a delay first plays)."""
        if self._delays is None:
            self._delays = DelaySlots(max(1, int(current_app.config.get("THREADS", 8)) // 2))
        return self._delays

    def forget_namespace(self, ns: str) -> None:
        """Forget the faults and journals of ns, whose world is gone."""
        keys = {key for key in self.journal.keys() if key[0] == ns}
        self.faults.clear({key for key in self.faults.keys() if key[0] == ns} | keys)
        self.journal.clear(keys)

    def reset(self, keys: set[tuple[str, str]]) -> None:
        """Forget every event, flag, fault and journal entry of keys, all of one namespace."""
        for ns in {ns for ns, _ in keys}:
            self.worlds.get(ns).forget({partner for name, partner in keys if name == ns})
        self.faults.clear(keys)
        self.journal.clear(keys)

    def reset_all(self) -> None:
        """Forget everything, in every namespace."""
        self.worlds.forget_all()
        self.faults.clear()
        self.journal.clear()


class StandInStore:
    """The store the stand-in's routes use: each call goes to the world of the request's token, behind the faults
    armed for it (storage's other calls, such as revocations and the health check, go to the default world)."""

    def __init__(self, state: State):
        self._state = state
        self._observe_commit = None

    def __getattr__(self, name):
        return getattr(self._state.worlds.get(DEFAULT), name)

    @property
    def observe_commit(self):
        return self._observe_commit

    @observe_commit.setter
    def observe_commit(self, observe) -> None:
        self._observe_commit = observe
        self._state.worlds.observe_commits(observe)

    def _world(self) -> SQLiteStore:
        return self._state.worlds.get(namespace())

    def _fault(self, partners: set[str], route: str):
        """The fault falling on this request, of those armed for the partners it names that its token owns."""
        claims = record.current().claims or {}
        if is_helper(claims):
            return None  # the test's own reads meet no fault
        keys = {key for key in owned_keys(claims) if key[1] in partners}
        return self._state.faults.take(keys, route)

    def add_events(self, events: list[dict], sub: str) -> list[bool]:
        world = self._world()
        return play(self._fault({event["partner_id"] for event in events}, "events"),
                    lambda: world.add_events(events, sub), self._state.delays, events=True)

    def set_vip(self, partner_id, player_login, is_vip, sub):
        world = self._world()
        return play(self._fault({partner_id}, "vip"), lambda: world.set_vip(partner_id, player_login, is_vip, sub),
                    self._state.delays)

    def read_events(self, partner_id, **kwargs):
        world = self._world()
        return play(self._fault({partner_id}, "reads"), lambda: world.read_events(partner_id, **kwargs),
                    self._state.delays)

    def get_vip(self, partner_id, player_login):
        world = self._world()
        return play(self._fault({partner_id}, "reads"), lambda: world.get_vip(partner_id, player_login),
                    self._state.delays)

    def summary(self, partner_id, first_day, last_day):
        world = self._world()
        return play(self._fault({partner_id}, "reads"), lambda: world.summary(partner_id, first_day, last_day),
                    self._state.delays)

    def missing(self, partner_id, event_ids):
        world = self._world()
        return play(self._fault({partner_id}, "reads"), lambda: world.missing(partner_id, event_ids),
                    self._state.delays)

    def erase_player(self, partner_id, player_login, sub):
        return self._world().erase_player(partner_id, player_login, sub)

    def erasures(self, partner_id=None):
        return self._world().erasures(partner_id)

    def get_event(self, event_row_id):
        found = self._world().get_event(event_row_id)
        fault = None if found is None else self._fault({found.partner_id}, "reads")
        return play(fault, lambda: found, self._state.delays)

    def forget(self, partners=None) -> None:
        """Forget partners' events and flags in the request's world; None: everything, in every world."""
        if partners is None:
            self._state.reset_all()
        else:
            self._world().forget(partners)

    def close(self) -> None:
        self._state.worlds.close()
