"""The SQL of the algorithms both stores share, written once from the words in which their dialects differ."""

from typing import NamedTuple


class Dialect(NamedTuple):
    """The words in which the two backends' SQL differs."""

    mark: str  # a parameter: "?" or "%s"
    event_text: str  # the event's JSON text as a string
    event_type: str  # the event's type, to filter on
    by_bytes: str  # what makes ORDER BY compare text by its bytes ("" where it already does)
    window: str  # the columns a page's window passes on to its filters


class Statements:
    """The statements of the shared algorithms, in one backend's dialect."""

    def __init__(self, d: Dialect):
        m = d.mark
        self.filters = (
            ("player_login", f"player_login = {m}"),
            ("event_type", f"{d.event_type} = {m}"),
            ("received_after", f"received_at > {m}"),
            ("received_before", f"received_at < {m}"),
        )
        # The window's size is a parameter: SCAN_WINDOW, read at each call.
        window = f"SELECT {d.window} FROM events WHERE partner_id = {m} AND id > {m} ORDER BY id LIMIT {m}"
        # {where}: the filters given, each " AND ..."; ORDER BY inside the window's LIMIT, and again outside.
        self.page = f"SELECT id, received_at, {d.event_text} FROM ({window}) AS w WHERE true{{where}} ORDER BY id"
        self.window_end = (f"SELECT count(*), max(id) FROM (SELECT id FROM events WHERE partner_id = {m}"
                           f" AND id > {m} ORDER BY id LIMIT {m}) AS w")
        self.by_event_id = (f"SELECT id, received_at, {d.event_text} FROM events"
                            f" WHERE partner_id = {m} AND event_id = {m} AND id > {m}{{where}}")
        self.get_event = f"SELECT partner_id, received_at, {d.event_text} FROM events WHERE id = {m}"
        self.get_vip = ("SELECT is_vip, updated_at, updated_by FROM players"
                        f" WHERE partner_id = {m} AND player_login = {m}")
        self.export_events = f"SELECT id, received_at, sub, {d.event_text} FROM events{{where}} ORDER BY id"
        self.export_players = ("SELECT partner_id, player_login, is_vip, updated_at, updated_by FROM players"
                               f" ORDER BY partner_id{d.by_bytes}, player_login{d.by_bytes}")
        self.any_event = "SELECT 1 FROM events LIMIT 1"
        self.empty = "SELECT NOT EXISTS (SELECT 1 FROM events)"
        self.last_id = "SELECT coalesce(max(id), 0) FROM events"
        # A player's VIP flag, added or replaced (from a VALUES or a SELECT of the five columns).
        players = "INSERT INTO players (partner_id, player_login, is_vip, updated_at, updated_by) {select}"
        replace = (" ON CONFLICT (partner_id, player_login) DO UPDATE SET"
                   " is_vip = excluded.is_vip, updated_at = excluded.updated_at, updated_by = excluded.updated_by")
        self.upsert_player = players.format(select=f"VALUES ({m}, {m}, {m}, {m}, {m})") + replace
        # Imported flags ({select}): the players not held are added; then each flag replaces a held
        # one only when newer (times in one form: their text orders them). The rule is the
        # database's, inside the statement that writes: a flag the service sets meanwhile is never
        # overwritten by an older one.
        self.add_players = players + " ON CONFLICT DO NOTHING"
        self.merge_players = players + replace + " WHERE excluded.updated_at > players.updated_at"
        self.revoke = (f"INSERT INTO revocations (kind, value, revoked_at) VALUES ({m}, {m}, {m})"
                       " ON CONFLICT (kind, value) DO UPDATE SET revoked_at = excluded.revoked_at")
        self.lift = f"DELETE FROM revocations WHERE kind = {m} AND value = {m}"
        self.revocations = "SELECT kind, value, revoked_at FROM revocations ORDER BY revoked_at, kind, value"
        # The totals (totals.py): one row read and written back with the events counted into it.
        key = f"partner_id = {m} AND day = {m} AND event_type = {m} AND currency = {m}"
        self.total = f"SELECT events, amounts, amount FROM totals WHERE {key}"
        self.put_total = ("INSERT INTO totals (partner_id, day, event_type, currency, events, amounts, amount)"
                          f" VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT (partner_id, day, event_type,"
                          " currency) DO UPDATE SET events = excluded.events, amounts = excluded.amounts,"
                          " amount = excluded.amount")
        self.drop_total = f"DELETE FROM totals WHERE {key}"
        self.summary = (f"SELECT day, event_type, currency, events, amounts, amount FROM totals"
                        f" WHERE partner_id = {m} AND day >= {m} AND day <= {m}")
        self.all_totals = "SELECT partner_id, day, event_type, currency, events, amounts, amount FROM totals"
        # How far each partner's events are in its totals (layout 5): those with an id up to `through`, none after.
        through = f"coalesce((SELECT through FROM counted WHERE partner_id = {m}), 0)"
        self.uncounted = (f"SELECT id, received_at, {d.event_text} FROM events"
                          f" WHERE partner_id = {m} AND id > {through} ORDER BY id")
        self.all_uncounted = (f"SELECT e.partner_id, received_at, {d.event_text} FROM events AS e LEFT JOIN counted"
                              " AS c ON c.partner_id = e.partner_id WHERE e.id > coalesce(c.through, 0)")
        self.put_through = (f"INSERT INTO counted (partner_id, through) VALUES ({m}, {m})"
                            " ON CONFLICT (partner_id) DO UPDATE SET through = excluded.through")
        # An import's events counted with the partner's others: through its last (one step down the index: SQLite
        # reads every row of the partner for a max(id) ... GROUP BY, 27 ms at 200,000, at each piece).
        self.through_last = (f"INSERT INTO counted (partner_id, through) SELECT partner_id, id FROM events"
                             f" WHERE partner_id = {m} ORDER BY id DESC LIMIT 1"
                             " ON CONFLICT (partner_id) DO UPDATE SET through = excluded.through")
        self.all_through_last = ("INSERT INTO counted (partner_id, through)"
                                 " SELECT partner_id, max(id) FROM events GROUP BY partner_id")
        # After a delete: SQLite hands the largest id out again once its row is gone, so no partner may be
        # counted past the last id held (every event up to it is counted, and none after it is held).
        last = "(SELECT coalesce(max(id), 0) FROM events)"
        self.lower_through = f"UPDATE counted SET through = {last} WHERE through > {last}"
        self.counted_events = f"SELECT partner_id, received_at, {d.event_text} FROM events"
        # Erasing a player (erasure.py): the events counted off the totals, then deleted; the flag; the receipt.
        player = f"partner_id = {m} AND player_login = {m}"
        self.player_events = f"SELECT partner_id, received_at, {d.event_text} FROM events WHERE {player}"
        self.erase_events = f"DELETE FROM events WHERE {player}"
        self.erase_flag = f"DELETE FROM players WHERE {player}"
        self.salt = "SELECT salt FROM erasure_salt"
        self.add_receipt = ("INSERT INTO erasures (erased_at, partner_id, player_digest, sub, events, vip)"
                            f" VALUES ({m}, {m}, {m}, {m}, {m}, {m})")
        self.receipts = "SELECT erased_at, partner_id, player_digest, sub, events, vip FROM erasures{where} ORDER BY id"
        self.players_of = (f"SELECT DISTINCT player_login FROM events WHERE partner_id = {m}"
                           f" UNION SELECT player_login FROM players WHERE partner_id = {m}")
        # A retention's prune: the oldest events' ids first, then the rows in their span, counted and deleted.
        self.old_events = f"SELECT id FROM events WHERE received_at < {m} ORDER BY id LIMIT {m}"
        span = f"id >= {m} AND id <= {m} AND received_at < {m}"
        self.old_rows = f"SELECT partner_id, received_at, {d.event_text} FROM events WHERE {span}"
        self.prune = f"DELETE FROM events WHERE {span}"
        # {marks}: one mark per id asked about.
        self.held_event_ids = f"SELECT event_id FROM events WHERE partner_id = {m} AND event_id IN ({{marks}})"
        self.mark = m
