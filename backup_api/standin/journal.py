"""The stand-in's journal: every request a partner's token made for it, bounded in bytes, and apart from them the
requests whose token did not verify.

A request is kept under each partner it names that its (verified) token owns, with only the part of a
batch naming that partner; a request whose token did not verify belongs to nobody, and goes to a short
list of its own without its body. Bodies and answers are kept as text, each cut past KEPT_BODY_BYTES;
the whole journal holds at most max_bytes of them (BACKUP_API_STAND_IN_JOURNAL_BYTES), the oldest
entries going first, whichever partner they belong to. A partner here is a (namespace, partner_id)
pair: each namespace's journals are its own.
"""

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

# Entries kept per partner, partners with a journal, bodies' and answers' bytes kept, entries of
# requests whose token did not verify: memory stays bounded whatever is sent.
KEPT_PER_PARTNER = 10_000
KEPT_PARTNERS = 1000
KEPT_BODY_BYTES = 64 * 1024
KEPT_UNVERIFIED = 100
# What an entry costs beyond its texts (its dict, times, small strings), and each of its events (a
# tuple of four strings) beyond its keys' text, roughly, as measured.
ENTRY_OVERHEAD = 1000
EVENT_OVERHEAD = 300


def cut(text: str) -> tuple[str, int | None]:
    """The text kept of a body or an answer, and its length when it was cut (None when whole)."""
    if len(text) <= KEPT_BODY_BYTES:
        return text, None
    return text[:KEPT_BODY_BYTES], len(text)


def _held(text: str | None) -> int:
    """The bytes a text takes in memory, at most (Python keeps a string of astral characters 4 bytes a
    character); its length in UTF-8 is within that, and never less than the characters."""
    if not text:
        return 0
    return len(text) * (1 if text.isascii() else 4)


def size_of(entry: dict) -> int:
    """What an entry holds in memory: its texts (in bytes, as kept), its events' keys, its headers and an overhead."""
    texts = _held(entry.get("body") or entry.get("body_base64")) + _held(entry["answer"])
    events = sum(EVENT_OVERHEAD + sum(_held(key) for key in event[1:]) for event in entry["events"] or ())
    headers = sum(_held(name) + _held(value) for name, value in (entry.get("headers") or {}).items())
    return ENTRY_OVERHEAD + texts + events + headers


class Journal:
    """Entries by partner, newest first, and the requests whose token did not verify."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._by_partner: dict[str, deque] = {}  # partner: (number, entry), newest at the left
        self._order: OrderedDict[int, tuple[str, int]] = OrderedDict()  # number: (partner, size), oldest first
        self._bytes = 0
        self._numbers = itertools.count()
        self._unverified: deque = deque(maxlen=KEPT_UNVERIFIED)

    def add(self, partner: str, entry: dict) -> None:
        """Keep entry in partner's journal; past the bounds, the oldest entries go."""
        size = size_of(entry)
        with self._lock:
            while partner not in self._by_partner and len(self._by_partner) >= KEPT_PARTNERS:
                self._forget(next(iter(self._by_partner)))
            kept = self._by_partner.setdefault(partner, deque())
            number = next(self._numbers)
            kept.appendleft((number, entry))
            self._order[number] = (partner, size)
            self._bytes += size
            if len(kept) > KEPT_PER_PARTNER:
                self._drop(kept.pop()[0])
            while self._bytes > self.max_bytes and self._order:
                oldest, (owner, _) = next(iter(self._order.items()))
                self._by_partner[owner].pop()  # a partner's oldest is at its right
                self._drop(oldest)
                if not self._by_partner[owner]:
                    del self._by_partner[owner]

    def _drop(self, number: int) -> None:
        _, size = self._order.pop(number)
        self._bytes -= size

    def _forget(self, partner: str) -> None:
        for number, _ in self._by_partner.pop(partner, ()):
            self._drop(number)

    def add_unverified(self, entry: dict) -> None:
        """Keep a request whose token did not verify (without its body) in the short list of such requests."""
        with self._lock:
            self._unverified.appendleft(entry)

    def find(self, partner: str, match: Callable[[dict], bool]) -> list[dict]:
        """Partner's entries that match, oldest first."""
        with self._lock:
            entries = [entry for _, entry in reversed(self._by_partner.get(partner, ()))]
        return [entry for entry in entries if match(entry)]

    def unverified(self) -> list[dict]:
        """The requests whose token did not verify, oldest first."""
        with self._lock:
            return list(reversed(self._unverified))

    def clear(self, partners=None) -> None:
        """Forget the journals of partners (of everyone, the unverified list included, when None)."""
        with self._lock:
            if partners is None:
                self._by_partner.clear()
                self._order.clear()
                self._bytes = 0
                self._unverified.clear()
                return
            for partner in partners:
                self._forget(partner)

    def keys(self) -> list:
        """The partners (keys) with a journal."""
        with self._lock:
            return list(self._by_partner)

    @property
    def bytes(self) -> int:
        """What the partners' journals hold now, as size_of counts it."""
        return self._bytes
