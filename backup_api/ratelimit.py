"""A limit per token holder (BACKUP_API_RATE_LIMIT), counted in this process's memory by `limits`.

A request is counted once its token verified, under the token's `sub`, every route alike; one
whose token does not verify (or has none) is counted under the client's address instead, which
slows guessing. Over the limit: 429, with Retry-After and the RateLimit header fields.

`limits` is flask-limiter's own engine, called here directly: flask-limiter's way of checking a
limit from inside a view (after the token verified) walked the call stack and its bookkeeping on
every request, and cost a third of the single events a second (make bench); this costs a few µs.
"""

import math
import time
import zlib

from flask import Flask, current_app, request
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from backup_api import record


class OverLimit(TooManyRequests):
    """429, with when to retry and the limit that was reached (the IETF draft's RateLimit fields)."""

    def __init__(self, message: str, limit: int, retry_after: int):
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("Retry-After", str(self.retry_after)),
                ("RateLimit-Limit", str(self.limit)), ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", str(self.retry_after))]


class RateLimit:
    """The limits BACKUP_API_RATE_LIMIT names, and their counts by key, in this process."""

    def __init__(self, setting: str):
        self.setting = setting
        self.items = parse_many(setting)
        self._counter = FixedWindowRateLimiter(MemoryStorage())

    def count(self, key: str, who: str) -> None:
        """Count one request of key against every limit; past one, raise OverLimit."""
        for item in self.items:
            if not self._counter.hit(item, key):
                reset_at = self._counter.get_window_stats(item, key).reset_time
                raise OverLimit(f"too many requests {who} (BACKUP_API_RATE_LIMIT {self.setting})", item.amount,
                                max(1, math.ceil(reset_at - time.time())))


def init_app(app: Flask) -> None:
    """Limit each token holder as BACKUP_API_RATE_LIMIT says (unset or off: no limit)."""
    setting = str(app.config["RATE_LIMIT"] or "off").strip()
    if setting.lower() == "off":
        return
    app.extensions["rate_limit"] = RateLimit(setting)  # read by config's check already


def count_holder(sub: str) -> None:
    """Count this request against the token holder's limit; over it, raise the 429."""
    limit = record.this_app().extensions.get("rate_limit")
    if limit is not None:
        limit.count(f"sub:{sub}", "for this token holder")


# The keys of requests whose token did not verify: their address, hashed into this many. `limits`'
# memory storage walks every key it holds on a timer (each 10 ms under load, holding the GIL):
# one key an address let 30,000 addresses with bad tokens take 41% of a partner's throughput.
# Addresses sharing a key share its count; a token that verifies is counted by its holder alone.
ADDRESS_KEYS = 256


def count_address() -> None:
    """Count a request whose token did not verify against its address's limit; over it, raise the 429."""
    limit = current_app.extensions.get("rate_limit")
    if limit is not None:
        key = zlib.crc32(str(request.remote_addr).encode()) % ADDRESS_KEYS
        limit.count(f"address:{key}", "from this address")
