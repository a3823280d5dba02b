"""The installable package: its `game-backup-api` command does what `flask --app backup_api` does."""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import backup_api
from backup_api.cli import main
from tests.helpers import SECRET, make_token, mounted_tmpfs, valid_event
from tests.server import ROOT, Server

# make test only (make check leaves it out): other processes, external binaries, or a long run.
pytestmark = pytest.mark.whole


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"game-backup-api, version {backup_api.__version__}\n"
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "token", "events", "players", "db"):
        assert f"  {command} " in result.output
    assert "instance/backup.db under the working directory" in " ".join(result.output.split())
    for flask_only in ("--app", "--debug", "  run ", "  shell "):
        assert flask_only not in result.output
    assert "--env-file FILE" in result.output  # the service's settings file, read by every command


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from this checkout."""
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(folder)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    [built] = folder.glob("game_backup_api-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel installed into a folder of its own; its command's path."""
    folder = tmp_path_factory.mktemp("package")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder / "site"), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    return folder / "site"


def test_the_wheel_holds_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"backup_api"}


# PyPI packages named like the modules this service once put at the top of site-packages.
NAMESAKES = ["openapi==2.0.0", "schemas==0.7.1", "storage==0.0.4.3"]


def new_venv(folder: Path, *installs: list[str]) -> Path:
    """A new venv in folder/venv, with each list of pip arguments installed in turn; its folder."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in installs:
        done = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return venv


def test_the_wheel_works_beside_its_namesakes_from_pypi(wheel, tmp_path):
    """In a venv that already holds PyPI's openapi, schemas and storage: mint, serve, post, read."""
    venv = new_venv(tmp_path, NAMESAKES, ["-r", str(ROOT / "requirements.txt")], ["--no-deps", str(wheel)])
    # The namesakes are really there, at the top of site-packages (PyPI's schemas is Python 2: found, not imported).
    found = "import importlib.util as u; print(all(u.find_spec(n) for n in ('openapi', 'schemas', 'storage')))"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", found], capture_output=True, text=True, timeout=60)
    assert site.stdout == "True\n", site.stderr
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    command = [str(venv / "bin" / "game-backup-api")]
    minted = subprocess.run([*command, "token", "issue", "casino_alpha"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert minted.returncode == 0, minted.stderr
    server = Server(tmp_path / "unused.db")
    server.env = env
    server.start(command=[*command, "serve", "--port", "0"], cwd=tmp_path)
    try:
        token = minted.stdout.strip()
        assert server.request("POST", "/player-events", valid_event("bet"), token=token)[0] == 200
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha", token=token)
        assert status == 200 and len(page["events"]) == 1
        assert server.request("GET", "/openapi.json")[0] == 200
    finally:
        server.stop()


def test_the_installed_command_serves_from_its_working_directory(installed, tmp_path):
    # The checkout is not on the path: everything comes from the installed wheel (its dependencies
    # from this interpreter's environment).
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env.update(PYTHONPATH=str(installed), BACKUP_API_JWT_SECRET=SECRET)
    command = [str(installed / "bin" / "game-backup-api")]
    version = subprocess.run([*command, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
    assert version.stdout == f"game-backup-api, version {backup_api.__version__}\n"
    server = Server(tmp_path / "unused.db", SECRET)
    server.env = env
    server.start(command=[*command, "serve", "--port", "0"], cwd=tmp_path)
    try:
        token = make_token()
        assert server.request("POST", "/player-events", valid_event("bet"), token=token)[0] == 200
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha", token=token)
        assert status == 200 and len(page["events"]) == 1
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert (tmp_path / "instance" / "backup.db").exists()  # the default: under the working directory
    exported = subprocess.run([*command, "events", "export"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
    assert exported.returncode == 0 and '"event_type":"bet"' in exported.stdout


PLUGIN_USER_TESTS = """
import json
import urllib.request


def post(backup_api, event):
    request = urllib.request.Request(backup_api.url + "/player-events", json.dumps(event).encode(), {
        "Content-Type": "application/json", "Authorization": "Bearer " + backup_api.token(event["partner_id"])})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status


def test_a_bet_reaches_the_backup(backup_api):
    event = {"partner_id": "casino_alpha", "player_login": "p1", "event_type": "bet", "amount": 5}
    assert post(backup_api, event) == 200
    assert [stored["event"] for stored in backup_api.events("casino_alpha")] == [event]


def test_the_next_test_starts_empty(backup_api):
    assert backup_api.events("casino_alpha") == []
"""


def test_a_venv_with_only_the_wheel_and_pytest_has_the_fixture(wheel, tmp_path):
    # The wheel pulls in its own dependencies; the tested versions pinned as constraints.
    venv = new_venv(tmp_path, ["-c", str(ROOT / "requirements.txt"), "-c", str(ROOT / "requirements-dev.txt"),
                               str(wheel), "pytest"])
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_mine.py").write_text(PLUGIN_USER_TESTS, encoding="utf-8")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=tmp_path / "suite", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "suite").iterdir()) == ["__pycache__", "test_mine.py"]


@pytest.fixture(scope="module")
def executable(tmp_path_factory):
    """The single executable, built by `make dist` as a user would, into a folder of its own."""
    folder = tmp_path_factory.mktemp("executable")
    build = subprocess.run(["make", "-s", "dist", f"DIST={folder / 'dist'}", f"BUILD={folder / 'build'}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    assert list((folder / "dist").glob("game_backup_api-*.whl"))
    return folder / "dist" / "game-backup-api"


def test_the_executable_runs_with_an_empty_environment(executable, tmp_path):
    """Start it with `env -i` from a fresh folder: mint, post, read, export, snapshot, stop with SIGTERM."""
    def run(*args):
        return subprocess.run(["env", "-i", str(executable), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)

    assert run("--version").stdout == f"game-backup-api, version {backup_api.__version__}\n"
    token = run("token", "issue", "casino_alpha").stdout.strip()
    server = Server(tmp_path / "unused.db")
    server.env = {}
    server.start(command=["env", "-i", str(executable), "serve", "--port", "0"], cwd=tmp_path, timeout=60)
    try:
        assert server.request("GET", "/healthz")[0] == 200
        for n in range(20):
            assert server.request("POST", "/player-events", valid_event("bet", n=n), token=token)[0] == 200
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha", token=token)
        assert status == 200 and [e["event"]["n"] for e in page["events"]] == list(range(20))
        snapshot = run("db", "snapshot", "backups/snap.db")
        assert snapshot.returncode == 0, snapshot.stderr
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 5
    finally:
        server.stop()
    # Nothing lost, and the data where --help says: instance/ under the working directory.
    assert (tmp_path / "instance" / "backup.db").exists() and (tmp_path / "instance" / "jwt-secret").exists()
    exported = run("events", "export").stdout.splitlines()
    assert len(exported) == 20
    assert "events: 20" in run("db", "check").stdout
    # An import past one block: its lines checked by the executable's own worker processes.
    lines = [line.replace(f'"id": {n + 1},', f'"id": {n + 1 + 20 * copy},').replace('"n":', f'"copy":{copy},"n":')
             for copy in range(200) for n, line in enumerate(exported)]
    (tmp_path / "many.jsonl").write_text("\n".join(lines) + "\n")
    imported = subprocess.run(["env", "-i", "BACKUP_API_DATABASE=other.db", str(executable), "events", "import",
                               "many.jsonl"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert imported.stdout == "imported 4000, already held 0\n", imported.stderr


def test_the_executable_serves_a_stand_in(executable, tmp_path):
    server = Server(tmp_path / "unused.db")
    server.env = {}
    command = ["env", "-i", f"BACKUP_API_JWT_SECRET={SECRET}", str(executable), "serve", "--stand-in", "--port", "0"]
    server.start(command=command, cwd=tmp_path, timeout=60)
    try:
        token = make_token()
        assert server.request("POST", "/player-events", valid_event("bet"), token=token)[0] == 200
        status, _, body = server.request("POST", "/_stand-in/faults", {"fault": "503"}, token=token)
        assert status == 200, body
        assert server.request("POST", "/player-events", valid_event("bet", n=2), token=token)[0] == 503
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert list(tmp_path.iterdir()) == []  # nothing kept beside it


def test_the_executable_serves_on_postgresql(executable, postgres_url, tmp_path):
    """The PostgreSQL driver travels inside the executable too."""
    env = ["env", "-i", f"BACKUP_API_DATABASE={postgres_url}", f"BACKUP_API_JWT_SECRET={SECRET}"]
    server = Server(tmp_path / "unused.db")
    server.env = {}
    server.start(command=[*env, str(executable), "serve", "--port", "0"], cwd=tmp_path, timeout=60)
    try:
        token = make_token()
        assert server.request("POST", "/player-events", valid_event("bet", n=1), token=token)[0] == 200
        status, _, page = server.request("GET", "/player-events?partner_id=casino_alpha", token=token)
        assert status == 200 and [e["event"]["n"] for e in page["events"]] == [1]
    finally:
        server.stop()
    assert not (tmp_path / "instance").exists()  # nothing kept beside it: the data is on the server
    check = subprocess.run([*env, str(executable), "db", "check"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0 and "events: 1" in check.stdout, check.stdout + check.stderr


def _unpack_folders(tmp: Path) -> set[Path]:
    return set(tmp.glob("_MEI*"))


def _serve_in_a_session(executable: Path, cwd: Path, env: dict) -> subprocess.Popen:
    """The executable serving, in a session of its own (so that a signal reaches both its processes); .port set."""
    proc = subprocess.Popen([str(executable), "serve", "--port", "0"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = proc.stdout.readline()  # "Serving on http://127.0.0.1:PORT", once it listens
    assert "Serving on" in line, line
    proc.port = int(line.strip().rsplit(":", 1)[1])
    return proc


def test_a_start_removes_the_unpack_folders_that_killed_runs_left_and_only_those(executable, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    killed = _serve_in_a_session(executable, tmp_path, env)
    os.killpg(killed.pid, signal.SIGKILL)  # as systemd does past its stop timeout, or the OOM killer
    killed.wait(timeout=10)
    killed.stdout.close()
    stale = _unpack_folders(tmp)
    assert len(stale) == 1  # left behind: nothing ran to remove it
    (tmp_path / "second").mkdir()
    running = _serve_in_a_session(executable, tmp_path / "second", env)
    try:
        in_use = _unpack_folders(tmp) - stale
        assert len(in_use) == 1
        for folder in stale | in_use:  # both as old as a crash loop's first folders
            os.utime(folder, (time.time() - 3600, time.time() - 3600))
        version = subprocess.run([str(executable), "--version"], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)
        assert version.returncode == 0
        assert _unpack_folders(tmp) == in_use  # the dead run's folder gone; the live server's kept
        assert running.poll() is None
    finally:
        _stop(running)
    assert _unpack_folders(tmp) == set()  # a clean stop removes its own


def test_the_readmes_in_place_upgrade_replaces_the_running_executable(executable, tmp_path):
    installed = tmp_path / "opt" / "game-backup-api"
    installed.parent.mkdir()
    subprocess.run(["install", "-m", "755", str(executable), str(installed)], check=True)
    data = tmp_path / "data"
    data.mkdir()
    env = {"TMPDIR": str(tmp_path)}
    token = subprocess.run([str(installed), "token", "issue", "casino_alpha"], cwd=data, env=env, capture_output=True,
                           text=True, timeout=60).stdout.strip()
    server = _serve_in_a_session(installed, data, env)
    try:
        assert _post(server.port, valid_event("bet", event_id="before-upgrade"), token) == 200
        # Copying over a running executable fails; install writes a new file and renames it into place.
        copied = subprocess.run(["cp", str(executable), str(installed)], capture_output=True, text=True)
        assert copied.returncode != 0 and "Text file busy" in copied.stderr
        subprocess.run(["install", "-m", "755", str(executable), str(installed)], check=True)
    finally:
        _stop(server)  # then the restart: systemctl restart game-backup-api
    assert server.returncode == 0
    server = _serve_in_a_session(installed, data, env)
    try:
        assert _post(server.port, valid_event("bet", event_id="before-upgrade"), token) == 200  # held: a resend
        assert _post(server.port, valid_event("bet", event_id="after-upgrade"), token) == 200
    finally:
        _stop(server)
    listed = subprocess.run([str(installed), "events", "export"], cwd=data, env=env, capture_output=True, text=True,
                            timeout=60).stdout
    assert listed.count("\n") == 2 and "before-upgrade" in listed and "after-upgrade" in listed


def _post(port: int, event: dict, token: str) -> int:
    """POST one event to a server on port; its status."""
    server = Server(Path("unused.db"))
    server.port = port
    return server.request("POST", "/player-events", event, token=token)[0]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started by _serve_in_a_session, as systemctl stop does (SIGTERM to its processes)."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
    proc.stdout.close()


def test_the_executable_starts_where_tmp_is_noexec_with_tmpdir_set(executable, tmp_path):
    """The unit's TMPDIR (docs/operators/install.md): a noexec /tmp stops the executable, a folder of its own not."""
    with mounted_tmpfs(tmp_path / "noexec", "size=256m,noexec") as noexec:
        refused = subprocess.run(["env", "-i", f"TMPDIR={noexec}", str(executable), "--version"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0, refused.stdout  # what an operator meets with a noexec /tmp
        own = tmp_path / "own-tmp"
        own.mkdir(mode=0o700)
        started = subprocess.run(["env", "-i", f"TMPDIR={own}", str(executable), "--version"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert started.stdout == f"game-backup-api, version {backup_api.__version__}\n", started.stderr
