"""A limit per token holder (BACKUP_API_RATE_LIMIT), counted by flask-limiter in this process's memory.

A request is counted once its token verified, under the token's `sub`; one whose token does not
verify (or has none) is counted under the client's address instead, which slows guessing. Over
the limit: 429, with Retry-After and the RateLimit header fields.
"""

from flask import Flask, current_app
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

from backup_api.config import ConfigError


def init_app(app: Flask) -> None:
    """Limit each token holder as BACKUP_API_RATE_LIMIT says (unset or off: no limit)."""
    setting = str(app.config["RATE_LIMIT"] or "off").strip()
    if setting.lower() == "off":
        return
    try:
        parse_many(setting)
    except ValueError as exc:
        raise ConfigError(f"BACKUP_API_RATE_LIMIT must be a limit such as 100/second;20000/hour, or off, not"
                          f" {setting!r} ({exc})") from None
    @app.after_request  # registered first, so that it runs after flask-limiter's own (they run in reverse)
    def retry_after_only_when_refused(response):
        # flask-limiter sends Retry-After with every answer; it means something on a 429 only.
        if response.status_code != 429:
            response.headers.pop("Retry-After", None)
        return response

    limiter = Limiter(
        get_remote_address,  # the client's address: the forwarded one only from BACKUP_API_TRUSTED_PROXY
        storage_uri="memory://",
        headers_enabled=True,
        # The IETF draft's names, not flask-limiter's X-RateLimit-*.
        header_name_mapping={HeaderNames.LIMIT: "RateLimit-Limit", HeaderNames.REMAINING: "RateLimit-Remaining",
                             HeaderNames.RESET: "RateLimit-Reset"},
    )
    limiter.init_app(app)
    app.extensions["rate_limit"] = (limiter, setting)


def count_holder(sub: str) -> None:
    """Count this request against the token holder's limit; over it, raise the 429."""
    found = current_app.extensions.get("rate_limit")
    if found is not None:
        limiter, setting = found
        with limiter.shared_limit(setting, "holder", key_func=lambda: f"sub:{sub}",
                           error_message=f"too many requests for this token holder (BACKUP_API_RATE_LIMIT {setting})"):
            pass


def count_address() -> None:
    """Count a request whose token did not verify against its address's limit; over it, raise the 429."""
    found = current_app.extensions.get("rate_limit")
    if found is not None:
        limiter, setting = found
        with limiter.shared_limit(setting, "address",
                           error_message=f"too many requests from this address (BACKUP_API_RATE_LIMIT {setting})"):
            pass
