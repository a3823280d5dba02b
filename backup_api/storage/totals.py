"""What a partner holds, day by day: the events and the exact sum of their amounts per (day, event_type,
currency), kept in the totals table.

The events are counted there after they are stored, not in the commit that stores them (issue 41: the
totals' row was a fifth of a single event's commit). Layout 5's `counted` table says, for each partner,
the id through which its events are in its totals: every one up to it, none after. A store counts the
events past it (SQLStore.count_pending) every thousand events it stores, and before anything that takes
events away from the totals (an erasure, a prune's piece) or counts them itself (an import's piece);
a read of the totals counts the partner's events past it as it reads. Amounts are added as decimals
of unbounded precision, never floats: 0.1 + 0.1 + 0.1 is 0.3, and a sum is the exact sum of the
amounts as sent. `db check` recounts the totals from the events.
"""

import decimal
import functools
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

# Exact: as many digits as a sum needs (an amount is at most about 1.8e308, and has at most the
# digits its JSON text has), so no addition ever rounds.
EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])
# The currency of events that carry none, in the table's key (a key column cannot hold NULL in
# a UNIQUE key on every backend); the answers say null.
NO_CURRENCY = ""


class Total(NamedTuple):
    """A row of a summary: a day (UTC, of received_at), an event_type, a currency or None, how many
    events, and the exact sum of their amounts (None when none carries one)."""

    day: str
    event_type: str
    currency: str | None
    events: int
    amount: Decimal | None


DAY_US = 86_400_000_000  # a day, in the microseconds of received_at


@functools.lru_cache(maxsize=64)
def _day(number: int) -> str:
    """The UTC day (YYYY-MM-DD) of a day's number since the epoch (received_at // DAY_US)."""
    return datetime.fromtimestamp(number * 86_400, UTC).strftime("%Y-%m-%d")


def parsed(text: str) -> dict:
    """A stored event's JSON text, read (it was checked when it came in: the standard parser, numbers exact)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


Key = tuple[str, str, str, str]  # partner_id, day, event_type, currency ("" for none)


# The staged events of an import (lines after ? up to ?, but those of the JSON array ?), grouped by their
# totals' key by SQLite: partner_id, day number, event_type, currency, how many, and the JSON texts of their
# amounts (exact: the text as stored) joined by spaces. A staged event was checked: its currency is three
# letters and its amount a number, when it has them.
STAGED_GROUPS = (
    f"SELECT partner_id, received_at / {DAY_US}, event_type, event ->> '$.currency', count(*),"
    " group_concat(event -> '$.amount', ' ')"
    " FROM {table} WHERE line > ? AND line <= ? AND line NOT IN (SELECT value FROM json_each(?))"
    " GROUP BY 1, 2, 3, 4")


def _key(partner_id: str, day: str, event_type: str, currency: object) -> Key:
    """A totals row's key: an event's currency as it is, when text, else NO_CURRENCY."""
    return partner_id, day, event_type, currency if isinstance(currency, str) else NO_CURRENCY


def grouped(groups: Iterable[tuple]) -> dict[Key, list]:
    """Count rows of STAGED_GROUPS as tally counts events (an import's pieces: each event's text parsed again
    in the process that writes took a fifth of an import's time)."""
    counts: dict[Key, list] = {}
    for partner_id, day, event_type, currency, events, amounts in groups:
        count = counts.setdefault(_key(partner_id, _day(day), event_type, currency), [0, 0, Decimal(0)])
        count[0] += events
        for amount in amounts.split(" ") if amounts else ():
            count[1] += 1
            count[2] = EXACT.add(count[2], Decimal(amount))
    return counts


def amount_text(amount: Decimal) -> str:
    """An amount in plain decimal notation (no exponent), as the table keeps it and the answer writes it."""
    return format(amount, "f")


def tally(events: Iterable[tuple[str, int, dict]]) -> dict[Key, list]:
    """Count events (partner_id, received_at, the event read) by key: {key: [events, with an amount, their sum]}.

    The key as _key makes it, written out here (a count after the commit tallies a thousand events at a time)."""
    counts: dict[Key, list] = {}
    amounts: dict[Key, list] = {}
    for partner_id, received_at, event in events:
        currency = event.get("currency")
        key = (partner_id, _day(received_at // DAY_US), event["event_type"],
               currency if isinstance(currency, str) else NO_CURRENCY)
        count = counts.get(key)
        if count is None:
            count = counts[key] = [0, 0, Decimal(0)]
            amounts[key] = []
        count[0] += 1
        amount = event.get("amount")
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = Decimal(amount)  # a caller of the store's own (the store writes ints as they are)
        if isinstance(amount, Decimal):
            amounts[key].append(amount)
    with decimal.localcontext(EXACT):  # each addition exact
        for key, count in counts.items():
            count[1] = len(amounts[key])
            count[2] = sum(amounts[key], Decimal(0))
    return counts


def count_events(conn, sql, events: Iterable[tuple[str, int, dict]], sign: int = 1) -> None:
    """Add events (partner_id, received_at, the event read), held on conn's transaction, to their totals; sign -1:
    take events just deleted away from them (a row left with none is deleted)."""
    add_counts(conn, sql, tally(events), sign)


def add_counts(conn, sql, counts: dict[Key, list], sign: int = 1) -> None:
    """Add counts (as tally makes them) to the totals on conn's transaction; sign -1: take them away."""
    for key, (events_changed, amounts_changed, amount_changed) in counts.items():
        held_row = conn.execute(sql.total, key).fetchone()
        count, amounts, amount = (0, 0, Decimal(0)) if held_row is None else (
            held_row[0], held_row[1], Decimal(0) if held_row[2] is None else Decimal(held_row[2]))
        count, amounts = count + sign * events_changed, amounts + sign * amounts_changed
        amount = EXACT.add(amount, amount_changed) if sign > 0 else EXACT.subtract(amount, amount_changed)
        if count == 0:
            conn.execute(sql.drop_total, key)
        else:
            conn.execute(sql.put_total, (*key, count, amounts, amount_text(amount) if amounts else None))


def added(row: tuple | None, count: list) -> tuple[int, int, str | None]:
    """A totals row's (events, with an amount, their sum's text or None), None for none, with a tally's count
    added (events not counted into the table yet, counted as they are read)."""
    events, amounts, amount = row or (0, 0, None)
    if count[1]:
        amount = amount_text(EXACT.add(Decimal(0) if amount is None else Decimal(amount), count[2]))
    return events + count[0], amounts + count[1], amount


def recount(rows: Iterable[tuple[str, int, dict]]) -> dict[Key, tuple[int, int, str | None]]:
    """The totals table's rows as the events say they should be: {key: (events, with an amount, their sum or None)}."""
    return {key: (count, amounts, amount_text(amount) if amounts else None)
            for key, (count, amounts, amount) in tally(rows).items()}
