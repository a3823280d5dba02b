"""The JWT keys: the secret that signs, the previous ones that still verify, their ids, and the rotation
of the secret file.

BACKUP_API_JWT_SECRET signs (or, unset, the secret kept in jwt-secret beside the SQLite database);
BACKUP_API_JWT_PREVIOUS_SECRETS and the file jwt-secret.previous hold secrets that still verify and
never sign. A token the service mints names its key in its `kid` header: a fingerprint of the
secret, never the secret. A token without one (minted elsewhere) is tried against each key in turn.
"""

import hashlib
import os
import secrets
import threading
from contextlib import suppress

import jwt
from flask import Flask, current_app

from backup_api import record
from backup_api.config import ConfigError, check_secret, previous_secrets
from backup_api.storage.files import PRIVATE_FILE, make_private_folder, warn_of_loose_modes, write_private_file

# The generated secret's file, beside the SQLite database, and the retired ones still verifying.
SECRET_FILE = "jwt-secret"
PREVIOUS_FILE = "jwt-secret.previous"


def key_id(secret: str) -> str:
    """The id a token names its key by: a fingerprint that tells the secrets apart and reveals none."""
    return hashlib.sha256(b"backup-api key id\0" + secret.encode()).hexdigest()[:16]


def secret_key(app: Flask | None = None) -> str:
    """Return the secret that signs tokens, opening it on first use."""
    return _keys(app)[0]


def _keys(app: Flask | None = None) -> list[str]:
    """The secrets that verify, the signing one first: opened once, then kept with the app."""
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]  # a proxy; Flask types it the app
    keys = app.extensions.get("jwt_keys")
    if keys is None:
        with _opening:
            keys = app.extensions.get("jwt_keys")
            if keys is None:
                if app.config.get("JWT_SECRET_KEY") is None:  # a stand-in sets its own
                    app.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET"] or _secret_file(app)
                current = app.config["JWT_SECRET_KEY"]
                previous = previous_secrets(app.config["JWT_PREVIOUS_SECRETS"])
                if app.config["JWT_SECRET"] is None and not app.config["STAND_IN"]:
                    previous += _previous_file(app)
                keys = app.extensions["jwt_keys"] = [current, *(p for p in previous if p != current)]
    return keys


_opening = threading.Lock()


def verifying_key(header: dict, claims: dict) -> str:
    """The key to verify a token with: the one its kid names; without a kid, the first its signature fits."""
    keys = _keys()
    kid = header.get("kid")
    if kid is not None:
        by_id = {key_id(key): key for key in keys}
        return by_id.get(kid, keys[0])  # an unknown kid: the signature check fails, a 401
    token = record.current().token  # as tokens.bearer_token read it
    if token is None:  # not a request's token: only the signing key can be meant
        return keys[0]
    for key in keys[1:]:
        try:
            jwt.decode(token, key, algorithms=["HS256"], options={
                "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False})
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            break  # malformed: the real decode says so
        else:
            return key
    return keys[0]


def _folder(app: Flask) -> str:
    """The folder of the SQLite database (with a PostgreSQL URL, config requires a set secret)."""
    return os.path.dirname(os.path.abspath(str(app.config["DATABASE"])))


def _secret_file(app: Flask) -> str:
    """Return the secret kept beside the SQLite database, made on first start."""
    folder = _folder(app)
    try:
        make_private_folder(folder)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of the database {app.config['DATABASE']}: {exc}") from None
    where = os.path.join(folder, SECRET_FILE)
    try:
        # O_EXCL: of two processes starting at once, exactly one writes the secret.
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        with open(where, encoding="utf-8") as f:
            secret = f.read().strip()
        warn_of_loose_modes(app.logger, [where])
    else:
        secret = secrets.token_urlsafe(48)
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken bits off
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
    check_secret(secret, where)
    return secret


def _previous_file(app: Flask) -> list[str]:
    """The retired secrets kept beside the database, one a line (none when there is no such file)."""
    where = os.path.join(_folder(app), PREVIOUS_FILE)
    try:
        with open(where, encoding="utf-8") as f:
            found = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []
    warn_of_loose_modes(app.logger, [where])
    for secret in found:
        check_secret(secret, where)
    return found


def rotate_secret_file(app: Flask) -> str:
    """Make a new secret in jwt-secret; the one it replaces joins jwt-secret.previous. Return the new one's kid."""
    if app.config["JWT_SECRET"] is not None:
        raise ConfigError("the secret is BACKUP_API_JWT_SECRET's: rotate it there, the old one into"
                          " BACKUP_API_JWT_PREVIOUS_SECRETS (see the manual's Tokens page)")
    old = _secret_file(app)
    folder = _folder(app)
    previous = os.path.join(folder, PREVIOUS_FILE)
    kept = [*_previous_file(app), old]
    write_private_file(previous, (secret + "\n" for secret in kept), replace=True)
    new = secrets.token_urlsafe(48)
    write_private_file(os.path.join(folder, SECRET_FILE), [new + "\n"], replace=True)
    return key_id(new)


def retire_previous_file(app: Flask) -> int:
    """Remove jwt-secret.previous: its secrets verify no more (after a restart). Return how many it held."""
    if app.config["JWT_SECRET"] is not None:
        raise ConfigError("the secret is BACKUP_API_JWT_SECRET's: retire the old ones by emptying"
                          " BACKUP_API_JWT_PREVIOUS_SECRETS")
    held = len(_previous_file(app))
    with suppress(FileNotFoundError):
        os.remove(os.path.join(_folder(app), PREVIOUS_FILE))
    return held

