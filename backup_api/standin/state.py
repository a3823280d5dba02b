"""What the stand-in keeps beside its store: faults by partner, the journal (journal.py), and the store
that plays the faults.
"""

import shutil
import threading
import time

from backup_api import storage
from backup_api.standin.journal import Journal
from backup_api.storage.sqlite import SQLiteStore


class DropConnection(Exception):
    """The events were committed (new says of each whether it was new); close the connection without an answer."""

    def __init__(self, new: list[bool]):
        super().__init__("drop-after-commit")
        self.new = new


class InjectedFault(storage.StorageError):
    """A 503 fault a test set: answered as an outage is, but logged as what it is."""


class State:
    """What the stand-in's routes set and read: faults by partner, and the journal."""

    def __init__(self, journal_bytes: int):
        self._lock = threading.Lock()
        self._faults: dict[str, dict] = {}
        self.journal = Journal(journal_bytes)

    def set_fault(self, partners, fault: dict) -> None:
        with self._lock:
            for partner in partners:
                self._faults[partner] = dict(fault)

    def clear(self, partners, journal: bool = False) -> None:
        """Clear the faults of partners (and their journals, when asked)."""
        with self._lock:
            for partner in partners:
                self._faults.pop(partner, None)
        if journal:
            self.journal.clear(partners)

    def clear_all(self) -> None:
        with self._lock:
            self._faults.clear()
        self.journal.clear()

    def take_fault(self, partners) -> dict | None:
        """Use up one of the faults set for any of partners (the first in sorted order); return it, or None."""
        with self._lock:
            for partner in sorted(partners):
                fault = self._faults.get(partner)
                if fault is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        del self._faults[partner]
                    return fault
        return None


class FaultyStore:
    """The stand-in's store: the real SQLite store, with the faults a test set in front of add_events."""

    def __init__(self, real: SQLiteStore, state: State, folder: str):
        self._real = real
        self._state = state
        self._folder = folder

    def __getattr__(self, name):
        return getattr(self._real, name)

    @property
    def observe_commit(self):
        return self._real.observe_commit

    @observe_commit.setter
    def observe_commit(self, observe) -> None:
        self._real.observe_commit = observe

    def add_events(self, events: list[dict], sub: str) -> list[bool]:
        fault = self._state.take_fault({event["partner_id"] for event in events})
        if fault is None:
            return self._real.add_events(events, sub)
        if fault["fault"] == "503":
            raise InjectedFault("a 503 fault set on the stand-in")
        new = self._real.add_events(events, sub)  # committed, then the answer is late or never comes
        if fault["fault"] == "delay":
            time.sleep(fault["seconds"])
            return new
        raise DropConnection(new)

    def forget(self, partners=None) -> None:
        """Delete every event and flag of partners (of everyone, when None)."""
        self._real.forget(partners)

    def close(self) -> None:
        self._real.close()
        shutil.rmtree(self._folder, ignore_errors=True)
