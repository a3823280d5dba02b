"""What every store promises: the errors it raises, each call's contract, and the group commit.

A store knows nothing of HTTP. sqlstore.py holds what both backends do alike (reads, exports,
imports), sqlite.py and postgres.py each one backend's own SQL and connections.
"""

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from backup_api.storage.rows import (
    EventRow,
    ExportedEvent,
    FoundEvent,
    ImportedEvent,
    PlayerRecord,
    Revocation,
    StoredEvent,
    VipFlag,
    event_row,
    now_us,
)


class StorageError(Exception):
    """The database could not be read or written."""


class WriteOutcomeUnknown(StorageError):
    """A write's commit was sent but never answered: it may or may not be stored (a resend is safe)."""


class RecordError(ValueError):
    """A record handed to an import cannot be stored; index is its position among the records (from 0)."""

    index: int = 0


class ImportStopped(Exception):
    """An import stopped once it had begun to store, keeping its finished pieces: `committed` records, from the first.

    Its __cause__ says why: a RecordError (a conflicting write that came in meanwhile), a
    StorageError (the database lost) or a KeyboardInterrupt (Ctrl-C).
    """

    def __init__(self, committed: int):
        super().__init__(f"the import stopped after storing {committed} records")
        self.committed = committed


class EventConflict(RecordError):
    """An event_id already names a stored event with other content."""

    def __init__(self, partner_id: str, event_id: str):
        super().__init__(f"event_id {event_id!r} of partner {partner_id!r} is already stored with other content")
        self.partner_id = partner_id
        self.event_id = event_id


logger = logging.getLogger(__name__)

# Reads: events one page query examines, bytes a page holds.
SCAN_WINDOW = 20_000
MAX_PAGE_BYTES = 4 << 20

# The layout both stores write, stamped in the database; a database of another layout is refused,
# but for those of UPGRADES_FROM, which a store brings up to date when it opens them (in one
# transaction, adding what the newer layout adds: nothing held is rewritten).
SCHEMA_VERSION = 5
UPGRADES_FROM = (2, 3, 4)


def layout_refused(name: str, version: int, advice: str) -> StorageError:
    """The error for a database of another layout than SCHEMA_VERSION; advice says what to do with an older one."""
    if version > SCHEMA_VERSION:
        return StorageError(
            f"the database {name} has layout {version}, written by a newer version of the service;"
            f" this one reads layout {SCHEMA_VERSION}: upgrade the service to use it"
        )
    return StorageError(
        f"the database {name} has layout {version}; this version of the service reads layout"
        f" {SCHEMA_VERSION} only: {advice}"
    )


# What a write that found the database busy past its wait says (a 503: retry).
BUSY = ("the database is busy: another writer has held it for the whole busy timeout (BACKUP_API_BUSY_TIMEOUT_MS)"
        "; nothing was stored, retry later")


class WriteRequest:
    """Rows that one call asked to store, and what became of them."""

    __slots__ = ("rows", "events", "new", "error", "done", "deadline")

    def __init__(self, rows: list[EventRow], events: list[dict], deadline: float | None = None):
        self.rows = rows
        self.events = events  # the events parsed, beside their rows: what the totals count
        self.new: list[bool] = []
        self.error: BaseException | None = None
        self.done = False
        self.deadline = deadline  # time.monotonic() past which it waits no more for the database


class Store:
    """What every store does; a backend supplies the SQL.

    Every call raises StorageError when the database cannot be used (the service answers 503),
    and is safe to make from many threads at once.
    """

    #: Where the data is, as `db check` prints it (a file path, or a URL without its password).
    name: str
    #: The copy of the database kept when this store upgraded its layout on opening it, if it did.
    kept_copy: str | None = None
    #: Called after each group commit with (requests in it, seconds it took), when set (metrics).
    observe_commit = None
    #: The events this process stores between two counts of their totals (count_pending): what a read of
    #: a partner's totals counts itself is at most about this many for each process that writes.
    COUNT_EVERY = 1000
    #: The most text of those events kept parsed for the count meanwhile (parsing each again cost a batch of
    #: 500 events about 5 ms of CPU: 11 ms for 1,000, timed in one process).
    PARSED_KEPT_BYTES = 8 << 20

    #: Seconds a write may wait for the database, its turn in this process included (the busy
    #: timeout); None: the backend bounds its waits itself.
    write_wait_s: float | None = None

    def __init__(self):
        self._lock = threading.Lock()  # held by the one thread writing for this process
        self._queue_lock = threading.Lock()  # guards the queue of writes waiting for it
        self._queue: list[WriteRequest] = []
        # While the lock is held: when the write under way stops waiting for the database.
        self._deadline: float | None = None
        # While the lock is held: the partners of the events this process stored since their totals last
        # counted them, and how many events (count_pending counts them every COUNT_EVERY).
        self._to_count: set[str] = set()
        self._to_count_events = 0
        # Under their own lock: the events this process stored and no count has taken yet, as parsed when they
        # came in, by their stored text (up to PARSED_KEPT_BYTES of it), so that a count need not parse them.
        self._parsed_lock = threading.Lock()
        self._parsed: dict[str, dict] = {}
        self._parsed_bytes = 0

    def _new_deadline(self) -> float | None:
        return None if self.write_wait_s is None else time.monotonic() + self.write_wait_s

    def _take_turn(self, deadline: float | None) -> None:
        """Take this process's write lock, waiting until deadline at most; past it, StorageError (busy)."""
        timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=timeout):
            raise StorageError(BUSY)
        self._deadline = deadline

    def _remaining_ms(self) -> int:
        """Milliseconds the write under way may still wait for the database; none left: StorageError (busy)."""
        if self._deadline is None:
            return int((self.write_wait_s or 0) * 1000)
        left = int((self._deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise StorageError(BUSY)
        return left

    def _end_turn(self) -> None:
        self._deadline = None
        self._lock.release()

    @contextmanager
    def _write_turn(self, wait_s: float | None = None) -> Iterator[None]:
        """Hold this process's write lock for one write, which waits the busy timeout (or wait_s) at most in all."""
        self._take_turn(self._new_deadline() if wait_s is None else time.monotonic() + wait_s)
        try:
            yield
        finally:
            self._end_turn()

    def add_events(self, events: list[dict], sub: str) -> list[bool]:
        """Store events all or nothing; say of each whether it was new. Raise EventConflict.

        Returns only after the events are committed and on disk. Group commit: the calls waiting
        for the write lock share one transaction and one flush, and a conflict in one call undoes
        that call alone.
        """
        received_at = now_us()
        request = WriteRequest([event_row(e, received_at, sub) for e in events], events, self._new_deadline())
        with self._queue_lock:
            self._queue.append(request)
        try:
            self._take_turn(request.deadline)
        except StorageError:
            with self._queue_lock:
                if request in self._queue:  # no writer took it into a group: nothing of it was written
                    self._queue.remove(request)
                    raise
            # A writer took it into its group, which waits no longer than it would: its outcome is ours.
            self._take_turn(None)
        due: set[str] = set()
        try:
            if not request.done:  # else a previous holder of the lock committed it with its own
                with self._queue_lock:
                    group, self._queue = self._queue, []
                # The group waits for the database as long as its most pressed request may.
                deadlines = [other.deadline for other in group if other.deadline is not None]
                self._deadline = min(deadlines) if deadlines else None
                started = time.perf_counter()
                try:
                    self._commit_group(group)
                    if self.observe_commit is not None:
                        self.observe_commit(len(group), time.perf_counter() - started)
                    due = self._count_due(group)
                except BaseException as exc:
                    # Nothing of the group was committed: every caller in it gets the failure.
                    for other in group:
                        other.error = exc
                finally:
                    for other in group:
                        other.done = True
        finally:
            self._end_turn()
        if due:
            try:
                self.count_pending(due)
            except StorageError as exc:  # the events are stored, and counted by a later count or read
                logger.warning("the totals could not count the events stored: %s", exc)
        if request.error is not None:
            raise request.error
        return request.new

    def _count_due(self, group: list[WriteRequest]) -> set[str]:
        """Note the new events of a group just committed (under the lock); once COUNT_EVERY are noted, return
        their partners (whose totals are then to count them), else an empty set."""
        with self._parsed_lock:
            for request in group:
                if request.error is None:
                    for row, event, is_new in zip(request.rows, request.events, request.new, strict=True):
                        if is_new:
                            self._to_count.add(row.partner_id)
                            self._to_count_events += 1
                            if self._parsed_bytes + len(row.event) > self.PARSED_KEPT_BYTES:
                                # Those another process counted are never taken: start again.
                                self._parsed, self._parsed_bytes = {}, 0
                            self._parsed[row.event] = event
                            self._parsed_bytes += len(row.event)
        if self._to_count_events < self.COUNT_EVERY:
            return set()
        due, self._to_count, self._to_count_events = self._to_count, set(), 0
        return due

    def _take_parsed(self, texts: Iterable[str]) -> dict[str, dict]:
        """The events of texts (stored events being counted) that this process kept as parsed when they came in,
        taken: a text parses to the same event whoever parses it."""
        with self._parsed_lock:
            found = {text: self._parsed.pop(text) for text in texts if text in self._parsed}
            self._parsed_bytes -= sum(map(len, found))
        return found

    def count_pending(self, partner_ids: Iterable[str]) -> None:
        """Add the partners' events stored since their totals last counted them to the totals, in a transaction
        of its own (add_events calls it every COUNT_EVERY events it stores; until then, a read of the totals
        counts them itself)."""
        raise NotImplementedError

    def _commit_group(self, group: list[WriteRequest]) -> None:
        """Commit the rows of every request of group in one transaction, setting each one's new or error."""
        raise NotImplementedError

    def set_vip(self, partner_id: str, player_login: str, is_vip: bool, sub: str) -> None:
        """Record a player's VIP flag, when it was set and by whom; return once it is committed."""
        raise NotImplementedError

    def revoke(self, kind: str, value: str) -> int:
        """Revoke a token by its jti (kind "jti"), or a holder's tokens issued up to now (kind "sub").

        Returns when it was recorded (microseconds); revoking again moves that time on.
        """
        raise NotImplementedError

    def lift(self, kind: str, value: str) -> bool:
        """Lift a revocation; say whether there was one."""
        raise NotImplementedError

    def revocations(self) -> list[Revocation]:
        """Return every revocation, oldest first."""
        raise NotImplementedError

    def ping(self, wait_s: float) -> None:
        """Check that the database answers and can take writes; raise StorageError saying why not.

        Cheap enough to be polled every second: it writes nothing and waits for no fsync, and for
        the locks a write takes no longer than wait_s.
        """
        raise NotImplementedError

    def free_bytes(self) -> int | None:
        """The bytes free on the filesystem that holds the database, when it is on this machine."""
        return None

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The store's own gauges, by name: (what it measures, its value now). Never fails."""
        return {}

    def read_events(
        self,
        partner_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        player_login: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
        received_after: int | None = None,
        received_before: int | None = None,
    ) -> tuple[list[StoredEvent], int | None]:
        """Return a page of a partner's events with id > after, oldest first, and the id to go on after.

        The id to go on after is None at the end. One query examines at most SCAN_WINDOW of the
        partner's events, so a selective filter over millions of events gives short (even empty)
        pages with a next id, never a long scan; a page stops short too once it holds
        MAX_PAGE_BYTES of events. An event_id is a key, not a filter: one index lookup. Ids appear
        in the order their events were committed, so a reader paging with `after` never misses
        one committed later.
        """
        raise NotImplementedError

    def summary(self, partner_id: str, first_day: str, last_day: str) -> list:
        """Return the partner's totals.Total rows from first_day to last_day (YYYY-MM-DD, both
        included), by day, event_type and currency: kept in a table, so as fast for years of events
        as for a day's, with the partner's events not yet counted there (count_pending) counted as
        they are read."""
        raise NotImplementedError

    def missing(self, partner_id: str, event_ids: list[str]) -> list[str]:
        """Return those of event_ids that the partner holds no event of, in the order given."""
        raise NotImplementedError

    def erase_player(self, partner_id: str, player_login: str, sub: str):
        """Delete every event of the player and its VIP flag in one transaction, keep a receipt (erasure.Receipt:
        when, the partner, a salted digest of the player, who asked, how many events, whether a flag);
        return it. The erased bytes leave the database's files where the backend can."""
        raise NotImplementedError

    def erasures(self, partner_id: str | None = None) -> list:
        """Return the receipts of the erasures (of partner_id's players, when given), oldest first."""
        raise NotImplementedError

    def reapply(self, receipts: list) -> tuple[int, int]:
        """Apply receipts from a later copy of this database: erase the players they name that it holds, keep
        the receipts it lacks; return how many players and events were erased now."""
        raise NotImplementedError

    def prune(self, before: int) -> int:
        """Delete the events received before `before` (microseconds since the epoch), in pieces that hold no
        writer long, their totals counted down; give the space back where the backend can; return how many."""
        raise NotImplementedError

    def check_totals(self) -> list[str]:
        """Recount the totals from the events; return what differs, at most 20 lines (empty when they agree)."""
        raise NotImplementedError

    def get_event(self, event_row_id: int) -> FoundEvent | None:
        """Return a stored event by its id, or None."""
        raise NotImplementedError

    def get_vip(self, partner_id: str, player_login: str) -> VipFlag | None:
        """Return the VIP flag of a player ever flagged, or None."""
        raise NotImplementedError

    def export_events(self, partner_id: str | None = None, player_login: str | None = None) -> Iterator[ExportedEvent]:
        """Yield every stored event (of a partner, of a player), oldest first: what an import takes."""
        raise NotImplementedError

    def export_players(self) -> Iterator[PlayerRecord]:
        """Yield every player with a VIP flag, by partner and player (ordered by their bytes)."""
        raise NotImplementedError

    def import_events(self, records: Iterable[ImportedEvent]) -> tuple[int, int]:
        """Check exported events whole, then store them in pieces; return (imported, already held).

        Each record has ImportedEvent's fields, its row EventRow's: named, or plain tuples (what an
        import's worker processes send, marshalled, which takes plain tuples only).

        Every record is checked before the first is stored: an event_id held (or earlier in the
        records) with other content raises EventConflict, ids that do not increase from one record
        to the next raise RecordError (each with the record's index), and so does any error raised
        by records: then nothing is kept. The records then go in in pieces, each a transaction of
        its own, so that other writers get their turn between them. A failure past the checks (a
        write with the same event_id that came in meanwhile, the database lost, Ctrl-C) keeps the
        pieces before it and raises ImportStopped, whose `committed` says how many records they
        held: the same records again store the rest, the kept ones counting as already held.

        Into an empty database every id is kept, so an export imported there exports again byte
        for byte (as long as nothing else writes meanwhile: then the rest get new ids after it). Into
        one that holds events, the new ones get new ids after the last (an id is never reused, and a
        reader paging through never misses one). An event already held is skipped.
        """
        raise NotImplementedError

    def import_players(self, records: Iterable[PlayerRecord]) -> tuple[int, int, int]:
        """Store exported VIP flags, checked whole, then in pieces as import_events; return (imported, updated, held).

        Each record has PlayerRecord's fields, named or a plain tuple (as for import_events).

        A player not held is added; one held with an older updated_at takes the file's flag; one
        held with the same or a newer updated_at keeps its own.
        """
        raise NotImplementedError

    def check(self) -> tuple[int, list[str], int, int]:
        """Return the layout, what the database's own check says (["ok"] when sound), and the events and players."""
        raise NotImplementedError

    def snapshot(self, destination: str) -> None:
        """Write a consistent copy of the database to the file destination (StorageError where not possible)."""
        raise NotImplementedError

    def restore(self, snapshot: str) -> tuple[str | None, int, int]:
        """Close the store and replace its database with snapshot; return (where the old one is kept, events, players).

        Only for a database that is a file; others raise StorageError.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Close the connections."""
        raise NotImplementedError
