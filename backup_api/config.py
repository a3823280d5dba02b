"""The service's settings, read and checked at start, and what they open: the JWT secret and the store.

Settings come from BACKUP_API_* environment variables (or a test's mapping); a setting the service
cannot run with is a ConfigError, which the command line prints as one line.
"""

import hashlib
import os
import secrets

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
    "PG_TIMEOUT_MS": 5000,
    "LOG_LEVEL": "INFO",
    "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
}


class ConfigError(click.ClickException):
    """The service is configured in a way it cannot run with.

    A click exception, so that the flask command prints it as one line ("Error: ...") and exits
    with status 1, rather than a traceback.
    """


def configure(app: Flask, test_config: dict | None) -> None:
    """Read the settings into app.config, check them, and open the secret and the store they name."""
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        # loads=str: a secret such as "123..." must stay a string, not become a number.
        app.config.from_prefixed_env("BACKUP_API", loads=str)
    else:
        app.config.update(test_config)

    database = str(app.config["DATABASE"])
    if storage.is_url(database):
        # Every process, on every machine, must verify the tokens the others accept: one secret, set.
        if app.config["JWT_SECRET"] is None:
            raise ConfigError(
                "with a PostgreSQL database, set BACKUP_API_JWT_SECRET (the same on every server process), for"
                " instance to the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        timeout_setting = "PG_TIMEOUT_MS"
    else:
        database = os.path.abspath(database)
        try:
            storage.make_private_folder(os.path.dirname(database))
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of the database {database}: {exc}") from None
        timeout_setting = "BUSY_TIMEOUT_MS"
    app.config.update(
        JWT_SECRET_KEY=jwt_secret(app.config["JWT_SECRET"], os.path.dirname(database)),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
    )
    app.extensions["cursor_key"] = hashlib.sha256(b"page cursors\0" + app.config["JWT_SECRET_KEY"].encode()).digest()
    timeout_ms = str(app.config[timeout_setting])
    if not timeout_ms.isdigit() or int(timeout_ms) == 0:
        raise ConfigError(
            f"BACKUP_API_{timeout_setting} must be a positive whole number of milliseconds, not {timeout_ms!r}"
        )
    try:
        app.extensions["store"] = storage.open_store(
            database, synchronous=str(app.config["SYNCHRONOUS"]), timeout_ms=int(timeout_ms)
        )
    except ValueError as exc:  # the synchronous setting
        raise ConfigError(f"BACKUP_API_SYNCHRONOUS: {exc}") from None
    except storage.StorageError as exc:
        raise ConfigError(str(exc)) from None


def store() -> storage.Store:
    """Return the store the current app's settings opened."""
    return current_app.extensions["store"]


def jwt_secret(configured: str | None, folder: str) -> str:
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
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {where} is {size} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
            " random bytes to resist guessing. Set a longer one, or unset it to have one generated."
        )
    return secret


def warn_of_loose_modes(app: Flask) -> None:
    """Log a warning for each existing data file that others may read; an operator's choice is not changed."""
    database = str(app.config["DATABASE"])
    if storage.is_url(database):
        return
    database = os.path.abspath(database)
    files = [database, database + "-wal", database + "-shm", os.path.join(os.path.dirname(database), SECRET_FILE)]
    for path, mode in storage.loose_modes(files):
        app.logger.warning("%s has mode %04o: users other than its owner can read or change it (chmod 600)", path, mode)
