"""The service's settings: read from BACKUP_API_* environment variables (or a test's mapping) and checked.

A setting the service cannot run with is a ConfigError, which the command line prints as one line.
Nothing is opened or created here: the store opens in storage, the secret in tokens.
"""

import difflib
import ipaddress
import os
from collections.abc import Callable
from typing import NamedTuple

import click
import limits
from flask import Flask

MIN_SECRET_BYTES = 32
MIN_METRICS_TOKEN = 24
DEFAULT_DATABASE = os.path.join("instance", "backup.db")
MAX_BODY_BYTES = 1 << 20
URL_SCHEMES = ("postgresql://", "postgres://")
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")

class ConfigError(click.ClickException):
    """The service is configured in a way it cannot run with.

    A click exception, so that the flask command prints it as one line ("Error: ...") and exits
    with status 1, rather than a traceback.
    """


class Setting(NamedTuple):
    """One BACKUP_API_* setting: its name (without the prefix), its default, how its text is read, what it does."""

    name: str
    default: object
    #: parse(text, variable) returns the value, or raises ConfigError saying what is wrong with text.
    parse: Callable[[str, str], object]
    help: str
    #: Shown as set or unset, never its value.
    secret: bool = False
    #: How the documentation writes the default, where the value alone would not say it.
    shown_default: str | None = None


def _whole(least: int, unit: str) -> Callable[[str, str], int]:
    """A reader of a whole number of unit, least at the least."""
    def parse(raw: str, variable: str) -> int:
        text = raw.strip()
        # ASCII digits only ("²" is a digit to isdigit, not to int), and few enough for int to read.
        if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) < least:
            kind = "positive whole number" if least > 0 else "whole number"
            raise ConfigError(f"{variable} must be a {kind} of {unit}, not {raw!r}")
        return int(text)
    return parse


def _flag(raw: str, variable: str) -> bool:
    """A yes-or-no setting: 1, true, yes or on (any case) is yes; 0, false, no or off, no."""
    text = raw.strip().lower()
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ConfigError(f"{variable} must be 1 or 0 (or true or false, yes or no, on or off), not {raw!r}")
    return text in ("1", "true", "yes", "on")


def _database(raw: str, variable: str) -> str:
    if raw == ":memory:" or raw.startswith("file:"):
        raise ConfigError(f"{variable}={raw} would be taken for a file name; for a store that keeps nothing,"
                          " serve --stand-in")
    return raw


def _secret(raw: str, variable: str) -> str:
    check_secret(raw, variable)
    return raw


def _previous(raw: str, variable: str) -> str:
    for previous in previous_secrets(raw):
        check_secret(previous, variable)
    return raw


def _synchronous(raw: str, variable: str) -> str:
    if raw.upper() not in SYNCHRONOUS:
        raise ConfigError(f"{variable}: synchronous must be FULL, NORMAL or EXTRA, not {raw!r}")
    return raw.upper()


def _level(raw: str, variable: str) -> str:
    if raw.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{variable} must be DEBUG, INFO, WARNING or ERROR, not {raw.upper()!r}")
    return raw.upper()


def _log_format(raw: str, variable: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise ConfigError(f"{variable} must be text or json, not {raw!r}")
    return raw.lower()


def _proxy(raw: str, variable: str) -> str:
    if raw != "*":
        try:
            ipaddress.ip_address(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be the proxy's IP address (or *), not {raw!r}") from None
    return raw


def _metrics_token(raw: str, variable: str) -> str:
    if len(raw) < MIN_METRICS_TOKEN or not raw.isprintable() or " " in raw:
        raise ConfigError(f"{variable} must be at least {MIN_METRICS_TOKEN} printable characters without spaces,"
                          " e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return raw


def _rate_limit(raw: str, variable: str) -> str:
    if raw.strip().lower() != "off":
        try:
            limits.parse_many(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{variable} must be a limit such as 100/second;20000/hour, or off, not {raw!r}"
                              f" ({exc})") from None
    return raw


# Every BACKUP_API_* setting, declared once: configure() reads and checks them, `settings` shows them
# in effect, and docs/operators/settings.md shows settings_table() (generated as the site is built).
SETTINGS = (
    Setting("DATABASE", DEFAULT_DATABASE, _database,
            "the SQLite file, relative to the working directory unless absolute; created, with its folder, when"
            " missing. Or a PostgreSQL URL, `postgresql://user:password@host:5432/dbname` (libpq's form:"
            " `?sslmode=require` and the other libpq parameters work); the tables are created on first start"),
    Setting("JWT_SECRET", None, _secret,
            "the HS256 key, at least 32 bytes; a shorter one stops the service at start-up with a message saying"
            " why. Required with PostgreSQL: every process must hold the same one", secret=True,
            shown_default="generated (SQLite)"),
    Setting("JWT_PREVIOUS_SECRETS", None, _previous,
            "comma-separated secrets that still verify tokens and never sign one: for rotating the secret (see"
            " [Rotating the secret](tokens.md#rotating-the-secret))", secret=True),
    Setting("LOG_LEVEL", None, _level,
            "`DEBUG`, `INFO` (one access line per request), `WARNING` (only notable events and problems; about"
            " 12% more single events a second, see the benchmark) or `ERROR`",
            shown_default="`INFO` (`WARNING` for a stand-in)"),
    Setting("LOG_FORMAT", "text", _log_format,
            "`json`: every log line one JSON object, for log shippers, the access line's fields each its own (see"
            " [Installing and running](install.md#logs))"),
    Setting("METRICS", True, _flag,
            "`0` turns off `GET /metrics` and the counting (see [Metrics](metrics.md))", shown_default="on"),
    Setting("METRICS_TOKEN", None, _metrics_token,
            "a bearer credential `GET /metrics` asks for (see [Metrics](metrics.md)); unset, none", secret=True),
    Setting("MAX_TOKEN_DAYS", 400, _whole(1, "days"),
            "a token whose `exp` lies further ahead than this is refused (`401`); `token issue --days` stops at"
            " it"),
    Setting("RATE_LIMIT", None, _rate_limit,
            "requests per token holder, e.g. `100/second;20000/hour` (flask-limiter's syntax, read by `limits`),"
            " or `off` (see [A limit per token holder](tokens.md#a-limit-per-token-holder)); one it cannot read"
            " stops the service", shown_default="unset (none)"),
    Setting("TRUSTED_PROXY", None, _proxy,
            "the IP address of your reverse proxy (`127.0.0.1` when it runs on the same machine): its"
            " `X-Forwarded-For` and `X-Forwarded-Proto` are believed, so the access line shows the real client;"
            " unset, nobody's are. A forwarded client that is not an IP address is not believed: the"
            " connection's own address is used, and the access line says why (`client_note=...`)"),
    Setting("MAX_CONNECTIONS_PER_CLIENT", 500, _whole(1, "connections"),
            "the connections one client address may hold open at once; the next is answered `503` (`too many"
            " connections from this address`) and closed. The trusted proxy is not bounded (every connection"
            " behind it is its own): bound clients there, in the proxy"),
    Setting("MAX_BODY_BYTES_PER_CLIENT", 32 << 20, _whole(1, "bytes"),
            "the bytes of requests one client address may have sent and not yet had answered, over all its"
            " connections (waitress holds a body whole, on disk past 512 KiB, before the token is checked); a"
            " connection that would pass it is closed unanswered. The trusted proxy is not bounded",
            shown_default="33554432 (32 MiB)"),
    Setting("SYNCHRONOUS", "FULL", _synchronous,
            "SQLite's `synchronous` setting: `FULL` makes every acknowledged event survive a power cut, not only a"
            " crash"),
    Setting("BUSY_TIMEOUT_MS", 5000, _whole(1, "milliseconds"),
            "SQLite: how long a write waits for a lock held by another process (a long export, a snapshot, a"
            " piece of an import) before answering `503`, its wait behind this process's other writes included"),
    Setting("WAL_AUTOCHECKPOINT", 1000, _whole(0, "pages (0: never, for Litestream)"),
            "SQLite: pages of `-wal` after which a commit folds it into the file; `0` never, for Litestream (see"
            " [Litestream](litestream.md))"),
    Setting("PG_TIMEOUT_MS", 5000, _whole(1, "milliseconds"),
            "PostgreSQL: the longest a request waits on the database (to connect, for a pooled connection, for"
            " one statement or lock) before answering `503`; it also bounds how long a connection may go"
            " unanswered or stay idle inside a transaction, and the service itself gives up on any one answer"
            " from the server after 1.5 times it (a stalled server)"),
    Setting("RETENTION_DAYS", None, _whole(1, "days"),
            "events received more than this many days ago are deleted: at the server's start and then every"
            " day, in small pieces (VIP flags are kept); `db prune` does it on demand (see [Retention and"
            " erasure](retention.md))", shown_default="unset (keep everything)"),
    Setting("MIN_FREE_MB", 64, _whole(0, "MiB"),
            "SQLite: `/healthz` answers `503` (and `backup_api_store_writable` is 0) once the database's"
            " filesystem has less free space than this, before a write fails for want of room; writes go on"
            " until one does. `0`: only once a write has failed"),
    Setting("DRAIN_SECONDS", 0, _whole(0, "seconds"),
            "on `SIGTERM`, how long the server goes on serving while `/healthz` answers `503` (\"stopping\") and"
            " every answer closes its connection, so that a proxy checking `/healthz` sends elsewhere first (see"
            " [Restarts that drop nothing](postgresql.md#restarts-that-drop-nothing)); then it stops as"
            " with `0`. A second signal cuts the wait short"),
    Setting("STAND_IN_NAMESPACES", 100, _whole(1, "namespaces"),
            "a stand-in: the namespaces (worlds) it keeps beside the default one; past it, the least recently"
            " used is forgotten, but never one used within the last minute: a new namespace is then `503`,"
            " naming this setting"),
    Setting("STAND_IN_FAULTS", 10_000, _whole(1, "faults"),
            "a stand-in: the faults armed at once, over every partner and namespace; arming past it is `429`,"
            " naming this setting"),
    Setting("STAND_IN_JOURNAL_BYTES", 64 << 20, _whole(1, "bytes"),
            "a stand-in (`serve --stand-in`): the most its journal of requests holds, in bytes of bodies and"
            " answers (the oldest entries go first)", shown_default="67108864 (64 MiB)"),
)
PREFIX = "BACKUP_API_"
# Names that are not settings (any longer), and what to do instead.
NOT_SETTINGS = {
    "STAND_IN": "stand-in mode comes only from `serve --stand-in` (or the pytest fixture), never from the"
                " environment: this server keeps what it is sent",
    "STAND_IN_URL": None,  # the pytest plugin's, read by it alone
    "TEST_POSTGRES": None,  # the test suite's
}


def is_url(database: str) -> bool:
    """Tell whether the database setting names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(URL_SCHEMES)


def configure(app: Flask, test_config: dict | None) -> None:
    """Read the settings into app.config and check them: from the environment, or from test_config when given.

    Only SETTINGS are read from the environment, each by its parser; test_config may set other keys
    too (Flask's TESTING, the stand-in's STAND_IN). Where each setting's value came from is kept in
    app.extensions["settings"], and the environment's unknown BACKUP_API_* names in
    app.extensions["unknown_settings"] (the app warns of them once its log is set up).
    """
    given = _from_environment() if test_config is None else dict(test_config)
    sources = {}
    for setting in SETTINGS:
        raw = given.pop(setting.name, None)
        if raw is None:
            app.config[setting.name] = setting.default
            sources[setting.name] = "default"
        else:
            app.config[setting.name] = setting.parse(str(raw), PREFIX + setting.name)
            sources[setting.name] = "environment" if test_config is None else "test"
    app.config.update(given)  # a test's own keys (never the environment's)
    app.config["STAND_IN"] = bool(app.config.get("STAND_IN", False))
    app.extensions["settings"] = sources
    app.extensions["unknown_settings"] = [] if test_config is not None else _unknown(os.environ)
    if is_url(app.config["DATABASE"]) and app.config["JWT_SECRET"] is None:
        # Every process, on every machine, must verify the tokens the others accept: one secret, set.
        raise ConfigError(
            "with a PostgreSQL database, set BACKUP_API_JWT_SECRET (the same on every server process), for"
            " instance to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    # Set by the service, never by a setting: Flask's and flask-jwt-extended's own keys.
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JWT_ALGORITHM="HS256", JWT_DECODE_ALGORITHMS=["HS256"],
                      JWT_TOKEN_LOCATION=["headers"])


def _from_environment() -> dict:
    """The settings' texts in the environment (BACKUP_API_<NAME>), by name."""
    return {setting.name: os.environ[PREFIX + setting.name] for setting in SETTINGS
            if PREFIX + setting.name in os.environ}


def _unknown(environ) -> list[str]:
    """A warning for each BACKUP_API_* variable that is no setting, naming the nearest one (or what to do)."""
    known = [setting.name for setting in SETTINGS]
    warnings = []
    for variable in sorted(environ):
        name = variable[len(PREFIX):]
        if not variable.startswith(PREFIX) or name in known or (name in NOT_SETTINGS and not NOT_SETTINGS[name]):
            continue
        advice = NOT_SETTINGS.get(name)
        if advice is None:
            nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            advice = f"did you mean {PREFIX}{nearest[0]}?" if nearest else f"`settings` lists the {PREFIX}* settings"
        warnings.append(f"{variable} is not a setting and is ignored: {advice}")
    return warnings


def shown(app: Flask, setting: Setting) -> str:
    """The value of a setting in effect, as `settings` shows it: a secret as set or unset."""
    value = app.config[setting.name]
    if setting.name == "JWT_SECRET" and value is None:
        return "unset: the file jwt-secret beside the database signs"
    if setting.secret:
        return "unset" if value is None else "set"
    return "unset" if value is None else str(value)


def start_line(app: Flask, database: str) -> str:
    """What serve logs first: the version, the database (without its password), the settings not at their default."""
    from backup_api.version import __version__

    sources = app.extensions["settings"]
    changed = [f"{PREFIX}{setting.name}={shown(app, setting)}" for setting in SETTINGS
               if sources[setting.name] != "default" and setting.name != "DATABASE"]
    mode = " (a stand-in: nothing is kept)" if app.config["STAND_IN"] else ""
    return (f"game-backup-api {__version__} starting; database: {database}{mode}; settings not at their default: "
            + (", ".join(changed) or "none"))


def settings_table() -> str:
    """The table of settings of docs/operators/settings.md, in Markdown (its links relative to that page)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = setting.shown_default or ("unset" if setting.default is None else f"`{setting.default}`")
        lines.append(f"| `{PREFIX}{setting.name}` | {default} | {setting.help} |")
    return "\n".join(lines) + "\n"


def previous_secrets(setting: str | None) -> list[str]:
    """The secrets BACKUP_API_JWT_PREVIOUS_SECRETS lists, comma-separated."""
    return [secret.strip() for secret in str(setting or "").split(",") if secret.strip()]


def check_secret(secret: str, where: str) -> None:
    """Refuse a secret too short for HS256."""
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {where} is {size} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
            " random bytes to resist guessing. Set a longer one, or unset it to have one generated."
        )
