"""Layouts in the field: a database written by every released layout opens and serves, unchanged.

A release that changes the layout must migrate these files in place at start-up (keeping a
snapshot of the old file beside it); this test is where each released layout stays, so that a
change of the tables without a migration fails here.
"""

import hashlib
import json
import sqlite3

import psycopg

from backup_api import create_app
from tests.helpers import SECRET, bearer, make_token, valid_event

# Layout 2, exactly as the releases that write it create it (SQLite's own text of each statement).
LAYOUT_2 = """
CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY,
   "partner_id" TEXT NOT NULL,
   "event_id" TEXT,
   "content_key" BLOB,
   "player_login" TEXT NOT NULL,
   "received_at" INTEGER NOT NULL,
   "sub" TEXT NOT NULL,
   "event" TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_event_id ON events (partner_id, event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX events_by_content ON events (content_key) WHERE content_key IS NOT NULL;
CREATE INDEX "idx_events_partner_id"
    ON "events" ("partner_id");
CREATE TABLE "players" (
   "partner_id" TEXT,
   "player_login" TEXT,
   "is_vip" INTEGER NOT NULL,
   "updated_at" TEXT NOT NULL,
   "updated_by" TEXT NOT NULL,
   PRIMARY KEY ("partner_id", "player_login")
);
PRAGMA user_version = 2;
"""

# Layout 3 added the revocations.
LAYOUT_3 = LAYOUT_2.replace("PRAGMA user_version = 2;", """CREATE TABLE "revocations" (
   "kind" TEXT,
   "value" TEXT,
   "revoked_at" INTEGER NOT NULL,
   PRIMARY KEY ("kind", "value")
);
PRAGMA user_version = 3;""")

# Layout 4 added the totals (what a partner holds by day, event_type and currency) and the erasures.
LAYOUT_4 = LAYOUT_3.replace("PRAGMA user_version = 3;", """CREATE TABLE "totals" (
   "partner_id" TEXT,
   "day" TEXT,
   "event_type" TEXT,
   "currency" TEXT,
   "events" INTEGER NOT NULL,
   "amounts" INTEGER NOT NULL,
   "amount" TEXT,
   PRIMARY KEY ("partner_id", "day", "event_type", "currency")
);
CREATE TABLE "erasures" (
   "id" INTEGER PRIMARY KEY,
   "erased_at" INTEGER NOT NULL,
   "partner_id" TEXT NOT NULL,
   "player_digest" TEXT NOT NULL,
   "sub" TEXT NOT NULL,
   "events" INTEGER NOT NULL,
   "vip" INTEGER NOT NULL
);
CREATE TABLE "erasure_salt" (
   "salt" TEXT NOT NULL
);
PRAGMA user_version = 4;""")

# Layout 5 added how far each partner's events are counted in its totals.
LAYOUT_5 = LAYOUT_4.replace("PRAGMA user_version = 4;", """CREATE TABLE "counted" (
   "partner_id" TEXT PRIMARY KEY,
   "through" INTEGER NOT NULL
);
PRAGMA user_version = 5;""")

OLD_EVENT = '{"partner_id":"casino_alpha","player_login":"p1","event_type":"bet","amount":5.00}'


def _layout_2_file(path):
    """A layout-2 database holding one event with an event_id, one keyed by content, and a VIP flag."""
    conn = sqlite3.connect(path)
    conn.executescript(LAYOUT_2)
    content_key = hashlib.sha256(
        b'{"amount":5e0,"event_type":"bet","partner_id":"casino_alpha","player_login":"p1"}'
    ).digest()[:16]
    conn.execute("INSERT INTO events VALUES (1, 'casino_alpha', NULL, ?, 'p1', 1764000000000000, 'old', ?)",
                 (content_key, OLD_EVENT))
    conn.execute("INSERT INTO events VALUES (2, 'casino_alpha', 'e-1', NULL, 'p2', 1764000000000001, 'old', ?)",
                 ('{"partner_id":"casino_alpha","player_login":"p2","event_type":"win","amount":1,"event_id":"e-1"}',))
    conn.execute("INSERT INTO players VALUES ('casino_alpha', 'p1', 1, '2025-11-24T16:00:00.000000Z', 'old')")
    conn.commit()
    conn.close()


def test_the_current_layout_is_layout_5_as_released(tmp_path):
    app = create_app({"DATABASE": str(tmp_path / "new.db"), "JWT_SECRET": SECRET})
    app.extensions["store"].close()
    conn = sqlite3.connect(tmp_path / "released.db")
    conn.executescript(LAYOUT_5)
    conn.close()
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    new, released = (sqlite3.connect(tmp_path / name) for name in ("new.db", "released.db"))
    assert new.execute(schema).fetchall() == released.execute(schema).fetchall()
    assert new.execute("PRAGMA user_version").fetchone() == released.execute("PRAGMA user_version").fetchone()
    new.close()
    released.close()


def test_a_layout_4_database_is_counted_through_each_partners_last_event_and_its_totals_stay_right(tmp_path):
    # As layout 4 kept them: the events and, in the same transaction, their totals.
    conn = sqlite3.connect(tmp_path / "released.db")
    conn.executescript(LAYOUT_4)
    for id_, partner in ((1, "casino_alpha"), (2, "casino_beta"), (3, "casino_alpha")):
        event = json.dumps({"partner_id": partner, "player_login": f"p{id_}", "event_type": "bet", "amount": 2.5,
                            "event_id": f"e{id_}"})
        conn.execute("INSERT INTO events VALUES (?, ?, ?, NULL, ?, 1764000000000000, 'old', ?)",
                     (id_, partner, f"e{id_}", f"p{id_}", event))
    conn.execute("INSERT INTO totals VALUES ('casino_alpha', '2025-11-24', 'bet', '', 2, 2, '5.0')")
    conn.execute("INSERT INTO totals VALUES ('casino_beta', '2025-11-24', 'bet', '', 1, 1, '2.5')")
    conn.execute("INSERT INTO erasure_salt VALUES ('00')")
    conn.commit()
    conn.close()
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "released.db"), "JWT_SECRET": SECRET})
    store = app.extensions["store"]
    assert store._conn.execute("SELECT * FROM counted ORDER BY partner_id").fetchall() == [
        ("casino_alpha", 3), ("casino_beta", 2)]
    store.count_pending(["casino_alpha", "casino_beta"])  # nothing past them: nothing counted twice
    assert store.check_totals() == []
    assert [(row.events, str(row.amount)) for row in store.summary("casino_alpha", "2025-11-24", "2025-11-24")] == [
        (2, "5.0")]
    store.close()


def test_a_layout_2_database_is_upgraded_in_place_keeping_a_copy_and_serves_as_it_was(tmp_path):
    _layout_2_file(tmp_path / "released.db")
    _layout_2_file(tmp_path / "expected.db")
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "released.db"), "JWT_SECRET": SECRET})
    client = app.test_client()
    # The file as it was, kept beside it: the same tables and rows (a copy, so not the same bytes).
    (kept,) = tmp_path.glob("released.db.layout-2-*")
    dump = [sqlite3.connect(path).iterdump() for path in (kept, tmp_path / "expected.db")]
    assert list(dump[0]) == list(dump[1])
    assert sqlite3.connect(kept).execute("PRAGMA user_version").fetchone() == (2,)
    assert (kept.stat().st_mode & 0o777) == 0o600
    assert app.test_cli_runner().invoke(args=["token", "revoke", "--jti", "j"]).exit_code == 0
    page = client.get("/player-events?partner_id=casino_alpha", headers=bearer()).get_data(as_text=True)
    assert f'"event": {OLD_EVENT}' in page and '"received_at": "2025-11-24T16:00:00.000000Z"' in page
    flag = client.get("/users/casino_alpha/player/p1/vip", headers=bearer()).get_json()
    assert flag == {"is_vip": True, "updated_at": "2025-11-24T16:00:00.000000Z", "updated_by": "old"}
    # What it holds still deduplicates: the same event again (another form of the amount) and the
    # same event_id with other content.
    again = {"partner_id": "casino_alpha", "player_login": "p1", "event_type": "bet", "amount": 5}
    assert client.post("/player-events", json=[again], headers=bearer()).get_json()["duplicates"] == 1
    conflict = valid_event("win", player_login="p2", amount=2, event_id="e-1")
    assert client.post("/player-events", json=conflict, headers=bearer()).status_code == 409
    assert client.post("/player-events", json=valid_event("bet", n=3), headers=bearer(make_token())).status_code == 200
    assert app.test_cli_runner().invoke(args=["db", "check"]).output.endswith("events: 3\nplayers: 1\ntotals: ok\n")
    # The totals the upgrade made from the events held, and kept since.
    summary = client.get("/player-events/summary?partner_id=casino_alpha", headers=bearer()).get_json()["rows"]
    assert [(r["day"], r["event_type"], r["events"], r["amount"]) for r in summary] == [
        ("2025-11-24", "bet", 1, "5.00"), ("2025-11-24", "win", 1, "1"), (summary[-1]["day"], "bet", 1, "5")]
    app.extensions["store"].close()


TABLES = ("events", "players", "revocations", "totals", "erasures", "erasure_salt")

# How each SQLite column type is written on PostgreSQL (by column where a type is used two ways).
_PG_TYPES = {"INTEGER": {"bigint"}, "TEXT": {"text"}, "BLOB": {"bytea"}}
_PG_TYPES_BY_COLUMN = {("events", "event"): "json", ("players", "is_vip"): "boolean"}


def _sqlite_layout(path) -> tuple[dict, set]:
    """SQLite's columns by table ([(name, type, not null, in the primary key)]) and its indexes."""
    conn = sqlite3.connect(path)
    try:
        columns = {
            table: [(name, kind, bool(notnull) or bool(pk), bool(pk))
                    for _, name, kind, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})")]
            for table in TABLES
        }
        indexes = set()
        for table in TABLES:
            for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                if origin == "pk":
                    continue  # the primary key, compared with the columns
                keys = tuple(row[2] for row in conn.execute(f"PRAGMA index_info({name})"))
                # Every SQLite index ends with the rowid (id): spelled out, as PostgreSQL's says it.
                keys += () if unique else ("id",)
                (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
                where = sql.partition(" WHERE ")[2].strip() or None
                indexes.add((table, keys, bool(unique), where))
    finally:
        conn.close()
    return columns, indexes


def _postgres_layout(url) -> tuple[dict, set]:
    """PostgreSQL's columns and indexes, in the form of _sqlite_layout's."""
    with psycopg.connect(url) as conn:
        columns = {}
        for table in TABLES:
            primary = {name for (name,) in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary", (table,))}
            columns[table] = [
                (name, kind, nullable == "NO", name in primary)
                for name, kind, nullable in conn.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_name = %s ORDER BY ordinal_position", (table,))
            ]
        indexes = set()
        for table, keys, unique, where in conn.execute(
            "SELECT c.relname, ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),"
            " i.indisunique, pg_get_expr(i.indpred, i.indrelid)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " WHERE c.relname = ANY(%s) AND NOT i.indisprimary", (list(TABLES),)
        ):
            indexes.add((table, tuple(keys), unique, where and where.strip("()")))
    return columns, indexes


def test_sqlite_and_postgresql_keep_the_same_columns_and_indexes(tmp_path, postgres_url):
    create_app({"DATABASE": str(tmp_path / "new.db"), "JWT_SECRET": SECRET}).extensions["store"].close()
    create_app({"DATABASE": postgres_url, "JWT_SECRET": SECRET}).extensions["store"].close()
    sqlite_columns, sqlite_indexes = _sqlite_layout(tmp_path / "new.db")
    pg_columns, pg_indexes = _postgres_layout(postgres_url)
    # PostgreSQL adds event_type, which SQLite reads from the event: the rest column for column.
    assert pg_columns["events"][-1] == ("event_type", "text", True, False)
    pg_columns["events"].pop()
    for table, columns in sqlite_columns.items():
        assert [c[0] for c in columns] == [c[0] for c in pg_columns[table]], table
        for (name, kind, not_null, pk), (_, pg_kind, pg_not_null, pg_pk) in zip(columns, pg_columns[table],
                                                                               strict=True):
            expected = _PG_TYPES_BY_COLUMN.get((table, name))
            assert pg_kind == expected if expected else pg_kind in _PG_TYPES[kind], (table, name, kind, pg_kind)
            assert (not_null, pk) == (pg_not_null, pg_pk), (table, name)
    assert sqlite_indexes == pg_indexes
