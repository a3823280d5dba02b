"""Erasing a player: its events and VIP flag deleted in one transaction, and a receipt kept in their place.

A receipt says when, which partner, who asked, how many events and whether a flag went, and names
the player only by a digest: SHA-256 of a salt of the database's own (made with layout 4), the
partner and the login. So the receipt proves the erasure without keeping the player, and an
import (or a re-application after a restore) can still tell the player's lines by computing
the same digest.
"""

import hashlib
from typing import NamedTuple


class Receipt(NamedTuple):
    """What an erasure did, and when (microseconds since the epoch)."""

    erased_at: int
    partner_id: str
    player_digest: str
    sub: str  # who asked: a token's holder, or "command"
    events: int
    vip: bool


def digest(salt: str, partner_id: str, player_login: str) -> str:
    """The player's name in a receipt: a salted SHA-256, in hex."""
    return hashlib.sha256("\0".join((salt, partner_id, player_login)).encode("utf-8", "surrogatepass")).hexdigest()


class Erased:
    """The players erased, by (partner_id, digest): the latest erasure of each; and the salt to compute digests."""

    def __init__(self, salt: str, receipts: list[Receipt]):
        self.salt = salt
        self._at: dict[tuple[str, str], int] = {}
        for receipt in receipts:
            key = (receipt.partner_id, receipt.player_digest)
            self._at[key] = max(self._at.get(key, 0), receipt.erased_at)

    def __bool__(self) -> bool:
        return bool(self._at)

    def erased_at(self, partner_id: str, player_login: str) -> int | None:
        """When the player was last erased (microseconds), or None."""
        return self._at.get((partner_id, digest(self.salt, partner_id, player_login))) if self._at else None

    def before(self, partner_id: str, player_login: str, at: int) -> bool:
        """Whether the player was erased after `at` (microseconds): what it held then is gone for good."""
        erased_at = self.erased_at(partner_id, player_login)
        return erased_at is not None and at < erased_at
