"""The PostgreSQL store's reads: pages in one snapshot, single events, flags, exports and the check."""

from backup_api.storage import base
from backup_api.storage.base import (
    conditions,
    fill_page,
    format_event,
    format_player,
)


class PostgresReads:
    """The reads of PostgresStore, a part of it (a mixin): they use its connections."""

    def read_events(
        self,
        partner_id,
        *,
        after=0,
        limit=100,
        player_login=None,
        event_type=None,
        event_id=None,
        received_after=None,
        received_before=None,
    ):
        """Return a page of a partner's events with id > after, oldest first, and the id to go on after."""
        filters, params = conditions((
            ("player_login = %s", player_login),
            ("event_type = %s", event_type),
            ("received_at > %s", received_after),
            ("received_at < %s", received_before),
        ))
        where = "".join(" AND " + clause for clause in filters)
        with self._connection("the database could not be read") as conn:
            if event_id is not None:
                # A key, not a filter: one lookup in the UNIQUE index, whatever the store's size.
                rows = conn.execute(
                    "SELECT id, received_at, event::text FROM events WHERE partner_id = %s AND event_id = %s"
                    " AND id > %s" + where,
                    [partner_id, event_id, after, *params],
                ).fetchall()
                return rows, None
            with conn.transaction():
                # One snapshot for the page and for where its window ended.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                window = (
                    "SELECT id, received_at, player_login, event_type, event FROM events"
                    " WHERE partner_id = %s AND id > %s"
                )
                window += f" ORDER BY id LIMIT {base.SCAN_WINDOW}"
                # A cursor on the server: rows arrive a few at a time, and the page may stop early.
                with conn.cursor("page") as cursor:
                    cursor.itersize = min(limit + 1, 200)
                    cursor.execute(
                        f"SELECT id, received_at, event::text FROM ({window}) AS w WHERE true{where} ORDER BY id",
                        [partner_id, after, *params],
                    )
                    page, more = fill_page(cursor, limit)
                if more:
                    return page, page[-1][0]
                scanned, last = conn.execute(
                    f"SELECT count(*), max(id) FROM (SELECT id FROM events WHERE partner_id = %s AND id > %s"
                    f" ORDER BY id LIMIT {base.SCAN_WINDOW}) AS w",
                    [partner_id, after],
                ).fetchone()
                return page, (last if scanned == base.SCAN_WINDOW else None)

    def get_event(self, event_row_id):
        """Return (partner_id, received_at in microseconds, exact JSON text) of a stored event, or None."""
        with self._connection("the database could not be read") as conn:
            return conn.execute(
                "SELECT partner_id, received_at, event::text FROM events WHERE id = %s", (event_row_id,)
            ).fetchone()

    def get_vip(self, partner_id, player_login):
        """Return (is_vip, updated_at, updated_by) of a player ever flagged, or None."""
        with self._connection("the database could not be read") as conn:
            return conn.execute(
                "SELECT is_vip, updated_at, updated_by FROM players WHERE partner_id = %s AND player_login = %s",
                (partner_id, player_login),
            ).fetchone()

    def export_events(self, partner_id=None, player_login=None):
        """Yield one JSON line per stored event, oldest first, with every column: what an import takes."""
        where, params = conditions((("partner_id = %s", partner_id), ("player_login = %s", player_login)))
        sql = "SELECT id, received_at, sub, event::text FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connection("the database could not be read") as conn, conn.transaction():
            with conn.cursor("export") as cursor:
                cursor.itersize = 1000
                for id_, received_at, sub, event in cursor.execute(sql + " ORDER BY id", params):
                    yield format_event(id_, received_at, event, sub)

    def export_players(self):
        """Yield one JSON line per player with a VIP flag, with every column: what an import takes."""
        sql = "SELECT partner_id, player_login, is_vip, updated_at, updated_by FROM players"
        sql += ' ORDER BY partner_id COLLATE "C", player_login COLLATE "C"'  # as SQLite orders: by bytes
        with self._connection("the database could not be read") as conn:
            for row in conn.execute(sql):
                yield format_player(*row)

    def check(self):
        """Return the layout, whether the tables and their UNIQUE indexes are whole, and the events and players."""
        with self._connection("the database could not be read") as conn:
            layout = self._layout(conn)
            if layout == 0:
                return 0, ["the service's tables are missing"], 0, 0
            invalid = [
                name
                for (name,) in conn.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index"
                    " WHERE indrelid IN ('events'::regclass, 'players'::regclass) AND NOT (indisvalid AND indisready)"
                )
            ]
            problems = [f"index {name} is not valid (REINDEX it)" for name in invalid] or ["ok"]
            events, players = conn.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM players)"
            ).fetchone()
        return layout, problems, events, players
