"""What both backends do alike, written once: pages, lookups, exports, imports, VIP flags, the totals, erasures
and the retention's prunes.

Each backend supplies its dialect (how it writes a parameter, the event's text, its type) and a
few hooks: how it lends a connection to read and to write, opens a snapshot, streams rows, and
stores a chunk of imported rows. The statements are built from the dialect (statements.py), so the
two stores' queries are the same text but for those words.
"""

import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal

from backup_api.storage import erasure, totals
from backup_api.storage.base import MAX_PAGE_BYTES, SCAN_WINDOW, ImportStopped, RecordError, Store
from backup_api.storage.erasure import Receipt
from backup_api.storage.importing import (
    EVENT_COLUMNS,
    PLAYER_COLUMNS,
    Skipped,
    Staging,
    increasing_ids,
    interrupts_held,
)
from backup_api.storage.rows import (
    ExportedEvent,
    FoundEvent,
    PlayerRecord,
    Revocation,
    StoredEvent,
    VipFlag,
    now_us,
    rfc3339_us,
)
from backup_api.storage.statements import Statements
from backup_api.storage.totals import Total

# The events a piece of a prune deletes.
PRUNE_CHUNK = 1000
# The event_ids a statement of `missing` asks about at a time (SQLite takes at most 32,766 parameters).
MISSING_CHUNK = 1000


def fill_page(rows: Iterable[tuple], limit: int) -> tuple[list[StoredEvent], bool]:
    """Take rows (id, received_at, text) into a page of at most limit events and MAX_PAGE_BYTES; say if any are left.

    A page holds at least one event, however large.
    """
    page: list[StoredEvent] = []
    size = 0
    for row in rows:
        event = StoredEvent._make(row)
        if len(page) == limit or (page and size + len(event.event) > MAX_PAGE_BYTES):
            return page, True
        page.append(event)
        size += len(event.event)
    return page, False


class SQLStore(Store):
    """The reads, exports and imports of a store, over the hooks its backend supplies."""

    #: The backend's statements (Statements of its Dialect).
    sql: Statements
    #: Rows an import stores at a time (a statement), the seconds it holds the write lock (a
    #: transaction of chunks), and the seconds it then leaves to others. A piece holds the lock for
    #: less than /healthz waits for it (health.LOCK_WAIT_S), so an import never makes it say 503.
    IMPORT_CHUNK = 1000
    IMPORT_HOLD_S = 0.5
    IMPORT_PAUSE_S = 0.0
    #: What a piece's failure says first.
    PIECE_FAILED = "the import failed"

    # The backend's hooks ---------------------------------------------------------------

    def _reading(self) -> AbstractContextManager:
        """Lend a connection to read with; database failures become StorageError."""
        raise NotImplementedError

    def _snapshot(self, conn) -> AbstractContextManager:
        """Run what follows in one read-only snapshot of the database."""
        raise NotImplementedError

    def _stream(self, conn, sql: str, params: list, batch: int) -> AbstractContextManager:
        """Give the rows of a query as an iterable that fetches them batch at a time (inside a snapshot)."""
        raise NotImplementedError

    def _writing(self, failure: str) -> AbstractContextManager:
        """Lend the connection that writes, inside a write transaction; failures become StorageError(failure)."""
        raise NotImplementedError

    def _connected(self, failure: str, wait_s: float | None = None) -> AbstractContextManager:
        """Lend the connection that writes, outside any transaction; failures become StorageError(failure).

        wait_s: the longest to wait for this process's turn and the database's write lock, when
        shorter than a write's.
        """
        raise NotImplementedError

    def _check_writable(self, conn, wait_s: float) -> None:
        """Raise StorageError, saying why, while the database cannot take writes (without writing).

        It waits for the locks a write takes wait_s at most."""

    def _start_import(self, conn) -> None:
        """Keep every other writer out until a piece of an import ends (its transaction)."""

    @contextmanager
    def _staging(self, columns: tuple[str, ...]) -> Iterator[Staging]:
        """A staging table of columns: in SQLite's private temporary file, on a connection of its own."""
        conn = sqlite3.connect("", isolation_level=None)  # "": a private file, deleted once open
        try:
            yield Staging(conn, columns)
        finally:
            conn.close()

    def _move_chunk(self, conn, staged: Staging, after: int, keep_ids: bool) -> list[bool]:
        """Store the next IMPORT_CHUNK events staged after the first `after`; say of each whether it was new.

        Raise EventConflict with its index in the chunk.
        """
        chunk = [(record[0], record[1:]) for record in staged.records(after, self.IMPORT_CHUNK)]
        return self._import_chunk(conn, chunk, keep_ids)

    def _merge_chunk(self, conn, staged: Staging, after: int) -> tuple[int, int, int]:
        """Merge the next IMPORT_CHUNK VIP flags staged after the first `after`; return (imported, updated, held).

        By the database's own rule (add_players, then merge_players), counted by the rows each
        statement changed: a player held with the same or a newer updated_at keeps its flag, even
        one the service set a moment ago.
        """
        imported = updated = 0
        for select, params in self._flag_selects(conn, staged, after):
            imported += conn.execute(self.sql.add_players.format(select=select), params).rowcount
            updated += conn.execute(self.sql.merge_players.format(select=select), params).rowcount
        return imported, updated, min(self.IMPORT_CHUNK, staged.count - after) - imported - updated

    def _flag_selects(self, conn, staged: Staging, after: int) -> Iterator[tuple[str, list]]:
        """Give the next IMPORT_CHUNK VIP flags staged after the first `after` as SELECTs (and their parameters).

        In the file's order: merged one after the other, each gives the flag that the file's last
        line of a player would leave.
        """
        raise NotImplementedError

    def _import_chunk(self, conn, chunk: list[tuple[int, tuple]], keep_ids: bool) -> list[bool]:
        """Store a chunk of an import, each an (id, row) as ImportedEvent's fields (keeping its ids, when asked); say of
        each whether it was new.

        Raise EventConflict with its index in the chunk.
        """
        raise NotImplementedError

    def _finish_import(self, conn, kept_ids: bool) -> None:
        """Finish a piece of an import (after ids were kept: make the next id drawn follow the last)."""

    def _held_texts(self, conn, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Return the text of each event held of keys, (partner_id, event_id) pairs."""
        raise NotImplementedError

    # Reads ----------------------------------------------------------------------------

    def read_events(self, partner_id, *, after=0, limit=100, event_id=None, **filters):
        """Return a page of a partner's events with id > after, oldest first, and the id to go on after."""
        chosen = [(clause, filters[name]) for name, clause in self.sql.filters if filters.get(name) is not None]
        where = "".join(" AND " + clause for clause, _ in chosen)
        values = [value for _, value in chosen]
        with self._reading() as conn:
            if event_id is not None:
                # A key, not a filter: one lookup in the UNIQUE index, whatever the store's size.
                rows = conn.execute(self.sql.by_event_id.format(where=where), [partner_id, event_id, after, *values])
                return [StoredEvent._make(row) for row in rows.fetchall()], None
            # One snapshot for the page and for where its window ended.
            with self._snapshot(conn):
                params = [partner_id, after, SCAN_WINDOW, *values]
                with self._stream(conn, self.sql.page.format(where=where), params, min(limit + 1, 200)) as rows:
                    page, more = fill_page(rows, limit)
                if more:
                    return page, page[-1].id
                scanned, last = conn.execute(self.sql.window_end, [partner_id, after, SCAN_WINDOW]).fetchone()
                return page, (last if scanned == SCAN_WINDOW else None)

    def get_event(self, event_row_id):
        """Return a stored event by its id, or None."""
        with self._reading() as conn:
            row = conn.execute(self.sql.get_event, (event_row_id,)).fetchone()
        return None if row is None else FoundEvent._make(row)

    def get_vip(self, partner_id, player_login):
        """Return the VIP flag of a player ever flagged, or None."""
        with self._reading() as conn:
            row = conn.execute(self.sql.get_vip, (partner_id, player_login)).fetchone()
        if row is None:
            return None
        is_vip, updated_at, updated_by = row
        return VipFlag(bool(is_vip), updated_at, updated_by)

    def export_events(self, partner_id=None, player_login=None):
        """Yield every stored event (of a partner, of a player), oldest first: what an import takes."""
        given = [(column, value) for column, value in (("partner_id", partner_id), ("player_login", player_login))
                 if value is not None]
        where = " AND ".join(f"{column} = {self.sql.mark}" for column, _ in given)
        sql = self.sql.export_events.format(where=" WHERE " + where if where else "")
        with self._reading() as conn, self._snapshot(conn):
            with self._stream(conn, sql, [value for _, value in given], 1000) as rows:
                for row in rows:
                    yield ExportedEvent._make(row)

    def export_players(self):
        """Yield every player with a VIP flag, by partner and player (ordered by their bytes)."""
        with self._reading() as conn, self._snapshot(conn):
            with self._stream(conn, self.sql.export_players, [], 1000) as rows:
                for partner_id, player_login, is_vip, updated_at, updated_by in rows:
                    yield PlayerRecord(partner_id, player_login, bool(is_vip), updated_at, updated_by)

    # Writes ---------------------------------------------------------------------------

    def ping(self, wait_s):
        """Query the events table and check that writes can be taken; raise StorageError, saying why, if not."""
        with self._connected("the database does not answer", wait_s) as conn:
            conn.execute(self.sql.any_event).fetchall()
            self._check_writable(conn, wait_s)

    def set_vip(self, partner_id, player_login, is_vip, sub):
        """Record a player's VIP flag, when it was set and by whom."""
        with self._writing("the VIP flag could not be stored") as conn:
            conn.execute(self.sql.upsert_player, (partner_id, player_login, is_vip, rfc3339_us(now_us()), sub))

    def revoke(self, kind, value):
        """Record a revocation (or move an existing one's time on); return when, in microseconds."""
        revoked_at = now_us()
        with self._writing("the revocation could not be stored") as conn:
            conn.execute(self.sql.revoke, (kind, value, revoked_at))
        return revoked_at

    def lift(self, kind, value):
        """Delete a revocation; say whether there was one."""
        with self._writing("the revocation could not be lifted") as conn:
            return conn.execute(self.sql.lift, (kind, value)).rowcount == 1

    def revocations(self):
        """Return every revocation, oldest first."""
        with self._reading() as conn:
            return [Revocation._make(row) for row in conn.execute(self.sql.revocations).fetchall()]

    # What a partner holds ---------------------------------------------------------------

    def summary(self, partner_id, first_day, last_day):
        """Return the partner's totals from first_day to last_day (YYYY-MM-DD, both included), in order."""
        with self._reading() as conn, self._snapshot(conn):
            found = {(day, event_type, currency): (events, amounts, amount) for day, event_type, currency, events,
                     amounts, amount in conn.execute(self.sql.summary, (partner_id, first_day, last_day)).fetchall()}
            for (_, day, event_type, currency), count in self._uncounted(conn, partner_id)[0].items():
                if first_day <= day <= last_day:
                    found[day, event_type, currency] = totals.added(found.get((day, event_type, currency)), count)
        # In the order of the table's statement: str compares by code point, which orders as their UTF-8 bytes.
        return [Total(day, event_type, currency or None, events, None if amount is None else Decimal(amount))
                for (day, event_type, currency), (events, _, amount) in sorted(found.items())]

    def missing(self, partner_id, event_ids):
        """Return the event_ids of event_ids that the partner holds no event of, in their order."""
        held: set[str] = set()
        with self._reading() as conn:
            for start in range(0, len(event_ids), MISSING_CHUNK):
                held.update(self._held_event_ids(conn, partner_id, event_ids[start : start + MISSING_CHUNK]))
        return [event_id for event_id in event_ids if event_id not in held]

    def _held_event_ids(self, conn, partner_id: str, event_ids: list[str]) -> Iterable[str]:
        """Those of event_ids (at most MISSING_CHUNK) the partner holds an event of."""
        statement = self.sql.held_event_ids.format(marks=", ".join([self.sql.mark] * len(event_ids)))
        return [event_id for (event_id,) in conn.execute(statement, (partner_id, *event_ids))]

    def check_totals(self):
        """Recount the totals from the events; return what differs (empty when they agree)."""
        with self._reading() as conn, self._snapshot(conn):
            with self._stream(conn, self.sql.counted_events, [], 10_000) as rows:
                expected = totals.recount((p, at, totals.parsed(text)) for p, at, text in rows)
            kept = {tuple(row[:4]): tuple(row[4:]) for row in conn.execute(self.sql.all_totals).fetchall()}
            with self._stream(conn, self.sql.all_uncounted, [], 10_000) as rows:
                for key, count in totals.tally((p, at, totals.parsed(text)) for p, at, text in rows).items():
                    kept[key] = totals.added(kept.get(key), count)
        return [f"the totals of {key} say {kept.get(key)}, the events {expected.get(key)}"
                for key in sorted(set(expected) | set(kept)) if expected.get(key) != kept.get(key)][:20]

    def count_pending(self, partner_ids):
        """Count the partners' events stored since into their totals, in a transaction of its own."""
        with self._writing("the totals could not count the events stored") as conn:
            self._hold_partners(conn, set(partner_ids))
            self._count_stored(conn, partner_ids)

    def _count_stored(self, conn, partner_ids: Iterable[str]) -> None:
        """Add each partner's events past its `through` to its totals, and move `through` on to the last, on conn's
        transaction (the partners' other writers held out: their ids are all committed)."""
        for partner_id in sorted(set(partner_ids)):
            counts, last = self._uncounted(conn, partner_id, counting=True)
            if last is not None:
                totals.add_counts(conn, self.sql, counts)
                conn.execute(self.sql.put_through, (partner_id, last))

    def _uncounted(self, conn, partner_id: str, counting: bool = False) -> tuple[dict, int | None]:
        """The partner's events not in its totals yet, counted (totals.tally's counts), and the last one's id (None:
        none). Each event's text is parsed, but, when counting them into the table, those this process kept
        parsed (_take_parsed: grouping them by SQLite's JSON functions took as long as parsing them)."""
        rows = conn.execute(self.sql.uncounted, (partner_id, partner_id)).fetchall()
        known = self._take_parsed(text for _, _, text in rows) if counting else {}
        counts = totals.tally((partner_id, at, known.get(text) or totals.parsed(text)) for _, at, text in rows)
        return counts, (rows[-1][0] if rows else None)

    # Erasing a player -----------------------------------------------------------------

    def erase_player(self, partner_id, player_login, sub):
        """Delete the player's events and VIP flag in one transaction, keep a receipt; return it."""
        with self._writing("the player could not be erased") as conn:
            salt = conn.execute(self.sql.salt).fetchone()[0]
            events, vip = self._erase(conn, partner_id, player_login)
            receipt = Receipt(now_us(), partner_id, erasure.digest(salt, partner_id, player_login), sub, events, vip)
            conn.execute(self.sql.add_receipt, (*receipt[:5], int(vip)))
        self._after_erasure()
        return receipt

    def _erase(self, conn, partner_id: str, player_login: str) -> tuple[int, bool]:
        """Delete the player's events (counted off the totals first) and flag on conn's transaction; (events, flag)."""
        self._hold_partners(conn, {partner_id})
        self._count_stored(conn, {partner_id})  # then every event of the partner is in its totals
        held = conn.execute(self.sql.player_events, (partner_id, player_login)).fetchall()
        totals.count_events(conn, self.sql, [(p, at, totals.parsed(text)) for p, at, text in held], sign=-1)
        events = conn.execute(self.sql.erase_events, (partner_id, player_login)).rowcount
        conn.execute(self.sql.lower_through)
        return events, conn.execute(self.sql.erase_flag, (partner_id, player_login)).rowcount == 1

    def erasures(self, partner_id=None):
        """Return the receipts of every erasure (of partner_id's players only, when given), oldest first."""
        where, params = ("", ()) if partner_id is None else (f" WHERE partner_id = {self.sql.mark}", (partner_id,))
        with self._reading() as conn:
            rows = conn.execute(self.sql.receipts.format(where=where), params).fetchall()
        return [Receipt._make((*row[:5], bool(row[5]))) for row in rows]

    def reapply(self, receipts):
        """Apply receipts from a later copy of this database (a restore brought an older one back): erase the
        players they name that it holds, and keep the receipts it lacks; return (players, events) erased."""
        players = events = 0
        for partner_id in sorted({receipt.partner_id for receipt in receipts}):
            mine = [receipt for receipt in receipts if receipt.partner_id == partner_id]
            wanted = {receipt.player_digest for receipt in mine}
            with self._writing("the receipts could not be applied") as conn:
                salt = conn.execute(self.sql.salt).fetchone()[0]
                for (login,) in conn.execute(self.sql.players_of, (partner_id, partner_id)).fetchall():
                    if erasure.digest(salt, partner_id, login) in wanted:
                        erased, _ = self._erase(conn, partner_id, login)
                        players, events = players + 1, events + erased
                where = f" WHERE partner_id = {self.sql.mark}"
                kept = set(conn.execute(self.sql.receipts.format(where=where), (partner_id,)).fetchall())
                for receipt in mine:
                    if (*receipt[:5], int(receipt.vip)) not in kept:
                        conn.execute(self.sql.add_receipt, (*receipt[:5], int(receipt.vip)))
        self._after_erasure()
        return players, events

    def _erased(self, conn) -> erasure.Erased:
        """The players erased, to skip in an import."""
        salt = conn.execute(self.sql.salt).fetchone()[0]
        rows = conn.execute(self.sql.receipts.format(where=""), ()).fetchall()
        return erasure.Erased(salt, [Receipt._make((*row[:5], bool(row[5]))) for row in rows])

    # Retention --------------------------------------------------------------------------

    def prune(self, before):
        """Delete the events received before `before` (microseconds), PRUNE_CHUNK at a time, each piece in a
        transaction of its own with its totals counted down; return how many were deleted."""
        pruned = 0
        while True:
            with self._reading() as conn:
                ids = [id_ for (id_,) in conn.execute(self.sql.old_events, (before, PRUNE_CHUNK)).fetchall()]
            if not ids:
                break
            with self._writing("the prune failed") as conn:
                span = (ids[0], ids[-1], before)
                held = conn.execute(self.sql.old_rows, span).fetchall()
                partners = {partner_id for partner_id, _, _ in held}
                self._hold_partners(conn, partners)
                self._count_stored(conn, partners)  # then every event of theirs is in their totals
                totals.count_events(conn, self.sql, [(p, at, totals.parsed(text)) for p, at, text in held], sign=-1)
                pruned += conn.execute(self.sql.prune, span).rowcount
                conn.execute(self.sql.lower_through)
            time.sleep(self.IMPORT_PAUSE_S)
        self._after_prune()
        return pruned

    def _after_prune(self) -> None:
        """Give the space back where the backend can (SQLite: an incremental vacuum)."""

    def _hold_partners(self, conn, partner_ids: set[str]) -> None:
        """Keep the partners' other writers out until the commit (SQLite: the one writer already is)."""

    def _after_erasure(self) -> None:
        """Make the erased bytes leave the database's files, where the backend can (SQLite: its -wal)."""

    def _fill_layouts_after(self, conn, layout: int) -> None:
        """Fill the tables of the layouts after `layout` (0: a new database), in the transaction that made them:
        layout 4's totals from every event held, and the erasures' salt, random; layout 5's `counted`, each
        partner's events counted through its last."""
        if layout < 4:
            conn.execute(f"INSERT INTO erasure_salt (salt) VALUES ({self.sql.mark})", (secrets.token_hex(32),))
            self._recount_all(conn)
        conn.execute(self.sql.all_through_last)

    def _recount_all(self, conn) -> None:
        """Fill the totals table from every event held (an upgrade to layout 4, in its transaction)."""
        with self._stream(conn, self.sql.counted_events, [], 10_000) as rows:
            totals.count_events(conn, self.sql, ((p, at, totals.parsed(text)) for p, at, text in rows))

    def import_events(self, records):
        """Check every record, then store them in pieces of IMPORT_HOLD_S; return (imported, already held, skipped).

        The records go to a staging table first, so that a bad line, ids out of order or an
        event_id taken stop the import before any of it is stored. The lines of a player erased
        since they were received are skipped: an erasure is for good.
        """
        with self._reading() as conn:
            erased = self._erased(conn)
        # A record is (id, the row's fields, in EventRow's order: partner_id first, player_login 4th, received_at 5th).
        skipped = Skipped(lambda record: bool(erased) and erased.before(record[1][0], record[1][3], record[1][4]))
        with skipped.lines_told(), self._staging(EVENT_COLUMNS) as staged:
            staged.load((id_, *row) for id_, row in increasing_ids(skipped.passed(records)))
            with self._connected("the import failed") as conn:  # the writer's: no reader left open behind
                (empty,) = conn.execute(self.sql.empty).fetchone()
                staged.check(None if empty else lambda keys: self._held_texts(conn, keys))
            keep_ids, imported = bool(empty), 0

            def begin(conn, after):
                # The ids are kept until a write that came in meanwhile took one at or past the next.
                nonlocal keep_ids
                self._start_import(conn)
                if keep_ids:
                    (last,) = conn.execute(self.sql.last_id).fetchone()
                    keep_ids = last < staged.first(after)

            def store(conn, after):
                # The chunk's events are counted here, from the staged lines (as SQLite groups them): once the
                # partners' events stored before are counted, the partners are counted through their last.
                nonlocal imported
                partners = staged.partners(after, self.IMPORT_CHUNK)
                self._count_stored(conn, partners)
                new = self._move_chunk(conn, staged, after, keep_ids)
                imported += sum(new)
                if any(new):
                    totals.add_counts(conn, self.sql, staged.totals(after, new))
                    for partner_id in sorted(partners):
                        conn.execute(self.sql.through_last, (partner_id,))

            self._in_pieces(staged, store, begin, lambda conn: self._finish_import(conn, kept_ids=keep_ids))
            return imported, staged.count - imported, skipped.count

    def import_players(self, records):
        """Store exported VIP flags, checked whole first, in pieces as import_events; return (imported, updated,
        held, skipped).

        A player not held is added; one held with an older updated_at takes the file's flag; one
        held with the same or a newer updated_at keeps its own. The flag of a player erased since
        it was set is skipped.
        """
        counts = [0, 0, 0]
        with self._reading() as conn:
            erased = self._erased(conn)
        def flag_erased(record) -> bool:
            # updated_at in the one form flags are kept in, whose text orders them (PlayerRecord: its 4th field).
            erased_at = erased.erased_at(record[0], record[1])
            return erased_at is not None and record[3] < rfc3339_us(erased_at)

        skipped = Skipped(flag_erased)

        def store(conn, after):
            for n, count in enumerate(self._merge_chunk(conn, staged, after)):
                counts[n] += count

        with skipped.lines_told(), self._staging(PLAYER_COLUMNS) as staged:
            staged.load(skipped.passed(records))
            self._in_pieces(staged, store)
        return (*counts, skipped.count)

    def _in_pieces(self, staged: Staging, store, begin=None, end=None) -> None:
        """Call store(conn, after) for each chunk of the staged lines, in transactions of about IMPORT_HOLD_S.

        A chunk is the IMPORT_CHUNK lines after the first `after`; begin(conn, after) and end(conn)
        run at the start and the end of each transaction, and the service's writes get their turn
        between two (IMPORT_PAUSE_S). A failure keeps the transactions before it, and is raised as
        the cause of ImportStopped, whose `committed` says how many records they held (whatever it
        is: KeyboardInterrupt too); the index of a RecordError counts from the first line.
        """
        after = committed = 0
        try:
            while after < staged.count:
                with interrupts_held():  # Ctrl-C waits for the piece's commit, and its count
                    after = committed = self._piece(staged, store, begin, end, after)
                if after < staged.count:
                    time.sleep(self.IMPORT_PAUSE_S)
        except (Exception, KeyboardInterrupt) as exc:  # a conflict, the database lost, Ctrl-C: say what is kept
            raise ImportStopped(committed) from exc

    def _piece(self, staged: Staging, store, begin, end, after: int) -> int:
        """Store chunks from line after + 1 in one transaction of IMPORT_HOLD_S (a chunk at least); return the last."""
        with self._writing(self.PIECE_FAILED) as conn:
            if begin is not None:
                begin(conn, after)
            started = time.monotonic()
            while after < staged.count:
                try:
                    store(conn, after)
                except RecordError as exc:
                    exc.index += after
                    raise
                after += self.IMPORT_CHUNK
                if time.monotonic() - started >= self.IMPORT_HOLD_S:
                    break
            if end is not None:
                end(conn)
        return min(after, staged.count)

    def forget(self, partners=None) -> None:
        """Delete everything held of partners (events, VIP flags, their totals and erasures), or of everyone
        when None: the stand-in's reset."""
        tables = ("events", "players", "totals", "counted", "erasures")
        with self._writing("the reset failed") as conn:
            if partners is None:
                for table in tables:
                    conn.execute(f"DELETE FROM {table}")
                return
            chosen = sorted(partners)
            for start in range(0, len(chosen), 500):
                part = chosen[start : start + 500]
                marks = ", ".join([self.sql.mark] * len(part))
                for table in tables:
                    conn.execute(f"DELETE FROM {table} WHERE partner_id IN ({marks})", part)
            conn.execute(self.sql.lower_through)
