"""File modes: what holds events, flags or the secret is its owner's alone, whatever the umask."""

import logging
import os
import stat

import pytest

from backup_api import create_app
from tests.helpers import make_token, post_event, valid_event


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o277], ids=["umask000", "umask022", "umask277"])
def umask(request):
    """Run the test under a given umask, restored afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_every_file_and_folder_the_service_writes_is_private(tmp_path, umask):
    folder = tmp_path / "data" / "deeper"
    database = folder / "backup.db"
    app = create_app({"TESTING": True, "DATABASE": str(database)})  # the secret is generated
    try:
        client = app.test_client()
        assert post_event(client, valid_event("bet"), token=_token(app)).status_code == 200
        for path in (database, f"{database}-wal", f"{database}-shm", folder / "jwt-secret"):
            assert mode(path) == 0o600, path
        for path in (tmp_path / "data", folder):
            assert mode(path) == 0o700, path

        # A new -wal after a checkpoint that removed the old one.
        store = app.extensions["store"]
        store.close()
        assert not os.path.exists(f"{database}-wal")  # the last connection closing removes it
        app = create_app({"TESTING": True, "DATABASE": str(database)})
        client = app.test_client()
        assert post_event(client, valid_event("win"), token=_token(app)).status_code == 200
        assert mode(f"{database}-wal") == 0o600

        # A snapshot, into a folder the command creates.
        target = tmp_path / "snapshots" / "snap.db"
        result = app.test_cli_runner().invoke(args=["db", "snapshot", str(target)])
        assert result.exit_code == 0, result.output
        assert mode(target) == 0o600
        assert mode(target.parent) == 0o700
    finally:
        app.extensions["store"].close()


def _token(app) -> str:
    """A token signed with the secret the app generated."""
    return make_token(secret=app.config["JWT_SECRET_KEY"])


def test_loose_modes_of_existing_files_are_reported_not_changed(tmp_path, caplog):
    database = tmp_path / "backup.db"
    create_app({"TESTING": True, "DATABASE": str(database)}).extensions["store"].close()
    os.chmod(database, 0o644)
    os.chmod(tmp_path / "jwt-secret", 0o640)
    caplog.set_level(logging.WARNING, logger="backup_api")
    app = create_app({"TESTING": True, "DATABASE": str(database)})
    app.extensions["store"].close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "backup_api"]
    assert any(str(database) in w and "0644" in w for w in warnings), warnings
    assert any("jwt-secret" in w and "0640" in w for w in warnings), warnings
    assert mode(database) == 0o644  # the operator's choice stands
    assert mode(tmp_path / "jwt-secret") == 0o640


def test_private_files_say_nothing_at_start_up(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="backup_api")
    for _ in range(2):
        create_app({"TESTING": True, "DATABASE": str(tmp_path / "backup.db")}).extensions["store"].close()
    assert [r for r in caplog.records if r.name == "backup_api"] == []


def test_exports_written_to_a_file_are_private_and_never_overwrite(tmp_path, umask):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "backup.db")})
    try:
        client = app.test_client()
        assert post_event(client, valid_event("bet"), token=_token(app)).status_code == 200
        runner = app.test_cli_runner()
        for group in ("events", "players"):
            target = tmp_path / "exports" / f"{group}.jsonl"
            result = runner.invoke(args=[group, "export", "--output", str(target)])
            assert result.exit_code == 0, result.output
            assert mode(target) == 0o600 and mode(target.parent) == 0o700
            assert target.read_text() == runner.invoke(args=[group, "export"]).output  # what stdout gets
            again = runner.invoke(args=[group, "export", "--output", str(target)])
            assert again.exit_code == 1 and "already exists" in again.output
        assert (tmp_path / "exports" / "events.jsonl").read_text().count("\n") == 1
    finally:
        app.extensions["store"].close()
