"""A real PostgreSQL for the tests: a throwaway server (pgserver's PostgreSQL 16), or the one a user names.

BACKUP_API_TEST_POSTGRES=postgresql://user@host/dbname points the tests at a server of your own:
they create (and drop) databases named backup_api_test_* on it, so the user needs CREATEDB.
"""

import itertools
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict


def _pgserver():
    """pgserver, imported when a test first needs a server (make check's tests never do)."""
    with warnings.catch_warnings():
        # platformdirs warns, on import, of a missing XDG_RUNTIME_DIR (none in CI); pgserver copes.
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver import _commands

    return pgserver, _commands

OWN_SERVER = "BACKUP_API_TEST_POSTGRES"


class Throwaway:
    """A PostgreSQL server in a temporary folder, stopped and deleted by stop()."""

    def __init__(self):
        # As root, pgserver runs PostgreSQL as its own user: the folder must be one it can enter.
        self.folder = Path(tempfile.mkdtemp(prefix="backup-api-pg-"))
        self.folder.chmod(0o755)
        self.pgdata = self.folder / "data"
        self.server = _pgserver()[0].get_server(self.pgdata, cleanup_mode="delete")
        self.url = self.server.get_uri()

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this server's data folder, as the user it runs as."""
        _pgserver()[1].pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def stop_server(self) -> None:
        """Stop PostgreSQL at once (fast mode: connections are cut), keeping its data."""
        self.pg_ctl("-w", "-m", "fast", "stop")

    def start_server(self) -> None:
        """Start PostgreSQL again on the same socket and data."""
        socket_dir = conninfo_to_dict(self.url)["host"]
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


class Databases:
    """Fresh, empty databases on one PostgreSQL server, one per test: each a schema of its own.

    A schema, not a database: DROP DATABASE forces a checkpoint, a second or more on a slow disk,
    where DROP SCHEMA takes milliseconds. The URL selects it with libpq's options parameter.
    """

    _numbers = itertools.count(1)

    def __init__(self, url: str):
        self.url = url

    def _execute(self, sql: str) -> None:
        """Run one statement on the server's own database."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def create(self) -> str:
        """Create an empty schema; return the URL of a database that is just that schema."""
        name = f"backup_api_test_{os.getpid()}_{next(self._numbers)}"
        self._execute(f"CREATE SCHEMA {name}")
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query) + [("options", f"-c search_path={name}")]
        return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))

    def drop(self, url: str) -> None:
        """Drop a schema made by create, with everything in it."""
        options = dict(parse_qsl(urlsplit(url).query))["options"]
        self._execute(f"DROP SCHEMA {options.split('=')[1]} CASCADE")


def start() -> tuple[str, "Throwaway | None"]:
    """Return the URL of the server the tests use, and the throwaway server started for them (or None)."""
    own = os.environ.get(OWN_SERVER)
    if own:
        return own, None
    server = Throwaway()
    return server.url, server
