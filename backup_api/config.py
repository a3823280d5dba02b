"""The service's settings, read and checked at start, and what they open: the JWT secret and the store.

Settings come from BACKUP_API_* environment variables (or a test's mapping); a setting the service
cannot run with is a ConfigError, which the command line prints as one line. configure reads and
checks them and creates nothing; open_data creates and opens what they name.
"""

import hashlib
import os
import secrets
import threading

import click
from flask import Flask, current_app

from backup_api import storage

MIN_SECRET_BYTES = 32
DEFAULT_DATABASE = os.path.join("instance", "backup.db")
SECRET_FILE = "jwt-secret"
MAX_BODY_BYTES = 1 << 20

DEFAULTS = {
    # Under the working directory, not Flask's instance_path: that moves with where the code is
    # installed (and lies in a temporary folder for a frozen executable).
    "DATABASE": DEFAULT_DATABASE,
    "JWT_SECRET": None,
    "SYNCHRONOUS": "FULL",
    "BUSY_TIMEOUT_MS": 5000,
    "WAL_AUTOCHECKPOINT": 1000,
    "PG_TIMEOUT_MS": 5000,
    "LOG_LEVEL": None,  # INFO; for a stand-in, WARNING (no access line per request)
    "STAND_IN": False,
    "METRICS": True,
    "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
}


class ConfigError(click.ClickException):
    """The service is configured in a way it cannot run with.

    A click exception, so that the flask command prints it as one line ("Error: ...") and exits
    with status 1, rather than a traceback.
    """


def configure(app: Flask, test_config: dict | None) -> None:
    """Read the settings into app.config and check them; nothing is created until open_data."""
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
    if storage.is_url(database) and app.config["JWT_SECRET"] is None:
        # Every process, on every machine, must verify the tokens the others accept: one secret, set.
        raise ConfigError(
            "with a PostgreSQL database, set BACKUP_API_JWT_SECRET (the same on every server process), for"
            " instance to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if app.config["JWT_SECRET"] is not None:
        check_secret(app.config["JWT_SECRET"], "BACKUP_API_JWT_SECRET")
    timeout_setting = "PG_TIMEOUT_MS" if storage.is_url(database) else "BUSY_TIMEOUT_MS"
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
    app.config.update(JWT_ALGORITHM="HS256", JWT_DECODE_ALGORITHMS=["HS256"], JWT_TOKEN_LOCATION=["headers"])


SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def _flag(value) -> bool:
    """A yes-or-no setting: 1, true, yes or on (any case) is yes."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def open_data(app: Flask, stand_in: bool | None = None) -> None:
    """Create and open, once, what the settings name: the database's folder, the secret, the store.

    create_app calls it at once; under the command line, each command calls it when it needs it,
    so that `serve --stand-in` (stand_in=True) never touches the durable database's folder.
    """
    with _opening:
        if "store" in app.extensions:
            return
        if stand_in is not None:
            app.config["STAND_IN"] = stand_in
        if app.config["STAND_IN"]:
            from backup_api import standin  # only a stand-in loads it

            standin.open_data(app)
        else:
            _open_durable(app)
        app.extensions["cursor_key"] = hashlib.sha256(
            b"page cursors\0" + app.config["JWT_SECRET_KEY"].encode()
        ).digest()
        metrics = app.extensions.get("metrics")
        if metrics is not None:  # the store knows nothing of metrics, only of a callable
            app.extensions["store"].observe_commit = metrics.observe_commit
    warn_of_loose_modes(app)


_opening = threading.Lock()


def _open_durable(app: Flask) -> None:
    """Open the database BACKUP_API_DATABASE names (creating a SQLite file and its folder), and its secret."""
    database = str(app.config["DATABASE"])
    if storage.is_url(database):
        timeout_ms = int(app.config["PG_TIMEOUT_MS"])
        folder = None
    else:
        database = os.path.abspath(database)
        folder = os.path.dirname(database)
        try:
            storage.make_private_folder(folder)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of the database {database}: {exc}") from None
        timeout_ms = int(app.config["BUSY_TIMEOUT_MS"])
    app.config["JWT_SECRET_KEY"] = jwt_secret(app.config["JWT_SECRET"], folder)
    try:
        store = storage.open_store(database, synchronous=str(app.config["SYNCHRONOUS"]), timeout_ms=timeout_ms,
                                   wal_autocheckpoint=int(app.config["WAL_AUTOCHECKPOINT"]))
    except storage.StorageError as exc:
        raise ConfigError(str(exc)) from None
    app.extensions["store"] = store


def open_secret(app: Flask) -> None:
    """Make the secret ready for minting tokens: the configured one as it is; else the one beside the database."""
    if app.config["JWT_SECRET"] is not None:
        app.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET"]
    else:
        open_data(app)


def store() -> storage.Store:
    """Return the store the current app's settings name, opening it on first use."""
    app = current_app._get_current_object()
    if "store" not in app.extensions:
        open_data(app)
    return app.extensions["store"]


def check_secret(secret: str, where: str) -> None:
    """Refuse a secret too short for HS256."""
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {where} is {size} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
            " random bytes to resist guessing. Set a longer one, or unset it to have one generated."
        )


def jwt_secret(configured: str | None, folder: str | None) -> str:
    """Return the configured secret, or the one kept in folder, made on first start."""
    if configured is not None:
        where = "BACKUP_API_JWT_SECRET"
        secret = configured
    else:
        where = os.path.join(folder, SECRET_FILE)
        try:
            # O_EXCL: of two processes starting at once, exactly one writes the secret.
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, storage.PRIVATE_FILE)
        except FileExistsError:
            with open(where, encoding="utf-8") as f:
                secret = f.read().strip()
        else:
            secret = secrets.token_urlsafe(48)
            os.fchmod(fd, storage.PRIVATE_FILE)  # the umask may have taken bits off
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secret + "\n")
    check_secret(secret, where)
    return secret


def warn_of_loose_modes(app: Flask) -> None:
    """Log a warning for each existing data file that others may read; an operator's choice is not changed."""
    database = str(app.config["DATABASE"])
    if storage.is_url(database) or app.config["STAND_IN"]:
        return
    database = os.path.abspath(database)
    files = [database, database + "-wal", database + "-shm", os.path.join(os.path.dirname(database), SECRET_FILE)]
    for path, mode in storage.loose_modes(files):
        app.logger.warning("%s has mode %04o: users other than its owner can read or change it (chmod 600)", path, mode)
