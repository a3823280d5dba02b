"""The settings, declared once (config.SETTINGS): read from the environment by their parsers alone, shown by
`settings`, documented by the table docs/operators/settings.md is given as the site is built
(tests/test_docs.py)."""

import logging

import pytest

from backup_api import config, create_app
from tests.helpers import SECRET, bearer, stored_events, valid_event
from tests.server import ROOT


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A clean BACKUP_API_* environment with a database in tmp_path; returns monkeypatch to set more."""
    import os

    for name in [name for name in os.environ if name.startswith(config.PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BACKUP_API_DATABASE", str(tmp_path / "b.db"))
    monkeypatch.setenv("BACKUP_API_JWT_SECRET", SECRET)
    return monkeypatch


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "backup_api" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(("variable", "value", "nearest"), [
    ("BACKUP_API_RATE_LIMT", "1/second", "BACKUP_API_RATE_LIMIT"),
    ("BACKUP_API_MAX_CONTENT_LENGTH", "2000000", None),
    ("BACKUP_API_JWT_SECRET_KEY", "short", "BACKUP_API_JWT_SECRET"),
])
def test_a_variable_that_is_no_setting_is_ignored_with_a_warning_naming_the_nearest(environment, caplog, variable,
                                                                                     value, nearest):
    environment.setenv(variable, value)
    app = create_app()
    warned = _warnings(caplog)
    assert any(variable in line and "is not a setting" in line for line in warned), warned
    if nearest:
        assert any(f"did you mean {nearest}?" in line for line in warned), warned
    client = app.test_client()
    assert client.post("/player-events", json=valid_event("bet"), headers=bearer()).status_code == 200
    assert app.config["MAX_CONTENT_LENGTH"] == config.MAX_BODY_BYTES and app.config["JWT_SECRET_KEY"] == SECRET
    assert "rate_limit" not in app.extensions
    app.extensions["store"].close()


def test_stand_in_mode_never_comes_from_the_environment(environment, caplog):
    environment.setenv("BACKUP_API_STAND_IN", "1")
    app = create_app()
    assert not app.config["STAND_IN"]
    assert any("serve --stand-in" in line for line in _warnings(caplog))
    assert app.test_client().post("/player-events", json=valid_event("bet"), headers=bearer()).status_code == 200
    assert len(stored_events(app)) == 1  # kept: a durable server
    app.extensions["store"].close()


def test_a_stand_in_with_a_database_set_says_it_will_not_touch_it(environment, caplog, tmp_path):
    from backup_api import standin

    app = create_app()
    app.extensions["store"].close()
    app = create_app()
    standin_app = create_app({"STAND_IN": True, "JWT_SECRET": SECRET, "DATABASE": str(tmp_path / "b.db")})
    assert not any("will not touch" in line for line in _warnings(caplog))  # a test's own setting: said nothing
    app.extensions.pop("store").close()
    standin.init_app(app)  # as serve --stand-in does, the database set in the environment
    assert any("will not touch that file" in line and str(tmp_path / "b.db") in line for line in _warnings(caplog))
    standin_app.extensions["store"].close()


def test_settings_shows_each_value_in_effect_and_where_it_came_from(environment):
    environment.setenv("BACKUP_API_MAX_TOKEN_DAYS", "30")
    environment.setenv("BACKUP_API_METRICS_TOKEN", "a-credential-for-prometheus-0123")
    result = create_app().test_cli_runner().invoke(args=["settings"])
    assert result.exit_code == 0, result.output
    lines = dict((line.split("\t")[0], line.split("\t")[1:]) for line in result.output.splitlines())
    assert [name for name in lines] == [config.PREFIX + setting.name for setting in config.SETTINGS]
    assert lines["BACKUP_API_MAX_TOKEN_DAYS"] == ["30", "environment"]
    assert lines["BACKUP_API_SYNCHRONOUS"] == ["FULL", "default"]
    assert lines["BACKUP_API_JWT_SECRET"] == ["set", "environment"]
    assert lines["BACKUP_API_METRICS_TOKEN"] == ["set", "environment"]
    assert lines["BACKUP_API_JWT_PREVIOUS_SECRETS"] == ["unset", "default"]
    assert SECRET not in result.output and "prometheus" not in result.output


def test_settings_refuses_a_bad_value_as_the_server_would(environment, tmp_path):
    import subprocess
    import sys


    environment.setenv("BACKUP_API_BUSY_TIMEOUT_MS", "soon")
    environment.setenv("PYTHONPATH", str(ROOT))
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "settings"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr == (
        "Error: BACKUP_API_BUSY_TIMEOUT_MS must be a positive whole number of milliseconds, not 'soon'\n")


def test_the_start_line_names_the_version_the_database_without_password_and_the_settings_changed(environment):
    from backup_api.storage.postgres import _without_password
    from backup_api.version import __version__

    environment.setenv("BACKUP_API_RATE_LIMIT", "300/second")
    app = create_app()
    line = config.start_line(app, _without_password("postgresql://u:hunter2@db:5432/b?password=hunter3&sslmode=require"))
    assert line.startswith(f"game-backup-api {__version__} starting; database: postgresql://u:***@db:5432/b?")
    assert "password=***" in line and "sslmode=require" in line and "hunter" not in line
    assert line.endswith("settings not at their default: BACKUP_API_JWT_SECRET=set, BACKUP_API_RATE_LIMIT=300/second")
    app.extensions["store"].close()
