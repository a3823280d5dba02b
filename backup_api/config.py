"""The service's settings: read from BACKUP_API_* environment variables (or a test's mapping) and checked.

A setting the service cannot run with is a ConfigError, which the command line prints as one line.
Nothing is opened or created here: the store opens in storage, the secret in tokens.
"""

import ipaddress
import logging
import os

import click
from flask import Flask

MIN_SECRET_BYTES = 32
MIN_METRICS_TOKEN = 24
DEFAULT_DATABASE = os.path.join("instance", "backup.db")
MAX_BODY_BYTES = 1 << 20
URL_SCHEMES = ("postgresql://", "postgres://")
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")

DEFAULTS = {
    # Under the working directory, not Flask's instance_path: that moves with where the code is
    # installed (and lies in a temporary folder for a frozen executable).
    "DATABASE": DEFAULT_DATABASE,
    "JWT_SECRET": None,
    "JWT_PREVIOUS_SECRETS": None,  # comma-separated: they verify tokens, never sign one
    "SYNCHRONOUS": "FULL",
    "BUSY_TIMEOUT_MS": 5000,
    "WAL_AUTOCHECKPOINT": 1000,
    "PG_TIMEOUT_MS": 5000,
    "LOG_LEVEL": None,  # INFO; for a stand-in, WARNING (no access line per request)
    "LOG_FORMAT": "text",  # or json: one object per line, for log shippers
    "STAND_IN": False,
    # The stand-in's journal of requests holds at most this many bytes of bodies and answers.
    "STAND_IN_JOURNAL_BYTES": 64 << 20,
    "METRICS": True,
    # The reverse proxy's address (127.0.0.1, say): its X-Forwarded-For and -Proto are believed,
    # anyone else's dropped. Unset: no client can choose the address the access line shows.
    "TRUSTED_PROXY": None,
    # A bearer credential /metrics asks for (Prometheus's `authorization` block sends it); unset, none.
    "METRICS_TOKEN": None,
    # The longest a token may still have to live: one whose exp lies further is refused (401).
    "MAX_TOKEN_DAYS": 400,
    # Requests per token holder, in flask-limiter's syntax (100/second;20000/hour); unset or off, none.
    "RATE_LIMIT": None,
    "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
    # What one client address may hold of a server at once (the trusted proxy's excepted): its
    # connections, and the bytes of its requests received and not yet answered (which waitress
    # keeps in memory, or past 512 KiB on disk, before the app or its token check sees them).
    "MAX_CONNECTIONS_PER_CLIENT": 500,
    "MAX_BODY_BYTES_PER_CLIENT": 32 << 20,
}


class ConfigError(click.ClickException):
    """The service is configured in a way it cannot run with.

    A click exception, so that the flask command prints it as one line ("Error: ...") and exits
    with status 1, rather than a traceback.
    """


def is_url(database: str) -> bool:
    """Tell whether the database setting names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(URL_SCHEMES)


def configure(app: Flask, test_config: dict | None) -> None:
    """Read the settings into app.config and check them."""
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        # loads=str: a secret such as "123..." must stay a string, not become a number.
        app.config.from_prefixed_env("BACKUP_API", loads=str)
    else:
        app.config.update(test_config)
    app.config["STAND_IN"] = _flag(app.config["STAND_IN"])
    app.config["METRICS"] = _flag(app.config["METRICS"])
    database = str(app.config["DATABASE"])
    if database == ":memory:" or database.startswith("file:"):
        raise ConfigError(
            f"BACKUP_API_DATABASE={database} would be taken for a file name; for a store that keeps nothing,"
            " serve --stand-in"
        )
    if is_url(database) and app.config["JWT_SECRET"] is None:
        # Every process, on every machine, must verify the tokens the others accept: one secret, set.
        raise ConfigError(
            "with a PostgreSQL database, set BACKUP_API_JWT_SECRET (the same on every server process), for"
            " instance to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if app.config["JWT_SECRET"] is not None:
        check_secret(app.config["JWT_SECRET"], "BACKUP_API_JWT_SECRET")
    for previous in previous_secrets(app.config["JWT_PREVIOUS_SECRETS"]):
        check_secret(previous, "BACKUP_API_JWT_PREVIOUS_SECRETS")
    timeout_setting = "PG_TIMEOUT_MS" if is_url(database) else "BUSY_TIMEOUT_MS"
    timeout_ms = str(app.config[timeout_setting])
    if not timeout_ms.isdigit() or int(timeout_ms) == 0:
        raise ConfigError(
            f"BACKUP_API_{timeout_setting} must be a positive whole number of milliseconds, not {timeout_ms!r}"
        )
    if not str(app.config["WAL_AUTOCHECKPOINT"]).isdigit():
        raise ConfigError("BACKUP_API_WAL_AUTOCHECKPOINT must be a whole number of pages (0: never, for Litestream),"
                          f" not {app.config['WAL_AUTOCHECKPOINT']!r}")
    if str(app.config["SYNCHRONOUS"]).upper() not in SYNCHRONOUS:
        raise ConfigError(f"BACKUP_API_SYNCHRONOUS: synchronous must be FULL, NORMAL or EXTRA, not"
                          f" {app.config['SYNCHRONOUS']!r}")
    if not str(app.config["MAX_TOKEN_DAYS"]).isdigit() or int(app.config["MAX_TOKEN_DAYS"]) == 0:
        raise ConfigError("BACKUP_API_MAX_TOKEN_DAYS must be a positive whole number of days, not"
                          f" {app.config['MAX_TOKEN_DAYS']!r}")
    if not str(app.config["STAND_IN_JOURNAL_BYTES"]).isdigit() or int(app.config["STAND_IN_JOURNAL_BYTES"]) == 0:
        raise ConfigError("BACKUP_API_STAND_IN_JOURNAL_BYTES must be a positive whole number of bytes, not"
                          f" {app.config['STAND_IN_JOURNAL_BYTES']!r}")
    for name, unit in (("MAX_CONNECTIONS_PER_CLIENT", "connections"), ("MAX_BODY_BYTES_PER_CLIENT", "bytes")):
        if not str(app.config[name]).isdigit() or int(app.config[name]) == 0:
            raise ConfigError(f"BACKUP_API_{name} must be a positive whole number of {unit}, not {app.config[name]!r}")
        app.config[name] = int(app.config[name])
    token = app.config["METRICS_TOKEN"]
    if token is not None and (len(token) < MIN_METRICS_TOKEN or not token.isprintable() or " " in token):
        raise ConfigError(f"BACKUP_API_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN} printable characters"
                          " without spaces, e.g. the output of: python3 -c 'import secrets;"
                          " print(secrets.token_urlsafe(32))'")
    proxy = app.config["TRUSTED_PROXY"]
    if proxy is not None and proxy != "*":
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"BACKUP_API_TRUSTED_PROXY must be the proxy's IP address (or *), not {proxy!r}"
                              ) from None
    level = str(app.config["LOG_LEVEL"] or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"BACKUP_API_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    app.config["LOG_FORMAT"] = str(app.config["LOG_FORMAT"]).lower()
    if app.config["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"BACKUP_API_LOG_FORMAT must be text or json, not {app.config['LOG_FORMAT']!r}")
    app.config.update(JWT_ALGORITHM="HS256", JWT_DECODE_ALGORITHMS=["HS256"], JWT_TOKEN_LOCATION=["headers"])


def previous_secrets(setting: str | None) -> list[str]:
    """The secrets BACKUP_API_JWT_PREVIOUS_SECRETS lists, comma-separated."""
    return [secret.strip() for secret in str(setting or "").split(",") if secret.strip()]


def _flag(value) -> bool:
    """A yes-or-no setting: 1, true, yes or on (any case) is yes."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def check_secret(secret: str, where: str) -> None:
    """Refuse a secret too short for HS256."""
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {where} is {size} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
            " random bytes to resist guessing. Set a longer one, or unset it to have one generated."
        )
