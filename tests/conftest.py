"""Fixtures: an app on a temporary database (SQLite, and PostgreSQL), its client and CLI runner.

The helpers the tests share (tokens, events, what a store holds) are in tests/helpers.py.
"""

import pytest

from backup_api import create_app
from tests import postgres
from tests.helpers import SECRET, register_plugin


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="make check's loop: SQLite, in this process; no PostgreSQL, no other process, no long run")


def pytest_configure(config):
    """Register the plugin the wheel registers by its entry point, unless a build in this checkout made it visible."""
    register_plugin(config)


def pytest_collection_modifyitems(config, items):
    """With --quick, leave out the tests on PostgreSQL and those marked whole (make test runs them all)."""
    if not config.getoption("--quick"):
        return
    kept, left_out = [], []
    for item in items:
        on_postgres = getattr(item, "callspec", None) is not None and item.callspec.params.get("database") == (
            "postgresql")
        uses_postgres = on_postgres or {"postgres_url", "postgres_server"} & set(item.fixturenames)
        (left_out if uses_postgres or item.get_closest_marker("whole") else kept).append(item)
    config.hook.pytest_deselected(items=left_out)
    items[:] = kept


@pytest.fixture(scope="session")
def postgres_server():
    """Start a throwaway PostgreSQL for the session (or use BACKUP_API_TEST_POSTGRES); yield its databases."""
    url, server = postgres.start()
    try:
        yield postgres.Databases(url), server
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """Return the URL of a fresh, empty PostgreSQL database, dropped after the test."""
    databases = postgres_server[0]
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Return the database setting of a fresh store: each test using it runs on both backends."""
    if request.param == "sqlite":
        return str(tmp_path / "backup.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def app(database):
    """Return an app on a fresh database."""
    app = create_app({"TESTING": True, "DATABASE": database, "JWT_SECRET": SECRET})
    yield app
    app.extensions["store"].close()


@pytest.fixture
def sqlite_app(tmp_path):
    """Return an app on a fresh SQLite file (for a test that needs one backend only)."""
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "backup.db"), "JWT_SECRET": SECRET})
    yield app
    app.extensions["store"].close()


@pytest.fixture
def client(app):
    """Return a test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Return a CLI runner."""
    return app.test_cli_runner()


