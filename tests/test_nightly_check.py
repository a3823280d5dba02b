"""The partners' nightly job of docs/partners/checking.md, in Python and in shell, run as written against a real
server holding a day from which 1,000 events were lost: each sends exactly those again, then finds the day whole."""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.helpers import SECRET, make_token
from tests.server import Server
from tests.test_docs import docs_block

# make test only: a server in its own process.
pytestmark = pytest.mark.whole

SENT = 3_000


def _ledger(path, day_tag: str) -> list[str]:
    """A partner's record of a day: SENT events, one per line as sent, amounts a float sum would get wrong."""
    lines = [json.dumps({"partner_id": "casino_alpha", "player_login": f"p{n % 50}", "event_type": "bet",
                         "event_id": f"{day_tag}-{n}", "currency": "EUR"}).rstrip("}") + ', "amount": 0.1}'
             for n in range(SENT)]
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.parametrize("job", ["python", "shell"])
def test_the_nightly_job_sends_again_exactly_what_the_backup_lost(tmp_path, job):
    if job == "shell" and not (shutil.which("jq") and shutil.which("curl")):
        pytest.skip("jq or curl is not on the PATH: the shell job was not run")
    script = tmp_path / ("nightly_check.py" if job == "python" else "nightly_check.sh")
    script.write_text(docs_block(f"nightly-{job}"))
    command = [sys.executable, str(script)] if job == "python" else ["sh", str(script)]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = _ledger(tmp_path / "sent.jsonl", job)
    lost = {n for n in range(0, SENT, 3)}  # 1,000 the backup never got
    with Server(tmp_path / "b.db", SECRET) as server:
        token = make_token()
        held = [lines[n] for n in range(SENT) if n not in lost]
        for start in range(0, len(held), 1000):
            body = "[" + ",".join(held[start:start + 1000]) + "]"
            assert server.request("POST", "/player-events", body, token=token)[0] == 200
        env = {**os.environ, "BACKUP_API_URL": f"http://127.0.0.1:{server.port}", "BACKUP_API_TOKEN": token,
               "PARTNER_ID": "casino_alpha"}
        first = subprocess.run([*command, str(tmp_path / "sent.jsonl"), day], env=env, capture_output=True,
                               text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"{day}: 1000 of {SENT} events were missing, sent again\n"
        status, _, page = server.request(
            "GET", f"/player-events/summary?partner_id=casino_alpha&from={day}&to={day}", token=token)
        assert status == 200 and page["rows"] == [
            {"day": day, "event_type": "bet", "currency": "EUR", "events": SENT, "amount": "300.0"}]
        again = subprocess.run([*command, str(tmp_path / "sent.jsonl"), day], env=env, capture_output=True,
                               text=True, timeout=120)
        assert again.stdout == f"{day}: complete, {SENT} events\n", again.stderr
        # Exactly the lost ones were sent again: they are the events stored after the first 2,000.
        stored, after = [], None
        while True:
            query = "/player-events?partner_id=casino_alpha&limit=1000" + (f"&after={after}" if after else "")
            status, _, page = server.request("GET", query, token=token)
            assert status == 200
            stored += [event["event"]["event_id"] for event in page["events"]]
            after = page["next"]
            if after is None:
                break
    assert len(stored) == SENT and set(stored[SENT - len(lost):]) == {f"{job}-{n}" for n in lost}
