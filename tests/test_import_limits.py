"""An import reads a line in bounded pieces: a line past MAX_LINE_BYTES, or a file cut mid-line, is refused by
its number with nothing imported, without holding the line in memory; blocks are bounded in bytes."""

import io
import os
import subprocess
import sys

import pytest

from backup_api import create_app, loading
from tests.helpers import SECRET, export_line, file_with_a_long_line
from tests.server import ROOT


def test_bounded_lines_reads_a_line_up_to_the_limit_and_refuses_a_longer_one():
    at_limit = b"x" * loading.MAX_LINE_BYTES + b"\n"
    assert list(loading.bounded_lines(io.BytesIO(b"a\n" + at_limit + b"b\r\n"))) == [b"a\n", at_limit, b"b\r\n"]
    with pytest.raises(loading.LineError) as raised:
        list(loading.bounded_lines(io.BytesIO(b"a\n" + b"x" * (loading.MAX_LINE_BYTES + 1) + b"\n")))
    assert raised.value.line == 2 and "longer than 2,097,152 bytes" in str(raised.value.__cause__)
    assert list(loading.bounded_lines(io.BytesIO(b"a\nb"))) == [b"a\n", b"b"]  # the last line's end is optional
    assert list(loading.bounded_lines(io.BytesIO(b""))) == []


def test_a_block_holds_at_most_block_bytes(monkeypatch):
    lines = iter([b"x" * 1000] * 50)
    monkeypatch.setattr(loading, "BLOCK_BYTES", 10_000)
    assert [len(loading._block(lines)) for _ in range(6)] == [10, 10, 10, 10, 10, 0]


@pytest.mark.parametrize("kind", ["events", "players"])
def test_a_file_cut_mid_line_is_refused_by_its_number_and_nothing_is_imported(tmp_path, kind):
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    if kind == "events":
        lines = export_line(1) + export_line(2) + export_line(3)[:-20]
    else:
        player = ('{"partner_id": "casino_alpha", "player_login": "p%d", "is_vip": true,'
                  ' "updated_at": "2026-11-24T05:12:03.120512Z", "updated_by": "x"}\n')
        lines = (player % 1 + player % 2).encode()[:-9]
    result = app.test_cli_runner().invoke(args=[kind, "import", "-"], input=lines)
    number = 3 if kind == "events" else 2
    assert result.exit_code == 1 and result.output.startswith(f"Error: line {number}: malformed JSON"), result.output
    assert "nothing was imported" in result.output
    assert app.test_cli_runner().invoke(args=[kind, "export"]).output == ""
    app.extensions["store"].close()


@pytest.mark.whole
def test_a_100_mb_line_is_refused_by_its_number_with_memory_bounded(tmp_path):
    """The issue's probe: metadata of 50 million numbers once took 10.9 GB; the line is refused as it is read."""
    path = tmp_path / "huge.jsonl"
    file_with_a_long_line(path, 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
    env["BACKUP_API_DATABASE"] = str(tmp_path / "b.db")
    # The peak of the command's own memory (VmHWM, which starts afresh at exec; ru_maxrss would count
    # the forked test process's pages too), printed by the process itself once the command is done.
    code = ("import sys\nfrom flask.cli import main\n"
            f"sys.argv = ['flask', '--app', 'backup_api', 'events', 'import', {str(path)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    status = exc.code\n"
            "peak = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "print('peak', peak, file=sys.stderr)\nsys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("Error: line 2: the line is longer than"), result
    assert "nothing was imported" in result.stderr
    peak_kib = int(result.stderr.split("peak ")[1].split()[0])
    assert peak_kib < 300 * 1024, f"peak {peak_kib / 1024:.0f} MiB"


def test_an_import_stopped_by_the_store_ends_its_worker_processes_at_once(tmp_path, monkeypatch):
    # Ids out of order are found by the store while the workers still check lines: they are ended
    # then, not when the collector finds the lines' generator (a leaked pool, warned of at random).
    import multiprocessing

    from backup_api import loading
    from tests.test_import_pieces import export_lines
    from tests.test_restore import new_app, run

    monkeypatch.setattr(loading, "worker_count", lambda: 2)
    lines = export_lines(5000)
    lines[4499] = lines[4499].replace('"id": 4500,', '"id": 12,')
    app = new_app(tmp_path / "b.db")
    result = run(app, "events", "import", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.output.startswith("Error: line 4500: id 12 does not follow"), result.output
    assert multiprocessing.active_children() == []
    app.extensions["store"].close()
