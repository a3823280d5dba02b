"""The PostgreSQL store: one database on a server, written by any number of processes on any number of machines.

Its own statements are here too (its tables are in layouts.py), with the helpers that fill them in.
"""

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from backup_api.storage.base import (
    SCHEMA_VERSION,
    UPGRADES_FROM,
    EventConflict,
    StorageError,
    WriteOutcomeUnknown,
    WriteRequest,
    layout_refused,
)
from backup_api.storage.jsonform import parsed_content_key
from backup_api.storage.layouts import POSTGRES_COUNTED, POSTGRES_REVOCATIONS, POSTGRES_TABLES, POSTGRES_TOTALS
from backup_api.storage.rows import EventRow
from backup_api.storage.sqlstore import SQLStore
from backup_api.storage.statements import Dialect, Statements

# Any constant of our own: the lock that one process holds while it creates the tables.
LAYOUT_LOCK = 0x6761_6D65_6261_636B

COLUMNS = ", ".join(EventRow._fields)
# The rows travel as one JSON text, a record per row, unpacked by the server: one parameter, however
# many rows, written by the C JSON encoder (arrays of seven columns took psycopg three times longer
# to send). The event travels as a string holding its exact text, made json again by the server.
RECORDS = (
    "ROWS FROM (json_to_recordset(%s::json)"
    " AS (i bigint, p text, e text, k text, l text, r bigint, s text, v text, t text))"
    " WITH ORDINALITY AS rows (i, p, e, k, l, r, s, v, t, n)"
)
# One statement for any number of rows: the database says which were new (ON CONFLICT DO NOTHING
# skips those whose key is held, by either UNIQUE index), and ids are drawn in the rows' order.
INSERT = (
    f"INSERT INTO events ({COLUMNS}) SELECT p, e, decode(k, 'hex'), l, r, s, v::json, t FROM {RECORDS}"
    " ORDER BY n ON CONFLICT DO NOTHING RETURNING partner_id, event_id, content_key"
)
# The same with the ids given (an import into an empty database).
INSERT_WITH_IDS = INSERT.replace(f"({COLUMNS}) SELECT p,", f"(id, {COLUMNS}) SELECT i, p,")

# VIP flags as five arrays, one a column, unpacked by the server row by row.
FLAGS = "SELECT * FROM unnest(%s::text[], %s::text[], %s::boolean[], %s::text[], %s::text[])"

_encode_str = json.encoder.encode_basestring


def records(rows: list[EventRow], ids: list[int] | None = None) -> str:
    """Write rows (and their ids, when given) as the JSON text that RECORDS unpacks."""
    parts = []
    for n, (partner_id, event_id, key, player_login, received_at, sub, text, event_type) in enumerate(rows):
        id_ = "null" if ids is None else int(ids[n])
        event_id_json = "null" if event_id is None else _encode_str(event_id)
        key_json = "null" if key is None else f'"{key.hex()}"'
        parts.append(
            f'{{"i":{id_},"p":{_encode_str(partner_id)},"e":{event_id_json},"k":{key_json},'
            f'"l":{_encode_str(player_login)},'
            f'"r":{int(received_at)},"s":{_encode_str(sub)},"v":{_encode_str(text)},"t":{_encode_str(event_type)}}}'
        )
    return "[" + ",".join(parts) + "]"


def dedupe_key(partner_id: str, event_id: str | None, key: bytes | None):
    """The key that deduplicates an event: (partner_id, event_id), else its content key (one has either)."""
    if event_id is not None:
        return partner_id, event_id
    assert key is not None
    return bytes(key)


def partner_lock(partner_id: str) -> int:
    """The advisory lock that orders one partner's writes (a signed 64-bit number)."""
    return int.from_bytes(hashlib.sha256(b"partner\0" + partner_id.encode()).digest()[:8], "big", signed=True)

# Connections per process: one for each of the server's 8 worker threads.
POOL_SIZE = 8
# How long the pool keeps trying to replace a lost connection before it waits for the next request
# to ask again: short, so that the service is back within seconds of the server.
RECONNECT_SECONDS = 2.0

# Sessions of this database idle inside a transaction for over a second, holding an advisory lock
# (a partner's write lock: no writer of that partner goes on until the session ends).
STOPPED_HOLDERS = (
    "SELECT count(DISTINCT a.pid) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
    " AND a.state LIKE 'idle in transaction%' AND a.state_change < clock_timestamp() - interval '1 second'"
)

# json keeps the event's text as sent; event_type is a column of its own; ORDER BY compares text
# by the collation's rules unless told to compare bytes, as SQLite does.
DIALECT = Dialect(mark="%s", event_text="event::text", event_type="event_type", by_bytes=' COLLATE "C"',
                  window="id, received_at, player_login, event_type, event")


def _without_password(url: str) -> str:
    """The URL as it may be printed: its password, in the address or the query (libpq's password=,
    sslpassword=), as ***."""
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1))
    query = [(key, "***" if key in ("password", "sslpassword") else value)
             for key, value in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*/:")))


class BoundedConnection(psycopg.Connection):
    """A connection whose every wait for the server gives up after `bound` seconds, breaking the connection.

    statement_timeout is enforced by the server, which a stalled server (SIGSTOP, a hung disk, a
    host whose kernel still acknowledges) never does; nor does TCP's user timeout fire while the
    peer's kernel acknowledges. So the bound that holds whatever the server does is the client's.
    """

    bound: float = 5.0  # set by each store on a subclass of its own

    def wait(self, gen, interval=0.1, timeout=None):
        """Wait for the server as psycopg does, but never longer than bound."""
        try:
            return super().wait(gen, interval=interval, timeout=self.bound if timeout is None else timeout)
        except psycopg.errors._WaitTimeout:
            # Mid-exchange: the connection can never be used again. Finished, it is broken, and
            # the pool replaces it rather than lending it again.
            self.pgconn.finish()
            raise psycopg.OperationalError(f"the database did not answer within {self.bound:g} s") from None


def _one(cursor: psycopg.Cursor):
    """The one value of a query that returns one row (an aggregate's, say)."""
    row = cursor.fetchone()
    assert row is not None
    return row[0]


@contextmanager
def _transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction whose COMMIT, if sent and never answered, raises WriteOutcomeUnknown: it may have committed."""
    body_done = False
    try:
        with conn.transaction():
            yield
            body_done = True
    except psycopg.OperationalError as exc:
        if body_done:
            raise WriteOutcomeUnknown(f"the commit was sent but not confirmed: {exc}") from exc
        raise


@contextmanager
def _pipelined(conn: psycopg.Connection, cursor: psycopg.Cursor) -> Iterator[None]:
    """A transaction sent in psycopg's pipeline: statements go out without waiting for each other's answers, and
    reading an answer waits for everything sent before it. BEGIN goes with the first statements, COMMIT with the
    last: a group commit is two round trips, where one statement at a time took six (issue 41).

    cursor: one of conn's, for BEGIN and COMMIT (and the caller's statements whose answers it does not read): a
    statement on a cursor that exists cost half what one on a new cursor of conn.execute did (14 against 28 µs).

    A COMMIT sent on a connection that broke before its answer raises WriteOutcomeUnknown: it may have committed.
    Any other failure rolls the transaction back (nothing of it was committed).
    """
    committing = False
    try:
        with conn.pipeline():
            cursor.execute("BEGIN")
            yield
            committing = True
            cursor.execute("COMMIT")
    except BaseException as exc:
        if conn.broken:
            if committing and isinstance(exc, psycopg.OperationalError):
                raise WriteOutcomeUnknown(f"the commit was sent but not confirmed: {exc}") from exc
        else:
            conn.rollback()  # the transaction the failure left open (psycopg sends nothing when there is none)
        raise


class PostgresStore(SQLStore):
    """One PostgreSQL database, shared by every process and thread that opens it."""

    sql = Statements(DIALECT)
    IMPORT_CHUNK = 2_000
    # A piece's connection lost is most often the server ending a transaction left idle: the import
    # was stopped (Ctrl-Z) longer than the timeout. Its message alone ("server closed the connection
    # unexpectedly") would not say so.
    PIECE_FAILED = ("the import failed (an import stopped, by Ctrl-Z say, longer than BACKUP_API_PG_TIMEOUT_MS"
                    " has its transaction ended by the database, which frees the writers it held out)")

    def __init__(self, url: str, timeout_ms: int = 5000):
        """Connect to the database at url (a libpq URL) and create the tables where they are missing."""
        super().__init__()
        self.name = _without_password(url)
        seconds = timeout_ms / 1000
        # The client's bound on each wait: past the server's own statement_timeout, so that the
        # server cancels first when it can (and says why); only a stalled server meets this one.
        self._connection_class: type[BoundedConnection] = type("BoundedConnection", (BoundedConnection,),
                                                               {"bound": seconds * 1.5})
        # Ours are added to the URL's own options (a search_path, say), not put in their place.
        try:
            options = conninfo_to_dict(url).get("options", "")
        except psycopg.ProgrammingError as exc:
            raise StorageError(f"the database URL {self.name} cannot be read: {exc}") from None
        settings: dict[str, Any] = {
            "autocommit": True,  # each unit of work opens its own transaction
            "application_name": "game-backup-api",
            "connect_timeout": max(2, math.ceil(seconds)),  # libpq's least
            # Commits flushed to disk before COMMIT returns, whatever the server's default;
            # no statement, nor lock wait, longer than the timeout; and no transaction left idle
            # longer than it, so that a client stopped or frozen inside one (an import stopped by
            # Ctrl-Z, a process paused) has its session ended by the server, and its locks freed.
            "options": (f"{options} -c synchronous_commit=on -c statement_timeout={timeout_ms}"
                        f" -c idle_in_transaction_session_timeout={timeout_ms}").strip(),
            # Data sent and not acknowledged this long: the connection is dead (a server gone silent).
            "tcp_user_timeout": timeout_ms,
        }
        # A connection of its own first: a server that cannot be reached is told at start-up, with
        # libpq's reason (a pool would only say that it timed out).
        try:
            with self._connection_class.connect(url, **settings) as conn:
                self._create_schema(conn)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())  # one line: libpq's messages run over several
            raise StorageError(f"cannot open the database {self.name}: {reason}") from None
        self._pool = ConnectionPool(
            url,
            kwargs=settings,
            connection_class=self._connection_class,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=seconds,  # a request waits this long for a connection, then 503
            reconnect_timeout=RECONNECT_SECONDS,
            name="backup-api",
            open=True,
        )

    @contextmanager
    def _connection(self, failure: str) -> Iterator[psycopg.Connection]:
        """Lend a connection of the pool; database failures become StorageError.

        A connection found broken means the server went away or restarted: the others idle in the
        pool are most likely broken too, so they are replaced rather than lent one by one to fail.
        """
        try:
            with self._pool.connection() as conn:
                try:
                    yield conn
                finally:
                    if conn.broken:
                        self._pool.drain()
        except psycopg.Error as exc:
            raise StorageError(f"{failure}: {exc}") from exc

    def _create_schema(self, conn: psycopg.Connection) -> None:
        """Create the tables of a new database, or upgrade an older layout (one transaction); refuse another layout."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LAYOUT_LOCK,))  # one process creates them
            if _one(conn.execute("SELECT to_regclass('events') IS NULL")):
                conn.execute(POSTGRES_TABLES + POSTGRES_REVOCATIONS + POSTGRES_TOTALS + POSTGRES_COUNTED)
                self._fill_layouts_after(conn, 0)
                conn.execute("INSERT INTO backup_api_layout VALUES (%s)", (SCHEMA_VERSION,))
            elif (layout := self._layout(conn)) in UPGRADES_FROM:
                if layout == 2:
                    conn.execute(POSTGRES_REVOCATIONS)
                if layout < 4:
                    conn.execute(POSTGRES_TOTALS)
                conn.execute(POSTGRES_COUNTED)
                self._fill_layouts_after(conn, layout)
                conn.execute("UPDATE backup_api_layout SET version = %s", (SCHEMA_VERSION,))
            version = self._layout(conn)
        if version != SCHEMA_VERSION:
            raise layout_refused(self.name, version, "use another database, or move its tables aside")

    @staticmethod
    def _layout(conn: psycopg.Connection) -> int:
        """Return the layout stamped in the database (0 where our tables are not all there)."""
        present = _one(conn.execute(
            "SELECT count(to_regclass(name)) FROM unnest(ARRAY['backup_api_layout', 'events', 'players']) AS name"
        ))
        if present != 3:
            return 0
        return _one(conn.execute("SELECT max(version) FROM backup_api_layout")) or 0

    # The hooks of SQLStore ------------------------------------------------------------

    def _reading(self):
        """Lend a connection of the pool to read with."""
        return self._connection("the database could not be read")

    @contextmanager
    def _snapshot(self, conn):
        """One read-only transaction that sees one snapshot throughout."""
        with conn.transaction():
            # A reader holds no lock a writer waits for: it may take its time (an export piped to a
            # slow consumer) without its session being ended for idling.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
                         " SET LOCAL idle_in_transaction_session_timeout = 0")
            yield

    @contextmanager
    def _stream(self, conn, sql, params, batch):
        """A cursor on the server: rows arrive batch at a time, and a page may stop early."""
        with conn.cursor("stream") as cursor:
            cursor.itersize = batch
            cursor.execute(sql, params)
            yield cursor

    def _connected(self, failure, wait_s=None):
        """Lend a connection of the pool (its waits bounded by the timeouts of every connection)."""
        return self._connection(failure)

    @contextmanager
    def _writing(self, failure):
        """Lend a connection of the pool in a transaction whose unconfirmed commit is WriteOutcomeUnknown."""
        with self._connection(failure) as conn, _transaction(conn):
            yield conn

    # Writing ----------------------------------------------------------------------------

    def _commit_group(self, group: list[WriteRequest]) -> None:
        """Write every request of group in one transaction: one statement for all their rows, in two round trips
        (the partners' locks and the rows at once; then COMMIT). The totals count them later (count_pending).

        Only where a request conflicts (rare) is the group written again, each request in a
        savepoint of its own, so that the conflict undoes that request alone.
        """
        rows = [row for request in group for row in request.rows]
        with self._connection("the events could not be stored") as conn:
            try:
                # One cursor for every statement: the lock's answer is not read, the INSERT's is read before
                # COMMIT goes out.
                cursor = conn.cursor()
                with _pipelined(conn, cursor):
                    self._hold_partners(cursor, {row.partner_id for row in rows})
                    new = self._new(conn, cursor.execute(INSERT, (records(rows),)), rows)
                    for request in group:
                        request.new, new = new[: len(request.rows)], new[len(request.rows) :]
            except EventConflict as exc:
                if len(group) == 1:
                    group[0].error = exc
                    return
                with _transaction(conn):
                    self._hold_partners(conn, {row.partner_id for row in rows})
                    for request in group:
                        try:
                            with conn.transaction():  # a savepoint
                                request.new = self._insert(conn, INSERT, request.rows)
                        except EventConflict as conflict:
                            request.error = conflict
                return

    @staticmethod
    def _insert(conn: psycopg.Connection, statement: str, rows: list[EventRow], ids: list | None = None) -> list[bool]:
        """Insert rows in one statement; say of each whether it was new. Raise EventConflict (with its index)."""
        return PostgresStore._new(conn, conn.execute(statement, (records(rows, ids),)), rows)

    @staticmethod
    def _new(conn: psycopg.Connection, inserted: psycopg.Cursor, rows: list[EventRow]) -> list[bool]:
        """Say of each of rows whether the INSERT whose cursor is inserted stored it. Raise EventConflict (with its
        index)."""
        keys = {dedupe_key(*row) for row in inserted}
        new = []
        for row in rows:
            key = dedupe_key(row.partner_id, row.event_id, row.content_key)
            new.append(key in keys)
            keys.discard(key)  # a second row with the same key, in the same call, is a resend
        resent = [(n, row) for n, (row, is_new) in enumerate(zip(rows, new, strict=True))
                  if not is_new and row.event_id is not None]
        if resent:
            # Only on a resend or a conflict, both rare: so no content key is kept for these events.
            held = PostgresStore._held_texts(conn, [(row.partner_id, row.event_id) for _, row in resent])
            for position, row in resent:
                assert row.event_id is not None  # only rows with one are looked up
                text = held[row.partner_id, row.event_id]
                if text != row.event and parsed_content_key(text) != parsed_content_key(row.event):
                    conflict = EventConflict(row.partner_id, row.event_id)
                    conflict.index = position
                    raise conflict
        return new

    @staticmethod
    def _held_texts(conn, keys):
        """Return the text of each event held of keys, (partner_id, event_id) pairs."""
        return {
            (partner_id, event_id): text
            for partner_id, event_id, text in conn.execute(
                "SELECT partner_id, event_id, event::text FROM events"
                " WHERE (partner_id, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([key[0] for key in keys], [key[1] for key in keys]),
            )
        }

    def _check_writable(self, conn, wait_s):
        """Refuse a server that takes no writes: a standby, or read-only by setting."""
        standby, read_only = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
        ).fetchone()
        if standby or read_only:
            raise StorageError("the database is read-only" + (" (a standby in recovery)" if standby else ""))
        # Take the locks a write takes, waiting no longer than a piece of an import holds them;
        # then look for sessions stopped inside a transaction while holding a partner's write lock.
        # Nothing is written, and the transaction is rolled back.
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(f"SET LOCAL lock_timeout = {int(wait_s * 1000)}")
                conn.execute("LOCK TABLE events, players IN ROW EXCLUSIVE MODE")
                (stopped,) = conn.execute(STOPPED_HOLDERS).fetchone()
        except psycopg.errors.LockNotAvailable:
            raise StorageError(f"writes are held out: another session has held the tables for over"
                               f" {int(wait_s * 1000)} ms (an import stopped, or a stalled client)") from None
        if stopped:
            raise StorageError(f"writes are held out: {stopped} session(s) hold a partner's write lock, idle inside"
                               " a transaction (a process stopped or frozen); the database ends them after"
                               " the timeout")

    def _hold_partners(self, conn, partner_ids):
        """Take each partner's write lock, held until the commit (a group commit, an erasure, a prune's piece).

        Ids come from a sequence, handed out before the commit: without the lock, a reader paging
        by id could see id 11 committed while id 10 is not yet, go on after 11, and never see 10.
        Under the lock, a partner's ids are committed in the order they were handed out, across
        every process; and once the lock is held, every id handed out to the partner so far is
        committed (or rolled back), so the totals may count its events up to the last (count_pending).
        Taken in one order everywhere, so that two writers never wait on each other.
        """
        for lock in sorted({partner_lock(partner_id) for partner_id in partner_ids}):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))

    def _held_event_ids(self, conn, partner_id, event_ids):
        """One statement with the ids as an array: a list of a thousand parameters took PostgreSQL 60 ms to plan."""
        return [event_id for (event_id,) in conn.execute(
            "SELECT event_id FROM events WHERE partner_id = %s AND event_id = ANY(%s)", (partner_id, event_ids))]

    def _start_import(self, conn):
        """No other writer during a piece of an import, in any process: ids stay in commit order.

        Writers waiting for the lock are queued, and take it before the next piece.
        """
        conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")

    def _import_chunk(self, conn, chunk, keep_ids):
        """Insert a chunk in one statement."""
        rows = [EventRow._make(row) for _, row in chunk]
        if keep_ids:
            return self._insert(conn, INSERT_WITH_IDS, rows, [id_ for id_, _ in chunk])
        return self._insert(conn, INSERT, rows)

    def _finish_import(self, conn, kept_ids):
        """After ids were given, not drawn: make the next one drawn follow the last."""
        if kept_ids:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'id'), greatest(max(id), 1), max(id) IS NOT NULL)"
                " FROM events"
            )

    def _flag_selects(self, conn, staged, after):
        """SELECTs of the flags as arrays, in rounds that hold a player once each, in the file's order.

        PostgreSQL refuses a statement that would change one row twice: a player's second line in a
        chunk goes in the round after its first.
        """
        rounds: list[dict] = []
        for partner_id, login, is_vip, updated_at, updated_by in staged.records(after, self.IMPORT_CHUNK):
            record = (partner_id, login, bool(is_vip), updated_at, updated_by)
            for round_ in rounds:
                if record[:2] not in round_:
                    round_[record[:2]] = record
                    break
            else:
                rounds.append({record[:2]: record})
        for round_ in rounds:
            yield FLAGS, [list(column) for column in zip(*round_.values(), strict=True)]

    def gauges(self):
        """This process's pool of connections: its size, those lent out, and the requests waiting for one."""
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        return {
            "pg_pool_connections": ("Connections of this process's pool to PostgreSQL.", size),
            "pg_pool_connections_in_use": ("Connections of the pool lent to a request now.",
                                           size - stats.get("pool_available", 0)),
            "pg_pool_requests_waiting": ("Requests waiting for a connection of the pool.",
                                         stats.get("requests_waiting", 0)),
        }

    def check(self):
        """Return the layout, whether the tables and their UNIQUE indexes are whole, and the events and players."""
        with self._reading() as conn:
            layout = self._layout(conn)
            if layout == 0:
                return 0, ["the service's tables are missing"], 0, 0
            invalid = [
                name
                for (name,) in conn.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid IN"
                    " ('events'::regclass, 'players'::regclass, 'revocations'::regclass)"
                    " AND NOT (indisvalid AND indisready)"
                )
            ]
            problems = [f"index {name} is not valid (REINDEX it)" for name in invalid] or ["ok"]
            events, players = conn.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM players)"
            ).fetchone()
        return layout, problems, events, players

    def snapshot(self, destination):
        """Refuse: a PostgreSQL database is copied by PostgreSQL's own tools."""
        raise StorageError(
            "db snapshot copies a SQLite file; back up a PostgreSQL database with pg_dump (or `events export`)"
        )

    def restore(self, snapshot):
        """Refuse: a PostgreSQL database is restored by PostgreSQL's own tools."""
        raise StorageError(
            "db restore replaces a SQLite file; restore a PostgreSQL database with pg_restore (or `events import`)"
        )

    def close(self):
        """Close the connections."""
        self._pool.close()
